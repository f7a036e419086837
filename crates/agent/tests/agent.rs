//! podcidr-agent against temporary host directories and the stand-in API server
//! (tests/kubeapi, whose TokenRequest and JSON patch are checked against the recordings in
//! tests/fixtures/kube/v1.36.2/agent by tests/kubeapi_agent_faithful.rs here).

use podcidr_testsupport::kubeapi;
mod support;

use kubeapi::KubeApi;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::*;

const NODE: &str = "node-a";
const POD: &str = "podcidr-agent-x";

/// A tainted Node without a pod CIDR, the agent's ServiceAccount and pod: the pod's UID.
fn cluster(api: &KubeApi, node: &str) -> String {
    api.create(
        "/api/v1/nodes",
        &json!({"apiVersion":"v1","kind":"Node","metadata":{"name":node},"spec":{"taints":[
            {"key":TAINT,"effect":"NoSchedule"},
            {"key":"node.kubernetes.io/not-ready","effect":"NoSchedule"}]}}),
    );
    api.create_agent_pod("kube-system", "podcidr-agent", POD, node)
}

fn taint_keys(api: &KubeApi, node: &str) -> Vec<String> {
    let n = api.node(node).unwrap();
    n["spec"]["taints"].as_array().into_iter().flatten().map(|t| t["key"].as_str().unwrap().to_string()).collect()
}

fn give_cidr(api: &KubeApi, node: &str, cidr: &str) {
    let (s, v) = api.merge_patch(
        &format!("/api/v1/nodes/{node}"),
        &json!({"metadata":{"annotations":{"podcidr.io/pool":"default"}},"spec":{"podCIDR":cidr,"podCIDRs":[cidr]}}),
    );
    assert_eq!(s, 200, "{v}");
}

fn setup(api: &KubeApi, host: &Host, node: &str) -> (Vec<String>, Value) {
    let uid = cluster(api, node);
    let kc = api.kubeconfig(&host.etc(), "agent");
    let list = conflist(
        host,
        json!({"mode":"kubernetes","kubeconfig": host.kubeconfig(),"apiTimeoutSeconds": 5, "cacheTTLSeconds": 0}),
    );
    std::fs::write(host.etc().join("10-podcidr.conflist"), serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    (agent_args(host, &kc, node, POD, &uid), list)
}

#[test]
fn installs_plugin_conflist_and_kubeconfig_and_removes_the_taint_only_once_the_node_has_a_cidr() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    let (args, _) = setup(&api, &host, NODE);
    let agent = Agent::start(&args);

    assert!(
        wait_until(Duration::from_secs(20), || host.conflist().exists() && host.kubeconfig().exists()),
        "not installed:\n{}",
        agent.log()
    );
    // The plugin, byte for byte, executable; the conflist with the node's name; the kubeconfig
    // private, with a token bound to the agent's pod.
    assert_eq!(std::fs::read(host.plugin()).unwrap(), std::fs::read(PLUGIN).unwrap());
    assert_eq!(std::fs::metadata(host.plugin()).unwrap().permissions().mode() & 0o777, 0o755);
    let installed: Value = serde_json::from_slice(&std::fs::read(host.conflist()).unwrap()).unwrap();
    assert_eq!(installed["plugins"][0]["ipam"]["nodeName"], NODE);
    assert_eq!(std::fs::metadata(host.kubeconfig()).unwrap().permissions().mode() & 0o777, 0o600);
    let kc = std::fs::read_to_string(host.kubeconfig()).unwrap();
    assert!(kc.contains("token: podcidr-test-podcidr-agent-1\n"), "{kc}");
    assert!(kc.contains(&format!("server: {}", api.url())), "{kc}");
    let tr = api.requests().into_iter().find(|r| r.path.ends_with("/serviceaccounts/podcidr-agent/token")).unwrap();
    let body: Value = serde_json::from_str(&tr.body).unwrap();
    let pod_uid = api.get(&format!("/api/v1/namespaces/kube-system/pods/{POD}")).unwrap()["metadata"]["uid"].clone();
    assert_eq!(body["spec"]["boundObjectRef"], json!({"apiVersion":"v1","kind":"Pod","name":POD,"uid":pod_uid}));
    assert_eq!(tr.status, 201);

    // No pod CIDR yet: the taint stays, and the agent says it is not ready.
    assert!(wait_until(Duration::from_secs(10), || agent.metric("podcidr_agent_ready") == Some(0.0)));
    assert_eq!(agent.get("/readyz").0, 503);
    assert_eq!(taint_keys(&api, NODE), [TAINT, "node.kubernetes.io/not-ready"]);
    assert_eq!(api.count("PATCH", "/api/v1/nodes/", None), 0, "no write before the node is ready");

    give_cidr(&api, NODE, "10.244.7.0/24");
    assert!(
        wait_until(Duration::from_secs(10), || taint_keys(&api, NODE) == ["node.kubernetes.io/not-ready"]),
        "taint not removed: {:?}\n{}",
        taint_keys(&api, NODE),
        agent.log()
    );
    let patch = api.requests().into_iter().find(|r| r.method == "PATCH" && r.path == "/api/v1/nodes/node-a").unwrap();
    assert_eq!(patch.content_type, "application/json-patch+json");
    let ops: Value = serde_json::from_str(&patch.body).unwrap();
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["path"], "/metadata/resourceVersion");
    assert!(wait_until(Duration::from_secs(10), || agent.get("/readyz").0 == 200));
    assert_eq!(agent.get("/healthz").0, 200);

    // The installed plugin, exec'd as a runtime would, reads the Node with the agent's token.
    let r = exec_plugin(&host.plugin(), &host.conflist(), "ADD", "c1", &[]).unwrap();
    assert_eq!(r["ips"][0]["address"], "10.244.7.2/24", "{r}");
    assert!(api.requests().iter().any(|q| q.path == "/api/v1/nodes/node-a" && q.who == "podcidr-agent-1"));
    // A lease of an earlier boot, and the node's address state in /metrics.
    exec_plugin(&host.plugin(), &host.conflist(), "ADD", "c2", &[("PODCIDR_BOOT_ID", "an-earlier-boot")]).unwrap();
    let labels = r#"{network="podnet",range_set="0",family="ipv4",pool="default"}"#;
    assert_eq!(agent.metric(&format!("podcidr_node_addresses_allocated{labels}")), Some(2.0));
    assert_eq!(agent.metric(&format!("podcidr_node_addresses{labels}")), Some(253.0));
    assert_eq!(agent.metric(r#"podcidr_node_leases_earlier_boot{network="podnet"}"#), Some(1.0));
    assert!(api.events().iter().any(|e| e["reason"] == "StartupTaintRemoved"));
}

#[test]
fn repairs_a_deleted_plugin_and_a_changed_conflist_within_10s_and_never_removes_them() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    let (args, _) = setup(&api, &host, NODE);
    give_cidr(&api, NODE, "10.244.7.0/24");
    // The default check interval (5 s).
    let mut agent = Agent::start(&args);
    assert!(wait_until(Duration::from_secs(20), || agent.get("/readyz").0 == 200), "{}", agent.log());
    let conflist = std::fs::read(host.conflist()).unwrap();

    // A host package upgrade wipes /opt/cni/bin; someone edits the conflist.
    std::fs::remove_dir_all(host.root().join("opt/cni/bin")).unwrap();
    std::fs::write(host.conflist(), b"{}").unwrap();
    let start = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read(host.plugin()).is_ok_and(|b| b == std::fs::read(PLUGIN).unwrap())
                && std::fs::read(host.conflist()).is_ok_and(|b| b == conflist)
        }),
        "not repaired within 10 s:\n{}",
        agent.log()
    );
    eprintln!("repaired in {:?}", start.elapsed());
    assert_eq!(agent.metric(r#"podcidr_agent_repairs_total{file="plugin"}"#), Some(1.0));
    assert_eq!(agent.metric(r#"podcidr_agent_repairs_total{file="conflist"}"#), Some(1.0));

    // Stopped (an upgrade, a node drain): everything stays for pods to be torn down.
    agent.stop();
    assert!(host.plugin().exists() && host.conflist().exists() && host.kubeconfig().exists());
}

#[test]
fn keeps_the_old_token_while_the_api_is_down_says_so_and_renews_when_it_is_back() {
    let api = KubeApi::start("v1.36.2");
    // The API server caps tokens at 4 s: the agent renews every 2 s at the latest.
    api.cap_token_seconds(4);
    let host = Host::new();
    let (mut args, _) = setup(&api, &host, NODE);
    args.extend(["--check-interval".to_string(), "200ms".to_string()]);
    give_cidr(&api, NODE, "10.244.7.0/24");
    let agent = Agent::start(&args);
    assert!(wait_until(Duration::from_secs(20), || api.tokens_issued() >= 2), "no renewal:\n{}", agent.log());
    assert!(wait_until(Duration::from_secs(10), || agent.get("/readyz").0 == 200));

    api.set_down(true);
    assert!(
        wait_until(Duration::from_secs(20), || agent.metric("podcidr_agent_token_stale") == Some(1.0)),
        "{}",
        agent.log()
    );
    let kc = std::fs::read_to_string(host.kubeconfig()).unwrap();
    let failures = agent.metric("podcidr_agent_token_renewal_failures_total").unwrap();
    assert!(failures >= 1.0);
    // More failed retries, and still the last token issued is the one in use.
    assert!(wait_until(Duration::from_secs(20), || {
        agent.metric("podcidr_agent_token_renewal_failures_total").unwrap() >= failures + 1.0
    }));
    assert!(kc.contains(&format!("token: podcidr-test-podcidr-agent-{}\n", api.tokens_issued())), "{kc}");
    assert!(agent.log().contains("keeping the old one"), "{}", agent.log());
    assert_eq!(std::fs::read_to_string(host.kubeconfig()).unwrap(), kc, "the old token is kept");

    api.set_down(false);
    assert!(
        wait_until(Duration::from_secs(40), || {
            std::fs::read_to_string(host.kubeconfig()).unwrap() != kc
                && agent.metric("podcidr_agent_token_stale") == Some(0.0)
        }),
        "not renewed after the API came back:\n{}",
        agent.log()
    );
    // The failed renewal was recorded on the Node once the API answered again.
    assert!(
        wait_until(Duration::from_secs(10), || api
            .events()
            .iter()
            .any(|e| e["reason"] == "TokenRenewalFailed" && e["involvedObject"]["name"] == NODE)),
        "{:?}",
        api.events()
    );
}

#[test]
fn the_taint_is_removed_when_another_writer_changes_the_node_in_between() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    let (args, _) = setup(&api, &host, NODE);
    give_cidr(&api, NODE, "10.244.7.0/24");
    // Just before the agent's patch, another client labels the Node: the patch's test fails.
    api.race_next("PATCH", "/api/v1/nodes/node-a", json!({"metadata":{"labels":{"other":"writer"}}}));
    let agent = Agent::start(&args);
    assert!(
        wait_until(Duration::from_secs(20), || taint_keys(&api, NODE) == ["node.kubernetes.io/not-ready"]),
        "{}",
        agent.log()
    );
    assert_eq!(api.count("PATCH", "/api/v1/nodes/node-a", Some(422)), 1);
    assert_eq!(api.node(NODE).unwrap()["metadata"]["labels"]["other"], "writer", "the other write is kept");
}

#[test]
fn without_rbac_for_tokens_nothing_but_the_plugin_is_installed_and_it_says_why() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    let (args, _) = setup(&api, &host, NODE);
    give_cidr(&api, NODE, "10.244.7.0/24");
    api.fail_next(Some("POST"), "/api/v1/namespaces/kube-system/serviceaccounts/podcidr-agent/token", 1000, 403);
    let agent = Agent::start(&args);
    assert!(wait_until(Duration::from_secs(20), || agent.log().contains("cannot get a token for the plugin")));
    assert!(host.plugin().exists());
    assert!(!host.kubeconfig().exists() && !host.conflist().exists(), "no conflist before a kubeconfig");
    assert_eq!(taint_keys(&api, NODE), [TAINT, "node.kubernetes.io/not-ready"]);
    assert!(wait_until(Duration::from_secs(10), || api.events().iter().any(|e| e["reason"] == "TokenRenewalFailed")));
}

#[test]
fn without_a_conflist_source_no_conflist_is_written_and_the_taint_stays() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    let (args, _) = setup(&api, &host, NODE);
    give_cidr(&api, NODE, "10.244.7.0/24");
    std::fs::remove_file(host.etc().join("10-podcidr.conflist")).unwrap();
    let agent = Agent::start(&args);
    assert!(wait_until(Duration::from_secs(20), || host.kubeconfig().exists() && host.plugin().exists()));
    assert!(wait_until(Duration::from_secs(10), || agent.log().contains("cannot read the conflist")));
    assert!(!host.conflist().exists(), "an empty conflist would break every pod");
    assert_eq!(taint_keys(&api, NODE), [TAINT, "node.kubernetes.io/not-ready"]);
    assert_eq!(agent.get("/readyz").0, 503);
}

#[test]
fn a_hanging_api_server_does_not_hold_up_a_repair() {
    let api = KubeApi::start("v1.36.2");
    let host = Host::new();
    let (mut args, _) = setup(&api, &host, NODE);
    give_cidr(&api, NODE, "10.244.7.0/24");
    // An API server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let (addr, keep) = (silent.local_addr().unwrap(), held.clone());
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let i = args.iter().position(|a| a == "--kubeconfig").unwrap();
    let kc = std::fs::read_to_string(&args[i + 1]).unwrap().replace(&api.url(), &format!("https://{addr}"));
    let silent_kc = host.etc().join("kubeconfig-silent");
    std::fs::write(&silent_kc, kc).unwrap();
    args[i + 1] = silent_kc.to_str().unwrap().to_string();
    // The default check interval (5 s).
    let agent = Agent::start(&args);
    assert!(wait_until(Duration::from_secs(10), || host.plugin().exists()), "{}", agent.log());
    // Once it is waiting on the API server, delete the plugin.
    assert!(wait_until(Duration::from_secs(20), || !held.lock().unwrap().is_empty()));
    std::fs::remove_file(host.plugin()).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || host.plugin().exists()),
        "not repaired within 10 s while the API hangs:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("no answer from the API server"), "{}", agent.log());
    assert!(!host.conflist().exists(), "no conflist without a kubeconfig");
}
