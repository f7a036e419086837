//! Where a node's pod CIDRs come from. The `mode` key of the ipam stanza picks one source; each
//! yields range sets that feed the same allocator and store.
//!
//! `static` reads the config and nothing else: it must never touch the kube client, the async
//! runtime or the cache, so that its ADD stays as cheap as it was before the other modes came.

pub mod api;
pub mod crd;
pub mod kubelet;
pub mod kubernetes;
pub mod source;
pub mod r#static;

use crate::cni::config::Request;
use crate::cni::error::{CniError, CniResult};
use crate::ipam::pool::Pool;

pub const DEFAULT_MODE: &str = "static";
pub const MODES: [&str; 4] = ["static", "kubernetes", "kubelet", "crd"];

pub fn mode_name(req: &Request) -> &str {
    req.ipam.mode.as_deref().unwrap_or(DEFAULT_MODE)
}

/// The pool a request allocates from: the source's range sets, minus `exclude`.
pub fn pool(req: &Request) -> CniResult<Pool> {
    let sets = match mode_name(req) {
        "static" => r#static::range_sets(&req.ipam)?,
        mode @ ("kubernetes" | "kubelet" | "crd") => source::range_sets(req, mode)?,
        other => {
            return Err(CniError::config(
                "ipam.mode",
                format!("unknown mode {other:?}; this build knows {}", MODES.join(", ")),
            ));
        }
    };
    Pool::new(sets, req.ipam.exclude.excluded()?)
}
