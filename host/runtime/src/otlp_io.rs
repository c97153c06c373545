//! Reading and writing OTLP payloads in files: protobuf, or JSON as the Collector's file
//! exporter writes it (camelCase field names, hex ids, one request per line or one document).

pub use crate::signal::OtlpData;
use crate::signal::{OtlpRequest, Signal};

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
    /// OTLP that breaks the specification's rules (an id of the wrong length, say).
    #[error("malformed OTLP: {0}")]
    Invalid(#[from] crate::WireError),
}

impl OtlpData {
    /// OTLP/JSON, pretty-printed, without fields at their default value (as the Collector's
    /// file exporter writes it).
    pub fn to_json(&self) -> String {
        let value = match self.decode() {
            Ok(OtlpRequest::Traces(t)) => serde_json::to_value(t),
            Ok(OtlpRequest::Logs(l)) => serde_json::to_value(l),
            Err(e) => return format!("{{\"error\": \"{e}\"}}"),
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
        self.bytes().to_vec()
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
    let mut out: Option<OtlpRequest> = None;
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
            OtlpRequest::Traces(serde_json::from_value(value).map_err(err)?)
        } else if value.get("resourceLogs").is_some() {
            OtlpRequest::Logs(serde_json::from_value(value).map_err(err)?)
        } else {
            return Err(InputError::Json {
                line,
                message: "expected an object with `resourceSpans` or `resourceLogs`".into(),
            });
        };
        out = Some(match (out, item) {
            (None, item) => item,
            (Some(OtlpRequest::Traces(mut a)), OtlpRequest::Traces(b)) => {
                a.resource_spans.extend(b.resource_spans);
                OtlpRequest::Traces(a)
            }
            (Some(OtlpRequest::Logs(mut a)), OtlpRequest::Logs(b)) => {
                a.resource_logs.extend(b.resource_logs);
                OtlpRequest::Logs(a)
            }
            _ => return Err(InputError::Mixed),
        });
    }
    Ok(OtlpData::from_request(&out.ok_or(InputError::Empty)?)?)
}

/// Both requests put their payload in field 1, so the bytes are validated as each; a logs
/// request is refused as traces by its first record (a span's ids are length-delimited where a
/// record's timestamps are fixed64), and the reverse. One that has items wins.
fn read_protobuf(bytes: &[u8]) -> Result<OtlpData, InputError> {
    let traces = OtlpData::from_protobuf(Signal::Traces, bytes.to_vec());
    let logs = OtlpData::from_protobuf(Signal::Logs, bytes.to_vec());
    match (traces, logs) {
        (Ok(t), _) if t.items() > 0 => Ok(t),
        (_, Ok(l)) if l.items() > 0 => Ok(l),
        (Ok(t), _) => Ok(t),
        (_, Ok(l)) => Ok(l),
        (Err(e), Err(_)) => Err(InputError::Protobuf(e.to_string())),
    }
}
