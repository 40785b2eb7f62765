//! The change calendar (CH-5): changes by window, conflicts between overlapping changes through
//! the graph, freeze occurrences and the services' hours, at any position. The facts a schedule
//! is checked against ([`schedule_facts`]) are computed here at the head; the core decides.
//!
//! Two changes conflict when their windows overlap and their scopes share a CI, or a CI of one
//! reaches a CI of the other within `conflict_max_depth` impact-propagating hops (downstream
//! from either side). Each conflict carries its reason and the path.

use std::collections::BTreeMap;

use cmdb_core::change::freeze::{FreezeRecord, MAX_OCCURRENCES_PER_QUERY};
use cmdb_core::change::risk::{ServiceHours, window_touches};
use cmdb_core::change::{ChangeRecord, ChangeState, ConflictFact, ScheduleFacts, Scope, Window};
use cmdb_core::ci::{ChangeId, CiClass, CiId, Environment};
use cmdb_core::time::Timestamp;

use crate::changes::ChangeFilter;
use crate::graph::{GraphError, ImpactDirection, TemporalGraph};

/// Default `conflict_max_depth`: impact-propagating hops that make two changes conflict.
pub const DEFAULT_CONFLICT_MAX_DEPTH: u32 = 3;
/// Largest `conflict_max_depth` allowed.
pub const MAX_CONFLICT_DEPTH: u32 = 6;
/// CIs one conflict walk visits before it stops.
pub const CONFLICT_WALK_MAX_RESULTS: usize = 10_000;
/// Longest calendar range, in days.
pub const MAX_CALENDAR_DAYS: i64 = 400;
/// Changes listed on one calendar page.
pub const MAX_CALENDAR_CHANGES: usize = 2_000;
/// Services whose hours are listed on one calendar page.
pub const MAX_CALENDAR_SERVICES: usize = 50;

/// A scheduled change to check against.
pub struct Candidate<'a> {
    /// Its id.
    pub id: ChangeId,
    /// A label to recognise it by.
    pub label: &'a str,
    /// Where it starts.
    pub start: Timestamp,
    /// Where it ends.
    pub end: Timestamp,
    /// The CIs.
    pub cis: &'a [CiId],
    /// Whether the other change acknowledged this conflict.
    pub acknowledged_by_other: bool,
}

/// Conflicts of `scope` in `window` with `candidates` (already overlapping), at `position`.
pub fn conflicts_with<'a>(
    graph: &TemporalGraph,
    position: u64,
    scope: &[CiId],
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    max_depth: u32,
) -> Vec<ConflictFact> {
    let candidates: Vec<Candidate<'a>> = candidates.into_iter().collect();
    if candidates.is_empty() || scope.is_empty() {
        return Vec::new();
    }
    let name = |id: CiId| graph.ci_at(id, position).map(|c| c.name.to_string()).unwrap_or_else(|| id.to_string());
    let mut found = Vec::new();
    for candidate in candidates {
        let mut conflict = |reason: String, path: Vec<CiId>| {
            found.push(ConflictFact {
                other: candidate.id,
                other_label: candidate.label.to_owned(),
                reason,
                path,
                acknowledged_by_other: candidate.acknowledged_by_other,
            })
        };
        if let Some(shared) = candidate.cis.iter().find(|ci| scope.contains(ci)) {
            conflict(format!("both change {}", name(*shared)), vec![*shared]);
            continue;
        }
        // A bidirectional search per direction: the hop budget keeps it from crossing hubs
        // it does not need (what depends on a core switch is most of the estate).
        let down = ImpactDirection::Downstream;
        if let Some(path) =
            graph.chain_within(scope, candidate.cis, position, down, max_depth, CONFLICT_WALK_MAX_RESULTS)
        {
            let (from, to) = (path[0], path[path.len() - 1]);
            let hops_taken = path.len() as u32 - 1;
            conflict(
                format!("{} reaches {} in {} (this scope affects the other)", name(from), name(to), hops(hops_taken)),
                path,
            );
            continue;
        }
        if let Some(path) =
            graph.chain_within(candidate.cis, scope, position, down, max_depth, CONFLICT_WALK_MAX_RESULTS)
        {
            let (from, to) = (path[0], path[path.len() - 1]);
            let hops_taken = path.len() as u32 - 1;
            conflict(
                format!(
                    "{} reaches {} in {} (the other scope affects this one)",
                    name(from),
                    name(to),
                    hops(hops_taken)
                ),
                path,
            );
        }
    }
    found
}

fn hops(depth: u32) -> String {
    if depth == 1 { "1 hop".into() } else { format!("{depth} hops") }
}

/// A change's conflicts, as of `position`, with the changes then approved (waiting for a slot),
/// scheduled or implementing whose windows overlap its own.
pub fn conflicts_of_change(
    graph: &TemporalGraph,
    position: u64,
    change: &ChangeRecord,
    max_depth: u32,
) -> Vec<ConflictFact> {
    let Some(window) = &change.details.window else { return Vec::new() };
    let listed = ChangeFilter {
        states: Some(vec![ChangeState::Approved, ChangeState::Scheduled, ChangeState::Implementing]),
        window_from: Some(window.start),
        window_to: Some(window.end),
        ..ChangeFilter::default()
    };
    let others: Vec<ChangeRecord> = graph
        .change_book()
        .changes_at(position, &listed, usize::MAX)
        .into_iter()
        .filter(|c| c.change_id != change.change_id && c.details.window.is_some())
        .collect();
    let labels: Vec<String> = others.iter().map(ChangeRecord::label).collect();
    let candidates = others.iter().zip(&labels).filter_map(|(other, label)| {
        let w = other.details.window.as_ref()?;
        Some(Candidate {
            id: other.change_id,
            label,
            start: w.start,
            end: w.end,
            cis: &other.details.scope.cis,
            acknowledged_by_other: other.acknowledged.iter().any(|(a, _)| a.other == change.change_id),
        })
    });
    conflicts_with(graph, position, &change.details.scope.cis, candidates, max_depth)
}

/// What scheduling `change` into `window` is checked against, at the head: the services its
/// scope reaches (for service freezes) and its conflicts with the changes scheduled now.
pub fn schedule_facts(
    graph: &TemporalGraph,
    change_id: Option<ChangeId>,
    scope: &Scope,
    window: &Window,
    max_depth: u32,
) -> Result<ScheduleFacts, GraphError> {
    let position = graph.applied();
    let services = services_reached(graph, scope, position)?;
    let conflicts = scheduled_conflicts(graph, change_id, scope, window, max_depth);
    Ok(ScheduleFacts { position, services, conflicts })
}

/// The business services a failure of `scope` reaches at `position`, with those in it.
fn services_reached(graph: &TemporalGraph, scope: &Scope, position: u64) -> Result<Vec<CiId>, GraphError> {
    let reach = graph.reach(&scope.cis, position)?;
    let mut services: Vec<CiId> = reach.services.iter().map(|s| s.id).collect();
    services.extend(
        scope.cis.iter().filter(|id| graph.ci_at(**id, position).is_some_and(|c| c.class == CiClass::BusinessService)),
    );
    Ok(services)
}

/// The conflicts of `scope` in `window` with the changes scheduled at the head.
fn scheduled_conflicts(
    graph: &TemporalGraph,
    change_id: Option<ChangeId>,
    scope: &Scope,
    window: &Window,
    max_depth: u32,
) -> Vec<ConflictFact> {
    let candidates = graph
        .change_book()
        .scheduled()
        .iter()
        .filter(|(id, entry)| Some(**id) != change_id && entry.start < window.end && window.start < entry.end)
        .map(|(id, entry)| Candidate {
            id: *id,
            label: &entry.label,
            start: entry.start,
            end: entry.end,
            cis: &entry.cis,
            acknowledged_by_other: change_id.is_some_and(|me| entry.acknowledged.contains(&me)),
        });
    conflicts_with(graph, graph.applied(), &scope.cis, candidates, max_depth)
}

/// The calendar around a change's window, for its assessment (the policy's `input.calendar`):
/// its conflicts with the changes scheduled now and the freezes covering its scope then.
///
/// `reached`: the business services the scope reaches at the head (those in the scope
/// included), when the caller's own walk found them; otherwise they are walked here, and only
/// if a freeze in force is scoped to a service (no other freeze reads them). An assessment
/// walked once instead of twice is what keeps `whatIf` within its budget (issue 15, part 3).
pub fn calendar_facts(
    graph: &TemporalGraph,
    change_id: Option<ChangeId>,
    scope: &Scope,
    window: &Window,
    max_depth: u32,
    reached: Option<&[CiId]>,
) -> Result<cmdb_core::change::CalendarFacts, GraphError> {
    let conflicts = scheduled_conflicts(graph, change_id, scope, window, max_depth);
    let position = graph.applied();
    let mut environments: Vec<Environment> =
        scope.cis.iter().filter_map(|id| graph.ci_at(*id, position).and_then(|c| c.environment)).collect();
    environments.dedup();
    let freezes = graph.change_book().freezes();
    let walked;
    let services = match reached {
        Some(services) => services,
        None if freezes.any_scoped_to_a_service() => {
            walked = services_reached(graph, scope, position)?;
            walked.as_slice()
        }
        None => &[],
    };
    let freezes = cmdb_core::change::freeze::hits(freezes, window, &environments, services)
        .map_err(|e| GraphError::Invalid(e.to_string()))?;
    Ok(cmdb_core::change::CalendarFacts { conflicts, freezes })
}

/// One change on the calendar.
#[derive(Clone, Debug)]
pub struct CalendarEntry {
    /// The change.
    pub change: ChangeRecord,
    /// The conflicts found.
    pub conflicts: Vec<ConflictFact>,
    /// Tier-1 services (from its latest assessment) whose hours the window touches.
    pub tier1_hours_touched: Vec<String>,
}

/// A freeze and its occurrences in the range.
#[derive(Clone, Debug)]
pub struct FreezeOnCalendar {
    /// The freeze window.
    pub freeze: FreezeRecord,
    /// Its occurrences in the period.
    pub occurrences: Vec<(Timestamp, Timestamp)>,
    /// Whether the answer was cut at its bound.
    pub truncated: bool,
}

/// A service and its hours in the range.
#[derive(Clone, Debug)]
pub struct ServiceHoursOnCalendar {
    /// The business service.
    pub service: CiId,
    /// The name.
    pub name: String,
    /// The service's criticality tier (1 is the most critical).
    pub tier: Option<i64>,
    /// Its open hours in the period.
    pub hours: Vec<(Timestamp, Timestamp)>,
}

#[derive(Clone, Debug, Default)]
/// The change calendar in a period (CH-5).
pub struct Calendar {
    /// The entries.
    pub entries: Vec<CalendarEntry>,
    /// Freeze windows.
    pub freezes: Vec<FreezeOnCalendar>,
    /// Service hours of the services shown.
    pub service_hours: Vec<ServiceHoursOnCalendar>,
    /// More changes matched than [`MAX_CALENDAR_CHANGES`].
    pub truncated: bool,
}

/// Filters of a calendar page.
#[derive(Clone, Debug, Default)]
pub struct CalendarFilter {
    /// Where it runs.
    pub environment: Option<Environment>,
    /// The business service.
    pub service: Option<CiId>,
}

/// A change that takes part in conflicts: id, label, window, scope, changes it acknowledged.
type ActiveChange = (ChangeId, String, Window, Vec<CiId>, Vec<ChangeId>);

/// The calendar between `from` and `to` as it stood at `position`.
pub fn calendar(
    graph: &TemporalGraph,
    position: u64,
    from: Timestamp,
    to: Timestamp,
    filter: &CalendarFilter,
    max_depth: u32,
) -> Result<Calendar, GraphError> {
    graph.check_position(position)?;
    let (changes, truncated) = changes_on_calendar(graph, position, from, to, filter);
    let mut conflicts = calendar_conflicts(graph, position, &changes, max_depth);
    let entries = changes
        .into_iter()
        .map(|change| CalendarEntry {
            conflicts: conflicts.remove(&change.change_id).unwrap_or_default(),
            tier1_hours_touched: tier1_hours_touched(&change),
            change,
        })
        .collect();
    let freezes = freezes_on_calendar(graph, position, from, to)?;
    let service_hours = service_hours_on_calendar(graph, position, from, to, filter);
    Ok(Calendar { entries, freezes, service_hours, truncated })
}

/// The changes whose window overlaps [from, to), as of `position`, filtered, by window start;
/// at most [`MAX_CALENDAR_CHANGES`] (and whether more were cut).
fn changes_on_calendar(
    graph: &TemporalGraph,
    position: u64,
    from: Timestamp,
    to: Timestamp,
    filter: &CalendarFilter,
) -> (Vec<ChangeRecord>, bool) {
    let book = graph.change_book();
    let listed = ChangeFilter { window_from: Some(from), window_to: Some(to), ..ChangeFilter::default() };
    let mut changes: Vec<ChangeRecord> = book
        .changes_at(position, &listed, usize::MAX)
        .into_iter()
        .filter(|c| !matches!(c.state, ChangeState::Draft | ChangeState::Cancelled | ChangeState::Rejected))
        .collect();
    if let Some(environment) = filter.environment {
        changes.retain(|c| {
            c.details
                .scope
                .cis
                .iter()
                .any(|id| graph.ci_at(*id, position).is_some_and(|ci| ci.environment == Some(environment)))
        });
    }
    if let Some(service) = filter.service {
        changes.retain(|c| {
            c.details.scope.cis.contains(&service)
                || graph
                    .reach(&c.details.scope.cis, position)
                    .is_ok_and(|reach| reach.services.iter().any(|s| s.id == service))
        });
    }
    changes.sort_by_key(|c| c.details.window.as_ref().map(|w| w.start));
    let truncated = changes.len() > MAX_CALENDAR_CHANGES;
    changes.truncate(MAX_CALENDAR_CHANGES);
    (changes, truncated)
}

/// Conflicts among the changes listed that are approved (waiting for a slot), scheduled or
/// implementing, through the graph at `position`.
fn calendar_conflicts(
    graph: &TemporalGraph,
    position: u64,
    changes: &[ChangeRecord],
    max_depth: u32,
) -> BTreeMap<ChangeId, Vec<ConflictFact>> {
    let active: Vec<ActiveChange> = changes
        .iter()
        .filter(|c| matches!(c.state, ChangeState::Approved | ChangeState::Scheduled | ChangeState::Implementing))
        .filter_map(|c| {
            let window = c.details.window.clone()?;
            let acknowledged = c.acknowledged.iter().map(|(a, _)| a.other).collect();
            Some((c.change_id, c.label(), window, c.details.scope.cis.clone(), acknowledged))
        })
        .collect();
    let mut conflicts: BTreeMap<ChangeId, Vec<ConflictFact>> = BTreeMap::new();
    for (id, _, window, cis, _) in &active {
        let candidates = active
            .iter()
            .filter(|(other, _, w, _, _)| other != id && w.start < window.end && window.start < w.end)
            .map(|(other, label, w, other_cis, acknowledged)| Candidate {
                id: *other,
                label,
                start: w.start,
                end: w.end,
                cis: other_cis,
                acknowledged_by_other: acknowledged.contains(id),
            });
        let found = conflicts_with(graph, position, cis, candidates, max_depth);
        if !found.is_empty() {
            conflicts.insert(*id, found);
        }
    }
    conflicts
}

/// The tier-1 services whose hours the change's window touches (from its latest assessment).
fn tier1_hours_touched(change: &ChangeRecord) -> Vec<String> {
    match (&change.details.window, change.assessment()) {
        (Some(window), Some(entry)) => entry
            .assessment
            .facts
            .services
            .iter()
            .filter(|s| s.tier == Some(1))
            .filter(|s| s.service_hours.as_ref().is_some_and(|h| window_touches(window, h)))
            .map(|s| s.name.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// The freeze windows in force at `position` with their occurrences in [from, to).
fn freezes_on_calendar(
    graph: &TemporalGraph,
    position: u64,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<FreezeOnCalendar>, GraphError> {
    let book = graph.change_book();
    let mut freezes = Vec::new();
    for record in book.freezes().in_force_at(position) {
        let (occurrences, cut) = record
            .freeze
            .schedule
            .occurrences(from, to, MAX_OCCURRENCES_PER_QUERY)
            .map_err(|e| GraphError::Invalid(e.to_string()))?;
        if !occurrences.is_empty() {
            freezes.push(FreezeOnCalendar { freeze: record.clone(), occurrences, truncated: cut });
        }
    }
    Ok(freezes)
}

/// Service hours in [from, to): of the filtered service, or of every tier-1 service.
fn service_hours_on_calendar(
    graph: &TemporalGraph,
    position: u64,
    from: Timestamp,
    to: Timestamp,
    filter: &CalendarFilter,
) -> Vec<ServiceHoursOnCalendar> {
    let services: Vec<CiId> = match filter.service {
        Some(service) => vec![service],
        None => graph
            .cis_at(
                position,
                &crate::graph::CiFilter { classes: Some(vec![CiClass::BusinessService]), ..Default::default() },
                None,
                usize::MAX,
            )
            .0
            .iter()
            .filter(|ci| ci.attributes.get("criticality_tier").and_then(|v| v.as_i64()) == Some(1))
            .map(|ci| ci.id)
            .take(MAX_CALENDAR_SERVICES)
            .collect(),
    };
    let mut service_hours = Vec::new();
    for id in services {
        let Some(ci) = graph.ci_at(id, position) else { continue };
        let Some(hours) = ci.attributes.get("service_hours").and_then(ServiceHours::from_attribute) else { continue };
        service_hours.push(ServiceHoursOnCalendar {
            service: id,
            name: ci.name.to_string(),
            tier: ci.attributes.get("criticality_tier").and_then(|v| v.as_i64()),
            hours: cmdb_core::change::risk::service_hours_between(&hours, from, to, MAX_OCCURRENCES_PER_QUERY as usize),
        });
    }
    service_hours
}
