//! Adopting host-local's lease files, so a node switching to podcidr keeps every running pod's
//! address reserved and DEL for those pods still works.
//!
//! host-local keeps `<dataDir>/<network>/<address>` holding `<containerID>\r\n<ifname>` (or, in
//! releases before 0.8, just the container ID), plus `last_reserved_ip.<set>` and `lock`.

use super::{LeaseRecord, LeaseState, OwnerIndex, OwnerState, Store, boot_id};
use crate::cni::env::{validate_container_id, validate_ifname};
use crate::cni::error::{CniError, CniResult, code};
use crate::ipam::pool::Pool;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Default)]
pub struct ImportReport {
    /// `(address, containerID, ifname)` adopted.
    pub adopted: Vec<(IpAddr, String, String)>,
    /// Files left alone, and why.
    pub skipped: Vec<(String, String)>,
}

/// Parses one host-local lease file's content; the older id-only format gets `default_ifname`.
pub fn parse_lease(content: &str, default_ifname: &str) -> Option<(String, String)> {
    let mut lines = content.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty());
    let id = lines.next()?.to_string();
    let ifname = lines.next().unwrap_or(default_ifname).to_string();
    Some((id, ifname))
}

/// Adopts every lease in host-local's directory `from` into `store`. host-local's own lock is
/// held meanwhile, so a host-local still running cannot change the directory under us.
pub fn import(from: &Path, store: &mut Store, pool: Option<&Pool>, default_ifname: &str) -> CniResult<ImportReport> {
    let lock = File::open(from.join("lock")).ok();
    if let Some(l) = &lock {
        l.lock().map_err(|e| CniError::io(format!("cannot lock {}", from.join("lock").display()), &e))?;
    }
    let entries = fs::read_dir(from).map_err(|e| CniError::io(format!("cannot read {}", from.display()), &e))?;
    let mut report = ImportReport::default();
    let mut owners: BTreeMap<(String, String), Vec<(IpAddr, std::time::SystemTime)>> = BTreeMap::new();
    let mut last_reserved = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::io(format!("cannot read {}", from.display()), &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == "lock" {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => {
                report.skipped.push((name, "not a regular file".into()));
                continue;
            }
        };
        let content = match fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) => {
                report.skipped.push((name, format!("unreadable: {e}")));
                continue;
            }
        };
        if let Some(set) = name.strip_prefix("last_reserved_ip.") {
            if let (Ok(set), Ok(ip)) = (set.parse::<usize>(), content.trim().parse::<IpAddr>()) {
                last_reserved.push((set, ip));
            }
            continue;
        }
        let Ok(ip) = name.parse::<IpAddr>() else {
            report.skipped.push((name, "not named by an address".into()));
            continue;
        };
        let Some((cid, ifname)) = parse_lease(&content, default_ifname) else {
            report.skipped.push((name, "empty lease file".into()));
            continue;
        };
        if let Err(e) = validate_container_id(&cid).and_then(|()| validate_ifname(&ifname)) {
            report.skipped.push((name, e.msg));
            continue;
        }
        let mtime = meta.modified().unwrap_or_else(|_| std::time::SystemTime::now());
        owners.entry((cid, ifname)).or_default().push((ip, mtime));
    }

    let boot = boot_id();
    'owners: for ((cid, ifname), ips) in owners {
        let skip_all = |report: &mut ImportReport, why: String| {
            for (ip, _) in &ips {
                report.skipped.push((ip.to_string(), why.clone()));
            }
        };
        if !matches!(store.owner(&cid, &ifname)?, OwnerState::None) {
            skip_all(&mut report, format!("{cid}:{ifname} already has a lease in the podcidr store"));
            continue;
        }
        for (ip, _) in &ips {
            let why = match store.lease(*ip)? {
                LeaseState::Free => continue,
                LeaseState::Held(rec) => {
                    format!("{ip} is already leased to {} in the podcidr store", rec.owner_label())
                }
                LeaseState::Unreadable(_) => format!("{ip} has an unreadable record in the podcidr store"),
            };
            skip_all(&mut report, why);
            continue 'owners;
        }
        let records: Vec<LeaseRecord> = ips
            .iter()
            .map(|&(ip, mtime)| {
                let found = pool.and_then(|p| p.find(ip));
                LeaseRecord {
                    ip,
                    range_set: found.map_or(usize::from(ip.is_ipv6()), |(set, _)| set),
                    subnet: found.map_or_else(|| IpNet::from(ip), |(_, r)| r.subnet),
                    gateway: found.map(|(_, r)| r.gateway),
                    container_id: cid.clone(),
                    ifname: ifname.clone(),
                    netns: String::new(),
                    pod_namespace: None,
                    pod_name: None,
                    pod_uid: None,
                    boot_id: boot.clone(),
                    created: humantime::format_rfc3339_seconds(mtime).to_string(),
                }
            })
            .collect();
        let owner =
            OwnerIndex { container_id: cid.clone(), ifname: ifname.clone(), ips: ips.iter().map(|x| x.0).collect() };
        match store.claim(&owner, &records) {
            Ok(()) => report.adopted.extend(ips.iter().map(|(ip, _)| (*ip, cid.clone(), ifname.clone()))),
            Err(e) if e.code == code::ADDRESS_UNAVAILABLE => skip_all(&mut report, e.msg),
            Err(e) => return Err(e),
        }
    }
    for (set, ip) in last_reserved {
        store.set_last_reserved(set, ip)?;
    }
    report.adopted.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::parse_lease;

    #[test]
    fn both_host_local_formats() {
        assert_eq!(parse_lease("abc\r\neth1", "eth0"), Some(("abc".into(), "eth1".into())));
        assert_eq!(parse_lease("abc", "eth0"), Some(("abc".into(), "eth0".into())));
        assert_eq!(parse_lease("abc\n", "eth0"), Some(("abc".into(), "eth0".into())));
        assert_eq!(parse_lease("", "eth0"), None);
    }
}
