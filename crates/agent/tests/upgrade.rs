//! Upgrades that break nothing: while runtimes exec ADD and DEL of the installed plugin in a
//! loop (a static-mode conflist, read from disk and exec'd with the CNI environment and stdin
//! as a runtime does), the agent is restarted again and again with a new plugin binary and its
//! conflist source changes under it. Every exec must succeed: no "text file busy", no half
//! written binary or conflist.

use podcidr_testsupport::kubeapi;
mod support;

use kubeapi::KubeApi;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

const RESTARTS: usize = 8;
const RUNNERS: usize = 3;

fn write_atomically(path: &Path, bytes: &[u8]) {
    // As the kubelet updates a ConfigMap volume: the new file appears whole.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn execs_never_fail_while_the_agent_reinstalls_plugin_and_conflist() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    api.create(
        "/api/v1/nodes",
        &json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"node-u"},"spec":{"podCIDR":"10.250.0.0/16"}}),
    );
    let uid = api.create_agent_pod("kube-system", "podcidr-agent", "agent-u", "node-u");
    let kc = api.kubeconfig(&host.etc(), "agent");

    // Two plugin builds (the second with bytes appended: a different file that still runs) and
    // two conflists.
    let plugin = std::fs::read(PLUGIN).unwrap();
    let mut plugin2 = plugin.clone();
    plugin2.extend_from_slice(b"\0podcidr-upgrade-test-v2\0");
    let builds = [host.etc().join("podcidr-v1"), host.etc().join("podcidr-v2")];
    std::fs::write(&builds[0], &plugin).unwrap();
    std::fs::write(&builds[1], &plugin2).unwrap();
    let lists: Vec<Vec<u8>> = [1500, 1450]
        .iter()
        .map(|mtu| {
            let mut l = conflist(&host, json!({"mode": "static", "ranges": [[{"subnet": "10.250.0.0/16"}]]}));
            l["plugins"][0]["mtu"] = json!(mtu);
            serde_json::to_vec_pretty(&l).unwrap()
        })
        .collect();
    let installed_lists: Vec<Vec<u8>> =
        lists.iter().map(|l| String::from_utf8_lossy(l).replace("__NODE_NAME__", "node-u").into_bytes()).collect();
    let source = host.etc().join("10-podcidr.conflist");
    write_atomically(&source, &lists[0]);

    let args = |build: &Path| {
        let mut a = agent_args(&host, &kc, "node-u", "agent-u", &uid);
        let i = a.iter().position(|x| x == "--plugin").unwrap();
        a[i + 1] = build.to_str().unwrap().to_string();
        a.extend(["--check-interval".into(), "100ms".into()]);
        a
    };
    let mut agent = Agent::start(&args(&builds[0]));
    assert!(wait_until(Duration::from_secs(20), || host.conflist().exists()), "{}", agent.log());

    let stop = Arc::new(AtomicBool::new(false));
    let execs = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let runners: Vec<_> = (0..RUNNERS)
        .map(|r| {
            let (stop, execs, failures) = (stop.clone(), execs.clone(), failures.clone());
            let (bin, list) = (host.plugin(), host.conflist());
            let installed_lists = installed_lists.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("r{r}-{n}");
                    n += 1;
                    let text = std::fs::read(&list).unwrap_or_default();
                    if !installed_lists.contains(&text) {
                        failures.lock().unwrap().push(format!("read a conflist that is neither version: {text:?}"));
                    }
                    for verb in ["ADD", "DEL"] {
                        execs.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = exec_plugin(&bin, &list, verb, &id, &[]) {
                            failures.lock().unwrap().push(e);
                        }
                    }
                }
            })
        })
        .collect();

    let mut conflist_version = 0;
    for round in 1..=RESTARTS {
        agent.stop();
        let v = round % 2;
        agent = Agent::start(&args(&builds[v]));
        let want = if v == 0 { &plugin } else { &plugin2 };
        // Meanwhile the conflist source changes, a few times per round.
        assert!(
            wait_until(Duration::from_secs(20), || {
                conflist_version = 1 - conflist_version;
                write_atomically(&source, &lists[conflist_version]);
                std::thread::sleep(Duration::from_millis(150));
                std::fs::read(host.plugin()).is_ok_and(|b| &b == want)
                    && std::fs::read(host.conflist()).is_ok_and(|b| b == installed_lists[conflist_version])
            }),
            "round {round}: not installed\n{}",
            agent.log()
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in runners {
        r.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let execs = execs.load(Ordering::Relaxed);
    eprintln!("{execs} execs across {RESTARTS} reinstalls of the plugin");
    assert!(
        failures.is_empty(),
        "{} of {execs} execs failed, e.g.:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
    assert!(execs >= 100, "only {execs} execs ran");
}
