//! The operator's CLI: the same binary run without CNI_COMMAND.

use crate::cni::config::{self, DEFAULT_DATA_DIR};
use crate::cni::version::SUPPORTED;
use crate::ipam::gc;
use crate::ipam::pool::Pool;
use crate::modes;
use crate::modes::source::{Cached, now_ms};
use crate::store::host_local;
use crate::store::{Access, LeaseRecord, LeaseState, Store};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "podcidr",
    version,
    about = "CNI IPAM plugin: pod addresses from the node's pod CIDR.\n\
Run by a container runtime with CNI_COMMAND set; without it, these commands are for operators."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show each network's ranges and who holds which address.
    Status {
        /// The ipam stanza's dataDir.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Find stale leases and (with --apply) release them. A dry run by default.
    ///
    /// Leases from an earlier boot are always stale. With --netns-gone, so are leases whose
    /// network namespace path no longer exists; with --keep or --keep-from, every lease whose
    /// container is not listed.
    Gc {
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[arg(long)]
        network: Option<String>,
        /// Also release leases whose recorded network namespace path is gone.
        #[arg(long)]
        netns_gone: bool,
        /// Live containers (`ID` or `ID:IFNAME`, comma-separated or repeated); every other lease is released.
        #[arg(long, value_delimiter = ',')]
        keep: Vec<String>,
        /// A file (or `-` for stdin) with one live container ID (or `ID:IFNAME`) per line,
        /// e.g. from `crictl pods -q`.
        #[arg(long)]
        keep_from: Option<PathBuf>,
        /// Release what is found (without it, only list it).
        #[arg(long)]
        apply: bool,
        #[arg(long)]
        json: bool,
    },
    /// Adopt host-local's leases, so running pods keep their addresses after the switch.
    ImportHostLocal {
        /// host-local's directory for the network, e.g. /var/lib/cni/networks/mynet.
        #[arg(long)]
        from: PathBuf,
        /// The network name (the conflist's `name`).
        #[arg(long)]
        network: String,
        /// podcidr's dataDir.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The network config (.conf or .conflist) whose ranges the leases belong to; records
        /// then carry subnet and gateway. Optional.
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Interface name for leases in host-local's old id-only format.
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// Print the version and the CNI spec versions spoken.
    Version,
}

/// Runs the command line `args` (the program name first).
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    // Like any Unix filter: `podcidr status | head` ends quietly when the reader goes away.
    // (The CNI path ignores SIGPIPE, which would turn it into a panic in println!.)
    // SAFETY: setting a signal's disposition to its default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse_from(args);
    let outcome = match cli.command {
        Cmd::Status { data_dir, network, json } => status(&data_dir, network.as_deref(), json),
        Cmd::Gc { data_dir, network, netns_gone, keep, keep_from, apply, json } => {
            run_gc(&data_dir, network.as_deref(), netns_gone, keep, keep_from.as_deref(), apply, json)
        }
        Cmd::ImportHostLocal { from, network, data_dir, conf, ifname } => {
            import_host_local(&from, &network, &data_dir, conf.as_deref(), &ifname)
        }
        Cmd::Version => {
            println!("podcidr {}\nCNI spec versions: {}", env!("CARGO_PKG_VERSION"), SUPPORTED.join(", "));
            Ok(())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("podcidr: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkStatus {
    name: String,
    dir: PathBuf,
    mode: Option<String>,
    /// Where a kubernetes, kubelet or crd mode read the pod CIDRs.
    source: Option<SourceStatus>,
    range_sets: Vec<RangeSetStatus>,
    leases: Vec<LeaseRecord>,
    /// Leases outside every configured range (left from an earlier config).
    outside_ranges: Vec<IpAddr>,
    /// Leases in a range on an address ADD would not hand out now (the gateway, or excluded
    /// since): not counted as allocated, so allocated never exceeds capacity.
    reserved_or_excluded: Vec<IpAddr>,
    unreadable: Vec<Unreadable>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RangeSetStatus {
    family: &'static str,
    subnets: Vec<String>,
    allocated: u128,
    capacity: u128,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceStatus {
    #[serde(flatten)]
    read: Cached,
    /// None when the clock went back since the read.
    age_seconds: Option<u64>,
}

#[derive(Serialize)]
struct Unreadable {
    file: String,
    error: String,
}

fn network_status(name: &str, dir: &Path) -> Result<Option<NetworkStatus>, String> {
    let Some(store) = Store::open_existing(dir, Access::Shared).map_err(|e| e.msg)? else {
        return Ok(None);
    };
    let pool_doc: Option<serde_json::Value> = store.read_pool().and_then(|b| serde_json::from_slice(&b).ok());
    let mode = pool_doc.as_ref().and_then(|d| d["mode"].as_str()).map(String::from);
    let pool: Option<Pool> = pool_doc.and_then(|d| serde_json::from_value(d).ok());
    // A cache left from another mode says nothing about the ranges in force.
    let source = Cached::read(dir)
        .filter(|c| mode.as_deref() == Some(c.mode.as_str()))
        .map(|read| SourceStatus { age_seconds: read.age(now_ms()).map(|a| a.as_secs()), read });
    let mut st = NetworkStatus {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        mode,
        source,
        range_sets: Vec::new(),
        leases: Vec::new(),
        outside_ranges: Vec::new(),
        reserved_or_excluded: Vec::new(),
        unreadable: Vec::new(),
    };
    for (file, state) in store.leases().map_err(|e| e.msg)? {
        match state {
            LeaseState::Held(rec) => st.leases.push(*rec),
            LeaseState::Unreadable(error) => st.unreadable.push(Unreadable { file, error }),
            LeaseState::Free => {}
        }
    }
    if let Some(pool) = &pool {
        let mut allocated = vec![0u128; pool.range_sets.len()];
        for rec in &st.leases {
            match (pool.usable_set(rec.ip), pool.find(rec.ip)) {
                (Some(set), _) => allocated[set] += 1,
                (None, Some(_)) => st.reserved_or_excluded.push(rec.ip),
                (None, None) => st.outside_ranges.push(rec.ip),
            }
        }
        for (i, set) in pool.range_sets.iter().enumerate() {
            let mut subnets: Vec<String> = set.iter().map(|r| r.subnet.to_string()).collect();
            subnets.dedup();
            st.range_sets.push(RangeSetStatus {
                family: if set.first().is_some_and(|r| r.range_start.is_ipv4()) { "IPv4" } else { "IPv6" },
                subnets,
                allocated: allocated[i],
                capacity: pool.capacity(i),
            });
        }
    }
    Ok(Some(st))
}

fn status(data_dir: &Path, only: Option<&str>, json: bool) -> Result<(), String> {
    let mut networks = Vec::new();
    for name in &network_names(data_dir, only)? {
        if let Some(st) = network_status(name, &data_dir.join(name))? {
            networks.push(st);
        } else if only.is_some() {
            return Err(format!("no store for network {name:?} in {}", data_dir.display()));
        }
    }
    let mut out = std::io::stdout().lock();
    let res = if json {
        let doc = serde_json::json!({ "dataDir": data_dir, "networks": networks });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
    } else {
        write_human(&mut out, data_dir, &networks)
    };
    res.map_err(|e| format!("cannot write the status: {e}"))
}

fn write_human(out: &mut impl Write, data_dir: &Path, networks: &[NetworkStatus]) -> std::io::Result<()> {
    if networks.is_empty() {
        return writeln!(out, "No networks in {}", data_dir.display());
    }
    for (i, n) in networks.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let mode = n.mode.as_deref().unwrap_or("unknown");
        writeln!(out, "Network {} (mode {mode}, {})", n.name, n.dir.display())?;
        if let Some(src) = &n.source {
            let o = &src.read.observed;
            let mut from = o.object.clone();
            for (key, value) in [("uid", &o.uid), ("resourceVersion", &o.resource_version)] {
                if let Some(v) = value {
                    from.push_str(&format!(", {key} {v}"));
                }
            }
            writeln!(out, "Source: {from} (node {})", src.read.node)?;
            writeln!(out, "Pod CIDRs: {}, read {}", o.cidrs.join(", "), src.read.age_text(now_ms()))?;
        }
        for rs in &n.range_sets {
            writeln!(out, "{}: {}/{} allocated from {}", rs.family, rs.allocated, rs.capacity, rs.subnets.join(", "))?;
        }
        writeln!(out, "Allocated addresses:")?;
        for rec in &n.leases {
            let outside = if n.outside_ranges.contains(&rec.ip) {
                " [outside the configured ranges]"
            } else if n.reserved_or_excluded.contains(&rec.ip) {
                " [reserved or excluded: not counted as allocated]"
            } else {
                ""
            };
            writeln!(out, "  {} ({}){outside}", rec.ip, rec.owner_label())?;
        }
        for u in &n.unreadable {
            writeln!(out, "  {} [unreadable record: {}]", u.file, u.error)?;
        }
    }
    Ok(())
}

fn network_names(data_dir: &Path, only: Option<&str>) -> Result<Vec<String>, String> {
    if let Some(n) = only {
        return Ok(vec![n.to_string()]);
    }
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .map_err(|e| format!("cannot read {}: {e}", data_dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn read_keep(keep: Vec<String>, keep_from: Option<&Path>) -> Result<Option<gc::Valid>, String> {
    let mut items = keep;
    if let Some(path) = keep_from {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
        } else {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        };
        items.extend(text.split_whitespace().map(String::from));
    } else if items.is_empty() {
        return Ok(None);
    }
    let mut valid = gc::Valid::default();
    for item in items {
        match item.split_once(':') {
            Some((cid, ifname)) => valid.attachments.insert((cid.to_string(), ifname.to_string())),
            None => valid.containers.insert(item),
        };
    }
    Ok(Some(valid))
}

fn run_gc(
    data_dir: &Path,
    only: Option<&str>,
    netns_gone: bool,
    keep: Vec<String>,
    keep_from: Option<&Path>,
    apply: bool,
    json: bool,
) -> Result<(), String> {
    let criteria = gc::Criteria { earlier_boot: true, netns_gone, valid: read_keep(keep, keep_from)? };
    let access = if apply { Access::Exclusive } else { Access::Shared };
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for name in network_names(data_dir, only)? {
        let Some(store) = Store::open_existing(&data_dir.join(&name), access).map_err(|e| e.msg)? else {
            if only.is_some() {
                return Err(format!("no store for network {name:?} in {}", data_dir.display()));
            }
            continue;
        };
        let stale = gc::plan(&store, &criteria).map_err(|e| e.msg)?;
        if apply {
            failures.extend(gc::apply(&store, &stale).into_iter().map(|e| format!("{name}: {}", e.msg)));
        }
        report.push((name, stale));
    }
    let mut out = std::io::stdout().lock();
    let written = if json {
        let doc: Vec<_> = report
            .iter()
            .map(|(n, stale)| serde_json::json!({ "network": n, "applied": apply, "stale": stale }))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
    } else {
        write_gc_human(&mut out, &report, apply)
    };
    written.map_err(|e| format!("cannot write the report: {e}"))?;
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

fn write_gc_human(out: &mut impl Write, report: &[(String, Vec<gc::Stale>)], apply: bool) -> std::io::Result<()> {
    let verb = if apply { "released" } else { "would release" };
    for (name, stale) in report {
        writeln!(out, "Network {name}: {} stale lease(s)", stale.len())?;
        for s in stale {
            let attachment = format!("{}:{}", s.container_id, s.ifname);
            let who = if s.owner == s.container_id { attachment } else { format!("{}, {attachment}", s.owner) };
            writeln!(out, "  {verb} {} ({who}): {}", s.ip, s.reason)?;
        }
    }
    if !apply && report.iter().any(|(_, s)| !s.is_empty()) {
        writeln!(out, "Dry run: nothing was released. Run again with --apply to release these.")?;
    }
    Ok(())
}

/// A network config from a .conf, or the plugin with an ipam stanza from a .conflist.
fn read_conf(path: &Path) -> Result<Pool, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut doc: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    if let Some(plugins) = doc.get("plugins").and_then(|p| p.as_array()) {
        let mut plugin = plugins
            .iter()
            .find(|p| p.get("ipam").is_some())
            .cloned()
            .ok_or_else(|| format!("{}: no plugin has an ipam stanza", path.display()))?;
        plugin["cniVersion"] = doc["cniVersion"].clone();
        plugin["name"] = doc["name"].clone();
        doc = plugin;
    }
    let req = config::parse(doc.to_string().as_bytes()).map_err(|e| format!("{}: {}", path.display(), e.msg))?;
    modes::pool(&req).map_err(|e| format!("{}: {}", path.display(), e.msg))
}

fn import_host_local(
    from: &Path,
    network: &str,
    data_dir: &Path,
    conf: Option<&Path>,
    ifname: &str,
) -> Result<(), String> {
    config::validate_network_name(network).map_err(|e| e.msg)?;
    let pool = conf.map(read_conf).transpose()?;
    let mut store = Store::open(data_dir, network, Access::Exclusive).map_err(|e| e.msg)?;
    if let Some(pool) = &pool {
        store.write_pool(&crate::ipam::pool_json(pool, "static")).map_err(|e| e.msg)?;
    }
    let pool = pool.or_else(|| store.read_pool().and_then(|b| serde_json::from_slice(&b).ok()));
    let report = host_local::import(from, &mut store, pool.as_ref(), ifname).map_err(|e| e.msg)?;
    let mut out = std::io::stdout().lock();
    let owners: std::collections::BTreeSet<_> = report.adopted.iter().map(|(_, c, i)| (c, i)).collect();
    let _ = writeln!(
        out,
        "Adopted {} lease(s) of {} attachment(s) from {} into {}",
        report.adopted.len(),
        owners.len(),
        from.display(),
        store.dir().display()
    );
    for (ip, cid, ifname) in &report.adopted {
        let _ = writeln!(out, "  {ip} ({cid}:{ifname})");
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(out, "Skipped {}:", report.skipped.len());
        for (file, why) in &report.skipped {
            let _ = writeln!(out, "  {file}: {why}");
        }
    }
    Ok(())
}
