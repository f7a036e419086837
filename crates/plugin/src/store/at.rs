//! File operations relative to a directory fd that never follow a symbolic link.
//!
//! Every name the store opens, creates, renames, links or removes is a single component
//! resolved against the fd of the directory holding it (the network directory or one of its
//! subdirectories, each opened with `O_DIRECTORY | O_NOFOLLOW`). A name never contains `/`, so
//! no path walk happens after the network directory was opened: replacing `leases/` or any
//! file with a symbolic link cannot lead a request out of the store.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A single path component: no `/`, no NUL, not `.` or `..`, not empty.
fn component(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a file name")));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a file name holds NUL"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Opens a directory by path, following symbolic links: for the data directory, whose path is
/// the administrator's choice.
pub fn open_path_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; the returned fd is owned by us.
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: fd was just opened and is not shared.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` in `dir`; ELOOP if it is a symbolic link, ENOTDIR if it is not a
/// directory.
pub fn open_dir(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let c = component(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a valid dirfd and NUL-terminated name; the returned fd is owned by us.
    match check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) }) {
        // SAFETY: fd was just opened and is not shared.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        // O_DIRECTORY reports a symbolic link as "not a directory": say which it is.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && stat(dir, name).is_ok_and(|s| s.symlink) => {
            Err(io::Error::from_raw_os_error(libc::ELOOP))
        }
        Err(e) => Err(e),
    }
}

/// Creates the directory `name` in `dir` (0700); an existing one is fine.
pub fn mkdir(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let c = component(name)?;
    // SAFETY: a valid dirfd and NUL-terminated name.
    match check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) }) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens the directory `name` in `dir`, creating it first if it is missing.
pub fn ensure_dir(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    match open_dir(dir, name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            mkdir(dir, name)?;
            open_dir(dir, name)
        }
        other => other,
    }
}

/// openat(2) with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` added: never a symbolic link, and never
/// blocks on a FIFO or device someone put there. Callers check that they got a regular file.
pub fn open(dir: BorrowedFd<'_>, name: &str, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    let c = component(name)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a valid dirfd and NUL-terminated name; the returned fd is owned by us.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags, libc::c_uint::from(mode)) })?;
    // SAFETY: fd was just opened and is not shared.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Opens `name` read-only and refuses anything but a regular file (InvalidData).
pub fn open_regular(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    let file = open(dir, name, libc::O_RDONLY, 0)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    Ok(file)
}

/// Creates `name` exclusively (0600) for writing.
pub fn create_new(dir: BorrowedFd<'_>, name: &str) -> io::Result<File> {
    open(dir, name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
}

/// unlinkat(2) of a file (not a directory).
pub fn unlink(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let c = component(name)?;
    // SAFETY: a valid dirfd and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
}

/// Removes an empty directory.
pub fn rmdir(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let c = component(name)?;
    // SAFETY: a valid dirfd and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
}

/// linkat(2) without following a symbolic link at `from`.
pub fn link(from_dir: BorrowedFd<'_>, from: &str, to_dir: BorrowedFd<'_>, to: &str) -> io::Result<()> {
    let (f, t) = (component(from)?, component(to)?);
    // SAFETY: valid dirfds and NUL-terminated names.
    check(unsafe { libc::linkat(from_dir.as_raw_fd(), f.as_ptr(), to_dir.as_raw_fd(), t.as_ptr(), 0) }).map(drop)
}

fn renameat2(from_dir: BorrowedFd<'_>, from: &str, to_dir: BorrowedFd<'_>, to: &str, flags: u32) -> io::Result<()> {
    let (f, t) = (component(from)?, component(to)?);
    // SAFETY: valid dirfds and NUL-terminated names; renameat2 reads them and nothing else.
    let rc = unsafe {
        libc::syscall(libc::SYS_renameat2, from_dir.as_raw_fd(), f.as_ptr(), to_dir.as_raw_fd(), t.as_ptr(), flags)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// rename(2) that replaces `to` (a symbolic link at `to` is replaced, not followed).
pub fn rename(from_dir: BorrowedFd<'_>, from: &str, to_dir: BorrowedFd<'_>, to: &str) -> io::Result<()> {
    renameat2(from_dir, from, to_dir, to, 0)
}

/// rename(2) that fails with EEXIST instead of replacing `to`.
pub fn rename_noreplace(from_dir: BorrowedFd<'_>, from: &str, to_dir: BorrowedFd<'_>, to: &str) -> io::Result<()> {
    match renameat2(from_dir, from, to_dir, to, libc::RENAME_NOREPLACE) {
        // File systems without RENAME_NOREPLACE: link(2) is just as exclusive.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
            link(from_dir, from, to_dir, to)?;
            unlink(from_dir, from)
        }
        other => other,
    }
}

/// What is at `name`, without following a symbolic link: (is a regular file, device, inode,
/// link count, mtime).
pub struct Stat {
    pub regular: bool,
    pub symlink: bool,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime: std::time::SystemTime,
}

pub fn stat(dir: BorrowedFd<'_>, name: &str) -> io::Result<Stat> {
    let c = component(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid dirfd, NUL-terminated name and a buffer of the right type.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: fstatat succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            u64::try_from(st.st_mtime).unwrap_or(0),
            u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        );
    #[allow(clippy::useless_conversion)] // the field types differ between libcs
    Ok(Stat {
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        symlink: st.st_mode & libc::S_IFMT == libc::S_IFLNK,
        dev: u64::from(st.st_dev),
        ino: u64::from(st.st_ino),
        nlink: u64::from(st.st_nlink),
        mtime,
    })
}

/// Up to `limit` names in `dir`, without `.` and `..`, in directory order. Reads the fd's
/// entries from the start (getdents64 directly: opendir would cost a second fd and more calls).
pub fn list(dir: BorrowedFd<'_>, limit: usize) -> io::Result<Vec<String>> {
    // SAFETY: a valid fd; rewinding a directory fd restarts its listing.
    check(unsafe { libc::lseek(dir.as_raw_fd(), 0, libc::SEEK_SET) } as libc::c_int)?;
    let mut buf = vec![0u8; 32 * 1024];
    let mut names = Vec::new();
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    const NAME_AT: usize = 19;
    loop {
        // SAFETY: a valid fd and a buffer of buf.len() writable bytes.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Ok(names);
        }
        let mut at = 0;
        while at + NAME_AT <= n {
            let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
            if reclen == 0 || at + reclen > n {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "getdents64 returned a bad record"));
            }
            let raw = &buf[at + NAME_AT..at + reclen];
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            if name != b"." && name != b".." {
                names.push(String::from_utf8_lossy(name).into_owned());
                if names.len() >= limit {
                    return Ok(names);
                }
            }
            at += reclen;
        }
    }
}

/// Whether this process may write in `dir` (EROFS on a read-only mount, EPERM when immutable,
/// EACCES for want of permission).
pub fn writable(dir: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid dirfd and a static NUL-terminated name.
    check(unsafe { libc::faccessat(dir.as_raw_fd(), c".".as_ptr(), libc::W_OK | libc::X_OK, libc::AT_EACCESS) })
        .map(drop)
}

/// The file system's (read-only flag, blocks free to us, inodes, inodes free to us).
pub fn statvfs(dir: BorrowedFd<'_>) -> io::Result<(bool, u64, u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid fd and a buffer of the right type.
    check(unsafe { libc::fstatvfs(dir.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between libcs
    Ok((st.f_flag & libc::ST_RDONLY != 0, u64::from(st.f_bavail), u64::from(st.f_files), u64::from(st.f_favail)))
}

/// Whether `bytes` bytes can be written to a new file in `dir` now: an unnamed file
/// (`O_TMPFILE`), written and closed, so that nothing is left behind whatever happens.
/// `Ok(None)` when the file system cannot make unnamed files.
pub fn probe_write(dir: BorrowedFd<'_>, bytes: usize) -> io::Result<Option<()>> {
    let flags = libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC;
    // SAFETY: a valid dirfd and a static NUL-terminated name; the returned fd is owned by us.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: fd was just opened and is not shared.
    let file = unsafe { File::from_raw_fd(fd) };
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![b' '; bytes], 0).map(Some)
}
