//! The evidence projection (RC-1, CM-4): the RFC 6962 Merkle tree over every event's chain
//! hash, and the signed checkpoints the log records.
//!
//! It follows the log like the graph does (its own runner and checkpoint file,
//! `evidence.checkpoint`), so appends never wait for it and a restart loads it instead of
//! reading the log again. Leaf `i` is position `i + 1`: the log is gapless, and a record out of
//! order stops the projection rather than build a tree with a hole.

use cmdb_core::evidence::{CHECKPOINT_SIGNED, CHECKPOINT_STREAM, CheckpointSigned, signed_from};
use cmdb_core::merkle::{MerkleTree, ProofError, TreeHash};
use cmdb_core::{ChainLink, FoldRecord, Hash, Timestamp};
use serde::{Deserialize, Serialize};

use crate::runner::Projection;

/// Most checkpoints one listing returns.
pub const MAX_CHECKPOINTS_PER_PAGE: usize = 500;

/// A signed checkpoint and where the log recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedCheckpoint {
    /// The checkpoint.
    pub signed: CheckpointSigned,
    /// The position of the event that recorded it.
    pub position: u64,
    /// When.
    pub recorded_at: Timestamp,
}

/// The tree and the checkpoints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvidenceLog {
    tree: MerkleTree,
    applied: u64,
    applied_hash: Hash,
    /// Oldest first; sizes strictly increase (the decider refuses any other).
    checkpoints: Vec<RecordedCheckpoint>,
    /// The last position that is not a checkpoint event: a checkpoint is due only when the log
    /// holds something a checkpoint does not cover but its own records.
    last_other_position: u64,
}

impl EvidenceLog {
    /// Events in the tree (the tree's size).
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The tree.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// The root of the tree of the first `size` events.
    pub fn root(&self, size: u64) -> Result<TreeHash, ProofError> {
        self.tree.root(size)
    }

    /// The newest checkpoint recorded.
    pub fn latest_checkpoint(&self) -> Option<&RecordedCheckpoint> {
        self.checkpoints.last()
    }

    /// The checkpoint of exactly `size`, if one was recorded.
    pub fn checkpoint_of_size(&self, size: u64) -> Option<&RecordedCheckpoint> {
        let at = self.checkpoints.binary_search_by_key(&size, |c| c.signed.size).ok()?;
        self.checkpoints.get(at)
    }

    /// The tree a proof is for when the caller names none: the newest signed checkpoint's (so
    /// the proof verifies against a note the caller can hold), else the whole tree.
    pub fn default_proof_size(&self) -> u64 {
        self.latest_checkpoint().map_or(self.size(), |c| c.signed.size)
    }

    /// Checkpoints with `from <= size <= to`, oldest first, at most `limit`.
    pub fn checkpoints_between(&self, from: u64, to: u64, limit: usize) -> &[RecordedCheckpoint] {
        let start = self.checkpoints.partition_point(|c| c.signed.size < from);
        let end = self.checkpoints.partition_point(|c| c.signed.size <= to).max(start);
        &self.checkpoints[start..end.min(start + limit.min(MAX_CHECKPOINTS_PER_PAGE))]
    }

    /// Whether the log holds events that no checkpoint covers (other than checkpoint records).
    pub fn uncovered_events(&self) -> u64 {
        let covered = self.latest_checkpoint().map_or(0, |c| c.signed.size);
        self.last_other_position.saturating_sub(covered)
    }

    fn fold(&mut self, record: &FoldRecord) -> Result<(), String> {
        if record.position <= self.applied {
            return Ok(()); // already in the tree (a replayed page)
        }
        let checkpoint = if is_checkpoint(record.stream_id.as_str(), &record.event_type) {
            Some(RecordedCheckpoint {
                signed: signed_from(record).map_err(|e| e.to_string())?,
                position: record.position,
                recorded_at: record.recorded_at,
            })
        } else {
            None
        };
        self.push(record.position, record.hash, checkpoint)
    }

    /// Adds the leaf of `position` (and the checkpoint it records, if it is one).
    fn push(&mut self, position: u64, hash: Hash, checkpoint: Option<RecordedCheckpoint>) -> Result<(), String> {
        if position <= self.applied {
            return Ok(()); // already in the tree (a replayed page)
        }
        if position != self.applied + 1 {
            return Err(format!(
                "position {position} follows {}: the tree needs every position in order",
                self.applied
            ));
        }
        self.tree.push(hash.as_bytes());
        match checkpoint {
            Some(checkpoint) => self.checkpoints.push(checkpoint),
            None => self.last_other_position = position,
        }
        self.applied = position;
        self.applied_hash = hash;
        debug_assert_eq!(self.tree.size(), self.applied);
        Ok(())
    }
}

/// Whether a record of this stream and type records a signed checkpoint.
fn is_checkpoint(stream: &str, event_type: &str) -> bool {
    stream == CHECKPOINT_STREAM && event_type == CHECKPOINT_SIGNED
}

impl Projection for EvidenceLog {
    const REBUILD_ON_REDACTION: bool = false;
    const NAME: &'static str = "evidence";
    const FORMAT_VERSION: u32 = 1;

    fn apply(&mut self, record: &FoldRecord) -> Result<(), String> {
        self.fold(record)
    }

    type Decoded = ();

    fn decode(_record: &FoldRecord) -> Result<(), String> {
        Ok(())
    }

    fn apply_decoded(&mut self, record: &FoldRecord, _decoded: ()) -> Result<(), String> {
        self.fold(record)
    }

    /// The tree needs only each record's hash; a checkpoint's record is read whole.
    const CATCHES_UP_FROM_LINKS: bool = true;

    fn needs_record(link: &ChainLink) -> bool {
        is_checkpoint(link.stream_id.as_str(), &link.event_type)
    }

    fn apply_link(&mut self, link: &ChainLink) -> Result<(), String> {
        if Self::needs_record(link) {
            return Err(format!("position {} records a checkpoint: it is folded from its whole record", link.position));
        }
        self.push(link.position, link.hash, None)
    }

    fn position(&self) -> u64 {
        self.applied
    }

    fn position_hash(&self) -> Hash {
        self.applied_hash
    }
}
