//! # cmdb-benches
//!
//! Criterion benchmarks (`cargo bench -p cmdb-benches`), the HTTP load generator, and peer
//! comparisons. No product logic: everything measured is called through the product's public
//! API. Figures and the commands that reproduce them are in BENCHMARKS.md.

pub mod http;
pub mod rebuild;

use cmdb_core::{Actor, Metadata, NewEvent, Source};

/// Prints a latency histogram recorded in nanoseconds, in microseconds.
pub fn report_micros(name: &str, histogram: &hdrhistogram::Histogram<u64>) {
    println!(
        "{name}: {} samples, us: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
        histogram.len(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.9) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.value_at_quantile(0.999) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );
}

/// A realistic event payload of about `bytes` bytes: a CI update with attributes and padding.
pub fn payload_of_about(bytes: usize, n: u64) -> String {
    let head = format!(
        "{{\"ci\":\"host-{n:08}\",\"class\":\"host\",\"attributes\":{{\"os\":\"debian-12\",\"cpu_cores\":8,\"memory_mib\":32768}},\"note\":\""
    );
    let tail = "\"}";
    let fill = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(fill))
}

/// An event carrying [`payload_of_about`].
pub fn bench_event(bytes: usize, n: u64) -> NewEvent {
    NewEvent::raw(
        "ci.updated",
        payload_of_about(bytes, n),
        Metadata::new(Actor::principal("bench"), Source::System).with_correlation_id("bench"),
    )
}

/// The medium estate (~10,000 CIs, six months of history) as a temporal graph, and its log
/// length. Deterministic: the same graph every run.
pub fn medium_graph(runtime: &tokio::runtime::Runtime) -> cmdb_projections::graph::TemporalGraph {
    use cmdb_core::EventStore;
    runtime.block_on(async {
        let spec = cmdb_fixtures::EstateSpec {
            size: cmdb_fixtures::EstateSize::Medium,
            seed: 42,
            end: cmdb_core::Timestamp::from_micros(1_780_000_000_000_000),
            history_days: 180,
        };
        let store = cmdb_fixtures::generate(&spec).await.expect("generate");
        let mut graph = cmdb_projections::graph::TemporalGraph::default();
        let mut after = 0;
        loop {
            let page = store.read_all(after, 10_000).await.expect("read");
            let Some(last) = page.last() else { break };
            after = last.position;
            for record in &page {
                graph.apply(record).expect("apply");
            }
        }
        graph
    })
}

/// Every CI id of a graph at its head, withdrawn included.
pub fn all_ci_ids(graph: &cmdb_projections::graph::TemporalGraph) -> Vec<cmdb_core::ci::CiId> {
    let filter = cmdb_projections::graph::CiFilter { include_withdrawn: true, ..Default::default() };
    graph.cis_at(graph.applied(), &filter, None, usize::MAX).0.iter().map(|c| c.id).collect()
}

/// The position at which a CI was registered.
pub fn registered(graph: &cmdb_projections::graph::TemporalGraph, id: cmdb_core::ci::CiId) -> u64 {
    graph.history(id).and_then(|(versions, _)| versions.first().map(|v| v.from)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_are_json() {
        for size in [200, 500, 1000] {
            let payload = payload_of_about(size, 42);
            assert_eq!(payload.len(), size);
            let _: serde_json_check::Value = serde_json_check::from_str(&payload).expect("json");
        }
    }

    mod serde_json_check {
        pub use serde_json::{Value, from_str};
    }
}
