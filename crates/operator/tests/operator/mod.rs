//! Runs the real `podcidr-operator` binary against the stand-in API server, and reads what a
//! user can see of it: /metrics, /healthz, /readyz, its exit, its log.

#![allow(dead_code)]

use podcidr_testsupport::kubeapi::KubeApi;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_podcidr-operator");
/// The lease duration the tests give the operators (`--leader-elect-lease-duration`).
pub const LEASE: Duration = Duration::from_secs(2);
/// How long anything the operator should do at once may take on a loaded CI machine.
pub const SOON: Duration = Duration::from_secs(60);

pub struct Operator {
    pub child: Child,
    pub identity: String,
    pub metrics_addr: SocketAddr,
    pub health_addr: SocketAddr,
    log: PathBuf,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

impl Operator {
    /// Starts an operator whose requests the server logs as `identity` (also its lease
    /// identity), with short leader election and retry timings, and `args` after them.
    pub fn start(api: &KubeApi, dir: &Path, identity: &str, args: &[&str]) -> Operator {
        Operator::start_with(api, dir, identity, LEASE, &[], args)
    }

    /// As [`Operator::start`], with this lease duration and these environment variables.
    pub fn start_with(
        api: &KubeApi,
        dir: &Path,
        identity: &str,
        lease: Duration,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Operator {
        let kubeconfig = api.kubeconfig(dir, identity);
        let (metrics_addr, health_addr) = (free_port(), free_port());
        let log = dir.join(format!("{identity}.{}.log", std::process::id()));
        let log = (0..).map(|i| log.with_extension(format!("{i}.log"))).find(|p| !p.exists()).unwrap();
        let child = Command::new(BIN)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--leader-elect-identity", identity, "--leader-elect-namespace", "kube-system"])
            .args(["--leader-elect-lease-duration", &format!("{}s", lease.as_secs())])
            .envs(env.iter().copied())
            .args(["--max-retry-backoff", "1s"])
            .args(["--metrics-bind-address", &metrics_addr.to_string()])
            .args(["--health-probe-bind-address", &health_addr.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Operator { child, identity: identity.into(), metrics_addr, health_addr, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, as the OOM killer or a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as the kubelet stops a pod; waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }

    pub fn metrics(&self) -> Option<String> {
        http_get(self.metrics_addr, "/metrics").filter(|(s, _)| *s == 200).map(|(_, b)| b)
    }

    /// The value of the sample `name{labels}` (labels given must match; others are ignored).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&self.metrics()?, name, labels)
    }

    pub fn ready(&self) -> bool {
        http_get(self.health_addr, "/readyz").is_some_and(|(s, _)| s == 200)
    }

    pub fn healthy(&self) -> bool {
        http_get(self.health_addr, "/healthz").is_some_and(|(s, _)| s == 200)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- log of operator {} -----\n{}", self.identity, self.log());
        }
    }
}

/// GET over plain HTTP/1.1: status and body, or None if nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = vec![];
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        out
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// The value of the sample `name{labels}` in Prometheus text: the first line whose name is
/// exactly `name` and whose labels include `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, ls) = match series.split_once('{') {
            Some((n, ls)) => (n, ls.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let have: BTreeMap<&str, &str> =
            ls.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.trim(), v.trim_matches('"'))).collect();
        labels.iter().all(|(k, v)| have.get(k) == Some(v)).then(|| value.parse().ok())?
    })
}

/// Every CIDR held, by node: fails the test if two nodes hold overlapping CIDRs.
pub fn assert_no_overlap(cidrs: &BTreeMap<String, Vec<String>>) {
    let mut seen: Vec<(ipnet::IpNet, &str)> = vec![];
    for (node, list) in cidrs {
        for c in list {
            let net: ipnet::IpNet = c.parse().unwrap_or_else(|e| panic!("{node}: {c}: {e}"));
            if let Some((other, holder)) =
                seen.iter().find(|(o, _)| o.contains(&net.network()) || net.contains(&o.network()))
            {
                panic!("{node} holds {net}, which overlaps {other} of {holder}");
            }
            seen.push((net, node));
        }
    }
}

/// The names of the nodes that have podCIDRs.
pub fn assigned(cidrs: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    cidrs.iter().filter(|(_, l)| !l.is_empty()).map(|(n, _)| n.clone()).collect()
}

/// The Lease's holder, if any.
pub fn lease_holder(api: &KubeApi) -> Option<String> {
    let lease: Value = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/podcidr-operator")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The Events about `node` with `reason`, in core/v1 form.
pub fn events_for(api: &KubeApi, node: &str, reason: &str) -> Vec<Value> {
    api.events().into_iter().filter(|e| e["involvedObject"]["name"] == node && e["reason"] == reason).collect()
}
