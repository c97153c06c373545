//! Audit log: one structured JSON record per request, written to the proxy's log at info
//! level as a single line starting with `audit `:
//!
//! ```text
//! audit {"ts_ms":1700000000123,"method":"POST","path":"/orders","status":201,"duration_ms":12,
//!        "user":"alice","client_ip":"10.0.0.7","request_id":"5f1c…","request_bytes":312,
//!        "response_bytes":87}
//! ```
//!
//! (one line in the log; wrapped here.) How each field is found:
//!
//! * `ts_ms`, `method`, `path`, `user`, `request_id`: on the request headers (`clock::now()`,
//!   `:method`, `:path` without its query string unless `include_query`, the user header
//!   (`x-user-id` by default), `x-request-id`);
//! * `client_ip`: the `source.address` attribute without its port (`[::1]:5000` gives `::1`);
//! * `status`: the response's `:status`, or the `response.code` attribute when the filter saw no
//!   response headers (a reset, or a reply made before it);
//! * `duration_ms`: from the request headers to the end of the exchange (`on-done`); the
//!   `request.duration` attribute when the filter saw no request headers (a filter before it
//!   answered), in which case the request fields come from the `request.*` and
//!   `source.address` attributes too;
//! * `request_bytes` / `response_bytes`: the `request.size` / `response.size` attributes (body
//!   bytes), else the `content-length` header.
//!
//! A field that is not known is `null`; the record always has every key. Strings are JSON-escaped,
//! so a header value cannot forge a second record.
//!
//! Metrics: `audit_requests{status_class="2xx"|…|"none"}` (counter) and `audit_duration_ms`
//! (histogram).
//!
//! ```json
//! {"user_header": "x-user-id", "include_query": false}
//! ```

use serde::{Deserialize, Serialize};
use weft_guest::{Action, Config, Error, HttpFilter, Plugin, clock, http, metrics};

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The request header with the authenticated user's id (default `x-user-id`).
    pub user_header: String,
    /// Log the query string with the path (default false: queries often carry tokens and PII).
    pub include_query: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            user_header: "x-user-id".into(),
            include_query: false,
        }
    }
}

/// One audit record: the JSON written after `audit `. Field order is the output order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// When the request headers arrived, in ms since the Unix epoch.
    pub ts_ms: Option<u64>,
    /// The request method.
    pub method: Option<String>,
    /// The request path (without the query string unless configured).
    pub path: Option<String>,
    /// The response status code.
    pub status: Option<u16>,
    /// From the request headers to the end of the exchange, in ms.
    pub duration_ms: Option<u64>,
    /// The user id from the configured header.
    pub user: Option<String>,
    /// The client's address, without the port.
    pub client_ip: Option<String>,
    /// The proxy's request id (`x-request-id`).
    pub request_id: Option<String>,
    /// Request body bytes.
    pub request_bytes: Option<u64>,
    /// Response body bytes.
    pub response_bytes: Option<u64>,
}

impl Record {
    /// The log line: `audit ` and the record as one line of JSON.
    pub fn line(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        format!("audit {}", serde_json::to_string(self).unwrap_or_default())
    }

    /// The `status_class` label: `2xx`, `4xx`, … or `none`.
    pub fn status_class(&self) -> String {
        match self.status {
            Some(s @ 100..=599) => format!("{}xx", s / 100),
            _ => "none".into(),
        }
    }
}

/// The per-stream state: the record being filled in and the start time.
#[derive(Debug, Default)]
pub struct Stream {
    /// The record so far.
    pub record: Record,
    /// `clock::now()` at the request headers, ns.
    pub start_ns: Option<u64>,
}

/// An address without its port: `10.0.0.1:5000` → `10.0.0.1`, `[::1]:5000` → `::1`. A bare
/// IPv6 address (several colons, no brackets) or an address without a port is returned as is.
pub fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(address, |(host, _)| host);
    }
    match address.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => address,
    }
}

/// The path to log: `:path` without its query string (and fragment) unless `include_query`.
pub fn log_path(path: &str, include_query: bool) -> &str {
    if include_query {
        path
    } else {
        path.split(['?', '#']).next().unwrap_or(path)
    }
}

/// Whole milliseconds between two clock readings in ns (0 if the clock went backwards).
pub fn elapsed_ms(start_ns: u64, end_ns: u64) -> u64 {
    end_ns.saturating_sub(start_ns) / 1_000_000
}

/// A non-negative integer attribute or header value.
fn parse_u64(value: Option<String>) -> Option<u64> {
    value.and_then(|v| v.trim().parse().ok())
}

/// An integer attribute, if known and not negative.
fn property_u64(path: &str) -> Option<u64> {
    http::property_i64(path).and_then(|v| u64::try_from(v).ok())
}

/// The filter.
#[derive(Debug)]
pub struct AuditLog {
    settings: Settings,
}

impl Plugin for AuditLog {
    fn new(config: &Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if settings.user_header.is_empty() {
            return Err(Error::InvalidConfig(
                "audit-log: `user_header` must not be empty".into(),
            ));
        }
        Ok(AuditLog { settings })
    }
}

impl HttpFilter for AuditLog {
    type Stream = Stream;

    fn new_stream(&mut self) -> Stream {
        Stream::default()
    }

    fn on_request_headers(&mut self, s: &mut Stream, _: u32, _: bool) -> Action {
        let now = clock::now();
        s.start_ns = Some(now);
        let r = &mut s.record;
        r.ts_ms = Some(now / 1_000_000);
        r.method = http::request_header(":method");
        r.path = http::request_header(":path")
            .map(|p| log_path(&p, self.settings.include_query).to_string());
        r.user = http::request_header(&self.settings.user_header).filter(|u| !u.is_empty());
        r.client_ip = http::property_str("source.address").map(|a| strip_port(&a).to_string());
        r.request_id = http::request_header("x-request-id");
        r.request_bytes = parse_u64(http::request_header("content-length"));
        Action::Continue
    }

    fn on_response_headers(&mut self, s: &mut Stream, _: u32, _: bool) -> Action {
        s.record.status =
            parse_u64(http::response_header(":status")).and_then(|v| u16::try_from(v).ok());
        s.record.response_bytes = parse_u64(http::response_header("content-length"));
        Action::Continue
    }

    fn on_done(&mut self, s: &mut Stream) {
        let r = &mut s.record;
        if s.start_ns.is_none() {
            // The request headers never reached this filter (one before it answered, or the
            // client went away): the proxy's attributes still describe the request.
            r.ts_ms = property_u64("request.time").map(|ns| ns / 1_000_000);
            r.method = http::property_str("request.method");
            r.path = http::property_str("request.path")
                .map(|p| log_path(&p, self.settings.include_query).to_string());
            let user_path = ["request", "headers", self.settings.user_header.as_str()];
            r.user = http::get_property(&user_path.map(String::from))
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|u| !u.is_empty());
            r.client_ip = http::property_str("source.address").map(|a| strip_port(&a).to_string());
            r.request_id = http::property_str("request.id");
        }
        if r.status.is_none() {
            r.status = property_u64("response.code").and_then(|c| u16::try_from(c).ok());
        }
        r.duration_ms = match s.start_ns {
            Some(start) => Some(elapsed_ms(start, clock::now())),
            None => property_u64("request.duration").map(|ns| ns / 1_000_000),
        };
        // The proxy's body counts are exact; content-length is the fallback.
        if let Some(n) = property_u64("request.size") {
            r.request_bytes = Some(n);
        }
        if let Some(n) = property_u64("response.size") {
            r.response_bytes = Some(n);
        }
        weft_guest::log::info(&r.line());
        metrics::counter_add(
            "audit_requests",
            &[("status_class".into(), r.status_class())],
            1,
        );
        if let Some(ms) = r.duration_ms {
            metrics::histogram_record("audit_duration_ms", &[], ms);
        }
    }
}

weft_guest::export_http_filter!(AuditLog);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_one_line_of_json_with_every_key() {
        let r = Record {
            ts_ms: Some(1_700_000_000_123),
            method: Some("POST".into()),
            path: Some("/orders".into()),
            status: Some(201),
            duration_ms: Some(12),
            user: Some("alice".into()),
            client_ip: Some("10.0.0.7".into()),
            request_id: None,
            request_bytes: Some(312),
            response_bytes: None,
        };
        assert_eq!(
            r.line(),
            r#"audit {"ts_ms":1700000000123,"method":"POST","path":"/orders","status":201,"duration_ms":12,"user":"alice","client_ip":"10.0.0.7","request_id":null,"request_bytes":312,"response_bytes":null}"#
        );
    }

    #[test]
    fn header_values_cannot_break_the_line() {
        let r = Record {
            user: Some("mallory\"}\naudit {\"user\":\"admin".into()),
            ..Record::default()
        };
        let line = r.line();
        assert!(!line.contains('\n'), "{line}");
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("audit ").expect("prefix")).expect("JSON");
        assert_eq!(json["user"], "mallory\"}\naudit {\"user\":\"admin");
    }

    #[test]
    fn status_classes() {
        let class = |status| {
            Record {
                status,
                ..Record::default()
            }
            .status_class()
        };
        assert_eq!(class(Some(200)), "2xx");
        assert_eq!(class(Some(304)), "3xx");
        assert_eq!(class(Some(404)), "4xx");
        assert_eq!(class(Some(503)), "5xx");
        assert_eq!(class(Some(0)), "none");
        assert_eq!(class(None), "none");
    }

    #[test]
    fn ports_are_stripped_from_ipv4_and_bracketed_ipv6() {
        assert_eq!(strip_port("10.0.0.1:52344"), "10.0.0.1");
        assert_eq!(strip_port("10.0.0.1"), "10.0.0.1");
        assert_eq!(strip_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(strip_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(strip_port("[::1"), "[::1");
    }

    #[test]
    fn queries_are_left_out_unless_asked_for() {
        assert_eq!(log_path("/search?q=secret&token=x", false), "/search");
        assert_eq!(log_path("/a#frag", false), "/a");
        assert_eq!(log_path("/search?q=1", true), "/search?q=1");
        assert_eq!(log_path("/plain", false), "/plain");
    }

    #[test]
    fn elapsed_time_is_whole_milliseconds() {
        assert_eq!(elapsed_ms(1_000_000_000, 1_012_999_999), 12);
        assert_eq!(
            elapsed_ms(5, 1),
            0,
            "clock going backwards is 0, not a wrap"
        );
    }

    #[test]
    fn configuration_defaults_and_validation() {
        let p = AuditLog::new(&Config::from_json("{}").unwrap()).unwrap();
        assert_eq!(p.settings.user_header, "x-user-id");
        assert!(!p.settings.include_query);
        assert!(AuditLog::new(&Config::from_json(r#"{"user_header": ""}"#).unwrap()).is_err());
        let e = AuditLog::new(&Config::from_json(r#"{"header": "x"}"#).unwrap()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("header")),
            "{e:?}"
        );
    }
}
