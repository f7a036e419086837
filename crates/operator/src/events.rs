//! Kubernetes Events (events.k8s.io/v1, through kube-runtime's `Recorder`): Warnings on Nodes
//! (`CIDRNotAvailable`, `CIDRAssignmentFailed`, `CIDRConflict`) and on PodCIDRPools
//! (`PoolExhausted`, `PoolInvalid`). kube-controller-manager records `CIDRNotAvailable` as
//! Normal (recorded in tests/fixtures/kube/*/operator/kcm-events-*.json), which hides it from
//! `kubectl get events --field-selector type=Warning`; these are Warnings.
//!
//! Events are sent from one task so the controller never waits on them; a repeat of the same
//! event within a few minutes becomes a series (count) on the first one.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use super::metrics::Metrics;

pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
pub const CIDR_ASSIGNMENT_FAILED: &str = "CIDRAssignmentFailed";
pub const CIDR_CONFLICT: &str = "CIDRConflict";
pub const POOL_EXHAUSTED: &str = "PoolExhausted";
pub const POOL_INVALID: &str = "PoolInvalid";

/// One Warning to record.
#[derive(Debug, Clone)]
pub struct Warning {
    pub regarding: ObjectReference,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// Sends Warnings to the recording task; cheap to clone.
#[derive(Clone, Debug)]
pub struct Events(mpsc::UnboundedSender<Warning>);

impl Events {
    /// Start the recording task.
    pub fn start(client: Client, identity: &str, metrics: Metrics) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Warning>();
        let reporter = Reporter { controller: "podcidr-operator".into(), instance: Some(identity.to_string()) };
        let recorder = Recorder::new(client, reporter);
        tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                let ev = Event {
                    type_: EventType::Warning,
                    reason: w.reason.into(),
                    // The API refuses notes over 1 kB.
                    note: Some(truncate(&w.note, 1000)),
                    action: w.action.into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &w.regarding).await {
                    metrics.api_error(&super::targets::error_code(&e));
                    tracing::warn!(reason = w.reason, "cannot record the event: {e}");
                }
            }
        });
        Self(tx)
    }

    /// A sender whose Warnings go nowhere (tests).
    pub fn discard() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Self(tx)
    }

    pub fn warn(&self, regarding: ObjectReference, reason: &'static str, action: &'static str, note: String) {
        let _ = self.0.send(Warning { regarding, reason, action, note });
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A reference to a Node (cluster-scoped: its events go to `default`, as kcm's).
pub fn node_ref(name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: uid.map(Into::into),
        ..Default::default()
    }
}

/// A reference to a PodCIDRPool.
pub fn pool_ref(name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("podcidr.io/v1alpha1".into()),
        kind: Some("PodCIDRPool".into()),
        name: Some(name.into()),
        uid: uid.map(Into::into),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncate_on_a_char_boundary() {
        assert_eq!(super::truncate("abc", 5), "abc");
        assert_eq!(super::truncate("aé", 2), "a…");
    }
}
