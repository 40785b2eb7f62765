//! The large estate (issue 5): rebuild of the graph projection from the log, memory per CI
//! version, restart from a checkpoint, as-of reads, impact from random applications, the diff
//! of one simulated day. Run on a data directory made with
//! `cmdb fixtures load --size large --data-dir DIR`:
//!
//!     cargo run --release -p cmdb-benches --bin large_estate -- DIR

use std::sync::Arc;
use std::time::Instant;

use cmdb_core::EventStore;
use cmdb_core::ci::CiClass;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_projections::graph::{CiFilter, ImpactDirection, TemporalGraph, Traversal};
use cmdb_projections::runner::{RunnerOptions, save_checkpoint, start};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

/// The server's allocator (`api/src/main.rs`): the rebuild, the memory and the restart as
/// `cmdb serve` has them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: large_estate DATA_DIR"))?,
    );
    // No mmap: mapped file pages would count in the RSS and hide what the graph takes.
    let store: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(&dir, SqliteOptions { reader_mmap_bytes: 0, ..SqliteOptions::default() })?);
    let head = store.head().await?.position;
    let rss_before = rss_kib();
    let started = Instant::now();
    let graph = start::<TemporalGraph>(store.clone(), RunnerOptions::default()).await?;
    let rebuild = started.elapsed();
    let rss_after = rss_kib();
    let (versions, cis, rels) = graph.read().sizes();
    println!(
        "rebuild from the log: {head} events in {:.2}s = {:.0} events/s ({cis} CIs, {versions} CI versions, {rels} relationships)",
        rebuild.as_secs_f64(),
        head as f64 / rebuild.as_secs_f64()
    );
    println!(
        "memory: RSS {} MiB before, {} MiB after; {:.0} bytes per CI version (all graph memory / versions)",
        rss_before / 1024,
        rss_after / 1024,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / versions as f64
    );

    // Checkpoint, then restart from it.
    let checkpoints = tempfile::tempdir()?;
    let mut saved = 0;
    let saving = Instant::now();
    save_checkpoint(&graph, checkpoints.path(), &mut saved).await.map_err(|e| anyhow::anyhow!(e))?;
    let size = std::fs::metadata(checkpoints.path().join("graph.checkpoint"))?.len();
    println!("checkpoint: written in {:.2}s, {} MiB", saving.elapsed().as_secs_f64(), size / (1024 * 1024));
    let restarting = Instant::now();
    let options = RunnerOptions { checkpoint_dir: Some(checkpoints.path().to_path_buf()), ..RunnerOptions::default() };
    let restarted = start::<TemporalGraph>(store.clone(), options).await?;
    println!(
        "restart from the checkpoint to ready: {:.2}s ({})",
        restarting.elapsed().as_secs_f64(),
        restarted.started_from
    );
    drop(restarted);

    let graph = graph.read();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let all = CiFilter { include_withdrawn: true, ..CiFilter::default() };
    let ids: Vec<_> = graph.cis_at(head, &all, None, usize::MAX).0.iter().map(|c| c.id).collect();
    let apps: Vec<_> = graph
        .cis_at(head, &CiFilter { classes: Some(vec![CiClass::Application]), ..CiFilter::default() }, None, usize::MAX)
        .0
        .iter()
        .map(|c| c.id)
        .collect();
    let registered = |id| graph.history(id).and_then(|(v, _)| v.first().map(|v| v.from)).unwrap_or(1);

    let mut reads = Histogram::<u64>::new(3)?;
    for _ in 0..200_000 {
        let id = ids[rng.random_range(0..ids.len())];
        let position = rng.random_range(registered(id)..=head);
        let t = Instant::now();
        std::hint::black_box(graph.ci_at(id, position));
        reads.record(t.elapsed().as_nanos() as u64)?;
    }
    cmdb_benches::report_micros("as-of read of one CI at a random past position", &reads);

    for max_results in [1_000, 10_000] {
        let traversal = Traversal { direction: ImpactDirection::Downstream, max_depth: 6, max_results, types: None };
        let mut impacts = Histogram::<u64>::new(3)?;
        let (mut reached, mut truncated) = (0usize, 0usize);
        for _ in 0..2_000 {
            let id = apps[rng.random_range(0..apps.len())];
            let position = rng.random_range(registered(id)..=head);
            let t = Instant::now();
            let impact = graph.impact(id, position, &traversal);
            impacts.record(t.elapsed().as_nanos() as u64)?;
            if let Ok(impact) = impact {
                reached += impact.reached.len();
                truncated += usize::from(impact.truncated);
            }
        }
        cmdb_benches::report_micros(
            &format!(
                "downstream impact to depth 6 (max_results {max_results}) from a random application at a random past position"
            ),
            &impacts,
        );
        println!("mean CIs reached: {:.0}; truncated: {truncated} of 2000", reached as f64 / 2_000.0);
    }

    let mut diffs = Histogram::<u64>::new(3)?;
    let last = graph.time_of(head).expect("time");
    let mut entries = 0usize;
    for day in 1..=30i64 {
        let end = last.saturating_add_micros(-day * 86_400_000_000);
        let (from, to) = (graph.position_at(end.saturating_add_micros(-86_400_000_000))?, graph.position_at(end)?);
        let t = Instant::now();
        let diff = graph.diff(from, to, None)?;
        diffs.record(t.elapsed().as_nanos() as u64)?;
        entries += diff.cis.len() + diff.relationships.len();
    }
    cmdb_benches::report_micros("diff of one simulated day (30 different days)", &diffs);
    println!("mean entries per day: {:.0}", entries as f64 / 30.0);
    Ok(())
}
