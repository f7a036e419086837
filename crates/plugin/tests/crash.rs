//! Crash safety: a process killed at any instant (SIGKILL) never leaves an address leased twice,
//! nor loses a lease that a successful ADD returned; and a full file system gives clean code 5
//! errors without losing anything.
//!
//! `PODCIDR_CRASH_OPS=<n>` runs the kill test for `n` execs instead of the default,
//! `PODCIDR_CRASH_SEED=<n>` replays a run (the seed is printed).

mod common;

use common::{Call, Disk, Entry, IFNAME, Reply, Rng, Sandbox, finish, result_ips, status_json, status_network};
use podcidr::store::OwnerIndex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WORKERS: usize = 16;
/// Execs in all, across workers (each ADD, DEL and retry is one).
const DEFAULT_OPS: u64 = 5000;
/// The killer keeps the share of execs it has signalled at about this.
const KILL_PERCENT: u64 = 15;
const NETWORK: &str = "crashnet";
/// Leases one worker holds at most before it DELs instead of ADDing.
const MAX_HELD: usize = 12;
/// Killed ADDs one worker leaves alone (no DEL, no retry) at most, for the final check (d).
const MAX_LEFTOVERS: usize = 4;

/// `verb` on attachment (`id`, eth0) with `conf`, every exec with the same boot ID.
fn cni(verb: &str, id: &str, conf: &Value) -> Call {
    Call::cni(verb, id, conf).fixed_boot()
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at random instants.
// ---------------------------------------------------------------------------------------------

/// What a worker knows about one of its container IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A successful ADD returned these addresses and no DEL has completed since.
    Held(Vec<String>),
    /// An ADD was killed and nothing was done about it (yet): the store may hold anything for
    /// this ID, except a second owner for an address.
    Leftover,
    /// A DEL completed after the last ADD: the ID holds nothing.
    Clean,
}

enum Attempt {
    Done(Reply),
    Killed,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    add_ok: u64,
    add_failed: u64,
    add_killed: u64,
    repeat_ok: u64,
    repeat_killed: u64,
    retried_leftover: u64,
    del_ok: u64,
    del_killed: u64,
    failures: BTreeSet<String>,
    /// What each killed ADD or DEL left for its ID, looked at right after the kill.
    after_kill: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        self.add_ok += o.add_ok;
        self.add_failed += o.add_failed;
        self.add_killed += o.add_killed;
        self.repeat_ok += o.repeat_ok;
        self.repeat_killed += o.repeat_killed;
        self.retried_leftover += o.retried_leftover;
        self.del_ok += o.del_ok;
        self.del_killed += o.del_killed;
        self.failures.extend(o.failures.iter().cloned());
        for (k, n) in &o.after_kill {
            *self.after_kill.entry(k.clone()).or_default() += n;
        }
    }
}

struct Shared {
    /// Children started and not yet reaped. A pid leaves this set (under the lock) before it is
    /// reaped, and the killer signals only under the lock, so it never hits a recycled pid.
    inflight: Mutex<HashSet<u32>>,
    spawned: AtomicU64,
    signalled: AtomicU64,
    signalled_holder: AtomicU64,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn exec(&self, e: &Call) -> Result<Attempt, String> {
        let child = e.spawn();
        self.inflight.lock().unwrap().insert(child.id());
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let out = finish(child, &e.stdin, |pid| {
            self.inflight.lock().unwrap().remove(&pid);
        });
        if out.killed() {
            return Ok(Attempt::Killed);
        }
        out.judge().map(Attempt::Done).map_err(|v| format!("{v}\nrequest: {}", e.describe()))
    }

    fn violation(&self, v: String) {
        self.violations.lock().unwrap().push(v);
    }
}

/// Pids holding (not waiting for) an flock, from /proc/locks.
fn flock_holders() -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:123 0 EOF"; waiters have "->" in t[1].
            (t.len() > 4 && t[1] == "FLOCK" && t[3] == "WRITE").then(|| t[4].parse().ok()).flatten()
        })
        .collect()
}

/// SIGKILLs in-flight children: half the time the one holding the store's lock (so kills land
/// inside the critical section), else any of them (starting up, waiting for the lock, exiting).
fn killer(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_micros(100 + rng.below(900)));
        let spawned = shared.spawned.load(Ordering::Relaxed);
        if shared.signalled.load(Ordering::Relaxed) * 100 >= spawned * KILL_PERCENT {
            continue;
        }
        let holders = if rng.chance(0.5) { flock_holders() } else { Vec::new() };
        let inflight = shared.inflight.lock().unwrap();
        let target = match holders.into_iter().find(|p| inflight.contains(p)) {
            Some(p) => {
                shared.signalled_holder.fetch_add(1, Ordering::Relaxed);
                p
            }
            None if inflight.is_empty() => continue,
            None => *inflight.iter().nth(rng.below(inflight.len() as u64) as usize).unwrap(),
        };
        // SAFETY: kill(2) on a pid we spawned and have not reaped (see `Shared::inflight`).
        unsafe { libc::kill(target as libc::pid_t, libc::SIGKILL) };
        shared.signalled.fetch_add(1, Ordering::Relaxed);
    }
}

struct Worker<'a> {
    w: usize,
    shared: &'a Shared,
    conf: &'a Value,
    net_dir: &'a Path,
    rng: Rng,
    ids: BTreeMap<String, State>,
    history: BTreeMap<String, Vec<String>>,
    execs: u64,
    next: u64,
    stats: Stats,
}

impl Worker<'_> {
    fn note(&mut self, id: &str, what: String) {
        self.history.entry(id.to_string()).or_default().push(what);
    }

    /// Tallies what a killed `verb` left for `id`. Only this worker acts on `id`, so its index
    /// and the records that index names are stable while it looks (a record may have been
    /// taken by another owner since, which counts as not this ID's).
    fn classify_kill(&mut self, verb: &str, id: &str) {
        let owner = self.net_dir.join("owners").join(format!("{id}:{IFNAME}"));
        let kind = match std::fs::read(&owner) {
            Err(_) => "no index".to_string(),
            Ok(bytes) => match serde_json::from_slice::<OwnerIndex>(&bytes) {
                Err(_) => "an unreadable index".to_string(),
                Ok(idx) => {
                    let mine = idx
                        .ips
                        .iter()
                        .filter(|ip| {
                            let rec = self.net_dir.join("leases").join(ip.to_string());
                            std::fs::read(rec).is_ok_and(|b| {
                                serde_json::from_slice::<podcidr::store::LeaseRecord>(&b)
                                    .is_ok_and(|r| r.container_id == id)
                            })
                        })
                        .count();
                    format!("an index and {mine} of its {} leases", idx.ips.len())
                }
            },
        };
        *self.stats.after_kill.entry(format!("{verb} killed, left {kind}")).or_default() += 1;
    }

    fn attempt(&mut self, verb: &str, id: &str) -> Option<Attempt> {
        self.execs += 1;
        match self.shared.exec(&cni(verb, id, self.conf)) {
            Ok(a) => {
                let what = match &a {
                    Attempt::Killed => format!("{verb} killed"),
                    Attempt::Done(Reply::Ok(Some(v))) => format!("{verb} ok {v}"),
                    Attempt::Done(Reply::Ok(None)) => format!("{verb} ok"),
                    Attempt::Done(Reply::Err { code, msg }) => format!("{verb} code {code}: {msg}"),
                };
                self.note(id, what);
                Some(a)
            }
            Err(v) => {
                self.note(id, format!("{verb}: protocol violation"));
                self.shared.violation(format!("{verb} {id}: {v}"));
                None
            }
        }
    }

    fn leftovers(&self) -> usize {
        self.ids.values().filter(|s| **s == State::Leftover).count()
    }

    fn ids_in(&self, want: impl Fn(&State) -> bool) -> Vec<String> {
        self.ids.iter().filter(|(_, s)| want(s)).map(|(id, _)| id.clone()).collect()
    }

    fn pick(&mut self, from: &[String]) -> String {
        from[self.rng.below(from.len() as u64) as usize].clone()
    }

    /// ADD of an ID that holds nothing complete: a new one, or a leftover of a killed ADD.
    fn add(&mut self, id: &str) {
        loop {
            match self.attempt("ADD", id) {
                None => {
                    self.ids.insert(id.into(), State::Leftover);
                    return;
                }
                Some(Attempt::Done(Reply::Ok(Some(v)))) => {
                    self.stats.add_ok += 1;
                    let ips = result_ips(&v);
                    if ips.len() != 2 {
                        self.shared.violation(format!("ADD {id}: expected two addresses: {v}"));
                    }
                    self.ids.insert(id.into(), State::Held(ips));
                    return;
                }
                Some(Attempt::Done(Reply::Ok(None))) => {
                    self.shared.violation(format!("ADD {id}: success without a result"));
                    self.ids.insert(id.into(), State::Leftover);
                    return;
                }
                Some(Attempt::Done(Reply::Err { code, msg })) => {
                    // A runtime DELs after a failed ADD.
                    self.stats.add_failed += 1;
                    self.stats.failures.insert(format!("ADD code {code}: {msg}"));
                    self.ids.insert(id.into(), State::Leftover);
                    self.del(id);
                    return;
                }
                Some(Attempt::Killed) => {
                    self.stats.add_killed += 1;
                    self.classify_kill("ADD", id);
                    self.ids.insert(id.into(), State::Leftover);
                    match self.rng.below(10) {
                        // The runtime retries the ADD.
                        0..=2 => continue,
                        // Nobody cleans up (yet): checked at the end, or retried later.
                        3..=5 if self.leftovers() <= MAX_LEFTOVERS => return,
                        // The runtime DELs after the failed ADD.
                        _ => {
                            self.del(id);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// An ADD for an ID that holds a lease: the same addresses, or killed with no harm done.
    fn repeat(&mut self, id: &str, ips: &[String]) {
        match self.attempt("ADD", id) {
            None => {}
            Some(Attempt::Killed) => self.stats.repeat_killed += 1,
            Some(Attempt::Done(Reply::Ok(Some(v)))) => {
                self.stats.repeat_ok += 1;
                let got = result_ips(&v);
                if got != ips {
                    self.shared.violation(format!("repeated ADD {id} returned {got:?}, but it holds {ips:?}"));
                    self.ids.insert(id.into(), State::Leftover);
                }
            }
            Some(Attempt::Done(other)) => {
                self.shared.violation(format!("repeated ADD {id} of a held lease: {other:?}"));
                self.ids.insert(id.into(), State::Leftover);
            }
        }
    }

    /// DEL, retried after a kill as a runtime does, until it completes.
    fn del(&mut self, id: &str) {
        for _ in 0..50 {
            match self.attempt("DEL", id) {
                None => break,
                Some(Attempt::Killed) => {
                    self.stats.del_killed += 1;
                    self.classify_kill("DEL", id);
                }
                Some(Attempt::Done(Reply::Ok(_))) => {
                    self.stats.del_ok += 1;
                    self.ids.insert(id.into(), State::Clean);
                    return;
                }
                Some(Attempt::Done(Reply::Err { code, msg })) => {
                    self.shared.violation(format!("DEL {id} failed: code {code}: {msg}"));
                    break;
                }
            }
        }
        // Whatever the store holds for it is left to the final cleanup.
        self.ids.insert(id.into(), State::Leftover);
    }

    fn run(&mut self, budget: u64) {
        while self.execs < budget {
            let held = self.ids_in(|s| matches!(s, State::Held(_)));
            let left = self.ids_in(|s| *s == State::Leftover);
            let r = self.rng.below(100);
            if !held.is_empty() && (held.len() >= MAX_HELD || r < 30) {
                let id = self.pick(&held);
                self.del(&id);
            } else if !held.is_empty() && r < 40 {
                let id = self.pick(&held);
                let Some(State::Held(ips)) = self.ids.get(&id).cloned() else { unreachable!() };
                self.repeat(&id, &ips);
            } else if !left.is_empty() && r < 48 {
                // A retried ADD long after the killed one: others may hold what its index names.
                self.stats.retried_leftover += 1;
                let id = self.pick(&left);
                self.add(&id);
            } else {
                let id = format!("w{}-c{}", self.w, self.next);
                self.next += 1;
                self.add(&id);
            }
        }
    }
}

/// Everything wrong with the store on disk, given what the workers know.
fn problems(disk: &Disk, ids: &BTreeMap<String, State>) -> Vec<String> {
    let mut out = Vec::new();
    let records = disk.records();
    for (name, entry) in &disk.leases {
        match entry {
            Entry::Bad(e) => out.push(format!("leases/{name} is unreadable: {e}")),
            Entry::Ok(rec) if rec.ip.to_string() != *name || rec.ifname != IFNAME => {
                out.push(format!("leases/{name} holds a record for {rec:?}"))
            }
            Entry::Ok(_) => {}
        }
    }
    // (a) One owner per address: two IDs that both hold (by a successful ADD) one address.
    let mut holder_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, state) in ids {
        if let State::Held(ips) = state {
            for ip in ips {
                if let Some(other) = holder_of.insert(ip, id) {
                    out.push(format!("{ip} was handed to both {other} and {id}"));
                }
            }
        }
    }
    // (b) What a successful ADD returned is still leased, to that owner, and indexed.
    for (id, state) in ids {
        match state {
            State::Held(ips) => {
                for ip in ips {
                    match records.get(ip.as_str()) {
                        Some(rec) if rec.container_id == *id => {}
                        Some(rec) => out.push(format!(
                            "{id} holds {ip} by a successful ADD, but its record names {}",
                            rec.container_id
                        )),
                        None => out.push(format!("{id} holds {ip} by a successful ADD, but leases/{ip} is gone")),
                    }
                }
                match disk.owner(id) {
                    Some(Entry::Ok(OwnerIndex { ips: idx, .. })) => {
                        let idx: BTreeSet<String> = idx.iter().map(|i| i.to_string()).collect();
                        let want: BTreeSet<String> = ips.iter().cloned().collect();
                        if idx != want {
                            out.push(format!("owners/{id}:{IFNAME} names {idx:?}, not {want:?}"));
                        }
                    }
                    other => out.push(format!("{id} holds {ips:?} but its owner index is {other:?}")),
                }
            }
            State::Clean => {
                if let Some(e) = disk.owner(id) {
                    out.push(format!("{id} was DELed but owners/ still has {e:?}"));
                }
                let held = disk.held_by(id);
                if !held.is_empty() {
                    out.push(format!("{id} was DELed but still holds {held:?}"));
                }
            }
            State::Leftover => {}
        }
    }
    // No lease is orphaned: each record's owner index exists and names it, so a DEL finds it.
    for (name, rec) in &records {
        let key = format!("{}:{}", rec.container_id, rec.ifname);
        match disk.owners.get(&key) {
            Some(Entry::Ok(idx)) if idx.ips.iter().any(|i| i.to_string() == *name) => {}
            other => out.push(format!("leases/{name} (of {key}) is not named by its owner index: {other:?}")),
        }
    }
    // Every index entry belongs to an ID that may hold something.
    for name in disk.owners.keys() {
        let id = name.strip_suffix(&format!(":{IFNAME}")).unwrap_or(name);
        match ids.get(id) {
            Some(State::Held(_)) | Some(State::Leftover) => {}
            other => out.push(format!("owners/{name} exists for an ID in state {other:?}")),
        }
    }
    out
}

fn fail(what: &str, problems: &[String], history: &BTreeMap<String, Vec<String>>, seed: u64) {
    if problems.is_empty() {
        return;
    }
    let mut msg = format!("{what}: {} problem(s) (seed {seed}):\n", problems.len());
    for p in problems.iter().take(30) {
        msg.push_str(&format!("  - {p}\n"));
        // The history of every ID the problem names.
        for (id, h) in history {
            if mentions(p, id) {
                msg.push_str(&format!("      {id}: {}\n", h.join(" | ")));
            }
        }
    }
    panic!("{msg}");
}

/// Whether `text` names `id` (and not merely an ID it is a prefix of, as w1-c1 of w1-c12).
fn mentions(text: &str, id: &str) -> bool {
    text.match_indices(id).any(|(i, _)| !text[i + id.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

#[test]
fn sigkill_at_any_instant_never_doubles_nor_loses_a_lease() {
    let total: u64 = std::env::var("PODCIDR_CRASH_OPS")
        .ok()
        .map(|v| v.parse().expect("PODCIDR_CRASH_OPS is a number"))
        .unwrap_or(DEFAULT_OPS);
    let seed: u64 = std::env::var("PODCIDR_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("PODCIDR_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    eprintln!("crash test: {total} execs, {WORKERS} workers, seed {seed}");

    let sb = Sandbox::new();
    let data = sb.data_dir();
    let net_dir = sb.net_dir(NETWORK);
    // Dual stack: an ADD writes two lease records, so a kill can fall between them.
    let conf = sb.conf(
        "1.0.0",
        NETWORK,
        json!({ "ranges": [[{ "subnet": "10.20.0.0/20" }], [{ "subnet": "fd00:20::/116" }]] }),
    );
    let shared = Shared {
        inflight: Mutex::new(HashSet::new()),
        spawned: AtomicU64::new(0),
        signalled: AtomicU64::new(0),
        signalled_holder: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
    };
    let started = Instant::now();
    let budget = total.div_ceil(WORKERS as u64);
    let mut ids: BTreeMap<String, State> = BTreeMap::new();
    let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stats = Stats::default();
    std::thread::scope(|s| {
        let k = s.spawn(|| killer(&shared, seed ^ 0xdead_beef));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (shared, conf, net_dir) = (&shared, &conf, &net_dir);
                s.spawn(move || {
                    let mut worker = Worker {
                        w,
                        shared,
                        conf,
                        net_dir,
                        rng: Rng::new(seed.wrapping_add(w as u64 * 7919)),
                        ids: BTreeMap::new(),
                        history: BTreeMap::new(),
                        execs: 0,
                        next: 0,
                        stats: Stats::default(),
                    };
                    worker.run(budget);
                    (worker.ids, worker.history, worker.stats)
                })
            })
            .collect();
        for h in workers {
            let (i, hist, st) = h.join().expect("worker thread");
            ids.extend(i);
            history.extend(hist);
            stats.merge(&st);
        }
        shared.stop.store(true, Ordering::Relaxed);
        k.join().expect("killer thread");
    });
    let elapsed = started.elapsed();
    let killed = stats.add_killed + stats.repeat_killed + stats.del_killed;
    eprintln!(
        "{} execs in {elapsed:.1?}: {} signalled ({} while holding the lock), {killed} died of it; \
         ADD ok {} / failed {} / killed {}; repeated ADD ok {} / killed {}; later retries of \
         killed ADDs {}; DEL ok {} / killed {}",
        shared.spawned.load(Ordering::Relaxed),
        shared.signalled.load(Ordering::Relaxed),
        shared.signalled_holder.load(Ordering::Relaxed),
        stats.add_ok,
        stats.add_failed,
        stats.add_killed,
        stats.repeat_ok,
        stats.repeat_killed,
        stats.retried_leftover,
        stats.del_ok,
        stats.del_killed,
    );
    for (k, n) in &stats.after_kill {
        eprintln!("  {n:5} × {k}");
    }
    for f in &stats.failures {
        eprintln!("  a failed ADD said: {f}");
    }
    let violations = shared.violations.lock().unwrap().clone();
    fail("protocol violations during the run", &violations, &history, seed);
    assert!(killed > 0, "the killer never hit a running request");

    // (a), (b) and no orphans, straight from the files.
    let disk = Disk::read(&net_dir);
    fail("the store after the run", &problems(&disk, &ids), &history, seed);

    // What the killed ADDs left behind, to show the run reached the interesting states.
    // An index left by a killed ADD may name an address another owner has taken since: the
    // index is written first, and the address was still free. That is by design (DEL and a
    // retried ADD check the record's owner), so such indexes are counted, not failed.
    let (mut nothing, mut bad_index, mut index_only, mut partial, mut complete) = (0, 0, 0, 0, 0);
    let mut taken_since = 0;
    let records = disk.records();
    for (id, _) in ids.iter().filter(|(_, s)| **s == State::Leftover) {
        match disk.owner(id) {
            None => nothing += 1,
            Some(Entry::Bad(_)) => bad_index += 1,
            Some(Entry::Ok(idx)) => {
                taken_since += idx
                    .ips
                    .iter()
                    .filter(|ip| records.get(ip.to_string().as_str()).is_some_and(|r| r.container_id != *id))
                    .count();
                match disk.held_by(id).len() {
                    0 => index_only += 1,
                    n if n < idx.ips.len() => partial += 1,
                    _ => complete += 1,
                }
            }
        }
    }
    eprintln!(
        "killed ADDs left alone: {nothing} left nothing, {bad_index} an unreadable index, \
         {index_only} an index only, {partial} an index and some leases, {complete} a complete lease; \
         {taken_since} address(es) these indexes name are leased to another owner now"
    );

    // (c) `podcidr status --json` agrees with the records.
    let doc = status_json(&data);
    let net = status_network(&doc, NETWORK);
    assert_eq!(net["unreadable"], json!([]), "status reports unreadable records: {net:#}");
    let from_status: BTreeMap<String, String> = net["leases"]
        .as_array()
        .expect("status leases")
        .iter()
        .map(|l| (l["ip"].as_str().unwrap().to_string(), l["containerID"].as_str().unwrap().to_string()))
        .collect();
    let from_disk: BTreeMap<String, String> =
        disk.records().into_iter().map(|(ip, r)| (ip.to_string(), r.container_id.clone())).collect();
    assert_eq!(from_status, from_disk, "status disagrees with leases/");

    // (d) A DEL of each leftover cleans it up, and takes nothing from anyone else.
    let leftovers: Vec<String> = ids.iter().filter(|(_, s)| **s == State::Leftover).map(|(id, _)| id.clone()).collect();
    for id in &leftovers {
        cni("DEL", id, &conf).ok();
        ids.insert(id.clone(), State::Clean);
    }
    let disk = Disk::read(&net_dir);
    fail("the store after DEL of every leftover", &problems(&disk, &ids), &history, seed);

    // And nothing leaks: once every holder is DELed the store is empty.
    let held: Vec<String> = ids.iter().filter(|(_, s)| matches!(s, State::Held(_))).map(|(id, _)| id.clone()).collect();
    for id in &held {
        cni("DEL", id, &conf).ok();
        ids.insert(id.clone(), State::Clean);
    }
    let disk = Disk::read(&net_dir);
    assert!(
        disk.leases.is_empty() && disk.owners.is_empty(),
        "the store is not empty after every ID was DELed: {disk:#?}"
    );
    eprintln!("total {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// A full file system.
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted on a fresh temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(opts: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs -o {opts} failed: {st}");
        Tmpfs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.dir.path();
        let ok = Command::new("umount").arg(p).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn check_granted(data: &Path, granted: &[(String, String)], opts: &str) {
    let disk = Disk::read(&data.join("full"));
    for (id, ip) in granted {
        match disk.leases.get(ip) {
            Some(Entry::Ok(rec)) if rec.container_id == *id => {}
            other => panic!("{opts}: {id} was granted {ip}, but leases/{ip} is {other:?}"),
        }
        match disk.owner(id) {
            Some(Entry::Ok(idx)) if idx.ips.iter().map(|i| i.to_string()).eq([ip.clone()]) => {}
            other => panic!("{opts}: {id} holds {ip}, but its index is {other:?}"),
        }
    }
    let doc = status_json(data);
    let net = status_network(&doc, "full");
    assert_eq!(net["unreadable"], json!([]), "{opts}: {net:#}");
    let listed: BTreeSet<&str> = net["leases"].as_array().unwrap().iter().map(|l| l["ip"].as_str().unwrap()).collect();
    for (_, ip) in granted {
        assert!(listed.contains(ip.as_str()), "{opts}: status misses {ip}: {net:#}");
    }
}

fn fill_until_full(opts: &str) {
    let fs = Tmpfs::mount(opts);
    let data = fs.path().join("data");
    let conf = common::conf(&data, "1.0.0", "full", json!({ "ranges": [[{ "subnet": "10.30.0.0/16" }]] }));
    let mut granted: Vec<(String, String)> = Vec::new();
    let mut failure = None;
    for i in 0..1000 {
        let id = format!("c{i}");
        match cni("ADD", &id, &conf).reply() {
            Reply::Ok(Some(v)) => granted.push((id, result_ips(&v)[0].clone())),
            Reply::Ok(None) => panic!("{opts}: ADD {id} succeeded without a result"),
            Reply::Err { code, msg } => {
                assert_eq!(code, 5, "{opts}: ADD {id} on a full file system: {msg}");
                failure = Some((id, msg));
                break;
            }
        }
    }
    let (failed_id, msg) = failure.unwrap_or_else(|| panic!("{opts}: the file system never filled"));
    assert!(!granted.is_empty(), "{opts}: not one ADD fitted; the mount options are too small");
    eprintln!("{opts}: {} ADDs fitted, then code 5: {msg}", granted.len());

    check_granted(&data, &granted, opts);
    // A repeated ADD needs no new file: it still answers with the lease it holds.
    let (id0, ip0) = granted[0].clone();
    let again = cni("ADD", &id0, &conf).ok();
    assert_eq!(result_ips(&again), [ip0.as_str()], "{opts}: repeated ADD of {id0}");
    // The runtime DELs the failed ADD; an operator DELs another pod to make room.
    cni("DEL", &failed_id, &conf).ok();
    let disk = Disk::read(&data.join("full"));
    assert!(
        disk.owner(&failed_id).is_none() && disk.held_by(&failed_id).is_empty(),
        "{opts}: DEL of the failed {failed_id} left {disk:#?}"
    );
    cni("DEL", &id0, &conf).ok();
    let rest = &granted[1..];
    let disk = Disk::read(&data.join("full"));
    assert!(!disk.leases.contains_key(&ip0) && disk.owner(&id0).is_none(), "{opts}: DEL of {id0} left {disk:#?}");
    check_granted(&data, rest, opts);
    let fresh = cni("ADD", "after-del", &conf).ok();
    let mut rest = rest.to_vec();
    rest.push(("after-del".into(), result_ips(&fresh)[0].clone()));
    check_granted(&data, &rest, opts);
    // Full again: still a clean code 5.
    match cni("ADD", "one-too-many", &conf).reply() {
        Reply::Err { code: 5, .. } => {}
        other => panic!("{opts}: ADD on a full file system again: {other:?}"),
    }
    cni("DEL", "one-too-many", &conf).ok();
    check_granted(&data, &rest, opts);
}

#[test]
fn a_full_file_system_gives_clean_io_errors_and_loses_nothing() {
    if !common::is_root() {
        assert_ne!(
            std::env::var("PODCIDR_E2E").as_deref(),
            Ok("1"),
            "PODCIDR_E2E=1 but not root: the full file system test needs root to mount tmpfs"
        );
        eprintln!("skipped: not root");
        return;
    }
    // Out of pages (an even and an odd number), then out of inodes (each parity), so the
    // failure falls on the index, on a lease record, or on the file creation itself.
    for opts in ["size=64k,nr_inodes=64", "size=60k,nr_inodes=64", "size=1m,nr_inodes=13", "size=1m,nr_inodes=14"] {
        fill_until_full(opts);
    }
}
