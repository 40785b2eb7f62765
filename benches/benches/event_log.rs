//! The event log's throughput on the embedded backend, durable (WAL, synchronous=FULL).
//! Targets (issue 2): append 1 writer x batches of 100 ~500-byte events >= 100,000 events/s;
//! 64 concurrent writers x 1 event >= 20,000 events/s; read of the global log >= 1,000,000
//! decoded events/s; verify >= 500,000 events/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cmdb_benches::bench_event;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{AppendRequest, EventStore, ExpectedVersion, StreamId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENT_BYTES: usize = 500;
const READ_LOG_EVENTS: u64 = 200_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn stream(name: String) -> StreamId {
    StreamId::new(name).expect("valid")
}

fn append_batches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(100));
    group.sample_size(30);
    let mut n = 0u64;
    group.bench_function("1_writer_batch_100x500B", |b| {
        b.iter_custom(|iterations| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iterations {
                    let events = (0..100).map(|i| bench_event(EVENT_BYTES, n + i)).collect();
                    n += 100;
                    store
                        .append(AppendRequest::single(stream(format!("ci-{}", n % 1000)), ExpectedVersion::Any, events))
                        .await
                        .expect("append");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn append_concurrent(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    let mut group = c.benchmark_group("append");
    const WRITERS: u64 = 64;
    group.throughput(Throughput::Elements(WRITERS));
    group.sample_size(30);
    group.bench_function("64_writers_1_event_500B", |b| {
        // One iteration: each of 64 concurrent writers appends one event (to its own stream).
        b.iter_custom(|iterations| {
            rt.block_on(async {
                let started = Instant::now();
                let mut tasks = Vec::with_capacity(WRITERS as usize);
                for writer in 0..WRITERS {
                    let store = store.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..iterations {
                            store
                                .append(AppendRequest::single(
                                    stream(format!("writer-{writer}")),
                                    ExpectedVersion::Any,
                                    vec![bench_event(EVENT_BYTES, i)],
                                ))
                                .await
                                .expect("append");
                        }
                    }));
                }
                for task in tasks {
                    task.await.expect("task");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn populated_store(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir, SqliteOptions::default()).expect("open");
    rt.block_on(async {
        for batch in 0..READ_LOG_EVENTS / 1000 {
            let events = (0..1000).map(|i| bench_event(EVENT_BYTES, batch * 1000 + i)).collect();
            store
                .append(AppendRequest::single(stream(format!("ci-{}", batch % 100)), ExpectedVersion::Any, events))
                .await
                .expect("append");
        }
    });
    store
}

fn read_and_verify(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("dir");
    let store = populated_store(&rt, dir.path());
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(READ_LOG_EVENTS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("read_all_200k_decoded", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut after = 0;
                let mut count = 0u64;
                loop {
                    let page = store.read_all(after, 10_000).await.expect("read");
                    let Some(last) = page.last() else { break };
                    after = last.position;
                    count += page.len() as u64;
                }
                assert_eq!(count, READ_LOG_EVENTS);
            })
        })
    });
    group.bench_function("verify_200k", |b| {
        b.iter(|| {
            rt.block_on(async {
                let report = store.verify().await.expect("verify");
                assert_eq!(report.events_checked, READ_LOG_EVENTS);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, append_batches, append_concurrent, read_and_verify);
criterion_main!(benches);
