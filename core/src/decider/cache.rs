//! Folds kept between commands, so that the next command on the same keys reads nothing.
//!
//! Optimistic: a decision on cached folds is appended at their versions, so a stream another
//! writer moved meanwhile makes the append conflict, and the executor then reads what is new
//! and decides again; a refusal decided on cached folds is decided again on fresh ones before
//! it is returned. So the cache changes how much is read, never what is decided.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Entry, ReadSet, StreamKey};

/// Most keys a [`StateCache`] holds by default; past its bound, a quarter is dropped.
pub const STATE_CACHE_MAX_KEYS: usize = 100_000;

/// The folds of keys commands have read, newest versions only.
pub struct StateCache<K: StreamKey> {
    entries: Mutex<HashMap<K, Entry<K::State>>>,
    max_keys: usize,
}

impl<K: StreamKey> Default for StateCache<K> {
    fn default() -> Self {
        StateCache::with_bound(STATE_CACHE_MAX_KEYS)
    }
}

impl<K: StreamKey> StateCache<K> {
    /// A cache of at most [`STATE_CACHE_MAX_KEYS`] keys.
    pub fn new() -> Self {
        StateCache::default()
    }

    /// A cache of at most `max_keys` keys (at least one).
    pub fn with_bound(max_keys: usize) -> Self {
        StateCache { entries: Mutex::new(HashMap::new()), max_keys: max_keys.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<K::State>>> {
        // A panic while holding the lock leaves whole entries behind: still usable.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached fold of `key`.
    pub fn get(&self, key: &K) -> Option<Entry<K::State>> {
        self.lock().get(key).cloned()
    }

    /// Keeps every entry of `read` that is newer than what the cache holds.
    pub fn remember(&self, read: &ReadSet<K>) {
        let mut entries = self.lock();
        if entries.len() + read.len() > self.max_keys {
            // Drop arbitrary keys: a dropped key only costs one read later.
            let drop = entries.len() / 4 + read.len();
            let victims: Vec<K> = entries.keys().take(drop).cloned().collect();
            for key in victims {
                entries.remove(&key);
            }
        }
        for (key, entry) in read.entries() {
            let newer = entries.get(key).is_none_or(|old| !old.at_least(entry) || entry.at_least(old));
            if newer {
                entries.insert(key.clone(), entry.clone());
            }
        }
        debug_assert!(entries.len() <= self.max_keys.max(read.len()), "the cache holds at most its bound");
    }
}
