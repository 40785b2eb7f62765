//! Behaviour specific to the PostgreSQL backend: refusing schemas that are not ours, a newer
//! format or a tampered tail; several processes on one log (simulated by several store
//! objects, each with its own writer and follower); the head following other writers'
//! commits through notifications and, when the notification connection is dropped, through
//! the poll; a read-only view; a copy between backends with the same digests.
//! Skipped (saying so) without `CMDB_TEST_POSTGRES_URL`; a failure under `CI=true`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cmdb_core::conformance::{event, fresh_schema_name, metadata, postgres_test_url, stream, whole_log};
use cmdb_core::store::postgres::{PostgresOptions, PostgresStore};
use cmdb_core::store::read_only::ReadOnlyStore;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::store::subscribe;
use cmdb_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
use futures::StreamExt;

fn url(test: &str) -> Option<String> {
    match postgres_test_url() {
        Ok(url) => Some(url),
        Err(reason) => {
            println!("SKIPPED {test}: {reason}");
            None
        }
    }
}

async fn open(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::open(url, PostgresOptions { schema: schema.into(), head_poll_ms: 100, ..PostgresOptions::default() })
        .await
        .expect("open")
}

fn expect_open_error(result: Result<PostgresStore, StoreError>, needle: &str) -> String {
    match result {
        Err(StoreError::Open { reason, .. }) => {
            assert!(reason.contains(needle), "expected {needle:?} in {reason:?}");
            reason
        }
        Err(other) => panic!("expected an open error, got {other}"),
        Ok(_) => panic!("expected an open error, the store opened"),
    }
}

async fn sql(url: &str, text: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    client.batch_execute(text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
    drop(client);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_that_are_not_ours_newer_or_tampered_are_refused_and_left_untouched() {
    let Some(url) = url("schemas_that_are_not_ours_newer_or_tampered_are_refused_and_left_untouched") else { return };
    // Someone else's tables.
    let foreign = fresh_schema_name();
    sql(&url, &format!("CREATE SCHEMA {foreign}; CREATE TABLE {foreign}.events (id int); CREATE TABLE {foreign}.meta (key text, value text)")).await;
    let options = |schema: &str| PostgresOptions { schema: schema.into(), ..PostgresOptions::default() };
    expect_open_error(PostgresStore::open(&url, options(&foreign)).await, "not a cmdb event log");
    // A newer format.
    let newer = fresh_schema_name();
    open(&url, &newer).await.shutdown().await;
    sql(&url, &format!("UPDATE {newer}.meta SET value = '99' WHERE key = 'format_version'")).await;
    expect_open_error(PostgresStore::open(&url, options(&newer)).await, "newer cmdb");
    // A tampered tail: refused, unless opening to verify.
    let tampered = fresh_schema_name();
    let store = open(&url, &tampered).await;
    for n in 0..3 {
        store.append(AppendRequest::single(stream("s"), ExpectedVersion::Any, vec![event(n)])).await.expect("append");
    }
    store.shutdown().await;
    sql(&url, &format!("UPDATE {tampered}.events SET actor_principal = 'mallory' WHERE position = 3")).await;
    expect_open_error(PostgresStore::open(&url, options(&tampered)).await, "does not match its hash");
    let for_verify = PostgresStore::open(&url, PostgresOptions { verify_tail_on_open: false, ..options(&tampered) })
        .await
        .expect("opens for verification");
    let report = for_verify.verify().await.expect("verify");
    assert_eq!(report.first_break.expect("a break").position(), 3);
    // A schema name that would need quoting, and a URL that is not one.
    expect_open_error(PostgresStore::open(&url, options("Bad-Name")).await, "not allowed");
    expect_open_error(
        PostgresStore::open("postgres://u@h:notaport/db", options("cmdb")).await,
        "not a PostgreSQL connection URL",
    );
    // Nothing was created or changed in the refused schemas.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    let tables: i64 = client
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", &[&foreign])
        .await
        .expect("count")
        .get(0);
    assert_eq!(tables, 2, "the foreign schema keeps exactly its own tables");
    drop(client);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_stores_on_one_log_never_fork_and_follow_each_other() {
    let Some(url) = url("several_stores_on_one_log_never_fork_and_follow_each_other") else { return };
    let schema = fresh_schema_name();
    let (one, two, three) = (open(&url, &schema).await, open(&url, &schema).await, open(&url, &schema).await);
    let follower: Arc<dyn EventStore> = Arc::new(three.clone());
    let mut live = subscribe(follower.clone(), 0, 100);
    let mut tasks = Vec::new();
    for (index, store) in [one.clone(), two.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..200u64 {
                // Both race on one stream with exact versions: exactly one wins each version.
                let version = store.stream_version(&stream("shared")).await.expect("version");
                let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let _ = store.append(AppendRequest::single(stream("shared"), expected, vec![event(n)])).await;
                store
                    .append(AppendRequest::single(
                        stream(&format!("own-{index}")),
                        ExpectedVersion::Any,
                        vec![event(n)],
                    ))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let head = one.refresh_head().await.expect("head");
    // The third store learns of the others' commits without writing (notification or poll).
    let mut seen = Vec::new();
    while seen.len() < head as usize {
        let record = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the follower keeps up")
            .expect("open")
            .expect("record");
        seen.push(record.position);
    }
    assert_eq!(seen, (1..=head).collect::<Vec<_>>(), "the follower saw every position once, in order");
    let log = whole_log(&three).await;
    let versions: Vec<u64> = log.iter().filter(|r| r.stream_id == stream("shared")).map(|r| r.stream_version).collect();
    assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>(), "one winner per version of the raced stream");
    assert!(three.verify().await.expect("verify").is_intact());
    // Versions and ids are unique across the writers.
    let ids: BTreeSet<_> = log.iter().map(|r| r.event_id).collect();
    assert_eq!(ids.len(), log.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_notification_connection_loses_no_event() {
    let Some(url) = url("a_dropped_notification_connection_loses_no_event") else { return };
    let schema = fresh_schema_name();
    let writer = open(&url, &schema).await;
    let reader = open(&url, &schema).await;
    let reader_dyn: Arc<dyn EventStore> = Arc::new(reader.clone());
    let mut live = subscribe(reader_dyn, 0, 50);
    let writing = tokio::spawn({
        let writer = writer.clone();
        async move {
            for n in 0..300u64 {
                writer
                    .append(AppendRequest::single(stream("w"), ExpectedVersion::Any, vec![event(n)]))
                    .await
                    .expect("append");
                if n % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    // Drop every follower's notification connection, twice, while the writer writes.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        sql(
            &url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cmdb-head-listener'",
        )
        .await;
    }
    writing.await.expect("writer");
    let mut seen = Vec::new();
    while seen.len() < 300 {
        let record = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the subscription goes on after its notifications were cut")
            .expect("open")
            .expect("record");
        seen.push(record.position);
    }
    assert_eq!(seen, (1..=300).collect::<Vec<_>>(), "no event missed, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_view_refuses_appends_and_changes_nothing() {
    let Some(url) = url("a_read_only_view_refuses_appends_and_changes_nothing") else { return };
    let store = open(&url, &fresh_schema_name()).await;
    store.append(AppendRequest::single(stream("s"), ExpectedVersion::Any, vec![event(1)])).await.expect("append");
    let view = ReadOnlyStore::new(Arc::new(store.clone()), "https://cmdb-writer.example");
    let before = whole_log(&view).await;
    let error = view
        .append(AppendRequest::single(stream("s"), ExpectedVersion::Any, vec![event(2)]))
        .await
        .expect_err("refused");
    assert!(matches!(&error, StoreError::ReadOnly(to) if to.contains("https://cmdb-writer.example")), "{error}");
    assert_eq!(whole_log(&store).await, before, "nothing was written");
    assert_eq!(view.head().await.expect("head"), store.head().await.expect("head"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_between_backends_keeps_every_byte_and_digest() {
    let Some(url) = url("a_copy_between_backends_keeps_every_byte_and_digest") else { return };
    let dir = tempfile::tempdir().expect("dir");
    let sqlite = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
    for n in 0..50u64 {
        let mut request = AppendRequest::single(stream(&format!("s-{}", n % 7)), ExpectedVersion::Any, vec![event(n)]);
        request =
            request.write(stream("other"), ExpectedVersion::Any, vec![NewEvent::raw("x.y", "[1, 2]", metadata())]);
        sqlite.append(request).await.expect("append");
    }
    let source = whole_log(&sqlite).await;
    let postgres = open(&url, &fresh_schema_name()).await;
    for chunk in cmdb_core::store::copy_chunks(&source, &postgres.limits()) {
        let outcome = postgres.append(AppendRequest::copy_of(chunk)).await.expect("copy");
        assert_eq!(outcome.first_position, chunk[0].position);
    }
    assert_eq!(whole_log(&postgres).await, source, "the copy equals the source, hashes included");
    assert_eq!(postgres.head().await.expect("head"), sqlite.head().await.expect("head"));
    // A copy is refused once the target holds events stamped at commit (live appends).
    postgres.append(AppendRequest::single(stream("live"), ExpectedVersion::Any, vec![event(0)])).await.expect("live");
    let error = postgres.append(AppendRequest::copy_of(&source[..1])).await.expect_err("refused");
    assert!(matches!(error, StoreError::InvalidInput(_) | StoreError::VersionConflict { .. }), "{error}");
    sqlite.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_held_up_by_another_process_s_lock_fails_cleanly_and_resumes() {
    let Some(url) = url("a_writer_held_up_by_another_process_s_lock_fails_cleanly_and_resumes") else { return };
    let schema = fresh_schema_name();
    let store = PostgresStore::open(
        &url,
        PostgresOptions { schema: schema.clone(), lock_timeout_ms: 300, ..PostgresOptions::default() },
    )
    .await
    .expect("open");
    store.append(AppendRequest::single(stream("s"), ExpectedVersion::Any, vec![event(0)])).await.expect("append");
    let before = whole_log(&store).await;
    // Another "process" takes the log's lock and sits on it.
    let (holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    let key = cmdb_core::store::postgres::schema::lock_key(&schema);
    holder.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({key})")).await.expect("lock");
    let error = store
        .append(AppendRequest::single(stream("s"), ExpectedVersion::Any, vec![event(1)]))
        .await
        .expect_err("the lock is held");
    assert!(matches!(&error, StoreError::Storage(reason) if reason.contains("55P03")), "lock_timeout: {error}");
    assert!(error.is_retryable());
    assert_eq!(whole_log(&store).await, before, "nothing of the refused append was written");
    holder.batch_execute("ROLLBACK").await.expect("release");
    let outcome = store
        .append(AppendRequest::single(stream("s"), ExpectedVersion::Any, vec![event(2)]))
        .await
        .expect("appends again once the lock is free");
    assert_eq!(outcome.first_position, 2, "no gap: the refused append took no position");
    drop(holder);
    let _ = driver.await;
}

/// A log of format 1 (before commits were recorded) is upgraded when opened: its events read
/// as commits of one event each, new appends record theirs, and the chain still verifies.
#[tokio::test]
async fn a_format_1_log_is_upgraded_in_place_and_keeps_every_hash() {
    let Some(url) = url("a_format_1_log_is_upgraded_in_place_and_keeps_every_hash") else { return };
    let schema = fresh_schema_name();
    let store = open(&url, &schema).await;
    // Format 1 events were hashed as chain version 1 (no salts): written so, then the columns
    // format 1 did not have are dropped.
    let mut two = AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(1), event(2)]);
    two.seals = vec![cmdb_core::PayloadSeal::Plain; 2];
    store.append(two).await.expect("append");
    store.shutdown().await;
    sql(
        &url,
        &format!(
            "ALTER TABLE {schema}.events DROP COLUMN commit_first, DROP COLUMN commit_size, DROP COLUMN chain_version, \
             DROP COLUMN salt, DROP COLUMN commitment, DROP COLUMN redacted_by; \
             UPDATE {schema}.meta SET value = '1' WHERE key = 'format_version'"
        ),
    )
    .await;
    let store = open(&url, &schema).await;
    let old = store.read_all(0, 10).await.expect("read");
    assert!(old.iter().all(|r| r.commit == cmdb_core::CommitSpan::single(r.position)), "{old:?}");
    assert!(old.iter().all(|r| r.seal == cmdb_core::PayloadSeal::Plain), "old events are chain version 1");
    store
        .append(AppendRequest::single(stream("b"), ExpectedVersion::Any, vec![event(3), event(4), event(5)]))
        .await
        .expect("append");
    let new = store.read_all(2, 10).await.expect("read");
    assert!(new.iter().all(|r| r.commit == cmdb_core::CommitSpan { first_position: 3, events: 3 }), "{new:?}");
    assert!(new.iter().all(|r| matches!(r.seal, cmdb_core::PayloadSeal::Salted(_))), "new events are salted");
    assert!(store.verify().await.expect("verify").is_intact());
    store.shutdown().await;
}
