//! The CM-3 contract between changes and CI edits: what a CI edit checks about the change it
//! names, and the stream it reads to check it.
//!
//! A change's life-cycle transitions live in `change-<id>-state` ([`state_stream`]); its
//! submission event carries the scope, frozen from then on. A CI edit reads that stream alone
//! ([`ChangeControl`]) and is appended on the condition that it has not moved, so a comment or
//! an approval on the change never makes an in-flight CI edit fail.
//!
//! Architecture invariant: this module is neutral ground. The change domain writes the state
//! stream and the CI domain reads it; neither imports the other. The event type names and the
//! fields read here are the contract: change them only together with the change domain's events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::{EventRecord, StreamId};
use crate::ids::{ChangeId, CiId};
use crate::model::{CiClass, ModelError, lenient, named_enum, normalized_name};

/// Event type of a submission: number assigned, scope frozen.
pub const SUBMITTED: &str = "change.submitted";
/// Event type of an emergency change recorded after the work was done.
pub const RETROSPECTIVE_RECORDED: &str = "change.retrospective_recorded";
/// Event type of every other life-cycle transition.
pub const TRANSITIONED: &str = "change.transitioned";

/// The stream of a change's life-cycle transitions.
pub fn state_stream(id: ChangeId) -> StreamId {
    StreamId::new(format!("change-{}-state", id.0)).expect("valid stream id")
}

/// A change's human id, `CHG-000001`: assigned at submission, gapless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangeNumber(pub u64);

/// Most digits a change number may have.
const MAX_CHANGE_NUMBER_DIGITS: usize = 18;

impl fmt::Display for ChangeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CHG-{:06}", self.0)
    }
}

impl FromStr for ChangeNumber {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ModelError::InvalidChangeNumber(s.to_owned());
        let trimmed = s.trim();
        let digits = trimmed.get(..4).filter(|p| p.eq_ignore_ascii_case("CHG-")).map(|_| &trimmed[4..]);
        match digits {
            Some(d)
                if !d.is_empty() && d.len() <= MAX_CHANGE_NUMBER_DIGITS && d.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let number: u64 = d.parse().map_err(|_| invalid())?;
                if number == 0 { Err(invalid()) } else { Ok(ChangeNumber(number)) }
            }
            _ => Err(invalid()),
        }
    }
}

named_enum!(
    /// Where a change is in its life cycle.
    ChangeState, "change state", lenient {
        /// Being written by its requester.
        Draft => "draft",
        /// Numbered, scope frozen, waiting for assessment.
        Submitted => "submitted",
        /// Risk assessed and the policy decided; waiting for approvals.
        Assessed => "assessed",
        /// Every required approval given.
        Approved => "approved",
        /// Refused by an approver.
        Rejected => "rejected",
        /// Placed in its window.
        Scheduled => "scheduled",
        /// Being carried out: CI edits may name it.
        Implementing => "implementing",
        /// Carried out.
        Implemented => "implemented",
        /// Went wrong: CI edits may still name it, to back out.
        Failed => "failed",
        /// Undone after a failure.
        BackedOut => "backed_out",
        /// Signed off (CH-6).
        Verified => "verified",
        /// Reviewed after implementation (CH-7).
        Reviewed => "reviewed",
        /// Done.
        Closed => "closed",
        /// Withdrawn before implementation.
        Cancelled => "cancelled",
    }
);

impl ChangeState {
    /// States a change never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, ChangeState::Rejected | ChangeState::Closed | ChangeState::Cancelled)
    }

    /// Whether CI edits may name a change in this state (CM-3): implementing, or failed to
    /// back out what was done.
    pub fn authorises_edits(self) -> bool {
        matches!(self, ChangeState::Implementing | ChangeState::Failed)
    }
}

/// A CI the change will register: a later `register` must match its class and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlannedCi {
    /// The class it will have.
    pub class: CiClass,
    /// The name it will have (compared trimmed and case-insensitively).
    pub name: String,
}

/// What a change touches (CH-1): existing CIs and planned ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Existing CIs.
    #[serde(default)]
    pub cis: Vec<CiId>,
    /// CIs it will register.
    #[serde(default)]
    pub planned: Vec<PlannedCi>,
}

impl Scope {
    /// How many CIs and planned CIs it names.
    pub fn len(&self) -> usize {
        self.cis.len() + self.planned.len()
    }

    /// Whether it names nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it names the existing CI `id`.
    pub fn covers_ci(&self, id: CiId) -> bool {
        self.cis.contains(&id)
    }

    /// Whether it plans a CI of `class` named `name`.
    pub fn plans(&self, class: CiClass, name: &str) -> bool {
        let wanted = normalized_name(name);
        self.planned.iter().any(|p| p.class == class && normalized_name(&p.name) == wanted)
    }
}

/// A state-stream event that opened the change for CI edits' purposes.
#[derive(Deserialize)]
struct Opened {
    number: ChangeNumber,
    scope: Scope,
    #[serde(default)]
    to: Option<ChangeState>,
}

/// A later transition.
#[derive(Deserialize)]
struct Moved {
    to: ChangeState,
}

/// Why a state-stream event could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("change state event at position {position} cannot be read: {detail}")]
pub struct ControlError {
    /// Where the event is.
    pub position: u64,
    /// What is wrong with it.
    pub detail: String,
}

/// What a CI edit checks about the change it names: the fold of `change-<id>-state` only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeControl {
    /// The version of the state stream folded.
    pub version: Option<u64>,
    /// Its number, once submitted.
    pub number: Option<ChangeNumber>,
    /// Its state, once submitted (`None`: a draft, or no such change).
    pub state: Option<ChangeState>,
    /// Its scope, frozen at submission.
    pub scope: Scope,
}

impl ChangeControl {
    /// Folds one event of the state stream.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), ControlError> {
        let bad = |e: serde_json::Error| ControlError { position: record.position, detail: e.to_string() };
        match record.event_type.as_str() {
            SUBMITTED => {
                let opened: Opened = record.data_as().map_err(bad)?;
                self.number = Some(opened.number);
                self.scope = opened.scope;
                self.state = opened.to.or(Some(ChangeState::Submitted));
            }
            RETROSPECTIVE_RECORDED => {
                let opened: Opened = record.data_as().map_err(bad)?;
                self.number = Some(opened.number);
                self.scope = opened.scope;
                self.state = Some(ChangeState::Implemented);
            }
            TRANSITIONED => {
                let moved: Moved = record.data_as().map_err(bad)?;
                self.state = Some(moved.to);
            }
            _ => {}
        }
        debug_assert!(self.version.is_none_or(|v| v < record.stream_version), "a fold only moves forward");
        self.version = Some(record.stream_version);
        Ok(())
    }

    /// How the change is named in messages: its number, or its id while a draft.
    pub fn label(&self, id: ChangeId) -> String {
        self.number.map_or_else(|| format!("change {id}"), |n| n.to_string())
    }
}
