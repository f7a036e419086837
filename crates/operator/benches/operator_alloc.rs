//! The operator's allocator alone (no API server): allocations per second in huge pools, and
//! the restore of 5,000 nodes. `cargo bench --bench operator_alloc`; figures in
//! docs/benchmarks.md. Issue 11 asks for at least 100,000 allocations per second.

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use ipnet::IpNet;
use podcidr_operator::allocator::{Allocator, FamilySpec, PoolSpec};
use std::collections::BTreeMap;

fn main() {
    divan::main();
}

/// Nodes allocated per sample, into a fresh allocator each time (its set-up is not timed).
const BURST: usize = 10_000;
const RESTORED: usize = 5_000;

fn allocator(ipv4: Option<(&str, u8)>, ipv6: Option<(&str, u8)>) -> Allocator {
    let family = |f: Option<(&str, u8)>| {
        f.map(|(c, mask)| FamilySpec { cidrs: vec![c.parse::<IpNet>().expect("valid CIDR")], mask })
    };
    let mut a = Allocator::new();
    let problems =
        a.set_pools(vec![PoolSpec { name: "default".into(), selector: None, ipv4: family(ipv4), ipv6: family(ipv6) }]);
    assert!(problems.is_empty(), "{problems:?}");
    a
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn burst(bencher: Bencher, ipv4: Option<(&str, u8)>, ipv6: Option<(&str, u8)>) {
    let labels = BTreeMap::new();
    bencher
        .counter(ItemsCount::new(BURST))
        .with_inputs(|| (allocator(ipv4, ipv6), names("node", BURST)))
        .bench_local_values(|(mut a, nodes)| {
            for n in &nodes {
                black_box(a.allocate(n, &labels).expect("room"));
            }
            a
        });
}

/// 10.0.0.0/8 with a /28 per node (2^20 slices).
#[divan::bench(sample_count = 20)]
fn allocate_ipv4_8_by_28(bencher: Bencher) {
    burst(bencher, Some(("10.0.0.0/8", 28)), None);
}

/// fd00::/8 with a /64 per node (2^56 slices).
#[divan::bench(sample_count = 20)]
fn allocate_ipv6_fd00_8_by_64(bencher: Bencher) {
    burst(bencher, None, Some(("fd00::/8", 64)));
}

/// Dual stack: one of each per node.
#[divan::bench(sample_count = 20)]
fn allocate_dual_stack(bencher: Bencher) {
    burst(bencher, Some(("10.0.0.0/8", 28)), Some(("fd00::/8", 64)));
}

/// Steady churn in a pool that holds 100,000 nodes: one node leaves, one joins.
#[divan::bench(sample_count = 20)]
fn churn_in_100k_nodes(bencher: Bencher) {
    let labels = BTreeMap::new();
    let mut a = allocator(Some(("10.0.0.0/8", 28)), None);
    let old = names("old", 100_000);
    for n in &old {
        a.allocate(n, &labels).expect("room");
    }
    let new = names("new", BURST);
    bencher.counter(ItemsCount::new(BURST)).with_inputs(|| (a.clone(), old.clone(), new.clone())).bench_local_values(
        |(mut a, old, new)| {
            // Every tenth old node leaves, so next-fit finds holes among held runs.
            for (i, n) in new.iter().enumerate() {
                a.release(&old[(i * 10) % old.len()]);
                black_box(a.allocate(n, &labels).expect("room"));
            }
            a
        },
    );
}

/// The restore: 5,000 dual-stack nodes observed (kcm-style /24s from 10.0.0.0/8, scattered,
/// and /64s from fd00::/48), into an allocator with the pools set.
#[divan::bench(sample_count = 20)]
fn restore_5000_nodes(bencher: Bencher) {
    let nodes: Vec<(String, Vec<IpNet>)> = (0..RESTORED)
        .map(|i| {
            let slot = (i * 7) % 65_536;
            let v4: IpNet = format!("10.{}.{}.0/24", slot / 256, slot % 256).parse().expect("valid");
            let v6: IpNet = format!("fd00:0:0:{:x}::/64", i * 3).parse().expect("valid");
            (format!("node-{i}"), vec![v4, v6])
        })
        .collect();
    bencher
        .counter(ItemsCount::new(RESTORED))
        .with_inputs(|| allocator(Some(("10.0.0.0/8", 24)), Some(("fd00::/48", 64))))
        .bench_local_values(|mut a| {
            for (n, cidrs) in &nodes {
                black_box(a.occupy(n, cidrs));
            }
            a
        });
}

/// Counts of every pool with 5,000 scattered nodes (what a status update computes).
#[divan::bench(sample_count = 20)]
fn pool_stats_5000_nodes(bencher: Bencher) {
    let mut a = allocator(Some(("10.0.0.0/8", 24)), Some(("fd00::/48", 64)));
    for i in 0..RESTORED {
        let slot = (i * 7) % 65_536;
        let v4: IpNet = format!("10.{}.{}.0/24", slot / 256, slot % 256).parse().expect("valid");
        let v6: IpNet = format!("fd00:0:0:{:x}::/64", i * 3).parse().expect("valid");
        a.occupy(&format!("node-{i}"), &[v4, v6]);
    }
    bencher.bench_local(|| black_box(a.pool_stats()));
}
