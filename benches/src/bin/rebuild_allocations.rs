//! How many allocations a rebuild of the graph asks for, stage by stage (issue 15, part 6).
//! Times on this machine swing by a third from one run to the next; the number of allocations
//! and the bytes asked for do not, so they show what a change to the decode or the graph saves
//! when its time is lost in the noise. Run on a data directory made with
//! `cmdb fixtures load --size large --data-dir DIR`:
//!
//!     cargo run --release -p cmdb-benches --bin rebuild_allocations -- DIR
//!
//! Each stage runs on one thread, alone, everything held in memory between stages, as in
//! `rebuild_stages`. The counts are what the program asks of the allocator, whichever it is;
//! this one is the system's behind a counter (`stats_alloc` wraps only it in a static), so the
//! times printed are not the server's and are not the figure to compare.

use std::sync::Arc;
use std::time::Instant;

use cmdb_benches::rebuild::{apply_pages, decode_pages, read_pages};
use cmdb_core::EventStore;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};
use std::alloc::System;

/// The system's allocator, counted.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One stage's line: allocations (reallocations counted apart) and bytes, per event.
fn report(stage: &str, events: usize, stats: Stats, seconds: f64) {
    let per_event = |n: usize| n as f64 / events as f64;
    println!(
        "  {stage:<18} {:>7.2} allocations/event, {:>5.2} reallocations/event, {:>7.1} bytes/event allocated, {:>7.1} bytes/event freed  ({seconds:.2} s)",
        per_event(stats.allocations),
        per_event(stats.reallocations),
        per_event(stats.bytes_allocated),
        per_event(stats.bytes_deallocated),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: rebuild_allocations DATA_DIR"))?,
    );
    // Opening a directory without a log would make one: say so instead.
    anyhow::ensure!(dir.join("events.sqlite").is_file(), "no events.sqlite in {}", dir.display());
    let store = Arc::new(SqliteStore::open(&dir, SqliteOptions::default())?);
    let head = store.head().await?.position;

    let mut region = Region::new(ALLOCATOR);
    let started = Instant::now();
    let mut pages = Vec::new();
    read_pages(&store, head, |page| pages.push(page)).await?;
    let events: usize = pages.iter().map(Vec::len).sum();
    anyhow::ensure!(events > 0, "the log in {} is empty", dir.display());
    println!("{events} events, one thread per stage:");
    report("read pages", events, region.change_and_reset(), started.elapsed().as_secs_f64());

    let started = Instant::now();
    let decoded = decode_pages(&pages)?;
    report("decode payloads", events, region.change_and_reset(), started.elapsed().as_secs_f64());

    let started = Instant::now();
    let graph = apply_pages(&pages, decoded)?;
    report("apply to the graph", events, region.change_and_reset(), started.elapsed().as_secs_f64());

    let started = Instant::now();
    drop(pages);
    report("free the records", events, region.change_and_reset(), started.elapsed().as_secs_f64());
    let started = Instant::now();
    drop(graph);
    report("free the graph", events, region.change(), started.elapsed().as_secs_f64());
    Ok(())
}
