//! The event log's raw speed on both backends in one run (issue 14), with their ratio:
//!
//! * append, 1 writer, batches of 100 events of 500 B;
//! * append, 64 writers, one event per append (group commit shares the flushes);
//! * read of the global log, pages of 1,000;
//! * follower lag on PostgreSQL: one store object writes 2,000 events/s (open loop, one event
//!   per append), a second one (its own connections, as another process would have) follows
//!   through a subscription; lag = when the follower sees an event − its commit stamp.
//!
//! `cargo run --release -p cmdb-benches --bin store_load -- --postgres postgres://...`
//! (without `--postgres`, the embedded store only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cmdb_core::conformance::fresh_schema_name;
use cmdb_core::store::postgres::{PostgresOptions, PostgresStore};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::store::subscribe;
use cmdb_core::{Actor, AppendRequest, EventStore, ExpectedVersion, Metadata, NewEvent, Source, StreamId, SystemClock};
use futures::StreamExt;
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
struct Args {
    /// A PostgreSQL database to measure too (a fresh schema is created in it).
    #[arg(long)]
    postgres: Option<String>,
    /// Seconds each append measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events per second the follower-lag writer sends.
    #[arg(long, default_value_t = 2_000)]
    lag_rate: u64,
}

const PAYLOAD_BYTES: usize = 500;
const BATCH_EVENTS: usize = 100;
const CONCURRENT_WRITERS: usize = 64;
const READ_PAGE_EVENTS: usize = 1_000;

fn new_event(n: u64) -> NewEvent {
    let prefix = format!("{{\"n\":{n},\"pad\":\"");
    let pad = "x".repeat(PAYLOAD_BYTES - prefix.len() - 2);
    NewEvent::raw(
        "bench.appended",
        format!("{prefix}{pad}\"}}"),
        Metadata::new(Actor::principal("bench"), Source::System),
    )
}

#[derive(Default, Clone, Copy)]
struct Figures {
    batched_events_per_s: f64,
    concurrent_events_per_s: f64,
    read_events_per_s: f64,
}

async fn batched(store: Arc<dyn EventStore>, seconds: u64) -> anyhow::Result<f64> {
    let stream = StreamId::new("bench-batched")?;
    let (started, mut events, mut n) = (Instant::now(), 0u64, 0u64);
    while started.elapsed() < Duration::from_secs(seconds) {
        let batch = (0..BATCH_EVENTS).map(|_| {
            n += 1;
            new_event(n)
        });
        store.append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, batch.collect())).await?;
        events += BATCH_EVENTS as u64;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn concurrent(store: Arc<dyn EventStore>, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for writer in 0..CONCURRENT_WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("bench-writer-{writer}")).expect("stream");
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                store.append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, vec![new_event(n)])).await?;
                latencies.record(sent.elapsed().as_micros() as u64).ok();
                n += 1;
            }
            Ok::<_, cmdb_core::StoreError>((n, latencies))
        }));
    }
    let mut total = 0;
    let mut latencies = Histogram::<u64>::new(3)?;
    for task in tasks {
        let (n, histogram) = task.await??;
        total += n;
        latencies.add(histogram)?;
    }
    Ok((total as f64 / started.elapsed().as_secs_f64(), latencies.value_at_quantile(0.99) as f64 / 1000.0))
}

async fn read_everything(store: Arc<dyn EventStore>) -> anyhow::Result<f64> {
    let (started, mut after, mut events) = (Instant::now(), 0, 0usize);
    loop {
        let page = store.read_all(after, READ_PAGE_EVENTS).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        events += page.len();
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

async fn measure(name: &str, store: Arc<dyn EventStore>, seconds: u64) -> anyhow::Result<Figures> {
    let batched_events_per_s = batched(store.clone(), seconds).await?;
    println!("{name}: append 1 writer x {BATCH_EVENTS} x {PAYLOAD_BYTES} B: {batched_events_per_s:.0} events/s");
    let (concurrent_events_per_s, concurrent_p99_ms) = concurrent(store.clone(), seconds).await?;
    println!(
        "{name}: append {CONCURRENT_WRITERS} writers x 1 event: {concurrent_events_per_s:.0} events/s, p99 {concurrent_p99_ms:.1} ms"
    );
    let read_events_per_s = read_everything(store.clone()).await?;
    println!("{name}: read the global log ({} events): {read_events_per_s:.0} events/s", store.head().await?.position);
    Ok(Figures { batched_events_per_s, concurrent_events_per_s, read_events_per_s })
}

async fn follower_lag(url: &str, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let schema = fresh_schema_name();
    let options = || PostgresOptions { schema: schema.clone(), ..PostgresOptions::default() };
    let writer: Arc<dyn EventStore> = Arc::new(PostgresStore::open(url, options()).await?);
    let follower: Arc<dyn EventStore> = Arc::new(PostgresStore::open(url, options()).await?);
    let total = rate * seconds;
    let mut events = subscribe(follower.clone(), 0, 1_000);
    let watcher = tokio::spawn(async move {
        let mut lag = Histogram::<u64>::new(3).expect("histogram");
        let mut seen = 0;
        while seen < total {
            let Some(Ok(record)) = events.next().await else { break };
            let now = cmdb_core::Clock::now(&SystemClock);
            lag.record(u64::try_from(now.as_micros() - record.recorded_at.as_micros()).unwrap_or(0)).ok();
            seen += 1;
        }
        lag
    });
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut pending = Vec::new();
    for n in 0..total {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let writer = writer.clone();
        pending.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("lag-{}", n % 64)).expect("stream");
            writer.append(AppendRequest::single(stream, ExpectedVersion::Any, vec![new_event(n)])).await
        }));
    }
    for task in pending {
        task.await??;
    }
    let sent_rate = total as f64 / started.elapsed().as_secs_f64();
    let lag = tokio::time::timeout(Duration::from_secs(30), watcher).await.context("the follower fell behind")??;
    println!(
        "postgres: follower lag at {sent_rate:.0} events/s written ({} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lag.len(),
        lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag.value_at_quantile(0.99) as f64 / 1000.0,
        lag.max() as f64 / 1000.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path(), SqliteOptions::default())?;
    let embedded = measure("sqlite", Arc::new(sqlite.clone()), args.seconds).await?;
    sqlite.shutdown().await;
    let Some(url) = args.postgres else { return Ok(()) };
    let options = PostgresOptions { schema: fresh_schema_name(), ..PostgresOptions::default() };
    let postgres = PostgresStore::open(&url, options).await?;
    let shared = measure("postgres", Arc::new(postgres.clone()), args.seconds).await?;
    postgres.shutdown().await;
    println!(
        "ratio sqlite/postgres: batched {:.2}, 64 writers {:.2}, read {:.2}",
        embedded.batched_events_per_s / shared.batched_events_per_s,
        embedded.concurrent_events_per_s / shared.concurrent_events_per_s,
        embedded.read_events_per_s / shared.read_events_per_s
    );
    follower_lag(&url, args.lag_rate, args.seconds).await
}
