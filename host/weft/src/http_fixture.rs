//! `weft test` for http filters: each request of a fixture goes through weft's filter proxy (the
//! same code as `weft run`'s `proxies:`, with Envoy's semantics) to an upstream that answers
//! with the fixture's response; the result says what the upstream saw and what the client got.
//!
//! Everything listens on 127.0.0.1 ports the system picks, and stops when the run is over.
//!
//! ```json
//! {
//!   "upstream": {"status": 200, "headers": {"content-type": "text/plain"}, "body": "hello"},
//!   "requests": [
//!     {"name": "tagged", "method": "GET", "path": "/hello", "headers": {"x-user-id": "alice"}},
//!     {"name": "denied", "method": "POST", "path": "/deny", "body": "secret",
//!      "upstream": {"status": 503}}
//!   ]
//! }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde::Deserialize;
use serde_json::Value;

/// Headers whose values differ between runs or proxies, left out of the result: the hop's own
/// (`host`, framing, `date`) and the request id the proxy makes up (`x-request-id`).
const VARYING: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "date",
    "x-request-id",
];

/// A fixture: the requests and the upstream's default response.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the upstream answers when a request names no response of its own.
    #[serde(default)]
    pub upstream: Response,
    /// The requests, sent one after the other on one connection each.
    pub requests: Vec<Request>,
}

/// One request of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Its name in the result.
    #[serde(default)]
    pub name: Option<String>,
    /// The method (default `GET`).
    #[serde(default = "get")]
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request headers: an object, or a list of `[name, value]` for repeated names.
    #[serde(default)]
    pub headers: Headers,
    /// The body (text).
    #[serde(default)]
    pub body: String,
    /// The upstream's response to this request, if not the fixture's.
    #[serde(default)]
    pub upstream: Option<Response>,
}

fn get() -> String {
    "GET".into()
}

/// What the upstream answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Response {
    /// Status code (default 200).
    pub status: u16,
    /// Response headers.
    pub headers: Headers,
    /// The body (text).
    pub body: String,
}

impl Default for Response {
    fn default() -> Self {
        Response {
            status: 200,
            headers: Headers::default(),
            body: String::new(),
        }
    }
}

/// Headers as an object or as a list of pairs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Headers {
    /// `{"name": "value"}`.
    Map(BTreeMap<String, String>),
    /// `[["name", "value"], …]`.
    List(Vec<(String, String)>),
    /// None.
    #[default]
    #[serde(skip)]
    None,
}

impl Headers {
    fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Headers::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Headers::List(l) => l.clone(),
            Headers::None => Vec::new(),
        }
    }
}

/// Reads a fixture file.
pub fn read(path: &Path) -> anyhow::Result<Fixture> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let fixture: Fixture = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a request fixture ({{\"requests\": [{{\"method\", \"path\", \"headers\", \"body\"}}], \"upstream\": {{\"status\", \"headers\", \"body\"}}}})",
            path.display()
        )
    })?;
    if fixture.requests.is_empty() {
        bail!("{}: `requests` is empty", path.display());
    }
    Ok(fixture)
}

/// Settings of the filter under test.
#[derive(Debug, Clone)]
pub struct FilterUnderTest<'a> {
    /// The component.
    pub component: &'a Path,
    /// Its configuration.
    pub config: &'a Value,
    /// CPU deadline per callback.
    pub deadline: Duration,
    /// Memory cap, MiB.
    pub memory_mib: usize,
}

/// The result for one request, in the order a reader wants it.
#[derive(Debug, serde::Serialize)]
struct CaseResult {
    name: String,
    /// What reached the upstream; `None` when the filter answered itself.
    upstream_saw: Option<Saw>,
    client_got: Got,
}

/// A request as the upstream saw it.
#[derive(Debug, serde::Serialize)]
struct Saw {
    method: String,
    path: String,
    headers: Vec<String>,
    body: String,
}

/// The response as the client got it.
#[derive(Debug, serde::Serialize)]
struct Got {
    status: u16,
    headers: Vec<String>,
    body: String,
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Runs every request of `fixture` through the filter; the result is a JSON list with, per
/// request, `name`, `upstream_saw` (null when the request did not reach it) and `client_got`,
/// as pretty JSON.
pub fn run(filter: &FilterUnderTest<'_>, fixture: &Fixture) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(filter, fixture))
}

async fn run_async(filter: &FilterUnderTest<'_>, fixture: &Fixture) -> anyhow::Result<String> {
    let answer = Arc::new(Mutex::new(fixture.upstream.clone()));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let (upstream, stop_upstream) = upstream(answer.clone(), seen.clone()).await?;

    let component = filter
        .component
        .canonicalize()
        .with_context(|| format!("cannot read {}", filter.component.display()))?;
    let name = component
        .file_stem()
        .map(|s| s.to_string_lossy().replace(['.', '/'], "-"))
        .unwrap_or_else(|| "filter".into());
    let yaml = format!(
        "proxies:\n  test:\n    listen: 127.0.0.1:0\n    upstream: http://{upstream}\n    timeout: 10s\n    filters:\n      \
         - name: {name:?}\n        component: {component:?}\n        deadline: {}ms\n        memory_limit_mib: {}\n        config: {}\n\
         service:\n  telemetry:\n    metrics: {{ address: none }}\n",
        filter.deadline.as_millis(),
        filter.memory_mib,
        serde_json::to_string(filter.config)?,
    );
    let dir = std::env::current_dir()?;
    let config = crate::Config::parse(&yaml, &dir).context("the test proxy's configuration")?;
    let engine = weft_runtime::WeftEngine::new(weft_runtime::EngineSettings::default())?;
    let host = weft_runtime::PluginHost::new(engine, weft_runtime::MetricsRegistry::default())?;
    let running = crate::start(&config, &host).await?;
    let proxy = running.proxies[0].address;

    let mut results = Vec::new();
    let mut failure = None;
    for (i, req) in fixture.requests.iter().enumerate() {
        *answer.lock().expect("answer") = req.upstream.clone().unwrap_or(fixture.upstream.clone());
        let before = seen.lock().expect("seen").len();
        let got = match send(proxy, req).await {
            Ok(got) => got,
            Err(e) => {
                failure = Some(e.context(format!("request {i} ({} {})", req.method, req.path)));
                break;
            }
        };
        let saw = seen.lock().expect("seen").get(before).cloned();
        results.push(CaseResult {
            name: req
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", req.method, req.path)),
            upstream_saw: saw.map(|s| Saw {
                method: s.method,
                path: s.path,
                headers: header_lines(&s.headers),
                body: String::from_utf8_lossy(&s.body).into_owned(),
            }),
            client_got: got,
        });
    }
    running.shutdown(Duration::from_secs(5)).await;
    let _ = stop_upstream.send(());
    match failure {
        Some(e) => Err(e),
        None => Ok(serde_json::to_string_pretty(&results)?),
    }
}

/// Headers as `name: value` lines, sorted, without the [`VARYING`] ones.
fn header_lines(headers: &[(String, String)]) -> Vec<String> {
    let mut lines: Vec<String> = headers
        .iter()
        .filter(|(n, _)| !VARYING.contains(&n.to_ascii_lowercase().as_str()))
        .map(|(n, v)| format!("{}: {v}", n.to_ascii_lowercase()))
        .collect();
    lines.sort();
    lines
}

/// Sends one request to the proxy and describes the response.
async fn send(proxy: SocketAddr, req: &Request) -> anyhow::Result<Got> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str())
        .header("host", proxy.to_string());
    for (n, v) in req.headers.pairs() {
        builder = builder.header(n, v);
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .context("the request is not valid HTTP")?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .context("no response within 30 s")??;
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.into_body().collect().await?.to_bytes();
    conn.abort();
    Ok(Got {
        status,
        headers: header_lines(&headers),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An upstream on 127.0.0.1 that records each request and answers with `answer`.
async fn upstream(
    answer: Arc<Mutex<Response>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = &mut stopped => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (answer, seen) = (answer.clone(), seen.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (answer, seen) = (answer.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            seen.lock().expect("seen").push(Seen {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            });
                            let a = answer.lock().expect("answer").clone();
                            let mut builder = hyper::Response::builder().status(a.status);
                            for (n, v) in a.headers.pairs() {
                                builder = builder.header(n, v);
                            }
                            builder.body(Full::new(Bytes::from(a.body)))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, stop))
}
