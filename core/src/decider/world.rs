//! Deciding against folds kept in memory, for a writer that holds every stream it writes and
//! must not read anything back: the fixtures' generator builds millions of events this way
//! with the same deciders the server runs.
//!
//! A key the world has never held is taken as an empty stream, which is exactly right when
//! every event of the streams in question went through this world.

use super::execute::{MAX_KEYS_PER_COMMAND, MAX_READ_ROUNDS};
use super::{CommandContext, Decider, Decision, ReadSet, StreamKey};
use crate::event::{EventRecord, FoldRecord, NewEvent, StreamId};
use crate::hash::Hash;
use crate::time::Timestamp;

/// Folds of every key decided on so far, and a counter standing in for log positions.
#[derive(Clone, Debug)]
pub struct World<K: StreamKey> {
    read: ReadSet<K>,
    position: u64,
}

impl<K: StreamKey> Default for World<K> {
    fn default() -> Self {
        World { read: ReadSet::new(), position: 0 }
    }
}

impl<K: StreamKey> World<K> {
    /// An empty world.
    pub fn new() -> Self {
        World::default()
    }

    /// What the world holds, as a decision would read it.
    pub fn read_set(&self) -> &ReadSet<K> {
        &self.read
    }

    /// The fold of `key` (the initial fold if it was never held).
    pub fn state(&self, key: &K) -> K::State {
        self.read.get(key).cloned().unwrap_or_else(|| key.initial())
    }

    /// Starts holding `key`, empty, so that events of its streams folded later reach it.
    pub fn hold(&mut self, key: &K) {
        self.read.insert_initial(key);
    }

    /// Sets the fold of `key` without its events: for a writer that knows a stream's state
    /// before writing it (the generator splices a change's request in before the edits it
    /// authorises, so the CI world learns the change is implementing ahead of its events).
    pub fn set_state(&mut self, key: K, state: K::State) {
        let versions = key.streams().into_iter().map(|s| (s, None)).collect();
        self.read.insert(key, super::Entry { state, versions });
    }

    /// Decides `command` on what the world holds. Appends nothing: fold the events with
    /// [`World::fold_new`] once they are kept.
    pub fn decide<D: Decider<Key = K>>(
        &mut self,
        decider: &D,
        command: &D::Command,
        context: &CommandContext,
    ) -> Result<Decision<K, D::Event>, crate::Error> {
        for round in 0..=MAX_READ_ROUNDS {
            let wanted: Vec<K> =
                decider.reads(command, &self.read).into_iter().filter(|k| !self.read.contains(k)).collect();
            if wanted.is_empty() {
                return decider.decide(command, &self.read, context).map_err(Into::into);
            }
            if round == MAX_READ_ROUNDS {
                break;
            }
            if wanted.len() > MAX_KEYS_PER_COMMAND {
                return Err(crate::Error::TooManyReads {
                    decider: D::NAME,
                    keys: wanted.len(),
                    bound: MAX_KEYS_PER_COMMAND,
                });
            }
            for key in &wanted {
                self.read.insert_initial(key);
            }
        }
        Err(crate::Error::TooManyReadRounds { decider: D::NAME, bound: MAX_READ_ROUNDS })
    }

    /// Folds an event kept for `stream` into the keys that read it.
    pub fn fold_new(&mut self, stream: &StreamId, event: &NewEvent) -> Result<(), crate::Error> {
        let Some(version) = self.read.version_of(stream) else { return Ok(()) };
        self.position += 1;
        let metadata = event.metadata.clone();
        let record = EventRecord {
            fold: FoldRecord {
                position: self.position,
                stream_id: stream.clone(),
                stream_version: version.map_or(0, |v| v + 1),
                event_type: event.event_type.as_str().into(),
                data: event.data.clone(),
                principal: metadata.actor.principal,
                correlation_id: metadata.correlation_id,
                recorded_at: event.recorded_at.unwrap_or(Timestamp::from_micros(0)),
                hash: Hash::GENESIS,
                commit: crate::event::CommitSpan::single(self.position),
            },
            token_id: metadata.actor.token_id,
            causation_id: metadata.causation_id,
            source: metadata.source,
            occurred_at: metadata.occurred_at,
            event_id: event.event_id.unwrap_or_default(),
            schema_version: event.schema_version,
            prev_hash: Hash::GENESIS,
            seal: crate::event::PayloadSeal::Plain,
        };
        self.read.fold(&record)?;
        Ok(())
    }
}
