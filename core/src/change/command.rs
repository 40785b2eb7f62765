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
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub justification: Option<Option<String>>,
    pub back_out_plan: Option<Option<String>>,
    pub window: Option<Option<Window>>,
    pub implementer: Option<Option<String>>,
    pub scope: Option<Scope>,
    pub links: Option<Vec<RecordLink>>,
}

impl DetailsPatch {
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
        change_id: ChangeId,
        change_type: ChangeType,
        template_id: Option<TemplateId>,
        details: ChangeDetails,
    },
    /// Edit a draft.
    Amend {
        change_id: ChangeId,
        patch: DetailsPatch,
    },
    /// Record an emergency change whose work is already done (CH-8, path b).
    RecordRetrospective {
        change_id: ChangeId,
        details: ChangeDetails,
    },
    /// Any transition of [`TRANSITIONS`].
    Act {
        change_id: ChangeId,
        action: ChangeAction,
        note: Option<String>,
        review: Option<Review>,
        /// The risk facts the projection computed, for `assess` and a standard change's
        /// `submit` (CH-2). Without them an assessment records no risk and no decision.
        facts: Option<Box<AssessmentFacts>>,
    },
    /// Schedule an approved change into its window: refused inside a freeze that covers its
    /// scope (emergency changes pass, flagged) or on an unacknowledged conflict (CH-5).
    Schedule {
        change_id: ChangeId,
        note: Option<String>,
        facts: Box<ScheduleFacts>,
    },
    /// Move a scheduled change to another window, with the same checks.
    Reschedule {
        change_id: ChangeId,
        window: Window,
        note: Option<String>,
        facts: Box<ScheduleFacts>,
    },
    /// Accept a conflict with another change, with the reason.
    AcknowledgeConflict {
        change_id: ChangeId,
        other: ChangeId,
        reason: String,
    },
    CreateFreeze {
        freeze_id: FreezeId,
        name: String,
        scope: FreezeScope,
        schedule: FreezeSchedule,
        reason: String,
    },
    LiftFreeze {
        freeze_id: FreezeId,
        reason: String,
    },
    /// Assess again before approval, on request or because a CI in scope changed (CH-2).
    Reassess {
        change_id: ChangeId,
        facts: Box<AssessmentFacts>,
        trigger: AssessmentTrigger,
    },
    Comment {
        change_id: ChangeId,
        text: String,
    },
    Link {
        change_id: ChangeId,
        link: RecordLink,
    },
    CreateTemplate {
        template_id: TemplateId,
        name: String,
        title: String,
        description: String,
        back_out_plan: String,
        allowed_classes: Vec<CiClass>,
    },
    RetireTemplate {
        template_id: TemplateId,
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
