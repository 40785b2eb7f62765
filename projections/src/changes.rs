//! The read model of change requests and templates: every change event kept per change, so a
//! change is folded as of any position with the same fold the decider uses
//! ([`ChangeRecord::apply`]); numbers resolved to ids; the emergency overdue report.
//!
//! Changes are few next to CI events (a change has tens of events), so a fold per read is
//! cheap and there is no second copy of the state to keep consistent.

use std::collections::BTreeMap;

use cmdb_core::FoldRecord;
use cmdb_core::change::freeze::Freezes;
use cmdb_core::change::{
    At, ChangeEvent, ChangeNumber, ChangeRecord, ChangeState, ChangeType, Overdue, TemplateRecord,
};
use cmdb_core::ci::{ChangeId, CiId, TemplateId};
use cmdb_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Every change and template, event by event.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChangeBook {
    changes: BTreeMap<ChangeId, Vec<(At, ChangeEvent)>>,
    /// Number -> (change, position assigned).
    numbers: BTreeMap<ChangeNumber, (ChangeId, u64)>,
    templates: BTreeMap<TemplateId, Vec<(At, ChangeEvent)>>,
    /// Per CI: changes naming it in their scope that failed or were backed out, in log order
    /// (what a risk assessment counts, CH-2).
    outcomes: BTreeMap<CiId, Vec<(At, ChangeId, ChangeState)>>,
    /// Freeze windows (JSON inside the checkpoint: their schedules are tagged enums).
    #[serde(with = "crate::as_json")]
    freezes: Freezes,
    /// Changes scheduled or implementing now, with their windows: what a new schedule is
    /// checked against (CH-5).
    scheduled: BTreeMap<ChangeId, ScheduledEntry>,
    /// Changes implementing or failed now, with the CIs of their scope: the changes whose
    /// state authorises CI edits (CM-3), for a tool's deployment to find its change.
    #[serde(default)]
    authorising: BTreeMap<ChangeId, Vec<CiId>>,
    /// Every change as it stands at the last event applied (one `apply` per event), so reads
    /// at the head need no fold. Left out of checkpoints and rebuilt by `restore_current`.
    #[serde(skip)]
    current: BTreeMap<ChangeId, ChangeRecord>,
    /// The change the last event applied named (none after a template, freeze or number
    /// event): which change's derived entries the graph refreshes.
    #[serde(skip)]
    last_change: Option<ChangeId>,
}

/// A change on the calendar now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledEntry {
    /// A label to recognise it by.
    pub label: String,
    /// Where it starts.
    pub start: Timestamp,
    /// Where it ends.
    pub end: Timestamp,
    /// The CIs.
    pub cis: Vec<CiId>,
    /// Changes whose conflict with this one it acknowledged.
    pub acknowledged: Vec<ChangeId>,
}

/// Which changes to list.
#[derive(Clone, Debug, Default)]
pub struct ChangeFilter {
    /// States to keep.
    pub states: Option<Vec<ChangeState>>,
    /// Types to keep.
    pub types: Option<Vec<ChangeType>>,
    /// Changes whose scope names this CI.
    pub ci: Option<CiId>,
    /// Who raised it.
    pub requester: Option<String>,
    /// Changes whose requested window overlaps [from, to).
    pub window_from: Option<Timestamp>,
    /// Changes whose window starts before this.
    pub window_to: Option<Timestamp>,
    /// Only emergency changes with something overdue at this time.
    pub overdue_at: Option<Timestamp>,
}

impl ChangeFilter {
    fn matches(&self, change: &ChangeRecord) -> bool {
        if self.states.as_ref().is_some_and(|s| !s.contains(&change.state)) {
            return false;
        }
        if self.types.as_ref().is_some_and(|t| !t.contains(&change.change_type)) {
            return false;
        }
        if self.ci.is_some_and(|ci| !change.details.scope.covers_ci(ci)) {
            return false;
        }
        if self.requester.as_ref().is_some_and(|r| *r != change.requester) {
            return false;
        }
        if self.window_from.is_some() || self.window_to.is_some() {
            let Some(window) = &change.details.window else { return false };
            if self.window_to.is_some_and(|to| window.start >= to)
                || self.window_from.is_some_and(|from| window.end <= from)
            {
                return false;
            }
        }
        if let Some(now) = self.overdue_at
            && change.overdue(now).is_empty()
        {
            return false;
        }
        true
    }
}

impl ChangeBook {
    /// Applies one stored change event.
    pub fn apply(&mut self, record: &FoldRecord) -> Result<(), String> {
        let event = ChangeEvent::from_record(record).map_err(|e| e.to_string())?;
        let at = At::of(record);
        self.last_change = None;
        match &event {
            ChangeEvent::TemplateCreated(e) => self.templates.entry(e.template_id).or_default().push((at, event)),
            ChangeEvent::TemplateRetired(e) => self.templates.entry(e.template_id).or_default().push((at, event)),
            ChangeEvent::NumberAssigned(e) => {
                self.numbers.insert(e.number, (e.change_id, record.position));
            }
            ChangeEvent::Freeze(_) => self.freezes.apply(record).map_err(|e| e.to_string())?,
            _ => {
                let id = event.change_id().ok_or_else(|| format!("{} names no change", record.event_type))?;
                self.last_change = Some(id);
                let events = self.changes.entry(id).or_default();
                if events.is_empty() && !matches!(event, ChangeEvent::Drafted(_)) {
                    return Err(format!("an event of change {id} before its draft"));
                }
                // The change as it stood before this event: kept at the head, folded only when a
                // book was deserialised without its head records.
                let repeats_scope = matches!(event, ChangeEvent::Submitted(_) | ChangeEvent::RetrospectiveRecorded(_));
                let event = match (repeats_scope, self.current.get(&id)) {
                    (false, _) => event,
                    (true, Some(record)) => without_repeated_scope(Some(&record.details.scope), event),
                    (true, None) => {
                        let drafted = fold(events, u64::MAX).map(|c| c.details.scope);
                        without_repeated_scope(drafted.as_ref(), event)
                    }
                };
                match &event {
                    ChangeEvent::Drafted(drafted) => {
                        self.current.insert(id, ChangeRecord::drafted(drafted, at));
                    }
                    other => {
                        if let Some(record) = self.current.get_mut(&id) {
                            record.apply(other, at);
                        }
                    }
                }
                let moves_calendar = matches!(
                    event,
                    ChangeEvent::Transitioned(_) | ChangeEvent::Rescheduled(_) | ChangeEvent::ConflictAcknowledged(_)
                );
                let failed = match &event {
                    ChangeEvent::Transitioned(t) if matches!(t.to, ChangeState::Failed | ChangeState::BackedOut) => {
                        Some(t.to)
                    }
                    _ => None,
                };
                events.push((at, event));
                if failed.is_some() || moves_calendar {
                    let folded;
                    let change = match self.current.get(&id) {
                        Some(record) => Some(record),
                        None => {
                            folded = fold(events, u64::MAX);
                            folded.as_ref()
                        }
                    };
                    if let Some(change) = change {
                        if let Some(outcome) = failed {
                            for ci in &change.details.scope.cis {
                                self.outcomes.entry(*ci).or_default().push((at, id, outcome));
                            }
                        }
                        match (&change.details.window, change.state) {
                            (Some(window), ChangeState::Scheduled | ChangeState::Implementing) => {
                                self.scheduled.insert(
                                    id,
                                    ScheduledEntry {
                                        label: change.label(),
                                        start: window.start,
                                        end: window.end,
                                        cis: change.details.scope.cis.clone(),
                                        acknowledged: change.acknowledged.iter().map(|(a, _)| a.other).collect(),
                                    },
                                );
                            }
                            _ => {
                                self.scheduled.remove(&id);
                            }
                        }
                        if change.state.authorises_edits() {
                            self.authorising.insert(id, change.details.scope.cis.clone());
                        } else {
                            self.authorising.remove(&id);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The change as it stood at `position` (`None` if not drafted yet).
    pub fn change_at(&self, id: ChangeId, position: u64) -> Option<ChangeRecord> {
        fold(self.changes.get(&id)?, position)
    }

    /// The change a number was given to, if given by `position`.
    pub fn id_of(&self, number: ChangeNumber, position: u64) -> Option<ChangeId> {
        self.numbers.get(&number).filter(|(_, at)| *at <= position).map(|(id, _)| *id)
    }

    /// Changes at `position` matching `filter`, newest draft first; at most `limit`.
    pub fn changes_at(&self, position: u64, filter: &ChangeFilter, limit: usize) -> Vec<ChangeRecord> {
        let mut found: Vec<ChangeRecord> =
            self.changes.values().filter_map(|events| fold(events, position)).filter(|c| filter.matches(c)).collect();
        found.sort_by_key(|c| std::cmp::Reverse(c.created.position));
        found.truncate(limit);
        found
    }

    /// Changes as of `position` counted by state, and how many of them have something overdue
    /// at `now` (what the business gauges show).
    pub fn tally_at(&self, position: u64, now: Timestamp) -> (BTreeMap<ChangeState, u64>, u64) {
        let mut by_state = BTreeMap::new();
        let mut overdue = 0;
        for change in self.changes.values().filter_map(|events| fold(events, position)) {
            *by_state.entry(change.state).or_insert(0) += 1;
            if !change.overdue(now).is_empty() {
                overdue += 1;
            }
        }
        (by_state, overdue)
    }

    /// Emergency changes with something overdue at `now`, as of `position`.
    pub fn overdue_at(&self, position: u64, now: Timestamp) -> Vec<(ChangeRecord, Vec<Overdue>)> {
        let mut found: Vec<(ChangeRecord, Vec<Overdue>)> = self
            .changes
            .values()
            .filter_map(|events| fold(events, position))
            .filter_map(|c| {
                let overdue = c.overdue(now);
                (!overdue.is_empty()).then_some((c, overdue))
            })
            .collect();
        found.sort_by_key(|(c, _)| c.number);
        found
    }

    /// A template as of `position`.
    pub fn template_at(&self, id: TemplateId, position: u64) -> Option<TemplateRecord> {
        let mut record = None;
        for (version, (at, event)) in self.templates.get(&id)?.iter().enumerate() {
            if at.position > position {
                break;
            }
            TemplateRecord::apply(&mut record, event, *at, version as u64);
        }
        record
    }

    /// Every template as of `position`.
    pub fn templates_at(&self, position: u64) -> Vec<TemplateRecord> {
        self.templates.keys().filter_map(|id| self.template_at(*id, position)).collect()
    }

    /// Failed and backed-out changes on `ci` recorded in [since, until] and by `position`.
    pub fn failures_of(&self, ci: CiId, position: u64, since: Timestamp, until: Timestamp) -> (u32, u32) {
        let mut counts = (0, 0);
        for (at, _, outcome) in self.outcomes.get(&ci).map(Vec::as_slice).unwrap_or_default() {
            if at.position > position || at.recorded_at < since || at.recorded_at > until {
                continue;
            }
            match outcome {
                ChangeState::Failed => counts.0 += 1,
                _ => counts.1 += 1,
            }
        }
        counts
    }

    /// Rebuilds the head records after a checkpoint was loaded.
    pub fn restore_current(&mut self) {
        self.current =
            self.changes.iter().filter_map(|(id, events)| fold(events, u64::MAX).map(|record| (*id, record))).collect();
    }

    /// The change the last event applied named, if it named one.
    pub fn last_change(&self) -> Option<ChangeId> {
        self.last_change
    }

    /// One change as it stands after the last event applied (`None` when unknown, or when the
    /// head records are not complete).
    pub fn current_of(&self, id: ChangeId) -> Option<&ChangeRecord> {
        self.current.get(&id)
    }

    /// Every change as it stands after the last event applied, without folding; `None` when
    /// the head records are not complete (a book deserialised without `restore_current`).
    pub fn current(&self) -> Option<impl Iterator<Item = &ChangeRecord>> {
        (self.current.len() == self.changes.len()).then(|| self.current.values())
    }

    /// Freeze windows.
    pub fn freezes(&self) -> &Freezes {
        &self.freezes
    }

    /// Changes implementing or failed now, with their scope's CIs (their state authorises
    /// CI edits, CM-3).
    pub fn authorising(&self) -> &BTreeMap<ChangeId, Vec<CiId>> {
        &self.authorising
    }

    /// Changes scheduled or implementing now.
    pub fn scheduled(&self) -> &BTreeMap<ChangeId, ScheduledEntry> {
        &self.scheduled
    }

    /// How many changes have been drafted.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A submission repeats the draft's scope (up to max_scope_items CIs); the book keeps it once.
fn without_repeated_scope(drafted: Option<&cmdb_core::change::Scope>, mut event: ChangeEvent) -> ChangeEvent {
    let scope = match &mut event {
        ChangeEvent::Submitted(e) => &mut e.scope,
        ChangeEvent::RetrospectiveRecorded(e) => &mut e.scope,
        _ => return event,
    };
    if drafted == Some(&*scope) {
        *scope = Default::default();
    }
    event
}

fn fold(events: &[(At, ChangeEvent)], position: u64) -> Option<ChangeRecord> {
    let mut iter = events.iter().take_while(|(at, _)| at.position <= position);
    let (at, ChangeEvent::Drafted(drafted)) = iter.next()? else { return None };
    let mut record = ChangeRecord::drafted(drafted, *at);
    for (at, event) in iter {
        record.apply(event, *at);
    }
    Some(record)
}
