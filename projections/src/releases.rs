//! The read model of releases, deployments and pipeline templates: every event kept per
//! release and per deployment, folded as of any position with the core's own folds
//! ([`fold_release_record`], [`fold_deployment_record`]); release numbers resolved to ids; the
//! deployments of each CI (a CI's history shows what deployed to it).
//!
//! Releases and deployments are few next to CI events, so a fold per read is cheap and there
//! is no second copy of their state to keep consistent.

use std::collections::BTreeMap;

use cmdb_core::FoldRecord;
use cmdb_core::ids::{CiId, DeploymentId, ReleaseId, TemplateId};
use cmdb_core::model::Environment;
use cmdb_core::release::observe::{DeliveryReceived, IncidentRecord, Mappings, Provider, ToolRef, UnauthorisedChange};
use cmdb_core::release::{
    DeploymentRecord, DeploymentState, ReleaseError, ReleaseEvent, ReleaseNumber, ReleaseRecord, ReleaseState, Stamp,
    fold_deployment_event, fold_incident_event, fold_release_event, stamp_of,
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
    fn of(record: &FoldRecord, event: ReleaseEvent) -> Kept {
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
    /// Mapping rule events, in order (for the rules as of a position).
    #[serde(with = "crate::as_json")]
    mapping_events: Vec<(u64, ReleaseEvent)>,
    /// The rules after the last event applied (deliveries map against it).
    #[serde(skip)]
    mappings: Mappings,
    /// Deliveries: (position, time, provider, mapped).
    deliveries: Vec<(u64, Timestamp, Provider, bool)>,
    /// Unmapped deliveries, in order.
    #[serde(with = "crate::as_json")]
    unmapped: Vec<(u64, Timestamp, DeliveryReceived)>,
    /// Unauthorised changes: (position, time, record), in order.
    #[serde(with = "crate::as_json")]
    unauthorised: Vec<(u64, Timestamp, UnauthorisedChange)>,
    /// Events per incident, keyed by (provider, source, id).
    #[serde(with = "crate::as_json")]
    incidents: BTreeMap<(Provider, String, String), Vec<Kept>>,
    /// Incidents in order of opening: (position, key).
    incident_order: Vec<(u64, (Provider, String, String))>,
}

/// An unmapped source and how often it was heard from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmappedSource {
    /// The tool.
    pub provider: Provider,
    /// Its source.
    pub source: String,
    /// How many deliveries were kept unmapped.
    pub count: u64,
    /// The newest reason.
    pub reason: String,
    /// The newest event type.
    pub event_type: String,
    /// When it was last heard from.
    pub last_at: Timestamp,
}

fn incident_key(tool: &ToolRef) -> (Provider, String, String) {
    (tool.provider, tool.source.trim().to_owned(), tool.id.trim().to_owned())
}

impl ReleaseBook {
    /// Whether an event type is one this book keeps.
    pub fn keeps(event_type: &str) -> bool {
        event_type.starts_with("release.")
            || event_type.starts_with("deployment.")
            || event_type.starts_with("pipeline.")
            || event_type.starts_with("gate.")
            || event_type.starts_with("tool.")
            || event_type.starts_with("incident.")
    }

    /// Applies one event of a release, deployment, pipeline or the gate.
    pub fn apply(&mut self, record: &FoldRecord) -> Result<(), ReleaseError> {
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
            ReleaseEvent::DeploymentObserved(o) => (None, Some(o.deployment_id)),
            ReleaseEvent::Unauthorised(u) => {
                self.unauthorised.push((position, record.recorded_at, (**u).clone()));
                (None, Some(u.deployment_id))
            }
            ReleaseEvent::MappingSet(rule) => {
                self.mappings.set(rule);
                self.mapping_events.push((position, event.clone()));
                (None, None)
            }
            ReleaseEvent::MappingRemoved(removed) => {
                self.mappings.remove(removed);
                self.mapping_events.push((position, event.clone()));
                (None, None)
            }
            ReleaseEvent::DeliveryReceived(delivery) => {
                self.deliveries.push((
                    position,
                    record.recorded_at,
                    delivery.tool.provider,
                    delivery.unmapped.is_none(),
                ));
                if delivery.unmapped.is_some() {
                    self.unmapped.push((position, record.recorded_at, (**delivery).clone()));
                }
                (None, None)
            }
            ReleaseEvent::IncidentOpened(opened) => {
                let key = incident_key(&opened.incident);
                self.incident_order.push((position, key.clone()));
                self.incidents.entry(key).or_default().push(Kept::of(record, event));
                return Ok(());
            }
            ReleaseEvent::IncidentResolved(resolved) => {
                let key = incident_key(&resolved.incident);
                self.incidents.entry(key).or_default().push(Kept::of(record, event));
                return Ok(());
            }
            ReleaseEvent::PipelineChangeOpened(_)
            | ReleaseEvent::Ci(_)
            | ReleaseEvent::Change(_)
            | ReleaseEvent::CallbackPending(_)
            | ReleaseEvent::CallbackAnswered(_) => (None, None),
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

    /// The mapping rules after the last event applied.
    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// The mapping rules as of `position`.
    pub fn mappings_at(&self, position: u64) -> Mappings {
        let mut mappings = Mappings::default();
        for (_, event) in self.mapping_events.iter().take_while(|(at, _)| *at <= position) {
            match event {
                ReleaseEvent::MappingSet(rule) => mappings.set(rule),
                ReleaseEvent::MappingRemoved(removed) => mappings.remove(removed),
                _ => {}
            }
        }
        mappings
    }

    /// Rebuilds what is not kept in a checkpoint.
    pub fn restore_current(&mut self) {
        self.mappings = self.mappings_at(u64::MAX);
    }

    /// Deliveries up to `position`: (mapped, unmapped) per provider.
    pub fn delivery_counts_at(&self, position: u64) -> BTreeMap<Provider, (u64, u64)> {
        let mut counts = BTreeMap::new();
        for (_, _, provider, mapped) in self.deliveries.iter().take_while(|(at, ..)| *at <= position) {
            let entry: &mut (u64, u64) = counts.entry(*provider).or_default();
            if *mapped { entry.0 += 1 } else { entry.1 += 1 }
        }
        counts
    }

    /// The sources whose deliveries mapped to nothing, up to `position`, most frequent first.
    pub fn unmapped_sources_at(&self, position: u64) -> Vec<UnmappedSource> {
        let mut by_source: BTreeMap<(Provider, String), UnmappedSource> = BTreeMap::new();
        for (_, at, delivery) in self.unmapped.iter().take_while(|(p, ..)| *p <= position) {
            let key = (delivery.tool.provider, delivery.tool.source.clone());
            let entry = by_source.entry(key).or_insert_with(|| UnmappedSource {
                provider: delivery.tool.provider,
                source: delivery.tool.source.clone(),
                count: 0,
                reason: String::new(),
                event_type: String::new(),
                last_at: *at,
            });
            entry.count += 1;
            entry.reason = delivery.unmapped.clone().unwrap_or_default();
            entry.event_type = delivery.event_type.clone();
            entry.last_at = *at;
        }
        let mut sources: Vec<UnmappedSource> = by_source.into_values().collect();
        sources.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.source.cmp(&b.source)));
        sources
    }

    /// How many unauthorised changes were recorded by `position`.
    pub fn unauthorised_count_at(&self, position: u64) -> u64 {
        self.unauthorised.iter().take_while(|(p, ..)| *p <= position).count() as u64
    }

    /// Unauthorised changes recorded in [from, to) as of `position`, oldest first.
    pub fn unauthorised_at(
        &self,
        position: u64,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Vec<(u64, Timestamp, UnauthorisedChange)> {
        self.unauthorised
            .iter()
            .take_while(|(p, ..)| *p <= position)
            .filter(|(_, at, _)| from.is_none_or(|f| *at >= f) && to.is_none_or(|t| *at < t))
            .cloned()
            .collect()
    }

    /// The incident as of `position`.
    pub fn incident_at(&self, tool: &ToolRef, position: u64) -> Option<IncidentRecord> {
        self.fold_incident(&incident_key(tool), position)
    }

    fn fold_incident(&self, key: &(Provider, String, String), position: u64) -> Option<IncidentRecord> {
        let mut incident = None;
        for kept in self.incidents.get(key)?.iter().take_while(|k| k.stamp.position <= position) {
            fold_incident_event(&mut incident, &kept.event, kept.stamp.position);
        }
        incident
    }

    /// Incidents opened up to `position`, newest first, touching `ci` if given.
    pub fn incidents_at(&self, position: u64, ci: Option<CiId>, limit: usize) -> Vec<IncidentRecord> {
        self.incident_order
            .iter()
            .rev()
            .filter(|(at, _)| *at <= position)
            .filter_map(|(_, key)| self.fold_incident(key, position))
            .filter(|i| ci.is_none_or(|c| i.opened.cis.contains(&c)))
            .take(limit)
            .collect()
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
