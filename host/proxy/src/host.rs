//! The host side of the `http` interface: it acts on the stream the instance is lent to (see
//! [`FilterState::stream`]), or on nothing outside stream callbacks.

use weft_runtime::HostState;

use crate::FilterState;
use crate::bindings::filter::LocalResponse;
use crate::bindings::http::{self, Body, HeaderMap};
use crate::exchange::{self, Exchange, Header, Phase};

/// Bytes one header map may hold (names and values); more additions are ignored.
const MAX_HEADER_BYTES: usize = 256 << 10;

/// Runs `f` on the stream instance `s` is lent to, if any.
fn with_stream<R>(s: &HostState<FilterState>, f: impl FnOnce(&mut Exchange) -> R) -> Option<R> {
    let stream = s.ext.stream.as_ref()?;
    let mut ex = stream.lock().unwrap_or_else(|e| e.into_inner());
    Some(f(&mut ex))
}

fn map_bytes(headers: &[Header]) -> usize {
    headers.iter().map(|(k, v)| k.len() + v.len()).sum()
}

impl http::Host for HostState<FilterState> {
    fn get_header(&mut self, headers: HeaderMap, name: String) -> Option<String> {
        with_stream(self, |ex| {
            exchange::first(ex.map(headers), &name).map(str::to_string)
        })
        .flatten()
    }

    fn get_headers(&mut self, headers: HeaderMap) -> Vec<(String, String)> {
        with_stream(self, |ex| ex.map(headers).to_vec()).unwrap_or_default()
    }

    fn set_header(&mut self, headers: HeaderMap, name: String, value: String) {
        with_stream(self, |ex| {
            if let Some(map) = ex.map_mut(headers)
                && map_bytes(map) + name.len() + value.len() <= MAX_HEADER_BYTES
            {
                exchange::set(map, &name, &value);
            }
        });
    }

    fn add_header(&mut self, headers: HeaderMap, name: String, value: String) {
        with_stream(self, |ex| {
            if let Some(map) = ex.map_mut(headers)
                && map_bytes(map) + name.len() + value.len() <= MAX_HEADER_BYTES
            {
                map.push((name.to_ascii_lowercase(), value));
            }
        });
    }

    fn remove_header(&mut self, headers: HeaderMap, name: String) {
        with_stream(self, |ex| {
            if let Some(map) = ex.map_mut(headers) {
                exchange::remove(map, &name);
            }
        });
    }

    fn get_body(&mut self, body: Body, start: u32, length: u32) -> Vec<u8> {
        with_stream(self, |ex| {
            let b = ex.body(body);
            let start = (start as usize).min(b.len());
            let end = start.saturating_add(length as usize).min(b.len());
            b[start..end].to_vec()
        })
        .unwrap_or_default()
    }

    fn replace_body(&mut self, body: Body, start: u32, length: u32, data: Vec<u8>) {
        with_stream(self, |ex| {
            let current = ex.body(body).len();
            let removed = (length as usize).min(current.saturating_sub(start as usize));
            if current - removed + data.len() <= ex.max_body {
                ex.replace_body(body, start, length, &data);
            }
        });
    }

    fn send_local_response(
        &mut self,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        details: String,
    ) {
        with_stream(self, |ex| {
            if ex.phase != Phase::ReadOnly && body.len() <= ex.max_body {
                ex.local = Some(LocalResponse {
                    status,
                    headers,
                    body,
                    details,
                });
            }
        });
    }

    fn get_property(&mut self, path: Vec<String>) -> Option<Vec<u8>> {
        match with_stream(self, |ex| ex.property(&self.shared.name, &path)) {
            Some(v) => v,
            // Outside a stream only the plugin's own attributes exist.
            None => match path.as_slice() {
                [p] if p == "plugin_name" => Some(self.shared.name.as_bytes().to_vec()),
                _ => None,
            },
        }
    }

    fn set_tick_period(&mut self, period_ms: u32) {
        self.ext.filter.set_tick_period(period_ms);
    }

    fn dispatch_http_call(
        &mut self,
        upstream: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<u32, String> {
        self.ext
            .filter
            .dispatch(self.instance_id, &upstream, &headers, body, timeout_ms)
    }
}
