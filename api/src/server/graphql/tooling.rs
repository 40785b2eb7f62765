//! What deployment tooling reported, over GraphQL: mapping rules (admin), unmapped sources,
//! unauthorised changes (a query inside `at(...)` and a subscription), incidents (IN-1) and
//! their mutations. Resolvers only translate; the rules are in `cmdb_core::release::observe`
//! and the mapping in `app::tooling`.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Subscription};
use cmdb_core::access::Operation;
use cmdb_core::release::observe as domain;
use cmdb_core::release::{ReleaseCommand, ReleaseEvent};
use futures::Stream;

use super::context::{Requires, app, list_limit, metadata, parse_id, state};
use super::environment::Environment;
use super::scalars::{DateTime, Position};
use crate::server::errors::{Code, app_error, bad_input, coded};

/// Events an unauthorised-change subscription reads from the log per page.
const UNAUTHORISED_PAGE_EVENTS: usize = 500;
/// Most unauthorised changes one query returns.
pub const MAX_UNAUTHORISED_LIST: usize = 1_000;

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::observe::Provider")]
pub enum ToolProvider {
    Github,
    Cdevents,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::observe::ObservedState")]
pub enum ObservedState {
    Queued,
    Pending,
    InProgress,
    Success,
    Failure,
    Error,
    Inactive,
    RolledBack,
    Removed,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::observe::Impact")]
pub enum Impact {
    High,
    Medium,
    Low,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::observe::Urgency")]
pub enum Urgency {
    High,
    Medium,
    Low,
}

/// A tool's own record: its provider, source and id.
#[derive(SimpleObject, Clone)]
pub struct ToolRef {
    provider: ToolProvider,
    source: String,
    id: String,
}

impl From<&domain::ToolRef> for ToolRef {
    fn from(t: &domain::ToolRef) -> Self {
        ToolRef { provider: t.provider.into(), source: t.source.clone(), id: t.id.clone() }
    }
}

/// One report a tool made about its deployment.
#[derive(SimpleObject, Clone)]
pub struct Observation {
    state: ObservedState,
    /// The delivery that told it.
    delivery: String,
    description: Option<String>,
    url: Option<String>,
    /// When the tool says it happened.
    occurred_at: Option<DateTime>,
    recorded_at: DateTime,
    position: Position,
}

impl Observation {
    /// The view of a recorded observation.
    pub fn of(o: &domain::DeploymentObserved, stamp: &cmdb_core::release::Stamp) -> Self {
        Observation {
            state: o.state.into(),
            delivery: o.delivery.clone(),
            description: o.description.clone(),
            url: o.url.clone(),
            occurred_at: o.occurred_at.map(DateTime),
            recorded_at: DateTime(stamp.at),
            position: Position(stamp.position),
        }
    }
}

/// A mapping rule: a tool's source (and subject) name a CI.
#[derive(SimpleObject, Clone)]
pub struct ToolMapping {
    provider: ToolProvider,
    source: String,
    /// The subject it names (a GitHub environment, a CDEvents subject id); null: any.
    subject: Option<String>,
    ci: ID,
    environment: Option<Environment>,
}

impl From<&domain::MappingRule> for ToolMapping {
    fn from(r: &domain::MappingRule) -> Self {
        ToolMapping {
            provider: r.provider.into(),
            source: r.source.clone(),
            subject: r.subject.clone(),
            ci: ID(r.ci.to_string()),
            environment: r.environment.map(Into::into),
        }
    }
}

/// A source whose deliveries mapped to nothing.
#[derive(SimpleObject, Clone)]
pub struct UnmappedSource {
    provider: ToolProvider,
    source: String,
    count: u64,
    /// Why the newest was not mapped.
    reason: String,
    event_type: String,
    last_at: DateTime,
}

/// Deliveries received from one tool.
#[derive(SimpleObject, Clone)]
pub struct DeliveryCount {
    provider: ToolProvider,
    mapped: u64,
    unmapped: u64,
}

/// A deployment observed with no change or accepted release covering its CI (CM-3).
#[derive(SimpleObject, Clone)]
pub struct UnauthorisedChange {
    deployment: ID,
    ci: ID,
    environment: Environment,
    /// The tool's deployment.
    tool: ToolRef,
    /// The retrospective emergency change opened for it (CH-8).
    change: ID,
    version: Option<String>,
    recorded_at: DateTime,
    position: Position,
}

impl UnauthorisedChange {
    fn of(position: u64, at: cmdb_core::time::Timestamp, u: &domain::UnauthorisedChange) -> Self {
        UnauthorisedChange {
            deployment: ID(u.deployment_id.to_string()),
            ci: ID(u.ci.to_string()),
            environment: u.environment.into(),
            tool: (&u.tool).into(),
            change: ID(u.change_id.to_string()),
            version: u.version.clone(),
            recorded_at: DateTime(at),
            position: Position(position),
        }
    }
}

/// An incident (IN-1).
#[derive(SimpleObject, Clone)]
pub struct Incident {
    /// The tool's incident.
    tool: ToolRef,
    title: String,
    impact: Impact,
    urgency: Urgency,
    /// 1 (critical) to 5, from impact and urgency.
    priority: i32,
    cis: Vec<ID>,
    environment: Option<Environment>,
    detected_at: DateTime,
    resolved_at: Option<DateTime>,
    position: Position,
}

impl From<&domain::IncidentRecord> for Incident {
    fn from(i: &domain::IncidentRecord) -> Self {
        let o = &i.opened;
        Incident {
            tool: (&o.incident).into(),
            title: o.title.clone(),
            impact: o.impact.into(),
            urgency: o.urgency.into(),
            priority: i32::from(o.priority),
            cis: o.cis.iter().map(|c| ID(c.to_string())).collect(),
            environment: o.environment.map(Into::into),
            detected_at: DateTime(o.detected_at),
            resolved_at: i.resolved.as_ref().map(|r| DateTime(r.resolved_at)),
            position: Position(i.position),
        }
    }
}

/// Tooling as it stood at one position.
pub struct ToolingAt {
    /// The position.
    pub position: u64,
}

#[Object]
impl ToolingAt {
    /// The mapping rules from tools' names to CIs.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn tool_mappings(&self, ctx: &Context<'_>, first: Option<i32>) -> async_graphql::Result<Vec<ToolMapping>> {
        let limit = list_limit(first)?;
        let graph = state(ctx).graph.read();
        Ok(graph.release_book().mappings_at(self.position).rules().take(limit).map(Into::into).collect())
    }

    /// Sources whose deliveries mapped to nothing, most frequent first.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn unmapped_sources(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<UnmappedSource>> {
        let limit = list_limit(first)?;
        let graph = state(ctx).graph.read();
        Ok(graph
            .release_book()
            .unmapped_sources_at(self.position)
            .into_iter()
            .take(limit)
            .map(|s| UnmappedSource {
                provider: s.provider.into(),
                source: s.source,
                count: s.count,
                reason: s.reason,
                event_type: s.event_type,
                last_at: DateTime(s.last_at),
            })
            .collect())
    }

    /// Deliveries received, per tool.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn deliveries(&self, ctx: &Context<'_>) -> Vec<DeliveryCount> {
        let graph = state(ctx).graph.read();
        graph
            .release_book()
            .delivery_counts_at(self.position)
            .into_iter()
            .map(|(provider, (mapped, unmapped))| DeliveryCount { provider: provider.into(), mapped, unmapped })
            .collect()
    }

    /// Unauthorised changes recorded in [from, to), oldest first (at most 1,000).
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn unauthorised_changes(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime>,
        to: Option<DateTime>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<UnauthorisedChange>> {
        let limit = match first {
            None => MAX_UNAUTHORISED_LIST,
            Some(n) if n < 0 => return Err(bad_input("first must not be negative")),
            Some(n) => usize::try_from(n).unwrap_or(0).min(MAX_UNAUTHORISED_LIST),
        };
        let graph = state(ctx).graph.read();
        Ok(graph
            .release_book()
            .unauthorised_at(self.position, from.map(|t| t.0), to.map(|t| t.0))
            .iter()
            .take(limit)
            .map(|(position, at, u)| UnauthorisedChange::of(*position, *at, u))
            .collect())
    }

    /// Incidents, newest first, on a CI if given.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn incidents(
        &self,
        ctx: &Context<'_>,
        ci: Option<ID>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Incident>> {
        let limit = list_limit(first)?;
        let ci = ci.as_ref().map(parse_id).transpose()?;
        let graph = state(ctx).graph.read();
        Ok(graph.release_book().incidents_at(self.position, ci, limit).iter().map(Into::into).collect())
    }
}

/// A mapping rule to set.
#[derive(InputObject)]
pub struct ToolMappingInput {
    provider: ToolProvider,
    /// A GitHub repository (`octo-org/payments`), a CDEvents subject's source.
    source: String,
    /// A GitHub environment, a CDEvents subject id (an Argo CD application); null: any.
    subject: Option<String>,
    ci: ID,
    /// Where its deployments go; null: the tool's environment name, else the CI's.
    environment: Option<Environment>,
}

/// An incident to report.
#[derive(InputObject)]
pub struct IncidentInput {
    /// Its id in your tool (unique per source).
    id: String,
    /// Your tool (`pagerduty`, `opsgenie`...).
    source: String,
    title: String,
    impact: Impact,
    urgency: Urgency,
    cis: Vec<ID>,
    environment: Option<Environment>,
    /// When it began (default: now).
    detected_at: Option<DateTime>,
}

/// Tooling mutations.
#[derive(Default)]
pub struct ToolingMutation;

#[Object]
impl ToolingMutation {
    /// Sets a mapping rule (admin): deliveries from the source (and subject) map to the CI.
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn set_tool_mapping(&self, ctx: &Context<'_>, input: ToolMappingInput) -> async_graphql::Result<ToolMapping> {
        let rule = domain::MappingRule {
            provider: input.provider.into(),
            source: input.source,
            subject: input.subject,
            ci: parse_id(&input.ci)?,
            environment: input.environment.map(Into::into),
        };
        app(ctx).release(&ReleaseCommand::SetMapping(rule.clone()), metadata(ctx)?).await.map_err(app_error)?;
        Ok((&rule).into())
    }

    /// Removes a mapping rule (admin).
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn remove_tool_mapping(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {provider, source, subject}")] provider: Option<ToolProvider>,
        #[graphql(deprecation = "pass input: {provider, source, subject}")] source: Option<String>,
        #[graphql(deprecation = "pass input: {provider, source, subject}")] subject: Option<String>,
        input: Option<RemoveToolMappingInput>,
    ) -> async_graphql::Result<bool> {
        let any_loose = provider.is_some() || source.is_some() || subject.is_some();
        let loose = provider.zip(source).map(|(provider, source)| RemoveToolMappingInput { provider, source, subject });
        let RemoveToolMappingInput { provider, source, subject } =
            super::inputs::input_or(input, loose, any_loose, "{provider, source, subject}")?;
        let removed = domain::MappingRemoved { provider: provider.into(), source, subject };
        app(ctx).release(&ReleaseCommand::RemoveMapping(removed), metadata(ctx)?).await.map_err(app_error)?;
        Ok(true)
    }

    /// Reports an incident on CIs (IN-1); its priority comes from impact and urgency.
    #[graphql(guard = "Requires(Operation::Deploy)")]
    async fn report_incident(&self, ctx: &Context<'_>, input: IncidentInput) -> async_graphql::Result<Incident> {
        let cis = input.cis.iter().map(parse_id).collect::<async_graphql::Result<Vec<_>>>()?;
        let tool = domain::ToolRef { provider: domain::Provider::Cdevents, source: input.source, id: input.id };
        let opened = domain::IncidentOpened {
            incident: tool.clone(),
            title: input.title,
            impact: input.impact.into(),
            urgency: input.urgency.into(),
            priority: domain::priority(input.impact.into(), input.urgency.into()),
            cis,
            environment: input.environment.map(Into::into),
            detected_at: input.detected_at.map_or_else(|| state(ctx).clock.now(), |t| t.0),
        };
        let command = ReleaseCommand::OpenIncident { opened: Box::new(opened), delivery: None };
        app(ctx).release(&command, metadata(ctx)?).await.map_err(app_error)?;
        incident_now(ctx, &tool)
    }

    /// Asks for a dead-lettered fact to be sent to its target once more (admin).
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn replay_dead_letter(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {target, position}")] target: Option<String>,
        #[graphql(deprecation = "pass input: {target, position}")] position: Option<Position>,
        input: Option<ReplayDeadLetterInput>,
    ) -> async_graphql::Result<Position> {
        let any_loose = target.is_some() || position.is_some();
        let loose = target.zip(position).map(|(target, position)| ReplayDeadLetterInput { target, position });
        let ReplayDeadLetterInput { target, position } =
            super::inputs::input_or(input, loose, any_loose, "{target, position}")?;
        let command = cmdb_core::outbound::OutboundCommand::Replay { target, position: position.0 };
        let context = app(ctx).context(metadata(ctx)?);
        let executed = cmdb_core::decider::execute(
            state(ctx).store.as_ref(),
            &cmdb_core::outbound::OutboundDecider,
            &command,
            &context,
            None,
        )
        .await
        .map_err(crate::server::errors::core_error)?;
        Ok(Position(executed.outcome.last_position))
    }

    /// Resolves an incident.
    #[graphql(guard = "Requires(Operation::Deploy)")]
    async fn resolve_incident(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, source, note, resolvedAt}")] id: Option<String>,
        #[graphql(deprecation = "pass input: {id, source, note, resolvedAt}")] source: Option<String>,
        #[graphql(deprecation = "pass input: {id, source, note, resolvedAt}")] note: Option<String>,
        #[graphql(deprecation = "pass input: {id, source, note, resolvedAt}")] resolved_at: Option<DateTime>,
        input: Option<ResolveIncidentInput>,
    ) -> async_graphql::Result<Incident> {
        let any_loose = id.is_some() || source.is_some() || note.is_some() || resolved_at.is_some();
        let loose = id.zip(source).map(|(id, source)| ResolveIncidentInput { id, source, note, resolved_at });
        let ResolveIncidentInput { id, source, note, resolved_at } =
            super::inputs::input_or(input, loose, any_loose, "{id, source, note, resolvedAt}")?;
        let tool = domain::ToolRef { provider: domain::Provider::Cdevents, source, id };
        let resolved = domain::IncidentResolved {
            incident: tool.clone(),
            resolved_at: resolved_at.map_or_else(|| state(ctx).clock.now(), |t| t.0),
            note,
        };
        let command = ReleaseCommand::ResolveIncident { resolved: Box::new(resolved), delivery: None };
        app(ctx).release(&command, metadata(ctx)?).await.map_err(app_error)?;
        incident_now(ctx, &tool)
    }
}

/// An outbound target.
#[derive(SimpleObject, Clone)]
pub struct OutboundTarget {
    name: String,
    url: String,
    /// The last log position handled (sent or dead-lettered).
    handled_through: Position,
    delivered: u64,
    dead_letters: Vec<DeadLetter>,
}

/// A fact that could not be sent.
#[derive(SimpleObject, Clone)]
pub struct DeadLetter {
    position: Position,
    event_type: String,
    attempts: u32,
    error: Option<String>,
    at: DateTime,
    replay_requested: bool,
}

impl OutboundTarget {
    /// The view of a target's outbox.
    pub fn of(target: &crate::server::outbound::Target, state: &cmdb_core::outbound::OutboxState) -> Self {
        OutboundTarget {
            name: target.name.clone(),
            url: target.url.clone(),
            handled_through: Position(state.handled_through),
            delivered: state.delivered,
            dead_letters: state
                .dead_letters
                .values()
                .map(|l| DeadLetter {
                    position: Position(l.handled.position),
                    event_type: l.handled.event_type.clone(),
                    attempts: l.handled.attempts,
                    error: l.handled.error.clone(),
                    at: DateTime(l.at),
                    replay_requested: l.replay_requested,
                })
                .collect(),
        }
    }
}

fn incident_now(ctx: &Context<'_>, tool: &domain::ToolRef) -> async_graphql::Result<Incident> {
    let graph = state(ctx).graph.read();
    graph
        .release_book()
        .incident_at(tool, graph.applied())
        .as_ref()
        .map(Into::into)
        .ok_or_else(|| coded(Code::Internal, "the incident was recorded but is not in the read model"))
}

/// The unauthorised-change subscription.
#[derive(Default)]
pub struct UnauthorisedSubscription;

#[Subscription]
impl UnauthorisedSubscription {
    /// Unauthorised changes from now on (or after `after`), as they are recorded.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn unauthorised_changes(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<UnauthorisedChange>>> {
        super::context::follow_log(ctx, after, UNAUTHORISED_PAGE_EVENTS, |record| {
            match ReleaseEvent::from_record(record) {
                Ok(Some(ReleaseEvent::Unauthorised(u))) => {
                    Some(UnauthorisedChange::of(record.position, record.recorded_at, &u))
                }
                _ => None,
            }
        })
        .await
    }
}

/// `removeToolMapping(input:)`.
#[derive(async_graphql::InputObject)]
pub struct RemoveToolMappingInput {
    provider: ToolProvider,
    source: String,
    subject: Option<String>,
}

/// `replayDeadLetter(input:)`.
#[derive(async_graphql::InputObject)]
pub struct ReplayDeadLetterInput {
    target: String,
    position: Position,
}

/// `resolveIncident(input:)`.
#[derive(async_graphql::InputObject)]
pub struct ResolveIncidentInput {
    id: String,
    source: String,
    note: Option<String>,
    resolved_at: Option<DateTime>,
}
