//! Helpers shared by `tests/crash.rs` and `tests/fuzz.rs`: exec the real binary as a runtime
//! does, judge its reply against the CNI protocol, and read a store straight from disk.

#![allow(dead_code)]

use podcidr::store::{LeaseRecord, OwnerIndex};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_podcidr");
/// Every exec gets the same boot ID, so no lease is ever reclaimed as "from an earlier boot".
pub const BOOT_ID: &str = "0d15ea5e-0000-4000-8000-00000000c0de";
pub const IFNAME: &str = "eth0";

/// What one exec produced.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn context(&self) -> String {
        format!("status {:?}\nstdout: {}\nstderr: {}", self.status, String::from_utf8_lossy(&self.stdout), self.stderr)
    }

    pub fn killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }
}

/// A CNI reply that follows the protocol.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Exit 0; `None` when stdout is empty (DEL, CHECK, GC, STATUS).
    Ok(Option<Value>),
    /// Exit 1 with one error object.
    Err { code: u64, msg: String },
}

impl Reply {
    pub fn code(&self) -> Option<u64> {
        match self {
            Reply::Ok(_) => None,
            Reply::Err { code, .. } => Some(*code),
        }
    }
}

/// stdout as exactly one JSON value (surrounding white space allowed), or why not.
pub fn single_json(stdout: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(stdout).map_err(|e| format!("stdout is not UTF-8: {e}"))?;
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let first = match values.next() {
        Some(Ok(v)) => v,
        other => return Err(format!("stdout is not one JSON value: {other:?}")),
    };
    if values.next().is_some() {
        return Err("more than one JSON value on stdout".into());
    }
    Ok(first)
}

/// Judges an exec by the CNI protocol: exit 0 with a result or nothing, or exit 1 with exactly
/// one `{cniVersion, code, msg[, details]}` object whose code is not 999; no panic on stderr.
pub fn judge(out: &Out) -> Result<Reply, String> {
    let bad = |why: String| Err(format!("{why}\n{}", out.context()));
    if out.stderr.contains("panicked") {
        return bad("stderr shows a panic".into());
    }
    match out.status.code() {
        Some(0) => {
            if out.stdout.iter().all(u8::is_ascii_whitespace) {
                return Ok(Reply::Ok(None));
            }
            match single_json(&out.stdout) {
                Ok(v) => Ok(Reply::Ok(Some(v))),
                Err(e) => bad(e),
            }
        }
        Some(1) => {
            let v = match single_json(&out.stdout) {
                Ok(v) => v,
                Err(e) => return bad(e),
            };
            let Some(obj) = v.as_object() else {
                return bad("the error is not a JSON object".into());
            };
            let Some(code) = obj.get("code").and_then(Value::as_u64) else {
                return bad("the error has no integer code".into());
            };
            let Some(msg) = obj.get("msg").and_then(Value::as_str) else {
                return bad("the error has no string msg".into());
            };
            if !obj.get("cniVersion").is_some_and(Value::is_string) {
                return bad("the error has no string cniVersion".into());
            }
            if let Some(d) = obj.get("details")
                && !d.is_string()
            {
                return bad("details is not a string".into());
            }
            if let Some(k) = obj.keys().find(|k| !["cniVersion", "code", "msg", "details"].contains(&k.as_str())) {
                return bad(format!("unexpected key {k} in the error object"));
            }
            if code == 999 {
                return bad("code 999 (internal error)".into());
            }
            Ok(Reply::Err { code, msg: msg.to_string() })
        }
        other => bad(format!("exit status {other:?} is neither 0 nor 1")),
    }
}

/// One exec of the plugin, before it is started.
#[derive(Debug, Clone)]
pub struct Exec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub cwd: Option<PathBuf>,
}

impl Exec {
    /// A clean environment: PATH and the fixed boot ID only.
    pub fn bare() -> Self {
        Exec {
            args: Vec::new(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("PODCIDR_BOOT_ID".into(), BOOT_ID.into())],
            stdin: Vec::new(),
            cwd: None,
        }
    }

    /// `command` on attachment (`container_id`, eth0) with `conf` on stdin.
    pub fn cni(command: &str, container_id: &str, conf: &Value) -> Self {
        Exec::bare()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_NETNS", &format!("/var/run/netns/{container_id}"))
            .stdin(conf.to_string().as_bytes())
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = bytes.to_vec();
        self
    }

    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    pub fn spawn(&self) -> Child {
        self.command().spawn().expect("spawn podcidr")
    }

    pub fn run(&self) -> Out {
        finish(self.spawn(), &self.stdin, |_| {})
    }

    /// Runs and judges; panics on a protocol violation.
    pub fn reply(&self) -> Reply {
        let out = self.run();
        judge(&out).unwrap_or_else(|e| panic!("{e}\nrequest: {}", self.describe()))
    }

    /// Runs and expects success; returns the result (ADD) or `Value::Null`.
    pub fn ok(&self) -> Value {
        match self.reply() {
            Reply::Ok(v) => v.unwrap_or(Value::Null),
            Reply::Err { code, msg } => {
                panic!("expected success, got code {code}: {msg}\nrequest: {}", self.describe())
            }
        }
    }

    pub fn describe(&self) -> String {
        let env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("CNI_"))
            .map(|(k, v)| format!("{k}={}", abbreviate(v)))
            .collect();
        format!("{} args={:?} stdin={}", env.join(" "), self.args, abbreviate(&String::from_utf8_lossy(&self.stdin)))
    }
}

pub fn abbreviate(s: &str) -> String {
    if s.chars().count() > 300 {
        format!("{:?}… ({} bytes)", s.chars().take(300).collect::<String>(), s.len())
    } else {
        format!("{s:?}")
    }
}

/// Feeds stdin, collects stdout and stderr, calls `before_reap(pid)` once both are closed (the
/// child has exited or is about to, but its pid is not yet reaped) and then waits.
pub fn finish(mut child: Child, stdin: &[u8], before_reap: impl FnOnce(u32)) -> Out {
    let pid = child.id();
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // VERSION, an early error or a kill may leave stdin unread.
        let _ = pipe.write_all(stdin);
    }
    let mut stderr_pipe = child.stderr.take().expect("stderr pipe");
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut buf);
        buf
    });
    let mut stdout = Vec::new();
    let _ = child.stdout.take().expect("stdout pipe").read_to_end(&mut stdout);
    let stderr = stderr_reader.join().unwrap_or_default();
    before_reap(pid);
    let status = child.wait().expect("wait for podcidr");
    Out { status, stdout, stderr: String::from_utf8_lossy(&stderr).into_owned() }
}

/// `podcidr status --data-dir DIR --json`, parsed.
pub fn status_json(data_dir: &Path) -> Value {
    let out = Exec::bare().args(&["status", "--data-dir", data_dir.to_str().unwrap(), "--json"]).run();
    assert_eq!(out.status.code(), Some(0), "podcidr status failed\n{}", out.context());
    assert!(!out.stderr.contains("panicked"), "podcidr status panicked\n{}", out.context());
    single_json(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.context()))
}

/// The network named `name` in a `podcidr status --json` document.
pub fn status_network<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["networks"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("network {name} missing from status: {doc:#}"))
}

/// A network config with `ipam` (plus type and dataDir) in version 1.0.0.
pub fn conf(data_dir: &Path, name: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("podcidr");
    ipam["dataDir"] = json!(data_dir);
    json!({ "cniVersion": "1.0.0", "name": name, "type": "bridge", "ipam": ipam })
}

/// The addresses (without prefix) of an ADD result.
pub fn result_ips(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("result without ips: {result}"))
        .iter()
        .map(|ip| {
            let a = ip["address"].as_str().expect("address");
            a.split('/').next().unwrap().to_string()
        })
        .collect()
}

/// What a file in the store holds, read without following symbolic links.
#[derive(Debug, Clone)]
pub enum Entry<T> {
    Ok(T),
    /// Not a regular file, or not a record: the message says which.
    Bad(String),
}

/// A store as it is on disk: `leases/` and `owners/` by file name (temporary files left out).
#[derive(Debug, Default)]
pub struct Disk {
    pub leases: BTreeMap<String, Entry<LeaseRecord>>,
    pub owners: BTreeMap<String, Entry<OwnerIndex>>,
}

fn read_entry<T: serde::de::DeserializeOwned>(path: &Path) -> Entry<T> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) => return Entry::Bad(format!("not a regular file: {:?}", m.file_type())),
        Err(e) => return Entry::Bad(e.to_string()),
    }
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(v) => Entry::Ok(v),
            Err(e) => Entry::Bad(format!("{e}: {}", String::from_utf8_lossy(&bytes))),
        },
        Err(e) => Entry::Bad(e.to_string()),
    }
}

pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
        }
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

impl Disk {
    pub fn read(net_dir: &Path) -> Disk {
        let mut disk = Disk::default();
        for n in names(&net_dir.join("leases")) {
            let e = read_entry(&net_dir.join("leases").join(&n));
            disk.leases.insert(n, e);
        }
        for n in names(&net_dir.join("owners")) {
            let e = read_entry(&net_dir.join("owners").join(&n));
            disk.owners.insert(n, e);
        }
        disk
    }

    /// The readable lease records by address.
    pub fn records(&self) -> BTreeMap<&str, &LeaseRecord> {
        self.leases
            .iter()
            .filter_map(|(n, e)| match e {
                Entry::Ok(r) => Some((n.as_str(), r)),
                Entry::Bad(_) => None,
            })
            .collect()
    }

    /// Addresses whose record names `container_id` on eth0.
    pub fn held_by(&self, container_id: &str) -> BTreeSet<String> {
        self.records().into_iter().filter(|(_, r)| r.container_id == container_id).map(|(n, _)| n.to_string()).collect()
    }

    pub fn owner(&self, container_id: &str) -> Option<&Entry<OwnerIndex>> {
        self.owners.get(&format!("{container_id}:{IFNAME}"))
    }
}

/// Every path under `root`, relative to it, without following symbolic links.
pub fn tree(root: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            out.insert(path.strip_prefix(base).unwrap().to_path_buf());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// A small deterministic generator (SplitMix64), so the crash test needs no extra crate and a
/// failing run can be replayed from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
