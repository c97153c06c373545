//! Per-plugin self-metrics, kept in a registry and rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::TrapKind;
use crate::log_limit::PluginLogLimits;
use crate::telemetry::{Exposition, MetricKind, MetricsSource, sanitize};

/// Upper bounds (seconds) of the call-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A metric a guest defined through the `metrics` interface: name and sorted labels.
pub type GuestMetricKey = (String, Vec<(String, String)>);

/// Values of guest-defined metrics.
#[derive(Debug, Default)]
pub struct GuestMetrics {
    /// Counters.
    pub counters: BTreeMap<GuestMetricKey, u64>,
    /// Gauges.
    pub gauges: BTreeMap<GuestMetricKey, i64>,
    /// Histograms: count and sum of observations.
    pub histograms: BTreeMap<GuestMetricKey, (u64, u64)>,
}

/// Counters of one plugin. Lock-free on the hot path except guest-defined metrics.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// The plugin's name (the `plugin` label).
    pub name: String,
    /// Calls into the guest's processing exports.
    pub calls: AtomicU64,
    /// Calls where the guest returned an error.
    pub guest_errors: AtomicU64,
    /// Calls where the guest returned malformed output.
    pub malformed_outputs: AtomicU64,
    /// Traps by kind: deadline, memory_limit, stack_overflow, panic, fuel, other.
    pub traps: [AtomicU64; TrapKind::ALL.len()],
    /// Items (spans or log records) handed to the guest.
    pub items_in: AtomicU64,
    /// Items the guest returned.
    pub items_out: AtomicU64,
    /// Items the guest dropped (by choice, e.g. sampling). Items its failures dropped under the
    /// fail-closed policy are [`Self::failed_closed_items`].
    pub items_dropped: AtomicU64,
    /// Batches passed on unchanged after a failure (fail-open).
    pub failed_open: AtomicU64,
    /// Batches dropped after a failure (fail-closed).
    pub failed_closed: AtomicU64,
    /// Items dropped after a failure (fail-closed).
    pub failed_closed_items: AtomicU64,
    /// Items passed on unprocessed after a failure (fail-open).
    pub failed_open_items: AtomicU64,
    /// The rate limits of the log lines this plugin makes the host write (kept across reloads,
    /// like the counters).
    pub logs: PluginLogLimits,
    /// Instances created (initial, after traps, and for concurrency).
    pub instantiations: AtomicU64,
    /// New versions swapped in by hot reload.
    pub reloads: AtomicU64,
    /// New versions that failed to load (the old one kept serving).
    pub reload_failures: AtomicU64,
    /// Instances currently alive (pooled or in a call).
    pub live_instances: AtomicI64,
    /// Sum of the linear-memory sizes of live instances, in bytes.
    pub memory_bytes: AtomicI64,
    /// Call-duration histogram: per-bucket counts (cumulative when rendered), sum in ns.
    pub duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    /// Sum of call durations in ns.
    pub duration_sum_ns: AtomicU64,
    /// Metrics the guest defined.
    pub guest: Mutex<GuestMetrics>,
}

impl PluginMetrics {
    /// Empty counters for plugin `name`.
    pub fn new(name: &str) -> Self {
        PluginMetrics {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Records one call's duration.
    pub fn observe_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The trap counter for `kind`.
    pub fn trap_counter(&self, kind: TrapKind) -> &AtomicU64 {
        let i = TrapKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        &self.traps[i]
    }

    /// Total traps of all kinds.
    pub fn total_traps(&self) -> u64 {
        self.traps.iter().map(|t| t.load(Ordering::Relaxed)).sum()
    }
}

/// All plugins' metrics. Cloning shares the registry.
#[derive(Debug, Clone, Default)]
pub struct MetricsRegistry {
    plugins: Arc<RwLock<Vec<Arc<PluginMetrics>>>>,
}

impl MetricsRegistry {
    /// The metrics of plugin `name`, created on first use; a reloaded plugin keeps its counters.
    pub fn plugin(&self, name: &str) -> Arc<PluginMetrics> {
        if let Some(m) = self
            .plugins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|m| m.name == name)
        {
            return m.clone();
        }
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = plugins.iter().find(|m| m.name == name) {
            return m.clone();
        }
        let m = Arc::new(PluginMetrics::new(name));
        plugins.push(m.clone());
        m
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut out = Exposition::default();
        self.render(&mut out);
        out.finish()
    }
}

/// Reads one counter of a plugin's metrics.
type CounterFn = fn(&PluginMetrics) -> u64;

/// A counter family with a second label: name, help, the label, and its values with their
/// counters.
type LabelledFamily = (
    &'static str,
    &'static str,
    &'static str,
    [(&'static str, CounterFn); 2],
);

impl MetricsSource for MetricsRegistry {
    fn render(&self, out: &mut Exposition) {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters: [(&str, &str, CounterFn); 5] = [
            ("weft_plugin_calls_total", "Calls into the plugin.", |p| {
                p.calls.load(Ordering::Relaxed)
            }),
            (
                "weft_plugin_items_in_total",
                "Items handed to the plugin.",
                |p| p.items_in.load(Ordering::Relaxed),
            ),
            (
                "weft_plugin_items_out_total",
                "Items the plugin returned.",
                |p| p.items_out.load(Ordering::Relaxed),
            ),
            (
                "weft_plugin_items_dropped_total",
                "Items the plugin dropped by choice (e.g. sampling); items its failures dropped \
                 are weft_plugin_fail_policy_items_total{policy=\"closed\"}.",
                |p| p.items_dropped.load(Ordering::Relaxed),
            ),
            (
                "weft_plugin_instantiations_total",
                "Instances created.",
                |p| p.instantiations.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in counters {
            let mut f = out.family(name, help, MetricKind::Counter);
            for p in plugins.iter() {
                f.sample(&[("plugin", &p.name)], get(p));
            }
        }
        // Families with a second label: (family, help, label, [(value, counter)]).
        let labelled: [LabelledFamily; 5] = [
            (
                "weft_plugin_reloads_total",
                "Hot reloads by result.",
                "result",
                [
                    ("ok", |p| p.reloads.load(Ordering::Relaxed)),
                    ("failed", |p| p.reload_failures.load(Ordering::Relaxed)),
                ],
            ),
            (
                "weft_plugin_errors_total",
                "Failed calls by kind.",
                "kind",
                [
                    ("guest_error", |p| p.guest_errors.load(Ordering::Relaxed)),
                    ("malformed_output", |p| {
                        p.malformed_outputs.load(Ordering::Relaxed)
                    }),
                ],
            ),
            (
                "weft_plugin_fail_policy_total",
                "Failed batches by the policy applied.",
                "policy",
                [
                    ("open", |p| p.failed_open.load(Ordering::Relaxed)),
                    ("closed", |p| p.failed_closed.load(Ordering::Relaxed)),
                ],
            ),
            (
                "weft_plugin_fail_policy_items_total",
                "Items of failed batches by the policy applied: passed on unprocessed (open) or \
                 dropped (closed).",
                "policy",
                [
                    ("open", |p| p.failed_open_items.load(Ordering::Relaxed)),
                    ("closed", |p| p.failed_closed_items.load(Ordering::Relaxed)),
                ],
            ),
            (
                "weft_plugin_log_lines_suppressed_total",
                "Log lines about the plugin not written because of the per-plugin rate limit, \
                 by source.",
                "source",
                [
                    ("failure", |p| p.logs.failures.suppressed_total()),
                    ("stdio", |p| p.logs.stdio.suppressed_total()),
                ],
            ),
        ];
        for (name, help, label, values) in labelled {
            let mut f = out.family(name, help, MetricKind::Counter);
            for p in plugins.iter() {
                for (value, get) in values {
                    f.sample(&[("plugin", &p.name), (label, value)], get(p));
                }
            }
        }
        let mut traps = out.family(
            "weft_plugin_traps_total",
            "Guest traps by kind.",
            MetricKind::Counter,
        );
        for p in plugins.iter() {
            for kind in TrapKind::ALL {
                traps.sample(
                    &[("plugin", &p.name), ("kind", kind.as_str())],
                    ld(p.trap_counter(kind)),
                );
            }
        }
        let mut live = out.family(
            "weft_plugin_live_instances",
            "Instances alive.",
            MetricKind::Gauge,
        );
        for p in plugins.iter() {
            live.sample(
                &[("plugin", &p.name)],
                p.live_instances.load(Ordering::Relaxed),
            );
        }
        let mut memory = out.family(
            "weft_plugin_memory_bytes",
            "Linear memory of live instances.",
            MetricKind::Gauge,
        );
        for p in plugins.iter() {
            memory.sample(
                &[("plugin", &p.name)],
                p.memory_bytes.load(Ordering::Relaxed),
            );
        }
        let mut duration = out.family(
            "weft_plugin_call_duration_seconds",
            "Duration of calls into the plugin.",
            MetricKind::Histogram,
        );
        for p in plugins.iter() {
            let mut cumulative = 0;
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += ld(&p.duration_buckets[i]);
                duration.sample_suffixed(
                    "_bucket",
                    &[("plugin", &p.name), ("le", &bound.to_string())],
                    cumulative,
                );
            }
            let calls = ld(&p.calls);
            duration.sample_suffixed("_bucket", &[("plugin", &p.name), ("le", "+Inf")], calls);
            duration.sample_suffixed(
                "_sum",
                &[("plugin", &p.name)],
                ld(&p.duration_sum_ns) as f64 / 1e9,
            );
            duration.sample_suffixed("_count", &[("plugin", &p.name)], calls);
        }
        // The plugins' own metrics (the `metrics` interface), prefixed `weft_guest_`.
        for p in plugins.iter() {
            let guest = p.guest.lock().unwrap_or_else(|e| e.into_inner());
            let labels = |extra: &[(String, String)]| -> Vec<(String, String)> {
                std::iter::once(("plugin".to_string(), p.name.clone()))
                    .chain(extra.iter().cloned())
                    .collect()
            };
            let emit = |out: &mut Exposition,
                        name: String,
                        l: &[(String, String)],
                        v: &dyn std::fmt::Display| {
                let l: Vec<(&str, &str)> =
                    l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                out.untyped(&name, &l, v);
            };
            for ((name, l), v) in &guest.counters {
                emit(
                    out,
                    format!("weft_guest_{}_total", sanitize(name)),
                    &labels(l),
                    v,
                );
            }
            for ((name, l), v) in &guest.gauges {
                emit(out, format!("weft_guest_{}", sanitize(name)), &labels(l), v);
            }
            for ((name, l), (count, sum)) in &guest.histograms {
                let name = sanitize(name);
                emit(out, format!("weft_guest_{name}_count"), &labels(l), count);
                emit(out, format!("weft_guest_{name}_sum"), &labels(l), sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_plugin_labels_and_guest_metrics() {
        let reg = MetricsRegistry::default();
        let m = reg.plugin("pii-mask");
        m.calls.fetch_add(3, Ordering::Relaxed);
        m.observe_duration(Duration::from_micros(30));
        m.guest
            .lock()
            .expect("lock")
            .counters
            .insert(("masked".into(), vec![("kind".into(), "card".into())]), 7);
        assert!(
            Arc::ptr_eq(&m, &reg.plugin("pii-mask")),
            "one entry per name"
        );
        let text = reg.render_prometheus();
        assert!(
            text.contains("weft_plugin_calls_total{plugin=\"pii-mask\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "weft_plugin_call_duration_seconds_bucket{plugin=\"pii-mask\",le=\"0.00005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("weft_guest_masked_total{plugin=\"pii-mask\",kind=\"card\"} 7"),
            "{text}"
        );
    }
}
