//! What releases and deployments record, and the folds of their streams.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::gate::{GateFacts, GateOutcome, GateRequest};
use super::observe::{
    CallbackAnswered, CallbackPending, DeliveryReceived, DeploymentObserved, IncidentOpened, IncidentRecord,
    IncidentResolved, MappingRemoved, MappingRule, ToolRef, UnauthorisedChange,
};
use super::{
    ArtifactDigest, DeploymentId, DeploymentState, ReleaseAction, ReleaseError, ReleaseId, ReleaseNumber, ReleaseState,
    ReleaseType,
};
use crate::access::Role;
use crate::decider::DomainEvent;
use crate::event::{EventRecord, FoldRecord, Metadata, NewEvent};
use crate::ids::{ChangeId, CiId};
use crate::model::{Environment, Status};
use crate::time::Timestamp;

/// A CI version a release sets (RL-3): which CI, which artifact, its version and digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiVersion {
    /// The CI that will run it.
    pub ci: CiId,
    /// The artifact's name (`ghcr.io/acme/payments-api`).
    pub artifact: String,
    /// Its version label.
    pub version: String,
    /// Its digest (`sha256:...`).
    pub digest: ArtifactDigest,
}

/// One acceptance step (RL-4): signed off for `environment` by a principal holding `role`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptanceStep {
    /// The environment it accepts the release for.
    pub environment: Environment,
    /// What is checked (`integration tests`, `security review`).
    pub name: String,
    /// The role whoever signs it off must hold.
    pub role: Role,
}

/// Everything a release's planner writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDetails {
    /// A one-line summary.
    pub title: String,
    /// Major, minor or emergency (RL-1).
    pub release_type: ReleaseType,
    /// The changes it delivers.
    #[serde(default)]
    pub changes: Vec<ChangeId>,
    /// The CI versions it sets.
    pub versions: Vec<CiVersion>,
    /// Where it goes, in order.
    pub environments: Vec<Environment>,
    /// How it is rolled out (RL-2).
    pub release_plan: String,
    /// How it is rolled back (RL-2, RL-6).
    pub roll_back_plan: String,
    /// The name of the baseline it is built against (RL-5, a CM-6 baseline).
    #[serde(default)]
    pub baseline: Option<String>,
    /// Its acceptance steps (RL-4).
    #[serde(default)]
    pub acceptance: Vec<AcceptanceStep>,
}

/// The pipeline run that asks or reports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pipeline {
    /// `github`, `gitlab`, `argocd`, `jenkins`...
    pub provider: String,
    /// The run's id in that provider.
    pub run_id: String,
    /// A link to the run.
    #[serde(default)]
    pub run_url: Option<String>,
}

/// A CI as far as a deployment touches it: what a roll-back restores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiConfig {
    /// The CI.
    pub ci: CiId,
    /// Its version label.
    pub version: Option<String>,
    /// Its `artifact` attribute.
    pub artifact: Option<String>,
    /// Its `digest` attribute.
    pub digest: Option<String>,
    /// Its status.
    pub status: Status,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A release was planned and numbered.
pub struct ReleasePlanned {
    /// The release.
    pub release_id: ReleaseId,
    /// Its number.
    pub number: ReleaseNumber,
    /// What it is.
    pub details: ReleaseDetails,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A release moved in its life cycle.
pub struct ReleaseTransitioned {
    /// The release.
    pub release_id: ReleaseId,
    /// What was done.
    pub action: ReleaseAction,
    /// From where.
    pub from: ReleaseState,
    /// To where.
    pub to: ReleaseState,
    /// Who did it.
    pub by: String,
    /// The note or reason given.
    #[serde(default)]
    pub note: Option<String>,
    /// The deployment that moved it (deployed, rolled back).
    #[serde(default)]
    pub deployment: Option<DeploymentId>,
    /// The environment concerned (deployed, rolled back).
    #[serde(default)]
    pub environment: Option<Environment>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// An acceptance step was signed off (RL-4).
pub struct StepSigned {
    /// The release.
    pub release_id: ReleaseId,
    /// For where.
    pub environment: Environment,
    /// Which step.
    pub step: String,
    /// The role it needed.
    pub role: Role,
    /// Who signed it.
    pub by: String,
    /// What they wrote.
    #[serde(default)]
    pub note: Option<String>,
    /// Whether this was the environment's last step: the release is accepted there.
    pub environment_accepted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// An incident was linked to a release (RL-7).
pub struct IncidentLinked {
    /// The release.
    pub release_id: ReleaseId,
    /// The incident's id in its tool.
    pub incident: String,
    /// A summary.
    #[serde(default)]
    pub title: Option<String>,
    /// When the incident began.
    pub occurred_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A release number was assigned.
pub struct ReleaseNumberAssigned {
    /// The number.
    pub number: ReleaseNumber,
    /// The release.
    pub release_id: ReleaseId,
}

/// What a deployment carries into its environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentTarget {
    /// The CI that runs it.
    pub ci: CiId,
    /// The artifact.
    pub artifact: String,
    /// Its version.
    pub version: String,
    /// Its digest; none only for a deployment a tool reported without one.
    #[serde(default)]
    pub digest: Option<ArtifactDigest>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A deployment was asked for (or refused).
pub struct DeploymentRequested {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// The release it carries out, if any.
    #[serde(default)]
    pub release_id: Option<ReleaseId>,
    /// The change that authorises its CI edits (CM-3); none only for a deployment a tool
    /// reported on a CI of an uncontrolled class, which needs none.
    pub change_id: Option<ChangeId>,
    /// Where.
    pub environment: Environment,
    /// What.
    pub targets: Vec<DeploymentTarget>,
    /// Which pipeline run.
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
    /// The tool's deployment, for a deployment observed rather than asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ToolRef>,
    /// Observed with no change or accepted release covering its CI: `change_id` is the
    /// retrospective emergency change opened for it, and its CI edits are flagged (CM-3).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthorised: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A deployment started: the configuration it changes, as it was.
pub struct DeploymentStarted {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// Each CI touched, as it was.
    pub before: Vec<CiConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A deployment ended (succeeded or failed), was refused or rolled back.
pub struct DeploymentEnded {
    /// The deployment.
    pub deployment_id: DeploymentId,
    /// What it ended in.
    pub state: DeploymentState,
    /// A note or reason.
    #[serde(default)]
    pub note: Option<String>,
    /// For a refusal: the code (`DIGEST_MISMATCH`).
    #[serde(default)]
    pub code: Option<String>,
    /// For a roll-back: the change that authorised it.
    #[serde(default)]
    pub authorized_by: Option<ChangeId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// The gate answered (recorded with its request and facts, so it can be replayed).
pub struct GateDecided {
    /// What was asked.
    pub request: GateRequest,
    /// What the answer was computed from.
    pub facts: GateFacts,
    /// The answer.
    pub outcome: GateOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A pipeline run got a change from its service's template.
pub struct PipelineChangeOpened {
    /// The run.
    pub pipeline: Pipeline,
    /// The change created for it.
    pub change_id: ChangeId,
    /// The CI deployed.
    pub ci: CiId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A service named (or stopped naming) the template of its pipelines' changes.
pub struct PipelineTemplateSet {
    /// The service or CI.
    pub ci: CiId,
    /// The standard-change template (`None`: no longer).
    pub template_id: Option<crate::ids::TemplateId>,
}

/// Event types.
pub mod types {
    /// `release.planned`
    pub const PLANNED: &str = "release.planned";
    /// `release.transitioned`
    pub const TRANSITIONED: &str = "release.transitioned";
    /// `release.step_signed`
    pub const STEP_SIGNED: &str = "release.step_signed";
    /// `release.incident_linked`
    pub const INCIDENT_LINKED: &str = "release.incident_linked";
    /// `release.number_assigned`
    pub const NUMBER_ASSIGNED: &str = "release.number_assigned";
    /// `deployment.requested`
    pub const DEPLOYMENT_REQUESTED: &str = "deployment.requested";
    /// `deployment.started`
    pub const DEPLOYMENT_STARTED: &str = "deployment.started";
    /// `deployment.ended`
    pub const DEPLOYMENT_ENDED: &str = "deployment.ended";
    /// `gate.decided`
    pub const GATE_DECIDED: &str = "gate.decided";
    /// `pipeline.change_opened`
    pub const PIPELINE_CHANGE_OPENED: &str = "pipeline.change_opened";
    /// `pipeline.template_set`
    pub const PIPELINE_TEMPLATE_SET: &str = "pipeline.template_set";
    /// `tool.mapping_set`
    pub const MAPPING_SET: &str = "tool.mapping_set";
    /// `tool.mapping_removed`
    pub const MAPPING_REMOVED: &str = "tool.mapping_removed";
    /// `tool.delivery_received`
    pub const DELIVERY_RECEIVED: &str = "tool.delivery_received";
    /// `deployment.observed`
    pub const DEPLOYMENT_OBSERVED: &str = "deployment.observed";
    /// `deployment.unauthorised`
    pub const UNAUTHORISED: &str = "deployment.unauthorised";
    /// `incident.opened`
    pub const INCIDENT_OPENED: &str = "incident.opened";
    /// `incident.resolved`
    pub const INCIDENT_RESOLVED: &str = "incident.resolved";
    /// `tool.callback_pending`
    pub const CALLBACK_PENDING: &str = "tool.callback_pending";
    /// `tool.callback_answered`
    pub const CALLBACK_ANSWERED: &str = "tool.callback_answered";
}

/// A release, deployment or gate event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs, reason = "each variant holds the event its type names")]
pub enum ReleaseEvent {
    Planned(Box<ReleasePlanned>),
    Transitioned(ReleaseTransitioned),
    StepSigned(StepSigned),
    IncidentLinked(IncidentLinked),
    NumberAssigned(ReleaseNumberAssigned),
    DeploymentRequested(Box<DeploymentRequested>),
    DeploymentStarted(DeploymentStarted),
    DeploymentEnded(DeploymentEnded),
    GateDecided(Box<GateDecided>),
    PipelineChangeOpened(PipelineChangeOpened),
    PipelineTemplateSet(PipelineTemplateSet),
    MappingSet(MappingRule),
    MappingRemoved(MappingRemoved),
    DeliveryReceived(Box<DeliveryReceived>),
    DeploymentObserved(Box<DeploymentObserved>),
    Unauthorised(Box<UnauthorisedChange>),
    IncidentOpened(Box<IncidentOpened>),
    IncidentResolved(Box<IncidentResolved>),
    CallbackPending(Box<CallbackPending>),
    CallbackAnswered(Box<CallbackAnswered>),
    /// The retrospective change of an unauthorised deployment, decided by the change domain;
    /// stored on the change's streams as a change event.
    #[serde(skip)]
    Change(crate::change::ChangeEvent),
    /// A CI edit made with a deployment (its success or roll-back); stored on the CI's stream
    /// as a CI event, never kept as a release event.
    #[serde(skip)]
    Ci(crate::ci::CiEvent),
}

impl DomainEvent for ReleaseEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        use types::*;
        let (event_type, data) = match self {
            ReleaseEvent::Planned(e) => (PLANNED, serde_json::to_vec(e)),
            ReleaseEvent::Transitioned(e) => (TRANSITIONED, serde_json::to_vec(e)),
            ReleaseEvent::StepSigned(e) => (STEP_SIGNED, serde_json::to_vec(e)),
            ReleaseEvent::IncidentLinked(e) => (INCIDENT_LINKED, serde_json::to_vec(e)),
            ReleaseEvent::NumberAssigned(e) => (NUMBER_ASSIGNED, serde_json::to_vec(e)),
            ReleaseEvent::DeploymentRequested(e) => (DEPLOYMENT_REQUESTED, serde_json::to_vec(e)),
            ReleaseEvent::DeploymentStarted(e) => (DEPLOYMENT_STARTED, serde_json::to_vec(e)),
            ReleaseEvent::DeploymentEnded(e) => (DEPLOYMENT_ENDED, serde_json::to_vec(e)),
            ReleaseEvent::GateDecided(e) => (GATE_DECIDED, serde_json::to_vec(e)),
            ReleaseEvent::PipelineChangeOpened(e) => (PIPELINE_CHANGE_OPENED, serde_json::to_vec(e)),
            ReleaseEvent::PipelineTemplateSet(e) => (PIPELINE_TEMPLATE_SET, serde_json::to_vec(e)),
            ReleaseEvent::MappingSet(e) => (MAPPING_SET, serde_json::to_vec(e)),
            ReleaseEvent::MappingRemoved(e) => (MAPPING_REMOVED, serde_json::to_vec(e)),
            ReleaseEvent::DeliveryReceived(e) => (DELIVERY_RECEIVED, serde_json::to_vec(e)),
            ReleaseEvent::DeploymentObserved(e) => (DEPLOYMENT_OBSERVED, serde_json::to_vec(e)),
            ReleaseEvent::Unauthorised(e) => (UNAUTHORISED, serde_json::to_vec(e)),
            ReleaseEvent::IncidentOpened(e) => (INCIDENT_OPENED, serde_json::to_vec(e)),
            ReleaseEvent::IncidentResolved(e) => (INCIDENT_RESOLVED, serde_json::to_vec(e)),
            ReleaseEvent::CallbackPending(e) => (CALLBACK_PENDING, serde_json::to_vec(e)),
            ReleaseEvent::CallbackAnswered(e) => (CALLBACK_ANSWERED, serde_json::to_vec(e)),
            ReleaseEvent::Change(e) => return e.to_new_event(metadata),
            ReleaseEvent::Ci(e) => return e.to_new_event(metadata),
        };
        // Serialising these plain structs cannot fail.
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }
}

impl ReleaseEvent {
    /// Reads a stored release, deployment, pipeline or gate event back (`None`: another type).
    pub fn from_record(record: &FoldRecord) -> Result<Option<ReleaseEvent>, ReleaseError> {
        use types::*;
        let bad = |e: serde_json::Error| ReleaseError::Undecodable { position: record.position, detail: e.to_string() };
        Ok(Some(match record.event_type.as_str() {
            PLANNED => ReleaseEvent::Planned(record.data_as().map_err(bad)?),
            TRANSITIONED => ReleaseEvent::Transitioned(record.data_as().map_err(bad)?),
            STEP_SIGNED => ReleaseEvent::StepSigned(record.data_as().map_err(bad)?),
            INCIDENT_LINKED => ReleaseEvent::IncidentLinked(record.data_as().map_err(bad)?),
            NUMBER_ASSIGNED => ReleaseEvent::NumberAssigned(record.data_as().map_err(bad)?),
            DEPLOYMENT_REQUESTED => ReleaseEvent::DeploymentRequested(record.data_as().map_err(bad)?),
            DEPLOYMENT_STARTED => ReleaseEvent::DeploymentStarted(record.data_as().map_err(bad)?),
            DEPLOYMENT_ENDED => ReleaseEvent::DeploymentEnded(record.data_as().map_err(bad)?),
            GATE_DECIDED => ReleaseEvent::GateDecided(record.data_as().map_err(bad)?),
            PIPELINE_CHANGE_OPENED => ReleaseEvent::PipelineChangeOpened(record.data_as().map_err(bad)?),
            PIPELINE_TEMPLATE_SET => ReleaseEvent::PipelineTemplateSet(record.data_as().map_err(bad)?),
            MAPPING_SET => ReleaseEvent::MappingSet(record.data_as().map_err(bad)?),
            MAPPING_REMOVED => ReleaseEvent::MappingRemoved(record.data_as().map_err(bad)?),
            DELIVERY_RECEIVED => ReleaseEvent::DeliveryReceived(record.data_as().map_err(bad)?),
            DEPLOYMENT_OBSERVED => ReleaseEvent::DeploymentObserved(record.data_as().map_err(bad)?),
            UNAUTHORISED => ReleaseEvent::Unauthorised(record.data_as().map_err(bad)?),
            INCIDENT_OPENED => ReleaseEvent::IncidentOpened(record.data_as().map_err(bad)?),
            INCIDENT_RESOLVED => ReleaseEvent::IncidentResolved(record.data_as().map_err(bad)?),
            CALLBACK_PENDING => ReleaseEvent::CallbackPending(record.data_as().map_err(bad)?),
            CALLBACK_ANSWERED => ReleaseEvent::CallbackAnswered(record.data_as().map_err(bad)?),
            _ => return Ok(None),
        }))
    }
}

/// Who did something, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The principal.
    pub by: String,
    /// When (the record's time).
    pub at: Timestamp,
    /// Where in the log.
    pub position: u64,
}

/// A signed acceptance step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// For where.
    pub environment: Environment,
    /// Which step.
    pub step: String,
    /// The role it needed.
    pub role: Role,
    /// What they wrote.
    pub note: Option<String>,
    /// Who and when.
    pub stamp: Stamp,
}

/// A linked incident (RL-7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedIncident {
    /// Its id.
    pub incident: String,
    /// A summary.
    pub title: Option<String>,
    /// When it began.
    pub occurred_at: Timestamp,
    /// Who linked it, when.
    pub stamp: Stamp,
}

/// A release as its stream tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseRecord {
    /// The release.
    pub release_id: ReleaseId,
    /// Its number.
    pub number: ReleaseNumber,
    /// What it is.
    pub details: ReleaseDetails,
    /// Where it is.
    pub state: ReleaseState,
    /// Who planned it, when.
    pub planned: Stamp,
    /// Its transitions, oldest first.
    pub transitions: Vec<(ReleaseTransitioned, Stamp)>,
    /// Signed acceptance steps.
    pub signatures: Vec<Signature>,
    /// Environments it is accepted for, with when.
    pub accepted: BTreeMap<Environment, Stamp>,
    /// Environments it was deployed to (succeeded, not rolled back), with the deployment.
    pub deployed: BTreeMap<Environment, (DeploymentId, Stamp)>,
    /// Linked incidents.
    pub incidents: Vec<LinkedIncident>,
    /// The stream version folded.
    pub version: u64,
}

impl ReleaseRecord {
    /// Its label: the number.
    pub fn label(&self) -> String {
        self.number.to_string()
    }

    /// The version it sets on `ci`, if any.
    pub fn version_for(&self, ci: CiId) -> Option<&CiVersion> {
        self.details.versions.iter().find(|v| v.ci == ci)
    }

    /// The steps of `environment`.
    pub fn steps_for(&self, environment: Environment) -> impl Iterator<Item = &AcceptanceStep> {
        self.details.acceptance.iter().filter(move |s| s.environment == environment)
    }

    /// Whether `step` of `environment` was signed.
    pub fn signed(&self, environment: Environment, step: &str) -> Option<&Signature> {
        self.signatures.iter().find(|s| s.environment == environment && s.step == step)
    }

    /// Folds one of its events.
    pub fn apply(&mut self, event: &ReleaseEvent, stamp: Stamp) {
        match event {
            ReleaseEvent::Transitioned(t) => {
                self.state = t.to;
                match (t.action, t.environment, t.deployment) {
                    (ReleaseAction::Build, _, _) => self.accept_without_steps(&stamp),
                    (ReleaseAction::Deployed, Some(environment), Some(deployment)) => {
                        self.deployed.insert(environment, (deployment, stamp.clone()));
                    }
                    (ReleaseAction::RollBack, Some(environment), _) => {
                        self.deployed.remove(&environment);
                    }
                    _ => {}
                }
                self.transitions.push((t.clone(), stamp));
            }
            ReleaseEvent::StepSigned(s) => {
                self.signatures.push(Signature {
                    environment: s.environment,
                    step: s.step.clone(),
                    role: s.role,
                    note: s.note.clone(),
                    stamp: stamp.clone(),
                });
                if s.environment_accepted {
                    self.accepted.insert(s.environment, stamp);
                    if self.state == ReleaseState::Built {
                        self.state = ReleaseState::Accepted;
                    }
                }
            }
            ReleaseEvent::IncidentLinked(i) => self.incidents.push(LinkedIncident {
                incident: i.incident.clone(),
                title: i.title.clone(),
                occurred_at: i.occurred_at,
                stamp,
            }),
            _ => {}
        }
    }

    /// At build, environments without acceptance steps are accepted (the policy allowed it).
    fn accept_without_steps(&mut self, stamp: &Stamp) {
        for environment in self.details.environments.clone() {
            if self.steps_for(environment).next().is_none() {
                self.accepted.insert(environment, stamp.clone());
            }
        }
    }
}

/// A deployment as its stream tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentRecord {
    /// What was asked.
    pub request: DeploymentRequested,
    /// Where it is.
    pub state: DeploymentState,
    /// Who asked, when.
    pub requested: Stamp,
    /// The configuration it changed, as it was when it started.
    pub before: Vec<CiConfig>,
    /// Its transitions after the request, oldest first.
    pub history: Vec<(DeploymentState, Option<String>, Stamp)>,
    /// The refusal's code.
    pub refused_code: Option<String>,
    /// What the tool reported, oldest first (observed deployments).
    pub observations: Vec<(DeploymentObserved, Stamp)>,
    /// The unauthorised-change record, if it was observed without authority.
    pub unauthorised: Option<(UnauthorisedChange, Stamp)>,
    /// The stream version folded.
    pub version: u64,
}

impl DeploymentRecord {
    /// Folds one of its later events.
    pub fn apply(&mut self, event: &ReleaseEvent, stamp: Stamp) {
        match event {
            ReleaseEvent::DeploymentStarted(s) => {
                self.before = s.before.clone();
                self.state = DeploymentState::Started;
                self.history.push((DeploymentState::Started, None, stamp));
            }
            ReleaseEvent::DeploymentEnded(e) => {
                self.state = e.state;
                if e.state == DeploymentState::Refused {
                    self.refused_code = e.code.clone();
                }
                self.history.push((e.state, e.note.clone(), stamp));
            }
            ReleaseEvent::DeploymentObserved(o) => self.observations.push(((**o).clone(), stamp)),
            ReleaseEvent::Unauthorised(u) => self.unauthorised = Some(((**u).clone(), stamp)),
            _ => {}
        }
    }

    /// When it reached `state`, if it did.
    pub fn reached(&self, state: DeploymentState) -> Option<&Stamp> {
        if state == DeploymentState::Requested {
            return Some(&self.requested);
        }
        self.history.iter().find(|(s, _, _)| *s == state).map(|(_, _, stamp)| stamp)
    }
}

/// Folds a release's records (its stream, in order).
pub fn fold_release(records: &[EventRecord]) -> Result<Option<ReleaseRecord>, ReleaseError> {
    let mut release: Option<ReleaseRecord> = None;
    for record in records {
        fold_release_record(&mut release, record)?;
    }
    Ok(release)
}

/// Who did what, when: the stamp of a stored record.
pub fn stamp_of(record: &FoldRecord) -> Stamp {
    Stamp { by: record.principal.to_string(), at: record.recorded_at, position: record.position }
}

/// Folds one record of a release's stream.
pub fn fold_release_record(release: &mut Option<ReleaseRecord>, record: &EventRecord) -> Result<(), ReleaseError> {
    let Some(event) = ReleaseEvent::from_record(record)? else { return Ok(()) };
    fold_release_event(release, &event, stamp_of(record), record.stream_version)
}

/// Folds one decoded event of a release's stream, recorded with `stamp` at `stream_version`.
pub fn fold_release_event(
    release: &mut Option<ReleaseRecord>,
    event: &ReleaseEvent,
    stamp: Stamp,
    stream_version: u64,
) -> Result<(), ReleaseError> {
    match (release.as_mut(), event) {
        (None, ReleaseEvent::Planned(planned)) => {
            *release = Some(ReleaseRecord {
                release_id: planned.release_id,
                number: planned.number,
                details: planned.details.clone(),
                state: ReleaseState::Planned,
                planned: stamp,
                transitions: Vec::new(),
                signatures: Vec::new(),
                accepted: BTreeMap::new(),
                deployed: BTreeMap::new(),
                incidents: Vec::new(),
                version: stream_version,
            });
        }
        (Some(existing), _) => {
            existing.apply(event, stamp);
            existing.version = stream_version;
        }
        (None, _) => {
            return Err(ReleaseError::Undecodable {
                position: stamp.position,
                detail: "a release event before the release was planned".into(),
            });
        }
    }
    Ok(())
}

/// Folds one record of a deployment's stream.
pub fn fold_deployment_record(
    deployment: &mut Option<DeploymentRecord>,
    record: &EventRecord,
) -> Result<(), ReleaseError> {
    let Some(event) = ReleaseEvent::from_record(record)? else { return Ok(()) };
    fold_deployment_event(deployment, &event, stamp_of(record), record.stream_version)
}

/// Folds one decoded event of a deployment's stream, recorded with `stamp` at `stream_version`.
pub fn fold_deployment_event(
    deployment: &mut Option<DeploymentRecord>,
    event: &ReleaseEvent,
    stamp: Stamp,
    stream_version: u64,
) -> Result<(), ReleaseError> {
    match (deployment.as_mut(), event) {
        (None, ReleaseEvent::DeploymentRequested(requested)) => {
            *deployment = Some(DeploymentRecord {
                request: (**requested).clone(),
                state: DeploymentState::Requested,
                requested: stamp,
                before: Vec::new(),
                history: Vec::new(),
                refused_code: None,
                observations: Vec::new(),
                unauthorised: None,
                version: stream_version,
            });
        }
        (Some(existing), _) => {
            existing.apply(event, stamp);
            existing.version = stream_version;
        }
        (None, _) => {
            return Err(ReleaseError::Undecodable {
                position: stamp.position,
                detail: "a deployment event before the deployment was requested".into(),
            });
        }
    }
    Ok(())
}

/// Folds one decoded event of an incident's stream, recorded at `position`.
pub fn fold_incident_event(incident: &mut Option<IncidentRecord>, event: &ReleaseEvent, position: u64) {
    match (incident.as_mut(), event) {
        (None, ReleaseEvent::IncidentOpened(opened)) => {
            *incident = Some(IncidentRecord { opened: (**opened).clone(), resolved: None, position });
        }
        (Some(existing), ReleaseEvent::IncidentResolved(resolved)) => existing.resolved = Some((**resolved).clone()),
        _ => {}
    }
}
