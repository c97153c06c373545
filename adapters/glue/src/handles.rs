//! The handle table of the exported `http-stream` resource.

use crate::mem;

/// Resource handles as the canonical ABI gives them to the guest: handle `h` (1-based) → rep,
/// with dropped handles reused from a stack of free ones. Rep 0 marks a dropped handle.
///
/// Invariant: `reps` and `free` are blocks of `cap` u32s from [`mem::realloc`] (or null with
/// `cap` 0); `reps[..len]` and `free[..free_len]` are initialized; `free_len <= len <= cap`.
/// All zeros is an empty table.
#[repr(C)]
pub(crate) struct Handles {
    reps: *mut u32,
    free: *mut u32,
    cap: usize,
    len: usize,
    free_len: usize,
}

impl Handles {
    /// An empty table that owns no memory.
    #[cfg(test)]
    pub(crate) const fn new() -> Self {
        Handles {
            reps: core::ptr::null_mut(),
            free: core::ptr::null_mut(),
            cap: 0,
            len: 0,
            free_len: 0,
        }
    }

    /// A new handle for `rep` (`[resource-new]`).
    pub(crate) fn new_handle(&mut self, rep: u32) -> u32 {
        if self.free_len > 0 {
            self.free_len -= 1;
            // SAFETY: `free_len < len <= cap` entries of `free` are initialized, and every free
            // handle `h` is in `1..=len`, so `h - 1` indexes `reps`.
            unsafe {
                let h = *self.free.add(self.free_len);
                *self.reps.add(h as usize - 1) = rep;
                return h;
            }
        }
        if self.len == self.cap {
            let cap = if self.cap == 0 { 64 } else { self.cap * 2 };
            // SAFETY: both arrays are null or blocks of `self.cap` u32s (alignment 4).
            unsafe {
                self.reps =
                    mem::realloc(self.reps as *mut u8, self.cap * 4, 4, cap * 4) as *mut u32;
                self.free =
                    mem::realloc(self.free as *mut u8, self.cap * 4, 4, cap * 4) as *mut u32;
            }
            self.cap = cap;
        }
        // SAFETY: `len < cap` now.
        unsafe { *self.reps.add(self.len) = rep };
        self.len += 1;
        self.len as u32
    }

    /// The rep of a live handle `h` (`[resource-rep]`); `None` for a handle that was never given
    /// out or was dropped.
    pub(crate) fn rep(&self, h: u32) -> Option<u32> {
        if h == 0 || h as usize > self.len {
            return None;
        }
        // SAFETY: `1 <= h <= len`, and `reps[..len]` is initialized.
        let rep = unsafe { *self.reps.add(h as usize - 1) };
        if rep == 0 { None } else { Some(rep) }
    }

    /// Drops a live handle `h` and returns its rep, for the caller to run the destructor.
    pub(crate) fn drop_handle(&mut self, h: u32) -> Option<u32> {
        let rep = self.rep(h)?;
        // SAFETY: `h` is live, so `1 <= h <= len`, and it is not on the free stack, which has
        // room for every handle (`free_len < len <= cap`).
        unsafe {
            *self.reps.add(h as usize - 1) = 0;
            *self.free.add(self.free_len) = h;
        }
        self.free_len += 1;
        Some(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::Handles;

    #[test]
    fn handles_are_one_based_and_map_to_their_rep() {
        let mut t = Handles::new();
        assert_eq!(t.rep(0), None);
        assert_eq!(t.rep(1), None);
        let (a, b) = (t.new_handle(100), t.new_handle(200));
        assert_eq!((a, b), (1, 2));
        assert_eq!((t.rep(a), t.rep(b), t.rep(3)), (Some(100), Some(200), None));
    }

    #[test]
    fn a_dropped_handle_is_dead_and_then_reused() {
        let mut t = Handles::new();
        let a = t.new_handle(100);
        let b = t.new_handle(200);
        assert_eq!(t.drop_handle(a), Some(100));
        assert_eq!(t.rep(a), None);
        assert_eq!(t.drop_handle(a), None, "a second drop is refused");
        assert_eq!(t.rep(b), Some(200));
        assert_eq!(t.new_handle(300), a);
        assert_eq!(t.rep(a), Some(300));
        assert_eq!(t.new_handle(400), 3);
    }

    #[test]
    fn the_table_grows_and_stays_as_large_as_the_most_handles_at_once() {
        let mut t = Handles::new();
        for round in 0..10_000u32 {
            let hs: [u32; 100] =
                core::array::from_fn(|i| t.new_handle(round * 1000 + i as u32 + 1));
            for (i, h) in hs.iter().enumerate() {
                assert_eq!(t.rep(*h), Some(round * 1000 + i as u32 + 1));
            }
            for h in hs {
                assert!(t.drop_handle(h).is_some());
            }
        }
        assert_eq!((t.len, t.cap), (100, 128));
    }
}
