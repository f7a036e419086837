//! `podcidr-operator status [--kubeconfig FILE] [--json]`: the cluster's view of the pools,
//! read from the API (issue 11 §7, issue 12 §4, issue 18 §3).
//!
//! It lists PodCIDRPools (the flags' `default` pool is one of them, as the operator writes it),
//! Nodes, CiliumNodes and the allocation record (PodCIDRBlocks); any CRD may be missing. It
//! feeds them to the controller's own [`Machine`] as a restart would (the same pool set, the
//! same adoption and draining rules, the same [`Allocator`]) and prints what that says, so its
//! counts are the ones the leader writes to the pool statuses and the metrics:
//! ```text
//! Pool default (every node): Ready
//!   IPv4: 37 nodes allocated, 219/256 node CIDRs free in 10.244.0.0/16 (/24 per node), 0 draining
//! Allocated CIDRs:
//!   10.244.5.0/24  node-a  (pool default)
//! Foreign CIDRs:
//!   192.168.7.0/24  node-x
//! Waiting for a CIDR:
//!   node-z
//! Duplicates:
//!   10.244.7.0/24  node-b, node-c
//! Record conflicts:
//!   10.244.9.0/24  recorded for node-d (pool default), which holds 10.244.8.0/24
//! ```
//! ALLOCATED counts nodes (a node holding a /23 of a /24 pool counts once), FREE counts node
//! CIDRs nothing overlaps (a foreign /16 over a pool leaves it none). The last two sections are
//! printed only when there is something in them. Names are printed with control characters
//! escaped.
//!
//! Entry points: [`run`] (async, in a tokio runtime) or [`run_blocking`] (makes its own).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::watcher::Event;
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::allocator::Family;
use super::controller::{self, Machine};
use super::crd::{CONDITION_READY, PodCIDRPool};
use super::record::PodCIDRBlock;
use super::{pools, targets};

/// One pool family as shown: the allocator's counts ([`super::allocator::PoolStats`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyView {
    /// "IPv4" or "IPv6".
    pub family: &'static str,
    /// The active CIDRs; empty when the family was removed and still drains.
    pub cidrs: Vec<String>,
    pub mask_size: u8,
    /// Node CIDRs the active CIDRs hold (a JSON number, exact even above 2^64).
    pub capacity: u128,
    /// Nodes holding a CIDR in the active CIDRs.
    pub allocated: u128,
    /// Node CIDRs of the active CIDRs that nothing overlaps.
    pub free: u128,
    /// Node CIDRs held in CIDRs removed from the pool.
    pub draining: u128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    pub name: String,
    /// `kubectl`-style selector text; "every node" when there is none.
    pub selector: String,
    /// The `Ready` condition's status ("True", "False", "Unknown"), with its message when not
    /// True; `None` before the operator wrote a status (or for a pool whose object is gone).
    pub ready: Option<String>,
    pub ready_message: Option<String>,
    pub families: Vec<FamilyView>,
    /// The pool is being deleted (held by the drain finalizer), or already gone while its
    /// CIDRs drain.
    pub deleting: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holding {
    pub cidr: String,
    pub node: String,
    /// The pool it counts for (allocated or draining); for foreign CIDRs, the pool the Node's
    /// annotation names, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub draining: bool,
    /// Held by a CiliumNode (or the record) whose Node is gone.
    pub no_node: bool,
}

/// One CIDR held by two nodes, or two overlapping CIDRs of different nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateView {
    pub cidr: String,
    pub nodes: Vec<String>,
    /// The other CIDR it overlaps, and its nodes; absent for the same CIDR held twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlaps: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overlaps_nodes: Vec<String>,
}

/// A record entry that disagrees with what its Node holds (the leader removes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordConflict {
    pub cidr: String,
    pub node: String,
    pub pool: String,
    /// What the node's Node and CiliumNode hold; empty when the node is gone.
    pub node_holds: Vec<String>,
    pub node_gone: bool,
}

/// Everything `status` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub pools: Vec<PoolView>,
    pub allocated: Vec<Holding>,
    pub foreign: Vec<Holding>,
    /// Nodes with no CIDR in their Node, their CiliumNode nor the record.
    pub waiting: Vec<String>,
    pub duplicates: Vec<DuplicateView>,
    pub record_conflicts: Vec<RecordConflict>,
    /// What could not be read and was left out ("no PodCIDRPool CRD", ...).
    pub notes: Vec<String>,
}

/// What the API returned, as `status` reads it.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub pools: Vec<PodCIDRPool>,
    pub nodes: Vec<Node>,
    pub ciliumnodes: Vec<DynamicObject>,
    pub blocks: Vec<PodCIDRBlock>,
}

/// The controller's machine after it restored from `cluster`, as the leader's does after a
/// restart: the same pool set ([`pools::pool_set`]), record, Nodes and CiliumNodes, in the
/// order the leader reads them. Its effects (writes, Events) are dropped.
pub fn model(cluster: &Cluster) -> Machine {
    let now = Instant::now();
    let mut m = Machine::new(controller::Config {
        node_target: true,
        ciliumnode_target: false,
        max_backoff: Duration::from_secs(1),
        batch: controller::GAP,
        default_pool: None,
    });
    let held: Vec<IpNet> = (cluster.nodes.iter().flat_map(|n| targets::node_cidrs(n).0))
        .chain(cluster.ciliumnodes.iter().flat_map(|c| targets::ciliumnode_cidrs(c).0))
        .collect();
    let by_name: BTreeMap<String, PodCIDRPool> = cluster.pools.iter().map(|p| (p.name_any(), p.clone())).collect();
    let (set, _refused) = pools::pool_set(None, &by_name, &BTreeMap::new(), &held);
    m.set_pools(set, now);
    m.block_event(Event::Init, now);
    for b in &cluster.blocks {
        m.block_event(Event::InitApply(b.clone()), now);
    }
    m.block_event(Event::InitDone, now);
    m.node_event(Event::Init, now);
    for n in &cluster.nodes {
        m.node_event(Event::InitApply(n.clone()), now);
    }
    m.node_event(Event::InitDone, now);
    m.cilium_event(Event::Init, now);
    for c in &cluster.ciliumnodes {
        m.cilium_event(Event::InitApply(c.clone()), now);
    }
    m.cilium_event(Event::InitDone, now);
    m.pools_listed();
    m.take_effects();
    m
}

fn selector_text(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else { return "every node".into() };
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {op} ({values})", e.key),
        });
    }
    if parts.is_empty() { "every node (empty selector)".into() } else { parts.join(",") }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn texts(c: &[IpNet]) -> Vec<String> {
    c.iter().map(ToString::to_string).collect()
}

/// Build the report from what the API returned (pure; the tests feed it objects).
pub fn build_report(cluster: &Cluster) -> Report {
    let m = model(cluster);
    let alloc = m.allocator();
    let objects: BTreeMap<String, &PodCIDRPool> = cluster.pools.iter().map(|p| (p.name_any(), p)).collect();
    let mut report = Report::default();

    // Every pool object, and every pool the allocator still counts (a deleted one draining).
    let mut names: BTreeSet<String> = objects.keys().cloned().collect();
    let stats = alloc.pool_stats();
    names.extend(stats.iter().map(|s| s.pool.clone()));
    for name in names {
        let obj = objects.get(&name);
        let ready =
            obj.and_then(|p| p.status.as_ref()).and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
        report.pools.push(PoolView {
            selector: selector_text(obj.and_then(|p| p.spec.node_selector.as_ref())),
            ready: ready.map(|c| c.status.clone()),
            ready_message: ready.filter(|c| c.status != "True").map(|c| c.message.clone()),
            families: stats
                .iter()
                .filter(|s| s.pool == name)
                .map(|s| FamilyView {
                    family: family_name(s.family),
                    cidrs: texts(&s.cidrs),
                    mask_size: s.mask,
                    capacity: s.capacity,
                    allocated: s.allocated,
                    free: s.free,
                    draining: s.draining,
                })
                .collect(),
            deleting: obj.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            name,
        });
    }

    let nodes: BTreeMap<String, &Node> = cluster.nodes.iter().map(|n| (n.name_any(), n)).collect();
    let foreign: BTreeSet<(String, IpNet)> = alloc.foreign().into_iter().collect();
    let active: Vec<IpNet> =
        alloc.pools().iter().flat_map(|p| p.ipv4.iter().chain(&p.ipv6)).flat_map(|f| f.cidrs.clone()).collect();
    let draining = alloc.draining();
    for (node, pool, cidrs) in alloc.nodes() {
        for c in cidrs {
            let holding = |pool: Option<String>, draining| Holding {
                cidr: c.to_string(),
                node: node.to_string(),
                pool,
                draining,
                no_node: !nodes.contains_key(node),
            };
            if foreign.contains(&(node.to_string(), *c)) {
                let annotated =
                    nodes.get(node).and_then(|n| podcidr_contract::node_pool(n.metadata.annotations.as_ref()));
                report.foreign.push(holding(annotated.map(str::to_owned), false));
                continue;
            }
            let in_draining = |p: &str| draining.iter().any(|(dp, d)| *dp == p && d.contains(c));
            // The pool whose CIDR holds it; a node's first pool otherwise.
            let owner = alloc
                .pools()
                .iter()
                .find(|p| p.ipv4.iter().chain(&p.ipv6).any(|f| f.cidrs.iter().any(|pc| pc.contains(c))))
                .map(|p| p.name.clone())
                .or_else(|| draining.iter().find(|(_, d)| d.contains(c)).map(|(p, _)| p.to_string()))
                .unwrap_or_else(|| pool.to_string());
            let is_draining = !active.iter().any(|a| a.contains(c)) && in_draining(&owner);
            report.allocated.push(holding(Some(owner), is_draining));
        }
    }
    report.waiting = nodes
        .iter()
        .filter(|(name, n)| n.metadata.deletion_timestamp.is_none() && alloc.holds(name).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    for d in alloc.duplicates() {
        report.duplicates.push(DuplicateView {
            cidr: d.cidr.to_string(),
            nodes: d.nodes,
            overlaps: d.overlaps.as_ref().map(|(c, _)| c.to_string()),
            overlaps_nodes: d.overlaps.map(|(_, n)| n).unwrap_or_default(),
        });
    }
    let observed = |name: &str| -> Vec<IpNet> {
        let mut out: Vec<IpNet> = nodes.get(name).map(|n| targets::node_cidrs(n).0).unwrap_or_default();
        for c in cluster.ciliumnodes.iter().filter(|c| c.name_any() == name) {
            out.extend(targets::ciliumnode_cidrs(c).0.into_iter().filter(|x| !out.contains(x)).collect::<Vec<_>>());
        }
        out
    };
    for (cidr, h) in m.record_disagreements() {
        report.record_conflicts.push(RecordConflict {
            cidr: cidr.to_string(),
            node_holds: texts(&observed(&h.node)),
            node_gone: !nodes.contains_key(&h.node),
            node: h.node,
            pool: h.pool,
        });
    }
    let key = |h: &Holding| (h.cidr.parse::<IpNet>().ok(), h.cidr.clone(), h.node.clone());
    report.allocated.sort_by_key(key);
    report.foreign.sort_by_key(key);
    report
}

/// Control characters escaped; anything else as it is.
fn esc(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn esc_list(l: &[String]) -> String {
    esc(&l.join(", "))
}

/// The human-readable report.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    if r.pools.is_empty() {
        let _ = writeln!(w, "No PodCIDRPools.");
    }
    for p in &r.pools {
        let state = match (&p.ready, &p.ready_message) {
            (None, _) => "no status yet".to_owned(),
            (Some(s), _) if s == "True" => "Ready".to_owned(),
            (Some(s), Some(m)) => format!("Ready={s}: {}", esc(m)),
            (Some(s), None) => format!("Ready={s}"),
        };
        let deleting = if p.deleting { ", being deleted (held until no node holds its CIDRs)" } else { "" };
        let _ = writeln!(w, "Pool {} ({}): {state}{deleting}", esc(&p.name), esc(&p.selector));
        for f in &p.families {
            if f.cidrs.is_empty() {
                let _ = writeln!(w, "  {}: removed from the pool, {} draining", f.family, f.draining);
                continue;
            }
            let _ = writeln!(
                w,
                "  {}: {} node{} allocated, {}/{} node CIDRs free in {} (/{} per node), {} draining",
                f.family,
                f.allocated,
                if f.allocated == 1 { "" } else { "s" },
                f.free,
                f.capacity,
                esc_list(&f.cidrs),
                f.mask_size,
                f.draining
            );
        }
    }
    let line = |w: &mut String, h: &Holding, extra: &str| {
        let no_node = if h.no_node { " (CiliumNode only, its Node is gone)" } else { "" };
        let _ = writeln!(w, "  {}  {}{extra}{no_node}", esc(&h.cidr), esc(&h.node));
    };
    let _ = writeln!(w, "Allocated CIDRs:");
    for h in &r.allocated {
        let extra = match (&h.pool, h.draining) {
            (Some(p), true) => format!("  (pool {}, draining)", esc(p)),
            (Some(p), false) if !p.is_empty() => format!("  (pool {})", esc(p)),
            _ => String::new(),
        };
        line(w, h, &extra);
    }
    let _ = writeln!(w, "Foreign CIDRs:");
    for h in &r.foreign {
        let extra =
            h.pool.as_ref().map(|p| format!("  (annotated pool {} has no such CIDR)", esc(p))).unwrap_or_default();
        line(w, h, &extra);
    }
    let _ = writeln!(w, "Waiting for a CIDR:");
    for n in &r.waiting {
        let _ = writeln!(w, "  {}", esc(n));
    }
    if !r.duplicates.is_empty() {
        let _ = writeln!(w, "Duplicates (both kept occupied; fix one by hand):");
    }
    for d in &r.duplicates {
        match &d.overlaps {
            None => {
                let _ = writeln!(w, "  {}  {}", esc(&d.cidr), esc_list(&d.nodes));
            }
            Some(o) => {
                let _ = writeln!(
                    w,
                    "  {}  {}  overlaps {}  {}",
                    esc(&d.cidr),
                    esc_list(&d.nodes),
                    esc(o),
                    esc_list(&d.overlaps_nodes)
                );
            }
        }
    }
    if !r.record_conflicts.is_empty() {
        let _ = writeln!(w, "Record conflicts (the leader removes these entries):");
    }
    for c in &r.record_conflicts {
        let holds = if c.node_gone {
            "which is gone".to_owned()
        } else if c.node_holds.is_empty() {
            "which holds nothing".to_owned()
        } else {
            format!("which holds {}", esc_list(&c.node_holds))
        };
        let _ = writeln!(w, "  {}  recorded for {} (pool {}), {holds}", esc(&c.cidr), esc(&c.node), esc(&c.pool));
    }
    for n in &r.notes {
        let _ = writeln!(w, "Note: {}", esc(n));
    }
    out
}

/// The report as JSON (serde_json writes u128 counts as exact numbers).
pub fn render_json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

async fn client(kubeconfig: Option<PathBuf>) -> Result<Client, String> {
    let config = super::client::config(kubeconfig.as_deref()).await?;
    Client::try_from(config).map_err(|e| format!("cannot make an API client: {e}"))
}

/// Every object, 500 at a time. `Ok(None)`: the resource does not exist (404, no CRD).
async fn list_all<K>(api: &Api<K>) -> Result<Option<Vec<K>>, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        match api.list(&lp).await {
            Ok(page) => {
                items.extend(page.items);
                token = page.metadata.continue_.filter(|t| !t.is_empty());
                if token.is_none() {
                    return Ok(Some(items));
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Read the API and build the report (what [`run`] prints). `Err`: why the API could not be
/// read, for stderr.
pub async fn report(kubeconfig: Option<PathBuf>) -> Result<Report, String> {
    let client = client(kubeconfig).await?;
    let mut notes = Vec::new();
    let pools = list_all(&Api::<PodCIDRPool>::all(client.clone()))
        .await
        .map_err(|e| format!("cannot list podcidrpools.podcidr.io: {e}"))?
        .unwrap_or_else(|| {
            notes.push("the PodCIDRPool CRD is not installed (kubectl apply -f conf/operator/crd.yaml)".into());
            Vec::new()
        });
    // The record before the Nodes, as the leader reads it: an entry is written after its Node
    // was seen, so a Node missing from the later list is gone.
    // Without the record (no CRD, or no right to read it) the counts are those of the objects.
    let blocks = match list_all(&Api::<PodCIDRBlock>::all(client.clone())).await {
        Ok(Some(list)) => list,
        Ok(None) => {
            notes.push("the PodCIDRBlock CRD is not installed: no allocation record read".into());
            Vec::new()
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            notes.push(format!("the allocation record (PodCIDRBlocks) not read: {}", s.message));
            Vec::new()
        }
        Err(e) => return Err(format!("cannot list podcidrblocks.podcidr.io: {e}")),
    };
    let nodes = list_all(&Api::<Node>::all(client.clone()))
        .await
        .map_err(|e| format!("cannot list nodes: {e}"))?
        .unwrap_or_default();
    let ar = super::targets::ciliumnode_resource();
    // No CiliumNode CRD (404) or no right to read it (403): nodes are judged by their Node.
    let ciliumnodes = match list_all(&Api::<DynamicObject>::all_with(client, &ar)).await {
        Ok(Some(list)) => list,
        Ok(None) => Vec::new(),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            notes.push(format!("CiliumNodes not read: {}", s.message));
            Vec::new()
        }
        Err(e) => return Err(format!("cannot list ciliumnodes.cilium.io: {e}")),
    };
    let mut report = build_report(&Cluster { pools, nodes, ciliumnodes, blocks });
    report.notes = notes;
    Ok(report)
}

/// `podcidr-operator status`: print the report (text, or JSON with `json`); exit 1 when the
/// API cannot be read, with the reason on stderr.
pub async fn run(kubeconfig: Option<PathBuf>, json: bool) -> ExitCode {
    match report(kubeconfig).await {
        Ok(report) => {
            let text = if json { render_json(&report) + "\n" } else { render_text(&report) };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podcidr-operator status: {}", esc(&e));
            ExitCode::FAILURE
        }
    }
}

/// [`run`] on a runtime of its own, for a synchronous `main`.
pub fn run_blocking(kubeconfig: Option<PathBuf>, json: bool) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(kubeconfig, json)),
        Err(e) => {
            eprintln!("podcidr-operator status: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PodCIDRPoolSpec, PodCIDRPoolStatus, PoolFamilySpec};
    use crate::record::{self, Holder};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelectorRequirement, Time};
    use serde_json::json;

    fn pool(
        name: &str,
        selector: Option<LabelSelector>,
        v4: Option<(&[&str], u8)>,
        v6: Option<(&[&str], u8)>,
    ) -> PodCIDRPool {
        let fam = |f: Option<(&[&str], u8)>| {
            f.map(|(c, m)| PoolFamilySpec { cidrs: c.iter().map(|s| s.to_string()).collect(), mask_size: m })
        };
        PodCIDRPool::new(name, PodCIDRPoolSpec { node_selector: selector, ipv4: fam(v4), ipv6: fam(v6) })
    }

    fn node(name: &str, cidrs: &[&str], pool: Option<&str>) -> Node {
        let mut v = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": format!("uid-{name}")}, "spec": {}});
        if !cidrs.is_empty() {
            v["spec"]["podCIDR"] = json!(cidrs[0]);
            v["spec"]["podCIDRs"] = json!(cidrs);
        }
        if let Some(p) = pool {
            v["metadata"]["annotations"] = json!({ podcidr_contract::POOL_ANNOTATION: p });
        }
        serde_json::from_value(v).unwrap()
    }

    fn ciliumnode(name: &str, cidrs: &[&str]) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNode",
            "metadata": {"name": name}, "spec": {"ipam": {"podCIDRs": cidrs}}}))
        .unwrap()
    }

    fn cluster(pools: Vec<PodCIDRPool>, nodes: Vec<Node>, ciliumnodes: Vec<DynamicObject>) -> Cluster {
        Cluster { pools, nodes, ciliumnodes, blocks: Vec::new() }
    }

    #[test]
    fn the_issue_lines_for_pools_nodes_foreign_and_waiting() {
        let zone = LabelSelector {
            match_labels: Some([("topology.kubernetes.io/zone".to_string(), "a".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "gpu".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        let mut default = pool("default", None, Some((&["10.244.0.0/16"], 24)), None);
        default.status = Some(PodCIDRPoolStatus::new(
            None,
            None,
            vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Valid".into(),
                message: String::new(),
                last_transition_time: Time(Default::default()),
                observed_generation: None,
            }],
        ));
        let pools = vec![pool("zone-a", Some(zone), Some((&["10.0.0.0/16"], 24)), Some((&["fd00::/8"], 64))), default];
        let mut old = pool("old", None, Some((&["10.9.0.0/16"], 24)), None);
        old.metadata.deletion_timestamp = Some(Time(Default::default()));
        let nodes = vec![
            node("node-a", &["10.244.5.0/24"], Some("default")),
            node("node-b", &["10.0.3.0/24", "fd00::/64"], Some("zone-a")),
            // In a pool being deleted: draining.
            node("node-c", &["10.9.0.0/24"], Some("old")),
            node("node-x", &["192.168.7.0/24"], None),
            node("node-z", &[], None),
        ];
        let cns = vec![ciliumnode("node-z", &[]), ciliumnode("gone", &["10.244.9.0/24"])];
        let report = build_report(&cluster([pools, vec![old]].concat(), nodes, cns));
        let text = render_text(&report);
        let expected = "\
Pool default (every node): Ready
  IPv4: 2 nodes allocated, 254/256 node CIDRs free in 10.244.0.0/16 (/24 per node), 0 draining
Pool old (every node): no status yet, being deleted (held until no node holds its CIDRs)
  IPv4: removed from the pool, 1 draining
Pool zone-a (topology.kubernetes.io/zone=a,!gpu): no status yet
  IPv4: 1 node allocated, 255/256 node CIDRs free in 10.0.0.0/16 (/24 per node), 0 draining
  IPv6: 1 node allocated, 72057594037927935/72057594037927936 node CIDRs free in fd00::/8 (/64 per node), 0 draining
Allocated CIDRs:
  10.0.3.0/24  node-b  (pool zone-a)
  10.9.0.0/24  node-c  (pool old, draining)
  10.244.5.0/24  node-a  (pool default)
  10.244.9.0/24  gone  (pool default) (CiliumNode only, its Node is gone)
  fd00::/64  node-b  (pool zone-a)
Foreign CIDRs:
  192.168.7.0/24  node-x
Waiting for a CIDR:
  node-z
";
        assert_eq!(text, expected);
        let v: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(v["pools"][2]["families"][1]["capacity"], json!(72057594037927936u64));
        assert_eq!(v["waiting"], json!(["node-z"]));
        assert_eq!(v["foreign"][0]["cidr"], "192.168.7.0/24");
        assert_eq!(v["duplicates"], json!([]));
    }

    #[test]
    fn huge_capacities_are_exact_and_names_are_escaped() {
        let pools = vec![pool("all", None, None, Some((&["::/0"], 128)))];
        let report = build_report(&cluster(pools, vec![node("evil\u{1b}[2J", &[], None)], Vec::new()));
        assert_eq!(report.pools[0].families[0].capacity, u128::MAX);
        let text = render_text(&report);
        assert!(
            text.contains("0 nodes allocated, 340282366920938463463374607431768211455/340282366920938463463374607431768211455 node CIDRs"),
            "{text}"
        );
        assert!(text.contains("  evil\\u{1b}[2J\n"), "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(render_json(&report).contains("340282366920938463463374607431768211455"));
    }

    /// Issue 18 §3: a /23 in a pool cut in /24 is one node and two slices; a foreign /16 over
    /// a small pool leaves it no free slice.
    #[test]
    fn a_node_counts_once_and_a_foreign_supernet_fills_the_pool() {
        let pools = vec![
            pool("default", None, Some((&["10.244.0.0/16"], 24)), None),
            pool("small", None, Some((&["10.9.1.0/24"], 26)), None),
        ];
        let nodes = vec![node("wide", &["10.244.2.0/23"], None), node("old", &["10.9.0.0/16"], None)];
        let report = build_report(&cluster(pools, nodes, Vec::new()));
        let text = render_text(&report);
        assert!(text.contains("  IPv4: 1 node allocated, 254/256 node CIDRs free in 10.244.0.0/16"), "{text}");
        assert!(text.contains("  IPv4: 0 nodes allocated, 0/4 node CIDRs free in 10.9.1.0/24"), "{text}");
        assert!(text.contains("Foreign CIDRs:\n  10.9.0.0/16  old\n"), "{text}");
    }

    #[test]
    fn duplicates_and_record_conflicts_are_listed() {
        let pools = vec![pool("default", None, Some((&["10.244.0.0/16"], 24)), None)];
        let nodes = vec![
            node("node-b", &["10.244.7.0/24"], None),
            node("node-c", &["10.244.7.0/24"], None),
            node("node-d", &["10.244.9.0/24"], None),
            node("node-e", &["10.244.8.0/23"], None),
        ];
        let c: IpNet = "10.244.20.0/24".parse().unwrap();
        let holder = Holder { node: "node-d".into(), uid: "uid-node-d".into(), pool: "default".into() };
        let block = record::object(&record::block_of(&c), Some("7"), &[(c, holder)].into());
        let mut cl = cluster(pools, nodes, Vec::new());
        cl.blocks.push(block);
        let report = build_report(&cl);
        let text = render_text(&report);
        assert!(
            text.contains(
                "Duplicates (both kept occupied; fix one by hand):\n  10.244.7.0/24  node-b, node-c\n  10.244.9.0/24  node-d  overlaps 10.244.8.0/23  node-e\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Record conflicts (the leader removes these entries):\n  10.244.20.0/24  recorded for node-d (pool default), which holds 10.244.9.0/24\n"
            ),
            "{text}"
        );
        // Four nodes, node-d once; its recorded CIDR stays taken until the leader removes it.
        assert!(text.contains("  IPv4: 4 nodes allocated, 252/256 node CIDRs free"), "{text}");
    }
}
