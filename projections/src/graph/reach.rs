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
//! relationships crossed. The property tests hold its severities equal to an independent
//! fixpoint and its depths equal to an independent breadth-first walk.

use std::collections::VecDeque;

use cmdb_core::ci::CiId;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::NodeIndexable;
use rustc_hash::FxHashMap;

use super::head_hops::target;
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
                Some(ServiceReached { id, tier, depth: s.depth, severity: s.severity? })
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
    /// interval or presence to check); elsewhere from the hops of every position.
    fn reach_states(&self, roots: &[CiId], position: u64) -> Result<(Vec<State>, usize), GraphError> {
        self.check_position(position)?;
        let head = self.head_hops.as_ref().filter(|index| index.covers(position));
        let mut walk = Walk {
            slots: Visits::new(self.graph.node_bound()),
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
            }
        }
        let failed = walk.states.len();
        // Each CI enters the queue at most three times (its first arrival and two rises).
        while let Some(slot) = walk.queue.pop_front() {
            let State { node, depth, severity, expanded, .. } = walk.states[slot as usize];
            let Some(severity) = severity else { continue };
            if expanded.is_some_and(|e| e >= severity) {
                continue;
            }
            walk.states[slot as usize].expanded = Some(severity);
            match head {
                Some(index) => {
                    for &entry in index.of(node) {
                        let (to, into_group) = target(entry);
                        walk.cross(to, into_group, depth + 1, severity);
                    }
                }
                None => {
                    for hop in self.hops_at(node, position, ImpactDirection::Downstream, None) {
                        if walk.slots.contains(hop.to) || self.alive_at(hop.to, position) {
                            walk.cross(hop.to, hop.into_group, depth + 1, severity);
                        }
                    }
                }
            }
        }
        debug_assert!(walk.states.iter().all(|s| s.severity.is_some()), "every CI reached has a severity");
        Ok((walk.states, failed))
    }
}

/// A walk under way: what it knows of each CI reached, and the CIs to expand.
struct Walk<'a> {
    slots: Visits,
    states: Vec<State>,
    /// The groups crossed into from a member, by slot.
    groups: FxHashMap<u32, GroupState>,
    queue: VecDeque<u32>,
    graph: &'a TemporalGraph,
    position: u64,
}

impl Walk<'_> {
    /// A failure of `severity` crosses a hop into `to` (present at the position), at `depth`
    /// if it is the first to arrive there.
    #[inline]
    fn cross(&mut self, to: NodeIndex, into_group: bool, depth: u32, severity: Severity) {
        let other = match self.slots.get(to) {
            Some(other) => other as usize,
            None => {
                self.slots.insert(to, self.states.len() as u32);
                self.states.push(State::reached(to, depth, None));
                self.states.len() - 1
            }
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
        }
    }
}
