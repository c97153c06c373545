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

use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker};
use wasmtime::{Store, Trap};
use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::batch::{otlp_logs, otlp_traces};
use crate::bindings::{
    self, GuestError, LogBatch, Outcome, SpanBatch, TypedOtlpProcessor, lifecycle, logs, names,
    spans,
};
use crate::engine::{EPOCH_TICK, WeftEngine};
use crate::error::{CallError, ConvertError, LoadError, TrapKind};
use crate::kv::KvStore;
use crate::metrics::{MetricsRegistry, PluginMetrics};
use crate::signal::{OtlpData, OtlpRequest, Signal, SignalRequest};
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
    /// What the plugin's output may hold (default [`OUTPUT_LIMITS`]); an output past a limit
    /// is malformed output, under the fail policy.
    pub output_limits: weft_otlp_wire::Limits,
}

/// The default [`PluginSettings::output_limits`]: values nested as deep as a receiver takes
/// (100 000; a plugin on typed records is held to [`crate::convert::TYPED_MAX_VALUE_DEPTH`]),
/// 65 536 entries in one attribute list, key-value list or array, 4 MiB in one string or bytes
/// value (the default largest gRPC message, so the next hop could not take more).
pub const OUTPUT_LIMITS: weft_otlp_wire::Limits = weft_otlp_wire::Limits {
    max_value_depth: 100_000,
    max_entries: 65_536,
    max_string_bytes: 4 << 20,
};

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
            output_limits: OUTPUT_LIMITS,
        }
    }
}

/// How a plugin's requests cross the component boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// The batch ABI (`otlp-traces`, `otlp-logs`): a whole request as its protobuf bytes.
    Batch,
    /// Typed records (`spans`, `logs`): each (resource, scope) batch as WIT records.
    Typed,
}

impl Abi {
    /// `batch` or `typed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Abi::Batch => "batch (OTLP protobuf bytes)",
            Abi::Typed => "typed records",
        }
    }
}

/// Which processing interfaces a component exports, and on which ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worlds {
    /// Processes spans.
    pub spans: bool,
    /// Processes log records.
    pub logs: bool,
    /// The ABI of its exports (one per component; a component exporting both kinds is run on
    /// the batch ABI).
    pub abi: Abi,
}

impl Worlds {
    /// The WIT world name this combination corresponds to.
    pub fn world_name(&self) -> &'static str {
        match (self.abi, self.spans, self.logs) {
            (_, false, false) => "none",
            (Abi::Batch, true, true) => "otlp-processor",
            (Abi::Batch, true, false) => "span-processor",
            (Abi::Batch, false, true) => "log-transform",
            (Abi::Typed, true, true) => "typed-otlp-processor",
            (Abi::Typed, true, false) => "typed-span-processor",
            (Abi::Typed, false, true) => "typed-log-transform",
        }
    }
}

/// Loads plugins: one engine, the OTLP worlds' linker (weft interfaces + WASI), one metrics
/// registry, and the key-value stores by plugin name (so a reloaded plugin keeps its data).
/// Other worlds (the filter proxy's `http-filter`) extend [`PluginHost::linker`] with their own
/// interfaces and load through [`PluginHost::instances`].
#[derive(Clone)]
pub struct PluginHost {
    engine: WeftEngine,
    linker: Arc<Linker<HostState>>,
    metrics: MetricsRegistry,
    kv: Arc<Mutex<HashMap<String, Arc<KvStore>>>>,
}

/// The store extension of one world: makes the [`HostState::ext`] of each new instance.
pub type MakeExt<X> = Arc<dyn Fn() -> X + Send + Sync>;

/// Bytes of keys and values one plugin's key-value store may hold.
const KV_MAX_BYTES: usize = 16 << 20;

impl PluginHost {
    /// A host over `engine`, reporting into `metrics`.
    pub fn new(engine: WeftEngine, metrics: MetricsRegistry) -> anyhow::Result<Self> {
        let linker = Self::base_linker(&engine)?;
        Ok(PluginHost {
            engine,
            linker: Arc::new(linker),
            metrics,
            kv: Arc::default(),
        })
    }

    /// A linker with the interfaces every weft world imports (log, config, metrics, key-value,
    /// clock) and WASI 0.2 with no ambient authority, for stores whose extension is `X`.
    fn base_linker<X: Send + 'static>(engine: &WeftEngine) -> anyhow::Result<Linker<HostState<X>>> {
        let mut linker = Linker::new(engine.engine());
        TypedOtlpProcessor::add_to_linker::<HostState<X>, HasSelf<HostState<X>>>(
            &mut linker,
            |s| s,
        )?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Ok(linker)
    }

    /// [`Self::base_linker`] for another world, which adds its own interfaces and loads its
    /// components with [`Self::instances`].
    pub fn linker<X: Send + 'static>(&self) -> Result<Linker<HostState<X>>, LoadError> {
        Self::base_linker(&self.engine).map_err(|e| LoadError::Link {
            what: "the weft interfaces".into(),
            message: format!("{e:#}"),
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
        let exports = self.check_world(
            what,
            component,
            &[
                names::OTLP_TRACES,
                names::OTLP_LOGS,
                names::SPANS,
                names::LOGS,
            ],
            None,
        )?;
        let has = |name: &str| exports.iter().any(|e| e == name);
        let batch = has(names::OTLP_TRACES) || has(names::OTLP_LOGS);
        let worlds = if batch {
            Worlds {
                spans: has(names::OTLP_TRACES),
                logs: has(names::OTLP_LOGS),
                abi: Abi::Batch,
            }
        } else {
            Worlds {
                spans: has(names::SPANS),
                logs: has(names::LOGS),
                abi: Abi::Typed,
            }
        };
        let core = self.instances(what, component, settings, &self.linker, Arc::new(|| ()))?;
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            what: what.to_string(),
            message: format!("{e:#}"),
        };
        let typed = worlds.abi == Abi::Typed;
        let spans = (typed && worlds.spans)
            .then(|| spans::GuestIndices::new(&core.pre))
            .transpose()
            .map_err(compile_err)?;
        let logs = (typed && worlds.logs)
            .then(|| logs::GuestIndices::new(&core.pre))
            .transpose()
            .map_err(compile_err)?;
        let otlp_traces = (!typed && worlds.spans)
            .then(|| otlp_traces::GuestIndices::new(&core.pre))
            .transpose()
            .map_err(compile_err)?;
        let otlp_logs = (!typed && worlds.logs)
            .then(|| otlp_logs::GuestIndices::new(&core.pre))
            .transpose()
            .map_err(compile_err)?;
        // Create the first instance now: this runs `init`, so a bad configuration fails the load.
        core.start()?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                core,
                spans,
                logs,
                otlp_traces,
                otlp_logs,
                worlds,
                digest: loaded.digest,
                cache_hit: loaded.cache_hit,
                size: bytes.len(),
            }),
        })
    }

    /// The world check of every plugin kind: `component` must export the lifecycle interface and
    /// at least one of `processing` (the interfaces of the world it is loaded as, named `world`
    /// in the error when given). Returns the names of all its exports.
    pub fn check_world(
        &self,
        what: &str,
        component: &Component,
        processing: &[&str],
        world: Option<&str>,
    ) -> Result<Vec<String>, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(self.engine.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        let has = |name: &str| exports.iter().any(|e| e == name);
        if !has(names::LIFECYCLE) || !processing.iter().any(|p| has(p)) {
            let world = world.map(|w| format!(" (world {w})")).unwrap_or_default();
            return Err(LoadError::WrongWorld {
                what: what.to_string(),
                expected: format!(
                    "{} and {}{world}",
                    names::LIFECYCLE,
                    processing.join(" or ")
                ),
                found: exports.join(", "),
            });
        }
        Ok(exports)
    }

    /// What every world needs once its exports are checked: the settings validated, the
    /// component linked with `linker`, the shared state (metrics, key-value store by name) and
    /// an empty pool whose instances get their world's state from `ext`.
    pub fn instances<X: Send + 'static>(
        &self,
        what: &str,
        component: &Component,
        settings: PluginSettings,
        linker: &Linker<HostState<X>>,
        ext: MakeExt<X>,
    ) -> Result<Instances<X>, LoadError> {
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
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::link(what, e))?;
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
        });
        Ok(Instances {
            shared,
            settings,
            pre,
            lifecycle,
            ext,
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
    otlp_traces: Option<otlp_traces::GuestIndices>,
    otlp_logs: Option<otlp_logs::GuestIndices>,
    worlds: Worlds,
    digest: String,
    cache_hit: bool,
    size: usize,
}

/// The part of a loaded plugin that does not depend on its world: its settings, the linked
/// component and the pool of warm instances, with the limits every call runs under. OTLP
/// plugins ([`Plugin`]) and the filter proxy's HTTP filters are both built on one.
///
/// Threading contract: `Send + Sync`; [`Self::take`] hands each caller an instance of its own.
pub struct Instances<X: 'static = ()> {
    /// What every instance shares (name, configuration, metrics, key-value store).
    pub shared: Arc<PluginShared>,
    /// The settings the plugin runs with.
    pub settings: PluginSettings,
    /// The linked component.
    pub pre: InstancePre<HostState<X>>,
    lifecycle: lifecycle::GuestIndices,
    ext: MakeExt<X>,
    pool: Mutex<Vec<Warm<X>>>,
}

/// An initialised instance and its store.
pub struct Warm<X: 'static = ()> {
    /// The instance's store.
    pub store: Store<HostState<X>>,
    /// The instance.
    pub instance: Instance,
    metrics: Arc<PluginMetrics>,
}

impl<X: 'static> Drop for Warm<X> {
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

    /// The component's content key: BLAKE3 of its bytes, hex (the artifact cache's key).
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

    /// Runs the plugin over one batch of spans. No fail policy here: see [`Self::process`].
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

    /// Runs the plugin over every (resource, scope) batch of an OTLP request, applying the fail
    /// policy per batch. Malformed OTLP (bad ids) is rejected before any call.
    ///
    /// A plugin may change a batch's resource: batches whose resulting resources differ are put in
    /// separate resource entries, so nothing is attributed to the wrong resource.
    pub fn process<R: SignalRequest>(&self, req: R) -> Result<(R, BatchReport), ConvertError> {
        self.process_with(req, |e, n| {
            Ok::<_, Infallible>(self.inner.core.on_failure(&e, n))
        })
        .map_err(|e| match e {
            ProcessError::Convert(c) => c,
            ProcessError::Call(never) => match never {},
        })
    }

    /// Like [`Self::process`], but the first failure is returned instead of handled by the fail
    /// policy (what `weft test` wants).
    pub fn process_strict<R: SignalRequest>(
        &self,
        req: R,
    ) -> Result<(R, BatchReport), ProcessError> {
        self.process_with(req, |e, _| Err(e))
    }

    /// [`Self::process`] for a request of either signal.
    pub fn process_data(&self, data: OtlpData) -> Result<(OtlpData, BatchReport), ConvertError> {
        self.process_data_with(data, |e, n| {
            Ok::<_, Infallible>(self.inner.core.on_failure(&e, n))
        })
        .map_err(|e| match e {
            ProcessError::Convert(c) => c,
            ProcessError::Call(never) => match never {},
        })
    }

    /// [`Self::process_strict`] for a request of either signal.
    pub fn process_data_strict(
        &self,
        data: OtlpData,
    ) -> Result<(OtlpData, BatchReport), ProcessError> {
        self.process_data_with(data, |e, _| Err(e))
    }

    /// Runs the plugin over `data` on its ABI. A plugin on the batch ABI gets the whole request
    /// as one buffer and its answer is validated; a typed one gets each (resource, scope) batch
    /// as records ([`Self::process`]).
    fn process_data_with<E>(
        &self,
        data: OtlpData,
        mut on_failure: impl FnMut(CallError, u64) -> Result<FailPolicy, E>,
    ) -> Result<(OtlpData, BatchReport), ProcessError<E>> {
        if self.inner.worlds.abi == Abi::Batch {
            let n = data.items();
            let mut report = BatchReport {
                items_in: n,
                ..BatchReport::default()
            };
            let out = match self.call_request(&data) {
                Ok(out) => out,
                Err(e) => {
                    report.failed_batches = 1;
                    match on_failure(e, n).map_err(ProcessError::Call)? {
                        FailPolicy::Open => data,
                        FailPolicy::Closed => {
                            report.failed_items_dropped = n;
                            OtlpData::empty(data.signal())
                        }
                    }
                }
            };
            report.items_out = out.items();
            return Ok((out, report));
        }
        let encoded = |r: Result<OtlpData, crate::WireError>| {
            r.map_err(|e| ProcessError::Convert(ConvertError::Wire(e.to_string())))
        };
        Ok(match data.decode() {
            Ok(OtlpRequest::Traces(t)) => {
                let (t, r) = self.process_with(t, on_failure)?;
                (encoded(OtlpData::from_traces(&t))?, r)
            }
            Ok(OtlpRequest::Logs(l)) => {
                let (l, r) = self.process_with(l, on_failure)?;
                (encoded(OtlpData::from_logs(&l))?, r)
            }
            Err(e) => return Err(ProcessError::Convert(ConvertError::Wire(e.to_string()))),
        })
    }

    /// Runs a batch-ABI plugin over one request (no fail policy): the request's bytes go in as
    /// one `list<u8>`; `unchanged` hands back `data` itself (a reference count, no copy), a
    /// replacement is validated as an OTLP request of the same signal, and a malformed one is
    /// [`CallError::MalformedOutput`].
    pub fn call_request(&self, data: &OtlpData) -> Result<OtlpData, CallError> {
        let signal = data.signal();
        let unsupported = || CallError::Unsupported {
            plugin: self.name().to_string(),
            signal: match signal {
                Signal::Traces => "spans",
                Signal::Logs => "logs",
            },
        };
        let n = data.items() as usize;
        let bytes: &[u8] = data.bytes();
        let out = match signal {
            Signal::Traces => {
                let idx = self.inner.otlp_traces.as_ref().ok_or_else(unsupported)?;
                self.inner.call(n, |store, instance| {
                    let guest = idx.load(&mut *store, instance)?;
                    let out = guest.call_process_traces(&mut *store, bytes)?;
                    Ok(out.map(|o| self.answer(data, o)))
                })?
            }
            Signal::Logs => {
                let idx = self.inner.otlp_logs.as_ref().ok_or_else(unsupported)?;
                self.inner.call(n, |store, instance| {
                    let guest = idx.load(&mut *store, instance)?;
                    let out = guest.call_process_logs(&mut *store, bytes)?;
                    Ok(out.map(|o| self.answer(data, o)))
                })?
            }
        };
        out.map_err(|e| self.malformed(e.to_string()))
    }

    /// Counts a malformed output and makes its error (both ABIs).
    fn malformed(&self, message: String) -> CallError {
        self.inner
            .core
            .shared
            .metrics
            .malformed_outputs
            .fetch_add(1, Ordering::Relaxed);
        CallError::MalformedOutput {
            plugin: self.name().to_string(),
            message,
        }
    }

    /// What a batch-ABI call returned, as the request to pass on and its item count (for the
    /// plugin's metrics; a malformed answer counts as all items kept, the fail policy decides).
    fn answer(
        &self,
        input: &OtlpData,
        outcome: Outcome,
    ) -> (Result<OtlpData, crate::WireError>, usize) {
        match outcome {
            Outcome::Unchanged => (Ok(input.clone()), input.items() as usize),
            Outcome::Replaced(bytes) => match OtlpData::from_plugin_output(
                input,
                bytes,
                &self.inner.core.settings.output_limits,
            ) {
                Ok(out) => {
                    let items = out.items() as usize;
                    (Ok(out), items)
                }
                Err(e) => (Err(e), input.items() as usize),
            },
        }
    }

    /// The loop of [`Self::process`]: `on_failure` decides what a failed batch becomes, a fail
    /// policy or an error that stops.
    fn process_with<R: SignalRequest, E>(
        &self,
        req: R,
        mut on_failure: impl FnMut(CallError, u64) -> Result<FailPolicy, E>,
    ) -> Result<(R, BatchReport), ProcessError<E>> {
        if self.inner.worlds.abi == Abi::Batch {
            // A batch-ABI plugin works on the bytes: encode, run, decode.
            let wire = |e: String| ProcessError::Convert(ConvertError::Wire(e));
            let data = req.to_data().map_err(|e| wire(e.to_string()))?;
            let (out, report) = self.process_data_with(data, on_failure)?;
            return Ok((R::from_data(&out).map_err(|e| wire(e.to_string()))?, report));
        }
        // Convert everything first: a malformed request is rejected whole, nothing half-processed.
        let inputs = req.to_batches()?;
        let mut report = BatchReport::default();
        let mut out = Vec::new();
        for (batch, (resource, schema_url, original)) in inputs.into_iter().zip(req.into_groups()) {
            let n = R::batch_items(&batch);
            report.items_in += n;
            let limits = &self.inner.core.settings.output_limits;
            let converted = R::call(self, &batch).and_then(|b| {
                let group = R::batch_to_pb(b, resource.as_ref(), R::scope_present(&original))
                    .map_err(|e| self.malformed(e.to_string()))?;
                // Held to the same limits as a batch plugin's output (depth was checked above).
                crate::signal::check_group(R::SIGNAL, &group, limits)
                    .map_err(|e| self.malformed(e.to_string()))?;
                Ok(group)
            });
            let group = match converted {
                Ok(group) => group,
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
            report.items_out += R::scoped_items(&group.2);
            out.push(group);
        }
        Ok((R::from_groups(out), report))
    }
}

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

impl<X: Send + 'static> Instances<X> {
    /// Epoch ticks for one call: the deadline rounded up, plus the tick already under way.
    fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos().max(1);
        (self.settings.deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }

    /// A store for a new instance: WASI with only the granted capabilities, stdio to the log,
    /// the memory limiter and the epoch deadline.
    pub fn new_store(&self) -> Store<HostState<X>> {
        let name = &self.settings.name;
        let mut wasi = WasiCtxBuilder::new();
        let plugin_name: Arc<str> = Arc::from(name.as_str());
        let limit = self.shared.metrics.logs.stdio.clone();
        wasi.stdout(stdio::LogStream {
            plugin: plugin_name.clone(),
            which: stdio::Which::Stdout,
            limit: limit.clone(),
        });
        wasi.stderr(stdio::LogStream {
            plugin: plugin_name,
            which: stdio::Which::Stderr,
            limit,
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
        let state = HostState::new(
            self.shared.clone(),
            wasi.build(),
            self.settings.memory_cap,
            (self.ext)(),
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        self.refuel(&mut store);
        store
    }

    /// Gives the store this plugin's per-call fuel budget (no-op without one).
    fn refuel(&self, store: &mut Store<HostState<X>>) {
        if let Some(fuel) = self.settings.fuel {
            // Only fails when the engine does not meter fuel, which `load` has ruled out.
            let _ = store.set_fuel(fuel);
        }
    }

    /// A new instance with `init` done.
    pub fn instantiate(&self) -> Result<Warm<X>, CallError> {
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
    pub fn start(&self) -> Result<(), LoadError> {
        let first = self.instantiate().map_err(|e| match e {
            CallError::Guest {
                kind: "invalid-config",
                message,
                plugin,
            } => LoadError::InvalidConfig { plugin, message },
            other => LoadError::Init {
                plugin: self.settings.name.clone(),
                cause: Box::new(other),
            },
        })?;
        self.give_back(first);
        Ok(())
    }

    /// A warm instance from the pool, or a new one.
    pub fn take(&self) -> Result<Warm<X>, CallError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(w) => Ok(w),
            None => self.instantiate(),
        }
    }

    /// The pooled instance whose store has `instance_id`, if it is idle right now.
    pub fn take_idle(&self, instance_id: u64) -> Option<Warm<X>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let at = pool
            .iter()
            .position(|w| w.store.data().instance_id == instance_id)?;
        Some(pool.swap_remove(at))
    }

    /// Warm instances in the pool right now.
    pub fn idle(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Returns an instance to the pool (or drops it when the pool is full or reuse is off).
    /// Returns whether it was kept.
    pub fn give_back(&self, warm: Warm<X>) -> bool {
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
    pub fn run<R>(
        &self,
        warm: &mut Warm<X>,
        f: impl FnOnce(&mut Store<HostState<X>>, &Instance) -> wasmtime::Result<R>,
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
    ///
    /// The log is one line per failure, at most the plugin's failure budget per interval
    /// ([`crate::log_limit`]); the rest are counted and summed up in one line per interval. A
    /// trap's wasm backtrace is logged at debug level only.
    pub fn on_failure(&self, err: &CallError, items: u64) -> FailPolicy {
        let policy = self.settings.fail_policy;
        let m = &self.shared.metrics;
        match policy {
            FailPolicy::Open => {
                m.failed_open_items.fetch_add(items, Ordering::Relaxed);
                m.failed_open.fetch_add(1, Ordering::Relaxed)
            }
            FailPolicy::Closed => {
                m.failed_closed_items.fetch_add(items, Ordering::Relaxed);
                m.failed_closed.fetch_add(1, Ordering::Relaxed)
            }
        };
        let plugin = self.settings.name.as_str();
        if m.logs.failures.admit(plugin) {
            // One line, whatever the guest put in its message.
            let line = err.to_string().replace('\n', "\\n");
            tracing::warn!(plugin, policy = ?policy, items, "{line}");
            if let CallError::Trapped {
                backtrace: Some(bt),
                ..
            } = err
            {
                tracing::debug!(plugin, "wasm backtrace of the trap:\n{bt}");
            }
        }
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
pub(crate) fn classify_trap<X>(
    plugin: &str,
    store: &Store<HostState<X>>,
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
    // wasmtime attaches the guest backtrace as a multi-line context: keep it apart, so the
    // message is the trap itself (and whatever context the host added), on one line.
    let backtrace = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string());
    let message = err
        .chain()
        .map(|e| e.to_string())
        .filter(|m| Some(m) != backtrace.as_ref())
        .collect::<Vec<_>>()
        .join(": ");
    CallError::Trapped {
        plugin: plugin.to_string(),
        kind,
        message,
        backtrace,
    }
}
