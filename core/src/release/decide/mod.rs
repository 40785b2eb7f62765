//! What release, deployment and gate decisions read ([`ReleaseKey`]), the commands, and the
//! decider. CI edits made with a deployment are decided by the CI domain's own decider on the
//! CI streams this decision read, so CM-3 and the schema hold exactly as for a person's edit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde_json::Value;

use super::events::*;
use super::table::{self, Authority};
use super::*;
use crate::access::{AccessState, Operation, access_stream, permits, roles_for};
use crate::ci::CiField;
use crate::ci::{CiCommand, CiError, CiKey, CiRead, CiSnapshot, Update};
use crate::decider::{CommandContext, Decider, Decision, Depth, Entry, ReadSet, StreamKey};
use crate::event::{EventRecord, StreamId};
use crate::ids::{ChangeId, CiId, TemplateId};

mod observed;
use super::observe::{
    CALLBACKS_STREAM, CallbackAnswered, CallbackPending, Callbacks, DeliveryReceived, IncidentOpened, IncidentRecord,
    IncidentResolved, MAPPINGS_STREAM, MappingRemoved, MappingRule, Mappings, ObservedDeployment,
};
use crate::change::{ChangeKey, ChangeRead, ChangeSettings};

/// The attribute a deployment sets to the artifact's name.
pub const ARTIFACT_ATTRIBUTE: &str = "artifact";
/// The attribute a deployment sets to the artifact's digest.
pub const DIGEST_ATTRIBUTE: &str = "digest";

/// The stream of one pipeline run: its gate decisions and the change opened for it.
pub fn pipeline_stream(pipeline: &Pipeline) -> StreamId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(pipeline.provider.trim().to_lowercase().as_bytes());
    hasher.update(&[0]);
    hasher.update(pipeline.run_id.trim().as_bytes());
    StreamId::new(format!("pipeline-{}", &hasher.finalize().to_hex()[..32])).expect("valid stream id")
}

/// The stream of gate decisions asked without a pipeline run.
pub fn gate_stream(ci: CiId) -> StreamId {
    StreamId::new(format!("gate-{ci}")).expect("valid stream id")
}

/// The stream naming each service's pipeline change template.
pub const PIPELINE_TEMPLATES_STREAM: &str = "pipeline-templates";

/// A stream a release decision reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReleaseKey {
    /// Principals and roles.
    Access,
    /// The release numbers: the newest only.
    Numbers,
    /// A release.
    Release(ReleaseId),
    /// A deployment.
    Deployment(DeploymentId),
    /// A pipeline run's stream, by its stream id.
    Pipeline(StreamId),
    /// Which template each service's pipeline changes come from.
    PipelineTemplates,
    /// Whether a baseline of that name exists (RL-5).
    Baseline(String),
    /// A stream the CI domain reads (CIs, the schema, a change's state).
    Ci(CiKey),
    /// The mapping rules from tools' names to CIs.
    Mappings,
    /// A delivery's stream: whether it was recorded.
    Delivery(StreamId),
    /// An incident's stream.
    Incident(StreamId),
    /// A stream the change domain reads (the retrospective change of an unauthorised
    /// deployment).
    Change(ChangeKey),
    /// GitHub protection-rule callbacks waiting for the gate.
    Callbacks,
}

/// One pipeline run as its stream tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineRun {
    /// The change opened for it.
    pub change: Option<ChangeId>,
    /// Its gate decisions, oldest first.
    pub decisions: Vec<GateDecided>,
}

/// The fold of a [`ReleaseKey`].
#[derive(Clone, Debug)]
#[allow(missing_docs, reason = "each variant is the fold of the key of the same name")]
pub enum ReleaseRead {
    Access(AccessState),
    Numbers(Option<ReleaseNumber>),
    Release(Option<Box<ReleaseRecord>>),
    Deployment(Option<Box<DeploymentRecord>>),
    Pipeline(PipelineRun),
    Templates(BTreeMap<CiId, TemplateId>),
    Baseline(bool),
    Ci(CiRead),
    Mappings(Mappings),
    Delivery(Option<Box<DeliveryReceived>>),
    Incident(Option<Box<IncidentRecord>>),
    Change(Box<ChangeRead>),
    Callbacks(Callbacks),
}

impl StreamKey for ReleaseKey {
    type State = ReleaseRead;

    fn streams(&self) -> Vec<StreamId> {
        vec![match self {
            ReleaseKey::Access => access_stream(),
            ReleaseKey::Numbers => StreamId::new(NUMBERS_STREAM).expect("valid stream id"),
            ReleaseKey::Release(id) => id.stream(),
            ReleaseKey::Deployment(id) => id.stream(),
            ReleaseKey::Pipeline(stream) => stream.clone(),
            ReleaseKey::PipelineTemplates => StreamId::new(PIPELINE_TEMPLATES_STREAM).expect("valid stream id"),
            ReleaseKey::Baseline(name) => crate::baseline::stream(name),
            ReleaseKey::Ci(key) => return key.streams(),
            ReleaseKey::Mappings => StreamId::new(MAPPINGS_STREAM).expect("valid stream id"),
            ReleaseKey::Delivery(stream) | ReleaseKey::Incident(stream) => stream.clone(),
            ReleaseKey::Change(key) => return key.streams(),
            ReleaseKey::Callbacks => StreamId::new(CALLBACKS_STREAM).expect("valid stream id"),
        }]
    }

    fn depth(&self) -> Depth {
        match self {
            ReleaseKey::Numbers => Depth::Newest,
            ReleaseKey::Change(key) => key.depth(),
            ReleaseKey::Ci(key) => key.depth(),
            _ => Depth::Whole,
        }
    }

    fn initial(&self) -> ReleaseRead {
        match self {
            ReleaseKey::Access => ReleaseRead::Access(AccessState::default()),
            ReleaseKey::Numbers => ReleaseRead::Numbers(None),
            ReleaseKey::Release(_) => ReleaseRead::Release(None),
            ReleaseKey::Deployment(_) => ReleaseRead::Deployment(None),
            ReleaseKey::Pipeline(_) => ReleaseRead::Pipeline(PipelineRun::default()),
            ReleaseKey::PipelineTemplates => ReleaseRead::Templates(BTreeMap::new()),
            ReleaseKey::Baseline(_) => ReleaseRead::Baseline(false),
            ReleaseKey::Ci(key) => ReleaseRead::Ci(key.initial()),
            ReleaseKey::Mappings => ReleaseRead::Mappings(Mappings::default()),
            ReleaseKey::Delivery(_) => ReleaseRead::Delivery(None),
            ReleaseKey::Incident(_) => ReleaseRead::Incident(None),
            ReleaseKey::Change(key) => ReleaseRead::Change(Box::new(key.initial())),
            ReleaseKey::Callbacks => ReleaseRead::Callbacks(Callbacks::default()),
        }
    }

    fn evolve(&self, state: &mut ReleaseRead, record: &EventRecord) -> Result<(), crate::Error> {
        match (state, self) {
            (ReleaseRead::Access(access), _) => access.apply(record)?,
            (ReleaseRead::Numbers(newest), _) => {
                if let Some(ReleaseEvent::NumberAssigned(assigned)) = ReleaseEvent::from_record(record)? {
                    *newest = Some(assigned.number);
                }
            }
            (ReleaseRead::Release(release), _) => {
                let mut folded = release.take().map(|b| *b);
                fold_release_record(&mut folded, record)?;
                *release = folded.map(Box::new);
            }
            (ReleaseRead::Deployment(deployment), _) => {
                let mut folded = deployment.take().map(|b| *b);
                fold_deployment_record(&mut folded, record)?;
                *deployment = folded.map(Box::new);
            }
            (ReleaseRead::Pipeline(run), _) => match ReleaseEvent::from_record(record)? {
                Some(ReleaseEvent::PipelineChangeOpened(opened)) => run.change = Some(opened.change_id),
                Some(ReleaseEvent::GateDecided(decided)) => run.decisions.push(*decided),
                _ => {}
            },
            (ReleaseRead::Templates(templates), _) => {
                if let Some(ReleaseEvent::PipelineTemplateSet(set)) = ReleaseEvent::from_record(record)? {
                    match set.template_id {
                        Some(template) => templates.insert(set.ci, template),
                        None => templates.remove(&set.ci),
                    };
                }
            }
            (ReleaseRead::Baseline(exists), _) => *exists = record.event_type == crate::baseline::CREATED,
            (ReleaseRead::Ci(ci), ReleaseKey::Ci(key)) => key.evolve(ci, record)?,
            (ReleaseRead::Ci(_), _) => {}
            (ReleaseRead::Change(change), ReleaseKey::Change(key)) => key.evolve(change, record)?,
            (ReleaseRead::Change(_), _) => {}
            (ReleaseRead::Mappings(mappings), _) => match ReleaseEvent::from_record(record)? {
                Some(ReleaseEvent::MappingSet(rule)) => mappings.set(&rule),
                Some(ReleaseEvent::MappingRemoved(removed)) => mappings.remove(&removed),
                _ => {}
            },
            (ReleaseRead::Callbacks(callbacks), _) => match ReleaseEvent::from_record(record)? {
                Some(ReleaseEvent::CallbackPending(p)) => {
                    callbacks.pending.insert(p.callback_url.clone(), *p);
                }
                Some(ReleaseEvent::CallbackAnswered(a)) => {
                    callbacks.pending.remove(&a.callback_url);
                }
                _ => {}
            },
            (ReleaseRead::Delivery(delivery), _) => {
                if let Some(ReleaseEvent::DeliveryReceived(received)) = ReleaseEvent::from_record(record)? {
                    *delivery = Some(received);
                }
            }
            (ReleaseRead::Incident(incident), _) => {
                if let Some(event) = ReleaseEvent::from_record(record)? {
                    let mut folded = incident.take().map(|b| *b);
                    fold_incident_event(&mut folded, &event, record.position);
                    *incident = folded.map(Box::new);
                }
            }
        }
        Ok(())
    }
}

static EMPTY_ACCESS: LazyLock<AccessState> = LazyLock::new(AccessState::default);

/// Typed access to what a release decision read.
impl ReadSet<ReleaseKey> {
    /// Principals and roles (empty before read).
    pub fn access(&self) -> &AccessState {
        match self.get(&ReleaseKey::Access) {
            Some(ReleaseRead::Access(access)) => access,
            _ => &EMPTY_ACCESS,
        }
    }

    /// The release, if read and planned.
    pub fn release(&self, id: ReleaseId) -> Option<&ReleaseRecord> {
        match self.get(&ReleaseKey::Release(id)) {
            Some(ReleaseRead::Release(Some(release))) => Some(release),
            _ => None,
        }
    }

    /// The deployment, if read and requested.
    pub fn deployment(&self, id: DeploymentId) -> Option<&DeploymentRecord> {
        match self.get(&ReleaseKey::Deployment(id)) {
            Some(ReleaseRead::Deployment(Some(deployment))) => Some(deployment),
            _ => None,
        }
    }

    /// The pipeline run, if read.
    pub fn pipeline_run(&self, stream: &StreamId) -> Option<&PipelineRun> {
        match self.get(&ReleaseKey::Pipeline(stream.clone())) {
            Some(ReleaseRead::Pipeline(run)) => Some(run),
            _ => None,
        }
    }

    /// A CI as it stands, if read and registered.
    pub fn ci(&self, id: CiId) -> Option<&CiSnapshot> {
        match self.get(&ReleaseKey::Ci(CiKey::Ci(id))) {
            Some(ReleaseRead::Ci(CiRead::Ci(state))) => state.ci.as_ref(),
            _ => None,
        }
    }

    /// A change's CM-3 record, if read and submitted.
    pub fn change_control(&self, id: ChangeId) -> Option<&crate::control::ChangeControl> {
        match self.get(&ReleaseKey::Ci(CiKey::Control(id))) {
            Some(ReleaseRead::Ci(CiRead::Control(control))) if control.number.is_some() => Some(control),
            _ => None,
        }
    }

    /// The mapping rules (none before read).
    pub fn mappings(&self) -> &Mappings {
        static EMPTY: LazyLock<Mappings> = LazyLock::new(Mappings::default);
        match self.get(&ReleaseKey::Mappings) {
            Some(ReleaseRead::Mappings(mappings)) => mappings,
            _ => &EMPTY,
        }
    }

    /// The delivery recorded on `stream`, if read and recorded.
    pub fn delivery(&self, stream: &StreamId) -> Option<&DeliveryReceived> {
        match self.get(&ReleaseKey::Delivery(stream.clone())) {
            Some(ReleaseRead::Delivery(Some(delivery))) => Some(delivery),
            _ => None,
        }
    }

    /// The incident on `stream`, if read and opened.
    pub fn incident(&self, stream: &StreamId) -> Option<&IncidentRecord> {
        match self.get(&ReleaseKey::Incident(stream.clone())) {
            Some(ReleaseRead::Incident(Some(incident))) => Some(incident),
            _ => None,
        }
    }

    /// Whether `class` is under change control, per the schema read (built-in rules before).
    pub fn controlled(&self, class: crate::model::CiClass) -> bool {
        static EMPTY: LazyLock<crate::ci::schema::SchemaRegistry> = LazyLock::new(Default::default);
        match self.get(&ReleaseKey::Ci(CiKey::Schema)) {
            Some(ReleaseRead::Ci(CiRead::Schema(schema))) => schema.controlled(class),
            _ => EMPTY.controlled(class),
        }
    }

    /// The change streams read, as the change decider reads them.
    fn change_read_set(&self) -> ReadSet<ChangeKey> {
        let mut sub = ReadSet::new();
        for (key, entry) in self.entries() {
            if let (ReleaseKey::Change(change_key), ReleaseRead::Change(state)) = (key, &entry.state) {
                sub.insert(change_key.clone(), Entry { state: (**state).clone(), versions: entry.versions.clone() });
            }
        }
        sub
    }

    /// The CI streams read, as the CI decider reads them.
    fn ci_read_set(&self) -> ReadSet<CiKey> {
        let mut sub = ReadSet::new();
        for (key, entry) in self.entries() {
            if let (ReleaseKey::Ci(ci_key), ReleaseRead::Ci(state)) = (key, &entry.state) {
                sub.insert(ci_key.clone(), Entry { state: state.clone(), versions: entry.versions.clone() });
            }
        }
        sub
    }
}

/// A request about releases, deployments or the gate.
#[derive(Clone, Debug, PartialEq)]
pub enum ReleaseCommand {
    /// Plan and number a release (RL-1, RL-2, RL-5).
    Plan {
        /// The release.
        release_id: ReleaseId,
        /// What it is.
        details: ReleaseDetails,
    },
    /// Build, reject, defer, resume, review or close it.
    Act {
        /// The release.
        release_id: ReleaseId,
        /// The action.
        action: ReleaseAction,
        /// The note or reason.
        note: Option<String>,
    },
    /// Sign off one acceptance step (RL-4).
    Accept {
        /// The release.
        release_id: ReleaseId,
        /// For where.
        environment: Environment,
        /// Which step.
        step: String,
        /// A note.
        note: Option<String>,
    },
    /// Link an incident to the release (RL-7).
    LinkIncident {
        /// The release.
        release_id: ReleaseId,
        /// The incident's id.
        incident: String,
        /// A summary.
        title: Option<String>,
        /// When it began.
        occurred_at: crate::time::Timestamp,
    },
    /// Ask for a deployment (refused and recorded as refused on a digest mismatch, RL-3).
    RequestDeployment(Box<DeploymentRequested>),
    /// A deployment tool reports an outcome: started, succeeded (the CIs are edited in the
    /// same append) or failed.
    Report {
        /// The deployment.
        deployment_id: DeploymentId,
        /// What happened.
        outcome: ReportedOutcome,
        /// A note.
        note: Option<String>,
    },
    /// Roll a deployment back: every CI it touched returns to what it was when it started.
    RollBack {
        /// The deployment.
        deployment_id: DeploymentId,
        /// The change authorising the roll-back's edits (default: the deployment's own, if it
        /// is still implementing or failed).
        change_id: Option<ChangeId>,
        /// Why.
        reason: String,
    },
    /// Record a gate answer.
    RecordGate(Box<GateDecided>),
    /// Record the change opened for a pipeline run (once per run).
    OpenPipelineChange(PipelineChangeOpened),
    /// Name (or stop naming) the template of a service's pipeline changes.
    SetPipelineTemplate(PipelineTemplateSet),
    /// Record what a deployment tool observed about one of its deployments.
    Observe(Box<ObservedDeployment>),
    /// Keep a delivery that maps to nothing, with the reason.
    RecordUnmapped(Box<DeliveryReceived>),
    /// Set a mapping rule (admin).
    SetMapping(MappingRule),
    /// Remove a mapping rule (admin).
    RemoveMapping(MappingRemoved),
    /// Open an incident (IN-1); a delivery that repeats an open incident records the delivery.
    OpenIncident {
        /// The incident.
        opened: Box<IncidentOpened>,
        /// The delivery that told it, if a tool did.
        delivery: Option<Box<DeliveryReceived>>,
    },
    /// Keep a GitHub protection-rule callback the gate answered pending.
    CallbackPending(Box<CallbackPending>),
    /// Record that a waiting callback was answered.
    CallbackAnswered(Box<CallbackAnswered>),
    /// Resolve an incident.
    ResolveIncident {
        /// The resolution.
        resolved: Box<IncidentResolved>,
        /// The delivery that told it, if a tool did.
        delivery: Option<Box<DeliveryReceived>>,
    },
}

/// A release decision.
pub type ReleaseDecision = Decision<ReleaseKey, ReleaseEvent>;

/// Decides release, deployment, gate and tooling commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReleaseDecider {
    /// The change settings the retrospective change of an unauthorised deployment is decided
    /// with (its CH-8 deadline).
    pub change_settings: ChangeSettings,
}

impl Decider for ReleaseDecider {
    type Command = ReleaseCommand;
    type Key = ReleaseKey;
    type Event = ReleaseEvent;
    type Error = ReleaseError;
    const NAME: &'static str = "release";

    fn reads(&self, command: &ReleaseCommand, read: &ReadSet<ReleaseKey>) -> Vec<ReleaseKey> {
        reads_of(command, read)
    }

    /// A gate decision's or a pipeline claim's run stream, a delivery's stream, and the
    /// deployment a tool reports (when not cached: a tool's first word about a deployment),
    /// are new streams nearly always, and every decision that does not refuse writes them.
    fn presumed_new(&self, command: &ReleaseCommand, key: &ReleaseKey) -> bool {
        matches!(
            (command, key),
            (ReleaseCommand::RecordGate(_) | ReleaseCommand::OpenPipelineChange(_), ReleaseKey::Pipeline(_))
                | (ReleaseCommand::Observe(_) | ReleaseCommand::RecordUnmapped(_), ReleaseKey::Delivery(_))
                | (ReleaseCommand::Observe(_), ReleaseKey::Deployment(_))
        )
    }

    fn decide(
        &self,
        command: &ReleaseCommand,
        read: &ReadSet<ReleaseKey>,
        context: &CommandContext,
    ) -> Result<ReleaseDecision, ReleaseError> {
        let mut decision = ReleaseDecision::default();
        let actor = context.actor();
        match command {
            ReleaseCommand::Plan { release_id, details } => plan(read, &mut decision, actor, *release_id, details)?,
            ReleaseCommand::Act { release_id, action, note } => {
                act(read, &mut decision, actor, *release_id, *action, note.as_deref())?;
            }
            ReleaseCommand::Accept { release_id, environment, step, note } => {
                accept(read, &mut decision, actor, *release_id, *environment, step, note.as_deref())?;
            }
            ReleaseCommand::LinkIncident { release_id, incident, title, occurred_at } => {
                let release =
                    read.release(*release_id).ok_or_else(|| ReleaseError::UnknownRelease(release_id.to_string()))?;
                name_text("incident", incident)?;
                optional_text("title", title.as_deref(), MAX_TITLE_BYTES)?;
                if release.incidents.iter().any(|i| i.incident == *incident) {
                    return Err(ReleaseError::IncidentLinked(incident.clone()));
                }
                bounded("incidents", release.incidents.len() + 1, MAX_INCIDENTS_PER_RELEASE)?;
                decision.write(
                    ReleaseKey::Release(*release_id),
                    ReleaseEvent::IncidentLinked(IncidentLinked {
                        release_id: *release_id,
                        incident: incident.clone(),
                        title: title.clone(),
                        occurred_at: *occurred_at,
                    }),
                );
            }
            ReleaseCommand::RequestDeployment(request) => request_deployment(read, &mut decision, request)?,
            ReleaseCommand::Report { deployment_id, outcome, note } => {
                report(read, &mut decision, *deployment_id, *outcome, note.as_deref())?;
            }
            ReleaseCommand::RollBack { deployment_id, change_id, reason } => {
                roll_back(read, &mut decision, *deployment_id, *change_id, reason)?;
            }
            ReleaseCommand::RecordGate(decided) => {
                let key = match &decided.request.pipeline {
                    Some(pipeline) => ReleaseKey::Pipeline(pipeline_stream(pipeline)),
                    None => ReleaseKey::Pipeline(gate_stream(decided.request.ci)),
                };
                decision.write(key, ReleaseEvent::GateDecided(decided.clone()));
            }
            ReleaseCommand::OpenPipelineChange(opened) => {
                check_pipeline(&opened.pipeline)?;
                let stream = pipeline_stream(&opened.pipeline);
                if let Some(existing) = read.pipeline_run(&stream).and_then(|r| r.change) {
                    return Err(ReleaseError::Duplicate { what: "pipeline run's change", item: existing.to_string() });
                }
                decision.write(ReleaseKey::Pipeline(stream), ReleaseEvent::PipelineChangeOpened(opened.clone()));
            }
            ReleaseCommand::SetPipelineTemplate(set) => {
                require(read.access(), actor, Operation::ManageReleases, "name a pipeline change template")?;
                live_ci(read, set.ci)?;
                decision.write(ReleaseKey::PipelineTemplates, ReleaseEvent::PipelineTemplateSet(set.clone()));
            }
            ReleaseCommand::Observe(observed) => observed::observe(self, read, &mut decision, context, observed)?,
            ReleaseCommand::RecordUnmapped(delivery) => observed::receive(read, &mut decision, delivery)?,
            ReleaseCommand::SetMapping(rule) => observed::set_mapping(read, &mut decision, actor, rule)?,
            ReleaseCommand::RemoveMapping(removed) => observed::remove_mapping(read, &mut decision, actor, removed)?,
            ReleaseCommand::OpenIncident { opened, delivery } => {
                observed::open_incident(read, &mut decision, opened, delivery.as_deref())?;
            }
            ReleaseCommand::CallbackPending(pending) => observed::callback_pending(read, &mut decision, pending)?,
            ReleaseCommand::CallbackAnswered(answered) => observed::callback_answered(read, &mut decision, answered)?,
            ReleaseCommand::ResolveIncident { resolved, delivery } => {
                observed::resolve_incident(read, &mut decision, resolved, delivery.as_deref())?;
            }
        }
        debug_assert!(decision.event_count() > 0, "an accepted release command writes something");
        Ok(decision)
    }
}

/// The keys `command` reads, given what is read.
fn reads_of(command: &ReleaseCommand, read: &ReadSet<ReleaseKey>) -> Vec<ReleaseKey> {
    // A gate answer or a run's change claim needs no one's roles: the caller's were checked.
    // Only commands whose rules name roles read the access stream; a gate answer, a run's
    // change claim and deployments were authorised by the caller's operation (Deploy).
    let mut keys = match command {
        ReleaseCommand::RecordGate(_)
        | ReleaseCommand::OpenPipelineChange(_)
        | ReleaseCommand::RequestDeployment(_)
        | ReleaseCommand::Report { .. }
        | ReleaseCommand::RollBack { .. }
        | ReleaseCommand::Observe(_)
        | ReleaseCommand::RecordUnmapped(_)
        | ReleaseCommand::OpenIncident { .. }
        | ReleaseCommand::ResolveIncident { .. }
        | ReleaseCommand::CallbackPending(_)
        | ReleaseCommand::CallbackAnswered(_) => Vec::new(),
        _ => vec![ReleaseKey::Access],
    };
    match command {
        ReleaseCommand::Plan { release_id, details } => {
            keys.extend([ReleaseKey::Numbers, ReleaseKey::Release(*release_id)]);
            keys.extend(details.versions.iter().map(|v| ReleaseKey::Ci(CiKey::Ci(v.ci))));
            keys.extend(details.changes.iter().map(|c| ReleaseKey::Ci(CiKey::Control(*c))));
            keys.extend(details.baseline.iter().map(|b| ReleaseKey::Baseline(b.clone())));
        }
        ReleaseCommand::Act { release_id, .. }
        | ReleaseCommand::Accept { release_id, .. }
        | ReleaseCommand::LinkIncident { release_id, .. } => keys.push(ReleaseKey::Release(*release_id)),
        ReleaseCommand::RequestDeployment(request) => {
            keys.push(ReleaseKey::Deployment(request.deployment_id));
            keys.extend(request.release_id.map(ReleaseKey::Release));
            keys.extend(request.change_id.map(|c| ReleaseKey::Ci(CiKey::Control(c))));
            keys.extend(request.targets.iter().map(|t| ReleaseKey::Ci(CiKey::Ci(t.ci))));
        }
        ReleaseCommand::Report { deployment_id, .. } | ReleaseCommand::RollBack { deployment_id, .. } => {
            keys.push(ReleaseKey::Deployment(*deployment_id));
            if let Some(deployment) = read.deployment(*deployment_id) {
                let request = &deployment.request;
                keys.extend(request.release_id.map(ReleaseKey::Release));
                keys.push(ReleaseKey::Ci(CiKey::Schema));
                keys.extend(request.targets.iter().map(|t| ReleaseKey::Ci(CiKey::Ci(t.ci))));
                let change = match command {
                    ReleaseCommand::RollBack { change_id: Some(change), .. } => Some(*change),
                    _ => request.change_id,
                };
                keys.extend(change.map(|c| ReleaseKey::Ci(CiKey::Control(c))));
            }
        }
        ReleaseCommand::RecordGate(decided) => keys.push(ReleaseKey::Pipeline(match &decided.request.pipeline {
            Some(pipeline) => pipeline_stream(pipeline),
            None => gate_stream(decided.request.ci),
        })),
        ReleaseCommand::OpenPipelineChange(opened) => {
            keys.push(ReleaseKey::Pipeline(pipeline_stream(&opened.pipeline)))
        }
        ReleaseCommand::SetPipelineTemplate(set) => {
            keys.extend([ReleaseKey::PipelineTemplates, ReleaseKey::Ci(CiKey::Ci(set.ci))]);
        }
        ReleaseCommand::Observe(_)
        | ReleaseCommand::RecordUnmapped(_)
        | ReleaseCommand::SetMapping(_)
        | ReleaseCommand::RemoveMapping(_)
        | ReleaseCommand::OpenIncident { .. }
        | ReleaseCommand::ResolveIncident { .. } => keys.extend(observed::reads(command, read)),
        ReleaseCommand::CallbackPending(_) | ReleaseCommand::CallbackAnswered(_) => keys.push(ReleaseKey::Callbacks),
    }
    keys
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the steps
// ---------------------------------------------------------------------------------------------

fn require(access: &AccessState, actor: &str, operation: Operation, action: &str) -> Result<(), ReleaseError> {
    if permits(&access.roles_of(actor), operation) {
        Ok(())
    } else {
        Err(ReleaseError::NotPermitted {
            principal: actor.to_owned(),
            action: action.to_owned(),
            roles: roles_for(operation),
        })
    }
}

fn text(field: &'static str, value: &str, bound: usize) -> Result<(), ReleaseError> {
    if value.trim().is_empty() {
        return Err(ReleaseError::Missing { field, why: "it may not be empty" });
    }
    if value.len() > bound {
        return Err(ReleaseError::TooLong { field, bytes: value.len(), bound });
    }
    Ok(())
}

fn name_text(field: &'static str, value: &str) -> Result<(), ReleaseError> {
    text(field, value, MAX_NAME_BYTES)?;
    if value.chars().any(char::is_control) {
        return Err(ReleaseError::Missing { field, why: "it may not hold control characters" });
    }
    Ok(())
}

fn optional_text(field: &'static str, value: Option<&str>, bound: usize) -> Result<(), ReleaseError> {
    match value {
        Some(v) if v.len() > bound => Err(ReleaseError::TooLong { field, bytes: v.len(), bound }),
        _ => Ok(()),
    }
}

fn bounded(field: &'static str, count: usize, bound: usize) -> Result<(), ReleaseError> {
    if count > bound { Err(ReleaseError::TooMany { field, count, bound }) } else { Ok(()) }
}

fn check_pipeline(pipeline: &Pipeline) -> Result<(), ReleaseError> {
    text("pipeline.provider", &pipeline.provider, MAX_PIPELINE_FIELD_BYTES)?;
    text("pipeline.runId", &pipeline.run_id, MAX_PIPELINE_FIELD_BYTES)?;
    optional_text("pipeline.runUrl", pipeline.run_url.as_deref(), MAX_PIPELINE_FIELD_BYTES)
}

fn live_ci(read: &ReadSet<ReleaseKey>, id: CiId) -> Result<&CiSnapshot, ReleaseError> {
    let ci = read.ci(id).ok_or(ReleaseError::UnknownCi(id))?;
    if ci.status == crate::model::Status::Withdrawn {
        return Err(ReleaseError::CiWithdrawn(id));
    }
    Ok(ci)
}

fn release_of(read: &ReadSet<ReleaseKey>, id: ReleaseId) -> Result<&ReleaseRecord, ReleaseError> {
    read.release(id).ok_or_else(|| ReleaseError::UnknownRelease(id.to_string()))
}

/// The event of `release` moving to `to` by `action`, with the deployment that moved it.
fn transitioned(
    release: &ReleaseRecord,
    action: ReleaseAction,
    to: ReleaseState,
    by: &str,
    note: Option<&str>,
    deployment: Option<(DeploymentId, Environment)>,
) -> ReleaseEvent {
    ReleaseEvent::Transitioned(ReleaseTransitioned {
        release_id: release.release_id,
        action,
        from: release.state,
        to,
        by: by.to_owned(),
        note: note.map(str::to_owned),
        deployment: deployment.map(|(d, _)| d),
        environment: deployment.map(|(_, e)| e),
    })
}

fn transition_refused(release: &ReleaseRecord, action: ReleaseAction) -> ReleaseError {
    let allowed: Vec<&str> = table::allowed_from(release.state).iter().map(|a| a.as_str()).collect();
    ReleaseError::TransitionNotAllowed {
        release: release.label(),
        action,
        state: release.state,
        allowed: if allowed.is_empty() { "nothing".into() } else { allowed.join(", ") },
    }
}

// ---------------------------------------------------------------------------------------------
// Releases
// ---------------------------------------------------------------------------------------------

/// Checks a release's description against RL-1's policy for its type.
fn check_details(read: &ReadSet<ReleaseKey>, details: &ReleaseDetails) -> Result<(), ReleaseError> {
    text("title", &details.title, MAX_TITLE_BYTES)?;
    text("releasePlan", &details.release_plan, MAX_TEXT_BYTES)?;
    text("rollBackPlan", &details.roll_back_plan, MAX_TEXT_BYTES)?;
    if details.versions.is_empty() {
        return Err(ReleaseError::Missing { field: "versions", why: "a release sets at least one CI version" });
    }
    if details.environments.is_empty() {
        return Err(ReleaseError::Missing { field: "environments", why: "a release targets at least one environment" });
    }
    bounded("versions", details.versions.len(), MAX_VERSIONS_PER_RELEASE)?;
    bounded("changes", details.changes.len(), MAX_CHANGES_PER_RELEASE)?;
    bounded("acceptance", details.acceptance.len(), MAX_ACCEPTANCE_STEPS)?;
    let mut seen = BTreeSet::new();
    for version in &details.versions {
        name_text("artifact", &version.artifact)?;
        name_text("version", &version.version)?;
        if !seen.insert(version.ci) {
            return Err(ReleaseError::Duplicate { what: "CI", item: version.ci.to_string() });
        }
        live_ci(read, version.ci)?;
    }
    let mut environments = BTreeSet::new();
    for environment in &details.environments {
        if !environments.insert(*environment) {
            return Err(ReleaseError::Duplicate { what: "environment", item: environment.to_string() });
        }
    }
    let mut changes = BTreeSet::new();
    for change in &details.changes {
        if !changes.insert(*change) {
            return Err(ReleaseError::Duplicate { what: "change", item: change.to_string() });
        }
        if read.change_control(*change).is_none() {
            return Err(ReleaseError::UnknownChange(*change));
        }
    }
    let mut steps = BTreeSet::new();
    for step in &details.acceptance {
        name_text("acceptance step", &step.name)?;
        if !details.environments.contains(&step.environment) {
            return Err(ReleaseError::NotATarget {
                release: "the release".into(),
                environment: step.environment,
                targets: join(&details.environments),
            });
        }
        if !steps.insert((step.environment, step.name.trim().to_lowercase())) {
            return Err(ReleaseError::Duplicate {
                what: "acceptance step",
                item: format!("{}/{}", step.environment, step.name),
            });
        }
    }
    if let Some(baseline) = &details.baseline {
        let exists = matches!(read.get(&ReleaseKey::Baseline(baseline.clone())), Some(ReleaseRead::Baseline(true)));
        if !exists {
            return Err(ReleaseError::Missing { field: "baseline", why: "it names no baseline that exists (RL-5)" });
        }
    }
    release_policy(details)
}

/// RL-1's release policy: what each type must carry.
fn release_policy(details: &ReleaseDetails) -> Result<(), ReleaseError> {
    let release_type = details.release_type;
    let stepless = |environment: &Environment| !details.acceptance.iter().any(|s| s.environment == *environment);
    match release_type {
        ReleaseType::Major => {
            if let Some(environment) = details.environments.iter().find(|e| stepless(e)) {
                return Err(ReleaseError::Policy {
                    release_type,
                    what: format!("an acceptance step in every target environment; {environment} has none (RL-4)"),
                });
            }
            if details.baseline.is_none() {
                return Err(ReleaseError::Policy {
                    release_type,
                    what: "the baseline it is built against (RL-5)".into(),
                });
            }
        }
        ReleaseType::Minor => {
            if details.environments.contains(&Environment::Production) && stepless(&Environment::Production) {
                return Err(ReleaseError::Policy {
                    release_type,
                    what: "an acceptance step for production (RL-4)".into(),
                });
            }
        }
        ReleaseType::Emergency => {
            if details.changes.is_empty() {
                return Err(ReleaseError::Policy {
                    release_type,
                    what: "the emergency change it delivers (CH-8)".into(),
                });
            }
        }
    }
    Ok(())
}

fn join(environments: &[Environment]) -> String {
    environments.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
}

fn plan(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    actor: &str,
    release_id: ReleaseId,
    details: &ReleaseDetails,
) -> Result<(), ReleaseError> {
    require(read.access(), actor, Operation::ManageReleases, "plan a release")?;
    if read.release(release_id).is_some() {
        return Err(ReleaseError::ReleaseExists(release_id));
    }
    check_details(read, details)?;
    let newest = match read.get(&ReleaseKey::Numbers) {
        Some(ReleaseRead::Numbers(n)) => *n,
        _ => None,
    };
    let number = ReleaseNumber(newest.map_or(1, |n| n.0 + 1));
    decision.write(ReleaseKey::Numbers, ReleaseEvent::NumberAssigned(ReleaseNumberAssigned { number, release_id }));
    decision.write(
        ReleaseKey::Release(release_id),
        ReleaseEvent::Planned(Box::new(ReleasePlanned { release_id, number, details: details.clone() })),
    );
    // The changes it delivers must still exist as read.
    for change in &details.changes {
        decision.require_unchanged(ReleaseKey::Ci(CiKey::Control(*change)));
    }
    Ok(())
}

fn act(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    actor: &str,
    release_id: ReleaseId,
    action: ReleaseAction,
    note: Option<&str>,
) -> Result<(), ReleaseError> {
    let release = release_of(read, release_id)?;
    let row = table::find(action, release.state).ok_or_else(|| transition_refused(release, action))?;
    match row.authority {
        Authority::Operation(operation) => require(read.access(), actor, operation, &format!("{action} a release"))?,
        Authority::StepRole | Authority::Deployment => return Err(transition_refused(release, action)),
    }
    if row.needs_note && note.is_none_or(|n| n.trim().is_empty()) {
        return Err(ReleaseError::Missing { field: "note", why: "this transition records its reason or findings" });
    }
    optional_text("note", note, MAX_TEXT_BYTES)?;
    let to = match (action, row.to) {
        // Environments without acceptance steps are accepted once it is built (RL-1's policy).
        (ReleaseAction::Build, _)
            if release.details.environments.iter().any(|e| release.steps_for(*e).next().is_none()) =>
        {
            ReleaseState::Accepted
        }
        (_, Some(to)) => to,
        (_, None) => release.state,
    };
    decision.write(ReleaseKey::Release(release_id), transitioned(release, action, to, actor, note, None));
    Ok(())
}

fn accept(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    actor: &str,
    release_id: ReleaseId,
    environment: Environment,
    step: &str,
    note: Option<&str>,
) -> Result<(), ReleaseError> {
    let release = release_of(read, release_id)?;
    table::find(ReleaseAction::Accept, release.state)
        .ok_or_else(|| transition_refused(release, ReleaseAction::Accept))?;
    if !release.details.environments.contains(&environment) {
        return Err(ReleaseError::NotATarget {
            release: release.label(),
            environment,
            targets: join(&release.details.environments),
        });
    }
    let wanted = step.trim().to_lowercase();
    let found = release.steps_for(environment).find(|s| s.name.trim().to_lowercase() == wanted).ok_or_else(|| {
        ReleaseError::UnknownStep {
            release: release.label(),
            environment,
            step: step.to_owned(),
            steps: release.steps_for(environment).map(|s| s.name.clone()).collect::<Vec<_>>().join(", "),
        }
    })?;
    if let Some(signed) = release.signed(environment, &found.name) {
        return Err(ReleaseError::StepSigned {
            release: release.label(),
            environment,
            step: found.name.clone(),
            by: signed.stamp.by.clone(),
        });
    }
    if !read.access().roles_of(actor).contains(&found.role) {
        return Err(ReleaseError::WrongRole {
            step: found.name.clone(),
            role: found.role,
            principal: actor.to_owned(),
        });
    }
    optional_text("note", note, MAX_TEXT_BYTES)?;
    let unsigned = release.steps_for(environment).filter(|s| release.signed(environment, &s.name).is_none()).count();
    decision.write(
        ReleaseKey::Release(release_id),
        ReleaseEvent::StepSigned(StepSigned {
            release_id,
            environment,
            step: found.name.clone(),
            role: found.role,
            by: actor.to_owned(),
            note: note.map(str::to_owned),
            environment_accepted: unsigned == 1,
        }),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deployments
// ---------------------------------------------------------------------------------------------

fn request_deployment(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    request: &DeploymentRequested,
) -> Result<(), ReleaseError> {
    if read.deployment(request.deployment_id).is_some() {
        return Err(ReleaseError::DeploymentExists(request.deployment_id));
    }
    if request.targets.is_empty() {
        return Err(ReleaseError::Missing { field: "targets", why: "a deployment sets at least one CI version" });
    }
    bounded("targets", request.targets.len(), MAX_VERSIONS_PER_RELEASE)?;
    if let Some(pipeline) = &request.pipeline {
        check_pipeline(pipeline)?;
    }
    let change_id = request.change_id.ok_or(ReleaseError::Missing {
        field: "change",
        why: "a deployment asked for names the change authorising it (CM-3)",
    })?;
    let control = read.change_control(change_id).ok_or(ReleaseError::UnknownChange(change_id))?;
    let mut seen = BTreeSet::new();
    for target in &request.targets {
        name_text("artifact", &target.artifact)?;
        name_text("version", &target.version)?;
        if !seen.insert(target.ci) {
            return Err(ReleaseError::Duplicate { what: "CI", item: target.ci.to_string() });
        }
        live_ci(read, target.ci)?;
        if !control.scope.covers_ci(target.ci) {
            return Err(ReleaseError::NoAuthority(format!(
                "{}'s scope does not cover {}",
                control.label(change_id),
                target.ci
            )));
        }
    }
    if let Some(release_id) = request.release_id {
        let release = release_of(read, release_id)?;
        check_release_for(release, request)?;
        // Accepted as read: a rejection or deferral meanwhile means deciding again.
        decision.require_unchanged(ReleaseKey::Release(release_id));
        if let Some(mismatch) = digest_mismatch(release, request) {
            // RL-3: refused, and the refusal is recorded (the caller is told it was).
            decision.write(
                ReleaseKey::Deployment(request.deployment_id),
                ReleaseEvent::DeploymentRequested(Box::new(request.clone())),
            );
            decision.write(
                ReleaseKey::Deployment(request.deployment_id),
                ReleaseEvent::DeploymentEnded(DeploymentEnded {
                    deployment_id: request.deployment_id,
                    state: DeploymentState::Refused,
                    note: Some(mismatch.to_string()),
                    code: Some("DIGEST_MISMATCH".into()),
                    authorized_by: None,
                }),
            );
            return Ok(());
        }
    }
    decision.write(
        ReleaseKey::Deployment(request.deployment_id),
        ReleaseEvent::DeploymentRequested(Box::new(request.clone())),
    );
    Ok(())
}

/// RL-4 and the environments' order: what a release must be before it is deployed.
fn check_release_for(release: &ReleaseRecord, request: &DeploymentRequested) -> Result<(), ReleaseError> {
    let environment = request.environment;
    let Some(index) = release.details.environments.iter().position(|e| *e == environment) else {
        return Err(ReleaseError::NotATarget {
            release: release.label(),
            environment,
            targets: join(&release.details.environments),
        });
    };
    if !matches!(release.state, ReleaseState::Accepted | ReleaseState::Deployed)
        || !release.accepted.contains_key(&environment)
    {
        let why = if release.accepted.contains_key(&environment) {
            format!("it is {}", release.state)
        } else {
            let unsigned: Vec<String> = release
                .steps_for(environment)
                .filter(|s| release.signed(environment, &s.name).is_none())
                .map(|s| format!("{:?} (role {})", s.name, s.role))
                .collect();
            if unsigned.is_empty() {
                format!("it is {}", release.state)
            } else {
                format!("unsigned steps: {}", unsigned.join(", "))
            }
        };
        return Err(ReleaseError::NotAccepted { release: release.label(), environment, why });
    }
    if let Some(earlier) = release.details.environments[..index].iter().find(|e| !release.deployed.contains_key(e)) {
        return Err(ReleaseError::OutOfOrder { release: release.label(), environment, earlier: *earlier });
    }
    for target in &request.targets {
        if release.version_for(target.ci).is_none() {
            return Err(ReleaseError::NotInRelease { ci: target.ci, release: release.label() });
        }
    }
    Ok(())
}

/// The first target whose digest is not the one `release` recorded for its CI (RL-3), as the
/// error a caller is given once the refusal is recorded.
pub fn digest_mismatch(release: &ReleaseRecord, request: &DeploymentRequested) -> Option<ReleaseError> {
    request.targets.iter().find_map(|target| {
        let recorded = release.version_for(target.ci)?;
        (target.digest.as_ref() != Some(&recorded.digest)).then(|| ReleaseError::DigestMismatch {
            ci: target.ci,
            deployed: target.digest.as_ref().map_or_else(|| "no digest".to_owned(), ToString::to_string),
            recorded: recorded.digest.to_string(),
            deployment: request.deployment_id,
        })
    })
}

/// The configuration a deployment changes on `ci`, as it is now.
fn config_of(ci: &CiSnapshot) -> CiConfig {
    let attribute = |name: &str| ci.attributes.get(name).and_then(Value::as_str).map(str::to_owned);
    CiConfig {
        ci: ci.id,
        version: ci.version.as_ref().map(ToString::to_string),
        artifact: attribute(ARTIFACT_ATTRIBUTE),
        digest: attribute(DIGEST_ATTRIBUTE),
        status: ci.status,
    }
}

fn deployment_of(read: &ReadSet<ReleaseKey>, id: DeploymentId) -> Result<&DeploymentRecord, ReleaseError> {
    read.deployment(id).ok_or(ReleaseError::UnknownDeployment(id))
}

fn report(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    deployment_id: DeploymentId,
    outcome: ReportedOutcome,
    note: Option<&str>,
) -> Result<(), ReleaseError> {
    let deployment = deployment_of(read, deployment_id)?;
    optional_text("note", note, MAX_TEXT_BYTES)?;
    let state = deployment.state;
    let key = ReleaseKey::Deployment(deployment_id);
    let refuse = |action: &'static str, needs: &'static str| ReleaseError::DeploymentState {
        deployment: deployment_id,
        state,
        action,
        needs,
    };
    match outcome {
        ReportedOutcome::Started => {
            if state != DeploymentState::Requested {
                return Err(refuse("starting", "requested"));
            }
            decision.write(key, started(read, deployment)?);
        }
        ReportedOutcome::Succeeded => {
            let start = match state {
                DeploymentState::Requested => Some(started(read, deployment)?),
                DeploymentState::Started => None,
                _ => return Err(refuse("succeeding", "requested or started")),
            };
            // The CI edits come first in the append, so the success's own position already
            // shows the new versions.
            let request = &deployment.request;
            apply_versions(read, decision, &request.targets, request.change_id, request.unauthorised)?;
            if let Some(start) = start {
                decision.write(key.clone(), start);
            }
            decision.write(key, ended(deployment_id, DeploymentState::Succeeded, note, None));
            if let Some(release_id) = deployment.request.release_id {
                release_moved(read, decision, release_id, deployment, ReleaseAction::Deployed, note)?;
            }
        }
        ReportedOutcome::Failed => {
            if !matches!(state, DeploymentState::Requested | DeploymentState::Started) {
                return Err(refuse("failing", "requested or started"));
            }
            if note.is_none_or(|n| n.trim().is_empty()) {
                return Err(ReleaseError::Missing { field: "note", why: "a failure records what went wrong" });
            }
            if state == DeploymentState::Requested {
                decision.write(key.clone(), started(read, deployment)?);
            }
            decision.write(key, ended(deployment_id, DeploymentState::Failed, note, None));
        }
    }
    Ok(())
}

fn started(read: &ReadSet<ReleaseKey>, deployment: &DeploymentRecord) -> Result<ReleaseEvent, ReleaseError> {
    let before =
        deployment.request.targets.iter().map(|t| live_ci(read, t.ci).map(config_of)).collect::<Result<_, _>>()?;
    Ok(ReleaseEvent::DeploymentStarted(DeploymentStarted { deployment_id: deployment.request.deployment_id, before }))
}

fn ended(
    deployment_id: DeploymentId,
    state: DeploymentState,
    note: Option<&str>,
    by: Option<ChangeId>,
) -> ReleaseEvent {
    ReleaseEvent::DeploymentEnded(DeploymentEnded {
        deployment_id,
        state,
        note: note.map(str::to_owned),
        code: None,
        authorized_by: by,
    })
}

/// The CI edits of a success: version, artifact and digest of every target, decided by the CI
/// decider under the deployment's change (CM-3).
fn apply_versions(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    targets: &[DeploymentTarget],
    change: Option<ChangeId>,
    unauthorised: bool,
) -> Result<(), ReleaseError> {
    let commands = targets.iter().map(|t| {
        let mut attributes = BTreeMap::new();
        attributes.insert(ARTIFACT_ATTRIBUTE.to_owned(), Value::String(t.artifact.clone()));
        let mut remove = Vec::new();
        match &t.digest {
            Some(digest) => {
                attributes.insert(DIGEST_ATTRIBUTE.to_owned(), Value::String(digest.to_string()));
            }
            // A tool that names no digest: the one recorded before no longer describes the CI.
            None if read.ci(t.ci).is_some_and(|ci| ci.attributes.contains_key(DIGEST_ATTRIBUTE)) => {
                remove.push(DIGEST_ATTRIBUTE.to_owned());
            }
            None => {}
        }
        let update = Update {
            version: Some(t.version.clone()),
            set_attributes: attributes,
            remove_attributes: remove,
            authorized_by: change,
            unauthorised,
            ..Update::default()
        };
        CiCommand::Update(t.ci, update)
    });
    edit_cis(read, decision, commands.collect())
}

/// Runs CI commands through the CI decider on what this decision read, and adds their events
/// and conditions. A command with nothing to change is skipped (the CI is already so).
fn edit_cis(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    commands: Vec<CiCommand>,
) -> Result<(), ReleaseError> {
    let sub = read.ci_read_set();
    for command in commands {
        let ci_decision = match crate::ci::decide(&command, &sub) {
            Ok(d) => d,
            Err(CiError::NothingToChange) => continue,
            Err(other) => return Err(other.into()),
        };
        for (key, events) in ci_decision.writes {
            for event in events {
                decision.write(ReleaseKey::Ci(key.clone()), ReleaseEvent::Ci(event));
            }
        }
        for key in ci_decision.conditions {
            decision.require_unchanged(ReleaseKey::Ci(key));
        }
    }
    Ok(())
}

fn release_moved(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    release_id: ReleaseId,
    deployment: &DeploymentRecord,
    action: ReleaseAction,
    note: Option<&str>,
) -> Result<(), ReleaseError> {
    let release = release_of(read, release_id)?;
    let Some(row) = table::find(action, release.state) else {
        // A release closed or reviewed meanwhile keeps its state; the deployment still counts.
        return Ok(());
    };
    let environment = deployment.request.environment;
    let last = release.details.environments.last() == Some(&environment);
    let to = match (action, row.to) {
        (ReleaseAction::Deployed, _) if !last => release.state,
        (_, Some(to)) => to,
        (_, None) => release.state,
    };
    let by = &deployment.requested.by;
    let with = Some((deployment.request.deployment_id, environment));
    decision.write(ReleaseKey::Release(release_id), transitioned(release, action, to, by, note, with));
    Ok(())
}

fn roll_back(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    deployment_id: DeploymentId,
    change_id: Option<ChangeId>,
    reason: &str,
) -> Result<(), ReleaseError> {
    let deployment = deployment_of(read, deployment_id)?;
    text("reason", reason, MAX_TEXT_BYTES)?;
    if !matches!(deployment.state, DeploymentState::Succeeded | DeploymentState::Failed) {
        return Err(ReleaseError::DeploymentState {
            deployment: deployment_id,
            state: deployment.state,
            action: "rolling back",
            needs: "succeeded or failed",
        });
    }
    let change = change_id.or(deployment.request.change_id).ok_or_else(|| {
        ReleaseError::NoAuthority(
            "this deployment needed no change; name one to roll it back under (an emergency change for an unplanned roll-back)".into(),
        )
    })?;
    let control = read.change_control(change).ok_or(ReleaseError::UnknownChange(change))?;
    if !control.state.is_some_and(|s| s.authorises_edits()) {
        return Err(ReleaseError::NoAuthority(format!(
            "{} is {}; a roll-back edits CIs under a change that is implementing or failed (name one, an emergency change for an unplanned roll-back)",
            control.label(change),
            control.state.map_or("not submitted", |s| s.as_str())
        )));
    }
    let commands = deployment.before.iter().filter_map(|before| {
        let current = read.ci(before.ci)?;
        Some(CiCommand::Update(before.ci, restore(current, before, change)))
    });
    edit_cis(read, decision, commands.collect())?;
    // The authorising change's state as read, even when no CI needed restoring.
    decision.require_unchanged(ReleaseKey::Ci(CiKey::Control(change)));
    decision.write(
        ReleaseKey::Deployment(deployment_id),
        ended(deployment_id, DeploymentState::RolledBack, Some(reason), Some(change)),
    );
    if let Some(release_id) = deployment.request.release_id {
        release_moved(read, decision, release_id, deployment, ReleaseAction::RollBack, Some(reason))?;
    }
    Ok(())
}

/// The update that returns `current` to `before` on what a deployment changes.
fn restore(current: &CiSnapshot, before: &CiConfig, change: ChangeId) -> Update {
    let mut update = Update { authorized_by: Some(change), ..Update::default() };
    match &before.version {
        Some(version) => update.version = Some(version.clone()),
        None if current.version.is_some() => update.clear.push(CiField::Version),
        None => {}
    }
    for (name, value) in [(ARTIFACT_ATTRIBUTE, &before.artifact), (DIGEST_ATTRIBUTE, &before.digest)] {
        match value {
            Some(v) => {
                update.set_attributes.insert(name.to_owned(), Value::String(v.clone()));
            }
            None if current.attributes.contains_key(name) => update.remove_attributes.push(name.to_owned()),
            None => {}
        }
    }
    update
}
