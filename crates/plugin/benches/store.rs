//! Micro-benchmarks of the lease store on a temporary directory: open (and lock), claim and
//! release of one lease, and the `is_taken` probe, with stores of various sizes.
//!
//! `cargo bench --bench store`. Stores are filled through `Store::claim`, exactly as ADD
//! leaves them; every directory is removed when the run ends.

use divan::{Bencher, black_box};
use podcidr::store::{Access, LeaseRecord, OwnerIndex, Store};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use tempfile::TempDir;

const NETWORK: &str = "benchnet";
const SIZES: &[usize] = &[0, 1_000, 10_000];

/// Filled stores by size, shared by the benchmarks and removed at the end of `main`.
static STORES: Mutex<Option<HashMap<usize, TempDir>>> = Mutex::new(None);

fn main() {
    divan::main();
    // Statics are never dropped: remove the temporary stores here.
    drop(STORES.lock().unwrap().take());
}

/// The n-th address of 10.200.0.0/16 after the gateway.
fn addr(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 2)) + n as u32))
}

fn record(ip: IpAddr, cid: &str) -> LeaseRecord {
    LeaseRecord {
        ip,
        range_set: 0,
        subnet: "10.200.0.0/16".parse().unwrap(),
        gateway: Some("10.200.0.1".parse().unwrap()),
        container_id: cid.to_string(),
        ifname: "eth0".into(),
        netns: format!("/var/run/netns/{cid}"),
        pod_namespace: Some("default".into()),
        pod_name: Some(format!("pod-{cid}")),
        pod_uid: None,
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        created: "2025-01-01T00:00:00Z".into(),
    }
}

fn owner(ip: IpAddr, cid: &str) -> OwnerIndex {
    OwnerIndex { container_id: cid.to_string(), ifname: "eth0".into(), ips: vec![ip] }
}

/// The data directory of a store holding leases for the first `size` addresses.
fn filled(size: usize) -> PathBuf {
    let mut guard = STORES.lock().unwrap();
    let stores = guard.get_or_insert_with(HashMap::new);
    let dir = stores.entry(size).or_insert_with(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut store = Store::open(dir.path(), NETWORK, Access::Exclusive).expect("open store");
        for i in 0..size {
            let cid = format!("fill-{i:06}");
            store.claim(&owner(addr(i), &cid), &[record(addr(i), &cid)]).expect("claim");
        }
        dir
    });
    dir.path().to_path_buf()
}

/// Opening an existing store and taking its lock, then closing it: the fixed cost of every
/// request.
#[divan::bench(args = SIZES)]
fn open_and_lock(bencher: Bencher, size: usize) {
    let dir = filled(size);
    bencher.bench_local(|| {
        // Dropped inside: a second exclusive flock in this process would wait for the first.
        drop(Store::open(black_box(&dir), NETWORK, Access::Exclusive).unwrap());
    });
}

/// Claiming a new lease (owner index, then the record written aside and renamed into place)
/// and releasing it: ADD's and DEL's writes, with `size` other leases present.
#[divan::bench(args = SIZES)]
fn claim_and_release(bencher: Bencher, size: usize) {
    let dir = filled(size);
    let mut store = Store::open(&dir, NETWORK, Access::Exclusive).unwrap();
    let ip = addr(size + 1);
    let (idx, rec) = (owner(ip, "bench"), record(ip, "bench"));
    bencher.bench_local(|| {
        store.claim(&idx, std::slice::from_ref(&rec)).unwrap();
        store.release("bench", "eth0").unwrap()
    });
}

/// Finding and reading an attachment's index and lease: what CHECK and a repeated ADD read.
#[divan::bench(args = SIZES)]
fn owner_and_lease_lookup(bencher: Bencher, size: usize) {
    let dir = filled(size.max(1));
    let store = Store::open(&dir, NETWORK, Access::Shared).unwrap();
    bencher.bench_local(|| {
        let o = store.owner("fill-000000", "eth0").unwrap();
        (o, store.lease(addr(0)).unwrap())
    });
}

/// One `is_taken` probe (a stat) of a taken address, on a freshly opened store.
#[divan::bench(args = SIZES, sample_size = 32)]
fn is_taken_hit(bencher: Bencher, size: usize) {
    let dir = filled(size.max(1));
    bencher
        .with_inputs(|| Store::open(&dir, NETWORK, Access::Shared).unwrap())
        .bench_local_refs(|store| store.is_taken(black_box(addr(0))).unwrap());
}

/// One `is_taken` probe of a free address.
#[divan::bench(args = SIZES, sample_size = 32)]
fn is_taken_miss(bencher: Bencher, size: usize) {
    let dir = filled(size);
    bencher
        .with_inputs(|| Store::open(&dir, NETWORK, Access::Shared).unwrap())
        .bench_local_refs(|store| store.is_taken(black_box(addr(size + 7))).unwrap());
}

/// 65 probes of taken addresses in a row: past 64 the store lists `leases/` once and answers
/// from memory. This is the worst case of an ADD's walk through a crowded part of the range.
#[divan::bench(args = [1_000, 10_000], sample_size = 4)]
fn is_taken_65_in_a_row(bencher: Bencher, size: usize) {
    let dir = filled(size);
    bencher
        .with_inputs(|| Store::open(&dir, NETWORK, Access::Shared).unwrap())
        .bench_local_refs(|store| (0..65).filter(|&i| store.is_taken(addr(i)).unwrap()).count());
}
