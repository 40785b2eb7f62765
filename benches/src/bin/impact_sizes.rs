//! How far failures travel on an estate, under the propagation table before and after the
//! review of issue 15 (connects_to both ways -> from the network device to what is connected
//! to it only). Reads a data directory (e.g. the large estate: `cmdb fixtures load --size
//! large`), rebuilds the graph, and at the head walks downstream to depth 6 from 2,000 random
//! CIs and from 500 random sets of 20 CIs (a change's scope), with each table, counting the
//! CIs and business services reached (median, p99, max; how many sets pass 10,000 CIs). The
//! "after" walk is cross-checked against `TemporalGraph::impact` for the single CIs.
//!
//! `cargo run --release -p cmdb-benches --bin impact_sizes -- DATA_DIR`

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use cmdb_core::EventStore;
use cmdb_core::ci::{CiClass, CiId, Propagation, RelType, propagation};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_projections::graph::{CiFilter, ImpactDirection, TemporalGraph, Traversal};
use cmdb_projections::runner::{RunnerOptions, start};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::seq::IndexedRandom;

const DEPTH: u32 = 6;
const SINGLE_SAMPLES: usize = 2_000;
const SET_SAMPLES: usize = 500;
const SET_SIZE: usize = 20;

/// A propagation table: how a failure crosses each relationship type.
type Table = fn(RelType) -> Propagation;

/// The table before the review: connects_to propagated both ways.
fn before(rel_type: RelType) -> Propagation {
    match rel_type {
        RelType::ConnectsTo => Propagation::Both,
        other => propagation(other),
    }
}

/// An upper bound of what redundancy-aware impact (issue 15, part 2) can save: `part_of` not
/// propagating at all (as if every whole were a redundant group that one member's loss only
/// degrades).
fn without_part_of(rel_type: RelType) -> Propagation {
    match rel_type {
        RelType::PartOf => Propagation::None,
        other => propagation(other),
    }
}

/// Who is impacted when a CI fails, per CI (downstream edges).
fn downstream_edges(relationships: &[(RelType, CiId, CiId)], rule: Table) -> HashMap<CiId, Vec<CiId>> {
    let mut edges: HashMap<CiId, Vec<CiId>> = HashMap::new();
    for &(rel_type, source, target) in relationships {
        match rule(rel_type) {
            Propagation::SourceDependsOnTarget => edges.entry(target).or_default().push(source),
            Propagation::TargetDependsOnSource => edges.entry(source).or_default().push(target),
            Propagation::Both => {
                edges.entry(target).or_default().push(source);
                edges.entry(source).or_default().push(target);
            }
            Propagation::None => {}
        }
    }
    edges
}

/// The CIs within `DEPTH` of any root (roots excluded).
fn reach(edges: &HashMap<CiId, Vec<CiId>>, roots: &[CiId]) -> Vec<CiId> {
    let mut depth: HashMap<CiId, u32> = roots.iter().map(|r| (*r, 0)).collect();
    let mut queue: VecDeque<CiId> = roots.iter().copied().collect();
    let mut reached = Vec::new();
    while let Some(ci) = queue.pop_front() {
        let d = depth[&ci];
        if d == DEPTH {
            continue;
        }
        for next in edges.get(&ci).into_iter().flatten() {
            if !depth.contains_key(next) {
                depth.insert(*next, d + 1);
                reached.push(*next);
                queue.push_back(*next);
            }
        }
    }
    reached
}

struct Sizes {
    cis: Histogram<u64>,
    services: Histogram<u64>,
    over_10k: usize,
}

fn measure(
    edges: &HashMap<CiId, Vec<CiId>>,
    samples: &[Vec<CiId>],
    class_of: &dyn Fn(CiId) -> Option<CiClass>,
) -> anyhow::Result<Sizes> {
    let mut sizes = Sizes { cis: Histogram::new(3)?, services: Histogram::new(3)?, over_10k: 0 };
    for roots in samples {
        let reached = reach(edges, roots);
        sizes.cis.record(reached.len() as u64)?;
        sizes
            .services
            .record(reached.iter().filter(|c| class_of(**c) == Some(CiClass::BusinessService)).count() as u64)?;
        sizes.over_10k += usize::from(reached.len() > 10_000);
    }
    Ok(sizes)
}

fn line(what: &str, table: &str, sizes: &Sizes, samples: usize) {
    let q = |h: &Histogram<u64>| {
        format!("median {} p99 {} max {}", h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
    };
    println!(
        "{what}, {table}: CIs reached {}; services reached {}; over 10,000 CIs: {} of {samples}",
        q(&sizes.cis),
        q(&sizes.services),
        sizes.over_10k
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: impact_sizes DATA_DIR"))?,
    );
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&dir, SqliteOptions::default())?);
    let handle = start::<TemporalGraph>(store.clone(), RunnerOptions::default()).await?;
    let graph = handle.read();
    let head = graph.applied();
    let relationships: Vec<(RelType, CiId, CiId)> =
        graph.relationships_at(head, None, None).iter().map(|r| (r.rel_type, r.source, r.target)).collect();
    let live = CiFilter::default();
    let ids: Vec<CiId> = graph.cis_at(head, &live, None, usize::MAX).0.iter().map(|c| c.id).collect();
    println!("estate at position {head}: {} CIs, {} relationships", ids.len(), relationships.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let singles: Vec<Vec<CiId>> = (0..SINGLE_SAMPLES).map(|_| vec![*ids.choose(&mut rng).expect("CIs")]).collect();
    let sets: Vec<Vec<CiId>> =
        (0..SET_SAMPLES).map(|_| ids.choose_multiple(&mut rng, SET_SIZE).copied().collect()).collect();
    let class_of = |ci: CiId| graph.class_of(ci);
    let tables: [(&str, Table); 3] = [
        ("before (connects_to both ways)", before),
        ("after (reviewed table)", propagation),
        ("bound: part_of not propagating", without_part_of),
    ];
    for (table, rule) in tables {
        let edges = downstream_edges(&relationships, rule);
        line("one random CI", table, &measure(&edges, &singles, &class_of)?, SINGLE_SAMPLES);
        line("20 random CIs", table, &measure(&edges, &sets, &class_of)?, SET_SAMPLES);
    }
    // The graph's own walk agrees with the reviewed table.
    let edges = downstream_edges(&relationships, propagation);
    let traversal = Traversal {
        direction: ImpactDirection::Downstream,
        max_depth: DEPTH,
        max_results: cmdb_projections::graph::MAX_RESULTS,
        types: None,
    };
    for roots in singles.iter().take(200) {
        let impact = graph.impact(roots[0], head, &traversal)?;
        if !impact.truncated {
            assert_eq!(impact.reached.len(), reach(&edges, roots).len(), "the graph's impact and the table agree");
        }
    }
    println!("cross-check: TemporalGraph::impact agrees with the reviewed table on 200 roots");
    Ok(())
}
