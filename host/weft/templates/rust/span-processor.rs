//! {{name}}: a weft span processor (world `weft:plugin/span-processor`).
//!
//! Sets the attribute `tagged.by` to the configured `value` on every span.

use weft_guest::{Edits, SpanProcessor, view::Traces};

{{settings}}
impl SpanProcessor for Tagger {
    fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
        for (_, span) in traces.spans() {
            edits.set_attribute(&span, "tagged.by", self.value.as_str());
        }
        Ok(())
    }
}

weft_guest::export_span_processor!(Tagger);
