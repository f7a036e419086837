//! A Kubernetes label selector (`matchLabels` + `matchExpressions`), matched against a Node's
//! labels to choose its pool. Pure code: the only Kubernetes type is the API's `LabelSelector`,
//! converted from.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::fmt;

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector. Every entry must match (AND); an empty selector matches every node, as in
/// Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl Selector {
    /// A selector of `matchLabels` only.
    pub fn labels<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Selector {
            match_labels: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// How specific the selector is: `matchLabels` entries plus `matchExpressions` entries.
    /// The pool with the most wins.
    pub fn requirements(&self) -> usize {
        self.match_labels.len() + self.match_expressions.len()
    }
}

/// A `LabelSelector` that Kubernetes itself would refuse (unknown operator, values where none
/// may be, or none where some must be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

impl TryFrom<&LabelSelector> for Selector {
    type Error = SelectorError;

    fn try_from(ls: &LabelSelector) -> Result<Self, SelectorError> {
        let mut match_expressions = Vec::new();
        for (i, e) in ls.match_expressions.iter().flatten().enumerate() {
            let values = e.values.clone().unwrap_or_default();
            let operator = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "nodeSelector.matchExpressions[{i}]: unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                    )));
                }
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(SelectorError(format!(
                        "nodeSelector.matchExpressions[{i}]: {} needs at least one value",
                        e.operator
                    )));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(SelectorError(format!(
                        "nodeSelector.matchExpressions[{i}]: {} takes no values: remove them",
                        e.operator
                    )));
                }
                _ => {}
            }
            if e.key.is_empty() {
                return Err(SelectorError(format!("nodeSelector.matchExpressions[{i}]: the key is empty")));
            }
            match_expressions.push(Requirement { key: e.key.clone(), operator, values });
        }
        Ok(Selector { match_labels: ls.match_labels.clone().unwrap_or_default(), match_expressions })
    }
}

impl TryFrom<LabelSelector> for Selector {
    type Error = SelectorError;

    fn try_from(ls: LabelSelector) -> Result<Self, SelectorError> {
        Selector::try_from(&ls)
    }
}

/// kubectl's form: `zone=a,tier in (x,y),!gpu,ssd`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let ls = LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            match_expressions: Some(vec![
                req("tier", "In", Some(&["x", "y"])),
                req("pool", "NotIn", Some(&["old"])),
                req("ssd", "Exists", None),
                req("gpu", "DoesNotExist", Some(&[])),
            ]),
        };
        let s = Selector::try_from(&ls).unwrap();
        assert_eq!(s.requirements(), 5);
        assert_eq!(s.to_string(), "zone=a,tier in (x,y),pool notin (old),ssd,!gpu");
        let good = labels(&[("zone", "a"), ("tier", "y"), ("ssd", "")]);
        assert!(s.matches(&good));
        let mut l = good.clone();
        l.insert("pool".into(), "old".into());
        assert!(!s.matches(&l), "NotIn with the value present");
        let mut l = good.clone();
        l.insert("pool".into(), "new".into());
        assert!(s.matches(&l), "NotIn with another value");
        let mut l = good.clone();
        l.insert("gpu".into(), "1".into());
        assert!(!s.matches(&l), "DoesNotExist with the label present");
        let mut l = good.clone();
        l.remove("ssd");
        assert!(!s.matches(&l), "Exists without the label");
        let mut l = good.clone();
        l.remove("tier");
        assert!(!s.matches(&l), "In without the label");
        let mut l = good;
        l.insert("zone".into(), "b".into());
        assert!(!s.matches(&l), "matchLabels with another value");
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::try_from(&LabelSelector::default()).unwrap();
        assert_eq!(s.requirements(), 0);
        assert!(s.matches(&BTreeMap::new()));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn selectors_kubernetes_refuses_are_refused() {
        for (r, want) in [
            (req("a", "Gt", Some(&["1"])), "unknown operator \"Gt\""),
            (req("a", "In", None), "In needs at least one value"),
            (req("a", "NotIn", Some(&[])), "NotIn needs at least one value"),
            (req("a", "Exists", Some(&["x"])), "Exists takes no values"),
            (req("", "Exists", None), "the key is empty"),
        ] {
            let ls = LabelSelector { match_labels: None, match_expressions: Some(vec![r]) };
            let err = Selector::try_from(&ls).unwrap_err();
            assert!(err.0.contains(want), "{err} should say {want}");
        }
    }
}
