//! Rate limits on the log lines a plugin can make the host write: its failures (traps, errors,
//! malformed output) and its stdout/stderr. A plugin that traps on every batch must not turn
//! into a flood of log lines (a probe saw 880 000 lines for 40 000 traps).
//!
//! Each [`LogLimiter`] is an interval counter: the first `burst` lines of each `interval` are
//! written in full, the rest are counted, and one summary line per interval says how many were
//! suppressed. The summary is written by the next line after the interval ends, or, on a tokio
//! runtime, by a task woken at the end of the interval (so a burst that stops is still
//! reported). One limiter per plugin name and kind of line, kept in the plugin's
//! [`PluginMetrics`](crate::PluginMetrics), so a reloaded plugin keeps its budget.
//!
//! No crate for this: `governor` is a token bucket that answers "allowed or not" but keeps no
//! count of what it refused nor a notion of the interval to report it in, and the state needed
//! here is one mutex-guarded counter that is only touched when a line is about to be written
//! (never on the success path of a call).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a limiter limits, for its summary line and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// Failed calls: traps, guest errors, malformed output, instantiation failures.
    Failure,
    /// Lines the guest wrote to stdout or stderr (a panic message, `println!`).
    Stdio,
}

impl LogSource {
    /// The `source` label of `weft_plugin_log_lines_suppressed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Failure => "failure",
            LogSource::Stdio => "stdio",
        }
    }
}

/// Failure lines written in full per plugin per [`DEFAULT_INTERVAL`]; the OpenTelemetry
/// Collector's log sampling starts with 10 per tick as well.
pub const FAILURE_BURST: u32 = 10;
/// Guest stdout/stderr lines written per plugin per [`DEFAULT_INTERVAL`] (a panic message is
/// about 3 lines).
pub const STDIO_BURST: u32 = 100;
/// The interval of every limiter (the Collector's sampling tick is 10 s too).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// One interval's count.
#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
    /// A task will report this window's suppressed lines at its end.
    flush_scheduled: bool,
}

impl Window {
    fn new(start: Instant) -> Self {
        Window {
            start,
            logged: 0,
            suppressed: 0,
            flush_scheduled: false,
        }
    }
}

/// The interval counter of one plugin's lines of one [`LogSource`].
///
/// Threading contract: shared by every instance of the plugin; [`Self::admit`] takes a short
/// mutex and may be called from any thread, with or without a tokio runtime.
#[derive(Debug)]
pub struct LogLimiter {
    source: LogSource,
    burst: u32,
    interval: Duration,
    window: Mutex<Window>,
    suppressed_total: AtomicU64,
}

impl LogLimiter {
    /// A limiter writing `burst` lines per `interval`.
    pub fn new(source: LogSource, burst: u32, interval: Duration) -> Self {
        LogLimiter {
            source,
            burst,
            interval,
            window: Mutex::new(Window::new(Instant::now())),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// The default limiter for `source`: [`FAILURE_BURST`] or [`STDIO_BURST`] lines per
    /// [`DEFAULT_INTERVAL`].
    pub fn default_for(source: LogSource) -> Self {
        let burst = match source {
            LogSource::Failure => FAILURE_BURST,
            LogSource::Stdio => STDIO_BURST,
        };
        Self::new(source, burst, DEFAULT_INTERVAL)
    }

    /// Lines suppressed since the start (the metric).
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total.load(Ordering::Relaxed)
    }

    /// Whether plugin `plugin` may write one more line of this kind now. First writes the
    /// summary of an ended interval that suppressed lines. A `false` is counted, and the first
    /// one of an interval schedules that interval's summary when a tokio runtime is available.
    pub fn admit(self: &Arc<Self>, plugin: &str) -> bool {
        let now = Instant::now();
        let (summary, admitted, schedule_at) = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let mut summary = None;
            if now.duration_since(w.start) >= self.interval {
                if w.suppressed > 0 {
                    summary = Some(w.suppressed);
                }
                *w = Window::new(now);
            }
            if w.logged < self.burst {
                w.logged += 1;
                (summary, true, None)
            } else {
                w.suppressed += 1;
                self.suppressed_total.fetch_add(1, Ordering::Relaxed);
                let at = (!w.flush_scheduled).then(|| w.start + self.interval);
                w.flush_scheduled = true;
                (summary, false, at)
            }
        };
        if let Some(n) = summary {
            self.report(plugin, n);
        }
        if let Some(at) = schedule_at
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (me, plugin) = (self.clone(), plugin.to_string());
            rt.spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                me.flush(&plugin);
            });
        }
        admitted
    }

    /// Writes the summary of an ended interval now, if it suppressed lines (the scheduled task;
    /// also callable at shutdown).
    pub fn flush(&self, plugin: &str) {
        let n = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if w.suppressed == 0 || now.duration_since(w.start) < self.interval {
                return;
            }
            let n = w.suppressed;
            *w = Window::new(now);
            n
        };
        self.report(plugin, n);
    }

    /// The one summary line of an interval.
    fn report(&self, plugin: &str, suppressed: u64) {
        let (what, counted) = match self.source {
            LogSource::Failure => (
                "failure log lines",
                "every failure is counted in weft_plugin_traps_total and weft_plugin_errors_total",
            ),
            LogSource::Stdio => ("stdout/stderr lines", "the guest kept running"),
        };
        tracing::warn!(
            plugin,
            suppressed,
            source = self.source.as_str(),
            "suppressed {suppressed} {what} of this plugin in the last {:?} (at most {} are \
             logged per {:?}; {counted})",
            self.interval,
            self.burst,
            self.interval,
        );
    }
}

/// The limiters of one plugin: its failures and its stdout/stderr.
#[derive(Debug, Clone)]
pub struct PluginLogLimits {
    /// Failed calls (traps, errors, malformed output).
    pub failures: Arc<LogLimiter>,
    /// The guest's stdout and stderr.
    pub stdio: Arc<LogLimiter>,
}

impl Default for PluginLogLimits {
    fn default() -> Self {
        PluginLogLimits {
            failures: Arc::new(LogLimiter::default_for(LogSource::Failure)),
            stdio: Arc::new(LogLimiter::default_for(LogSource::Stdio)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_burst_is_admitted_then_lines_are_counted_and_reported_once() {
        let l = Arc::new(LogLimiter::new(
            LogSource::Failure,
            3,
            Duration::from_millis(50),
        ));
        let admitted = (0..10).filter(|_| l.admit("p")).count();
        assert_eq!(admitted, 3);
        assert_eq!(l.suppressed_total(), 7);
        std::thread::sleep(Duration::from_millis(60));
        // A new interval: the summary is due, and the budget is back.
        assert!(l.admit("p"));
        assert_eq!(l.window.lock().expect("lock").suppressed, 0);
        assert_eq!((0..5).filter(|_| l.admit("p")).count(), 2);
        assert_eq!(l.suppressed_total(), 10);
    }

    #[test]
    fn flush_reports_only_an_ended_interval() {
        let l = Arc::new(LogLimiter::new(
            LogSource::Stdio,
            1,
            Duration::from_millis(30),
        ));
        assert!(l.admit("p"));
        assert!(!l.admit("p"));
        l.flush("p");
        assert_eq!(
            l.window.lock().expect("lock").suppressed,
            1,
            "not ended yet"
        );
        std::thread::sleep(Duration::from_millis(40));
        l.flush("p");
        assert_eq!(l.window.lock().expect("lock").suppressed, 0, "reported");
    }
}
