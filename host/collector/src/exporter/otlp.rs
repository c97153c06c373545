//! `otlp` (`otlp_grpc`): OTLP/gRPC to another collector or back end, gzip on request.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::{BuildError, ExportError, ExportFuture, Exporter};
use crate::config::OtlpExporterConfig;
use crate::pipeline::Payload;

/// Sends each batch as one `Export` call. The status codes the OTLP specification lets a
/// client retry are [`ExportError::Retryable`]; the server's partial success is the rejected
/// count.
#[derive(Debug, Clone)]
pub struct OtlpGrpcExporter {
    traces: TraceServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
}

impl OtlpGrpcExporter {
    /// A client for `config.endpoint` with its timeout and compression. Connects lazily: an
    /// unreachable peer is an export error (retried), not a build error.
    pub fn new(config: &OtlpExporterConfig) -> Result<Self, BuildError> {
        let channel = Channel::from_shared(config.endpoint.clone())
            .map_err(|e| BuildError(format!("invalid endpoint `{}`: {e}", config.endpoint)))?;
        let channel = channel.timeout(config.timeout).connect_lazy();
        let mut traces = TraceServiceClient::new(channel.clone());
        let mut logs = LogsServiceClient::new(channel);
        if config.gzip {
            traces = traces
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
            logs = logs
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(OtlpGrpcExporter { traces, logs })
    }
}

impl Exporter for OtlpGrpcExporter {
    fn export<'a>(&'a self, batch: &'a Payload) -> ExportFuture<'a> {
        Box::pin(async move {
            // Clients are cheap handles on one channel; a clone per call keeps `&self`.
            let result = match batch {
                Payload::Traces(t) => self.traces.clone().export(t.clone()).await.map(|r| {
                    r.into_inner()
                        .partial_success
                        .map_or(0, |p| p.rejected_spans.max(0) as u64)
                }),
                Payload::Logs(l) => self.logs.clone().export(l.clone()).await.map(|r| {
                    r.into_inner()
                        .partial_success
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
