//! Loaded plugins: world detection, instances under limits, trap handling and fail policies.
//!
//! Threading contract: a [`Plugin`] is `Send + Sync`. Each call takes an instance of its own
//! (from the warm pool, or a new one), so concurrent calls never share guest state. An instance
//! that trapped is dropped, never returned to the pool.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use wasmtime::component::{Instance, InstancePre, Linker};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::{
    self, GuestError, LogBatch, OtlpProcessor, SpanBatch, lifecycle, logs, names, spans,
};
use crate::convert;
use crate::engine::{EPOCH_TICK, WeftEngine};
use crate::error::{CallError, ConvertError, LoadError, TrapKind};
use crate::kv::KvStore;
use crate::metrics::{MetricsRegistry, PluginMetrics};
use crate::state::{HostState, PluginShared, stdio};

/// What to do with a batch (or, for an HTTP filter, a stream) when the plugin fails on it
/// (trap, error, malformed output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// Pass the batch on unchanged (telemetry keeps flowing, unprocessed). The default. An HTTP
    /// filter is skipped for the rest of the stream.
    #[default]
    Open,
    /// Drop the batch (nothing unprocessed leaves, e.g. for PII masking). An HTTP stream is
    /// answered 503.
    Closed,
}

/// How instances are reused between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceReuse {
    /// Keep up to `max_idle` warm, initialised instances (the default: `init` runs once per
    /// instance, not per batch).
    Pool {
        /// Warm instances kept at most.
        max_idle: usize,
    },
    /// A fresh instance (and `init`) for every call: no state survives between batches.
    Fresh,
}

/// What a plugin may do beyond the weft interfaces. The default grants nothing: no filesystem,
/// no network, no environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Environment variables passed through to the guest (by name, with the host's values).
    #[serde(default)]
    pub env: Vec<String>,
    /// Whether the guest may open sockets and resolve names through WASI.
    #[serde(default)]
    pub network: bool,
    /// The `host:port` upstreams an HTTP filter may call with `dispatch-http-call` (`*`: any).
    /// Default none, as Envoy only calls clusters its configuration names.
    #[serde(default)]
    pub http_calls: Vec<String>,
}

/// How to run one plugin. `PluginSettings::new(name)` documents the defaults.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// Name in logs and metrics.
    pub name: String,
    /// The plugin's configuration (a JSON object).
    pub config: serde_json::Value,
    /// CPU deadline per call (default 100 ms); rounded up to [`EPOCH_TICK`]s.
    pub deadline: Duration,
    /// Linear-memory cap per instance (default 64 MiB).
    pub memory_cap: usize,
    /// What happens to a batch the plugin fails on (default open).
    pub fail_policy: FailPolicy,
    /// Granted capabilities (default none).
    pub capabilities: Capabilities,
    /// Instance reuse (default: a pool of 2 × available cores).
    pub reuse: InstanceReuse,
    /// Fuel (roughly, wasm instructions) per call, if set; needs an engine with
    /// [`EngineSettings::fuel`](crate::EngineSettings::fuel). Default none: the deadline bounds CPU.
    pub fuel: Option<u64>,
}

impl PluginSettings {
    /// Defaults: config `{}`, 100 ms deadline, 64 MiB memory, fail open, no capabilities, pooled.
    pub fn new(name: &str) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        PluginSettings {
            name: name.to_string(),
            config: serde_json::json!({}),
            deadline: Duration::from_millis(100),
            memory_cap: 64 << 20,
            fail_policy: FailPolicy::Open,
            capabilities: Capabilities::default(),
            reuse: InstanceReuse::Pool {
                max_idle: 2 * cores,
            },
            fuel: None,
        }
    }
}

/// Which processing interfaces a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worlds {
    /// Exports `weft:plugin/spans` (world span-processor).
    pub spans: bool,
    /// Exports `weft:plugin/logs` (world log-transform).
    pub logs: bool,
}

impl Worlds {
    /// The WIT world name this combination corresponds to.
    pub fn world_name(&self) -> &'static str {
        match (self.spans, self.logs) {
            (true, true) => "otlp-processor",
            (true, false) => "span-processor",
            (false, true) => "log-transform",
            (false, false) => "none",
        }
    }
}

/// Loads plugins: one linker (weft interfaces + WASI) over one engine, one metrics registry,
/// and the key-value stores by plugin name (so a reloaded plugin keeps its data).
#[derive(Clone)]
pub struct PluginHost {
    engine: WeftEngine,
    linker: Arc<Linker<HostState>>,
    metrics: MetricsRegistry,
    kv: Arc<Mutex<HashMap<String, Arc<KvStore>>>>,
}

/// Bytes of keys and values one plugin's key-value store may hold.
const KV_MAX_BYTES: usize = 16 << 20;

impl PluginHost {
    /// A host over `engine`, reporting into `metrics`.
    pub fn new(engine: WeftEngine, metrics: MetricsRegistry) -> anyhow::Result<Self> {
        let mut linker = Linker::new(engine.engine());
        OtlpProcessor::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        // The `http` interface of the http-filter world. The other interfaces that world imports
        // are the ones above, so one linker (and one `HostState`) serves every weft world; outside
        // the filter proxy its functions act on no stream.
        bindings::http::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Ok(PluginHost {
            engine,
            linker: Arc::new(linker),
            metrics,
            kv: Arc::default(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &WeftEngine {
        &self.engine
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &MetricsRegistry {
        &self.metrics
    }

    /// Loads the component file at `path`.
    pub fn load_file(
        &self,
        path: &std::path::Path,
        settings: PluginSettings,
    ) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(&path.display().to_string(), &bytes, settings)
    }

    /// Compiles (or loads from cache) `bytes`, checks its world, links it, and creates and
    /// initialises a first instance, so an invalid configuration fails here with the plugin's
    /// message. `what` names the component in errors.
    pub fn load(
        &self,
        what: &str,
        bytes: &[u8],
        settings: PluginSettings,
    ) -> Result<Plugin, LoadError> {
        let loaded = self.engine.load_component(what, bytes)?;
        let component = &loaded.component;
        let engine = self.engine.engine();

        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let worlds = Worlds {
            spans: exports.iter().any(|e| e == names::SPANS),
            logs: exports.iter().any(|e| e == names::LOGS),
        };
        if !exports.iter().any(|e| e == names::LIFECYCLE) || !(worlds.spans || worlds.logs) {
            return Err(LoadError::WrongWorld {
                what: what.to_string(),
                expected: format!(
                    "{} and {} or {}",
                    names::LIFECYCLE,
                    names::SPANS,
                    names::LOGS
                ),
                found: exports.join(", "),
            });
        }
        let core = self.instances(what, component, settings, None)?;
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            what: what.to_string(),
            message: format!("{e:#}"),
        };
        let spans = worlds
            .spans
            .then(|| spans::GuestIndices::new(&core.pre))
            .transpose()
            .map_err(compile_err)?;
        let logs = worlds
            .logs
            .then(|| logs::GuestIndices::new(&core.pre))
            .transpose()
            .map_err(compile_err)?;
        // Create the first instance now: this runs `init`, so a bad configuration fails the load.
        core.start()?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                core,
                spans,
                logs,
                worlds,
                digest: loaded.digest,
                cache_hit: loaded.cache_hit,
                size: bytes.len(),
            }),
        })
    }

    /// What every world needs once its exports are checked: the settings validated, the
    /// component linked, the shared state (metrics, key-value store by name) and an empty pool.
    /// `filter` is the filter proxy's per-filter state (`None` for OTLP plugins).
    pub(crate) fn instances(
        &self,
        what: &str,
        component: &wasmtime::component::Component,
        settings: PluginSettings,
        filter: Option<Arc<crate::proxy::FilterShared>>,
    ) -> Result<Instances, LoadError> {
        if settings.fuel.is_some() && !self.engine.fuel_enabled() {
            return Err(LoadError::Settings {
                plugin: settings.name.clone(),
                message:
                    "a fuel budget needs an engine with fuel metering on (EngineSettings::fuel)"
                        .into(),
            });
        }
        if !settings.config.is_object() {
            return Err(LoadError::Settings {
                plugin: settings.name.clone(),
                message: format!("config must be a JSON object, got `{}`", settings.config),
            });
        }
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Link {
                what: what.to_string(),
                message: format!("{e:#}"),
            })?;
        let lifecycle = lifecycle::GuestIndices::new(&pre).map_err(|e| LoadError::Compile {
            what: what.to_string(),
            message: format!("{e:#}"),
        })?;
        let kv = self
            .kv
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(settings.name.clone())
            .or_insert_with(|| Arc::new(KvStore::new(KV_MAX_BYTES)))
            .clone();
        let shared = Arc::new(PluginShared {
            name: settings.name.clone(),
            config_json: settings.config.to_string(),
            config: settings.config.clone(),
            metrics: self.metrics.plugin(&settings.name),
            kv,
            filter,
        });
        Ok(Instances {
            shared,
            settings,
            pre,
            lifecycle,
            pool: Mutex::new(Vec::new()),
        })
    }
}

/// A loaded plugin. Cloning shares it.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    core: Instances,
    spans: Option<spans::GuestIndices>,
    logs: Option<logs::GuestIndices>,
    worlds: Worlds,
    digest: String,
    cache_hit: bool,
    size: usize,
}

/// The part of a loaded plugin that does not depend on its world: its settings, the linked
/// component and the pool of warm instances, with the limits every call runs under. OTLP
/// plugins ([`Plugin`]) and HTTP filters ([`crate::proxy::Filter`]) are both built on one.
pub(crate) struct Instances {
    pub(crate) shared: Arc<PluginShared>,
    pub(crate) settings: PluginSettings,
    pub(crate) pre: InstancePre<HostState>,
    lifecycle: lifecycle::GuestIndices,
    pool: Mutex<Vec<Warm>>,
}

/// An initialised instance and its store.
pub(crate) struct Warm {
    pub(crate) store: Store<HostState>,
    pub(crate) instance: Instance,
    metrics: Arc<PluginMetrics>,
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.metrics.live_instances.fetch_sub(1, Ordering::Relaxed);
        self.metrics.memory_bytes.fetch_sub(
            self.store.data().limiter.memory_bytes as i64,
            Ordering::Relaxed,
        );
    }
}

/// What processing one OTLP request did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// Items handed to the plugin.
    pub items_in: u64,
    /// Items that left (returned by the plugin, or passed on by fail-open).
    pub items_out: u64,
    /// Batches (resource × scope) on which the plugin failed.
    pub failed_batches: u64,
    /// Items dropped because of a failure with fail-closed.
    pub failed_items_dropped: u64,
}

impl Plugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.core.settings.name
    }

    /// Which interfaces the component exports.
    pub fn worlds(&self) -> Worlds {
        self.inner.worlds
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PluginSettings {
        &self.inner.core.settings
    }

    /// SHA-256 of the component, hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Whether the compiled code came from the on-disk cache.
    pub fn cache_hit(&self) -> bool {
        self.inner.cache_hit
    }

    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The plugin's metrics.
    pub fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.inner.core.shared.metrics
    }

    /// Warm instances in the pool right now.
    pub fn idle_instances(&self) -> usize {
        self.inner.core.idle()
    }

    /// Creates a new instance and drops it; with `init`, also runs `init` (what a call costs in
    /// [`InstanceReuse::Fresh`] mode on top of the work). For benchmarks.
    #[doc(hidden)]
    pub fn bench_instantiate(&self, init: bool) -> Result<(), CallError> {
        if init {
            return self.inner.core.instantiate().map(drop);
        }
        let mut store = self.inner.core.new_store();
        self.inner
            .core
            .pre
            .instantiate(&mut store)
            .map(drop)
            .map_err(|e| CallError::Instantiate {
                plugin: self.name().to_string(),
                message: format!("{e:#}"),
            })
    }

    /// Runs the plugin over one batch of spans. No fail policy here: see [`Self::process_traces`].
    pub fn call_spans(&self, batch: &SpanBatch) -> Result<SpanBatch, CallError> {
        let idx = self
            .inner
            .spans
            .as_ref()
            .ok_or_else(|| CallError::Unsupported {
                plugin: self.name().to_string(),
                signal: "spans",
            })?;
        self.inner.call(batch.spans.len(), |store, instance| {
            let guest = idx.load(&mut *store, instance)?;
            let out = guest.call_process_spans(&mut *store, batch)?;
            Ok(out.map(|b| {
                let n = b.spans.len();
                (b, n)
            }))
        })
    }

    /// Runs the plugin over one batch of log records.
    pub fn call_logs(&self, batch: &LogBatch) -> Result<LogBatch, CallError> {
        let idx = self
            .inner
            .logs
            .as_ref()
            .ok_or_else(|| CallError::Unsupported {
                plugin: self.name().to_string(),
                signal: "logs",
            })?;
        self.inner.call(batch.records.len(), |store, instance| {
            let guest = idx.load(&mut *store, instance)?;
            let out = guest.call_process_logs(&mut *store, batch)?;
            Ok(out.map(|b| {
                let n = b.records.len();
                (b, n)
            }))
        })
    }

    /// Runs the plugin over every (resource, scope) batch of an OTLP traces request, applying
    /// the fail policy per batch. Malformed OTLP (bad ids) is rejected before any call.
    ///
    /// A plugin may change a batch's resource: batches whose resulting resources differ are put in
    /// separate `ResourceSpans`, so nothing is attributed to the wrong resource.
    pub fn process_traces(
        &self,
        req: ExportTraceServiceRequest,
    ) -> Result<(ExportTraceServiceRequest, BatchReport), ConvertError> {
        self.traces_inner(req, |e, n| {
            Ok::<_, Infallible>(self.inner.core.on_failure(&e, n))
        })
        .map_err(|e| match e {
            ProcessError::Convert(c) => c,
            ProcessError::Call(never) => match never {},
        })
    }

    /// Like [`Self::process_traces`], but the first failure is returned instead of handled by
    /// the fail policy (what `weft test` wants).
    pub fn process_traces_strict(
        &self,
        req: ExportTraceServiceRequest,
    ) -> Result<(ExportTraceServiceRequest, BatchReport), ProcessError> {
        self.traces_inner(req, |e, _| Err(e))
    }

    /// `on_failure` decides what a failed batch becomes: a fail policy, or an error that stops.
    fn traces_inner<E>(
        &self,
        req: ExportTraceServiceRequest,
        mut on_failure: impl FnMut(CallError, u64) -> Result<FailPolicy, E>,
    ) -> Result<(ExportTraceServiceRequest, BatchReport), ProcessError<E>> {
        // Convert everything first: a malformed request is rejected whole, nothing half-processed.
        let mut inputs = Vec::new();
        for rs in &req.resource_spans {
            let resource = convert::resource_from_pb(rs.resource.as_ref(), &rs.schema_url);
            for ss in &rs.scope_spans {
                let spans = ss
                    .spans
                    .iter()
                    .map(convert::span_from_pb)
                    .collect::<Result<Vec<_>, ConvertError>>()?;
                inputs.push(SpanBatch {
                    resource: resource.clone(),
                    scope: convert::scope_from_pb(ss.scope.as_ref(), &ss.schema_url),
                    spans,
                });
            }
        }
        let mut report = BatchReport::default();
        let mut out: Vec<ResourceSpans> = Vec::new();
        let originals = req.resource_spans.into_iter().flat_map(|rs| {
            let resource = rs.resource;
            let schema_url = rs.schema_url;
            rs.scope_spans
                .into_iter()
                .map(move |ss| (resource.clone(), schema_url.clone(), ss))
        });
        for (batch, (resource, schema_url, original)) in inputs.into_iter().zip(originals) {
            let n = batch.spans.len() as u64;
            report.items_in += n;
            let converted = self.call_spans(&batch).and_then(|b| {
                batch_spans_to_pb(b, resource.as_ref(), original.scope.is_some()).map_err(|e| {
                    self.inner
                        .core
                        .shared
                        .metrics
                        .malformed_outputs
                        .fetch_add(1, Ordering::Relaxed);
                    CallError::MalformedOutput {
                        plugin: self.name().to_string(),
                        message: e.to_string(),
                    }
                })
            });
            let (res, res_url, scope_spans) = match converted {
                Ok(v) => v,
                Err(e) => {
                    report.failed_batches += 1;
                    match on_failure(e, n).map_err(ProcessError::Call)? {
                        FailPolicy::Open => (resource, schema_url, original),
                        FailPolicy::Closed => {
                            report.failed_items_dropped += n;
                            continue;
                        }
                    }
                }
            };
            report.items_out += scope_spans.spans.len() as u64;
            match out.last_mut() {
                Some(last) if last.resource == res && last.schema_url == res_url => {
                    last.scope_spans.push(scope_spans)
                }
                _ => out.push(ResourceSpans {
                    resource: res,
                    scope_spans: vec![scope_spans],
                    schema_url: res_url,
                }),
            }
        }
        Ok((
            ExportTraceServiceRequest {
                resource_spans: out,
            },
            report,
        ))
    }

    /// The same as [`Self::process_traces`] for an OTLP logs request.
    pub fn process_logs(
        &self,
        req: ExportLogsServiceRequest,
    ) -> Result<(ExportLogsServiceRequest, BatchReport), ConvertError> {
        self.logs_inner(req, |e, n| {
            Ok::<_, Infallible>(self.inner.core.on_failure(&e, n))
        })
        .map_err(|e| match e {
            ProcessError::Convert(c) => c,
            ProcessError::Call(never) => match never {},
        })
    }

    /// Like [`Self::process_logs`], but the first failure is returned instead of handled by the
    /// fail policy.
    pub fn process_logs_strict(
        &self,
        req: ExportLogsServiceRequest,
    ) -> Result<(ExportLogsServiceRequest, BatchReport), ProcessError> {
        self.logs_inner(req, |e, _| Err(e))
    }

    fn logs_inner<E>(
        &self,
        req: ExportLogsServiceRequest,
        mut on_failure: impl FnMut(CallError, u64) -> Result<FailPolicy, E>,
    ) -> Result<(ExportLogsServiceRequest, BatchReport), ProcessError<E>> {
        let mut inputs = Vec::new();
        for rl in &req.resource_logs {
            let resource = convert::resource_from_pb(rl.resource.as_ref(), &rl.schema_url);
            for sl in &rl.scope_logs {
                let records = sl
                    .log_records
                    .iter()
                    .map(convert::log_from_pb)
                    .collect::<Result<Vec<_>, ConvertError>>()?;
                inputs.push(LogBatch {
                    resource: resource.clone(),
                    scope: convert::scope_from_pb(sl.scope.as_ref(), &sl.schema_url),
                    records,
                });
            }
        }
        let mut report = BatchReport::default();
        let mut out: Vec<ResourceLogs> = Vec::new();
        let originals = req.resource_logs.into_iter().flat_map(|rl| {
            let resource = rl.resource;
            let schema_url = rl.schema_url;
            rl.scope_logs
                .into_iter()
                .map(move |sl| (resource.clone(), schema_url.clone(), sl))
        });
        for (batch, (resource, schema_url, original)) in inputs.into_iter().zip(originals) {
            let n = batch.records.len() as u64;
            report.items_in += n;
            let converted = self.call_logs(&batch).and_then(|b| {
                batch_logs_to_pb(b, resource.as_ref(), original.scope.is_some()).map_err(|e| {
                    self.inner
                        .core
                        .shared
                        .metrics
                        .malformed_outputs
                        .fetch_add(1, Ordering::Relaxed);
                    CallError::MalformedOutput {
                        plugin: self.name().to_string(),
                        message: e.to_string(),
                    }
                })
            });
            let (res, res_url, scope_logs) = match converted {
                Ok(v) => v,
                Err(e) => {
                    report.failed_batches += 1;
                    match on_failure(e, n).map_err(ProcessError::Call)? {
                        FailPolicy::Open => (resource, schema_url, original),
                        FailPolicy::Closed => {
                            report.failed_items_dropped += n;
                            continue;
                        }
                    }
                }
            };
            report.items_out += scope_logs.log_records.len() as u64;
            match out.last_mut() {
                Some(last) if last.resource == res && last.schema_url == res_url => {
                    last.scope_logs.push(scope_logs)
                }
                _ => out.push(ResourceLogs {
                    resource: res,
                    scope_logs: vec![scope_logs],
                    schema_url: res_url,
                }),
            }
        }
        Ok((ExportLogsServiceRequest { resource_logs: out }, report))
    }
}

type PbResource = opentelemetry_proto::tonic::resource::v1::Resource;

/// Why processing a request stopped: malformed OTLP, or (only in strict processing, where `E`
/// is [`CallError`]) a plugin failure.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<E = CallError> {
    /// The request is malformed OTLP.
    #[error("malformed OTLP: {0}")]
    Convert(#[from] ConvertError),
    /// The plugin failed.
    #[error(transparent)]
    Call(E),
}

fn batch_spans_to_pb(
    b: SpanBatch,
    original_resource: Option<&PbResource>,
    scope_present: bool,
) -> Result<(Option<PbResource>, String, ScopeSpans), ConvertError> {
    let (resource, resource_url) = convert::resource_to_pb(b.resource, original_resource)?;
    let (scope, scope_url) = convert::scope_to_pb(b.scope, scope_present)?;
    let spans = b
        .spans
        .into_iter()
        .map(convert::span_to_pb)
        .collect::<Result<_, _>>()?;
    Ok((
        resource,
        resource_url,
        ScopeSpans {
            scope,
            spans,
            schema_url: scope_url,
        },
    ))
}

fn batch_logs_to_pb(
    b: LogBatch,
    original_resource: Option<&PbResource>,
    scope_present: bool,
) -> Result<(Option<PbResource>, String, ScopeLogs), ConvertError> {
    let (resource, resource_url) = convert::resource_to_pb(b.resource, original_resource)?;
    let (scope, scope_url) = convert::scope_to_pb(b.scope, scope_present)?;
    let log_records = b
        .records
        .into_iter()
        .map(convert::log_to_pb)
        .collect::<Result<_, _>>()?;
    Ok((
        resource,
        resource_url,
        ScopeLogs {
            scope,
            log_records,
            schema_url: scope_url,
        },
    ))
}

impl PluginInner {
    /// Takes an instance, runs `f` under the limits, and accounts for the outcome. `f` returns
    /// the guest's result and the number of items it returned.
    fn call<T>(
        &self,
        items_in: usize,
        f: impl FnOnce(
            &mut Store<HostState>,
            &Instance,
        ) -> wasmtime::Result<Result<(T, usize), GuestError>>,
    ) -> Result<T, CallError> {
        let core = &self.core;
        let metrics = &core.shared.metrics;
        let mut warm = core.take()?;
        let result = core.run(&mut warm, f);
        metrics
            .items_in
            .fetch_add(items_in as u64, Ordering::Relaxed);
        match result {
            Ok(Ok((value, items_out))) => {
                metrics
                    .items_out
                    .fetch_add(items_out as u64, Ordering::Relaxed);
                metrics
                    .items_dropped
                    .fetch_add(items_in.saturating_sub(items_out) as u64, Ordering::Relaxed);
                core.give_back(warm);
                Ok(value)
            }
            Ok(Err(e)) => {
                metrics.guest_errors.fetch_add(1, Ordering::Relaxed);
                core.give_back(warm);
                Err(guest_error(&core.settings.name, e))
            }
            // The instance is dropped here: a trapped instance is never reused.
            Err(trap) => Err(trap),
        }
    }
}

impl Instances {
    /// Epoch ticks for one call: the deadline rounded up, plus the tick already under way.
    fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos().max(1);
        (self.settings.deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }

    /// A store for a new instance: WASI with only the granted capabilities, stdio to the log,
    /// the memory limiter and the epoch deadline.
    pub(crate) fn new_store(&self) -> Store<HostState> {
        let name = &self.settings.name;
        let mut wasi = WasiCtxBuilder::new();
        let plugin_name: Arc<str> = Arc::from(name.as_str());
        wasi.stdout(stdio::LogStream {
            plugin: plugin_name.clone(),
            which: stdio::Which::Stdout,
        });
        wasi.stderr(stdio::LogStream {
            plugin: plugin_name,
            which: stdio::Which::Stderr,
        });
        for var in &self.settings.capabilities.env {
            if let Ok(value) = std::env::var(var) {
                wasi.env(var, value);
            }
        }
        if self.settings.capabilities.network {
            wasi.inherit_network();
            wasi.allow_ip_name_lookup(true);
        }
        let state = HostState::new(self.shared.clone(), wasi.build(), self.settings.memory_cap);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        self.refuel(&mut store);
        store
    }

    /// Gives the store this plugin's per-call fuel budget (no-op without one).
    fn refuel(&self, store: &mut Store<HostState>) {
        if let Some(fuel) = self.settings.fuel {
            // Only fails when the engine does not meter fuel, which `load` has ruled out.
            let _ = store.set_fuel(fuel);
        }
    }

    /// A new instance with `init` done.
    pub(crate) fn instantiate(&self) -> Result<Warm, CallError> {
        let name = &self.settings.name;
        let mut store = self.new_store();
        let metrics = self.shared.metrics.clone();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallError::Instantiate {
                plugin: name.clone(),
                message: format!("{e:#}"),
            })?;
        metrics.instantiations.fetch_add(1, Ordering::Relaxed);
        metrics.live_instances.fetch_add(1, Ordering::Relaxed);
        metrics
            .memory_bytes
            .fetch_add(store.data().limiter.memory_bytes as i64, Ordering::Relaxed);
        let mut warm = Warm {
            store,
            instance,
            metrics,
        };
        let init = self
            .lifecycle
            .load(&mut warm.store, &warm.instance)
            .and_then(|g| g.call_init(&mut warm.store));
        match init {
            Ok(Ok(())) => Ok(warm),
            Ok(Err(e)) => Err(guest_error(name, e)),
            Err(trap) => Err(classify_trap(name, &warm.store, trap)),
        }
    }

    /// Creates and initialises the first instance (at load: a configuration `init` rejects
    /// fails the load with the plugin's own message) and pools it.
    pub(crate) fn start(&self) -> Result<(), LoadError> {
        let first = self.instantiate().map_err(|e| match e {
            CallError::Guest {
                kind: "invalid-config",
                message,
                plugin,
            } => LoadError::InvalidConfig { plugin, message },
            other => LoadError::Init {
                plugin: self.settings.name.clone(),
                source: Box::new(other),
            },
        })?;
        self.give_back(first);
        Ok(())
    }

    /// A warm instance from the pool, or a new one.
    pub(crate) fn take(&self) -> Result<Warm, CallError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(w) => Ok(w),
            None => self.instantiate(),
        }
    }

    /// The pooled instance whose store has `instance_id`, if it is idle right now.
    pub(crate) fn take_idle(&self, instance_id: u64) -> Option<Warm> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let at = pool
            .iter()
            .position(|w| w.store.data().instance_id == instance_id)?;
        Some(pool.swap_remove(at))
    }

    /// Warm instances in the pool right now.
    pub(crate) fn idle(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Returns an instance to the pool (or drops it when the pool is full or reuse is off).
    /// Returns whether it was kept.
    pub(crate) fn give_back(&self, warm: Warm) -> bool {
        if let InstanceReuse::Pool { max_idle } = self.settings.reuse {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < max_idle {
                pool.push(warm);
                return true;
            }
        }
        false
    }

    /// Runs `f` on `warm` under the deadline and fuel budget, and counts it (calls, duration,
    /// memory). A trap comes back classified and counted as `CallError::Trapped`: the caller
    /// must then drop the instance, never reuse it.
    pub(crate) fn run<R>(
        &self,
        warm: &mut Warm,
        f: impl FnOnce(&mut Store<HostState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let metrics = &self.shared.metrics;
        warm.store.set_epoch_deadline(self.deadline_ticks());
        self.refuel(&mut warm.store);
        let memory_before = warm.store.data().limiter.memory_bytes;

        let start = Instant::now();
        let result = f(&mut warm.store, &warm.instance);
        metrics.observe_duration(start.elapsed());
        metrics.calls.fetch_add(1, Ordering::Relaxed);
        let memory_after = warm.store.data().limiter.memory_bytes;
        metrics.memory_bytes.fetch_add(
            memory_after as i64 - memory_before as i64,
            Ordering::Relaxed,
        );
        result.map_err(|trap| {
            let err = classify_trap(&self.settings.name, &warm.store, trap);
            if let CallError::Trapped { kind, .. } = &err {
                metrics.trap_counter(*kind).fetch_add(1, Ordering::Relaxed);
            }
            err
        })
    }

    /// Logs and counts a failed batch (or HTTP stream); returns the policy to apply.
    pub(crate) fn on_failure(&self, err: &CallError, items: u64) -> FailPolicy {
        let policy = self.settings.fail_policy;
        let m = &self.shared.metrics;
        match policy {
            FailPolicy::Open => m.failed_open.fetch_add(1, Ordering::Relaxed),
            FailPolicy::Closed => {
                m.failed_closed_items.fetch_add(items, Ordering::Relaxed);
                m.failed_closed.fetch_add(1, Ordering::Relaxed)
            }
        };
        tracing::warn!(plugin = %self.settings.name, policy = ?policy, items, "{err}");
        policy
    }
}

fn guest_error(plugin: &str, e: GuestError) -> CallError {
    let (kind, message) = match e {
        bindings::GuestError::InvalidConfig(m) => ("invalid-config", m),
        bindings::GuestError::InvalidInput(m) => ("invalid-input", m),
        bindings::GuestError::Other(m) => ("other", m),
    };
    CallError::Guest {
        plugin: plugin.to_string(),
        kind,
        message,
    }
}

/// Sorts a wasmtime error from a guest call into a [`TrapKind`].
pub(crate) fn classify_trap(
    plugin: &str,
    store: &Store<HostState>,
    err: wasmtime::Error,
) -> CallError {
    let kind = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapKind::Deadline,
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::OutOfFuel) => TrapKind::Fuel,
        // A Rust guest whose allocation failed aborts with `unreachable`; the limiter saw why.
        _ if store.data().limiter.hit_limit.load(Ordering::Relaxed) => TrapKind::MemoryLimit,
        Some(Trap::UnreachableCodeReached) => TrapKind::Panic,
        _ => TrapKind::Other,
    };
    CallError::Trapped {
        plugin: plugin.to_string(),
        kind,
        message: format!("{err:#}"),
    }
}
