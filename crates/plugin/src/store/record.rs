//! What the store keeps on disk: one record per leased address, one index entry per owner.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `leases/<address>`: who holds the address, readable with `cat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub ip: IpAddr,
    /// Index of the range set the address came from (one per interface family).
    pub range_set: usize,
    pub subnet: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podUID")]
    pub pod_uid: Option<String>,
    #[serde(default, rename = "bootID")]
    pub boot_id: String,
    /// RFC 3339, UTC.
    #[serde(default)]
    pub created: String,
}

impl LeaseRecord {
    pub fn owned_by(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }

    /// `namespace/name` when the runtime named the pod, else the container ID.
    pub fn owner_label(&self) -> String {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name.clone(),
            _ => self.container_id.clone(),
        }
    }
}

/// `owners/<containerID>:<ifname>`: the addresses one attachment holds, so that DEL and CHECK
/// find them without reading every lease. In place before the lease records it names; it is a
/// hard link to the first of them ([`OnDisk`]), whose other fields it ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerIndex {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub ips: Vec<IpAddr>,
}

/// A lease record as written: the record and every address of its attachment, so that the
/// file can also serve as the attachment's [`OwnerIndex`].
#[derive(Serialize)]
pub(super) struct OnDisk<'a> {
    #[serde(flatten)]
    pub record: &'a LeaseRecord,
    pub ips: &'a [IpAddr],
}
