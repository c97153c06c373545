//! A growable byte buffer in guest memory.

use crate::mem;

/// A byte buffer that grows with `cabi_realloc` and is never freed: the glue keeps a few (the
/// scratch buffer, the configuration, partial output lines) and reuses them.
///
/// Invariant: `ptr` is null with `cap == 0`, or a block of `cap` bytes from [`mem::realloc`]
/// (alignment 8); `len <= cap` bytes of it are initialized. All zeros is an empty buffer.
#[repr(C)]
pub(crate) struct Buf {
    ptr: *mut u8,
    cap: usize,
    len: usize,
}

impl Buf {
    /// An empty buffer that owns no memory.
    #[cfg(test)]
    pub(crate) const fn new() -> Self {
        Buf {
            ptr: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    /// The bytes written so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes at `ptr` are initialized (invariant), and `&self` keeps
        // them from being written.
        unsafe { mem::bytes(self.ptr, self.len) }
    }

    /// The start of the buffer: null until it first grows.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the contents (keeps the memory).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Makes room for `need` bytes in all (contents kept up to `len`): at least 64, doubling.
    pub(crate) fn reserve(&mut self, need: usize) {
        if need <= self.cap {
            return;
        }
        let mut cap = if self.cap < 64 { 64 } else { self.cap };
        while cap < need {
            cap = cap.wrapping_mul(2);
        }
        // SAFETY: `ptr` is null with `cap` 0 or a block of `cap` bytes with alignment 8.
        self.ptr = unsafe { mem::realloc(self.ptr, self.cap, 8, cap) };
        self.cap = cap;
    }

    /// Appends `bytes`.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.reserve(self.len.wrapping_add(bytes.len()));
        // SAFETY: `reserve` made `ptr` valid for `len + bytes.len()` bytes; `bytes` is not in
        // the buffer's spare capacity (it is borrowed, the spare part is not).
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.len), bytes.len());
        }
        self.len = self.len.wrapping_add(bytes.len());
    }

    /// Appends one byte.
    pub(crate) fn push_byte(&mut self, byte: u8) {
        self.reserve(self.len.wrapping_add(1));
        // SAFETY: `reserve` made `ptr` valid for `len + 1` bytes.
        unsafe { self.ptr.add(self.len).write(byte) };
        self.len = self.len.wrapping_add(1);
    }

    /// Appends the `n` low bytes of `v`, little-endian (also: short constant strings without a
    /// data segment).
    pub(crate) fn push_le(&mut self, v: u64, n: usize) {
        for i in 0..n {
            self.push_byte((v >> (8 * i)) as u8);
        }
    }

    /// Appends the decimal digits of `n`.
    pub(crate) fn push_decimal(&mut self, n: u32) {
        let mut div = 1_000_000_000u32;
        while div > 1 && n / div == 0 {
            div /= 10;
        }
        while div > 0 {
            self.push_byte(b'0' + (n / div % 10) as u8);
            div /= 10;
        }
    }

    /// Appends the UTF-8 encoding of the code point `cp` (a lone surrogate is encoded as it is,
    /// in three bytes).
    pub(crate) fn push_utf8(&mut self, cp: u32) {
        if cp < 0x80 {
            self.push_byte(cp as u8);
        } else if cp < 0x800 {
            self.push_byte(0xC0 | (cp >> 6) as u8);
            self.push_byte(0x80 | (cp & 0x3f) as u8);
        } else if cp < 0x10000 {
            self.push_byte(0xE0 | (cp >> 12) as u8);
            self.push_byte(0x80 | ((cp >> 6) & 0x3f) as u8);
            self.push_byte(0x80 | (cp & 0x3f) as u8);
        } else {
            self.push_byte(0xF0 | (cp >> 18) as u8);
            self.push_byte(0x80 | ((cp >> 12) & 0x3f) as u8);
            self.push_byte(0x80 | ((cp >> 6) & 0x3f) as u8);
            self.push_byte(0x80 | (cp & 0x3f) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Buf;

    #[test]
    fn pushes_grow_the_buffer_and_keep_the_contents() {
        let mut b = Buf::new();
        assert!(b.is_empty() && b.as_ptr().is_null());
        b.push(b"");
        assert!(b.as_ptr().is_null(), "an empty push allocates nothing");
        for i in 0..1000u32 {
            b.push_byte(i as u8);
        }
        assert_eq!(b.len(), 1000);
        assert!(b.as_slice().iter().enumerate().all(|(i, &c)| c == i as u8));
        b.clear();
        b.push(b"abc");
        assert_eq!(b.as_slice(), b"abc");
    }

    #[test]
    fn reserve_starts_at_64_and_doubles() {
        let mut b = Buf::new();
        b.reserve(1);
        assert_eq!(b.cap, 64);
        b.reserve(65);
        assert_eq!(b.cap, 128);
        b.reserve(1000);
        assert_eq!(b.cap, 1024);
        b.reserve(10);
        assert_eq!(b.cap, 1024, "never shrinks");
    }

    #[test]
    fn numbers_and_constants_are_written_without_data() {
        let mut b = Buf::new();
        b.push_le(0x20737574617473, 7);
        assert_eq!(b.as_slice(), b"status ");
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (503, "503"),
            (u32::MAX, "4294967295"),
        ] {
            b.clear();
            b.push_decimal(n);
            assert_eq!(b.as_slice(), text.as_bytes());
        }
        b.clear();
        b.push_le(3, 4);
        assert_eq!(b.as_slice(), [3, 0, 0, 0]);
    }

    #[test]
    fn code_points_are_encoded_as_utf8() {
        for c in ['a', 'é', '€', '😀', '\u{7ff}', '\u{ffff}', '\u{10ffff}'] {
            let mut b = Buf::new();
            b.push_utf8(c as u32);
            assert_eq!(b.as_slice(), c.to_string().as_bytes(), "{c:?}");
        }
    }
}
