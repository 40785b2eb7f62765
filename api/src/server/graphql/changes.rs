//! Change requests over GraphQL: the reads of `at(...)`, the inputs, a mutation per life-cycle
//! transition (each run by the application layer), templates, and the subscription to transitions.

use super::change_views::*;
use super::context::{Requires, app, caller, metadata, parse_change_ref, parse_class, parse_id, resolve_change, state};
use super::scalars::{DateTime, Position};
use crate::app::Written;
use crate::server::errors::{Code, app_error, bad_input, coded, forbidden, store_error};
use async_graphql::{Context, Enum, Guard, ID, InputObject, Object, SimpleObject, Subscription};
use cmdb_core::access::{Operation, permits};
use cmdb_core::change::{self as domain, ChangeCommand, ChangeEvent};
use cmdb_core::ci::{ChangeId, CiId, TemplateId};
use cmdb_core::store::subscribe;
use cmdb_projections::changes::ChangeFilter;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

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

/// `change(id:)` inside `at`.
pub fn change_at(ctx: &Context<'_>, id: &ID, position: u64) -> async_graphql::Result<Option<Change>> {
    let reference = parse_change_ref(id)?;
    let graph = state(ctx).graph.read();
    let book = graph.change_book();
    let id = reference.resolve_at(book, position);
    Ok(id.and_then(|id| book.change_at(id, position)).map(|record| Change { record: Arc::new(record), position }))
}

/// `changes(filter:)` inside `at`.
pub fn changes_at(
    ctx: &Context<'_>,
    filter: Option<ChangeFilterInput>,
    page: super::paging::PageArgs,
    position: u64,
) -> async_graphql::Result<ChangeConnection> {
    let app = state(ctx);
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
    // Newest draft first; a cursor is the position the change was drafted at, so it stays
    // valid while new changes arrive at the head.
    let all = graph.change_book().changes_at(position, &core_filter, usize::MAX);
    let drafted =
        |cursor: &str| cursor.parse::<u64>().map_err(|_| bad_input(format!("{cursor:?} is not a cursor of this list")));
    let (start, end) = page.range(
        all.len(),
        app.settings.max_page_size,
        |c| drafted(c).map(|p| all.partition_point(|x| x.created.position >= p)),
        |c| drafted(c).map(|p| all.partition_point(|x| x.created.position > p)),
    )?;
    let page_info = super::paging::page_info(start, end, all.len(), |i| all[i].created.position.to_string());
    let total_count = all.len();
    let nodes: Vec<Change> = all
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|record| Change { record: Arc::new(record), position })
        .collect();
    Ok(ChangeConnection { nodes, page_info, total_count })
}

/// A page of changes, newest first (Relay: `edges` with cursors, or `nodes`).
pub struct ChangeConnection {
    nodes: Vec<Change>,
    page_info: super::paging::PageInfo,
    total_count: usize,
}

/// A change and its cursor.
#[derive(SimpleObject)]
pub struct ChangeEdge {
    /// Where the change was drafted: pass as `after` or `before`.
    pub cursor: String,
    pub node: Change,
}

#[Object]
impl ChangeConnection {
    async fn edges(&self) -> Vec<ChangeEdge> {
        self.nodes
            .iter()
            .map(|c| ChangeEdge { cursor: c.record.created.position.to_string(), node: c.clone() })
            .collect()
    }

    async fn nodes(&self) -> &[Change] {
        &self.nodes
    }

    async fn page_info(&self) -> &super::paging::PageInfo {
        &self.page_info
    }

    /// How many changes match the filter.
    async fn total_count(&self) -> usize {
        self.total_count
    }
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

/// The change as the graph holds it just after `written`, and where it landed.
fn change_result(ctx: &Context<'_>, change_id: ChangeId, written: Written) -> ChangeResult {
    let last = written.last_position;
    let graph = state(ctx).graph.read();
    ChangeResult {
        change: graph
            .change_book()
            .change_at(change_id, last)
            .map(|record| Change { record: Arc::new(record), position: last }),
        position: Position(last),
        first_position: Position(written.first_position),
    }
}

/// Runs a change command through the application layer.
async fn run_change(
    ctx: &Context<'_>,
    change_id: ChangeId,
    command: ChangeCommand,
) -> async_graphql::Result<ChangeResult> {
    let written = app(ctx).change(&command, metadata(ctx)?).await.map_err(app_error)?;
    Ok(change_result(ctx, change_id, written))
}

/// A life-cycle transition, through the application layer (which adds the facts it needs).
async fn transition(
    ctx: &Context<'_>,
    id: &ID,
    action: domain::ChangeAction,
    note: Option<String>,
    review: Option<domain::Review>,
) -> async_graphql::Result<ChangeResult> {
    let change_id = resolve_change(ctx, id).await?;
    let written = app(ctx).transition(change_id, action, note, review, metadata(ctx)?).await.map_err(app_error)?;
    Ok(change_result(ctx, change_id, written))
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
        run_change(ctx, change_id, command).await
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
        run_change(ctx, change_id, ChangeCommand::Amend { change_id, patch }).await
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
        run_change(ctx, change_id, ChangeCommand::RecordRetrospective { change_id, details }).await
    }

    /// Submits a draft: it gets its number; a standard change is approved by its template.
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn submit_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, None)?;
        transition(ctx, &id, domain::ChangeAction::Submit, note, None).await
    }

    /// Assesses a submitted change (CH-2): the risk is computed from the impact graph at the
    /// head (services reached, their tiers and hours, the scope's recent failures) and the
    /// approval policy decides which approvals it needs (CH-4). The note holds the findings.
    #[graphql(guard = "Requires(Operation::AssessChange)")]
    async fn assess_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Assess, note, None).await
    }

    /// Assesses an assessed change again (before approval): new facts, and a new decision by
    /// the policy in force now.
    #[graphql(guard = "Requires(Operation::AssessChange)")]
    async fn reassess_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id}")] id: Option<ID>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, _) = action_target(input, id, None)?;
        let change_id = resolve_change(ctx, &id).await?;
        let written = app(ctx).reassess(change_id, metadata(ctx)?).await.map_err(app_error)?;
        Ok(change_result(ctx, change_id, written))
    }

    /// Approves (CH-4): an approver for a normal change, an emergency approver for an
    /// emergency one; never its requester or implementer; once per principal.
    #[graphql(guard = "RequiresApprovalAuthority")]
    async fn approve_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Approve, note, None).await
    }

    /// Rejects, with the reason.
    #[graphql(guard = "RequiresApprovalAuthority")]
    async fn reject_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Reject, note, None).await
    }

    /// Schedules an approved change into its requested window.
    #[graphql(guard = "Requires(Operation::ScheduleChange)")]
    async fn schedule_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        let change_id = resolve_change(ctx, &id).await?;
        let written = app(ctx).schedule(change_id, note, metadata(ctx)?).await.map_err(app_error)?;
        Ok(change_result(ctx, change_id, written))
    }

    /// Moves a scheduled change to another window (CH-5): checked against freezes and
    /// conflicts as scheduling is; the earlier window stays on record.
    #[graphql(guard = "Requires(Operation::ScheduleChange)")]
    async fn reschedule_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, window, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, window, note}")] window: Option<WindowInput>,
        #[graphql(deprecation = "pass input: {id, window, note}")] note: Option<String>,
        input: Option<RescheduleChangeInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let any_loose = id.is_some() || window.is_some() || note.is_some();
        let loose = id.zip(window).map(|(id, window)| RescheduleChangeInput { id, window, note });
        let RescheduleChangeInput { id, window, note } =
            super::inputs::input_or(input, loose, any_loose, "{id, window, note}")?;
        let change_id = resolve_change(ctx, &id).await?;
        let written = app(ctx).reschedule(change_id, window.into(), note, metadata(ctx)?).await.map_err(app_error)?;
        Ok(change_result(ctx, change_id, written))
    }

    /// Accepts a conflict with another change, with the reason (CH-5): scheduling then
    /// proceeds despite it; the acknowledgement shows on both changes.
    #[graphql(guard = "Requires(Operation::ScheduleChange)")]
    async fn acknowledge_conflict(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, with, reason}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, with, reason}")] with: Option<ID>,
        #[graphql(deprecation = "pass input: {id, with, reason}")] reason: Option<String>,
        input: Option<AcknowledgeConflictInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let any_loose = id.is_some() || with.is_some() || reason.is_some();
        let loose = id.zip(with).zip(reason).map(|((id, with), reason)| AcknowledgeConflictInput { id, with, reason });
        let AcknowledgeConflictInput { id, with, reason } =
            super::inputs::input_or(input, loose, any_loose, "{id, with, reason}")?;
        let change_id = resolve_change(ctx, &id).await?;
        let other = resolve_change(ctx, &with).await?;
        crate::app::changes::load(app(ctx).store.as_ref(), other).await.map_err(app_error)?;
        run_change(ctx, change_id, ChangeCommand::AcknowledgeConflict { change_id, other, reason }).await
    }

    /// The implementer starts the work: from now, CI edits naming this change are allowed.
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn start_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Start, note, None).await
    }

    /// The implementer reports the work done.
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn complete_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Complete, note, None).await
    }

    /// The implementer reports a failure: CI edits stay allowed, to back out.
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn fail_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Fail, note, None).await
    }

    /// The implementer reports the back-out done (CH-3).
    #[graphql(guard = "Requires(Operation::ImplementChange)")]
    async fn back_out_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::BackOut, note, None).await
    }

    /// Verifies and signs off (CH-6): not the implementer; the note says what was checked.
    #[graphql(guard = "Requires(Operation::VerifyChange)")]
    async fn verify_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Verify, note, None).await
    }

    /// Records the post-implementation review (CH-7).
    #[graphql(guard = "Requires(Operation::ReviewChange)")]
    async fn review_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, review, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, review, note}")] review: Option<ReviewInput>,
        #[graphql(deprecation = "pass input: {id, review, note}")] note: Option<String>,
        input: Option<ReviewChangeInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, review, note) = match (input, id, review) {
            (Some(input), None, None) if note.is_none() => (input.id, input.review, input.note),
            (None, Some(id), Some(review)) => (id, review, note),
            _ => return Err(bad_input("give input: {id, review, note} (or the deprecated id and review), not both")),
        };
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
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Close, note, None).await
    }

    /// Cancels a change that has not started (its requester, or a change manager).
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn cancel_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, note}")] note: Option<String>,
        input: Option<ChangeActionInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let (id, note) = action_target(input, id, note)?;
        transition(ctx, &id, domain::ChangeAction::Cancel, note, None).await
    }

    #[graphql(guard = "Requires(Operation::CommentChange)")]
    async fn comment_on_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, text}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, text}")] text: Option<String>,
        input: Option<CommentOnChangeInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let any_loose = id.is_some() || text.is_some();
        let loose = id.zip(text).map(|(id, text)| CommentOnChangeInput { id, text });
        let CommentOnChangeInput { id, text } = super::inputs::input_or(input, loose, any_loose, "{id, text}")?;
        let change_id = resolve_change(ctx, &id).await?;
        run_change(ctx, change_id, ChangeCommand::Comment { change_id, text }).await
    }

    /// Links an incident, problem, known error or other change (CH-9).
    #[graphql(guard = "Requires(Operation::RequestChange)")]
    async fn link_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, link}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, link}")] link: Option<LinkInput>,
        input: Option<LinkChangeInput>,
    ) -> async_graphql::Result<ChangeResult> {
        let any_loose = id.is_some() || link.is_some();
        let loose = id.zip(link).map(|(id, link)| LinkChangeInput { id, link });
        let LinkChangeInput { id, link } = super::inputs::input_or(input, loose, any_loose, "{id, link}")?;
        let change_id = resolve_change(ctx, &id).await?;
        let link = domain::RecordLink { kind: link.kind.into(), id: link.id };
        run_change(ctx, change_id, ChangeCommand::Link { change_id, link }).await
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
        #[graphql(deprecation = "pass input: {id, reason}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, reason}")] reason: Option<String>,
        input: Option<RetireChangeTemplateInput>,
    ) -> async_graphql::Result<TemplateResult> {
        let any_loose = id.is_some() || reason.is_some();
        let loose = id.map(|id| RetireChangeTemplateInput { id, reason });
        let RetireChangeTemplateInput { id, reason } =
            super::inputs::input_or(input, loose, any_loose, "{id, reason}")?;
        let template_id = parse_id::<TemplateId>(&id)?;
        template_result(ctx, template_id, ChangeCommand::RetireTemplate { template_id, reason }).await
    }
}

async fn template_result(
    ctx: &Context<'_>,
    template_id: TemplateId,
    command: ChangeCommand,
) -> async_graphql::Result<TemplateResult> {
    let last = app(ctx).change(&command, metadata(ctx)?).await.map_err(app_error)?.last_position;
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
            .ok_or_else(|| coded(Code::BadRequest, "subscriptions are served over the WebSocket at /graphql/ws"))?
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

/// Change requests at one position.
pub struct ChangesAt {
    pub(super) position: u64,
}

#[Object]
impl ChangesAt {
    /// One change request by id or number (`CHG-000042`), as it stood here.
    async fn change(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<super::change_views::Change>> {
        super::changes::change_at(ctx, &id, self.position)
    }

    /// Change requests as they stood here, newest first, filtered by state, type, a CI in
    /// their scope, requester or requested window.
    async fn changes(
        &self,
        ctx: &Context<'_>,
        filter: Option<super::changes::ChangeFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<super::changes::ChangeConnection> {
        let page = super::paging::PageArgs { first, after, last, before };
        super::changes::changes_at(ctx, filter, page, self.position)
    }

    /// The overdue report (CH-8): emergency changes whose emergency approval or review is
    /// late at `now` (default: the server's clock).
    async fn overdue_changes(&self, ctx: &Context<'_>, now: Option<DateTime>) -> Vec<super::changes::OverdueChange> {
        super::changes::overdue_at(ctx, now, self.position)
    }

    /// Standard-change templates.
    async fn change_templates(&self, ctx: &Context<'_>) -> Vec<super::changes::ChangeTemplate> {
        super::changes::templates_at(ctx, self.position)
    }
}

/// The change a life-cycle action applies to, and the note it carries: the input object every
/// transition takes (`approveChange(input: {id: "CHG-000042", note: "..."})`).
#[derive(async_graphql::InputObject)]
pub struct ChangeActionInput {
    /// The change's id or number (`CHG-000042`).
    pub id: ID,
    /// The note: findings, a reason, what was checked (some actions require one).
    pub note: Option<String>,
}

/// `input`, or the deprecated loose `id` and `note`: exactly one of the two ways.
fn action_target(
    input: Option<ChangeActionInput>,
    id: Option<ID>,
    note: Option<String>,
) -> async_graphql::Result<(ID, Option<String>)> {
    match (input, id) {
        (Some(input), None) if note.is_none() => Ok((input.id, input.note)),
        (None, Some(id)) => Ok((id, note)),
        (None, None) => Err(bad_input("give input: {id, note}")),
        _ => Err(bad_input("give input: {id, note}, or the deprecated id and note, not both")),
    }
}

/// `reviewChange(input:)`: the post-implementation review (CH-7).
#[derive(async_graphql::InputObject)]
pub struct ReviewChangeInput {
    /// The change's id or number.
    pub id: ID,
    /// The findings.
    pub review: ReviewInput,
    /// A note.
    pub note: Option<String>,
}

/// `rescheduleChange(input:)`.
#[derive(async_graphql::InputObject)]
pub struct RescheduleChangeInput {
    id: ID,
    window: WindowInput,
    note: Option<String>,
}

/// `acknowledgeConflict(input:)`.
#[derive(async_graphql::InputObject)]
pub struct AcknowledgeConflictInput {
    id: ID,
    with: ID,
    reason: String,
}

/// `commentOnChange(input:)`.
#[derive(async_graphql::InputObject)]
pub struct CommentOnChangeInput {
    id: ID,
    text: String,
}

/// `linkChange(input:)`.
#[derive(async_graphql::InputObject)]
pub struct LinkChangeInput {
    id: ID,
    link: LinkInput,
}

/// `retireChangeTemplate(input:)`.
#[derive(async_graphql::InputObject)]
pub struct RetireChangeTemplateInput {
    id: ID,
    reason: Option<String>,
}
