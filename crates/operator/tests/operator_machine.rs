//! The controller's decisions (src/operator/controller.rs `Machine`), without HTTP: watch
//! events, write outcomes and ticks go in with the time the test gives; the writes, Events and
//! readiness it decides come out. Each test says what a user would then see.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;
use podcidr_operator::allocator::{FamilySpec, PoolSpec};
use podcidr_operator::controller::{CommitResult, Config, Effect, Machine, SETTLE};
use podcidr_operator::record::{self, PodCIDRBlock};
use podcidr_operator::targets::{Failure, Outcome, Plan};
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The allocation record as the API server keeps it: one resourceVersion counter, a write
/// with a stale resourceVersion (or a create of an existing block) is refused.
#[derive(Default)]
struct Record {
    rv: u64,
    blocks: BTreeMap<String, PodCIDRBlock>,
}

impl Record {
    fn write(&mut self, mut obj: PodCIDRBlock) -> CommitResult {
        let name = obj.metadata.name.clone().unwrap();
        let cur = self.blocks.get(&name);
        if cur.and_then(|c| c.metadata.resource_version.clone()) != obj.metadata.resource_version {
            return CommitResult::Conflict(cur.cloned());
        }
        self.rv += 1;
        obj.metadata.resource_version = Some(self.rv.to_string());
        self.blocks.insert(name, obj.clone());
        CommitResult::Written(obj)
    }

    /// Who holds each CIDR, by the record.
    fn holders(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for b in self.blocks.values() {
            for (c, h) in record::entries(b).0 {
                assert!(out.insert(c.to_string(), h.node.clone()).is_none(), "{c} twice in the record");
            }
        }
        out
    }
}

thread_local! {
    static RECORD: RefCell<Record> = RefCell::new(Record::default());
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn pool(cidr: &str, mask: u8) -> PoolSpec {
    PoolSpec {
        name: "default".into(),
        selector: None,
        ipv4: Some(FamilySpec { cidrs: nets(&[cidr]), mask }),
        ipv6: None,
    }
}

fn machine(cidr: &str, mask: u8) -> Machine {
    Machine::new(Config {
        node_target: true,
        ciliumnode_target: false,
        max_backoff: Duration::from_secs(5),
        batch: Duration::ZERO,
        default_pool: Some(pool(cidr, mask)),
    })
}

fn node(name: &str, cidrs: &[&str]) -> Node {
    let mut n = json!({"metadata": {"name": name, "uid": format!("uid-{name}")}, "spec": {}});
    if !cidrs.is_empty() {
        n["spec"] = json!({"podCIDR": cidrs[0], "podCIDRs": cidrs});
    }
    serde_json::from_value(n).unwrap()
}

/// The initial lists: the record (as the store has it), these Nodes, and the pools.
fn restore(m: &mut Machine, nodes: &[Node], now: Instant) {
    m.block_event(Event::Init, now);
    for b in RECORD.with(|r| r.borrow().blocks.values().cloned().collect::<Vec<_>>()) {
        m.block_event(Event::InitApply(b), now);
    }
    m.block_event(Event::InitDone, now);
    m.node_event(Event::Init, now);
    for n in nodes {
        m.node_event(Event::InitApply(n.clone()), now);
    }
    m.node_event(Event::InitDone, now);
    m.cilium_event(Event::Init, now);
    m.cilium_event(Event::InitDone, now);
    m.pools_listed();
}

/// Carry out the record writes the machine decides (against the one store) until it decides
/// none; the other effects it decided meanwhile.
fn effects(m: &mut Machine) -> Vec<Effect> {
    let mut out = Vec::new();
    loop {
        let mut committed = false;
        for e in m.take_effects() {
            match e {
                Effect::Commit(c) => {
                    let res = RECORD.with(|r| r.borrow_mut().write(c.object.clone()));
                    m.committed(c, res, Instant::now());
                    committed = true;
                }
                e => out.push(e),
            }
        }
        if !committed {
            return out;
        }
    }
}

/// The Node writes decided (record writes carried out).
fn writes(m: &mut Machine) -> Vec<Plan> {
    effects(m)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Write(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Ticks at `now` until nothing more is decided (a release waits for its record write, a
/// waiting node for the tick after it); the Node writes decided.
fn step(m: &mut Machine, now: Instant) -> Vec<Plan> {
    let mut out = Vec::new();
    for _ in 0..4 {
        m.tick(now);
        out.extend(writes(m));
    }
    out
}

fn cidr_of(p: &Plan) -> String {
    p.cidrs[0].to_string()
}

fn done(node_written: bool, result: Result<(), Failure>) -> Outcome {
    Outcome { node_written, ciliumnode_written: false, result, errors: Vec::new() }
}

#[test]
fn nothing_is_handed_out_before_every_initial_list_is_in() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    m.block_event(Event::Init, t0);
    m.node_event(Event::Init, t0);
    m.node_event(Event::InitApply(node("a", &[])), t0);
    assert!(m.tick(t0 + Duration::from_secs(60)).is_none());
    m.node_event(Event::InitDone, t0);
    m.pools_listed();
    assert!(m.tick(t0 + Duration::from_secs(60)).is_none(), "the record is not listed yet");
    m.block_event(Event::InitDone, t0);
    assert!(m.tick(t0 + Duration::from_secs(60)).is_none(), "CiliumNodes are not listed yet");
    m.cilium_absent();
    let e = effects(&mut m);
    assert!(e.iter().any(|e| matches!(e, Effect::Ready)), "{e:?}");
    assert!(!e.iter().any(|e| matches!(e, Effect::Write(_))), "{e:?}");
    // Judged once the settle time has passed, not before.
    assert_eq!(m.tick(t0), Some(t0 + SETTLE));
    assert!(writes(&mut m).is_empty());
    m.tick(t0 + SETTLE);
    let w = writes(&mut m);
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].node.as_str(), cidr_of(&w[0]).as_str(), w[0].pool.as_str()), ("a", "10.244.0.0/24", "default"));
}

#[test]
fn restored_cidrs_are_never_handed_out_again() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    restore(&mut m, &[node("old-0", &["10.244.0.0/24"]), node("old-1", &["10.244.1.0/24"])], t0);
    m.node_event(Event::Apply(node("new", &[])), t0);
    m.tick(t0 + SETTLE);
    let w = writes(&mut m);
    assert_eq!(w.iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.2.0/24"]);
}

#[test]
fn a_node_deleted_while_its_write_is_in_flight_keeps_its_cidr_until_the_write_reports() {
    let t0 = Instant::now();
    // Two slices: whatever "a" was given cannot be given to "c" before a's write has reported.
    let mut m = machine("10.244.0.0/23", 24);
    restore(&mut m, &[], t0);
    m.node_event(Event::Apply(node("a", &[])), t0);
    m.tick(t0 + SETTLE);
    let a = writes(&mut m).remove(0);
    m.node_event(Event::Delete(node("a", &[])), t0 + SETTLE);
    assert!(m.allocator().holds("a").is_some(), "released while its write is in flight");
    m.node_event(Event::Apply(node("b", &[])), t0 + SETTLE);
    m.node_event(Event::Apply(node("c", &[])), t0 + SETTLE);
    m.tick(t0 + SETTLE * 2);
    let w = writes(&mut m);
    assert_eq!(w.len(), 1, "one slice left for two nodes: {w:?}");
    assert_ne!(cidr_of(&w[0]), cidr_of(&a));
    // The write reports: the Node was gone. Its slice goes at once to the node still waiting.
    let t1 = t0 + SETTLE * 3;
    m.written(a.clone(), done(false, Err(Failure::Gone)), t1);
    let w2 = step(&mut m, t1);
    assert!(m.allocator().holds("a").is_none());
    assert_eq!(w2.iter().map(cidr_of).collect::<Vec<_>>(), [cidr_of(&a)]);
}

#[test]
fn a_deletion_timestamp_is_not_enough_to_release() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/24", 24);
    let mut dying = node("a", &["10.244.0.0/24"]);
    dying.metadata.deletion_timestamp = serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
    restore(&mut m, &[dying], t0);
    m.node_event(Event::Apply(node("b", &[])), t0);
    m.tick(t0 + SETTLE);
    assert!(writes(&mut m).is_empty(), "the only slice is still held by a Node being deleted");
    m.node_event(Event::Delete(node("a", &["10.244.0.0/24"])), t0 + SETTLE);
    assert_eq!(step(&mut m, t0 + SETTLE).iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.0.0/24"]);
}

#[test]
fn a_relist_releases_the_nodes_that_vanished_and_occupies_the_new_ones() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    restore(&mut m, &[node("a", &["10.244.0.0/24"]), node("b", &["10.244.1.0/24"])], t0);
    // The watch broke; meanwhile "a" left and "c" joined with a CIDR someone else wrote.
    restore(&mut m, &[node("b", &["10.244.1.0/24"]), node("c", &["10.244.2.0/24"])], t0);
    assert!(m.allocator().holds("a").is_none());
    assert_eq!(m.allocator().holds("c").map(|(_, c)| c.to_vec()), Some(nets(&["10.244.2.0/24"])));
}

#[test]
fn a_waiting_node_is_served_as_soon_as_a_slice_is_freed() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/24", 24);
    restore(&mut m, &[node("a", &["10.244.0.0/24"])], t0);
    m.node_event(Event::Apply(node("b", &[])), t0);
    m.tick(t0 + SETTLE);
    let effects = effects(&mut m);
    assert!(effects.iter().any(|e| matches!(e, Effect::Warn(w) if w.reason == "CIDRNotAvailable")), "{effects:?}");
    assert_eq!(m.snapshot().waiting, [("b".to_string(), vec!["default".to_string()])]);
    // Long before b's backoff ends, a leaves: b is planned on the next tick.
    let t1 = t0 + SETTLE + Duration::from_millis(1);
    m.node_event(Event::Delete(node("a", &["10.244.0.0/24"])), t1);
    assert_eq!(step(&mut m, t1).iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.0.0/24"]);
    assert_eq!(m.tick(t1), None);
}

#[test]
fn a_failed_write_is_retried_with_backoff_and_counts_once_written() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    restore(&mut m, &[], t0);
    m.node_event(Event::Apply(node("a", &[])), t0);
    m.tick(t0 + SETTLE);
    let p = writes(&mut m).remove(0);
    let t1 = t0 + SETTLE;
    let retry = Failure::Retry { code: "503".into(), message: "unavailable".into() };
    m.written(p.clone(), done(false, Err(retry)), t1);
    // Retried after 250 ms, with the same CIDR.
    assert_eq!(m.tick(t1), Some(t1 + Duration::from_millis(250)));
    assert!(writes(&mut m).is_empty());
    m.tick(t1 + Duration::from_millis(250));
    let again = writes(&mut m);
    assert_eq!(again.iter().map(cidr_of).collect::<Vec<_>>(), [cidr_of(&p)]);
    m.written(again[0].clone(), done(true, Ok(())), t1 + Duration::from_secs(1));
    let effects = effects(&mut m);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Assigned { node, seconds } if node == "a" && *seconds >= 1.0)),
        "{effects:?}"
    );
    assert_eq!(m.tick(t1 + Duration::from_secs(10)), None, "nothing left to do");
}

fn node_uid(name: &str, uid: &str, cidrs: &[&str]) -> Node {
    let mut n = node(name, cidrs);
    n.metadata.uid = Some(uid.into());
    n
}

/// What a machine decided at `now`: record writes (not carried out yet) and Node writes.
fn decide(m: &mut Machine, now: Instant) -> (Vec<podcidr_operator::controller::Commit>, Vec<Plan>) {
    m.tick(now);
    let mut commits = Vec::new();
    let mut plans = Vec::new();
    for e in m.take_effects() {
        match e {
            Effect::Commit(c) => commits.push(c),
            Effect::Write(p) => plans.push(p),
            _ => {}
        }
    }
    (commits, plans)
}

fn commit_all(m: &mut Machine, commits: Vec<podcidr_operator::controller::Commit>, now: Instant) {
    for c in commits {
        let res = RECORD.with(|r| r.borrow_mut().write(c.object.clone()));
        m.committed(c, res, now);
    }
}

#[test]
fn two_writers_from_stale_views_never_record_one_cidr_for_two_nodes() {
    let t0 = Instant::now();
    let mut a = machine("10.244.0.0/16", 24);
    let mut b = machine("10.244.0.0/16", 24);
    restore(&mut a, &[], t0);
    restore(&mut b, &[], t0);
    // Each sees only its own new node yet: both plan 10.244.0.0/24.
    a.node_event(Event::Apply(node("x", &[])), t0);
    b.node_event(Event::Apply(node("y", &[])), t0);
    let (ca, wa) = decide(&mut a, t0 + SETTLE);
    let (cb, wb) = decide(&mut b, t0 + SETTLE);
    assert!(wa.is_empty() && wb.is_empty(), "no Node is written before the record says so");
    commit_all(&mut a, ca, t0 + SETTLE);
    commit_all(&mut b, cb, t0 + SETTLE);
    // a won; b lost the race, read the block again and plans y afresh.
    let x = writes(&mut a);
    let y = step(&mut b, t0 + SETTLE);
    assert_eq!(
        x.iter().map(|p| (p.node.clone(), cidr_of(p))).collect::<Vec<_>>(),
        [("x".into(), "10.244.0.0/24".into())]
    );
    assert_eq!(
        y.iter().map(|p| (p.node.clone(), cidr_of(p))).collect::<Vec<_>>(),
        [("y".into(), "10.244.1.0/24".into())]
    );
    let holders = RECORD.with(|r| r.borrow().holders());
    assert_eq!(holders.get("10.244.0.0/24").map(String::as_str), Some("x"));
    assert_eq!(holders.get("10.244.1.0/24").map(String::as_str), Some("y"));
}

#[test]
fn a_node_created_again_under_its_name_is_not_given_the_gone_nodes_cidr_by_a_writer_that_missed_the_delete() {
    let t0 = Instant::now();
    let mut a = machine("10.244.0.0/23", 24);
    restore(&mut a, &[], t0);
    a.node_event(Event::Apply(node_uid("x", "uid-1", &[])), t0);
    let w = step(&mut a, t0 + SETTLE);
    assert_eq!(w.iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.0.0/24"]);
    a.written(w[0].clone(), done(true, Ok(())), t0 + SETTLE);
    // b starts now: x (uid-1) holds 10.244.0.0/24, as recorded.
    let mut b = machine("10.244.0.0/23", 24);
    restore(&mut b, &[node_uid("x", "uid-1", &["10.244.0.0/24"])], t0);
    assert!(writes(&mut b).is_empty());
    // x is deleted and created again; a sees both, b only the new object. z joins; a serves it.
    let t1 = t0 + Duration::from_secs(1);
    a.node_event(Event::Delete(node_uid("x", "uid-1", &["10.244.0.0/24"])), t1);
    step(&mut a, t1);
    a.node_event(Event::Apply(node_uid("z", "uid-z", &[])), t1);
    let wz = step(&mut a, t1 + SETTLE);
    assert_eq!(wz.iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.1.0/24"]);
    a.node_event(Event::Apply(node_uid("x", "uid-2", &[])), t1 + SETTLE);
    b.node_event(Event::Apply(node_uid("x", "uid-2", &[])), t1 + SETTLE);
    // b learns nothing else; it must not hand the new x the old x's 10.244.0.0/24 on its own
    // say: whatever it writes, the record gives the new x.
    let wb = step(&mut b, t1 + SETTLE * 2);
    let wa = step(&mut a, t1 + SETTLE * 2);
    let holders = RECORD.with(|r| r.borrow().holders());
    for p in wb.iter().chain(&wa) {
        assert_eq!(p.node_uid.as_deref(), Some("uid-2"));
        assert_eq!(holders.get(&cidr_of(p)).map(String::as_str), Some("x"), "{p:?} not in the record {holders:?}");
    }
    assert_eq!(holders.get("10.244.1.0/24").map(String::as_str), Some("z"));
    assert_eq!(holders.len(), 2, "{holders:?}");
}

#[test]
fn a_refused_write_gives_the_planned_cidr_back_at_once() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/23", 24);
    restore(&mut m, &[], t0);
    m.node_event(Event::Apply(node("a", &[])), t0);
    let w = step(&mut m, t0 + SETTLE);
    assert_eq!(w.iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.0.0/24"]);
    // Meanwhile someone else set a's CIDRs: the API refuses ours with 422.
    let theirs = node("a", &["192.168.7.0/24"]);
    let refused = Failure::Invalid { message: "field is immutable".into(), node: Some(Box::new(theirs)) };
    m.written(w[0].clone(), done(false, Err(refused)), t0 + SETTLE);
    step(&mut m, t0 + SETTLE);
    // Both slices of the pool serve the next two nodes.
    m.node_event(Event::Apply(node("b", &[])), t0 + SETTLE);
    m.node_event(Event::Apply(node("c", &[])), t0 + SETTLE);
    let plans = step(&mut m, t0 + SETTLE * 2);
    let mut got: Vec<String> = plans.iter().map(cidr_of).collect();
    got.sort();
    assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24"]);
    // a's own CIDRs are adopted into the record once the nodes being assigned are written.
    for p in plans {
        m.written(p, done(true, Ok(())), t0 + SETTLE * 2);
    }
    step(&mut m, t0 + SETTLE * 2);
    let holders = RECORD.with(|r| r.borrow().holders());
    assert_eq!(holders.get("192.168.7.0/24").map(String::as_str), Some("a"), "adopted: {holders:?}");
}

fn ciliumnode(name: &str, cidrs: &[&str]) -> kube::api::DynamicObject {
    serde_json::from_value(json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNode",
        "metadata": {"name": name, "resourceVersion": "1"}, "spec": {"ipam": {"podCIDRs": cidrs}}}))
    .unwrap()
}

#[test]
fn with_the_node_target_a_cidr_a_ciliumnode_holds_is_never_handed_to_a_node() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    m.block_event(Event::Init, t0);
    m.block_event(Event::InitDone, t0);
    m.node_event(Event::Init, t0);
    m.node_event(Event::InitDone, t0);
    m.cilium_event(Event::Init, t0);
    m.cilium_event(Event::InitApply(ciliumnode("cilium-only", &["10.244.0.0/24"])), t0);
    m.cilium_event(Event::InitDone, t0);
    m.pools_listed();
    m.node_event(Event::Apply(node("new", &[])), t0);
    assert_eq!(step(&mut m, t0 + SETTLE).iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.1.0/24"]);
}

#[test]
fn an_ipv4_mapped_pod_cidr_is_read_as_go_reads_it() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    // A v1.26 API server accepts it; kube-proxy and flannel read 10.244.0.0/24.
    restore(&mut m, &[node("mapped", &["::ffff:10.244.0.0/120"])], t0);
    assert_eq!(m.allocator().holds("mapped").map(|(_, c)| c.to_vec()), Some(nets(&["10.244.0.0/24"])));
    m.node_event(Event::Apply(node("new", &[])), t0);
    assert_eq!(step(&mut m, t0 + SETTLE).iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.1.0/24"]);
}

/// Issue 19 §11: with `--target ciliumnode` alone the Node carries no `podcidr.io/pool`; after a
/// restart the record says which pool a node's CIDR came from, so a CIDR removed from that pool
/// drains there instead of being judged foreign.
#[test]
fn a_restart_with_the_ciliumnode_target_restores_draining_from_the_record() {
    let t0 = Instant::now();
    let p = PoolSpec { name: "p".into(), ..pool("10.60.0.0/24", 26) };
    let mut first = Machine::new(Config {
        node_target: false,
        ciliumnode_target: true,
        max_backoff: Duration::from_secs(5),
        batch: Duration::ZERO,
        default_pool: None,
    });
    first.set_pools(podcidr_operator::controller::PoolSet { active: vec![p], deleted: vec![] }, t0);
    restore(&mut first, &[node_uid("x", "uid-x", &[])], t0);
    let w = step(&mut first, t0 + SETTLE);
    assert_eq!((w[0].pool.as_str(), cidr_of(&w[0]).as_str()), ("p", "10.60.0.0/26"));
    // Restarted after p was deleted (held by its finalizer): the Node has no annotation.
    let mut m = Machine::new(Config {
        node_target: false,
        ciliumnode_target: true,
        max_backoff: Duration::from_secs(5),
        batch: Duration::ZERO,
        default_pool: None,
    });
    // p's CIDR was replaced while x held a slice of it: only the record says whose it is.
    let moved = PoolSpec { name: "p".into(), ..pool("10.61.0.0/24", 26) };
    m.set_pools(podcidr_operator::controller::PoolSet { active: vec![moved], deleted: vec![] }, t0);
    m.block_event(Event::Init, t0);
    for b in RECORD.with(|r| r.borrow().blocks.values().cloned().collect::<Vec<_>>()) {
        m.block_event(Event::InitApply(b), t0);
    }
    m.block_event(Event::InitDone, t0);
    m.node_event(Event::Init, t0);
    m.node_event(Event::InitApply(node_uid("x", "uid-x", &[])), t0);
    m.node_event(Event::InitDone, t0);
    m.cilium_event(Event::Init, t0);
    m.cilium_event(Event::InitApply(ciliumnode("x", &["10.60.0.0/26"])), t0);
    m.cilium_event(Event::InitDone, t0);
    m.pools_listed();
    assert!(m.allocator().foreign().is_empty(), "{:?}", m.allocator().foreign());
    let st = m.snapshot().stats;
    assert!(st.iter().any(|s| s.pool == "p" && s.draining == 1), "{st:?}");
}

/// A burst of `n` joins, `per_ms` a millisecond, into the pool `cidr` by /24, carried out as the
/// client does: one queue of requests served in order by a token bucket of 20 a second, 30 at
/// once (kcm's defaults), each answered when its token comes. (record writes, simulated seconds
/// until every Node is written).
fn burst(n: usize, per_ms: usize, cidr: &str) -> (usize, f64) {
    RECORD.with(|r| *r.borrow_mut() = Record::default());
    const QPS: f64 = 20.0;
    const BURST: f64 = 30.0;
    let t0 = Instant::now();
    let mut m = Machine::new(Config {
        node_target: true,
        ciliumnode_target: false,
        max_backoff: Duration::from_secs(5),
        batch: podcidr_operator::controller::GAP,
        default_pool: Some(pool(cidr, 24)),
    });
    restore(&mut m, &[], t0);
    let (mut commits, mut written) = (0, 0);
    let mut queue = std::collections::VecDeque::new();
    let mut tokens = BURST;
    for ms in 0..60_000u64 {
        let now = t0 + Duration::from_millis(ms);
        for i in (ms as usize * per_ms..(ms as usize + 1) * per_ms).take_while(|i| *i < n) {
            m.node_event(Event::Apply(node(&format!("n{i:05}"), &[])), now);
        }
        m.tick(now);
        queue.extend(m.take_effects());
        tokens = (tokens + QPS / 1000.0).min(BURST);
        while tokens >= 1.0 {
            let Some(e) = queue.pop_front() else { break };
            match e {
                Effect::Commit(c) => {
                    tokens -= 1.0;
                    commits += 1;
                    let res = RECORD.with(|r| r.borrow_mut().write(c.object.clone()));
                    m.committed(c, res, now);
                }
                Effect::Write(p) => {
                    tokens -= 1.0;
                    written += 1;
                    m.node_event(Event::Apply(node(&p.node, &[&cidr_of(&p)])), now);
                    m.written(p, done(true, Ok(())), now);
                }
                _ => {}
            }
            queue.extend(m.take_effects());
        }
        if written == n {
            return (commits, ms as f64 / 1000.0);
        }
    }
    panic!("{written} of {n} nodes written in 60 s");
}

#[test]
fn a_burst_goes_to_the_record_in_a_few_writes_without_slowing_the_node_writes() {
    let (commits, secs) = burst(256, 1, "10.244.0.0/16");
    // A record write takes a token as a Node write does: a few per block, not one per node.
    assert!(commits <= 6, "{commits} record writes for 256 nodes in one block");
    // Nothing waits for a token it could have used: done when the tokens for the Node and record
    // writes come, counted from the first join's settling, within 0.1 s.
    let floor = SETTLE.as_secs_f64() + (256.0 + commits as f64 - 30.0) / 20.0;
    assert!(secs <= floor + 0.1, "all written after {secs} s; the rate limit allows {floor} s");
}

#[test]
fn a_burst_over_several_blocks_writes_each_block_once_after_the_first_joins() {
    // 1,000 joins over four blocks of 256, 5 and 20 a millisecond (benches/operator_scale.rs
    // creates about 5): the first joins' write, the first block's next with the joins settled
    // meanwhile (and once more for the few that settle just after), then one per other block,
    // each as the Node writes before it run low. Before, a later block was written early with
    // the few joins seen so far (while the first block waited for its next write) and again
    // for the rest: 8 writes at 20 a millisecond.
    for per_ms in [5, 20] {
        let (commits, secs) = burst(1000, per_ms, "10.0.0.0/8");
        assert!(commits <= 6, "{commits} record writes for 1,000 nodes in four blocks, {per_ms} joins a ms");
        let floor = SETTLE.as_secs_f64() + (1000.0 + commits as f64 - 30.0) / 20.0;
        assert!(secs <= floor + 0.1, "all written after {secs} s; the rate limit allows {floor} s");
    }
}

#[test]
fn adoptions_wait_until_the_last_node_write_is_answered() {
    // Each record write takes a token of the client rate limit: one that goes while a Node
    // write still waits for its token delays that Node.
    let t0 = Instant::now();
    let mut m = machine("10.0.0.0/8", 24);
    restore(&mut m, &[node("x", &["10.5.0.0/24"])], t0);
    m.node_event(Event::Apply(node("a", &[])), t0);
    let w = step(&mut m, t0 + SETTLE);
    assert_eq!(w.iter().map(cidr_of).collect::<Vec<_>>(), ["10.0.0.0/24"]);
    let later = t0 + Duration::from_secs(1);
    assert!(step(&mut m, later).is_empty());
    let holders = RECORD.with(|r| r.borrow().holders());
    assert_eq!(holders.get("10.5.0.0/24"), None, "adopted while a's write is in flight: {holders:?}");
    m.written(w[0].clone(), done(true, Ok(())), later);
    step(&mut m, later);
    let holders = RECORD.with(|r| r.borrow().holders());
    assert_eq!(holders.get("10.5.0.0/24").map(String::as_str), Some("x"), "{holders:?}");
    assert_eq!(holders.get("10.0.0.0/24").map(String::as_str), Some("a"), "{holders:?}");
}

#[test]
fn a_block_whose_record_writes_fail_does_not_hold_back_the_others() {
    let t0 = Instant::now();
    let mut m = machine("10.0.0.0/8", 24);
    restore(&mut m, &[node("x", &["10.1.0.0/24"])], t0);
    step(&mut m, t0);
    let later = t0 + Duration::from_secs(1);
    step(&mut m, later);
    assert_eq!(RECORD.with(|r| r.borrow().holders()).get("10.1.0.0/24").map(String::as_str), Some("x"));
    // 25 joins, whose block's write fails (a 500): they wait for its retry.
    for i in 0..25 {
        m.node_event(Event::Apply(node(&format!("a{i:02}"), &[])), later);
    }
    let t1 = later + SETTLE;
    m.tick(t1);
    let commits: Vec<_> = m
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Commit(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(commits.len(), 1);
    let failed = CommitResult::Retry { code: "500".into(), message: "etcdserver: request timed out".into() };
    m.committed(commits[0].clone(), failed, t1);
    // x is deleted meanwhile: its entry leaves the record (and its CIDR is free) at once, not
    // after the other block's writes succeed.
    m.node_event(Event::Delete(node("x", &["10.1.0.0/24"])), t1);
    step(&mut m, t1);
    assert_eq!(RECORD.with(|r| r.borrow().holders()).get("10.1.0.0/24"), None);
}

#[test]
fn record_writes_held_back_never_have_the_executor_spin() {
    let t0 = Instant::now();
    let mut m = machine("10.244.0.0/16", 24);
    restore(&mut m, &[], t0);
    m.node_event(Event::Apply(node("a", &[])), t0);
    let now = t0 + SETTLE;
    assert_eq!(step(&mut m, now).len(), 1);
    // A CIDR someone else set is to be adopted, which waits while "b" is being assigned.
    let later = now + Duration::from_millis(100);
    m.node_event(Event::Apply(node("x", &["10.244.7.0/24"])), later);
    m.node_event(Event::Apply(node("b", &[])), later);
    // The executor sleeps until b is due; a time already passed would have it loop without
    // sleeping (and starve the lease renewals of the process).
    let at = later + Duration::from_millis(1);
    let next = m.tick(at);
    assert!(next.is_some_and(|t| t > at), "woken {:?} too early", next.map(|t| at - t));
    assert!(effects(&mut m).is_empty());
}
