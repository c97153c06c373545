//! `pii-mask`: a weft plugin (world `otlp-processor`) that masks personal data in spans and logs.
//!
//! Built-in detectors, hand-written byte scanners rather than regular expressions because they
//! run on every string of every batch:
//!
//! * payment cards: 13 to 19 digits, optionally grouped by single spaces or dashes, first digit
//!   2 to 6, Luhn-valid: `4111 1111 1111 1111` becomes `4111 **** **** 1111`;
//! * mainland-China mobile numbers: 11 digits `1[3-9]…`, optionally after the country code 86:
//!   `13812345678` becomes `138****5678`;
//! * e-mail addresses: `user@example.com` becomes `u***@example.com`.
//!
//! A number glued to letters or to more digits (`id4111111111111111`, a 25-digit id) is part of
//! a longer token and is left alone. Operator-defined regular expressions (`extra_patterns`) run
//! after the built-in detectors.
//!
//! What is masked: string values (nested arrays and maps included, keys never) of resource,
//! scope, span, span event and span link attributes, span status messages, and log bodies and
//! attributes. Span names, event names and everything else are left as they are.
//!
//! The masking itself is [`Masker`], plain Rust that also builds natively (tests, benchmarks);
//! [`PiiMask`] is the plugin around it.

#![warn(missing_docs)]

mod config;

pub use config::{ExtraPattern, MaskConfig};

use regex::Regex;
use weft_guest::view::{self, HasAttributes, Logs, SpanPart, Traces, ValueRef};
use weft_guest::{
    AnyValue, Config, Edits, Error, KeyValue, LogBatch, LogTransform, Plugin, SpanBatch,
    SpanProcessor, Value,
};
use weft_pii_scan::{Detectors, Hit, Kind, MIN_CARD_DIGITS};

/// An operator-defined pattern, compiled.
#[derive(Debug)]
struct Pattern {
    name: String,
    regex: Regex,
    replacement: String,
    /// Whether `replacement` refers to capture groups (contains `$`); if not, matches are
    /// replaced by plain copies, without computing capture groups.
    expands: bool,
}

impl Pattern {
    /// Replaces every match in `s`; returns the new string and how many matches there were, or
    /// `None` when nothing matched (the common case: no allocation).
    fn replace(&self, s: &str) -> Option<(String, u64)> {
        let mut out = String::new();
        let mut last = 0;
        let mut count = 0;
        if self.expands {
            for caps in self.regex.captures_iter(s) {
                let Some(m) = caps.get(0) else { continue };
                out.push_str(&s[last..m.start()]);
                caps.expand(&self.replacement, &mut out);
                last = m.end();
                count += 1;
            }
        } else {
            for m in self.regex.find_iter(s) {
                out.push_str(&s[last..m.start()]);
                out.push_str(&self.replacement);
                last = m.end();
                count += 1;
            }
        }
        if count == 0 {
            return None;
        }
        out.push_str(&s[last..]);
        Some((out, count))
    }
}

/// How much was masked in one batch, by detector (for the `pii_masked` metric).
#[derive(Debug, Default)]
struct Tally {
    /// String values changed.
    values: u64,
    /// Card numbers masked.
    cards: u64,
    /// Phone numbers masked.
    phones: u64,
    /// E-mail addresses masked.
    emails: u64,
    /// Matches of each extra pattern, by index; empty until one matches (no allocation).
    extra: Vec<u64>,
    /// Scratch for the detectors' hits, reused from string to string.
    hits: Vec<Hit>,
}

impl Tally {
    /// Counts `n` matches of extra pattern `i` (of `len`).
    fn add_extra(&mut self, i: usize, len: usize, n: u64) {
        if self.extra.len() < len {
            self.extra.resize(len, 0);
        }
        if let Some(slot) = self.extra.get_mut(i) {
            *slot += n;
        }
    }
}

/// Masks personal data in strings, values, attributes and whole batches.
///
/// Build it once from the configuration (patterns are compiled then) and reuse it: masking only
/// reads it, so one `Masker` can be shared between threads.
#[derive(Debug)]
pub struct Masker {
    detectors: Detectors,
    mask_char: char,
    email_mask: String,
    patterns: Vec<Pattern>,
}

impl Default for Masker {
    /// The default configuration: all three detectors on, no extra patterns.
    fn default() -> Self {
        Masker::assemble(MaskConfig::default(), Vec::new())
    }
}

impl Masker {
    /// Builds a masker from the plugin configuration (see [`MaskConfig`] for the keys).
    /// Unknown keys, bad values and invalid patterns are [`Error::InvalidConfig`].
    pub fn new(config: &Config) -> Result<Masker, Error> {
        Masker::from_config(config.parse()?)
    }

    /// Builds a masker from configuration JSON text (empty text is the default configuration).
    pub fn from_json(text: &str) -> Result<Masker, Error> {
        Masker::new(&Config::from_json(text)?)
    }

    /// Builds a masker from a parsed configuration, checking the values and compiling the
    /// extra patterns.
    pub fn from_config(mut config: MaskConfig) -> Result<Masker, Error> {
        let invalid = |msg: String| Err(Error::InvalidConfig(msg));
        let keep = config.card_keep_first.saturating_add(config.card_keep_last);
        if keep >= MIN_CARD_DIGITS {
            // Otherwise a 13-digit card could be "masked" without hiding a digit.
            return invalid(format!(
                "card_keep_first + card_keep_last must be at most {} (got {} + {})",
                MIN_CARD_DIGITS - 1,
                config.card_keep_first,
                config.card_keep_last
            ));
        }
        if config.mask_char.is_ascii_digit() {
            // A digit as mask would leave masked numbers looking like (other) numbers.
            return invalid(format!(
                "mask_char must not be a digit (got `{}`)",
                config.mask_char
            ));
        }
        let mut patterns: Vec<Pattern> = Vec::with_capacity(config.extra_patterns.len());
        for (i, p) in std::mem::take(&mut config.extra_patterns)
            .into_iter()
            .enumerate()
        {
            if p.name.is_empty() {
                return invalid(format!("extra_patterns[{i}]: name must not be empty"));
            }
            if patterns.iter().any(|q| q.name == p.name) {
                return invalid(format!(
                    "extra_patterns[{i}]: the name `{}` is used twice",
                    p.name
                ));
            }
            let regex = Regex::new(&p.regex).map_err(|e| {
                Error::InvalidConfig(format!(
                    "extra_patterns[{i}] `{}`: invalid regex: {e}",
                    p.name
                ))
            })?;
            if regex.is_match("") {
                // It would insert the replacement between every two characters of every value.
                return invalid(format!(
                    "extra_patterns[{i}] `{}`: the regex matches the empty string",
                    p.name
                ));
            }
            patterns.push(Pattern {
                name: p.name,
                expands: p.replacement.contains('$'),
                regex,
                replacement: p.replacement,
            });
        }
        Ok(Masker::assemble(config, patterns))
    }

    /// A masker from checked settings and compiled patterns (`config.extra_patterns` is unused).
    fn assemble(config: MaskConfig, patterns: Vec<Pattern>) -> Masker {
        Masker {
            detectors: Detectors {
                cards: config.cards,
                phones: config.phones,
                emails: config.emails,
                keep_first: config.card_keep_first,
                keep_last: config.card_keep_last,
            },
            mask_char: config.mask_char,
            email_mask: config.email_mask,
            patterns,
        }
    }

    /// Masks `s` in place; returns whether it changed. A string without PII is not copied.
    pub fn mask_str(&self, s: &mut String) -> bool {
        self.mask_string(s, &mut Tally::default())
    }

    /// Masks every string in `value` (nested arrays and map values included, map keys not);
    /// returns how many strings changed.
    pub fn mask_value(&self, value: &mut Value) -> u64 {
        let mut tally = Tally::default();
        self.mask_value_into(value, &mut tally);
        tally.values
    }

    /// Masks the values (not the keys) of `attributes`; returns how many strings changed.
    pub fn mask_attributes(&self, attributes: &mut [KeyValue]) -> u64 {
        let mut tally = Tally::default();
        self.mask_attributes_into(attributes, &mut tally);
        tally.values
    }

    /// Masks a span batch: resource, scope, span, event and link attributes and span status
    /// messages. Returns how many strings changed.
    pub fn mask_span_batch(&self, batch: &mut SpanBatch) -> u64 {
        let mut tally = Tally::default();
        self.mask_span_batch_into(batch, &mut tally);
        tally.values
    }

    /// Masks a log batch: resource and scope attributes, and record bodies and attributes.
    /// Returns how many strings changed.
    pub fn mask_log_batch(&self, batch: &mut LogBatch) -> u64 {
        let mut tally = Tally::default();
        self.mask_log_batch_into(batch, &mut tally);
        tally.values
    }

    fn mask_span_batch_into(&self, batch: &mut SpanBatch, tally: &mut Tally) {
        self.mask_attributes_into(&mut batch.resource.attributes, tally);
        self.mask_attributes_into(&mut batch.scope.attributes, tally);
        for span in &mut batch.spans {
            self.mask_attributes_into(&mut span.attributes, tally);
            for event in &mut span.events {
                self.mask_attributes_into(&mut event.attributes, tally);
            }
            for link in &mut span.links {
                self.mask_attributes_into(&mut link.attributes, tally);
            }
            // Error messages often quote the input that failed ("no account for a@b.com").
            self.mask_string(&mut span.status.message, tally);
        }
    }

    fn mask_log_batch_into(&self, batch: &mut LogBatch, tally: &mut Tally) {
        self.mask_attributes_into(&mut batch.resource.attributes, tally);
        self.mask_attributes_into(&mut batch.scope.attributes, tally);
        for record in &mut batch.records {
            if let Some(body) = &mut record.body {
                self.mask_value_into(body, tally);
            }
            self.mask_attributes_into(&mut record.attributes, tally);
        }
    }

    fn mask_attributes_into(&self, attributes: &mut [KeyValue], tally: &mut Tally) {
        for kv in attributes {
            self.mask_value_into(&mut kv.value, tally);
        }
    }

    fn mask_value_into(&self, value: &mut Value, tally: &mut Tally) {
        // Nested trees are edited node by node, in place: no unflattening.
        value.for_each_str_mut(|s| {
            self.mask_string(s, tally);
        });
    }

    /// Masks one string; counts it (if changed) and its matches by detector in `tally`.
    fn mask_string(&self, s: &mut String, tally: &mut Tally) -> bool {
        match self.masked(s, tally) {
            Some(m) => {
                *s = m;
                true
            }
            None => false,
        }
    }

    /// The masked copy of `s`, or `None` when nothing in it is masked (no allocation then);
    /// counts it (if changed) and its matches by detector in `tally`.
    fn masked(&self, s: &str, tally: &mut Tally) -> Option<String> {
        let mut hits = std::mem::take(&mut tally.hits);
        hits.clear();
        self.detectors.find(s.as_bytes(), &mut hits);
        let mut out = if hits.is_empty() {
            None
        } else {
            self.apply(s, &hits, tally)
        };
        tally.hits = hits;
        let count = self.patterns.len();
        for (i, pattern) in self.patterns.iter().enumerate() {
            let current = out.as_deref().unwrap_or(s);
            if let Some((replaced, n)) = pattern.replace(current) {
                tally.add_extra(i, count, n);
                if replaced != current {
                    out = Some(replaced);
                }
            }
        }
        tally.values += u64::from(out.is_some());
        out
    }

    /// Masks an OTLP traces request in place of the batch ABI: what [`Self::mask_span_batch`]
    /// masks, recorded as `edits`; returns how many strings changed.
    pub fn mask_traces(&self, traces: Traces<'_>, edits: &mut Edits) -> u64 {
        let mut tally = Tally::default();
        self.mask_traces_into(traces, edits, &mut tally);
        tally.values
    }

    /// Masks an OTLP logs request: what [`Self::mask_log_batch`] masks, recorded as `edits`;
    /// returns how many strings changed.
    pub fn mask_logs(&self, logs: Logs<'_>, edits: &mut Edits) -> u64 {
        let mut tally = Tally::default();
        self.mask_logs_into(logs, edits, &mut tally);
        tally.values
    }

    fn mask_traces_into(&self, traces: Traces<'_>, edits: &mut Edits, tally: &mut Tally) {
        for rs in traces.resource_spans() {
            self.mask_view_attributes(&rs.resource(), edits, tally);
            for ss in rs.scope_spans() {
                self.mask_view_attributes(&ss.scope(), edits, tally);
                for span in ss.spans() {
                    // One pass over the span's fields (attributes, events, links, status).
                    for part in span.parts() {
                        match part {
                            SpanPart::Attribute(kv) => self.mask_view_value(&kv, edits, tally),
                            SpanPart::Event(event) => {
                                self.mask_view_attributes(&event, edits, tally);
                            }
                            SpanPart::Link(link) => self.mask_view_attributes(&link, edits, tally),
                            // Error messages often quote the input that failed.
                            SpanPart::Status(status) => {
                                if let Some(m) = self.masked(status.message(), tally) {
                                    edits.set_status(&span, status.code(), &m);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn mask_logs_into(&self, logs: Logs<'_>, edits: &mut Edits, tally: &mut Tally) {
        for rl in logs.resource_logs() {
            self.mask_view_attributes(&rl.resource(), edits, tally);
            for sl in rl.scope_logs() {
                self.mask_view_attributes(&sl.scope(), edits, tally);
                for record in sl.log_records() {
                    if let Some(body) = record.body()
                        && let Some(masked) = self.masked_view_value(body, tally)
                    {
                        edits.set_body(&record, masked);
                    }
                    self.mask_view_attributes(&record, edits, tally);
                }
            }
        }
    }

    fn mask_view_attributes<'a>(
        &self,
        owner: &impl HasAttributes<'a>,
        edits: &mut Edits,
        tally: &mut Tally,
    ) {
        for kv in owner.attributes() {
            self.mask_view_value(&kv, edits, tally);
        }
    }

    /// Masks the value of one attribute.
    fn mask_view_value(&self, kv: &view::KeyValue<'_>, edits: &mut Edits, tally: &mut Tally) {
        let value = kv.value();
        match value.get() {
            // The common case, without an owned value in between.
            ValueRef::Str(s) => {
                if let Some(m) = self.masked(s, tally) {
                    edits.set_str(kv, &m);
                }
            }
            ValueRef::Array(_) | ValueRef::KvList(_) => {
                if let Some(masked) = self.masked_nested(value, tally) {
                    edits.set_value(kv, masked);
                }
            }
            _ => {}
        }
    }

    /// The masked copy of a value, or `None` when nothing in it changes. Strings are read in
    /// place; only a nested value with PII in it is copied out.
    fn masked_view_value(&self, value: view::Value<'_>, tally: &mut Tally) -> Option<AnyValue> {
        match value.get() {
            ValueRef::Str(s) => self.masked(s, tally).map(AnyValue::Str),
            ValueRef::Array(_) | ValueRef::KvList(_) => self.masked_nested(value, tally),
            _ => None,
        }
    }

    /// The masked copy of an array or map value, or `None` when no string in it changes.
    fn masked_nested(&self, value: view::Value<'_>, tally: &mut Tally) -> Option<AnyValue> {
        let mut owned = AnyValue::from(value);
        self.mask_any(&mut owned, tally).then_some(owned)
    }

    /// Masks every string of an owned value; returns whether any changed.
    fn mask_any(&self, value: &mut AnyValue, tally: &mut Tally) -> bool {
        match value {
            AnyValue::Str(s) => self.mask_string(s, tally),
            AnyValue::Array(items) => items
                .iter_mut()
                .fold(false, |acc, v| self.mask_any(v, tally) | acc),
            AnyValue::KvList(entries) => entries
                .iter_mut()
                .fold(false, |acc, (_, v)| self.mask_any(v, tally) | acc),
            _ => false,
        }
    }

    /// Builds the masked copy of `s` from the detectors' `hits` (ordered, not overlapping), or
    /// `None` if no hit changes anything (an address already masked with a custom mask).
    fn apply(&self, s: &str, hits: &[Hit], tally: &mut Tally) -> Option<String> {
        let b = s.as_bytes();
        // Hit positions are next to ASCII bytes (digits, separators, `@`, the first byte of an
        // address), so every slice below is on a char boundary.
        let mut out = String::with_capacity(s.len() + self.email_mask.len());
        let mut pos = 0;
        let mut changed = false;
        for hit in hits {
            match hit.kind {
                Kind::Email => {
                    if s[hit.mask_from..hit.mask_to] == self.email_mask {
                        continue;
                    }
                    out.push_str(&s[pos..hit.mask_from]);
                    out.push_str(&self.email_mask);
                    pos = hit.mask_to;
                    tally.emails += 1;
                }
                Kind::Card | Kind::Phone => {
                    out.push_str(&s[pos..hit.start]);
                    let mut digit = 0;
                    for &c in &b[hit.start..hit.end] {
                        // Separators are copied, so the grouping stays readable.
                        if c.is_ascii_digit() {
                            if (hit.mask_from..hit.mask_to).contains(&digit) {
                                out.push(self.mask_char);
                            } else {
                                out.push(char::from(c));
                            }
                            digit += 1;
                        } else {
                            out.push(char::from(c));
                        }
                    }
                    pos = hit.end;
                    if hit.kind == Kind::Card {
                        tally.cards += 1;
                    } else {
                        tally.phones += 1;
                    }
                }
            }
            changed = true;
        }
        if !changed {
            return None;
        }
        out.push_str(&s[pos..]);
        Some(out)
    }

    /// Reports what `tally` counted as the counter `pii_masked`, labelled by `kind` (`card`,
    /// `phone`, `email` or an extra pattern's name). Host calls exist only in the component.
    #[cfg(target_arch = "wasm32")]
    fn report(&self, tally: &Tally) {
        let builtin = [
            ("card", tally.cards),
            ("phone", tally.phones),
            ("email", tally.emails),
        ];
        let extra = self
            .patterns
            .iter()
            .zip(&tally.extra)
            .map(|(p, &n)| (p.name.as_str(), n));
        for (kind, n) in builtin.into_iter().chain(extra) {
            if n > 0 {
                weft_guest::metrics::counter_add(
                    "pii_masked",
                    &[("kind".to_string(), kind.to_string())],
                    n,
                );
            }
        }
    }

    /// Natively there is no host to report to.
    #[cfg(not(target_arch = "wasm32"))]
    fn report(&self, _tally: &Tally) {}
}

/// The plugin: a [`Masker`] built from the configuration, applied to every span and log batch.
#[derive(Debug)]
pub struct PiiMask {
    masker: Masker,
}

impl PiiMask {
    /// The masker this plugin applies.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }
}

impl Plugin for PiiMask {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(PiiMask {
            masker: Masker::new(config)?,
        })
    }
}

impl SpanProcessor for PiiMask {
    fn process_spans(&mut self, traces: Traces<'_>, edits: &mut Edits) -> Result<(), Error> {
        let mut tally = Tally::default();
        self.masker.mask_traces_into(traces, edits, &mut tally);
        self.masker.report(&tally);
        Ok(())
    }
}

impl LogTransform for PiiMask {
    fn process_logs(&mut self, logs: Logs<'_>, edits: &mut Edits) -> Result<(), Error> {
        let mut tally = Tally::default();
        self.masker.mask_logs_into(logs, edits, &mut tally);
        self.masker.report(&tally);
        Ok(())
    }
}

weft_guest::export_otlp_processor!(PiiMask);

#[cfg(test)]
mod tests;
