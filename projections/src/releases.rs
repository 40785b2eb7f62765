//! The read model of releases, deployments and pipeline templates: every event kept per
//! release and per deployment, folded as of any position with the core's own folds
//! ([`fold_release_record`], [`fold_deployment_record`]); release numbers resolved to ids; the
//! deployments of each CI (a CI's history shows what deployed to it).
//!
//! Releases and deployments are few next to CI events, so a fold per read is cheap and there
//! is no second copy of their state to keep consistent.

use std::collections::BTreeMap;

use cmdb_core::EventRecord;
use cmdb_core::ids::{CiId, DeploymentId, ReleaseId, TemplateId};
use cmdb_core::model::Environment;
use cmdb_core::release::{
    DeploymentRecord, DeploymentState, ReleaseError, ReleaseEvent, ReleaseNumber, ReleaseRecord, ReleaseState, Stamp,
    fold_deployment_event, fold_release_event, stamp_of,
};
use cmdb_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// One event kept, decoded once when applied: what a fold reads of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Kept {
    stamp: Stamp,
    stream_version: u64,
    event: ReleaseEvent,
}

impl Kept {
    fn of(record: &EventRecord, event: ReleaseEvent) -> Kept {
        Kept { stamp: stamp_of(record), stream_version: record.stream_version, event }
    }
}

/// Which deployments to list.
#[derive(Clone, Debug, Default)]
pub struct DeploymentFilter {
    /// Only those touching this CI.
    pub ci: Option<CiId>,
    /// Only into this environment.
    pub environment: Option<Environment>,
    /// Only those requested at or after.
    pub from: Option<Timestamp>,
    /// Only those requested before.
    pub to: Option<Timestamp>,
    /// Only in these states.
    pub states: Option<Vec<DeploymentState>>,
    /// Only of this release.
    pub release: Option<ReleaseId>,
}

/// Every release and deployment, event by event.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReleaseBook {
    /// Events per release (JSON inside the checkpoint: the events' shapes are JSON's).
    #[serde(with = "crate::as_json")]
    releases: BTreeMap<ReleaseId, Vec<Kept>>,
    /// Number -> (release, position assigned).
    numbers: BTreeMap<ReleaseNumber, (ReleaseId, u64)>,
    #[serde(with = "crate::as_json")]
    deployments: BTreeMap<DeploymentId, Vec<Kept>>,
    /// Deployments in request order: (position, deployment).
    deployment_order: Vec<(u64, DeploymentId)>,
    /// Per CI: (position requested, deployment).
    by_ci: BTreeMap<CiId, Vec<(u64, DeploymentId)>>,
    /// Per CI: the pipeline change template named, with the position.
    templates: BTreeMap<CiId, Vec<(u64, Option<TemplateId>)>>,
    /// Gate decisions: (position, decision), in order.
    gate_decisions: Vec<(u64, cmdb_core::release::gate::GateDecision)>,
}

impl ReleaseBook {
    /// Whether an event type is one this book keeps.
    pub fn keeps(event_type: &str) -> bool {
        event_type.starts_with("release.")
            || event_type.starts_with("deployment.")
            || event_type.starts_with("pipeline.")
            || event_type.starts_with("gate.")
    }

    /// Applies one event of a release, deployment, pipeline or the gate.
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), ReleaseError> {
        let Some(event) = ReleaseEvent::from_record(record)? else { return Ok(()) };
        let position = record.position;
        let (release, deployment) = match &event {
            ReleaseEvent::Planned(planned) => (Some(planned.release_id), None),
            ReleaseEvent::Transitioned(t) => (Some(t.release_id), None),
            ReleaseEvent::StepSigned(s) => (Some(s.release_id), None),
            ReleaseEvent::IncidentLinked(i) => (Some(i.release_id), None),
            ReleaseEvent::NumberAssigned(n) => {
                self.numbers.insert(n.number, (n.release_id, position));
                (None, None)
            }
            ReleaseEvent::DeploymentRequested(r) => {
                self.deployment_order.push((position, r.deployment_id));
                for target in &r.targets {
                    self.by_ci.entry(target.ci).or_default().push((position, r.deployment_id));
                }
                (None, Some(r.deployment_id))
            }
            ReleaseEvent::DeploymentStarted(s) => (None, Some(s.deployment_id)),
            ReleaseEvent::DeploymentEnded(e) => (None, Some(e.deployment_id)),
            ReleaseEvent::PipelineTemplateSet(set) => {
                self.templates.entry(set.ci).or_default().push((position, set.template_id));
                (None, None)
            }
            ReleaseEvent::GateDecided(decided) => {
                self.gate_decisions.push((position, decided.outcome.decision));
                (None, None)
            }
            ReleaseEvent::PipelineChangeOpened(_) | ReleaseEvent::Ci(_) => (None, None),
        };
        if let Some(id) = release {
            self.releases.entry(id).or_default().push(Kept::of(record, event));
        } else if let Some(id) = deployment {
            self.deployments.entry(id).or_default().push(Kept::of(record, event));
        }
        Ok(())
    }

    /// The release as of `position`.
    pub fn release_at(&self, id: ReleaseId, position: u64) -> Option<ReleaseRecord> {
        let mut release = None;
        for kept in self.releases.get(&id)?.iter().take_while(|k| k.stamp.position <= position) {
            // Events were checked when applied and are folded in their stream's order.
            fold_release_event(&mut release, &kept.event, kept.stamp.clone(), kept.stream_version).ok()?;
        }
        release
    }

    /// The release numbered `number` as of `position`.
    pub fn id_of(&self, number: ReleaseNumber, position: u64) -> Option<ReleaseId> {
        self.numbers.get(&number).filter(|(_, at)| *at <= position).map(|(id, _)| *id)
    }

    /// Releases as of `position`, newest number first, in `states` if given.
    pub fn releases_at(&self, position: u64, states: Option<&[ReleaseState]>, limit: usize) -> Vec<ReleaseRecord> {
        self.numbers
            .iter()
            .rev()
            .filter(|(_, (_, at))| *at <= position)
            .filter_map(|(_, (id, _))| self.release_at(*id, position))
            .filter(|r| states.is_none_or(|s| s.contains(&r.state)))
            .take(limit)
            .collect()
    }

    /// The deployment as of `position`.
    pub fn deployment_at(&self, id: DeploymentId, position: u64) -> Option<DeploymentRecord> {
        let mut deployment = None;
        for kept in self.deployments.get(&id)?.iter().take_while(|k| k.stamp.position <= position) {
            fold_deployment_event(&mut deployment, &kept.event, kept.stamp.clone(), kept.stream_version).ok()?;
        }
        deployment
    }

    /// Deployments as of `position`, newest first, matching `filter`.
    pub fn deployments_at(&self, position: u64, filter: &DeploymentFilter, limit: usize) -> Vec<DeploymentRecord> {
        let candidates: Box<dyn Iterator<Item = &(u64, DeploymentId)>> = match filter.ci {
            Some(ci) => Box::new(self.by_ci.get(&ci).map(|v| v.iter()).into_iter().flatten().rev()),
            None => Box::new(self.deployment_order.iter().rev()),
        };
        candidates
            .filter(|(at, _)| *at <= position)
            .filter_map(|(_, id)| self.deployment_at(*id, position))
            .filter(|d| filter.environment.is_none_or(|e| d.request.environment == e))
            .filter(|d| filter.release.is_none_or(|r| d.request.release_id == Some(r)))
            .filter(|d| filter.from.is_none_or(|t| d.requested.at >= t))
            .filter(|d| filter.to.is_none_or(|t| d.requested.at < t))
            .filter(|d| filter.states.as_ref().is_none_or(|s| s.contains(&d.state)))
            .take(limit)
            .collect()
    }

    /// The template a CI's pipeline changes come from, as of `position`.
    pub fn pipeline_template_at(&self, ci: CiId, position: u64) -> Option<TemplateId> {
        self.templates.get(&ci)?.iter().take_while(|(at, _)| *at <= position).last().and_then(|(_, t)| *t)
    }

    /// How many gate decisions of each kind were recorded up to `position`.
    pub fn gate_counts_at(&self, position: u64) -> BTreeMap<cmdb_core::release::gate::GateDecision, u64> {
        let mut counts = BTreeMap::new();
        for (_, decision) in self.gate_decisions.iter().take_while(|(at, _)| *at <= position) {
            *counts.entry(*decision).or_insert(0) += 1;
        }
        counts
    }
}
