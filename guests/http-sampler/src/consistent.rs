//! Consistent probability sampling math, copied from the span sampler (`guests/sampler`).
//!
//! **These functions must stay equal to the ones of the same name in
//! `guests/sampler/src/lib.rs`**: the head decision taken here and the span sampler's decision in
//! the collector are only consistent (a trace sampled at the edge keeps all its spans
//! downstream at the same percentage) while both compute `T` and `R` the same way. The tests at
//! the end pin values that the sampler's own tests pin too, so a change to either copy that is
//! not made to the other fails a test.
//!
//! The sampler's `lib.rs` cannot be included here with `#[path]`: it also exports a span
//! processor, which would clash with this crate's HTTP filter exports.

/// `2^56`: the number of distinct randomness values, and the threshold that rejects everything.
pub const MAX_THRESHOLD: u64 = 1 << 56;

/// Mask of the 56 randomness bits of the low half of a trace id.
const RANDOMNESS_MASK: u64 = MAX_THRESHOLD - 1;

/// Number of hex digits of a 56-bit value (`rv` is encoded with exactly this many).
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
/// (W3C Trace Context Level 2). The sampler's version takes a `TraceId` and reads `.lo`.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values the span sampler's `threshold_math_matches_the_specification` test pins, plus a few
    /// computed with exact rational arithmetic (Python `fractions`): if this copy drifts from the
    /// sampler's, this fails.
    #[test]
    fn thresholds_are_pinned_to_the_span_samplers() {
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
