//! Kubernetes Events (events.k8s.io/v1, through kube-runtime's `Recorder`): Warnings on Nodes
//! (`CIDRNotAvailable`, `CIDRAssignmentFailed`, `CIDRConflict`) and on PodCIDRPools
//! (`PoolExhausted`, `PoolInvalid`). kube-controller-manager records `CIDRNotAvailable` as
//! Normal (recorded in tests/fixtures/kube/*/operator/kcm-events-*.json), which hides it from
//! `kubectl get events --field-selector type=Warning`; these are Warnings.
//!
//! Events are sent from one task so the controller never waits on them, with a client of their
//! own so they never take the rate budget of a CIDR write. While a Warning waits, a repeat
//! replaces it (one per object and reason at most: the queue is bounded by the objects), and a
//! node's `CIDRNotAvailable` still waiting when the node is served is dropped. A repeat sent
//! within a few minutes becomes a series (count) on the first Event.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

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

/// What a Warning is about: a later one with the same key replaces it while it waits.
type Key = (Option<String>, Option<String>, &'static str);

fn key(w: &Warning) -> Key {
    (w.regarding.kind.clone(), w.regarding.name.clone(), w.reason)
}

/// Warnings waiting to be sent: at most one per object and reason (the latest; a repeat
/// while one waits is coalesced into it), so the queue is bounded by the objects, and a
/// Warning whose cause is gone is dropped before it is sent (issue 19 point 8).
#[derive(Debug, Default)]
struct Queue {
    order: VecDeque<Key>,
    pending: HashMap<Key, Warning>,
}

impl Queue {
    fn push(&mut self, w: Warning) {
        let k = key(&w);
        if self.pending.insert(k.clone(), w).is_none() {
            self.order.push_back(k);
        }
    }

    fn pop(&mut self) -> Option<Warning> {
        while let Some(k) = self.order.pop_front() {
            if let Some(w) = self.pending.remove(&k) {
                return Some(w);
            }
        }
        None
    }

    fn drop_node(&mut self, node: &str, reason: &'static str) {
        self.pending.remove(&(Some("Node".into()), Some(node.into()), reason));
    }
}

/// Sends Warnings to the recording task; cheap to clone. The task records them with a client
/// of its own (its own rate limit), so Events never take the budget of a CIDR write.
#[derive(Clone, Debug, Default)]
pub struct Events {
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
}

impl Events {
    /// Start the recording task; `client` should be one Events alone use.
    pub fn start(client: Client, identity: &str, metrics: Metrics) -> Self {
        let events = Self::default();
        let reporter = Reporter { controller: "podcidr-operator".into(), instance: Some(identity.to_string()) };
        let recorder = Recorder::new(client, reporter);
        let (queue, wake) = (events.queue.clone(), events.wake.clone());
        tokio::spawn(async move {
            loop {
                let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                let Some(w) = next else {
                    wake.notified().await;
                    continue;
                };
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
        events
    }

    /// A sender whose Warnings go nowhere (tests).
    pub fn discard() -> Self {
        Self::default()
    }

    pub fn warn(&self, regarding: ObjectReference, reason: &'static str, action: &'static str, note: String) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(Warning { regarding, reason, action, note });
        }
        self.wake.notify_one();
    }

    /// The node's `reason` no longer holds (it was served, or is gone): a Warning of it still
    /// waiting is not sent.
    pub fn resolved(&self, node: &str, reason: &'static str) {
        if let Ok(mut q) = self.queue.lock() {
            q.drop_node(node, reason);
        }
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
    use super::*;

    fn w(node: &str, reason: &'static str, note: &str) -> Warning {
        Warning { regarding: node_ref(node, None), reason, action: "Allocate", note: note.into() }
    }

    /// Issue 19 point 8: repeats coalesce into the latest, in first-come order, and a node
    /// served meanwhile has its CIDRNotAvailable dropped.
    #[test]
    fn warnings_coalesce_and_are_dropped_once_resolved() {
        let mut q = Queue::default();
        for i in 0..999 {
            for step in 0..3 {
                q.push(w(&format!("n{i}"), CIDR_NOT_AVAILABLE, &format!("step {step}")));
            }
        }
        q.push(w("n0", CIDR_CONFLICT, "conflict"));
        assert_eq!(q.pending.len(), 1000, "one per node and reason");
        q.drop_node("n1", CIDR_NOT_AVAILABLE);
        let first = q.pop().unwrap();
        assert_eq!(
            (first.regarding.name.as_deref(), first.reason, first.note.as_str()),
            (Some("n0"), CIDR_NOT_AVAILABLE, "step 2")
        );
        let second = q.pop().unwrap();
        assert_eq!(second.regarding.name.as_deref(), Some("n2"), "n1 was served: dropped");
        let mut rest = 0;
        while q.pop().is_some() {
            rest += 1;
        }
        assert_eq!(rest, 997, "n3..n998 and n0's conflict");
        assert!(q.order.is_empty());
    }

    #[test]
    fn truncate_on_a_char_boundary() {
        assert_eq!(super::truncate("abc", 5), "abc");
        assert_eq!(super::truncate("aé", 2), "a…");
    }
}
