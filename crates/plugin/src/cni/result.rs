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
        if version.legacy_result() {
            return self.to_legacy_json(version);
        }
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

impl IpamResult {
    /// The 0.1.0/0.2.0 shape, as libcni converts a newer result (and so as host-local prints
    /// it): the first address of each family as `ip4`/`ip6` `{ip, gateway, routes}`, each route
    /// under the family of its `dst`, and `dns` always present.
    fn to_legacy_json(&self, version: SpecVersion) -> String {
        let family = |v4: bool| -> Option<Value> {
            let ip = self.ips.iter().find(|ip| ip.address.addr().is_ipv4() == v4)?;
            let mut o = json!({ "ip": ip.address.to_string() });
            if let Some(gw) = ip.gateway {
                o["gateway"] = gw.to_string().into();
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| {
                    let dst = r.get("dst").and_then(Value::as_str).and_then(|d| d.parse::<IpNet>().ok());
                    dst.is_some_and(|d| d.addr().is_ipv4() == v4)
                })
                .cloned()
                .collect();
            if !routes.is_empty() {
                o["routes"] = Value::Array(routes);
            }
            Some(o)
        };
        let mut out = json!({ "cniVersion": version.as_str() });
        if let Some(ip4) = family(true) {
            out["ip4"] = ip4;
        }
        if let Some(ip6) = family(false) {
            out["ip6"] = ip6;
        }
        out["dns"] = json!(self.dns.clone().unwrap_or_default());
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

    #[test]
    fn legacy_versions_have_ip4_and_ip6_objects() {
        let mut r = sample();
        r.ips.push(IpConfig { address: "10.2.0.5/24".parse().unwrap(), gateway: None });
        r.ips.push(IpConfig { address: "fd00::5/64".parse().unwrap(), gateway: Some("fd00::1".parse().unwrap()) });
        r.routes.push(json!({"dst": "::/0", "gw": "fd00::1"}));
        for v in [SpecVersion::V010, SpecVersion::V020] {
            let out: Value = serde_json::from_str(&r.to_json(v)).unwrap();
            assert_eq!(
                out,
                json!({
                    "cniVersion": v.as_str(),
                    "ip4": { "ip": "10.1.0.5/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}] },
                    "ip6": { "ip": "fd00::5/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}] },
                    "dns": {}
                })
            );
        }
    }
}
