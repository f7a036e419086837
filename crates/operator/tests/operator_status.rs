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

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn lists_pools_nodes_and_ciliumnodes() {
    let server = ApiServer::start(VERSION);
    server.route_fixture("/api/v1/nodes", "node-list.json");
    server.route_fixture("/apis/cilium.io/v2/ciliumnodes", "ciliumnode-list.json");
    server.route("/apis/podcidr.io/v1alpha1/podcidrpools", Reply::json(200, &pools_list()));
    let dir = tempfile::tempdir().unwrap();
    let kc = server.token_kubeconfig(dir.path(), TOKEN);

    let r = report(Some(kc)).await.unwrap();
    let text = render_text(&r);
    // node-b has IPv4 only; node-c, node-d, node-manual are dual stack (the CiliumNode repeats
    // node-manual's CIDRs, counted once).
    assert!(
        text.contains("  IPv4: 4/256 node CIDRs allocated from 10.244.0.0/16 (/24 per node), 0 draining\n"),
        "{text}"
    );
    assert!(
        text.contains("  IPv6: 3/256 node CIDRs allocated from fd00:10:244::/56 (/64 per node), 0 draining\n"),
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
