//! Canonical-ABI layouts (wasm32) of the values the glue reads from and writes to the guest's
//! memory: return areas of the guest's exports, and the results of the imports it implements.
//!
//! Pointers are the ABI's 32-bit addresses (`u32`), so the layouts and their checks are the
//! same on every target. A variant's payload is at the offset of its most aligned case;
//! [`Tagged`] views one case of it, and each use is checked against the ABI's offsets below.

use core::mem::{offset_of, size_of};

/// `string` or `list<T>`: address and length of the elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List {
    pub ptr: u32,
    pub len: u32,
}

impl List {
    /// A list of `len` elements at `ptr`; an empty list gets the dangling address 1 rather than
    /// null, as Rust bindings expect of a pointer.
    pub(crate) fn new(ptr: *const u8, len: usize) -> List {
        let ptr = if len == 0 || ptr.is_null() {
            core::ptr::dangling::<u8>()
        } else {
            ptr
        };
        List {
            ptr: ptr as usize as u32,
            len: len as u32,
        }
    }

    /// A list as it is (`ptr` may be null or anything for an empty list).
    pub(crate) fn raw(ptr: *const u8, len: usize) -> List {
        List {
            ptr: ptr as usize as u32,
            len: len as u32,
        }
    }

    /// The empty list.
    pub(crate) fn empty() -> List {
        List::new(core::ptr::null(), 0)
    }

    /// The elements' address in this (wasm32) module's memory.
    pub(crate) fn addr(self) -> *mut u8 {
        self.ptr as usize as *mut u8
    }

    pub(crate) fn len(self) -> usize {
        self.len as usize
    }
}

/// `tuple<string, string>`: a header or a metric label.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Pair {
    pub key: List,
    pub value: List,
}

/// One case of a variant, `option` or `result`: the discriminant, then the case's payload.
#[repr(C)]
pub(crate) struct Tagged<T> {
    pub tag: u8,
    pub payload: T,
}

/// `weft:plugin/types.error` (all cases carry a message) and `keyvalue.error`
/// (`cas-mismatch`, `too-large`, `other(string)`).
#[repr(C)]
pub(crate) struct Error {
    pub case: u8,
    pub message: List,
}

/// `keyvalue.error` case `cas-mismatch`.
pub(crate) const KV_CAS_MISMATCH: u8 = 0;
/// `keyvalue.error` case `other(string)`.
pub(crate) const KV_OTHER: u8 = 2;

/// `filter.response`: what `respond(response)` sends.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: List,
    pub body: List,
    pub details: List,
}

/// `filter.action` cases.
pub(crate) const ACTION_CONTINUE: u8 = 0;
pub(crate) const ACTION_PAUSE: u8 = 1;

/// `keyvalue.entry`.
#[repr(C)]
pub(crate) struct Entry {
    pub value: List,
    pub cas: u32,
}

/// `wasi:clocks/wall-clock.datetime`.
#[repr(C)]
pub(crate) struct Datetime {
    pub seconds: u64,
    pub nanoseconds: u32,
}

/// `wasi:io/streams.stream-error`: `last-operation-failed(error)` or `closed`.
#[repr(C)]
pub(crate) struct StreamError {
    pub case: u8,
    pub error: u32,
}

/// `stream-error` case `closed`.
pub(crate) const STREAM_CLOSED: u8 = 1;

/// `wasi:sockets/network.error-code` case `access-denied` (cases: `unknown`, `access-denied`, …).
pub(crate) const SOCKET_ACCESS_DENIED: u8 = 1;

/// `lifecycle.init` returns `result<_, error>`.
pub(crate) type InitResult = Tagged<Error>;
/// `filter.action`: `continue`, `pause`, `respond(response)`.
pub(crate) type Action = Tagged<Response>;
/// `option<string>`, `option<list<u8>>`, and the `ok(u32)`/`err(string)` cases of
/// `dispatch-http-call`'s `result<u32, string>`.
pub(crate) type OptionList = Tagged<List>;
/// `keyvalue.get`'s `result<option<entry>, error>`, case `ok`.
pub(crate) type KvGetOk = Tagged<Tagged<Entry>>;
/// `result<_, keyvalue.error>` and `result<option<entry>, error>`, case `err`.
pub(crate) type KvErr = Tagged<Error>;
/// `result<u32, string>`, case `ok`.
pub(crate) type ResultU32 = Tagged<u32>;
/// `result<u64, stream-error>` (`check-write`), case `ok`.
pub(crate) type ResultU64 = Tagged<u64>;
/// `result<list<u8>, stream-error>` (`read`), case `err`.
pub(crate) type ReadErr = Tagged<StreamError>;

// The canonical ABI's offsets and sizes (wasm32), as the guest's bindings lay them out.
const _: () = assert!(size_of::<List>() == 8 && offset_of!(List, len) == 4);
const _: () = assert!(size_of::<Pair>() == 16 && offset_of!(Pair, value) == 8);
const _: () = assert!(offset_of!(Error, message) == 4 && size_of::<Error>() == 12);
const _: () = assert!(offset_of!(InitResult, payload) + offset_of!(Error, message) == 8);
const _: () = assert!(size_of::<Action>() == 32);
const _: () = assert!(offset_of!(Action, payload) + offset_of!(Response, status) == 4);
const _: () = assert!(offset_of!(Action, payload) + offset_of!(Response, headers) == 8);
const _: () = assert!(offset_of!(Action, payload) + offset_of!(Response, body) == 16);
const _: () = assert!(offset_of!(Action, payload) + offset_of!(Response, details) == 24);
const _: () = assert!(offset_of!(OptionList, payload) == 4 && size_of::<OptionList>() == 12);
const _: () = assert!(size_of::<KvGetOk>() == 20);
const _: () = assert!(offset_of!(KvGetOk, payload) + offset_of!(Tagged<Entry>, payload) == 8);
const _: () = assert!(
    offset_of!(KvGetOk, payload) + offset_of!(Tagged<Entry>, payload) + offset_of!(Entry, cas)
        == 16
);
const _: () = assert!(offset_of!(KvErr, payload) + offset_of!(Error, case) == 4);
const _: () = assert!(offset_of!(KvErr, payload) + offset_of!(Error, message) == 8);
const _: () = assert!(offset_of!(ResultU32, payload) == 4);
const _: () = assert!(offset_of!(ResultU64, payload) == 8);
const _: () = assert!(offset_of!(ReadErr, payload) + offset_of!(StreamError, case) == 4);
const _: () = assert!(offset_of!(Datetime, nanoseconds) == 8 && size_of::<Datetime>() == 16);

/// Writes `v` at `p`, a field of a return area (whose alignment the glue does not rely on).
///
/// # Safety
///
/// `p` is valid for writes of a `T`.
#[inline]
pub(crate) unsafe fn put<T>(p: *mut T, v: T) {
    // SAFETY: the caller's contract; `write_unaligned` needs no alignment.
    unsafe { p.write_unaligned(v) }
}

/// Reads a `T` at `p`, a field of a return area.
///
/// # Safety
///
/// `p` is valid for reads of an initialized `T`.
#[inline]
pub(crate) unsafe fn get<T>(p: *const T) -> T {
    // SAFETY: the caller's contract; `read_unaligned` needs no alignment.
    unsafe { p.read_unaligned() }
}
