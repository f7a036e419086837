//! Micro-benchmarks of the address walk and capacity on big ranges (no disk involved).
//!
//! `cargo bench --bench alloc`. The exec-level figures are in docs/benchmarks.md
//! (`scripts/bench.sh`); these show that the in-process parts stay in the microseconds
//! whatever the size of the range.

use divan::{Bencher, black_box};
use ipnet::IpNet;
use podcidr::ipam::pool::{Pool, Range};
use std::net::IpAddr;

fn main() {
    divan::main();
}

const SUBNETS: &[&str] = &["10.244.1.0/24", "10.244.0.0/16", "10.0.0.0/8", "fd00::/64"];

fn pool(subnet: &str, exclude: Vec<IpNet>) -> Pool {
    let range = Range::new("ipam.ranges[0][0]", subnet, None, None, None).expect("valid range");
    Pool::new(vec![vec![range]], podcidr::ipam::exclude::Excluded::from(&exclude[..])).expect("valid pool")
}

/// The middle of `subnet`'s range: where a round robin typically continues from.
fn middle(p: &Pool) -> IpAddr {
    let r = &p.range_sets[0][0];
    let (lo, hi) = (podcidr::ipam::pool::to_u128(r.range_start), podcidr::ipam::pool::to_u128(r.range_end));
    podcidr::ipam::pool::from_u128(r.range_start, lo + (hi - lo) / 2)
}

/// `n` single addresses excluded from the start of the range, one in every two.
fn scattered_exclusions(p: &Pool, n: usize) -> Vec<IpNet> {
    let start = podcidr::ipam::pool::to_u128(p.range_sets[0][0].range_start);
    (0..n as u128)
        .map(|i| IpNet::from(podcidr::ipam::pool::from_u128(p.range_sets[0][0].range_start, start + 2 + 2 * i)))
        .collect()
}

/// Setting up a walk after the last reserved address and taking the first candidate: what an
/// ADD into a store with a free address next does.
#[divan::bench(args = SUBNETS)]
fn walk_first_candidate(bencher: Bencher, subnet: &str) {
    let p = pool(subnet, Vec::new());
    let last = middle(&p);
    bencher.bench_local(|| black_box(&p).walk(0, black_box(Some(last))).next());
}

/// 1,000 candidates in a row: the per-address cost of a walk through taken addresses.
#[divan::bench(args = SUBNETS)]
fn walk_1000_candidates(bencher: Bencher, subnet: &str) {
    let p = pool(subnet, Vec::new());
    let last = middle(&p);
    bencher
        .counter(divan::counter::ItemsCount::new(1000usize))
        .bench_local(|| black_box(&p).walk(0, Some(last)).take(1000).count());
}

/// A walk that starts inside a huge excluded block (half of a /64) skips it in one step.
#[divan::bench]
fn walk_past_excluded_half_of_a_64(bencher: Bencher) {
    let p = pool("fd00::/64", vec!["fd00::/65".parse().unwrap()]);
    bencher.bench_local(|| black_box(&p).walk(0, None).next());
}

/// 1,000 candidates of a /16 with `n` excluded single addresses among them: the walk moves a
/// cursor along the merged, sorted excludes, so the cost does not grow with `n`.
#[divan::bench(args = [0, 10, 100, 1000, 10000])]
fn walk_1000_with_exclusions(bencher: Bencher, n: usize) {
    let base = pool("10.244.0.0/16", Vec::new());
    let p = pool("10.244.0.0/16", scattered_exclusions(&base, n));
    bencher
        .counter(divan::counter::ItemsCount::new(1000usize))
        .bench_local(|| black_box(&p).walk(0, None).take(1000).count());
}

/// `capacity` (what `podcidr status` and STATUS report) of a big range.
#[divan::bench(args = SUBNETS)]
fn capacity(bencher: Bencher, subnet: &str) {
    let p = pool(subnet, Vec::new());
    bencher.bench_local(|| black_box(&p).capacity(0));
}

/// `capacity` of a /8 with `n` excluded addresses (merged intervals, counted by binary search).
#[divan::bench(args = [10, 100, 1000, 10000])]
fn capacity_with_exclusions(bencher: Bencher, n: usize) {
    let base = pool("10.0.0.0/8", Vec::new());
    let p = pool("10.0.0.0/8", scattered_exclusions(&base, n));
    bencher.bench_local(|| black_box(&p).capacity(0));
}
