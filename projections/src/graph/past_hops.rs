//! The hops a failure takes at past positions, one flat array per stretch of the log (issue
//! 15, part 3; CH-2).
//!
//! A walk at a position before the head index holds reads every hop ever made from each CI it
//! reaches and checks each hop's interval and target's presence: on the large estate that is
//! about twice the time of the same walk at the head, where the lists hold only what is valid.
//! Most CIs' hops do not change within a stretch of tens of thousands of positions. So the
//! log up to where the index is built is cut into epochs, and each epoch keeps, for every CI
//! whose hops stay the same through it, the downstream hops valid throughout it into CIs
//! present throughout it (one `u32` per hop, as in the head index), and a bit for the CIs
//! whose hops or targets change within it. A walk at a position in an epoch reads a CI's
//! epoch list when it has one, and the hops of every position only for the others.
//!
//! Invariant: for every epoch `[start, end)` and every node without its `varies` bit, the
//! node's list is, in the order [`Hops`](super::hops::Hops) keeps them, exactly the hops
//! valid at every position of the epoch; each leads into a CI present at every position of
//! the epoch; and no other hop of the node is valid anywhere in it. Epochs end at or before the
//! position the graph had applied when they were built, and an event at a later position only
//! closes hops and ends presences after that, or starts new ones, so an epoch never changes
//! once built. Built with the head index once the log is caught up, dropped with it when
//! derived state is rebuilt; not stored in checkpoints.

use fixedbitset::FixedBitSet;
use petgraph::stable_graph::NodeIndex;

/// The fewest positions an epoch spans.
pub const PAST_HOPS_MIN_EPOCH_POSITIONS: u64 = 65_536;
/// The most epochs kept (a longer log gets longer epochs). Each holds an offset per CI and an
/// entry per hop: about 0.8 MB on the large estate (44 epochs, 36 MB).
pub const PAST_HOPS_MAX_EPOCHS: usize = 64;

/// One stretch of the log and the hops that hold through it.
#[derive(Clone, Debug)]
pub(crate) struct Epoch {
    /// The first position it covers.
    start: u64,
    /// The first position after it.
    end: u64,
    /// `targets[offsets[n]..offsets[n + 1]]` are the hops of node `n` (empty where it varies).
    offsets: Vec<u32>,
    /// The CI reached, marked as in the head index for a member's hop into its group.
    targets: Vec<u32>,
    /// The nodes whose hops, or whose hops' targets' presence, change within the epoch.
    varies: FixedBitSet,
}

impl Epoch {
    /// The epochs of `bounds` (each `[start, end)`) for nodes `0..node_bound`: `list_of`
    /// appends a node's entries for an epoch and says whether they hold through it (when not,
    /// they are dropped and the node's bit set). Built node by node, every epoch of a node in
    /// turn, so that its hops and their targets' presence are read from memory once, not once
    /// per epoch (44 epochs built one after the other took 370 ms on the large estate).
    fn build_all(
        bounds: &[(u64, u64)],
        node_bound: usize,
        mut list_of: impl FnMut(NodeIndex, u64, u64, &mut Vec<u32>) -> bool,
    ) -> Vec<Epoch> {
        let mut epochs: Vec<Epoch> = bounds
            .iter()
            .map(|&(start, end)| {
                debug_assert!(start < end, "an epoch spans at least one position");
                let mut offsets = Vec::with_capacity(node_bound + 1);
                offsets.push(0);
                Epoch { start, end, offsets, targets: Vec::new(), varies: FixedBitSet::with_capacity(node_bound) }
            })
            .collect();
        for index in 0..node_bound {
            let node = NodeIndex::new(index);
            for epoch in &mut epochs {
                let before = epoch.targets.len();
                if !list_of(node, epoch.start, epoch.end, &mut epoch.targets) {
                    epoch.targets.truncate(before);
                    epoch.varies.insert(index);
                }
                epoch.offsets.push(u32::try_from(epoch.targets.len()).expect("fewer than 2^32 hops"));
            }
        }
        debug_assert!(epochs.iter().all(|epoch| epoch.offsets.len() == node_bound + 1));
        epochs
    }

    /// `node`'s entries valid through the epoch, or `None` when they vary within it (or the
    /// node came after the epoch was built): then the walk reads the hops of every position.
    #[inline]
    pub fn list(&self, node: NodeIndex) -> Option<&[u32]> {
        let index = node.index();
        if self.varies.contains(index) {
            return None;
        }
        let (start, end) = (*self.offsets.get(index)?, *self.offsets.get(index + 1)?);
        Some(&self.targets[start as usize..end as usize])
    }
}

/// The epochs, in order, back to back from position 1.
#[derive(Clone, Debug)]
pub(crate) struct PastHops {
    /// How many positions each epoch spans.
    length: u64,
    epochs: Vec<Epoch>,
}

impl PastHops {
    /// No epochs yet, each to span `length` positions.
    pub fn new(length: u64) -> PastHops {
        PastHops { length: length.max(1), epochs: Vec::new() }
    }

    /// How long each epoch is for a log of `applied` positions cut with epochs of at least
    /// `min_positions`.
    pub fn epoch_positions(applied: u64, min_positions: u64) -> u64 {
        min_positions.max(applied.div_ceil(PAST_HOPS_MAX_EPOCHS as u64)).max(1)
    }

    /// The bounds `[start, end)` of the epochs of `length` positions that end at or before
    /// `applied + 1` (every position up to `applied` is final).
    fn bounds(applied: u64, length: u64) -> impl Iterator<Item = (u64, u64)> {
        let count = applied / length.max(1);
        (0..count).map(move |i| (1 + i * length, 1 + (i + 1) * length))
    }

    /// Adds the epochs that follow the last one and end at or before `last_final + 1`, for
    /// nodes `0..node_bound`, with `list_of` as in [`Epoch::build_all`].
    pub fn grow(
        &mut self,
        last_final: u64,
        node_bound: usize,
        list_of: impl FnMut(NodeIndex, u64, u64, &mut Vec<u32>) -> bool,
    ) {
        let first = self.end();
        let bounds: Vec<(u64, u64)> =
            Self::bounds(last_final, self.length).filter(|(start, _)| *start >= first).collect();
        if bounds.is_empty() {
            return; // no stretch of the log became final since
        }
        self.epochs.extend(Epoch::build_all(&bounds, node_bound, list_of));
        debug_assert!(self.epochs.windows(2).all(|pair| pair[0].end == pair[1].start), "back to back");
    }

    /// The epoch `position` falls in, if any.
    #[inline]
    pub fn epoch_at(&self, position: u64) -> Option<&Epoch> {
        let index = self.epochs.partition_point(|epoch| epoch.end <= position);
        self.epochs.get(index).filter(|epoch| epoch.start <= position)
    }

    /// The first position after the last epoch (1 when there is none).
    pub fn end(&self) -> u64 {
        self.epochs.last().map_or(1, |epoch| epoch.end)
    }

    /// How many epochs there are.
    pub fn len(&self) -> usize {
        self.epochs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cut_the_final_positions_and_a_position_finds_its_own() {
        assert_eq!(PastHops::bounds(10, 4).collect::<Vec<_>>(), vec![(1, 5), (5, 9)], "9 and 10 wait for more");
        assert_eq!(PastHops::bounds(8, 4).collect::<Vec<_>>(), vec![(1, 5), (5, 9)]);
        assert_eq!(PastHops::bounds(3, 4).count(), 0);
        assert_eq!(PastHops::epoch_positions(100, 4), 4);
        assert_eq!(PastHops::epoch_positions(64 * 1_000, 4), 1_000, "at most PAST_HOPS_MAX_EPOCHS");
        assert_eq!(PastHops::bounds(64 * 1_000, 1_000).count(), PAST_HOPS_MAX_EPOCHS);
        // Node 1 varies in the second epoch (its entry dropped); node 0 has one hop into node 1.
        let list_of = |node: NodeIndex, start: u64, _: u64, out: &mut Vec<u32>| {
            out.push(1 - node.index() as u32);
            !(node.index() == 1 && start == 5)
        };
        let mut past = PastHops::new(4);
        past.grow(6, 2, list_of);
        assert_eq!((past.len(), past.end()), (1, 5), "positions 5 and 6 wait for 7 and 8");
        past.grow(6, 2, |_, _, _, _| unreachable!("nothing new became final"));
        past.grow(8, 2, list_of);
        assert_eq!(past.len(), 2);
        assert_eq!(past.end(), 9);
        assert!(past.epoch_at(0).is_none() && past.epoch_at(9).is_none());
        for position in 1..=8 {
            let epoch = past.epoch_at(position).expect("covered");
            assert!(epoch.start <= position && position < epoch.end);
            assert_eq!(epoch.list(NodeIndex::new(0)), Some(&[1u32][..]));
            let second = position >= 5;
            assert_eq!(epoch.list(NodeIndex::new(1)), (!second).then_some(&[0u32][..]), "varies in the second");
            assert_eq!(epoch.list(NodeIndex::new(2)), None, "a node after the build");
        }
    }
}
