//! Leader election on the `coordination.k8s.io/v1` Lease `podcidr-operator`, with client-go's
//! semantics (tools/leaderelection), written on kube-rs (see the README for why not a crate).
//!
//! - A follower takes the Lease only after it has itself seen the Lease unchanged for a full
//!   lease duration on its own monotonic clock (client-go's `observedTime`). The holder's
//!   `renewTime` is never compared with this process's wall clock, so no skew can make a live
//!   Lease look expired.
//! - Every write carries the `metadata.resourceVersion` it was decided from (create when there
//!   is none): of two candidates deciding from one read, one gets 409.
//! - Every request has a timeout, and the leader's renew deadline runs on its own, beside the
//!   renewal: when no renewal sent within the last `renew_deadline` has succeeded, the
//!   [`Fence`] drops, `podcidr_operator_leader` goes to 0 and the process exits non-zero at
//!   once. `renew_deadline` < lease duration, and the follower's clock starts no earlier than
//!   the server stored the renewal, so the old leader is gone before anyone may take over.
//! - `/healthz` fails as soon as a renewal is overdue (see [`Timings::overdue`]).
//! - On SIGTERM the leader releases the Lease as client-go's `ReleaseOnCancel` (holder "",
//!   `leaseDurationSeconds: 1`); followers watch the Lease, so one takes over at once.
//!
//! The decisions are the pure [`Elector`] (a read Lease and a monotonic instant in, the Lease to
//! write out); [`run`] does the I/O around it.
//!
//! The fence, for code that writes while leading: [`fence`] makes it, down; [`run`] raises it
//! when it leads and lowers it before leadership can be lost (it never rises again). Every
//! request but GET through a [`fenced`] client fails at once while it is down, so nothing the
//! controller has queued is sent after that; code may also check [`Fence::leading`] right
//! before a write, or stop on [`Fence::lost`].

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use super::flags::Settings;
use super::http::{Liveness, Readiness};
use super::metrics::Metrics;

pub const LEASE_NAME: &str = "podcidr-operator";

/// The test seam for the wall clock: `PODCIDR_OPERATOR_CLOCK_SKEW=8s` (or `-8s`) moves the
/// times this process writes into the Lease. Nothing decides by the wall clock.
pub const CLOCK_SKEW_ENV: &str = "PODCIDR_OPERATOR_CLOCK_SKEW";

/// Election timings, from the lease duration with client-go's defaults' ratios (15 s lease:
/// 10 s renew deadline, 2 s retry period).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub lease: Duration,
    /// A leader that has not renewed within this stops writing and exits.
    pub renew_deadline: Duration,
    /// Between two attempts (the leader's renewals, a follower's reads).
    pub retry: Duration,
}

impl Timings {
    pub fn new(lease: Duration) -> Self {
        Self { lease, renew_deadline: lease * 2 / 3, retry: lease * 2 / 15 }
    }

    /// The bound on one request: a stalled one gives way to a retry within the deadline.
    pub fn request_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }

    /// A leader whose last renewal is older than this has missed one: `/healthz` fails.
    pub fn overdue(&self) -> Duration {
        self.retry * 2
    }
}

/// The fencing token of the process's leadership (see the module doc). Clones share it.
#[derive(Clone, Debug)]
pub struct Fence(watch::Receiver<bool>);

impl Fence {
    /// Whether this process may still write.
    pub fn leading(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once leadership is lost (at once if it is).
    pub async fn lost(&mut self) {
        let _ = self.0.wait_for(|l| !*l).await;
    }
}

/// The fence of this process, down, and the switch [`run`] raises and lowers it with.
pub fn fence() -> (watch::Sender<bool>, Fence) {
    let (tx, rx) = watch::channel(false);
    (tx, Fence(rx))
}

/// `client`, but every request other than a GET fails while `fence` is down.
pub fn fenced(client: Client, fence: Fence) -> Client {
    let ns = client.default_namespace().to_string();
    Client::new(Fenced { inner: client, fence }, ns)
}

#[derive(Clone)]
struct Fenced {
    inner: Client,
    fence: Fence,
}

impl tower_service::Service<hyper::Request<kube::client::Body>> for Fenced {
    type Response = hyper::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), kube::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<kube::client::Body>) -> Self::Future {
        if req.method() != hyper::Method::GET && !self.fence.leading() {
            let e = format!("{} {}: not sent, this process does not hold the lease", req.method(), req.uri().path());
            return Box::pin(std::future::ready(Err(kube::Error::Service(e.into()))));
        }
        let inner = self.inner.clone();
        Box::pin(async move { inner.send(req).await })
    }
}

/// The Lease fields an elector decides on (client-go's LeaderElectionRecord).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub holder: String,
    pub duration_secs: i32,
    pub acquire_time: Option<MicroTime>,
    pub renew_time: Option<MicroTime>,
    pub transitions: i32,
}

impl Record {
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.unwrap_or_default(),
            duration_secs: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn lease(&self, resource_version: Option<String>) -> Lease {
        Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.into()), resource_version, ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(self.duration_secs),
                acquire_time: self.acquire_time.clone(),
                renew_time: self.renew_time.clone(),
                lease_transitions: Some(self.transitions),
                ..Default::default()
            }),
        }
    }
}

/// What to do after a read.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Someone else holds a Lease this process has not yet seen unchanged for its duration.
    Follow { holder: String },
    /// Write this Lease: create it when it has no resourceVersion, else replace that version.
    Write(Box<Lease>),
}

/// The election's state machine: no I/O, no clock of its own.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    timings: Timings,
    /// The record last read or written, and when (monotonic) it was first seen as it is.
    observed: Option<(Record, Instant)>,
    /// The resourceVersion of the last read or write.
    resource_version: Option<String>,
    /// When the last successful write of this process as holder was sent.
    renewed: Option<Instant>,
}

impl Elector {
    pub fn new(identity: &str, timings: Timings) -> Self {
        Self { identity: identity.into(), timings, observed: None, resource_version: None, renewed: None }
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// A read of the Lease (`None`: there is none) that came back at `now`; `wall` is what
    /// this process writes as the time.
    pub fn read(&mut self, lease: Option<&Lease>, now: Instant, wall: SystemTime) -> Step {
        let Some(lease) = lease else {
            self.observed = None;
            self.resource_version = None;
            return Step::Write(Box::new(self.claim(None, wall).lease(None)));
        };
        let record = Record::of(lease);
        self.resource_version = lease.metadata.resource_version.clone();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != record) {
            self.observed = Some((record.clone(), now));
        }
        let since = self.observed.as_ref().map_or(now, |(_, t)| *t);
        let duration = match u64::try_from(record.duration_secs) {
            Ok(s) if s > 0 => Duration::from_secs(s),
            _ => self.timings.lease,
        };
        if !record.holder.is_empty() && record.holder != self.identity && now < since + duration {
            return Step::Follow { holder: record.holder };
        }
        Step::Write(Box::new(self.claim(Some(&record), wall).lease(self.resource_version.clone())))
    }

    /// The renewal of a leader, decided from its own last write (no read: a conflict says
    /// someone else wrote, and the next attempt reads).
    pub fn renewal(&self, wall: SystemTime) -> Option<Lease> {
        let (record, _) = self.observed.as_ref().filter(|(r, _)| r.holder == self.identity)?;
        Some(self.claim(Some(record), wall).lease(self.resource_version.clone()))
    }

    /// This process's record over `old`: a renewal keeps the acquisition, a takeover counts it.
    fn claim(&self, old: Option<&Record>, wall: SystemTime) -> Record {
        let now = MicroTime(wall.try_into().unwrap_or_default());
        let duration_secs = i32::try_from(self.timings.lease.as_secs()).unwrap_or(i32::MAX);
        match old {
            Some(old) if old.holder == self.identity => Record {
                holder: self.identity.clone(),
                duration_secs,
                acquire_time: old.acquire_time.clone().or_else(|| Some(now.clone())),
                renew_time: Some(now),
                transitions: old.transitions,
            },
            _ => Record {
                holder: self.identity.clone(),
                duration_secs,
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                transitions: old.map_or(0, |o| o.transitions.saturating_add(1)),
            },
        }
    }

    /// The server stored `lease`, written by a request sent at `sent` (the leader's clock
    /// starts then, which is no later than any follower's).
    pub fn written(&mut self, lease: &Lease, sent: Instant) {
        let record = Record::of(lease);
        if record.holder == self.identity {
            self.renewed = Some(sent);
        }
        self.resource_version = lease.metadata.resource_version.clone();
        self.observed = Some((record, sent));
    }

    /// Leading: a write as holder succeeded within the renew deadline.
    pub fn leading(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    /// When leadership ends without a further renewal.
    pub fn deadline(&self) -> Option<Instant> {
        self.renewed.map(|t| t + self.timings.renew_deadline)
    }

    /// When the next renewal is overdue.
    pub fn overdue_at(&self) -> Option<Instant> {
        self.renewed.map(|t| t + self.timings.overdue())
    }

    /// The Lease that gives it up (client-go's ReleaseOnCancel): no holder, one second.
    pub fn release(&self, wall: SystemTime) -> Option<Lease> {
        let (record, _) = self.observed.as_ref().filter(|(r, _)| r.holder == self.identity)?;
        let now = MicroTime(wall.try_into().unwrap_or_default());
        let released = Record {
            holder: String::new(),
            duration_secs: 1,
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            transitions: record.transitions,
        };
        Some(released.lease(self.resource_version.clone()))
    }
}

/// The process's clocks: monotonic for every decision, the wall clock (with the test seam's
/// skew) only for the times written into the Lease.
#[derive(Clone, Copy, Debug)]
struct Clock {
    ahead: Duration,
    behind: Duration,
}

impl Clock {
    fn from_env() -> Clock {
        let v = std::env::var(CLOCK_SKEW_ENV).unwrap_or_default();
        let (neg, s) = match v.strip_prefix('-') {
            Some(s) => (true, s),
            None => (false, v.as_str()),
        };
        let skew = humantime::parse_duration(s.trim()).unwrap_or_default();
        if neg { Clock { ahead: Duration::ZERO, behind: skew } } else { Clock { ahead: skew, behind: Duration::ZERO } }
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now() + self.ahead - self.behind
    }
}

/// What tells the world how the election goes.
pub struct Shows {
    /// `podcidr_operator_leader`.
    pub metrics: Metrics,
    /// `/readyz`: a follower is ready once it sees the holder.
    pub ready: Readiness,
    /// `/healthz`: fails once a renewal is overdue.
    pub live: Liveness,
    /// The switch of the [`Fence`].
    pub fence: watch::Sender<bool>,
}

/// Why a leader stops.
enum End {
    Shutdown,
    WorkEnded,
    Lost(String),
}

struct Io {
    api: Api<Lease>,
    timeout: Duration,
    clock: Clock,
}

impl Io {
    async fn get(&self) -> Result<Option<Lease>, String> {
        match tokio::time::timeout(self.timeout, self.api.get_opt(LEASE_NAME)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Create or replace with the resourceVersion precondition; Ok(None) on a conflict.
    async fn write(&self, lease: &Lease) -> Result<Option<Lease>, String> {
        let pp = PostParams::default();
        let req = async {
            if lease.metadata.resource_version.is_none() {
                self.api.create(&pp, lease).await
            } else {
                self.api.replace(LEASE_NAME, &pp, lease).await
            }
        };
        match tokio::time::timeout(self.timeout, req).await {
            Ok(Ok(l)) => Ok(Some(l)),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// One read-and-decide attempt, and the write it calls for.
    async fn attempt(&self, el: &mut Elector) -> Result<Step, String> {
        let lease = self.get().await?;
        let step = el.read(lease.as_ref(), Instant::now(), self.clock.wall());
        if let Step::Write(l) = &step {
            let sent = Instant::now();
            if let Some(stored) = self.write(l).await? {
                el.written(&stored, sent);
            }
        }
        Ok(step)
    }

    /// The leader's renewal from its own last write; on a conflict, a read decides.
    /// `Ok(Some(holder))`: someone else holds the Lease now.
    async fn renew(&self, el: &mut Elector) -> Result<Option<String>, String> {
        if let Some(l) = el.renewal(self.clock.wall()) {
            let sent = Instant::now();
            if let Some(stored) = self.write(&l).await? {
                el.written(&stored, sent);
                return Ok(None);
            }
        }
        match self.attempt(el).await? {
            Step::Follow { holder } => Ok(Some(holder)),
            Step::Write(_) => Ok(None),
        }
    }
}

/// Wakes `notify` on every change of the Lease, so a follower reads at once (a released
/// Lease is taken in milliseconds, not after a retry period).
fn watch_lease(api: Api<Lease>, notify: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE_NAME}"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(e) = events.next().await {
            if let Err(e) = e {
                tracing::debug!("watching the lease: {e}");
            }
            notify.notify_one();
        }
    })
}

/// Wait for the Lease, then run `work` while holding it. Returns on shutdown (Lease released,
/// exit 0) or when `work` ends (exit 1); exits the process non-zero at once when the Lease is
/// lost or cannot be renewed within the renew deadline.
pub async fn run<W, F>(
    client: Client,
    s: &Settings,
    shows: Shows,
    work: W,
    shutdown: impl Future<Output = ()>,
) -> ExitCode
where
    W: FnOnce() -> F,
    F: Future<Output = ()>,
{
    let Shows { metrics, ready, live, fence } = shows;
    let timings = Timings::new(Duration::from_secs(s.lease_seconds));
    let io = Io {
        api: Api::namespaced(client, &s.lease_namespace),
        timeout: timings.request_timeout(),
        clock: Clock::from_env(),
    };
    let lease_ref = format!("{}/{LEASE_NAME}", s.lease_namespace);
    let mut el = Elector::new(&s.identity, timings);
    let mut shutdown = std::pin::pin!(shutdown);
    let changed = Arc::new(Notify::new());
    let watcher = watch_lease(io.api.clone(), changed.clone());
    let mut following: Option<String> = None;
    loop {
        match io.attempt(&mut el).await {
            Ok(Step::Follow { holder }) => {
                if following.as_ref() != Some(&holder) {
                    tracing::info!(leader = %holder, identity = %s.identity, "following: the lease {lease_ref} is held");
                    following = Some(holder);
                }
                // A follower serves nothing that could be stale.
                ready.set(true);
            }
            Ok(Step::Write(_)) if el.leading(Instant::now()) => break,
            Ok(Step::Write(_)) => tracing::debug!("lost the race for the lease {lease_ref}"),
            Err(e) => tracing::warn!("leader election: the lease {lease_ref}: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(timings.retry) => {}
            _ = changed.notified() => {}
            _ = &mut shutdown => {
                tracing::info!("stopping (follower)");
                watcher.abort();
                return ExitCode::SUCCESS;
            }
        }
    }
    watcher.abort();
    tracing::info!(identity = %s.identity, "leading: holding the lease {lease_ref}");
    // Not ready again until the controller has restored (it sets it then).
    ready.set(false);
    let _ = fence.send(true);
    metrics.set_leader(true);
    live.healthy_until(el.overdue_at());
    let mut work = std::pin::pin!(work());
    let end = loop {
        let deadline = el.deadline().unwrap_or_else(Instant::now);
        let renewal = async {
            tokio::time::sleep(timings.retry).await;
            io.renew(&mut el).await
        };
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline.into()) => break End::Lost(format!(
                "no renewal of the lease {lease_ref} succeeded within the renew deadline ({:?})",
                timings.renew_deadline
            )),
            _ = &mut shutdown => break End::Shutdown,
            () = &mut work => break End::WorkEnded,
            r = renewal => match r {
                Ok(None) => live.healthy_until(el.overdue_at()),
                Ok(Some(holder)) => break End::Lost(format!("lost the lease {lease_ref}: it is held by {holder}")),
                Err(e) => tracing::warn!("cannot renew the lease {lease_ref}: {e}"),
            },
        }
    };
    // Not one more write: fence down, then the gauge, then the exit.
    let _ = fence.send(false);
    metrics.set_leader(false);
    let code = match end {
        End::Lost(why) => {
            live.healthy_until(Some(Instant::now()));
            tracing::error!("{why}: stopping at once");
            std::process::exit(1);
        }
        End::Shutdown => {
            tracing::info!("stopping: releasing the lease {lease_ref}");
            ExitCode::SUCCESS
        }
        End::WorkEnded => {
            tracing::error!("the controller stopped");
            ExitCode::FAILURE
        }
    };
    if let Some(l) = el.release(io.clock.wall()) {
        match io.write(&l).await {
            Ok(Some(_)) => tracing::info!("released the lease {lease_ref}"),
            Ok(None) => tracing::warn!("did not release the lease {lease_ref}: it changed meanwhile"),
            Err(e) => tracing::warn!("cannot release the lease {lease_ref}: {e}"),
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(15);

    fn at(base: SystemTime, secs: i64) -> MicroTime {
        let t = if secs >= 0 {
            base + Duration::from_secs(secs as u64)
        } else {
            base - Duration::from_secs((-secs) as u64)
        };
        MicroTime(t.try_into().unwrap())
    }

    fn held(holder: &str, renewed: MicroTime, rv: &str) -> Lease {
        Record {
            holder: holder.into(),
            duration_secs: 15,
            acquire_time: Some(renewed.clone()),
            renew_time: Some(renewed),
            transitions: 3,
        }
        .lease(Some(rv.into()))
    }

    fn spec(l: &Lease) -> &LeaseSpec {
        l.spec.as_ref().unwrap()
    }

    #[test]
    fn timings_follow_client_go_ratios() {
        let t = Timings::new(T);
        assert_eq!((t.renew_deadline, t.retry), (Duration::from_secs(10), Duration::from_secs(2)));
        assert!(t.request_timeout() < t.renew_deadline && t.overdue() < t.renew_deadline);
    }

    /// The review's skew case: a follower whose wall clock is 8 s ahead sees the holder's
    /// renewTime 8 s (then more) in its past. It must not care: only its own observation counts.
    #[test]
    fn a_follower_ahead_in_wall_time_does_not_take_a_renewed_lease() {
        let wall = SystemTime::now();
        let follower_wall = wall + Duration::from_secs(8);
        let mut el = Elector::new("b", Timings::new(T));
        let t0 = Instant::now();
        // Renewed every 2 s, read every 2 s, for a minute: always following.
        for i in 0..30u64 {
            let lease = held("a", at(wall, 2 * i as i64), &format!("{}", 100 + i));
            let step =
                el.read(Some(&lease), t0 + Duration::from_secs(2 * i), follower_wall + Duration::from_secs(2 * i));
            assert_eq!(step, Step::Follow { holder: "a".into() }, "read {i}");
        }
    }

    /// Even a renewTime an hour old is not expired until this process has watched it not
    /// change for a full lease duration.
    #[test]
    fn a_lease_is_taken_only_after_a_full_duration_unchanged_on_the_monotonic_clock() {
        let wall = SystemTime::now();
        let lease = held("a", at(wall, -3600), "7");
        let mut el = Elector::new("b", Timings::new(T));
        let t0 = Instant::now();
        assert!(matches!(el.read(Some(&lease), t0, wall), Step::Follow { .. }));
        assert!(matches!(el.read(Some(&lease), t0 + T - Duration::from_millis(1), wall), Step::Follow { .. }));
        let Step::Write(w) = el.read(Some(&lease), t0 + T, wall) else { panic!("takes it after a full duration") };
        assert_eq!(w.metadata.resource_version.as_deref(), Some("7"), "replaces exactly the version it read");
        assert_eq!(spec(&w).holder_identity.as_deref(), Some("b"));
        assert_eq!(spec(&w).lease_transitions, Some(4), "a takeover is a transition");
        assert_eq!(spec(&w).lease_duration_seconds, Some(15));
    }

    #[test]
    fn a_change_restarts_the_observation() {
        let wall = SystemTime::now();
        let mut el = Elector::new("b", Timings::new(T));
        let t0 = Instant::now();
        el.read(Some(&held("a", at(wall, 0), "1")), t0, wall);
        // Renewed just before the follower's duration ran out: another full duration to wait.
        el.read(Some(&held("a", at(wall, 14), "2")), t0 + Duration::from_secs(14), wall);
        assert!(matches!(el.read(Some(&held("a", at(wall, 14), "2")), t0 + T, wall), Step::Follow { .. }));
        assert!(matches!(
            el.read(Some(&held("a", at(wall, 14), "2")), t0 + Duration::from_secs(29), wall),
            Step::Write(_)
        ));
    }

    #[test]
    fn a_released_or_missing_lease_is_taken_at_once() {
        let wall = SystemTime::now();
        let t0 = Instant::now();
        let mut a = Elector::new("a", Timings::new(T));
        let Step::Write(created) = a.read(None, t0, wall) else { panic!() };
        assert_eq!(created.metadata.resource_version, None, "no Lease: create");
        let mut stored = created.clone();
        stored.metadata.resource_version = Some("5".into());
        a.written(&stored, t0);
        assert!(a.leading(t0));
        let released = a.release(wall).unwrap();
        assert_eq!(spec(&released).holder_identity.as_deref(), Some(""));
        assert_eq!(spec(&released).lease_duration_seconds, Some(1));
        assert_eq!(released.metadata.resource_version.as_deref(), Some("5"));
        let mut released_stored = released;
        released_stored.metadata.resource_version = Some("6".into());
        let mut b = Elector::new("b", Timings::new(T));
        assert!(matches!(b.read(Some(&released_stored), t0, wall), Step::Write(_)), "no holder: take it");
    }

    #[test]
    fn a_leader_leads_only_within_the_renew_deadline_of_its_last_sent_renewal() {
        let wall = SystemTime::now();
        let t0 = Instant::now();
        let mut a = Elector::new("a", Timings::new(T));
        assert!(!a.leading(t0) && a.renewal(wall).is_none(), "not before it holds the lease");
        let mut l = held("a", at(wall, 0), "9");
        a.written(&l, t0);
        let renew = a.renewal(wall + Duration::from_secs(2)).unwrap();
        assert_eq!(renew.metadata.resource_version.as_deref(), Some("9"));
        assert_eq!(spec(&renew).lease_transitions, Some(3), "a renewal is no transition");
        assert_eq!(spec(&renew).acquire_time, spec(&l).acquire_time);
        assert!(a.leading(t0 + Duration::from_secs(9)));
        assert!(!a.leading(t0 + Duration::from_secs(10)), "stops at the renew deadline");
        assert_eq!(a.deadline(), Some(t0 + Duration::from_secs(10)));
        l.metadata.resource_version = Some("10".into());
        a.written(&l, t0 + Duration::from_secs(8));
        assert!(a.leading(t0 + Duration::from_secs(17)));
        // Someone else's record read back: not leading by it, and no renewal from it.
        let mut b = Elector::new("b", Timings::new(T));
        b.written(&l, t0);
        assert!(!b.leading(t0) && b.renewal(wall).is_none() && b.release(wall).is_none());
    }

    /// The transport under the fenced client: counts what reaches it, answers 200 `{}`.
    #[derive(Clone, Default)]
    struct Counting(Arc<std::sync::Mutex<Vec<String>>>);

    impl tower_service::Service<hyper::Request<kube::client::Body>> for Counting {
        type Response = hyper::Response<kube::client::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: hyper::Request<kube::client::Body>) -> Self::Future {
            self.0.lock().unwrap().push(req.method().to_string());
            std::future::ready(Ok(hyper::Response::new(kube::client::Body::from(b"{}".to_vec()))))
        }
    }

    #[test]
    fn the_fenced_client_sends_no_write_unless_leading() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sent = Counting::default();
            let (switch, fence) = fence();
            let client = fenced(Client::new(sent.clone(), "default"), fence);
            let req = |m: &str| hyper::Request::builder().method(m).uri("/api/v1/nodes/n").body(Vec::new()).unwrap();
            let call = |m: &'static str| {
                let c = client.clone();
                async move { c.request_text(req(m)).await }
            };
            assert!(call("GET").await.is_ok(), "reads go through a follower's fence");
            let e = call("PATCH").await.unwrap_err();
            assert!(e.to_string().contains("does not hold the lease"), "{e}");
            switch.send(true).unwrap();
            assert!(call("PATCH").await.is_ok() && call("POST").await.is_ok());
            switch.send(false).unwrap();
            for m in ["POST", "PUT", "PATCH", "DELETE"] {
                assert!(call(m).await.is_err(), "{m} after the fence went down");
            }
            assert_eq!(*sent.0.lock().unwrap(), ["GET", "PATCH", "POST"], "nothing else reached the server");
        });
    }

    #[test]
    fn the_fence_goes_down_and_wakes_its_waiters() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (tx, rx) = watch::channel(true);
            let mut f = Fence(rx);
            assert!(f.leading());
            let w = tokio::spawn({
                let mut f = f.clone();
                async move { f.lost().await }
            });
            tx.send(false).unwrap();
            w.await.unwrap();
            f.lost().await;
            assert!(!f.leading());
            assert!(!fence().1.leading(), "down until run leads");
        });
    }
}
