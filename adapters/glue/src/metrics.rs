//! Proxy-Wasm metric ids by metric kind and full name.

use crate::mem;

/// One defined metric. The name is the glue's own copy (never freed: a plugin defines a bounded
/// set of metrics, each once).
#[repr(C)]
struct Entry {
    hash: u64,
    name: *const u8,
    name_len: usize,
    kind: u32,
    id: u32,
}

/// The metrics defined so far, keyed by `(kind, name)`. A hash of the key speeds up the linear
/// search; two names whose hashes collide are still two metrics.
///
/// Invariant: `entries` is null with `cap` 0, or a block of `cap` entries from
/// [`mem::realloc`] of which `len` are initialized. All zeros is an empty table.
#[repr(C)]
pub(crate) struct Metrics {
    entries: *mut Entry,
    cap: usize,
    len: usize,
}

/// FNV-1a (64 bits) of `kind` and `name`.
fn hash(kind: u32, name: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ kind as u64;
    for &b in name {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `a == b`, 8 bytes at a time (the byte loop of `[u8]::eq` on wasm32 is what a labelled
/// metric lookup spent its time in).
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        let (mut u, mut v) = ([0u8; 8], [0u8; 8]);
        u.copy_from_slice(p);
        v.copy_from_slice(q);
        if u64::from_ne_bytes(u) != u64::from_ne_bytes(v) {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

impl Metrics {
    /// An empty table that owns no memory.
    #[cfg(test)]
    pub(crate) const fn new() -> Self {
        Metrics {
            entries: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    fn entries(&self) -> &[Entry] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `entries[..len]` is initialized (invariant), and `&self` keeps it unchanged.
        unsafe { core::slice::from_raw_parts(self.entries, self.len) }
    }

    /// The Proxy-Wasm id of the metric `(kind, name)`, if it was defined.
    pub(crate) fn find(&self, kind: u32, name: &[u8]) -> Option<u32> {
        self.find_hashed(hash(kind, name), kind, name)
    }

    /// The id of a metric of `kind` whose name is `len` bytes long and for which `is_name` says
    /// yes: a lookup without the name built or hashed (a plugin defines a handful of metrics;
    /// the length and the first differing word rule most out at once).
    pub(crate) fn find_with(
        &self,
        kind: u32,
        len: usize,
        is_name: impl Fn(&[u8]) -> bool,
    ) -> Option<u32> {
        self.entries()
            .iter()
            .find(|e| {
                // SAFETY: `e.name` is the entry's own copy of `e.name_len` bytes.
                e.name_len == len
                    && e.kind == kind
                    && is_name(unsafe { mem::bytes(e.name, e.name_len) })
            })
            .map(|e| e.id)
    }

    fn find_hashed(&self, hash: u64, kind: u32, name: &[u8]) -> Option<u32> {
        self.entries()
            .iter()
            .find(|e| {
                // SAFETY: `e.name` is the entry's own copy of `e.name_len` bytes.
                e.hash == hash
                    && e.kind == kind
                    && same_bytes(unsafe { mem::bytes(e.name, e.name_len) }, name)
            })
            .map(|e| e.id)
    }

    /// Records the id Proxy-Wasm gave the metric `(kind, name)` (copying the name).
    pub(crate) fn insert(&mut self, kind: u32, name: &[u8], id: u32) {
        self.insert_hashed(hash(kind, name), kind, name, id)
    }

    fn insert_hashed(&mut self, hash: u64, kind: u32, name: &[u8], id: u32) {
        let size = core::mem::size_of::<Entry>();
        if self.len == self.cap {
            let cap = if self.cap == 0 { 16 } else { self.cap * 2 };
            // SAFETY: `entries` is null with `cap` 0 or a block of `cap` entries, alignment 8.
            self.entries =
                unsafe { mem::realloc(self.entries as *mut u8, self.cap * size, 8, cap * size) }
                    as *mut Entry;
            self.cap = cap;
        }
        let copy = if name.is_empty() {
            core::ptr::dangling::<u8>()
        } else {
            let p = mem::alloc(name.len(), 1);
            // SAFETY: `p` is a fresh block of `name.len()` bytes.
            unsafe { core::ptr::copy_nonoverlapping(name.as_ptr(), p, name.len()) };
            p
        };
        // SAFETY: `len < cap`, so slot `len` is in the block.
        unsafe {
            self.entries.add(self.len).write(Entry {
                hash,
                name: copy,
                name_len: name.len(),
                kind,
                id,
            });
        }
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, hash};

    #[test]
    fn a_metric_is_found_by_kind_and_name() {
        let mut m = Metrics::new();
        assert_eq!(m.find(0, b"requests"), None);
        m.insert(0, b"requests", 7);
        m.insert(1, b"requests", 8);
        m.insert(0, b"requests.route.a", 9);
        assert_eq!(m.find(0, b"requests"), Some(7));
        assert_eq!(
            m.find(1, b"requests"),
            Some(8),
            "a gauge is not the counter"
        );
        assert_eq!(m.find(0, b"requests.route.a"), Some(9));
        assert_eq!(m.find(2, b"requests"), None);
        assert_eq!(m.find(0, b"request"), None);
    }

    #[test]
    fn names_whose_hashes_collide_stay_two_metrics() {
        let mut m = Metrics::new();
        let h = hash(0, b"a");
        m.insert_hashed(h, 0, b"a", 1);
        m.insert_hashed(h, 0, b"b", 2);
        assert_eq!(m.find_hashed(h, 0, b"a"), Some(1));
        assert_eq!(m.find_hashed(h, 0, b"b"), Some(2));
        assert_eq!(m.find_hashed(h, 0, b"c"), None);
    }

    #[test]
    fn the_table_grows_past_its_first_block() {
        let mut m = Metrics::new();
        let names: std::vec::Vec<std::string::String> =
            (0..100).map(|i| std::format!("metric.{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            m.insert(0, n.as_bytes(), i as u32);
        }
        m.insert(0, b"", 1000);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.find(0, n.as_bytes()), Some(i as u32));
        }
        assert_eq!(m.find(0, b""), Some(1000));
    }

    #[test]
    fn a_metric_is_found_by_its_length_and_a_comparison() {
        let mut m = Metrics::new();
        m.insert(0, b"requests.route.a", 9);
        m.insert(1, b"requests.route.a", 10);
        m.insert(0, b"requests.route.b", 11);
        let is = |want: &'static [u8]| move |n: &[u8]| n == want;
        assert_eq!(m.find_with(0, 16, is(b"requests.route.a")), Some(9));
        assert_eq!(m.find_with(1, 16, is(b"requests.route.a")), Some(10));
        assert_eq!(m.find_with(0, 16, is(b"requests.route.b")), Some(11));
        assert_eq!(m.find_with(0, 15, is(b"requests.route.a")), None);
        assert_eq!(m.find_with(2, 16, is(b"requests.route.a")), None);
    }

    #[test]
    fn the_hash_is_fnv1a_seeded_with_the_kind() {
        // FNV-1a 64 of "a" (the kind 0 seed is the standard offset basis).
        assert_eq!(hash(0, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(hash(1, b"a"), hash(0, b"a"));
    }

    #[test]
    fn bytes_compare_whole_words_and_tails() {
        assert!(super::same_bytes(b"", b""));
        assert!(super::same_bytes(
            b"0123456789abcdefXYZ",
            b"0123456789abcdefXYZ"
        ));
        assert!(!super::same_bytes(
            b"0123456789abcdefXYZ",
            b"0123456789abcdefXYz"
        ));
        assert!(!super::same_bytes(
            b"0123456789abcdefXYZ",
            b"0123456789abcdEfXYZ"
        ));
        assert!(!super::same_bytes(b"01234567", b"012345678"));
    }
}
