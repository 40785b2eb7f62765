//! What a decision read: the fold of every key, with the version of every stream behind it.

use std::collections::{BTreeMap, HashMap};

use super::StreamKey;
use crate::event::{EventRecord, StreamId};

/// One key's fold and the version of each of its streams (`None`: the stream is empty).
#[derive(Clone, Debug)]
pub struct Entry<S> {
    /// The fold.
    pub state: S,
    /// Each stream of the key and the version its newest folded event had.
    pub versions: Vec<(StreamId, Option<u64>)>,
}

impl<S> Entry<S> {
    /// The fold of `key` before any event.
    pub fn initial<K: StreamKey<State = S>>(key: &K) -> Entry<S> {
        Entry { state: key.initial(), versions: key.streams().into_iter().map(|s| (s, None)).collect() }
    }

    /// Whether this entry has folded at least as far as `other` on every stream.
    pub fn at_least(&self, other: &Entry<S>) -> bool {
        self.versions.iter().zip(&other.versions).all(|((_, mine), (_, theirs))| mine >= theirs)
    }
}

/// The keys a decision read, their folds, and where each stream stood.
#[derive(Clone, Debug)]
pub struct ReadSet<K: StreamKey> {
    entries: BTreeMap<K, Entry<K::State>>,
    /// Which keys fold each stream (a stream may be read by more than one key).
    routes: HashMap<StreamId, Vec<K>>,
}

impl<K: StreamKey> Default for ReadSet<K> {
    fn default() -> Self {
        ReadSet { entries: BTreeMap::new(), routes: HashMap::new() }
    }
}

impl<K: StreamKey> ReadSet<K> {
    /// An empty read set.
    pub fn new() -> Self {
        ReadSet::default()
    }

    /// The fold of `key`, if it was read.
    pub fn get(&self, key: &K) -> Option<&K::State> {
        self.entries.get(key).map(|e| &e.state)
    }

    /// The entry of `key`, if it was read.
    pub fn entry(&self, key: &K) -> Option<&Entry<K::State>> {
        self.entries.get(key)
    }

    /// Whether `key` was read.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// How many keys were read.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key read, with its entry.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &Entry<K::State>)> {
        self.entries.iter()
    }

    /// The version `stream` was read at: `None` if no key read it, `Some(None)` if it was
    /// read empty.
    pub fn version_of(&self, stream: &StreamId) -> Option<Option<u64>> {
        let key = self.routes.get(stream)?.first()?;
        let entry = self.entries.get(key)?;
        entry.versions.iter().find(|(s, _)| s == stream).map(|(_, v)| *v)
    }

    /// Records what was read for `key` (replacing an earlier entry).
    pub fn insert(&mut self, key: K, entry: Entry<K::State>) {
        for (stream, _) in &entry.versions {
            let keys = self.routes.entry(stream.clone()).or_default();
            if !keys.contains(&key) {
                keys.push(key.clone());
            }
        }
        self.entries.insert(key, entry);
    }

    /// Records `key` as read with its fold before any event, unless it was read already.
    pub fn insert_initial(&mut self, key: &K) {
        if !self.contains(key) {
            self.insert(key.clone(), Entry::initial(key));
        }
    }

    /// Applies `apply` to the fold of `key` for its own event at `stream_version` (the next
    /// version of the key's one stream), and records the new version. `None` if `key` was not
    /// read or its stream is not at the version before.
    pub fn evolve_own(&mut self, key: &K, stream_version: u64, apply: impl FnOnce(&mut K::State)) -> Option<()> {
        let entry = self.entries.get_mut(key)?;
        let [(_, version)] = entry.versions.as_mut_slice() else { return None };
        if version.map_or(0, |v| v + 1) != stream_version {
            return None;
        }
        apply(&mut entry.state);
        *version = Some(stream_version);
        Some(())
    }

    /// Folds a record into every key that reads its stream. Returns whether any did.
    pub fn fold(&mut self, record: &EventRecord) -> Result<bool, crate::Error> {
        let Some(keys) = self.routes.get(&record.stream_id) else { return Ok(false) };
        for key in keys {
            let Some(entry) = self.entries.get_mut(key) else { continue };
            let Some((_, version)) = entry.versions.iter_mut().find(|(s, _)| *s == record.stream_id) else {
                continue;
            };
            let expected = version.map_or(0, |v| v + 1);
            // A fold never skips an event of its stream, and never folds one twice.
            debug_assert_eq!(record.stream_version, expected, "{key:?} folds {} in order", record.stream_id);
            if record.stream_version < expected {
                continue;
            }
            key.evolve(&mut entry.state, record)?;
            *version = Some(record.stream_version);
        }
        Ok(true)
    }
}
