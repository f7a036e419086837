//! Flags, each also read from the environment (the DaemonSet sets the pod's identity through
//! the downward API). Host paths are joined under `--host-root`, where the DaemonSet mounts the
//! host's directories; tests point it at a temporary directory.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The Node's spec.podCIDRs (else spec.podCIDR).
    Node,
    /// The CiliumNode's spec.ipam.podCIDRs.
    Ciliumnode,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "podcidr-agent", version, about = "podcidr's node agent")]
pub struct Flags {
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The agent's pod: the plugin's token is bound to it (downward API metadata.name/uid).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    #[arg(long, env = "POD_UID", default_value = "")]
    pub pod_uid: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub pod_namespace: String,
    /// The ServiceAccount whose token the plugin gets.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "podcidr-agent")]
    pub service_account: String,
    /// The token's requested lifetime (the API server's minimum is 10 minutes; it may cap it).
    #[arg(long, env = "PODCIDR_TOKEN_SECONDS", default_value_t = 3600)]
    pub token_seconds: i64,

    /// A kubeconfig for the agent itself; default: in-cluster (KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "PODCIDR_AGENT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's address (https://host:port), for the agent and the plugin: reaches it
    /// before kube-proxy programs the `kubernetes` Service.
    #[arg(long, env = "PODCIDR_API_SERVER")]
    pub api_server: Option<String>,

    /// Where the host's root is mounted.
    #[arg(long, env = "PODCIDR_HOST_ROOT", default_value = "/host")]
    pub host_root: PathBuf,
    /// The plugin binary to install.
    #[arg(long, env = "PODCIDR_PLUGIN", default_value = "/podcidr")]
    pub plugin: PathBuf,
    /// The host's CNI binary directory (under --host-root).
    #[arg(long, env = "PODCIDR_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The host's CNI config directory (under --host-root).
    #[arg(long, env = "PODCIDR_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The conflist to install (from a ConfigMap); `__NODE_NAME__` becomes the node's name.
    #[arg(long, env = "PODCIDR_CONFLIST", default_value = "/etc/podcidr/10-podcidr.conflist")]
    pub conflist: PathBuf,
    /// Its name in --cni-conf-dir.
    #[arg(long, env = "PODCIDR_CONFLIST_NAME", default_value = "10-podcidr.conflist")]
    pub conflist_name: String,
    /// The plugin's kubeconfig's name in --cni-conf-dir (what the conflist's `kubeconfig` names).
    #[arg(long, env = "PODCIDR_KUBECONFIG_NAME", default_value = "podcidr-kubeconfig")]
    pub kubeconfig_name: String,
    /// The plugin's data directory on the host (under --host-root), read for /metrics.
    #[arg(long, env = "PODCIDR_DATA_DIR", default_value = "/var/lib/cni/podcidr")]
    pub data_dir: PathBuf,

    /// Where the node's pod CIDRs are: its Node, or its CiliumNode.
    #[arg(long, env = "PODCIDR_TARGET", value_enum, default_value = "node")]
    pub target: Target,
    /// The startup taint removed once the node is ready for pods.
    #[arg(long, env = "PODCIDR_STARTUP_TAINT", default_value = "podcidr.io/agent-not-ready")]
    pub startup_taint: String,
    /// How often the installed files are checked.
    #[arg(long, env = "PODCIDR_CHECK_INTERVAL", default_value = "5s", value_parser = humantime_duration)]
    pub check_interval: Duration,
    /// /metrics, /healthz and /readyz.
    #[arg(long, env = "PODCIDR_AGENT_BIND_ADDRESS", default_value = "0.0.0.0:9964")]
    pub bind_address: SocketAddr,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() { Err("must be more than 0".into()) } else { Ok(d) }
}

/// `5s`, `500ms`, `1m`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: a number and a unit (500ms, 5s, 1m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unit ms, s or m")),
    }
}

impl Flags {
    /// `path` (absolute, as on the host) under --host-root.
    pub fn host(&self, path: &Path) -> PathBuf {
        self.host_root.join(path.strip_prefix("/").unwrap_or(path))
    }
}
