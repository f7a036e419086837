//! Issue 12 §6 scenarios: PodCIDRPool objects (podcidr.io/v1alpha1) driving the real
//! `podcidr-operator` against the stateful stand-in API server. The stand-in does not evaluate
//! the CRD's CEL rules: the refusals are checked through the operator's own validation, in the
//! pool's conditions.

mod operator;

use podcidr_testsupport::kubeapi;

use kubeapi::KubeApi;
use operator::{Operator, SOON, assert_no_overlap, events_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const POOLS: &str = "/apis/podcidr.io/v1alpha1/podcidrpools";

fn pool(name: &str, selector: Option<Value>, v4: &[&str], mask: u8) -> Value {
    let mut p = json!({"apiVersion":"podcidr.io/v1alpha1","kind":"PodCIDRPool","metadata":{"name":name},
        "spec":{"ipv4":{"cidrs":v4,"maskSize":mask}}});
    if let Some(s) = selector {
        p["spec"]["nodeSelector"] = s;
    }
    p
}

fn labels(l: &[(&str, &str)]) -> Value {
    json!({"matchLabels": l.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()})
}

fn get_pool(api: &KubeApi, name: &str) -> Option<Value> {
    api.get(&format!("{POOLS}/{name}"))
}

fn condition(p: &Value, t: &str) -> Option<Value> {
    p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == json!(t)).cloned()
}

fn cond_status(api: &KubeApi, pool: &str, t: &str) -> Option<String> {
    condition(&get_pool(api, pool)?, t).and_then(|c| c["status"].as_str().map(str::to_string))
}

fn v4_status(api: &KubeApi, pool: &str, field: &str) -> Option<u64> {
    get_pool(api, pool)?["status"]["ipv4"][field].as_u64()
}

fn cidr(api: &KubeApi, node: &str) -> Option<String> {
    api.node_cidrs().get(node).and_then(|l| l.first().cloned())
}

fn wait_cidr(api: &KubeApi, node: &str) -> String {
    assert!(api.wait_for(SOON, |api| cidr(api, node).is_some()), "{node} gets a CIDR");
    cidr(api, node).unwrap()
}

fn within(c: &str, net: &str) -> bool {
    let (c, net): (ipnet::IpNet, ipnet::IpNet) = (c.parse().unwrap(), net.parse().unwrap());
    net.contains(&c)
}

/// An operator with only the default flag pool `10.244.0.0/16` besides the PodCIDRPools.
fn start(api: &KubeApi, dir: &std::path::Path, who: &str) -> Operator {
    Operator::start(
        api,
        dir,
        who,
        &["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"],
    )
}

#[test]
fn the_flag_pool_is_the_podcidrpool_default() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let _op = start(&api, dir.path(), "op-a");
    assert!(api.wait_for(SOON, |api| get_pool(api, "default").is_some()));
    let p = get_pool(&api, "default").unwrap();
    assert_eq!(p["spec"]["ipv4"], json!({"cidrs":["10.244.0.0/16"],"maskSize":24}));
    api.create_node("n1", &[]);
    wait_cidr(&api, "n1");
    assert!(api.wait_for(SOON, |api| v4_status(api, "default", "allocated") == Some(1)));
    assert_eq!(v4_status(&api, "default", "capacity"), Some(256));
    assert_eq!(v4_status(&api, "default", "free"), Some(255));
    assert!(api.wait_for(SOON, |api| cond_status(api, "default", "Ready").as_deref() == Some("True")));
}

#[test]
fn the_ciliumnodeconfig_example_gives_node_1_exactly_its_cidr() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create(POOLS, &pool("node-1", Some(labels(&[("kubernetes.io/hostname", "node-1")])), &["10.0.1.0/24"], 24));
    let _op = start(&api, dir.path(), "op-a");
    api.create_node("node-1", &[("kubernetes.io/hostname", "node-1")]);
    api.create_node("node-2", &[("kubernetes.io/hostname", "node-2")]);
    assert_eq!(wait_cidr(&api, "node-1"), "10.0.1.0/24");
    assert!(within(&wait_cidr(&api, "node-2"), "10.244.0.0/16"));
    assert_eq!(api.node("node-1").unwrap()["metadata"]["annotations"]["podcidr.io/pool"], json!("node-1"));
}

#[test]
fn two_zones() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let zone = "topology.kubernetes.io/zone";
    api.create(POOLS, &pool("zone-a", Some(labels(&[(zone, "a")])), &["10.10.0.0/16"], 24));
    api.create(POOLS, &pool("zone-b", Some(labels(&[(zone, "b")])), &["10.20.0.0/16"], 24));
    let _op = start(&api, dir.path(), "op-a");
    for i in 0..5 {
        api.create_node(&format!("a-{i}"), &[(zone, "a")]);
        api.create_node(&format!("b-{i}"), &[(zone, "b")]);
    }
    for i in 0..5 {
        assert!(within(&wait_cidr(&api, &format!("a-{i}")), "10.10.0.0/16"));
        assert!(within(&wait_cidr(&api, &format!("b-{i}")), "10.20.0.0/16"));
    }
    assert_no_overlap(&api.node_cidrs());
    assert!(api.wait_for(SOON, |api| v4_status(api, "zone-a", "allocated") == Some(5)
        && v4_status(api, "zone-b", "allocated") == Some(5)));
}

#[test]
fn the_most_specific_pool_wins_and_the_next_serves_when_it_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let (zone, tier) = ("topology.kubernetes.io/zone", "example.com/tier");
    // One slice only.
    api.create(POOLS, &pool("a-gpu", Some(labels(&[(zone, "a"), (tier, "gpu")])), &["10.30.0.0/24"], 24));
    api.create(POOLS, &pool("a", Some(labels(&[(zone, "a")])), &["10.31.0.0/16"], 24));
    let _op = start(&api, dir.path(), "op-a");
    api.create_node("gpu-1", &[(zone, "a"), (tier, "gpu")]);
    assert_eq!(wait_cidr(&api, "gpu-1"), "10.30.0.0/24");
    api.create_node("gpu-2", &[(zone, "a"), (tier, "gpu")]);
    assert!(within(&wait_cidr(&api, "gpu-2"), "10.31.0.0/16"), "the full winner passes to the next candidate");
    assert!(api.wait_for(SOON, |api| cond_status(api, "a-gpu", "Exhausted").as_deref() == Some("True")));
    assert!(api.wait_for(SOON, |api| api.events().iter().any(|e| e["reason"] == json!("PoolExhausted")
        && e["involvedObject"]["name"] == json!("a-gpu")
        && e["type"] == json!("Warning"))));
    assert!(events_for(&api, "gpu-2", "CIDRNotAvailable").is_empty());
}

#[test]
fn a_cidr_added_while_nodes_wait_serves_them() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let sel = Some(labels(&[("pool", "small")]));
    api.create(POOLS, &pool("small", sel.clone(), &["10.40.0.0/30"], 30));
    // No flag pool: nothing else can serve.
    let _op = Operator::start(&api, dir.path(), "op-a", &[]);
    for n in ["s1", "s2", "s3"] {
        api.create_node(n, &[("pool", "small")]);
    }
    wait_cidr(&api, "s1");
    assert!(api.wait_for(SOON, |api| !events_for(api, "s2", "CIDRNotAvailable").is_empty()));
    let (s, _) =
        api.merge_patch(&format!("{POOLS}/small"), &json!({"spec":{"ipv4":{"cidrs":["10.40.0.0/30","10.40.1.0/30"]}}}));
    assert_eq!(s, 200);
    assert!(within(&wait_cidr(&api, "s2"), "10.40.0.0/23"));
    assert!(api.wait_for(SOON, |api| v4_status(api, "small", "capacity") == Some(2)));
    assert!(cidr(&api, "s3").is_none());
    assert_no_overlap(&api.node_cidrs());
}

#[test]
fn a_cidr_removed_while_in_use_drains_and_is_forgotten_after_its_last_node() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create(POOLS, &pool("p", None, &["10.50.0.0/24"], 26));
    let _op = Operator::start(&api, dir.path(), "op-a", &[]);
    api.create_node("n1", &[]);
    let c1 = wait_cidr(&api, "n1");
    assert!(within(&c1, "10.50.0.0/24"));
    let (s, _) = api.merge_patch(&format!("{POOLS}/p"), &json!({"spec":{"ipv4":{"cidrs":["10.51.0.0/24"]}}}));
    assert_eq!(s, 200);
    assert!(api.wait_for(SOON, |api| v4_status(api, "p", "draining") == Some(1)));
    assert!(api.wait_for(SOON, |api| cond_status(api, "p", "Draining").as_deref() == Some("True")));
    assert_eq!(cidr(&api, "n1").as_deref(), Some(c1.as_str()), "the holder keeps its CIDR");
    api.create_node("n2", &[]);
    assert!(within(&wait_cidr(&api, "n2"), "10.51.0.0/24"), "no new node gets a slice of a draining CIDR");
    api.delete_node("n1");
    assert!(api.wait_for(SOON, |api| v4_status(api, "p", "draining") == Some(0)));
    assert!(api.wait_for(SOON, |api| cond_status(api, "p", "Draining").as_deref() != Some("True")));
}

#[test]
fn a_pool_deleted_while_in_use_is_held_until_empty() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create(POOLS, &pool("p", Some(labels(&[("pool", "p")])), &["10.60.0.0/24"], 26));
    let _op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[("pool", "p")]);
    wait_cidr(&api, "n1");
    assert!(api.wait_for(SOON, |api| get_pool(api, "p").is_some_and(|p| {
        p["metadata"]["finalizers"].as_array().is_some_and(|f| f.contains(&json!("podcidr.io/drain")))
    })));
    let (s, _) = api.delete(&format!("{POOLS}/p"));
    assert_eq!(s, 200);
    assert!(get_pool(&api, "p").unwrap()["metadata"]["deletionTimestamp"].is_string(), "held by its finalizer");
    api.create_node("n2", &[("pool", "p")]);
    assert!(within(&wait_cidr(&api, "n2"), "10.244.0.0/16"), "a deleted pool serves no new node");
    assert!(get_pool(&api, "p").is_some());
    api.delete_node("n1");
    assert!(api.wait_for(SOON, |api| get_pool(api, "p").is_none()), "gone once no node holds a CIDR of it");
}

#[test]
fn a_deleted_pool_stays_held_across_a_restart_until_its_last_node_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    // Two slices, both taken.
    api.create(POOLS, &pool("p", Some(labels(&[("pool", "p")])), &["10.61.0.0/25"], 26));
    let mut op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[("pool", "p")]);
    api.create_node("n2", &[("pool", "p")]);
    let (c1, c2) = (wait_cidr(&api, "n1"), wait_cidr(&api, "n2"));
    assert!(within(&c1, "10.61.0.0/25") && within(&c2, "10.61.0.0/25"));
    assert!(api.wait_for(SOON, |api| get_pool(api, "p").is_some_and(|p| {
        p["metadata"]["finalizers"].as_array().is_some_and(|f| f.contains(&json!("podcidr.io/drain")))
    })));
    let (s, _) = api.delete(&format!("{POOLS}/p"));
    assert_eq!(s, 200);
    assert!(api.wait_for(SOON, |api| v4_status(api, "p", "draining") == Some(2)));
    op.kill();
    let _op2 = start(&api, dir.path(), "op-b");
    // The new run must know the slices as the deleted pool's, not as foreign ones: it keeps the
    // finalizer and reports them draining.
    api.create_node("n3", &[("pool", "p")]);
    assert!(within(&wait_cidr(&api, "n3"), "10.244.0.0/16"), "a deleted pool serves no new node");
    assert!(api.wait_for(SOON, |api| v4_status(api, "p", "draining") == Some(2)
        && cond_status(api, "p", "Draining").as_deref() == Some("True")));
    assert!(get_pool(&api, "p").is_some(), "held by its finalizer across the restart");
    api.delete_node("n1");
    assert!(api.wait_for(SOON, |api| v4_status(api, "p", "draining") == Some(1)));
    assert!(get_pool(&api, "p").is_some(), "n2 still holds {c2}");
    api.delete_node("n2");
    assert!(api.wait_for(SOON, |api| get_pool(api, "p").is_none()), "gone once no node holds a CIDR of it");
    assert_no_overlap(&api.node_cidrs());
}

#[test]
fn a_mask_change_and_overlapping_pools_are_refused_with_a_clear_condition() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create(POOLS, &pool("p", None, &["10.70.0.0/16"], 24));
    let _op = Operator::start(&api, dir.path(), "op-a", &[]);
    api.create_node("n1", &[]);
    let c1 = wait_cidr(&api, "n1");
    assert!(api.wait_for(SOON, |api| cond_status(api, "p", "Ready").as_deref() == Some("True")));
    let (s, _) = api.merge_patch(&format!("{POOLS}/p"), &json!({"spec":{"ipv4":{"maskSize":26}}}));
    assert_eq!(s, 200, "the stand-in does not run CEL: the operator must refuse it itself");
    assert!(api.wait_for(SOON, |api| cond_status(api, "p", "Ready").as_deref() == Some("False")));
    let ready = condition(&get_pool(&api, "p").unwrap(), "Ready").unwrap();
    assert!(ready["message"].as_str().unwrap_or("").to_lowercase().contains("mask"), "{ready}");
    // The pool keeps serving with its old mask.
    api.create_node("n2", &[]);
    let c2 = wait_cidr(&api, "n2");
    assert!(c2.ends_with("/24"), "{c2}");
    assert_ne!(c1, c2);

    api.create(POOLS, &pool("q", None, &["10.70.128.0/17"], 24));
    assert!(api.wait_for(SOON, |api| cond_status(api, "q", "Ready").as_deref() == Some("False")));
    let ready = condition(&get_pool(&api, "q").unwrap(), "Ready").unwrap();
    assert!(ready["message"].as_str().unwrap_or("").to_lowercase().contains("overlap"), "{ready}");
    assert_no_overlap(&api.node_cidrs());
}

#[test]
fn a_pool_re_added_while_its_old_cidrs_drain_hands_out_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    // Two slices.
    api.create(POOLS, &pool("p", Some(labels(&[("pool", "p")])), &["10.80.0.0/25"], 26));
    let _op = Operator::start(&api, dir.path(), "op-a", &[]);
    api.create_node("n1", &[("pool", "p")]);
    let c1 = wait_cidr(&api, "n1");
    assert!(api.wait_for(SOON, |api| get_pool(api, "p").is_some_and(|p| p["metadata"]["finalizers"].is_array())));
    api.delete(&format!("{POOLS}/p"));
    // Gone from the API only after its finalizer; the test removes it by hand to re-add the
    // pool while n1 still holds a slice (the operator's allocator still knows it).
    api.clear_finalizers(&format!("{POOLS}/p"));
    assert!(api.wait_for(SOON, |api| get_pool(api, "p").is_none()));
    api.create(POOLS, &pool("p", Some(labels(&[("pool", "p")])), &["10.80.0.0/25"], 26));
    api.create_node("n2", &[("pool", "p")]);
    api.create_node("n3", &[("pool", "p")]);
    let c2 = wait_cidr(&api, "n2");
    assert_ne!(c1, c2);
    assert!(api.wait_for(SOON, |api| !events_for(api, "n3", "CIDRNotAvailable").is_empty()), "only one slice is free");
    assert_no_overlap(&api.node_cidrs());
}

#[test]
fn a_restart_in_the_middle_of_it_all_keeps_cidrs_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let zone = "topology.kubernetes.io/zone";
    api.create(POOLS, &pool("zone-a", Some(labels(&[(zone, "a")])), &["10.90.0.0/24", "10.91.0.0/24"], 26));
    let mut op = start(&api, dir.path(), "op-a");
    for i in 0..6 {
        api.create_node(&format!("a-{i}"), &[(zone, "a")]);
    }
    for i in 0..6 {
        wait_cidr(&api, &format!("a-{i}"));
    }
    // Drop a CIDR that nodes use, then restart.
    api.merge_patch(&format!("{POOLS}/zone-a"), &json!({"spec":{"ipv4":{"cidrs":["10.91.0.0/24","10.92.0.0/24"]}}}));
    assert!(api.wait_for(SOON, |api| v4_status(api, "zone-a", "draining") == Some(4)));
    let status_before = get_pool(&api, "zone-a").unwrap()["status"]["ipv4"].clone();
    let before: BTreeMap<String, Vec<String>> = api.node_cidrs();
    op.kill();
    let _op2 = start(&api, dir.path(), "op-b");
    for i in 6..10 {
        api.create_node(&format!("a-{i}"), &[(zone, "a")]);
    }
    for i in 6..10 {
        let c = wait_cidr(&api, &format!("a-{i}"));
        assert!(!within(&c, "10.90.0.0/24"), "a-{i} got {c} from a draining CIDR");
    }
    let after = api.node_cidrs();
    assert_no_overlap(&after);
    for (n, l) in &before {
        assert_eq!(&after[n], l);
    }
    assert!(api.wait_for(SOON, |api| v4_status(api, "zone-a", "draining") == Some(4)));
    assert!(api.wait_for(SOON, |api| v4_status(api, "zone-a", "allocated")
        == status_before["allocated"].as_u64().map(|a| a + 4)));
}

fn pool_of(api: &KubeApi, node: &str) -> Option<String> {
    api.node(node)?["metadata"]["annotations"]["podcidr.io/pool"].as_str().map(str::to_string)
}

fn ready_message(api: &KubeApi, pool: &str) -> String {
    get_pool(api, pool).and_then(|p| condition(&p, "Ready")).map(|c| c["message"].to_string()).unwrap_or_default()
}

/// Issue 19 point 1: an edit the operator refuses (an empty matchExpressions key, which the CRD
/// now refuses too) keeps the pool serving with its last accepted spec, also after the pool
/// events that follow (its own status writes, a second edit).
#[test]
fn a_refused_edit_keeps_the_pool_serving() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let sel = |key: &str| json!({"matchExpressions":[{"key":key,"operator":"Exists"}]});
    api.create(POOLS, &pool("gpu", Some(sel("gpu")), &["10.90.0.0/16"], 24));
    let _op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[("gpu", "1")]);
    assert!(within(&wait_cidr(&api, "n1"), "10.90.0.0/16"));
    let bad = json!({"spec":{"nodeSelector":{"matchExpressions":[{"key":"","operator":"Exists"}]}}});
    assert_eq!(api.merge_patch(&format!("{POOLS}/gpu"), &bad).0, 200, "the stand-in does not check the schema");
    assert!(api.wait_for(SOON, |api| ready_message(api, "gpu").contains("matchExpressions[0]: the key is empty")));
    // A second refused edit, seen once its own message shows: by then the pool has been
    // through several pool events since the refusal.
    let bad2 = json!({"spec":{"nodeSelector":{"matchExpressions":[{"key":"gpu","operator":"Exists"},{"key":"","operator":"Exists"}]}}});
    assert_eq!(api.merge_patch(&format!("{POOLS}/gpu"), &bad2).0, 200);
    assert!(api.wait_for(SOON, |api| ready_message(api, "gpu").contains("matchExpressions[1]: the key is empty")));
    api.create_node("n2", &[("gpu", "1")]);
    assert!(within(&wait_cidr(&api, "n2"), "10.90.0.0/16"), "served by gpu with its last accepted spec");
    assert_eq!(pool_of(&api, "n2").as_deref(), Some("gpu"));
    assert_eq!(cond_status(&api, "gpu", "Draining").as_deref(), Some("False"), "its own CIDR does not drain");
    assert_eq!(cond_status(&api, "gpu", "Ready").as_deref(), Some("False"));
}

/// Issue 19 point 2: of two overlapping pools, the one that was serving keeps serving after a
/// restart (nodes hold its CIDRs), whatever the names sort as.
#[test]
fn the_serving_pool_of_two_overlapping_keeps_serving_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let sel = Some(labels(&[("pool", "x")]));
    api.create(POOLS, &pool("zz-old", sel.clone(), &["10.10.0.0/16"], 24));
    let mut op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[("pool", "x")]);
    assert_eq!(wait_cidr(&api, "n1"), "10.10.0.0/24");
    api.create(POOLS, &pool("aa-new", sel, &["10.10.128.0/17"], 24));
    assert!(api.wait_for(SOON, |api| cond_status(api, "aa-new", "Ready").as_deref() == Some("False")));
    op.kill();
    let _op2 = start(&api, dir.path(), "op-b");
    api.create_node("n2", &[("pool", "x")]);
    wait_cidr(&api, "n2");
    assert_eq!(pool_of(&api, "n2").as_deref(), Some("zz-old"));
    assert!(api.wait_for(SOON, |api| cond_status(api, "aa-new", "Ready").as_deref() == Some("False")
        && cond_status(api, "zz-old", "Ready").as_deref() == Some("True")));
    assert_no_overlap(&api.node_cidrs());
}

/// Waits (bounded) for the operator to exit; its exit code.
fn exit_code(op: &mut Operator) -> Option<i32> {
    let deadline = std::time::Instant::now() + SOON;
    while std::time::Instant::now() < deadline {
        if let Some(st) = op.child.try_wait().unwrap() {
            return st.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// Issue 19 point 4: a restart with another mask flag than the `default` object's is refused
/// at start-up, naming the flag and what to do; the object keeps what nodes hold.
#[test]
fn a_changed_mask_flag_is_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[]);
    assert_eq!(wait_cidr(&api, "n1"), "10.244.0.0/24");
    op.kill();
    let mut op2 = Operator::start(
        &api,
        dir.path(),
        "op-b",
        &["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "26"],
    );
    assert_eq!(exit_code(&mut op2), Some(2), "{}", op2.log());
    let log = op2.log();
    assert!(log.contains("--cluster-pool-ipv4-mask-size 26: the PodCIDRPool default hands out /24"), "{log}");
    assert!(log.contains("set --cluster-pool-ipv4-mask-size 24 again"), "{log}");
    assert_eq!(get_pool(&api, "default").unwrap()["spec"]["ipv4"]["maskSize"], json!(24));
}

/// Issue 19 points 4 and 5: a family dropped from the flags leaves the `default` object's spec
/// and its status (the status is written once, not for ever).
#[test]
fn a_family_dropped_from_the_flags_leaves_the_default_object_and_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let v4 = ["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"];
    let v6 = ["--cluster-pool-ipv6-cidr", "fd00:10::/56", "--cluster-pool-ipv6-mask-size", "64"];
    let mut op = Operator::start(&api, dir.path(), "op-a", &[&v4[..], &v6[..]].concat());
    api.create_node("n1", &[]);
    wait_cidr(&api, "n1");
    assert!(api.wait_for(SOON, |api| get_pool(api, "default").is_some_and(|p| p["status"]["ipv6"].is_object())));
    op.kill();
    let _op2 = Operator::start(&api, dir.path(), "op-b", &v4);
    assert!(api.wait_for(SOON, |api| get_pool(api, "default").is_some_and(|p| p["spec"].get("ipv6").is_none()
        && p["status"].get("ipv6").is_none()
        && p["status"]["ipv4"]["allocated"] == json!(1))));
}

/// Issue 19 point 3: the PodCIDRPool CRD installed after the operator started is noticed
/// without a restart (the flag pool serves meanwhile), and so is its going away.
#[test]
fn a_crd_installed_after_start_is_noticed_and_so_is_its_removal() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.uninstall("podcidr.io", "podcidrpools");
    let op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[("gpu", "1")]);
    assert!(within(&wait_cidr(&api, "n1"), "10.244.0.0/16"));
    assert!(op.log().contains("the PodCIDRPool CRD is not installed"), "{}", op.log());
    let crd = serde_json::to_value(podcidr_operator::crd::crd()).unwrap();
    api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd);
    assert!(api.wait_for(SOON, |api| get_pool(api, "default").is_some()), "the default pool object appears");
    api.create(POOLS, &pool("gpu", Some(labels(&[("gpu", "1")])), &["10.90.0.0/16"], 24));
    api.create_node("n2", &[("gpu", "1")]);
    assert!(within(&wait_cidr(&api, "n2"), "10.90.0.0/16"), "served by the new pool without a restart");
    assert!(api.wait_for(SOON, |api| cond_status(api, "gpu", "Ready").as_deref() == Some("True")));

    api.uninstall("podcidr.io", "podcidrpools");
    assert!(api.wait_for(SOON, |_| op.log().contains("the PodCIDRPool CRD is gone")), "{}", op.log());
    api.create_node("n3", &[("gpu", "1")]);
    assert!(within(&wait_cidr(&api, "n3"), "10.244.0.0/16"), "the flag pool alone serves");
    assert_no_overlap(&api.node_cidrs());
}

/// Issue 19 point 7: a maskSize change by removing the family and adding it back is refused
/// while nodes still hold CIDRs of the old size; the pool keeps serving as accepted.
#[test]
fn a_mask_change_by_remove_and_re_add_is_refused_while_nodes_hold_the_old_size() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut p = pool("p", None, &["10.95.0.0/16"], 24);
    p["spec"]["ipv6"] = json!({"cidrs":["fd00:95::/48"],"maskSize":64});
    api.create(POOLS, &p);
    let _op = Operator::start(&api, dir.path(), "op-a", &[]);
    api.create_node("n1", &[]);
    assert!(api.wait_for(SOON, |api| api.node_cidrs().get("n1").is_some_and(|c| c.len() == 2)));
    let path = format!("{POOLS}/p");
    assert_eq!(api.merge_patch(&path, &json!({"spec":{"ipv4":null}})).0, 200);
    assert!(api.wait_for(SOON, |api| v4_status(api, "p", "draining") == Some(1)), "n1's /24 drains");
    assert_eq!(api.merge_patch(&path, &json!({"spec":{"ipv4":{"cidrs":["10.95.0.0/16"],"maskSize":26}}})).0, 200);
    assert!(api.wait_for(SOON, |api| ready_message(api, "p").contains("nodes still hold CIDRs of this family")));
    assert_eq!(cond_status(&api, "p", "Ready").as_deref(), Some("False"));
    api.create_node("n2", &[]);
    assert!(api.wait_for(SOON, |api| api.node_cidrs().get("n2").is_some_and(|c| !c.is_empty())));
    assert_eq!(api.node_cidrs()["n2"].len(), 1, "only ipv6 is accepted: no /26 handed out");
    assert_no_overlap(&api.node_cidrs());
}

/// Issue 19 point 1 across a restart: the spec in force is recorded on the pool, so a pool whose
/// stored spec is refused keeps serving after the operator restarts.
#[test]
fn a_refused_edit_keeps_the_pool_serving_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.26.5");
    api.create(POOLS, &pool("zone", Some(labels(&[("zone", "a")])), &["10.32.0.0/16"], 24));
    let mut op = start(&api, dir.path(), "op-a");
    api.create_node("n1", &[("zone", "a")]);
    assert!(within(&wait_cidr(&api, "n1"), "10.32.0.0/16"));
    assert!(api.wait_for(SOON, |api| {
        get_pool(api, "zone").is_some_and(|p| p["metadata"]["annotations"]["podcidr.io/accepted-spec"].is_string())
    }));
    op.kill();
    // What the pre-1.31 CRD lets in: an overlap inside the pool.
    let bad = json!({"spec":{"ipv4":{"cidrs":["10.32.0.0/16", "10.32.0.0/17"],"maskSize":24}}});
    assert_eq!(api.merge_patch(&format!("{POOLS}/zone"), &bad).0, 200);
    let _op2 = start(&api, dir.path(), "op-b");
    api.create_node("n2", &[("zone", "a")]);
    assert!(within(&wait_cidr(&api, "n2"), "10.32.0.0/16"), "served by zone with its recorded spec");
    assert!(api.wait_for(SOON, |api| cond_status(api, "zone", "Ready").as_deref() == Some("False")));
    assert!(ready_message(&api, "zone").contains("must not overlap"), "{}", ready_message(&api, "zone"));
    assert_eq!(cond_status(&api, "zone", "Draining").as_deref(), Some("False"));
    assert_no_overlap(&api.node_cidrs());
}
