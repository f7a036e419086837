//! `ipam.exclude`: the addresses and CIDRs never handed out, kept as sorted, merged intervals.
//!
//! A config may carry 10,000 entries and every exec reads it, so the entries are parsed where
//! they stand in the JSON text (no string each), straight into intervals (IPv4 in `u32`), and
//! the result is shared with the pool rather than copied. A lookup is then a binary search, and
//! a walk moves a cursor along the intervals.

use crate::cni::error::{CniError, CniResult};
use crate::ipam::pool::{strict_ip, strict_net};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// `ipam.exclude` as read from the config. The first bad entry is kept rather than failing the
/// whole config, so that a DEL, which needs no pool, still releases what an attachment holds;
/// [`Exclude::excluded`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclude {
    excluded: Arc<Excluded>,
    /// The index of the first bad entry (none when the list as a whole cannot be read) and what
    /// is wrong with it.
    first_bad: Option<(Option<usize>, String)>,
}

impl Exclude {
    /// The intervals, or code 7 naming the first entry that is neither an address nor a CIDR,
    /// or a CIDR with host bits set, or that cannot be read at all.
    pub fn excluded(&self) -> CniResult<Arc<Excluded>> {
        match &self.first_bad {
            Some((Some(i), problem)) => Err(CniError::config(&format!("ipam.exclude[{i}]"), problem)),
            Some((None, problem)) => Err(CniError::config("ipam.exclude", problem)),
            None => Ok(self.excluded.clone()),
        }
    }
}

impl<'a> FromIterator<&'a str> for Exclude {
    fn from_iter<I: IntoIterator<Item = &'a str>>(items: I) -> Exclude {
        let mut b = Builder::default();
        items.into_iter().for_each(|s| b.push(parse_entry(s.as_bytes())));
        b.finish()
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
            Some(b'[') => return Ok(from_plain_list(text).unwrap_or_else(|| from_any_list(text))),
            Some(b'"') => "string",
            Some(b'{') => "map",
            Some(b'n') => "null",
            Some(b't' | b'f') => "boolean",
            _ => "number",
        };
        Err(serde::de::Error::invalid_type(serde::de::Unexpected::Other(kind), &"a list of addresses and CIDRs"))
    }
}

/// Entries as they are read. IPv4 intervals are merged as they come while they come in order
/// (as lists are written), so that no sort is needed.
#[derive(Default)]
struct Builder {
    v4: Vec<(u32, u32)>,
    v4_unsorted: bool,
    v6: Vec<(u128, u128)>,
    first_bad: Option<(Option<usize>, String)>,
    len: usize,
}

impl Builder {
    fn push_v4(&mut self, lo: u32, hi: u32) {
        match self.v4.last_mut() {
            Some(last) if lo >= last.0 && lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            Some(last) if lo < last.0 => {
                self.v4_unsorted = true;
                self.v4.push((lo, hi));
            }
            _ => self.v4.push((lo, hi)),
        }
        self.len += 1;
    }

    fn push(&mut self, entry: Result<IpNet, String>) {
        match entry {
            Ok(IpNet::V4(n)) => return self.push_v4(n.network().into(), n.broadcast().into()),
            Ok(IpNet::V6(n)) => self.v6.push((n.network().into(), n.broadcast().into())),
            Err(problem) => {
                self.first_bad.get_or_insert((Some(self.len), problem));
            }
        }
        self.len += 1;
    }

    fn finish(mut self) -> Exclude {
        let first_bad = self.first_bad.take();
        Exclude { excluded: Arc::new(self.intervals()), first_bad }
    }

    fn intervals(self) -> Excluded {
        let v4 = if self.v4_unsorted { merged(self.v4, |lo, hi| lo <= hi.saturating_add(1)) } else { self.v4 };
        Excluded { v4, v6: merged(self.v6, |lo, hi| lo <= hi.saturating_add(1)) }
    }
}

/// A JSON list (already checked as JSON) whose entries are all strings without escapes: the way
/// configs are written. `None` for anything else. A plain IPv4 address, the common entry, is
/// parsed where it stands, in the same pass that finds its end.
fn from_plain_list(text: &str) -> Option<Exclude> {
    let b = text.as_bytes();
    // JSON's whitespace; the text is checked JSON, so nothing else lies between tokens.
    let skip_ws = |mut i: usize| {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
            i += 1;
        }
        i
    };
    let mut out = Builder::default();
    let mut i = skip_ws(1);
    if b.get(i) == Some(&b']') {
        return Some(out.finish());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let body = b.get(i + 1..)?;
        let len = match ipv4_prefix(body) {
            Some((ip, len)) if body.get(len) == Some(&b'"') => {
                out.push_v4(ip, ip);
                len
            }
            _ => {
                let len = body.iter().position(|&c| c == b'"' || c == b'\\')?;
                if body.get(len) != Some(&b'"') {
                    return None;
                }
                out.push(parse_entry(body.get(..len)?));
                len
            }
        };
        i = skip_ws(i + len + 2);
        match b.get(i) {
            Some(b',') => i = skip_ws(i + 1),
            Some(b']') => return Some(out.finish()),
            _ => return None,
        }
    }
}

/// Any JSON list: entries with escapes decoded, entries that are not strings kept as bad, and
/// so is an entry that cannot be read (a lone surrogate escape, a number beyond f64, nesting
/// too deep): never a list quietly taken as empty.
fn from_any_list(text: &str) -> Exclude {
    let mut out = Builder::default();
    let entries = match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) {
        Ok(entries) => entries,
        Err(e) => {
            out.first_bad = Some((None, format!("the list cannot be read: {e}")));
            return out.finish();
        }
    };
    for raw in entries {
        let text = raw.get();
        out.push(match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::String(s)) => parse_entry(s.as_bytes()),
            Ok(other) => Err(format!("{other} is not a string")),
            Err(e) => Err(format!("{} cannot be read: {e}", shortened(text))),
        });
    }
    out.finish()
}

/// At most 40 characters of `text`, for an error message.
fn shortened(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// An entry: an address, or a CIDR whose host bits are zero (a typo such as `10.63.0.250/24`
/// for `/32` would otherwise exclude the whole /24).
fn parse_entry(raw: &[u8]) -> Result<IpNet, String> {
    if let Some((ip, len)) = ipv4_prefix(raw)
        && len == raw.len()
    {
        return Ok(IpNet::from(IpAddr::V4(Ipv4Addr::from(ip))));
    }
    let Ok(s) = std::str::from_utf8(raw) else {
        return Err(format!("{:?} is not UTF-8", String::from_utf8_lossy(raw)));
    };
    // No leading zeros, as every address of the config (`pool::strict_ip`); surrounding spaces
    // are the one leniency, kept because `exclude` (podcidr's own key) has always allowed them.
    let s = s.trim();
    if let Some(ip) = strict_ip(s) {
        return Ok(unmapped(IpNet::from(ip)).unwrap_or_else(|| IpNet::from(ip)));
    }
    let net = strict_net(s).ok_or_else(|| format!("{s:?} is neither an address nor a CIDR"))?;
    if net.addr() != net.network() {
        return Err(format!(
            "{net} has host bits set; write {} for the network or {}/{} for the one address",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    match net {
        IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() => unmapped(net).ok_or_else(|| {
            format!("{net} spans IPv4-mapped and other IPv6 addresses; write the IPv4 part as an IPv4 CIDR")
        }),
        _ => Ok(net),
    }
}

/// An IPv4-mapped entry (`::ffff:10.0.0.2`, `::ffff:10.0.0.0/120`) as the IPv4 addresses it
/// names, as Go reads such an address: otherwise it would exclude nothing from an IPv4 range.
/// `None` for anything else, and for a CIDR wider than the mapped block.
fn unmapped(net: IpNet) -> Option<IpNet> {
    let IpNet::V6(v6) = net else {
        return None;
    };
    let v4 = v6.addr().to_ipv4_mapped()?;
    let prefix = v6.prefix_len().checked_sub(96)?;
    Ipv4Net::new(v4, prefix).ok().map(IpNet::V4)
}

/// The IPv4 address at the start of `b` in the form `Ipv4Addr::from_str` takes (decimal octets,
/// no leading zeros), and how many bytes it spans: the common entry, in a fraction of the
/// general parser's time. `None` when there is none, or when the bytes that follow would
/// continue it (a fourth digit, or a digit after a leading zero); the general parsers then
/// decide.
fn ipv4_prefix(b: &[u8]) -> Option<(u32, usize)> {
    // A 16-byte window (an address is at most 15), zero-padded: a zero is neither a digit nor a
    // dot. Reading a fixed window by masked index leaves no bounds check in the loop.
    let w: [u8; 16] = match b.get(..16) {
        Some(head) => head.try_into().ok()?,
        None => {
            let mut w = [0u8; 16];
            w.iter_mut().zip(b).for_each(|(w, b)| *w = *b);
            w
        }
    };
    let digit = |i: usize| u32::from(w[i & 15].wrapping_sub(b'0'));
    let (mut ip, mut i) = (0u32, 0usize);
    for k in 0..4 {
        if k > 0 {
            if w[i & 15] != b'.' {
                return None;
            }
            i += 1;
        }
        let (d0, d1, d2, d3) = (digit(i), digit(i + 1), digit(i + 2), digit(i + 3));
        let (octet, len) = match (d0, d1, d2) {
            (10.., _, _) => return None,
            (_, 10.., _) => (d0, 1),
            // A leading zero, or a fourth digit: not std's form.
            (0, _, _) => return None,
            (_, _, 10..) => (d0 * 10 + d1, 2),
            _ if d3 < 10 => return None,
            _ => (d0 * 100 + d1 * 10 + d2, 3),
        };
        if octet > 255 {
            return None;
        }
        (ip, i) = (ip << 8 | octet, i + len);
    }
    Some((ip, i))
}

/// Disjoint, sorted, non-adjacent closed intervals `(first, last)`, one list per family (IPv4
/// values would otherwise collide with `::a.b.c.d`); IPv4 in `u32`, a quarter of the memory an
/// exec must fill for 10,000 entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excluded {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// One family's intervals, read as `u128`.
#[derive(Debug, Clone, Copy)]
pub enum Intervals<'a> {
    V4(&'a [(u32, u32)]),
    V6(&'a [(u128, u128)]),
}

impl Intervals<'_> {
    pub fn get(self, i: usize) -> Option<(u128, u128)> {
        match self {
            Intervals::V4(l) => l.get(i).map(|&(lo, hi)| (lo.into(), hi.into())),
            Intervals::V6(l) => l.get(i).copied(),
        }
    }

    /// Index of the first interval that ends at or after `v`.
    pub fn from(self, v: u128) -> usize {
        match self {
            Intervals::V4(l) => l.partition_point(|&(_, hi)| u128::from(hi) < v),
            Intervals::V6(l) => l.partition_point(|&(_, hi)| hi < v),
        }
    }
}

impl From<&[IpNet]> for Excluded {
    fn from(nets: &[IpNet]) -> Excluded {
        let mut b = Builder::default();
        nets.iter().for_each(|n| b.push(Ok(*n)));
        b.intervals()
    }
}

impl Excluded {
    pub fn family(&self, v4: bool) -> Intervals<'_> {
        if v4 { Intervals::V4(&self.v4) } else { Intervals::V6(&self.v6) }
    }

    /// The interval holding `ip`, if any.
    pub fn covering(&self, ip: IpAddr) -> Option<(u128, u128)> {
        let list = self.family(ip.is_ipv4());
        let v = match ip {
            IpAddr::V4(a) => u32::from(a).into(),
            IpAddr::V6(a) => u128::from(a),
        };
        list.get(list.from(v)).filter(|&(lo, _)| lo <= v)
    }

    /// How many addresses of `lo..=hi` are excluded.
    pub fn count_in(&self, v4: bool, lo: u128, hi: u128) -> u128 {
        let list = self.family(v4);
        (list.from(lo)..)
            .map_while(|i| list.get(i))
            .take_while(|&(elo, _)| elo <= hi)
            .map(|(elo, ehi)| (ehi.min(hi) - elo.max(lo)).saturating_add(1))
            .fold(0u128, u128::saturating_add)
    }

    /// The fewest CIDRs that cover exactly the excluded addresses, IPv4 first: what `pool.json`
    /// lists (a single address is a /32 or /128, as the config's entry reads).
    pub fn cidrs(&self) -> impl Iterator<Item = IpNet> + '_ {
        let v4 = self.v4.iter().flat_map(|&(lo, hi)| {
            cover(lo.into(), hi.into(), 32)
                .filter_map(|(a, p)| Ipv4Net::new(Ipv4Addr::from(a as u32), p).ok().map(IpNet::V4))
        });
        let v6 = self.v6.iter().flat_map(|&(lo, hi)| {
            cover(lo, hi, 128).filter_map(|(a, p)| Ipv6Net::new(Ipv6Addr::from(a), p).ok().map(IpNet::V6))
        });
        v4.chain(v6)
    }

    /// Words that change whenever the excluded set does, for [`crate::ipam::pool::Pool::fingerprint`].
    pub fn words(&self) -> impl Iterator<Item = u64> + '_ {
        let v4 = self.v4.iter().map(|&(lo, hi)| u64::from(lo) << 32 | u64::from(hi));
        let v6 = self.v6.iter().flat_map(|&(lo, hi)| [(lo >> 64) as u64, lo as u64, (hi >> 64) as u64, hi as u64]);
        [self.v4.len() as u64].into_iter().chain(v4).chain([self.v6.len() as u64]).chain(v6)
    }
}

/// Sorted and merged; `joins(lo, hi)` says whether an interval starting at `lo` touches or
/// overlaps one ending at `hi`.
fn merged<T: Ord + Copy>(mut iv: Vec<(T, T)>, joins: impl Fn(T, T) -> bool) -> Vec<(T, T)> {
    // Lists are usually written in order: then no sort.
    if !iv.is_sorted() {
        iv.sort_unstable();
    }
    // `next` is folded into the interval kept before it when the two join.
    iv.dedup_by(|next, kept| {
        let join = joins(next.0, kept.1);
        if join {
            kept.1 = kept.1.max(next.1);
        }
        join
    });
    iv
}

/// `lo..=hi` (of a `bits`-bit family) as aligned blocks `(first address, prefix length)`.
fn cover(mut lo: u128, hi: u128, bits: u32) -> impl Iterator<Item = (u128, u8)> {
    let mut done = lo > hi;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        // The largest block that starts at `lo` (alignment) and ends by `hi` (length).
        let span = hi - lo;
        let fits = if span == u128::MAX { 128 } else { 127 - (span + 1).leading_zeros() };
        let k = lo.trailing_zeros().min(bits).min(fits);
        let block = (lo, (bits - k) as u8);
        let last = if k == 128 { u128::MAX } else { lo + ((1u128 << k) - 1) };
        if last >= hi {
            done = true;
        } else {
            lo = last + 1;
        }
        Some(block)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::pool::tests::xorshift;

    fn exclude(json: &str) -> Exclude {
        serde_json::from_str(json).unwrap()
    }

    /// Whatever the quick IPv4 parser accepts, std's parser accepts as the same address; what
    /// it declines is left to std (so nothing std accepts is lost).
    #[test]
    fn the_quick_ipv4_parser_agrees_with_std() {
        let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
        let alphabet = b"0123456789.0123456789..25/ :x";
        let mut accepted = 0;
        for i in 0..200_000 {
            let s: String = if i % 2 == 0 {
                (0..rnd(18)).map(|_| alphabet[rnd(alphabet.len() as u64) as usize] as char).collect()
            } else {
                let o = |r: &mut dyn FnMut(u64) -> u64| r(300).to_string();
                format!("{}.{}.{}.{}", o(&mut rnd), o(&mut rnd), o(&mut rnd), o(&mut rnd))
            };
            if let Some((ip, len)) = ipv4_prefix(s.as_bytes())
                && len == s.len()
            {
                accepted += 1;
                assert_eq!(s.parse::<Ipv4Addr>().ok(), Some(Ipv4Addr::from(ip)), "{s:?}");
            }
            let general = s.trim().parse::<IpAddr>().ok().map(IpNet::from);
            if general.is_some() {
                assert_eq!(parse_entry(s.as_bytes()).ok(), general, "{s:?}");
            }
        }
        assert!(accepted > 10_000, "the quick path took only {accepted} inputs");
        for s in ["01.2.3.4", "1.2.3.04", "256.0.0.1", "1.2.3", "1.2.3.4.", "1..2.3", "1.2.3.4 ", "1.2.3.1000"] {
            assert!(ipv4_prefix(s.as_bytes()).is_none_or(|(_, len)| len != s.len()), "{s:?}");
        }
        assert_eq!(ipv4_prefix(b"0.0.0.0"), Some((0, 7)));
        assert_eq!(ipv4_prefix(b"255.255.255.255\""), Some((u32::MAX, 15)));
    }

    /// The pass that splits a plain list by hand reads every list as serde_json's own reading
    /// does: entries, bad ones, spacing and the index of the first bad one.
    #[test]
    fn a_plain_list_reads_as_serde_reads_it() {
        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
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
            let plain = from_plain_list(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(plain, from_any_list(&text), "{text}");
            assert_eq!(exclude(&text), plain, "{text}");
        }
    }

    /// The first bad entry is reported by index, and only when the pool is built.
    #[test]
    fn the_first_bad_entry_is_kept_for_later() {
        let e = exclude(r#"["10.0.0.1","nope","10.0.0.0/8","10.1.0.0/8"]"#).excluded().unwrap_err();
        assert_eq!(e.code, 7);
        assert_eq!(e.msg, r#"ipam.exclude[1]: "nope" is neither an address nor a CIDR"#);
        let x = exclude(r#"["10.0.0.1", "10.0.0.\u0032", ["x"], 5]"#);
        assert_eq!(x.excluded().unwrap_err().msg, r#"ipam.exclude[2]: ["x"] is not a string"#);
        assert_eq!(x.excluded, Arc::new(Excluded { v4: vec![(0x0a00_0001, 0x0a00_0002)], v6: vec![] }));
        for (text, kind) in [(r#""10.0.0.1""#, "string"), ("null", "null"), ("{}", "map"), ("7", "number")] {
            let e = serde_json::from_str::<Exclude>(text).unwrap_err();
            assert!(e.to_string().starts_with(&format!("invalid type: {kind}, expected a list")), "{e}");
        }
    }

    /// `cidrs` covers exactly the merged intervals, with aligned blocks, and reads back as the
    /// same set.
    #[test]
    fn cidrs_cover_exactly_the_excluded_addresses() {
        let mut rnd = xorshift(0x1234_5678_9abc_def1);
        for _ in 0..300 {
            let mut nets: Vec<String> = Vec::new();
            for _ in 0..rnd(8) {
                let net = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, rnd(256) as u8)), 24 + rnd(9) as u8);
                nets.push(net.unwrap().trunc().to_string());
            }
            for _ in 0..rnd(3) {
                let net = IpNet::new(
                    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, rnd(256) as u16)),
                    120 + rnd(9) as u8,
                );
                nets.push(net.unwrap().trunc().to_string());
            }
            let x = nets.iter().map(String::as_str).collect::<Exclude>().excluded().unwrap();
            let cidrs: Vec<IpNet> = x.cidrs().collect();
            assert_eq!(Excluded::from(&cidrs[..]), *x, "{nets:?} -> {cidrs:?}");
            for ip in (0u32..256).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))) {
                let listed = nets.iter().any(|n| n.parse::<IpNet>().unwrap().contains(&ip));
                assert_eq!(x.covering(ip).is_some(), listed, "{nets:?} at {ip}");
                assert_eq!(cidrs.iter().filter(|c| c.contains(&ip)).count(), usize::from(listed), "{cidrs:?} at {ip}");
            }
        }
        let intervals = |entries: &[&str]| entries.iter().copied().collect::<Exclude>().excluded().unwrap();
        let all = intervals(&["0.0.0.0/0", "::/0"]);
        assert_eq!(all.cidrs().map(|c| c.to_string()).collect::<Vec<_>>(), ["0.0.0.0/0", "::/0"]);
        let odd = intervals(&["0.0.0.1", "0.0.0.2", "0.0.0.3", "0.0.0.4", "0.0.0.5", "0.0.0.6"]);
        assert_eq!(
            odd.cidrs().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]
        );
    }
}
