//! The OTLP/HTTP receiver (`POST /v1/traces`, `POST /v1/logs`; protobuf or JSON; gzip), and the
//! self-telemetry server (`/metrics`, `/healthz`, `/readyz`). Both on hyper's HTTP/1.1.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::pipeline::{ConsumeError, Payload, Pipeline};
use crate::metrics::MetricsRegistry;

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// What the OTLP/HTTP receiver serves.
#[derive(Clone)]
pub struct OtlpHttp {
    /// The traces pipeline, if any.
    pub traces: Option<Arc<Pipeline>>,
    /// The logs pipeline, if any.
    pub logs: Option<Arc<Pipeline>>,
    /// Largest body accepted, after decompression.
    pub max_body: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// An error response in the request's encoding (protobuf when unknown), as OTLP/HTTP asks.
fn error(status: StatusCode, grpc_code: i32, message: String, enc: Encoding) -> Resp {
    let s = RpcStatus {
        code: grpc_code,
        message,
    };
    match enc {
        Encoding::Json => respond(
            status,
            "application/json",
            serde_json::json!({"code": s.code, "message": s.message})
                .to_string()
                .into_bytes(),
        ),
        Encoding::Protobuf => respond(status, "application/x-protobuf", s.encode_to_vec()),
    }
}

impl OtlpHttp {
    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        let content_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let enc = if content_type.starts_with("application/json") {
            Encoding::Json
        } else {
            Encoding::Protobuf
        };
        let pipeline = match req.uri().path() {
            "/v1/traces" => self.traces.clone(),
            "/v1/logs" => self.logs.clone(),
            other => {
                return error(
                    StatusCode::NOT_FOUND,
                    5,
                    format!("no OTLP endpoint at {other}"),
                    enc,
                );
            }
        };
        if req.method() != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, 12, "use POST".into(), enc);
        }
        if !content_type.starts_with("application/json")
            && !content_type.starts_with("application/x-protobuf")
        {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                format!(
                    "content type `{content_type}`: use application/x-protobuf or application/json"
                ),
                enc,
            );
        }
        let Some(pipeline) = pipeline else {
            return error(
                StatusCode::NOT_FOUND,
                12,
                "no pipeline for this signal".into(),
                enc,
            );
        };
        let gzip = match req
            .headers()
            .get(hyper::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
        {
            None | Some("identity") => false,
            Some("gzip") => true,
            Some(other) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    3,
                    format!("content encoding `{other}`: use gzip"),
                    enc,
                );
            }
        };
        // The compressed body is limited too: it can never usefully be larger than the limit.
        // Past the limit the rest is read and dropped (up to 4x), so the client gets the 413
        // instead of a connection reset.
        let mut incoming = req.into_body();
        let mut buf = Vec::new();
        let mut total = 0usize;
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else {
                return error(
                    StatusCode::BAD_REQUEST,
                    3,
                    "request body ended early".into(),
                    enc,
                );
            };
            if let Ok(data) = frame.into_data() {
                total += data.len();
                if total <= self.max_body {
                    buf.extend_from_slice(&data);
                } else if total > self.max_body.saturating_mul(4) {
                    break;
                }
            }
        }
        if total > self.max_body {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                8,
                format!("request body is larger than {} bytes", self.max_body),
                enc,
            );
        }
        let body = Bytes::from(buf);
        let body = if gzip {
            // Read at most one byte past the limit: a gzip bomb stops there.
            let mut out = Vec::new();
            let decoder = flate2::read::GzDecoder::new(&body[..]);
            match decoder.take(self.max_body as u64 + 1).read_to_end(&mut out) {
                Ok(_) if out.len() > self.max_body => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        8,
                        format!("decompressed body exceeds {} bytes", self.max_body),
                        enc,
                    );
                }
                Ok(_) => Bytes::from(out),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        3,
                        format!("invalid gzip body: {e}"),
                        enc,
                    );
                }
            }
        } else {
            body
        };
        let payload = match decode(&pipeline, &body, enc) {
            Ok(p) => p,
            Err(message) => return error(StatusCode::BAD_REQUEST, 3, message, enc),
        };
        match pipeline.consume(payload) {
            Ok(rejected) => {
                let (ct, bytes) = match (enc, pipeline.signal) {
                    (Encoding::Json, super::Signal::Traces) => (
                        "application/json",
                        serde_json::to_vec(&rejected.traces_response()).unwrap_or_default(),
                    ),
                    (Encoding::Json, super::Signal::Logs) => (
                        "application/json",
                        serde_json::to_vec(&rejected.logs_response()).unwrap_or_default(),
                    ),
                    (Encoding::Protobuf, super::Signal::Traces) => (
                        "application/x-protobuf",
                        rejected.traces_response().encode_to_vec(),
                    ),
                    (Encoding::Protobuf, super::Signal::Logs) => (
                        "application/x-protobuf",
                        rejected.logs_response().encode_to_vec(),
                    ),
                };
                respond(StatusCode::OK, ct, bytes)
            }
            Err(e @ ConsumeError::Invalid(_)) => {
                error(StatusCode::BAD_REQUEST, 3, e.to_string(), enc)
            }
            Err(e) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, 14, e.to_string(), enc);
                r.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from_static("1"),
                );
                r
            }
        }
    }
}

fn decode(pipeline: &Pipeline, body: &[u8], enc: Encoding) -> Result<Payload, String> {
    use super::Signal;
    match (pipeline.signal, enc) {
        (Signal::Traces, Encoding::Protobuf) => ExportTraceServiceRequest::decode(body)
            .map(Payload::Traces)
            .map_err(|e| format!("invalid protobuf: {e}")),
        (Signal::Logs, Encoding::Protobuf) => ExportLogsServiceRequest::decode(body)
            .map(Payload::Logs)
            .map_err(|e| format!("invalid protobuf: {e}")),
        (Signal::Traces, Encoding::Json) => serde_json::from_slice(body)
            .map(Payload::Traces)
            .map_err(|e| format!("invalid OTLP/JSON: {e}")),
        (Signal::Logs, Encoding::Json) => serde_json::from_slice(body)
            .map(Payload::Logs)
            .map_err(|e| format!("invalid OTLP/JSON: {e}")),
    }
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

/// Reads one counter of a pipeline's stats.
type StatFn = fn(&super::pipeline::PipelineStats) -> u64;

/// The self-telemetry endpoints.
#[derive(Clone)]
pub struct Telemetry {
    /// Plugin metrics.
    pub registry: MetricsRegistry,
    /// Pipelines, for their counters.
    pub pipelines: Vec<Arc<Pipeline>>,
    /// Set once every receiver listens.
    pub ready: Arc<AtomicBool>,
    /// Configuration-file reloads.
    pub reloads: Arc<super::ConfigReloads>,
    /// The HTTP filter proxies, for their counters.
    pub proxies: Vec<Arc<crate::proxy::ProxyStats>>,
}

impl Telemetry {
    /// Handles `/metrics`, `/healthz`, `/readyz`.
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        match req.uri().path() {
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.render().into_bytes(),
            ),
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => {
                respond(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            "/readyz" => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"starting\n".to_vec(),
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }

    fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.registry.render_prometheus();
        let rows: [(&str, &str, StatFn); 6] = [
            (
                "weft_pipeline_received_items_total",
                "Items received from clients.",
                |s| s.received.load(Ordering::Relaxed),
            ),
            (
                "weft_pipeline_refused_items_total",
                "Items refused (malformed or back-pressure).",
                |s| s.refused.load(Ordering::Relaxed),
            ),
            (
                "weft_pipeline_queued_items_total",
                "Items queued for exporters (once per exporter).",
                |s| s.queued.load(Ordering::Relaxed),
            ),
            (
                "weft_pipeline_exported_items_total",
                "Items exporters wrote.",
                |s| s.exported.load(Ordering::Relaxed),
            ),
            (
                "weft_pipeline_failed_items_total",
                "Items exporters failed to write.",
                |s| s.failed.load(Ordering::Relaxed),
            ),
            (
                "weft_pipeline_export_retries_total",
                "Export attempts retried.",
                |s| s.retries.load(Ordering::Relaxed),
            ),
        ];
        let _ = writeln!(
            out,
            "# HELP weft_pipeline_queue_requests Requests waiting in an exporter queue.\n# TYPE weft_pipeline_queue_requests gauge"
        );
        for p in &self.pipelines {
            for e in &p.exporters {
                let depth = e.tx.max_capacity() - e.tx.capacity();
                let _ = writeln!(
                    out,
                    "weft_pipeline_queue_requests{{pipeline=\"{}\",exporter=\"{}\"}} {depth}",
                    p.signal.as_str(),
                    e.id
                );
            }
        }
        let r = &self.reloads;
        let _ = writeln!(
            out,
            "# HELP weft_config_reloads_total Configuration-file reloads by result.\n# TYPE weft_config_reloads_total counter"
        );
        for (result, n) in [
            ("ok", &r.ok),
            ("failed", &r.failed),
            ("needs_restart", &r.needs_restart),
        ] {
            let _ = writeln!(
                out,
                "weft_config_reloads_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        crate::proxy::render_prometheus(&self.proxies, &mut out);
        for (name, help, get) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for p in &self.pipelines {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\"}} {}",
                    p.signal.as_str(),
                    get(&p.stats)
                );
            }
        }
        out
    }
}
