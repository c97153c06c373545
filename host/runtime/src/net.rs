//! HTTP serving on hyper, shared by every listener weft runs (the OTLP/gRPC and OTLP/HTTP
//! receivers, the filter proxy, the telemetry server): connection limits and timeouts
//! ([`ServerLimits`]), their counters ([`ListenerStats`]), graceful shutdown, connection ids,
//! and an accept loop that pauses instead of spinning when file descriptors run out.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::telemetry::{Exposition, MetricKind, MetricsSource};

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

/// How a listener protects itself from its clients: how many connections it serves at once and
/// how long a connection may sit without doing anything useful. Every listener weft opens has
/// one (receivers, proxies and the telemetry server); the receivers and proxies take theirs from
/// the configuration, spelled as the Collector's `confighttp` / `configgrpc`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    /// Connections served at once. Past it a new connection is accepted and closed at once
    /// (counted in `weft_listener_connections_refused_total`): the kernel's backlog then never
    /// fills with connections nobody will serve, and the client learns at once that it must
    /// retry. The Collector has no such setting.
    pub max_connections: usize,
    /// HTTP/1: time a client has to send a request's headers, counted from when the connection
    /// starts waiting for them (for a kept-alive connection: from the end of the previous
    /// response). `None`: no limit.
    pub header_read_timeout: Option<Duration>,
    /// A connection with no request in flight for this long is closed (gracefully: HTTP/2 sends
    /// GOAWAY first). `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A connection older than this is closed gracefully (gRPC's `max_connection_age`). `None`:
    /// never.
    pub max_connection_age: Option<Duration>,
    /// How long a connection closed gracefully (idle, age) may take to finish the requests in
    /// flight before it is cut (gRPC's `max_connection_age_grace`).
    pub close_grace: Duration,
    /// HTTP/2 settings; `None`: the listener speaks HTTP/1.1.
    pub http2: Option<Http2Limits>,
}

/// What an HTTP/2 listener adds to [`ServerLimits`].
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Limits {
    /// Streams (calls) one connection may have open at once (`max_concurrent_streams`).
    pub max_concurrent_streams: u32,
    /// Send a keep-alive ping after the connection was quiet this long (`keepalive.time`), to
    /// find peers that went away without closing. `None`: no pings.
    pub keepalive_time: Option<Duration>,
    /// Close the connection when a ping is not answered within this (`keepalive.timeout`).
    pub keepalive_timeout: Duration,
}

impl Default for ServerLimits {
    /// An HTTP/1.1 listener: 1000 connections, 60 s to send headers, idle connections closed
    /// after 60 s (the Collector's `confighttp` defaults for the two timeouts), no age limit,
    /// 10 s of grace.
    fn default() -> Self {
        ServerLimits {
            max_connections: 1000,
            header_read_timeout: Some(Duration::from_secs(60)),
            idle_timeout: Some(Duration::from_secs(60)),
            max_connection_age: None,
            close_grace: Duration::from_secs(10),
            http2: None,
        }
    }
}

impl ServerLimits {
    /// The telemetry server's (`/metrics`, `/healthz`, `/readyz`): scrapers and probes make
    /// short requests, so few connections and short timeouts (not configurable).
    pub fn admin() -> Self {
        ServerLimits {
            max_connections: 64,
            header_read_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(30)),
            max_connection_age: None,
            close_grace: Duration::from_secs(5),
            http2: None,
        }
    }
}

/// Reads one counter of a listener.
type Counter = fn(&ListenerStats) -> &AtomicU64;

/// The counters of one listener (`weft_listener_*{listener="<configuration key>"}`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// The listener's configuration key (`receivers.otlp.protocols.grpc`, `proxies.edge.listen`).
    pub name: String,
    /// Connections open now.
    pub active: AtomicI64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub refused: AtomicU64,
    /// `accept` failures (out of file descriptors, and the like).
    pub accept_errors: AtomicU64,
    /// Connections closed because they were idle for `idle_timeout`.
    pub closed_idle: AtomicU64,
    /// Connections closed because they reached `max_connection_age`.
    pub closed_age: AtomicU64,
}

impl ListenerStats {
    /// Empty counters for listener `name`.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new(ListenerStats {
            name: name.into(),
            ..Default::default()
        })
    }
}

/// The `weft_listener_*` metrics of a set of listeners, for the telemetry server.
#[derive(Debug, Default)]
pub struct ListenerMetrics(pub Vec<Arc<ListenerStats>>);

impl MetricsSource for ListenerMetrics {
    fn render(&self, out: &mut Exposition) {
        if self.0.is_empty() {
            return;
        }
        let mut f = out.family(
            "weft_listener_connections",
            "Connections open now.",
            MetricKind::Gauge,
        );
        for l in &self.0 {
            f.sample(&[("listener", &l.name)], l.active.load(Ordering::Relaxed));
        }
        let rows: [(&str, &str, Counter); 5] = [
            (
                "weft_listener_connections_accepted_total",
                "Connections accepted and served.",
                |l| &l.accepted,
            ),
            (
                "weft_listener_connections_refused_total",
                "Connections closed at once because max_connections were open.",
                |l| &l.refused,
            ),
            (
                "weft_listener_accept_errors_total",
                "accept() failures (out of file descriptors, and the like).",
                |l| &l.accept_errors,
            ),
            (
                "weft_listener_connections_closed_idle_total",
                "Connections closed after idle_timeout without a request in flight.",
                |l| &l.closed_idle,
            ),
            (
                "weft_listener_connections_closed_age_total",
                "Connections closed at max_connection_age.",
                |l| &l.closed_age,
            ),
        ];
        for (name, help, get) in rows {
            let mut f = out.family(name, help, MetricKind::Counter);
            for l in &self.0 {
                f.sample(&[("listener", &l.name)], get(l).load(Ordering::Relaxed));
            }
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` fires; connections in flight finish.
pub async fn serve<H, F, B>(
    listener: tokio::net::TcpListener,
    limits: ServerLimits,
    stats: Arc<ListenerStats>,
    handler: H,
    shutdown: tokio::sync::watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_connections(listener, limits, stats, move |_| handler.clone(), shutdown).await
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

/// Logs at most once per period, remembering how many it held back.
struct Every {
    period: Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl Every {
    fn new(period: Duration) -> Self {
        Every {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be written now.
    fn ready(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|l| now < l + self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// How long to wait before the next `accept` after `e`. Out of file descriptors (or kernel
/// memory), the pending connection stays in the backlog and the listener stays readable: an
/// immediate retry fails the same way, which is the busy loop this pause prevents. A connection
/// that went away before it was accepted is not a reason to wait.
fn accept_pause(e: &std::io::Error) -> Duration {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            Duration::from_millis(100)
        }
        _ => match e.kind() {
            std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted => Duration::ZERO,
            _ => Duration::from_millis(20),
        },
    }
}

/// Whether requests are in flight on a connection, and since when it has none: what
/// `idle_timeout` measures. Bytes on the wire do not count (HTTP/2 pings would keep a
/// connection alive forever), requests do.
struct Activity {
    in_flight: AtomicUsize,
    /// Requests begun on the connection, ever.
    begun: AtomicU64,
    last_done: std::sync::Mutex<tokio::time::Instant>,
    changed: tokio::sync::Notify,
}

/// One request in flight; dropping it ends the request.
struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            last_done: std::sync::Mutex::new(tokio::time::Instant::now()),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        InFlight(self.clone())
    }

    fn last_done(&self) -> tokio::time::Instant {
        *self.last_done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let deadline = self.last_done() + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first: a watcher that sees no request in flight must see when the last ended.
        *self.0.last_done.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// Takes one connection off the listener's count when its task ends, however it ends.
struct Counted(Arc<ListenerStats>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Like [`serve`], with a handler made per connection by `make` from what is known about it.
///
/// Past `limits.max_connections` a new connection is closed at once. When `accept` fails (out
/// of file descriptors) the loop logs once per 10 s, with the count of failures held back, and
/// pauses briefly instead of retrying at once. Each connection is served under `limits`
/// (HTTP/1.1, or HTTP/2 when `limits.http2` is set).
pub async fn serve_connections<M, H, F, B>(
    listener: tokio::net::TcpListener,
    limits: ServerLimits,
    stats: Arc<ListenerStats>,
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
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);
    let local = listener.local_addr().ok();
    let limits = Arc::new(limits);
    let mut connections = tokio::task::JoinSet::new();
    let mut accept_log = Every::new(Duration::from_secs(10));
    let mut refused_log = Every::new(Duration::from_secs(10));
    loop {
        // Finished connections leave the set here, not only at shutdown.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                        let pause = accept_pause(&e);
                        if let Some(held_back) = accept_log.ready() {
                            tracing::warn!(
                                listener = %stats.name,
                                error = %e,
                                failures_not_logged = held_back,
                                open_connections = stats.active.load(Ordering::Relaxed),
                                "accept failed (out of file descriptors?): pausing {} ms before \
                                 the next accept; raise the limit (ulimit -n) or lower max_connections",
                                pause.as_millis()
                            );
                        }
                        if !pause.is_zero() {
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = shutdown.changed() => break,
                            }
                        }
                        continue;
                    }
                };
                let open = stats.active.load(Ordering::Relaxed);
                if open >= i64::try_from(limits.max_connections).unwrap_or(i64::MAX) {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = refused_log.ready() {
                        tracing::warn!(
                            listener = %stats.name,
                            max_connections = limits.max_connections,
                            refusals_not_logged = held_back,
                            "max_connections are open: closing new connections until some close"
                        );
                    }
                    drop(stream);
                    continue;
                }
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                stats.active.fetch_add(1, Ordering::Relaxed);
                let counted = Counted(stats.clone());
                // Answers leave when written, not after the client's delayed ACK (Nagle).
                let _ = stream.set_nodelay(true);
                let info = ConnectionInfo {
                    id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
                    peer,
                    local: stream.local_addr().ok().or(local).unwrap_or(peer),
                };
                let handler = make(info);
                let stop = shutdown.clone();
                let limits = limits.clone();
                connections.spawn(async move {
                    let activity = Activity::new();
                    let tracked = activity.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let request = tracked.begin();
                        let h = handler.clone();
                        async move {
                            let response = h(req).await;
                            drop(request);
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    match &limits.http2 {
                        None => {
                            let conn = hyper::server::conn::http1::Builder::new()
                                .timer(hyper_util::rt::TokioTimer::new())
                                .header_read_timeout(limits.header_read_timeout)
                                .serve_connection(io, service);
                            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, &counted.0, stop).await;
                        }
                        Some(h2) => {
                            let conn = hyper::server::conn::http2::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .timer(hyper_util::rt::TokioTimer::new())
                            .max_concurrent_streams(h2.max_concurrent_streams)
                            .keep_alive_interval(h2.keepalive_time)
                            .keep_alive_timeout(h2.keepalive_timeout)
                            .serve_connection(io, service);
                            drive(conn, |c| c.graceful_shutdown(), &activity, &limits, &counted.0, stop).await;
                        }
                    }
                    drop(counted);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it ends: closes it gracefully on shutdown, after `idle_timeout`
/// without a request in flight and at `max_connection_age`, and cuts it `close_grace` after an
/// idle or age close began.
async fn drive<C: std::future::Future>(
    conn: C,
    graceful: fn(Pin<&mut C>),
    activity: &Activity,
    limits: &ServerLimits,
    stats: &ListenerStats,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::pin!(conn);
    let born = tokio::time::Instant::now();
    let mut stopping = false;
    let mut cut_at: Option<tokio::time::Instant> = None;
    loop {
        let watching = !stopping && cut_at.is_none();
        let (idle_timeout, max_age, cut_time) =
            (limits.idle_timeout, limits.max_connection_age, cut_at);
        let idle = async move {
            match idle_timeout {
                Some(d) if watching => activity.idle_for(d).await,
                _ => std::future::pending().await,
            }
        };
        let aged = async move {
            match max_age {
                Some(age) if watching => tokio::time::sleep_until(born + age).await,
                _ => std::future::pending().await,
            }
        };
        let cut = async move {
            match cut_time {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.changed(), if !stopping => {
                // Shutdown waits for the requests in flight, for `close_grace` at most.
                stopping = true;
                if activity.begun.load(Ordering::Relaxed) == 0 {
                    return;
                }
                graceful(conn.as_mut());
                cut_at.get_or_insert(tokio::time::Instant::now() + limits.close_grace);
            }
            _ = idle => {
                stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                if activity.begun.load(Ordering::Relaxed) == 0 {
                    // Nothing was ever asked on it, so nothing is owed: close it now. (An
                    // HTTP/2 connection still in its handshake, a client that never sent its
                    // preface, ignores a graceful close until the handshake ends.)
                    return;
                }
                graceful(conn.as_mut());
                cut_at = Some(tokio::time::Instant::now() + limits.close_grace);
            }
            _ = aged => {
                stats.closed_age.fetch_add(1, Ordering::Relaxed);
                graceful(conn.as_mut());
                cut_at = Some(tokio::time::Instant::now() + limits.close_grace);
            }
            _ = cut => return,
        }
    }
}

/// Whether a listener on `addr` can be reached from other hosts.
pub fn is_exposed(addr: std::net::SocketAddr) -> bool {
    !addr.ip().is_loopback()
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
/// port. A listener other hosts can reach is logged as a warning: weft has no TLS yet, so what
/// it receives there travels in the clear and anyone who can reach the port may send.
pub async fn bind(
    what: impl Into<String>,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, BindError> {
    let what = what.into();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError {
            what: what.clone(),
            addr,
            source,
        })?;
    if is_exposed(addr) {
        tracing::warn!(
            listener = %what,
            %addr,
            "listening on a non-loopback address without TLS (weft does not implement TLS yet): \
             data arrives unencrypted and anyone who can reach this port can send; bind \
             127.0.0.1, or put a TLS-terminating proxy in front"
        );
    }
    Ok(listener)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_count_as_private() {
        let exposed = |a: &str| is_exposed(a.parse().expect("address"));
        assert!(!exposed("127.0.0.1:4317"));
        assert!(!exposed("[::1]:4317"));
        assert!(exposed("0.0.0.0:4317"));
        assert!(exposed("[::]:4317"));
        assert!(exposed("10.1.2.3:4318"));
    }

    #[test]
    fn out_of_file_descriptors_pauses_the_accept_loop_and_an_aborted_connection_does_not() {
        let os = std::io::Error::from_raw_os_error;
        assert_eq!(accept_pause(&os(libc::EMFILE)), Duration::from_millis(100));
        assert_eq!(accept_pause(&os(libc::ENFILE)), Duration::from_millis(100));
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(accept_pause(&aborted), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request_and_not_while_one_is_in_flight() {
        let a = Activity::new();
        let idle = Duration::from_secs(5);
        let request = a.begin();
        // In flight: never idle, however long it takes.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), a.idle_for(idle))
                .await
                .is_err()
        );
        drop(request);
        let ended = tokio::time::Instant::now();
        a.idle_for(idle).await;
        assert_eq!(tokio::time::Instant::now() - ended, idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_line_per_period_with_the_count_held_back() {
        let mut every = Every::new(Duration::from_secs(10));
        assert_eq!(every.ready(), Some(0));
        assert_eq!(every.ready(), None);
        assert_eq!(every.ready(), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(every.ready(), Some(2));
    }
}
