//! Runs CI commands against a store: load the streams a decision needs, decide, append every
//! written stream at the version read and every referenced stream as a condition; on a
//! conflict, load again and re-decide (at most [`MAX_COMMAND_ATTEMPTS`]). A [`StateCache`]
//! makes the loading optimistic: a server's commands usually read nothing at all.

use std::collections::HashMap;

use crate::Error;
use crate::change::ChangeControl;
use crate::event::{EventRecord, Metadata, StreamId};
use crate::store::{AppendOutcome, AppendRequest, Direction, EventStore, ExpectedVersion, StoreError};
use crate::time::Timestamp;

use super::registry::SchemaRegistry;
use super::{
    ChangeId, CiCommand, CiEvent, CiId, CiState, Decision, Loaded, NameKey, NameState, RelId, RelState, decide, needs,
};

/// Re-decisions after a conflict before giving up.
pub const MAX_COMMAND_ATTEMPTS: usize = 8;
/// Rounds of loading (a withdrawal loads the CI, then its relationships and their other ends).
const MAX_LOAD_ROUNDS: usize = 4;

/// Most stream states a [`StateCache`] holds; past it, arbitrary entries are dropped.
pub const STATE_CACHE_MAX_STREAMS: usize = 100_000;

/// Who asks, and, for a bulk load into an empty log, when it happened.
#[derive(Clone)]
pub struct CommandContext {
    pub metadata: Metadata,
    /// Only for fixtures and imports into an empty log (see the store's bulk-load rule).
    pub recorded_at: Option<Timestamp>,
    /// Stream states kept between commands (a server keeps one for its life).
    pub cache: Option<std::sync::Arc<StateCache>>,
}

impl CommandContext {
    pub fn new(metadata: Metadata) -> Self {
        CommandContext { metadata, recorded_at: None, cache: None }
    }

    pub fn with_cache(mut self, cache: std::sync::Arc<StateCache>) -> Self {
        self.cache = Some(cache);
        self
    }
}

/// The folded states of streams commands have read, so that the next command on them reads
/// nothing. Optimistic: a decision on cached states is appended at their versions, so a state
/// another writer moved meanwhile makes the append conflict, and the command then reads what
/// is new and decides again; a refusal decided on cached states is decided again on fresh ones
/// before it is returned. So the cache changes how much is read, never what is decided.
#[derive(Default)]
pub struct StateCache {
    inner: std::sync::Mutex<CachedStates>,
}

#[derive(Default)]
struct CachedStates {
    schema: Option<SchemaRegistry>,
    cis: HashMap<CiId, CiState>,
    rels: HashMap<RelId, RelState>,
    names: HashMap<NameKey, NameState>,
    changes: HashMap<ChangeId, ChangeControl>,
}

impl CachedStates {
    fn len(&self) -> usize {
        self.cis.len() + self.rels.len() + self.names.len() + self.changes.len()
    }

    /// Keeps the total under the bound by dropping whole maps' arbitrary entries.
    fn make_room(&mut self) {
        if self.len() < STATE_CACHE_MAX_STREAMS {
            return;
        }
        let drop_some = |len: usize| len / 4 + 1;
        let n = drop_some(self.cis.len());
        let keys: Vec<CiId> = self.cis.keys().take(n).copied().collect();
        keys.iter().for_each(|k| {
            self.cis.remove(k);
        });
        let n = drop_some(self.rels.len());
        let keys: Vec<RelId> = self.rels.keys().take(n).copied().collect();
        keys.iter().for_each(|k| {
            self.rels.remove(k);
        });
        let n = drop_some(self.names.len());
        let keys: Vec<NameKey> = self.names.keys().take(n).cloned().collect();
        keys.iter().for_each(|k| {
            self.names.remove(k);
        });
        let n = drop_some(self.changes.len());
        let keys: Vec<ChangeId> = self.changes.keys().take(n).copied().collect();
        keys.iter().for_each(|k| {
            self.changes.remove(k);
        });
    }
}

/// Keeps `new` unless the cache already holds a later version.
fn keep<K: std::hash::Hash + Eq, S: Clone>(
    map: &mut HashMap<K, S>,
    key: K,
    new: &S,
    version: impl Fn(&S) -> Option<u64>,
) {
    let newer = map.get(&key).is_none_or(|old| version(old) < version(new));
    if newer {
        map.insert(key, new.clone());
    }
}

impl StateCache {
    pub fn new() -> Self {
        StateCache::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedStates> {
        // A panic while holding the lock leaves whole states behind: still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many stream states it holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores what a command loaded, with its own writes applied.
    fn remember(&self, loaded: &Loaded) {
        let mut cache = self.lock();
        cache.make_room();
        if cache.schema.as_ref().is_none_or(|s| s.version < loaded.schema.version) {
            cache.schema = Some(loaded.schema.clone());
        }
        for (id, state) in &loaded.cis {
            keep(&mut cache.cis, *id, state, |s| s.version);
        }
        for (id, state) in &loaded.rels {
            keep(&mut cache.rels, *id, state, |s| s.version);
        }
        for (key, state) in &loaded.names {
            keep(&mut cache.names, key.clone(), state, |s| s.version);
        }
        for (id, state) in &loaded.changes {
            keep(&mut cache.changes, *id, state, |s| s.version);
        }
    }
}

/// Reads a stream's events after `after` (all of it when `None`) and folds them into `apply`.
async fn catch_up(
    store: &dyn EventStore,
    stream: &StreamId,
    after: Option<u64>,
    mut apply: impl FnMut(&EventRecord) -> Result<(), Error>,
) -> Result<(), Error> {
    let page = store.limits().max_page_events;
    let mut next = after.map_or(0, |v| v + 1);
    loop {
        let batch = store.read_stream(stream, Direction::Forward, Some(next), page).await?;
        let Some(last) = batch.last() else { return Ok(()) };
        next = last.stream_version + 1;
        for record in &batch {
            apply(record)?;
        }
        if batch.len() < page {
            return Ok(());
        }
    }
}

pub(crate) async fn read_whole_stream(store: &dyn EventStore, stream: &StreamId) -> Result<Vec<EventRecord>, Error> {
    let mut records: Vec<EventRecord> = Vec::new();
    catch_up(store, stream, None, |record| {
        records.push(record.clone());
        Ok(())
    })
    .await?;
    Ok(records)
}

/// Loads what `command` needs. With `fresh`, every state is brought up to date from the store
/// (starting from its cached version); without, cached states are taken as they are.
async fn load(
    store: &dyn EventStore,
    command: &CiCommand,
    cache: Option<&StateCache>,
    fresh: bool,
) -> Result<(Loaded, bool), Error> {
    let mut from_cache = false;
    let cached_schema = cache.and_then(|c| c.lock().schema.clone());
    // The schema first: it declares the custom classes the other streams may name.
    let schema = match cached_schema {
        Some(schema) if !fresh => {
            from_cache = true;
            schema
        }
        cached => {
            let mut schema = cached.unwrap_or_default();
            let after = schema.version;
            catch_up(store, &super::registry::schema_stream(), after, |r| Ok(schema.apply(r)?)).await?;
            schema
        }
    };
    let mut loaded = Loaded { schema, ..Loaded::default() };
    for _ in 0..MAX_LOAD_ROUNDS {
        let wanted = needs(command, &loaded);
        if wanted.is_empty() {
            break;
        }
        for id in wanted.cis {
            let cached = cache.and_then(|c| c.lock().cis.get(&id).cloned());
            let state = match cached {
                Some(state) if !fresh => {
                    from_cache = true;
                    state
                }
                cached => {
                    let mut state = cached.unwrap_or_default();
                    let after = state.version;
                    catch_up(store, &id.stream(), after, |r| {
                        state.apply(&CiEvent::from_record(r)?, r.stream_version);
                        Ok(())
                    })
                    .await?;
                    state
                }
            };
            loaded.cis.insert(id, state);
        }
        for id in wanted.rels {
            let cached = cache.and_then(|c| c.lock().rels.get(&id).cloned());
            let state = match cached {
                Some(state) if !fresh => {
                    from_cache = true;
                    state
                }
                cached => {
                    let mut state = cached.unwrap_or_default();
                    let after = state.version;
                    catch_up(store, &id.stream(), after, |r| {
                        state.apply(&CiEvent::from_record(r)?, r.stream_version);
                        Ok(())
                    })
                    .await?;
                    state
                }
            };
            loaded.rels.insert(id, state);
        }
        for key in wanted.names {
            let cached = cache.and_then(|c| c.lock().names.get(&key).cloned());
            let state = match cached {
                Some(state) if !fresh => {
                    from_cache = true;
                    state
                }
                cached => {
                    let mut state = cached.unwrap_or_default();
                    let after = state.version;
                    catch_up(store, &key.stream(), after, |r| {
                        state.apply(&CiEvent::from_record(r)?, r.stream_version);
                        Ok(())
                    })
                    .await?;
                    state
                }
            };
            loaded.names.insert(key, state);
        }
        for id in wanted.changes {
            let cached = cache.and_then(|c| c.lock().changes.get(&id).cloned());
            let state = match cached {
                Some(state) if !fresh => {
                    from_cache = true;
                    state
                }
                cached => {
                    let mut state = cached.unwrap_or_default();
                    let after = state.version;
                    catch_up(store, &crate::change::state_stream(id), after, |r| {
                        state.apply(&crate::change::ChangeEvent::from_record(r)?, r.stream_version);
                        Ok(())
                    })
                    .await?;
                    state
                }
            };
            loaded.changes.insert(id, state);
        }
    }
    Ok((loaded, from_cache))
}

fn version_of(loaded: &Loaded, stream: &StreamId) -> Option<u64> {
    let text = stream.as_str();
    if let Some(state) = loaded.cis.iter().find(|(id, _)| id.stream() == *stream).map(|(_, s)| s) {
        return state.version;
    }
    if let Some(state) = loaded.rels.iter().find(|(id, _)| id.stream() == *stream).map(|(_, s)| s) {
        return state.version;
    }
    if text.starts_with("ci-name-") {
        return loaded.names.iter().find(|(key, _)| key.stream() == *stream).and_then(|(_, s)| s.version);
    }
    if let Some((_, control)) = loaded.changes.iter().find(|(id, _)| crate::change::state_stream(**id) == *stream) {
        return control.version;
    }
    None
}

fn expected(version: Option<u64>) -> ExpectedVersion {
    version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

/// Folds a decision's own writes into the states it was decided on (for the cache).
fn apply_writes(loaded: &mut Loaded, decision: &Decision) {
    for (stream, events) in &decision.writes {
        let text = stream.as_str();
        for event in events {
            if text.starts_with("ci-name-") {
                if let Some((_, state)) = loaded.names.iter_mut().find(|(key, _)| key.stream() == *stream) {
                    let version = state.version.map_or(0, |v| v + 1);
                    state.apply(event, version);
                }
            } else if let Some((_, state)) = loaded.cis.iter_mut().find(|(id, _)| id.stream() == *stream) {
                let version = state.version.map_or(0, |v| v + 1);
                state.apply(event, version);
            } else if let Some((_, state)) = loaded.rels.iter_mut().find(|(id, _)| id.stream() == *stream) {
                let version = state.version.map_or(0, |v| v + 1);
                state.apply(event, version);
            } else if let Some(id) = text.strip_prefix("ci-").and_then(|id| uuid::Uuid::parse_str(id).ok()) {
                let mut state = CiState::default();
                state.apply(event, 0);
                loaded.cis.insert(CiId(id), state);
            } else if let Some(id) = text.strip_prefix("rel-").and_then(|id| uuid::Uuid::parse_str(id).ok()) {
                let mut state = RelState::default();
                state.apply(event, 0);
                loaded.rels.insert(RelId(id), state);
            }
        }
    }
}

/// Executes one command; answers with where its events landed.
pub async fn execute(
    store: &dyn EventStore,
    command: &CiCommand,
    context: &CommandContext,
) -> Result<AppendOutcome, Error> {
    let cache = context.cache.as_deref();
    // The first attempt may decide on cached states; every later one reads what is new.
    let mut fresh = cache.is_none();
    for _ in 0..MAX_COMMAND_ATTEMPTS {
        let (mut loaded, from_cache) = load(store, command, cache, fresh).await?;
        let decision = match decide(command, &loaded) {
            Ok(decision) => decision,
            Err(_) if from_cache => {
                // Refused on what may be stale: decide again on what the log holds now.
                fresh = true;
                continue;
            }
            Err(refusal) => {
                if let Some(cache) = cache {
                    cache.remember(&loaded);
                }
                return Err(refusal.into());
            }
        };
        let mut request = AppendRequest::new();
        for (stream, events) in &decision.writes {
            let new_events = events
                .iter()
                .map(|event| {
                    let mut new = event.to_new_event(context.metadata.clone());
                    new.recorded_at = context.recorded_at;
                    new
                })
                .collect();
            request = request.write(stream.clone(), expected(version_of(&loaded, stream)), new_events);
        }
        // The registry the command was validated against must not change underneath it.
        request = request.condition(super::registry::schema_stream(), expected(loaded.schema.version));
        for stream in &decision.conditions {
            if decision.writes.iter().any(|(written, _)| written == stream) {
                continue;
            }
            if request.conditions.iter().any(|c| c.stream == *stream) {
                continue;
            }
            request = request.condition(stream.clone(), expected(version_of(&loaded, stream)));
        }
        match store.append(request).await {
            Ok(outcome) => {
                if let Some(cache) = cache {
                    apply_writes(&mut loaded, &decision);
                    cache.remember(&loaded);
                }
                return Ok(outcome);
            }
            Err(StoreError::VersionConflict { .. }) => {
                fresh = true;
                continue;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(Error::Contended { stream: "ci".into(), attempts: MAX_COMMAND_ATTEMPTS })
}
