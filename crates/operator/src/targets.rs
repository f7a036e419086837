//! Writing a node's CIDRs to its targets: the Node (`spec.podCIDR`, `spec.podCIDRs`, annotation
//! `podcidr.io/pool`) and/or its `cilium.io/v2` CiliumNode (`spec.ipam.podCIDRs`).
//!
//! Only empty targets are written, so a CIDR someone else set is never changed: the Node
//! refuses a change with 422 anyway, and a CiliumNode patch carries the resourceVersion it was
//! judged empty at (a 409 if it moved). The Node goes first: if it turns out to hold other
//! CIDRs (422), the CiliumNode gets those instead of ours.

use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use serde_json::json;

use super::crd::POOL_ANNOTATION;
use podcidr_contract::{CILIUM_NODE, as_go_reads, node_pod_cidrs};

/// The field manager of the operator's writes.
pub const FIELD_MANAGER: &str = "podcidr-operator";

/// A request that takes longer than this counts as a timeout (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// cilium.io/v2 CiliumNode.
pub fn ciliumnode_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(CILIUM_NODE.group, CILIUM_NODE.version, CILIUM_NODE.kind);
    ApiResource::from_gvk_with_plural(&gvk, CILIUM_NODE.plural)
}

/// The status code of a failed request for the metrics ("409", "503"), or a word for a failure
/// without one.
pub fn error_code(e: &Error) -> String {
    match e {
        Error::Api(s) => s.code.to_string(),
        Error::HyperError(_) | Error::Service(_) => "connect".into(),
        _ => "other".into(),
    }
}

/// How a write to a target ended, when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// 409, 429, 5xx, timeouts, connection errors (and anything unexpected): try again later.
    Retry { code: String, message: String },
    /// 422 on the Node: it holds other CIDRs now (its current state, if it could be read).
    Invalid { message: String, node: Option<Box<Node>> },
    /// The CiliumNode is not as it was judged (created meanwhile, changed, or gone): its
    /// current state.
    Reread { ciliumnode: Option<Box<DynamicObject>> },
    /// The Node is gone.
    Gone,
}

/// What to write for one node.
#[derive(Debug, Clone)]
pub struct Plan {
    pub node: String,
    pub node_uid: Option<String>,
    pub pool: String,
    pub cidrs: Vec<IpNet>,
    pub patch_node: bool,
    pub ciliumnode: Option<CiliumWrite>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiliumWrite {
    /// No CiliumNode: create one owned by the Node.
    Create,
    /// A CiliumNode without podCIDRs at this resourceVersion.
    Patch { resource_version: String },
}

#[derive(Debug)]
pub struct Outcome {
    pub node_written: bool,
    pub ciliumnode_written: bool,
    pub result: Result<(), Failure>,
    /// Codes of the requests that failed (for the metrics).
    pub errors: Vec<String>,
}

fn strs(cidrs: &[IpNet]) -> Vec<String> {
    cidrs.iter().map(ToString::to_string).collect()
}

/// The merge patch of a Node.
pub fn node_patch(pool: &str, cidrs: &[IpNet]) -> serde_json::Value {
    let list = strs(cidrs);
    let mut patch = json!({"spec": {"podCIDR": list.first(), "podCIDRs": list}});
    if !pool.is_empty() {
        patch["metadata"] = json!({"annotations": {POOL_ANNOTATION: pool}});
    }
    patch
}

/// A new CiliumNode named after its Node, owned by it (the garbage collector removes it with
/// the Node).
pub fn ciliumnode_object(node: &str, uid: &str, cidrs: &[IpNet]) -> serde_json::Value {
    json!({
        "apiVersion": CILIUM_NODE.api_version(),
        "kind": CILIUM_NODE.kind,
        "metadata": {
            "name": node,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}],
        },
        "spec": {"ipam": {"podCIDRs": strs(cidrs)}},
    })
}

/// The merge patch of an empty CiliumNode, refused with 409 if it changed since.
pub fn ciliumnode_patch(resource_version: &str, cidrs: &[IpNet]) -> serde_json::Value {
    json!({"metadata": {"resourceVersion": resource_version}, "spec": {"ipam": {"podCIDRs": strs(cidrs)}}})
}

pub async fn timed<T>(f: impl Future<Output = Result<T, Error>>) -> Result<T, (String, String)> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((error_code(&e), api_message(&e))),
        Err(_) => Err(("timeout".into(), format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))),
    }
}

fn api_message(e: &Error) -> String {
    match e {
        Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        e => e.to_string(),
    }
}

fn is_retry(code: &str) -> bool {
    !matches!(code, "404" | "422")
}

/// Carry out a plan.
pub async fn execute(client: &Client, plan: &Plan) -> Outcome {
    let mut out = Outcome { node_written: false, ciliumnode_written: false, result: Ok(()), errors: Vec::new() };
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    if plan.patch_node {
        match timed(nodes.patch(&plan.node, &pp, &Patch::Merge(node_patch(&plan.pool, &plan.cidrs)))).await {
            Ok(_) => out.node_written = true,
            Err((code, message)) => {
                out.errors.push(code.clone());
                out.result = Err(match code.as_str() {
                    "404" => Failure::Gone,
                    "422" => {
                        let node = timed(nodes.get_opt(&plan.node)).await.ok().flatten().map(Box::new);
                        Failure::Invalid { message, node }
                    }
                    _ => Failure::Retry { code, message },
                });
                return out;
            }
        }
    }
    let Some(write) = &plan.ciliumnode else { return out };
    let ar = ciliumnode_resource();
    let cns: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let res = match write {
        CiliumWrite::Create => {
            let uid = plan.node_uid.clone().unwrap_or_default();
            let obj: DynamicObject = match serde_json::from_value(ciliumnode_object(&plan.node, &uid, &plan.cidrs)) {
                Ok(o) => o,
                Err(e) => {
                    out.result = Err(Failure::Retry { code: "other".into(), message: e.to_string() });
                    return out;
                }
            };
            timed(cns.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &obj))
                .await
        }
        CiliumWrite::Patch { resource_version } => {
            timed(cns.patch(&plan.node, &pp, &Patch::Merge(ciliumnode_patch(resource_version, &plan.cidrs)))).await
        }
    };
    match res {
        Ok(_) => out.ciliumnode_written = true,
        Err((code, message)) => {
            out.errors.push(code.clone());
            out.result = Err(if matches!(code.as_str(), "409" | "404") {
                // Created by someone else meanwhile, changed, or deleted: judge it again.
                match timed(cns.get_opt(&plan.node)).await {
                    Ok(cn) => Failure::Reread { ciliumnode: cn.map(Box::new) },
                    Err((code, message)) => {
                        out.errors.push(code.clone());
                        Failure::Retry { code, message }
                    }
                }
            } else if is_retry(&code) {
                Failure::Retry { code, message }
            } else {
                Failure::Invalid { message, node: None }
            });
        }
    }
    out
}

/// The CIDRs a Node holds: `spec.podCIDRs`, or `spec.podCIDR` alone (older writers). Unparsable
/// entries are returned apart.
pub fn node_cidrs(node: &Node) -> (Vec<IpNet>, Vec<String>) {
    parse(node_pod_cidrs(node.spec.as_ref()))
}

/// The CIDRs a CiliumNode holds in `spec.ipam.podCIDRs`.
pub fn ciliumnode_cidrs(cn: &DynamicObject) -> (Vec<IpNet>, Vec<String>) {
    parse(CILIUM_NODE.pod_cidrs(&cn.data))
}

fn parse(list: Vec<String>) -> (Vec<IpNet>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for s in list {
        match s.parse::<IpNet>().map(as_go_reads) {
            Ok(n) => {
                if !ok.contains(&n) {
                    ok.push(n)
                }
            }
            Err(_) => bad.push(s),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn node_patch_sets_both_fields_and_the_pool() {
        let p = node_patch("default", &nets(&["10.244.1.0/24", "fd00::/64"]));
        assert_eq!(
            p,
            json!({"metadata": {"annotations": {"podcidr.io/pool": "default"}},
                   "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00::/64"]}})
        );
        // CIDRs adopted from a CiliumNode outside every pool: no pool to record.
        assert!(node_patch("", &nets(&["192.168.0.0/24"])).get("metadata").is_none());
    }

    #[test]
    fn ciliumnode_is_owned_by_its_node() {
        let o = ciliumnode_object("node-a", "u-1", &nets(&["10.0.0.0/24"]));
        assert_eq!(
            o["metadata"]["ownerReferences"][0],
            json!({"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "u-1"})
        );
        assert_eq!(o["spec"]["ipam"]["podCIDRs"], json!(["10.0.0.0/24"]));
        let p = ciliumnode_patch("42", &nets(&["10.0.0.0/24"]));
        assert_eq!(p["metadata"]["resourceVersion"], "42");
    }

    #[test]
    fn cidrs_read_from_the_objects() {
        let n: Node =
            serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.0.0.0/24"}})).unwrap();
        assert_eq!(node_cidrs(&n).0, nets(&["10.0.0.0/24"]));
        let n: Node = serde_json::from_value(
            json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24", "fd00::/64", "junk"]}}),
        )
        .unwrap();
        assert_eq!(node_cidrs(&n), (nets(&["10.0.0.0/24", "fd00::/64"]), vec!["junk".to_string()]));
        let cn: DynamicObject = serde_json::from_value(
            json!({"apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": "a"}, "spec": {"ipam": {"podCIDRs": ["10.1.0.0/24"]}}}),
        )
        .unwrap();
        assert_eq!(ciliumnode_cidrs(&cn).0, nets(&["10.1.0.0/24"]));
    }

    #[test]
    fn ipv4_mapped_cidrs_are_read_as_go_reads_them() {
        assert_eq!(parse(vec!["::ffff:10.244.1.0/120".into()]).0, nets(&["10.244.1.0/24"]));
        assert_eq!(parse(vec!["::ffff:10.244.1.0/128".into()]).0, nets(&["10.244.1.0/32"]));
        // Shorter than the mapped prefix: not an IPv4 range in Go either.
        assert!(matches!(parse(vec!["::ffff:0.0.0.0/90".into()]).0[..], [IpNet::V6(_)]));
        assert_eq!(parse(vec!["fd00::/64".into()]).0, nets(&["fd00::/64"]));
    }
}
