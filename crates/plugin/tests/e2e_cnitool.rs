//! End to end: podcidr as the IPAM of the reference `bridge` plugin, driven by `cnitool`, with
//! real network namespaces, a real bridge and a ping between two "pods".
//!
//! Needs root, `cnitool`, `ip`, `ping` and /usr/lib/cni/bridge (scripts/install-cnitool.sh).
//! Without them the tests print "skipped: <reason>" and pass, unless `PODCIDR_E2E=1`, which
//! makes a missing prerequisite a failure.
//!
//! Every test uses fixed names of its own (network, bridge, namespaces, subnets), so that the
//! leftovers of an interrupted run are found and removed when the test starts again; a lock
//! file keeps two processes from running the same test at once. Whatever happens, a guard
//! removes the namespaces, the bridge and cnitool's cached results, and restores the host's
//! forwarding sysctls, which `isGateway` switches on.

use podcidr_testsupport::apiserver;

use serde_json::{Value, json};
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Instant;

const CNI_PLUGINS: &str = "/usr/lib/cni";
const CARGO_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Where libcni (and so cnitool) caches results; not configurable in cnitool.
const CNI_RESULTS: &str = "/var/lib/cni/results";
const NETNS_DIR: &str = "/run/netns";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IP6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

// ---------------------------------------------------------------------------------------------
// Prerequisites

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn in_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

fn missing_prerequisite() -> Option<String> {
    if effective_uid() != Some(0) {
        return Some("not running as root".into());
    }
    for prog in ["cnitool", "ip", "ping"] {
        if !in_path(prog) {
            return Some(format!("`{prog}` is not in PATH"));
        }
    }
    let bridge = Path::new(CNI_PLUGINS).join("bridge");
    if !bridge.is_file() {
        return Some(format!("{} is missing", bridge.display()));
    }
    None
}

/// True when the test should go on. With `PODCIDR_E2E=1` a missing prerequisite fails.
fn prerequisites_met(test: &str) -> bool {
    let Some(reason) = missing_prerequisite() else {
        return true;
    };
    if std::env::var("PODCIDR_E2E").as_deref() == Ok("1") {
        panic!("{test}: PODCIDR_E2E=1 but {reason}");
    }
    eprintln!("{test}: skipped: {reason} (scripts/install-cnitool.sh installs the tools; run as root)");
    false
}

// ---------------------------------------------------------------------------------------------
// Running commands

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)))
}

fn report(cmd: &Command, out: &Output) -> String {
    format!(
        "`{}` exited with {}\n--- stdout\n{}--- stderr\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panics unless it succeeds, returns its stdout.
fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{}", report(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` for cleanup: failures are expected (nothing to remove) and ignored.
fn quietly(cmd: &mut Command) {
    let _ = cmd.output();
}

fn ip() -> Command {
    Command::new("ip")
}

// ---------------------------------------------------------------------------------------------
// Forwarding sysctls: saved by the first test that starts, restored by the last that ends.

struct SavedForwarding {
    users: usize,
    saved: Vec<(&'static str, String)>,
}

static FORWARDING: Mutex<SavedForwarding> = Mutex::new(SavedForwarding { users: 0, saved: Vec::new() });

struct ForwardingGuard;

impl ForwardingGuard {
    fn new() -> Self {
        let mut f = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
        if f.users == 0 {
            f.saved = [IP_FORWARD, IP6_FORWARD]
                .into_iter()
                .filter_map(|p| fs::read_to_string(p).ok().map(|v| (p, v.trim().to_string())))
                .collect();
        }
        f.users += 1;
        ForwardingGuard
    }
}

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        let mut f = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
        f.users -= 1;
        if f.users > 0 {
            return;
        }
        for (path, value) in &f.saved {
            let now = fs::read_to_string(path).unwrap_or_default();
            if now.trim() != value
                && let Err(e) = fs::write(path, format!("{value}\n"))
            {
                eprintln!("e2e: cannot restore {path} to {value}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One test's world

struct Case {
    /// Short and unique per test: it names the network, the bridge and the namespaces.
    tag: &'static str,
    /// X in 10.250.X.0/24 and fd00:250:X::/64.
    x: u8,
    dual_stack: bool,
}

impl Case {
    fn network(&self) -> String {
        format!("podcidr-e2e-{}", self.tag)
    }
    fn bridge(&self) -> String {
        let name = format!("pcdr-e2e-{}", self.tag);
        assert!(name.len() <= 15, "bridge name {name} is too long");
        name
    }
    fn netns(&self) -> [String; 2] {
        ["a", "b"].map(|s| format!("podcidr-e2e-{}-{s}", self.tag))
    }
    fn v4_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.x, 1)
    }
    fn in_v4_subnet(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(a) if a.octets()[..3] == [10, 250, self.x])
    }
    fn in_v6_subnet(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V6(a) if a.segments()[..4] == [0xfd00, 0x250, u16::from(self.x), 0])
    }
    fn v6_subnet(&self) -> String {
        format!("fd00:250:{}::/64", self.x)
    }

    fn conflist(&self, data_dir: &Path) -> Value {
        let mut ranges = vec![json!([{ "subnet": format!("10.250.{}.0/24", self.x) }])];
        if self.dual_stack {
            ranges.push(json!([{ "subnet": self.v6_subnet() }]));
        }
        json!({
            "cniVersion": "1.0.0",
            "name": self.network(),
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge(),
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "podcidr",
                    "ranges": ranges,
                    "dataDir": data_dir,
                }
            }]
        })
    }
}

/// Owns everything a test creates on the host; dropping it removes all of it.
struct World<'a> {
    case: &'a Case,
    _lock: File,
    _forwarding: ForwardingGuard,
    plugin_dir: tempfile::TempDir,
    conf_dir: tempfile::TempDir,
    data_dir: tempfile::TempDir,
}

impl<'a> World<'a> {
    fn new(case: &'a Case) -> Self {
        // Two processes running the same test would tear down each other's namespaces.
        let lock_path = std::env::temp_dir().join(format!("podcidr-e2e-{}.lock", case.tag));
        let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
        lock.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
        // Leftovers of an interrupted run with the same names.
        clean_host(case);

        let plugin_dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_podcidr"), plugin_dir.path().join("podcidr"))
            .expect("symlink the podcidr binary");
        let conf_dir = tempfile::tempdir().expect("tempdir");
        let data_dir = tempfile::tempdir().expect("tempdir");
        let conf = case.conflist(data_dir.path());
        fs::write(
            conf_dir.path().join(format!("10-{}.conflist", case.network())),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .expect("write the conflist");

        let world = World { case, _lock: lock, _forwarding: ForwardingGuard::new(), plugin_dir, conf_dir, data_dir };
        for ns in case.netns() {
            must(ip().args(["netns", "add", &ns]));
        }
        world
    }

    fn netns_path(ns: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(ns)
    }

    fn cnitool(&self, verb: &str, ns: &str) -> Command {
        let mut cmd = Command::new("cnitool");
        cmd.args([verb, &self.case.network()])
            .arg(Self::netns_path(ns))
            .env("CNI_PATH", format!("{}:{CNI_PLUGINS}", self.plugin_dir.path().display()))
            .env("NETCONFPATH", self.conf_dir.path())
            .env_remove("CAP_ARGS")
            .env_remove("CNI_ARGS")
            .env_remove("CNI_IFNAME")
            .env_remove("CNI_COMMAND");
        cmd
    }

    fn status(&self, json: bool) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_podcidr"));
        cmd.arg("status").arg("--data-dir").arg(self.data_dir.path()).env_remove("CNI_COMMAND");
        if json {
            cmd.arg("--json");
        }
        must(&mut cmd)
    }

    fn store_dir(&self, sub: &str) -> PathBuf {
        self.data_dir.path().join(self.case.network()).join(sub)
    }
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        clean_host(self.case);
    }
}

/// Removes the namespaces, the bridge and cnitool's cached results of `case`; quiet when there
/// is nothing to remove. Deleting a namespace also deletes the veth pair with its eth0.
fn clean_host(case: &Case) {
    for ns in case.netns() {
        if World::netns_path(&ns).exists() {
            quietly(ip().args(["netns", "del", &ns]));
        }
    }
    quietly(ip().args(["link", "del", &case.bridge()]));
    // Cache files are named <network>-<containerID>-<ifname>; the network name is ours alone.
    let prefix = format!("{}-", case.network());
    if let Ok(entries) = fs::read_dir(CNI_RESULTS) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The addresses (without prefix) of a CNI result, with their prefix lengths.
fn result_ips(result: &Value) -> Vec<(IpAddr, u8)> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("result without ips: {result}"))
        .iter()
        .map(|ip| {
            let s = ip["address"].as_str().unwrap_or_else(|| panic!("ips[] without address: {result}"));
            let (addr, len) = s.split_once('/').unwrap_or_else(|| panic!("address {s} is not a CIDR"));
            (addr.parse().unwrap_or_else(|e| panic!("{s}: {e}")), len.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
        })
        .collect()
}

/// The addresses `ip -j addr show` lists on eth0 inside `ns`, as (address, flags) pairs.
fn addrs_in_netns(ns: &str, family: &str) -> Vec<(IpAddr, Value)> {
    let out = must(ip().args(["-n", ns, family, "-j", "addr", "show", "dev", "eth0"]));
    let links: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j addr: {e}: {out}"));
    links
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| {
            let ip = a["local"].as_str()?.parse().ok()?;
            Some((ip, a))
        })
        .collect()
}

fn ping(from_ns: &str, to: IpAddr) {
    let mut last = String::new();
    // One retry: the first echo of a fresh link can be lost while neighbours are resolved.
    for _ in 0..2 {
        let mut cmd = ip();
        cmd.args(["netns", "exec", from_ns, "ping", "-c1", "-W2", &to.to_string()]);
        let out = run(&mut cmd);
        if out.status.success() {
            return;
        }
        last = report(&cmd, &out);
    }
    panic!("no ping from {from_ns} to {to}:\n{last}");
}

struct Attached {
    ns: String,
    v4: IpAddr,
    v6: Option<IpAddr>,
}

fn add(world: &World, ns: &str) -> Attached {
    let case = world.case;
    let out = must(&mut world.cnitool("add", ns));
    let result: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("cnitool add printed no JSON ({e}): {out}"));
    eprintln!("{}: ADD {ns}: {}", case.tag, result["ips"]);
    let ips = result_ips(&result);
    assert_eq!(ips.len(), if case.dual_stack { 2 } else { 1 }, "one address per range set expected: {result}");

    let v4: Vec<_> = ips.iter().filter(|(ip, _)| ip.is_ipv4()).collect();
    assert_eq!(v4.len(), 1, "one IPv4 address expected: {result}");
    let (v4, len) = *v4[0];
    assert!(case.in_v4_subnet(v4), "{v4} is not in 10.250.{}.0/24", case.x);
    assert_eq!(len, 24, "{v4}: prefix length");
    assert_ne!(v4, IpAddr::V4(case.v4_gateway()), "the gateway was handed out");
    assert_ne!(v4, IpAddr::V4(Ipv4Addr::new(10, 250, case.x, 0)), "network address");
    assert_ne!(v4, IpAddr::V4(Ipv4Addr::new(10, 250, case.x, 255)), "broadcast address");
    let gw = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"].as_str().is_some_and(|a| a.starts_with(&format!("{v4}/"))))
        .and_then(|i| i["gateway"].as_str())
        .map(str::to_string);
    assert_eq!(gw, Some(case.v4_gateway().to_string()), "IPv4 gateway: {result}");

    let in_ns = addrs_in_netns(ns, "-4");
    assert!(
        in_ns.iter().any(|(a, info)| *a == v4 && info["prefixlen"] == 24),
        "{v4}/24 is not on eth0 in {ns}: {in_ns:?}"
    );

    let v6 = case.dual_stack.then(|| {
        let v6: Vec<_> = ips.iter().filter(|(ip, _)| ip.is_ipv6()).collect();
        assert_eq!(v6.len(), 1, "one IPv6 address expected: {result}");
        let (v6, len) = *v6[0];
        assert!(case.in_v6_subnet(v6), "{v6} is not in {}", case.v6_subnet());
        assert_eq!(len, 64, "{v6}: prefix length");
        let gw6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x250, u16::from(case.x), 0, 0, 0, 0, 1));
        assert_ne!(v6, gw6, "the IPv6 gateway was handed out");
        // Possibly still tentative (DAD): listed is enough.
        let in_ns = addrs_in_netns(ns, "-6");
        assert!(
            in_ns.iter().any(|(a, info)| *a == v6 && info["prefixlen"] == 64),
            "{v6}/64 is not on eth0 in {ns}: {in_ns:?}"
        );
        v6
    });
    Attached { ns: ns.to_string(), v4, v6 }
}

fn run_case(test: &str, case: Case) {
    if !prerequisites_met(test) {
        return;
    }
    let started = Instant::now();
    let world = World::new(&case);
    let [ns_a, ns_b] = case.netns();

    let a = add(&world, &ns_a);
    let b = add(&world, &ns_b);
    assert_ne!(a.v4, b.v4, "both namespaces got {}", a.v4);
    if case.dual_stack {
        assert_ne!(a.v6, b.v6, "both namespaces got {:?}", a.v6);
    }

    ping(&a.ns, b.v4);
    ping(&b.ns, a.v4);

    for at in [&a, &b] {
        must(&mut world.cnitool("check", &at.ns));
    }

    // The operator's view lists both holders.
    let human = world.status(false);
    let all: Vec<IpAddr> = [&a, &b].iter().flat_map(|at| std::iter::once(at.v4).chain(at.v6)).collect();
    for ip in &all {
        assert!(
            human.lines().any(|l| l.trim_start().starts_with(&format!("{ip} ("))),
            "status does not list {ip}:\n{human}"
        );
    }
    let expected_sets = if case.dual_stack { 2 } else { 1 };
    assert_allocated(&world, expected_sets, 2);

    for at in [&a, &b] {
        must(&mut world.cnitool("del", &at.ns));
        let out = run(ip().args(["-n", &at.ns, "link", "show", "eth0"]));
        assert!(!out.status.success(), "eth0 is still in {} after DEL", at.ns);
    }

    for sub in ["leases", "owners"] {
        let dir = world.store_dir(sub);
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{} still holds {left:?} after DEL", dir.display());
    }
    assert_allocated(&world, expected_sets, 0);
    let human = world.status(false);
    for ip in &all {
        assert!(!human.contains(&format!(" {ip} (")), "status still lists {ip} after DEL:\n{human}");
    }

    drop(world);
    eprintln!("{test}: passed in {:.1?}", started.elapsed());
}

/// `podcidr status --json`: this network has `sets` range sets, each with `n` allocated.
fn assert_allocated(world: &World, sets: usize, n: u64) {
    let out = world.status(true);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}: {out}"));
    let net = doc["networks"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == world.case.network()))
        .unwrap_or_else(|| panic!("status --json does not show {}: {out}", world.case.network()));
    let range_sets = net["rangeSets"].as_array().cloned().unwrap_or_default();
    assert_eq!(range_sets.len(), sets, "range sets in status: {out}");
    for rs in &range_sets {
        assert_eq!(rs["allocated"].as_u64(), Some(n), "allocated in {rs}: {out}");
    }
    assert_eq!(net["leases"].as_array().map(Vec::len), Some(n as usize * sets), "leases in status: {out}");
}

#[test]
fn bridge_ipv4_two_namespaces() {
    run_case("bridge_ipv4_two_namespaces", Case { tag: "v4", x: 1, dual_stack: false });
}

#[test]
fn bridge_dual_stack_two_namespaces() {
    run_case("bridge_dual_stack_two_namespaces", Case { tag: "ds", x: 2, dual_stack: true });
}

// ---------------------------------------------------------------------------------------------
// Every example conflist in conf/ (and below it), with the reference plugins installed.
// ---------------------------------------------------------------------------------------------

const CONF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../conf");

/// `conf/**/*.conflist`, sorted, so that each keeps its index (and its names) from run to run.
fn example_conflists() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "conflist") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(CONF_DIR), &mut out);
    out.sort();
    out
}

/// The names the test gives example `i`: network, bridge, namespace.
struct Example {
    i: usize,
}

impl Example {
    fn network(&self) -> String {
        format!("podcidr-e2e-ex{}", self.i)
    }
    fn bridge(&self) -> String {
        let name = format!("pcdr-e2e-ex{}", self.i);
        assert!(name.len() <= 15, "bridge name {name} is too long");
        name
    }
    fn netns(&self) -> String {
        format!("podcidr-e2e-ex{}", self.i)
    }
    fn clean_host(&self) {
        if World::netns_path(&self.netns()).exists() {
            quietly(ip().args(["netns", "del", &self.netns()]));
        }
        quietly(ip().args(["link", "del", &self.bridge()]));
        let prefix = format!("{}-", self.network());
        if let Ok(entries) = fs::read_dir(CNI_RESULTS) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Removes what one example created, whatever happens.
struct ExampleGuard<'a>(&'a Example);

impl Drop for ExampleGuard<'_> {
    fn drop(&mut self) {
        self.0.clean_host();
    }
}

/// A copy of `conflist` changed only where the test must: its network name, bridge name (so
/// that nothing of the host's, such as a real `podnet` or `cni0`, is touched), and in the podcidr
/// stanza the paths (dataDir, logFile), the kubeconfig of the stand-in API server, the node
/// name, and a kubelet config file. cniVersion and the plugin list are left as they are.
fn rewrite_example(conflist: &Value, ex: &Example, dir: &Path, kubeconfig: &Path, kubelet_yaml: &Path) -> Value {
    let mut c = conflist.clone();
    c["name"] = json!(ex.network());
    let plugins = c["plugins"].as_array_mut().expect("a conflist has a plugins list");
    for p in plugins {
        if p.get("bridge").is_some() {
            p["bridge"] = json!(ex.bridge());
        }
        let Some(ipam) = p.get_mut("ipam").filter(|i| i["type"] == "podcidr") else {
            continue;
        };
        ipam["dataDir"] = json!(dir.join("data"));
        ipam["logFile"] = json!(dir.join("podcidr.log"));
        match ipam["mode"].as_str().unwrap_or("static") {
            "kubernetes" | "crd" => {
                ipam["kubeconfig"] = json!(kubeconfig);
                ipam["nodeName"] = json!("node-manual");
            }
            "kubelet" => ipam["kubeletConfig"] = json!(kubelet_yaml),
            _ => {}
        }
    }
    c
}

#[test]
fn every_example_conflist_sets_up_a_namespace_with_the_reference_plugins() {
    const TEST: &str = "every_example_conflist_sets_up_a_namespace_with_the_reference_plugins";
    if !prerequisites_met(TEST) {
        return;
    }
    let started = Instant::now();
    let lock_path = std::env::temp_dir().join("podcidr-e2e-examples.lock");
    let lock = File::create(&lock_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock().unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    let _forwarding = ForwardingGuard::new();

    let server = apiserver::ApiServer::start(apiserver::API_VERSIONS[0]);
    server.route_fixture("/api/v1/nodes/node-manual", "node-dualstack-manual.json");
    server.route_fixture("/apis/cilium.io/v2/ciliumnodes/node-manual", "ciliumnode.json");
    let scratch = tempfile::tempdir().expect("tempdir");
    let kubeconfig = server.token_kubeconfig(scratch.path(), apiserver::TOKEN);
    let kubelet_yaml = scratch.path().join("kubelet-config.yaml");
    fs::write(
        &kubelet_yaml,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\npodCIDR: 10.244.3.0/24,fd00:10:244:3::/64\n",
    )
    .expect("write the kubelet config");
    // An empty /proc for the kubelet mode, so that a kubelet running on this machine is not read.
    let no_procs = scratch.path().join("proc");
    fs::create_dir(&no_procs).expect("mkdir");
    let plugin_dir = scratch.path().join("bin");
    fs::create_dir(&plugin_dir).expect("mkdir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_podcidr"), plugin_dir.join("podcidr")).expect("symlink podcidr");

    let examples = example_conflists();
    assert!(examples.len() >= 4, "conf/ should hold the four mode examples: {examples:?}");
    // One after another: several examples use the same subnets.
    for (i, path) in examples.iter().enumerate() {
        let shown = path.strip_prefix(CARGO_DIR).unwrap_or(path).display().to_string();
        let ex = Example { i };
        ex.clean_host();
        let _guard = ExampleGuard(&ex);
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{shown}: {e}"));
        let original: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{shown} is not JSON: {e}"));
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = rewrite_example(&original, &ex, dir.path(), &kubeconfig, &kubelet_yaml);
        let conf_dir = dir.path().join("net.d");
        fs::create_dir(&conf_dir).expect("mkdir");
        fs::write(conf_dir.join(path.file_name().unwrap()), serde_json::to_vec_pretty(&conf).unwrap())
            .expect("write the conflist");
        must(ip().args(["netns", "add", &ex.netns()]));
        let netns = World::netns_path(&ex.netns());

        let cnitool = |verb: &str| {
            let mut cmd = Command::new("cnitool");
            cmd.args([verb, &ex.network()])
                .arg(&netns)
                .env("CNI_PATH", format!("{}:{CNI_PLUGINS}", plugin_dir.display()))
                .env("NETCONFPATH", &conf_dir)
                .env("PODCIDR_PROC_ROOT", &no_procs)
                .env_remove("CAP_ARGS")
                .env_remove("CNI_ARGS")
                .env_remove("CNI_IFNAME")
                .env_remove("CNI_COMMAND");
            cmd
        };
        let context = |what: &str, out: &Output, cmd: &Command| {
            let log = fs::read_to_string(dir.path().join("podcidr.log")).unwrap_or_default();
            format!(
                "{shown} (cniVersion {}): {what}\n{}\n--- podcidr.log\n{log}",
                original["cniVersion"],
                report(cmd, out)
            )
        };

        let mut add = cnitool("add");
        let out = run(&mut add);
        assert!(out.status.success(), "{}", context("cnitool add failed", &out, &add));
        let result: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{}", context(&format!("no JSON result ({e})"), &out, &add)));
        eprintln!("{shown}: ADD: {}", result["ips"]);
        let ips = result_ips(&result);
        assert!(!ips.is_empty(), "{shown}: no address: {result}");
        for (addr, len) in &ips {
            let family = if addr.is_ipv4() { "-4" } else { "-6" };
            let on_eth0 = addrs_in_netns(&ex.netns(), family);
            assert!(
                on_eth0.iter().any(|(a, info)| a == addr && info["prefixlen"] == *len),
                "{shown}: {addr}/{len} is not on eth0 in {}: {on_eth0:?}",
                ex.netns()
            );
        }
        // The bridge is the gateway (isGateway): the pod reaches it.
        let gw4 = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["gateway"].as_str()?.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4);
        if let Some(gw) = gw4 {
            ping(&ex.netns(), gw);
        }
        let mut status = Command::new(env!("CARGO_BIN_EXE_podcidr"));
        status.arg("status").arg("--data-dir").arg(dir.path().join("data")).env_remove("CNI_COMMAND");
        let listed = must(&mut status);
        for (addr, _) in &ips {
            assert!(
                listed.lines().any(|l| l.trim_start().starts_with(&format!("{addr} ("))),
                "{shown}: status: {listed}"
            );
        }

        let mut check = cnitool("check");
        let out = run(&mut check);
        assert!(out.status.success(), "{}", context("cnitool check failed", &out, &check));
        let mut del = cnitool("del");
        let out = run(&mut del);
        assert!(out.status.success(), "{}", context("cnitool del failed", &out, &del));
        let leases = dir.path().join("data").join(ex.network()).join("leases");
        let left: Vec<_> =
            fs::read_dir(&leases).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{shown}: {} still holds {left:?} after DEL", leases.display());
        eprintln!("{shown}: ADD, CHECK, DEL passed with cniVersion {}", original["cniVersion"]);
    }
    eprintln!("{TEST}: {} conflists passed in {:.1?}", examples.len(), started.elapsed());
}
