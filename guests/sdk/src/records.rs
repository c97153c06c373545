//! Owned records on the batch ABI, for plugins that would rather change values than record
//! edits: [`span_batches`] decodes a request into [`SpanBatch`]es (one per resource and scope,
//! the typed world's unit), [`encode_span_batches`] encodes them back, and
//! [`Edits::replace_all`](crate::Edits::replace_all) returns the result. Decoding and encoding
//! run inside the guest, one pass each, with no host calls: cheaper than typed records cross the
//! boundary, dearer than views and edits, which copy what they do not change.
//!
//! What the records have no field for (a resource's `entity_refs`, unknown fields) is not kept.

use weft_otlp_wire::view::{self, HasAttributes, ValueRef};
use weft_otlp_wire::{AnyValue, Encoder, value::encode_key_value};

use crate::{
    Event, KeyValue, Link, LogBatch, LogRecord, Resource, Scope, Span, SpanBatch, SpanKind, Status,
    StatusCode, TraceId, Value,
};

fn trace_id(b: [u8; 16]) -> TraceId {
    let v = u128::from_be_bytes(b);
    TraceId {
        hi: (v >> 64) as u64,
        lo: v as u64,
    }
}

fn attrs<'a, A: HasAttributes<'a>>(owner: &A) -> Vec<KeyValue> {
    owner
        .attributes()
        .map(|kv| KeyValue {
            key: kv.key().to_string(),
            value: value(kv.value()),
        })
        .collect()
}

fn value(v: view::Value<'_>) -> Value {
    match v.get() {
        ValueRef::Empty => Value::Empty,
        ValueRef::Str(s) => Value::Str(s.to_string()),
        ValueRef::Bool(b) => Value::Boolean(b),
        ValueRef::Int(i) => Value::Int(i),
        ValueRef::Double(d) => Value::Double(d),
        ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        ValueRef::Array(_) | ValueRef::KvList(_) => Value::from(AnyValue::from(v)),
    }
}

fn resource(r: view::Resource<'_>, schema_url: &str) -> Resource {
    Resource {
        attributes: attrs(&r),
        dropped_attributes_count: r.dropped_attributes_count(),
        schema_url: schema_url.to_string(),
    }
}

fn scope(s: view::Scope<'_>, schema_url: &str) -> Scope {
    Scope {
        name: s.name().to_string(),
        version: s.version().to_string(),
        attributes: attrs(&s),
        dropped_attributes_count: s.dropped_attributes_count(),
        schema_url: schema_url.to_string(),
    }
}

fn kind(k: view::SpanKind) -> SpanKind {
    match k {
        view::SpanKind::Unspecified => SpanKind::Unspecified,
        view::SpanKind::Internal => SpanKind::Internal,
        view::SpanKind::Server => SpanKind::Server,
        view::SpanKind::Client => SpanKind::Client,
        view::SpanKind::Producer => SpanKind::Producer,
        view::SpanKind::Consumer => SpanKind::Consumer,
    }
}

/// One span as an owned record.
pub fn span(s: view::Span<'_>) -> Span {
    Span {
        trace_id: trace_id(s.trace_id()),
        span_id: u64::from_be_bytes(s.span_id()),
        trace_state: s.trace_state().to_string(),
        parent_span_id: s.parent_span_id().map(u64::from_be_bytes),
        flags: s.flags(),
        name: s.name().to_string(),
        kind: kind(s.kind()),
        start_time_unix_nano: s.start_time_unix_nano(),
        end_time_unix_nano: s.end_time_unix_nano(),
        attributes: attrs(&s),
        dropped_attributes_count: s.dropped_attributes_count(),
        events: s
            .events()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano(),
                name: e.name().to_string(),
                attributes: attrs(&e),
                dropped_attributes_count: e.dropped_attributes_count(),
            })
            .collect(),
        dropped_events_count: s.dropped_events_count(),
        links: s
            .links()
            .map(|l| Link {
                trace_id: trace_id(l.trace_id()),
                span_id: u64::from_be_bytes(l.span_id()),
                trace_state: l.trace_state().to_string(),
                attributes: attrs(&l),
                dropped_attributes_count: l.dropped_attributes_count(),
                flags: l.flags(),
            })
            .collect(),
        dropped_links_count: s.dropped_links_count(),
        status: Status {
            code: match s.status_code() {
                1 => StatusCode::Ok,
                2 => StatusCode::Error,
                _ => StatusCode::Unset,
            },
            message: s.status_message().to_string(),
        },
    }
}

/// One log record as an owned record.
pub fn log_record(r: view::LogRecord<'_>) -> LogRecord {
    LogRecord {
        time_unix_nano: r.time_unix_nano(),
        observed_time_unix_nano: r.observed_time_unix_nano(),
        severity_number: r.severity_number() as u32,
        severity_text: r.severity_text().to_string(),
        body: r.body().map(value),
        attributes: attrs(&r),
        dropped_attributes_count: r.dropped_attributes_count(),
        flags: r.flags(),
        trace_id: r.trace_id().map(trace_id),
        span_id: r.span_id().map(u64::from_be_bytes),
        event_name: r.event_name().to_string(),
    }
}

/// The request as owned batches, one per (resource, scope), in order.
pub fn span_batches(traces: view::Traces<'_>) -> Vec<SpanBatch> {
    let mut out = Vec::new();
    for rs in traces.resource_spans() {
        let res = resource(rs.resource(), rs.schema_url());
        for ss in rs.scope_spans() {
            out.push(SpanBatch {
                resource: res.clone(),
                scope: scope(ss.scope(), ss.schema_url()),
                spans: ss.spans().map(span).collect(),
            });
        }
    }
    out
}

/// The request as owned batches, one per (resource, scope), in order.
pub fn log_batches(logs: view::Logs<'_>) -> Vec<LogBatch> {
    let mut out = Vec::new();
    for rl in logs.resource_logs() {
        let res = resource(rl.resource(), rl.schema_url());
        for sl in rl.scope_logs() {
            out.push(LogBatch {
                resource: res.clone(),
                scope: scope(sl.scope(), sl.schema_url()),
                records: sl.log_records().map(log_record).collect(),
            });
        }
    }
    out
}

fn put_attrs(e: &mut Encoder, field: u32, attrs: &[KeyValue]) {
    for kv in attrs {
        e.nested(field, |e| {
            let v = AnyValue::from(kv.value.clone());
            encode_key_value(e, &kv.key, &v);
            true
        });
    }
}

fn put_value(e: &mut Encoder, field: u32, v: &Value) {
    e.nested(field, |e| {
        AnyValue::from(v.clone()).encode(e);
        true
    });
}

fn trace_id_bytes(t: &TraceId) -> [u8; 16] {
    ((u128::from(t.hi) << 64) | u128::from(t.lo)).to_be_bytes()
}

fn put_resource(e: &mut Encoder, r: &Resource) {
    // A resource with nothing in it is written as absent.
    if !r.attributes.is_empty() || r.dropped_attributes_count != 0 {
        e.nested(1, |e| {
            put_attrs(e, 1, &r.attributes);
            e.varint_field(2, u64::from(r.dropped_attributes_count));
            true
        });
    }
}

fn put_scope(e: &mut Encoder, s: &Scope) {
    if !s.name.is_empty()
        || !s.version.is_empty()
        || !s.attributes.is_empty()
        || s.dropped_attributes_count != 0
    {
        e.nested(1, |e| {
            e.str_field(1, &s.name);
            e.str_field(2, &s.version);
            put_attrs(e, 3, &s.attributes);
            e.varint_field(4, u64::from(s.dropped_attributes_count));
            true
        });
    }
}

fn put_span(e: &mut Encoder, s: &Span) {
    e.bytes_field(1, &trace_id_bytes(&s.trace_id));
    e.bytes_field(2, &s.span_id.to_be_bytes());
    e.str_field(3, &s.trace_state);
    if let Some(p) = s.parent_span_id {
        e.bytes_field(4, &p.to_be_bytes());
    }
    e.str_field(5, &s.name);
    e.varint_field(6, s.kind as u64);
    e.fixed64_field(7, s.start_time_unix_nano);
    e.fixed64_field(8, s.end_time_unix_nano);
    put_attrs(e, 9, &s.attributes);
    e.varint_field(10, u64::from(s.dropped_attributes_count));
    for ev in &s.events {
        e.nested(11, |e| {
            e.fixed64_field(1, ev.time_unix_nano);
            e.str_field(2, &ev.name);
            put_attrs(e, 3, &ev.attributes);
            e.varint_field(4, u64::from(ev.dropped_attributes_count));
            true
        });
    }
    e.varint_field(12, u64::from(s.dropped_events_count));
    for l in &s.links {
        e.nested(13, |e| {
            e.bytes_field(1, &trace_id_bytes(&l.trace_id));
            e.bytes_field(2, &l.span_id.to_be_bytes());
            e.str_field(3, &l.trace_state);
            put_attrs(e, 4, &l.attributes);
            e.varint_field(5, u64::from(l.dropped_attributes_count));
            e.fixed32_field(6, l.flags);
            true
        });
    }
    e.varint_field(14, u64::from(s.dropped_links_count));
    if s.status.code != StatusCode::Unset || !s.status.message.is_empty() {
        e.nested(15, |e| {
            e.str_field(2, &s.status.message);
            e.varint_field(3, s.status.code as u64);
            true
        });
    }
    e.fixed32_field(16, s.flags);
}

fn put_log(e: &mut Encoder, r: &LogRecord) {
    e.fixed64_field(1, r.time_unix_nano);
    e.varint_field(2, u64::from(r.severity_number));
    e.str_field(3, &r.severity_text);
    if let Some(b) = &r.body {
        put_value(e, 5, b);
    }
    put_attrs(e, 6, &r.attributes);
    e.varint_field(7, u64::from(r.dropped_attributes_count));
    e.fixed32_field(8, r.flags);
    if let Some(t) = &r.trace_id {
        e.bytes_field(9, &trace_id_bytes(t));
    }
    if let Some(s) = r.span_id {
        e.bytes_field(10, &s.to_be_bytes());
    }
    e.fixed64_field(11, r.observed_time_unix_nano);
    e.str_field(12, &r.event_name);
}

/// Encodes batches as one request; consecutive batches with equal resources share one
/// resource entry.
fn encode_groups<B>(
    batches: &[B],
    resource_of: impl Fn(&B) -> &Resource,
    put_scope_group: impl Fn(&mut Encoder, &B),
) -> Vec<u8> {
    let mut e = Encoder::with_capacity(batches.len() * 256);
    let mut i = 0;
    while i < batches.len() {
        let res = resource_of(&batches[i]);
        let mut j = i;
        while j < batches.len() && resource_of(&batches[j]) == res {
            j += 1;
        }
        e.nested(1, |e| {
            put_resource(e, res);
            for b in &batches[i..j] {
                e.nested(2, |e| {
                    put_scope_group(e, b);
                    true
                });
            }
            e.str_field(3, &res.schema_url);
            true
        });
        i = j;
    }
    e.buf
}

/// Encodes batches as an OTLP traces request (protobuf), for
/// [`Edits::replace_all`](crate::Edits::replace_all).
pub fn encode_span_batches(batches: &[SpanBatch]) -> Vec<u8> {
    encode_groups(
        batches,
        |b| &b.resource,
        |e, b| {
            put_scope(e, &b.scope);
            for s in &b.spans {
                e.nested(2, |e| {
                    put_span(e, s);
                    true
                });
            }
            e.str_field(3, &b.scope.schema_url);
        },
    )
}

/// Encodes batches as an OTLP logs request (protobuf).
pub fn encode_log_batches(batches: &[LogBatch]) -> Vec<u8> {
    encode_groups(
        batches,
        |b| &b.resource,
        |e, b| {
            put_scope(e, &b.scope);
            for r in &b.records {
                e.nested(2, |e| {
                    put_log(e, r);
                    true
                });
            }
            e.str_field(3, &b.scope.schema_url);
        },
    )
}

/// Replaces the span `at` of the request with `span` (in `edits`).
pub fn replace_span(edits: &mut crate::Edits, at: &view::Span<'_>, span: &Span) {
    let mut e = Encoder::default();
    put_span(&mut e, span);
    edits.replace(at, e.buf);
}

/// Replaces the log record `at` of the request with `record` (in `edits`).
pub fn replace_log_record(edits: &mut crate::Edits, at: &view::LogRecord<'_>, record: &LogRecord) {
    let mut e = Encoder::default();
    put_log(&mut e, record);
    edits.replace(at, e.buf);
}
