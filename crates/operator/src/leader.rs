//! Leader election on the `coordination.k8s.io/v1` Lease `podcidr-operator` with
//! kube-lease-manager (the maintained lease crate for kube 5; it takes the lease with
//! server-side apply, so two candidates cannot both win).
//!
//! Only the leader runs the controller, so only the leader writes. A follower waits (and is
//! ready: it serves nothing that could be stale). When the leader loses the lease, or can no
//! longer tell whether it still holds it (a failed renewal), it exits non-zero at once: the
//! Deployment restarts it as a follower, and nothing it had in flight can race the new leader
//! for longer than that. On SIGTERM it releases the lease so a follower takes over at once.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};

use super::flags::Settings;
use super::http::Readiness;
use super::metrics::Metrics;

pub const LEASE_NAME: &str = "podcidr-operator";

/// The renewal margin: a third of the duration, so a holder renews twice before anyone may
/// take over (15 s: renewed every 10 s), at least 1 s and less than the duration.
pub fn grace_seconds(duration: u64) -> u64 {
    (duration / 3).clamp(1, duration.saturating_sub(1).max(1))
}

/// Whether the lease is held by someone else right now (then this process is a follower).
fn held_by_other(lease: &Lease, identity: &str) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else { return false };
    if holder == identity {
        return false;
    }
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else { return false };
    let renewed: SystemTime = renew.0.into();
    renewed + Duration::from_secs(u64::try_from(secs).unwrap_or(0)) > SystemTime::now()
}

async fn build(
    client: &Client,
    s: &Settings,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<LeaseManager> {
    let mut wait = Duration::from_millis(500);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(&s.lease_namespace)
            .with_identity(&s.identity)
            .with_duration(s.lease_seconds)
            .with_grace(grace_seconds(s.lease_seconds))
            .build();
        tokio::select! {
            r = built => match r {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!("cannot use the Lease {}/{LEASE_NAME}: {e} (retrying in {wait:?})", s.lease_namespace),
            },
            _ = &mut *shutdown => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut *shutdown => return None,
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

/// Wait for the lease, then run `work` while holding it. Returns on shutdown (lease released,
/// exit 0) or when `work` ends; exits the process at once when the lease is lost.
pub async fn run<W, F>(
    client: Client,
    s: &Settings,
    metrics: Metrics,
    ready: Readiness,
    work: W,
    shutdown: impl Future<Output = ()>,
) -> ExitCode
where
    W: FnOnce() -> F,
    F: Future<Output = ()>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let Some(manager) = build(&client, s, &mut shutdown).await else { return ExitCode::SUCCESS };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &s.lease_namespace);
    // A follower is ready as soon as it sees someone else hold the lease; looked at now and
    // then while waiting (changed() only returns when this process wins).
    let mut peek = tokio::time::interval(Duration::from_secs(1));
    let mut following = false;
    loop {
        tokio::select! {
            r = manager.changed() => match r {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("leader election: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = peek.tick(), if !following => {
                if let Ok(Some(lease)) = leases.get_opt(LEASE_NAME).await
                    && held_by_other(&lease, &s.identity)
                {
                    let holder = lease.spec.and_then(|sp| sp.holder_identity).unwrap_or_default();
                    tracing::info!(leader = %holder, identity = %s.identity, "following: the lease {}/{LEASE_NAME} is held", s.lease_namespace);
                    following = true;
                    ready.set(true);
                }
            }
            _ = &mut shutdown => {
                tracing::info!("stopping (follower)");
                return ExitCode::SUCCESS;
            }
        }
    }
    tracing::info!(identity = %s.identity, "leading: holding the lease {}/{LEASE_NAME}", s.lease_namespace);
    metrics.set_leader(true);
    let work = work();
    let mut code = ExitCode::SUCCESS;
    tokio::select! {
        r = manager.changed() => {
            metrics.set_leader(false);
            match r {
                Ok(_) => tracing::error!("lost the lease {}/{LEASE_NAME}: stopping at once", s.lease_namespace),
                Err(e) => tracing::error!("cannot renew the lease {}/{LEASE_NAME} ({e}): stopping at once, as it may be lost", s.lease_namespace),
            }
            // At once: no write of this process may follow (in-flight tasks die with it).
            std::process::exit(1);
        }
        _ = &mut shutdown => {
            tracing::info!("stopping: releasing the lease");
        }
        () = work => {
            tracing::error!("the controller stopped");
            code = ExitCode::FAILURE;
        }
    }
    metrics.set_leader(false);
    if let Err(e) = manager.release().await {
        tracing::warn!("cannot release the lease: {e}");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn grace_is_a_third_within_bounds() {
        assert_eq!(grace_seconds(15), 5);
        assert_eq!(grace_seconds(2), 1);
        assert_eq!(grace_seconds(4), 1);
        assert_eq!(grace_seconds(60), 20);
    }

    fn lease(holder: &str, renewed_ago: Duration, secs: i32) -> Lease {
        let t = SystemTime::now() - renewed_ago;
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                renew_time: Some(MicroTime(t.try_into().unwrap())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn follower_only_while_someone_else_holds_a_live_lease() {
        assert!(held_by_other(&lease("other", Duration::from_secs(1), 15), "me"));
        assert!(!held_by_other(&lease("me", Duration::from_secs(1), 15), "me"));
        assert!(!held_by_other(&lease("other", Duration::from_secs(30), 15), "me"));
        assert!(!held_by_other(&lease("", Duration::from_secs(1), 15), "me"));
    }
}
