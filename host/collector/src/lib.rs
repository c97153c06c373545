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
pub mod memory;
pub mod pipeline;
pub mod receiver;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use weft_runtime::Signal;
use weft_runtime::net::{BindError, ListenerStats, bind};
use weft_runtime::telemetry::{Exposition, MetricKind, MetricsSource};

use config::{CollectorConfig, ProcessorConfig};
use memory::{MemoryLimiter, MemoryUse};
pub use pipeline::{ExporterStats, Payload, Pipeline, PipelineStats, PluginSlot, ProcessorStats};

/// A running collector: its listeners and pipelines. Stopped by the `stop` channel given to
/// [`start`], then [`Collector::drain`].
pub struct Collector {
    /// Where each receiver listens: `(receiver id, "grpc" | "http", address)`.
    pub listeners: Vec<(String, &'static str, SocketAddr)>,
    /// The receivers' connection counters (`weft_listener_*`), for the telemetry server.
    pub listener_stats: Vec<Arc<ListenerStats>>,
    /// The pipelines.
    pub pipelines: Vec<Arc<Pipeline>>,
    /// What the queues and exports hold, and the last RSS measured.
    pub memory: Arc<MemoryUse>,
    /// The `memory_limiter` processors.
    pub limiters: Vec<Arc<MemoryLimiter>>,
    servers: tokio::task::JoinSet<()>,
    exporters: tokio::task::JoinSet<()>,
    keeper: tokio::task::JoinHandle<()>,
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
    let memory = MemoryUse::new();
    let total = memory::total_memory();
    let limiters: BTreeMap<&String, Arc<MemoryLimiter>> = config
        .processors
        .iter()
        .filter_map(|(id, p)| match p {
            ProcessorConfig::MemoryLimiter(c) => {
                Some((id, MemoryLimiter::new(id, c, total, memory.clone())))
            }
            ProcessorConfig::Wasm(_) => None,
        })
        .collect();
    for l in limiters.values() {
        tracing::info!(processor = %l.id, limit = l.limit, soft_limit = l.soft_limit, "memory limiter");
    }
    let keeper = tokio::spawn(memory::keeper(
        memory.clone(),
        limiters.values().cloned().collect(),
    ));
    let mut by_signal: BTreeMap<Signal, Arc<Pipeline>> = BTreeMap::new();
    for (id, p) in &config.processors {
        if p.wasm().is_some() && !slots.contains_key(id) {
            tracing::error!(processor = %id, "no plugin was loaded for this processor; its pipelines run without it");
        }
    }
    for (signal, p) in &config.pipelines {
        let stats = Arc::new(PipelineStats::new(
            p.processors.iter().filter(|id| slots.contains_key(*id)),
            &p.exporters,
        ));
        let mut queues = Vec::new();
        for id in &p.exporters {
            let cfg = &config.exporters[id];
            let delivery = cfg.delivery();
            let (queue, rx) = pipeline::queue(id, &delivery.queue);
            let built = match replacements.get(id) {
                Some(e) => Ok(e.clone()),
                None => exporter::build(id, cfg),
            };
            match built {
                Ok(e) => {
                    exporters.spawn(exporter::run(
                        id.clone(),
                        e,
                        delivery,
                        rx,
                        stats.clone(),
                        memory.clone(),
                    ));
                }
                Err(e) => {
                    tracing::error!(exporter = %id, error = %e, "cannot start the exporter; its data fails");
                    exporters.spawn(exporter::fail_all(id.clone(), rx, stats.clone()));
                }
            }
            queues.push(queue);
        }
        // The configuration puts a memory limiter first, if anywhere; the rest are plugins.
        let limiter = p.processors.iter().find_map(|id| limiters.get(id).cloned());
        let processors = p
            .processors
            .iter()
            .filter_map(|id| Some((id.clone(), slots.get(id)?.clone())))
            .collect();
        by_signal.insert(
            *signal,
            Arc::new(Pipeline {
                signal: *signal,
                limiter,
                processors,
                exporters: queues,
                stats,
                memory: memory.clone(),
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
        memory,
        limiters: limiters.into_values().collect(),
        servers,
        exporters,
        keeper,
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
        Arc::new(PipelineMetrics {
            pipelines: self.pipelines.clone(),
            memory: self.memory.clone(),
            limiters: self.limiters.clone(),
        })
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

impl Drop for Collector {
    /// The memory keeper runs until the collector is gone, drained or not.
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// The pipelines' self-metrics: weft's own (`weft_pipeline_*`, `weft_exporter_*`) and the same
/// counts under the OpenTelemetry Collector's names (`otelcol_*`); docs/COLLECTOR.md lists them.
struct PipelineMetrics {
    pipelines: Vec<Arc<Pipeline>>,
    memory: Arc<MemoryUse>,
    limiters: Vec<Arc<MemoryLimiter>>,
}

/// Reads one counter of a pipeline's stats.
type StatFn = fn(&PipelineStats) -> u64;
/// Reads one counter of an exporter's stats.
type ExporterFn = fn(&ExporterStats) -> u64;
/// Reads one counter of a processor's stats.
type ProcessorFn = fn(&ProcessorStats) -> u64;

/// The Collector's word for a signal's items in its metric names.
fn items_noun(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "spans",
        Signal::Logs => "log_records",
    }
}

impl MetricsSource for PipelineMetrics {
    fn render(&self, out: &mut Exposition) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut queue = out.family(
            "weft_pipeline_queue_requests",
            "Requests waiting in an exporter queue.",
            MetricKind::Gauge,
        );
        for p in &self.pipelines {
            for e in &p.exporters {
                queue.sample(
                    &[("pipeline", p.signal.as_str()), ("exporter", &e.id)],
                    e.room.requests(),
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
                "Items refused (malformed, back-pressure, shutting down).",
                |s| s.refused.load(Relaxed),
            ),
            (
                "weft_pipeline_queued_items_total",
                "Items queued for exporters (once per exporter).",
                |s| s.queued.load(Relaxed),
            ),
            (
                "weft_pipeline_exported_items_total",
                "Items exporters wrote (summed over exporters).",
                |s| s.exported.load(Relaxed),
            ),
            (
                "weft_pipeline_failed_items_total",
                "Items exporters failed to write (summed over exporters).",
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
            for p in &self.pipelines {
                family.sample(&[("pipeline", p.signal.as_str())], get(&p.stats));
            }
        }
        let mut dropped = out.family(
            "weft_pipeline_dropped_items_total",
            "Items of accepted requests a processor dropped: by its fail-closed policy after a \
             failure (reason fail_closed), or on purpose (reason plugin, e.g. a sampler).",
            MetricKind::Counter,
        );
        for p in &self.pipelines {
            for s in &p.stats.processors {
                for (reason, n) in [
                    ("fail_closed", s.dropped_fail_closed.load(Relaxed)),
                    ("plugin", s.dropped_by_plugin.load(Relaxed)),
                ] {
                    dropped.sample(
                        &[
                            ("pipeline", p.signal.as_str()),
                            ("plugin", &s.id),
                            ("reason", reason),
                        ],
                        n,
                    );
                }
            }
        }
        let mut enqueued = out.family(
            "weft_exporter_enqueued_items_total",
            "Items put in an exporter's queue.",
            MetricKind::Counter,
        );
        for p in &self.pipelines {
            for e in &p.stats.exporters {
                enqueued.sample(
                    &[("pipeline", p.signal.as_str()), ("exporter", &e.id)],
                    e.enqueued.load(Relaxed),
                );
            }
        }
        let mut in_flight = out.family(
            "weft_exporter_in_flight_items",
            "Items queued for an exporter and neither sent nor failed yet (in its queue, in a \
             batch, or being sent or retried).",
            MetricKind::Gauge,
        );
        for p in &self.pipelines {
            for e in &p.stats.exporters {
                in_flight.sample(
                    &[("pipeline", p.signal.as_str()), ("exporter", &e.id)],
                    e.in_flight(),
                );
            }
        }
        self.render_otelcol(out);
        self.render_memory(out);
    }
}

impl PipelineMetrics {
    /// The held bytes, the RSS, and each memory limiter's view.
    fn render_memory(&self, out: &mut Exposition) {
        let process: [(&str, &str, MetricKind, u64); 3] = [
            (
                "weft_memory_held_bytes",
                "Bytes of accepted data weft holds: in exporter queues, batches and export attempts.",
                MetricKind::Gauge,
                self.memory.held(),
            ),
            (
                "otelcol_process_memory_rss",
                "Resident set size of the process in bytes, as last measured.",
                MetricKind::Gauge,
                self.memory.rss(),
            ),
            (
                "weft_memory_trims_total",
                "Times freed memory was given back to the system (malloc_trim).",
                MetricKind::Counter,
                self.memory.trims(),
            ),
        ];
        for (name, help, kind, value) in process {
            out.family(name, help, kind).sample(&[], value);
        }
        if self.limiters.is_empty() {
            return;
        }
        type LimiterFn = fn(&MemoryLimiter) -> u64;
        let gauges: [(&str, &str, LimiterFn); 3] = [
            (
                "weft_memory_limiter_usage_bytes",
                "The memory use a limiter counts: the RSS at its last check, plus the growth of the held bytes since.",
                MemoryLimiter::usage,
            ),
            (
                "weft_memory_limiter_soft_limit_bytes",
                "Above this use a limiter refuses data (limit - spike_limit).",
                |l| l.soft_limit,
            ),
            (
                "weft_memory_limiter_limit_bytes",
                "A limiter's hard limit; above it memory is given back to the system (at most once a second).",
                |l| l.limit,
            ),
        ];
        for (name, help, get) in gauges {
            let mut f = out.family(name, help, MetricKind::Gauge);
            for l in &self.limiters {
                f.sample(&[("processor", &l.id)], get(l));
            }
        }
        for signal in [Signal::Traces, Signal::Logs] {
            let name = format!("otelcol_processor_refused_{}_total", items_noun(signal));
            let mut f = out.family(
                &name,
                "Items a memory limiter refused (the client was told to retry).",
                MetricKind::Counter,
            );
            for l in &self.limiters {
                f.sample(
                    &[("processor", &l.id)],
                    l.refused(pipeline::signal_index(signal)),
                );
            }
        }
    }
}

impl PipelineMetrics {
    /// The OpenTelemetry Collector's names for the same counts, so its dashboards and alerts
    /// work: counters with the `_total` suffix its Prometheus endpoint adds, the receiver
    /// metrics without the `receiver` and `transport` labels (weft counts per pipeline).
    fn render_otelcol(&self, out: &mut Exposition) {
        use std::sync::atomic::Ordering::Relaxed;
        for signal in [Signal::Traces, Signal::Logs] {
            let pipelines: Vec<&Pipeline> = self
                .pipelines
                .iter()
                .filter(|p| p.signal == signal)
                .map(|p| &**p)
                .collect();
            if pipelines.is_empty() {
                continue;
            }
            let noun = items_noun(signal);
            let receiver: [(&str, &str, StatFn); 2] = [
                (
                    "accepted",
                    "Items pushed into the pipeline: exported, queued, or dropped by a processor.",
                    // Refused first: it only grows after `received` did, so no underflow.
                    |s| {
                        let refused = s.refused.load(Relaxed);
                        s.received.load(Relaxed).saturating_sub(refused)
                    },
                ),
                (
                    "refused",
                    "Items that could not be pushed into the pipeline (the client was told).",
                    |s| s.refused.load(Relaxed),
                ),
            ];
            for (what, help, get) in receiver {
                let name = format!("otelcol_receiver_{what}_{noun}_total");
                let mut f = out.family(&name, help, MetricKind::Counter);
                for p in &pipelines {
                    f.sample(&[("pipeline", p.signal.as_str())], get(&p.stats));
                }
            }
            let name = format!("otelcol_processor_dropped_{noun}_total");
            let mut f = out.family(
                &name,
                "Items a processor dropped (fail-closed or on purpose).",
                MetricKind::Counter,
            );
            for p in &pipelines {
                for s in &p.stats.processors {
                    f.sample(
                        &[("pipeline", p.signal.as_str()), ("processor", &s.id)],
                        s.dropped_fail_closed.load(Relaxed) + s.dropped_by_plugin.load(Relaxed),
                    );
                }
            }
            let exporter: [(&str, &str, ExporterFn); 3] = [
                ("sent", "Items successfully sent to the destination.", |e| {
                    e.sent.load(Relaxed)
                }),
                (
                    "send_failed",
                    "Items the exporter failed to send (given up or rejected by the peer).",
                    |e| e.send_failed.load(Relaxed),
                ),
                (
                    "enqueue_failed",
                    "Items of requests refused because the exporter's queue was full.",
                    |e| e.enqueue_failed.load(Relaxed),
                ),
            ];
            for (what, help, get) in exporter {
                let name = format!("otelcol_exporter_{what}_{noun}_total");
                let mut f = out.family(&name, help, MetricKind::Counter);
                for p in &pipelines {
                    for e in &p.stats.exporters {
                        f.sample(
                            &[("pipeline", p.signal.as_str()), ("exporter", &e.id)],
                            get(e),
                        );
                    }
                }
            }
        }
        let processor: [(&str, &str, ProcessorFn); 2] = [
            (
                "otelcol_processor_incoming_items_total",
                "Items handed to a processor.",
                |s| s.incoming.load(Relaxed),
            ),
            (
                "otelcol_processor_outgoing_items_total",
                "Items a processor passed on.",
                |s| s.outgoing.load(Relaxed),
            ),
        ];
        for (name, help, get) in processor {
            let mut f = out.family(name, help, MetricKind::Counter);
            for p in &self.pipelines {
                for s in &p.stats.processors {
                    f.sample(
                        &[
                            ("pipeline", p.signal.as_str()),
                            ("processor", &s.id),
                            ("otel_signal", p.signal.as_str()),
                        ],
                        get(s),
                    );
                }
            }
        }
        type Gauge = fn(&pipeline::ExporterQueue) -> u64;
        let gauges: [(&str, &str, Gauge); 2] = [
            (
                "otelcol_exporter_queue_size",
                "What an exporter's queue holds, in its sizer's unit (requests, items or bytes).",
                |e| e.room.used(),
            ),
            (
                "otelcol_exporter_queue_capacity",
                "What an exporter's queue holds at most, in its sizer's unit.",
                |e| e.room.capacity,
            ),
        ];
        for (name, help, get) in gauges {
            let mut f = out.family(name, help, MetricKind::Gauge);
            for p in &self.pipelines {
                for e in &p.exporters {
                    f.sample(
                        &[
                            ("pipeline", p.signal.as_str()),
                            ("exporter", &e.id),
                            ("data_type", p.signal.as_str()),
                        ],
                        get(e),
                    );
                }
            }
        }
    }
}
