//! {{name}}: a weft log transform (world `weft:plugin/log-transform`).
//!
//! Sets the attribute `tagged.by` to the configured `value` on every log record.

use weft_guest::{Edits, LogTransform, view::Logs};

{{settings}}
impl LogTransform for Tagger {
    fn process_logs(&mut self, logs: Logs<'_>, edits: &mut Edits) -> Result<(), Error> {
        for (_, record) in logs.records() {
            edits.set_attribute(&record, "tagged.by", self.value.as_str());
        }
        Ok(())
    }
}

weft_guest::export_log_transform!(Tagger);
