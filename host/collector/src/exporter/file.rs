//! `file`: appends OTLP/JSON lines (one request per line) to a file, flushed per request. Each
//! batch is decoded (from its protobuf bytes) to be written.

use std::io::{BufWriter, Write as _};
use std::sync::Mutex;

use weft_runtime::OtlpRequest;

use super::{BuildError, ExportError, ExportFuture, Exporter, Prepared};
use crate::config::FileExporterConfig;
use crate::pipeline::Payload;

/// Appends each request to a file as one OTLP/JSON line. Write errors are permanent.
#[derive(Debug)]
pub struct FileExporter {
    /// Shared by the pipelines that use this exporter id: a line is written whole under the lock.
    out: Mutex<BufWriter<std::fs::File>>,
}

impl FileExporter {
    /// Opens (creates, appends to) the file `config` names.
    pub fn new(config: &FileExporterConfig) -> Result<Self, BuildError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)
            .map_err(|e| {
                BuildError(format!(
                    "cannot open the output file {}: {e}",
                    config.path.display()
                ))
            })?;
        Ok(FileExporter {
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Decodes `batch` and appends it as one line. Errors are permanent.
    fn write(&self, batch: &Payload) -> Result<u64, ExportError> {
        let request = batch
            .decode()
            .map_err(|e| ExportError::Permanent(format!("cannot decode the batch: {e}")))?;
        let line = match &request {
            OtlpRequest::Traces(t) => serde_json::to_string(t),
            OtlpRequest::Logs(l) => serde_json::to_string(l),
        }
        .map_err(|e| ExportError::Permanent(format!("OTLP/JSON: {e}")))?;
        let mut out = self
            .out
            .lock()
            .map_err(|_| ExportError::Permanent("an earlier write panicked".into()))?;
        // One request per line, flushed per request: a reader never sees half a line.
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .map_err(|e| ExportError::Permanent(e.to_string()))?;
        Ok(0)
    }
}

impl Exporter for FileExporter {
    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
        Box::pin(std::future::ready(self.write(batch.payload())))
    }
}
