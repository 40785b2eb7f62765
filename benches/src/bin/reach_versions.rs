//! How often the answer of one CI's failure changes along the log (issue 15 part 3): what an
//! index of the services reached from each CI per position range would have to hold.
//!
//!     cargo run --release -p cmdb-benches --bin reach_versions -- DIR [--cis N] [--positions M]
//!
//! (`--help` lists the flags and their defaults: 20 CIs, 50 positions each.)
//!
//! Takes N random CIs whose failure reaches at least `WIDE_SERVICES` business services at the
//! head (the walks at the p99 of part 3's figure) and, for each, M random positions after its
//! registration. At each position it compares the answer (`TemporalGraph::reach`: the CIs
//! reached, and every service with its depth and severity) with the answer just after the
//! graph's next change. The share of changes that change the answer, times the changes in the
//! CI's life, estimates how many versions of its answer an index would keep. The services'
//! ids alone are compared too (the smallest index: a set of services per range).
//!
//! It also asks whether one hub funnels the widest walks (those reaching at least
//! `VERY_WIDE_CIS` CIs), so that a hub's kept answer could stand for most of each walk: it
//! intersects what `HUB_SAMPLE_CIS` of them reach, walks from each CI of the intersection, and
//! prints how much of each wide walk lies beyond the widest of those.

use std::sync::Arc;
use std::time::Instant;

use cmdb_core::EventStore;
use cmdb_core::ci::CiId;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_projections::graph::{CiFilter, Reach, Severity, TemporalGraph};
use cmdb_projections::runner::{RunnerOptions, start};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A CI whose failure reaches at least this many services at the head counts as wide.
const WIDE_SERVICES: usize = 1_000;
/// Wide CIs whose reach sets are intersected to find a hub: the walks of the p99, reaching
/// at least `VERY_WIDE_CIS` CIs each.
const HUB_SAMPLE_CIS: usize = 50;
const VERY_WIDE_CIS: usize = 20_000;
/// CIs of the intersection whose walks are measured to pick the hub.
const HUB_CANDIDATES: usize = 20_000;

/// The first position after `position` at which the graph holds another change, if any.
fn next_change(graph: &TemporalGraph, position: u64, head: u64) -> Option<u64> {
    let counter = graph.change_counter(position);
    if graph.change_counter(head) == counter {
        return None;
    }
    let (mut low, mut high) = (position, head);
    // Invariant: counter(low) == counter, counter(high) > counter.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if graph.change_counter(middle) == counter { low = middle } else { high = middle }
    }
    Some(high)
}

/// The answer as compared: the CIs reached and each service with depth and severity, sorted.
fn whole(reach: &Reach) -> (usize, Vec<(CiId, u32, Severity)>) {
    let mut services: Vec<_> = reach.services.iter().map(|s| (s.id, s.depth, s.severity)).collect();
    services.sort_unstable();
    (reach.cis, services)
}

fn ids(reach: &Reach) -> Vec<CiId> {
    let mut ids: Vec<CiId> = reach.services.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    ids
}

/// Whether one hub could stand for most of the wide walks (the route of splicing a hub's kept
/// answer into a walk): the CI reached by every wide CI's failure that itself reaches the most,
/// and what each wide walk reaches beyond it.
fn hub_cover(graph: &TemporalGraph, wide: &[CiId], head: u64) -> anyhow::Result<()> {
    let reached = |id: CiId| -> anyhow::Result<std::collections::HashSet<CiId>> {
        Ok(graph.reach_all(&[id], head)?.into_iter().map(|r| r.ci.id).collect())
    };
    let mut sets = Vec::new();
    for id in wide {
        let set = reached(*id)?;
        if set.len() >= VERY_WIDE_CIS {
            sets.push(set);
        }
        if sets.len() == HUB_SAMPLE_CIS {
            break;
        }
    }
    let Some((first, rest)) = sets.split_first() else { return Ok(()) };
    let common: Vec<CiId> = first.iter().filter(|c| rest.iter().all(|s| s.contains(c))).copied().collect();
    let mut best: Option<(usize, CiId)> = None;
    for candidate in common.iter().take(HUB_CANDIDATES) {
        let size = graph.reach(&[*candidate], head)?.cis;
        if best.is_none_or(|(b, _)| size > b) {
            best = Some((size, *candidate));
        }
    }
    let Some((hub_size, hub)) = best else {
        println!("no CI is reached by all {} sampled CIs reaching >= {VERY_WIDE_CIS}", sets.len());
        return Ok(());
    };
    let mut beyond: Vec<usize> = sets.iter().map(|s| s.len().saturating_sub(hub_size + 1)).collect();
    beyond.sort_unstable();
    let sizes: Vec<usize> = sets.iter().map(|s| s.len()).collect();
    println!(
        "{} CIs reached by all {} sampled CIs reaching >= {VERY_WIDE_CIS}; the widest of them ({hub}) reaches {hub_size}; \
         a wide walk reaches {}..{} CIs, of which beyond the hub: median {} p90 {} max {}",
        common.len(),
        sets.len(),
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
        beyond[beyond.len() / 2],
        beyond[beyond.len() * 9 / 10],
        beyond[beyond.len() - 1]
    );
    Ok(())
}

/// What to measure.
#[derive(clap::Parser)]
#[command(about = "How often one wide CI's answer changes along the log")]
struct Args {
    /// The data directory of the estate.
    data_dir: std::path::PathBuf,
    /// Wide CIs to draw.
    #[arg(long, default_value_t = 20)]
    cis: usize,
    /// Random positions per wide CI.
    #[arg(long, default_value_t = 50)]
    positions: usize,
}

/// Draws `wanted` wide CIs at the head and prints how common they are and how alike their
/// answers are.
fn draw_wide(
    graph: &TemporalGraph,
    head: u64,
    wanted: usize,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<Vec<CiId>> {
    let ids_at_head: Vec<CiId> =
        graph.cis_at(head, &CiFilter::default(), None, usize::MAX).0.iter().map(|c| c.id).collect();
    let (mut wide, mut drawn, mut wide_services) = (Vec::new(), 0usize, 0usize);
    let (mut sets, mut answers) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    while wide.len() < wanted {
        let id = *ids_at_head.choose(rng).ok_or_else(|| anyhow::anyhow!("no CIs"))?;
        drawn += 1;
        let reach = graph.reach(&[id], head)?;
        if reach.services.len() >= WIDE_SERVICES {
            wide.push(id);
            wide_services += reach.services.len();
            sets.insert(ids(&reach));
            answers.insert(whole(&reach));
        }
    }
    println!(
        "{} CIs at the head; {:.1} % of them wide, reaching {} services on average; among {wanted} wide CIs: {} distinct sets of services, {} distinct answers",
        ids_at_head.len(),
        100.0 * wanted as f64 / drawn as f64,
        wide_services / wanted.max(1),
        sets.len(),
        answers.len()
    );
    Ok(wide)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { data_dir, cis: wanted_cis, positions } = clap::Parser::parse();
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&data_dir, SqliteOptions::default())?);
    let handle = start::<TemporalGraph>(store, RunnerOptions::default()).await?;
    let graph = handle.read();
    let head = graph.applied();
    let changes = graph.change_counter(head);
    println!("head {head}; {changes} changes to CIs, relationships and redundancy rules");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let started = Instant::now();
    let (mut compared, mut whole_changed, mut ids_changed, mut life_changes) = (0u64, 0u64, 0u64, 0u64);
    let wide = draw_wide(&graph, head, wanted_cis, &mut rng)?;
    hub_cover(&graph, &wide, head)?;
    for id in wide {
        let registered = cmdb_benches::registered(&graph, id);
        life_changes += changes - graph.change_counter(registered);
        for _ in 0..positions {
            // At the head itself there is no next change: such a draw compares nothing.
            let position = rng.random_range(registered..=head);
            let Some(next) = next_change(&graph, position, head) else { continue };
            let (before, after) = (graph.reach(&[id], position)?, graph.reach(&[id], next)?);
            compared += 1;
            whole_changed += u64::from(whole(&before) != whole(&after));
            ids_changed += u64::from(ids(&before) != ids(&after));
        }
    }
    let share = |n: u64| n as f64 / compared.max(1) as f64;
    let per_ci = life_changes as f64 / wanted_cis.max(1) as f64;
    println!(
        "{wanted_cis} wide CIs (>= {WIDE_SERVICES} services at the head), {compared} changes compared, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    println!("changes in a wide CI's life: mean {per_ci:.0}");
    println!(
        "answer changed (CIs, services, depths, severities): {:.1} % of changes, ~{:.0} versions per CI",
        100.0 * share(whole_changed),
        share(whole_changed) * per_ci
    );
    println!(
        "set of services changed: {:.1} % of changes, ~{:.0} versions per CI",
        100.0 * share(ids_changed),
        share(ids_changed) * per_ci
    );
    Ok(())
}
