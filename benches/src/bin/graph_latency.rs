//! Latency percentiles of the temporal graph on the medium estate, from an HDR histogram:
//! as-of reads of one CI at random past positions (target p99 <= 20 us) and downstream impact
//! to depth 6 at random past positions (target p99 <= 1 ms).

use std::time::Instant;

use cmdb_benches::{all_ci_ids, medium_graph, registered};
use cmdb_projections::graph::{ImpactDirection, Traversal};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

fn report(name: &str, histogram: &Histogram<u64>) {
    println!(
        "{name}: {} samples, ns: p50 {} p90 {} p99 {} p99.9 {} max {}",
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let graph = medium_graph(&runtime);
    let ids = all_ci_ids(&graph);
    let head = graph.applied();
    let (cis, rels) = graph.counts();
    println!("medium estate: {cis} CIs, {rels} relationships, {head} events, built in {:?}", started.elapsed());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let mut reads = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..200_000 {
        let id = ids[rng.random_range(0..ids.len())];
        let position = rng.random_range(1..=head);
        let start = Instant::now();
        std::hint::black_box(graph.ci_at(id, position));
        reads.record(start.elapsed().as_nanos() as u64).expect("record");
    }
    report("as-of read of one CI at a random past position", &reads);

    let traversal =
        Traversal { direction: ImpactDirection::Downstream, max_depth: 6, max_results: 10_000, types: None };
    let mut impacts = Histogram::<u64>::new(3).expect("histogram");
    let mut reached = 0usize;
    for _ in 0..5_000 {
        let id = ids[rng.random_range(0..ids.len())];
        let position = rng.random_range(registered(&graph, id)..=head);
        let start = Instant::now();
        let impact = graph.impact(id, position, &traversal);
        impacts.record(start.elapsed().as_nanos() as u64).expect("record");
        reached += impact.map(|i| i.reached.len()).unwrap_or(0);
    }
    report("downstream impact to depth 6 at a random past position", &impacts);
    println!("mean CIs reached per impact: {:.1}", reached as f64 / 5_000.0);
}
