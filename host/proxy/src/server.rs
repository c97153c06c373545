//! The proxy's HTTP side: accept (HTTP/1.1), drive each stream through its filter chain, call
//! the upstream with hyper's client, answer, and run `on-done` once the answer is written.
//! Also the tick drivers of the filters.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot, watch};

use weft_runtime::net::{ConnectionInfo, ListenerStats, serve_connections};

use crate::config::ProxyConfig;
use crate::exchange::{Exchange, Header, StreamInfo, first};
use crate::stream::{Dir, Event, Reply, StreamGuard, StreamRun, lock};
use crate::{Filter, LocalReason, ProxyStats, StreamHandle, blocking};

/// Where a filter's current version lives; hot reload swaps it, streams in flight keep the
/// version they started with.
pub type FilterSlot = Arc<arc_swap::ArcSwap<Filter>>;

/// A started proxy.
#[derive(Clone)]
pub struct RunningProxy {
    /// The proxy's id.
    pub id: String,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its counters.
    pub stats: Arc<ProxyStats>,
    /// Its listener's connection counters (`weft_listener_*`).
    pub listener: Arc<ListenerStats>,
    /// Its filters by name, in chain order.
    pub filters: Vec<(String, FilterSlot)>,
}

type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    ProxyBody,
>;

struct ProxyShared {
    stats: Arc<ProxyStats>,
    id: String,
    upstream: String,
    slots: Vec<FilterSlot>,
    client: UpstreamClient,
    timeout: Duration,
    max_body: usize,
    read_timeout: Duration,
}

/// How often a filter without a tick period is checked for one.
const TICK_POLL: Duration = Duration::from_millis(50);

/// Starts proxy `id` on `listener` with the filters in `filters` (chain order, by name).
/// Returns it and the future that serves it until `stop` fires; that future then lets the
/// streams in flight finish, including their `on-done` calls.
pub fn start(
    id: &str,
    config: &ProxyConfig,
    filters: Vec<(String, FilterSlot)>,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> (
    RunningProxy,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stats = Arc::new(ProxyStats::new(id));
    let address = listener.local_addr().unwrap_or(config.listen);
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let proxy = Arc::new(ProxyShared {
        stats: stats.clone(),
        id: id.to_string(),
        upstream: config.upstream.clone(),
        slots: filters.iter().map(|(_, s)| s.clone()).collect(),
        client,
        timeout: config.timeout,
        max_body: config.max_body,
        read_timeout: config.read_timeout,
    });
    let listener_stats = ListenerStats::new(format!("proxies.{id}.listen"));
    let running = RunningProxy {
        id: id.to_string(),
        address,
        stats,
        listener: listener_stats.clone(),
        filters,
    };
    let limits = config.limits.clone();
    let serve = async move {
        let mut ticks = tokio::task::JoinSet::new();
        for slot in &proxy.slots {
            ticks.spawn(tick_loop(slot.clone(), stop.clone()));
        }
        // Every stream holds a sender until its `on-done` calls are over: when the receiver
        // sees them all gone, the proxy has drained.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let p = proxy.clone();
        serve_connections(
            listener,
            limits,
            listener_stats,
            move |conn| {
                let (p, done) = (p.clone(), done_tx.clone());
                move |req| handle(p.clone(), conn, req, done.clone())
            },
            stop,
        )
        .await;
        let _ = done_rx.recv().await;
        while ticks.join_next().await.is_some() {}
        tracing::info!(proxy = %proxy.id, "proxy stopped");
    };
    (running, serve)
}

/// Runs `on-tick` of the filter in `slot` every period it asks for, until `stop`.
async fn tick_loop(slot: FilterSlot, mut stop: watch::Receiver<bool>) {
    loop {
        let filter = slot.load_full();
        let wait = filter.tick_period().unwrap_or(TICK_POLL);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // A reloaded filter starts its own periods.
        if filter.tick_period().is_none() || !Arc::ptr_eq(&filter, &slot.load_full()) {
            continue;
        }
        let f = Filter::clone(&filter);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || f.tick()).await {
            tracing::warn!(plugin = %filter.name(), "on-tick: {e}");
        }
    }
}

/// A body held in memory, with optional trailers; it tells `done` when it is dropped (written
/// out, or the connection went away).
pub struct ProxyBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    done: Option<oneshot::Sender<()>>,
}

impl ProxyBody {
    fn new(data: Vec<u8>, trailers: Option<HeaderMap>) -> Self {
        ProxyBody {
            data: (!data.is_empty()).then(|| Bytes::from(data)),
            trailers,
            done: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.trailers {
            // Trailers need chunked encoding: no length.
            Some(_) => SizeHint::default(),
            None => SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Connection-specific headers: not shown to filters, never forwarded (as Envoy).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
    )
}

/// hyper's header map as `(name, value)` pairs; values that are not UTF-8 are converted lossily.
fn pairs_of(headers: &HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .filter(|(k, _)| !hop_by_hop(k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// `(name, value)` pairs as a hyper header map, without pseudo-headers, connection-specific
/// headers or `skip`; pairs that are not valid HTTP are left out (and logged).
fn header_map(pairs: &[Header], skip: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        if k.starts_with(':') || hop_by_hop(k) || skip.contains(&k.as_str()) {
            continue;
        }
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => tracing::debug!(header = %k, "dropping a header that is not valid HTTP"),
        }
    }
    map
}

/// A new `x-request-id`: 128 random bits in UUID v4 form.
fn request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(salt);
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    let v = (u128::from(half(1)) << 64 | u128::from(half(2))) & !(0xf << 76) & !(0x3 << 62)
        | (0x4 << 76)
        | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One stream: filters on the request, the upstream (or a local response), filters on the
/// response; `on-done` runs after the response is written.
async fn handle(
    proxy: Arc<ProxyShared>,
    conn: ConnectionInfo,
    req: Request<Incoming>,
    done: mpsc::Sender<()>,
) -> Response<ProxyBody> {
    let stats = proxy.stats.clone();
    let guard = StreamGuard::new(stats.clone(), done);
    let (parts, body) = req.into_parts();
    let head = parts.method == Method::HEAD;
    let authority = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut headers: Vec<Header> = vec![
        (":method".into(), parts.method.as_str().to_string()),
        (
            ":path".into(),
            parts
                .uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        ),
        (":authority".into(), authority),
        (":scheme".into(), "http".into()),
    ];
    headers.extend(
        pairs_of(&parts.headers)
            .into_iter()
            .filter(|(k, _)| k != "host"),
    );
    // Like Envoy, every request gets an `x-request-id` before the filters see it.
    let id = match first(&headers, "x-request-id") {
        Some(id) => id.to_string(),
        None => {
            let id = request_id();
            headers.push(("x-request-id".into(), id.clone()));
            id
        }
    };
    let framed = parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
        || parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
    let info = StreamInfo {
        request_id: id,
        start: SystemTime::now(),
        started: Instant::now(),
        source: conn.peer,
        destination: conn.local,
        connection_id: conn.id,
        protocol: if parts.version == hyper::Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        upstream: proxy.upstream.clone(),
        response_code: None,
        code_details: String::new(),
        duration: None,
        request_size: None,
        response_size: None,
    };
    let ex: StreamHandle = Arc::new(Mutex::new(Exchange::new(headers, info, proxy.max_body)));
    let chain: Vec<Filter> = proxy
        .slots
        .iter()
        .map(|s| Filter::clone(&s.load()))
        .collect();
    let (mut run, failed) = {
        let (ex, stats) = (ex.clone(), stats.clone());
        blocking(move || StreamRun::open(chain, ex, stats, guard))
    };

    let upstream = match failed {
        Some(reply) => Err(reply),
        None => request_phase(&proxy, &mut run, &ex, body, framed).await,
    };
    match upstream {
        Ok((resp, deadline)) => response_phase(&mut run, &ex, resp, deadline, &proxy).await,
        Err(reply) => blocking(|| run.local_response(reply)),
    }

    let (mut response, status) = downstream_response(&ex, head);
    stats.count_response(status);
    let (tx, rx) = oneshot::channel();
    response.body_mut().done = Some(tx);
    tokio::spawn(async move {
        let _ = rx.await;
        let _ = tokio::task::spawn_blocking(move || run.finish()).await;
    });
    response
}

/// Runs the request through the filters as it arrives, then sends it upstream. `Err`: answer
/// with this reply instead (through the response filters).
async fn request_phase(
    proxy: &ProxyShared,
    run: &mut StreamRun,
    ex: &StreamHandle,
    mut body: Incoming,
    framed: bool,
) -> Result<(Response<Incoming>, tokio::time::Instant), Reply> {
    let end = body.is_end_stream();
    blocking(|| run.event(Dir::Request, Event::Headers { end }))?;
    if !end {
        // The whole body within `read_timeout`: a client that announces a body and stalls
        // would otherwise hold its stream, and its filters' instances, forever.
        let read_deadline = tokio::time::Instant::now() + proxy.read_timeout;
        body_phase(
            run,
            ex,
            Dir::Request,
            &mut body,
            proxy.max_body,
            Some(read_deadline),
        )
        .await?;
    }
    let req = upstream_request(&mut lock(ex), &proxy.upstream, framed)?;
    // Envoy's route timeout: from the end of the request to the end of the response.
    let deadline = tokio::time::Instant::now() + proxy.timeout;
    match tokio::time::timeout_at(deadline, proxy.client.request(req)).await {
        Ok(Ok(resp)) => Ok((resp, deadline)),
        Ok(Err(e)) => {
            let reason = if e.is_connect() {
                "connection_failure"
            } else {
                "remote_reset"
            };
            tracing::debug!(proxy = %proxy.id, error = %e, "upstream request failed");
            Err(Reply::proxy(
                503,
                &format!("upstream_reset_before_response_started{{{reason}}}"),
                &format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: {}",
                    reason.replace('_', " ")
                ),
                LocalReason::Upstream,
            ))
        }
        Err(_) => Err(upstream_timeout()),
    }
}

fn upstream_timeout() -> Reply {
    Reply::proxy(
        504,
        "upstream_response_timeout",
        "upstream request timeout",
        LocalReason::Upstream,
    )
}

/// The request as the filters left it, for the upstream. The body moves out of the exchange
/// (its size stays readable as `request.size`). Content-Length is recomputed: a filter that
/// replaced the body does not have to fix it.
fn upstream_request(
    ex: &mut Exchange,
    upstream: &str,
    framed: bool,
) -> Result<Request<ProxyBody>, Reply> {
    let invalid = |what: &str| {
        Reply::proxy(
            500,
            &format!("filter_invalid_{what}"),
            "",
            LocalReason::Invalid,
        )
    };
    let method = first(&ex.request_headers, ":method")
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| invalid("method"))?;
    let path = first(&ex.request_headers, ":path")
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| invalid("path"))?;
    let uri: hyper::Uri = format!("http://{upstream}{path}")
        .parse()
        .map_err(|_| invalid("path"))?;
    let mut headers = header_map(&ex.request_headers, &["host", "content-length"]);
    if let Some(host) = first(&ex.request_headers, ":authority")
        .filter(|a| !a.is_empty())
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(hyper::header::HOST, host);
    }
    let body = std::mem::take(&mut ex.request_body);
    ex.info.request_size = Some(body.len());
    let trailers = (!ex.request_trailers.is_empty()).then(|| header_map(&ex.request_trailers, &[]));
    if trailers.is_none() && (framed || !body.is_empty() || ex.request_body_replaced) {
        headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut req = Request::new(ProxyBody::new(body, trailers));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Ok(req)
}

/// Runs the upstream's response through the filters (reverse order) as it arrives. A local
/// response made now, a body over the limit or an upstream failure replaces it directly.
async fn response_phase(
    run: &mut StreamRun,
    ex: &StreamHandle,
    resp: Response<Incoming>,
    deadline: tokio::time::Instant,
    proxy: &ProxyShared,
) {
    let (parts, mut body) = resp.into_parts();
    {
        let mut e = lock(ex);
        let mut headers = vec![(":status".to_string(), parts.status.as_u16().to_string())];
        headers.extend(pairs_of(&parts.headers));
        e.response_headers = headers;
        e.info.response_code = Some(parts.status.as_u16());
        e.info.code_details = "via_upstream".into();
    }
    let end = body.is_end_stream();
    let result: Result<(), Reply> = async {
        blocking(|| run.event(Dir::Response, Event::Headers { end }))?;
        if end {
            return Ok(());
        }
        body_phase(
            run,
            ex,
            Dir::Response,
            &mut body,
            proxy.max_body,
            Some(deadline),
        )
        .await
    }
    .await;
    if let Err(reply) = result {
        run.replace_response(reply);
    }
}

/// Buffers one direction's body as it arrives, running the filters on every frame and on the
/// trailers (the headers event has been run). `deadline`: when the whole body must have
/// arrived (the upstream's route timeout); the request has none. `Err`: answer with this reply.
async fn body_phase(
    run: &mut StreamRun,
    ex: &StreamHandle,
    dir: Dir,
    body: &mut Incoming,
    max_body: usize,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), Reply> {
    loop {
        let frame = match deadline {
            Some(d) => match tokio::time::timeout_at(d, body.frame()).await {
                Ok(f) => f,
                Err(_) => {
                    return Err(match dir {
                        // Envoy's answer when a request outlives `request_timeout`.
                        Dir::Request => Reply::proxy(
                            408,
                            "request_overall_timeout",
                            "request timeout",
                            LocalReason::Invalid,
                        ),
                        Dir::Response => upstream_timeout(),
                    });
                }
            },
            None => body.frame().await,
        };
        match frame {
            None => {
                blocking(|| run.event(dir, Event::Body { end: true }))?;
                return Ok(());
            }
            Some(Err(_)) => {
                return Err(match dir {
                    Dir::Request => Reply::proxy(
                        400,
                        "downstream_remote_disconnect",
                        "",
                        LocalReason::Invalid,
                    ),
                    Dir::Response => Reply::proxy(
                        502,
                        "upstream_reset_after_response_started",
                        "",
                        LocalReason::Upstream,
                    ),
                });
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    {
                        let mut e = lock(ex);
                        let buffer = match dir {
                            Dir::Request => &mut e.request_body,
                            Dir::Response => &mut e.response_body,
                        };
                        if buffer.len() + data.len() > max_body {
                            return Err(match dir {
                                Dir::Request => Reply::proxy(
                                    413,
                                    "request_payload_too_large",
                                    "Payload Too Large",
                                    LocalReason::TooLarge,
                                ),
                                // Envoy's answer when a buffering encoder filter overflows.
                                Dir::Response => Reply::proxy(
                                    500,
                                    "response_payload_too_large",
                                    "",
                                    LocalReason::TooLarge,
                                ),
                            });
                        }
                        buffer.extend_from_slice(&data);
                    }
                    let end = body.is_end_stream();
                    blocking(|| run.event(dir, Event::Body { end }))?;
                    if end {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        {
                            let mut e = lock(ex);
                            let slot = match dir {
                                Dir::Request => &mut e.request_trailers,
                                Dir::Response => &mut e.response_trailers,
                            };
                            *slot = pairs_of(&trailers);
                        }
                        blocking(|| run.event(dir, Event::Trailers))?;
                        return Ok(());
                    }
                }
            },
        }
    }
}

/// The response as the filters left it, for the client, and its status. The body moves out
/// of the exchange (its size stays readable as `response.size`).
fn downstream_response(ex: &StreamHandle, head: bool) -> (Response<ProxyBody>, u16) {
    let mut e = lock(ex);
    let status = first(&e.response_headers, ":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    // A HEAD response keeps the upstream's Content-Length; otherwise hyper writes the length
    // of the body actually sent.
    let skip: &[&str] = if head { &[] } else { &["content-length"] };
    let headers = header_map(&e.response_headers, skip);
    let body = std::mem::take(&mut e.response_body);
    e.info.response_size = Some(body.len());
    e.info.response_code = Some(status.as_u16());
    let trailers = (!e.response_trailers.is_empty()).then(|| header_map(&e.response_trailers, &[]));
    let mut response = Response::new(ProxyBody::new(body, trailers));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    (response, status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4_and_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36, "{a}");
        assert_eq!(&a[14..15], "4", "version nibble: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant: {a}");
    }

    #[test]
    fn connection_headers_are_not_forwarded_and_invalid_ones_are_dropped() {
        let map = header_map(
            &[
                (":path".into(), "/".into()),
                ("connection".into(), "close".into()),
                ("x-ok".into(), "1".into()),
                ("bad name".into(), "1".into()),
                ("x-bad-value".into(), "a\nb".into()),
            ],
            &[],
        );
        assert_eq!(map.len(), 1, "{map:?}");
        assert!(map.contains_key("x-ok"));
    }
}
