//! One shape for every command (DESIGN principle 2, "decide, then evolve"): what a command
//! reads, a pure decision, and one executor that appends it.
//!
//! In the spirit of cqrs-es (`handle`/`apply`) and disintegrate (a state query per command):
//!
//! - A [`StreamKey`] is the typed name of what a decision reads: one stream (or a few read
//!   together, in log order), the fold of its events ([`StreamKey::evolve`]), and how much of it
//!   is needed (the whole stream, or only its newest event for a counter).
//! - A [`Decider`] says which keys a command reads ([`Decider::reads`], asked again until it
//!   names nothing new, so a decision may read what an earlier read points at), and decides
//!   purely on what was read ([`Decider::decide`]): the events per key, and the keys whose
//!   streams must still be at the versions read when the events are appended.
//! - [`execute::execute`] is the one executor: it loads the keys (from a [`cache::StateCache`]
//!   when given one), decides, appends every written stream at the version it read and every
//!   condition at the version it read, and on a conflict reads what is new and decides again,
//!   at most [`execute::MAX_COMMAND_ATTEMPTS`] times with [`execute::RETRY_BACKOFF_STEP_MS`].
//! - [`fold`] is the one "read a stream and fold it"; [`ReadSet`] holds what was read, with the
//!   version of every stream, and folds new records (including a decision's own, once
//!   appended) into the keys that read their stream; [`world::World`] decides against a
//!   `ReadSet` kept in memory (the fixtures' generator, which must not read anything back).
//! - [`testing::Scenario`] is the given/when/then harness every domain's decider tests use.
//!
//! Architecture invariant: a decider does no I/O and reads no clock: `now` and the actor come
//! in the [`CommandContext`]. Everything it depends on is in the command, the context or the
//! `ReadSet`, so a decision can be repeated exactly.

pub mod cache;
pub mod execute;
pub mod fold;
mod read_set;
pub mod testing;
pub mod world;

use std::fmt::Debug;
use std::hash::Hash;

use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::time::Timestamp;

pub use execute::{Executed, execute};
pub use read_set::{Entry, ReadSet};

/// How much of a key's streams a decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Every event, folded in log order.
    Whole,
    /// Only the newest event of each stream (a counter such as the change numbers).
    Newest,
}

/// The typed name of what a decision reads, and how its events fold.
pub trait StreamKey: Clone + Ord + Hash + Debug + Send + Sync + 'static {
    /// The fold of the key's streams.
    type State: Clone + Debug + Send + Sync + 'static;

    /// The streams behind the key; events of several are folded in log order.
    fn streams(&self) -> Vec<StreamId>;

    /// How much of them a decision needs.
    fn depth(&self) -> Depth {
        Depth::Whole
    }

    /// The fold before any event.
    fn initial(&self) -> Self::State;

    /// Folds one stored event of the key's streams (in log order; for [`Depth::Newest`], the
    /// newest event only). Fails only when the event cannot be decoded.
    fn evolve(&self, state: &mut Self::State, record: &EventRecord) -> Result<(), crate::Error>;
}

/// An event a decider writes.
pub trait DomainEvent: Clone + Debug + Send + Sync {
    /// The event as it is appended, carrying `metadata`.
    fn to_new_event(&self, metadata: Metadata) -> NewEvent;
}

/// Who asks, when, and (for a bulk load into an empty log only) the time the events carry.
#[derive(Clone, Debug)]
pub struct CommandContext {
    /// The actor, correlation id and source every event of the decision carries.
    pub metadata: Metadata,
    /// The clock reading the decision is made at (deadlines, token expiry, policy input).
    pub now: Timestamp,
    /// Only for fixtures and imports into an empty log (see the store's bulk-load rule).
    pub recorded_at: Option<Timestamp>,
}

impl CommandContext {
    /// A context for `metadata` at `now`.
    pub fn new(metadata: Metadata, now: Timestamp) -> Self {
        CommandContext { metadata, now, recorded_at: None }
    }

    /// The principal asking.
    pub fn actor(&self) -> &str {
        &self.metadata.actor.principal
    }
}

/// What a decision appends: events per key (each key one stream), and keys read that must
/// not have moved when it is appended.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<K, E> {
    /// Events per key, in the order they are appended.
    pub writes: Vec<(K, Vec<E>)>,
    /// Keys whose streams must still be at the versions read.
    pub conditions: Vec<K>,
}

impl<K, E> Default for Decision<K, E> {
    fn default() -> Self {
        Decision { writes: Vec::new(), conditions: Vec::new() }
    }
}

impl<K: PartialEq + Clone, E> Decision<K, E> {
    /// Adds `event` to what is appended to `key`.
    pub fn write(&mut self, key: K, event: E) {
        match self.writes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, events)) => events.push(event),
            None => self.writes.push((key, vec![event])),
        }
    }

    /// Makes the append conditional on `key`'s streams being where they were read.
    pub fn require_unchanged(&mut self, key: K) {
        if !self.conditions.contains(&key) {
            self.conditions.push(key);
        }
    }

    /// The events written to `key`.
    pub fn events_of(&self, key: &K) -> &[E] {
        self.writes.iter().find(|(k, _)| k == key).map(|(_, events)| events.as_slice()).unwrap_or(&[])
    }

    /// Every event, in append order.
    pub fn events(&self) -> impl Iterator<Item = (&K, &E)> {
        self.writes.iter().flat_map(|(key, events)| events.iter().map(move |event| (key, event)))
    }

    /// How many events it appends.
    pub fn event_count(&self) -> usize {
        self.writes.iter().map(|(_, events)| events.len()).sum()
    }
}

/// A command's decider: what it reads, and the pure decision.
pub trait Decider: Send + Sync {
    /// The commands it decides.
    type Command: Debug + Send + Sync;
    /// What its decisions read and write.
    type Key: StreamKey;
    /// The events it writes.
    type Event: DomainEvent;
    /// Why it refuses a command.
    type Error: Into<crate::Error> + Debug + Send;

    /// What it decides about, for errors (`Contended { stream }`).
    const NAME: &'static str;

    /// The keys `command` reads, given what has been read so far. The executor asks again
    /// until every key named is read; keys already read are skipped.
    fn reads(&self, command: &Self::Command, read: &ReadSet<Self::Key>) -> Vec<Self::Key>;

    /// Decides `command` on what was read. Pure: no I/O, no clock but `context.now`.
    fn decide(
        &self,
        command: &Self::Command,
        read: &ReadSet<Self::Key>,
        context: &CommandContext,
    ) -> Result<Decision<Self::Key, Self::Event>, Self::Error>;

    /// Folds one of its own written events into what was read, for a cache, without encoding
    /// and decoding it again: the same fold [`StreamKey::evolve`] applies to a stored record.
    /// `None` (the default) when the decider does not know how; the executor then folds the
    /// events as records rebuilt from the append.
    fn evolve_written(
        &self,
        _read: &mut ReadSet<Self::Key>,
        _key: &Self::Key,
        _event: &Self::Event,
        _at: Written,
    ) -> Option<()> {
        None
    }

    /// Whether `key` is almost surely a stream no one has written yet when `command` reads it
    /// (a new delivery's or pipeline run's stream). The executor then decides the first time
    /// on its initial state without reading the log, and appends on the condition that the
    /// stream still does not exist: if it does, the append conflicts and the command is read
    /// and decided again for real (as after any conflict), and a refusal made on the
    /// presumption is made again on what the log holds. Saves a read per new stream.
    fn presumed_new(&self, _command: &Self::Command, _key: &Self::Key) -> bool {
        false
    }

    /// Whether [`Decider::evolve_written`] folds every event it writes.
    fn evolves_written(&self) -> bool {
        false
    }
}

/// Where a written event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Its global position.
    pub position: u64,
    /// Its version in its stream.
    pub stream_version: u64,
}

/// The single stream a written key names.
pub fn write_stream<K: StreamKey>(key: &K) -> StreamId {
    let mut streams = key.streams();
    debug_assert_eq!(streams.len(), 1, "a written key names exactly one stream: {key:?}");
    streams.swap_remove(0)
}
