//! The key-value store shared by all instances of one plugin, with compare-and-swap versions
//! (the semantics of Proxy-Wasm shared data, so the same plugin behaves alike in Envoy).

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The entry's version is not the one given.
    CasMismatch,
    /// The value, or the store with it, is over the limit.
    TooLarge,
}

/// A shared key-value store. Versions start at 1 and grow by one per write of a key; version 0
/// means "absent" in a compare-and-swap.
#[derive(Debug)]
pub struct KvStore {
    entries: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    max_bytes: usize,
}

impl KvStore {
    /// A store that holds at most `max_bytes` of keys and values together.
    pub fn new(max_bytes: usize) -> Self {
        KvStore {
            entries: Mutex::new(HashMap::new()),
            max_bytes,
        }
    }

    /// The value and version of `key`.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).cloned()
    }

    /// Writes `value`; with `cas = Some(v)` only if the current version is `v` (0 = absent).
    pub fn set(&self, key: &str, value: Vec<u8>, cas: Option<u32>) -> Result<(), KvError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let current = entries.get(key).map(|(_, v)| *v).unwrap_or(0);
        if let Some(expected) = cas
            && expected != current
        {
            return Err(KvError::CasMismatch);
        }
        let used: usize = entries.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
        let old = entries
            .get(key)
            .map(|(v, _)| key.len() + v.len())
            .unwrap_or(0);
        if used - old + key.len() + value.len() > self.max_bytes {
            return Err(KvError::TooLarge);
        }
        entries.insert(key.to_string(), (value, current.wrapping_add(1).max(1)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_detects_a_concurrent_write() {
        let kv = KvStore::new(1024);
        assert_eq!(kv.get("n"), None);
        kv.set("n", b"1".to_vec(), Some(0))
            .expect("absent key accepts cas 0");
        let (_, v1) = kv.get("n").expect("written");
        assert_eq!(v1, 1);
        kv.set("n", b"2".to_vec(), Some(v1))
            .expect("first writer wins");
        assert_eq!(
            kv.set("n", b"3".to_vec(), Some(v1)),
            Err(KvError::CasMismatch)
        );
        assert_eq!(kv.get("n"), Some((b"2".to_vec(), 2)));
        kv.set("n", b"4".to_vec(), None)
            .expect("unconditional write");
        assert_eq!(kv.get("n").map(|e| e.1), Some(3));
    }

    #[test]
    fn store_size_is_bounded() {
        let kv = KvStore::new(10);
        kv.set("k", vec![0; 9], None).expect("fits");
        assert_eq!(kv.set("j", vec![0; 1], None), Err(KvError::TooLarge));
        kv.set("k", vec![0; 8], None)
            .expect("replacing a value frees its bytes");
    }
}
