//! `kubelet`: the pod CIDR a standalone kubelet (no control plane) was given: the `--pod-cidr`
//! flag of the running kubelet, else `podCIDR` in its KubeletConfiguration file. Either may be
//! comma-separated for dual stack.

use super::source::{Failure, Observed, Source};
use crate::cni::config::Request;
use serde::Deserialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const DEFAULT_KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// Where processes are looked for; tests point it at a fake tree.
pub const PROC_ROOT_ENV: &str = "PODCIDR_PROC_ROOT";

pub struct KubeletSource {
    config_key: Option<PathBuf>,
    proc_root: PathBuf,
}

/// The part of a KubeletConfiguration podcidr reads.
#[derive(Deserialize)]
struct KubeletConfiguration {
    #[serde(default, rename = "podCIDR")]
    pod_cidr: Option<String>,
}

struct Kubelet {
    pid: u32,
    args: Vec<String>,
}

impl Kubelet {
    /// The first process whose argv[0] is `kubelet` (a path or not).
    fn find(proc_root: &Path) -> Option<Kubelet> {
        for entry in fs::read_dir(proc_root).ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            // Processes come and go while we look; one that vanished is simply not the kubelet.
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let mut args: Vec<String> =
                cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if args.last().is_some_and(|a| a.is_empty()) {
                args.pop();
            }
            if args.first().is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "kubelet")) {
                return Some(Kubelet { pid, args });
            }
        }
        None
    }

    /// The value of `--name=v` or `--name v`; the last one wins, as in the kubelet's flag parser.
    fn flag(&self, name: &str) -> Option<&str> {
        let long = format!("--{name}");
        let mut found = None;
        let mut args = self.args.iter().skip(1);
        while let Some(a) = args.next() {
            if let Some(v) = a.strip_prefix(&long).and_then(|rest| rest.strip_prefix('=')) {
                found = Some(v);
            } else if *a == long {
                found = args.next().map(String::as_str);
            }
        }
        found
    }
}

fn split_cidrs(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()
}

impl KubeletSource {
    pub fn new(req: &Request) -> KubeletSource {
        let proc_root = std::env::var_os(PROC_ROOT_ENV).map_or_else(|| PathBuf::from("/proc"), PathBuf::from);
        KubeletSource { config_key: req.ipam.kubelet_config.clone(), proc_root }
    }
}

impl Source for KubeletSource {
    fn query(&self) -> String {
        let file = self.config_key.as_deref().map_or("the kubelet's --config".into(), |p| p.display().to_string());
        format!("kubelet --pod-cidr, else podCIDR in {file}")
    }

    fn fetch(&self) -> Result<Observed, Failure> {
        let kubelet = Kubelet::find(&self.proc_root);
        let obs = |object: String, cidrs| Observed { object, uid: None, resource_version: None, cidrs, pool: None };
        if let Some(k) = &kubelet
            && let Some(v) = k.flag("pod-cidr").filter(|v| !v.trim().is_empty())
        {
            return Ok(obs(format!("kubelet --pod-cidr (pid {})", k.pid), split_cidrs(v)));
        }
        let running = match &kubelet {
            Some(k) => format!("the kubelet (pid {}) runs without --pod-cidr", k.pid),
            None => format!("no kubelet process runs (none in {})", self.proc_root.display()),
        };
        let from_flag = kubelet.as_ref().and_then(|k| {
            // A relative --config is relative to the kubelet's working directory.
            k.flag("config").map(|c| self.proc_root.join(k.pid.to_string()).join("cwd").join(c))
        });
        let (path, origin) = match (&self.config_key, from_flag) {
            (Some(p), _) => (p.clone(), "ipam.kubeletConfig"),
            (None, Some(p)) => (p, "the kubelet's --config"),
            (None, None) => (PathBuf::from(DEFAULT_KUBELET_CONFIG), "the default"),
        };
        let shown = path.display();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::Missing(format!("{running}, and {shown} ({origin}) does not exist")));
            }
            Err(e) => return Err(Failure::Unavailable(format!("{running}, and {shown} cannot be read: {e}"))),
        };
        let pod_cidr = if text.trim().is_empty() {
            None
        } else {
            serde_saphyr::from_str::<KubeletConfiguration>(&text)
                .map_err(|e| Failure::Unavailable(format!("{shown} is not a KubeletConfiguration: {e}")))?
                .pod_cidr
        };
        let cidrs = pod_cidr.as_deref().map(split_cidrs).unwrap_or_default();
        if cidrs.is_empty() {
            return Err(Failure::Missing(format!("{running}, and {shown} ({origin}) sets no podCIDR")));
        }
        Ok(obs(format!("podCIDR in {shown}"), cidrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet(args: &[&str]) -> Kubelet {
        Kubelet { pid: 1, args: args.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn flags_in_both_spellings_last_wins() {
        let k = kubelet(&[
            "/usr/bin/kubelet",
            "--pod-cidr",
            "10.0.0.0/24",
            "--config=/etc/k.yaml",
            "--pod-cidr=10.1.0.0/24",
        ]);
        assert_eq!(k.flag("pod-cidr"), Some("10.1.0.0/24"));
        assert_eq!(k.flag("config"), Some("/etc/k.yaml"));
        assert_eq!(k.flag("pod-cidr-x"), None);
        assert_eq!(kubelet(&["kubelet", "--pod-cidr"]).flag("pod-cidr"), None);
        assert_eq!(kubelet(&["kubelet", "--pod-cidrx=1"]).flag("pod-cidr"), None);
    }

    #[test]
    fn kubelet_configuration() {
        let c: KubeletConfiguration = serde_saphyr::from_str(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodCIDR: 10.0.0.0/24,fd00::/64\nclusterDNS: [10.96.0.10]\n",
        )
        .unwrap();
        assert_eq!(split_cidrs(&c.pod_cidr.unwrap()), ["10.0.0.0/24", "fd00::/64"]);
    }
}
