//! The response cache (SPEC §6): successful bodies keyed by cluster, method, authority,
//! rendered path and the `vary` headers, kept `ttl_ms`, and served stale on failure for
//! `stale_if_error_ms` more.
//!
//! Bounded by construction: each call owns `max_entries` slots (fixed shared-data keys), and an
//! entry may live in one of two slots chosen by hash, replacing the older occupant. No index
//! to contend on, no key ever created beyond the slots.

use super::{stable_hash, Store};

/// `cache` (SPEC §6) of one call: how long entries serve, and the call's own slots in the
/// [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePolicy {
    /// Milliseconds an entry answers the call instead of the upstream (1 to a day).
    pub ttl_ms: u64,
    /// Milliseconds after `ttl_ms` during which an entry may stand in for a failed request,
    /// reported in `_meta.stale` (0: never).
    pub stale_if_error_ms: u64,
    /// The call's slots (1 to 100,000): the most entries it keeps.
    pub max_entries: u64,
    /// Prefix of this call's slot keys.
    pub namespace: String,
}

/// What the cache holds for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Younger than `ttl_ms`: answer with this body, send nothing.
    Fresh(Vec<u8>),
    /// Too old to serve on its own, young enough to stand in for a failure.
    Stale {
        /// The body as the upstream sent it.
        body: Vec<u8>,
        /// Milliseconds since it was stored.
        age_ms: u64,
    },
    /// Nothing usable: send the request.
    Miss,
}

/// The cache key of one request. Every part is length-prefixed, so no two requests share it.
pub fn request_key(
    cluster: &str,
    method: &str,
    authority: &str,
    path: &str,
    vary: &[Option<&str>],
) -> String {
    let mut key = String::with_capacity(cluster.len() + authority.len() + path.len() + 32);
    for part in [cluster, method, authority, path] {
        super::push_key_part(&mut key, Some(part));
    }
    for value in vary {
        super::push_key_part(&mut key, *value);
    }
    key
}

impl CachePolicy {
    /// What the cache holds for the request `key` ([`request_key`]) at `now_ms` (host clock,
    /// ms since the Unix epoch). Reads only; entries past `ttl_ms + stale_if_error_ms` are
    /// misses.
    pub fn lookup(&self, store: &dyn Store, key: &str, now_ms: u64) -> Lookup {
        for slot in self.slots(key) {
            let Some((bytes, _)) = store.get(&slot) else {
                continue;
            };
            let Some(entry) = Entry::decode(&bytes) else {
                continue;
            };
            if entry.key != key {
                continue;
            }
            let age_ms = now_ms.saturating_sub(entry.stored_ms);
            if age_ms < self.ttl_ms {
                return Lookup::Fresh(entry.body.to_vec());
            }
            if age_ms < self.ttl_ms.saturating_add(self.stale_if_error_ms) {
                return Lookup::Stale {
                    body: entry.body.to_vec(),
                    age_ms,
                };
            }
            return Lookup::Miss;
        }
        Lookup::Miss
    }

    /// Stores a body; a concurrent write to the same slot wins (it is only a cache).
    pub fn save(&self, store: &dyn Store, key: &str, body: &[u8], now_ms: u64) {
        let mut best: Option<(String, Option<u32>, u64)> = None;
        for slot in self.slots(key) {
            let current = store.get(&slot);
            let (cas, stored_ms, same_key) = match &current {
                Some((bytes, cas)) => match Entry::decode(bytes) {
                    Some(entry) => (Some(*cas), entry.stored_ms, entry.key == key),
                    None => (Some(*cas), 0, false),
                },
                None => (None, 0, false),
            };
            if same_key || current.is_none() {
                best = Some((slot, cas, 0));
                break;
            }
            if best
                .as_ref()
                .is_none_or(|(_, _, oldest)| stored_ms < *oldest)
            {
                best = Some((slot, cas, stored_ms));
            }
        }
        if let Some((slot, cas, _)) = best {
            let entry = Entry {
                stored_ms: now_ms,
                key,
                body,
            };
            store.set(&slot, &entry.encode(), cas);
        }
    }

    /// The two slots an entry may live in.
    fn slots(&self, key: &str) -> [String; 2] {
        let hash = stable_hash(key);
        let count = self.max_entries.max(1);
        let first = hash % count;
        let second = (hash >> 32).wrapping_mul(0x9e37_79b9) % count;
        [
            format!("{}{first}", self.namespace),
            format!("{}{second}", self.namespace),
        ]
    }
}

/// A slot's value: `stored_ms` (8 bytes, little-endian), key length (4 bytes), key, body.
struct Entry<'a> {
    stored_ms: u64,
    key: &'a str,
    body: &'a [u8],
}

impl<'a> Entry<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.key.len() + self.body.len());
        out.extend_from_slice(&self.stored_ms.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(self.key.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(self.body);
        out
    }

    fn decode(bytes: &'a [u8]) -> Option<Entry<'a>> {
        let stored_ms = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let key_len =
            usize::try_from(u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?)).ok()?;
        let key = std::str::from_utf8(bytes.get(12..12 + key_len)?).ok()?;
        let body = bytes.get(12 + key_len..)?;
        Some(Entry {
            stored_ms,
            key,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::MemoryStore;

    fn policy(max_entries: u64) -> CachePolicy {
        CachePolicy {
            ttl_ms: 100,
            stale_if_error_ms: 1000,
            max_entries,
            namespace: "ga/c/r/c/".into(),
        }
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let store = MemoryStore::default();
        let cache = policy(8);
        let key = request_key("catalog", "GET", "catalog", "/p/1", &[]);
        assert_eq!(cache.lookup(&store, &key, 0), Lookup::Miss);
        cache.save(&store, &key, b"{\"v\":1}", 1_000);
        assert_eq!(
            cache.lookup(&store, &key, 1_050),
            Lookup::Fresh(b"{\"v\":1}".to_vec())
        );
        assert_eq!(
            cache.lookup(&store, &key, 1_500),
            Lookup::Stale {
                body: b"{\"v\":1}".to_vec(),
                age_ms: 500
            }
        );
        assert_eq!(cache.lookup(&store, &key, 2_200), Lookup::Miss);
    }

    #[test]
    fn vary_values_and_every_part_separate_entries() {
        let a = request_key("c", "GET", "c", "/p", &[Some("Bearer alice")]);
        let b = request_key("c", "GET", "c", "/p", &[Some("Bearer bob")]);
        let none = request_key("c", "GET", "c", "/p", &[None]);
        let shifted = request_key("c", "GET", "c", "/p|1:x", &[]);
        assert!(
            a != b
                && a != none
                && b != none
                && shifted != request_key("c", "GET", "c", "/p", &[Some("x")])
        );
        let store = MemoryStore::default();
        let cache = policy(64);
        cache.save(&store, &a, b"alice", 0);
        assert_eq!(
            cache.lookup(&store, &b, 10),
            Lookup::Miss,
            "never across a vary boundary"
        );
        assert_eq!(
            cache.lookup(&store, &a, 10),
            Lookup::Fresh(b"alice".to_vec())
        );
    }

    #[test]
    fn the_cache_never_grows_past_its_slots() {
        let store = MemoryStore::default();
        let cache = policy(4);
        for i in 0..100 {
            cache.save(
                &store,
                &request_key("c", "GET", "c", &format!("/p/{i}"), &[]),
                b"x",
                i,
            );
        }
        assert!(store.entries.borrow().len() <= 4);
        let last = request_key("c", "GET", "c", "/p/99", &[]);
        assert_eq!(
            cache.lookup(&store, &last, 100),
            Lookup::Fresh(b"x".to_vec()),
            "the newest entry stays"
        );
    }
}
