//! `weft run` configuration, shaped like the OpenTelemetry Collector's: `receivers`,
//! `processors`, `exporters` keyed by component id (`type` or `type/name`), and
//! `service.pipelines.{traces,logs}` naming them. Errors name the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::{Capabilities, FailPolicy};

/// The pipeline weft runs with no configuration file: OTLP gRPC and HTTP on loopback →
/// pii-mask → sampler → debug exporter on stdout, with the two plugins built into the binary.
pub const DEFAULT_CONFIG: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318

processors:
  wasm/pii-mask:
    component: builtin:pii-mask
    fail_policy: closed
  wasm/sampler:
    component: builtin:sampler
    config:
      percentage: 100

exporters:
  debug:
    verbosity: basic

service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [wasm/pii-mask, wasm/sampler]
      exporters: [debug]
    logs:
      receivers: [otlp]
      processors: [wasm/pii-mask]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:8888
"#;

/// A configuration error: `key` is the dotted path of the offending key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// e.g. `processors.wasm/pii.deadline`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receivers by id.
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// Processors by id.
    pub processors: BTreeMap<String, ProcessorConfig>,
    /// Exporters by id.
    pub exporters: BTreeMap<String, ExporterConfig>,
    /// Pipelines by signal.
    pub pipelines: BTreeMap<Signal, PipelineConfig>,
    /// HTTP filter proxies by id.
    pub proxies: BTreeMap<String, ProxyConfig>,
    /// Where self-metrics, /healthz and /readyz are served; `None` disables it.
    pub metrics_address: Option<SocketAddr>,
    /// The file it was read from ([`Config::load`]); `weft run` watches it for changes.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Reads and parses a configuration file; component paths are relative to its folder.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
        let base = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut config = Config::parse(&text, &base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Whether `other` differs from `self` only in its processors' and filters' settings (what a
    /// running collector can apply without new listeners, queues or filter chains).
    pub fn same_structure(&self, other: &Config) -> bool {
        self.receivers == other.receivers
            && self.exporters == other.exporters
            && self.pipelines == other.pipelines
            && self.metrics_address == other.metrics_address
            && self.processors.keys().eq(other.processors.keys())
            && self.proxies.len() == other.proxies.len()
            && self
                .proxies
                .iter()
                .zip(&other.proxies)
                .all(|((a_id, a), (b_id, b))| a_id == b_id && a.same_structure(b))
    }

    /// Every Wasm plugin of the configuration, keyed as hot reload and errors name them:
    /// processors by id, filters as `proxies.<id>.filters.<name>`.
    pub fn wasm_units(&self) -> BTreeMap<String, (WasmUnit, &WasmProcessorConfig)> {
        let mut units = BTreeMap::new();
        for (id, p) in &self.processors {
            let ProcessorConfig::Wasm(w) = p;
            units.insert(id.clone(), (WasmUnit::Processor, w));
        }
        for (proxy, p) in &self.proxies {
            for (i, f) in p.filters.iter().enumerate() {
                units.insert(
                    filter_key(proxy, &f.name),
                    (
                        WasmUnit::Filter {
                            proxy: proxy.clone(),
                            index: i,
                        },
                        &f.wasm,
                    ),
                );
            }
        }
        units
    }
}

/// A telemetry signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
}

impl Signal {
    /// `traces` or `logs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
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
    Wasm(WasmProcessorConfig),
}

/// Where a plugin component comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ComponentSource {
    /// A plugin built into the `weft` binary (`builtin:pii-mask`, `builtin:sampler`).
    Builtin(String),
    /// A component file; watched for changes.
    File(PathBuf),
}

/// A Wasm processor: the component, its plugin configuration, limits and fail policy.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmProcessorConfig {
    /// The component.
    pub component: ComponentSource,
    /// The plugin's own configuration (YAML, handed to the plugin as JSON).
    pub config: serde_json::Value,
    /// CPU deadline per call.
    pub deadline: Duration,
    /// Memory cap per instance, bytes.
    pub memory_limit: usize,
    /// Fuel per call, if any.
    pub fuel: Option<u64>,
    /// What happens to a batch the plugin fails on.
    pub fail_policy: FailPolicy,
    /// Granted capabilities.
    pub capabilities: Capabilities,
}

/// What kind of Wasm plugin a [`Config::wasm_units`] entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmUnit {
    /// A processor in the OTLP pipelines.
    Processor,
    /// Filter number `index` of proxy `proxy`.
    Filter {
        /// The proxy's id.
        proxy: String,
        /// The filter's position in the chain.
        index: usize,
    },
}

/// The key of filter `name` of proxy `proxy` in logs and hot reload, and its plugin name's base.
pub fn filter_key(proxy: &str, name: &str) -> String {
    format!("proxies.{proxy}.filters.{name}")
}

/// An HTTP filter proxy: a listener, one upstream, a chain of Wasm filters.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Where the proxy listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The upstream's `host:port` (from `http://host:port`).
    pub upstream: String,
    /// The filters, in request order (responses go through them in reverse).
    pub filters: Vec<FilterConfig>,
    /// Deadline for the upstream's whole response (default 15 s, as Envoy's route timeout).
    pub timeout: Duration,
    /// Largest request or response body buffered, bytes (default 4 MiB).
    pub max_body: usize,
}

impl ProxyConfig {
    /// Whether `other` has the same listener, upstream, limits and filter names in the same
    /// order (what hot reload can keep while swapping filter versions and settings).
    pub fn same_structure(&self, other: &ProxyConfig) -> bool {
        self.listen == other.listen
            && self.upstream == other.upstream
            && self.timeout == other.timeout
            && self.max_body == other.max_body
            && self.filters.len() == other.filters.len()
            && self
                .filters
                .iter()
                .zip(&other.filters)
                .all(|(a, b)| a.name == b.name)
    }
}

/// One filter of a proxy's chain.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// Its name in the chain (unique per proxy): `name:` or the component's file stem. The
    /// plugin is called `<proxy>/<name>` in logs and metrics.
    pub name: String,
    /// The component and its settings, as for a `wasm` processor.
    pub wasm: WasmProcessorConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: String,
    upstream: String,
    #[serde(default)]
    filters: Vec<serde_norway::Value>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_body_mib: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWasm {
    component: String,
    #[serde(default)]
    config: Option<serde_norway::Value>,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    memory_limit_mib: Option<usize>,
    #[serde(default)]
    fuel: Option<u64>,
    #[serde(default)]
    fail_policy: FailPolicy,
    #[serde(default)]
    capabilities: Capabilities,
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

/// A duration option: absent → `default`; present → parsed or an error naming `key`.
fn duration_at(key: String, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(&s)
            .ok_or_else(|| err(key, format!("`{s}` is not a duration like 200ms"))),
    }
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

/// Parses a duration as the Collector writes them: `200ms`, `5s`, `1m`, `1500us`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The type part of a component id (`wasm` in `wasm/pii`).
fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

fn from_value<T: serde::de::DeserializeOwned>(
    key: &str,
    v: serde_norway::Value,
) -> Result<T, ConfigError> {
    // An empty YAML mapping value (`debug:`) parses as null; treat it as `{}`.
    let v = if v.is_null() {
        serde_norway::Value::Mapping(Default::default())
    } else {
        v
    };
    serde_norway::from_value(v).map_err(|e| err(key, e.to_string()))
}

/// Checks a Wasm plugin's settings (a `wasm` processor, or a proxy filter) at `key`.
fn wasm_config(
    key: &str,
    r: RawWasm,
    base: &std::path::Path,
) -> Result<WasmProcessorConfig, ConfigError> {
    let component = match r.component.strip_prefix("builtin:") {
        Some(name) if crate::builtin::get(name).is_some() => {
            ComponentSource::Builtin(name.to_string())
        }
        Some(name) => {
            return Err(err(
                format!("{key}.component"),
                format!(
                    "no built-in plugin `{name}` (there are: {})",
                    crate::builtin::NAMES.join(", ")
                ),
            ));
        }
        None => ComponentSource::File(base.join(&r.component)),
    };
    let config = match r.config {
        None => serde_json::json!({}),
        Some(v) => {
            serde_json::to_value(v).map_err(|e| err(format!("{key}.config"), e.to_string()))?
        }
    };
    if !config.is_object() {
        return Err(err(format!("{key}.config"), "must be a mapping"));
    }
    let deadline = match r.deadline {
        None => Duration::from_millis(100),
        Some(d) => parse_duration(&d).filter(|d| !d.is_zero()).ok_or_else(|| {
            err(
                format!("{key}.deadline"),
                format!("`{d}` is not a duration like 100ms"),
            )
        })?,
    };
    let memory_limit = r.memory_limit_mib.unwrap_or(64);
    if memory_limit == 0 || memory_limit > 1024 {
        return Err(err(
            format!("{key}.memory_limit_mib"),
            "must be between 1 and 1024",
        ));
    }
    Ok(WasmProcessorConfig {
        component,
        config,
        deadline,
        memory_limit: memory_limit << 20,
        fuel: r.fuel,
        fail_policy: r.fail_policy,
        capabilities: r.capabilities,
    })
}

/// Checks one proxy at `key` (`proxies.<id>`).
fn proxy_config(
    key: &str,
    r: RawProxy,
    base: &std::path::Path,
) -> Result<ProxyConfig, ConfigError> {
    let listen = r.listen.parse().map_err(|_| {
        err(
            format!("{key}.listen"),
            format!("`{}` is not host:port (e.g. 127.0.0.1:8080)", r.listen),
        )
    })?;
    let upstream = upstream_authority(&r.upstream)
        .map_err(|m| err(format!("{key}.upstream"), format!("`{}`: {m}", r.upstream)))?;
    let timeout = match r.timeout {
        None => Duration::from_secs(15),
        Some(t) => parse_duration(&t).filter(|d| !d.is_zero()).ok_or_else(|| {
            err(
                format!("{key}.timeout"),
                format!("`{t}` is not a duration like 15s"),
            )
        })?,
    };
    let max_body_mib = r.max_body_mib.unwrap_or(4);
    if max_body_mib == 0 || max_body_mib > 1024 {
        return Err(err(
            format!("{key}.max_body_mib"),
            "must be between 1 and 1024",
        ));
    }
    let mut filters: Vec<FilterConfig> = Vec::new();
    for (i, v) in r.filters.into_iter().enumerate() {
        let fkey = format!("{key}.filters[{i}]");
        // `name` is the proxy's, the rest is a `wasm` processor's settings.
        let mut v = v;
        let name = match v.as_mapping_mut().and_then(|m| m.remove("name")) {
            None => None,
            Some(serde_norway::Value::String(n)) => Some(n),
            Some(_) => return Err(err(format!("{fkey}.name"), "must be a string")),
        };
        let raw: RawWasm = from_value(&fkey, v)?;
        let wasm = wasm_config(&fkey, raw, base)?;
        let name = match name {
            Some(n) => n,
            None => match &wasm.component {
                ComponentSource::Builtin(b) => b.clone(),
                ComponentSource::File(path) => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("filter{i}")),
            },
        };
        if name.is_empty() || name.contains(['/', '"', '\\']) {
            return Err(err(
                format!("{fkey}.name"),
                format!("`{name}`: a filter name is a plain name (no `/` or quotes)"),
            ));
        }
        if filters.iter().any(|f| f.name == name) {
            return Err(err(
                format!("{fkey}.name"),
                format!("a second filter named `{name}` in this proxy: give one a `name:`"),
            ));
        }
        filters.push(FilterConfig { name, wasm });
    }
    Ok(ProxyConfig {
        listen,
        upstream,
        filters,
        timeout,
        max_body: max_body_mib << 20,
    })
}

/// `http://host:port` (or a bare `host:port`) → `host:port`. No TLS, no path.
fn upstream_authority(s: &str) -> Result<String, &'static str> {
    let rest = match s.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err("use http://host:port (weft does not originate TLS)"),
        None => s,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err("give scheme://host:port without a path");
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(authority.to_string())
        }
        _ => Err("needs a host and a port, e.g. http://127.0.0.1:9000"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    receivers: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    processors: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    exporters: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    proxies: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    service: RawService,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    pipelines: BTreeMap<String, PipelineConfig>,
    #[serde(default)]
    telemetry: Option<RawTelemetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    metrics: Option<RawMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `host:port`, or `none` to disable.
    address: String,
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

impl Config {
    /// Parses and validates YAML text. Relative component paths are taken relative to `base`.
    pub fn parse(yaml: &str, base: &std::path::Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_norway::from_str(yaml).map_err(|e| err("config", e.to_string()))?;

        let mut receivers = BTreeMap::new();
        for (id, v) in raw.receivers {
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

        let mut processors = BTreeMap::new();
        for (id, v) in raw.processors {
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

        let mut exporters = BTreeMap::new();
        for (id, v) in raw.exporters {
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

        let mut pipelines = BTreeMap::new();
        for (name, p) in raw.service.pipelines {
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
        let mut proxies = BTreeMap::new();
        for (id, v) in raw.proxies {
            let key = format!("proxies.{id}");
            if id.is_empty() || id.contains(['/', '.', '"', '\\']) {
                return Err(err(
                    key,
                    "a proxy id is a plain name (no `/`, `.` or quotes)",
                ));
            }
            let r: RawProxy = from_value(&key, v)?;
            proxies.insert(id.clone(), proxy_config(&key, r, base)?);
        }
        if pipelines.is_empty() && proxies.is_empty() {
            return Err(err(
                "service.pipelines",
                "define a traces or logs pipeline (or a proxy under `proxies`)",
            ));
        }

        let metrics_address = match raw.service.telemetry.and_then(|t| t.metrics) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8888))),
            Some(m) if m.address == "none" => None,
            Some(m) => Some(m.address.parse().map_err(|_| {
                err(
                    "service.telemetry.metrics.address",
                    format!("`{}` is not host:port (or none)", m.address),
                )
            })?),
        };

        Ok(Config {
            receivers,
            processors,
            exporters,
            pipelines,
            proxies,
            metrics_address,
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, std::path::Path::new("/base"))
    }

    #[test]
    fn the_default_configuration_is_valid() {
        let c = parse(DEFAULT_CONFIG).expect("default config");
        assert_eq!(
            c.pipelines[&Signal::Traces].processors,
            vec!["wasm/pii-mask", "wasm/sampler"]
        );
        assert_eq!(
            c.metrics_address,
            Some(SocketAddr::from(([127, 0, 0, 1], 8888)))
        );
        let ReceiverConfig { grpc, http } = &c.receivers["otlp"];
        assert_eq!(grpc.as_ref().map(|g| g.endpoint), Some(default_grpc()));
        assert_eq!(http.as_ref().map(|h| h.endpoint), Some(default_http()));
    }

    #[test]
    fn errors_name_the_offending_key() {
        let base = DEFAULT_CONFIG;
        let cases = [
            (
                base.replace("percentage: 100", "percentage: 100\n    deadline: soon"),
                "processors.wasm/sampler.deadline",
            ),
            (
                base.replace("builtin:sampler", "builtin:nope"),
                "processors.wasm/sampler.component",
            ),
            (
                base.replace("verbosity: basic", "verbosity: loud"),
                "exporters.debug.verbosity",
            ),
            (
                base.replace("processors: [wasm/pii-mask]", "processors: [wasm/typo]"),
                "service.pipelines.logs.processors",
            ),
            (
                base.replace("endpoint: 127.0.0.1:4318", "endpoint: not-an-address"),
                "receivers.otlp.protocols.http",
            ),
            (
                base.replace("fail_policy: closed", "fail_policy: sideways"),
                "processors.wasm/pii-mask",
            ),
            (
                base.replace("address: 127.0.0.1:8888", "address: eight"),
                "service.telemetry.metrics.address",
            ),
            (base.replace("  debug:\n", "  kafka:\n"), "exporters.kafka"),
        ];
        for (yaml, key) in cases {
            let e = parse(&yaml).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
    }

    const PROXY_ONLY: &str = r#"
proxies:
  edge:
    listen: 127.0.0.1:8080
    upstream: http://127.0.0.1:9000
    timeout: 2s
    filters:
      - component: filters/ab_router.wasm
        config: {split: [{version: v1, percent: 100}]}
        fail_policy: closed
        deadline: 20ms
        memory_limit_mib: 16
      - name: second
        component: builtin:sampler
"#;

    #[test]
    fn a_proxy_only_configuration_is_valid() {
        let c = parse(PROXY_ONLY).expect("proxy-only config");
        assert!(c.pipelines.is_empty() && c.receivers.is_empty());
        let p = &c.proxies["edge"];
        assert_eq!(p.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(p.upstream, "127.0.0.1:9000");
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.max_body, 4 << 20);
        let names: Vec<&str> = p.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["ab_router", "second"],
            "default name: the file stem"
        );
        let f = &p.filters[0].wasm;
        assert_eq!(
            f.component,
            ComponentSource::File(PathBuf::from("/base/filters/ab_router.wasm"))
        );
        assert_eq!(f.fail_policy, FailPolicy::Closed);
        assert_eq!(f.deadline, Duration::from_millis(20));
        assert_eq!(f.memory_limit, 16 << 20);
        let units = c.wasm_units();
        assert_eq!(
            units.keys().collect::<Vec<_>>(),
            [
                "proxies.edge.filters.ab_router",
                "proxies.edge.filters.second"
            ]
        );
        // Changing a filter's settings keeps the structure; changing the chain does not.
        let tweaked = parse(&PROXY_ONLY.replace("deadline: 20ms", "deadline: 30ms")).expect("ok");
        assert!(c.same_structure(&tweaked));
        let renamed = parse(&PROXY_ONLY.replace("name: second", "name: third")).expect("ok");
        assert!(!c.same_structure(&renamed));
        let moved = parse(&PROXY_ONLY.replace(":9000", ":9001")).expect("ok");
        assert!(!c.same_structure(&moved));
    }

    #[test]
    fn proxy_errors_name_the_offending_key() {
        let cases = [
            (
                PROXY_ONLY.replace("listen: 127.0.0.1:8080", "listen: eighty"),
                "proxies.edge.listen",
            ),
            (
                PROXY_ONLY.replace("    listen: 127.0.0.1:8080\n", ""),
                "proxies.edge",
            ),
            (
                PROXY_ONLY.replace("http://127.0.0.1:9000", "https://127.0.0.1:9000"),
                "proxies.edge.upstream",
            ),
            (
                PROXY_ONLY.replace("http://127.0.0.1:9000", "http://127.0.0.1:9000/api"),
                "proxies.edge.upstream",
            ),
            (
                PROXY_ONLY.replace("http://127.0.0.1:9000", "127.0.0.1"),
                "proxies.edge.upstream",
            ),
            (
                PROXY_ONLY.replace("timeout: 2s", "timeout: later"),
                "proxies.edge.timeout",
            ),
            (
                PROXY_ONLY.replace("deadline: 20ms", "deadline: soon"),
                "proxies.edge.filters[0].deadline",
            ),
            (
                PROXY_ONLY.replace("memory_limit_mib: 16", "memory_limit_mib: 0"),
                "proxies.edge.filters[0].memory_limit_mib",
            ),
            (
                PROXY_ONLY.replace("fail_policy: closed", "fail_policy: maybe"),
                "proxies.edge.filters[0]",
            ),
            (
                PROXY_ONLY.replace("fail_policy: closed", "fail_polcy: closed"),
                "proxies.edge.filters[0]",
            ),
            (
                PROXY_ONLY.replace("builtin:sampler", "builtin:nope"),
                "proxies.edge.filters[1].component",
            ),
            (
                PROXY_ONLY.replace("name: second", "name: ab_router"),
                "proxies.edge.filters[1].name",
            ),
            (
                PROXY_ONLY.replace("name: second", "name: a/b"),
                "proxies.edge.filters[1].name",
            ),
            (
                PROXY_ONLY.replace("timeout: 2s", "timeout: 2s\n    colour: blue"),
                "proxies.edge",
            ),
            (PROXY_ONLY.replace("  edge:", "  ed.ge:"), "proxies.ed.ge"),
            ("proxies: {}\n".to_string(), "service.pipelines"),
        ];
        for (yaml, key) in cases {
            let e = parse(&yaml).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn durations_parse_like_the_collectors() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("ms"), None);
    }
}
