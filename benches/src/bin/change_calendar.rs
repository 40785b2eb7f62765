//! Change control part 3 (issue 8) on the large estate: the conflict check of a new change
//! touching 20 CIs against 10,000 scheduled changes (windows spread over a year, scopes of
//! 1 to 5 random CIs), and the change report for a year by week.
//!
//!     cargo run --release -p cmdb-benches --bin change_calendar -- DIR

use std::sync::Arc;
use std::time::Instant;

use cmdb_core::ci::{ChangeId, CiClass, CiId};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{EventStore, Timestamp};
use cmdb_projections::calendar::{Candidate, DEFAULT_CONFLICT_MAX_DEPTH, conflicts_with};
use cmdb_projections::graph::CiFilter;
use cmdb_projections::reports::{Period, change_report};
use cmdb_projections::runner::{RunnerOptions, start};
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const SCHEDULED: usize = 10_000;
const SCOPE_CIS: usize = 20;
const SAMPLES: usize = 1_000;
const HOUR_US: i64 = 3_600_000_000;

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "{name}: {} samples, ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        histogram.len(),
        histogram.value_at_quantile(0.5) as f64 / 1e6,
        histogram.value_at_quantile(0.9) as f64 / 1e6,
        histogram.value_at_quantile(0.99) as f64 / 1e6,
        histogram.max() as f64 / 1e6
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: change_calendar DATA_DIR"))?,
    );
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&dir, SqliteOptions::default())?);
    let handle = start::<cmdb_projections::graph::TemporalGraph>(store.clone(), RunnerOptions::default()).await?;
    let graph = handle.read();
    let head = graph.applied();
    let now = graph.time_of(head).unwrap_or(Timestamp::from_micros(0));
    let filter = CiFilter {
        classes: Some(vec![
            CiClass::Application,
            CiClass::Database,
            CiClass::Host,
            CiClass::VirtualMachine,
            CiClass::Container,
        ]),
        ..CiFilter::default()
    };
    let candidates: Vec<CiId> = graph.cis_at(head, &filter, None, usize::MAX).0.iter().map(|c| c.id).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    // 10,000 scheduled changes over the coming year, two to six hours each.
    let scheduled: Vec<(ChangeId, String, Timestamp, Timestamp, Vec<CiId>)> = (0..SCHEDULED)
        .map(|n| {
            let start = now.saturating_add_micros(rng.random_range(0..365 * 24) * HOUR_US);
            let end = start.saturating_add_micros(rng.random_range(2..=6) * HOUR_US);
            let count = rng.random_range(1..=5);
            let cis = candidates.choose_multiple(&mut rng, count).copied().collect();
            (ChangeId(uuid::Uuid::from_u128(n as u128 + 1)), format!("CHG-{n:06}"), start, end, cis)
        })
        .collect();
    let mut check = Histogram::<u64>::new(3)?;
    let (mut overlapping, mut found) = (0usize, 0usize);
    for _ in 0..SAMPLES {
        let scope: Vec<CiId> = candidates.choose_multiple(&mut rng, SCOPE_CIS).copied().collect();
        let start = now.saturating_add_micros(rng.random_range(0..365 * 24) * HOUR_US);
        let end = start.saturating_add_micros(3 * HOUR_US);
        let t = Instant::now();
        // As `schedule_facts` does with the book's index: overlapping windows, then the graph.
        let overlaps =
            scheduled.iter().filter(|(_, _, s, e, _)| *s < end && start < *e).map(|(id, label, s, e, cis)| Candidate {
                id: *id,
                label,
                start: *s,
                end: *e,
                cis,
                acknowledged_by_other: false,
            });
        let conflicts = conflicts_with(&graph, head, &scope, overlaps, DEFAULT_CONFLICT_MAX_DEPTH);
        check.record(t.elapsed().as_nanos() as u64)?;
        overlapping += scheduled.iter().filter(|(_, _, s, e, _)| *s < end && start < *e).count();
        found += conflicts.len();
    }
    report("conflict check, 20 CIs against 10,000 scheduled changes", &check);
    println!(
        "mean overlapping windows per check: {:.1}; conflicts found: {found}",
        overlapping as f64 / SAMPLES as f64
    );

    let changes = graph.change_book().len();
    let t = Instant::now();
    let folded = graph.change_book().changes_at(head, &Default::default(), usize::MAX);
    let scope_cis: usize = folded.iter().map(|c| c.details.scope.cis.len()).sum();
    println!(
        "folding every change: {:.1} ms ({} changes, {scope_cis} scope entries)",
        t.elapsed().as_secs_f64() * 1e3,
        folded.len()
    );
    drop(folded);
    let mut weekly = Histogram::<u64>::new(3)?;
    let year_ago = now.saturating_add_micros(-365 * 24 * HOUR_US);
    let mut total = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let report = change_report(&graph, head, year_ago, now, Period::Week, now).map_err(|e| anyhow::anyhow!(e))?;
        weekly.record(t.elapsed().as_nanos() as u64)?;
        total = report.totals.total;
    }
    report(&format!("changeReport, a year by week ({changes} changes in the book, {total} in the year)"), &weekly);
    Ok(())
}
