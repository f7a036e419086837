//! `/metrics`, `/healthz` and `/readyz` on one address (the agent runs on the host network:
//! one port to open). `/metrics` reads the plugin's stores at each scrape, off the runtime's
//! threads. `/readyz` is 200 while the plugin, conflist, kubeconfig and pod CIDR are in place.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};

#[derive(Clone, Debug)]
pub struct State {
    pub metrics: Metrics,
    pub ready: Arc<AtomicBool>,
    pub data_dir: PathBuf,
}

/// Bind, then serve from a spawned task; the bound address (port 0 in tests) is returned and
/// logged as `metrics and health probes listening on ADDR`.
pub async fn serve(addr: SocketAddr, state: State) -> io::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!("metrics and health probes listening on {local}");
    let state = Arc::new(state);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(respond(&state, &req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                let _ = conn.await;
            });
        }
    });
    Ok(local)
}

async fn respond(state: &Arc<State>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let st = Arc::clone(state);
            let body = tokio::task::spawn_blocking(move || {
                st.metrics.refresh(&st.data_dir);
                st.metrics.encode()
            })
            .await
            .unwrap_or_default();
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(CONTENT_TYPE, metrics::CONTENT_TYPE.parse().expect("static header value"));
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the plugin, conflist, kubeconfig or the node's pod CIDR is not in place\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("static header value"));
    resp
}
