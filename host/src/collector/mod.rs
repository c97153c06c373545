//! `weft run`: OTLP receivers → Wasm processors → exporters, configured like the
//! OpenTelemetry Collector.

pub mod config;
pub mod exporter;
pub mod grpc;
pub mod http;
pub mod pipeline;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use config::{ComponentSource, ProcessorConfig, WasmUnit};
pub use config::{Config, ConfigError, DEFAULT_CONFIG, Signal};
pub use pipeline::{Payload, Pipeline, PipelineStats};

use crate::plugin::{Plugin, PluginHost, PluginSettings};
use crate::proxy::{Filter, FilterSlot, RunningProxy};

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A processor's plugin could not be loaded.
    #[error("processors.{id}: {source}")]
    Plugin {
        /// The processor id.
        id: String,
        /// Why.
        source: crate::LoadError,
    },
    /// A proxy's filter could not be loaded.
    #[error("{key}: {source}")]
    Filter {
        /// `proxies.<id>.filters.<name>`.
        key: String,
        /// Why.
        source: crate::LoadError,
    },
    /// A listener could not bind.
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Loads every processor's plugin (what `weft validate` checks beyond the YAML).
pub fn load_processors(
    config: &Config,
    host: &PluginHost,
) -> Result<BTreeMap<String, Plugin>, StartError> {
    let mut plugins = BTreeMap::new();
    for (id, p) in &config.processors {
        let ProcessorConfig::Wasm(w) = p;
        let plugin = load_processor(host, id, w).map_err(|source| StartError::Plugin {
            id: id.clone(),
            source,
        })?;
        plugins.insert(id.clone(), plugin);
    }
    Ok(plugins)
}

/// Loads every proxy's filters (what `weft validate` checks for `proxies:`), by proxy id, in
/// chain order with their names.
pub fn load_filters(
    config: &Config,
    host: &PluginHost,
) -> Result<BTreeMap<String, Vec<(String, Filter)>>, StartError> {
    let mut proxies = BTreeMap::new();
    for (id, p) in &config.proxies {
        let mut filters = Vec::new();
        for f in &p.filters {
            let filter = load_filter(host, id, f).map_err(|source| StartError::Filter {
                key: config::filter_key(id, &f.name),
                source,
            })?;
            filters.push((f.name.clone(), filter));
        }
        proxies.insert(id.clone(), filters);
    }
    Ok(proxies)
}

/// Loads one filter of proxy `proxy` (at start and on hot reload). Its plugin name, in logs and
/// metrics, is `<proxy>/<filter name>`.
fn load_filter(
    host: &PluginHost,
    proxy: &str,
    f: &config::FilterConfig,
) -> Result<Filter, crate::LoadError> {
    let settings = plugin_settings(&format!("{proxy}/{}", f.name), &f.wasm);
    match &f.wasm.component {
        ComponentSource::Builtin(name) => {
            let bytes = crate::builtin::get(name).unwrap_or_default();
            host.load_filter(&format!("builtin:{name}"), bytes, settings)
        }
        ComponentSource::File(path) => host.load_filter_file(path, settings),
    }
}

/// The plugin settings of a `wasm` processor or proxy filter configuration.
fn plugin_settings(name: &str, w: &config::WasmProcessorConfig) -> PluginSettings {
    let mut settings = PluginSettings::new(name);
    settings.config = w.config.clone();
    settings.deadline = w.deadline;
    settings.memory_cap = w.memory_limit;
    settings.fuel = w.fuel;
    settings.fail_policy = w.fail_policy;
    settings.capabilities = w.capabilities.clone();
    settings
}

/// Loads one Wasm processor's plugin with its settings (at start and on hot reload).
fn load_processor(
    host: &PluginHost,
    id: &str,
    w: &config::WasmProcessorConfig,
) -> Result<Plugin, crate::LoadError> {
    let settings = plugin_settings(id, w);
    match &w.component {
        ComponentSource::Builtin(name) => {
            let bytes = crate::builtin::get(name).unwrap_or_default();
            host.load(&format!("builtin:{name}"), bytes, settings)
        }
        ComponentSource::File(path) => host.load_file(path, settings),
    }
}

/// How often component files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_millis(250);

/// The identity of a file version: modification time and length.
fn file_version(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Counters of configuration-file reloads.
#[derive(Debug, Default)]
pub struct ConfigReloads {
    /// New configurations applied.
    pub ok: std::sync::atomic::AtomicU64,
    /// New configurations refused as invalid (or whose plugins did not load).
    pub failed: std::sync::atomic::AtomicU64,
    /// New configurations that change receivers, exporters or pipelines: not applied.
    pub needs_restart: std::sync::atomic::AtomicU64,
}

/// A Wasm plugin that hot reload can swap: a processor's or a proxy filter's slot.
#[derive(Clone)]
enum Slot {
    Processor(pipeline::PluginSlot),
    Filter(FilterSlot),
}

/// A freshly loaded version for a [`Slot`].
enum Loaded {
    Processor(Plugin),
    Filter(Filter),
}

impl Slot {
    fn metrics(&self) -> Arc<crate::PluginMetrics> {
        match self {
            Slot::Processor(s) => s.load().metrics().clone(),
            Slot::Filter(s) => s.load().metrics().clone(),
        }
    }

    fn store(&self, loaded: Loaded) {
        match (self, loaded) {
            (Slot::Processor(s), Loaded::Processor(p)) => s.store(Arc::new(p)),
            (Slot::Filter(s), Loaded::Filter(f)) => s.store(Arc::new(f)),
            // Keys name one kind for the life of a configuration structure.
            _ => {}
        }
    }
}

/// How a unit key reads in errors: `processors.<id>`, or the filter's own key.
fn unit_label(key: &str, unit: &WasmUnit) -> String {
    match unit {
        WasmUnit::Processor => format!("processors.{key}"),
        WasmUnit::Filter { .. } => key.to_string(),
    }
}

/// Loads unit `key` of `config` on a blocking thread (compiling is CPU work that must not
/// stall receivers or proxies).
async fn load_off_path(host: &PluginHost, config: &Config, key: &str) -> Result<Loaded, String> {
    let (h, c, key) = (host.clone(), config.clone(), key.to_string());
    let load = move || -> Result<Loaded, String> {
        let units = c.wasm_units();
        let Some((unit, w)) = units.get(&key) else {
            return Err("no longer configured".into());
        };
        match unit {
            WasmUnit::Processor => load_processor(&h, &key, w)
                .map(Loaded::Processor)
                .map_err(|e| e.to_string()),
            WasmUnit::Filter { proxy, index } => {
                let f = c
                    .proxies
                    .get(proxy)
                    .and_then(|p| p.filters.get(*index))
                    .ok_or("no longer configured")?;
                load_filter(&h, proxy, f)
                    .map(Loaded::Filter)
                    .map_err(|e| e.to_string())
            }
        }
    };
    match tokio::task::spawn_blocking(load).await {
        Ok(r) => r,
        Err(e) => Err(format!("loader panicked: {e}")),
    }
}

/// Hot reload. Every [`RELOAD_POLL`]:
/// - a changed configuration file is parsed; if only processors or proxy filters changed, the
///   changed ones are loaded off the request path and swapped in (all or none); if receivers,
///   exporters, pipelines or a proxy's listener, upstream or chain changed, nothing is applied
///   and a restart is asked for; an invalid file is refused;
/// - a changed component file is loaded with the current settings and swapped in.
///
/// Until a new version is ready, and for good if it fails (invalid, wrong world, `init` rejects
/// its config), the old one keeps serving; requests in flight finish on the version they began.
async fn hot_reload(
    host: PluginHost,
    mut config: Config,
    slots: BTreeMap<String, Slot>,
    reloads: Arc<ConfigReloads>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let component_files = |c: &Config| -> BTreeMap<String, std::path::PathBuf> {
        c.wasm_units()
            .into_iter()
            .filter_map(|(key, (_, w))| match &w.component {
                ComponentSource::File(path) => Some((key, path.clone())),
                ComponentSource::Builtin(_) => None,
            })
            .collect()
    };
    let mut config_seen = config.source.as_deref().and_then(file_version);
    let mut seen: BTreeMap<String, _> = component_files(&config)
        .into_iter()
        .map(|(key, path)| (key, file_version(&path)))
        .collect();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_POLL) => {}
            _ = stop.changed() => return,
        }
        if let Some(path) = config.source.clone() {
            let version = file_version(&path);
            if version.is_some() && version != config_seen {
                config_seen = version;
                match Config::load(&path) {
                    Err(e) => {
                        reloads.failed.fetch_add(1, Relaxed);
                        tracing::error!(config = %path.display(), error = %e, "new configuration refused; the running one stays");
                    }
                    Ok(new) if !config.same_structure(&new) => {
                        reloads.needs_restart.fetch_add(1, Relaxed);
                        tracing::warn!(config = %path.display(), "receivers, exporters, pipelines or proxies changed: restart weft to apply this configuration; nothing was applied");
                    }
                    Ok(new) => {
                        let mut fresh = Vec::new();
                        let mut error = None;
                        let old_units = config.wasm_units();
                        for (key, (unit, w)) in new.wasm_units() {
                            if old_units.get(&key).map(|(_, old)| *old) == Some(w) {
                                continue;
                            }
                            match load_off_path(&host, &new, &key).await {
                                Ok(loaded) => fresh.push((key, loaded)),
                                Err(e) => {
                                    error = Some(format!("{}: {e}", unit_label(&key, &unit)));
                                    break;
                                }
                            }
                        }
                        match error {
                            Some(e) => {
                                reloads.failed.fetch_add(1, Relaxed);
                                tracing::error!(config = %path.display(), error = %e, "new configuration refused; the running one stays");
                            }
                            None => {
                                for (key, loaded) in fresh {
                                    if let Some(slot) = slots.get(&key) {
                                        slot.store(loaded);
                                    }
                                }
                                let sources = component_files(&new);
                                seen.retain(|key, _| sources.contains_key(key));
                                for (key, path) in sources {
                                    seen.entry(key).or_insert_with(|| file_version(&path));
                                }
                                config = new;
                                reloads.ok.fetch_add(1, Relaxed);
                                tracing::info!(config = %path.display(), "configuration reloaded");
                            }
                        }
                    }
                }
            }
        }
        for (key, path) in component_files(&config) {
            let version = file_version(&path);
            let last = seen.entry(key.clone()).or_insert(None);
            if version.is_none() || version == *last {
                continue;
            }
            // Remember this version whether or not it loads: a half-written file changes
            // again when the writer finishes, and that version is tried then.
            *last = version;
            let Some(slot) = slots.get(&key) else {
                continue;
            };
            let metrics = slot.metrics();
            match load_off_path(&host, &config, &key).await {
                Ok(loaded) => {
                    slot.store(loaded);
                    metrics.reloads.fetch_add(1, Relaxed);
                    tracing::info!(plugin = %key, path = %path.display(), "reloaded");
                }
                Err(e) => {
                    metrics.reload_failures.fetch_add(1, Relaxed);
                    tracing::error!(plugin = %key, error = %e, "reload failed; the previous version keeps serving");
                }
            }
        }
    }
}

/// A running collector. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    /// Where each receiver listens: `(receiver id, "grpc" | "http", address)`.
    pub listeners: Vec<(String, &'static str, SocketAddr)>,
    /// Where self-metrics are served, if enabled.
    pub metrics_address: Option<SocketAddr>,
    /// The pipelines.
    pub pipelines: Vec<Arc<Pipeline>>,
    /// The HTTP filter proxies.
    pub proxies: Vec<RunningProxy>,
    /// Configuration-file reloads.
    pub config_reloads: Arc<ConfigReloads>,
    stop: tokio::sync::watch::Sender<bool>,
    servers: tokio::task::JoinSet<()>,
    exporters: tokio::task::JoinSet<()>,
}

impl Running {
    /// The address of receiver `id`'s `protocol` listener.
    pub fn address(&self, id: &str, protocol: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(i, p, _)| i == id && *p == protocol)
            .map(|(_, _, a)| *a)
    }

    /// The address proxy `id` listens on.
    pub fn proxy_address(&self, id: &str) -> Option<SocketAddr> {
        self.proxies.iter().find(|p| p.id == id).map(|p| p.address)
    }

    /// Stops accepting, lets requests (and proxy streams) in flight finish, then drains the
    /// exporter queues, within `timeout`. Returns whether everything drained in time.
    pub async fn shutdown(mut self, timeout: Duration) -> bool {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::timeout_at(deadline, self.servers.join_next())
            .await
            .ok()
            .flatten()
            .is_some()
        {}
        // Receivers are gone: dropping the pipelines closes the queues once nobody sends.
        self.pipelines.clear();
        let mut drained = true;
        loop {
            match tokio::time::timeout_at(deadline, self.exporters.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    drained = false;
                    break;
                }
            }
        }
        drained
    }
}

async fn bind(what: String, addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Starts receivers, pipelines, exporters and the telemetry server. Port 0 binds a free port;
/// [`Running::listeners`] says which.
pub async fn start(config: &Config, host: &PluginHost) -> Result<Running, StartError> {
    let plugins = load_processors(config, host)?;
    let filters = load_filters(config, host)?;
    let slots: BTreeMap<String, pipeline::PluginSlot> = plugins
        .into_iter()
        .map(|(id, p)| (id, Arc::new(arc_swap::ArcSwap::from_pointee(p))))
        .collect();
    let filter_slots: BTreeMap<String, Vec<(String, FilterSlot)>> = filters
        .into_iter()
        .map(|(id, chain)| {
            let chain = chain
                .into_iter()
                .map(|(name, f)| (name, Arc::new(arc_swap::ArcSwap::from_pointee(f))))
                .collect();
            (id, chain)
        })
        .collect();
    let mut reload_slots: BTreeMap<String, Slot> = slots
        .iter()
        .map(|(id, s)| (id.clone(), Slot::Processor(s.clone())))
        .collect();
    for (id, chain) in &filter_slots {
        for (name, s) in chain {
            reload_slots.insert(config::filter_key(id, name), Slot::Filter(s.clone()));
        }
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut exporters = tokio::task::JoinSet::new();
    let mut by_signal: BTreeMap<Signal, Arc<Pipeline>> = BTreeMap::new();
    for (signal, p) in &config.pipelines {
        let stats = Arc::new(PipelineStats::default());
        let mut queues = Vec::new();
        for id in &p.exporters {
            let cfg = config.exporters[id].clone();
            let (tx, rx) = tokio::sync::mpsc::channel(exporter::queue_size(&cfg));
            exporters.spawn(exporter::run(id.clone(), cfg, rx, stats.clone()));
            queues.push(pipeline::ExporterQueue { id: id.clone(), tx });
        }
        let processors = p
            .processors
            .iter()
            .map(|id| (id.clone(), slots[id].clone()))
            .collect();
        by_signal.insert(
            *signal,
            Arc::new(Pipeline {
                signal: *signal,
                processors,
                exporters: queues,
                stats,
            }),
        );
    }

    let ready = Arc::new(AtomicBool::new(false));
    let mut servers = tokio::task::JoinSet::new();
    let reloads = Arc::new(ConfigReloads::default());
    servers.spawn(hot_reload(
        host.clone(),
        config.clone(),
        reload_slots,
        reloads.clone(),
        stop_rx.clone(),
    ));
    let mut listeners = Vec::new();
    for (id, r) in &config.receivers {
        let uses = |s: Signal| {
            config
                .pipelines
                .get(&s)
                .filter(|p| p.receivers.contains(id))
                .and(by_signal.get(&s))
                .cloned()
        };
        let (traces, logs) = (uses(Signal::Traces), uses(Signal::Logs));
        if let Some(g) = &r.grpc {
            let listener = bind(format!("receivers.{id}.protocols.grpc"), g.endpoint).await?;
            let addr = listener.local_addr().unwrap_or(g.endpoint);
            listeners.push((id.clone(), "grpc", addr));
            let services = grpc::OtlpGrpc {
                traces: traces.clone(),
                logs: logs.clone(),
            };
            let mut rx = stop_rx.clone();
            let max = g.max_recv_msg_size_mib << 20;
            servers.spawn(async move {
                let shutdown = async move {
                    let _ = rx.changed().await;
                };
                if let Err(e) = grpc::serve(services, listener, max, shutdown).await {
                    tracing::error!(%addr, error = %e, "OTLP/gRPC receiver failed");
                }
            });
        }
        if let Some(h) = &r.http {
            let listener = bind(format!("receivers.{id}.protocols.http"), h.endpoint).await?;
            let addr = listener.local_addr().unwrap_or(h.endpoint);
            listeners.push((id.clone(), "http", addr));
            let handler = Arc::new(http::OtlpHttp {
                traces,
                logs,
                max_body: h.max_request_body_size_mib << 20,
            });
            servers.spawn(http::serve(
                listener,
                move |req| {
                    let h = handler.clone();
                    async move { h.handle(req).await }
                },
                stop_rx.clone(),
            ));
        }
    }
    let mut proxies = Vec::new();
    for (id, p) in &config.proxies {
        let listener = bind(format!("proxies.{id}.listen"), p.listen).await?;
        let chain = filter_slots.get(id).cloned().unwrap_or_default();
        let (running, serve) = crate::proxy::start(id, p, chain, listener, stop_rx.clone());
        servers.spawn(serve);
        proxies.push(running);
    }
    let pipelines: Vec<Arc<Pipeline>> = by_signal.into_values().collect();
    let metrics_address = match config.metrics_address {
        Some(addr) => {
            let listener = bind("service.telemetry.metrics".into(), addr).await?;
            let bound = listener.local_addr().unwrap_or(addr);
            let telemetry = Arc::new(http::Telemetry {
                registry: host.metrics().clone(),
                pipelines: pipelines.clone(),
                ready: ready.clone(),
                reloads: reloads.clone(),
                proxies: proxies.iter().map(|p| p.stats.clone()).collect(),
            });
            servers.spawn(http::serve(
                listener,
                move |req| {
                    let t = telemetry.clone();
                    async move { t.handle(req).await }
                },
                stop_rx.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    for (id, proto, addr) in &listeners {
        tracing::info!(receiver = %id, protocol = proto, %addr, "listening");
    }
    for p in &proxies {
        tracing::info!(proxy = %p.id, addr = %p.address, filters = p.filters.len(), "proxy listening");
    }
    Ok(Running {
        listeners,
        metrics_address,
        pipelines,
        proxies,
        config_reloads: reloads,
        stop,
        servers,
        exporters,
    })
}
