//! The operator's small HTTP servers: `/metrics` on `--metrics-bind-address`, `/healthz` and
//! `/readyz` on `--health-probe-bind-address` (issue 11 §6).
//!
//! Usage, from the controller:
//! ```ignore
//! let metrics = Metrics::new();
//! let ready = Readiness::new();
//! let _m = http::serve(metrics_addr, Routes::metrics(metrics.clone())).await?; // bind error: exit
//! let _h = http::serve(health_addr, Routes::health(ready.clone(), Liveness::new())).await?;
//! // ... restore done, or became a follower:
//! ready.set(true);
//! ```
//! [`serve`] binds before it returns, so a bind error (address in use, bad address) is a
//! start-up error for the caller to report. It then logs, at info level,
//! `metrics listening on ADDR`, `health probes listening on ADDR`, or
//! `metrics and health probes listening on ADDR` (when one [`Routes`] carries both), with ADDR
//! the bound address: tests pass port 0 and read the port from that line (or use
//! [`Server::local_addr`]).
//!
//! - `/metrics`: the OpenMetrics text of [`Metrics::encode`], content type [`CONTENT_TYPE`].
//! - `/healthz`: 200 `ok` while the process runs, except past the instant given to
//!   [`Liveness::healthy_until`] (a leader whose lease renewal is overdue): 503, so the kubelet
//!   restarts a leader that cannot renew.
//! - `/readyz`: 200 `ok` once [`Readiness::set`] got `true`, 503 before (and after `false`).
//!
//! Only GET and HEAD; anything else is 405, an unknown path 404.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, Request, StatusCode};
use podcidr_probe::{Reply, reply, text};
use tokio::task::JoinHandle;

use super::metrics::{CONTENT_TYPE, Metrics};

/// The readiness flag behind `/readyz`; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ready (`/readyz` answers 200) or not (503).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The liveness behind `/healthz`: healthy, or healthy until an instant; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Liveness(Arc<std::sync::Mutex<Option<Instant>>>);

impl Liveness {
    /// Always healthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Healthy until `until` (None: from now on, whatever the time).
    pub fn healthy_until(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    pub fn is_healthy(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_none_or(|t| Instant::now() < t)
    }
}

/// What one listener serves.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    metrics: Option<Metrics>,
    health: Option<(Readiness, Liveness)>,
}

impl Routes {
    /// `/metrics` only.
    pub fn metrics(metrics: Metrics) -> Self {
        Self { metrics: Some(metrics), health: None }
    }

    /// `/healthz` and `/readyz` only.
    pub fn health(ready: Readiness, live: Liveness) -> Self {
        Self { metrics: None, health: Some((ready, live)) }
    }

    /// Add `/healthz` and `/readyz` (both flags name the same address).
    pub fn with_health(mut self, ready: Readiness, live: Liveness) -> Self {
        self.health = Some((ready, live));
        self
    }

    /// Add `/metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn name(&self) -> &'static str {
        match (self.metrics.is_some(), self.health.is_some()) {
            (true, true) => "metrics and health probes",
            (true, false) => "metrics",
            (false, true) => "health probes",
            (false, false) => "nothing",
        }
    }
}

/// A running server; it runs until [`Server::abort`] or the end of the runtime (dropping the
/// handle does not stop it).
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// The bound address (the real port when the flag said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting connections.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Bind `addr` and serve `routes` on it from a spawned task (call inside a tokio runtime).
/// The error names the address, for the start-up error message.
pub async fn serve(addr: SocketAddr, routes: Routes) -> io::Result<Server> {
    let name = routes.name();
    let routes = Arc::new(routes);
    let (local_addr, task) = podcidr_probe::serve(addr, name, move |req| {
        let reply = respond(&routes, &req);
        async move { reply }
    })
    .await?;
    Ok(Server { local_addr, task })
}

fn respond(routes: &Routes, req: &Request<Incoming>) -> Reply {
    let path = req.uri().path();
    let known = match path {
        "/metrics" => routes.metrics.is_some(),
        "/healthz" | "/readyz" => routes.health.is_some(),
        _ => false,
    };
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match (path, &routes.metrics, &routes.health) {
        ("/metrics", Some(metrics), _) => reply(StatusCode::OK, CONTENT_TYPE, metrics.encode()),
        ("/readyz", _, Some((ready, _))) if !ready.is_ready() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "not ready: restoring the existing allocations\n")
        }
        ("/healthz", _, Some((_, live))) if !live.is_healthy() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "unhealthy: the leader's lease renewal is overdue\n")
        }
        _ => text(StatusCode::OK, "ok\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// One HTTP/1.1 request over a plain socket, as a probe or a scraper sends it; returns the
    /// status code, the headers (lower-cased names) and the body.
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).unwrap();
            let (head, body) = raw.split_once("\r\n\r\n").unwrap();
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            (status, head.to_ascii_lowercase(), body.to_owned())
        })
        .await
        .unwrap()
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// What tests of the binary rely on: one `<what> listening on <addr>` line per listener,
    /// with the real port when asked for port 0.
    #[test]
    fn logs_the_bound_address() {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (m, h, both) = tracing::subscriber::with_default(subscriber, || {
            rt.block_on(async {
                (
                    serve(any_port(), Routes::metrics(Metrics::new())).await.unwrap().local_addr(),
                    serve(any_port(), Routes::health(Readiness::new(), Liveness::new())).await.unwrap().local_addr(),
                    serve(any_port(), Routes::metrics(Metrics::new()).with_health(Readiness::new(), Liveness::new()))
                        .await
                        .unwrap()
                        .local_addr(),
                )
            })
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains(&format!("metrics listening on {m}\n")), "{log}");
        assert!(log.contains(&format!("health probes listening on {h}\n")), "{log}");
        assert!(log.contains(&format!("metrics and health probes listening on {both}\n")), "{log}");
        assert!(m.ip().is_loopback() && m.port() != 0);
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_registry() {
        let metrics = Metrics::new();
        metrics.set_pool("default", "ipv4", 256, 37, 0);
        let server = serve(any_port(), Routes::metrics(metrics.clone())).await.unwrap();
        assert_ne!(server.local_addr().port(), 0);
        let (status, head, body) = get(server.local_addr(), "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/openmetrics-text"), "{head}");
        assert!(body.contains("podcidr_pool_node_cidrs_allocated{pool=\"default\",family=\"ipv4\"} 37"), "{body}");
        // The value is read at scrape time.
        metrics.set_leader(true);
        let (_, _, body) = get(server.local_addr(), "GET", "/metrics").await;
        assert!(body.contains("\npodcidr_operator_leader 1\n"), "{body}");
        // The health routes are not on the metrics listener.
        assert_eq!(get(server.local_addr(), "GET", "/healthz").await.0, 404);
        server.abort();
    }

    #[tokio::test]
    async fn readyz_follows_the_flag_and_healthz_is_always_ok() {
        let ready = Readiness::new();
        let server = serve(any_port(), Routes::health(ready.clone(), Liveness::new())).await.unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "GET", "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "GET", "/readyz").await;
        assert_eq!(status, 503, "{body}");
        ready.set(true);
        let (status, _, body) = get(addr, "GET", "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        assert_eq!(get(addr, "HEAD", "/readyz").await.0, 200);
        ready.set(false);
        assert_eq!(get(addr, "GET", "/readyz").await.0, 503);
        assert_eq!(get(addr, "GET", "/metrics").await.0, 404);
        assert_eq!(get(addr, "GET", "/").await.0, 404);
        let (status, head, _) = get(addr, "POST", "/healthz").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"), "{head}");
    }

    #[tokio::test]
    async fn healthz_fails_past_the_liveness_deadline() {
        let live = Liveness::new();
        let server = serve(any_port(), Routes::health(Readiness::new(), live.clone())).await.unwrap();
        let addr = server.local_addr();
        live.healthy_until(Some(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(get(addr, "GET", "/healthz").await.0, 200);
        live.healthy_until(Some(Instant::now()));
        let (status, _, body) = get(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (503, "unhealthy: the leader's lease renewal is overdue\n"));
        live.healthy_until(None);
        assert_eq!(get(addr, "GET", "/healthz").await.0, 200);
    }

    #[tokio::test]
    async fn one_listener_can_carry_both() {
        let ready = Readiness::new();
        ready.set(true);
        let server =
            serve(any_port(), Routes::metrics(Metrics::new()).with_health(ready, Liveness::new())).await.unwrap();
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(get(server.local_addr(), "GET", path).await.0, 200, "{path}");
        }
    }

    #[tokio::test]
    async fn a_taken_address_is_a_startup_error_naming_it() {
        let first = serve(any_port(), Routes::health(Readiness::new(), Liveness::new())).await.unwrap();
        let err = serve(first.local_addr(), Routes::metrics(Metrics::new())).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let msg = err.to_string();
        assert!(msg.contains(&first.local_addr().to_string()) && msg.contains("metrics"), "{msg}");
    }
}
