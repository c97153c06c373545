//! A pipeline: processors (plugins) in order, then every exporter's bounded queue.
//!
//! Threading contract: `consume` may be called from any number of receiver tasks at once. Plugin
//! calls run on the calling tokio worker inside `block_in_place` (they are CPU-bound and bounded
//! by their deadline); each call takes its own plugin instance, so there is no global lock. A
//! pipeline without processors never enters `block_in_place` and never reads the bytes.
//!
//! Ownership: a [`Payload`] is the request's validated protobuf bytes, shared by reference
//! count. Queueing it for several exporters clones the handle, never the data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tokio::sync::mpsc;

use weft_runtime::{ConvertError, OtlpData, Plugin, Signal};

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
    /// An exporter queue is full: the client should retry later (RESOURCE_EXHAUSTED / 503).
    #[error("exporter `{0}` queue is full")]
    QueueFull(String),
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

/// Counters of one pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Items received from clients.
    pub received: AtomicU64,
    /// Items refused (malformed, or queue full). A request the receiver's validation refuses
    /// never reaches the pipeline and counts nothing: its items cannot be counted.
    pub refused: AtomicU64,
    /// Items handed to exporters (counted once per exporter).
    pub queued: AtomicU64,
    /// Items exporters wrote out.
    pub exported: AtomicU64,
    /// Items exporters failed to write.
    pub failed: AtomicU64,
    /// Export attempts retried after a retryable failure.
    pub retries: AtomicU64,
}

/// An exporter's queue.
#[derive(Debug, Clone)]
pub struct ExporterQueue {
    /// The exporter's id.
    pub id: String,
    /// Requests waiting to be exported.
    pub tx: mpsc::Sender<Payload>,
}

/// A pipeline for one signal.
pub struct Pipeline {
    /// Which signal.
    pub signal: Signal,
    /// Processors, applied in order: `(id, plugin)`.
    pub processors: Vec<(String, PluginSlot)>,
    /// Exporter queues.
    pub exporters: Vec<ExporterQueue>,
    /// Counters.
    pub stats: Arc<PipelineStats>,
}

impl Pipeline {
    /// Runs the processors over `payload` and queues the result for every exporter.
    /// Returns the items a processor's fail-closed policy dropped (with the first processor's
    /// id), which receivers report to the client as OTLP partial success.
    ///
    /// `payload` must already be validated (receivers build it with
    /// [`OtlpData::from_protobuf`]); with processors, must be called on a multi-threaded tokio
    /// runtime (`block_in_place`).
    pub fn consume(&self, payload: Payload) -> Result<Rejected, ConsumeError> {
        let n = payload.items();
        self.stats.received.fetch_add(n, Ordering::Relaxed);
        let processed = if self.processors.is_empty() {
            Ok((payload, Rejected::default()))
        } else {
            tokio::task::block_in_place(|| self.process(payload))
        };
        let (payload, rejected) = match processed {
            Ok(p) => p,
            Err(e) => {
                self.stats.refused.fetch_add(n, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let out = payload.items();
        if out == 0 {
            return Ok(rejected);
        }
        // Refuse before queueing anywhere, so a full queue never half-delivers a request.
        if let Some(full) = self.exporters.iter().find(|e| e.tx.capacity() == 0) {
            self.stats.refused.fetch_add(n, Ordering::Relaxed);
            return Err(ConsumeError::QueueFull(full.id.clone()));
        }
        // One clone per exporter: a reference count on the same bytes.
        for e in &self.exporters {
            match e.tx.try_send(payload.clone()) {
                Ok(()) => {
                    self.stats.queued.fetch_add(out, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.refused.fetch_add(out, Ordering::Relaxed);
                    return Err(ConsumeError::QueueFull(e.id.clone()));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(ConsumeError::ShuttingDown);
                }
            }
        }
        Ok(rejected)
    }

    /// The processors in order; a plugin failure is handled by its fail policy inside.
    fn process(&self, mut payload: Payload) -> Result<(Payload, Rejected), ConvertError> {
        let mut rejected = Rejected::default();
        for (id, slot) in &self.processors {
            // One version per request: a reload swaps the slot, requests in flight finish on
            // the version they started with.
            let plugin = slot.load();
            let report;
            (payload, report) = plugin.process_data(payload)?;
            if report.failed_items_dropped > 0 {
                rejected.items += report.failed_items_dropped;
                rejected.message.get_or_insert_with(|| {
                    format!("processor {id} failed and its fail policy (closed) dropped the data")
                });
            }
        }
        Ok((payload, rejected))
    }
}
