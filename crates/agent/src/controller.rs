//! The node controller's decisions: from what the executor observed and the time, what to do
//! next. No I/O here, and the clock is given (tokio's monotonic `Instant`), so that every
//! decision is tested without waiting and a wall-clock jump cannot move a renewal.
//!
//! The order matters to the node: the conflist tells the kubelet the network is ready, so it is
//! installed only once the plugin and its kubeconfig are in place (and then kept, never
//! removed); the startup taint goes only once the plugin, the conflist, the kubeconfig and the
//! node's pod CIDR are all there.

use std::time::Duration;
use tokio::time::Instant;

/// The token's lifetime is renewed at half, at the latest.
pub const RENEW_AT: f64 = 0.5;
/// Retries of a failed TokenRequest: 1 s doubling to this.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// What the executor found on this pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The plugin binary is installed as built.
    pub plugin: bool,
    /// The conflist is installed as configured.
    pub conflist: bool,
    /// The kubeconfig holds the current token.
    pub kubeconfig: bool,
    /// The node (or its CiliumNode) has its pod CIDRs.
    pub pod_cidrs: bool,
    /// The Node carries the startup taint.
    pub tainted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    InstallPlugin,
    RequestToken,
    WriteKubeconfig,
    InstallConflist,
    RemoveTaint,
    /// Renewal failed with no token, or past the renewal time (the old one kept): say so on
    /// the Node.
    ReportTokenStale,
}

impl Action {
    /// Whether the action needs the API server (and so may wait on it).
    pub fn calls_the_api(self) -> bool {
        matches!(self, Action::RequestToken | Action::RemoveTaint | Action::ReportTokenStale)
    }
}

/// The token in use.
#[derive(Debug, Clone)]
pub struct Held {
    pub token: String,
    pub got: Instant,
    pub lifetime: Duration,
}

impl Held {
    pub fn renew_at(&self) -> Instant {
        self.got + self.lifetime.mul_f64(RENEW_AT)
    }
    pub fn expires(&self) -> Instant {
        self.got + self.lifetime
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// None yet.
    Missing,
    /// Before its renewal time.
    Fresh,
    /// Past its renewal time, renewal failing: kept until it expires.
    Stale,
    /// Past its expiry: the plugin's API calls are refused.
    Expired,
}

/// The token's schedule, on the monotonic clock.
#[derive(Debug, Clone)]
pub struct TokenClock {
    held: Option<Held>,
    /// When to ask next: the renewal time, or a retry after a failure.
    next_try: Instant,
    failures: u32,
    /// This stale episode was reported on the Node.
    reported: bool,
}

impl TokenClock {
    pub fn new(now: Instant) -> Self {
        TokenClock { held: None, next_try: now, failures: 0, reported: false }
    }

    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref()
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_try
    }

    /// When a pass is needed for the token.
    pub fn next_try(&self) -> Instant {
        self.next_try
    }

    pub fn issued(&mut self, now: Instant, token: String, lifetime: Duration) {
        let held = Held { token, got: now, lifetime };
        self.next_try = held.renew_at();
        self.held = Some(held);
        self.failures = 0;
        self.reported = false;
    }

    pub fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_secs(1u64 << self.failures.min(6).saturating_sub(1)).min(MAX_RETRY);
        self.next_try = now + backoff;
    }

    pub fn reported(&mut self) {
        self.reported = true;
    }

    pub fn state(&self, now: Instant) -> TokenState {
        match &self.held {
            None => TokenState::Missing,
            Some(h) if now >= h.expires() => TokenState::Expired,
            Some(h) if now >= h.renew_at() => TokenState::Stale,
            Some(_) => TokenState::Fresh,
        }
    }
}

/// What to do now, in order.
pub fn decide(now: Instant, obs: &Observed, token: &TokenClock) -> Vec<Action> {
    let mut out = Vec::new();
    if !obs.plugin {
        out.push(Action::InstallPlugin);
    }
    if token.due(now) {
        out.push(Action::RequestToken);
    }
    let state = token.state(now);
    if state != TokenState::Fresh && token.failures > 0 && !token.reported {
        out.push(Action::ReportTokenStale);
    }
    let has_token = token.held.is_some();
    if has_token && !obs.kubeconfig {
        out.push(Action::WriteKubeconfig);
    }
    // After this pass's installs, the plugin and the kubeconfig are in place if they could be.
    if !obs.conflist && has_token {
        out.push(Action::InstallConflist);
    }
    if obs.tainted && ready(obs) {
        out.push(Action::RemoveTaint);
    }
    out
}

/// Everything a pod on this node needs is in place.
pub fn ready(obs: &Observed) -> bool {
    obs.plugin && obs.conflist && obs.kubeconfig && obs.pod_cidrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn all_in_place() -> Observed {
        Observed { plugin: true, conflist: true, kubeconfig: true, pod_cidrs: true, tainted: false }
    }

    #[test]
    fn first_pass_installs_the_plugin_and_asks_for_a_token_but_not_the_conflist() {
        let t0 = Instant::now();
        let clock = TokenClock::new(t0);
        let acts = decide(t0, &Observed { tainted: true, ..Default::default() }, &clock);
        assert_eq!(acts, [InstallPlugin, RequestToken]);
    }

    #[test]
    fn conflist_follows_the_token_and_the_taint_waits_for_everything() {
        let t0 = Instant::now();
        let mut clock = TokenClock::new(t0);
        clock.issued(t0, "t1".into(), HOUR);
        let obs = Observed { plugin: true, tainted: true, ..Default::default() };
        assert_eq!(decide(t0, &obs, &clock), [WriteKubeconfig, InstallConflist]);
        // Everything but the pod CIDR: the taint stays.
        let no_cidr = Observed { pod_cidrs: false, tainted: true, ..all_in_place() };
        assert_eq!(decide(t0, &no_cidr, &clock), []);
        for missing in 0..4 {
            let mut obs = Observed { tainted: true, ..all_in_place() };
            match missing {
                0 => obs.plugin = false,
                1 => obs.conflist = false,
                2 => obs.kubeconfig = false,
                _ => obs.pod_cidrs = false,
            }
            assert!(!decide(t0, &obs, &clock).contains(&RemoveTaint), "{obs:?}");
        }
        assert_eq!(decide(t0, &Observed { tainted: true, ..all_in_place() }, &clock), [RemoveTaint]);
        assert_eq!(decide(t0, &all_in_place(), &clock), []);
    }

    #[test]
    fn a_deleted_file_is_repaired_on_the_next_pass() {
        let t0 = Instant::now();
        let mut clock = TokenClock::new(t0);
        clock.issued(t0, "t1".into(), HOUR);
        let gone = Observed { plugin: false, conflist: false, ..all_in_place() };
        assert_eq!(decide(t0, &gone, &clock), [InstallPlugin, InstallConflist]);
    }

    #[test]
    fn renews_at_half_the_lifetime_on_the_monotonic_clock() {
        let t0 = Instant::now();
        let mut clock = TokenClock::new(t0);
        clock.issued(t0, "t1".into(), HOUR);
        assert!(!clock.due(t0 + HOUR / 2 - Duration::from_millis(1)));
        assert_eq!(clock.state(t0 + HOUR / 2 - Duration::from_millis(1)), TokenState::Fresh);
        assert!(clock.due(t0 + HOUR / 2));
        assert_eq!(decide(t0 + HOUR / 2, &all_in_place(), &clock), [RequestToken]);
        // A token the API server capped at 10 minutes is renewed after 5.
        clock.issued(t0 + HOUR / 2, "t2".into(), Duration::from_secs(600));
        assert_eq!(clock.next_try(), t0 + HOUR / 2 + Duration::from_secs(300));
    }

    #[test]
    fn failing_renewal_keeps_the_old_token_retries_and_reports_once() {
        let t0 = Instant::now();
        let mut clock = TokenClock::new(t0);
        clock.issued(t0, "t1".into(), HOUR);
        let due = t0 + HOUR / 2;
        clock.failed(due);
        assert_eq!(clock.held().unwrap().token, "t1", "the old token is kept");
        assert_eq!(clock.state(due), TokenState::Stale);
        assert_eq!(clock.next_try(), due + Duration::from_secs(1));
        let acts = decide(due, &all_in_place(), &clock);
        assert_eq!(acts, [ReportTokenStale], "not due again before the retry");
        clock.reported();
        assert_eq!(decide(due, &all_in_place(), &clock), []);
        // Backoff doubles to a cap.
        let mut now = due;
        for _ in 0..10 {
            now = clock.next_try();
            clock.failed(now);
        }
        assert_eq!(clock.next_try() - now, MAX_RETRY);
        assert_eq!(clock.state(t0 + HOUR), TokenState::Expired);
        // Success ends the episode.
        clock.issued(now, "t2".into(), HOUR);
        assert_eq!(clock.state(now), TokenState::Fresh);
        assert_eq!(clock.failures(), 0);
    }

    #[test]
    fn no_first_token_is_reported_and_a_fresh_token_is_not() {
        let t0 = Instant::now();
        let mut clock = TokenClock::new(t0);
        clock.failed(t0);
        assert_eq!(clock.state(t0), TokenState::Missing);
        assert_eq!(decide(t0, &Observed::default(), &clock), [InstallPlugin, ReportTokenStale]);
        clock.issued(t0, "t1".into(), HOUR);
        clock.failed(t0);
        assert!(!decide(t0, &all_in_place(), &clock).contains(&ReportTokenStale));
    }
}
