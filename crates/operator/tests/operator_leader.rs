//! Leader election of the real `podcidr-operator` binary against the stand-in API server
//! (issue 18 point 2, issue 19 point 12): a skewed wall clock, a stalled renewal, and the
//! SIGTERM handover, judged by the Lease, the server's request log, /healthz and the exit.

mod operator;

use podcidr_testsupport::kubeapi;

use kubeapi::{KubeApi, Logged};
use operator::{LEASE, Operator, SOON, assert_no_overlap, assigned, lease_holder};
use std::time::{Duration, Instant};

const POOL: [&str; 4] = ["--cluster-pool-ipv4-cidr", "10.244.0.0/16", "--cluster-pool-ipv4-mask-size", "24"];
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/podcidr-operator";

fn is_lease(l: &Logged) -> bool {
    l.path.starts_with("/apis/coordination.k8s.io/")
}

fn is_write(l: &Logged) -> bool {
    matches!(l.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
}

fn wait_assigned(api: &KubeApi, names: &[String]) {
    let ok = api.wait_for(SOON, |api| {
        let c = api.node_cidrs();
        names.iter().all(|n| c.get(n).is_some_and(|l| !l.is_empty()))
    });
    assert!(ok, "nodes without podCIDRs: {:?}", api.node_cidrs());
}

fn wait_leader(api: &KubeApi, op: &Operator) {
    assert!(
        api.wait_for(SOON, |api| lease_holder(api).as_deref() == Some(op.identity.as_str())
            && op.metric("podcidr_operator_leader", &[]) == Some(1.0)),
        "{} leads; holder {:?}",
        op.identity,
        lease_holder(api)
    );
}

/// The review's skew case: the follower's wall clock runs 8 s ahead (4 lease durations), so the
/// holder's renewTime always looks long past to it. It must keep following.
#[test]
fn a_follower_whose_wall_clock_is_8s_ahead_does_not_take_a_held_lease() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let a = Operator::start(&api, dir.path(), "op-a", &POOL);
    wait_leader(&api, &a);
    let b = Operator::start_with(&api, dir.path(), "op-b", LEASE, &[("PODCIDR_OPERATOR_CLOCK_SKEW", "8s")], &POOL);
    assert!(api.wait_for(SOON, |_| b.ready()), "op-b follows (ready)");
    let renewals = |api: &KubeApi| {
        api.requests().iter().filter(|l| l.who == "op-a" && l.method == "PUT" && is_lease(l) && l.status == 200).count()
    };
    // a renews at most once per retry period (2/15 of the lease): 25 renewals span over three
    // lease durations, during which b reads the lease and nodes join.
    let from = renewals(&api);
    let nodes: Vec<String> = (0..20).map(|i| format!("node-{i:02}")).collect();
    for n in &nodes {
        api.create_node(n, &[]);
    }
    let held = |api: &KubeApi| lease_holder(api).as_deref() == Some("op-a");
    api.wait_for(SOON, |api| renewals(api) >= from + 25 || !held(api));
    assert_eq!(lease_holder(&api).as_deref(), Some("op-a"), "the lease stays with its renewing holder");
    assert!(renewals(&api) >= from + 25, "op-a keeps renewing");
    wait_assigned(&api, &nodes);
    assert_eq!(b.metric("podcidr_operator_leader", &[]), Some(0.0));
    let b_writes: Vec<Logged> = api.requests().into_iter().filter(|l| l.who == "op-b" && is_write(l)).collect();
    assert!(b_writes.is_empty(), "op-b wrote while op-a held the lease: {b_writes:?}");
    assert!(api.count("GET", LEASE_PATH, Some(200)) > 0);
    assert_no_overlap(&api.node_cidrs());
}

/// The review's stall case: every lease request of the leader hangs (the connection stays open,
/// no answer). The leader must fail /healthz, stop writing and exit before the follower may
/// take over; the follower then serves the nodes that still wait.
#[test]
fn a_leader_whose_renewal_stalls_fails_healthz_stops_writing_and_exits_before_a_takeover() {
    // 9 s: renew deadline 6 s, a renewal overdue after 2.4 s, so /healthz fails for seconds.
    let lease = Duration::from_secs(9);
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut a = Operator::start_with(&api, dir.path(), "op-a", lease, &[], &POOL);
    wait_leader(&api, &a);
    let b = Operator::start_with(&api, dir.path(), "op-b", lease, &[], &POOL);
    assert!(api.wait_for(SOON, |_| b.ready()), "op-b follows (ready)");
    let first: Vec<String> = (0..10).map(|i| format!("early-{i:02}")).collect();
    for n in &first {
        api.create_node(n, &[]);
    }
    wait_assigned(&api, &first);

    api.stall("op-a", None, "/apis/coordination.k8s.io/");
    let stalled_at = Instant::now();
    // Nodes keep joining while op-a cannot renew.
    let mut later = vec![];
    let mut unhealthy = false;
    let mut i = 0;
    while a.alive() && stalled_at.elapsed() < SOON {
        if i < 30 {
            let n = format!("late-{i:02}");
            api.create_node(&n, &[]);
            later.push(n);
            i += 1;
        }
        unhealthy |= operator::http_get(a.health_addr, "/healthz").is_some_and(|(s, _)| s == 503);
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = stalled_at.elapsed();
    assert!(!a.alive(), "op-a still runs {took:?} after its lease requests stalled");
    let status = a.child.wait().unwrap();
    eprintln!("op-a exited {took:?} after its lease requests stalled (renew deadline 6s)");
    assert!(!status.success(), "a leader that cannot renew exits non-zero: {status}");
    assert!(unhealthy, "/healthz failed while op-a could not renew");
    assert!(a.log().contains("renew deadline"), "the log says why:\n{}", a.log());
    assert!(api.count("", LEASE_PATH, Some(0)) > 0, "op-a's lease requests were stalled");

    wait_leader(&api, &b);
    wait_assigned(&api, &later);
    let log = api.requests();
    let takeover = log
        .iter()
        .position(|l| l.who == "op-b" && is_lease(l) && is_write(l) && l.status / 100 == 2)
        .expect("op-b wrote the lease");
    let a_writes: Vec<&Logged> =
        log[takeover..].iter().filter(|l| l.who == "op-a" && is_write(l) && l.status != 0).collect();
    assert!(a_writes.is_empty(), "op-a wrote after op-b took over: {a_writes:?}");
    assert_no_overlap(&api.node_cidrs());
    assert_eq!(assigned(&api.node_cidrs()).len(), first.len() + later.len());
    api.unstall();
}

/// SIGTERM: the leader gives the Lease up (holder "", leaseDurationSeconds 1) and the follower,
/// watching it, takes it at once instead of after a lease duration (30 s here).
#[test]
fn on_sigterm_the_leader_releases_and_the_follower_takes_over_at_once() {
    let lease = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    let mut a = Operator::start_with(&api, dir.path(), "op-a", lease, &[], &POOL);
    wait_leader(&api, &a);
    let b = Operator::start_with(&api, dir.path(), "op-b", lease, &[], &POOL);
    assert!(api.wait_for(SOON, |_| b.ready()), "op-b follows (ready)");
    let sent = Instant::now();
    let status = a.terminate();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    let released = api
        .requests()
        .into_iter()
        .rfind(|l| l.who == "op-a" && l.method == "PUT" && is_lease(l) && l.status == 200)
        .expect("op-a wrote the lease on SIGTERM");
    let body: serde_json::Value = serde_json::from_str(&released.body).unwrap();
    assert_eq!(body["spec"]["holderIdentity"], "", "released: no holder");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
    // Far less than the 30 s a follower waits for an unreleased lease.
    assert!(
        api.wait_for(lease / 2, |api| lease_holder(api).as_deref() == Some("op-b")),
        "op-b takes the released lease; holder {:?}",
        lease_holder(&api)
    );
    eprintln!("handover: op-b held the lease {:?} after SIGTERM to op-a", sent.elapsed());
    wait_leader(&api, &b);
    let node = "after-handover".to_string();
    api.create_node(&node, &[]);
    wait_assigned(&api, &[node]);
}
