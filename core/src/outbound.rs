//! The outbox of facts sent to webhook targets as CDEvents (CH-6, CH-9, RL-6): what a target
//! was sent is recorded in its own stream (`outbound-<target>`), so a restarted server goes on
//! where it stopped (events, not memory). A fact that could not be delivered after the retries
//! is dead-lettered with the error; an admin asks for it to be sent again (a replay request),
//! and the dispatcher sends it once more.
//!
//! The log itself is the outbox: the dispatcher follows it from the position after the last
//! fact it handled; this module decides what its stream records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::{AccessState, access_stream};
use crate::decider::{CommandContext, Decider, Decision, Depth, DomainEvent, ReadSet, StreamKey};
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::time::Timestamp;

/// Longest target name, in bytes (letters, digits, `-` and `_`).
pub const MAX_TARGET_NAME_BYTES: usize = 64;
/// Longest error kept with a dead letter, in bytes.
pub const MAX_ERROR_BYTES: usize = 1_000;
/// Most dead letters one target keeps; past it the oldest are dropped from the list (they
/// stay in the log).
pub const MAX_DEAD_LETTERS_PER_TARGET: usize = 10_000;

/// `outbound.delivered`
pub const DELIVERED: &str = "outbound.delivered";
/// `outbound.dead_lettered`
pub const DEAD_LETTERED: &str = "outbound.dead_lettered";
/// `outbound.replay_requested`
pub const REPLAY_REQUESTED: &str = "outbound.replay_requested";
/// `outbound.started`
pub const STARTED: &str = "outbound.started";

/// The stream of one target (an invalid name, refused by the decider, still names a valid
/// stream: its hash).
pub fn stream(target: &str) -> StreamId {
    let name = if valid_target_name(target) {
        format!("outbound-{target}")
    } else {
        format!("outbound-invalid-{}", &blake3::hash(target.as_bytes()).to_hex()[..32])
    };
    StreamId::new(name).expect("letters, digits, - and _ make a valid stream id")
}

/// Whether `name` may name a target.
pub fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TARGET_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fact sent (or dead-lettered, or asked for again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handled {
    /// The position of the fact in the log.
    pub position: u64,
    /// The CDEvents type sent.
    pub event_type: String,
    /// How many attempts it took.
    pub attempts: u32,
    /// For a dead letter: the last error.
    #[serde(default)]
    pub error: Option<String>,
}

/// A replay asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequested {
    /// The position of the dead-lettered fact.
    pub position: u64,
}

/// A target first configured: facts after this position are its to receive (not the history
/// before it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The head when the target was first seen.
    pub after: u64,
}

/// An outbound event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "each variant holds the event its type names")]
pub enum OutboundEvent {
    Delivered(Handled),
    DeadLettered(Handled),
    ReplayRequested(ReplayRequested),
    Started(Started),
}

impl DomainEvent for OutboundEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let (event_type, data) = match self {
            OutboundEvent::Delivered(e) => (DELIVERED, serde_json::to_vec(e)),
            OutboundEvent::DeadLettered(e) => (DEAD_LETTERED, serde_json::to_vec(e)),
            OutboundEvent::ReplayRequested(e) => (REPLAY_REQUESTED, serde_json::to_vec(e)),
            OutboundEvent::Started(e) => (STARTED, serde_json::to_vec(e)),
        };
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }
}

/// A dead letter, with when it was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// What could not be sent.
    pub handled: Handled,
    /// When it was given up.
    pub at: Timestamp,
    /// Whether a replay was asked for and not yet done.
    pub replay_requested: bool,
}

/// A target's stream, folded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxState {
    /// The highest log position handled (delivered or dead-lettered); the dispatcher goes on
    /// after it.
    pub handled_through: u64,
    /// How many facts were delivered.
    pub delivered: u64,
    /// Dead letters by position (a delivered replay removes its letter).
    pub dead_letters: BTreeMap<u64, DeadLetter>,
    /// The stream's version (none: empty).
    pub version: Option<u64>,
}

impl OutboxState {
    /// Folds one record of the target's stream.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), OutboundError> {
        let bad =
            |e: serde_json::Error| OutboundError::Undecodable { position: record.position, detail: e.to_string() };
        match record.event_type.as_str() {
            DELIVERED => {
                let handled: Handled = record.data_as().map_err(bad)?;
                self.handled_through = self.handled_through.max(handled.position);
                self.delivered += 1;
                self.dead_letters.remove(&handled.position);
            }
            DEAD_LETTERED => {
                let handled: Handled = record.data_as().map_err(bad)?;
                self.handled_through = self.handled_through.max(handled.position);
                self.dead_letters
                    .insert(handled.position, DeadLetter { handled, at: record.recorded_at, replay_requested: false });
                while self.dead_letters.len() > MAX_DEAD_LETTERS_PER_TARGET {
                    self.dead_letters.pop_first();
                }
            }
            STARTED => {
                let started: Started = record.data_as().map_err(bad)?;
                self.handled_through = self.handled_through.max(started.after);
            }
            REPLAY_REQUESTED => {
                let replay: ReplayRequested = record.data_as().map_err(bad)?;
                if let Some(letter) = self.dead_letters.get_mut(&replay.position) {
                    letter.replay_requested = true;
                }
            }
            _ => {}
        }
        self.version = Some(record.stream_version);
        Ok(())
    }

    /// The dead letters a replay was asked for, oldest first.
    pub fn replays(&self) -> Vec<&DeadLetter> {
        self.dead_letters.values().filter(|l| l.replay_requested).collect()
    }
}

/// Why an outbound command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum OutboundError {
    #[error("{0:?} is not a target name: 1 to 64 letters, digits, - and _")]
    InvalidTarget(String),
    #[error("target {0} was started already")]
    Started(String),
    #[error("target {target} has no dead letter at position {position}")]
    NoDeadLetter { target: String, position: u64 },
    #[error("outbound event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}

/// What an outbound decision reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutboundKey {
    /// Principals and roles (a replay is an admin's).
    Access,
    /// A target's stream.
    Target(String),
}

/// The fold of an [`OutboundKey`].
#[derive(Clone, Debug)]
#[allow(missing_docs, reason = "each variant is the fold of the key of the same name")]
pub enum OutboundRead {
    Access(AccessState),
    Target(OutboxState),
}

impl StreamKey for OutboundKey {
    type State = OutboundRead;

    fn streams(&self) -> Vec<StreamId> {
        vec![match self {
            OutboundKey::Access => access_stream(),
            OutboundKey::Target(target) => stream(target),
        }]
    }

    fn depth(&self) -> Depth {
        Depth::Whole
    }

    fn initial(&self) -> OutboundRead {
        match self {
            OutboundKey::Access => OutboundRead::Access(AccessState::default()),
            OutboundKey::Target(_) => OutboundRead::Target(OutboxState::default()),
        }
    }

    fn evolve(&self, state: &mut OutboundRead, record: &EventRecord) -> Result<(), crate::Error> {
        match state {
            OutboundRead::Access(access) => access.apply(record)?,
            OutboundRead::Target(outbox) => outbox.apply(record)?,
        }
        Ok(())
    }
}

/// An outbound command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboundCommand {
    /// A target seen for the first time receives the facts after `after` (its stream must be
    /// empty; a target started already is left as it is).
    Start {
        /// The target.
        target: String,
        /// The head now.
        after: u64,
    },
    /// The dispatcher delivered a fact (or gave it up: `error` set).
    Record {
        /// The target.
        target: String,
        /// What was handled.
        handled: Handled,
    },
    /// An admin asks for a dead letter to be sent again (who may is the caller's to check,
    /// as for access commands: the GraphQL guard, or file access for the CLI).
    Replay {
        /// The target.
        target: String,
        /// The dead letter's position.
        position: u64,
    },
}

/// Decides outbound commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutboundDecider;

impl Decider for OutboundDecider {
    type Command = OutboundCommand;
    type Key = OutboundKey;
    type Event = OutboundEvent;
    type Error = OutboundError;
    const NAME: &'static str = "outbound";

    fn reads(&self, command: &OutboundCommand, _read: &ReadSet<OutboundKey>) -> Vec<OutboundKey> {
        match command {
            OutboundCommand::Record { target, .. } | OutboundCommand::Start { target, .. } => {
                vec![OutboundKey::Target(target.clone())]
            }
            OutboundCommand::Replay { target, .. } => vec![OutboundKey::Target(target.clone())],
        }
    }

    fn decide(
        &self,
        command: &OutboundCommand,
        read: &ReadSet<OutboundKey>,
        _context: &CommandContext,
    ) -> Result<Decision<OutboundKey, OutboundEvent>, OutboundError> {
        let mut decision = Decision::default();
        match command {
            OutboundCommand::Start { target, after } => {
                check_target(target)?;
                let started = matches!(
                    read.get(&OutboundKey::Target(target.clone())),
                    Some(OutboundRead::Target(outbox)) if outbox.version.is_some()
                );
                if started {
                    return Err(OutboundError::Started(target.clone()));
                }
                decision.write(OutboundKey::Target(target.clone()), OutboundEvent::Started(Started { after: *after }));
            }
            OutboundCommand::Record { target, handled } => {
                check_target(target)?;
                let mut handled = handled.clone();
                handled.error = handled.error.map(|e| e.chars().take(MAX_ERROR_BYTES / 4).collect());
                let event = if handled.error.is_some() {
                    OutboundEvent::DeadLettered(handled)
                } else {
                    OutboundEvent::Delivered(handled)
                };
                decision.write(OutboundKey::Target(target.clone()), event);
            }
            OutboundCommand::Replay { target, position } => {
                check_target(target)?;
                let known = match read.get(&OutboundKey::Target(target.clone())) {
                    Some(OutboundRead::Target(outbox)) => outbox.dead_letters.contains_key(position),
                    _ => false,
                };
                if !known {
                    return Err(OutboundError::NoDeadLetter { target: target.clone(), position: *position });
                }
                decision.write(
                    OutboundKey::Target(target.clone()),
                    OutboundEvent::ReplayRequested(ReplayRequested { position: *position }),
                );
            }
        }
        Ok(decision)
    }
}

fn check_target(target: &str) -> Result<(), OutboundError> {
    if valid_target_name(target) { Ok(()) } else { Err(OutboundError::InvalidTarget(target.to_owned())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessCommand, AccessDecider, PrincipalKind, Role};
    use crate::decider::testing::Scenario;

    fn handled(position: u64, error: Option<&str>) -> Handled {
        Handled {
            position,
            event_type: "dev.cdevents.service.deployed.0.3.0".into(),
            attempts: 3,
            error: error.map(Into::into),
        }
    }

    fn outbox(scenario: &Scenario) -> OutboxState {
        match scenario.fold(&OutboundKey::Target("ops".into())) {
            OutboundRead::Target(state) => state,
            OutboundRead::Access(_) => unreachable!(),
        }
    }

    #[test]
    fn delivered_and_dead_lettered_facts_move_the_outbox_and_a_replay_needs_a_dead_letter() {
        let scenario = Scenario::new();
        for (name, role) in [("ada", Role::Admin), ("vic", Role::Viewer)] {
            scenario.given(
                &AccessDecider,
                "system",
                AccessCommand::CreatePrincipal {
                    name: name.into(),
                    kind: PrincipalKind::Person,
                    display_name: None,
                    roles: [role].into_iter().collect(),
                },
            );
        }
        let record =
            |position, error| OutboundCommand::Record { target: "ops".into(), handled: handled(position, error) };
        scenario.given(&OutboundDecider, "system", record(10, None));
        scenario.given(&OutboundDecider, "system", record(12, Some("HTTP 500")));
        let state = outbox(&scenario);
        assert_eq!((state.handled_through, state.delivered), (12, 1));
        assert_eq!(state.dead_letters.keys().copied().collect::<Vec<_>>(), vec![12]);
        let replay = |position| OutboundCommand::Replay { target: "ops".into(), position };
        assert!(matches!(
            scenario.execute(&OutboundDecider, "ada", &replay(10)),
            Err(crate::Error::Outbound(OutboundError::NoDeadLetter { position: 10, .. }))
        ));
        scenario.given(&OutboundDecider, "ada", replay(12));
        assert_eq!(outbox(&scenario).replays().len(), 1);
        // The replay delivered: the letter is gone, the position handled stays.
        scenario.given(&OutboundDecider, "system", record(12, None));
        let state = outbox(&scenario);
        assert!(state.dead_letters.is_empty());
        assert_eq!(state.handled_through, 12);
        let bad = OutboundCommand::Record { target: "no spaces".into(), handled: handled(13, None) };
        assert!(matches!(
            scenario.execute(&OutboundDecider, "system", &bad),
            Err(crate::Error::Outbound(OutboundError::InvalidTarget(_)))
        ));
    }
}
