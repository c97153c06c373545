//! Test fixture: an http-filter component that reads a file on every request. It imports
//! `wasi:filesystem`, which a Proxy-Wasm host cannot provide, so `weft adapt` must refuse it
//! with a message that names the import.

use weft_guest::{Action, Config, Error, HttpFilter, Plugin, http};

/// Copies the first line of `/etc/hostname` into a request header.
pub struct UsesFs;

impl Plugin for UsesFs {
    fn new(_: &Config) -> Result<Self, Error> {
        Ok(UsesFs)
    }
}

impl HttpFilter for UsesFs {
    type Stream = ();

    fn new_stream(&mut self) {}

    fn on_request_headers(&mut self, _: &mut (), _: u32, _: bool) -> Action {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        http::set_request_header("x-hostname", host.lines().next().unwrap_or(""));
        Action::Continue
    }
}

weft_guest::export_http_filter!(UsesFs);
