//! Redaction of personal data (IS-1, RC-1): asking, approving (a second principal) and
//! rejecting, over `cmdb_core::redaction`.
//!
//! Asking checks every named event now (it exists, its fields are there and can be erased), so
//! a request that could not be carried out is refused when asked. Approving reads the events
//! again, plans the erasures, decides, and hands the record and the erasures to the store in
//! one transaction (`EventStore::redact`); the projections then rebuild from the log (see the
//! runner), and the call returns once the graph has.

use std::time::Duration;

use cmdb_core::decider::Decider;
use cmdb_core::decider::execute::{append_request, load};
use cmdb_core::redaction::{
    ErasedEvent, Redaction, RedactionCommand, RedactionDecider, RedactionError, RedactionKey, Redactions, plan_erasure,
};
use cmdb_core::store::Erasure;
use cmdb_core::{EventRecord, Metadata, StoreError};

use super::{App, AppError, Written};

/// How long an approval waits for the graph to rebuild without the erased values, in
/// milliseconds (a rebuild reads the whole log: seconds on a large estate).
pub const REDACTION_REBUILD_WAIT_MS: u64 = 300_000;
/// How many times an approval decides again when another writer moved the redaction stream.
const APPROVAL_ATTEMPTS: usize = 4;

/// A carried-out redaction.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The record's position.
    pub record_position: u64,
    /// What was erased, per event.
    pub erasures: Vec<ErasedEvent>,
    /// Events of chain version 1 among them: their kept commitments are unsalted, so an
    /// erased value could be confirmed by hashing a guess.
    pub unsalted_positions: Vec<u64>,
}

impl App {
    /// Every redaction, asked, rejected or applied.
    pub async fn redactions(&self) -> Result<Redactions, AppError> {
        Ok(cmdb_core::decider::fold::load(self.store.as_ref(), &RedactionKey).await?)
    }

    /// One redaction by id.
    pub async fn redaction(&self, id: &str) -> Result<Option<Redaction>, AppError> {
        Ok(self.redactions().await?.0.remove(id))
    }

    /// Asks for a redaction (an admin): checked against the events now, carried out only when
    /// another principal approves it.
    pub async fn request_redaction(
        &self,
        id: String,
        positions: Vec<u64>,
        fields: Vec<String>,
        reason: String,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        cmdb_core::redaction::check_request(&positions, &fields, &reason).map_err(cmdb_core::Error::from)?;
        for record in self.events_at(&positions).await? {
            plan_erasure(&record, &fields).map_err(cmdb_core::Error::from)?;
        }
        let command = RedactionCommand::Request { id, positions, fields, reason };
        let executed = self.run(&RedactionDecider, &command, metadata).await?;
        Ok(Written::from(&executed))
    }

    /// Rejects a pending redaction.
    pub async fn reject_redaction(&self, id: String, reason: String, metadata: Metadata) -> Result<Written, AppError> {
        let executed = self.run(&RedactionDecider, &RedactionCommand::Reject { id, reason }, metadata).await?;
        Ok(Written::from(&executed))
    }

    /// Approves a pending redaction (never by its asker) and carries it out: the record and
    /// the erasures land in one transaction; returns once the graph has rebuilt without the
    /// erased values.
    pub async fn approve_redaction(&self, id: String, metadata: Metadata) -> Result<Applied, AppError> {
        let context = self.context(metadata);
        let mut attempt = 0;
        let (outcome, erasures, unsalted_positions) = loop {
            attempt += 1;
            let probe = RedactionCommand::Approve { id: id.clone(), erasures: Vec::new() };
            let (read, _) = load(self.store.as_ref(), &RedactionDecider, &probe, None, true).await?;
            // Unknown, not pending, or asked by this principal: refused before any event is read
            // (an empty plan passes every other check and fails only on the plan).
            match RedactionDecider.decide(&probe, &read, &context) {
                Err(RedactionError::PlanMismatch(_)) => {}
                Err(error) => return Err(cmdb_core::Error::from(error).into()),
                Ok(_) => return Err(cmdb_core::Error::from(RedactionError::PlanMismatch(id)).into()),
            }
            let Some(redaction) = read.get(&RedactionKey).and_then(|all| all.0.get(&id)) else {
                return Err(cmdb_core::Error::from(RedactionError::Unknown(id)).into());
            };
            let records = self.events_at(&redaction.request.positions).await?;
            let mut planned = Vec::with_capacity(records.len());
            let mut store_erasures = Vec::with_capacity(records.len());
            let mut unsalted = Vec::new();
            for record in &records {
                let (data, erased) = plan_erasure(record, &redaction.request.fields).map_err(cmdb_core::Error::from)?;
                if record.seal.encoding() == cmdb_core::ChainEncoding::V1 {
                    unsalted.push(record.position);
                }
                store_erasures.push(Erasure { position: record.position, data });
                planned.push(erased);
            }
            let command = RedactionCommand::Approve { id: id.clone(), erasures: planned.clone() };
            let decision = RedactionDecider.decide(&command, &read, &context).map_err(cmdb_core::Error::from)?;
            let request = append_request(&read, &decision, &context);
            match self.store.redact(store_erasures, request).await {
                Ok(outcome) => break (outcome, planned, unsalted),
                Err(StoreError::VersionConflict { .. }) if attempt < APPROVAL_ATTEMPTS => continue,
                Err(error) => return Err(cmdb_core::Error::from(error).into()),
            }
        };
        let position = outcome.last_position;
        if !self.graph.wait_for(position, Duration::from_millis(REDACTION_REBUILD_WAIT_MS)).await {
            return Err(AppError::NotYetApplied {
                position,
                model: "graph (rebuilding without the erased values)",
                waited_ms: REDACTION_REBUILD_WAIT_MS,
            });
        }
        Ok(Applied { record_position: position, erasures, unsalted_positions })
    }

    /// The events at `positions`, in that order; a position past the head is named.
    async fn events_at(&self, positions: &[u64]) -> Result<Vec<EventRecord>, AppError> {
        let mut records = Vec::with_capacity(positions.len());
        for position in positions {
            match self.store.event_at(*position).await.map_err(cmdb_core::Error::from)? {
                Some(record) => records.push(record),
                None => {
                    let head = self.store.head().await.map_err(cmdb_core::Error::from)?.position;
                    return Err(
                        cmdb_core::Error::from(RedactionError::NoSuchEvent { position: *position, head }).into()
                    );
                }
            }
        }
        Ok(records)
    }
}
