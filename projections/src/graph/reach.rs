//! Everything a failure of a set of CIs reaches, with depth and severity, in one pass
//! (issue 15, part 3; CH-2): what a risk assessment reads.
//!
//! [`TemporalGraph::impact`] walks breadth first within its bounds, then runs the severity
//! fixpoint over what it reached. An assessment's walk is unbounded, so the two passes can be
//! one: the worklist of the severity fixpoint, expanding each CI when it is first taken from the queue
//! (with the severity it has by then) and again only if it was raised since. Every CI is first
//! reached by a first expansion (a later one finds its neighbours reached already), and first
//! expansions run in the order CIs were first reached, so that order is breadth first and the
//! depth recorded at a CI's first arrival is its least depth. A CI is expanded at most twice
//! (severities only rise, none to degraded to down), so the work is linear in the
//! relationships crossed. CIs are taken from the queue sixteen at a time so that their hop
//! lists are looked up together (their cache misses overlap), then expanded one by one in that
//! order, each with the severity it has when its turn comes: the same order and the same
//! expansions as one at a time. The property tests hold its severities equal to an independent
//! fixpoint and its depths equal to an independent breadth-first walk.

use std::collections::VecDeque;

use cmdb_core::ci::CiId;
use fixedbitset::FixedBitSet;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::NodeIndexable;
use rustc_hash::FxHashMap;

use super::head_hops::target;
use super::hops::Hop;
use super::severity::arriving;
use super::visits::Visits;
use super::{GraphError, ImpactDirection, Reached, Severity, TemporalGraph};

/// A business service a failure reaches: what an assessment sorts by, without the snapshot
/// (for the services listed in full the caller reads it; thousands are only briefed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceReached {
    /// The service.
    pub id: CiId,
    /// Its `criticality_tier` at the position ([`criticality_tier`](super::criticality_tier)).
    pub tier: Option<u8>,
    /// Least number of relationships from a failed CI.
    pub depth: u32,
    /// How badly it is hit.
    pub severity: Severity,
    /// Its node in the graph that reached it, for reading its version there
    /// (`TemporalGraph::service_version`).
    pub(crate) node: NodeIndex,
}

/// What a failure of a set of CIs reaches, the failed CIs excluded.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// How many CIs.
    pub cis: usize,
    /// The business services among them, in the order reached (nearest first).
    pub services: Vec<ServiceReached>,
}

/// What the walk knows of one CI (12 bytes: 26,000 of them stay in the cache).
struct State {
    node: NodeIndex,
    depth: u32,
    severity: Option<Severity>,
    /// The severity it was last expanded with.
    expanded: Option<Severity>,
}

impl State {
    fn reached(node: NodeIndex, depth: u32, severity: Option<Severity>) -> State {
        State { node, depth, severity, expanded: None }
    }
}

const _: () = assert!(std::mem::size_of::<State>() == 12, "a walk's state per CI stays small");

/// What the walk knows of a redundant group it crossed into from a member (few per walk):
/// its threshold and its members down so far.
struct GroupState {
    threshold: Option<u32>,
    down_members: u32,
}

impl TemporalGraph {
    /// What a failure of `roots` at `position` reaches downstream, however far (roots absent
    /// at `position` are skipped): the count and the business services with their least depth
    /// and severity.
    pub fn reach(&self, roots: &[CiId], position: u64) -> Result<Reach, GraphError> {
        let (states, failed) = self.reach_states(roots, position)?;
        let services = states[failed..]
            .iter()
            .filter(|s| self.is_service_node(s.node))
            .filter_map(|s| {
                let (id, tier) = self.service_id_and_tier(s.node, position)?;
                Some(ServiceReached { id, tier, depth: s.depth, severity: s.severity?, node: s.node })
            })
            .collect();
        Ok(Reach { cis: states.len() - failed, services })
    }

    /// Every CI a failure of `roots` at `position` reaches downstream, however far (the roots
    /// excluded), breadth first, each at its least depth with its severity.
    pub fn reach_all(&self, roots: &[CiId], position: u64) -> Result<Vec<Reached>, GraphError> {
        let (states, failed) = self.reach_states(roots, position)?;
        Ok(states[failed..]
            .iter()
            .filter_map(|s| {
                let ci = self.present(s.node, position)?.clone();
                Some(Reached { ci, depth: s.depth, severity: s.severity })
            })
            .collect())
    }

    /// The walk: the failed roots first (the count returned), then every CI reached in the
    /// order first reached. At a position the head index covers, the hops come from it (no
    /// interval or presence to check); at a position in an epoch of past hops, from its list
    /// for the CIs whose hops hold through it; elsewhere from the hops of every position.
    fn reach_states(&self, roots: &[CiId], position: u64) -> Result<(Vec<State>, usize), GraphError> {
        self.check_position(position)?;
        let head = self.head_hops.as_ref().filter(|index| index.covers(position));
        let epoch = if head.is_none() { self.past_epoch_at(position) } else { None };
        let node_bound = self.graph.node_bound();
        let mut walk = Walk {
            slots: Visits::new(node_bound),
            seen: FixedBitSet::with_capacity(node_bound),
            down: FixedBitSet::with_capacity(node_bound),
            states: Vec::new(),
            groups: FxHashMap::default(),
            queue: VecDeque::new(),
            graph: self,
            position,
        };
        for root in roots {
            if let Some(&node) = self.cis.get(root)
                && self.alive_at(node, position)
                && walk.slots.insert(node, walk.states.len() as u32).is_none()
            {
                walk.queue.push_back(walk.states.len() as u32);
                walk.states.push(State::reached(node, 0, Some(Severity::Down)));
                mark(&mut walk.seen, node);
                mark(&mut walk.down, node);
            }
        }
        let failed = walk.states.len();
        // Each CI enters the queue at most three times (its first arrival and two rises).
        while !walk.queue.is_empty() {
            // The next CIs in the queue, with their hop lists looked up (and their first
            // entries read) together: the cache misses of up to `LOOKAHEAD` lists overlap
            // instead of coming one after the other (two per CI were half the walk's time). The
            // CIs are then expanded in queue order, each as it stands when its turn comes.
            let mut batch: [(u32, HopList); LOOKAHEAD] = [(0, HopList::Head(&[])); LOOKAHEAD];
            let count = walk.queue.len().min(LOOKAHEAD);
            for entry in &mut batch[..count] {
                let slot = walk.queue.pop_front().unwrap_or_default();
                let node = walk.states[slot as usize].node;
                let list = match (head, epoch.and_then(|epoch| epoch.list(node))) {
                    (Some(index), _) => HopList::Head(index.of(node)),
                    (None, Some(list)) => HopList::Head(list),
                    (None, None) => HopList::Every(self.hops.of(node, ImpactDirection::Downstream)),
                };
                list.touch();
                *entry = (slot, list);
            }
            for &(slot, list) in &batch[..count] {
                walk.expand(slot, list);
            }
        }
        debug_assert!(walk.states.iter().all(|s| s.severity.is_some()), "every CI reached has a severity");
        Ok((walk.states, failed))
    }
}

/// A walk under way: what it knows of each CI reached, and the CIs to expand.
struct Walk<'a> {
    slots: Visits,
    /// The CIs reached, and those of them down, a bit per node: most hops lead to a CI reached
    /// before by a failure no worse than the one arriving, which changes nothing, and these
    /// answer that from 2 x 12 KB on the large estate (it stays in the L1 cache) instead of
    /// the slot array (384 KB, a cache miss per hop).
    seen: FixedBitSet,
    down: FixedBitSet,
    states: Vec<State>,
    /// The groups crossed into from a member, by slot.
    groups: FxHashMap<u32, GroupState>,
    queue: VecDeque<u32>,
    graph: &'a TemporalGraph,
    position: u64,
}

/// How many CIs of the queue a walk looks up together.
const LOOKAHEAD: usize = 16;

/// A CI's hops as a walk reads them: from the head index or an epoch of past hops (valid at
/// the walk's position, into CIs present there), or every hop ever made, to check against the
/// position.
#[derive(Clone, Copy)]
enum HopList<'a> {
    Head(&'a [u32]),
    Every(&'a [Hop]),
}

impl HopList<'_> {
    /// Reads the first entry, so that its cache miss is under way before the walk needs it.
    #[inline]
    fn touch(self) {
        match self {
            HopList::Head(list) => {
                std::hint::black_box(list.first().copied());
            }
            HopList::Every(list) => {
                std::hint::black_box(list.first().map(|h| h.from));
            }
        }
    }
}

impl Walk<'_> {
    /// Expands the CI in `slot` (whose hops are `list`) if its severity rose since it was last
    /// expanded.
    #[inline]
    fn expand(&mut self, slot: u32, list: HopList) {
        let State { depth, severity, expanded, .. } = self.states[slot as usize];
        let Some(severity) = severity else { return };
        if expanded.is_some_and(|e| e >= severity) {
            return;
        }
        self.states[slot as usize].expanded = Some(severity);
        let (graph, position) = (self.graph, self.position);
        match list {
            HopList::Head(list) => {
                for &entry in list {
                    let (to, into_group) = target(entry);
                    self.cross(to, into_group, depth + 1, severity);
                }
            }
            HopList::Every(list) => {
                for hop in list.iter().filter(|hop| hop.valid_at(position)) {
                    // A settled CI needs no presence check: the hop is valid, so it is present.
                    if self.seen.contains(hop.to.index()) || graph.settled(hop.to) || graph.alive_at(hop.to, position) {
                        debug_assert!(graph.alive_at(hop.to, position), "only CIs present are crossed into");
                        self.cross(hop.to, hop.into_group, depth + 1, severity);
                    }
                }
            }
        }
    }

    /// A failure of `severity` crosses a hop into `to` (present at the position), at `depth`
    /// if it is the first to arrive there.
    #[inline]
    fn cross(&mut self, to: NodeIndex, into_group: bool, depth: u32, severity: Severity) {
        // Nothing changes for a CI reached before if it is down, or if the failure arriving is
        // only degraded: its severity is at least that already, and a group's count of down
        // members moves only with a failure that is down (once a group has enough, it was
        // made down by the arrival that counted the last).
        let seen = self.seen.contains(to.index());
        if seen && (severity == Severity::Degraded || self.down.contains(to.index())) {
            return;
        }
        let other = if seen {
            self.slots.get(to).unwrap_or_default() as usize
        } else {
            // A first arrival: the slot array is written, not read (the bit said it is unseen).
            self.slots.insert_unseen(to, self.states.len() as u32);
            self.states.push(State::reached(to, depth, None));
            mark(&mut self.seen, to);
            self.states.len() - 1
        };
        let arrives = if into_group {
            let (graph, position) = (self.graph, self.position);
            let group = self
                .groups
                .entry(other as u32)
                .or_insert_with(|| GroupState { threshold: graph.group_threshold(to, position), down_members: 0 });
            arriving(severity, group.threshold, &mut group.down_members)
        } else {
            severity
        };
        if self.states[other].severity.is_none_or(|s| s < arrives) {
            self.states[other].severity = Some(arrives);
            self.queue.push_back(other as u32);
            if arrives == Severity::Down {
                mark(&mut self.down, to);
            }
        }
    }
}

/// Sets `node`'s bit (the sets are sized to the graph's node bound; a node beyond grows them).
#[inline]
fn mark(bits: &mut FixedBitSet, node: NodeIndex) {
    if node.index() >= bits.len() {
        bits.grow(node.index() + 1);
    }
    bits.insert(node.index());
}
