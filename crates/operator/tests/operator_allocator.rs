//! The operator's allocator (src/operator/allocator.rs): worked examples of each rule, then
//! property tests against a brute-force model that enumerates every slice.

use ipnet::IpNet;
use podcidr_operator::allocator::{
    Allocator, Duplicate, Family, FamilySpec, NotAvailable, Occupancy, PoolSpec, PoolStats,
};
use podcidr_operator::selector::{Operator, Requirement, Selector};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

fn fam(cidrs: &[&str], mask: u8) -> Option<FamilySpec> {
    Some(FamilySpec { cidrs: nets(cidrs), mask })
}

fn pool(name: &str, selector: Option<Selector>, ipv4: Option<FamilySpec>, ipv6: Option<FamilySpec>) -> PoolSpec {
    PoolSpec { name: name.into(), selector, ipv4, ipv6 }
}

fn v4pool(name: &str, cidrs: &[&str], mask: u8) -> PoolSpec {
    pool(name, None, fam(cidrs, mask), None)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn with_pools(pools: Vec<PoolSpec>) -> Allocator {
    let mut a = Allocator::new();
    let problems = a.set_pools(pools);
    assert!(problems.is_empty(), "{problems:?}");
    a
}

fn alloc(a: &mut Allocator, node: &str) -> Vec<String> {
    a.allocate(node, &no_labels()).unwrap().cidrs.iter().map(|c| c.to_string()).collect()
}

fn stats(a: &Allocator, pool: &str, family: Family) -> PoolStats {
    a.pool_stats().into_iter().find(|s| s.pool == pool && s.family == family).unwrap()
}

fn bounds(n: &IpNet) -> (u128, u128) {
    match n {
        IpNet::V4(n) => (u32::from(n.network()) as u128, u32::from(n.broadcast()) as u128),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    Family::of(a) == Family::of(b) && {
        let (a, b) = (bounds(a), bounds(b));
        a.0 <= b.1 && b.0 <= a.1
    }
}

fn contains(outer: &IpNet, inner: &IpNet) -> bool {
    Family::of(outer) == Family::of(inner) && outer.contains(inner)
}

// ---------------------------------------------------------------------------------------------
// Worked examples

#[test]
fn next_fit_does_not_hand_out_a_slice_just_freed() {
    let mut a = with_pools(vec![v4pool("default", &["10.244.0.0/16"], 24)]);
    assert_eq!(alloc(&mut a, "a"), ["10.244.0.0/24"]);
    assert_eq!(alloc(&mut a, "b"), ["10.244.1.0/24"]);
    assert_eq!(alloc(&mut a, "c"), ["10.244.2.0/24"]);
    assert_eq!(a.release("b"), nets(&["10.244.1.0/24"]));
    assert_eq!(alloc(&mut a, "d"), ["10.244.3.0/24"]);
    assert_eq!(a.holds("d"), Some(("default", nets(&["10.244.3.0/24"]).as_slice())));
}

#[test]
fn next_fit_wraps_across_the_pools_cidrs_in_their_order() {
    // Given order, not address order.
    let mut a = with_pools(vec![v4pool("p", &["10.1.0.0/30", "10.0.0.0/30"], 31)]);
    assert_eq!(alloc(&mut a, "a"), ["10.1.0.0/31"]);
    assert_eq!(alloc(&mut a, "b"), ["10.1.0.2/31"]);
    assert_eq!(alloc(&mut a, "c"), ["10.0.0.0/31"]);
    a.release("a");
    assert_eq!(alloc(&mut a, "d"), ["10.0.0.2/31"]);
    // Full: wraps to the first CIDR, where a's slice is the only free one.
    assert_eq!(alloc(&mut a, "e"), ["10.1.0.0/31"]);
    let err = a.allocate("f", &no_labels()).unwrap_err();
    assert_eq!(
        err.message,
        "no pool can serve node f: no free /31 in pool p (ipv4: 4/4 allocated from 10.1.0.0/30, 10.0.0.0/30)"
    );
    assert_eq!(err.candidates, ["p"]);
}

#[test]
fn dual_stack_gives_one_of_each_and_nothing_partially() {
    let mut a = with_pools(vec![pool("ds", None, fam(&["10.0.0.0/30"], 31), fam(&["fd00::/48"], 64))]);
    assert_eq!(alloc(&mut a, "a"), ["10.0.0.0/31", "fd00::/64"]);
    assert_eq!(alloc(&mut a, "b"), ["10.0.0.2/31", "fd00:0:0:1::/64"]);
    let err = a.allocate("c", &no_labels()).unwrap_err();
    assert!(err.message.contains("no free /31 in pool ds (ipv4: 2/2 allocated from 10.0.0.0/30)"), "{err}");
    assert_eq!(a.holds("c"), None);
    assert_eq!(stats(&a, "ds", Family::V6).allocated, 2);
    assert_eq!(stats(&a, "ds", Family::V6).capacity, 65536);
}

#[test]
fn pool_precedence_most_requirements_then_name_selectorless_last() {
    let zone_a = Selector::labels([("zone", "a")]);
    let node1 = Selector::labels([("zone", "a"), ("kubernetes.io/hostname", "node-1")]);
    let zone_in = Selector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![Requirement { key: "zone".into(), operator: Operator::In, values: vec!["a".into()] }],
    };
    let mut a = with_pools(vec![
        pool("default", None, fam(&["10.0.0.0/24"], 24), None),
        pool("everything", Some(Selector::default()), fam(&["10.1.0.0/24"], 24), None),
        pool("zone-a", Some(zone_a), fam(&["10.2.0.0/24"], 24), None),
        pool("b-zone-in", Some(zone_in), fam(&["10.3.0.0/24"], 24), None),
        pool("node-1", Some(node1), fam(&["10.4.0.0/24"], 24), None),
    ]);
    let pick = |a: &mut Allocator, node: &str, l: &[(&str, &str)]| a.allocate(node, &labels(l)).unwrap().pool;
    let mut fresh = a.clone();
    // A tie on one requirement: name order.
    assert_eq!(pick(&mut fresh, "t1", &[("zone", "a"), ("kubernetes.io/hostname", "node-2")]), "b-zone-in");
    // An empty selector is a selector with no requirement: before the selector-less pool.
    assert_eq!(pick(&mut fresh, "t2", &[("zone", "b")]), "everything");
    // Each pool has one slice: the winner full, the next candidate serves.
    let node1 = [("zone", "a"), ("kubernetes.io/hostname", "node-1")];
    assert_eq!(pick(&mut a, "n1", &node1), "node-1");
    assert_eq!(pick(&mut a, "n2", &node1), "b-zone-in");
    assert_eq!(pick(&mut a, "n3", &node1), "zone-a");
    assert_eq!(pick(&mut a, "n4", &node1), "everything");
    assert_eq!(pick(&mut a, "n5", &node1), "default");
    let err = a.allocate("n8", &labels(&[("zone", "a"), ("kubernetes.io/hostname", "node-1")])).unwrap_err();
    assert_eq!(err.candidates, ["node-1", "b-zone-in", "zone-a", "everything", "default"]);
    assert!(err.message.contains("no free /24 in pool node-1 (ipv4: 1/1 allocated from 10.4.0.0/24)"), "{err}");
    assert!(err.message.contains("no free /24 in pool default (ipv4: 1/1 allocated from 10.0.0.0/24)"), "{err}");
}

#[test]
fn no_matching_pool_says_so() {
    let mut a =
        with_pools(vec![pool("zone-a", Some(Selector::labels([("zone", "a")])), fam(&["10.0.0.0/16"], 24), None)]);
    let err = a.allocate("n", &labels(&[("zone", "b")])).unwrap_err();
    assert_eq!(err.message, "no pool can serve node n: no pool's nodeSelector matches its labels (pools: zone-a)");
    let err = Allocator::new().allocate("n", &no_labels()).unwrap_err();
    assert_eq!(err.message, "no pool can serve node n: no pools are configured");
}

#[test]
fn the_ciliumnodeconfig_example_gives_node_1_exactly_its_cidr() {
    let mut a = with_pools(vec![
        pool("node-1", Some(Selector::labels([("kubernetes.io/hostname", "node-1")])), fam(&["10.0.1.0/24"], 24), None),
        pool("node-2", Some(Selector::labels([("kubernetes.io/hostname", "node-2")])), fam(&["10.0.2.0/24"], 24), None),
    ]);
    let got = a.allocate("node-1", &labels(&[("kubernetes.io/hostname", "node-1")])).unwrap();
    assert_eq!((got.pool.as_str(), got.cidrs), ("node-1", nets(&["10.0.1.0/24"])));
    let got = a.allocate("node-2", &labels(&[("kubernetes.io/hostname", "node-2")])).unwrap();
    assert_eq!((got.pool.as_str(), got.cidrs), ("node-2", nets(&["10.0.2.0/24"])));
}

#[test]
fn a_foreign_cidr_over_two_slices_blocks_both_and_the_operator_goes_on() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"], 24)]);
    let occ = a.occupy("old", &nets(&["10.0.0.0/23", "192.168.0.0/24"]));
    assert_eq!(occ, vec![(net("10.0.0.0/23"), Occupancy::Foreign), (net("192.168.0.0/24"), Occupancy::Foreign)]);
    assert_eq!(a.holds("old"), Some(("", nets(&["10.0.0.0/23", "192.168.0.0/24"]).as_slice())));
    assert_eq!(a.foreign(), vec![("old".to_string(), net("10.0.0.0/23")), ("old".to_string(), net("192.168.0.0/24"))]);
    assert_eq!(alloc(&mut a, "new"), ["10.0.2.0/24"]);
    assert!(a.allocate("more", &no_labels()).is_err());
    // Full, and one node of the pool: the foreign /23 is no node of it.
    let st = stats(&a, "p", Family::V4);
    assert_eq!((st.capacity, st.allocated, st.free), (3, 1, 0));
}

#[test]
fn restore_adopts_cidrs_inside_a_pool_idempotently() {
    let mut a = with_pools(vec![v4pool("default", &["10.244.0.0/16"], 24)]);
    let adopted = Occupancy::Adopted { pool: "default".into() };
    assert_eq!(a.occupy("a", &nets(&["10.244.0.0/24"])), vec![(net("10.244.0.0/24"), adopted.clone())]);
    // Host bits are cleared, as the API server would not have them anyway.
    assert_eq!(a.occupy("a", &nets(&["10.244.0.7/24"])), vec![(net("10.244.0.0/24"), adopted)]);
    assert_eq!(a.holds("a"), Some(("default", nets(&["10.244.0.0/24"]).as_slice())));
    assert_eq!(stats(&a, "default", Family::V4).allocated, 1);
    // A node that holds CIDRs gets them back from allocate.
    assert_eq!(alloc(&mut a, "a"), ["10.244.0.0/24"]);
    assert_eq!(alloc(&mut a, "b"), ["10.244.1.0/24"]);
}

/// What `podcidr-operator status` lists under Duplicates: the same CIDR twice, and each CIDR
/// nested in (or overlapping) another node's; a node's own overlapping CIDRs are no duplicate.
#[test]
fn duplicates_lists_cidrs_held_twice_and_overlaps_between_nodes() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/16"], 24)]);
    a.occupy("wide", &nets(&["10.0.0.0/22"]));
    a.occupy("b", &nets(&["10.0.1.0/24"]));
    a.occupy("c", &nets(&["10.0.3.0/24"]));
    a.occupy("d", &nets(&["10.0.9.0/24", "10.0.8.0/23"]));
    a.occupy("e", &nets(&["10.0.20.0/24"]));
    a.occupy("f", &nets(&["10.0.20.0/24"]));
    a.occupy("g", &nets(&["fd00::/64"]));
    let wide = Some((net("10.0.0.0/22"), vec!["wide".to_string()]));
    let dup = |c: &str, n: &[&str], overlaps| Duplicate {
        cidr: net(c),
        nodes: n.iter().map(|s| s.to_string()).collect(),
        overlaps,
    };
    assert_eq!(
        a.duplicates(),
        vec![
            dup("10.0.1.0/24", &["b"], wide.clone()),
            dup("10.0.3.0/24", &["c"], wide),
            dup("10.0.20.0/24", &["e", "f"], None),
        ]
    );
    a.release("wide");
    a.release("e");
    assert_eq!(a.duplicates(), vec![]);
}

#[test]
fn conflicting_observations_are_reported_and_both_stay_occupied() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/22"], 24)]);
    a.occupy("a", &nets(&["10.0.1.0/24"]));
    assert_eq!(
        a.occupy("b", &nets(&["10.0.0.0/23"])),
        vec![(net("10.0.0.0/23"), Occupancy::Conflict { holder: "a".into() })]
    );
    assert_eq!(
        a.occupy("c", &nets(&["10.0.1.0/24"])),
        vec![(net("10.0.1.0/24"), Occupancy::Conflict { holder: "a".into() })]
    );
    assert_eq!(alloc(&mut a, "d"), ["10.0.2.0/24"]);
    a.release("b");
    a.release("a");
    // c still holds 10.0.1.0/24; 10.0.0.0/24 is free again.
    assert_eq!(alloc(&mut a, "e"), ["10.0.3.0/24"]);
    assert_eq!(alloc(&mut a, "f"), ["10.0.0.0/24"]);
    assert!(a.allocate("g", &no_labels()).is_err());
    a.release("c");
    assert_eq!(alloc(&mut a, "g"), ["10.0.1.0/24"]);
}

#[test]
fn huge_pools_work_with_memory_for_nodes_only() {
    let mut a = with_pools(vec![
        pool("v6-32", Some(Selector::labels([("p", "1")])), None, fam(&["2001:db8::/32"], 64)),
        pool("v6-8", Some(Selector::labels([("p", "2")])), None, fam(&["fd00::/8"], 64)),
        pool("v4-8", Some(Selector::labels([("p", "3")])), fam(&["10.0.0.0/8"], 28), None),
    ]);
    for i in 0..1000 {
        a.allocate(&format!("a{i}"), &labels(&[("p", "1")])).unwrap();
        a.allocate(&format!("b{i}"), &labels(&[("p", "2")])).unwrap();
        a.allocate(&format!("c{i}"), &labels(&[("p", "3")])).unwrap();
    }
    assert_eq!(a.holds("a999").unwrap().1, nets(&["2001:db8:0:3e7::/64"]));
    assert_eq!(a.holds("b999").unwrap().1, nets(&["fd00:0:0:3e7::/64"]));
    assert_eq!(a.holds("c999").unwrap().1, nets(&["10.0.62.112/28"]));
    assert_eq!(stats(&a, "v6-32", Family::V6).capacity, 1 << 32);
    assert_eq!(stats(&a, "v6-8", Family::V6).capacity, 1 << 56);
    assert_eq!(stats(&a, "v6-8", Family::V6).free, (1 << 56) - 1000);
    assert_eq!(stats(&a, "v4-8", Family::V4).capacity, 1 << 20);
    let mut a = with_pools(vec![pool("all", None, fam(&["0.0.0.0/0"], 32), fam(&["::/0"], 128))]);
    assert_eq!(stats(&a, "all", Family::V4).capacity, 1 << 32);
    assert_eq!(stats(&a, "all", Family::V6).capacity, u128::MAX, "2^128 saturates");
    assert_eq!(alloc(&mut a, "d"), ["0.0.0.0/32", "::/128"]);
    let mut a = with_pools(vec![pool("one", None, None, fam(&["::/1"], 1))]);
    assert_eq!(alloc(&mut a, "d"), ["::/1"]);
    assert!(a.allocate("e", &no_labels()).is_err());
    assert_eq!((stats(&a, "one", Family::V6).capacity, stats(&a, "one", Family::V6).allocated), (1, 1));
}

#[test]
fn the_last_ipv4_and_ipv6_slices_are_handed_out() {
    let mut a = with_pools(vec![pool(
        "top",
        None,
        fam(&["255.255.255.252/30"], 31),
        fam(&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"], 127),
    )]);
    assert_eq!(alloc(&mut a, "a"), ["255.255.255.252/31", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/127"]);
    assert_eq!(alloc(&mut a, "b"), ["255.255.255.254/31", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"]);
    assert!(a.allocate("c", &no_labels()).is_err());
    a.release("a");
    assert_eq!(alloc(&mut a, "c"), ["255.255.255.252/31", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/127"]);
}

#[test]
fn adding_a_cidr_serves_at_once() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/24"], 24)]);
    alloc(&mut a, "a");
    assert!(a.allocate("b", &no_labels()).is_err());
    assert!(a.set_pools(vec![v4pool("p", &["10.0.0.0/24", "10.0.1.0/24"], 24)]).is_empty());
    assert_eq!(alloc(&mut a, "b"), ["10.0.1.0/24"]);
}

#[test]
fn a_removed_cidr_in_use_drains_until_its_last_node_is_gone() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/23", "10.1.0.0/23"], 24)]);
    for n in ["a", "b", "c"] {
        alloc(&mut a, n);
    }
    assert!(a.set_pools(vec![v4pool("p", &["10.1.0.0/23"], 24)]).is_empty());
    assert_eq!(a.draining(), vec![("p", net("10.0.0.0/23"))]);
    let st = stats(&a, "p", Family::V4);
    assert_eq!(
        (st.cidrs.clone(), st.capacity, st.allocated, st.free, st.draining),
        (nets(&["10.1.0.0/23"]), 2, 1, 1, 2)
    );
    assert_eq!(alloc(&mut a, "d"), ["10.1.1.0/24"]);
    assert!(a.allocate("e", &no_labels()).is_err(), "no new slice from a draining CIDR");
    a.release("a");
    assert_eq!(stats(&a, "p", Family::V4).draining, 1);
    assert!(a.allocate("e", &no_labels()).is_err());
    a.release("b");
    assert!(a.draining().is_empty());
    assert_eq!(stats(&a, "p", Family::V4).draining, 0);
    // Removing a CIDR nobody uses just removes it.
    assert!(a.set_pools(vec![v4pool("p", &["10.1.0.0/23", "10.2.0.0/24"], 24)]).is_empty());
    assert!(a.set_pools(vec![v4pool("p", &["10.1.0.0/23"], 24)]).is_empty());
    assert!(a.draining().is_empty());
}

#[test]
fn a_deleted_pool_drains_and_a_readded_one_hands_out_no_duplicate() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/30"], 31)]);
    alloc(&mut a, "a");
    assert!(a.set_pools(vec![]).is_empty());
    let st = stats(&a, "p", Family::V4);
    assert_eq!((st.cidrs.len(), st.capacity, st.draining), (0, 0, 1));
    assert!(a.allocate("b", &no_labels()).is_err());
    // Re-added under another name, with another mask.
    assert!(a.set_pools(vec![v4pool("q", &["10.0.0.0/30"], 32)]).is_empty());
    assert_eq!(alloc(&mut a, "b"), ["10.0.0.2/32"]);
    assert_eq!(alloc(&mut a, "c"), ["10.0.0.3/32"]);
    assert!(a.allocate("d", &no_labels()).is_err());
    a.release("a");
    assert_eq!(alloc(&mut a, "d"), ["10.0.0.0/32"]);
    assert_eq!(a.pool_stats().iter().map(|s| s.pool.as_str()).collect::<Vec<_>>(), ["q"]);
}

#[test]
fn a_family_removed_and_added_back_with_another_mask_hands_out_aligned_slices() {
    let mut a = with_pools(vec![pool("p", None, fam(&["10.0.0.0/16"], 24), fam(&["fd00::/48"], 64))]);
    alloc(&mut a, "a");
    alloc(&mut a, "b");
    assert!(a.set_pools(vec![pool("p", None, None, fam(&["fd00::/48"], 64))]).is_empty());
    assert_eq!(a.draining(), vec![("p", net("10.0.0.0/16"))]);
    // Issue 19 point 7: while nodes hold /24s of it, the family comes back only as /24.
    let as22 = pool("p", None, fam(&["10.0.0.0/16"], 22), fam(&["fd00::/48"], 64));
    let refused = a.set_pools(vec![as22.clone()]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].message.contains("nodes still hold CIDRs of this family with the old maskSize"),
        "{}",
        refused[0]
    );
    assert_eq!(a.pools()[0].ipv4, None, "the accepted spec stays");
    a.release("a");
    a.release("b");
    assert!(a.set_pools(vec![as22]).is_empty());
    assert_eq!(alloc(&mut a, "c"), ["10.0.0.0/22", "fd00:0:0:2::/64"]);
}

#[test]
fn a_mask_change_is_refused_and_the_old_spec_kept() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/16"], 24)]);
    let problems = a.set_pools(vec![v4pool("p", &["10.0.0.0/16", "10.1.0.0/16"], 25)]);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pool, "p");
    assert_eq!(
        problems[0].message,
        format!("ipv4: {} (25 was requested, the pool has 24)", podcidr_operator::rules::MSG_MASK_IMMUTABLE)
    );
    assert_eq!(stats(&a, "p", Family::V4).cidrs, nets(&["10.0.0.0/16"]));
    assert_eq!(alloc(&mut a, "a"), ["10.0.0.0/24"]);
}

#[test]
fn overlapping_pools_are_refused_the_accepted_one_stays() {
    let mut a = with_pools(vec![v4pool("a", &["10.0.0.0/16"], 24)]);
    let problems = a.set_pools(vec![v4pool("a", &["10.0.0.0/16"], 24), v4pool("b", &["10.0.128.0/17"], 24)]);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pool, "b");
    assert!(
        problems[0].message.contains("ipv4: 10.0.128.0/17 overlaps 10.0.0.0/16 of pool a: pools must not overlap"),
        "{}",
        problems[0]
    );
    assert_eq!(a.pools().len(), 1);
}

#[test]
fn validate_says_what_to_do_instead() {
    let cases: Vec<(PoolSpec, &str)> = vec![
        (
            v4pool("p", &["10.0.0.1/16"], 24),
            "ipv4: a CIDR must be written as its network address, without host bits: e.g. 10.244.0.0/16, not 10.244.1.0/16 (10.0.0.1/16: use 10.0.0.0/16)",
        ),
        (
            v4pool("p", &["10.0.0.0/16"], 8),
            "ipv4: maskSize must be at least each CIDR's prefix length (a node's CIDR lies inside a pool CIDR): raise maskSize or list a larger CIDR, e.g. 10.244.0.0/16 with maskSize 24 (10.0.0.0/16 with maskSize 8)",
        ),
        (v4pool("p", &["10.0.0.0/16"], 33), "ipv4: maskSize 33: must be between 1 and 32"),
        (pool("p", None, None, fam(&["fd00::/8"], 129)), "ipv6: maskSize 129: must be between 1 and 128"),
        (v4pool("p", &[], 24), "ipv4: cidrs needs at least one CIDR"),
        (
            v4pool("p", &["10.0.0.0/16", "10.0.1.0/24"], 24),
            "ipv4: the CIDRs of a pool must not overlap or repeat: keep only the larger one, or list disjoint CIDRs (10.0.0.0/16 and 10.0.1.0/24)",
        ),
        (
            v4pool("p", &["fd00::/8"], 24),
            "ipv4: ipv4.cidrs takes IPv4 CIDRs such as 10.244.0.0/16: put IPv6 CIDRs under ipv6 (fd00::/8)",
        ),
        (pool("p", None, None, None), "a pool needs ipv4, ipv6 or both"),
    ];
    for (spec, want) in cases {
        let problems = Allocator::validate(std::slice::from_ref(&spec));
        assert_eq!(problems.len(), 1, "{spec:?}");
        assert!(problems[0].message.contains(want), "{} should contain {want}", problems[0].message);
        // set_pools refuses the same.
        let mut a = Allocator::new();
        assert_eq!(a.set_pools(vec![spec]), problems);
        assert!(a.pools().is_empty());
    }
    let both = Allocator::validate(&[v4pool("a", &["10.0.0.0/8"], 24), v4pool("b", &["10.1.0.0/16"], 24)]);
    assert_eq!(both.iter().map(|p| p.pool.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(Allocator::validate(&[v4pool("a", &["10.0.0.0/8"], 24), v4pool("b", &["11.0.0.0/8"], 24)]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The model: every slice enumerated, every rule written out the slow way.

/// Slices of `mask` in `cidr`, in address order (small CIDRs only).
fn slices(cidr: &IpNet, mask: u8) -> Vec<IpNet> {
    cidr.subnets(mask).unwrap().collect()
}

#[derive(Clone, Debug)]
struct MPool {
    spec: PoolSpec,
    cursor: [Option<IpNet>; 2],
}

#[derive(Default, Debug)]
struct Model {
    pools: BTreeMap<String, MPool>,
    /// (pool, family, cidr, mask)
    draining: Vec<(String, Family, IpNet, u8)>,
    holders: BTreeMap<String, (String, Vec<IpNet>)>,
}

fn fi(f: Family) -> usize {
    if f == Family::V4 { 0 } else { 1 }
}

impl Model {
    fn all_held(&self) -> impl Iterator<Item = (&String, &IpNet)> {
        self.holders.iter().flat_map(|(n, (_, cs))| cs.iter().map(move |c| (n, c)))
    }

    fn is_free(&self, s: &IpNet) -> bool {
        !self.all_held().any(|(_, c)| overlap(c, s))
    }

    fn pool_of(&self, c: &IpNet) -> Option<String> {
        for p in self.pools.values() {
            if let Some(f) = p.spec.family(Family::of(c))
                && f.cidrs.iter().any(|x| contains(x, c))
            {
                return Some(p.spec.name.clone());
            }
        }
        self.draining.iter().find(|d| contains(&d.2, c)).map(|d| d.0.clone())
    }

    fn next_fit(&self, p: &MPool, family: Family) -> Option<IpNet> {
        let f = p.spec.family(family)?;
        let order: Vec<IpNet> = f.cidrs.iter().flat_map(|c| slices(c, f.mask)).collect();
        let start = match p.cursor[fi(family)].and_then(|c| order.iter().position(|s| *s == c)) {
            Some(i) => i + 1,
            None => 0,
        };
        (0..order.len()).map(|k| order[(start + k) % order.len()]).find(|s| self.is_free(s))
    }

    fn candidates(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut c: Vec<(bool, std::cmp::Reverse<usize>, String)> = self
            .pools
            .values()
            .filter(|p| p.spec.selector.as_ref().is_none_or(|s| s.matches(labels)))
            .map(|p| {
                let s = &p.spec.selector;
                (s.is_none(), std::cmp::Reverse(s.as_ref().map_or(0, |s| s.requirements())), p.spec.name.clone())
            })
            .collect();
        c.sort();
        c.into_iter().map(|x| x.2).collect()
    }

    fn allocate(&mut self, node: &str, labels: &BTreeMap<String, String>) -> Option<(String, Vec<IpNet>)> {
        if let Some((p, cs)) = self.holders.get(node) {
            return Some((p.clone(), cs.clone()));
        }
        for name in self.candidates(labels) {
            let p = &self.pools[&name];
            let mut got = Vec::new();
            let mut ok = true;
            for family in [Family::V4, Family::V6] {
                if p.spec.family(family).is_some() {
                    match self.next_fit(p, family) {
                        Some(s) => got.push((family, s)),
                        None => ok = false,
                    }
                }
            }
            if ok {
                let p = self.pools.get_mut(&name).unwrap();
                for (family, s) in &got {
                    p.cursor[fi(*family)] = Some(*s);
                }
                let cidrs: Vec<IpNet> = got.into_iter().map(|g| g.1).collect();
                self.holders.insert(node.to_string(), (name.clone(), cidrs.clone()));
                return Some((name, cidrs));
            }
        }
        None
    }

    /// Each CIDR's occupancy, with every holder a conflict may name.
    fn occupy(&mut self, node: &str, cidrs: &[IpNet]) -> Vec<(IpNet, Occupancy, Vec<String>)> {
        let mut out = Vec::new();
        for c in cidrs {
            let c = c.trunc();
            let others: Vec<String> =
                self.all_held().filter(|(n, h)| n.as_str() != node && overlap(h, &c)).map(|(n, _)| n.clone()).collect();
            let conflict = others.first().cloned();
            let pool = self.pool_of(&c);
            let h = self.holders.entry(node.to_string()).or_insert_with(|| (String::new(), Vec::new()));
            if !h.1.contains(&c) {
                h.1.push(c);
            }
            if h.0.is_empty()
                && let Some(p) = &pool
            {
                h.0 = p.clone();
            }
            let occ = match (conflict, pool) {
                (Some(holder), _) => Occupancy::Conflict { holder },
                (None, Some(pool)) => Occupancy::Adopted { pool },
                (None, None) => Occupancy::Foreign,
            };
            out.push((c, occ, others));
        }
        out
    }

    fn forget_idle(&mut self) {
        let held: Vec<IpNet> = self.all_held().map(|(_, c)| *c).collect();
        self.draining.retain(|d| held.iter().any(|h| overlap(h, &d.2)));
    }

    fn release(&mut self, node: &str) {
        self.holders.remove(node);
        self.forget_idle();
    }

    /// The rules of set_pools, written out: problems only as a count per pool name.
    fn set_pools(&mut self, pools: Vec<PoolSpec>) -> Vec<String> {
        let mut refused = Vec::new();
        let mut accepted: BTreeMap<String, PoolSpec> = BTreeMap::new();
        for p in &pools {
            if let Some(old) = self.pools.get(&p.name) {
                accepted.insert(p.name.clone(), old.spec.clone());
            }
        }
        for p in pools {
            let mut bad = !Allocator::validate(std::slice::from_ref(&p)).is_empty();
            for f in [Family::V4, Family::V6] {
                let old = self.pools.get(&p.name).and_then(|o| o.spec.family(f));
                if let (Some(o), Some(n)) = (old, p.family(f)) {
                    bad |= o.mask != n.mask;
                }
                // A family added back keeps the mask of the slices nodes still hold of it.
                if let (None, Some(n)) = (old, p.family(f)) {
                    bad |= self.draining.iter().any(|d| d.0 == p.name && d.1 == f && d.3 != n.mask);
                }
            }
            for (name, q) in &accepted {
                if *name != p.name {
                    for f in [Family::V4, Family::V6] {
                        if let (Some(a), Some(b)) = (p.family(f), q.family(f)) {
                            bad |= a.cidrs.iter().any(|x| b.cidrs.iter().any(|y| overlap(x, y)));
                        }
                    }
                }
            }
            if bad {
                refused.push(p.name.clone());
            } else {
                accepted.insert(p.name.clone(), p);
            }
        }
        let held: Vec<IpNet> = self.all_held().map(|(_, c)| *c).collect();
        for (name, old) in &self.pools {
            for f in [Family::V4, Family::V6] {
                let Some(ofs) = old.spec.family(f) else { continue };
                let kept = accepted.get(name).and_then(|p| p.family(f));
                for c in &ofs.cidrs {
                    if !kept.is_some_and(|k| k.cidrs.contains(c)) && held.iter().any(|h| overlap(h, c)) {
                        self.draining.push((name.clone(), f, *c, ofs.mask));
                    }
                }
            }
        }
        let old = std::mem::take(&mut self.pools);
        for (name, spec) in accepted {
            let cursor = old.get(&name).map(|p| p.cursor).unwrap_or_default();
            self.pools.insert(name, MPool { spec, cursor });
        }
        let pools = &self.pools;
        self.draining.retain(|d| {
            !pools.values().any(|p| p.spec.family(d.1).is_some_and(|f| f.cidrs.iter().any(|c| contains(c, &d.2))))
        });
        self.forget_idle();
        let unassigned: Vec<String> = self.holders.iter().filter(|h| h.1.0.is_empty()).map(|h| h.0.clone()).collect();
        for n in unassigned {
            if let Some(p) = self.holders[&n].1.clone().iter().find_map(|c| self.pool_of(c)) {
                self.holders.get_mut(&n).unwrap().0 = p;
            }
        }
        refused
    }

    fn count_blocked(&self, cidr: &IpNet, mask: u8) -> u128 {
        slices(cidr, mask).iter().filter(|s| !self.is_free(s)).count() as u128
    }

    fn stats(&self) -> Vec<PoolStats> {
        let mut names: Vec<String> = self.pools.keys().cloned().collect();
        names.extend(self.draining.iter().map(|d| d.0.clone()));
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            for f in [Family::V4, Family::V6] {
                let draining: u128 = self
                    .draining
                    .iter()
                    .filter(|d| d.0 == name && d.1 == f)
                    .map(|d| self.count_blocked(&d.2, d.3))
                    .sum();
                let dmask = self.draining.iter().find(|d| d.0 == name && d.1 == f).map(|d| d.3);
                match self.pools.get(&name).and_then(|p| p.spec.family(f)) {
                    Some(fs) => {
                        let capacity: u128 = fs.cidrs.iter().map(|c| slices(c, fs.mask).len() as u128).sum();
                        let blocked: u128 = fs.cidrs.iter().map(|c| self.count_blocked(c, fs.mask)).sum();
                        let inside = |c: &IpNet| {
                            Family::of(c) == f
                                && fs
                                    .cidrs
                                    .iter()
                                    .any(|pc| pc.contains(&c.network()) && pc.prefix_len() <= c.prefix_len())
                        };
                        let allocated =
                            self.holders.values().filter(|(p, cs)| *p == name && cs.iter().any(inside)).count() as u128;
                        out.push(PoolStats {
                            pool: name.clone(),
                            family: f,
                            cidrs: fs.cidrs.clone(),
                            mask: fs.mask,
                            capacity,
                            allocated,
                            free: capacity - blocked,
                            draining,
                        });
                    }
                    None => {
                        if let Some(mask) = dmask {
                            out.push(PoolStats {
                                pool: name.clone(),
                                family: f,
                                cidrs: vec![],
                                mask,
                                capacity: 0,
                                allocated: 0,
                                free: 0,
                                draining,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

// Pool templates: p0 (no selector), p1 {zone=a}, p2 {zone=a,rack=1} dual-stack,
// p3 {zone in (a,b)}. Each pool owns four /26 chunks of 10.0.<k>.0/24 (and p2 four /122 of
// fd00::<2>00/120); p3 may also take p0's first chunk, which overlaps when p0 has it.
fn template(k: usize, chunks: u8, reversed: bool, fine_mask: bool, steal: bool) -> PoolSpec {
    let mut v4: Vec<IpNet> =
        (0..4).filter(|i| chunks & (1 << i) != 0).map(|i| net(&format!("10.0.{k}.{}/26", i * 64))).collect();
    if k == 3 && steal {
        v4.push(net("10.0.0.0/26"));
    }
    if reversed {
        v4.reverse();
    }
    let mask = if fine_mask { 29 } else { 28 };
    let selector = match k {
        0 => None,
        1 => Some(Selector::labels([("zone", "a")])),
        2 => Some(Selector::labels([("zone", "a"), ("rack", "1")])),
        _ => Some(Selector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: "zone".into(),
                operator: Operator::In,
                values: vec!["a".into(), "b".into()],
            }],
        }),
    };
    let ipv6 = (k == 2).then(|| FamilySpec {
        cidrs: (0..4).filter(|i| chunks & (1 << i) != 0).map(|i| net(&format!("fd00::2{:02x}/122", i * 64))).collect(),
        mask: if fine_mask { 125 } else { 124 },
    });
    PoolSpec { name: format!("p{k}"), selector, ipv4: Some(FamilySpec { cidrs: v4, mask }), ipv6 }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(u8, u8),
    Release(u8),
    Occupy(u8, Vec<IpNet>),
    SetPools(Vec<Option<(u8, bool, bool, bool)>>),
}

fn label_set(i: u8) -> BTreeMap<String, String> {
    match i % 6 {
        0 => labels(&[]),
        1 => labels(&[("zone", "a")]),
        2 => labels(&[("zone", "a"), ("rack", "1")]),
        3 => labels(&[("zone", "b")]),
        4 => labels(&[("zone", "b"), ("rack", "1")]),
        _ => labels(&[("rack", "1")]),
    }
}

/// Any CIDR around the pools: inside, straddling, covering, outside; either family.
fn any_cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        // Mostly inside the model's pools (10.0.0.0/22), down to /31s that share a slice.
        3 => (0u32..0x200, 22u8..=31).prop_map(|(off, len)| IpNet::V4(
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000u32 + off * 2), len).unwrap().trunc()
        )),
        1 => (0u32..0x800, 21u8..=30).prop_map(|(off, len)| IpNet::V4(
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x0a00_0000u32 + off * 4), len).unwrap().trunc()
        )),
        1 => (0u128..0x400, 116u8..=126).prop_map(|(off, len)| IpNet::V6(
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::from((0xfd00u128 << 112) | (off * 4)), len).unwrap().trunc()
        )),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..40, 0u8..6).prop_map(|(n, l)| Op::Allocate(n, l)),
        3 => (0u8..40).prop_map(Op::Release),
        1 => (0u8..40, prop::collection::vec(any_cidr(), 1..3)).prop_map(|(n, c)| Op::Occupy(n, c)),
        1 => prop::collection::vec(
            prop::option::weighted(0.8, (1u8..16, any::<bool>(), prop::bool::weighted(0.1), prop::bool::weighted(0.2))),
            4
        )
        .prop_map(Op::SetPools),
    ]
}

fn specs(choice: &[Option<(u8, bool, bool, bool)>]) -> Vec<PoolSpec> {
    choice
        .iter()
        .enumerate()
        .filter_map(|(k, c)| c.map(|(chunks, rev, fine, steal)| template(k, chunks, rev, fine, steal)))
        .collect()
}

/// The allocator's occupancies against the model's; a conflict may name any overlapping holder.
fn same_occupancy(
    got: Vec<(IpNet, Occupancy)>,
    want: Vec<(IpNet, Occupancy, Vec<String>)>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for ((gc, go), (wc, wo, others)) in got.into_iter().zip(want) {
        prop_assert_eq!(gc, wc);
        match (go, wo) {
            (Occupancy::Conflict { holder }, Occupancy::Conflict { .. }) => {
                prop_assert!(others.contains(&holder), "{} is not among {:?}", holder, others)
            }
            (go, wo) => prop_assert_eq!(go, wo),
        }
    }
    Ok(())
}

/// What the allocator says anyone holds, checked against the model.
fn check(a: &Allocator, m: &Model) -> Result<(), TestCaseError> {
    let nodes: Vec<(String, String, Vec<IpNet>)> =
        a.nodes().map(|(n, p, c)| (n.to_string(), p.to_string(), c.to_vec())).collect();
    let want: Vec<(String, String, Vec<IpNet>)> =
        m.holders.iter().map(|(n, (p, c))| (n.clone(), p.clone(), c.clone())).collect();
    prop_assert_eq!(nodes, want);
    prop_assert_eq!(a.pool_stats(), m.stats());
    for s in a.pool_stats() {
        prop_assert!(s.free <= s.capacity);
    }
    let foreign: Vec<(String, IpNet)> =
        m.all_held().filter(|(_, c)| m.pool_of(c).is_none()).map(|(n, c)| (n.clone(), *c)).collect();
    prop_assert_eq!(a.foreign(), foreign);
    Ok(())
}

fn run_ops(initial: Vec<Option<(u8, bool, bool, bool)>>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut a = Allocator::new();
    let mut m = Model::default();
    let refused: Vec<String> = a.set_pools(specs(&initial)).into_iter().map(|p| p.pool).collect();
    prop_assert_eq!(refused, m.set_pools(specs(&initial)));
    for op in ops {
        match op {
            Op::Allocate(n, l) => {
                let node = format!("n{n}");
                let held_before: Vec<IpNet> = m.all_held().map(|(_, c)| *c).collect();
                let fresh = !m.holders.contains_key(&node);
                let got = a.allocate(&node, &label_set(l));
                let want = m.allocate(&node, &label_set(l));
                match (got, want) {
                    (Ok(g), Some(w)) => {
                        prop_assert_eq!((g.pool, g.cidrs.clone()), w);
                        // The rule that matters most: a new slice never overlaps anything held.
                        if fresh {
                            for c in &g.cidrs {
                                prop_assert!(!held_before.iter().any(|h| overlap(h, c)), "{} overlaps", c);
                            }
                        }
                    }
                    (Err(NotAvailable { candidates, .. }), None) => {
                        prop_assert_eq!(candidates, m.candidates(&label_set(l)));
                    }
                    (got, want) => prop_assert!(false, "allocator {:?}, model {:?}", got, want),
                }
            }
            Op::Release(n) => {
                let node = format!("n{n}");
                let want = m.holders.get(&node).map(|h| h.1.clone()).unwrap_or_default();
                prop_assert_eq!(a.release(&node), want);
                m.release(&node);
            }
            Op::Occupy(n, cidrs) => {
                let node = format!("n{n}");
                same_occupancy(a.occupy(&node, &cidrs), m.occupy(&node, &cidrs))?;
            }
            Op::SetPools(choice) => {
                let refused: Vec<String> = a.set_pools(specs(&choice)).into_iter().map(|p| p.pool).collect();
                prop_assert_eq!(refused, m.set_pools(specs(&choice)));
            }
        }
        check(&a, &m)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every operation against the model: next-fit order, pool precedence and fallback, dual
    /// stack all-or-nothing, restore classification, live edits with draining and re-adding,
    /// stats and foreign lists; and no new slice ever overlaps anything held.
    #[test]
    fn allocator_matches_the_model(
        initial in prop::collection::vec(prop::option::weighted(0.8, (1u8..16, any::<bool>(), prop::bool::weighted(0.1), Just(false))), 4),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run_ops(initial, ops)?;
    }

    /// Restore from any set of existing CIDRs (overlapping ones, foreign ones, any size), then
    /// fill the pool: every free slice is handed out exactly once and none overlaps a held CIDR.
    #[test]
    fn restore_from_anything_then_fill(existing in prop::collection::vec((0u8..30, any_cidr()), 0..40)) {
        let spec = pool("p", None, fam(&["10.0.0.0/23", "10.0.4.0/24"], 27), fam(&["fd00::/120"], 124));
        let mut a = with_pools(vec![spec.clone()]);
        let mut m = Model::default();
        m.set_pools(vec![spec]);
        for (n, c) in &existing {
            let node = format!("old{n}");
            same_occupancy(a.occupy(&node, std::slice::from_ref(c)), m.occupy(&node, std::slice::from_ref(c)))?;
        }
        check(&a, &m)?;
        let held: Vec<IpNet> = m.all_held().map(|(_, c)| *c).collect();
        let free4 = slices(&net("10.0.0.0/23"), 27).into_iter().chain(slices(&net("10.0.4.0/24"), 27)).filter(|s| m.is_free(s)).count();
        let free6 = slices(&net("fd00::/120"), 124).into_iter().filter(|s| m.is_free(s)).count();
        let mut served: Vec<IpNet> = Vec::new();
        let mut i = 0;
        while let Ok(got) = a.allocate(&format!("new{i}"), &no_labels()) {
            for c in &got.cidrs {
                prop_assert!(!held.iter().chain(&served).any(|h| overlap(h, c)), "{} overlaps", c);
            }
            served.extend(got.cidrs);
            i += 1;
        }
        prop_assert_eq!(i, free4.min(free6));
        let st = a.pool_stats();
        prop_assert!(st[0].free == 0 || st[1].free == 0);
        // Releasing everything leaves a pool with nothing allocated.
        for (n, _) in &existing { a.release(&format!("old{n}")); }
        for k in 0..i { a.release(&format!("new{k}")); }
        prop_assert!(a.pool_stats().iter().all(|s| s.allocated == 0 && s.free == s.capacity));
    }

    /// Exhaustion then freeing: a node waits while the pool is full and gets exactly the slice
    /// that a released node frees.
    #[test]
    fn exhaustion_then_freeing(victim in 0usize..16, rounds in 1usize..8) {
        let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/24"], 28)]);
        let mut nodes: Vec<String> = (0..16).map(|i| format!("n{i}")).collect();
        for n in &nodes { a.allocate(n, &no_labels()).unwrap(); }
        for r in 0..rounds {
            let waiting = format!("n{}", 16 + r);
            let err = a.allocate(&waiting, &no_labels()).unwrap_err();
            prop_assert!(err.message.contains("(ipv4: 16/16 allocated from 10.0.0.0/24)"), "{}", err);
            let gone = nodes.remove((victim + r) % nodes.len());
            let freed = a.release(&gone);
            prop_assert_eq!(a.allocate(&waiting, &no_labels()).unwrap().cidrs, freed);
            nodes.push(waiting);
        }
    }

    /// Huge IPv6 pools: any prefix from /8 to /52 with a /64 per node, holes made by foreign
    /// CIDRs anywhere: allocations are aligned /64s inside the pool, never overlapping, and the
    /// counts are exact.
    #[test]
    fn huge_ipv6_pools(prefix in 8u8..=52, base in any::<u128>(), holes in prop::collection::vec((0u64..64, 60u8..=66), 0..8), n in 1usize..200) {
        let cidr = IpNet::V6(ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(base), prefix).unwrap().trunc());
        let spec = pool("big", None, None, Some(FamilySpec { cidrs: vec![cidr], mask: 64 }));
        let mut a = with_pools(vec![spec]);
        let (start, _) = bounds(&cidr);
        let mut held = Vec::new();
        for (i, (slot, len)) in holes.iter().enumerate() {
            let addr = start + ((*slot as u128) << 64);
            let hole = IpNet::V6(ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(addr), (*len).max(prefix)).unwrap().trunc());
            a.occupy(&format!("hole{i}"), &[hole]);
            held.push(hole);
        }
        let (blocked, free) = (a.pool_stats()[0].allocated, a.pool_stats()[0].free);
        for i in 0..n {
            let got = a.allocate(&format!("n{i}"), &no_labels()).unwrap().cidrs;
            prop_assert_eq!(got.len(), 1);
            let c = got[0];
            prop_assert_eq!(c.prefix_len(), 64);
            prop_assert!(cidr.contains(&c));
            prop_assert!(!held.iter().any(|h| overlap(h, &c)), "{} overlaps", c);
            held.push(c);
        }
        let st = &a.pool_stats()[0];
        prop_assert_eq!(st.capacity, 1u128 << (64 - prefix));
        prop_assert_eq!(st.allocated, blocked + n as u128);
        prop_assert_eq!(st.free, free - n as u128);
    }
}

/// Issue 19 §6: a /16 shrunk to a /17 counts the nodes in the half that stays once (allocated),
/// the others as draining, and stops draining with the last node outside the /17.
#[test]
fn shrinking_a_cidr_counts_the_nodes_that_stay_once_and_drains_only_the_rest() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/16"], 24)]);
    assert_eq!(alloc(&mut a, "low-0"), ["10.0.0.0/24"]);
    assert_eq!(alloc(&mut a, "low-1"), ["10.0.1.0/24"]);
    a.occupy("high", &nets(&["10.0.200.0/24"]));
    assert!(a.set_pools(vec![v4pool("p", &["10.0.0.0/17"], 24)]).is_empty());
    let st = stats(&a, "p", Family::V4);
    assert_eq!((st.capacity, st.allocated, st.draining), (128, 2, 1));
    a.release("high");
    assert_eq!(stats(&a, "p", Family::V4).draining, 0);
    assert!(a.draining().is_empty(), "nothing drains once the last node outside the /17 is gone");
    // Shrunk with no node outside the part that stays: nothing drains at all.
    assert!(a.set_pools(vec![v4pool("p", &["10.0.0.0/18"], 24)]).is_empty());
    assert!(a.draining().is_empty());
}

/// Issue 18 §3: ALLOCATED counts nodes, whatever the size of their CIDR; FREE counts slices.
#[test]
fn a_node_holding_two_slices_counts_once_and_blocks_both() {
    let mut a = with_pools(vec![v4pool("p", &["10.0.0.0/22"], 24)]);
    a.occupy("wide", &nets(&["10.0.0.0/23"]));
    assert_eq!(alloc(&mut a, "n"), ["10.0.2.0/24"]);
    let st = stats(&a, "p", Family::V4);
    assert_eq!((st.capacity, st.allocated, st.free), (4, 2, 1));
}
