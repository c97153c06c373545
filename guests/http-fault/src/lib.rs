//! A test fixture: an HTTP filter that misbehaves on purpose, so tests can see how a proxy
//! (weft's filter proxy, or Envoy with the adapted module) handles a guest that traps, hangs or
//! runs out of memory in the middle of a stream.
//!
//! A request *triggers* the fault when it has the `when_header` request header (any value;
//! `x-fault` by default), or always when `when_header` is `null`. The fault then happens in the
//! callback named by `on`:
//!
//! | `fault`   | what the filter does                                   | proxy should see   |
//! |-----------|--------------------------------------------------------|--------------------|
//! | `none`    | nothing                                                | the request passes |
//! | `panic`   | `panic!("fault injected")` (a wasm `unreachable` trap) | trap               |
//! | `loop`    | spins forever                                          | deadline / timeout |
//! | `oom`     | keeps allocating 1 MiB blocks until memory runs out    | trap (memory)      |
//! | `respond` | answers `418` with body `fault` (`text/plain`)         | a local response   |
//!
//! A request that does not trigger the fault gets the request header `x-http-fault: passed`.
//!
//! The filter also checks that per-stream state stays per stream: each stream stores its
//! request's `x-request-marker` header, and its response gets `x-stream-marker` set to the
//! stored value. Concurrent requests with different markers must each get their own back; a
//! mismatch means state leaked between streams.
//!
//! The panics here are the point of the plugin: nothing else should copy them.
//!
//! ```json
//! {"fault": "panic", "on": "request-headers", "when_header": "x-fault"}
//! ```

use serde::Deserialize;
use weft_guest::{Action, Config, Error, HttpFilter, LocalResponse, Plugin, http};

/// The fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// No fault.
    #[default]
    None,
    /// `panic!`.
    Panic,
    /// An endless loop.
    Loop,
    /// Allocate until memory runs out.
    Oom,
    /// A local `418` response.
    Respond,
}

/// The callback the fault happens in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// `on-request-headers`.
    #[default]
    RequestHeaders,
    /// `on-response-headers`.
    ResponseHeaders,
}

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The fault (default `none`).
    pub fault: Fault,
    /// Where it happens (default `request-headers`).
    pub on: Phase,
    /// The request header that triggers it (default `x-fault`); `null`: every request.
    pub when_header: Option<String>,
    /// Report this instance's linear-memory size, after every stream, as the gauge
    /// `memory_pages` labelled `vm=<id>` (an id drawn from the clock at init), so tests can see
    /// whether guest memory grows.
    pub report_memory: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fault: Fault::None,
            on: Phase::RequestHeaders,
            when_header: Some("x-fault".into()),
            report_memory: false,
        }
    }
}

/// The per-stream state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The request's `x-request-marker`, echoed as `x-stream-marker`.
    pub marker: Option<String>,
    /// Whether this request triggers the fault.
    pub triggered: bool,
}

/// The filter.
#[derive(Debug)]
pub struct HttpFault {
    settings: Settings,
    /// This instance's id for `report_memory` (drawn from the clock at the first report).
    vm: String,
}

impl HttpFault {
    /// Whether a request triggers the fault, given whether it has the trigger header.
    pub fn triggers(&self, has_trigger_header: bool) -> bool {
        self.settings.when_header.is_none() || has_trigger_header
    }

    /// The fault to inject at `phase` for a stream (`None`: go on normally).
    pub fn fault_at(&self, phase: Phase, stream: &Stream) -> Option<Fault> {
        (stream.triggered && self.settings.on == phase && self.settings.fault != Fault::None)
            .then_some(self.settings.fault)
    }
}

/// The local response of the `respond` fault.
pub fn teapot() -> LocalResponse {
    LocalResponse {
        status: 418,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"fault".to_vec(),
        details: "fault_injected".into(),
    }
}

/// Does `fault`. Only `respond` (and `none`) return.
pub fn inject(fault: Fault) -> Action {
    match fault {
        Fault::None => Action::Continue,
        Fault::Respond => Action::Respond(teapot()),
        Fault::Panic => panic!("fault injected"),
        Fault::Loop => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Fault::Oom => {
            // Blocks are filled (so the pages are really used) and kept alive in `hoard`.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
    }
}

impl Plugin for HttpFault {
    fn new(config: &Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if settings.when_header.as_deref() == Some("") {
            return Err(Error::InvalidConfig(
                "http-fault: `when_header` must be a header name or null".into(),
            ));
        }
        Ok(HttpFault {
            settings,
            vm: String::new(),
        })
    }
}

impl HttpFilter for HttpFault {
    type Stream = Stream;

    fn new_stream(&mut self) -> Stream {
        Stream::default()
    }

    fn on_request_headers(&mut self, s: &mut Stream, _: u32, _: bool) -> Action {
        s.marker = http::request_header("x-request-marker");
        let has_header = self
            .settings
            .when_header
            .as_deref()
            .is_some_and(|h| http::request_header(h).is_some());
        s.triggered = self.triggers(has_header);
        if !s.triggered {
            http::set_request_header("x-http-fault", "passed");
        }
        match self.fault_at(Phase::RequestHeaders, s) {
            Some(fault) => inject(fault),
            None => Action::Continue,
        }
    }

    fn on_response_headers(&mut self, s: &mut Stream, _: u32, _: bool) -> Action {
        if let Some(marker) = &s.marker {
            http::set_response_header("x-stream-marker", marker);
        }
        match self.fault_at(Phase::ResponseHeaders, s) {
            Some(fault) => inject(fault),
            None => Action::Continue,
        }
    }

    fn on_done(&mut self, _: &mut Stream) {
        if self.settings.report_memory {
            if self.vm.is_empty() {
                self.vm = format!("{:x}", weft_guest::clock::now() % 0xffff_ffff);
            }
            weft_guest::metrics::gauge_set(
                "memory_pages",
                &[("vm".into(), self.vm.clone())],
                memory_pages() as i64,
            );
        }
    }
}

/// The size of this instance's linear memory, in 64 KiB pages.
fn memory_pages() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

weft_guest::export_http_filter!(HttpFault);

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(json: &str) -> Result<HttpFault, Error> {
        HttpFault::new(&Config::from_json(json)?)
    }

    fn stream(triggered: bool) -> Stream {
        Stream {
            marker: None,
            triggered,
        }
    }

    #[test]
    fn the_fault_fires_only_when_triggered_and_in_its_callback() {
        let f = fault(r#"{"fault": "panic", "on": "response-headers"}"#).unwrap();
        assert!(f.triggers(true));
        assert!(
            !f.triggers(false),
            "default trigger header x-fault is required"
        );
        assert_eq!(
            f.fault_at(Phase::ResponseHeaders, &stream(true)),
            Some(Fault::Panic)
        );
        assert_eq!(f.fault_at(Phase::RequestHeaders, &stream(true)), None);
        assert_eq!(f.fault_at(Phase::ResponseHeaders, &stream(false)), None);
    }

    #[test]
    fn a_null_trigger_header_means_every_request() {
        let f = fault(r#"{"fault": "respond", "when_header": null}"#).unwrap();
        assert!(f.triggers(false));
        assert_eq!(
            f.fault_at(Phase::RequestHeaders, &stream(true)),
            Some(Fault::Respond)
        );
    }

    #[test]
    fn fault_none_never_fires() {
        let f = fault(r#"{"when_header": null}"#).unwrap();
        assert_eq!(f.fault_at(Phase::RequestHeaders, &stream(true)), None);
        assert_eq!(inject(Fault::None), Action::Continue);
    }

    #[test]
    fn respond_answers_418_fault() {
        let Action::Respond(r) = inject(Fault::Respond) else {
            panic!("respond must answer locally");
        };
        assert_eq!(r.status, 418);
        assert_eq!(r.body, b"fault");
        assert_eq!(
            r.headers,
            [("content-type".to_string(), "text/plain".to_string())]
        );
    }

    #[test]
    #[should_panic(expected = "fault injected")]
    fn panic_panics_with_its_message() {
        inject(Fault::Panic);
    }

    #[test]
    fn configuration_defaults_and_validation() {
        let f = fault("{}").unwrap();
        assert_eq!(f.settings.fault, Fault::None);
        assert_eq!(f.settings.on, Phase::RequestHeaders);
        assert_eq!(f.settings.when_header.as_deref(), Some("x-fault"));
        let f = fault(r#"{"fault": "oom", "when_header": "x-boom"}"#).unwrap();
        assert_eq!(f.settings.fault, Fault::Oom);
        assert_eq!(f.settings.when_header.as_deref(), Some("x-boom"));
        for bad in [
            r#"{"fault": "explode"}"#,
            r#"{"on": "request-body"}"#,
            r#"{"when_header": ""}"#,
            r#"{"falut": "panic"}"#,
        ] {
            assert!(matches!(fault(bad), Err(Error::InvalidConfig(_))), "{bad}");
        }
    }
}
