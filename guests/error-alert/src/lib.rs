//! Error-rate alerting: raises an alert when too many responses in a sliding window are errors.
//!
//! Every response is recorded as `(second, is_error)`, where `is_error` is `status >=
//! min_status` (500 by default). The status is the response's `:status`, or the
//! `response.code` attribute at the end of an exchange whose response headers the filter did not
//! see. Records go into one bucket per second; the window is the last `window_seconds` buckets
//! (the current second included). By default the buckets are this plugin instance's own (in
//! Envoy: one worker thread's view). With `shared: true` they live in the plugin's key-value
//! store, in `window_seconds` ring slots (`ea:slot:<second mod window>`, value: second, requests
//! and errors as three u64 LE) updated with compare-and-swap, so every worker counts into the
//! same window.
//!
//! After each response (shared: at most once a second per instance) and on every tick, the
//! window is evaluated. When the error rate is above `threshold` over at least `min_requests`
//! requests, the alert *fires*, once: it fires again only after the rate went back to or below
//! the threshold (a window with no traffic counts as rate 0). With `shared: true` the firing
//! state is the store's `ea:firing` entry, flipped with compare-and-swap: of all workers, only
//! the one whose flip succeeds alerts. When the alert fires:
//!
//! * a log line at error level: `ALERT error-rate rate=0.1200 window=60s errors=12
//!   requests=100 threshold=0.05 min_status=500`;
//! * the counter `error_alert_fired` and the gauge `error_rate_permille` (which every tick also
//!   sets);
//! * with a `webhook`, a `POST` of the alert as JSON to `upstream` (an Envoy cluster; in weft a
//!   `host:port`) with a 1000 ms timeout; the answer is counted in `error_alert_webhook{status}`
//!   (`0`: the call failed or timed out; `dispatch_failed`: it could not be sent).
//!
//! Recovery is logged at info level (`RESOLVED error-rate …`). The tick (1 s) is started on the
//! first stream, not in `init`, as some hosts do not run ticks during initialisation.
//!
//! ```json
//! {"window_seconds": 60, "threshold": 0.05, "min_requests": 20, "min_status": 500,
//!  "shared": false,
//!  "webhook": {"upstream": "alertmanager", "path": "/alert", "authority": "alerts"}}
//! ```

use serde::Deserialize;
use weft_guest::{Action, Config, Error, HttpFilter, Plugin, clock, http, metrics};

/// How many times a compare-and-swap update of the shared store is tried.
pub const MAX_ATTEMPTS: u32 = 8;
/// The tick period, ms.
const TICK_MS: u32 = 1000;
/// The webhook call's timeout, ms.
const WEBHOOK_TIMEOUT_MS: u32 = 1000;
/// The shared firing flag's key.
const FIRING_KEY: &str = "ea:firing";

/// Where to send alerts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The Envoy cluster (in weft: `host:port`) to call.
    pub upstream: String,
    /// The request path (default `/alert`).
    #[serde(default = "default_path")]
    pub path: String,
    /// The request's `:authority` (default `alerts`).
    #[serde(default = "default_authority")]
    pub authority: String,
}

fn default_path() -> String {
    "/alert".into()
}

fn default_authority() -> String {
    "alerts".into()
}

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Length of the sliding window in seconds, `1..=3600` (default 60).
    pub window_seconds: u64,
    /// The error rate (`0..=1`) above which the alert fires (default 0.05).
    pub threshold: f64,
    /// The fewest requests in the window for the rate to count (default 20).
    pub min_requests: u64,
    /// Statuses from this one up are errors (default 500).
    pub min_status: u16,
    /// Count across all workers through the key-value store (default false: per instance).
    pub shared: bool,
    /// Where to POST alerts (default none).
    pub webhook: Option<Webhook>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_seconds: 60,
            threshold: 0.05,
            min_requests: 20,
            min_status: 500,
            shared: false,
            webhook: None,
        }
    }
}

/// Requests and errors in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Responses recorded.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
}

impl Counts {
    /// The error rate, `0.0` without requests.
    pub fn rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The rate in thousandths, rounded, for the `error_rate_permille` gauge.
    pub fn permille(&self) -> i64 {
        (self.rate() * 1000.0).round() as i64
    }
}

/// One second's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// The second (since the epoch) the counts are for.
    pub second: u64,
    /// Requests and errors in that second.
    pub counts: Counts,
}

impl Bucket {
    /// The 24-byte shared-store encoding: second, requests, errors, u64 LE each.
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.second.to_le_bytes());
        out[8..16].copy_from_slice(&self.counts.requests.to_le_bytes());
        out[16..].copy_from_slice(&self.counts.errors.to_le_bytes());
        out
    }

    /// Decodes [`encode`](Self::encode)'s output; anything else is an empty bucket.
    pub fn decode(b: &[u8]) -> Bucket {
        let word = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|w| w.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        if b.len() != 24 {
            return Bucket::default();
        }
        Bucket {
            second: word(0),
            counts: Counts {
                requests: word(1),
                errors: word(2),
            },
        }
    }

    /// Adds one response at `second`: starts the bucket over if it holds an older second.
    /// Returns `false` (and changes nothing) if the bucket already holds a newer second: the
    /// sample is older than the window.
    pub fn add(&mut self, second: u64, is_error: bool) -> bool {
        if self.second > second {
            return false;
        }
        if self.second < second {
            *self = Bucket {
                second,
                counts: Counts::default(),
            };
        }
        self.counts.requests += 1;
        self.counts.errors += u64::from(is_error);
        true
    }

    /// Whether the bucket's second is in the window of `seconds` ending at `now`.
    fn in_window(&self, now: u64, seconds: u64) -> bool {
        self.second <= now && now - self.second < seconds
    }
}

/// A sliding window of one-second buckets, in a ring.
#[derive(Debug, Clone)]
pub struct Window {
    buckets: Vec<Bucket>,
}

impl Window {
    /// An empty window of `seconds` (at least 1) buckets.
    pub fn new(seconds: u64) -> Self {
        Window {
            buckets: vec![Bucket::default(); seconds.max(1) as usize],
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// Records one response at `second`.
    pub fn record(&mut self, second: u64, is_error: bool) {
        let slot = (second % self.len()) as usize;
        if let Some(bucket) = self.buckets.get_mut(slot) {
            bucket.add(second, is_error);
        }
    }

    /// The counts of the window ending at `now` (included).
    pub fn counts(&self, now: u64) -> Counts {
        let n = self.len();
        self.buckets
            .iter()
            .filter(|b| b.in_window(now, n))
            .fold(Counts::default(), |acc, b| Counts {
                requests: acc.requests + b.counts.requests,
                errors: acc.errors + b.counts.errors,
            })
    }
}

/// What an evaluation found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// Nothing changed.
    Quiet,
    /// The alert fires with these counts.
    Fire(Counts),
    /// The rate went back to or below the threshold.
    Recover(Counts),
}

/// The alert state machine: fire when not firing and the rate is above the threshold over
/// enough requests; recover when firing and the rate is at or below it.
pub fn transition(firing: bool, counts: Counts, threshold: f64, min_requests: u64) -> Event {
    let high = counts.requests >= min_requests && counts.rate() > threshold;
    match (firing, high) {
        (false, true) => Event::Fire(counts),
        (true, false) if counts.rate() <= threshold => Event::Recover(counts),
        _ => Event::Quiet,
    }
}

pub use weft_guest::store::{CasStore as Store, HostStore, StoreError};

/// The shared ring slot of a second.
fn slot_key(second: u64, seconds: u64) -> String {
    format!("ea:slot:{}", second % seconds.max(1))
}

/// Records one response in the shared window, retrying lost compare-and-swaps.
pub fn record_shared(
    store: &mut impl Store,
    seconds: u64,
    second: u64,
    is_error: bool,
) -> Result<(), StoreError> {
    let key = slot_key(second, seconds);
    for _ in 0..MAX_ATTEMPTS {
        let (mut bucket, cas) = match store.get(&key)? {
            Some((value, cas)) => (Bucket::decode(&value), cas),
            None => (Bucket::default(), 0),
        };
        if !bucket.add(second, is_error) {
            return Ok(()); // older than the window
        }
        match store.set(&key, &bucket.encode(), cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Other(format!(
        "{MAX_ATTEMPTS} compare-and-swaps lost on {key}"
    )))
}

/// The counts of the shared window ending at `now`.
pub fn shared_counts(store: &mut impl Store, seconds: u64, now: u64) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    for slot in 0..seconds.max(1) {
        if let Some((value, _)) = store.get(&format!("ea:slot:{slot}"))? {
            let b = Bucket::decode(&value);
            if b.in_window(now, seconds) {
                counts.requests += b.counts.requests;
                counts.errors += b.counts.errors;
            }
        }
    }
    Ok(counts)
}

/// Evaluates the shared window and moves the shared firing flag. Returns the event only if
/// this caller's compare-and-swap of the flag won (so one worker alerts, not all of them).
pub fn evaluate_shared(
    store: &mut impl Store,
    settings: &Settings,
    now: u64,
) -> Result<(Event, Counts), StoreError> {
    let counts = shared_counts(store, settings.window_seconds, now)?;
    let (firing, cas) = match store.get(FIRING_KEY)? {
        Some((value, cas)) => (value.first() == Some(&1), cas),
        None => (false, 0),
    };
    let event = transition(firing, counts, settings.threshold, settings.min_requests);
    let flag = match event {
        Event::Quiet => return Ok((Event::Quiet, counts)),
        Event::Fire(_) => 1u8,
        Event::Recover(_) => 0u8,
    };
    match store.set(FIRING_KEY, &[flag], cas) {
        Ok(()) => Ok((event, counts)),
        // Another worker moved the flag first and acts on it.
        Err(StoreError::CasMismatch) => Ok((Event::Quiet, counts)),
        Err(e) => Err(e),
    }
}

/// The per-instance detector: the local window and firing state (unused with `shared`).
#[derive(Debug)]
pub struct Detector {
    settings: Settings,
    window: Window,
    firing: bool,
}

impl Detector {
    /// Validates the settings.
    pub fn from_settings(settings: Settings) -> Result<Self, Error> {
        let invalid = |m: &str| Err(Error::InvalidConfig(format!("error-alert: {m}")));
        if !(1..=3600).contains(&settings.window_seconds) {
            return invalid("`window_seconds` must be within 1..=3600");
        }
        if !(0.0..=1.0).contains(&settings.threshold) {
            return invalid("`threshold` is a rate and must be within 0..=1");
        }
        if settings.min_requests == 0 {
            return invalid("`min_requests` must be at least 1");
        }
        if !(100..=599).contains(&settings.min_status) {
            return invalid("`min_status` must be an HTTP status, 100..=599");
        }
        if let Some(w) = &settings.webhook
            && (w.upstream.is_empty() || !w.path.starts_with('/') || w.authority.is_empty())
        {
            return invalid(
                "`webhook` needs an `upstream`, a `path` starting with `/` and an `authority`",
            );
        }
        Ok(Detector {
            window: Window::new(settings.window_seconds),
            settings,
            firing: false,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether a status is an error.
    pub fn is_error(&self, status: u16) -> bool {
        status >= self.settings.min_status
    }

    /// Records one response in the local window and evaluates it.
    pub fn observe(&mut self, second: u64, status: u16) -> Event {
        self.window.record(second, self.is_error(status));
        self.evaluate(second).0
    }

    /// Evaluates the local window at `now` and moves the firing state.
    pub fn evaluate(&mut self, now: u64) -> (Event, Counts) {
        let counts = self.window.counts(now);
        let s = &self.settings;
        let event = transition(self.firing, counts, s.threshold, s.min_requests);
        match event {
            Event::Fire(_) => self.firing = true,
            Event::Recover(_) => self.firing = false,
            Event::Quiet => {}
        }
        (event, counts)
    }

    /// The log line of a fired alert.
    pub fn alert_line(&self, c: Counts) -> String {
        format!(
            "ALERT error-rate rate={:.4} window={}s errors={} requests={} threshold={} min_status={}",
            c.rate(),
            self.settings.window_seconds,
            c.errors,
            c.requests,
            self.settings.threshold,
            self.settings.min_status
        )
    }

    /// The webhook body of a fired alert.
    pub fn alert_json(&self, c: Counts, time_ms: u64) -> String {
        serde_json::json!({
            "alert": "error-rate",
            "rate": c.rate(),
            "threshold": self.settings.threshold,
            "window_seconds": self.settings.window_seconds,
            "requests": c.requests,
            "errors": c.errors,
            "min_status": self.settings.min_status,
            "time_unix_ms": time_ms,
        })
        .to_string()
    }

    /// The webhook request headers.
    pub fn webhook_headers(w: &Webhook) -> Vec<(String, String)> {
        vec![
            (":method".into(), "POST".into()),
            (":path".into(), w.path.clone()),
            (":authority".into(), w.authority.clone()),
            ("content-type".into(), "application/json".into()),
        ]
    }
}

/// The plugin: the detector plus the host-facing state.
#[derive(Debug)]
pub struct ErrorAlert {
    detector: Detector,
    tick_started: bool,
    /// With `shared`, the last second this instance evaluated the shared window after a
    /// response (ticks evaluate anyway).
    last_shared_eval: Option<u64>,
    /// Tokens of webhook calls in flight.
    pending: Vec<u32>,
}

impl Plugin for ErrorAlert {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(ErrorAlert {
            detector: Detector::from_settings(config.parse()?)?,
            tick_started: false,
            last_shared_eval: None,
            pending: Vec::new(),
        })
    }
}

/// Current time as (seconds, ms) since the epoch.
fn now() -> (u64, u64) {
    let ns = clock::now();
    (ns / 1_000_000_000, ns / 1_000_000)
}

impl ErrorAlert {
    /// Records a response status and evaluates.
    fn record(&mut self, status: u16) {
        let (second, _) = now();
        if !self.detector.settings.shared {
            let event = self.detector.observe(second, status);
            if let Event::Fire(counts) | Event::Recover(counts) = event {
                self.act(event, counts);
            }
            return;
        }
        let s = &self.detector.settings;
        let is_error = self.detector.is_error(status);
        if let Err(e) = record_shared(&mut HostStore, s.window_seconds, second, is_error) {
            metrics::counter_add("error_alert_store_errors", &[], 1);
            weft_guest::log::warn(&format!("error-alert: shared window not updated: {e:?}"));
        }
        if self.last_shared_eval != Some(second) {
            self.last_shared_eval = Some(second);
            self.evaluate(second);
        }
    }

    /// Evaluates the window (local or shared) at `second`; returns the counts.
    fn evaluate(&mut self, second: u64) -> Option<Counts> {
        let (event, counts) = if self.detector.settings.shared {
            match evaluate_shared(&mut HostStore, &self.detector.settings, second) {
                Ok(r) => r,
                Err(e) => {
                    metrics::counter_add("error_alert_store_errors", &[], 1);
                    weft_guest::log::warn(&format!("error-alert: shared window unreadable: {e:?}"));
                    return None;
                }
            }
        } else {
            self.detector.evaluate(second)
        };
        self.act(event, counts);
        Some(counts)
    }

    /// Logs, counts and calls the webhook for an event.
    fn act(&mut self, event: Event, counts: Counts) {
        match event {
            Event::Quiet => {}
            Event::Recover(c) => {
                let line = self.detector.alert_line(c);
                let line = line.replacen("ALERT", "RESOLVED", 1);
                weft_guest::log::info(&line);
            }
            Event::Fire(c) => {
                weft_guest::log::error(&self.detector.alert_line(c));
                metrics::counter_add("error_alert_fired", &[], 1);
                metrics::gauge_set("error_rate_permille", &[], counts.permille());
                if let Some(w) = &self.detector.settings.webhook {
                    let body = self.detector.alert_json(c, now().1);
                    let headers = Detector::webhook_headers(w);
                    match http::dispatch_http_call(
                        &w.upstream,
                        &headers,
                        body.as_bytes(),
                        WEBHOOK_TIMEOUT_MS,
                    ) {
                        Ok(token) => self.pending.push(token),
                        Err(e) => {
                            count_webhook("dispatch_failed");
                            weft_guest::log::warn(&format!("error-alert: webhook not sent: {e}"));
                        }
                    }
                }
            }
        }
    }
}

fn count_webhook(status: &str) {
    metrics::counter_add(
        "error_alert_webhook",
        &[("status".into(), status.into())],
        1,
    );
}

/// Whether the filter saw this stream's response status.
pub type Stream = bool;

impl HttpFilter for ErrorAlert {
    type Stream = Stream;

    fn new_stream(&mut self) -> Stream {
        if !self.tick_started {
            self.tick_started = true;
            http::set_tick_period(TICK_MS);
        }
        false
    }

    fn on_response_headers(&mut self, seen: &mut Stream, _: u32, _: bool) -> Action {
        let status = http::response_header(":status").and_then(|s| s.trim().parse::<u16>().ok());
        if let Some(status) = status {
            *seen = true;
            self.record(status);
        }
        Action::Continue
    }

    fn on_done(&mut self, seen: &mut Stream) {
        if *seen {
            return;
        }
        let code = http::property_i64("response.code").and_then(|c| u16::try_from(c).ok());
        if let Some(status) = code.filter(|c| *c > 0) {
            self.record(status);
        }
    }

    fn on_tick(&mut self) {
        let (second, _) = now();
        if let Some(counts) = self.evaluate(second) {
            metrics::gauge_set("error_rate_permille", &[], counts.permille());
        }
    }

    fn on_http_call_response(&mut self, token: u32, status: u16, _body: Vec<u8>) {
        if let Some(i) = self.pending.iter().position(|t| *t == token) {
            self.pending.swap_remove(i);
            count_webhook(&status.to_string());
        }
    }
}

weft_guest::export_http_filter!(ErrorAlert);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn detector(json: &str) -> Result<Detector, Error> {
        Detector::from_settings(Config::from_json(json)?.parse()?)
    }

    /// An in-memory store with the host's compare-and-swap rules.
    #[derive(Default)]
    struct MemStore {
        entries: BTreeMap<String, (Vec<u8>, u32)>,
        writes: u32,
    }

    impl Store for MemStore {
        fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Ok(self.entries.get(key).cloned())
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if self.entries.get(key).map_or(0, |(_, v)| *v) != cas {
                return Err(StoreError::CasMismatch);
            }
            self.writes += 1;
            self.entries
                .insert(key.into(), (value.to_vec(), self.writes));
            Ok(())
        }
    }

    const T: u64 = 1_700_000_000;

    #[test]
    fn the_window_slides_and_forgets_old_seconds() {
        let mut w = Window::new(10);
        w.record(T, true);
        w.record(T, false);
        w.record(T + 5, false);
        assert_eq!(
            w.counts(T + 5),
            Counts {
                requests: 3,
                errors: 1
            }
        );
        assert_eq!(
            w.counts(T + 9),
            Counts {
                requests: 3,
                errors: 1
            }
        );
        // T drops out at T + 10; the slot of T is reused by T + 10.
        assert_eq!(
            w.counts(T + 10),
            Counts {
                requests: 1,
                errors: 0
            }
        );
        w.record(T + 10, true);
        assert_eq!(
            w.counts(T + 10),
            Counts {
                requests: 2,
                errors: 1
            }
        );
        assert_eq!(w.counts(T + 100), Counts::default());
    }

    #[test]
    fn the_alert_fires_once_and_again_only_after_recovery() {
        let mut d = detector(r#"{"window_seconds": 10, "threshold": 0.5, "min_requests": 4}"#)
            .expect("valid");
        // Three errors: rate 1.0 but fewer than min_requests.
        for _ in 0..3 {
            assert_eq!(d.observe(T, 503), Event::Quiet);
        }
        assert_eq!(
            d.observe(T, 500),
            Event::Fire(Counts {
                requests: 4,
                errors: 4
            })
        );
        // Still high: no second alert.
        assert_eq!(d.observe(T + 1, 502), Event::Quiet);
        // Successes bring the rate to 5/10 = 0.5 (not above): recovered.
        for _ in 0..4 {
            assert_eq!(d.observe(T + 2, 200), Event::Quiet);
        }
        assert_eq!(
            d.observe(T + 2, 404),
            Event::Recover(Counts {
                requests: 10,
                errors: 5
            })
        );
        // High again: fires again.
        for _ in 0..5 {
            d.observe(T + 3, 500);
        }
        assert!(
            d.evaluate(T + 3).0 == Event::Quiet,
            "it fired on the first of these five"
        );
        assert!(d.firing);
        // No traffic at all: the window empties, the rate is 0, the alert recovers on a tick.
        assert_eq!(
            d.evaluate(T + 100),
            (Event::Recover(Counts::default()), Counts::default())
        );
    }

    #[test]
    fn min_status_decides_what_an_error_is() {
        let d = detector(r#"{"min_status": 429}"#).expect("valid");
        assert!(d.is_error(429));
        assert!(d.is_error(500));
        assert!(!d.is_error(404));
        assert!(!detector("{}").expect("valid").is_error(499));
    }

    #[test]
    fn transition_needs_enough_requests_and_a_rate_strictly_above() {
        let c = |requests, errors| Counts { requests, errors };
        assert_eq!(transition(false, c(19, 19), 0.05, 20), Event::Quiet);
        assert_eq!(
            transition(false, c(20, 1), 0.05, 20),
            Event::Quiet,
            "0.05 is not above"
        );
        assert_eq!(transition(false, c(20, 2), 0.05, 20), Event::Fire(c(20, 2)));
        assert_eq!(transition(true, c(20, 2), 0.05, 20), Event::Quiet);
        // Firing with too few requests to judge, but still a high rate: stays firing.
        assert_eq!(transition(true, c(2, 2), 0.05, 20), Event::Quiet);
        assert_eq!(transition(true, c(2, 0), 0.05, 20), Event::Recover(c(2, 0)));
        assert_eq!(c(1000, 123).permille(), 123);
    }

    #[test]
    fn shared_windows_add_up_every_workers_responses_and_one_worker_alerts() {
        let settings: Settings =
            Config::from_json(r#"{"window_seconds": 5, "min_requests": 10, "shared": true}"#)
                .and_then(|c| c.parse())
                .expect("valid");
        let mut store = MemStore::default();
        // Two workers, five responses each, one error each: 2/10 = 0.2 > 0.05.
        for i in 0..10 {
            record_shared(&mut store, 5, T + (i % 2), i % 5 == 0).expect("recorded");
        }
        assert_eq!(
            shared_counts(&mut store, 5, T + 1).expect("read"),
            Counts {
                requests: 10,
                errors: 2
            }
        );
        let (first, _) = evaluate_shared(&mut store, &settings, T + 1).expect("ok");
        assert_eq!(
            first,
            Event::Fire(Counts {
                requests: 10,
                errors: 2
            })
        );
        // The other worker evaluates the same window: the flag is already up, it stays quiet.
        let (second, _) = evaluate_shared(&mut store, &settings, T + 1).expect("ok");
        assert_eq!(second, Event::Quiet);
        // Five seconds on, the window is empty: exactly one worker sees the recovery.
        let (r1, _) = evaluate_shared(&mut store, &settings, T + 6).expect("ok");
        let (r2, _) = evaluate_shared(&mut store, &settings, T + 6).expect("ok");
        assert_eq!((r1, r2), (Event::Recover(Counts::default()), Event::Quiet));
        // Slots are a ring: never more keys than window seconds, plus the flag.
        assert_eq!(store.entries.len(), 2 + 1);
    }

    #[test]
    fn a_shared_slot_starts_over_for_a_new_second_and_ignores_older_ones() {
        let mut store = MemStore::default();
        record_shared(&mut store, 5, T, true).expect("ok");
        record_shared(&mut store, 5, T + 5, false).expect("ok"); // same slot, newer second
        record_shared(&mut store, 5, T, true).expect("ok"); // late sample of an old second
        let slot = Bucket::decode(&store.entries["ea:slot:0"].0);
        assert_eq!(
            slot,
            Bucket {
                second: T + 5,
                counts: Counts {
                    requests: 1,
                    errors: 0
                }
            }
        );
        assert_eq!(Bucket::decode(&slot.encode()), slot);
        assert_eq!(Bucket::decode(b"short"), Bucket::default());
    }

    #[test]
    fn alert_line_and_webhook_body() {
        let d = detector(r#"{"webhook": {"upstream": "alertmanager"}, "threshold": 0.1}"#)
            .expect("valid");
        let c = Counts {
            requests: 100,
            errors: 12,
        };
        assert_eq!(
            d.alert_line(c),
            "ALERT error-rate rate=0.1200 window=60s errors=12 requests=100 threshold=0.1 min_status=500"
        );
        let body: serde_json::Value = serde_json::from_str(&d.alert_json(c, 42)).expect("JSON");
        assert_eq!(body["alert"], "error-rate");
        assert_eq!(body["errors"], 12);
        assert_eq!(body["requests"], 100);
        assert_eq!(body["time_unix_ms"], 42);
        let w = d.settings().webhook.clone().expect("webhook");
        assert_eq!(
            Detector::webhook_headers(&w),
            [
                (":method".to_string(), "POST".to_string()),
                (":path".into(), "/alert".into()),
                (":authority".into(), "alerts".into()),
                ("content-type".into(), "application/json".into()),
            ]
        );
    }

    #[test]
    fn configuration_defaults_and_validation() {
        let d = detector("{}").expect("valid");
        let s = d.settings();
        assert_eq!(
            (
                s.window_seconds,
                s.threshold,
                s.min_requests,
                s.min_status,
                s.shared
            ),
            (60, 0.05, 20, 500, false)
        );
        assert!(s.webhook.is_none());
        for bad in [
            r#"{"window_seconds": 0}"#,
            r#"{"threshold": 1.5}"#,
            r#"{"min_requests": 0}"#,
            r#"{"min_status": 42}"#,
            r#"{"webhook": {"path": "/x"}}"#,
            r#"{"webhook": {"upstream": "a", "path": "x"}}"#,
            r#"{"webhook": {"upstream": "a", "method": "GET"}}"#,
            r#"{"treshold": 0.1}"#,
        ] {
            assert!(
                matches!(detector(bad), Err(Error::InvalidConfig(_))),
                "{bad}"
            );
        }
    }
}
