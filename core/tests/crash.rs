//! Crash safety, for real: a child process appends from many concurrent writers and prints
//! every acknowledged append; the parent kills it with SIGKILL at a random moment, reopens the
//! log, and checks that every acknowledged event is there byte for byte and the chain verifies.
//! Half of the iterations crash the same directory again and again.
//!
//! A custom harness (`harness = false`): the same binary is the parent and, when
//! `CMDB_CRASH_CHILD_DIR` is set, the child. `CMDB_CRASH_ITERATIONS` sets the number of kills
//! (default 30).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{Actor, AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Source, StreamId};
use rand::{Rng, SeedableRng};

const CHILD_DIR_ENV: &str = "CMDB_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "CMDB_CRASH_CHILD_SEED";
const WRITERS: u64 = 32;

/// The payload of event `index` of append `seq` by `writer` in run `run`: regenerable by the
/// parent, about 500 bytes.
fn payload(run: u64, writer: u64, seq: u64, index: u64) -> String {
    format!(
        "{{\"run\":{run},\"writer\":{writer},\"seq\":{seq},\"index\":{index},\"pad\":\"{}\"}}",
        "abcdefghij".repeat(45)
    )
}

fn stream_of(run: u64, writer: u64) -> StreamId {
    StreamId::new(format!("crash-{run}-{writer}")).expect("valid stream id")
}

fn batch_size(seq: u64) -> u64 {
    1 + seq % 5
}

fn child(dir: &str, run: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("child: open"));
        println!("ready");
        let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            let stdout = stdout.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0.. {
                    let events = (0..batch_size(seq))
                        .map(|index| {
                            NewEvent::raw(
                                "crash.appended",
                                payload(run, writer, seq, index),
                                Metadata::new(Actor::principal(format!("writer-{writer}")), Source::System),
                            )
                        })
                        .collect();
                    let expected = if seq == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::StreamExists };
                    let outcome = store
                        .append(AppendRequest::single(stream_of(run, writer), expected, events))
                        .await
                        .expect("child: append");
                    // One write per line, well under PIPE_BUF: a kill never splits a line.
                    let line =
                        format!("ack {run} {writer} {seq} {} {}\n", outcome.first_position, outcome.last_position);
                    let mut out = stdout.lock().expect("stdout");
                    out.write_all(line.as_bytes()).expect("child: write");
                    out.flush().expect("child: flush");
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

struct Ack {
    run: u64,
    writer: u64,
    seq: u64,
    first: u64,
    last: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some(Ack { run: next()?, writer: next()?, seq: next()?, first: next()?, last: next()? })
}

/// Runs one child, kills it after `kill_after`, returns what it acknowledged.
fn crash_once(dir: &Path, run: u64, kill_after: Duration) -> Vec<Ack> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, run.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).filter_map(|line| parse_ack(&line)).collect::<Vec<_>>()
    });
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child"); // std's kill is SIGKILL on Unix
    let status = child.wait().expect("reap child");
    assert!(!status.success(), "the child must have been killed, not have exited: {status}");
    reader.join().expect("reader thread")
}

fn check(dir: &Path, acknowledged: &BTreeMap<u64, (u64, u64, u64, u64)>) -> (u64, u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(dir, SqliteOptions::default()).expect("reopen after SIGKILL");
        let report = store.verify().await.expect("verify");
        assert!(report.is_intact(), "the chain must verify after a crash: {report:?}");
        let head = store.head().await.expect("head").position;
        for (&position, &(run, writer, seq, index)) in acknowledged {
            let record =
                store.event_at(position).await.expect("read").unwrap_or_else(|| {
                    panic!("acknowledged position {position} is missing after SIGKILL (head {head})")
                });
            assert_eq!(record.stream_id, stream_of(run, writer), "position {position}");
            assert_eq!(record.data, payload(run, writer, seq, index).as_bytes(), "position {position}: bytes differ");
            assert_eq!(record.event_type, "crash.appended");
            assert_eq!(record.metadata.actor.principal, format!("writer-{writer}"));
        }
        store.shutdown().await;
        (head, report.events_checked)
    })
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let run = std::env::var(CHILD_SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        child(&dir, run);
        return;
    }
    let iterations: u64 = std::env::var("CMDB_CRASH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
    let shared_dir = tempfile::tempdir().expect("temp dir");
    let mut shared_acknowledged: BTreeMap<u64, (u64, u64, u64, u64)> = BTreeMap::new();
    let mut total_acknowledged = 0usize;
    for run in 0..iterations {
        let reuse = run % 2 == 1;
        let fresh_dir = tempfile::tempdir().expect("temp dir");
        let dir = if reuse { shared_dir.path() } else { fresh_dir.path() };
        // Mostly mid-load; sometimes during start-up or the very first appends.
        let kill_after = Duration::from_millis(if rng.random_bool(0.2) {
            rng.random_range(0..30)
        } else {
            rng.random_range(30..400)
        });
        let acks = crash_once(dir, run, kill_after);
        let mut acknowledged = if reuse { std::mem::take(&mut shared_acknowledged) } else { BTreeMap::new() };
        for ack in &acks {
            assert_eq!(ack.last - ack.first + 1, batch_size(ack.seq), "a batch's positions are contiguous");
            for (index, position) in (ack.first..=ack.last).enumerate() {
                let previous = acknowledged.insert(position, (ack.run, ack.writer, ack.seq, index as u64));
                assert!(previous.is_none(), "position {position} acknowledged twice");
            }
        }
        total_acknowledged += acks.len();
        let (head, checked) = check(dir, &acknowledged);
        println!(
            "crash run {run}: killed after {kill_after:?} ({}), {} appends acknowledged, head {head}, verified {checked} events",
            if reuse { "same directory as earlier runs" } else { "fresh directory" },
            acks.len()
        );
        if reuse {
            shared_acknowledged = acknowledged;
        }
    }
    println!(
        "crash test passed: {iterations} SIGKILLs, {total_acknowledged} acknowledged appends all present byte for byte, in {:?}",
        started.elapsed()
    );
}
