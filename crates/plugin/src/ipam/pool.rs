//! Range sets with host-local's semantics: which addresses may be handed out, in what order.
//!
//! Addresses are handled as `u128` so IPv4 and IPv6 share one code path.

use super::exclude::{Excluded, Intervals};
use crate::cni::config::RangeConf;
use crate::cni::error::{CniError, CniResult};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// One `{subnet, rangeStart, rangeEnd, gateway}` after defaults are filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Range {
    pub subnet: IpNet,
    pub range_start: IpAddr,
    pub range_end: IpAddr,
    pub gateway: IpAddr,
}

/// The ranges one interface takes one address from (one family).
pub type RangeSet = Vec<Range>;

/// All range sets of a network plus the addresses never handed out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PoolDoc")]
pub struct Pool {
    pub range_sets: Vec<RangeSet>,
    /// `ipam.exclude`, shared with the request it came from: 10,000 entries are not copied.
    excluded: Arc<Excluded>,
}

/// What `pool.json` holds.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PoolDoc {
    range_sets: Vec<RangeSet>,
    #[serde(default)]
    exclude: Vec<IpNet>,
}

impl From<PoolDoc> for Pool {
    fn from(d: PoolDoc) -> Pool {
        Pool { excluded: Arc::new(Excluded::from(&d.exclude[..])), range_sets: d.range_sets }
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `like`'s family with value `v` (truncated for IPv4).
pub fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

fn parse_ip(field: &str, s: &str) -> CniResult<IpAddr> {
    strict_ip(s).ok_or_else(|| CniError::config(field, format!("{s:?} is not an IP address")))
}

/// An address as Go's `net.ParseIP` (host-local's parser) reads it: no surrounding spaces, no
/// leading zeros in an IPv4 octet. std's parser is that strict; `IpNet`'s is not, so CIDRs go
/// through [`strict_net`].
pub fn strict_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// A CIDR as Go's `net.ParseCIDR` reads it: a [`strict_ip`], `/`, and decimal digits.
pub fn strict_net(s: &str) -> Option<IpNet> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    IpNet::new(strict_ip(addr)?, prefix.parse().ok()?).ok()
}

/// An address as runtimes send it: `10.0.0.5` or `10.0.0.5/24` (the prefix is ignored).
pub fn parse_requested_ip(s: &str) -> Option<IpAddr> {
    strict_ip(s).or_else(|| strict_net(s).map(|n| n.addr()))
}

impl Range {
    /// host-local's Canonicalize: the gateway defaults to the first host, rangeStart to the first
    /// host, rangeEnd to the last host (IPv4) or last address (IPv6).
    pub fn new(
        field: &str,
        subnet: &str,
        start: Option<&str>,
        end: Option<&str>,
        gw: Option<&str>,
    ) -> CniResult<Range> {
        let subnet_field = format!("{field}.subnet");
        let net = strict_net(subnet).ok_or_else(|| {
            CniError::config(&subnet_field, format!("{subnet:?} is not a CIDR such as 10.244.1.0/24"))
        })?;
        if net.addr() != net.network() {
            return Err(CniError::config(
                &subnet_field,
                format!("{net} has host bits set; the network is {}", net.trunc()),
            ));
        }
        if net.prefix_len() + 2 > net.max_prefix_len() {
            return Err(CniError::config(&subnet_field, format!("{net} is too small to allocate from")));
        }
        let first_host = from_u128(net.network(), to_u128(net.network()) + 1);
        let last = match net {
            IpNet::V4(_) => from_u128(net.network(), to_u128(net.broadcast()) - 1),
            IpNet::V6(_) => net.broadcast(),
        };
        let in_subnet = |name: &str, s: Option<&str>, default: IpAddr| -> CniResult<IpAddr> {
            let Some(s) = s else { return Ok(default) };
            let f = format!("{field}.{name}");
            let ip = parse_ip(&f, s)?;
            if !net.contains(&ip) {
                // A deliberate difference from host-local, which accepts such a gateway (README).
                let why = if name == "gateway" { "; a pod could not reach it on-link" } else { "" };
                return Err(CniError::config(&f, format!("{ip} is not in subnet {net}{why}")));
            }
            Ok(ip)
        };
        let gateway = in_subnet("gateway", gw, first_host)?;
        let range_start = in_subnet("rangeStart", start, first_host)?;
        let range_end = in_subnet("rangeEnd", end, last)?;
        if to_u128(range_start) > to_u128(range_end) {
            return Err(CniError::config(
                &format!("{field}.rangeStart"),
                format!("{range_start} is after rangeEnd {range_end}"),
            ));
        }
        Ok(Range { subnet: net, range_start, range_end, gateway })
    }

    pub fn from_conf(field: &str, r: &RangeConf) -> CniResult<Range> {
        Range::new(field, &r.subnet, r.range_start.as_deref(), r.range_end.as_deref(), r.gateway.as_deref())
    }

    /// In `rangeStart..=rangeEnd`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.range_start.is_ipv4()
            && (to_u128(self.range_start)..=to_u128(self.range_end)).contains(&to_u128(ip))
    }

    /// Network and (IPv4) broadcast addresses and the gateway are never handed out.
    fn is_reserved(&self, ip: IpAddr) -> bool {
        ip == self.gateway
            || ip == self.subnet.network()
            || (self.subnet.addr().is_ipv4() && ip == self.subnet.broadcast())
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.range_start.is_ipv4() == other.range_start.is_ipv4()
            && to_u128(self.range_start) <= to_u128(other.range_end)
            && to_u128(other.range_start) <= to_u128(self.range_end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

/// host-local's RangeSet.String(), kept so runbooks that grep its errors still match.
pub fn describe_set(set: &RangeSet) -> String {
    set.iter().map(Range::to_string).collect::<Vec<_>>().join(",")
}

/// Why an address cannot be handed out, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    NotInRange,
    Reserved,
    Excluded,
}

impl Pool {
    /// Checks a pool from any source: one family per set, no overlaps anywhere.
    pub fn new(range_sets: Vec<RangeSet>, excluded: impl Into<Arc<Excluded>>) -> CniResult<Pool> {
        for (i, set) in range_sets.iter().enumerate() {
            let Some(first) = set.first() else {
                return Err(CniError::config(&format!("ipam.ranges[{i}]"), "is an empty range set"));
            };
            let v4 = first.range_start.is_ipv4();
            if set.iter().any(|r| r.range_start.is_ipv4() != v4) {
                return Err(CniError::config(&format!("ipam.ranges[{i}]"), "mixes IPv4 and IPv6 ranges"));
            }
        }
        let all: Vec<(usize, &Range)> =
            range_sets.iter().enumerate().flat_map(|(i, s)| s.iter().map(move |r| (i, r))).collect();
        for (a, (i, r)) in all.iter().enumerate() {
            for (j, r2) in all.iter().skip(a + 1) {
                if r.overlaps(r2) {
                    return Err(CniError::config(
                        &format!("ipam.ranges[{i}]"),
                        format!("range {r} overlaps range {r2} of range set {j}"),
                    ));
                }
            }
        }
        let pool = Pool { excluded: excluded.into(), range_sets };
        for (i, set) in pool.range_sets.iter().enumerate() {
            // The walk's first step, not `capacity`: that counts every exclude in the range.
            if pool.walk(i, None).next().is_some() {
                continue;
            }
            let excludes_some = set.iter().any(|r| {
                pool.excluded.count_in(r.range_start.is_ipv4(), to_u128(r.range_start), to_u128(r.range_end)) > 0
            });
            let described = describe_set(set);
            return Err(if excludes_some {
                CniError::config(
                    "ipam.exclude",
                    format!("leaves range set {i} ({described}) with no address to hand out"),
                )
            } else {
                CniError::config(
                    &format!("ipam.ranges[{i}]"),
                    format!(
                        "has no address to hand out ({described} holds only the gateway, network or broadcast address)"
                    ),
                )
            });
        }
        Ok(pool)
    }

    /// The range set and range holding `ip`.
    pub fn find(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        self.range_sets.iter().enumerate().find_map(|(i, s)| s.iter().find(|r| r.contains(ip)).map(|r| (i, r)))
    }

    fn is_excluded(&self, ip: IpAddr) -> bool {
        self.excluded.covering(ip).is_some()
    }

    /// The range set `ip` belongs to when an ADD could hand it out (in a range, not reserved,
    /// not excluded): what `podcidr status` counts as allocated.
    pub fn usable_set(&self, ip: IpAddr) -> Option<usize> {
        let (set, _) = self.find(ip)?;
        self.check_usable(set, ip).ok().map(|_| set)
    }

    /// Whether `ip` may be handed out from range set `set`, ignoring current leases.
    pub fn check_usable(&self, set: usize, ip: IpAddr) -> Result<&Range, Unusable> {
        let r = self.range_sets[set].iter().find(|r| r.contains(ip)).ok_or(Unusable::NotInRange)?;
        if r.is_reserved(ip) {
            return Err(Unusable::Reserved);
        }
        if self.is_excluded(ip) {
            return Err(Unusable::Excluded);
        }
        Ok(r)
    }

    /// How many addresses of set `set` can be handed out in all: exactly what a walk yields.
    pub fn capacity(&self, set: usize) -> u128 {
        self.range_sets[set]
            .iter()
            .map(|r| {
                let v4 = r.range_start.is_ipv4();
                let (lo, hi) = (to_u128(r.range_start), to_u128(r.range_end));
                if lo > hi {
                    return 0;
                }
                let n = (hi - lo).saturating_add(1) - self.excluded.count_in(v4, lo, hi);
                // The gateway may also be the network or the broadcast address: count each once.
                let mut reserved = vec![r.gateway, r.subnet.network()];
                if v4 {
                    reserved.push(r.subnet.broadcast());
                }
                reserved.sort_unstable();
                reserved.dedup();
                let reserved_in_range =
                    reserved.iter().filter(|ip| r.contains(**ip) && !self.is_excluded(**ip)).count();
                n.saturating_sub(reserved_in_range as u128)
            })
            .fold(0u128, u128::saturating_add)
    }

    /// The excluded addresses.
    pub fn excluded(&self) -> &Excluded {
        &self.excluded
    }

    /// A hash of the pool and `mode`, to tell cheaply whether `pool.json` is current. Not
    /// `DefaultHasher`: SipHash over 10,000 excludes would cost a tenth of an ADD; a collision
    /// only leaves `podcidr status` showing the previous ranges until the next change.
    pub fn fingerprint(&self, mode: &str) -> u64 {
        fn mix(h: u64, w: u64) -> u64 {
            let h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^ (h >> 29)
        }
        let mut h = 0x706f_6463_6964_7231;
        for b in mode.bytes().chain(serde_json::to_vec(&self.range_sets).unwrap_or_default()) {
            h = mix(h, u64::from(b));
        }
        self.excluded.words().fold(h, mix)
    }

    /// Every usable address of set `set` once, starting after `last` when it is in the set
    /// (host-local's round robin), else at the set's first address. Excluded CIDRs are skipped
    /// in one step, so a walk never costs more than the leases it meets.
    pub fn walk(&self, set: usize, last: Option<IpAddr>) -> Walk<'_> {
        let ranges = &self.range_sets[set];
        let mut segments = Vec::with_capacity(ranges.len() + 1);
        let at = last.and_then(|ip| ranges.iter().position(|r| r.contains(ip)).map(|i| (i, to_u128(ip))));
        match at {
            Some((i, v)) => {
                let n = ranges.len();
                let r = &ranges[i];
                if v < to_u128(r.range_end) {
                    segments.push((i, v + 1, to_u128(r.range_end)));
                }
                for k in 1..n {
                    let j = (i + k) % n;
                    segments.push((j, to_u128(ranges[j].range_start), to_u128(ranges[j].range_end)));
                }
                segments.push((i, to_u128(r.range_start), v));
            }
            None => {
                for (j, r) in ranges.iter().enumerate() {
                    segments.push((j, to_u128(r.range_start), to_u128(r.range_end)));
                }
            }
        }
        segments.reverse();
        let excluded = self.excluded.family(ranges.first().is_none_or(|r| r.range_start.is_ipv4()));
        Walk { pool: self, set, segments, cur: None, excluded, next_excluded: 0 }
    }
}

/// Iterator of [`Pool::walk`].
pub struct Walk<'a> {
    pool: &'a Pool,
    set: usize,
    /// (range index, next value, last value), in reverse order of visiting.
    segments: Vec<(usize, u128, u128)>,
    cur: Option<(usize, u128, u128)>,
    /// The set's family of [`Excluded`], and the first of them not yet behind the walk in the
    /// current segment: a walk only moves forward within a segment, so this cursor only does.
    excluded: Intervals<'a>,
    next_excluded: usize,
}

impl Iterator for Walk<'_> {
    type Item = IpAddr;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (ri, v, hi) = match self.cur {
                Some(seg) if seg.1 <= seg.2 => seg,
                _ => {
                    let seg = self.segments.pop()?;
                    self.next_excluded = self.excluded.from(seg.1);
                    self.cur = Some(seg);
                    continue;
                }
            };
            while self.excluded.get(self.next_excluded).is_some_and(|(_, ehi)| ehi < v) {
                self.next_excluded += 1;
            }
            if let Some((elo, end)) = self.excluded.get(self.next_excluded)
                && elo <= v
            {
                self.cur = if end >= hi { None } else { Some((ri, end + 1, hi)) };
                continue;
            }
            let r = &self.pool.range_sets[self.set][ri];
            let ip = from_u128(r.range_start, v);
            // `v` may be u128::MAX at the very top of the IPv6 space; then the segment is done.
            self.cur = if v == hi { None } else { Some((ri, v + 1, hi)) };
            if r.is_reserved(ip) {
                continue;
            }
            return Some(ip);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator for property tests: `rnd(n)` is in `0..n`.
    pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    fn pool(json: &str) -> CniResult<Pool> {
        let ipam: crate::cni::config::IpamConf = serde_json::from_str(json).unwrap();
        Pool::new(crate::modes::r#static::range_sets(&ipam)?, ipam.exclude.excluded()?)
    }

    fn ips(p: &Pool, last: Option<&str>) -> Vec<String> {
        p.walk(0, last.map(|s| s.parse().unwrap())).map(|ip| ip.to_string()).collect()
    }

    #[test]
    fn defaults_match_host_local() {
        let p = pool(r#"{"subnet":"10.1.2.0/24"}"#).unwrap();
        let r = &p.range_sets[0][0];
        assert_eq!(r.gateway.to_string(), "10.1.2.1");
        assert_eq!(r.range_start.to_string(), "10.1.2.1");
        assert_eq!(r.range_end.to_string(), "10.1.2.254");
        assert_eq!(p.capacity(0), 253);
        let all = ips(&p, None);
        assert_eq!(all.first().unwrap(), "10.1.2.2");
        assert_eq!(all.last().unwrap(), "10.1.2.254");
        assert_eq!(all.len(), 253);
    }

    #[test]
    fn round_robin_continues_after_the_last_reserved_and_wraps() {
        let p = pool(r#"{"ranges":[[{"subnet":"10.0.0.0/29"}]]}"#).unwrap();
        assert_eq!(ips(&p, Some("10.0.0.4")), ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        assert_eq!(ips(&p, Some("10.0.0.6")), ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        // Outside the set (a changed config): start over.
        assert_eq!(ips(&p, Some("10.9.0.1")).first().unwrap(), "10.0.0.2");
    }

    #[test]
    fn walk_spans_ranges_of_a_set_and_skips_exclusions() {
        let p = pool(
            r#"{"ranges":[[{"subnet":"10.0.0.0/29"},{"subnet":"10.0.1.0/29","rangeStart":"10.0.1.4"}]],
                "exclude":["10.0.0.3","10.0.0.4/31"]}"#,
        )
        .unwrap();
        assert_eq!(ips(&p, None), ["10.0.0.2", "10.0.0.6", "10.0.1.4", "10.0.1.5", "10.0.1.6"]);
        assert_eq!(p.capacity(0), 5);
    }

    #[test]
    fn ipv6_uses_the_last_address_and_huge_exclusions_are_skipped_at_once() {
        let p = pool(r#"{"ranges":[[{"subnet":"fd00::/64"}]],"exclude":["fd00::/65"]}"#).unwrap();
        let first: Vec<_> = p.walk(0, None).take(2).map(|ip| ip.to_string()).collect();
        assert_eq!(first, ["fd00::8000:0:0:0", "fd00::8000:0:0:1"]);
        assert_eq!(p.range_sets[0][0].range_end.to_string(), "fd00::ffff:ffff:ffff:ffff");
        assert_eq!(p.capacity(0), 1u128 << 63);
    }

    #[test]
    fn bad_ranges_name_their_field() {
        let e = pool(r#"{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.128/25"}]]}"#).unwrap_err();
        assert!(e.msg.contains("overlaps"), "{}", e.msg);
        let e = pool(r#"{"ranges":[[{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}]]}"#).unwrap_err();
        assert!(e.msg.starts_with("ipam.ranges[0][0].gateway:"), "{}", e.msg);
        let e = pool(r#"{"subnet":"10.0.0.0/31"}"#).unwrap_err();
        assert!(e.msg.contains("too small"), "{}", e.msg);
        let e = pool(r#"{"subnet":"10.0.0.5/24"}"#).unwrap_err();
        assert!(e.msg.contains("10.0.0.0/24"), "{}", e.msg);
        assert_eq!(pool("{}").unwrap_err().code, 7);
        let e = pool(r#"{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}"#).unwrap_err();
        assert!(e.msg.contains("mixes"), "{}", e.msg);
    }

    #[test]
    fn usable_addresses() {
        let p =
            pool(r#"{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.0","rangeEnd":"10.0.0.255","exclude":["10.0.0.9"]}"#)
                .unwrap();
        let ip = |s: &str| s.parse().unwrap();
        assert!(p.check_usable(0, ip("10.0.0.5")).is_ok());
        assert_eq!(p.check_usable(0, ip("10.0.0.1")).unwrap_err(), Unusable::Reserved);
        assert_eq!(p.check_usable(0, ip("10.0.0.0")).unwrap_err(), Unusable::Reserved);
        assert_eq!(p.check_usable(0, ip("10.0.0.255")).unwrap_err(), Unusable::Reserved);
        assert_eq!(p.check_usable(0, ip("10.0.0.9")).unwrap_err(), Unusable::Excluded);
        assert_eq!(p.check_usable(0, ip("10.0.1.1")).unwrap_err(), Unusable::NotInRange);
        assert_eq!(p.capacity(0), 252);
    }

    /// Issue 10 point 12: the gateway as the range's last address (here also the broadcast
    /// address) was subtracted twice.
    #[test]
    fn capacity_counts_a_gateway_that_is_also_the_broadcast_address_once() {
        let p = pool(r#"{"ranges":[[{"subnet":"10.0.0.0/29","rangeEnd":"10.0.0.7","gateway":"10.0.0.7"}]]}"#).unwrap();
        assert_eq!(ips(&p, None), ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(p.capacity(0), 6);
    }

    #[test]
    fn exclude_with_host_bits_is_code_7_naming_the_entry() {
        let e = pool(r#"{"subnet":"10.63.0.0/24","exclude":["10.63.0.7","10.63.0.250/24"]}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("ipam.exclude[1]: 10.63.0.250/24 has host bits set"), "{}", e.msg);
        assert!(e.msg.contains("10.63.0.250/32"), "{}", e.msg);
        assert!(pool(r#"{"subnet":"10.63.0.0/24","exclude":["10.63.0.248/29","fd00::/64"]}"#).is_ok());
    }

    #[test]
    fn a_range_set_left_with_no_address_is_code_7() {
        let e = pool(r#"{"subnet":"10.63.0.0/24","exclude":["10.63.0.0/25","10.63.0.128/25"]}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("ipam.exclude: leaves range set 0 (10.63.0.1-10.63.0.254)"), "{}", e.msg);
        let e = pool(r#"{"subnet":"10.63.0.0/30","rangeStart":"10.63.0.1","rangeEnd":"10.63.0.1"}"#).unwrap_err();
        assert!(e.msg.starts_with("ipam.ranges[0]: has no address"), "{}", e.msg);
        // One address left is enough.
        let p = pool(r#"{"subnet":"10.63.0.0/24","exclude":["10.63.0.0/25","10.63.0.128/26","10.63.0.192/27","10.63.0.224/28","10.63.0.240/29","10.63.0.248/30","10.63.0.252","10.63.0.254/31"]}"#).unwrap();
        assert_eq!(ips(&p, None), ["10.63.0.253"]);
        assert_eq!(p.capacity(0), 1);
    }

    /// The merged-interval index gives what a plain scan of `exclude` gives, from any start.
    #[test]
    fn walk_and_capacity_agree_with_a_plain_scan_of_exclude() {
        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let excl: Vec<String> = (0..rnd(12))
                .map(|_| {
                    let len = 28 + rnd(5) as u8;
                    let net = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, rnd(64) as u8)), len).unwrap().trunc();
                    net.to_string()
                })
                .chain(std::iter::once("fd00::/120".to_string()))
                .collect();
            let conf = serde_json::json!({
                "ranges": [[{"subnet": "10.0.0.0/27", "rangeStart": "10.0.0.3"}, {"subnet": "10.0.0.32/27"}]],
                "exclude": excl,
            });
            let Ok(p) = pool(&conf.to_string()) else { continue };
            let nets: Vec<IpNet> = excl.iter().map(|s| s.parse().unwrap()).collect();
            let plain = |ip: &IpAddr| {
                p.range_sets[0].iter().any(|r| r.contains(*ip) && !r.is_reserved(*ip))
                    && !nets.iter().any(|n| n.contains(ip))
            };
            let all: Vec<IpAddr> = (0u32..64).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))).collect();
            let expect: Vec<IpAddr> = all.iter().copied().filter(plain).collect();
            assert_eq!(p.capacity(0), expect.len() as u128, "{conf}");
            for last in std::iter::once(None).chain(all.iter().map(|ip| Some(*ip))) {
                let mut got: Vec<IpAddr> = p.walk(0, last).collect();
                assert_eq!(got.len(), expect.len(), "{conf} from {last:?}");
                got.sort();
                assert_eq!(got, expect, "{conf} from {last:?}");
            }
        }
    }
}
