//! The controller's decisions (src/operator/controller.rs `Machine`), without HTTP: watch
//! events, write outcomes and ticks go in with the time the test gives; the writes, Events and
//! readiness it decides come out. Each test says what a user would then see.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher::Event;
use podcidr::operator::allocator::{FamilySpec, PoolSpec};
use podcidr::operator::controller::{Config, Effect, Machine, SETTLE};
use podcidr::operator::targets::{Failure, Outcome, Plan};
use serde_json::json;
use std::time::{Duration, Instant};

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

/// The initial lists: these Nodes exist, and the pools are listed.
fn restore(m: &mut Machine, nodes: &[Node], now: Instant) {
    m.node_event(Event::Init, now);
    for n in nodes {
        m.node_event(Event::InitApply(n.clone()), now);
    }
    m.node_event(Event::InitDone, now);
    m.pools_listed();
}

fn writes(m: &mut Machine) -> Vec<Plan> {
    m.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Write(p) => Some(p),
            _ => None,
        })
        .collect()
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
    m.node_event(Event::Init, t0);
    m.node_event(Event::InitApply(node("a", &[])), t0);
    assert!(m.tick(t0 + Duration::from_secs(60)).is_none());
    m.node_event(Event::InitDone, t0);
    assert!(m.tick(t0 + Duration::from_secs(60)).is_none(), "pools are not listed yet");
    assert!(writes(&mut m).is_empty());
    m.pools_listed();
    assert!(m.take_effects().iter().any(|e| matches!(e, Effect::Ready)));
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
    assert!(m.allocator().holds("a").is_none());
    m.tick(t1);
    let w2 = writes(&mut m);
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
    m.tick(t0 + SETTLE);
    assert_eq!(writes(&mut m).iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.0.0/24"]);
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
    let effects = m.take_effects();
    assert!(effects.iter().any(|e| matches!(e, Effect::Warn(w) if w.reason == "CIDRNotAvailable")), "{effects:?}");
    assert_eq!(m.snapshot().waiting, [("b".to_string(), vec!["default".to_string()])]);
    // Long before b's backoff ends, a leaves: b is planned on the next tick.
    let t1 = t0 + SETTLE + Duration::from_millis(1);
    m.node_event(Event::Delete(node("a", &["10.244.0.0/24"])), t1);
    assert_eq!(m.tick(t1), None);
    assert_eq!(writes(&mut m).iter().map(cidr_of).collect::<Vec<_>>(), ["10.244.0.0/24"]);
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
    let effects = m.take_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Assigned { node, seconds } if node == "a" && *seconds >= 1.0)),
        "{effects:?}"
    );
    assert_eq!(m.tick(t1 + Duration::from_secs(10)), None, "nothing left to do");
}
