//! {{name}}: a weft processor of spans and log records (world `weft:plugin/otlp-processor`).
//!
//! Sets the attribute `tagged.by` to the configured `value` on every span and log record.

use weft_guest::{Edits, LogTransform, SpanProcessor, view::Logs, view::Traces};

{{settings}}
{{span}}
{{log}}
weft_guest::export_otlp_processor!(Tagger);
