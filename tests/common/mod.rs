//! Helpers for exec-level tests: run the built `podcidr` binary the way a container runtime
//! does (a clean environment, the CNI_* variables, the network config on stdin) and look at
//! what a runtime would see.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tempfile::TempDir;

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const BIN: &str = env!("CARGO_BIN_EXE_podcidr");
pub const IFNAME: &str = "eth0";

/// What one exec of the plugin produced.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn context(&self) -> String {
        format!("exit {:?}\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr)
    }

    /// stdout as exactly one JSON value (a trailing newline allowed, nothing else).
    pub fn single_json(&self) -> Value {
        let mut values = serde_json::Deserializer::from_str(&self.stdout).into_iter::<Value>();
        let first = match values.next() {
            Some(Ok(v)) => v,
            other => panic!("stdout is not JSON ({other:?})\n{}", self.context()),
        };
        assert!(values.next().is_none(), "more than one JSON value on stdout\n{}", self.context());
        assert_eq!(self.stdout.trim_end(), self.stdout.trim(), "leading junk on stdout\n{}", self.context());
        first
    }

    /// Success with a JSON document on stdout (ADD, VERSION).
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.code, Some(0), "expected success\n{}", self.context());
        self.single_json()
    }

    /// Success with nothing on stdout (DEL, CHECK, GC, STATUS).
    pub fn ok_silent(&self) {
        assert_eq!(self.code, Some(0), "expected success\n{}", self.context());
        assert!(self.stdout.trim().is_empty(), "expected no stdout\n{}", self.context());
    }

    /// A CNI error object with `code`: exit 1, one JSON object on stdout holding a cniVersion,
    /// the code and a message. Returns the object.
    pub fn err(&self, code: u64) -> Value {
        assert_eq!(self.code, Some(1), "expected exit 1\n{}", self.context());
        let v = self.single_json();
        let obj = v.as_object().unwrap_or_else(|| panic!("error is not a JSON object\n{}", self.context()));
        assert_eq!(obj.get("code").and_then(Value::as_u64), Some(code), "wrong error code\n{}", self.context());
        let version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        assert!(VERSIONS.contains(&version), "error without a supported cniVersion\n{}", self.context());
        assert!(
            obj.get("msg").and_then(Value::as_str).is_some_and(|m| !m.is_empty()),
            "error without msg\n{}",
            self.context()
        );
        for key in obj.keys() {
            assert!(
                ["cniVersion", "code", "msg", "details"].contains(&key.as_str()),
                "unexpected key {key} in the error object\n{}",
                self.context()
            );
        }
        v
    }

    /// The message of an error with `code`.
    pub fn err_msg(&self, code: u64) -> String {
        self.err(code)["msg"].as_str().unwrap().to_string()
    }
}

/// One exec of the plugin: its environment (always cleared first) and stdin.
#[derive(Debug, Clone)]
pub struct Call {
    env: Vec<(String, String)>,
    stdin: Vec<u8>,
}

impl Call {
    /// No CNI variables at all; `PATH` only.
    pub fn bare() -> Self {
        Call { env: vec![("PATH".into(), "/usr/bin:/bin".into())], stdin: Vec::new() }
    }

    /// CNI_COMMAND set, and CNI_PATH as runtimes set it.
    pub fn verb(command: &str) -> Self {
        Call::bare().env("CNI_COMMAND", command).env("CNI_PATH", "/opt/cni/bin")
    }

    /// A verb on attachment (`container_id`, eth0), with a netns path.
    pub fn attach(command: &str, container_id: &str) -> Self {
        Call::verb(command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_NETNS", &format!("/var/run/netns/{container_id}"))
    }

    pub fn add(container_id: &str, conf: &Value) -> Self {
        Call::attach("ADD", container_id).conf(conf)
    }

    pub fn del(container_id: &str, conf: &Value) -> Self {
        Call::attach("DEL", container_id).conf(conf)
    }

    pub fn check(container_id: &str, conf: &Value) -> Self {
        Call::attach("CHECK", container_id).conf(conf)
    }

    /// Sets (or replaces) a variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn ifname(self, ifname: &str) -> Self {
        self.env("CNI_IFNAME", ifname)
    }

    pub fn args(self, cni_args: &str) -> Self {
        self.env("CNI_ARGS", cni_args)
    }

    pub fn conf(mut self, conf: &Value) -> Self {
        self.stdin = conf.to_string().into_bytes();
        self
    }

    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = bytes.to_vec();
        self
    }

    pub fn run(&self) -> Out {
        run_bin(&[], &self.env, &self.stdin)
    }
}

/// Runs the binary with `args`, exactly `env` (after env_clear) and `stdin`.
pub fn run_bin(args: &[&str], env: &[(String, String)], stdin: &[u8]) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn podcidr");
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // VERSION need not read stdin; a closed pipe is not the test's business.
        let _ = pipe.write_all(stdin);
    }
    let out = child.wait_with_output().expect("wait for podcidr");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The operator CLI (no CNI_COMMAND): `podcidr <args>`.
pub fn cli(args: &[&str]) -> Out {
    run_bin(args, &[("PATH".into(), "/usr/bin:/bin".into())], b"")
}

/// A scratch directory with the store's `dataDir` inside it, so that anything a request
/// creates outside dataDir is visible as a sibling.
pub struct Sandbox {
    pub tmp: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox { tmp: tempfile::tempdir().expect("tempdir") }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn net_dir(&self, network: &str) -> PathBuf {
        self.data_dir().join(network)
    }

    /// A network config of `version` named `name` whose ipam stanza is `ipam` plus type and
    /// dataDir.
    pub fn conf(&self, version: &str, name: &str, ipam: Value) -> Value {
        let mut ipam = ipam;
        ipam["type"] = json!("podcidr");
        ipam["dataDir"] = json!(self.data_dir());
        json!({
            "cniVersion": version,
            "name": name,
            "type": "bridge",
            "ipam": ipam,
        })
    }

    /// `conf` with one IPv4 range set of `subnet`.
    pub fn conf_v4(&self, version: &str, subnet: &str) -> Value {
        self.conf(version, "net1", json!({ "ranges": [[{ "subnet": subnet }]] }))
    }

    /// File names in `leases/` of `network`, sorted.
    pub fn lease_files(&self, network: &str) -> Vec<String> {
        list(&self.net_dir(network).join("leases")).into_iter().filter(|n| !n.starts_with('.')).collect()
    }

    /// File names in `owners/` of `network`, sorted.
    pub fn owner_files(&self, network: &str) -> Vec<String> {
        list(&self.net_dir(network).join("owners")).into_iter().filter(|n| !n.starts_with('.')).collect()
    }

    /// The lease record of `ip` in `network`.
    pub fn lease(&self, network: &str, ip: &str) -> Value {
        let text = std::fs::read_to_string(self.net_dir(network).join("leases").join(ip))
            .unwrap_or_else(|e| panic!("lease {ip}: {e}"));
        serde_json::from_str(&text).expect("lease record is JSON")
    }

    /// Every path under the sandbox, relative to it.
    pub fn tree(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        walk(self.root(), self.root(), &mut out);
        out
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd {
        let entry = entry.unwrap();
        let path = entry.path();
        out.insert(path.strip_prefix(base).unwrap().to_path_buf());
        if entry.file_type().unwrap().is_dir() {
            walk(base, &path, out);
        }
    }
}

/// The `ips[].address` values of a result, in order.
pub fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("result without ips: {result}"))
        .iter()
        .map(|ip| ip["address"].as_str().expect("address").to_string())
        .collect()
}

/// The single address of a result, without its prefix.
pub fn only_ip(result: &Value) -> String {
    let addrs = addresses(result);
    assert_eq!(addrs.len(), 1, "expected one address: {result}");
    addrs[0].split('/').next().unwrap().to_string()
}

/// `conf` with `prevResult` set, as a runtime builds the CHECK request.
pub fn with_prev_result(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
