//! Configuration baselines over GraphQL (CM-6): members, comparison with now, a moment or another
//! baseline; create and delete.

use super::cis::{Ci, CiStatus, Environment};
use super::context::{Requires, metadata, parse_classes, parse_id, state};
use super::diff::Cause;
use super::diff::DiffResult;
use super::diff::MomentInput;
use super::diff::offset_page;
use super::diff::resolve_moment;
use super::scalars::{DateTime, Position};
use crate::server::errors::{Code, app_error, bad_input, coded, core_error, graph_error};
use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::baseline::{self, BaselineCreated, BaselineScope};
use cmdb_core::ci as domain;
use cmdb_projections::graph::{self as graph, TemporalGraph};
use rustc_hash::FxHashSet;
use std::sync::Arc;

/// A named set of CIs at a position.
pub struct Baseline {
    info: graph::BaselineInfo,
}

fn members_of(graph: &TemporalGraph, info: &graph::BaselineInfo) -> async_graphql::Result<Vec<domain::CiId>> {
    let members = graph.baseline_members(&info.baseline.scope, info.baseline.position).map_err(graph_error)?;
    if baseline::members_digest(&members) != info.baseline.members_digest {
        return Err(coded(
            Code::Internal,
            format!("baseline {:?}: its members no longer match their recorded digest", info.baseline.name),
        ));
    }
    Ok(members)
}

#[Object]
impl Baseline {
    async fn name(&self) -> &str {
        &self.info.baseline.name
    }

    async fn description(&self) -> Option<&str> {
        self.info.baseline.description.as_deref()
    }

    /// The position the baseline names.
    async fn position(&self) -> Position {
        Position(self.info.baseline.position)
    }

    async fn time(&self, ctx: &Context<'_>) -> Option<DateTime> {
        state(ctx).graph.read().time_of(self.info.baseline.position).map(DateTime)
    }

    /// How the members were chosen (a filter, or a service and depth).
    async fn scope(&self) -> Json<&BaselineScope> {
        Json(&self.info.baseline.scope)
    }

    async fn member_count(&self) -> u64 {
        self.info.baseline.members
    }

    /// blake3 of the sorted member ids: the members are recomputed and checked against it.
    async fn members_digest(&self) -> String {
        self.info.baseline.members_digest.to_hex()
    }

    /// Who created it, when.
    async fn created(&self) -> Cause {
        (&self.info.created).into()
    }

    /// The members as they were at the baseline's position.
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<BaselineMemberConnection> {
        let app = state(ctx);
        let graph = app.graph.read();
        let members = members_of(&graph, &self.info)?;
        let page = super::paging::PageArgs { first, after, last, before };
        let (start, end, page_info) = offset_page(&page, app.settings.max_page_size, members.len())?;
        let position = self.info.baseline.position;
        let nodes = members[start..end]
            .iter()
            .filter_map(|id| graph.ci_at(*id, position))
            .map(|ci| Ci::new(&graph, ci, position))
            .collect();
        Ok(BaselineMemberConnection { nodes, page_info, total_count: members.len() })
    }

    /// The difference between this baseline and a moment (now when not given) or another
    /// baseline: over the baseline's members and the CIs its definition chooses at the other
    /// moment (or the other baseline's members). Ordered oldest to newest.
    async fn compare(
        &self,
        ctx: &Context<'_>,
        with: Option<MomentInput>,
        with_baseline: Option<String>,
    ) -> async_graphql::Result<DiffResult> {
        let app = state(ctx);
        let graph = app.graph.read();
        let here = self.info.baseline.position;
        let mut scope: FxHashSet<domain::CiId> = members_of(&graph, &self.info)?.into_iter().collect();
        let there = match (with, with_baseline) {
            (Some(_), Some(_)) => return Err(bad_input("give with or withBaseline, not both")),
            (_, Some(name)) => {
                let other = graph
                    .baseline(&name, graph.applied())
                    .ok_or_else(|| core_error(baseline::BaselineError::Unknown(name.clone()).into()))?;
                scope.extend(members_of(&graph, other)?);
                other.baseline.position
            }
            (Some(moment), None) => {
                let position = resolve_moment(&graph, moment, "with")?;
                scope.extend(graph.baseline_members(&self.info.baseline.scope, position).map_err(graph_error)?);
                position
            }
            (None, None) => {
                let position = graph.applied();
                scope.extend(graph.baseline_members(&self.info.baseline.scope, position).map_err(graph_error)?);
                position
            }
        };
        let diff = graph.diff(here.min(there), here.max(there), Some(&scope)).map_err(graph_error)?;
        Ok(DiffResult { diff: Arc::new(diff), max_page_size: app.settings.max_page_size })
    }
}

/// Every baseline that exists now.
pub fn baselines(ctx: &Context<'_>) -> Vec<Baseline> {
    let graph = state(ctx).graph.read();
    let now = graph.applied();
    graph.baselines_at(now).into_iter().map(|info| Baseline { info: info.clone() }).collect()
}

pub fn baseline_by_name(ctx: &Context<'_>, name: &str) -> Option<Baseline> {
    let graph = state(ctx).graph.read();
    let now = graph.applied();
    graph.baseline(name, now).map(|info| Baseline { info: info.clone() })
}

#[derive(InputObject, Default)]
pub struct BaselineFilterInput {
    pub classes: Option<Vec<String>>,
    pub statuses: Option<Vec<CiStatus>>,
    pub environments: Option<Vec<Environment>>,
    pub name_contains: Option<String>,
}

#[derive(InputObject)]
pub struct CreateBaselineInput {
    pub name: String,
    pub description: Option<String>,
    /// The moment it names (default: now).
    pub at: Option<MomentInput>,
    /// Choose the members by a filter...
    pub filter: Option<BaselineFilterInput>,
    /// ...or as a business service and what it depends on within `depth`.
    pub service: Option<ID>,
    #[graphql(default = 4)]
    pub depth: u32,
}

#[derive(SimpleObject)]
pub struct BaselineChange {
    pub baseline: Option<Baseline>,
    pub position: Position,
}

#[derive(Default)]
pub struct BaselineMutation;

#[Object]
impl BaselineMutation {
    /// Names a set of CIs at a moment (CM-6).
    #[graphql(guard = "Requires(Operation::ManageBaselines)")]
    async fn create_baseline(
        &self,
        ctx: &Context<'_>,
        input: CreateBaselineInput,
    ) -> async_graphql::Result<BaselineChange> {
        let app = state(ctx);
        let event = {
            let graph = app.graph.read();
            let position = match input.at {
                Some(moment) => resolve_moment(&graph, moment, "at")?,
                None => graph.applied(),
            };
            let scope = match (input.filter, input.service) {
                (Some(filter), None) => BaselineScope::Filter {
                    classes: parse_classes(ctx, filter.classes)?,
                    statuses: filter.statuses.map(|s| s.into_iter().map(Into::into).collect()),
                    environments: filter.environments.map(|e| e.into_iter().map(Into::into).collect()),
                    name_contains: filter.name_contains,
                },
                (None, Some(service)) => BaselineScope::Service { service: parse_id(&service)?, depth: input.depth },
                _ => return Err(bad_input("give either filter or service")),
            };
            if let BaselineScope::Service { depth, .. } = scope
                && (depth == 0 || depth > baseline::MAX_SERVICE_DEPTH)
            {
                return Err(core_error(baseline::BaselineError::Depth(depth).into()));
            }
            let members = graph.baseline_members(&scope, position).map_err(graph_error)?;
            BaselineCreated {
                name: input.name.clone(),
                description: input.description,
                position,
                scope,
                members: members.len() as u64,
                members_digest: baseline::members_digest(&members),
            }
        };
        let command = baseline::BaselineCommand::Create(event);
        let outcome =
            app.app.run(&baseline::BaselineDecider, &command, metadata(ctx)?).await.map_err(app_error)?.outcome;
        let graph = app.graph.read();
        Ok(BaselineChange {
            baseline: graph.baseline(&input.name, outcome.last_position).map(|info| Baseline { info: info.clone() }),
            position: Position(outcome.last_position),
        })
    }

    /// Deletes a baseline (its creation stays in the log).
    #[graphql(guard = "Requires(Operation::ManageBaselines)")]
    async fn delete_baseline(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {name, reason}")] name: Option<String>,
        #[graphql(deprecation = "pass input: {name, reason}")] reason: Option<String>,
        input: Option<DeleteBaselineInput>,
    ) -> async_graphql::Result<super::log::Written> {
        let any_loose = name.is_some() || reason.is_some();
        let loose = name.map(|name| DeleteBaselineInput { name, reason });
        let DeleteBaselineInput { name, reason } = super::inputs::input_or(input, loose, any_loose, "{name, reason}")?;
        let app = state(ctx);
        let command = baseline::BaselineCommand::Delete { name, reason };
        let outcome =
            app.app.run(&baseline::BaselineDecider, &command, metadata(ctx)?).await.map_err(app_error)?.outcome;
        Ok(super::log::Written { position: Position(outcome.last_position) })
    }
}

/// A page of a baseline's members, as they were at its position (offset cursors: the
/// members never change).
#[derive(async_graphql::SimpleObject)]
pub struct BaselineMemberConnection {
    /// The members on this page.
    pub nodes: Vec<Ci>,
    /// Where the page is.
    pub page_info: super::paging::PageInfo,
    /// How many members the baseline has.
    pub total_count: usize,
}

/// `deleteBaseline(input:)`.
#[derive(async_graphql::InputObject)]
pub struct DeleteBaselineInput {
    name: String,
    reason: Option<String>,
}
