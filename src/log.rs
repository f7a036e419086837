//! Logging for one request: to `logFile` if the ipam stanza names one, else to stderr.
//! stdout is reserved for the CNI result.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;
use tracing::level_filters::LevelFilter;

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
    let builder = tracing_subscriber::fmt().with_max_level(level).with_ansi(false).with_target(false);
    let opened = file.map(|p| (p, OpenOptions::new().create(true).append(true).open(p)));
    match opened {
        Some((_, Ok(f))) => {
            let _ = builder.with_writer(Mutex::new(f)).try_init();
        }
        Some((p, Err(e))) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            tracing::warn!("cannot open logFile {}: {e}; logging to stderr", p.display());
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}
