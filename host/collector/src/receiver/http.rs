//! The OTLP/HTTP receiver (`POST /v1/traces`, `POST /v1/logs`; protobuf or JSON; gzip), on
//! hyper's HTTP/1.1 ([`weft_runtime::net`]).
//!
//! A protobuf body is validated into the payload as it is (no decode, no copy of the body);
//! an OTLP/JSON body is parsed into the prost type and encoded once. Malformed OTLP is a 400,
//! and so is JSON whose top level is not an object. A `Content-Length` over 4x the limit is a
//! 413 before any of the body is read; a body that does not arrive within `read_timeout` is a 408.
//! Both close the connection: the rest of such a body is never read.

use std::io::Read as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use weft_runtime::net::{Resp, respond};

use crate::pipeline::{ConsumeError, Payload, Pipeline};

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// What the OTLP/HTTP receiver serves.
#[derive(Clone)]
pub struct OtlpHttp {
    /// The traces pipeline, if any.
    pub traces: Option<Arc<Pipeline>>,
    /// The logs pipeline, if any.
    pub logs: Option<Arc<Pipeline>>,
    /// Largest body accepted, after decompression.
    pub max_body: usize,
    /// Time for the whole body to arrive once the headers did.
    pub read_timeout: std::time::Duration,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

/// An error response in the request's encoding (protobuf when unknown), as OTLP/HTTP asks.
fn error(status: StatusCode, grpc_code: i32, message: String, enc: Encoding) -> Resp {
    let s = RpcStatus {
        code: grpc_code,
        message,
    };
    match enc {
        Encoding::Json => respond(
            status,
            "application/json",
            serde_json::json!({"code": s.code, "message": s.message})
                .to_string()
                .into_bytes(),
        ),
        Encoding::Protobuf => respond(status, "application/x-protobuf", s.encode_to_vec()),
    }
}

impl OtlpHttp {
    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        let content_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let enc = if content_type.starts_with("application/json") {
            Encoding::Json
        } else {
            Encoding::Protobuf
        };
        let pipeline = match req.uri().path() {
            "/v1/traces" => self.traces.clone(),
            "/v1/logs" => self.logs.clone(),
            other => {
                return error(
                    StatusCode::NOT_FOUND,
                    5,
                    format!("no OTLP endpoint at {other}"),
                    enc,
                );
            }
        };
        if req.method() != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, 12, "use POST".into(), enc);
        }
        if !content_type.starts_with("application/json")
            && !content_type.starts_with("application/x-protobuf")
        {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                format!(
                    "content type `{content_type}`: use application/x-protobuf or application/json"
                ),
                enc,
            );
        }
        let Some(pipeline) = pipeline else {
            return error(
                StatusCode::NOT_FOUND,
                12,
                "no pipeline for this signal".into(),
                enc,
            );
        };
        let gzip = match req
            .headers()
            .get(hyper::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
        {
            None | Some("identity") => false,
            Some("gzip") => true,
            Some(other) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    3,
                    format!("content encoding `{other}`: use gzip"),
                    enc,
                );
            }
        };
        // A body announced far larger than the limit is refused before it is read: reading it
        // (1 TB, say) would hold the connection for as long as the client likes. Up to 4x the
        // limit it is read and dropped below, so that the client, still writing, gets the 413
        // rather than a reset.
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > (self.max_body as u64).saturating_mul(4)) {
            return closing(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                8,
                format!("request body is larger than {} bytes", self.max_body),
                enc,
            ));
        }
        // The compressed body is limited too: it can never usefully be larger than the limit.
        // Past the limit the rest is read and dropped (up to 4x), so the client gets the 413
        // instead of a connection reset.
        let mut incoming = req.into_body();
        // Sized from the Content-Length (up to 1 MiB: a client's header alone must not make weft
        // allocate the whole limit); spare capacity left by doubling is given back below, since
        // the payload keeps this buffer and only its length is counted as held.
        let mut buf = Vec::with_capacity(
            declared
                .map_or(0, |n| n as usize)
                .min(self.max_body)
                .min(1 << 20),
        );
        let mut total = 0usize;
        let read = async {
            while let Some(frame) = incoming.frame().await {
                let Ok(frame) = frame else {
                    return Err(());
                };
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    if total <= self.max_body {
                        buf.extend_from_slice(&data);
                    } else if total > self.max_body.saturating_mul(4) {
                        break;
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.read_timeout, read).await {
            Ok(Ok(())) => {}
            Ok(Err(())) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    3,
                    "request body ended early".into(),
                    enc,
                );
            }
            Err(_) => {
                return closing(error(
                    StatusCode::REQUEST_TIMEOUT,
                    4,
                    format!(
                        "the request body did not arrive within {:?} (read_timeout)",
                        self.read_timeout
                    ),
                    enc,
                ));
            }
        }
        if total > self.max_body {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                8,
                format!("request body is larger than {} bytes", self.max_body),
                enc,
            );
        }
        if buf.capacity() > buf.len() + buf.len() / 8 {
            buf.shrink_to_fit();
        }
        let body = Bytes::from(buf);
        let body = if gzip {
            // Read at most one byte past the limit: a gzip bomb stops there.
            let mut out = Vec::new();
            let decoder = flate2::read::GzDecoder::new(&body[..]);
            match decoder.take(self.max_body as u64 + 1).read_to_end(&mut out) {
                Ok(_) if out.len() > self.max_body => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        8,
                        format!("decompressed body exceeds {} bytes", self.max_body),
                        enc,
                    );
                }
                Ok(_) => {
                    out.shrink_to_fit();
                    Bytes::from(out)
                }
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        3,
                        format!("invalid gzip body: {e}"),
                        enc,
                    );
                }
            }
        } else {
            body
        };
        let payload = match decode(&pipeline, body, enc) {
            Ok(p) => p,
            Err(message) => return error(StatusCode::BAD_REQUEST, 3, message, enc),
        };
        match pipeline.consume(payload) {
            Ok(rejected) => {
                let (ct, bytes) = match (enc, pipeline.signal) {
                    (Encoding::Json, weft_runtime::Signal::Traces) => (
                        "application/json",
                        serde_json::to_vec(&rejected.traces_response()).unwrap_or_default(),
                    ),
                    (Encoding::Json, weft_runtime::Signal::Logs) => (
                        "application/json",
                        serde_json::to_vec(&rejected.logs_response()).unwrap_or_default(),
                    ),
                    (Encoding::Protobuf, weft_runtime::Signal::Traces) => (
                        "application/x-protobuf",
                        rejected.traces_response().encode_to_vec(),
                    ),
                    (Encoding::Protobuf, weft_runtime::Signal::Logs) => (
                        "application/x-protobuf",
                        rejected.logs_response().encode_to_vec(),
                    ),
                };
                respond(StatusCode::OK, ct, bytes)
            }
            Err(e @ ConsumeError::Invalid(_)) => {
                error(StatusCode::BAD_REQUEST, 3, e.to_string(), enc)
            }
            Err(e) => {
                let retry_after = match &e {
                    ConsumeError::MemoryLimited { retry_after, .. } => retry_after.as_secs().max(1),
                    _ => 1,
                };
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, 14, e.to_string(), enc);
                r.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from(retry_after),
                );
                r
            }
        }
    }
}

/// `response` with `Connection: close`: hyper then closes the connection once it is written,
/// without reading the rest of a request body nobody wants.
fn closing(mut response: Resp) -> Resp {
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// OTLP/JSON's top level is an `Export*ServiceRequest` object. serde would also read a struct
/// from an array (`[]` as an empty request), which no OTLP client sends and the Collector
/// refuses; so the first byte that is not whitespace must open an object.
fn check_json_object(body: &[u8]) -> Result<(), String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        first => Err(format!(
            "invalid OTLP/JSON: the top level must be an object like {{\"resourceSpans\": [...]}} \
             or {{\"resourceLogs\": [...]}}, not {}",
            match first {
                None => "an empty body",
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b'n') => "null",
                Some(b't' | b'f') => "a boolean",
                Some(_) => "a number or other value",
            }
        )),
    }
}

/// The request `body` as a payload of the pipeline's signal. Protobuf is validated as it is,
/// never decoded (the body's buffer becomes the payload's); OTLP/JSON is parsed into the prost
/// type and encoded once. The error is the message of the 400.
fn decode(pipeline: &Pipeline, body: Bytes, enc: Encoding) -> Result<Payload, String> {
    use weft_runtime::Signal;
    let invalid = |e: weft_runtime::WireError| ConsumeError::Invalid(e.to_string()).to_string();
    let json = |e: serde_json::Error| format!("invalid OTLP/JSON: {e}");
    if enc == Encoding::Json {
        check_json_object(&body)?;
    }
    match (pipeline.signal, enc) {
        (signal, Encoding::Protobuf) => Payload::from_protobuf(signal, body).map_err(invalid),
        (Signal::Traces, Encoding::Json) => {
            let req: ExportTraceServiceRequest = serde_json::from_slice(&body).map_err(json)?;
            Payload::from_traces(&req).map_err(invalid)
        }
        (Signal::Logs, Encoding::Json) => {
            let req: ExportLogsServiceRequest = serde_json::from_slice(&body).map_err(json)?;
            Payload::from_logs(&req).map_err(invalid)
        }
    }
}
