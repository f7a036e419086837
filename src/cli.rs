//! The operator's CLI: the same binary run without CNI_COMMAND.

use crate::cni::config::DEFAULT_DATA_DIR;
use crate::cni::version::SUPPORTED;
use crate::ipam::pool::Pool;
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
    /// Print the version and the CNI spec versions spoken.
    Version,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Status { data_dir, network, json } => status(&data_dir, network.as_deref(), json),
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
    range_sets: Vec<RangeSetStatus>,
    leases: Vec<LeaseRecord>,
    /// Leases outside every configured range (left from an earlier config).
    outside_ranges: Vec<IpAddr>,
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
    let mut st = NetworkStatus {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        mode,
        range_sets: Vec::new(),
        leases: Vec::new(),
        outside_ranges: Vec::new(),
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
            match pool.find(rec.ip) {
                Some((set, _)) => allocated[set] += 1,
                None => st.outside_ranges.push(rec.ip),
            }
        }
        for (i, set) in pool.range_sets.iter().enumerate() {
            let mut subnets: Vec<String> = set.iter().map(|r| r.subnet.to_string()).collect();
            subnets.dedup();
            st.range_sets.push(RangeSetStatus {
                family: if set[0].range_start.is_ipv4() { "IPv4" } else { "IPv6" },
                subnets,
                allocated: allocated[i],
                capacity: pool.capacity(i),
            });
        }
    }
    Ok(Some(st))
}

fn status(data_dir: &Path, only: Option<&str>, json: bool) -> Result<(), String> {
    let mut names: Vec<String> = match only {
        Some(n) => vec![n.to_string()],
        None => std::fs::read_dir(data_dir)
            .map_err(|e| format!("cannot read {}: {e}", data_dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    };
    names.sort();
    let mut networks = Vec::new();
    for name in &names {
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
        for rs in &n.range_sets {
            writeln!(out, "{}: {}/{} allocated from {}", rs.family, rs.allocated, rs.capacity, rs.subnets.join(", "))?;
        }
        writeln!(out, "Allocated addresses:")?;
        for rec in &n.leases {
            let outside = if n.outside_ranges.contains(&rec.ip) { " [outside the configured ranges]" } else { "" };
            writeln!(out, "  {} ({}){outside}", rec.ip, rec.owner_label())?;
        }
        for u in &n.unreadable {
            writeln!(out, "  {} [unreadable record: {}]", u.file, u.error)?;
        }
    }
    Ok(())
}
