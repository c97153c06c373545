//! Lossless conversions between OTLP protobuf types and the WIT records plugins see.
//!
//! Every field of `Span`, `LogRecord`, `Resource`, `InstrumentationScope` and their parts has a
//! WIT counterpart, except `Resource.entity_refs`, which plugins do not see: the host keeps it
//! and puts it back (see [`crate::plugin`]). Encodings that need a rule:
//! - ids: a span's trace id must be 16 bytes and its span id 8; a parent span id and a log's
//!   trace/span id may also be empty (`none`). Other lengths are rejected as malformed OTLP.
//! - `KeyValue.value` absent and `AnyValue` with no value both read as `value::empty` and come
//!   back as an `AnyValue` with no value (the same thing in OTLP's JSON and the Collector).
//! - unknown enum numbers (span kind, status code) read as `unspecified` / `unset`.
//! - nested arrays and key-value lists are flattened into a `value-tree` (parents first).
//! - the profiles-only dictionary references (`KeyValue.key_strindex`,
//!   `AnyValue.string_value_strindex`) point into a profile's string table and have no meaning in
//!   traces or logs: they read as no value and are not sent back.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue as PbKeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord as PbLogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{Span as PbSpan, Status as PbStatus, span};

use crate::bindings::{
    Event, KeyValue, Link, LogRecord, Resource, Scope, Span, SpanKind, Status, StatusCode, TraceId,
    Value, ValueNode, ValueTree,
};
use crate::error::ConvertError;

// ---------- ids ----------

fn trace_id_from(field: &'static str, b: &[u8]) -> Result<TraceId, ConvertError> {
    let arr: [u8; 16] = b.try_into().map_err(|_| ConvertError::IdLength {
        field,
        expected: "16",
        got: b.len(),
    })?;
    let v = u128::from_be_bytes(arr);
    Ok(TraceId {
        hi: (v >> 64) as u64,
        lo: v as u64,
    })
}

fn trace_id_to(id: &TraceId) -> Vec<u8> {
    (((id.hi as u128) << 64) | id.lo as u128)
        .to_be_bytes()
        .to_vec()
}

fn span_id_from(field: &'static str, b: &[u8]) -> Result<u64, ConvertError> {
    let arr: [u8; 8] = b.try_into().map_err(|_| ConvertError::IdLength {
        field,
        expected: "8",
        got: b.len(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn opt_trace_id_from(field: &'static str, b: &[u8]) -> Result<Option<TraceId>, ConvertError> {
    if b.is_empty() {
        return Ok(None);
    }
    trace_id_from(field, b)
        .map(Some)
        .map_err(|_| ConvertError::IdLength {
            field,
            expected: "0 or 16",
            got: b.len(),
        })
}

fn opt_span_id_from(field: &'static str, b: &[u8]) -> Result<Option<u64>, ConvertError> {
    if b.is_empty() {
        return Ok(None);
    }
    span_id_from(field, b)
        .map(Some)
        .map_err(|_| ConvertError::IdLength {
            field,
            expected: "0 or 8",
            got: b.len(),
        })
}

// ---------- values ----------

/// `AnyValue` → WIT `value`. Scalars stay inline; arrays and maps are flattened.
pub fn value_from_pb(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Empty,
        Some(any_value::Value::StringValue(s)) => Value::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Boolean(*b),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        Some(any_value::Value::BytesValue(b)) => Value::Bytes(b.clone()),
        Some(any_value::Value::StringValueStrindex(_)) => Value::Empty,
        Some(any_value::Value::ArrayValue(_)) | Some(any_value::Value::KvlistValue(_)) => {
            let mut nodes = Vec::new();
            flatten(v, &mut nodes);
            Value::Nested(ValueTree { nodes })
        }
    }
}

/// Appends `v` and its descendants in pre-order; returns `v`'s index.
fn flatten(v: &AnyValue, nodes: &mut Vec<ValueNode>) -> u32 {
    let index = nodes.len();
    nodes.push(ValueNode::Empty);
    let node = match &v.value {
        None => ValueNode::Empty,
        Some(any_value::Value::StringValue(s)) => ValueNode::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => ValueNode::Boolean(*b),
        Some(any_value::Value::IntValue(i)) => ValueNode::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => ValueNode::Double(*d),
        Some(any_value::Value::BytesValue(b)) => ValueNode::Bytes(b.clone()),
        Some(any_value::Value::StringValueStrindex(_)) => ValueNode::Empty,
        Some(any_value::Value::ArrayValue(a)) => {
            ValueNode::Array(a.values.iter().map(|c| flatten(c, nodes)).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => ValueNode::Kvlist(
            kv.values
                .iter()
                .map(|e| {
                    let child = match &e.value {
                        Some(c) => flatten(c, nodes),
                        None => flatten(&AnyValue { value: None }, nodes),
                    };
                    (e.key.clone(), child)
                })
                .collect(),
        ),
    };
    nodes[index] = node;
    index as u32
}

/// WIT `value` → `AnyValue`, rejecting malformed trees (a guest can return anything).
pub fn value_to_pb(v: Value) -> Result<AnyValue, ConvertError> {
    let value = match v {
        Value::Empty => None,
        Value::Str(s) => Some(any_value::Value::StringValue(s)),
        Value::Boolean(b) => Some(any_value::Value::BoolValue(b)),
        Value::Int(i) => Some(any_value::Value::IntValue(i)),
        Value::Double(d) => Some(any_value::Value::DoubleValue(d)),
        Value::Bytes(b) => Some(any_value::Value::BytesValue(b)),
        Value::Nested(tree) => {
            if tree.nodes.is_empty() {
                return Err(ConvertError::MalformedTree("a tree has no nodes".into()));
            }
            check_depth(&tree.nodes)?;
            let mut nodes: Vec<Option<ValueNode>> = tree.nodes.into_iter().map(Some).collect();
            return unflatten(&mut nodes, 0, None);
        }
    };
    Ok(AnyValue { value })
}

/// How deeply a plugin on typed records may nest values. The host rebuilds its trees as prost
/// messages, which are encoded and dropped by recursion, so the depth is checked first and
/// without recursion ([`check_depth`]); at this depth the recursion needs a few tens of KiB of
/// stack. A typed plugin cannot be given deeper values anyway: prost decodes requests to at
/// most 100 nested messages, about 47 nested values.
pub const TYPED_MAX_VALUE_DEPTH: usize = 64;

/// Fails when a tree nests deeper than [`TYPED_MAX_VALUE_DEPTH`] (the root is depth 1). One
/// pass in index order: children come after their parents, so a node's depth is final before
/// its children are reached. Indices that break the tree's rules are left to [`unflatten`].
fn check_depth(nodes: &[ValueNode]) -> Result<(), ConvertError> {
    let mut depth = vec![0u32; nodes.len()];
    if let Some(root) = depth.first_mut() {
        *root = 1;
    }
    for (i, node) in nodes.iter().enumerate() {
        let d = depth[i] + 1;
        let children: &mut dyn Iterator<Item = u32> = match node {
            ValueNode::Array(items) => &mut items.iter().copied(),
            ValueNode::Kvlist(entries) => &mut entries.iter().map(|(_, c)| *c),
            _ => continue,
        };
        for c in children {
            let c = c as usize;
            if c <= i || c >= depth.len() {
                continue;
            }
            if d as usize > TYPED_MAX_VALUE_DEPTH {
                return Err(ConvertError::MalformedTree(format!(
                    "values nest more than {TYPED_MAX_VALUE_DEPTH} deep (the limit on typed records)"
                )));
            }
            depth[c] = d;
        }
    }
    Ok(())
}

/// Rebuilds node `i`; children must come after their parent and each node is used once, so the
/// recursion depth and total work are bounded by the number of nodes.
fn unflatten(
    nodes: &mut [Option<ValueNode>],
    i: u32,
    parent: Option<u32>,
) -> Result<AnyValue, ConvertError> {
    if let Some(parent) = parent
        && i <= parent
    {
        return Err(ConvertError::MalformedTree(format!(
            "node {parent} has child {i}, which is not after it"
        )));
    }
    let len = nodes.len();
    let node = nodes
        .get_mut(i as usize)
        .ok_or_else(|| {
            ConvertError::MalformedTree(format!("child index {i} out of range ({len} nodes)"))
        })?
        .take()
        .ok_or_else(|| ConvertError::MalformedTree(format!("node {i} is used twice")))?;
    let value = match node {
        ValueNode::Empty => None,
        ValueNode::Str(s) => Some(any_value::Value::StringValue(s)),
        ValueNode::Boolean(b) => Some(any_value::Value::BoolValue(b)),
        ValueNode::Int(v) => Some(any_value::Value::IntValue(v)),
        ValueNode::Double(d) => Some(any_value::Value::DoubleValue(d)),
        ValueNode::Bytes(b) => Some(any_value::Value::BytesValue(b)),
        ValueNode::Array(items) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: items
                .into_iter()
                .map(|c| unflatten(nodes, c, Some(i)))
                .collect::<Result<_, _>>()?,
        })),
        ValueNode::Kvlist(entries) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: entries
                .into_iter()
                .map(|(key, c)| {
                    Ok(PbKeyValue {
                        key,
                        value: Some(unflatten(nodes, c, Some(i))?),
                        key_strindex: 0,
                    })
                })
                .collect::<Result<_, ConvertError>>()?,
        })),
    };
    Ok(AnyValue { value })
}

fn attrs_from(kvs: &[PbKeyValue]) -> Vec<KeyValue> {
    kvs.iter()
        .map(|kv| KeyValue {
            key: kv.key.clone(),
            value: kv.value.as_ref().map(value_from_pb).unwrap_or(Value::Empty),
        })
        .collect()
}

fn attrs_to(kvs: Vec<KeyValue>) -> Result<Vec<PbKeyValue>, ConvertError> {
    kvs.into_iter()
        .map(|kv| {
            Ok(PbKeyValue {
                key: kv.key,
                value: Some(value_to_pb(kv.value)?),
                key_strindex: 0,
            })
        })
        .collect()
}

// ---------- resource and scope ----------

/// OTLP resource (absent = empty) and its container's schema URL → WIT.
pub fn resource_from_pb(r: Option<&PbResource>, schema_url: &str) -> Resource {
    Resource {
        attributes: r.map(|r| attrs_from(&r.attributes)).unwrap_or_default(),
        dropped_attributes_count: r.map(|r| r.dropped_attributes_count).unwrap_or(0),
        schema_url: schema_url.to_string(),
    }
}

/// WIT resource → OTLP resource and schema URL. `entity_refs` come from the original resource;
/// an empty resource becomes absent again if it was absent.
pub fn resource_to_pb(
    r: Resource,
    original: Option<&PbResource>,
) -> Result<(Option<PbResource>, String), ConvertError> {
    let entity_refs = original.map(|o| o.entity_refs.clone()).unwrap_or_default();
    let empty =
        r.attributes.is_empty() && r.dropped_attributes_count == 0 && entity_refs.is_empty();
    let pb = if original.is_none() && empty {
        None
    } else {
        Some(PbResource {
            attributes: attrs_to(r.attributes)?,
            dropped_attributes_count: r.dropped_attributes_count,
            entity_refs,
        })
    };
    Ok((pb, r.schema_url))
}

/// OTLP scope (absent = empty) and its container's schema URL → WIT.
pub fn scope_from_pb(s: Option<&InstrumentationScope>, schema_url: &str) -> Scope {
    Scope {
        name: s.map(|s| s.name.clone()).unwrap_or_default(),
        version: s.map(|s| s.version.clone()).unwrap_or_default(),
        attributes: s.map(|s| attrs_from(&s.attributes)).unwrap_or_default(),
        dropped_attributes_count: s.map(|s| s.dropped_attributes_count).unwrap_or(0),
        schema_url: schema_url.to_string(),
    }
}

/// WIT scope → OTLP scope and schema URL; an empty scope stays absent if it was absent.
pub fn scope_to_pb(
    s: Scope,
    was_present: bool,
) -> Result<(Option<InstrumentationScope>, String), ConvertError> {
    let empty = s.name.is_empty()
        && s.version.is_empty()
        && s.attributes.is_empty()
        && s.dropped_attributes_count == 0;
    let pb = if !was_present && empty {
        None
    } else {
        Some(InstrumentationScope {
            name: s.name,
            version: s.version,
            attributes: attrs_to(s.attributes)?,
            dropped_attributes_count: s.dropped_attributes_count,
        })
    };
    Ok((pb, s.schema_url))
}

// ---------- spans ----------

fn kind_from(k: i32) -> SpanKind {
    match k {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn kind_to(k: SpanKind) -> i32 {
    match k {
        SpanKind::Unspecified => 0,
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// OTLP span → WIT span.
pub fn span_from_pb(s: &PbSpan) -> Result<Span, ConvertError> {
    Ok(Span {
        trace_id: trace_id_from("span.trace_id", &s.trace_id)?,
        span_id: span_id_from("span.span_id", &s.span_id)?,
        trace_state: s.trace_state.clone(),
        parent_span_id: opt_span_id_from("span.parent_span_id", &s.parent_span_id)?,
        flags: s.flags,
        name: s.name.clone(),
        kind: kind_from(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: attrs_from(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: attrs_from(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| {
                Ok(Link {
                    trace_id: trace_id_from("link.trace_id", &l.trace_id)?,
                    span_id: span_id_from("link.span_id", &l.span_id)?,
                    trace_state: l.trace_state.clone(),
                    attributes: attrs_from(&l.attributes),
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: l.flags,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        dropped_links_count: s.dropped_links_count,
        status: match &s.status {
            None => Status {
                code: StatusCode::Unset,
                message: String::new(),
            },
            Some(st) => Status {
                code: match st.code {
                    1 => StatusCode::Ok,
                    2 => StatusCode::Error,
                    _ => StatusCode::Unset,
                },
                message: st.message.clone(),
            },
        },
    })
}

/// WIT span → OTLP span. A status that is unset with no message becomes absent, as OTel SDKs
/// send it.
pub fn span_to_pb(s: Span) -> Result<PbSpan, ConvertError> {
    let status = match (s.status.code, s.status.message.is_empty()) {
        (StatusCode::Unset, true) => None,
        (code, _) => Some(PbStatus {
            message: s.status.message,
            code: match code {
                StatusCode::Unset => 0,
                StatusCode::Ok => 1,
                StatusCode::Error => 2,
            },
        }),
    };
    Ok(PbSpan {
        trace_id: trace_id_to(&s.trace_id),
        span_id: s.span_id.to_be_bytes().to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s
            .parent_span_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        flags: s.flags,
        name: s.name,
        kind: kind_to(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: attrs_to(s.attributes)?,
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .into_iter()
            .map(|e| {
                Ok(span::Event {
                    time_unix_nano: e.time_unix_nano,
                    name: e.name,
                    attributes: attrs_to(e.attributes)?,
                    dropped_attributes_count: e.dropped_attributes_count,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .into_iter()
            .map(|l| {
                Ok(span::Link {
                    trace_id: trace_id_to(&l.trace_id),
                    span_id: l.span_id.to_be_bytes().to_vec(),
                    trace_state: l.trace_state,
                    attributes: attrs_to(l.attributes)?,
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: l.flags,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        dropped_links_count: s.dropped_links_count,
        status,
    })
}

// ---------- logs ----------

/// OTLP log record → WIT log record.
pub fn log_from_pb(r: &PbLogRecord) -> Result<LogRecord, ConvertError> {
    Ok(LogRecord {
        time_unix_nano: r.time_unix_nano,
        observed_time_unix_nano: r.observed_time_unix_nano,
        severity_number: r.severity_number.max(0) as u32,
        severity_text: r.severity_text.clone(),
        body: r.body.as_ref().map(value_from_pb),
        attributes: attrs_from(&r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
        flags: r.flags,
        trace_id: opt_trace_id_from("log.trace_id", &r.trace_id)?,
        span_id: opt_span_id_from("log.span_id", &r.span_id)?,
        event_name: r.event_name.clone(),
    })
}

/// WIT log record → OTLP log record.
pub fn log_to_pb(r: LogRecord) -> Result<PbLogRecord, ConvertError> {
    Ok(PbLogRecord {
        time_unix_nano: r.time_unix_nano,
        observed_time_unix_nano: r.observed_time_unix_nano,
        severity_number: r.severity_number.min(i32::MAX as u32) as i32,
        severity_text: r.severity_text,
        body: r.body.map(value_to_pb).transpose()?,
        attributes: attrs_to(r.attributes)?,
        dropped_attributes_count: r.dropped_attributes_count,
        flags: r.flags,
        trace_id: r.trace_id.map(|t| trace_id_to(&t)).unwrap_or_default(),
        span_id: r
            .span_id
            .map(|s| s.to_be_bytes().to_vec())
            .unwrap_or_default(),
        event_name: r.event_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `depth` nested arrays ending in an int, as a guest would flatten it.
    fn chain(depth: usize) -> Value {
        let mut nodes: Vec<ValueNode> = (1..depth as u32)
            .map(|i| ValueNode::Array(vec![i]))
            .collect();
        nodes.push(ValueNode::Int(1));
        Value::Nested(ValueTree { nodes })
    }

    #[test]
    fn typed_trees_deeper_than_the_limit_are_malformed_not_a_stack_overflow() {
        // The finding: a 4 000-deep chain from a guest overflowed a tokio worker's stack. Up to
        // the limit the tree converts; past it, and at 4 000 and 1 000 000 levels, it is
        // malformed output, found without recursion.
        let ok = value_to_pb(chain(TYPED_MAX_VALUE_DEPTH)).expect("at the limit");
        let mut depth = 0;
        let mut v = Some(&ok);
        while let Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(a)),
        }) = v
        {
            depth += 1;
            v = a.values.first();
        }
        assert_eq!(depth, TYPED_MAX_VALUE_DEPTH - 1, "arrays above the int");
        for depth in [TYPED_MAX_VALUE_DEPTH + 1, 4_000, 1_000_000] {
            let err = value_to_pb(chain(depth)).unwrap_err();
            assert!(
                err.to_string().contains("nest more than 64 deep"),
                "{depth}: {err}"
            );
        }
        // An empty array at the limit has no children: not too deep.
        let mut nodes: Vec<ValueNode> = (1..TYPED_MAX_VALUE_DEPTH as u32)
            .map(|i| ValueNode::Array(vec![i]))
            .collect();
        nodes.push(ValueNode::Array(vec![]));
        assert!(value_to_pb(Value::Nested(ValueTree { nodes })).is_ok());
    }

    #[test]
    fn malformed_trees_are_rejected_not_followed() {
        let backwards = Value::Nested(ValueTree {
            nodes: vec![ValueNode::Array(vec![0])],
        });
        assert!(matches!(
            value_to_pb(backwards),
            Err(ConvertError::MalformedTree(_))
        ));
        let out_of_range = Value::Nested(ValueTree {
            nodes: vec![ValueNode::Array(vec![5])],
        });
        assert!(matches!(
            value_to_pb(out_of_range),
            Err(ConvertError::MalformedTree(_))
        ));
        let shared_child = Value::Nested(ValueTree {
            nodes: vec![ValueNode::Array(vec![1, 1]), ValueNode::Int(1)],
        });
        assert!(matches!(
            value_to_pb(shared_child),
            Err(ConvertError::MalformedTree(_))
        ));
        let empty = Value::Nested(ValueTree { nodes: vec![] });
        assert!(matches!(
            value_to_pb(empty),
            Err(ConvertError::MalformedTree(_))
        ));
    }

    #[test]
    fn ids_of_the_wrong_length_are_rejected() {
        let span = PbSpan {
            trace_id: vec![1; 15],
            span_id: vec![1; 8],
            ..Default::default()
        };
        assert_eq!(
            span_from_pb(&span).err(),
            Some(ConvertError::IdLength {
                field: "span.trace_id",
                expected: "16",
                got: 15
            })
        );
    }
}
