//! The collector's configuration, shaped like the OpenTelemetry Collector's: `receivers`,
//! `processors`, `exporters` keyed by component id (`type` or `type/name`), and
//! `service.pipelines.{traces,logs}` naming them. Errors name the offending key. The `weft`
//! binary composes this with the proxies and the telemetry settings into one file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use weft_runtime::Signal;
use weft_runtime::config::{
    ConfigError, RawWasm, WasmConfig, component_type, duration_at, err, from_value, wasm_config,
};

/// The collector's part of a configuration: receivers, processors, exporters and pipelines,
/// validated against each other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectorConfig {
    /// Receivers by id.
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// Processors by id.
    pub processors: BTreeMap<String, ProcessorConfig>,
    /// Exporters by id.
    pub exporters: BTreeMap<String, ExporterConfig>,
    /// Pipelines by signal.
    pub pipelines: BTreeMap<Signal, PipelineConfig>,
}

/// The collector's sections of a YAML configuration, not yet checked.
#[derive(Debug, Default)]
pub struct RawSections {
    /// `receivers:`.
    pub receivers: BTreeMap<String, serde_norway::Value>,
    /// `processors:`.
    pub processors: BTreeMap<String, serde_norway::Value>,
    /// `exporters:`.
    pub exporters: BTreeMap<String, serde_norway::Value>,
    /// `service.pipelines:`.
    pub pipelines: BTreeMap<String, PipelineConfig>,
}

impl CollectorConfig {
    /// Parses and validates the collector's sections. Relative paths (components, files) are
    /// taken relative to `base`.
    pub fn parse(raw: RawSections, base: &std::path::Path) -> Result<Self, ConfigError> {
        let receivers = parse_receivers(raw.receivers)?;
        let processors = parse_processors(raw.processors, base)?;
        let exporters = parse_exporters(raw.exporters, base)?;
        let pipelines = parse_pipelines(raw.pipelines, &receivers, &processors, &exporters)?;
        Ok(CollectorConfig {
            receivers,
            processors,
            exporters,
            pipelines,
        })
    }

    /// Whether `other` has the same receivers, exporters, pipelines and processor ids (what a
    /// running collector can keep while processors' settings change).
    pub fn same_structure(&self, other: &CollectorConfig) -> bool {
        self.receivers == other.receivers
            && self.exporters == other.exporters
            && self.pipelines == other.pipelines
            && self.processors.keys().eq(other.processors.keys())
    }
}

/// One pipeline: its receivers, processors in order, and exporters (ids).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Receiver ids.
    pub receivers: Vec<String>,
    /// Processor ids, applied in order.
    #[serde(default)]
    pub processors: Vec<String>,
    /// Exporter ids; every exporter gets every batch.
    pub exporters: Vec<String>,
}

/// An OTLP receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    /// gRPC listener, if enabled.
    pub grpc: Option<GrpcServerConfig>,
    /// HTTP listener, if enabled.
    pub http: Option<HttpServerConfig>,
}

/// OTLP/gRPC listener settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcServerConfig {
    /// Listen address (default 127.0.0.1:4317).
    #[serde(default = "default_grpc")]
    pub endpoint: SocketAddr,
    /// Largest accepted message after decompression, in MiB (default 4, as the Collector).
    #[serde(default = "default_max_mib")]
    pub max_recv_msg_size_mib: usize,
}

/// OTLP/HTTP listener settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Listen address (default 127.0.0.1:4318).
    #[serde(default = "default_http")]
    pub endpoint: SocketAddr,
    /// Largest accepted body after decompression, in MiB (default 4).
    #[serde(default = "default_max_mib")]
    pub max_request_body_size_mib: usize,
}

fn default_grpc() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4317))
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4318))
}
fn default_max_mib() -> usize {
    4
}

/// A processor.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    /// A weft plugin component.
    Wasm(WasmConfig),
}

/// An exporter.
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {
    /// Writes what it gets to stdout.
    Debug {
        /// `basic`: one line per batch; `detailed`: the OTLP/JSON too.
        detailed: bool,
    },
    /// Appends OTLP/JSON lines (one request per line) to a file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// Sends OTLP/gRPC to another collector or back end.
    Otlp(OtlpExporterConfig),
    /// Sends OTLP/HTTP (protobuf) to `<endpoint>/v1/traces` and `<endpoint>/v1/logs`.
    OtlpHttp(OtlpExporterConfig),
}

/// The OTLP exporters (gRPC and HTTP): batching, retries with exponential backoff, gzip.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpExporterConfig {
    /// `http://host:port` (a bare `host:port` gets `http://`); for OTLP/HTTP the base URL that
    /// `/v1/traces` and `/v1/logs` are appended to.
    pub endpoint: String,
    /// Gzip requests (default true, as the Collector).
    pub gzip: bool,
    /// Deadline of one export call (default 5 s).
    pub timeout: Duration,
    /// Items per export at most; queued requests are merged up to this (default 8192).
    pub send_batch_size: u64,
    /// How long a partial batch waits for more (default 200 ms).
    pub batch_timeout: Duration,
    /// First retry delay (default 1 s); doubles up to `max_interval`.
    pub initial_interval: Duration,
    /// Longest retry delay (default 30 s).
    pub max_interval: Duration,
    /// Give up on a batch after retrying this long (default 300 s).
    pub max_elapsed: Duration,
    /// Requests the queue holds before receivers answer "retry later" (default 1000).
    pub queue_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlpExporter {
    endpoint: String,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    batch: Option<RawBatch>,
    #[serde(default)]
    retry_on_failure: Option<RawRetry>,
    #[serde(default)]
    sending_queue: Option<RawQueue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    #[serde(default)]
    send_batch_size: Option<u64>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    initial_interval: Option<String>,
    #[serde(default)]
    max_interval: Option<String>,
    #[serde(default)]
    max_elapsed_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    #[serde(default)]
    queue_size: Option<usize>,
}

fn otlp_exporter(key: &str, r: RawOtlpExporter) -> Result<OtlpExporterConfig, ConfigError> {
    let endpoint = if r.endpoint.contains("://") {
        r.endpoint
    } else {
        format!("http://{}", r.endpoint)
    };
    let gzip = match r.compression.as_deref() {
        None | Some("gzip") => true,
        Some("none") => false,
        Some(o) => {
            return Err(err(
                format!("{key}.compression"),
                format!("`{o}`: use gzip or none"),
            ));
        }
    };
    let batch = r.batch.unwrap_or_default();
    let retry = r.retry_on_failure.unwrap_or_default();
    let send_batch_size = batch.send_batch_size.unwrap_or(8192);
    if send_batch_size == 0 {
        return Err(err(
            format!("{key}.batch.send_batch_size"),
            "must be at least 1",
        ));
    }
    let queue_size = r.sending_queue.and_then(|q| q.queue_size).unwrap_or(1000);
    if queue_size == 0 {
        return Err(err(
            format!("{key}.sending_queue.queue_size"),
            "must be at least 1",
        ));
    }
    let retry_key = |k: &str| format!("{key}.retry_on_failure.{k}");
    Ok(OtlpExporterConfig {
        endpoint,
        gzip,
        timeout: duration_at(format!("{key}.timeout"), r.timeout, Duration::from_secs(5))?,
        send_batch_size,
        batch_timeout: duration_at(
            format!("{key}.batch.timeout"),
            batch.timeout,
            Duration::from_millis(200),
        )?,
        initial_interval: duration_at(
            retry_key("initial_interval"),
            retry.initial_interval,
            Duration::from_secs(1),
        )?,
        max_interval: duration_at(
            retry_key("max_interval"),
            retry.max_interval,
            Duration::from_secs(30),
        )?,
        max_elapsed: duration_at(
            retry_key("max_elapsed_time"),
            retry.max_elapsed_time,
            Duration::from_secs(300),
        )?,
        queue_size,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlpReceiver {
    protocols: RawProtocols,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtocols {
    #[serde(default)]
    grpc: Option<serde_norway::Value>,
    #[serde(default)]
    http: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebug {
    #[serde(default)]
    verbosity: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: PathBuf,
}

fn parse_receivers(
    receivers_raw: BTreeMap<String, serde_norway::Value>,
) -> Result<BTreeMap<String, ReceiverConfig>, ConfigError> {
    let mut receivers = BTreeMap::new();
    for (id, v) in receivers_raw {
        let key = format!("receivers.{id}");
        match component_type(&id) {
            "otlp" => {
                let r: RawOtlpReceiver = from_value(&key, v)?;
                let grpc = r
                    .protocols
                    .grpc
                    .map(|g| from_value(&format!("{key}.protocols.grpc"), g))
                    .transpose()?;
                let http = r
                    .protocols
                    .http
                    .map(|h| from_value(&format!("{key}.protocols.http"), h))
                    .transpose()?;
                if grpc.is_none() && http.is_none() {
                    return Err(err(format!("{key}.protocols"), "enable grpc, http or both"));
                }
                receivers.insert(id, ReceiverConfig { grpc, http });
            }
            other => {
                return Err(err(
                    key,
                    format!("unknown receiver type `{other}` (weft has `otlp`)"),
                ));
            }
        }
    }
    Ok(receivers)
}

fn parse_processors(
    processors_raw: BTreeMap<String, serde_norway::Value>,
    base: &std::path::Path,
) -> Result<BTreeMap<String, ProcessorConfig>, ConfigError> {
    let mut processors = BTreeMap::new();
    for (id, v) in processors_raw {
        let key = format!("processors.{id}");
        match component_type(&id) {
            "wasm" => {
                let r: RawWasm = from_value(&key, v)?;
                processors.insert(id, ProcessorConfig::Wasm(wasm_config(&key, r, base)?));
            }
            other => {
                return Err(err(
                    key,
                    format!("unknown processor type `{other}` (weft has `wasm`)"),
                ));
            }
        }
    }
    Ok(processors)
}

fn parse_exporters(
    exporters_raw: BTreeMap<String, serde_norway::Value>,
    base: &std::path::Path,
) -> Result<BTreeMap<String, ExporterConfig>, ConfigError> {
    let mut exporters = BTreeMap::new();
    for (id, v) in exporters_raw {
        let key = format!("exporters.{id}");
        let e = match component_type(&id) {
            "debug" => {
                let r: RawDebug = from_value(&key, v)?;
                let detailed = match r.verbosity.as_deref() {
                    None | Some("basic") | Some("normal") => false,
                    Some("detailed") => true,
                    Some(o) => {
                        return Err(err(
                            format!("{key}.verbosity"),
                            format!("`{o}`: use basic or detailed"),
                        ));
                    }
                };
                ExporterConfig::Debug { detailed }
            }
            "file" => {
                let r: RawFile = from_value(&key, v)?;
                ExporterConfig::File {
                    path: base.join(r.path),
                }
            }
            "otlp" | "otlp_grpc" => {
                let r: RawOtlpExporter = from_value(&key, v)?;
                ExporterConfig::Otlp(otlp_exporter(&key, r)?)
            }
            "otlphttp" | "otlp_http" => {
                let r: RawOtlpExporter = from_value(&key, v)?;
                ExporterConfig::OtlpHttp(otlp_exporter(&key, r)?)
            }
            other => {
                return Err(err(
                    key,
                    format!(
                        "unknown exporter type `{other}` (weft has `debug`, `file`, `otlp`, `otlphttp`)"
                    ),
                ));
            }
        };
        exporters.insert(id, e);
    }
    Ok(exporters)
}

fn parse_pipelines(
    pipelines_raw: BTreeMap<String, PipelineConfig>,
    receivers: &BTreeMap<String, ReceiverConfig>,
    processors: &BTreeMap<String, ProcessorConfig>,
    exporters: &BTreeMap<String, ExporterConfig>,
) -> Result<BTreeMap<Signal, PipelineConfig>, ConfigError> {
    let mut pipelines = BTreeMap::new();
    for (name, p) in pipelines_raw {
        let key = format!("service.pipelines.{name}");
        let signal = match component_type(&name) {
            "traces" => Signal::Traces,
            "logs" => Signal::Logs,
            other => {
                return Err(err(
                    key,
                    format!("unknown signal `{other}` (weft has traces and logs)"),
                ));
            }
        };
        if pipelines.contains_key(&signal) {
            return Err(err(
                key,
                format!(
                    "a second {} pipeline; weft runs one per signal",
                    signal.as_str()
                ),
            ));
        }
        if p.receivers.is_empty() {
            return Err(err(
                format!("{key}.receivers"),
                "name at least one receiver",
            ));
        }
        if p.exporters.is_empty() {
            return Err(err(
                format!("{key}.exporters"),
                "name at least one exporter",
            ));
        }
        for r in &p.receivers {
            if !receivers.contains_key(r) {
                return Err(err(
                    format!("{key}.receivers"),
                    format!("`{r}` is not defined under receivers"),
                ));
            }
        }
        for pr in &p.processors {
            if !processors.contains_key(pr) {
                return Err(err(
                    format!("{key}.processors"),
                    format!("`{pr}` is not defined under processors"),
                ));
            }
        }
        for e in &p.exporters {
            if !exporters.contains_key(e) {
                return Err(err(
                    format!("{key}.exporters"),
                    format!("`{e}` is not defined under exporters"),
                ));
            }
        }
        pipelines.insert(signal, p);
    }
    Ok(pipelines)
}
