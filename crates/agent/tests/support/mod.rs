//! Running podcidr-agent against temporary host directories and the stand-in API server, and
//! exec'ing the plugin it installed as a runtime would.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_podcidr-agent");
/// The plugin, built from its own main in this package.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_podcidr-plugin-under-test");
pub const TAINT: &str = "podcidr.io/agent-not-ready";

/// Polls `cond` every 20 ms until it holds or `within` has passed.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A host: its root, and the paths the agent manages on it.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Self {
        Host { dir: tempfile::tempdir().unwrap() }
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn plugin(&self) -> PathBuf {
        self.root().join("opt/cni/bin/podcidr")
    }
    pub fn conflist(&self) -> PathBuf {
        self.root().join("etc/cni/net.d/10-podcidr.conflist")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.root().join("etc/cni/net.d/podcidr-kubeconfig")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("var/lib/cni/podcidr")
    }
    /// The agent's own files (its kubeconfig, the conflist source), outside the host root.
    pub fn etc(&self) -> PathBuf {
        let p = self.root().join("agent-etc");
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

/// A conflist in `mode` whose host paths are under `host`.
pub fn conflist(host: &Host, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("podcidr");
    ipam["dataDir"] = json!(host.data_dir());
    ipam["nodeName"] = json!("__NODE_NAME__");
    json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipam": ipam}
    ]})
}

pub struct Agent {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts the agent and waits for its listening line.
    pub fn start(args: &[String]) -> Agent {
        let mut cmd = Command::new(AGENT);
        cmd.args(args).env_clear();
        Agent::spawn(cmd)
    }

    /// Starts `cmd` (the agent, or a container runtime running it) and waits for the agent's
    /// listening line on its stderr.
    pub fn spawn(mut cmd: Command) -> Agent {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.split("listening on ").nth(1) {
                    let _ = tx.send(a.trim().to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the agent did not listen:\n{}", log.lock().unwrap()));
        Agent { child, addr: addr.parse().unwrap(), log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// GET `path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_string())
    }

    /// One sample of /metrics, by its `name{labels}` as exposed; None when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn stop(&mut self) {
        // SIGTERM, as the kubelet stops a pod.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The flags the DaemonSet would give, for `host` and the stand-in.
pub fn agent_args(host: &Host, kubeconfig: &Path, node: &str, pod: &str, pod_uid: &str) -> Vec<String> {
    [
        "--node-name",
        node,
        "--pod-name",
        pod,
        "--pod-uid",
        pod_uid,
        "--pod-namespace",
        "kube-system",
        "--service-account",
        "podcidr-agent",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--host-root",
        host.root().to_str().unwrap(),
        "--plugin",
        PLUGIN,
        "--conflist",
        host.etc().join("10-podcidr.conflist").to_str().unwrap(),
        "--bind-address",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What a runtime execs: `verb` of the plugin at `bin` for the first plugin of the conflist at
/// `conflist` (read now, as a runtime reads it), on attachment (`id`, eth0).
pub fn exec_plugin(bin: &Path, conflist: &Path, verb: &str, id: &str, env: &[(&str, &str)]) -> Result<Value, String> {
    let text = std::fs::read(conflist).map_err(|e| format!("read {}: {e}", conflist.display()))?;
    let list: Value = serde_json::from_slice(&text).map_err(|e| format!("conflist is not JSON: {e}"))?;
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", format!("/var/run/netns/{id}"))
        .env("CNI_PATH", bin.parent().unwrap())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        cmd.spawn().map_err(|e| format!("exec {}: {e} (os error {:?})", bin.display(), e.raw_os_error()))?;
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&conf).unwrap()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{verb} {id}: {} {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    if stdout.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
    }
}
