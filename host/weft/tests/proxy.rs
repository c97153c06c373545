//! The HTTP filter proxy end to end, through the library entry point `weft run` uses: proxies on
//! loopback ephemeral ports in front of a recording upstream (a hyper server in the test), real
//! HTTP/1.1 requests from hyper's client, and real filter components: ab-router, http-fault
//! (guests/) and the tests' own filter (host/test-filter, built on first use).
//!
//! Every network step is bounded by a timeout; every test stops what it starts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use weft::{Config, Running};
use weft_proxy::LocalReason;
use weft_runtime::{EngineSettings, MetricsRegistry, PluginHost, PluginMetrics, WeftEngine};

mod common;
use common::guest;

/// Bound of every network step.
const STEP: Duration = Duration::from_secs(10);

/// The tests' filter (guests/fixtures/http-test-filter), built with the other guests on first use.
fn test_filter() -> PathBuf {
    guest("http-test-filter")
}

fn host() -> PluginHost {
    let engine = WeftEngine::new(EngineSettings {
        cache_dir: None,
        ..EngineSettings::default()
    })
    .expect("engine");
    PluginHost::new(engine, MetricsRegistry::default()).expect("host")
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A loopback HTTP/1.1 server that records every request and answers 200 with
/// `upstream saw <n> bytes` (after `x-upstream-delay-ms`, if asked).
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move { Ok::<_, Infallible>(answer(req, record).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    /// The requests that carried `x-request-marker: marker`.
    fn with_marker(&self, marker: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.header("x-request-marker") == Some(marker))
            .cloned()
            .collect()
    }

    /// The one request with `marker` (fails the test otherwise).
    fn one(&self, marker: &str) -> Seen {
        let mut all = self.with_marker(marker);
        assert_eq!(all.len(), 1, "upstream requests with marker {marker}");
        all.remove(0)
    }
}

async fn answer(req: Request<Incoming>, record: Arc<Mutex<Vec<Seen>>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let delay = headers
        .iter()
        .find(|(k, _)| k == "x-upstream-delay-ms")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let text = format!("upstream saw {} bytes", body.len());
    record.lock().expect("lock").push(Seen {
        path,
        headers,
        body,
    });
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert("x-upstream", hyper::header::HeaderValue::from_static("yes"));
    resp
}

type TestBody = BoxBody<Bytes, Infallible>;

/// A client response.
struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client(
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
);

impl Client {
    fn new() -> Client {
        Client(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        )
    }

    /// Sends a request through `proxy` with a body in one piece.
    async fn send(
        &self,
        proxy: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let body = Full::new(Bytes::copy_from_slice(body)).boxed();
        self.request(proxy, method, path, headers, body).await
    }

    /// Sends a request whose body arrives in `chunks`, `gap` apart (chunked encoding).
    async fn send_chunks(
        &self,
        proxy: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&'static str],
        gap: Duration,
    ) -> Answer {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let chunks = chunks.to_vec();
        tokio::spawn(async move {
            for c in chunks {
                tokio::time::sleep(gap).await;
                if tx.send(Ok(Frame::data(Bytes::from(c)))).await.is_err() {
                    return;
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
        self.request(proxy, "POST", path, headers, body).await
    }

    async fn request(
        &self,
        proxy: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{proxy}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body).expect("request");
        let resp = tokio::time::timeout(STEP, self.0.request(req))
            .await
            .expect("proxy answers in time")
            .expect("proxy answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(STEP, resp.into_body().collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// Starts the configuration `yaml` (component paths relative to `dir`).
async fn start(yaml: &str, dir: &Path) -> Running {
    let config = Config::parse(yaml, dir).expect("valid configuration");
    weft::start(&config, &host()).await.expect("start")
}

/// A proxy-only configuration: proxy `edge` in front of `upstream` with `filters` (YAML list
/// items, indented for the `filters:` key).
fn edge(upstream: SocketAddr, filters: &str) -> String {
    format!(
        r#"
proxies:
  edge:
    listen: 127.0.0.1:0
    upstream: http://{upstream}
    timeout: 5s
    filters:
{filters}
service:
  telemetry:
    metrics: {{ address: none }}
"#
    )
}

/// A YAML filter item for the test filter.
fn test_filter_item(name: &str, config: &str, extra: &str) -> String {
    format!(
        "      - name: {name}\n        component: \"{}\"\n        config: {config}\n{extra}",
        test_filter().display()
    )
}

/// The value of guest-defined counter `name` with `labels` in `m`.
fn guest_counter(m: &PluginMetrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    m.guest
        .lock()
        .expect("lock")
        .counters
        .get(&(name.to_string(), want))
        .copied()
        .unwrap_or(0)
}

/// Polls `f` until it holds, for up to `STEP`.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < STEP, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn filter_metrics(running: &Running, proxy: &str, name: &str) -> Arc<PluginMetrics> {
    let p = running
        .proxies
        .iter()
        .find(|p| p.id == proxy)
        .expect("proxy");
    let (_, slot) = p.filters.iter().find(|(n, _)| n == name).expect("filter");
    slot.load().metrics().clone()
}

async fn stop(running: Running) {
    assert!(
        running.shutdown(Duration::from_secs(10)).await,
        "the proxy drains within 10 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_router_sets_a_stable_backend_version_per_user() {
    let up = Upstream::start().await;
    let filters = format!(
        "      - component: \"{}\"\n        config: {{salt: exp-1, default: v0, split: [{{version: v1, percent: 50}}, {{version: v2, percent: 50}}]}}\n",
        guest("ab-router").display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&edge(up.addr, &filters), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();

    let mut first_pass = Vec::new();
    for pass in 0..2 {
        for u in 0..30 {
            let user = format!("user-{u}");
            let marker = format!("{pass}-{u}");
            let a = client
                .send(
                    proxy,
                    "GET",
                    "/shop",
                    &[("x-user-id", &user), ("x-request-marker", &marker)],
                    b"",
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text());
            assert_eq!(a.header("x-upstream"), Some("yes"));
            let seen = up.one(&marker);
            let version = seen
                .header("x-backend-version")
                .expect("version set")
                .to_string();
            if pass == 0 {
                first_pass.push(version);
            } else {
                assert_eq!(version, first_pass[u], "{user} keeps its version");
            }
        }
    }
    assert!(first_pass.iter().any(|v| v == "v1"), "{first_pass:?}");
    assert!(first_pass.iter().any(|v| v == "v2"), "{first_pass:?}");

    client
        .send(
            proxy,
            "GET",
            "/shop",
            &[("x-request-marker", "anonymous")],
            b"",
        )
        .await;
    assert_eq!(
        up.one("anonymous").header("x-backend-version"),
        Some("v0"),
        "no user id: the default version"
    );
    let m = filter_metrics(&running, "edge", "guest_ab_router");
    assert_eq!(
        guest_counter(&m, "ab_requests", &[("version", "v0")]),
        1,
        "the filter's own metric"
    );
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_pauses_on_the_headers_decides_on_the_whole_body() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&edge(up.addr, &test_filter_item("t", "{}", "")), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();
    let gap = Duration::from_millis(40);

    // Three pieces of body: the filter holds the headers until it has them all, then adds
    // headers that go upstream with the (unchanged) body.
    let a = client
        .send_chunks(
            proxy,
            "/upload",
            &[("x-test-decide", "1"), ("x-request-marker", "allowed")],
            &["hello ", "wide ", "world"],
            gap,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = up.one("allowed");
    assert_eq!(seen.body, b"hello wide world");
    assert_eq!(seen.header("x-body-decision"), Some("allow"));
    assert_eq!(seen.header("x-body-size"), Some("16"));
    assert_eq!(seen.header("x-seen-eos"), Some("false"));
    assert_eq!(
        seen.header("content-length"),
        Some("16"),
        "the buffered body leaves with its length"
    );

    // The same filter refuses a body that contains `deny`: the upstream never sees it.
    let a = client
        .send_chunks(
            proxy,
            "/upload",
            &[("x-test-decide", "1"), ("x-request-marker", "denied")],
            &["please ", "deny ", "this"],
            gap,
        )
        .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.text(), r#"{"error":"denied by body"}"#);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(up.with_marker("denied").is_empty());
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_responses_and_the_order_of_the_chain() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let filters = test_filter_item("a", "{}", "") + &test_filter_item("b", "{}", "");
    let running = start(&edge(up.addr, &filters), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();

    // Request headers go a → b, response headers b → a (as Envoy's decoder/encoder chains).
    let a = client
        .send(proxy, "GET", "/", &[("x-request-marker", "plain")], b"")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(up.one("plain").all("x-order"), ["edge/a", "edge/b"]);
    assert_eq!(a.all("x-order"), ["edge/b", "edge/a"]);

    // `respond` from a's request headers: the upstream is not called; the reply goes through
    // the response callbacks of the filters that saw the request (a only: b never did).
    let a = client
        .send(
            proxy,
            "GET",
            "/",
            &[("x-test-respond", "401"), ("x-request-marker", "respond")],
            b"",
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.text(), "denied by the test filter");
    assert_eq!(a.header("x-test-local"), Some("respond"));
    assert_eq!(a.header("content-length"), Some("25"));
    assert_eq!(a.all("x-order"), ["edge/a"]);
    assert!(up.with_marker("respond").is_empty());

    // The imported `send-local-response` does the same.
    let a = client
        .send(
            proxy,
            "POST",
            "/",
            &[("x-test-send-local", "429"), ("x-request-marker", "send")],
            b"some body",
        )
        .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.text(), "sent by the test filter");
    assert_eq!(a.header("x-test-local"), Some("send"));
    assert!(up.with_marker("send").is_empty());

    // A response made while the response is filtered replaces it, with no further callbacks.
    let a = client
        .send(
            proxy,
            "GET",
            "/",
            &[
                ("x-test-respond-response", "418"),
                ("x-request-marker", "late"),
            ],
            b"",
        )
        .await;
    assert_eq!(a.status, 418);
    assert_eq!(a.text(), "replaced in the response");
    assert_eq!(a.header("x-test-local"), Some("response"));
    assert!(a.header("x-order").is_none(), "a never saw it");
    assert_eq!(up.with_marker("late").len(), 1, "the upstream was called");

    let stats = running.proxies[0].stats.clone();
    assert_eq!(stats.local_responses(LocalReason::Filter), 3);
    assert_eq!(stats.responses(4), 3);
    assert_eq!(stats.responses(2), 1);
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_bodies_leave_with_the_right_content_length() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&edge(up.addr, &test_filter_item("t", "{}", "")), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();
    let a = client
        .send(
            proxy,
            "PUT",
            "/doc",
            &[
                ("x-test-replace", "short"),
                ("x-test-replace-response", "a new response body"),
                ("x-request-marker", "replace"),
            ],
            b"a much longer original request body",
        )
        .await;
    assert_eq!(a.status, 200);
    let seen = up.one("replace");
    assert_eq!(seen.body, b"short");
    assert_eq!(seen.header("content-length"), Some("5"));
    assert_eq!(a.text(), "a new response body");
    assert_eq!(a.header("content-length"), Some("19"));
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_filter_is_skipped_when_open_and_answers_503_when_closed() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let open = test_filter_item(
        "t",
        "{}",
        "        fail_policy: open\n        deadline: 50ms\n",
    );
    let closed = test_filter_item(
        "t",
        "{}",
        "        fail_policy: closed\n        deadline: 50ms\n",
    );
    let yaml = format!(
        r#"
proxies:
  open:
    listen: 127.0.0.1:0
    upstream: http://{up}
    filters:
{open}
  closed:
    listen: 127.0.0.1:0
    upstream: http://{up}
    filters:
{closed}
service:
  telemetry:
    metrics: {{ address: none }}
"#,
        up = up.addr
    );
    let running = start(&yaml, dir.path()).await;
    let client = Client::new();
    let open = running.proxy_address("open").expect("open");
    let closed = running.proxy_address("closed").expect("closed");

    for (fault, kind) in [("panic", "panic"), ("loop", "deadline")] {
        let marker = format!("open-{fault}");
        let a = client
            .send(
                open,
                "GET",
                "/",
                &[("x-test-fault", fault), ("x-request-marker", &marker)],
                b"",
            )
            .await;
        assert_eq!(
            a.status, 200,
            "fail-open: the stream goes on without the filter"
        );
        assert!(
            a.header("x-order").is_none(),
            "the failed filter sees nothing more of the stream"
        );
        assert_eq!(up.with_marker(&marker).len(), 1);
        let m = filter_metrics(&running, "open", "t");
        let traps = m.total_traps();
        assert!(traps >= 1, "{kind} counted");
    }
    let m = filter_metrics(&running, "open", "t");
    assert_eq!(
        m.trap_counter(weft_runtime::TrapKind::Panic)
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        m.trap_counter(weft_runtime::TrapKind::Deadline)
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(m.failed_open.load(Ordering::Relaxed), 2);

    let a = client
        .send(
            closed,
            "GET",
            "/",
            &[
                ("x-test-fault", "panic"),
                ("x-request-marker", "closed-panic"),
            ],
            b"",
        )
        .await;
    assert_eq!(
        a.status, 503,
        "fail-closed answers 503 as Envoy's wasm_fail_stream"
    );
    assert!(a.body.is_empty());
    assert!(up.with_marker("closed-panic").is_empty());

    // Later requests work on both: a trapped instance is replaced by a fresh one.
    for (proxy, marker) in [(open, "open-after"), (closed, "closed-after")] {
        let a = client
            .send(proxy, "GET", "/", &[("x-request-marker", marker)], b"")
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.all("x-order").len(), 1, "the filter runs again");
        assert_eq!(up.one(marker).all("x-order").len(), 1);
    }
    let closed_stats = running
        .proxies
        .iter()
        .find(|p| p.id == "closed")
        .expect("closed")
        .stats
        .clone();
    assert_eq!(closed_stats.local_responses(LocalReason::FailClosed), 1);
    assert_eq!(closed_stats.filter_failures.load(Ordering::Relaxed), 1);
    drop(client);
    stop(running).await;
}

/// The same through guests/fixtures/http-fault, whose configuration is
/// `{"fault": "panic" | "loop" | "oom" | "respond", "on": "request-headers" | "response-headers",
/// "when_header": "x-fault"}` and which echoes `x-request-marker` as `x-stream-marker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_fault_traps_are_handled_by_the_fail_policy() {
    use weft_runtime::TrapKind;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = guest("http-fault");
    // (proxy, fault, on, policy, status for a triggering request, trap, upstream called)
    let cases = [
        (
            "open",
            "panic",
            "request-headers",
            "open",
            200,
            Some(TrapKind::Panic),
            true,
        ),
        (
            "closed",
            "loop",
            "request-headers",
            "closed",
            503,
            Some(TrapKind::Deadline),
            false,
        ),
        (
            "oom",
            "oom",
            "request-headers",
            "open",
            200,
            Some(TrapKind::MemoryLimit),
            true,
        ),
        (
            "teapot",
            "respond",
            "request-headers",
            "closed",
            418,
            None,
            false,
        ),
        (
            "late",
            "panic",
            "response-headers",
            "closed",
            503,
            Some(TrapKind::Panic),
            true,
        ),
    ];
    let mut yaml = String::from("proxies:\n");
    for (proxy, kind, on, policy, ..) in &cases {
        yaml += &format!(
            "  {proxy}:\n    listen: 127.0.0.1:0\n    upstream: http://{}\n    filters:\n      - name: fault\n        component: \"{}\"\n        config: {{fault: {kind}, on: {on}, when_header: x-fault}}\n        fail_policy: {policy}\n        deadline: 50ms\n        memory_limit_mib: 16\n",
            up.addr,
            fault.display()
        );
    }
    yaml += "service:\n  telemetry:\n    metrics: { address: none }\n";
    let running = start(&yaml, dir.path()).await;
    let client = Client::new();
    for (proxy, _, _, _, status, trap, upstream_called) in cases {
        let addr = running.proxy_address(proxy).expect("listens");
        let marker = format!("{proxy}-fault");
        let a = client
            .send(
                addr,
                "GET",
                "/",
                &[("x-fault", "1"), ("x-request-marker", &marker)],
                b"",
            )
            .await;
        assert_eq!(a.status, status, "{proxy}: {}", a.text());
        assert_eq!(
            up.with_marker(&marker).len(),
            usize::from(upstream_called),
            "{proxy}"
        );
        let m = filter_metrics(&running, proxy, "fault");
        match trap {
            Some(kind) => {
                assert_eq!(m.trap_counter(kind).load(Ordering::Relaxed), 1, "{proxy}");
                assert_eq!(m.total_traps(), 1, "{proxy}");
            }
            None => {
                assert_eq!(a.text(), "fault");
                assert_eq!(m.total_traps(), 0, "{proxy}");
            }
        }
        // Later requests work, on a fresh instance where the old one trapped.
        let marker = format!("{proxy}-after");
        let a = client
            .send(addr, "GET", "/", &[("x-request-marker", &marker)], b"")
            .await;
        assert_eq!(a.status, 200, "{proxy}: later requests work");
        assert_eq!(a.header("x-stream-marker"), Some(marker.as_str()));
        assert_eq!(up.one(&marker).header("x-http-fault"), Some("passed"));
    }
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_keep_their_own_state() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Two proxies, one per filter that echoes the stream's marker from its per-stream state.
    let yaml = edge(up.addr, &test_filter_item("t", "{}", "")).replace(
        "service:",
        &format!(
            "  fault:\n    listen: 127.0.0.1:0\n    upstream: http://{}\n    filters:\n      - name: f\n        component: \"{}\"\n        config: {{}}\nservice:",
            up.addr,
            guest("http-fault").display()
        ),
    );
    let running = start(&yaml, dir.path()).await;
    let client = Arc::new(Client::new());
    let mut tasks = tokio::task::JoinSet::new();
    for (proxy, filter) in [("edge", "t"), ("fault", "f")] {
        let addr = running.proxy_address(proxy).expect("listens");
        for i in 0..40 {
            let client = client.clone();
            tasks.spawn(async move {
                let marker = format!("{proxy}-{i}");
                let a = client
                    .send(
                        addr,
                        "POST",
                        "/",
                        &[("x-request-marker", &marker), ("x-upstream-delay-ms", "30")],
                        marker.as_bytes(),
                    )
                    .await;
                (marker, a)
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (marker, a) = r.expect("task");
            assert_eq!(a.status, 200);
            assert_eq!(
                a.header("x-stream-marker"),
                Some(marker.as_str()),
                "each stream sees only its own state"
            );
            assert_eq!(up.one(&marker).body, marker.as_bytes());
        }
        let m = filter_metrics(&running, proxy, filter);
        assert!(
            m.instantiations.load(Ordering::Relaxed) > 1,
            "{proxy}: overlapping streams ran on separate instances"
        );
    }
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_read_envoys_attributes_and_on_done_sees_the_outcome() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&edge(up.addr, &test_filter_item("t", "{}", "")), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();
    let a = client
        .send(
            proxy,
            "GET",
            "/props/x?q=1",
            &[("x-request-marker", "props")],
            b"",
        )
        .await;
    assert_eq!(a.status, 200);
    let seen = up.one("props");
    assert_eq!(seen.path, "/props/x");
    assert_eq!(seen.header("x-seen-url-path"), Some("/props/x"));
    assert_eq!(seen.header("x-seen-method"), Some("GET"));
    assert_eq!(seen.header("x-seen-protocol"), Some("HTTP/1.1"));
    assert_eq!(seen.header("x-seen-eos"), Some("true"));
    let port = proxy.port().to_string();
    assert_eq!(seen.header("x-seen-destination-port"), Some(port.as_str()));
    assert!(
        seen.header("x-seen-source")
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{seen:?}"
    );
    let id = seen
        .header("x-request-id")
        .expect("the proxy adds x-request-id");
    assert_eq!(id.len(), 36);
    assert_eq!(seen.header("x-seen-id"), Some(id));
    let m = filter_metrics(&running, "edge", "t");
    eventually("on-done with response.code and request.duration", || {
        guest_counter(&m, "done", &[("code", "200"), ("duration", "yes")]) == 1
    })
    .await;
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_and_http_calls_reach_the_filter() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let calls = test_filter_item(
        "calls",
        &format!("{{tick_ms: 20, call: \"{}\"}}", up.addr),
        &format!("        capabilities: {{http_calls: [\"{}\"]}}\n", up.addr),
    );
    let refused = test_filter_item("refused", &format!("{{call: \"{}\"}}", up.addr), "");
    let running = start(&edge(up.addr, &(calls + &refused)), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let m = filter_metrics(&running, "edge", "calls");
    eventually("three ticks", || guest_counter(&m, "ticks", &[]) >= 3).await;
    let quiet = filter_metrics(&running, "edge", "refused");
    assert_eq!(
        guest_counter(&quiet, "ticks", &[]),
        0,
        "no period, no ticks"
    );

    let client = Client::new();
    let a = client
        .send(
            proxy,
            "GET",
            "/",
            &[("x-test-call", "1"), ("x-request-marker", "call")],
            b"",
        )
        .await;
    assert_eq!(a.status, 200);
    eventually("the call's answer", || {
        guest_counter(&m, "call_responses", &[("status", "200")]) == 1
    })
    .await;
    assert_eq!(
        up.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == "/callout")
            .count(),
        1
    );
    let seen = up.one("call");
    assert!(
        seen.header("x-call-error")
            .is_some_and(|e| e.contains("capabilities.http_calls")),
        "a filter without the capability is refused: {seen:?}"
    );
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_telemetry_endpoint_counts_proxy_responses() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = edge(up.addr, &test_filter_item("t", "{}", ""))
        .replace("address: none", "address: 127.0.0.1:0");
    let running = start(&yaml, dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();
    client.send(proxy, "GET", "/", &[], b"").await;
    client
        .send(proxy, "GET", "/", &[("x-test-respond", "403")], b"")
        .await;
    let metrics = running.metrics_address.expect("telemetry");
    let a = client.send(metrics, "GET", "/metrics", &[], b"").await;
    let text = a.text();
    for line in [
        "weft_proxy_responses_total{proxy=\"edge\",class=\"2xx\"} 1",
        "weft_proxy_responses_total{proxy=\"edge\",class=\"4xx\"} 1",
        "weft_proxy_local_responses_total{proxy=\"edge\",reason=\"filter\"} 1",
        "weft_proxy_filter_failures_total{proxy=\"edge\"} 0",
        "weft_plugin_traps_total{plugin=\"edge/t\",kind=\"panic\"} 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let stats = running.proxies[0].stats.clone();
    eventually("no stream left active", || {
        stats.active_streams.load(Ordering::Relaxed) == 0
    })
    .await;
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_request_still_gets_on_done() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&edge(up.addr, &test_filter_item("t", "{}", "")), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let mut socket = tokio::net::TcpStream::connect(proxy)
        .await
        .expect("connect");
    socket
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: edge\r\ntransfer-encoding: chunked\r\nx-test-decide: 1\r\nx-request-marker: gone\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);
    let m = filter_metrics(&running, "edge", "t");
    eventually("on-done for the abandoned stream", || {
        guest_counter(&m, "done", &[("code", "400"), ("duration", "yes")]) == 1
    })
    .await;
    let stats = running.proxies[0].stats.clone();
    eventually("no stream left active", || {
        stats.active_streams.load(Ordering::Relaxed) == 0
    })
    .await;
    assert!(up.with_marker("gone").is_empty());
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_files_and_settings_reload_and_bad_versions_are_refused() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("filter.wasm");
    std::fs::copy(test_filter(), &file).expect("copy");
    let yaml = |config: &str| {
        edge(
            up.addr,
            &format!("      - name: f\n        component: filter.wasm\n        config: {config}\n"),
        )
    };
    let config_path = dir.path().join("weft.yaml");
    std::fs::write(&config_path, yaml("{}")).expect("write config");
    let config = Config::load(&config_path).expect("config");
    let running = weft::start(&config, &host()).await.expect("start");
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();
    client
        .send(proxy, "GET", "/", &[("x-request-marker", "v1")], b"")
        .await;
    assert_eq!(up.one("v1").all("x-order"), ["edge/f"]);

    // Not wasm: refused, the test filter keeps serving.
    let m = filter_metrics(&running, "edge", "f");
    std::fs::write(&file, b"not wasm").expect("write");
    eventually("the refused reload", || {
        m.reload_failures.load(Ordering::Relaxed) >= 1
    })
    .await;
    client
        .send(proxy, "GET", "/", &[("x-request-marker", "still")], b"")
        .await;
    assert_eq!(up.one("still").all("x-order"), ["edge/f"]);

    // Another filter in the same file: swapped in (config `{}` suits ab-router too).
    let bytes = std::fs::read(guest("ab-router")).expect("ab-router");
    let tmp = dir.path().join("filter.wasm.tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    eventually("the reload", || m.reloads.load(Ordering::Relaxed) >= 1).await;
    client
        .send(
            proxy,
            "GET",
            "/",
            &[("x-request-marker", "v2"), ("x-user-id", "alice")],
            b"",
        )
        .await;
    let seen = up.one("v2");
    assert!(seen.header("x-backend-version").is_some(), "{seen:?}");
    assert!(seen.all("x-order").is_empty(), "{seen:?}");

    // New filter settings in the configuration file: applied without a restart.
    std::fs::write(
        &config_path,
        yaml("{default: v9, split: [{version: v9, percent: 100}]}"),
    )
    .expect("rewrite config");
    let reloads = running.config_reloads.clone();
    eventually("the configuration reload", || {
        reloads.ok.load(Ordering::Relaxed) >= 1
    })
    .await;
    client
        .send(
            proxy,
            "GET",
            "/",
            &[("x-request-marker", "v3"), ("x-user-id", "alice")],
            b"",
        )
        .await;
    assert_eq!(up.one("v3").header("x-backend-version"), Some("v9"));

    // A new upstream is a new structure: refused until a restart.
    std::fs::write(
        &config_path,
        yaml("{}").replace(&up.addr.to_string(), "127.0.0.1:1"),
    )
    .expect("rewrite config");
    eventually("the refused restructuring", || {
        reloads.needs_restart.load(Ordering::Relaxed) >= 1
    })
    .await;
    client
        .send(
            proxy,
            "GET",
            "/",
            &[("x-request-marker", "v4"), ("x-user-id", "alice")],
            b"",
        )
        .await;
    assert_eq!(up.one("v4").header("x-backend-version"), Some("v9"));
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_503_through_the_response_filters() {
    // A port nobody listens on: bind one, then let it go.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(&edge(dead, &test_filter_item("t", "{}", "")), dir.path()).await;
    let proxy = running.proxy_address("edge").expect("edge listens");
    let client = Client::new();
    let a = client.send(proxy, "GET", "/", &[], b"").await;
    assert_eq!(a.status, 503);
    assert!(a.text().contains("connection failure"), "{}", a.text());
    assert_eq!(a.all("x-order"), ["edge/t"], "response filters ran on it");
    let m = filter_metrics(&running, "edge", "t");
    eventually("on-done with the 503", || {
        guest_counter(&m, "done", &[("code", "503"), ("duration", "yes")]) == 1
    })
    .await;
    drop(client);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_that_are_not_http_filters_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = edge(
        "127.0.0.1:9".parse().expect("addr"),
        "      - component: builtin:pii-mask\n",
    );
    let config = Config::parse(&yaml, dir.path()).expect("valid YAML");
    let err = match weft::start(&config, &host()).await {
        Ok(_) => panic!("an OTLP plugin is not a filter"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("proxies.edge.filters.pii-mask: ")
            && err.contains("weft:plugin/filter@0.2.0"),
        "{err}"
    );
    let errors = weft::load_filters(&config, &host());
    assert!(errors.is_err(), "weft validate refuses it too");
}

#[test]
fn weft_validate_loads_every_filter_and_names_the_one_that_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    let filters = format!(
        "      - name: ab\n        component: \"{}\"\n        config: {{split: [{{version: v1, percent: 100}}]}}\n",
        guest("ab-router").display()
    );
    std::fs::write(
        &good,
        edge("127.0.0.1:9000".parse().expect("addr"), &filters),
    )
    .expect("write");
    let weft = |config: &Path| {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["validate", config.to_str().expect("utf-8")])
            .env("WEFT_CACHE_DIR", dir.path().join("cache"))
            .output()
            .expect("run weft")
    };
    let out = weft(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 pipelines, 1 proxies)"), "{stdout}");

    // The filter's own `init` refuses a split that does not add up: `weft validate` says which
    // filter, and why, in the filter's words.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .expect("read")
            .replace("percent: 100", "percent: 90"),
    )
    .expect("write");
    let out = weft(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("proxies.edge.filters.ab: plugin `edge/ab` rejected its configuration")
            && stderr.contains("add up to 90"),
        "{stderr}"
    );
}
