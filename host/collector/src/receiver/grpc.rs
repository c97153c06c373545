//! The OTLP/gRPC receiver (tonic), accepting gzip as the OTel SDKs and Collectors send it.
//!
//! The request message is never decoded: each `Export` service ([`ExportServer`]) reads it as
//! raw protobuf bytes ([`RawRequestCodec`]), validates them into an [`OtlpData`]
//! ([`OtlpData::from_protobuf`], which counts the items on the way) and hands that to the
//! pipeline. Malformed OTLP is INVALID_ARGUMENT with the validation error's message; only the
//! small response is a prost message.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::{Request, Response, Status};

use weft_runtime::{OtlpData, Signal};

use crate::codec::RawRequestCodec;
use crate::pipeline::{ConsumeError, Pipeline, Rejected};

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

/// One OTLP `Export` service: its gRPC names, its signal and its response message.
pub trait ExportKind: Send + Sync + 'static {
    /// The fully qualified service name (what [`tonic::server::NamedService`] routes on).
    const SERVICE: &'static str;
    /// The `Export` method's path.
    const PATH: &'static str;
    /// The signal its requests carry.
    const SIGNAL: Signal;
    /// The response message.
    type Response: prost::Message + Default + Send + Sync + 'static;
    /// The response for an accepted request: OTLP partial success when items were dropped.
    fn response(rejected: Rejected) -> Self::Response;
}

/// `opentelemetry.proto.collector.trace.v1.TraceService`.
#[derive(Debug)]
pub enum TracesExport {}

/// `opentelemetry.proto.collector.logs.v1.LogsService`.
#[derive(Debug)]
pub enum LogsExport {}

impl ExportKind for TracesExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SIGNAL: Signal = Signal::Traces;
    type Response = ExportTraceServiceResponse;
    fn response(rejected: Rejected) -> Self::Response {
        rejected.traces_response()
    }
}

impl ExportKind for LogsExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SIGNAL: Signal = Signal::Logs;
    type Response = ExportLogsServiceResponse;
    fn response(rejected: Rejected) -> Self::Response {
        rejected.logs_response()
    }
}

/// The `Export` service of one signal, as a tower service the way tonic's generated servers
/// are: gzip accepted and sent, messages up to `max_message` bytes (decompressed).
///
/// Threading: clones share the pipeline; tonic calls it from any connection's task.
pub struct ExportServer<K> {
    pipeline: Option<Arc<Pipeline>>,
    max_message: usize,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for ExportServer<K> {
    fn clone(&self) -> Self {
        ExportServer {
            pipeline: self.pipeline.clone(),
            max_message: self.max_message,
            kind: PhantomData,
        }
    }
}

impl<K: ExportKind> ExportServer<K> {
    /// Serves `pipeline` (`None`: every call is UNIMPLEMENTED).
    pub fn new(pipeline: Option<Arc<Pipeline>>, max_message: usize) -> Self {
        ExportServer {
            pipeline,
            max_message,
            kind: PhantomData,
        }
    }
}

impl<K: ExportKind> tonic::server::NamedService for ExportServer<K> {
    const NAME: &'static str = K::SERVICE;
}

impl<K, B> Service<http::Request<B>> for ExportServer<K>
where
    K: ExportKind,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != K::PATH {
            return Box::pin(std::future::ready(Ok(unimplemented())));
        }
        let handler = ExportHandler::<K> {
            pipeline: self.pipeline.clone(),
            kind: PhantomData,
        };
        let max_message = self.max_message;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec::<K::Response>::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message);
            Ok(grpc.unary(handler, req).await)
        })
    }
}

/// The answer to a method this service does not have (what tonic's generated servers send).
fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::default());
    let headers = response.headers_mut();
    headers.insert(
        Status::GRPC_STATUS,
        (tonic::Code::Unimplemented as i32).into(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

/// One `Export` call: validates the message and consumes it.
struct ExportHandler<K> {
    pipeline: Option<Arc<Pipeline>>,
    kind: PhantomData<fn() -> K>,
}

impl<K: ExportKind> tonic::server::UnaryService<Bytes> for ExportHandler<K> {
    type Response = K::Response;
    type Future = BoxFuture<Response<K::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let pipeline = self.pipeline.clone();
        Box::pin(async move { export::<K>(pipeline.as_deref(), request.into_inner()) })
    }
}

/// Validates `message` as a request of `K`'s signal and hands it to `pipeline`.
fn export<K: ExportKind>(
    pipeline: Option<&Pipeline>,
    message: Bytes,
) -> Result<Response<K::Response>, Status> {
    let pipeline =
        pipeline.ok_or_else(|| Status::unimplemented(format!("no {} pipeline", K::SIGNAL)))?;
    let payload = OtlpData::from_protobuf(K::SIGNAL, message)
        .map_err(|e| status(ConsumeError::Invalid(e.to_string())))?;
    let rejected = pipeline.consume(payload).map_err(status)?;
    Ok(Response::new(K::response(rejected)))
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves; messages up to `max_message`
/// bytes after decompression.
pub async fn serve(
    services: OtlpGrpc,
    listener: tokio::net::TcpListener,
    max_message: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(ExportServer::<TracesExport>::new(
            services.traces,
            max_message,
        ))
        .add_service(ExportServer::<LogsExport>::new(services.logs, max_message))
        .serve_with_incoming_shutdown(
            // Responses go out as soon as they are written: with Nagle's algorithm on, a
            // response's last frames waited for the client's delayed ACK (~40 ms a request).
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    conn.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                },
            ),
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::OtlpExporterConfig;
    use crate::exporter::otlp::OtlpGrpcExporter;
    use crate::exporter::{Exporter, Prepared};
    use crate::pipeline::{ExporterQueue, PipelineStats};

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
    async fn receiver() -> (std::net::SocketAddr, mpsc::Receiver<OtlpData>) {
        let (tx, rx) = mpsc::channel(8);
        let pipeline = Arc::new(Pipeline {
            signal: Signal::Traces,
            processors: Vec::new(),
            exporters: vec![ExporterQueue { id: "q".into(), tx }],
            stats: Arc::new(PipelineStats::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let services = OtlpGrpc {
            traces: Some(pipeline),
            logs: None,
        };
        tokio::spawn(serve(services, listener, 1 << 20, std::future::pending()));
        (addr, rx)
    }

    #[tokio::test]
    async fn the_exporter_sends_the_bytes_the_receiver_queues_gzip_included() {
        let (addr, mut rx) = receiver().await;
        let exporter = OtlpGrpcExporter::new(&OtlpExporterConfig {
            endpoint: format!("http://{addr}"),
            gzip: true,
            ..OtlpExporterConfig::default()
        })
        .expect("exporter");
        let sent = OtlpData::from_traces(&request(3)).expect("valid");
        let rejected = exporter
            .export(&Prepared::new(sent.clone()))
            .await
            .expect("exported");
        assert_eq!(rejected, 0);
        let got = rx.recv().await.expect("queued");
        assert_eq!(got.items(), 3);
        assert_eq!(
            got.bytes(),
            sent.bytes(),
            "the same bytes, never re-encoded"
        );
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

        let exporter = OtlpGrpcExporter::new(&OtlpExporterConfig {
            endpoint: format!("http://{addr}"),
            ..OtlpExporterConfig::default()
        })
        .expect("exporter");
        let logs = OtlpData::empty(Signal::Logs);
        let err = exporter
            .export(&Prepared::new(logs))
            .await
            .expect_err("no logs pipeline");
        assert!(err.to_string().contains("Unimplemented"), "{err}");
    }
}
