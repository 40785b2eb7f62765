//! Configuration items and their relationships (CM-1 identity, CM-2 relationships, CM-5
//! status accounting, CM-8 traceability).
//!
//! Streams: `ci-<id>` holds a CI's life (registered, updated, status changes, withdrawn, and
//! the relationships attached to and removed from it); `rel-<id>` holds a relationship's
//! life; `ci-name-<class>-<hash>` claims a (class, name) so names are unique among CIs that
//! are not withdrawn. A command reads the streams it needs, [`decide`] returns the events per
//! stream (pure), and [`service::execute`] appends them atomically, each stream at the version
//! that was read, with referenced CIs (owner, location) as conditions.
//!
//! Every command takes an optional `authorized_by` change id, recorded in its events. Unless
//! the class is declared uncontrolled, it must name a change that is implementing (or
//! failed, to back out) and whose scope covers the CI (CM-3); the append is then conditional
//! on that change's state stream (see [`crate::change`]).

pub mod model;
pub mod registry;
pub mod schema;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{EventRecord, Metadata, NewEvent, StreamId};

pub use model::{
    ChangeId, CiClass, CiId, Environment, INITIAL_STATUSES, Propagation, RELATIONSHIP_RULES, RelId, RelType, Status,
    TRANSITIONS, TemplateId, propagation, rule, transition_allowed,
};

/// Longest CI name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest version label, in bytes.
pub const MAX_VERSION_BYTES: usize = 64;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most active relationships a withdrawal removes in its one atomic append.
pub const MAX_RELATIONSHIPS_PER_WITHDRAWAL: usize = 100;

/// Why a CI command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CiError {
    #[error("{input:?} is not a {what} id (a UUID)")]
    InvalidId { what: &'static str, input: String },
    #[error("unknown {what} {input:?}; expected one of {expected}")]
    UnknownName { what: &'static str, input: String, expected: String },
    #[error("class {class} has no attribute {attribute:?}; its attributes are {known}")]
    UnknownAttribute { class: CiClass, attribute: String, known: String },
    #[error("attribute {attribute:?} of class {class} must be {expected}: {detail}")]
    InvalidAttribute { class: CiClass, attribute: String, expected: String, detail: String },
    #[error("class {class} requires attribute {attribute:?} ({expected})")]
    MissingAttribute { class: CiClass, attribute: String, expected: String },
    #[error("{count} attributes; the bound is {} (max_attributes)", schema::MAX_ATTRIBUTES)]
    TooManyAttributes { count: usize },
    #[error(
        "CI name {0:?} is not valid: 1 to {MAX_NAME_BYTES} bytes, no control characters, no leading or trailing spaces"
    )]
    InvalidName(String),
    #[error("class name {0:?} is not valid: 2 to 63 bytes of lowercase letters, digits and _, starting with a letter")]
    InvalidClassName(String),
    #[error("{0:?} is a built-in class or an already declared class")]
    ClassNameTaken(String),
    #[error("unknown class {0:?}")]
    UnknownClass(String),
    #[error(
        "attribute name {0:?} is not valid: lowercase letters, digits and _, starting with a letter, at most 63 bytes"
    )]
    InvalidAttributeName(String),
    #[error("class {class} already has an attribute {attribute:?}{}", if *builtin { " (built in)" } else { "" })]
    AttributeClash { class: CiClass, attribute: String, builtin: bool },
    #[error("invalid schema declaration: {0}")]
    InvalidDeclaration(String),
    #[error("too many distinct class names in this process")]
    TooManyClassNames,
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {bytes} bytes long; the bound is {bound}")]
    TooLong { field: &'static str, bytes: usize, bound: usize },
    #[error(
        "a {class} named {name:?} already exists (CI {holder}); names are unique per class among CIs not withdrawn"
    )]
    NameTaken { class: CiClass, name: String, holder: CiId },
    #[error("no CI with id {0}")]
    UnknownCi(CiId),
    #[error("CI {0} already exists")]
    CiExists(CiId),
    #[error("CI {0} is withdrawn; it can no longer change")]
    CiWithdrawn(CiId),
    #[error("a CI cannot be registered as {0}; start in planned, ordered, received, in_test or live")]
    InitialStatusNotAllowed(Status),
    #[error("CI {ci} cannot go from {from} to {to}; from {from} it may go to {allowed}")]
    TransitionNotAllowed { ci: CiId, from: Status, to: Status, allowed: String },
    #[error("the update changes nothing")]
    NothingToChange,
    #[error("{field} must be a CI of class {allowed}, but {ci} is a {class}")]
    WrongReferenceClass { field: &'static str, ci: CiId, class: CiClass, allowed: String },
    #[error("{field} refers to CI {ci}, which is withdrawn")]
    ReferenceWithdrawn { field: &'static str, ci: CiId },
    #[error("a {class} must have an owner (a team or person CI)")]
    OwnerRequired { class: CiClass },
    #[error("a relationship cannot join a CI to itself ({0})")]
    SelfLoop(CiId),
    #[error("{rel_type} may not join a {source_class} to a {target_class}; it joins [{sources}] to [{targets}]")]
    RelationshipNotAllowed {
        rel_type: RelType,
        source_class: CiClass,
        target_class: CiClass,
        sources: String,
        targets: String,
    },
    #[error("{source_ci} already {rel_type} {target_ci} (relationship {existing})")]
    DuplicateRelationship { rel_type: RelType, source_ci: CiId, target_ci: CiId, existing: RelId },
    #[error("relationship {0} already exists")]
    RelationshipExists(RelId),
    #[error("no relationship with id {0}")]
    UnknownRelationship(RelId),
    #[error("relationship {0} is already removed")]
    RelationshipRemoved(RelId),
    #[error(
        "CI {ci} has {count} active relationships; a withdrawal removes at most {MAX_RELATIONSHIPS_PER_WITHDRAWAL} (max_relationships_per_withdrawal); unrelate some first"
    )]
    TooManyRelationships { ci: CiId, count: usize },
    #[error(
        "{action} a {class} needs authorizedBy naming a change that is implementing and whose scope covers {subject} (CM-3); class {class} is controlled"
    )]
    Unauthorized { action: &'static str, class: CiClass, subject: String },
    #[error("no submitted change {0}; a draft cannot authorise CI edits")]
    UnknownChange(ChangeId),
    #[error("{change} is {state}; CI edits need a change that is implementing (or failed, to back out what was done)")]
    ChangeNotImplementing { change: String, state: String },
    #[error("CI {ci} is not in the scope of {change}; its scope is fixed at submission")]
    NotInScope { change: String, ci: CiId },
    #[error("{change} does not plan a {class} named {name:?}; a registration must match a planned CI of its scope")]
    NotPlanned { change: String, class: CiClass, name: String },
    #[error("CI event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}

/// Fields of a CI besides its attributes that an update may clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiField {
    Environment,
    Owner,
    Location,
    Version,
}

/// A CI as it stands at one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiSnapshot {
    pub id: CiId,
    pub class: CiClass,
    pub name: String,
    pub status: Status,
    pub environment: Option<Environment>,
    pub owner: Option<CiId>,
    pub location: Option<CiId>,
    pub version: Option<String>,
    /// Shared between versions that did not change an attribute (most versions).
    pub attributes: std::sync::Arc<BTreeMap<String, Value>>,
}

/// Which end of a relationship a CI is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    Source,
    Target,
}

// ----------------------------------------------------------------------------------------
// Events
// ----------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiRegistered {
    pub ci_id: CiId,
    pub class: CiClass,
    pub name: String,
    pub status: Status,
    pub environment: Option<Environment>,
    pub owner: Option<CiId>,
    pub location: Option<CiId>,
    pub version: Option<String>,
    pub attributes: BTreeMap<String, Value>,
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CiUpdated {
    pub ci_id: Option<CiId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<CiId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<CiId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleared: Vec<CiField>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes_set: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes_removed: Vec<String>,
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiStatusChanged {
    pub ci_id: CiId,
    pub from: Status,
    pub to: Status,
    pub reason: Option<String>,
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiLinked {
    pub ci_id: CiId,
    pub rel_id: RelId,
    pub rel_type: RelType,
    pub other: CiId,
    pub end: End,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiUnlinked {
    pub ci_id: CiId,
    pub rel_id: RelId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NameClaim {
    pub class: CiClass,
    pub name: String,
    pub ci_id: CiId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelationshipCreated {
    pub rel_id: RelId,
    pub rel_type: RelType,
    pub source: CiId,
    pub target: CiId,
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelationshipRemoved {
    pub rel_id: RelId,
    pub reason: Option<String>,
    pub authorized_by: Option<ChangeId>,
}

/// Every CI-domain event.
#[derive(Clone, Debug, PartialEq)]
pub enum CiEvent {
    Registered(CiRegistered),
    Updated(CiUpdated),
    StatusChanged(CiStatusChanged),
    Withdrawn(CiStatusChanged),
    Linked(CiLinked),
    Unlinked(CiUnlinked),
    NameClaimed(NameClaim),
    NameReleased(NameClaim),
    RelationshipCreated(RelationshipCreated),
    RelationshipRemoved(RelationshipRemoved),
}

impl CiEvent {
    pub const REGISTERED: &'static str = "ci.registered";
    pub const UPDATED: &'static str = "ci.updated";
    pub const STATUS_CHANGED: &'static str = "ci.status_changed";
    pub const WITHDRAWN: &'static str = "ci.withdrawn";
    pub const LINKED: &'static str = "ci.relationship_added";
    pub const UNLINKED: &'static str = "ci.relationship_removed";
    pub const NAME_CLAIMED: &'static str = "ci.name_claimed";
    pub const NAME_RELEASED: &'static str = "ci.name_released";
    pub const RELATIONSHIP_CREATED: &'static str = "relationship.created";
    pub const RELATIONSHIP_REMOVED: &'static str = "relationship.removed";

    /// Every type this domain writes.
    pub const TYPES: [&'static str; 10] = [
        Self::REGISTERED,
        Self::UPDATED,
        Self::STATUS_CHANGED,
        Self::WITHDRAWN,
        Self::LINKED,
        Self::UNLINKED,
        Self::NAME_CLAIMED,
        Self::NAME_RELEASED,
        Self::RELATIONSHIP_CREATED,
        Self::RELATIONSHIP_REMOVED,
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            CiEvent::Registered(_) => Self::REGISTERED,
            CiEvent::Updated(_) => Self::UPDATED,
            CiEvent::StatusChanged(_) => Self::STATUS_CHANGED,
            CiEvent::Withdrawn(_) => Self::WITHDRAWN,
            CiEvent::Linked(_) => Self::LINKED,
            CiEvent::Unlinked(_) => Self::UNLINKED,
            CiEvent::NameClaimed(_) => Self::NAME_CLAIMED,
            CiEvent::NameReleased(_) => Self::NAME_RELEASED,
            CiEvent::RelationshipCreated(_) => Self::RELATIONSHIP_CREATED,
            CiEvent::RelationshipRemoved(_) => Self::RELATIONSHIP_REMOVED,
        }
    }

    /// Whether a stored event belongs to this domain.
    pub fn is_ci_event(event_type: &str) -> bool {
        Self::TYPES.contains(&event_type)
    }

    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let data = match self {
            CiEvent::Registered(e) => serde_json::to_vec(e),
            CiEvent::Updated(e) => serde_json::to_vec(e),
            CiEvent::StatusChanged(e) | CiEvent::Withdrawn(e) => serde_json::to_vec(e),
            CiEvent::Linked(e) => serde_json::to_vec(e),
            CiEvent::Unlinked(e) => serde_json::to_vec(e),
            CiEvent::NameClaimed(e) | CiEvent::NameReleased(e) => serde_json::to_vec(e),
            CiEvent::RelationshipCreated(e) => serde_json::to_vec(e),
            CiEvent::RelationshipRemoved(e) => serde_json::to_vec(e),
        };
        NewEvent::raw(self.event_type(), data.unwrap_or_default(), metadata)
    }

    pub fn from_record(record: &EventRecord) -> Result<CiEvent, CiError> {
        let bad = |e: serde_json::Error| CiError::Undecodable { position: record.position, detail: e.to_string() };
        Ok(match record.event_type.as_str() {
            Self::REGISTERED => CiEvent::Registered(record.data_as().map_err(bad)?),
            Self::UPDATED => CiEvent::Updated(record.data_as().map_err(bad)?),
            Self::STATUS_CHANGED => CiEvent::StatusChanged(record.data_as().map_err(bad)?),
            Self::WITHDRAWN => CiEvent::Withdrawn(record.data_as().map_err(bad)?),
            Self::LINKED => CiEvent::Linked(record.data_as().map_err(bad)?),
            Self::UNLINKED => CiEvent::Unlinked(record.data_as().map_err(bad)?),
            Self::NAME_CLAIMED => CiEvent::NameClaimed(record.data_as().map_err(bad)?),
            Self::NAME_RELEASED => CiEvent::NameReleased(record.data_as().map_err(bad)?),
            Self::RELATIONSHIP_CREATED => CiEvent::RelationshipCreated(record.data_as().map_err(bad)?),
            Self::RELATIONSHIP_REMOVED => CiEvent::RelationshipRemoved(record.data_as().map_err(bad)?),
            other => {
                return Err(CiError::Undecodable {
                    position: record.position,
                    detail: format!("{other} is not a CI event"),
                });
            }
        })
    }

    /// The change that authorised this event, if any.
    pub fn authorized_by(&self) -> Option<ChangeId> {
        match self {
            CiEvent::Registered(e) => e.authorized_by,
            CiEvent::Updated(e) => e.authorized_by,
            CiEvent::StatusChanged(e) | CiEvent::Withdrawn(e) => e.authorized_by,
            CiEvent::RelationshipCreated(e) => e.authorized_by,
            CiEvent::RelationshipRemoved(e) => e.authorized_by,
            _ => None,
        }
    }
}

impl CiSnapshot {
    /// The CI after an event of its own stream. Returns whether the snapshot changed (the
    /// relationship bookkeeping events do not change it).
    pub fn evolve(&mut self, event: &CiEvent) -> bool {
        match event {
            CiEvent::Updated(update) => {
                if let Some(name) = &update.name {
                    self.name = name.clone();
                }
                if let Some(environment) = update.environment {
                    self.environment = Some(environment);
                }
                if let Some(owner) = update.owner {
                    self.owner = Some(owner);
                }
                if let Some(location) = update.location {
                    self.location = Some(location);
                }
                if let Some(version) = &update.version {
                    self.version = Some(version.clone());
                }
                for field in &update.cleared {
                    match field {
                        CiField::Environment => self.environment = None,
                        CiField::Owner => self.owner = None,
                        CiField::Location => self.location = None,
                        CiField::Version => self.version = None,
                    }
                }
                if !update.attributes_set.is_empty() || !update.attributes_removed.is_empty() {
                    let attributes = std::sync::Arc::make_mut(&mut self.attributes);
                    for (name, value) in &update.attributes_set {
                        attributes.insert(name.clone(), value.clone());
                    }
                    for name in &update.attributes_removed {
                        attributes.remove(name);
                    }
                }
                true
            }
            CiEvent::StatusChanged(change) | CiEvent::Withdrawn(change) => {
                self.status = change.to;
                true
            }
            _ => false,
        }
    }

    pub fn from_registered(event: &CiRegistered) -> CiSnapshot {
        CiSnapshot {
            id: event.ci_id,
            class: event.class,
            name: event.name.clone(),
            status: event.status,
            environment: event.environment,
            owner: event.owner,
            location: event.location,
            version: event.version.clone(),
            attributes: std::sync::Arc::new(event.attributes.clone()),
        }
    }
}

// ----------------------------------------------------------------------------------------
// Stream states
// ----------------------------------------------------------------------------------------

/// An active relationship as the CI's own stream records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub rel_type: RelType,
    pub other: CiId,
    pub end: End,
}

/// The fold of one `ci-<id>` stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CiState {
    pub version: Option<u64>,
    pub ci: Option<CiSnapshot>,
    pub links: BTreeMap<RelId, Link>,
    /// The change the CI was registered under: it covers the CI from then on (CM-3).
    pub registered_under: Option<ChangeId>,
}

impl CiState {
    pub fn apply(&mut self, event: &CiEvent, stream_version: u64) {
        match event {
            CiEvent::Registered(registered) => {
                self.ci = Some(CiSnapshot::from_registered(registered));
                self.registered_under = registered.authorized_by;
            }
            CiEvent::Linked(link) => {
                self.links.insert(link.rel_id, Link { rel_type: link.rel_type, other: link.other, end: link.end });
            }
            CiEvent::Unlinked(unlink) => {
                self.links.remove(&unlink.rel_id);
            }
            other => {
                if let Some(ci) = &mut self.ci {
                    ci.evolve(other);
                }
            }
        }
        self.version = Some(stream_version);
    }
}

/// The fold of one `rel-<id>` stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelState {
    pub version: Option<u64>,
    pub created: Option<RelationshipCreated>,
    pub removed: bool,
}

impl RelState {
    pub fn apply(&mut self, event: &CiEvent, stream_version: u64) {
        match event {
            CiEvent::RelationshipCreated(created) => self.created = Some(created.clone()),
            CiEvent::RelationshipRemoved(_) => self.removed = true,
            _ => {}
        }
        self.version = Some(stream_version);
    }
}

/// The fold of one name-claim stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NameState {
    pub version: Option<u64>,
    pub holder: Option<CiId>,
}

impl NameState {
    pub fn apply(&mut self, event: &CiEvent, stream_version: u64) {
        match event {
            CiEvent::NameClaimed(claim) => self.holder = Some(claim.ci_id),
            CiEvent::NameReleased(_) => self.holder = None,
            _ => {}
        }
        self.version = Some(stream_version);
    }
}

/// The key under which a (class, name) is claimed: names compare trimmed and case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameKey {
    pub class: CiClass,
    pub normalized: String,
}

impl NameKey {
    pub fn new(class: CiClass, name: &str) -> NameKey {
        NameKey { class, normalized: name.trim().to_lowercase() }
    }

    pub fn stream(&self) -> StreamId {
        let digest = blake3::hash(self.normalized.as_bytes());
        StreamId::new(format!("ci-name-{}-{}", self.class, &digest.to_hex()[..32])).expect("valid stream id")
    }
}

// ----------------------------------------------------------------------------------------
// Commands and the decider
// ----------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub struct Register {
    pub ci_id: CiId,
    pub class: CiClass,
    pub name: String,
    pub status: Status,
    pub environment: Option<Environment>,
    pub owner: Option<CiId>,
    pub location: Option<CiId>,
    pub version: Option<String>,
    pub attributes: BTreeMap<String, Value>,
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    pub ci_id: Option<CiId>,
    pub name: Option<String>,
    pub environment: Option<Environment>,
    pub owner: Option<CiId>,
    pub location: Option<CiId>,
    pub version: Option<String>,
    pub clear: Vec<CiField>,
    pub set_attributes: BTreeMap<String, Value>,
    pub remove_attributes: Vec<String>,
    pub authorized_by: Option<ChangeId>,
}

/// A request to change the configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum CiCommand {
    Register(Register),
    Update(CiId, Update),
    Transition { ci_id: CiId, to: Status, reason: Option<String>, authorized_by: Option<ChangeId> },
    Withdraw { ci_id: CiId, reason: Option<String>, authorized_by: Option<ChangeId> },
    Relate { rel_id: RelId, rel_type: RelType, source: CiId, target: CiId, authorized_by: Option<ChangeId> },
    Unrelate { rel_id: RelId, reason: Option<String>, authorized_by: Option<ChangeId> },
}

/// The stream states a decision reads.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The schema registry the command is validated against (its stream is a condition).
    pub schema: registry::SchemaRegistry,
    pub cis: BTreeMap<CiId, CiState>,
    pub rels: BTreeMap<RelId, RelState>,
    pub names: BTreeMap<NameKey, NameState>,
    /// The change named by `authorized_by`, as its state stream tells it.
    pub changes: BTreeMap<ChangeId, crate::change::ChangeControl>,
}

/// What else must be loaded before deciding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Needs {
    pub cis: BTreeSet<CiId>,
    pub rels: BTreeSet<RelId>,
    pub names: BTreeSet<NameKey>,
    pub changes: BTreeSet<ChangeId>,
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.cis.is_empty() && self.rels.is_empty() && self.names.is_empty() && self.changes.is_empty()
    }
}

impl CiCommand {
    /// The change the command names as its authority.
    pub fn authorized_by(&self) -> Option<ChangeId> {
        match self {
            CiCommand::Register(r) => r.authorized_by,
            CiCommand::Update(_, u) => u.authorized_by,
            CiCommand::Transition { authorized_by, .. }
            | CiCommand::Withdraw { authorized_by, .. }
            | CiCommand::Relate { authorized_by, .. }
            | CiCommand::Unrelate { authorized_by, .. } => *authorized_by,
        }
    }
}

/// The streams to load for `command`, given what is loaded: called until it returns nothing.
pub fn needs(command: &CiCommand, loaded: &Loaded) -> Needs {
    let mut needs = Needs::default();
    let mut ci = |id: CiId| {
        if !loaded.cis.contains_key(&id) {
            needs.cis.insert(id);
        }
    };
    match command {
        CiCommand::Register(r) => {
            ci(r.ci_id);
            r.owner.into_iter().chain(r.location).for_each(&mut ci);
        }
        CiCommand::Update(id, u) => {
            ci(*id);
            u.owner.into_iter().chain(u.location).for_each(&mut ci);
        }
        CiCommand::Transition { ci_id, .. } => ci(*ci_id),
        CiCommand::Withdraw { ci_id, .. } => {
            ci(*ci_id);
            if let Some(state) = loaded.cis.get(ci_id) {
                state.links.values().for_each(|l| ci(l.other));
            }
        }
        CiCommand::Relate { source, target, .. } => {
            ci(*source);
            ci(*target);
        }
        CiCommand::Unrelate { rel_id, .. } => {
            if let Some(created) = loaded.rels.get(rel_id).and_then(|r| r.created.as_ref()) {
                ci(created.source);
                ci(created.target);
            }
        }
    }
    let mut rel = |id: RelId| {
        if !loaded.rels.contains_key(&id) {
            needs.rels.insert(id);
        }
    };
    match command {
        CiCommand::Relate { rel_id, .. } | CiCommand::Unrelate { rel_id, .. } => rel(*rel_id),
        CiCommand::Withdraw { ci_id, .. } => {
            if let Some(state) = loaded.cis.get(ci_id) {
                state.links.keys().for_each(|id| rel(*id));
            }
        }
        _ => {}
    }
    let mut name = |key: NameKey| {
        if !loaded.names.contains_key(&key) {
            needs.names.insert(key);
        }
    };
    match command {
        CiCommand::Register(r) => name(NameKey::new(r.class, &r.name)),
        CiCommand::Update(id, u) => {
            if let (Some(new_name), Some(current)) = (&u.name, loaded.cis.get(id).and_then(|s| s.ci.as_ref())) {
                name(NameKey::new(current.class, new_name));
                name(NameKey::new(current.class, &current.name));
            }
        }
        CiCommand::Withdraw { ci_id, .. } => {
            if let Some(current) = loaded.cis.get(ci_id).and_then(|s| s.ci.as_ref()) {
                name(NameKey::new(current.class, &current.name));
            }
        }
        _ => {}
    }
    if let Some(change) = command.authorized_by() {
        if !loaded.changes.contains_key(&change) {
            needs.changes.insert(change);
        }
    }
    needs
}

/// What an edit is about, for the CM-3 check.
enum Subject<'a> {
    Existing(CiId),
    Planned(&'a str),
}

/// CM-3: an edit to a controlled class needs a change that is implementing (or failed, to back
/// out) and covers the CI; the decision is then conditional on the change's state stream.
fn authorize(
    loaded: &Loaded,
    decision: &mut Decision,
    action: &'static str,
    class: CiClass,
    subject: Subject<'_>,
    authorized_by: Option<ChangeId>,
) -> Result<(), CiError> {
    use crate::change::ChangeState;
    let Some(change) = authorized_by else {
        if !loaded.schema.controlled(class) {
            return Ok(());
        }
        let subject = match subject {
            Subject::Existing(id) => format!("CI {id}"),
            Subject::Planned(name) => format!("a planned {class} named {name:?}"),
        };
        return Err(CiError::Unauthorized { action, class, subject });
    };
    let control = loaded.changes.get(&change).filter(|c| c.state.is_some()).ok_or(CiError::UnknownChange(change))?;
    let label = control.number.map_or_else(|| format!("change {change}"), |n| n.to_string());
    let state = control.state.unwrap_or(ChangeState::Draft);
    if !matches!(state, ChangeState::Implementing | ChangeState::Failed) {
        return Err(CiError::ChangeNotImplementing { change: label, state: state.to_string() });
    }
    match subject {
        Subject::Existing(id) => {
            let registered_under = loaded.cis.get(&id).and_then(|s| s.registered_under);
            if !control.scope.covers_ci(id) && registered_under != Some(change) {
                return Err(CiError::NotInScope { change: label, ci: id });
            }
        }
        Subject::Planned(name) => {
            if !control.scope.plans(class, name) {
                return Err(CiError::NotPlanned { change: label, class, name: name.to_owned() });
            }
        }
    }
    decision.conditions.push(crate::change::state_stream(change));
    Ok(())
}

/// The outcome of a decision: events per stream, and streams read that must not change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub writes: Vec<(StreamId, Vec<CiEvent>)>,
    pub conditions: Vec<StreamId>,
}

impl Decision {
    fn write(&mut self, stream: StreamId, event: CiEvent) {
        match self.writes.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, events)) => events.push(event),
            None => self.writes.push((stream, vec![event])),
        }
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), CiError> {
    let ok =
        !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.trim() == name && !name.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(CiError::InvalidName(name.to_owned())) }
}

fn check_len(field: &'static str, text: Option<&str>, bound: usize) -> Result<(), CiError> {
    match text {
        Some(text) if text.len() > bound => Err(CiError::TooLong { field, bytes: text.len(), bound }),
        Some(text) if text.trim().is_empty() => Err(CiError::Empty { field }),
        _ => Ok(()),
    }
}

fn live_ci<'a>(loaded: &'a Loaded, id: CiId) -> Result<&'a CiSnapshot, CiError> {
    let ci = loaded.cis.get(&id).and_then(|s| s.ci.as_ref()).ok_or(CiError::UnknownCi(id))?;
    if ci.status == Status::Withdrawn {
        return Err(CiError::CiWithdrawn(id));
    }
    Ok(ci)
}

/// Checks a reference (owner, location) and makes its stream a condition.
fn reference(
    loaded: &Loaded,
    decision: &mut Decision,
    field: &'static str,
    id: CiId,
    allowed: &[CiClass],
) -> Result<(), CiError> {
    let target = loaded.cis.get(&id).and_then(|s| s.ci.as_ref()).ok_or(CiError::UnknownCi(id))?;
    if target.status == Status::Withdrawn {
        return Err(CiError::ReferenceWithdrawn { field, ci: id });
    }
    if !allowed.contains(&loaded.schema.like(target.class)) {
        return Err(CiError::WrongReferenceClass {
            field,
            ci: id,
            class: target.class,
            allowed: allowed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" or "),
        });
    }
    decision.conditions.push(id.stream());
    Ok(())
}

fn claim(loaded: &Loaded, decision: &mut Decision, class: CiClass, name: &str, ci_id: CiId) -> Result<(), CiError> {
    let key = NameKey::new(class, name);
    if let Some(holder) = loaded.names.get(&key).and_then(|n| n.holder) {
        if holder != ci_id {
            return Err(CiError::NameTaken { class, name: name.to_owned(), holder });
        }
    }
    decision.write(key.stream(), CiEvent::NameClaimed(NameClaim { class, name: name.to_owned(), ci_id }));
    Ok(())
}

/// Decides a CI command against the loaded stream states. Pure.
pub fn decide(command: &CiCommand, loaded: &Loaded) -> Result<Decision, CiError> {
    let mut decision = Decision::default();
    match command {
        CiCommand::Register(r) => {
            check_name(&r.name)?;
            check_len("version", r.version.as_deref(), MAX_VERSION_BYTES)?;
            if loaded.cis.get(&r.ci_id).is_some_and(|s| s.version.is_some()) {
                return Err(CiError::CiExists(r.ci_id));
            }
            if !INITIAL_STATUSES.contains(&r.status) {
                return Err(CiError::InitialStatusNotAllowed(r.status));
            }
            if !loaded.schema.knows(r.class) {
                return Err(CiError::UnknownClass(r.class.as_str().to_owned()));
            }
            schema::check_complete(&loaded.schema, r.class, &r.attributes)?;
            authorize(loaded, &mut decision, "registering", r.class, Subject::Planned(&r.name), r.authorized_by)?;
            if loaded.schema.like(r.class) == CiClass::BusinessService && r.owner.is_none() {
                return Err(CiError::OwnerRequired { class: r.class });
            }
            if let Some(owner) = r.owner {
                reference(loaded, &mut decision, "owner", owner, model::OWNER_CLASSES)?;
            }
            if let Some(location) = r.location {
                reference(loaded, &mut decision, "location", location, model::LOCATION_CLASSES)?;
            }
            claim(loaded, &mut decision, r.class, &r.name, r.ci_id)?;
            decision.write(
                r.ci_id.stream(),
                CiEvent::Registered(CiRegistered {
                    ci_id: r.ci_id,
                    class: r.class,
                    name: r.name.clone(),
                    status: r.status,
                    environment: r.environment,
                    owner: r.owner,
                    location: r.location,
                    version: r.version.clone(),
                    attributes: r.attributes.clone(),
                    authorized_by: r.authorized_by,
                }),
            );
        }
        CiCommand::Update(id, u) => {
            let current = live_ci(loaded, *id)?;
            authorize(loaded, &mut decision, "updating", current.class, Subject::Existing(*id), u.authorized_by)?;
            let mut event = CiUpdated { ci_id: Some(*id), authorized_by: u.authorized_by, ..CiUpdated::default() };
            if let Some(name) = u.name.as_ref().filter(|n| **n != current.name) {
                check_name(name)?;
                let renamed_only_in_case =
                    NameKey::new(current.class, name) == NameKey::new(current.class, &current.name);
                if !renamed_only_in_case {
                    claim(loaded, &mut decision, current.class, name, *id)?;
                    let old = NameKey::new(current.class, &current.name);
                    decision.write(
                        old.stream(),
                        CiEvent::NameReleased(NameClaim {
                            class: current.class,
                            name: current.name.clone(),
                            ci_id: *id,
                        }),
                    );
                }
                event.name = Some(name.clone());
            }
            if let Some(environment) = u.environment.filter(|e| current.environment != Some(*e)) {
                event.environment = Some(environment);
            }
            if let Some(owner) = u.owner.filter(|o| current.owner != Some(*o)) {
                reference(loaded, &mut decision, "owner", owner, model::OWNER_CLASSES)?;
                event.owner = Some(owner);
            }
            if let Some(location) = u.location.filter(|l| current.location != Some(*l)) {
                reference(loaded, &mut decision, "location", location, model::LOCATION_CLASSES)?;
                event.location = Some(location);
            }
            check_len("version", u.version.as_deref(), MAX_VERSION_BYTES)?;
            if let Some(version) = u.version.as_ref().filter(|v| current.version.as_ref() != Some(*v)) {
                event.version = Some(version.clone());
            }
            for field in &u.clear {
                let present = match field {
                    CiField::Environment => current.environment.is_some(),
                    CiField::Owner => current.owner.is_some(),
                    CiField::Location => current.location.is_some(),
                    CiField::Version => current.version.is_some(),
                };
                if *field == CiField::Owner && loaded.schema.like(current.class) == CiClass::BusinessService {
                    return Err(CiError::OwnerRequired { class: current.class });
                }
                if present && !event.cleared.contains(field) {
                    event.cleared.push(*field);
                }
            }
            for (name, value) in &u.set_attributes {
                schema::check_value(&loaded.schema, current.class, name, value)?;
                if current.attributes.get(name) != Some(value) {
                    event.attributes_set.insert(name.clone(), value.clone());
                }
            }
            for name in &u.remove_attributes {
                match loaded.schema.attribute(current.class, name) {
                    Some(attribute) if attribute.required() => {
                        return Err(CiError::MissingAttribute {
                            class: current.class,
                            attribute: name.clone(),
                            expected: "a value (the attribute is required)".into(),
                        });
                    }
                    Some(_) => {}
                    None => schema::check_value(&loaded.schema, current.class, name, &Value::Null)?,
                }
                if current.attributes.contains_key(name) && !event.attributes_removed.contains(name) {
                    event.attributes_removed.push(name.clone());
                }
            }
            let mut after = current.clone();
            after.evolve(&CiEvent::Updated(event.clone()));
            if after.attributes.len() > schema::MAX_ATTRIBUTES {
                return Err(CiError::TooManyAttributes { count: after.attributes.len() });
            }
            if after == *current {
                return Err(CiError::NothingToChange);
            }
            decision.write(id.stream(), CiEvent::Updated(event));
        }
        CiCommand::Transition { ci_id, to, reason, authorized_by } => {
            check_len("reason", reason.as_deref(), MAX_REASON_BYTES)?;
            let current = live_ci(loaded, *ci_id)?;
            if *to == Status::Withdrawn {
                return decide(
                    &CiCommand::Withdraw { ci_id: *ci_id, reason: reason.clone(), authorized_by: *authorized_by },
                    loaded,
                );
            }
            authorize(
                loaded,
                &mut decision,
                "transitioning",
                current.class,
                Subject::Existing(*ci_id),
                *authorized_by,
            )?;
            if !transition_allowed(current.status, *to) {
                let allowed = TRANSITIONS
                    .iter()
                    .find(|(from, _)| *from == current.status)
                    .map(|(_, to)| to.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                return Err(CiError::TransitionNotAllowed { ci: *ci_id, from: current.status, to: *to, allowed });
            }
            decision.write(
                ci_id.stream(),
                CiEvent::StatusChanged(CiStatusChanged {
                    ci_id: *ci_id,
                    from: current.status,
                    to: *to,
                    reason: reason.clone(),
                    authorized_by: *authorized_by,
                }),
            );
        }
        CiCommand::Withdraw { ci_id, reason, authorized_by } => {
            check_len("reason", reason.as_deref(), MAX_REASON_BYTES)?;
            let current = live_ci(loaded, *ci_id)?;
            authorize(loaded, &mut decision, "withdrawing", current.class, Subject::Existing(*ci_id), *authorized_by)?;
            let state = &loaded.cis[ci_id];
            if state.links.len() > MAX_RELATIONSHIPS_PER_WITHDRAWAL {
                return Err(CiError::TooManyRelationships { ci: *ci_id, count: state.links.len() });
            }
            let because = Some(format!("CI {ci_id} was withdrawn"));
            for (rel_id, link) in &state.links {
                decision.write(
                    rel_id.stream(),
                    CiEvent::RelationshipRemoved(RelationshipRemoved {
                        rel_id: *rel_id,
                        reason: because.clone(),
                        authorized_by: *authorized_by,
                    }),
                );
                decision
                    .write(link.other.stream(), CiEvent::Unlinked(CiUnlinked { ci_id: link.other, rel_id: *rel_id }));
                decision.write(ci_id.stream(), CiEvent::Unlinked(CiUnlinked { ci_id: *ci_id, rel_id: *rel_id }));
            }
            let key = NameKey::new(current.class, &current.name);
            if loaded.names.get(&key).and_then(|n| n.holder) == Some(*ci_id) {
                decision.write(
                    key.stream(),
                    CiEvent::NameReleased(NameClaim {
                        class: current.class,
                        name: current.name.clone(),
                        ci_id: *ci_id,
                    }),
                );
            }
            decision.write(
                ci_id.stream(),
                CiEvent::Withdrawn(CiStatusChanged {
                    ci_id: *ci_id,
                    from: current.status,
                    to: Status::Withdrawn,
                    reason: reason.clone(),
                    authorized_by: *authorized_by,
                }),
            );
        }
        CiCommand::Relate { rel_id, rel_type, source, target, authorized_by } => {
            if source == target {
                return Err(CiError::SelfLoop(*source));
            }
            if loaded.rels.get(rel_id).is_some_and(|r| r.version.is_some()) {
                return Err(CiError::RelationshipExists(*rel_id));
            }
            let source_ci = live_ci(loaded, *source)?;
            let target_ci = live_ci(loaded, *target)?;
            authorize(loaded, &mut decision, "relating", source_ci.class, Subject::Existing(*source), *authorized_by)?;
            let rule = rule(*rel_type);
            let (source_like, target_like) = (loaded.schema.like(source_ci.class), loaded.schema.like(target_ci.class));
            if !rule.sources.contains(&source_like) || !rule.targets.contains(&target_like) {
                let names = |classes: &[CiClass]| classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
                return Err(CiError::RelationshipNotAllowed {
                    rel_type: *rel_type,
                    source_class: source_ci.class,
                    target_class: target_ci.class,
                    sources: names(rule.sources),
                    targets: names(rule.targets),
                });
            }
            let duplicate = loaded.cis[source]
                .links
                .iter()
                .find(|(_, l)| l.end == End::Source && l.rel_type == *rel_type && l.other == *target);
            if let Some((existing, _)) = duplicate {
                return Err(CiError::DuplicateRelationship {
                    rel_type: *rel_type,
                    source_ci: *source,
                    target_ci: *target,
                    existing: *existing,
                });
            }
            decision.write(
                rel_id.stream(),
                CiEvent::RelationshipCreated(RelationshipCreated {
                    rel_id: *rel_id,
                    rel_type: *rel_type,
                    source: *source,
                    target: *target,
                    authorized_by: *authorized_by,
                }),
            );
            decision.write(
                source.stream(),
                CiEvent::Linked(CiLinked {
                    ci_id: *source,
                    rel_id: *rel_id,
                    rel_type: *rel_type,
                    other: *target,
                    end: End::Source,
                }),
            );
            decision.write(
                target.stream(),
                CiEvent::Linked(CiLinked {
                    ci_id: *target,
                    rel_id: *rel_id,
                    rel_type: *rel_type,
                    other: *source,
                    end: End::Target,
                }),
            );
        }
        CiCommand::Unrelate { rel_id, reason, authorized_by } => {
            check_len("reason", reason.as_deref(), MAX_REASON_BYTES)?;
            let rel = loaded.rels.get(rel_id).ok_or(CiError::UnknownRelationship(*rel_id))?;
            let created = rel.created.as_ref().ok_or(CiError::UnknownRelationship(*rel_id))?;
            if rel.removed {
                return Err(CiError::RelationshipRemoved(*rel_id));
            }
            let source_class = loaded.cis.get(&created.source).and_then(|s| s.ci.as_ref()).map(|c| c.class);
            let source_class = source_class.ok_or(CiError::UnknownCi(created.source))?;
            authorize(
                loaded,
                &mut decision,
                "unrelating",
                source_class,
                Subject::Existing(created.source),
                *authorized_by,
            )?;
            decision.write(
                rel_id.stream(),
                CiEvent::RelationshipRemoved(RelationshipRemoved {
                    rel_id: *rel_id,
                    reason: reason.clone(),
                    authorized_by: *authorized_by,
                }),
            );
            for end in [created.source, created.target] {
                decision.write(end.stream(), CiEvent::Unlinked(CiUnlinked { ci_id: end, rel_id: *rel_id }));
            }
        }
    }
    Ok(decision)
}

#[cfg(test)]
mod tests;
