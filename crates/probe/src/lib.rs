//! The HTTP endpoint the operator and the agent serve for Prometheus and the kubelet's probes:
//! bind, accept, one HTTP/1 connection a task, plain replies. What each path answers is the
//! caller's (`podcidr_operator::http`, `podcidr_agent::http`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A slow or idle client must not hold a connection (and a file descriptor) for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of an OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A reply.
pub type Reply = Response<Full<Bytes>>;

/// Bind `addr`, then answer each request with `respond` from a spawned task (call inside a tokio
/// runtime). A bind error names the address and `what` is served, for the start-up error
/// message; once bound it logs `{what} listening on ADDR` with the bound address (tests pass
/// port 0 and read the port from that line).
pub async fn serve<F, Fut>(addr: SocketAddr, what: &str, respond: F) -> io::Result<(SocketAddr, JoinHandle<()>)>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} for {what}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!("{what} listening on {local}");
    Ok((local, tokio::spawn(accept_loop(listener, Arc::new(respond)))))
}

async fn accept_loop<F, Fut>(listener: TcpListener, respond: Arc<F>)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: keep serving once descriptors come back, without spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let respond = Arc::clone(&respond);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let reply = respond(req);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection: {e}");
            }
        });
    }
}

/// A reply of `body` with `content_type`.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    resp
}

/// A plain-text reply.
pub fn text(status: StatusCode, body: &'static str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}
