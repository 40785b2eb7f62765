//! An in-memory backend: the same contract as the embedded store (it passes the same
//! conformance suite) without durability. For tests, for generating fixtures fast, and for
//! tools that build a log before writing it somewhere durable. Bounded by
//! `max_events`: past it, appends fail with `StorageFull`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::chain::{ChainFields, Digest, Hash, event_hash};
use crate::event::{EventRecord, FoldRecord, StreamId};
use crate::ids::{IdGenerator, UuidV7Ids};
use crate::store::{
    AppendOutcome, AppendRequest, Capabilities, Direction, Erasure, EventStore, StoreError, StoreLimits,
    StreamAppended, check_bulk_load, check_expectations, check_redaction, erased, validate_request,
};
use crate::time::{Clock, SystemClock, Timestamp};

/// Settings of the in-memory store.
#[derive(Clone)]
pub struct MemoryOptions {
    /// The limits to enforce.
    pub limits: StoreLimits,
    /// The clock commits are stamped with.
    pub clock: Arc<dyn Clock>,
    /// Where event ids come from.
    pub ids: Arc<dyn IdGenerator>,
    /// Most events held.
    pub max_events: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            limits: StoreLimits::DEFAULT,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            max_events: 50_000_000,
        }
    }
}

#[derive(Default)]
struct Log {
    events: Vec<EventRecord>,
    /// Indexes into `events`, in stream-version order.
    streams: HashMap<StreamId, Vec<usize>>,
    ids: HashSet<Uuid>,
    live: bool,
}

impl Log {
    fn tail(&self) -> (u64, Hash, Timestamp) {
        self.events
            .last()
            .map_or((0, Hash::GENESIS, Timestamp::from_micros(i64::MIN)), |e| (e.position, e.hash, e.recorded_at))
    }

    fn version_of(&self, stream: &StreamId) -> Option<u64> {
        self.streams.get(stream).and_then(|indexes| indexes.last()).map(|i| self.events[*i].stream_version)
    }
}

struct Inner {
    log: Mutex<Log>,
    head: watch::Sender<u64>,
    options: MemoryOptions,
}

/// The in-memory event store. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl MemoryStore {
    /// A new one.
    pub fn new(options: MemoryOptions) -> Self {
        let (head, _) = watch::channel(0);
        MemoryStore { inner: Arc::new(Inner { log: Mutex::new(Log::default()), head, options }) }
    }

    fn log(&self) -> Result<MutexGuard<'_, Log>, StoreError> {
        self.inner.log.lock().map_err(|_| StoreError::Storage("the in-memory log's lock is poisoned".into()))
    }

    /// Appends with the log's lock held.
    fn append_locked(&self, log: &mut Log, request: &AppendRequest) -> Result<AppendOutcome, StoreError> {
        let options = &self.inner.options;
        let current = check_expectations(request, |stream| Ok(log.version_of(stream)))?;
        let (mut position, mut prev_hash, tail_time) = log.tail();
        let bulk = check_bulk_load(request, log.live, tail_time)?;
        if log.events.len() + request.event_count() > options.max_events {
            return Err(StoreError::StorageFull(format!(
                "the in-memory log holds at most {} events",
                options.max_events
            )));
        }
        let mut seen = HashSet::new();
        let event_ids: Vec<Uuid> = request
            .writes
            .iter()
            .flat_map(|w| w.events.iter())
            .map(|e| e.event_id.unwrap_or_else(|| options.ids.next_id()))
            .collect();
        if let Some(duplicate) = event_ids.iter().find(|id| log.ids.contains(id) || !seen.insert(**id)) {
            return Err(StoreError::DuplicateEventId(*duplicate));
        }
        let stamp = options.clock.now().max(tail_time);
        let first_position = position + 1;
        let mut streams = Vec::with_capacity(request.writes.len());
        let mut ids = event_ids.iter();
        let mut index = 0;
        for (write, actual) in request.writes.iter().zip(current) {
            let first_version = actual.map_or(0, |v| v + 1);
            let mut version = first_version;
            for event in &write.events {
                position += 1;
                let event_id = *ids.next().ok_or_else(|| StoreError::Storage("event id count mismatch".into()))?;
                let metadata = event.metadata.clone();
                let mut record = EventRecord {
                    fold: FoldRecord {
                        position,
                        stream_id: write.stream.clone(),
                        stream_version: version,
                        event_type: event.event_type.as_str().into(),
                        data: event.data.clone(),
                        principal: metadata.actor.principal,
                        correlation_id: metadata.correlation_id,
                        recorded_at: event.recorded_at.unwrap_or(stamp),
                        hash: Hash::GENESIS,
                        commit: request.commit_of(index, first_position),
                    },
                    token_id: metadata.actor.token_id,
                    causation_id: metadata.causation_id,
                    source: metadata.source,
                    occurred_at: metadata.occurred_at,
                    event_id,
                    schema_version: event.schema_version,
                    prev_hash,
                    seal: request.seal_of(index),
                };
                index += 1;
                record.hash = event_hash(&prev_hash, &ChainFields::of(&record));
                prev_hash = record.hash;
                let index = log.events.len();
                log.events.push(record);
                log.streams.entry(write.stream.clone()).or_default().push(index);
                log.ids.insert(event_id);
                version += 1;
            }
            streams.push(StreamAppended { stream: write.stream.clone(), first_version, last_version: version - 1 });
        }
        if !bulk {
            log.live = true;
        }
        let recorded_at = log.events.last().map_or(stamp, |e| e.recorded_at);
        Ok(AppendOutcome { first_position, last_position: position, streams, recorded_at, event_ids })
    }

    /// Runs `edit` on the stored records directly, bypassing every rule: for tamper tests.
    #[doc(hidden)]
    pub fn tamper(&self, edit: impl FnOnce(&mut Vec<EventRecord>)) {
        if let Ok(mut log) = self.inner.log.lock() {
            edit(&mut log.events);
            let mut streams: HashMap<StreamId, Vec<usize>> = HashMap::new();
            for (index, event) in log.events.iter().enumerate() {
                streams.entry(event.stream_id.clone()).or_default().push(index);
            }
            log.streams = streams;
        }
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    fn limits(&self) -> StoreLimits {
        self.inner.options.limits
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let options = &self.inner.options;
        validate_request(&request, &options.limits, options.clock.now())?;
        let outcome = {
            let mut log = self.log()?;
            self.append_locked(&mut log, &request)?
        };
        self.inner.head.send_replace(outcome.last_position);
        Ok(outcome)
    }

    async fn redact(&self, erasures: Vec<Erasure>, record: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let options = &self.inner.options;
        validate_request(&record, &options.limits, options.clock.now())?;
        let outcome = {
            let mut log = self.log()?;
            let (head, _, _) = log.tail();
            check_redaction(&erasures, &record, head)?;
            let record_position = head + 1;
            let replaced = erasures
                .iter()
                .map(|erasure| erased(&log.events[(erasure.position - 1) as usize], erasure, record_position))
                .collect::<Result<Vec<_>, StoreError>>()?;
            let outcome = self.append_locked(&mut log, &record)?;
            debug_assert_eq!(outcome.first_position, record_position);
            for record in replaced {
                let index = (record.position - 1) as usize;
                log.events[index] = record;
            }
            outcome
        };
        self.inner.head.send_replace(outcome.last_position);
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        crate::store::validate::check_page(&self.inner.options.limits, max_count)?;
        let log = self.log()?;
        let Some(indexes) = log.streams.get(stream) else { return Ok(Vec::new()) };
        let records = indexes.iter().map(|i| &log.events[*i]);
        Ok(match direction {
            Direction::Forward => {
                let from = from.unwrap_or(0);
                records.filter(|r| r.stream_version >= from).take(max_count).cloned().collect()
            }
            Direction::Backward => {
                let from = from.unwrap_or(u64::MAX);
                records.rev().filter(|r| r.stream_version <= from).take(max_count).cloned().collect()
            }
        })
    }

    async fn read_all(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        crate::store::validate::check_page(&self.inner.options.limits, max_count)?;
        let log = self.log()?;
        let start = log.events.partition_point(|e| e.position <= after);
        Ok(log.events[start..].iter().take(max_count).cloned().collect())
    }

    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError> {
        let log = self.log()?;
        let index = log.events.partition_point(|e| e.position < position);
        Ok(log.events.get(index).filter(|e| e.position == position).cloned())
    }

    async fn head(&self) -> Result<Digest, StoreError> {
        let (position, hash, _) = self.log()?.tail();
        Ok(Digest { position, hash })
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        Ok(self.log()?.version_of(stream))
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError> {
        let log = self.log()?;
        let count = log.events.partition_point(|e| e.recorded_at <= at);
        Ok(if count == 0 { 0 } else { log.events[count - 1].position })
    }
}

/// Tampering with an in-memory log, for the conformance suite.
#[doc(hidden)]
pub struct MemoryTamper(pub MemoryStore);

impl super::tamper::Tamper for MemoryTamper {
    fn flip_data_byte(&self, position: u64) {
        self.0.tamper(|events| {
            let event = &mut events[position as usize - 1];
            let middle = event.data.len() / 2;
            event.data[middle] ^= 1;
        });
    }

    fn set_stream_id(&self, position: u64, stream_id: &str) {
        self.0.tamper(|events| events[position as usize - 1].stream_id = StreamId::new(stream_id).expect("valid"));
    }

    fn set_principal(&self, position: u64, principal: &str) {
        self.0.tamper(|events| events[position as usize - 1].principal = principal.into());
    }

    fn shift_recorded_at(&self, position: u64) {
        self.0.tamper(|events| {
            let event = &mut events[position as usize - 1];
            event.recorded_at = event.recorded_at.saturating_add_micros(1);
        });
    }

    fn delete(&self, position: u64) {
        self.0.tamper(|events| {
            events.remove(position as usize - 1);
        });
    }

    fn swap(&self, a: u64, b: u64) {
        self.0.tamper(|events| {
            let (a, b) = (a as usize - 1, b as usize - 1);
            events.swap(a, b);
            let (pa, pb) = (events[a].position, events[b].position);
            events[a].position = pb;
            events[b].position = pa;
        });
    }

    fn insert_copy_before(&self, position: u64) {
        self.0.tamper(|events| {
            let index = position as usize - 1;
            let mut copy = events[index].clone();
            copy.event_id = Uuid::now_v7();
            copy.stream_version += 1_000_000;
            for event in &mut events[index..] {
                event.position += 1;
            }
            events.insert(index, copy);
        });
    }

    fn truncate_after(&self, position: u64) {
        self.0.tamper(|events| events.truncate(position as usize));
    }

    fn rewrite_chain_from(&self, position: u64, new_data: &[u8]) {
        self.0.tamper(|events| {
            let index = position as usize - 1;
            events[index].data = new_data.to_vec();
            let mut prev = events[index].prev_hash;
            for event in &mut events[index..] {
                event.prev_hash = prev;
                event.hash = event_hash(&prev, &ChainFields::of(event));
                prev = event.hash;
            }
        });
    }
}
