//! Logging for one request: to `logFile` if the ipam stanza names one, else to stderr.
//! stdout is reserved for the CNI result.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::WARN;

pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse::<LevelFilter>()
        .map_err(|_| format!("{s:?} is not a log level; use error, warn, info, debug, trace or off"))
}

/// Installs the subscriber. A log file that cannot be opened falls back to stderr: logging
/// must never be the reason a pod gets no address.
pub fn init(file: Option<&Path>, level: Option<&str>) {
    let level = level.and_then(|l| parse_level(l).ok()).unwrap_or(DEFAULT_LEVEL);
    if level == LevelFilter::OFF {
        return;
    }
    let lazy = Lazy { level, file: file.map(PathBuf::from), inner: OnceLock::new() };
    let _ = tracing::subscriber::set_global_default(lazy);
}

type Inner = Box<dyn Subscriber + Send + Sync>;

/// Opens `logFile` for appending without ever blocking: the first line is often logged while
/// the store's lock is held, and a FIFO with no reader would hang the open (or the writes) and
/// every request of the network with it. A symbolic link as the last component is refused too
/// (`O_NOFOLLOW`); only a regular file is used.
fn open_log_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("it is a symbolic link"),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    Ok(file)
}

/// Builds the fmt subscriber on the first event that passes the level. Most requests log
/// nothing, and building it (its span registry, the log file) was podcidr's biggest own cost
/// at start-up (docs/benchmarks.md).
struct Lazy {
    level: LevelFilter,
    file: Option<PathBuf>,
    inner: OnceLock<Inner>,
}

impl Lazy {
    fn get(&self) -> &Inner {
        let mut unopened = None;
        let inner = self.inner.get_or_init(|| {
            let builder = tracing_subscriber::fmt().with_max_level(self.level).with_ansi(false).with_target(false);
            match self.file.as_ref().map(|p| (p, open_log_file(p))) {
                Some((_, Ok(f))) => Box::new(builder.with_writer(Mutex::new(f)).finish()),
                Some((p, Err(e))) => {
                    unopened = Some(format!("cannot open logFile {}: {e}; logging to stderr", p.display()));
                    Box::new(builder.with_writer(std::io::stderr).finish())
                }
                None => Box::new(builder.with_writer(std::io::stderr).finish()),
            }
        });
        if let Some(msg) = unopened {
            // Logged once the subscriber exists, so this event does not re-enter its set-up.
            tracing::warn!("{msg}");
        }
        inner
    }
}

impl Subscriber for Lazy {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.level >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.get().new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.get().record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.get().record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        self.get().event(event)
    }

    fn enter(&self, span: &Id) {
        self.get().enter(span)
    }

    fn exit(&self, span: &Id) {
        self.get().exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.get().clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.get().try_close(id)
    }
}
