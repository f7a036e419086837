//! Dispatch: a runtime always sets CNI_COMMAND; without it the binary is the operator's CLI.
//!
//! `main` is the C entry point rather than Rust's: std's start-up (a guard page and signal
//! stack for stack-overflow messages, SIGPIPE ignored, a poll of fds 0–2) costs a dozen system
//! calls, 12–16 % of a whole request (docs/benchmarks.md). What a request needs of it is
//! done here: fds 0–2 are made to exist, the CNI path ignores SIGPIPE as before, and stdout is
//! flushed at the end.

#![no_main]

use std::ffi::{CStr, OsString, c_char, c_int};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;

/// A request allocates little and exits; see src/arena.rs.
#[global_allocator]
static ALLOCATOR: podcidr::arena::Arena<{ 2 << 20 }> = podcidr::arena::Arena::new();

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    standard_fds_open();
    let code = if std::env::var_os("CNI_COMMAND").is_some() {
        // A runtime that stops reading gets an error on write, not a killed plugin.
        // SAFETY: setting a signal's disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        podcidr::cni::run()
    } else {
        // SAFETY: the C runtime passes argc valid NUL-terminated strings in argv.
        let args = (0..usize::try_from(argc).unwrap_or(0))
            .map(|i| OsString::from_vec(unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes().to_vec()));
        podcidr::cli::run(args)
    };
    // std's own start-up would flush stdout on return; without it, this does.
    let _ = std::io::stdout().flush();
    if code == ExitCode::SUCCESS { 0 } else { 1 }
}

/// Opens /dev/null on any of fds 0–2 that is closed, as std's start-up does, so that no file
/// the store opens can become stdout and receive the result.
fn standard_fds_open() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll reads and writes only the three entries it is given.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for pfd in fds {
        if pfd.revents & libc::POLLNVAL != 0 {
            // SAFETY: a constant NUL-terminated path; the fd it returns is kept for good.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}
