//! The pool rules, each stated once: its check, its message, and, where the API server's CEL
//! can state it, its CEL form (the CRD's `x-kubernetes-validations` are generated from
//! [`family_cel`] and [`spec_cel`]). The CRD-spec check ([`super::crd::PodCIDRPoolSpec::problems`]),
//! the `--cluster-pool-*` flags and the allocator (overlap across pools, `maskSize` changes)
//! all call these, so a spec gets the same verdict and the same words wherever it is judged.

use std::fmt;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::allocator::{Family, FamilySpec, PoolSpec};

/// At most this many CIDRs per family: bounds the cost the API server estimates for the CEL
/// rules (the overlap rule is quadratic).
pub const MAX_CIDRS: usize = 64;

pub const MSG_MASK_IMMUTABLE: &str = "maskSize is immutable: to hand out another size, create a new PodCIDRPool (or add the other family) with new CIDRs and the new maskSize, then remove the old CIDRs here so they drain";
pub const MSG_NEED_FAMILY: &str =
    "a pool needs ipv4, ipv6 or both: add ipv4: {cidrs: [...], maskSize: 24} or ipv6: {cidrs: [...], maskSize: 64}";
pub const MSG_V4_FAMILY: &str = "ipv4.cidrs takes IPv4 CIDRs such as 10.244.0.0/16: put IPv6 CIDRs under ipv6";
pub const MSG_V6_FAMILY: &str = "ipv6.cidrs takes IPv6 CIDRs such as fd00:10::/56: put IPv4 CIDRs under ipv4";
pub const MSG_MASK_SHORTER: &str = "maskSize must be at least each CIDR's prefix length (a node's CIDR lies inside a pool CIDR): raise maskSize or list a larger CIDR, e.g. 10.244.0.0/16 with maskSize 24";
pub const MSG_HOST_BITS: &str =
    "a CIDR must be written as its network address, without host bits: e.g. 10.244.0.0/16, not 10.244.1.0/16";
pub const MSG_OVERLAP: &str =
    "the CIDRs of a pool must not overlap or repeat: keep only the larger one, or list disjoint CIDRs";
pub const MSG_POOL_OVERLAP: &str = "pools must not overlap: use a CIDR outside every other pool";
pub const MSG_HELD_MASK: &str = "nodes still hold CIDRs of this family with the old maskSize: re-add it with the old maskSize, or wait until those nodes are gone";

/// One rule a pool spec breaks, with what breaks it. `Display` is the one wording, used in
/// start-up errors, the pool's `Ready` condition and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    NeedFamily,
    MaskRange {
        family: Family,
        mask: u8,
    },
    NoCidrs(Family),
    TooManyCidrs(Family),
    NotCidr {
        family: Family,
        text: String,
    },
    WrongFamily {
        family: Family,
        cidr: IpNet,
    },
    MaskShorter {
        family: Family,
        cidr: IpNet,
        mask: u8,
    },
    HostBits {
        family: Family,
        cidr: IpNet,
    },
    Overlap {
        family: Family,
        a: IpNet,
        b: IpNet,
    },
    OtherPool {
        family: Family,
        cidr: IpNet,
        other: IpNet,
        pool: String,
    },
    MaskChanged {
        family: Family,
        old: u8,
        new: u8,
    },
    /// A family removed and added back with another mask while nodes hold slices of the old
    /// one (issue 19 point 7).
    HeldMask {
        family: Family,
        held: u8,
        new: u8,
    },
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::NeedFamily => f.write_str(MSG_NEED_FAMILY),
            Broken::MaskRange { family, mask } => {
                write!(f, "{family}: maskSize {mask}: must be between 1 and {}", family.width())
            }
            Broken::NoCidrs(family) => write!(f, "{family}: cidrs needs at least one CIDR"),
            Broken::TooManyCidrs(family) => {
                write!(f, "{family}: at most {MAX_CIDRS} CIDRs per family: use larger CIDRs")
            }
            Broken::NotCidr { family, text } => write!(f, "{family}: {text:?} is not a CIDR (address/prefix length)"),
            Broken::WrongFamily { family, cidr } => {
                let msg = if *family == Family::V4 { MSG_V4_FAMILY } else { MSG_V6_FAMILY };
                write!(f, "{family}: {msg} ({cidr})")
            }
            Broken::MaskShorter { family, cidr, mask } => {
                write!(f, "{family}: {MSG_MASK_SHORTER} ({cidr} with maskSize {mask})")
            }
            Broken::HostBits { family, cidr } => write!(f, "{family}: {MSG_HOST_BITS} ({cidr}: use {})", cidr.trunc()),
            Broken::Overlap { family, a, b } => write!(f, "{family}: {MSG_OVERLAP} ({a} and {b})"),
            Broken::OtherPool { family, cidr, other, pool } => {
                write!(f, "{family}: {cidr} overlaps {other} of pool {pool}: {MSG_POOL_OVERLAP}")
            }
            Broken::MaskChanged { family, old, new } => {
                write!(f, "{family}: {MSG_MASK_IMMUTABLE} ({new} was requested, the pool has {old})")
            }
            Broken::HeldMask { family, held, new } => {
                write!(f, "{family}: maskSize {new}: {MSG_HELD_MASK} ({held})")
            }
        }
    }
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// CIDRs as written (a PodCIDRPool's strings): the ones that parse, and one [`Broken::NotCidr`]
/// per one that does not.
pub fn parse(family: Family, texts: &[String]) -> (Vec<IpNet>, Vec<Broken>) {
    let mut nets = Vec::new();
    let mut broken = Vec::new();
    for t in texts {
        match t.trim().parse() {
            Ok(n) => nets.push(n),
            Err(_) => broken.push(Broken::NotCidr { family, text: t.clone() }),
        }
    }
    (nets, broken)
}

/// The rules of one family on its own.
pub fn family(family: Family, cidrs: &[IpNet], mask: u8) -> Vec<Broken> {
    let mut out = Vec::new();
    if mask == 0 || mask > family.width() {
        out.push(Broken::MaskRange { family, mask });
    }
    if cidrs.is_empty() {
        out.push(Broken::NoCidrs(family));
    }
    if cidrs.len() > MAX_CIDRS {
        out.push(Broken::TooManyCidrs(family));
    }
    for (i, &cidr) in cidrs.iter().enumerate() {
        if Family::of(&cidr) != family {
            out.push(Broken::WrongFamily { family, cidr });
            continue;
        }
        if cidr.prefix_len() > mask {
            out.push(Broken::MaskShorter { family, cidr, mask });
        }
        if cidr.trunc() != cidr {
            out.push(Broken::HostBits { family, cidr });
        }
        for &a in &cidrs[..i] {
            if Family::of(&a) == family && overlap(&a, &cidr) {
                out.push(Broken::Overlap { family, a, b: cidr });
            }
        }
    }
    out
}

/// The rules of one pool on its own.
pub fn pool(p: &PoolSpec) -> Vec<Broken> {
    let mut out = Vec::new();
    if p.ipv4.is_none() && p.ipv6.is_none() {
        out.push(Broken::NeedFamily);
    }
    for f in [Family::V4, Family::V6] {
        if let Some(FamilySpec { cidrs, mask }) = p.family(f) {
            out.extend(family(f, cidrs, *mask));
        }
    }
    out
}

/// Overlaps of `a`'s CIDRs with `b`'s (pools must not overlap; no CEL rule can see two objects).
pub fn across(a: &PoolSpec, b: &PoolSpec) -> Vec<Broken> {
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        let (Some(fa), Some(fb)) = (a.family(f), b.family(f)) else { continue };
        for cidr in &fa.cidrs {
            for other in &fb.cidrs {
                if Family::of(cidr) == Family::of(other) && overlap(cidr, other) {
                    out.push(Broken::OtherPool { family: f, cidr: *cidr, other: *other, pool: b.name.clone() });
                }
            }
        }
    }
    out
}

/// `maskSize` is immutable: a family both specs have keeps its mask (the CEL transition rule),
/// and a family added back keeps the mask of the slices nodes still hold of it (`held`: the
/// masks of the pool's draining CIDRs), which no CEL rule can see.
pub fn mask_change(
    old: Option<&PoolSpec>,
    new: &PoolSpec,
    held: impl IntoIterator<Item = (Family, u8)>,
) -> Vec<Broken> {
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        if let (Some(o), Some(n)) = (old.and_then(|o| o.family(f)), new.family(f))
            && o.mask != n.mask
        {
            out.push(Broken::MaskChanged { family: f, old: o.mask, new: n.mask });
        }
    }
    for (f, mask) in held {
        let kept = old.and_then(|o| o.family(f)).is_some();
        if let Some(n) = new.family(f)
            && !kept
            && n.mask != mask
        {
            let b = Broken::HeldMask { family: f, held: mask, new: n.mask };
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// The spec-level CEL rules.
pub fn spec_cel() -> Value {
    json!([{"rule": "has(self.ipv4) || has(self.ipv6)", "message": MSG_NEED_FAMILY}])
}

/// The CEL rules of a family, each next to its Rust check above: the transition rule of
/// [`mask_change`], then [`Broken::WrongFamily`], [`Broken::MaskShorter`], [`Broken::HostBits`],
/// [`Broken::Overlap`] (the last two need the Kubernetes 1.31+ `cidr()` library). The range of
/// `maskSize` and the number of CIDRs are schema bounds ([`family_bounds`]).
pub fn family_cel(family: Family) -> Value {
    let (pattern, family_msg) = match family {
        Family::V4 => ("^[0-9]{1,3}([.][0-9]{1,3}){3}/[0-9]{1,2}$", MSG_V4_FAMILY),
        Family::V6 => ("^[0-9a-fA-F:]+/[0-9]{1,3}$", MSG_V6_FAMILY),
    };
    json!([
        {"rule": "self.maskSize == oldSelf.maskSize", "message": MSG_MASK_IMMUTABLE},
        {"rule": format!("self.cidrs.all(c, c.matches('{pattern}'))"), "message": family_msg},
        {
            "rule": "self.cidrs.all(c, !c.matches('^[^/]+/[0-9]{1,3}$') || int(c.split('/')[1]) <= self.maskSize)",
            "message": MSG_MASK_SHORTER,
        },
        {"rule": "self.cidrs.all(c, !isCIDR(c) || cidr(c) == cidr(c).masked())", "message": MSG_HOST_BITS},
        {
            "rule": "!self.cidrs.all(c, isCIDR(c)) || self.cidrs.all(a, self.cidrs.exists_one(b, cidr(a).containsCIDR(cidr(b)) || cidr(b).containsCIDR(cidr(a))))",
            "message": MSG_OVERLAP,
        },
    ])
}

/// Schema bounds of a family, as [`family`] checks them: (`maskSize` minimum, maximum, most CIDRs).
pub fn family_bounds(family: Family) -> (u8, u8, usize) {
    (1, family.width(), MAX_CIDRS)
}

// The allocator's names for the rules, as messages.

pub fn pool_problems(p: &PoolSpec) -> Vec<String> {
    pool(p).iter().map(ToString::to_string).collect()
}

pub fn cross_problems(a: &PoolSpec, b: &PoolSpec) -> Vec<String> {
    across(a, b).iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(c: &[&str]) -> Vec<IpNet> {
        c.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn v4(name: &str, c: &[&str], mask: u8) -> PoolSpec {
        PoolSpec { name: name.into(), selector: None, ipv4: Some(FamilySpec { cidrs: nets(c), mask }), ipv6: None }
    }

    /// Each rule on a table of cases: the verdict and the message the CEL rule of the same
    /// rule carries.
    #[test]
    fn each_rule_its_verdict_and_message() {
        let v4f = |c: &[&str], m| family(Family::V4, &nets(c), m);
        assert_eq!(v4f(&["10.244.0.0/16"], 24), []);
        assert_eq!(
            v4f(&["10.244.1.0/16"], 24)[0].to_string(),
            format!("ipv4: {MSG_HOST_BITS} (10.244.1.0/16: use 10.244.0.0/16)")
        );
        assert!(matches!(v4f(&["10.244.0.0/16"], 12)[..], [Broken::MaskShorter { mask: 12, .. }]));
        assert!(v4f(&["10.244.0.0/16"], 12)[0].to_string().contains(MSG_MASK_SHORTER));
        assert!(matches!(v4f(&["fd00::/8"], 24)[..], [Broken::WrongFamily { .. }]));
        assert!(v4f(&["fd00::/8"], 24)[0].to_string().contains(MSG_V4_FAMILY));
        assert!(family(Family::V6, &nets(&["10.0.0.0/8"]), 64)[0].to_string().contains(MSG_V6_FAMILY));
        assert!(matches!(v4f(&["10.0.0.0/8", "10.1.0.0/16"], 24)[..], [Broken::Overlap { .. }]));
        assert!(v4f(&["10.0.0.0/16", "10.0.0.0/16"], 24)[0].to_string().contains(MSG_OVERLAP));
        assert_eq!(v4f(&["10.0.0.0/16", "10.1.0.0/16"], 24), []);
        assert_eq!(v4f(&["10.0.0.0/8"], 33)[0].to_string(), "ipv4: maskSize 33: must be between 1 and 32");
        assert_eq!(v4f(&["0.0.0.0/0"], 0)[0], Broken::MaskRange { family: Family::V4, mask: 0 });
        assert_eq!(v4f(&[], 24), [Broken::NoCidrs(Family::V4)]);
        let many: Vec<String> = (0..=MAX_CIDRS).map(|i| format!("10.{i}.0.0/16")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(v4f(&many, 24), [Broken::TooManyCidrs(Family::V4)]);
        assert_eq!(
            parse(Family::V4, &["nope".into()]).1[0].to_string(),
            "ipv4: \"nope\" is not a CIDR (address/prefix length)"
        );
        let none = PoolSpec { name: "p".into(), selector: None, ipv4: None, ipv6: None };
        assert_eq!(pool(&none), [Broken::NeedFamily]);
    }

    #[test]
    fn pools_overlapping_and_masks_changing() {
        let a = v4("a", &["10.0.0.0/16"], 24);
        let b = v4("b", &["10.0.128.0/17"], 24);
        assert_eq!(
            cross_problems(&b, &a),
            [format!("ipv4: 10.0.128.0/17 overlaps 10.0.0.0/16 of pool a: {MSG_POOL_OVERLAP}")]
        );
        assert!(across(&a, &v4("c", &["10.1.0.0/16"], 24)).is_empty());
        let a25 = v4("a", &["10.0.0.0/16"], 25);
        assert_eq!(mask_change(Some(&a), &a25, []), [Broken::MaskChanged { family: Family::V4, old: 24, new: 25 }]);
        // Removed (nodes still hold /24s of it) and added back as /25: refused; as /24: fine.
        let gone =
            PoolSpec { ipv4: None, ipv6: Some(FamilySpec { cidrs: nets(&["fd00::/48"]), mask: 64 }), ..a.clone() };
        assert_eq!(
            mask_change(Some(&gone), &a25, [(Family::V4, 24)]),
            [Broken::HeldMask { family: Family::V4, held: 24, new: 25 }]
        );
        assert!(mask_change(Some(&gone), &a, [(Family::V4, 24)]).is_empty());
        assert!(mask_change(Some(&gone), &a25, []).is_empty(), "nothing held: a new family");
    }

    #[test]
    fn cel_rules_carry_the_rule_messages() {
        for f in [Family::V4, Family::V6] {
            let msgs: Vec<String> =
                family_cel(f).as_array().unwrap().iter().map(|r| r["message"].as_str().unwrap().to_string()).collect();
            let fam_msg = if f == Family::V4 { MSG_V4_FAMILY } else { MSG_V6_FAMILY };
            assert_eq!(msgs, [MSG_MASK_IMMUTABLE, fam_msg, MSG_MASK_SHORTER, MSG_HOST_BITS, MSG_OVERLAP]);
        }
    }
}
