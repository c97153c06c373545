//! Exporters: each runs as a task draining its bounded queue.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::config::{ExporterConfig, OtlpExporterConfig};
use weft_runtime::OtlpData;

use crate::pipeline::{Payload, PipelineStats};

/// Requests an exporter queue holds before receivers answer "retry later" (the OTLP exporter
/// has its own `sending_queue.queue_size`).
pub const QUEUE_CAPACITY: usize = 1000;

/// The queue size for an exporter.
pub fn queue_size(config: &ExporterConfig) -> usize {
    match config {
        ExporterConfig::Otlp(o) | ExporterConfig::OtlpHttp(o) => o.queue_size,
        _ => QUEUE_CAPACITY,
    }
}

/// Runs exporter `id` until its queue is closed and drained. `stats` are the pipeline's.
pub async fn run(
    id: String,
    config: ExporterConfig,
    mut rx: mpsc::Receiver<Payload>,
    stats: Arc<PipelineStats>,
) {
    match config {
        ExporterConfig::Otlp(otlp) => return run_otlp(id, otlp, false, rx, stats).await,
        ExporterConfig::OtlpHttp(otlp) => return run_otlp(id, otlp, true, rx, stats).await,
        _ => {}
    }
    let mut file = match &config {
        ExporterConfig::File { path } => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Some(std::io::BufWriter::new(f)),
            Err(e) => {
                tracing::error!(exporter = %id, path = %path.display(), error = %e, "cannot open the output file");
                None
            }
        },
        _ => None,
    };
    while let Some(payload) = rx.recv().await {
        let items = payload.items();
        let ok = match &config {
            ExporterConfig::Debug { detailed } => {
                let data = payload;
                let mut out = std::io::stdout().lock();
                let mut r = writeln!(out, "{id}: {} {items} items", data.signal());
                if *detailed {
                    r = r.and_then(|_| writeln!(out, "{}", data.to_json()));
                }
                r.is_ok()
            }
            ExporterConfig::Otlp(_) | ExporterConfig::OtlpHttp(_) => false,
            ExporterConfig::File { .. } => match &mut file {
                Some(f) => {
                    let line = match payload {
                        OtlpData::Traces(t) => serde_json::to_string(&t),
                        OtlpData::Logs(l) => serde_json::to_string(&l),
                    };
                    // One request per line, flushed per request: a reader never sees half a line.
                    match line {
                        Ok(line) => writeln!(f, "{line}").and_then(|_| f.flush()).is_ok(),
                        Err(_) => false,
                    }
                }
                None => false,
            },
        };
        let counter = if ok { &stats.exported } else { &stats.failed };
        counter.fetch_add(items, Ordering::Relaxed);
    }
}

/// Merges `b` into `a` (same signal); returns `b` back if the signals differ.
fn merge(a: &mut Payload, b: Payload) -> Option<Payload> {
    match (a, b) {
        (Payload::Traces(a), Payload::Traces(b)) => a.resource_spans.extend(b.resource_spans),
        (Payload::Logs(a), Payload::Logs(b)) => a.resource_logs.extend(b.resource_logs),
        (_, b) => return Some(b),
    }
    None
}

/// Codes the OTLP specification lets a client retry.
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled
            | DeadlineExceeded
            | Aborted
            | OutOfRange
            | Unavailable
            | DataLoss
            | ResourceExhausted
    )
}

/// Why one export attempt failed.
struct SendError {
    /// Whether the OTLP specification allows a retry.
    retryable: bool,
    /// The server's `Retry-After`, if it gave one.
    retry_after: Option<Duration>,
    /// What went wrong.
    message: String,
}

/// How batches leave: OTLP/gRPC or OTLP/HTTP (protobuf).
enum Transport {
    Grpc {
        traces: TraceServiceClient<Channel>,
        logs: LogsServiceClient<Channel>,
    },
    Http {
        client: HttpClient,
        base: String,
        gzip: bool,
        timeout: Duration,
    },
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

impl Transport {
    fn new(http: bool, cfg: &OtlpExporterConfig) -> Result<Transport, String> {
        if http {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            return Ok(Transport::Http {
                client,
                base: cfg.endpoint.trim_end_matches('/').to_string(),
                gzip: cfg.gzip,
                timeout: cfg.timeout,
            });
        }
        let channel = Channel::from_shared(cfg.endpoint.clone()).map_err(|e| e.to_string())?;
        let channel = channel.timeout(cfg.timeout).connect_lazy();
        let mut traces = TraceServiceClient::new(channel.clone());
        let mut logs = LogsServiceClient::new(channel);
        if cfg.gzip {
            traces = traces
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
            logs = logs
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(Transport::Grpc { traces, logs })
    }

    /// Sends one batch; returns how many items the server rejected (OTLP partial success).
    async fn send(&mut self, batch: &Payload) -> Result<u64, SendError> {
        match self {
            Transport::Grpc { traces, logs } => {
                let result = match batch {
                    Payload::Traces(t) => traces.export(t.clone()).await.map(|r| {
                        r.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_spans.max(0) as u64)
                    }),
                    Payload::Logs(l) => logs.export(l.clone()).await.map(|r| {
                        r.into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_log_records.max(0) as u64)
                    }),
                };
                result.map_err(|status| SendError {
                    retryable: retryable(status.code()),
                    retry_after: None,
                    message: format!("{:?}: {}", status.code(), status.message()),
                })
            }
            Transport::Http {
                client,
                base,
                gzip,
                timeout,
            } => {
                use prost::Message as _;
                let (path, body) = match batch {
                    Payload::Traces(t) => ("/v1/traces", t.encode_to_vec()),
                    Payload::Logs(l) => ("/v1/logs", l.encode_to_vec()),
                };
                let body = if *gzip {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&body)
                        .and_then(|_| e.finish())
                        .map_err(|e| SendError {
                            retryable: false,
                            retry_after: None,
                            message: format!("gzip: {e}"),
                        })?
                } else {
                    body
                };
                let mut req = hyper::Request::post(format!("{base}{path}"))
                    .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
                }
                let req = req
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .map_err(|e| SendError {
                        retryable: false,
                        retry_after: None,
                        message: e.to_string(),
                    })?;
                let resp = match tokio::time::timeout(*timeout, client.request(req)).await {
                    Err(_) => {
                        return Err(SendError {
                            retryable: true,
                            retry_after: None,
                            message: "timed out".into(),
                        });
                    }
                    Ok(Err(e)) => {
                        return Err(SendError {
                            retryable: true,
                            retry_after: None,
                            message: e.to_string(),
                        });
                    }
                    Ok(Ok(r)) => r,
                };
                let status = resp.status();
                if status.is_success() {
                    return Ok(0);
                }
                // OTLP/HTTP: 429, 502, 503 and 504 may be retried, after Retry-After if given.
                let retry_after = resp
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                Err(SendError {
                    retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
                    retry_after,
                    message: format!("HTTP {status}"),
                })
            }
        }
    }
}

/// The OTLP exporters: wait for a request, merge queued ones up to `send_batch_size` items or
/// `batch_timeout`, and export with retries (exponential backoff, doubled from
/// `initial_interval` up to `max_interval`, or the server's Retry-After; for at most
/// `max_elapsed`). Drains on close.
async fn run_otlp(
    id: String,
    cfg: OtlpExporterConfig,
    http: bool,
    mut rx: mpsc::Receiver<Payload>,
    stats: Arc<PipelineStats>,
) {
    let mut transport = match Transport::new(http, &cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(exporter = %id, endpoint = %cfg.endpoint, error = %e, "invalid endpoint");
            while let Some(p) = rx.recv().await {
                stats.failed.fetch_add(p.items(), Ordering::Relaxed);
            }
            return;
        }
    };
    let mut carry: Option<Payload> = None;
    loop {
        let mut batch = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let flush_at = Instant::now() + cfg.batch_timeout;
        while batch.items() < cfg.send_batch_size {
            match tokio::time::timeout_at(flush_at, rx.recv()).await {
                Ok(Some(p)) => {
                    if let Some(other) = merge(&mut batch, p) {
                        carry = Some(other);
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let items = batch.items();
        let started = Instant::now();
        let mut delay = cfg.initial_interval;
        loop {
            match transport.send(&batch).await {
                Ok(rejected) => {
                    stats
                        .exported
                        .fetch_add(items - rejected.min(items), Ordering::Relaxed);
                    stats
                        .failed
                        .fetch_add(rejected.min(items), Ordering::Relaxed);
                    break;
                }
                Err(e) if e.retryable && started.elapsed() + delay <= cfg.max_elapsed => {
                    let wait = e.retry_after.unwrap_or(delay).min(cfg.max_interval);
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(exporter = %id, items, error = %e.message, retry_in = ?wait, "export failed, retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(cfg.max_interval);
                }
                Err(e) => {
                    stats.failed.fetch_add(items, Ordering::Relaxed);
                    tracing::error!(exporter = %id, items, error = %e.message, "export failed, dropping the batch");
                    break;
                }
            }
        }
    }
}
