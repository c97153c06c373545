//! Consistent probabilistic span sampling by trace id.
//!
//! Every span is kept or dropped by comparing the trace's *randomness* `R` with a *rejection
//! threshold* `T`, as OpenTelemetry's consistent probability sampling specifies
//! (`trace/tracestate-probability-sampling.md`, OTEP 235) on top of W3C Trace Context Level 2:
//!
//! * `R` is the least-significant 56 bits of the trace id (the bits Level 2 requires to be
//!   random), or the explicit randomness `rv` of the span's OpenTelemetry trace state
//!   (`ot=rv:<14 hex digits>`) when the span carries one;
//! * `T = round((1 - p) × 2^56)` for a sampling probability `p`;
//! * a span is kept iff `R >= T`.
//!
//! `R` depends only on the trace, so every span of a trace gets the same decision in every
//! process that uses the same probability, and a span kept at probability `p1` is kept at every
//! `p2 >= p1` (traces sampled at the lowest rate stay complete).
//!
//! A span kept by probability records the threshold it passed in its W3C `tracestate`
//! (`ot=th:<hex>`), so that back ends can compute its adjusted count (`1 / p`). This plugin is a
//! *downstream equalizing sampler*: it only ever raises an existing `th`, never lowers it.
//!
//! The pure functions ([`threshold`], [`randomness`], [`keep`], [`encode_threshold`],
//! [`update_trace_state`], ...) do the math and are shared with other samplers.

use serde::Deserialize;
use weft_guest::view::Traces;
use weft_guest::{
    AttributesExt, Config, Edits, Error, HasAttributes, Plugin, Span, SpanProcessor, StatusCode,
    TraceId,
};

use weft_consistent_sampling as consistent;

pub use consistent::{
    MAX_THRESHOLD, encode_threshold, ot_subkey, parse_randomness, parse_threshold, probability,
    threshold, update_trace_state,
};

/// Span attributes that name the request path, in order of preference, for route overrides:
/// the route template (low cardinality, stable) first, then the concrete path, then the
/// deprecated `http.target` that older instrumentations still emit.
pub const ROUTE_ATTRIBUTES: [&str; 3] = ["http.route", "url.path", "http.target"];

/// The randomness `R` of a trace id: its least-significant 56 bits (W3C Trace Context Level 2).
pub fn randomness(trace_id: &TraceId) -> u64 {
    consistent::randomness(trace_id.lo)
}

/// Whether a span of the trace `trace_id` is kept at `threshold`: `R >= T`.
///
/// Uses the trace id's bits; to honour an explicit `rv` in the trace state, compare
/// [`span_randomness`] with the threshold instead.
pub fn keep(trace_id: &TraceId, threshold: u64) -> bool {
    consistent::keep(randomness(trace_id), threshold)
}

/// The randomness of a span: the explicit `rv` of its OpenTelemetry trace state if valid, else
/// the trace id's 56 low bits. The specification makes `rv` take precedence, for traces whose
/// ids are not random.
pub fn span_randomness(trace_id: &TraceId, trace_state: &str) -> u64 {
    consistent::span_randomness(trace_id.lo, trace_state)
}

/// One route override as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix matched against the span's route attribute (see [`ROUTE_ATTRIBUTES`]).
    /// A plain string prefix: `/pay` also matches `/payments`; write `/pay/` to stop at the
    /// segment.
    pub prefix: String,
    /// Sampling percentage for matching spans, `0..=100`.
    pub percentage: f64,
}

/// The plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Sampling percentage for spans no route matches, `0..=100` (default 10).
    #[serde(default = "default_percentage")]
    pub percentage: f64,
    /// Keep spans whose status is `ERROR` whatever their randomness (default true).
    #[serde(default = "default_true")]
    pub keep_errors: bool,
    /// Per-route percentages; the longest matching prefix wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn default_percentage() -> f64 {
    10.0
}

fn default_true() -> bool {
    true
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            percentage: default_percentage(),
            keep_errors: true,
            routes: Vec::new(),
        }
    }
}

/// Checks that a configured percentage is a number in `0..=100`.
fn check_percentage(what: &str, percentage: f64) -> Result<(), Error> {
    if (0.0..=100.0).contains(&percentage) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "sampler: {what} must be between 0 and 100, got {percentage}"
        )))
    }
}

/// A route override, compiled: prefix and threshold.
#[derive(Debug, Clone)]
struct Route {
    prefix: String,
    threshold: u64,
}

/// What happened to one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Kept because `R >= T` (its trace state may carry a new threshold).
    Kept,
    /// Kept because its status is `ERROR` and `keep_errors` is on (whatever `R`; the trace
    /// state is not changed).
    KeptError,
    /// Dropped: `R < T`.
    Dropped,
}

impl Decision {
    /// Whether the span stays in the batch.
    pub fn is_kept(self) -> bool {
        !matches!(self, Decision::Dropped)
    }
}

/// Counts of the decisions on a batch, for the `sampler_spans` metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Spans kept (by probability or as errors).
    pub kept: u64,
    /// Spans dropped.
    pub dropped: u64,
}

/// The sampler: a default threshold, route overrides, and the error rule.
#[derive(Debug, Clone)]
pub struct Sampler {
    default_threshold: u64,
    keep_errors: bool,
    /// Sorted by decreasing prefix length, so the first match is the longest.
    routes: Vec<Route>,
}

impl Sampler {
    /// Validates a configuration and precomputes its thresholds.
    pub fn from_config(config: &SamplerConfig) -> Result<Self, Error> {
        check_percentage("`percentage`", config.percentage)?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            check_percentage(
                &format!("`percentage` of route `{}`", route.prefix),
                route.percentage,
            )?;
            // A linear scan, not a HashSet: routes are few, and std's hasher seeding would make
            // the component import `wasi:random` for nothing.
            if routes.iter().any(|r: &Route| r.prefix == route.prefix) {
                return Err(Error::InvalidConfig(format!(
                    "sampler: route prefix `{}` is listed twice",
                    route.prefix
                )));
            }
            routes.push(Route {
                prefix: route.prefix.clone(),
                threshold: threshold(route.percentage),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Sampler {
            default_threshold: threshold(config.percentage),
            keep_errors: config.keep_errors,
            routes,
        })
    }

    /// The threshold that applies to `span`: that of the longest route prefix matching its
    /// route attribute, else the default.
    pub fn threshold_for(&self, span: &Span) -> u64 {
        self.threshold_for_route(
            ROUTE_ATTRIBUTES
                .iter()
                .find_map(|key| span.attributes.get_str(key)),
        )
    }

    /// The threshold for a span whose route attribute is `route`.
    pub fn threshold_for_route(&self, route: Option<&str>) -> u64 {
        route
            .and_then(|path| self.routes.iter().find(|r| path.starts_with(&r.prefix)))
            .map_or(self.default_threshold, |r| r.threshold)
    }

    /// Decides on one span and, when it is kept by probability below 100 %, records the
    /// threshold in its trace state.
    pub fn sample_span(&self, span: &mut Span) -> Decision {
        let route = ROUTE_ATTRIBUTES
            .iter()
            .find_map(|key| span.attributes.get_str(key));
        let (decision, trace_state) = self.decide(
            span.status.code == StatusCode::Error,
            route,
            &span.trace_id,
            &span.trace_state,
        );
        if let Some(ts) = trace_state {
            span.trace_state = ts;
        }
        decision
    }

    /// The decision on a span from what it is read from (its status, route attribute, trace id
    /// and trace state), and its new trace state if that changes.
    pub fn decide(
        &self,
        is_error: bool,
        route: Option<&str>,
        trace_id: &TraceId,
        trace_state: &str,
    ) -> (Decision, Option<String>) {
        // With `keep_errors`, error spans are sampled at 100 % by this stage, whatever their
        // randomness: the incoming threshold still describes them, so their trace state is left
        // alone (recording `th` would make back ends count each kept error 1/p times).
        if self.keep_errors && is_error {
            return (Decision::KeptError, None);
        }
        let t = self.threshold_for_route(route);
        let r = span_randomness(trace_id, trace_state);
        if r < t {
            return (Decision::Dropped, None);
        }
        if t > 0 {
            let incoming = ot_subkey(trace_state, "th").and_then(parse_threshold);
            let outgoing = match incoming {
                // An upstream stage was more selective: its threshold still holds.
                Some(t_in) if t_in > t && r >= t_in => return (Decision::Kept, None),
                // `R < th`: the span could not have passed upstream; the specification asks to
                // erase a threshold that is apparently inconsistent.
                Some(t_in) if t_in > t => None,
                Some(t_in) if t_in == t => return (Decision::Kept, None),
                _ => Some(t),
            };
            return (
                Decision::Kept,
                Some(update_trace_state(trace_state, outgoing)),
            );
        }
        (Decision::Kept, None)
    }

    /// Samples the spans of an OTLP traces request on the batch ABI: reads each span's ids,
    /// status, trace state and route attribute, drops or keeps it, and records new trace
    /// states in `edits`. No other field is read.
    pub fn sample_traces(&self, traces: Traces<'_>, edits: &mut Edits) -> Tally {
        let mut tally = Tally::default();
        for (_, span) in traces.spans() {
            let route = ROUTE_ATTRIBUTES
                .iter()
                .find_map(|key| span.attribute(key).and_then(|v| v.as_str()));
            let id = u128::from_be_bytes(span.trace_id());
            let trace_id = TraceId {
                hi: (id >> 64) as u64,
                lo: id as u64,
            };
            let (decision, trace_state) = self.decide(
                span.status_code() == 2,
                route,
                &trace_id,
                span.trace_state(),
            );
            if !decision.is_kept() {
                tally.dropped += 1;
                edits.drop(&span);
                continue;
            }
            tally.kept += 1;
            if let Some(ts) = trace_state {
                edits.set_trace_state(&span, &ts);
            }
        }
        tally
    }

    /// Samples a list of spans: returns the kept ones, in order, and the counts.
    pub fn sample_spans(&self, spans: Vec<Span>) -> (Vec<Span>, Tally) {
        let mut tally = Tally::default();
        let kept = spans
            .into_iter()
            .filter_map(|mut span| {
                if self.sample_span(&mut span).is_kept() {
                    tally.kept += 1;
                    Some(span)
                } else {
                    tally.dropped += 1;
                    None
                }
            })
            .collect();
        (kept, tally)
    }
}

/// The `sampler` plugin.
pub struct SamplerPlugin {
    sampler: Sampler,
}

impl Plugin for SamplerPlugin {
    fn new(config: &Config) -> Result<Self, Error> {
        let config: SamplerConfig = config.parse()?;
        Ok(SamplerPlugin {
            sampler: Sampler::from_config(&config)?,
        })
    }
}

impl SpanProcessor for SamplerPlugin {
    fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
        record_metrics(self.sampler.sample_traces(traces, edits));
        Ok(())
    }
}

/// Adds the batch's decisions to the `sampler_spans` counter. Host imports only exist in the
/// component, so native builds (unit tests) skip this.
fn record_metrics(tally: Tally) {
    #[cfg(target_arch = "wasm32")]
    {
        use weft_guest::metrics::counter_add;
        counter_add(
            "sampler_spans",
            &[("decision".into(), "kept".into())],
            tally.kept,
        );
        counter_add(
            "sampler_spans",
            &[("decision".into(), "dropped".into())],
            tally.dropped,
        );
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = tally;
}

weft_guest::export_span_processor!(SamplerPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_consistent_sampling::RANDOMNESS_MASK;
    use weft_guest::{KeyValue, SpanKind, Status};

    /// A span of trace `trace_id` with string attributes and a status code.
    fn span(trace_id: TraceId, span_id: u64, attrs: &[(&str, &str)], code: StatusCode) -> Span {
        Span {
            trace_id,
            span_id,
            trace_state: String::new(),
            parent_span_id: None,
            flags: 1,
            name: format!("span-{span_id}"),
            kind: SpanKind::Server,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).to_string(),
                    value: (*v).into(),
                })
                .collect(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Status {
                code,
                message: String::new(),
            },
        }
    }

    /// A trace id whose randomness is exactly `r` (high bits set to noise that must be ignored).
    fn with_randomness(r: u64) -> TraceId {
        TraceId {
            hi: 0xdead_beef_dead_beef,
            lo: (0xab << 56) | r,
        }
    }

    fn sampler(json: &str) -> Sampler {
        let config: SamplerConfig = Config::from_json(json)
            .and_then(|c| c.parse())
            .expect("valid config");
        Sampler::from_config(&config).expect("valid config")
    }

    /// SplitMix64: a small deterministic generator, so the statistics test is reproducible.
    struct SplitMix(u64);
    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn threshold_math_matches_the_specification() {
        assert_eq!(threshold(0.0), MAX_THRESHOLD);
        assert_eq!(threshold(100.0), 0);
        assert_eq!(threshold(50.0), 0x0080_0000_0000_0000);
        assert_eq!(threshold(25.0), 0x00c0_0000_0000_0000);
        assert_eq!(threshold(12.5), 0x00e0_0000_0000_0000);
        // round(0.9 × 2^56) = round(64851834634135142.4)
        assert_eq!(threshold(10.0), 64_851_834_634_135_142);
        assert_eq!(threshold(10.0), 0x00e6_6666_6666_6666);
        // Out of range and NaN are clamped rather than trusted.
        assert_eq!(threshold(-5.0), MAX_THRESHOLD);
        assert_eq!(threshold(f64::NAN), MAX_THRESHOLD);
        assert_eq!(threshold(250.0), 0);
        // Thresholds shrink as the percentage grows.
        assert!(threshold(1.0) > threshold(10.0));
        assert!((probability(threshold(33.0)) - 0.33).abs() < 1e-12);
        assert_eq!(probability(0), 1.0);
        assert_eq!(probability(MAX_THRESHOLD), 0.0);
    }

    #[test]
    fn thresholds_encode_as_th_values_without_trailing_zeros() {
        assert_eq!(encode_threshold(threshold(100.0)), "0");
        assert_eq!(encode_threshold(threshold(50.0)), "8");
        assert_eq!(encode_threshold(threshold(25.0)), "c");
        assert_eq!(encode_threshold(threshold(10.0)), "e6666666666666");
        // Leading zeros are significant: th is a fraction of 2^56.
        assert_eq!(encode_threshold(0x0008_0000_0000_0000), "08");
        for t in [
            0,
            1,
            threshold(10.0),
            threshold(25.0),
            0x0008_0000_0000_0000,
        ] {
            assert_eq!(parse_threshold(&encode_threshold(t)), Some(t));
        }
        assert_eq!(parse_threshold("c"), Some(0x00c0_0000_0000_0000));
        assert_eq!(parse_threshold(""), None);
        assert_eq!(parse_threshold("C"), None, "uppercase is not a valid th");
        assert_eq!(parse_threshold("123456789abcdef"), None, "15 digits");
        assert_eq!(
            parse_randomness("0123456789abcd"),
            Some(0x0001_2345_6789_abcd)
        );
        assert_eq!(parse_randomness("0123"), None);
    }

    #[test]
    fn keep_compares_the_low_56_bits_with_the_threshold() {
        let t = threshold(50.0);
        assert!(keep(&with_randomness(t), t), "R == T is kept");
        assert!(!keep(&with_randomness(t - 1), t));
        assert!(keep(&with_randomness(RANDOMNESS_MASK), threshold(0.0001)));
        assert!(!keep(&with_randomness(RANDOMNESS_MASK), threshold(0.0)));
        assert!(keep(&with_randomness(0), threshold(100.0)));
        // The top byte of the low half is not randomness under W3C Level 2.
        let id = TraceId {
            hi: 0,
            lo: u64::MAX << 56,
        };
        assert_eq!(randomness(&id), 0);
        assert!(!keep(&id, t));
    }

    #[test]
    fn every_span_of_a_trace_gets_the_same_decision() {
        let a = sampler(r#"{"percentage": 30}"#);
        // A second instance stands for another process with the same configuration.
        let b = sampler(r#"{"percentage": 30, "keep_errors": false}"#);
        let mut rng = SplitMix(7);
        for _ in 0..200 {
            let trace = TraceId {
                hi: rng.next(),
                lo: rng.next(),
            };
            let decisions: Vec<bool> = (0..5)
                .flat_map(|i| {
                    let mut s1 = span(trace, rng.next(), &[("http.route", "/x")], StatusCode::Ok);
                    let mut s2 = span(trace, i, &[], StatusCode::Unset);
                    [
                        a.sample_span(&mut s1).is_kept(),
                        b.sample_span(&mut s2).is_kept(),
                    ]
                })
                .collect();
            assert!(decisions.iter().all(|d| *d == decisions[0]));
            assert_eq!(decisions[0], keep(&trace, threshold(30.0)));
        }
    }

    #[test]
    fn sampled_fraction_is_within_three_sigma() {
        const N: u64 = 100_000;
        let mut rng = SplitMix(42);
        let ids: Vec<TraceId> = (0..N)
            .map(|_| TraceId {
                hi: rng.next(),
                lo: rng.next(),
            })
            .collect();
        for percentage in [1.0, 10.0, 25.0, 50.0, 90.0] {
            let t = threshold(percentage);
            let kept = ids.iter().filter(|id| keep(id, t)).count() as f64;
            let p = percentage / 100.0;
            let mean = N as f64 * p;
            let sigma = (N as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (kept - mean).abs() <= 3.0 * sigma,
                "{percentage} %: kept {kept}, expected {mean} ± {}",
                3.0 * sigma
            );
        }
    }

    #[test]
    fn a_lower_rate_keeps_a_subset_of_a_higher_rate() {
        let mut rng = SplitMix(3);
        for _ in 0..10_000 {
            let id = TraceId {
                hi: rng.next(),
                lo: rng.next(),
            };
            if keep(&id, threshold(5.0)) {
                assert!(keep(&id, threshold(20.0)));
            }
        }
    }

    #[test]
    fn error_spans_are_kept_and_their_trace_state_is_untouched() {
        let dropped_trace = with_randomness(0);
        let s = sampler(r#"{"percentage": 10}"#);
        let mut err = span(dropped_trace, 1, &[], StatusCode::Error);
        err.trace_state = "ot=th:8".into();
        assert_eq!(s.sample_span(&mut err), Decision::KeptError);
        assert_eq!(err.trace_state, "ot=th:8");
        let mut ok = span(dropped_trace, 2, &[], StatusCode::Ok);
        assert_eq!(s.sample_span(&mut ok), Decision::Dropped);

        let strict = sampler(r#"{"percentage": 10, "keep_errors": false}"#);
        let mut err = span(dropped_trace, 1, &[], StatusCode::Error);
        assert_eq!(strict.sample_span(&mut err), Decision::Dropped);
    }

    #[test]
    fn routes_override_the_percentage_and_the_longest_prefix_wins() {
        let s = sampler(
            r#"{"percentage": 0, "routes": [
                {"prefix": "/pay", "percentage": 100},
                {"prefix": "/pay/refund", "percentage": 0},
                {"prefix": "/health", "percentage": 0}
            ]}"#,
        );
        let id = with_randomness(RANDOMNESS_MASK / 2);
        let kept = |attrs: &[(&str, &str)]| {
            let mut sp = span(id, 1, attrs, StatusCode::Unset);
            s.sample_span(&mut sp).is_kept()
        };
        assert!(kept(&[("http.route", "/pay")]));
        assert!(kept(&[("http.route", "/pay/{id}")]));
        assert!(!kept(&[("http.route", "/pay/refund/{id}")]));
        assert!(!kept(&[("http.route", "/users")]));
        assert!(!kept(&[]), "no route attribute: the default applies");
        // Fallbacks when there is no http.route.
        assert!(kept(&[("url.path", "/pay/123")]));
        assert!(kept(&[("http.target", "/pay?x=1")]));
        // http.route is preferred over url.path.
        assert!(!kept(&[
            ("url.path", "/pay/1"),
            ("http.route", "/users/{id}")
        ]));
        assert!(kept(&[
            ("url.path", "/users/1"),
            ("http.route", "/pay/{id}")
        ]));
        // A route kept at 100 % records no threshold.
        let mut sp = span(id, 1, &[("http.route", "/pay")], StatusCode::Unset);
        sp.trace_state = "vendor=x".into();
        s.sample_span(&mut sp);
        assert_eq!(sp.trace_state, "vendor=x");
    }

    #[test]
    fn kept_spans_record_the_threshold_in_the_trace_state() {
        let s = sampler(r#"{"percentage": 25}"#);
        let id = with_randomness(RANDOMNESS_MASK);
        let run = |state: &str| {
            let mut sp = span(id, 1, &[], StatusCode::Unset);
            sp.trace_state = state.to_string();
            assert_eq!(s.sample_span(&mut sp), Decision::Kept);
            sp.trace_state
        };
        assert_eq!(run(""), "ot=th:c");
        // A lower incoming threshold (higher probability upstream) is raised; other sub-keys and
        // other vendors are kept, and the updated entry moves to the front.
        assert_eq!(
            run("congo=t61rcWkgMzE, ot=th:8;rv:ffffffffffffff;x:1,rojo=00f067aa0ba902b7"),
            "ot=th:c;rv:ffffffffffffff;x:1,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        assert_eq!(run("ot=rv:ffffffffffffff"), "ot=th:c;rv:ffffffffffffff");
        // A higher incoming threshold is never lowered, and an equal one is left as it is.
        assert_eq!(run("rojo=1,ot=th:f"), "rojo=1,ot=th:f");
        assert_eq!(run("rojo=1,ot=th:c"), "rojo=1,ot=th:c");
        // A malformed th is replaced.
        assert_eq!(run("ot=th:XYZ"), "ot=th:c");
    }

    #[test]
    fn an_inconsistent_incoming_threshold_is_erased() {
        // R passes our 25 % (T = c…) but not the incoming th:f (6.25 %): it cannot have been
        // sampled upstream with that threshold.
        let s = sampler(r#"{"percentage": 25}"#);
        let mut sp = span(
            with_randomness(0x00d0_0000_0000_0000),
            1,
            &[],
            StatusCode::Unset,
        );
        sp.trace_state = "ot=th:f;rv:d0000000000000,a=b".into();
        assert_eq!(s.sample_span(&mut sp), Decision::Kept);
        assert_eq!(sp.trace_state, "ot=rv:d0000000000000,a=b");
    }

    #[test]
    fn explicit_randomness_takes_precedence_over_the_trace_id() {
        let s = sampler(r#"{"percentage": 50}"#);
        let mut sp = span(with_randomness(0), 1, &[], StatusCode::Unset);
        sp.trace_state = "ot=rv:ffffffffffffff".into();
        assert_eq!(s.sample_span(&mut sp), Decision::Kept);
        assert_eq!(sp.trace_state, "ot=th:8;rv:ffffffffffffff");
        let mut sp = span(with_randomness(RANDOMNESS_MASK), 1, &[], StatusCode::Unset);
        sp.trace_state = "ot=rv:00000000000000".into();
        assert_eq!(s.sample_span(&mut sp), Decision::Dropped);
    }

    #[test]
    fn update_trace_state_handles_edge_cases() {
        assert_eq!(update_trace_state("", None), "");
        assert_eq!(update_trace_state("ot=th:8", None), "");
        assert_eq!(update_trace_state("a=1,,ot=th:8, ,b=2", None), "a=1,b=2");
        assert_eq!(update_trace_state("a=1", Some(0)), "ot=th:0,a=1");
        assert_eq!(ot_subkey("a=1,ot=x:1;th:c", "th"), Some("c"));
        assert_eq!(ot_subkey("a=1", "th"), None);
    }

    #[test]
    fn sample_spans_filters_and_counts() {
        let s = sampler(r#"{"percentage": 50}"#);
        let keep_id = with_randomness(RANDOMNESS_MASK);
        let drop_id = with_randomness(1);
        let spans = vec![
            span(keep_id, 1, &[], StatusCode::Unset),
            span(drop_id, 2, &[], StatusCode::Unset),
            span(drop_id, 3, &[], StatusCode::Error),
            span(keep_id, 4, &[], StatusCode::Ok),
        ];
        let (kept, tally) = s.sample_spans(spans);
        assert_eq!(
            kept.iter().map(|s| s.span_id).collect::<Vec<_>>(),
            [1, 3, 4]
        );
        assert_eq!(
            tally,
            Tally {
                kept: 3,
                dropped: 1
            }
        );
    }

    #[test]
    fn configuration_defaults_and_validation() {
        let config: SamplerConfig = Config::from_json("{}")
            .and_then(|c| c.parse())
            .expect("empty config is valid");
        assert_eq!(config.percentage, 10.0);
        assert!(config.keep_errors);
        assert!(config.routes.is_empty());

        let load = |json: &str| Config::from_json(json).and_then(|c| SamplerPlugin::new(&c));
        assert!(load(r#"{"percentage": 0}"#).is_ok());
        assert!(load(r#"{"percentage": 100}"#).is_ok());
        for bad in [
            r#"{"percentage": 101}"#,
            r#"{"percentage": -1}"#,
            r#"{"percentage": "10"}"#,
            r#"{"percent": 10}"#,
            r#"{"routes": [{"prefix": "/a", "percentage": 200}]}"#,
            r#"{"routes": [{"prefix": "/a"}]}"#,
            r#"{"routes": [{"prefix": "/a", "percentage": 1}, {"prefix": "/a", "percentage": 2}]}"#,
        ] {
            match load(bad) {
                Err(Error::InvalidConfig(_)) => {}
                Err(other) => panic!("{bad}: expected InvalidConfig, got {other:?}"),
                Ok(_) => panic!("{bad}: accepted"),
            }
        }
    }
}
