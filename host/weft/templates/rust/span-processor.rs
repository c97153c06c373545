//! {{name}}: a weft span processor (world `weft:plugin/span-processor`).
//!
//! Sets the attribute `tagged.by` to the configured `value` on every span.

use weft_guest::{Edits, SpanProcessor, view::Traces};

{{settings}}
{{span}}
weft_guest::export_span_processor!(Tagger);
