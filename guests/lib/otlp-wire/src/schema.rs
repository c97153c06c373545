//! The OTLP messages weft reads and edits, as field tables (opentelemetry-proto 1.x: traces,
//! logs and common). Fields not listed (newer additions such as `Resource.entity_refs`) are
//! unknown fields: validated as protobuf, copied as they are, never interpreted.

/// An OTLP message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `TracesData` (the same fields as `ExportTraceServiceRequest`).
    TracesData,
    /// `ResourceSpans`.
    ResourceSpans,
    /// `ScopeSpans`.
    ScopeSpans,
    /// `Span`.
    Span,
    /// `Span.Event`.
    Event,
    /// `Span.Link`.
    Link,
    /// `Status`.
    Status,
    /// `LogsData` (the same fields as `ExportLogsServiceRequest`).
    LogsData,
    /// `ResourceLogs`.
    ResourceLogs,
    /// `ScopeLogs`.
    ScopeLogs,
    /// `LogRecord`.
    LogRecord,
    /// `Resource`.
    Resource,
    /// `InstrumentationScope`.
    Scope,
    /// `KeyValue`.
    KeyValue,
    /// `AnyValue`.
    AnyValue,
    /// `ArrayValue`.
    ArrayValue,
    /// `KeyValueList`.
    KeyValueList,
}

/// What a known field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A UTF-8 string.
    Str,
    /// Bytes.
    Bytes,
    /// An id of `len` bytes; `optional`: empty is allowed too (and absent is).
    Id {
        /// The length.
        len: usize,
        /// Whether empty / absent is allowed.
        optional: bool,
    },
    /// A sub-message.
    Msg(Kind),
    /// A varint.
    Varint,
    /// `fixed64` or `double`.
    Fixed64,
    /// `fixed32`.
    Fixed32,
}

impl Ty {
    /// The wire type the field must have.
    pub fn wire_type(self) -> u8 {
        use crate::wire::{I32, I64, LEN, VARINT};
        match self {
            Ty::Str | Ty::Bytes | Ty::Id { .. } | Ty::Msg(_) => LEN,
            Ty::Varint => VARINT,
            Ty::Fixed64 => I64,
            Ty::Fixed32 => I32,
        }
    }
}

/// Every message type, in declaration order (`Kind as usize` indexes it).
const KINDS: [Kind; 17] = {
    use Kind::*;
    [
        TracesData,
        ResourceSpans,
        ScopeSpans,
        Span,
        Event,
        Link,
        Status,
        LogsData,
        ResourceLogs,
        ScopeLogs,
        LogRecord,
        Resource,
        Scope,
        KeyValue,
        AnyValue,
        ArrayValue,
        KeyValueList,
    ]
};

/// One past the highest field number any OTLP message here has.
const FIELDS: usize = 17;

/// [`Kind::field`] for every kind and number, built at compile time: the lookup the validator
/// and the edit log make for every field they read is one load.
static TABLE: [[Option<(&str, Ty)>; FIELDS]; KINDS.len()] = {
    let mut table = [[None; FIELDS]; KINDS.len()];
    let mut k = 0;
    while k < KINDS.len() {
        let mut n = 0;
        while n < FIELDS {
            table[k][n] = KINDS[k].lookup(n as u32);
            n += 1;
        }
        k += 1;
    }
    table
};

impl Kind {
    /// The field `number` of this message: its name (for errors) and type.
    #[inline]
    pub fn field(self, number: u32) -> Option<(&'static str, Ty)> {
        match TABLE[self as usize].get(number as usize) {
            Some(f) => *f,
            None => None,
        }
    }

    /// The schema itself, as a `match` (what [`TABLE`] is built from).
    const fn lookup(self, number: u32) -> Option<(&'static str, Ty)> {
        use Kind::*;
        use Ty::*;
        const TRACE_ID: Ty = Id {
            len: 16,
            optional: false,
        };
        const SPAN_ID: Ty = Id {
            len: 8,
            optional: false,
        };
        Some(match (self, number) {
            (TracesData, 1) => ("resource_spans", Msg(ResourceSpans)),
            (ResourceSpans, 1) | (ResourceLogs, 1) => ("resource", Msg(Resource)),
            (ResourceSpans, 2) => ("scope_spans", Msg(ScopeSpans)),
            (ResourceSpans | ResourceLogs | ScopeSpans | ScopeLogs, 3) => ("schema_url", Str),
            (ScopeSpans | ScopeLogs, 1) => ("scope", Msg(Scope)),
            (ScopeSpans, 2) => ("spans", Msg(Span)),
            (Span, 1) => ("trace_id", TRACE_ID),
            (Span, 2) => ("span_id", SPAN_ID),
            (Span, 3) => ("trace_state", Str),
            (Span, 4) => (
                "parent_span_id",
                Id {
                    len: 8,
                    optional: true,
                },
            ),
            (Span, 5) => ("name", Str),
            (Span, 6) => ("kind", Varint),
            (Span, 7) => ("start_time_unix_nano", Fixed64),
            (Span, 8) => ("end_time_unix_nano", Fixed64),
            (Span, 9) => ("attributes", Msg(KeyValue)),
            (Span, 10) => ("dropped_attributes_count", Varint),
            (Span, 11) => ("events", Msg(Event)),
            (Span, 12) => ("dropped_events_count", Varint),
            (Span, 13) => ("links", Msg(Link)),
            (Span, 14) => ("dropped_links_count", Varint),
            (Span, 15) => ("status", Msg(Status)),
            (Span, 16) => ("flags", Fixed32),
            (Event, 1) => ("time_unix_nano", Fixed64),
            (Event, 2) => ("name", Str),
            (Event, 3) => ("attributes", Msg(KeyValue)),
            (Event, 4) => ("dropped_attributes_count", Varint),
            (Link, 1) => ("trace_id", TRACE_ID),
            (Link, 2) => ("span_id", SPAN_ID),
            (Link, 3) => ("trace_state", Str),
            (Link, 4) => ("attributes", Msg(KeyValue)),
            (Link, 5) => ("dropped_attributes_count", Varint),
            (Link, 6) => ("flags", Fixed32),
            (Status, 2) => ("message", Str),
            (Status, 3) => ("code", Varint),
            (LogsData, 1) => ("resource_logs", Msg(ResourceLogs)),
            (ResourceLogs, 2) => ("scope_logs", Msg(ScopeLogs)),
            (ScopeLogs, 2) => ("log_records", Msg(LogRecord)),
            (LogRecord, 1) => ("time_unix_nano", Fixed64),
            (LogRecord, 2) => ("severity_number", Varint),
            (LogRecord, 3) => ("severity_text", Str),
            (LogRecord, 5) => ("body", Msg(AnyValue)),
            (LogRecord, 6) => ("attributes", Msg(KeyValue)),
            (LogRecord, 7) => ("dropped_attributes_count", Varint),
            (LogRecord, 8) => ("flags", Fixed32),
            (LogRecord, 9) => (
                "trace_id",
                Id {
                    len: 16,
                    optional: true,
                },
            ),
            (LogRecord, 10) => (
                "span_id",
                Id {
                    len: 8,
                    optional: true,
                },
            ),
            (LogRecord, 11) => ("observed_time_unix_nano", Fixed64),
            (LogRecord, 12) => ("event_name", Str),
            (Resource, 1) => ("attributes", Msg(KeyValue)),
            (Resource, 2) => ("dropped_attributes_count", Varint),
            (Scope, 1) => ("name", Str),
            (Scope, 2) => ("version", Str),
            (Scope, 3) => ("attributes", Msg(KeyValue)),
            (Scope, 4) => ("dropped_attributes_count", Varint),
            (KeyValue, 1) => ("key", Str),
            (KeyValue, 2) => ("value", Msg(AnyValue)),
            // Profiles' string-table indices (opentelemetry-proto 1.8); plain ints elsewhere.
            (KeyValue, 3) => ("key_strindex", Varint),
            (AnyValue, 1) => ("string_value", Str),
            (AnyValue, 2) => ("bool_value", Varint),
            (AnyValue, 3) => ("int_value", Varint),
            (AnyValue, 4) => ("double_value", Fixed64),
            (AnyValue, 5) => ("array_value", Msg(ArrayValue)),
            (AnyValue, 6) => ("kvlist_value", Msg(KeyValueList)),
            (AnyValue, 7) => ("bytes_value", Bytes),
            (AnyValue, 8) => ("string_value_strindex", Varint),
            (ArrayValue, 1) => ("values", Msg(AnyValue)),
            (KeyValueList, 1) => ("values", Msg(KeyValue)),
            _ => return None,
        })
    }

    /// The message's name in errors (`span`, `log_record`, …).
    pub fn name(self) -> &'static str {
        use Kind::*;
        match self {
            TracesData => "traces",
            ResourceSpans => "resource_spans",
            ScopeSpans => "scope_spans",
            Span => "span",
            Event => "event",
            Link => "link",
            Status => "status",
            LogsData => "logs",
            ResourceLogs => "resource_logs",
            ScopeLogs => "scope_logs",
            LogRecord => "log_record",
            Resource => "resource",
            Scope => "scope",
            KeyValue => "key_value",
            AnyValue => "any_value",
            ArrayValue => "array_value",
            KeyValueList => "kvlist_value",
        }
    }

    /// The repeated field whose entries make the message worth keeping: a `ScopeSpans` whose
    /// spans were all dropped is dropped too, and so is a `ResourceSpans` whose scope groups
    /// all were.
    pub fn items_field(self) -> Option<u32> {
        match self {
            Kind::ResourceSpans | Kind::ScopeSpans | Kind::ResourceLogs | Kind::ScopeLogs => {
                Some(2)
            }
            _ => None,
        }
    }

    /// The fields a message must have (ids that may not be absent), checked after its walk.
    pub fn required(self) -> &'static [u32] {
        match self {
            Kind::Span | Kind::Link => &[1, 2],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_schema_and_kinds_are_in_declaration_order() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
            for n in 0..40 {
                let want = if (n as usize) < FIELDS {
                    k.lookup(n)
                } else {
                    None
                };
                assert_eq!(k.field(n), want, "{k:?}.{n}");
                assert!(
                    k.lookup(n).is_none() || (n as usize) < FIELDS,
                    "{k:?}.{n}: raise FIELDS"
                );
            }
        }
    }
}
