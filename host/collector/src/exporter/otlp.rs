//! `otlp` (`otlp_grpc`): OTLP/gRPC to another collector or back end, gzip on request.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use weft_runtime::Signal;

use super::{BuildError, ExportError, ExportFuture, Exporter, Prepared};
use crate::codec::RawResponseCodec;
use crate::config::OtlpExporterConfig;

/// Sends each batch as one `Export` call, the payload's protobuf bytes as the request message
/// (never decoded, never re-encoded): gzip-compressed through tonic's client
/// ([`RawResponseCodec`]), uncompressed framed by `raw_unary`, which writes the queued
/// requests of a batch one after another without joining or copying them. The status codes the OTLP
/// specification lets a client retry are [`ExportError::Retryable`]; the server's partial
/// success is the rejected count.
#[derive(Debug, Clone)]
pub struct OtlpGrpcExporter {
    /// A cheap handle on one lazily connected channel, with the compression settings: the
    /// client of compressed calls.
    grpc: tonic::client::Grpc<Channel>,
    /// The same channel, for uncompressed calls, which `raw_unary` makes without copying the
    /// batch into a buffer of its own (tonic's codecs encode each message into one).
    channel: Channel,
    /// Whether calls are gzip-compressed.
    gzip: bool,
}

impl OtlpGrpcExporter {
    /// A client for `config.endpoint` with its timeout and compression. Connects lazily: an
    /// unreachable peer is an export error (retried), not a build error.
    pub fn new(config: &OtlpExporterConfig) -> Result<Self, BuildError> {
        let channel = Channel::from_shared(config.endpoint.clone())
            .map_err(|e| BuildError(format!("invalid endpoint `{}`: {e}", config.endpoint)))?;
        let channel = channel.timeout(config.timeout).connect_lazy();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        if config.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(OtlpGrpcExporter {
            grpc,
            channel,
            gzip: config.gzip,
        })
    }

    /// One unary `Export` call of `service` (its name and method path) with `batch` as the
    /// request message, decoding the response as `R`.
    async fn call<R>(
        &self,
        (service, path): (&'static str, &'static str),
        batch: &Prepared,
    ) -> Result<R, tonic::Status>
    where
        R: prost::Message + Default + Send + Sync + 'static,
    {
        if !self.gzip {
            return raw_unary(self.channel.clone(), path, &batch.wire_parts()).await;
        }
        let message = batch.body().clone();
        // A clone per call keeps `&self`: it shares the channel.
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("the channel is not ready: {e}")))?;
        let path = PathAndQuery::from_static(path);
        let mut request = tonic::Request::new(message);
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(service, "Export"));
        grpc.unary(request, path, RawResponseCodec::<R>::default())
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Exporter for OtlpGrpcExporter {
    /// Uncompressed, several queued requests go out as one message without being joined.
    fn sends_parts(&self) -> bool {
        !self.gzip
    }

    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
        Box::pin(async move {
            let result = match batch.signal() {
                Signal::Traces => self
                    .call::<ExportTraceServiceResponse>(TRACE_SERVICE, batch)
                    .await
                    .map(|r| {
                        r.partial_success
                            .map_or(0, |p| p.rejected_spans.max(0) as u64)
                    }),
                Signal::Logs => self
                    .call::<ExportLogsServiceResponse>(LOGS_SERVICE, batch)
                    .await
                    .map(|r| {
                        r.partial_success
                            .map_or(0, |p| p.rejected_log_records.max(0) as u64)
                    }),
            };
            result.map_err(|status| {
                let message = format!("{:?}: {}", status.code(), status.message());
                if retryable(status.code()) {
                    ExportError::retryable(message)
                } else {
                    ExportError::Permanent(message)
                }
            })
        })
    }
}

/// The largest response message read (OTLP answers are a few bytes; tonic's default limit).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// An uncompressed unary gRPC call of `path` on `channel` whose request message is the
/// concatenation of `parts` (encoded protobuf: concatenated messages merge, so several OTLP
/// requests are one), decoding the response as `R`. What tonic's `Grpc::unary` does, but the
/// parts go on the wire as they are, after the 5-byte message header: no copy of the batch, no
/// buffer as large as it. Statuses are tonic's: transport errors through
/// [`tonic::Status::from_error`], `grpc-status` from the headers (trailers-only answers) or the
/// trailers, and otherwise the HTTP status mapped as gRPC specifies (grpc's
/// `http-grpc-status-mapping.md`).
async fn raw_unary<R>(
    mut channel: Channel,
    path: &'static str,
    parts: &[Bytes],
) -> Result<R, Status>
where
    R: prost::Message + Default,
{
    use tonic::codegen::Service as _;
    use tonic::codegen::http::{self, header};

    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::unknown(format!("the channel is not ready: {e}")))?;
    let len: usize = parts.iter().map(Bytes::len).sum();
    let len = u32::try_from(len).map_err(|_| {
        Status::resource_exhausted(format!(
            "a batch of {len} bytes is too large for one gRPC message"
        ))
    })?;
    let mut frames = std::collections::VecDeque::with_capacity(parts.len() + 1);
    let mut prefix = [0u8; 5];
    prefix[1..].copy_from_slice(&len.to_be_bytes());
    frames.push_back(Bytes::copy_from_slice(&prefix));
    frames.extend(parts.iter().filter(|p| !p.is_empty()).cloned());
    let request = http::Request::builder()
        .method(http::Method::POST)
        .version(http::Version::HTTP_2)
        .uri(path)
        .header(header::TE, "trailers")
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(tonic::body::Body::new(Chunks(frames)))
        .map_err(|e| Status::internal(format!("cannot build the request: {e}")))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    // A trailers-only answer: the status is in the headers, there is no message.
    let in_headers = Status::from_header_map(response.headers());
    if let Some(status) = in_headers.as_ref()
        && status.code() != tonic::Code::Ok
    {
        return Err(status.clone());
    }
    let http_status = response.status();
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
        response.into_body(),
        MAX_RESPONSE_BYTES + 5,
    ))
    .await
    .map_err(Status::from_error)?;
    let status = body
        .trailers()
        .and_then(Status::from_header_map)
        .or(in_headers)
        .unwrap_or_else(|| status_of_http(http_status));
    if status.code() != tonic::Code::Ok {
        return Err(status);
    }
    let data = body.to_bytes();
    match data.first() {
        Some(0) if data.len() >= 5 => {}
        Some(0) | None => return Err(Status::internal("Missing response message.")),
        Some(_) => {
            return Err(Status::internal(
                "the response is compressed, and no compression was asked for",
            ));
        }
    }
    let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let message = data
        .get(5..5 + n)
        .ok_or_else(|| Status::internal("the response message is truncated"))?;
    R::decode(message).map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
}

/// The status of an answer without `grpc-status` (in headers or trailers), from its HTTP status,
/// as gRPC maps them; `Ok` only for a 200 that then carried a status (never reached here).
fn status_of_http(http: tonic::codegen::http::StatusCode) -> Status {
    use tonic::Code;
    use tonic::codegen::http::StatusCode;
    let code = match http {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        StatusCode::OK => {
            return Status::unknown(
                "protocol error: missing grpc-status trailer, the stream ended without a status",
            );
        }
        _ => Code::Unknown,
    };
    Status::new(
        code,
        format!(
            "grpc-status header missing, mapped from HTTP status code {}",
            http.as_u16()
        ),
    )
}

/// A request body of ready chunks, sent in order.
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .pop_front()
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// The OTLP trace service and its `Export` method.
const TRACE_SERVICE: (&str, &str) = (
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
);
/// The OTLP logs service and its `Export` method.
const LOGS_SERVICE: (&str, &str) = (
    "opentelemetry.proto.collector.logs.v1.LogsService",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
);

/// Codes the OTLP specification lets a client retry.
fn retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled
            | DeadlineExceeded
            | Aborted
            | OutOfRange
            | Unavailable
            | DataLoss
            | ResourceExhausted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::StatusCode;

    /// Answers without `grpc-status` get the code gRPC's HTTP mapping gives, and with it the
    /// retry decision: 429, 502, 503 and 504 are Unavailable (retried), the rest are not.
    #[test]
    fn http_statuses_without_grpc_status_map_as_grpc_specifies() {
        for (http, code) in [
            (StatusCode::BAD_REQUEST, tonic::Code::Internal),
            (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
            (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            (StatusCode::NOT_FOUND, tonic::Code::Unimplemented),
            (StatusCode::TOO_MANY_REQUESTS, tonic::Code::Unavailable),
            (StatusCode::BAD_GATEWAY, tonic::Code::Unavailable),
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
            (StatusCode::GATEWAY_TIMEOUT, tonic::Code::Unavailable),
            (StatusCode::OK, tonic::Code::Unknown),
            (StatusCode::IM_A_TEAPOT, tonic::Code::Unknown),
        ] {
            let status = status_of_http(http);
            assert_eq!(status.code(), code, "{http}");
            assert_eq!(
                retryable(status.code()),
                code == tonic::Code::Unavailable,
                "{http}"
            );
        }
    }
}
