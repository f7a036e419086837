//! Helpers for exec-level tests: run the built `podcidr` binary the way a container runtime
//! does (a clean environment, the CNI_* variables, the network config on stdin), judge what a
//! runtime would see, and read a store straight from disk.

#![allow(dead_code)]

use podcidr::store::{LeaseRecord, OwnerIndex};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use tempfile::TempDir;

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The versions whose results have host-local's 0.2.0 shape (`ip4`/`ip6`), also spoken.
pub const LEGACY_VERSIONS: [&str; 2] = ["0.1.0", "0.2.0"];
pub const BIN: &str = env!("CARGO_BIN_EXE_podcidr");
pub const IFNAME: &str = "eth0";
/// The boot ID of [`Call::fixed_boot`].
pub const BOOT_ID: &str = "0d15ea5e-0000-4000-8000-00000000c0de";
/// The keys a CNI error object may have.
const ERROR_KEYS: [&str; 4] = ["cniVersion", "code", "msg", "details"];

// ---------------------------------------------------------------------------------------------
// Running the binary.
// ---------------------------------------------------------------------------------------------

/// One exec of the plugin: arguments, environment (always cleared first), stdin, working
/// directory.
#[derive(Debug, Clone)]
pub struct Call {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    cwd: Option<PathBuf>,
}

impl Call {
    /// No CNI variables at all; `PATH` only.
    pub fn bare() -> Self {
        Call { argv: Vec::new(), env: vec![("PATH".into(), "/usr/bin:/bin".into())], stdin: Vec::new(), cwd: None }
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

    /// `command` on attachment (`container_id`, eth0) with `conf` on stdin.
    pub fn cni(command: &str, container_id: &str, conf: &Value) -> Self {
        Call::attach(command, container_id).conf(conf)
    }

    pub fn add(container_id: &str, conf: &Value) -> Self {
        Call::cni("ADD", container_id, conf)
    }

    pub fn del(container_id: &str, conf: &Value) -> Self {
        Call::cni("DEL", container_id, conf)
    }

    pub fn check(container_id: &str, conf: &Value) -> Self {
        Call::cni("CHECK", container_id, conf)
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

    /// The same boot ID for every exec, so no lease is ever reclaimed as "from an earlier boot".
    pub fn fixed_boot(self) -> Self {
        self.env("PODCIDR_BOOT_ID", BOOT_ID)
    }

    pub fn ifname(self, ifname: &str) -> Self {
        self.env("CNI_IFNAME", ifname)
    }

    /// CNI_ARGS.
    pub fn args(self, cni_args: &str) -> Self {
        self.env("CNI_ARGS", cni_args)
    }

    /// Command line arguments (the operator CLI).
    pub fn argv(mut self, args: &[&str]) -> Self {
        self.argv = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn conf(mut self, conf: &Value) -> Self {
        self.stdin = conf.to_string().into_bytes();
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

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.argv)
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

    /// Starts the exec; [`finish`] feeds it `self.stdin` and collects its output.
    pub fn spawn(&self) -> Child {
        self.command().spawn().expect("spawn podcidr")
    }

    pub fn run(&self) -> Out {
        finish(self.spawn(), &self.stdin, |_| {})
    }

    /// Runs and [judges](Out::judge); panics on a protocol violation.
    pub fn reply(&self) -> Reply {
        self.run().judge().unwrap_or_else(|e| panic!("{e}\nrequest: {}", self.describe()))
    }

    /// Runs, judges and expects success; returns the result (ADD) or `Value::Null`.
    pub fn ok(&self) -> Value {
        match self.reply() {
            Reply::Ok(v) => v.unwrap_or(Value::Null),
            Reply::Err { code, msg } => {
                panic!("expected success, got code {code}: {msg}\nrequest: {}", self.describe())
            }
        }
    }

    /// The CNI variables, arguments and stdin, abbreviated, for a failure message.
    pub fn describe(&self) -> String {
        let env: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("CNI_"))
            .map(|(k, v)| format!("{k}={}", abbreviate(v)))
            .collect();
        format!("{} args={:?} stdin={}", env.join(" "), self.argv, abbreviate(&String::from_utf8_lossy(&self.stdin)))
    }
}

fn abbreviate(s: &str) -> String {
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

/// The operator CLI (no CNI_COMMAND): `podcidr <args>`.
pub fn cli(args: &[&str]) -> Out {
    Call::bare().argv(args).run()
}

// ---------------------------------------------------------------------------------------------
// What an exec produced.
// ---------------------------------------------------------------------------------------------

/// What one exec of the plugin produced.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context())
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
fn single_json(stdout: &[u8]) -> Result<Value, String> {
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

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.stdout).expect("stdout is UTF-8")
    }

    pub fn killed(&self) -> bool {
        self.status.signal() == Some(libc::SIGKILL)
    }

    pub fn context(&self) -> String {
        format!("{}\nstdout: {}\nstderr: {}", self.status, String::from_utf8_lossy(&self.stdout), self.stderr)
    }

    /// stdout as exactly one JSON value (a trailing newline allowed, nothing else).
    pub fn single_json(&self) -> Value {
        let v = single_json(&self.stdout).unwrap_or_else(|e| panic!("{e}\n{}", self.context()));
        let text = self.text();
        assert_eq!(text.trim_end(), text.trim(), "leading junk on stdout\n{}", self.context());
        v
    }

    /// Success with a JSON document on stdout (ADD, VERSION).
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.code(), Some(0), "expected success\n{}", self.context());
        self.single_json()
    }

    /// Success with nothing on stdout (DEL, CHECK, GC, STATUS).
    pub fn ok_silent(&self) {
        assert_eq!(self.code(), Some(0), "expected success\n{}", self.context());
        assert!(self.text().trim().is_empty(), "expected no stdout\n{}", self.context());
    }

    /// A CNI error object with `code`: exit 1, one JSON object on stdout holding a cniVersion,
    /// the code and a message. Returns the object.
    pub fn err(&self, code: u64) -> Value {
        assert_eq!(self.code(), Some(1), "expected exit 1\n{}", self.context());
        let v = self.single_json();
        let obj = v.as_object().unwrap_or_else(|| panic!("error is not a JSON object\n{}", self.context()));
        assert_eq!(obj.get("code").and_then(Value::as_u64), Some(code), "wrong error code\n{}", self.context());
        let version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("");
        assert!(
            VERSIONS.contains(&version) || LEGACY_VERSIONS.contains(&version),
            "error without a supported cniVersion\n{}",
            self.context()
        );
        assert!(
            obj.get("msg").and_then(Value::as_str).is_some_and(|m| !m.is_empty()),
            "error without msg\n{}",
            self.context()
        );
        for key in obj.keys() {
            assert!(ERROR_KEYS.contains(&key.as_str()), "unexpected key {key} in the error object\n{}", self.context());
        }
        v
    }

    /// The message of an error with `code`.
    pub fn err_msg(&self, code: u64) -> String {
        self.err(code)["msg"].as_str().unwrap().to_string()
    }

    /// Judges the exec by the CNI protocol: exit 0 with a result or nothing, or exit 1 with
    /// exactly one `{cniVersion, code, msg[, details]}` object whose code is not 999; no panic
    /// on stderr.
    pub fn judge(&self) -> Result<Reply, String> {
        let bad = |why: String| Err(format!("{why}\n{}", self.context()));
        if self.stderr.contains("panicked") {
            return bad("stderr shows a panic".into());
        }
        match self.code() {
            Some(0) => {
                if self.stdout.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Reply::Ok(None));
                }
                match single_json(&self.stdout) {
                    Ok(v) => Ok(Reply::Ok(Some(v))),
                    Err(e) => bad(e),
                }
            }
            Some(1) => {
                let v = match single_json(&self.stdout) {
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
                if let Some(k) = obj.keys().find(|k| !ERROR_KEYS.contains(&k.as_str())) {
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

/// The addresses of a result without their prefix.
pub fn result_ips(result: &Value) -> Vec<String> {
    addresses(result).into_iter().map(|a| a.split('/').next().unwrap().to_string()).collect()
}

/// The single address of a result, without its prefix.
pub fn only_ip(result: &Value) -> String {
    let ips = result_ips(result);
    assert_eq!(ips.len(), 1, "expected one address: {result}");
    ips[0].clone()
}

/// `conf` with `prevResult` set, as a runtime builds the CHECK request.
pub fn with_prev_result(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// `podcidr status --data-dir DIR --json` (with the fixed boot ID), parsed.
pub fn status_json(data_dir: &Path) -> Value {
    let out = Call::bare().fixed_boot().argv(&["status", "--data-dir", data_dir.to_str().unwrap(), "--json"]).run();
    assert_eq!(out.code(), Some(0), "podcidr status failed\n{}", out.context());
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

// ---------------------------------------------------------------------------------------------
// Configs and the store on disk.
// ---------------------------------------------------------------------------------------------

/// A network config of `version` named `name` whose ipam stanza is `ipam` plus type and dataDir.
pub fn conf(data_dir: &Path, version: &str, name: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("podcidr");
    ipam["dataDir"] = json!(data_dir);
    json!({ "cniVersion": version, "name": name, "type": "bridge", "ipam": ipam })
}

/// A scratch directory holding the store's dataDir, so that anything a request creates outside
/// dataDir shows up under `root()`.
pub struct Sandbox {
    tmp: TempDir,
    data_dir: PathBuf,
}

impl Sandbox {
    /// dataDir at `<root>/data`.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        Sandbox { tmp, data_dir }
    }

    /// dataDir at `<root>/a/b/data` and a working directory for the child at `<root>/cwd`
    /// (see `cwd`), so that a `..` or two, or a relative path, also lands under the root.
    pub fn nested() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("cwd")).unwrap();
        let data_dir = tmp.path().join("a/b/data");
        Sandbox { tmp, data_dir }
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// The working directory a `nested` sandbox made.
    pub fn cwd(&self) -> PathBuf {
        self.root().join("cwd")
    }

    pub fn net_dir(&self, network: &str) -> PathBuf {
        self.data_dir.join(network)
    }

    /// [`conf`] with this sandbox's dataDir.
    pub fn conf(&self, version: &str, name: &str, ipam: Value) -> Value {
        conf(&self.data_dir, version, name, ipam)
    }

    /// `conf` with one IPv4 range set of `subnet`.
    pub fn conf_v4(&self, version: &str, subnet: &str) -> Value {
        self.conf(version, "net1", json!({ "ranges": [[{ "subnet": subnet }]] }))
    }

    /// File names in `leases/` of `network`, sorted.
    pub fn lease_files(&self, network: &str) -> Vec<String> {
        names(&self.net_dir(network).join("leases"))
    }

    /// File names in `owners/` of `network`, sorted.
    pub fn owner_files(&self, network: &str) -> Vec<String> {
        names(&self.net_dir(network).join("owners"))
    }

    /// The lease record of `ip` in `network`.
    pub fn lease(&self, network: &str, ip: &str) -> Value {
        let text = std::fs::read_to_string(self.net_dir(network).join("leases").join(ip))
            .unwrap_or_else(|e| panic!("lease {ip}: {e}"));
        serde_json::from_str(&text).expect("lease record is JSON")
    }

    /// Every path under the sandbox, relative to it, without following symbolic links.
    pub fn tree(&self) -> BTreeSet<PathBuf> {
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
        let mut out = BTreeSet::new();
        walk(self.root(), self.root(), &mut out);
        out
    }

    /// `tree` without dataDir and what is in it.
    pub fn outside_data(&self) -> BTreeSet<PathBuf> {
        let rel = self.data_dir.strip_prefix(self.root()).unwrap().to_path_buf();
        self.tree().into_iter().filter(|p| !p.starts_with(&rel)).collect()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// File names in `dir`, sorted, without dot files (temporary files); none if it is missing.
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

/// What a file in the store holds, read without following symbolic links.
#[derive(Debug, Clone)]
pub enum Entry<T> {
    Ok(T),
    /// Not a regular file, or not a record: the message says which.
    Bad(String),
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

/// A store as it is on disk: `leases/` and `owners/` by file name (temporary files left out).
#[derive(Debug, Default)]
pub struct Disk {
    pub leases: BTreeMap<String, Entry<LeaseRecord>>,
    pub owners: BTreeMap<String, Entry<OwnerIndex>>,
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

// ---------------------------------------------------------------------------------------------
// Odds and ends.
// ---------------------------------------------------------------------------------------------

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
