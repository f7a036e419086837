//! The lease store: one directory per network, every operation under one `flock`.
//!
//! ```text
//! <dataDir>/<network>/
//!   lock                        held with flock(2) for the whole operation
//!   leases/<address>            one JSON record per leased address
//!   owners/<containerID>:<ifname>  the addresses that attachment holds (the index by owner)
//!   spare/<address>             records of released leases, reused by later ADDs
//!   last_reserved_ip.<set>      where the round robin of range set <set> continues
//!   pool.json                   the ranges in force, for `podcidr status`
//!   source.json                 the pod CIDRs last read by a kubernetes, kubelet or crd mode
//! ```
//!
//! Crash safety (SIGKILL at any instant) rests on three rules:
//! 1. An address is taken exactly when `leases/<address>` exists; the file appears whole and at
//!    once (written aside, then renamed with RENAME_NOREPLACE), so two owners can never both
//!    create it, and a reader never sees half a record.
//! 2. The owner index is written before the leases it names. A killed ADD leaves at worst an
//!    index naming addresses it never took; the retried ADD or the DEL that follows a failed
//!    ADD finds them through the index and cleans up. Leases are never orphaned.
//! 3. A result is printed only after every file it describes is in place.
//!
//! Creating a file (an inode) is the dearest thing an ADD does on ext4, so the store creates as
//! few as it can: the owner index is a hard link to a lease record, and a DEL moves its records
//! to `spare/` for the next ADD to overwrite in place and rename into `leases/`. A spare is junk
//! whatever it holds until that rename; only a spare with no other link is reused.
//!
//! Nothing is fsynced: the page cache survives a killed process, and a power loss also ends
//! every container of the node; leases from an earlier boot are reclaimed by boot ID.

pub mod host_local;
pub mod record;

use record::OnDisk;
pub use record::{LeaseRecord, OwnerIndex};

use crate::cni::error::{CniError, CniResult};
use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const LEASES: &str = "leases";
pub const OWNERS: &str = "owners";
pub const POOL_FILE: &str = "pool.json";
/// The cache of the non-static modes (see `modes::source`); written without the lock.
pub const SOURCE_FILE: &str = "source.json";
const LOCK_FILE: &str = "lock";
const TMP: &str = ".tmp";
const SPARE: &str = "spare";
/// Spares tried before an ADD creates a new record instead (some may be unusable).
const SPARES_TRIED: usize = 4;
/// Longest textual address (IPv6) plus a newline; the file is rewritten in place at this width.
const LAST_RESERVED_WIDTH: usize = 40;
/// Probes of single lease files before the walk lists the whole directory once instead.
const PROBES_BEFORE_LISTING: u32 = 64;

/// What is at `leases/<address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Free,
    Held(Box<LeaseRecord>),
    /// The file exists (so the address is taken) but cannot be read as a record.
    Unreadable(String),
}

/// What is at `owners/<containerID>:<ifname>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerState {
    None,
    Held(OwnerIndex),
    /// Left half-written by a killed ADD, before any lease it would name was taken.
    Unreadable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Requests that change the store.
    Exclusive,
    /// Readers such as `podcidr status`.
    Shared,
}

pub struct Store {
    dir: PathBuf,
    _lock: File,
    probes: u32,
    /// Filled once a walk has probed too many taken addresses one by one.
    listed: Option<HashSet<IpAddr>>,
}

fn private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads a store file. Anything but a regular file (a symlink, a directory, a FIFO someone put
/// there) is refused without blocking, so a foreign object can never hang a request under the lock.
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

/// Whether a failed read means "something is there, but not a record of ours".
fn is_foreign(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData || matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EISDIR))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// rename(2) that fails with EEXIST instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: both are valid NUL-terminated paths; renameat2 reads them and nothing else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems without RENAME_NOREPLACE: link(2) is just as exclusive.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(err),
    }
}

/// Creates `dir` (0700) if it is missing; refuses anything there that is not a directory.
fn ensure_store_dir(dir: &Path) -> CniResult<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(CniError::new(
            crate::cni::error::code::IO_FAILURE,
            format!(
                "{} is not a directory (a symbolic link?); the store is never followed out of itself",
                dir.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            private_dir(dir).map_err(|e| CniError::io(format!("cannot create {}", dir.display()), &e))
        }
        Err(e) => Err(CniError::io(format!("cannot stat {}", dir.display()), &e)),
    }
}

/// Reads `name` in a network's store directory without its lock: for files replaced whole by
/// [`write_unlocked`], which a reader sees old or new, never half-written.
pub fn read_unlocked(network_dir: &Path, name: &str) -> Option<Vec<u8>> {
    read_small(&network_dir.join(name)).ok()
}

/// Replaces `name` in a network's store directory (created if missing) whole: written aside
/// under a name of this process, then renamed over it (0600). Takes no lock, so it may be
/// called while an ADD elsewhere holds it; of two concurrent writers the last one wins.
pub fn write_unlocked(network_dir: &Path, name: &str, bytes: &[u8]) -> CniResult<()> {
    ensure_store_dir(network_dir)?;
    let tmp = network_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let path = network_dir.join(name);
    let _ = fs::remove_file(&tmp);
    create_new(&tmp).and_then(|mut f| f.write_all(bytes)).and_then(|()| fs::rename(&tmp, &path)).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CniError::io(format!("cannot write {}", path.display()), &e)
    })
}

/// When this boot began, from /proc/stat's `btime`.
pub fn boot_time() -> Option<std::time::SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

pub fn owner_file_name(container_id: &str, ifname: &str) -> String {
    // Neither a container ID nor an ifname may hold ':', so the name is unambiguous.
    format!("{container_id}:{ifname}")
}

/// The kernel's boot ID; `PODCIDR_BOOT_ID` overrides it for tests.
pub fn boot_id() -> String {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| match std::env::var_os("PODCIDR_BOOT_ID") {
            Some(id) => id.to_string_lossy().into_owned(),
            None => {
                fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
            }
        })
        .clone()
}

impl Store {
    pub fn network_dir(data_dir: &Path, network: &str) -> PathBuf {
        data_dir.join(network)
    }

    /// Opens (creating it if needed) the store of `network` and takes its lock.
    pub fn open(data_dir: &Path, network: &str, access: Access) -> CniResult<Store> {
        let dir = Self::network_dir(data_dir, network);
        for sub in [dir.as_path(), &dir.join(LEASES), &dir.join(OWNERS)] {
            ensure_store_dir(sub)?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| CniError::io(format!("cannot open {}", lock_path.display()), &e))?;
        Self::locked(dir, lock, access)
    }

    /// Opens the store of `network` if it exists: DEL, CHECK and GC never create one.
    pub fn open_if_present(data_dir: &Path, network: &str) -> CniResult<Option<Store>> {
        Self::open_existing(&Self::network_dir(data_dir, network), Access::Exclusive)
    }

    /// Opens an existing store directory; `None` when there is none.
    pub fn open_existing(dir: &Path, access: Access) -> CniResult<Option<Store>> {
        let path = dir.join(LOCK_FILE);
        // A shared lock needs no write access: readers work on a read-only store.
        let write = access == Access::Exclusive;
        match OpenOptions::new().read(true).write(write).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&path) {
            Ok(lock) => Self::locked(dir.to_path_buf(), lock, access).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("cannot open {}", path.display()), &e)),
        }
    }

    fn locked(dir: PathBuf, lock: File, access: Access) -> CniResult<Store> {
        let locked = match access {
            Access::Exclusive => lock.lock(),
            Access::Shared => lock.lock_shared(),
        };
        locked.map_err(|e| CniError::io(format!("cannot lock {}", dir.join(LOCK_FILE).display()), &e))?;
        Ok(Store { dir, _lock: lock, probes: 0, listed: None })
    }

    /// Drops what [`Store::is_taken`] learnt from a listing, after leases were removed.
    pub fn forget_listing(&mut self) {
        self.listed = None;
        self.probes = 0;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(LEASES).join(ip.to_string())
    }

    fn owner_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(OWNERS).join(owner_file_name(container_id, ifname))
    }

    fn io_err(&self, what: &str, path: &Path, e: &io::Error) -> CniError {
        CniError::io(format!("cannot {what} {}", path.display()), e)
    }

    pub fn owner(&self, container_id: &str, ifname: &str) -> CniResult<OwnerState> {
        let path = self.owner_path(container_id, ifname);
        match read_small(&path) {
            Ok(bytes) => Ok(match serde_json::from_slice::<OwnerIndex>(&bytes) {
                Ok(idx) => OwnerState::Held(idx),
                Err(e) => OwnerState::Unreadable(e.to_string()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(OwnerState::None),
            Err(e) if is_foreign(&e) => Ok(OwnerState::Unreadable(format!("{e} (a symbolic link?)"))),
            Err(e) => Err(self.io_err("read", &path, &e)),
        }
    }

    pub fn lease(&self, ip: IpAddr) -> CniResult<LeaseState> {
        self.lease_at(&self.lease_path(ip))
    }

    fn lease_at(&self, path: &Path) -> CniResult<LeaseState> {
        match read_small(path) {
            Ok(bytes) => Ok(match serde_json::from_slice::<LeaseRecord>(&bytes) {
                Ok(rec) => LeaseState::Held(Box::new(rec)),
                Err(e) => LeaseState::Unreadable(e.to_string()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LeaseState::Free),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(LeaseState::Unreadable("is a symbolic link".into())),
            Err(e) if is_foreign(&e) => Ok(LeaseState::Unreadable(e.to_string())),
            Err(e) => Err(self.io_err("read", path, &e)),
        }
    }

    /// Whether a lease file exists for `ip`. Cheap per address; after many taken addresses in
    /// a row it lists the directory once, so a walk through a crowded range stays bounded.
    pub fn is_taken(&mut self, ip: IpAddr) -> CniResult<bool> {
        if let Some(listed) = &self.listed {
            return Ok(listed.contains(&ip));
        }
        self.probes += 1;
        if self.probes > PROBES_BEFORE_LISTING {
            let listed: HashSet<IpAddr> = self.lease_names()?.into_iter().filter_map(|n| n.parse().ok()).collect();
            let taken = listed.contains(&ip);
            self.listed = Some(listed);
            return Ok(taken);
        }
        let path = self.lease_path(ip);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io_err("stat", &path, &e)),
        }
    }

    /// File names in `leases/`, without temporary files.
    pub fn lease_names(&self) -> CniResult<Vec<String>> {
        self.names_in(LEASES)
    }

    pub fn owner_names(&self) -> CniResult<Vec<String>> {
        self.names_in(OWNERS)
    }

    fn names_in(&self, sub: &str) -> CniResult<Vec<String>> {
        let path = self.dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_err("list", &path, &e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io_err("list", &path, &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every lease file with what it holds, sorted by address.
    pub fn leases(&self) -> CniResult<Vec<(String, LeaseState)>> {
        let mut out = Vec::new();
        for name in self.lease_names()? {
            let state = self.lease_at(&self.dir.join(LEASES).join(&name))?;
            out.push((name, state));
        }
        out.sort_by_key(|(name, _)| name.parse::<IpAddr>().map(crate::ipam::pool::to_u128).unwrap_or(u128::MAX));
        Ok(out)
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let bytes = read_small(&self.dir.join(format!("last_reserved_ip.{set}"))).ok()?;
        std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
    }

    /// Rewritten in place at a fixed width: a truncating rewrite costs far more on ext4.
    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> CniResult<()> {
        let path = self.dir.join(format!("last_reserved_ip.{set}"));
        let line = format!("{:<w$}\n", ip.to_string(), w = LAST_RESERVED_WIDTH - 1);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|f| f.write_all_at(line.as_bytes(), 0))
            .map_err(|e| self.io_err("write", &path, &e))
    }

    /// Records `owner` and then each of its leases (rule 2). Fails with no lease taken if an
    /// address turns out to be held already.
    ///
    /// The index is not a file of its own: `owners/<id>:<ifname>` is a hard link to the first
    /// lease's record, which also lists every address of the attachment (`ips`), so an
    /// [`OwnerIndex`] reads from it. One inode per address instead of one more per ADD: file
    /// creation is the dearest thing an ADD does (docs/benchmarks.md). No leases, no index.
    pub fn claim(&mut self, owner: &OwnerIndex, leases: &[LeaseRecord]) -> CniResult<()> {
        let owner_path = self.owner_path(&owner.container_id, &owner.ifname);
        for (i, lease) in leases.iter().enumerate() {
            let index = (i == 0).then_some(owner_path.as_path());
            if let Err(e) = self.write_lease(&OnDisk { record: lease, ips: &owner.ips }, lease.ip, index) {
                // Undo what this call took; the index goes last so nothing is orphaned.
                for done in &leases[..i] {
                    let _ = fs::remove_file(self.lease_path(done.ip));
                }
                let _ = fs::remove_file(&owner_path);
                return Err(e);
            }
        }
        if let Some(listed) = &mut self.listed {
            listed.extend(leases.iter().map(|l| l.ip));
        }
        Ok(())
    }

    /// Writes the record of `ip` aside (in a spare, else a new file), links it as the owner
    /// index first if asked (rule 2), then renames it into place.
    fn write_lease(&self, record: &OnDisk<'_>, ip: IpAddr, index: Option<&Path>) -> CniResult<()> {
        let path = self.lease_path(ip);
        let mut bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| CniError::new(crate::cni::error::code::IO_FAILURE, e.to_string()))?;
        bytes.push(b'\n');
        let aside = match self.reuse_spare(&mut bytes) {
            Some(spare) => spare,
            None => {
                let tmp = self.dir.join(LEASES).join(TMP);
                // A tmp file left by a killed process is simply replaced.
                let _ = fs::remove_file(&tmp);
                create_new(&tmp).and_then(|mut f| f.write_all(&bytes)).map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    self.io_err("write", &tmp, &e)
                })?;
                tmp
            }
        };
        if let Some(index) = index {
            fs::hard_link(&aside, index).map_err(|e| {
                let _ = fs::remove_file(&aside);
                self.io_err("write", index, &e)
            })?;
        }
        rename_noreplace(&aside, &path).map_err(|e| {
            let _ = fs::remove_file(&aside);
            if e.kind() == io::ErrorKind::AlreadyExists {
                CniError::new(crate::cni::error::code::ADDRESS_UNAVAILABLE, format!("{ip} was taken by another owner"))
            } else {
                self.io_err("write", &path, &e)
            }
        })
    }

    /// Overwrites a spare record with `bytes` and returns its path. The record is padded with
    /// blanks to the spare's length rather than truncated (JSON allows trailing white space;
    /// truncating costs more than the write). A spare that is not a lone regular file (still
    /// linked as an owner index after a crash, or something foreign) is dropped, not used.
    fn reuse_spare(&self, bytes: &mut Vec<u8>) -> Option<PathBuf> {
        let dir = self.dir.join(SPARE);
        for entry in fs::read_dir(&dir).ok()?.take(SPARES_TRIED) {
            let path = entry.ok()?.path();
            let opened = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&path)
                .and_then(|f| f.metadata().map(|m| (f, m)));
            if let Ok((file, meta)) = opened
                && meta.is_file()
                && meta.nlink() == 1
            {
                let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
                if len > bytes.len() {
                    let newline = bytes.pop();
                    bytes.resize(len - 1, b' ');
                    bytes.extend(newline);
                }
                if file.write_all_at(bytes, 0).is_ok() {
                    return Some(path);
                }
            }
            let _ = fs::remove_file(&path);
        }
        None
    }

    /// Moves a released lease's record to `spare/` for a later ADD; removes it if it can't.
    fn retire(&self, ip: IpAddr) -> CniResult<()> {
        let path = self.lease_path(ip);
        let spare = self.dir.join(SPARE).join(ip.to_string());
        let moved = rename_noreplace(&path, &spare).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                private_dir(&self.dir.join(SPARE)).and_then(|()| rename_noreplace(&path, &spare))
            }
            _ => Err(e),
        });
        if moved.is_err() {
            self.remove(&path)?;
        }
        Ok(())
    }

    /// Releases what the index of `(container_id, ifname)` names, then the index itself.
    /// A lease held by someone else is left alone. Returns the addresses released.
    pub fn release(&self, container_id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let ips = match self.owner(container_id, ifname)? {
            OwnerState::None => return Ok(Vec::new()),
            OwnerState::Unreadable(_) => Vec::new(),
            OwnerState::Held(idx) => idx.ips,
        };
        let mut released = Vec::new();
        for ip in ips {
            match self.lease(ip)? {
                LeaseState::Held(rec) if rec.owned_by(container_id, ifname) => self.retire(ip)?,
                // Damaged (records are written whole, so not by a killed ADD) but named by this
                // owner's index, which was written before it: most likely this owner's.
                LeaseState::Unreadable(_) => self.remove(&self.lease_path(ip))?,
                LeaseState::Held(_) | LeaseState::Free => continue,
            }
            released.push(ip);
        }
        self.remove(&self.owner_path(container_id, ifname))?;
        Ok(released)
    }

    /// When `leases/<name>` was last written.
    pub fn lease_mtime(&self, name: &str) -> Option<std::time::SystemTime> {
        fs::symlink_metadata(self.dir.join(LEASES).join(name)).and_then(|m| m.modified()).ok()
    }

    /// Removes one lease file by name, as GC does for leases no index names.
    pub fn remove_lease_file(&self, name: &str) -> CniResult<()> {
        self.remove(&self.dir.join(LEASES).join(name))
    }

    pub fn remove_owner_file(&self, name: &str) -> CniResult<()> {
        self.remove(&self.dir.join(OWNERS).join(name))
    }

    fn remove(&self, path: &Path) -> CniResult<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // A directory someone put in the store is not ours to delete, nor a reason to fail.
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                tracing::warn!("leaving {} alone: it is a directory", path.display());
                Ok(())
            }
            Err(e) => Err(self.io_err("remove", path, &e)),
        }
    }

    pub fn read_pool(&self) -> Option<Vec<u8>> {
        read_small(&self.dir.join(POOL_FILE)).ok()
    }

    /// Keeps `pool.json` equal to `bytes`, writing only when it changed.
    pub fn write_pool(&self, bytes: &[u8]) -> CniResult<()> {
        if self.read_pool().as_deref() == Some(bytes) {
            return Ok(());
        }
        write_unlocked(&self.dir, POOL_FILE, bytes)
    }
}
