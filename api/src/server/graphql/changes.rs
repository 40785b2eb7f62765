//! Change requests over GraphQL (CH-1 to CH-9, CM-3): `change` and `changes` inside `at(...)`
//! (a change as it stood at that position, its scope linked to the CIs at the same position,
//! the CI edits it authorised), a mutation per life-cycle transition, comments, links,
//! templates, and a subscription to change states. Resolvers read the projection; mutations
//! go through the core's change service, which decides with the roles held at that moment.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Enum, Guard, ID, InputObject, Object, SimpleObject, Subscription};
use cmdb_core::access::{Operation, permits};
use cmdb_core::change::decide::ChangeSettings;
use cmdb_core::change::service as change_service;
use cmdb_core::change::{self as domain, ChangeCommand, ChangeEvent, ChangeNumber, ChangeRecord};
use cmdb_core::ci::{ChangeId, CiId, TemplateId};
use cmdb_core::store::subscribe;
use cmdb_projections::changes::ChangeFilter;
use futures::{Stream, StreamExt};

use super::config::{Ci, parse_class, parse_id, state};
use super::scalars::{DateTime, Position};
use super::types::Role;
use super::{Requires, caller, metadata};
use crate::server::errors::{bad_input, core_error, forbidden, graphql_error, store_error};

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
#[graphql(remote = "cmdb_core::change::Decision")]
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
pub struct Change {
    record: Arc<ChangeRecord>,
    position: u64,
}

impl Change {
    pub fn new(record: ChangeRecord, position: u64) -> Change {
        Change { record: Arc::new(record), position }
    }

    pub fn record(&self) -> &ChangeRecord {
        &self.record
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

#[Object]
impl Change {
    async fn id(&self) -> ID {
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
    async fn conflicts(&self, ctx: &Context<'_>) -> Vec<super::calendar::Conflict> {
        let app = state(ctx);
        let graph = app.graph.read();
        let depth = app.settings.conflict_max_depth;
        let found = cmdb_projections::calendar::conflicts_of_change(&graph, self.position, &self.record, depth);
        super::calendar::conflicts_of(found, self.position)
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
    async fn assessment(&self) -> Option<super::policy::RiskAssessment> {
        self.record.assessment().map(super::policy::assessment_of)
    }

    /// Every assessment, oldest first.
    async fn assessments(&self) -> Vec<super::policy::RiskAssessment> {
        self.record.assessments.iter().map(super::policy::assessment_of).collect()
    }

    /// The approval policy's decision in force, with each required approval and who gave it
    /// (CH-4); `replay` re-runs it.
    async fn decision(&self) -> Option<super::policy::Decision> {
        super::policy::decision_of(&self.record)
    }

    /// Every recorded decision, oldest first (each assessment made one).
    async fn decisions(&self) -> Vec<super::policy::Decision> {
        self.record.assessments.iter().map(|entry| super::policy::decision_for(&self.record, entry)).collect()
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
        let first = super::query::page_size(first, app.settings.max_page_size)?;
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

#[derive(InputObject, Default)]
pub struct ChangeFilterInput {
    pub states: Option<Vec<ChangeState>>,
    pub types: Option<Vec<ChangeType>>,
    /// Changes whose scope names this CI.
    pub ci: Option<ID>,
    /// The requesting principal.
    pub requester: Option<String>,
    /// Changes whose requested window overlaps [windowFrom, windowTo).
    pub window_from: Option<DateTime>,
    pub window_to: Option<DateTime>,
}

/// A change id or number (`CHG-000042`) from a client.
fn parse_change_ref(text: &str) -> async_graphql::Result<Result<ChangeId, ChangeNumber>> {
    if text.trim().to_ascii_uppercase().starts_with("CHG-") {
        return text.parse::<ChangeNumber>().map(Err).map_err(|e| bad_input(e.to_string()));
    }
    text.parse::<ChangeId>().map(Ok).map_err(|e| bad_input(format!("{e}; or give a number such as CHG-000042")))
}

/// Resolves a change id or number against the log (not the projection: a number assigned a
/// moment ago is found).
pub async fn resolve_change(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<ChangeId> {
    match parse_change_ref(id.as_str())? {
        Ok(id) => Ok(id),
        Err(number) => change_service::find_by_number(state(ctx).store.as_ref(), number)
            .await
            .map_err(core_error)?
            .ok_or_else(|| graphql_error("NOT_FOUND", format!("no change {number}"))),
    }
}

/// `change(id:)` inside `at`.
pub fn change_at(ctx: &Context<'_>, id: &ID, position: u64) -> async_graphql::Result<Option<Change>> {
    let graph = state(ctx).graph.read();
    let book = graph.change_book();
    let id = match parse_change_ref(id.as_str())? {
        Ok(id) => Some(id),
        Err(number) => book.id_of(number, position),
    };
    Ok(id.and_then(|id| book.change_at(id, position)).map(|record| Change { record: Arc::new(record), position }))
}

/// `changes(filter:)` inside `at`.
pub fn changes_at(
    ctx: &Context<'_>,
    filter: Option<ChangeFilterInput>,
    first: Option<i32>,
    position: u64,
) -> async_graphql::Result<Vec<Change>> {
    let app = state(ctx);
    let first = super::query::page_size(first, app.settings.max_page_size)?;
    let filter = filter.unwrap_or_default();
    let core_filter = ChangeFilter {
        states: filter.states.map(|s| s.into_iter().map(Into::into).collect()),
        types: filter.types.map(|t| t.into_iter().map(Into::into).collect()),
        ci: filter.ci.as_ref().map(parse_id::<CiId>).transpose()?,
        requester: filter.requester,
        window_from: filter.window_from.map(|d| d.0),
        window_to: filter.window_to.map(|d| d.0),
        overdue_at: None,
    };
    let graph = app.graph.read();
    Ok(graph
        .change_book()
        .changes_at(position, &core_filter, first)
        .into_iter()
        .map(|record| Change { record: Arc::new(record), position })
        .collect())
}

/// One line of the overdue report.
#[derive(SimpleObject)]
pub struct OverdueChange {
    pub change: Change,
    pub overdue: Vec<Overdue>,
}

/// `overdueChanges(now:)` inside `at`: emergency changes whose approval or review is late.
pub fn overdue_at(ctx: &Context<'_>, now: Option<DateTime>, position: u64) -> Vec<OverdueChange> {
    let app = state(ctx);
    let now = now.map_or_else(|| app.clock.now(), |n| n.0);
    let graph = app.graph.read();
    graph
        .change_book()
        .overdue_at(position, now)
        .into_iter()
        .map(|(record, overdue)| OverdueChange {
            change: Change { record: Arc::new(record), position },
            overdue: overdue.into_iter().map(Into::into).collect(),
        })
        .collect()
}

#[derive(SimpleObject)]
pub struct ChangeTemplate {
    pub id: ID,
    pub name: String,
    pub title: String,
    pub description: String,
    pub back_out_plan: String,
    pub allowed_classes: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime,
    pub retired: bool,
}

pub fn templates_at(ctx: &Context<'_>, position: u64) -> Vec<ChangeTemplate> {
    let graph = state(ctx).graph.read();
    graph
        .change_book()
        .templates_at(position)
        .into_iter()
        .map(|t| ChangeTemplate {
            id: ID(t.template.template_id.to_string()),
            name: t.template.name,
            title: t.template.title,
            description: t.template.description,
            back_out_plan: t.template.back_out_plan,
            allowed_classes: t.template.allowed_classes.iter().map(|c| c.as_str().to_owned()).collect(),
            created_by: t.template.by,
            created_at: DateTime(t.created.recorded_at),
            retired: t.retired.is_some(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

#[derive(InputObject)]
pub struct WindowInput {
    pub start: DateTime,
    pub end: DateTime,
    /// An IANA time zone name; UTC when not given.
    pub time_zone: Option<String>,
}

impl From<WindowInput> for domain::Window {
    fn from(w: WindowInput) -> Self {
        domain::Window { start: w.start.0, end: w.end.0, time_zone: w.time_zone.unwrap_or_else(|| "UTC".into()) }
    }
}

#[derive(InputObject)]
pub struct PlannedCiInput {
    pub class: String,
    pub name: String,
}

#[derive(InputObject, Default)]
pub struct ScopeInput {
    /// Existing CIs the change touches.
    #[graphql(default)]
    pub cis: Vec<ID>,
    /// CIs the change will register: a later `registerCi` must match one (class and name).
    #[graphql(default)]
    pub planned: Vec<PlannedCiInput>,
}

#[derive(InputObject)]
pub struct LinkInput {
    pub kind: LinkKind,
    pub id: String,
}

#[derive(InputObject)]
pub struct DraftChangeInput {
    #[graphql(name = "type")]
    pub change_type: ChangeType,
    /// For a standard change: the pre-approved template (its description and back-out plan
    /// are the defaults).
    pub template: Option<ID>,
    /// Defaults to the template's title for a standard change.
    #[graphql(default)]
    pub title: String,
    pub description: Option<String>,
    pub justification: Option<String>,
    /// Required for normal and emergency changes before submission (CH-3).
    pub back_out_plan: Option<String>,
    pub window: Option<WindowInput>,
    /// The principal who will do the work.
    pub implementer: Option<String>,
    pub scope: Option<ScopeInput>,
    #[graphql(default)]
    pub links: Vec<LinkInput>,
}

/// Fields to change in a draft: a field given replaces; `clear` empties optional fields.
#[derive(InputObject, Default)]
pub struct AmendChangeInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub justification: Option<String>,
    pub back_out_plan: Option<String>,
    pub window: Option<WindowInput>,
    pub implementer: Option<String>,
    /// Replaces the whole scope.
    pub scope: Option<ScopeInput>,
    /// Replaces every link.
    pub links: Option<Vec<LinkInput>>,
    /// Optional fields to empty.
    #[graphql(default)]
    pub clear: Vec<ClearableField>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClearableField {
    Description,
    Justification,
    BackOutPlan,
    Window,
    Implementer,
}

#[derive(InputObject)]
pub struct ReviewInput {
    pub objective_met: bool,
    pub users_satisfied: bool,
    pub side_effects: Option<String>,
    #[graphql(default)]
    pub follow_up_actions: Vec<String>,
}

#[derive(InputObject)]
pub struct ChangeTemplateInput {
    pub name: String,
    pub title: String,
    pub description: String,
    pub back_out_plan: String,
    /// Classes its standard changes may touch.
    pub allowed_classes: Vec<String>,
}

/// Where a change command's events landed, and the change as it now stands.
#[derive(SimpleObject)]
pub struct ChangeResult {
    pub change: Option<Change>,
    /// The last position written: pass as `minPosition` to read your write.
    pub position: Position,
    pub first_position: Position,
}

#[derive(SimpleObject)]
pub struct TemplateResult {
    pub template: Option<ChangeTemplate>,
    pub position: Position,
}

fn scope(ctx: &Context<'_>, input: ScopeInput) -> async_graphql::Result<domain::Scope> {
    Ok(domain::Scope {
        cis: input.cis.iter().map(parse_id::<CiId>).collect::<Result<_, _>>()?,
        planned: input
            .planned
            .into_iter()
            .map(|p| Ok(domain::PlannedCi { class: parse_class(ctx, &p.class)?, name: p.name }))
            .collect::<async_graphql::Result<_>>()?,
    })
}

fn links(input: Vec<LinkInput>) -> Vec<domain::RecordLink> {
    input.into_iter().map(|l| domain::RecordLink { kind: l.kind.into(), id: l.id }).collect()
}

fn settings(ctx: &Context<'_>) -> ChangeSettings {
    let settings = &state(ctx).settings;
    ChangeSettings {
        emergency_review_deadline_hours: settings.emergency_review_deadline_hours,
        freeze_blocks_standard: settings.freeze_blocks_standard,
    }
}

/// Runs a change command and waits until the projection has applied it.
pub(super) async fn run(ctx: &Context<'_>, command: ChangeCommand) -> async_graphql::Result<(u64, u64)> {
    let app = state(ctx);
    let outcome = change_service::execute(app.store.as_ref(), &command, metadata(ctx)?, app.clock.now(), settings(ctx))
        .await
        .map_err(core_error)?;
    let wait = Duration::from_millis(app.settings.min_position_wait_ms);
    if !app.graph.wait_for(outcome.last_position, wait).await {
        return Err(graphql_error(
            "UNAVAILABLE",
            format!("the change is durable at position {} but the graph has not applied it yet", outcome.last_position),
        ));
    }
    Ok((outcome.first_position, outcome.last_position))
}

async fn change_result(
    ctx: &Context<'_>,
    change_id: ChangeId,
    command: ChangeCommand,
) -> async_graphql::Result<ChangeResult> {
    let (first, last) = run(ctx, command).await?;
    let graph = state(ctx).graph.read();
    Ok(ChangeResult {
        change: graph
            .change_book()
            .change_at(change_id, last)
            .map(|record| Change { record: Arc::new(record), position: last }),
        position: Position(last),
        first_position: Position(first),
    })
}

async fn transition(
    ctx: &Context<'_>,
    id: &ID,
    action: domain::ChangeAction,
    note: Option<String>,
    review: Option<domain::Review>,
) -> async_graphql::Result<ChangeResult> {
    let change_id = resolve_change(ctx, id).await?;
    // Assessing (and submitting a standard change) carries the risk facts from the graph at
    // its applied position (CH-2); approving first reassesses if a CI in scope changed since.
    let needs_change =
        matches!(action, domain::ChangeAction::Assess | domain::ChangeAction::Submit | domain::ChangeAction::Approve);
    let change = if needs_change {
        change_service::load_change(state(ctx).store.as_ref(), change_id).await.map_err(core_error)?
    } else {
        None
    };
    let mut facts = None;
    if let Some(change) = &change {
        let wants_facts = action == domain::ChangeAction::Assess
            || (action == domain::ChangeAction::Submit && change.change_type == domain::ChangeType::Standard);
        if wants_facts {
            facts = Some(Box::new(super::policy::facts_for(ctx, Some(change_id), &change.details)?.0));
        }
        if action == domain::ChangeAction::Approve && change.state == domain::ChangeState::Assessed {
            if let Some(entry) = change.assessment() {
                if super::policy::scope_changed_since(ctx, &change.details.scope, entry.assessment.facts.position) {
                    let (fresh, _) = super::policy::facts_for(ctx, Some(change_id), &change.details)?;
                    let reassess = ChangeCommand::Reassess {
                        change_id,
                        facts: Box::new(fresh),
                        trigger: domain::AssessmentTrigger::ScopeChanged,
                    };
                    run(ctx, reassess).await?;
                }
            }
        }
    }
    change_result(ctx, change_id, ChangeCommand::Act { change_id, action, note, review, facts }).await
}

/// The change as the log holds it now.
async fn load(ctx: &Context<'_>, change_id: ChangeId) -> async_graphql::Result<ChangeRecord> {
    change_service::load_change(state(ctx).store.as_ref(), change_id)
        .await
        .map_err(core_error)?
        .ok_or_else(|| graphql_error("NOT_FOUND", format!("no change {change_id}")))
}

/// The change type and details of a draft input (shared by `draftChange` and `whatIf`).
pub fn draft_details(
    ctx: &Context<'_>,
    input: DraftChangeInput,
) -> async_graphql::Result<(domain::ChangeType, domain::ChangeDetails)> {
    Ok((
        input.change_type.into(),
        domain::ChangeDetails {
            title: input.title,
            description: input.description,
            justification: input.justification,
            back_out_plan: input.back_out_plan,
            window: input.window.map(Into::into),
            implementer: input.implementer,
            scope: scope(ctx, input.scope.unwrap_or_default())?,
            links: links(input.links),
        },
    ))
}

/// Refuses unless the caller may approve normal or emergency changes, or may take part in
/// changes at all (an approval policy may name a service owner as the authority); the decider
/// checks the change's type and decision.
pub struct RequiresApprovalAuthority;

impl Guard for RequiresApprovalAuthority {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let caller = caller(ctx)?;
        if permits(&caller.roles, Operation::ApproveChange)
            || permits(&caller.roles, Operation::ApproveEmergencyChange)
            || permits(&caller.roles, Operation::CommentChange)
        {
            Ok(())
        } else {
            Err(forbidden(Operation::ApproveChange))
        }
    }
}

#[derive(Default)]
pub struct ChangeMutation;

#[Object]
impl ChangeMutation {
    /// Raises a change as a draft (CH-1). The caller is its requester.
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn draft_change(&self, ctx: &Context<'_>, input: DraftChangeInput) -> async_graphql::Result<ChangeResult> {
        let change_id = ChangeId(state(ctx).ids.next_id());
        let template_id = input.template.as_ref().map(parse_id::<TemplateId>).transpose()?;
        let (change_type, details) = draft_details(ctx, input)?;
        let command = ChangeCommand::Draft { change_id, change_type, template_id, details };
        change_result(ctx, change_id, command).await
    }

    /// Edits a draft (its requester, or a change manager).
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn amend_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: AmendChangeInput,
    ) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        let cleared = |field: ClearableField| input.clear.contains(&field);
        let optional = |value: Option<String>, field: ClearableField| {
            if cleared(field) { Some(None) } else { value.map(Some) }
        };
        let patch = domain::DetailsPatch {
            title: input.title.clone(),
            description: optional(input.description.clone(), ClearableField::Description),
            justification: optional(input.justification.clone(), ClearableField::Justification),
            back_out_plan: optional(input.back_out_plan.clone(), ClearableField::BackOutPlan),
            window: if cleared(ClearableField::Window) { Some(None) } else { input.window.map(|w| Some(w.into())) },
            implementer: optional(input.implementer.clone(), ClearableField::Implementer),
            scope: input.scope.map(|s| scope(ctx, s)).transpose()?,
            links: input.links.map(links),
        };
        change_result(ctx, change_id, ChangeCommand::Amend { change_id, patch }).await
    }

    /// Records an emergency change whose work is already done (CH-8): it starts implemented,
    /// and its emergency approval and review are due within emergency_review_deadline_hours.
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn record_retrospective_change(
        &self,
        ctx: &Context<'_>,
        input: DraftChangeInput,
    ) -> async_graphql::Result<ChangeResult> {
        if input.change_type != ChangeType::Emergency || input.template.is_some() {
            return Err(bad_input("only an emergency change (without a template) can be recorded retrospectively"));
        }
        let change_id = ChangeId(state(ctx).ids.next_id());
        let (_, details) = draft_details(ctx, input)?;
        change_result(ctx, change_id, ChangeCommand::RecordRetrospective { change_id, details }).await
    }

    /// Submits a draft: it gets its number; a standard change is approved by its template.
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn submit_change(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Submit, None, None).await
    }

    /// Assesses a submitted change (CH-2): the risk is computed from the impact graph at the
    /// head (services reached, their tiers and hours, the scope's recent failures) and the
    /// approval policy decides which approvals it needs (CH-4). The note holds the findings.
    #[graphql(guard = "Requires(Operation::AssessChange)")]
    async fn assess_change(&self, ctx: &Context<'_>, id: ID, note: String) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Assess, Some(note), None).await
    }

    /// Assesses an assessed change again (before approval): new facts, and a new decision by
    /// the policy in force now.
    #[graphql(guard = "Requires(Operation::AssessChange)")]
    async fn reassess_change(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        let change = change_service::load_change(state(ctx).store.as_ref(), change_id)
            .await
            .map_err(core_error)?
            .ok_or_else(|| graphql_error("NOT_FOUND", format!("no change {}", id.as_str())))?;
        let (facts, _) = super::policy::facts_for(ctx, Some(change_id), &change.details)?;
        let command =
            ChangeCommand::Reassess { change_id, facts: Box::new(facts), trigger: domain::AssessmentTrigger::Request };
        change_result(ctx, change_id, command).await
    }

    /// Approves (CH-4): an approver for a normal change, an emergency approver for an
    /// emergency one; never its requester or implementer; once per principal.
    #[graphql(guard = "RequiresApprovalAuthority")]
    async fn approve_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Approve, note, None).await
    }

    /// Rejects, with the reason.
    #[graphql(guard = "RequiresApprovalAuthority")]
    async fn reject_change(&self, ctx: &Context<'_>, id: ID, note: String) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Reject, Some(note), None).await
    }

    /// Schedules an approved change into its requested window.
    #[graphql(guard = "Requires(Operation::ScheduleChange)")]
    async fn schedule_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        let change = load(ctx, change_id).await?;
        let facts = match &change.details.window {
            Some(window) => super::calendar::schedule_facts_for(ctx, Some(change_id), &change.details.scope, window)?,
            None => Default::default(),
        };
        change_result(ctx, change_id, ChangeCommand::Schedule { change_id, note, facts: Box::new(facts) }).await
    }

    /// Moves a scheduled change to another window (CH-5): checked against freezes and
    /// conflicts as scheduling is; the earlier window stays on record.
    #[graphql(guard = "Requires(Operation::ScheduleChange)")]
    async fn reschedule_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        window: WindowInput,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        let change = load(ctx, change_id).await?;
        let window: domain::Window = window.into();
        let facts = super::calendar::schedule_facts_for(ctx, Some(change_id), &change.details.scope, &window)?;
        change_result(ctx, change_id, ChangeCommand::Reschedule { change_id, window, note, facts: Box::new(facts) })
            .await
    }

    /// Accepts a conflict with another change, with the reason (CH-5): scheduling then
    /// proceeds despite it; the acknowledgement shows on both changes.
    #[graphql(guard = "Requires(Operation::ScheduleChange)")]
    async fn acknowledge_conflict(
        &self,
        ctx: &Context<'_>,
        id: ID,
        with: ID,
        reason: String,
    ) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        let other = resolve_change(ctx, &with).await?;
        load(ctx, other).await?;
        change_result(ctx, change_id, ChangeCommand::AcknowledgeConflict { change_id, other, reason }).await
    }

    /// The implementer starts the work: from now, CI edits naming this change are allowed.
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn start_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Start, note, None).await
    }

    /// The implementer reports the work done.
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn complete_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Complete, note, None).await
    }

    /// The implementer reports a failure: CI edits stay allowed, to back out.
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn fail_change(&self, ctx: &Context<'_>, id: ID, note: String) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Fail, Some(note), None).await
    }

    /// The implementer reports the back-out done (CH-3).
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn back_out_change(&self, ctx: &Context<'_>, id: ID, note: String) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::BackOut, Some(note), None).await
    }

    /// Verifies and signs off (CH-6): not the implementer; the note says what was checked.
    #[graphql(guard = "Requires(Operation::VerifyChange)")]
    async fn verify_change(&self, ctx: &Context<'_>, id: ID, note: String) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Verify, Some(note), None).await
    }

    /// Records the post-implementation review (CH-7).
    #[graphql(guard = "Requires(Operation::ReviewChange)")]
    async fn review_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        review: ReviewInput,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        let review = domain::Review {
            objective_met: review.objective_met,
            users_satisfied: review.users_satisfied,
            side_effects: review.side_effects,
            follow_up_actions: review.follow_up_actions,
        };
        transition(ctx, &id, domain::ChangeAction::Review, note, Some(review)).await
    }

    /// Closes a change (normal and emergency ones only after their review).
    #[graphql(guard = "Requires(Operation::CloseChange)")]
    async fn close_change(
        &self,
        ctx: &Context<'_>,
        id: ID,
        note: Option<String>,
    ) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Close, note, None).await
    }

    /// Cancels a change that has not started (its requester, or a change manager).
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn cancel_change(&self, ctx: &Context<'_>, id: ID, note: String) -> async_graphql::Result<ChangeResult> {
        transition(ctx, &id, domain::ChangeAction::Cancel, Some(note), None).await
    }

    #[graphql(guard = "Requires(Operation::CommentChange)")]
    async fn comment_on_change(&self, ctx: &Context<'_>, id: ID, text: String) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        change_result(ctx, change_id, ChangeCommand::Comment { change_id, text }).await
    }

    /// Links an incident, problem, known error or other change (CH-9).
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn link_change(&self, ctx: &Context<'_>, id: ID, link: LinkInput) -> async_graphql::Result<ChangeResult> {
        let change_id = resolve_change(ctx, &id).await?;
        let link = domain::RecordLink { kind: link.kind.into(), id: link.id };
        change_result(ctx, change_id, ChangeCommand::Link { change_id, link }).await
    }

    /// Creates a pre-approved template for standard changes.
    #[graphql(guard = "Requires(Operation::ManageChangeTemplates)")]
    async fn create_change_template(
        &self,
        ctx: &Context<'_>,
        input: ChangeTemplateInput,
    ) -> async_graphql::Result<TemplateResult> {
        let template_id = TemplateId(state(ctx).ids.next_id());
        let allowed_classes = input.allowed_classes.iter().map(|c| parse_class(ctx, c)).collect::<Result<_, _>>()?;
        let command = ChangeCommand::CreateTemplate {
            template_id,
            name: input.name,
            title: input.title,
            description: input.description,
            back_out_plan: input.back_out_plan,
            allowed_classes,
        };
        template_result(ctx, template_id, command).await
    }

    /// Retires a template: no new standard changes from it.
    #[graphql(guard = "Requires(Operation::ManageChangeTemplates)")]
    async fn retire_change_template(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<TemplateResult> {
        let template_id = parse_id::<TemplateId>(&id)?;
        template_result(ctx, template_id, ChangeCommand::RetireTemplate { template_id, reason }).await
    }
}

async fn template_result(
    ctx: &Context<'_>,
    template_id: TemplateId,
    command: ChangeCommand,
) -> async_graphql::Result<TemplateResult> {
    let (_, last) = run(ctx, command).await?;
    let template = templates_at(ctx, last).into_iter().find(|t| t.id.as_str() == template_id.to_string());
    Ok(TemplateResult { template, position: Position(last) })
}

// ---------------------------------------------------------------------------------------------
// Subscription
// ---------------------------------------------------------------------------------------------

/// A change moving from one state to another, as it happens.
#[derive(SimpleObject, Clone)]
pub struct ChangeStateEvent {
    pub change_id: ID,
    pub number: Option<String>,
    pub action: Option<ChangeAction>,
    pub from: Option<ChangeState>,
    pub to: ChangeState,
    pub by: String,
    pub position: Position,
    pub recorded_at: DateTime,
}

#[derive(Default)]
pub struct ChangeSubscription;

/// Events a change-state subscription reads from the log per page.
const STATE_PAGE_EVENTS: usize = 500;

#[Subscription]
impl ChangeSubscription {
    /// Change state transitions from now on (or after `after`), of every change or of one.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn change_states(
        &self,
        ctx: &Context<'_>,
        change: Option<ID>,
        after: Option<Position>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ChangeStateEvent>>> {
        let app = state(ctx).clone();
        let slot = ctx
            .data_opt::<super::SubscriptionSlots>()
            .ok_or_else(|| graphql_error("BAD_REQUEST", "subscriptions are served over the WebSocket at /graphql/ws"))?
            .take()?;
        let only = match &change {
            Some(id) => Some(resolve_change(ctx, id).await?),
            None => None,
        };
        let after = match after {
            Some(p) => p.0,
            None => app.store.head().await.map_err(store_error)?.position,
        };
        let shutdown = app.shutdown.clone();
        let graph = app.graph.clone();
        let stream = subscribe(app.store.clone(), after, STATE_PAGE_EVENTS)
            .take_until(async move { shutdown.cancelled().await })
            .filter_map(move |next| {
                let graph = graph.clone();
                async move {
                    let record = match next {
                        Ok(record) => record,
                        Err(error) => return Some(Err(store_error(error))),
                    };
                    let wanted =
                        [ChangeEvent::SUBMITTED, ChangeEvent::TRANSITIONED, ChangeEvent::RETROSPECTIVE_RECORDED];
                    if !wanted.contains(&record.event_type.as_str()) {
                        return None;
                    }
                    let event = ChangeEvent::from_record(&record).ok()?;
                    let (change_id, action, from, to, by) = match &event {
                        ChangeEvent::Submitted(e) => {
                            (e.change_id, Some(domain::ChangeAction::Submit), Some(e.from), e.to, e.by.clone())
                        }
                        ChangeEvent::Transitioned(e) => (e.change_id, Some(e.action), Some(e.from), e.to, e.by.clone()),
                        ChangeEvent::RetrospectiveRecorded(e) => {
                            (e.change_id, None, None, domain::ChangeState::Implemented, e.by.clone())
                        }
                        _ => return None,
                    };
                    if only.is_some_and(|id| id != change_id) {
                        return None;
                    }
                    let number = match &event {
                        ChangeEvent::Submitted(e) => Some(e.number),
                        ChangeEvent::RetrospectiveRecorded(e) => Some(e.number),
                        _ => {
                            graph.wait_for(record.position, Duration::from_millis(1_000)).await;
                            graph.read().change_book().change_at(change_id, record.position).and_then(|c| c.number)
                        }
                    };
                    Some(Ok(ChangeStateEvent {
                        change_id: ID(change_id.to_string()),
                        number: number.map(|n| n.to_string()),
                        action: action.map(Into::into),
                        from: from.map(Into::into),
                        to: to.into(),
                        by,
                        position: Position(record.position),
                        recorded_at: DateTime(record.recorded_at),
                    }))
                }
            })
            .map(move |item| {
                let _held = &slot;
                item
            });
        Ok(stream)
    }
}
