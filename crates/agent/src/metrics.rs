//! The agent's metrics. The node's address state is read from the plugin's stores at each
//! scrape (`podcidr::cli::status_doc`, what `podcidr status --json` prints: each store under its
//! shared lock, nothing written), so it is never older than the scrape.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `podcidr_node_addresses` | gauge: addresses a range set can hand out (capacity) | `network`, `range_set`, `family`, `pool` |
//! | `podcidr_node_addresses_allocated` | gauge: addresses leased | same |
//! | `podcidr_node_leases_earlier_boot` | gauge: leases written in an earlier boot (reclaimable) | `network` |
//! | `podcidr_agent_token_renewal_failures_total` | counter: failed TokenRequests | |
//! | `podcidr_agent_token_stale` | gauge: 1 while renewal fails and the old token is kept (or none was had) | |
//! | `podcidr_agent_repairs_total` | counter: files found deleted or changed and put back | `file` |
//! | `podcidr_agent_ready` | gauge: plugin, conflist, kubeconfig and pod CIDR in place | |
//!
//! `family` is `ipv4`/`ipv6` and `pool` the PodCIDRPool the node's CIDR came from (its
//! `podcidr.io/pool` annotation, "" when none), as on podcidr-operator's pool metrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub const CONTENT_TYPE: &str = podcidr_probe::OPENMETRICS;

type FloatGauge = Gauge<f64, AtomicU64>;
type AddrLabels = [(&'static str, String); 4];

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    capacity: Family<AddrLabels, FloatGauge>,
    allocated: Family<AddrLabels, FloatGauge>,
    earlier_boot: Family<[(&'static str, String); 1], Gauge>,
    pub token_failures: Counter,
    pub token_stale: Gauge,
    repairs: Family<[(&'static str, String); 1], Counter>,
    pub ready: Gauge,
    /// The node's pool, for the address gauges; scrapes serialized.
    pool: Arc<Mutex<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            capacity: Family::default(),
            allocated: Family::default(),
            earlier_boot: Family::default(),
            token_failures: Counter::default(),
            token_stale: Gauge::default(),
            repairs: Family::default(),
            ready: Gauge::default(),
            pool: Arc::new(Mutex::new(String::new())),
        };
        r.register("podcidr_node_addresses", "Addresses the range set can hand out (capacity)", m.capacity.clone());
        r.register("podcidr_node_addresses_allocated", "Addresses of the range set leased", m.allocated.clone());
        r.register(
            "podcidr_node_leases_earlier_boot",
            "Leases written in an earlier boot of the node (reclaimable)",
            m.earlier_boot.clone(),
        );
        r.register("podcidr_agent_token_renewal_failures", "TokenRequests that failed", m.token_failures.clone());
        r.register(
            "podcidr_agent_token_stale",
            "1 while the plugin's token could not be renewed (the old one kept, or none had)",
            m.token_stale.clone(),
        );
        r.register("podcidr_agent_repairs", "Installed files found deleted or changed and put back", m.repairs.clone());
        r.register("podcidr_agent_ready", "Plugin, conflist, kubeconfig and pod CIDR in place", m.ready.clone());
        Metrics { registry: Arc::new(r), ..m }
    }

    pub fn repaired(&self, file: &str) {
        self.repairs.get_or_create(&[("file", file.to_string())]).inc();
    }

    pub fn set_pool(&self, pool: &str) {
        *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = pool.to_string();
    }

    /// Read the stores under `data_dir` into the address gauges. A store that cannot be read
    /// is left out (and logged), never written.
    pub fn refresh(&self, data_dir: &Path) {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        self.capacity.clear();
        self.allocated.clear();
        self.earlier_boot.clear();
        let doc = match podcidr::cli::status_doc(data_dir, None) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot read the plugin's stores for /metrics: {e}");
                return;
            }
        };
        for net in doc["networks"].as_array().into_iter().flatten() {
            let name = net["name"].as_str().unwrap_or_default().to_string();
            for (i, set) in net["rangeSets"].as_array().into_iter().flatten().enumerate() {
                let family = if set["family"] == "IPv6" { "ipv6" } else { "ipv4" };
                let labels: AddrLabels = [
                    ("network", name.clone()),
                    ("range_set", i.to_string()),
                    ("family", family.into()),
                    ("pool", pool.clone()),
                ];
                self.capacity.get_or_create(&labels).set(set["capacity"].as_f64().unwrap_or(0.0));
                self.allocated.get_or_create(&labels).set(set["allocated"].as_f64().unwrap_or(0.0));
            }
            let earlier = net["leases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| serde_json::from_value::<podcidr::store::record::LeaseRecord>(l.clone()).ok())
                .filter(podcidr::store::of_earlier_boot)
                .count();
            self.earlier_boot.get_or_create(&[("network", name)]).set(earlier as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
