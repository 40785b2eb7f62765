//! The release life cycle in one table (RL-1, RL-4, RL-6, RL-7): every transition, the
//! operation (and so the roles) it needs, and where it leads. Acceptance is signed by the role
//! the step names, so its row needs no operation of its own. The decider consults nothing
//! else, and the tests walk the same table.

use super::{ReleaseAction, ReleaseState};
use crate::access::Operation;

/// Who may make a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// Whoever may perform the operation.
    Operation(Operation),
    /// Whoever holds the role the acceptance step names (RL-4).
    StepRole,
    /// Recorded with a deployment's success or roll-back, by whoever reports it.
    Deployment,
}

/// One row: `action` takes a release from one of `from` to `to`.
#[derive(Clone, Copy, Debug)]
pub struct Transition {
    /// The action.
    pub action: ReleaseAction,
    /// The states it may come from.
    pub from: &'static [ReleaseState],
    /// Where it goes (`None`: it stays; an acceptance step that is not the last).
    pub to: Option<ReleaseState>,
    /// Who may make it.
    pub authority: Authority,
    /// Whether it needs a note (a reason, findings).
    pub needs_note: bool,
}

use Authority as W;
use ReleaseAction as A;
use ReleaseState as S;

/// Every transition of a release.
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        action: A::Build,
        from: &[S::Planned],
        to: Some(S::Built),
        authority: W::Operation(Operation::ManageReleases),
        needs_note: false,
    },
    Transition {
        action: A::Accept,
        from: &[S::Built, S::Accepted, S::Deployed],
        to: None,
        authority: W::StepRole,
        needs_note: false,
    },
    Transition {
        action: A::Deployed,
        from: &[S::Accepted, S::Deployed],
        to: Some(S::Deployed),
        authority: W::Deployment,
        needs_note: false,
    },
    Transition {
        action: A::RollBack,
        from: &[S::Accepted, S::Deployed],
        to: Some(S::RolledBack),
        authority: W::Deployment,
        needs_note: true,
    },
    Transition {
        action: A::Reject,
        from: &[S::Planned, S::Built, S::Accepted],
        to: Some(S::Rejected),
        authority: W::Operation(Operation::ManageReleases),
        needs_note: true,
    },
    Transition {
        action: A::Defer,
        from: &[S::Planned, S::Built, S::Accepted],
        to: Some(S::Deferred),
        authority: W::Operation(Operation::ManageReleases),
        needs_note: true,
    },
    Transition {
        action: A::Resume,
        from: &[S::Deferred],
        to: Some(S::Planned),
        authority: W::Operation(Operation::ManageReleases),
        needs_note: false,
    },
    Transition {
        action: A::Review,
        from: &[S::Deployed, S::RolledBack],
        to: Some(S::Reviewed),
        authority: W::Operation(Operation::ManageReleases),
        needs_note: true,
    },
    Transition {
        action: A::Close,
        from: &[S::Reviewed, S::Rejected],
        to: Some(S::Closed),
        authority: W::Operation(Operation::ManageReleases),
        needs_note: false,
    },
];

/// The row for `action` from `state`, if there is one.
pub fn find(action: ReleaseAction, state: ReleaseState) -> Option<&'static Transition> {
    TRANSITIONS.iter().find(|t| t.action == action && t.from.contains(&state))
}

/// The actions allowed from `state`, for error messages.
pub fn allowed_from(state: ReleaseState) -> Vec<ReleaseAction> {
    TRANSITIONS.iter().filter(|t| t.from.contains(&state)).map(|t| t.action).collect()
}
