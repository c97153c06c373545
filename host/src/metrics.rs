//! Per-plugin self-metrics, kept in a registry and rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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
    pub traps: [AtomicU64; 6],
    /// Items (spans or log records) handed to the guest.
    pub items_in: AtomicU64,
    /// Items the guest returned.
    pub items_out: AtomicU64,
    /// Items the guest dropped (by choice, e.g. sampling).
    pub items_dropped: AtomicU64,
    /// Batches passed on unchanged after a failure (fail-open).
    pub failed_open: AtomicU64,
    /// Batches dropped after a failure (fail-closed).
    pub failed_closed: AtomicU64,
    /// Items dropped after a failure (fail-closed).
    pub failed_closed_items: AtomicU64,
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
    pub fn trap_counter(&self, kind: crate::TrapKind) -> &AtomicU64 {
        use crate::TrapKind::*;
        &self.traps[match kind {
            Deadline => 0,
            MemoryLimit => 1,
            StackOverflow => 2,
            Panic => 3,
            Fuel => 4,
            Other => 5,
        }]
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
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let counter =
            |out: &mut String, name: &str, help: &str, get: &dyn Fn(&PluginMetrics) -> u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for p in plugins.iter() {
                    let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", escape(&p.name), get(p));
                }
            };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "weft_plugin_calls_total",
            "Calls into the plugin.",
            &|p| ld(&p.calls),
        );
        counter(
            &mut out,
            "weft_plugin_items_in_total",
            "Items handed to the plugin.",
            &|p| ld(&p.items_in),
        );
        counter(
            &mut out,
            "weft_plugin_items_out_total",
            "Items the plugin returned.",
            &|p| ld(&p.items_out),
        );
        counter(
            &mut out,
            "weft_plugin_items_dropped_total",
            "Items the plugin dropped.",
            &|p| ld(&p.items_dropped),
        );
        counter(
            &mut out,
            "weft_plugin_instantiations_total",
            "Instances created.",
            &|p| ld(&p.instantiations),
        );

        let _ = writeln!(
            out,
            "# HELP weft_plugin_reloads_total Hot reloads by result.\n# TYPE weft_plugin_reloads_total counter"
        );
        for p in plugins.iter() {
            let n = escape(&p.name);
            let _ = writeln!(
                out,
                "weft_plugin_reloads_total{{plugin=\"{n}\",result=\"ok\"}} {}",
                ld(&p.reloads)
            );
            let _ = writeln!(
                out,
                "weft_plugin_reloads_total{{plugin=\"{n}\",result=\"failed\"}} {}",
                ld(&p.reload_failures)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_plugin_errors_total Failed calls by kind.\n# TYPE weft_plugin_errors_total counter"
        );
        for p in plugins.iter() {
            let n = escape(&p.name);
            let _ = writeln!(
                out,
                "weft_plugin_errors_total{{plugin=\"{n}\",kind=\"guest_error\"}} {}",
                ld(&p.guest_errors)
            );
            let _ = writeln!(
                out,
                "weft_plugin_errors_total{{plugin=\"{n}\",kind=\"malformed_output\"}} {}",
                ld(&p.malformed_outputs)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_plugin_traps_total Guest traps by kind.\n# TYPE weft_plugin_traps_total counter"
        );
        for p in plugins.iter() {
            use crate::TrapKind::*;
            for kind in [Deadline, MemoryLimit, StackOverflow, Panic, Fuel, Other] {
                let _ = writeln!(
                    out,
                    "weft_plugin_traps_total{{plugin=\"{}\",kind=\"{}\"}} {}",
                    escape(&p.name),
                    kind.as_str(),
                    ld(p.trap_counter(kind))
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP weft_plugin_fail_policy_total Failed batches by the policy applied.\n# TYPE weft_plugin_fail_policy_total counter"
        );
        for p in plugins.iter() {
            let n = escape(&p.name);
            let _ = writeln!(
                out,
                "weft_plugin_fail_policy_total{{plugin=\"{n}\",policy=\"open\"}} {}",
                ld(&p.failed_open)
            );
            let _ = writeln!(
                out,
                "weft_plugin_fail_policy_total{{plugin=\"{n}\",policy=\"closed\"}} {}",
                ld(&p.failed_closed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_plugin_live_instances Instances alive.\n# TYPE weft_plugin_live_instances gauge"
        );
        for p in plugins.iter() {
            let _ = writeln!(
                out,
                "weft_plugin_live_instances{{plugin=\"{}\"}} {}",
                escape(&p.name),
                p.live_instances.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_plugin_memory_bytes Linear memory of live instances.\n# TYPE weft_plugin_memory_bytes gauge"
        );
        for p in plugins.iter() {
            let _ = writeln!(
                out,
                "weft_plugin_memory_bytes{{plugin=\"{}\"}} {}",
                escape(&p.name),
                p.memory_bytes.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_plugin_call_duration_seconds Duration of calls into the plugin.\n# TYPE weft_plugin_call_duration_seconds histogram"
        );
        for p in plugins.iter() {
            let n = escape(&p.name);
            let mut cumulative = 0;
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += ld(&p.duration_buckets[i]);
                let _ = writeln!(
                    out,
                    "weft_plugin_call_duration_seconds_bucket{{plugin=\"{n}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let calls = ld(&p.calls);
            let _ = writeln!(
                out,
                "weft_plugin_call_duration_seconds_bucket{{plugin=\"{n}\",le=\"+Inf\"}} {calls}"
            );
            let _ = writeln!(
                out,
                "weft_plugin_call_duration_seconds_sum{{plugin=\"{n}\"}} {}",
                ld(&p.duration_sum_ns) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "weft_plugin_call_duration_seconds_count{{plugin=\"{n}\"}} {calls}"
            );
        }
        for p in plugins.iter() {
            let guest = p.guest.lock().unwrap_or_else(|e| e.into_inner());
            for ((name, labels), v) in &guest.counters {
                let _ = writeln!(
                    out,
                    "weft_guest_{}_total{} {v}",
                    sanitize(name),
                    label_set(&p.name, labels)
                );
            }
            for ((name, labels), v) in &guest.gauges {
                let _ = writeln!(
                    out,
                    "weft_guest_{}{} {v}",
                    sanitize(name),
                    label_set(&p.name, labels)
                );
            }
            for ((name, labels), (count, sum)) in &guest.histograms {
                let l = label_set(&p.name, labels);
                let _ = writeln!(
                    out,
                    "weft_guest_{}_count{l} {count}\nweft_guest_{}_sum{l} {sum}",
                    sanitize(name),
                    sanitize(name)
                );
            }
        }
        out
    }
}

/// `{plugin="..",k="v",..}`.
fn label_set(plugin: &str, labels: &[(String, String)]) -> String {
    let mut s = format!("{{plugin=\"{}\"", escape(plugin));
    for (k, v) in labels {
        let _ = write!(s, ",{}=\"{}\"", sanitize(k), escape(v));
    }
    s.push('}');
    s
}

/// A Prometheus metric or label name: `[a-zA-Z0-9_]`, other characters become `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
