//! Parses text log lines in the body of log records into structured attributes.
//!
//! Two line formats are understood, tried in the configured order:
//!
//! * **logfmt**: `key=value key2="quoted \"value\"" flag` (see [`parse_logfmt`]);
//! * **legacy**: the fixed-width layout of the in-house batch systems,
//!   `YYYYMMDDHHMMSS LEVEL SERVICE      TXNID16CHARSXXXX message` (see [`parse_legacy`]).
//!
//! A record whose body is not a string, or matches no format, passes unchanged. The parsing
//! functions are pure and public so other plugins (and tests) can use them without a host.

use serde::Deserialize;
use weft_guest::view::{Logs, ValueRef};
use weft_guest::{
    AttributesExt, Config, Edits, Error, LogRecord, LogTransform, Plugin, Value, records,
};

/// The attribute that receives the original line when `keep_original` is on.
pub const ORIGINAL_ATTRIBUTE: &str = "log.original";

/// A line format this plugin can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `key=value` pairs separated by spaces.
    Logfmt,
    /// The fixed-width legacy layout.
    Legacy,
}

/// The plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParseConfig {
    /// Formats to try, in order; the first that matches wins (default `["logfmt", "legacy"]`).
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
    /// Prepended to the name of every attribute parsed from a line (default empty).
    #[serde(default)]
    pub attribute_prefix: String,
    /// In logfmt, move `msg` (or `message`) into the body (default true).
    #[serde(default = "default_true")]
    pub msg_to_body: bool,
    /// Copy the original line to the attribute `log.original` (default false).
    #[serde(default)]
    pub keep_original: bool,
}

fn default_formats() -> Vec<Format> {
    vec![Format::Logfmt, Format::Legacy]
}

fn default_true() -> bool {
    true
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            formats: default_formats(),
            attribute_prefix: String::new(),
            msg_to_body: true,
            keep_original: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Severity
// ---------------------------------------------------------------------------------------------

/// The OTLP severity number of a level name (case-insensitive): the first number of each
/// range, `trace` 1, `debug` 5, `info` 9, `warn` 13, `error` 17, `fatal` 21, with common
/// aliases (`warning`, `err`, `critical`, ...). `0` (unspecified) for an unknown name.
pub fn severity_number(level: &str) -> u32 {
    match level.to_ascii_lowercase().as_str() {
        "trace" | "trc" => 1,
        "debug" | "dbg" => 5,
        "info" | "inf" | "information" | "informational" | "notice" => 9,
        "warn" | "wrn" | "warning" => 13,
        "error" | "err" | "eror" => 17,
        "fatal" | "ftl" | "critical" | "crit" | "panic" | "emerg" | "emergency" | "alert" => 21,
        _ => 0,
    }
}

/// Sets the record's severity from a level name, unless the record already has one: what the
/// sender stated explicitly is more reliable than text in the body. Returns whether it was set.
fn fill_severity(record: &mut LogRecord, level: &str) -> bool {
    if record.severity_number != 0 || !record.severity_text.is_empty() {
        return false;
    }
    record.severity_text = level.to_string();
    record.severity_number = severity_number(level);
    true
}

// ---------------------------------------------------------------------------------------------
// logfmt
// ---------------------------------------------------------------------------------------------

/// One `key[=value]` field of a logfmt line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The key.
    pub key: String,
    /// The value, unescaped; `None` for a bare key (a flag).
    pub value: Option<String>,
    /// Whether the value was written in double quotes (then it is always kept as a string).
    pub quoted: bool,
}

impl Field {
    /// The attribute value of the field:
    ///
    /// * a bare key is `true`;
    /// * a quoted value is a string, always (the writer chose to quote it);
    /// * an unquoted `true` / `false` is a boolean;
    /// * an unquoted integer without leading zeros that fits in 64 bits is an int
    ///   (`42`, `-7`, `0`; but `007` stays a string, as leading zeros mark codes and ids);
    /// * an unquoted decimal with a fraction or exponent is a double (`0.25`, `1e3`);
    /// * anything else is a string.
    pub fn to_value(&self) -> Value {
        match &self.value {
            None => Value::Boolean(true),
            Some(text) if self.quoted => Value::Str(text.clone()),
            Some(text) => typed_value(text),
        }
    }
}

/// The typed value of an unquoted logfmt value (see [`Field::to_value`]).
pub fn typed_value(text: &str) -> Value {
    match text {
        "true" => return Value::Boolean(true),
        "false" => return Value::Boolean(false),
        _ => {}
    }
    match number_kind(text) {
        Some(NumberKind::Int) => text
            .parse::<i64>()
            .map_or_else(|_| Value::Str(text.to_string()), Value::Int),
        Some(NumberKind::Double) => match text.parse::<f64>() {
            Ok(d) if d.is_finite() => Value::Double(d),
            _ => Value::Str(text.to_string()),
        },
        None => Value::Str(text.to_string()),
    }
}

enum NumberKind {
    Int,
    Double,
}

/// Classifies `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: an int without fraction and
/// exponent, else a double; `None` for anything else (leading zeros, `+5`, `.5`, `1.`, `NaN`).
fn number_kind(text: &str) -> Option<NumberKind> {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let int_len = digits(&mut i);
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut kind = NumberKind::Int;
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
        kind = NumberKind::Double;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
        kind = NumberKind::Double;
    }
    (i == b.len()).then_some(kind)
}

/// Whether `b` separates fields (a trailing newline of the line included).
fn is_space(b: u8) -> bool {
    b.is_ascii_whitespace()
}

/// Whether `b` may appear in a key: ASCII letters, digits and `_ . - / @`.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b'@')
}

/// Parses a logfmt line into its fields, or `None` if the line is not logfmt.
///
/// Grammar: fields separated by whitespace; a field is `key`, `key=`, `key=value` or
/// `key="quoted value"`.
///
/// * A key starts with an ASCII letter, `_` or `@` and goes on with letters, digits and
///   `_ . - / @`: prose such as `Connection failed: host=db1` or `200 OK x=1` is rejected.
/// * An unquoted value runs to the next whitespace and may contain `=` (URLs), not `"`.
/// * A quoted value supports the escapes `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX` (UTF-16,
///   surrogate pairs combined, a lone surrogate becomes U+FFFD); any other backslash is kept
///   as written. It must be closed and followed by whitespace or the end of the line.
/// * The line must hold at least one `key=value` pair: bare words alone are not logfmt.
pub fn parse_logfmt(line: &str) -> Option<Vec<Field>> {
    let b = line.as_bytes();
    let mut i = 0;
    let mut fields = Vec::new();
    let mut pairs = 0;
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let key_start = i;
        if !(b[i].is_ascii_alphabetic() || b[i] == b'_' || b[i] == b'@') {
            return None;
        }
        while i < b.len() && is_key_byte(b[i]) {
            i += 1;
        }
        // Keys are ASCII, so these byte offsets are char boundaries.
        let key = line[key_start..i].to_string();
        if i == b.len() || is_space(b[i]) {
            fields.push(Field {
                key,
                value: None,
                quoted: false,
            });
            continue;
        }
        if b[i] != b'=' {
            return None;
        }
        i += 1;
        let (value, quoted) = if b.get(i) == Some(&b'"') {
            let (value, end) = parse_quoted(line, i + 1)?;
            i = end;
            if i < b.len() && !is_space(b[i]) {
                return None;
            }
            (value, true)
        } else {
            let start = i;
            while i < b.len() && !is_space(b[i]) {
                if b[i] == b'"' {
                    return None;
                }
                i += 1;
            }
            // Whitespace and `"` are ASCII: `start` and `i` are char boundaries.
            (line[start..i].to_string(), false)
        };
        pairs += 1;
        fields.push(Field {
            key,
            value: Some(value),
            quoted,
        });
    }
    (pairs > 0).then_some(fields)
}

/// Reads a quoted value starting just after its opening quote at byte `start`; returns the
/// unescaped text and the byte offset after the closing quote, or `None` if it is not closed.
fn parse_quoted(line: &str, start: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = line[start..].char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return Some((out, start + offset + 1)),
            '\\' => {
                let (_, escaped) = chars.next()?;
                match escaped {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let unit = read_hex4(&mut chars);
                        out.push(decode_utf16_escape(unit, &mut chars));
                    }
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            c => out.push(c),
        }
    }
    None
}

type CharIter<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

/// Reads up to four hex digits of a `\u` escape; `None` if fewer than four follow.
fn read_hex4(chars: &mut CharIter<'_>) -> Option<u32> {
    let mut unit = 0;
    for _ in 0..4 {
        let digit = chars.peek().and_then(|(_, c)| c.to_digit(16))?;
        chars.next();
        unit = unit * 16 + digit;
    }
    Some(unit)
}

/// The character of a `\uXXXX` escape, reading the low half of a surrogate pair from `chars`
/// when `unit` is a high surrogate. Malformed escapes become U+FFFD rather than failing the
/// whole line: the rest of the line is still good data.
fn decode_utf16_escape(unit: Option<u32>, chars: &mut CharIter<'_>) -> char {
    let Some(unit) = unit else {
        return char::REPLACEMENT_CHARACTER;
    };
    if (0xd800..0xdc00).contains(&unit) {
        let mut lookahead = chars.clone();
        if lookahead.next().map(|(_, c)| c) == Some('\\')
            && lookahead.next().map(|(_, c)| c) == Some('u')
            && let Some(low) = read_hex4(&mut lookahead)
            && (0xdc00..0xe000).contains(&low)
        {
            *chars = lookahead;
            let code = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
            return char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        }
        return char::REPLACEMENT_CHARACTER;
    }
    char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER)
}

// ---------------------------------------------------------------------------------------------
// Legacy fixed-width layout
// ---------------------------------------------------------------------------------------------

/// Width of the legacy header up to and including the transaction id.
const LEGACY_HEADER: usize = 50;

/// A line of the legacy fixed-width layout, split into its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyLine<'a> {
    /// The timestamp (columns 1–14, UTC) in ns since the Unix epoch.
    pub time_unix_nano: u64,
    /// The level (columns 16–20), padding removed, e.g. `WARN`.
    pub level: &'a str,
    /// The service name (columns 22–33), padding removed.
    pub service: &'a str,
    /// The transaction id (columns 35–50).
    pub txn_id: &'a str,
    /// The free-text message (column 52 to the end, trailing line break removed).
    pub message: &'a str,
}

/// Parses a line of the legacy fixed-width layout (1-based columns, all ASCII before the
/// message):
///
/// | columns | width | content                                         |
/// |---------|-------|-------------------------------------------------|
/// | 1–14    | 14    | timestamp `YYYYMMDDHHMMSS`, UTC                 |
/// | 15      | 1     | space                                           |
/// | 16–20   | 5     | level, letters, left-aligned, padded with spaces |
/// | 21      | 1     | space                                           |
/// | 22–33   | 12    | service, left-aligned, padded with spaces       |
/// | 34      | 1     | space                                           |
/// | 35–50   | 16    | transaction id, 16 ASCII letters or digits      |
/// | 51      | 1     | space (absent when the message is empty)        |
/// | 52–     | any   | message, free text (UTF-8)                      |
///
/// `None` if the line does not fit: a bad column, a separator that is not a space, an
/// impossible date or time, or a time before 1970 or after 2554 (outside u64 nanoseconds).
pub fn parse_legacy(line: &str) -> Option<LegacyLine<'_>> {
    let b = line.as_bytes();
    if b.len() < LEGACY_HEADER || !b[..LEGACY_HEADER].is_ascii() {
        return None;
    }
    if b[14] != b' ' || b[20] != b' ' || b[33] != b' ' {
        return None;
    }
    // The header is ASCII, so every slice below is on char boundaries.
    let time_unix_nano = parse_timestamp(&line[0..14])?;
    let level = line[15..20].trim_matches(' ');
    if level.is_empty() || !level.bytes().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let service = line[21..33].trim_matches(' ');
    if service.is_empty() {
        return None;
    }
    let txn_id = &line[34..LEGACY_HEADER];
    if !txn_id.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let message = match b.get(LEGACY_HEADER) {
        None => "",
        // Byte 50 is an ASCII space, so 51 is a char boundary.
        Some(b' ') => line[LEGACY_HEADER + 1..].trim_end_matches(['\r', '\n']),
        Some(_) => return None,
    };
    Some(LegacyLine {
        time_unix_nano,
        level,
        service,
        txn_id,
        message,
    })
}

/// Converts `YYYYMMDDHHMMSS` (UTC) to ns since the Unix epoch; `None` if malformed, impossible
/// (month 13, 31 April, 29 February of a common year, second 60) or outside u64 nanoseconds.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    if text.len() != 14 || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days
        .checked_mul(86_400)?
        .checked_add(u64::from(hour * 3600 + minute * 60 + second))?;
    seconds.checked_mul(1_000_000_000)
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (negative before 1970). The classic
/// era-based algorithm (H. Hinnant, `days_from_civil`), exact for every year here.
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    // Years start in March, so the leap day is the last day of the previous "year".
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// The validated configuration, applied to records.
#[derive(Debug, Clone)]
pub struct Parser {
    formats: Vec<Format>,
    prefix: String,
    msg_to_body: bool,
    keep_original: bool,
}

/// Counts of one batch, for the `protocol_parse_records` metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records whose body matched a format.
    pub parsed: u64,
    /// Records passed through unchanged.
    pub unparsed: u64,
}

impl Parser {
    /// Validates a configuration: at least one format, none twice.
    pub fn from_config(config: &ParseConfig) -> Result<Self, Error> {
        if config.formats.is_empty() {
            return Err(Error::InvalidConfig(
                "protocol-parse: `formats` is empty: list at least one of logfmt, legacy".into(),
            ));
        }
        for (i, format) in config.formats.iter().enumerate() {
            if config.formats[..i].contains(format) {
                return Err(Error::InvalidConfig(format!(
                    "protocol-parse: format {format:?} is listed twice in `formats`"
                )));
            }
        }
        Ok(Parser {
            formats: config.formats.clone(),
            prefix: config.attribute_prefix.clone(),
            msg_to_body: config.msg_to_body,
            keep_original: config.keep_original,
        })
    }

    /// The attribute name for a parsed key.
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Parses the record's string body with the first format that matches and updates the
    /// record; returns the format, or `None` (record unchanged) if none matched.
    pub fn parse_record(&self, record: &mut LogRecord) -> Option<Format> {
        let Some(Value::Str(line)) = &record.body else {
            return None;
        };
        // Cloned because the record (body included) is rewritten below.
        let line = line.clone();
        let mut matched = None;
        for &format in &self.formats {
            let applied = match format {
                Format::Logfmt => {
                    parse_logfmt(&line).map(|fields| self.apply_logfmt(record, fields))
                }
                Format::Legacy => {
                    parse_legacy(&line).map(|parsed| self.apply_legacy(record, &parsed))
                }
            };
            if applied.is_some() {
                matched = Some(format);
                break;
            }
        }
        let format = matched?;
        if self.keep_original {
            // If an earlier stage kept an original already, that one is more original.
            record.attributes.set_if_absent(ORIGINAL_ATTRIBUTE, line);
        }
        Some(format)
    }

    /// Applies logfmt fields: `level`/`lvl` to the severity (if the record had none),
    /// `msg`/`message` to the body (if `msg_to_body`), the rest to attributes.
    ///
    /// A field used for the severity or body is not also kept as an attribute; one that is
    /// not used (the record already had a severity, `msg_to_body` is off, or a second `msg`)
    /// stays an attribute, so nothing in the line is lost.
    fn apply_logfmt(&self, record: &mut LogRecord, fields: Vec<Field>) {
        let mut severity_done = false;
        let mut body_done = false;
        for field in fields {
            match (field.key.as_str(), &field.value) {
                ("level" | "lvl", Some(level)) if !severity_done && !level.is_empty() => {
                    severity_done = true;
                    if fill_severity(record, level) {
                        continue;
                    }
                }
                ("msg" | "message", Some(message)) if self.msg_to_body && !body_done => {
                    body_done = true;
                    record.body = Some(Value::Str(message.clone()));
                    continue;
                }
                _ => {}
            }
            // Attributes the sender set explicitly win over text from the body, and within a
            // line the first occurrence of a key wins (as lookups in OTLP attribute lists).
            let key = self.key(&field.key);
            record.attributes.set_if_absent(&key, field.to_value());
        }
    }

    /// Applies a legacy line: time (if 0), severity (if none), service and transaction id
    /// attributes, and the message as the body.
    fn apply_legacy(&self, record: &mut LogRecord, line: &LegacyLine<'_>) {
        if record.time_unix_nano == 0 {
            record.time_unix_nano = line.time_unix_nano;
        }
        fill_severity(record, line.level);
        record
            .attributes
            .set_if_absent(&self.key("legacy.service"), line.service);
        record
            .attributes
            .set_if_absent(&self.key("legacy.txn_id"), line.txn_id);
        record.body = Some(Value::Str(line.message.to_string()));
    }

    /// Parses the records of an OTLP logs request on the batch ABI: only records with a string
    /// body are copied out (as owned [`LogRecord`]s), parsed, and replaced when a format
    /// matched; every other record is left as it is in the request.
    pub fn parse_logs(&self, logs: Logs<'_>, edits: &mut Edits) -> Tally {
        let mut tally = Tally::default();
        for (_, view) in logs.records() {
            if !matches!(view.body().map(|b| b.get()), Some(ValueRef::Str(_))) {
                tally.unparsed += 1;
                continue;
            }
            let mut record = records::log_record(view);
            if self.parse_record(&mut record).is_some() {
                tally.parsed += 1;
                records::replace_log_record(edits, &view, &record);
            } else {
                tally.unparsed += 1;
            }
        }
        tally
    }

    /// Parses every record of a list; returns the counts.
    pub fn parse_records(&self, records: &mut [LogRecord]) -> Tally {
        let mut tally = Tally::default();
        for record in records {
            if self.parse_record(record).is_some() {
                tally.parsed += 1;
            } else {
                tally.unparsed += 1;
            }
        }
        tally
    }
}

/// The `protocol-parse` plugin.
pub struct ProtocolParse {
    parser: Parser,
}

impl Plugin for ProtocolParse {
    fn new(config: &Config) -> Result<Self, Error> {
        let config: ParseConfig = config.parse()?;
        Ok(ProtocolParse {
            parser: Parser::from_config(&config)?,
        })
    }
}

impl LogTransform for ProtocolParse {
    fn process_logs(&mut self, logs: Logs<'_>, edits: &mut Edits) -> Result<(), Error> {
        record_metrics(self.parser.parse_logs(logs, edits));
        Ok(())
    }
}

/// Adds the batch's counts to the `protocol_parse_records` counter. Host imports only exist in
/// the component, so native builds (unit tests) skip this.
fn record_metrics(tally: Tally) {
    #[cfg(target_arch = "wasm32")]
    {
        use weft_guest::metrics::counter_add;
        counter_add(
            "protocol_parse_records",
            &[("result".into(), "parsed".into())],
            tally.parsed,
        );
        counter_add(
            "protocol_parse_records",
            &[("result".into(), "unparsed".into())],
            tally.unparsed,
        );
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = tally;
}

weft_guest::export_log_transform!(ProtocolParse);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_guest::KeyValue;

    fn record(body: &str) -> LogRecord {
        LogRecord {
            time_unix_nano: 0,
            observed_time_unix_nano: 5,
            severity_number: 0,
            severity_text: String::new(),
            body: Some(Value::Str(body.to_string())),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: None,
            span_id: None,
            event_name: String::new(),
        }
    }

    fn parser(json: &str) -> Parser {
        let config: ParseConfig = Config::from_json(json)
            .and_then(|c| c.parse())
            .expect("valid config");
        Parser::from_config(&config).expect("valid config")
    }

    fn body(r: &LogRecord) -> Option<&str> {
        r.body.as_ref().and_then(Value::as_str)
    }

    fn field(key: &str, value: Option<&str>, quoted: bool) -> Field {
        Field {
            key: key.into(),
            value: value.map(str::to_string),
            quoted,
        }
    }

    /// 2018-12-13T14:51:00Z, the start time of the OTLP/JSON examples.
    const DEC_13_2018: u64 = 1_544_712_660_000_000_000;

    #[test]
    fn logfmt_splits_pairs_flags_and_empty_values() {
        let fields = parse_logfmt("a=1 b=two  c= flag url=http://x/?q=1&r=2\n").expect("logfmt");
        assert_eq!(
            fields,
            vec![
                field("a", Some("1"), false),
                field("b", Some("two"), false),
                field("c", Some(""), false),
                field("flag", None, false),
                field("url", Some("http://x/?q=1&r=2"), false),
            ]
        );
        let fields = parse_logfmt("@timestamp=x k8s.pod/name=p-1 _x_=y").expect("logfmt");
        assert_eq!(fields.len(), 3);
    }

    #[test]
    fn logfmt_quoted_values_are_unescaped() {
        let fields = parse_logfmt(
            r#"msg="quoted value with \"escapes\"" path="C:\\tmp" nl="a\nb\tc" u="caf\u00e9 \ud83d\ude00" odd="\q" empty="" utf8="héllo wörld""#,
        )
        .expect("logfmt");
        let values: Vec<&str> = fields.iter().filter_map(|f| f.value.as_deref()).collect();
        assert_eq!(
            values,
            [
                r#"quoted value with "escapes""#,
                r"C:\tmp",
                "a\nb\tc",
                "café 😀",
                r"\q",
                "",
                "héllo wörld"
            ]
        );
        assert!(fields.iter().all(|f| f.quoted));
        // Malformed \u escapes do not reject the line.
        let fields = parse_logfmt(r#"a="x\u12zz" b="\ud800!""#).expect("logfmt");
        assert_eq!(fields[0].value.as_deref(), Some("x\u{fffd}zz"));
        assert_eq!(fields[1].value.as_deref(), Some("\u{fffd}!"));
    }

    #[test]
    fn lines_that_are_not_logfmt_are_rejected() {
        for line in [
            "",
            "   ",
            "just some words",
            "flag-only another_flag",
            "Connection failed: host=db1",
            "200 OK bytes=12",
            "=value",
            "a=\"unterminated",
            "a=\"closed\"glued",
            "a=b\"c",
            "a=1 \"quoted key\"=2",
            "a=1 b==2 ? c",
            "20181213145100 INFO  checkout     0123456789abcdef paid x=1",
        ] {
            assert_eq!(parse_logfmt(line), None, "{line:?}");
        }
    }

    #[test]
    fn unquoted_values_are_typed_and_leading_zeros_stay_strings() {
        assert_eq!(typed_value("42"), Value::Int(42));
        assert_eq!(typed_value("-7"), Value::Int(-7));
        assert_eq!(typed_value("0"), Value::Int(0));
        assert_eq!(typed_value("0.25"), Value::Double(0.25));
        assert_eq!(typed_value("-1.5e3"), Value::Double(-1500.0));
        assert_eq!(typed_value("1E2"), Value::Double(100.0));
        assert_eq!(typed_value("true"), Value::Boolean(true));
        assert_eq!(typed_value("false"), Value::Boolean(false));
        for s in [
            "007",
            "-01",
            "00.5",
            "+5",
            ".5",
            "1.",
            "1e",
            "1e+",
            "NaN",
            "inf",
            "0x1f",
            "1_000",
            "12ms",
            "True",
            "",
            "-",
            // Beyond i64: kept exactly rather than rounded.
            "9223372036854775808",
        ] {
            assert_eq!(typed_value(s), Value::Str(s.to_string()), "{s:?}");
        }
        assert_eq!(typed_value("9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(
            field("q", Some("42"), true).to_value(),
            Value::Str("42".into())
        );
        assert_eq!(field("f", None, false).to_value(), Value::Boolean(true));
    }

    #[test]
    fn logfmt_records_get_attributes_severity_and_body() {
        let p = parser("{}");
        let mut r = record(
            r#"level=warn msg="disk almost full" disk=/dev/sda1 used=0.93 free_mb=512 code=007 retry"#,
        );
        assert_eq!(p.parse_record(&mut r), Some(Format::Logfmt));
        assert_eq!(body(&r), Some("disk almost full"));
        assert_eq!(r.severity_text, "warn");
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.attributes.get_str("disk"), Some("/dev/sda1"));
        assert_eq!(r.attributes.get_value("used"), Some(&Value::Double(0.93)));
        assert_eq!(r.attributes.get_value("free_mb"), Some(&Value::Int(512)));
        assert_eq!(r.attributes.get_str("code"), Some("007"));
        assert_eq!(r.attributes.get_value("retry"), Some(&Value::Boolean(true)));
        // Fields used for severity and body are not duplicated as attributes.
        assert_eq!(r.attributes.get_value("level"), None);
        assert_eq!(r.attributes.get_value("msg"), None);
        assert_eq!(r.attributes.len(), 5);
        assert_eq!(r.time_unix_nano, 0, "logfmt leaves the time alone");
    }

    #[test]
    fn severity_names_map_to_otlp_numbers() {
        for (level, number) in [
            ("trace", 1),
            ("debug", 5),
            ("info", 9),
            ("INFO", 9),
            ("warn", 13),
            ("Warning", 13),
            ("error", 17),
            ("ERR", 17),
            ("fatal", 21),
            ("critical", 21),
            ("verbose", 0),
        ] {
            assert_eq!(severity_number(level), number, "{level}");
            let mut r = record(&format!("lvl={level} x=1"));
            parser("{}").parse_record(&mut r);
            assert_eq!(
                (r.severity_number, r.severity_text.as_str()),
                (number, level)
            );
        }
        // An empty level says nothing: it stays an attribute.
        let mut r = record("level= x=1");
        parser("{}").parse_record(&mut r);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (0, ""));
        assert_eq!(r.attributes.get_str("level"), Some(""));
    }

    #[test]
    fn an_existing_severity_is_kept_and_the_level_stays_an_attribute() {
        let mut r = record("level=debug msg=hi");
        r.severity_number = 17;
        r.severity_text = "ERROR".into();
        parser("{}").parse_record(&mut r);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (17, "ERROR"));
        assert_eq!(r.attributes.get_str("level"), Some("debug"));
    }

    #[test]
    fn msg_to_body_off_keeps_the_message_as_an_attribute() {
        let mut r = record("message=hello n=1");
        parser(r#"{"msg_to_body": false}"#).parse_record(&mut r);
        assert_eq!(body(&r), Some("message=hello n=1"));
        assert_eq!(r.attributes.get_str("message"), Some("hello"));
        // With it on, `msg` wins over a later `message`, which stays an attribute.
        let mut r = record("msg=first message=second");
        parser("{}").parse_record(&mut r);
        assert_eq!(body(&r), Some("first"));
        assert_eq!(r.attributes.get_str("message"), Some("second"));
        // A line without a message keeps its body.
        let mut r = record("a=1");
        parser("{}").parse_record(&mut r);
        assert_eq!(body(&r), Some("a=1"));
    }

    #[test]
    fn prefix_original_and_existing_attributes() {
        let p = parser(r#"{"attribute_prefix": "app.", "keep_original": true}"#);
        let line = "user=ann user=bob msg=x";
        let mut r = record(line);
        r.attributes.push(KeyValue {
            key: "app.tenant".into(),
            value: "from-sender".into(),
        });
        let mut r2 = r.clone();
        r2.body = Some(Value::Str("tenant=from-body".into()));
        p.parse_record(&mut r);
        assert_eq!(
            r.attributes.get_str("app.user"),
            Some("ann"),
            "first occurrence wins"
        );
        assert_eq!(r.attributes.get_str(ORIGINAL_ATTRIBUTE), Some(line));
        assert_eq!(r.attributes.get_value("user"), None);
        p.parse_record(&mut r2);
        assert_eq!(r2.attributes.get_str("app.tenant"), Some("from-sender"));
    }

    #[test]
    fn legacy_lines_are_split_by_column() {
        let line =
            "20181213145100 WARN  checkout     0123456789ABCDEF payment retried: card=…1234\r\n";
        let parsed = parse_legacy(line).expect("legacy");
        assert_eq!(
            parsed,
            LegacyLine {
                time_unix_nano: DEC_13_2018,
                level: "WARN",
                service: "checkout",
                txn_id: "0123456789ABCDEF",
                message: "payment retried: card=…1234",
            }
        );
        // Full-width service and level, and an empty message with or without its separator.
        let full = "20181213145100 ERROR inventory-v2 00000000000000a1";
        let parsed = parse_legacy(full).expect("legacy");
        assert_eq!(
            (parsed.level, parsed.service, parsed.message),
            ("ERROR", "inventory-v2", "")
        );
        assert!(parse_legacy(&format!("{full} ")).is_some());
    }

    #[test]
    fn legacy_records_get_time_severity_attributes_and_body() {
        let p = parser(r#"{"keep_original": true}"#);
        let line = "20181213145100 INFO  checkout     0123456789abcdef order 42 paid";
        let mut r = record(line);
        assert_eq!(p.parse_record(&mut r), Some(Format::Legacy));
        assert_eq!(r.time_unix_nano, DEC_13_2018);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (9, "INFO"));
        assert_eq!(r.attributes.get_str("legacy.service"), Some("checkout"));
        assert_eq!(
            r.attributes.get_str("legacy.txn_id"),
            Some("0123456789abcdef")
        );
        assert_eq!(r.attributes.get_str(ORIGINAL_ATTRIBUTE), Some(line));
        assert_eq!(body(&r), Some("order 42 paid"));
        // A time the record already has is kept.
        let mut r = record(line);
        r.time_unix_nano = 7;
        p.parse_record(&mut r);
        assert_eq!(r.time_unix_nano, 7);
        // The prefix applies to legacy attributes too.
        let mut r = record(line);
        parser(r#"{"attribute_prefix": "x."}"#).parse_record(&mut r);
        assert_eq!(r.attributes.get_str("x.legacy.service"), Some("checkout"));
    }

    #[test]
    fn legacy_timestamps_convert_to_utc_nanoseconds() {
        let s = |t: &str| parse_timestamp(t).map(|ns| ns / 1_000_000_000);
        assert_eq!(s("19700101000000"), Some(0));
        assert_eq!(s("19700101000001"), Some(1));
        assert_eq!(s("20000301000000"), Some(951_868_800));
        assert_eq!(s("20240229235959"), Some(1_709_251_199));
        assert_eq!(s("20240301000000"), Some(1_709_251_200));
        assert_eq!(s("21000301000000"), Some(4_107_542_400));
        assert_eq!(s("25540721000000"), Some(18_446_659_200));
        for bad in [
            "19691231235959", // before the epoch
            "26000101000000", // beyond u64 nanoseconds
            "20230229000000", // not a leap year
            "21000229000000", // century, not a leap year
            "20240431000000",
            "20241301000000",
            "20240001000000",
            "20240100000000",
            "20240101240000",
            "20240101006000",
            "20240101000060",
            "2024010100000",
            "2024-01-01 000",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_that_are_not_legacy_are_rejected() {
        let good = "20181213145100 INFO  checkout     0123456789abcdef message";
        assert!(parse_legacy(good).is_some());
        for bad in [
            "",
            "20181213145100 INFO  checkout", // too short
            "20181213145100-INFO  checkout     0123456789abcdef message", // separator
            "20181213145100 INFO  checkout     0123456789abcde- message", // txn id
            "20181213145100 INFO  checkout     0123456789abcdef:message", // message separator
            "20181313145100 INFO  checkout     0123456789abcdef message", // month 13
            "20181213145100 IN4O  checkout     0123456789abcdef message", // level
            "20181213145100       checkout     0123456789abcdef message", // no level
            "20181213145100 INFO               0123456789abcdef message", // no service
            "20181213145100 INFO  chéckout    0123456789abcdef message", // not ASCII
            "2018-12-13T14:51:00Z INFO checkout 0123456789abcdef message", // ISO time
        ] {
            assert_eq!(parse_legacy(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unparseable_records_pass_unchanged() {
        let p = parser(r#"{"keep_original": true}"#);
        let mut originals = vec![
            record("Exception in thread \"main\" java.lang.NullPointerException"),
            record(""),
            record("a=\"unterminated"),
        ];
        let mut not_a_string = record("");
        not_a_string.body = Some(Value::Int(42));
        originals.push(not_a_string);
        let mut no_body = record("");
        no_body.body = None;
        originals.push(no_body);
        let mut records = originals.clone();
        let tally = p.parse_records(&mut records);
        assert_eq!(records, originals);
        assert_eq!(
            tally,
            Tally {
                parsed: 0,
                unparsed: 5
            }
        );
    }

    #[test]
    fn formats_are_tried_in_the_configured_order() {
        let legacy_only = parser(r#"{"formats": ["legacy"]}"#);
        let mut r = record("level=info msg=hi");
        assert_eq!(legacy_only.parse_record(&mut r), None);
        let mut records = vec![
            record("level=info msg=hi"),
            record("20181213145100 INFO  checkout     0123456789abcdef hi"),
            record("plain text"),
        ];
        let tally = parser(r#"{"formats": ["legacy", "logfmt"]}"#).parse_records(&mut records);
        assert_eq!(
            tally,
            Tally {
                parsed: 2,
                unparsed: 1
            }
        );
    }

    #[test]
    fn configuration_defaults_and_validation() {
        let config: ParseConfig = Config::from_json("{}")
            .and_then(|c| c.parse())
            .expect("empty config is valid");
        assert_eq!(config.formats, [Format::Logfmt, Format::Legacy]);
        assert_eq!(config.attribute_prefix, "");
        assert!(config.msg_to_body);
        assert!(!config.keep_original);
        let load = |json: &str| Config::from_json(json).and_then(|c| ProtocolParse::new(&c));
        for bad in [
            r#"{"formats": []}"#,
            r#"{"formats": ["json"]}"#,
            r#"{"formats": ["logfmt", "logfmt"]}"#,
            r#"{"format": ["logfmt"]}"#,
            r#"{"msg_to_body": "yes"}"#,
        ] {
            assert!(
                matches!(load(bad), Err(Error::InvalidConfig(_))),
                "{bad} should be rejected"
            );
        }
    }
}
