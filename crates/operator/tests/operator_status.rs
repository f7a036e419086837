//! `podcidr-operator status` against a stand-in API server answering with the Node and
//! CiliumNode lists recorded from kube-apiserver v1.36.2 (tests/fixtures/kube/v1.36.2), and a
//! PodCIDRPool list shaped as the API serves custom resources.

use podcidr_testsupport::apiserver;

use apiserver::{ApiServer, Reply, TOKEN};
use podcidr_operator::status::{render_text, report};
use serde_json::json;

const VERSION: &str = "v1.36.2";

fn pools_list() -> serde_json::Value {
    json!({
        "apiVersion": "podcidr.io/v1alpha1",
        "kind": "PodCIDRPoolList",
        "metadata": {"continue": "", "resourceVersion": "300"},
        "items": [{
            "apiVersion": "podcidr.io/v1alpha1",
            "kind": "PodCIDRPool",
            "metadata": {"name": "default", "uid": "5a0e1c9e-8a3b-4c6e-9a51-0d1f2e3a4b5c",
                         "resourceVersion": "299", "generation": 1,
                         "creationTimestamp": "2026-12-05T08:40:17Z"},
            "spec": {"ipv4": {"cidrs": ["10.244.0.0/16"], "maskSize": 24},
                     "ipv6": {"cidrs": ["fd00:10:244::/56"], "maskSize": 64}}
        }]
    })
}

fn empty_blocks() -> serde_json::Value {
    json!({"apiVersion": "podcidr.io/v1alpha1", "kind": "PodCIDRBlockList",
           "metadata": {"continue": "", "resourceVersion": "300"}, "items": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn lists_pools_nodes_and_ciliumnodes() {
    let server = ApiServer::start(VERSION);
    server.route_fixture("/api/v1/nodes", "node-list.json");
    server.route_fixture("/apis/cilium.io/v2/ciliumnodes", "ciliumnode-list.json");
    server.route("/apis/podcidr.io/v1alpha1/podcidrpools", Reply::json(200, &pools_list()));
    server.route("/apis/podcidr.io/v1alpha1/podcidrblocks", Reply::json(200, &empty_blocks()));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.token_kubeconfig(dir.path(), TOKEN);

    let r = report(Some(kc)).await.unwrap();
    let text = render_text(&r);
    // node-b has IPv4 only; node-c, node-d, node-manual are dual stack (the CiliumNode repeats
    // node-manual's CIDRs, counted once).
    assert!(
        text.contains(
            "  IPv4: 4 nodes allocated, 252/256 node CIDRs free in 10.244.0.0/16 (/24 per node), 0 draining\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "  IPv6: 3 nodes allocated, 253/256 node CIDRs free in fd00:10:244::/56 (/64 per node), 0 draining\n"
        ),
        "{text}"
    );
    assert!(text.contains("  10.244.1.0/24  node-b  (pool default)\n"), "{text}");
    assert!(text.contains("  fd00:10:244:2::/64  node-manual  (pool default)\n"), "{text}");
    assert!(text.ends_with("Foreign CIDRs:\nWaiting for a CIDR:\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn without_the_crds_nodes_are_still_shown() {
    let server = ApiServer::start(VERSION);
    server.route_fixture("/api/v1/nodes", "node-list.json");
    let dir = tempfile::tempdir().unwrap();
    let kc = server.token_kubeconfig(dir.path(), TOKEN);
    let r = report(Some(kc)).await.unwrap();
    let text = render_text(&r);
    assert!(text.starts_with("No PodCIDRPools.\n"), "{text}");
    // Outside every pool: foreign.
    assert!(text.contains("Foreign CIDRs:\n  10.244.1.0/24  node-b\n"), "{text}");
    assert!(text.contains("Note: the PodCIDRPool CRD is not installed"), "{text}");
}

/// A user without the right to read the record still gets the objects' view, and is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_forbidden_record_is_a_note_not_an_error() {
    let server = ApiServer::start(VERSION);
    server.route_fixture("/api/v1/nodes", "node-list.json");
    server.route("/apis/podcidr.io/v1alpha1/podcidrpools", Reply::json(200, &pools_list()));
    // The recorded 403 body, about this resource.
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "podcidrblocks.podcidr.io is forbidden: User \"alice\" cannot list resource \"podcidrblocks\" in API group \"podcidr.io\" at the cluster scope",
        "reason": "Forbidden", "details": {"group": "podcidr.io", "kind": "podcidrblocks"}, "code": 403});
    server.route("/apis/podcidr.io/v1alpha1/podcidrblocks", Reply::json(403, &forbidden));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.token_kubeconfig(dir.path(), TOKEN);
    let text = render_text(&report(Some(kc)).await.unwrap());
    assert!(text.contains("  IPv4: 4 nodes allocated, 252/256 node CIDRs free in 10.244.0.0/16"), "{text}");
    assert!(
        text.contains("Note: the allocation record (PodCIDRBlocks) not read: podcidrblocks.podcidr.io is forbidden"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_unreadable_kubeconfig_is_an_error_naming_it() {
    let err = report(Some("/nonexistent/kubeconfig".into())).await.unwrap_err();
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}

/// The binary as a user runs it. Ignored until `status` is wired in src/operator/mod.rs to
/// `status::run`.
#[test]
fn the_status_subcommand_prints_text_and_json() {
    let server = ApiServer::start(VERSION);
    server.route_fixture("/api/v1/nodes", "node-list.json");
    server.route("/apis/podcidr.io/v1alpha1/podcidrpools", Reply::json(200, &pools_list()));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.token_kubeconfig(dir.path(), TOKEN);
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_podcidr-operator"))
            .arg("status")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&[]);
    assert!(text.contains("  10.244.1.0/24  node-b  (pool default)\n"), "{text}");
    let doc: serde_json::Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(doc["pools"][0]["families"][0]["allocated"], 4);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podcidr-operator"))
        .args(["status", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kubeconfig"), "{out:?}");
}

mod operator;

use operator::{Operator, SOON};
use podcidr_testsupport::kubeapi::KubeApi;

const POOLS: &str = "/apis/podcidr.io/v1alpha1/podcidrpools";

/// `podcidr-operator status --json` against the stand-in, as a user runs it.
fn status_json(api: &KubeApi, dir: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(operator::BIN)
        .arg("status")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir, "status"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn family_of(doc: &serde_json::Value, pool: &str, family: &str) -> serde_json::Value {
    let p = doc["pools"].as_array().unwrap().iter().find(|p| p["name"] == pool).cloned().unwrap_or_default();
    p["families"].as_array().into_iter().flatten().find(|f| f["family"] == family).cloned().unwrap_or_default()
}

/// Issue 18 §3: `status` and the pool statuses the leader writes count from one model. A node
/// holding a /23 of a pool cut in /24 is one node on two slices; a foreign /16 over a small
/// pool leaves it no free slice, in both.
#[test]
fn status_counts_equal_the_pool_statuses_the_operator_writes() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(VERSION);
    api.create(
        POOLS,
        &json!({"apiVersion":"podcidr.io/v1alpha1","kind":"PodCIDRPool","metadata":{"name":"small"},
                "spec":{"ipv4":{"cidrs":["10.9.1.0/24"],"maskSize":26}}}),
    );
    api.create("/api/v1/nodes", &json!({"metadata":{"name":"wide"},"spec":{"podCIDRs":["10.244.2.0/23"]}}));
    api.create("/api/v1/nodes", &json!({"metadata":{"name":"old"},"spec":{"podCIDRs":["10.9.0.0/16"]}}));
    api.create_node("fresh", &[]);
    let op = Operator::start(
        &api,
        dir.path(),
        "op-a",
        &["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"],
    );
    let v4 = |api: &KubeApi, pool: &str| api.get(&format!("{POOLS}/{pool}")).map(|p| p["status"]["ipv4"].clone());
    let settled = |api: &KubeApi| {
        api.node_cidrs().contains_key("fresh")
            && v4(api, "default").is_some_and(|s| s["allocated"] == 2 && s["free"] == 253)
            && v4(api, "small").is_some_and(|s| s["capacity"] == 4 && s["free"] == 0)
    };
    assert!(api.wait_for(SOON, settled), "pools: {:?}", api.list(POOLS));

    // The metrics are set from the same counts as the pool statuses, in the same pass.
    let gauge = |pool: &str, field: &str| {
        let name = if field == "capacity" {
            "podcidr_pool_node_cidrs".to_string()
        } else {
            format!("podcidr_pool_node_cidrs_{field}")
        };
        op.metric(&name, &[("pool", pool), ("family", "ipv4")])
    };
    assert!(api.wait_for(SOON, |_| gauge("small", "free") == Some(0.0) && gauge("default", "free") == Some(253.0)));

    let doc = status_json(&api, dir.path());
    for pool in ["default", "small"] {
        let written = v4(&api, pool).unwrap();
        let shown = family_of(&doc, pool, "IPv4");
        for field in ["capacity", "allocated", "free", "draining"] {
            assert_eq!(shown[field], written[field], "{pool} {field}: status says {shown}, the pool status {written}");
            assert_eq!(
                shown[field].as_f64(),
                gauge(pool, field),
                "{pool} {field}: status says {shown}, the metric differs"
            );
        }
    }
    assert_eq!(doc["foreign"][0]["cidr"], "10.9.0.0/16", "{doc}");
    assert_eq!(doc["duplicates"], json!([]), "{doc}");
    // The text says the same counts the statuses were waited on above.
    let out = std::process::Command::new(operator::BIN)
        .arg("status")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path(), "status"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "  IPv4: 2 nodes allocated, 253/256 node CIDRs free in 10.244.0.0/16 (/24 per node), 0 draining\n",
        "  IPv4: 0 nodes allocated, 0/4 node CIDRs free in 10.9.1.0/24 (/26 per node), 0 draining\n",
    ] {
        assert!(text.contains(line), "{text}");
    }
}

/// Issue 18 §3: two nodes holding the same CIDR are listed under Duplicates, in the text and
/// the JSON.
#[test]
fn status_lists_a_cidr_held_by_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(VERSION);
    api.create(
        POOLS,
        &json!({"apiVersion":"podcidr.io/v1alpha1","kind":"PodCIDRPool","metadata":{"name":"default"},
                "spec":{"ipv4":{"cidrs":["10.244.0.0/16"],"maskSize":24}}}),
    );
    api.create("/api/v1/nodes", &json!({"metadata":{"name":"node-a"},"spec":{"podCIDRs":["10.244.7.0/24"]}}));
    api.create("/api/v1/nodes", &json!({"metadata":{"name":"node-b"},"spec":{"podCIDRs":["10.244.7.0/24"]}}));
    let doc = status_json(&api, dir.path());
    assert_eq!(doc["duplicates"], json!([{"cidr": "10.244.7.0/24", "nodes": ["node-a", "node-b"]}]), "{doc}");
    assert_eq!(family_of(&doc, "default", "IPv4")["allocated"], 2, "{doc}");
    let out = std::process::Command::new(operator::BIN)
        .arg("status")
        .arg("--kubeconfig")
        .arg(api.kubeconfig(dir.path(), "status"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Duplicates (both kept occupied; fix one by hand):\n  10.244.7.0/24  node-a, node-b\n"),
        "{text}"
    );
}
