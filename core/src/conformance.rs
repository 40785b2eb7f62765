//! The conformance suite every `EventStore` backend runs, as far as its capabilities go.
//!
//! A backend's test file provides a [`BackendFactory`] that makes a fresh, empty store (and,
//! if it can, a [`Tamper`] hook that edits the stored rows behind the store's back), then
//! expands [`conformance_suite!`](crate::conformance_suite), which makes one `#[tokio::test]`
//! per check. A check the backend cannot pass for lack of a capability prints
//! `SKIPPED <check>: ...` naming it, and does not fail.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::chain::{ChainBreak, DigestCheck, Hash};
use crate::event::{Actor, ChainLink, CommitSpan, EventRecord, FoldRecord, Metadata, NewEvent, Source, StreamId};
use crate::ids::{IdGenerator, SequentialIds};
use crate::store::tamper::Tamper;
use crate::store::{
    AppendRequest, Capabilities, Direction, EventStore, ExpectedVersion, Limit, StoreError, StoreLimits, StreamRole,
    StreamState, subscribe,
};
use crate::time::{Clock, ManualClock, Timestamp};

/// What a fresh store for one check is built with.
#[derive(Clone)]
pub struct FreshOptions {
    /// The clock the store stamps with.
    pub clock: Arc<dyn Clock>,
    /// Where event ids come from.
    pub ids: Arc<dyn IdGenerator>,
    /// The limits to enforce.
    pub limits: StoreLimits,
}

/// A fresh, empty store, and how to tamper with it.
pub struct Backend {
    /// The store.
    pub store: Arc<dyn EventStore>,
    /// Its tamper hook, if it has one.
    pub tamper: Option<Box<dyn Tamper>>,
}

#[async_trait]
/// Makes fresh stores of one backend for the suite.
pub trait BackendFactory: Send + Sync {
    /// A short name for the output (`sqlite`, `postgres`, ...).
    fn name(&self) -> &str;
    /// A new, empty store with these options.
    async fn fresh(&self, options: FreshOptions) -> Backend;
    /// Why this backend cannot run here (its server is not configured), if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// The environment variable naming the PostgreSQL database tests may use.
pub const POSTGRES_URL_ENV: &str = "CMDB_TEST_POSTGRES_URL";

/// The PostgreSQL URL tests run against, or why there is none. Under `CI=true` a missing URL
/// is a failure (a skipped backend must not look green): this panics.
pub fn postgres_test_url() -> Result<String, String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Ok(url),
        _ => {
            let reason = format!("{POSTGRES_URL_ENV} is not set (`.ci/run` starts PostgreSQL and sets it)");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{reason}; CI=true, so the PostgreSQL tests must run");
            }
            Err(reason)
        }
    }
}

/// A schema name no other test uses: `cmdb_test_` and a fresh UUID v7 (hex).
pub fn fresh_schema_name() -> String {
    format!("cmdb_test_{}", uuid::Uuid::now_v7().simple())
}

/// How a check ended, when it did not panic.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check ran and held.
    Passed,
    /// The backend does not claim the capability; why.
    Skipped(String),
}

/// Runs one check and prints its outcome; a failed check panics with its assertion.
pub async fn run<F, Fut>(check_name: &str, factory: &dyn BackendFactory, check: F)
where
    F: FnOnce(TestContext) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    if let Some(reason) = factory.unavailable() {
        println!("SKIPPED conformance {} {check_name}: {reason}", factory.name());
        return;
    }
    let context = TestContext::new(factory).await;
    match check(context).await {
        Outcome::Passed => println!("conformance {} {check_name}: passed", factory.name()),
        Outcome::Skipped(reason) => println!("SKIPPED conformance {} {check_name}: {reason}", factory.name()),
    }
}

/// What a check gets: a fresh backend with a manual clock, and the factory for more.
pub struct TestContext {
    /// The store.
    pub store: Arc<dyn EventStore>,
    /// Its tamper hook, if any.
    pub tamper: Option<Box<dyn Tamper>>,
    /// The clock the store stamps with.
    pub clock: Arc<ManualClock>,
    factory_limits: StoreLimits,
    capabilities: Capabilities,
}

/// 2026-01-01T00:00:00Z.
pub const TEST_EPOCH: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

/// The small limits the limit checks run against.
pub const TEST_LIMITS: StoreLimits = StoreLimits {
    max_event_bytes: 4096,
    max_batch_events: 50,
    max_batch_bytes: 64 * 1024,
    max_streams_per_append: 8,
    max_page_events: 500,
};

impl TestContext {
    async fn new(factory: &dyn BackendFactory) -> Self {
        let clock = Arc::new(ManualClock::new(TEST_EPOCH));
        let ids = Arc::new(SequentialIds::new(clock.clone(), 1));
        let backend = factory.fresh(FreshOptions { clock: clock.clone(), ids, limits: TEST_LIMITS }).await;
        let capabilities = backend.store.capabilities();
        TestContext { store: backend.store, tamper: backend.tamper, clock, factory_limits: TEST_LIMITS, capabilities }
    }

    fn lacks(&self, needed: &[(&str, bool)]) -> Option<Outcome> {
        let missing: Vec<&str> = needed.iter().filter(|(_, has)| !has).map(|(name, _)| *name).collect();
        (!missing.is_empty()).then(|| Outcome::Skipped(format!("backend lacks capability {}", missing.join(", "))))
    }
}

/// The stream holding its events.
pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("test stream ids are valid")
}

/// The metadata of the suite's events.
pub fn metadata() -> Metadata {
    Metadata::new(Actor::principal("conformance"), Source::System).with_correlation_id("conformance-run")
}

/// A small event, numbered `n`.
pub fn event(n: u64) -> NewEvent {
    NewEvent::raw("test.happened", format!("{{\"n\":{n}}}"), metadata())
}

async fn append_one(store: &dyn EventStore, name: &str, expected: ExpectedVersion, n: u64) -> Result<u64, StoreError> {
    let outcome = store.append(AppendRequest::single(stream(name), expected, vec![event(n)])).await?;
    Ok(outcome.first_position)
}

/// Every event of the log, page by page.
pub async fn whole_log(store: &dyn EventStore) -> Vec<EventRecord> {
    let page = store.limits().max_page_events;
    let mut all = Vec::new();
    loop {
        let after = all.last().map_or(0, |r: &EventRecord| r.position);
        let records = store.read_all(after, page).await.expect("read_all");
        if records.is_empty() {
            return all;
        }
        all.extend(records);
    }
}

/// Asserts the log is exactly `before` (nothing lost, nothing added, nothing changed).
async fn assert_unchanged(store: &dyn EventStore, before: &[EventRecord], what: &str) {
    let after = whole_log(store).await;
    assert_eq!(after, before, "{what}: the log changed");
}

// ---------------------------------------------------------------------------------------------
// The checks. Each takes a fresh context.
// ---------------------------------------------------------------------------------------------

/// Check: expected-version rules (any, no stream, exists, exact).
pub async fn expected_version_rules(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    // A new stream: NoStream and Any admit, StreamExists and Exact do not.
    let err = append_one(store, "s", ExpectedVersion::StreamExists, 0).await.expect_err("missing stream");
    assert_eq!(
        err,
        StoreError::VersionConflict {
            stream: stream("s"),
            expected: ExpectedVersion::StreamExists,
            actual: StreamState(None),
            role: StreamRole::Written
        }
    );
    assert!(matches!(
        append_one(store, "s", ExpectedVersion::Exact(0), 0).await,
        Err(StoreError::VersionConflict { .. })
    ));
    append_one(store, "s", ExpectedVersion::NoStream, 0).await.expect("NoStream on a new stream");
    let err = append_one(store, "s", ExpectedVersion::NoStream, 1).await.expect_err("stream exists");
    assert_eq!(
        err,
        StoreError::VersionConflict {
            stream: stream("s"),
            expected: ExpectedVersion::NoStream,
            actual: StreamState(Some(0)),
            role: StreamRole::Written
        }
    );
    append_one(store, "s", ExpectedVersion::Exact(0), 1).await.expect("exact 0");
    append_one(store, "s", ExpectedVersion::StreamExists, 2).await.expect("exists");
    let err = append_one(store, "s", ExpectedVersion::Exact(1), 3).await.expect_err("stale");
    assert!(err.to_string().contains("expected version 1, found version 2"), "{err}");
    append_one(store, "s", ExpectedVersion::Any, 3).await.expect("any");
    append_one(store, "other", ExpectedVersion::Any, 4).await.expect("any on a new stream");
    assert_eq!(store.stream_version(&stream("s")).await.expect("version"), Some(3));
    assert_eq!(store.stream_version(&stream("nobody")).await.expect("version"), None);
    let versions: Vec<u64> = store
        .read_stream(&stream("s"), Direction::Forward, None, 100)
        .await
        .expect("read")
        .iter()
        .map(|r| r.stream_version)
        .collect();
    assert_eq!(versions, vec![0, 1, 2, 3]);
    Outcome::Passed
}

/// Check: positions start at 1 and have no gaps.
pub async fn positions_are_gapless_from_one(cx: TestContext) -> Outcome {
    if let Some(skip) = cx.lacks(&[("gapless_positions", cx.capabilities.gapless_positions)]) {
        return skip;
    }
    let store = cx.store.as_ref();
    assert_eq!(store.head().await.expect("head").position, 0);
    let first =
        store.append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(1)])).await.expect("append");
    assert_eq!(first.positions(), 1..=1);
    let second = store
        .append(AppendRequest::single(stream("a"), ExpectedVersion::Exact(0), vec![event(2), event(3), event(4)]))
        .await
        .expect("append");
    assert_eq!(second.positions(), 2..=4);
    assert_eq!(second.streams[0].first_version, 1);
    assert_eq!(second.streams[0].last_version, 3);
    assert_eq!(second.event_ids.len(), 3);
    let _ = append_one(store, "a", ExpectedVersion::Exact(0), 5).await.expect_err("a failed append takes no position");
    let third = append_one(store, "b", ExpectedVersion::Any, 6).await.expect("append");
    assert_eq!(third, 5);
    let positions: Vec<u64> = whole_log(store).await.iter().map(|r| r.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.head().await.expect("head").position, 5);
    Outcome::Passed
}

/// Check: an append to several streams lands whole or not at all.
pub async fn atomic_multi_stream_append(cx: TestContext) -> Outcome {
    if let Some(skip) = cx.lacks(&[("multi_stream_atomic_append", cx.capabilities.multi_stream_atomic_append)]) {
        return skip;
    }
    let store = cx.store.as_ref();
    append_one(store, "b", ExpectedVersion::Any, 0).await.expect("seed b");
    let outcome = store
        .append(AppendRequest::new().write(stream("a"), ExpectedVersion::NoStream, vec![event(1), event(2)]).write(
            stream("b"),
            ExpectedVersion::Exact(0),
            vec![event(3)],
        ))
        .await
        .expect("atomic append");
    assert_eq!(outcome.positions(), 2..=4);
    assert_eq!(outcome.streams.len(), 2);
    let before = whole_log(store).await;
    // The second stream's expectation fails: nothing of the first may land.
    let err = store
        .append(
            AppendRequest::new()
                .write(stream("a"), ExpectedVersion::Exact(1), vec![event(4)])
                .write(stream("c"), ExpectedVersion::NoStream, vec![event(5)])
                .write(stream("b"), ExpectedVersion::Exact(7), vec![event(6)]),
        )
        .await
        .expect_err("conflict on b");
    assert!(matches!(err, StoreError::VersionConflict { ref stream, .. } if stream.as_str() == "b"), "{err}");
    assert_unchanged(store, &before, "a failed multi-stream append").await;
    assert_eq!(store.stream_version(&stream("c")).await.expect("version"), None);
    Outcome::Passed
}

/// Check: conditions refuse an append when a stream it does not write moved.
pub async fn conditions_guard_streams_not_written(cx: TestContext) -> Outcome {
    if let Some(skip) = cx.lacks(&[("conditions", cx.capabilities.conditions)]) {
        return skip;
    }
    let store = cx.store.as_ref();
    append_one(store, "change-1", ExpectedVersion::NoStream, 0).await.expect("seed change");
    append_one(store, "change-1", ExpectedVersion::Exact(0), 1).await.expect("seed change");
    let outcome = store
        .append(
            AppendRequest::single(stream("ci-1"), ExpectedVersion::NoStream, vec![event(2)])
                .condition(stream("change-1"), ExpectedVersion::Exact(1)),
        )
        .await
        .expect("condition holds");
    assert_eq!(outcome.streams.len(), 1, "a condition stream is not written");
    assert_eq!(store.stream_version(&stream("change-1")).await.expect("version"), Some(1));

    append_one(store, "change-1", ExpectedVersion::Exact(1), 3).await.expect("the change moves on (revoked)");
    let before = whole_log(store).await;
    let err = store
        .append(
            AppendRequest::single(stream("ci-1"), ExpectedVersion::Exact(0), vec![event(4)])
                .condition(stream("change-1"), ExpectedVersion::Exact(1)),
        )
        .await
        .expect_err("condition no longer holds");
    assert_eq!(
        err,
        StoreError::VersionConflict {
            stream: stream("change-1"),
            expected: ExpectedVersion::Exact(1),
            actual: StreamState(Some(2)),
            role: StreamRole::Condition
        }
    );
    let err = store
        .append(
            AppendRequest::single(stream("ci-2"), ExpectedVersion::Any, vec![event(5)])
                .condition(stream("change-9"), ExpectedVersion::StreamExists),
        )
        .await
        .expect_err("condition on a missing stream");
    assert!(matches!(err, StoreError::VersionConflict { role: StreamRole::Condition, .. }));
    store
        .append(
            AppendRequest::single(stream("ci-2"), ExpectedVersion::Any, vec![event(6)])
                .condition(stream("change-9"), ExpectedVersion::NoStream),
        )
        .await
        .expect("NoStream condition on a missing stream holds");
    let after = whole_log(store).await;
    assert_eq!(after[..before.len()], before[..], "a failed condition changed nothing before it");
    Outcome::Passed
}

/// Check: of two writers at one version, exactly one wins.
pub async fn racing_writers_exactly_one_wins(cx: TestContext) -> Outcome {
    let store = cx.store.clone();
    const RACERS: u64 = 16;
    const ROUNDS: u64 = 10;
    for round in 0..ROUNDS {
        let expected = if round == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(round - 1) };
        let mut tasks = Vec::new();
        for racer in 0..RACERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append(AppendRequest::single(stream("contested"), expected, vec![event(round * 100 + racer)]))
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => wins += 1,
                Err(StoreError::VersionConflict { .. }) => {}
                Err(other) => panic!("unexpected error in a race: {other}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one racer must win");
    }
    assert_eq!(store.stream_version(&stream("contested")).await.expect("version"), Some(ROUNDS - 1));
    Outcome::Passed
}

/// Check: concurrent appends get one gapless global order.
pub async fn gapless_global_order_under_concurrency(cx: TestContext) -> Outcome {
    if let Some(skip) = cx.lacks(&[("gapless_positions", cx.capabilities.gapless_positions)]) {
        return skip;
    }
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 40;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = cx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for n in 0..APPENDS {
                let batch = vec![event(n), event(n + 1000)];
                let name = format!("writer-{writer}");
                let outcome = store
                    .append(AppendRequest::single(stream(&name), ExpectedVersion::Any, batch))
                    .await
                    .expect("append");
                assert_eq!(outcome.last_position, outcome.first_position + 1, "a batch is contiguous");
                positions.extend(outcome.positions());
            }
            positions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("task"));
    }
    acknowledged.sort_unstable();
    let total = WRITERS * APPENDS * 2;
    assert_eq!(acknowledged, (1..=total).collect::<Vec<_>>(), "positions are gapless and unique");
    let log = whole_log(cx.store.as_ref()).await;
    assert_eq!(log.len() as u64, total);
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (index, record) in log.iter().enumerate() {
        assert_eq!(record.position, index as u64 + 1);
        versions.entry(record.stream_id.to_string()).or_default().push(record.stream_version);
        if index > 0 {
            assert!(record.recorded_at >= log[index - 1].recorded_at, "recorded_at never decreases");
        }
    }
    for (name, versions) in versions {
        assert_eq!(versions, (0..APPENDS * 2).collect::<Vec<_>>(), "stream {name} versions");
    }
    Outcome::Passed
}

/// Check: every event records its commit (the append it came in), under concurrent writers
/// whose appends a backend may commit together: each append is its own commit, and the
/// commits tile the log (issue 18, part 5).
pub async fn commits_are_recorded_per_append(cx: TestContext) -> Outcome {
    if let Some(skip) = cx.lacks(&[("gapless_positions", cx.capabilities.gapless_positions)]) {
        return skip;
    }
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 20;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = cx.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut spans = Vec::new();
            for n in 0..APPENDS {
                let size = 1 + (writer + n) % 3;
                let batch = (0..size).map(|i| event(n * 10 + i)).collect();
                let name = format!("writer-{writer}");
                let outcome = store
                    .append(AppendRequest::single(stream(&name), ExpectedVersion::Any, batch))
                    .await
                    .expect("append");
                spans.push((outcome.first_position, outcome.last_position));
            }
            spans
        }));
    }
    let mut spans = Vec::new();
    for task in tasks {
        spans.extend(task.await.expect("task"));
    }
    let log = whole_log(cx.store.as_ref()).await;
    for (first, last) in spans {
        for position in first..=last {
            let record = &log[(position - 1) as usize];
            let expected = CommitSpan { first_position: first, events: (last - first + 1) as u32 };
            assert_eq!(record.commit, expected, "position {position}: the append {first}..={last}");
        }
    }
    for record in &log {
        assert!(record.commit.contains(record.position), "{:?} at {}", record.commit, record.position);
        let read = cx.store.event_at(record.position).await.expect("read").expect("event");
        assert_eq!(read.commit, record.commit, "every read path returns the commit");
    }
    Outcome::Passed
}

/// Check: every new event is salted (chain version 2); a redaction replaces payloads and
/// appends its record atomically, every hash stays, `verify` passes, and a redaction that
/// would change a hash, names an event twice or past the head is refused with nothing
/// changed (issue 18, part 4).
pub async fn redaction_keeps_every_hash(cx: TestContext) -> Outcome {
    use crate::event::PayloadSeal;
    use crate::store::Erasure;
    let secret = b"jane.doe@example.com";
    let person = |n: u64| {
        let data = format!(r#"{{"n":{n},"email":"jane.doe@example.com"}}"#);
        NewEvent::raw("test.person", data.into_bytes(), metadata())
    };
    cx.store
        .append(AppendRequest::single(stream("people"), ExpectedVersion::Any, vec![person(1), person(2), event(3)]))
        .await
        .expect("append");
    let before = whole_log(cx.store.as_ref()).await;
    let mut salts = std::collections::HashSet::new();
    for record in &before {
        match record.seal {
            PayloadSeal::Salted(salt) => assert!(salts.insert(salt), "salts are never reused"),
            other => panic!("new events are salted, found {other:?}"),
        }
    }
    let erase =
        |position: u64| Erasure { position, data: format!(r#"{{"n":{position},"email":"[redacted]"}}"#).into_bytes() };
    let record = |positions: &str| {
        let data = format!(r#"{{"positions":[{positions}]}}"#);
        AppendRequest::single(
            stream("redactions"),
            ExpectedVersion::Any,
            vec![NewEvent::raw(crate::chain::REDACTION_APPLIED, data.into_bytes(), metadata())],
        )
    };
    // Refused, nothing changed: twice the same event, past the head, an empty erasure list.
    for (erasures, positions) in [(vec![erase(1), erase(1)], "1"), (vec![erase(9)], "9"), (vec![], "1")] {
        let refused = cx.store.redact(erasures, record(positions)).await;
        assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
        assert_eq!(whole_log(cx.store.as_ref()).await, before, "a refused redaction changes nothing");
    }
    let outcome = cx.store.redact(vec![erase(1), erase(2)], record("1,2")).await.expect("redacted");
    assert_eq!(outcome.first_position, 4);
    let after = whole_log(cx.store.as_ref()).await;
    assert_eq!(after.len(), 4);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!((old.hash, old.prev_hash), (new.hash, new.prev_hash), "position {}: every hash stays", old.position);
    }
    for record in &after[..2] {
        assert!(matches!(record.seal, PayloadSeal::Redacted { record: 4, .. }), "{:?}", record.seal);
        assert!(!record.data.windows(secret.len()).any(|w| w == secret), "the erased value is gone");
        let read = cx.store.event_at(record.position).await.expect("read").expect("event");
        assert_eq!(read.seal, record.seal, "every read path returns the seal");
    }
    assert_eq!(after[2], before[2], "an event not named is untouched");
    let report = cx.store.verify().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    // A second erasure of an already redacted event keeps the first commitment.
    cx.store
        .redact(
            vec![Erasure { position: 1, data: br#"{"n":"[redacted]","email":"[redacted]"}"#.to_vec() }],
            record("1"),
        )
        .await
        .expect("again");
    assert!(cx.store.verify().await.expect("verify").is_intact());
    // An erasure that is not JSON is refused.
    let refused = cx.store.redact(vec![Erasure { position: 3, data: b"{".to_vec() }], record("3")).await;
    assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{refused:?}");
    Outcome::Passed
}

/// Check: a subscription crosses from catch-up to live without a gap or a duplicate.
pub async fn subscription_crosses_from_catch_up_to_live(cx: TestContext) -> Outcome {
    let store = cx.store.clone();
    const BEFORE: u64 = 300;
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 100;
    for n in 0..BEFORE / 10 {
        let batch = (0..10).map(|i| event(n * 10 + i)).collect();
        store.append(AppendRequest::single(stream("history"), ExpectedVersion::Any, batch)).await.expect("seed");
    }
    let total = BEFORE + WRITERS * PER_WRITER;
    // Small pages force many catch-up reads that race the writers.
    let from_start = subscribe(store.clone(), 0, 7).take(total as usize);
    let from_middle = subscribe(store.clone(), BEFORE / 2, 13).take((total - BEFORE / 2) as usize);
    let readers = tokio::spawn(async move {
        let a: Vec<u64> = from_start.map(|r| r.expect("event").position).collect().await;
        let b: Vec<u64> = from_middle.map(|r| r.expect("event").position).collect().await;
        (a, b)
    });
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..PER_WRITER {
                store
                    .append(AppendRequest::single(
                        stream(&format!("live-{writer}")),
                        ExpectedVersion::Any,
                        vec![event(n)],
                    ))
                    .await
                    .expect("live append");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(60), readers)
        .await
        .expect("subscribers finish within 60 s")
        .expect("reader task");
    assert_eq!(a, (1..=total).collect::<Vec<_>>(), "from the start: every event once, in order");
    assert_eq!(b, (BEFORE / 2 + 1..=total).collect::<Vec<_>>(), "from the middle: every later event once, in order");

    // A subscriber that is already live gets the next append.
    let mut live = subscribe(store.clone(), total, 100);
    let appended = append_one(store.as_ref(), "late", ExpectedVersion::Any, 1).await.expect("append");
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), live.next())
        .await
        .expect("live event arrives")
        .expect("stream open")
        .expect("event");
    assert_eq!(next.position, appended);
    Outcome::Passed
}

/// Check: reads are paged, forwards and backwards.
pub async fn reads_are_paged_and_directed(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    for n in 0..20 {
        append_one(store, if n % 2 == 0 { "even" } else { "odd" }, ExpectedVersion::Any, n).await.expect("append");
    }
    let even = stream("even");
    let forward = store.read_stream(&even, Direction::Forward, Some(3), 4).await.expect("read");
    assert_eq!(forward.iter().map(|r| r.stream_version).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    let backward = store.read_stream(&even, Direction::Backward, None, 3).await.expect("read");
    assert_eq!(backward.iter().map(|r| r.stream_version).collect::<Vec<_>>(), vec![9, 8, 7]);
    let backward_from = store.read_stream(&even, Direction::Backward, Some(1), 10).await.expect("read");
    assert_eq!(backward_from.iter().map(|r| r.stream_version).collect::<Vec<_>>(), vec![1, 0]);
    assert!(store.read_stream(&stream("nobody"), Direction::Forward, None, 10).await.expect("read").is_empty());
    assert!(store.read_stream(&even, Direction::Forward, Some(10), 10).await.expect("read").is_empty());

    let page = store.read_all(5, 6).await.expect("read");
    assert_eq!(page.iter().map(|r| r.position).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10, 11]);
    assert!(store.read_all(20, 10).await.expect("read").is_empty());
    assert!(store.read_all(u64::MAX, 10).await.expect("read").is_empty());
    assert!(store.read_all(0, 0).await.expect("read").is_empty());

    let at = store.event_at(7).await.expect("read").expect("present");
    assert_eq!(at.position, 7);
    assert_eq!(at.stream_id.as_str(), "even");
    assert!(store.event_at(21).await.expect("read").is_none());
    assert!(store.event_at(0).await.expect("read").is_none());
    let head = store.head().await.expect("head");
    assert_eq!(head.position, 20);
    assert_eq!(head.hash, store.event_at(20).await.expect("read").expect("present").hash);
    assert_eq!(*store.watch_head().borrow(), 20);
    Outcome::Passed
}

/// Appends `singles` events one at a time to two streams, then one commit of three events
/// over two more streams: the log the checks of paged reads page through.
async fn log_ending_in_a_commit_of_three(store: &dyn EventStore, singles: u64) {
    for n in 0..singles {
        append_one(store, if n % 3 == 0 { "x" } else { "y" }, ExpectedVersion::Any, n).await.expect("append");
    }
    let (first, second, third) = (event(singles), event(singles + 1), event(singles + 2));
    store
        .append(AppendRequest::new().write(stream("p"), ExpectedVersion::Any, vec![first, second]).write(
            stream("q"),
            ExpectedVersion::Any,
            vec![third],
        ))
        .await
        .expect("a commit of several streams");
}

/// Reads the whole log with `read` in pages of `page`, each after the last position read,
/// checking that no page holds more than asked.
async fn read_in_pages<T, F, Fut>(page: usize, mut read: F, position: fn(&T) -> u64) -> Vec<T>
where
    F: FnMut(u64, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let (mut after, mut all) = (0, Vec::new());
    loop {
        let next = read(after, page).await.expect("a page");
        assert!(next.len() <= page, "a page of {page} holds {}", next.len());
        let Some(last) = next.last() else { break };
        after = position(last);
        all.extend(next);
    }
    all
}

/// Check: the hash chain read alone (`read_links`) is every record's place, page by page, with
/// `read_all`'s bounds.
pub async fn links_follow_the_log(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    log_ending_in_a_commit_of_three(store, 13).await;
    let expected: Vec<ChainLink> = whole_log(store).await.iter().map(ChainLink::from).collect();
    assert_eq!(expected.len(), 16);
    for page in [1, 4, 100] {
        let links = read_in_pages(page, |after, n| store.read_links(after, n), |link: &ChainLink| link.position).await;
        assert_eq!(links, expected, "pages of {page}");
    }
    assert!(store.read_links(16, 10).await.expect("read").is_empty());
    assert!(store.read_links(u64::MAX, 10).await.expect("read").is_empty());
    assert!(store.read_links(0, 0).await.expect("read").is_empty());
    let too_many = store.limits().max_page_events + 1;
    assert!(store.read_all(0, too_many).await.is_err(), "read_all refuses a page past the bound");
    assert!(store.read_links(0, too_many).await.is_err(), "and so does read_links");
    Outcome::Passed
}

/// Check: what a fold reads (`read_fold`) is each whole record's fold part, page by page, with
/// `read_all`'s bounds: the same payload bytes, metadata, time, hash and commit.
pub async fn folds_follow_the_log(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    log_ending_in_a_commit_of_three(store, 7).await;
    let expected: Vec<FoldRecord> = whole_log(store).await.into_iter().map(|record| record.fold).collect();
    assert_eq!(expected.len(), 10);
    assert_eq!(expected[9].commit.events, 3, "the commit of three events reads as one");
    for page in [1, 3, 100] {
        let folds = read_in_pages(page, |after, n| store.read_fold(after, n), |fold: &FoldRecord| fold.position).await;
        assert_eq!(folds, expected, "pages of {page}");
    }
    assert!(store.read_fold(10, 10).await.expect("read").is_empty());
    assert!(store.read_fold(u64::MAX, 10).await.expect("read").is_empty());
    assert!(store.read_fold(0, 0).await.expect("read").is_empty());
    let too_many = store.limits().max_page_events + 1;
    assert!(store.read_fold(0, too_many).await.is_err(), "read_fold refuses a page past the bound");
    assert_eq!(store.read_fold(0, store.limits().max_page_events).await.expect("at the bound").len(), 10);
    Outcome::Passed
}

/// Check: payload bytes come back exactly as appended.
pub async fn payload_bytes_are_kept_exactly(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    let odd_json = "{ \"b\" : 1,\n\t\"a\": [2, 3.50, \"\\u00e9\"], \"z\":null }  ";
    let outcome = store
        .append(AppendRequest::single(
            stream("bytes"),
            ExpectedVersion::Any,
            vec![NewEvent::raw("test.bytes", odd_json, metadata())],
        ))
        .await
        .expect("append");
    let record = store.event_at(outcome.first_position).await.expect("read").expect("present");
    assert_eq!(record.data, odd_json.as_bytes(), "stored exactly as received");
    assert_eq!(record.metadata(), metadata());
    assert_eq!(record.event_type, "test.bytes");
    assert_eq!(record.schema_version, 1);
    assert_eq!(record.recorded_at, TEST_EPOCH);
    let chosen = uuid::Uuid::now_v7();
    let outcome = store
        .append(AppendRequest::single(
            stream("bytes"),
            ExpectedVersion::Exact(0),
            vec![event(1).with_event_id(chosen).with_schema_version(3)],
        ))
        .await
        .expect("append with a chosen id");
    assert_eq!(outcome.event_ids, vec![chosen]);
    let record = store.event_at(outcome.first_position).await.expect("read").expect("present");
    assert_eq!(record.event_id, chosen);
    assert_eq!(record.schema_version, 3);
    Outcome::Passed
}

/// Check: `recorded_at` is stamped at commit and never decreases.
pub async fn recorded_at_is_stamped_and_never_decreases(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    cx.clock.set(TEST_EPOCH.saturating_add_micros(10_000_000));
    let first = append_one(store, "t", ExpectedVersion::Any, 0).await.expect("append");
    cx.clock.set(TEST_EPOCH); // the wall clock steps back (NTP, a VM migration...)
    let second = append_one(store, "t", ExpectedVersion::Any, 1).await.expect("append");
    cx.clock.set(TEST_EPOCH.saturating_add_micros(20_000_000));
    let third = append_one(store, "t", ExpectedVersion::Any, 2).await.expect("append");
    let at = |p| async move { store.event_at(p).await.expect("read").expect("present").recorded_at };
    assert_eq!(at(first).await, TEST_EPOCH.saturating_add_micros(10_000_000));
    assert_eq!(at(second).await, TEST_EPOCH.saturating_add_micros(10_000_000), "never decreases");
    assert_eq!(at(third).await, TEST_EPOCH.saturating_add_micros(20_000_000));

    assert_eq!(store.position_at(TEST_EPOCH).await.expect("position_at"), 0);
    assert_eq!(store.position_at(TEST_EPOCH.saturating_add_micros(10_000_000)).await.expect("position_at"), second);
    assert_eq!(store.position_at(TEST_EPOCH.saturating_add_micros(15_000_000)).await.expect("position_at"), second);
    assert_eq!(store.position_at(TEST_EPOCH.saturating_add_micros(20_000_000)).await.expect("position_at"), third);
    assert_eq!(store.position_at(Timestamp::from_micros(i64::MAX)).await.expect("position_at"), third);
    Outcome::Passed
}

/// Check: `position_at` agrees with a scan of the log.
pub async fn position_at_agrees_with_a_scan(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    let mut times = Vec::new();
    for n in 0..200u64 {
        // Steps of 0 to 2 s: several events share a time.
        cx.clock.advance_micros(((n * 7919) % 3) as i64 * 1_000_000);
        append_one(store, "clock", ExpectedVersion::Any, n).await.expect("append");
        times.push(cx.clock.now());
    }
    let log = whole_log(store).await;
    let start = TEST_EPOCH.as_micros() - 1_000_000;
    let end = cx.clock.now().as_micros() + 1_000_000;
    for probe in (start..=end).step_by(500_000) {
        let probe = Timestamp::from_micros(probe);
        let scanned = log.iter().filter(|r| r.recorded_at <= probe).map(|r| r.position).max().unwrap_or(0);
        assert_eq!(store.position_at(probe).await.expect("position_at"), scanned, "at {probe}");
    }
    Outcome::Passed
}

/// Check: the bulk-load rules (empty store, times never decreasing, not in the future).
pub async fn bulk_load_rules(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    let past = |seconds: i64| TEST_EPOCH.saturating_add_micros(-seconds * 1_000_000);
    let fixture = |n: u64, at: Timestamp| {
        NewEvent::raw("test.loaded", format!("{{\"n\":{n}}}"), Metadata::new(Actor::system(), Source::Fixture))
            .with_recorded_at(at)
    };
    // Not from the future, not decreasing, not from a live source, not half supplied.
    let err = store
        .append(AppendRequest::single(
            stream("x"),
            ExpectedVersion::Any,
            vec![fixture(0, TEST_EPOCH.saturating_add_micros(1))],
        ))
        .await
        .expect_err("future");
    assert!(matches!(err, StoreError::InvalidInput(ref m) if m.contains("future")), "{err}");
    let err = store
        .append(AppendRequest::single(
            stream("x"),
            ExpectedVersion::Any,
            vec![fixture(0, past(10)), fixture(1, past(20))],
        ))
        .await
        .expect_err("decreasing");
    assert!(matches!(err, StoreError::InvalidInput(ref m) if m.contains("before")), "{err}");
    let mut live_source = fixture(0, past(10));
    live_source.metadata.source = Source::Api;
    let err = store
        .append(AppendRequest::single(stream("x"), ExpectedVersion::Any, vec![live_source]))
        .await
        .expect_err("api source");
    assert!(matches!(err, StoreError::InvalidInput(ref m) if m.contains("bulk load")), "{err}");
    let err = store
        .append(AppendRequest::single(stream("x"), ExpectedVersion::Any, vec![fixture(0, past(10)), event(1)]))
        .await
        .expect_err("half supplied");
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    assert_eq!(store.head().await.expect("head").position, 0, "nothing was written");

    // Into the empty log, in several batches, never decreasing across them.
    store
        .append(AppendRequest::single(
            stream("x"),
            ExpectedVersion::Any,
            vec![fixture(0, past(100)), fixture(1, past(90))],
        ))
        .await
        .expect("bulk load 1");
    let err = store
        .append(AppendRequest::single(stream("x"), ExpectedVersion::Any, vec![fixture(2, past(95))]))
        .await
        .expect_err("before the tail");
    assert!(matches!(err, StoreError::InvalidInput(ref m) if m.contains("before the log's last event")), "{err}");
    store
        .append(AppendRequest::single(stream("x"), ExpectedVersion::Any, vec![fixture(2, past(80))]))
        .await
        .expect("bulk load 2");
    let log = whole_log(store).await;
    assert_eq!(log.iter().map(|r| r.recorded_at).collect::<Vec<_>>(), vec![past(100), past(90), past(80)]);
    assert_eq!(store.position_at(past(85)).await.expect("position_at"), 2);

    // A bulk load may name a busy stream again further on; the writes apply in order.
    let outcome = store
        .append(
            AppendRequest::new()
                .write(stream("x"), ExpectedVersion::Any, vec![fixture(3, past(70))])
                .write(stream("z"), ExpectedVersion::Any, vec![fixture(4, past(70))])
                .write(stream("x"), ExpectedVersion::Any, vec![fixture(5, past(60)), fixture(6, past(60))]),
        )
        .await
        .expect("a stream twice in a bulk load");
    assert_eq!(outcome.positions(), 4..=7);
    let x: Vec<u64> = store
        .read_stream(&stream("x"), Direction::Forward, None, 10)
        .await
        .expect("read")
        .iter()
        .map(|r| r.stream_version)
        .collect();
    assert_eq!(x, vec![0, 1, 2, 3, 4, 5]);
    let x_positions: Vec<u64> = store
        .read_stream(&stream("x"), Direction::Forward, Some(3), 10)
        .await
        .expect("read")
        .iter()
        .map(|r| r.position)
        .collect();
    assert_eq!(x_positions, vec![4, 6, 7]);

    // After the first live append, a bulk load is refused.
    append_one(store, "y", ExpectedVersion::Any, 0).await.expect("live append");
    let err = store
        .append(AppendRequest::single(stream("x"), ExpectedVersion::Any, vec![fixture(3, past(1))]))
        .await
        .expect_err("log is live");
    assert!(matches!(err, StoreError::InvalidInput(ref m) if m.contains("empty log")), "{err}");
    assert_eq!(store.head().await.expect("head").position, 8);
    Outcome::Passed
}

/// Check: every limit holds at its bound and refuses past it.
pub async fn limits_are_enforced_at_the_bound(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    let limits = cx.factory_limits;
    assert_eq!(store.limits(), limits, "the backend was built with the test limits");
    append_one(store, "seed", ExpectedVersion::Any, 0).await.expect("seed");
    let before = whole_log(store).await;
    let sized = |bytes: usize| {
        // A JSON string of exactly `bytes` bytes: two quotes around the filler.
        NewEvent::raw("test.sized", format!("\"{}\"", "x".repeat(bytes - 2)), metadata())
    };

    over(
        store
            .append(AppendRequest::single(stream("big"), ExpectedVersion::Any, vec![sized(limits.max_event_bytes + 1)]))
            .await,
        Limit::MaxEventBytes,
        limits.max_event_bytes + 1,
        limits.max_event_bytes,
    );
    let many: Vec<NewEvent> = (0..=limits.max_batch_events as u64).map(event).collect();
    over(
        store.append(AppendRequest::single(stream("many"), ExpectedVersion::Any, many)).await,
        Limit::MaxBatchEvents,
        limits.max_batch_events + 1,
        limits.max_batch_events,
    );
    let heavy_count = limits.max_batch_bytes / limits.max_event_bytes + 1;
    let heavy: Vec<NewEvent> = (0..heavy_count).map(|_| sized(limits.max_event_bytes)).collect();
    over(
        store.append(AppendRequest::single(stream("heavy"), ExpectedVersion::Any, heavy)).await,
        Limit::MaxBatchBytes,
        heavy_count * limits.max_event_bytes,
        limits.max_batch_bytes,
    );
    let mut wide = AppendRequest::new();
    for n in 0..=limits.max_streams_per_append {
        wide = wide.write(stream(&format!("wide-{n}")), ExpectedVersion::Any, vec![event(n as u64)]);
    }
    over(
        store.append(wide).await,
        Limit::MaxStreamsPerAppend,
        limits.max_streams_per_append + 1,
        limits.max_streams_per_append,
    );
    over(
        store.read_all(0, limits.max_page_events + 1).await,
        Limit::MaxPageEvents,
        limits.max_page_events + 1,
        limits.max_page_events,
    );
    over(
        store.read_stream(&stream("seed"), Direction::Forward, None, limits.max_page_events + 1).await,
        Limit::MaxPageEvents,
        limits.max_page_events + 1,
        limits.max_page_events,
    );
    assert_unchanged(store, &before, "refused appends").await;

    // Exactly at each bound is accepted.
    store
        .append(AppendRequest::single(stream("big"), ExpectedVersion::Any, vec![sized(limits.max_event_bytes)]))
        .await
        .expect("an event of exactly max_event_bytes");
    let many: Vec<NewEvent> = (0..limits.max_batch_events as u64).map(event).collect();
    store
        .append(AppendRequest::single(stream("many"), ExpectedVersion::Any, many))
        .await
        .expect("exactly max_batch_events");
    let mut wide = AppendRequest::new();
    for n in 0..limits.max_streams_per_append {
        wide = wide.write(stream(&format!("wide-{n}")), ExpectedVersion::Any, vec![event(n as u64)]);
    }
    store.append(wide).await.expect("exactly max_streams_per_append");
    let page = store.read_all(0, limits.max_page_events).await.expect("a page of exactly max_page_events");
    assert!(page.len() <= limits.max_page_events);
    Outcome::Passed
}

/// Check: bad input is refused with a clear error and changes nothing.
pub async fn bad_input_is_refused_and_changes_nothing(cx: TestContext) -> Outcome {
    let store = cx.store.as_ref();
    let id = uuid::Uuid::now_v7();
    store
        .append(AppendRequest::single(stream("seed"), ExpectedVersion::Any, vec![event(0).with_event_id(id)]))
        .await
        .expect("seed");
    let before = whole_log(store).await;
    let single = |events: Vec<NewEvent>| AppendRequest::single(stream("x"), ExpectedVersion::Any, events);
    let invalid = |result: Result<_, StoreError>, needle: &str| match result {
        Err(StoreError::InvalidInput(message)) => {
            assert!(message.contains(needle), "{message:?} should mention {needle:?}")
        }
        other => panic!("expected invalid input mentioning {needle:?}, got {other:?}"),
    };
    invalid(store.append(single(vec![NewEvent::raw("t.x", "{not json", metadata())])).await, "not JSON");
    invalid(store.append(single(vec![NewEvent::raw("t.x", "", metadata())])).await, "not JSON");
    invalid(
        store
            .append(AppendRequest::single(
                stream("x"),
                ExpectedVersion::Any,
                vec![NewEvent::raw("t.x", vec![0xff, 0xfe], metadata())],
            ))
            .await,
        "not JSON",
    );
    invalid(store.append(single(vec![NewEvent::raw("bad type", "1", metadata())])).await, "event type");
    invalid(store.append(single(vec![])).await, "at least one event");
    invalid(
        store
            .append(AppendRequest::new().write(stream("x"), ExpectedVersion::Any, vec![event(1)]).write(
                stream("x"),
                ExpectedVersion::Any,
                vec![event(2)],
            ))
            .await,
        "twice",
    );
    invalid(
        store
            .append(
                AppendRequest::single(stream("x"), ExpectedVersion::Any, vec![event(1)])
                    .condition(stream("x"), ExpectedVersion::Any),
            )
            .await,
        "condition",
    );
    let mut anonymous = event(1);
    anonymous.metadata.actor.principal = crate::Text::default();
    invalid(store.append(single(vec![anonymous])).await, "actor.principal");
    let mut chatty = event(1);
    chatty.metadata.correlation_id = Some("c".repeat(crate::event::MAX_METADATA_FIELD_BYTES + 1).into());
    invalid(store.append(single(vec![chatty])).await, "correlation_id");
    // A duplicate event id, alone and in the middle of an otherwise good batch.
    let err = store.append(single(vec![event(1), event(2).with_event_id(id)])).await.expect_err("duplicate id");
    assert_eq!(err, StoreError::DuplicateEventId(id));
    let twin = uuid::Uuid::now_v7();
    let err = store
        .append(single(vec![event(1).with_event_id(twin), event(2).with_event_id(twin)]))
        .await
        .expect_err("duplicate id within a batch");
    assert_eq!(err, StoreError::DuplicateEventId(twin));
    assert_unchanged(store, &before, "bad input").await;
    // The store still works afterwards.
    append_one(store, "x", ExpectedVersion::NoStream, 3).await.expect("a good append after bad ones");
    Outcome::Passed
}

/// Check: a failing append in a group commit does not fail the others.
pub async fn group_commit_isolates_failing_appends(cx: TestContext) -> Outcome {
    // Many concurrent appends, every third doomed by its expectation: the doomed fail alone.
    let store = cx.store.clone();
    let mut tasks = Vec::new();
    for n in 0..60u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let expected = if n % 3 == 0 { ExpectedVersion::Exact(99) } else { ExpectedVersion::NoStream };
            (n, store.append(AppendRequest::single(stream(&format!("g-{n}")), expected, vec![event(n)])).await)
        }));
    }
    let mut ok = HashSet::new();
    for task in tasks {
        let (n, result) = task.await.expect("task");
        match (n % 3 == 0, result) {
            (true, Err(StoreError::VersionConflict { .. })) => {}
            (false, Ok(outcome)) => {
                ok.insert(outcome.first_position);
            }
            (doomed, other) => panic!("append {n} (doomed: {doomed}) ended with {other:?}"),
        }
    }
    assert_eq!(ok.len(), 40);
    let log = whole_log(store.as_ref()).await;
    assert_eq!(log.len(), 40);
    assert!(log.iter().all(|r| ok.contains(&r.position)));
    Outcome::Passed
}

/// Check: verification accepts an intact log.
pub async fn verify_accepts_an_intact_log(cx: TestContext) -> Outcome {
    if let Some(skip) = cx.lacks(&[("hash_chain", cx.capabilities.hash_chain)]) {
        return skip;
    }
    let store = cx.store.as_ref();
    let empty = store.verify().await.expect("verify");
    assert!(empty.is_intact());
    assert_eq!(empty.events_checked, 0);
    for n in 0..50 {
        append_one(store, &format!("s{}", n % 5), ExpectedVersion::Any, n).await.expect("append");
    }
    let report = store.verify().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 50);
    let head = store.head().await.expect("head");
    assert_eq!(report.last_good, head);
    assert_eq!(store.check_digest(head).await.expect("check"), DigestCheck::Matches);
    let log = whole_log(store).await;
    assert_eq!(log[0].prev_hash, Hash::GENESIS);
    for pair in log.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    Outcome::Passed
}

fn over<T: std::fmt::Debug>(result: Result<T, StoreError>, limit: Limit, value: usize, bound: usize) {
    match result {
        Err(StoreError::LimitExceeded { limit: l, value: v, bound: b }) => {
            assert_eq!((l, v, b), (limit, value as u64, bound as u64));
        }
        other => panic!("expected {limit} to be exceeded, got {other:?}"),
    }
}

/// Builds a log of `n` events for a tamper check and returns its head digest.
async fn tamper_subject(store: &dyn EventStore, n: u64) -> crate::chain::Digest {
    for i in 0..n {
        append_one(store, &format!("t{}", i % 3), ExpectedVersion::Any, i).await.expect("append");
    }
    store.head().await.expect("head")
}

/// Check: tampering of kind `how` is detected.
pub async fn tampering_is_detected(cx: TestContext, how: &str) -> Outcome {
    if let Some(skip) = cx.lacks(&[("hash_chain", cx.capabilities.hash_chain)]) {
        return skip;
    }
    let Some(tamper) = cx.tamper.as_ref() else {
        return Outcome::Skipped("the backend's test provides no tamper hook".into());
    };
    let store = cx.store.as_ref();
    let digest = tamper_subject(store, 20).await;
    let expected_break = match how {
        "data" => {
            tamper.flip_data_byte(7);
            ChainBreak::Hash { position: 7 }
        }
        "stream_id" => {
            tamper.set_stream_id(8, "t-forged");
            ChainBreak::Hash { position: 8 }
        }
        "principal" => {
            tamper.set_principal(9, "mallory");
            ChainBreak::Hash { position: 9 }
        }
        "recorded_at" => {
            tamper.shift_recorded_at(10);
            ChainBreak::Hash { position: 10 }
        }
        "delete" => {
            tamper.delete(11);
            ChainBreak::Sequence { position: 12, expected_position: 11 }
        }
        "swap" => {
            tamper.swap(5, 6);
            ChainBreak::PrevHash { position: 5 }
        }
        "insert" => {
            tamper.insert_copy_before(4);
            ChainBreak::Hash { position: 4 }
        }
        "forged_chain" => {
            tamper.rewrite_chain_from(12, b"{\"n\":\"forged\"}");
            let report = store.verify().await.expect("verify");
            assert!(report.is_intact(), "a consistently re-hashed chain verifies internally");
            match store.check_digest(digest).await.expect("check") {
                DigestCheck::Mismatch { stored } => assert_ne!(stored, digest.hash),
                other => panic!("an exported digest must expose the forgery, got {other:?}"),
            }
            return Outcome::Passed;
        }
        "truncate" => {
            tamper.truncate_after(15);
            let report = store.verify().await.expect("verify");
            assert!(report.is_intact(), "a truncated log is internally consistent");
            assert_eq!(report.last_good.position, 15);
            assert_eq!(store.check_digest(digest).await.expect("check"), DigestCheck::Truncated { head: 15 });
            return Outcome::Passed;
        }
        other => panic!("unknown tamper kind {other}"),
    };
    let report = store.verify().await.expect("verify completes on a tampered log");
    let found = report.first_break.clone().expect("tampering must be detected");
    match how {
        // The first mismatch found is what matters; it must be at the tampered position.
        "swap" | "insert" => assert_eq!(found.position(), expected_break.position(), "{found:?}"),
        _ => assert_eq!(found, expected_break),
    }
    assert_eq!(report.last_good.position, found.position() - 1);
    assert_eq!(report.events_checked, found.position() - 1);
    Outcome::Passed
}

macro_rules! tamper_check {
    ($name:ident, $how:literal) => {
        #[doc = concat!("Check: tampering of kind `", $how, "` is detected.")]
        pub async fn $name(cx: TestContext) -> Outcome {
            tampering_is_detected(cx, $how).await
        }
    };
}
tamper_check!(tamper_data_byte, "data");
tamper_check!(tamper_stream_id, "stream_id");
tamper_check!(tamper_principal, "principal");
tamper_check!(tamper_recorded_at, "recorded_at");
tamper_check!(tamper_deleted_row, "delete");
tamper_check!(tamper_swapped_rows, "swap");
tamper_check!(tamper_inserted_row, "insert");
tamper_check!(tamper_truncated_tail, "truncate");
tamper_check!(tamper_forged_chain, "forged_chain");

/// Expands to one `#[tokio::test]` per conformance check, each with a fresh store from
/// `$factory` (an expression of a type implementing `BackendFactory`).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@checks $factory;
            expected_version_rules,
            positions_are_gapless_from_one,
            atomic_multi_stream_append,
            conditions_guard_streams_not_written,
            racing_writers_exactly_one_wins,
            gapless_global_order_under_concurrency,
            commits_are_recorded_per_append,
            redaction_keeps_every_hash,
            subscription_crosses_from_catch_up_to_live,
            reads_are_paged_and_directed,
            links_follow_the_log,
            folds_follow_the_log,
            payload_bytes_are_kept_exactly,
            recorded_at_is_stamped_and_never_decreases,
            position_at_agrees_with_a_scan,
            bulk_load_rules,
            limits_are_enforced_at_the_bound,
            bad_input_is_refused_and_changes_nothing,
            group_commit_isolates_failing_appends,
            verify_accepts_an_intact_log,
            tamper_data_byte,
            tamper_stream_id,
            tamper_principal,
            tamper_recorded_at,
            tamper_deleted_row,
            tamper_swapped_rows,
            tamper_inserted_row,
            tamper_truncated_tail,
            tamper_forged_chain
        );
    };
    (@checks $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let factory = $factory;
                $crate::conformance::run(stringify!($check), &factory, $crate::conformance::$check).await;
            }
        )*
    };
}
