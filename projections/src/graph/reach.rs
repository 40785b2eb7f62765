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
use std::sync::Arc;

use cmdb_core::ci::{CiClass, CiId, CiSnapshot};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::NodeIndexable;

use super::severity::arriving;
use super::visits::Visits;
use super::{GraphError, ImpactDirection, Reached, Severity, TemporalGraph};

/// A business service a failure reaches.
#[derive(Clone, Debug)]
pub struct ServiceReached {
    /// The service at the position.
    pub ci: Arc<CiSnapshot>,
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

/// What the walk knows of one CI.
struct State {
    node: NodeIndex,
    depth: u32,
    severity: Option<Severity>,
    /// The severity it was last expanded with.
    expanded: Option<Severity>,
    /// For a redundant group: its members that are down, and how many must be.
    down_members: u32,
    threshold: Option<Option<u32>>,
}

impl State {
    fn reached(node: NodeIndex, depth: u32, severity: Option<Severity>) -> State {
        State { node, depth, severity, expanded: None, down_members: 0, threshold: None }
    }
}

impl TemporalGraph {
    /// What a failure of `roots` at `position` reaches downstream, however far (roots absent
    /// at `position` are skipped): the count and the business services with their least depth
    /// and severity.
    pub fn reach(&self, roots: &[CiId], position: u64) -> Result<Reach, GraphError> {
        let (states, failed) = self.reach_states(roots, position)?;
        let services = states[failed..]
            .iter()
            .filter(|s| self.class_at(s.node) == Some(CiClass::BusinessService))
            .filter_map(|s| {
                let ci = self.present(s.node, position)?.clone();
                Some(ServiceReached { ci, depth: s.depth, severity: s.severity? })
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
    /// order first reached.
    fn reach_states(&self, roots: &[CiId], position: u64) -> Result<(Vec<State>, usize), GraphError> {
        self.check_position(position)?;
        let mut slots = Visits::new(self.graph.node_bound());
        let mut states: Vec<State> = Vec::new();
        let mut queue: VecDeque<u32> = VecDeque::new();
        for root in roots {
            if let Some(&node) = self.cis.get(root)
                && self.alive_at(node, position)
                && slots.insert(node, states.len() as u32).is_none()
            {
                queue.push_back(states.len() as u32);
                states.push(State::reached(node, 0, Some(Severity::Down)));
            }
        }
        let failed = states.len();
        // Each CI enters the queue at most three times (its first arrival and two rises).
        while let Some(slot) = queue.pop_front() {
            let State { node, depth, severity, expanded, .. } = states[slot as usize];
            let Some(severity) = severity else { continue };
            if expanded.is_some_and(|e| e >= severity) {
                continue;
            }
            states[slot as usize].expanded = Some(severity);
            for hop in self.hops_at(node, position, ImpactDirection::Downstream, None) {
                let other = match slots.get(hop.to) {
                    Some(other) => other as usize,
                    None => {
                        if !self.alive_at(hop.to, position) {
                            continue;
                        }
                        slots.insert(hop.to, states.len() as u32);
                        states.push(State::reached(hop.to, depth + 1, None));
                        states.len() - 1
                    }
                };
                let arrives = if hop.into_group {
                    let group = &mut states[other];
                    let threshold = *group.threshold.get_or_insert_with(|| self.members_to_fail(hop.to, position));
                    arriving(severity, threshold, &mut group.down_members)
                } else {
                    severity
                };
                if states[other].severity.is_none_or(|s| s < arrives) {
                    states[other].severity = Some(arrives);
                    queue.push_back(other as u32);
                }
            }
        }
        debug_assert!(states.iter().all(|s| s.severity.is_some()), "every CI reached has a severity");
        Ok((states, failed))
    }
}
