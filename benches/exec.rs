//! Exec-level benchmark driver: runs podcidr and host-local the way a container runtime does
//! (a clean environment with the CNI_* variables, the network config on stdin, the result read
//! from stdout) and times each exec from spawn to wait.
//!
//! Run through `scripts/bench.sh`, which builds the plugin, finds host-local and a trivial
//! static binary, and turns the JSON this writes into `docs/benchmarks.md`. By hand:
//!
//! ```text
//! cargo bench --bench exec -- --podcidr BIN --host-local BIN --work DIR [--noop BIN]
//!     [--out results.json] [--smoke]
//! ```
//!
//! Both plugins always run alternately, on the same inputs (same container IDs, same store
//! contents), going through every order of them in turn, so drift on a shared machine falls
//! on both alike and each follows the other equally often. Every exec's outcome is checked: a
//! failed request, an address handed out twice, or an address that was already leased aborts
//! the run with a non-zero status. The printed tables end with one line,
//! `bench: ok: ran N execs (M ADDs), 0 duplicate addresses`, which `bench.sh --smoke` checks.

use serde_json::{Value, json};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const NETWORK: &str = "benchnet";
const SUBNET: &str = "10.200.0.0/16";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const IFNAME: &str = "eth0";
const CNI_VERSION: &str = "1.0.0";
/// Report key of podcidr on an empty store, run in the same iterations as a bigger one.
const EMPTY_ALONGSIDE: &str = "podcidr, empty store alongside";

type Res<T> = Result<T, String>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Podcidr,
    HostLocal,
}

#[derive(Clone, Debug)]
struct Plugin {
    kind: Kind,
    bin: PathBuf,
}

impl Plugin {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Podcidr => "podcidr",
            Kind::HostLocal => "host-local",
        }
    }

    /// The network config a runtime would send, with an optional prevResult (CHECK).
    fn config(&self, data_dir: &Path, prev: Option<&Value>) -> Vec<u8> {
        let mut conf = json!({
            "cniVersion": CNI_VERSION,
            "name": NETWORK,
            "type": "bridge",
            "ipam": {
                "type": self.name(),
                "ranges": [[{ "subnet": SUBNET }]],
                "dataDir": data_dir,
            }
        });
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        serde_json::to_vec(&conf).expect("config serializes")
    }
}

/// What one exec returned.
struct Exec {
    took: Duration,
    /// CPU time (user + system, all threads) the child used; meaningful only when no other
    /// child is reaped meanwhile, i.e. outside the concurrent sections.
    cpu: Duration,
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Exec {
    fn describe(&self) -> String {
        format!(
            "exit {:?}, stdout {:?}, stderr {:?}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// CPU time used so far by this process's children that have been waited for.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One exec as a runtime does it. Only spawn → wait is timed; the command is prepared before.
fn exec(bin: &Path, command: &str, cid: &str, stdin: &[u8]) -> Res<Exec> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", format!("/var/run/netns/{cid}"))
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_PATH", "/opt/cni/bin:/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpu_before = children_cpu();
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    // The config is far smaller than a pipe buffer, so this cannot block on the child.
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let _ = pipe.write_all(stdin);
    drop(pipe);
    let out = child.wait_with_output().map_err(|e| format!("waiting for {}: {e}", bin.display()))?;
    let took = start.elapsed();
    let cpu = children_cpu().saturating_sub(cpu_before);
    Ok(Exec { took, cpu, status: out.status.code(), stdout: out.stdout, stderr: out.stderr })
}

/// The IPv4 address of a successful ADD result, and the result itself (CHECK's prevResult).
fn add_result(p: &Plugin, e: &Exec) -> Res<(Ipv4Addr, Value)> {
    if e.status != Some(0) {
        return Err(format!("{} ADD failed: {}", p.name(), e.describe()));
    }
    let v: Value = serde_json::from_slice(&e.stdout)
        .map_err(|err| format!("{} ADD printed no JSON ({err}): {}", p.name(), e.describe()))?;
    let addr = v["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{} ADD result has no ips[0].address: {v}", p.name()))?;
    Ok((addr, v))
}

fn expect_silent(p: &Plugin, verb: &str, e: &Exec) -> Res<()> {
    if e.status != Some(0) {
        return Err(format!("{} {verb} failed: {}", p.name(), e.describe()));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Stats {
    n: usize,
    median_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    mean_ms: f64,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    assert!(n > 0, "no samples");
    let median = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    // Nearest rank.
    let p90 = ms[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    Stats { n, median_ms: median, p90_ms: p90, min_ms: ms[0], mean_ms: ms.iter().sum::<f64>() / n as f64 }
}

fn stats_json(s: &Stats) -> Value {
    json!({ "n": s.n, "median_ms": s.median_ms, "p90_ms": s.p90_ms, "min_ms": s.min_ms, "mean_ms": s.mean_ms })
}

struct Opts {
    podcidr: PathBuf,
    host_local: PathBuf,
    noop: Option<PathBuf>,
    work: PathBuf,
    out: Option<PathBuf>,
    smoke: bool,
}

fn parse_args() -> Res<Opts> {
    let mut args = std::env::args().skip(1);
    let (mut podcidr, mut host_local, mut noop, mut work, mut out, mut smoke) = (None, None, None, None, None, false);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--podcidr" => podcidr = Some(PathBuf::from(val()?)),
            "--host-local" => host_local = Some(PathBuf::from(val()?)),
            "--noop" => noop = Some(PathBuf::from(val()?)),
            "--work" => work = Some(PathBuf::from(val()?)),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--smoke" => smoke = true,
            // cargo bench passes --bench to every harness = false target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Opts {
        podcidr: podcidr.ok_or("--podcidr is required")?,
        host_local: host_local.ok_or("--host-local is required")?,
        noop,
        work: work.ok_or("--work is required (a scratch directory)")?,
        out,
        smoke,
    })
}

/// How much to run.
struct Plan {
    baseline_iters: usize,
    sizes: Vec<usize>,
    warmup: usize,
    /// Discarded ADD/CHECK/DEL cycles before anything is measured.
    warmup_cycles: usize,
    /// ADDs that walk past every lease of the biggest store.
    wrap_iters: usize,
    /// Iterations at a store size.
    iters: fn(usize) -> usize,
    concurrency: Vec<usize>,
    rounds: usize,
    adds_per_round: usize,
}

fn full_iters(size: usize) -> usize {
    match size {
        0..=1_000 => 100,
        1_001..=10_000 => 60,
        _ => 30,
    }
}

fn smoke_iters(_: usize) -> usize {
    5
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        if smoke {
            Plan {
                baseline_iters: 10,
                sizes: vec![0, 200],
                warmup: 1,
                warmup_cycles: 2,
                wrap_iters: 2,
                iters: smoke_iters,
                concurrency: vec![4],
                rounds: 2,
                adds_per_round: 64,
            }
        } else {
            Plan {
                baseline_iters: 200,
                sizes: vec![0, 1_000, 10_000, 50_000],
                warmup: 3,
                warmup_cycles: 50,
                wrap_iters: 10,
                iters: full_iters,
                concurrency: vec![1, 4, 16],
                rounds: 5,
                adds_per_round: 320,
            }
        }
    }
}

/// Both plugins, podcidr first on even iterations and host-local first on odd ones.
fn order(plugins: &[Plugin; 2], i: usize) -> [&Plugin; 2] {
    if i.is_multiple_of(2) { [&plugins[0], &plugins[1]] } else { [&plugins[1], &plugins[0]] }
}

fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(NETWORK)
}

/// Leased addresses in a store, read from its files.
fn leased(p: &Plugin, data_dir: &Path) -> Res<HashSet<Ipv4Addr>> {
    let dir = match p.kind {
        Kind::Podcidr => store_dir(data_dir).join("leases"),
        Kind::HostLocal => store_dir(data_dir),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut set = HashSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        // host-local keeps lock and last_reserved_ip.N beside the leases; neither parses.
        if let Ok(ip) = entry.file_name().to_string_lossy().parse() {
            set.insert(ip);
        }
    }
    Ok(set)
}

/// Points a store's round robin at `ip`, in each plugin's own format.
fn set_last_reserved(p: &Plugin, data_dir: &Path, ip: Ipv4Addr) -> Res<()> {
    let text = match p.kind {
        // Rewritten in place at a fixed width: 39 characters and a newline.
        Kind::Podcidr => format!("{:<39}\n", ip.to_string()),
        Kind::HostLocal => ip.to_string(),
    };
    std::fs::write(store_dir(data_dir).join("last_reserved_ip.0"), text).map_err(|e| e.to_string())
}

/// ADDs (then DELs, untimed) with the round robin set back to the start of the range, so the
/// walk meets every lease before a free address: what follows a wrap-around into the addresses
/// of long-lived pods.
fn wrap_around(
    plugins: &[Plugin; 2],
    dirs: &[PathBuf; 2],
    taken: &HashSet<Ipv4Addr>,
    iters: usize,
    counters: &mut Counters,
) -> Res<Value> {
    let size = taken.len();
    // Just before the lowest leased address; the prefill leased a contiguous block from there.
    let start = taken.iter().min().map_or(GATEWAY, |ip| Ipv4Addr::from(u32::from(*ip) - 1));
    let mut samples: [Vec<Duration>; 2] = Default::default();
    let mut cpu: [Vec<Duration>; 2] = Default::default();
    for it in 0..iters {
        let cid = format!("wrap-{size}-{it:03}");
        for (k, p) in order(plugins, it).into_iter().map(|p| (if p.kind == Kind::Podcidr { 0 } else { 1 }, p)) {
            set_last_reserved(p, &dirs[k], start)?;
            let conf = p.config(&dirs[k], None);
            let e = exec(&p.bin, "ADD", &cid, &conf)?;
            let (ip, _) = add_result(p, &e)?;
            if taken.contains(&ip) {
                return Err(format!("{} ADD handed out {ip}, which is already leased", p.name()));
            }
            samples[k].push(e.took);
            cpu[k].push(e.cpu);
            let e = exec(&p.bin, "DEL", &cid, &conf)?;
            expect_silent(p, "DEL", &e)?;
            counters.execs += 2;
            counters.adds += 1;
        }
    }
    let mut out = json!({ "size": size });
    for (k, p) in plugins.iter().enumerate() {
        let mut st = stats_json(&stats(&samples[k]));
        st["cpu_median_ms"] = json!(stats(&cpu[k]).median_ms);
        out[p.name()] = st;
    }
    Ok(out)
}

fn last_reserved(data_dir: &Path) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(store_dir(data_dir).join("last_reserved_ip.0")).ok()?;
    text.trim().parse().ok()
}

/// Grows podcidr's store to `target` leases with real ADDs (two callers, as the machine has
/// two cores), then gives host-local's store exactly the same leases (same addresses, same
/// container IDs) by writing its files as host-local does: one file per address holding
/// `<containerID>\r\n<ifname>`, plus `last_reserved_ip.0` and `lock`.
fn prefill(
    plugins: &[Plugin; 2],
    dirs: &[PathBuf; 2],
    have: usize,
    target: usize,
    filled: &mut Vec<(Ipv4Addr, String)>,
) -> Res<Duration> {
    let start = Instant::now();
    if target > have {
        let callers = 2;
        let pod = plugins[0].clone();
        let conf = Arc::new(pod.config(&dirs[0], None));
        let mut handles = Vec::new();
        for t in 0..callers {
            let (pod, conf) = (pod.clone(), conf.clone());
            handles.push(std::thread::spawn(move || -> Res<Vec<(Ipv4Addr, String)>> {
                let mut got = Vec::new();
                for i in (have + t..target).step_by(callers) {
                    let cid = format!("fill-{i:06}");
                    let e = exec(&pod.bin, "ADD", &cid, &conf)?;
                    let (ip, _) = add_result(&pod, &e)?;
                    got.push((ip, cid));
                }
                Ok(got)
            }));
        }
        for h in handles {
            let got = h.join().map_err(|_| "a prefill thread panicked")??;
            filled.extend(got);
        }
    }
    let seen: HashSet<Ipv4Addr> = filled.iter().map(|(ip, _)| *ip).collect();
    if seen.len() != filled.len() || filled.len() != target {
        return Err(format!(
            "prefill: podcidr handed out {} distinct addresses for {} ADDs (want {target})",
            seen.len(),
            filled.len()
        ));
    }
    let on_disk = leased(&plugins[0], &dirs[0])?;
    if on_disk != seen {
        return Err(format!(
            "prefill: podcidr's store holds {} leases, its ADDs returned {}",
            on_disk.len(),
            seen.len()
        ));
    }

    let hl = store_dir(&dirs[1]);
    std::fs::create_dir_all(&hl).map_err(|e| format!("{}: {e}", hl.display()))?;
    for (ip, cid) in &filled[have.min(filled.len())..] {
        std::fs::write(hl.join(ip.to_string()), format!("{cid}\r\n{IFNAME}"))
            .map_err(|e| format!("prefill host-local: {e}"))?;
    }
    std::fs::write(hl.join("lock"), b"").map_err(|e| e.to_string())?;
    if let Some(last) = last_reserved(&dirs[0]) {
        std::fs::write(hl.join("last_reserved_ip.0"), last.to_string()).map_err(|e| e.to_string())?;
    }
    let hl_leases = leased(&plugins[1], &dirs[1])?;
    if hl_leases != seen {
        return Err(format!("prefill: host-local's store holds {} leases, podcidr's {}", hl_leases.len(), seen.len()));
    }
    Ok(start.elapsed())
}

#[derive(Default)]
struct Counters {
    execs: usize,
    adds: usize,
    /// ADDs where the two plugins handed out different addresses from identical stores.
    differing_addresses: usize,
}

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// ADD, CHECK, DEL of a new container at a constant store size.
///
/// With `reference`, podcidr is also run on that (empty) store in the same iterations, so the
/// "as fast as with no leases" comparison is made side by side rather than minutes apart.
#[allow(clippy::too_many_arguments)]
fn latency_at(
    plugins: &[Plugin; 2],
    dirs: &[PathBuf; 2],
    reference: Option<&Path>,
    size: usize,
    iters: usize,
    warmup: usize,
    taken: &HashSet<Ipv4Addr>,
    counters: &mut Counters,
) -> Res<Value> {
    // Lanes: (plugin, data dir, leases it holds, name in the report).
    let mut lanes: Vec<(&Plugin, &Path, usize, &str)> =
        vec![(&plugins[0], &dirs[0], size, "podcidr"), (&plugins[1], &dirs[1], size, "host-local")];
    if let Some(r) = reference {
        lanes.push((&plugins[0], r, 0, EMPTY_ALONGSIDE));
    }
    let n = lanes.len();
    let perms = permutations(n);
    // [lane][verb] samples, verbs ADD, CHECK, DEL.
    let mut samples = vec![<[Vec<Duration>; 3]>::default(); n];
    let mut cpu = vec![<[Vec<Duration>; 3]>::default(); n];
    let confs: Vec<Vec<u8>> = lanes.iter().map(|(p, d, _, _)| p.config(d, None)).collect();
    for it in 0..warmup + iters {
        let cid = format!("lat-{size}-{it:04}");
        // Every order of the lanes in turn: an exec right after host-local's runs measurably
        // slower, so each lane must follow each other lane equally often.
        let ord = perms[it % perms.len()].clone();
        let mut prev: Vec<Option<Value>> = vec![None; n];
        let mut addrs: Vec<Option<Ipv4Addr>> = vec![None; n];
        for &k in &ord {
            let (p, _, _, name) = lanes[k];
            let e = exec(&p.bin, "ADD", &cid, &confs[k])?;
            let (ip, result) = add_result(p, &e)?;
            if (k < 2 && taken.contains(&ip)) || ip == GATEWAY {
                return Err(format!("{name} ADD at {size} leases handed out {ip}, which is already leased"));
            }
            addrs[k] = Some(ip);
            prev[k] = Some(result);
            if it >= warmup {
                samples[k][0].push(e.took);
                cpu[k][0].push(e.cpu);
            }
        }
        if addrs[0] != addrs[1] {
            counters.differing_addresses += 1;
        }
        for &k in &ord {
            let (p, dir, _, name) = lanes[k];
            let conf = p.config(dir, prev[k].as_ref());
            let e = exec(&p.bin, "CHECK", &cid, &conf)?;
            expect_silent(p, &format!("CHECK ({name})"), &e)?;
            if it >= warmup {
                samples[k][1].push(e.took);
                cpu[k][1].push(e.cpu);
            }
        }
        for &k in &ord {
            let (p, _, _, name) = lanes[k];
            let e = exec(&p.bin, "DEL", &cid, &confs[k])?;
            expect_silent(p, &format!("DEL ({name})"), &e)?;
            if it >= warmup {
                samples[k][2].push(e.took);
                cpu[k][2].push(e.cpu);
            }
        }
        counters.execs += 3 * n;
        counters.adds += n;
    }
    // The sizes stayed constant.
    for (p, dir, want, name) in &lanes {
        let held = leased(p, dir)?.len();
        if held != *want {
            return Err(format!("{name} store holds {held} leases after the ADD/CHECK/DEL cycles, not {want}"));
        }
    }
    let mut out = json!({ "size": size });
    for (k, (_, _, _, name)) in lanes.iter().enumerate() {
        let mut per = json!({});
        for (v, verb) in ["ADD", "CHECK", "DEL"].iter().enumerate() {
            per[*verb] = stats_json(&stats(&samples[k][v]));
            per[*verb]["cpu_median_ms"] = json!(stats(&cpu[k][v]).median_ms);
        }
        out[*name] = per;
    }
    Ok(out)
}

/// `callers` threads ADD distinct containers into a fresh store at once; returns ADD/s and
/// every address handed out.
fn concurrent_round(p: &Plugin, data_dir: &Path, callers: usize, adds: usize, tag: &str) -> Res<(f64, Vec<Ipv4Addr>)> {
    let conf = Arc::new(p.config(data_dir, None));
    let barrier = Arc::new(Barrier::new(callers + 1));
    let per = adds / callers;
    let mut handles = Vec::new();
    for t in 0..callers {
        let (p, conf, barrier, tag) = (p.clone(), conf.clone(), barrier.clone(), tag.to_string());
        // Each caller's commands are prepared on its own thread; the clock starts at the barrier.
        handles.push(std::thread::spawn(move || -> Res<Vec<Ipv4Addr>> {
            barrier.wait();
            let mut got = Vec::with_capacity(per);
            for i in 0..per {
                let cid = format!("{tag}-t{t:02}-{i:04}");
                let e = exec(&p.bin, "ADD", &cid, &conf)?;
                got.push(add_result(&p, &e)?.0);
            }
            Ok(got)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::with_capacity(per * callers);
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(v)) => all.extend(v),
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some("a caller thread panicked".into()),
        }
    }
    let wall = start.elapsed();
    if let Some(e) = err {
        return Err(e);
    }
    Ok((all.len() as f64 / wall.as_secs_f64(), all))
}

fn elf_is_static(bin: &Path) -> Option<bool> {
    let b = std::fs::read(bin).ok()?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().ok()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?);
        if p_type == 3 {
            return Some(false); // PT_INTERP: dynamically linked
        }
    }
    Some(true)
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// CPU and I/O pressure (PSI, share of the last minute some task waited), e.g. "cpu 3% io 1%".
fn pressure() -> String {
    let avg60 = |kind: &str| {
        let text = read_trim(&format!("/proc/pressure/{kind}"));
        let some = text.lines().find(|l| l.starts_with("some"))?;
        let v = some.split_whitespace().find_map(|w| w.strip_prefix("avg60="))?;
        Some(format!("{kind} {v}%"))
    };
    let parts: Vec<String> = ["cpu", "io"].iter().filter_map(|k| avg60(k)).collect();
    if parts.is_empty() { "unknown".into() } else { parts.join(", ") }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({
        "cpu": cpu,
        "nproc": nproc,
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
        "loadavg_start": read_trim("/proc/loadavg"),
        "pressure_start": pressure(),
    })
}

fn binary_info(bin: &Path) -> Value {
    let path = bin.display().to_string();
    json!({
        "path": path,
        "static": elf_is_static(bin),
        "pie": std::fs::read(bin).ok().is_some_and(|b| b.len() > 0x12 && b[0x10] == 3 && b[0x11] == 0),
        "musl_target": path.contains("-linux-musl"),
    })
}

fn run(opts: &Opts) -> Res<Value> {
    let plan = Plan::new(opts.smoke);
    let plugins = [
        Plugin { kind: Kind::Podcidr, bin: opts.podcidr.clone() },
        Plugin { kind: Kind::HostLocal, bin: opts.host_local.clone() },
    ];
    let mut counters = Counters::default();
    let mut report = json!({
        "mode": if opts.smoke { "smoke" } else { "full" },
        "machine": machine(),
        "podcidr": binary_info(&opts.podcidr),
        "host_local": binary_info(&opts.host_local),
    });
    std::fs::create_dir_all(&opts.work).map_err(|e| e.to_string())?;

    // Warm-up, discarded: both plugins' pages into the page cache, the driver's threads and
    // allocations settled.
    eprintln!("bench: warm-up ({} ADD/CHECK/DEL cycles each, discarded)", plan.warmup_cycles);
    let warm = [opts.work.join("warm-podcidr"), opts.work.join("warm-host-local")];
    latency_at(&plugins, &warm, None, 0, 1, plan.warmup_cycles, &HashSet::new(), &mut counters)?;

    // Baseline: what an exec costs at all.
    eprintln!("bench: baseline execs ({} each)", plan.baseline_iters);
    let scratch = opts.work.join("baseline");
    let mut baseline: Vec<(String, PathBuf, &str)> = Vec::new();
    if let Some(noop) = &opts.noop {
        baseline.push(("trivial static musl no-op".into(), noop.clone(), "VERSION"));
    }
    baseline.push(("podcidr VERSION".into(), opts.podcidr.clone(), "VERSION"));
    baseline.push(("host-local VERSION".into(), opts.host_local.clone(), "VERSION"));
    let conf = plugins[0].config(&scratch, None);
    let mut base_samples = vec![Vec::new(); baseline.len()];
    let mut base_cpu = vec![Vec::new(); baseline.len()];
    for it in 0..plan.warmup + plan.baseline_iters {
        for j in 0..baseline.len() {
            // Rotate the order so no binary always runs first.
            let j = (j + it) % baseline.len();
            let (name, bin, verb) = &baseline[j];
            let e = exec(bin, verb, "baseline", &conf)?;
            if e.status != Some(0) {
                return Err(format!("{name} failed: {}", e.describe()));
            }
            counters.execs += 1;
            if it >= plan.warmup {
                base_samples[j].push(e.took);
                base_cpu[j].push(e.cpu);
            }
        }
    }
    report["baseline"] = baseline
        .iter()
        .zip(base_samples.iter().zip(&base_cpu))
        .map(|((name, _, _), (s, c))| {
            let mut st = stats_json(&stats(s));
            st["cpu_median_ms"] = json!(stats(c).median_ms);
            json!({ "name": name, "stats": st })
        })
        .collect();

    // Latency at constant store sizes.
    let dirs = [opts.work.join("lat-podcidr"), opts.work.join("lat-host-local")];
    let reference = opts.work.join("lat-podcidr-empty");
    let mut filled = Vec::new();
    let mut have = 0;
    let mut sizes = Vec::new();
    for &size in &plan.sizes {
        let took = prefill(&plugins, &dirs, have, size, &mut filled)?;
        if size > have {
            eprintln!(
                "bench: prefilled {} leases ({} ADDs of the real podcidr binary in {:.1} s)",
                size,
                size - have,
                took.as_secs_f64()
            );
        }
        have = size;
        let taken: HashSet<Ipv4Addr> = filled.iter().map(|(ip, _)| *ip).collect();
        let iters = (plan.iters)(size);
        eprintln!("bench: ADD/CHECK/DEL at {size} leases ({iters} iterations)");
        let reference = (size > 0).then_some(reference.as_path());
        let mut row = latency_at(&plugins, &dirs, reference, size, iters, plan.warmup, &taken, &mut counters)?;
        row["prefill_s"] = json!(took.as_secs_f64());
        sizes.push(row);
    }
    report["sizes"] = Value::Array(sizes);
    if !filled.is_empty() {
        eprintln!(
            "bench: ADD with the round robin restarting before {} leases ({} iterations)",
            filled.len(),
            plan.wrap_iters
        );
        let taken: HashSet<Ipv4Addr> = filled.iter().map(|(ip, _)| *ip).collect();
        report["wrap"] = wrap_around(&plugins, &dirs, &taken, plan.wrap_iters, &mut counters)?;
    }

    // Concurrent callers.
    let mut conc = Vec::new();
    for &callers in &plan.concurrency {
        eprintln!("bench: {callers} concurrent callers ({} rounds of {} ADDs)", plan.rounds, plan.adds_per_round);
        let mut rates: [Vec<f64>; 2] = Default::default();
        let mut dups = [0usize; 2];
        let mut total = [0usize; 2];
        for round in 0..plan.rounds {
            for p in order(&plugins, round) {
                let k = if p.kind == Kind::Podcidr { 0 } else { 1 };
                let dir = opts.work.join(format!("conc-{callers}-{round}-{}", p.name()));
                let tag = format!("c{callers}-r{round}");
                let (rate, addrs) = concurrent_round(p, &dir, callers, plan.adds_per_round, &tag)?;
                let distinct: HashSet<Ipv4Addr> = addrs.iter().copied().collect();
                dups[k] += addrs.len() - distinct.len();
                let on_disk = leased(p, &dir)?;
                if on_disk != distinct {
                    return Err(format!(
                        "{} with {callers} callers: {} addresses returned, {} leases on disk",
                        p.name(),
                        distinct.len(),
                        on_disk.len()
                    ));
                }
                total[k] += addrs.len();
                rates[k].push(rate);
                counters.execs += addrs.len();
                counters.adds += addrs.len();
                // The store stays until the end: deleting files here would slow the next rounds'
                // file creation on a file system without a journal (see docs/benchmarks.md).
            }
        }
        let mut row = json!({ "callers": callers, "rounds": plan.rounds, "adds_per_round": plan.adds_per_round });
        for (k, p) in plugins.iter().enumerate() {
            let mut r = rates[k].clone();
            r.sort_by(f64::total_cmp);
            row[p.name()] = json!({
                "adds_per_s_median": r[r.len() / 2],
                "adds_per_s_min": r[0],
                "adds_per_s_max": r[r.len() - 1],
                "adds": total[k],
                "duplicates": dups[k],
            });
        }
        conc.push(row);
        if dups != [0, 0] {
            report["concurrency"] = Value::Array(conc);
            return Err(format!(
                "duplicate addresses with {callers} callers: podcidr {}, host-local {}",
                dups[0], dups[1]
            ));
        }
    }
    report["concurrency"] = Value::Array(conc);
    report["execs"] = json!(counters.execs);
    report["adds"] = json!(counters.adds);
    report["duplicates"] = json!(0);
    report["differing_addresses"] = json!(counters.differing_addresses);
    report["machine"]["loadavg_end"] = json!(read_trim("/proc/loadavg"));
    report["machine"]["pressure_end"] = json!(pressure());
    Ok(report)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The Markdown tables printed for people (and put into docs/benchmarks.md by bench.sh).
fn tables(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let pod = &r["podcidr"];
    let _ = writeln!(
        s,
        "Machine: {} × {} (nproc), Linux {}, load average {} at the start and {} at the end, \
         pressure (PSI some, avg60) {} at the start and {} at the end. podcidr binary: {}{}.\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["nproc"],
        m["kernel"].as_str().unwrap_or("?"),
        m["loadavg_start"].as_str().unwrap_or("?").split(' ').take(3).collect::<Vec<_>>().join(" "),
        m["loadavg_end"].as_str().unwrap_or("?").split(' ').take(3).collect::<Vec<_>>().join(" "),
        m["pressure_start"].as_str().unwrap_or("?"),
        m["pressure_end"].as_str().unwrap_or("?"),
        match pod["static"].as_bool() {
            Some(true) if pod["pie"].as_bool() == Some(true) => "static-pie",
            Some(true) => "static",
            Some(false) => "dynamically linked",
            None => "not ELF?",
        },
        if pod["musl_target"].as_bool() == Some(true) { ", musl (x86_64-unknown-linux-musl)" } else { ", glibc" }
    );

    let _ = writeln!(s, "Exec of a binary that does nothing (ms):\n");
    let _ = writeln!(s, "| binary | median | p90 | CPU median | n |\n|---|--:|--:|--:|--:|");
    for b in r["baseline"].as_array().into_iter().flatten() {
        let st = &b["stats"];
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.3} | {:.3} | {} |",
            b["name"].as_str().unwrap_or("?"),
            f(&st["median_ms"]),
            f(&st["p90_ms"]),
            f(&st["cpu_median_ms"]),
            st["n"]
        );
    }

    let _ = writeln!(
        s,
        "\nOne request, exec to exit (ms), at a constant number of leases in a /16; \
         ratio = podcidr median / host-local median; \"empty alongside\" is podcidr on an \
         empty store in the same iterations. CPU is the median CPU time (user + system, \
         all threads) of the plugin's process, which a busy machine disturbs less than the wall \
         time:\n"
    );
    let _ = writeln!(
        s,
        "| leases | verb | podcidr median | podcidr p90 | host-local median | host-local p90 | ratio | CPU podcidr / host-local | podcidr, empty alongside | n |\n|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    for row in r["sizes"].as_array().into_iter().flatten() {
        for verb in ["ADD", "CHECK", "DEL"] {
            let (p, h) = (&row["podcidr"][verb], &row["host-local"][verb]);
            let _ = writeln!(
                s,
                "| {} | {verb} | {:.3} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} / {:.2} | {} | {} |",
                row["size"],
                f(&p["median_ms"]),
                f(&p["p90_ms"]),
                f(&h["median_ms"]),
                f(&h["p90_ms"]),
                f(&p["median_ms"]) / f(&h["median_ms"]),
                f(&p["cpu_median_ms"]),
                f(&h["cpu_median_ms"]),
                row[EMPTY_ALONGSIDE][verb]["median_ms"].as_f64().map_or("".into(), |v| format!("{v:.3}")),
                p["n"]
            );
        }
    }

    if let Some(w) = r.get("wrap").filter(|w| w.is_object()) {
        let (p, h) = (&w["podcidr"], &w["host-local"]);
        let _ = writeln!(
            s,
            "\nADD when the round robin starts over just before {} leased addresses in a row (it then \
             walks past all of them; no target, the worst case of the walk):\n",
            w["size"]
        );
        let _ = writeln!(
            s,
            "| podcidr median | podcidr p90 | host-local median | host-local p90 | ratio | CPU podcidr / host-local | n |\n|--:|--:|--:|--:|--:|--:|--:|"
        );
        let _ = writeln!(
            s,
            "| {:.3} | {:.3} | {:.2} | {:.2} | {:.3} | {:.3} / {:.2} | {} |",
            f(&p["median_ms"]),
            f(&p["p90_ms"]),
            f(&h["median_ms"]),
            f(&h["p90_ms"]),
            f(&p["median_ms"]) / f(&h["median_ms"]),
            f(&p["cpu_median_ms"]),
            f(&h["cpu_median_ms"]),
            p["n"]
        );
    }

    let _ = writeln!(
        s,
        "\nConcurrent callers, each ADDing its own containers into a fresh store \
         (median ADD/s over the rounds; ratio = podcidr / host-local):\n"
    );
    let _ = writeln!(
        s,
        "| callers | podcidr ADD/s | host-local ADD/s | ratio | ADDs (each) | duplicate addresses (podcidr / host-local) |\n|--:|--:|--:|--:|--:|--:|"
    );
    for row in r["concurrency"].as_array().into_iter().flatten() {
        let (p, h) = (&row["podcidr"], &row["host-local"]);
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.2} | {} | {} / {} |",
            row["callers"],
            f(&p["adds_per_s_median"]),
            f(&h["adds_per_s_median"]),
            f(&p["adds_per_s_median"]) / f(&h["adds_per_s_median"]),
            p["adds"],
            p["duplicates"],
            h["duplicates"]
        );
    }

    let _ = writeln!(s, "\nTargets:\n");
    let _ = writeln!(s, "| target | figure | |\n|---|---|---|");
    let size_row = |n: u64| r["sizes"].as_array().and_then(|a| a.iter().find(|row| row["size"].as_u64() == Some(n)));
    let med = |row: &Value, plugin: &str, verb: &str| f(&row[plugin][verb]["median_ms"]);
    if let Some(z) = size_row(0) {
        for verb in ["ADD", "DEL"] {
            let ratio = med(z, "podcidr", verb) / med(z, "host-local", verb);
            let _ = writeln!(s, "| empty-store {verb} ≤ 0.25× host-local | {ratio:.3}× | {} |", verdict(ratio <= 0.25));
        }
        if let Some(big) = size_row(50_000) {
            for verb in ["ADD", "CHECK", "DEL"] {
                let ratio = med(big, "podcidr", verb) / med(z, "podcidr", verb);
                let alongside = med(big, EMPTY_ALONGSIDE, verb);
                let ratio2 = med(big, "podcidr", verb) / alongside;
                let _ = writeln!(
                    s,
                    "| {verb} at 50,000 leases ≤ 1.5× podcidr's own 0-lease {verb} | {ratio:.2}× the 0-lease run ({:.3} ms vs {:.3} ms); {ratio2:.2}× an empty store alongside ({alongside:.3} ms) | {} |",
                    med(big, "podcidr", verb),
                    med(z, "podcidr", verb),
                    verdict(ratio <= 1.5 && ratio2 <= 1.5)
                );
            }
            for verb in ["ADD", "CHECK", "DEL"] {
                let faster = med(big, "host-local", verb) / med(big, "podcidr", verb);
                let _ = writeln!(
                    s,
                    "| {verb} at 50,000 leases ≥ 100× faster than host-local | {faster:.0}× | {} |",
                    verdict(faster >= 100.0)
                );
            }
        }
    }
    if let Some(row) =
        r["concurrency"].as_array().and_then(|a| a.iter().find(|row| row["callers"].as_u64() == Some(16)))
    {
        let ratio = f(&row["podcidr"]["adds_per_s_median"]) / f(&row["host-local"]["adds_per_s_median"]);
        let dups = row["podcidr"]["duplicates"].as_u64().unwrap_or(u64::MAX);
        let _ = writeln!(
            s,
            "| 16 concurrent callers ≥ 3× host-local ADD/s, zero duplicates | {ratio:.2}×, {dups} duplicates | {} |",
            verdict(ratio >= 3.0 && dups == 0)
        );
    }
    let baseline = |part: &str| {
        r["baseline"].as_array().and_then(|a| a.iter().find(|b| b["name"].as_str().is_some_and(|n| n.contains(part))))
    };
    // Without a no-op binary, podcidr VERSION (which exits before reading stdin) stands in.
    let (noop, what) = match baseline("no-op") {
        Some(b) => (Some(b), "a trivial static binary"),
        None => (baseline("podcidr VERSION"), "podcidr VERSION (proxy)"),
    };
    if let (Some(noop), Some(z)) = (noop, size_row(0)) {
        let base = f(&noop["stats"]["median_ms"]);
        for verb in ["ADD", "CHECK", "DEL"] {
            let ratio = med(z, "podcidr", verb) / base;
            let _ = writeln!(
                s,
                "| stretch: empty-store {verb} ≤ 2× {what} | {ratio:.2}× ({:.3} ms vs {base:.3} ms) | {} |",
                med(z, "podcidr", verb),
                verdict(ratio <= 2.0)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n{} execs, {} ADDs, 0 duplicate addresses; the two plugins handed out different \
         addresses from identical stores {} time(s).",
        r["execs"], r["adds"], r["differing_addresses"]
    );
    s
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(report) => {
            print!("{}", tables(&report));
            println!("bench: ok: ran {} execs ({} ADDs), 0 duplicate addresses", report["execs"], report["adds"]);
            if let Some(out) = &opts.out {
                let text = serde_json::to_string_pretty(&report).expect("report serializes");
                if let Err(e) = std::fs::write(out, text + "\n") {
                    eprintln!("bench: cannot write {}: {e}", out.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
