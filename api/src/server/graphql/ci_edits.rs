//! Editing the configuration over GraphQL: a mutation per CI command (each run by the application
//! layer under its change, CM-3) and the subscription to CI and relationship changes.

use super::cis::Ci;
use super::cis::CiField;
use super::cis::CiStatus;
use super::cis::Environment;
use super::cis::Relationship;
use super::cis::RelationshipType;
use super::context::{Requires, app, metadata, parse_class, parse_classes, parse_id, resolve_change, state};
use super::scalars::{DateTime, Position};
use crate::server::errors::{Code, app_error, bad_input, coded, store_error};
use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject, Subscription};
use cmdb_core::access::Operation;
use cmdb_core::ci::{self as domain, CiCommand, CiEvent};
use cmdb_core::store::subscribe;
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::time::Duration;

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
        Some(id) => Ok(Some(resolve_change(ctx, &id).await?)),
        None => Ok(None),
    }
}

/// Runs a command, waits until the graph has applied it, returns the positions.
async fn run(ctx: &Context<'_>, command: CiCommand) -> async_graphql::Result<(u64, u64)> {
    let written = app(ctx).edit_ci(&command, metadata(ctx)?).await.map_err(app_error)?;
    Ok((written.first_position, written.last_position))
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
pub struct CiMutation;

#[Object]
impl CiMutation {
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
            unauthorised: false,
        };
        let positions = run(ctx, CiCommand::Update(ci_id, update)).await?;
        Ok(ci_result(ctx, ci_id, positions))
    }

    /// Moves a CI through its life cycle (the allowed transitions are a table).
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn transition_ci(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input")] id: Option<ID>,
        #[graphql(deprecation = "pass input")] to: Option<CiStatus>,
        #[graphql(deprecation = "pass input")] reason: Option<String>,
        #[graphql(deprecation = "pass input")] authorized_by: Option<ID>,
        input: Option<TransitionCiInput>,
    ) -> async_graphql::Result<CiChangeResult> {
        let loose = match (id, to) {
            (Some(id), Some(to)) => Some(TransitionCiInput { id, to, reason, authorized_by }),
            (None, None) if reason.is_none() && authorized_by.is_none() => None,
            _ => return Err(bad_input("give input: {id, to, reason, authorizedBy} (or the deprecated id and to)")),
        };
        let TransitionCiInput { id, to, reason, authorized_by } = one_way(input, loose)?;
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
        #[graphql(deprecation = "pass input")] id: Option<ID>,
        #[graphql(deprecation = "pass input")] reason: Option<String>,
        #[graphql(deprecation = "pass input")] authorized_by: Option<ID>,
        input: Option<EndInput>,
    ) -> async_graphql::Result<CiChangeResult> {
        let loose = loose_end(id, reason, authorized_by)?;
        let EndInput { id, reason, authorized_by } = one_way(input, loose)?;
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
        #[graphql(name = "type", deprecation = "pass input")] rel_type: Option<RelationshipType>,
        #[graphql(deprecation = "pass input")] source: Option<ID>,
        #[graphql(deprecation = "pass input")] target: Option<ID>,
        #[graphql(deprecation = "pass input")] authorized_by: Option<ID>,
        input: Option<RelateInput>,
    ) -> async_graphql::Result<RelationshipChangeResult> {
        let loose = match (rel_type, source, target) {
            (Some(rel_type), Some(source), Some(target)) => {
                Some(RelateInput { rel_type, source, target, authorized_by })
            }
            (None, None, None) if authorized_by.is_none() => None,
            _ => {
                return Err(bad_input(
                    "give input: {type, source, target, authorizedBy} (or the deprecated type, source and target)",
                ));
            }
        };
        let RelateInput { rel_type, source, target, authorized_by } = one_way(input, loose)?;
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
        #[graphql(deprecation = "pass input")] id: Option<ID>,
        #[graphql(deprecation = "pass input")] reason: Option<String>,
        #[graphql(deprecation = "pass input")] authorized_by: Option<ID>,
        input: Option<EndInput>,
    ) -> async_graphql::Result<RelationshipChangeResult> {
        let loose = loose_end(id, reason, authorized_by)?;
        let EndInput { id, reason, authorized_by } = one_way(input, loose)?;
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

/// `transitionCi(input:)`.
#[derive(InputObject)]
pub struct TransitionCiInput {
    /// The CI.
    pub id: ID,
    /// The status it moves to.
    pub to: CiStatus,
    /// Why.
    pub reason: Option<String>,
    /// The implementing change that covers the CI (CM-3).
    pub authorized_by: Option<ID>,
}

/// `withdrawCi(input:)` and `unrelate(input:)`: what ends, why, under which change.
#[derive(InputObject)]
pub struct EndInput {
    /// The CI or relationship.
    pub id: ID,
    /// Why.
    pub reason: Option<String>,
    /// The implementing change that covers it (CM-3).
    pub authorized_by: Option<ID>,
}

/// `relate(input:)`.
#[derive(InputObject)]
pub struct RelateInput {
    /// The relationship's type.
    #[graphql(name = "type")]
    pub rel_type: RelationshipType,
    /// The CI it goes from.
    pub source: ID,
    /// The CI it goes to.
    pub target: ID,
    /// The implementing change that covers both (CM-3).
    pub authorized_by: Option<ID>,
}

/// `input`, or what the deprecated loose arguments made: exactly one of the two ways.
fn one_way<T>(input: Option<T>, loose: Option<T>) -> async_graphql::Result<T> {
    match (input, loose) {
        (Some(input), None) => Ok(input),
        (None, Some(loose)) => Ok(loose),
        (None, None) => Err(bad_input("give input: {...}")),
        (Some(_), Some(_)) => Err(bad_input("give input, or the deprecated arguments, not both")),
    }
}

/// The deprecated `id`, `reason`, `authorizedBy` of a withdrawal or an unrelate.
fn loose_end(
    id: Option<ID>,
    reason: Option<String>,
    authorized_by: Option<ID>,
) -> async_graphql::Result<Option<EndInput>> {
    match id {
        Some(id) => Ok(Some(EndInput { id, reason, authorized_by })),
        None if reason.is_none() && authorized_by.is_none() => Ok(None),
        None => Err(bad_input("give input: {id, reason, authorizedBy} (or the deprecated id)")),
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
pub struct CiSubscription;

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
impl CiSubscription {
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
            .ok_or_else(|| coded(Code::BadRequest, "subscriptions are served over the WebSocket at /graphql/ws"))?
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
                    if let Some(classes) = &classes
                        && !class.is_some_and(|c| classes.contains(&c))
                    {
                        return None;
                    }
                    Some(Ok(CiChange {
                        position: Position(record.position),
                        event_type: record.event_type.to_string(),
                        ci_id: ci.map(|c| ID(c.to_string())),
                        class: class.map(|c| c.as_str().to_owned()),
                        relationship_id: rel.map(|r| ID(r.to_string())),
                        principal: record.principal.to_string(),
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
