//! The glue proper (wasm32 only). See the crate docs for the rules it follows.

#![allow(unsafe_op_in_unsafe_fn)]

use core::ptr::{null_mut, read_unaligned as rd, write_unaligned as wr};

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
// Imports: the guest's exports (resolved by the fuser), and the glue's state global.

#[link(wasm_import_module = "weft:guest")]
unsafe extern "C" {
    fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8;
    #[link_name = "weft:plugin/lifecycle@0.1.0#init"]
    fn g_init() -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/lifecycle@0.1.0#init"]
    fn g_init_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[constructor]http-stream"]
    fn g_new() -> u32;
    #[link_name = "weft:plugin/filter@0.1.0#[dtor]http-stream"]
    fn g_dtor(rep: u32);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-request-headers"]
    fn g_req_headers(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.1.0#[method]http-stream.on-request-headers"]
    fn g_req_headers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-request-body"]
    fn g_req_body(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.1.0#[method]http-stream.on-request-body"]
    fn g_req_body_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-request-trailers"]
    fn g_req_trailers(rep: u32, n: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.1.0#[method]http-stream.on-request-trailers"]
    fn g_req_trailers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-response-headers"]
    fn g_resp_headers(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.1.0#[method]http-stream.on-response-headers"]
    fn g_resp_headers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-response-body"]
    fn g_resp_body(rep: u32, n: u32, eos: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.1.0#[method]http-stream.on-response-body"]
    fn g_resp_body_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-response-trailers"]
    fn g_resp_trailers(rep: u32, n: u32) -> *mut u8;
    #[link_name = "cabi_post_weft:plugin/filter@0.1.0#[method]http-stream.on-response-trailers"]
    fn g_resp_trailers_post(r: *mut u8);
    #[link_name = "weft:plugin/filter@0.1.0#[method]http-stream.on-done"]
    fn g_done(rep: u32);
    #[link_name = "weft:plugin/filter@0.1.0#on-tick"]
    fn g_tick();
    #[link_name = "weft:plugin/filter@0.1.0#on-http-call-response"]
    fn g_call_response(token: u32, status: u32, body: *mut u8, len: usize);
}

#[link(wasm_import_module = "weft:glue")]
unsafe extern "C" {
    /// The glue's root pointer (a mutable global the fuser adds; 0 until first use).
    fn state() -> *mut State;
    fn set_state(s: *mut State);
}

// ---------------------------------------------------------------------------------------------
// State, in guest memory.

/// A growable byte buffer (never freed, only grown with `cabi_realloc`).
#[repr(C)]
struct Buf {
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

#[repr(C)]
struct State {
    /// Out-parameters of Proxy-Wasm calls.
    ret_ptr: *mut u8,
    ret_len: usize,
    ret_u32: u32,
    ret_u64: u64,
    /// `proxy_on_memory_allocate` serves the host from `scratch` instead of a fresh allocation.
    alloc_in_scratch: u32,
    scratch: Buf,
    /// The plugin configuration (JSON text), read in `proxy_on_configure`.
    config: Buf,
    /// Context id → stream handle (open addressing, linear probing, backward-shift deletion).
    ctx_keys: *mut u32,
    ctx_vals: *mut u32,
    ctx_cap: usize,
    ctx_len: usize,
    /// Resource handle table: handle `h` (1-based) → rep; free handles on a stack.
    reps: *mut u32,
    reps_cap: usize,
    reps_len: usize,
    free: *mut u32,
    free_len: usize,
    /// Metric ids by FNV-64 hash of kind and full name: `(hash, id)` pairs.
    metrics: *mut u64,
    metrics_cap: usize,
    metrics_len: usize,
    /// Partial lines of guest stdout / stderr.
    out_line: Buf,
    err_line: Buf,
    /// xorshift state for the WASI random shims.
    rng: u64,
    /// A short key for host calls (`:status`).
    key: u64,
}

#[inline]
unsafe fn alloc(size: usize, align: usize) -> *mut u8 {
    cabi_realloc(null_mut(), 0, align, size)
}

#[inline]
unsafe fn st() -> &'static mut State {
    let mut s = state();
    if s.is_null() {
        let size = core::mem::size_of::<State>();
        s = alloc(size, 8) as *mut State;
        core::ptr::write_bytes(s as *mut u8, 0, size);
        set_state(s);
    }
    &mut *s
}

/// Makes room for `need` bytes in `b` (contents kept up to `b.len`).
unsafe fn reserve(b: &mut Buf, need: usize) {
    if need <= b.cap {
        return;
    }
    let mut cap = if b.cap < 64 { 64 } else { b.cap };
    while cap < need {
        cap = cap.wrapping_mul(2);
    }
    b.ptr = cabi_realloc(b.ptr, b.cap, 8, cap);
    b.cap = cap;
}

unsafe fn push(b: &mut Buf, src: *const u8, len: usize) {
    reserve(b, b.len.wrapping_add(len));
    core::ptr::copy_nonoverlapping(src, b.ptr.add(b.len), len);
    b.len = b.len.wrapping_add(len);
}

unsafe fn push_byte(b: &mut Buf, byte: u8) {
    reserve(b, b.len.wrapping_add(1));
    *b.ptr.add(b.len) = byte;
    b.len = b.len.wrapping_add(1);
}

/// A guest-owned copy of `len` bytes (the guest frees it). Empty → the dangling pointer 1.
unsafe fn copy_out(src: *const u8, len: usize) -> *mut u8 {
    if len == 0 {
        return core::ptr::dangling_mut::<u8>();
    }
    let p = alloc(len, 1);
    core::ptr::copy_nonoverlapping(src, p, len);
    p
}

/// Writes a `list` result `(ptr, len)` at `ret`, with a non-null pointer for empty lists.
unsafe fn write_list(ret: *mut u8, ptr: *mut u8, len: usize) {
    let ptr = if len == 0 || ptr.is_null() {
        core::ptr::dangling_mut::<u8>()
    } else {
        ptr
    };
    wr(ret as *mut u32, ptr as u32);
    wr(ret.add(4) as *mut u32, len as u32);
}

/// Appends the `n` low bytes of `v`, little-endian (short constant strings without a data
/// segment).
unsafe fn push_le(b: &mut Buf, v: u64, n: usize) {
    for i in 0..n {
        push_byte(b, (v >> (8 * i)) as u8);
    }
}

/// Appends the decimal digits of `n`.
unsafe fn push_decimal(b: &mut Buf, n: u32) {
    let mut div = 1_000_000_000u32;
    while div > 1 && n / div == 0 {
        div /= 10;
    }
    while div > 0 {
        push_byte(b, b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// A guest-owned string `status <n>` describing a failed Proxy-Wasm call.
unsafe fn status_message(ret: *mut u8, status: u32) {
    let s = st();
    s.scratch.len = 0;
    push_le(&mut s.scratch, 0x20737574617473, 7); // "status "

    push_decimal(&mut s.scratch, status);
    let len = s.scratch.len;
    write_list(ret, copy_out(s.scratch.ptr, len), len);
}

// ---------------------------------------------------------------------------------------------
// Proxy-Wasm header maps: `u32 n, n × (u32 key_len, u32 value_len), then key\0 value\0 …`.

/// Serializes a canonical `list<tuple<string, string>>` into `scratch` (from offset `at`).
unsafe fn serialize_pairs(b: &mut Buf, list: *const u8, n: usize) {
    push_le(b, n as u64, 4);
    for i in 0..n {
        let e = list.add(i * 16);
        push_le(b, rd(e.add(4) as *const u32) as u64, 4);
        push_le(b, rd(e.add(12) as *const u32) as u64, 4);
    }
    for i in 0..n {
        let e = list.add(i * 16);
        push(
            b,
            rd(e as *const u32) as *const u8,
            rd(e.add(4) as *const u32) as usize,
        );
        push_byte(b, 0);
        push(
            b,
            rd(e.add(8) as *const u32) as *const u8,
            rd(e.add(12) as *const u32) as usize,
        );
        push_byte(b, 0);
    }
}

/// Turns serialized pairs at `src` (`len` bytes) into a guest-owned canonical list written at
/// `ret` as `(ptr, len)`; every string is its own allocation, as the guest frees them one by one.
unsafe fn deserialize_pairs(ret: *mut u8, src: *const u8, len: usize) {
    if src.is_null() || len < 4 {
        write_list(ret, null_mut(), 0);
        return;
    }
    let n = rd(src as *const u32) as usize;
    if n == 0 || 4 + n * 8 > len {
        write_list(ret, null_mut(), 0);
        return;
    }
    let list = alloc(n * 16, 4);
    let mut data = src.add(4 + n * 8);
    let end = src.add(len);
    let mut kept = 0;
    for i in 0..n {
        let kl = rd(src.add(4 + i * 8) as *const u32) as usize;
        let vl = rd(src.add(8 + i * 8) as *const u32) as usize;
        if data.add(kl + vl + 2) > end {
            break;
        }
        let e = list.add(kept * 16);
        wr(e as *mut u32, copy_out(data, kl) as u32);
        wr(e.add(4) as *mut u32, kl as u32);
        data = data.add(kl + 1);
        wr(e.add(8) as *mut u32, copy_out(data, vl) as u32);
        wr(e.add(12) as *mut u32, vl as u32);
        data = data.add(vl + 1);
        kept += 1;
    }
    write_list(ret, list, kept);
}

/// Runs `f` with `proxy_on_memory_allocate` serving the host from the scratch buffer.
unsafe fn with_scratch_alloc<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let s = st();
    s.alloc_in_scratch = 1;
    s.ret_ptr = null_mut();
    s.ret_len = 0;
    let r = f(s);
    s.alloc_in_scratch = 0;
    r
}

// ---------------------------------------------------------------------------------------------
// Context table and resource handles.

#[inline]
fn slot(key: u32, cap: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B1) as usize) & (cap - 1)
}

unsafe fn ctx_grow(s: &mut State) {
    let old_cap = s.ctx_cap;
    let old_keys = s.ctx_keys;
    let old_vals = s.ctx_vals;
    let cap = if old_cap == 0 { 64 } else { old_cap * 2 };
    let keys = alloc(cap * 4, 4) as *mut u32;
    let vals = alloc(cap * 4, 4) as *mut u32;
    core::ptr::write_bytes(keys as *mut u8, 0, cap * 4);
    s.ctx_keys = keys;
    s.ctx_vals = vals;
    s.ctx_cap = cap;
    s.ctx_len = 0;
    for i in 0..old_cap {
        let k = *old_keys.add(i);
        if k != 0 {
            ctx_insert(s, k, *old_vals.add(i));
        }
    }
    // The old arrays are handed back to the allocator by shrinking them to nothing useful:
    // `cabi_realloc` cannot free, so growth (not churn) is the only thing that costs memory.
    if old_cap != 0 {
        cabi_realloc(old_keys as *mut u8, old_cap * 4, 4, 4);
        cabi_realloc(old_vals as *mut u8, old_cap * 4, 4, 4);
    }
}

unsafe fn ctx_insert(s: &mut State, key: u32, val: u32) {
    if (s.ctx_len + 1) * 4 > s.ctx_cap * 3 {
        ctx_grow(s);
    }
    let mut i = slot(key, s.ctx_cap);
    loop {
        let k = *s.ctx_keys.add(i);
        if k == 0 || k == key {
            if k == 0 {
                s.ctx_len += 1;
            }
            *s.ctx_keys.add(i) = key;
            *s.ctx_vals.add(i) = val;
            return;
        }
        i = (i + 1) & (s.ctx_cap - 1);
    }
}

unsafe fn ctx_find(s: &State, key: u32) -> Option<usize> {
    if s.ctx_cap == 0 || key == 0 {
        return None;
    }
    let mut i = slot(key, s.ctx_cap);
    loop {
        let k = *s.ctx_keys.add(i);
        if k == key {
            return Some(i);
        }
        if k == 0 {
            return None;
        }
        i = (i + 1) & (s.ctx_cap - 1);
    }
}

/// Removes the entry at index `i`, shifting later entries of the probe run back (no tombstones,
/// so a table that sees a million streams stays as small as the most streams at once).
unsafe fn ctx_remove_at(s: &mut State, mut i: usize) {
    let mask = s.ctx_cap - 1;
    let mut j = i;
    loop {
        j = (j + 1) & mask;
        let k = *s.ctx_keys.add(j);
        if k == 0 {
            break;
        }
        let home = slot(k, s.ctx_cap);
        // Move j into the hole at i if j's home is not in the cyclic range (i, j].
        let in_range = if i <= j {
            i < home && home <= j
        } else {
            i < home || home <= j
        };
        if !in_range {
            *s.ctx_keys.add(i) = k;
            *s.ctx_vals.add(i) = *s.ctx_vals.add(j);
            i = j;
        }
    }
    *s.ctx_keys.add(i) = 0;
    s.ctx_len -= 1;
}

unsafe fn handle_new(rep: u32) -> u32 {
    let s = st();
    if s.free_len > 0 {
        s.free_len -= 1;
        let h = *s.free.add(s.free_len);
        *s.reps.add(h as usize - 1) = rep;
        return h;
    }
    if s.reps_len == s.reps_cap {
        let cap = if s.reps_cap == 0 { 64 } else { s.reps_cap * 2 };
        s.reps = cabi_realloc(s.reps as *mut u8, s.reps_cap * 4, 4, cap * 4) as *mut u32;
        s.free = cabi_realloc(s.free as *mut u8, s.reps_cap * 4, 4, cap * 4) as *mut u32;
        s.reps_cap = cap;
    }
    *s.reps.add(s.reps_len) = rep;
    s.reps_len += 1;
    s.reps_len as u32
}

unsafe fn handle_rep(h: u32) -> u32 {
    let s = st();
    if h == 0 || h as usize > s.reps_len {
        trap();
    }
    let rep = *s.reps.add(h as usize - 1);
    if rep == 0 {
        trap();
    }
    rep
}

/// Drops handle `h` and runs the resource's destructor.
unsafe fn handle_drop(h: u32) {
    let rep = handle_rep(h);
    let s = st();
    *s.reps.add(h as usize - 1) = 0;
    *s.free.add(s.free_len) = h;
    s.free_len += 1;
    g_dtor(rep);
}

#[unsafe(export_name = "[export]weft:plugin/filter@0.1.0#[resource-new]http-stream")]
pub unsafe extern "C" fn resource_new(rep: u32) -> u32 {
    handle_new(rep)
}

#[unsafe(export_name = "[export]weft:plugin/filter@0.1.0#[resource-rep]http-stream")]
pub unsafe extern "C" fn resource_rep(h: u32) -> u32 {
    handle_rep(h)
}

#[unsafe(export_name = "[export]weft:plugin/filter@0.1.0#[resource-drop]http-stream")]
pub unsafe extern "C" fn resource_drop(h: u32) {
    handle_drop(h)
}

// ---------------------------------------------------------------------------------------------
// Proxy-Wasm exports: the entry points Envoy calls.

#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let s = st();
    if s.alloc_in_scratch != 0 {
        s.scratch.len = 0;
        reserve(&mut s.scratch, if size == 0 { 1 } else { size });
        return s.scratch.ptr;
    }
    alloc(size, 1)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    if parent == 0 {
        // The root context: the plugin itself, configured in proxy_on_configure.
        return;
    }
    let handle = g_new();
    ctx_insert(st(), ctx, handle);
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(_root: u32, _vm_config_size: usize) -> u32 {
    1
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_configure(_root: u32, size: usize) -> u32 {
    let s = st();
    s.config.len = 0;
    if size > 0 {
        let status = with_scratch_alloc(|s| {
            proxy_get_buffer_bytes(BUF_PLUGIN_CONFIG, 0, size, &mut s.ret_ptr, &mut s.ret_len)
        });
        let s = st();
        if status == OK && !s.ret_ptr.is_null() {
            // The scratch buffer is reused by every call: keep the configuration apart.
            let (p, l) = (s.ret_ptr, s.ret_len);
            reserve(&mut s.config, l);
            core::ptr::copy_nonoverlapping(p, s.config.ptr, l);
            s.config.len = l;
        }
    }
    let r = g_init();
    let ok = *r == 0;
    if !ok {
        // error variant at +4: the case at +4, its message (ptr, len) at +8.
        let msg = rd(r.add(8) as *const u32) as *const u8;
        let len = rd(r.add(12) as *const u32) as usize;
        proxy_log(LOG_CRITICAL, msg, len);
    }
    g_init_post(r);
    ok as u32
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_tick(_root: u32) {
    g_tick();
}

/// The stream's resource rep, or a trap for a context Envoy never created (a host bug).
unsafe fn rep_of(ctx: u32) -> u32 {
    match ctx_find(st(), ctx) {
        Some(i) => handle_rep(*st().ctx_vals.add(i)),
        None => trap(),
    }
}

/// Turns a returned `action` into a Proxy-Wasm action: `continue` → 0, `pause` → 1
/// (StopIteration / StopIterationAndBuffer), `respond` → send it, then 1.
unsafe fn action(r: *mut u8, post: impl FnOnce(*mut u8)) -> u32 {
    let out = match *r {
        0 => 0,
        1 => 1,
        _ => {
            let status = rd(r.add(4) as *const u16) as u32;
            respond(
                status,
                rd(r.add(8) as *const u32) as *const u8,
                rd(r.add(12) as *const u32) as usize,
                rd(r.add(16) as *const u32) as *const u8,
                rd(r.add(20) as *const u32) as usize,
                rd(r.add(24) as *const u32) as *const u8,
                rd(r.add(28) as *const u32) as usize,
            );
            1
        }
    };
    post(r);
    out
}

unsafe fn respond(
    status: u32,
    headers: *const u8,
    n: usize,
    body: *const u8,
    body_len: usize,
    details: *const u8,
    details_len: usize,
) {
    let s = st();
    s.scratch.len = 0;
    serialize_pairs(&mut s.scratch, headers, n);
    proxy_send_local_response(
        status,
        details,
        details_len,
        body,
        body_len,
        s.scratch.ptr,
        s.scratch.len,
        -1,
    );
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_request_headers(ctx: u32, n: u32, eos: u32) -> u32 {
    action(g_req_headers(rep_of(ctx), n, eos), |r| {
        g_req_headers_post(r)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_request_body(ctx: u32, size: u32, eos: u32) -> u32 {
    action(g_req_body(rep_of(ctx), size, eos), |r| g_req_body_post(r))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_request_trailers(ctx: u32, n: u32) -> u32 {
    action(g_req_trailers(rep_of(ctx), n), |r| g_req_trailers_post(r))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_response_headers(ctx: u32, n: u32, eos: u32) -> u32 {
    action(g_resp_headers(rep_of(ctx), n, eos), |r| {
        g_resp_headers_post(r)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_response_body(ctx: u32, size: u32, eos: u32) -> u32 {
    action(g_resp_body(rep_of(ctx), size, eos), |r| g_resp_body_post(r))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_response_trailers(ctx: u32, n: u32) -> u32 {
    action(g_resp_trailers(rep_of(ctx), n), |r| g_resp_trailers_post(r))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(_ctx: u32) -> u32 {
    1
}

/// Envoy's access-log phase: the stream is over and its attributes are complete.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_log(ctx: u32) {
    let s = st();
    if let Some(i) = ctx_find(s, ctx) {
        g_done(handle_rep(*s.ctx_vals.add(i)));
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_delete(ctx: u32) {
    let s = st();
    if let Some(i) = ctx_find(s, ctx) {
        let h = *s.ctx_vals.add(i);
        ctx_remove_at(s, i);
        handle_drop(h);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proxy_on_http_call_response(
    _ctx: u32,
    token: u32,
    headers: u32,
    body_size: usize,
    _trailers: u32,
) {
    let mut status = 0u32;
    if headers > 0 {
        // ":status" as 7 bytes, built in the scratch buffer.
        let s = st();
        s.key = 0x7375746174733a; // ":status"
        let key = &s.key as *const u64 as *const u8;
        let rc = with_scratch_alloc(|s| {
            proxy_get_header_map_value(
                MAP_CALL_RESPONSE_HEADERS,
                key,
                7,
                &mut s.ret_ptr,
                &mut s.ret_len,
            )
        });
        let s = st();
        if rc == OK {
            for i in 0..s.ret_len {
                let d = *s.ret_ptr.add(i);
                if d.is_ascii_digit() {
                    status = status.wrapping_mul(10).wrapping_add((d - b'0') as u32);
                }
            }
        }
    }
    let s = st();
    s.ret_ptr = null_mut();
    s.ret_len = 0;
    let mut body = core::ptr::dangling_mut::<u8>();
    let mut len = 0;
    if body_size > 0
        && proxy_get_buffer_bytes(
            BUF_CALL_RESPONSE_BODY,
            0,
            body_size,
            &mut s.ret_ptr,
            &mut s.ret_len,
        ) == OK
        && !s.ret_ptr.is_null()
    {
        body = s.ret_ptr;
        len = s.ret_len;
    }
    g_call_response(token, status & 0xffff, body, len);
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/log, clock, config.

#[unsafe(export_name = "weft:plugin/log@0.1.0#log")]
pub unsafe extern "C" fn log_log(level: u32, ptr: *const u8, len: usize) {
    proxy_log(level, ptr, len);
}

#[unsafe(export_name = "weft:plugin/log@0.1.0#enabled")]
pub unsafe extern "C" fn log_enabled(level: u32) -> u32 {
    let s = st();
    if proxy_get_log_level(&mut s.ret_u32) != OK {
        return 1;
    }
    (level >= s.ret_u32) as u32
}

#[unsafe(export_name = "weft:plugin/clock@0.1.0#now")]
pub unsafe extern "C" fn clock_now() -> u64 {
    now()
}

unsafe fn now() -> u64 {
    let s = st();
    s.ret_u64 = 0;
    proxy_get_current_time_nanoseconds(&mut s.ret_u64);
    s.ret_u64
}

#[unsafe(export_name = "weft:plugin/config@0.1.0#get-json")]
pub unsafe extern "C" fn config_get_json(ret: *mut u8) {
    let s = st();
    if s.config.len == 0 {
        let p = alloc(2, 1);
        *p = b'{';
        *p.add(1) = b'}';
        write_list(ret, p, 2);
    } else {
        write_list(ret, copy_out(s.config.ptr, s.config.len), s.config.len);
    }
}

/// `config.get(key)`: the value of a top-level key of the JSON configuration.
#[unsafe(export_name = "weft:plugin/config@0.1.0#get")]
pub unsafe extern "C" fn config_get(key: *const u8, key_len: usize, ret: *mut u8) {
    let s = st();
    *ret = 0;
    let (p, n) = (s.config.ptr as *const u8, s.config.len);
    let mut j = Json { p, n, i: 0 };
    j.ws();
    if !j.eat(b'{') {
        return;
    }
    loop {
        j.ws();
        if j.peek() != Some(b'"') {
            return;
        }
        // Compare the (unescaped) key with `key` in the scratch buffer.
        let s = st();
        s.scratch.len = 0;
        if !j.string_into(&mut s.scratch) {
            return;
        }
        let same =
            s.scratch.len == key_len && (0..key_len).all(|k| *s.scratch.ptr.add(k) == *key.add(k));
        j.ws();
        if !j.eat(b':') {
            return;
        }
        j.ws();
        if same {
            let s = st();
            if j.peek() == Some(b'"') {
                s.scratch.len = 0;
                if !j.string_into(&mut s.scratch) {
                    return;
                }
                let len = s.scratch.len;
                *ret = 1;
                write_list(ret.add(4), copy_out(s.scratch.ptr, len), len);
            } else {
                let start = j.i;
                if !j.skip_value() {
                    return;
                }
                *ret = 1;
                write_list(ret.add(4), copy_out(p.add(start), j.i - start), j.i - start);
            }
            return;
        }
        if !j.skip_value() {
            return;
        }
        j.ws();
        if !j.eat(b',') {
            return;
        }
    }
}

/// A minimal JSON reader over the configuration bytes (no allocation but the output buffer).
struct Json {
    p: *const u8,
    n: usize,
    i: usize,
}

impl Json {
    fn peek(&self) -> Option<u8> {
        if self.i < self.n {
            Some(unsafe { *self.p.add(self.i) })
        } else {
            None
        }
    }
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.peek()?;
            self.i += 1;
            v = v * 16
                + match d {
                    b'0'..=b'9' => (d - b'0') as u32,
                    b'a'..=b'f' => (d - b'a' + 10) as u32,
                    b'A'..=b'F' => (d - b'A' + 10) as u32,
                    _ => return None,
                };
        }
        Some(v)
    }
    /// Reads a string (at its opening quote), unescaped as UTF-8 into `out`.
    unsafe fn string_into(&mut self, out: &mut Buf) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        loop {
            let Some(c) = self.peek() else { return false };
            self.i += 1;
            match c {
                b'"' => return true,
                b'\\' => {
                    let Some(e) = self.peek() else { return false };
                    self.i += 1;
                    let byte = match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'b' => 8,
                        b'f' => 12,
                        b'u' => {
                            let Some(mut cp) = self.hex4() else {
                                return false;
                            };
                            if (0xD800..0xDC00).contains(&cp) && self.eat(b'\\') && self.eat(b'u') {
                                let Some(lo) = self.hex4() else { return false };
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3ff);
                            }
                            push_utf8(out, cp);
                            continue;
                        }
                        other => other,
                    };
                    push_byte(out, byte);
                }
                _ => push_byte(out, c),
            }
        }
    }
    /// Skips one value (string, number, literal, object or array).
    fn skip_value(&mut self) -> bool {
        let mut depth = 0u32;
        loop {
            let Some(c) = self.peek() else {
                return depth == 0;
            };
            match c {
                b'"' => {
                    self.i += 1;
                    loop {
                        let Some(c) = self.peek() else { return false };
                        self.i += 1;
                        if c == b'\\' {
                            self.i += 1;
                        } else if c == b'"' {
                            break;
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return true;
                    }
                    depth -= 1;
                    self.i += 1;
                }
                b',' if depth == 0 => return true,
                _ => self.i += 1,
            }
            if depth == 0 {
                // A scalar ends at a delimiter; a closed container is complete.
                match self.peek() {
                    Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') | None => return true,
                    _ => {}
                }
            }
        }
    }
}

unsafe fn push_utf8(out: &mut Buf, cp: u32) {
    if cp < 0x80 {
        push_byte(out, cp as u8);
    } else if cp < 0x800 {
        push_byte(out, 0xC0 | (cp >> 6) as u8);
        push_byte(out, 0x80 | (cp & 0x3f) as u8);
    } else if cp < 0x10000 {
        push_byte(out, 0xE0 | (cp >> 12) as u8);
        push_byte(out, 0x80 | ((cp >> 6) & 0x3f) as u8);
        push_byte(out, 0x80 | (cp & 0x3f) as u8);
    } else {
        push_byte(out, 0xF0 | (cp >> 18) as u8);
        push_byte(out, 0x80 | ((cp >> 12) & 0x3f) as u8);
        push_byte(out, 0x80 | ((cp >> 6) & 0x3f) as u8);
        push_byte(out, 0x80 | (cp & 0x3f) as u8);
    }
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/metrics: `name.key.value…` Proxy-Wasm metrics, defined once each.

fn fnv(mut h: u64, p: *const u8, n: usize) -> u64 {
    for i in 0..n {
        h ^= unsafe { *p.add(i) } as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

unsafe fn metric_id(
    kind: u32,
    name: *const u8,
    name_len: usize,
    labels: *const u8,
    n: usize,
) -> Option<u32> {
    let s = st();
    s.scratch.len = 0;
    push(&mut s.scratch, name, name_len);
    for i in 0..n {
        let e = labels.add(i * 16);
        push_byte(&mut s.scratch, b'.');
        push(
            &mut s.scratch,
            rd(e as *const u32) as *const u8,
            rd(e.add(4) as *const u32) as usize,
        );
        push_byte(&mut s.scratch, b'.');
        push(
            &mut s.scratch,
            rd(e.add(8) as *const u32) as *const u8,
            rd(e.add(12) as *const u32) as usize,
        );
    }
    let hash = fnv(
        0xcbf2_9ce4_8422_2325 ^ kind as u64,
        s.scratch.ptr,
        s.scratch.len,
    );
    for i in 0..s.metrics_len {
        if *s.metrics.add(2 * i) == hash {
            return Some(*s.metrics.add(2 * i + 1) as u32);
        }
    }
    if proxy_define_metric(kind, s.scratch.ptr, s.scratch.len, &mut s.ret_u32) != OK {
        return None;
    }
    if s.metrics_len == s.metrics_cap {
        let cap = if s.metrics_cap == 0 {
            16
        } else {
            s.metrics_cap * 2
        };
        s.metrics = cabi_realloc(s.metrics as *mut u8, s.metrics_cap * 16, 8, cap * 16) as *mut u64;
        s.metrics_cap = cap;
    }
    *s.metrics.add(2 * s.metrics_len) = hash;
    *s.metrics.add(2 * s.metrics_len + 1) = s.ret_u32 as u64;
    s.metrics_len += 1;
    Some(s.ret_u32)
}

#[unsafe(export_name = "weft:plugin/metrics@0.1.0#counter-add")]
pub unsafe extern "C" fn metrics_counter_add(
    name: *const u8,
    nl: usize,
    labels: *const u8,
    n: usize,
    delta: u64,
) {
    if let Some(id) = metric_id(METRIC_COUNTER, name, nl, labels, n) {
        proxy_increment_metric(id, delta as i64);
    }
}

#[unsafe(export_name = "weft:plugin/metrics@0.1.0#gauge-set")]
pub unsafe extern "C" fn metrics_gauge_set(
    name: *const u8,
    nl: usize,
    labels: *const u8,
    n: usize,
    value: i64,
) {
    if let Some(id) = metric_id(METRIC_GAUGE, name, nl, labels, n) {
        proxy_record_metric(id, value as u64);
    }
}

#[unsafe(export_name = "weft:plugin/metrics@0.1.0#histogram-record")]
pub unsafe extern "C" fn metrics_histogram_record(
    name: *const u8,
    nl: usize,
    labels: *const u8,
    n: usize,
    value: u64,
) {
    if let Some(id) = metric_id(METRIC_HISTOGRAM, name, nl, labels, n) {
        proxy_record_metric(id, value);
    }
}

// ---------------------------------------------------------------------------------------------
// weft:plugin/keyvalue: Proxy-Wasm shared data.

/// `get: func(key) -> result<option<entry>, error>`.
#[unsafe(export_name = "weft:plugin/keyvalue@0.1.0#get")]
pub unsafe extern "C" fn kv_get(key: *const u8, kl: usize, ret: *mut u8) {
    let s = st();
    s.ret_ptr = null_mut();
    s.ret_len = 0;
    s.ret_u32 = 0;
    let rc = proxy_get_shared_data(key, kl, &mut s.ret_ptr, &mut s.ret_len, &mut s.ret_u32);
    match rc {
        OK => {
            *ret = 0;
            *ret.add(4) = 1;
            write_list(ret.add(8), s.ret_ptr, s.ret_len);
            wr(ret.add(16) as *mut u32, s.ret_u32);
        }
        NOT_FOUND => {
            *ret = 0;
            *ret.add(4) = 0;
        }
        other => {
            *ret = 1;
            *ret.add(4) = 2;
            status_message(ret.add(8), other);
        }
    }
}

/// `set: func(key, value, cas: option<u32>) -> result<_, error>`. `some(0)` ("only if absent")
/// has no Proxy-Wasm equivalent: it is a read then an unconditional write (see README).
#[unsafe(export_name = "weft:plugin/keyvalue@0.1.0#set")]
pub unsafe extern "C" fn kv_set(
    key: *const u8,
    kl: usize,
    v: *const u8,
    vl: usize,
    has_cas: u32,
    cas: u32,
    ret: *mut u8,
) {
    let s = st();
    if has_cas != 0 && cas == 0 {
        s.ret_ptr = null_mut();
        s.ret_len = 0;
        let rc = with_scratch_alloc(|s| {
            proxy_get_shared_data(key, kl, &mut s.ret_ptr, &mut s.ret_len, &mut s.ret_u32)
        });
        if rc == OK {
            *ret = 1;
            *ret.add(4) = 0;
            return;
        }
    }
    let proxy_cas = if has_cas != 0 { cas } else { 0 };
    match proxy_set_shared_data(key, kl, v, vl, proxy_cas) {
        OK => *ret = 0,
        CAS_MISMATCH => {
            *ret = 1;
            *ret.add(4) = 0;
        }
        other => {
            *ret = 1;
            *ret.add(4) = 2;
            status_message(ret.add(8), other);
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

#[unsafe(export_name = "weft:plugin/http@0.1.0#get-header")]
pub unsafe extern "C" fn http_get_header(m: u32, k: *const u8, kl: usize, ret: *mut u8) {
    let s = st();
    s.ret_ptr = null_mut();
    s.ret_len = 0;
    if proxy_get_header_map_value(map_type(m), k, kl, &mut s.ret_ptr, &mut s.ret_len) == OK {
        *ret = 1;
        write_list(ret.add(4), s.ret_ptr, s.ret_len);
    } else {
        *ret = 0;
    }
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#get-headers")]
pub unsafe extern "C" fn http_get_headers(m: u32, ret: *mut u8) {
    let rc = with_scratch_alloc(|s| {
        proxy_get_header_map_pairs(map_type(m), &mut s.ret_ptr, &mut s.ret_len)
    });
    let s = st();
    if rc == OK {
        deserialize_pairs(ret, s.ret_ptr, s.ret_len);
    } else {
        write_list(ret, null_mut(), 0);
    }
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#set-header")]
pub unsafe extern "C" fn http_set_header(m: u32, k: *const u8, kl: usize, v: *const u8, vl: usize) {
    proxy_replace_header_map_value(map_type(m), k, kl, v, vl);
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#add-header")]
pub unsafe extern "C" fn http_add_header(m: u32, k: *const u8, kl: usize, v: *const u8, vl: usize) {
    proxy_add_header_map_value(map_type(m), k, kl, v, vl);
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#remove-header")]
pub unsafe extern "C" fn http_remove_header(m: u32, k: *const u8, kl: usize) {
    proxy_remove_header_map_value(map_type(m), k, kl);
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#get-body")]
pub unsafe extern "C" fn http_get_body(b: u32, start: usize, len: usize, ret: *mut u8) {
    let s = st();
    s.ret_ptr = null_mut();
    s.ret_len = 0;
    if len > 0
        && proxy_get_buffer_bytes(body_type(b), start, len, &mut s.ret_ptr, &mut s.ret_len) == OK
    {
        write_list(ret, s.ret_ptr, s.ret_len);
    } else {
        write_list(ret, null_mut(), 0);
    }
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#replace-body")]
pub unsafe extern "C" fn http_replace_body(
    b: u32,
    start: usize,
    len: usize,
    data: *const u8,
    dl: usize,
) {
    proxy_set_buffer_bytes(body_type(b), start, len, data, dl);
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#send-local-response")]
pub unsafe extern "C" fn http_send_local_response(
    status: u32,
    headers: *const u8,
    n: usize,
    body: *const u8,
    bl: usize,
    details: *const u8,
    dl: usize,
) {
    respond(status, headers, n, body, bl, details, dl);
}

/// `get-property: func(path: list<string>) -> option<list<u8>>`: segments joined with NUL.
#[unsafe(export_name = "weft:plugin/http@0.1.0#get-property")]
pub unsafe extern "C" fn http_get_property(path: *const u8, n: usize, ret: *mut u8) {
    let s = st();
    s.scratch.len = 0;
    for i in 0..n {
        if i > 0 {
            push_byte(&mut s.scratch, 0);
        }
        let e = path.add(i * 8);
        push(
            &mut s.scratch,
            rd(e as *const u32) as *const u8,
            rd(e.add(4) as *const u32) as usize,
        );
    }
    // The value is a fresh allocation for the guest, so the path may stay in scratch.
    s.ret_ptr = null_mut();
    s.ret_len = 0;
    let rc = proxy_get_property(s.scratch.ptr, s.scratch.len, &mut s.ret_ptr, &mut s.ret_len);
    if rc == OK {
        *ret = 1;
        write_list(ret.add(4), s.ret_ptr, s.ret_len);
    } else {
        *ret = 0;
    }
}

#[unsafe(export_name = "weft:plugin/http@0.1.0#set-tick-period")]
pub unsafe extern "C" fn http_set_tick_period(ms: u32) {
    proxy_set_tick_period_milliseconds(ms);
}

/// `dispatch-http-call(upstream, headers, body, timeout-ms) -> result<u32, string>`.
#[unsafe(export_name = "weft:plugin/http@0.1.0#dispatch-http-call")]
pub unsafe extern "C" fn http_dispatch_http_call(
    up: *const u8,
    ul: usize,
    headers: *const u8,
    n: usize,
    body: *const u8,
    bl: usize,
    timeout: u32,
    ret: *mut u8,
) {
    let s = st();
    s.scratch.len = 0;
    serialize_pairs(&mut s.scratch, headers, n);
    // An empty trailer map after the headers.
    let hl = s.scratch.len;
    push_le(&mut s.scratch, 0, 4);
    let rc = proxy_http_call(
        up,
        ul,
        s.scratch.ptr,
        hl,
        body,
        bl,
        s.scratch.ptr.add(hl),
        4,
        timeout,
        &mut s.ret_u32,
    );
    if rc == OK {
        *ret = 0;
        wr(ret.add(4) as *mut u32, s.ret_u32);
    } else {
        *ret = 1;
        status_message(ret.add(4), rc);
    }
}

// ---------------------------------------------------------------------------------------------
// WASI 0.2 shims for what a Rust `std` guest imports. Names carry `@0.2`: the fuser matches any
// 0.2.x version. Output streams: 1 = stdout, 2 = stderr; lines go to `proxy_log`.

#[unsafe(export_name = "wasi:cli/environment@0.2#get-environment")]
pub unsafe extern "C" fn wasi_get_environment(ret: *mut u8) {
    write_list(ret, null_mut(), 0);
}

#[unsafe(export_name = "wasi:cli/environment@0.2#get-arguments")]
pub unsafe extern "C" fn wasi_get_arguments(ret: *mut u8) {
    write_list(ret, null_mut(), 0);
}

#[unsafe(export_name = "wasi:cli/environment@0.2#initial-cwd")]
pub unsafe extern "C" fn wasi_initial_cwd(ret: *mut u8) {
    *ret = 0;
}

#[unsafe(export_name = "wasi:cli/exit@0.2#exit")]
pub extern "C" fn wasi_exit(_status: u32) {
    trap()
}

#[unsafe(export_name = "wasi:cli/stdin@0.2#get-stdin")]
pub extern "C" fn wasi_get_stdin() -> u32 {
    3
}

#[unsafe(export_name = "wasi:cli/stdout@0.2#get-stdout")]
pub extern "C" fn wasi_get_stdout() -> u32 {
    1
}

#[unsafe(export_name = "wasi:cli/stderr@0.2#get-stderr")]
pub extern "C" fn wasi_get_stderr() -> u32 {
    2
}

#[unsafe(export_name = "wasi:cli/terminal-stdin@0.2#get-terminal-stdin")]
pub unsafe extern "C" fn wasi_terminal_stdin(ret: *mut u8) {
    *ret = 0;
}

#[unsafe(export_name = "wasi:cli/terminal-stdout@0.2#get-terminal-stdout")]
pub unsafe extern "C" fn wasi_terminal_stdout(ret: *mut u8) {
    *ret = 0;
}

#[unsafe(export_name = "wasi:cli/terminal-stderr@0.2#get-terminal-stderr")]
pub unsafe extern "C" fn wasi_terminal_stderr(ret: *mut u8) {
    *ret = 0;
}

#[unsafe(export_name = "wasi:cli/terminal-input@0.2#[resource-drop]terminal-input")]
pub extern "C" fn wasi_drop_terminal_input(_h: u32) {}

#[unsafe(export_name = "wasi:cli/terminal-output@0.2#[resource-drop]terminal-output")]
pub extern "C" fn wasi_drop_terminal_output(_h: u32) {}

#[unsafe(export_name = "wasi:io/error@0.2#[resource-drop]error")]
pub extern "C" fn wasi_drop_error(_h: u32) {}

#[unsafe(export_name = "wasi:io/error@0.2#[method]error.to-debug-string")]
pub unsafe extern "C" fn wasi_error_to_debug_string(_h: u32, ret: *mut u8) {
    write_list(ret, null_mut(), 0);
}

#[unsafe(export_name = "wasi:io/poll@0.2#[resource-drop]pollable")]
pub extern "C" fn wasi_drop_pollable(_h: u32) {}

#[unsafe(export_name = "wasi:io/poll@0.2#[method]pollable.block")]
pub extern "C" fn wasi_pollable_block(_h: u32) {}

#[unsafe(export_name = "wasi:io/poll@0.2#[method]pollable.ready")]
pub extern "C" fn wasi_pollable_ready(_h: u32) -> u32 {
    1
}

#[unsafe(export_name = "wasi:io/streams@0.2#[resource-drop]input-stream")]
pub extern "C" fn wasi_drop_input_stream(_h: u32) {}

#[unsafe(export_name = "wasi:io/streams@0.2#[resource-drop]output-stream")]
pub unsafe extern "C" fn wasi_drop_output_stream(h: u32) {
    flush_line(h);
}

/// `read` / `blocking-read` on stdin: `result<list<u8>, stream-error>` = error `closed`.
#[unsafe(export_name = "wasi:io/streams@0.2#[method]input-stream.read")]
pub unsafe extern "C" fn wasi_input_read(_h: u32, _len: u64, ret: *mut u8) {
    *ret = 1;
    *ret.add(4) = 1;
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]input-stream.blocking-read")]
pub unsafe extern "C" fn wasi_input_blocking_read(_h: u32, _len: u64, ret: *mut u8) {
    *ret = 1;
    *ret.add(4) = 1;
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.check-write")]
pub unsafe extern "C" fn wasi_check_write(_h: u32, ret: *mut u8) {
    *ret = 0;
    wr(ret.add(8) as *mut u64, 1 << 20);
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.write")]
pub unsafe extern "C" fn wasi_write(h: u32, p: *const u8, len: usize, ret: *mut u8) {
    write_lines(h, p, len);
    *ret = 0;
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.blocking-write-and-flush")]
pub unsafe extern "C" fn wasi_blocking_write_and_flush(
    h: u32,
    p: *const u8,
    len: usize,
    ret: *mut u8,
) {
    write_lines(h, p, len);
    *ret = 0;
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.flush")]
pub unsafe extern "C" fn wasi_flush(_h: u32, ret: *mut u8) {
    *ret = 0;
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.blocking-flush")]
pub unsafe extern "C" fn wasi_blocking_flush(_h: u32, ret: *mut u8) {
    *ret = 0;
}

#[unsafe(export_name = "wasi:io/streams@0.2#[method]output-stream.subscribe")]
pub extern "C" fn wasi_subscribe(_h: u32) -> u32 {
    1
}

/// Logs whole lines of stdout (info) and stderr (error); keeps the last partial line.
unsafe fn write_lines(h: u32, p: *const u8, len: usize) {
    let s = st();
    let line = if h == 2 {
        &mut s.err_line
    } else {
        &mut s.out_line
    };
    for i in 0..len {
        let c = *p.add(i);
        if c == b'\n' {
            proxy_log(
                if h == 2 { LOG_ERROR } else { LOG_INFO },
                line.ptr,
                line.len,
            );
            line.len = 0;
        } else {
            push_byte(line, c);
        }
    }
}

unsafe fn flush_line(h: u32) {
    let s = st();
    let line = if h == 2 {
        &mut s.err_line
    } else {
        &mut s.out_line
    };
    if line.len > 0 {
        proxy_log(
            if h == 2 { LOG_ERROR } else { LOG_INFO },
            line.ptr,
            line.len,
        );
        line.len = 0;
    }
}

#[unsafe(export_name = "wasi:clocks/wall-clock@0.2#now")]
pub unsafe extern "C" fn wasi_wall_now(ret: *mut u8) {
    let t = now();
    wr(ret as *mut u64, t / 1_000_000_000);
    wr(ret.add(8) as *mut u32, (t % 1_000_000_000) as u32);
}

#[unsafe(export_name = "wasi:clocks/wall-clock@0.2#resolution")]
pub unsafe extern "C" fn wasi_wall_resolution(ret: *mut u8) {
    wr(ret as *mut u64, 0);
    wr(ret.add(8) as *mut u32, 1);
}

/// Proxy-Wasm has only wall-clock time; it stands in for the monotonic clock.
#[unsafe(export_name = "wasi:clocks/monotonic-clock@0.2#now")]
pub unsafe extern "C" fn wasi_monotonic_now() -> u64 {
    now()
}

#[unsafe(export_name = "wasi:clocks/monotonic-clock@0.2#resolution")]
pub extern "C" fn wasi_monotonic_resolution() -> u64 {
    1
}

/// Proxy-Wasm has no randomness source: a xorshift generator seeded from the clock. It is
/// enough for hash-map seeds; it is NOT cryptographically secure (see README).
unsafe fn next_random() -> u64 {
    let s = st();
    if s.rng == 0 {
        s.rng = now() | 1;
    }
    let mut x = s.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s.rng = x;
    x
}

#[unsafe(export_name = "wasi:random/random@0.2#get-random-u64")]
pub unsafe extern "C" fn wasi_random_u64() -> u64 {
    next_random()
}

#[unsafe(export_name = "wasi:random/random@0.2#get-random-bytes")]
pub unsafe extern "C" fn wasi_random_bytes(len: u64, ret: *mut u8) {
    let len = len as usize;
    let p = if len == 0 {
        core::ptr::dangling_mut::<u8>()
    } else {
        alloc(len, 1)
    };
    for i in 0..len {
        *p.add(i) = next_random() as u8;
    }
    write_list(ret, p, len);
}

#[unsafe(export_name = "wasi:random/insecure@0.2#get-insecure-random-u64")]
pub unsafe extern "C" fn wasi_insecure_u64() -> u64 {
    next_random()
}

#[unsafe(export_name = "wasi:random/insecure-seed@0.2#insecure-seed")]
pub unsafe extern "C" fn wasi_insecure_seed(ret: *mut u8) {
    wr(ret as *mut u64, next_random());
    wr(ret.add(8) as *mut u64, next_random());
}
