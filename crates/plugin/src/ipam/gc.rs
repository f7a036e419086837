//! Finding and releasing stale leases: shared by CNI GC, the reclaim an exhausted ADD triggers,
//! and the operator's `podcidr gc`.

use crate::cni::error::{CniError, CniResult, code};
use crate::store::host_local::Link;
use crate::store::{self, LeaseState, OwnerState, Store};
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};

use std::net::IpAddr;
use std::path::Path;
use tracing::{info, warn};

/// What makes a lease stale. Criteria combine with "or".
#[derive(Debug, Default, Clone)]
pub struct Criteria {
    /// Recorded under another kernel boot ID: its container died with that boot.
    pub earlier_boot: bool,
    /// The network namespace path recorded on the lease no longer exists.
    pub netns_gone: bool,
    /// When set, every attachment not in it is stale.
    pub valid: Option<Valid>,
}

/// Attachments known to be live: `(containerID, ifname)` pairs, or whole containers.
#[derive(Debug, Default, Clone)]
pub struct Valid {
    pub attachments: HashSet<(String, String)>,
    pub containers: HashSet<String>,
}

impl Valid {
    pub fn contains(&self, container_id: &str, ifname: &str) -> bool {
        self.containers.contains(container_id)
            || self.attachments.contains(&(container_id.to_string(), ifname.to_string()))
    }
}

/// One entry of an operator's keep list: a container ID or a prefix of one, and optionally the
/// interface (`ID:IFNAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepItem {
    pub id: String,
    pub ifname: Option<String>,
}

impl KeepItem {
    pub fn parse(item: &str) -> KeepItem {
        match item.split_once(':') {
            Some((id, ifname)) => KeepItem { id: id.to_string(), ifname: Some(ifname.to_string()) },
            None => KeepItem { id: item.to_string(), ifname: None },
        }
    }
}

/// Resolves `items` against the container IDs that hold leases: an exact ID, else a prefix of
/// exactly one of them (`podman ps -q` prints 12 characters of a 64-character ID, as do
/// `docker` and `crictl`). An item that names no lease is kept as it is (the container holds
/// nothing here); a prefix of several IDs is an error naming them.
pub fn resolve_keep<'a>(items: &[KeepItem], lease_ids: impl IntoIterator<Item = &'a str>) -> Result<Valid, String> {
    let ids: BTreeSet<&str> = lease_ids.into_iter().collect();
    let mut valid = Valid::default();
    for item in items {
        let id = if ids.contains(item.id.as_str()) {
            item.id.clone()
        } else {
            let candidates: Vec<&str> = ids.iter().copied().filter(|id| id.starts_with(item.id.as_str())).collect();
            match candidates[..] {
                [] => item.id.clone(),
                [one] => one.to_string(),
                _ => {
                    return Err(format!(
                        "the keep list's {:?} is ambiguous: it begins the container IDs {}; give more of the ID",
                        item.id,
                        candidates.join(", ")
                    ));
                }
            }
        };
        match &item.ifname {
            Some(ifname) => valid.attachments.insert((id, ifname.clone())),
            None => valid.containers.insert(id),
        };
    }
    Ok(valid)
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stale {
    /// File name in `leases/`.
    pub file: String,
    pub ip: IpAddr,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub owner: String,
    pub reason: String,
    /// Stale because its network namespace is gone (and for no other reason).
    #[serde(skip)]
    pub by_netns: bool,
}

/// Lists what `criteria` would release, without changing anything.
pub fn plan(store: &Store, criteria: &Criteria) -> CniResult<Vec<Stale>> {
    let boot = store::boot_id();
    let mut out = Vec::new();
    let booted = store::boot_time();
    let leases = store.leases()?;
    // Without a list of live attachments, leases no index names (see `Store::unindexed`) are
    // stale too: no DEL can ever release them.
    let unindexed =
        if criteria.earlier_boot && criteria.valid.is_none() { store.unindexed(&leases)? } else { HashSet::new() };
    for (file, state) in leases {
        let rec = match state {
            LeaseState::Held(rec) => rec,
            // A record damaged by a crash of an earlier boot names no live container; without
            // this it would hold its address for ever.
            LeaseState::Unreadable(why) if criteria.earlier_boot => {
                let before_boot = booted.zip(store.lease_mtime(&file)).is_some_and(|(b, m)| m < b);
                if let (true, Ok(ip)) = (before_boot, file.parse::<IpAddr>()) {
                    out.push(Stale {
                        ip,
                        container_id: String::new(),
                        ifname: String::new(),
                        owner: "unreadable record".into(),
                        reason: format!("damaged record ({why}) written before this boot"),
                        by_netns: false,
                        file,
                    });
                }
                continue;
            }
            _ => continue,
        };
        // The CNI spec: GC removes what is not listed, and nothing listed (an earlier-boot lease
        // of a listed attachment is reclaimed by an ADD when its range needs it).
        if criteria.valid.as_ref().is_some_and(|v| v.contains(&rec.container_id, &rec.ifname)) {
            continue;
        }
        let reason = if criteria.earlier_boot && !boot.is_empty() && !rec.boot_id.is_empty() && rec.boot_id != boot {
            format!("leased in an earlier boot ({})", rec.boot_id)
        } else if criteria.valid.as_ref().is_some_and(|v| !v.contains(&rec.container_id, &rec.ifname)) {
            "attachment is not in the list of valid attachments".to_string()
        } else if criteria.netns_gone && !rec.netns.is_empty() && netns_gone(&rec.netns)? {
            format!("network namespace {} is gone", rec.netns)
        } else if unindexed.contains(&file) {
            "no owner index names it (lost with a damaged index), so no DEL can release it".to_string()
        } else {
            continue;
        };
        out.push(Stale {
            by_netns: reason.starts_with("network namespace"),
            file,
            ip: rec.ip,
            owner: rec.owner_label(),
            container_id: rec.container_id,
            ifname: rec.ifname,
            reason,
        });
    }
    // An attachment left out of the list whose index is unreadable: its record that shares the
    // index's inode is unreadable too, so only the index tells whose it is.
    if let Some(valid) = &criteria.valid {
        for d in store.damaged_indexes()? {
            if valid.contains(&d.container_id, &d.ifname) {
                continue;
            }
            for file in d.leases {
                let Ok(ip) = file.parse::<IpAddr>() else {
                    continue;
                };
                if !out.iter().any(|s| s.file == file) {
                    out.push(Stale {
                        file,
                        ip,
                        container_id: d.container_id.clone(),
                        ifname: d.ifname.clone(),
                        owner: d.container_id.clone(),
                        reason: format!(
                            "attachment is not in the list of valid attachments (its owner index is unreadable: {})",
                            d.why
                        ),
                        by_netns: false,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Whether the network namespace at `path` is gone: only when the directory that holds it can be
/// read here and has no such entry. A directory missing or unreadable here (a debug container,
/// another mount namespace) is an error: every lease would look gone. A path under /proc names
/// a process as one PID namespace sees it, and an entry that cannot be looked at (EACCES) says
/// nothing either: "cannot tell" counts as alive.
fn netns_gone(path: &str) -> CniResult<bool> {
    let path = Path::new(path);
    if path.starts_with("/proc") {
        return Ok(false);
    }
    match std::fs::symlink_metadata(path) {
        Ok(_) => return Ok(false),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Ok(false),
        Err(_) => {}
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match std::fs::read_dir(dir) {
        Ok(_) => Ok(true),
        Err(e) => Err(CniError::new(
            code::IO_FAILURE,
            format!(
                "the network namespace directory {} cannot be read here ({e}): run where the runtime's \
                 namespaces are visible (not in another mount namespace or a debug container); otherwise every \
                 lease would look gone. Nothing was released",
                dir.display()
            ),
        )),
    }
}

/// Releases `stale`, lease files first and then owner indexes that name nothing live (the
/// same order a crash may leave things in), and the files in host-local's directory that
/// `link` (the store's, opened under its lock) made for them. Goes on past errors and returns
/// them all.
pub fn apply(store: &Store, link: Option<&Link>, stale: &[Stale]) -> Vec<CniError> {
    let mut errors = Vec::new();
    let mut owners = BTreeSet::new();
    for s in stale {
        match store.remove_lease_file(&s.file) {
            Ok(()) => {
                info!(ip = %s.ip, owner = %s.owner, reason = %s.reason, "released a stale lease");
                if let Some(link) = link {
                    link.unreserve(&s.container_id, &s.ifname, &[s.ip]);
                }
            }
            Err(e) => errors.push(e),
        }
        if !s.container_id.is_empty() {
            owners.insert((s.container_id.clone(), s.ifname.clone()));
        }
    }
    for (cid, ifname) in owners {
        if let Err(e) = drop_index_if_empty(store, &cid, &ifname) {
            errors.push(e);
        }
    }
    errors
}

fn drop_index_if_empty(store: &Store, cid: &str, ifname: &str) -> CniResult<()> {
    let live = match store.owner(cid, ifname)? {
        OwnerState::None => return Ok(()),
        OwnerState::Unreadable(_) => false,
        OwnerState::Held(idx) => idx.ips.iter().try_fold(false, |live, ip| {
            Ok::<_, CniError>(live || matches!(store.lease(*ip)?, LeaseState::Held(r) if r.owned_by(cid, ifname)))
        })?,
    };
    if live { Ok(()) } else { store.remove_owner_file(&store::owner_file_name(cid, ifname)) }
}

/// Owner indexes of attachments outside `valid` that name no live lease: left by killed ADDs.
pub fn drop_dangling_indexes(store: &Store, valid: &Valid) -> Vec<CniError> {
    let names = match store.owner_names() {
        Ok(n) => n,
        Err(e) => return vec![e],
    };
    names
        .iter()
        .filter_map(|n| n.split_once(':'))
        .filter(|(c, i)| !valid.contains(c, i))
        .filter_map(|(c, i)| drop_index_if_empty(store, c, i).err())
        .collect()
}

/// Releases every lease of an earlier boot (and `link`'s files for them); returns how many.
pub fn reclaim_earlier_boots(store: &mut Store, link: Option<&Link>) -> CniResult<usize> {
    let stale = plan(store, &Criteria { earlier_boot: true, ..Criteria::default() })?;
    for s in &stale {
        warn!(ip = %s.ip, owner = %s.owner, "reclaiming a lease from an earlier boot");
    }
    let errors = apply(store, link, &stale);
    store.forget_listing();
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(stale.len()),
    }
}

/// Joins errors into one code-5 error naming them all.
pub fn combine(errors: Vec<CniError>, what: &str) -> CniResult<()> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(CniError::new(code::IO_FAILURE, format!("{what}: {} item(s) could not be released", errors.len()))
        .with_details(errors.iter().map(|e| e.msg.as_str()).collect::<Vec<_>>().join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_items_resolve_exactly_or_by_a_unique_prefix() {
        let ids = ["abc123", "abc456", "abc", "def789"];
        let items: Vec<KeepItem> = ["abc", "def", "abc4:eth1", "zzz"].iter().map(|i| KeepItem::parse(i)).collect();
        let v = resolve_keep(&items, ids).unwrap();
        assert!(v.contains("abc", "eth0"), "an exact ID wins over the IDs it begins");
        assert!(v.contains("def789", "eth0"));
        assert!(v.contains("abc456", "eth1") && !v.contains("abc456", "eth0"));
        assert!(!v.contains("abc123", "eth0"));
        let err = resolve_keep(&[KeepItem::parse("abc1")], ["abc123", "abc100"]).unwrap_err();
        assert!(err.contains("abc100") && err.contains("abc123"), "{err}");
    }
}
