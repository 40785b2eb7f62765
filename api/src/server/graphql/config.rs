//! The configuration graph over GraphQL: `at(position:, time:)` opens a view in which every
//! read happens at that one point; mutations for every CI command; a subscription to CI and
//! relationship changes. Resolvers read the in-memory temporal graph (one short read lock
//! per field, no store reads per item); answers at a position never change, so locking per
//! field is consistent.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject, Subscription};
use cmdb_core::access::Operation;
use cmdb_core::ci::service::{CommandContext, execute};
use cmdb_core::ci::{self as domain, CiCommand, CiEvent, CiSnapshot};
use cmdb_core::store::subscribe;
use cmdb_projections::graph::{self as graph, CiFilter, GraphError, TemporalGraph, Traversal};
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::scalars::{DateTime, Position};
use super::{Requires, app, metadata};
use crate::server::AppState;
use crate::server::errors::{bad_input, core_error, graphql_error, limit_exceeded, store_error};

// ---------------------------------------------------------------------------------------------
// Enums (the core's own, named for GraphQL)
// ---------------------------------------------------------------------------------------------

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::ci::Status")]
pub enum CiStatus {
    Planned,
    Ordered,
    Received,
    InTest,
    Live,
    UnderChange,
    Withdrawn,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::ci::Environment")]
pub enum Environment {
    Development,
    Test,
    Staging,
    Production,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::ci::RelType")]
pub enum RelationshipType {
    DependsOn,
    RunsOn,
    Hosts,
    ConnectsTo,
    PartOf,
    Provides,
    Consumes,
    DocumentedBy,
    LicensedBy,
    SuppliedBy,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::ci::CiField")]
pub enum CiField {
    Environment,
    Owner,
    Location,
    Version,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_projections::graph::ImpactDirection")]
pub enum ImpactDirection {
    /// What depends on the CI: whom its failure reaches.
    Downstream,
    /// What the CI depends on.
    Upstream,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

pub(super) fn graph_error(error: GraphError) -> async_graphql::Error {
    match error {
        GraphError::NotAService { .. } => bad_input(error.to_string()),
        GraphError::Depth(value) => limit_exceeded("max_depth", u64::from(value), u64::from(graph::MAX_DEPTH)),
        GraphError::Results(value) => limit_exceeded("max_results", value as u64, graph::MAX_RESULTS as u64),
        GraphError::UnknownCi { .. } => graphql_error("NOT_FOUND", error.to_string()),
        GraphError::Apply { .. } => graphql_error("INTERNAL", error.to_string()),
        _ => bad_input(error.to_string()),
    }
}

/// A class named by a client: built in (any case) or declared; refused otherwise.
pub(super) fn parse_class(ctx: &Context<'_>, name: &str) -> async_graphql::Result<domain::CiClass> {
    let class: domain::CiClass = name.parse().map_err(|e: domain::CiError| bad_input(e.to_string()))?;
    if !state(ctx).graph.read().schema().knows(class) {
        return Err(bad_input(format!("unknown class {name:?}")));
    }
    Ok(class)
}

pub(super) fn parse_classes(
    ctx: &Context<'_>,
    names: Option<Vec<String>>,
) -> async_graphql::Result<Option<Vec<domain::CiClass>>> {
    names.map(|names| names.iter().map(|n| parse_class(ctx, n)).collect()).transpose()
}

pub(super) fn parse_id<T: std::str::FromStr<Err = domain::CiError>>(id: &ID) -> async_graphql::Result<T> {
    id.as_str().parse::<T>().map_err(|e| bad_input(e.to_string()))
}

pub(super) fn state<'a>(ctx: &'a Context<'_>) -> &'a Arc<AppState> {
    app(ctx)
}

/// Default and bound of `max_depth` / `max_results` arguments.
const DEFAULT_MAX_DEPTH: u32 = 6;
const DEFAULT_MAX_RESULTS: usize = 1000;

// ---------------------------------------------------------------------------------------------
// The view at one position
// ---------------------------------------------------------------------------------------------

/// The configuration as it was at one position of the log.
pub struct At {
    pub position: u64,
}

/// A Relay-style page of CIs (`edges` with cursors, or `nodes` directly).
pub struct CiConnection {
    cis: Vec<Arc<CiSnapshot>>,
    position: u64,
    page_info: CiPageInfo,
}

#[derive(SimpleObject)]
pub struct CiEdge {
    /// The CI's id: pass it as `after` to continue after it.
    pub cursor: String,
    pub node: Ci,
}

#[Object]
impl CiConnection {
    async fn edges(&self, ctx: &Context<'_>) -> Vec<CiEdge> {
        let graph = state(ctx).graph.read();
        self.cis
            .iter()
            .map(|ci| CiEdge { cursor: ci.id.to_string(), node: Ci::new(&graph, ci.clone(), self.position) })
            .collect()
    }

    async fn nodes(&self, ctx: &Context<'_>) -> Vec<Ci> {
        let graph = state(ctx).graph.read();
        self.cis.iter().map(|ci| Ci::new(&graph, ci.clone(), self.position)).collect()
    }

    async fn page_info(&self) -> &CiPageInfo {
        &self.page_info
    }
}

#[derive(SimpleObject, Clone)]
pub struct CiPageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

#[derive(InputObject, Default)]
pub struct CiFilterInput {
    /// Class names (`host`, `business_service`, or a declared custom class).
    pub classes: Option<Vec<String>>,
    pub statuses: Option<Vec<CiStatus>>,
    pub environments: Option<Vec<Environment>>,
    /// Case-insensitive part of the name.
    pub name_contains: Option<String>,
    /// `{"name": "os", "value": "debian-12"}`: an attribute equal to a JSON value.
    pub attribute: Option<AttributeFilter>,
    /// Include withdrawn CIs when no status filter is given.
    #[graphql(default)]
    pub include_withdrawn: bool,
}

#[derive(InputObject)]
pub struct AttributeFilter {
    pub name: String,
    pub value: Json<Value>,
}

#[Object]
impl At {
    /// The position every read in this view happens at.
    async fn position(&self) -> Position {
        Position(self.position)
    }

    /// When the event at this position was recorded.
    async fn time(&self, ctx: &Context<'_>) -> Option<DateTime> {
        state(ctx).graph.read().time_of(self.position).map(DateTime)
    }

    /// One CI by id, or by class and name.
    async fn ci(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
        class: Option<String>,
        name: Option<String>,
    ) -> async_graphql::Result<Option<Ci>> {
        let class = class.map(|c| parse_class(ctx, &c)).transpose()?;
        let graph = state(ctx).graph.read();
        let found = match (id, class, name) {
            (Some(id), None, None) => graph.ci_at(parse_id(&id)?, self.position),
            (None, Some(class), Some(name)) => graph.ci_by_name(class, &name, self.position),
            _ => return Err(bad_input("give either id, or class and name")),
        };
        Ok(found.map(|ci| Ci::new(&graph, ci, self.position)))
    }

    /// CIs matching a filter, in registration order, paged (`first` at most max_page_size;
    /// `after` a cursor from `edges` or `pageInfo.endCursor`).
    async fn cis(
        &self,
        ctx: &Context<'_>,
        filter: Option<CiFilterInput>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<CiConnection> {
        let app = state(ctx);
        let first = super::query::page_size(first, app.settings.max_page_size)?;
        let after =
            after.map(|a| a.parse::<domain::CiId>().map_err(|e| bad_input(format!("after: {e}")))).transpose()?;
        let filter = filter.unwrap_or_default();
        let core_filter = CiFilter {
            classes: parse_classes(ctx, filter.classes)?,
            statuses: filter.statuses.map(|s| s.into_iter().map(Into::into).collect()),
            environments: filter.environments.map(|e| e.into_iter().map(Into::into).collect()),
            attribute: filter.attribute.map(|a| (a.name, a.value.0)),
            name_contains: filter.name_contains,
            include_withdrawn: filter.include_withdrawn,
        };
        let (page, more) = app.graph.read().cis_at(self.position, &core_filter, after, first);
        let page_info = CiPageInfo {
            has_next_page: more,
            has_previous_page: after.is_some(),
            start_cursor: page.first().map(|ci| ci.id.to_string()),
            end_cursor: page.last().map(|ci| ci.id.to_string()),
        };
        Ok(CiConnection { cis: page, position: self.position, page_info })
    }

    /// Relationships valid here: all, or those of one CI, optionally of some types.
    async fn relationships(
        &self,
        ctx: &Context<'_>,
        ci: Option<ID>,
        types: Option<Vec<RelationshipType>>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Relationship>> {
        let app = state(ctx);
        let first = super::query::page_size(first, app.settings.max_page_size)?;
        let ci = ci.as_ref().map(parse_id::<domain::CiId>).transpose()?;
        let types: Option<Vec<domain::RelType>> = types.map(|t| t.into_iter().map(Into::into).collect());
        let graph = app.graph.read();
        Ok(graph
            .relationships_at(self.position, ci, types.as_deref())
            .into_iter()
            .take(first)
            .map(|rel| Relationship { rel: rel.clone(), position: self.position })
            .collect())
    }

    /// Impact analysis from one CI: downstream (what its failure reaches, up to the business
    /// services) or upstream (what it depends on).
    async fn impact(
        &self,
        ctx: &Context<'_>,
        ci: ID,
        #[graphql(default_with = "ImpactDirection::Downstream")] direction: ImpactDirection,
        types: Option<Vec<RelationshipType>>,
        max_depth: Option<u32>,
        max_results: Option<i32>,
    ) -> async_graphql::Result<ImpactResult> {
        let root = parse_id::<domain::CiId>(&ci)?;
        let max_results = match max_results {
            Some(n) if n < 1 => return Err(bad_input(format!("maxResults must be at least 1, got {n}"))),
            Some(n) => n as usize,
            None => DEFAULT_MAX_RESULTS,
        };
        let traversal = Traversal {
            direction: direction.into(),
            max_depth: max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
            max_results,
            types: types.map(|t| t.into_iter().map(Into::into).collect()),
        };
        let graph = state(ctx).graph.read();
        let impact = graph.impact(root, self.position, &traversal).map_err(graph_error)?;
        Ok(ImpactResult::new(impact))
    }

    /// One shortest path between two CIs (following dependencies in `direction`, or any
    /// relationship when it is not given), or null.
    async fn path(
        &self,
        ctx: &Context<'_>,
        from: ID,
        to: ID,
        direction: Option<ImpactDirection>,
        types: Option<Vec<RelationshipType>>,
        max_depth: Option<u32>,
    ) -> async_graphql::Result<Option<Vec<PathStep>>> {
        let (from, to) = (parse_id::<domain::CiId>(&from)?, parse_id::<domain::CiId>(&to)?);
        let types: Option<Vec<domain::RelType>> = types.map(|t| t.into_iter().map(Into::into).collect());
        let graph = state(ctx).graph.read();
        let path = graph
            .path(
                from,
                to,
                self.position,
                direction.map(Into::into),
                max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
                types.as_deref(),
            )
            .map_err(graph_error)?;
        Ok(path.map(|steps| steps.into_iter().map(|s| PathStep::new(&graph, s, self.position)).collect()))
    }

    /// One change request by id or number (`CHG-000042`), as it stood here.
    async fn change(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<super::changes::Change>> {
        super::changes::change_at(ctx, &id, self.position)
    }

    /// Change requests as they stood here, newest first, filtered by state, type, a CI in
    /// their scope, requester or requested window.
    async fn changes(
        &self,
        ctx: &Context<'_>,
        filter: Option<super::changes::ChangeFilterInput>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<super::changes::Change>> {
        super::changes::changes_at(ctx, filter, first, self.position)
    }

    /// The overdue report (CH-8): emergency changes whose emergency approval or review is
    /// late at `now` (default: the server's clock).
    async fn overdue_changes(&self, ctx: &Context<'_>, now: Option<DateTime>) -> Vec<super::changes::OverdueChange> {
        super::changes::overdue_at(ctx, now, self.position)
    }

    /// The change calendar between two times (at most max_calendar_days apart; CH-5): changes
    /// whose window overlaps, with state, scope summary, risk and conflicts; freeze
    /// occurrences; the hours of tier-1 services (or of `service`).
    async fn calendar(
        &self,
        ctx: &Context<'_>,
        from: DateTime,
        to: DateTime,
        environment: Option<Environment>,
        service: Option<ID>,
    ) -> async_graphql::Result<super::calendar::CalendarView> {
        super::calendar::calendar_at(ctx, self.position, from, to, environment, service)
    }

    /// Change analysis (CH-10) for changes submitted in [from, to), per UTC day, week or
    /// month, as known here; `now` (default: the server's clock) decides what is overdue.
    async fn change_report(
        &self,
        ctx: &Context<'_>,
        from: DateTime,
        to: DateTime,
        period: super::reports::ReportPeriod,
        now: Option<DateTime>,
    ) -> async_graphql::Result<super::reports::ChangeReport> {
        super::reports::change_report_at(ctx, self.position, from, to, period, now)
    }

    /// One change's conflicts with the changes scheduled here.
    async fn conflicts(&self, ctx: &Context<'_>, change: ID) -> async_graphql::Result<Vec<super::calendar::Conflict>> {
        super::calendar::conflicts_at(ctx, &change, self.position).await
    }

    /// Freeze windows in force here (all ever created with `includeLifted`), with their
    /// occurrences over the following 90 days.
    async fn freezes(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] include_lifted: bool,
    ) -> async_graphql::Result<Vec<super::calendar::Freeze>> {
        super::calendar::freezes_at(ctx, self.position, include_lifted)
    }

    /// The approval policy in force here (CH-4); version 0 is the engine's default.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<super::policy::PolicyView> {
        super::policy::policy_at(ctx, self.position).await
    }

    /// Every policy loaded by here, the built-in default first.
    async fn policies(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::policy::PolicyView>> {
        super::policy::policies_at(ctx, self.position).await
    }

    /// Assesses a draft change against the graph here and lets the policy in force here decide,
    /// without recording anything (the caller is taken as its requester).
    async fn what_if(
        &self,
        ctx: &Context<'_>,
        input: super::changes::DraftChangeInput,
    ) -> async_graphql::Result<super::policy::WhatIf> {
        let (change_type, details) = super::changes::draft_details(ctx, input)?;
        super::policy::what_if(ctx, change_type, details, self.position).await
    }

    /// Standard-change templates.
    async fn change_templates(&self, ctx: &Context<'_>) -> Vec<super::changes::ChangeTemplate> {
        super::changes::templates_at(ctx, self.position)
    }

    /// A CI's whole history up to this position: every event with actor, time and the change
    /// that authorised it.
    async fn history(&self, ctx: &Context<'_>, ci: ID) -> async_graphql::Result<Option<Vec<HistoryEntry>>> {
        let id = parse_id::<domain::CiId>(&ci)?;
        let graph = state(ctx).graph.read();
        let Some((versions, history)) = graph.history(id) else { return Ok(None) };
        Ok(Some(
            history
                .iter()
                .filter(|h| h.position <= self.position)
                .map(|h| HistoryEntry::new(&graph, h, versions))
                .collect(),
        ))
    }
}

/// A CI as it was at the view's position.
pub struct Ci {
    ci: Arc<CiSnapshot>,
    position: u64,
    valid_from: u64,
    valid_to: u64,
}

impl Ci {
    pub(super) fn new(graph: &TemporalGraph, ci: Arc<CiSnapshot>, position: u64) -> Ci {
        let (valid_from, valid_to) = graph.version_at(ci.id, position).map_or((0, graph::OPEN), |v| (v.from, v.to));
        Ci { ci, position, valid_from, valid_to }
    }
}

#[Object]
impl Ci {
    async fn id(&self) -> ID {
        ID(self.ci.id.to_string())
    }

    /// The class name (`host`, `business_service`, or a declared custom class).
    async fn class(&self) -> &'static str {
        self.ci.class.as_str()
    }

    async fn name(&self) -> &str {
        &self.ci.name
    }

    async fn status(&self) -> CiStatus {
        self.ci.status.into()
    }

    async fn environment(&self) -> Option<Environment> {
        self.ci.environment.map(Into::into)
    }

    async fn version(&self) -> Option<&str> {
        self.ci.version.as_deref()
    }

    /// The owning team or person, at the same position.
    async fn owner(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        self.ci.owner.and_then(|id| graph.ci_at(id, self.position)).map(|ci| Ci::new(&graph, ci, self.position))
    }

    /// The location, at the same position.
    async fn location(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        self.ci.location.and_then(|id| graph.ci_at(id, self.position)).map(|ci| Ci::new(&graph, ci, self.position))
    }

    /// Every attribute, as a JSON object.
    async fn attributes(&self) -> Json<&std::collections::BTreeMap<String, Value>> {
        Json(&self.ci.attributes)
    }

    /// One attribute's value.
    async fn attribute(&self, name: String) -> Option<Json<Value>> {
        self.ci.attributes.get(&name).cloned().map(Json)
    }

    /// The first position of this version.
    async fn valid_from(&self) -> Position {
        Position(self.valid_from)
    }

    /// The position where the next version starts; null while this one is current.
    async fn valid_to(&self) -> Option<Position> {
        (self.valid_to != graph::OPEN).then_some(Position(self.valid_to))
    }

    /// This CI's relationships at the same position.
    async fn relationships(&self, ctx: &Context<'_>, types: Option<Vec<RelationshipType>>) -> Vec<Relationship> {
        let types: Option<Vec<domain::RelType>> = types.map(|t| t.into_iter().map(Into::into).collect());
        let graph = state(ctx).graph.read();
        graph
            .relationships_at(self.position, Some(self.ci.id), types.as_deref())
            .into_iter()
            .map(|rel| Relationship { rel: rel.clone(), position: self.position })
            .collect()
    }
}

pub struct Relationship {
    pub(super) rel: graph::Relationship,
    pub(super) position: u64,
}

#[Object]
impl Relationship {
    async fn id(&self) -> ID {
        ID(self.rel.id.to_string())
    }

    #[graphql(name = "type")]
    async fn rel_type(&self) -> RelationshipType {
        self.rel.rel_type.into()
    }

    async fn source(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        graph.ci_at(self.rel.source, self.position).map(|ci| Ci::new(&graph, ci, self.position))
    }

    async fn target(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        graph.ci_at(self.rel.target, self.position).map(|ci| Ci::new(&graph, ci, self.position))
    }

    async fn source_id(&self) -> ID {
        ID(self.rel.source.to_string())
    }

    async fn target_id(&self) -> ID {
        ID(self.rel.target.to_string())
    }

    async fn valid_from(&self) -> Position {
        Position(self.rel.from)
    }

    async fn valid_to(&self) -> Option<Position> {
        (self.rel.to != graph::OPEN).then_some(Position(self.rel.to))
    }

    /// The change that authorised its creation, if one was given.
    async fn authorized_by(&self) -> Option<ID> {
        self.rel.created_by.map(|c| ID(c.to_string()))
    }
}

#[derive(SimpleObject)]
pub struct PathStep {
    pub relationship_id: ID,
    #[graphql(name = "type")]
    pub rel_type: RelationshipType,
    pub ci: Option<Ci>,
    pub ci_id: ID,
}

impl PathStep {
    fn new(graph: &TemporalGraph, step: graph::Step, position: u64) -> PathStep {
        PathStep {
            relationship_id: ID(step.relationship.to_string()),
            rel_type: step.rel_type.into(),
            ci: graph.ci_at(step.ci, position).map(|ci| Ci::new(graph, ci, position)),
            ci_id: ID(step.ci.to_string()),
        }
    }
}

/// A CI an impact analysis reached.
pub struct ImpactedCi {
    impact: Arc<graph::Impact>,
    index: usize,
}

#[Object]
impl ImpactedCi {
    async fn ci(&self, ctx: &Context<'_>) -> Ci {
        let graph = state(ctx).graph.read();
        Ci::new(&graph, self.impact.reached[self.index].ci.clone(), self.impact.position)
    }

    async fn depth(&self) -> u32 {
        self.impact.reached[self.index].depth
    }

    /// One shortest path from the root to this CI.
    async fn path(&self, ctx: &Context<'_>) -> Vec<PathStep> {
        let graph = state(ctx).graph.read();
        let target = self.impact.reached[self.index].ci.id;
        self.impact.path_to(target).into_iter().map(|s| PathStep::new(&graph, s, self.impact.position)).collect()
    }
}

/// A business service an impact analysis reached.
pub struct ImpactedService {
    impact: Arc<graph::Impact>,
    index: usize,
}

#[Object]
impl ImpactedService {
    async fn service(&self, ctx: &Context<'_>) -> Ci {
        let graph = state(ctx).graph.read();
        Ci::new(&graph, self.impact.services[self.index].0.clone(), self.impact.position)
    }

    /// Criticality tier 1 (highest) to 4.
    async fn tier(&self) -> Option<i64> {
        self.impact.services[self.index].1
    }

    async fn depth(&self) -> u32 {
        let id = self.impact.services[self.index].0.id;
        self.impact.reached.iter().find(|r| r.ci.id == id).map_or(0, |r| r.depth)
    }
}

/// The answer of an impact analysis; each field is computed only when asked for.
pub struct ImpactResult {
    impact: Arc<graph::Impact>,
}

#[Object]
impl ImpactResult {
    async fn root(&self, ctx: &Context<'_>) -> Ci {
        let graph = state(ctx).graph.read();
        Ci::new(&graph, self.impact.root.clone(), self.impact.position)
    }

    async fn position(&self) -> Position {
        Position(self.impact.position)
    }

    async fn direction(&self) -> ImpactDirection {
        self.impact.direction.into()
    }

    /// The CIs reached, breadth first: each at its least depth.
    async fn reached(&self) -> Vec<ImpactedCi> {
        (0..self.impact.reached.len()).map(|index| ImpactedCi { impact: self.impact.clone(), index }).collect()
    }

    /// The business services among them, with their tier.
    async fn services(&self) -> Vec<ImpactedService> {
        (0..self.impact.services.len()).map(|index| ImpactedService { impact: self.impact.clone(), index }).collect()
    }

    /// max_results cut the traversal short.
    async fn truncated(&self) -> bool {
        self.impact.truncated
    }

    /// Cycles met, each a list of CI ids ending where it starts.
    async fn cycles(&self) -> Vec<Vec<ID>> {
        self.impact.cycles.iter().map(|c| c.iter().map(|id| ID(id.to_string())).collect()).collect()
    }

    /// How many CIs were reached.
    async fn count(&self) -> usize {
        self.impact.reached.len()
    }
}

impl ImpactResult {
    fn new(impact: graph::Impact) -> ImpactResult {
        ImpactResult { impact: Arc::new(impact) }
    }
}

impl HistoryEntry {
    pub(super) fn new(graph: &TemporalGraph, h: &graph::HistoryEntry, versions: &[graph::CiVersion]) -> HistoryEntry {
        HistoryEntry {
            position: Position(h.position),
            recorded_at: DateTime(h.recorded_at),
            event_type: h.event_type.as_str().to_owned(),
            principal: h.principal.to_string(),
            correlation_id: h.correlation_id.clone(),
            authorized_by: h.authorized_by.map(|c| ID(c.to_string())),
            relationship_id: h.relationship.map(|r| ID(r.to_string())),
            version: versions.iter().find(|v| v.from == h.position).map(|v| Ci::new(graph, v.ci.clone(), h.position)),
        }
    }
}

#[derive(SimpleObject)]
pub struct HistoryEntry {
    pub position: Position,
    pub recorded_at: DateTime,
    #[graphql(name = "type")]
    pub event_type: String,
    pub principal: String,
    pub correlation_id: Option<String>,
    pub authorized_by: Option<ID>,
    pub relationship_id: Option<ID>,
    /// The CI as this event left it (for events that change the CI itself).
    pub version: Option<Ci>,
}

/// Resolves `at(position:, time:, minPosition:)` to a position the graph has applied.
pub async fn resolve_at(
    ctx: &Context<'_>,
    position: Option<Position>,
    time: Option<DateTime>,
    min_position: Option<Position>,
) -> async_graphql::Result<At> {
    let app = state(ctx);
    if let Some(min) = min_position {
        let wait = Duration::from_millis(app.settings.min_position_wait_ms);
        if !app.graph.wait_for(min.0, wait).await {
            return Err(graphql_error(
                "UNAVAILABLE",
                format!("the graph has applied position {}, not yet minPosition {}; retry", app.graph.applied(), min.0),
            ));
        }
    }
    let graph = app.graph.read();
    let position = match (position, time) {
        (Some(_), Some(_)) => return Err(bad_input("give position or time, not both")),
        (Some(p), None) => {
            graph.check_position(p.0).map_err(graph_error)?;
            p.0
        }
        (None, Some(t)) => graph.position_at(t.0).map_err(graph_error)?,
        (None, None) => graph.applied(),
    };
    Ok(At { position })
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

#[derive(InputObject)]
pub struct RegisterCiInput {
    /// A class name (`host`, `business_service`, ...; any case), built in or declared.
    pub class: String,
    pub name: String,
    #[graphql(default_with = "CiStatus::Live")]
    pub status: CiStatus,
    pub environment: Option<Environment>,
    pub owner: Option<ID>,
    pub location: Option<ID>,
    pub version: Option<String>,
    /// The class's attributes as a JSON object.
    pub attributes: Option<Json<serde_json::Map<String, Value>>>,
    /// The change that authorises this (its id or number, `CHG-000042`): it must be
    /// implementing and its scope must plan this CI (CM-3), unless the class is uncontrolled.
    pub authorized_by: Option<ID>,
}

#[derive(InputObject, Default)]
pub struct UpdateCiInput {
    pub name: Option<String>,
    pub environment: Option<Environment>,
    pub owner: Option<ID>,
    pub location: Option<ID>,
    pub version: Option<String>,
    /// Fields to clear.
    pub clear: Option<Vec<CiField>>,
    /// Attributes to set (a JSON object).
    pub set_attributes: Option<Json<serde_json::Map<String, Value>>>,
    pub remove_attributes: Option<Vec<String>>,
    pub authorized_by: Option<ID>,
}

/// Where a command's events landed, and the CI as it now stands.
#[derive(SimpleObject)]
pub struct CiChangeResult {
    pub ci: Option<Ci>,
    /// The last position written: pass as `minPosition` to read your write.
    pub position: Position,
    pub first_position: Position,
}

#[derive(SimpleObject)]
pub struct RelationshipChangeResult {
    pub relationship: Option<Relationship>,
    pub position: Position,
    pub first_position: Position,
}

/// `authorizedBy`: a change id or number (`CHG-000042`).
async fn change_id(ctx: &Context<'_>, id: Option<ID>) -> async_graphql::Result<Option<domain::ChangeId>> {
    match id {
        Some(id) => Ok(Some(super::changes::resolve_change(ctx, &id).await?)),
        None => Ok(None),
    }
}

/// Runs a command, waits until the graph has applied it, returns the positions.
async fn run(ctx: &Context<'_>, command: CiCommand) -> async_graphql::Result<(u64, u64)> {
    let app = state(ctx);
    let context = CommandContext::new(metadata(ctx)?).with_cache(app.ci_states.clone());
    let outcome = execute(app.store.as_ref(), &command, &context).await.map_err(core_error)?;
    let wait = Duration::from_millis(app.settings.min_position_wait_ms);
    if !app.graph.wait_for(outcome.last_position, wait).await {
        return Err(graphql_error(
            "UNAVAILABLE",
            format!("the change is durable at position {} but the graph has not applied it yet", outcome.last_position),
        ));
    }
    Ok((outcome.first_position, outcome.last_position))
}

fn ci_result(ctx: &Context<'_>, id: domain::CiId, (first, last): (u64, u64)) -> CiChangeResult {
    let graph = state(ctx).graph.read();
    CiChangeResult {
        ci: graph.ci_at(id, last).map(|ci| Ci::new(&graph, ci, last)),
        position: Position(last),
        first_position: Position(first),
    }
}

fn attributes(map: Option<Json<serde_json::Map<String, Value>>>) -> std::collections::BTreeMap<String, Value> {
    map.map(|m| m.0.into_iter().collect()).unwrap_or_default()
}

#[derive(Default)]
pub struct ConfigMutation;

#[Object]
impl ConfigMutation {
    /// Registers a CI (CM-1). Its attributes must fit its class's schema.
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn register_ci(&self, ctx: &Context<'_>, input: RegisterCiInput) -> async_graphql::Result<CiChangeResult> {
        let ci_id = domain::CiId(state(ctx).ids.next_id());
        let class = parse_class(ctx, &input.class)?;
        let command = CiCommand::Register(domain::Register {
            ci_id,
            class,
            name: input.name,
            status: input.status.into(),
            environment: input.environment.map(Into::into),
            owner: input.owner.as_ref().map(parse_id).transpose()?,
            location: input.location.as_ref().map(parse_id).transpose()?,
            version: input.version,
            attributes: attributes(input.attributes),
            authorized_by: change_id(ctx, input.authorized_by).await?,
        });
        let positions = run(ctx, command).await?;
        Ok(ci_result(ctx, ci_id, positions))
    }

    /// Changes a CI's name, fields or attributes.
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn update_ci(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateCiInput,
    ) -> async_graphql::Result<CiChangeResult> {
        let ci_id: domain::CiId = parse_id(&id)?;
        let update = domain::Update {
            ci_id: Some(ci_id),
            name: input.name,
            environment: input.environment.map(Into::into),
            owner: input.owner.as_ref().map(parse_id).transpose()?,
            location: input.location.as_ref().map(parse_id).transpose()?,
            version: input.version,
            clear: input.clear.unwrap_or_default().into_iter().map(Into::into).collect(),
            set_attributes: attributes(input.set_attributes),
            remove_attributes: input.remove_attributes.unwrap_or_default(),
            authorized_by: change_id(ctx, input.authorized_by).await?,
        };
        let positions = run(ctx, CiCommand::Update(ci_id, update)).await?;
        Ok(ci_result(ctx, ci_id, positions))
    }

    /// Moves a CI through its life cycle (the allowed transitions are a table).
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn transition_ci(
        &self,
        ctx: &Context<'_>,
        id: ID,
        to: CiStatus,
        reason: Option<String>,
        authorized_by: Option<ID>,
    ) -> async_graphql::Result<CiChangeResult> {
        let ci_id: domain::CiId = parse_id(&id)?;
        let command =
            CiCommand::Transition { ci_id, to: to.into(), reason, authorized_by: change_id(ctx, authorized_by).await? };
        let positions = run(ctx, command).await?;
        Ok(ci_result(ctx, ci_id, positions))
    }

    /// Withdraws a CI; its active relationships end with it, in the same atomic write.
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn withdraw_ci(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
        authorized_by: Option<ID>,
    ) -> async_graphql::Result<CiChangeResult> {
        let ci_id: domain::CiId = parse_id(&id)?;
        let command = CiCommand::Withdraw { ci_id, reason, authorized_by: change_id(ctx, authorized_by).await? };
        let positions = run(ctx, command).await?;
        Ok(ci_result(ctx, ci_id, positions))
    }

    /// Relates two CIs (CM-2). The relationship table says which classes a type may join.
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn relate(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] rel_type: RelationshipType,
        source: ID,
        target: ID,
        authorized_by: Option<ID>,
    ) -> async_graphql::Result<RelationshipChangeResult> {
        let rel_id = domain::RelId(state(ctx).ids.next_id());
        let command = CiCommand::Relate {
            rel_id,
            rel_type: rel_type.into(),
            source: parse_id(&source)?,
            target: parse_id(&target)?,
            authorized_by: change_id(ctx, authorized_by).await?,
        };
        let (first, last) = run(ctx, command).await?;
        let graph = state(ctx).graph.read();
        Ok(RelationshipChangeResult {
            relationship: graph.relationship(rel_id).map(|rel| Relationship { rel: rel.clone(), position: last }),
            position: Position(last),
            first_position: Position(first),
        })
    }

    /// Ends a relationship.
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn unrelate(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
        authorized_by: Option<ID>,
    ) -> async_graphql::Result<RelationshipChangeResult> {
        let rel_id: domain::RelId = parse_id(&id)?;
        let command = CiCommand::Unrelate { rel_id, reason, authorized_by: change_id(ctx, authorized_by).await? };
        let (first, last) = run(ctx, command).await?;
        let graph = state(ctx).graph.read();
        Ok(RelationshipChangeResult {
            relationship: graph.relationship(rel_id).map(|rel| Relationship { rel: rel.clone(), position: last }),
            position: Position(last),
            first_position: Position(first),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Subscription
// ---------------------------------------------------------------------------------------------

/// A change to a CI or relationship, as it happens.
#[derive(SimpleObject, Clone)]
pub struct CiChange {
    pub position: Position,
    #[graphql(name = "type")]
    pub event_type: String,
    pub ci_id: Option<ID>,
    pub class: Option<String>,
    pub relationship_id: Option<ID>,
    pub principal: String,
    pub recorded_at: DateTime,
}

#[derive(Default)]
pub struct ConfigSubscription;

/// Events a CI-change subscription reads from the log per page.
const CHANGES_PAGE_EVENTS: usize = 500;

fn touched(event: &CiEvent) -> (Option<domain::CiId>, Option<domain::RelId>) {
    match event {
        CiEvent::Registered(e) => (Some(e.ci_id), None),
        CiEvent::Updated(e) => (e.ci_id, None),
        CiEvent::StatusChanged(e) | CiEvent::Withdrawn(e) => (Some(e.ci_id), None),
        CiEvent::Linked(e) => (Some(e.ci_id), Some(e.rel_id)),
        CiEvent::Unlinked(e) => (Some(e.ci_id), Some(e.rel_id)),
        CiEvent::RelationshipCreated(e) => (None, Some(e.rel_id)),
        CiEvent::RelationshipRemoved(e) => (None, Some(e.rel_id)),
        CiEvent::NameClaimed(_) | CiEvent::NameReleased(_) => (None, None),
    }
}

#[Subscription]
impl ConfigSubscription {
    /// Changes to CIs and relationships from now on (or after `after`), optionally only for
    /// some classes or CIs. Name bookkeeping is left out.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn ci_changes(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
        classes: Option<Vec<String>>,
        ci_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<CiChange>>> {
        let app = state(ctx).clone();
        let slot = ctx
            .data_opt::<super::SubscriptionSlots>()
            .ok_or_else(|| graphql_error("BAD_REQUEST", "subscriptions are served over the WebSocket at /graphql/ws"))?
            .take()?;
        let ids: Option<Vec<domain::CiId>> = ci_ids.map(|ids| ids.iter().map(parse_id).collect()).transpose()?;
        let classes = parse_classes(ctx, classes)?;
        let after = match after {
            Some(p) => p.0,
            None => app.store.head().await.map_err(store_error)?.position,
        };
        let shutdown = app.shutdown.clone();
        let graph = app.graph.clone();
        let wait = Duration::from_millis(app.settings.min_position_wait_ms);
        let stream = subscribe(app.store.clone(), after, CHANGES_PAGE_EVENTS)
            .take_until(async move { shutdown.cancelled().await })
            .filter_map(move |next| {
                let graph = graph.clone();
                let ids = ids.clone();
                let classes = classes.clone();
                async move {
                    let record = match next {
                        Ok(record) => record,
                        Err(error) => return Some(Err(store_error(error))),
                    };
                    if !CiEvent::is_ci_event(&record.event_type) {
                        return None;
                    }
                    let event = CiEvent::from_record(&record).ok()?;
                    let (ci, rel) = touched(&event);
                    if ci.is_none() && rel.is_none() {
                        return None;
                    }
                    graph.wait_for(record.position, wait).await;
                    let (class, rel_ends) = {
                        let graph = graph.read();
                        let class = ci.and_then(|id| graph.ci_at(id, record.position)).map(|c| c.class);
                        let ends = rel.and_then(|id| graph.relationship(id)).map(|r| (r.source, r.target));
                        (class, ends)
                    };
                    if let Some(ids) = &ids {
                        let hit = ci.is_some_and(|c| ids.contains(&c))
                            || rel_ends.is_some_and(|(s, t)| ids.contains(&s) || ids.contains(&t));
                        if !hit {
                            return None;
                        }
                    }
                    if let Some(classes) = &classes {
                        if !class.is_some_and(|c| classes.contains(&c)) {
                            return None;
                        }
                    }
                    Some(Ok(CiChange {
                        position: Position(record.position),
                        event_type: record.event_type.clone(),
                        ci_id: ci.map(|c| ID(c.to_string())),
                        class: class.map(|c| c.as_str().to_owned()),
                        relationship_id: rel.map(|r| ID(r.to_string())),
                        principal: record.metadata.actor.principal.clone(),
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
