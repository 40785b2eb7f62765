//! The facts change decisions take from the graph (DESIGN: the core holds no graph, so the
//! projection computes what a decision needs and it enters the command): the risk facts of an
//! assessment (CH-2) with the calendar around the window (CH-5), and whether a scope changed
//! since an assessment's facts. One place for the API and the fixtures' demo.

use cmdb_core::change::risk::AssessmentFacts;
use cmdb_core::change::{ChangeDetails, Scope};
use cmdb_core::ci::{ChangeId, CiId};
use cmdb_core::time::Timestamp;

use crate::assessment::assessment_facts;
use crate::calendar::calendar_facts;
use crate::graph::{GraphError, TemporalGraph};

/// The settings the facts depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactSettings {
    /// How far back failed or backed-out changes count (`risk_history_days`).
    pub history_days: u32,
    /// How many impact-propagating hops make two scheduled changes conflict.
    pub conflict_max_depth: u32,
}

/// The risk facts of a change with these details at `position` (its scope's impact, services,
/// owners and recent failures), and the calendar around its window if it has one.
pub fn risk_facts(
    graph: &TemporalGraph,
    change_id: Option<ChangeId>,
    details: &ChangeDetails,
    position: u64,
    now: Timestamp,
    settings: FactSettings,
) -> Result<AssessmentFacts, GraphError> {
    let mut facts = assessment_facts(graph, &details.scope, position, now, settings.history_days)?;
    if let Some(window) = &details.window {
        // The calendar reads the services reached at the head: at the head they are the
        // assessment's, so the scope is walked once.
        let reached: Option<Vec<CiId>> = (position == graph.applied())
            .then(|| facts.services.iter().map(|s| s.id).chain(facts.other_services.iter().map(|s| s.id)).collect());
        let calendar =
            calendar_facts(graph, change_id, &details.scope, window, settings.conflict_max_depth, reached.as_deref())?;
        facts.calendar = Some(calendar);
    }
    Ok(facts)
}

/// Whether a CI of `scope` has a version that starts after `position` (at the graph's head).
pub fn scope_changed_since(graph: &TemporalGraph, scope: &Scope, position: u64) -> bool {
    let head = graph.applied();
    scope.cis.iter().any(|id| graph.version_at(*id, head).is_some_and(|v| v.from > position))
}
