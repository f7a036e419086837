//! The cluster contract the agent shares with the plugin and the operator, in one place so
//! that it can be swapped for the shared contract crate: where a node's pod CIDRs are, and the
//! annotation naming the pool they came from.

use k8s_openapi::api::core::v1::Node;
use kube::api::{ApiResource, DynamicObject};

/// The PodCIDRPool a node's CIDRs came from, set by podcidr-operator.
pub const POOL_ANNOTATION: &str = "podcidr.io/pool";

/// A Node's pod CIDRs: `spec.podCIDRs`, else `spec.podCIDR`.
pub fn node_pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = &node.spec else { return vec![] };
    match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.clone(),
        _ => spec.pod_cidr.iter().filter(|c| !c.is_empty()).cloned().collect(),
    }
}

/// The pool a Node's CIDRs came from ("" when none is named).
pub fn node_pool(node: &Node) -> String {
    node.metadata.annotations.as_ref().and_then(|a| a.get(POOL_ANNOTATION)).cloned().unwrap_or_default()
}

/// Cilium's `cilium.io/v2` CiliumNode.
pub fn ciliumnode_resource() -> ApiResource {
    ApiResource {
        group: "cilium.io".into(),
        version: "v2".into(),
        api_version: "cilium.io/v2".into(),
        kind: "CiliumNode".into(),
        plural: "ciliumnodes".into(),
    }
}

/// A CiliumNode's pod CIDRs: `spec.ipam.podCIDRs`.
pub fn ciliumnode_pod_cidrs(cn: &DynamicObject) -> Vec<String> {
    cn.data
        .pointer("/spec/ipam/podCIDRs")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|c| c.as_str()).map(String::from).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(spec: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}, "spec": spec})).unwrap()
    }

    #[test]
    fn pod_cidrs_else_pod_cidr() {
        assert_eq!(node_pod_cidrs(&node(serde_json::json!({"podCIDR": "10.0.1.0/24"}))), ["10.0.1.0/24"]);
        let both = node(serde_json::json!({"podCIDR": "10.0.1.0/24", "podCIDRs": ["10.0.1.0/24", "fd00::/64"]}));
        assert_eq!(node_pod_cidrs(&both), ["10.0.1.0/24", "fd00::/64"]);
        assert!(node_pod_cidrs(&node(serde_json::json!({}))).is_empty());
    }
}
