//! The allocation record: who holds which node CIDR, fenced by the API server's optimistic
//! concurrency (docs/operator.md, "The allocation record").
//!
//! One cluster-scoped `PodCIDRBlock` (group `podcidr.io`, version `v1alpha1`) per block of
//! address space, in the style of Calico's IPAM blocks: the block of a node CIDR of prefix `p`
//! is its supernet of prefix `p - 8` (256 slices), so every writer that hands out a given
//! slice writes the same object. An entry is added only to a block read at a resourceVersion
//! that has no entry for that CIDR, and the write carries that resourceVersion: of two writers
//! working from stale views, one gets 409 Conflict, re-reads and plans again. A Node or
//! CiliumNode is written only with CIDRs the record gives it.
//!
//! ```yaml
//! apiVersion: podcidr.io/v1alpha1
//! kind: PodCIDRBlock
//! metadata: {name: v4-10.244.0.0-16}
//! spec:
//!   cidr: 10.244.0.0/16
//!   allocations:
//!     - {cidr: 10.244.3.0/24, node: worker-7, uid: 5b1e..., pool: default}
//! ```

use std::collections::BTreeMap;

use ipnet::IpNet;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Slices per block are `2^BLOCK_BITS`.
pub const BLOCK_BITS: u8 = 8;

/// Node CIDRs of one block of address space, and who holds each.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "podcidr.io",
    version = "v1alpha1",
    kind = "PodCIDRBlock",
    plural = "podcidrblocks",
    doc = "The node CIDRs of one block of address space that podcidr-operator handed out or adopted, and the Node (name and UID) holding each.",
    printcolumn = r#"{"name":"CIDR","type":"string","description":"The block","jsonPath":".spec.cidr"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","description":"Nodes holding CIDRs of the block","jsonPath":".spec.allocations[*].node"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PodCIDRBlockSpec {
    /// The block: every allocation lies inside it.
    pub cidr: String,
    /// One entry per node CIDR, by CIDR.
    #[serde(default)]
    pub allocations: Vec<BlockEntry>,
}

/// One node CIDR and its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockEntry {
    pub cidr: String,
    /// The Node's name.
    pub node: String,
    /// The Node's UID: a Node deleted and created again under the same name is another node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The pool it was handed out from or adopted into ("" outside every pool).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pool: String,
}

/// A holder as the machine keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub uid: String,
    pub pool: String,
}

/// The block a node CIDR is recorded in.
pub fn block_of(cidr: &IpNet) -> IpNet {
    let len = cidr.prefix_len().saturating_sub(BLOCK_BITS);
    // A shorter prefix of a valid network is always valid.
    IpNet::new(cidr.addr(), len).map(|n| n.trunc()).unwrap_or(*cidr)
}

/// The object name of a block: `v4-10.244.0.0-16`, `v6-fd00-10---56` (a DNS subdomain).
pub fn block_name(block: &IpNet) -> String {
    let (family, addr) = match block {
        IpNet::V4(n) => ("v4", n.network().to_string()),
        IpNet::V6(n) => ("v6", n.network().to_string().replace(':', "-")),
    };
    format!("{family}-{addr}-{}", block.prefix_len())
}

/// The entries of a block object, by CIDR; entries that do not parse are returned apart.
pub fn entries(b: &PodCIDRBlock) -> (BTreeMap<IpNet, Holder>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut bad = Vec::new();
    for e in &b.spec.allocations {
        match e.cidr.parse::<IpNet>() {
            Ok(c) => {
                out.insert(c.trunc(), Holder { node: e.node.clone(), uid: e.uid.clone(), pool: e.pool.clone() });
            }
            Err(_) => bad.push(e.cidr.clone()),
        }
    }
    (out, bad)
}

/// A block object with these entries.
pub fn object(block: &IpNet, resource_version: Option<&str>, entries: &BTreeMap<IpNet, Holder>) -> PodCIDRBlock {
    let allocations = entries
        .iter()
        .map(|(c, h)| BlockEntry {
            cidr: c.to_string(),
            node: h.node.clone(),
            uid: h.uid.clone(),
            pool: h.pool.clone(),
        })
        .collect();
    let mut o = PodCIDRBlock::new(&block_name(block), PodCIDRBlockSpec { cidr: block.to_string(), allocations });
    o.metadata.resource_version = resource_version.map(String::from);
    o
}

/// The CRD manifest (`conf/operator/record-crd.yaml`).
pub fn crd_yaml() -> String {
    let crd = PodCIDRBlock::crd();
    let mut out = String::from(
        "# Generated by podcidr-operator (src/operator/record.rs): the allocation record, one\n\
         # object per block of node CIDRs. See docs/operator.md.\n",
    );
    out.push_str(&serde_saphyr::to_string(&crd).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_block_holds_256_slices_and_is_named_as_a_dns_subdomain() {
        assert_eq!(block_of(&net("10.244.3.0/24")), net("10.244.0.0/16"));
        assert_eq!(block_of(&net("10.244.3.16/28")), net("10.244.0.0/20"));
        assert_eq!(block_of(&net("fd00:10:0:7::/64")), net("fd00:10::/56"));
        assert_eq!(block_of(&net("10.0.0.0/4")), net("0.0.0.0/0"));
        assert_eq!(block_name(&net("10.244.0.0/16")), "v4-10.244.0.0-16");
        assert_eq!(block_name(&net("fd00:10::/56")), "v6-fd00-10---56");
        assert_eq!(block_name(&net("::/0")), "v6----0");
    }

    #[test]
    fn entries_round_trip_through_the_object() {
        let mut e = BTreeMap::new();
        e.insert(net("10.244.3.0/24"), Holder { node: "a".into(), uid: "u".into(), pool: "default".into() });
        let o = object(&net("10.244.0.0/16"), Some("7"), &e);
        assert_eq!(o.metadata.name.as_deref(), Some("v4-10.244.0.0-16"));
        assert_eq!(o.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(entries(&o), (e, vec![]));
    }
}
