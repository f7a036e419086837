//! PodCIDRPools (issue 12): the pool set comes from the flags (the pool `default`, created and
//! kept in step with them as a PodCIDRPool) and every PodCIDRPool. Specs go to the allocator as
//! a whole; a spec it (or the CRD's rules, checked here again) refuses keeps the pool as it
//! was, and the problem is shown in the pool's `Ready` condition. A deleted pool is held by the
//! finalizer `podcidr.io/drain` until no node holds a CIDR of it. Statuses are refreshed every
//! second and written only when they change. Without the CRD, the flag pool alone is used until
//! the CRD appears (looked for every few seconds).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::allocator::{Family, FamilySpec, PoolSpec, PoolStats};
use super::controller::{Input, PoolSet, Shared};
use super::crd::{
    ACCEPTED_ANNOTATION, CONDITION_DRAINING, CONDITION_EXHAUSTED, CONDITION_READY, DEFAULT_POOL, DRAIN_FINALIZER,
    PodCIDRPool, PodCIDRPoolSpec, PodCIDRPoolStatus, PoolFamilySpec, PoolFamilyStatus,
};
use super::events;
use super::selector::Selector;
use super::targets::FIELD_MANAGER;

/// The allocator's spec of a PodCIDRPool, or what is wrong with it on its own.
pub fn to_pool_spec(name: &str, spec: &PodCIDRPoolSpec) -> Result<PoolSpec, String> {
    let problems = spec.problems();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let selector = match &spec.node_selector {
        Some(ls) => Some(Selector::try_from(ls).map_err(|e| format!("nodeSelector: {e}"))?),
        None => None,
    };
    let fam = |f: &Option<PoolFamilySpec>| f.as_ref().map(|f| FamilySpec { cidrs: f.networks(), mask: f.mask_size });
    Ok(PoolSpec { name: name.to_string(), selector, ipv4: fam(&spec.ipv4), ipv6: fam(&spec.ipv6) })
}

/// The PodCIDRPool spec of the flag pool.
pub fn from_pool_spec(p: &PoolSpec) -> PodCIDRPoolSpec {
    let fam = |f: &Option<FamilySpec>| {
        f.as_ref()
            .map(|f| PoolFamilySpec { cidrs: f.cidrs.iter().map(ToString::to_string).collect(), mask_size: f.mask })
    };
    PodCIDRPoolSpec { node_selector: None, ipv4: fam(&p.ipv4), ipv6: fam(&p.ipv6) }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    old: &[Condition],
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The status a pool should show.
pub fn status_of(
    stats: &[&PoolStats],
    problem: Option<&str>,
    deleting: bool,
    old: &[Condition],
    generation: Option<i64>,
) -> PodCIDRPoolStatus {
    let fam = |f: Family| {
        stats.iter().find(|s| s.family == f).map(|s| PoolFamilyStatus::new(s.capacity, s.allocated, s.free, s.draining))
    };
    let (v4, v6) = (fam(Family::V4), fam(Family::V6));
    let full: Vec<String> =
        stats.iter().filter(|s| s.capacity > 0 && s.free == 0).map(|s| s.family.to_string()).collect();
    let draining: u128 = stats.iter().map(|s| s.draining).sum();
    let ready = match (problem, deleting) {
        (Some(p), _) => condition(CONDITION_READY, false, "Invalid", p.to_string(), old, generation),
        (None, true) => condition(
            CONDITION_READY,
            false,
            "Deleting",
            "deleted: held until no node holds a CIDR of it".into(),
            old,
            generation,
        ),
        (None, false) => condition(CONDITION_READY, true, "Accepted", "the pool serves nodes".into(), old, generation),
    };
    let exhausted = if full.is_empty() {
        condition(CONDITION_EXHAUSTED, false, "Available", "every family has free node CIDRs".into(), old, generation)
    } else {
        condition(
            CONDITION_EXHAUSTED,
            true,
            "NoFreeCIDR",
            format!("no free node CIDR in {}: add a CIDR to the pool", full.join(", ")),
            old,
            generation,
        )
    };
    let drain = if draining == 0 {
        condition(CONDITION_DRAINING, false, "NotDraining", "no removed CIDR is in use".into(), old, generation)
    } else {
        condition(
            CONDITION_DRAINING,
            true,
            "InUse",
            format!(
                "{draining} node CIDRs in removed CIDRs are still held; they are forgotten when their nodes are gone"
            ),
            old,
            generation,
        )
    };
    PodCIDRPoolStatus::new(v4, v6, vec![ready, exhausted, drain])
}

fn same_status(a: &PodCIDRPoolStatus, b: &PodCIDRPoolStatus) -> bool {
    let key = |s: &PodCIDRPoolStatus| {
        let conds: Vec<(String, String, String, String)> = s
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()))
            .collect();
        (s.ipv4, s.ipv6, s.allocated, s.free, conds)
    };
    key(a) == key(b)
}

/// The merge patch that makes the stored status `status`: a family the pool no longer has is
/// removed (null), else it would stay in the object and the status would differ for ever.
fn status_patch(status: &PodCIDRPoolStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for family in ["ipv4", "ipv6"] {
            m.entry(family).or_insert(serde_json::Value::Null);
        }
    }
    v
}

async fn ask<T>(tx: &mpsc::UnboundedSender<Input>, make: impl FnOnce(oneshot::Sender<T>) -> Input) -> Option<T> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(make(rtx)).ok()?;
    rrx.await.ok()
}

/// The merge patch (of `spec`) that brings the `default` object in step with the flags (None:
/// it is), or, when the flags change a family's `maskSize`, the start-up error: the object and
/// the nodes keep the old size, so serving the new one would make them disagree.
fn default_pool_patch(obj: &PodCIDRPoolSpec, want: &PodCIDRPoolSpec) -> Result<Option<serde_json::Value>, String> {
    for (family, old, new) in [("ipv4", &obj.ipv4, &want.ipv4), ("ipv6", &obj.ipv6, &want.ipv6)] {
        if let (Some(o), Some(n)) = (old, new)
            && o.mask_size != n.mask_size
        {
            return Err(format!(
                "--cluster-pool-{family}-mask-size {}: the PodCIDRPool {DEFAULT_POOL} hands out /{} node CIDRs and maskSize is immutable: \
                 set --cluster-pool-{family}-mask-size {} again; to hand out /{} CIDRs, create a PodCIDRPool with new CIDRs and maskSize {}",
                n.mask_size, o.mask_size, o.mask_size, n.mask_size, n.mask_size
            ));
        }
    }
    if obj == want {
        return Ok(None);
    }
    // A family dropped from the flags is removed from the object (null), not left behind.
    let mut patch = serde_json::to_value(want).unwrap_or_default();
    if let Some(m) = patch.as_object_mut() {
        for family in ["ipv4", "ipv6", "nodeSelector"] {
            m.entry(family).or_insert(serde_json::Value::Null);
        }
    }
    Ok(Some(patch))
}

/// The CIDRs nodes hold, once the controller has listed every node (None: it stopped).
async fn wait_held(tx: &mpsc::UnboundedSender<Input>) -> Option<Vec<IpNet>> {
    loop {
        if let Some(held) = ask(tx, Input::Held).await? {
            return Some(held);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which of two overlapping pools serves does not depend on when the operator started: the
/// allocator accepts in this order, so a pool whose CIDRs nodes hold comes first, then the
/// older, then by name.
fn serving_order(p: &PodCIDRPool, spec: &PoolSpec, held: &[IpNet]) -> (bool, Option<Timestamp>, String) {
    let holds = [spec.ipv4.as_ref(), spec.ipv6.as_ref()]
        .into_iter()
        .flatten()
        .any(|f| f.cidrs.iter().any(|c| held.iter().any(|h| c.contains(h))));
    (!holds, p.meta().creation_timestamp.as_ref().map(|t| t.0), p.name_any())
}

/// The spec a run accepted and recorded on the pool ([`ACCEPTED_ANNOTATION`]).
fn recorded(p: &PodCIDRPool) -> Option<PodCIDRPoolSpec> {
    serde_json::from_str(p.annotations().get(ACCEPTED_ANNOTATION)?).ok()
}

/// The pool set to give the allocator, and the problems found on the way: the flag pool wins
/// for `default`; a spec refused keeps its last accepted form in force (the pool keeps
/// serving); a deleted pool is listed apart (it drains). `status` builds its model with it too.
pub fn pool_set(
    flag_pool: Option<&PoolSpec>,
    pools: &BTreeMap<String, PodCIDRPool>,
    accepted: &BTreeMap<String, PoolSpec>,
    held: &[IpNet],
) -> (PoolSet, BTreeMap<String, String>) {
    let mut active = Vec::new();
    let mut deleted = Vec::new();
    let mut problems = BTreeMap::new();
    for (name, p) in pools {
        if flag_pool.is_some() && name == DEFAULT_POOL {
            continue;
        }
        if p.meta().deletion_timestamp.is_some() {
            // Its last accepted form, else its spec, else the form an earlier run recorded.
            let last = || to_pool_spec(name, &p.spec).ok().or_else(|| to_pool_spec(name, &recorded(p)?).ok());
            if let Some(s) = accepted.get(name).cloned().or_else(last) {
                deleted.push(s);
            }
            continue;
        }
        match to_pool_spec(name, &p.spec) {
            Ok(s) => active.push((serving_order(p, &s, held), s)),
            Err(e) => {
                problems.insert(name.clone(), e);
                // After a restart, the spec a previous run accepted and recorded.
                let old = accepted.get(name).cloned().or_else(|| to_pool_spec(name, &recorded(p)?).ok());
                if let Some(old) = old {
                    active.push((serving_order(p, &old, held), old));
                }
            }
        }
    }
    active.sort_by(|a, b| a.0.cmp(&b.0));
    let active = flag_pool.cloned().into_iter().chain(active.into_iter().map(|(_, s)| s)).collect();
    (PoolSet { active, deleted }, problems)
}

/// The specs in force after a push: what was pushed, except that a refused pool keeps the form
/// accepted before (the allocator keeps it too).
fn still_accepted(
    pushed: &PoolSet,
    problems: &BTreeMap<String, String>,
    before: &BTreeMap<String, PoolSpec>,
) -> BTreeMap<String, PoolSpec> {
    pushed
        .active
        .iter()
        .chain(&pushed.deleted)
        .filter_map(|s| match problems.contains_key(&s.name) {
            false => Some(s.clone()),
            true => before.get(&s.name).cloned(),
        })
        .map(|s| (s.name.clone(), s))
        .collect()
}

/// Start the pool task (the controller's `extra` hook).
pub fn start(sh: Shared, tx: mpsc::UnboundedSender<Input>) {
    tokio::spawn(run(sh, tx));
}

/// How often to look for the CRD while it is not installed.
const CRD_POLL: Duration = Duration::from_secs(5);

/// Why [`serve`] returned.
enum Served {
    /// The controller is gone.
    Stopped,
    /// The PodCIDRPool CRD went away.
    CrdGone,
}

/// Is the PodCIDRPool CRD served? Retries other errors.
async fn crd_installed(sh: &Shared, api: &Api<PodCIDRPool>) -> bool {
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 404 => return false,
            Err(e) => {
                sh.metrics.api_error(&super::targets::error_code(&e));
                tracing::warn!("cannot list podcidrpools: {e} (retrying)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn run(sh: Shared, tx: mpsc::UnboundedSender<Input>) {
    let api: Api<PodCIDRPool> = Api::all(sh.client.clone());
    // PoolsListed sent (the restore waits for it once).
    let mut announced = false;
    // The CRD may be installed after the operator started, or removed (issue 19 point 3):
    // without it the flag pool alone serves, and the CRD is looked for again.
    loop {
        if !crd_installed(&sh, &api).await {
            tracing::warn!(
                "the PodCIDRPool CRD is not installed: running with the flag pool alone (looking again every {}s)",
                CRD_POLL.as_secs()
            );
            if !announced {
                announced = true;
                let _ = tx.send(Input::PoolsListed);
            }
            while !crd_installed(&sh, &api).await {
                tokio::time::sleep(CRD_POLL).await;
            }
            tracing::info!("the PodCIDRPool CRD is installed: serving PodCIDRPools");
        }
        match serve(&sh, &tx, &api, &mut announced).await {
            Served::Stopped => return,
            Served::CrdGone => {
                tracing::warn!("the PodCIDRPool CRD is gone: the flag pool alone serves");
                let set = PoolSet { active: sh.settings.default_pool.clone().into_iter().collect(), deleted: vec![] };
                if ask(&tx, |r| Input::Pools(set, r)).await.is_none() {
                    return;
                }
            }
        }
    }
}

/// Serve the PodCIDRPools while the CRD is installed.
async fn serve(sh: &Shared, tx: &mpsc::UnboundedSender<Input>, api: &Api<PodCIDRPool>, announced: &mut bool) -> Served {
    let flag_pool = sh.settings.default_pool.clone();
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    if let Some(fp) = &flag_pool {
        let want = from_pool_spec(fp);
        match api.get_opt(DEFAULT_POOL).await {
            Ok(None) => {
                let obj = PodCIDRPool::new(DEFAULT_POOL, want);
                if let Err(e) = api.create(&PostParams::default(), &obj).await {
                    tracing::warn!("cannot create the PodCIDRPool {DEFAULT_POOL}: {e}");
                }
            }
            Ok(Some(p)) => match default_pool_patch(&p.spec, &want) {
                Ok(None) => {}
                Ok(Some(patch)) => {
                    if let Err(e) = api.patch(DEFAULT_POOL, &pp, &Patch::Merge(json!({"spec": patch}))).await {
                        tracing::warn!("cannot bring the PodCIDRPool {DEFAULT_POOL} in step with the flags: {e}");
                    }
                }
                Err(e) => {
                    // Serving the flags would make the object (and `kubectl get podcidrpools`)
                    // say what the operator is not doing: refuse to start, as for a bad flag.
                    tracing::error!("{e}");
                    eprintln!("podcidr-operator: {e}");
                    std::process::exit(2);
                }
            },
            Err(e) => tracing::warn!("cannot read the PodCIDRPool {DEFAULT_POOL}: {e}"),
        }
    }

    let mut stream = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff());
    let mut pools: BTreeMap<String, PodCIDRPool> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, PodCIDRPool>> = None;
    let mut listed = false;
    let mut problems: BTreeMap<String, String> = BTreeMap::new();
    let mut accepted: BTreeMap<String, PoolSpec> = BTreeMap::new();
    let mut exhausted: BTreeMap<String, bool> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut changed = false;
        tokio::select! {
            ev = stream.next() => match ev {
                None => return Served::Stopped,
                Some(Err(e)) => {
                    tracing::warn!("watching podcidrpools: {e}");
                    if !crd_installed(sh, api).await {
                        return Served::CrdGone;
                    }
                }
                Some(Ok(Event::Init)) => init = Some(BTreeMap::new()),
                Some(Ok(Event::InitApply(p))) => {
                    if let Some(m) = init.as_mut() { m.insert(p.name_any(), p); }
                }
                Some(Ok(Event::InitDone)) => {
                    pools = init.take().unwrap_or_default();
                    changed = true;
                }
                Some(Ok(Event::Apply(p))) => { pools.insert(p.name_any(), p); changed = true; }
                Some(Ok(Event::Delete(p))) => { pools.remove(&p.name_any()); changed = true; }
            },
            _ = tick.tick() => {}
        }
        if changed {
            // Overlapping pools are ordered by the CIDRs nodes hold: the first push waits for
            // the Node list (later, the allocator keeps what it accepted).
            let held = if listed { Some(Vec::new()) } else { wait_held(tx).await };
            let Some(held) = held else { return Served::Stopped };
            let (set, found) = pool_set(flag_pool.as_ref(), &pools, &accepted, &held);
            problems = found;
            let pushed = set.clone();
            let Some(refused) = ask(tx, |r| Input::Pools(set, r)).await else { return Served::Stopped };
            for pr in refused {
                tracing::warn!("{pr}");
                problems.entry(pr.pool.clone()).or_insert(pr.message);
            }
            accepted = still_accepted(&pushed, &problems, &accepted);
            listed = true;
            if !*announced {
                *announced = true;
                let _ = tx.send(Input::PoolsListed);
            }
        }
        if !listed {
            continue;
        }
        let Some(snap) = ask(tx, Input::Stats).await else { return Served::Stopped };
        let mut written = Vec::new();
        for (name, p) in &pools {
            let stats: Vec<&PoolStats> = snap.stats.iter().filter(|s| &s.pool == name).collect();
            let deleting = p.meta().deletion_timestamp.is_some();
            let fins = p.finalizers().to_vec();
            let has_fin = fins.iter().any(|f| f == DRAIN_FINALIZER);
            if deleting {
                let held = stats.iter().any(|s| s.allocated > 0 || s.draining > 0);
                if has_fin && !held {
                    let rest: Vec<String> = fins.iter().filter(|f| *f != DRAIN_FINALIZER).cloned().collect();
                    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": p.resource_version()}});
                    match api.patch(name, &pp, &Patch::Merge(patch)).await {
                        Ok(_) => tracing::info!(pool = %name, "deleted pool drained: finalizer removed"),
                        Err(e) => tracing::warn!(pool = %name, "cannot remove the finalizer: {e}"),
                    }
                }
            } else {
                if !has_fin {
                    let mut all = fins.clone();
                    all.push(DRAIN_FINALIZER.into());
                    let patch = json!({"metadata": {"finalizers": all, "resourceVersion": p.resource_version()}});
                    if let Err(e) = api.patch(name, &pp, &Patch::Merge(patch)).await {
                        tracing::debug!(pool = %name, "cannot add the finalizer: {e}");
                    }
                }
                // Record the spec in force, so a restart keeps it when the stored one is refused.
                let flag_owned = flag_pool.is_some() && name == DEFAULT_POOL;
                if !flag_owned && !problems.contains_key(name) && recorded(p).as_ref() != Some(&p.spec) {
                    let spec = serde_json::to_string(&p.spec).unwrap_or_default();
                    let patch = json!({"metadata": {"annotations": {ACCEPTED_ANNOTATION: spec},
                                                    "resourceVersion": p.resource_version()}});
                    if let Err(e) = api.patch(name, &pp, &Patch::Merge(patch)).await {
                        tracing::debug!(pool = %name, "cannot record the accepted spec: {e}");
                    }
                }
            }
            let old = p.status.clone().unwrap_or_default();
            let status = status_of(
                &stats,
                problems.get(name).map(String::as_str),
                deleting,
                &old.conditions,
                p.meta().generation,
            );
            let full = status.conditions.iter().any(|c| c.type_ == CONDITION_EXHAUSTED && c.status == "True");
            if full && !exhausted.get(name).copied().unwrap_or(false) {
                let msg = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == CONDITION_EXHAUSTED)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                tracing::warn!(pool = %name, "pool exhausted: {msg}");
                sh.events.warn(
                    events::pool_ref(name, p.meta().uid.as_deref()),
                    events::POOL_EXHAUSTED,
                    "Allocate",
                    format!("pool {name}: {msg}"),
                );
            }
            exhausted.insert(name.clone(), full);
            if !same_status(&old, &status) {
                let patch = json!({"status": status_patch(&status)});
                match api.patch_status(name, &pp, &Patch::Merge(patch)).await {
                    // Keep our copy current so the same status is not written again.
                    Ok(np) => written.push((name.clone(), np.status)),
                    Err(e) => tracing::debug!(pool = %name, "cannot write the status: {e}"),
                }
            }
        }
        for (name, status) in written {
            if let Some(p) = pools.get_mut(&name) {
                p.status = status;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MSG_OVERLAP;

    #[test]
    fn flag_pool_round_trips_and_bad_specs_are_refused() {
        let p = PoolSpec {
            name: "default".into(),
            selector: None,
            ipv4: Some(FamilySpec { cidrs: vec!["10.244.0.0/16".parse().unwrap()], mask: 24 }),
            ipv6: None,
        };
        assert_eq!(to_pool_spec("default", &from_pool_spec(&p)).unwrap(), p);
        let mut bad = from_pool_spec(&p);
        bad.ipv4.as_mut().unwrap().mask_size = 8;
        assert!(to_pool_spec("x", &bad).unwrap_err().contains("maskSize"));
    }

    fn crd_pool(name: &str, cidr: &str, created: &str) -> PodCIDRPool {
        let spec = PodCIDRPoolSpec {
            node_selector: None,
            ipv4: Some(PoolFamilySpec { cidrs: vec![cidr.into()], mask_size: 24 }),
            ipv6: None,
        };
        let mut p = PodCIDRPool::new(name, spec);
        p.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        p
    }

    fn names(set: &PoolSet) -> Vec<&str> {
        set.active.iter().map(|s| s.name.as_str()).collect()
    }

    /// Issue 19 point 1: an edit refused keeps the last accepted spec in force, also at the
    /// pool events after the refusal (its own status writes).
    #[test]
    fn a_refused_edit_keeps_the_accepted_spec_in_force() {
        let mut pools =
            BTreeMap::from([("zone".to_string(), crd_pool("zone", "10.32.0.0/16", "2026-01-01T00:00:00Z"))]);
        let (set, problems) = pool_set(None, &pools, &BTreeMap::new(), &[]);
        assert!(problems.is_empty());
        let mut accepted = still_accepted(&set, &problems, &BTreeMap::new());
        let good = accepted["zone"].clone();
        // An overlap inside the pool (what the pre-1.31 CRD lets in).
        pools.get_mut("zone").unwrap().spec.ipv4.as_mut().unwrap().cidrs.push("10.32.0.0/17".into());
        for event in 0..3 {
            let (set, problems) = pool_set(None, &pools, &accepted, &[]);
            assert!(problems["zone"].contains(MSG_OVERLAP), "{problems:?}");
            assert_eq!(set.active, std::slice::from_ref(&good), "event {event}: the pool keeps serving as before");
            accepted = still_accepted(&set, &problems, &accepted);
        }
    }

    /// After a restart, a pool whose stored spec is refused serves with the spec an earlier
    /// run accepted and recorded on it.
    #[test]
    fn after_a_restart_the_recorded_spec_is_in_force() {
        let mut p = crd_pool("zone", "10.32.0.0/16", "2026-01-01T00:00:00Z");
        let good = to_pool_spec("zone", &p.spec).unwrap();
        let recorded = serde_json::to_string(&p.spec).unwrap();
        p.metadata.annotations = Some(BTreeMap::from([(ACCEPTED_ANNOTATION.to_string(), recorded)]));
        p.spec.ipv4.as_mut().unwrap().cidrs.push("10.32.0.0/17".into());
        let pools = BTreeMap::from([("zone".to_string(), p)]);
        let (set, problems) = pool_set(None, &pools, &BTreeMap::new(), &[]);
        assert!(problems["zone"].contains(MSG_OVERLAP), "{problems:?}");
        assert_eq!(set.active, [good]);
    }

    /// Issue 19 point 2: of two overlapping pools, the one nodes hold CIDRs of comes first,
    /// then the older one, whatever their names.
    #[test]
    fn overlapping_pools_are_ordered_by_holders_then_age() {
        let pools = BTreeMap::from([
            ("aa-new".to_string(), crd_pool("aa-new", "10.10.128.0/17", "2026-02-01T00:00:00Z")),
            ("zz-old".to_string(), crd_pool("zz-old", "10.10.0.0/16", "2026-01-01T00:00:00Z")),
        ]);
        let flag = PoolSpec { name: DEFAULT_POOL.into(), selector: None, ipv4: None, ipv6: None };
        let (set, _) = pool_set(Some(&flag), &pools, &BTreeMap::new(), &[]);
        assert_eq!(names(&set), ["default", "zz-old", "aa-new"]);
        // Made the other way round: aa is older, but nodes hold CIDRs of zz only.
        let pools = BTreeMap::from([
            ("aa".to_string(), crd_pool("aa", "10.10.128.0/17", "2025-01-01T00:00:00Z")),
            ("zz".to_string(), crd_pool("zz", "10.10.0.0/16", "2026-01-01T00:00:00Z")),
        ]);
        let (set, _) = pool_set(Some(&flag), &pools, &BTreeMap::new(), &[]);
        assert_eq!(names(&set), ["default", "aa", "zz"]);
        let held: Vec<IpNet> = vec!["10.10.5.0/24".parse().unwrap()];
        let (set, _) = pool_set(Some(&flag), &pools, &BTreeMap::new(), &held);
        assert_eq!(names(&set), ["default", "zz", "aa"], "nodes hold CIDRs of zz");
    }

    /// Issue 19 point 4: the `default` object follows the flags (a family dropped from them is
    /// removed from it), and a changed mask is a start-up error naming the flag.
    #[test]
    fn the_default_object_never_drifts_from_the_flags() {
        let fam = |c: &str, m| Some(PoolFamilySpec { cidrs: vec![c.into()], mask_size: m });
        let spec = |ipv4, ipv6| PodCIDRPoolSpec { node_selector: None, ipv4, ipv6 };
        let both = spec(fam("10.244.0.0/16", 24), fam("fd00::/48", 64));
        let v4 = spec(fam("10.244.0.0/16", 24), None);
        assert_eq!(default_pool_patch(&both, &both), Ok(None));
        let mut stored = serde_json::to_value(&both).unwrap();
        merge(&mut stored, &default_pool_patch(&both, &v4).unwrap().unwrap());
        assert_eq!(serde_json::from_value::<PodCIDRPoolSpec>(stored).unwrap(), v4);
        let e = default_pool_patch(&both, &spec(fam("10.244.0.0/16", 26), fam("fd00::/48", 64))).unwrap_err();
        assert!(e.starts_with("--cluster-pool-ipv4-mask-size 26: the PodCIDRPool default hands out /24"), "{e}");
        assert!(e.contains("set --cluster-pool-ipv4-mask-size 24 again"), "{e}");
    }

    /// RFC 7386, as the API server applies a merge patch.
    fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                    }
                }
            }
            _ => *target = patch.clone(),
        }
    }

    /// Issue 19 point 5: a family removed from a pool leaves its status, so the status is the
    /// same as wanted after one write (and is not written again every second).
    #[test]
    fn a_removed_family_leaves_the_status() {
        let st = |family| PoolStats {
            pool: "p".into(),
            family,
            cidrs: vec![],
            mask: 24,
            capacity: 4,
            allocated: 1,
            free: 3,
            draining: 0,
        };
        let (v4, v6) = (st(Family::V4), st(Family::V6));
        let both = status_of(&[&v4, &v6], None, false, &[], Some(1));
        let only_v4 = status_of(&[&v4], None, false, &both.conditions, Some(2));
        let mut stored = serde_json::to_value(&both).unwrap();
        merge(&mut stored, &status_patch(&only_v4));
        let stored: PodCIDRPoolStatus = serde_json::from_value(stored).unwrap();
        assert_eq!(stored.ipv6, None);
        assert!(same_status(&stored, &only_v4), "nothing more to write");
    }

    #[test]
    fn status_counts_and_conditions() {
        let st = PoolStats {
            pool: "p".into(),
            family: Family::V4,
            cidrs: vec![],
            mask: 24,
            capacity: 2,
            allocated: 2,
            free: 0,
            draining: 1,
        };
        let s = status_of(&[&st], None, false, &[], Some(1));
        assert_eq!(s.ipv4.unwrap().allocated, 2);
        let get = |t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap().status.clone();
        assert_eq!((get("Ready"), get("Exhausted"), get("Draining")), ("True".into(), "True".into(), "True".into()));
        let s2 = status_of(&[&st], Some("maskSize is immutable"), false, &s.conditions, Some(2));
        assert_eq!(s2.conditions[0].status, "False");
        assert!(same_status(&s, &status_of(&[&st], None, false, &s.conditions, Some(1))));
    }
}
