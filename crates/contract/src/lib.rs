//! What the plugin, the operator and the agent agree on in the cluster, written once: where a
//! node's pod CIDRs are read from and written to, and the annotation that names their pool.

use std::collections::BTreeMap;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::NodeSpec;
use serde_json::Value;

/// The Node annotation in which podcidr-operator records the PodCIDRPool a Node's CIDRs came
/// from; the plugin reports it, and the operator restores draining pools from it.
pub const POOL_ANNOTATION: &str = "podcidr.io/pool";

/// A custom resource named after the node that holds its pod CIDRs at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidrResource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// The dotted path of the CIDR list in the object.
    pub pod_cidrs_path: &'static str,
}

impl CidrResource {
    /// `group/version`, as an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The CIDR list's path as a JSON pointer (`/spec/ipam/podCIDRs`).
    pub fn pod_cidrs_pointer(&self) -> String {
        self.pod_cidrs_path.split('.').fold(String::new(), |p, k| p + "/" + k)
    }

    /// The CIDRs an object of this resource holds (its whole JSON); entries that are not
    /// strings are not CIDRs.
    pub fn pod_cidrs(&self, object: &Value) -> Vec<String> {
        let list = object.pointer(&self.pod_cidrs_pointer()).and_then(Value::as_array);
        list.into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
    }
}

/// Cilium's `CiliumNode` (cluster-pool IPAM): the crd mode's default, and the operator's
/// `--target ciliumnode`.
pub const CILIUM_NODE: CidrResource = CidrResource {
    group: "cilium.io",
    version: "v2",
    kind: "CiliumNode",
    plural: "ciliumnodes",
    pod_cidrs_path: "spec.ipam.podCIDRs",
};

/// The CIDRs a Node holds: `spec.podCIDRs` (the dual-stack field, 1.16+), else `spec.podCIDR`
/// alone (older writers). Empty strings are not CIDRs.
pub fn node_pod_cidrs(spec: Option<&NodeSpec>) -> Vec<String> {
    let Some(spec) = spec else { return Vec::new() };
    match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.iter().filter(|c| !c.is_empty()).cloned().collect(),
        _ => spec.pod_cidr.iter().filter(|c| !c.is_empty()).cloned().collect(),
    }
}

/// A pod CIDR as Go's `net.ParseCIDR` reads it, and with it kube-proxy, flannel and the
/// kubelet: an IPv4-mapped IPv6 CIDR (`::ffff:10.244.1.0/120`, which a v1.26 API server
/// accepts) is the IPv4 CIDR it maps (`10.244.1.0/24`).
pub fn as_go_reads(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(net);
    }
    n
}

/// The pool a Node's CIDRs came from, from its annotations.
pub fn node_pool(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations.and_then(|a| a.get(POOL_ANNOTATION)).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cidr: Option<&str>, cidrs: Option<&[&str]>) -> NodeSpec {
        NodeSpec {
            pod_cidr: cidr.map(String::from),
            pod_cidrs: cidrs.map(|l| l.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn pod_cidrs_else_pod_cidr() {
        assert_eq!(node_pod_cidrs(None), Vec::<String>::new());
        let both = spec(Some("10.0.0.0/24"), Some(&["10.0.0.0/24", "fd00::/64"]));
        assert_eq!(node_pod_cidrs(Some(&both)), ["10.0.0.0/24", "fd00::/64"]);
        assert_eq!(node_pod_cidrs(Some(&spec(Some("10.0.1.0/24"), None))), ["10.0.1.0/24"]);
        assert_eq!(node_pod_cidrs(Some(&spec(Some("10.0.1.0/24"), Some(&[])))), ["10.0.1.0/24"]);
        assert_eq!(node_pod_cidrs(Some(&spec(Some(""), None))), Vec::<String>::new());
    }

    #[test]
    fn cilium_node_paths() {
        assert_eq!(CILIUM_NODE.api_version(), "cilium.io/v2");
        assert_eq!(CILIUM_NODE.pod_cidrs_pointer(), "/spec/ipam/podCIDRs");
        let cn = serde_json::json!({"spec": {"ipam": {"podCIDRs": ["10.1.0.0/24", 7, "fd00::/64"]}}});
        assert_eq!(CILIUM_NODE.pod_cidrs(&cn), ["10.1.0.0/24", "fd00::/64"]);
        assert_eq!(CILIUM_NODE.pod_cidrs(&serde_json::json!({"spec": {}})), Vec::<String>::new());
    }

    #[test]
    fn ipv4_mapped_cidrs_are_read_as_go_reads_them() {
        let go = |s: &str| as_go_reads(s.parse().unwrap()).to_string();
        assert_eq!(go("::ffff:10.244.1.0/120"), "10.244.1.0/24");
        assert_eq!(go("::ffff:0.0.0.0/96"), "0.0.0.0/0");
        assert_eq!(go("fd00:10:244:1::/64"), "fd00:10:244:1::/64");
        assert_eq!(go("::ffff:0:0/95"), "::ffff:0.0.0.0/95");
        assert_eq!(go("10.244.1.0/24"), "10.244.1.0/24");
    }

    #[test]
    fn pool_annotation() {
        let a = BTreeMap::from([(POOL_ANNOTATION.to_string(), "gpu".to_string())]);
        assert_eq!(node_pool(Some(&a)), Some("gpu"));
        assert_eq!(node_pool(None), None);
    }
}
