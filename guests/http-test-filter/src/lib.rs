//! The proxy tests' filter. Each behaviour is asked for by a request header, so one component
//! (twice in a chain, under two names) covers every test:
//!
//! | request header            | what the filter does                                             |
//! |---------------------------|------------------------------------------------------------------|
//! | (always)                  | adds `x-order: <plugin_name>` to the request and the response; writes `x-seen-*` request headers from `get-property` |
//! | `x-test-respond: <code>`  | returns `respond` with `<code>` from `on-request-headers`        |
//! | `x-test-send-local: <code>` | calls `send-local-response` and returns `pause`               |
//! | `x-test-decide: 1`        | pauses on the headers, buffers the body, decides at its end: `deny` in the body → 403, else `x-body-decision: allow` and `x-body-size` on the held headers |
//! | `x-test-replace: <text>`  | replaces the request body with `<text>` at end of stream         |
//! | `x-test-replace-response: <text>` | buffers the response body and replaces it with `<text>`  |
//! | `x-test-respond-response: <code>` | answers `<code>` from `on-response-headers`              |
//! | `x-test-fault: panic\|loop` | traps in `on-request-headers` (`only: <name>` limits it to one filter) |
//! | `x-test-call: 1`          | `dispatch-http-call` to the configured `call` upstream           |
//! | `x-request-marker: <m>`   | keeps `<m>` in the stream's state, echoes it as `x-stream-marker` on the response |
//!
//! Configuration: `{"tick_ms": 0, "call": "host:port", "only": "<plugin name>"}`. Metrics:
//! `done{code}` per `on-done` (with `duration: yes` when `request.duration` is set), `ticks`,
//! `call_responses{status}`.

use serde::Deserialize;
use weft_guest::http::{self, Body, HeaderMap};
use weft_guest::{Action, Config, Error, HttpFilter, LocalResponse, Plugin, metrics};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    tick_ms: u32,
    call: Option<String>,
    only: Option<String>,
}

pub struct TestFilter {
    settings: Settings,
    name: String,
}

#[derive(Default)]
pub struct Stream {
    marker: Option<String>,
    decide: bool,
    replace: Option<String>,
    replace_response: Option<String>,
}

impl Plugin for TestFilter {
    fn new(config: &Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if settings.tick_ms > 0 {
            http::set_tick_period(settings.tick_ms);
        }
        let name = http::property_str("plugin_name").unwrap_or_default();
        Ok(TestFilter { settings, name })
    }
}

fn header(name: &str) -> Option<String> {
    http::request_header(name)
}

impl TestFilter {
    fn mine(&self) -> bool {
        self.settings.only.as_deref().is_none_or(|o| o == self.name)
    }
}

impl HttpFilter for TestFilter {
    type Stream = Stream;

    fn new_stream(&mut self) -> Stream {
        Stream::default()
    }

    fn on_request_headers(&mut self, s: &mut Stream, count: u32, eos: bool) -> Action {
        s.marker = header("x-request-marker");
        s.replace = header("x-test-replace");
        s.replace_response = header("x-test-replace-response");
        http::add_header(HeaderMap::RequestHeaders, "x-order", &self.name);
        for (h, p) in [
            ("x-seen-url-path", "request.url_path"),
            ("x-seen-method", "request.method"),
            ("x-seen-id", "request.id"),
            ("x-seen-source", "source.address"),
            ("x-seen-protocol", "request.protocol"),
        ] {
            if let Some(v) = http::property_str(p) {
                http::set_request_header(h, &v);
            }
        }
        if let Some(port) = http::property_i64("destination.port") {
            http::set_request_header("x-seen-destination-port", &port.to_string());
        }
        http::set_request_header("x-seen-count", &count.to_string());
        http::set_request_header("x-seen-eos", if eos { "true" } else { "false" });

        if self.mine() {
            match header("x-test-fault").as_deref() {
                Some("panic") => panic!("x-test-fault: panic"),
                Some("loop") =>
                {
                    #[allow(clippy::empty_loop)]
                    loop {}
                }
                _ => {}
            }
            if let Some(code) = header("x-test-respond").and_then(|c| c.parse().ok()) {
                return Action::Respond(LocalResponse {
                    status: code,
                    headers: vec![("x-test-local".into(), "respond".into())],
                    body: b"denied by the test filter".to_vec(),
                    details: "test filter denied".into(),
                });
            }
            if let Some(code) = header("x-test-send-local").and_then(|c| c.parse().ok()) {
                http::send_local_response(
                    code,
                    &[("x-test-local".into(), "send".into())],
                    b"sent by the test filter",
                    "test_send_local",
                );
                return Action::Pause;
            }
            if header("x-test-call").is_some()
                && let Some(upstream) = &self.settings.call
            {
                let headers = [
                    (":method".to_string(), "GET".to_string()),
                    (":path".to_string(), "/callout".to_string()),
                    (":authority".to_string(), "callout".to_string()),
                ];
                if let Err(e) = http::dispatch_http_call(upstream, &headers, &[], 2000) {
                    http::set_request_header("x-call-error", &e);
                }
            }
            if header("x-test-decide").is_some() && !eos {
                s.decide = true;
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_request_body(&mut self, s: &mut Stream, size: u32, eos: bool) -> Action {
        if !self.mine() {
            return Action::Continue;
        }
        if eos && let Some(text) = &s.replace {
            http::set_body(Body::Request, size, text.as_bytes());
        }
        if s.decide {
            if !eos {
                return Action::Pause;
            }
            let body = http::body(Body::Request, size);
            if body.windows(4).any(|w| w == b"deny") {
                return Action::Respond(LocalResponse::json(
                    403,
                    r#"{"error":"denied by body"}"#,
                    "body_denied",
                ));
            }
            http::set_request_header("x-body-decision", "allow");
            http::set_request_header("x-body-size", &size.to_string());
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, s: &mut Stream, _count: u32, _eos: bool) -> Action {
        http::add_header(HeaderMap::ResponseHeaders, "x-order", &self.name);
        if let Some(m) = &s.marker {
            http::set_response_header("x-stream-marker", m);
        }
        if self.mine()
            && let Some(code) = header("x-test-respond-response").and_then(|c| c.parse().ok())
        {
            return Action::Respond(LocalResponse {
                status: code,
                headers: vec![("x-test-local".into(), "response".into())],
                body: b"replaced in the response".to_vec(),
                details: "test_response_replaced".into(),
            });
        }
        Action::Continue
    }

    fn on_response_body(&mut self, s: &mut Stream, size: u32, eos: bool) -> Action {
        if self.mine()
            && let Some(text) = &s.replace_response
        {
            if !eos {
                return Action::Pause;
            }
            http::set_body(Body::Response, size, text.as_bytes());
        }
        Action::Continue
    }

    fn on_done(&mut self, _s: &mut Stream) {
        let code = http::property_i64("response.code").unwrap_or(0).to_string();
        let duration = if http::property_i64("request.duration").is_some() {
            "yes"
        } else {
            "no"
        };
        metrics::counter_add(
            "done",
            &[("code".into(), code), ("duration".into(), duration.into())],
            1,
        );
    }

    fn on_tick(&mut self) {
        metrics::counter_add("ticks", &[], 1);
    }

    fn on_http_call_response(&mut self, _token: u32, status: u16, _body: Vec<u8>) {
        metrics::counter_add(
            "call_responses",
            &[("status".into(), status.to_string())],
            1,
        );
    }
}

weft_guest::export_http_filter!(TestFilter);
