//! The relationships a failure crosses, per CI, in the compact form the walks read (issue 15,
//! part 3).
//!
//! The graph keeps each relationship once, with its audit trail (who created it, under which
//! change, when it ended), in petgraph's linked edge lists. A walk that follows those lists
//! reads a few hundred bytes per relationship it merely checks and asks the propagation table
//! at every step. Hops are the same relationships seen from the CI a failure leaves: one
//! small entry per direction a failure can travel, laid out contiguously per CI, with the
//! interval of positions it is valid for. The walks of impact, risk and conflict read only
//! these, so a walk over 20,000 CIs stays within a few milliseconds.
//!
//! Invariant: for every relationship and each direction the propagation table lets a failure
//! travel along it, exactly one hop in `down` of the CI the failure leaves and one in `up` of
//! the CI it reaches, with the relationship's own `from`/`to`. Kept by [`Hops::add`] and
//! [`Hops::close`] as relationships are created and removed, and rebuilt from the edges after
//! a checkpoint is loaded (they are not stored).

use cmdb_core::ci::{Propagation, RelType, propagation};
use petgraph::stable_graph::{EdgeIndex, NodeIndex};

use super::ImpactDirection;

/// One way a failure can leave a CI: across `edge` to `to`, while `from <= position < until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hop {
    /// The CI the failure reaches.
    pub to: NodeIndex,
    /// The relationship crossed.
    pub edge: EdgeIndex,
    /// The first position the relationship is valid at.
    pub from: u64,
    /// The position it stops being valid at (`OPEN` while it is).
    pub until: u64,
    /// Its type.
    pub rel_type: RelType,
    /// A member's failure travelling to its group (`part_of`, from the member to the whole):
    /// where redundancy applies.
    pub into_group: bool,
}

impl Hop {
    /// Whether the relationship exists at `position`.
    #[inline]
    pub fn valid_at(&self, position: u64) -> bool {
        self.from <= position && position < self.until
    }
}

/// The hops of every CI, indexed by node, in both directions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hops {
    /// Where a failure of the CI travels (downstream: who depends on it).
    down: Vec<Vec<Hop>>,
    /// What the CI depends on (upstream), the same relationships the other way round.
    up: Vec<Vec<Hop>>,
}

impl Hops {
    /// The hops leaving `node` in `direction`.
    #[inline]
    pub fn of(&self, node: NodeIndex, direction: ImpactDirection) -> &[Hop] {
        let lists = match direction {
            ImpactDirection::Downstream => &self.down,
            ImpactDirection::Upstream => &self.up,
        };
        lists.get(node.index()).map_or(&[], Vec::as_slice)
    }

    fn slot(lists: &mut Vec<Vec<Hop>>, node: NodeIndex) -> &mut Vec<Hop> {
        if lists.len() <= node.index() {
            lists.resize_with(node.index() + 1, Vec::new);
        }
        &mut lists[node.index()]
    }

    /// Records a relationship `source -[rel_type]-> target` valid from `from` to `until`.
    pub fn add(
        &mut self,
        source: NodeIndex,
        target: NodeIndex,
        edge: EdgeIndex,
        rel_type: RelType,
        (from, until): (u64, u64),
    ) {
        for (leaves, reaches) in Self::ways(source, target, rel_type) {
            let into_group = rel_type == RelType::PartOf && leaves == source;
            let down = Hop { to: reaches, edge, from, until, rel_type, into_group };
            Self::slot(&mut self.down, leaves).push(down);
            Self::slot(&mut self.up, reaches).push(Hop { to: leaves, ..down });
        }
    }

    /// The (CI a failure leaves, CI it reaches) pairs of `source -[rel_type]-> target`, one
    /// per direction the propagation table lets a failure travel along it.
    fn ways(source: NodeIndex, target: NodeIndex, rel_type: RelType) -> impl Iterator<Item = (NodeIndex, NodeIndex)> {
        let ways = match propagation(rel_type) {
            Propagation::None => 0..0,
            Propagation::TargetDependsOnSource => 0..1,
            Propagation::Both => 0..2,
            Propagation::SourceDependsOnTarget => 1..2,
        };
        [(source, target), (target, source)].into_iter().take(ways.end).skip(ways.start)
    }

    /// Ends the relationship `edge`, `source -[rel_type]-> target` valid from `from`, at
    /// `position`.
    pub fn close(
        &mut self,
        (source, target): (NodeIndex, NodeIndex),
        edge: EdgeIndex,
        rel_type: RelType,
        from: u64,
        position: u64,
    ) {
        for (leaves, reaches) in Self::ways(source, target, rel_type) {
            Self::close_in(&mut self.down, leaves, edge, from, position);
            Self::close_in(&mut self.up, reaches, edge, from, position);
        }
    }

    /// Ends `edge`'s hops in `node`'s list. Hops are added in position order (the fold, and
    /// a rebuild from the edges in creation order), so a list is sorted by `from` and a
    /// relationship's hops are in the run with its `from`: a hub's removal looks at a few
    /// hops, not its thousands (issue 15, part 6: the whole-list scan was 2.5 % of a
    /// rebuild). A list found unsorted falls back to the whole scan.
    fn close_in(lists: &mut [Vec<Hop>], node: NodeIndex, edge: EdgeIndex, from: u64, position: u64) {
        let Some(hops) = lists.get_mut(node.index()) else { return };
        let start = hops.partition_point(|h| h.from < from);
        let mut found = false;
        for hop in hops[start..].iter_mut().take_while(|h| h.from == from).filter(|h| h.edge == edge) {
            hop.until = hop.until.min(position);
            found = true;
        }
        if !found {
            for hop in hops.iter_mut().filter(|h| h.edge == edge) {
                hop.until = hop.until.min(position);
            }
        }
    }

    /// How many hops there are in each direction (the invariant's check in tests).
    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.down.iter().map(Vec::len).sum(), self.up.iter().map(Vec::len).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_relationship_gives_one_hop_per_way_a_failure_travels_and_closing_ends_them() {
        let (a, b) = (NodeIndex::new(0), NodeIndex::new(1));
        let mut hops = Hops::default();
        // a depends on b: b's failure reaches a.
        hops.add(a, b, EdgeIndex::new(0), RelType::DependsOn, (5, crate::graph::OPEN));
        assert_eq!(hops.len(), (1, 1));
        assert_eq!(hops.of(b, ImpactDirection::Downstream)[0].to, a);
        assert_eq!(hops.of(a, ImpactDirection::Upstream)[0].to, b);
        assert!(hops.of(a, ImpactDirection::Downstream).is_empty());
        // a member part of a group: the member's failure reaches the group, into a group.
        hops.add(a, b, EdgeIndex::new(1), RelType::PartOf, (6, crate::graph::OPEN));
        let into = hops.of(a, ImpactDirection::Downstream);
        assert_eq!((into.len(), into[0].to, into[0].into_group), (1, b, true));
        hops.close((a, b), EdgeIndex::new(0), RelType::DependsOn, 5, 9);
        let ended = hops.of(b, ImpactDirection::Downstream)[0];
        assert!(ended.valid_at(8) && !ended.valid_at(9) && !ended.valid_at(4));
        assert!(!hops.of(a, ImpactDirection::Upstream)[0].valid_at(9), "both ends closed");
        assert!(hops.of(b, ImpactDirection::Upstream)[0].valid_at(9), "only that relationship");
    }

    #[test]
    fn closing_a_hub_relationship_ends_exactly_its_hops_sorted_or_not() {
        let hub = NodeIndex::new(0);
        let mut hops = Hops::default();
        // A hub with 300 dependants, three relationships created per position, then 300
        // more added out of position order (as no fold does): the sorted run and the
        // fallback must both find exactly the relationship closed.
        for i in 0..600_u32 {
            let from = if i < 300 { 10 + u64::from(i / 3) } else { 1_000 - u64::from(i) };
            hops.add(
                NodeIndex::new(i as usize + 1),
                hub,
                EdgeIndex::new(i as usize),
                RelType::DependsOn,
                (from, crate::graph::OPEN),
            );
        }
        for closed in [0_u32, 1, 2, 150, 299, 300, 450, 599] {
            let from = if closed < 300 { 10 + u64::from(closed / 3) } else { 1_000 - u64::from(closed) };
            hops.close(
                (NodeIndex::new(closed as usize + 1), hub),
                EdgeIndex::new(closed as usize),
                RelType::DependsOn,
                from,
                5_000,
            );
        }
        let ended: Vec<usize> = hops
            .of(hub, ImpactDirection::Downstream)
            .iter()
            .filter(|h| !h.valid_at(5_000))
            .map(|h| h.edge.index())
            .collect();
        assert_eq!(ended, vec![0, 1, 2, 150, 299, 300, 450, 599]);
        for closed in [0_usize, 150, 450] {
            let member = hops.of(NodeIndex::new(closed + 1), ImpactDirection::Upstream);
            assert_eq!((member.len(), member[0].until), (1, 5_000), "the other end is closed too");
        }
    }
}
