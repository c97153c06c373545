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
    ConfigError, RawWasm, WasmConfig, component_type, duration_at, err, from_value,
    positive_duration_at, wasm_config,
};
use weft_runtime::net::{Http2Limits, ServerLimits};

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

    /// Whether `other` has the same receivers, exporters, pipelines, processor ids and memory
    /// limiters (what a running collector can keep while plugins' settings change).
    pub fn same_structure(&self, other: &CollectorConfig) -> bool {
        let limiters = |c: &CollectorConfig| {
            c.processors
                .iter()
                .filter(|(_, p)| p.wasm().is_none())
                .map(|(id, p)| (id.clone(), p.clone()))
                .collect::<Vec<_>>()
        };
        self.receivers == other.receivers
            && self.exporters == other.exporters
            && self.pipelines == other.pipelines
            && self.processors.keys().eq(other.processors.keys())
            && limiters(self) == limiters(other)
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

impl ReceiverConfig {
    /// Checks the receiver; `key` is `receivers.<id>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.grpc.is_none() && self.http.is_none() {
            return Err(err(format!("{key}.protocols"), "enable grpc, http or both"));
        }
        Ok(())
    }
}

/// OTLP/gRPC listener settings, spelled as the Collector's `configgrpc`. Fields left out of
/// the YAML take their [`Default`].
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcServerConfig {
    /// Listen address.
    pub endpoint: SocketAddr,
    /// Largest accepted message after decompression, in MiB.
    pub max_recv_msg_size_mib: usize,
    /// Calls one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Connections served at once (weft's own: the Collector has no such setting).
    pub max_connections: usize,
    /// Time for a call's request message to arrive once its headers did (weft's own: in the
    /// Collector, grpc-go has none).
    pub read_timeout: Duration,
    /// `keepalive.server_parameters`.
    pub keepalive: GrpcKeepalive,
}

/// `keepalive.server_parameters` of a gRPC listener (grpc-go's `keepalive.ServerParameters`).
/// `0s` turns the idle and age limits off.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcKeepalive {
    /// Close a connection that has had no call in flight this long (GOAWAY).
    pub max_connection_idle: Option<Duration>,
    /// Close a connection this old (GOAWAY), whatever it is doing.
    pub max_connection_age: Option<Duration>,
    /// Calls in flight get this long after an idle or age GOAWAY, then the connection is cut.
    pub max_connection_age_grace: Duration,
    /// Ping a connection that has been quiet this long.
    pub time: Duration,
    /// Close a connection whose ping is not answered within this.
    pub timeout: Duration,
}

impl Default for GrpcKeepalive {
    /// Idle connections closed after 60 s (grpc-go: never), no age limit, 10 s of grace
    /// (grpc-go: unbounded), pings after 2 h of quiet and 20 s to answer (grpc-go's).
    fn default() -> Self {
        GrpcKeepalive {
            max_connection_idle: Some(Duration::from_secs(60)),
            max_connection_age: None,
            max_connection_age_grace: Duration::from_secs(10),
            time: Duration::from_secs(2 * 3600),
            timeout: Duration::from_secs(20),
        }
    }
}

impl Default for GrpcServerConfig {
    /// 127.0.0.1:4317 and 4 MiB, as the Collector; 100 streams per connection, 1000
    /// connections, 30 s for a request message, and [`GrpcKeepalive::default`].
    fn default() -> Self {
        GrpcServerConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4317)),
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: 100,
            max_connections: 1000,
            read_timeout: Duration::from_secs(30),
            keepalive: GrpcKeepalive::default(),
        }
    }
}

impl GrpcServerConfig {
    /// The listener's connection limits.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections,
            // HTTP/2 has no header phase of its own: a connection that sends nothing has no
            // call in flight, and `max_connection_idle` closes it.
            header_read_timeout: None,
            idle_timeout: self.keepalive.max_connection_idle,
            max_connection_age: self.keepalive.max_connection_age,
            close_grace: self.keepalive.max_connection_age_grace,
            http2: Some(Http2Limits {
                max_concurrent_streams: self.max_concurrent_streams,
                keepalive_time: Some(self.keepalive.time),
                keepalive_timeout: self.keepalive.timeout,
            }),
        }
    }
}

/// OTLP/HTTP listener settings, spelled as the Collector's `confighttp`. Fields left out of the
/// YAML take their [`Default`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpServerConfig {
    /// Listen address.
    pub endpoint: SocketAddr,
    /// Largest accepted body, compressed and after decompression, in bytes.
    pub max_request_body_size: usize,
    /// Time to send a request's headers (also the longest wait for the next request on a
    /// kept-alive connection).
    pub read_header_timeout: Duration,
    /// Close a connection that has had no request in flight this long.
    pub idle_timeout: Duration,
    /// Time to read a whole request, headers and body.
    pub read_timeout: Duration,
    /// Connections served at once (weft's own: the Collector has no such setting).
    pub max_connections: usize,
}

impl Default for HttpServerConfig {
    /// 127.0.0.1:4318 and 4 MiB (the Collector: 20 MiB); 1 min for headers and 1 min idle, as
    /// the Collector; 30 s to read a request (the Collector: no limit); 1000 connections.
    fn default() -> Self {
        HttpServerConfig {
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_body_size: 4 << 20,
            read_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(30),
            max_connections: 1000,
        }
    }
}

impl HttpServerConfig {
    /// The listener's connection limits.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections,
            header_read_timeout: Some(self.read_header_timeout),
            idle_timeout: Some(self.idle_timeout),
            max_connection_age: None,
            close_grace: Duration::from_secs(10),
            http2: None,
        }
    }
}

/// A processor.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessorConfig {
    /// A weft plugin component.
    Wasm(WasmConfig),
    /// The Collector's `memory_limiter`: refuses data while weft's memory is over a limit
    /// ([`crate::memory`]).
    MemoryLimiter(MemoryLimiterConfig),
}

impl ProcessorConfig {
    /// The plugin's settings, if this is a `wasm` processor.
    pub fn wasm(&self) -> Option<&WasmConfig> {
        match self {
            ProcessorConfig::Wasm(w) => Some(w),
            ProcessorConfig::MemoryLimiter(_) => None,
        }
    }
}

/// `memory_limiter`, spelled as the Collector's: data is refused (UNAVAILABLE / 503, which OTLP
/// clients retry) while weft's memory use is above `limit - spike_limit`
/// ([`crate::memory::MemoryLimiter`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryLimiterConfig {
    /// How often the process's resident memory is measured.
    pub check_interval: Duration,
    /// The hard limit, in bytes.
    pub limit: MemoryAmount,
    /// How much the use may grow between two checks; the soft limit is `limit - spike_limit`.
    /// `None` (left out, or 0): 20 % of the limit, as the Collector.
    pub spike_limit: Option<MemoryAmount>,
}

/// An amount of memory: bytes, or a percentage of what the machine (or the cgroup) has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryAmount {
    /// `*_mib`, in bytes.
    Bytes(u64),
    /// `*_percentage`, of the total.
    Percent(u64),
}

impl MemoryAmount {
    /// In bytes, with `total` the memory available to the process.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MemoryAmount::Bytes(b) => b,
            MemoryAmount::Percent(p) => total / 100 * p,
        }
    }
}

/// An exporter: one variant per kind, each implemented in its own file under
/// [`crate::exporter`].
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterConfig {
    /// Writes what it gets to stdout ([`crate::exporter::debug`]).
    Debug(DebugExporterConfig),
    /// Appends OTLP/JSON lines to a file ([`crate::exporter::file`]).
    File(FileExporterConfig),
    /// Sends OTLP/gRPC to another collector or back end ([`crate::exporter::otlp`]).
    Otlp(OtlpExporterConfig),
    /// Sends OTLP/HTTP (protobuf) to `<endpoint>/v1/traces` and `<endpoint>/v1/logs`
    /// ([`crate::exporter::otlphttp`]).
    OtlpHttp(OtlpExporterConfig),
}

impl ExporterConfig {
    /// Checks the exporter's settings; `key` is `exporters.<id>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            ExporterConfig::Debug(_) | ExporterConfig::File(_) => Ok(()),
            ExporterConfig::Otlp(o) | ExporterConfig::OtlpHttp(o) => o.validate(key),
        }
    }

    /// How the shared exporter loop queues, batches and retries for this exporter. Only the
    /// OTLP exporters batch and retry; `debug` and `file` write each request as it comes, once.
    pub fn delivery(&self) -> DeliveryConfig {
        match self {
            ExporterConfig::Debug(_) | ExporterConfig::File(_) => DeliveryConfig::default(),
            ExporterConfig::Otlp(o) | ExporterConfig::OtlpHttp(o) => DeliveryConfig {
                queue: o.sending_queue.clone(),
                batch: Some(o.batch.clone()),
                retry: Some(o.retry_on_failure.clone()),
            },
        }
    }
}

/// `debug`: one line per request on stdout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DebugExporterConfig {
    /// `verbosity: detailed`: the OTLP/JSON too. Default `basic` (one line per request).
    pub detailed: bool,
}

/// `file`: appends OTLP/JSON lines (one request per line) to a file. No [`Default`]: the path
/// has none.
#[derive(Debug, Clone, PartialEq)]
pub struct FileExporterConfig {
    /// The file (relative paths are taken relative to the configuration's folder).
    pub path: PathBuf,
}

/// The OTLP exporters (gRPC and HTTP): batching, retries with exponential backoff, gzip.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpExporterConfig {
    /// `http://host:port` (a bare `host:port` gets `http://`); for OTLP/HTTP the base URL that
    /// `/v1/traces` and `/v1/logs` are appended to. No default: the YAML must name one.
    pub endpoint: String,
    /// Gzip requests.
    pub gzip: bool,
    /// Deadline of one export call.
    pub timeout: Duration,
    /// `batch`.
    pub batch: BatchConfig,
    /// `retry_on_failure`.
    pub retry_on_failure: RetryConfig,
    /// `sending_queue`.
    pub sending_queue: QueueConfig,
}

impl Default for OtlpExporterConfig {
    /// No endpoint; gzip on and a 5 s timeout, as the Collector; the defaults of
    /// [`BatchConfig`], [`RetryConfig`] and [`QueueConfig`].
    fn default() -> Self {
        OtlpExporterConfig {
            endpoint: String::new(),
            gzip: true,
            timeout: Duration::from_secs(5),
            batch: BatchConfig::default(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
        }
    }
}

impl OtlpExporterConfig {
    /// Checks the ranges; `key` is `exporters.<id>`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.batch.validate(&format!("{key}.batch"))?;
        self.sending_queue
            .validate(&format!("{key}.sending_queue"))?;
        Ok(())
    }
}

/// `batch`: queued requests are merged into one export.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Items per export at most; queued requests are merged up to this.
    pub send_batch_size: u64,
    /// How long a partial batch waits for more.
    pub timeout: Duration,
}

impl Default for BatchConfig {
    /// 8192 items, 200 ms, as the Collector's batch processor.
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: Duration::from_millis(200),
        }
    }
}

impl BatchConfig {
    /// `send_batch_size` ≥ 1; `key` is `exporters.<id>.batch`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.send_batch_size == 0 {
            return Err(err(format!("{key}.send_batch_size"), "must be at least 1"));
        }
        Ok(())
    }
}

/// `retry_on_failure`: exponential backoff for retryable failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// First retry delay; doubles up to `max_interval`.
    pub initial_interval: Duration,
    /// Longest retry delay.
    pub max_interval: Duration,
    /// Give up on a batch after retrying this long (`max_elapsed_time`).
    pub max_elapsed: Duration,
}

impl Default for RetryConfig {
    /// 1 s doubling up to 30 s, for at most 300 s, as the Collector.
    fn default() -> Self {
        RetryConfig {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// `sending_queue`: the bounded queue in front of an exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// How much the queue holds, in `sizer` units, before receivers answer "retry later".
    pub queue_size: usize,
    /// What `queue_size` counts.
    pub sizer: Sizer,
}

/// `sending_queue.sizer`: what a queue's size counts, as the Collector's exporterhelper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sizer {
    /// Requests, whatever their size (the default).
    #[default]
    Requests,
    /// Spans or log records.
    Items,
    /// Bytes of the requests' protobuf encoding.
    Bytes,
}

impl Sizer {
    /// How it is spelled in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Sizer::Requests => "requests",
            Sizer::Items => "items",
            Sizer::Bytes => "bytes",
        }
    }
}

impl Default for QueueConfig {
    /// 1000 requests, as the Collector (every exporter kind).
    fn default() -> Self {
        QueueConfig {
            queue_size: 1000,
            sizer: Sizer::Requests,
        }
    }
}

impl QueueConfig {
    /// `queue_size` ≥ 1; `key` is `exporters.<id>.sending_queue`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.queue_size == 0 {
            return Err(err(format!("{key}.queue_size"), "must be at least 1"));
        }
        Ok(())
    }
}

/// What the shared exporter loop ([`crate::exporter::run`]) does around an exporter: its queue,
/// whether queued requests are merged into batches, and whether failures are retried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryConfig {
    /// The queue.
    pub queue: QueueConfig,
    /// Merge queued requests; `None`: each request is exported on its own.
    pub batch: Option<BatchConfig>,
    /// Retry retryable failures; `None`: every failure drops the request.
    pub retry: Option<RetryConfig>,
}

// The YAML as written. Everything left out is `None` and takes the typed config's `Default`;
// durations stay strings here so that a bad one is reported under its own key.

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
    #[serde(default)]
    sizer: Option<String>,
}

fn queue(key: &str, r: Option<RawQueue>) -> Result<QueueConfig, ConfigError> {
    let d = QueueConfig::default();
    let Some(r) = r else { return Ok(d) };
    let sizer = match r.sizer.as_deref() {
        None => d.sizer,
        Some("requests") => Sizer::Requests,
        Some("items") => Sizer::Items,
        Some("bytes") => Sizer::Bytes,
        Some(o) => {
            return Err(err(
                format!("{key}.sizer"),
                format!("`{o}`: use requests, items or bytes"),
            ));
        }
    };
    Ok(QueueConfig {
        queue_size: r.queue_size.unwrap_or(d.queue_size),
        sizer,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemoryLimiter {
    #[serde(default)]
    check_interval: Option<String>,
    #[serde(default)]
    limit_mib: Option<u64>,
    #[serde(default)]
    spike_limit_mib: Option<u64>,
    #[serde(default)]
    limit_percentage: Option<u64>,
    #[serde(default)]
    spike_limit_percentage: Option<u64>,
}

/// The Collector's rules: a limit in MiB or as a percentage (not both), a spike limit in the
/// same unit below it (20 % of the limit when left out). Unlike the Collector, `check_interval`
/// may be left out (1 s, what the Collector's docs recommend).
fn memory_limiter(key: &str, r: RawMemoryLimiter) -> Result<MemoryLimiterConfig, ConfigError> {
    let check_interval = positive_duration_at(
        format!("{key}.check_interval"),
        r.check_interval,
        Duration::from_secs(1),
        "1s",
    )?;
    let mib = |v: u64| v.saturating_mul(1 << 20);
    // 0 is "not set", as in the Collector: the spike is then 20 % of the limit.
    let (spike_mib, spike_pct) = (
        r.spike_limit_mib.filter(|v| *v > 0),
        r.spike_limit_percentage.filter(|v| *v > 0),
    );
    let (limit, spike) = match (r.limit_mib, r.limit_percentage) {
        (Some(_), Some(_)) => {
            return Err(err(key, "give limit_mib or limit_percentage, not both"));
        }
        (None, None) => {
            return Err(err(
                format!("{key}.limit_mib"),
                "set limit_mib (or limit_percentage): the memory the process may use",
            ));
        }
        (Some(l), None) => {
            if spike_pct.is_some() {
                return Err(err(
                    format!("{key}.spike_limit_percentage"),
                    "with limit_mib, give spike_limit_mib",
                ));
            }
            if l == 0 {
                return Err(err(format!("{key}.limit_mib"), "must be at least 1"));
            }
            if spike_mib.is_some_and(|s| s >= l) {
                return Err(err(
                    format!("{key}.spike_limit_mib"),
                    format!("must be below limit_mib ({l})"),
                ));
            }
            (
                MemoryAmount::Bytes(mib(l)),
                spike_mib.map(|s| MemoryAmount::Bytes(mib(s))),
            )
        }
        (None, Some(p)) => {
            if spike_mib.is_some() {
                return Err(err(
                    format!("{key}.spike_limit_mib"),
                    "with limit_percentage, give spike_limit_percentage",
                ));
            }
            if p == 0 || p > 100 {
                return Err(err(
                    format!("{key}.limit_percentage"),
                    "must be between 1 and 100",
                ));
            }
            if spike_pct.is_some_and(|s| s >= p) {
                return Err(err(
                    format!("{key}.spike_limit_percentage"),
                    format!("must be below limit_percentage ({p})"),
                ));
            }
            if crate::memory::total_memory() == 0 {
                return Err(err(
                    format!("{key}.limit_percentage"),
                    "the memory available cannot be read here (cgroup memory.max, /proc/meminfo): give limit_mib",
                ));
            }
            (
                MemoryAmount::Percent(p),
                spike_pct.map(MemoryAmount::Percent),
            )
        }
    };
    Ok(MemoryLimiterConfig {
        check_interval,
        limit,
        spike_limit: spike,
    })
}

fn otlp_exporter(key: &str, r: RawOtlpExporter) -> Result<OtlpExporterConfig, ConfigError> {
    let d = OtlpExporterConfig::default();
    let endpoint = if r.endpoint.contains("://") {
        r.endpoint
    } else {
        format!("http://{}", r.endpoint)
    };
    let gzip = match r.compression.as_deref() {
        None => d.gzip,
        Some("gzip") => true,
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
    let retry_key = |k: &str| format!("{key}.retry_on_failure.{k}");
    Ok(OtlpExporterConfig {
        endpoint,
        gzip,
        timeout: duration_at(format!("{key}.timeout"), r.timeout, d.timeout)?,
        batch: BatchConfig {
            send_batch_size: batch.send_batch_size.unwrap_or(d.batch.send_batch_size),
            timeout: duration_at(
                format!("{key}.batch.timeout"),
                batch.timeout,
                d.batch.timeout,
            )?,
        },
        retry_on_failure: RetryConfig {
            initial_interval: duration_at(
                retry_key("initial_interval"),
                retry.initial_interval,
                d.retry_on_failure.initial_interval,
            )?,
            max_interval: duration_at(
                retry_key("max_interval"),
                retry.max_interval,
                d.retry_on_failure.max_interval,
            )?,
            max_elapsed: duration_at(
                retry_key("max_elapsed_time"),
                retry.max_elapsed_time,
                d.retry_on_failure.max_elapsed,
            )?,
        },
        sending_queue: queue(&format!("{key}.sending_queue"), r.sending_queue)?,
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
struct RawGrpcServer {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    max_recv_msg_size_mib: Option<usize>,
    #[serde(default)]
    max_concurrent_streams: Option<u32>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    read_timeout: Option<String>,
    #[serde(default)]
    keepalive: Option<RawKeepalive>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKeepalive {
    #[serde(default)]
    server_parameters: Option<RawServerParameters>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServerParameters {
    #[serde(default)]
    max_connection_idle: Option<String>,
    #[serde(default)]
    max_connection_age: Option<String>,
    #[serde(default)]
    max_connection_age_grace: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpServer {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    max_request_body_size: Option<usize>,
    /// weft's first spelling, kept: the same limit in MiB.
    #[serde(default)]
    max_request_body_size_mib: Option<usize>,
    #[serde(default)]
    read_header_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    read_timeout: Option<String>,
    #[serde(default)]
    max_connections: Option<usize>,
}

/// `endpoint`: absent → `default`; else `host:port`.
fn endpoint_at(
    key: &str,
    v: Option<String>,
    default: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            err(
                format!("{key}.endpoint"),
                format!("`{s}` is not host:port (e.g. 127.0.0.1:4317)"),
            )
        }),
    }
}

/// `max_connections` ≥ 1: absent → `default`.
fn connections_at(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(err(format!("{key}.max_connections"), "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// A limit that `0s` turns off, as grpc-go's keepalive parameters: absent → `default`.
fn optional_duration_at(
    key: String,
    v: Option<String>,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => Ok(Some(duration_at(key, Some(s), Duration::ZERO)?).filter(|d| !d.is_zero())),
    }
}

fn grpc_server(key: &str, r: RawGrpcServer) -> Result<GrpcServerConfig, ConfigError> {
    let d = GrpcServerConfig::default();
    let max_recv_msg_size_mib = match r.max_recv_msg_size_mib {
        Some(0) => {
            return Err(err(
                format!("{key}.max_recv_msg_size_mib"),
                "must be at least 1",
            ));
        }
        Some(n) if n > 1024 => {
            return Err(err(
                format!("{key}.max_recv_msg_size_mib"),
                "must be at most 1024",
            ));
        }
        Some(n) => n,
        None => d.max_recv_msg_size_mib,
    };
    let max_concurrent_streams = match r.max_concurrent_streams {
        Some(0) => {
            return Err(err(
                format!("{key}.max_concurrent_streams"),
                "must be at least 1",
            ));
        }
        Some(n) => n,
        None => d.max_concurrent_streams,
    };
    let p = r
        .keepalive
        .unwrap_or_default()
        .server_parameters
        .unwrap_or_default();
    let kd = d.keepalive;
    let kkey = |k: &str| format!("{key}.keepalive.server_parameters.{k}");
    Ok(GrpcServerConfig {
        endpoint: endpoint_at(key, r.endpoint, d.endpoint)?,
        max_recv_msg_size_mib,
        max_concurrent_streams,
        max_connections: connections_at(key, r.max_connections, d.max_connections)?,
        read_timeout: positive_duration_at(
            format!("{key}.read_timeout"),
            r.read_timeout,
            d.read_timeout,
            "30s",
        )?,
        keepalive: GrpcKeepalive {
            max_connection_idle: optional_duration_at(
                kkey("max_connection_idle"),
                p.max_connection_idle,
                kd.max_connection_idle,
            )?,
            max_connection_age: optional_duration_at(
                kkey("max_connection_age"),
                p.max_connection_age,
                kd.max_connection_age,
            )?,
            max_connection_age_grace: duration_at(
                kkey("max_connection_age_grace"),
                p.max_connection_age_grace,
                kd.max_connection_age_grace,
            )?,
            time: positive_duration_at(kkey("time"), p.time, kd.time, "2h")?,
            timeout: positive_duration_at(kkey("timeout"), p.timeout, kd.timeout, "20s")?,
        },
    })
}

fn http_server(key: &str, r: RawHttpServer) -> Result<HttpServerConfig, ConfigError> {
    let d = HttpServerConfig::default();
    let max_request_body_size = match (r.max_request_body_size, r.max_request_body_size_mib) {
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{key}.max_request_body_size_mib"),
                "give max_request_body_size (bytes) or max_request_body_size_mib, not both",
            ));
        }
        (Some(bytes), None) => bytes,
        (None, Some(mib)) => mib.saturating_mul(1 << 20),
        (None, None) => d.max_request_body_size,
    };
    if !(1..=1 << 30).contains(&max_request_body_size) {
        return Err(err(
            format!("{key}.max_request_body_size"),
            "must be between 1 byte and 1 GiB",
        ));
    }
    let t = |k: &str, v: Option<String>, default: Duration, example: &str| {
        positive_duration_at(format!("{key}.{k}"), v, default, example)
    };
    Ok(HttpServerConfig {
        endpoint: endpoint_at(key, r.endpoint, d.endpoint)?,
        max_request_body_size,
        read_header_timeout: t(
            "read_header_timeout",
            r.read_header_timeout,
            d.read_header_timeout,
            "1m",
        )?,
        idle_timeout: t("idle_timeout", r.idle_timeout, d.idle_timeout, "1m")?,
        read_timeout: t("read_timeout", r.read_timeout, d.read_timeout, "30s")?,
        max_connections: connections_at(key, r.max_connections, d.max_connections)?,
    })
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
                let grpc = match r.protocols.grpc {
                    Some(g) => {
                        let gkey = format!("{key}.protocols.grpc");
                        Some(grpc_server(&gkey, from_value(&gkey, g)?)?)
                    }
                    None => None,
                };
                let http = match r.protocols.http {
                    Some(h) => {
                        let hkey = format!("{key}.protocols.http");
                        Some(http_server(&hkey, from_value(&hkey, h)?)?)
                    }
                    None => None,
                };
                let r = ReceiverConfig { grpc, http };
                r.validate(&key)?;
                receivers.insert(id, r);
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
            "memory_limiter" => {
                let r: RawMemoryLimiter = from_value(&key, v)?;
                processors.insert(id, ProcessorConfig::MemoryLimiter(memory_limiter(&key, r)?));
            }
            other => {
                return Err(err(
                    key,
                    format!(
                        "unknown processor type `{other}` (weft has `wasm` and `memory_limiter`)"
                    ),
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
                    None => DebugExporterConfig::default().detailed,
                    Some("basic") | Some("normal") => false,
                    Some("detailed") => true,
                    Some(o) => {
                        return Err(err(
                            format!("{key}.verbosity"),
                            format!("`{o}`: use basic or detailed"),
                        ));
                    }
                };
                ExporterConfig::Debug(DebugExporterConfig { detailed })
            }
            "file" => {
                let r: RawFile = from_value(&key, v)?;
                ExporterConfig::File(FileExporterConfig {
                    path: base.join(r.path),
                })
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
        e.validate(&key)?;
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
        for (i, pr) in p.processors.iter().enumerate() {
            match processors.get(pr) {
                None => {
                    return Err(err(
                        format!("{key}.processors"),
                        format!("`{pr}` is not defined under processors"),
                    ));
                }
                // The Collector allows it anywhere and recommends it first; weft checks memory
                // before any work, so anywhere else would not mean what it says.
                Some(ProcessorConfig::MemoryLimiter(_)) if i > 0 => {
                    return Err(err(
                        format!("{key}.processors"),
                        format!(
                            "`{pr}` must be the first processor (it refuses data before any work is done)"
                        ),
                    ));
                }
                Some(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter(yaml: &str) -> Result<ExporterConfig, ConfigError> {
        let raw = BTreeMap::from([(
            "otlp".to_string(),
            serde_norway::from_str(yaml).expect("yaml"),
        )]);
        parse_exporters(raw, std::path::Path::new(".")).map(|mut e| e.remove("otlp").expect("otlp"))
    }

    #[test]
    fn what_the_yaml_leaves_out_takes_the_defaults() {
        let Ok(ExporterConfig::Otlp(c)) = exporter("endpoint: peer:4317") else {
            panic!("an otlp exporter");
        };
        assert_eq!(
            c,
            OtlpExporterConfig {
                endpoint: "http://peer:4317".into(),
                ..OtlpExporterConfig::default()
            }
        );
        assert_eq!(
            (c.batch.send_batch_size, c.sending_queue.queue_size),
            (8192, 1000)
        );
        assert_eq!(c.retry_on_failure.max_elapsed, Duration::from_secs(300));
    }

    #[test]
    fn ranges_are_checked_under_their_keys() {
        let key = |yaml: &str| exporter(yaml).map(|_| ()).map_err(|e| e.key);
        assert_eq!(
            key("{endpoint: x, batch: {send_batch_size: 0}}"),
            Err("exporters.otlp.batch.send_batch_size".into())
        );
        assert_eq!(
            key("{endpoint: x, sending_queue: {queue_size: 0}}"),
            Err("exporters.otlp.sending_queue.queue_size".into())
        );
        assert_eq!(
            key("{endpoint: x, retry_on_failure: {max_interval: soon}}"),
            Err("exporters.otlp.retry_on_failure.max_interval".into())
        );
        assert_eq!(key("{endpoint: x, batch: {send_batch_size: 1}}"), Ok(()));
    }

    fn receiver(yaml: &str) -> Result<ReceiverConfig, ConfigError> {
        let raw = BTreeMap::from([(
            "otlp".to_string(),
            serde_norway::from_str(yaml).expect("yaml"),
        )]);
        parse_receivers(raw).map(|mut r| r.remove("otlp").expect("otlp"))
    }

    #[test]
    fn listener_settings_are_spelled_as_the_collectors_and_default_safely() {
        let r = receiver("protocols: {grpc: {}, http: {}}").expect("defaults");
        let (g, h) = (r.grpc.expect("grpc"), r.http.expect("http"));
        assert_eq!(g, GrpcServerConfig::default());
        assert_eq!(h, HttpServerConfig::default());
        assert_eq!(
            g.keepalive.max_connection_idle,
            Some(Duration::from_secs(60))
        );
        assert_eq!(h.read_timeout, Duration::from_secs(30));
        let r = receiver(
            "protocols:
  grpc:
    max_concurrent_streams: 7
    max_connections: 9
    read_timeout: 2s
    keepalive: {server_parameters: {max_connection_idle: 0s, max_connection_age: 5m, max_connection_age_grace: 3s, time: 30s, timeout: 4s}}
  http:
    max_request_body_size: 1024
    read_header_timeout: 5s
    idle_timeout: 6s
    read_timeout: 7s
    max_connections: 3",
        )
        .expect("every key");
        let g = r.grpc.expect("grpc");
        assert_eq!((g.max_concurrent_streams, g.max_connections), (7, 9));
        assert_eq!(g.read_timeout, Duration::from_secs(2));
        assert_eq!(g.keepalive.max_connection_idle, None, "0s turns it off");
        assert_eq!(
            g.keepalive.max_connection_age,
            Some(Duration::from_secs(300))
        );
        let limits = g.limits();
        assert_eq!(limits.close_grace, Duration::from_secs(3));
        let h2 = limits.http2.expect("gRPC is HTTP/2");
        assert_eq!(h2.keepalive_time, Some(Duration::from_secs(30)));
        assert_eq!(h2.keepalive_timeout, Duration::from_secs(4));
        let h = r.http.expect("http");
        assert_eq!(h.max_request_body_size, 1024);
        assert_eq!(
            (h.read_header_timeout, h.idle_timeout, h.read_timeout),
            (
                Duration::from_secs(5),
                Duration::from_secs(6),
                Duration::from_secs(7)
            )
        );
        assert_eq!(h.limits().max_connections, 3);
        // weft's first spelling still works.
        let r = receiver("protocols: {http: {max_request_body_size_mib: 2}}").expect("mib");
        assert_eq!(r.http.expect("http").max_request_body_size, 2 << 20);
    }

    #[test]
    fn listener_errors_name_the_key_and_unknown_keys_are_refused() {
        let key = |yaml: &str| receiver(yaml).map(|_| ()).map_err(|e| e.key);
        let g = "receivers.otlp.protocols.grpc";
        let h = "receivers.otlp.protocols.http";
        for (yaml, want) in [
            (
                "protocols: {grpc: {max_connections: 0}}",
                format!("{g}.max_connections"),
            ),
            (
                "protocols: {grpc: {max_recv_msg_size_mib: 0}}",
                format!("{g}.max_recv_msg_size_mib"),
            ),
            (
                "protocols: {grpc: {read_timeout: 0s}}",
                format!("{g}.read_timeout"),
            ),
            (
                "protocols: {grpc: {keepalive: {server_parameters: {timeout: soon}}}}",
                format!("{g}.keepalive.server_parameters.timeout"),
            ),
            (
                "protocols: {grpc: {keepalive: {enforcement_policy: {}}}}",
                g.to_string(),
            ),
            (
                "protocols: {grpc: {keepalive: {server_parameters: {idle: 1s}}}}",
                g.to_string(),
            ),
            (
                "protocols: {grpc: {endpoint: nowhere}}",
                format!("{g}.endpoint"),
            ),
            (
                "protocols: {http: {idle_timeout: later}}",
                format!("{h}.idle_timeout"),
            ),
            (
                "protocols: {http: {max_request_body_size: 0}}",
                format!("{h}.max_request_body_size"),
            ),
            (
                "protocols: {http: {max_request_body_size: 1, max_request_body_size_mib: 1}}",
                format!("{h}.max_request_body_size_mib"),
            ),
            ("protocols: {http: {write_timeout: 1s}}", h.to_string()),
        ] {
            assert_eq!(key(yaml), Err(want), "{yaml}");
        }
    }
}
