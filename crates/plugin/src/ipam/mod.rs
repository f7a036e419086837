//! The IPAM verbs: what ADD, DEL, CHECK, GC and STATUS do with a pool and a store.

pub mod exclude;
pub mod gc;
pub mod pool;
pub mod resolv;

use crate::cni::config::Request;
use crate::cni::env::{Attachment, CniArgs};
use crate::cni::error::{CniError, CniResult, code};
use crate::cni::result::{IpConfig, IpamResult, prev_result_ips};
use crate::modes;
use crate::store::host_local::{self, Link};
use crate::store::{self, Access, LeaseRecord, LeaseState, OwnerIndex, OwnerState, Store};
use ipnet::IpNet;
use pool::{Pool, Unusable, describe_set, parse_requested_ip};
use serde_json::Value;
use std::collections::HashSet;
use std::net::IpAddr;
use tracing::{info, warn};

fn ip_config(pool: &Pool, set: usize, ip: IpAddr) -> IpConfig {
    let range = pool.range_sets[set].iter().find(|r| r.contains(ip));
    let prefix = range.map(|r| r.subnet.prefix_len()).unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    IpConfig { address: IpNet::new(ip, prefix).unwrap_or_else(|_| IpNet::from(ip)), gateway: range.map(|r| r.gateway) }
}

fn routes(req: &Request) -> CniResult<Vec<Value>> {
    let mut routes = req.ipam.routes.clone();
    for (i, r) in routes.iter_mut().enumerate() {
        // host-local (Go) reads `Dst` or `GW` as `dst` and `gw` and answers with those names.
        if let Some(obj) = r.as_object_mut() {
            for key in ["dst", "gw"] {
                if !obj.contains_key(key)
                    && let Some(other) = obj.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
                    && let Some(v) = obj.remove(&other)
                {
                    obj.insert(key.to_string(), v);
                }
            }
        }
        let dst = r.get("dst").and_then(Value::as_str);
        if dst.and_then(pool::strict_net).is_none() {
            return Err(CniError::config(&format!("ipam.routes[{i}].dst"), "must be a CIDR such as 0.0.0.0/0"));
        }
        // As host-local: a gateway that is not an address (empty or null is none) is a config
        // error here, not a failure in the main plugin later.
        if let Some(gw) = r.get("gw").filter(|g| !g.is_null() && g.as_str() != Some(""))
            && gw.as_str().and_then(pool::strict_ip).is_none()
        {
            return Err(CniError::config(&format!("ipam.routes[{i}].gw"), format!("{gw} is not an IP address")));
        }
    }
    Ok(routes)
}

/// Requested addresses, matched to range sets as host-local does: each set takes the first
/// request that falls in it; a request that fits no set is an error.
fn requested(req: &Request, args: &CniArgs, pool: &Pool) -> CniResult<Vec<Option<IpAddr>>> {
    let mut per_set = vec![None; pool.range_sets.len()];
    for (source, raw) in req.requested_ips(&args.ips) {
        let Some(ip) = parse_requested_ip(raw) else {
            let problem = format!("{raw:?} is not an IP address");
            return Err(if source == "CNI_ARGS IP" {
                CniError::env("CNI_ARGS", format!("IP={problem}"))
            } else {
                CniError::config(source, problem)
            });
        };
        match pool.find(ip) {
            // The same address through two sources is one request, as in host-local.
            Some((set, _)) if per_set[set].is_none_or(|have| have == ip) => per_set[set] = Some(ip),
            Some((set, _)) => {
                return Err(CniError::new(
                    code::ADDRESS_UNAVAILABLE,
                    format!(
                        "requested addresses {} and {ip} fall in the same range set {set}; one address per range set",
                        per_set[set].unwrap_or(ip)
                    ),
                ));
            }
            None => {
                let sets: Vec<String> = pool.range_sets.iter().map(describe_set).collect();
                return Err(CniError::new(
                    code::ADDRESS_UNAVAILABLE,
                    format!("requested address {ip} ({source}) is not in any configured range: {}", sets.join("; ")),
                ));
            }
        }
    }
    Ok(per_set)
}

/// The addresses `(container_id, ifname)` holds, if its index and every lease agree.
/// What an attachment holds already.
enum Existing {
    /// No owner index: a first ADD.
    Nothing,
    /// An index whose leases do not all agree (a killed ADD, an earlier boot, a changed pool).
    Incomplete,
    /// One lease per range set, `(set, address)`, sorted by set.
    Complete(Vec<(usize, IpAddr)>),
}

fn existing_lease(store: &Store, pool: &Pool, att: &Attachment) -> CniResult<Existing> {
    let idx = match store.owner(&att.container_id, &att.ifname)? {
        OwnerState::Held(idx) => idx,
        OwnerState::None => return Ok(Existing::Nothing),
        OwnerState::Unreadable(_) => return Ok(Existing::Incomplete),
    };
    let complete = complete_lease(store, pool, att, idx.ips)?;
    Ok(complete.map_or(Existing::Incomplete, Existing::Complete))
}

fn complete_lease(
    store: &Store,
    pool: &Pool,
    att: &Attachment,
    ips: Vec<IpAddr>,
) -> CniResult<Option<Vec<(usize, IpAddr)>>> {
    let mut held = Vec::new();
    let boot = store::boot_id();
    for ip in ips {
        let LeaseState::Held(rec) = store.lease(ip)? else {
            return Ok(None);
        };
        // A container ID reused after a reboot (cnitool derives it from the netns path) names a
        // new container: the old lease is stale, not its own.
        if !rec.boot_id.is_empty() && rec.boot_id != boot {
            return Ok(None);
        }
        let Some((set, _)) = pool.find(ip) else {
            return Ok(None);
        };
        if !rec.owned_by(&att.container_id, &att.ifname) || held.iter().any(|(s, _)| *s == set) {
            return Ok(None);
        }
        held.push((set, ip));
    }
    if held.len() != pool.range_sets.len() {
        return Ok(None);
    }
    held.sort();
    Ok(Some(held))
}

fn holder(store: &Store, ip: IpAddr) -> String {
    match store.lease(ip) {
        Ok(LeaseState::Held(rec)) => rec.owner_label(),
        _ => "an unreadable record".into(),
    }
}

pub fn add(req: &Request, att: &Attachment, args: &CniArgs) -> CniResult<IpamResult> {
    let pool = modes::pool(req)?;
    let routes = routes(req)?;
    let dns = req.ipam.resolv_conf.as_deref().map(resolv::load).transpose()?;
    let wanted = requested(req, args, &pool)?;
    let mut store = Store::open(&req.data_dir(), &req.conf.name, Access::Exclusive)?;
    let mode = modes::mode_name(req);
    // pool.json only feeds `podcidr status`: a full disk must not fail the ADD for it (STATUS
    // could not foresee that), only the lease itself.
    if let Err(e) = store.write_pool(&pool_json_head(&pool, mode), || pool_json(&pool, mode)) {
        warn!("pool.json not updated (podcidr status may show the earlier ranges): {}", e.msg);
    }
    // During a migration from host-local: its leases count as taken (docs/migrating-from-host-local.md).
    let link = Link::open(&store)?;

    let existing = existing_lease(&store, &pool, att)?;
    if let Existing::Complete(held) = &existing {
        let matches = held.iter().all(|(set, ip)| wanted[*set].is_none_or(|w| w == *ip));
        if !matches {
            return Err(CniError::new(
                code::ADDRESS_UNAVAILABLE,
                format!(
                    "container {} interface {} already holds {}; DEL it before asking for another address",
                    att.container_id,
                    att.ifname,
                    held.iter().map(|(_, ip)| ip.to_string()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        info!(container = %att.container_id, ifname = %att.ifname, "ADD repeated; returning the lease it holds");
        let ips = held.iter().map(|(set, ip)| ip_config(&pool, *set, *ip)).collect();
        return Ok(IpamResult { ips, routes, dns });
    }
    if let Existing::Incomplete = existing {
        // Whatever a killed ADD of this attachment left behind is released before starting over.
        let leftover = store.release(&att.container_id, &att.ifname)?;
        if let Some(link) = &link {
            link.unreserve(&att.container_id, &att.ifname, &leftover);
        }
        warn!(container = %att.container_id, ifname = %att.ifname, ?leftover, "released an incomplete earlier ADD");
    }

    let mut chosen = Vec::with_capacity(pool.range_sets.len());
    for (set, want) in wanted.iter().enumerate() {
        let ip = match want {
            Some(ip) => take_requested(&mut store, link.as_ref(), &pool, set, *ip)?,
            None => match find_free(&mut store, link.as_ref(), &pool, set)? {
                Some(ip) => ip,
                None => {
                    return Err(CniError::new(
                        code::NO_FREE_ADDRESS,
                        format!(
                            "failed to allocate for range {set}: no IP addresses available in range set: {}",
                            describe_set(&pool.range_sets[set])
                        ),
                    ));
                }
            },
        };
        chosen.push((set, ip));
    }

    let boot_id = store::boot_id();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let records: Vec<LeaseRecord> = chosen
        .iter()
        .map(|&(set, ip)| {
            let cfg = ip_config(&pool, set, ip);
            LeaseRecord {
                ip,
                range_set: set,
                subnet: cfg.address.trunc(),
                gateway: cfg.gateway,
                container_id: att.container_id.clone(),
                ifname: att.ifname.clone(),
                netns: att.netns.clone(),
                pod_namespace: args.pod_namespace.clone(),
                pod_name: args.pod_name.clone(),
                pod_uid: args.pod_uid.clone(),
                boot_id: boot_id.clone(),
                created: created.clone(),
            }
        })
        .collect();
    let owner = OwnerIndex {
        container_id: att.container_id.clone(),
        ifname: att.ifname.clone(),
        ips: chosen.iter().map(|(_, ip)| *ip).collect(),
    };
    if let Some(link) = &link {
        link.reserve(&owner)?;
    }
    if let Err(e) = store.claim(&owner, &records) {
        if let Some(link) = &link {
            link.unreserve(&owner.container_id, &owner.ifname, &owner.ips);
        }
        return Err(e);
    }
    for &(set, ip) in &chosen {
        store.set_last_reserved(set, ip)?;
    }
    info!(container = %att.container_id, ifname = %att.ifname, ips = ?owner.ips, "ADD");
    let ips = chosen.iter().map(|&(set, ip)| ip_config(&pool, set, ip)).collect();
    Ok(IpamResult { ips, routes, dns })
}

fn take_requested(store: &mut Store, link: Option<&Link>, pool: &Pool, set: usize, ip: IpAddr) -> CniResult<IpAddr> {
    let unavailable = |why: String| CniError::new(code::ADDRESS_UNAVAILABLE, format!("requested address {ip} {why}"));
    match pool.check_usable(set, ip) {
        Ok(_) => {}
        Err(Unusable::Reserved) => {
            return Err(unavailable("is the gateway, network or broadcast address of its subnet".into()));
        }
        Err(Unusable::Excluded) => return Err(unavailable("is excluded by ipam.exclude".into())),
        Err(Unusable::NotInRange) => {
            return Err(unavailable(format!("is not in range set {}", describe_set(&pool.range_sets[set]))));
        }
    }
    if store.is_taken(ip)? {
        // A container restarted after a reboot asks for its address again (podman's static
        // IPs): the lease its earlier self left is reclaimed, as a full range set would be.
        let Some(stale) = reclaimable(store, ip)? else {
            return Err(unavailable(format!("is already leased to {}", holder(store, ip))));
        };
        warn!(%ip, owner = %stale.owner, reason = %stale.reason, "reclaiming a requested address");
        if let Some(e) = gc::apply(store, link, std::slice::from_ref(&stale)).into_iter().next() {
            return Err(e);
        }
        store.forget_listing();
    }
    if let Some(link) = link
        && link.is_taken(ip)?
    {
        return Err(unavailable("is leased by host-local".into()));
    }
    Ok(ip)
}

/// The lease on `ip` if it may be released for a new owner: written in an earlier boot, or
/// damaged and written before this boot began (the rules of [`gc::plan`] for earlier boots).
fn reclaimable(store: &Store, ip: IpAddr) -> CniResult<Option<gc::Stale>> {
    let stale = |container_id: String, ifname: String, owner: String, reason: String| gc::Stale {
        file: ip.to_string(),
        ip,
        container_id,
        ifname,
        owner,
        reason,
        by_netns: false,
    };
    Ok(match store.lease(ip)? {
        LeaseState::Held(rec) if store::of_earlier_boot(&rec) => {
            let reason = format!("leased in an earlier boot ({})", rec.boot_id);
            Some(stale(rec.container_id.clone(), rec.ifname.clone(), rec.owner_label(), reason))
        }
        LeaseState::Unreadable(why)
            if store::boot_time().zip(store.lease_mtime(&ip.to_string())).is_some_and(|(b, m)| m < b) =>
        {
            let reason = format!("damaged record ({why}) written before this boot");
            Some(stale(String::new(), String::new(), "unreadable record".into(), reason))
        }
        _ => None,
    })
}

/// Round robin from the last reserved address. When the set is full, leases left from an
/// earlier boot are reclaimed and the walk tried once more.
fn find_free(store: &mut Store, link: Option<&Link>, pool: &Pool, set: usize) -> CniResult<Option<IpAddr>> {
    for attempt in 0..2 {
        for ip in pool.walk(set, store.last_reserved(set)) {
            if !store.is_taken(ip)? && !link.map(|l| l.is_taken(ip)).transpose()?.unwrap_or(false) {
                return Ok(Some(ip));
            }
        }
        if attempt == 0 && gc::reclaim_earlier_boots(store, link)? == 0 {
            break;
        }
    }
    Ok(None)
}

pub fn del(req: &Request, att: &Attachment) -> CniResult<()> {
    let Some(store) = Store::open_if_present(&req.data_dir(), &req.conf.name)? else {
        return Ok(());
    };
    let released = store.release(&att.container_id, &att.ifname)?;
    host_local::on_del(&store, &att.container_id, &att.ifname, &released)?;
    info!(container = %att.container_id, ifname = %att.ifname, ?released, "DEL");
    Ok(())
}

pub fn check(req: &Request, att: &Attachment) -> CniResult<()> {
    let pool = modes::pool(req)?;
    // Without prevResult there is nothing to compare; as host-local, holding a lease passes.
    let prev_ips = match &req.conf.prev_result {
        None => None,
        Some(prev) => Some(
            prev_result_ips(prev)
                .ok_or_else(|| CniError::config("prevResult.ips", "is not a list of {address} objects"))?,
        ),
    };
    let failed = |msg: String| CniError::new(code::CHECK_FAILED, msg);
    let store = Store::open_if_present(&req.data_dir(), &req.conf.name)?;
    let Some(store) = store else {
        return Err(failed(format!("no lease for container {} interface {}", att.container_id, att.ifname)));
    };
    let Existing::Complete(held) = existing_lease(&store, &pool, att)? else {
        return Err(failed(format!(
            "no complete lease for container {} interface {} in the configured ranges",
            att.container_id, att.ifname
        )));
    };
    let Some(prev_ips) = prev_ips else {
        return Ok(());
    };
    let held: HashSet<IpAddr> = held.into_iter().map(|(_, ip)| ip).collect();
    for ip in &held {
        if !prev_ips.iter().any(|p| p.addr() == *ip) {
            return Err(failed(format!("the lease holds {ip}, which prevResult does not list")));
        }
    }
    for p in &prev_ips {
        if pool.find(p.addr()).is_some() && !held.contains(&p.addr()) {
            return Err(failed(format!("prevResult lists {}, which this attachment does not hold", p.addr())));
        }
    }
    Ok(())
}

/// CNI GC: releases every lease whose attachment is not in `cni.dev/valid-attachments`, and
/// every lease of an earlier boot. Without the list only the latter go: a GC must never release
/// a live lease. Errors do not stop it; they are reported together.
pub fn gc(req: &Request) -> CniResult<()> {
    let Some(store) = Store::open_if_present(&req.data_dir(), &req.conf.name)? else {
        return Ok(());
    };
    let valid = req.gc_attachments().map(|list| gc::Valid {
        attachments: list.iter().map(|a| (a.container_id.clone(), a.ifname.clone())).collect(),
        containers: HashSet::new(),
    });
    let criteria = gc::Criteria { earlier_boot: true, netns_gone: false, valid: valid.clone() };
    let stale = gc::plan(&store, &criteria)?;
    let link = Link::open(&store)?;
    let mut errors = gc::apply(&store, link.as_ref(), &stale);
    if let Some(valid) = &valid {
        errors.extend(gc::drop_dangling_indexes(&store, valid));
    }
    info!(released = stale.len() - errors.len().min(stale.len()), with_list = valid.is_some(), "GC");
    gc::combine(errors, "GC")
}

/// CNI STATUS: succeeds when an ADD could succeed now. A read-only question: it creates nothing
/// (not even the store of a network that has none yet) and takes the lock shared.
pub fn status(req: &Request) -> CniResult<()> {
    let not_available = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    // No pod CIDR yet: an ADD would be told to try again later, so the plugin is not ready.
    let pool = modes::pool(req).map_err(|e| if e.code == code::TRY_AGAIN_LATER { not_available(e.msg) } else { e })?;
    let dir = Store::network_dir(&req.data_dir(), &req.conf.name);
    let mut store = Store::open_existing(&dir, Access::Shared)
        .map_err(|e| not_available(format!("the lease store is unusable: {}", e.msg)))?;
    // An ADD writes one record per range set (and the owner index is a link to the first).
    let records = pool.range_sets.len();
    let room = match &store {
        Some(store) => store.room(records),
        None => store::room_to_create(&req.data_dir(), records),
    };
    room.map_err(|why| not_available(format!("an ADD could not write its lease now: {why}")))?;
    // As an ADD counts them: host-local's leases while linked.
    let link = store.as_ref().and_then(|_| Link::peek(&dir));
    let link_takes = |ip| link.as_ref().map(|l| l.is_taken(ip)).transpose().map(|t| t.unwrap_or(false));
    // Leases an ADD would reclaim when a set is full, found once, only if a set is full.
    let mut reclaimable: Option<Vec<gc::Stale>> = None;
    for set in 0..pool.range_sets.len() {
        let Some(store) = &mut store else {
            // No store yet: nothing is taken.
            if pool.walk(set, None).next().is_none() {
                return Err(not_available(format!(
                    "no IP addresses available in range set: {}",
                    describe_set(&pool.range_sets[set])
                )));
            }
            continue;
        };
        let mut free = false;
        for ip in pool.walk(set, store.last_reserved(set)) {
            if !store.is_taken(ip)? && !link_takes(ip)? {
                free = true;
                break;
            }
        }
        if !free {
            if reclaimable.is_none() {
                let criteria = gc::Criteria { earlier_boot: true, ..gc::Criteria::default() };
                reclaimable = Some(gc::plan(store, &criteria)?);
            }
            // A reclaimed lease takes its own file in host-local's directory, not another's.
            for s in reclaimable.iter().flatten() {
                let other = link.as_ref().map(|l| l.taken_by_other(s.ip, &s.container_id, &s.ifname)).transpose()?;
                if pool.check_usable(set, s.ip).is_ok() && other != Some(true) {
                    free = true;
                    break;
                }
            }
        }
        if !free {
            return Err(not_available(format!(
                "no IP addresses available in range set: {}",
                describe_set(&pool.range_sets[set])
            )));
        }
    }
    Ok(())
}

/// What `pool.json` holds: the ranges in force, for `podcidr status`.
pub fn pool_json(pool: &Pool, mode: &str) -> Vec<u8> {
    let mut out = pool_json_head(pool, mode);
    // Strings and plain structs: serializing them into a Vec cannot fail.
    out.extend_from_slice(b"\"mode\":");
    let _ = serde_json::to_writer(&mut out, mode);
    out.extend_from_slice(b",\"rangeSets\":");
    let _ = serde_json::to_writer(&mut out, &pool.range_sets);
    // `exclude` by hand: with 10,000 entries, formatting them through `Display` cost more than
    // the rest of an ADD.
    out.extend_from_slice(b",\"exclude\":[");
    for (i, net) in pool.excluded().cidrs().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        push_net(&mut out, &net);
        out.push(b'"');
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// How `pool.json` begins: `{"fingerprint":"<16 hex digits>",`, a hash of everything after it.
pub fn pool_json_head(pool: &Pool, mode: &str) -> Vec<u8> {
    format!("{{\"fingerprint\":\"{:016x}\",", pool.fingerprint(mode)).into_bytes()
}

/// `net` as `IpNet`'s `Display` writes it.
fn push_net(out: &mut Vec<u8>, net: &ipnet::IpNet) {
    fn push_u8(out: &mut Vec<u8>, v: u8) {
        if v >= 100 {
            out.push(b'0' + v / 100);
        }
        if v >= 10 {
            out.push(b'0' + v / 10 % 10);
        }
        out.push(b'0' + v % 10);
    }
    match net {
        ipnet::IpNet::V4(n) => {
            for (i, o) in n.addr().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u8(out, o);
            }
        }
        ipnet::IpNet::V6(n) => {
            use std::io::Write as _;
            let _ = write!(out, "{}", n.addr());
        }
    }
    out.push(b'/');
    push_u8(out, net.prefix_len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_json_writes_excludes_as_serde_would() {
        let exclude = ["0.0.0.0/32", "10.9.99.100/32", "255.255.255.255", "10.200.0.0/30", "fd00::1", "fd00:1::/64"];
        let nets = exclude.into_iter().collect::<super::exclude::Exclude>().excluded().unwrap();
        let range = pool::Range::new("r", "10.200.0.0/16", None, None, None).unwrap();
        let pool = Pool::new(vec![vec![range]], nets.clone()).unwrap();
        let bytes = pool_json(&pool, "static");
        assert!(bytes.starts_with(&pool_json_head(&pool, "static")));
        let mut got: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let fp = got.as_object_mut().unwrap().remove("fingerprint").unwrap();
        assert_eq!(fp.as_str().map(str::len), Some(16));
        let cidrs: Vec<IpNet> = nets.cidrs().collect();
        let want = serde_json::json!({ "mode": "static", "rangeSets": pool.range_sets, "exclude": cidrs });
        assert_eq!(got, want);
        // Sorted and merged, IPv4 first, each a CIDR: what the config excludes, not how it was written.
        assert_eq!(
            got["exclude"],
            serde_json::json!([
                "0.0.0.0/32",
                "10.9.99.100/32",
                "10.200.0.0/30",
                "255.255.255.255/32",
                "fd00::1/128",
                "fd00:1::/64"
            ])
        );
        let read_back: Pool = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(read_back, pool);
    }

    #[test]
    fn the_fingerprint_follows_mode_ranges_and_every_exclude() {
        let range = |s| pool::Range::new("r", s, None, None, None).unwrap();
        let with = |subnet, excl: &[&str]| {
            let excluded = excl.iter().copied().collect::<super::exclude::Exclude>().excluded().unwrap();
            Pool::new(vec![vec![range(subnet)]], excluded).unwrap()
        };
        let base = with("10.200.0.0/16", &["10.200.0.5", "fd00::1"]).fingerprint("static");
        assert_eq!(base, with("10.200.0.0/16", &["10.200.0.5", "fd00::1"]).fingerprint("static"));
        for other in [
            with("10.200.0.0/16", &["10.200.0.5", "fd00::1"]).fingerprint("kubernetes"),
            with("10.201.0.0/16", &["10.200.0.5", "fd00::1"]).fingerprint("static"),
            with("10.200.0.0/16", &["10.200.0.6", "fd00::1"]).fingerprint("static"),
            with("10.200.0.0/16", &["10.200.0.4/30", "fd00::1"]).fingerprint("static"),
            with("10.200.0.0/16", &["10.200.0.5", "fd00::2"]).fingerprint("static"),
            with("10.200.0.0/16", &["10.200.0.5"]).fingerprint("static"),
        ] {
            assert_ne!(base, other);
        }
    }
}
