//! The stages of a graph rebuild run one after the other on one thread, each alone, for the
//! benches that take them apart (`rebuild_stages` times them, `rebuild_allocations` counts
//! their allocations). The runner overlaps the same stages on several threads.

use cmdb_core::FoldRecord;
use cmdb_core::store::sqlite::SqliteStore;
use cmdb_projections::graph::TemporalGraph;
use cmdb_projections::runner::Projection;

/// Events per read, as the runner reads.
pub const PAGE_EVENTS: usize = cmdb_projections::runner::DEFAULT_PAGE_EVENTS;

/// A page of the graph's decoded payloads, one per record of the page.
pub type DecodedPage = Vec<<TemporalGraph as Projection>::Decoded>;

/// Reads the log up to `head` as folds read it (`read_fold`) in pages of [`PAGE_EVENTS`], one after the other, handing each
/// to `keep`.
pub async fn read_pages(store: &SqliteStore, head: u64, mut keep: impl FnMut(Vec<FoldRecord>)) -> anyhow::Result<()> {
    let mut after = 0;
    while after < head {
        let page = cmdb_core::EventStore::read_fold(store, after, PAGE_EVENTS).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        keep(page);
    }
    Ok(())
}

/// Decodes every page's payloads for the graph.
pub fn decode_pages(pages: &[Vec<FoldRecord>]) -> anyhow::Result<Vec<DecodedPage>> {
    pages
        .iter()
        .map(|page| page.iter().map(TemporalGraph::decode).collect::<Result<_, _>>().map_err(anyhow::Error::msg))
        .collect()
}

/// Applies the decoded pages to a new graph, in the log's order.
pub fn apply_pages(pages: &[Vec<FoldRecord>], decoded: Vec<DecodedPage>) -> anyhow::Result<TemporalGraph> {
    let mut graph = TemporalGraph::default();
    for (page, decoded) in pages.iter().zip(decoded) {
        for (record, decoded) in page.iter().zip(decoded) {
            Projection::apply_decoded(&mut graph, record, decoded).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(graph)
}
