//! The plugin's configuration, as the operator writes it (JSON).

use serde::Deserialize;

/// The configuration of [`Masker`](crate::Masker). Every key is optional; unknown keys are an
/// error, so that a typo does not silently turn a detector off.
///
/// ```json
/// {
///   "cards": true, "phones": true, "emails": true,
///   "card_keep_first": 4, "card_keep_last": 4,
///   "mask_char": "*", "email_mask": "***",
///   "extra_patterns": [{"name": "ssn", "regex": "\\b\\d{3}-\\d{2}-\\d{4}\\b", "replacement": "***-**-****"}]
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskConfig {
    /// Mask Luhn-valid payment card numbers. Default `true`.
    pub cards: bool,
    /// Mask mainland-China mobile numbers. Default `true`.
    pub phones: bool,
    /// Mask the local part of e-mail addresses. Default `true`.
    pub emails: bool,
    /// Leading digits of a card number left visible. Default 4.
    pub card_keep_first: usize,
    /// Trailing digits of a card number left visible. Default 4.
    pub card_keep_last: usize,
    /// What replaces each hidden digit of cards and phones. Default `*`; must not be a digit.
    pub mask_char: char,
    /// What replaces the local part of an e-mail after its first character. Default `***`.
    pub email_mask: String,
    /// Further patterns, applied in order after the built-in detectors. Default none.
    pub extra_patterns: Vec<ExtraPattern>,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            cards: true,
            phones: true,
            emails: true,
            card_keep_first: 4,
            card_keep_last: 4,
            mask_char: '*',
            email_mask: "***".to_string(),
            extra_patterns: Vec::new(),
        }
    }
}

/// A pattern of the operator's own: every match of `regex` is replaced with `replacement`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraPattern {
    /// A unique name: it labels the pattern in error messages and in the `pii_masked` metric.
    pub name: String,
    /// The pattern, in the syntax of the Rust `regex` crate (no look-around or back-references;
    /// matching is linear in the input). `(?i)` is not available (no Unicode case tables in the
    /// build): `(?i-u)` matches ASCII letters case-insensitively.
    pub regex: String,
    /// The replacement. `$1`, `$name` or `${name}` insert a capture group; `$$` is a literal `$`.
    pub replacement: String,
}
