//! Exporters: each runs as a task draining its bounded queue.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::config::ExporterConfig;
use super::pipeline::{Payload, PipelineStats};
use crate::otlp_io::OtlpData;

/// Requests an exporter queue holds before receivers answer "retry later".
pub const QUEUE_CAPACITY: usize = 1000;

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
        ExporterConfig::Debug { .. } => None,
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
