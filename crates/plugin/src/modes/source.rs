//! What the kubernetes, kubelet and crd modes share: the node's name, the cache of the CIDRs
//! last read, and the turning of CIDRs into range sets.
//!
//! An ADD asks its source only when the cache (`source.json` in the network's store directory)
//! is missing or older than `cacheTTLSeconds`, so a warm ADD costs what a static one does.
//! Asking happens before the store is locked: a slow API server never holds up other requests.
//! When the source cannot be asked, or answers with an error, the cache is used whatever its
//! age; when it answers that there is no CIDR (no podCIDR yet, no such object, no such field),
//! that answer wins over the cache.

use super::{crd, kubelet, kubernetes};
use crate::cni::config::Request;
use crate::cni::error::{CniError, CniResult, code};
use crate::ipam::pool::{Range, RangeSet};
use crate::store::{self, Store};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

pub const DEFAULT_CACHE_TTL_SECONDS: f64 = 30.0;

/// What a source read, and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Where the CIDRs were read, for messages and `podcidr status`: `Node node-b`,
    /// `ciliumnodes.cilium.io/v2 node-b`, `kubelet --pod-cidr (pid 812)`, a file.
    pub object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    pub cidrs: Vec<String>,
    /// The PodCIDRPool the CIDRs came from: the Node's `podcidr.io/pool` annotation, written by
    /// podcidr-operator (kubernetes mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Why a source gave no CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The source answered that there are none: no podCIDR yet, no such object, no such field.
    /// It is the truth of the moment, so the cache does not override it.
    Missing(String),
    /// The source could not be asked, or answered with an error: the cache stands in.
    Unavailable(String),
}

/// One way of reading the node's pod CIDRs.
pub trait Source {
    /// What is asked, worded so that it changes when the config asks something else: a cache
    /// written for another question is not used.
    fn query(&self) -> String;
    fn fetch(&self) -> Result<Observed, Failure>;
}

/// `source.json`: the CIDRs last read, with the question they answer and when.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cached {
    pub mode: String,
    pub node: String,
    pub query: String,
    #[serde(flatten)]
    pub observed: Observed,
    /// For people reading the file; `fetchedAtMs` is what counts.
    pub fetched_at: String,
    pub fetched_at_ms: u64,
}

impl Cached {
    /// How long ago it was read; `None` if the clock says it is from the future.
    pub fn age(&self, now_ms: u64) -> Option<Duration> {
        now_ms.checked_sub(self.fetched_at_ms).map(Duration::from_millis)
    }

    /// `12s ago`, for messages and `podcidr status`.
    pub fn age_text(&self, now_ms: u64) -> String {
        self.age(now_ms).map_or("at a time in the future".into(), |a| {
            format!("{} ago", humantime::format_duration(Duration::from_secs(a.as_secs())))
        })
    }

    pub fn read(network_dir: &std::path::Path) -> Option<Cached> {
        serde_json::from_slice(&store::read_unlocked(network_dir, store::SOURCE_FILE)?).ok()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A number of seconds from the config, checked so that Duration never panics on it.
pub fn seconds(field: &str, value: Option<f64>, default: f64, min: f64) -> CniResult<Duration> {
    let v = value.unwrap_or(default);
    if !(min..=86_400.0).contains(&v) {
        let floor = if min > 0.0 { "more than 0" } else { "0 or more" };
        return Err(CniError::config(field, format!("{v} is out of range; give {floor} seconds, at most 86400")));
    }
    Duration::try_from_secs_f64(v).map_err(|e| CniError::config(field, e))
}

/// The node's name and where it came from: `ipam.nodeName`, else `K8S_NODE_NAME`, else
/// `NODE_NAME`, else the hostname (lowercased, as the kubelet registers it). Empty means unset,
/// so templated configs can leave the key blank.
pub fn node_name(req: &Request) -> (String, &'static str) {
    if let Some(n) = req.ipam.node_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        return (n.to_string(), "ipam.nodeName");
    }
    for var in ["K8S_NODE_NAME", "NODE_NAME"] {
        if let Some(n) = std::env::var(var).ok().map(|v| v.trim().to_string()).filter(|n| !n.is_empty()) {
            return (n, var);
        }
    }
    (hostname().to_lowercase(), "the hostname")
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

struct Settings<'a> {
    mode: &'a str,
    node: String,
    ttl: Duration,
    require_v4: bool,
    require_v6: bool,
}

impl Settings<'_> {
    fn missing(&self, what: impl std::fmt::Display) -> CniError {
        CniError::new(code::TRY_AGAIN_LATER, format!("no pod CIDR for node {} (mode {}): {what}", self.node, self.mode))
    }

    /// The range sets of `obs`: one per family, in the order the families first appear, each
    /// CIDR a range whose gateway is its first host.
    fn range_sets(&self, obs: &Observed) -> Result<Vec<RangeSet>, String> {
        let mut sets: Vec<RangeSet> = Vec::new();
        for cidr in &obs.cidrs {
            let net: IpNet =
                cidr.trim().parse().map_err(|_| format!("{} holds {cidr:?}, which is not a CIDR", obs.object))?;
            // The API accepts host bits in podCIDR (ParseCIDRSloppy); the kubelet drops them too.
            // An IPv4-mapped CIDR is the IPv4 one, as the kubelet and kube-proxy read it.
            let net = podcidr_contract::as_go_reads(net).trunc();
            let range = Range::new(&obs.object, &net.to_string(), None, None, None)
                .map_err(|e| format!("{} holds {cidr}, which cannot be used: {}", obs.object, e.msg))?;
            match sets.iter_mut().find(|s| s[0].subnet.addr().is_ipv4() == net.addr().is_ipv4()) {
                Some(set) if !set.iter().any(|r| r.subnet == net) => set.push(range),
                Some(_) => {}
                None => sets.push(vec![range]),
            }
        }
        let has = |v4: bool| sets.iter().any(|s| s[0].subnet.addr().is_ipv4() == v4);
        if sets.is_empty() {
            return Err(format!("{} lists no pod CIDR", obs.object));
        }
        for (required, v4, key) in
            [(self.require_v4, true, "requireIPv4PodCIDR"), (self.require_v6, false, "requireIPv6PodCIDR")]
        {
            if required && !has(v4) {
                let fam = if v4 { "IPv4" } else { "IPv6" };
                return Err(format!(
                    "{} has no {fam} pod CIDR ({}), and {key} is set",
                    obs.object,
                    obs.cidrs.join(", ")
                ));
            }
        }
        Ok(sets)
    }
}

fn open_source(req: &Request, mode: &str, node: &str, node_from: &str) -> CniResult<Box<dyn Source>> {
    Ok(match mode {
        "kubernetes" => Box::new(kubernetes::NodeSource::new(req, node, node_from)?),
        "crd" => Box::new(crd::CrdSource::new(req, node, node_from)?),
        _ => Box::new(kubelet::KubeletSource::new(req)),
    })
}

/// The range sets of a non-static mode: from the cache within its TTL, else from the source,
/// else (the source unavailable) from the cache whatever its age.
pub fn range_sets(req: &Request, mode: &str) -> CniResult<Vec<RangeSet>> {
    if !req.ipam.ranges.is_empty() || req.ipam.subnet.is_some() {
        let key = if req.ipam.ranges.is_empty() { "ipam.subnet" } else { "ipam.ranges" };
        return Err(CniError::config(key, format!("is for mode static; mode {mode} reads the pod CIDRs itself")));
    }
    let (node, node_from) = node_name(req);
    let settings = Settings {
        mode,
        node,
        ttl: seconds("ipam.cacheTTLSeconds", req.ipam.cache_ttl_seconds, DEFAULT_CACHE_TTL_SECONDS, 0.0)?,
        require_v4: req.ipam.require_ipv4_pod_cidr,
        require_v6: req.ipam.require_ipv6_pod_cidr,
    };
    let source = open_source(req, mode, &settings.node, node_from)?;
    let dir = Store::network_dir(&req.data_dir(), &req.conf.name);
    let query = source.query();
    let cached = Cached::read(&dir).filter(|c| c.mode == mode && c.node == settings.node && c.query == query);
    let now = now_ms();
    if let Some(c) = &cached
        && c.age(now).is_some_and(|age| age < settings.ttl)
        && let Ok(sets) = settings.range_sets(&c.observed)
    {
        return Ok(sets);
    }
    match source.fetch() {
        Ok(obs) => {
            let sets = settings.range_sets(&obs).map_err(|what| settings.missing(what))?;
            if let Some(old) = &cached
                && old.observed.uid.is_some()
                && old.observed.uid != obs.uid
            {
                warn!(
                    "{} has a new UID {} (was {}): the node was registered again; its pod CIDRs {} replace {}, \
                     and leases outside them stay until their DEL",
                    obs.object,
                    obs.uid.as_deref().unwrap_or("none"),
                    old.observed.uid.as_deref().unwrap_or("none"),
                    obs.cidrs.join(", "),
                    old.observed.cidrs.join(", ")
                );
            }
            info!(object = %obs.object, cidrs = ?obs.cidrs, "read the pod CIDRs");
            let doc = Cached {
                mode: mode.to_string(),
                node: settings.node.clone(),
                query,
                observed: obs,
                fetched_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                fetched_at_ms: now,
            };
            // A cache that cannot be written costs the next ADD an API call, not this pod its address.
            let written = serde_json::to_vec_pretty(&doc)
                .map_err(|e| CniError::new(code::IO_FAILURE, e.to_string()))
                .and_then(|bytes| store::write_unlocked(&dir, store::SOURCE_FILE, &bytes));
            if let Err(e) = written {
                warn!("cannot cache the pod CIDRs: {}", e.msg);
            }
            Ok(sets)
        }
        Err(Failure::Missing(what)) => Err(settings.missing(what)),
        Err(Failure::Unavailable(why)) => {
            let Some(c) = cached else {
                return Err(settings.missing(format!("{why}; and no earlier read is cached")));
            };
            let sets = settings.range_sets(&c.observed).map_err(|what| settings.missing(format!("{why}; {what}")))?;
            let age = c.age_text(now);
            warn!(
                "{why}; using the pod CIDRs {} of {} cached {age} (uid {})",
                c.observed.cidrs.join(", "),
                c.observed.object,
                c.observed.uid.as_deref().unwrap_or("none")
            );
            Ok(sets)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(require_v4: bool, require_v6: bool) -> Settings<'static> {
        Settings { mode: "kubernetes", node: "n".into(), ttl: Duration::ZERO, require_v4, require_v6 }
    }

    fn obs(cidrs: &[&str]) -> Observed {
        Observed {
            object: "Node n".into(),
            uid: None,
            resource_version: None,
            cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            pool: None,
        }
    }

    #[test]
    fn families_become_range_sets_in_order_with_the_first_host_as_gateway() {
        let sets = settings(false, false).range_sets(&obs(&["fd00::/64", "10.0.0.0/24", "10.0.1.0/24"])).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0][0].subnet.to_string(), "fd00::/64");
        assert_eq!(sets[1].len(), 2);
        assert_eq!(sets[1][0].gateway.to_string(), "10.0.0.1");
    }

    #[test]
    fn requirements_and_bad_values() {
        assert!(settings(false, true).range_sets(&obs(&["10.0.0.0/24"])).unwrap_err().contains("requireIPv6PodCIDR"));
        assert!(settings(true, false).range_sets(&obs(&["fd00::/64"])).unwrap_err().contains("IPv4"));
        assert!(settings(false, false).range_sets(&obs(&[])).is_err());
        assert!(settings(false, false).range_sets(&obs(&["nope"])).unwrap_err().contains("not a CIDR"));
        assert!(settings(false, false).range_sets(&obs(&["10.0.0.0/32"])).is_err());
        // Host bits are dropped as the kubelet does.
        let sets = settings(false, false).range_sets(&obs(&["10.0.0.7/24"])).unwrap();
        assert_eq!(sets[0][0].subnet.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn seconds_are_checked() {
        assert_eq!(seconds("f", None, 30.0, 0.0).unwrap(), Duration::from_secs(30));
        assert_eq!(seconds("f", Some(0.5), 5.0, 0.001).unwrap(), Duration::from_millis(500));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            assert_eq!(seconds("f", Some(bad), 5.0, 0.0).unwrap_err().code, code::INVALID_CONFIG, "{bad}");
        }
        assert!(seconds("f", Some(0.0), 5.0, 0.001).is_err());
    }
}
