//! The operator's allocator: cuts pools of CIDRs into per-node CIDRs. Pure code (no I/O, no
//! clock, no Kubernetes client) so that every rule can be property-tested.
//!
//! Everything any node holds, whatever its origin (handed out here, adopted on restore, in a
//! draining CIDR, or foreign), is kept in one interval map per family. Memory therefore grows
//! with the number of nodes, never with a pool's capacity (`fd00::/8` with a /64 per node is
//! 2^56 slices), and the free-slice search jumps over held intervals instead of walking a
//! bitmap.
//!
//! CIDRs are aligned prefixes, so two of them are either disjoint or nested. The map keeps every
//! held CIDR with its holders (overlaps between nodes are conflicts: reported, both kept) and,
//! beside it, the union of all of them as disjoint runs, adjacent ones merged. The search and
//! the counts only look at the runs.

use super::selector::Selector;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

/// One family of a pool: its CIDRs, used in this order, and the prefix length of each node's
/// slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySpec {
    pub cidrs: Vec<IpNet>,
    pub mask: u8,
}

/// A pool as configured (flags for `default`, or a PodCIDRPool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    /// `None`: every node, after every pool with a selector.
    pub selector: Option<Selector>,
    pub ipv4: Option<FamilySpec>,
    pub ipv6: Option<FamilySpec>,
}

impl PoolSpec {
    pub fn family(&self, family: Family) -> Option<&FamilySpec> {
        match family {
            Family::V4 => self.ipv4.as_ref(),
            Family::V6 => self.ipv6.as_ref(),
        }
    }
}

/// Why a pool (or a change to it) was refused; `message` says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolProblem {
    pub pool: String,
    pub message: String,
}

impl fmt::Display for PoolProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool {}: {}", self.pool, self.message)
    }
}

/// What a CIDR a node already holds turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupancy {
    /// Inside a pool's CIDR (active or draining): counted in that pool.
    Adopted { pool: String },
    /// Outside every pool: occupied, never handed out.
    Foreign,
    /// Overlaps a CIDR another node holds. Both stay occupied.
    Conflict { holder: String },
}

/// CIDRs handed out to a node: one per family of the pool, IPv4 first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub pool: String,
    pub cidrs: Vec<IpNet>,
}

/// No pool can serve the node; `message` names the candidates and why each could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAvailable {
    pub message: String,
    /// The pools whose selector matched, best first.
    pub candidates: Vec<String>,
}

impl fmt::Display for NotAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NotAvailable {}

/// Counts of one pool family, in slices (node CIDRs of the pool's mask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    pub pool: String,
    pub family: Family,
    /// The active CIDRs (draining ones are not listed).
    pub cidrs: Vec<IpNet>,
    pub mask: u8,
    /// Slices in the active CIDRs (saturates at u128::MAX for `::/0` with a /128).
    pub capacity: u128,
    /// Nodes of this pool holding a CIDR in its active CIDRs (ALLOCATED in the pool status, the
    /// metrics and `status`): a node counts once whatever the size of its CIDR.
    pub allocated: u128,
    /// Slices of the active CIDRs that overlap nothing any node holds (foreign CIDRs and
    /// conflicts included): how many more nodes it can serve.
    pub free: u128,
    /// Slices held in this pool's draining CIDRs (removed from the spec, still in use).
    pub draining: u128,
}

/// A CIDR held by more than one node, or two overlapping CIDRs of different nodes: both stay
/// occupied (see [`Occupancy::Conflict`]) until someone fixes one by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub cidr: IpNet,
    /// Its holders (more than one: the same CIDR twice).
    pub nodes: Vec<String>,
    /// Another node's CIDR that overlaps it, with its holders; `None` for the same CIDR twice.
    pub overlaps: Option<(IpNet, Vec<String>)>,
}

/// A CIDR removed from a pool (or of a deleted pool) while nodes still hold slices of it.
#[derive(Debug, Clone)]
struct Draining {
    pool: String,
    family: Family,
    cidr: IpNet,
    mask: u8,
}

#[derive(Debug, Clone)]
struct Pool {
    spec: PoolSpec,
    /// Start of the last slice handed out, per family: next-fit continues after it.
    cursor: [Option<u128>; 2],
}

#[derive(Debug, Clone)]
struct Holder {
    /// The pool the node was served from or adopted into; "" when all its CIDRs are foreign.
    pool: String,
    cidrs: Vec<IpNet>,
}

/// Everything held in one family.
#[derive(Debug, Clone, Default)]
struct Space {
    /// Every held CIDR as (first, last) address, with its holders (more than one: a conflict).
    held: BTreeMap<(u128, u128), Vec<String>>,
    /// The union of `held` as disjoint runs, first -> last, adjacent runs merged.
    runs: BTreeMap<u128, u128>,
}

/// The allocator. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pools: BTreeMap<String, Pool>,
    draining: Vec<Draining>,
    holders: BTreeMap<String, Holder>,
    spaces: [Space; 2],
}

// ---------------------------------------------------------------------------------------------
// Address arithmetic

/// First and last address of `net` as integers (IPv4 in the low 32 bits).
fn bounds(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (u32::from(n.network()) as u128, u32::from(n.broadcast()) as u128),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn net_at(family: Family, start: u128, prefix: u8) -> IpNet {
    match family {
        // The start comes from an IPv4 CIDR, so it fits in 32 bits.
        Family::V4 => IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(start as u32), prefix)),
        Family::V6 => IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(start), prefix)),
    }
}

/// `size - 1` of a slice of prefix `mask` in `family` (a mask, so /0 of IPv6 does not overflow).
fn slice_mask(family: Family, mask: u8) -> u128 {
    let bits = family.width().saturating_sub(mask) as u32;
    if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 }
}

/// Number of slices of `size_m1 + 1` addresses in [first, last] (both slice-aligned starts).
fn slices_between(first: u128, last: u128, size_m1: u128) -> u128 {
    let bits = size_m1.count_ones();
    if bits >= 128 { 1 } else { ((last - first) >> bits) + 1 }
}

/// Slices of `mask` in `cidr` (saturating).
fn capacity_of(cidr: &IpNet, mask: u8) -> u128 {
    let bits = mask.saturating_sub(cidr.prefix_len()) as u32;
    if bits >= 128 { u128::MAX } else { 1u128 << bits }
}

fn contains(outer: (u128, u128), inner: (u128, u128)) -> bool {
    outer.0 <= inner.0 && inner.1 <= outer.1
}

// ---------------------------------------------------------------------------------------------
// The interval map

impl Space {
    /// Any run overlapping [s, e]?
    fn blocked(&self, s: u128, e: u128) -> bool {
        matches!(self.runs.range(..=e).next_back(), Some((_, &re)) if re >= s)
    }

    /// First free slice start in [from, limit] of the CIDR starting at `cs`, slices of
    /// `size_m1 + 1` addresses. Jumps over each held run in one step.
    fn first_free(&self, cs: u128, size_m1: u128, from: u128, limit: u128) -> Option<u128> {
        let mut p = from;
        while p <= limit {
            let q = p + size_m1;
            match self.runs.range(..=q).next_back() {
                Some((_, &re)) if re >= p => {
                    // The slice after the one that holds the run's last address.
                    p = (cs + ((re - cs) | size_m1)).checked_add(1)?;
                }
                _ => return Some(p),
            }
        }
        None
    }

    /// Slices of `size_m1 + 1` addresses in [cs, ce] that overlap a run.
    fn blocked_slices(&self, cs: u128, ce: u128, size_m1: u128) -> u128 {
        let before = self.runs.range(..cs).next_back().filter(|&(_, &re)| re >= cs);
        let mut count = 0u128;
        let mut last_counted: Option<u128> = None;
        for (&rs, &re) in before.into_iter().chain(self.runs.range(cs..=ce)) {
            let (a, b) = (rs.max(cs), re.min(ce));
            let first = cs + ((a - cs) & !size_m1);
            let last = cs + ((b - cs) & !size_m1);
            let mut n = slices_between(first, last, size_m1);
            // Two runs that are not adjacent may still touch the same slice.
            if last_counted == Some(first) {
                n -= 1;
            }
            count = count.saturating_add(n);
            last_counted = Some(last);
        }
        count
    }

    /// Other holders of CIDRs that overlap [s, e] (nested in it or containing it).
    fn overlapping_holders(&self, s: u128, e: u128, width: u8, exclude: &str) -> Option<String> {
        if !self.blocked(s, e) {
            return None;
        }
        let others = |nodes: &Vec<String>| nodes.iter().find(|n| n.as_str() != exclude).cloned();
        // Containing (or equal) CIDRs are its supernets.
        if let Some(h) = self.supernets(s, e, width).find_map(|k| self.held.get(&k).and_then(others)) {
            return Some(h);
        }
        // Nested in it: start within [s, e].
        self.held.range((s, 0)..=(e, u128::MAX)).find_map(|(_, nodes)| others(nodes))
    }

    /// Is [s, e] inside a held CIDR (other than one entry that is being removed)?
    fn covered_by_held(&self, s: u128, e: u128, width: u8) -> bool {
        self.supernets(s, e, width).any(|k| self.held.contains_key(&k))
    }

    /// [s, e] and its supernets, smallest first, as far as they stay inside the run that holds
    /// [s, e]: only those can be held. Usually a few, not one per prefix length.
    fn supernets(&self, s: u128, e: u128, width: u8) -> impl Iterator<Item = (u128, u128)> {
        let run = self.runs.range(..=s).next_back().map(|(&rs, &re)| (rs, re)).filter(|&(_, re)| re >= e);
        let len = prefix_len_of(s, e, width);
        (0..=len)
            .rev()
            .map(move |plen| supernet(s, plen, width))
            .take_while(move |&(ss, se)| run.is_some_and(|(rs, re)| rs <= ss && se <= re))
    }

    fn add_run(&mut self, s: u128, e: u128) {
        let mut ns = s;
        let mut ne = e;
        if let Some((&ps, &pe)) = self.runs.range(..=s).next_back()
            && (pe >= s || pe.checked_add(1) == Some(s))
        {
            ns = ps;
            ne = ne.max(pe);
        }
        let upper = e.saturating_add(1);
        let absorbed: Vec<(u128, u128)> = self.runs.range(ns..=upper).map(|(&a, &b)| (a, b)).collect();
        for (a, b) in absorbed {
            self.runs.remove(&a);
            ne = ne.max(b);
        }
        self.runs.insert(ns, ne);
    }

    fn insert(&mut self, s: u128, e: u128, node: &str) {
        let nodes = self.held.entry((s, e)).or_default();
        if nodes.iter().any(|n| n == node) {
            return;
        }
        nodes.push(node.to_string());
        self.add_run(s, e);
    }

    fn remove(&mut self, s: u128, e: u128, node: &str, width: u8) {
        let Some(nodes) = self.held.get_mut(&(s, e)) else { return };
        nodes.retain(|n| n != node);
        if !nodes.is_empty() {
            return;
        }
        self.held.remove(&(s, e));
        if self.covered_by_held(s, e, width) {
            return;
        }
        // Cut [s, e] out of its run, then put back what is still held inside it (conflicts).
        if let Some((&rs, &re)) = self.runs.range(..=s).next_back()
            && re >= e
        {
            self.runs.remove(&rs);
            if rs < s {
                self.runs.insert(rs, s - 1);
            }
            if e < re {
                self.runs.insert(e + 1, re);
            }
        }
        let inside: Vec<(u128, u128)> = self.held.range((s, 0)..=(e, u128::MAX)).map(|(&k, _)| k).collect();
        for (a, b) in inside {
            self.add_run(a, b);
        }
    }
}

/// Prefix length of the aligned CIDR [s, e] in an address space of `width` bits.
fn prefix_len_of(s: u128, e: u128, width: u8) -> u8 {
    let host_bits = 128 - (e - s).leading_zeros();
    let host_bits = if e - s == u128::MAX { 128 } else { host_bits };
    width - host_bits as u8
}

/// The supernet of length `plen` of the address `s`, as (first, last).
fn supernet(s: u128, plen: u8, width: u8) -> (u128, u128) {
    let host = slice_mask(if width == 32 { Family::V4 } else { Family::V6 }, plen);
    (s & !host, (s & !host) | host)
}

// ---------------------------------------------------------------------------------------------
// Validation

// The rules themselves are in `super::rules` (one statement for the CRD, the flags and here).
use super::rules::{self, cross_problems, pool_problems};

fn problem(pool: &str, messages: Vec<String>) -> Option<PoolProblem> {
    (!messages.is_empty()).then(|| PoolProblem { pool: pool.to_string(), message: messages.join("; ") })
}

// ---------------------------------------------------------------------------------------------
// The allocator

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate a pool set on its own (the flags at start-up; PodCIDRPool specs): CIDRs that
    /// overlap within a pool or across pools, host bits set, a mask shorter than its CIDR's
    /// prefix or longer than the family's width, a family with a mask but no CIDR, a pool with
    /// no family, a name given twice. One problem per bad pool.
    pub fn validate(pools: &[PoolSpec]) -> Vec<PoolProblem> {
        let mut out = Vec::new();
        for (i, p) in pools.iter().enumerate() {
            let mut messages = pool_problems(p);
            if pools[..i].iter().any(|q| q.name == p.name) {
                messages.push("the pool name is given twice: give each pool its own name".to_string());
            }
            for (j, q) in pools.iter().enumerate() {
                if i != j && q.name != p.name {
                    messages.extend(cross_problems(p, q));
                }
            }
            out.extend(problem(&p.name, messages));
        }
        out
    }

    /// Replace the pool set (live edits). New pools and CIDRs serve at once. A CIDR removed
    /// while nodes hold slices of it (also every CIDR of a removed pool) is *draining*: no new
    /// slice from it, forgotten when its last holder is released. A pool with problems (see
    /// [`Allocator::validate`], plus a changed mask of a family it has, plus overlap with a pool
    /// already accepted) is refused: kept as it was, or left out if new.
    pub fn set_pools(&mut self, pools: Vec<PoolSpec>) -> Vec<PoolProblem> {
        let mut problems = Vec::new();
        // Start from the accepted specs of the pools that stay, then accept each new spec that
        // does not collide with what is accepted so far: the set stays overlap-free.
        let mut accepted: BTreeMap<String, PoolSpec> = BTreeMap::new();
        for p in &pools {
            if let Some(old) = self.pools.get(&p.name) {
                accepted.insert(p.name.clone(), old.spec.clone());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in pools {
            if !seen.insert(p.name.clone()) {
                problems.push(PoolProblem {
                    pool: p.name.clone(),
                    message: "the pool name is given twice: give each pool its own name".to_string(),
                });
                continue;
            }
            let mut messages = pool_problems(&p);
            let held = self.draining.iter().filter(|d| d.pool == p.name).map(|d| (d.family, d.mask));
            messages.extend(
                rules::mask_change(self.pools.get(&p.name).map(|o| &o.spec), &p, held).iter().map(|b| b.to_string()),
            );
            for (name, q) in &accepted {
                if *name != p.name {
                    messages.extend(cross_problems(&p, q));
                }
            }
            match problem(&p.name, messages) {
                Some(pr) => problems.push(pr),
                None => {
                    accepted.insert(p.name.clone(), p);
                }
            }
        }

        // CIDRs that leave the active set: draining if held, else forgotten.
        for (name, old) in &self.pools {
            for family in Family::BOTH {
                let Some(ofs) = old.spec.family(family) else { continue };
                let kept = accepted.get(name).and_then(|p| p.family(family));
                for c in &ofs.cidrs {
                    if kept.is_some_and(|k| k.cidrs.contains(c)) {
                        continue;
                    }
                    let (s, e) = bounds(c);
                    if self.spaces[family.index()].blocked(s, e) {
                        self.draining.push(Draining { pool: name.clone(), family, cidr: *c, mask: ofs.mask });
                    }
                }
            }
        }

        let mut next: BTreeMap<String, Pool> = BTreeMap::new();
        for (name, spec) in accepted {
            let mut cursor = [None; 2];
            if let Some(old) = self.pools.get(&name) {
                for family in Family::BOTH {
                    // A family removed and added back may have another mask: start afresh.
                    if old.spec.family(family).map(|f| f.mask) == spec.family(family).map(|f| f.mask) {
                        cursor[family.index()] = old.cursor[family.index()];
                    }
                }
            }
            next.insert(name, Pool { spec, cursor });
        }
        self.pools = next;
        // A draining CIDR inside an active one (re-added, or grown into) is simply part of the
        // pool again; its holders count there.
        let pools = &self.pools;
        self.draining.retain(|d| {
            !pools.values().any(|p| {
                p.spec.family(d.family).is_some_and(|f| f.cidrs.iter().any(|c| contains(bounds(c), bounds(&d.cidr))))
            })
        });
        self.forget_idle_draining();
        // Nodes adopted as foreign may be inside a pool now.
        let unassigned: Vec<String> =
            self.holders.iter().filter(|(_, h)| h.pool.is_empty()).map(|(n, _)| n.clone()).collect();
        for node in unassigned {
            let pool = self.holders[&node].cidrs.iter().find_map(|c| self.pool_of(c));
            if let (Some(pool), Some(h)) = (pool, self.holders.get_mut(&node)) {
                h.pool = pool;
            }
        }
        problems
    }

    fn forget_idle_draining(&mut self) {
        let idle: Vec<bool> = self.draining.iter().map(|d| self.draining_held(d) == 0).collect();
        let mut i = 0;
        self.draining.retain(|_| {
            i += 1;
            !idle[i - 1]
        });
    }

    /// Slices held in a draining CIDR outside every active CIDR: the part of a /16 shrunk to a
    /// /17 that stays counts in the pool, not twice.
    fn draining_held(&self, d: &Draining) -> u128 {
        let space = &self.spaces[d.family.index()];
        let size_m1 = slice_mask(d.family, d.mask);
        let outer = bounds(&d.cidr);
        let all = space.blocked_slices(outer.0, outer.1, size_m1);
        let active: u128 = self
            .pools
            .values()
            .filter_map(|p| p.spec.family(d.family))
            .flat_map(|f| f.cidrs.iter())
            .map(bounds)
            .filter(|&b| contains(outer, b))
            .map(|(s, e)| space.blocked_slices(s, e, size_m1))
            .fold(0u128, u128::saturating_add);
        all.saturating_sub(active)
    }

    /// The pool whose active (first) or draining CIDR contains `cidr`.
    fn pool_of(&self, cidr: &IpNet) -> Option<String> {
        let family = Family::of(cidr);
        let b = bounds(cidr);
        self.pools
            .values()
            .find(|p| p.spec.family(family).is_some_and(|f| f.cidrs.iter().any(|c| contains(bounds(c), b))))
            .map(|p| p.spec.name.clone())
            .or_else(|| {
                self.draining
                    .iter()
                    .find(|d| d.family == family && contains(bounds(&d.cidr), b))
                    .map(|d| d.pool.clone())
            })
    }

    /// Restore / observe: `node` already holds these CIDRs (from its Node or CiliumNode).
    /// Idempotent; CIDRs are added to what the node holds, never removed. Each CIDR is
    /// `Adopted` (inside a pool's active or draining CIDR), `Foreign` (outside every pool), or
    /// `Conflict` (overlaps a CIDR another node holds; both stay occupied).
    pub fn occupy(&mut self, node: &str, cidrs: &[IpNet]) -> Vec<(IpNet, Occupancy)> {
        let mut out = Vec::with_capacity(cidrs.len());
        for raw in cidrs {
            let cidr = raw.trunc();
            let family = Family::of(&cidr);
            let (s, e) = bounds(&cidr);
            let space = &mut self.spaces[family.index()];
            let conflict = space.overlapping_holders(s, e, family.width(), node);
            space.insert(s, e, node);
            let pool = self.pool_of(&cidr);
            let holder = self
                .holders
                .entry(node.to_string())
                .or_insert_with(|| Holder { pool: String::new(), cidrs: Vec::new() });
            if !holder.cidrs.contains(&cidr) {
                holder.cidrs.push(cidr);
            }
            if holder.pool.is_empty()
                && let Some(p) = &pool
            {
                holder.pool = p.clone();
            }
            let occ = match (conflict, pool) {
                (Some(holder), _) => Occupancy::Conflict { holder },
                (None, Some(pool)) => Occupancy::Adopted { pool },
                (None, None) => Occupancy::Foreign,
            };
            out.push((cidr, occ));
        }
        out
    }

    /// Candidate pools for these labels, best first.
    fn candidates(&self, labels: &BTreeMap<String, String>) -> Vec<&Pool> {
        let mut c: Vec<&Pool> =
            self.pools.values().filter(|p| p.spec.selector.as_ref().is_none_or(|s| s.matches(labels))).collect();
        c.sort_by_key(|p| {
            (p.spec.selector.is_none(), std::cmp::Reverse(p.spec.selector.as_ref().map_or(0, |s| s.requirements())))
        });
        // sort_by_key is stable and pools iterate by name: ties stay in name order.
        c
    }

    /// The next free slice of a pool family, next-fit from its cursor.
    fn find(&self, pool: &Pool, family: Family) -> Option<u128> {
        let fs = pool.spec.family(family)?;
        let space = &self.spaces[family.index()];
        let size_m1 = slice_mask(family, fs.mask);
        let ranges: Vec<(u128, u128)> = fs.cidrs.iter().map(bounds).collect();
        let scan = |i: usize, from: u128, to: u128| {
            let (cs, ce) = ranges[i];
            space.first_free(cs, size_m1, from, to.min(ce - size_m1))
        };
        let cursor = pool.cursor[family.index()].and_then(|c| {
            let i = ranges.iter().position(|&(cs, ce)| cs <= c && c <= ce)?;
            // Slice-aligned whatever happened to the pool since (it always is today).
            Some((i, ranges[i].0 + ((c - ranges[i].0) & !size_m1)))
        });
        match cursor {
            None => (0..ranges.len()).find_map(|i| scan(i, ranges[i].0, ranges[i].1)),
            Some((i, c)) => {
                let n = ranges.len();
                c.checked_add(size_m1)
                    .and_then(|x| x.checked_add(1))
                    .and_then(|after| scan(i, after, ranges[i].1))
                    .or_else(|| (1..n).map(|k| (i + k) % n).find_map(|j| scan(j, ranges[j].0, ranges[j].1)))
                    .or_else(|| scan(i, ranges[i].0, c))
            }
        }
    }

    /// One slice per family of the best pool that can serve `node`: candidates are the pools
    /// whose selector matches `labels`, most selector requirements first, then by name; pools
    /// without a selector last. A pool serves only when every family it has has a free slice.
    /// A node that already holds CIDRs gets them back unchanged.
    pub fn allocate(&mut self, node: &str, labels: &BTreeMap<String, String>) -> Result<Allocation, NotAvailable> {
        if let Some(h) = self.holders.get(node) {
            return Ok(Allocation { pool: h.pool.clone(), cidrs: h.cidrs.clone() });
        }
        let candidates = self.candidates(labels);
        if candidates.is_empty() {
            let message = if self.pools.is_empty() {
                format!("no pool can serve node {node}: no pools are configured")
            } else {
                let names: Vec<&str> = self.pools.keys().map(String::as_str).collect();
                format!(
                    "no pool can serve node {node}: no pool's nodeSelector matches its labels (pools: {})",
                    names.join(", ")
                )
            };
            return Err(NotAvailable { message, candidates: Vec::new() });
        }
        let mut reasons = Vec::new();
        let mut chosen = None;
        for pool in &candidates {
            let mut got = Vec::new();
            let mut full = Vec::new();
            for family in Family::BOTH {
                if pool.spec.family(family).is_none() {
                    continue;
                }
                match self.find(pool, family) {
                    Some(start) => got.push((family, start)),
                    None => full.push(family),
                }
            }
            if full.is_empty() {
                chosen = Some((pool.spec.name.clone(), got));
                break;
            }
            for family in full {
                reasons.push(self.full_reason(pool, family));
            }
        }
        let Some((name, got)) = chosen else {
            let names = candidates.iter().map(|p| p.spec.name.clone()).collect();
            return Err(NotAvailable {
                message: format!("no pool can serve node {node}: {}", reasons.join("; ")),
                candidates: names,
            });
        };
        let mut cidrs = Vec::with_capacity(got.len());
        for (family, start) in got {
            let pool = self.pools.get_mut(&name).expect("the chosen pool exists");
            pool.cursor[family.index()] = Some(start);
            let mask = pool.spec.family(family).map_or(family.width(), |f| f.mask);
            let size_m1 = slice_mask(family, mask);
            self.spaces[family.index()].insert(start, start + size_m1, node);
            cidrs.push(net_at(family, start, mask));
        }
        self.holders.insert(node.to_string(), Holder { pool: name.clone(), cidrs: cidrs.clone() });
        Ok(Allocation { pool: name, cidrs })
    }

    fn full_reason(&self, pool: &Pool, family: Family) -> String {
        let st = self.family_stats(pool, family);
        let cidrs: Vec<String> = st.cidrs.iter().map(|c| c.to_string()).collect();
        format!(
            "no free /{} in pool {} ({family}: {}/{} allocated from {})",
            st.mask,
            pool.spec.name,
            st.capacity - st.free,
            st.capacity,
            cidrs.join(", ")
        )
    }

    /// The node is gone: free its CIDRs (and forget draining CIDRs that nobody holds now).
    /// Returns what it held.
    pub fn release(&mut self, node: &str) -> Vec<IpNet> {
        let Some(h) = self.holders.remove(node) else { return Vec::new() };
        for c in &h.cidrs {
            let family = Family::of(c);
            let (s, e) = bounds(c);
            self.spaces[family.index()].remove(s, e, node, family.width());
        }
        if !self.draining.is_empty() {
            self.forget_idle_draining();
        }
        h.cidrs
    }

    /// What `node` holds: its pool ("" when all its CIDRs are foreign) and CIDRs.
    pub fn holds(&self, node: &str) -> Option<(&str, &[IpNet])> {
        self.holders.get(node).map(|h| (h.pool.as_str(), h.cidrs.as_slice()))
    }

    fn family_stats(&self, pool: &Pool, family: Family) -> PoolStats {
        let fs = pool.spec.family(family);
        let mask = fs.map_or(0, |f| f.mask);
        let cidrs = fs.map(|f| f.cidrs.clone()).unwrap_or_default();
        let space = &self.spaces[family.index()];
        let size_m1 = slice_mask(family, mask);
        let mut capacity = 0u128;
        let mut blocked = 0u128;
        for c in &cidrs {
            capacity = capacity.saturating_add(capacity_of(c, mask));
            let (cs, ce) = bounds(c);
            blocked = blocked.saturating_add(space.blocked_slices(cs, ce, size_m1));
        }
        let inside = |c: &IpNet| Family::of(c) == family && cidrs.iter().any(|pc| contains(bounds(pc), bounds(c)));
        let allocated =
            self.holders.values().filter(|h| h.pool == pool.spec.name && h.cidrs.iter().any(inside)).count() as u128;
        PoolStats {
            pool: pool.spec.name.clone(),
            family,
            cidrs,
            mask,
            capacity,
            allocated,
            free: capacity.saturating_sub(blocked),
            draining: self.draining_slices(&pool.spec.name, family),
        }
    }

    fn draining_slices(&self, pool: &str, family: Family) -> u128 {
        let mut n = 0u128;
        for d in self.draining.iter().filter(|d| d.pool == pool && d.family == family) {
            n = n.saturating_add(self.draining_held(d));
        }
        n
    }

    /// Counts per pool and family, by pool name, IPv4 first. A removed pool whose CIDRs still
    /// drain is listed with no CIDRs and zero capacity until its last holder is released.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let mut out = Vec::new();
        let mut names: Vec<&str> = self.pools.keys().map(String::as_str).collect();
        names.extend(self.draining.iter().map(|d| d.pool.as_str()));
        names.sort_unstable();
        names.dedup();
        for name in names {
            for family in Family::BOTH {
                match self.pools.get(name) {
                    Some(p) if p.spec.family(family).is_some() => out.push(self.family_stats(p, family)),
                    _ => {
                        let drains: Vec<&Draining> =
                            self.draining.iter().filter(|d| d.pool == name && d.family == family).collect();
                        if let Some(d) = drains.first() {
                            out.push(PoolStats {
                                pool: name.to_string(),
                                family,
                                cidrs: Vec::new(),
                                mask: d.mask,
                                capacity: 0,
                                allocated: 0,
                                free: 0,
                                draining: self.draining_slices(name, family),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// CIDRs held outside every pool (active or draining), by node name.
    pub fn foreign(&self) -> Vec<(String, IpNet)> {
        let mut out = Vec::new();
        for (node, h) in &self.holders {
            for c in &h.cidrs {
                if self.pool_of(c).is_none() {
                    out.push((node.clone(), *c));
                }
            }
        }
        out
    }

    /// Every CIDR held twice and every overlap between CIDRs of different nodes, by address.
    /// A nested overlap is found against the CIDR that reaches furthest before it (one line per
    /// CIDR is enough to say what to fix).
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut out = Vec::new();
        for family in Family::BOTH {
            let mut reach: Option<((u128, u128), &Vec<String>)> = None;
            for (&(s, e), nodes) in &self.spaces[family.index()].held {
                let net = |s: u128, e: u128| net_at(family, s, prefix_len_of(s, e, family.width()));
                if nodes.len() > 1 {
                    out.push(Duplicate { cidr: net(s, e), nodes: nodes.clone(), overlaps: None });
                }
                if let Some(((rs, re), other)) = reach
                    && re >= s
                    && other.iter().any(|o| !nodes.contains(o))
                {
                    out.push(Duplicate {
                        cidr: net(s, e),
                        nodes: nodes.clone(),
                        overlaps: Some((net(rs, re), other.clone())),
                    });
                }
                if reach.is_none_or(|((_, re), _)| e > re) {
                    reach = Some(((s, e), nodes));
                }
            }
        }
        out
    }

    /// The accepted spec of each pool, by name (what `set_pools` kept).
    pub fn pools(&self) -> Vec<&PoolSpec> {
        self.pools.values().map(|p| &p.spec).collect()
    }

    /// Draining CIDRs per pool: (pool, CIDR).
    pub fn draining(&self) -> Vec<(&str, IpNet)> {
        self.draining.iter().map(|d| (d.pool.as_str(), d.cidr)).collect()
    }

    /// Every node that holds CIDRs, with its pool ("" if foreign) and CIDRs, by node name.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &str, &[IpNet])> {
        self.holders.iter().map(|(n, h)| (n.as_str(), h.pool.as_str(), h.cidrs.as_slice()))
    }
}
