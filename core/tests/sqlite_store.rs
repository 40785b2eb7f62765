//! Behaviour specific to the embedded SQLite backend: durability settings, refusing files
//! that are not ours, a full disk, fail-stop, several writers on one file, backup, shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cmdb_core::conformance::{event, metadata, stream};
use cmdb_core::store::sqlite::{APPLICATION_ID, LOG_FILE_NAME, SqliteOptions, SqliteStore, SqliteTamper};
use cmdb_core::store::tamper::Tamper;
use cmdb_core::{AppendRequest, EventRecord, EventStore, ExpectedVersion, NewEvent, StoreError};
use futures::StreamExt;

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, SqliteOptions::default()).expect("open")
}

async fn whole_log(store: &dyn EventStore) -> Vec<EventRecord> {
    let mut all: Vec<EventRecord> = Vec::new();
    loop {
        let after = all.last().map_or(0, |r| r.position);
        let page = store.read_all(after, 1000).await.expect("read");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

async fn append_n(store: &dyn EventStore, name: &str, n: u64) -> Vec<u64> {
    let mut positions = Vec::new();
    for i in 0..n {
        let outcome = store
            .append(AppendRequest::single(stream(name), ExpectedVersion::Any, vec![event(i)]))
            .await
            .expect("append");
        positions.push(outcome.first_position);
    }
    positions
}

/// The name and blake3 of every file in `dir`, but SQLite's `-shm` index, which readers
/// rewrite by design and which holds no data.
fn file_fingerprint(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| {
            let entry = entry.expect("entry");
            let bytes = std::fs::read(entry.path()).expect("read");
            (entry.file_name().to_string_lossy().into_owned(), blake3::hash(&bytes).to_hex().to_string())
        })
        .filter(|(name, _)| !name.ends_with("-shm"))
        .collect();
    files.sort();
    files
}

fn expect_open_error(dir: &Path, needle: &str) -> String {
    match SqliteStore::open(dir, SqliteOptions::default()) {
        Err(StoreError::Open { reason, .. }) => {
            assert!(reason.contains(needle), "{reason:?} should mention {needle:?}");
            reason
        }
        Err(other) => panic!("expected an open error mentioning {needle:?}, got {other}"),
        Ok(_) => panic!("expected an open error mentioning {needle:?}, but the store opened"),
    }
}

#[tokio::test]
async fn wal_and_synchronous_full_are_in_force() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    let pragmas = store.writer_pragmas().await.expect("pragmas");
    assert_eq!(pragmas.journal_mode, "wal");
    assert_eq!(pragmas.synchronous, 2, "synchronous=FULL");
    assert_eq!(pragmas.application_id, APPLICATION_ID);
    assert_eq!(pragmas.user_version, cmdb_core::store::sqlite::FORMAT_VERSION);
}

/// A log of format 1 (before commits were recorded) opens, is upgraded in place, reads its
/// old events as commits of one event each, and records the commits of new appends.
#[tokio::test]
async fn logs_of_formats_1_and_2_are_upgraded_in_place_and_keep_every_hash() {
    // Format 1 had neither commits nor seals, format 2 no seals: their events were hashed as
    // chain version 1 (unsalted), which is what is written here before the columns are dropped.
    for (format, dropped) in [
        (1, "commit_first, commit_size, chain_version, salt, commitment, redacted_by"),
        (2, "chain_version, salt, commitment, redacted_by"),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        let mut two = AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(1), event(2)]);
        two.seals = vec![cmdb_core::PayloadSeal::Plain; 2];
        store.append(two).await.expect("append");
        let before = store.verify().await.expect("verify");
        store.shutdown().await;
        drop(store);
        {
            let conn = rusqlite::Connection::open(dir.path().join(LOG_FILE_NAME)).expect("open raw");
            let drops: String = dropped.split(", ").map(|c| format!("ALTER TABLE events DROP COLUMN {c}; ")).collect();
            conn.execute_batch(&format!("{drops} PRAGMA user_version = {format};")).expect("make it the old format");
        }
        let store = open(dir.path());
        assert_eq!(store.writer_pragmas().await.expect("pragmas").user_version, 3, "format {format} upgraded");
        let old = store.read_all(0, 10).await.expect("read");
        assert_eq!(old.len(), 2);
        for record in &old {
            if format == 1 {
                assert_eq!(
                    record.commit,
                    cmdb_core::CommitSpan::single(record.position),
                    "an old event is its own commit"
                );
            }
            assert_eq!(record.seal, cmdb_core::PayloadSeal::Plain, "an old event is chain version 1");
        }
        let three = vec![event(3), event(4), event(5)];
        store.append(AppendRequest::single(stream("b"), ExpectedVersion::Any, three)).await.expect("append");
        let new = store.read_all(2, 10).await.expect("read");
        assert!(new.iter().all(|r| r.commit == cmdb_core::CommitSpan { first_position: 3, events: 3 }));
        assert!(new.iter().all(|r| matches!(r.seal, cmdb_core::PayloadSeal::Salted(_))), "new events are salted");
        let after = store.verify().await.expect("verify");
        assert!(after.is_intact() && before.is_intact(), "format {format}: old and new events verify");
    }
}

#[tokio::test]
async fn reopening_keeps_every_event_and_continues_the_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    append_n(&store, "a", 25).await;
    let before = whole_log(&store).await;
    store.shutdown().await;
    assert!(matches!(
        store.append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(0)])).await,
        Err(StoreError::Closed)
    ));
    drop(store);

    let store = open(dir.path());
    assert_eq!(whole_log(&store).await, before);
    let more = append_n(&store, "a", 5).await;
    assert_eq!(more, (26..=30).collect::<Vec<_>>());
    let report = store.verify().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events_checked, 30);
}

#[tokio::test]
async fn a_database_that_is_not_ours_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let conn = rusqlite::Connection::open(dir.path().join(LOG_FILE_NAME)).expect("create");
        conn.execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5);",
        )
        .expect("populate");
    }
    let before = file_fingerprint(dir.path());
    let reason = expect_open_error(dir.path(), "not a cmdb event log");
    assert!(reason.contains("refusing"));
    assert_eq!(file_fingerprint(dir.path()), before, "the foreign file was modified");
}

#[tokio::test]
async fn a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    append_n(&store, "a", 3).await;
    store.shutdown().await;
    drop(store);
    {
        let conn = rusqlite::Connection::open(dir.path().join(LOG_FILE_NAME)).expect("open raw");
        conn.execute_batch("PRAGMA user_version = 99").expect("bump format");
    }
    let before = file_fingerprint(dir.path());
    expect_open_error(dir.path(), "newer cmdb (log format 99");
    assert_eq!(file_fingerprint(dir.path()), before);
}

#[tokio::test]
async fn a_corrupted_file_is_refused_and_left_untouched() {
    // Damaged pages in the middle.
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    for n in 0..40 {
        let payload = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(2000));
        store
            .append(AppendRequest::single(
                stream("a"),
                ExpectedVersion::Any,
                vec![NewEvent::raw("t.x", payload, metadata())],
            ))
            .await
            .expect("append");
    }
    store.shutdown().await;
    drop(store);
    let path = dir.path().join(LOG_FILE_NAME);
    let mut bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 8 * 4096);
    for byte in &mut bytes[3 * 4096 + 100..5 * 4096] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("damage");
    let before = file_fingerprint(dir.path());
    expect_open_error(dir.path(), "corrupt");
    assert_eq!(file_fingerprint(dir.path()), before);

    // Not a database at all.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join(LOG_FILE_NAME), b"this is not a database, it is a text file\n".repeat(200))
        .expect("write");
    let before = file_fingerprint(dir.path());
    expect_open_error(dir.path(), "not a SQLite database");
    assert_eq!(file_fingerprint(dir.path()), before);
}

#[tokio::test]
async fn a_tampered_tail_is_refused_unless_opening_for_verification() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    append_n(&store, "a", 10).await;
    let path = store.path().to_path_buf();
    store.shutdown().await;
    drop(store);
    SqliteTamper::new(&path).flip_data_byte(10);
    expect_open_error(dir.path(), "does not match its hash");
    let store = SqliteStore::open(dir.path(), SqliteOptions { verify_tail_on_open: false, ..SqliteOptions::default() })
        .expect("a verifier may open it");
    let report = store.verify().await.expect("verify");
    assert_eq!(report.first_break.expect("break").position(), 10);
}

#[tokio::test]
async fn an_unusable_data_directory_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("write");
    expect_open_error(&file, "not a directory");
    expect_open_error(&file.join("sub"), "cannot create the data directory");
    assert_eq!(std::fs::read(&file).expect("read"), b"x");

    // A directory without write permission (meaningful only when not running as root).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let probe = locked.join("probe");
    if std::fs::write(&probe, b"").is_ok() {
        println!("SKIPPED read-only directory case: this user (root?) can write to a 0500 directory");
        let _ = std::fs::remove_file(&probe);
    } else {
        let result = SqliteStore::open(&locked, SqliteOptions::default());
        assert!(matches!(result, Err(StoreError::Open { .. })), "expected an open error");
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).expect("chmod back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_fails_appends_cleanly_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let options = SqliteOptions { max_page_count: Some(48), ..SqliteOptions::default() };
    let store = Arc::new(SqliteStore::open(dir.path(), options).expect("open"));
    let payload = |n: u64| format!("{{\"n\":{n},\"pad\":\"{}\"}}", "f".repeat(1500));
    let mut acknowledged = Vec::new();
    let mut full = None;
    for n in 0..1000u64 {
        let request = AppendRequest::single(
            stream("fill"),
            ExpectedVersion::Any,
            vec![NewEvent::raw("t.fill", payload(n), metadata())],
        );
        match store.append(request).await {
            Ok(outcome) => acknowledged.push(outcome.first_position),
            Err(error) => {
                full = Some(error);
                break;
            }
        }
    }
    let error = full.expect("the capped file fills up");
    assert!(matches!(error, StoreError::StorageFull(_)), "{error}");
    assert!(error.to_string().contains("nothing from this append was written"));
    let log = whole_log(store.as_ref()).await;
    assert_eq!(log.iter().map(|r| r.position).collect::<Vec<_>>(), acknowledged, "every acknowledged event is there");
    assert!(store.verify().await.expect("verify").is_intact());

    // Concurrent appends against the full file: each fails clearly, none is half-written.
    let mut tasks = Vec::new();
    for n in 0..16u64 {
        let store = store.clone();
        let request = AppendRequest::single(
            stream(&format!("c{n}")),
            ExpectedVersion::Any,
            vec![NewEvent::raw("t.fill", payload(n), metadata())],
        );
        tasks.push(tokio::spawn(async move { store.append(request).await }));
    }
    let mut later = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(outcome) => later.push(outcome.first_position),
            Err(StoreError::StorageFull(_)) | Err(StoreError::Storage(_)) => {}
            Err(other) => panic!("unexpected error on a full disk: {other}"),
        }
    }
    let log = whole_log(store.as_ref()).await;
    assert_eq!(log.len(), acknowledged.len() + later.len());
    assert!(store.verify().await.expect("verify").is_intact());
    store.shutdown().await;

    // With room again, the same log takes appends.
    let store = open(dir.path());
    append_n(&store, "after", 3).await;
    assert!(store.verify().await.expect("verify").is_intact());
}

#[tokio::test]
async fn a_failed_commit_stops_the_writer_for_good() {
    let dir = tempfile::tempdir().expect("dir");
    let options = SqliteOptions { fail_commit_after_commits: Some(3), ..SqliteOptions::default() };
    let store = SqliteStore::open(dir.path(), options).expect("open");
    append_n(&store, "a", 3).await;
    for attempt in 0..3 {
        let error = store
            .append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(attempt)]))
            .await
            .expect_err("the writer has stopped");
        assert!(matches!(error, StoreError::WriterStopped(ref reason) if reason.contains("COMMIT failed")), "{error}");
        assert!(error.to_string().contains("restarts"), "{error}");
    }
    assert_eq!(whole_log(&store).await.len(), 3, "reads still work; nothing unacknowledged landed");
    store.shutdown().await;
    drop(store);
    let store = open(dir.path());
    append_n(&store, "a", 1).await;
    assert!(store.verify().await.expect("verify").is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_file_never_fork_the_chain() {
    // Two stores on one directory behave as two processes do: separate connections, one file.
    let dir = tempfile::tempdir().expect("dir");
    let first = Arc::new(open(dir.path()));
    let second = Arc::new(open(dir.path()));
    let watcher = cmdb_core::store::subscribe(first.clone(), 0, 50).take(400);
    let collected = tokio::spawn(async move { watcher.map(|r| r.expect("event").position).collect::<Vec<_>>().await });
    let mut tasks = Vec::new();
    for (index, store) in [first.clone(), second.clone()].into_iter().enumerate() {
        for writer in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { append_n(store.as_ref(), &format!("p{index}-w{writer}"), 50).await }));
        }
    }
    let mut acknowledged: Vec<u64> = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("task"));
    }
    acknowledged.sort_unstable();
    assert_eq!(acknowledged, (1..=400).collect::<Vec<_>>());
    for store in [&first, &second] {
        let report = store.verify().await.expect("verify");
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.events_checked, 400);
    }
    // The subscriber on the first store also sees what the second wrote (the poller).
    let seen = tokio::time::timeout(Duration::from_secs(30), collected).await.expect("in time").expect("task");
    assert_eq!(seen, (1..=400).collect::<Vec<_>>());
    // A commit by the other writer becomes visible in the head without any local write.
    let position = append_n(second.as_ref(), "late", 1).await[0];
    assert_eq!(first.refresh_head().await.expect("refresh"), position);
    let mut head = first.watch_head();
    tokio::time::timeout(Duration::from_secs(5), head.wait_for(|h| *h >= position))
        .await
        .expect("published")
        .expect("open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_writing_is_consistent_and_verifies() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(open(dir.path()));
    append_n(store.as_ref(), "seed", 200).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { append_n(store.as_ref(), "during", 300).await })
    };
    let backup_dir = tempfile::tempdir().expect("dir");
    let backup_file: PathBuf = backup_dir.path().join(LOG_FILE_NAME);
    let digest = store.backup_to(&backup_file).await.expect("backup");
    writer.await.expect("writer");
    assert!(digest.position >= 200);
    let err = store.backup_to(&backup_file).await.expect_err("refuses to overwrite");
    assert!(err.to_string().contains("already exists"));

    let restored = open(backup_dir.path());
    let report = restored.verify().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.last_good, digest);
    assert_eq!(store.check_digest(digest).await.expect("check"), cmdb_core::chain::DigestCheck::Matches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_queued_appends_and_ends_subscriptions() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(open(dir.path()));
    let subscription = cmdb_core::store::subscribe(store.clone(), 0, 10);
    let subscriber =
        tokio::spawn(async move { subscription.map(|r| r.expect("event").position).collect::<Vec<_>>().await });
    let mut tasks = Vec::new();
    for n in 0..64u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append(AppendRequest::single(stream(&format!("s{n}")), ExpectedVersion::Any, vec![event(n)])).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.shutdown().await;
    let mut acknowledged = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(outcome) => acknowledged.push(outcome.first_position),
            Err(StoreError::Closed) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    let seen =
        tokio::time::timeout(Duration::from_secs(10), subscriber).await.expect("subscription ends").expect("task");
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1));
    drop(store);
    let reopened = open(dir.path());
    let log = whole_log(&reopened).await;
    acknowledged.sort_unstable();
    assert_eq!(log.iter().map(|r| r.position).collect::<Vec<_>>(), acknowledged, "exactly the acknowledged events");
}

/// The commit record is not in the hash, so `verify` checks on its own that commits tile the
/// log: a row edited to name another commit is reported where it is.
#[tokio::test]
async fn verify_reports_a_commit_record_edited_behind_the_stores_back() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path());
    store
        .append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(1), event(2)]))
        .await
        .expect("append");
    store.append(AppendRequest::single(stream("b"), ExpectedVersion::Any, vec![event(3)])).await.expect("append");
    assert!(store.verify().await.expect("verify").is_intact());
    store.shutdown().await;
    drop(store);
    {
        let conn = rusqlite::Connection::open(dir.path().join(LOG_FILE_NAME)).expect("open raw");
        conn.execute("UPDATE events SET commit_first = 2, commit_size = 1 WHERE position = 2", []).expect("edit");
    }
    let store = open(dir.path());
    let report = store.verify().await.expect("verify");
    let first_break = report.first_break.expect("a break");
    assert!(matches!(first_break, cmdb_core::ChainBreak::Commit { position: 2, .. }), "{first_break}");
    assert_eq!(report.events_checked, 1);
}
