//! Head sampling at the proxy: sets the sampled flag of the W3C `traceparent` of every traced
//! request with the same consistent rule as the span sampler (`guests/sampler`).
//!
//! For a request with a valid `traceparent`:
//!
//! * the randomness `R` is the low 56 bits of its trace id, or the explicit `rv` of an
//!   OpenTelemetry `tracestate` entry (`ot=rv:<14 hex digits>`) when there is one;
//! * the threshold is `T = round((1 - percentage / 100) × 2^56)`;
//! * the request is sampled iff `R >= T`, and the sampled bit (`0x01`) of the `traceparent`
//!   flags is set or cleared to match (`…-01` / `…-00`; other flag bits, such as Level 2's
//!   random-trace-id bit, are kept). The decision overrides the one the caller made.
//! * `x-b3-sampled` is set to `1` / `0` as well when the request carries a B3 multi-header
//!   (`x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` or `x-b3-flags`) or the configuration says
//!   `b3: true`. The B3 single header (`b3: …`) is not rewritten.
//!
//! Because `R` depends only on the trace, every proxy and every collector-side span sampler with
//! the same percentage takes the same decision for a trace, and a trace sampled at `p1` is also
//! sampled at every `p2 >= p1`. The `tracestate` is left as it is (no `ot=th:`): the span
//! sampler records the threshold when it sees the spans.
//!
//! Requests without a `traceparent`, or with a malformed one, are left alone.
//!
//! Errors are kept: the decision is recorded in the stream, and when the response status is
//! 5xx the response header `x-weft-trace-sampled: 1` tells the caller (and the tail of the
//! pipeline) that this trace is wanted. When the head decision had been "not sampled" that is a
//! forced sample, counted in `sampler_forced{reason="5xx"}`.
//!
//! ```json
//! {"percentage": 10.0, "b3": false}
//! ```

// The sampling math is the span sampler's own crate, so the two cannot drift apart.
pub use weft_consistent_sampling::{MAX_THRESHOLD, threshold};

use serde::Deserialize;
use weft_consistent_sampling as consistent;
use weft_guest::{Action, Config, Error, HttpFilter, Plugin, http, metrics};

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Share of traces sampled, `0..=100` (default 100: every traced request is sampled).
    pub percentage: f64,
    /// Always set `x-b3-sampled`, even on requests that carry no B3 header (default false).
    pub b3: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            percentage: 100.0,
            b3: false,
        }
    }
}

/// The B3 multi-headers whose presence makes the filter write `x-b3-sampled`.
pub const B3_HEADERS: [&str; 4] = ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"];

/// The parts of a valid `traceparent` the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The low 64 bits of the trace id (the randomness is in their low 56).
    pub trace_id_lo: u64,
    /// The trace flags byte.
    pub flags: u8,
}

/// Parses a W3C `traceparent` (`version-traceid-parentid-flags`); `None` if it is malformed:
/// not lowercase hex, version `ff`, an all-zero trace or parent id, or a version-00 header with
/// anything after the flags. Headers of later versions may carry more fields after the flags,
/// as W3C allows.
pub fn parse_traceparent(header: &str) -> Option<TraceParent> {
    let h = header.trim_matches([' ', '\t']);
    let b = h.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace_id, parent_id, flags) = (&h[..2], &h[3..35], &h[36..52], &h[53..55]);
    if ![version, trace_id, parent_id, flags]
        .iter()
        .all(|s| consistent::is_lower_hex(s))
    {
        return None;
    }
    if version == "ff" || (version == "00" && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    if trace_id.bytes().all(|c| c == b'0') || parent_id.bytes().all(|c| c == b'0') {
        return None;
    }
    Some(TraceParent {
        trace_id_lo: u64::from_str_radix(&trace_id[16..], 16).ok()?,
        flags: u8::from_str_radix(flags, 16).ok()?,
    })
}

/// `header` (a valid `traceparent`, see [`parse_traceparent`]) with its sampled flag set to
/// `sampled`; the other flag bits and every other field are kept.
pub fn with_sampled_flag(header: &str, parsed: TraceParent, sampled: bool) -> String {
    let h = header.trim_matches([' ', '\t']);
    let flags = if sampled {
        parsed.flags | 0x01
    } else {
        parsed.flags & !0x01
    };
    format!("{}{flags:02x}{}", &h[..53], &h[55..])
}

/// The head decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// The `traceparent` to send upstream (the input with its sampled flag set).
    pub traceparent: String,
}

/// The filter: the configured threshold and the B3 switch.
#[derive(Debug)]
pub struct HttpSampler {
    threshold: u64,
    b3: bool,
}

impl HttpSampler {
    /// Validates the settings.
    pub fn from_settings(settings: &Settings) -> Result<Self, Error> {
        if !(0.0..=100.0).contains(&settings.percentage) {
            return Err(Error::InvalidConfig(format!(
                "http-sampler: `percentage` must be between 0 and 100, got {}",
                settings.percentage
            )));
        }
        Ok(HttpSampler {
            threshold: threshold(settings.percentage),
            b3: settings.b3,
        })
    }

    /// Decides on a request from its `traceparent` and `tracestate` headers; `None` when the
    /// `traceparent` is malformed (the request is then left alone).
    pub fn decide(&self, traceparent: &str, tracestate: Option<&str>) -> Option<Decision> {
        let parsed = parse_traceparent(traceparent)?;
        let r = consistent::span_randomness(parsed.trace_id_lo, tracestate.unwrap_or(""));
        let sampled = consistent::keep(r, self.threshold);
        Some(Decision {
            sampled,
            traceparent: with_sampled_flag(traceparent, parsed, sampled),
        })
    }

    /// Whether `x-b3-sampled` should be written, given which B3 headers the request has.
    pub fn writes_b3(&self, has_b3_header: bool) -> bool {
        self.b3 || has_b3_header
    }
}

/// Whether a `:status` value is a server error (5xx).
pub fn is_server_error(status: Option<&str>) -> bool {
    status
        .and_then(|s| s.trim().parse::<u16>().ok())
        .is_some_and(|s| (500..600).contains(&s))
}

impl Plugin for HttpSampler {
    fn new(config: &Config) -> Result<Self, Error> {
        HttpSampler::from_settings(&config.parse()?)
    }
}

/// Counts one head decision in `sampler_requests{decision}`.
fn count_decision(decision: &str) {
    metrics::counter_add(
        "sampler_requests",
        &[("decision".into(), decision.into())],
        1,
    );
}

impl HttpFilter for HttpSampler {
    /// The head decision of a traced request (`None`: no valid `traceparent`).
    type Stream = Option<bool>;

    fn new_stream(&mut self) -> Option<bool> {
        None
    }

    fn on_request_headers(&mut self, stream: &mut Option<bool>, _: u32, _: bool) -> Action {
        let Some(traceparent) = http::request_header("traceparent") else {
            return Action::Continue;
        };
        let tracestate = http::request_header("tracestate");
        let Some(decision) = self.decide(&traceparent, tracestate.as_deref()) else {
            count_decision("invalid");
            return Action::Continue;
        };
        if decision.traceparent != traceparent {
            http::set_request_header("traceparent", &decision.traceparent);
        }
        let has_b3 = B3_HEADERS.iter().any(|h| http::request_header(h).is_some());
        if self.writes_b3(has_b3) {
            http::set_request_header("x-b3-sampled", if decision.sampled { "1" } else { "0" });
        }
        *stream = Some(decision.sampled);
        count_decision(if decision.sampled {
            "sampled"
        } else {
            "not_sampled"
        });
        Action::Continue
    }

    fn on_response_headers(&mut self, stream: &mut Option<bool>, _: u32, _: bool) -> Action {
        let Some(sampled) = *stream else {
            return Action::Continue;
        };
        if is_server_error(http::response_header(":status").as_deref()) {
            http::set_response_header("x-weft-trace-sampled", "1");
            if !sampled {
                metrics::counter_add("sampler_forced", &[("reason".into(), "5xx".into())], 1);
            }
        }
        Action::Continue
    }
}

weft_guest::export_http_filter!(HttpSampler);

#[cfg(test)]
mod tests {
    use super::*;

    /// The W3C specification's example trace: R = 0xce929d0e0e4736 ≈ 80.7 % of 2^56.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn sampler(json: &str) -> Result<HttpSampler, Error> {
        HttpSampler::new(&Config::from_json(json)?)
    }

    /// A valid `traceparent` whose trace id has randomness `r`, with `flags`.
    fn with_randomness(r: u64, flags: u8) -> String {
        format!(
            "00-0af7651916cd43dd{:016x}-b7ad6b7169203331-{flags:02x}",
            (0xab << 56) | r
        )
    }

    #[test]
    fn the_decision_follows_the_threshold_over_the_trace_ids_low_bits() {
        // R ≈ 0.807 × 2^56: kept from 20 % up (T = 0.8 × 2^56), dropped at 10 %.
        let d = sampler(r#"{"percentage": 20}"#)
            .unwrap()
            .decide(EXAMPLE, None)
            .unwrap();
        assert!(d.sampled);
        assert_eq!(d.traceparent, EXAMPLE);
        let d = sampler(r#"{"percentage": 10}"#)
            .unwrap()
            .decide(EXAMPLE, None)
            .unwrap();
        assert!(!d.sampled);
        assert_eq!(
            d.traceparent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );

        let s = sampler(r#"{"percentage": 50}"#).unwrap();
        let t = threshold(50.0);
        assert!(
            s.decide(&with_randomness(t, 0), None).unwrap().sampled,
            "R == T"
        );
        assert!(!s.decide(&with_randomness(t - 1, 1), None).unwrap().sampled);
    }

    #[test]
    fn the_default_samples_everything_and_zero_samples_nothing() {
        let all = sampler("{}").unwrap();
        let none = sampler(r#"{"percentage": 0}"#).unwrap();
        for r in [0, 1, 1 << 55, MAX_THRESHOLD - 1] {
            let tp = with_randomness(r, 0);
            assert!(all.decide(&tp, None).unwrap().traceparent.ends_with("-01"));
            assert!(none.decide(&tp, None).unwrap().traceparent.ends_with("-00"));
        }
    }

    #[test]
    fn an_explicit_rv_in_the_tracestate_wins_over_the_trace_id() {
        let s = sampler(r#"{"percentage": 10}"#).unwrap();
        let d = s
            .decide(EXAMPLE, Some("vendor=x,ot=rv:ffffffffffffff"))
            .unwrap();
        assert!(d.sampled);
        let d = s.decide(
            &with_randomness(MAX_THRESHOLD - 1, 1),
            Some("ot=rv:00000000000000"),
        );
        assert!(!d.unwrap().sampled);
    }

    #[test]
    fn other_flag_bits_and_later_version_fields_are_kept() {
        let s = sampler(r#"{"percentage": 0}"#).unwrap();
        // Level 2's random-trace-id flag (0x02) survives clearing the sampled bit.
        let d = s.decide(&with_randomness(5, 0x03), None).unwrap();
        assert!(d.traceparent.ends_with("-02"), "{}", d.traceparent);
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        let d = s.decide(future, None).unwrap();
        assert_eq!(
            d.traceparent,
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra"
        );
    }

    #[test]
    fn malformed_traceparents_are_left_alone() {
        let s = sampler("{}").unwrap();
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(s.decide(bad, None), None, "{bad:?}");
        }
        assert_eq!(
            parse_traceparent(EXAMPLE),
            Some(TraceParent {
                trace_id_lo: 0xa3ce_929d_0e0e_4736,
                flags: 1
            })
        );
    }

    #[test]
    fn b3_is_written_only_when_present_or_configured() {
        let plain = sampler("{}").unwrap();
        assert!(!plain.writes_b3(false));
        assert!(plain.writes_b3(true));
        assert!(sampler(r#"{"b3": true}"#).unwrap().writes_b3(false));
    }

    #[test]
    fn only_5xx_statuses_count_as_server_errors() {
        assert!(is_server_error(Some("500")));
        assert!(is_server_error(Some("503")));
        assert!(is_server_error(Some("599")));
        assert!(!is_server_error(Some("499")));
        assert!(!is_server_error(Some("200")));
        assert!(!is_server_error(Some("600")));
        assert!(!is_server_error(Some("abc")));
        assert!(!is_server_error(None));
    }

    #[test]
    fn configuration_is_validated() {
        assert!(sampler(r#"{"percentage": 100}"#).is_ok());
        for bad in [
            r#"{"percentage": 101}"#,
            r#"{"percentage": -1}"#,
            r#"{"percent": 10}"#,
        ] {
            assert!(
                matches!(sampler(bad), Err(Error::InvalidConfig(_))),
                "{bad}"
            );
        }
    }
}
