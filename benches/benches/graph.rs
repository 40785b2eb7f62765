//! The temporal graph on the medium estate (~10,000 CIs, ~115,000 events): an as-of read of
//! one CI at a random past position, and downstream impact to depth 6 at a random past
//! position. Means here; p99 from `cargo run --release -p cmdb-benches --bin graph_latency`.

use cmdb_benches::{all_ci_ids, medium_graph, registered};
use cmdb_projections::graph::{ImpactDirection, Traversal};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

fn graph(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let graph = medium_graph(&runtime);
    let ids = all_ci_ids(&graph);
    let head = graph.applied();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("graph_medium");
    group.bench_function("as_of_read_one_ci_random_past_position", |b| {
        b.iter(|| {
            let id = ids[rng.random_range(0..ids.len())];
            let position = rng.random_range(1..=head);
            std::hint::black_box(graph.ci_at(id, position))
        })
    });
    let traversal =
        Traversal { direction: ImpactDirection::Downstream, max_depth: 6, max_results: 10_000, types: None };
    group.bench_function("downstream_impact_depth_6_random_past_position", |b| {
        b.iter(|| {
            let id = ids[rng.random_range(0..ids.len())];
            let position = rng.random_range(registered(&graph, id)..=head);
            std::hint::black_box(graph.impact(id, position, &traversal).ok())
        })
    });
    group.finish();
}

criterion_group!(benches, graph);
criterion_main!(benches);
