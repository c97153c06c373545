//! One HTTP stream through a filter chain: which callback runs on which filter, in which order,
//! and what `continue`, `pause`, `respond` and a failure do. The rules are Envoy's, except
//! where docs/PROXY.md says otherwise.
//!
//! Everything here is synchronous (guest calls); the server calls it where blocking is allowed,
//! one event at a time: request headers, each piece of request body, request trailers, then
//! the same for the response.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use wasmtime::component::ResourceAny;

use weft_runtime::{CallError, FailPolicy};

use crate::bindings::filter::{self, Action, LocalResponse};
use crate::exchange::{Exchange, Header, Phase};
use crate::filter::Warm;
use crate::{Filter, LocalReason, ProxyStats, StreamHandle};

/// A response made by the proxy or a filter instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// Envoy's response code details, e.g. `wasm_fail_stream`.
    pub details: String,
    pub reason: LocalReason,
}

impl Reply {
    /// A reply of the proxy's own with a plain-text body (empty for none).
    pub fn proxy(status: u16, details: &str, body: &str, reason: LocalReason) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            details: details.to_string(),
            reason,
        }
    }

    fn from_filter(r: LocalResponse) -> Reply {
        // Envoy refuses codes outside 100..=599 the same way.
        let (status, details) = match r.status {
            100..=599 => (r.status, r.details),
            other => (500, format!("invalid_local_response_status_{other}")),
        };
        Reply {
            status,
            headers: r.headers,
            body: r.body,
            details,
            reason: LocalReason::Filter,
        }
    }
}

/// Request or response: the order of the chain and which maps the filters may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Filters in configuration order.
    Request = 0,
    /// Filters in reverse order.
    Response = 1,
}

/// What arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The headers; `end`: no body or trailers follow.
    Headers { end: bool },
    /// More body (already appended to the buffer); `end`: nothing follows.
    Body { end: bool },
    /// The trailers (the end of the stream).
    Trailers,
}

#[derive(Debug, Clone, Copy)]
enum Callback {
    Headers(u32, bool),
    Body(u32, bool),
    Trailers(u32),
}

enum Verdict {
    Continue,
    Pause,
    Respond(Reply),
}

/// A filter instance lent to the stream, and the stream's `http-stream` resource in it.
struct Lease {
    warm: Warm,
    guest: filter::Guest,
    resource: ResourceAny,
}

/// One filter's part in the stream.
struct Member {
    filter: Filter,
    /// `None` once the filter failed (fail-open skips it from then on).
    lease: Option<Lease>,
    /// Whether it has had the request / response headers callback.
    headers_seen: [bool; 2],
    /// The body size at its last request / response body callback.
    body_seen: [Option<usize>; 2],
}

/// The filters of one stream.
pub(crate) struct StreamRun {
    members: Vec<Member>,
    ex: StreamHandle,
    stats: Arc<ProxyStats>,
    guard: Option<StreamGuard>,
}

/// Held by a stream until its `on-done` calls are over, however it ends: counts it as active,
/// and keeps the proxy's shutdown waiting for it (through `_done`).
pub(crate) struct StreamGuard {
    stats: Arc<ProxyStats>,
    _done: tokio::sync::mpsc::Sender<()>,
}

impl StreamGuard {
    pub fn new(stats: Arc<ProxyStats>, done: tokio::sync::mpsc::Sender<()>) -> Self {
        stats.active_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard { stats, _done: done }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.stats.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn lock(ex: &StreamHandle) -> MutexGuard<'_, Exchange> {
    ex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts and logs a filter failure; under fail-closed, the 503 Envoy answers
/// (`wasm_fail_stream`, no body).
fn failed(stats: &ProxyStats, filter: &Filter, err: &CallError) -> Option<Reply> {
    stats.filter_failures.fetch_add(1, Ordering::Relaxed);
    match filter.inner.core.on_failure(err, 1) {
        FailPolicy::Open => None,
        FailPolicy::Closed => Some(Reply::proxy(
            503,
            "wasm_fail_stream",
            "",
            LocalReason::FailClosed,
        )),
    }
}

/// Borrows an instance of `filter` for the stream and creates its `http-stream`.
fn lease(filter: &Filter, ex: &StreamHandle) -> Result<Lease, CallError> {
    let inner = &filter.inner;
    let mut warm = inner.core.take()?;
    warm.store.data_mut().ext.stream = Some(ex.clone());
    let guest = inner
        .indices
        .load(&mut warm.store, &warm.instance)
        .map_err(|e| CallError::Instantiate {
            plugin: inner.core.settings.name.clone(),
            message: format!("{e:#}"),
        })?;
    let resource = inner.core.run(&mut warm, |store, _| {
        guest.http_stream().call_constructor(store)
    })?;
    Ok(Lease {
        warm,
        guest,
        resource,
    })
}

impl StreamRun {
    /// Lends one instance of every filter of `chain` to the stream and creates its
    /// `http-stream`. A filter that cannot (no instance, or its constructor traps) is handled by
    /// its fail policy: skipped, or the stream is answered 503 (returned) and the filters after
    /// it are not started.
    pub fn open(
        chain: Vec<Filter>,
        ex: StreamHandle,
        stats: Arc<ProxyStats>,
        guard: StreamGuard,
    ) -> (StreamRun, Option<Reply>) {
        let mut reply = None;
        let mut members = Vec::with_capacity(chain.len());
        for filter in chain {
            let lease = match reply {
                Some(_) => None,
                None => match lease(&filter, &ex) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        reply = failed(&stats, &filter, &e);
                        None
                    }
                },
            };
            members.push(Member {
                filter,
                lease,
                headers_seen: [false; 2],
                body_seen: [None; 2],
            });
        }
        (
            StreamRun {
                members,
                ex,
                stats,
                guard: Some(guard),
            },
            reply,
        )
    }

    /// Runs one callback of filter `i`.
    fn invoke(&mut self, i: usize, dir: Dir, cb: Callback) -> Verdict {
        let member = &mut self.members[i];
        let Some(lease) = member.lease.as_mut() else {
            return Verdict::Continue;
        };
        {
            let mut ex = lock(&self.ex);
            ex.phase = match dir {
                Dir::Request => Phase::Request,
                Dir::Response => Phase::Response,
            };
            ex.local = None;
        }
        let Lease {
            warm,
            guest,
            resource,
        } = lease;
        let resource = *resource;
        let result = member.filter.inner.core.run(warm, |store, _| {
            let s = guest.http_stream();
            match (dir, cb) {
                (Dir::Request, Callback::Headers(n, end)) => {
                    s.call_on_request_headers(store, resource, n, end)
                }
                (Dir::Request, Callback::Body(n, end)) => {
                    s.call_on_request_body(store, resource, n, end)
                }
                (Dir::Request, Callback::Trailers(n)) => {
                    s.call_on_request_trailers(store, resource, n)
                }
                (Dir::Response, Callback::Headers(n, end)) => {
                    s.call_on_response_headers(store, resource, n, end)
                }
                (Dir::Response, Callback::Body(n, end)) => {
                    s.call_on_response_body(store, resource, n, end)
                }
                (Dir::Response, Callback::Trailers(n)) => {
                    s.call_on_response_trailers(store, resource, n)
                }
            }
        });
        let local = {
            let mut ex = lock(&self.ex);
            ex.phase = Phase::ReadOnly;
            ex.local.take()
        };
        match result {
            // A returned response wins over one set with `send-local-response`.
            Ok(Action::Respond(r)) => Verdict::Respond(Reply::from_filter(r)),
            Ok(_) if local.is_some() => match local {
                Some(l) => Verdict::Respond(Reply::from_filter(l)),
                None => Verdict::Continue,
            },
            Ok(Action::Continue) => Verdict::Continue,
            Ok(Action::Pause) => Verdict::Pause,
            Err(e) => {
                // The instance trapped: it is dropped with its lease, never reused.
                member.lease = None;
                match failed(&self.stats, &member.filter, &e) {
                    Some(r) => Verdict::Respond(r),
                    None => Verdict::Continue,
                }
            }
        }
    }

    fn counts(&self, dir: Dir) -> (u32, u32, usize) {
        let ex = lock(&self.ex);
        match dir {
            Dir::Request => (
                ex.request_headers.len() as u32,
                ex.request_trailers.len() as u32,
                ex.request_body.len(),
            ),
            Dir::Response => (
                ex.response_headers.len() as u32,
                ex.response_trailers.len() as u32,
                ex.response_body.len(),
            ),
        }
    }

    /// Runs `ev` through the chain: in order for the request, in reverse for the response
    /// (there only through the filters that saw the request headers). A filter that has not
    /// seen the headers yet gets them first, then what the event brings.
    ///
    /// `pause` stops the event at that filter: the filters after it see nothing of it now, and
    /// everything (the headers, the whole body so far) when it continues on a later event.
    /// On the last event of the direction there is nothing left to wait for, so `pause` there
    /// continues (in Envoy the stream would hang until the filter resumed it). `Err`: a filter
    /// answered, or failed under fail-closed.
    pub fn event(&mut self, dir: Dir, ev: Event) -> Result<(), Reply> {
        let d = dir as usize;
        let last = matches!(
            ev,
            Event::Headers { end: true } | Event::Body { end: true } | Event::Trailers
        );
        let order: Vec<usize> = match dir {
            Dir::Request => (0..self.members.len()).collect(),
            Dir::Response => (0..self.members.len())
                .rev()
                .filter(|&i| self.members[i].headers_seen[Dir::Request as usize])
                .collect(),
        };
        for i in order {
            if self.members[i].lease.is_none() {
                continue;
            }
            if !self.members[i].headers_seen[d] {
                self.members[i].headers_seen[d] = true;
                let end = matches!(ev, Event::Headers { end: true });
                let (n, _, _) = self.counts(dir);
                match self.invoke(i, dir, Callback::Headers(n, end)) {
                    Verdict::Continue => {}
                    Verdict::Pause if last => {}
                    Verdict::Pause => return Ok(()),
                    Verdict::Respond(r) => return Err(r),
                }
            }
            let (_, trailers, size) = self.counts(dir);
            let body = match ev {
                Event::Headers { .. } => None,
                Event::Body { end } => Some(end),
                // Trailers reach a filter that has not seen the whole body (it was held by a
                // filter before it): it gets the body first, as Envoy passes buffered data on.
                Event::Trailers if size > 0 && self.members[i].body_seen[d] != Some(size) => {
                    Some(false)
                }
                Event::Trailers => None,
            };
            if let Some(end) = body {
                self.members[i].body_seen[d] = Some(size);
                match self.invoke(i, dir, Callback::Body(size as u32, end)) {
                    Verdict::Continue => {}
                    Verdict::Pause if last => {}
                    Verdict::Pause => return Ok(()),
                    Verdict::Respond(r) => return Err(r),
                }
            }
            if ev == Event::Trailers
                && let Verdict::Respond(r) = self.invoke(i, dir, Callback::Trailers(trailers))
            {
                return Err(r);
            }
        }
        Ok(())
    }

    /// Makes `reply` the response and runs it through the response callbacks of the filters
    /// that saw the request (Envoy runs its encoder filters on local replies; a Wasm filter
    /// that never saw the request is skipped there too). A filter answering again replaces it
    /// directly.
    pub fn local_response(&mut self, reply: Reply) {
        let end = reply.body.is_empty();
        self.set_response(reply);
        let mut r = self.event(Dir::Response, Event::Headers { end });
        if r.is_ok() && !end {
            r = self.event(Dir::Response, Event::Body { end: true });
        }
        if let Err(again) = r {
            self.set_response(again);
        }
    }

    /// Replaces the response with `reply`, without running any more callbacks (a local
    /// response made while the response is being filtered: Envoy sends it directly too).
    pub fn replace_response(&mut self, reply: Reply) {
        self.set_response(reply);
    }

    fn set_response(&mut self, reply: Reply) {
        self.stats.count_local(reply.reason);
        let mut ex = lock(&self.ex);
        let mut headers = vec![(":status".to_string(), reply.status.to_string())];
        headers.extend(
            reply
                .headers
                .into_iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .map(|(k, v)| (k.to_ascii_lowercase(), v)),
        );
        if !reply.body.is_empty() && crate::exchange::first(&headers, "content-type").is_none() {
            headers.push(("content-type".into(), "text/plain".into()));
        }
        ex.response_headers = headers;
        ex.response_body = reply.body;
        ex.response_trailers.clear();
        ex.response_body_replaced = true;
        ex.info.response_code = Some(reply.status);
        // Envoy replaces white space in details with `_`.
        ex.info.code_details = reply
            .details
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
    }

    /// The exchange is over: runs `on-done` on every filter still in the stream (in chain
    /// order), drops its `http-stream` and gives its instance back.
    pub fn finish(mut self) {
        {
            let mut ex = lock(&self.ex);
            ex.info.duration = Some(ex.info.started.elapsed());
            ex.phase = Phase::ReadOnly;
        }
        finish_members(std::mem::take(&mut self.members));
    }
}

fn finish_members(members: Vec<Member>) {
    for m in members {
        let Some(Lease {
            mut warm,
            guest,
            resource,
        }) = m.lease
        else {
            continue;
        };
        let inner = &m.filter.inner;
        let id = warm.store.data().instance_id;
        let done = inner.core.run(&mut warm, |store, _| {
            guest.http_stream().call_on_done(&mut *store, resource)?;
            resource.resource_drop(&mut *store)
        });
        match done {
            Ok(()) => inner.release(warm),
            Err(e) => {
                tracing::warn!(plugin = %inner.core.settings.name, "on-done: {e}");
                inner.shared.forget(id);
            }
        }
    }
}

impl Drop for StreamRun {
    /// A stream dropped before [`StreamRun::finish`] (the client went away mid-request) still
    /// gets its `on-done` calls, off the async worker, as Envoy calls them for reset streams.
    fn drop(&mut self) {
        if self.members.iter().all(|m| m.lease.is_none()) {
            return;
        }
        let members = std::mem::take(&mut self.members);
        let ex = self.ex.clone();
        let guard = self.guard.take();
        let run = move || {
            let _guard = guard;
            {
                let mut ex = lock(&ex);
                ex.info.duration = Some(ex.info.started.elapsed());
                ex.phase = Phase::ReadOnly;
            }
            finish_members(members);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(run)),
            Err(_) => run(),
        }
    }
}
