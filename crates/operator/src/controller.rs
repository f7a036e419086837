//! The controller, as a state machine and its executor.
//!
//! [`Machine`] decides and never waits: restore snapshots, watch events, write outcomes, pool
//! changes and ticks go in, each with the time it is given; [`Effect`]s (writes, Events,
//! readiness) come out. [`Controller`] is the executor: it feeds the machine what the watches
//! and the writes report and carries out its effects with the real client. The decisions are
//! therefore tested in milliseconds without HTTP (tests/operator_machine.rs).
//!
//! 1. **Restore first.** Nodes (and, with the `ciliumnode` target, CiliumNodes) are watched;
//!    the watcher's initial list occupies every CIDR they hold. Nothing is handed out before
//!    every initial list is complete.
//! 2. After a relist (410 Gone, a broken watch), the full set is reconciled: what vanished is
//!    released, what is new is occupied.
//! 3. A Node without CIDRs gets one per family of the best pool; CIDRs that one target already
//!    holds are adopted and written to the other.
//! 4. A node's CIDRs are released only when its Node is gone (and its CiliumNode, with that
//!    target); a deletion timestamp is not enough.
//!
//! This runs only in the process that holds the lease (or the sole writer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::{Semaphore, mpsc};

use super::allocator::{Allocator, Occupancy, PoolProblem, PoolSpec};
use super::events::{self, Events, Warning};
use super::flags::Settings;
use super::http::Readiness;
use super::metrics::Metrics;
use super::record::{self, Holder, PodCIDRBlock};
use super::targets::{self, CiliumWrite, Failure, Outcome, Plan};

/// First retry delay; doubled per attempt up to `--max-retry-backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// A new node is judged this long after it is first seen: pool edits come on another watch,
/// and a pool deleted (or added) just before a node joins should count for it.
pub const SETTLE: Duration = Duration::from_millis(200);
/// Writes in flight at once (the rate limit paces them anyway).
const MAX_IN_FLIGHT: usize = 64;
/// A block's next record write goes once its previous one is answered and fewer Node writes
/// than this are in flight: about a second of them at kcm's 20 QPS, so the record keeps ahead
/// of the Node writes while a burst's entries gather in one write per block, not one per node
/// (each write takes a token of the one client rate limit).
pub const AHEAD: usize = 20;
/// A block just written waits this long before its next write: one token's time at 20 QPS, so
/// that while the rate limit still has tokens to spare a burst's first joins gather in a few
/// writes rather than one each.
pub const GAP: Duration = Duration::from_millis(50);
/// The pool gauges are computed from every holder: at most this often, so that a burst's many
/// small inputs do not each pay for it (a scrape every few seconds never sees the difference).
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The delay before attempt `attempts + 1`: 250 ms, 500 ms, 1 s, ... capped.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    BASE_BACKOFF.saturating_mul(1 << exp).min(cap)
}

/// What the controller needs from the rest of the process.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub settings: Arc<Settings>,
    pub metrics: Metrics,
    pub ready: Readiness,
    pub events: Events,
}

/// Inputs of the controller task. (The watch events are moved through once each; boxing them
/// would only add an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Node(Result<Event<Node>, watcher::Error>),
    Cilium(Result<Event<DynamicObject>, watcher::Error>),
    Written(Box<Plan>, Outcome),
    Block(Result<Event<PodCIDRBlock>, watcher::Error>),
    Committed(Box<Commit>, CommitResult),
    /// The pool set changed (flags and PodCIDRPools); the answer carries the problems.
    Pools(PoolSet, tokio::sync::oneshot::Sender<Vec<PoolProblem>>),
    /// The PodCIDRPools are listed (or there is no CRD): part of the restore.
    PoolsListed,
    /// The pool reconciler wants the current counts.
    Stats(tokio::sync::oneshot::Sender<Snapshot>),
    /// The CIDRs nodes hold, once every Node (and CiliumNode) is listed, else None: the pool
    /// task orders overlapping pools by them (issue 19 point 2).
    Held(tokio::sync::oneshot::Sender<Option<Vec<IpNet>>>),
}

/// The pools as the API has them.
#[derive(Debug, Clone, Default)]
pub struct PoolSet {
    /// The pools that serve.
    pub active: Vec<PoolSpec>,
    /// Deleted pools still held by their finalizer. They serve nobody; the restore needs them
    /// to know that the slices nodes hold in them are draining, not foreign.
    pub deleted: Vec<PoolSpec>,
}

/// Counts for the pool statuses.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: Vec<super::allocator::PoolStats>,
    /// Nodes waiting for room, with the pools that matched them.
    pub waiting: Vec<(String, Vec<String>)>,
}

/// What the machine asks the executor to do. (Each is moved to the executor once; boxing the
/// record write would only add an allocation.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Effect {
    /// Write a node's CIDRs to its targets; the outcome comes back with [`Machine::written`].
    Write(Plan),
    /// Record a Warning Event.
    Warn(Warning),
    /// Drop a Warning still waiting to be sent about a node: what it reported is over (the
    /// node was served, or is gone).
    Resolved { node: String, reason: &'static str },
    /// Every initial list is in: the process is ready.
    Ready,
    /// A node got its CIDRs, this long after it was first seen.
    Assigned { node: String, seconds: f64 },
    /// Write a block of the allocation record, with its resourceVersion as precondition (none:
    /// create it); the result comes back with [`Machine::committed`].
    Commit(Commit),
}

/// A write of one block of the allocation record.
#[derive(Debug, Clone)]
pub struct Commit {
    pub block: IpNet,
    pub object: PodCIDRBlock,
}

/// How a record write ended.
#[derive(Debug, Clone)]
pub enum CommitResult {
    /// Written: the object as stored.
    Written(PodCIDRBlock),
    /// 409 (changed, or created meanwhile) or 404: the block as it is now.
    Conflict(Option<PodCIDRBlock>),
    /// Anything else: try again later.
    Retry { code: String, message: String },
}

/// One block of the record: as last read or written, and the changes this process wants.
#[derive(Debug, Clone, Default)]
struct BlockState {
    resource_version: Option<String>,
    entries: BTreeMap<IpNet, Holder>,
    add: BTreeMap<IpNet, Holder>,
    remove: BTreeSet<IpNet>,
    /// The changes of the write in flight.
    in_flight: Option<(BTreeMap<IpNet, Holder>, BTreeSet<IpNet>)>,
    attempts: u32,
    next: Option<Instant>,
    /// A plan or a release waits on the staged changes; else (adoptions alone) they yield to
    /// the nodes being assigned, so as not to take their share of the client rate limit.
    urgent: bool,
}

/// Whether the record gives a node the CIDRs of a plan.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    Recorded,
    /// Entries are on their way to the record.
    Staged,
    /// An entry of a gone node of the same name is being removed first.
    Wait,
    /// The record gives a CIDR to another node: plan again.
    Lost,
}

fn same_holder(h: &Holder, name: &str, uid: &str) -> bool {
    h.node == name && (h.uid == uid || h.uid.is_empty() || uid.is_empty())
}

/// The targets the machine writes and how long it waits at most between attempts.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_target: bool,
    pub ciliumnode_target: bool,
    pub max_backoff: Duration,
    /// How long a block written waits before its next write ([`GAP`]).
    pub batch: Duration,
    /// The flag pool, served from the start.
    pub default_pool: Option<PoolSpec>,
}

impl From<&Settings> for Config {
    fn from(s: &Settings) -> Self {
        Self {
            node_target: s.node_target,
            ciliumnode_target: s.ciliumnode_target,
            max_backoff: s.max_backoff,
            batch: GAP,
            default_pool: s.default_pool.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct NodeObs {
    uid: Option<String>,
    labels: BTreeMap<String, String>,
    cidrs: Vec<IpNet>,
    deleting: bool,
    /// The annotation `podcidr.io/pool` (the pool a previous run served it from).
    pool: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct CiliumObs {
    cidrs: Vec<IpNet>,
    resource_version: String,
}

/// A node that needs a write.
#[derive(Debug, Clone)]
struct Track {
    first_seen: Instant,
    attempts: u32,
    next: Instant,
    in_flight: bool,
    /// No pool could serve it: woken at once when room appears.
    waiting: Option<Vec<String>>,
    /// A plan waiting for its CIDRs to be committed to the record.
    awaiting: Option<Plan>,
}

/// Progress of a watcher's (re)list.
#[derive(Debug, Default)]
struct Listing {
    /// Names seen since the last `Init`, while a list runs.
    seen: Option<BTreeSet<String>>,
    done: bool,
}

/// The controller's decisions. See the module documentation.
pub struct Machine {
    cfg: Config,
    alloc: Allocator,
    nodes: BTreeMap<String, NodeObs>,
    cilium: BTreeMap<String, CiliumObs>,
    track: BTreeMap<String, Track>,
    node_list: Listing,
    cilium_list: Listing,
    restored: bool,
    pools_listed: bool,
    deleted_pools: Vec<PoolSpec>,
    /// The allocation record, by block.
    blocks: BTreeMap<IpNet, BlockState>,
    block_list: Listing,
    /// Committed entries by node name.
    recorded: BTreeMap<String, BTreeSet<IpNet>>,
    /// (node, CIDR) already reported as foreign or conflicting.
    reported: BTreeSet<(String, IpNet)>,
    /// The counts changed since [`Machine::take_dirty`].
    dirty: bool,
    /// The restore's adoptions wait until then (see [`Machine::flush`]).
    adopt_from: Option<Instant>,
    effects: Vec<Effect>,
}

impl Machine {
    pub fn new(cfg: Config) -> Self {
        let mut alloc = Allocator::new();
        if let Some(p) = cfg.default_pool.clone() {
            for pr in alloc.set_pools(vec![p]) {
                tracing::error!("{pr}");
            }
        }
        // CiliumNodes are read whatever the target: a CIDR one holds is taken.
        let cilium_list = Listing::default();
        Self {
            cfg,
            alloc,
            nodes: BTreeMap::new(),
            cilium: BTreeMap::new(),
            track: BTreeMap::new(),
            node_list: Listing::default(),
            cilium_list,
            restored: false,
            pools_listed: false,
            deleted_pools: Vec::new(),
            blocks: BTreeMap::new(),
            block_list: Listing::default(),
            recorded: BTreeMap::new(),
            reported: BTreeSet::new(),
            dirty: true,
            adopt_from: None,
            effects: Vec::new(),
        }
    }

    /// The effects decided since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Whether the counts changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::replace(&mut self.dirty, false)
    }

    /// Who holds what.
    pub fn allocator(&self) -> &Allocator {
        &self.alloc
    }

    /// Every initial list is in.
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// The counts and the nodes waiting for room.
    /// The CIDRs nodes hold, once every Node and CiliumNode is listed.
    pub fn held(&self) -> Option<Vec<IpNet>> {
        let listed = self.node_list.done && self.cilium_list.done;
        listed.then(|| self.alloc.nodes().flat_map(|(_, _, c)| c.to_vec()).collect())
    }

    /// Record entries out of step with the objects, being removed: a gone node's, or a CIDR
    /// its node no longer holds (see `listed` and `reconcile_record`).
    pub fn record_disagreements(&self) -> Vec<(IpNet, Holder)> {
        let mut out = Vec::new();
        for st in self.blocks.values() {
            out.extend(st.entries.iter().filter(|(c, _)| st.remove.contains(c)).map(|(c, h)| (*c, h.clone())));
        }
        out
    }

    pub fn snapshot(&self) -> Snapshot {
        let waiting = self.track.iter().filter_map(|(n, t)| Some((n.clone(), t.waiting.clone()?))).collect();
        Snapshot { stats: self.alloc.pool_stats(), waiting }
    }

    fn warn(&mut self, name: &str, uid: Option<&str>, reason: &'static str, action: &'static str, note: String) {
        self.effects.push(Effect::Warn(Warning { regarding: events::node_ref(name, uid), reason, action, note }));
    }

    // -----------------------------------------------------------------------------------------
    // Observations

    fn occupy(&mut self, name: &str, cidrs: &[IpNet], uid: Option<&str>) {
        if cidrs.is_empty() {
            return;
        }
        for (cidr, occ) in self.alloc.occupy(name, cidrs) {
            match occ {
                Occupancy::Adopted { .. } => {}
                Occupancy::Foreign => {
                    // Before the restore is done the pools may not be known yet: judged then.
                    if self.restored && self.reported.insert((name.to_string(), cidr)) {
                        tracing::warn!(node = name, %cidr, "node holds a CIDR outside every pool: kept as foreign (occupied, never handed out)");
                    }
                }
                Occupancy::Conflict { holder } => {
                    if self.reported.insert((name.to_string(), cidr)) {
                        let note = format!(
                            "node {name} holds {cidr}, which overlaps a CIDR of node {holder}: both are kept; fix one of them by hand"
                        );
                        tracing::error!(node = name, %cidr, other = %holder, "{note}");
                        self.warn(name, uid, events::CIDR_CONFLICT, "Restore", note);
                    }
                }
            }
        }
        self.dirty = true;
    }

    fn observe_node(&mut self, node: Node, now: Instant) {
        let name = node.name_any();
        let (cidrs, bad) = targets::node_cidrs(&node);
        if !bad.is_empty() && !self.nodes.contains_key(&name) {
            tracing::warn!(node = %name, "ignoring unparsable podCIDRs {bad:?}");
        }
        let obs = NodeObs {
            uid: node.metadata.uid.clone(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            cidrs,
            deleting: node.metadata.deletion_timestamp.is_some(),
            pool: node.annotations().get(super::crd::POOL_ANNOTATION).cloned(),
        };
        if let Some(old) = self.nodes.get(&name)
            && old.uid.is_some()
            && old.uid != obs.uid
        {
            // Deleted and created again between two looks: the old one is gone.
            self.node_gone(&name, now);
        }
        self.occupy(&name, &obs.cidrs.clone(), obs.uid.as_deref());
        self.nodes.insert(name.clone(), obs);
        self.reconcile_record(&name);
        self.touch(&name, now);
    }

    fn observe_cilium(&mut self, cn: DynamicObject, now: Instant) {
        let name = cn.name_any();
        let (cidrs, bad) = targets::ciliumnode_cidrs(&cn);
        if !bad.is_empty() && !self.cilium.contains_key(&name) {
            tracing::warn!(ciliumnode = %name, "ignoring unparsable spec.ipam.podCIDRs {bad:?}");
        }
        let uid = self.nodes.get(&name).and_then(|n| n.uid.clone());
        self.occupy(&name, &cidrs, uid.as_deref());
        self.cilium
            .insert(name.clone(), CiliumObs { cidrs, resource_version: cn.resource_version().unwrap_or_default() });
        self.reconcile_record(&name);
        self.touch(&name, now);
    }

    fn needs_write(&self, name: &str) -> bool {
        let Some(node) = self.nodes.get(name) else { return false };
        if node.deleting {
            return false;
        }
        (self.cfg.node_target && node.cidrs.is_empty())
            || (self.cfg.ciliumnode_target && self.cilium.get(name).is_none_or(|c| c.cidrs.is_empty()))
    }

    /// Something about `name` changed: track it if it needs a write, else stop tracking.
    fn touch(&mut self, name: &str, now: Instant) {
        if self.needs_write(name) {
            self.track.entry(name.to_string()).or_insert(Track {
                first_seen: now,
                attempts: 0,
                next: now + SETTLE,
                in_flight: false,
                waiting: None,
                awaiting: None,
            });
        } else if self.track.get(name).is_some_and(|t| !t.in_flight) {
            self.track.remove(name);
        }
    }

    /// Release `name` if neither of its objects exists (and no write for it is in flight).
    fn maybe_release(&mut self, name: &str, now: Instant) {
        if self.nodes.contains_key(name) || self.cilium.contains_key(name) {
            return;
        }
        if self.track.get(name).is_some_and(|t| t.in_flight) {
            return; // judged again when the write reports
        }
        self.track.remove(name);
        // Its entries leave the record first; the CIDRs are free once that is written.
        let mut in_record = false;
        for st in self.blocks.values_mut() {
            st.add.retain(|_, h| h.node != name);
        }
        for c in self.recorded.get(name).cloned().unwrap_or_default() {
            if let Some(st) = self.blocks.get_mut(&record::block_of(&c)) {
                st.remove.insert(c);
                st.urgent = true;
                in_record = true;
            }
        }
        if in_record {
            return;
        }
        let freed = self.alloc.release(name);
        self.reported.retain(|(n, _)| n != name);
        if !freed.is_empty() {
            tracing::info!(node = name, cidrs = ?freed.iter().map(ToString::to_string).collect::<Vec<_>>(), "node gone: CIDRs released");
            self.dirty = true;
            self.wake_waiting(now);
        }
    }

    /// Room may have appeared: try every waiting node now.
    fn wake_waiting(&mut self, now: Instant) {
        for t in self.track.values_mut() {
            if t.waiting.is_some() {
                t.next = now;
            }
        }
    }

    fn node_gone(&mut self, name: &str, now: Instant) {
        self.effects.push(Effect::Resolved { node: name.to_string(), reason: events::CIDR_NOT_AVAILABLE });
        self.nodes.remove(name);
        self.maybe_release(name, now);
    }

    fn cilium_gone(&mut self, name: &str, now: Instant) {
        self.cilium.remove(name);
        self.maybe_release(name, now);
        self.touch(name, now);
    }

    fn listed(&mut self) {
        if self.restored
            || !self.block_list.done
            || !self.node_list.done
            || !self.cilium_list.done
            || !self.pools_listed
        {
            return;
        }
        self.restored = true;
        // The record was listed before the Nodes: an entry was written after its Node was
        // seen, so a Node missing from the later list (or there under another UID) is gone.
        let mut stale = Vec::new();
        for (c, h) in self.blocks.values().flat_map(|st| st.entries.iter()) {
            let live = match self.nodes.get(&h.node) {
                Some(n) => h.uid.is_empty() || n.uid.as_deref().is_none_or(|u| u == h.uid),
                None => self.cilium.contains_key(&h.node),
            };
            if !live {
                stale.push(*c);
            }
        }
        for c in stale {
            if let Some(st) = self.blocks.get_mut(&record::block_of(&c)) {
                st.remove.insert(c);
            }
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for n in names {
            self.reconcile_record(&n);
        }
        self.restore_draining();
        for (node, cidr) in self.alloc.foreign() {
            if self.reported.insert((node.clone(), cidr)) {
                tracing::warn!(node = %node, %cidr, "node holds a CIDR outside every pool: kept as foreign (occupied, never handed out)");
            }
        }
        let held: usize = self.alloc.nodes().map(|(_, _, c)| c.len()).sum();
        tracing::info!(
            nodes = self.nodes.len(),
            ciliumnodes = self.cilium.len(),
            occupied_cidrs = held,
            foreign = self.alloc.foreign().len(),
            "restore done: every existing CIDR is occupied; assigning"
        );
        self.effects.push(Effect::Ready);
    }

    /// After a restart, a CIDR removed from a pool while nodes held slices of it, and every CIDR
    /// of a pool deleted while in use, is outside every active pool: the deleted pool's spec and
    /// the nodes' `podcidr.io/pool` annotation say whose it was. Handing the pool those CIDRs
    /// for a moment and taking them away again makes them draining in that pool (counted, never
    /// handed out, forgotten with their last node, and holding a deleted pool's finalizer), as
    /// before the restart.
    fn restore_draining(&mut self) {
        let current: Vec<PoolSpec> = self.alloc.pools().into_iter().cloned().collect();
        let mut grown = current.clone();
        let mut any = false;
        for d in &self.deleted_pools {
            if !grown.iter().any(|p| p.name == d.name) {
                grown.push(d.clone());
                any = true;
            }
        }
        for (node, cidr) in self.alloc.foreign() {
            let recorded = self.blocks.get(&record::block_of(&cidr)).and_then(|st| st.entries.get(&cidr));
            let pool = self.nodes.get(&node).and_then(|n| n.pool.clone());
            let Some(pool) = pool.or_else(|| recorded.map(|h| h.pool.clone()).filter(|p| !p.is_empty())) else {
                continue;
            };
            let Some(spec) = grown.iter_mut().find(|p| p.name == pool) else { continue };
            let fam = match cidr {
                IpNet::V4(_) => spec.ipv4.as_mut(),
                IpNet::V6(_) => spec.ipv6.as_mut(),
            };
            if let Some(f) = fam.filter(|f| f.mask == cidr.prefix_len() && !f.cidrs.iter().any(|c| c.contains(&cidr))) {
                f.cidrs.push(cidr);
                any = true;
            }
        }
        if !any {
            return;
        }
        let problems = self.alloc.set_pools(grown);
        if !problems.is_empty() {
            tracing::debug!("draining CIDRs not restored: {problems:?}");
        }
        self.alloc.set_pools(current);
        self.dirty = true;
    }

    /// A Node watch event.
    pub fn node_event(&mut self, ev: Event<Node>, now: Instant) {
        match ev {
            Event::Init => self.node_list.seen = Some(BTreeSet::new()),
            Event::InitApply(n) => {
                if let Some(s) = self.node_list.seen.as_mut() {
                    s.insert(n.name_any());
                }
                self.observe_node(n, now);
            }
            Event::InitDone => {
                let seen = self.node_list.seen.take().unwrap_or_default();
                let gone: Vec<String> = self.nodes.keys().filter(|n| !seen.contains(*n)).cloned().collect();
                for n in gone {
                    self.node_gone(&n, now);
                }
                self.node_list.done = true;
                self.listed();
            }
            Event::Apply(n) => self.observe_node(n, now),
            Event::Delete(n) => self.node_gone(&n.name_any(), now),
        }
    }

    /// A CiliumNode watch event.
    pub fn cilium_event(&mut self, ev: Event<DynamicObject>, now: Instant) {
        match ev {
            Event::Init => self.cilium_list.seen = Some(BTreeSet::new()),
            Event::InitApply(c) => {
                if let Some(s) = self.cilium_list.seen.as_mut() {
                    s.insert(c.name_any());
                }
                self.observe_cilium(c, now);
            }
            Event::InitDone => {
                let seen = self.cilium_list.seen.take().unwrap_or_default();
                let gone: Vec<String> = self.cilium.keys().filter(|n| !seen.contains(*n)).cloned().collect();
                for n in gone {
                    self.cilium_gone(&n, now);
                }
                self.cilium_list.done = true;
                self.listed();
            }
            Event::Apply(c) => self.observe_cilium(c, now),
            Event::Delete(c) => self.cilium_gone(&c.name_any(), now),
        }
    }

    /// The CiliumNode CRD is not installed (404): there are none to read; a later list (the
    /// watcher retries) reads them as they come.
    pub fn cilium_absent(&mut self) {
        if self.cilium_list.seen.is_none() && !self.cilium_list.done {
            self.cilium_list.done = true;
            self.listed();
        }
    }

    /// The pool set changed; the problems of the pools refused.
    pub fn set_pools(&mut self, pools: PoolSet, now: Instant) -> Vec<PoolProblem> {
        self.deleted_pools = pools.deleted;
        let problems = self.alloc.set_pools(pools.active);
        self.dirty = true;
        self.wake_waiting(now);
        problems
    }

    /// The PodCIDRPools are listed (or there is no CRD).
    pub fn pools_listed(&mut self) {
        self.pools_listed = true;
        self.listed();
    }

    // -----------------------------------------------------------------------------------------
    // Decisions

    /// The CIDRs a node's objects hold (Node, then CiliumNode).
    fn observed_cidrs(&self, name: &str) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.nodes.get(name).map(|n| n.cidrs.clone()).unwrap_or_default();
        for c in self.cilium.get(name).map(|c| c.cidrs.as_slice()).unwrap_or_default() {
            if !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }

    fn uid_of(&self, name: &str) -> String {
        self.nodes.get(name).and_then(|n| n.uid.clone()).unwrap_or_default()
    }

    /// Bring the record in step with a live node's objects: a CIDR they hold that the record
    /// does not have is adopted; an entry of this name that is not theirs (a gone node's UID,
    /// or ours after someone else set other CIDRs) is removed. Nothing before the restore.
    fn reconcile_record(&mut self, name: &str) {
        if !self.restored {
            return;
        }
        let Some(node) = self.nodes.get(name) else { return };
        let uid = node.uid.clone().unwrap_or_default();
        let held = self.observed_cidrs(name);
        let pool = self.alloc.holds(name).map(|(p, _)| p.to_string()).unwrap_or_default();
        for c in &held {
            let st = self.blocks.entry(record::block_of(c)).or_default();
            let sent = st.in_flight.as_ref().is_some_and(|(a, _)| a.contains_key(c));
            if !st.entries.contains_key(c) && !st.add.contains_key(c) && !sent {
                st.add.insert(*c, Holder { node: name.to_string(), uid: uid.clone(), pool: pool.clone() });
            }
        }
        for c in self.recorded.get(name).cloned().unwrap_or_default() {
            let Some(st) = self.blocks.get_mut(&record::block_of(&c)) else { continue };
            let Some(h) = st.entries.get(&c) else { continue };
            let stale = !h.uid.is_empty() && !uid.is_empty() && h.uid != uid;
            if stale || (!held.is_empty() && !held.contains(&c)) {
                st.remove.insert(c);
            }
        }
    }

    /// What `name` holds, from its objects and the record, and nothing else: after it lost a
    /// race or entries of it left the record.
    fn resync(&mut self, name: &str, now: Instant) {
        self.resync_all(&BTreeSet::from([name.to_string()]), now);
    }

    /// [`Machine::resync`] for each of `names`, with one look at what is on its way to the
    /// record (a write answered touches every node in it; the restore stages the whole cluster).
    fn resync_all(&mut self, names: &BTreeSet<String>, now: Instant) {
        let mut staged: BTreeMap<String, Vec<(IpNet, Holder)>> = BTreeMap::new();
        for st in self.blocks.values() {
            let sent = st.in_flight.iter().flat_map(|(a, _)| a.iter());
            for (c, h) in st.add.iter().chain(sent).filter(|(_, h)| names.contains(&h.node)) {
                staged.entry(h.node.clone()).or_default().push((*c, h.clone()));
            }
        }
        for name in names {
            let uid = self.uid_of(name);
            let mut cidrs = self.observed_cidrs(name);
            let ours = |h: &Holder| same_holder(h, name, &uid);
            for c in self.recorded.get(name).into_iter().flatten() {
                if self.blocks.get(&record::block_of(c)).and_then(|st| st.entries.get(c)).is_some_and(ours) {
                    cidrs.push(*c);
                }
            }
            cidrs.extend(staged.get(name).into_iter().flatten().filter(|(_, h)| ours(h)).map(|(c, _)| *c));
            cidrs.sort();
            cidrs.dedup();
            let before: Vec<IpNet> = self.alloc.holds(name).map(|(_, c)| c.to_vec()).unwrap_or_default();
            let mut sorted = before.clone();
            sorted.sort();
            if sorted == cidrs {
                continue;
            }
            self.alloc.release(name);
            self.reported.retain(|(n, _)| n != name);
            let uid = self.nodes.get(name).and_then(|n| n.uid.clone());
            self.occupy(name, &cidrs, uid.as_deref());
            let freed: Vec<String> = before.iter().filter(|c| !cidrs.contains(c)).map(ToString::to_string).collect();
            if !freed.is_empty() {
                tracing::info!(node = %name, cidrs = ?freed, "CIDRs released (out of the record)");
            }
            self.dirty = true;
            self.wake_waiting(now);
        }
    }

    /// Does the record give `name` these CIDRs? Stages the entries it lacks.
    fn claim(&mut self, name: &str, uid: &str, pool: &str, cidrs: &[IpNet]) -> Claim {
        let mut verdict = Claim::Recorded;
        let mut stage = Vec::new();
        for c in cidrs {
            let st = self.blocks.entry(record::block_of(c)).or_default();
            let sent = st.in_flight.as_ref().and_then(|(a, _)| a.get(c));
            let mine = |h: &Holder| same_holder(h, name, uid);
            let v = match st.entries.get(c) {
                Some(h) if mine(h) && !st.remove.contains(c) => Claim::Recorded,
                Some(h) if h.node == name || st.remove.contains(c) => Claim::Wait,
                Some(_) => Claim::Lost,
                None if st.add.get(c).is_some_and(mine) || sent.is_some_and(mine) => Claim::Staged,
                None => {
                    stage.push(*c);
                    Claim::Staged
                }
            };
            verdict = match (verdict, v) {
                (Claim::Lost, _) | (_, Claim::Lost) => Claim::Lost,
                (Claim::Wait, _) | (_, Claim::Wait) => Claim::Wait,
                (Claim::Staged, _) | (_, Claim::Staged) => Claim::Staged,
                _ => Claim::Recorded,
            };
        }
        if verdict == Claim::Staged {
            for c in stage {
                let h = Holder { node: name.to_string(), uid: uid.to_string(), pool: pool.to_string() };
                let st = self.blocks.entry(record::block_of(&c)).or_default();
                st.add.insert(c, h);
                st.urgent = true;
            }
        }
        verdict
    }

    /// Decide the write for one tracked node.
    fn plan(&mut self, name: &str, now: Instant) {
        self.reconcile_record(name);
        if !self.needs_write(name) {
            self.track.remove(name);
            return;
        }
        let Some(node) = self.nodes.get(name).cloned() else { return };
        let cilium = self.cilium.get(name).cloned();
        let node_needs = self.cfg.node_target && node.cidrs.is_empty();
        let cilium_write = if !self.cfg.ciliumnode_target {
            None
        } else {
            match &cilium {
                None => Some(CiliumWrite::Create),
                Some(c) if c.cidrs.is_empty() => {
                    Some(CiliumWrite::Patch { resource_version: c.resource_version.clone() })
                }
                Some(_) => None,
            }
        };
        let pool_of = |alloc: &Allocator| alloc.holds(name).map(|(p, _)| p.to_string()).unwrap_or_default();
        let (pool, cidrs) = if !node.cidrs.is_empty() {
            (pool_of(&self.alloc), node.cidrs.clone())
        } else if let Some(c) = cilium.as_ref().filter(|c| !c.cidrs.is_empty()) {
            (pool_of(&self.alloc), c.cidrs.clone())
        } else {
            match self.alloc.allocate(name, &node.labels) {
                Ok(a) => {
                    self.effects.push(Effect::Resolved { node: name.to_string(), reason: events::CIDR_NOT_AVAILABLE });
                    self.dirty = true;
                    (a.pool, a.cidrs)
                }
                Err(na) => {
                    let cap = self.cfg.max_backoff;
                    let Some(t) = self.track.get_mut(name) else { return };
                    t.attempts += 1;
                    let first = t.waiting.is_none();
                    t.waiting = Some(na.candidates.clone());
                    t.next = now + backoff(t.attempts, cap);
                    if first {
                        tracing::warn!(node = name, "{na}");
                    } else {
                        tracing::debug!(node = name, "{na}");
                    }
                    self.warn(
                        name,
                        node.uid.as_deref(),
                        events::CIDR_NOT_AVAILABLE,
                        "Allocate",
                        format!("Node {name} status is now: CIDRNotAvailable: {na}"),
                    );
                    return;
                }
            }
        };
        let uid = node.uid.clone().unwrap_or_default();
        let claim = self.claim(name, &uid, &pool, &cidrs);
        let plan = Plan {
            node: name.to_string(),
            node_uid: node.uid.clone(),
            pool,
            cidrs,
            patch_node: node_needs,
            ciliumnode: cilium_write,
        };
        let cap = self.cfg.max_backoff;
        let Some(t) = self.track.get_mut(name) else { return };
        t.waiting = None;
        match claim {
            Claim::Recorded => {
                t.in_flight = true;
                self.effects.push(Effect::Write(plan));
            }
            Claim::Staged => {
                t.in_flight = true;
                t.awaiting = Some(plan);
            }
            Claim::Wait => {
                t.attempts += 1;
                t.next = now + backoff(t.attempts, cap);
            }
            Claim::Lost => {
                t.next = now;
                tracing::info!(node = name, "another writer recorded these CIDRs first: planning again");
                self.resync(name, now);
            }
        }
    }

    /// A plan lost its CIDRs to another writer's record entry: plan it again.
    fn lose(&mut self, name: &str, now: Instant) {
        for st in self.blocks.values_mut() {
            st.add.retain(|_, h| h.node != name);
        }
        if let Some(t) = self.track.get_mut(name) {
            t.awaiting = None;
            t.in_flight = false;
            t.next = now;
        }
        tracing::info!(node = name, "another writer recorded these CIDRs first: planning again");
        self.resync(name, now);
    }

    /// Write every plan whose CIDRs the record now gives its node.
    fn materialise(&mut self, now: Instant) {
        let waiting: Vec<(String, Plan)> =
            self.track.iter().filter_map(|(n, t)| Some((n.clone(), t.awaiting.clone()?))).collect();
        for (name, plan) in waiting {
            let uid = plan.node_uid.clone().unwrap_or_default();
            match self.claim(&name, &uid, &plan.pool, &plan.cidrs) {
                Claim::Recorded => {
                    if let Some(t) = self.track.get_mut(&name) {
                        t.awaiting = None;
                    }
                    self.effects.push(Effect::Write(plan));
                }
                Claim::Staged => {}
                Claim::Wait | Claim::Lost => self.lose(&name, now),
            }
        }
    }

    /// A block as the API has it now: what others recorded is occupied; an entry of ours that
    /// someone else's took the place of is lost.
    fn set_block(&mut self, block: IpNet, obj: Option<&PodCIDRBlock>, now: Instant) {
        let (entries, bad) = obj.map(record::entries).unwrap_or_default();
        if !bad.is_empty() {
            tracing::warn!(block = %block, "ignoring unparsable entries {bad:?} of the allocation record");
        }
        let st = self.blocks.entry(block).or_default();
        st.resource_version = obj.and_then(|o| o.metadata.resource_version.clone());
        let old = std::mem::replace(&mut st.entries, entries.clone());
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for (c, h) in &old {
            if entries.get(c) != Some(h) {
                if let Some(set) = self.recorded.get_mut(&h.node) {
                    set.remove(c);
                    if set.is_empty() {
                        self.recorded.remove(&h.node);
                    }
                }
                touched.insert(h.node.clone());
            }
        }
        let mut lost = Vec::new();
        let st = &self.blocks[&block];
        for (c, h) in &entries {
            self.recorded.entry(h.node.clone()).or_default().insert(*c);
            if let Some(mine) = st.add.get(c)
                && !same_holder(h, &mine.node, &mine.uid)
            {
                lost.push(mine.node.clone());
            }
            if old.get(c) != Some(h) {
                touched.insert(h.node.clone());
            }
        }
        for n in lost {
            self.lose(&n, now);
        }
        let st = &self.blocks[&block];
        // Another writer's allocations: occupied now (unless one of ours in flight claims the
        // same CIDR; its result settles that).
        let others: Vec<(String, IpNet)> = entries
            .iter()
            .filter(|(c, h)| !st.in_flight.as_ref().is_some_and(|(a, _)| a.get(c).is_some_and(|m| m != *h)))
            .filter(|(c, h)| self.alloc.holds(&h.node).is_none_or(|(_, held)| !held.contains(c)))
            .map(|(c, h)| (h.node.clone(), *c))
            .collect();
        for (n, c) in others {
            let uid = self.nodes.get(&n).and_then(|o| o.uid.clone());
            self.occupy(&n, &[c], uid.as_deref());
        }
        self.resync_all(&touched, now);
    }

    /// A PodCIDRBlock watch event.
    pub fn block_event(&mut self, ev: Event<PodCIDRBlock>, now: Instant) {
        let block_of_obj = |b: &PodCIDRBlock| b.spec.cidr.parse::<IpNet>().ok().map(|n| n.trunc());
        match ev {
            Event::Init => self.block_list.seen = Some(BTreeSet::new()),
            Event::InitApply(b) | Event::Apply(b) => {
                let Some(block) = block_of_obj(&b) else {
                    tracing::warn!(name = %b.name_any(), "ignoring a PodCIDRBlock whose spec.cidr does not parse");
                    return;
                };
                if let Some(s) = self.block_list.seen.as_mut() {
                    s.insert(record::block_name(&block));
                }
                // A watch event older than what our own write returned would undo entries we
                // know are there (and free their CIDRs here for a moment).
                let rv = |v: Option<&String>| v.and_then(|s| s.parse::<u64>().ok());
                let known = self.blocks.get(&block).and_then(|st| rv(st.resource_version.as_ref()));
                if let (Some(new), Some(known)) = (rv(b.metadata.resource_version.as_ref()), known)
                    && new < known
                {
                    return;
                }
                self.set_block(block, Some(&b), now);
            }
            Event::Delete(b) => {
                if let Some(block) = block_of_obj(&b) {
                    self.set_block(block, None, now);
                }
            }
            Event::InitDone => {
                let seen = self.block_list.seen.take().unwrap_or_default();
                let gone: Vec<IpNet> = self
                    .blocks
                    .iter()
                    .filter(|(b, st)| st.resource_version.is_some() && !seen.contains(&record::block_name(b)))
                    .map(|(b, _)| *b)
                    .collect();
                for b in gone {
                    self.set_block(b, None, now);
                }
                self.block_list.done = true;
                self.listed();
            }
        }
    }

    /// A record write decided here has ended.
    pub fn committed(&mut self, commit: Commit, result: CommitResult, now: Instant) {
        let block = commit.block;
        let Some((sent_add, sent_remove)) = self.blocks.get_mut(&block).and_then(|st| st.in_flight.take()) else {
            return;
        };
        match result {
            CommitResult::Written(obj) => {
                if let Some(st) = self.blocks.get_mut(&block) {
                    st.attempts = 0;
                    st.next = Some(now + self.cfg.batch);
                }
                self.set_block(block, Some(&obj), now);
            }
            CommitResult::Conflict(cur) => {
                self.set_block(block, cur.as_ref(), now);
                let st = self.blocks.entry(block).or_default();
                let mut lost = Vec::new();
                for (c, h) in sent_add {
                    match st.entries.get(&c) {
                        Some(x) if same_holder(x, &h.node, &h.uid) => {}
                        Some(_) => lost.push(h.node),
                        None => {
                            st.add.entry(c).or_insert(h);
                        }
                    }
                }
                for c in sent_remove {
                    if st.entries.contains_key(&c) {
                        st.remove.insert(c);
                    }
                }
                // What was sent may be what plans wait on: it goes again first.
                st.urgent = true;
                for n in lost {
                    self.lose(&n, now);
                }
            }
            CommitResult::Retry { code, message } => {
                let cap = self.cfg.max_backoff;
                let st = self.blocks.entry(block).or_default();
                for (c, h) in sent_add {
                    st.add.entry(c).or_insert(h);
                }
                st.remove.extend(sent_remove);
                st.urgent = true;
                st.attempts += 1;
                let wait = backoff(st.attempts, cap);
                st.next = Some(now + wait);
                tracing::warn!(block = %block, code = %code, "writing the allocation record failed, retrying in {wait:?}: {message}");
            }
        }
        self.materialise(now);
    }

    /// Write each block with changes and no write in flight, while fewer than [`AHEAD`] Node
    /// writes are in flight or already committed ahead of it: blocks are written lowest first
    /// (the allocator's order), and a block whose plans are not yet needed waits and gathers
    /// the later joins into one write rather than one now and another later. Adoptions alone
    /// (no plan waits on them) yield to the nodes being assigned, until the last Node write is
    /// answered, and after the restore wait [`SETTLE`] first, as a new node does, so that the
    /// nodes joining then do not queue behind a write per block of the whole cluster.
    fn flush(&mut self, now: Instant) {
        let mut lost = Vec::new();
        let mut already = false;
        let adopt_from = *self.adopt_from.get_or_insert(now + SETTLE);
        let assigning = now < adopt_from || self.track.values().any(|t| t.waiting.is_none());
        // Plans among staged entries, counted only as far as they could hold a block back.
        let track = &self.track;
        let plans_in = |add: &BTreeMap<IpNet, Holder>, ahead: usize| {
            let room = AHEAD.saturating_sub(ahead);
            add.values().filter(|h| track.get(&h.node).is_some_and(|t| t.awaiting.is_some())).take(room).count()
        };
        // The Node writes in flight, and those whose record write is (or whose block comes
        // first and waits).
        let mut ahead = track.values().filter(|t| t.in_flight && t.awaiting.is_none()).count();
        for st in self.blocks.values() {
            if let Some((add, _)) = &st.in_flight {
                ahead += plans_in(add, ahead);
            }
        }
        for (block, st) in self.blocks.iter_mut() {
            if st.in_flight.is_some()
                || (st.add.is_empty() && st.remove.is_empty())
                || st.next.is_some_and(|t| t > now)
                || ahead >= AHEAD
                || (assigning && !st.urgent)
            {
                // Its plans go before a later block's (only adoptions wait in a block that is
                // not urgent); not while its writes fail, which must not stop the others.
                if st.urgent && st.attempts == 0 {
                    ahead += plans_in(&st.add, ahead);
                }
                continue;
            }
            st.urgent = false;
            let mut desired = st.entries.clone();
            let remove = std::mem::take(&mut st.remove);
            for c in &remove {
                desired.remove(c);
            }
            let mut add = BTreeMap::new();
            for (c, h) in std::mem::take(&mut st.add) {
                match desired.get(&c) {
                    Some(x) if same_holder(x, &h.node, &h.uid) => {}
                    Some(_) => lost.push(h.node),
                    None => {
                        desired.insert(c, h.clone());
                        add.insert(c, h);
                    }
                }
            }
            if desired == st.entries {
                // Someone recorded it all meanwhile: the plans waiting on it can go.
                already = true;
                continue;
            }
            ahead += plans_in(&add, ahead);
            let object = record::object(block, st.resource_version.as_deref(), &desired);
            st.in_flight = Some((add, remove));
            self.effects.push(Effect::Commit(Commit { block: *block, object }));
        }
        for n in lost {
            self.lose(&n, now);
        }
        if already {
            self.materialise(now);
        }
    }

    /// A write decided here has ended.
    pub fn written(&mut self, plan: Plan, outcome: Outcome, now: Instant) {
        let name = plan.node.clone();
        if outcome.node_written
            && let Some(n) = self.nodes.get_mut(&name)
            && n.cidrs.is_empty()
        {
            n.cidrs = plan.cidrs.clone();
        }
        if outcome.ciliumnode_written {
            let rv = self.cilium.get(&name).map(|c| c.resource_version.clone()).unwrap_or_default();
            self.cilium.insert(name.clone(), CiliumObs { cidrs: plan.cidrs.clone(), resource_version: rv });
        }
        let cap = self.cfg.max_backoff;
        let Some(t) = self.track.get_mut(&name) else {
            self.maybe_release(&name, now);
            return;
        };
        t.in_flight = false;
        let cidrs: Vec<String> = plan.cidrs.iter().map(ToString::to_string).collect();
        match outcome.result {
            Ok(()) => {
                let seconds = now.saturating_duration_since(t.first_seen).as_secs_f64();
                self.effects.push(Effect::Assigned { node: name.clone(), seconds });
                tracing::info!(node = %name, pool = %plan.pool, cidrs = ?cidrs, node_target = plan.patch_node, ciliumnode = ?plan.ciliumnode, "CIDRs written");
                self.track.remove(&name);
                self.touch(&name, now);
            }
            Err(Failure::Retry { code, message }) => {
                t.attempts += 1;
                let wait = backoff(t.attempts, cap);
                t.next = now + wait;
                tracing::warn!(node = %name, code = %code, "writing CIDRs failed, retrying in {wait:?}: {message}");
            }
            Err(Failure::Gone) => {
                t.attempts += 1;
                t.next = now + backoff(t.attempts, cap);
                tracing::info!(node = %name, "the Node is gone before its CIDRs were written");
            }
            Err(Failure::Invalid { message, node }) => {
                t.attempts += 1;
                t.next = now + backoff(t.attempts, cap);
                let note = format!("writing {} to node {name} was refused: {message}; left as it is", cidrs.join(","));
                tracing::warn!(node = %name, "{note}");
                self.warn(&name, plan.node_uid.as_deref(), events::CIDR_ASSIGNMENT_FAILED, "Assign", note);
                if let Some(n) = node {
                    // Someone else set the Node's CIDRs: hold what it holds.
                    self.observe_node(*n, now);
                }
            }
            Err(Failure::Reread { ciliumnode }) => {
                t.attempts += 1;
                t.next = now + backoff(t.attempts, cap);
                tracing::info!(node = %name, "the CiliumNode changed meanwhile: judging it again");
                match ciliumnode {
                    Some(cn) => self.observe_cilium(*cn, now),
                    None => {
                        self.cilium.remove(&name);
                    }
                }
            }
        }
        self.maybe_release(&name, now);
    }

    /// Plan every tracked node that is due at `now`; the time the next one is due.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        if !self.restored {
            return None;
        }
        let due: Vec<String> =
            self.track.iter().filter(|(_, t)| !t.in_flight && t.next <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            self.plan(&name, now);
        }
        self.flush(now);
        let pending: Vec<&BlockState> = self
            .blocks
            .values()
            .filter(|st| st.in_flight.is_none() && (!st.add.is_empty() || !st.remove.is_empty()))
            .collect();
        // Only times to come: a block held back by the Node writes in flight (or by the nodes
        // being assigned) is judged again when one of them reports, and a time passed would
        // have the executor spin.
        let adopt = self.adopt_from.filter(|_| !pending.is_empty());
        let retry = pending.iter().filter_map(|st| st.next).chain(adopt).filter(|t| *t > now);
        self.track.values().filter(|t| !t.in_flight).map(|t| t.next).chain(retry).min()
    }
}

/// The executor: feeds the [`Machine`] and carries out its effects with the real client.
pub struct Controller {
    sh: Shared,
    machine: Machine,
    /// Nodes and CiliumNodes are watched once the record is listed (see [`Machine::block_event`]).
    watching_nodes: bool,
    /// Counts asked for before the restore is done: answered once it is, so that no pool is
    /// judged empty (and its finalizer removed) on a half-read cluster.
    stats_asked: Vec<tokio::sync::oneshot::Sender<Snapshot>>,
    published: BTreeSet<(String, String)>,
    /// The counts changed since the gauges were last set, and when that was.
    stale: bool,
    published_at: Option<Instant>,
    tx: mpsc::UnboundedSender<Input>,
    writes: Arc<Semaphore>,
}

impl Controller {
    pub fn new(sh: Shared, tx: mpsc::UnboundedSender<Input>) -> Self {
        let machine = Machine::new(Config::from(sh.settings.as_ref()));
        Self {
            sh,
            machine,
            watching_nodes: false,
            stats_asked: Vec::new(),
            published: BTreeSet::new(),
            stale: false,
            published_at: None,
            tx,
            writes: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    fn handle(&mut self, input: Input, now: Instant) {
        let m = &mut self.machine;
        match input {
            Input::Node(Ok(ev)) => m.node_event(ev, now),
            Input::Cilium(Ok(ev)) => m.cilium_event(ev, now),
            Input::Block(Ok(ev)) => {
                let listed = matches!(ev, Event::InitDone);
                m.block_event(ev, now);
                if listed && !self.watching_nodes {
                    self.watching_nodes = true;
                    watch_nodes(&self.sh, &self.tx);
                }
            }
            Input::Committed(commit, result) => {
                if let CommitResult::Retry { code, .. } = &result {
                    self.sh.metrics.api_error(code);
                }
                m.committed(*commit, result, now);
            }
            Input::Block(Err(e)) => self.watch_error("podcidrblocks.podcidr.io", &e),
            Input::Node(Err(e)) => self.watch_error("nodes", &e),
            Input::Cilium(Err(e)) => {
                if watch_code(&e) == "404" && !self.sh.settings.ciliumnode_target {
                    if !self.machine.restored() {
                        tracing::info!("no CiliumNode CRD: no CiliumNodes to read (read if it appears)");
                    }
                    self.machine.cilium_absent();
                } else {
                    self.watch_error("ciliumnodes.cilium.io", &e);
                }
            }
            Input::Written(plan, outcome) => {
                for code in &outcome.errors {
                    self.sh.metrics.api_error(code);
                }
                m.written(*plan, outcome, now);
            }
            Input::Pools(pools, reply) => {
                let _ = reply.send(m.set_pools(pools, now));
            }
            Input::PoolsListed => m.pools_listed(),
            Input::Stats(reply) => self.stats_asked.push(reply),
            Input::Held(reply) => {
                let _ = reply.send(m.held());
            }
        }
    }

    fn watch_error(&mut self, what: &str, e: &watcher::Error) {
        self.sh.metrics.api_error(&watch_code(e));
        if !self.machine.restored() {
            tracing::warn!("watching {what}: {e} (nothing is assigned until every {what} is listed; retrying)");
        } else {
            tracing::warn!("watching {what}: {e} (retrying; a relist reconciles)");
        }
    }

    /// Carry out the machine's effects; the time the gauges are due, if they wait.
    fn perform(&mut self, now: Instant) -> Option<Instant> {
        if self.machine.restored() {
            for reply in self.stats_asked.drain(..) {
                let _ = reply.send(self.machine.snapshot());
            }
        }
        for effect in self.machine.take_effects() {
            match effect {
                Effect::Write(plan) => {
                    let client = self.sh.client.clone();
                    let tx = self.tx.clone();
                    let sem = self.writes.clone();
                    tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await;
                        let outcome = targets::execute(&client, &plan).await;
                        let _ = tx.send(Input::Written(Box::new(plan), outcome));
                    });
                }
                Effect::Commit(commit) => {
                    let client = self.sh.client.clone();
                    let tx = self.tx.clone();
                    let sem = self.writes.clone();
                    tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await;
                        let result = commit_block(&client, &commit).await;
                        let _ = tx.send(Input::Committed(Box::new(commit), result));
                    });
                }
                Effect::Warn(w) => self.sh.events.warn(w.regarding, w.reason, w.action, w.note),
                Effect::Resolved { node, reason } => self.sh.events.resolved(&node, reason),
                Effect::Ready => self.sh.ready.set(true),
                Effect::Assigned { seconds, .. } => self.sh.metrics.observe_assign(seconds),
            }
        }
        self.stale |= self.machine.take_dirty();
        if !self.stale {
            return None;
        }
        if let Some(due) = self.published_at.map(|at| at + PUBLISH_EVERY).filter(|due| *due > now) {
            return Some(due);
        }
        self.stale = false;
        self.published_at = Some(now);
        self.publish();
        None
    }

    /// Set the pool gauges from the allocator.
    fn publish(&mut self) {
        let alloc = self.machine.allocator();
        let mut now = BTreeSet::new();
        for st in alloc.pool_stats() {
            let family = st.family.to_string();
            self.sh.metrics.set_pool(&st.pool, &family, st.capacity, st.allocated, st.draining);
            self.sh.metrics.set_pool_free(&st.pool, &family, st.free);
            now.insert((st.pool, family));
        }
        for (pool, family) in self.published.difference(&now) {
            self.sh.metrics.remove_pool_family(pool, family);
        }
        self.published = now;
        self.sh.metrics.set_foreign(alloc.foreign().len());
    }

    /// Drive the machine until the inputs end.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        loop {
            let now = Instant::now();
            let next = self.machine.tick(now);
            let next = next.into_iter().chain(self.perform(now)).min();
            let input = match next {
                Some(at) => {
                    tokio::select! {
                        i = rx.recv() => i,
                        _ = tokio::time::sleep_until(at.into()) => continue,
                    }
                }
                None => rx.recv().await,
            };
            let Some(input) = input else { return };
            self.handle(input, Instant::now());
            // Take whatever else is queued before deciding: a relist is judged as a whole.
            while let Ok(i) = rx.try_recv() {
                self.handle(i, Instant::now());
            }
        }
    }
}

fn forward<S, T>(stream: S, tx: mpsc::UnboundedSender<Input>, wrap: fn(T) -> Input)
where
    S: Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(wrap(item)).is_err() {
                return;
            }
        }
    });
}

/// Start the watchers and run the controller (never returns in normal operation).
fn watch_code(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            targets::error_code(e)
        }
        watcher::Error::WatchError(s) => s.code.to_string(),
        watcher::Error::NoResourceVersion => "other".into(),
    }
}

/// Write one block of the record with its resourceVersion as precondition.
async fn commit_block(client: &Client, commit: &Commit) -> CommitResult {
    use kube::api::PostParams;
    let api: Api<PodCIDRBlock> = Api::all(client.clone());
    let pp = PostParams { field_manager: Some(targets::FIELD_MANAGER.into()), ..Default::default() };
    let name = record::block_name(&commit.block);
    let res = if commit.object.metadata.resource_version.is_none() {
        targets::timed(api.create(&pp, &commit.object)).await
    } else {
        targets::timed(api.replace(&name, &pp, &commit.object)).await
    };
    match res {
        Ok(obj) => CommitResult::Written(obj),
        Err((code, _)) if code == "409" || code == "404" => match targets::timed(api.get_opt(&name)).await {
            Ok(cur) => CommitResult::Conflict(cur),
            Err((code, message)) => CommitResult::Retry { code, message },
        },
        Err((code, message)) => CommitResult::Retry { code, message },
    }
}

/// Watch Nodes and CiliumNodes (whatever the target: a CIDR a CiliumNode holds is taken).
fn watch_nodes(sh: &Shared, tx: &mpsc::UnboundedSender<Input>) {
    let cfg = watcher::Config::default();
    let nodes: Api<Node> = Api::all(sh.client.clone());
    let node_stream = watcher::watcher(nodes, cfg.clone()).default_backoff().map(|ev| {
        ev.map(|e| {
            e.modify(|n| {
                // Only metadata and spec are read: drop the bulk early.
                n.status = None;
                n.metadata.managed_fields = None;
                if let Some(a) = n.metadata.annotations.as_mut() {
                    a.retain(|k, _| k == super::crd::POOL_ANNOTATION);
                }
            })
        })
    });
    forward(node_stream, tx.clone(), Input::Node);
    let ar = targets::ciliumnode_resource();
    let cns: Api<DynamicObject> = Api::all_with(sh.client.clone(), &ar);
    let stream = watcher::watcher(cns, cfg).default_backoff().map(|ev| {
        ev.map(|e| {
            e.modify(|c| {
                c.metadata.managed_fields = None;
                if let Some(o) = c.data.as_object_mut() {
                    o.remove("status");
                }
            })
        })
    });
    forward(stream, tx.clone(), Input::Cilium);
}

/// Start the watchers and run the controller (never returns in normal operation). The record
/// is listed first, then the Nodes: see [`Machine::block_event`].
pub async fn run(sh: Shared, extra: impl FnOnce(mpsc::UnboundedSender<Input>)) {
    let (tx, rx) = mpsc::unbounded_channel();
    let blocks: Api<PodCIDRBlock> = Api::all(sh.client.clone());
    let stream = watcher::watcher(blocks, watcher::Config::default())
        .default_backoff()
        .map(|ev| ev.map(|e| e.modify(|b| b.metadata.managed_fields = None)));
    forward(stream, tx.clone(), Input::Block);
    extra(tx.clone());
    tracing::info!(
        node_target = sh.settings.node_target,
        ciliumnode_target = sh.settings.ciliumnode_target,
        "restoring: listing the allocation record, then every Node{}, before assigning anything",
        if sh.settings.ciliumnode_target { " and CiliumNode" } else { "" }
    );
    Controller::new(sh, tx).run(rx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cap = Duration::from_secs(5);
        assert_eq!(backoff(1, cap), Duration::from_millis(250));
        assert_eq!(backoff(2, cap), Duration::from_millis(500));
        assert_eq!(backoff(4, cap), Duration::from_secs(2));
        assert_eq!(backoff(5, cap), Duration::from_secs(4));
        assert_eq!(backoff(6, cap), cap);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }
}
