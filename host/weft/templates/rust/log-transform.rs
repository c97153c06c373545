//! {{name}}: a weft log transform (world `weft:plugin/log-transform`).
//!
//! Sets the attribute `tagged.by` to the configured `value` on every log record.

use weft_guest::{Edits, LogTransform, view::Logs};

{{settings}}
{{log}}
weft_guest::export_log_transform!(Tagger);
