//! A loaded http-filter component: its instance pool (shared code with OTLP plugins), the tick
//! period its instances set, and the HTTP calls they dispatch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use wasmtime::component::HasSelf;
use weft_runtime::bindings::names;
use weft_runtime::{
    CallError, HostState, Instances, LoadError, PluginHost, PluginMetrics, PluginSettings,
};

use crate::StreamHandle;
use crate::bindings::{filter, http};
use crate::exchange::{Header, first};

/// What a filter instance's store holds beyond the runtime's [`HostState`]: the state all
/// instances of the filter share, and the stream the instance is lent to.
pub struct FilterState {
    /// The filter's shared state (tick period, HTTP calls in flight).
    pub(crate) filter: Arc<FilterShared>,
    /// The HTTP stream this instance serves while the proxy has lent it to one; `None` otherwise,
    /// when the `http` functions act on no stream.
    pub(crate) stream: Option<StreamHandle>,
}

/// An initialised filter instance and its store.
pub(crate) type Warm = weft_runtime::Warm<FilterState>;

/// A loaded HTTP filter (world `http-filter`). Cloning shares it.
#[derive(Clone)]
pub struct Filter {
    pub(crate) inner: Arc<FilterInner>,
}

pub(crate) struct FilterInner {
    pub(crate) core: Instances<FilterState>,
    pub(crate) indices: filter::GuestIndices,
    pub(crate) shared: Arc<FilterShared>,
    digest: String,
}

/// An answer to `dispatch-http-call` waiting for its instance.
#[derive(Debug)]
struct CallAnswer {
    token: u32,
    status: u16,
    body: Vec<u8>,
}

type CallClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// HTTP calls a filter may have in flight at once; more are refused.
const MAX_CALLS_IN_FLIGHT: usize = 256;
/// The timeout of a call that asks for none (0).
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest call timeout granted.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest call response body handed to the filter; larger answers count as failed.
const MAX_CALL_RESPONSE: usize = 4 << 20;

/// What all instances of one filter share in the proxy: the tick period and the HTTP calls in
/// flight, whose answers go back to the instance that made them.
pub struct FilterShared {
    name: String,
    tick_ms: AtomicU32,
    next_token: AtomicU32,
    in_flight: AtomicUsize,
    allowed_calls: Vec<String>,
    inbox: Mutex<HashMap<u64, Vec<CallAnswer>>>,
    filter: OnceLock<Weak<FilterInner>>,
    client: OnceLock<CallClient>,
}

impl std::fmt::Debug for FilterShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterShared")
            .field("name", &self.name)
            .field("tick_ms", &self.tick_ms)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl FilterShared {
    fn new(settings: &PluginSettings) -> Self {
        FilterShared {
            name: settings.name.clone(),
            tick_ms: AtomicU32::new(0),
            next_token: AtomicU32::new(1),
            in_flight: AtomicUsize::new(0),
            allowed_calls: settings.capabilities.http_calls.clone(),
            inbox: Mutex::new(HashMap::new()),
            filter: OnceLock::new(),
            client: OnceLock::new(),
        }
    }

    /// `set-tick-period`: one period for the filter, whichever instance sets it (0 stops).
    pub(crate) fn set_tick_period(&self, ms: u32) {
        self.tick_ms.store(ms, Ordering::Relaxed);
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<CallAnswer>>> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the answers waiting for an instance that is gone (trapped or not pooled).
    pub(crate) fn forget(&self, instance_id: u64) {
        self.inbox().remove(&instance_id);
    }

    /// `dispatch-http-call` from instance `instance_id`: checks the call, starts it on the
    /// runtime and returns its token. The answer is delivered later to the same instance.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        instance_id: u64,
        upstream: &str,
        headers: &[Header],
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<u32, String> {
        if !self
            .allowed_calls
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(upstream))
        {
            return Err(format!(
                "upstream `{upstream}` is not in this filter's capabilities.http_calls"
            ));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "HTTP calls need the running proxy".to_string())?;
        let method = first(headers, ":method").ok_or("headers must include :method")?;
        let path = first(headers, ":path").ok_or("headers must include :path")?;
        let authority = first(headers, ":authority").ok_or("headers must include :authority")?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{upstream}{path}"))
            .header(hyper::header::HOST, authority);
        for (k, v) in headers.iter().filter(|(k, _)| !k.starts_with(':')) {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("invalid request: {e}"))?;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_CALLS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("{MAX_CALLS_IN_FLIGHT} calls are in flight already"));
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed).max(1);
        let timeout = match timeout_ms {
            0 => DEFAULT_CALL_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_CALL_TIMEOUT),
        };
        let client = self
            .client
            .get_or_init(|| {
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http()
            })
            .clone();
        let me = self.clone();
        runtime.spawn(async move {
            let call = async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status().as_u16();
                let body = http_body_util::Limited::new(resp.into_body(), MAX_CALL_RESPONSE)
                    .collect()
                    .await
                    .ok()?
                    .to_bytes();
                Some((status, body.to_vec()))
            };
            let (status, body) = tokio::time::timeout(timeout, call)
                .await
                .ok()
                .flatten()
                .unwrap_or((0, Vec::new()));
            me.in_flight.fetch_sub(1, Ordering::AcqRel);
            me.deliver(
                instance_id,
                CallAnswer {
                    token,
                    status,
                    body,
                },
            );
        });
        Ok(token)
    }

    /// Queues an answer for its instance; if that instance is idle in the pool, delivers now
    /// (on a blocking thread). A busy instance gets it when its stream gives it back.
    fn deliver(&self, instance_id: u64, answer: CallAnswer) {
        let Some(inner) = self.filter.get().and_then(Weak::upgrade) else {
            return; // the filter was replaced (hot reload) or stopped: nobody to tell
        };
        self.inbox().entry(instance_id).or_default().push(answer);
        if let Some(warm) = inner.core.take_idle(instance_id) {
            tokio::task::spawn_blocking(move || inner.release(warm));
        }
    }
}

/// Loads the http-filter component file at `path`.
pub fn load_filter_file(
    host: &PluginHost,
    path: &std::path::Path,
    settings: PluginSettings,
) -> Result<Filter, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_filter(host, &path.display().to_string(), &bytes, settings)
}

/// Compiles (or loads from cache) an http-filter component, checks its world, links it (the
/// weft interfaces plus `http`), and creates and initialises a first instance, so an invalid
/// configuration fails here with the filter's own message. `what` names the component in errors.
pub fn load_filter(
    host: &PluginHost,
    what: &str,
    bytes: &[u8],
    settings: PluginSettings,
) -> Result<Filter, LoadError> {
    let loaded = host.engine().load_component(what, bytes)?;
    host.check_world(
        what,
        &loaded.component,
        &[names::FILTER],
        Some("http-filter"),
    )?;
    let mut linker = host.linker::<FilterState>()?;
    http::add_to_linker::<HostState<FilterState>, HasSelf<HostState<FilterState>>>(
        &mut linker,
        |s| s,
    )
    .map_err(|e| LoadError::link(what, e))?;
    let shared = Arc::new(FilterShared::new(&settings));
    let for_instances = shared.clone();
    let ext = Arc::new(move || FilterState {
        filter: for_instances.clone(),
        stream: None,
    });
    let core = host.instances(what, &loaded.component, settings, &linker, ext)?;
    let indices = filter::GuestIndices::new(&core.pre).map_err(|e| LoadError::Compile {
        what: what.to_string(),
        message: format!("{e:#}"),
    })?;
    let inner = Arc::new(FilterInner {
        core,
        indices,
        shared: shared.clone(),
        digest: loaded.digest,
    });
    let _ = shared.filter.set(Arc::downgrade(&inner));
    inner.core.start()?;
    Ok(Filter { inner })
}

impl Filter {
    /// The filter's plugin name (`<proxy>/<filter>` in the proxy).
    pub fn name(&self) -> &str {
        &self.inner.core.settings.name
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &PluginSettings {
        &self.inner.core.settings
    }

    /// The component's content key: BLAKE3 of its bytes, hex (the artifact cache's key).
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The filter's metrics (calls, traps, fail-policy outcomes, ...).
    pub fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.inner.core.shared.metrics
    }

    /// Warm instances in the pool right now.
    pub fn idle_instances(&self) -> usize {
        self.inner.core.idle()
    }

    /// The tick period the filter asked for with `set-tick-period`, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        match self.inner.shared.tick_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }

    /// Runs `on-tick` once, on a warm instance (or a new one). Blocks: call it where blocking
    /// is allowed. A trap is counted and the instance dropped; the next tick gets another.
    pub fn tick(&self) -> Result<(), CallError> {
        let inner = &self.inner;
        let mut warm = inner.core.take()?;
        let id = warm.store.data().instance_id;
        let indices = &inner.indices;
        let result = inner.core.run(&mut warm, |store, instance| {
            indices
                .load(&mut *store, instance)?
                .call_on_tick(&mut *store)
        });
        match result {
            Ok(()) => {
                inner.release(warm);
                Ok(())
            }
            Err(e) => {
                inner.shared.inbox().remove(&id);
                Err(e)
            }
        }
    }
}

impl FilterInner {
    /// Gives an instance back to the pool, first delivering the HTTP-call answers waiting for
    /// it. An instance that traps on one is dropped with the rest of its answers.
    pub(crate) fn release(&self, mut warm: Warm) {
        warm.store.data_mut().ext.stream = None;
        let id = warm.store.data().instance_id;
        loop {
            let answers = self.shared.inbox().remove(&id).unwrap_or_default();
            for a in answers {
                let indices = &self.indices;
                let r = self.core.run(&mut warm, |store, instance| {
                    indices
                        .load(&mut *store, instance)?
                        .call_on_http_call_response(&mut *store, a.token, a.status, &a.body)
                });
                if let Err(e) = r {
                    tracing::warn!(plugin = %self.shared.name, token = a.token, "on-http-call-response: {e}");
                    self.shared.inbox().remove(&id);
                    return;
                }
            }
            if !self.core.give_back(warm) {
                // Not pooled (pool full): answers that still arrive have no instance to go to.
                self.shared.inbox().remove(&id);
                return;
            }
            // An answer that arrived after the inbox was emptied found the instance busy; if
            // nobody took it from the pool since, deliver it now.
            if !self.shared.inbox().contains_key(&id) {
                return;
            }
            match self.core.take_idle(id) {
                Some(w) => warm = w,
                None => return,
            }
        }
    }
}
