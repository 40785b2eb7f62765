//! What changed between two moments, over GraphQL: CIs created, changed field by field, withdrawn;
//! relationships added and removed; each with its causes.

use super::cis::{Ci, CiPart, HistoryEntry, Relationship, RelationshipPart, ci_plan, relationship_plan};
use super::cis::{render_ci, render_relationship};
use super::context::{parse_id, state};
use super::raw_json::{self, JsonOut, Plan, RenderJson, Rendered};
use super::scalars::{DateTime, Position};
use crate::server::errors::{bad_input, graph_error};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use cmdb_core::ci as domain;
use cmdb_projections::diff::{self, CiChangeKind, RelChangeKind};
use cmdb_projections::graph::{self as graph, TemporalGraph};
use rustc_hash::FxHashSet;
use serde_json::Value;
use std::sync::Arc;

/// A moment: a log position or a time (the last event recorded at or before it).
#[derive(InputObject, Clone, Copy)]
pub struct MomentInput {
    pub position: Option<Position>,
    pub time: Option<DateTime>,
}

/// Resolves a moment against the graph.
pub fn resolve_moment(graph: &TemporalGraph, moment: MomentInput, name: &str) -> async_graphql::Result<u64> {
    match (moment.position, moment.time) {
        (Some(p), None) => {
            graph.check_position(p.0).map_err(graph_error)?;
            Ok(p.0)
        }
        (None, Some(t)) => graph.position_at(t.0).map_err(graph_error),
        _ => Err(bad_input(format!("{name}: give exactly one of position or time"))),
    }
}

/// Deepest `around` neighbourhood a diff accepts.
pub const MAX_AROUND_DEPTH: u32 = 6;

/// The CIs within `depth` of `around` at either moment.
pub fn around_scope(
    graph: &TemporalGraph,
    around: domain::CiId,
    depth: u32,
    from: u64,
    to: u64,
) -> async_graphql::Result<FxHashSet<domain::CiId>> {
    if depth > MAX_AROUND_DEPTH {
        return Err(crate::server::errors::limit_exceeded(
            "max_around_depth",
            u64::from(depth),
            u64::from(MAX_AROUND_DEPTH),
        ));
    }
    if graph.ci_at(around, to).is_none() && graph.ci_at(around, from).is_none() {
        return Err(graph_error(graph::GraphError::UnknownCi { ci: around, position: to }));
    }
    let mut scope = graph.neighbourhood(around, from, depth).map_err(graph_error)?;
    scope.extend(graph.neighbourhood(around, to, depth).map_err(graph_error)?);
    Ok(scope)
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "cmdb_projections::diff::CiChangeKind")]
pub enum CiDiffKind {
    Created,
    Changed,
    Withdrawn,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "cmdb_projections::diff::RelChangeKind")]
pub enum RelationshipDiffKind {
    Added,
    Removed,
}

#[derive(SimpleObject)]
pub struct FieldChange {
    /// `name`, `status`, `environment`, `owner`, `location`, `version`, or `attributes.<name>`.
    pub field: String,
    pub before: Json<Value>,
    pub after: Json<Value>,
}

/// Who did something, when, under which change.
#[derive(SimpleObject)]
pub struct Cause {
    pub position: Position,
    pub recorded_at: DateTime,
    #[graphql(name = "type")]
    pub event_type: String,
    pub principal: String,
    pub authorized_by: Option<ID>,
}

impl From<&graph::EventInfo> for Cause {
    fn from(info: &graph::EventInfo) -> Cause {
        Cause {
            position: Position(info.position),
            recorded_at: DateTime(info.recorded_at),
            event_type: info.event_type.to_string(),
            principal: info.principal.to_string(),
            authorized_by: info.authorized_by.map(|c| ID(c.to_string())),
        }
    }
}

/// How one CI differs.
pub struct DiffCi {
    /// The whole diff, shared by its entries (an entry is not copied into its page).
    diff: Arc<diff::Diff>,
    index: usize,
}

impl DiffCi {
    fn entry(&self) -> &diff::CiDiff {
        &self.diff.cis[self.index]
    }
}

#[Object]
impl DiffCi {
    async fn id(&self) -> ID {
        ID(self.entry().id.to_string())
    }

    async fn kind(&self) -> CiDiffKind {
        self.entry().kind.into()
    }

    /// Its status changed (other than by withdrawal).
    async fn transitioned(&self) -> bool {
        self.entry().transitioned
    }

    /// The CI at `from` (null if it did not exist yet).
    async fn before(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        self.entry().before.clone().map(|ci| Ci::new(&graph, ci, self.diff.from))
    }

    /// The CI at `to`.
    async fn after(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        self.entry().after.clone().map(|ci| Ci::new(&graph, ci, self.diff.to))
    }

    /// Every field that differs, with its value before and after (null when absent).
    async fn fields(&self) -> Vec<FieldChange> {
        self.entry()
            .fields()
            .into_iter()
            .map(|f| FieldChange {
                before: Json(as_enum_value(&f.field, &f.before)),
                after: Json(as_enum_value(&f.field, &f.after)),
                field: f.field,
            })
            .collect()
    }

    /// The CI's events between the two moments: who, when, under which change.
    async fn events(&self, ctx: &Context<'_>) -> Vec<HistoryEntry> {
        let graph = state(ctx).graph.read();
        let id = self.entry().id;
        let versions = graph.history(id).map(|(v, _)| v.to_vec()).unwrap_or_default();
        let events = graph.events_between(id, self.diff.from, self.diff.to);
        events.iter().map(|h| HistoryEntry::new(&graph, h, &versions)).collect()
    }
}

/// A relationship added or removed.
pub struct DiffRelationship {
    diff: Arc<diff::Diff>,
    index: usize,
}

impl DiffRelationship {
    fn entry(&self) -> &diff::RelDiff {
        &self.diff.relationships[self.index]
    }

    /// Where its relationship is read: when added, at the diff's end; when removed, where it
    /// began (at the end it no longer exists).
    fn relationship_position(&self) -> u64 {
        match self.entry().kind {
            RelChangeKind::Added => self.diff.to,
            RelChangeKind::Removed => self.entry().relationship.from,
        }
    }
}

#[Object]
impl DiffRelationship {
    async fn kind(&self) -> RelationshipDiffKind {
        self.entry().kind.into()
    }

    async fn relationship(&self) -> Relationship {
        Relationship { rel: self.entry().relationship.clone(), position: self.relationship_position() }
    }

    /// The event that made the difference.
    async fn cause(&self) -> Cause {
        (&self.entry().cause).into()
    }
}

/// What a plain selection on `DiffCi` asks (its `events` only the general path answers).
pub enum DiffCiPart {
    Id,
    Kind,
    Transitioned,
    Before(Plan<CiPart>),
    After(Plan<CiPart>),
    Fields(Plan<FieldChangePart>),
}

/// What a plain selection on `FieldChange` asks.
pub enum FieldChangePart {
    Field,
    Before,
    After,
}

/// The plan of a selection on a diff entry's changed fields.
fn field_change_plan(
    set: &async_graphql::parser::types::SelectionSet,
    fragments: &raw_json::Fragments,
) -> Option<Plan<FieldChangePart>> {
    raw_json::plan_of(set, "FieldChange", fragments, |name, _| {
        Some(match name {
            "field" => FieldChangePart::Field,
            "before" => FieldChangePart::Before,
            "after" => FieldChangePart::After,
            _ => return None,
        })
    })
}

/// Writes a changed field's value as [`as_enum_value`] gives it, without copying the value.
fn field_value(out: &mut JsonOut, field: &str, value: &Value) {
    match enum_text(field, value) {
        Some(text) => out.string(&text),
        None => out.json(value),
    }
}

/// Writes an entry's changed fields as `fields` answers them: a list of objects of `plan`.
fn render_field_changes(out: &mut JsonOut, entry: &diff::CiDiff, plan: &Plan<FieldChangePart>) {
    let changes = entry.fields();
    out.raw(b"[");
    raw_json::items(out, &changes, |out, change| {
        raw_json::object(out, plan, |out, part| match part {
            FieldChangePart::Field => out.string(&change.field),
            FieldChangePart::Before => field_value(out, &change.field, &change.before),
            FieldChangePart::After => field_value(out, &change.field, &change.after),
        });
    });
    out.raw(b"]");
}

impl RenderJson for DiffCi {
    type Plan = Plan<DiffCiPart>;

    fn plan(set: &async_graphql::parser::types::SelectionSet, fragments: &raw_json::Fragments) -> Option<Self::Plan> {
        raw_json::plan_of(set, "DiffCi", fragments, |name, sub| {
            Some(match name {
                "id" => DiffCiPart::Id,
                "kind" => DiffCiPart::Kind,
                "transitioned" => DiffCiPart::Transitioned,
                "before" => DiffCiPart::Before(ci_plan(sub, fragments)?),
                "after" => DiffCiPart::After(ci_plan(sub, fragments)?),
                "fields" => DiffCiPart::Fields(field_change_plan(sub, fragments)?),
                _ => return None,
            })
        })
    }

    fn render(ctx: &async_graphql::ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut) {
        let graph = ctx.data_unchecked::<Arc<crate::server::AppState>>().graph.read();
        raw_json::items(out, items, |out, item| {
            let (diff, entry) = (&item.diff, item.entry());
            raw_json::object(out, plan, |out, part| match part {
                DiffCiPart::Id => out.display(entry.id),
                DiffCiPart::Kind => out.enum_value(CiDiffKind::from(entry.kind)),
                DiffCiPart::Transitioned => out.json(&entry.transitioned),
                DiffCiPart::Fields(plan) => render_field_changes(out, entry, plan),
                DiffCiPart::Before(plan) | DiffCiPart::After(plan) => {
                    let (ci, position) = match part {
                        DiffCiPart::Before(_) => (&entry.before, diff.from),
                        _ => (&entry.after, diff.to),
                    };
                    match ci {
                        Some(ci) => render_ci(out, &graph, ci, position, plan),
                        None => out.null(),
                    }
                }
            });
        });
    }
}

/// What a plain selection on `DiffRelationship` asks (its `cause` only the general path
/// answers).
pub enum DiffRelationshipPart {
    Kind,
    Relationship(Plan<RelationshipPart>),
}

impl RenderJson for DiffRelationship {
    type Plan = Plan<DiffRelationshipPart>;

    fn plan(set: &async_graphql::parser::types::SelectionSet, fragments: &raw_json::Fragments) -> Option<Self::Plan> {
        raw_json::plan_of(set, "DiffRelationship", fragments, |name, sub| {
            Some(match name {
                "kind" => DiffRelationshipPart::Kind,
                "relationship" => DiffRelationshipPart::Relationship(relationship_plan(sub, fragments)?),
                _ => return None,
            })
        })
    }

    fn render(ctx: &async_graphql::ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut) {
        let graph = ctx.data_unchecked::<Arc<crate::server::AppState>>().graph.read();
        raw_json::items(out, items, |out, item| {
            let entry = item.entry();
            raw_json::object(out, plan, |out, part| match part {
                DiffRelationshipPart::Kind => out.enum_value(RelationshipDiffKind::from(entry.kind)),
                DiffRelationshipPart::Relationship(plan) => {
                    let position = item.relationship_position();
                    render_relationship(out, &graph, &entry.relationship, position, plan);
                }
            });
        });
    }
}

#[derive(SimpleObject)]
pub struct DiffCiPage {
    pub nodes: Rendered<DiffCi>,
    pub page_info: super::paging::PageInfo,
}

#[derive(SimpleObject)]
pub struct DiffRelationshipPage {
    pub nodes: Rendered<DiffRelationship>,
    pub page_info: super::paging::PageInfo,
}

/// The difference between two moments.
pub struct DiffResult {
    pub diff: Arc<diff::Diff>,
    pub max_page_size: usize,
}

/// The page of a list that cannot change (offset cursors), and its page info.
pub(super) fn offset_page(
    page: &super::paging::PageArgs,
    max: usize,
    total: usize,
) -> async_graphql::Result<(usize, usize, super::paging::PageInfo)> {
    use super::paging::{offset_cursor, offset_of, page_info};
    // The cursor of index i is i + 1: after it starts at i + 1, before it ends at i.
    let (start, end) = page.range(total, max, offset_of, |c| offset_of(c).map(|i| i.saturating_sub(1)))?;
    Ok((start, end, page_info(start, end, total, offset_cursor)))
}

#[Object]
impl DiffResult {
    async fn from(&self) -> Position {
        Position(self.diff.from)
    }

    async fn to(&self) -> Position {
        Position(self.diff.to)
    }

    async fn from_time(&self, ctx: &Context<'_>) -> Option<DateTime> {
        state(ctx).graph.read().time_of(self.diff.from).map(DateTime)
    }

    async fn to_time(&self, ctx: &Context<'_>) -> Option<DateTime> {
        state(ctx).graph.read().time_of(self.diff.to).map(DateTime)
    }

    /// How many CIs differ, by kind.
    async fn created_count(&self) -> usize {
        self.diff.cis.iter().filter(|c| c.kind == CiChangeKind::Created).count()
    }

    async fn changed_count(&self) -> usize {
        self.diff.cis.iter().filter(|c| c.kind == CiChangeKind::Changed).count()
    }

    async fn withdrawn_count(&self) -> usize {
        self.diff.cis.iter().filter(|c| c.kind == CiChangeKind::Withdrawn).count()
    }

    async fn relationships_added_count(&self) -> usize {
        self.diff.relationships.iter().filter(|r| r.kind == RelChangeKind::Added).count()
    }

    async fn relationships_removed_count(&self) -> usize {
        self.diff.relationships.iter().filter(|r| r.kind == RelChangeKind::Removed).count()
    }

    /// The CIs that differ, in the order of their first change.
    async fn cis(
        &self,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<DiffCiPage> {
        let total = self.diff.cis.len();
        let page = super::paging::PageArgs { first, after, last, before };
        let (start, end, page_info) = offset_page(&page, self.max_page_size, total)?;
        let nodes = (start..end).map(|index| DiffCi { diff: self.diff.clone(), index }).collect();
        Ok(DiffCiPage { nodes: Rendered(nodes), page_info })
    }

    /// The relationships added or removed, in position order.
    async fn relationships(
        &self,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<DiffRelationshipPage> {
        let total = self.diff.relationships.len();
        let page = super::paging::PageArgs { first, after, last, before };
        let (start, end, page_info) = offset_page(&page, self.max_page_size, total)?;
        let nodes = (start..end).map(|index| DiffRelationship { diff: self.diff.clone(), index }).collect();
        Ok(DiffRelationshipPage { nodes: Rendered(nodes), page_info })
    }
}

/// `diff(from:, to:, around:, depth:)` for the query root.
pub fn diff(
    ctx: &Context<'_>,
    from: MomentInput,
    to: MomentInput,
    around: Option<ID>,
    depth: u32,
) -> async_graphql::Result<DiffResult> {
    let app = state(ctx);
    let graph = app.graph.read();
    let from = resolve_moment(&graph, from, "from")?;
    let to = resolve_moment(&graph, to, "to")?;
    if from > to {
        return Err(graph_error(graph::GraphError::FromAfterTo { from, to }));
    }
    let scope = around.as_ref().map(|id| around_scope(&graph, parse_id(id)?, depth, from, to)).transpose()?;
    let diff = graph.diff(from, to, scope.as_ref()).map_err(graph_error)?;
    Ok(DiffResult { diff: Arc::new(diff), max_page_size: app.settings.max_page_size })
}

/// A status or environment as the schema's enums write it (`LIVE`, `PRODUCTION`), so a diff
/// entry reads like `Ci.status`; other values as they are.
fn as_enum_value(field: &str, value: &Value) -> Value {
    enum_text(field, value).map_or_else(|| value.clone(), Value::String)
}

/// The enum's text of a status or environment value, `None` for any other value.
fn enum_text(field: &str, value: &Value) -> Option<String> {
    match (field, value) {
        ("status" | "environment", Value::String(text)) => Some(text.to_ascii_uppercase()),
        _ => None,
    }
}
