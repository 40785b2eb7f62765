//! Signed checkpoints recorded in the log (RC-1, CM-4).
//!
//! The engine signs a C2SP checkpoint of the Merkle tree (see `merkle`, `note`) every N events,
//! every T seconds, or on request, and records the signed note as an event of the one
//! `evidence-checkpoints` stream, so checkpoints are as durable and as replicated as the log
//! and `checkpoints(from, to)` can list them. The event records a tree the log had *before* it
//! (its size is at most the event's position - 1); the next checkpoint covers it.
//!
//! The decider checks what it can without the tree: the note verifies with the verifier the
//! command carries, its origin is the log's origin of earlier checkpoints, and it is newer
//! (larger) than the last one recorded. That the root is the tree's root at that size is the
//! caller's to compute; a wrong one would be caught by any verifier of a proof.

use serde::{Deserialize, Serialize};

use crate::decider::{CommandContext, Decider, Decision, Depth, DomainEvent, ReadSet, StreamKey};
use crate::event::{EventRecord, FoldRecord, Metadata, NewEvent, StreamId};
use crate::merkle::TreeHash;
use crate::note::{Checkpoint, NoteError, NoteVerifier};

/// The stream of signed checkpoints.
pub const CHECKPOINT_STREAM: &str = "evidence-checkpoints";
/// The type of the event `evidence.checkpoint_signed`.
pub const CHECKPOINT_SIGNED: &str = "evidence.checkpoint_signed";

/// A signed checkpoint, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSigned {
    /// The log's name (the key's name).
    pub origin: String,
    /// Leaves (events) the tree holds.
    pub size: u64,
    /// The tree's root at that size.
    pub root: TreeHash,
    /// The key id, 8 hex digits.
    pub key_id: String,
    /// The whole signed note, as `/api/v1/checkpoint` serves it.
    pub note: String,
}

/// Why a checkpoint was not recorded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum EvidenceError {
    #[error("the checkpoint does not verify: {0}")]
    Note(#[from] NoteError),
    #[error("a checkpoint of tree size {size} is not newer than the last one recorded ({last})")]
    NotNewer { size: u64, last: u64 },
    #[error("a checkpoint of an empty tree proves nothing")]
    EmptyTree,
    #[error("the log's checkpoints name origin {recorded:?}; this one names {found:?}")]
    OriginChanged { recorded: String, found: String },
    #[error("checkpoint event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}

/// The last checkpoint recorded, if any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastCheckpoint(pub Option<CheckpointSigned>);

/// The checkpoint stream (newest event only: a decision needs the last checkpoint alone).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckpointKey;

impl StreamKey for CheckpointKey {
    type State = LastCheckpoint;

    fn streams(&self) -> Vec<StreamId> {
        vec![checkpoint_stream()]
    }

    fn depth(&self) -> Depth {
        Depth::Newest
    }

    fn initial(&self) -> LastCheckpoint {
        LastCheckpoint::default()
    }

    fn evolve(&self, state: &mut LastCheckpoint, record: &EventRecord) -> Result<(), crate::Error> {
        state.0 = Some(signed_from(record)?);
        Ok(())
    }
}

/// The checkpoint stream's id.
pub fn checkpoint_stream() -> StreamId {
    StreamId::new(CHECKPOINT_STREAM).expect("a valid stream id")
}

/// Reads a checkpoint event back.
pub fn signed_from(record: &FoldRecord) -> Result<CheckpointSigned, EvidenceError> {
    record.data_as().map_err(|e| EvidenceError::Undecodable { position: record.position, detail: e.to_string() })
}

/// Record a signed checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordCheckpoint {
    /// The signed note.
    pub note: String,
    /// The key that must have signed it.
    pub verifier: NoteVerifier,
}

/// A checkpoint event.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceEvent(pub CheckpointSigned);

impl DomainEvent for EvidenceEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        // Serialising a plain struct cannot fail.
        NewEvent::raw(CHECKPOINT_SIGNED, serde_json::to_vec(&self.0).unwrap_or_default(), metadata)
    }
}

/// Decides checkpoint records.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvidenceDecider;

impl Decider for EvidenceDecider {
    type Command = RecordCheckpoint;
    type Key = CheckpointKey;
    type Event = EvidenceEvent;
    type Error = EvidenceError;
    const NAME: &'static str = "evidence";

    fn reads(&self, _command: &RecordCheckpoint, _read: &ReadSet<CheckpointKey>) -> Vec<CheckpointKey> {
        vec![CheckpointKey]
    }

    fn decide(
        &self,
        command: &RecordCheckpoint,
        read: &ReadSet<CheckpointKey>,
        _context: &CommandContext,
    ) -> Result<Decision<CheckpointKey, EvidenceEvent>, EvidenceError> {
        let checkpoint = Checkpoint::verify(&command.note, &command.verifier)?;
        if checkpoint.size == 0 {
            return Err(EvidenceError::EmptyTree);
        }
        if let Some(LastCheckpoint(Some(last))) = read.get(&CheckpointKey) {
            if checkpoint.size <= last.size {
                return Err(EvidenceError::NotNewer { size: checkpoint.size, last: last.size });
            }
            if checkpoint.origin != last.origin {
                return Err(EvidenceError::OriginChanged { recorded: last.origin.clone(), found: checkpoint.origin });
            }
        }
        let mut decision = Decision::default();
        decision.write(
            CheckpointKey,
            EvidenceEvent(CheckpointSigned {
                origin: checkpoint.origin,
                size: checkpoint.size,
                root: checkpoint.root,
                key_id: format!("{:08x}", command.verifier.key_id()),
                note: command.note.clone(),
            }),
        );
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decider::testing::Scenario;
    use crate::note::NoteSigner;

    fn command(signer: &NoteSigner, size: u64) -> RecordCheckpoint {
        let checkpoint = Checkpoint { origin: signer.name().into(), size, root: crate::merkle::empty_root() };
        RecordCheckpoint { note: signer.sign(&checkpoint.text()).expect("sign"), verifier: signer.verifier() }
    }

    #[test]
    fn checkpoints_are_recorded_signed_newer_and_of_one_origin() {
        let signer = NoteSigner::generate("cmdb.test/log", [3; 32]).expect("key");
        let world = Scenario::new();
        let decision = world.when(&EvidenceDecider, "system", &command(&signer, 5)).expect("accepted");
        assert!(matches!(decision.events_of(&CheckpointKey), [EvidenceEvent(CheckpointSigned { size: 5, .. })]));
        assert_eq!(world.when(&EvidenceDecider, "system", &command(&signer, 0)).err(), Some(EvidenceError::EmptyTree));

        world.given(&EvidenceDecider, "system", command(&signer, 5));
        let again = world.execute(&EvidenceDecider, "system", &command(&signer, 5));
        assert!(
            matches!(again, Err(crate::Error::Evidence(EvidenceError::NotNewer { size: 5, last: 5 }))),
            "{again:?}"
        );
        assert!(world.when(&EvidenceDecider, "system", &command(&signer, 6)).is_ok());

        let other = NoteSigner::generate("another.test/log", [4; 32]).expect("key");
        let renamed = world.when(&EvidenceDecider, "system", &command(&other, 9));
        assert!(matches!(renamed, Err(EvidenceError::OriginChanged { .. })), "{renamed:?}");
        // A note signed by one key, offered with another's verifier, is refused.
        let mut forged = command(&signer, 9);
        forged.verifier = NoteSigner::generate("cmdb.test/log", [5; 32]).expect("key").verifier();
        assert!(matches!(world.when(&EvidenceDecider, "system", &forged), Err(EvidenceError::Note(_))));
    }
}
