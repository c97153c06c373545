//! The HTTP filter proxy: a listener, one upstream and a chain of `http-filter` components, with
//! Envoy's filter semantics (docs/PROXY.md says where weft differs and why).
//!
//! - [`Filter`]: a loaded http-filter component ([`load_filter`]). It runs on the runtime's
//!   instance pool, limits, trap classification and metrics, as an OTLP [`Plugin`] does; only
//!   its store extension ([`FilterState`]) and the `http` interface are the proxy's.
//! - [`config`]: `proxies:` in the `weft run` configuration.
//! - [`start`]: serves one configured proxy.
//!
//! Threading contract: each HTTP stream borrows one instance of every filter of its chain for
//! its whole life (the `http-stream` resource lives in that instance) and gives it back after
//! `on-done`; a trapped instance is dropped. Filter callbacks run on the stream's tokio worker
//! inside `block_in_place`, like the OTLP processors.
//!
//! [`Plugin`]: weft_runtime::Plugin

mod bindings;
pub mod config;
mod exchange;
mod filter;
mod host;
mod server;
mod stream;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use weft_runtime::telemetry::{Exposition, MetricKind, MetricsSource};

pub use filter::{Filter, FilterShared, FilterState, load_filter, load_filter_file};
pub use server::{FilterSlot, RunningProxy, start};

/// The stream a filter instance is lent to: the proxy and the instance's host functions share it.
pub(crate) type StreamHandle = std::sync::Arc<std::sync::Mutex<exchange::Exchange>>;

/// Why a stream was answered by the proxy instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    /// A filter answered (`respond` or `send-local-response`).
    Filter,
    /// A fail-closed filter trapped (or could not get an instance): 503.
    FailClosed,
    /// The upstream could not be reached, reset, or timed out: 503 / 504.
    Upstream,
    /// A body was larger than `max_body_mib`: 413 / 500.
    TooLarge,
    /// The request could not be forwarded (malformed after the filters): 400 / 500.
    Invalid,
}

impl LocalReason {
    const ALL: [LocalReason; 5] = [
        LocalReason::Filter,
        LocalReason::FailClosed,
        LocalReason::Upstream,
        LocalReason::TooLarge,
        LocalReason::Invalid,
    ];

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalReason::Filter => "filter",
            LocalReason::FailClosed => "fail_closed",
            LocalReason::Upstream => "upstream",
            LocalReason::TooLarge => "too_large",
            LocalReason::Invalid => "invalid",
        }
    }
}

/// Counters of one proxy (the filters' own calls, traps and fail-policy outcomes are in their
/// plugin metrics, `plugin="<proxy>/<filter>"`).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// The proxy's id (the `proxy` label).
    pub name: String,
    /// Responses sent, by status class: 1xx .. 5xx.
    pub responses: [AtomicU64; 5],
    /// Local responses by reason (indexed like [`LocalReason::ALL`]).
    pub local: [AtomicU64; 5],
    /// Filter failures (trap, deadline, no instance) that the fail policy handled.
    pub filter_failures: AtomicU64,
    /// Streams in progress.
    pub active_streams: AtomicI64,
}

impl ProxyStats {
    /// Empty counters for proxy `name`.
    pub fn new(name: &str) -> Self {
        ProxyStats {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Responses sent with a status in `class` (1 ..= 5).
    pub fn responses(&self, class: u16) -> u64 {
        match class {
            1..=5 => self.responses[usize::from(class - 1)].load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Local responses for `reason`.
    pub fn local_responses(&self, reason: LocalReason) -> u64 {
        let i = LocalReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.local[i].load(Ordering::Relaxed)
    }

    pub(crate) fn count_response(&self, status: u16) {
        if let 100..=599 = status {
            self.responses[usize::from(status / 100 - 1)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_local(&self, reason: LocalReason) {
        if let Some(i) = LocalReason::ALL.iter().position(|r| *r == reason) {
            self.local[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `weft_proxy_*` metrics of a set of proxies, for the telemetry server.
#[derive(Debug, Default)]
pub struct ProxyMetrics(pub Vec<std::sync::Arc<ProxyStats>>);

impl MetricsSource for ProxyMetrics {
    fn render(&self, out: &mut Exposition) {
        if self.0.is_empty() {
            return;
        }
        let mut f = out.family(
            "weft_proxy_responses_total",
            "Responses sent by the proxy, by status class.",
            MetricKind::Counter,
        );
        for p in &self.0 {
            for class in 1..=5u16 {
                let class_label = format!("{class}xx");
                f.sample(
                    &[("proxy", &p.name), ("class", &class_label)],
                    p.responses(class),
                );
            }
        }
        let mut f = out.family(
            "weft_proxy_local_responses_total",
            "Responses made by the proxy or a filter instead of the upstream.",
            MetricKind::Counter,
        );
        for p in &self.0 {
            for reason in LocalReason::ALL {
                f.sample(
                    &[("proxy", &p.name), ("reason", reason.as_str())],
                    p.local_responses(reason),
                );
            }
        }
        let mut f = out.family(
            "weft_proxy_filter_failures_total",
            "Filter failures handled by a fail policy (details in weft_plugin_traps_total).",
            MetricKind::Counter,
        );
        for p in &self.0 {
            f.sample(
                &[("proxy", &p.name)],
                p.filter_failures.load(Ordering::Relaxed),
            );
        }
        let mut f = out.family(
            "weft_proxy_active_streams",
            "Streams in progress.",
            MetricKind::Gauge,
        );
        for p in &self.0 {
            f.sample(
                &[("proxy", &p.name)],
                p.active_streams.load(Ordering::Relaxed),
            );
        }
    }
}

/// Runs `f` where blocking is allowed: inside `block_in_place` on a multi-threaded runtime's
/// worker, directly elsewhere (a blocking thread, no runtime, a current-thread runtime).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
