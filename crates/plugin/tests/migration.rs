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
        host_local_exec(&self.hl_conf, verb, id)
    }

    fn podcidr_add(&self, id: &str) -> Result<String, String> {
        self.podcidr_add_in(id, BOOT_ID)
    }

    /// podcidr ADD in the boot `boot` (a reboot is a new boot ID).
    fn podcidr_add_in(&self, id: &str, boot: &str) -> Result<String, String> {
        match Call::add(id, &self.podcidr_conf).env("PODCIDR_BOOT_ID", boot).reply() {
            Reply::Ok(Some(v)) => Ok(only_ip(&v)),
            other => Err(format!("podcidr ADD {id}: {other:?}")),
        }
    }

    fn podcidr_del(&self, id: &str) {
        Call::del(id, &self.podcidr_conf).fixed_boot().run().ok_silent();
    }

    /// The names in host-local's directory that are addresses (its lease files).
    fn hl_leases(&self) -> Vec<String> {
        names(&self.hl_dir()).into_iter().filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect()
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

/// host-local (the plugin alone, `conf` its own config) as a runtime execs it; the address on
/// success of an ADD.
fn host_local_exec(conf: &Value, verb: &str, id: &str) -> Result<Option<String>, String> {
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
        child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
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

// ---------------------------------------------------------------------------------------------
// Issue 17
// ---------------------------------------------------------------------------------------------

impl Node {
    /// A podcidr verb without an attachment (STATUS, GC) in boot `boot`; the config in 1.1.0.
    fn podcidr_verb(&self, verb: &str, boot: &str, extra: Value) -> Out {
        let mut conf = self.podcidr_conf.clone();
        conf["cniVersion"] = json!("1.1.0");
        for (k, v) in extra.as_object().into_iter().flatten() {
            conf[k] = v.clone();
        }
        Call::verb(verb).conf(&conf).env("PODCIDR_BOOT_ID", boot).run()
    }

    fn unlink(&self) -> Out {
        let dd = self.sb.data_dir();
        Call::bare().argv(&["unlink-host-local", "--network", "net1", "--data-dir", dd.to_str().unwrap()]).run()
    }

    fn linked(&self) -> bool {
        status_network(&status_json(&self.sb.data_dir()), "net1")["hostLocalLink"].is_string()
    }
}

/// Point 1: a conflist with `dataDir`, migrated with the document's command: the import goes
/// where the switched plugin looks (the conflist's `dataDir` and `name`), so no host-local pod's
/// address is handed out again.
#[test]
fn import_with_conf_uses_the_conflist_s_name_and_data_dir() {
    if !host_local_present() {
        return;
    }
    let sb = Sandbox::new();
    let d = sb.root().join("cni-data");
    let ipam = json!({ "type": "host-local", "dataDir": d, "ranges": [[{ "subnet": "10.100.0.0/29" }]] });
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "cdnet",
        "plugins": [{ "type": "bridge", "bridge": "cd0", "ipam": ipam }]
    });
    let conf_file = sb.root().join("10-cdnet.conflist");
    std::fs::write(&conf_file, conflist.to_string()).unwrap();
    let hl_conf = json!({ "cniVersion": "1.0.0", "name": "cdnet", "type": "bridge", "ipam": ipam });
    let mut live = Live::default();
    for pod in ["h0", "h1", "h2"] {
        live.add(host_local_exec(&hl_conf, "ADD", pod).unwrap().unwrap(), pod, "host-local ADD");
    }
    let from = d.join("cdnet");
    let import = |extra: &[&str]| {
        let mut argv =
            vec!["import-host-local", "--from", from.to_str().unwrap(), "--conf", conf_file.to_str().unwrap()];
        argv.extend_from_slice(extra);
        Call::bare().fixed_boot().argv(&argv).run()
    };
    // A --network or --data-dir that disagrees with the conflist is refused, naming both.
    let out = import(&["--network", "cd-net"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("cd-net") && out.stderr.contains("cdnet"), "{out:?}");
    let elsewhere = sb.root().join("elsewhere");
    let out = import(&["--data-dir", elsewhere.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains(elsewhere.to_str().unwrap()) && out.stderr.contains(d.to_str().unwrap()), "{out:?}");
    assert!(!elsewhere.exists() && !d.join("cd-net").exists(), "a refused import wrote a store");
    // --from at host-local's data directory instead of the network's: refused, saying what it wants.
    let out = Call::bare()
        .fixed_boot()
        .argv(&["import-host-local", "--from", d.to_str().unwrap(), "--conf", conf_file.to_str().unwrap()])
        .run();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("no host-local lease file and no `lock`"), "{out:?}");
    // The document's command for a conflist with dataDir (a --network that agrees is accepted).
    let out = import(&[]);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.text().contains(&format!(
            "Adopted 3 lease(s) of 3 attachment(s) from {} into {}",
            from.display(),
            from.display()
        )),
        "{out:?}"
    );
    // The switch: type podcidr, dataDir kept.
    let mut pc = hl_conf.clone();
    pc["ipam"]["type"] = json!("podcidr");
    let add = |id: &str| match Call::add(id, &pc).fixed_boot().reply() {
        Reply::Ok(Some(v)) => only_ip(&v),
        other => panic!("podcidr ADD {id}: {other:?}"),
    };
    for pod in ["p0", "p1"] {
        live.add(add(pod), pod, "podcidr ADD");
    }
    Call::del("p0", &pc).fixed_boot().run().ok_silent();
    live.remove("p0");
    live.add(add("p2"), "p2", "podcidr ADD after a DEL");
    // Five addresses, five live pods: the next ADD is told so, not given a host-local pod's.
    let out = Call::add("p3", &pc).fixed_boot().run();
    assert!(out.err_msg(100).contains("no IP addresses available"), "{out:?}");
}

/// Point 1: a conflist without dataDir: podcidr's store is the default, and a --data-dir that
/// says otherwise is refused.
#[test]
fn import_with_conf_without_data_dir_refuses_another_data_dir() {
    let sb = Sandbox::new();
    let from = sb.root().join("networks").join("plain");
    std::fs::create_dir_all(&from).unwrap();
    std::fs::write(from.join("lock"), "").unwrap();
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "plain",
        "plugins": [{ "type": "bridge", "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.101.0.0/24" }]] } }]
    });
    let conf_file = sb.root().join("10-plain.conflist");
    std::fs::write(&conf_file, conflist.to_string()).unwrap();
    let dd = sb.data_dir();
    let out = cli(&[
        "import-host-local",
        "--from",
        from.to_str().unwrap(),
        "--conf",
        conf_file.to_str().unwrap(),
        "--data-dir",
        dd.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("/var/lib/cni/podcidr") && out.stderr.contains(dd.to_str().unwrap()), "{out:?}");
    assert!(!dd.exists(), "a refused import wrote a store");
}

/// Point 2: on a node drained before the switch, a podcidr DEL does not end the link: a
/// host-local ADD after it is still seen.
#[test]
fn the_link_ends_only_through_unlink_host_local() {
    if !host_local_present() {
        return;
    }
    let node = Node::new("10.102.0.0/29");
    node.host_local("DEL", "nobody").unwrap();
    assert_eq!(node.import().code(), Some(0));
    let mut live = Live::default();
    assert_eq!(node.podcidr_add("P").unwrap(), "10.102.0.2");
    node.podcidr_del("P");
    assert!(node.linked(), "a DEL ended the link");
    live.add(node.host_local("ADD", "H").unwrap().unwrap(), "H", "host-local ADD");
    for pod in ["R0", "R1", "R2", "R3"] {
        live.add(node.podcidr_add(pod).unwrap(), pod, "podcidr ADD");
    }
    node.podcidr_del("R0");
    live.remove("R0");
    live.add(node.podcidr_add("R4").unwrap(), "R4", "podcidr ADD after a DEL");
    assert_eq!(node.unlink().code(), Some(0));
    assert!(!node.linked());
}

/// Point 3: while linked, leases released without a DEL (a reboot's reclaim in ADD, CNI GC,
/// `podcidr gc --apply`, a requested address) take their host-local mirror with them.
#[test]
fn releases_without_a_del_remove_the_host_local_mirror() {
    if !host_local_present() {
        return;
    }
    let fill = |node: &Node| {
        node.host_local("ADD", "h0").unwrap();
        assert_eq!(node.import().code(), Some(0));
        for pod in ["a3", "a4", "a5", "a6"] {
            node.podcidr_add(pod).unwrap();
        }
        assert!(node.podcidr_add("full").is_err(), "the /29 is full");
    };
    // The reclaim in ADD after a reboot (boot-b; the import and the ADDs were in BOOT_ID); STATUS
    // agrees with it.
    let node = Node::new("10.103.0.0/29");
    fill(&node);
    node.podcidr_verb("STATUS", "boot-b", json!({})).ok_silent();
    let ip = node.podcidr_add_in("b0", "boot-b").unwrap();
    let dd = node.sb.data_dir();
    let st = cli(&["status", "--data-dir", dd.to_str().unwrap(), "--network", "net1"]);
    assert!(st.text().contains("IPv4: 1/5 allocated"), "{st:?}");
    assert!(node.hl_leases().contains(&ip), "the new lease has its mirror");
    assert_eq!(node.hl_leases().len(), 1, "stale mirrors left: {:?}", node.hl_leases());
    // CNI GC with an empty list of valid attachments.
    let node = Node::new("10.104.0.0/29");
    fill(&node);
    node.podcidr_verb("GC", "boot-b", json!({ "cni.dev/valid-attachments": [] })).ok_silent();
    assert_eq!(node.hl_leases(), Vec::<String>::new());
    node.podcidr_add_in("b0", "boot-b").unwrap();
    // podcidr gc --apply.
    let node = Node::new("10.105.0.0/29");
    fill(&node);
    let dd = node.sb.data_dir();
    let out = Call::bare()
        .env("PODCIDR_BOOT_ID", "boot-b")
        .argv(&["gc", "--data-dir", dd.to_str().unwrap(), "--network", "net1", "--apply"])
        .run();
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(node.hl_leases(), Vec::<String>::new());
    node.podcidr_add_in("b0", "boot-b").unwrap();
    // A requested address after a reboot.
    let node = Node::new("10.106.0.0/29");
    fill(&node);
    let res = Call::add("b0", &node.podcidr_conf).env("PODCIDR_BOOT_ID", "boot-b").args("IP=10.106.0.4").run();
    assert_eq!(only_ip(&res.ok_json()), "10.106.0.4");
}

/// Point 4: STATUS counts host-local's leases while linked: 50 exactly when an ADD fails.
#[test]
fn status_counts_the_link() {
    if !host_local_present() {
        return;
    }
    let node = Node::new("10.107.0.0/29");
    node.host_local("DEL", "nobody").unwrap();
    assert_eq!(node.import().code(), Some(0));
    for i in 0..5 {
        node.host_local("ADD", &format!("h{i}")).unwrap();
    }
    let said = node.podcidr_verb("STATUS", BOOT_ID, json!({}));
    assert!(said.err_msg(50).contains("no IP addresses available"), "{said:?}");
    assert!(node.podcidr_add("p").unwrap_err().contains("code: 100"));
    // `podcidr status` says the same: host-local's leases are allocated, and listed.
    let dd = node.sb.data_dir();
    let st = cli(&["status", "--data-dir", dd.to_str().unwrap(), "--network", "net1"]);
    assert!(
        st.text().contains("IPv4: 5/5 allocated") && st.text().contains("10.107.0.6 (host-local's lease)"),
        "{st:?}"
    );
    node.host_local("DEL", "h2").unwrap();
    node.podcidr_verb("STATUS", BOOT_ID, json!({})).ok_silent();
    node.podcidr_add("p").unwrap();
}

/// Point 6: after the link ends, DEL still removes podcidr's own file in host-local's directory.
#[test]
fn del_after_unlink_removes_podcidr_s_mirror() {
    if !host_local_present() {
        return;
    }
    let node = Node::new("10.108.0.0/29");
    node.host_local("ADD", "h0").unwrap();
    assert_eq!(node.import().code(), Some(0));
    let ip = node.podcidr_add("p").unwrap();
    assert!(node.hl_leases().contains(&ip));
    assert_eq!(node.unlink().code(), Some(0));
    node.podcidr_del("p");
    assert_eq!(node.hl_leases(), ["10.108.0.2"], "podcidr's file is left in host-local's directory");
    // A new pod after the unlink writes nothing there.
    node.podcidr_add("q").unwrap();
    assert_eq!(node.hl_leases(), ["10.108.0.2"]);
}
