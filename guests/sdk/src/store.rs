//! The shared key-value store (`weft:plugin/keyvalue`) behind a small compare-and-swap trait, so
//! that counting logic (rate limits, shared error windows) can be unit-tested natively against
//! [`MemoryStore`] and run against [`HostStore`] in weft or Envoy.

use crate::keyvalue;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The entry changed since it was read: read it again and retry.
    CasMismatch,
    /// Anything else.
    Other(String),
}

/// A key-value store with compare-and-swap.
pub trait CasStore {
    /// The value at `key` and its version, `None` if absent.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` at `key` if its version is still `cas` (`0`: only if absent).
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

/// The host's store, shared by every instance of the plugin (every Envoy worker, in Envoy).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostStore;

impl CasStore for HostStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        keyvalue::get(key)
            .map(|e| e.map(|e| (e.value, e.cas)))
            .map_err(store_error)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        keyvalue::set(key, value, Some(cas)).map_err(store_error)
    }
}

fn store_error(e: keyvalue::Error) -> StoreError {
    match e {
        keyvalue::Error::CasMismatch => StoreError::CasMismatch,
        keyvalue::Error::TooLarge => StoreError::Other("value or store too large".into()),
        keyvalue::Error::Other(m) => StoreError::Other(m),
    }
}

/// An in-memory store with the host's semantics, for native tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: std::collections::HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl CasStore for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let current = self.entries.get(key).map(|(_, c)| *c).unwrap_or(0);
        if current != cas {
            return Err(StoreError::CasMismatch);
        }
        self.next_cas += 1;
        self.entries
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}
