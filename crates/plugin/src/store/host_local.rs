//! Adopting host-local's lease files, so a node switching to podcidr keeps every running pod's
//! address reserved and DEL for those pods still works.
//!
//! host-local keeps `<dataDir>/<network>/<address>` holding `<containerID>\r\n<ifname>` (or, in
//! releases before 0.8, just the container ID), plus `last_reserved_ip.<set>` and `lock`.
//!
//! **The link.** An import records host-local's directory in the network's store
//! (`host-local-link`). While it is there, every ADD and DEL also takes host-local's `lock`
//! (after the store's own; host-local takes only its own, so the order cannot deadlock), an
//! address with a host-local lease file counts as taken, and each address an ADD hands out gets
//! a host-local lease file of its owner before the lease itself, which a DEL removes. host-local
//! creates its lease files with O_EXCL under its lock, so from the import on neither plugin can
//! hand out an address the other holds, whatever order the runtime calls them in. The link
//! ends only with `podcidr unlink-host-local` (nothing else can know that no runtime will call
//! host-local again). Every release of podcidr's, with or without a DEL, removes the lease file
//! it wrote there; so does a DEL after the link ended, which is why ending it keeps the path
//! (`<path>\nended\n`): podcidr's files there would otherwise outlive their pods, and a later
//! import or a switch back to host-local would hold their addresses for ever.

use super::{LeaseRecord, LeaseState, OwnerIndex, OwnerState, Store, boot_id};
use crate::cni::env::{validate_container_id, validate_ifname};
use crate::cni::error::{CniError, CniResult, code};
use crate::ipam::pool::Pool;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// In a network's store: the path of the host-local directory it is linked to, followed by a
/// line `ended` once unlinked.
pub const LINK_FILE: &str = "host-local-link";
const ENDED: &str = "ended";
/// What a podcidr store holds besides `lock`, should `dataDir` make it host-local's directory.
const PODCIDR_NAMES: [&str; 6] =
    [super::LEASES, super::OWNERS, "spare", super::POOL_FILE, super::SOURCE_FILE, LINK_FILE];

#[derive(Debug, Default)]
pub struct ImportReport {
    /// `(address, containerID, ifname)` adopted.
    pub adopted: Vec<(IpAddr, String, String)>,
    /// Files left alone, and why.
    pub skipped: Vec<(String, String)>,
    /// Leases podcidr already holds for the same owner (adopted before, or reserved by an ADD).
    pub already: usize,
    /// Addresses host-local leases to one owner and podcidr to another: `(address, host-local's
    /// owner, podcidr's owner)`. Never made by podcidr with the link in place.
    pub collisions: Vec<(IpAddr, String, String)>,
    /// Imported leases whose host-local file is gone (host-local's DEL ran): released.
    pub released: Vec<(IpAddr, String, String)>,
}

/// Parses one host-local lease file's content; the older id-only format gets `default_ifname`.
pub fn parse_lease(content: &str, default_ifname: &str) -> Option<(String, String)> {
    let mut lines = content.split(['\r', '\n']).map(str::trim).filter(|l| !l.is_empty());
    let id = lines.next()?.to_string();
    let ifname = lines.next().unwrap_or(default_ifname).to_string();
    Some((id, ifname))
}

/// Adopts every lease in host-local's directory `from` into `store`, and links the store to
/// `from` (see the module's comment). host-local's own lock is held meanwhile, so a host-local
/// still running cannot change the directory under us.
pub fn import(from: &Path, store: &mut Store, pool: Option<&Pool>, default_ifname: &str) -> CniResult<ImportReport> {
    let from = fs::canonicalize(from).map_err(|e| CniError::io(format!("cannot read {}", from.display()), &e))?;
    let from = from.as_path();
    check_source(from)?;
    let _lock = lock_unless_shared(store, from)?;
    let relinked = link_file(store.dir()).map(|(dir, _)| dir).as_deref() == Some(from);
    // The link first: from here on ADDs respect host-local's leases, even if the import fails.
    let mut link = from.as_os_str().as_encoded_bytes().to_vec();
    link.push(b'\n');
    super::write_unlocked(store.dir(), LINK_FILE, &link)?;

    let entries = fs::read_dir(from).map_err(|e| CniError::io(format!("cannot read {}", from.display()), &e))?;
    let mut report = ImportReport::default();
    let mut owners: BTreeMap<(String, String), Vec<(IpAddr, std::time::SystemTime)>> = BTreeMap::new();
    let mut last_reserved = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CniError::io(format!("cannot read {}", from.display()), &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // host-local's lock, and podcidr's own files when both share the directory.
        if name == "lock" || name.starts_with('.') || PODCIDR_NAMES.contains(&name.as_str()) {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => {
                report.skipped.push((name, "not a regular file".into()));
                continue;
            }
        };
        let content = match read_small(&path).map(|b| String::from_utf8_lossy(&b).into_owned()) {
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

    if relinked {
        // Before adopting: host-local may have leased such an address again, to someone else.
        release_deleted_imports(from, store, &mut report)?;
    }
    let boot = boot_id();
    'owners: for ((cid, ifname), ips) in owners {
        let mut free = Vec::new();
        for &(ip, mtime) in &ips {
            match store.lease(ip)? {
                LeaseState::Free => free.push((ip, mtime)),
                LeaseState::Held(rec) if rec.owned_by(&cid, &ifname) => report.already += 1,
                LeaseState::Held(rec) => {
                    let podcidr_owner = format!("{} ({}:{})", rec.owner_label(), rec.container_id, rec.ifname);
                    report.collisions.push((ip, format!("{cid}:{ifname}"), podcidr_owner));
                    continue 'owners;
                }
                LeaseState::Unreadable(_) => {
                    report
                        .skipped
                        .push((ip.to_string(), format!("{ip} has an unreadable record in the podcidr store")));
                    continue 'owners;
                }
            }
        }
        if free.is_empty() {
            continue;
        }
        if !matches!(store.owner(&cid, &ifname)?, OwnerState::None) {
            for (ip, _) in &free {
                let why = format!("{cid}:{ifname} already has a lease in the podcidr store, of other addresses");
                report.skipped.push((ip.to_string(), why));
            }
            continue;
        }
        let records: Vec<LeaseRecord> = free
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
                    // Empty marks an imported lease: an ADD always records CNI_NETNS.
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
            OwnerIndex { container_id: cid.clone(), ifname: ifname.clone(), ips: free.iter().map(|x| x.0).collect() };
        match store.claim(&owner, &records) {
            Ok(()) => report.adopted.extend(free.iter().map(|(ip, _)| (*ip, cid.clone(), ifname.clone()))),
            Err(e) if e.code == code::ADDRESS_UNAVAILABLE => {
                report.skipped.extend(free.iter().map(|(ip, _)| (ip.to_string(), e.msg.clone())))
            }
            Err(e) => return Err(e),
        }
    }
    for (set, ip) in last_reserved {
        if store.last_reserved(set).is_none() {
            store.set_last_reserved(set, ip)?;
        }
    }
    report.adopted.sort();
    Ok(report)
}

/// Leases an earlier import adopted whose host-local file is gone: host-local's DEL ran for the
/// pod before the switch, so podcidr's copy would hold the address for ever.
fn release_deleted_imports(from: &Path, store: &mut Store, report: &mut ImportReport) -> CniResult<()> {
    let mut imported = BTreeMap::<(String, String), Vec<IpAddr>>::new();
    for (_, state) in store.leases()? {
        if let LeaseState::Held(rec) = state
            && rec.netns.is_empty()
        {
            imported.entry((rec.container_id.clone(), rec.ifname.clone())).or_default().push(rec.ip);
        }
    }
    for ((cid, ifname), ips) in imported {
        if ips.iter().any(|ip| names_owner(&from.join(ip.to_string()), &cid, &ifname)) {
            continue;
        }
        for ip in store.release(&cid, &ifname)? {
            report.released.push((ip, cid.clone(), ifname.clone()));
        }
    }
    store.forget_listing();
    Ok(())
}

/// Whether the host-local lease file at `path` names `(cid, ifname)`, as host-local's DEL
/// matches it: `<id>\r\n<ifname>`, or the id alone in the format before 0.8.
fn names_owner(path: &Path, cid: &str, ifname: &str) -> bool {
    let Ok(bytes) = read_small(path) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes);
    parse_lease(&text, ifname).is_some_and(|(id, ifn)| id == cid && ifn == ifname)
}

/// A host-local directory for one network holds host-local's `lock` or at least one lease file
/// (a file named by an address); anything else (host-local's data directory itself, a typo) is
/// refused before a link to it could hide nothing and protect nothing.
pub fn check_source(dir: &Path) -> CniResult<()> {
    let entries = fs::read_dir(dir).map_err(|e| CniError::io(format!("cannot read {}", dir.display()), &e))?;
    let found = entries.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name == "lock" || name.parse::<IpAddr>().is_ok()
    });
    if found {
        return Ok(());
    }
    Err(CniError::new(
        code::INVALID_CONFIG,
        format!(
            "{} holds no host-local lease file and no `lock`: expected host-local's directory of the network \
             (<dataDir>/<network>, e.g. /var/lib/cni/networks/<network>)",
            dir.display()
        ),
    ))
}

/// The host-local directory named in `network_dir`'s link file, and whether the link is still
/// in place. Without a link this is one failed open(2), all an ADD or DEL pays for the link.
fn link_file(network_dir: &Path) -> Option<(PathBuf, bool)> {
    let bytes = super::read_unlocked(network_dir, LINK_FILE)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next()?);
    let active = lines.next() != Some(ENDED);
    dir.is_absolute().then_some((dir, active))
}

/// The host-local directory the store in `network_dir` is linked to, while the link is in place.
pub fn linked_dir(network_dir: &Path) -> Option<PathBuf> {
    link_file(network_dir).filter(|(_, active)| *active).map(|(dir, _)| dir)
}

/// Takes host-local's lock of `dir` (creating both as host-local does), without following a
/// symbolic link or blocking on something that is not a regular file.
fn lock_dir(dir: &Path) -> CniResult<File> {
    let path = dir.join("lock");
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
    };
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o755).create(dir).and_then(|()| open())
        }
        other => other,
    }
    .map_err(|e| CniError::io(format!("cannot open host-local's lock {}", path.display()), &e))?;
    let meta = file.metadata().map_err(|e| CniError::io(format!("cannot stat {}", path.display()), &e))?;
    if !meta.is_file() {
        return Err(CniError::new(
            code::IO_FAILURE,
            format!("host-local's lock {} is not a regular file", path.display()),
        ));
    }
    file.lock().map_err(|e| CniError::io(format!("cannot lock {}", path.display()), &e))?;
    Ok(file)
}

/// host-local's lock of `dir`, or `None` when `dir` is the store's own directory (`dataDir` set
/// to host-local's): the store's lock is that very file, and a second flock of it would wait
/// for ever on the first.
fn lock_unless_shared(store: &Store, dir: &Path) -> CniResult<Option<File>> {
    if fs::canonicalize(store.dir()).is_ok_and(|own| own == dir) {
        return Ok(None);
    }
    lock_dir(dir).map(Some)
}

/// A store linked to host-local's directory (with host-local's lock held), or whose link has
/// ended but whose files there may remain.
pub struct Link {
    dir: PathBuf,
    /// Still linked: host-local's leases count as taken and each new lease gets a file there.
    active: bool,
    _lock: Option<File>,
}

impl Link {
    /// Under the store's lock: the link and host-local's lock, or `None` when never linked.
    /// An ended link takes no lock and creates nothing: host-local is no longer called (the
    /// premise of the unlink), and only files naming podcidr's own owners are removed.
    pub fn open(store: &Store) -> CniResult<Option<Link>> {
        let Some((dir, active)) = link_file(store.dir()) else {
            return Ok(None);
        };
        let lock = if active { lock_unless_shared(store, &dir)? } else { None };
        Ok(Some(Link { dir, active, _lock: lock }))
    }

    /// For STATUS, a read-only question: the link in place, without host-local's lock.
    pub fn peek(network_dir: &Path) -> Option<Link> {
        linked_dir(network_dir).map(|dir| Link { dir, active: true, _lock: None })
    }

    /// Whether host-local holds (or podcidr has reserved there) `ip`, while linked.
    pub fn is_taken(&self, ip: IpAddr) -> CniResult<bool> {
        if !self.active {
            return Ok(false);
        }
        let path = self.dir.join(ip.to_string());
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(CniError::io(format!("cannot stat {}", path.display()), &e)),
        }
    }

    /// Writes a host-local lease file for each address of `owner`, as host-local would, so that
    /// host-local never hands them out. All or none.
    pub fn reserve(&self, owner: &OwnerIndex) -> CniResult<()> {
        if !self.active {
            return Ok(());
        }
        let content = format!("{}\r\n{}", owner.container_id, owner.ifname);
        for (i, ip) in owner.ips.iter().enumerate() {
            let path = self.dir.join(ip.to_string());
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .and_then(|mut f| f.write_all(content.as_bytes()));
            if let Err(e) = written {
                if e.kind() != io::ErrorKind::AlreadyExists {
                    let _ = fs::remove_file(&path);
                }
                self.unreserve(&owner.container_id, &owner.ifname, &owner.ips[..i]);
                return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                    CniError::new(
                        code::ADDRESS_UNAVAILABLE,
                        format!("{ip} is leased by host-local ({})", path.display()),
                    )
                } else {
                    CniError::io(format!("cannot write host-local's {}", path.display()), &e)
                });
            }
        }
        Ok(())
    }

    /// Whether `ip` would still be taken once the lease of `(cid, ifname)` on it is released:
    /// host-local's directory has a file for it that names someone else.
    pub fn taken_by_other(&self, ip: IpAddr, cid: &str, ifname: &str) -> CniResult<bool> {
        Ok(self.is_taken(ip)? && !names_owner(&self.dir.join(ip.to_string()), cid, ifname))
    }

    /// Removes host-local lease files of `ips` that name `(cid, ifname)`: every release of
    /// podcidr's calls it, so that a released address is not held there for ever.
    pub fn unreserve(&self, cid: &str, ifname: &str, ips: &[IpAddr]) {
        for ip in ips {
            let path = self.dir.join(ip.to_string());
            if names_owner(&path, cid, ifname) {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// host-local's own DEL: removes every lease file there naming `(cid, ifname)`.
    fn release_owner(&self, cid: &str, ifname: &str) -> CniResult<()> {
        for (ip, path) in self.lease_files()? {
            if names_owner(&path, cid, ifname) {
                info!(%ip, container = cid, ifname, "released host-local's lease");
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }

    fn lease_files(&self) -> CniResult<Vec<(IpAddr, PathBuf)>> {
        lease_files(&self.dir)
    }
}

/// host-local's lease files in `dir` (files named by an address), with their paths.
pub fn lease_files(dir: &Path) -> CniResult<Vec<(IpAddr, PathBuf)>> {
    let entries = fs::read_dir(dir).map_err(|e| CniError::io(format!("cannot list {}", dir.display()), &e))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<IpAddr>().ok()?, e.path())))
        .collect())
}

/// DEL's part, after the store released `released` for `(cid, ifname)`: host-local's files of
/// those addresses go too, linked or not any more (or, while linked and when the store held
/// nothing, whatever host-local leased to the attachment, as host-local's own DEL would).
pub fn on_del(store: &Store, cid: &str, ifname: &str, released: &[IpAddr]) -> CniResult<()> {
    let Some(link) = Link::open(store)? else {
        return Ok(());
    };
    if released.is_empty() && link.active {
        link.release_owner(cid, ifname)?;
    } else {
        link.unreserve(cid, ifname, released);
    }
    Ok(())
}

/// Ends the link (`podcidr unlink-host-local`): host-local's leases no longer count and ADDs
/// write nothing there; the path is kept so that DELs still remove podcidr's own files there.
pub fn unlink(store: &Store) -> CniResult<()> {
    let Some((dir, true)) = link_file(store.dir()) else {
        return Ok(());
    };
    let mut ended = dir.into_os_string().into_encoded_bytes();
    ended.extend_from_slice(format!("\n{ENDED}\n").as_bytes());
    super::write_unlocked(store.dir(), LINK_FILE, &ended).inspect_err(|e| {
        warn!(dir = %store.dir().display(), error = %e.msg, "cannot end the host-local link");
    })
}

/// Reads one of host-local's small files (outside podcidr's store, so by path): never through a
/// symlink, never blocking on a FIFO, regular files only.
fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut file =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    let mut buf = Vec::with_capacity(512);
    file.read_to_end(&mut buf)?;
    Ok(buf)
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
