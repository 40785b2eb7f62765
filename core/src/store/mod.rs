//! The `EventStore` trait: an append-only, gapless, hash-chained log of events grouped in
//! streams, with atomic multi-stream appends, optimistic concurrency, conditions on streams
//! that are not written, paged reads, and subscriptions that catch up and then go live.
//!
//! Backends: [`sqlite::SqliteStore`] (embedded, the default) and [`postgres::PostgresStore`]
//! (one log shared by many processes). Every backend runs the suite in
//! the conformance suite (`conformance` at the crate root), as far as its [`Capabilities`] go.

mod head;
pub mod location;
pub mod memory;
pub mod postgres;
pub mod read_only;
pub mod recent;
pub mod sqlite;
mod subscription;
pub mod tamper;
mod validate;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::chain::{
    ChainBreak, ChainFields, ChainVerifier, Digest, DigestCheck, VerifyReport, event_hash, payload_commitment,
};
use crate::event::{ChainLink, CommitSpan, EventRecord, FoldRecord, NewEvent, PayloadSeal, StreamId};
use crate::time::Timestamp;

pub use subscription::subscribe;
pub use validate::{check_bulk_load, check_expectations, validate_request};

/// What the writer of a stream expects to find before its events are added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "version", rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` (`None`: no such stream) satisfies this.
    pub fn admits(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(version) => actual == Some(version),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// The state of a stream as found: its last version, or absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StreamState(pub Option<u64>);

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("no stream"),
            Some(version) => write!(f, "version {version}"),
        }
    }
}

/// Events to add to one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamWrite {
    /// The stream.
    pub stream: StreamId,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// The events.
    pub events: Vec<NewEvent>,
}

/// A stream that is not written but must still be as the decision saw it (for example: the
/// change authorising a CI edit has not been revoked meanwhile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The stream.
    pub stream: StreamId,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
}

/// One atomic append: all of it lands, or none of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendRequest {
    /// Writes, one per stream.
    pub writes: Vec<StreamWrite>,
    /// Streams that must be at a version without being written.
    pub conditions: Vec<Condition>,
    /// A verbatim copy of events from another log (`cmdb migrate`): every event supplies its
    /// id and `recorded_at` whatever its source; allowed where a bulk load is.
    pub copy: bool,
    /// Each event's commit, in write order, when the caller knows them better than "this
    /// request": a copy (the source's commits; its chunks do not follow the source's appends)
    /// or a bulk load (the commands it holds). Empty: the request is one commit.
    pub commits: Vec<CommitSpan>,
    /// Each event's seal, in write order, for a copy only (the source's salts and redactions,
    /// so every hash is kept). Empty: every event gets a fresh random salt (chain version 2).
    pub seals: Vec<PayloadSeal>,
}

impl AppendRequest {
    /// A new one.
    pub fn new() -> Self {
        AppendRequest::default()
    }

    /// The commit of the `index`-th event (in write order) of this request appended at
    /// `first_position`: the whole request, or for a copy the source's commit.
    pub fn commit_of(&self, index: usize, first_position: u64) -> CommitSpan {
        match self.commits.get(index) {
            Some(span) => *span,
            None => CommitSpan { first_position, events: u32::try_from(self.event_count()).unwrap_or(u32::MAX) },
        }
    }

    /// The seal of the `index`-th event (in write order): the copied one, or a fresh salt.
    pub fn seal_of(&self, index: usize) -> PayloadSeal {
        match self.seals.get(index) {
            Some(seal) => *seal,
            None => PayloadSeal::Salted(rand::random()),
        }
    }

    /// A request writing `events` to one stream.
    pub fn single(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        AppendRequest {
            writes: vec![StreamWrite { stream, expected, events }],
            conditions: Vec::new(),
            copy: false,
            commits: Vec::new(),
            seals: Vec::new(),
        }
    }

    /// A verbatim copy of `records` (consecutive events of another log, in position order):
    /// one write per run of events on the same stream, each expecting the stream at the
    /// version before the run, so the copy keeps every stream version and, appended at the
    /// same positions, every hash.
    pub fn copy_of(records: &[EventRecord]) -> Self {
        let mut request = AppendRequest { copy: true, ..AppendRequest::default() };
        for record in records {
            request.commits.push(record.commit);
            request.seals.push(record.seal);
            let event = NewEvent {
                event_id: Some(record.event_id),
                event_type: record.event_type.to_string(),
                schema_version: record.schema_version,
                data: record.data.clone(),
                metadata: record.metadata(),
                recorded_at: Some(record.recorded_at),
            };
            match request.writes.last_mut() {
                Some(last) if last.stream == record.stream_id => last.events.push(event),
                _ => {
                    let expected = match record.stream_version {
                        0 => ExpectedVersion::NoStream,
                        version => ExpectedVersion::Exact(version - 1),
                    };
                    request.writes.push(StreamWrite {
                        stream: record.stream_id.clone(),
                        expected,
                        events: vec![event],
                    });
                }
            }
        }
        request
    }

    /// Adds a write to a stream.
    pub fn write(mut self, stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        self.writes.push(StreamWrite { stream, expected, events });
        self
    }

    /// Adds a condition on a stream it does not write.
    pub fn condition(mut self, stream: StreamId, expected: ExpectedVersion) -> Self {
        self.conditions.push(Condition { stream, expected });
        self
    }

    /// How many events it appends.
    pub fn event_count(&self) -> usize {
        self.writes.iter().map(|w| w.events.len()).sum()
    }
}

/// Splits consecutive events of another log into slices that [`AppendRequest::copy_of`] turns
/// into appends a store with `limits` accepts: bounded in events, bytes and streams, and
/// never naming a stream in two separate runs (an append writes each stream once).
pub fn copy_chunks<'a>(records: &'a [EventRecord], limits: &StoreLimits) -> Vec<&'a [EventRecord]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    let mut streams: std::collections::HashSet<&StreamId> = std::collections::HashSet::new();
    for (index, record) in records.iter().enumerate() {
        let new_run = index == start || records[index - 1].stream_id != record.stream_id;
        let cut = index > start
            && (index - start >= limits.max_batch_events
                || bytes + record.data.len() > limits.max_batch_bytes
                || (new_run
                    && (streams.contains(&record.stream_id) || streams.len() >= limits.max_streams_per_append)));
        if cut {
            chunks.push(&records[start..index]);
            start = index;
            bytes = 0;
            streams.clear();
        }
        bytes += record.data.len();
        streams.insert(&record.stream_id);
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    debug_assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), records.len());
    chunks
}

/// Where one stream's new events landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamAppended {
    /// The stream.
    pub stream: StreamId,
    /// The stream version of the first event written.
    pub first_version: u64,
    /// The stream version of the last event written.
    pub last_version: u64,
}

/// The answer to a durable append: the positions assigned, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AppendOutcome {
    /// The first event's position.
    pub first_position: u64,
    /// The last event's position.
    pub last_position: u64,
    /// Where each stream's events landed.
    pub streams: Vec<StreamAppended>,
    /// The commit time stamped on the events (or the last supplied time of a bulk load).
    pub recorded_at: Timestamp,
    /// The events' ids, in order.
    pub event_ids: Vec<Uuid>,
}

impl AppendOutcome {
    /// The positions assigned.
    pub fn positions(&self) -> std::ops::RangeInclusive<u64> {
        self.first_position..=self.last_position
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Which way a read goes.
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// What a backend can promise. The conformance suite skips exactly the checks a backend
/// cannot pass, and names each skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Positions have no gaps.
    pub gapless_positions: bool,
    /// An append to several streams is atomic.
    pub multi_stream_atomic_append: bool,
    /// Streams that must be at a version without being written.
    pub conditions: bool,
    /// Events carry the hash chain.
    pub hash_chain: bool,
}

impl Capabilities {
    /// Every value, in declaration order.
    pub const ALL: Capabilities =
        Capabilities { gapless_positions: true, multi_stream_atomic_append: true, conditions: true, hash_chain: true };
}

/// Limits the store enforces, each with its unit in its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StoreLimits {
    /// Largest event payload (data bytes).
    pub max_event_bytes: usize,
    /// Most events in one append.
    pub max_batch_events: usize,
    /// Largest sum of payload bytes in one append.
    pub max_batch_bytes: usize,
    /// Most streams written plus conditions in one append.
    pub max_streams_per_append: usize,
    /// Most events one read returns.
    pub max_page_events: usize,
}

impl StoreLimits {
    /// The default limits.
    pub const DEFAULT: StoreLimits = StoreLimits {
        max_event_bytes: 1024 * 1024,
        max_batch_events: 10_000,
        max_batch_bytes: 32 * 1024 * 1024,
        max_streams_per_append: 256,
        max_page_events: 10_000,
    };
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits::DEFAULT
    }
}

/// A named limit, as reported in [`StoreError::LimitExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// `max_event_bytes`.
    MaxEventBytes,
    /// `max_batch_events`.
    MaxBatchEvents,
    /// `max_batch_bytes`.
    MaxBatchBytes,
    /// `max_streams_per_append`.
    MaxStreamsPerAppend,
    /// `max_page_events`.
    MaxPageEvents,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::MaxEventBytes => "max_event_bytes",
            Limit::MaxBatchEvents => "max_batch_events",
            Limit::MaxBatchBytes => "max_batch_bytes",
            Limit::MaxStreamsPerAppend => "max_streams_per_append",
            Limit::MaxPageEvents => "max_page_events",
        })
    }
}

/// Every way a store operation fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum StoreError {
    #[error("version conflict on {role} stream {stream}: expected {expected}, found {actual}")]
    /// Version conflict on … stream …: expected …, found ….
    VersionConflict { stream: StreamId, expected: ExpectedVersion, actual: StreamState, role: StreamRole },
    #[error("limit exceeded: {limit} is {bound}, got {value}")]
    /// Limit exceeded: … is …, got ….
    LimitExceeded { limit: Limit, value: u64, bound: u64 },
    #[error("invalid append: {0}")]
    /// Invalid append: ….
    InvalidInput(String),
    #[error("event id {0} is already in the log")]
    /// Event id … is already in the log.
    DuplicateEventId(Uuid),
    #[error("storage is full: {0}; nothing from this append was written")]
    /// Storage is full: …; nothing from this append was written.
    StorageFull(String),
    #[error("the log's database is unavailable: {0}; nothing from this append was written; retry")]
    /// The log's database is unavailable: … (a shared backend's server is down or unreachable).
    Unavailable(String),
    #[error("storage failure: {0}")]
    /// Storage failure: ….
    Storage(String),
    #[error(
        "the writer stopped after a failed commit and refuses appends until the process restarts and re-reads the log: {0}"
    )]
    WriterStopped(String),
    #[error(
        "the outcome of the commit is unknown: {0}; the events may or may not be in the log: read the stream (or look the event ids up) before deciding again"
    )]
    /// The outcome of the commit is unknown: ….
    CommitOutcomeUnknown(String),
    #[error("this server is a read-only follower: {0}")]
    /// This server is a read-only follower: … (where writes go).
    ReadOnly(String),
    #[error("corruption detected at {location}: {detail}")]
    /// Corruption detected at …: ….
    Corruption { location: String, detail: String },
    #[error("cannot open the event log at {path}: {reason}")]
    /// Cannot open the event log at …: ….
    Open { path: String, reason: String },
    #[error("the store is shut down")]
    /// The store is shut down.
    Closed,
}

impl StoreError {
    /// Conflicts and full storage may succeed later; the others will not without a change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::VersionConflict { .. } | StoreError::Storage(_) | StoreError::Unavailable(_))
    }
}

/// Whether a conflicting stream was one being written or only a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamRole {
    /// The stream is written.
    Written,
    /// The stream is a condition.
    Condition,
}

impl fmt::Display for StreamRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamRole::Written => "written",
            StreamRole::Condition => "condition",
        })
    }
}

/// One payload erasure of a redaction: the event and its payload after the erasure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Erasure {
    /// The event's position.
    pub position: u64,
    /// The payload with the erased values replaced (valid JSON).
    pub data: Vec<u8>,
}

/// The stored event after `erasure`, redacted by the record at `record_position`: the new
/// payload, the salt dropped, the commitment kept. Refused when it would not hash to the
/// stored hash (so no erasure can break the chain) or when the payload is not JSON.
pub fn erased(stored: &EventRecord, erasure: &Erasure, record_position: u64) -> Result<EventRecord, StoreError> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(&erasure.data).is_err() {
        return Err(StoreError::InvalidInput(format!(
            "the erased payload of position {} is not JSON",
            stored.position
        )));
    }
    let commitment = payload_commitment(&stored.seal, &stored.data);
    let mut record = stored.clone();
    record.data = erasure.data.clone();
    record.seal = PayloadSeal::Redacted { encoding: stored.seal.encoding(), commitment, record: record_position };
    if event_hash(&record.prev_hash, &ChainFields::of(&record)) != stored.hash {
        return Err(StoreError::InvalidInput(format!(
            "erasing position {} would change its hash (the stored event does not verify); nothing was erased",
            stored.position
        )));
    }
    Ok(record)
}

/// Checks a redaction's shape before any backend touches its log: one record event, at least
/// one erasure, distinct positions within the log's head.
pub fn check_redaction(erasures: &[Erasure], record: &AppendRequest, head: u64) -> Result<(), StoreError> {
    if record.event_count() != 1 || record.copy {
        return Err(StoreError::InvalidInput("a redaction appends exactly one record event".into()));
    }
    if erasures.is_empty() {
        return Err(StoreError::InvalidInput("a redaction erases at least one event".into()));
    }
    let mut positions: Vec<u64> = erasures.iter().map(|e| e.position).collect();
    positions.sort_unstable();
    if positions.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(StoreError::InvalidInput("a redaction names an event twice".into()));
    }
    match positions.iter().find(|p| **p == 0 || **p > head) {
        Some(position) => Err(StoreError::InvalidInput(format!("position {position} is not in the log (head {head})"))),
        None => Ok(()),
    }
}

/// The event log. Object-safe: backends are chosen at run time as `Arc<dyn EventStore>`.
///
/// Positions are `u64`; "after p" with `p = 0` means from the start, everywhere.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// What it can promise.
    fn capabilities(&self) -> Capabilities;

    /// Its limits.
    fn limits(&self) -> StoreLimits;

    /// Appends atomically. Answers only once the events are durable.
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Reads one stream. `from` is an inclusive stream version; `None` is the start (forward)
    /// or the end (backward). At most `max_count` events (bounded by `max_page_events`).
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Reads the global log: events with position > `after`, in order, at most `max_count`.
    /// Backends may answer the newest events from a copy kept in memory at commit.
    async fn read_all(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError>;

    /// [`read_all`](Self::read_all) from storage itself, never from a copy in memory: what
    /// verification reads, so that a file changed behind this process's back shows.
    async fn read_all_stored(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.read_all(after, max_count).await
    }

    /// [`read_all`](Self::read_all) for folding into a read model: each record's
    /// [`FoldRecord`], without the columns only the chain's checks and exports read (a
    /// projection's catch-up reads the whole log so). Backends may read only those columns; the
    /// default reads whole records.
    async fn read_fold(&self, after: u64, max_count: usize) -> Result<Vec<FoldRecord>, StoreError> {
        Ok(self.read_all(after, max_count).await?.into_iter().map(|record| record.fold).collect())
    }

    /// The hash chain after `after`, as [`read_all`](Self::read_all) pages it: each record's
    /// position, stream, type and hash, without payload or metadata. Backends may read only
    /// those columns; the default reads whole records.
    async fn read_links(&self, after: u64, max_count: usize) -> Result<Vec<ChainLink>, StoreError> {
        Ok(self.read_all(after, max_count).await?.iter().map(ChainLink::from).collect())
    }

    /// The event at `position`, if the log has one.
    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError>;

    /// The last committed position and its hash (`Digest::EMPTY` for an empty log), as this
    /// process knows it: commits by other processes appear after the next poll or
    /// [`refresh_head`](Self::refresh_head). Cheap: backends may answer from memory.
    async fn head(&self) -> Result<Digest, StoreError>;

    /// The committed head position, published after each durable commit. Subscriptions wait on
    /// it; it never goes backwards.
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// Looks for commits made by other processes now (rather than at the next poll), publishes
    /// them, and returns the committed head position.
    async fn refresh_head(&self) -> Result<u64, StoreError> {
        Ok(self.head().await?.position)
    }

    /// The last version of a stream, `None` if it has no events.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError>;

    /// The last position whose `recorded_at` is at or before `at` (0 if none).
    async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError>;

    /// Redacts: appends `record` (one event, the redaction record) and, in the same
    /// transaction, replaces each erased event's payload and seal as [`erased`] computes them
    /// (naming the record's position), so both land or neither. Backends also make the old
    /// bytes unreadable where they can (SQLite: `secure_delete` and a truncating WAL
    /// checkpoint). Events must be in the log, positions distinct.
    async fn redact(&self, erasures: Vec<Erasure>, record: AppendRequest) -> Result<AppendOutcome, StoreError>;

    /// Stops accepting appends, lets the queued ones finish, and ends subscriptions. The
    /// default does nothing (a backend with nothing to flush).
    async fn shutdown(&self) {}

    /// Walks the whole log and recomputes the chain. Reports the first break, if any.
    /// Reads the next page while it hashes the current one.
    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let page = self.limits().max_page_events;
        let mut verifier = ChainVerifier::new();
        let mut checked = 0u64;
        let unreadable = |after: u64, error: StoreError, verifier: &ChainVerifier, checked: u64| match error {
            StoreError::Corruption { detail, .. } => Ok(VerifyReport {
                events_checked: checked,
                last_good: verifier.digest(),
                first_break: Some(ChainBreak::Unreadable { position: after + 1, detail }),
            }),
            other => Err(other),
        };
        let mut current = match self.read_all_stored(0, page).await {
            Ok(records) => records,
            Err(error) => return unreadable(0, error, &verifier, checked),
        };
        loop {
            let Some(last) = current.last() else {
                let first_break = verifier.finish().err();
                return Ok(VerifyReport { events_checked: checked, last_good: verifier.digest(), first_break });
            };
            let next_after = last.position;
            let check_current = async {
                for record in &current {
                    verifier.check(record)?;
                    checked += 1;
                }
                Ok::<(), ChainBreak>(())
            };
            let (next, outcome) = futures::join!(self.read_all_stored(next_after, page), check_current);
            if let Err(first_break) = outcome {
                return Ok(VerifyReport {
                    events_checked: checked,
                    last_good: verifier.digest(),
                    first_break: Some(first_break),
                });
            }
            current = match next {
                Ok(records) => records,
                Err(error) => return unreadable(next_after, error, &verifier, checked),
            };
        }
    }

    /// Checks a digest exported earlier against the log as it is now.
    async fn check_digest(&self, digest: Digest) -> Result<DigestCheck, StoreError> {
        if digest.position == 0 {
            return Ok(if digest.hash == crate::chain::Hash::GENESIS {
                DigestCheck::Matches
            } else {
                DigestCheck::Mismatch { stored: crate::chain::Hash::GENESIS }
            });
        }
        match self.event_at(digest.position).await? {
            // Read the file's own tail: a truncation happened behind this process's back.
            None => Ok(DigestCheck::Truncated { head: self.refresh_head().await? }),
            Some(record) if record.hash == digest.hash => Ok(DigestCheck::Matches),
            Some(record) => Ok(DigestCheck::Mismatch { stored: record.hash }),
        }
    }
}

/// Shared handle to any backend.
pub type DynStore = Arc<dyn EventStore>;

/// A live stream of events after a position: catch-up, then live.
pub type EventStream = BoxStream<'static, Result<EventRecord, StoreError>>;

#[cfg(test)]
mod copy_tests {
    use super::*;
    use crate::event::{Actor, FoldRecord, Metadata, Source};

    fn records(streams: &[&str], bytes: usize) -> Vec<EventRecord> {
        let mut versions = std::collections::HashMap::new();
        streams
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let version = versions.entry(*name).or_insert(0u64);
                let metadata = Metadata::new(Actor::principal("p"), Source::Api);
                let record = EventRecord {
                    fold: FoldRecord {
                        position: index as u64 + 1,
                        stream_id: StreamId::new(*name).expect("stream"),
                        stream_version: *version,
                        event_type: "t.x".into(),
                        data: vec![b'1'; bytes],
                        principal: metadata.actor.principal,
                        correlation_id: metadata.correlation_id,
                        recorded_at: Timestamp::from_micros(index as i64),
                        hash: crate::chain::Hash::GENESIS,
                        commit: crate::event::CommitSpan::single(index as u64 + 1),
                    },
                    token_id: metadata.actor.token_id,
                    causation_id: metadata.causation_id,
                    source: metadata.source,
                    occurred_at: metadata.occurred_at,
                    event_id: Uuid::from_u128(index as u128 + 1),
                    schema_version: 1,
                    prev_hash: crate::chain::Hash::GENESIS,
                    seal: PayloadSeal::Plain,
                };
                *version += 1;
                record
            })
            .collect()
    }

    fn limits(events: usize, bytes: usize, streams: usize) -> StoreLimits {
        StoreLimits {
            max_batch_events: events,
            max_batch_bytes: bytes,
            max_streams_per_append: streams,
            ..StoreLimits::DEFAULT
        }
    }

    #[test]
    fn copies_are_cut_at_every_bound_and_never_name_a_stream_twice() {
        let log = records(&["a", "a", "b", "a", "c", "c", "d"], 10);
        let lengths = |chunks: Vec<&[EventRecord]>| chunks.iter().map(|c| c.len()).collect::<Vec<_>>();
        // Stream a comes back after b: a new append.
        assert_eq!(lengths(copy_chunks(&log, &limits(100, 1_000, 100))), vec![3, 4]);
        // At and past the event bound.
        assert_eq!(lengths(copy_chunks(&log[..2], &limits(2, 1_000, 100))), vec![2]);
        assert_eq!(lengths(copy_chunks(&log[..3], &limits(2, 1_000, 100))), vec![2, 1]);
        // At and past the byte bound.
        assert_eq!(lengths(copy_chunks(&log[..2], &limits(100, 20, 100))), vec![2]);
        assert_eq!(lengths(copy_chunks(&log[..2], &limits(100, 19, 100))), vec![1, 1]);
        // At and past the stream bound.
        let distinct = records(&["a", "b", "c"], 1);
        assert_eq!(lengths(copy_chunks(&distinct, &limits(100, 1_000, 3))), vec![3]);
        assert_eq!(lengths(copy_chunks(&distinct, &limits(100, 1_000, 2))), vec![2, 1]);
        // Every chunk makes a request with one write per stream and exact versions.
        for chunk in copy_chunks(&log, &limits(100, 1_000, 100)) {
            let request = AppendRequest::copy_of(chunk);
            let names: std::collections::HashSet<_> = request.writes.iter().map(|w| &w.stream).collect();
            assert_eq!(names.len(), request.writes.len());
            assert!(request.copy);
        }
        let request = AppendRequest::copy_of(&log[3..]);
        assert_eq!(request.writes[0].expected, ExpectedVersion::Exact(1), "a's third event follows its version 1");
        assert_eq!(request.writes[1].expected, ExpectedVersion::NoStream);
    }
}
