//! weft's OTLP collector: receivers → pipelines of Wasm processors → exporters, configured like
//! the OpenTelemetry Collector ([`config`]). One module per component kind, as the Collector
//! keeps one package per receiver and exporter: [`receiver`], [`pipeline`], [`exporter`].
//!
//! The collector runs plugins it is handed (loaded by the caller, in [`PluginSlot`]s that hot
//! reload swaps); it knows nothing of the filter proxy, and its self-metrics are a
//! [`MetricsSource`] for the runtime's telemetry server.

pub mod codec;
pub mod config;
pub mod exporter;
pub mod pipeline;
pub mod receiver;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_runtime::Signal;
use weft_runtime::net::{BindError, ListenerStats, bind};
use weft_runtime::telemetry::{Exposition, MetricKind, MetricsSource};

use config::CollectorConfig;
pub use pipeline::{Payload, Pipeline, PipelineStats, PluginSlot};

/// A running collector: its listeners and pipelines. Stopped by the `stop` channel given to
/// [`start`], then [`Collector::drain`].
pub struct Collector {
    /// Where each receiver listens: `(receiver id, "grpc" | "http", address)`.
    pub listeners: Vec<(String, &'static str, SocketAddr)>,
    /// The receivers' connection counters (`weft_listener_*`), for the telemetry server.
    pub listener_stats: Vec<Arc<ListenerStats>>,
    /// The pipelines.
    pub pipelines: Vec<Arc<Pipeline>>,
    servers: tokio::task::JoinSet<()>,
    exporters: tokio::task::JoinSet<()>,
}

/// Starts the exporters, the pipelines over the processors in `slots` (by processor id) and the
/// receivers. Port 0 binds a free port; [`Collector::listeners`] says which. Receivers stop
/// accepting when `stop` turns true.
pub async fn start(
    config: &CollectorConfig,
    slots: &BTreeMap<String, PluginSlot>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Collector, BindError> {
    start_with(config, slots, &BTreeMap::new(), stop).await
}

/// [`start`], with some configured exporters replaced: each entry of `exporters` takes the place
/// of the configured exporter of the same id (an id that is not configured is ignored). The
/// replaced id keeps its queue, batch and retry settings ([`ExporterConfig::delivery`]); only
/// where batches go changes. This is how tests plug in an [`exporter::InMemoryExporter`].
///
/// [`ExporterConfig::delivery`]: config::ExporterConfig::delivery
pub async fn start_with(
    config: &CollectorConfig,
    slots: &BTreeMap<String, PluginSlot>,
    exporters: &BTreeMap<String, Arc<dyn exporter::Exporter>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Collector, BindError> {
    let replacements = exporters;
    let mut exporters = tokio::task::JoinSet::new();
    let mut by_signal: BTreeMap<Signal, Arc<Pipeline>> = BTreeMap::new();
    for (signal, p) in &config.pipelines {
        let stats = Arc::new(PipelineStats::default());
        let mut queues = Vec::new();
        for id in &p.exporters {
            let cfg = &config.exporters[id];
            let delivery = cfg.delivery();
            let (tx, rx) = tokio::sync::mpsc::channel(delivery.queue.queue_size);
            let built = match replacements.get(id) {
                Some(e) => Ok(e.clone()),
                None => exporter::build(id, cfg),
            };
            match built {
                Ok(e) => {
                    exporters.spawn(exporter::run(id.clone(), e, delivery, rx, stats.clone()));
                }
                Err(e) => {
                    tracing::error!(exporter = %id, error = %e, "cannot start the exporter; its data fails");
                    exporters.spawn(exporter::fail_all(rx, stats.clone()));
                }
            }
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

    let mut servers = tokio::task::JoinSet::new();
    let mut listeners = Vec::new();
    let mut listener_stats = Vec::new();
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
            let key = format!("receivers.{id}.protocols.grpc");
            let listener = bind(key.clone(), g.endpoint).await?;
            let addr = listener.local_addr().unwrap_or(g.endpoint);
            listeners.push((id.clone(), "grpc", addr));
            let services = Arc::new(receiver::grpc::OtlpGrpc {
                traces: traces.clone(),
                logs: logs.clone(),
                max_message: g.max_recv_msg_size_mib << 20,
                read_timeout: g.read_timeout,
            });
            let stats = ListenerStats::new(key);
            listener_stats.push(stats.clone());
            servers.spawn(weft_runtime::net::serve(
                listener,
                g.limits(),
                stats,
                move |req| {
                    let s = services.clone();
                    async move { s.handle(req).await }
                },
                stop.clone(),
            ));
        }
        if let Some(h) = &r.http {
            let key = format!("receivers.{id}.protocols.http");
            let listener = bind(key.clone(), h.endpoint).await?;
            let addr = listener.local_addr().unwrap_or(h.endpoint);
            listeners.push((id.clone(), "http", addr));
            let handler = Arc::new(receiver::http::OtlpHttp {
                traces,
                logs,
                max_body: h.max_request_body_size,
                read_timeout: h.read_timeout,
            });
            let stats = ListenerStats::new(key);
            listener_stats.push(stats.clone());
            servers.spawn(weft_runtime::net::serve(
                listener,
                h.limits(),
                stats,
                move |req| {
                    let h = handler.clone();
                    async move { h.handle(req).await }
                },
                stop.clone(),
            ));
        }
    }
    for (id, proto, addr) in &listeners {
        tracing::info!(receiver = %id, protocol = proto, %addr, "listening");
    }
    Ok(Collector {
        listeners,
        listener_stats,
        pipelines: by_signal.into_values().collect(),
        servers,
        exporters,
    })
}

impl Collector {
    /// The address of receiver `id`'s `protocol` listener.
    pub fn address(&self, id: &str, protocol: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(i, p, _)| i == id && *p == protocol)
            .map(|(_, _, a)| *a)
    }

    /// The pipelines' self-metrics, for the telemetry server.
    pub fn metrics(&self) -> Arc<dyn MetricsSource> {
        Arc::new(PipelineMetrics(self.pipelines.clone()))
    }

    /// After `stop` fired: lets the receivers finish the requests in flight, then drains the
    /// exporter queues, until `deadline`. Returns whether everything drained in time.
    pub async fn drain(mut self, deadline: tokio::time::Instant) -> bool {
        weft_runtime::net::join_until(&mut self.servers, deadline).await;
        // Receivers are gone: dropping the pipelines closes the queues once nobody sends.
        self.pipelines.clear();
        weft_runtime::net::join_until(&mut self.exporters, deadline).await
    }

    /// [`Self::drain`] within `timeout`.
    pub async fn drain_within(self, timeout: Duration) -> bool {
        self.drain(tokio::time::Instant::now() + timeout).await
    }
}

/// The `weft_pipeline_*` metrics of a set of pipelines.
struct PipelineMetrics(Vec<Arc<Pipeline>>);

/// Reads one counter of a pipeline's stats.
type StatFn = fn(&PipelineStats) -> u64;

impl MetricsSource for PipelineMetrics {
    fn render(&self, out: &mut Exposition) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut queue = out.family(
            "weft_pipeline_queue_requests",
            "Requests waiting in an exporter queue.",
            MetricKind::Gauge,
        );
        for p in &self.0 {
            for e in &p.exporters {
                let depth = e.tx.max_capacity() - e.tx.capacity();
                queue.sample(
                    &[("pipeline", p.signal.as_str()), ("exporter", &e.id)],
                    depth,
                );
            }
        }
        let rows: [(&str, &str, StatFn); 6] = [
            (
                "weft_pipeline_received_items_total",
                "Items received from clients.",
                |s| s.received.load(Relaxed),
            ),
            (
                "weft_pipeline_refused_items_total",
                "Items refused (malformed or back-pressure).",
                |s| s.refused.load(Relaxed),
            ),
            (
                "weft_pipeline_queued_items_total",
                "Items queued for exporters (once per exporter).",
                |s| s.queued.load(Relaxed),
            ),
            (
                "weft_pipeline_exported_items_total",
                "Items exporters wrote.",
                |s| s.exported.load(Relaxed),
            ),
            (
                "weft_pipeline_failed_items_total",
                "Items exporters failed to write.",
                |s| s.failed.load(Relaxed),
            ),
            (
                "weft_pipeline_export_retries_total",
                "Export attempts retried.",
                |s| s.retries.load(Relaxed),
            ),
        ];
        for (name, help, get) in rows {
            let mut family = out.family(name, help, MetricKind::Counter);
            for p in &self.0 {
                family.sample(&[("pipeline", p.signal.as_str())], get(&p.stats));
            }
        }
    }
}
