//! The discovery book (CM-7; issue 17, part 3), folded inside the graph: every run's
//! observations, the rules versions and the audits, by position. On its own (not in
//! `discovery`) because the graph holds it while `discovery`'s reconciliation reads the graph.

use std::collections::{BTreeMap, HashMap};

use cmdb_core::discovery::rules::Rules;
use cmdb_core::discovery::{AuditId, AuditRecorded, DiscoveryEvent, RunFinished, RunId, RunObservations, RunStarted};
use cmdb_core::{FoldRecord, Timestamp};
use serde::{Deserialize, Serialize};

/// A run as the book keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The run.
    pub id: RunId,
    /// Its start.
    pub started: RunStarted,
    /// Where it started.
    pub started_position: u64,
    /// Who ran it.
    pub actor: String,
    /// What it observed.
    pub observations: RunObservations,
    /// Its finish: where, when, what.
    pub finished: Option<(u64, Timestamp, RunFinished)>,
}

impl RunInfo {
    /// Its finish, if recorded by `position`.
    pub fn finished_by(&self, position: u64) -> Option<&(u64, Timestamp, RunFinished)> {
        self.finished.as_ref().filter(|(at, _, _)| *at <= position)
    }
}

/// An audit as the book keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditInfo {
    /// The audit.
    pub id: AuditId,
    /// What it recorded.
    pub recorded: AuditRecorded,
    /// Where it was recorded.
    pub position: u64,
    /// When.
    pub recorded_at: Timestamp,
    /// Who recorded it.
    pub actor: String,
}

/// Runs, audits and rules, folded from the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryBook {
    pub(crate) runs: BTreeMap<RunId, RunInfo>,
    pub(crate) audits: BTreeMap<AuditId, AuditInfo>,
    /// Rules versions: (position, rules); version n is the n-th entry, version 0 the defaults.
    rules: Vec<(u64, Rules)>,
    /// For each identity, the runs that observed it, in order.
    observed: HashMap<String, Vec<RunId>>,
}

impl DiscoveryBook {
    /// Applies a discovery event.
    pub fn apply(&mut self, record: &FoldRecord) -> Result<(), String> {
        let event = DiscoveryEvent::from_record(record).map_err(|e| e.to_string())?;
        let run_of = |record: &FoldRecord| {
            record
                .stream_id
                .as_str()
                .strip_prefix("discovery-run-")
                .and_then(|id| RunId::parse(id).ok())
                .ok_or_else(|| format!("{} is not a run stream", record.stream_id))
        };
        match event {
            DiscoveryEvent::RunStarted(started) => {
                let id = run_of(record)?;
                let info = RunInfo {
                    id,
                    started,
                    started_position: record.position,
                    actor: record.principal.to_string(),
                    observations: RunObservations::default(),
                    finished: None,
                };
                self.runs.insert(id, info);
            }
            DiscoveryEvent::Observed(batch) => {
                let id = run_of(record)?;
                let run = self.runs.get_mut(&id).ok_or_else(|| format!("observations of run {id} before its start"))?;
                for item in &batch.items {
                    let runs = self.observed.entry(item.external_id.clone()).or_default();
                    if runs.last() != Some(&id) {
                        runs.push(id);
                    }
                }
                run.observations.add(batch);
            }
            DiscoveryEvent::RunFinished(finished) => {
                let id = run_of(record)?;
                let run = self.runs.get_mut(&id).ok_or_else(|| format!("the finish of run {id} before its start"))?;
                run.finished = Some((record.position, record.recorded_at, finished));
            }
            DiscoveryEvent::AuditRecorded(recorded) => {
                let id = record
                    .stream_id
                    .as_str()
                    .strip_prefix("discovery-audit-")
                    .and_then(|id| AuditId::parse(id).ok())
                    .ok_or_else(|| format!("{} is not an audit stream", record.stream_id))?;
                let info = AuditInfo {
                    id,
                    recorded,
                    position: record.position,
                    recorded_at: record.recorded_at,
                    actor: record.principal.to_string(),
                };
                self.audits.insert(id, info);
            }
            DiscoveryEvent::RulesSet(set) => {
                let mut rules = self.rules.last().map_or_else(Rules::defaults, |(_, r)| r.clone());
                rules.set(set);
                self.rules.push((record.position, rules));
            }
        }
        Ok(())
    }

    /// A run, if started by `position` (see [`RunInfo::finished_by`] for its finish).
    pub fn run_at(&self, id: RunId, position: u64) -> Option<&RunInfo> {
        self.runs.get(&id).filter(|r| r.started_position <= position)
    }

    /// Runs finished by `position`, newest first.
    pub fn finished_runs_at(&self, position: u64) -> Vec<&RunInfo> {
        let mut runs: Vec<&RunInfo> =
            self.runs.values().filter(|r| r.finished.as_ref().is_some_and(|(at, _, _)| *at <= position)).collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_position));
        runs
    }

    /// An audit, if recorded by `position`.
    pub fn audit_at(&self, id: AuditId, position: u64) -> Option<&AuditInfo> {
        self.audits.get(&id).filter(|a| a.position <= position)
    }

    /// Audits recorded by `position`, newest first.
    pub fn audits_at(&self, position: u64) -> Vec<&AuditInfo> {
        let mut audits: Vec<&AuditInfo> = self.audits.values().filter(|a| a.position <= position).collect();
        audits.sort_by_key(|a| std::cmp::Reverse(a.position));
        audits
    }

    /// The rules in force at `position` and their version.
    pub fn rules_at(&self, position: u64) -> (u64, Rules) {
        let count = self.rules.partition_point(|(at, _)| *at <= position);
        match count {
            0 => (0, Rules::defaults()),
            n => (n as u64, self.rules[n - 1].1.clone()),
        }
    }

    /// The rules of a version (0: the defaults).
    pub fn rules_version(&self, version: u64) -> Rules {
        match usize::try_from(version).ok().and_then(|v| v.checked_sub(1)).and_then(|v| self.rules.get(v)) {
            Some((_, rules)) => rules.clone(),
            None => Rules::defaults(),
        }
    }

    /// What finished runs up to `position` observed of an identity, oldest first.
    pub fn observations_of(
        &self,
        external_id: &str,
        position: u64,
    ) -> Vec<(&RunInfo, &cmdb_core::discovery::ObservedItem)> {
        let Some(runs) = self.observed.get(external_id) else { return Vec::new() };
        runs.iter()
            .filter_map(|id| self.runs.get(id))
            .filter(|run| run.finished.as_ref().is_some_and(|(at, _, _)| *at <= position))
            .filter_map(|run| run.observations.items.get(external_id).map(|item| (run, item)))
            .collect()
    }
}
