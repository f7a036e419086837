//! podcidr-agent: the node's long-running controller. On every node (a DaemonSet) it installs
//! and guards the plugin binary and its conflist, writes the plugin's kubeconfig with a short
//! lived token bound to its own pod and renews it, removes the node's startup taint once all of
//! that and the node's pod CIDR are in place, and serves the node's address state as metrics.
//!
//! - [`controller`]: what to do, decided from what was observed and a clock given to it;
//! - [`run`]: the executor (files, API calls, the loop);
//! - [`files`]: atomic install and the check that a file is still what was installed;
//! - [`kubeconfig`], [`metrics`], [`http`], [`flags`];

pub mod controller;
pub mod files;
pub mod flags;
pub mod http;
pub mod kubeconfig;
pub mod metrics;
pub mod run;
