//! `kubernetes`: the Node's `spec.podCIDRs` (else `spec.podCIDR`), as kube-controller-manager
//! assigns them with `--allocate-node-cidrs=true`.

use super::api::{self, ApiConf, Target};
use super::source::{Failure, Observed, Source};
use crate::cni::config::Request;
use crate::cni::error::CniResult;
use podcidr_contract::{POOL_ANNOTATION, node_pod_cidrs};

pub struct NodeSource {
    api: ApiConf,
    node: String,
}

impl NodeSource {
    pub fn new(req: &Request, node: &str, node_from: &str) -> CniResult<NodeSource> {
        api::check_name("ipam.nodeName", node_from, node)?;
        Ok(NodeSource { api: ApiConf::from_request(req)?, node: node.to_string() })
    }
}

impl Source for NodeSource {
    fn query(&self) -> String {
        format!("GET /api/v1/nodes/{}", self.node)
    }

    fn fetch(&self) -> Result<Observed, Failure> {
        let what = format!("Node {}", self.node);
        let target = Target { what: &what, rbac: "get on nodes (core API group)" };
        let node = api::get_node(&self.api, &target, &self.node)?;
        let cidrs = node_pod_cidrs(node.spec.as_ref());
        if cidrs.is_empty() {
            return Err(Failure::Missing(format!(
                "{what} has no pod CIDR yet (spec.podCIDRs is empty); podcidr-operator assigns one, or \
                 kube-controller-manager when it runs with --allocate-node-cidrs=true and --cluster-cidr"
            )));
        }
        let pool = node.metadata.annotations.and_then(|mut a| a.remove(POOL_ANNOTATION));
        Ok(Observed {
            object: what,
            uid: node.metadata.uid,
            resource_version: node.metadata.resource_version,
            cidrs,
            pool,
        })
    }
}
