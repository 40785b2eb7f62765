//! Redaction of personal data (IS-1, RC-1, CM-4): erasing values from stored payloads while
//! the chain, the Merkle tree and every proof keep verifying.
//!
//! The chain hashes each payload's commitment, not the payload (see `chain`), so a payload's
//! bytes can be replaced and its commitment kept. A redaction is asked for by an admin
//! (`redaction.requested`: which events, which fields, why) and carried out only when a
//! *second* principal approves it (segregation of duties): the approval appends
//! `redaction.applied` (who asked, who approved, why, which events and which fields were
//! erased) in the same transaction that replaces the payloads (`EventStore::redact`). The
//! applied record names every erased position; `chain::ChainVerifier` checks that every
//! redacted event is accounted for by one.
//!
//! What is erased: each named field (an RFC 6901 JSON pointer) is replaced by
//! [`REDACTED_MARKER`]; a pointer to an object or array erases every value under it. "The
//! whole payload" erases every value whose erasure leaves the event readable by the engine
//! (ids, classes, states and timestamps stay: without them the event would mean nothing to the
//! projections); what was kept is listed. A named field whose erasure would make the event
//! unreadable is refused, naming it. The records of redaction themselves and the evidence
//! checkpoints cannot be redacted.
//!
//! Everything here is pure: the application layer reads the events and the store erases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::REDACTION_APPLIED;
use crate::decider::{CommandContext, Decider, Decision, DomainEvent, ReadSet, StreamKey};
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};

/// The stream of redaction requests and records.
pub const REDACTION_STREAM: &str = "redactions";
/// `redaction.requested`.
pub const REDACTION_REQUESTED: &str = "redaction.requested";
/// `redaction.rejected`.
pub const REDACTION_REJECTED: &str = "redaction.rejected";
/// What an erased value reads as.
pub const REDACTED_MARKER: &str = "[redacted]";
/// Most events one redaction erases.
pub const MAX_REDACTION_EVENTS: usize = 1_000;
/// Most fields one redaction names.
pub const MAX_REDACTION_FIELDS: usize = 64;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 2_000;
/// Streams whose events cannot be redacted: the redaction records and the signed checkpoints.
pub const UNREDACTABLE_STREAMS: [&str; 2] = [REDACTION_STREAM, crate::evidence::CHECKPOINT_STREAM];
/// The fields of access events that may be erased: the text people write about principals
/// and tokens. Names, roles, token ids and hashes are how authentication finds a caller:
/// erasing one would lock a principal out or hand its tokens to nobody.
pub const ERASABLE_ACCESS_FIELDS: [&str; 3] = ["display_name", "label", "reason"];

/// Whether the value at `pointer` of `record` must stay whatever the engine's decoders say.
fn protected(record: &EventRecord, pointer: &str) -> bool {
    record.stream_id.as_str() == crate::access::ACCESS_STREAM
        && !pointer.rsplit('/').next().is_some_and(|field| ERASABLE_ACCESS_FIELDS.contains(&field))
}

/// Why a redaction was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum RedactionError {
    #[error("a redaction names at least one event")]
    NoEvents,
    #[error("a redaction erases at most {bound} events; {count} were named")]
    TooManyEvents { count: usize, bound: usize },
    #[error("a redaction names at most {bound} fields; {count} were named")]
    TooManyFields { count: usize, bound: usize },
    #[error("position {0} is named twice")]
    DuplicatePosition(u64),
    #[error("a redaction needs a reason (at most {bound} bytes); {bytes} bytes given")]
    Reason { bytes: usize, bound: usize },
    #[error("field {pointer:?} is not a JSON pointer (RFC 6901: empty, or starting with '/')")]
    BadPointer { pointer: String },
    #[error("field {pointer:?} is not in the payload of the event at position {position}")]
    NoSuchField { position: u64, pointer: String },
    #[error(
        "erasing {pointer:?} of the event at position {position} ({event_type}) would leave it unreadable to the engine (an id, class, state or time); erase text fields only"
    )]
    Structural { position: u64, event_type: String, pointer: String },
    #[error("the event at position {position} is on stream {stream}, which cannot be redacted")]
    Unredactable { position: u64, stream: String },
    #[error("no event at position {position} (the log ends at {head})")]
    NoSuchEvent { position: u64, head: u64 },
    #[error("the event at position {0} has nothing left to erase")]
    NothingToErase(u64),
    #[error("the payload of the event at position {0} is not JSON")]
    NotJson(u64),
    #[error("redaction {0} already exists")]
    Exists(String),
    #[error("no redaction {0}")]
    Unknown(String),
    #[error("redaction {id} is {status}, not pending")]
    NotPending { id: String, status: String },
    #[error(
        "segregation of duties: {principal} asked for redaction {id} and cannot approve it; another principal must"
    )]
    SameApprover { id: String, principal: String },
    #[error("the approval's erasures do not match redaction {0}'s events")]
    PlanMismatch(String),
    #[error("redaction event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}

/// `redaction.requested`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionRequested {
    /// The redaction's id.
    pub id: String,
    /// The events to erase from.
    pub positions: Vec<u64>,
    /// JSON pointers to erase; empty is the whole payload.
    pub fields: Vec<String>,
    /// Why (a privacy request's reference, say).
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
}

/// `redaction.rejected`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionRejected {
    /// The redaction's id.
    pub id: String,
    /// Who rejected it.
    pub rejected_by: String,
    /// Why.
    pub reason: String,
}

/// What was erased from one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedEvent {
    /// The event's position.
    pub position: u64,
    /// The pointers of the values erased (leaves).
    pub erased: Vec<String>,
    /// For a whole-payload erasure, the values kept because the engine needs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

/// `redaction.applied`: the record in the chain that accounts for every erased payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionApplied {
    /// The redaction's id.
    pub id: String,
    /// The erased events' positions (what `chain::RedactionCover` reads).
    pub positions: Vec<u64>,
    /// The fields asked for; empty is the whole payload.
    pub fields: Vec<String>,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
    /// Who approved (never the asker).
    pub approved_by: String,
    /// What was erased, per event.
    pub erasures: Vec<ErasedEvent>,
}

/// A redaction event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedactionEvent {
    /// Asked for.
    Requested(RedactionRequested),
    /// Rejected.
    Rejected(RedactionRejected),
    /// Carried out.
    Applied(RedactionApplied),
}

impl RedactionEvent {
    /// Reads a redaction event back.
    pub fn from_record(record: &EventRecord) -> Result<RedactionEvent, RedactionError> {
        let undecodable = |detail: String| RedactionError::Undecodable { position: record.position, detail };
        match record.event_type.as_str() {
            REDACTION_REQUESTED => record.data_as().map(RedactionEvent::Requested),
            REDACTION_REJECTED => record.data_as().map(RedactionEvent::Rejected),
            REDACTION_APPLIED => record.data_as().map(RedactionEvent::Applied),
            other => return Err(undecodable(format!("unknown event type {other}"))),
        }
        .map_err(|e| undecodable(e.to_string()))
    }
}

impl DomainEvent for RedactionEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        // Serialising plain structs cannot fail.
        let (event_type, data) = match self {
            RedactionEvent::Requested(e) => (REDACTION_REQUESTED, serde_json::to_vec(e)),
            RedactionEvent::Rejected(e) => (REDACTION_REJECTED, serde_json::to_vec(e)),
            RedactionEvent::Applied(e) => (REDACTION_APPLIED, serde_json::to_vec(e)),
        };
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }
}

/// Where a redaction stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedactionStatus {
    /// Waiting for a second principal.
    Pending,
    /// Rejected.
    Rejected(RedactionRejected),
    /// Carried out, by the record at this position.
    Applied {
        /// The record.
        record: RedactionApplied,
        /// Its position.
        position: u64,
    },
}

impl RedactionStatus {
    /// `pending`, `rejected` or `applied`.
    pub fn name(&self) -> &'static str {
        match self {
            RedactionStatus::Pending => "pending",
            RedactionStatus::Rejected(_) => "rejected",
            RedactionStatus::Applied { .. } => "applied",
        }
    }
}

/// One redaction: what was asked and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    /// The request.
    pub request: RedactionRequested,
    /// Its position in the log.
    pub requested_at: u64,
    /// Where it stands.
    pub status: RedactionStatus,
}

/// Every redaction, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Redactions(pub BTreeMap<String, Redaction>);

impl Redactions {
    /// Folds one event of the redaction stream.
    pub fn evolve(&mut self, record: &EventRecord) -> Result<(), RedactionError> {
        match RedactionEvent::from_record(record)? {
            RedactionEvent::Requested(request) => {
                let redaction = Redaction {
                    request: request.clone(),
                    requested_at: record.position,
                    status: RedactionStatus::Pending,
                };
                self.0.insert(request.id, redaction);
            }
            RedactionEvent::Rejected(rejected) => {
                if let Some(redaction) = self.0.get_mut(&rejected.id) {
                    redaction.status = RedactionStatus::Rejected(rejected);
                }
            }
            RedactionEvent::Applied(applied) => {
                if let Some(redaction) = self.0.get_mut(&applied.id) {
                    redaction.status = RedactionStatus::Applied { record: applied, position: record.position };
                }
            }
        }
        Ok(())
    }
}

/// The redaction stream (the whole of it: redactions are few).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RedactionKey;

impl StreamKey for RedactionKey {
    type State = Redactions;

    fn streams(&self) -> Vec<StreamId> {
        vec![redaction_stream()]
    }

    fn initial(&self) -> Redactions {
        Redactions::default()
    }

    fn evolve(&self, state: &mut Redactions, record: &EventRecord) -> Result<(), crate::Error> {
        Ok(state.evolve(record)?)
    }
}

/// The redaction stream's id.
pub fn redaction_stream() -> StreamId {
    StreamId::new(REDACTION_STREAM).expect("a valid stream id")
}

/// A redaction command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedactionCommand {
    /// Ask for one (admin). Positions and fields are checked against the events by the caller
    /// ([`plan_erasure`]) before this is decided, so a request that cannot be carried out is
    /// refused when asked, not when approved.
    Request {
        /// Its id.
        id: String,
        /// The events.
        positions: Vec<u64>,
        /// JSON pointers; empty is the whole payload.
        fields: Vec<String>,
        /// Why.
        reason: String,
    },
    /// Approve and carry out (a second principal): `erasures` is what [`plan_erasure`] found
    /// for each of the request's events, read just before.
    Approve {
        /// Which.
        id: String,
        /// The planned erasures, one per requested event.
        erasures: Vec<ErasedEvent>,
    },
    /// Reject.
    Reject {
        /// Which.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Decides redaction commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactionDecider;

impl Decider for RedactionDecider {
    type Command = RedactionCommand;
    type Key = RedactionKey;
    type Event = RedactionEvent;
    type Error = RedactionError;
    const NAME: &'static str = "redaction";

    fn reads(&self, _command: &RedactionCommand, _read: &ReadSet<RedactionKey>) -> Vec<RedactionKey> {
        vec![RedactionKey]
    }

    fn decide(
        &self,
        command: &RedactionCommand,
        read: &ReadSet<RedactionKey>,
        context: &CommandContext,
    ) -> Result<Decision<RedactionKey, RedactionEvent>, RedactionError> {
        let empty = Redactions::default();
        let redactions = read.get(&RedactionKey).unwrap_or(&empty);
        let principal = context.metadata.actor.principal.clone();
        let mut decision = Decision::default();
        let pending = |id: &str| -> Result<&Redaction, RedactionError> {
            let redaction = redactions.0.get(id).ok_or_else(|| RedactionError::Unknown(id.to_owned()))?;
            match redaction.status {
                RedactionStatus::Pending => Ok(redaction),
                ref other => Err(RedactionError::NotPending { id: id.to_owned(), status: other.name().to_owned() }),
            }
        };
        match command {
            RedactionCommand::Request { id, positions, fields, reason } => {
                check_request(positions, fields, reason)?;
                if redactions.0.contains_key(id) {
                    return Err(RedactionError::Exists(id.clone()));
                }
                decision.write(
                    RedactionKey,
                    RedactionEvent::Requested(RedactionRequested {
                        id: id.clone(),
                        positions: positions.clone(),
                        fields: fields.clone(),
                        reason: reason.clone(),
                        requested_by: principal.to_string(),
                    }),
                );
            }
            RedactionCommand::Approve { id, erasures } => {
                let redaction = pending(id)?;
                if redaction.request.requested_by == principal {
                    return Err(RedactionError::SameApprover { id: id.clone(), principal: principal.to_string() });
                }
                let planned: Vec<u64> = erasures.iter().map(|e| e.position).collect();
                if planned != redaction.request.positions {
                    return Err(RedactionError::PlanMismatch(id.clone()));
                }
                let request = &redaction.request;
                decision.write(
                    RedactionKey,
                    RedactionEvent::Applied(RedactionApplied {
                        id: id.clone(),
                        positions: request.positions.clone(),
                        fields: request.fields.clone(),
                        reason: request.reason.clone(),
                        requested_by: request.requested_by.clone(),
                        approved_by: principal.to_string(),
                        erasures: erasures.clone(),
                    }),
                );
            }
            RedactionCommand::Reject { id, reason } => {
                pending(id)?;
                check_reason(reason)?;
                decision.write(
                    RedactionKey,
                    RedactionEvent::Rejected(RedactionRejected {
                        id: id.clone(),
                        rejected_by: principal.to_string(),
                        reason: reason.clone(),
                    }),
                );
            }
        }
        Ok(decision)
    }
}

fn check_reason(reason: &str) -> Result<(), RedactionError> {
    let bytes = reason.trim().len();
    if bytes == 0 || reason.len() > MAX_REASON_BYTES {
        return Err(RedactionError::Reason { bytes: reason.len(), bound: MAX_REASON_BYTES });
    }
    Ok(())
}

/// Checks a request's shape: bounds, distinct positions, pointers, a reason.
pub fn check_request(positions: &[u64], fields: &[String], reason: &str) -> Result<(), RedactionError> {
    if positions.is_empty() {
        return Err(RedactionError::NoEvents);
    }
    if positions.len() > MAX_REDACTION_EVENTS {
        return Err(RedactionError::TooManyEvents { count: positions.len(), bound: MAX_REDACTION_EVENTS });
    }
    if fields.len() > MAX_REDACTION_FIELDS {
        return Err(RedactionError::TooManyFields { count: fields.len(), bound: MAX_REDACTION_FIELDS });
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = positions.iter().find(|p| !seen.insert(**p)) {
        return Err(RedactionError::DuplicatePosition(*twice));
    }
    if let Some(bad) = fields.iter().find(|f| f.is_empty() || !f.starts_with('/')) {
        return Err(RedactionError::BadPointer { pointer: bad.clone() });
    }
    check_reason(reason)
}

/// What erasing `fields` (empty: the whole payload) from `record` gives: the new payload and
/// what was erased and kept. Pure; refuses what cannot be erased (see the module's docs).
pub fn plan_erasure(record: &EventRecord, fields: &[String]) -> Result<(Vec<u8>, ErasedEvent), RedactionError> {
    if UNREDACTABLE_STREAMS.contains(&record.stream_id.as_str()) {
        return Err(RedactionError::Unredactable { position: record.position, stream: record.stream_id.to_string() });
    }
    let original: Value = serde_json::from_slice(&record.data).map_err(|_| RedactionError::NotJson(record.position))?;
    let readers = Readers::of(record);
    let mut payload = original.clone();
    let mut erased = Vec::new();
    let mut kept = Vec::new();
    if fields.is_empty() {
        for pointer in leaves(&original, String::new()) {
            let mut candidate = payload.clone();
            if !protected(record, &pointer)
                && replace(&mut candidate, &pointer)
                && readers.still_read(record, &candidate)
            {
                payload = candidate;
                erased.push(pointer);
            } else if !is_marker(original.pointer(&pointer)) {
                kept.push(pointer);
            }
        }
    } else {
        for field in fields {
            let target = original
                .pointer(field)
                .ok_or_else(|| RedactionError::NoSuchField { position: record.position, pointer: field.clone() })?;
            for pointer in leaves(target, field.clone()) {
                if !protected(record, &pointer) && !replace(&mut payload, &pointer) {
                    continue;
                }
                if protected(record, &pointer) || !readers.still_read(record, &payload) {
                    return Err(RedactionError::Structural {
                        position: record.position,
                        event_type: record.event_type.to_string(),
                        pointer,
                    });
                }
                erased.push(pointer);
            }
        }
    }
    if erased.is_empty() {
        return Err(RedactionError::NothingToErase(record.position));
    }
    let data = serde_json::to_vec(&payload).map_err(|_| RedactionError::NotJson(record.position))?;
    Ok((data, ErasedEvent { position: record.position, erased, kept }))
}

fn is_marker(value: Option<&Value>) -> bool {
    value.and_then(Value::as_str) == Some(REDACTED_MARKER)
}

/// The pointers of every value under `value` that is not a container, not null and not
/// already erased.
fn leaves(value: &Value, at: String) -> Vec<String> {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) => map.iter().flat_map(|(k, v)| leaves(v, format!("{at}/{}", escape(k)))).collect(),
        Value::Array(items) => items.iter().enumerate().flat_map(|(i, v)| leaves(v, format!("{at}/{i}"))).collect(),
        Value::Null => Vec::new(),
        Value::String(text) if text == REDACTED_MARKER => Vec::new(),
        _ => vec![at],
    }
}

/// Replaces the value at `pointer` with the marker; false if there is none.
fn replace(payload: &mut Value, pointer: &str) -> bool {
    match payload.pointer_mut(pointer) {
        Some(slot) if !is_marker(Some(slot)) => {
            *slot = Value::String(REDACTED_MARKER.to_owned());
            true
        }
        _ => false,
    }
}

type Reader = fn(&EventRecord) -> bool;

/// The engine's decoders that read an event: erasing must leave each of them able to.
struct Readers(Vec<Reader>);

impl Readers {
    const ALL: [Reader; 10] = [
        |r| crate::ci::CiEvent::from_record(r).is_ok(),
        |r| crate::change::ChangeEvent::from_record(r).is_ok(),
        |r| crate::change::freeze::FreezeEvent::from_record(r).is_ok(),
        |r| crate::access::AccessEvent::from_record(r).is_ok(),
        |r| crate::discovery::DiscoveryEvent::from_record(r).is_ok(),
        |r| matches!(crate::release::ReleaseEvent::from_record(r), Ok(Some(_))),
        |r| crate::evidence::signed_from(r).is_ok(),
        |r| crate::baseline::created_from(r).is_ok(),
        |r| crate::baseline::deleted_from(r).is_ok(),
        |r| crate::ci::schema::SchemaRegistry::default().apply(r).is_ok(),
    ];

    fn of(record: &EventRecord) -> Readers {
        Readers(Self::ALL.into_iter().filter(|read| read(record)).collect())
    }

    fn still_read(&self, record: &EventRecord, payload: &Value) -> bool {
        let mut candidate = record.clone();
        candidate.data = serde_json::to_vec(payload).unwrap_or_default();
        self.0.iter().all(|read| read(&candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decider::testing::Scenario;
    use crate::event::{Actor, CommitSpan, FoldRecord, PayloadSeal, Source};
    use crate::hash::Hash;
    use crate::time::Timestamp;

    fn record(event_type: &str, data: &str) -> EventRecord {
        let metadata = Metadata::new(Actor::principal("alice"), Source::Api);
        EventRecord {
            fold: FoldRecord {
                position: 7,
                stream_id: StreamId::new("ci-1").expect("valid"),
                stream_version: 0,
                event_type: event_type.into(),
                data: data.as_bytes().to_vec(),
                principal: metadata.actor.principal,
                correlation_id: metadata.correlation_id,
                recorded_at: Timestamp::from_micros(0),
                hash: Hash::GENESIS,
                commit: CommitSpan::single(7),
            },
            token_id: metadata.actor.token_id,
            causation_id: metadata.causation_id,
            source: metadata.source,
            occurred_at: metadata.occurred_at,
            event_id: uuid::Uuid::from_u128(7),
            schema_version: 1,
            prev_hash: Hash::GENESIS,
            seal: PayloadSeal::Salted([1; 32]),
        }
    }

    #[test]
    fn named_fields_become_the_marker_and_nested_ones_are_all_erased() {
        let event = record("test.note", r#"{"owner":{"name":"Jane Doe","email":"jane@example.com"},"n":3}"#);
        let (data, erased) = plan_erasure(&event, &["/owner".into()]).expect("erased");
        let value: Value = serde_json::from_slice(&data).expect("json");
        assert_eq!(value["owner"]["name"], REDACTED_MARKER);
        assert_eq!(value["owner"]["email"], REDACTED_MARKER);
        assert_eq!(value["n"], 3);
        assert_eq!(erased.erased, vec!["/owner/email".to_string(), "/owner/name".to_string()]);
        assert!(!String::from_utf8_lossy(&data).contains("jane@example.com"));
        // Erasing what is gone already is refused; a field that is not there is named.
        let mut again = event.clone();
        again.data = data;
        assert_eq!(plan_erasure(&again, &["/owner".into()]), Err(RedactionError::NothingToErase(7)));
        assert!(matches!(plan_erasure(&event, &["/nope".into()]), Err(RedactionError::NoSuchField { .. })));
    }

    #[test]
    fn access_events_keep_what_authentication_reads() {
        let mut event = record(
            "access.principal_created",
            r#"{"name":"jane","kind":"person","display_name":"Jane Doe","roles":["viewer"]}"#,
        );
        event.stream_id = StreamId::new(crate::access::ACCESS_STREAM).expect("stream");
        let (data, erased) = plan_erasure(&event, &[]).expect("the display name erases");
        assert_eq!(erased.erased, vec!["/display_name".to_string()]);
        let value: Value = serde_json::from_slice(&data).expect("json");
        assert_eq!(value["name"], "jane", "the principal's name stays: tokens name it");
        assert!(matches!(plan_erasure(&event, &["/name".into()]), Err(RedactionError::Structural { .. })));
    }

    #[test]
    fn redaction_records_and_checkpoints_cannot_be_redacted() {
        let mut event = record(REDACTION_REQUESTED, r#"{"reason":"x"}"#);
        event.stream_id = redaction_stream();
        assert!(matches!(plan_erasure(&event, &[]), Err(RedactionError::Unredactable { .. })));
    }

    #[test]
    fn requests_are_checked_at_their_bounds() {
        let reason = "GDPR art. 17 request 2026-118";
        assert_eq!(check_request(&[], &[], reason), Err(RedactionError::NoEvents));
        let many: Vec<u64> = (1..=MAX_REDACTION_EVENTS as u64).collect();
        assert_eq!(check_request(&many, &[], reason), Ok(()));
        let too_many: Vec<u64> = (1..=MAX_REDACTION_EVENTS as u64 + 1).collect();
        assert!(matches!(check_request(&too_many, &[], reason), Err(RedactionError::TooManyEvents { .. })));
        assert_eq!(check_request(&[1, 1], &[], reason), Err(RedactionError::DuplicatePosition(1)));
        assert!(matches!(check_request(&[1], &["owner".into()], reason), Err(RedactionError::BadPointer { .. })));
        assert!(matches!(check_request(&[1], &[], " "), Err(RedactionError::Reason { .. })));
        assert!(check_request(&[1], &[], &"r".repeat(MAX_REASON_BYTES)).is_ok());
        assert!(matches!(
            check_request(&[1], &[], &"r".repeat(MAX_REASON_BYTES + 1)),
            Err(RedactionError::Reason { .. })
        ));
        let fields: Vec<String> = (0..=MAX_REDACTION_FIELDS).map(|i| format!("/f{i}")).collect();
        assert!(matches!(check_request(&[1], &fields, reason), Err(RedactionError::TooManyFields { .. })));
    }

    fn request(id: &str) -> RedactionCommand {
        RedactionCommand::Request {
            id: id.into(),
            positions: vec![3, 5],
            fields: vec!["/attributes/email".into()],
            reason: "privacy request 118".into(),
        }
    }

    fn approve(id: &str, positions: &[u64]) -> RedactionCommand {
        RedactionCommand::Approve {
            id: id.into(),
            erasures: positions
                .iter()
                .map(|p| ErasedEvent { position: *p, erased: vec!["/attributes/email".into()], kept: vec![] })
                .collect(),
        }
    }

    #[test]
    fn a_second_principal_must_approve() {
        let world = Scenario::new();
        world.given(&RedactionDecider, "admin-ann", request("r1"));
        // Given a pending request, when its asker approves it, then segregation of duties refuses.
        assert!(matches!(
            world.when(&RedactionDecider, "admin-ann", &approve("r1", &[3, 5])),
            Err(RedactionError::SameApprover { .. })
        ));
        // An approval whose erasures are not the request's events is refused.
        assert_eq!(
            world.when(&RedactionDecider, "auditor-bo", &approve("r1", &[3])).err(),
            Some(RedactionError::PlanMismatch("r1".into()))
        );
        // When another principal approves, then the record names both and every position.
        let decision = world.when(&RedactionDecider, "auditor-bo", &approve("r1", &[3, 5])).expect("approved");
        match decision.events_of(&RedactionKey) {
            [RedactionEvent::Applied(applied)] => {
                assert_eq!(applied.positions, vec![3, 5]);
                assert_eq!((applied.requested_by.as_str(), applied.approved_by.as_str()), ("admin-ann", "auditor-bo"));
            }
            other => panic!("{other:?}"),
        }
        world.given(&RedactionDecider, "auditor-bo", approve("r1", &[3, 5]));
        assert!(matches!(
            world.when(&RedactionDecider, "auditor-cy", &approve("r1", &[3, 5])),
            Err(RedactionError::NotPending { .. })
        ));
        assert_eq!(
            world.when(&RedactionDecider, "admin-ann", &request("r1")).err(),
            Some(RedactionError::Exists("r1".into()))
        );
    }

    #[test]
    fn a_rejected_request_cannot_be_approved() {
        let world = Scenario::new();
        world.given(&RedactionDecider, "admin-ann", request("r2"));
        world.given(
            &RedactionDecider,
            "auditor-bo",
            RedactionCommand::Reject { id: "r2".into(), reason: "not personal data".into() },
        );
        assert!(matches!(
            world.when(&RedactionDecider, "auditor-cy", &approve("r2", &[3, 5])),
            Err(RedactionError::NotPending { .. })
        ));
        assert_eq!(
            world.when(&RedactionDecider, "auditor-cy", &approve("r9", &[3])).err(),
            Some(RedactionError::Unknown("r9".into()))
        );
    }
}
