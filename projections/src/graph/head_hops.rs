//! The hops a failure takes at the head, in one flat array (issue 15, part 3; CH-2).
//!
//! [`Hops`](super::hops::Hops) keep every relationship ever made, with the interval it was
//! valid for, so a walk at any position checks each hop's interval and each CI's presence.
//! Assessments, what-ifs and dashboards walk at the head, and an unbounded walk on the large
//! estate crosses 26,000 CIs, so those checks and the per-CI lists are most of its time. This
//! index holds, for every CI, the downstream hops valid at the head into CIs present there:
//! one `u32` per hop (the CI reached, and whether it is a member's hop into its group), in one
//! array with an offset per CI. A walk at a position from [`HeadHops::valid_from`] on reads
//! it and checks nothing else.
//!
//! Invariant: for every CI, [`HeadHops::of`] lists, in the order [`Hops`](super::hops::Hops)
//! keeps them, the downstream hops valid at every position from `valid_from` to the head whose
//! CI reached is present there. Kept by the graph: a relationship created or removed rewrites
//! the lists of its two ends, a CI appearing or disappearing rewrites the lists that lead to
//! it, and each moves `valid_from` to that position. Rewritten lists live beside the flat
//! arrays until there are more than [`HEAD_HOPS_MAX_REWRITTEN_LISTS`] (or one CI in eight),
//! then the arrays are built again. Built once the log is caught up (a rebuild does not pay
//! for it event by event) and not stored in checkpoints.
//!
//! It also holds each redundant group's threshold (`members_to_fail`) at the head, recomputed
//! by the graph whenever a relationship of the group changes, a member comes or goes, the
//! group is updated, or the schema or a redundancy rule changes; a changed threshold moves
//! `valid_from` like a rewritten list.

use petgraph::stable_graph::NodeIndex;
use rustc_hash::FxHashMap;

/// The bit of an entry that marks a member's hop into its redundant group.
const INTO_GROUP: u32 = 1 << 31;

/// Lists rewritten since the arrays were built, at least, before they are built again (the
/// bound also grows to one CI in eight, so a rebuild costs a few hops per change).
pub const HEAD_HOPS_MAX_REWRITTEN_LISTS: usize = 4_096;

/// The downstream hops valid at the head, per CI (module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadHops {
    /// The first position the lists hold at (every later one, to the head, too).
    valid_from: u64,
    /// `targets[offsets[n]..offsets[n + 1]]` are the hops of node `n`.
    offsets: Vec<u32>,
    /// The CI reached, with [`INTO_GROUP`] set for a member's hop into its group.
    targets: Vec<u32>,
    /// Lists rewritten since the arrays were built.
    rewritten: FxHashMap<u32, Vec<u32>>,
    /// Each redundant group's `members_to_fail`, by node: a group's threshold counts its
    /// members, and counting them on every walk that crossed into a large cluster was a
    /// quarter of an assessment's walk.
    thresholds: FxHashMap<u32, u32>,
}

/// One entry: `to`, marked if the hop leads into a redundant group from a member.
#[inline]
pub(crate) fn entry(to: NodeIndex, into_group: bool) -> u32 {
    let index = u32::try_from(to.index()).unwrap_or(u32::MAX);
    assert!(index < INTO_GROUP, "node indices stay below 2^31");
    index | if into_group { INTO_GROUP } else { 0 }
}

/// The CI an entry reaches and whether it is a hop into a group.
#[inline]
pub(crate) fn target(entry: u32) -> (NodeIndex, bool) {
    (NodeIndex::new((entry & !INTO_GROUP) as usize), entry & INTO_GROUP != 0)
}

impl HeadHops {
    /// The lists of nodes `0..node_bound` as `list_of` writes them, and their thresholds as
    /// `threshold_of` gives them, valid from `valid_from`.
    pub fn build(
        node_bound: usize,
        valid_from: u64,
        mut list_of: impl FnMut(NodeIndex, &mut Vec<u32>),
        mut threshold_of: impl FnMut(NodeIndex) -> Option<u32>,
    ) -> HeadHops {
        let mut offsets = Vec::with_capacity(node_bound + 1);
        let mut targets = Vec::new();
        let mut thresholds = FxHashMap::default();
        offsets.push(0);
        for index in 0..node_bound {
            let node = NodeIndex::new(index);
            list_of(node, &mut targets);
            offsets.push(u32::try_from(targets.len()).expect("fewer than 2^32 hops"));
            if let Some(threshold) = threshold_of(node) {
                thresholds.insert(index as u32, threshold);
            }
        }
        debug_assert_eq!(offsets.len(), node_bound + 1);
        HeadHops { valid_from, offsets, targets, rewritten: FxHashMap::default(), thresholds }
    }

    /// How many of `node`'s members must be down for it to be down, if it is a redundant group.
    #[inline]
    pub fn threshold(&self, node: NodeIndex) -> Option<u32> {
        self.thresholds.get(&(node.index() as u32)).copied()
    }

    /// Sets `node`'s threshold as it is from `position` on; a change moves where the index
    /// holds from.
    pub fn set_threshold(&mut self, node: NodeIndex, threshold: Option<u32>, position: u64) {
        let key = node.index() as u32;
        let old = match threshold {
            Some(value) => self.thresholds.insert(key, value),
            None => self.thresholds.remove(&key),
        };
        if old != threshold {
            debug_assert!(position >= self.valid_from, "the head only moves forward");
            self.valid_from = position;
        }
    }

    /// Whether a walk at `position` (at most the head) may read the lists.
    #[inline]
    pub fn covers(&self, position: u64) -> bool {
        position >= self.valid_from
    }

    /// The first position the lists hold at.
    pub fn valid_from(&self) -> u64 {
        self.valid_from
    }

    /// The entries of `node`'s hops.
    #[inline]
    pub fn of(&self, node: NodeIndex) -> &[u32] {
        let index = node.index();
        if !self.rewritten.is_empty()
            && let Some(list) = self.rewritten.get(&(index as u32))
        {
            return list;
        }
        match (self.offsets.get(index), self.offsets.get(index + 1)) {
            (Some(start), Some(end)) => &self.targets[*start as usize..*end as usize],
            _ => &[],
        }
    }

    /// Replaces `node`'s list with `list`, the lists holding from `position` on.
    pub fn rewrite(&mut self, node: NodeIndex, list: Vec<u32>, position: u64) {
        debug_assert!(position >= self.valid_from, "the head only moves forward");
        self.valid_from = position;
        self.rewritten.insert(node.index() as u32, list);
    }

    /// Whether so many lists were rewritten that the arrays should be built again.
    pub fn needs_rebuild(&self) -> bool {
        let nodes = self.offsets.len().saturating_sub(1);
        self.rewritten.len() > HEAD_HOPS_MAX_REWRITTEN_LISTS.max(nodes / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_read_from_the_arrays_until_rewritten() {
        let lists = [vec![entry(NodeIndex::new(1), false), entry(NodeIndex::new(2), true)], vec![], vec![]];
        let mut index = HeadHops::build(
            3,
            10,
            |node, out| out.extend(&lists[node.index()]),
            |node| (node.index() == 2).then_some(2),
        );
        assert_eq!(index.of(NodeIndex::new(0)), lists[0].as_slice());
        assert_eq!(target(index.of(NodeIndex::new(0))[1]), (NodeIndex::new(2), true));
        assert!(index.of(NodeIndex::new(7)).is_empty(), "a CI registered since has no hops yet");
        assert!(!index.covers(9) && index.covers(10) && index.covers(11));
        index.rewrite(NodeIndex::new(7), vec![entry(NodeIndex::new(0), false)], 12);
        assert_eq!(target(index.of(NodeIndex::new(7))[0]), (NodeIndex::new(0), false));
        assert!(!index.covers(11), "a rewrite moves where the lists hold from");
        assert_eq!((index.threshold(NodeIndex::new(2)), index.threshold(NodeIndex::new(0))), (Some(2), None));
        index.set_threshold(NodeIndex::new(2), Some(2), 13);
        assert!(index.covers(12), "an unchanged threshold does not move it");
        index.set_threshold(NodeIndex::new(2), None, 13);
        assert!(!index.covers(12) && index.threshold(NodeIndex::new(2)).is_none(), "a changed one does");
        assert!(!index.needs_rebuild());
        for n in 0..=HEAD_HOPS_MAX_REWRITTEN_LISTS {
            index.rewrite(NodeIndex::new(n), Vec::new(), 14);
        }
        assert!(index.needs_rebuild(), "past the bound");
    }
}
