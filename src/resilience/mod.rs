//! SPEC §6 policies, one file each: retries and hedging (`retry.rs`), the response cache
//! (`cache.rs`), the circuit breakers (`breaker.rs`) and the coalescing of identical requests
//! (`coalesce.rs`, whose book of requests in flight is per worker, kept by the host). Each
//! decides; the state machine (`gather/machine.rs`) asks. The cache and the breakers keep state
//! shared by every worker in a [`Store`] (Envoy shared data in the filter, a map in tests),
//! updated with compare-and-swap, so workers never overwrite each other's changes unknowingly.

pub mod breaker;
pub mod cache;
pub mod coalesce;
pub mod retry;

use std::cell::RefCell;
use std::collections::HashMap;

/// Appends one part of a request key (the cache's, coalescing's) to `key`: `<length>:<text>|`,
/// or `-|` for a value that is absent, so that no text can pose as two parts and no two
/// different requests share a key.
pub(crate) fn push_key_part(key: &mut String, part: Option<&str>) {
    match part {
        Some(text) => {
            key.push_str(&text.len().to_string());
            key.push(':');
            key.push_str(text);
            key.push('|');
        }
        None => key.push_str("-|"),
    }
}

/// Key-value storage shared by the workers, with compare-and-swap.
pub trait Store {
    /// The value and its version (`cas`), if the key exists.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes if the key is still at version `cas` (`None`: whatever it is). `false` when
    /// another writer came first.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// An in-process store with Envoy's shared-data semantics, for tests and native use.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut entries = self.entries.borrow_mut();
        let current = entries.get(key).map_or(0, |(_, version)| *version);
        if cas.is_some_and(|expected| expected != current) {
            return false;
        }
        entries.insert(
            key.to_string(),
            (value.to_vec(), current.wrapping_add(1).max(1)),
        );
        true
    }
}

/// FNV-1a: the same on every worker and every platform, unlike std's randomised hasher.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
