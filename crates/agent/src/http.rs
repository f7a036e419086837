//! `/metrics`, `/healthz` and `/readyz` on one address (the agent runs on the host network:
//! one port to open). `/metrics` reads the plugin's stores at each scrape, off the runtime's
//! threads. `/readyz` is 200 while the plugin, conflist, kubeconfig and pod CIDR are in place.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use podcidr_probe::{Reply, reply, text};

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
    let state = Arc::new(state);
    let (local, _) = podcidr_probe::serve(addr, "metrics and health probes", move |req| {
        let state = Arc::clone(&state);
        async move { respond(&state, &req).await }
    })
    .await?;
    Ok(local)
}

async fn respond(state: &Arc<State>, req: &Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
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
            reply(StatusCode::OK, metrics::CONTENT_TYPE, body)
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the plugin, conflist, kubeconfig or the node's pod CIDR is not in place\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
