//! Issue 11 §10 scenarios: the real `podcidr-operator` binary against the stateful stand-in API
//! server (`tests/kubeapi`), judged only by what a user sees: the API objects, Events, the
//! request log of the API server, /metrics and /readyz.

mod operator;

use podcidr_testsupport::kubeapi;

use kubeapi::KubeApi;
use operator::{LEASE, Operator, SOON, assert_no_overlap, assigned, events_for, lease_holder};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const POOL: [&str; 4] = ["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"];

fn v4(cidrs: &[String]) -> Option<ipnet::Ipv4Net> {
    cidrs.iter().find_map(|c| c.parse::<ipnet::Ipv4Net>().ok())
}

fn wait_assigned(api: &KubeApi, names: &[String]) {
    let ok = api.wait_for(SOON, |api| {
        let c = api.node_cidrs();
        names.iter().all(|n| c.get(n).is_some_and(|l| !l.is_empty()))
    });
    let c = api.node_cidrs();
    let missing: Vec<&String> = names.iter().filter(|n| c.get(*n).is_none_or(|l| l.is_empty())).collect();
    assert!(ok, "nodes still without podCIDRs: {missing:?}");
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:03}")).collect()
}

#[test]
fn hundred_nodes_join() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let op = Operator::start(&api, dir.path(), "op-a", &POOL);
    let nodes = names("node", 0..100);
    for n in &nodes {
        api.create_node(n, &[("kubernetes.io/hostname", n)]);
    }
    wait_assigned(&api, &nodes);
    let cidrs = api.node_cidrs();
    assert_no_overlap(&cidrs);
    let pool: ipnet::Ipv4Net = "10.244.0.0/16".parse().unwrap();
    for n in &nodes {
        let node = api.node(n).unwrap();
        let list = &cidrs[n];
        assert_eq!(list.len(), 1, "{n}: {list:?}");
        let net = v4(list).unwrap();
        assert!(pool.contains(&net) && net.prefix_len() == 24, "{n}: {net}");
        assert_eq!(node["spec"]["podCIDR"], json!(list[0]));
        assert_eq!(node["metadata"]["annotations"]["podcidr.io/pool"], json!("default"), "{n}");
    }
    assert!(api.wait_for(SOON, |_| {
        op.metric("podcidr_pool_node_cidrs_allocated", &[("pool", "default"), ("family", "ipv4")]) == Some(100.0)
    }));
    assert_eq!(op.metric("podcidr_pool_node_cidrs", &[("pool", "default"), ("family", "ipv4")]), Some(256.0));
    assert_eq!(op.metric("podcidr_operator_leader", &[]), Some(1.0));
    assert!(op.ready());
    // No write was refused: it never tried to change a CIDR.
    assert_eq!(api.count("PATCH", "/api/v1/nodes", Some(422)), 0);
}

#[test]
fn twenty_leave_twenty_join_and_freed_cidrs_are_not_reused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let op = Operator::start(&api, dir.path(), "op-a", &POOL);
    let first = names("node", 0..100);
    for n in &first {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &first);
    let before = api.node_cidrs();
    let leaving: Vec<String> = first.iter().step_by(5).cloned().collect();
    assert_eq!(leaving.len(), 20);
    let freed: BTreeSet<String> = leaving.iter().flat_map(|n| before[n].clone()).collect();
    for n in &leaving {
        api.delete_node(n);
    }
    // The operator has seen them go once its count drops.
    assert!(
        api.wait_for(SOON, |_| op.metric("podcidr_pool_node_cidrs_allocated", &[("pool", "default")]) == Some(80.0))
    );
    let joining = names("new", 0..20);
    for n in &joining {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &joining);
    let after = api.node_cidrs();
    assert_no_overlap(&after);
    for n in &joining {
        for c in &after[n] {
            assert!(!freed.contains(c), "{n} got {c}, freed a moment ago (next-fit hands out fresh slices first)");
        }
    }
    for n in first.iter().filter(|n| !leaving.contains(n)) {
        assert_eq!(after[n], before[n], "{n} kept its CIDR");
    }
}

#[test]
fn killed_in_the_middle_of_a_burst_and_restarted_without_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut op = Operator::start(&api, dir.path(), "op-a", &POOL);
    let nodes = names("node", 0..150);
    for n in &nodes[..20] {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &nodes[..20]);
    // The burst; killed once some, not all, of it is written.
    for n in &nodes[20..] {
        api.create_node(n, &[]);
    }
    assert!(api.wait_for(SOON, |api| assigned(&api.node_cidrs()).len() > 25));
    op.kill();
    let at_kill = api.node_cidrs();
    // Restarted with a new identity (a new pod): it must wait for the old lease to expire.
    let op2 = Operator::start(&api, dir.path(), "op-b", &POOL);
    wait_assigned(&api, &nodes);
    let after = api.node_cidrs();
    assert_no_overlap(&after);
    for (n, l) in &at_kill {
        if !l.is_empty() {
            assert_eq!(&after[n], l, "{n} kept the CIDR written before the kill");
        }
    }
    assert_eq!(api.count("PATCH", "/api/v1/nodes", Some(422)), 0, "no write tried to change a CIDR");
    assert!(op2.ready());
}

#[test]
fn two_operators_only_the_leader_writes_and_the_other_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut a = Operator::start(&api, dir.path(), "op-a", &POOL);
    let mut b = Operator::start(&api, dir.path(), "op-b", &POOL);
    assert!(api.wait_for(SOON, |api| lease_holder(api).is_some_and(|h| h == "op-a" || h == "op-b")));
    let first = names("node", 0..20);
    for n in &first {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &first);
    let leader = lease_holder(&api).unwrap();
    let (leader_op, follower_op) = if leader == "op-a" { (&mut a, &mut b) } else { (&mut b, &mut a) };
    let follower = follower_op.identity.clone();
    assert!(
        api.wait_for(SOON, |_| follower_op.ready()),
        "the follower {follower} is ready; /readyz: {:?}",
        operator::http_get(follower_op.health_addr, "/readyz")
    );
    assert_eq!(leader_op.metric("podcidr_operator_leader", &[]), Some(1.0));
    assert_eq!(follower_op.metric("podcidr_operator_leader", &[]), Some(0.0));
    let node_writes = |who: &str| {
        api.requests()
            .iter()
            .filter(|l| {
                l.who == who
                    && matches!(l.method.as_str(), "PATCH" | "PUT" | "POST")
                    && l.path.starts_with("/api/v1/nodes")
            })
            .count()
    };
    assert!(node_writes(&leader) > 0);
    assert_eq!(node_writes(&follower), 0, "the follower wrote to Nodes");

    leader_op.kill();
    let killed = Instant::now();
    assert!(
        api.wait_for(LEASE * 3 + Duration::from_secs(3), |api| lease_holder(api).as_deref() == Some(follower.as_str())),
        "{follower} holds the lease within the lease duration (x3) after the leader died; holder: {:?}",
        lease_holder(&api)
    );
    eprintln!("took over after {:?}", killed.elapsed());
    let second = names("late", 0..10);
    for n in &second {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &second);
    assert_no_overlap(&api.node_cidrs());
    assert!(node_writes(&follower) > 0, "the new leader writes");
    assert!(follower_op.alive());
}

#[test]
fn pool_runs_out_then_a_deleted_node_frees_room_for_the_waiting_one() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    // Room for two /30s, as in the kcm recording.
    let op = Operator::start(
        &api,
        dir.path(),
        "op-a",
        &["--cluster-pool-ipv4-cidr", "10.250.0.0/29", "--cluster-pool-ipv4-mask-size", "30"],
    );
    for n in ["node-p", "node-q"] {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &["node-p".into(), "node-q".into()]);
    api.create_node("node-r", &[]);
    assert!(
        api.wait_for(SOON, |api| !events_for(api, "node-r", "CIDRNotAvailable").is_empty()),
        "CIDRNotAvailable on node-r"
    );
    let ev = &events_for(&api, "node-r", "CIDRNotAvailable")[0];
    assert_eq!(ev["type"], json!("Warning"));
    assert_eq!(ev["involvedObject"]["kind"], json!("Node"));
    assert!(api.node_cidrs()["node-r"].is_empty());
    // The gauges follow within 250 ms.
    let gauge = |name: &str| op.metric(name, &[("pool", "default"), ("family", "ipv4")]);
    assert!(api.wait_for(SOON, |_| gauge("podcidr_pool_node_cidrs_allocated") == Some(2.0)));
    assert_eq!(gauge("podcidr_pool_node_cidrs"), Some(2.0));

    let p_cidr = api.node_cidrs()["node-p"].clone();
    api.delete_node("node-p");
    // Retried with capped backoff (1 s here): served without any change to node-r.
    assert!(api.wait_for(SOON, |api| api.node_cidrs()["node-r"] == p_cidr), "node-r gets node-p's CIDR {p_cidr:?}");
    assert_no_overlap(&api.node_cidrs());
}

#[test]
fn a_cidr_outside_every_pool_is_kept_as_foreign_and_the_operator_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.create("/api/v1/nodes", &json!({"metadata":{"name":"old-foreign"},"spec":{"podCIDRs":["192.168.77.0/24"]}}));
    api.create("/api/v1/nodes", &json!({"metadata":{"name":"old-inside"},"spec":{"podCIDRs":["10.244.0.0/24"]}}));
    let mut op = Operator::start(&api, dir.path(), "op-a", &POOL);
    let nodes = names("node", 0..5);
    for n in &nodes {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &nodes);
    let c = api.node_cidrs();
    assert_no_overlap(&c);
    assert_eq!(c["old-foreign"], vec!["192.168.77.0/24".to_string()]);
    assert_eq!(c["old-inside"], vec!["10.244.0.0/24".to_string()], "adopted, not re-IPed");
    // The gauges follow within 250 ms.
    let allocated =
        |op: &Operator| op.metric("podcidr_pool_node_cidrs_allocated", &[("pool", "default"), ("family", "ipv4")]);
    assert!(
        api.wait_for(SOON, |_| op.metric("podcidr_pool_foreign_cidrs", &[]) == Some(1.0)
            && allocated(&op) == Some(6.0))
    );
    assert!(op.alive() && op.ready());
    assert_eq!(api.count("PATCH", "/api/v1/nodes/old-foreign", None), 0, "the foreign node is left alone");
}

#[test]
fn a_node_with_a_deletion_timestamp_keeps_its_cidr_until_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let _op = Operator::start(
        &api,
        dir.path(),
        "op-a",
        &["--cluster-pool-ipv4-cidr", "10.250.0.0/29", "--cluster-pool-ipv4-mask-size", "30"],
    );
    api.create_node_with("node-x", &[], &["example.com/drain"]);
    api.create_node("node-y", &[]);
    wait_assigned(&api, &["node-x".into(), "node-y".into()]);
    let x = api.node_cidrs()["node-x"].clone();
    api.delete_node("node-x");
    assert!(api.node("node-x").unwrap()["metadata"]["deletionTimestamp"].is_string());
    api.create_node("node-z", &[]);
    // The operator has looked at node-z and found no room: node-x's CIDR still counts.
    assert!(api.wait_for(SOON, |api| !events_for(api, "node-z", "CIDRNotAvailable").is_empty()));
    assert!(api.node_cidrs()["node-z"].is_empty(), "node-z got a CIDR while node-x still exists");
    api.clear_finalizers("/api/v1/nodes/node-x");
    assert!(api.node("node-x").is_none());
    assert!(api.wait_for(SOON, |api| api.node_cidrs()["node-z"] == x), "node-z gets node-x's CIDR once node-x is gone");
}

#[test]
fn both_targets_get_the_same_cidrs() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut args = POOL.to_vec();
    args.extend(["--cluster-pool-ipv6-cidr", "fd00:10::/56", "--target", "node", "--target", "ciliumnode"]);
    let op = Operator::start(&api, dir.path(), "op-a", &args);
    let nodes = names("node", 0..10);
    for n in &nodes {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &nodes);
    assert!(api.wait_for(SOON, |api| {
        let cn = api.ciliumnode_cidrs();
        nodes.iter().all(|n| cn.get(n).is_some_and(|l| !l.is_empty()))
    }));
    let (node_cidrs, cn_cidrs) = (api.node_cidrs(), api.ciliumnode_cidrs());
    assert_no_overlap(&node_cidrs);
    for n in &nodes {
        assert_eq!(node_cidrs[n].len(), 2, "{n}: dual stack");
        assert_eq!(cn_cidrs[n], node_cidrs[n], "{n}: the same CIDRs in both targets");
        let node = api.node(n).unwrap();
        let cn = api.ciliumnode(n).unwrap();
        let owner = &cn["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["uid"]),
            (&json!("Node"), &json!(n), &node["metadata"]["uid"])
        );
    }
    // The garbage collector removes a deleted Node's CiliumNode; the operator then frees its CIDRs.
    api.delete_node(&nodes[0]);
    assert!(api.ciliumnode(&nodes[0]).is_none());
    assert!(api.wait_for(SOON, |_| {
        op.metric("podcidr_pool_node_cidrs_allocated", &[("pool", "default"), ("family", "ipv4")]) == Some(9.0)
    }));
}

#[test]
fn transient_api_errors_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    api.fail_next(Some("PATCH"), "/api/v1/nodes/node-a", 1, 500);
    api.fail_next(Some("PATCH"), "/api/v1/nodes/node-b", 1, 429);
    api.fail_next(Some("PATCH"), "/api/v1/nodes/node-c", 1, 409);
    let op = Operator::start(&api, dir.path(), "op-a", &POOL);
    let nodes: Vec<String> = ["node-a", "node-b", "node-c"].iter().map(|s| s.to_string()).collect();
    for n in &nodes {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &nodes);
    assert_no_overlap(&api.node_cidrs());
    for (node, code) in [("node-a", 500), ("node-b", 429), ("node-c", 409)] {
        assert_eq!(api.count("PATCH", &format!("/api/v1/nodes/{node}"), Some(code)), 1, "{node} got its {code}");
    }
    // kube's client retries 429 (and 503, 504) itself, so the operator counts only the others.
    for code in ["500", "409"] {
        assert!(
            op.metric("podcidr_api_errors_total", &[("code", code)]).unwrap_or(0.0) >= 1.0,
            "api errors {code} counted"
        );
    }
}

#[test]
fn a_leader_whose_lease_is_taken_exits_and_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut op = Operator::start(&api, dir.path(), "op-a", &POOL);
    api.create_node("node-a", &[]);
    wait_assigned(&api, &["node-a".to_string()]);
    assert_eq!(lease_holder(&api).as_deref(), Some("op-a"));
    // Someone else holds the Lease now, for an hour (a split brain, or an admin's hand).
    let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/podcidr-operator";
    let now = api.get(lease).unwrap()["spec"]["renewTime"].clone();
    let (s, _) = api.merge_patch(
        lease,
        &json!({"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 3600, "renewTime": now, "acquireTime": now}}),
    );
    assert_eq!(s, 200);
    let stolen = api.requests().len();
    assert!(api.wait_for(SOON, |_| !op.alive()), "op-a exits once it sees the lease taken");
    let status = op.child.wait().unwrap();
    assert!(!status.success(), "a lost lease is a failure exit, so the Deployment restarts it: {status}");
    assert!(op.log().contains("lease"), "the log says why it exits:\n{}", op.log());
    let after: Vec<String> = api.requests()[stolen..]
        .iter()
        .filter(|l| l.who == "op-a" && l.path.starts_with("/api/v1/nodes") && l.method != "GET")
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert!(after.is_empty(), "op-a wrote to Nodes after losing the lease: {after:?}");
    assert_eq!(lease_holder(&api).as_deref(), Some("thief"), "and it left the thief's lease alone");
}

#[test]
fn a_422_from_someone_elses_cidr_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let op = Operator::start(&api, dir.path(), "op-a", &POOL);
    // kube-controller-manager (say) sets node-x's CIDR just before the operator's write lands.
    api.race_next(
        "PATCH",
        "/api/v1/nodes/node-x",
        json!({"spec": {"podCIDR": "10.99.0.0/24", "podCIDRs": ["10.99.0.0/24"]}}),
    );
    api.create_node("node-x", &[]);
    assert!(
        api.wait_for(SOON, |api| !events_for(api, "node-x", "CIDRAssignmentFailed").is_empty()),
        "a Warning Event on node-x says the write was refused"
    );
    assert_eq!(api.count("PATCH", "/api/v1/nodes/node-x", Some(422)), 1, "the API server refused the change");
    let ev = &events_for(&api, "node-x", "CIDRAssignmentFailed")[0];
    assert_eq!(ev["type"], "Warning");
    assert!(ev["message"].as_str().unwrap_or("").contains("left as it is"), "{ev}");
    // The other writer's CIDR stays, is held (so never handed out again) and counted foreign.
    api.create_node("node-y", &[]);
    wait_assigned(&api, &["node-y".to_string()]);
    let cidrs = api.node_cidrs();
    assert_eq!(cidrs["node-x"], vec!["10.99.0.0/24".to_string()]);
    assert_no_overlap(&cidrs);
    assert!(api.wait_for(SOON, |_| op.metric("podcidr_pool_foreign_cidrs", &[]) == Some(1.0)));
    assert_eq!(api.count("PATCH", "/api/v1/nodes/node-x", Some(200)), 0, "node-x was left alone");
}
