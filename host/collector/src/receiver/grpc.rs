//! The OTLP/gRPC receiver (tonic), accepting gzip as the OTel SDKs and Collectors send it.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::pipeline::{ConsumeError, Payload, Pipeline};

/// The OTLP trace and logs services over the pipelines (absent: UNIMPLEMENTED).
#[derive(Clone)]
pub struct OtlpGrpc {
    /// The traces pipeline, if any.
    pub traces: Option<Arc<Pipeline>>,
    /// The logs pipeline, if any.
    pub logs: Option<Arc<Pipeline>>,
}

/// Maps a refusal onto the gRPC code the OTLP spec gives it.
fn status(e: ConsumeError) -> Status {
    match e {
        ConsumeError::Invalid(_) => Status::invalid_argument(e.to_string()),
        // RESOURCE_EXHAUSTED is retryable in OTLP only with RetryInfo; UNAVAILABLE always is.
        ConsumeError::QueueFull(_) => Status::unavailable(e.to_string()),
        ConsumeError::ShuttingDown => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let pipeline = self
            .traces
            .as_ref()
            .ok_or_else(|| Status::unimplemented("no traces pipeline"))?;
        let rejected = pipeline
            .consume(Payload::Traces(request.into_inner()))
            .map_err(status)?;
        Ok(Response::new(rejected.traces_response()))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let pipeline = self
            .logs
            .as_ref()
            .ok_or_else(|| Status::unimplemented("no logs pipeline"))?;
        let rejected = pipeline
            .consume(Payload::Logs(request.into_inner()))
            .map_err(status)?;
        Ok(Response::new(rejected.logs_response()))
    }
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves.
pub async fn serve(
    services: OtlpGrpc,
    listener: tokio::net::TcpListener,
    max_message: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let traces = TraceServiceServer::new(services.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message);
    let logs = LogsServiceServer::new(services)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message);
    tonic::transport::Server::builder()
        .add_service(traces)
        .add_service(logs)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
