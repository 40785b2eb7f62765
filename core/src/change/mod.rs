//! Change requests and their life cycle (CH-1 record, CH-3 remediation, CH-4 who may approve,
//! CH-6 implement and verify, CH-7 review, CH-8 emergency changes, CH-9 links), and the
//! control record CI edits name (CM-3).
//!
//! Streams, per change:
//! - `change-<id>`: the request itself (drafted, amended while a draft), comments, links added
//!   later, approval decisions;
//! - `change-<id>-state`: the life-cycle transitions only. A CI edit under a change reads this
//!   stream alone and is appended on the condition that it has not moved, so a comment or an
//!   approval on the change never makes an in-flight CI edit fail. The submission event carries
//!   the scope, frozen from then on, so that this stream says everything a CI edit checks.
//!
//! And once: `change-numbers` assigns `CHG-000001`, `CHG-000002`, ... at submission, gapless
//! because every number is appended at the exact version before it; `change-template-<id>`
//! holds a standard change's pre-approved template.
//!
//! The transition table is [`table::TRANSITIONS`]: one row per (action, from-states, change
//! types) naming the operation (and so the roles) and the rules it needs. The decider
//! ([`decide::decide`]) is pure: the service ([`service::execute`]) loads the streams, the
//! access state (roles at this moment) and the CIs in scope, and appends at the versions read.
//!
//! Assessment (CH-2) and authorisation (CH-4): assessing a change records its risk
//! ([`risk`], from facts the projection computed) and the approval policy's decision
//! ([`crate::policy`]) in one `change.assessed` event; a normal (or not auto-approved standard)
//! change is approved once the decision's required approvals are on record. A change assessed
//! without facts (only in-process callers can do that; the API always computes them) keeps the
//! one-approver rule.
//!
//! What it is not: the calendar (a later issue); the read model of changes (in
//! `cmdb-projections`).

pub mod command;
pub mod decide;
pub mod freeze;
pub mod policy_input;
pub mod reads;
pub mod risk;
pub mod table;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::access::Role;
pub use crate::control::{ChangeControl, ChangeNumber, ChangeState, PlannedCi, Scope, state_stream};
use crate::event::{FoldRecord, Metadata, NewEvent, StreamId};
use crate::ids::{ChangeId, CiId, TemplateId};
use crate::model::{CiClass, ModelError, lenient, named_enum};
use crate::policy::{ApprovalRequirement, PolicyDecision};
use crate::time::Timestamp;

pub use command::{ChangeCommand, DetailsPatch};
pub use decide::{ChangeDecider, ChangeDecision, ChangeInput, ChangeSettings, decide};
pub use reads::{ChangeKey, ChangeRead, NUMBERS_STREAM, find_by_number, fold_change, load_change, numbers_stream};
pub use table::{Requirement, TRANSITIONS, Target, Transition};

/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 200;
/// Longest description, justification, back-out plan, note or review text, in bytes.
pub const MAX_TEXT_BYTES: usize = 10_000;
/// Longest comment, in bytes.
pub const MAX_COMMENT_BYTES: usize = 4_000;
/// Most comments on one change.
pub const MAX_COMMENTS_PER_CHANGE: usize = 1_000;
/// Most CIs and planned CIs in one change's scope, together.
pub const MAX_SCOPE_ITEMS: usize = 500;
/// Most linked records on one change.
pub const MAX_LINKS_PER_CHANGE: usize = 100;
/// Longest linked record id, in bytes.
pub const MAX_LINK_ID_BYTES: usize = 64;
/// Assessments kept per change (each reassessment adds one).
pub const MAX_ASSESSMENTS_PER_CHANGE: usize = 100;
/// Most follow-up actions in a review.
pub const MAX_FOLLOW_UP_ACTIONS: usize = 50;
/// Longest requested window, in hours (31 days).
pub const MAX_WINDOW_HOURS: i64 = 31 * 24;
/// Default hours within which a retrospective emergency change must be approved and any
/// emergency change reviewed (`emergency_review_deadline_hours`).
pub const DEFAULT_EMERGENCY_REVIEW_DEADLINE_HOURS: u32 = 72;
/// Longest deadline the setting accepts, in hours (90 days).
pub const MAX_EMERGENCY_REVIEW_DEADLINE_HOURS: u32 = 90 * 24;
/// Most classes a template may allow.
pub const MAX_TEMPLATE_CLASSES: usize = 50;
/// Longest template name, in bytes.
pub const MAX_TEMPLATE_NAME_BYTES: usize = 100;

/// The stream of a change's request, comments and approvals.
pub fn details_stream(id: ChangeId) -> StreamId {
    id.stream()
}

named_enum!(
    /// How a change is authorised (CH-4, CH-8).
    ChangeType, "change type", lenient {
        /// Pre-approved by a template: low risk, routine.
        Standard => "standard",
        /// Assessed and approved as the policy decides.
        Normal => "normal",
        /// Approved by the emergency authority first, or recorded afterwards (CH-8).
        Emergency => "emergency",
    }
);

named_enum!(
    /// What moves a change from one state to the next.
    ChangeAction, "change action", lenient {
        /// Submit a draft: number assigned, scope frozen.
        Submit => "submit",
        /// Assess risk and let the policy decide (CH-2).
        Assess => "assess",
        /// Approve (CH-4).
        Approve => "approve",
        /// Reject, with the reason.
        Reject => "reject",
        /// Place it in its window (CH-5).
        Schedule => "schedule",
        /// Start the work: CI edits may name it from now.
        Start => "start",
        /// Report the work done.
        Complete => "complete",
        /// Report a failure.
        Fail => "fail",
        /// Report the back-out done (CH-3).
        BackOut => "back_out",
        /// Verify and sign off (CH-6).
        Verify => "verify",
        /// Record the post-implementation review (CH-7).
        Review => "review",
        /// Close it.
        Close => "close",
        /// Cancel it before it starts.
        Cancel => "cancel",
    }
);

named_enum!(
    /// The kind of record a change links to (CH-9).
    LinkKind, "linked record kind", lenient {
        /// An incident.
        Incident => "incident",
        /// A problem.
        Problem => "problem",
        /// A known error.
        KnownError => "known_error",
        /// Another change.
        Change => "change",
    }
);

named_enum!(
    /// Why an assessment was made.
    AssessmentTrigger, "assessment trigger", lenient {
        /// Assess risk and let the policy decide (CH-2).
        Assess => "assess",
        /// A standard change was submitted.
        Submission => "submission",
        /// Someone asked for a reassessment.
        Request => "request",
        /// A CI in scope changed after the last assessment, before approval.
        ScopeChanged => "scope_changed",
    }
);

named_enum!(
    /// What an approver decided.
    Verdict, "approval verdict", lenient {
        /// Approve (CH-4).
        Approve => "approve",
        /// Reject, with the reason.
        Reject => "reject",
    }
);

/// Another scheduled change a window conflicts with (CH-5), as the projection found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictFact {
    /// The other change.
    pub other: ChangeId,
    /// The other change's number (or id while a draft).
    pub other_label: String,
    /// Why: a shared CI, or one scope reaching the other within `conflict_max_depth` hops.
    pub reason: String,
    /// The CIs from one scope to the other (one CI when shared).
    pub path: Vec<CiId>,
    /// The other change acknowledged this conflict already.
    pub acknowledged_by_other: bool,
}

/// The calendar around a change's window, for the approval policy (issue 8 meets issue 7): the
/// scheduled changes it conflicts with and the freeze windows it falls into.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarFacts {
    /// The conflicts found.
    pub conflicts: Vec<ConflictFact>,
    /// Freeze windows.
    pub freezes: Vec<freeze::FreezeHit>,
}

/// What scheduling checks against, computed by the projection at `position`: the services the
/// scope reaches (for service freezes) and the conflicting scheduled changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFacts {
    /// The log position.
    pub position: u64,
    /// The business services reached.
    pub services: Vec<CiId>,
    /// The conflicts found.
    pub conflicts: Vec<ConflictFact>,
}

/// The requested window: two instants and the time zone the requester thinks in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Where it starts.
    pub start: Timestamp,
    /// Where it ends.
    pub end: Timestamp,
    /// An IANA time zone name (`Europe/Paris`, `UTC`).
    pub time_zone: String,
}

/// A link to another record (CH-9); ids are strings until those records exist here.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordLink {
    /// What kind.
    pub kind: LinkKind,
    /// Its id.
    pub id: String,
}

/// Everything the requester writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeDetails {
    /// A one-line summary.
    pub title: String,
    #[serde(default)]
    /// A description.
    pub description: Option<String>,
    #[serde(default)]
    /// Why the change is worth making.
    pub justification: Option<String>,
    #[serde(default)]
    /// How to undo it (CH-3).
    pub back_out_plan: Option<String>,
    #[serde(default)]
    /// The requested window.
    pub window: Option<Window>,
    #[serde(default)]
    /// Who will do the work.
    pub implementer: Option<String>,
    #[serde(default)]
    /// The CIs it touches and the CIs it plans.
    pub scope: Scope,
    #[serde(default)]
    /// Linked records (CH-9).
    pub links: Vec<RecordLink>,
}

/// The post-implementation review (CH-7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Whether the objective was met.
    pub objective_met: bool,
    /// Whether users were satisfied.
    pub users_satisfied: bool,
    /// Side effects observed, if any.
    pub side_effects: Option<String>,
    #[serde(default)]
    /// Actions to follow up.
    pub follow_up_actions: Vec<String>,
}

// ----------------------------------------------------------------------------------------
// Events
// ----------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A change was raised as a draft (CH-1).
pub struct ChangeDrafted {
    /// The change.
    pub change_id: ChangeId,
    /// Standard, normal or emergency.
    pub change_type: ChangeType,
    /// The standard-change template.
    pub template_id: Option<TemplateId>,
    /// Who raised it.
    pub requester: String,
    /// What the requester wrote.
    pub details: ChangeDetails,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A draft's details were changed.
pub struct ChangeAmended {
    /// The change.
    pub change_id: ChangeId,
    /// What the requester wrote.
    pub details: ChangeDetails,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A comment was added.
pub struct ChangeCommented {
    /// The change.
    pub change_id: ChangeId,
    /// Who did it (a principal name).
    pub by: String,
    /// The text.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A record (incident, problem, known error, change) was linked (CH-9).
pub struct ChangeLinked {
    /// The change.
    pub change_id: ChangeId,
    /// Who did it (a principal name).
    pub by: String,
    /// The linked record.
    pub link: RecordLink,
}

/// One principal's decision, with the roles they held when they made it (CH-4: a role revoked
/// later does not undo it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecorded {
    /// The change.
    pub change_id: ChangeId,
    /// Who did it (a principal name).
    pub by: String,
    /// The decision.
    pub decision: Verdict,
    /// The role the decision was made with (approver, emergency-approver, or a role the
    /// policy's decision asked for); `None` when the policy named the principal itself.
    pub authority: Option<Role>,
    /// The roles the principal held when deciding (a later revocation does not undo it).
    pub roles_held: BTreeSet<Role>,
    /// The note given with it.
    pub note: Option<String>,
    /// Given after the work was done (a retrospective emergency change).
    pub retrospective: bool,
    /// The reasons of the decision's requirements this approval counted towards.
    #[serde(default)]
    pub counts_for: Vec<String>,
}

/// An assessment (CH-2) and the policy's decision on it (CH-4), made together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentRecorded {
    /// The change.
    pub change_id: ChangeId,
    /// Who did it (a principal name).
    pub by: String,
    /// Why it was assessed.
    pub trigger: AssessmentTrigger,
    /// The risk assessment.
    pub assessment: risk::Assessment,
    /// The decision.
    pub decision: PolicyDecision,
}

/// Submission: the number is assigned and the scope frozen (it is what CI edits check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSubmitted {
    /// The change.
    pub change_id: ChangeId,
    /// Its change number.
    pub number: ChangeNumber,
    /// Standard, normal or emergency.
    pub change_type: ChangeType,
    /// The state it came from.
    pub from: ChangeState,
    /// The state it went to.
    pub to: ChangeState,
    /// Who did it (a principal name).
    pub by: String,
    /// The CIs it touches and the CIs it plans.
    pub scope: Scope,
}

/// An emergency change recorded after the work was done (CH-8, path b).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrospectiveRecorded {
    /// The change.
    pub change_id: ChangeId,
    /// Its change number.
    pub number: ChangeNumber,
    /// Who did it (a principal name).
    pub by: String,
    /// The CIs it touches and the CIs it plans.
    pub scope: Scope,
    /// When the emergency approval is due (CH-8).
    pub approval_due_at: Timestamp,
    /// When the review is due (CH-8).
    pub review_due_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A transition of the life cycle, with the note and (for a review) the findings.
pub struct ChangeTransitioned {
    /// The change.
    pub change_id: ChangeId,
    /// The action.
    pub action: ChangeAction,
    /// The state it came from.
    pub from: ChangeState,
    /// The state it went to.
    pub to: ChangeState,
    /// Who did it (a principal name).
    pub by: String,
    #[serde(default)]
    /// The note given with it.
    pub note: Option<String>,
    #[serde(default)]
    /// The post-implementation review (CH-7).
    pub review: Option<Review>,
    /// Set when an emergency change's implementation ends: its review is due by then.
    #[serde(default)]
    pub review_due_at: Option<Timestamp>,
    /// Freeze windows an emergency change was scheduled into (CH-8: it passes, flagged).
    #[serde(default)]
    pub in_freeze: Vec<freeze::FreezeHit>,
}

/// A scheduled change moved to another window (CH-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRescheduled {
    /// The change.
    pub change_id: ChangeId,
    /// The requested window.
    pub window: Window,
    /// Who did it (a principal name).
    pub by: String,
    #[serde(default)]
    /// The note given with it.
    pub note: Option<String>,
    #[serde(default)]
    /// Freeze windows an emergency change was scheduled into (flagged, CH-8).
    pub in_freeze: Vec<freeze::FreezeHit>,
}

/// A conflict with another change accepted, with the reason (CH-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictAcknowledged {
    /// The change.
    pub change_id: ChangeId,
    /// The other change.
    pub other: ChangeId,
    /// Why.
    pub reason: String,
    /// Who did it (a principal name).
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A change number was assigned at submission (gapless).
pub struct NumberAssigned {
    /// Its change number.
    pub number: ChangeNumber,
    /// The change.
    pub change_id: ChangeId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A standard-change template was created.
pub struct TemplateCreated {
    /// The standard-change template.
    pub template_id: TemplateId,
    /// The name.
    pub name: String,
    /// A one-line summary.
    pub title: String,
    /// A description.
    pub description: String,
    /// How to undo it (CH-3).
    pub back_out_plan: String,
    /// The classes a change from this template may touch.
    pub allowed_classes: Vec<CiClass>,
    /// Who did it (a principal name).
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A template was retired: no new standard changes from it.
pub struct TemplateRetired {
    /// The standard-change template.
    pub template_id: TemplateId,
    /// Who did it (a principal name).
    pub by: String,
    /// Why.
    pub reason: Option<String>,
}

/// Every change-domain event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeEvent {
    /// The [`ChangeDrafted`] event.
    Drafted(ChangeDrafted),
    /// The [`ChangeAmended`] event.
    Amended(ChangeAmended),
    /// The [`ChangeCommented`] event.
    Commented(ChangeCommented),
    /// The [`ChangeLinked`] event.
    Linked(ChangeLinked),
    /// The [`ApprovalRecorded`] event.
    ApprovalRecorded(ApprovalRecorded),
    /// The [`AssessmentRecorded`] event.
    Assessed(Box<AssessmentRecorded>),
    /// The [`ChangeRescheduled`] event.
    Rescheduled(ChangeRescheduled),
    /// The [`ConflictAcknowledged`] event.
    ConflictAcknowledged(ConflictAcknowledged),
    /// The [`ChangeSubmitted`] event.
    Submitted(ChangeSubmitted),
    /// The [`RetrospectiveRecorded`] event.
    RetrospectiveRecorded(RetrospectiveRecorded),
    /// The [`ChangeTransitioned`] event.
    Transitioned(ChangeTransitioned),
    /// The [`NumberAssigned`] event.
    NumberAssigned(NumberAssigned),
    /// The [`TemplateCreated`] event.
    TemplateCreated(TemplateCreated),
    /// The [`TemplateRetired`] event.
    TemplateRetired(TemplateRetired),
    /// Freeze windows share the change vocabulary (their own stream, `change-freezes`).
    Freeze(freeze::FreezeEvent),
}

impl ChangeEvent {
    /// The type of the event `change.drafted`.
    pub const DRAFTED: &'static str = "change.drafted";
    /// The type of the event `change.amended`.
    pub const AMENDED: &'static str = "change.amended";
    /// The type of the event `change.commented`.
    pub const COMMENTED: &'static str = "change.commented";
    /// The type of the event `change.linked`.
    pub const LINKED: &'static str = "change.linked";
    /// The type of the event `change.approval_recorded`.
    pub const APPROVAL_RECORDED: &'static str = "change.approval_recorded";
    /// The type of the event `change.assessed`.
    pub const ASSESSED: &'static str = "change.assessed";
    /// The type of the event `change.rescheduled`.
    pub const RESCHEDULED: &'static str = "change.rescheduled";
    /// The type of the event `change.conflict_acknowledged`.
    pub const CONFLICT_ACKNOWLEDGED: &'static str = "change.conflict_acknowledged";
    /// The type of the event `change.submitted` (the CM-3 contract).
    pub const SUBMITTED: &'static str = crate::control::SUBMITTED;
    /// The type of the event `change.retrospective_recorded` (the CM-3 contract).
    pub const RETROSPECTIVE_RECORDED: &'static str = crate::control::RETROSPECTIVE_RECORDED;
    /// The type of the event `change.transitioned` (the CM-3 contract).
    pub const TRANSITIONED: &'static str = crate::control::TRANSITIONED;
    /// The type of the event `change.number_assigned`.
    pub const NUMBER_ASSIGNED: &'static str = "change.number_assigned";
    /// The type of the event `change_template.created`.
    pub const TEMPLATE_CREATED: &'static str = "change_template.created";
    /// The type of the event `change_template.retired`.
    pub const TEMPLATE_RETIRED: &'static str = "change_template.retired";

    /// Every event type of this domain.
    pub const TYPES: [&'static str; 16] = [
        freeze::FreezeEvent::CREATED,
        freeze::FreezeEvent::LIFTED,
        Self::DRAFTED,
        Self::AMENDED,
        Self::COMMENTED,
        Self::LINKED,
        Self::APPROVAL_RECORDED,
        Self::ASSESSED,
        Self::RESCHEDULED,
        Self::CONFLICT_ACKNOWLEDGED,
        Self::SUBMITTED,
        Self::RETROSPECTIVE_RECORDED,
        Self::TRANSITIONED,
        Self::NUMBER_ASSIGNED,
        Self::TEMPLATE_CREATED,
        Self::TEMPLATE_RETIRED,
    ];

    /// Whether a stored event belongs to this domain.
    pub fn is_change_event(event_type: &str) -> bool {
        Self::TYPES.contains(&event_type)
    }

    /// The event's type.
    pub fn event_type(&self) -> &'static str {
        match self {
            ChangeEvent::Drafted(_) => Self::DRAFTED,
            ChangeEvent::Amended(_) => Self::AMENDED,
            ChangeEvent::Commented(_) => Self::COMMENTED,
            ChangeEvent::Linked(_) => Self::LINKED,
            ChangeEvent::ApprovalRecorded(_) => Self::APPROVAL_RECORDED,
            ChangeEvent::Assessed(_) => Self::ASSESSED,
            ChangeEvent::Rescheduled(_) => Self::RESCHEDULED,
            ChangeEvent::ConflictAcknowledged(_) => Self::CONFLICT_ACKNOWLEDGED,
            ChangeEvent::Submitted(_) => Self::SUBMITTED,
            ChangeEvent::RetrospectiveRecorded(_) => Self::RETROSPECTIVE_RECORDED,
            ChangeEvent::Transitioned(_) => Self::TRANSITIONED,
            ChangeEvent::NumberAssigned(_) => Self::NUMBER_ASSIGNED,
            ChangeEvent::TemplateCreated(_) => Self::TEMPLATE_CREATED,
            ChangeEvent::TemplateRetired(_) => Self::TEMPLATE_RETIRED,
            ChangeEvent::Freeze(freeze::FreezeEvent::Created(_)) => freeze::FreezeEvent::CREATED,
            ChangeEvent::Freeze(freeze::FreezeEvent::Lifted(_)) => freeze::FreezeEvent::LIFTED,
        }
    }

    /// The change this event belongs to (none for templates).
    pub fn change_id(&self) -> Option<ChangeId> {
        match self {
            ChangeEvent::Drafted(e) => Some(e.change_id),
            ChangeEvent::Amended(e) => Some(e.change_id),
            ChangeEvent::Commented(e) => Some(e.change_id),
            ChangeEvent::Linked(e) => Some(e.change_id),
            ChangeEvent::ApprovalRecorded(e) => Some(e.change_id),
            ChangeEvent::Assessed(e) => Some(e.change_id),
            ChangeEvent::Rescheduled(e) => Some(e.change_id),
            ChangeEvent::ConflictAcknowledged(e) => Some(e.change_id),
            ChangeEvent::Submitted(e) => Some(e.change_id),
            ChangeEvent::RetrospectiveRecorded(e) => Some(e.change_id),
            ChangeEvent::Transitioned(e) => Some(e.change_id),
            ChangeEvent::NumberAssigned(e) => Some(e.change_id),
            ChangeEvent::TemplateCreated(_) | ChangeEvent::TemplateRetired(_) | ChangeEvent::Freeze(_) => None,
        }
    }

    /// The event as it is appended, carrying `metadata`.
    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        if let ChangeEvent::Freeze(event) = self {
            return event.to_new_event(metadata);
        }
        let data = match self {
            ChangeEvent::Freeze(_) => Ok(Vec::new()),
            ChangeEvent::Drafted(e) => serde_json::to_vec(e),
            ChangeEvent::Amended(e) => serde_json::to_vec(e),
            ChangeEvent::Commented(e) => serde_json::to_vec(e),
            ChangeEvent::Linked(e) => serde_json::to_vec(e),
            ChangeEvent::ApprovalRecorded(e) => serde_json::to_vec(e),
            ChangeEvent::Assessed(e) => serde_json::to_vec(e),
            ChangeEvent::Rescheduled(e) => serde_json::to_vec(e),
            ChangeEvent::ConflictAcknowledged(e) => serde_json::to_vec(e),
            ChangeEvent::Submitted(e) => serde_json::to_vec(e),
            ChangeEvent::RetrospectiveRecorded(e) => serde_json::to_vec(e),
            ChangeEvent::Transitioned(e) => serde_json::to_vec(e),
            ChangeEvent::NumberAssigned(e) => serde_json::to_vec(e),
            ChangeEvent::TemplateCreated(e) => serde_json::to_vec(e),
            ChangeEvent::TemplateRetired(e) => serde_json::to_vec(e),
        };
        // Serialising these plain structs cannot fail.
        NewEvent::raw(self.event_type(), data.unwrap_or_default(), metadata)
    }

    /// Reads a stored event of this kind; fails if it is another kind or cannot be decoded.
    pub fn from_record(record: &FoldRecord) -> Result<ChangeEvent, ChangeError> {
        let bad = |e: serde_json::Error| ChangeError::Undecodable { position: record.position, detail: e.to_string() };
        Ok(match record.event_type.as_str() {
            Self::DRAFTED => ChangeEvent::Drafted(record.data_as().map_err(bad)?),
            Self::AMENDED => ChangeEvent::Amended(record.data_as().map_err(bad)?),
            Self::COMMENTED => ChangeEvent::Commented(record.data_as().map_err(bad)?),
            Self::LINKED => ChangeEvent::Linked(record.data_as().map_err(bad)?),
            Self::APPROVAL_RECORDED => ChangeEvent::ApprovalRecorded(record.data_as().map_err(bad)?),
            Self::ASSESSED => ChangeEvent::Assessed(Box::new(record.data_as().map_err(bad)?)),
            Self::RESCHEDULED => ChangeEvent::Rescheduled(record.data_as().map_err(bad)?),
            Self::CONFLICT_ACKNOWLEDGED => ChangeEvent::ConflictAcknowledged(record.data_as().map_err(bad)?),
            Self::SUBMITTED => ChangeEvent::Submitted(record.data_as().map_err(bad)?),
            Self::RETROSPECTIVE_RECORDED => ChangeEvent::RetrospectiveRecorded(record.data_as().map_err(bad)?),
            Self::TRANSITIONED => ChangeEvent::Transitioned(record.data_as().map_err(bad)?),
            Self::NUMBER_ASSIGNED => ChangeEvent::NumberAssigned(record.data_as().map_err(bad)?),
            Self::TEMPLATE_CREATED => ChangeEvent::TemplateCreated(record.data_as().map_err(bad)?),
            Self::TEMPLATE_RETIRED => ChangeEvent::TemplateRetired(record.data_as().map_err(bad)?),
            freeze::FreezeEvent::CREATED | freeze::FreezeEvent::LIFTED => {
                ChangeEvent::Freeze(freeze::FreezeEvent::from_record(record)?)
            }
            other => {
                return Err(ChangeError::Undecodable {
                    position: record.position,
                    detail: format!("{other} is not a change event"),
                });
            }
        })
    }
}

// ----------------------------------------------------------------------------------------
// Errors
// ----------------------------------------------------------------------------------------

/// Why a change command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ChangeError {
    #[error(transparent)]
    /// Passed on as it is.
    Model(#[from] ModelError),
    #[error("{} problems in the input: {}", .problems.len(), crate::problems::summary(.problems))]
    /// Several input problems, all reported at once (each names its field: [`ChangeError::field`]).
    Invalid { problems: Vec<ChangeError> },
    #[error(
        "a CI in the scope of {change} changed since its assessment; it is assessed again with the scope as it is now before it can be approved"
    )]
    StaleAssessment { change: String },
    #[error("no change {0}")]
    /// No change ….
    UnknownChange(String),
    #[error("change {0} already exists")]
    /// Change … already exists.
    ChangeExists(ChangeId),
    #[error(
        "{change} is {state} ({change_type}); {action} is not allowed from {state}{}",
        if allowed.is_empty() { String::from("; nothing more can happen to it") } else { format!("; allowed now: {allowed}") }
    )]
    TransitionNotAllowed {
        /// The change.
        change: String,
        /// The action.
        action: ChangeAction,
        /// Where it is in its life cycle.
        state: ChangeState,
        /// Standard, normal or emergency.
        change_type: ChangeType,
        allowed: String,
    },
    #[error("{principal:?} may not {action} this change: it needs one of the roles {roles}")]
    /// … may not … this change: it needs one of the roles ….
    NotPermitted { principal: String, action: String, roles: String },
    #[error("{principal:?} may not {action} {change}: {rule}")]
    /// … may not … …: ….
    SegregationOfDuties { principal: String, action: ChangeAction, change: String, rule: &'static str },
    #[error("{principal:?} already gave a decision ({decision}) on {change}; one principal decides at most once")]
    /// … already gave a decision (…) on …; one principal decides at most once.
    AlreadyDecided { principal: String, change: String, decision: Verdict },
    #[error("only the implementer {implementer:?} may {action} {change}; {principal:?} is not the implementer")]
    /// Only the implementer … may … …; … is not the implementer.
    NotImplementer { principal: String, implementer: String, action: ChangeAction, change: String },
    #[error("only the requester {requester:?} or a change manager may {action} {change}")]
    /// Only the requester … or a change manager may … ….
    NotRequester { requester: String, action: String, change: String },
    #[error("{field} is required {why}")]
    /// … is required ….
    Missing { field: &'static str, why: &'static str },
    #[error("{field} must not be empty")]
    /// … must not be empty.
    Empty { field: &'static str },
    #[error("{field} is {bytes} bytes long; the bound is {bound}")]
    /// … is … bytes long; the bound is ….
    TooLong { field: &'static str, bytes: usize, bound: usize },
    #[error("the window ends ({end}) before or when it starts ({start})")]
    /// The window ends (…) before or when it starts (…).
    WindowEndsBeforeStart { start: Timestamp, end: Timestamp },
    #[error("the window is {hours} hours long; the bound is {MAX_WINDOW_HOURS} (max_window_hours)")]
    /// The window is … hours long; the bound is … (max_window_hours).
    WindowTooLong { hours: i64 },
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Paris or UTC")]
    /// Unknown time zone …; use an IANA name such as Europe/Paris or UTC.
    UnknownTimeZone(String),
    #[error("the scope names CI {0}, which does not exist")]
    /// The scope names CI …, which does not exist.
    UnknownCi(CiId),
    #[error("the scope names CI {0}, which is withdrawn")]
    /// The scope names CI …, which is withdrawn.
    CiWithdrawn(CiId),
    #[error("the scope names CI {0} twice")]
    /// The scope names CI … twice.
    DuplicateScope(String),
    #[error("the scope has {count} items; the bound is {MAX_SCOPE_ITEMS} (max_scope_items)")]
    /// The scope has … items; the bound is … (max_scope_items).
    ScopeTooLarge { count: usize },
    #[error("a planned CI's class {0:?} is not a known class")]
    /// A planned CI's class … is not a known class.
    UnknownClass(String),
    #[error("planned CI name {0:?} is not valid: 1 to 200 bytes, no control characters, no leading or trailing spaces")]
    /// Planned CI name … is not valid: 1 to 200 bytes, no control characters, no leading or trailing spaces.
    InvalidPlannedName(String),
    #[error("a planned {class} named {name:?} already exists as CI {existing}; put that CI in the scope instead")]
    /// A planned … named … already exists as CI …; put that CI in the scope instead.
    PlannedExists { class: CiClass, name: String, existing: CiId },
    #[error("no principal named {0:?}")]
    /// No principal named ….
    UnknownPrincipal(String),
    #[error("linked record id {0:?} is not valid: 1 to {MAX_LINK_ID_BYTES} printable characters")]
    /// Linked record id … is not valid: 1 to … printable characters.
    InvalidLink(String),
    #[error("{change} already links {kind} {id}")]
    /// … already links … ….
    DuplicateLink { change: String, kind: LinkKind, id: String },
    #[error("{change} already has {count} {what}; the bound is {bound}")]
    /// … already has … …; the bound is ….
    TooMany { change: String, what: &'static str, count: usize, bound: usize },
    #[error("{change} can only be amended while it is a draft; it is {state}")]
    /// … can only be amended while it is a draft; it is ….
    NotEditable { change: String, state: ChangeState },
    #[error("no change template {0}")]
    /// No change template ….
    UnknownTemplate(TemplateId),
    #[error("change template {0} already exists")]
    /// Change template … already exists.
    TemplateExists(TemplateId),
    #[error("change template {0} is retired; standard changes can no longer be made from it")]
    /// Change template … is retired; standard changes can no longer be made from it.
    TemplateRetired(TemplateId),
    #[error("a standard change needs a template; a {0} change must not name one")]
    /// A standard change needs a template; a … change must not name one.
    TemplateMismatch(ChangeType),
    #[error("template {template:?} allows changes to {allowed}; the scope names a {class}")]
    /// Template … allows changes to …; the scope names a ….
    ClassNotInTemplate { template: String, class: CiClass, allowed: String },
    #[error("{change} is a retrospective emergency change: it needs an emergency approval before its review")]
    /// … is a retrospective emergency change: it needs an emergency approval before its review.
    NotYetApproved { change: String },
    #[error("the amendment changes nothing")]
    /// The amendment changes nothing.
    NothingToChange,
    #[error("{field} may only be given with the {only_with} action")]
    /// … may only be given with the … action.
    NotApplicable { field: &'static str, only_with: ChangeAction },
    #[error("change event at position {position} cannot be read: {detail}")]
    /// Change event at position … cannot be read: ….
    Undecodable { position: u64, detail: String },
    #[error("the approval policy denies {change}: {}", reasons.join("; "))]
    /// The approval policy denies …: ….
    PolicyDenied { change: String, reasons: Vec<String> },
    #[error(transparent)]
    /// Passed on as it is.
    Policy(#[from] crate::policy::PolicyError),
    #[error("{change} has {count} assessments; the bound is {MAX_ASSESSMENTS_PER_CHANGE}")]
    /// … has … assessments; the bound is ….
    TooManyAssessments { change: String, count: usize },
    #[error("no freeze window {0}")]
    /// No freeze window ….
    UnknownFreeze(String),
    #[error("freeze window {0} was lifted already")]
    /// Freeze window … was lifted already.
    FreezeAlreadyLifted(String),
    #[error("freeze window recurrence: {0}")]
    /// Freeze window recurrence: ….
    InvalidRecurrence(String),
    #[error("service {0} is not a business service")]
    /// Service … is not a business service.
    NotAService(CiId),
    #[error("{change}'s window falls into freeze windows: {}; a normal change cannot be scheduled into a freeze that covers its scope (CH-5)", hits.join("; "))]
    /// …'s window falls into freeze windows: …; a normal change cannot be scheduled into a freeze that covers its scope (CH-5).
    Frozen { change: String, hits: Vec<String> },
    #[error("{change} conflicts with scheduled changes: {}; acknowledge each conflict with a reason (acknowledgeConflict) to schedule anyway (CH-5)", conflicts.join("; "))]
    /// … conflicts with scheduled changes: …; acknowledge each conflict with a reason (acknowledgeConflict) to schedule anyway (CH-5).
    Conflicting { change: String, conflicts: Vec<String> },
    #[error("a change cannot conflict with itself")]
    /// A change cannot conflict with itself.
    SelfConflict,
    #[error("{change} can only be rescheduled while scheduled; it is {state}")]
    /// … can only be rescheduled while scheduled; it is ….
    NotReschedulable { change: String, state: ChangeState },
    #[error("{change} can only be reassessed while assessed and not yet approved; it is {state}")]
    /// … can only be reassessed while assessed and not yet approved; it is ….
    NotReassessable { change: String, state: ChangeState },
    #[error("{change} has no assessment to repeat; assess it first")]
    /// … has no assessment to repeat; assess it first.
    NotAssessed { change: String },
    #[error("the risk history window is {days} days; it must be 1 to {}", risk::MAX_RISK_HISTORY_DAYS)]
    /// The risk history window is … days; it must be 1 to ….
    HistoryDays { days: u32 },
}

impl ChangeError {
    /// The input field an input problem is about, for clients that mark the field; `None` for
    /// refusals about state or authority.
    pub fn field(&self) -> Option<String> {
        match self {
            ChangeError::Missing { field, .. } | ChangeError::Empty { field } | ChangeError::TooLong { field, .. } => {
                Some((*field).to_owned())
            }
            ChangeError::WindowEndsBeforeStart { .. } | ChangeError::WindowTooLong { .. } => Some("window".into()),
            ChangeError::UnknownTimeZone(_) => Some("window.time_zone".into()),
            ChangeError::UnknownCi(_)
            | ChangeError::CiWithdrawn(_)
            | ChangeError::DuplicateScope(_)
            | ChangeError::ScopeTooLarge { .. }
            | ChangeError::UnknownClass(_)
            | ChangeError::InvalidPlannedName(_)
            | ChangeError::PlannedExists { .. } => Some("scope".into()),
            ChangeError::UnknownPrincipal(_) => Some("implementer".into()),
            ChangeError::InvalidLink(_) | ChangeError::DuplicateLink { .. } => Some("links".into()),
            _ => None,
        }
    }
}

// ----------------------------------------------------------------------------------------
// The folds
// ----------------------------------------------------------------------------------------

/// Where an event sits in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct At {
    /// The log position.
    pub position: u64,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

impl At {
    /// Where and when `record` was recorded.
    pub fn of(record: &FoldRecord) -> At {
        At { position: record.position, recorded_at: record.recorded_at }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// One transition of a change, as its record shows it.
pub struct TransitionEntry {
    /// The action.
    pub action: Option<ChangeAction>,
    /// The state it came from.
    pub from: Option<ChangeState>,
    /// The state it went to.
    pub to: ChangeState,
    /// Who did it (a principal name).
    pub by: String,
    /// The note given with it.
    pub note: Option<String>,
    /// Where and when it was recorded.
    pub at: At,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// One approval or rejection, as the change's record shows it.
pub struct ApprovalEntry {
    /// Who did it (a principal name).
    pub by: String,
    /// The decision.
    pub decision: Verdict,
    /// The role it was given with; none when the policy named the principal.
    pub authority: Option<Role>,
    /// The roles the principal held when deciding (a later revocation does not undo it).
    pub roles_held: BTreeSet<Role>,
    /// The note given with it.
    pub note: Option<String>,
    /// Whether it was given or recorded after the work was done (CH-8).
    pub retrospective: bool,
    /// The reasons of the requirements this approval counted towards.
    pub counts_for: Vec<String>,
    /// Where and when it was recorded.
    pub at: At,
}

/// One assessment and decision on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentEntry {
    /// Who did it (a principal name).
    pub by: String,
    /// Why it was assessed.
    pub trigger: AssessmentTrigger,
    /// The risk assessment.
    pub assessment: risk::Assessment,
    /// The decision.
    pub decision: PolicyDecision,
    /// Where and when it was recorded.
    pub at: At,
}

/// How far one required approval has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequirementStatus {
    /// The requirement.
    pub requirement: ApprovalRequirement,
    /// Distinct principals whose approval counts towards it, in the order they approved.
    pub approved_by: Vec<String>,
}

impl RequirementStatus {
    /// Whether enough principals approved.
    pub fn met(&self) -> bool {
        self.approved_by.len() >= self.requirement.count as usize
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// A comment on a change.
pub struct CommentEntry {
    /// Who did it (a principal name).
    pub by: String,
    /// The text.
    pub text: String,
    /// Where and when it was recorded.
    pub at: At,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// The post-implementation review, who recorded it and when (CH-7).
pub struct ReviewEntry {
    /// The post-implementation review (CH-7).
    pub review: Review,
    /// Who did it (a principal name).
    pub by: String,
    /// The note given with it.
    pub note: Option<String>,
    /// Where and when it was recorded.
    pub at: At,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
/// The verification sign-off (CH-6).
pub struct SignOff {
    /// Who did it (a principal name).
    pub by: String,
    /// The note given with it.
    pub note: String,
    /// Where and when it was recorded.
    pub at: At,
}

/// What is overdue on an emergency change (CH-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overdue {
    /// The emergency approval is late.
    Approval,
    /// The review is late.
    Review,
}

/// A change as its two streams tell it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// The change.
    pub change_id: ChangeId,
    /// Its change number.
    pub number: Option<ChangeNumber>,
    /// Standard, normal or emergency.
    pub change_type: ChangeType,
    /// The standard-change template.
    pub template_id: Option<TemplateId>,
    /// Who raised it.
    pub requester: String,
    /// What the requester wrote.
    pub details: ChangeDetails,
    /// Where it is in its life cycle.
    pub state: ChangeState,
    /// Whether it was given or recorded after the work was done (CH-8).
    pub retrospective: bool,
    /// When it was created.
    pub created: At,
    /// When it last changed.
    pub updated: At,
    /// Its transitions, oldest first.
    pub transitions: Vec<TransitionEntry>,
    /// Approvals and rejections, in order.
    pub approvals: Vec<ApprovalEntry>,
    /// Every assessment with its decision, oldest first; the last one is in force.
    pub assessments: Vec<AssessmentEntry>,
    /// Conflicts with other changes accepted, with reasons (CH-5).
    pub acknowledged: Vec<(ConflictAcknowledged, At)>,
    /// Freeze windows the change was scheduled into (emergency changes only).
    pub in_freeze: Vec<freeze::FreezeHit>,
    /// Earlier windows, oldest first, with who moved the change and when.
    pub reschedules: Vec<(Window, String, At)>,
    /// Comments, in order.
    pub comments: Vec<CommentEntry>,
    /// The post-implementation review (CH-7).
    pub review: Option<ReviewEntry>,
    /// The verification sign-off (CH-6).
    pub sign_off: Option<SignOff>,
    /// When the emergency approval is due (CH-8).
    pub approval_due_at: Option<Timestamp>,
    /// When the review is due (CH-8).
    pub review_due_at: Option<Timestamp>,
    /// Versions of `change-<id>` and `change-<id>-state` this record reflects.
    pub details_version: Option<u64>,
    /// The version of `change-<id>-state` this reflects.
    pub state_version: Option<u64>,
}

impl ChangeRecord {
    /// The record a draft starts.
    pub fn drafted(event: &ChangeDrafted, at: At) -> ChangeRecord {
        ChangeRecord {
            change_id: event.change_id,
            number: None,
            change_type: event.change_type,
            template_id: event.template_id,
            requester: event.requester.clone(),
            details: event.details.clone(),
            state: ChangeState::Draft,
            retrospective: false,
            created: at,
            updated: at,
            transitions: vec![TransitionEntry {
                action: None,
                from: None,
                to: ChangeState::Draft,
                by: event.requester.clone(),
                note: None,
                at,
            }],
            approvals: Vec::new(),
            assessments: Vec::new(),
            acknowledged: Vec::new(),
            in_freeze: Vec::new(),
            reschedules: Vec::new(),
            comments: Vec::new(),
            review: None,
            sign_off: None,
            approval_due_at: None,
            review_due_at: None,
            details_version: None,
            state_version: None,
        }
    }

    /// How people refer to it: its number once it has one, else its id.
    pub fn label(&self) -> String {
        match self.number {
            Some(number) => number.to_string(),
            None => format!("draft change {}", self.change_id),
        }
    }

    /// Folds one event of this change in (either stream). `Drafted` starts the record; use
    /// [`ChangeRecord::drafted`] for it.
    pub fn apply(&mut self, event: &ChangeEvent, at: At) {
        self.updated = at;
        match event {
            ChangeEvent::Drafted(_) => {}
            ChangeEvent::Amended(e) => self.details = e.details.clone(),
            ChangeEvent::Commented(e) => {
                self.comments.push(CommentEntry { by: e.by.clone(), text: e.text.clone(), at });
            }
            ChangeEvent::Linked(e) => self.details.links.push(e.link.clone()),
            ChangeEvent::ApprovalRecorded(e) => self.approvals.push(ApprovalEntry {
                by: e.by.clone(),
                decision: e.decision,
                authority: e.authority,
                roles_held: e.roles_held.clone(),
                note: e.note.clone(),
                retrospective: e.retrospective,
                counts_for: e.counts_for.clone(),
                at,
            }),
            ChangeEvent::Rescheduled(e) => {
                if let Some(old) = self.details.window.replace(e.window.clone()) {
                    self.reschedules.push((old, e.by.clone(), at));
                }
                self.in_freeze.extend(e.in_freeze.iter().cloned());
            }
            ChangeEvent::ConflictAcknowledged(e) => self.acknowledged.push((e.clone(), at)),
            ChangeEvent::Assessed(e) => self.assessments.push(AssessmentEntry {
                by: e.by.clone(),
                trigger: e.trigger,
                assessment: e.assessment.clone(),
                decision: e.decision.clone(),
                at,
            }),
            ChangeEvent::Submitted(e) => {
                self.number = Some(e.number);
                // A submitted scope is never empty; an empty one was left out by a reader that
                // keeps it once (it equals the draft's).
                if !e.scope.is_empty() {
                    self.details.scope = e.scope.clone();
                }
                self.state = e.to;
                self.transitions.push(TransitionEntry {
                    action: Some(ChangeAction::Submit),
                    from: Some(e.from),
                    to: e.to,
                    by: e.by.clone(),
                    note: None,
                    at,
                });
            }
            ChangeEvent::RetrospectiveRecorded(e) => {
                self.number = Some(e.number);
                if !e.scope.is_empty() {
                    self.details.scope = e.scope.clone();
                }
                self.retrospective = true;
                self.state = ChangeState::Implemented;
                self.approval_due_at = Some(e.approval_due_at);
                self.review_due_at = Some(e.review_due_at);
                self.transitions.push(TransitionEntry {
                    action: None,
                    from: Some(ChangeState::Draft),
                    to: ChangeState::Implemented,
                    by: e.by.clone(),
                    note: Some("recorded retrospectively: the work was already done".into()),
                    at,
                });
            }
            ChangeEvent::Transitioned(e) => {
                self.state = e.to;
                if let Some(review) = &e.review {
                    self.review =
                        Some(ReviewEntry { review: review.clone(), by: e.by.clone(), note: e.note.clone(), at });
                }
                if e.action == ChangeAction::Verify {
                    self.sign_off = Some(SignOff { by: e.by.clone(), note: e.note.clone().unwrap_or_default(), at });
                }
                if let Some(due) = e.review_due_at {
                    self.review_due_at = Some(due);
                }
                self.in_freeze.extend(e.in_freeze.iter().cloned());
                self.transitions.push(TransitionEntry {
                    action: Some(e.action),
                    from: Some(e.from),
                    to: e.to,
                    by: e.by.clone(),
                    note: e.note.clone(),
                    at,
                });
            }
            ChangeEvent::NumberAssigned(_)
            | ChangeEvent::TemplateCreated(_)
            | ChangeEvent::TemplateRetired(_)
            | ChangeEvent::Freeze(_) => {}
        }
    }

    /// The assessment and decision in force (the latest).
    pub fn assessment(&self) -> Option<&AssessmentEntry> {
        self.assessments.last()
    }

    /// Each requirement of the decision in force with the approvals that count towards it
    /// (`None` without a decision). An approval counts towards every requirement it
    /// qualifies for; approvals given before a reassessment still count.
    pub fn approval_status(&self) -> Option<Vec<RequirementStatus>> {
        Some(self.status_for(&self.assessment()?.decision.output))
    }

    /// The approvals on record counted against one decision's requirements (any decision of
    /// this change, not only the one in force).
    pub fn status_for(&self, output: &crate::policy::PolicyOutput) -> Vec<RequirementStatus> {
        output
            .approvals
            .iter()
            .map(|requirement| {
                let mut approved_by: Vec<String> = Vec::new();
                for approval in self.approvals.iter().filter(|a| a.decision == Verdict::Approve) {
                    if requirement.counts(&approval.by, &approval.roles_held) && !approved_by.contains(&approval.by) {
                        approved_by.push(approval.by.clone());
                    }
                }
                RequirementStatus { requirement: requirement.clone(), approved_by }
            })
            .collect()
    }

    /// Whether an approving decision is on record.
    pub fn approved(&self) -> bool {
        self.approvals.iter().any(|a| a.decision == Verdict::Approve)
    }

    /// What is overdue at `now`: a retrospective change's approval, an emergency change's review.
    pub fn overdue(&self, now: Timestamp) -> Vec<Overdue> {
        let mut overdue = Vec::new();
        if self.change_type != ChangeType::Emergency || matches!(self.state, ChangeState::Cancelled) {
            return overdue;
        }
        if self.approval_due_at.is_some_and(|due| due < now) && !self.approved() {
            overdue.push(Overdue::Approval);
        }
        if self.review_due_at.is_some_and(|due| due < now) && self.review.is_none() {
            overdue.push(Overdue::Review);
        }
        overdue
    }
}

/// A standard change's pre-approved template: the fold of `change-template-<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// The template.
    pub template: TemplateCreated,
    /// When it was created.
    pub created: At,
    /// When and why it was retired, if it was.
    pub retired: Option<(At, TemplateRetired)>,
    /// The stream version folded.
    pub version: u64,
}

impl TemplateRecord {
    /// Folds one stored event.
    pub fn apply(record: &mut Option<TemplateRecord>, event: &ChangeEvent, at: At, stream_version: u64) {
        match (record.as_mut(), event) {
            (None, ChangeEvent::TemplateCreated(created)) => {
                *record = Some(TemplateRecord {
                    template: created.clone(),
                    created: at,
                    retired: None,
                    version: stream_version,
                });
            }
            (Some(existing), ChangeEvent::TemplateRetired(retired)) => {
                existing.retired = Some((at, retired.clone()));
                existing.version = stream_version;
            }
            (Some(existing), _) => existing.version = stream_version,
            (None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests;

impl crate::decider::DomainEvent for ChangeEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        ChangeEvent::to_new_event(self, metadata)
    }
}
