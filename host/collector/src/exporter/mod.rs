//! Exporters, one file per kind as the OpenTelemetry Collector keeps one package per exporter:
//! [`debug`], [`file`], [`otlp`] (gRPC), [`otlphttp`], and [`memory`] for tests. Each implements
//! [`Exporter`]: how one batch leaves. What happens around it — the bounded queue, merging
//! queued requests into batches, retries with backoff, the pipeline's counters — is written
//! once, in [`run`], and driven by the exporter's [`DeliveryConfig`].
//!
//! No deep copies on the way out: a batch is the queued requests' protobuf bytes. For an
//! exporter that [`Exporter::sends_parts`] (the uncompressed OTLP/gRPC exporter) they stay
//! apart and go on the wire one after another; for the others they are concatenated
//! ([`Payload::concat`]) and [`run`] asks the exporter to [`Exporter::prepare`] the batch once
//! (encode it the way it goes on the wire, e.g. the gzip-compressed OTLP/HTTP body). Every
//! attempt is lent the same [`Prepared`] batch, so a retry re-sends the bytes made for the
//! first.

pub mod debug;
pub mod file;
pub mod memory;
pub mod otlp;
pub mod otlphttp;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::{DeliveryConfig, ExporterConfig};
use crate::memory::{Hold, MemoryUse};
use crate::pipeline::{ExporterStats, Payload, PipelineStats, QueueReceiver, Queued};

pub use memory::InMemoryExporter;

/// What [`Exporter::export`] returns: on success, how many items of the batch the peer rejected
/// (OTLP partial success; counted as failed, never retried).
pub type ExportFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, ExportError>> + Send + 'a>>;

/// A batch ready to be sent: the queued requests it is made of, and the body an exporter made of
/// them once in [`Exporter::prepare`] (by default their protobuf bytes). Every attempt of the
/// batch is lent the same `Prepared`. Cloning shares all of it (reference counts).
///
/// A batch of several requests is one request: protobuf messages concatenated are the message
/// with their repeated fields joined. An exporter that [`Exporter::sends_parts`] writes the parts
/// one after another ([`Prepared::wire_parts`]) and nothing is copied; for the others the parts
/// are concatenated once, into a buffer charged to the memory in use, before `prepare`.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The requests, in queue order (at least one, all of one signal).
    parts: Arc<[Payload]>,
    /// The parts concatenated, made on first use of [`Prepared::payload`] (never, by an
    /// exporter that sends parts).
    joined: Arc<std::sync::OnceLock<Payload>>,
    /// What [`Exporter::prepare`] made for the wire, if not the parts as they are.
    body: Option<Bytes>,
}

impl Prepared {
    /// A batch sent as its own protobuf bytes.
    pub fn new(payload: Payload) -> Self {
        Prepared::of_parts(vec![payload])
    }

    /// A batch sent as `body` (its encoding for the wire, e.g. gzip-compressed).
    pub fn with_body(payload: Payload, body: Bytes) -> Self {
        Prepared {
            body: Some(body),
            ..Prepared::new(payload)
        }
    }

    /// A batch of queued requests of one signal, sent as their bytes one after another.
    ///
    /// # Panics
    /// When `parts` is empty.
    pub fn of_parts(parts: Vec<Payload>) -> Self {
        assert!(!parts.is_empty(), "a batch has at least one request");
        Prepared {
            parts: parts.into(),
            joined: Arc::default(),
            body: None,
        }
    }

    /// The batch's signal.
    pub fn signal(&self) -> weft_runtime::Signal {
        self.parts[0].signal()
    }

    /// Its items (spans, log records).
    pub fn items(&self) -> u64 {
        self.parts.iter().map(Payload::items).sum()
    }

    /// The batch as one request. Several parts are concatenated on first use (one copy, kept);
    /// one part is itself.
    pub fn payload(&self) -> &Payload {
        match &self.parts[..] {
            [one] => one,
            parts => self.joined.get_or_init(|| {
                Payload::concat(parts.to_vec()).expect("the parts of a batch have one signal")
            }),
        }
    }

    /// What goes on the wire, in one piece: the prepared body, or the batch's bytes.
    pub fn body(&self) -> &Bytes {
        self.body.as_ref().unwrap_or_else(|| self.payload().bytes())
    }

    /// What goes on the wire, in pieces to be written one after another: the prepared body, or
    /// each part's bytes (nothing concatenated).
    pub fn wire_parts(&self) -> Vec<Bytes> {
        match &self.body {
            Some(body) => vec![body.clone()],
            None => self.parts.iter().map(|p| p.bytes().clone()).collect(),
        }
    }
}

/// One kind of exporter: sends a batch somewhere.
///
/// Threading contract: [`run`] calls `export` from its own tokio task and awaits each call
/// before the next, so one driver never has two calls in flight; the same exporter may still be
/// driven by several pipelines at once (an exporter id shared by the traces and logs pipelines,
/// or an [`InMemoryExporter`] passed to [`crate::start_with`]), hence `Send + Sync`. A call must
/// not block the worker for long (the OTLP exporters await their peer; `debug` and `file` write
/// one line).
///
/// Errors: the exporter never retries by itself. It says whether a failure may be retried
/// ([`ExportError::Retryable`]), and [`run`] decides: if the exporter's [`DeliveryConfig`] has
/// a retry policy and its time is not used up, the same batch is exported again after the
/// backoff (or the peer's `Retry-After`); otherwise the batch is dropped and its items counted
/// as failed. [`ExportError::Permanent`] drops the batch at once.
pub trait Exporter: Send + Sync {
    /// Encodes one batch for the wire, once, before its first attempt (on the driver's task: it
    /// may take the CPU for as long as compressing the batch takes). The default sends the
    /// payload's protobuf bytes as they are. An error here drops the batch like a
    /// [`ExportError::Permanent`] export error, without retry.
    fn prepare(&self, batch: Payload) -> Result<Prepared, ExportError> {
        Ok(Prepared::new(batch))
    }

    /// Whether this exporter sends a batch of several queued requests as the requests' bytes
    /// one after another ([`Prepared::wire_parts`]): then [`run`] neither concatenates them nor
    /// calls [`Exporter::prepare`]. Default false.
    fn sends_parts(&self) -> bool {
        false
    }

    /// Exports one batch (one request, or several merged when the exporter batches), as
    /// [`Exporter::prepare`] made it. The batch is lent: on a retry the same batch comes again.
    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a>;
}

/// Why one export call failed, as the exporter sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// The peer may accept the same batch later (OTLP: UNAVAILABLE, 503, a timeout, ...).
    #[error("{message}")]
    Retryable {
        /// What went wrong.
        message: String,
        /// The peer's `Retry-After`, if it gave one; used instead of the backoff delay (capped
        /// by `max_interval`).
        retry_after: Option<Duration>,
    },
    /// Sending it again cannot help (rejected as invalid, cannot encode, cannot write).
    #[error("{0}")]
    Permanent(String),
}

impl ExportError {
    /// A retryable error without `Retry-After`.
    pub fn retryable(message: impl Into<String>) -> Self {
        ExportError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// An exporter that cannot be built from its configuration (a file that cannot be opened, an
/// endpoint that is not a URI). The collector still starts; the exporter's requests fail.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Builds exporter `id` as its configuration describes it. OTLP clients connect lazily, so this
/// needs a tokio runtime but no peer.
pub fn build(id: &str, config: &ExporterConfig) -> Result<Arc<dyn Exporter>, BuildError> {
    Ok(match config {
        ExporterConfig::Debug(c) => Arc::new(debug::DebugExporter::new(id, c)),
        ExporterConfig::File(c) => Arc::new(file::FileExporter::new(c)?),
        ExporterConfig::Otlp(c) => Arc::new(otlp::OtlpGrpcExporter::new(c)?),
        ExporterConfig::OtlpHttp(c) => Arc::new(otlphttp::OtlpHttpExporter::new(c)),
    })
}

/// Drives exporter `id` until its queue is closed and drained: waits for a request; with a
/// batch policy, merges queued requests of the same signal up to `send_batch_size` items or
/// `timeout`; exports; on a retryable error and with a retry policy, exports the same batch
/// again after a delay doubled from `initial_interval` up to `max_interval` (or the peer's
/// Retry-After), for at most `max_elapsed`. Counts into the pipeline's `stats`; a merged batch
/// and a body prepared apart from it are charged to `memory` until the batch is done.
pub async fn run(
    id: String,
    exporter: Arc<dyn Exporter>,
    delivery: DeliveryConfig,
    mut rx: QueueReceiver,
    stats: Arc<PipelineStats>,
    memory: Arc<MemoryUse>,
) {
    // This exporter's own counters, next to the pipeline's (absent in stats made without ids).
    let own = stats.exporter(&id);
    let count = |get: fn(&ExporterStats) -> &AtomicU64, n: u64| {
        if let Some(s) = own {
            get(s).fetch_add(n, Ordering::Relaxed);
        }
    };
    let mut carry: Option<Queued> = None;
    loop {
        let first = match carry.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut items = first.payload.items();
        let mut parts = vec![first];
        if let Some(policy) = &delivery.batch {
            let flush_at = Instant::now() + policy.timeout;
            while items < policy.send_batch_size {
                match tokio::time::timeout_at(flush_at, rx.recv()).await {
                    Ok(Some(q)) if q.payload.signal() != parts[0].payload.signal() => {
                        carry = Some(q);
                        break;
                    }
                    Ok(Some(q)) => {
                        items += q.payload.items();
                        parts.push(q);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        // The holds on the batch's bytes last until it is done with (sent or dropped).
        let (batch, _holds) = if exporter.sends_parts() {
            // Each part's hold goes with the batch; nothing is copied.
            let (payloads, holds): (Vec<Payload>, Vec<Arc<Hold>>) =
                parts.into_iter().map(|q| (q.payload, q.hold)).unzip();
            (Prepared::of_parts(payloads), holds)
        } else {
            let (batch, mut holds) = join(parts, &memory);
            match exporter.prepare(batch) {
                Ok(b) => {
                    if b.body().as_ptr() != b.payload().bytes().as_ptr() {
                        holds.push(Arc::new(memory.hold(b.body().len() as u64)));
                    }
                    (b, holds)
                }
                Err(error) => {
                    stats.failed.fetch_add(items, Ordering::Relaxed);
                    count(|s| &s.send_failed, items);
                    tracing::error!(exporter = %id, items, error = %error, "cannot encode the batch, dropping it");
                    continue;
                }
            }
        };
        let started = Instant::now();
        let mut delay = delivery.retry.as_ref().map(|r| r.initial_interval);
        loop {
            let error = match exporter.export(&batch).await {
                Ok(rejected) => {
                    let rejected = rejected.min(items);
                    stats
                        .exported
                        .fetch_add(items - rejected, Ordering::Relaxed);
                    stats.failed.fetch_add(rejected, Ordering::Relaxed);
                    count(|s| &s.sent, items - rejected);
                    count(|s| &s.send_failed, rejected);
                    break;
                }
                Err(e) => e,
            };
            // The wait before the next attempt, if there is one.
            let wait = match (&error, &delivery.retry, delay) {
                (ExportError::Retryable { retry_after, .. }, Some(policy), Some(d))
                    if started.elapsed() + d <= policy.max_elapsed =>
                {
                    delay = Some((d * 2).min(policy.max_interval));
                    Some(retry_after.unwrap_or(d).min(policy.max_interval))
                }
                _ => None,
            };
            match wait {
                Some(wait) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    count(|s| &s.retries, 1);
                    tracing::warn!(exporter = %id, items, error = %error, retry_in = ?wait, "export failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                None => {
                    stats.failed.fetch_add(items, Ordering::Relaxed);
                    count(|s| &s.send_failed, items);
                    tracing::error!(exporter = %id, items, error = %error, "export failed, dropping the batch");
                    break;
                }
            }
        }
    }
}

/// Drains the queue of exporter `id`, which could not be built, counting every item as failed.
pub async fn fail_all(id: String, mut rx: QueueReceiver, stats: Arc<PipelineStats>) {
    while let Some(q) = rx.recv().await {
        let items = q.payload.items();
        stats.failed.fetch_add(items, Ordering::Relaxed);
        if let Some(s) = stats.exporter(&id) {
            s.send_failed.fetch_add(items, Ordering::Relaxed);
        }
    }
}

/// One batch of queued requests (one signal, in queue order) and the holds on its bytes: a
/// single request as it is; several concatenated into a new buffer, charged on its own, while
/// the parts' holds go with the parts (other exporters may still hold them).
fn join(mut parts: Vec<Queued>, memory: &Arc<MemoryUse>) -> (Payload, Vec<Arc<Hold>>) {
    if parts.len() == 1 {
        let q = parts.remove(0);
        return (q.payload, vec![q.hold]);
    }
    let payloads = parts.into_iter().map(|q| q.payload).collect();
    match Payload::concat(payloads) {
        Some(batch) => {
            let hold = Arc::new(memory.hold(batch.bytes().len() as u64));
            (batch, vec![hold])
        }
        // The loop above only joins requests of one signal.
        None => unreachable!("a batch of requests of one signal"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::config::{BatchConfig, RetryConfig};

    /// A request of `n` (valid) spans.
    fn spans(n: usize) -> Payload {
        Payload::from_traces(&ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            ..Default::default()
                        };
                        n
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .expect("valid spans")
    }

    /// Fails with the queued errors first, then records and succeeds. Counts the batches it
    /// prepared and checks every attempt gets the body prepared for it.
    struct Scripted {
        errors: Mutex<Vec<ExportError>>,
        memory: InMemoryExporter,
        prepared: std::sync::atomic::AtomicU64,
    }

    impl Exporter for Scripted {
        fn prepare(&self, batch: Payload) -> Result<Prepared, ExportError> {
            self.prepared.fetch_add(1, Ordering::Relaxed);
            let body = Bytes::from(format!("prepared {}", batch.items()));
            Ok(Prepared::with_body(batch, body))
        }

        fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
            let expected = format!("prepared {}", batch.payload().items());
            assert_eq!(batch.body(), expected.as_bytes(), "the body prepare made");
            let next = self.errors.lock().map(|mut e| e.pop()).unwrap_or(None);
            match next {
                Some(e) => Box::pin(std::future::ready(Err(e))),
                None => self.memory.export(batch),
            }
        }
    }

    /// Drives `exporter` over `requests` to the end and returns the pipeline's counters.
    async fn drive(
        exporter: Arc<dyn Exporter>,
        delivery: DeliveryConfig,
        requests: Vec<Payload>,
    ) -> (u64, u64, u64) {
        let id = "test".to_string();
        let stats = Arc::new(PipelineStats::new([], [&id]));
        let (queue, rx) = crate::pipeline::queue(&id, &delivery.queue);
        let memory = MemoryUse::new();
        let pipeline = crate::pipeline::Pipeline {
            signal: weft_runtime::Signal::Traces,
            limiter: None,
            processors: Vec::new(),
            exporters: vec![queue],
            stats: stats.clone(),
            memory: memory.clone(),
        };
        for r in requests {
            pipeline.consume(r).expect("room");
        }
        drop(pipeline);
        run(
            id.clone(),
            exporter,
            delivery,
            rx,
            stats.clone(),
            memory.clone(),
        )
        .await;
        assert_eq!(memory.held(), 0, "every batch's bytes given back");
        // The exporter's own counters say the same as the pipeline's (one exporter).
        let own = stats.exporter(&id).expect("registered");
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(ld(&own.sent), ld(&stats.exported));
        assert_eq!(ld(&own.send_failed), ld(&stats.failed));
        assert_eq!(ld(&own.retries), ld(&stats.retries));
        (
            stats.exported.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
            stats.retries.load(Ordering::Relaxed),
        )
    }

    fn retrying() -> DeliveryConfig {
        DeliveryConfig {
            batch: Some(BatchConfig {
                send_batch_size: 5,
                timeout: Duration::from_millis(10),
            }),
            retry: Some(RetryConfig {
                initial_interval: Duration::from_millis(1),
                max_interval: Duration::from_millis(2),
                max_elapsed: Duration::from_secs(5),
            }),
            ..DeliveryConfig::default()
        }
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_and_batches_merge_up_to_the_size() {
        let memory = InMemoryExporter::new();
        let exporter = Arc::new(Scripted {
            errors: Mutex::new(vec![
                ExportError::retryable("busy"),
                ExportError::retryable("busy"),
            ]),
            memory: memory.clone(),
            prepared: Default::default(),
        });
        let counts = drive(
            exporter.clone(),
            retrying(),
            vec![spans(3), spans(3), spans(1)],
        )
        .await;
        assert_eq!(counts, (7, 0, 2));
        // Two batches, each prepared once however often it was retried.
        assert_eq!(exporter.prepared.load(Ordering::Relaxed), 2);
        // 3 + 3 reaches 5: one batch of 6, then the 1 on its own.
        let sizes: Vec<u64> = memory.requests().iter().map(Payload::items).collect();
        assert_eq!(sizes, [6, 1]);
        // The merged batch is one valid request: its concatenation decodes to all its spans.
        assert_eq!(memory.spans().len(), 7);
    }

    #[tokio::test]
    async fn permanent_errors_and_exporters_without_retry_drop_the_batch() {
        let memory = InMemoryExporter::new();
        let permanent = Arc::new(Scripted {
            errors: Mutex::new(vec![ExportError::Permanent("bad".into())]),
            memory: memory.clone(),
            prepared: Default::default(),
        });
        assert_eq!(
            drive(permanent, retrying(), vec![spans(2)]).await,
            (0, 2, 0)
        );
        let no_retry = Arc::new(Scripted {
            errors: Mutex::new(vec![ExportError::retryable("busy")]),
            memory: memory.clone(),
            prepared: Default::default(),
        });
        let counts = drive(
            no_retry,
            DeliveryConfig::default(),
            vec![spans(2), spans(4)],
        )
        .await;
        // No batch policy: each request alone; no retry policy: the first is dropped.
        assert_eq!(counts, (4, 2, 0));
        assert_eq!(memory.items(), 4);
        memory.reset();
        assert!(memory.requests().is_empty() && memory.spans().is_empty());
    }

    /// Records the pieces of each batch it is lent, as they would go on the wire.
    #[derive(Default)]
    struct Pieces {
        seen: Mutex<Vec<Vec<Bytes>>>,
    }

    impl Exporter for Pieces {
        fn prepare(&self, _: Payload) -> Result<Prepared, ExportError> {
            panic!("an exporter that sends parts is not asked to prepare")
        }

        fn sends_parts(&self) -> bool {
            true
        }

        fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(batch.wire_parts());
            }
            Box::pin(std::future::ready(Ok(0)))
        }
    }

    /// Batched for an exporter that sends parts, queued requests are neither joined nor
    /// copied: the batch lends their own buffers, and their holds are given back after it.
    #[tokio::test]
    async fn an_exporter_that_sends_parts_gets_the_queued_requests_unjoined() {
        let exporter = Arc::new(Pieces::default());
        let requests = vec![spans(3), spans(3), spans(1)];
        let sent: Vec<Bytes> = requests.iter().map(|r| r.bytes().clone()).collect();
        // `drive` also checks that every hold was given back.
        assert_eq!(
            drive(exporter.clone(), retrying(), requests).await,
            (7, 0, 0)
        );
        let seen = exporter.seen.lock().expect("lock");
        // 3 + 3 reaches 5: a batch of two requests, then the 1 on its own.
        assert_eq!(seen.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        for (got, want) in seen.iter().flatten().zip(&sent) {
            assert_eq!(
                got.as_ptr(),
                want.as_ptr(),
                "the queued request's own bytes"
            );
        }
    }
}
