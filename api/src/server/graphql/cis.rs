//! Configuration items over GraphQL (CM-1, CM-2, CM-5, CM-9): the views of CIs, relationships,
//! impact and history, and the CI reads of `at(...)`. Resolvers read the in-memory temporal graph
//! (one short read lock per field); answers at a position never change, so locking per field is
//! consistent.

use super::context::{parse_class, parse_classes, parse_id, state};
use super::lists::Seq;
use super::raw_json::{self, JsonOut, Plan, RenderJson, Rendered};
use super::scalars::{DateTime, Position};
use crate::server::errors::{bad_input, graph_error};
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use cmdb_core::ci::{self as domain, CiSnapshot};
use cmdb_projections::graph::{self as graph, CiFilter, TemporalGraph, Traversal};
use serde_json::Value;
use std::sync::Arc;

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

pub use super::environment::Environment;

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

/// How badly a failure reaches a CI.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_projections::graph::Severity")]
pub enum Severity {
    /// Working with less capacity or redundancy: some members of a redundant group below it
    /// are down, or something it depends on is degraded.
    Degraded,
    /// Not working.
    Down,
}

/// Default and bound of `max_depth` / `max_results` arguments.
const DEFAULT_MAX_DEPTH: u32 = 6;

const DEFAULT_MAX_RESULTS: usize = 1000;

/// A Relay-style page of CIs (`edges` with cursors, or `nodes` directly).
pub struct CiConnection {
    cis: Vec<Arc<CiSnapshot>>,
    position: u64,
    page_info: super::paging::PageInfo,
}

#[derive(SimpleObject)]
pub struct CiEdge {
    /// The CI's id: pass it as `after` to continue after it.
    pub cursor: String,
    pub node: Ci,
}

#[Object]
impl CiConnection {
    async fn edges(&self, ctx: &Context<'_>) -> Seq<CiEdge> {
        let graph = state(ctx).graph.read();
        Seq(self
            .cis
            .iter()
            .map(|ci| CiEdge { cursor: ci.id.to_string(), node: Ci::new(&graph, ci.clone(), self.position) })
            .collect())
    }

    async fn nodes(&self, ctx: &Context<'_>) -> Rendered<Ci> {
        let graph = state(ctx).graph.read();
        Rendered(self.cis.iter().map(|ci| Ci::new(&graph, ci.clone(), self.position)).collect())
    }

    async fn page_info(&self) -> &super::paging::PageInfo {
        &self.page_info
    }
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

/// A CI as it was at the view's position.
pub struct Ci {
    ci: Arc<CiSnapshot>,
    position: u64,
}

impl Ci {
    /// The snapshot as read at `position`. The version's bounds are looked up only when asked
    /// (`validFrom`, `validTo`): a diff or an impact makes thousands of these and most answers
    /// do not select them.
    pub(super) fn new(_graph: &TemporalGraph, ci: Arc<CiSnapshot>, position: u64) -> Ci {
        Ci { ci, position }
    }

    /// The first and the end position of the version read.
    fn version_bounds(&self, ctx: &Context<'_>) -> (u64, u64) {
        let graph = state(ctx).graph.read();
        graph.version_at(self.ci.id, self.position).map_or((0, graph::OPEN), |v| (v.from, v.to))
    }
}

#[Object]
impl Ci {
    pub(crate) async fn id(&self) -> ID {
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

    /// The deployments that touched it up to this position, newest first (CM-5, CM-8): the
    /// versions it ran and which deployment, change and release set them.
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<super::releases::Deployment>> {
        super::releases::deployments_of_ci(ctx, self.ci.id, self.position, first)
    }

    /// Every attribute, as a JSON object.
    async fn attributes(&self) -> Json<&cmdb_core::ci::AttributeMap> {
        Json(&*self.ci.attributes)
    }

    /// One attribute's value.
    async fn attribute(&self, name: String) -> Option<Json<Value>> {
        self.ci.attributes.get(&name).cloned().map(Json)
    }

    /// The first position of this version.
    async fn valid_from(&self, ctx: &Context<'_>) -> Position {
        Position(self.version_bounds(ctx).0)
    }

    /// The position where the next version starts, if that is known at the position asked:
    /// an answer as of a moment reveals nothing after it, so this is null there (the versions
    /// and where each ended are in `history`, read at a later position).
    async fn valid_to(&self, ctx: &Context<'_>) -> Option<Position> {
        known_end(self.version_bounds(ctx).1, self.position)
    }

    /// This CI's relationships at the same position, as Relay pages in id order (a hub's can be
    /// many: `relationships` answers all of them at once).
    #[allow(clippy::too_many_arguments, reason = "GraphQL arguments: a filter and Relay's four")]
    async fn relationships_connection(
        &self,
        ctx: &Context<'_>,
        types: Option<Vec<RelationshipType>>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<RelationshipConnection> {
        relationship_page(
            ctx,
            self.position,
            Some(self.ci.id),
            types,
            super::paging::PageArgs { first, after, last, before },
        )
    }

    /// This CI's relationships at the same position, all of them (`relationshipsConnection`
    /// pages them).
    async fn relationships(&self, ctx: &Context<'_>, types: Option<Vec<RelationshipType>>) -> Rendered<Relationship> {
        let types: Option<Vec<domain::RelType>> = types.map(|t| t.into_iter().map(Into::into).collect());
        let graph = state(ctx).graph.read();
        Rendered(
            graph
                .relationships_at(self.position, Some(self.ci.id), types.as_deref())
                .into_iter()
                .map(|rel| Relationship { rel: rel.clone(), position: self.position })
                .collect(),
        )
    }
}

/// What a plain selection on `Ci` asks, written as text by [`render_ci`] (the fields without
/// arguments that read the snapshot or the graph at the same position).
pub enum CiPart {
    Id,
    Class,
    Name,
    Status,
    Environment,
    Version,
    Owner(Plan<CiPart>),
    Location(Plan<CiPart>),
    Attributes,
    ValidFrom,
    ValidTo,
}

/// The plan of a selection on `Ci`, or `None` when it asks anything else.
pub(super) fn ci_plan(
    set: &async_graphql::parser::types::SelectionSet,
    fragments: &raw_json::Fragments,
) -> Option<Plan<CiPart>> {
    raw_json::plan_of(set, "Ci", fragments, |name, sub| {
        Some(match name {
            "id" => CiPart::Id,
            "class" => CiPart::Class,
            "name" => CiPart::Name,
            "status" => CiPart::Status,
            "environment" => CiPart::Environment,
            "version" => CiPart::Version,
            "owner" => CiPart::Owner(ci_plan(sub, fragments)?),
            "location" => CiPart::Location(ci_plan(sub, fragments)?),
            "attributes" => CiPart::Attributes,
            "validFrom" => CiPart::ValidFrom,
            "validTo" => CiPart::ValidTo,
            _ => return None,
        })
    })
}

/// Writes `ci` read at `position` as `Ci`'s resolvers answer it.
pub(super) fn render_ci(out: &mut JsonOut, graph: &TemporalGraph, ci: &CiSnapshot, position: u64, plan: &Plan<CiPart>) {
    raw_json::object(out, plan, |out, part| match part {
        CiPart::Id => out.display(ci.id),
        CiPart::Class => out.string(ci.class.as_str()),
        CiPart::Name => out.string(&ci.name),
        CiPart::Status => out.enum_value(CiStatus::from(ci.status)),
        CiPart::Environment => match ci.environment {
            Some(environment) => out.enum_value(Environment::from(environment)),
            None => out.null(),
        },
        CiPart::Version => match &ci.version {
            Some(version) => out.string(version),
            None => out.null(),
        },
        CiPart::Owner(plan) | CiPart::Location(plan) => {
            let id = if matches!(part, CiPart::Owner(_)) { ci.owner } else { ci.location };
            match id.and_then(|id| graph.ci_at(id, position)) {
                Some(other) => render_ci(out, graph, &other, position, plan),
                None => out.null(),
            }
        }
        CiPart::Attributes => out.json(&ci.attributes),
        CiPart::ValidFrom | CiPart::ValidTo => {
            let (from, to) = graph.version_at(ci.id, position).map_or((0, graph::OPEN), |v| (v.from, v.to));
            match (part, known_end(to, position)) {
                (CiPart::ValidFrom, _) => out.json(&from),
                (_, Some(end)) => out.json(&end.0),
                (_, None) => out.null(),
            }
        }
    });
}

impl RenderJson for Ci {
    type Plan = Plan<CiPart>;

    fn plan(set: &async_graphql::parser::types::SelectionSet, fragments: &raw_json::Fragments) -> Option<Self::Plan> {
        ci_plan(set, fragments)
    }

    fn render(ctx: &async_graphql::ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut) {
        let graph = ctx.data_unchecked::<Arc<crate::server::AppState>>().graph.read();
        raw_json::items(out, items, |out, item| render_ci(out, &graph, &item.ci, item.position, plan));
    }
}

/// What a plain selection on `Relationship` asks, written as text by [`render_relationship`].
pub enum RelationshipPart {
    Id,
    Type,
    Source(Plan<CiPart>),
    Target(Plan<CiPart>),
    SourceId,
    TargetId,
    ValidFrom,
    ValidTo,
    AuthorizedBy,
}

/// The plan of a selection on `Relationship`, or `None` when it asks anything else.
pub(super) fn relationship_plan(
    set: &async_graphql::parser::types::SelectionSet,
    fragments: &raw_json::Fragments,
) -> Option<Plan<RelationshipPart>> {
    raw_json::plan_of(set, "Relationship", fragments, |name, sub| {
        Some(match name {
            "id" => RelationshipPart::Id,
            "type" => RelationshipPart::Type,
            "source" => RelationshipPart::Source(ci_plan(sub, fragments)?),
            "target" => RelationshipPart::Target(ci_plan(sub, fragments)?),
            "sourceId" => RelationshipPart::SourceId,
            "targetId" => RelationshipPart::TargetId,
            "validFrom" => RelationshipPart::ValidFrom,
            "validTo" => RelationshipPart::ValidTo,
            "authorizedBy" => RelationshipPart::AuthorizedBy,
            _ => return None,
        })
    })
}

/// Writes `rel` read at `position` as `Relationship`'s resolvers answer it.
pub(super) fn render_relationship(
    out: &mut JsonOut,
    graph: &TemporalGraph,
    rel: &graph::Relationship,
    position: u64,
    plan: &Plan<RelationshipPart>,
) {
    raw_json::object(out, plan, |out, part| match part {
        RelationshipPart::Id => out.display(rel.id),
        RelationshipPart::Type => out.enum_value(RelationshipType::from(rel.rel_type)),
        RelationshipPart::Source(plan) | RelationshipPart::Target(plan) => {
            let id = if matches!(part, RelationshipPart::Source(_)) { rel.source } else { rel.target };
            match graph.ci_at(id, position) {
                Some(ci) => render_ci(out, graph, &ci, position, plan),
                None => out.null(),
            }
        }
        RelationshipPart::SourceId => out.display(rel.source),
        RelationshipPart::TargetId => out.display(rel.target),
        RelationshipPart::ValidFrom => out.json(&rel.from),
        RelationshipPart::ValidTo => match known_end(rel.to, position) {
            Some(end) => out.json(&end.0),
            None => out.null(),
        },
        RelationshipPart::AuthorizedBy => match rel.created_by {
            Some(change) => out.display(change),
            None => out.null(),
        },
    });
}

impl RenderJson for Relationship {
    type Plan = Plan<RelationshipPart>;

    fn plan(set: &async_graphql::parser::types::SelectionSet, fragments: &raw_json::Fragments) -> Option<Self::Plan> {
        relationship_plan(set, fragments)
    }

    fn render(ctx: &async_graphql::ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut) {
        let graph = ctx.data_unchecked::<Arc<crate::server::AppState>>().graph.read();
        raw_json::items(out, items, |out, item| render_relationship(out, &graph, &item.rel, item.position, plan));
    }
}

/// What a plain selection on `ImpactedCi` or `ImpactedService` asks (their `cause` and `path`
/// only the general path answers).
pub enum ImpactPart {
    Ci(Plan<CiPart>),
    Depth,
    Severity,
    Tier,
}

/// The plan of a selection on an impact's entry: `ci_field` names its CI (`ci`, `service`).
fn impact_plan(
    set: &async_graphql::parser::types::SelectionSet,
    fragments: &raw_json::Fragments,
    typename: &str,
    ci_field: &str,
) -> Option<Plan<ImpactPart>> {
    raw_json::plan_of(set, typename, fragments, |name, sub| {
        Some(match name {
            _ if name == ci_field => ImpactPart::Ci(ci_plan(sub, fragments)?),
            "depth" => ImpactPart::Depth,
            "severity" => ImpactPart::Severity,
            "tier" if ci_field == "service" => ImpactPart::Tier,
            _ => return None,
        })
    })
}

/// Writes one impact entry: `ci` read at `position`, reached at `depth` with `severity`.
fn render_impacted(
    out: &mut JsonOut,
    graph: &TemporalGraph,
    (ci, position): (&CiSnapshot, u64),
    (depth, severity, tier): (u32, Option<graph::Severity>, Option<i64>),
    plan: &Plan<ImpactPart>,
) {
    raw_json::object(out, plan, |out, part| match part {
        ImpactPart::Ci(plan) => render_ci(out, graph, ci, position, plan),
        ImpactPart::Depth => out.json(&depth),
        ImpactPart::Severity => match severity {
            Some(severity) => out.enum_value(Severity::from(severity)),
            None => out.null(),
        },
        ImpactPart::Tier => out.json(&tier),
    });
}

impl RenderJson for ImpactedCi {
    type Plan = Plan<ImpactPart>;

    fn plan(set: &async_graphql::parser::types::SelectionSet, fragments: &raw_json::Fragments) -> Option<Self::Plan> {
        impact_plan(set, fragments, "ImpactedCi", "ci")
    }

    fn render(ctx: &async_graphql::ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut) {
        let graph = ctx.data_unchecked::<Arc<crate::server::AppState>>().graph.read();
        raw_json::items(out, items, |out, item| {
            let reached = &item.impact.reached[item.index];
            render_impacted(out, &graph, (&reached.ci, item.position), (reached.depth, reached.severity, None), plan);
        });
    }
}

impl RenderJson for ImpactedService {
    type Plan = Plan<ImpactPart>;

    fn plan(set: &async_graphql::parser::types::SelectionSet, fragments: &raw_json::Fragments) -> Option<Self::Plan> {
        impact_plan(set, fragments, "ImpactedService", "service")
    }

    fn render(ctx: &async_graphql::ContextSelectionSet<'_>, items: &[Self], plan: &Self::Plan, out: &mut JsonOut) {
        let graph = ctx.data_unchecked::<Arc<crate::server::AppState>>().graph.read();
        raw_json::items(out, items, |out, item| {
            let hit = &item.impact.services[item.index];
            render_impacted(out, &graph, (&hit.ci, item.position), (hit.depth, hit.severity, hit.tier), plan);
        });
    }
}

/// Relationships valid at `position` (of one CI, of some types), in id order, one Relay page.
fn relationship_page(
    ctx: &Context<'_>,
    position: u64,
    ci: Option<domain::CiId>,
    types: Option<Vec<RelationshipType>>,
    page: super::paging::PageArgs,
) -> async_graphql::Result<RelationshipConnection> {
    let app = state(ctx);
    let types: Option<Vec<domain::RelType>> = types.map(|t| t.into_iter().map(Into::into).collect());
    let graph = app.graph.read();
    let mut all = graph.relationships_at(position, ci, types.as_deref());
    all.sort_unstable_by_key(|rel| rel.id);
    let id = |cursor: &str| parse_id::<domain::RelId>(&ID(cursor.to_owned()));
    let (start, end) = page.range(
        all.len(),
        app.settings.max_page_size,
        |c| id(c).map(|c| all.partition_point(|rel| rel.id <= c)),
        |c| id(c).map(|c| all.partition_point(|rel| rel.id < c)),
    )?;
    let page_info = super::paging::page_info(start, end, all.len(), |i| all[i].id.to_string());
    let nodes = all[start..end].iter().map(|rel| Relationship { rel: (*rel).clone(), position }).collect();
    Ok(RelationshipConnection { nodes: Rendered(nodes), page_info, total_count: all.len() })
}

/// A page of relationships in id order (Relay: `edges` with cursors, or `nodes`).
pub struct RelationshipConnection {
    nodes: Rendered<Relationship>,
    page_info: super::paging::PageInfo,
    total_count: usize,
}

/// A relationship and its cursor.
#[derive(SimpleObject)]
pub struct RelationshipEdge {
    /// The relationship's id: pass as `after` or `before`.
    pub cursor: String,
    pub node: Relationship,
}

#[Object]
impl RelationshipConnection {
    async fn edges(&self) -> Seq<RelationshipEdge> {
        Seq(self.nodes.0.iter().map(|r| RelationshipEdge { cursor: r.rel.id.to_string(), node: r.clone() }).collect())
    }

    async fn nodes(&self) -> &Rendered<Relationship> {
        &self.nodes
    }

    async fn page_info(&self) -> &super::paging::PageInfo {
        &self.page_info
    }

    /// How many relationships match.
    async fn total_count(&self) -> usize {
        self.total_count
    }
}

#[derive(Clone)]
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

    /// Where the relationship ended, if that is known at the position asked (null while it
    /// stands, and always as of a moment when it still stood).
    async fn valid_to(&self) -> Option<Position> {
        known_end(self.rel.to, self.position)
    }

    /// The change that authorised its creation, if one was given.
    async fn authorized_by(&self) -> Option<ID> {
        self.rel.created_by.map(|c| ID(c.to_string()))
    }
}

/// One relationship a walk crossed, and the CI it reached by crossing it.
pub struct PathStep {
    relationship: domain::RelId,
    rel_type: RelationshipType,
    ci: Option<Ci>,
    ci_id: domain::CiId,
}

impl PathStep {
    pub(super) fn new(graph: &TemporalGraph, step: graph::Step, position: u64) -> PathStep {
        PathStep {
            relationship: step.relationship,
            rel_type: step.rel_type.into(),
            ci: graph.ci_at(step.ci, position).map(|ci| Ci::new(graph, ci, position)),
            ci_id: step.ci,
        }
    }

    /// The relationship's (source, target), looked up only when asked: most answers with
    /// paths never select them.
    fn ends(&self, ctx: &Context<'_>) -> (domain::CiId, domain::CiId) {
        let graph = state(ctx).graph.read();
        let found = graph.relationship(self.relationship).map(|r| (r.source, r.target));
        debug_assert!(found.is_some(), "a walk crosses only relationships the graph holds");
        found.unwrap_or((self.ci_id, self.ci_id))
    }
}

#[Object]
impl PathStep {
    async fn relationship_id(&self) -> ID {
        ID(self.relationship.to_string())
    }

    #[graphql(name = "type")]
    async fn rel_type(&self) -> RelationshipType {
        self.rel_type
    }

    async fn ci(&self) -> Option<&Ci> {
        self.ci.as_ref()
    }

    async fn ci_id(&self) -> ID {
        ID(self.ci_id.to_string())
    }

    /// The relationship's own source CI: a walk may cross a relationship either way, so
    /// this and `targetId` say which way it points (a picture draws its arrow from them).
    async fn source_id(&self, ctx: &Context<'_>) -> ID {
        ID(self.ends(ctx).0.to_string())
    }

    /// The relationship's own target CI.
    async fn target_id(&self, ctx: &Context<'_>) -> ID {
        ID(self.ends(ctx).1.to_string())
    }
}

/// A CI an impact analysis reached.
pub struct ImpactedCi {
    impact: Arc<graph::Impact>,
    index: usize,
    /// The position asked about.
    position: u64,
}

#[Object]
impl ImpactedCi {
    async fn ci(&self, ctx: &Context<'_>) -> Ci {
        let graph = state(ctx).graph.read();
        Ci::new(&graph, self.impact.reached[self.index].ci.clone(), self.position)
    }

    /// Relationships on the shortest chain from the root.
    async fn depth(&self) -> u32 {
        self.impact.reached[self.index].depth
    }

    /// How badly the failure reaches it (downstream analyses; null upstream).
    async fn severity(&self) -> Option<Severity> {
        self.impact.reached[self.index].severity.map(Into::into)
    }

    /// Downstream: the step the failure arrived by with this severity; its `ci` is the
    /// neighbour it came from (for a redundant group brought down, the member that reached
    /// its threshold). Following causes back reaches a root. Null upstream.
    async fn cause(&self, ctx: &Context<'_>) -> Option<PathStep> {
        cause(ctx, &self.impact, self.impact.reached[self.index].ci.id, self.position)
    }

    /// One shortest path from the root to this CI.
    async fn path(&self, ctx: &Context<'_>) -> Vec<PathStep> {
        let graph = state(ctx).graph.read();
        let target = self.impact.reached[self.index].ci.id;
        self.impact.path_to(target).into_iter().map(|s| PathStep::new(&graph, s, self.position)).collect()
    }

    /// Downstream: the way the failure reached this CI with its severity, from the root (each
    /// step's `cause` is the step before it). The same as `path` unless the shortest way
    /// crosses a redundant group that survives and a longer way brings the CI down; then this
    /// is the longer way. At most 66 steps (a longer chain is a `LIMIT_EXCEEDED` error on this
    /// field: follow `cause` instead). Null upstream.
    async fn severity_path(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<PathStep>>> {
        severity_path(ctx, &self.impact, self.impact.reached[self.index].ci.id, self.position)
    }
}

/// A business service an impact analysis reached.
pub struct ImpactedService {
    impact: Arc<graph::Impact>,
    index: usize,
    /// The position asked about.
    position: u64,
}

#[Object]
impl ImpactedService {
    async fn service(&self, ctx: &Context<'_>) -> Ci {
        let graph = state(ctx).graph.read();
        Ci::new(&graph, self.impact.services[self.index].ci.clone(), self.position)
    }

    /// Criticality tier 1 (highest) to 4.
    async fn tier(&self) -> Option<i64> {
        self.impact.services[self.index].tier
    }

    /// Relationships on the shortest chain from the root.
    async fn depth(&self) -> u32 {
        self.impact.services[self.index].depth
    }

    /// How badly the failure reaches the service (downstream analyses; null upstream).
    async fn severity(&self) -> Option<Severity> {
        self.impact.services[self.index].severity.map(Into::into)
    }

    /// The step the failure arrived by with this severity (see `ImpactedCi.cause`).
    async fn cause(&self, ctx: &Context<'_>) -> Option<PathStep> {
        cause(ctx, &self.impact, self.impact.services[self.index].ci.id, self.position)
    }

    /// One shortest path from the root to the service.
    async fn path(&self, ctx: &Context<'_>) -> Vec<PathStep> {
        let graph = state(ctx).graph.read();
        let target = self.impact.services[self.index].ci.id;
        self.impact.path_to(target).into_iter().map(|s| PathStep::new(&graph, s, self.position)).collect()
    }

    /// Downstream: the way the failure reached the service with its severity (see
    /// `ImpactedCi.severityPath`). Null upstream.
    async fn severity_path(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<PathStep>>> {
        severity_path(ctx, &self.impact, self.impact.services[self.index].ci.id, self.position)
    }
}

const _: () = assert!(graph::MAX_SEVERITY_CHAIN_STEPS == 66, "ImpactedCi.severityPath's docs name the bound");
const _: () = assert!(graph::MAX_IMPACT_ROOTS == 1_000, "At.impact's docs name the bound on cis");

/// The chain of causes to `target`, or null for an upstream analysis (which has no severities).
fn severity_path(
    ctx: &Context<'_>,
    impact: &graph::Impact,
    target: domain::CiId,
    position: u64,
) -> async_graphql::Result<Option<Vec<PathStep>>> {
    if impact.direction != graph::ImpactDirection::Downstream {
        return Ok(None);
    }
    let chain = impact.severity_chain(target).map_err(graph_error)?;
    let graph = state(ctx).graph.read();
    Ok(Some(chain.into_iter().map(|s| PathStep::new(&graph, s, position)).collect()))
}

fn cause(ctx: &Context<'_>, impact: &graph::Impact, target: domain::CiId, position: u64) -> Option<PathStep> {
    let cause = impact.cause_of(target)?;
    let graph = state(ctx).graph.read();
    let step = graph::Step { relationship: cause.relationship, rel_type: cause.rel_type, ci: cause.from };
    Some(PathStep::new(&graph, step, position))
}

/// The answer of an impact analysis; each field is computed only when asked for.
pub struct ImpactResult {
    /// Possibly computed at another position with the same graph (the impact cache).
    impact: Arc<graph::Impact>,
    /// The position asked about.
    position: u64,
}

#[Object]
impl ImpactResult {
    /// The CI the analysis started from (the first of `roots`).
    async fn root(&self, ctx: &Context<'_>) -> Ci {
        let graph = state(ctx).graph.read();
        Ci::new(&graph, self.impact.root.clone(), self.position)
    }

    /// Every CI the analysis started from (`ci`, or each of `cis` once, in the order given).
    async fn roots(&self, ctx: &Context<'_>) -> Vec<Ci> {
        let graph = state(ctx).graph.read();
        self.impact.roots.iter().map(|root| Ci::new(&graph, root.clone(), self.position)).collect()
    }

    async fn position(&self) -> Position {
        Position(self.position)
    }

    async fn direction(&self) -> ImpactDirection {
        self.impact.direction.into()
    }

    /// The CIs reached, breadth first: each at its least depth.
    async fn reached(&self) -> Rendered<ImpactedCi> {
        Rendered(
            (0..self.impact.reached.len())
                .map(|index| ImpactedCi { impact: self.impact.clone(), index, position: self.position })
                .collect(),
        )
    }

    /// The business services among them, with their tier.
    async fn services(&self) -> Rendered<ImpactedService> {
        Rendered(
            (0..self.impact.services.len())
                .map(|index| ImpactedService { impact: self.impact.clone(), index, position: self.position })
                .collect(),
        )
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

    /// How many reached CIs are down (downstream analyses; 0 upstream).
    async fn down_count(&self) -> usize {
        self.impact.reached.iter().filter(|r| r.severity == Some(graph::Severity::Down)).count()
    }

    /// How many reached CIs are degraded (downstream analyses; 0 upstream).
    async fn degraded_count(&self) -> usize {
        self.impact.reached.iter().filter(|r| r.severity == Some(graph::Severity::Degraded)).count()
    }
}

impl HistoryEntry {
    pub(super) fn new(graph: &TemporalGraph, h: &graph::HistoryEntry, versions: &[graph::CiVersion]) -> HistoryEntry {
        HistoryEntry {
            position: Position(h.position),
            recorded_at: DateTime(h.recorded_at),
            event_type: h.event_type.as_str().to_owned(),
            principal: h.principal.to_string(),
            correlation_id: h.correlation_id.as_deref().map(str::to_owned),
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

/// The configuration at one position: CIs, relationships, impact, paths, history.
pub struct CisAt {
    pub(super) position: u64,
}

#[Object]
impl CisAt {
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

    /// CIs matching a filter, in id order (registration order for the engine's UUIDv7 ids),
    /// paged as Relay says: `first` after the cursor `after`, or `last` before the cursor
    /// `before` (at most max_page_size; cursors from `edges` or `pageInfo`).
    async fn cis(
        &self,
        ctx: &Context<'_>,
        filter: Option<CiFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<CiConnection> {
        let app = state(ctx);
        let cursor = |name: &str, text: Option<String>| {
            text.map(|a| a.parse::<domain::CiId>().map_err(|e| bad_input(format!("{name}: {e}")))).transpose()
        };
        let (after, before) = (cursor("after", after)?, cursor("before", before)?);
        let backward = last.is_some() || before.is_some();
        if backward && (first.is_some() || after.is_some()) {
            return Err(bad_input("page forward (first, after) or backward (last, before), not both"));
        }
        let size = super::log::page_size(if backward { last } else { first }, app.settings.max_page_size)?;
        let filter = filter.unwrap_or_default();
        let core_filter = CiFilter {
            classes: parse_classes(ctx, filter.classes)?,
            statuses: filter.statuses.map(|s| s.into_iter().map(Into::into).collect()),
            environments: filter.environments.map(|e| e.into_iter().map(Into::into).collect()),
            attribute: filter.attribute.map(|a| (a.name, a.value.0)),
            name_contains: filter.name_contains,
            include_withdrawn: filter.include_withdrawn,
        };
        let page = if backward { graph::CiPage::Before(before) } else { graph::CiPage::After(after) };
        let (page, more) = app.graph.read().cis_page(self.position, &core_filter, page, size);
        // Whether something lies the other way is known from the cursor alone (a cursor is a
        // CI that was listed), as Relay allows.
        let page_info = super::paging::PageInfo {
            has_next_page: if backward { before.is_some() } else { more },
            has_previous_page: if backward { more } else { after.is_some() },
            start_cursor: page.first().map(|ci| ci.id.to_string()),
            end_cursor: page.last().map(|ci| ci.id.to_string()),
        };
        Ok(CiConnection { cis: page, position: self.position, page_info })
    }

    /// Relationships valid here: all, or those of one CI, optionally of some types; in id
    /// order (a cursor is a relationship's id), paged as Relay says.
    #[allow(clippy::too_many_arguments, reason = "GraphQL arguments: a filter and Relay's four")]
    async fn relationships(
        &self,
        ctx: &Context<'_>,
        ci: Option<ID>,
        types: Option<Vec<RelationshipType>>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<RelationshipConnection> {
        let ci = ci.as_ref().map(parse_id::<domain::CiId>).transpose()?;
        relationship_page(ctx, self.position, ci, types, super::paging::PageArgs { first, after, last, before })
    }

    /// Impact analysis from one CI (`ci`) or from several failing together (`cis`: a rack, a
    /// site, two members of a cluster; up to 1,000): downstream (what the failure reaches, up to
    /// the business services) or upstream (what they depend on). Give one of the two.
    #[allow(clippy::too_many_arguments, reason = "GraphQL arguments: the roots and the traversal")]
    async fn impact(
        &self,
        ctx: &Context<'_>,
        ci: Option<ID>,
        cis: Option<Vec<ID>>,
        #[graphql(default_with = "ImpactDirection::Downstream")] direction: ImpactDirection,
        types: Option<Vec<RelationshipType>>,
        max_depth: Option<u32>,
        max_results: Option<i32>,
    ) -> async_graphql::Result<ImpactResult> {
        let roots: Vec<domain::CiId> = match (ci, cis) {
            (Some(ci), None) => vec![parse_id::<domain::CiId>(&ci)?],
            (None, Some(cis)) if cis.len() > graph::MAX_IMPACT_ROOTS => {
                return Err(graph_error(graph::GraphError::Roots(cis.len())));
            }
            (None, Some(cis)) if cis.is_empty() => return Err(bad_input("cis must name at least one CI")),
            (None, Some(cis)) => cis.iter().map(parse_id::<domain::CiId>).collect::<Result<_, _>>()?,
            (Some(_), Some(_)) => return Err(bad_input("give ci or cis, not both")),
            (None, None) => return Err(bad_input("give the CI to start from: ci, or cis for several")),
        };
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
        let app = state(ctx);
        let graph = app.graph.read();
        let impact = app.app.impacts.impact(&graph, &roots, self.position, &traversal).map_err(graph_error)?;
        Ok(ImpactResult { impact, position: self.position })
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

    /// A CI's whole history up to this position: every event with actor, time and the change
    /// that authorised it, oldest first; with `last`, only the newest `last` entries (a hub's
    /// history runs to tens of thousands of entries: a page shows the newest).
    async fn history(
        &self,
        ctx: &Context<'_>,
        ci: ID,
        last: Option<u32>,
    ) -> async_graphql::Result<Option<Seq<HistoryEntry>>> {
        let id = parse_id::<domain::CiId>(&ci)?;
        let graph = state(ctx).graph.read();
        let Some((versions, history)) = graph.history(id) else { return Ok(None) };
        // Before the CI was registered it does not exist, as `ci(id:)` says.
        if history.first().is_none_or(|h| h.position > self.position) {
            return Ok(None);
        }
        // Entries are in log order, so the ones up to this position are a prefix.
        let known = &history[..history.partition_point(|h| h.position <= self.position)];
        let newest = last.map_or(known, |count| &known[known.len().saturating_sub(count as usize)..]);
        Ok(Some(Seq(newest.iter().map(|h| HistoryEntry::new(&graph, h, versions)).collect())))
    }
}

/// An end position as known at `position`: `None` if open or later than `position`.
fn known_end(end: u64, position: u64) -> Option<Position> {
    (end != graph::OPEN && end <= position).then_some(Position(end))
}
