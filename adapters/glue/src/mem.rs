//! The glue's one allocator: the guest's `cabi_realloc` (in native tests, the system allocator).
//!
//! `cabi_realloc` cannot free. A block is grown (its contents kept) or shrunk in place; the glue
//! reuses what it owns and hands everything else to the guest, which frees it.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "weft:guest")]
unsafe extern "C" {
    /// The guest's canonical-ABI allocator (`cabi_realloc(old, old_len, align, new_len)`).
    fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8;
}

/// Resizes `old` (`old_len` bytes; null for a new block) to `new_len` bytes aligned to `align`,
/// keeping the first `min(old_len, new_len)` bytes. Never returns null: an allocation failure
/// traps in the guest.
///
/// # Safety
///
/// `old` is null (with `old_len` 0) or a block of `old_len` bytes from this function with the
/// same `align`, which is a power of two; `old` is not used after the call.
pub(crate) unsafe fn realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the caller's contract is the canonical ABI's contract for `cabi_realloc`.
    unsafe {
        cabi_realloc(old, old_len, align, new_len)
    }
    #[cfg(not(target_arch = "wasm32"))]
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        host::realloc(old, old_len, align, new_len)
    }
}

/// A new block of `size` bytes aligned to `align` (uninitialized).
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    // SAFETY: a null `old` asks for a new block; `align` is a power of two at every call site.
    unsafe { realloc(core::ptr::null_mut(), 0, align, size) }
}

/// `len` bytes at `ptr` as a slice; any pointer (even null) for an empty one, as the canonical ABI
/// does not promise a non-null pointer for an empty list.
///
/// # Safety
///
/// If `len > 0`, `ptr` is valid for reads of `len` bytes for `'a`, and nothing writes them then.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: `len > 0`, so the caller promises `ptr` is valid for `len` bytes.
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    extern crate std;
    use std::alloc::{Layout, alloc, realloc as sys_realloc};

    /// `cabi_realloc` over the system allocator. Blocks are never freed (as in the guest, where
    /// `cabi_realloc` cannot free); tests leak them.
    pub(super) unsafe fn realloc(
        old: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        // Zero-sized blocks are not allowed by `GlobalAlloc`: every block has at least one byte.
        let Ok(new) = Layout::from_size_align(new_len.max(1), align) else {
            std::process::abort()
        };
        let p = if old.is_null() {
            // SAFETY: `new` has a non-zero size.
            unsafe { alloc(new) }
        } else {
            // SAFETY: `old` came from here with `old_len` (at least 1) bytes and `align`.
            unsafe {
                sys_realloc(
                    old,
                    Layout::from_size_align_unchecked(old_len.max(1), align),
                    new.size(),
                )
            }
        };
        if p.is_null() {
            std::process::abort()
        }
        p
    }
}
