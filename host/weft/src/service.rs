//! `weft run`: the service that composes one configuration's parts — the collector
//! (`weft-collector`), the filter proxies (`weft-proxy`) and the telemetry server (the runtime's)
//! — starts them on one stop signal, and hot-reloads their plugins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The exporter interface and the in-memory exporter, for [`start_with`].
pub use weft_collector::exporter::{Exporter, InMemoryExporter};
use weft_collector::{Collector, Pipeline, PluginSlot};
use weft_proxy::{Filter, FilterSlot, ProxyMetrics, RunningProxy};
use weft_runtime::config::{ComponentSource, ConfigError, WasmConfig, err};
use weft_runtime::net::{BindError, ListenerMetrics, ListenerStats, bind};
use weft_runtime::telemetry::{Exposition, MetricKind, MetricsSource, TelemetryServer};
use weft_runtime::{LoadError, Plugin, PluginHost, PluginMetrics};

use crate::config::{Config, WasmUnit};

/// Why weft could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A processor's plugin could not be loaded.
    #[error("processors.{id}: {cause}")]
    Plugin {
        /// The processor id.
        id: String,
        /// Why (in the message, so not a `source`: a report of the chain would repeat it).
        cause: LoadError,
    },
    /// A proxy's filter could not be loaded.
    #[error("{key}: {cause}")]
    Filter {
        /// `proxies.<id>.filters.<name>`.
        key: String,
        /// Why (in the message, as for `Plugin`).
        cause: LoadError,
    },
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// The bytes of a Wasm unit's component, and how errors name it: a built-in plugin, or a file.
fn component_bytes(w: &WasmConfig) -> Result<(String, std::borrow::Cow<'static, [u8]>), LoadError> {
    match &w.component {
        ComponentSource::Builtin(name) => Ok((
            format!("builtin:{name}"),
            std::borrow::Cow::Borrowed(crate::builtin::get(name).unwrap_or_default()),
        )),
        ComponentSource::File(path) => std::fs::read(path)
            .map(|bytes| (path.display().to_string(), std::borrow::Cow::Owned(bytes)))
            .map_err(|source| LoadError::Read {
                path: path.clone(),
                source,
            }),
    }
}

/// Loads one Wasm processor's plugin with its settings (at start and on hot reload).
fn load_processor(host: &PluginHost, id: &str, w: &WasmConfig) -> Result<Plugin, LoadError> {
    let (what, bytes) = component_bytes(w)?;
    host.load(&what, &bytes, w.settings(id))
}

/// Loads one filter of proxy `proxy` (at start and on hot reload). Its plugin name, in logs and
/// metrics, is `<proxy>/<filter name>`.
fn load_filter(
    host: &PluginHost,
    proxy: &str,
    f: &weft_proxy::config::FilterConfig,
) -> Result<Filter, LoadError> {
    let (what, bytes) = component_bytes(&f.wasm)?;
    weft_proxy::load_filter(
        host,
        &what,
        &bytes,
        f.wasm.settings(&format!("{proxy}/{}", f.name)),
    )
}

/// Loads every processor's plugin (what `weft validate` checks beyond the YAML).
pub fn load_processors(
    config: &Config,
    host: &PluginHost,
) -> Result<BTreeMap<String, Plugin>, StartError> {
    let mut plugins = BTreeMap::new();
    for (id, w) in config
        .collector
        .processors
        .iter()
        .filter_map(|(id, p)| Some((id, p.wasm()?)))
    {
        let plugin = load_processor(host, id, w).map_err(|cause| StartError::Plugin {
            id: id.clone(),
            cause,
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
            let filter = load_filter(host, id, f).map_err(|cause| StartError::Filter {
                key: weft_proxy::config::filter_key(id, &f.name),
                cause,
            })?;
            filters.push((f.name.clone(), filter));
        }
        proxies.insert(id.clone(), filters);
    }
    Ok(proxies)
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
    Processor(PluginSlot),
    Filter(FilterSlot),
}

/// A freshly loaded version for a [`Slot`].
enum Loaded {
    Processor(Plugin),
    Filter(Filter),
}

impl Slot {
    fn metrics(&self) -> Arc<PluginMetrics> {
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

/// The `weft_config_reloads_total` counters.
impl MetricsSource for ConfigReloads {
    fn render(&self, out: &mut Exposition) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut f = out.family(
            "weft_config_reloads_total",
            "Configuration-file reloads by result.",
            MetricKind::Counter,
        );
        for (result, n) in [
            ("ok", &self.ok),
            ("failed", &self.failed),
            ("needs_restart", &self.needs_restart),
        ] {
            f.sample(&[("result", result)], n.load(Relaxed));
        }
    }
}

/// A running weft. Dropping it does not stop it: call [`Running::shutdown`].
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
    collector: Collector,
    servers: tokio::task::JoinSet<()>,
}

impl Running {
    /// The address of receiver `id`'s `protocol` listener.
    pub fn address(&self, id: &str, protocol: &str) -> Option<SocketAddr> {
        self.collector.address(id, protocol)
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
        weft_runtime::net::join_until(&mut self.servers, deadline).await;
        // Our handles on the pipelines go too, so the exporter queues close once drained.
        self.pipelines.clear();
        self.collector.drain(deadline).await
    }
}

/// Starts everything `config` describes: the collector's receivers, pipelines and exporters, the
/// filter proxies, the telemetry server and hot reload. Port 0 binds a free port;
/// [`Running::listeners`] says which.
pub async fn start(config: &Config, host: &PluginHost) -> Result<Running, StartError> {
    start_with(config, host, BTreeMap::new()).await
}

/// [`start`], with configured exporters replaced by the caller's, by exporter id: each replaced
/// id keeps its queue, batch and retry settings and its place in the pipelines; only where its
/// batches go changes. An id not configured under `exporters` is an error (`exporters.<id>`).
/// This is how tests that run a whole configuration read what it exported: declare an exporter
/// (`debug/memory: {}`), name it in the pipelines, and pass an [`InMemoryExporter`] under its id.
/// Configuration reloads see the file's exporters; a replaced one stays replaced.
pub async fn start_with(
    config: &Config,
    host: &PluginHost,
    exporters: BTreeMap<String, Arc<dyn Exporter>>,
) -> Result<Running, StartError> {
    if let Some(id) = exporters
        .keys()
        .find(|id| !config.collector.exporters.contains_key(*id))
    {
        return Err(err(
            format!("exporters.{id}"),
            "not defined under exporters: start_with replaces configured exporters only",
        )
        .into());
    }
    let plugins = load_processors(config, host)?;
    let filters = load_filters(config, host)?;
    let slots: BTreeMap<String, PluginSlot> = plugins
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
            reload_slots.insert(
                weft_proxy::config::filter_key(id, name),
                Slot::Filter(s.clone()),
            );
        }
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let collector =
        weft_collector::start_with(&config.collector, &slots, &exporters, stop_rx.clone()).await?;

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
    let mut proxies = Vec::new();
    for (id, p) in &config.proxies {
        let listener = bind(format!("proxies.{id}.listen"), p.listen).await?;
        let chain = filter_slots.get(id).cloned().unwrap_or_default();
        let (running, serve) = weft_proxy::start(id, p, chain, listener, stop_rx.clone());
        servers.spawn(serve);
        proxies.push(running);
    }
    let metrics_address = match config.metrics_address {
        Some(addr) => {
            let listener = bind("service.telemetry.metrics", addr).await?;
            let bound = listener.local_addr().unwrap_or(addr);
            let admin = ListenerStats::new("service.telemetry.metrics");
            let mut listeners = collector.listener_stats.clone();
            listeners.extend(proxies.iter().map(|p| p.listener.clone()));
            listeners.push(admin.clone());
            let telemetry = TelemetryServer {
                sources: vec![
                    Arc::new(host.metrics().clone()),
                    collector.metrics(),
                    reloads.clone(),
                    Arc::new(ProxyMetrics(
                        proxies.iter().map(|p| p.stats.clone()).collect(),
                    )),
                    Arc::new(ListenerMetrics(listeners)),
                ],
                ready: ready.clone(),
            };
            servers.spawn(telemetry.serve(listener, admin, stop_rx.clone()));
            Some(bound)
        }
        None => None,
    };
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in &proxies {
        tracing::info!(proxy = %p.id, addr = %p.address, filters = p.filters.len(), "proxy listening");
    }
    Ok(Running {
        listeners: collector.listeners.clone(),
        metrics_address,
        pipelines: collector.pipelines.clone(),
        proxies,
        config_reloads: reloads,
        stop,
        collector,
        servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_error_is_said_once_however_the_chain_is_printed() {
        let link = LoadError::link(
            "f.wasm",
            "component imports instance `wasi:http/types@0.2.10`",
        );
        let e = anyhow::Error::from(StartError::Filter {
            key: "proxies.edge.filters.js".into(),
            cause: link,
        });
        let shown = format!("{e:#}");
        assert_eq!(shown.matches("cannot be linked").count(), 1, "{shown}");
        let init = LoadError::Init {
            plugin: "p".into(),
            cause: Box::new(weft_runtime::CallError::Guest {
                plugin: "p".into(),
                kind: "other",
                message: "boom".into(),
            }),
        };
        let e = anyhow::Error::from(StartError::Plugin {
            id: "wasm/p".into(),
            cause: init,
        });
        let shown = format!("{e:#}");
        assert_eq!(shown.matches("boom").count(), 1, "{shown}");
        assert!(
            shown.starts_with("processors.wasm/p: plugin `p` failed to start"),
            "{shown}"
        );
    }
}
