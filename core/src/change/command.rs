//! Change commands: what a requester, an assessor, an approver, an implementer or a change
//! manager asks of a change, a template or the freeze calendar (CH-1 to CH-9).

use super::freeze::{FreezeSchedule, FreezeScope};
use super::risk::AssessmentFacts;
use super::{
    AssessmentTrigger, ChangeAction, ChangeDetails, ChangeType, RecordLink, Review, ScheduleFacts, Scope, Window,
};
use crate::ids::{ChangeId, FreezeId, TemplateId};
use crate::model::CiClass;

/// Changes to a draft's details: `Some` replaces; for the optional fields `Some(None)` clears.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetailsPatch {
    /// A one-line summary.
    pub title: Option<String>,
    /// A description.
    pub description: Option<Option<String>>,
    /// Why the change is worth making.
    pub justification: Option<Option<String>>,
    /// How to undo it (CH-3).
    pub back_out_plan: Option<Option<String>>,
    /// The requested window.
    pub window: Option<Option<Window>>,
    /// Who will do the work.
    pub implementer: Option<Option<String>>,
    /// The CIs it touches and the CIs it plans.
    pub scope: Option<Scope>,
    /// Linked records (CH-9).
    pub links: Option<Vec<RecordLink>>,
}

impl DetailsPatch {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        *self == DetailsPatch::default()
    }

    pub(super) fn applied_to(&self, details: &ChangeDetails) -> ChangeDetails {
        let mut next = details.clone();
        if let Some(title) = &self.title {
            next.title = title.clone();
        }
        if let Some(v) = &self.description {
            next.description = v.clone();
        }
        if let Some(v) = &self.justification {
            next.justification = v.clone();
        }
        if let Some(v) = &self.back_out_plan {
            next.back_out_plan = v.clone();
        }
        if let Some(v) = &self.window {
            next.window = v.clone();
        }
        if let Some(v) = &self.implementer {
            next.implementer = v.clone();
        }
        if let Some(v) = &self.scope {
            next.scope = v.clone();
        }
        if let Some(v) = &self.links {
            next.links = v.clone();
        }
        next
    }
}

/// A request about changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeCommand {
    /// Raise a change (CH-1). A standard change names its template; its description and
    /// back-out plan default to the template's.
    Draft {
        /// The change.
        change_id: ChangeId,
        /// Standard, normal or emergency.
        change_type: ChangeType,
        /// The standard-change template.
        template_id: Option<TemplateId>,
        /// What the requester wrote.
        details: ChangeDetails,
    },
    /// Edit a draft.
    Amend {
        /// The change.
        change_id: ChangeId,
        /// What changes: `Some` replaces, `Some(None)` clears.
        patch: DetailsPatch,
    },
    /// Record an emergency change whose work is already done (CH-8, path b).
    RecordRetrospective {
        /// The change.
        change_id: ChangeId,
        /// What the requester wrote.
        details: ChangeDetails,
    },
    /// Any transition of [`TRANSITIONS`].
    Act {
        /// The change.
        change_id: ChangeId,
        /// The action.
        action: ChangeAction,
        /// The note given with it.
        note: Option<String>,
        /// The post-implementation review (CH-7).
        review: Option<Review>,
        /// The risk facts the projection computed, for `assess` and a standard change's
        /// `submit` (CH-2). Without them an assessment records no risk and no decision.
        facts: Option<Box<AssessmentFacts>>,
    },
    /// Schedule an approved change into its window: refused inside a freeze that covers its
    /// scope (emergency changes pass, flagged) or on an unacknowledged conflict (CH-5).
    Schedule {
        /// The change.
        change_id: ChangeId,
        /// The note given with it.
        note: Option<String>,
        /// The facts it was computed from.
        facts: Box<ScheduleFacts>,
    },
    /// Move a scheduled change to another window, with the same checks.
    Reschedule {
        /// The change.
        change_id: ChangeId,
        /// The requested window.
        window: Window,
        /// The note given with it.
        note: Option<String>,
        /// The facts it was computed from.
        facts: Box<ScheduleFacts>,
    },
    /// Accept a conflict with another change, with the reason.
    AcknowledgeConflict {
        /// The change.
        change_id: ChangeId,
        /// The other change.
        other: ChangeId,
        /// Why.
        reason: String,
    },
    /// Create a freeze window (CH-5).
    CreateFreeze {
        /// The freeze window.
        freeze_id: FreezeId,
        /// The name.
        name: String,
        /// The CIs it touches and the CIs it plans.
        scope: FreezeScope,
        /// When it applies.
        schedule: FreezeSchedule,
        /// Why.
        reason: String,
    },
    /// Lift a freeze window, with the reason.
    LiftFreeze {
        /// The freeze window.
        freeze_id: FreezeId,
        /// Why.
        reason: String,
    },
    /// Assess again before approval, on request or because a CI in scope changed (CH-2).
    Reassess {
        /// The change.
        change_id: ChangeId,
        /// The facts it was computed from.
        facts: Box<AssessmentFacts>,
        /// Why it was assessed.
        trigger: AssessmentTrigger,
    },
    /// Comment on a change.
    Comment {
        /// The change.
        change_id: ChangeId,
        /// The text.
        text: String,
    },
    /// Link a record to a change (CH-9).
    Link {
        /// The change.
        change_id: ChangeId,
        /// The linked record.
        link: RecordLink,
    },
    /// Create a standard-change template.
    CreateTemplate {
        /// The standard-change template.
        template_id: TemplateId,
        /// The name.
        name: String,
        /// A one-line summary.
        title: String,
        /// A description.
        description: String,
        /// How to undo it (CH-3).
        back_out_plan: String,
        /// The classes a change from it may touch.
        allowed_classes: Vec<CiClass>,
    },
    /// Retire a template.
    RetireTemplate {
        /// The standard-change template.
        template_id: TemplateId,
        /// Why.
        reason: Option<String>,
    },
}

impl ChangeCommand {
    /// The change the command is about, if any.
    pub fn change_id(&self) -> Option<ChangeId> {
        match self {
            ChangeCommand::Draft { change_id, .. }
            | ChangeCommand::Amend { change_id, .. }
            | ChangeCommand::RecordRetrospective { change_id, .. }
            | ChangeCommand::Act { change_id, .. }
            | ChangeCommand::Reassess { change_id, .. }
            | ChangeCommand::Schedule { change_id, .. }
            | ChangeCommand::Reschedule { change_id, .. }
            | ChangeCommand::AcknowledgeConflict { change_id, .. }
            | ChangeCommand::Comment { change_id, .. }
            | ChangeCommand::Link { change_id, .. } => Some(*change_id),
            ChangeCommand::CreateTemplate { .. }
            | ChangeCommand::RetireTemplate { .. }
            | ChangeCommand::CreateFreeze { .. }
            | ChangeCommand::LiftFreeze { .. } => None,
        }
    }
}
