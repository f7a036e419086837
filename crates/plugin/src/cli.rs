//! The operator's CLI: the same binary run without CNI_COMMAND.

use crate::cni::config::{self, DEFAULT_DATA_DIR};
use crate::cni::version::SUPPORTED;
use crate::ipam::gc;
use crate::ipam::pool::Pool;
use crate::modes;
use crate::modes::source::{Cached, now_ms};
use crate::store::host_local::{self, Link};
use crate::store::{Access, LeaseRecord, LeaseState, Store};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
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
        /// The ipam stanza's dataDir.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Only this network (the conflist's `name`); default: every network in the data directory.
        #[arg(long)]
        network: Option<String>,
        /// Also release leases whose recorded network namespace path is gone. Refused where the
        /// namespace directory cannot be read; a path that cannot be judged counts as alive.
        #[arg(long)]
        netns_gone: bool,
        /// With --netns-gone, accept that every lease of a network would be released.
        #[arg(long)]
        allow_all_netns_gone: bool,
        /// Live containers (`ID` or `ID:IFNAME`, comma-separated or repeated); every other lease is
        /// released. A unique prefix of an ID is enough (`podman ps -q` prints 12 characters).
        #[arg(long, value_delimiter = ',')]
        keep: Vec<String>,
        /// A file (or `-` for stdin) with one live container ID (or `ID:IFNAME`) per line,
        /// e.g. from `crictl pods -q`.
        #[arg(long)]
        keep_from: Option<PathBuf>,
        /// Accept an empty keep list, releasing every lease. Without it an empty list (a runtime
        /// that is down, a wrong endpoint) is refused.
        #[arg(long)]
        allow_empty_keep: bool,
        /// Accept a keep list that matches none of a network's leases, releasing them all.
        /// Without it such a list (another runtime's or node's IDs) is refused.
        #[arg(long)]
        allow_no_match: bool,
        /// Release what is found (without it, only list it).
        #[arg(long)]
        apply: bool,
        /// Machine-readable output: one object per network with its stale leases.
        #[arg(long)]
        json: bool,
    },
    /// Adopt host-local's leases, so running pods keep their addresses after the switch.
    ImportHostLocal {
        /// host-local's directory for the network, e.g. /var/lib/cni/networks/mynet.
        #[arg(long)]
        from: PathBuf,
        /// The network name (the conflist's `name`); with --conf, taken from it.
        #[arg(long)]
        network: Option<String>,
        /// podcidr's dataDir; with --conf, the conflist's `dataDir` (or the default).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The network config (.conf or .conflist) the node will run podcidr with: its `name`
        /// and `dataDir` say where the leases go, its ranges give the records subnet and gateway.
        #[arg(long)]
        conf: Option<PathBuf>,
        /// Interface name for leases in host-local's old id-only format.
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// End the link an import made to host-local's directory: ADD and DEL stop reserving
    /// addresses there. Only once host-local is no longer called for the network.
    UnlinkHostLocal {
        /// The network name (the conflist's `name`).
        #[arg(long)]
        network: String,
        /// podcidr's dataDir.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
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
        Cmd::Gc {
            data_dir,
            network,
            netns_gone,
            allow_all_netns_gone,
            keep,
            keep_from,
            allow_empty_keep,
            allow_no_match,
            apply,
            json,
        } => {
            let opts = GcOptions { netns_gone, allow_all_netns_gone, allow_empty_keep, allow_no_match, apply, json };
            run_gc(&data_dir, network.as_deref(), keep, keep_from.as_deref(), &opts)
        }
        Cmd::UnlinkHostLocal { network, data_dir } => unlink_host_local(&network, &data_dir),
        Cmd::ImportHostLocal { from, network, data_dir, conf, ifname } => {
            import_host_local(&from, network, data_dir, conf.as_deref(), &ifname)
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
    /// The host-local directory an import linked the network to (a migration in progress).
    host_local_link: Option<String>,
    /// While linked: addresses with a host-local lease file and no podcidr lease (taken for ADD,
    /// and counted as allocated).
    host_local_only: Vec<IpAddr>,
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
        host_local_link: None,
        host_local_only: Vec::new(),
    };
    for (file, state) in store.leases().map_err(|e| e.msg)? {
        match state {
            LeaseState::Held(rec) => st.leases.push(*rec),
            LeaseState::Unreadable(error) => st.unreadable.push(Unreadable { file, error }),
            LeaseState::Free => {}
        }
    }
    if let Some(link) = host_local::linked_dir(dir) {
        let ours: HashSet<IpAddr> = st.leases.iter().map(|r| r.ip).collect();
        match host_local::lease_files(&link) {
            Ok(files) => {
                st.host_local_only = files.into_iter().map(|(ip, _)| ip).filter(|ip| !ours.contains(ip)).collect()
            }
            Err(e) => st.unreadable.push(Unreadable { file: link.display().to_string(), error: e.msg }),
        }
        st.host_local_only.sort_by_key(|ip| crate::ipam::pool::to_u128(*ip));
        st.host_local_link = Some(link.display().to_string());
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
        for set in st.host_local_only.iter().filter_map(|ip| pool.usable_set(*ip)) {
            allocated[set] += 1;
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

fn network_statuses(data_dir: &Path, only: Option<&str>) -> Result<Vec<NetworkStatus>, String> {
    let mut networks = Vec::new();
    for name in &network_names(data_dir, only)? {
        if let Some(st) = network_status(name, &data_dir.join(name))? {
            networks.push(st);
        } else if only.is_some() {
            return Err(format!("no store for network {name:?} in {}", escape(&data_dir.display().to_string())));
        }
    }
    Ok(networks)
}

/// What `podcidr status --json` prints, for podcidr-agent's metrics: each store read under its
/// shared lock, nothing written.
pub fn status_doc(data_dir: &Path, only: Option<&str>) -> Result<serde_json::Value, String> {
    let networks = network_statuses(data_dir, only)?;
    Ok(serde_json::json!({ "dataDir": data_dir, "networks": networks }))
}

fn status(data_dir: &Path, only: Option<&str>, json: bool) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let res = if json {
        let doc = status_doc(data_dir, only)?;
        writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
    } else {
        write_human(&mut out, data_dir, &network_statuses(data_dir, only)?)
    };
    res.map_err(|e| format!("cannot write the status: {e}"))
}

/// `s` with control characters (and the bidirectional overrides) escaped: pod names, paths and
/// file names come from outside, and a terminal must not take them for escape sequences.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn no_networks(out: &mut impl Write, data_dir: &Path) -> std::io::Result<()> {
    writeln!(out, "No networks in {}", escape(&data_dir.display().to_string()))
}

fn write_human(out: &mut impl Write, data_dir: &Path, networks: &[NetworkStatus]) -> std::io::Result<()> {
    if networks.is_empty() {
        return no_networks(out, data_dir);
    }
    for (i, n) in networks.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let mode = n.mode.as_deref().unwrap_or("unknown");
        writeln!(out, "Network {} (mode {}, {})", escape(&n.name), escape(mode), escape(&n.dir.display().to_string()))?;
        if let Some(src) = &n.source {
            let o = &src.read.observed;
            let mut from = o.object.clone();
            for (key, value) in [("uid", &o.uid), ("resourceVersion", &o.resource_version)] {
                if let Some(v) = value {
                    from.push_str(&format!(", {key} {v}"));
                }
            }
            match &o.pool {
                Some(pool) => {
                    writeln!(out, "Source: {} (node {}, pool {})", escape(&from), escape(&src.read.node), escape(pool))?
                }
                None => writeln!(out, "Source: {} (node {})", escape(&from), escape(&src.read.node))?,
            }
            let cidrs = escape(&o.cidrs.join(", "));
            writeln!(out, "Pod CIDRs: {cidrs}, read {}", src.read.age_text(now_ms()))?;
        }
        if let Some(link) = &n.host_local_link {
            writeln!(
                out,
                "Linked to host-local's {} (migration): ADD and DEL also reserve addresses there",
                escape(link)
            )?;
        }
        for rs in &n.range_sets {
            writeln!(out, "{}: {}/{} allocated from {}", rs.family, rs.allocated, rs.capacity, rs.subnets.join(", "))?;
        }
        // A container with several interfaces on the network: say which address is which.
        let mut ifnames: HashMap<&str, HashSet<&str>> = HashMap::new();
        for rec in &n.leases {
            ifnames.entry(rec.container_id.as_str()).or_default().insert(rec.ifname.as_str());
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
            let mut label = rec.owner_label();
            if ifnames.get(rec.container_id.as_str()).is_some_and(|i| i.len() > 1) {
                label = format!("{label}, {}", rec.ifname);
            }
            writeln!(out, "  {} ({}){outside}", rec.ip, escape(&label))?;
        }
        for ip in &n.host_local_only {
            writeln!(out, "  {ip} (host-local's lease)")?;
        }
        for u in &n.unreadable {
            writeln!(out, "  {} [unreadable record: {}]", escape(&u.file), escape(&u.error))?;
        }
    }
    Ok(())
}

/// `--network`, checked as the CNI path checks a config's `name` (it names a directory under
/// the data directory), or every network directory there. A missing data directory has none.
fn network_names(data_dir: &Path, only: Option<&str>) -> Result<Vec<String>, String> {
    if let Some(n) = only {
        config::validate_network_name(n).map_err(|e| invalid_network(n, &e))?;
        return Ok(vec![n.to_string()]);
    }
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", escape(&data_dir.display().to_string()))),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| config::validate_network_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

fn invalid_network(name: &str, e: &crate::cni::error::CniError) -> String {
    let why = e.msg.strip_prefix("name: ").unwrap_or(&e.msg);
    format!("--network {:?} is not a valid network name: it {why}", escape(name))
}

/// The keep list, or `None` when neither --keep nor --keep-from was given.
fn read_keep(keep: Vec<String>, keep_from: Option<&Path>) -> Result<Option<Vec<gc::KeepItem>>, String> {
    if keep.is_empty() && keep_from.is_none() {
        return Ok(None);
    }
    let mut items: Vec<String> = keep.into_iter().map(|k| k.trim().to_string()).collect();
    if let Some(path) = keep_from {
        let text = if path == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
        } else {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        };
        items.extend(text.split_whitespace().map(String::from));
    }
    Ok(Some(items.iter().filter(|i| !i.is_empty()).map(|i| gc::KeepItem::parse(i)).collect()))
}

struct GcOptions {
    netns_gone: bool,
    allow_all_netns_gone: bool,
    allow_empty_keep: bool,
    allow_no_match: bool,
    apply: bool,
    json: bool,
}

/// Plans every network first (each store locked until the end), refuses if a keep list looks
/// wrong for any of them, and only then releases. Prints after every lock is given back.
fn run_gc(
    data_dir: &Path,
    only: Option<&str>,
    keep: Vec<String>,
    keep_from: Option<&Path>,
    opts: &GcOptions,
) -> Result<(), String> {
    let keep = read_keep(keep, keep_from)?;
    if keep.as_ref().is_some_and(Vec::is_empty) && !opts.allow_empty_keep {
        return Err("the keep list is empty (did the command that lists the live containers fail?); with it \
             every lease would be released. Nothing was done; pass --allow-empty-keep if every lease is \
             stale indeed"
            .into());
    }
    let access = if opts.apply { Access::Exclusive } else { Access::Shared };
    let mut planned = Vec::new();
    for name in network_names(data_dir, only)? {
        let Some(store) = Store::open_existing(&data_dir.join(&name), access).map_err(|e| e.msg)? else {
            if only.is_some() {
                return Err(format!("no store for network {name:?} in {}", escape(&data_dir.display().to_string())));
            }
            continue;
        };
        let valid = match &keep {
            None => None,
            Some(items) => Some(resolve_keep_for(&store, &name, items, opts.allow_no_match)?),
        };
        let criteria = gc::Criteria { earlier_boot: true, netns_gone: opts.netns_gone, valid };
        let stale = gc::plan(&store, &criteria).map_err(|e| format!("network {name}: {}", e.msg))?;
        if opts.netns_gone && !opts.allow_all_netns_gone && stale.iter().any(|s| s.by_netns) {
            let held =
                store.leases().map_err(|e| e.msg)?.iter().filter(|(_, s)| matches!(s, LeaseState::Held(_))).count();
            if stale.len() >= held {
                return Err(format!(
                    "network {name}: every one of its {held} lease(s) would be released, their network namespaces \
                     looking gone (are the runtime's namespaces visible here?). Nothing was released; pass \
                     --allow-all-netns-gone if every pod of the network is gone indeed"
                ));
            }
        }
        let mut damaged = store.damaged_indexes().map_err(|e| e.msg)?;
        // Those a keep list releases are among the stale ones already.
        for d in &mut damaged {
            d.leases.retain(|file| !stale.iter().any(|s| &s.file == file));
        }
        damaged.retain(|d| !d.leases.is_empty());
        planned.push((name, store, stale, damaged));
    }
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (name, store, stale, damaged) in planned {
        if opts.apply {
            match Link::open(&store) {
                Ok(link) => failures
                    .extend(gc::apply(&store, link.as_ref(), &stale).into_iter().map(|e| format!("{name}: {}", e.msg))),
                Err(e) => failures.push(format!("{name}: {}", e.msg)),
            }
        }
        drop(store);
        report.push((name, stale, damaged));
    }
    let mut out = std::io::stdout().lock();
    let written = if opts.json {
        let doc: Vec<_> = report
            .iter()
            .map(|(n, stale, damaged)| {
                serde_json::json!({ "network": n, "applied": opts.apply, "stale": stale, "unreadableIndexes": damaged })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
    } else if report.is_empty() {
        no_networks(&mut out, data_dir)
    } else {
        write_gc_human(&mut out, &report, opts.apply)
    };
    written.map_err(|e| format!("cannot write the report: {e}"))?;
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

/// The keep list in terms of the container IDs holding leases in `store`; refused when the
/// network has leases and the list matches none of them.
fn resolve_keep_for(
    store: &Store,
    name: &str,
    items: &[gc::KeepItem],
    allow_no_match: bool,
) -> Result<gc::Valid, String> {
    let held: Vec<LeaseRecord> = store
        .leases()
        .map_err(|e| e.msg)?
        .into_iter()
        .filter_map(|(_, state)| match state {
            LeaseState::Held(rec) => Some(*rec),
            _ => None,
        })
        .collect();
    let valid = gc::resolve_keep(items, held.iter().map(|r| r.container_id.as_str()))
        .map_err(|e| format!("network {name}: {}", escape(&e)))?;
    let matched = held.iter().any(|r| valid.contains(&r.container_id, &r.ifname));
    if !held.is_empty() && !matched && !items.is_empty() && !allow_no_match {
        return Err(format!(
            "network {name}: none of the {} ID(s) in the keep list matches any of its {} lease(s) (IDs of \
             another runtime or node?); with it every lease would be released. Nothing was done; pass \
             --allow-no-match if every lease is stale indeed",
            items.len(),
            held.len()
        ));
    }
    Ok(valid)
}

type GcReport = (String, Vec<gc::Stale>, Vec<crate::store::DamagedIndex>);

fn write_gc_human(out: &mut impl Write, report: &[GcReport], apply: bool) -> std::io::Result<()> {
    let verb = if apply { "released" } else { "would release" };
    for (name, stale, damaged) in report {
        writeln!(out, "Network {name}: {} stale lease(s)", stale.len())?;
        for s in stale {
            let attachment = format!("{}:{}", s.container_id, s.ifname);
            let who = if s.owner == s.container_id { attachment } else { format!("{}, {attachment}", s.owner) };
            writeln!(out, "  {verb} {} ({}): {}", s.ip, escape(&who), escape(&s.reason))?;
        }
        // Not judged stale (the pod may be alive), but named by no readable index: listed so
        // the admin knows, and what releases them.
        for d in damaged {
            let who = escape(&format!("{}:{}", d.container_id, d.ifname));
            writeln!(
                out,
                "  kept {} ({who}): its owner index is unreadable ({}); a DEL of {who}, or a keep list without it, \
                 releases it",
                escape(&d.leases.join(", ")),
                escape(&d.why)
            )?;
        }
    }
    if !apply && report.iter().any(|(_, s, _)| !s.is_empty()) {
        writeln!(out, "Dry run: nothing was released. Run again with --apply to release these.")?;
    }
    Ok(())
}

/// What an import takes from the network config.
struct ImportConf {
    name: String,
    data_dir: PathBuf,
    pool: Pool,
}

/// A network config from a .conf, or the plugin with an ipam stanza from a .conflist.
fn read_conf(path: &Path) -> Result<ImportConf, String> {
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
    let pool = modes::pool(&req).map_err(|e| format!("{}: {}", path.display(), e.msg))?;
    Ok(ImportConf { data_dir: req.data_dir(), name: req.conf.name, pool })
}

/// The value an import uses: the command line's, the config's, or the default; a command line
/// that disagrees with the config is refused, naming both.
fn agree<T: PartialEq + std::fmt::Debug>(
    flag: &str,
    given: Option<T>,
    from_conf: Option<(T, &Path)>,
    default: Option<T>,
) -> Result<T, String> {
    match (given, from_conf) {
        (Some(g), Some((c, path))) if g != c => Err(format!(
            "{flag} {g:?} disagrees with {}, which says {c:?}: the node will run podcidr with that config; leave \
             {flag} out",
            path.display()
        )),
        (_, Some((c, _))) => Ok(c),
        (Some(g), None) => Ok(g),
        (None, None) => default.ok_or_else(|| format!("give {flag}, or --conf with the network config")),
    }
}

fn import_host_local(
    from: &Path,
    network: Option<String>,
    data_dir: Option<PathBuf>,
    conf: Option<&Path>,
    ifname: &str,
) -> Result<(), String> {
    let read = conf.map(|path| read_conf(path).map(|c| (c, path))).transpose()?;
    let network = agree("--network", network, read.as_ref().map(|(c, p)| (c.name.clone(), *p)), None)?;
    let network = network.as_str();
    let data_dir = agree(
        "--data-dir",
        data_dir,
        read.as_ref().map(|(c, p)| (c.data_dir.clone(), *p)),
        Some(PathBuf::from(DEFAULT_DATA_DIR)),
    )?;
    let data_dir = data_dir.as_path();
    config::validate_network_name(network).map_err(|e| invalid_network(network, &e))?;
    let pool = read.map(|(c, _)| c.pool);
    host_local::check_source(from).map_err(|e| e.msg)?;
    let mut store = Store::open(data_dir, network, Access::Exclusive).map_err(|e| e.msg)?;
    if let Some(pool) = &pool {
        store
            .write_pool(&crate::ipam::pool_json_head(pool, "static"), || crate::ipam::pool_json(pool, "static"))
            .map_err(|e| e.msg)?;
    }
    let pool = pool.or_else(|| store.read_pool().and_then(|b| serde_json::from_slice(&b).ok()));
    let report = host_local::import(from, &mut store, pool.as_ref(), ifname).map_err(|e| e.msg)?;
    let store_dir = store.dir().to_path_buf();
    // Both locks are given back before a word is printed: a slow reader must not stall ADDs.
    drop(store);

    let mut out = std::io::stdout().lock();
    let owners: BTreeSet<_> = report.adopted.iter().map(|(_, c, i)| (c, i)).collect();
    let _ = writeln!(
        out,
        "Adopted {} lease(s) of {} attachment(s) from {} into {}",
        report.adopted.len(),
        owners.len(),
        escape(&from.display().to_string()),
        escape(&store_dir.display().to_string())
    );
    for (ip, cid, ifname) in &report.adopted {
        let _ = writeln!(out, "  {ip} ({cid}:{ifname})");
    }
    if report.already > 0 {
        let _ = writeln!(out, "Already in the podcidr store for the same owner: {} lease(s)", report.already);
    }
    if !report.released.is_empty() {
        let _ = writeln!(out, "Released {} imported lease(s) host-local has since released:", report.released.len());
        for (ip, cid, ifname) in &report.released {
            let _ = writeln!(out, "  {ip} ({cid}:{ifname})");
        }
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(out, "Skipped {}:", report.skipped.len());
        for (file, why) in &report.skipped {
            let _ = writeln!(out, "  {}: {}", escape(file), escape(why));
        }
    }
    let dd = if data_dir == Path::new(DEFAULT_DATA_DIR) {
        String::new()
    } else {
        format!(" --data-dir {}", escape(&data_dir.display().to_string()))
    };
    let _ = writeln!(
        out,
        "Linked: until `podcidr unlink-host-local --network {network}{dd}`, podcidr's ADD and DEL also reserve \
         addresses there."
    );
    if report.collisions.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = report
        .collisions
        .iter()
        .map(|(ip, hl, pc)| format!("{ip} is leased by host-local to {hl} and by podcidr to {}", escape(pc)))
        .collect();
    Err(format!(
        "{} address(es) have two owners (podcidr handed them out before the import linked it to host-local):\n  {}",
        list.len(),
        list.join("\n  ")
    ))
}

fn unlink_host_local(network: &str, data_dir: &Path) -> Result<(), String> {
    config::validate_network_name(network).map_err(|e| invalid_network(network, &e))?;
    let dir = data_dir.join(network);
    let Some(store) = Store::open_existing(&dir, Access::Exclusive).map_err(|e| e.msg)? else {
        return Err(format!("no store for network {network:?} in {}", escape(&data_dir.display().to_string())));
    };
    let linked = host_local::linked_dir(&dir);
    host_local::unlink(&store).map_err(|e| e.msg)?;
    drop(store);
    match linked {
        Some(d) => println!("Unlinked network {network} from host-local's {}", escape(&d.display().to_string())),
        None => println!("Network {network} was not linked to host-local"),
    }
    Ok(())
}
