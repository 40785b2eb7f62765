//! Redaction over GraphQL (issue 18, part 4): asking for personal data to be erased (admin),
//! approving or rejecting it (another admin or an auditor), listing redactions, and how a
//! redacted event reads. Resolvers only translate: the rules are `cmdb_core::redaction`, the
//! work `crate::app::redaction`.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::redaction::{ErasedEvent, Redaction, RedactionApplied, RedactionStatus};

use super::context::{Requires, app, metadata};
use super::scalars::Position;
use crate::server::errors::app_error;

/// What was erased from one event.
#[derive(SimpleObject, Clone)]
pub struct RedactedEvent {
    /// The event.
    position: Position,
    /// JSON pointers of the values erased (each now reads `[redacted]`).
    erased_fields: Vec<String>,
    /// For a whole-payload redaction: the values kept because the engine needs them (ids,
    /// classes, states, times).
    kept_fields: Vec<String>,
}

impl From<&ErasedEvent> for RedactedEvent {
    fn from(erased: &ErasedEvent) -> Self {
        RedactedEvent {
            position: Position(erased.position),
            erased_fields: erased.erased.clone(),
            kept_fields: erased.kept.clone(),
        }
    }
}

/// A redaction: asked for by one principal, carried out only when another approves.
#[derive(SimpleObject, Clone)]
pub struct RedactionInfo {
    id: String,
    /// `pending`, `rejected` or `applied`.
    status: String,
    /// The events named.
    positions: Vec<Position>,
    /// The JSON pointers named; empty: the whole payload.
    fields: Vec<String>,
    reason: String,
    requested_by: String,
    /// Where the request is in the log.
    requested_at_position: Position,
    /// Who approved it (applied) or rejected it.
    decided_by: Option<String>,
    /// Why it was rejected.
    rejection_reason: Option<String>,
    /// The redaction record's position (applied): the chain accounts for every erased payload
    /// by it.
    record_position: Option<Position>,
    /// What was erased, per event (applied).
    erasures: Vec<RedactedEvent>,
}

impl From<&Redaction> for RedactionInfo {
    fn from(redaction: &Redaction) -> Self {
        let request = &redaction.request;
        let (decided_by, rejection_reason, record_position, erasures) = match &redaction.status {
            RedactionStatus::Pending => (None, None, None, Vec::new()),
            RedactionStatus::Rejected(rejected) => {
                (Some(rejected.rejected_by.clone()), Some(rejected.reason.clone()), None, Vec::new())
            }
            RedactionStatus::Applied { record, position } => (
                Some(record.approved_by.clone()),
                None,
                Some(Position(*position)),
                record.erasures.iter().map(RedactedEvent::from).collect(),
            ),
        };
        RedactionInfo {
            id: request.id.clone(),
            status: redaction.status.name().to_owned(),
            positions: request.positions.iter().copied().map(Position).collect(),
            fields: request.fields.clone(),
            reason: request.reason.clone(),
            requested_by: request.requested_by.clone(),
            requested_at_position: Position(redaction.requested_at),
            decided_by,
            rejection_reason,
            record_position,
            erasures,
        }
    }
}

/// How a redacted event reads: the record that erased its values.
#[derive(SimpleObject, Clone)]
pub struct EventRedaction {
    /// The redaction's id.
    id: String,
    /// The redaction record's position.
    record_position: Position,
    reason: String,
    requested_by: String,
    approved_by: String,
    /// The JSON pointers erased from this event (each reads `[redacted]`).
    erased_fields: Vec<String>,
}

impl EventRedaction {
    /// The part of `record` (at `record_position`) about the event at `position`.
    pub fn of(record: &RedactionApplied, record_position: u64, position: u64) -> EventRedaction {
        EventRedaction {
            id: record.id.clone(),
            record_position: Position(record_position),
            reason: record.reason.clone(),
            requested_by: record.requested_by.clone(),
            approved_by: record.approved_by.clone(),
            erased_fields: record
                .erasures
                .iter()
                .find(|e| e.position == position)
                .map(|e| e.erased.clone())
                .unwrap_or_default(),
        }
    }
}

/// A redaction to ask for.
#[derive(InputObject)]
pub struct RedactionInput {
    /// Its id (a privacy request's reference, say); a fresh one when absent.
    id: Option<String>,
    /// The events to erase from (at most 1000).
    positions: Vec<Position>,
    /// RFC 6901 JSON pointers (`/attributes/owner_email`) to erase from each; a pointer to an
    /// object or array erases every value under it. Empty: the whole payload, except what the
    /// engine needs to read the event (ids, classes, states, times).
    #[graphql(default)]
    fields: Vec<String>,
    /// Why (required).
    reason: String,
}

/// `approveRedaction(input:)`.
#[derive(InputObject)]
pub struct ApproveRedactionInput {
    /// The redaction's id.
    id: String,
}

/// `rejectRedaction(input:)`.
#[derive(InputObject)]
pub struct RejectRedactionInput {
    /// The redaction's id.
    id: String,
    /// Why (required).
    reason: String,
}

/// What approving a redaction did.
#[derive(SimpleObject)]
pub struct RedactionApproved {
    redaction: RedactionInfo,
    /// Events hashed before salts (chain version 1) among the erased ones: their kept
    /// commitments are unsalted, so an erased value could be confirmed by hashing a guess.
    unsalted_positions: Vec<Position>,
}

/// Redaction queries.
pub async fn list(ctx: &Context<'_>) -> async_graphql::Result<Vec<RedactionInfo>> {
    let redactions = app(ctx).redactions().await.map_err(app_error)?;
    Ok(redactions.0.values().map(RedactionInfo::from).collect())
}

/// One redaction.
pub async fn one(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Option<RedactionInfo>> {
    Ok(app(ctx).redaction(id).await.map_err(app_error)?.as_ref().map(RedactionInfo::from))
}

async fn by_id(ctx: &Context<'_>, id: &str) -> async_graphql::Result<RedactionInfo> {
    one(ctx, id).await?.ok_or_else(|| {
        app_error(cmdb_core::Error::from(cmdb_core::redaction::RedactionError::Unknown(id.to_owned())).into())
    })
}

/// Redaction mutations.
#[derive(Default)]
pub struct RedactionMutation;

#[Object]
impl RedactionMutation {
    /// Asks for values to be erased from stored events (admin). Every event and field is
    /// checked now; nothing is erased until another principal approves.
    #[graphql(guard = "Requires(Operation::RequestRedaction)")]
    async fn request_redaction(
        &self,
        ctx: &Context<'_>,
        input: RedactionInput,
    ) -> async_graphql::Result<RedactionInfo> {
        let id = input.id.unwrap_or_else(|| format!("redaction-{}", uuid::Uuid::now_v7()));
        let positions = input.positions.iter().map(|p| p.0).collect();
        app(ctx)
            .request_redaction(id.clone(), positions, input.fields, input.reason, metadata(ctx)?)
            .await
            .map_err(app_error)?;
        by_id(ctx, &id).await
    }

    /// Approves a redaction someone else asked for (another admin, or an auditor) and carries it
    /// out: the payloads are erased in the store and the record appended in one transaction;
    /// the chain, the Merkle tree and every proof still verify. Answers once the read models
    /// have rebuilt without the erased values.
    #[graphql(guard = "Requires(Operation::ApproveRedaction)")]
    async fn approve_redaction(
        &self,
        ctx: &Context<'_>,
        input: ApproveRedactionInput,
    ) -> async_graphql::Result<RedactionApproved> {
        // A follower's store refuses the erasure itself (READ_ONLY), like any write.
        let id = input.id;
        let applied = app(ctx).approve_redaction(id.clone(), metadata(ctx)?).await.map_err(app_error)?;
        Ok(RedactionApproved {
            redaction: by_id(ctx, &id).await?,
            unsalted_positions: applied.unsalted_positions.into_iter().map(Position).collect(),
        })
    }

    /// Rejects a pending redaction (another admin, or an auditor).
    #[graphql(guard = "Requires(Operation::ApproveRedaction)")]
    async fn reject_redaction(
        &self,
        ctx: &Context<'_>,
        input: RejectRedactionInput,
    ) -> async_graphql::Result<RedactionInfo> {
        app(ctx).reject_redaction(input.id.clone(), input.reason, metadata(ctx)?).await.map_err(app_error)?;
        by_id(ctx, &input.id).await
    }
}
