//! Configuration items and their relationships (CM-1 identity, CM-2 relationships, CM-5
//! status accounting, CM-8 traceability).
//!
//! Streams: `ci-<id>` holds a CI's life (registered, updated, status changes, withdrawn, and
//! the relationships attached to and removed from it); `rel-<id>` holds a relationship's
//! life; `ci-name-<class>-<hash>` claims a (class, name) so names are unique among CIs that
//! are not withdrawn. A command reads the keys it needs ([`decide::CiKey`]), the decider
//! ([`decide::CiDecider`]) returns the events per stream (pure), and the one executor
//! ([`crate::decider::execute`]) appends them atomically, each stream at the version that was
//! read, with referenced CIs (owner, location) and the authorising change as conditions.
//!
//! - [`decide`]: commands, what they read, and the decider;
//! - [`state`]: the folds of the CI, relationship and name-claim streams;
//! - [`schema`]: built-in and declared attributes, the schema registry and its decider.
//!
//! Architecture invariant: this module does not know the change domain. What a CI edit checks
//! about a change (CM-3) is the neutral [`crate::control`] contract.

pub mod attributes;
pub mod decide;
pub mod schema;
pub mod state;

use serde::{Deserialize, Serialize};

use crate::decider::DomainEvent;
use crate::event::{FoldRecord, Metadata, NewEvent};
pub use crate::ids::{ChangeId, CiId, RelId, TemplateId};
pub use crate::model::{
    CiClass, Environment, INITIAL_STATUSES, LOCATION_CLASSES, ModelError, OWNER_CLASSES, Propagation,
    RELATIONSHIP_RULES, RelType, STATUS_TRANSITIONS, Status, propagation, rule, transition_allowed,
};
pub use attributes::AttributeMap;
pub use decide::{CiCommand, CiDecider, CiDecision, CiKey, CiRead, Register, Update, decide};
pub use state::{CiState, Link, NameKey, NameState, RelState};

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
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum CiError {
    #[error(transparent)]
    /// Passed on as it is.
    Model(#[from] ModelError),
    #[error("{} problems in the input: {}", .problems.len(), crate::problems::summary(.problems))]
    /// Several input problems, all reported at once (each names its field: [`CiError::field`]).
    Invalid { problems: Vec<CiError> },
    #[error("class {class} has no attribute {attribute:?}; its attributes are {known}")]
    /// Class … has no attribute …; its attributes are ….
    UnknownAttribute { class: CiClass, attribute: String, known: String },
    #[error("attribute {attribute:?} of class {class} must be {expected}: {detail}")]
    /// Attribute … of class … must be …: ….
    InvalidAttribute { class: CiClass, attribute: String, expected: String, detail: String },
    #[error("class {class} requires attribute {attribute:?} ({expected})")]
    /// Class … requires attribute … (…).
    MissingAttribute { class: CiClass, attribute: String, expected: String },
    #[error("{count} attributes; the bound is {} (max_attributes)", schema::MAX_ATTRIBUTES)]
    /// … attributes; the bound is … (max_attributes).
    TooManyAttributes { count: usize },
    #[error(
        "CI name {0:?} is not valid: 1 to {MAX_NAME_BYTES} bytes, no control characters, no leading or trailing spaces"
    )]
    /// The [`String`] event.
    InvalidName(String),
    #[error("unknown class {0:?}")]
    /// Unknown class ….
    UnknownClass(String),
    #[error(
        "attribute name {0:?} is not valid: lowercase letters, digits and _, starting with a letter, at most 63 bytes"
    )]
    /// The [`String`] event.
    InvalidAttributeName(String),
    #[error("class {class} already has an attribute {attribute:?}{}", if *builtin { " (built in)" } else { "" })]
    /// Class … already has an attribute …….
    AttributeClash { class: CiClass, attribute: String, builtin: bool },
    #[error("invalid schema declaration: {0}")]
    /// Invalid schema declaration: ….
    InvalidDeclaration(String),
    #[error("{field} must not be empty")]
    /// … must not be empty.
    Empty { field: &'static str },
    #[error("{field} is {bytes} bytes long; the bound is {bound}")]
    /// … is … bytes long; the bound is ….
    TooLong { field: &'static str, bytes: usize, bound: usize },
    #[error(
        "a {class} named {name:?} already exists (CI {holder}); names are unique per class among CIs not withdrawn"
    )]
    NameTaken { class: CiClass, name: String, holder: CiId },
    #[error("no CI with id {0}")]
    /// No CI with id ….
    UnknownCi(CiId),
    #[error("CI {0} already exists")]
    /// CI … already exists.
    CiExists(CiId),
    #[error("CI {0} is withdrawn; it can no longer change")]
    /// CI … is withdrawn; it can no longer change.
    CiWithdrawn(CiId),
    #[error("a CI cannot be registered as {0}; start in planned, ordered, received, in_test or live")]
    /// A CI cannot be registered as …; start in planned, ordered, received, in_test or live.
    InitialStatusNotAllowed(Status),
    #[error("CI {ci} cannot go from {from} to {to}; from {from} it may go to {allowed}")]
    /// CI … cannot go from … to …; from … it may go to ….
    TransitionNotAllowed { ci: CiId, from: Status, to: Status, allowed: String },
    #[error("the update changes nothing")]
    /// The update changes nothing.
    NothingToChange,
    #[error("{field} must be a CI of class {allowed}, but {ci} is a {class}")]
    /// … must be a CI of class …, but … is a ….
    WrongReferenceClass { field: &'static str, ci: CiId, class: CiClass, allowed: String },
    #[error("{field} refers to CI {ci}, which is withdrawn")]
    /// … refers to CI …, which is withdrawn.
    ReferenceWithdrawn { field: &'static str, ci: CiId },
    #[error("a {class} must have an owner (a team or person CI)")]
    /// A … must have an owner (a team or person CI).
    OwnerRequired { class: CiClass },
    #[error("a relationship cannot join a CI to itself ({0})")]
    /// A relationship cannot join a CI to itself (…).
    SelfLoop(CiId),
    #[error("{rel_type} may not join a {source_class} to a {target_class}; it joins [{sources}] to [{targets}]")]
    /// … may not join a … to a …; it joins […] to […].
    RelationshipNotAllowed {
        /// The relationship type.
        rel_type: RelType,
        source_class: CiClass,
        target_class: CiClass,
        sources: String,
        targets: String,
    },
    #[error("{source_ci} already {rel_type} {target_ci} (relationship {existing})")]
    /// … already … … (relationship …).
    DuplicateRelationship { rel_type: RelType, source_ci: CiId, target_ci: CiId, existing: RelId },
    #[error("relationship {0} already exists")]
    /// Relationship … already exists.
    RelationshipExists(RelId),
    #[error("no relationship with id {0}")]
    /// No relationship with id ….
    UnknownRelationship(RelId),
    #[error("relationship {0} is already removed")]
    /// Relationship … is already removed.
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
    /// No submitted change …; a draft cannot authorise CI edits.
    UnknownChange(ChangeId),
    #[error("{change} is {state}; CI edits need a change that is implementing (or failed, to back out what was done)")]
    /// … is …; CI edits need a change that is implementing (or failed, to back out what was done).
    ChangeNotImplementing { change: String, state: String },
    #[error("CI {ci} is not in the scope of {change}; its scope is fixed at submission")]
    /// CI … is not in the scope of …; its scope is fixed at submission.
    NotInScope { change: String, ci: CiId },
    #[error("{change} does not plan a {class} named {name:?}; a registration must match a planned CI of its scope")]
    /// … does not plan a … named …; a registration must match a planned CI of its scope.
    NotPlanned { change: String, class: CiClass, name: String },
    #[error("CI event at position {position} cannot be read: {detail}")]
    /// CI event at position … cannot be read: ….
    Undecodable { position: u64, detail: String },
}

impl CiError {
    /// The input field an input problem is about (`attributes.<name>` for an attribute), for
    /// clients that mark the field; `None` for refusals about state or authority.
    pub fn field(&self) -> Option<String> {
        match self {
            CiError::UnknownAttribute { attribute, .. }
            | CiError::InvalidAttribute { attribute, .. }
            | CiError::MissingAttribute { attribute, .. } => Some(format!("attributes.{attribute}")),
            CiError::TooManyAttributes { .. } => Some("attributes".into()),
            CiError::InvalidName(_) => Some("name".into()),
            CiError::UnknownClass(_) => Some("class".into()),
            CiError::InitialStatusNotAllowed(_) => Some("status".into()),
            CiError::OwnerRequired { .. } => Some("owner".into()),
            CiError::Empty { field } | CiError::TooLong { field, .. } => Some((*field).to_owned()),
            CiError::WrongReferenceClass { field, .. } | CiError::ReferenceWithdrawn { field, .. } => {
                Some((*field).to_owned())
            }
            _ => None,
        }
    }
}

/// Fields of a CI besides its attributes that an update may clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiField {
    /// Where it runs.
    Environment,
    /// Its owner.
    Owner,
    /// Its location.
    Location,
    /// Its version label.
    Version,
}

/// A CI as it stands at one version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CiSnapshot {
    /// Its id.
    pub id: CiId,
    /// The class.
    pub class: CiClass,
    /// The name (inline up to 24 bytes, like its version label: every update copies the
    /// snapshot, and a name or label on the heap was an allocation per version).
    pub name: crate::Text,
    /// The life-cycle status.
    pub status: Status,
    /// Where it runs.
    pub environment: Option<Environment>,
    /// The team or person owning it.
    pub owner: Option<CiId>,
    /// Where it is.
    pub location: Option<CiId>,
    /// Its version label.
    pub version: Option<crate::Text>,
    /// Shared between versions that did not change an attribute (most versions).
    pub attributes: std::sync::Arc<AttributeMap>,
}

/// Which end of a relationship a CI is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The relationship goes from this CI.
    Source,
    /// The relationship goes to this CI.
    Target,
}

// ----------------------------------------------------------------------------------------
// Events
// ----------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A CI was registered.
pub struct CiRegistered {
    /// The CI.
    pub ci_id: CiId,
    /// The class.
    pub class: CiClass,
    /// The name.
    pub name: String,
    /// The life-cycle status.
    pub status: Status,
    /// Where it runs.
    pub environment: Option<Environment>,
    /// The team or person owning it.
    pub owner: Option<CiId>,
    /// Where it is.
    pub location: Option<CiId>,
    /// Its version label.
    pub version: Option<String>,
    /// Its attributes (sorted by name like a `BTreeMap`, in one vector sized to them, which
    /// the CI's first snapshot takes as it is).
    pub attributes: AttributeMap,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
/// A CI's fields changed: only what differs is recorded.
pub struct CiUpdated {
    /// The CI.
    pub ci_id: Option<CiId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The name.
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where it runs.
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The team or person owning it.
    pub owner: Option<CiId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Where it is.
    pub location: Option<CiId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Its version label (inline up to 24 bytes, as in the snapshot it goes to).
    pub version: Option<crate::Text>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Fields cleared.
    pub cleared: Vec<CiField>,
    #[serde(default, skip_serializing_if = "AttributeMap::is_empty")]
    /// Attributes set, with their new values (sorted by name like a `BTreeMap`, in one vector
    /// sized to them: a rebuild decodes hundreds of thousands of these, and a `BTreeMap`
    /// allocates a node of eleven slots for one attribute).
    pub attributes_set: AttributeMap,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Attributes removed.
    pub attributes_removed: Vec<String>,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
    /// Deployment tooling changed the CI without a change: `authorized_by` names the
    /// retrospective emergency change opened for it (CM-3, CH-8).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthorised: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A CI moved to another status (or was withdrawn).
pub struct CiStatusChanged {
    /// The CI.
    pub ci_id: CiId,
    /// The status it came from.
    pub from: Status,
    /// The status it went to.
    pub to: Status,
    /// Why.
    pub reason: Option<String>,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A relationship was attached to a CI (its own stream's record of it).
pub struct CiLinked {
    /// The CI.
    pub ci_id: CiId,
    /// The relationship.
    pub rel_id: RelId,
    /// The relationship type.
    pub rel_type: RelType,
    /// The other change.
    pub other: CiId,
    /// Where it ends.
    pub end: End,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A relationship was detached from a CI.
pub struct CiUnlinked {
    /// The CI.
    pub ci_id: CiId,
    /// The relationship.
    pub rel_id: RelId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A (class, name) was claimed or released.
pub struct NameClaim {
    /// The class.
    pub class: CiClass,
    /// The name.
    pub name: String,
    /// The CI.
    pub ci_id: CiId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A relationship was created.
pub struct RelationshipCreated {
    /// The relationship.
    pub rel_id: RelId,
    /// The relationship type.
    pub rel_type: RelType,
    /// The CI it goes from.
    pub source: CiId,
    /// The CI it goes to.
    pub target: CiId,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A relationship was removed.
pub struct RelationshipRemoved {
    /// The relationship.
    pub rel_id: RelId,
    /// Why.
    pub reason: Option<String>,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
}

/// Every CI-domain event.
#[derive(Clone, Debug, PartialEq)]
pub enum CiEvent {
    /// The [`CiRegistered`] event. Boxed, as is an update: they are the two large events
    /// (168 and 192 bytes) and one in five of a log, and the enum takes the size of its
    /// largest; boxed, a rebuild moves 72 bytes per decoded event between cores, not 192.
    Registered(Box<CiRegistered>),
    /// The [`CiUpdated`] event.
    Updated(Box<CiUpdated>),
    /// The [`CiStatusChanged`] event.
    StatusChanged(CiStatusChanged),
    /// The [`CiStatusChanged`] event.
    Withdrawn(CiStatusChanged),
    /// The [`CiLinked`] event.
    Linked(CiLinked),
    /// The [`CiUnlinked`] event.
    Unlinked(CiUnlinked),
    /// The [`NameClaim`] event.
    NameClaimed(NameClaim),
    /// The [`NameClaim`] event.
    NameReleased(NameClaim),
    /// The [`RelationshipCreated`] event.
    RelationshipCreated(RelationshipCreated),
    /// The [`RelationshipRemoved`] event.
    RelationshipRemoved(RelationshipRemoved),
}

impl CiEvent {
    /// The type of the event `ci.registered`.
    pub const REGISTERED: &'static str = "ci.registered";
    /// The type of the event `ci.updated`.
    pub const UPDATED: &'static str = "ci.updated";
    /// The type of the event `ci.status_changed`.
    pub const STATUS_CHANGED: &'static str = "ci.status_changed";
    /// The type of the event `ci.withdrawn`.
    pub const WITHDRAWN: &'static str = "ci.withdrawn";
    /// The type of the event `ci.relationship_added`.
    pub const LINKED: &'static str = "ci.relationship_added";
    /// The type of the event `ci.relationship_removed`.
    pub const UNLINKED: &'static str = "ci.relationship_removed";
    /// The type of the event `ci.name_claimed`.
    pub const NAME_CLAIMED: &'static str = "ci.name_claimed";
    /// The type of the event `ci.name_released`.
    pub const NAME_RELEASED: &'static str = "ci.name_released";
    /// The type of the event `relationship.created`.
    pub const RELATIONSHIP_CREATED: &'static str = "relationship.created";
    /// The type of the event `relationship.removed`.
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

    /// The event's type.
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

    /// The event as it is appended.
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

    /// Reads a stored event of this kind; fails if it is another kind or cannot be decoded.
    pub fn from_record(record: &FoldRecord) -> Result<CiEvent, CiError> {
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
                    self.name = name.as_str().into();
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
                    self.version = Some(version.as_str().into());
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
                    let attributes = self.attributes.updated(&update.attributes_set, &update.attributes_removed);
                    self.attributes = std::sync::Arc::new(attributes);
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

    /// The CI a registration makes.
    pub fn from_registered(event: &CiRegistered) -> CiSnapshot {
        CiSnapshot::from(event.clone())
    }
}

impl From<CiRegistered> for CiSnapshot {
    /// The CI a registration makes, keeping the registration's attributes (no copy).
    fn from(event: CiRegistered) -> CiSnapshot {
        CiSnapshot {
            id: event.ci_id,
            class: event.class,
            name: event.name.as_str().into(),
            status: event.status,
            environment: event.environment,
            owner: event.owner,
            location: event.location,
            version: event.version.as_deref().map(crate::Text::from),
            attributes: std::sync::Arc::new(event.attributes),
        }
    }
}

// ----------------------------------------------------------------------------------------
// Stream states
// ----------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;

impl DomainEvent for CiEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        CiEvent::to_new_event(self, metadata)
    }
}
