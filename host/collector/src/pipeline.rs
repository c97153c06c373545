//! A pipeline: processors (plugins) in order, then every exporter's bounded queue.
//!
//! Threading contract: `consume` may be called from any number of receiver tasks at once. Plugin
//! calls run on the calling tokio worker inside `block_in_place` (they are CPU-bound and bounded
//! by their deadline); each call takes its own plugin instance, so there is no global lock. A
//! pipeline without processors never enters `block_in_place` and never reads the bytes.
//!
//! Ownership: a [`Payload`] is the request's validated protobuf bytes, shared by reference
//! count. Queueing it for several exporters clones the handle, never the data. Its bytes are
//! charged to the collector's [`MemoryUse`] for as long as a queue or an export holds them
//! ([`Queued`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tokio::sync::mpsc;

use weft_runtime::{ConvertError, OtlpData, Plugin, Signal};

use crate::config::{QueueConfig, Sizer};
use crate::memory::{Hold, MemoryLimiter, MemoryUse};

/// Where a processor's current plugin lives; hot reload swaps it atomically.
pub type PluginSlot = Arc<arc_swap::ArcSwap<Plugin>>;

/// One request's worth of telemetry, as it moves through a pipeline.
pub type Payload = OtlpData;

/// Items of an accepted request that were dropped by a fail-closed processor.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// How many.
    pub items: u64,
    /// Why (the first processor that dropped data).
    pub message: Option<String>,
}

impl Rejected {
    /// The OTLP traces response: partial success when something was dropped.
    pub fn traces_response(self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.items > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.items as i64,
                error_message: self.message.unwrap_or_default(),
            }),
        }
    }

    /// The OTLP logs response: partial success when something was dropped.
    pub fn logs_response(self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (self.items > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: self.items as i64,
                error_message: self.message.unwrap_or_default(),
            }),
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// Malformed OTLP: the client must not retry (INVALID_ARGUMENT / 400). The message says
    /// what is wrong (a receiver's validation error, or a processor's conversion error).
    #[error("malformed OTLP: {0}")]
    Invalid(String),
    /// An exporter queue is full: the client should retry later (UNAVAILABLE / 503).
    #[error("exporter `{0}` queue is full")]
    QueueFull(String),
    /// A `memory_limiter` refused the request: the client should retry after `retry_after`
    /// (UNAVAILABLE / 503 with `Retry-After`).
    #[error(
        "data refused due to high memory usage: {limiter} counts {usage} bytes, over its soft limit of {soft_limit}"
    )]
    MemoryLimited {
        /// The limiter's id.
        limiter: String,
        /// The use it counted, with the request.
        usage: u64,
        /// Its soft limit.
        soft_limit: u64,
        /// When to try again.
        retry_after: Duration,
    },
    /// The pipeline is shutting down (UNAVAILABLE / 503).
    #[error("weft is shutting down")]
    ShuttingDown,
}

impl From<ConvertError> for ConsumeError {
    fn from(e: ConvertError) -> Self {
        ConsumeError::Invalid(e.to_string())
    }
}

impl From<weft_runtime::WireError> for ConsumeError {
    fn from(e: weft_runtime::WireError) -> Self {
        ConsumeError::Invalid(e.to_string())
    }
}

/// Counters of one pipeline. They add up: for every exporter `e`,
///
/// `received = refused + dropped_fail_closed + dropped_by_plugins + e.enqueued` and
/// `e.enqueued = e.sent + e.send_failed + e.in_flight()`,
///
/// as long as no processor returns more items than it was given.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Items received from clients.
    pub received: AtomicU64,
    /// Items refused (malformed, a queue full, memory over a limit, shutting down): the client
    /// was told to retry or that the request is invalid. A request the receiver's validation
    /// refuses never reaches the pipeline and counts nothing here.
    pub refused: AtomicU64,
    /// Items of accepted requests that a processor's fail-closed policy dropped.
    pub dropped_fail_closed: AtomicU64,
    /// Items of accepted requests that a processor dropped on purpose (a sampler).
    pub dropped_by_plugins: AtomicU64,
    /// Items handed to exporters (counted once per exporter).
    pub queued: AtomicU64,
    /// Items exporters wrote out.
    pub exported: AtomicU64,
    /// Items exporters failed to write.
    pub failed: AtomicU64,
    /// Export attempts retried after a retryable failure.
    pub retries: AtomicU64,
    /// Per processor, in pipeline order (empty in stats made with `default()`).
    pub processors: Vec<ProcessorStats>,
    /// Per exporter (empty in stats made with `default()`).
    pub exporters: Vec<ExporterStats>,
}

impl PipelineStats {
    /// Counters for a pipeline with these processor and exporter ids.
    pub fn new<'a>(
        processors: impl IntoIterator<Item = &'a String>,
        exporters: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        PipelineStats {
            processors: processors
                .into_iter()
                .map(|id| ProcessorStats {
                    id: id.clone(),
                    ..ProcessorStats::default()
                })
                .collect(),
            exporters: exporters
                .into_iter()
                .map(|id| ExporterStats {
                    id: id.clone(),
                    ..ExporterStats::default()
                })
                .collect(),
            ..PipelineStats::default()
        }
    }

    /// The counters of exporter `id`, if these stats have them.
    pub fn exporter(&self, id: &str) -> Option<&ExporterStats> {
        self.exporters.iter().find(|e| e.id == id)
    }

    /// The counters of processor `id`, if these stats have them.
    pub fn processor(&self, id: &str) -> Option<&ProcessorStats> {
        self.processors.iter().find(|p| p.id == id)
    }
}

/// Counters of one processor in one pipeline, for accepted requests only: a request refused
/// after processing (a full queue) is counted once, as refused, and not here.
#[derive(Debug, Default)]
pub struct ProcessorStats {
    /// The processor id (its plugin's name).
    pub id: String,
    /// Items handed to it.
    pub incoming: AtomicU64,
    /// Items it passed on (returned, or passed unprocessed by fail-open).
    pub outgoing: AtomicU64,
    /// Items its fail-closed policy dropped.
    pub dropped_fail_closed: AtomicU64,
    /// Items it dropped on purpose.
    pub dropped_by_plugin: AtomicU64,
}

/// Counters of one exporter in one pipeline.
#[derive(Debug, Default)]
pub struct ExporterStats {
    /// The exporter id.
    pub id: String,
    /// Items put in its queue.
    pub enqueued: AtomicU64,
    /// Items it wrote out.
    pub sent: AtomicU64,
    /// Items it failed to write (given up, or rejected by the peer).
    pub send_failed: AtomicU64,
    /// Items of requests refused because its queue was full.
    pub enqueue_failed: AtomicU64,
    /// Export attempts retried.
    pub retries: AtomicU64,
}

impl ExporterStats {
    /// Items queued and neither sent nor failed yet: in the queue, in a batch being built, or in
    /// an export attempt and its retries.
    pub fn in_flight(&self) -> u64 {
        // Outcomes first: each follows its enqueue, so this never goes negative.
        let done = self.sent.load(Ordering::Relaxed) + self.send_failed.load(Ordering::Relaxed);
        self.enqueued.load(Ordering::Relaxed).saturating_sub(done)
    }
}

/// What the processors did to one request, counted only once the request is accepted.
#[derive(Debug, Default)]
struct Processed {
    rejected: Rejected,
    /// Per processor called: `(index, incoming, outgoing, dropped by fail-closed)`.
    steps: Vec<(usize, u64, u64, u64)>,
}

/// A request in an exporter's queue: the payload, its size in the queue's unit, and the charge
/// of its bytes (shared with the other exporters' copies of the same payload).
#[derive(Debug)]
pub struct Queued {
    /// The request.
    pub payload: Payload,
    /// Its bytes, held until the last exporter is done with them.
    pub hold: Arc<Hold>,
    size: u64,
}

/// How full an exporter's queue is, in its `sizer`'s unit.
#[derive(Debug)]
pub struct QueueRoom {
    /// What the size counts.
    pub sizer: Sizer,
    /// `queue_size`.
    pub capacity: u64,
    used: AtomicU64,
    requests: AtomicU64,
}

impl QueueRoom {
    /// The size of `payload` in this queue's unit.
    fn size_of(&self, payload: &Payload) -> u64 {
        match self.sizer {
            Sizer::Requests => 1,
            Sizer::Items => payload.items(),
            Sizer::Bytes => payload.bytes().len() as u64,
        }
    }

    /// Takes `n` of the room, if there is that much left. A request larger than the whole
    /// queue (possible with the `items` and `bytes` sizers) is taken when the queue is empty:
    /// refusing it would have the client retry it forever.
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.capacity || used == 0).then_some(used + n)
            })
            .is_ok()
    }

    /// Gives `n` back.
    fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// What the queue holds now, in its unit.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Requests in the queue now, whatever the unit.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// An exporter's queue, the pipeline's end of it.
#[derive(Debug, Clone)]
pub struct ExporterQueue {
    /// The exporter's id.
    pub id: String,
    /// Requests waiting to be exported.
    tx: mpsc::Sender<Queued>,
    /// How full it is.
    pub room: Arc<QueueRoom>,
}

/// An exporter's queue, the exporter's end: [`QueueReceiver::recv`] gives back the room a
/// request took.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::Receiver<Queued>,
    room: Arc<QueueRoom>,
}

impl QueueReceiver {
    /// The next request, `None` once every sender is gone and the queue is empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Queued> {
        let q = self.rx.recv().await?;
        Some(self.taken(q))
    }

    /// The next request if one is waiting.
    pub fn try_recv(&mut self) -> Option<Queued> {
        let q = self.rx.try_recv().ok()?;
        Some(self.taken(q))
    }

    fn taken(&self, q: Queued) -> Queued {
        self.room.give(q.size);
        self.room.requests.fetch_sub(1, Ordering::Relaxed);
        q
    }
}

/// A queue for exporter `id`, as `config` sizes it.
pub fn queue(id: &str, config: &QueueConfig) -> (ExporterQueue, QueueReceiver) {
    let capacity = config.queue_size as u64;
    // The room decides; the channel only has to be large enough for any queue the room admits
    // (every request is at least one item and one byte). Its blocks are allocated as used.
    let slots = match config.sizer {
        Sizer::Requests => config.queue_size,
        Sizer::Items | Sizer::Bytes => config.queue_size.min(1 << 24),
    };
    let (tx, rx) = mpsc::channel(slots.max(1));
    let room = Arc::new(QueueRoom {
        sizer: config.sizer,
        capacity,
        used: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    (
        ExporterQueue {
            id: id.to_string(),
            tx,
            room: room.clone(),
        },
        QueueReceiver { rx, room },
    )
}

/// A pipeline for one signal.
pub struct Pipeline {
    /// Which signal.
    pub signal: Signal,
    /// The `memory_limiter` named first among the pipeline's processors, if any.
    pub limiter: Option<Arc<MemoryLimiter>>,
    /// Processors, applied in order: `(id, plugin)`.
    pub processors: Vec<(String, PluginSlot)>,
    /// Exporter queues.
    pub exporters: Vec<ExporterQueue>,
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// What the collector's queues and exports hold, in bytes.
    pub memory: Arc<MemoryUse>,
}

/// The index of a signal in per-signal counters.
pub(crate) fn signal_index(signal: Signal) -> usize {
    match signal {
        Signal::Traces => 0,
        Signal::Logs => 1,
    }
}

impl Pipeline {
    /// Runs the processors over `payload` and queues the result for every exporter, or for none
    /// (a request is never half-delivered). Returns the items a processor's fail-closed policy
    /// dropped (with the first processor's id), which receivers report to the client as OTLP
    /// partial success. Every item received is counted once as refused, dropped or queued.
    ///
    /// `payload` must already be validated (receivers build it with
    /// [`OtlpData::from_protobuf`]); with processors, must be called on a multi-threaded tokio
    /// runtime (`block_in_place`).
    pub fn consume(&self, payload: Payload) -> Result<Rejected, ConsumeError> {
        let n = payload.items();
        self.stats.received.fetch_add(n, Ordering::Relaxed);
        if let Some(limiter) = &self.limiter {
            let bytes = payload.bytes().len() as u64;
            if let Err(over) = limiter.admit(bytes, n, signal_index(self.signal)) {
                self.stats.refused.fetch_add(n, Ordering::Relaxed);
                return Err(ConsumeError::MemoryLimited {
                    limiter: limiter.id.clone(),
                    usage: over.usage,
                    soft_limit: over.soft_limit,
                    retry_after: over.retry_after,
                });
            }
        }
        let processed = if self.processors.is_empty() {
            Ok((payload, Processed::default()))
        } else {
            tokio::task::block_in_place(|| self.process(payload))
        };
        let (payload, processed) = match processed {
            Ok(p) => p,
            Err(e) => {
                self.stats.refused.fetch_add(n, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let out = payload.items();
        if out == 0 {
            self.commit(&processed);
            return Ok(processed.rejected);
        }
        // Room and a slot in every queue first, so a request is queued everywhere or nowhere:
        // a full second queue must not leave the first with a copy the client will send again.
        let mut permits = Vec::with_capacity(self.exporters.len());
        let refuse = |permits: Vec<(mpsc::Permit<'_, Queued>, u64)>, e: ConsumeError| {
            for ((_, size), q) in permits.into_iter().zip(&self.exporters) {
                q.room.give(size);
            }
            self.stats.refused.fetch_add(n, Ordering::Relaxed);
            Err(e)
        };
        for e in &self.exporters {
            let size = e.room.size_of(&payload);
            let full = || {
                if let Some(s) = self.stats.exporter(&e.id) {
                    s.enqueue_failed.fetch_add(out, Ordering::Relaxed);
                }
                ConsumeError::QueueFull(e.id.clone())
            };
            if !e.room.take(size) {
                return refuse(permits, full());
            }
            match e.tx.try_reserve() {
                Ok(permit) => permits.push((permit, size)),
                Err(error) => {
                    e.room.give(size);
                    return refuse(
                        permits,
                        match error {
                            mpsc::error::TrySendError::Full(()) => full(),
                            mpsc::error::TrySendError::Closed(()) => ConsumeError::ShuttingDown,
                        },
                    );
                }
            }
        }
        self.commit(&processed);
        let hold = Arc::new(self.memory.hold(payload.bytes().len() as u64));
        for ((permit, size), e) in permits.into_iter().zip(&self.exporters) {
            // Counted before the send, so an exporter's outcome never precedes its enqueue.
            if let Some(s) = self.stats.exporter(&e.id) {
                s.enqueued.fetch_add(out, Ordering::Relaxed);
            }
            self.stats.queued.fetch_add(out, Ordering::Relaxed);
            e.room.requests.fetch_add(1, Ordering::Relaxed);
            // One clone per exporter: a reference count on the same bytes, and on their hold.
            permit.send(Queued {
                payload: payload.clone(),
                hold: hold.clone(),
                size,
            });
        }
        Ok(processed.rejected)
    }

    /// Counts what the processors did to a request that was accepted.
    fn commit(&self, processed: &Processed) {
        for &(i, incoming, outgoing, fail_closed) in &processed.steps {
            // What a processor removed beyond its fail-closed drops, it dropped on purpose.
            let by_plugin = incoming
                .saturating_sub(outgoing)
                .saturating_sub(fail_closed);
            self.stats
                .dropped_fail_closed
                .fetch_add(fail_closed, Ordering::Relaxed);
            self.stats
                .dropped_by_plugins
                .fetch_add(by_plugin, Ordering::Relaxed);
            let stats = self
                .processors
                .get(i)
                .and_then(|(id, _)| self.stats.processor(id));
            if let Some(p) = stats {
                p.incoming.fetch_add(incoming, Ordering::Relaxed);
                p.outgoing.fetch_add(outgoing, Ordering::Relaxed);
                p.dropped_fail_closed
                    .fetch_add(fail_closed, Ordering::Relaxed);
                p.dropped_by_plugin.fetch_add(by_plugin, Ordering::Relaxed);
            }
        }
    }

    /// The processors in order; a plugin failure is handled by its fail policy inside.
    fn process(&self, mut payload: Payload) -> Result<(Payload, Processed), ConvertError> {
        let mut done = Processed::default();
        for (i, (id, slot)) in self.processors.iter().enumerate() {
            // One version per request: a reload swaps the slot, requests in flight finish on
            // the version they started with.
            let plugin = slot.load();
            let incoming = payload.items();
            let report;
            (payload, report) = plugin.process_data(payload)?;
            if report.failed_items_dropped > 0 {
                done.rejected.items += report.failed_items_dropped;
                done.rejected.message.get_or_insert_with(|| {
                    format!("processor {id} failed and its fail policy (closed) dropped the data")
                });
            }
            done.steps
                .push((i, incoming, payload.items(), report.failed_items_dropped));
        }
        Ok((payload, done))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    /// A request of `n` valid spans.
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

    /// A pipeline without processors over `queues`.
    fn pipeline(queues: Vec<ExporterQueue>, limiter: Option<Arc<MemoryLimiter>>) -> Pipeline {
        let ids: Vec<String> = queues.iter().map(|q| q.id.clone()).collect();
        Pipeline {
            signal: Signal::Traces,
            limiter,
            processors: Vec::new(),
            exporters: queues,
            stats: Arc::new(PipelineStats::new([], &ids)),
            memory: MemoryUse::new(),
        }
    }

    fn sized(queue_size: usize, sizer: Sizer) -> QueueConfig {
        QueueConfig { queue_size, sizer }
    }

    /// Items of the requests waiting in `rx`, taking them.
    fn drain(rx: &mut QueueReceiver) -> Vec<u64> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|q| q.payload.items())
            .collect()
    }

    #[test]
    fn a_request_is_queued_for_every_exporter_or_for_none_and_counted_once() {
        let (a, mut rx_a) = queue("a", &sized(4, Sizer::Requests));
        let (b, mut rx_b) = queue("b", &sized(1, Sizer::Requests));
        let pipeline = pipeline(vec![a, b], None);
        pipeline.consume(spans(2)).expect("queued for both");
        // `b` holds one request: the next one must not reach `a` either.
        match pipeline.consume(spans(3)) {
            Err(ConsumeError::QueueFull(id)) => assert_eq!(id, "b"),
            other => panic!("expected b's queue to be full, got {other:?}"),
        }
        let bytes = spans(2).bytes().len() as u64;
        assert_eq!(
            pipeline.memory.held(),
            bytes,
            "held once for both exporters"
        );
        assert_eq!(drain(&mut rx_a), [2], "nothing half-delivered");
        assert_eq!(pipeline.exporters[0].room.used(), 0, "a's room given back");
        assert_eq!(drain(&mut rx_b), [2]);
        assert_eq!(pipeline.memory.held(), 0, "given back with the last copy");
        let s = &pipeline.stats;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((ld(&s.received), ld(&s.refused), ld(&s.queued)), (5, 3, 4));
        for e in &s.exporters {
            assert_eq!(ld(&e.enqueued), 2, "{}", e.id);
            // received = refused + enqueued, for each exporter.
            assert_eq!(ld(&s.received), ld(&s.refused) + ld(&e.enqueued));
        }
        let b = s.exporter("b").expect("b");
        assert_eq!(ld(&b.enqueue_failed), 3);
        assert_eq!(ld(&s.exporter("a").expect("a").enqueue_failed), 0);

        // Once closed, requests are refused (and counted) as shutting down.
        drop(rx_a);
        drop(rx_b);
        assert!(matches!(
            pipeline.consume(spans(1)),
            Err(ConsumeError::ShuttingDown)
        ));
        assert_eq!(ld(&s.refused), 4);
        assert_eq!(
            pipeline.exporters[0].room.used(),
            0,
            "room given back on refusal"
        );
    }

    #[test]
    fn queues_sized_in_items_or_bytes_refuse_what_would_not_fit() {
        let one = spans(1).bytes().len() as u64;
        let (items, mut rx_items) = queue("items", &sized(10, Sizer::Items));
        let p = pipeline(vec![items], None);
        p.consume(spans(6)).expect("6 of 10 items");
        assert!(matches!(
            p.consume(spans(5)),
            Err(ConsumeError::QueueFull(_))
        ));
        p.consume(spans(4)).expect("exactly 10");
        assert_eq!(p.exporters[0].room.used(), 10);
        assert_eq!(p.exporters[0].room.requests(), 2);
        assert_eq!(drain(&mut rx_items), [6, 4]);

        // Room for three one-span requests' bytes, not for a fourth.
        let (bytes, _rx) = queue("bytes", &sized(3 * one as usize, Sizer::Bytes));
        let p = pipeline(vec![bytes], None);
        for _ in 0..3 {
            p.consume(spans(1)).expect("fits");
        }
        assert!(matches!(
            p.consume(spans(1)),
            Err(ConsumeError::QueueFull(_))
        ));
        assert_eq!(p.exporters[0].room.used(), 3 * one);
        assert_eq!(p.memory.held(), 3 * one);

        // A request larger than the whole queue goes into an empty queue, and only then.
        let (small, mut rx_small) = queue("small", &sized(5, Sizer::Items));
        let p = pipeline(vec![small], None);
        p.consume(spans(8))
            .expect("8 items into an empty queue of 5");
        assert!(matches!(
            p.consume(spans(1)),
            Err(ConsumeError::QueueFull(_))
        ));
        assert_eq!(drain(&mut rx_small), [8]);
        p.consume(spans(8)).expect("empty again");
    }

    #[test]
    fn a_memory_limiter_refuses_past_its_soft_limit_and_counts_it() {
        use crate::config::{MemoryAmount, MemoryLimiterConfig};
        let one = spans(100).bytes().len() as u64;
        let (q, mut rx) = queue("q", &QueueConfig::default());
        let mut p = pipeline(vec![q], None);
        // Soft limit: room for two requests' bytes beyond the process's own (none measured).
        let config = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit: MemoryAmount::Bytes(3 * one),
            spike_limit: Some(MemoryAmount::Bytes(one)),
        };
        p.limiter = Some(MemoryLimiter::new(
            "memory_limiter",
            &config,
            0,
            p.memory.clone(),
        ));
        p.consume(spans(100)).expect("one");
        p.consume(spans(100)).expect("two");
        match p.consume(spans(100)) {
            Err(ConsumeError::MemoryLimited {
                usage,
                soft_limit,
                retry_after,
                ..
            }) => {
                assert_eq!((usage, soft_limit), (3 * one, 2 * one));
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!((ld(&p.stats.received), ld(&p.stats.refused)), (300, 100));
        assert_eq!(p.limiter.as_ref().map(|l| l.refused(0)), Some(100));
        // The exporter takes one: there is room again.
        drain(&mut rx);
        p.consume(spans(100))
            .expect("admitted once the queue drained");
    }
}
