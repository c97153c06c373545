//! `otlphttp` (`otlp_http`): OTLP/HTTP protobuf to `<endpoint>/v1/traces` and
//! `<endpoint>/v1/logs`, gzip on request.

use std::io::Write as _;
use std::time::Duration;

use super::{ExportError, ExportFuture, Exporter};
use crate::config::OtlpExporterConfig;
use crate::pipeline::Payload;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
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

    async fn send(&self, batch: &Payload) -> Result<u64, ExportError> {
        use prost::Message as _;
        let (path, body) = match batch {
            Payload::Traces(t) => ("/v1/traces", t.encode_to_vec()),
            Payload::Logs(l) => ("/v1/logs", l.encode_to_vec()),
        };
        let body = if self.gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body)
                .and_then(|_| e.finish())
                .map_err(|e| ExportError::Permanent(format!("gzip: {e}")))?
        } else {
            body
        };
        let mut req = hyper::Request::post(format!("{}{path}", self.base))
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
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
    fn export<'a>(&'a self, batch: &'a Payload) -> ExportFuture<'a> {
        Box::pin(self.send(batch))
    }
}
