//! Issue 19 point 8: `CIDRNotAvailable` Events while many nodes wait on a full pool. They are
//! coalesced (one waiting per node) and dropped once the node is served, so almost none is
//! written after its node got its CIDR; before, every waiting node queued one per retry and
//! they were written long after the nodes were served.

mod operator;

use podcidr_testsupport::kubeapi;

use kubeapi::KubeApi;
use operator::{Operator, SOON, assert_no_overlap, events_for};
use serde_json::json;
use std::collections::BTreeMap;

const POOLS: &str = "/apis/podcidr.io/v1alpha1/podcidrpools";
const WAITING: usize = 150;

fn rv(v: &serde_json::Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn events_of_nodes_waiting_on_a_full_pool_do_not_outlive_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    // One /30 only, for the nodes labelled role=w; and a sentinel pool, full from the start.
    let pool = |name: &str, role: &str, cidr: &str| {
        json!({"apiVersion":"podcidr.io/v1alpha1","kind":"PodCIDRPool","metadata":{"name":name},
            "spec":{"nodeSelector":{"matchLabels":{"role":role}},"ipv4":{"cidrs":[cidr],"maskSize":30}}})
    };
    api.create(POOLS, &pool("p", "w", "10.251.0.0/30"));
    api.create(POOLS, &pool("s", "s", "10.253.0.0/30"));
    let op = Operator::start(&api, dir.path(), "op-a", &[]);
    api.create_node("s0", &[("role", "s")]);
    api.create_node("n0", &[("role", "w")]);
    assert!(api.wait_for(SOON, |api| api.node_cidrs().get("s0").is_some_and(|c| !c.is_empty())));
    assert!(api.wait_for(SOON, |api| api.node_cidrs().get("n0").is_some_and(|c| !c.is_empty())));
    for i in 0..WAITING {
        api.create_node(&format!("w{i}"), &[("role", "w")]);
    }
    let warned = |api: &KubeApi| api.events().iter().filter(|e| e["reason"] == json!("CIDRNotAvailable")).count();
    // Long enough for every waiting node to have retried several times.
    assert!(api.wait_for(SOON, |api| warned(api) >= 30), "the waiting nodes are told why");
    // Room for everyone.
    let grow = json!({"spec":{"ipv4":{"cidrs":["10.251.0.0/30", "10.252.0.0/16"],"maskSize":30}}});
    assert_eq!(api.merge_patch(&format!("{POOLS}/p"), &grow).0, 200);
    assert!(
        api.wait_for(SOON, |api| {
            let c = api.node_cidrs();
            (0..WAITING).all(|i| c.get(&format!("w{i}")).is_some_and(|c| !c.is_empty()))
        }),
        "every waiting node is served"
    );
    // A sentinel: a node that waits from now on. Its Event is queued behind whatever the
    // served nodes still have waiting; once it is written, those have been written (or dropped).
    api.create_node("s1", &[("role", "s")]);
    assert!(
        api.wait_for(SOON, |api| !events_for(api, "s1", "CIDRNotAvailable").is_empty()),
        "a new waiting node is told at once, not behind the Events of nodes already served"
    );
    drop(op);
    // The resourceVersion of a served node's last write: its CIDRs (one global counter).
    let served: BTreeMap<String, u64> = api
        .nodes()
        .iter()
        .filter(|n| n["spec"]["podCIDRs"].as_array().is_some_and(|c| !c.is_empty()))
        .map(|n| (n["metadata"]["name"].as_str().unwrap_or("").to_string(), rv(n)))
        .collect();
    let late: Vec<String> = api
        .events()
        .iter()
        .filter(|e| e["reason"] == json!("CIDRNotAvailable"))
        .filter_map(|e| {
            let node = e["involvedObject"]["name"].as_str()?.to_string();
            (rv(e) > *served.get(&node)?).then_some(node)
        })
        .collect();
    // An Event in flight when its node is served is written after it: a handful at most, not
    // one per waiting node.
    assert!(late.len() <= 3, "{} Events written after their node was served: {late:?}", late.len());
    assert_no_overlap(&api.node_cidrs());
}
