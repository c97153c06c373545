//! The glue proper (wasm32 only). See the crate docs for the rules it follows.
//!
//! Every export is called by the guest (through the canonical ABI) or by Envoy (through the
//! Proxy-Wasm ABI), never from Rust: pointer arguments are valid for their lengths, a `ret`
//! argument is a return area of the result's size, and a guest export's result pointer is its
//! return area, valid until its `cabi_post_*` runs. That is the contract every `unsafe` block
//! of an export relies on where it says "the ABI".

use core::ptr::null_mut;

use crate::abi::{self, Action, Datetime, InitResult, KvErr, KvGetOk, List, OptionList, Pair};
use crate::abi::{ReadErr, ResultU32, ResultU64, get, put};
use crate::buf::Buf;
use crate::contexts::ContextTable;
use crate::handles::Handles;
use crate::header_map;
use crate::json;
use crate::mem::{alloc, bytes};
use crate::metrics::{self, Metrics};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

// ---------------------------------------------------------------------------------------------
// Imports: the Proxy-Wasm host (Envoy).

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
    fn proxy_get_log_level(ret: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(ms: u32) -> u32;
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        kind: u32,
        start: usize,
        len: usize,
        ptr: *const u8,
        size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, ret_ptr: *mut *mut u8, ret_len: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        k: *const u8,
        kl: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        k: *const u8,
        kl: usize,
        v: *const u8,
        vl: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map: u32,
        k: *const u8,
        kl: usize,
        v: *const u8,
        vl: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, k: *const u8, kl: usize) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_property(
        path: *const u8,
        len: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        k: *const u8,
        kl: usize,
        ret_ptr: *mut *mut u8,
        ret_len: *mut usize,
        ret_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(k: *const u8, kl: usize, v: *const u8, vl: usize, cas: u32) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, len: usize, ret_id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, delta: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
    fn proxy_http_call(
        upstream: *const u8,
        upstream_len: usize,
        headers: *const u8,
        headers_len: usize,
        body: *const u8,
        body_len: usize,
        trailers: *const u8,
        trailers_len: usize,
        timeout_ms: u32,
        ret_token: *mut u32,
    ) -> u32;
}

// Proxy-Wasm constants.
const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 8;
const BUF_REQUEST_BODY: u32 = 0;
const BUF_RESPONSE_BODY: u32 = 1;
const BUF_CALL_RESPONSE_BODY: u32 = 4;
const BUF_PLUGIN_CONFIG: u32 = 7;
const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
const METRIC_COUNTER: u32 = 0;
const METRIC_GAUGE: u32 = 1;
const METRIC_HISTOGRAM: u32 = 2;
const LOG_INFO: u32 = 2;
const LOG_ERROR: u32 = 4;
const LOG_CRITICAL: u32 = 5;

// ---------------------------------------------------------------------------------------------
// Imports: the guest's exports (resolved by the fuser; `cabi_realloc` is in mem.rs), and the
// glue's state global.

#[link(wasm_import_module = "weft:guest")]
unsafe extern "C" {
    #[link_name = "weft:plugin/lifecycle@0.2.0#init"]
    fn g_init() -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/lifecycle@0.2.0#init"]
    fn g_init_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[constructor]http-stream"]
    fn g_new() -> u32;
    // Post-returns of exports that return no memory: Rust guests have none (the fuser supplies
    // no-ops), interpreters (componentize-js, componentize-py) end the call in them and refuse
    // the next one until it has run.
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[constructor]http-stream"]
    fn g_new_post(handle: u32);
    #[link_name = "weft:plugin/filter@0.2.0#[dtor]http-stream"]
    fn g_dtor(rep: u32);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-request-headers"]
    fn g_req_headers(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-request-headers"]
    fn g_req_headers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-request-body"]
    fn g_req_body(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-request-body"]
    fn g_req_body_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-request-trailers"]
    fn g_req_trailers(rep: u32, n: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-request-trailers"]
    fn g_req_trailers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-response-headers"]
    fn g_resp_headers(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-response-headers"]
    fn g_resp_headers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-response-body"]
    fn g_resp_body(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-response-body"]
    fn g_resp_body_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-response-trailers"]
    fn g_resp_trailers(rep: u32, n: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-response-trailers"]
    fn g_resp_trailers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.2.0#[method]http-stream.on-done"]
    fn g_done(rep: u32);
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#[method]http-stream.on-done"]
    fn g_done_post();
    #[link_name = "weft:plugin/filter@0.2.0#on-tick"]
    fn g_tick();
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#on-tick"]
    fn g_tick_post();
    #[link_name = "weft:plugin/filter@0.2.0#on-http-call-response"]
    fn g_call_response(token: u32, status: u32, body: *mut u8, len: usize);
    #[link_name = "cabi_post_weft:plugin/filter@0.2.0#on-http-call-response"]
    fn g_call_response_post();
}

#[link(wasm_import_module = "weft:glue")]
unsafe extern "C" {
    /// The glue's root pointer (a mutable global the fuser adds; 0 until first use).
    fn state() -> *mut State;
    /// Sets the root pointer.
    fn set_state(s: *mut State);
}

// ---------------------------------------------------------------------------------------------
// State, in guest memory.

/// Everything the glue keeps between calls. It lives in guest memory (allocated zeroed on first
/// use; all zeros is a valid empty state) and is reached through [`State::with`] alone.
#[repr(C)]
struct State {
    /// Out-parameters of Proxy-Wasm calls (written by the host; see [`Ret`]).
    ret_ptr: *mut u8,
    ret_len: usize,
    ret_u32: u32,
    ret_u64: u64,
    /// A short key for host calls (`:status`), so it needs no data segment.
    key: u64,
    /// Set by [`State::with`] while a closure runs: a nested access traps.
    busy: bool,
    /// `proxy_on_memory_allocate` serves the host from `scratch` instead of a fresh allocation.
    alloc_in_scratch: bool,
    scratch: Buf,
    /// The plugin configuration (JSON text), read in `proxy_on_configure`.
    config: Buf,
    /// Context id → stream handle.
    streams: ContextTable,
    /// Stream handle → the guest's resource rep.
    handles: Handles,
    /// Proxy-Wasm metric ids by kind and full name.
    metrics: Metrics,
    /// Partial lines of guest stdout / stderr.
    out_line: Buf,
    err_line: Buf,
    /// xorshift state for the WASI random shims.
    rng: u64,
}

impl State {
    /// The state's address, allocated (zeroed) on first use.
    fn root() -> *mut State {
        // SAFETY: the getter and setter of a global the fuser adds, which only this function
        // writes: it holds null or the block allocated here.
        unsafe {
            let mut s = state();
            if s.is_null() {
                let size = core::mem::size_of::<State>();
                s = alloc(size, 8) as *mut State;
                core::ptr::write_bytes(s as *mut u8, 0, size);
                set_state(s);
            }
            s
        }
    }

    /// Runs `f` on the state: the one place that borrows it.
    ///
    /// `f` must not reach another `with` (that traps): it may call the guest's `cabi_realloc`
    /// and Proxy-Wasm functions that do not call back into the module, but not the guest's
    /// other exports, nor a Proxy-Wasm function that returns memory (the host allocates it with
    /// `proxy_on_memory_allocate`): those calls go between two `with`s (see [`host_buffer`]).
    fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        let root = State::root();
        // SAFETY: `root` is the state's block, aligned and initialized (all zeros is valid for
        // every field). `busy` is read and written through the raw pointer, before any
        // reference exists.
        unsafe {
            if (*root).busy {
                trap();
            }
            (*root).busy = true;
        }
        // SAFETY: `busy` was clear, so no other reference to the state is live: this is the
        // only one until `f` returns (a nested `with` traps above).
        let r = f(unsafe { &mut *root });
        // SAFETY: the reference given to `f` is dead.
        unsafe { (*root).busy = false };
        r
    }
}

/// Where Proxy-Wasm calls write their answers: the state's out-parameters, as raw pointers
/// derived from the root (not from a borrow), because the host writes them while the glue may
/// be re-entered through `proxy_on_memory_allocate`.
struct Ret {
    ptr: *mut *mut u8,
    len: *mut usize,
    u32: *mut u32,
    u64: *mut u64,
    key: *const u8,
}

impl Ret {
    fn get() -> Ret {
        let s = State::root();
        // SAFETY: `s` is the state's block; these are place projections, no reference is made.
        unsafe {
            Ret {
                ptr: &raw mut (*s).ret_ptr,
                len: &raw mut (*s).ret_len,
                u32: &raw mut (*s).ret_u32,
                u64: &raw mut (*s).ret_u64,
                key: (&raw const (*s).key) as *const u8,
            }
        }
    }
}

/// Calls a Proxy-Wasm function that answers with a host-allocated buffer through
/// `(ret.ptr, ret.len)`, both reset first. With `in_scratch`, `proxy_on_memory_allocate` serves
/// that buffer from the scratch buffer (for answers the glue reads and forgets); otherwise it is
/// a fresh allocation the glue can hand to the guest. Returns the status and the buffer.
fn host_buffer(in_scratch: bool, call: impl FnOnce(&Ret) -> u32) -> (u32, *mut u8, usize) {
    let ret = Ret::get();
    State::with(|s| {
        s.alloc_in_scratch = in_scratch;
        s.ret_ptr = null_mut();
        s.ret_len = 0;
    });
    let status = call(&ret);
    State::with(|s| {
        s.alloc_in_scratch = false;
        (status, s.ret_ptr, s.ret_len)
    })
}

/// A guest-owned copy of `src` (the guest frees it). Empty → the dangling pointer 1.
fn copy_out(src: &[u8]) -> List {
    if src.is_empty() {
        return List::empty();
    }
    let p = alloc(src.len(), 1);
    // SAFETY: `p` is a fresh block of `src.len()` bytes.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
    List::new(p, src.len())
}

/// A guest-owned string `status <n>` describing a failed Proxy-Wasm call.
fn status_message(status: u32) -> List {
    State::with(|s| {
        s.scratch.clear();
        s.scratch.push_le(0x20737574617473, 7); // "status "
        s.scratch.push_decimal(status);
        copy_out(s.scratch.as_slice())
    })
}

/// The strings of a canonical `list<tuple<string, string>>` of `n` pairs at `list`.
///
/// # Safety
///
/// `list` and every string in it are valid per the canonical ABI, unchanged while the iterator
/// and its slices are used.
unsafe fn pairs<'a>(
    list: *const Pair,
    n: usize,
) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone {
    (0..n).map(move |i| {
        // SAFETY: the caller's contract: `list` has `n` pairs of valid strings.
        unsafe {
            let pair = get(list.add(i));
            (
                bytes(pair.key.addr(), pair.key.len()),
                bytes(pair.value.addr(), pair.value.len()),
            )
        }
    })
}

/// Turns a serialized header map at `src` (`len` bytes) into a guest-owned canonical list; every
/// string is its own allocation, as the guest frees them one by one.
fn deserialize_pairs(src: *const u8, len: usize) -> List {
    if src.is_null() {
        return List::empty();
    }
    // SAFETY: the host wrote `len` bytes at `src` (a block of the glue's or the guest's), which
    // nothing else writes while they are read here.
    let Some(map) = header_map::parse(unsafe { bytes(src, len) }) else {
        return List::empty();
    };
    let list = alloc(map.declared() * 16, 4) as *mut Pair;
    let mut kept = 0;
    for (key, value) in map {
        let pair = Pair {
            key: copy_out(key),
            value: copy_out(value),
        };
        // SAFETY: `kept < declared`: the iterator yields at most the declared pairs.
        unsafe { put(list.add(kept), pair) };
        kept += 1;
    }
    List::new(list as *const u8, kept)
}

// ---------------------------------------------------------------------------------------------
// Resource handles.

/// Drops handle `h` and runs the resource's destructor; traps on a dead handle.
fn handle_drop(h: u32) {
    let Some(rep) = State::with(|s| s.handles.drop_handle(h)) else {
        trap()
    };
    // SAFETY: the guest's destructor of a rep it created, called once (the handle is gone).
    unsafe { g_dtor(rep) };
}

#[unsafe(export_name = "[export]weft:plugin/filter@0.2.0#[resource-new]http-stream")]
extern "C" fn resource_new(rep: u32) -> u32 {
    State::with(|s| s.handles.new_handle(rep))
}

#[unsafe(export_name = "[export]weft:plugin/filter@0.2.0#[resource-rep]http-stream")]
extern "C" fn resource_rep(h: u32) -> u32 {
    State::with(|s| s.handles.rep(h)).unwrap_or_else(|| trap())
}

#[unsafe(export_name = "[export]weft:plugin/filter@0.2.0#[resource-drop]http-stream")]
extern "C" fn resource_drop(h: u32) {
    handle_drop(h)
}

// ---------------------------------------------------------------------------------------------
// Proxy-Wasm exports: the entry points Envoy calls.

#[unsafe(no_mangle)]
extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let scratch = State::with(|s| {
        if !s.alloc_in_scratch {
            return None;
        }
        s.scratch.clear();
        s.scratch.reserve(if size == 0 { 1 } else { size });
        Some(s.scratch.as_ptr())
    });
    scratch.unwrap_or_else(|| alloc(size, 1))
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    if parent == 0 {
        // The root context: the plugin itself, configured in proxy_on_configure.
        return;
    }
    // SAFETY: the guest's constructor (it calls `[resource-new]`, outside any `with`), then
    // its post-return with its result, as the ABI says.
    let handle = unsafe {
        let handle = g_new();
        g_new_post(handle);
        handle
    };
    State::with(|s| s.streams.insert(ctx, handle));
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_vm_start(_root: u32, _vm_config_size: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    State::with(|s| s.config.clear());
    if size > 0 {
        let (status, p, len) = host_buffer(true, |r| {
            // SAFETY: the out-parameters are the state's.
            unsafe { proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, size, r.ptr, r.len) }
        });
        if status == OK && !p.is_null() {
            // The scratch buffer is reused by every call: keep the configuration apart.
            State::with(|s| {
                // SAFETY: the host wrote `len` bytes at `p`, in the scratch buffer, which is not
                // `config` and is not written meanwhile.
                s.config.push(unsafe { bytes(p, len) });
            });
        }
    }
    // SAFETY: the guest's `init`; its result is its return area, read before `cabi_post`.
    unsafe {
        let r = g_init() as *const InitResult;
        let ok = get(&raw const (*r).tag) == 0;
        if !ok {
            let message = get(&raw const (*r).payload.message);
            proxy_log(LOG_CRITICAL, message.addr(), message.len());
        }
        g_init_post(r as *mut u8);
        ok as u32
    }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_tick(_root: u32) {
    // SAFETY: the guest's export and its post-return, outside any `with`.
    unsafe {
        g_tick();
        g_tick_post();
    }
}

/// The stream's resource rep, or a trap for a context Envoy never created (a host bug).
fn rep_of(ctx: u32) -> u32 {
    State::with(|s| s.streams.get(ctx).and_then(|h| s.handles.rep(h))).unwrap_or_else(|| trap())
}

/// Turns a returned `action` into a Proxy-Wasm action: `continue` → 0, `pause` → 1
/// (StopIteration / StopIterationAndBuffer), `respond` → send it, then 1. Then runs `post`.
///
/// # Safety
///
/// `r` is the return area of a guest export that returns an `action`; `post` is its
/// `cabi_post_*`.
unsafe fn action(r: *mut u8, post: impl FnOnce(*mut u8)) -> u32 {
    let a = r as *const Action;
    // SAFETY: the caller's contract: `r` holds an `action`; the response is read only for the
    // `respond` case, whose payload the guest wrote, and its lists stay valid until `post`.
    let out = unsafe {
        match get(&raw const (*a).tag) {
            abi::ACTION_CONTINUE => 0,
            abi::ACTION_PAUSE => 1,
            _ => {
                let resp = get(&raw const (*a).payload);
                respond(resp.status as u32, resp.headers, resp.body, resp.details);
                1
            }
        }
    };
    post(r);
    out
}

/// Sends a local response: the headers serialized in the scratch buffer; the body and the
/// details passed on as the guest gave them.
///
/// # Safety
///
/// `headers` is a canonical list of valid pairs, `body` and `details` valid lists.
unsafe fn respond(status: u32, headers: List, body: List, details: List) {
    let (p, len) = State::with(|s| {
        s.scratch.clear();
        // SAFETY: the caller's contract; the guest's strings are not in the scratch buffer.
        let headers = unsafe { pairs(headers.addr() as *const Pair, headers.len()) };
        header_map::serialize(&mut s.scratch, headers);
        (s.scratch.as_ptr(), s.scratch.len())
    });
    // SAFETY: every pointer is valid for its length: the guest's, and the scratch buffer's.
    unsafe {
        proxy_send_local_response(
            status,
            details.addr(),
            details.len(),
            body.addr(),
            body.len(),
            p,
            len,
            -1,
        );
    }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_request_headers(ctx: u32, n: u32, eos: u32) -> u32 {
    // SAFETY: the guest's export and its post-return, called as the ABI says.
    unsafe {
        action(g_req_headers(rep_of(ctx), n, eos), |r| {
            g_req_headers_post(r)
        })
    }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_request_body(ctx: u32, size: u32, eos: u32) -> u32 {
    // SAFETY: the guest's export and its post-return, called as the ABI says.
    unsafe { action(g_req_body(rep_of(ctx), size, eos), |r| g_req_body_post(r)) }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_request_trailers(ctx: u32, n: u32) -> u32 {
    // SAFETY: the guest's export and its post-return, called as the ABI says.
    unsafe { action(g_req_trailers(rep_of(ctx), n), |r| g_req_trailers_post(r)) }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_response_headers(ctx: u32, n: u32, eos: u32) -> u32 {
    // SAFETY: the guest's export and its post-return, called as the ABI says.
    unsafe {
        action(g_resp_headers(rep_of(ctx), n, eos), |r| {
            g_resp_headers_post(r)
        })
    }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_response_body(ctx: u32, size: u32, eos: u32) -> u32 {
    // SAFETY: the guest's export and its post-return, called as the ABI says.
    unsafe { action(g_resp_body(rep_of(ctx), size, eos), |r| g_resp_body_post(r)) }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_response_trailers(ctx: u32, n: u32) -> u32 {
    // SAFETY: the guest's export and its post-return, called as the ABI says.
    unsafe { action(g_resp_trailers(rep_of(ctx), n), |r| g_resp_trailers_post(r)) }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_done(_ctx: u32) -> u32 {
    1
}

/// Envoy's access-log phase: the stream is over and its attributes are complete.
#[unsafe(no_mangle)]
extern "C" fn proxy_on_log(ctx: u32) {
    let rep = State::with(|s| s.streams.get(ctx).map(|h| s.handles.rep(h)));
    match rep {
        // SAFETY: the guest's export for a live stream, outside any `with`.
        Some(Some(rep)) => unsafe {
            g_done(rep);
            g_done_post();
        },
        Some(None) => trap(),
        None => {}
    }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_delete(ctx: u32) {
    if let Some(h) = State::with(|s| s.streams.remove(ctx)) {
        handle_drop(h);
    }
}

#[unsafe(no_mangle)]
extern "C" fn proxy_on_http_call_response(
    _ctx: u32,
    token: u32,
    headers: u32,
    body_size: usize,
    _trailers: u32,
) {
    let mut status = 0u32;
    if headers > 0 {
        // ":status" as 7 bytes of the state's `key`, so it needs no data segment.
        State::with(|s| s.key = 0x7375746174733a);
        let (rc, p, len) = host_buffer(true, |r| {
            // SAFETY: `r.key` holds 7 bytes; the out-parameters are the state's.
            unsafe { proxy_get_header_map_value(MAP_CALL_RESPONSE_HEADERS, r.key, 7, r.ptr, r.len) }
        });
        if rc == OK {
            // SAFETY: the host wrote `len` bytes at `p` (the scratch buffer), unchanged here.
            for &d in unsafe { bytes(p, len) } {
                if d.is_ascii_digit() {
                    status = status.wrapping_mul(10).wrapping_add((d - b'0') as u32);
                }
            }
        }
    }
    let mut body = List::empty();
    if body_size > 0 {
        let (rc, p, len) = host_buffer(false, |r| {
            // SAFETY: the out-parameters are the state's.
            unsafe { proxy_get_buffer_bytes(BUF_CALL_RESPONSE_BODY, 0, body_size, r.ptr, r.len) }
        });
        if rc == OK && !p.is_null() {
            body = List::raw(p, len);
        }
    }
    // SAFETY: the guest's export; `body` is a fresh allocation the guest now owns.
    unsafe {
        g_call_response(token, status & 0xffff, body.addr(), body.len());
        g_call_response_post();
    }
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/log, clock, config.

#[unsafe(export_name = "weft:plugin/log@0.2.0#log")]
unsafe extern "C" fn log_log(level: u32, ptr: *const u8, len: usize) {
    // SAFETY: the ABI: the message is valid for `len` bytes.
    unsafe { proxy_log(level, ptr, len) };
}

#[unsafe(export_name = "weft:plugin/log@0.2.0#enabled")]
extern "C" fn log_enabled(level: u32) -> u32 {
    let ret = Ret::get();
    // SAFETY: the out-parameter is the state's.
    if unsafe { proxy_get_log_level(ret.u32) } != OK {
        return 1;
    }
    (level >= State::with(|s| s.ret_u32)) as u32
}

#[unsafe(export_name = "weft:plugin/clock@0.2.0#now")]
extern "C" fn clock_now() -> u64 {
    now()
}

/// Proxy-Wasm's current time in nanoseconds (0 if the host fails).
fn now() -> u64 {
    let ret = Ret::get();
    State::with(|s| s.ret_u64 = 0);
    // SAFETY: the out-parameter is the state's.
    unsafe { proxy_get_current_time_nanoseconds(ret.u64) };
    State::with(|s| s.ret_u64)
}

#[unsafe(export_name = "weft:plugin/config@0.2.0#get-json")]
unsafe extern "C" fn config_get_json(ret: *mut List) {
    let json = State::with(|s| {
        if s.config.is_empty() {
            let p = alloc(2, 1);
            // SAFETY: `p` is a fresh block of 2 bytes.
            unsafe {
                p.write(b'{');
                p.add(1).write(b'}');
            }
            List::new(p, 2)
        } else {
            copy_out(s.config.as_slice())
        }
    });
    // SAFETY: the ABI: `ret` is the result's return area.
    unsafe { put(ret, json) };
}

/// `config.get(key)`: the value of a top-level key of the JSON configuration.
#[unsafe(export_name = "weft:plugin/config@0.2.0#get")]
unsafe extern "C" fn config_get(key: *const u8, key_len: usize, ret: *mut OptionList) {
    // SAFETY: the ABI: `key` is valid for `key_len` bytes (the guest's, not the glue's).
    let key = unsafe { bytes(key, key_len) };
    // SAFETY: the ABI: `ret` is an `option<string>` return area.
    unsafe { put(&raw mut (*ret).tag, 0) };
    let found = State::with(
        |s| match json::get(s.config.as_slice(), key, &mut s.scratch)? {
            json::Value::Unescaped => Some(copy_out(s.scratch.as_slice())),
            json::Value::Raw(raw) => Some(copy_out(raw)),
        },
    );
    if let Some(value) = found {
        // SAFETY: as above.
        unsafe {
            put(&raw mut (*ret).tag, 1);
            put(&raw mut (*ret).payload, value);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/metrics: `name.key.value…` Proxy-Wasm metrics, defined once each.

/// The id of the metric `name` with `labels` (`n` pairs), defined on first use; `None` if the
/// host refuses to define it.
///
/// # Safety
///
/// `name` is valid for `name_len` bytes and `labels` is a canonical list of `n` valid pairs.
unsafe fn metric_id(
    kind: u32,
    name: *const u8,
    name_len: usize,
    labels: *const Pair,
    n: usize,
) -> Option<u32> {
    // SAFETY: the caller's contract: the name and the labels are valid (and not in the scratch
    // buffer, which the miss path below writes).
    let (name, labels) = unsafe { (bytes(name, name_len), pairs(labels, n)) };
    let len = labels
        .clone()
        .fold(name.len(), |n, (k, v)| n + 2 + k.len() + v.len());
    // Whether a defined name is `name.k1.v1…`, compared piece by piece. (`dot` is on the
    // stack: a promoted `&[b'.']` would be a data segment, which the glue may not have.)
    let dot = [b'.'];
    let is_name = |mut defined: &[u8]| {
        let mut piece = |p: &[u8]| match defined.split_at_checked(p.len()) {
            Some((head, tail)) if metrics::same_bytes(head, p) => {
                defined = tail;
                true
            }
            _ => false,
        };
        if !piece(name) {
            return false;
        }
        for (key, value) in labels.clone() {
            if !(piece(&dot) && piece(key) && piece(&dot) && piece(value)) {
                return false;
            }
        }
        defined.is_empty()
    };
    // The common case: a metric defined before, found without building its name.
    if let Some(id) = State::with(|s| s.metrics.find_with(kind, len, is_name)) {
        return Some(id);
    }
    let (found, full, full_len) = State::with(|s| {
        s.scratch.clear();
        s.scratch.push(name);
        for (key, value) in labels {
            s.scratch.push_byte(b'.');
            s.scratch.push(key);
            s.scratch.push_byte(b'.');
            s.scratch.push(value);
        }
        let found = s.metrics.find(kind, s.scratch.as_slice());
        (found, s.scratch.as_ptr(), s.scratch.len())
    });
    if found.is_some() {
        return found;
    }
    let ret = Ret::get();
    // SAFETY: the full name is in the scratch buffer; the out-parameter is the state's.
    if unsafe { proxy_define_metric(kind, full, full_len, ret.u32) } != OK {
        return None;
    }
    State::with(|s| {
        let id = s.ret_u32;
        // The scratch buffer still holds the full name: nothing ran in between.
        s.metrics.insert(kind, s.scratch.as_slice(), id);
        Some(id)
    })
}

#[unsafe(export_name = "weft:plugin/metrics@0.2.0#counter-add")]
unsafe extern "C" fn metrics_counter_add(
    name: *const u8,
    nl: usize,
    labels: *const Pair,
    n: usize,
    delta: u64,
) {
    // SAFETY: the ABI: the name and the labels are valid.
    if let Some(id) = unsafe { metric_id(METRIC_COUNTER, name, nl, labels, n) } {
        // SAFETY: a plain host call.
        unsafe { proxy_increment_metric(id, delta as i64) };
    }
}

#[unsafe(export_name = "weft:plugin/metrics@0.2.0#gauge-set")]
unsafe extern "C" fn metrics_gauge_set(
    name: *const u8,
    nl: usize,
    labels: *const Pair,
    n: usize,
    value: i64,
) {
    // SAFETY: the ABI: the name and the labels are valid.
    if let Some(id) = unsafe { metric_id(METRIC_GAUGE, name, nl, labels, n) } {
        // SAFETY: a plain host call.
        unsafe { proxy_record_metric(id, value as u64) };
    }
}

#[unsafe(export_name = "weft:plugin/metrics@0.2.0#histogram-record")]
unsafe extern "C" fn metrics_histogram_record(
    name: *const u8,
    nl: usize,
    labels: *const Pair,
    n: usize,
    value: u64,
) {
    // SAFETY: the ABI: the name and the labels are valid.
    if let Some(id) = unsafe { metric_id(METRIC_HISTOGRAM, name, nl, labels, n) } {
        // SAFETY: a plain host call.
        unsafe { proxy_record_metric(id, value) };
    }
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/keyvalue: Proxy-Wasm shared data.

/// Writes `err(other("status <rc>"))` of a `result<…, keyvalue.error>` at `ret`.
///
/// # Safety
///
/// `ret` is the return area of such a result.
unsafe fn kv_error(ret: *mut KvErr, rc: u32) {
    let message = status_message(rc);
    // SAFETY: the caller's contract.
    unsafe {
        put(&raw mut (*ret).tag, 1);
        put(&raw mut (*ret).payload.case, abi::KV_OTHER);
        put(&raw mut (*ret).payload.message, message);
    }
}

/// `get: func(key) -> result<option<entry>, error>`.
#[unsafe(export_name = "weft:plugin/keyvalue@0.2.0#get")]
unsafe extern "C" fn kv_get(key: *const u8, kl: usize, ret: *mut u8) {
    State::with(|s| s.ret_u32 = 0);
    let (rc, p, len) = host_buffer(false, |r| {
        // SAFETY: the ABI: `key` is valid for `kl` bytes; the out-parameters are the state's.
        unsafe { proxy_get_shared_data(key, kl, r.ptr, r.len, r.u32) }
    });
    let ok = ret as *mut KvGetOk;
    // SAFETY: the ABI: `ret` is the result's return area (20 bytes: see abi.rs).
    unsafe {
        match rc {
            OK => {
                let cas = State::with(|s| s.ret_u32);
                put(&raw mut (*ok).tag, 0);
                put(&raw mut (*ok).payload.tag, 1);
                put(&raw mut (*ok).payload.payload.value, List::new(p, len));
                put(&raw mut (*ok).payload.payload.cas, cas);
            }
            NOT_FOUND => {
                put(&raw mut (*ok).tag, 0);
                put(&raw mut (*ok).payload.tag, 0);
            }
            other => kv_error(ret as *mut KvErr, other),
        }
    }
}

/// `set: func(key, value, cas: option<u32>) -> result<_, error>`. `some(0)` ("only if absent")
/// has no Proxy-Wasm equivalent: it is a read then an unconditional write (see README).
#[unsafe(export_name = "weft:plugin/keyvalue@0.2.0#set")]
unsafe extern "C" fn kv_set(
    key: *const u8,
    kl: usize,
    v: *const u8,
    vl: usize,
    has_cas: u32,
    cas: u32,
    ret: *mut KvErr,
) {
    if has_cas != 0 && cas == 0 {
        let (rc, _, _) = host_buffer(true, |r| {
            // SAFETY: the ABI: `key` is valid for `kl` bytes; the out-parameters are the state's.
            unsafe { proxy_get_shared_data(key, kl, r.ptr, r.len, r.u32) }
        });
        if rc == OK {
            // SAFETY: the ABI: `ret` is the result's return area.
            unsafe {
                put(&raw mut (*ret).tag, 1);
                put(&raw mut (*ret).payload.case, abi::KV_CAS_MISMATCH);
            }
            return;
        }
    }
    let proxy_cas = if has_cas != 0 { cas } else { 0 };
    // SAFETY: the ABI: the key and the value are valid for their lengths.
    let rc = unsafe { proxy_set_shared_data(key, kl, v, vl, proxy_cas) };
    // SAFETY: the ABI: `ret` is the result's return area.
    unsafe {
        match rc {
            OK => put(&raw mut (*ret).tag, 0),
            CAS_MISMATCH => {
                put(&raw mut (*ret).tag, 1);
                put(&raw mut (*ret).payload.case, abi::KV_CAS_MISMATCH);
            }
            other => kv_error(ret, other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/http.

/// `header-map` enum → Proxy-Wasm map type (the same numbers: 0..=3).
#[inline]
fn map_type(m: u32) -> u32 {
    m & 3
}

#[inline]
fn body_type(b: u32) -> u32 {
    if b == 0 {
        BUF_REQUEST_BODY
    } else {
        BUF_RESPONSE_BODY
    }
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#get-header")]
unsafe extern "C" fn http_get_header(m: u32, k: *const u8, kl: usize, ret: *mut OptionList) {
    let (rc, p, len) = host_buffer(false, |r| {
        // SAFETY: the ABI: `k` is valid for `kl` bytes; the out-parameters are the state's.
        unsafe { proxy_get_header_map_value(map_type(m), k, kl, r.ptr, r.len) }
    });
    // SAFETY: the ABI: `ret` is an `option<string>` return area.
    unsafe {
        if rc == OK {
            put(&raw mut (*ret).tag, 1);
            put(&raw mut (*ret).payload, List::new(p, len));
        } else {
            put(&raw mut (*ret).tag, 0);
        }
    }
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#get-headers")]
unsafe extern "C" fn http_get_headers(m: u32, ret: *mut List) {
    let (rc, p, len) = host_buffer(true, |r| {
        // SAFETY: the out-parameters are the state's.
        unsafe { proxy_get_header_map_pairs(map_type(m), r.ptr, r.len) }
    });
    let list = if rc == OK {
        deserialize_pairs(p, len)
    } else {
        List::empty()
    };
    // SAFETY: the ABI: `ret` is a `list` return area.
    unsafe { put(ret, list) };
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#set-header")]
unsafe extern "C" fn http_set_header(m: u32, k: *const u8, kl: usize, v: *const u8, vl: usize) {
    // SAFETY: the ABI: the key and the value are valid for their lengths.
    unsafe { proxy_replace_header_map_value(map_type(m), k, kl, v, vl) };
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#add-header")]
unsafe extern "C" fn http_add_header(m: u32, k: *const u8, kl: usize, v: *const u8, vl: usize) {
    // SAFETY: the ABI: the key and the value are valid for their lengths.
    unsafe { proxy_add_header_map_value(map_type(m), k, kl, v, vl) };
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#remove-header")]
unsafe extern "C" fn http_remove_header(m: u32, k: *const u8, kl: usize) {
    // SAFETY: the ABI: the key is valid for its length.
    unsafe { proxy_remove_header_map_value(map_type(m), k, kl) };
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#get-body")]
unsafe extern "C" fn http_get_body(b: u32, start: usize, len: usize, ret: *mut List) {
    let mut body = List::empty();
    if len > 0 {
        let (rc, p, got) = host_buffer(false, |r| {
            // SAFETY: the out-parameters are the state's.
            unsafe { proxy_get_buffer_bytes(body_type(b), start, len, r.ptr, r.len) }
        });
        if rc == OK {
            body = List::new(p, got);
        }
    }
    // SAFETY: the ABI: `ret` is a `list` return area.
    unsafe { put(ret, body) };
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#replace-body")]
unsafe extern "C" fn http_replace_body(
    b: u32,
    start: usize,
    len: usize,
    data: *const u8,
    dl: usize,
) {
    // SAFETY: the ABI: the data is valid for its length.
    unsafe { proxy_set_buffer_bytes(body_type(b), start, len, data, dl) };
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#send-local-response")]
unsafe extern "C" fn http_send_local_response(
    status: u32,
    headers: *const Pair,
    n: usize,
    body: *const u8,
    bl: usize,
    details: *const u8,
    dl: usize,
) {
    let (headers, body, details) = (
        List::raw(headers as *const u8, n),
        List::raw(body, bl),
        List::raw(details, dl),
    );
    // SAFETY: the ABI: the headers, the body and the details are valid.
    unsafe { respond(status, headers, body, details) };
}

/// `get-property: func(path: list<string>) -> option<list<u8>>`: segments joined with NUL.
#[unsafe(export_name = "weft:plugin/http@0.2.0#get-property")]
unsafe extern "C" fn http_get_property(path: *const List, n: usize, ret: *mut OptionList) {
    let (p, len) = State::with(|s| {
        s.scratch.clear();
        for i in 0..n {
            if i > 0 {
                s.scratch.push_byte(0);
            }
            // SAFETY: the ABI: `path` is a list of `n` valid strings (the guest's).
            let segment = unsafe { get(path.add(i)) };
            // SAFETY: as above.
            s.scratch
                .push(unsafe { bytes(segment.addr(), segment.len()) });
        }
        (s.scratch.as_ptr(), s.scratch.len())
    });
    // The value is a fresh allocation for the guest, so the path may stay in scratch.
    let (rc, vp, vl) = host_buffer(false, |r| {
        // SAFETY: the path is `len` bytes at `p`; the out-parameters are the state's.
        unsafe { proxy_get_property(p, len, r.ptr, r.len) }
    });
    // SAFETY: the ABI: `ret` is an `option<list<u8>>` return area.
    unsafe {
        if rc == OK {
            put(&raw mut (*ret).tag, 1);
            put(&raw mut (*ret).payload, List::new(vp, vl));
        } else {
            put(&raw mut (*ret).tag, 0);
        }
    }
}

#[unsafe(export_name = "weft:plugin/http@0.2.0#set-tick-period")]
extern "C" fn http_set_tick_period(ms: u32) {
    // SAFETY: a plain host call.
    unsafe { proxy_set_tick_period_milliseconds(ms) };
}

/// `dispatch-http-call(upstream, headers, body, timeout-ms) -> result<u32, string>`.
#[unsafe(export_name = "weft:plugin/http@0.2.0#dispatch-http-call")]
unsafe extern "C" fn http_dispatch_http_call(
    up: *const u8,
    ul: usize,
    headers: *const Pair,
    n: usize,
    body: *const u8,
    bl: usize,
    timeout: u32,
    ret: *mut u8,
) {
    let (p, headers_len) = State::with(|s| {
        s.scratch.clear();
        // SAFETY: the ABI: `headers` is a list of `n` valid pairs (the guest's).
        header_map::serialize(&mut s.scratch, unsafe { pairs(headers, n) });
        // An empty trailer map after the headers.
        let headers_len = s.scratch.len();
        s.scratch.push_le(0, 4);
        (s.scratch.as_ptr(), headers_len)
    });
    let ret_slots = Ret::get();
    // SAFETY: the ABI: the upstream and the body are valid; the headers and the 4-byte trailer
    // map are in the scratch buffer; the out-parameter is the state's.
    let rc = unsafe {
        proxy_http_call(
            up,
            ul,
            p,
            headers_len,
            body,
            bl,
            p.add(headers_len),
            4,
            timeout,
            ret_slots.u32,
        )
    };
    if rc == OK {
        let token = State::with(|s| s.ret_u32);
        let ok = ret as *mut ResultU32;
        // SAFETY: the ABI: `ret` is a `result<u32, string>` return area.
        unsafe {
            put(&raw mut (*ok).tag, 0);
            put(&raw mut (*ok).payload, token);
        }
    } else {
        let message = status_message(rc);
        let err = ret as *mut OptionList;
        // SAFETY: as above (the `err(string)` case).
        unsafe {
            put(&raw mut (*err).tag, 1);
            put(&raw mut (*err).payload, message);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WASI 0.2 shims for what a Rust `std` guest imports. Names carry `@0.2`: the fuser matches any
// 0.2.x version. Output streams: 1 = stdout, 2 = stderr; lines go to `proxy_log`.

/// Writes the discriminant `tag` at `ret` (for an `option` that is `none`, or a `result` that
/// is `ok` with no payload).
///
/// # Safety
///
/// `ret` is a return area.
unsafe fn put_tag(ret: *mut u8, tag: u8) {
    // SAFETY: the caller's contract.
    unsafe { put(ret, tag) };
}

#[unsafe(export_name = "wasi:cli/environment@0.2#get-environment")]
unsafe extern "C" fn wasi_get_environment(ret: *mut List) {
    // SAFETY: the ABI: `ret` is a `list` return area.
    unsafe { put(ret, List::empty()) };
}

#[unsafe(export_name = "wasi:cli/environment@0.2#get-arguments")]
unsafe extern "C" fn wasi_get_arguments(ret: *mut List) {
    // SAFETY: the ABI: `ret` is a `list` return area.
    unsafe { put(ret, List::empty()) };
}

#[unsafe(export_name = "wasi:cli/environment@0.2#initial-cwd")]
unsafe extern "C" fn wasi_initial_cwd(ret: *mut u8) {
    // SAFETY: the ABI: `ret` is an `option<string>` return area; `none`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:cli/exit@0.2#exit")]
extern "C" fn wasi_exit(_status: u32) {
    trap()
}

#[unsafe(export_name = "wasi:cli/stdin@0.2#get-stdin")]
extern "C" fn wasi_get_stdin() -> u32 {
    3
}

#[unsafe(export_name = "wasi:cli/stdout@0.2#get-stdout")]
extern "C" fn wasi_get_stdout() -> u32 {
    1
}

#[unsafe(export_name = "wasi:cli/stderr@0.2#get-stderr")]
extern "C" fn wasi_get_stderr() -> u32 {
    2
}

#[unsafe(export_name = "wasi:cli/terminal-stdin@0.2#get-terminal-stdin")]
unsafe extern "C" fn wasi_terminal_stdin(ret: *mut u8) {
    // SAFETY: the ABI: an `option<terminal-input>` return area; `none`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:cli/terminal-stdout@0.2#get-terminal-stdout")]
unsafe extern "C" fn wasi_terminal_stdout(ret: *mut u8) {
    // SAFETY: the ABI: an `option<terminal-output>` return area; `none`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:cli/terminal-stderr@0.2#get-terminal-stderr")]
unsafe extern "C" fn wasi_terminal_stderr(ret: *mut u8) {
    // SAFETY: the ABI: an `option<terminal-output>` return area; `none`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:cli/terminal-input@0.2#[resource-drop]terminal-input")]
extern "C" fn wasi_drop_terminal_input(_h: u32) {}

#[unsafe(export_name = "wasi:cli/terminal-output@0.2#[resource-drop]terminal-output")]
extern "C" fn wasi_drop_terminal_output(_h: u32) {}

#[unsafe(export_name = "wasi:io/error@0.2#[resource-drop]error")]
extern "C" fn wasi_drop_error(_h: u32) {}

#[unsafe(export_name = "wasi:io/error@0.2#[method]error.to-debug-string")]
unsafe extern "C" fn wasi_error_to_debug_string(_h: u32, ret: *mut List) {
    // SAFETY: the ABI: `ret` is a `string` return area.
    unsafe { put(ret, List::empty()) };
}

#[unsafe(export_name = "wasi:io/poll@0.2#[resource-drop]pollable")]
extern "C" fn wasi_drop_pollable(_h: u32) {}

#[unsafe(export_name = "wasi:io/poll@0.2#[method]pollable.block")]
extern "C" fn wasi_pollable_block(_h: u32) {}

#[unsafe(export_name = "wasi:io/poll@0.2#[method]pollable.ready")]
extern "C" fn wasi_pollable_ready(_h: u32) -> u32 {
    1
}

/// `poll(list<borrow<pollable>>) -> list<u32>`: every pollable is ready. Proxy-Wasm has no way
/// to block a callback, so the glue's pollables (clock subscriptions, stream readiness) are ready
/// at once; a guest that sleeps does not sleep.
#[unsafe(export_name = "wasi:io/poll@0.2#poll")]
unsafe extern "C" fn wasi_poll(_list: *const u32, len: usize, ret: *mut List) {
    let p = if len == 0 {
        core::ptr::dangling_mut::<u8>()
    } else {
        alloc(len * 4, 4)
    };
    for i in 0..len {
        // SAFETY: `p` is a fresh block of `len` u32s.
        unsafe { p.cast::<u32>().add(i).write(i as u32) };
    }
    // SAFETY: the ABI: `ret` is a `list<u32>` return area.
    unsafe { put(ret, List::new(p, len)) };
}

#[unsafe(export_name = "wasi:clocks/monotonic-clock@0.2#subscribe-instant")]
extern "C" fn wasi_subscribe_instant(_when: u64) -> u32 {
    1
}

#[unsafe(export_name = "wasi:clocks/monotonic-clock@0.2#subscribe-duration")]
extern "C" fn wasi_subscribe_duration(_after: u64) -> u32 {
    1
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]input-stream.subscribe")]
extern "C" fn wasi_input_subscribe(_h: u32) -> u32 {
    1
}

/// `get-directories`: Envoy gives filters no filesystem, so no directory is preopened (and no
/// `descriptor` ever exists: the fuser makes its methods trap).
#[unsafe(export_name = "wasi:filesystem/preopens@0.2#get-directories")]
unsafe extern "C" fn wasi_get_directories(ret: *mut List) {
    // SAFETY: the ABI: `ret` is a `list<tuple<descriptor, string>>` return area.
    unsafe { put(ret, List::empty()) };
}

/// `filesystem-error-code(borrow<error>) -> option<error-code>`: the glue's stream errors are
/// never filesystem errors.
#[unsafe(export_name = "wasi:filesystem/types@0.2#filesystem-error-code")]
unsafe extern "C" fn wasi_filesystem_error_code(_error: u32, ret: *mut u8) {
    // SAFETY: the ABI: an `option<error-code>` return area; `none`.
    unsafe { put_tag(ret, 0) };
}

/// `instance-network`: a handle that only the socket constructors below accept (and refuse).
#[unsafe(export_name = "wasi:sockets/instance-network@0.2#instance-network")]
extern "C" fn wasi_instance_network() -> u32 {
    1
}

#[unsafe(export_name = "wasi:sockets/network@0.2#[resource-drop]network")]
extern "C" fn wasi_drop_network(_h: u32) {}

/// `err(access-denied)` of a `result<own<_>, error-code>` at `ret`: Envoy gives filters no
/// sockets (they call out with `dispatch-http-call`).
///
/// # Safety
///
/// `ret` is the return area of such a result (tag at 0, payload at 4).
unsafe fn socket_denied(ret: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe {
        put_tag(ret, 1);
        put(ret.add(4), abi::SOCKET_ACCESS_DENIED);
    }
}

#[unsafe(export_name = "wasi:sockets/tcp-create-socket@0.2#create-tcp-socket")]
unsafe extern "C" fn wasi_create_tcp_socket(_family: u32, ret: *mut u8) {
    // SAFETY: the ABI: `ret` is a `result<tcp-socket, error-code>` return area.
    unsafe { socket_denied(ret) };
}

#[unsafe(export_name = "wasi:sockets/udp-create-socket@0.2#create-udp-socket")]
unsafe extern "C" fn wasi_create_udp_socket(_family: u32, ret: *mut u8) {
    // SAFETY: the ABI: `ret` is a `result<udp-socket, error-code>` return area.
    unsafe { socket_denied(ret) };
}

#[unsafe(export_name = "wasi:sockets/ip-name-lookup@0.2#resolve-addresses")]
unsafe extern "C" fn wasi_resolve_addresses(
    _network: u32,
    _name: *const u8,
    _len: usize,
    ret: *mut u8,
) {
    // SAFETY: the ABI: `ret` is a `result<resolve-address-stream, error-code>` return area.
    unsafe { socket_denied(ret) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[resource-drop]input-stream")]
extern "C" fn wasi_drop_input_stream(_h: u32) {}

#[unsafe(export_name = "wasi:io/streams@0.2#[resource-drop]output-stream")]
extern "C" fn wasi_drop_output_stream(h: u32) {
    flush_line(h);
}

/// `err(closed)` of a `result<list<u8>, stream-error>` at `ret`.
///
/// # Safety
///
/// `ret` is the return area of such a result.
unsafe fn read_closed(ret: *mut ReadErr) {
    // SAFETY: the caller's contract.
    unsafe {
        put(&raw mut (*ret).tag, 1);
        put(&raw mut (*ret).payload.case, abi::STREAM_CLOSED);
    }
}

/// `read` / `blocking-read` on stdin: `result<list<u8>, stream-error>` = error `closed`.
#[unsafe(export_name = "wasi:io/streams@0.2#[method]input-stream.read")]
unsafe extern "C" fn wasi_input_read(_h: u32, _len: u64, ret: *mut ReadErr) {
    // SAFETY: the ABI: `ret` is the result's return area.
    unsafe { read_closed(ret) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]input-stream.blocking-read")]
unsafe extern "C" fn wasi_input_blocking_read(_h: u32, _len: u64, ret: *mut ReadErr) {
    // SAFETY: the ABI: `ret` is the result's return area.
    unsafe { read_closed(ret) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.check-write")]
unsafe extern "C" fn wasi_check_write(_h: u32, ret: *mut ResultU64) {
    // SAFETY: the ABI: `ret` is a `result<u64, stream-error>` return area.
    unsafe {
        put(&raw mut (*ret).tag, 0);
        put(&raw mut (*ret).payload, 1 << 20);
    }
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.write")]
unsafe extern "C" fn wasi_write(h: u32, p: *const u8, len: usize, ret: *mut u8) {
    // SAFETY: the ABI: the contents are valid for `len` bytes (the guest's).
    write_lines(h, unsafe { bytes(p, len) });
    // SAFETY: the ABI: a `result<_, stream-error>` return area; `ok`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.blocking-write-and-flush")]
unsafe extern "C" fn wasi_blocking_write_and_flush(h: u32, p: *const u8, len: usize, ret: *mut u8) {
    // SAFETY: the ABI: the contents are valid for `len` bytes (the guest's).
    write_lines(h, unsafe { bytes(p, len) });
    // SAFETY: the ABI: a `result<_, stream-error>` return area; `ok`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.flush")]
unsafe extern "C" fn wasi_flush(_h: u32, ret: *mut u8) {
    // SAFETY: the ABI: a `result<_, stream-error>` return area; `ok`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.blocking-flush")]
unsafe extern "C" fn wasi_blocking_flush(_h: u32, ret: *mut u8) {
    // SAFETY: the ABI: a `result<_, stream-error>` return area; `ok`.
    unsafe { put_tag(ret, 0) };
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.subscribe")]
extern "C" fn wasi_subscribe(_h: u32) -> u32 {
    1
}

/// The partial line and the log level of output stream `h`.
fn line_of(s: &mut State, h: u32) -> (&mut Buf, u32) {
    if h == 2 {
        (&mut s.err_line, LOG_ERROR)
    } else {
        (&mut s.out_line, LOG_INFO)
    }
}

/// Logs whole lines of stdout (info) and stderr (error); keeps the last partial line.
fn write_lines(h: u32, text: &[u8]) {
    State::with(|s| {
        let (line, level) = line_of(s, h);
        for &c in text {
            if c == b'\n' {
                // SAFETY: the line is valid for its length; proxy_log does not call back.
                unsafe { proxy_log(level, line.as_ptr(), line.len()) };
                line.clear();
            } else {
                line.push_byte(c);
            }
        }
    });
}

/// Logs the partial line of stream `h`, if any.
fn flush_line(h: u32) {
    State::with(|s| {
        let (line, level) = line_of(s, h);
        if !line.is_empty() {
            // SAFETY: the line is valid for its length; proxy_log does not call back.
            unsafe { proxy_log(level, line.as_ptr(), line.len()) };
            line.clear();
        }
    });
}

#[unsafe(export_name = "wasi:clocks/wall-clock@0.2#now")]
unsafe extern "C" fn wasi_wall_now(ret: *mut Datetime) {
    let t = now();
    // SAFETY: the ABI: `ret` is a `datetime` return area.
    unsafe {
        put(&raw mut (*ret).seconds, t / 1_000_000_000);
        put(&raw mut (*ret).nanoseconds, (t % 1_000_000_000) as u32);
    }
}

#[unsafe(export_name = "wasi:clocks/wall-clock@0.2#resolution")]
unsafe extern "C" fn wasi_wall_resolution(ret: *mut Datetime) {
    // SAFETY: the ABI: `ret` is a `datetime` return area.
    unsafe {
        put(&raw mut (*ret).seconds, 0);
        put(&raw mut (*ret).nanoseconds, 1);
    }
}

/// Proxy-Wasm has only wall-clock time; it stands in for the monotonic clock.
#[unsafe(export_name = "wasi:clocks/monotonic-clock@0.2#now")]
extern "C" fn wasi_monotonic_now() -> u64 {
    now()
}

#[unsafe(export_name = "wasi:clocks/monotonic-clock@0.2#resolution")]
extern "C" fn wasi_monotonic_resolution() -> u64 {
    1
}

/// Proxy-Wasm has no randomness source: a xorshift generator seeded from the clock. It is
/// enough for hash-map seeds; it is NOT cryptographically secure (see README).
fn next_random() -> u64 {
    if State::with(|s| s.rng == 0) {
        let seed = now() | 1;
        State::with(|s| s.rng = seed);
    }
    State::with(|s| {
        let mut x = s.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.rng = x;
        x
    })
}

#[unsafe(export_name = "wasi:random/random@0.2#get-random-u64")]
extern "C" fn wasi_random_u64() -> u64 {
    next_random()
}

#[unsafe(export_name = "wasi:random/random@0.2#get-random-bytes")]
unsafe extern "C" fn wasi_random_bytes(len: u64, ret: *mut List) {
    let len = len as usize;
    let p = if len == 0 {
        core::ptr::dangling_mut::<u8>()
    } else {
        alloc(len, 1)
    };
    for i in 0..len {
        // SAFETY: `p` is a fresh block of `len` bytes.
        unsafe { p.add(i).write(next_random() as u8) };
    }
    // SAFETY: the ABI: `ret` is a `list<u8>` return area.
    unsafe { put(ret, List::new(p, len)) };
}

#[unsafe(export_name = "wasi:random/insecure@0.2#get-insecure-random-u64")]
extern "C" fn wasi_insecure_u64() -> u64 {
    next_random()
}

#[unsafe(export_name = "wasi:random/insecure-seed@0.2#insecure-seed")]
unsafe extern "C" fn wasi_insecure_seed(ret: *mut [u64; 2]) {
    let seed = [next_random(), next_random()];
    // SAFETY: the ABI: `ret` is a `tuple<u64, u64>` return area.
    unsafe { put(ret, seed) };
}
