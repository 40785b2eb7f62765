//! The given/when/then harness every domain's decider tests use.
//!
//! A [`Scenario`] is an in-memory log and a manual clock. *Given* appends events as they are
//! ([`Scenario::given_events`]) or runs accepted commands through the real executor
//! ([`Scenario::given`]); *when* loads what a command reads exactly as the executor does and
//! decides, appending nothing ([`Scenario::when`]); *then* looks at the decision, or at the log
//! ([`Scenario::fold`]). [`Scenario::execute`] runs the executor itself and checks that a
//! refused command left the log unchanged.

use std::sync::Arc;

use super::execute::{Executed, execute, load};
use super::fold;
use super::{CommandContext, Decider, Decision, DomainEvent, StreamKey};
use crate::event::{Actor, Metadata, Source, StreamId};
use crate::ids::SequentialIds;
use crate::store::memory::{MemoryOptions, MemoryStore};
use crate::store::{AppendRequest, EventStore, ExpectedVersion};
use crate::time::{ManualClock, Timestamp};

/// Where a scenario's clock starts: 2026-01-01T00:00:00Z.
pub const SCENARIO_START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

/// An in-memory log, a clock, and the runtime the harness drives the executor with.
pub struct Scenario {
    store: MemoryStore,
    clock: Arc<ManualClock>,
    runtime: tokio::runtime::Runtime,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new()
    }
}

impl Scenario {
    /// An empty log at [`SCENARIO_START`].
    pub fn new() -> Scenario {
        let clock = Arc::new(ManualClock::new(SCENARIO_START));
        let options = MemoryOptions {
            clock: clock.clone(),
            ids: Arc::new(SequentialIds::new(clock.clone(), 1)),
            ..MemoryOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("the harness needs a runtime: {e}"));
        Scenario { store: MemoryStore::new(options), clock, runtime }
    }

    /// The log.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// The clock reading decisions are made at.
    pub fn now(&self) -> Timestamp {
        use crate::time::Clock;
        self.clock.now()
    }

    /// Sets the clock.
    pub fn set_now(&self, at: Timestamp) {
        self.clock.set(at);
    }

    /// Moves the clock forward.
    pub fn advance_micros(&self, micros: i64) {
        self.clock.advance_micros(micros);
    }

    /// The context of a command by `actor` now.
    pub fn context(&self, actor: &str) -> CommandContext {
        CommandContext::new(Metadata::new(Actor::principal(actor), Source::Api), self.now())
    }

    /// The log's head position.
    pub fn head(&self) -> u64 {
        self.runtime.block_on(self.store.head()).map_or(0, |d| d.position)
    }

    /// Given: these events happened on `stream`, appended as they are.
    pub fn given_events<E: DomainEvent>(&self, stream: StreamId, events: impl IntoIterator<Item = E>) -> &Self {
        let metadata = Metadata::new(Actor::system(), Source::System);
        let new = events.into_iter().map(|e| e.to_new_event(metadata.clone())).collect();
        let request = AppendRequest::single(stream, ExpectedVersion::Any, new);
        self.runtime.block_on(self.store.append(request)).unwrap_or_else(|e| panic!("given events: {e}"));
        self
    }

    /// Given: `actor` ran `command` and it was accepted (panics if it was refused).
    pub fn given<D: Decider>(&self, decider: &D, actor: &str, command: D::Command) -> Executed<D::Key, D::Event> {
        self.execute(decider, actor, &command)
            .unwrap_or_else(|e| panic!("given {command:?} by {actor} was refused: {e}"))
    }

    /// When: `actor` sends `command`. Reads what it needs from the log as the executor does,
    /// and decides; appends nothing.
    pub fn when<D: Decider>(
        &self,
        decider: &D,
        actor: &str,
        command: &D::Command,
    ) -> Result<Decision<D::Key, D::Event>, D::Error> {
        let (read, _) = self
            .runtime
            .block_on(load(&self.store, decider, command, None, true))
            .unwrap_or_else(|e| panic!("loading for {command:?}: {e}"));
        decider.decide(command, &read, &self.context(actor))
    }

    /// Runs `command` through the executor. A refusal must leave the log as it was.
    pub fn execute<D: Decider>(
        &self,
        decider: &D,
        actor: &str,
        command: &D::Command,
    ) -> Result<Executed<D::Key, D::Event>, crate::Error> {
        let before = self.head();
        let result = self.runtime.block_on(execute(&self.store, decider, command, &self.context(actor), None));
        if result.is_err() {
            assert_eq!(self.head(), before, "a refused command appended nothing");
        }
        result
    }

    /// Then: the fold of `key` as the log holds it now.
    pub fn fold<K: StreamKey>(&self, key: &K) -> K::State {
        self.runtime.block_on(fold::load(&self.store, key)).unwrap_or_else(|e| panic!("folding {key:?}: {e}"))
    }
}
