//! Range sets with host-local's semantics: which addresses may be handed out, in what order.
//!
//! Addresses are handled as `u128` so IPv4 and IPv6 share one code path.

use crate::cni::config::RangeConf;
use crate::cni::error::{CniError, CniResult};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub range_sets: Vec<RangeSet>,
    #[serde(default)]
    pub exclude: Vec<IpNet>,
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
    s.trim().parse().map_err(|_| CniError::config(field, format!("{s:?} is not an IP address")))
}

/// An address as runtimes send it: `10.0.0.5` or `10.0.0.5/24` (the prefix is ignored).
pub fn parse_requested_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse().ok().or_else(|| s.parse::<IpNet>().ok().map(|n| n.addr()))
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
        let net: IpNet = subnet
            .trim()
            .parse()
            .map_err(|_| CniError::config(&subnet_field, format!("{subnet:?} is not a CIDR such as 10.244.1.0/24")))?;
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
                return Err(CniError::config(&f, format!("{ip} is not in subnet {net}")));
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
    pub fn new(range_sets: Vec<RangeSet>, exclude: Vec<IpNet>) -> CniResult<Pool> {
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
        Ok(Pool { range_sets, exclude })
    }

    /// The range set and range holding `ip`.
    pub fn find(&self, ip: IpAddr) -> Option<(usize, &Range)> {
        self.range_sets.iter().enumerate().find_map(|(i, s)| s.iter().find(|r| r.contains(ip)).map(|r| (i, r)))
    }

    fn excluded_by(&self, ip: IpAddr) -> Option<&IpNet> {
        self.exclude.iter().find(|n| n.contains(&ip))
    }

    /// Whether `ip` may be handed out from range set `set`, ignoring current leases.
    pub fn check_usable(&self, set: usize, ip: IpAddr) -> Result<&Range, Unusable> {
        let r = self.range_sets[set].iter().find(|r| r.contains(ip)).ok_or(Unusable::NotInRange)?;
        if r.is_reserved(ip) {
            return Err(Unusable::Reserved);
        }
        if self.excluded_by(ip).is_some() {
            return Err(Unusable::Excluded);
        }
        Ok(r)
    }

    /// How many addresses of set `set` can be handed out in all.
    pub fn capacity(&self, set: usize) -> u128 {
        let exclude = ipnet::IpNet::aggregate(&self.exclude);
        self.range_sets[set]
            .iter()
            .map(|r| {
                let (lo, hi) = (to_u128(r.range_start), to_u128(r.range_end));
                if lo > hi {
                    return 0;
                }
                let mut n = (hi - lo).saturating_add(1);
                for e in &exclude {
                    if e.addr().is_ipv4() != r.range_start.is_ipv4() {
                        continue;
                    }
                    let (elo, ehi) = (to_u128(e.network()), to_u128(e.broadcast()));
                    if elo <= hi && lo <= ehi {
                        n = n.saturating_sub((ehi.min(hi) - elo.max(lo)).saturating_add(1));
                    }
                }
                let mut reserved = vec![r.gateway, r.subnet.network()];
                if r.subnet.addr().is_ipv4() {
                    reserved.push(r.subnet.broadcast());
                }
                reserved.dedup();
                let reserved_in_range =
                    reserved.iter().filter(|ip| r.contains(**ip) && self.excluded_by(**ip).is_none()).count();
                n.saturating_sub(reserved_in_range as u128)
            })
            .sum()
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
        Walk { pool: self, set, segments, cur: None }
    }
}

pub fn parse_exclude(items: &[String]) -> CniResult<Vec<IpNet>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim();
            s.parse::<IpNet>().map(|n| n.trunc()).or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                CniError::config(&format!("ipam.exclude[{i}]"), format!("{s:?} is neither an address nor a CIDR"))
            })
        })
        .collect()
}

/// Iterator of [`Pool::walk`].
pub struct Walk<'a> {
    pool: &'a Pool,
    set: usize,
    /// (range index, next value, last value), in reverse order of visiting.
    segments: Vec<(usize, u128, u128)>,
    cur: Option<(usize, u128, u128)>,
}

impl Iterator for Walk<'_> {
    type Item = IpAddr;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (ri, v, hi) = match self.cur {
                Some(seg) if seg.1 <= seg.2 => seg,
                _ => {
                    self.cur = Some(self.segments.pop()?);
                    continue;
                }
            };
            let r = &self.pool.range_sets[self.set][ri];
            let ip = from_u128(r.range_start, v);
            if let Some(e) = self.pool.excluded_by(ip) {
                let end = to_u128(e.broadcast());
                self.cur = if end >= hi { None } else { Some((ri, end + 1, hi)) };
                continue;
            }
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
mod tests {
    use super::*;

    fn pool(json: &str) -> CniResult<Pool> {
        let ipam: crate::cni::config::IpamConf = serde_json::from_str(json).unwrap();
        Pool::new(crate::modes::r#static::range_sets(&ipam)?, parse_exclude(&ipam.exclude)?)
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
}
