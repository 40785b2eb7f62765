//! The event log over GraphQL: events and their metadata, the head, digests and verification,
//! paging helpers, and the subscription to new events.

use super::context::SubscriptionSlots;
use super::context::{Requires, state};
use super::scalars::{DateTime, Position};
use crate::server::errors::{Code, bad_input, coded, limit_exceeded, store_error};
use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject, Subscription};
use cmdb_core::EventRecord;
use cmdb_core::access::Operation;
use cmdb_core::chain::{ChainBreak, DigestCheck, VerifyReport};
use cmdb_core::event::validate_event_type;
use cmdb_core::store::subscribe;
use futures::{Stream, StreamExt};

/// An event as stored in the log.
pub struct Event(pub EventRecord);

#[Object]
impl Event {
    /// Global position: gapless, the first event is 1.
    async fn position(&self) -> Position {
        Position(self.0.position)
    }

    async fn stream_id(&self) -> &str {
        self.0.stream_id.as_str()
    }

    /// Version within the stream; the first event of a stream is 0.
    async fn stream_version(&self) -> Position {
        Position(self.0.stream_version)
    }

    async fn event_id(&self) -> ID {
        ID(self.0.event_id.to_string())
    }

    /// The event type, e.g. `ci.registered`.
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }

    async fn schema_version(&self) -> u32 {
        self.0.schema_version
    }

    /// The payload, as JSON.
    async fn data(&self) -> async_graphql::Result<Json<serde_json::Value>> {
        serde_json::from_slice(&self.0.data).map(Json).map_err(|e| {
            crate::server::errors::coded(
                crate::server::errors::Code::Internal,
                format!("stored payload is not JSON: {e}"),
            )
        })
    }

    /// The payload exactly as stored: the bytes the chain's payload commitment is computed
    /// over (after a redaction, the erased values read `[redacted]` and the commitment kept
    /// from before stands for them).
    async fn data_text(&self) -> String {
        String::from_utf8_lossy(&self.0.data).into_owned()
    }

    /// The chain encoding the event was hashed with: 1 (payload hashed unsalted, logs written
    /// before salts) or 2 (a random salt per payload).
    async fn chain_version(&self) -> u32 {
        u32::from(self.0.seal.encoding().number())
    }

    /// The payload commitment the chain hashes, hex: blake3 of the payload (version 1) or
    /// blake3 keyed with the salt (version 2), kept as it was after a redaction.
    async fn payload_commitment(&self) -> String {
        cmdb_core::chain::payload_commitment(&self.0.seal, &self.0.data).to_hex()
    }

    /// The payload's salt, hex (version 2, until a redaction erases it with the values).
    async fn salt(&self) -> Option<String> {
        match &self.0.seal {
            cmdb_core::PayloadSeal::Salted(salt) => Some(hex::encode(salt)),
            _ => None,
        }
    }

    /// The redaction that erased values of this payload, if one did: who asked, who approved,
    /// why, and which fields.
    async fn redaction(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<super::redaction::EventRedaction>> {
        let Some(at) = self.0.seal.redaction_record() else { return Ok(None) };
        let record = state(ctx).store.event_at(at).await.map_err(store_error)?;
        let applied = record.as_ref().and_then(|r| match cmdb_core::redaction::RedactionEvent::from_record(r) {
            Ok(cmdb_core::redaction::RedactionEvent::Applied(applied)) => Some(applied),
            _ => None,
        });
        match applied {
            Some(applied) => Ok(Some(super::redaction::EventRedaction::of(&applied, at, self.0.position))),
            None => Err(coded(
                Code::Internal,
                format!("the redaction record at position {at} cannot be read; run verifyLog"),
            )),
        }
    }

    async fn metadata(&self) -> EventMetadata<'_> {
        EventMetadata(&self.0)
    }

    /// When the log committed the event (UTC).
    async fn recorded_at(&self) -> DateTime {
        DateTime(self.0.recorded_at)
    }

    async fn prev_hash(&self) -> String {
        self.0.prev_hash.to_hex()
    }

    async fn hash(&self) -> String {
        self.0.hash.to_hex()
    }

    /// The atomic append (commit) it came in: reads at `commit.lastPosition` see the whole
    /// command; `at(position:)` inside it snaps there.
    async fn commit(&self) -> Commit {
        Commit(self.0.commit)
    }
}

/// The positions of one atomic append.
pub struct Commit(cmdb_core::CommitSpan);

#[Object]
impl Commit {
    /// Its first event's position.
    async fn first_position(&self) -> Position {
        Position(self.0.first_position)
    }

    /// Its last event's position.
    async fn last_position(&self) -> Position {
        Position(self.0.last_position())
    }

    /// How many events it wrote.
    async fn events(&self) -> u32 {
        self.0.events
    }
}

pub struct EventMetadata<'a>(&'a EventRecord);

#[Object]
impl EventMetadata<'_> {
    /// The principal that caused the event.
    async fn principal(&self) -> &str {
        &self.0.principal
    }

    /// The token the principal used, if any.
    async fn token_id(&self) -> Option<&str> {
        self.0.token_id.as_deref()
    }

    async fn correlation_id(&self) -> Option<&str> {
        self.0.correlation_id.as_deref()
    }

    async fn causation_id(&self) -> Option<&str> {
        self.0.causation_id.as_deref()
    }

    /// Where the event entered: api, cli, webhook, fixture, import, migration or system.
    async fn source(&self) -> &str {
        self.0.source.as_str()
    }

    /// When an external tool says it happened, if it said.
    async fn occurred_at(&self) -> Option<DateTime> {
        self.0.occurred_at.map(DateTime)
    }
}

#[derive(SimpleObject)]
pub struct EventEdge {
    pub cursor: String,
    pub node: Event,
}

/// The events' page info (`endCursor`: when a filtered scan stopped at its bound,
/// `max_scan_events`, this is where it stopped, even if the page is empty).
pub use super::paging::PageInfo;

/// A Relay-style page of events.
#[derive(SimpleObject)]
pub struct EventConnection {
    pub edges: super::lists::Seq<EventEdge>,
    pub page_info: PageInfo,
}

/// The head of the log.
pub struct LogHead(pub cmdb_core::Digest);

#[Object]
impl LogHead {
    /// The last committed position (0 for an empty log).
    async fn position(&self) -> Position {
        Position(self.0.position)
    }

    /// Its hash (64 zeros for an empty log).
    async fn hash(&self) -> String {
        self.0.hash.to_hex()
    }

    /// When the last event was committed (null for an empty log).
    async fn recorded_at(&self, ctx: &async_graphql::Context<'_>) -> async_graphql::Result<Option<DateTime>> {
        if self.0.position == 0 {
            return Ok(None);
        }
        let app = ctx.data_unchecked::<std::sync::Arc<crate::server::AppState>>();
        let record = app.store.event_at(self.0.position).await.map_err(super::super::errors::store_error)?;
        Ok(record.map(|r| DateTime(r.recorded_at)))
    }
}

#[derive(SimpleObject)]
pub struct Digest {
    pub position: Position,
    pub hash: String,
    /// `<position>:<hash>`: write it down; `checkDigest` tells later whether the log still has it.
    pub text: String,
}

impl From<cmdb_core::Digest> for Digest {
    fn from(digest: cmdb_core::Digest) -> Self {
        Digest { position: Position(digest.position), hash: digest.hash.to_hex(), text: digest.to_string() }
    }
}

#[derive(SimpleObject)]
pub struct ChainBreakInfo {
    pub position: Position,
    /// sequence, prev_hash, hash, unreadable or commit (the commit records do not tile the log).
    pub kind: String,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct VerifyResult {
    pub intact: bool,
    pub events_checked: Position,
    pub last_good: Digest,
    pub first_break: Option<ChainBreakInfo>,
}

impl From<VerifyReport> for VerifyResult {
    fn from(report: VerifyReport) -> Self {
        VerifyResult {
            intact: report.is_intact(),
            events_checked: Position(report.events_checked),
            last_good: report.last_good.into(),
            first_break: report.first_break.map(|b| ChainBreakInfo {
                position: Position(b.position()),
                kind: match &b {
                    ChainBreak::Sequence { .. } => "sequence",
                    ChainBreak::PrevHash { .. } => "prev_hash",
                    ChainBreak::Hash { .. } => "hash",
                    ChainBreak::Unreadable { .. } => "unreadable",
                    ChainBreak::Commit { .. } => "commit",
                    ChainBreak::Redaction { .. } => "redaction",
                }
                .to_owned(),
                message: b.to_string(),
            }),
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DigestOutcome {
    /// The log still holds this digest.
    Matches,
    /// The log is shorter than the digest: its tail was removed.
    Truncated,
    /// The event at that position has another hash: the log was rewritten.
    Mismatch,
}

#[derive(SimpleObject)]
pub struct DigestCheckResult {
    pub outcome: DigestOutcome,
    /// The log's head, for a truncated log.
    pub head: Option<Position>,
    /// The hash now stored at that position, for a mismatch.
    pub stored_hash: Option<String>,
}

impl From<DigestCheck> for DigestCheckResult {
    fn from(check: DigestCheck) -> Self {
        match check {
            DigestCheck::Matches => {
                DigestCheckResult { outcome: DigestOutcome::Matches, head: None, stored_hash: None }
            }
            DigestCheck::Truncated { head } => {
                DigestCheckResult { outcome: DigestOutcome::Truncated, head: Some(Position(head)), stored_hash: None }
            }
            DigestCheck::Mismatch { stored } => {
                DigestCheckResult { outcome: DigestOutcome::Mismatch, head: None, stored_hash: Some(stored.to_hex()) }
            }
        }
    }
}

/// The server's limits, so clients can size their requests.
#[derive(SimpleObject)]
pub struct Limits {
    pub max_page_size: usize,
    pub max_scan_events: usize,
    pub max_query_depth: usize,
    pub max_query_complexity: usize,
    pub max_request_body_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_event_bytes: usize,
    pub max_batch_events: usize,
}

/// The outcome of a change: where it landed in the log.
#[derive(SimpleObject)]
pub struct Written {
    /// The log position of the last event written: pass it as `minPosition` to read your write.
    pub position: Position,
}

/// Most event types one `types` filter may name.
pub const MAX_TYPE_FILTERS: usize = 64;

pub(super) use super::paging::page_size;

/// Checks a `types` filter.
pub(super) fn type_filter(types: Option<Vec<String>>) -> async_graphql::Result<Option<Vec<String>>> {
    let Some(types) = types else { return Ok(None) };
    if types.len() > MAX_TYPE_FILTERS {
        return Err(limit_exceeded("max_type_filters", types.len() as u64, MAX_TYPE_FILTERS as u64));
    }
    for t in &types {
        validate_event_type(t).map_err(|e| bad_input(format!("types: {e}")))?;
    }
    Ok(Some(types))
}

pub(super) fn matches(types: &Option<Vec<String>>, record: &EventRecord) -> bool {
    types.as_ref().is_none_or(|types| types.iter().any(|t| *t == record.event_type))
}

/// Events a subscription reads from the log per page (its memory bound).
const SUBSCRIPTION_PAGE_EVENTS: usize = 500;

#[derive(Default)]
pub struct LogSubscription;

#[Subscription]
impl LogSubscription {
    /// Every event after `after` (default: the current head, i.e. only new events), in order,
    /// without gaps, optionally only those of the given `types`. Ends when the server shuts
    /// down.
    #[graphql(guard = "Requires(Operation::SubscribeLog)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
        types: Option<Vec<String>>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let app = state(ctx).clone();
        let slot = ctx
            .data_opt::<SubscriptionSlots>()
            .ok_or_else(|| coded(Code::BadRequest, "subscriptions are served over the WebSocket at /graphql/ws"))?
            .take()?;
        let types = type_filter(types)?;
        let after = match after {
            Some(position) => position.0,
            None => app.store.head().await.map_err(store_error)?.position,
        };
        let shutdown = app.shutdown.clone();
        let events = subscribe(app.store.clone(), after, SUBSCRIPTION_PAGE_EVENTS)
            .take_until(async move { shutdown.cancelled().await })
            .filter_map(move |next| {
                let keep = match &next {
                    Ok(record) => types.as_ref().is_none_or(|t| t.iter().any(|t| *t == record.event_type)),
                    Err(_) => true,
                };
                futures::future::ready(keep.then(|| next.map(Event).map_err(store_error)))
            })
            // The slot is held for as long as the stream lives.
            .map(move |item| {
                let _held = &slot;
                item
            });
        Ok(events)
    }
}

/// `events(last:, before:)`: the `last` matching events before position `before` (default:
/// past the head), read newest first in pages and answered oldest first. Scans at most
/// `max_scan_events`; when it stops there, `startCursor` is where to resume backward.
pub(super) async fn events_backward(
    app: &crate::server::AppState,
    before: Option<u64>,
    last: usize,
    stream: Option<&cmdb_core::StreamId>,
    types: &Option<Vec<String>>,
) -> async_graphql::Result<EventConnection> {
    let store = &app.store;
    let head = store.head().await.map_err(store_error)?.position;
    let before = before.unwrap_or(head + 1).min(head + 1);
    let read_page = store.limits().max_page_events.min(last.saturating_add(1).max(1000)).max(1);
    let mut found: Vec<EventRecord> = Vec::with_capacity(last + 1);
    // Everything below `scanned_from` (and at or above it, up to `before`) has been looked at.
    let mut scanned_from = before;
    let mut scanned = 0usize;
    let mut stream_version: Option<u64> = None;
    let mut exhausted = false;
    'pages: while found.len() <= last && scanned < app.settings.max_scan_events {
        let page = match stream {
            None => {
                let low = scanned_from.saturating_sub(1).saturating_sub(read_page as u64);
                let count = (scanned_from.saturating_sub(1) - low) as usize;
                if count == 0 {
                    exhausted = true;
                    break;
                }
                let mut page = store.read_all(low, count).await.map_err(store_error)?;
                page.reverse();
                page
            }
            Some(stream) => {
                if stream_version == Some(0) {
                    exhausted = true;
                    break;
                }
                let from = stream_version.map(|v| v - 1);
                store
                    .read_stream(stream, cmdb_core::store::Direction::Backward, from, read_page)
                    .await
                    .map_err(store_error)?
            }
        };
        let Some(oldest) = page.last() else {
            exhausted = true;
            break;
        };
        stream_version = Some(oldest.stream_version);
        for record in page {
            scanned += 1;
            if record.position >= before {
                if scanned >= app.settings.max_scan_events {
                    break 'pages;
                }
                continue;
            }
            scanned_from = record.position;
            if matches(types, &record) {
                found.push(record);
                if found.len() > last {
                    break 'pages;
                }
            }
            if scanned >= app.settings.max_scan_events {
                break 'pages;
            }
        }
        if stream.is_none() && scanned_from <= 1 {
            exhausted = true;
        }
    }
    let has_more_matches = found.len() > last;
    found.truncate(last);
    found.reverse();
    let has_previous_page = has_more_matches || !exhausted;
    let start = if has_more_matches { found.first().map(|r| r.position) } else { Some(scanned_from) };
    let edges: Vec<EventEdge> =
        found.into_iter().map(|r| EventEdge { cursor: r.position.to_string(), node: Event(r) }).collect();
    let page_info = PageInfo {
        has_next_page: before <= head,
        has_previous_page,
        start_cursor: start
            .filter(|p| *p > 0 && has_previous_page)
            .map(|p| p.to_string())
            .or_else(|| edges.first().map(|e| e.cursor.clone())),
        end_cursor: edges.last().map(|e| e.cursor.clone()),
    };
    Ok(EventConnection { edges: super::lists::Seq(edges), page_info })
}
