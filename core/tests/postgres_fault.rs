//! PostgreSQL going away under load (issue 14): the test initialises a cluster of its own,
//! runs 64 concurrent writers against it, stops it with an immediate shutdown (a crash: no
//! checkpoint, no goodbye to clients) mid-load, starts it again, and checks that
//!
//! * every acknowledged append is in the log at its positions, byte for byte;
//! * nothing is half there: every append in the log is whole, and an append answered with a
//!   definite error is absent (only one answered "outcome unknown" may be either);
//! * the chain verifies, and the same store object resumed appending after the restart (no
//!   process restart).
//!
//! Needs PostgreSQL's server binaries (`initdb`, `pg_ctl`): found under
//! `/usr/lib/postgresql/*/bin` or in `CMDB_PG_BINDIR`. Without them it says it was skipped;
//! under `CI=true` that is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmdb_core::store::postgres::{PostgresOptions, PostgresStore};
use cmdb_core::{Actor, AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Source, StoreError, StreamId};

const WRITERS: u64 = 64;
/// Load before the crash, downtime, and load after the restart.
const LOAD_BEFORE_MS: u64 = 1_500;
const DOWN_MS: u64 = 1_000;
const LOAD_AFTER_MS: u64 = 2_500;

fn bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CMDB_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").is_file() && bin.join("initdb").is_file())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL tool, as the `postgres` user when this test runs as root (the server
/// refuses to run as root).
fn tool(bindir: &Path, name: &str, args: &[&str]) {
    let program = bindir.join(name);
    let output = if running_as_root() {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
    } else {
        Command::new(&program).args(args).output()
    }
    .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{name} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// A throw-away cluster.
struct Cluster {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn init(bindir: PathBuf) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("pgdata");
        if running_as_root() {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().expect("chown");
            assert!(status.success());
        }
        let data_text = data.display().to_string();
        tool(&bindir, "initdb", &["-D", &data_text, "-A", "trust", "-U", "cmdb", "--no-sync"]);
        let cluster = Cluster { bindir, data, port: free_port(), _dir: dir };
        cluster.start();
        cluster
    }

    fn ctl(&self, args: &[&str]) {
        let data = self.data.display().to_string();
        let mut all = vec!["-D", &data];
        all.extend_from_slice(args);
        tool(&self.bindir, "pg_ctl", &all);
    }

    fn start(&self) {
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", self.port);
        let log = self.data.join("server.log").display().to_string();
        self.ctl(&["-o", &options, "-l", &log, "-w", "start"]);
    }

    fn crash(&self) {
        self.ctl(&["-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://cmdb@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let program = self.bindir.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if running_as_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}

fn batch_size(seq: u64) -> u64 {
    1 + seq % 3
}

fn payload(writer: u64, seq: u64, index: u64) -> String {
    format!("{{\"writer\":{writer},\"seq\":{seq},\"index\":{index},\"pad\":\"{}\"}}", "x".repeat(200))
}

#[derive(Debug, Clone)]
enum Answer {
    Acknowledged { first: u64, last: u64 },
    Unknown,
    Refused(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_immediate_shutdown_under_load_loses_no_acknowledged_event() {
    let Some(bindir) = bindir() else {
        let reason = "PostgreSQL's server binaries (initdb, pg_ctl) were not found; set CMDB_PG_BINDIR";
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{reason}; CI=true, so this test must run");
        println!("SKIPPED postgres fault test: {reason}");
        return;
    };
    let cluster = Cluster::init(bindir);
    let options = PostgresOptions { reconnect_backoff_ms: 50, head_poll_ms: 100, ..PostgresOptions::default() };
    let store: Arc<dyn EventStore> = Arc::new(PostgresStore::open(&cluster.url(), options).await.expect("open"));

    let answers: Arc<Mutex<BTreeMap<(u64, u64), Answer>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_millis(LOAD_BEFORE_MS + DOWN_MS + LOAD_AFTER_MS + 2_000);
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, answers) = (store.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("fault-{writer}")).expect("stream");
            let mut seq = 0;
            while Instant::now() < stop_at {
                let events = (0..batch_size(seq))
                    .map(|index| {
                        NewEvent::raw(
                            "fault.appended",
                            payload(writer, seq, index),
                            Metadata::new(Actor::principal(format!("writer-{writer}")), Source::System),
                        )
                    })
                    .collect();
                let answer = match store
                    .append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, events))
                    .await
                {
                    Ok(outcome) => Answer::Acknowledged { first: outcome.first_position, last: outcome.last_position },
                    Err(StoreError::CommitOutcomeUnknown(_)) => Answer::Unknown,
                    Err(other) => {
                        assert!(
                            matches!(other, StoreError::Unavailable(_) | StoreError::Storage(_)),
                            "an outage is answered as retryable: {other}"
                        );
                        assert!(other.is_retryable());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Answer::Refused(other.to_string())
                    }
                };
                answers.lock().expect("answers").insert((writer, seq), answer);
                seq += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(LOAD_BEFORE_MS)).await;
    let before_crash = store.head().await.expect("head").position;
    tokio::task::block_in_place(|| cluster.crash());
    tokio::time::sleep(Duration::from_millis(DOWN_MS)).await;
    tokio::task::block_in_place(|| cluster.start());
    let restarted_at = Instant::now();
    for task in tasks {
        task.await.expect("writer");
    }
    let answers = answers.lock().expect("answers").clone();
    let acknowledged = answers.values().filter(|a| matches!(a, Answer::Acknowledged { .. })).count();
    let unknown = answers.values().filter(|a| matches!(a, Answer::Unknown)).count();
    let refused = answers.values().filter(|a| matches!(a, Answer::Refused(_))).count();
    println!(
        "fault test: {acknowledged} appends acknowledged, {unknown} with unknown outcome, {refused} refused while down; head before the crash {before_crash}"
    );
    assert!(before_crash > 0, "the load ran before the crash");
    assert!(refused + unknown > 0, "the crash was felt by the writers");
    assert!(
        answers.values().any(|a| matches!(a, Answer::Refused(reason) if reason.contains("unavailable"))),
        "writers were told the database was unavailable while it was down"
    );

    // The same store object resumed: appends after the restart were acknowledged.
    let after_restart = store
        .append(AppendRequest::single(
            StreamId::new("fault-after").expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::raw("fault.after", "{}", Metadata::new(Actor::principal("check"), Source::System))],
        ))
        .await
        .expect("the store appends again after PostgreSQL came back, without a restart");
    assert!(restarted_at.elapsed() < Duration::from_secs(60));
    assert!(after_restart.first_position > before_crash);

    let report = store.verify().await.expect("verify");
    assert!(report.is_intact(), "the chain verifies after the crash: {report:?}");
    check_log(store.as_ref(), &answers).await;
    store.shutdown().await;
    drop(cluster);
}

/// Everything acknowledged is there, byte for byte; nothing is half there; nothing refused
/// for certain is there at all.
async fn check_log(store: &dyn EventStore, answers: &BTreeMap<(u64, u64), Answer>) {
    let mut found: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let records = store.read_all(after, 5_000).await.expect("read");
        let Some(last) = records.last() else { break };
        after = last.position;
        for record in records.iter().filter(|r| r.event_type == "fault.appended") {
            let value: serde_json::Value = serde_json::from_slice(&record.data).expect("json");
            let (writer, seq, index) = (
                value["writer"].as_u64().expect("w"),
                value["seq"].as_u64().expect("s"),
                value["index"].as_u64().expect("i"),
            );
            assert_eq!(record.data, payload(writer, seq, index).as_bytes());
            found.entry((writer, seq)).or_default().push((record.position, index));
        }
    }
    for (key, answer) in answers {
        let present = found.get(key);
        match answer {
            Answer::Acknowledged { first, last } => {
                let positions: Vec<u64> =
                    present.expect("an acknowledged append is in the log").iter().map(|p| p.0).collect();
                assert_eq!(
                    positions,
                    (*first..=*last).collect::<Vec<_>>(),
                    "append {key:?} at its acknowledged positions"
                );
            }
            Answer::Refused(reason) => {
                assert!(present.is_none(), "append {key:?} was refused ({reason}) yet is in the log")
            }
            Answer::Unknown => {}
        }
        if let Some(events) = present {
            let indices: Vec<u64> = events.iter().map(|e| e.1).collect();
            assert_eq!(indices, (0..batch_size(key.1)).collect::<Vec<_>>(), "append {key:?} is whole");
        }
    }
    assert!(found.keys().all(|key| answers.contains_key(key)), "every event in the log was sent by a writer");
}
