//! Releases, deployments and the deployment gate in the application layer: references to a
//! release (id or `REL-` number), the facts the gate's answer is computed from, the change a
//! pipeline gets from its service's template, and the change moves that follow a deployment
//! (start on allow, complete on success, fail on failure, back out after a roll-back).
//!
//! Sequencing owned here (the rules are in `cmdb_core::release`): a gate call resolves its
//! change (named, opened earlier for the same pipeline run, delivered by the release, or
//! opened now from the template, whose window starts now), evaluates, starts the change on an allow, and records the answer with its inputs.
//! Calls for one pipeline run are serialised in this process, and the run's claim of a change
//! is a conditional append, so identical concurrent calls open one change.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cmdb_core::Metadata;
use cmdb_core::change::{ChangeAction, ChangeCommand, ChangeDetails, ChangeState, ChangeType, Scope, Window};
use cmdb_core::ci::{ChangeId, CiId};
use cmdb_core::decider::fold;
use cmdb_core::ids::{DeploymentId, ReleaseId};
use cmdb_core::model::{Environment, Status};
use cmdb_core::release::decide::{PipelineRun, pipeline_stream};
use cmdb_core::release::gate::{
    self, Artifact, ChangeFact, CiFact, GateDecision, GateFacts, GateOutcome, GateReason, GateRequest, ReleaseFact,
};
use cmdb_core::release::{
    DeploymentRecord, GateDecided, Pipeline, PipelineChangeOpened, ReleaseCommand, ReleaseDecider, ReleaseError,
    ReleaseKey, ReleaseNumber, ReleaseRead, ReleaseRecord, ReportedOutcome,
};
use cmdb_projections::calendar;

use super::changes::{ChangeRef, load};
use super::{App, AppError, Written};

/// How long the window of a pipeline change opened from a template lasts, in minutes.
pub const PIPELINE_WINDOW_MINUTES: i64 = 60;
/// Longest a gate call may wait for its answer to change, in seconds.
pub const MAX_GATE_WAIT_SECONDS: u64 = 25;
/// Most pipeline runs whose gate calls are serialised at once (older locks are dropped).
pub const MAX_PIPELINE_LOCKS: usize = 10_000;

/// A release as a client names it: its id, or its number (`REL-000042`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseRef {
    /// By id.
    Id(ReleaseId),
    /// By number.
    Number(ReleaseNumber),
}

impl FromStr for ReleaseRef {
    type Err = ReleaseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().to_ascii_uppercase().starts_with("REL-") {
            return text.parse().map(ReleaseRef::Number);
        }
        text.parse().map(ReleaseRef::Id).map_err(|_| ReleaseError::InvalidNumber(text.to_owned()))
    }
}

/// What a pipeline asks the gate, as the caller named things.
#[derive(Clone, Debug)]
pub struct GateAsk {
    /// The service or CI (id or name).
    pub ci: String,
    /// The environment.
    pub environment: Environment,
    /// The artifact.
    pub artifact: Artifact,
    /// The change, if named.
    pub change: Option<ChangeRef>,
    /// The release, if named.
    pub release: Option<ReleaseRef>,
    /// The run asking.
    pub pipeline: Option<Pipeline>,
}

/// Why a gate call could not be answered at all (nothing is recorded then).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum GateError {
    #[error("no configuration item {0:?} (give its id, or a name only one CI has)")]
    UnknownCi(String),
    #[error("{0:?} names {1} CIs of different classes; give the CI's id")]
    AmbiguousCi(String, usize),
    #[error("no release {0}")]
    UnknownRelease(String),
    #[error("no change {0}")]
    UnknownChange(String),
    #[error("a recorded gate call needs its pipeline: provider and run id")]
    NoPipeline,
}

/// The gate's answer, and where it was recorded.
#[derive(Clone, Debug)]
pub struct GateAnswer {
    /// The answer.
    pub outcome: GateOutcome,
    /// The position of the recorded decision (`None` for a dry run).
    pub recorded_at: Option<u64>,
}

/// Serialises gate calls per pipeline run in this process.
#[derive(Default)]
pub struct PipelineLocks {
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PipelineLocks {
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() >= MAX_PIPELINE_LOCKS {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(key.to_owned()).or_default().clone()
    }
}

impl App {
    /// The release decider, with this server's change settings.
    pub fn release_decider(&self) -> ReleaseDecider {
        ReleaseDecider { change_settings: self.settings.change }
    }

    /// Runs a release command and waits for the graph. Deployment commands read through the
    /// deployment cache (optimistic: what they write is appended at the versions read, and a
    /// refusal on cached folds is decided again on fresh ones).
    pub async fn release(&self, command: &ReleaseCommand, metadata: Metadata) -> Result<Written, AppError> {
        let cached = matches!(
            command,
            ReleaseCommand::RequestDeployment(_)
                | ReleaseCommand::Report { .. }
                | ReleaseCommand::RollBack { .. }
                | ReleaseCommand::Observe(_)
        );
        if !cached {
            return Ok(Written::from(&self.run(&self.release_decider(), command, metadata).await?));
        }
        let context = self.context(metadata);
        let executed = cmdb_core::decider::execute(
            self.store.as_ref(),
            &self.release_decider(),
            command,
            &context,
            Some(&self.deployment_cache),
        )
        .await?;
        self.wait_for_graph(executed.outcome.last_position).await?;
        Ok(Written::from(&executed))
    }

    /// The release `reference` names, as the graph holds it now.
    pub fn resolve_release(&self, reference: &ReleaseRef) -> Result<ReleaseId, AppError> {
        match reference {
            ReleaseRef::Id(id) => Ok(*id),
            ReleaseRef::Number(number) => {
                let graph = self.graph.read();
                graph
                    .release_book()
                    .id_of(*number, graph.applied())
                    .ok_or_else(|| AppError::Core(ReleaseError::UnknownRelease(number.to_string()).into()))
            }
        }
    }

    /// Requests a deployment. A digest mismatch is recorded as a refusal and then returned as
    /// the error `DigestMismatch` (RL-3).
    pub async fn request_deployment(
        &self,
        requested: cmdb_core::release::DeploymentRequested,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        let deployment_id = requested.deployment_id;
        let command = ReleaseCommand::RequestDeployment(Box::new(requested));
        let written = self.release(&command, metadata).await?;
        if self.deployment_now(deployment_id)?.state == cmdb_core::release::DeploymentState::Refused
            && let ReleaseCommand::RequestDeployment(requested) = &command
            && let Some(mismatch) = requested
                .release_id
                .and_then(|r| self.release_now(r))
                .and_then(|release| cmdb_core::release::decide::digest_mismatch(&release, requested))
        {
            return Err(AppError::Core(mismatch.into()));
        }
        Ok(written)
    }

    /// A deployment tool reports an outcome; a change opened for the deployment's pipeline run
    /// follows (completed on success, failed on failure) when the reporter implements it.
    pub async fn report_deployment(
        &self,
        deployment_id: DeploymentId,
        outcome: ReportedOutcome,
        note: Option<String>,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        let command = ReleaseCommand::Report { deployment_id, outcome, note: note.clone() };
        let written = self.release(&command, metadata.clone()).await?;
        let action = match outcome {
            ReportedOutcome::Succeeded => ChangeAction::Complete,
            ReportedOutcome::Failed => ChangeAction::Fail,
            ReportedOutcome::Started => return Ok(written),
        };
        let deployment = self.deployment_now(deployment_id)?;
        // Only a change opened for this very pipeline run follows its report; a change that
        // carries several deployments is completed by its implementer.
        let Some(pipeline) = &deployment.request.pipeline else { return Ok(written) };
        let Some(change_id) = deployment.request.change_id else { return Ok(written) };
        if self.pipeline_run(pipeline).await?.change != Some(change_id) {
            return Ok(written);
        }
        let change = load(self.store.as_ref(), change_id).await?;
        let implements = change.details.implementer.as_deref() == Some(metadata.actor.principal.as_str());
        if change.state == ChangeState::Implementing && implements {
            let note = Some(note.unwrap_or_else(|| format!("deployment {deployment_id} {outcome}")));
            return self.transition(change.change_id, action, note, None, metadata).await;
        }
        Ok(written)
    }

    /// Rolls a deployment back; a failed change it ran under is then backed out by its
    /// implementer.
    pub async fn roll_back(
        &self,
        deployment_id: DeploymentId,
        change_id: Option<ChangeId>,
        reason: String,
        metadata: Metadata,
    ) -> Result<Written, AppError> {
        let command = ReleaseCommand::RollBack { deployment_id, change_id, reason: reason.clone() };
        let written = self.release(&command, metadata.clone()).await?;
        let deployment = self.deployment_now(deployment_id)?;
        let Some(change_id) = change_id.or(deployment.request.change_id) else { return Ok(written) };
        let change = load(self.store.as_ref(), change_id).await?;
        let implements = change.details.implementer.as_deref() == Some(metadata.actor.principal.as_str());
        if change.state == ChangeState::Failed && implements {
            return self.transition(change.change_id, ChangeAction::BackOut, Some(reason), None, metadata).await;
        }
        Ok(written)
    }

    /// A pipeline reports an outcome for the deployment of its run to a CI and environment:
    /// the deployment is requested first if the run has none yet (under the change the gate
    /// would use: named, opened for the run, or delivered by the release), then the outcome is
    /// reported. Returns the deployment as it stands after.
    pub async fn report_from_pipeline(
        &self,
        ask: &GateAsk,
        outcome: ReportedOutcome,
        note: Option<String>,
        metadata: Metadata,
    ) -> Result<DeploymentRecord, AppError> {
        let Some(pipeline) = &ask.pipeline else { return Err(gate_error(GateError::NoPipeline)) };
        let ci = self.resolve_ci(&ask.ci)?;
        let release = ask.release.as_ref().map(|r| self.resolve_release(r)).transpose()?;
        let existing =
            {
                let graph = self.graph.read();
                let filter = cmdb_projections::releases::DeploymentFilter {
                    ci: Some(ci),
                    environment: Some(ask.environment),
                    ..Default::default()
                };
                graph.release_book().deployments_at(graph.applied(), &filter, usize::MAX).into_iter().find(|d| {
                    d.request.pipeline.as_ref().is_some_and(|p| pipeline_stream(p) == pipeline_stream(pipeline))
                })
            };
        let deployment_id = match existing {
            Some(deployment) => deployment.request.deployment_id,
            None => {
                let change = match &ask.change {
                    Some(reference) => self.resolve_change(reference).await?,
                    None => self.found_change(ask, ci, release).await?.ok_or_else(|| {
                        AppError::Core(
                            ReleaseError::NoAuthority(
                                "no change names this run, the release delivers none covering the CI, and the gate opened none; ask the gate first".into(),
                            )
                            .into(),
                        )
                    })?,
                };
                let deployment_id = DeploymentId(uuid::Uuid::now_v7());
                let requested = cmdb_core::release::DeploymentRequested {
                    deployment_id,
                    release_id: release,
                    change_id: Some(change),
                    environment: ask.environment,
                    targets: vec![cmdb_core::release::DeploymentTarget {
                        ci,
                        artifact: ask.artifact.name.clone(),
                        version: ask.artifact.version.clone(),
                        digest: Some(ask.artifact.digest.clone()),
                    }],
                    pipeline: Some(pipeline.clone()),
                    observed: None,
                    unauthorised: false,
                };
                self.request_deployment(requested, metadata.clone()).await?;
                deployment_id
            }
        };
        self.report_deployment(deployment_id, outcome, note, metadata).await?;
        self.deployment_now(deployment_id)
    }

    pub(crate) fn deployment_now(&self, id: DeploymentId) -> Result<DeploymentRecord, AppError> {
        let graph = self.graph.read();
        graph
            .release_book()
            .deployment_at(id, graph.applied())
            .ok_or_else(|| AppError::Core(ReleaseError::UnknownDeployment(id).into()))
    }

    /// Asks the gate. `dry_run`: computes the answer from the same facts and writes nothing (no
    /// change opened, scheduled or started; nothing recorded).
    pub async fn gate(&self, ask: &GateAsk, dry_run: bool, metadata: Metadata) -> Result<GateAnswer, AppError> {
        if !dry_run && ask.pipeline.is_none() {
            return Err(gate_error(GateError::NoPipeline));
        }
        let lock = ask.pipeline.as_ref().map(|p| self.pipeline_locks.lock_for(pipeline_stream(p).as_str()));
        let _turn = match &lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let ci = self.resolve_ci(&ask.ci)?;
        let release = ask.release.as_ref().map(|r| self.resolve_release(r)).transpose()?;
        let mut change = match &ask.change {
            Some(reference) => Some(
                self.resolve_change(reference)
                    .await
                    .map_err(|_| gate_error(GateError::UnknownChange(reference.to_string())))?,
            ),
            None => self.found_change(ask, ci, release).await?,
        };
        let template = if change.is_none() { self.pipeline_template(ci) } else { None };
        if let (None, Some(template), false, Some(pipeline)) = (change, template, dry_run, &ask.pipeline) {
            change = Some(self.open_pipeline_change(ask, ci, template, pipeline, metadata.clone()).await?);
        }

        let request = GateRequest {
            ci,
            environment: ask.environment,
            artifact: ask.artifact.clone(),
            change,
            release,
            pipeline: ask.pipeline.clone(),
        };
        let facts = self.gate_facts(&request, &metadata.actor.principal, template.is_some()).await?;
        let mut outcome = gate::evaluate(&request, &facts);
        if dry_run {
            return Ok(GateAnswer { outcome, recorded_at: None });
        }
        if outcome.starts_implementation
            && let Some(change_id) = change
            && let Err(refused) = self.transition(change_id, ChangeAction::Start, None, None, metadata.clone()).await
        {
            outcome.decision = GateDecision::Deny;
            outcome.starts_implementation = false;
            outcome.reasons.insert(
                0,
                GateReason { code: "START_REFUSED".into(), message: refused.to_string(), decision: GateDecision::Deny },
            );
        }
        let decided = GateDecided { request, facts, outcome: outcome.clone() };
        // Nothing reads an answer back from the graph: the record is durable when this returns.
        let command = ReleaseCommand::RecordGate(Box::new(decided));
        let executed = cmdb_core::decider::execute(
            self.store.as_ref(),
            &self.release_decider(),
            &command,
            &self.context(metadata),
            None,
        )
        .await?;
        Ok(GateAnswer { outcome, recorded_at: Some(executed.outcome.last_position) })
    }

    /// Asks the gate and, while the answer is `pending`, waits up to `wait` for it to change:
    /// the answer is computed again (as a dry run) each time the graph applies new events or
    /// the retry time passes, and recorded once it is no longer pending (or at the end).
    pub async fn gate_waiting(
        &self,
        ask: &GateAsk,
        wait: Duration,
        metadata: Metadata,
    ) -> Result<GateAnswer, AppError> {
        let first = self.gate(ask, false, metadata.clone()).await?;
        if first.outcome.decision != GateDecision::Pending || wait.is_zero() {
            return Ok(first);
        }
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(MAX_GATE_WAIT_SECONDS));
        let mut applied = self.graph.subscribe_applied();
        let mut retry = Duration::from_secs(first.outcome.retry_after_seconds.unwrap_or(1).max(1));
        loop {
            let woke =
                tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + retry), applied.changed()).await;
            if matches!(woke, Ok(Err(_))) {
                return Ok(first);
            }
            let timed_out = tokio::time::Instant::now() >= deadline;
            let again = self.gate(ask, true, metadata.clone()).await?;
            if again.outcome.decision != GateDecision::Pending || timed_out {
                let real = self.gate(ask, false, metadata.clone()).await?;
                if real.outcome.decision != GateDecision::Pending || timed_out {
                    return Ok(real);
                }
            }
            retry = Duration::from_secs(again.outcome.retry_after_seconds.unwrap_or(1).max(1));
        }
    }

    /// The CI `text` names: an id, or a name only one live CI has.
    fn resolve_ci(&self, text: &str) -> Result<CiId, AppError> {
        let graph = self.graph.read();
        let position = graph.applied();
        if let Ok(id) = text.parse::<CiId>() {
            return graph
                .ci_at(id, position)
                .map(|c| c.id)
                .ok_or_else(|| gate_error(GateError::UnknownCi(text.into())));
        }
        let found: Vec<CiId> = cmdb_core::model::CiClass::BUILTIN
            .iter()
            .filter_map(|class| graph.ci_by_name(*class, text, position))
            .map(|c| c.id)
            .collect();
        match found.as_slice() {
            [id] => Ok(*id),
            [] => Err(gate_error(GateError::UnknownCi(text.into()))),
            many => Err(gate_error(GateError::AmbiguousCi(text.into(), many.len()))),
        }
    }

    /// The change a call without one runs under: the one opened for the same pipeline run, or
    /// one the release delivers whose scope covers the CI.
    async fn found_change(
        &self,
        ask: &GateAsk,
        ci: CiId,
        release: Option<ReleaseId>,
    ) -> Result<Option<ChangeId>, AppError> {
        if let Some(pipeline) = &ask.pipeline
            && let Some(change) = self.pipeline_run(pipeline).await?.change
        {
            return Ok(Some(change));
        }
        let Some(release) = release.and_then(|id| self.release_now(id)) else { return Ok(None) };
        for change_id in &release.details.changes {
            let change = load(self.store.as_ref(), *change_id).await?;
            if change.details.scope.covers_ci(ci) && !change.state.is_terminal() {
                return Ok(Some(*change_id));
            }
        }
        Ok(None)
    }

    async fn pipeline_run(&self, pipeline: &Pipeline) -> Result<PipelineRun, AppError> {
        let key = ReleaseKey::Pipeline(pipeline_stream(pipeline));
        match fold::load(self.store.as_ref(), &key).await? {
            ReleaseRead::Pipeline(run) => Ok(run),
            _ => Ok(PipelineRun::default()),
        }
    }

    fn release_now(&self, id: ReleaseId) -> Option<ReleaseRecord> {
        let graph = self.graph.read();
        graph.release_book().release_at(id, graph.applied())
    }

    fn pipeline_template(&self, ci: CiId) -> Option<cmdb_core::ci::TemplateId> {
        let graph = self.graph.read();
        graph.release_book().pipeline_template_at(ci, graph.applied())
    }

    /// Opens a standard change from the template for this run (CH-1, CH-2, CH-4): claimed for
    /// the run first, then drafted and submitted, so the policy decides at once.
    async fn open_pipeline_change(
        &self,
        ask: &GateAsk,
        ci: CiId,
        template: cmdb_core::ci::TemplateId,
        pipeline: &Pipeline,
        metadata: Metadata,
    ) -> Result<ChangeId, AppError> {
        let change_id = ChangeId(uuid::Uuid::now_v7());
        let opened = PipelineChangeOpened { pipeline: pipeline.clone(), change_id, ci };
        match self.release(&ReleaseCommand::OpenPipelineChange(opened), metadata.clone()).await {
            Ok(_) => {}
            // Another process claimed the run meanwhile: its change is the run's.
            Err(AppError::Core(cmdb_core::Error::Release(ReleaseError::Duplicate { .. }))) => {
                let run = self.pipeline_run(pipeline).await?;
                return run.change.ok_or_else(|| AppError::UnknownChange(pipeline.run_id.clone()));
            }
            Err(other) => return Err(other),
        }
        let now = self.clock.now();
        let name = self.graph.read().ci_at(ci, self.graph.applied()).map(|c| c.name.clone()).unwrap_or_default();
        let details = ChangeDetails {
            title: truncate(&format!(
                "Deploy {} {} to {name} ({})",
                ask.artifact.name, ask.artifact.version, ask.environment
            )),
            description: Some(format!(
                "Opened by the deployment gate for {} run {}: {} {} ({})",
                pipeline.provider, pipeline.run_id, ask.artifact.name, ask.artifact.version, ask.artifact.digest
            )),
            justification: pipeline.run_url.clone(),
            back_out_plan: None,
            window: Some(Window {
                start: now,
                end: now.saturating_add_micros(PIPELINE_WINDOW_MINUTES * 60_000_000),
                time_zone: "UTC".into(),
            }),
            implementer: Some(metadata.actor.principal.to_string()),
            scope: Scope { cis: vec![ci], planned: Vec::new() },
            links: Vec::new(),
        };
        let draft =
            ChangeCommand::Draft { change_id, change_type: ChangeType::Standard, template_id: Some(template), details };
        self.change(&draft, metadata.clone()).await?;
        self.transition(change_id, ChangeAction::Submit, None, None, metadata).await?;
        Ok(change_id)
    }

    /// The facts of an answer, all read from the graph at one position (the one recorded):
    /// every command acknowledged by this process has been applied there (commands wait for
    /// the graph), so a caller sees its own approvals. A change the graph does not hold yet
    /// (opened through another process a moment ago) is read from the log.
    async fn gate_facts(&self, request: &GateRequest, actor: &str, has_template: bool) -> Result<GateFacts, AppError> {
        let now = self.clock.now();
        let unapplied = match request.change {
            Some(id) if self.graph.read().change_book().current_of(id).is_none() => Some(
                load(self.store.as_ref(), id)
                    .await
                    .map_err(|_| gate_error(GateError::UnknownChange(id.to_string())))?,
            ),
            _ => None,
        };
        let graph = self.graph.read();
        let position = graph.applied();
        let change = request.change.and_then(|id| graph.change_book().change_at(id, position)).or(unapplied);
        let ci = graph
            .ci_at(request.ci, position)
            .ok_or_else(|| gate_error(GateError::UnknownCi(request.ci.to_string())))?;
        let release = match request.release {
            Some(id) => Some(
                graph
                    .release_book()
                    .release_at(id, position)
                    .ok_or_else(|| gate_error(GateError::UnknownRelease(id.to_string())))?,
            ),
            None => None,
        };
        let probe = Window { start: now, end: now.saturating_add_micros(1), time_zone: "UTC".into() };
        let scope = Scope { cis: vec![request.ci], planned: Vec::new() };
        let depth = self.settings.facts.conflict_max_depth;
        let calendar = calendar::calendar_facts(&graph, request.change, &scope, &probe, depth, None)?;
        // The changes scheduled or implementing now that share or reach the CI (CH-5), less
        // those either side acknowledged.
        let conflicts = calendar
            .conflicts
            .into_iter()
            .filter(|c| {
                !c.acknowledged_by_other
                    && !change.as_ref().is_some_and(|me| me.acknowledged.iter().any(|(a, _)| a.other == c.other))
            })
            .collect();
        let mut facts = GateFacts {
            now,
            position,
            actor: actor.to_owned(),
            ci: CiFact { name: ci.name.to_string(), status: ci.status, environment: ci.environment },
            change: change.as_ref().map(|c| ChangeFact {
                label: c.label(),
                state: c.state,
                change_type: c.change_type,
                window: c.details.window.clone(),
                implementer: c.details.implementer.clone(),
                covers_ci: c.details.scope.covers_ci(request.ci),
            }),
            release: release.as_ref().map(|r| release_fact(r, request.ci)),
            freezes: calendar.freezes,
            conflicts,
        };
        if facts.change.is_none() && has_template {
            // A dry run for a service with a template: the change would be opened.
            facts.change = Some(ChangeFact {
                label: "a change from the service's pipeline template".into(),
                state: ChangeState::Draft,
                change_type: ChangeType::Standard,
                window: None,
                implementer: Some(actor.to_owned()),
                covers_ci: true,
            });
        }
        debug_assert!(ci.status != Status::Withdrawn || facts.ci.status == Status::Withdrawn);
        Ok(facts)
    }
}

fn release_fact(release: &ReleaseRecord, ci: CiId) -> ReleaseFact {
    ReleaseFact {
        label: release.label(),
        state: release.state,
        environments: release.details.environments.clone(),
        accepted: release.accepted.keys().copied().collect(),
        deployed: release.deployed.keys().copied().collect(),
        recorded: release.version_for(ci).map(|v| (v.version.clone(), v.digest.clone())),
    }
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(cmdb_core::change::MAX_TITLE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn gate_error(error: GateError) -> AppError {
    AppError::Gate(error)
}
