//! Consistent probability sampling math (OTEP 235): thresholds, randomness, and the `ot` entry
//! of the W3C `tracestate`. Pure functions on the low 64 bits of trace ids, with no SDK types.
//!
//! One source for both samplers: the span sampler (`guests/sampler`) and the HTTP sampler
//! (`guests/http-sampler`) depend on this crate, so that a trace sampled at the edge keeps all
//! its spans downstream at the same percentage.

/// `2^56`: the number of distinct randomness values, and the threshold that rejects everything.
pub const MAX_THRESHOLD: u64 = 1 << 56;

/// Mask of the 56 randomness bits of the low half of a trace id.
pub const RANDOMNESS_MASK: u64 = MAX_THRESHOLD - 1;

/// Number of hex digits of a 56-bit value (`th` and `rv` are encoded with at most this many).
const HEX_DIGITS: usize = 14;

/// The rejection threshold `T = round((1 - p) × 2^56)` for a sampling percentage (`p × 100`).
///
/// `100` gives `0` (keep everything) and `0` gives [`MAX_THRESHOLD`] (keep nothing). Values
/// outside `0..=100` are clamped; NaN counts as `0`.
pub fn threshold(percentage: f64) -> u64 {
    if percentage.is_nan() || percentage <= 0.0 {
        return MAX_THRESHOLD;
    }
    if percentage >= 100.0 {
        return 0;
    }
    MAX_THRESHOLD - scaled_probability(percentage)
}

/// `round(percentage / 100 × 2^56)` computed exactly for `0 < percentage < 100`, from the
/// binary value of `percentage` (`mantissa × 2^exponent`) in u128 arithmetic, so that every
/// exact implementation agrees on `T` to the last bit.
fn scaled_probability(percentage: f64) -> u64 {
    let bits = percentage.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074) // subnormal
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    let shift = exponent + 56;
    let (numerator, denominator): (u128, u128) = if shift >= 0 {
        // percentage < 2^7 so exponent <= -46 and shift <= 10: no overflow.
        ((mantissa as u128) << shift, 100)
    } else if shift > -120 {
        (mantissa as u128, 100u128 << -shift)
    } else {
        return 0;
    };
    // Round half up: floor((2n + d) / 2d).
    ((2 * numerator + denominator) / (2 * denominator)) as u64
}

/// The randomness `R` of a trace id given its low 64 bits: the least-significant 56 bits
/// (W3C Trace Context Level 2).
pub fn randomness(trace_id_lo: u64) -> u64 {
    trace_id_lo & RANDOMNESS_MASK
}

/// Whether a trace with randomness `r` is kept at `threshold`: `R >= T`. (The sampler's `keep`
/// computes `r` from the trace id first; this takes it already resolved, see
/// [`span_randomness`].)
pub fn keep(r: u64, threshold: u64) -> bool {
    r >= threshold
}

/// The randomness of a trace: the explicit `rv` of its OpenTelemetry trace state if valid, else
/// the trace id's 56 low bits. The specification makes `rv` take precedence.
pub fn span_randomness(trace_id_lo: u64, trace_state: &str) -> u64 {
    ot_subkey(trace_state, "rv")
        .and_then(parse_randomness)
        .unwrap_or_else(|| randomness(trace_id_lo))
}

/// Parses an `rv` value (exactly 14 lowercase hex digits); `None` if malformed.
pub fn parse_randomness(value: &str) -> Option<u64> {
    if value.len() != HEX_DIGITS || !is_lower_hex(value) {
        return None;
    }
    u64::from_str_radix(value, 16).ok()
}

/// Whether `s` is made of lowercase hex digits only.
pub fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The list members of a W3C `tracestate`, trimmed, empty members skipped.
fn members(trace_state: &str) -> impl Iterator<Item = &str> {
    trace_state
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
}

/// The value of the `ot` list member of a `tracestate`, if any.
fn ot_value(trace_state: &str) -> Option<&str> {
    members(trace_state).find_map(|m| m.strip_prefix("ot="))
}

/// The value of sub-key `key` of the OpenTelemetry (`ot=`) entry, e.g. `rv`.
pub fn ot_subkey<'a>(trace_state: &'a str, key: &str) -> Option<&'a str> {
    ot_value(trace_state)?.split(';').find_map(|kv| {
        let (k, v) = kv.split_once(':')?;
        (k == key).then_some(v)
    })
}

/// The sampling probability (`0.0..=1.0`) a threshold stands for: `(2^56 - T) / 2^56`.
pub fn probability(threshold: u64) -> f64 {
    (MAX_THRESHOLD.saturating_sub(threshold)) as f64 / MAX_THRESHOLD as f64
}

/// Encodes a threshold as a `th` value: 14 hex digits with trailing zeros removed (`0` for 0).
///
/// Leading zeros are kept: `th` is read as a fraction (padded on the right), so `0x08…` must
/// stay `08`. [`MAX_THRESHOLD`] (probability 0) has no `th` encoding: a sampler never records
/// it, as nothing passes it; it is clamped to the largest encodable threshold.
pub fn encode_threshold(threshold: u64) -> String {
    if threshold == 0 {
        return "0".to_string();
    }
    let digits = format!("{:014x}", threshold.min(RANDOMNESS_MASK));
    digits.trim_end_matches('0').to_string()
}

/// Parses a `th` value (1 to 14 lowercase hex digits, right-padded with zeros); `None` if
/// malformed.
pub fn parse_threshold(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > HEX_DIGITS || !is_lower_hex(value) {
        return None;
    }
    let parsed = u64::from_str_radix(value, 16).ok()?;
    Some(parsed << (4 * (HEX_DIGITS - value.len())))
}

/// Returns `trace_state` with the OpenTelemetry threshold set to `threshold` (`Some`) or erased
/// (`None`), following the OpenTelemetry trace state rules:
///
/// * the other sub-keys of the `ot` entry (`rv`, vendor-neutral extensions) are kept, after `th`;
/// * other vendors' list members are kept, in order;
/// * the modified `ot` entry moves to the front, as W3C requires of an updated member;
/// * an `ot` entry left empty is removed.
pub fn update_trace_state(trace_state: &str, threshold: Option<u64>) -> String {
    let mut ot_parts: Vec<String> = Vec::new();
    if let Some(t) = threshold {
        ot_parts.push(format!("th:{}", encode_threshold(t)));
    }
    if let Some(old) = ot_value(trace_state) {
        ot_parts.extend(
            old.split(';')
                .filter(|kv| !kv.is_empty() && !kv.starts_with("th:"))
                .map(str::to_string),
        );
    }
    let mut out: Vec<String> = Vec::new();
    if !ot_parts.is_empty() {
        out.push(format!("ot={}", ot_parts.join(";")));
    }
    // Duplicate `ot` members are invalid W3C; dropping them all keeps the output valid.
    out.extend(
        members(trace_state)
            .filter(|m| !m.starts_with("ot="))
            .map(str::to_string),
    );
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thresholds computed with exact rational arithmetic (Python `fractions`): an
    /// implementation that rounds differently (e.g. through `1 - p` in floating point) fails.
    #[test]
    fn thresholds_are_pinned() {
        assert_eq!(threshold(0.0), MAX_THRESHOLD);
        assert_eq!(threshold(100.0), 0);
        assert_eq!(threshold(50.0), 0x0080_0000_0000_0000);
        assert_eq!(threshold(25.0), 0x00c0_0000_0000_0000);
        assert_eq!(threshold(12.5), 0x00e0_0000_0000_0000);
        assert_eq!(threshold(10.0), 0x00e6_6666_6666_6666);
        assert_eq!(threshold(5.0), 0x00f3_3333_3333_3333);
        assert_eq!(threshold(1.0), 0x00fd_70a3_d70a_3d71);
        assert_eq!(threshold(0.1), 0x00ff_be76_c8b4_3958);
        assert_eq!(threshold(33.3), 0x00aa_c083_126e_978f);
        assert_eq!(threshold(99.9), 0x0000_4189_374b_c6a4);
        assert_eq!(threshold(-5.0), MAX_THRESHOLD);
        assert_eq!(threshold(f64::NAN), MAX_THRESHOLD);
        assert_eq!(threshold(250.0), 0);
    }

    #[test]
    fn randomness_is_the_low_56_bits_and_keep_is_r_at_least_t() {
        assert_eq!(randomness(0xa3ce_929d_0e0e_4736), 0x00ce_929d_0e0e_4736);
        assert_eq!(randomness(u64::MAX << 56), 0);
        let t = threshold(50.0);
        assert!(keep(t, t), "R == T is kept");
        assert!(!keep(t - 1, t));
        assert!(keep(0, threshold(100.0)));
        assert!(!keep(RANDOMNESS_MASK, threshold(0.0)));
    }

    #[test]
    fn explicit_rv_takes_precedence_when_valid() {
        let lo = 0x00ce_929d_0e0e_4736;
        assert_eq!(span_randomness(lo, "ot=rv:ffffffffffffff"), RANDOMNESS_MASK);
        assert_eq!(span_randomness(lo, "a=1, ot=th:8;rv:00000000000001"), 1);
        assert_eq!(span_randomness(lo, "ot=rv:FFFFFFFFFFFFFF"), randomness(lo));
        assert_eq!(span_randomness(lo, "ot=rv:fff"), randomness(lo));
        assert_eq!(span_randomness(lo, ""), randomness(lo));
    }
}
