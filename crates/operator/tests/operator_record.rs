//! The allocation record (src/operator/record.rs) end to end: the real `podcidr-operator`
//! binary against the stand-in API server (`tests/kubeapi`), judged by the Nodes and the
//! PodCIDRBlocks a user can `kubectl get`.

mod operator;

use podcidr_testsupport::kubeapi;

use kubeapi::KubeApi;
use operator::{Operator, SOON, assert_no_overlap};
use serde_json::Value;
use std::collections::BTreeMap;

const BLOCKS: &str = "/apis/podcidr.io/v1alpha1/podcidrblocks";
const POOL: [&str; 4] = ["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"];

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:03}")).collect()
}

/// CIDR -> (node, uid) by the record; fails on a CIDR recorded twice.
fn record(api: &KubeApi) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for b in api.list(BLOCKS) {
        for e in b["spec"]["allocations"].as_array().cloned().unwrap_or_default() {
            let holder = (e["node"].as_str().unwrap().to_string(), e["uid"].as_str().unwrap_or("").to_string());
            let cidr = e["cidr"].as_str().unwrap().to_string();
            if let Some(other) = out.insert(cidr.clone(), holder.clone()) {
                panic!("{cidr} recorded for {other:?} and {holder:?}");
            }
        }
    }
    out
}

fn all_served(api: &KubeApi) -> bool {
    api.nodes().iter().all(|n| n["spec"]["podCIDRs"].as_array().is_some_and(|l| !l.is_empty()))
}

fn uid(n: &Value) -> String {
    n["metadata"]["uid"].as_str().unwrap().to_string()
}

#[test]
fn two_writers_that_both_believe_they_lead_never_give_one_cidr_to_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let args: Vec<&str> = POOL.iter().copied().chain(["--leader-elect=false"]).collect();
    let a = Operator::start(&api, dir.path(), "op-a", &args);
    let b = Operator::start(&api, dir.path(), "op-b", &args);
    assert!(api.wait_for(SOON, |_| a.ready() && b.ready()), "both writers restore and serve");
    let nodes = names("node", 0..120);
    for (i, n) in nodes.iter().enumerate() {
        api.create_node(n, &[]);
        // Mid-burst: every 10th node so far leaves, and two come back under the same names.
        if i == 60 {
            for gone in nodes[..60].iter().step_by(10) {
                api.delete_node(gone);
            }
            api.create_node(&nodes[0], &[]);
            api.create_node(&nodes[10], &[]);
        }
    }
    assert!(api.wait_for(SOON, all_served), "every Node gets its CIDR");
    // Both writers settle: what they recorded for the gone nodes leaves the record.
    let live = api.nodes();
    assert!(
        api.wait_for(SOON, |api| record(api).len() == live.len()),
        "the record holds one entry per live node: {} for {}",
        record(&api).len(),
        live.len()
    );
    let cidrs = api.node_cidrs();
    assert_no_overlap(&cidrs);
    let rec = record(&api);
    for n in &live {
        let name = n["metadata"]["name"].as_str().unwrap();
        for c in &cidrs[name] {
            assert_eq!(rec.get(c), Some(&(name.to_string(), uid(n))), "{name}'s {c} is recorded for it");
        }
    }
    // Both wrote: the fence, not an election, kept them apart.
    for who in ["op-a", "op-b"] {
        let wrote =
            api.requests().iter().filter(|r| r.who == who && r.path.starts_with(BLOCKS) && r.status < 300).count();
        assert!(wrote > 0, "{who} wrote no record");
    }
    let lost = api.requests().iter().filter(|r| r.path.starts_with(BLOCKS) && r.status == 409).count();
    eprintln!("record writes refused with 409 (a race lost, re-read, planned again): {lost}");
    for op in [&a, &b] {
        assert!(!op.log().contains("outside every pool"), "{}", op.log());
    }
}

#[test]
fn a_restart_adopts_cidrs_written_by_someone_else_and_restores_from_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    // kube-controller-manager's (or a hand-written) CIDR, before the operator ever ran.
    api.create_node("old", &[]);
    api.merge_patch(
        "/api/v1/nodes/old",
        &serde_json::json!({"spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}}),
    );
    let mut op = Operator::start(&api, dir.path(), "op-a", &POOL);
    assert!(api.wait_for(SOON, |api| record(api).get("10.244.0.0/24").is_some_and(|(n, _)| n == "old")), "adopted");
    api.create_node("new", &[]);
    assert!(api.wait_for(SOON, all_served));
    op.kill();
    // Gone while no operator ran: the next one removes it from the record, by UID.
    api.delete_node("old");
    let _op = Operator::start(&api, dir.path(), "op-b", &POOL);
    assert!(api.wait_for(SOON, |api| !record(api).contains_key("10.244.0.0/24")), "{:?}", record(&api));
    let rec = record(&api);
    let new = api.node("new").unwrap();
    let c = new["spec"]["podCIDR"].as_str().unwrap();
    assert_eq!(rec.get(c), Some(&("new".to_string(), uid(&new))));
}

#[test]
fn record_crd_yaml_is_the_generated_crd() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/operator/record-crd.yaml");
    let generated = podcidr_operator::record::crd_yaml();
    if std::env::var_os("PODCIDR_UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).unwrap_or_default() == generated,
        "conf/operator/record-crd.yaml differs from the PodCIDRBlock type: regenerate it with \
         PODCIDR_UPDATE_MANIFESTS=1 cargo test --test operator_record"
    );
    let rbac = std::fs::read_to_string(path.with_file_name("rbac.yaml")).unwrap();
    assert!(rbac.contains("podcidrblocks"), "the ClusterRole grants the record");
}

#[test]
fn with_the_node_target_a_cidr_a_ciliumnode_holds_is_not_handed_to_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create(
        "/apis/cilium.io/v2/ciliumnodes",
        &serde_json::json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": "cilium-only"},
                            "spec": {"ipam": {"podCIDRs": ["10.244.0.0/24"]}}}),
    );
    let _op = Operator::start(&api, dir.path(), "op-a", &POOL);
    api.create_node("new", &[]);
    assert!(api.wait_for(SOON, all_served));
    assert_eq!(api.node_cidrs()["new"], ["10.244.1.0/24"], "10.244.0.0/24 is the CiliumNode's");
}

/// Issue 18 §3: ALLOCATED counts nodes in the metrics as in the docs; a node holding a /23 of a
/// pool cut in /24s counts once and takes two free slices.
#[test]
fn a_node_holding_two_slices_counts_as_one_node_and_two_slices_taken() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create(
        "/api/v1/nodes",
        &serde_json::json!({"metadata": {"name": "wide"}, "spec": {"podCIDRs": ["10.244.0.0/23"]}}),
    );
    let op = Operator::start(&api, dir.path(), "op-a", &POOL);
    api.create_node("new", &[]);
    assert!(api.wait_for(SOON, all_served));
    let labels = [("pool", "default"), ("family", "ipv4")];
    assert!(api.wait_for(SOON, |_| op.metric("podcidr_pool_node_cidrs_allocated", &labels) == Some(2.0)));
    assert_eq!(op.metric("podcidr_pool_node_cidrs_free", &labels), Some(256.0 - 3.0));
}
