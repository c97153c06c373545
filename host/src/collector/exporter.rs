//! Exporters: each runs as a task draining its bounded queue.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::config::{ExporterConfig, OtlpExporterConfig};
use super::pipeline::{Payload, PipelineStats};
use crate::otlp_io::OtlpData;

/// Requests an exporter queue holds before receivers answer "retry later" (the OTLP exporter
/// has its own `sending_queue.queue_size`).
pub const QUEUE_CAPACITY: usize = 1000;

/// The queue size for an exporter.
pub fn queue_size(config: &ExporterConfig) -> usize {
    match config {
        ExporterConfig::Otlp(o) => o.queue_size,
        _ => QUEUE_CAPACITY,
    }
}

fn to_data(p: Payload) -> OtlpData {
    match p {
        Payload::Traces(t) => OtlpData::Traces(t),
        Payload::Logs(l) => OtlpData::Logs(l),
    }
}

/// Runs exporter `id` until its queue is closed and drained. `stats` are the pipeline's.
pub async fn run(
    id: String,
    config: ExporterConfig,
    mut rx: mpsc::Receiver<Payload>,
    stats: Arc<PipelineStats>,
) {
    if let ExporterConfig::Otlp(otlp) = config {
        return run_otlp(id, otlp, rx, stats).await;
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
                let data = to_data(payload);
                let mut out = std::io::stdout().lock();
                let mut r = writeln!(out, "{id}: {} {items} items", data.signal());
                if *detailed {
                    r = r.and_then(|_| writeln!(out, "{}", data.to_json()));
                }
                r.is_ok()
            }
            ExporterConfig::Otlp(_) => false,
            ExporterConfig::File { .. } => match &mut file {
                Some(f) => {
                    let line = match to_data(payload) {
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

/// The OTLP/gRPC exporter: waits for a request, merges queued ones up to `send_batch_size` items
/// or `batch_timeout`, and exports with retries (exponential backoff, doubled from
/// `initial_interval` up to `max_interval`, for at most `max_elapsed`). Drains on close.
async fn run_otlp(
    id: String,
    cfg: OtlpExporterConfig,
    mut rx: mpsc::Receiver<Payload>,
    stats: Arc<PipelineStats>,
) {
    let channel = match Channel::from_shared(cfg.endpoint.clone()) {
        Ok(c) => c.timeout(cfg.timeout).connect_lazy(),
        Err(e) => {
            tracing::error!(exporter = %id, endpoint = %cfg.endpoint, error = %e, "invalid endpoint");
            while let Some(p) = rx.recv().await {
                stats.failed.fetch_add(p.items(), Ordering::Relaxed);
            }
            return;
        }
    };
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
            let result = match &batch {
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
            match result {
                Ok(rejected) => {
                    stats
                        .exported
                        .fetch_add(items - rejected.min(items), Ordering::Relaxed);
                    stats
                        .failed
                        .fetch_add(rejected.min(items), Ordering::Relaxed);
                    break;
                }
                Err(status)
                    if retryable(status.code()) && started.elapsed() + delay <= cfg.max_elapsed =>
                {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(exporter = %id, items, code = ?status.code(), retry_in = ?delay, "export failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(cfg.max_interval);
                }
                Err(status) => {
                    stats.failed.fetch_add(items, Ordering::Relaxed);
                    tracing::error!(exporter = %id, items, code = ?status.code(), message = status.message(), "export failed, dropping the batch");
                    break;
                }
            }
        }
    }
}
