//! The change life cycle in one table (CH-4, CH-6, CH-7, CH-8): every transition, who may make
//! it and what it needs. The decider consults nothing else, and the tests walk the same table.

use crate::access::Operation;

use super::{ChangeAction, ChangeState, ChangeType};

/// Where a transition leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Moves to this state.
    To(ChangeState),
    /// The action is recorded and the state stays (a retrospective approval).
    Same,
}

/// What a transition needs besides the operation's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Description, implementer and scope; justification and back-out plan for normal and
    /// emergency changes (CH-3); the template still active for standard ones.
    CompleteRequest,
    /// The requested window (a change is scheduled into it).
    Window,
    /// A note saying why or what (assessment, rejection, failure, back-out, cancellation).
    Note,
    /// A sign-off note (CH-6).
    SignOffNote,
    /// The review's findings (CH-7).
    ReviewFindings,
    /// The actor is neither the requester nor the implementer, and has not decided before (CH-4).
    SegregatedApprover,
    /// The actor is the named implementer (CH-6: implemented by the responsible owner).
    ActorIsImplementer,
    /// The actor is not the implementer (who verifies must not be who did it).
    ActorIsNotImplementer,
    /// The actor is the requester, or may manage any change.
    RequesterOrManager,
    /// The change was recorded retrospectively.
    Retrospective,
    /// The change was not recorded retrospectively.
    NotRetrospective,
    /// A retrospective change has its emergency approval (CH-8: brought back into compliance).
    RetrospectiveApproved,
}

/// One row: `action` takes a change of one of `types` from one of `from` to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Transition {
    /// The action.
    pub action: ChangeAction,
    /// The state it came from.
    pub from: &'static [ChangeState],
    /// The change types it applies to.
    pub types: &'static [ChangeType],
    /// The state it went to.
    pub to: Target,
    /// The operation (and so the roles) it needs.
    pub operation: Operation,
    /// The rules it needs besides the roles.
    pub requires: &'static [Requirement],
}

use ChangeAction as A;
use ChangeState as S;
use ChangeType as T;
use Operation as O;
use Requirement as R;

const ALL_TYPES: &[ChangeType] = &[T::Standard, T::Normal, T::Emergency];
const ASSESSED_TYPES: &[ChangeType] = &[T::Normal, T::Emergency];

/// Every transition of a change.
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        action: A::Submit,
        from: &[S::Draft],
        types: ASSESSED_TYPES,
        to: Target::To(S::Submitted),
        operation: O::RequestChange,
        requires: &[R::CompleteRequest, R::RequesterOrManager],
    },
    // A standard change is pre-approved by its template.
    Transition {
        action: A::Submit,
        from: &[S::Draft],
        types: &[T::Standard],
        to: Target::To(S::Approved),
        operation: O::RequestChange,
        requires: &[R::CompleteRequest, R::RequesterOrManager],
    },
    Transition {
        action: A::Assess,
        from: &[S::Submitted],
        types: ASSESSED_TYPES,
        to: Target::To(S::Assessed),
        operation: O::AssessChange,
        requires: &[R::Note],
    },
    Transition {
        action: A::Approve,
        from: &[S::Assessed],
        types: &[T::Normal, T::Standard],
        to: Target::To(S::Approved),
        operation: O::ApproveChange,
        requires: &[R::SegregatedApprover],
    },
    // Path (a): the emergency authority approves, assessed or not.
    Transition {
        action: A::Approve,
        from: &[S::Submitted, S::Assessed],
        types: &[T::Emergency],
        to: Target::To(S::Approved),
        operation: O::ApproveEmergencyChange,
        requires: &[R::SegregatedApprover, R::NotRetrospective],
    },
    // Path (b): the work is done; the approval comes after, within the deadline.
    Transition {
        action: A::Approve,
        from: &[S::Implemented, S::Verified],
        types: &[T::Emergency],
        to: Target::Same,
        operation: O::ApproveEmergencyChange,
        requires: &[R::SegregatedApprover, R::Retrospective],
    },
    Transition {
        action: A::Reject,
        from: &[S::Assessed],
        types: &[T::Normal, T::Standard],
        to: Target::To(S::Rejected),
        operation: O::ApproveChange,
        requires: &[R::SegregatedApprover, R::Note],
    },
    Transition {
        action: A::Reject,
        from: &[S::Submitted, S::Assessed],
        types: &[T::Emergency],
        to: Target::To(S::Rejected),
        operation: O::ApproveEmergencyChange,
        requires: &[R::SegregatedApprover, R::Note, R::NotRetrospective],
    },
    Transition {
        action: A::Schedule,
        from: &[S::Approved],
        types: ALL_TYPES,
        to: Target::To(S::Scheduled),
        operation: O::ScheduleChange,
        requires: &[R::Window],
    },
    Transition {
        action: A::Start,
        from: &[S::Scheduled],
        types: ALL_TYPES,
        to: Target::To(S::Implementing),
        operation: O::ImplementChange,
        requires: &[R::ActorIsImplementer],
    },
    // An approved emergency change is implemented at once; so is an approved standard change
    // (pre-authorised by its template: a pipeline starts it inside its window through the gate).
    Transition {
        action: A::Start,
        from: &[S::Approved],
        types: &[T::Emergency, T::Standard],
        to: Target::To(S::Implementing),
        operation: O::ImplementChange,
        requires: &[R::ActorIsImplementer],
    },
    Transition {
        action: A::Complete,
        from: &[S::Implementing],
        types: ALL_TYPES,
        to: Target::To(S::Implemented),
        operation: O::ImplementChange,
        requires: &[R::ActorIsImplementer],
    },
    Transition {
        action: A::Fail,
        from: &[S::Implementing],
        types: ALL_TYPES,
        to: Target::To(S::Failed),
        operation: O::ImplementChange,
        requires: &[R::ActorIsImplementer, R::Note],
    },
    Transition {
        action: A::BackOut,
        from: &[S::Failed],
        types: ALL_TYPES,
        to: Target::To(S::BackedOut),
        operation: O::ImplementChange,
        requires: &[R::ActorIsImplementer, R::Note],
    },
    Transition {
        action: A::Verify,
        from: &[S::Implemented],
        types: ALL_TYPES,
        to: Target::To(S::Verified),
        operation: O::VerifyChange,
        requires: &[R::ActorIsNotImplementer, R::SignOffNote],
    },
    Transition {
        action: A::Review,
        from: &[S::Verified, S::BackedOut],
        types: ALL_TYPES,
        to: Target::To(S::Reviewed),
        operation: O::ReviewChange,
        requires: &[R::ReviewFindings, R::RetrospectiveApproved],
    },
    // CH-7: normal and emergency changes close only after their review.
    Transition {
        action: A::Close,
        from: &[S::Reviewed],
        types: ALL_TYPES,
        to: Target::To(S::Closed),
        operation: O::CloseChange,
        requires: &[],
    },
    Transition {
        action: A::Close,
        from: &[S::Verified, S::BackedOut],
        types: &[T::Standard],
        to: Target::To(S::Closed),
        operation: O::CloseChange,
        requires: &[],
    },
    Transition {
        action: A::Cancel,
        from: &[S::Draft, S::Submitted, S::Assessed, S::Approved, S::Scheduled],
        types: ALL_TYPES,
        to: Target::To(S::Cancelled),
        operation: O::RequestChange,
        requires: &[R::RequesterOrManager, R::Note],
    },
];

/// The row for `action` on a change of `change_type` in `state`, if there is one.
pub fn find(action: ChangeAction, state: ChangeState, change_type: ChangeType) -> Option<&'static Transition> {
    TRANSITIONS.iter().find(|t| t.action == action && t.from.contains(&state) && t.types.contains(&change_type))
}

/// The actions the table allows from `state` for `change_type`, for error messages.
pub fn allowed_from(state: ChangeState, change_type: ChangeType) -> Vec<ChangeAction> {
    let mut actions: Vec<ChangeAction> = TRANSITIONS
        .iter()
        .filter(|t| t.from.contains(&state) && t.types.contains(&change_type))
        .map(|t| t.action)
        .collect();
    actions.dedup();
    actions
}
