//! The views of a change request (CH-1 to CH-9) shared by the change queries, the calendar and the
//! policy: the change with its transitions, approvals, scope, edits and conflicts.

use super::access::Role;
use super::cis::Ci;
use super::context::state;
use super::scalars::{DateTime, Position};
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use cmdb_core::change::{self as domain, ChangeRecord, ConflictFact};
use cmdb_core::ci::{ChangeId, CiId};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::ChangeType")]
pub enum ChangeType {
    Standard,
    Normal,
    Emergency,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::ChangeState")]
pub enum ChangeState {
    Draft,
    Submitted,
    Assessed,
    Approved,
    Rejected,
    Scheduled,
    Implementing,
    Implemented,
    Failed,
    BackedOut,
    Verified,
    Reviewed,
    Closed,
    Cancelled,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::ChangeAction")]
pub enum ChangeAction {
    Submit,
    Assess,
    Approve,
    Reject,
    Schedule,
    Start,
    Complete,
    Fail,
    BackOut,
    Verify,
    Review,
    Close,
    Cancel,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::LinkKind")]
pub enum LinkKind {
    Incident,
    Problem,
    KnownError,
    Change,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::Verdict")]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::Overdue")]
pub enum Overdue {
    /// A retrospective emergency change still lacks its emergency approval.
    Approval,
    /// An emergency change still lacks its post-implementation review.
    Review,
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// A change as it stood at one position.
#[derive(Clone)]
pub struct Change {
    pub(super) record: Arc<ChangeRecord>,
    pub(super) position: u64,
}

impl Change {
    pub fn new(record: ChangeRecord, position: u64) -> Change {
        Change { record: Arc::new(record), position }
    }

    pub fn record(&self) -> &ChangeRecord {
        &self.record
    }
}

#[Object]
impl Change {
    pub(crate) async fn id(&self) -> ID {
        ID(self.record.change_id.to_string())
    }

    /// `CHG-000001`; null while a draft.
    async fn number(&self) -> Option<String> {
        self.record.number.map(|n| n.to_string())
    }

    #[graphql(name = "type")]
    async fn change_type(&self) -> ChangeType {
        self.record.change_type.into()
    }

    async fn state(&self) -> ChangeState {
        self.record.state.into()
    }

    async fn title(&self) -> &str {
        &self.record.details.title
    }

    async fn description(&self) -> Option<&str> {
        self.record.details.description.as_deref()
    }

    async fn justification(&self) -> Option<&str> {
        self.record.details.justification.as_deref()
    }

    /// What is done if the change fails (CH-3).
    async fn back_out_plan(&self) -> Option<&str> {
        self.record.details.back_out_plan.as_deref()
    }

    async fn window(&self) -> Option<ChangeWindow> {
        self.record.details.window.as_ref().map(|w| ChangeWindow {
            start: DateTime(w.start),
            end: DateTime(w.end),
            time_zone: w.time_zone.clone(),
        })
    }

    /// The principal who raised it.
    async fn requester(&self) -> &str {
        &self.record.requester
    }

    /// The principal responsible for the work (CH-6).
    async fn implementer(&self) -> Option<&str> {
        self.record.details.implementer.as_deref()
    }

    /// The template a standard change was made from.
    async fn template(&self, ctx: &Context<'_>) -> Option<TemplateRef> {
        let id = self.record.template_id?;
        let graph = state(ctx).graph.read();
        let name = graph.change_book().template_at(id, self.position).map(|t| t.template.name).unwrap_or_default();
        Some(TemplateRef { id: ID(id.to_string()), name })
    }

    /// Recorded after the work was done (an emergency change, CH-8 path b).
    async fn retrospective(&self) -> bool {
        self.record.retrospective
    }

    async fn scope(&self) -> ChangeScope {
        ChangeScope { record: self.record.clone(), position: self.position }
    }

    /// Incidents, problems, known errors and other changes (CH-9).
    async fn links(&self) -> Vec<LinkedRecord> {
        self.record.details.links.iter().map(|l| LinkedRecord { kind: l.kind.into(), id: l.id.clone() }).collect()
    }

    /// Every state it went through: who, when, why.
    async fn transitions(&self) -> Vec<ChangeTransition> {
        self.record
            .transitions
            .iter()
            .map(|t| ChangeTransition {
                action: t.action.map(Into::into),
                from: t.from.map(Into::into),
                to: t.to.into(),
                by: t.by.clone(),
                at: DateTime(t.at.recorded_at),
                position: Position(t.at.position),
                note: t.note.clone(),
            })
            .collect()
    }

    async fn approvals(&self) -> Vec<Approval> {
        self.record.approvals.iter().map(|entry| Approval { entry: entry.clone() }).collect()
    }

    /// Its conflicts with the changes scheduled at this position whose windows overlap (CH-5).
    async fn conflicts(&self, ctx: &Context<'_>) -> Vec<super::change_views::Conflict> {
        let app = state(ctx);
        let graph = app.graph.read();
        let depth = app.settings.conflict_max_depth;
        let found = cmdb_projections::calendar::conflicts_of_change(&graph, self.position, &self.record, depth);
        super::change_views::conflicts_of(found, self.position)
    }

    /// Conflicts accepted, with reasons.
    async fn acknowledged_conflicts(&self) -> Vec<AcknowledgedConflict> {
        self.record
            .acknowledged
            .iter()
            .map(|(a, at)| AcknowledgedConflict {
                with_change_id: ID(a.other.to_string()),
                reason: a.reason.clone(),
                by: a.by.clone(),
                at: DateTime(at.recorded_at),
            })
            .collect()
    }

    /// Freeze windows it was scheduled into (an emergency change passes them, flagged).
    async fn in_freeze(&self) -> Vec<String> {
        self.record.in_freeze.iter().map(|h| h.name.clone()).collect()
    }

    /// Earlier windows, oldest first.
    async fn reschedules(&self) -> Vec<Reschedule> {
        self.record
            .reschedules
            .iter()
            .map(|(w, by, at)| Reschedule {
                previous_start: DateTime(w.start),
                previous_end: DateTime(w.end),
                by: by.clone(),
                at: DateTime(at.recorded_at),
            })
            .collect()
    }

    /// The risk assessment in force (the latest; CH-2).
    async fn assessment(&self) -> Option<super::risk::RiskAssessment> {
        self.record.assessment().map(|entry| super::risk::assessment_of(self.record.change_id, entry))
    }

    /// Every assessment, oldest first.
    async fn assessments(&self) -> Vec<super::risk::RiskAssessment> {
        self.record.assessments.iter().map(|entry| super::risk::assessment_of(self.record.change_id, entry)).collect()
    }

    /// The approval policy's decision in force, with each required approval and who gave it
    /// (CH-4); `replay` re-runs it.
    async fn decision(&self) -> Option<super::risk::DecisionView> {
        super::risk::decision_of(&self.record)
    }

    /// Every recorded decision, oldest first (each assessment made one).
    async fn decisions(&self) -> Vec<super::risk::DecisionView> {
        self.record.assessments.iter().map(|entry| super::risk::decision_for(&self.record, entry)).collect()
    }

    async fn comments(&self) -> Vec<ChangeComment> {
        self.record
            .comments
            .iter()
            .map(|c| ChangeComment {
                by: c.by.clone(),
                text: c.text.clone(),
                at: DateTime(c.at.recorded_at),
                position: Position(c.at.position),
            })
            .collect()
    }

    /// The verification sign-off (CH-6).
    async fn sign_off(&self) -> Option<SignOff> {
        self.record.sign_off.as_ref().map(|s| SignOff {
            by: s.by.clone(),
            note: s.note.clone(),
            at: DateTime(s.at.recorded_at),
        })
    }

    /// The post-implementation review (CH-7).
    async fn review(&self) -> Option<ChangeReview> {
        self.record.review.as_ref().map(|r| ChangeReview {
            objective_met: r.review.objective_met,
            users_satisfied: r.review.users_satisfied,
            side_effects: r.review.side_effects.clone(),
            follow_up_actions: r.review.follow_up_actions.clone(),
            by: r.by.clone(),
            note: r.note.clone(),
            at: DateTime(r.at.recorded_at),
        })
    }

    async fn approval_due_at(&self) -> Option<DateTime> {
        self.record.approval_due_at.map(DateTime)
    }

    async fn review_due_at(&self) -> Option<DateTime> {
        self.record.review_due_at.map(DateTime)
    }

    /// What is overdue at `now` (default: the server's clock).
    async fn overdue(&self, ctx: &Context<'_>, now: Option<DateTime>) -> Vec<Overdue> {
        let now = now.map_or_else(|| state(ctx).clock.now(), |n| n.0);
        self.record.overdue(now).into_iter().map(Into::into).collect()
    }

    /// The actions the life-cycle table allows from the current state (roles and other rules
    /// still apply).
    async fn allowed_actions(&self) -> Vec<ChangeAction> {
        domain::table::allowed_from(self.record.state, self.record.change_type).into_iter().map(Into::into).collect()
    }

    /// The CI edits it authorised, up to the view's position (CM-3, CM-8).
    async fn edits(&self, ctx: &Context<'_>, first: Option<i32>) -> async_graphql::Result<Vec<ChangeEdit>> {
        let app = state(ctx);
        let first = super::log::page_size(first, app.settings.max_page_size)?;
        let graph = app.graph.read();
        Ok(graph
            .edits_under(self.record.change_id, &self.record.details.scope.cis, self.position)
            .into_iter()
            .take(first)
            .map(|(ci_id, entry)| ChangeEdit { ci_id, entry: entry.clone() })
            .collect())
    }

    async fn created_at(&self) -> DateTime {
        DateTime(self.record.created.recorded_at)
    }

    async fn updated_at(&self) -> DateTime {
        DateTime(self.record.updated.recorded_at)
    }

    /// The position of its last event (at or before the view's).
    async fn updated_position(&self) -> Position {
        Position(self.record.updated.position)
    }
}

#[derive(SimpleObject)]
pub struct AcknowledgedConflict {
    pub with_change_id: ID,
    pub reason: String,
    pub by: String,
    pub at: DateTime,
}

#[derive(SimpleObject)]
pub struct Reschedule {
    pub previous_start: DateTime,
    pub previous_end: DateTime,
    pub by: String,
    pub at: DateTime,
}

#[derive(SimpleObject)]
pub struct ChangeWindow {
    pub start: DateTime,
    pub end: DateTime,
    /// The IANA time zone the requester gave (`Europe/Paris`).
    pub time_zone: String,
}

#[derive(SimpleObject)]
pub struct LinkedRecord {
    pub kind: LinkKind,
    pub id: String,
}

#[derive(SimpleObject)]
pub struct ChangeTransition {
    /// Null for the draft's creation and a retrospective recording.
    pub action: Option<ChangeAction>,
    pub from: Option<ChangeState>,
    pub to: ChangeState,
    /// The principal who made it.
    pub by: String,
    pub at: DateTime,
    pub position: Position,
    pub note: Option<String>,
}

pub struct Approval {
    entry: domain::ApprovalEntry,
}

#[Object]
impl Approval {
    async fn by(&self) -> &str {
        &self.entry.by
    }

    async fn decision(&self) -> ApprovalDecision {
        self.entry.decision.into()
    }

    /// The role the decision was made with; `null` when the approval policy's decision named
    /// the principal (a service owner) rather than a role.
    async fn authority(&self) -> Option<Role> {
        self.entry.authority.map(Into::into)
    }

    /// The reasons of the decision's requirements this approval counted towards (CH-4).
    async fn counts_for(&self) -> &[String] {
        &self.entry.counts_for
    }

    /// Every role the principal held when deciding (CH-4: that is what counts).
    async fn roles_held(&self) -> Vec<Role> {
        self.entry.roles_held.iter().copied().map(Into::into).collect()
    }

    /// Whether the principal holds the authority today; a later revocation does not undo the
    /// decision, and the record shows both.
    async fn holds_authority_now(&self, ctx: &Context<'_>) -> bool {
        let access = state(ctx).access.snapshot();
        access
            .principals
            .get(&self.entry.by)
            .is_some_and(|p| self.entry.authority.is_none_or(|authority| p.roles.contains(&authority)))
    }

    async fn note(&self) -> Option<&str> {
        self.entry.note.as_deref()
    }

    /// Given after the work was done (a retrospective emergency change).
    async fn retrospective(&self) -> bool {
        self.entry.retrospective
    }

    async fn at(&self) -> DateTime {
        DateTime(self.entry.at.recorded_at)
    }

    async fn position(&self) -> Position {
        Position(self.entry.at.position)
    }
}

#[derive(SimpleObject)]
pub struct ChangeComment {
    pub by: String,
    pub text: String,
    pub at: DateTime,
    pub position: Position,
}

#[derive(SimpleObject)]
pub struct ChangeReview {
    pub objective_met: bool,
    pub users_satisfied: bool,
    pub side_effects: Option<String>,
    pub follow_up_actions: Vec<String>,
    pub by: String,
    pub note: Option<String>,
    pub at: DateTime,
}

#[derive(SimpleObject)]
pub struct SignOff {
    pub by: String,
    pub note: String,
    pub at: DateTime,
}

/// A CI the change names: its id, and the CI at the view's position.
pub struct ScopeCi {
    id: CiId,
    position: u64,
}

#[Object]
impl ScopeCi {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// The CI as it stood at the view's position.
    async fn ci(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        graph.ci_at(self.id, self.position).map(|ci| Ci::new(&graph, ci, self.position))
    }
}

/// A CI the change plans to register.
pub struct PlannedCi {
    plan: domain::PlannedCi,
    change: ChangeId,
    position: u64,
}

#[Object]
impl PlannedCi {
    async fn class(&self) -> &'static str {
        self.plan.class.as_str()
    }

    async fn name(&self) -> &str {
        &self.plan.name
    }

    /// The CI registered under this change for it, once there is one.
    async fn registered(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        let ci = graph.ci_by_name(self.plan.class, &self.plan.name, self.position)?;
        let (_, history) = graph.history(ci.id)?;
        let under_this = history.first().is_some_and(|h| h.authorized_by == Some(self.change));
        under_this.then(|| Ci::new(&graph, ci, self.position))
    }
}

pub struct ChangeScope {
    record: Arc<ChangeRecord>,
    position: u64,
}

#[Object]
impl ChangeScope {
    async fn cis(&self) -> Vec<ScopeCi> {
        self.record.details.scope.cis.iter().map(|id| ScopeCi { id: *id, position: self.position }).collect()
    }

    async fn planned(&self) -> Vec<PlannedCi> {
        self.record
            .details
            .scope
            .planned
            .iter()
            .map(|plan| PlannedCi { plan: plan.clone(), change: self.record.change_id, position: self.position })
            .collect()
    }
}

/// A CI edit a change authorised.
pub struct ChangeEdit {
    ci_id: CiId,
    entry: cmdb_projections::graph::HistoryEntry,
}

#[Object]
impl ChangeEdit {
    async fn position(&self) -> Position {
        Position(self.entry.position)
    }

    async fn recorded_at(&self) -> DateTime {
        DateTime(self.entry.recorded_at)
    }

    #[graphql(name = "type")]
    async fn event_type(&self) -> &'static str {
        self.entry.event_type.as_str()
    }

    async fn ci_id(&self) -> ID {
        ID(self.ci_id.to_string())
    }

    /// The CI as this edit left it.
    async fn ci(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        graph.ci_at(self.ci_id, self.entry.position).map(|ci| Ci::new(&graph, ci, self.entry.position))
    }

    async fn principal(&self) -> &str {
        &self.entry.principal
    }

    async fn relationship_id(&self) -> Option<ID> {
        self.entry.relationship.map(|r| ID(r.to_string()))
    }
}

#[derive(SimpleObject)]
pub struct TemplateRef {
    pub id: ID,
    pub name: String,
}

/// A conflict between two changes whose windows overlap.
pub struct Conflict {
    fact: ConflictFact,
    position: u64,
}

#[Object]
impl Conflict {
    /// The other change.
    async fn change(&self, ctx: &Context<'_>) -> Option<Change> {
        let graph = state(ctx).graph.read();
        let record = graph.change_book().change_at(self.fact.other, self.position)?;
        Some(Change { record: Arc::new(record), position: self.position })
    }
    async fn other_number(&self) -> &str {
        &self.fact.other_label
    }
    async fn reason(&self) -> &str {
        &self.fact.reason
    }
    /// The CIs from one scope to the other.
    async fn path(&self, ctx: &Context<'_>) -> Vec<Ci> {
        let graph = state(ctx).graph.read();
        self.fact
            .path
            .iter()
            .filter_map(|id| graph.ci_at(*id, self.position).map(|c| Ci::new(&graph, c, self.position)))
            .collect()
    }
    /// The other change acknowledged this conflict.
    async fn acknowledged_by_other(&self) -> bool {
        self.fact.acknowledged_by_other
    }
}

pub fn conflicts_of(facts: Vec<ConflictFact>, position: u64) -> Vec<Conflict> {
    facts.into_iter().map(|fact| Conflict { fact, position }).collect()
}
