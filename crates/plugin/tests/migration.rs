//! Migrating a node from host-local to podcidr (docs/migrating-from-host-local.md), against the
//! real host-local binary: whatever the order of host-local ADDs and DELs, imports and podcidr
//! ADDs and DELs, no address is ever held by two live pods.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's containernetworking-plugins (scripts/install-deps.sh installs it).
const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

fn host_local_present() -> bool {
    if Path::new(HOST_LOCAL).exists() {
        return true;
    }
    eprintln!("SKIPPED: {HOST_LOCAL} is missing (scripts/install-deps.sh installs containernetworking-plugins)");
    false
}

struct Node {
    sb: Sandbox,
    /// host-local's dataDir; its store for the network is `<hl_data>/net1`.
    hl_data: PathBuf,
    hl_conf: Value,
    podcidr_conf: Value,
}

impl Node {
    fn new(subnet: &str) -> Node {
        let sb = Sandbox::new();
        let hl_data = sb.root().join("networks");
        let ranges = json!([[{ "subnet": subnet }]]);
        let hl_conf = json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "bridge",
            "ipam": { "type": "host-local", "ranges": ranges, "dataDir": hl_data }
        });
        let podcidr_conf = sb.conf("1.0.0", "net1", json!({ "ranges": ranges }));
        Node { sb, hl_data, hl_conf, podcidr_conf }
    }

    fn hl_dir(&self) -> PathBuf {
        self.hl_data.join("net1")
    }

    /// host-local ADD or DEL as a runtime execs it; the address on success.
    fn host_local(&self, verb: &str, id: &str) -> Result<Option<String>, String> {
        let mut child = Command::new(HOST_LOCAL)
            .env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_NETNS", format!("/var/run/netns/{id}"))
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exec host-local");
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(self.hl_conf.to_string().as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("host-local {verb} {id}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
        }
        if verb != "ADD" {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))?;
        Ok(Some(only_ip(&v)))
    }

    fn podcidr_add(&self, id: &str) -> Result<String, String> {
        match Call::add(id, &self.podcidr_conf).fixed_boot().reply() {
            Reply::Ok(Some(v)) => Ok(only_ip(&v)),
            other => Err(format!("podcidr ADD {id}: {other:?}")),
        }
    }

    fn podcidr_del(&self, id: &str) {
        Call::del(id, &self.podcidr_conf).fixed_boot().run().ok_silent();
    }

    fn import(&self) -> Out {
        let (from, dd) = (self.hl_dir(), self.sb.data_dir());
        Call::bare()
            .fixed_boot()
            .argv(&[
                "import-host-local",
                "--from",
                from.to_str().unwrap(),
                "--network",
                "net1",
                "--data-dir",
                dd.to_str().unwrap(),
            ])
            .run()
    }
}

/// The pods alive on the node: address → pod.
#[derive(Default)]
struct Live(BTreeMap<String, String>);

impl Live {
    fn add(&mut self, ip: String, pod: &str, step: &str) {
        if let Some(other) = self.0.insert(ip.clone(), pod.to_string()) {
            panic!("{step}: {ip} given to {pod} while {other} holds it");
        }
    }
    fn remove(&mut self, pod: &str) {
        self.0.retain(|_, p| p != pod);
    }
}

#[test]
fn the_issue_s_sequence_no_longer_duplicates() {
    if !host_local_present() {
        return;
    }
    let node = Node::new("10.50.0.0/24");
    let mut live = Live::default();
    for pod in ["hl-a", "hl-b"] {
        live.add(node.host_local("ADD", pod).unwrap().unwrap(), pod, "host-local ADD");
    }
    let first = node.import();
    assert_eq!(first.code(), Some(0), "{first:?}");
    // host-local keeps handing out addresses between the import and the switch...
    let late = node.host_local("ADD", "hl-late").unwrap().unwrap();
    assert_eq!(late, "10.50.0.4");
    live.add(late, "hl-late", "host-local ADD after the import");
    // ...and podcidr, switched to, does not hand out the same one.
    let new = node.podcidr_add("pc-new").unwrap();
    live.add(new.clone(), "pc-new", "podcidr ADD after the switch");
    assert_ne!(new, "10.50.0.4");
    // host-local never hands out podcidr's address either (a runtime not switched yet).
    let other = node.host_local("ADD", "hl-after").unwrap().unwrap();
    live.add(other, "hl-after", "host-local ADD after a podcidr ADD");
    let second = node.import();
    assert_eq!(second.code(), Some(0), "{second:?}");
    assert!(second.text().contains("Adopted 2 lease(s)"), "{}", second.text());
}

/// A fixed pseudo-random sequence (no dependency, reproducible): xorshift.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn no_interleaving_of_host_local_imports_and_podcidr_gives_an_address_twice() {
    if !host_local_present() {
        return;
    }
    // A /28: 13 addresses, so both plugins wrap around and reuse released ones.
    let node = Node::new("10.51.0.0/28");
    let mut live = Live::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Pods by who started them; a pod is torn down by host-local (before the switch) or by
    // podcidr (after it), but a podcidr pod never by host-local.
    let (mut hl_pods, mut pc_pods) = (Vec::<String>::new(), Vec::<String>::new());
    let mut imports = 0;
    // A node on host-local has its directory (host-local makes it at its first ADD).
    node.host_local("DEL", "nobody").unwrap();
    for step in 0..240 {
        let op = if step == 0 { 5 } else { rng.below(6) };
        let what = match op {
            0 | 1 => {
                let pod = format!("hl-{step}");
                match node.host_local("ADD", &pod) {
                    Ok(ip) => {
                        live.add(ip.unwrap(), &pod, &format!("step {step}: host-local ADD"));
                        hl_pods.push(pod);
                    }
                    Err(e) => assert!(e.contains("no IP addresses available"), "step {step}: {e}"),
                }
                "host-local ADD"
            }
            2 => {
                let pod = format!("pc-{step}");
                match node.podcidr_add(&pod) {
                    Ok(ip) => {
                        live.add(ip, &pod, &format!("step {step}: podcidr ADD"));
                        pc_pods.push(pod);
                    }
                    Err(e) => assert!(e.contains("no IP addresses available"), "step {step}: {e}"),
                }
                "podcidr ADD"
            }
            3 if !hl_pods.is_empty() => {
                let pod = hl_pods.swap_remove(rng.below(hl_pods.len()));
                // Before the switch host-local tears its pods down; after it, podcidr does.
                if rng.below(2) == 0 {
                    node.host_local("DEL", &pod).unwrap();
                } else {
                    node.podcidr_del(&pod);
                }
                live.remove(&pod);
                "DEL of a host-local pod"
            }
            4 if !pc_pods.is_empty() => {
                let pod = pc_pods.swap_remove(rng.below(pc_pods.len()));
                node.podcidr_del(&pod);
                live.remove(&pod);
                "podcidr DEL"
            }
            5 => {
                let out = node.import();
                assert_eq!(out.code(), Some(0), "step {step}: import found two owners\n{out:?}");
                imports += 1;
                "import"
            }
            _ => "nothing",
        };
        let _ = what;
    }
    assert!(imports > 10 && live.0.len() > 5, "the sequence exercised too little: {imports} imports");
}

#[test]
fn concurrent_host_local_and_podcidr_adds_after_an_import_never_share_an_address() {
    if !host_local_present() {
        return;
    }
    let node = std::sync::Arc::new(Node::new("10.52.0.0/27"));
    node.host_local("DEL", "nobody").unwrap();
    assert_eq!(node.import().code(), Some(0));
    let mut threads = Vec::new();
    for t in 0..4 {
        let node = node.clone();
        threads.push(std::thread::spawn(move || {
            (0..6)
                .filter_map(|i| {
                    let pod = format!("t{t}-{i}");
                    let ip = if t % 2 == 0 {
                        node.host_local("ADD", &pod).ok().flatten()
                    } else {
                        node.podcidr_add(&pod).ok()
                    };
                    ip.map(|ip| (ip, pod))
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut live = Live::default();
    for t in threads {
        for (ip, pod) in t.join().unwrap() {
            live.add(ip, &pod, "concurrent ADDs");
        }
    }
    assert_eq!(live.0.len(), 24, "every ADD fits in a /27: {:?}", live.0);
}

#[test]
fn an_import_that_meets_an_address_with_two_owners_fails_and_names_both() {
    if !host_local_present() {
        return;
    }
    let node = Node::new("10.53.0.0/24");
    // podcidr switched to before any import: it knows nothing of host-local's pods.
    let hl = node.host_local("ADD", "hl-pod").unwrap().unwrap();
    let pc = node.podcidr_add("pc-pod").unwrap();
    assert_eq!(hl, pc, "the set-up expects both to hand out the first address");
    let out = node.import();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(&hl) && out.stderr.contains("hl-pod:eth0") && out.stderr.contains("pc-pod"), "{out:?}");
}

#[test]
fn a_store_never_linked_pays_nothing_for_the_link() {
    // The whole of the cost without a link is one open(2) of a missing file; this checks the
    // request does not touch host-local's directory at all (no lock taken, nothing created).
    let node = Node::new("10.54.0.0/24");
    node.podcidr_add("pod").unwrap();
    assert!(!node.hl_data.exists());
    assert!(!node.sb.net_dir("net1").join("host-local-link").exists());
}

#[test]
fn with_datadir_set_to_host_local_s_the_link_shares_the_one_lock_and_still_protects() {
    if !host_local_present() {
        return;
    }
    let mut node = Node::new("10.55.0.0/24");
    // `dataDir` pointed at host-local's: podcidr's store is host-local's directory itself.
    node.hl_data = node.sb.data_dir();
    node.hl_conf["ipam"]["dataDir"] = json!(node.hl_data);
    let hl = node.host_local("ADD", "hl-pod").unwrap().unwrap();
    let mut import = Call::bare().fixed_boot().argv(&[
        "import-host-local",
        "--from",
        node.hl_dir().to_str().unwrap(),
        "--network",
        "net1",
        "--data-dir",
        node.hl_data.to_str().unwrap(),
    ]);
    import.stdin = Vec::new();
    let mut child = import.command().stdin(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the import waits for ever on the lock it holds itself");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Adopted 1 lease(s)") && !text.contains("Skipped"), "{text}");
    let pc = node.podcidr_add("pc-pod").unwrap();
    let late = node.host_local("ADD", "hl-late").unwrap().unwrap();
    let mut live = Live::default();
    for (ip, pod) in [(hl, "hl-pod"), (pc, "pc-pod"), (late, "hl-late")] {
        live.add(ip, pod, "shared dataDir");
    }
}
