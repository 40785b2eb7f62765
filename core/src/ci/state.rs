//! The folds of the CI domain's streams: a CI (`ci-<id>`), a relationship (`rel-<id>`), and
//! a name claim (`ci-name-<class>-<hash>`).

use std::collections::BTreeMap;

use super::{CiError, CiEvent, CiSnapshot, End, RelationshipCreated};
use crate::control::PlannedCi;
use crate::event::{EventRecord, StreamId};
use crate::ids::{ChangeId, CiId, RelId};
use crate::model::{CiClass, RelType, normalized_name};

/// An active relationship as the CI's own stream records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The relationship type.
    pub rel_type: RelType,
    /// The other change.
    pub other: CiId,
    /// Where it ends.
    pub end: End,
}

/// The fold of one `ci-<id>` stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CiState {
    /// The stream version folded.
    pub version: Option<u64>,
    /// The CI as it stands (`None`: never registered).
    pub ci: Option<CiSnapshot>,
    /// Its active relationships.
    pub links: BTreeMap<RelId, Link>,
    /// The change the CI was registered under: it covers the CI from then on (CM-3).
    pub registered_under: Option<ChangeId>,
    /// The position of the last event that changed the CI itself (not its relationships):
    /// where its current version starts in the temporal graph.
    pub changed_at: Option<u64>,
}

impl CiState {
    /// Folds one event of the stream, stored at `position` with `stream_version`.
    pub fn apply(&mut self, event: &CiEvent, stream_version: u64, position: u64) {
        debug_assert!(self.version.is_none_or(|v| v < stream_version), "a fold only moves forward");
        match event {
            CiEvent::Registered(registered) => {
                self.ci = Some(CiSnapshot::from_registered(registered));
                self.registered_under = registered.authorized_by;
                self.changed_at = Some(position);
            }
            CiEvent::Linked(link) => {
                self.links.insert(link.rel_id, Link { rel_type: link.rel_type, other: link.other, end: link.end });
            }
            CiEvent::Unlinked(unlink) => {
                self.links.remove(&unlink.rel_id);
            }
            other => {
                if self.ci.as_mut().is_some_and(|ci| ci.evolve(other)) {
                    self.changed_at = Some(position);
                }
            }
        }
        self.version = Some(stream_version);
    }

    /// Folds one stored event.
    pub fn apply_record(&mut self, record: &EventRecord) -> Result<(), CiError> {
        self.apply(&CiEvent::from_record(record)?, record.stream_version, record.position);
        Ok(())
    }
}

/// The fold of one `rel-<id>` stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelState {
    /// The stream version folded.
    pub version: Option<u64>,
    /// When it was created.
    pub created: Option<RelationshipCreated>,
    /// Whether it was removed.
    pub removed: bool,
}

impl RelState {
    /// Folds one event of the stream.
    pub fn apply(&mut self, event: &CiEvent, stream_version: u64) {
        match event {
            CiEvent::RelationshipCreated(created) => self.created = Some(created.clone()),
            CiEvent::RelationshipRemoved(_) => self.removed = true,
            _ => {}
        }
        debug_assert!(self.version.is_none_or(|v| v < stream_version), "a version only grows");
        self.version = Some(stream_version);
    }
}

/// The fold of one name-claim stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NameState {
    /// The stream version folded.
    pub version: Option<u64>,
    /// The CI holding the name, if any.
    pub holder: Option<CiId>,
}

impl NameState {
    /// Folds one event of the stream.
    pub fn apply(&mut self, event: &CiEvent, stream_version: u64) {
        match event {
            CiEvent::NameClaimed(claim) => self.holder = Some(claim.ci_id),
            CiEvent::NameReleased(_) => self.holder = None,
            _ => {}
        }
        debug_assert!(self.version.is_none_or(|v| v < stream_version), "a version only grows");
        self.version = Some(stream_version);
    }
}

/// The key under which a (class, name) is claimed: names compare trimmed and case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameKey {
    /// The class.
    pub class: CiClass,
    /// The name, trimmed and lowercase.
    pub normalized: String,
}

impl NameKey {
    /// The key of `name` in `class`.
    pub fn new(class: CiClass, name: &str) -> NameKey {
        NameKey { class, normalized: normalized_name(name) }
    }

    /// The key of a CI a change plans.
    pub fn planned(planned: &PlannedCi) -> NameKey {
        NameKey::new(planned.class, &planned.name)
    }

    /// The stream that claims it.
    pub fn stream(&self) -> StreamId {
        let digest = blake3::hash(self.normalized.as_bytes());
        StreamId::new(format!("ci-name-{}-{}", self.class, &digest.to_hex()[..32])).expect("valid stream id")
    }
}
