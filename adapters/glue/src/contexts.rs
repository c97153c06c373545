//! The context table: Proxy-Wasm context id → stream handle.

use crate::mem;

/// A hash map from context id to stream handle: open addressing with linear probing and
/// backward-shift deletion (no tombstones, so a table that sees a million streams stays as
/// small as the most streams at once). Key 0 marks an empty slot (Envoy never uses context 0
/// for a stream).
///
/// Invariant: `cap` is 0 or a power of two; `keys` and `vals` are blocks of `cap` entries from
/// [`mem::realloc`], every key initialized; `len` keys are non-zero, and at least one is zero.
/// All zeros is an empty table.
#[repr(C)]
pub(crate) struct ContextTable {
    keys: *mut u32,
    vals: *mut u32,
    cap: usize,
    len: usize,
}

/// The home slot of `key` in a table of `cap` (a power of two) slots: Fibonacci hashing.
#[inline]
fn slot(key: u32, cap: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B1) as usize) & (cap - 1)
}

impl ContextTable {
    /// An empty table that owns no memory.
    #[cfg(test)]
    pub(crate) const fn new() -> Self {
        ContextTable {
            keys: core::ptr::null_mut(),
            vals: core::ptr::null_mut(),
            cap: 0,
            len: 0,
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn key(&self, i: usize) -> u32 {
        debug_assert!(i < self.cap);
        // SAFETY: callers pass `i < cap`; every key is initialized (invariant).
        unsafe { *self.keys.add(i) }
    }

    fn val(&self, i: usize) -> u32 {
        debug_assert!(i < self.cap);
        // SAFETY: callers pass `i < cap` of a slot with a non-zero key, whose value was written.
        unsafe { *self.vals.add(i) }
    }

    fn set(&mut self, i: usize, key: u32, val: u32) {
        debug_assert!(i < self.cap);
        // SAFETY: callers pass `i < cap`; both arrays have `cap` entries.
        unsafe {
            *self.keys.add(i) = key;
            *self.vals.add(i) = val;
        }
    }

    /// Doubles the table (64 slots at first) and re-inserts every entry.
    fn grow(&mut self) {
        let (old_keys, old_vals, old_cap) = (self.keys, self.vals, self.cap);
        let cap = if old_cap == 0 { 64 } else { old_cap * 2 };
        let keys = mem::alloc(cap * 4, 4) as *mut u32;
        let vals = mem::alloc(cap * 4, 4) as *mut u32;
        // SAFETY: `keys` is a fresh block of `cap` u32s.
        unsafe { core::ptr::write_bytes(keys, 0, cap) };
        self.keys = keys;
        self.vals = vals;
        self.cap = cap;
        self.len = 0;
        for i in 0..old_cap {
            // SAFETY: `i < old_cap`, the old arrays' length; the old value is initialized where
            // the old key is non-zero.
            let (k, v) = unsafe { (*old_keys.add(i), *old_vals.add(i)) };
            if k != 0 {
                self.insert(k, v);
            }
        }
        // The old arrays are handed back to the allocator by shrinking them to nothing useful:
        // `cabi_realloc` cannot free, so growth (not churn) is the only thing that costs memory.
        if old_cap != 0 {
            // SAFETY: both are blocks of `old_cap` u32s from `mem::alloc`, not used again.
            unsafe {
                mem::realloc(old_keys as *mut u8, old_cap * 4, 4, 4);
                mem::realloc(old_vals as *mut u8, old_cap * 4, 4, 4);
            }
        }
    }

    /// Sets the handle of context `key` (replacing an earlier one). Grows at 3/4 full.
    pub(crate) fn insert(&mut self, key: u32, val: u32) {
        if (self.len + 1) * 4 > self.cap * 3 {
            self.grow();
        }
        let mut i = slot(key, self.cap);
        loop {
            let k = self.key(i);
            if k == 0 || k == key {
                if k == 0 {
                    self.len += 1;
                }
                self.set(i, key, val);
                return;
            }
            i = (i + 1) & (self.cap - 1);
        }
    }

    /// The slot of `key`, if it is in the table.
    fn find(&self, key: u32) -> Option<usize> {
        if self.cap == 0 || key == 0 {
            return None;
        }
        let mut i = slot(key, self.cap);
        loop {
            let k = self.key(i);
            if k == key {
                return Some(i);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & (self.cap - 1);
        }
    }

    /// The handle of context `key`.
    pub(crate) fn get(&self, key: u32) -> Option<u32> {
        self.find(key).map(|i| self.val(i))
    }

    /// Removes context `key` and returns its handle.
    pub(crate) fn remove(&mut self, key: u32) -> Option<u32> {
        let i = self.find(key)?;
        let val = self.val(i);
        self.remove_at(i);
        Some(val)
    }

    /// Removes the entry at slot `i`, shifting later entries of the probe run back.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.cap - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let k = self.key(j);
            if k == 0 {
                break;
            }
            let home = slot(k, self.cap);
            // Move j into the hole at i if j's home is not in the cyclic range (i, j].
            let in_range = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !in_range {
                let v = self.val(j);
                self.set(i, k, v);
                i = j;
            }
        }
        // SAFETY: `i < cap` (it is `i` or a `j`, both masked).
        unsafe { *self.keys.add(i) = 0 };
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{ContextTable, slot};
    use std::collections::HashMap;

    /// A xorshift generator, for reproducible key sequences.
    fn keys(seed: u64) -> impl Iterator<Item = u32> {
        let mut x = seed;
        core::iter::from_fn(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Some((x as u32) | 1)
        })
    }

    #[test]
    fn inserted_contexts_are_found_and_replaced() {
        let mut t = ContextTable::new();
        assert_eq!(t.get(5), None);
        t.insert(5, 50);
        t.insert(6, 60);
        assert_eq!((t.get(5), t.get(6), t.get(7)), (Some(50), Some(60), None));
        t.insert(5, 51);
        assert_eq!((t.get(5), t.len()), (Some(51), 2));
        assert_eq!(t.get(0), None, "0 is never a key");
    }

    #[test]
    fn the_table_grows_at_three_quarters_and_keeps_every_entry() {
        let mut t = ContextTable::new();
        for k in 1..=48 {
            t.insert(k, k * 10);
        }
        assert_eq!(t.cap, 64);
        t.insert(49, 490);
        assert_eq!(t.cap, 128);
        assert!((1..=49).all(|k| t.get(k) == Some(k * 10)));
    }

    #[test]
    fn removal_keeps_colliding_entries_reachable() {
        // Keys with the same home slot in a 64-slot table, so they form one probe run, and
        // one whose run wraps around the end of the table.
        let home = |k| slot(k, 64);
        let same: std::vec::Vec<u32> = (1..100_000).filter(|&k| home(k) == 63).take(4).collect();
        let mut t = ContextTable::new();
        for &k in &same {
            t.insert(k, k + 1);
        }
        assert_eq!(t.remove(same[0]), Some(same[0] + 1));
        assert_eq!(t.remove(same[0]), None);
        for &k in &same[1..] {
            assert_eq!(t.get(k), Some(k + 1), "{k} after removing the run's head");
        }
        assert_eq!(t.remove(same[2]), Some(same[2] + 1));
        assert_eq!(
            (t.get(same[1]), t.get(same[3])),
            (Some(same[1] + 1), Some(same[3] + 1))
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_million_streams_churn_through_a_table_as_large_as_the_most_at_once() {
        let mut t = ContextTable::new();
        let mut model = HashMap::new();
        let mut live = std::collections::VecDeque::new();
        for (n, k) in keys(0x9e37_79b9_7f4a_7c15).take(1_000_000).enumerate() {
            if model.contains_key(&k) {
                continue;
            }
            t.insert(k, n as u32);
            model.insert(k, n as u32);
            live.push_back(k);
            if live.len() > 100 {
                let old = live.pop_front().expect("not empty");
                assert_eq!(t.remove(old), model.remove(&old));
            }
        }
        assert_eq!(t.len(), model.len());
        assert!(model.iter().all(|(k, v)| t.get(*k) == Some(*v)));
        assert_eq!(t.cap, 256, "no tombstones: the table stays small");
    }
}
