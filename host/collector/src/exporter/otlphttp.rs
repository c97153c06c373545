//! `otlphttp` (`otlp_http`): OTLP/HTTP protobuf to `<endpoint>/v1/traces` and
//! `<endpoint>/v1/logs`, gzip on request. The body is made once per batch
//! ([`Exporter::prepare`]): the payload's own bytes, or their gzip compression; every attempt
//! posts that same buffer.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use weft_runtime::Signal;

use super::{ExportError, ExportFuture, Exporter, Prepared};
use crate::config::OtlpExporterConfig;
use crate::pipeline::Payload;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// POSTs each batch. A timeout, a connection error and 429/502/503/504 are
/// [`ExportError::Retryable`] (with the server's `Retry-After` in seconds, if given); any other
/// non-2xx status is permanent.
#[derive(Debug, Clone)]
pub struct OtlpHttpExporter {
    client: HttpClient,
    /// The endpoint without a trailing `/`.
    base: String,
    gzip: bool,
    timeout: Duration,
}

impl OtlpHttpExporter {
    /// A client for `config.endpoint` with its timeout and compression. Connects per request.
    pub fn new(config: &OtlpExporterConfig) -> Self {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        OtlpHttpExporter {
            client,
            base: config.endpoint.trim_end_matches('/').to_string(),
            gzip: config.gzip,
            timeout: config.timeout,
        }
    }

    /// The body for `batch`: its protobuf bytes (shared, not copied), or gzip-compressed once.
    fn encode(&self, batch: Payload) -> Result<Prepared, ExportError> {
        if !self.gzip {
            return Ok(Prepared::new(batch));
        }
        let mut e = flate2::write::GzEncoder::new(
            Vec::with_capacity(batch.bytes().len() / 4),
            flate2::Compression::fast(),
        );
        let body = e
            .write_all(batch.bytes())
            .and_then(|_| e.finish())
            .map_err(|e| ExportError::Permanent(format!("gzip: {e}")))?;
        Ok(Prepared::with_body(batch, Bytes::from(body)))
    }

    /// One POST of the prepared body.
    async fn send(&self, batch: &Prepared) -> Result<u64, ExportError> {
        let path = match batch.payload().signal() {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        };
        let mut req = hyper::Request::post(format!("{}{path}", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        let req = req
            .body(http_body_util::Full::new(batch.body().clone()))
            .map_err(|e| ExportError::Permanent(e.to_string()))?;
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => return Err(ExportError::retryable("timed out")),
            Ok(Err(e)) => return Err(ExportError::retryable(e.to_string())),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(0);
        }
        let message = format!("HTTP {status}");
        // OTLP/HTTP: 429, 502, 503 and 504 may be retried, after Retry-After if given.
        if !matches!(status.as_u16(), 429 | 502 | 503 | 504) {
            return Err(ExportError::Permanent(message));
        }
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(ExportError::Retryable {
            message,
            retry_after,
        })
    }
}

impl Exporter for OtlpHttpExporter {
    fn prepare(&self, batch: Payload) -> Result<Prepared, ExportError> {
        self.encode(batch)
    }

    fn export<'a>(&'a self, batch: &'a Prepared) -> ExportFuture<'a> {
        Box::pin(self.send(batch))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;

    fn logs() -> Payload {
        Payload::from_logs(&ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); 4],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .expect("valid logs")
    }

    fn exporter(gzip: bool) -> OtlpHttpExporter {
        OtlpHttpExporter::new(&OtlpExporterConfig {
            endpoint: "http://127.0.0.1:1".into(),
            gzip,
            ..OtlpExporterConfig::default()
        })
    }

    #[tokio::test]
    async fn the_body_is_the_payloads_own_buffer_or_its_gzip_made_once() {
        let payload = logs();
        let plain = exporter(false).prepare(payload.clone()).expect("prepared");
        assert_eq!(plain.body().as_ptr(), payload.bytes().as_ptr(), "no copy");

        let gzipped = exporter(true).prepare(payload.clone()).expect("prepared");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzipped.body()[..])
            .read_to_end(&mut out)
            .expect("gzip");
        assert_eq!(&out[..], &payload.bytes()[..]);
        // Every attempt posts the same prepared buffer.
        assert_eq!(gzipped.clone().body().as_ptr(), gzipped.body().as_ptr());
    }
}
