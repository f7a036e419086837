//! Range sets with host-local's semantics: which addresses may be handed out, in what order.
//!
//! Addresses are handled as `u128` so IPv4 and IPv6 share one code path.

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "PoolDoc")]
pub struct Pool {
    pub range_sets: Vec<RangeSet>,
    /// Shared with the request it came from: 10,000 entries are not copied.
    pub exclude: Arc<Vec<IpNet>>,
    /// `exclude` as sorted, merged intervals: a lookup is a binary search, and a walk moves a
    /// cursor along them, so 10,000 excludes cost about what none do.
    #[serde(skip_serializing)]
    excluded: Excluded,
}

/// What `pool.json` holds; the interval index is rebuilt from `exclude`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PoolDoc {
    range_sets: Vec<RangeSet>,
    #[serde(default)]
    exclude: Vec<IpNet>,
}

impl From<PoolDoc> for Pool {
    fn from(d: PoolDoc) -> Pool {
        Pool { excluded: Excluded::new(&d.exclude), range_sets: d.range_sets, exclude: Arc::new(d.exclude) }
    }
}

/// Disjoint, sorted, non-adjacent closed intervals `(first, last)`, one list per family (IPv4
/// values would otherwise collide with `::a.b.c.d`); IPv4 in `u32`, a quarter of the memory an
/// exec must fill for 10,000 entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Excluded {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// One family's intervals, read as `u128`.
#[derive(Debug, Clone, Copy)]
enum Intervals<'a> {
    V4(&'a [(u32, u32)]),
    V6(&'a [(u128, u128)]),
}

impl Intervals<'_> {
    fn get(self, i: usize) -> Option<(u128, u128)> {
        match self {
            Intervals::V4(l) => l.get(i).map(|&(lo, hi)| (lo.into(), hi.into())),
            Intervals::V6(l) => l.get(i).copied(),
        }
    }

    /// Index of the first interval that ends at or after `v`.
    fn from(self, v: u128) -> usize {
        match self {
            Intervals::V4(l) => l.partition_point(|&(_, hi)| u128::from(hi) < v),
            Intervals::V6(l) => l.partition_point(|&(_, hi)| hi < v),
        }
    }
}

impl Excluded {
    fn new(nets: &[IpNet]) -> Excluded {
        let (mut v4, mut v6) = (Vec::with_capacity(nets.len()), Vec::new());
        for n in nets {
            match n {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Excluded {
            v4: Self::merged(v4, |lo, hi| lo <= hi.saturating_add(1)),
            v6: Self::merged(v6, |lo, hi| lo <= hi.saturating_add(1)),
        }
    }

    /// Sorted and merged; `joins(lo, hi)` says whether an interval starting at `lo` touches or
    /// overlaps one ending at `hi`.
    fn merged<T: Ord + Copy>(mut iv: Vec<(T, T)>, joins: impl Fn(T, T) -> bool) -> Vec<(T, T)> {
        // Lists are usually written in order: then no sort.
        if !iv.is_sorted() {
            iv.sort_unstable();
        }
        // `next` is dropped into the interval kept before it when the two join.
        iv.dedup_by(|next, kept| {
            let join = joins(next.0, kept.1);
            if join {
                kept.1 = kept.1.max(next.1);
            }
            join
        });
        iv
    }

    fn family(&self, v4: bool) -> Intervals<'_> {
        if v4 { Intervals::V4(&self.v4) } else { Intervals::V6(&self.v6) }
    }

    /// The interval holding `ip`, if any.
    fn covering(&self, ip: IpAddr) -> Option<(u128, u128)> {
        let list = self.family(ip.is_ipv4());
        let v = to_u128(ip);
        list.get(list.from(v)).filter(|&(lo, _)| lo <= v)
    }

    /// How many addresses of `lo..=hi` are excluded.
    fn count_in(&self, v4: bool, lo: u128, hi: u128) -> u128 {
        let list = self.family(v4);
        (list.from(lo)..)
            .map_while(|i| list.get(i))
            .take_while(|&(elo, _)| elo <= hi)
            .map(|(elo, ehi)| (ehi.min(hi) - elo.max(lo)).saturating_add(1))
            .fold(0u128, u128::saturating_add)
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
    pub fn new(range_sets: Vec<RangeSet>, exclude: impl Into<Arc<Vec<IpNet>>>) -> CniResult<Pool> {
        let exclude = exclude.into();
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
        let pool = Pool { excluded: Excluded::new(&exclude), range_sets, exclude };
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

    /// A hash of the pool and `mode`, to tell cheaply whether `pool.json` is current. Not
    /// `DefaultHasher`: SipHash over 10,000 excludes would cost a tenth of an ADD; a collision
    /// only leaves `podcidr status` showing the previous ranges until the next change.
    pub fn fingerprint(&self, mode: &str) -> u64 {
        fn mix(h: u64, w: u64) -> u64 {
            let h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^ (h >> 29)
        }
        let mut h = mix(0x706f_6463_6964_7231, self.exclude.len() as u64);
        for b in mode.bytes().chain(serde_json::to_vec(&self.range_sets).unwrap_or_default()) {
            h = mix(h, u64::from(b));
        }
        for net in self.exclude.iter() {
            h = match net {
                IpNet::V4(n) => mix(h, u64::from(u32::from(n.addr())) << 8 | u64::from(n.prefix_len())),
                IpNet::V6(n) => {
                    let v = u128::from(n.addr());
                    mix(mix(mix(h, (v >> 64) as u64), v as u64), 0x100 | u64::from(n.prefix_len()))
                }
            };
        }
        h
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

/// `ipam.exclude` as the config is read: each entry parsed straight from the JSON bytes, without
/// an owned string (a config may carry 10,000), and the first bad one kept rather than failing
/// the whole config, so that a DEL, which needs no pool, still releases what an attachment
/// holds. [`Exclude::nets`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclude {
    nets: Arc<Vec<IpNet>>,
    /// The index of the first bad entry and what is wrong with it.
    first_bad: Option<(usize, String)>,
    len: usize,
}

impl Exclude {
    fn push(&mut self, entry: Result<IpNet, String>) {
        match entry {
            Ok(net) => Arc::make_mut(&mut self.nets).push(net),
            Err(problem) => {
                self.first_bad.get_or_insert((self.len, problem));
            }
        }
        self.len += 1;
    }

    /// The entries, or code 7 naming the first that is neither an address nor a CIDR, or a CIDR
    /// with host bits set.
    pub fn nets(&self) -> CniResult<Arc<Vec<IpNet>>> {
        match &self.first_bad {
            Some((i, problem)) => Err(CniError::config(&format!("ipam.exclude[{i}]"), problem)),
            None => Ok(self.nets.clone()),
        }
    }
}

impl<'a> FromIterator<&'a str> for Exclude {
    fn from_iter<I: IntoIterator<Item = &'a str>>(items: I) -> Exclude {
        let mut out = Exclude::default();
        items.into_iter().for_each(|s| out.push(parse_exclude_entry(s.as_bytes())));
        out
    }
}

impl<'de> Deserialize<'de> for Exclude {
    /// serde_json checks the list as JSON and lends it whole; the entries are then split off by
    /// hand. With 10,000 entries, going through serde for each one cost more than the rest of
    /// the ADD.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Exclude, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(d)?;
        let text = raw.get();
        let kind = match text.as_bytes().first() {
            Some(b'[') => return Ok(Exclude::from_plain_list(text).unwrap_or_else(|| Exclude::from_any_list(text))),
            Some(b'"') => "string",
            Some(b'{') => "map",
            Some(b'n') => "null",
            Some(b't' | b'f') => "boolean",
            _ => "number",
        };
        Err(serde::de::Error::invalid_type(serde::de::Unexpected::Other(kind), &"a list of addresses and CIDRs"))
    }
}

impl Exclude {
    /// A JSON list (already checked as JSON) whose entries are all strings without escapes: the
    /// way configs are written. `None` for anything else. A plain IPv4 address, the common
    /// entry, is parsed where it stands, in the same pass that finds its end.
    fn from_plain_list(text: &str) -> Option<Exclude> {
        let b = text.as_bytes();
        let skip_ws = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            i
        };
        let mut out = Exclude::default();
        let nets = Arc::make_mut(&mut out.nets);
        let mut i = skip_ws(1);
        if b.get(i) == Some(&b']') {
            return Some(out);
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let body = b.get(i + 1..)?;
            let (entry, len) = match ipv4_prefix(body) {
                Some((ip, len)) if body.get(len) == Some(&b'"') => (Ok(IpNet::from(IpAddr::V4(ip))), len),
                _ => {
                    let len = body.iter().position(|&c| c == b'"' || c == b'\\')?;
                    if body.get(len) != Some(&b'"') {
                        return None;
                    }
                    (parse_exclude_entry(body.get(..len)?), len)
                }
            };
            match entry {
                Ok(net) => nets.push(net),
                Err(problem) => {
                    out.first_bad.get_or_insert((out.len, problem));
                }
            }
            out.len += 1;
            i = skip_ws(i + len + 2);
            match b.get(i) {
                Some(b',') => i = skip_ws(i + 1),
                Some(b']') => return Some(out),
                _ => return None,
            }
        }
    }

    /// Any JSON list: entries with escapes decoded, entries that are not strings kept as bad.
    fn from_any_list(text: &str) -> Exclude {
        let mut out = Exclude::default();
        for v in serde_json::from_str::<Vec<serde_json::Value>>(text).unwrap_or_default() {
            out.push(match &v {
                serde_json::Value::String(s) => parse_exclude_entry(s.as_bytes()),
                other => Err(format!("{other} is not a string")),
            });
        }
        out
    }
}

/// `exclude` entries: an address, or a CIDR whose host bits are zero (a typo such as
/// `10.63.0.250/24` for `/32` would otherwise exclude the whole /24).
pub fn parse_exclude(items: &[String]) -> CniResult<Vec<IpNet>> {
    items.iter().map(String::as_str).collect::<Exclude>().nets().map(Arc::unwrap_or_clone)
}

fn parse_exclude_entry(raw: &[u8]) -> Result<IpNet, String> {
    if let Some(ip) = parse_plain_ipv4(raw) {
        return Ok(IpNet::from(IpAddr::V4(ip)));
    }
    let Ok(s) = std::str::from_utf8(raw) else {
        return Err(format!("{:?} is not UTF-8", String::from_utf8_lossy(raw)));
    };
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net = s.parse::<IpNet>().map_err(|_| format!("{s:?} is neither an address nor a CIDR"))?;
    if net.addr() != net.network() {
        return Err(format!(
            "{net} has host bits set; write {} for the network or {}/{} for the one address",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

/// `a.b.c.d` in the form `Ipv4Addr::from_str` takes it (decimal octets, no leading zeros), the
/// common entry, in a fraction of the general parser's time; `None` leaves anything else,
/// valid or not, to the general parsers.
fn parse_plain_ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    ipv4_prefix(b).and_then(|(ip, len)| (len == b.len()).then_some(ip))
}

/// The address in that form at the start of `b`, and how many bytes it spans; `None` when the
/// bytes that follow it would continue it (a fourth digit, or a digit after a leading zero).
fn ipv4_prefix(b: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let digit = |i: usize| b.get(i).filter(|c| c.is_ascii_digit()).map(|c| u32::from(c - b'0'));
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let mut v = digit(i)?;
        i += 1;
        if v != 0 {
            for _ in 0..2 {
                let Some(d) = digit(i) else { break };
                v = v * 10 + d;
                i += 1;
            }
        }
        if v > 255 || digit(i).is_some() {
            return None;
        }
        *octet = v as u8;
    }
    Some((Ipv4Addr::from(octets), i))
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
mod tests {
    use super::*;

    fn pool(json: &str) -> CniResult<Pool> {
        let ipam: crate::cni::config::IpamConf = serde_json::from_str(json).unwrap();
        Pool::new(crate::modes::r#static::range_sets(&ipam)?, ipam.exclude.nets()?)
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

    /// Whatever the quick IPv4 parser accepts, std's parser accepts as the same address; what
    /// it declines is left to std (so nothing std accepts is lost).
    #[test]
    fn the_quick_ipv4_parser_agrees_with_std() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = b"0123456789.0123456789..25/ :x";
        let mut accepted = 0;
        for i in 0..200_000 {
            let s: String = if i % 2 == 0 {
                (0..rnd(18)).map(|_| alphabet[rnd(alphabet.len() as u64) as usize] as char).collect()
            } else {
                let o = |r: &mut dyn FnMut(u64) -> u64| r(300).to_string();
                format!("{}.{}.{}.{}", o(&mut rnd), o(&mut rnd), o(&mut rnd), o(&mut rnd))
            };
            let quick = parse_plain_ipv4(s.as_bytes());
            if let Some(ip) = quick {
                accepted += 1;
                assert_eq!(s.parse::<Ipv4Addr>().ok(), Some(ip), "{s:?}");
            }
            let entry = parse_exclude_entry(s.as_bytes()).ok();
            let general = s.trim().parse::<IpAddr>().ok().map(IpNet::from);
            if general.is_some() {
                assert_eq!(entry, general, "{s:?}");
            }
        }
        assert!(accepted > 10_000, "the quick path took only {accepted} inputs");
        for s in ["01.2.3.4", "1.2.3.04", "256.0.0.1", "1.2.3", "1.2.3.4.", "1..2.3", "1.2.3.4 "] {
            assert_eq!(parse_plain_ipv4(s.as_bytes()), None, "{s:?}");
        }
        assert_eq!(parse_plain_ipv4(b"0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_plain_ipv4(b"255.255.255.255"), Some(Ipv4Addr::BROADCAST));
    }

    /// The pass that splits a plain list by hand reads every list as serde_json's own reading
    /// does: entries, bad ones, spacing and the index of the first bad one.
    #[test]
    fn a_plain_list_reads_as_serde_reads_it() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let entries = [
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.0/24",
            "10.0.0.1/24",
            " 10.0.0.7 ",
            "010.0.0.1",
            "10.0.0.256",
            "10.0.0",
            "10.0.0.1.",
            "fd00::1",
            "fd00::/64",
            "x",
            "",
            "адрес",
            "1.2.3.4x",
        ];
        let spaces = ["", " ", "\n  ", "\t"];
        for _ in 0..2_000 {
            let mut text = String::from("[");
            for k in 0..rnd(6) {
                if k > 0 {
                    text.push_str(spaces[rnd(4) as usize]);
                    text.push(',');
                }
                text.push_str(spaces[rnd(4) as usize]);
                text.push_str(&serde_json::to_string(entries[rnd(entries.len() as u64) as usize]).unwrap());
                text.push_str(spaces[rnd(4) as usize]);
            }
            text.push(']');
            let plain = Exclude::from_plain_list(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(plain, Exclude::from_any_list(&text), "{text}");
            let conf: crate::cni::config::IpamConf = serde_json::from_str(&format!(r#"{{"exclude":{text}}}"#)).unwrap();
            assert_eq!(conf.exclude, plain, "{text}");
        }
    }

    /// The first bad entry is reported by index, and only when the pool is built.
    #[test]
    fn exclude_keeps_the_first_bad_entry_for_later() {
        let ipam: crate::cni::config::IpamConf =
            serde_json::from_str(r#"{"exclude":["10.0.0.1","nope","10.0.0.0/8","10.1.0.0/8"]}"#).unwrap();
        let e = ipam.exclude.nets().unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(e.msg, r#"ipam.exclude[1]: "nope" is neither an address nor a CIDR"#);
        let ipam: crate::cni::config::IpamConf =
            serde_json::from_str(r#"{"exclude":["10.0.0.1", "10.0.0.\u0032", ["x"], 5]}"#).unwrap();
        assert_eq!(ipam.exclude.nets().unwrap_err().msg, r#"ipam.exclude[2]: ["x"] is not a string"#);
        assert_eq!(*ipam.exclude.nets, ["10.0.0.1/32".parse().unwrap(), "10.0.0.2/32".parse().unwrap()]);
        for (text, kind) in [(r#""10.0.0.1""#, "string"), ("null", "null"), ("{}", "map"), ("7", "number")] {
            let e =
                serde_json::from_str::<crate::cni::config::IpamConf>(&format!(r#"{{"exclude":{text}}}"#)).unwrap_err();
            assert!(e.to_string().starts_with(&format!("invalid type: {kind}, expected a list")), "{e}");
        }
    }

    /// The merged-interval index gives what a plain scan of `exclude` gives, from any start.
    #[test]
    fn walk_and_capacity_agree_with_a_plain_scan_of_exclude() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
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
            let nets = parse_exclude(&excl).unwrap();
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
