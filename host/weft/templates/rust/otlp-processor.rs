//! {{name}}: a weft processor of spans and log records (world `weft:plugin/otlp-processor`).
//!
//! Sets the attribute `tagged.by` to the configured `value` on every span and log record.

use weft_guest::{Edits, LogTransform, SpanProcessor, view::Logs, view::Traces};

{{settings}}
impl SpanProcessor for Tagger {
    fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
        for (_, span) in traces.spans() {
            edits.set_attribute(&span, "tagged.by", self.value.as_str());
        }
        Ok(())
    }
}

impl LogTransform for Tagger {
    fn process_logs(&mut self, logs: Logs<'_>, edits: &mut Edits) -> Result<(), Error> {
        for (_, record) in logs.records() {
            edits.set_attribute(&record, "tagged.by", self.value.as_str());
        }
        Ok(())
    }
}

weft_guest::export_otlp_processor!(Tagger);
