//! Where a node's pod CIDRs come from. The `mode` key of the ipam stanza picks one source; each
//! yields range sets that feed the same allocator and store.

pub mod r#static;

use crate::cni::config::Request;
use crate::cni::error::{CniError, CniResult};
use crate::ipam::pool::{Pool, parse_exclude};

pub const DEFAULT_MODE: &str = "static";
pub const MODES: [&str; 1] = ["static"];

pub fn mode_name(req: &Request) -> &str {
    req.ipam.mode.as_deref().unwrap_or(DEFAULT_MODE)
}

/// The pool a request allocates from: the source's range sets, minus `exclude`.
pub fn pool(req: &Request) -> CniResult<Pool> {
    let sets = match mode_name(req) {
        "static" => r#static::range_sets(&req.ipam)?,
        other => {
            return Err(CniError::config(
                "ipam.mode",
                format!("unknown mode {other:?}; this build knows {}", MODES.join(", ")),
            ));
        }
    };
    Pool::new(sets, parse_exclude(&req.ipam.exclude)?)
}
