//! Impact answers kept between requests (issue 15, part 4).
//!
//! An answer about a past position never changes, and neither does one about any position
//! where the graph has not changed since: [`TemporalGraph::change_counter`] counts the changes
//! up to a position, so (roots, traversal, counter) names one answer for every position with
//! that counter. Dashboards repeat the same impact queries (the hub applications, the services
//! of a team) many times between two changes; each repeat is a lookup instead of a walk. The
//! cache is bounded in bytes ([`IMPACT_CACHE_MAX_BYTES`]), least recently used out first, and
//! reports its hits, misses and size as metrics (`impact_cache_*`).

use std::sync::{Arc, Mutex};

use cmdb_core::ci::{CiId, RelType};
use cmdb_projections::graph::{GraphError, Impact, ImpactDirection, TemporalGraph, Traversal};

/// Most bytes the kept answers may hold (their own, not the CI snapshots they share with the
/// graph). A hub's answer at the default `maxResults` (1,000 CIs) is about 220 KB, so this
/// holds the impacts of about 1,200 hubs; the large estate's server holds 1.3 GB besides.
pub const IMPACT_CACHE_MAX_BYTES: usize = 256 * 1024 * 1024;
/// An answer larger than this share of the bound is not kept (it would push out many others).
const LARGEST_SHARE_OF_BOUND: usize = 8;
/// Most answers kept, whatever their size (bounds the index itself).
const MAX_ENTRIES: usize = 100_000;

/// Which answer: the roots (in the order given), the traversal, and the graph's change counter
/// at the position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    roots: Vec<CiId>,
    direction: ImpactDirection,
    max_depth: u32,
    max_results: usize,
    types: Option<Vec<RelType>>,
    counter: u64,
    /// The graph's redaction count: an answer from before a redaction is never served after.
    redactions: u64,
}

/// Values with their size, least recently used out first once over `max_bytes` or
/// `max_entries`.
struct Kept<K: std::hash::Hash + Eq, V> {
    entries: lru::LruCache<K, (V, usize)>,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> Kept<K, V> {
    fn new(max_bytes: usize, max_entries: usize) -> Self {
        Kept { entries: lru::LruCache::unbounded(), bytes: 0, max_bytes, max_entries }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.entries.get(key).map(|(value, _)| value.clone())
    }

    /// Keeps `value` unless it alone is too large a share of the bound; evicts to fit.
    fn insert(&mut self, key: K, value: V, bytes: usize) {
        if bytes > self.max_bytes / LARGEST_SHARE_OF_BOUND {
            return;
        }
        if let Some((_, old)) = self.entries.put(key, (value, bytes)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        while self.bytes > self.max_bytes || self.entries.len() > self.max_entries {
            let Some((_, (_, freed))) = self.entries.pop_lru() else { break };
            self.bytes -= freed;
        }
        debug_assert!(self.bytes <= self.max_bytes, "the cache stays within its bound");
    }
}

/// The cache: shared by every request of a server.
pub struct ImpactCache {
    kept: Mutex<Kept<Key, Arc<Impact>>>,
}

impl Default for ImpactCache {
    fn default() -> Self {
        ImpactCache::with_bound(IMPACT_CACHE_MAX_BYTES)
    }
}

impl ImpactCache {
    /// A cache holding at most `max_bytes`.
    pub fn with_bound(max_bytes: usize) -> ImpactCache {
        ImpactCache { kept: Mutex::new(Kept::new(max_bytes, MAX_ENTRIES)) }
    }

    /// The impact of `roots` failing together at `position`: kept, or walked and kept. The
    /// answer's own `position` is that of the walk that computed it; the graph is the same at
    /// both.
    pub fn impact(
        &self,
        graph: &TemporalGraph,
        roots: &[CiId],
        position: u64,
        traversal: &Traversal,
    ) -> Result<Arc<Impact>, GraphError> {
        traversal.validate()?;
        graph.check_position(position)?;
        // A root named twice is the same analysis, so the same answer: each once, in order (a
        // single root, the dashboards' case, needs no set).
        let roots: Vec<CiId> = if roots.len() > 1 {
            let mut seen = rustc_hash::FxHashSet::default();
            roots.iter().copied().filter(|id| seen.insert(*id)).collect()
        } else {
            roots.to_vec()
        };
        let key = Key {
            roots: roots.clone(),
            direction: traversal.direction,
            max_depth: traversal.max_depth,
            max_results: traversal.max_results,
            types: traversal.types.clone(),
            counter: graph.change_counter(position),
            redactions: graph.redactions_applied(),
        };
        if let Some(found) = self.lock().get(&key) {
            metrics::counter!("impact_cache_hits_total").increment(1);
            return Ok(found);
        }
        metrics::counter!("impact_cache_misses_total").increment(1);
        let impact = Arc::new(graph.impact_of(&roots, position, traversal)?);
        let bytes = impact.approximate_bytes();
        let mut kept = self.lock();
        kept.insert(key, impact.clone(), bytes);
        metrics::gauge!("impact_cache_bytes").set(kept.bytes as f64);
        metrics::gauge!("impact_cache_entries").set(kept.entries.len() as f64);
        Ok(impact)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept<Key, Arc<Impact>>> {
        // A panic while holding the lock leaves a consistent map (each update is whole).
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_at_and_past_it_least_recently_used_out_first() {
        let mut kept: Kept<u32, u32> = Kept::new(800, 1_000);
        for n in 0..8 {
            kept.insert(n, n, 100);
        }
        assert_eq!((kept.entries.len(), kept.bytes), (8, 800), "exactly at the bound: all kept");
        assert_eq!(kept.get(&0), Some(0), "0 is now the most recently used");
        kept.insert(8, 8, 100);
        assert_eq!((kept.entries.len(), kept.bytes), (8, 800), "past it: one out");
        assert_eq!(kept.get(&1), None, "the least recently used went");
        assert_eq!(kept.get(&0), Some(0));
        kept.insert(9, 9, 101);
        assert_eq!(kept.get(&9), None, "larger than an eighth of the bound: not kept");
        kept.insert(0, 0, 50);
        assert_eq!(kept.bytes, 750, "a value kept again replaces its size");
        let mut few: Kept<u32, u32> = Kept::new(1_000_000, 3);
        for n in 0..5 {
            few.insert(n, n, 1);
        }
        assert_eq!(few.entries.len(), 3, "the count bound holds too");
    }
}
