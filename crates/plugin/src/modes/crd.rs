//! `crd`: the CIDRs an operator writes into a custom resource named after the node. The
//! defaults are Cilium's cluster-pool IPAM: `CiliumNode` (cilium.io/v2, plural `ciliumnodes`,
//! cluster-scoped) with `spec.ipam.podCIDRs`.

use super::api::{self, ApiConf, Target};
use super::source::{Failure, Observed, Source};
use crate::cni::config::Request;
use crate::cni::error::{CniError, CniResult};
use kube::api::ApiResource;
use serde_json::Value;

use podcidr_contract::CILIUM_NODE as DEFAULT;

pub struct CrdSource {
    api: ApiConf,
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    path: Vec<String>,
    path_text: String,
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `spec.ipam.podCIDRs` → `[spec, ipam, podCIDRs]`; `\.` is a dot inside a key, for annotation
/// keys such as `metadata.annotations.example\.com/pod-cidrs`.
pub fn parse_path(text: &str) -> Option<Vec<String>> {
    let mut keys = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => keys.last_mut()?.push(chars.next()?),
            '.' => keys.push(String::new()),
            c => keys.last_mut()?.push(c),
        }
    }
    keys.iter().all(|k| !k.is_empty()).then_some(keys)
}

/// The CIDRs at `path` in `obj`: a list of strings, or one string (comma-separated for dual stack).
pub fn cidrs_at(obj: &Value, path: &[String]) -> Option<Result<Vec<String>, String>> {
    let value = path.iter().try_fold(obj, |v, key| v.get(key))?;
    Some(match value {
        Value::String(s) => Ok(s.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(String::from).ok_or_else(|| format!("holds {i}, which is not a string")))
            .collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(format!("is {other}, not a list of CIDRs")),
    })
}

impl CrdSource {
    pub fn new(req: &Request, node: &str, node_from: &str) -> CniResult<CrdSource> {
        let crd = req.ipam.crd.clone().unwrap_or_default();
        let api_version = crd.api_version.unwrap_or_else(|| DEFAULT.api_version());
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        if !(group.is_empty() || group.split('.').all(is_label)) || !is_label(&version) {
            return Err(CniError::config(
                "ipam.crd.apiVersion",
                format!("{api_version:?} is not an API version such as cilium.io/v2"),
            ));
        }
        let plural = crd.plural.unwrap_or_else(|| DEFAULT.plural.into());
        if !is_label(&plural) {
            return Err(CniError::config(
                "ipam.crd.plural",
                format!("{plural:?} is not a resource name such as ciliumnodes"),
            ));
        }
        if let Some(ns) = &crd.namespace
            && !is_label(ns)
        {
            return Err(CniError::config("ipam.crd.namespace", format!("{ns:?} is not a namespace name")));
        }
        let path_text = crd.pod_cidrs_path.unwrap_or_else(|| DEFAULT.pod_cidrs_path.into());
        let path = parse_path(&path_text).ok_or_else(|| {
            CniError::config(
                "ipam.crd.podCIDRsPath",
                format!("{path_text:?} is not a dot-separated path such as spec.ipam.podCIDRs"),
            )
        })?;
        api::check_name("ipam.nodeName", node_from, node)?;
        let resource = ApiResource { group, version, api_version, kind: String::new(), plural };
        Ok(CrdSource {
            api: ApiConf::from_request(req)?,
            resource,
            namespace: crd.namespace,
            name: node.to_string(),
            path,
            path_text,
        })
    }

    fn what(&self) -> String {
        let r = &self.resource;
        let group = if r.group.is_empty() { String::new() } else { format!(".{}", r.group) };
        let ns = self.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
        format!("{}{group}/{} {ns}{}", r.plural, r.version, self.name)
    }
}

impl Source for CrdSource {
    fn query(&self) -> String {
        format!("GET {} .{}", self.what(), self.path_text)
    }

    fn fetch(&self) -> Result<Observed, Failure> {
        let what = self.what();
        let group = if self.resource.group.is_empty() { "\"\" (core)" } else { &self.resource.group };
        let rbac = format!("get on {} in API group {group}", self.resource.plural);
        let target = Target { what: &what, rbac: &rbac };
        let obj = api::get_object(&self.api, &target, &self.resource, self.namespace.as_deref(), &self.name)?;
        let doc = serde_json::to_value(&obj).unwrap_or_default();
        let cidrs = match cidrs_at(&doc, &self.path) {
            None => return Err(Failure::Missing(format!("{what} has no field {}", self.path_text))),
            Some(Err(e)) => return Err(Failure::Missing(format!("{what}: {} {e}", self.path_text))),
            Some(Ok(c)) if c.is_empty() => {
                return Err(Failure::Missing(format!("{what} has no pod CIDR yet ({} is empty)", self.path_text)));
            }
            Some(Ok(c)) => c,
        };
        Ok(Observed {
            object: what,
            uid: obj.metadata.uid,
            resource_version: obj.metadata.resource_version,
            cidrs,
            pool: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        assert_eq!(parse_path("spec.ipam.podCIDRs").unwrap(), ["spec", "ipam", "podCIDRs"]);
        assert_eq!(
            parse_path(r"metadata.annotations.example\.com/cidr").unwrap(),
            ["metadata", "annotations", "example.com/cidr"]
        );
        for bad in ["", ".a", "a.", "a..b", "a\\"] {
            assert!(parse_path(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn values() {
        let obj = json!({"spec": {"l": ["10.0.0.0/24", "fd00::/64"], "s": "10.0.0.0/24, fd00::/64", "n": 5, "x": [1]}});
        let p = |s: &str| parse_path(s).unwrap();
        assert_eq!(cidrs_at(&obj, &p("spec.l")).unwrap().unwrap(), ["10.0.0.0/24", "fd00::/64"]);
        assert_eq!(cidrs_at(&obj, &p("spec.s")).unwrap().unwrap(), ["10.0.0.0/24", "fd00::/64"]);
        assert!(cidrs_at(&obj, &p("spec.n")).unwrap().is_err());
        assert!(cidrs_at(&obj, &p("spec.x")).unwrap().is_err());
        assert!(cidrs_at(&obj, &p("spec.missing")).is_none());
        assert!(cidrs_at(&obj, &p("spec.l.deeper")).is_none());
    }
}
