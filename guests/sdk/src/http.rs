//! HTTP filters: the [`HttpFilter`] trait and helpers over the `http` host interface.
//!
//! A filter is a [`Plugin`](crate::Plugin) (built once per instance from the configuration) with
//! a per-stream state type. Every callback gets the plugin (`&mut self`, shared by all streams of
//! the instance) and the stream's own state, and returns an [`Action`]:
//!
//! ```ignore
//! use weft_guest::{Action, Config, Error, HttpFilter, Plugin, http};
//!
//! struct Tag;
//! impl Plugin for Tag {
//!     fn new(_: &Config) -> Result<Self, Error> { Ok(Tag) }
//! }
//! impl HttpFilter for Tag {
//!     type Stream = ();
//!     fn new_stream(&mut self) {}
//!     fn on_request_headers(&mut self, _: &mut (), _: u32, _: bool) -> Action {
//!         http::set_request_header("x-tagged", "yes");
//!         Action::Continue
//!     }
//! }
//! weft_guest::export_http_filter!(Tag);
//! ```

pub use crate::bindings::weft::plugin::http::{
    Body, HeaderMap, add_header, dispatch_http_call, get_body, get_header, get_headers,
    get_property, remove_header, replace_body, send_local_response, set_header, set_tick_period,
};

/// A response made by the filter instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u16,
    /// Extra response headers (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Why, for the proxy's access log (Envoy's response code details; no spaces).
    pub details: String,
}

impl LocalResponse {
    /// A response with `status`, `content-type: application/json` and `body`.
    pub fn json(status: u16, body: impl Into<Vec<u8>>, details: &str) -> Self {
        LocalResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            details: details.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the proxy does after a callback (see the WIT `action`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Action {
    /// Pass on what was seen.
    #[default]
    Continue,
    /// Hold the headers (and buffer the body) until a later callback continues.
    Pause,
    /// Answer with this response; the upstream is not called (or its answer is dropped).
    Respond(LocalResponse),
}

/// A plugin for the `http-filter` world. Every callback has a default that continues.
pub trait HttpFilter: crate::Plugin {
    /// Per-stream state, created by [`new_stream`](Self::new_stream) when a request starts and
    /// dropped when the exchange is over.
    type Stream: 'static;

    /// The state of a new stream.
    fn new_stream(&mut self) -> Self::Stream;

    /// The request headers arrived (`end_of_stream`: no body follows).
    fn on_request_headers(&mut self, _s: &mut Self::Stream, _count: u32, _eos: bool) -> Action {
        Action::Continue
    }
    /// Request body data arrived; `size` is the size buffered so far.
    fn on_request_body(&mut self, _s: &mut Self::Stream, _size: u32, _eos: bool) -> Action {
        Action::Continue
    }
    /// The request trailers arrived.
    fn on_request_trailers(&mut self, _s: &mut Self::Stream, _count: u32) -> Action {
        Action::Continue
    }
    /// The response headers arrived.
    fn on_response_headers(&mut self, _s: &mut Self::Stream, _count: u32, _eos: bool) -> Action {
        Action::Continue
    }
    /// Response body data arrived; `size` is the size buffered so far.
    fn on_response_body(&mut self, _s: &mut Self::Stream, _size: u32, _eos: bool) -> Action {
        Action::Continue
    }
    /// The response trailers arrived.
    fn on_response_trailers(&mut self, _s: &mut Self::Stream, _count: u32) -> Action {
        Action::Continue
    }
    /// The exchange is over; attributes are still readable.
    fn on_done(&mut self, _s: &mut Self::Stream) {}
    /// The tick period elapsed.
    fn on_tick(&mut self) {}
    /// The answer to a [`dispatch_http_call`] (status 0: the call failed).
    fn on_http_call_response(&mut self, _token: u32, _status: u16, _body: Vec<u8>) {}
}

/// A request header.
pub fn request_header(name: &str) -> Option<String> {
    get_header(HeaderMap::RequestHeaders, name)
}

/// Sets a request header (replacing its values).
pub fn set_request_header(name: &str, value: &str) {
    set_header(HeaderMap::RequestHeaders, name, value)
}

/// A response header.
pub fn response_header(name: &str) -> Option<String> {
    get_header(HeaderMap::ResponseHeaders, name)
}

/// Sets a response header (replacing its values).
pub fn set_response_header(name: &str, value: &str) {
    set_header(HeaderMap::ResponseHeaders, name, value)
}

/// A proxy attribute by dotted path (`"request.path"`, `"source.address"`); see
/// [`get_property`] for paths whose segments contain dots.
pub fn property(path: &str) -> Option<Vec<u8>> {
    let segments: Vec<String> = path.split('.').map(str::to_string).collect();
    get_property(&segments)
}

/// A string attribute (`"request.path"`, `"source.address"`, `"request.id"`).
pub fn property_str(path: &str) -> Option<String> {
    property(path).and_then(|b| String::from_utf8(b).ok())
}

/// An integer attribute (`"response.code"`, `"request.duration"` in ns): 8 bytes little-endian.
pub fn property_i64(path: &str) -> Option<i64> {
    let b = property(path)?;
    let bytes: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(bytes))
}

/// The whole buffered body of `which`, given the size the body callback reported.
pub fn body(which: Body, size: u32) -> Vec<u8> {
    get_body(which, 0, size)
}

/// Replaces the whole buffered body of `which` (of `size` bytes, as the callback reported).
pub fn set_body(which: Body, size: u32, data: &[u8]) {
    replace_body(which, 0, size, data)
}
