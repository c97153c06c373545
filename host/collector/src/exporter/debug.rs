//! `debug`: one line per request on stdout (`<exporter id>: <signal> <n> items`), and with
//! `verbosity: detailed` the request as OTLP/JSON on the next line (decoded for the print).

use std::io::Write as _;

use super::{ExportError, ExportFuture, Exporter, Prepared};
use crate::config::DebugExporterConfig;

/// Writes what it gets to stdout. A write error (stdout closed) is permanent.
#[derive(Debug, Clone)]
pub struct DebugExporter {
    /// The exporter id, which starts every line.
    id: String,
    detailed: bool,
}

impl DebugExporter {
    /// Exporter `id` as `config` describes it.
    pub fn new(id: &str, config: &DebugExporterConfig) -> Self {
        DebugExporter {
            id: id.to_string(),
            detailed: config.detailed,
        }
    }
}

impl Exporter for DebugExporter {
    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
        let batch = batch.payload();
        let mut out = std::io::stdout().lock();
        let mut r = writeln!(
            out,
            "{}: {} {} items",
            self.id,
            batch.signal(),
            batch.items()
        );
        if self.detailed {
            r = r.and_then(|_| writeln!(out, "{}", batch.to_json()));
        }
        let result = r
            .map(|_| 0)
            .map_err(|e| ExportError::Permanent(e.to_string()));
        Box::pin(std::future::ready(result))
    }
}
