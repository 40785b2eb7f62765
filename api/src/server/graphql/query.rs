//! The query root: the log, identity and principals, `at(...)`, `diff`, classes, baselines and the
//! server's limits.

use super::access::{Me, Principal};
use super::context::{Requires, caller, state};
use super::log::page_size;
use super::log::type_filter;
use super::log::{
    Digest, DigestCheckResult, Event, EventConnection, EventEdge, Limits, LogHead, PageInfo, VerifyResult,
};
use super::scalars::Position;
use crate::server::errors::{bad_input, store_error};
use async_graphql::{Context, ID, Object};
use cmdb_core::access::Operation;
use cmdb_core::store::Direction;
use cmdb_core::{EventRecord, StreamId};

/// The query root (`Query` in the schema).
pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// The CI, change or release with this id at the head (Relay's `node`; `at { node(id:) }`
    /// reads it at any moment); null if none has it.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Option<super::node::Node> {
        let position = state(ctx).graph.applied();
        super::node::node_at(ctx, &id, position)
    }

    /// Each outbound CDEvents target: how far it was sent, and its dead letters.
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn outbound(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::tooling::OutboundTarget>> {
        let app = state(ctx);
        let mut targets = Vec::new();
        for target in &app.settings.cdevents_targets {
            let key = cmdb_core::outbound::OutboundKey::Target(target.name.clone());
            let state = match cmdb_core::decider::fold::load(app.store.as_ref(), &key)
                .await
                .map_err(crate::server::errors::core_error)?
            {
                cmdb_core::outbound::OutboundRead::Target(state) => state,
                cmdb_core::outbound::OutboundRead::Access(_) => Default::default(),
            };
            targets.push(super::tooling::OutboundTarget::of(target, &state));
        }
        Ok(targets)
    }

    /// The last committed position and its hash.
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn head(&self, ctx: &Context<'_>) -> async_graphql::Result<LogHead> {
        Ok(LogHead(state(ctx).store.head().await.map_err(store_error)?))
    }

    /// Events after a position, oldest first, as a Relay connection. `after` is a position or
    /// an `endCursor`; 0 (the default) is the start. `last`/`before` page backward instead:
    /// the `last` events before `before` (default: the whole log), still oldest first in the
    /// page. `stream` keeps one stream's events; `types` keeps events of those types. A
    /// filtered page scans at most `max_scan_events` events; if it stops there, the cursor on
    /// the side it was reading (`endCursor` forward, `startCursor` backward) says where to
    /// resume.
    #[graphql(
        guard = "Requires(Operation::ReadLog)",
        complexity = "(first.or(last).unwrap_or(100).max(1) as usize).saturating_mul(child_complexity)"
    )]
    #[allow(clippy::too_many_arguments, reason = "GraphQL arguments: two filters and Relay's four")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
        first: Option<i32>,
        before: Option<Position>,
        last: Option<i32>,
        stream: Option<String>,
        types: Option<Vec<String>>,
    ) -> async_graphql::Result<EventConnection> {
        let app = state(ctx);
        if last.is_some() || before.is_some() {
            if first.is_some() || after.is_some() {
                return Err(bad_input("page forward (first, after) or backward (last, before), not both"));
            }
            let last = super::paging::counted("last", last, app.settings.max_page_size)?;
            let types = type_filter(types)?;
            let stream = stream.map(StreamId::new).transpose().map_err(|e| bad_input(format!("stream: {e}")))?;
            return super::log::events_backward(app, before.map(|p| p.0), last, stream.as_ref(), &types).await;
        }
        let first = page_size(first, app.settings.max_page_size)?;
        let types = type_filter(types)?;
        let after = after.map_or(0, |p| p.0);
        let stream = stream.map(StreamId::new).transpose().map_err(|e| bad_input(format!("stream: {e}")))?;
        let store = &app.store;
        let read_page = store.limits().max_page_events.min(first.saturating_add(1).max(1000));
        let mut found: Vec<EventRecord> = Vec::with_capacity(first + 1);
        let mut scanned_through = after;
        let mut scanned = 0usize;
        let mut exhausted = false;
        // Stream reads go by stream version; positions rise with versions, so the first event
        // past `after` is found by reading on from the stream's start.
        let mut stream_version = 0u64;
        while found.len() <= first && scanned < app.settings.max_scan_events {
            let page = match &stream {
                None => store.read_all(scanned_through, read_page).await,
                Some(stream) => store.read_stream(stream, Direction::Forward, Some(stream_version), read_page).await,
            }
            .map_err(store_error)?;
            let Some(last) = page.last() else {
                exhausted = true;
                break;
            };
            stream_version = last.stream_version + 1;
            for record in page {
                scanned += 1;
                if record.position <= after {
                    continue;
                }
                scanned_through = record.position;
                if super::log::matches(&types, &record) {
                    found.push(record);
                    if found.len() > first {
                        break;
                    }
                }
                if scanned >= app.settings.max_scan_events {
                    break;
                }
            }
        }
        let has_more_matches = found.len() > first;
        found.truncate(first);
        let has_next_page = has_more_matches || !exhausted;
        let end = if has_more_matches { found.last().map(|r| r.position) } else { Some(scanned_through) };
        let edges: Vec<EventEdge> =
            found.into_iter().map(|r| EventEdge { cursor: r.position.to_string(), node: Event(r) }).collect();
        let page_info = PageInfo {
            has_next_page,
            has_previous_page: after > 0,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: end.filter(|p| *p > 0).map(|p| p.to_string()),
        };
        Ok(EventConnection { edges: super::lists::Seq(edges), page_info })
    }

    /// One event by position.
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn event(&self, ctx: &Context<'_>, position: Position) -> async_graphql::Result<Option<Event>> {
        Ok(state(ctx).store.event_at(position.0).await.map_err(store_error)?.map(Event))
    }

    /// Recomputes the whole hash chain and reports the first break, if any.
    #[graphql(guard = "Requires(Operation::VerifyLog)")]
    async fn verify_log(&self, ctx: &Context<'_>) -> async_graphql::Result<VerifyResult> {
        Ok(state(ctx).store.verify().await.map_err(store_error)?.into())
    }

    /// The head as a digest (`<position>:<hash>`) to write down and check later.
    #[graphql(guard = "Requires(Operation::VerifyLog)")]
    async fn digest(&self, ctx: &Context<'_>) -> async_graphql::Result<Digest> {
        Ok(state(ctx).store.head().await.map_err(store_error)?.into())
    }

    /// Checks a digest exported earlier against the log as it is now.
    #[graphql(guard = "Requires(Operation::VerifyLog)")]
    async fn check_digest(&self, ctx: &Context<'_>, digest: String) -> async_graphql::Result<DigestCheckResult> {
        let digest: cmdb_core::Digest =
            digest.parse().map_err(|e: cmdb_core::chain::DigestParseError| bad_input(e.to_string()))?;
        Ok(state(ctx).store.check_digest(digest).await.map_err(store_error)?.into())
    }

    /// The newest signed checkpoint of the log's Merkle tree (RFC 6962), if one was signed.
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn checkpoint(&self, ctx: &Context<'_>) -> Option<super::evidence::SignedCheckpoint> {
        super::evidence::latest(ctx)
    }

    /// Signed checkpoints with `fromSize <= treeSize <= toSize`, oldest first.
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn checkpoints(
        &self,
        ctx: &Context<'_>,
        from_size: Option<Position>,
        to_size: Option<Position>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<super::evidence::SignedCheckpoint>> {
        super::evidence::between(ctx, from_size, to_size, first)
    }

    /// Proof that the event at `position` is in the tree of `treeSize` events (default: the
    /// newest signed checkpoint's tree, else the whole log).
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn inclusion_proof(
        &self,
        ctx: &Context<'_>,
        position: Position,
        tree_size: Option<Position>,
    ) -> async_graphql::Result<super::evidence::InclusionProof> {
        super::evidence::inclusion(ctx, position, tree_size).await
    }

    /// Proof that the tree of `fromSize` events is a prefix of the tree of `toSize` (default:
    /// the newest signed checkpoint's tree, else the whole log).
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn consistency_proof(
        &self,
        ctx: &Context<'_>,
        from_size: Position,
        to_size: Option<Position>,
    ) -> async_graphql::Result<super::evidence::ConsistencyProof> {
        super::evidence::consistency(ctx, from_size, to_size)
    }

    /// Every redaction of personal data: asked, rejected or applied (issue 18).
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn redactions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::redaction::RedactionInfo>> {
        super::redaction::list(ctx).await
    }

    /// One redaction by id.
    #[graphql(guard = "Requires(Operation::ReadLog)")]
    async fn redaction(
        &self,
        ctx: &Context<'_>,
        id: String,
    ) -> async_graphql::Result<Option<super::redaction::RedactionInfo>> {
        super::redaction::one(ctx, &id).await
    }

    /// The caller: principal, kind, roles and the token in use.
    #[graphql(guard = "Requires(Operation::ReadOwnIdentity)")]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let caller = caller(ctx)?;
        Ok(Me {
            principal: caller.principal.clone(),
            kind: caller.kind.into(),
            roles: caller.roles.iter().copied().map(Into::into).collect(),
            token_id: ID(caller.token_id.to_string()),
        })
    }

    /// Every principal, with roles and token metadata.
    #[graphql(guard = "Requires(Operation::ReadPrincipals)")]
    async fn principals(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Principal>> {
        let app = state(ctx);
        let state = app.access.snapshot();
        let now = app.clock.now();
        Ok(state.principals.values().map(|p| Principal::from_info(p, &state.tokens, now)).collect())
    }

    /// The configuration as it was at one moment: a log `position`, or a `time` (the last
    /// event recorded at or before it); the newest when neither is given. Every read inside
    /// happens at that one position. `minPosition` waits (up to min_position_wait_ms) until
    /// the graph has applied it: pass a mutation's position to read your own write.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn at(
        &self,
        ctx: &Context<'_>,
        position: Option<Position>,
        time: Option<super::scalars::DateTime>,
        min_position: Option<Position>,
    ) -> async_graphql::Result<super::at::At> {
        super::at::resolve_at(ctx, position, time, min_position).await
    }

    /// What changed between two moments (positions or times): CIs created, changed (every
    /// field before and after), withdrawn; relationships added and removed; each with its
    /// causes. `around` limits it to the CIs within `depth` relationships of one CI (or a
    /// business service) at either moment.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn diff(
        &self,
        ctx: &Context<'_>,
        from: super::diff::MomentInput,
        to: super::diff::MomentInput,
        around: Option<ID>,
        #[graphql(default = 2)] depth: u32,
    ) -> async_graphql::Result<super::diff::DiffResult> {
        super::diff::diff(ctx, from, to, around, depth)
    }

    /// Every class, built in and declared, with its attributes.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn classes(&self, ctx: &Context<'_>) -> Vec<super::classes::ClassInfo> {
        super::classes::classes(ctx)
    }

    /// Every configuration baseline that exists now (CM-6).
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn baselines(&self, ctx: &Context<'_>) -> Vec<super::baselines::Baseline> {
        super::baselines::baselines(ctx)
    }

    /// One baseline by name (case-insensitive).
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn baseline(&self, ctx: &Context<'_>, name: String) -> Option<super::baselines::Baseline> {
        super::baselines::baseline_by_name(ctx, &name)
    }

    /// Configuration audits recorded so far, newest first (the same as `at { audits }` now).
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn audits(
        &self,
        ctx: &Context<'_>,
        source: Option<super::discovery::DiscoverySource>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<super::discovery::Audit>> {
        super::discovery::DiscoveryAt::now(ctx).audits_list(ctx, source, first)
    }

    /// One configuration audit (the same as `at { audit(id:) }` now).
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn audit(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<super::discovery::Audit>> {
        super::discovery::DiscoveryAt::now(ctx).audit_by_id(ctx, &id)
    }

    /// The deployment gate as a dry run: the answer `POST /api/v1/gate` would give now for
    /// this service (id or name), environment and artifact, writing nothing (no change opened,
    /// started or recorded).
    #[graphql(guard = "Requires(Operation::Deploy)")]
    async fn gate(
        &self,
        ctx: &Context<'_>,
        service: String,
        environment: super::cis::Environment,
        artifact: super::releases::ArtifactInput,
        change: Option<ID>,
        release: Option<String>,
    ) -> async_graphql::Result<super::releases::GateAnswer> {
        super::releases::gate_dry_run(ctx, service, environment, artifact, change, release).await
    }

    /// The server's limits.
    #[graphql(guard = "Requires(Operation::ReadOwnIdentity)")]
    async fn limits(&self, ctx: &Context<'_>) -> Limits {
        let app = state(ctx);
        let settings = &app.settings;
        let store = app.store.limits();
        Limits {
            max_page_size: settings.max_page_size,
            max_scan_events: settings.max_scan_events,
            max_query_depth: settings.max_query_depth,
            max_query_complexity: settings.max_query_complexity,
            max_request_body_bytes: settings.max_request_body_bytes,
            max_subscriptions_per_connection: settings.max_subscriptions_per_connection,
            max_event_bytes: store.max_event_bytes,
            max_batch_events: store.max_batch_events,
        }
    }
}
