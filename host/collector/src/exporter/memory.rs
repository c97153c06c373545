//! An exporter that keeps what it gets in memory, for tests that run a whole configuration
//! (like opentelemetry-rust's `InMemorySpanExporter`). It has no YAML spelling: a test builds
//! one and hands it to [`crate::start_with`] (or `weft::service::start_with`) under the id of a
//! configured exporter, which it replaces.
//!
//! It keeps the payloads as they came (their protobuf bytes, shared, not copied); the span and
//! log record helpers decode them when called.

use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;

use weft_runtime::OtlpRequest;

use super::{ExportFuture, Exporter, Prepared};
use crate::pipeline::Payload;

/// Records every exported batch. Clones share one store, so a test keeps a clone and reads it
/// after the collector drained. Never fails.
#[derive(Debug, Clone, Default)]
pub struct InMemoryExporter {
    store: Arc<Mutex<Vec<Payload>>>,
}

impl InMemoryExporter {
    /// An empty exporter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A poisoned lock only means a reader panicked; the data is still whole.
    fn store(&self) -> MutexGuard<'_, Vec<Payload>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every exported batch, in export order (one per request, or merged ones when the replaced
    /// exporter batches). The clones share the stored bytes.
    pub fn requests(&self) -> Vec<Payload> {
        self.store().clone()
    }

    /// Every span exported, in order (each traces batch decoded).
    pub fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for p in self.store().iter() {
            if let Ok(OtlpRequest::Traces(t)) = p.decode() {
                for rs in t.resource_spans {
                    for ss in rs.scope_spans {
                        spans.extend(ss.spans);
                    }
                }
            }
        }
        spans
    }

    /// Every log record exported, in order (each logs batch decoded).
    pub fn log_records(&self) -> Vec<LogRecord> {
        let mut records = Vec::new();
        for p in self.store().iter() {
            if let Ok(OtlpRequest::Logs(l)) = p.decode() {
                for rl in l.resource_logs {
                    for sl in rl.scope_logs {
                        records.extend(sl.log_records);
                    }
                }
            }
        }
        records
    }

    /// Items (spans and log records) exported.
    pub fn items(&self) -> u64 {
        self.store().iter().map(Payload::items).sum()
    }

    /// Forgets everything exported so far.
    pub fn reset(&self) {
        self.store().clear();
    }
}

impl Exporter for InMemoryExporter {
    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
        self.store().push(batch.payload().clone());
        Box::pin(std::future::ready(Ok(0)))
    }
}
