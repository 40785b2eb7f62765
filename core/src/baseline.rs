//! Configuration baselines (CM-6): a named set of CIs at a position, chosen by a filter or as
//! a business service's subgraph. A baseline records its definition, its position, how many
//! members it had and a digest of them; the members themselves are recomputed from the graph
//! at that position (which never changes) and checked against the digest.

use serde::{Deserialize, Serialize};

use crate::chain::Hash;
use crate::ci::{CiClass, CiId, Environment, Status};
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::store::{AppendOutcome, AppendRequest, EventStore, ExpectedVersion, StoreError};

/// Longest baseline name, in bytes.
pub const MAX_BASELINE_NAME_BYTES: usize = 100;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 2000;
/// Deepest service subgraph a baseline may take.
pub const MAX_SERVICE_DEPTH: u32 = 12;

/// Which CIs a baseline holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BaselineScope {
    /// The CIs matching a filter at the baseline's position.
    Filter {
        classes: Option<Vec<CiClass>>,
        statuses: Option<Vec<Status>>,
        environments: Option<Vec<Environment>>,
        name_contains: Option<String>,
    },
    /// A business service and what it depends on, within `depth`.
    Service { service: CiId, depth: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineCreated {
    pub name: String,
    pub description: Option<String>,
    pub position: u64,
    pub scope: BaselineScope,
    pub members: u64,
    /// blake3 over the members' ids, sorted, 16 bytes each.
    pub members_digest: Hash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineDeleted {
    pub name: String,
    pub reason: Option<String>,
}

pub const CREATED: &str = "baseline.created";
pub const DELETED: &str = "baseline.deleted";

/// Why a baseline command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BaselineError {
    #[error(
        "baseline name {0:?} is not valid: 1 to {MAX_BASELINE_NAME_BYTES} bytes, no control characters, no leading or trailing spaces"
    )]
    InvalidName(String),
    #[error("the description is {0} bytes; the bound is {MAX_DESCRIPTION_BYTES}")]
    DescriptionTooLong(usize),
    #[error("a baseline named {0:?} already exists")]
    Exists(String),
    #[error("no baseline named {0:?}")]
    Unknown(String),
    #[error("a service baseline's depth must be 1 to {MAX_SERVICE_DEPTH}, got {0}")]
    Depth(u32),
    #[error("baseline event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}

/// The digest of a member set.
pub fn members_digest(members: &[CiId]) -> Hash {
    let mut sorted: Vec<&CiId> = members.iter().collect();
    sorted.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    for id in sorted {
        hasher.update(id.0.as_bytes());
    }
    Hash(*hasher.finalize().as_bytes())
}

/// Baseline names compare trimmed and case-insensitively; each has its own stream.
pub fn stream(name: &str) -> StreamId {
    let digest = blake3::hash(name.trim().to_lowercase().as_bytes());
    StreamId::new(format!("baseline-{}", &digest.to_hex()[..32])).expect("valid stream id")
}

fn check_name(name: &str) -> Result<(), BaselineError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BASELINE_NAME_BYTES
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(BaselineError::InvalidName(name.to_owned())) }
}

/// The state of one baseline stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BaselineState {
    pub version: Option<u64>,
    pub exists: bool,
}

/// Decides a creation. Pure: the members were resolved by the caller at `event.position`.
pub fn decide_create(state: &BaselineState, event: &BaselineCreated) -> Result<BaselineCreated, BaselineError> {
    check_name(&event.name)?;
    if let Some(description) = &event.description {
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(BaselineError::DescriptionTooLong(description.len()));
        }
    }
    if let BaselineScope::Service { depth, .. } = event.scope {
        if depth == 0 || depth > MAX_SERVICE_DEPTH {
            return Err(BaselineError::Depth(depth));
        }
    }
    if state.exists {
        return Err(BaselineError::Exists(event.name.clone()));
    }
    Ok(event.clone())
}

pub fn decide_delete(
    state: &BaselineState,
    name: &str,
    reason: Option<String>,
) -> Result<BaselineDeleted, BaselineError> {
    if !state.exists {
        return Err(BaselineError::Unknown(name.to_owned()));
    }
    Ok(BaselineDeleted { name: name.to_owned(), reason })
}

async fn load(store: &dyn EventStore, name: &str) -> Result<BaselineState, crate::Error> {
    let records = store
        .read_stream(&stream(name), crate::store::Direction::Forward, None, store.limits().max_page_events)
        .await?;
    let mut state = BaselineState::default();
    for record in &records {
        state.version = Some(record.stream_version);
        state.exists = record.event_type == CREATED;
    }
    Ok(state)
}

fn expected(state: &BaselineState) -> ExpectedVersion {
    state.version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

/// Creates a baseline (appends nothing if refused).
pub async fn create(
    store: &dyn EventStore,
    event: &BaselineCreated,
    metadata: Metadata,
) -> Result<AppendOutcome, crate::Error> {
    let state = load(store, &event.name).await?;
    let accepted = decide_create(&state, event)?;
    let new = NewEvent::json(CREATED, &accepted, metadata).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
    Ok(store.append(AppendRequest::single(stream(&event.name), expected(&state), vec![new])).await?)
}

/// Deletes a baseline (its history stays in the log).
pub async fn delete(
    store: &dyn EventStore,
    name: &str,
    reason: Option<String>,
    metadata: Metadata,
) -> Result<AppendOutcome, crate::Error> {
    let state = load(store, name).await?;
    let accepted = decide_delete(&state, name, reason)?;
    let new = NewEvent::json(DELETED, &accepted, metadata).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
    Ok(store.append(AppendRequest::single(stream(name), expected(&state), vec![new])).await?)
}

/// Reads a baseline event back.
pub fn created_from(record: &EventRecord) -> Result<BaselineCreated, BaselineError> {
    record.data_as().map_err(|e| BaselineError::Undecodable { position: record.position, detail: e.to_string() })
}

pub fn deleted_from(record: &EventRecord) -> Result<BaselineDeleted, BaselineError> {
    record.data_as().map_err(|e| BaselineError::Undecodable { position: record.position, detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> BaselineCreated {
        BaselineCreated {
            name: name.into(),
            description: None,
            position: 10,
            scope: BaselineScope::Service { service: CiId(uuid::Uuid::from_u128(1)), depth: 3 },
            members: 0,
            members_digest: members_digest(&[]),
        }
    }

    #[test]
    fn creation_checks_name_depth_and_uniqueness() {
        let fresh = BaselineState::default();
        assert!(decide_create(&fresh, &event("Q3 production")).is_ok());
        assert_eq!(decide_create(&fresh, &event(" x")), Err(BaselineError::InvalidName(" x".into())));
        let mut deep = event("deep");
        deep.scope = BaselineScope::Service { service: CiId(uuid::Uuid::from_u128(1)), depth: 13 };
        assert_eq!(decide_create(&fresh, &deep), Err(BaselineError::Depth(13)));
        let taken = BaselineState { version: Some(0), exists: true };
        assert_eq!(decide_create(&taken, &event("Q3")), Err(BaselineError::Exists("Q3".into())));
        assert_eq!(decide_delete(&fresh, "nope", None), Err(BaselineError::Unknown("nope".into())));
        assert!(decide_delete(&taken, "Q3", None).is_ok());
    }

    #[test]
    fn digests_do_not_depend_on_order_and_names_share_a_stream_case_insensitively() {
        let (a, b) = (CiId(uuid::Uuid::from_u128(1)), CiId(uuid::Uuid::from_u128(2)));
        assert_eq!(members_digest(&[a, b]), members_digest(&[b, a]));
        assert_ne!(members_digest(&[a]), members_digest(&[b]));
        assert_eq!(stream("Q3 Production"), stream("q3 production"));
    }
}
