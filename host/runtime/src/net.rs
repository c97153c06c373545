//! HTTP/1.1 serving on hyper, shared by every listener weft runs (the OTLP/HTTP receiver, the
//! filter proxy, the telemetry server): graceful shutdown, connection ids, accept back-off.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// A buffered response.
pub type Resp = Response<Full<Bytes>>;

/// A response with `status`, a `content-type` and `body`.
pub fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `handler` on `listener` (HTTP/1.1) until `shutdown` fires; connections in flight finish.
pub async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    handler: H,
    shutdown: tokio::sync::watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Resp> + Send + 'static,
{
    serve_connections(listener, move |_| handler.clone(), shutdown).await
}

/// What the server knows about one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Unique in the process (Envoy's `connection.id`).
    pub id: u64,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The local address it connected to.
    pub local: std::net::SocketAddr,
}

/// Like [`serve`], with a handler made per connection by `make` from what is known about it.
pub async fn serve_connections<M, H, F, B>(
    listener: tokio::net::TcpListener,
    make: M,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    M: Fn(ConnectionInfo) -> H,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let local = listener.local_addr().ok();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Answers leave when written, not after the client's delayed ACK (Nagle).
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo {
                    id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
                    peer,
                    local: stream.local_addr().ok().or(local).unwrap_or(peer),
                };
                let handler = make(info);
                let mut stop = shutdown.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let h = handler.clone();
                        async move { Ok::<_, std::convert::Infallible>(h(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// A listener that could not bind.
#[derive(Debug, thiserror::Error)]
#[error("{what}: cannot listen on {addr}: {source}")]
pub struct BindError {
    /// Which listener (its configuration key).
    pub what: String,
    /// The address.
    pub addr: std::net::SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Binds listener `what` (its configuration key, for the error) on `addr`; port 0 binds a free
/// port.
pub async fn bind(
    what: impl Into<String>,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError {
            what: what.into(),
            addr,
            source,
        })
}

/// Waits for every task of `tasks` to finish, until `deadline`. Returns whether all finished.
pub async fn join_until(
    tasks: &mut tokio::task::JoinSet<()>,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}
