//! Where a rebuild of the graph spends its time, stage by stage (issue 15, part 6): reading the
//! log's pages (SQLite and the row decode), decoding the payloads, applying them to the graph,
//! each on one thread and measured alone, everything held in memory between stages. Run on a
//! data directory made with `cmdb fixtures load --size large --data-dir DIR`:
//!
//!     cargo run --release -p cmdb-benches --bin rebuild_stages -- DIR [--runner-only] [--pair]
//!         [--reader-mmap-bytes BYTES] [--page-events N]
//!
//! `--runner-only` times one catch-up through the runner and stops (for a profiler);
//! `--read-only` times only the read stage (for a profiler of the store's reads). `--pair`
//! catches up the graph and the evidence tree from one read, as `cmdb serve` starts.
//! `--reader-mmap-bytes` sets the store's readers' `mmap_size` (0: read with `pread`);
//! `--page-events` the events per page of the catch-up (the runner's default otherwise).

use std::sync::Arc;
use std::time::Instant;

use cmdb_benches::rebuild::{apply_pages, decode_pages, read_pages};
use cmdb_core::EventStore;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_projections::evidence::EvidenceLog;
use cmdb_projections::graph::TemporalGraph;
use cmdb_projections::runner::{RunnerOptions, start, start_pair};

/// The server's allocator (`api/src/main.rs`), so the stages cost what they cost in `cmdb serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Catch-ups through the runner before the stages.
const RUNNER_ROUNDS: usize = 3;

/// User and system CPU of this process so far, in seconds (`/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// What `rebuild_stages` reads from its command line.
#[derive(clap::Parser)]
#[command(about = "Where a rebuild of the graph spends its time, stage by stage")]
struct Args {
    /// The data directory of the estate
    data_dir: std::path::PathBuf,
    /// Time one catch-up through the runner and stop (for a profiler)
    #[arg(long, conflicts_with = "read_only")]
    runner_only: bool,
    /// Time only the read stage (for a profiler of the store's reads)
    #[arg(long)]
    read_only: bool,
    /// Catch up the graph and the evidence tree from one read, as `cmdb serve` starts
    #[arg(long)]
    pair: bool,
    /// The store's readers' `mmap_size` in bytes (0: read with `pread`; the store's default otherwise)
    #[arg(long)]
    reader_mmap_bytes: Option<u64>,
    /// Events per page of the catch-up (the runner's default otherwise)
    #[arg(long)]
    page_events: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { data_dir: dir, runner_only, read_only, pair, reader_mmap_bytes, page_events } = clap::Parser::parse();
    let mut sqlite = SqliteOptions::default();
    if let Some(bytes) = reader_mmap_bytes {
        sqlite.reader_mmap_bytes = bytes;
    }
    let mut runner = RunnerOptions::default();
    if let Some(events) = page_events {
        runner.page_events = events;
    }
    // Opening a directory without a log would make one: say so instead.
    anyhow::ensure!(dir.join("events.sqlite").is_file(), "no events.sqlite in {}", dir.display());
    let store = Arc::new(SqliteStore::open(&dir, sqlite)?);
    let head = store.head().await?.position;
    // The runner's catch-up as `cmdb serve` runs it (no checkpoint), with the CPU it took.
    let rounds = if runner_only {
        1
    } else if read_only {
        0
    } else {
        RUNNER_ROUNDS
    };
    for _ in 0..rounds {
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let graph = if pair {
            // As `cmdb serve` starts: the graph and the evidence tree from one read.
            start_pair::<TemporalGraph, EvidenceLog>(store.clone(), runner.clone()).await?.0
        } else {
            start::<TemporalGraph>(store.clone(), runner.clone()).await?
        };
        let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        println!(
            "runner catch-up: {head} events in {wall:.2} s = {:.0} events/s, {cpu:.2} s of CPU ({:.2} cores busy)",
            head as f64 / wall,
            cpu / wall
        );
        drop(graph);
    }
    if runner_only {
        return Ok(());
    }
    if !read_only {
        // The evidence tree, which `cmdb serve` rebuilds at the same time as the graph.
        let (started, cpu) = (Instant::now(), cpu_seconds());
        let evidence = start::<EvidenceLog>(store.clone(), RunnerOptions::default()).await?;
        let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        println!("evidence catch-up: {head} events in {wall:.2} s, {cpu:.2} s of CPU");
        drop(evidence);
    }
    // Read alone, each page dropped when read (as the runner recycles its memory).
    let started = Instant::now();
    read_pages(store.as_ref(), head, |_| ()).await?;
    let read_streaming = started.elapsed();
    if read_only {
        println!("read pages (SQLite + rows), each dropped: {:.2} s", read_streaming.as_secs_f64());
        return Ok(());
    }
    let started = Instant::now();
    let mut pages = Vec::new();
    read_pages(store.as_ref(), head, |page| pages.push(page)).await?;
    let read = started.elapsed();
    let events: usize = pages.iter().map(Vec::len).sum();
    let started = Instant::now();
    let decoded = decode_pages(&pages)?;
    let decode = started.elapsed();
    let started = Instant::now();
    let graph = apply_pages(&pages, decoded)?;
    let apply = started.elapsed();
    let started = Instant::now();
    drop(pages);
    let free = started.elapsed();
    let rate = |d: std::time::Duration| events as f64 / d.as_secs_f64();
    println!("{events} events, one thread per stage, alone:");
    println!(
        "  read pages (SQLite + rows), each dropped: {:.2} s = {:.0} events/s",
        read_streaming.as_secs_f64(),
        rate(read_streaming)
    );
    println!("  read pages (SQLite + rows), all kept:     {:.2} s = {:.0} events/s", read.as_secs_f64(), rate(read));
    println!("  decode payloads:            {:.2} s = {:.0} events/s", decode.as_secs_f64(), rate(decode));
    println!("  apply to the graph:         {:.2} s = {:.0} events/s", apply.as_secs_f64(), rate(apply));
    println!("  free the records:           {:.2} s = {:.0} events/s", free.as_secs_f64(), rate(free));
    drop(graph);
    Ok(())
}
