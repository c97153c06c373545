//! Masks personal data in HTTP request and response bodies, with the detectors of the
//! `pii-mask` telemetry plugin (the `weft-pii-scan` crate, guests/lib/pii-scan):
//!
//! * payment cards: 13 to 19 digits, optionally grouped by single spaces or dashes, first digit
//!   2 to 6, Luhn-valid: `4111 1111 1111 1111` becomes `4111 **** **** 1111`;
//! * mainland-China mobile numbers, `1[3-9]` and 9 digits (optionally after `86`):
//!   `13812345678` becomes `138****5678`;
//! * e-mail addresses: `alice@example.com` becomes `a***@example.com`.
//!
//! **JSON bodies** (`content-type` `application/json` or `…+json`) are parsed; every string value
//! at any depth is masked (object keys are not), and so is an integer that is, as a whole, a card
//! or phone number (it becomes a masked string). If something was masked the document is written
//! back compactly, with object keys in sorted order; if nothing was, the body is passed on
//! byte for byte. A body that does not parse as JSON is scanned as text.
//! **Other bodies** are scanned as raw bytes (card and phone digits are replaced one for one,
//! so non-UTF-8 text survives). Bodies with a `content-encoding` other than `identity`
//! (compressed) and binary types (`image/*`, `audio/*`, `video/*`, `font/*`,
//! `application/octet-stream`, `application/grpc*`, protobuf, zip, gzip, pdf, wasm) are passed
//! unmasked and counted in `pii_skipped`.
//!
//! How: to change a body and its `content-length`, the filter holds the headers until the whole
//! body is buffered. `on_*_headers` returns `pause` when a body follows, `on_*_body` returns
//! `pause` until the end of the stream, then the body is read, masked, written back, and
//! `content-length` (when the message has one) is set to the new length. A body larger than
//! `max_body_bytes` (by its `content-length`, or once more than that is buffered) is passed on
//! unmasked and counted in `pii_skipped`.
//!
//! ```json
//! {"request": true, "response": true, "max_body_bytes": 1048576}
//! ```

use serde::Deserialize;
use serde_json::Value;
use weft_guest::http::{self, Body, HeaderMap};
use weft_guest::{Action, Config, Error, HttpFilter, Plugin, metrics};
use weft_pii_scan::{Detectors, Hit, Kind, MIN_CARD_DIGITS};

/// Leading card digits left visible.
const KEEP_FIRST: usize = 4;
/// Trailing card digits left visible.
const KEEP_LAST: usize = 4;
// Every card keeps at least one hidden digit.
const _: () = assert!(KEEP_FIRST + KEEP_LAST < MIN_CARD_DIGITS);
/// What replaces each hidden card or phone digit.
const MASK_CHAR: u8 = b'*';
/// What replaces the local part of an e-mail address after its first character.
const EMAIL_MASK: &[u8] = b"***";

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Mask request bodies (default true).
    pub request: bool,
    /// Mask response bodies (default true).
    pub response: bool,
    /// Bodies larger than this are passed on unmasked (default 1 MiB). The proxy buffers up to
    /// this much per stream and direction.
    pub max_body_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            request: true,
            response: true,
            max_body_bytes: 1 << 20,
        }
    }
}

/// What was masked, by detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Card numbers masked.
    pub cards: u64,
    /// Phone numbers masked.
    pub phones: u64,
    /// E-mail addresses masked.
    pub emails: u64,
}

impl Tally {
    /// The counts with their `kind` label.
    pub fn by_kind(&self) -> [(&'static str, u64); 3] {
        [
            ("card", self.cards),
            ("phone", self.phones),
            ("email", self.emails),
        ]
    }

    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Card => self.cards += 1,
            Kind::Phone => self.phones += 1,
            Kind::Email => self.emails += 1,
        }
    }
}

/// How a body is treated, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Parsed as JSON (scanned as text if it does not parse).
    Json,
    /// Scanned as raw text.
    Text,
    /// Passed on unmasked; the reason labels `pii_skipped`.
    Skip(&'static str),
}

/// Media types that are binary (never scanned), besides `image/`, `audio/`, `video/`, `font/`.
const BINARY_TYPES: [&str; 8] = [
    "application/octet-stream",
    "application/grpc",
    "application/protobuf",
    "application/x-protobuf",
    "application/zip",
    "application/gzip",
    "application/pdf",
    "application/wasm",
];

/// Classifies a body by its `content-type` and `content-encoding` headers.
pub fn classify(content_type: Option<&str>, content_encoding: Option<&str>) -> BodyKind {
    if let Some(enc) = content_encoding.map(str::trim)
        && !enc.is_empty()
        && !enc.eq_ignore_ascii_case("identity")
    {
        // Compressed bytes: scanning them finds nothing real and could corrupt them.
        return BodyKind::Skip("encoded");
    }
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media == "application/json" || media.ends_with("+json") {
        return BodyKind::Json;
    }
    let binary_family = ["image/", "audio/", "video/", "font/"]
        .iter()
        .any(|p| media.starts_with(p));
    // `application/grpc+proto`, `application/grpc-web` and the like count with their base.
    let binary_type = BINARY_TYPES.iter().any(|t| {
        media == *t
            || media
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with(['+', '-']))
    });
    if binary_family || binary_type {
        BodyKind::Skip("binary")
    } else {
        BodyKind::Text
    }
}

/// The masking: the built-in detectors with fixed masks (`*` per digit, `***` for e-mails).
#[derive(Debug)]
pub struct BodyMasker {
    detectors: Detectors,
}

impl Default for BodyMasker {
    fn default() -> Self {
        BodyMasker {
            detectors: Detectors {
                cards: true,
                phones: true,
                emails: true,
                keep_first: KEEP_FIRST,
                keep_last: KEEP_LAST,
            },
        }
    }
}

impl BodyMasker {
    /// Masks a whole body of `kind`; returns the new body (`None`: nothing changed, pass the
    /// original on) and what was masked.
    pub fn mask_body(&self, kind: BodyKind, body: &[u8]) -> (Option<Vec<u8>>, Tally) {
        let mut tally = Tally::default();
        let out = match kind {
            BodyKind::Skip(_) => None,
            BodyKind::Json => match serde_json::from_slice::<Value>(body) {
                Ok(mut doc) => {
                    if self.mask_json(&mut doc, &mut tally) {
                        // A `Value` always serializes; on the impossible error, pass nothing on
                        // rather than the unmasked body.
                        Some(serde_json::to_vec(&doc).unwrap_or_default())
                    } else {
                        None
                    }
                }
                Err(_) => self.mask_bytes(body, &mut tally),
            },
            BodyKind::Text => self.mask_bytes(body, &mut tally),
        };
        (out, tally)
    }

    /// Masks raw bytes; `None` when nothing changed.
    pub fn mask_bytes(&self, b: &[u8], tally: &mut Tally) -> Option<Vec<u8>> {
        let mut hits = Vec::new();
        self.detectors.find(b, &mut hits);
        if hits.is_empty() {
            return None;
        }
        apply(b, &hits, tally)
    }

    /// Masks every string (and every integer that is a card or phone number as a whole) in a
    /// JSON document, in place; returns whether anything changed.
    pub fn mask_json(&self, value: &mut Value, tally: &mut Tally) -> bool {
        match value {
            Value::String(s) => match self.mask_bytes(s.as_bytes(), tally) {
                // Replacements are ASCII and hits sit next to ASCII bytes: still UTF-8.
                Some(masked) => match String::from_utf8(masked) {
                    Ok(masked) => {
                        *s = masked;
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            },
            Value::Number(n) if n.is_u64() => {
                let digits = n.to_string();
                let mut hits = Vec::new();
                self.detectors.find(digits.as_bytes(), &mut hits);
                match hits.as_slice() {
                    [hit] if hit.start == 0 && hit.end == digits.len() => {
                        match apply(digits.as_bytes(), &hits, tally)
                            .and_then(|m| String::from_utf8(m).ok())
                        {
                            Some(masked) => {
                                *value = Value::String(masked);
                                true
                            }
                            None => false,
                        }
                    }
                    _ => false,
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, v| self.mask_json(v, tally) | changed),
            Value::Object(map) => map
                .values_mut()
                .fold(false, |changed, v| self.mask_json(v, tally) | changed),
            _ => false,
        }
    }
}

/// Builds the masked copy of `b` from the detectors' `hits` (ordered, not overlapping), or
/// `None` if no hit changes anything (an address already masked). Card and phone digits are
/// replaced one for one and their separators kept; an e-mail's local part after its first
/// character becomes `***`.
fn apply(b: &[u8], hits: &[Hit], tally: &mut Tally) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len() + EMAIL_MASK.len());
    let mut pos = 0;
    let mut changed = false;
    for hit in hits {
        match hit.kind {
            Kind::Email => {
                if &b[hit.mask_from..hit.mask_to] == EMAIL_MASK {
                    continue;
                }
                out.extend_from_slice(&b[pos..hit.mask_from]);
                out.extend_from_slice(EMAIL_MASK);
                pos = hit.mask_to;
            }
            Kind::Card | Kind::Phone => {
                out.extend_from_slice(&b[pos..hit.start]);
                let mut digit = 0;
                for &c in &b[hit.start..hit.end] {
                    if c.is_ascii_digit() {
                        let hidden = (hit.mask_from..hit.mask_to).contains(&digit);
                        out.push(if hidden { MASK_CHAR } else { c });
                        digit += 1;
                    } else {
                        out.push(c);
                    }
                }
                pos = hit.end;
            }
        }
        tally.count(hit.kind);
        changed = true;
    }
    if !changed {
        return None;
    }
    out.extend_from_slice(&b[pos..]);
    Some(out)
}

/// Request or response: which header map, body and label a callback acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The request.
    Request,
    /// The response.
    Response,
}

impl Direction {
    /// The `direction` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }

    fn headers(self) -> HeaderMap {
        match self {
            Direction::Request => HeaderMap::RequestHeaders,
            Direction::Response => HeaderMap::ResponseHeaders,
        }
    }

    fn body(self) -> Body {
        match self {
            Direction::Request => Body::Request,
            Direction::Response => Body::Response,
        }
    }
}

/// Where one direction of a stream is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not buffering: headers not seen yet, no body, or passed on unmasked.
    #[default]
    Pass,
    /// Headers held, body being buffered; it will be masked as this kind.
    Buffering(BodyKind),
    /// Masked and passed on.
    Done,
}

/// One direction of a stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Side {
    /// Where it is.
    pub phase: Phase,
    /// The body size the last body callback reported (what trailers then mask).
    pub size: u32,
}

/// The per-stream state.
#[derive(Debug, Default)]
pub struct Stream {
    request: Side,
    response: Side,
}

impl Stream {
    fn side(&mut self, dir: Direction) -> &mut Side {
        match dir {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }
}

/// What the headers callback decided, before any host call ([`HttpPiiMask::on_headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersPlan {
    /// No body, or this direction is off: continue.
    Pass,
    /// Pass the body on unmasked and count it as skipped for this reason.
    Skip(&'static str),
    /// Hold the headers and buffer the body as this kind.
    Buffer(BodyKind),
}

/// The filter.
#[derive(Debug)]
pub struct HttpPiiMask {
    settings: Settings,
    masker: BodyMasker,
}

impl HttpPiiMask {
    /// The filter for `settings`.
    pub fn from_settings(settings: Settings) -> Self {
        HttpPiiMask {
            settings,
            masker: BodyMasker::default(),
        }
    }

    /// The masking this filter applies.
    pub fn masker(&self) -> &BodyMasker {
        &self.masker
    }

    /// Decides what to do with a body from its headers.
    pub fn plan(
        &self,
        dir: Direction,
        end_of_stream: bool,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        content_length: Option<&str>,
    ) -> HeadersPlan {
        let enabled = match dir {
            Direction::Request => self.settings.request,
            Direction::Response => self.settings.response,
        };
        if !enabled || end_of_stream {
            return HeadersPlan::Pass;
        }
        match classify(content_type, content_encoding) {
            BodyKind::Skip(reason) => HeadersPlan::Skip(reason),
            _ if content_length
                .and_then(|l| l.trim().parse::<u64>().ok())
                .is_some_and(|l| l > self.settings.max_body_bytes) =>
            {
                HeadersPlan::Skip("too_large")
            }
            kind => HeadersPlan::Buffer(kind),
        }
    }

    /// Whether a buffered body of `size` bytes is over the limit.
    pub fn too_large(&self, size: u32) -> bool {
        u64::from(size) > self.settings.max_body_bytes
    }

    fn on_headers(&mut self, stream: &mut Stream, dir: Direction, eos: bool) -> Action {
        let map = dir.headers();
        let header = |name| http::get_header(map, name);
        let plan = self.plan(
            dir,
            eos,
            header("content-type").as_deref(),
            header("content-encoding").as_deref(),
            header("content-length").as_deref(),
        );
        match plan {
            HeadersPlan::Pass => Action::Continue,
            HeadersPlan::Skip(reason) => {
                count_skipped(dir, reason);
                Action::Continue
            }
            HeadersPlan::Buffer(kind) => {
                stream.side(dir).phase = Phase::Buffering(kind);
                Action::Pause
            }
        }
    }

    fn on_body(&mut self, stream: &mut Stream, dir: Direction, size: u32, eos: bool) -> Action {
        let side = stream.side(dir);
        let Phase::Buffering(kind) = side.phase else {
            return Action::Continue;
        };
        side.size = size;
        if self.too_large(size) {
            // Stop buffering: what is held so far and the rest go on unmasked.
            side.phase = Phase::Pass;
            count_skipped(dir, "too_large");
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        side.phase = Phase::Done;
        self.finish(dir, kind, size)
    }

    /// Trailers end the body: mask what was buffered.
    fn on_trailers(&mut self, stream: &mut Stream, dir: Direction) -> Action {
        let side = stream.side(dir);
        let Phase::Buffering(kind) = side.phase else {
            return Action::Continue;
        };
        side.phase = Phase::Done;
        self.finish(dir, kind, side.size)
    }

    /// Reads the whole buffered body, masks it, writes it back and fixes `content-length`.
    fn finish(&self, dir: Direction, kind: BodyKind, size: u32) -> Action {
        let body = http::body(dir.body(), size);
        let (masked, tally) = self.masker.mask_body(kind, &body);
        if let Some(masked) = masked {
            http::set_body(dir.body(), size, &masked);
            // Only a message that had a length gets one: chunked messages stay chunked.
            if http::get_header(dir.headers(), "content-length").is_some() {
                http::set_header(dir.headers(), "content-length", &masked.len().to_string());
            }
        }
        for (kind, n) in tally.by_kind() {
            if n > 0 {
                metrics::counter_add(
                    "pii_masked",
                    &[
                        ("kind".into(), kind.into()),
                        ("direction".into(), dir.label().into()),
                    ],
                    n,
                );
            }
        }
        Action::Continue
    }
}

/// Counts a body passed on unmasked in `pii_skipped{direction, reason}`.
fn count_skipped(dir: Direction, reason: &str) {
    metrics::counter_add(
        "pii_skipped",
        &[
            ("direction".into(), dir.label().into()),
            ("reason".into(), reason.into()),
        ],
        1,
    );
}

impl Plugin for HttpPiiMask {
    fn new(config: &Config) -> Result<Self, Error> {
        Ok(HttpPiiMask::from_settings(config.parse()?))
    }
}

impl HttpFilter for HttpPiiMask {
    type Stream = Stream;

    fn new_stream(&mut self) -> Stream {
        Stream::default()
    }

    fn on_request_headers(&mut self, s: &mut Stream, _: u32, eos: bool) -> Action {
        self.on_headers(s, Direction::Request, eos)
    }

    fn on_request_body(&mut self, s: &mut Stream, size: u32, eos: bool) -> Action {
        self.on_body(s, Direction::Request, size, eos)
    }

    fn on_request_trailers(&mut self, s: &mut Stream, _: u32) -> Action {
        self.on_trailers(s, Direction::Request)
    }

    fn on_response_headers(&mut self, s: &mut Stream, _: u32, eos: bool) -> Action {
        self.on_headers(s, Direction::Response, eos)
    }

    fn on_response_body(&mut self, s: &mut Stream, size: u32, eos: bool) -> Action {
        self.on_body(s, Direction::Response, size, eos)
    }

    fn on_response_trailers(&mut self, s: &mut Stream, _: u32) -> Action {
        self.on_trailers(s, Direction::Response)
    }
}

weft_guest::export_http_filter!(HttpPiiMask);

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(kind: BodyKind, body: &str) -> (Option<String>, Tally) {
        let (out, tally) = BodyMasker::default().mask_body(kind, body.as_bytes());
        (out.map(|b| String::from_utf8(b).expect("utf-8")), tally)
    }

    fn filter(json: &str) -> HttpPiiMask {
        HttpPiiMask::new(&Config::from_json(json).expect("json")).expect("valid")
    }

    #[test]
    fn text_bodies_mask_cards_phones_and_emails() {
        let (out, tally) = mask(
            BodyKind::Text,
            "card=4111 1111 1111 1111&phone=13812345678&mail=alice@example.com&order=4111111111111112",
        );
        assert_eq!(
            out.as_deref(),
            Some(
                "card=4111 **** **** 1111&phone=138****5678&mail=a***@example.com&order=4111111111111112"
            )
        );
        assert_eq!(
            tally,
            Tally {
                cards: 1,
                phones: 1,
                emails: 1
            }
        );
    }

    #[test]
    fn a_body_without_pii_is_not_copied() {
        assert_eq!(
            mask(BodyKind::Text, "status 200, id 12345, v1.2.3"),
            (None, Tally::default())
        );
        // Already masked: nothing to do again.
        assert_eq!(mask(BodyKind::Text, "a***@example.com 138****5678").0, None);
        let json = "{ \"b\": 1,\n  \"a\": \"hello\" }";
        assert_eq!(
            mask(BodyKind::Json, json).0,
            None,
            "unchanged JSON is passed byte for byte"
        );
    }

    #[test]
    fn json_string_values_are_masked_at_any_depth_and_keys_are_not() {
        let body = r#"{"user": {"email": "bob@example.org", "phones": ["13912345678", "n/a"]},
                       "alice@example.com": "key stays", "note": "pay 5555-5555-5555-4444 now",
                       "count": 3, "ok": true, "none": null}"#;
        let (out, tally) = mask(BodyKind::Json, body);
        let got: Value = serde_json::from_str(&out.expect("changed")).expect("still JSON");
        let want: Value = serde_json::json!({
            "user": {"email": "b***@example.org", "phones": ["139****5678", "n/a"]},
            "alice@example.com": "key stays", "note": "pay 5555-****-****-4444 now",
            "count": 3, "ok": true, "none": null
        });
        assert_eq!(got, want);
        assert_eq!(
            tally,
            Tally {
                cards: 1,
                phones: 1,
                emails: 1
            }
        );
    }

    #[test]
    fn the_readme_example_holds() {
        let body =
            r#"{"email": "bob@example.org", "card": "5555-5555-5555-4444", "phone": 13912345678}"#;
        assert_eq!(
            mask(BodyKind::Json, body).0.as_deref(),
            Some(
                r#"{"card":"5555-****-****-4444","email":"b***@example.org","phone":"139****5678"}"#
            )
        );
    }

    #[test]
    fn json_escapes_are_decoded_before_scanning() {
        // `\u0040` is `@`: a raw scan would miss this address.
        let (out, tally) = mask(BodyKind::Json, r#"{"to": "carol\u0040example.com"}"#);
        assert_eq!(out.as_deref(), Some(r#"{"to":"c***@example.com"}"#));
        assert_eq!(tally.emails, 1);
    }

    #[test]
    fn json_integers_that_are_cards_or_phones_become_masked_strings() {
        let (out, tally) = mask(
            BodyKind::Json,
            r#"{"pan": 4111111111111111, "tel": 13812345678, "id": 4111111111111112, "n": 12}"#,
        );
        let got: Value = serde_json::from_str(&out.expect("changed")).expect("JSON");
        assert_eq!(
            got,
            serde_json::json!({"pan": "4111********1111", "tel": "138****5678",
                               "id": 4111111111111112u64, "n": 12})
        );
        assert_eq!(
            tally,
            Tally {
                cards: 1,
                phones: 1,
                emails: 0
            }
        );
    }

    #[test]
    fn invalid_json_is_scanned_as_text() {
        let (out, tally) = mask(BodyKind::Json, r#"{"email": "dave@example.com", oops"#);
        assert_eq!(
            out.as_deref(),
            Some(r#"{"email": "d***@example.com", oops"#)
        );
        assert_eq!(tally.emails, 1);
    }

    #[test]
    fn non_utf8_text_keeps_its_other_bytes() {
        let mut body = b"name=\xe9ric&tel=13812345678".to_vec();
        let (out, _) = BodyMasker::default().mask_body(BodyKind::Text, &body);
        body.splice(body.len() - 8..body.len() - 4, *b"****");
        assert_eq!(out, Some(body));
    }

    #[test]
    fn content_types_pick_json_text_or_skip() {
        assert_eq!(classify(Some("application/json"), None), BodyKind::Json);
        assert_eq!(
            classify(Some("Application/JSON; charset=utf-8"), None),
            BodyKind::Json
        );
        assert_eq!(
            classify(Some("application/problem+json"), None),
            BodyKind::Json
        );
        assert_eq!(classify(Some("text/plain"), None), BodyKind::Text);
        assert_eq!(
            classify(Some("application/x-www-form-urlencoded"), None),
            BodyKind::Text
        );
        assert_eq!(classify(None, None), BodyKind::Text);
        assert_eq!(classify(Some("image/png"), None), BodyKind::Skip("binary"));
        assert_eq!(
            classify(Some("application/grpc+proto"), None),
            BodyKind::Skip("binary")
        );
        assert_eq!(
            classify(Some("application/grpc-web"), None),
            BodyKind::Skip("binary")
        );
        assert_eq!(classify(Some("application/grpcfoo"), None), BodyKind::Text);
        assert_eq!(
            classify(Some("application/json"), Some("gzip")),
            BodyKind::Skip("encoded")
        );
        assert_eq!(
            classify(Some("application/json"), Some("identity")),
            BodyKind::Json
        );
    }

    #[test]
    fn headers_decide_whether_to_buffer() {
        let f = filter(r#"{"response": false, "max_body_bytes": 100}"#);
        let json = Some("application/json");
        assert_eq!(
            f.plan(Direction::Request, false, json, None, Some("100")),
            HeadersPlan::Buffer(BodyKind::Json)
        );
        assert_eq!(
            f.plan(Direction::Request, true, json, None, None),
            HeadersPlan::Pass,
            "no body"
        );
        assert_eq!(
            f.plan(Direction::Request, false, json, None, Some("101")),
            HeadersPlan::Skip("too_large")
        );
        assert_eq!(
            f.plan(Direction::Request, false, None, None, None),
            HeadersPlan::Buffer(BodyKind::Text),
            "chunked, no length: buffered and checked as it grows"
        );
        assert_eq!(
            f.plan(Direction::Request, false, json, Some("br"), None),
            HeadersPlan::Skip("encoded")
        );
        assert_eq!(
            f.plan(Direction::Response, false, json, None, None),
            HeadersPlan::Pass
        );
        assert!(f.too_large(101));
        assert!(!f.too_large(100));
    }

    #[test]
    fn configuration_defaults_and_typos() {
        let s: Settings = Config::from_json("{}").unwrap().parse().unwrap();
        assert!(s.request && s.response);
        assert_eq!(s.max_body_bytes, 1_048_576);
        let e =
            HttpPiiMask::new(&Config::from_json(r#"{"max_body": 5}"#).unwrap()).expect_err("typo");
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("max_body")),
            "{e:?}"
        );
    }
}
