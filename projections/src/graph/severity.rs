//! How badly a failure reaches each CI (issue 15; CM-2, CH-2): `DOWN` or `DEGRADED`.
//!
//! The failed CIs are down. A failure crosses a relationship in the direction of the
//! propagation table with the severity it has, except into a **redundant group** (a CI of a
//! class declared redundant: a cluster, a pool, a replica set) from one of its members (a CI
//! `part_of` it): the group is down only when `members_to_fail` of its members are down (all
//! of them when the attribute is absent, or when it names more members than the group has),
//! and degraded while any member is down or degraded. Degraded travels on as degraded.
//!
//! The result is the least fixpoint of those rules over the CIs a walk reached: severities
//! only rise (none, degraded, down), so each CI is raised at most twice and the work is
//! linear in the relationships crossed. Each CI remembers the neighbour that last raised it:
//! following those links back gives the chain along which the failure arrived with that
//! severity (for a group brought down, through the member that reached the threshold).

use std::collections::VecDeque;

use cmdb_core::ci::schema::MEMBERS_TO_FAIL;
use cmdb_core::ci::{CiClass, RelType};
use petgraph::stable_graph::{EdgeIndex, NodeIndex};
use petgraph::visit::NodeIndexable;
use rustc_hash::FxHashMap;

use cmdb_core::ci::CiId;

use super::visits::Visits;
use super::{GraphError, ImpactDirection, MAX_SEVERITY_CHAIN_STEPS, Step, TemporalGraph};

pub use cmdb_core::model::Severity;

/// Each reached CI's severity and the neighbour (and relationship) that raised it; the
/// failed CIs have no cause. Dense: a slot per CI raised, found through [`Visits`].
pub(crate) struct Severities {
    slots: Visits,
    raised: Vec<(Severity, Option<(NodeIndex, EdgeIndex)>)>,
}

impl Severities {
    /// The severity of `node` and what raised it, if the failure reached it.
    #[inline]
    pub fn get(&self, node: NodeIndex) -> Option<&(Severity, Option<(NodeIndex, EdgeIndex)>)> {
        self.slots.get(node).map(|slot| &self.raised[slot as usize])
    }

    fn severity(&self, node: NodeIndex) -> Option<Severity> {
        self.get(node).map(|(s, _)| *s)
    }

    fn raise(&mut self, node: NodeIndex, to: Severity, cause: Option<(NodeIndex, EdgeIndex)>) {
        match self.slots.get(node) {
            Some(slot) => self.raised[slot as usize] = (to, cause),
            None => {
                self.slots.insert(node, self.raised.len() as u32);
                self.raised.push((to, cause));
            }
        }
    }
}

/// The severity a failure of `severity` brings across a relationship into a CI: unchanged,
/// except into a redundant group (`threshold` is its `members_to_fail`) from a member, where a
/// member down counts towards the threshold (`down_members`) and the group is down once it is
/// reached, degraded before.
pub(super) fn arriving(severity: Severity, threshold: Option<u32>, down_members: &mut u32) -> Severity {
    let Some(needed) = threshold else { return severity };
    if severity == Severity::Down {
        *down_members += 1;
    }
    if *down_members >= needed { Severity::Down } else { Severity::Degraded }
}

impl TemporalGraph {
    /// Whether CIs of `class` were redundant groups at `position`: the last declaration at or
    /// before it, else the built-in default of the class it behaves like.
    pub fn redundant_at(&self, class: CiClass, position: u64) -> bool {
        self.redundancy_changes
            .iter()
            .rev()
            .find(|(p, c, _)| *p <= position && *c == class)
            .map_or_else(|| cmdb_core::model::REDUNDANT_BY_DEFAULT.contains(&self.schema.like(class)), |(_, _, r)| *r)
    }

    /// [`members_to_fail`](Self::members_to_fail), read from the head index where it holds.
    #[inline]
    pub(crate) fn group_threshold(&self, node: NodeIndex, position: u64) -> Option<u32> {
        match self.head_hops.as_ref().filter(|index| index.covers(position)) {
            Some(index) => index.threshold(node),
            None => self.members_to_fail(node, position),
        }
    }

    /// If `node` is a redundant group at `position`: how many of its members must be down for
    /// it to be down (at least 1, at most its member count).
    pub fn members_to_fail(&self, node: NodeIndex, position: u64) -> Option<u32> {
        let ci = self.present(node, position)?;
        if !self.redundant_at(ci.class, position) {
            return None;
        }
        let members = self
            .hops
            .of(node, ImpactDirection::Upstream)
            .iter()
            .filter(|hop| hop.into_group && hop.valid_at(position))
            .filter(|hop| self.alive_at(hop.to, position))
            .count();
        let members = u32::try_from(members).unwrap_or(u32::MAX).max(1);
        let asked = ci.attributes.get(MEMBERS_TO_FAIL).and_then(serde_json::Value::as_u64);
        Some(asked.map_or(members, |n| u32::try_from(n).unwrap_or(u32::MAX).clamp(1, members)))
    }

    /// The severities of the CIs in `within` (and the `failed` ones) when `failed` are down,
    /// following the relationships of `types` (all propagating types if `None`).
    pub(crate) fn severities(
        &self,
        failed: &[NodeIndex],
        position: u64,
        types: Option<&[RelType]>,
        within: impl Fn(NodeIndex) -> bool,
    ) -> Severities {
        let mut severity = Severities { slots: Visits::new(self.graph.node_bound()), raised: Vec::new() };
        let mut down_members: FxHashMap<NodeIndex, u32> = FxHashMap::default();
        let mut thresholds: FxHashMap<NodeIndex, Option<u32>> = FxHashMap::default();
        let mut queue: VecDeque<(NodeIndex, Severity)> = VecDeque::new();
        for node in failed {
            if severity.get(*node).is_none() {
                severity.raise(*node, Severity::Down, None);
                queue.push_back((*node, Severity::Down));
            }
        }
        // Each CI is queued at most twice (once per rise), so the loop is bounded by twice
        // the CIs in scope.
        while let Some((node, raised_to)) = queue.pop_front() {
            if severity.severity(node) != Some(raised_to) {
                continue; // raised again since: the later entry carries it on
            }
            for hop in self.hops_at(node, position, ImpactDirection::Downstream, types) {
                let (edge, other) = (hop.edge, hop.to);
                if !within(other) {
                    continue;
                }
                let threshold = if hop.into_group {
                    *thresholds.entry(other).or_insert_with(|| self.group_threshold(other, position))
                } else {
                    None
                };
                let arrives = match threshold {
                    None => raised_to,
                    Some(_) => arriving(raised_to, threshold, down_members.entry(other).or_insert(0)),
                };
                if severity.severity(other).is_none_or(|s| s < arrives) {
                    severity.raise(other, arrives, Some((node, edge)));
                    queue.push_back((other, arrives));
                }
            }
        }
        severity
    }
}

/// The chain of causes to one CI ([`TemporalGraph::severity_chains`]): `None` when the failure
/// does not reach it, an error when the chain is longer than the bound.
pub type SeverityChain = Result<Option<Vec<Step>>, GraphError>;

impl TemporalGraph {
    /// Downstream, for a failure of `roots` at `position` (however far it travels): for each
    /// of `targets`, the chain of causes along which the failure reached it with its severity
    /// (each step the CI arrived at; empty for a root), or `None` if it does not reach it. One
    /// fixpoint serves every target. What explains an assessment's services (CH-2).
    ///
    /// A chain longer than [`MAX_SEVERITY_CHAIN_STEPS`] is [`GraphError::SeverityChain`] for that
    /// target alone.
    pub fn severity_chains(
        &self,
        roots: &[CiId],
        targets: &[CiId],
        position: u64,
    ) -> Result<Vec<SeverityChain>, GraphError> {
        self.check_position(position)?;
        let failed: Vec<NodeIndex> =
            roots.iter().filter_map(|id| self.cis.get(id).copied()).filter(|n| self.alive_at(*n, position)).collect();
        let severities = self.severities(&failed, position, None, |node| self.alive_at(node, position));
        let id_of = |node: NodeIndex| self.graph[node].versions[0].ci.id;
        Ok(targets
            .iter()
            .map(|target| {
                let Some(&node) = self.cis.get(target) else { return Ok(None) };
                if severities.get(node).is_none() {
                    return Ok(None);
                }
                // Causes form a tree over the CIs raised, rooted at the failed ones; the bound
                // only guards that invariant.
                let mut steps: Vec<Step> =
                    std::iter::successors(Some(node), |cursor| severities.get(*cursor)?.1.map(|(from, _)| from))
                        .take(severities.raised.len() + 1)
                        .filter_map(|cursor| {
                            let rel = &self.graph[severities.get(cursor)?.1?.1];
                            Some(Step { relationship: rel.id, rel_type: rel.rel_type, ci: id_of(cursor) })
                        })
                        .collect();
                if steps.len() > MAX_SEVERITY_CHAIN_STEPS {
                    return Err(GraphError::SeverityChain { ci: *target, steps: steps.len() });
                }
                steps.reverse();
                debug_assert!(steps.last().is_none_or(|s| s.ci == *target), "a chain ends at its CI");
                Ok(Some(steps))
            })
            .collect())
    }
}
