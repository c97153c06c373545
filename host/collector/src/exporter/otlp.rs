//! `otlp` (`otlp_grpc`): OTLP/gRPC to another collector or back end, gzip on request.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use weft_runtime::Signal;

use super::{BuildError, ExportError, ExportFuture, Exporter, Prepared};
use crate::codec::RawResponseCodec;
use crate::config::OtlpExporterConfig;

/// Sends each batch as one `Export` call, the payload's protobuf bytes as the request message
/// (never decoded, never re-encoded; [`RawResponseCodec`]). The status codes the OTLP
/// specification lets a client retry are [`ExportError::Retryable`]; the server's partial
/// success is the rejected count.
#[derive(Debug, Clone)]
pub struct OtlpGrpcExporter {
    /// A cheap handle on one lazily connected channel, with the compression settings.
    grpc: tonic::client::Grpc<Channel>,
}

impl OtlpGrpcExporter {
    /// A client for `config.endpoint` with its timeout and compression. Connects lazily: an
    /// unreachable peer is an export error (retried), not a build error.
    pub fn new(config: &OtlpExporterConfig) -> Result<Self, BuildError> {
        let channel = Channel::from_shared(config.endpoint.clone())
            .map_err(|e| BuildError(format!("invalid endpoint `{}`: {e}", config.endpoint)))?;
        let channel = channel.timeout(config.timeout).connect_lazy();
        let mut grpc = tonic::client::Grpc::new(channel);
        if config.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(OtlpGrpcExporter { grpc })
    }

    /// One unary `Export` call of `service` (its name and method path) with `message` (encoded request bytes), decoding
    /// the response as `R`.
    async fn call<R>(
        &self,
        (service, path): (&'static str, &'static str),
        message: bytes::Bytes,
    ) -> Result<R, tonic::Status>
    where
        R: prost::Message + Default + Send + Sync + 'static,
    {
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
    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
        Box::pin(async move {
            let body = batch.body().clone();
            let result = match batch.payload().signal() {
                Signal::Traces => self
                    .call::<ExportTraceServiceResponse>(TRACE_SERVICE, body)
                    .await
                    .map(|r| {
                        r.partial_success
                            .map_or(0, |p| p.rejected_spans.max(0) as u64)
                    }),
                Signal::Logs => self
                    .call::<ExportLogsServiceResponse>(LOGS_SERVICE, body)
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
