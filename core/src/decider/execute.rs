//! The one executor: load what a command reads, decide, append at the versions read, and on a
//! conflict read what is new and decide again.

use std::time::Duration;

use super::cache::StateCache;
use super::fold::catch_up;
use super::{CommandContext, Decider, Decision, DomainEvent, Entry, ReadSet, StreamKey, Written, write_stream};
use crate::event::{EventRecord, FoldRecord, NewEvent, StreamId};
use crate::hash::Hash;
use crate::store::{AppendOutcome, AppendRequest, EventStore, ExpectedVersion, StoreError};

/// Decisions made for one command before giving up because other writers keep moving the
/// streams it reads.
pub const MAX_COMMAND_ATTEMPTS: usize = 8;
/// Pause after the n-th conflict before deciding again, times n: spreads racing writers apart.
pub const RETRY_BACKOFF_STEP_MS: u64 = 2;
/// Rounds of reading (a read may point at more to read: a withdrawal reads the CI, then its
/// relationships and their other ends).
pub const MAX_READ_ROUNDS: usize = 8;
/// Most keys one command reads (a change's scope of 500 CIs and 500 planned names fits).
pub const MAX_KEYS_PER_COMMAND: usize = 2_048;

/// What an executed command appended.
#[derive(Clone, Debug)]
pub struct Executed<K, E> {
    /// Where the events landed.
    pub outcome: AppendOutcome,
    /// What was decided.
    pub decision: Decision<K, E>,
}

/// Loads what `command` reads. With `fresh`, every key is brought up to date from the store
/// (starting from its cached fold); without, cached folds are taken as they are, and a key
/// the decider presumes new ([`Decider::presumed_new`]) that is not cached is taken in its
/// initial state. Returns the read set and whether anything came from the cache or the
/// presumption unchecked.
pub async fn load<D: Decider>(
    store: &dyn EventStore,
    decider: &D,
    command: &D::Command,
    cache: Option<&StateCache<D::Key>>,
    fresh: bool,
) -> Result<(ReadSet<D::Key>, bool), crate::Error> {
    let mut read = ReadSet::new();
    let mut from_cache = false;
    for _ in 0..MAX_READ_ROUNDS {
        let mut wanted = decider.reads(command, &read);
        wanted.retain(|key| !read.contains(key));
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok((read, from_cache));
        }
        if read.len() + wanted.len() > MAX_KEYS_PER_COMMAND {
            return Err(crate::Error::TooManyReads {
                decider: D::NAME,
                keys: read.len() + wanted.len(),
                bound: MAX_KEYS_PER_COMMAND,
            });
        }
        for key in wanted {
            let cached = cache.and_then(|c| c.get(&key));
            let entry = match cached {
                Some(entry) if !fresh => {
                    from_cache = true;
                    entry
                }
                None if !fresh && decider.presumed_new(command, &key) => {
                    from_cache = true;
                    Entry::initial(&key)
                }
                cached => catch_up(store, &key, cached.unwrap_or_else(|| Entry::initial(&key))).await?,
            };
            read.insert(key, entry);
        }
    }
    Err(crate::Error::TooManyReadRounds { decider: D::NAME, bound: MAX_READ_ROUNDS })
}

fn expected(version: Option<Option<u64>>) -> ExpectedVersion {
    match version.flatten() {
        Some(v) => ExpectedVersion::Exact(v),
        None => ExpectedVersion::NoStream,
    }
}

/// The append request of `decision`: every written stream at the version read (a stream
/// never read must not exist yet), every condition at the version read.
pub fn append_request<K: StreamKey, E: DomainEvent>(
    read: &ReadSet<K>,
    decision: &Decision<K, E>,
    context: &CommandContext,
) -> AppendRequest {
    let mut request = AppendRequest::new();
    for (key, events) in &decision.writes {
        // The stream ids were made when the key was read: share them rather than format anew.
        let stream = match read.entry(key).map(|e| e.versions.as_slice()) {
            Some([(stream, _)]) => stream.clone(),
            _ => write_stream(key),
        };
        debug_assert!(read.version_of(&stream).is_some(), "{key:?} is written without being read");
        let new_events = events
            .iter()
            .map(|event| {
                let mut new = event.to_new_event(context.metadata.clone());
                new.recorded_at = context.recorded_at;
                new
            })
            .collect();
        let expected = expected(read.version_of(&stream));
        request = request.write(stream, expected, new_events);
    }
    for key in &decision.conditions {
        let streams: Vec<(StreamId, Option<Option<u64>>)> = match read.entry(key) {
            Some(entry) => entry.versions.iter().map(|(s, v)| (s.clone(), Some(*v))).collect(),
            None => key.streams().into_iter().map(|s| (s, None)).collect(),
        };
        for (stream, version) in streams {
            let written = request.writes.iter().any(|w| w.stream == stream);
            let listed = request.conditions.iter().any(|c| c.stream == stream);
            if !written && !listed {
                let version = read.version_of(&stream).or(version);
                debug_assert!(version.is_some(), "condition {key:?} was not read");
                request = request.condition(stream, expected(version));
            }
        }
    }
    request
}

/// The records an append created, as a read would return them (without their hashes, which no
/// fold reads): so a decision's own events fold into what was read without reading them back.
pub fn written_records(request: &AppendRequest, outcome: &AppendOutcome) -> Vec<EventRecord> {
    let mut records = Vec::with_capacity(request.event_count());
    let mut position = outcome.first_position;
    let mut ids = outcome.event_ids.iter();
    for write in &request.writes {
        let first_version = outcome.streams.iter().find(|s| s.stream == write.stream).map_or(0, |s| s.first_version);
        for (offset, event) in write.events.iter().enumerate() {
            let NewEvent { event_type, schema_version, data, metadata, .. } = event.clone();
            records.push(EventRecord {
                fold: FoldRecord {
                    position,
                    stream_id: write.stream.clone(),
                    stream_version: first_version + offset as u64,
                    event_type: event_type.into(),
                    data,
                    principal: metadata.actor.principal,
                    correlation_id: metadata.correlation_id,
                    recorded_at: event.recorded_at.unwrap_or(outcome.recorded_at),
                    hash: Hash::GENESIS,
                    commit: request.commit_of(records.len(), outcome.first_position),
                },
                token_id: metadata.actor.token_id,
                causation_id: metadata.causation_id,
                source: metadata.source,
                occurred_at: metadata.occurred_at,
                event_id: ids.next().copied().unwrap_or_default(),
                schema_version,
                prev_hash: Hash::GENESIS,
                seal: crate::event::PayloadSeal::Plain,
            });
            position += 1;
        }
    }
    debug_assert_eq!(position, outcome.last_position + 1, "every appended event has a record");
    records
}

/// Folds a decision's own events into `read` through the decider's typed fold, at the
/// positions and versions the append gave them.
fn fold_written<D: Decider>(
    decider: &D,
    read: &mut ReadSet<D::Key>,
    decision: &Decision<D::Key, D::Event>,
    outcome: &AppendOutcome,
) -> Result<(), crate::Error> {
    let mut position = outcome.first_position;
    for (key, events) in &decision.writes {
        let stream = write_stream(key);
        let first_version = outcome.streams.iter().find(|s| s.stream == stream).map_or(0, |s| s.first_version);
        for (offset, event) in events.iter().enumerate() {
            let at = Written { position, stream_version: first_version + offset as u64 };
            if decider.evolve_written(read, key, event, at).is_none() {
                return Err(crate::Error::Internal(format!("{} could not fold its own event into {key:?}", D::NAME)));
            }
            position += 1;
        }
    }
    Ok(())
}

/// Whether every stream of a key presumed new is checked by the append (written, or a
/// condition): a presumption nothing checks could let a decision rest on a stream it never read.
fn presumptions_checked<D: Decider>(
    decider: &D,
    command: &D::Command,
    read: &ReadSet<D::Key>,
    request: &AppendRequest,
) -> bool {
    read.entries().filter(|(key, _)| decider.presumed_new(command, key)).all(|(_, entry)| {
        entry.versions.iter().all(|(stream, _)| {
            request.writes.iter().any(|w| &w.stream == stream) || request.conditions.iter().any(|c| &c.stream == stream)
        })
    })
}

/// Executes one command: loads, decides, appends conditionally, and decides again on a
/// conflict (at most [`MAX_COMMAND_ATTEMPTS`] times). With a cache, the first decision may be
/// made on cached folds; the cache then keeps what was read and written. Streams the decider
/// presumes new are not read for the first decision (see [`Decider::presumed_new`]).
pub async fn execute<D: Decider>(
    store: &dyn EventStore,
    decider: &D,
    command: &D::Command,
    context: &CommandContext,
    cache: Option<&StateCache<D::Key>>,
) -> Result<Executed<D::Key, D::Event>, crate::Error> {
    // The first decision may rest on cached folds and presumed-new streams; the append's
    // conditions check both, and a conflict or a refusal on them reads the log for real.
    let mut fresh = false;
    let mut conflicts: u64 = 0;
    for _ in 0..MAX_COMMAND_ATTEMPTS {
        let (mut read, from_cache) = load(store, decider, command, cache, fresh).await?;
        let decision = match decider.decide(command, &read, context) {
            Ok(decision) => decision,
            Err(_) if from_cache => {
                // Refused on what may be stale: decide again on what the log holds now.
                fresh = true;
                continue;
            }
            Err(refusal) => {
                if let Some(cache) = cache {
                    cache.remember(&read);
                }
                return Err(refusal.into());
            }
        };
        debug_assert!(decision.event_count() > 0, "{} decided to append nothing", D::NAME);
        let request = append_request(&read, &decision, context);
        debug_assert!(
            presumptions_checked(decider, command, &read, &request),
            "{}: a presumed-new stream is neither written nor a condition",
            D::NAME
        );
        // Only a cache needs the request again, and only when the decider cannot fold its own
        // events (rebuilding records from the append costs a copy and a decode per event).
        let kept = cache.filter(|_| !decider.evolves_written()).map(|_| request.clone());
        match store.append(request).await {
            Ok(outcome) => {
                if let Some(cache) = cache {
                    match kept {
                        Some(request) => {
                            for record in written_records(&request, &outcome) {
                                read.fold(&record)?;
                            }
                        }
                        None => fold_written(decider, &mut read, &decision, &outcome)?,
                    }
                    cache.remember(&read);
                }
                return Ok(Executed { outcome, decision });
            }
            Err(StoreError::VersionConflict { .. }) => {
                fresh = true;
                // A conflict on cached or presumed folds says only that they were stale (or
                // the stream not new): decide again at once. Otherwise another writer moved
                // what was read: back off.
                if !from_cache {
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_STEP_MS * conflicts)).await;
                }
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(crate::Error::Contended { stream: D::NAME.to_owned(), attempts: MAX_COMMAND_ATTEMPTS })
}
