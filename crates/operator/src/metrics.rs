//! The operator's Prometheus metrics (issue 11 §6, issue 12 §4).
//!
//! One [`Metrics`] per process: clone it freely (every clone shares the same registry and
//! values) and hand it to the controller and to [`super::http`], which serves
//! [`Metrics::encode`] at `/metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `podcidr_pool_node_cidrs` | gauge: node CIDRs a pool family can hold (capacity) | `pool`, `family` |
//! | `podcidr_pool_node_cidrs_allocated` | gauge: nodes holding a CIDR of the pool | `pool`, `family` |
//! | `podcidr_pool_node_cidrs_free` | gauge: node CIDRs nothing holds (more nodes it can serve) | `pool`, `family` |
//! | `podcidr_pool_node_cidrs_draining` | gauge: held node CIDRs in draining CIDRs | `pool`, `family` |
//! | `podcidr_pool_foreign_cidrs` | gauge: CIDRs held by nodes outside every pool | |
//! | `podcidr_node_cidr_assign_seconds` | histogram: Node seen -> its CIDRs written | |
//! | `podcidr_api_errors_total` | counter: failed API requests | `code` |
//! | `podcidr_operator_leader` | gauge: 1 while this process holds the lease | |
//!
//! The pool gauges are floats: an IPv6 pool's capacity (`fd00::/8` with /64 per node is 2^56)
//! does not fit the integer gauges, and Prometheus stores every sample as a float anyway.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = podcidr_probe::OPENMETRICS;

/// Upper bounds of the assignment histogram's buckets, in seconds. From a few milliseconds (a
/// Node patched on the first try) to minutes (a node waiting for a pool to grow).
const ASSIGN_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

type PoolLabels = [(&'static str, String); 2];
type FloatGauge = Gauge<f64, AtomicU64>;

/// The operator's metrics; cheap to clone, and every clone updates the same values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    capacity: Family<PoolLabels, FloatGauge>,
    allocated: Family<PoolLabels, FloatGauge>,
    free: Family<PoolLabels, FloatGauge>,
    draining: Family<PoolLabels, FloatGauge>,
    foreign: Gauge,
    assign: Histogram,
    api_errors: Family<[(&'static str, String); 1], Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric registered. The unlabelled ones are exposed from the start
    /// (leader 0, foreign 0, an empty histogram); the labelled ones appear when first set.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let capacity = Family::<PoolLabels, FloatGauge>::default();
        let allocated = Family::<PoolLabels, FloatGauge>::default();
        let free = Family::<PoolLabels, FloatGauge>::default();
        let draining = Family::<PoolLabels, FloatGauge>::default();
        let foreign = Gauge::default();
        let assign = Histogram::new(ASSIGN_BUCKETS);
        let api_errors = Family::default();
        let leader = Gauge::default();
        registry.register(
            "podcidr_pool_node_cidrs",
            "Node CIDRs the pool's family can hand out in all (capacity)",
            capacity.clone(),
        );
        registry.register(
            "podcidr_pool_node_cidrs_allocated",
            "Nodes holding a CIDR of the pool's family (a node counts once, whatever its CIDR's size)",
            allocated.clone(),
        );
        registry.register(
            "podcidr_pool_node_cidrs_free",
            "Node CIDRs of the pool's family that nothing holds: how many more nodes it can serve",
            free.clone(),
        );
        registry.register(
            "podcidr_pool_node_cidrs_draining",
            "Node CIDRs held by nodes in CIDRs removed from the pool (draining)",
            draining.clone(),
        );
        registry.register(
            "podcidr_pool_foreign_cidrs",
            "CIDRs held by nodes outside every pool (kept, never handed out)",
            foreign.clone(),
        );
        registry.register_with_unit(
            "podcidr_node_cidr_assign",
            "Time from a Node being seen without CIDRs to its CIDRs being written",
            Unit::Seconds,
            assign.clone(),
        );
        // The counter's name gets `_total` from the encoder.
        registry.register(
            "podcidr_api_errors",
            "Kubernetes API requests that failed, by HTTP status code (or \"timeout\", \"connect\")",
            api_errors.clone(),
        );
        registry.register(
            "podcidr_operator_leader",
            "1 while this process holds the leader lease, else 0",
            leader.clone(),
        );
        Self { registry: Arc::new(registry), capacity, allocated, free, draining, foreign, assign, api_errors, leader }
    }

    /// Set the gauges of one pool family (`family` as in the allocator's `Display`: "ipv4" or
    /// "ipv6"). Counts are node CIDRs (slices), not addresses.
    pub fn set_pool(&self, pool: &str, family: &str, capacity: u128, allocated: u128, draining: u128) {
        let labels: PoolLabels = [("pool", pool.to_owned()), ("family", family.to_owned())];
        self.capacity.get_or_create(&labels).set(capacity as f64);
        self.allocated.get_or_create(&labels).set(allocated as f64);
        self.draining.get_or_create(&labels).set(draining as f64);
    }

    /// Set the free gauge of one pool family.
    pub fn set_pool_free(&self, pool: &str, family: &str, free: u128) {
        let labels: PoolLabels = [("pool", pool.to_owned()), ("family", family.to_owned())];
        self.free.get_or_create(&labels).set(free as f64);
    }

    /// Forget a pool (deleted and fully drained, or a family removed): its series disappear
    /// instead of staying at their last value.
    pub fn remove_pool(&self, pool: &str) {
        for family in ["ipv4", "ipv6"] {
            self.remove_pool_family(pool, family);
        }
    }

    /// Forget one family of a pool (the pool no longer has it and nothing drains in it).
    pub fn remove_pool_family(&self, pool: &str, family: &str) {
        let labels: PoolLabels = [("pool", pool.to_owned()), ("family", family.to_owned())];
        self.capacity.remove(&labels);
        self.allocated.remove(&labels);
        self.free.remove(&labels);
        self.draining.remove(&labels);
    }

    /// The number of CIDRs held by nodes outside every pool.
    pub fn set_foreign(&self, n: usize) {
        self.foreign.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One node's CIDRs written, `seconds` after the Node was first seen without them.
    pub fn observe_assign(&self, seconds: f64) {
        self.assign.observe(seconds);
    }

    /// One failed API request: `code` is the HTTP status ("409", "503") or a short word for a
    /// failure without one ("timeout", "connect").
    pub fn api_error(&self, code: &str) {
        self.api_errors.get_or_create(&[("code", code.to_owned())]).inc();
    }

    /// Whether this process holds the leader lease now.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition (ends with `# EOF`); serve it with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail; the encoder's only errors are the writer's.
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Parse the text exposition into `name{labels}` -> value, as a scraper would.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            out.insert(series.to_owned(), value);
        }
        out
    }

    #[test]
    fn starts_with_the_unlabelled_metrics_and_an_eof() {
        let text = Metrics::new().encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let s = samples(&text);
        assert_eq!(s["podcidr_operator_leader"], 0.0);
        assert_eq!(s["podcidr_pool_foreign_cidrs"], 0.0);
        assert_eq!(s["podcidr_node_cidr_assign_seconds_count"], 0.0);
        assert!(text.contains("# TYPE podcidr_node_cidr_assign_seconds histogram"), "{text}");
        assert!(text.contains("# UNIT podcidr_node_cidr_assign_seconds seconds"), "{text}");
        // Labelled families are exposed once they have a series.
        assert!(!text.contains("podcidr_api_errors"), "{text}");
        let m = Metrics::new();
        m.api_error("503");
        m.set_pool("default", "ipv4", 1, 0, 0);
        m.set_pool_free("default", "ipv4", 1);
        let text = m.encode();
        for name in [
            "podcidr_pool_node_cidrs",
            "podcidr_pool_node_cidrs_allocated",
            "podcidr_pool_node_cidrs_free",
            "podcidr_pool_node_cidrs_draining",
        ] {
            assert!(text.contains(&format!("# TYPE {name} gauge")), "{name} missing:\n{text}");
        }
        // A counter's family is named without `_total`; its samples carry it.
        assert!(text.contains("# TYPE podcidr_api_errors counter"), "{text}");
    }

    #[test]
    fn pool_gauges_carry_pool_and_family_and_ipv6_sizes() {
        let m = Metrics::new();
        m.set_pool("default", "ipv4", 256, 37, 0);
        // fd00::/8 with /64 per node.
        m.set_pool("zone-a", "ipv6", 1u128 << 56, 3, 1);
        let s = samples(&m.encode());
        assert_eq!(s[r#"podcidr_pool_node_cidrs{pool="default",family="ipv4"}"#], 256.0);
        assert_eq!(s[r#"podcidr_pool_node_cidrs_allocated{pool="default",family="ipv4"}"#], 37.0);
        assert_eq!(s[r#"podcidr_pool_node_cidrs_draining{pool="default",family="ipv4"}"#], 0.0);
        assert_eq!(s[r#"podcidr_pool_node_cidrs{pool="zone-a",family="ipv6"}"#], 2f64.powi(56));
        assert_eq!(s[r#"podcidr_pool_node_cidrs_draining{pool="zone-a",family="ipv6"}"#], 1.0);

        m.set_pool("default", "ipv4", 512, 38, 2);
        m.remove_pool("zone-a");
        let s = samples(&m.encode());
        assert_eq!(s[r#"podcidr_pool_node_cidrs{pool="default",family="ipv4"}"#], 512.0);
        assert_eq!(s[r#"podcidr_pool_node_cidrs_allocated{pool="default",family="ipv4"}"#], 38.0);
        assert_eq!(s[r#"podcidr_pool_node_cidrs_draining{pool="default",family="ipv4"}"#], 2.0);
        assert!(!s.keys().any(|k| k.contains("zone-a")), "{s:?}");
    }

    #[test]
    fn counters_histogram_leader_foreign() {
        let m = Metrics::new();
        let clone = m.clone();
        clone.api_error("409");
        m.api_error("409");
        m.api_error("timeout");
        m.observe_assign(0.02);
        m.observe_assign(7.0);
        m.set_leader(true);
        m.set_foreign(3);
        let s = samples(&m.encode());
        assert_eq!(s[r#"podcidr_api_errors_total{code="409"}"#], 2.0);
        assert_eq!(s[r#"podcidr_api_errors_total{code="timeout"}"#], 1.0);
        assert_eq!(s["podcidr_node_cidr_assign_seconds_count"], 2.0);
        assert_eq!(s["podcidr_node_cidr_assign_seconds_sum"], 7.02);
        assert_eq!(s[r#"podcidr_node_cidr_assign_seconds_bucket{le="0.025"}"#], 1.0);
        assert_eq!(s[r#"podcidr_node_cidr_assign_seconds_bucket{le="10.0"}"#], 2.0);
        assert_eq!(s[r#"podcidr_node_cidr_assign_seconds_bucket{le="+Inf"}"#], 2.0);
        assert_eq!(s["podcidr_operator_leader"], 1.0);
        assert_eq!(s["podcidr_pool_foreign_cidrs"], 3.0);
        m.set_leader(false);
        assert_eq!(samples(&m.encode())["podcidr_operator_leader"], 0.0);
    }

    #[test]
    fn is_send_sync_and_cheap_to_share() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Metrics>();
    }
}
