//! Configuration baselines (CM-6): a named set of CIs at a position, chosen by a filter or as
//! a business service's subgraph. A baseline records its definition, its position, how many
//! members it had and a digest of them; the members themselves are recomputed from the graph
//! at that position (which never changes) and checked against the digest.

use serde::{Deserialize, Serialize};

use crate::decider::{CommandContext, Decider, Decision, DomainEvent, ReadSet, StreamKey};
use crate::event::{EventRecord, FoldRecord, Metadata, NewEvent, StreamId};
use crate::hash::Hash;
use crate::ids::CiId;
use crate::model::{CiClass, Environment, Status};

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
        /// Classes to keep.
        classes: Option<Vec<CiClass>>,
        /// Statuses to keep.
        statuses: Option<Vec<Status>>,
        /// Environments to keep.
        environments: Option<Vec<Environment>>,
        /// A case-insensitive part of the name.
        name_contains: Option<String>,
    },
    /// A business service and what it depends on, within `depth`.
    /// A business service and what it depends on, within `depth` relationships.
    Service {
        /// The business service.
        service: CiId,
        /// How many relationships deep.
        depth: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A baseline was recorded: its members at `position`, by count and digest.
pub struct BaselineCreated {
    /// The name.
    pub name: String,
    /// A description.
    pub description: Option<String>,
    /// The log position.
    pub position: u64,
    /// The CIs it touches and the CIs it plans.
    pub scope: BaselineScope,
    /// How many CIs it holds.
    pub members: u64,
    /// blake3 over the members' ids, sorted, 16 bytes each.
    pub members_digest: Hash,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A baseline was deleted (its creation stays in the log).
pub struct BaselineDeleted {
    /// The name.
    pub name: String,
    /// Why.
    pub reason: Option<String>,
}

/// The type of the event `baseline.created`.
pub const CREATED: &str = "baseline.created";
/// The type of the event `baseline.deleted`.
pub const DELETED: &str = "baseline.deleted";

/// Why a baseline command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum BaselineError {
    #[error(
        "baseline name {0:?} is not valid: 1 to {MAX_BASELINE_NAME_BYTES} bytes, no control characters, no leading or trailing spaces"
    )]
    InvalidName(String),
    #[error("the description is {0} bytes; the bound is {MAX_DESCRIPTION_BYTES}")]
    /// The description is … bytes; the bound is ….
    DescriptionTooLong(usize),
    #[error("a baseline named {0:?} already exists")]
    /// A baseline named … already exists.
    Exists(String),
    #[error("no baseline named {0:?}")]
    /// No baseline named ….
    Unknown(String),
    #[error("a service baseline's depth must be 1 to {MAX_SERVICE_DEPTH}, got {0}")]
    /// A service baseline's depth must be 1 to …, got ….
    Depth(u32),
    #[error("baseline event at position {position} cannot be read: {detail}")]
    /// Baseline event at position … cannot be read: ….
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
    /// Whether a baseline of that name exists now (created, not deleted since).
    pub exists: bool,
}

/// A baseline's stream, named by the baseline's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BaselineKey(pub String);

impl StreamKey for BaselineKey {
    type State = BaselineState;

    fn streams(&self) -> Vec<StreamId> {
        vec![stream(&self.0)]
    }

    fn initial(&self) -> BaselineState {
        BaselineState::default()
    }

    fn evolve(&self, state: &mut BaselineState, record: &EventRecord) -> Result<(), crate::Error> {
        state.exists = record.event_type == CREATED;
        Ok(())
    }
}

/// Create or delete a baseline (CM-6).
#[derive(Clone, Debug, PartialEq)]
pub enum BaselineCommand {
    /// Record a baseline whose members the caller resolved at `position`.
    Create(BaselineCreated),
    /// Delete a baseline (its history stays in the log).
    Delete {
        /// Its name.
        name: String,
        /// Why.
        reason: Option<String>,
    },
}

/// A baseline event.
#[derive(Clone, Debug, PartialEq)]
pub enum BaselineEvent {
    /// Recorded.
    Created(BaselineCreated),
    /// Deleted.
    Deleted(BaselineDeleted),
}

impl DomainEvent for BaselineEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let (event_type, data) = match self {
            BaselineEvent::Created(e) => (CREATED, serde_json::to_vec(e)),
            BaselineEvent::Deleted(e) => (DELETED, serde_json::to_vec(e)),
        };
        // Serialising these plain structs cannot fail.
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }
}

/// Decides baseline commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct BaselineDecider;

impl Decider for BaselineDecider {
    type Command = BaselineCommand;
    type Key = BaselineKey;
    type Event = BaselineEvent;
    type Error = BaselineError;
    const NAME: &'static str = "baseline";

    fn reads(&self, command: &BaselineCommand, _read: &ReadSet<BaselineKey>) -> Vec<BaselineKey> {
        match command {
            BaselineCommand::Create(created) => vec![BaselineKey(created.name.clone())],
            BaselineCommand::Delete { name, .. } => vec![BaselineKey(name.clone())],
        }
    }

    fn decide(
        &self,
        command: &BaselineCommand,
        read: &ReadSet<BaselineKey>,
        _context: &CommandContext,
    ) -> Result<Decision<BaselineKey, BaselineEvent>, BaselineError> {
        let mut decision = Decision::default();
        match command {
            BaselineCommand::Create(created) => {
                let key = BaselineKey(created.name.clone());
                let state = read.get(&key).cloned().unwrap_or_default();
                decision.write(key, BaselineEvent::Created(decide_create(&state, created)?));
            }
            BaselineCommand::Delete { name, reason } => {
                let key = BaselineKey(name.clone());
                let state = read.get(&key).cloned().unwrap_or_default();
                decision.write(key, BaselineEvent::Deleted(decide_delete(&state, name, reason.clone())?));
            }
        }
        Ok(decision)
    }
}

/// Decides a creation. Pure: the members were resolved by the caller at `event.position`.
fn decide_create(state: &BaselineState, event: &BaselineCreated) -> Result<BaselineCreated, BaselineError> {
    check_name(&event.name)?;
    if let Some(description) = &event.description
        && description.len() > MAX_DESCRIPTION_BYTES
    {
        return Err(BaselineError::DescriptionTooLong(description.len()));
    }
    if let BaselineScope::Service { depth, .. } = event.scope
        && (depth == 0 || depth > MAX_SERVICE_DEPTH)
    {
        return Err(BaselineError::Depth(depth));
    }
    if state.exists {
        return Err(BaselineError::Exists(event.name.clone()));
    }
    Ok(event.clone())
}

fn decide_delete(state: &BaselineState, name: &str, reason: Option<String>) -> Result<BaselineDeleted, BaselineError> {
    if !state.exists {
        return Err(BaselineError::Unknown(name.to_owned()));
    }
    Ok(BaselineDeleted { name: name.to_owned(), reason })
}

/// Reads a baseline event back.
pub fn created_from(record: &FoldRecord) -> Result<BaselineCreated, BaselineError> {
    record.data_as().map_err(|e| BaselineError::Undecodable { position: record.position, detail: e.to_string() })
}

/// Reads a deletion back.
pub fn deleted_from(record: &FoldRecord) -> Result<BaselineDeleted, BaselineError> {
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
        use crate::decider::testing::Scenario;
        let world = Scenario::new();
        let create = |e: BaselineCreated| BaselineCommand::Create(e);
        let decision = world.when(&BaselineDecider, "auditor", &create(event("Q3 production"))).expect("accepted");
        assert!(matches!(decision.events_of(&BaselineKey("Q3 production".into())), [BaselineEvent::Created(_)]));
        let refused = world.when(&BaselineDecider, "auditor", &create(event(" x")));
        assert_eq!(refused.err(), Some(BaselineError::InvalidName(" x".into())));
        let mut deep = event("deep");
        deep.scope = BaselineScope::Service { service: CiId(uuid::Uuid::from_u128(1)), depth: 13 };
        assert_eq!(world.when(&BaselineDecider, "auditor", &create(deep)).err(), Some(BaselineError::Depth(13)));
        let delete = |name: &str| BaselineCommand::Delete { name: name.into(), reason: None };
        let unknown = world.when(&BaselineDecider, "auditor", &delete("nope"));
        assert_eq!(unknown.err(), Some(BaselineError::Unknown("nope".into())));

        world.given(&BaselineDecider, "auditor", create(event("Q3")));
        // Names compare case-insensitively: "q3" is taken too.
        let taken = world.execute(&BaselineDecider, "auditor", &create(event("q3")));
        assert!(matches!(taken, Err(crate::Error::Baseline(BaselineError::Exists(_)))), "{taken:?}");
        assert!(world.when(&BaselineDecider, "auditor", &delete("Q3")).is_ok());
        world.given(&BaselineDecider, "auditor", delete("Q3"));
        assert!(world.when(&BaselineDecider, "auditor", &create(event("Q3"))).is_ok(), "a deleted name is free");
    }

    #[test]
    fn digests_do_not_depend_on_order_and_names_share_a_stream_case_insensitively() {
        let (a, b) = (CiId(uuid::Uuid::from_u128(1)), CiId(uuid::Uuid::from_u128(2)));
        assert_eq!(members_digest(&[a, b]), members_digest(&[b, a]));
        assert_ne!(members_digest(&[a]), members_digest(&[b]));
        assert_eq!(stream("Q3 Production"), stream("q3 production"));
    }
}
