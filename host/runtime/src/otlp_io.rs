//! Reading and writing OTLP payloads in files: protobuf, or JSON as the Collector's file
//! exporter writes it (camelCase field names, hex ids, one request per line or one document).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

pub use crate::signal::OtlpData;

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// JSON that is not OTLP/JSON.
    #[error("invalid OTLP/JSON{line}: {message}")]
    Json {
        /// ` (line N)` for JSON lines, else empty.
        line: String,
        /// What is wrong.
        message: String,
    },
    /// Bytes that decode as neither a traces nor a logs request.
    #[error("not an OTLP protobuf traces or logs request: {0}")]
    Protobuf(String),
    /// A file mixing traces and logs.
    #[error("the input mixes traces and logs; give one signal per file")]
    Mixed,
    /// Nothing in the input.
    #[error("the input is empty")]
    Empty,
}

impl OtlpData {
    /// OTLP/JSON, pretty-printed, without fields at their default value (as the Collector's
    /// file exporter writes it).
    pub fn to_json(&self) -> String {
        let value = match self {
            OtlpData::Traces(t) => serde_json::to_value(t),
            OtlpData::Logs(l) => serde_json::to_value(l),
        };
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        match value {
            Ok(mut v) => {
                strip_defaults(&mut v);
                serde_json::to_string_pretty(&v).unwrap_or_default()
            }
            Err(e) => format!("{{\"error\": \"{e}\"}}"),
        }
    }

    /// OTLP protobuf bytes.
    pub fn to_protobuf(&self) -> Vec<u8> {
        match self {
            OtlpData::Traces(t) => t.encode_to_vec(),
            OtlpData::Logs(l) => l.encode_to_vec(),
        }
    }
}

/// The keys of an `AnyValue`: their content is data, kept even when it is `""`, `0` or `false`.
const ANY_VALUE_KEYS: [&str; 7] = [
    "stringValue",
    "boolValue",
    "intValue",
    "doubleValue",
    "bytesValue",
    "arrayValue",
    "kvlistValue",
];

/// Removes object fields holding a default (`""`, `0`, `"0"`, `false`, `[]`, `{}`), recursively,
/// except the content of `AnyValue`s. OTLP/JSON readers treat an absent field as its default.
fn strip_defaults(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if !ANY_VALUE_KEYS.contains(&k.as_str()) || child.is_object() {
                    strip_defaults(child);
                } else if let Value::Array(items) = child {
                    items.iter_mut().for_each(strip_defaults);
                }
            }
            map.retain(|k, child| ANY_VALUE_KEYS.contains(&k.as_str()) || !is_default(child));
        }
        Value::Array(items) => items.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

fn is_default(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty() || s == "0",
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Reads a payload: JSON if it starts with `{` (one document, or JSON lines as the Collector's
/// file exporter writes, merged), else protobuf. The signal is detected from the content.
pub fn read_otlp(bytes: &[u8]) -> Result<OtlpData, InputError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(InputError::Empty),
        Some(b'{') => read_json(bytes),
        Some(_) => read_protobuf(bytes),
    }
}

fn read_json(bytes: &[u8]) -> Result<OtlpData, InputError> {
    let text = std::str::from_utf8(bytes).map_err(|e| InputError::Json {
        line: String::new(),
        message: e.to_string(),
    })?;
    // One document (possibly pretty-printed), or one document per line.
    let docs: Vec<(String, &str)> = if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        vec![(String::new(), text)]
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (format!(" (line {})", i + 1), l))
            .collect()
    };
    let mut out: Option<OtlpData> = None;
    for (line, doc) in docs {
        let value: serde_json::Value = serde_json::from_str(doc).map_err(|e| InputError::Json {
            line: line.clone(),
            message: e.to_string(),
        })?;
        let err = |e: serde_json::Error| InputError::Json {
            line: line.clone(),
            message: e.to_string(),
        };
        let item = if value.get("resourceSpans").is_some() {
            OtlpData::Traces(serde_json::from_value(value).map_err(err)?)
        } else if value.get("resourceLogs").is_some() {
            OtlpData::Logs(serde_json::from_value(value).map_err(err)?)
        } else {
            return Err(InputError::Json {
                line,
                message: "expected an object with `resourceSpans` or `resourceLogs`".into(),
            });
        };
        out = Some(match (out, item) {
            (None, item) => item,
            (Some(OtlpData::Traces(mut a)), OtlpData::Traces(b)) => {
                a.resource_spans.extend(b.resource_spans);
                OtlpData::Traces(a)
            }
            (Some(OtlpData::Logs(mut a)), OtlpData::Logs(b)) => {
                a.resource_logs.extend(b.resource_logs);
                OtlpData::Logs(a)
            }
            _ => return Err(InputError::Mixed),
        });
    }
    out.ok_or(InputError::Empty)
}

/// Both requests put their payload in field 1, so either decoder accepts the other's bytes;
/// prost drops fields it does not know, so the right one is the one that re-encodes to the
/// same length.
fn read_protobuf(bytes: &[u8]) -> Result<OtlpData, InputError> {
    let traces = ExportTraceServiceRequest::decode(bytes);
    if let Ok(t) = &traces
        && t.encoded_len() == bytes.len()
        && !t.resource_spans.is_empty()
    {
        return Ok(OtlpData::Traces(t.clone()));
    }
    let logs = ExportLogsServiceRequest::decode(bytes);
    if let Ok(l) = &logs
        && l.encoded_len() == bytes.len()
        && !l.resource_logs.is_empty()
    {
        return Ok(OtlpData::Logs(l.clone()));
    }
    Err(InputError::Protobuf(match (traces, logs) {
        (Err(e), _) | (_, Err(e)) => e.to_string(),
        _ => "it decodes, but as neither request without losing fields".into(),
    }))
}
