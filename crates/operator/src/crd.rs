//! The `PodCIDRPool` custom resource (issue 12): group `podcidr.io`, version `v1alpha1`,
//! cluster-scoped, with a status subresource.
//!
//! ```yaml
//! apiVersion: podcidr.io/v1alpha1
//! kind: PodCIDRPool
//! metadata: {name: zone-a}
//! spec:
//!   nodeSelector: {matchLabels: {topology.kubernetes.io/zone: a}}   # absent: every node
//!   ipv4: {cidrs: [10.0.0.0/16], maskSize: 24}
//!   ipv6: {cidrs: ["fd00:10::/56"], maskSize: 64}
//! ```
//!
//! The CRD manifest is generated from these types: [`crd_yaml`] (what `podcidr-operator crd`
//! prints; [`print_crd`] does the printing) is `conf/operator/crd.yaml`.
//!
//! CEL rules (`x-kubernetes-validations`) refuse at the API what it can check, each with a
//! message saying what to do instead. Two sets, by what the API server's CEL knows:
//! - every server with CEL on (1.25+; recorded on v1.26.5 and v1.36.2): `maskSize` immutable, a
//!   CIDR of the right family, `maskSize` at least each CIDR's prefix length, at least one
//!   family, a well-formed label selector;
//! - 1.31+ only (the Kubernetes `cidr()` CEL library; a server without it refuses the whole
//!   CRD): no host bits set, no two CIDRs of one pool overlapping.
//!
//! [`crd_yaml`] has both ([`CelRules::Full`], needs Kubernetes 1.31+);
//! [`crd_yaml_for`]`(`[`CelRules::Portable`]`)` leaves out the second set and is
//! `conf/operator/crd-pre-1.31.yaml`. Overlap between pools is never expressible in CEL (a
//! rule sees one object). The rules and their CEL forms are stated once in [`super::rules`];
//! the operator checks everything again ([`PodCIDRPoolSpec::problems`]) and reports a refused
//! pool in its `Ready` condition.
//!
//! Status counts are node CIDRs (slices). They are integers in the API (int64), so they
//! saturate at `i64::MAX` ([`PoolFamilyStatus::new`]): only IPv6 pools with more than 2^63
//! slices (`::/0` cut into /64s) are affected.

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::allocator::Family;
use super::rules::{self, Broken};

/// The annotation the operator writes on a Node it gave CIDRs: the pool's name.
pub use podcidr_contract::POOL_ANNOTATION;
/// The annotation the operator writes on a PodCIDRPool: the spec it last accepted (JSON), kept
/// in force after a restart when the stored spec is refused.
pub const ACCEPTED_ANNOTATION: &str = "podcidr.io/accepted-spec";
/// The finalizer that holds a deleted pool until no node holds a CIDR of it.
pub const DRAIN_FINALIZER: &str = "podcidr.io/drain";
/// The pool made from the operator's `--cluster-pool-*` flags.
pub const DEFAULT_POOL: &str = "default";

/// Condition types of `status.conditions`.
pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_EXHAUSTED: &str = "Exhausted";
pub const CONDITION_DRAINING: &str = "Draining";

pub use super::rules::{
    MAX_CIDRS, MSG_HOST_BITS, MSG_MASK_IMMUTABLE, MSG_MASK_SHORTER, MSG_NEED_FAMILY, MSG_OVERLAP, MSG_V4_FAMILY,
    MSG_V6_FAMILY,
};
pub const MSG_SELECTOR_VALUES: &str = "matchExpressions: In and NotIn need values, Exists and DoesNotExist take none";

/// Pods' CIDRs cut for the nodes a selector picks.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "podcidr.io",
    version = "v1alpha1",
    kind = "PodCIDRPool",
    plural = "podcidrpools",
    doc = "A pool of CIDRs cut into per-node pod CIDRs for the nodes its selector picks.",
    status = "PodCIDRPoolStatus",
    printcolumn = r#"{"name":"IPv4","type":"string","description":"IPv4 CIDRs the pool cuts","jsonPath":".spec.ipv4.cidrs"}"#,
    printcolumn = r#"{"name":"IPv6","type":"string","description":"IPv6 CIDRs the pool cuts","jsonPath":".spec.ipv6.cidrs"}"#,
    printcolumn = r#"{"name":"Allocated","type":"integer","description":"Nodes holding CIDRs of the pool","jsonPath":".status.allocated"}"#,
    printcolumn = r#"{"name":"Free","type":"integer","description":"More nodes the pool can serve","jsonPath":".status.free"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = super::rules::spec_cel()))]
pub struct PodCIDRPoolSpec {
    /// The nodes this pool serves (matchLabels and matchExpressions, as in a Deployment).
    /// Absent: every node, after every pool with a selector that matches. Among matching
    /// pools, the one with the most requirements wins; on a tie, the first name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub node_selector: Option<LabelSelector>,
    /// IPv4 CIDRs and the size of each node's CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ipv4_family_schema")]
    pub ipv4: Option<PoolFamilySpec>,
    /// IPv6 CIDRs and the size of each node's CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ipv6_family_schema")]
    pub ipv6: Option<PoolFamilySpec>,
}

/// One family of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolFamilySpec {
    /// CIDRs, used in this order. Removing one that nodes still hold makes it drain.
    pub cidrs: Vec<String>,
    /// Prefix length of each node's CIDR (24 gives each node a /24). Immutable.
    pub mask_size: u8,
}

/// What the operator reports about a pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCIDRPoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "family_status_schema")]
    pub ipv4: Option<PoolFamilyStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "family_status_schema")]
    pub ipv6: Option<PoolFamilyStatus>,
    /// Nodes holding CIDRs of this pool (the larger of the families' allocated + draining).
    #[serde(default)]
    #[schemars(schema_with = "count_schema")]
    pub allocated: u64,
    /// How many more nodes the pool can serve now (the smaller of the families' free).
    #[serde(default)]
    #[schemars(schema_with = "count_schema")]
    pub free: u64,
    /// `Ready`, `Exhausted`, `Draining`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Counts of one family, in node CIDRs. Saturate at `i64::MAX` (the API's integers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolFamilyStatus {
    /// Node CIDRs the family's current CIDRs hold in all.
    pub capacity: u64,
    /// Node CIDRs of the current CIDRs held by nodes.
    pub allocated: u64,
    /// Node CIDRs of the current CIDRs nobody holds.
    pub free: u64,
    /// Node CIDRs held by nodes in CIDRs removed from the pool (draining).
    pub draining: u64,
}

fn saturate(n: u128) -> u64 {
    u64::try_from(n.min(i64::MAX as u128)).unwrap_or(i64::MAX as u64)
}

impl PoolFamilyStatus {
    /// From the allocator's `PoolStats` counts, saturating.
    pub fn new(capacity: u128, allocated: u128, free: u128, draining: u128) -> Self {
        Self {
            capacity: saturate(capacity),
            allocated: saturate(allocated),
            free: saturate(free),
            draining: saturate(draining),
        }
    }
}

impl PodCIDRPoolStatus {
    /// A status with the summary fields (`allocated`, `free`, shown by `kubectl get`) computed
    /// from the families.
    pub fn new(ipv4: Option<PoolFamilyStatus>, ipv6: Option<PoolFamilyStatus>, conditions: Vec<Condition>) -> Self {
        let families = || ipv4.iter().chain(ipv6.iter());
        let allocated = families().map(|f| f.allocated.saturating_add(f.draining)).max().unwrap_or(0);
        let free = families().map(|f| f.free).min().unwrap_or(0);
        Self { ipv4, ipv6, allocated, free, conditions }
    }
}

/// Which CEL rules the CRD carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CelRules {
    /// Every rule; the API server needs the `cidr()` library (Kubernetes 1.31+).
    Full,
    /// Without the rules that need the `cidr()` library (host bits, overlap within a pool):
    /// accepted by every API server with CEL validation (1.25+).
    Portable,
}

/// The CRD, with every rule ([`CelRules::Full`]).
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    PodCIDRPool::crd()
}

/// The CRD manifest as YAML, as `podcidr-operator crd` prints it (= `conf/operator/crd.yaml`).
pub fn crd_yaml() -> String {
    crd_yaml_for(CelRules::Full)
}

/// The CRD manifest as YAML with the given rule set.
pub fn crd_yaml_for(rules: CelRules) -> String {
    let mut value = serde_json::to_value(crd()).unwrap_or(Value::Null);
    let header = match rules {
        CelRules::Full => {
            "# PodCIDRPool CRD, generated by `podcidr-operator crd`: do not edit.\n\
             # Needs Kubernetes 1.31+ (CEL cidr library); for 1.25-1.30 use crd-pre-1.31.yaml.\n"
        }
        CelRules::Portable => {
            strip_cidr_library_rules(&mut value);
            "# PodCIDRPool CRD for Kubernetes 1.25-1.30, generated from the same types as crd.yaml\n\
             # without the rules that need the CEL cidr library (host bits, overlap within a pool);\n\
             # the operator still checks those and reports them in the pool's Ready condition.\n"
        }
    };
    // Serializing a JSON value to YAML cannot fail; fall back to JSON (valid YAML) anyway.
    let body = serde_saphyr::to_string(&value).unwrap_or_else(|_| value.to_string());
    format!("{header}---\n{body}")
}

/// `podcidr-operator crd`: print the CRD YAML to stdout.
pub fn print_crd() -> std::process::ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(crd_yaml().as_bytes()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podcidr-operator crd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn uses_cidr_library(rule: &Value) -> bool {
    rule.get("rule").and_then(Value::as_str).is_some_and(|r| r.contains("cidr(") || r.contains("isCIDR("))
}

fn strip_cidr_library_rules(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                rules.retain(|r| !uses_cidr_library(r));
                if rules.is_empty() {
                    map.remove("x-kubernetes-validations");
                }
            }
            map.values_mut().for_each(strip_cidr_library_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_cidr_library_rules),
        _ => {}
    }
}

fn schema(value: Value) -> Schema {
    Schema::try_from(value).unwrap_or_default()
}

/// A LabelSelector, as the API's own types describe it (atomic: replaced whole on apply).
fn label_selector_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({
        "description": "The nodes this pool serves. Absent: every node, after the pools with a matching selector.",
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {
                "type": "object",
                "additionalProperties": {"type": "string"},
            },
            "matchExpressions": {
                "type": "array",
                "x-kubernetes-list-type": "atomic",
                "maxItems": 32,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": 317},
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {
                            "type": "array",
                            "x-kubernetes-list-type": "atomic",
                            "maxItems": 256,
                            "items": {"type": "string", "maxLength": 63},
                        },
                    },
                    "x-kubernetes-validations": [{
                        "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
                        "message": MSG_SELECTOR_VALUES,
                    }],
                },
            },
        },
    }))
}

/// A pool family; `v6` picks the address width, the CIDR pattern and the messages. The rules
/// come from [`super::rules`].
fn family_schema(v6: bool) -> Value {
    let (family, example) = if v6 { (Family::V6, "fd00:10::/56") } else { (Family::V4, "10.244.0.0/16") };
    let (min_mask, max_mask, max_cidrs) = rules::family_bounds(family);
    let name = if v6 { "IPv6" } else { "IPv4" };
    json!({
        "description": format!("{name} CIDRs and the size of each node's CIDR."),
        "type": "object",
        "required": ["cidrs", "maskSize"],
        "properties": {
            "cidrs": {
                "description": format!("{name} CIDRs such as {example}, used in this order. Removing one that nodes hold makes it drain."),
                "type": "array",
                "minItems": 1,
                "maxItems": max_cidrs,
                "x-kubernetes-list-type": "atomic",
                "items": {"type": "string", "format": "cidr", "maxLength": 43},
            },
            "maskSize": {
                "description": "Prefix length of each node's CIDR. Immutable.",
                "type": "integer",
                "minimum": min_mask,
                "maximum": max_mask,
            },
        },
        "x-kubernetes-validations": rules::family_cel(family),
    })
}

fn ipv4_family_schema(_: &mut SchemaGenerator) -> Schema {
    schema(family_schema(false))
}

fn ipv6_family_schema(_: &mut SchemaGenerator) -> Schema {
    schema(family_schema(true))
}

fn count_json() -> Value {
    json!({"type": "integer", "format": "int64", "minimum": 0})
}

fn count_schema(_: &mut SchemaGenerator) -> Schema {
    schema(count_json())
}

fn family_status_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({
        "type": "object",
        "description": "Counts in node CIDRs, saturating at 2^63-1.",
        "required": ["capacity", "allocated", "free", "draining"],
        "properties": {
            "capacity": count_json(),
            "allocated": count_json(),
            "free": count_json(),
            "draining": count_json(),
        },
    }))
}

/// `metav1.Condition`, a list keyed by `type`.
fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    schema(json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "maxLength": 316},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "reason": {"type": "string", "maxLength": 1024},
                "message": {"type": "string", "maxLength": 32768},
            },
        },
    }))
}

impl PoolFamilySpec {
    /// The CIDRs that parse, in order (what the allocator gets once [`PodCIDRPoolSpec::problems`]
    /// found nothing).
    pub fn networks(&self) -> Vec<IpNet> {
        self.cidrs.iter().filter_map(|c| c.parse().ok()).collect()
    }

    fn problems(&self, family: Family, out: &mut Vec<String>) {
        let (nets, mut broken) = rules::parse(family, &self.cidrs);
        broken.extend(rules::family(family, &nets, self.mask_size));
        // A CIDR that does not parse is not counted as missing.
        if !nets.is_empty() || self.cidrs.is_empty() {
            out.extend(broken.iter().map(ToString::to_string));
        } else {
            out.extend(broken.iter().filter(|b| !matches!(b, Broken::NoCidrs(_))).map(ToString::to_string));
        }
    }
}

impl PodCIDRPoolSpec {
    /// What the CRD's CEL rules (both sets) and schema would refuse in this spec, one line per
    /// problem (`ipv4: <rule message>`), for an API server that did not check them. Overlap
    /// with other pools and `maskSize` changes need more than one object: the allocator's
    /// validation checks those. Empty: the spec is fine on its own.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ipv4.is_none() && self.ipv6.is_none() {
            out.push(Broken::NeedFamily.to_string());
        }
        if let Some(f) = &self.ipv4 {
            f.problems(Family::V4, &mut out);
        }
        if let Some(f) = &self.ipv6 {
            f.problems(Family::V6, &mut out);
        }
        if let Some(sel) = &self.node_selector {
            for e in sel.match_expressions.iter().flatten() {
                let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
                let wants_values = matches!(e.operator.as_str(), "In" | "NotIn");
                if !matches!(e.operator.as_str(), "In" | "NotIn" | "Exists" | "DoesNotExist") {
                    out.push(format!("nodeSelector: operator {:?}: use In, NotIn, Exists or DoesNotExist", e.operator));
                } else if has_values != wants_values {
                    out.push(format!("nodeSelector: {MSG_SELECTOR_VALUES}"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    fn fam(cidrs: &[&str], mask: u8) -> Option<PoolFamilySpec> {
        Some(PoolFamilySpec { cidrs: cidrs.iter().map(|c| c.to_string()).collect(), mask_size: mask })
    }

    fn rules_of(v: &Value) -> Vec<(String, String)> {
        v["x-kubernetes-validations"]
            .as_array()
            .map(|a| {
                a.iter().map(|r| (r["rule"].as_str().unwrap().into(), r["message"].as_str().unwrap().into())).collect()
            })
            .unwrap_or_default()
    }

    fn version_schema(yaml: &str) -> Value {
        let v: Value = serde_saphyr::from_str(yaml).expect("the CRD YAML parses");
        v["spec"]["versions"][0].clone()
    }

    #[test]
    fn crd_names_scope_subresource_and_columns() {
        let v: Value = serde_saphyr::from_str(&crd_yaml()).unwrap();
        assert_eq!(v["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(v["metadata"]["name"], "podcidrpools.podcidr.io");
        assert_eq!(v["spec"]["group"], "podcidr.io");
        assert_eq!(v["spec"]["scope"], "Cluster");
        assert_eq!(v["spec"]["names"]["kind"], "PodCIDRPool");
        let ver = &v["spec"]["versions"][0];
        assert_eq!(ver["name"], "v1alpha1");
        assert_eq!(ver["subresources"]["status"], json!({}));
        let columns: Vec<String> = ver["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_ascii_uppercase())
            .collect();
        // NAME is always the first column kubectl shows.
        assert_eq!(columns, ["IPV4", "IPV6", "ALLOCATED", "FREE", "READY", "AGE"]);
    }

    #[test]
    fn yaml_round_trips_to_the_generated_crd() {
        let from_yaml: Value = serde_saphyr::from_str(&crd_yaml()).unwrap();
        assert_eq!(from_yaml, serde_json::to_value(crd()).unwrap());
    }

    #[test]
    fn family_rules_full_and_portable() {
        let full = version_schema(&crd_yaml());
        let spec = &full["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(rules_of(spec), [("has(self.ipv4) || has(self.ipv6)".into(), MSG_NEED_FAMILY.into())]);
        let v4 = &spec["properties"]["ipv4"];
        let rules = rules_of(v4);
        assert!(rules.contains(&("self.maskSize == oldSelf.maskSize".into(), MSG_MASK_IMMUTABLE.into())));
        let messages: Vec<&str> = rules.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(messages, [MSG_MASK_IMMUTABLE, MSG_V4_FAMILY, MSG_MASK_SHORTER, MSG_HOST_BITS, MSG_OVERLAP]);
        assert_eq!(v4["properties"]["maskSize"]["maximum"].as_f64(), Some(32.0));
        assert_eq!(spec["properties"]["ipv6"]["properties"]["maskSize"]["maximum"].as_f64(), Some(128.0));

        let portable = version_schema(&crd_yaml_for(CelRules::Portable));
        let spec = &portable["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let messages: Vec<String> = rules_of(&spec["properties"]["ipv6"]).into_iter().map(|(_, m)| m).collect();
        assert_eq!(messages, [MSG_MASK_IMMUTABLE, MSG_V6_FAMILY, MSG_MASK_SHORTER]);
        assert!(!crd_yaml_for(CelRules::Portable).contains("cidr("));
        // The portable rules are exactly the rules accepted by the recorded v1.26.5 server's
        // CEL (no cidr library); the transition rule is the one it was recorded enforcing.
        assert!(
            rules_of(&spec["properties"]["ipv4"]).iter().all(|(r, _)| !r.contains("cidr(") && !r.contains("isCIDR("))
        );
    }

    #[test]
    fn spec_serializes_as_the_issue_writes_it() {
        let spec = PodCIDRPoolSpec {
            node_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("topology.kubernetes.io/zone".into(), "a".into())])),
                match_expressions: None,
            }),
            ipv4: fam(&["10.0.0.0/16"], 24),
            ipv6: fam(&["fd00:10::/56"], 64),
        };
        let v = serde_json::to_value(PodCIDRPool::new("zone-a", spec.clone())).unwrap();
        assert_eq!(v["apiVersion"], "podcidr.io/v1alpha1");
        assert_eq!(
            v["spec"],
            json!({"nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "a"}},
                   "ipv4": {"cidrs": ["10.0.0.0/16"], "maskSize": 24},
                   "ipv6": {"cidrs": ["fd00:10::/56"], "maskSize": 64}})
        );
        assert!(spec.problems().is_empty(), "{:?}", spec.problems());
        let back: PodCIDRPool = serde_json::from_value(v).unwrap();
        assert_eq!(back.spec, spec);
    }

    #[test]
    fn problems_mirror_the_rules() {
        let p = |ipv4, ipv6| PodCIDRPoolSpec { node_selector: None, ipv4, ipv6 }.problems();
        // The wording is the rules module's (tested there); here: each rule is found, per family.
        assert_eq!(p(None, None), [MSG_NEED_FAMILY]);
        let one = |v: Vec<String>, family: &str, msg: &str| {
            assert_eq!(v.len(), 1, "{v:?}");
            assert!(v[0].starts_with(&format!("{family}: {msg}")), "{v:?}");
        };
        one(p(fam(&["10.244.1.0/16"], 24), None), "ipv4", MSG_HOST_BITS);
        one(p(fam(&["10.244.0.0/16"], 12), None), "ipv4", MSG_MASK_SHORTER);
        one(p(fam(&["fd00::/8"], 24), None), "ipv4", MSG_V4_FAMILY);
        one(p(None, fam(&["10.0.0.0/8"], 64)), "ipv6", MSG_V6_FAMILY);
        one(p(fam(&["10.0.0.0/8", "10.1.0.0/16"], 24), None), "ipv4", MSG_OVERLAP);
        one(p(fam(&["10.0.0.0/16", "10.0.0.0/16"], 24), None), "ipv4", MSG_OVERLAP);
        assert_eq!(p(fam(&["10.0.0.0/16", "10.1.0.0/16"], 24), None), Vec::<String>::new());
        assert_eq!(p(fam(&["nope"], 24), None), ["ipv4: \"nope\" is not a CIDR (address/prefix length)"]);
        assert_eq!(p(fam(&["10.0.0.0/8"], 33), None), ["ipv4: maskSize 33: must be between 1 and 32"]);
        assert_eq!(p(None, fam(&["2001:db8::/32"], 64)), Vec::<String>::new());

        let mut spec = PodCIDRPoolSpec { node_selector: None, ipv4: fam(&["10.0.0.0/8"], 24), ipv6: None };
        spec.node_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: None,
            }]),
        });
        assert_eq!(spec.problems(), [format!("nodeSelector: {MSG_SELECTOR_VALUES}")]);
    }

    #[test]
    fn status_summary_and_saturation() {
        let v4 = PoolFamilyStatus::new(256, 37, 219, 0);
        let v6 = PoolFamilyStatus::new(1 << 80, 36, (1 << 80) - 36, 1);
        assert_eq!(v6.capacity, i64::MAX as u64);
        let s = PodCIDRPoolStatus::new(Some(v4), Some(v6), vec![]);
        assert_eq!((s.allocated, s.free), (37, 219));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["ipv6"]["capacity"], json!(i64::MAX));
        assert_eq!(v["ipv4"], json!({"capacity": 256, "allocated": 37, "free": 219, "draining": 0}));
        assert_eq!(PodCIDRPoolStatus::new(None, None, vec![]).free, 0);
    }
}
