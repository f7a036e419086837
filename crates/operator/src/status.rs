//! `podcidr-operator status [--kubeconfig FILE] [--json]`: the cluster's view of the pools,
//! read from the API (issue 11 §7, issue 12 §4).
//!
//! It lists PodCIDRPools, Nodes and CiliumNodes (either may be missing: no CRD is no pools or
//! no CiliumNodes) and prints:
//! ```text
//! Pool default (every node): Ready
//!   IPv4: 37/256 node CIDRs allocated from 10.244.0.0/16 (/24 per node), 0 draining
//! Allocated CIDRs:
//!   10.244.5.0/24  node-a
//! Foreign CIDRs:
//!   192.168.7.0/24  node-x
//! Waiting for a CIDR:
//!   node-z
//! ```
//! The counts come from the objects themselves, not from the pools' status (which the leader
//! writes): a node's CIDR counts for the pool whose current CIDRs contain it; outside every
//! pool, for the pool named by the Node's `podcidr.io/pool` annotation as *draining*; else it is
//! *foreign*. A node's CIDRs are those of its Node (`spec.podCIDRs`) and of its CiliumNode
//! (`spec.ipam.podCIDRs`), both targets together. Names and annotation text are printed with
//! control characters escaped.
//!
//! Entry points: [`run`] (async, in a tokio runtime) or [`run_blocking`] (makes its own).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::crd::{CONDITION_READY, PodCIDRPool};
use podcidr_contract::{CILIUM_NODE, node_pod_cidrs, node_pool};

/// One pool family as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyView {
    /// "IPv4" or "IPv6".
    pub family: &'static str,
    pub cidrs: Vec<String>,
    pub mask_size: u8,
    /// Node CIDRs the current CIDRs hold (a JSON number, exact even above 2^64).
    pub capacity: u128,
    /// Node CIDRs held by nodes inside the current CIDRs.
    pub allocated: u128,
    /// Node CIDRs held by nodes annotated with this pool, outside its current CIDRs.
    pub draining: u128,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolView {
    pub name: String,
    /// `kubectl`-style selector text; "every node" when there is none.
    pub selector: String,
    /// The `Ready` condition's status ("True", "False", "Unknown"), with its message when not
    /// True; `None` before the operator wrote a status.
    pub ready: Option<String>,
    pub ready_message: Option<String>,
    pub families: Vec<FamilyView>,
    /// The pool is being deleted (held by the drain finalizer).
    pub deleting: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holding {
    pub cidr: String,
    pub node: String,
    /// The pool it counts for (allocated or draining); `None` for foreign CIDRs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub draining: bool,
    /// Held by a CiliumNode whose Node is gone.
    pub no_node: bool,
}

/// Everything `status` prints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub pools: Vec<PoolView>,
    pub allocated: Vec<Holding>,
    pub foreign: Vec<Holding>,
    /// Nodes with no CIDR in their Node nor their CiliumNode.
    pub waiting: Vec<String>,
    /// What could not be read and was left out ("no PodCIDRPool CRD", ...).
    pub notes: Vec<String>,
}

/// A node's CIDRs as found in the API.
#[derive(Clone, Debug, Default)]
pub struct NodeCidrs {
    pub name: String,
    pub cidrs: Vec<String>,
    pub pool_annotation: Option<String>,
    pub has_node: bool,
}

/// Merge Nodes and CiliumNodes (by name) into one list of holders.
pub fn node_cidrs(nodes: &[Node], ciliumnodes: &[DynamicObject]) -> Vec<NodeCidrs> {
    let mut by_name: BTreeMap<String, NodeCidrs> = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let cidrs = node_pod_cidrs(n.spec.as_ref());
        let pool_annotation = node_pool(n.metadata.annotations.as_ref()).map(String::from);
        by_name.insert(name.clone(), NodeCidrs { name, cidrs, pool_annotation, has_node: true });
    }
    for cn in ciliumnodes {
        let name = cn.metadata.name.clone().unwrap_or_default();
        let entry = by_name.entry(name.clone()).or_insert_with(|| NodeCidrs { name, ..Default::default() });
        for c in CILIUM_NODE.pod_cidrs(&cn.data) {
            if !entry.cidrs.contains(&c) {
                entry.cidrs.push(c);
            }
        }
    }
    by_name.into_values().collect()
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

fn family_name(net: &IpNet) -> &'static str {
    if matches!(net.addr(), IpAddr::V4(_)) { "IPv4" } else { "IPv6" }
}

/// Slices of `mask` in `net`: 2^(mask - prefix), saturating at u128::MAX.
fn slices(net: &IpNet, mask: u8) -> u128 {
    let bits = u32::from(mask.saturating_sub(net.prefix_len()));
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

/// Build the report from what the API returned (pure; the tests feed it objects).
pub fn build_report(pools: &[PodCIDRPool], holders: &[NodeCidrs]) -> Report {
    let mut pools: Vec<&PodCIDRPool> = pools.iter().collect();
    pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // (pool index, family index, parsed CIDRs, mask)
    let mut families: Vec<(usize, usize, Vec<IpNet>, u8)> = Vec::new();
    let mut report = Report::default();
    for (pi, p) in pools.iter().enumerate() {
        let ready = p.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
        let mut view = PoolView {
            name: p.metadata.name.clone().unwrap_or_default(),
            selector: selector_text(p.spec.node_selector.as_ref()),
            ready: ready.map(|c| c.status.clone()),
            ready_message: ready.filter(|c| c.status != "True").map(|c| c.message.clone()),
            families: Vec::new(),
            deleting: p.metadata.deletion_timestamp.is_some(),
        };
        for (label, fam) in [("IPv4", &p.spec.ipv4), ("IPv6", &p.spec.ipv6)] {
            let Some(fam) = fam else { continue };
            let nets = fam.networks();
            let capacity = nets.iter().fold(0u128, |sum, n| sum.saturating_add(slices(n, fam.mask_size)));
            families.push((pi, view.families.len(), nets, fam.mask_size));
            view.families.push(FamilyView {
                family: label,
                cidrs: fam.cidrs.clone(),
                mask_size: fam.mask_size,
                capacity,
                allocated: 0,
                draining: 0,
            });
        }
        report.pools.push(view);
    }

    for h in holders {
        if h.cidrs.is_empty() {
            if h.has_node {
                report.waiting.push(h.name.clone());
            }
            continue;
        }
        for c in &h.cidrs {
            let holding = |pool: Option<String>, draining| Holding {
                cidr: c.clone(),
                node: h.name.clone(),
                pool,
                draining,
                no_node: !h.has_node,
            };
            let Ok(net) = c.parse::<IpNet>() else {
                report.foreign.push(holding(None, false));
                continue;
            };
            let inside = families.iter().find(|(_, _, nets, _)| nets.iter().any(|p| p.contains(&net)));
            if let Some((pi, fi, _, _)) = inside {
                let view = &mut report.pools[*pi];
                view.families[*fi].allocated += 1;
                let pool = view.name.clone();
                report.allocated.push(holding(Some(pool), false));
                continue;
            }
            // Outside every current CIDR: draining when the Node names a pool that still exists.
            let annotated = h.pool_annotation.as_deref();
            let owner = annotated.and_then(|a| report.pools.iter().position(|p| p.name == a));
            match owner {
                Some(pi) => {
                    let view = &mut report.pools[pi];
                    let family = family_name(&net);
                    if let Some(f) = view.families.iter_mut().find(|f| f.family == family) {
                        f.draining += 1;
                    } else {
                        // The family was removed from the pool: it drains too.
                        view.families.push(FamilyView {
                            family,
                            cidrs: Vec::new(),
                            mask_size: net.prefix_len(),
                            capacity: 0,
                            allocated: 0,
                            draining: 1,
                        });
                    }
                    let pool = view.name.clone();
                    report.allocated.push(holding(Some(pool), true));
                }
                None => report.foreign.push(holding(annotated.map(str::to_owned), false)),
            }
        }
    }
    let key = |h: &Holding| (h.cidr.parse::<IpNet>().ok(), h.cidr.clone(), h.node.clone());
    report.allocated.sort_by_key(key);
    report.foreign.sort_by_key(key);
    report.waiting.sort();
    report
}

/// Control characters escaped; anything else as it is.
fn esc(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
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
                "  {}: {}/{} node CIDRs allocated from {} (/{} per node), {} draining",
                f.family,
                f.allocated,
                f.capacity,
                esc(&f.cidrs.join(", ")),
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
            (Some(p), false) => format!("  (pool {})", esc(p)),
            (None, _) => String::new(),
        };
        line(w, h, &extra);
    }
    let _ = writeln!(w, "Foreign CIDRs:");
    for h in &r.foreign {
        let extra =
            h.pool.as_ref().map(|p| format!("  (annotated pool {} does not exist)", esc(p))).unwrap_or_default();
        line(w, h, &extra);
    }
    let _ = writeln!(w, "Waiting for a CIDR:");
    for n in &r.waiting {
        let _ = writeln!(w, "  {}", esc(n));
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
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| format!("no kubeconfig found (KUBECONFIG, ~/.kube/config, in-cluster): {e}"))?,
    };
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
    let mut report = build_report(&pools, &node_cidrs(&nodes, &ciliumnodes));
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

/// Node names that appear in the report, for tests and callers that cross-check.
pub fn node_names(r: &Report) -> BTreeSet<&str> {
    r.allocated.iter().chain(&r.foreign).map(|h| h.node.as_str()).chain(r.waiting.iter().map(String::as_str)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{PodCIDRPoolSpec, PodCIDRPoolStatus, PoolFamilySpec};
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
        let mut v = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}});
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
        let pools = [pool("zone-a", Some(zone), Some((&["10.0.0.0/16"], 24)), Some((&["fd00:10::/8"], 64))), default];
        let nodes = [
            node("node-a", &["10.244.5.0/24"], Some("default")),
            node("node-b", &["10.0.3.0/24", "fd00:10::/64"], Some("zone-a")),
            // In a CIDR removed from zone-a: draining.
            node("node-c", &["10.9.0.0/24"], Some("zone-a")),
            node("node-x", &["192.168.7.0/24"], None),
            node("node-z", &[], None),
        ];
        let cns = [ciliumnode("node-z", &[]), ciliumnode("gone", &["10.244.9.0/24"])];
        let report = build_report(&pools, &node_cidrs(&nodes, &cns));
        let text = render_text(&report);
        let expected = "\
Pool default (every node): Ready
  IPv4: 2/256 node CIDRs allocated from 10.244.0.0/16 (/24 per node), 0 draining
Pool zone-a (topology.kubernetes.io/zone=a,!gpu): no status yet
  IPv4: 1/256 node CIDRs allocated from 10.0.0.0/16 (/24 per node), 1 draining
  IPv6: 1/72057594037927936 node CIDRs allocated from fd00:10::/8 (/64 per node), 0 draining
Allocated CIDRs:
  10.0.3.0/24  node-b  (pool zone-a)
  10.9.0.0/24  node-c  (pool zone-a, draining)
  10.244.5.0/24  node-a  (pool default)
  10.244.9.0/24  gone  (pool default) (CiliumNode only, its Node is gone)
  fd00:10::/64  node-b  (pool zone-a)
Foreign CIDRs:
  192.168.7.0/24  node-x
Waiting for a CIDR:
  node-z
";
        assert_eq!(text, expected);
        let v: serde_json::Value = serde_json::from_str(&render_json(&report)).unwrap();
        assert_eq!(v["pools"][1]["families"][1]["capacity"], json!(72057594037927936u64));
        assert_eq!(v["waiting"], json!(["node-z"]));
        assert_eq!(v["foreign"][0]["cidr"], "192.168.7.0/24");
    }

    #[test]
    fn huge_capacities_are_exact_and_names_are_escaped() {
        let pools = [pool("all", None, None, Some((&["::/0"], 128)))];
        let nodes = [node("evil\u{1b}[2J", &[], None)];
        let report = build_report(&pools, &node_cidrs(&nodes, &[]));
        assert_eq!(report.pools[0].families[0].capacity, u128::MAX);
        let text = render_text(&report);
        assert!(text.contains("0/340282366920938463463374607431768211455 node CIDRs"), "{text}");
        assert!(text.contains("  evil\\u{1b}[2J\n"), "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(render_json(&report).contains("340282366920938463463374607431768211455"));
    }

    #[test]
    fn no_pools_and_a_family_removed_while_nodes_hold_it() {
        assert!(render_text(&build_report(&[], &[])).starts_with("No PodCIDRPools.\n"));
        let pools = [pool("p", None, Some((&["10.0.0.0/16"], 24)), None)];
        let nodes = [node("n", &["10.0.0.0/24", "fd00::/64"], Some("p")), node("m", &["fd01::/64"], Some("gone"))];
        let report = build_report(&pools, &node_cidrs(&nodes, &[]));
        let text = render_text(&report);
        assert!(text.contains("  IPv6: removed from the pool, 1 draining\n"), "{text}");
        assert!(text.contains("  fd01::/64  m  (annotated pool gone does not exist)\n"), "{text}");
        assert_eq!(node_names(&report), BTreeSet::from(["n", "m"]));
    }
}
