//! Each change's scope and the business services it touched, as graph nodes, kept at the head
//! as the change book folds (issue 15, part 5).
//!
//! The change report for a year counts about a million scope entries and a few million
//! assessed services on the large estate (6,000 changes of about 150 CIs, assessments listing
//! up to 500 services). Counted by CI id, each entry was a hash lookup in a map of 100,000
//! CIs, most of them cache misses. Kept as nodes, the report counts with array increments,
//! and a CI's class comes from the dense presence array. The entry of a change is refreshed
//! only by the events that can change its scope or assessment; a report at a past position
//! computes the entries of the changes it folds (the slower path it always had).

use std::borrow::Cow;

use cmdb_core::FoldRecord;
use cmdb_core::change::{ChangeEvent, ChangeRecord};
use cmdb_core::ci::{CiClass, CiId};
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::NodeIndexable;

use super::TemporalGraph;

/// A change as the change report counts it, in graph nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportNodes {
    /// The CIs its scope names, in scope order (a scope names each CI once).
    pub scope: Vec<u32>,
    /// Business services it touched, distinct: those its latest assessment reached and
    /// those its scope names.
    pub services: Vec<u32>,
    /// Scope ids the graph has no node for (none in a log the engine wrote: a scope names
    /// registered CIs); counted by id.
    pub unknown_scope: Vec<CiId>,
    /// Assessed services the graph has no node for (likewise none); counted by id.
    pub unknown_services: Vec<CiId>,
}

/// The change events after which a change's entry may differ: its scope or its assessment.
fn refreshes(event_type: &str) -> bool {
    [
        ChangeEvent::DRAFTED,
        ChangeEvent::AMENDED,
        ChangeEvent::ASSESSED,
        ChangeEvent::SUBMITTED,
        ChangeEvent::RETROSPECTIVE_RECORDED,
    ]
    .contains(&event_type)
}

impl TemporalGraph {
    /// The entry of `change` from its record.
    pub(crate) fn report_nodes_of(&self, change: &ChangeRecord) -> ReportNodes {
        let mut nodes = ReportNodes::default();
        for id in &change.details.scope.cis {
            match self.cis.get(id) {
                Some(node) => {
                    nodes.scope.push(node.index() as u32);
                    if self.class_at_node(node.index() as u32) == Some(CiClass::BusinessService) {
                        nodes.services.push(node.index() as u32);
                    }
                }
                None => nodes.unknown_scope.push(*id),
            }
        }
        let assessed = change.assessment().map_or(&[][..], |entry| entry.assessment.facts.services.as_slice());
        for service in assessed {
            match self.cis.get(&service.id) {
                Some(node) => nodes.services.push(node.index() as u32),
                None => nodes.unknown_services.push(service.id),
            }
        }
        nodes.services.sort_unstable();
        nodes.services.dedup();
        nodes
    }

    /// After a change event is applied: refreshes the entry of the change it named, if the
    /// event can have changed the change's scope or assessment.
    pub(crate) fn refresh_report_nodes(&mut self, record: &FoldRecord) {
        if !refreshes(&record.event_type) {
            return;
        }
        let Some(id) = self.change_book.last_change() else { return };
        let Some(change) = self.change_book.current_of(id) else { return };
        let nodes = self.report_nodes_of(change);
        self.report_nodes.insert(id, nodes);
    }

    /// Every change's entry from the book's head records (after a checkpoint is loaded).
    pub(crate) fn rebuild_report_nodes(&mut self) {
        let entries: Vec<_> = match self.change_book.current() {
            Some(current) => current.map(|change| (change.change_id, self.report_nodes_of(change))).collect(),
            None => Vec::new(),
        };
        self.report_nodes = entries.into_iter().collect();
    }

    /// The entry of `change` as read at `position`: the one kept at the head when the record
    /// is the head's, else computed from the record.
    pub fn report_nodes(&self, change: &ChangeRecord, position: u64) -> Cow<'_, ReportNodes> {
        match self.report_nodes.get(&change.change_id).filter(|_| position == self.applied) {
            Some(kept) => Cow::Borrowed(kept),
            None => Cow::Owned(self.report_nodes_of(change)),
        }
    }

    /// How many node slots there are (the length of an array indexed by node).
    pub fn node_slots(&self) -> usize {
        self.graph.node_bound()
    }

    /// The class of the CI at a node slot, if one is there.
    pub fn class_at_node(&self, node: u32) -> Option<CiClass> {
        self.alive.get(node as usize).map(|alive| alive.class)
    }

    /// The CI at a node slot.
    pub fn ci_at_node(&self, node: u32) -> Option<CiId> {
        self.graph.node_weight(NodeIndex::new(node as usize)).and_then(|entry| entry.versions.first()).map(|v| v.ci.id)
    }
}
