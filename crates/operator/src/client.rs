//! The operator's kube clients, with client-go's client-side rate limit.
//!
//! Every request of a client (lists, watches, writes, events) takes a token from one token
//! bucket (`--kube-api-qps` per second, `--kube-api-burst` at once), like client-go's
//! `flowcontrol` limiter in kube-controller-manager. The limit sits in the service's
//! `poll_ready`: kube's `Buffer` in front of it queues requests in order while it waits.
//! Leader election gets a client of its own (as kcm's leader-election client) so a burst of
//! writes can never delay a lease renewal past its deadline.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::Client;
use kube::client::ClientBuilder;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use tower_layer::Layer;
use tower_service::Service;

/// A token bucket: `rate` tokens a second, at most `burst` stored. Taking a token that is not
/// there yet reserves it (the count goes negative) and says how long to wait, so waiters are
/// served in the order they asked.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Take one token at `now`; the wait before using it.
    pub fn reserve_at(&self, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.rate).min(self.burst);
        st.1 = now.max(st.1);
        st.0 -= 1.0;
        if st.0 >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-st.0 / self.rate) }
    }
}

/// The layer that puts a [`Bucket`] in front of a service.
#[derive(Clone, Debug)]
pub struct RateLimitLayer(Arc<Bucket>);

impl RateLimitLayer {
    pub fn new(qps: f64, burst: u32) -> Self {
        Self(Arc::new(Bucket::new(qps, burst)))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner, bucket: self.0.clone(), ready: false, sleep: None }
    }
}

pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
    /// A token is taken for the next `call`.
    ready: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.ready {
            if self.sleep.is_none() {
                let wait = self.bucket.reserve_at(Instant::now());
                if wait.is_zero() {
                    self.ready = true;
                } else {
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                self.ready = true;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.ready = false;
        self.inner.call(req)
    }
}

/// No read on an API connection waits longer than this. kube sets no read timeout, so a
/// request the API server never answers (a pool status write, an Event) would hold its task for
/// good; the allocation and Lease requests have shorter deadlines of their own. Above the 290 s
/// a watch asks the server for, so an idle watch is closed by the server first.
pub const READ_TIMEOUT: Duration = Duration::from_secs(295);

/// The kube config: `--kubeconfig FILE`, else kube's inference (KUBECONFIG, ~/.kube/config,
/// in-cluster), with [`READ_TIMEOUT`].
pub async fn config(kubeconfig: Option<&Path>) -> Result<Config, String> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| format!("no Kubernetes configuration: {e}"))?,
    };
    config.read_timeout.get_or_insert(READ_TIMEOUT);
    Ok(config)
}

/// A client whose every request goes through a rate limit of its own, without kube's retries.
pub fn limited(mut config: Config, qps: f64, burst: u32) -> Result<Client, String> {
    // kube's own retry of 429/503/504 would hide them from the capped backoff and the error
    // counts, and would send requests the rate limit never sees.
    config.default_retry = false;
    let builder = ClientBuilder::try_from(config).map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
    Ok(builder.with_layer(&RateLimitLayer::new(qps, burst)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_request_has_a_read_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n\
             users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
             current-context: x\n",
        )
        .unwrap();
        let config = config(Some(&path)).await.unwrap();
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));
    }

    #[test]
    fn burst_then_rate() {
        let b = Bucket::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.reserve_at(t0), Duration::ZERO);
        }
        // The 4th and 5th wait one and two tenths of a second: reserved in order.
        assert!((b.reserve_at(t0).as_secs_f64() - 0.1).abs() < 1e-9);
        assert!((b.reserve_at(t0).as_secs_f64() - 0.2).abs() < 1e-9);
        // A second later the debt is paid and 8 tokens came back, capped at the burst.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(b.reserve_at(t1), Duration::ZERO);
        }
        assert!(b.reserve_at(t1) > Duration::ZERO);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_service_is_not_ready_without_a_token() {
        use std::convert::Infallible;
        struct Echo;
        impl Service<u32> for Echo {
            type Response = u32;
            type Error = Infallible;
            type Future = std::future::Ready<Result<u32, Infallible>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, r: u32) -> Self::Future {
                std::future::ready(Ok(r))
            }
        }
        let mut svc = RateLimitLayer::new(0.001, 2).layer(Echo);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for i in 0..2 {
            assert!(svc.poll_ready(&mut cx).is_ready());
            assert_eq!(svc.call(i).into_inner().unwrap(), i);
        }
        // The burst is spent and the next token is ~1000 s away.
        assert!(svc.poll_ready(&mut cx).is_pending());
        assert!(svc.poll_ready(&mut cx).is_pending());
    }
}
