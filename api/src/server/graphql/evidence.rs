//! Evidence over GraphQL (issue 18): signed checkpoints, inclusion and consistency proofs, and
//! signing a checkpoint on request. Resolvers only translate: the tree is
//! `cmdb_projections::evidence`, the formats `cmdb_core::merkle` and `cmdb_core::note`.
//!
//! A tree size is the position of the tree's last event (leaf `i` is position `i + 1`), so
//! sizes use the `Position` scalar.

use async_graphql::{Context, ErrorExtensions as _, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::merkle::ProofError;
use cmdb_projections::evidence::RecordedCheckpoint;

use super::context::{Requires, app, list_limit, metadata, state};
use super::scalars::{DateTime, Position};
use crate::app::evidence::SignError;
use crate::server::errors::{Code, app_error, bad_input_field, coded};

/// A signed checkpoint: a C2SP tlog-checkpoint signed as a C2SP signed note.
#[derive(SimpleObject, Clone)]
pub struct SignedCheckpoint {
    /// The log's name (and the signing key's name).
    origin: String,
    /// Events the tree holds: the position of its last event.
    tree_size: Position,
    /// The RFC 6962 root hash, standard base64.
    root_hash: String,
    /// The signing key's id, 8 hex digits.
    key_id: String,
    /// The signed note, exactly as `/api/v1/checkpoint` serves it: give it to a witness, keep it
    /// in a Git repository, check it with `cmdb proof verify`.
    note: String,
    /// The position of the event that recorded it (after `treeSize`).
    recorded_at_position: Position,
    /// When it was recorded.
    recorded_at: DateTime,
}

impl From<&RecordedCheckpoint> for SignedCheckpoint {
    fn from(recorded: &RecordedCheckpoint) -> Self {
        let signed = &recorded.signed;
        SignedCheckpoint {
            origin: signed.origin.clone(),
            tree_size: Position(signed.size),
            root_hash: signed.root.to_base64(),
            key_id: signed.key_id.clone(),
            note: signed.note.clone(),
            recorded_at_position: Position(recorded.position),
            recorded_at: DateTime(recorded.recorded_at),
        }
    }
}

/// Proof that an event is in the tree of `treeSize` events (RFC 9162 2.1.3).
#[derive(SimpleObject)]
pub struct InclusionProof {
    /// The event's position.
    position: Position,
    /// Its leaf index (`position - 1`).
    leaf_index: Position,
    /// The tree the proof is for.
    tree_size: Position,
    /// The leaf's input: the event's chain hash, 64 hex digits (as `event.hash` shows it).
    leaf_input: String,
    /// `SHA-256(0x00 || chain hash)`, base64.
    leaf_hash: String,
    /// The audit path, bottom up, base64.
    hashes: Vec<String>,
    /// The root the path leads to, base64.
    root_hash: String,
    /// The signed checkpoint of `treeSize`, when one was recorded.
    checkpoint: Option<SignedCheckpoint>,
}

/// Proof that the tree of `fromSize` events is a prefix of the tree of `toSize` (RFC 9162
/// 2.1.4): the log only grew between them.
#[derive(SimpleObject)]
pub struct ConsistencyProof {
    /// The older tree.
    from_size: Position,
    /// The newer tree.
    to_size: Position,
    /// The proof's hashes, base64.
    hashes: Vec<String>,
    /// The older root, base64.
    from_root_hash: String,
    /// The newer root, base64.
    to_root_hash: String,
    /// The signed checkpoint of `fromSize`, when one was recorded.
    from_checkpoint: Option<SignedCheckpoint>,
    /// The signed checkpoint of `toSize`, when one was recorded.
    to_checkpoint: Option<SignedCheckpoint>,
}

fn proof_error(field: &str, error: ProofError) -> async_graphql::Error {
    match error {
        ProofError::SizeBeyondTree { .. } => {
            coded(Code::NotFound, error.to_string()).extend_with(|_, extensions| extensions.set("field", "treeSize"))
        }
        _ => bad_input_field(field, error.to_string()),
    }
}

/// The newest signed checkpoint.
pub fn latest(ctx: &Context<'_>) -> Option<SignedCheckpoint> {
    state(ctx).evidence.log.read().latest_checkpoint().map(Into::into)
}

/// Checkpoints by tree size, oldest first.
pub fn between(
    ctx: &Context<'_>,
    from: Option<Position>,
    to: Option<Position>,
    first: Option<i32>,
) -> async_graphql::Result<Vec<SignedCheckpoint>> {
    let limit = list_limit(first)?;
    let log = state(ctx).evidence.log.read();
    let (from, to) = (from.map_or(0, |p| p.0), to.map_or(u64::MAX, |p| p.0));
    if from > to {
        return Err(bad_input_field("fromSize", format!("fromSize {from} is after toSize {to}")));
    }
    Ok(log.checkpoints_between(from, to, limit).iter().map(Into::into).collect())
}

/// The inclusion proof of the event at `position`.
pub async fn inclusion(
    ctx: &Context<'_>,
    position: Position,
    tree_size: Option<Position>,
) -> async_graphql::Result<InclusionProof> {
    // The leaf input is the event's chain hash: the tree keeps only leaf hashes.
    let record = state(ctx).store.event_at(position.0).await.map_err(crate::server::errors::store_error)?;
    let log = state(ctx).evidence.log.read();
    let size = tree_size.map_or_else(|| log.default_proof_size(), |s| s.0);
    let Some(record) = record.filter(|_| position.0 >= 1 && position.0 <= size) else {
        return Err(bad_input_field(
            "position",
            format!("position {} is not in a tree of {size} events (positions start at 1)", position.0),
        ));
    };
    let index = position.0 - 1;
    let hashes = log.tree().inclusion_proof(index, size).map_err(|e| proof_error("treeSize", e))?;
    let leaf = log.tree().leaf(index).map_err(|e| proof_error("position", e))?;
    if leaf != cmdb_core::merkle::leaf_hash(record.hash.as_bytes()) {
        // The tree and the log disagree: never hand out a proof of something else.
        return Err(coded(Code::Internal, format!("the tree's leaf {index} is not the log's event at {}", position.0)));
    }
    let root = log.root(size).map_err(|e| proof_error("treeSize", e))?;
    Ok(InclusionProof {
        position,
        leaf_index: Position(index),
        tree_size: Position(size),
        leaf_input: record.hash.to_hex(),
        leaf_hash: leaf.to_base64(),
        hashes: hashes.iter().map(|h| h.to_base64()).collect(),
        root_hash: root.to_base64(),
        checkpoint: log.checkpoint_of_size(size).map(Into::into),
    })
}

/// The consistency proof between two tree sizes.
pub fn consistency(
    ctx: &Context<'_>,
    from_size: Position,
    to_size: Option<Position>,
) -> async_graphql::Result<ConsistencyProof> {
    let log = state(ctx).evidence.log.read();
    let to = to_size.map_or_else(|| log.default_proof_size(), |s| s.0);
    let from = from_size.0;
    let hashes = log.tree().consistency_proof(from, to).map_err(|e| proof_error("fromSize", e))?;
    Ok(ConsistencyProof {
        from_size,
        to_size: Position(to),
        hashes: hashes.iter().map(|h| h.to_base64()).collect(),
        from_root_hash: log.root(from).map_err(|e| proof_error("fromSize", e))?.to_base64(),
        to_root_hash: log.root(to).map_err(|e| proof_error("toSize", e))?.to_base64(),
        from_checkpoint: log.checkpoint_of_size(from).map(Into::into),
        to_checkpoint: log.checkpoint_of_size(to).map(Into::into),
    })
}

/// Evidence mutations.
#[derive(Default)]
pub struct EvidenceMutation;

#[Object]
impl EvidenceMutation {
    /// Signs and records a checkpoint of the whole log now (auditor, admin); when the newest
    /// checkpoint already covers every event, answers it and records nothing.
    #[graphql(guard = "Requires(Operation::VerifyLog)")]
    async fn sign_checkpoint(&self, ctx: &Context<'_>) -> async_graphql::Result<SignedCheckpoint> {
        let settings = &state(ctx).settings;
        if settings.read_only {
            // A follower records nothing, even when nothing would need recording.
            let to = settings.writes_go_to.clone().unwrap_or_else(|| "a writer".into());
            return Err(crate::server::errors::store_error(cmdb_core::StoreError::ReadOnly(to)));
        }
        let evidence = state(ctx).evidence.clone();
        match evidence.sign_now(app(ctx), metadata(ctx)?).await {
            Ok(checkpoint) => Ok((&checkpoint).into()),
            Err(SignError::App(error)) => Err(app_error(error)),
            Err(error) => Err(coded(Code::FailedPrecondition, error.to_string())),
        }
    }
}
