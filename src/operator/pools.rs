//! PodCIDRPools (issue 12).

use tokio::sync::mpsc;

use super::controller::{Input, Shared};

pub fn start(_sh: Shared, _tx: mpsc::UnboundedSender<Input>) {}
