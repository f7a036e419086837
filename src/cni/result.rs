//! Results in the shape of each spec version.

use super::version::SpecVersion;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Value, json};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with the subnet's prefix length.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpamResult {
    pub ips: Vec<IpConfig>,
    /// Passed through from the config as written.
    pub routes: Vec<Value>,
    pub dns: Option<Dns>,
}

impl IpamResult {
    /// 0.3.x and 0.4.0 carry `ips[].version`; 1.x do not. `dns` only when configured.
    pub fn to_json(&self, version: SpecVersion) -> String {
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = json!({ "address": ip.address.to_string() });
                if version.ips_carry_version() {
                    o["version"] = if ip.address.addr().is_ipv4() { "4" } else { "6" }.into();
                }
                if let Some(gw) = ip.gateway {
                    o["gateway"] = gw.to_string().into();
                }
                o
            })
            .collect();
        let mut out = json!({ "cniVersion": version.as_str(), "ips": ips });
        if !self.routes.is_empty() {
            out["routes"] = Value::Array(self.routes.clone());
        }
        if let Some(dns) = &self.dns {
            out["dns"] = json!(dns);
        }
        out.to_string()
    }
}

/// The `ips[].address` values of a `prevResult`, for CHECK.
pub fn prev_result_ips(prev: &Value) -> Option<Vec<IpNet>> {
    prev.get("ips")?.as_array()?.iter().map(|ip| ip.get("address")?.as_str()?.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IpamResult {
        IpamResult {
            ips: vec![IpConfig { address: "10.1.0.5/24".parse().unwrap(), gateway: Some("10.1.0.1".parse().unwrap()) }],
            routes: vec![json!({"dst": "0.0.0.0/0"})],
            dns: None,
        }
    }

    #[test]
    fn old_versions_carry_ip_version_and_new_ones_do_not() {
        let old: Value = serde_json::from_str(&sample().to_json(SpecVersion::V031)).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.3.1");
        let new: Value = serde_json::from_str(&sample().to_json(SpecVersion::V110)).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["address"], "10.1.0.5/24");
        assert!(new.get("dns").is_none());
        assert_eq!(new["routes"][0]["dst"], "0.0.0.0/0");
    }
}
