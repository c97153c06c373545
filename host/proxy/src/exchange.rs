//! The state of one HTTP stream as filters see it through the `http` interface: header maps,
//! buffered bodies, a pending local response and the stream's attributes (Envoy's names and
//! encodings).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::bindings::filter::LocalResponse;

/// A header: lowercase name, value.
pub(crate) type Header = (String, String);

/// Which callback is running: it decides what a filter may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A request callback: request headers, body and trailers may change.
    Request,
    /// A response callback: response headers, body and trailers may change.
    Response,
    /// `on-done`, `init`, `on-tick`, `on-http-call-response`: nothing may change.
    ReadOnly,
}

/// One request/response exchange. The proxy owns it; during a callback the filter's store
/// holds a handle to it (see [`crate::StreamHandle`]).
#[derive(Debug)]
pub(crate) struct Exchange {
    /// Request headers, pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) first.
    pub request_headers: Vec<Header>,
    /// Request trailers.
    pub request_trailers: Vec<Header>,
    /// The request body received so far.
    pub request_body: Vec<u8>,
    /// Response headers, `:status` first; empty until the response starts.
    pub response_headers: Vec<Header>,
    /// Response trailers.
    pub response_trailers: Vec<Header>,
    /// The response body received so far.
    pub response_body: Vec<u8>,
    /// A filter body change since the body was received (content-length is then rewritten).
    pub request_body_replaced: bool,
    /// The same for the response body.
    pub response_body_replaced: bool,
    /// What the running callback may change.
    pub phase: Phase,
    /// A response set with `send-local-response` during the running callback.
    pub local: Option<LocalResponse>,
    /// Attributes.
    pub info: StreamInfo,
    /// The largest body (request, response or local response) filters may make.
    pub max_body: usize,
}

/// What the proxy knows about a stream beyond its headers.
#[derive(Debug, Clone)]
pub(crate) struct StreamInfo {
    /// `x-request-id`.
    pub request_id: String,
    /// When the request headers arrived (wall clock, for `request.time`).
    pub start: SystemTime,
    /// The same, monotonic (for `request.duration`).
    pub started: Instant,
    /// The client's address.
    pub source: SocketAddr,
    /// The proxy's listening address the client connected to.
    pub destination: SocketAddr,
    /// The downstream connection's id (unique in the process).
    pub connection_id: u64,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub protocol: &'static str,
    /// The upstream `host:port`.
    pub upstream: String,
    /// The response status, once known.
    pub response_code: Option<u16>,
    /// Why the response is what it is (`via_upstream`, a local response's details, ...).
    pub code_details: String,
    /// Request duration, set when the exchange is over.
    pub duration: Option<Duration>,
    /// The request body's size once it left for the upstream (the buffer is then empty).
    pub request_size: Option<usize>,
    /// The response body's size once it left for the client.
    pub response_size: Option<usize>,
}

impl Exchange {
    /// A new exchange for a request with these headers.
    pub fn new(request_headers: Vec<Header>, info: StreamInfo, max_body: usize) -> Self {
        Exchange {
            request_headers,
            request_trailers: Vec::new(),
            request_body: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            response_body: Vec::new(),
            request_body_replaced: false,
            response_body_replaced: false,
            phase: Phase::ReadOnly,
            local: None,
            info,
            max_body,
        }
    }

    /// The header map `which`, if the running callback may read it.
    pub fn map(&self, which: crate::bindings::http::HeaderMap) -> &[Header] {
        use crate::bindings::http::HeaderMap as M;
        match which {
            M::RequestHeaders => &self.request_headers,
            M::RequestTrailers => &self.request_trailers,
            M::ResponseHeaders => &self.response_headers,
            M::ResponseTrailers => &self.response_trailers,
        }
    }

    /// The header map `which`, if the running callback may change it.
    pub fn map_mut(&mut self, which: crate::bindings::http::HeaderMap) -> Option<&mut Vec<Header>> {
        use crate::bindings::http::HeaderMap as M;
        match (which, self.phase) {
            (M::RequestHeaders, Phase::Request) => Some(&mut self.request_headers),
            (M::RequestTrailers, Phase::Request) => Some(&mut self.request_trailers),
            (M::ResponseHeaders, Phase::Response) => Some(&mut self.response_headers),
            (M::ResponseTrailers, Phase::Response) => Some(&mut self.response_trailers),
            _ => None,
        }
    }

    /// The body `which`.
    pub fn body(&self, which: crate::bindings::http::Body) -> &[u8] {
        match which {
            crate::bindings::http::Body::Request => &self.request_body,
            crate::bindings::http::Body::Response => &self.response_body,
        }
    }

    /// Replaces `start .. start + length` of body `which` with `data` (both clamped to the
    /// body), if the running callback may change it. Returns whether it did.
    pub fn replace_body(
        &mut self,
        which: crate::bindings::http::Body,
        start: u32,
        length: u32,
        data: &[u8],
    ) -> bool {
        use crate::bindings::http::Body;
        let (body, replaced) = match (which, self.phase) {
            (Body::Request, Phase::Request) => {
                (&mut self.request_body, &mut self.request_body_replaced)
            }
            (Body::Response, Phase::Response) => {
                (&mut self.response_body, &mut self.response_body_replaced)
            }
            _ => return false,
        };
        let start = (start as usize).min(body.len());
        let end = start.saturating_add(length as usize).min(body.len());
        body.splice(start..end, data.iter().copied());
        *replaced = true;
        true
    }

    /// The value of attribute `path` in Envoy's encoding: strings as UTF-8, integers,
    /// timestamps and durations as 8 bytes little-endian, maps as Proxy-Wasm pairs.
    /// `plugin` is the asking filter's name.
    pub fn property(&self, plugin: &str, path: &[String]) -> Option<Vec<u8>> {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let info = &self.info;
        let int = |v: i64| Some(v.to_le_bytes().to_vec());
        let string = |s: &str| Some(s.as_bytes().to_vec());
        let request = |name: &str| first(&self.request_headers, name);
        match segments.as_slice() {
            ["request", "path"] => string(request(":path")?),
            ["request", "url_path"] => {
                let p = request(":path")?;
                string(p.split_once('?').map_or(p, |(path, _)| path))
            }
            ["request", "query"] => string(request(":path")?.split_once('?').map_or("", |q| q.1)),
            ["request", "host"] => string(request(":authority")?),
            ["request", "scheme"] => string(request(":scheme")?),
            ["request", "method"] => string(request(":method")?),
            ["request", "referer"] => string(request("referer")?),
            ["request", "useragent"] => string(request("user-agent")?),
            ["request", "protocol"] => string(info.protocol),
            ["request", "id"] => string(&info.request_id),
            ["request", "time"] => int(unix_nanos(info.start)),
            ["request", "duration"] => int(info.duration?.as_nanos().min(i64::MAX as u128) as i64),
            ["request", "size"] => int(info.request_size.unwrap_or(self.request_body.len()) as i64),
            ["request", "headers"] => Some(pairs(&self.request_headers)),
            ["request", "headers", name] => joined(&self.request_headers, name),
            ["response", "code"] => int(i64::from(info.response_code?)),
            ["response", "code_details"] => {
                (!info.code_details.is_empty()).then(|| info.code_details.as_bytes().to_vec())
            }
            ["response", "size"] if info.response_code.is_some() => {
                int(info.response_size.unwrap_or(self.response_body.len()) as i64)
            }
            ["response", "headers"] if !self.response_headers.is_empty() => {
                Some(pairs(&self.response_headers))
            }
            ["response", "headers", name] => joined(&self.response_headers, name),
            ["response", "trailers", name] => joined(&self.response_trailers, name),
            ["source", "address"] => string(&info.source.to_string()),
            ["source", "port"] => int(i64::from(info.source.port())),
            ["destination", "address"] => string(&info.destination.to_string()),
            ["destination", "port"] => int(i64::from(info.destination.port())),
            ["connection", "id"] => Some(info.connection_id.to_le_bytes().to_vec()),
            ["upstream", "address"] => string(&info.upstream),
            ["plugin_name"] => string(plugin),
            _ => None,
        }
    }
}

/// The first value of header `name` (ASCII case-insensitive).
pub(crate) fn first<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All values of header `name`, comma-joined (Envoy's `request.headers.<name>`).
fn joined(headers: &[Header], name: &str) -> Option<Vec<u8>> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(",").into_bytes())
}

/// Proxy-Wasm's serialised header map: count, then (name length, value length) pairs as u32
/// little-endian, then each name and value followed by a NUL.
pub(crate) fn pairs(headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in headers {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Sets header `name` to `value`: the first occurrence is replaced in place, later ones removed
/// (or it is appended).
pub(crate) fn set(headers: &mut Vec<Header>, name: &str, value: &str) {
    let name = name.to_ascii_lowercase();
    let mut seen = false;
    headers.retain_mut(|(k, v)| {
        if *k != name {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        *v = value.to_string();
        true
    });
    if !seen {
        headers.push((name, value.to_string()));
    }
}

/// Removes every value of header `name`.
pub(crate) fn remove(headers: &mut Vec<Header>, name: &str) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> StreamInfo {
        StreamInfo {
            request_id: "rid-1".into(),
            start: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            started: Instant::now(),
            source: "127.0.0.1:40000".parse().expect("addr"),
            destination: "127.0.0.1:8080".parse().expect("addr"),
            connection_id: 7,
            protocol: "HTTP/1.1",
            upstream: "127.0.0.1:9000".into(),
            response_code: None,
            code_details: String::new(),
            duration: None,
            request_size: None,
            response_size: None,
        }
    }

    fn headers() -> Vec<Header> {
        vec![
            (":method".into(), "POST".into()),
            (":path".into(), "/a/b?x=1".into()),
            (":authority".into(), "example.com".into()),
            (":scheme".into(), "http".into()),
            ("x-tag".into(), "one".into()),
            ("x-tag".into(), "two".into()),
        ]
    }

    #[test]
    fn properties_use_envoys_names_and_encodings() {
        let mut ex = Exchange::new(headers(), info(), 1 << 20);
        let p = |ex: &Exchange, path: &str| {
            let segs: Vec<String> = path.split('.').map(str::to_string).collect();
            ex.property("edge/ab", &segs)
        };
        assert_eq!(p(&ex, "request.path").as_deref(), Some(&b"/a/b?x=1"[..]));
        assert_eq!(p(&ex, "request.url_path").as_deref(), Some(&b"/a/b"[..]));
        assert_eq!(p(&ex, "request.query").as_deref(), Some(&b"x=1"[..]));
        assert_eq!(p(&ex, "request.host").as_deref(), Some(&b"example.com"[..]));
        assert_eq!(
            p(&ex, "request.headers.x-tag").as_deref(),
            Some(&b"one,two"[..])
        );
        assert_eq!(
            p(&ex, "request.time"),
            Some(1_700_000_000_123_456_789i64.to_le_bytes().to_vec())
        );
        assert_eq!(
            p(&ex, "source.address").as_deref(),
            Some(&b"127.0.0.1:40000"[..])
        );
        assert_eq!(p(&ex, "source.port"), Some(40000i64.to_le_bytes().to_vec()));
        assert_eq!(p(&ex, "connection.id"), Some(7u64.to_le_bytes().to_vec()));
        assert_eq!(p(&ex, "plugin_name").as_deref(), Some(&b"edge/ab"[..]));
        assert_eq!(
            p(&ex, "response.code"),
            None,
            "unknown until the response starts"
        );
        assert_eq!(
            p(&ex, "request.duration"),
            None,
            "known when the exchange is over"
        );
        ex.info.response_code = Some(204);
        ex.info.duration = Some(Duration::from_micros(1500));
        assert_eq!(p(&ex, "response.code"), Some(204i64.to_le_bytes().to_vec()));
        assert_eq!(
            p(&ex, "request.duration"),
            Some(1_500_000i64.to_le_bytes().to_vec())
        );
        assert_eq!(p(&ex, "no.such.thing"), None);
    }

    #[test]
    fn header_maps_and_bodies_change_only_in_their_own_phase() {
        use crate::bindings::http::{Body, HeaderMap};
        let mut ex = Exchange::new(headers(), info(), 1 << 20);
        ex.phase = Phase::Response;
        assert!(ex.map_mut(HeaderMap::RequestHeaders).is_none());
        assert!(!ex.replace_body(Body::Request, 0, 0, b"x"));
        ex.phase = Phase::Request;
        let h = ex.map_mut(HeaderMap::RequestHeaders).expect("writable");
        set(h, "X-Tag", "three");
        assert_eq!(
            h.iter().filter(|(k, _)| k == "x-tag").count(),
            1,
            "set replaces every value"
        );
        assert!(ex.replace_body(Body::Request, 0, 0, b"hello world"));
        assert!(ex.replace_body(Body::Request, 6, 100, b"weft"));
        assert_eq!(ex.request_body, b"hello weft");
        assert!(ex.request_body_replaced);
        assert_eq!(
            pairs(&[("a".into(), "bc".into())]),
            [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'b', b'c', 0]
        );
    }
}
