//! Issue 11 §8, the operator at scale, against the stateful stand-in API server
//! (`tests/kubeapi`): not a timed test, a measurement to put in docs/benchmarks.md.
//!
//! - restore: 5,000 Nodes that already hold CIDRs; the operator is started and the CPU time
//!   (user + system, from /proc) it has used when /readyz turns ready, and its resident memory
//!   then and after the burst;
//! - burst: 1,000 new Nodes at once; the time until the API server answered the last of their
//!   Node writes, beside what the client rate limit allows (`--kube-api-qps` 20,
//!   `--kube-api-burst` 30: about (1,000 - 30) / 20 s for the writes alone), with the burst's
//!   timeline and requests from the API server's log.
//!
//! `cargo bench --bench operator_scale [-- --nodes N --burst M]`; `PODCIDR_OPERATOR_BIN=path`
//! runs another build of the operator (an earlier commit's, side by side).

use podcidr_testsupport::kubeapi;

use kubeapi::KubeApi;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_podcidr-operator");

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (CPU seconds used, resident MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu / ticks, rss_kib / 1024.0)
}

fn ready(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = write!(s, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r.starts_with("HTTP/1.1 200")
}

fn main() {
    let (nodes, burst) = (arg("--nodes", 5000), arg("--burst", 1000));
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start("v1.36.2");
    // 10.0.0.0/8 by /24: 65,536 slices; the restored nodes hold the first ones.
    for i in 0..nodes {
        let cidr = format!("10.{}.{}.0/24", i / 256, i % 256);
        api.create("/api/v1/nodes", &json!({"metadata":{"name":format!("old-{i:05}")},"spec":{"podCIDRs":[cidr]}}));
    }
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (metrics, health) = (free(), free());
    let kubeconfig = api.kubeconfig(dir.path(), "bench");
    let started = Instant::now();
    let bin = std::env::var("PODCIDR_OPERATOR_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut child = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--cluster-pool-ipv4-cidr", "10.0.0.0/8", "--cluster-pool-ipv4-mask-size", "24"])
        .args(["--metrics-bind-address", &metrics.to_string(), "--health-probe-bind-address", &health.to_string()])
        .args(["--leader-elect-lease-duration", "15s"])
        .stdout(Stdio::null())
        .stderr(
            std::env::var_os("PODCIDR_BENCH_STDERR")
                .map_or_else(Stdio::null, |p| std::fs::File::create(p).unwrap().into()),
        )
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready(health) {
        assert!(Instant::now() < deadline, "not ready after 300 s");
        assert!(child.try_wait().unwrap().is_none(), "the operator exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let restore_wall = started.elapsed();
    let (restore_cpu, restore_rss) = usage(pid);
    println!(
        "restore of {nodes} Nodes: ready after {restore_wall:.2?} wall, {restore_cpu:.2} s CPU, {restore_rss:.1} MiB resident"
    );

    let logged_before = api.requests().len();
    let burst_start = Instant::now();
    let names: Vec<String> = (0..burst).map(|i| format!("new-{i:05}")).collect();
    for n in &names {
        api.create_node(n, &[]);
    }
    let created = burst_start.elapsed();
    let mut exited = None;
    let ok = api.wait_for(Duration::from_secs(600), |api| {
        exited = child.try_wait().unwrap();
        let c = api.node_cidrs();
        exited.is_some() || names.iter().all(|n| c.get(n).is_some_and(|l| !l.is_empty()))
    });
    // E.g. the lease not renewed in time on an overloaded machine: the run says so and stops.
    assert!(exited.is_none(), "the operator exited during the burst: {exited:?}");
    // Done when the API server answered the last Node write, by its own log: polling the
    // Node list (6,000 Nodes, parsed each time anything changes) lags behind by 0.3-1.5 s,
    // more when other writes follow, and would measure the poll.
    let last_write = api.requests()[logged_before..]
        .iter()
        .filter(|l| l.method == "PATCH" && l.status == 200 && l.path.starts_with("/api/v1/nodes/new-"))
        .map(|l| l.at)
        .max();
    let burst_wall = last_write.map_or_else(|| burst_start.elapsed(), |at| at.duration_since(burst_start));
    let (cpu, rss) = usage(pid);
    let floor = (burst.saturating_sub(30)) as f64 / 20.0;
    println!(
        "burst of {burst} Nodes: {} after {burst_wall:.2?} (the default client rate limit alone allows it in about {floor:.1} s); \
         {:.2} s CPU for the burst, {rss:.1} MiB resident",
        if ok { "all assigned" } else { "NOT all assigned" },
        cpu - restore_cpu
    );
    // Where the burst's requests went: each takes a token of the same 20 req/s.
    let mut kinds: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for l in &api.requests()[logged_before..] {
        *kinds.entry(kind(&l.method, &l.path, &l.query, l.status)).or_default() += 1;
    }
    // When the Node and record writes went: the timeline of the burst, from the request log.
    let ms = |at: Instant| at.saturating_duration_since(burst_start).as_millis();
    let mut patched = 0;
    let mut record_at = Vec::new();
    let mut node_at = Vec::new();
    for l in &api.requests()[logged_before..] {
        if l.method == "PATCH" && l.path.starts_with("/api/v1/nodes/") {
            patched += 1;
            node_at.push(ms(l.at));
        } else if l.path.contains("podcidrblocks") {
            record_at.push(format!("{patched}@{}ms", ms(l.at)));
        }
    }
    println!("Nodes created in {} ms", created.as_millis());
    let nth = |i: usize| node_at.get(i - 1).map_or("-".to_string(), |t| format!("{t} ms"));
    println!(
        "Node writes answered: 1st {}, 30th {}, 100th {}, 500th {}, last {}",
        nth(1),
        nth(30),
        nth(100),
        nth(500),
        nth(node_at.len().max(1))
    );
    println!("record writes (after this many Node writes @ when): {record_at:?}");
    let total: usize = kinds.values().sum();
    println!("requests during the burst: {total}");
    for (k, n) in &kinds {
        println!("  {n:6}  {k}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A request by kind: method, resource (`{name}` for one object), watch or not, status.
fn kind(method: &str, path: &str, query: &str, status: u16) -> String {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let plurals = ["nodes", "ciliumnodes", "podcidrblocks", "podcidrpools", "events", "leases"];
    let resource = match segs.iter().position(|s| plurals.contains(s)) {
        Some(i) => {
            let mut r = segs[i].to_string();
            if i + 1 < segs.len() {
                r.push_str("/{name}");
            }
            if i + 2 < segs.len() {
                r.push('/');
                r.push_str(segs[i + 2]);
            }
            r
        }
        None => path.to_string(),
    };
    let watch = if query.contains("watch=true") || query.contains("watch=1") { " (watch)" } else { "" };
    format!("{method} {resource}{watch} -> {status}")
}
