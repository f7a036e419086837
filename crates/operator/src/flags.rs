//! The command line of `podcidr-operator` and what the controller makes of it.
//!
//! Flag names follow kube-controller-manager and Cilium's operator (see docs/operator.md).
//! Everything checkable without the API is checked here, before anything starts: a bad pool
//! is a start-up error (exit 2), never a crash loop later.

use super::allocator::{Family, FamilySpec, PoolSpec};
use super::crd::DEFAULT_POOL;
use super::rules::{self, Broken};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "podcidr-operator",
    version,
    about = "Cuts the cluster's pod CIDR pools into per-node pod CIDRs (Node spec.podCIDRs and/or CiliumNode spec.ipam.podCIDRs)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the cluster view: pools, allocated, foreign and waiting node CIDRs.
    Status {
        /// Kubeconfig file (else KUBECONFIG, ~/.kube/config, or in-cluster).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the PodCIDRPool CRD manifest (YAML).
    Crd,
}

/// Where a node's CIDRs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Target {
    /// Node spec.podCIDR and spec.podCIDRs.
    Node,
    /// cilium.io/v2 CiliumNode spec.ipam.podCIDRs (created, owned by its Node, when missing).
    Ciliumnode,
}

/// The floor of `--max-retry-backoff`.
pub const MIN_RETRY_BACKOFF: Duration = Duration::from_secs(1);

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 15s, 500ms, 1m)"))
}

fn bool_flag(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Kubeconfig file (else KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// IPv4 CIDRs of the `default` pool, used in this order (repeatable, or comma-separated).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub cluster_pool_ipv4_cidr: Vec<String>,
    /// IPv6 CIDRs of the `default` pool, used in this order (repeatable, or comma-separated).
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub cluster_pool_ipv6_cidr: Vec<String>,
    /// Prefix length of each node's IPv4 CIDR [default: 24].
    #[arg(long, value_name = "BITS")]
    pub cluster_pool_ipv4_mask_size: Option<u8>,
    /// Prefix length of each node's IPv6 CIDR [default: 64].
    #[arg(long, value_name = "BITS")]
    pub cluster_pool_ipv6_mask_size: Option<u8>,
    /// Where the CIDRs go (repeatable: both get the same CIDRs).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Node])]
    pub target: Vec<Target>,
    /// Elect a leader on a Lease; only the leader writes. false: this process is the only writer.
    #[arg(long, value_name = "BOOL", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = bool_flag)]
    pub leader_elect: bool,
    /// Namespace of the Lease `podcidr-operator`.
    #[arg(long, value_name = "NS", default_value = "kube-system")]
    pub leader_elect_namespace: String,
    /// How long a lease holds without renewal (whole seconds, at least 2s).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    pub leader_elect_lease_duration: Duration,
    /// Identity in the Lease [default: hostname_<random>].
    #[arg(long, value_name = "ID")]
    pub leader_elect_identity: Option<String>,
    /// Address of /metrics ("0": off).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: String,
    /// Address of /healthz and /readyz ("0": off).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8081")]
    pub health_probe_bind_address: String,
    /// Client-side rate limit of API requests per second (as kube-controller-manager).
    #[arg(long, value_name = "QPS", default_value_t = 20.0)]
    pub kube_api_qps: f64,
    /// Requests allowed at once above the rate.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub kube_api_burst: u32,
    /// Cap of the exponential backoff of a failed write or a node waiting for room.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub max_retry_backoff: Duration,
    /// Log filter when RUST_LOG is not set: a level (error, warn, info, debug, trace) or
    /// directives such as `info,podcidr=debug`.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

/// What the controller runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    /// The flag pool (`default`); None when no CIDR flag was given.
    pub default_pool: Option<PoolSpec>,
    pub node_target: bool,
    pub ciliumnode_target: bool,
    pub leader_elect: bool,
    pub lease_namespace: String,
    pub lease_seconds: u64,
    pub identity: String,
    pub metrics_addr: Option<SocketAddr>,
    pub health_addr: Option<SocketAddr>,
    pub qps: f64,
    pub burst: u32,
    pub max_backoff: Duration,
}

fn addr(flag: &str, v: &str) -> Result<Option<SocketAddr>, String> {
    if v == "0" || v.is_empty() {
        return Ok(None);
    }
    let v2 = v.strip_prefix(':').map(|p| format!("0.0.0.0:{p}"));
    v2.as_deref()
        .unwrap_or(v)
        .parse()
        .map(Some)
        .map_err(|_| format!("--{flag} {v:?}: expected HOST:PORT such as 0.0.0.0:8080 (or 0 to turn it off)"))
}

fn family(
    name: &str,
    cidrs: &[String],
    mask: Option<u8>,
    default_mask: u8,
    v6: bool,
) -> Result<Option<FamilySpec>, String> {
    let fam = if v6 { "ipv6" } else { "ipv4" };
    if cidrs.is_empty() {
        return match mask {
            Some(_) => Err(format!(
                "--cluster-pool-{fam}-mask-size is set but there is no --cluster-pool-{fam}-cidr: give the {fam} CIDRs to cut, or drop the mask"
            )),
            None => Ok(None),
        };
    }
    let f = if v6 { Family::V6 } else { Family::V4 };
    let (nets, mut broken) = rules::parse(f, cidrs);
    let mask = mask.unwrap_or(default_mask);
    if broken.is_empty() {
        broken = rules::family(f, &nets, mask);
    }
    if let Some(b) = broken.first() {
        let flag = match b {
            Broken::MaskRange { .. } | Broken::MaskShorter { .. } => "mask-size",
            _ => "cidr",
        };
        return Err(format!("--cluster-pool-{fam}-{flag} (pool {name}): {b}"));
    }
    Ok(Some(FamilySpec { cidrs: nets, mask }))
}

impl RunArgs {
    /// Check the flags; `Err` is the start-up error message (exit 2).
    pub fn settings(&self) -> Result<Settings, String> {
        let v4 = family(DEFAULT_POOL, &self.cluster_pool_ipv4_cidr, self.cluster_pool_ipv4_mask_size, 24, false)?;
        let v6 = family(DEFAULT_POOL, &self.cluster_pool_ipv6_cidr, self.cluster_pool_ipv6_mask_size, 64, true)?;
        let default_pool = if v4.is_none() && v6.is_none() {
            None
        } else {
            Some(PoolSpec { name: DEFAULT_POOL.into(), selector: None, ipv4: v4, ipv6: v6 })
        };
        let secs = self.leader_elect_lease_duration.as_secs_f64().ceil() as u64;
        if self.leader_elect && secs < 2 {
            return Err("--leader-elect-lease-duration must be at least 2s".into());
        }
        if !(self.kube_api_qps > 0.0 && self.kube_api_qps.is_finite()) {
            return Err("--kube-api-qps must be a positive number".into());
        }
        if self.kube_api_burst == 0 {
            return Err("--kube-api-burst must be at least 1".into());
        }
        // Below this, one waiting node turns into a stream of retries and Events.
        if self.max_retry_backoff < MIN_RETRY_BACKOFF {
            return Err(format!(
                "--max-retry-backoff {}: must be at least {}",
                humantime::format_duration(self.max_retry_backoff),
                humantime::format_duration(MIN_RETRY_BACKOFF)
            ));
        }
        let identity = match &self.leader_elect_identity {
            Some(id) if !id.is_empty() => id.clone(),
            _ => default_identity(),
        };
        Ok(Settings {
            kubeconfig: self.kubeconfig.clone(),
            default_pool,
            node_target: self.target.contains(&Target::Node),
            ciliumnode_target: self.target.contains(&Target::Ciliumnode),
            leader_elect: self.leader_elect,
            lease_namespace: self.leader_elect_namespace.clone(),
            lease_seconds: secs.max(2),
            identity,
            metrics_addr: addr("metrics-bind-address", &self.metrics_bind_address)?,
            health_addr: addr("health-probe-bind-address", &self.health_probe_bind_address)?,
            qps: self.kube_api_qps,
            burst: self.kube_api_burst,
            max_backoff: self.max_retry_backoff,
        })
    }
}

/// hostname + "_" + a random suffix, as client-go's leader election identities.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "podcidr-operator".into());
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{host}_{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["podcidr-operator"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map_err(|e| e.to_string())?.run.settings()
    }

    #[test]
    fn defaults_as_kcm() {
        let s = settings(&["--cluster-pool-ipv4-cidr", "10.244.0.0/16"]).unwrap();
        let p = s.default_pool.unwrap();
        assert_eq!(p.name, "default");
        assert_eq!(p.ipv4.unwrap().mask, 24);
        assert!(p.ipv6.is_none());
        assert!(s.node_target && !s.ciliumnode_target && s.leader_elect);
        assert_eq!((s.qps, s.burst, s.lease_seconds), (20.0, 30, 15));
        assert_eq!(s.max_backoff, Duration::from_secs(30));
        assert_eq!(s.lease_namespace, "kube-system");
        assert_eq!(s.metrics_addr, Some("0.0.0.0:8080".parse().unwrap()));
    }

    #[test]
    fn repeatable_and_comma_separated_in_order() {
        let s = settings(&[
            "--cluster-pool-ipv4-cidr",
            "10.1.0.0/16,10.2.0.0/16",
            "--cluster-pool-ipv4-cidr=10.3.0.0/16",
            "--cluster-pool-ipv6-cidr",
            "fd00::/8",
            "--cluster-pool-ipv6-mask-size",
            "64",
            "--target",
            "node",
            "--target",
            "ciliumnode",
            "--leader-elect=false",
            "--metrics-bind-address",
            "0",
        ])
        .unwrap();
        let p = s.default_pool.unwrap();
        let v4: Vec<String> = p.ipv4.unwrap().cidrs.iter().map(|c| c.to_string()).collect();
        assert_eq!(v4, ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]);
        assert_eq!(p.ipv6.unwrap().mask, 64);
        assert!(s.node_target && s.ciliumnode_target && !s.leader_elect);
        assert_eq!(s.metrics_addr, None);
    }

    #[test]
    fn start_up_errors_say_what_is_wrong() {
        let e = settings(&["--cluster-pool-ipv4-cidr", "10.0.0.0/16,10.0.1.0/24"]).unwrap_err();
        assert!(e.contains("overlap"), "{e}");
        let e =
            settings(&["--cluster-pool-ipv4-cidr", "10.0.0.0/16", "--cluster-pool-ipv4-mask-size", "8"]).unwrap_err();
        assert!(e.starts_with("--cluster-pool-ipv4-mask-size (pool default): ipv4: maskSize must be at least"), "{e}");
        assert!(e.contains("(10.0.0.0/16 with maskSize 8)"), "{e}");
        let e = settings(&["--cluster-pool-ipv6-mask-size", "64"]).unwrap_err();
        assert!(e.contains("no --cluster-pool-ipv6-cidr"), "{e}");
        let e = settings(&["--cluster-pool-ipv4-cidr", "fd00::/8"]).unwrap_err();
        assert!(e.contains("ipv4.cidrs takes IPv4 CIDRs"), "{e}");
        let e = settings(&["--cluster-pool-ipv4-cidr", "10.0.0.0/33"]).unwrap_err();
        assert!(e.contains("not a CIDR"), "{e}");
        let e =
            settings(&["--cluster-pool-ipv4-cidr", "10.0.0.0/8", "--leader-elect-lease-duration", "1s"]).unwrap_err();
        assert!(e.contains("at least 2s"), "{e}");
    }

    #[test]
    fn a_retry_backoff_below_the_floor_is_refused_naming_the_flag() {
        for v in ["1ns", "0s", "999ms"] {
            let e = settings(&["--max-retry-backoff", v]).unwrap_err();
            assert!(e.contains("--max-retry-backoff") && e.contains("at least 1s"), "{v}: {e}");
        }
        assert_eq!(settings(&["--max-retry-backoff", "1s"]).unwrap().max_backoff, MIN_RETRY_BACKOFF);
    }

    #[test]
    fn no_pool_flags_is_allowed() {
        assert!(settings(&[]).unwrap().default_pool.is_none());
    }
}
