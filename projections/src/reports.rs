//! Change analysis (CH-10): per day, week or month (UTC), for any range and as of any position:
//! changes by type and outcome, success rate, emergency and retrospective ratios, overdue
//! reviews, mean times from submission to approval and to implementation, the CIs and
//! services changed most, and failed changes by CI class.
//!
//! A change counts in the period its request was submitted (or, for a retrospective emergency
//! change, recorded). Its outcome is what it had come to by the position read: `successful`
//! (closed, never failed), `failed` (failed or backed out at any point), `rejected`,
//! `cancelled`, or `open`. Success rate = successful / (successful + failed).

use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};
use cmdb_core::change::{ChangeAction, ChangeRecord, ChangeState, ChangeType, Overdue};
use cmdb_core::ci::{CiClass, CiId};
use cmdb_core::time::Timestamp;

use rustc_hash::FxHashMap;

use crate::changes::ChangeFilter;
use crate::graph::{GraphError, ReportNodes, TemporalGraph};

/// Buckets in one report.
pub const MAX_REPORT_BUCKETS: usize = 800;
/// CIs and services listed as changed most.
pub const TOP_CHANGED: usize = 10;
/// Hours after a change's deployment (or, without one, its implementation) in which an
/// incident on one of its CIs counts as following it (CH-10, RL-7).
pub const DEFAULT_INCIDENT_LINK_HOURS: u32 = 72;
/// Most hours the link may be set to (a year).
pub const MAX_INCIDENT_LINK_HOURS: u32 = 8_760;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// How a report groups time.
pub enum Period {
    /// By UTC day.
    Day,
    /// By ISO week (Monday to Sunday, UTC).
    Week,
    /// By calendar month (UTC).
    Month,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
/// How a change ended, as far as a report counts it.
pub enum Outcome {
    /// Closed without failing.
    Successful,
    /// Failed or backed out.
    Failed,
    /// Rejected.
    Rejected,
    /// Cancelled.
    Cancelled,
    /// Not ended yet.
    Open,
}

/// The figures of one period (or of the whole range).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Where it starts.
    pub start: Option<Timestamp>,
    /// Where it ends.
    pub end: Option<Timestamp>,
    /// How many.
    pub total: u32,
    /// Standard changes.
    pub standard: u32,
    /// Normal changes.
    pub normal: u32,
    /// Emergency changes.
    pub emergency: u32,
    /// Changes that succeeded.
    pub successful: u32,
    /// How many failed.
    pub failed: u32,
    /// Changes rejected.
    pub rejected: u32,
    /// Changes cancelled.
    pub cancelled: u32,
    /// Changes not ended yet.
    pub open: u32,
    /// Whether it was given or recorded after the work was done (CH-8).
    pub retrospective: u32,
    /// Emergency changes whose review is late.
    pub overdue_reviews: u32,
    /// Emergency (or, by setting, standard) changes scheduled into a freeze window (CH-5).
    pub in_freeze: u32,
    /// Changes followed by an incident on one of their CIs within the link period (CH-10).
    pub followed_by_incidents: u32,
    /// Deployments observed with no change covering them, recorded in the period (CM-3).
    pub unauthorised: u32,
    /// Findings of configuration audits no change authorised (CM-7), counted in the first
    /// audit of each discovery run recorded in the period (the audit after an apply repeats them).
    pub unauthorised_drift: u32,
    submit_to_approve_hours: Vec<f64>,
    submit_to_implement_hours: Vec<f64>,
}

impl Figures {
    /// Successful changes over those that ended (none if none ended).
    pub fn success_rate(&self) -> Option<f64> {
        let decided = self.successful + self.failed;
        (decided > 0).then(|| f64::from(self.successful) / f64::from(decided))
    }
    /// Emergency changes over all.
    pub fn emergency_ratio(&self) -> Option<f64> {
        (self.total > 0).then(|| f64::from(self.emergency) / f64::from(self.total))
    }
    /// Retrospectively recorded changes over all.
    pub fn retrospective_ratio(&self) -> Option<f64> {
        (self.total > 0).then(|| f64::from(self.retrospective) / f64::from(self.total))
    }
    /// Mean hours from submission to approval.
    pub fn mean_hours_to_approval(&self) -> Option<f64> {
        mean(&self.submit_to_approve_hours)
    }
    /// Mean hours from approval to implementation.
    pub fn mean_hours_to_implementation(&self) -> Option<f64> {
        mean(&self.submit_to_implement_hours)
    }

    fn add(&mut self, change: &ChangeRecord, submitted: Timestamp, now: Timestamp) {
        self.total += 1;
        match change.change_type {
            ChangeType::Standard => self.standard += 1,
            ChangeType::Normal => self.normal += 1,
            ChangeType::Emergency => self.emergency += 1,
        }
        match outcome(change) {
            Outcome::Successful => self.successful += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Cancelled => self.cancelled += 1,
            Outcome::Open => self.open += 1,
        }
        if change.retrospective {
            self.retrospective += 1;
        }
        if !change.in_freeze.is_empty() {
            self.in_freeze += 1;
        }
        if change.overdue(now).contains(&Overdue::Review) {
            self.overdue_reviews += 1;
        }
        let hours = |t: Timestamp| (t.as_micros() - submitted.as_micros()) as f64 / 3_600_000_000.0;
        if let Some(approved) = change.transitions.iter().find(|t| t.to == ChangeState::Approved) {
            self.submit_to_approve_hours.push(hours(approved.at.recorded_at));
        }
        if let Some(done) = change.transitions.iter().find(|t| t.action == Some(ChangeAction::Complete)) {
            self.submit_to_implement_hours.push(hours(done.at.recorded_at));
        }
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// What a change had come to.
pub fn outcome(change: &ChangeRecord) -> Outcome {
    if change.transitions.iter().any(|t| matches!(t.to, ChangeState::Failed | ChangeState::BackedOut)) {
        return Outcome::Failed;
    }
    match change.state {
        ChangeState::Closed => Outcome::Successful,
        ChangeState::Rejected => Outcome::Rejected,
        ChangeState::Cancelled => Outcome::Cancelled,
        _ => Outcome::Open,
    }
}

/// When the request entered the process: its submission, or its retrospective record.
pub fn submitted_at(change: &ChangeRecord) -> Option<Timestamp> {
    change.transitions.iter().find(|t| t.from == Some(ChangeState::Draft)).map(|t| t.at.recorded_at)
}

#[derive(Clone, Debug, Default)]
/// Change analysis (CH-10): figures per period and in total.
pub struct ChangeReport {
    /// Per period, oldest first.
    pub buckets: Vec<Figures>,
    /// Over the whole range.
    pub totals: Figures,
    /// (CI, changes whose scope named it), most first.
    pub top_cis: Vec<(CiId, u32)>,
    /// Business services: named in scope, or reached per the change's latest assessment.
    pub top_services: Vec<(CiId, u32)>,
    /// Failed changes by the classes of their scope's CIs.
    pub failed_by_class: BTreeMap<CiClass, u32>,
}

fn bucket_start(t: Timestamp, period: Period) -> Option<NaiveDate> {
    let date = t.to_datetime()?.date_naive();
    Some(match period {
        Period::Day => date,
        Period::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
        Period::Month => NaiveDate::from_ymd_opt(date.year(), date.month(), 1)?,
    })
}

fn next(date: NaiveDate, period: Period) -> Option<NaiveDate> {
    match period {
        Period::Day => date.succ_opt(),
        Period::Week => date.checked_add_signed(Duration::days(7)),
        Period::Month => date.checked_add_months(chrono::Months::new(1)),
    }
}

fn instant(date: NaiveDate) -> Timestamp {
    Timestamp::from_datetime(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap_or_default()))
}

/// The report for changes submitted in [from, to), as of `position`; `now` decides what is
/// overdue; incidents follow a change within [`DEFAULT_INCIDENT_LINK_HOURS`].
pub fn change_report(
    graph: &TemporalGraph,
    position: u64,
    from: Timestamp,
    to: Timestamp,
    period: Period,
    now: Timestamp,
) -> Result<ChangeReport, GraphError> {
    change_report_linking(graph, position, from, to, period, now, DEFAULT_INCIDENT_LINK_HOURS)
}

/// Most CIs named by the incidents of a window for [`IncidentIndex::follows`] to compare them
/// with the scope instead of looking each scope CI up (a lookup costs about as much as
/// comparing eight ids).
const WINDOW_SCAN_MAX_CIS: usize = 8;

/// The incidents as of `position`, two ways: each CI's detection times (sorted), and every
/// incident's (detection time, CIs) in time order. Whether incidents followed a change is
/// asked of whichever is smaller: a change names about 150 CIs on the large estate, while a
/// day holds a few incidents, so looking at the incidents of the window beats a lookup per CI.
pub struct IncidentIndex {
    by_ci: FxHashMap<CiId, Vec<Timestamp>>,
    by_time: Vec<(Timestamp, Vec<CiId>)>,
}

impl IncidentIndex {
    /// The index of the incidents the graph's release book holds at `position`.
    pub fn at(graph: &TemporalGraph, position: u64) -> IncidentIndex {
        let mut by_ci: FxHashMap<CiId, Vec<Timestamp>> = FxHashMap::default();
        let mut by_time = Vec::new();
        for incident in graph.release_book().incidents_at(position, None, usize::MAX) {
            for ci in &incident.opened.cis {
                by_ci.entry(*ci).or_default().push(incident.opened.detected_at);
            }
            by_time.push((incident.opened.detected_at, incident.opened.cis.clone()));
        }
        for times in by_ci.values_mut() {
            times.sort_unstable();
        }
        by_time.sort_by_key(|(at, _)| *at);
        IncidentIndex { by_ci, by_time }
    }

    /// Whether any incident on `cis` was detected in [at, at + window).
    pub fn follows(&self, at: Timestamp, cis: &[CiId], window_micros: i64) -> bool {
        let end = at.saturating_add_micros(window_micros);
        let first = self.by_time.partition_point(|(t, _)| *t < at);
        let last = self.by_time.partition_point(|(t, _)| *t < end);
        let in_window = &self.by_time[first..last.max(first)];
        let named: usize = in_window.iter().map(|(_, on)| on.len()).sum();
        if named <= WINDOW_SCAN_MAX_CIS {
            // Few incidents in the window: compare their CIs with the scope.
            return in_window.iter().any(|(_, on)| on.iter().any(|ci| cis.contains(ci)));
        }
        cis.iter().any(|ci| {
            self.by_ci.get(ci).is_some_and(|times| {
                let first = times.partition_point(|t| *t < at);
                times.get(first).is_some_and(|t| *t < end)
            })
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

/// When a change touched its CIs: each successful deployment under it (with its CIs), else
/// its move to implemented (with its scope).
fn change_moments<'a>(
    change: &'a ChangeRecord,
    deployments: &'a FxHashMap<cmdb_core::ids::ChangeId, Vec<(Timestamp, Vec<CiId>)>>,
) -> Vec<(Timestamp, &'a [CiId])> {
    if let Some(deployed) = deployments.get(&change.change_id) {
        return deployed.iter().map(|(at, cis)| (*at, cis.as_slice())).collect();
    }
    change
        .transitions
        .iter()
        .find(|t| t.to == ChangeState::Implemented)
        .map(|t| vec![(t.at.recorded_at, change.details.scope.cis.as_slice())])
        .unwrap_or_default()
}

/// The first day of each period from `from` to `to`.
fn period_starts(from: Timestamp, to: Timestamp, period: Period) -> Result<Vec<NaiveDate>, GraphError> {
    let (Some(first), Some(last)) = (bucket_start(from, period), bucket_start(to, period)) else {
        return Err(GraphError::Invalid("the range is out of bounds".into()));
    };
    let mut starts = vec![first];
    while let Some(date) = starts.last().and_then(|d| next(*d, period)) {
        if date > last || instant(date) >= to {
            break;
        }
        if starts.len() == MAX_REPORT_BUCKETS {
            return Err(GraphError::Invalid(format!(
                "the range makes more than {MAX_REPORT_BUCKETS} periods (max_report_buckets); choose a longer period"
            )));
        }
        starts.push(date);
    }
    Ok(starts)
}

/// Each change's successful deployments (time, CIs), as of `position`.
fn deployed_by_change(
    graph: &TemporalGraph,
    position: u64,
) -> FxHashMap<cmdb_core::ids::ChangeId, Vec<(Timestamp, Vec<CiId>)>> {
    let mut deployments: FxHashMap<cmdb_core::ids::ChangeId, Vec<(Timestamp, Vec<CiId>)>> = FxHashMap::default();
    let all = crate::releases::DeploymentFilter::default();
    for d in graph.release_book().deployments_at(position, &all, usize::MAX) {
        if let (Some(change), Some(at)) =
            (d.request.change_id, d.reached(cmdb_core::release::DeploymentState::Succeeded))
        {
            let cis = d.request.targets.iter().map(|t| t.ci).collect();
            deployments.entry(change).or_default().push((at.at, cis));
        }
    }
    deployments
}

/// Adds the unauthorised findings of each discovery run's first audit recorded in `[from, to)`.
fn count_unauthorised_drift(
    graph: &TemporalGraph,
    position: u64,
    (from, to): (Timestamp, Timestamp),
    totals: &mut Figures,
    buckets: &mut [Figures],
    bucket_of: &dyn Fn(Timestamp) -> Option<usize>,
) {
    let mut audited_runs = std::collections::BTreeSet::new();
    let mut audits = graph.discovery().audits_at(position);
    audits.reverse(); // oldest first: the first audit of each run counts
    for audit in audits {
        if audit.recorded_at < from || audit.recorded_at >= to || !audited_runs.insert(audit.recorded.run) {
            continue;
        }
        let count = u32::try_from(audit.recorded.counts.unauthorised).unwrap_or(u32::MAX);
        totals.unauthorised_drift = totals.unauthorised_drift.saturating_add(count);
        if let Some(bucket) = bucket_of(audit.recorded_at).and_then(|i| buckets.get_mut(i)) {
            bucket.unauthorised_drift = bucket.unauthorised_drift.saturating_add(count);
        }
    }
}

/// [`change_report`] with the incident link period given, in hours.
pub fn change_report_linking(
    graph: &TemporalGraph,
    position: u64,
    from: Timestamp,
    to: Timestamp,
    period: Period,
    now: Timestamp,
    incident_link_hours: u32,
) -> Result<ChangeReport, GraphError> {
    graph.check_position(position)?;
    if to <= from {
        return Err(GraphError::Invalid(format!("to ({to}) must be after from ({from})")));
    }
    let starts = period_starts(from, to, period)?;
    let mut buckets: Vec<Figures> = starts
        .iter()
        .map(|d| Figures {
            start: Some(instant(*d).max(from)),
            end: next(*d, period).map(|n| instant(n).min(to)),
            ..Figures::default()
        })
        .collect();
    let mut totals = Figures { start: Some(from), end: Some(to), ..Figures::default() };
    // Counted by graph node (arrays, not hash maps): a busy year names about a million scope
    // entries and a few million assessed services (see `graph::ReportNodes`).
    let mut tally = Tally::new(graph.node_slots());
    let window_micros = i64::from(incident_link_hours.min(MAX_INCIDENT_LINK_HOURS)) * 3_600_000_000;
    let incidents = IncidentIndex::at(graph, position);
    let deployments = if incidents.is_empty() { FxHashMap::default() } else { deployed_by_change(graph, position) };
    let bucket_of =
        |t: Timestamp| bucket_start(t, period).map(|start| starts.partition_point(|d| *d <= start).saturating_sub(1));
    for (_, at, _) in graph.release_book().unauthorised_at(position, Some(from), Some(to)) {
        totals.unauthorised += 1;
        if let Some(bucket) = bucket_of(at).and_then(|i| buckets.get_mut(i)) {
            bucket.unauthorised += 1;
        }
    }
    count_unauthorised_drift(graph, position, (from, to), &mut totals, &mut buckets, &bucket_of);
    // At the head the book keeps every change folded; elsewhere fold as of the position.
    let folded;
    let changes: Box<dyn Iterator<Item = &ChangeRecord>> =
        match graph.change_book().current().filter(|_| position == graph.applied()) {
            Some(current) => Box::new(current),
            None => {
                folded = graph.change_book().changes_at(position, &ChangeFilter::default(), usize::MAX);
                Box::new(folded.iter())
            }
        };
    for change in changes {
        let Some(submitted) = submitted_at(change) else { continue };
        if submitted < from || submitted >= to {
            continue;
        }
        let Some(start) = bucket_start(submitted, period) else { continue };
        let index = starts.partition_point(|d| *d <= start).saturating_sub(1);
        let followed = !incidents.is_empty()
            && change_moments(change, &deployments)
                .into_iter()
                .any(|(at, cis)| incidents.follows(at, cis, window_micros));
        if let Some(bucket) = buckets.get_mut(index) {
            bucket.add(change, submitted, now);
            bucket.followed_by_incidents += u32::from(followed);
        }
        totals.add(change, submitted, now);
        totals.followed_by_incidents += u32::from(followed);
        tally.add(graph, &graph.report_nodes(change, position), outcome(change) == Outcome::Failed);
    }
    let (top_cis, top_services, failed_by_class) = tally.finish(graph);
    Ok(ChangeReport { buckets, totals, top_cis, top_services, failed_by_class })
}

/// The CIs changed most, the services changed most, and failed changes by class.
type MostChanged = (Vec<(CiId, u32)>, Vec<(CiId, u32)>, BTreeMap<CiClass, u32>);

/// Changes per CI and per service, and failed changes per class, over a report's changes.
struct Tally {
    /// By node: changes whose scope names the CI.
    scope: Vec<u32>,
    /// By node: changes that touched the service.
    services: Vec<u32>,
    /// Scope ids without a node (none in a log the engine wrote), with their counts.
    unknown_scope: FxHashMap<CiId, u32>,
    /// Assessed services without a node (likewise), with their counts.
    unknown_services: FxHashMap<CiId, u32>,
    failed_by_class: BTreeMap<CiClass, u32>,
}

impl Tally {
    fn new(node_slots: usize) -> Tally {
        Tally {
            scope: vec![0; node_slots],
            services: vec![0; node_slots],
            unknown_scope: FxHashMap::default(),
            unknown_services: FxHashMap::default(),
            failed_by_class: BTreeMap::new(),
        }
    }

    fn add(&mut self, graph: &TemporalGraph, nodes: &ReportNodes, failed: bool) {
        for node in &nodes.scope {
            if let Some(count) = self.scope.get_mut(*node as usize) {
                *count += 1;
            }
            if failed && let Some(class) = graph.class_at_node(*node) {
                *self.failed_by_class.entry(class).or_default() += 1;
            }
        }
        for node in &nodes.services {
            if let Some(count) = self.services.get_mut(*node as usize) {
                *count += 1;
            }
        }
        for id in &nodes.unknown_scope {
            *self.unknown_scope.entry(*id).or_default() += 1;
        }
        for id in &nodes.unknown_services {
            *self.unknown_services.entry(*id).or_default() += 1;
        }
    }

    /// The CIs and services changed most ([`TOP_CHANGED`] each, most first, then by id) and
    /// the failed changes by class.
    fn finish(self, graph: &TemporalGraph) -> MostChanged {
        let top = |counts: &[u32], unknown: FxHashMap<CiId, u32>| {
            // The count the TOP_CHANGED-th entry has: only entries with at least as many need
            // their CI's id (ties are broken by id), not the hundred thousand others.
            let mut by_node: Vec<(u32, u32)> = counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(node, count)| (node as u32, *count))
                .collect();
            if by_node.len() > TOP_CHANGED {
                by_node.select_nth_unstable_by(TOP_CHANGED - 1, |a, b| b.1.cmp(&a.1));
                let threshold = by_node[TOP_CHANGED - 1].1;
                by_node.retain(|(_, count)| *count >= threshold);
            }
            let mut list: Vec<(CiId, u32)> = by_node
                .into_iter()
                .filter_map(|(node, count)| graph.ci_at_node(node).map(|id| (id, count)))
                .chain(unknown)
                .collect();
            list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            list.truncate(TOP_CHANGED);
            list
        };
        let cis = top(&self.scope, self.unknown_scope);
        let services = top(&self.services, self.unknown_services);
        (cis, services, self.failed_by_class)
    }
}

#[cfg(test)]
mod incident_tests {
    use super::*;

    fn index(incidents: &[(i64, Vec<u128>)]) -> IncidentIndex {
        let mut by_ci: FxHashMap<CiId, Vec<Timestamp>> = FxHashMap::default();
        let mut by_time = Vec::new();
        for (at, cis) in incidents {
            let cis: Vec<CiId> = cis.iter().map(|n| CiId(uuid::Uuid::from_u128(*n))).collect();
            for ci in &cis {
                by_ci.entry(*ci).or_default().push(Timestamp::from_micros(*at));
            }
            by_time.push((Timestamp::from_micros(*at), cis));
        }
        by_time.sort_by_key(|(at, _)| *at);
        for times in by_ci.values_mut() {
            times.sort_unstable();
        }
        IncidentIndex { by_ci, by_time }
    }

    /// Both ways of answering agree, with few incidents in the window (compared with the
    /// scope) and with many (looked up per scope CI).
    #[test]
    fn follows_answers_the_same_whichever_way_it_looks() {
        let few = index(&[(100, vec![1]), (250, vec![2, 3])]);
        let many: Vec<(i64, Vec<u128>)> =
            (0..40).map(|n| (100 + n, vec![1_000 + n as u128])).chain([(120, vec![7])]).collect();
        let many = index(&many);
        let ids = |ns: &[u128]| ns.iter().map(|n| CiId(uuid::Uuid::from_u128(*n))).collect::<Vec<_>>();
        let brute = |i: &IncidentIndex, at: i64, cis: &[CiId], window: i64| {
            i.by_time
                .iter()
                .any(|(t, on)| t.as_micros() >= at && t.as_micros() < at + window && on.iter().any(|c| cis.contains(c)))
        };
        for index in [&few, &many] {
            for at in [0, 90, 100, 101, 120, 200, 250, 251] {
                for scope in [ids(&[1]), ids(&[3, 9]), ids(&[7]), ids(&[9]), ids(&[1_005, 2])] {
                    for window in [1, 50, 200] {
                        let expected = brute(index, at, &scope, window);
                        let got = index.follows(Timestamp::from_micros(at), &scope, window);
                        assert_eq!(got, expected, "at {at}, scope {scope:?}, window {window}");
                    }
                }
            }
        }
    }
}
