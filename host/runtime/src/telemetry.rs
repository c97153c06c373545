//! Self-telemetry: one writer of the Prometheus text exposition format ([`Exposition`]) that
//! every part renders its metrics with ([`MetricsSource`]), and the server of `/metrics`,
//! `/healthz` and `/readyz` ([`TelemetryServer`]).

use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::net::{Resp, respond};

/// Something that has metrics to show: the plugins' registry, the pipelines, the proxies.
///
/// Threading contract: `render` is called from the telemetry server's tasks, concurrently with
/// the work it counts; it reads counters and must not block on that work.
pub trait MetricsSource: Send + Sync {
    /// Appends this source's metric families to `out`.
    fn render(&self, out: &mut Exposition);
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, a sum and a count.
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A Prometheus text exposition (format 0.0.4) being written: families with their `# HELP` and
/// `# TYPE` lines, samples with escaped label values.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// One metric family of an [`Exposition`], written sample by sample.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Exposition {
    /// Starts family `name` (a valid metric name) with its help text and type.
    pub fn family<'a>(&'a mut self, name: &'a str, help: &str, kind: MetricKind) -> Family<'a> {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A sample outside any `# TYPE` line (the plugins' own metrics, whose names they choose).
    pub fn untyped(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        sample(&mut self.out, name, "", labels, value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// A sample of the family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) {
        sample(self.out, self.name, "", labels, value);
    }

    /// A sample of the family's `<name><suffix>` series (`_bucket`, `_sum`, `_count`).
    pub fn sample_suffixed(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl Display) {
        sample(self.out, self.name, suffix, labels, value);
    }
}

/// `name{k="v",..} value`, label names sanitized and values escaped.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    value: impl Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}=\"{}\"", sanitize(k), escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A Prometheus metric or label name: `[a-zA-Z0-9_]`, other characters become `_`.
pub fn sanitize(name: &str) -> String {
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

/// Serves `/metrics` (every source, in order), `/healthz` and `/readyz` (200 once `ready`).
#[derive(Clone)]
pub struct TelemetryServer {
    /// What `/metrics` shows.
    pub sources: Vec<Arc<dyn MetricsSource>>,
    /// Set once every listener of the process listens.
    pub ready: Arc<AtomicBool>,
}

impl TelemetryServer {
    /// Every source's metrics.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        for s in &self.sources {
            s.render(&mut out);
        }
        out.finish()
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        match req.uri().path() {
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.render().into_bytes(),
            ),
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => {
                respond(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            "/readyz" => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"starting\n".to_vec(),
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }

    /// Serves on `listener` until `shutdown` turns true, under [`ServerLimits::admin`] and
    /// counted in `stats`.
    ///
    /// [`ServerLimits::admin`]: crate::net::ServerLimits::admin
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stats: Arc<crate::net::ListenerStats>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let me = Arc::new(self);
        crate::net::serve(
            listener,
            crate::net::ServerLimits::admin(),
            stats,
            move |req| {
                let t = me.clone();
                async move { t.handle(req).await }
            },
            shutdown,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_and_type_and_labels_are_escaped() {
        let mut e = Exposition::default();
        let mut f = e.family("weft_x_total", "Xs.", MetricKind::Counter);
        f.sample(&[("plugin", "a\"b"), ("k-ind", "v\nw")], 3);
        f.sample(&[], 4);
        e.untyped("weft_guest_y", &[("plugin", "p")], -1);
        assert_eq!(
            e.finish(),
            "# HELP weft_x_total Xs.\n# TYPE weft_x_total counter\n\
             weft_x_total{plugin=\"a\\\"b\",k_ind=\"v\\nw\"} 3\nweft_x_total 4\n\
             weft_guest_y{plugin=\"p\"} -1\n"
        );
    }
}
