//! Installing a file the way a running system can bear: written whole to a temporary file in
//! the destination's directory, fsynced, renamed over the old one, the directory fsynced. A
//! runtime exec'ing the plugin, or reading the conflist, sees the old file or the new one,
//! never half of one; a running plugin keeps its old inode, so there is no "text file busy"
//! (an open-for-write of a binary being executed) and nothing is ever deleted first.
//!
//! The temporary name ends in `.tmp`, an extension no runtime loads as a CNI config.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Write `bytes` to `dest` atomically with `mode`.
pub fn install(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = temp_path(dest);
    // A temporary file left by a crash is ours to replace.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have narrowed the mode.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dest)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `<dir>/.<name>.podcidr-agent.tmp`.
pub fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.podcidr-agent.tmp"))
}

/// What identifies one version of a file without reading it: a rename, a rewrite or a chmod
/// changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    mode: u32,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            mode: m.mode() & 0o7777,
        }
    }
}

/// One file the agent keeps in place: its wanted content and mode, and the stamp of the last
/// version found (or made) right, so that a check reads the file only when it changed.
#[derive(Debug)]
pub struct Guarded {
    pub dest: PathBuf,
    mode: u32,
    want: Vec<u8>,
    verified: Option<Stamp>,
    /// The wanted content was installed once already: installing it again is a repair.
    installed: bool,
}

impl Guarded {
    pub fn new(dest: PathBuf, want: Vec<u8>, mode: u32) -> Self {
        Guarded { dest, mode, want, verified: None, installed: false }
    }

    /// Change what the file must hold (a new token, a changed conflist source).
    pub fn want(&mut self, bytes: Vec<u8>) {
        if bytes != self.want {
            self.want = bytes;
            self.verified = None;
            self.installed = false;
        }
    }

    pub fn wanted(&self) -> &[u8] {
        &self.want
    }

    /// Whether the file is in place: the wanted content and mode.
    pub fn in_place(&mut self) -> bool {
        let Ok(meta) = fs::symlink_metadata(&self.dest) else {
            self.verified = None;
            return false;
        };
        let stamp = Stamp::of(&meta);
        if self.verified == Some(stamp) {
            return true;
        }
        let ok = meta.is_file()
            && stamp.mode == self.mode
            && meta.len() == self.want.len() as u64
            && fs::read(&self.dest).is_ok_and(|b| b == self.want);
        self.verified = ok.then_some(stamp);
        ok
    }

    /// Install the wanted content; whether it is a repair (this content was installed before
    /// and something deleted or changed it since).
    pub fn put(&mut self) -> io::Result<bool> {
        install(&self.dest, &self.want, self.mode)?;
        self.verified = fs::symlink_metadata(&self.dest).ok().map(|m| Stamp::of(&m));
        Ok(std::mem::replace(&mut self.installed, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_replaces_and_notices_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/podcidr");
        let mut g = Guarded::new(dest.clone(), b"v1".to_vec(), 0o755);
        assert!(!g.in_place());
        assert!(!g.put().unwrap(), "the first install is no repair");
        assert!(g.in_place());
        assert_eq!(fs::read(&dest).unwrap(), b"v1");
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o755);
        assert!(!temp_path(&dest).exists());

        // Changed content of the same size, a chmod, a deletion: each is seen.
        fs::write(&dest, b"v2").unwrap();
        assert!(!g.in_place());
        g.put().unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!g.in_place());
        g.put().unwrap();
        fs::remove_file(&dest).unwrap();
        assert!(!g.in_place());
        assert!(g.put().unwrap(), "a repair");
        assert!(g.in_place());

        g.want(b"v3 longer".to_vec());
        assert!(!g.in_place());
        assert!(!g.put().unwrap(), "an update is no repair");
        assert_eq!(fs::read(&dest).unwrap(), b"v3 longer");
    }

    #[test]
    fn rename_keeps_the_old_inode_for_whoever_has_it_open() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("podcidr");
        install(&dest, b"old", 0o755).unwrap();
        let old = fs::File::open(&dest).unwrap();
        let old_ino = old.metadata().unwrap().ino();
        install(&dest, b"new", 0o755).unwrap();
        assert_ne!(fs::metadata(&dest).unwrap().ino(), old_ino, "replaced by rename, not written in place");
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }
}
