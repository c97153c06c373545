//! The OTLP/gRPC receiver: the unary `Export` calls of the trace and logs services, served on
//! hyper's HTTP/2 by the listener loop every weft listener shares ([`weft_runtime::net`]).
//!
//! The call is read here rather than by tonic's server: the rules OTLP clients rely on are then
//! enforced before anything is decoded, and every refusal has the code the OTLP specification
//! gives it. A call must say `content-type: application/grpc` (or `application/grpc+proto`), and
//! carry exactly one length-prefixed message, no larger than `max_recv_msg_size_mib` (checked on
//! the prefix, before the message is read; gzip is accepted and decompressed up to the same
//! limit), arriving within `read_timeout`. The message is never decoded: it is validated into an
//! [`OtlpData`] ([`OtlpData::from_protobuf`], which counts the items on the way) and handed to
//! the pipeline; only the small response is a prost message.
//!
//! Status codes. The OTLP specification (opentelemetry-proto docs/specification.md, "OTLP/gRPC
//! Response", "Failures") says: "To indicate not-retryable errors, the server is recommended to
//! use code InvalidArgument", and of RESOURCE_EXHAUSTED that the client "SHOULD interpret
//! RESOURCE_EXHAUSTED code as retryable only if the server signals that the recovery from
//! resource exhaustion is possible" (with RetryInfo); its table makes OUT_OF_RANGE and INTERNAL
//! retryable and not-retryable respectively ("OUT_OF_RANGE | Yes", "INTERNAL | No"). So:
//! - malformed framing or protobuf, bad ids, bad gzip, two messages, no message:
//!   INVALID_ARGUMENT (not retryable; retrying the same bytes cannot succeed);
//! - a message over the size limit: INVALID_ARGUMENT too. The specification gives oversized
//!   gRPC messages no code of their own; it is a permanent property of the request (OTLP/HTTP's
//!   413 "MUST NOT" be retried, the same rule), and RESOURCE_EXHAUSTED without RetryInfo is
//!   still retried by some SDKs (opentelemetry-python lists it as retryable), which would resend
//!   the same oversized batch forever. tonic's default, OUT_OF_RANGE, is retryable by the table;
//! - back-pressure (an exporter queue full) and shutdown: UNAVAILABLE, which the specification's
//!   throttling section names for back-pressure;
//! - a request message that does not arrive within `read_timeout`: DEADLINE_EXCEEDED;
//! - an unknown method, or a signal with no pipeline: UNIMPLEMENTED; an unknown `grpc-encoding`:
//!   UNIMPLEMENTED with `grpc-accept-encoding`, as the gRPC protocol asks;
//! - a content-type that is not gRPC: HTTP 415, as the gRPC-over-HTTP/2 protocol asks (so that a
//!   non-gRPC client does not read the usual HTTP 200 as success).

use std::convert::Infallible;
use std::io::Read as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use prost::Message as _;
use tonic::Status;

use weft_runtime::{OtlpData, Signal};

use crate::pipeline::{ConsumeError, Pipeline};

/// The trace service's `Export` method.
pub const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The logs service's `Export` method.
pub const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The OTLP trace and logs services over the pipelines (absent: UNIMPLEMENTED), and the limits
/// of one call.
#[derive(Clone)]
pub struct OtlpGrpc {
    /// The traces pipeline, if any.
    pub traces: Option<Arc<Pipeline>>,
    /// The logs pipeline, if any.
    pub logs: Option<Arc<Pipeline>>,
    /// Largest request message, compressed and after decompression, in bytes.
    pub max_message: usize,
    /// Time for the request message to arrive once the call's headers did.
    pub read_timeout: Duration,
}

/// Maps a refusal onto the gRPC code the OTLP spec gives it (see the module's comment).
fn status(e: ConsumeError) -> Status {
    match e {
        ConsumeError::Invalid(_) => Status::invalid_argument(e.to_string()),
        // RESOURCE_EXHAUSTED is retryable in OTLP only with RetryInfo; UNAVAILABLE always is.
        ConsumeError::QueueFull(_) => Status::unavailable(e.to_string()),
        ConsumeError::ShuttingDown | ConsumeError::MemoryLimited { .. } => {
            Status::unavailable(e.to_string())
        }
    }
}

/// A unary gRPC response body: at most one message, then the trailers.
#[derive(Debug, Default)]
pub struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A trailers-only response carrying `status` (what gRPC servers send for a failed call).
fn failure(status: Status) -> Response<GrpcBody> {
    status.into_http()
}

/// A successful call: `message` (an encoded `Export*ServiceResponse`), then `grpc-status: 0`.
fn success(message: Vec<u8>) -> Response<GrpcBody> {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert(Status::GRPC_STATUS, HeaderValue::from_static("0"));
    let mut response = Response::new(GrpcBody {
        data: Some(Bytes::from(framed)),
        trailers: Some(trailers),
    });
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Whether `content-type` names gRPC with protobuf messages.
fn is_grpc_proto(content_type: Option<&HeaderValue>) -> bool {
    let Some(v) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/grpc" || media == "application/grpc+proto"
}

fn too_large(len: usize, max: usize) -> Status {
    Status::invalid_argument(format!(
        "the request message is {len} bytes, more than the receiver's limit of {max} bytes \
         (max_recv_msg_size_mib); send smaller batches"
    ))
}

/// Reads the call's one message: `(compressed flag, message bytes)`. Refuses, before reading
/// on, a prefix announcing more than `max` bytes, and any byte past the first message.
async fn read_message(mut body: Incoming, max: usize) -> Result<(u8, Bytes), Status> {
    let mut buf = BytesMut::new();
    let mut announced: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Status::cancelled(format!("the request stream failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing in them is ours
        };
        buf.extend_from_slice(&data);
        if announced.is_none() && buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > max {
                return Err(too_large(len, max));
            }
            announced = Some(len);
        }
        if let Some(len) = announced
            && buf.len() > 5 + len
        {
            return Err(Status::invalid_argument(
                "a unary Export call carries exactly one request message; this one has more",
            ));
        }
    }
    let Some(len) = announced else {
        return Err(Status::invalid_argument(if buf.is_empty() {
            "the call carries no request message".to_string()
        } else {
            format!("a truncated gRPC message prefix ({} of 5 bytes)", buf.len())
        }));
    };
    if buf.len() < 5 + len {
        return Err(Status::invalid_argument(format!(
            "a truncated request message: its prefix says {len} bytes, {} arrived",
            buf.len() - 5
        )));
    }
    let flag = buf[0];
    Ok((flag, buf.freeze().slice(5..)))
}

impl OtlpGrpc {
    /// Answers one call (any path: this is the whole server).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<GrpcBody> {
        if !is_grpc_proto(req.headers().get(hyper::header::CONTENT_TYPE)) {
            let shown = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let mut r = failure(Status::invalid_argument(format!(
                "content-type {}: an OTLP/gRPC call is application/grpc (or application/grpc+proto)",
                shown.map_or("missing".to_string(), |v| format!("`{v}`"))
            )));
            *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return r;
        }
        let (signal, pipeline) = match req.uri().path() {
            TRACES_PATH => (Signal::Traces, self.traces.clone()),
            LOGS_PATH => (Signal::Logs, self.logs.clone()),
            other => {
                return failure(Status::unimplemented(format!(
                    "no method {other}: this receiver serves {TRACES_PATH} and {LOGS_PATH}"
                )));
            }
        };
        let Some(pipeline) = pipeline else {
            return failure(Status::unimplemented(format!("no {signal} pipeline")));
        };
        let gzip = match req.headers().get("grpc-encoding").map(|v| v.as_bytes()) {
            None | Some(b"identity") => false,
            Some(b"gzip") => true,
            Some(other) => {
                let mut r = failure(Status::unimplemented(format!(
                    "grpc-encoding `{}`: this receiver accepts gzip and identity",
                    String::from_utf8_lossy(other)
                )));
                r.headers_mut().insert(
                    "grpc-accept-encoding",
                    HeaderValue::from_static("gzip,identity"),
                );
                return r;
            }
        };
        let read = tokio::time::timeout(
            self.read_timeout,
            read_message(req.into_body(), self.max_message),
        );
        let (flag, message) = match read.await {
            Ok(Ok(m)) => m,
            Ok(Err(status)) => return failure(status),
            Err(_) => {
                return failure(Status::deadline_exceeded(format!(
                    "the request message did not arrive within {:?} (read_timeout)",
                    self.read_timeout
                )));
            }
        };
        let message = match (flag, gzip) {
            (0, _) => message,
            (1, true) => match gunzip(&message, self.max_message) {
                Ok(m) => m,
                Err(status) => return failure(status),
            },
            (1, false) => {
                return failure(Status::invalid_argument(
                    "the message is marked compressed but the call has no grpc-encoding",
                ));
            }
            (other, _) => {
                return failure(Status::invalid_argument(format!(
                    "compressed-flag {other} in the message prefix (0 or 1)"
                )));
            }
        };
        match export(&pipeline, signal, message) {
            Ok(response) => success(response),
            Err(status) => failure(status),
        }
    }
}

/// Decompresses a gzip message, reading at most one byte past `max` (a gzip bomb stops there).
fn gunzip(message: &[u8], max: usize) -> Result<Bytes, Status> {
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(message);
    match decoder.take(max as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > max => Err(too_large(out.len(), max)),
        Ok(_) => {
            // The payload keeps this buffer: no spare capacity beyond what is counted as held.
            out.shrink_to_fit();
            Ok(Bytes::from(out))
        }
        Err(e) => Err(Status::invalid_argument(format!(
            "invalid gzip message: {e}"
        ))),
    }
}

/// Validates `message` as a request of `signal` and hands it to `pipeline`; the encoded
/// response message.
fn export(pipeline: &Pipeline, signal: Signal, message: Bytes) -> Result<Vec<u8>, Status> {
    let payload = OtlpData::from_protobuf(signal, message)
        .map_err(|e| status(ConsumeError::Invalid(e.to_string())))?;
    let rejected = pipeline.consume(payload).map_err(status)?;
    Ok(match signal {
        Signal::Traces => rejected.traces_response().encode_to_vec(),
        Signal::Logs => rejected.logs_response().encode_to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OtlpExporterConfig;
    use crate::exporter::otlp::OtlpGrpcExporter;
    use crate::exporter::{Exporter, Prepared};
    use crate::pipeline::{PipelineStats, QueueReceiver};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(n: usize) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: "s".into(),
                            ..Default::default()
                        };
                        n
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// A receiver with a traces pipeline (no processors) queueing into the returned channel.
    async fn receiver() -> (std::net::SocketAddr, QueueReceiver) {
        let (queue, rx) = crate::pipeline::queue("q", &crate::config::QueueConfig::default());
        let pipeline = Arc::new(Pipeline {
            signal: Signal::Traces,
            limiter: None,
            processors: Vec::new(),
            exporters: vec![queue],
            stats: Arc::new(PipelineStats::default()),
            memory: crate::memory::MemoryUse::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let services = Arc::new(OtlpGrpc {
            traces: Some(pipeline),
            logs: None,
            max_message: 1 << 20,
            read_timeout: Duration::from_secs(5),
        });
        let limits = crate::config::GrpcServerConfig::default().limits();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            // Held by the server task: it stops when the test's runtime does.
            let _stop = stop;
            weft_runtime::net::serve(
                listener,
                limits,
                weft_runtime::net::ListenerStats::new("test"),
                move |req| {
                    let s = services.clone();
                    async move { s.handle(req).await }
                },
                stop_rx,
            )
            .await
        });
        (addr, rx)
    }

    /// The OTLP/gRPC exporter to the receiver at `addr`, gzip-compressing or not.
    fn exporter(addr: std::net::SocketAddr, gzip: bool) -> OtlpGrpcExporter {
        OtlpGrpcExporter::new(&OtlpExporterConfig {
            endpoint: format!("http://{addr}"),
            gzip,
            ..OtlpExporterConfig::default()
        })
        .expect("exporter")
    }

    #[tokio::test]
    async fn the_exporter_sends_the_bytes_the_receiver_queues_gzip_included() {
        let (addr, mut rx) = receiver().await;
        let exporter = exporter(addr, true);
        let sent = OtlpData::from_traces(&request(3)).expect("valid");
        let rejected = exporter
            .export(&Prepared::new(sent.clone()))
            .await
            .expect("exported");
        assert_eq!(rejected, 0);
        let got = rx.recv().await.expect("queued").payload;
        assert_eq!(got.items(), 3);
        assert_eq!(
            got.bytes(),
            sent.bytes(),
            "the same bytes, never re-encoded"
        );
    }

    /// Uncompressed, the exporter writes the batch's bytes after the gRPC message header itself
    /// (no codec buffer): the receiver queues the same bytes, and its statuses come back as
    /// tonic's client would give them: a batch too large is InvalidArgument, not retried.
    #[tokio::test]
    async fn the_uncompressed_exporter_sends_the_same_bytes_and_gets_the_receivers_status() {
        let (addr, mut rx) = receiver().await;
        let exporter = exporter(addr, false);
        for n in [1, 700] {
            let sent = OtlpData::from_traces(&request(n)).expect("valid");
            let rejected = exporter
                .export(&Prepared::new(sent.clone()))
                .await
                .expect("exported");
            assert_eq!(rejected, 0);
            let got = rx.recv().await.expect("queued").payload;
            assert_eq!(got.items(), n as u64);
            assert_eq!(got.bytes(), sent.bytes(), "the same bytes");
        }
        // A batch over the receiver's 1 MiB limit: refused from the message prefix, before
        // the rest is read, as InvalidArgument (permanent: sending it again cannot help).
        let big = OtlpData::from_traces(&request(40_000)).expect("valid");
        assert!(big.bytes().len() > 1 << 20);
        match exporter.export(&Prepared::new(big)).await {
            Err(crate::exporter::ExportError::Permanent(m)) => {
                assert!(
                    m.starts_with("InvalidArgument: the request message is"),
                    "{m}"
                );
            }
            other => panic!("expected a permanent InvalidArgument, got {other:?}"),
        }
    }

    /// Several queued requests, sent uncompressed as one message without being joined: the
    /// receiver gets one request holding all their items, whose bytes are theirs one after
    /// another.
    #[tokio::test]
    async fn a_batch_of_queued_requests_arrives_as_one_request() {
        let (addr, mut rx) = receiver().await;
        let exporter = exporter(addr, false);
        assert!(exporter.sends_parts());
        let parts: Vec<OtlpData> = [1, 2, 3]
            .into_iter()
            .map(|n| OtlpData::from_traces(&request(n)).expect("valid"))
            .collect();
        let batch = Prepared::of_parts(parts.clone());
        assert_eq!(batch.wire_parts().len(), 3, "sent as three pieces");
        assert_eq!(exporter.export(&batch).await.expect("exported"), 0);
        let got = rx.recv().await.expect("queued").payload;
        assert_eq!(got.items(), 6);
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.bytes().iter().copied())
            .collect();
        assert_eq!(&got.bytes()[..], &joined[..]);
        // The same batch joined, as an exporter that does not send parts gets it.
        assert_eq!(&batch.payload().bytes()[..], &joined[..]);
        assert_eq!(batch.payload().items(), 6);
    }

    #[tokio::test]
    async fn malformed_bytes_are_invalid_argument_and_a_missing_pipeline_unimplemented() {
        let (addr, _rx) = receiver().await;
        let mut client = TraceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let mut bad = request(1);
        bad.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2, 3];
        let err = client.export(bad).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().starts_with("malformed OTLP: "), "{err}");
        assert!(err.message().contains("span_id"), "{err}");

        // Through tonic's client (gzip) and weft's own framing (uncompressed) alike.
        for gzip in [true, false] {
            let logs = OtlpData::empty(Signal::Logs);
            let err = exporter(addr, gzip)
                .export(&Prepared::new(logs))
                .await
                .expect_err("no logs pipeline");
            assert!(
                err.to_string().contains("Unimplemented"),
                "gzip {gzip}: {err}"
            );
        }
    }
}
