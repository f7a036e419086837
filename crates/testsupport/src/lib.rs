//! Test support for podcidr's tests and benches, compiled once for all of them.
//!
//! - [`kubeapi`]: the STATEFUL stand-in kube-apiserver the operator (and the agent) are driven
//!   against end to end, faithful to the responses recorded from real API servers
//!   (`fixtures/kube/<version>/operator/`).
//! - [`apiserver`]: a stand-in that answers the plugin's modes with recorded responses.
//! - `tls`: the certificates both make at test time.

pub mod apiserver;
pub mod kubeapi;
mod tls;
