//! An owned OTLP `AnyValue`, for values a plugin builds (new attributes, masked strings, parsed
//! bodies), and its encoding.

use crate::view::{Value, ValueRef};
use crate::wire::Encoder;

/// An OTLP `AnyValue` as an ordinary recursive Rust enum.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyValue {
    /// No value.
    Empty,
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An array of values.
    Array(Vec<AnyValue>),
    /// A list of key-value pairs (keys may repeat, order is kept).
    KvList(Vec<(String, AnyValue)>),
}

impl AnyValue {
    /// Writes the value's `AnyValue` message content.
    pub fn encode(&self, e: &mut Encoder) {
        match self {
            AnyValue::Empty => {}
            // A oneof member is written even when it holds its type's default.
            AnyValue::Str(s) => e.bytes_field(1, s.as_bytes()),
            AnyValue::Bool(b) => {
                e.key(2, crate::wire::VARINT);
                e.varint(u64::from(*b));
            }
            AnyValue::Int(i) => {
                e.key(3, crate::wire::VARINT);
                e.varint(*i as u64);
            }
            AnyValue::Double(d) => {
                e.key(4, crate::wire::I64);
                e.raw(&d.to_bits().to_le_bytes());
            }
            AnyValue::Array(items) => {
                e.nested(5, |e| {
                    for v in items {
                        e.nested(1, |e| {
                            v.encode(e);
                            true
                        });
                    }
                    true
                });
            }
            AnyValue::KvList(entries) => {
                e.nested(6, |e| {
                    for (k, v) in entries {
                        e.nested(1, |e| {
                            encode_key_value(e, k, v);
                            true
                        });
                    }
                    true
                });
            }
            AnyValue::Bytes(b) => e.bytes_field(7, b),
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AnyValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Writes a `KeyValue` message's content.
pub fn encode_key_value(e: &mut Encoder, key: &str, value: &AnyValue) {
    e.str_field(1, key);
    e.nested(2, |e| {
        value.encode(e);
        true
    });
}

impl From<Value<'_>> for AnyValue {
    fn from(v: Value<'_>) -> Self {
        match v.get() {
            ValueRef::Empty => AnyValue::Empty,
            ValueRef::Str(s) => AnyValue::Str(s.to_string()),
            ValueRef::Bool(b) => AnyValue::Bool(b),
            ValueRef::Int(i) => AnyValue::Int(i),
            ValueRef::Double(d) => AnyValue::Double(d),
            ValueRef::Bytes(b) => AnyValue::Bytes(b.to_vec()),
            ValueRef::Array(a) => AnyValue::Array(a.values().map(AnyValue::from).collect()),
            ValueRef::KvList(l) => AnyValue::KvList(
                l.values()
                    .map(|kv| (kv.key().to_string(), AnyValue::from(kv.value())))
                    .collect(),
            ),
        }
    }
}

impl From<&str> for AnyValue {
    fn from(s: &str) -> Self {
        AnyValue::Str(s.to_string())
    }
}

impl From<String> for AnyValue {
    fn from(s: String) -> Self {
        AnyValue::Str(s)
    }
}

impl From<i64> for AnyValue {
    fn from(v: i64) -> Self {
        AnyValue::Int(v)
    }
}

impl From<bool> for AnyValue {
    fn from(v: bool) -> Self {
        AnyValue::Bool(v)
    }
}

impl From<f64> for AnyValue {
    fn from(v: f64) -> Self {
        AnyValue::Double(v)
    }
}

/// The protobuf encoding of an `AnyValue` that nests `depth` values deep: arrays of one
/// element each around an `int_value` of `leaf` (`depth` 1 is the int alone). Written without
/// recursion, in time linear in `depth`, so tests and fixtures can make trees deeper than any
/// stack.
pub fn nested_arrays(depth: usize, leaf: i64) -> Vec<u8> {
    use crate::wire::{LEN, varint_len};
    let mut inner = Encoder::default();
    inner.varint_field(3, leaf as u64);
    // Prefixes from the innermost out: AnyValue.array_value (5) holding ArrayValue.values (1).
    let mut len = inner.buf.len();
    let mut prefixes: Vec<(u32, usize)> = Vec::with_capacity(2 * depth.saturating_sub(1));
    for _ in 1..depth {
        for number in [1u32, 5] {
            prefixes.push((number, len));
            len += 1 + varint_len(len as u64);
        }
    }
    let mut out = Encoder::with_capacity(len);
    for &(number, content) in prefixes.iter().rev() {
        out.key(number, LEN);
        out.varint(content as u64);
    }
    out.raw(&inner.buf);
    out.buf
}

/// An OTLP traces request (`TracesData`) of one span, trace id `01…01`, span id `01…01`,
/// named `name`, with `attributes` already encoded as `KeyValue` messages.
pub fn one_span_request<'a>(name: &str, attributes: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut span = Encoder::default();
    span.bytes_field(1, &[1; 16]);
    span.bytes_field(2, &[1; 8]);
    span.str_field(5, name);
    for kv in attributes {
        span.bytes_field(9, kv);
    }
    let mut scope = Encoder::default();
    scope.bytes_field(2, &span.buf);
    let mut resource = Encoder::default();
    resource.bytes_field(2, &scope.buf);
    let mut request = Encoder::default();
    request.bytes_field(1, &resource.buf);
    request.buf
}

/// A `KeyValue` message of `key` and an already encoded `AnyValue`.
pub fn key_value_raw(key: &str, value: &[u8]) -> Vec<u8> {
    let mut kv = Encoder::default();
    kv.str_field(1, key);
    kv.bytes_field(2, value);
    kv.buf
}
