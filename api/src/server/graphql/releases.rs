//! Releases, deployments and the gate over GraphQL (RL-1 to RL-7): `release`, `releases` and
//! `deployments` inside `at(...)`, a mutation per transition, the `gate` dry run, and the
//! `deployments` subscription. Resolvers only translate; the rules are in the core and the
//! sequencing in `app::releases`.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject, Subscription};
use cmdb_core::access::{Operation, Role};
use cmdb_core::release::{self as domain, ReleaseCommand, ReleaseRecord};
use futures::Stream;

use super::context::{Requires, app, list_limit, metadata, parse_id, resolve_change, state};
use super::environment::Environment;
use super::scalars::{DateTime, Position};
use crate::app::releases::{GateAsk, ReleaseRef};
use crate::server::errors::{Code, app_error, bad_input, coded};

pub use super::context::MAX_RELEASE_LIST;
/// Events a deployment subscription reads from the log per page.
const DEPLOYMENT_PAGE_EVENTS: usize = 500;
const DAY_MICROS: i64 = 86_400_000_000;

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::ReleaseType")]
pub enum ReleaseType {
    Major,
    Minor,
    Emergency,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::ReleaseState")]
pub enum ReleaseState {
    Planned,
    Built,
    Accepted,
    Deployed,
    Reviewed,
    Closed,
    Rejected,
    Deferred,
    RolledBack,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::ReleaseAction")]
pub enum ReleaseAction {
    Build,
    Accept,
    Reject,
    Defer,
    Resume,
    Review,
    Close,
    Deployed,
    RollBack,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::DeploymentState")]
pub enum DeploymentState {
    Requested,
    Started,
    Succeeded,
    Failed,
    RolledBack,
    Refused,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::ReportedOutcome")]
pub enum DeploymentOutcome {
    Started,
    Succeeded,
    Failed,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::release::gate::GateDecision")]
pub enum GateDecision {
    Allow,
    Deny,
    Pending,
}

/// Who did something, when, where in the log.
#[derive(SimpleObject, Clone)]
pub struct Stamp {
    by: String,
    at: DateTime,
    position: Position,
}

impl From<&domain::Stamp> for Stamp {
    fn from(s: &domain::Stamp) -> Self {
        Stamp { by: s.by.clone(), at: DateTime(s.at), position: Position(s.position) }
    }
}

/// A CI version a release sets (RL-3).
#[derive(SimpleObject, Clone)]
pub struct CiVersion {
    ci: ID,
    artifact: String,
    version: String,
    digest: String,
}

/// An acceptance step (RL-4) and its sign-off.
#[derive(SimpleObject, Clone)]
pub struct AcceptanceStep {
    environment: Environment,
    name: String,
    /// The role whoever signs it must hold.
    role: String,
    signed: Option<Stamp>,
    note: Option<String>,
}

/// An environment the release is accepted for or deployed to.
#[derive(SimpleObject, Clone)]
pub struct EnvironmentStamp {
    environment: Environment,
    deployment: Option<ID>,
    stamp: Stamp,
}

/// A transition of the release.
#[derive(SimpleObject, Clone)]
pub struct ReleaseTransition {
    action: ReleaseAction,
    from: ReleaseState,
    to: ReleaseState,
    note: Option<String>,
    deployment: Option<ID>,
    environment: Option<Environment>,
    stamp: Stamp,
}

/// An incident linked to the release (RL-7).
#[derive(SimpleObject, Clone)]
pub struct LinkedIncident {
    incident: String,
    title: Option<String>,
    occurred_at: DateTime,
    linked: Stamp,
}

/// A release.
pub struct Release {
    record: ReleaseRecord,
    review_days: u32,
    /// The position the view is at.
    position: u64,
}

impl Release {
    /// The release as `record` says, read at `position`.
    pub(super) fn new(record: ReleaseRecord, review_days: u32, position: u64) -> Release {
        Release { record, review_days, position }
    }
}

#[Object]
impl Release {
    pub(crate) async fn id(&self) -> ID {
        ID(self.record.release_id.to_string())
    }

    /// `REL-000001`.
    async fn number(&self) -> String {
        self.record.number.to_string()
    }

    async fn title(&self) -> &str {
        &self.record.details.title
    }

    async fn release_type(&self) -> ReleaseType {
        self.record.details.release_type.into()
    }

    async fn state(&self) -> ReleaseState {
        self.record.state.into()
    }

    /// The changes it delivers.
    async fn changes(&self) -> Vec<ID> {
        self.record.details.changes.iter().map(|c| ID(c.to_string())).collect()
    }

    async fn versions(&self) -> Vec<CiVersion> {
        self.record
            .details
            .versions
            .iter()
            .map(|v| CiVersion {
                ci: ID(v.ci.to_string()),
                artifact: v.artifact.clone(),
                version: v.version.clone(),
                digest: v.digest.to_string(),
            })
            .collect()
    }

    /// Target environments, in order.
    async fn environments(&self) -> Vec<Environment> {
        self.record.details.environments.iter().map(|e| (*e).into()).collect()
    }

    async fn release_plan(&self) -> &str {
        &self.record.details.release_plan
    }

    async fn roll_back_plan(&self) -> &str {
        &self.record.details.roll_back_plan
    }

    /// The baseline it is built against (RL-5).
    async fn baseline(&self) -> Option<&str> {
        self.record.details.baseline.as_deref()
    }

    async fn acceptance(&self) -> Vec<AcceptanceStep> {
        self.record
            .details
            .acceptance
            .iter()
            .map(|s| {
                let signed = self.record.signed(s.environment, &s.name);
                AcceptanceStep {
                    environment: s.environment.into(),
                    name: s.name.clone(),
                    role: s.role.as_str().to_owned(),
                    signed: signed.map(|sig| (&sig.stamp).into()),
                    note: signed.and_then(|sig| sig.note.clone()),
                }
            })
            .collect()
    }

    /// Environments it is accepted for (RL-4).
    async fn accepted(&self) -> Vec<EnvironmentStamp> {
        self.record
            .accepted
            .iter()
            .map(|(e, s)| EnvironmentStamp { environment: (*e).into(), deployment: None, stamp: s.into() })
            .collect()
    }

    /// Environments it is deployed to now, with the deployment.
    async fn deployed(&self) -> Vec<EnvironmentStamp> {
        self.record
            .deployed
            .iter()
            .map(|(e, (d, s))| EnvironmentStamp {
                environment: (*e).into(),
                deployment: Some(ID(d.to_string())),
                stamp: s.into(),
            })
            .collect()
    }

    async fn planned(&self) -> Stamp {
        (&self.record.planned).into()
    }

    /// Its transitions, oldest first (each with its role's principal and event position).
    async fn transitions(&self) -> Vec<ReleaseTransition> {
        self.record
            .transitions
            .iter()
            .map(|(t, s)| ReleaseTransition {
                action: t.action.into(),
                from: t.from.into(),
                to: t.to.into(),
                note: t.note.clone(),
                deployment: t.deployment.map(|d| ID(d.to_string())),
                environment: t.environment.map(Into::into),
                stamp: s.into(),
            })
            .collect()
    }

    /// Every incident linked to it.
    async fn incidents(&self) -> Vec<LinkedIncident> {
        self.record.incidents.iter().map(incident).collect()
    }

    /// Incidents that began within the review period after its first deployment (RL-7).
    async fn incidents_in_review(&self) -> Vec<LinkedIncident> {
        let Some(first) = self.first_deployed() else { return Vec::new() };
        let end = first.saturating_add_micros(i64::from(self.review_days) * DAY_MICROS);
        self.record.incidents.iter().filter(|i| i.occurred_at >= first && i.occurred_at < end).map(incident).collect()
    }

    /// Incidents reported by tools or people on the CIs its deployments changed, detected
    /// within the review period after that deployment succeeded (RL-7): found, not linked.
    async fn observed_incidents(&self, ctx: &Context<'_>) -> Vec<super::tooling::Incident> {
        let graph = state(ctx).graph.read();
        let book = graph.release_book();
        let filter = cmdb_projections::releases::DeploymentFilter {
            release: Some(self.record.release_id),
            ..Default::default()
        };
        let window = i64::from(self.review_days) * DAY_MICROS;
        let deployed: Vec<(cmdb_core::Timestamp, Vec<cmdb_core::ids::CiId>)> = book
            .deployments_at(self.position, &filter, MAX_RELEASE_LIST)
            .iter()
            .filter_map(|d| {
                let at = d.reached(domain::DeploymentState::Succeeded)?.at;
                Some((at, d.request.targets.iter().map(|t| t.ci).collect()))
            })
            .collect();
        if deployed.is_empty() {
            return Vec::new();
        }
        book.incidents_at(self.position, None, MAX_RELEASE_LIST)
            .iter()
            .filter(|i| {
                let t = i.opened.detected_at;
                deployed.iter().any(|(at, cis)| {
                    t >= *at && t < at.saturating_add_micros(window) && i.opened.cis.iter().any(|c| cis.contains(c))
                })
            })
            .map(Into::into)
            .collect()
    }

    /// The review period in days (`--release-review-days`).
    async fn review_days(&self) -> u32 {
        self.review_days
    }
}

impl Release {
    fn first_deployed(&self) -> Option<cmdb_core::Timestamp> {
        self.record.transitions.iter().find(|(t, _)| t.action == domain::ReleaseAction::Deployed).map(|(_, s)| s.at)
    }
}

fn incident(i: &domain::LinkedIncident) -> LinkedIncident {
    LinkedIncident {
        incident: i.incident.clone(),
        title: i.title.clone(),
        occurred_at: DateTime(i.occurred_at),
        linked: (&i.stamp).into(),
    }
}

/// What a deployment carries.
#[derive(SimpleObject, Clone)]
pub struct DeploymentTarget {
    ci: ID,
    artifact: String,
    version: String,
    /// Null only for a deployment a tool reported without a digest.
    digest: Option<String>,
}

/// A CI as a deployment found it (what a roll-back restores).
#[derive(SimpleObject, Clone)]
pub struct CiConfig {
    ci: ID,
    version: Option<String>,
    artifact: Option<String>,
    digest: Option<String>,
}

/// The pipeline run.
#[derive(SimpleObject, Clone)]
pub struct PipelineRun {
    provider: String,
    run_id: String,
    run_url: Option<String>,
}

/// A step of a deployment.
#[derive(SimpleObject, Clone)]
pub struct DeploymentStep {
    state: DeploymentState,
    note: Option<String>,
    stamp: Stamp,
}

/// A deployment into one environment.
#[derive(SimpleObject, Clone)]
pub struct Deployment {
    id: ID,
    state: DeploymentState,
    environment: Environment,
    release: Option<ID>,
    /// The change authorising its CI edits; null only for a tool's deployment on a CI of an
    /// uncontrolled class.
    change: Option<ID>,
    targets: Vec<DeploymentTarget>,
    pipeline: Option<PipelineRun>,
    requested: Stamp,
    /// The CIs as they were when it started.
    before: Vec<CiConfig>,
    history: Vec<DeploymentStep>,
    /// Why it was refused (`DIGEST_MISMATCH`).
    refused_code: Option<String>,
    /// The tool's deployment, for one a tool reported rather than asked for.
    observed_from: Option<super::tooling::ToolRef>,
    /// What the tool reported, oldest first.
    observations: Vec<super::tooling::Observation>,
    /// Observed with no change or accepted release covering its CI: `change` is the
    /// retrospective emergency change opened for it, and its CI edits are flagged (CM-3).
    unauthorised: bool,
}

impl From<&domain::DeploymentRecord> for Deployment {
    fn from(d: &domain::DeploymentRecord) -> Self {
        let r = &d.request;
        Deployment {
            id: ID(r.deployment_id.to_string()),
            state: d.state.into(),
            environment: r.environment.into(),
            release: r.release_id.map(|x| ID(x.to_string())),
            change: r.change_id.map(|c| ID(c.to_string())),
            targets: r
                .targets
                .iter()
                .map(|t| DeploymentTarget {
                    ci: ID(t.ci.to_string()),
                    artifact: t.artifact.clone(),
                    version: t.version.clone(),
                    digest: t.digest.as_ref().map(ToString::to_string),
                })
                .collect(),
            pipeline: r.pipeline.as_ref().map(|p| PipelineRun {
                provider: p.provider.clone(),
                run_id: p.run_id.clone(),
                run_url: p.run_url.clone(),
            }),
            requested: (&d.requested).into(),
            before: d
                .before
                .iter()
                .map(|b| CiConfig {
                    ci: ID(b.ci.to_string()),
                    version: b.version.clone(),
                    artifact: b.artifact.clone(),
                    digest: b.digest.clone(),
                })
                .collect(),
            history: d
                .history
                .iter()
                .map(|(s, note, stamp)| DeploymentStep { state: (*s).into(), note: note.clone(), stamp: stamp.into() })
                .collect(),
            refused_code: d.refused_code.clone(),
            observed_from: r.observed.as_ref().map(Into::into),
            observations: d.observations.iter().map(|(o, stamp)| super::tooling::Observation::of(o, stamp)).collect(),
            unauthorised: r.unauthorised,
        }
    }
}

/// Which deployments to list.
#[derive(InputObject, Default)]
pub struct DeploymentFilterInput {
    /// A service or CI they touched (id).
    service: Option<ID>,
    environment: Option<Environment>,
    /// Requested at or after.
    from: Option<DateTime>,
    /// Requested before.
    to: Option<DateTime>,
    /// Their outcome (state) now.
    outcome: Option<Vec<DeploymentState>>,
    /// A release (id or `REL-` number).
    release: Option<String>,
}

fn release_ref(text: &str) -> async_graphql::Result<ReleaseRef> {
    text.parse::<ReleaseRef>().map_err(|e| bad_input(e.to_string()))
}

fn review_days(ctx: &Context<'_>) -> u32 {
    state(ctx).settings.release_review_days
}

/// Releases and deployments as they stood at one position.
pub struct ReleasesAt {
    pub(super) position: u64,
}

#[Object]
impl ReleasesAt {
    /// One release by id or number (`REL-000001`).
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn release(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Release>> {
        let reference = release_ref(&id)?;
        let graph = state(ctx).graph.read();
        let book = graph.release_book();
        let release_id = match reference {
            ReleaseRef::Id(id) => Some(id),
            ReleaseRef::Number(n) => book.id_of(n, self.position),
        };
        Ok(release_id.and_then(|id| book.release_at(id, self.position)).map(|record| Release {
            record,
            review_days: review_days(ctx),
            position: self.position,
        }))
    }

    /// Releases, newest first, in the given states.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn releases(
        &self,
        ctx: &Context<'_>,
        states: Option<Vec<ReleaseState>>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Release>> {
        let limit = list_limit(first)?;
        let states: Option<Vec<domain::ReleaseState>> = states.map(|s| s.into_iter().map(Into::into).collect());
        let graph = state(ctx).graph.read();
        Ok(graph
            .release_book()
            .releases_at(self.position, states.as_deref(), limit)
            .into_iter()
            .map(|record| Release { record, review_days: review_days(ctx), position: self.position })
            .collect())
    }

    /// One deployment.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn deployment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Deployment>> {
        let id: cmdb_core::ids::DeploymentId = parse_id(&id)?;
        let graph = state(ctx).graph.read();
        Ok(graph.release_book().deployment_at(id, self.position).as_ref().map(Deployment::from))
    }

    /// Deployments, newest first, by service, environment, time range and outcome.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeploymentFilterInput>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Deployment>> {
        let limit = list_limit(first)?;
        let filter = filter.unwrap_or_default();
        let release = match &filter.release {
            Some(text) => Some(app(ctx).resolve_release(&release_ref(text)?).map_err(app_error)?),
            None => None,
        };
        let wanted = cmdb_projections::releases::DeploymentFilter {
            ci: filter.service.as_ref().map(parse_id).transpose()?,
            environment: filter.environment.map(Into::into),
            from: filter.from.map(|t| t.0),
            to: filter.to.map(|t| t.0),
            states: filter.outcome.map(|s| s.into_iter().map(Into::into).collect()),
            release,
        };
        let graph = state(ctx).graph.read();
        Ok(graph.release_book().deployments_at(self.position, &wanted, limit).iter().map(Deployment::from).collect())
    }
}

/// The deployments of one CI as of `position`.
pub(super) fn deployments_of_ci(
    ctx: &Context<'_>,
    ci: cmdb_core::ci::CiId,
    position: u64,
    first: Option<i32>,
) -> async_graphql::Result<Vec<Deployment>> {
    let limit = list_limit(first)?;
    let filter = cmdb_projections::releases::DeploymentFilter { ci: Some(ci), ..Default::default() };
    let graph = state(ctx).graph.read();
    Ok(graph.release_book().deployments_at(position, &filter, limit).iter().map(Deployment::from).collect())
}

/// A CI version a release sets.
#[derive(InputObject)]
pub struct CiVersionInput {
    ci: ID,
    artifact: String,
    version: String,
    /// `sha256:` and 64 lowercase hex digits, or another named digest.
    digest: String,
}

/// An acceptance step.
#[derive(InputObject)]
pub struct AcceptanceStepInput {
    environment: Environment,
    name: String,
    /// The role whoever signs it must hold (`approver`, `change-manager`...).
    role: String,
}

/// A release to plan.
#[derive(InputObject)]
pub struct ReleaseInput {
    title: String,
    release_type: ReleaseType,
    /// Changes it delivers (ids or `CHG-` numbers).
    #[graphql(default)]
    changes: Vec<ID>,
    versions: Vec<CiVersionInput>,
    /// In order.
    environments: Vec<Environment>,
    release_plan: String,
    roll_back_plan: String,
    baseline: Option<String>,
    #[graphql(default)]
    acceptance: Vec<AcceptanceStepInput>,
}

/// A deployment to request.
#[derive(InputObject)]
pub struct DeploymentInput {
    /// A release (id or `REL-` number).
    release: Option<String>,
    /// The change authorising its CI edits (id or `CHG-` number).
    change: ID,
    environment: Environment,
    targets: Vec<CiVersionInput>,
    pipeline_provider: Option<String>,
    pipeline_run_id: Option<String>,
    pipeline_run_url: Option<String>,
}

/// The artifact a gate call names.
#[derive(InputObject)]
pub struct ArtifactInput {
    name: String,
    version: String,
    digest: String,
}

fn digest(text: &str) -> async_graphql::Result<domain::ArtifactDigest> {
    text.parse().map_err(|e: domain::ReleaseError| bad_input(e.to_string()))
}

fn versions(input: Vec<CiVersionInput>) -> async_graphql::Result<Vec<domain::CiVersion>> {
    input
        .into_iter()
        .map(|v| {
            Ok(domain::CiVersion {
                ci: parse_id(&v.ci)?,
                artifact: v.artifact,
                version: v.version,
                digest: digest(&v.digest)?,
            })
        })
        .collect()
}

async fn release_now(ctx: &Context<'_>, release_id: cmdb_core::ids::ReleaseId) -> async_graphql::Result<Release> {
    let graph = state(ctx).graph.read();
    graph
        .release_book()
        .release_at(release_id, graph.applied())
        .map(|record| Release { record, review_days: review_days(ctx), position: graph.applied() })
        .ok_or_else(|| coded(Code::Unavailable, "the release is recorded but not yet in the graph; read it again"))
}

fn deployment_now(ctx: &Context<'_>, id: cmdb_core::ids::DeploymentId) -> async_graphql::Result<Deployment> {
    let graph = state(ctx).graph.read();
    graph
        .release_book()
        .deployment_at(id, graph.applied())
        .as_ref()
        .map(Deployment::from)
        .ok_or_else(|| coded(Code::Unavailable, "the deployment is recorded but not yet in the graph; read it again"))
}

async fn resolve_release(ctx: &Context<'_>, id: &str) -> async_graphql::Result<cmdb_core::ids::ReleaseId> {
    app(ctx).resolve_release(&release_ref(id)?).map_err(app_error)
}

/// Release and deployment mutations.
#[derive(Default)]
pub struct ReleaseMutation;

#[Object]
impl ReleaseMutation {
    /// Plans and numbers a release (RL-1, RL-2, RL-5).
    #[graphql(guard = "Requires(Operation::ManageReleases)")]
    async fn plan_release(&self, ctx: &Context<'_>, input: ReleaseInput) -> async_graphql::Result<Release> {
        let mut changes = Vec::with_capacity(input.changes.len());
        for change in &input.changes {
            changes.push(resolve_change(ctx, change).await?);
        }
        let acceptance = input
            .acceptance
            .into_iter()
            .map(|s| {
                let role: Role =
                    s.role.parse().map_err(|e: cmdb_core::access::AccessError| bad_input(e.to_string()))?;
                Ok(domain::AcceptanceStep { environment: s.environment.into(), name: s.name, role })
            })
            .collect::<async_graphql::Result<Vec<_>>>()?;
        let details = domain::ReleaseDetails {
            title: input.title,
            release_type: input.release_type.into(),
            changes,
            versions: versions(input.versions)?,
            environments: input.environments.into_iter().map(Into::into).collect(),
            release_plan: input.release_plan,
            roll_back_plan: input.roll_back_plan,
            baseline: input.baseline,
            acceptance,
        };
        let release_id = cmdb_core::ids::ReleaseId(state(ctx).ids.next_id());
        let command = ReleaseCommand::Plan { release_id, details };
        app(ctx).release(&command, metadata(ctx)?).await.map_err(app_error)?;
        release_now(ctx, release_id).await
    }

    /// Build, reject, defer, resume, review or close a release (with the note or reason the
    /// transition needs).
    #[graphql(guard = "Requires(Operation::ManageReleases)")]
    async fn transition_release(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, action, note}")] id: Option<String>,
        #[graphql(deprecation = "pass input: {id, action, note}")] action: Option<ReleaseAction>,
        #[graphql(deprecation = "pass input: {id, action, note}")] note: Option<String>,
        input: Option<TransitionReleaseInput>,
    ) -> async_graphql::Result<Release> {
        let any_loose = id.is_some() || action.is_some() || note.is_some();
        let loose = id.zip(action).map(|(id, action)| TransitionReleaseInput { id, action, note });
        let TransitionReleaseInput { id, action, note } =
            super::inputs::input_or(input, loose, any_loose, "{id, action, note}")?;
        let release_id = resolve_release(ctx, &id).await?;
        let command = ReleaseCommand::Act { release_id, action: action.into(), note };
        app(ctx).release(&command, metadata(ctx)?).await.map_err(app_error)?;
        release_now(ctx, release_id).await
    }

    /// Signs off one acceptance step (RL-4): only a principal holding the step's role may.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn accept_release_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, environment, step, note}")] id: Option<String>,
        #[graphql(deprecation = "pass input: {id, environment, step, note}")] environment: Option<Environment>,
        #[graphql(deprecation = "pass input: {id, environment, step, note}")] step: Option<String>,
        #[graphql(deprecation = "pass input: {id, environment, step, note}")] note: Option<String>,
        input: Option<AcceptReleaseStepInput>,
    ) -> async_graphql::Result<Release> {
        let any_loose = id.is_some() || environment.is_some() || step.is_some() || note.is_some();
        let loose = id.zip(environment).zip(step).map(|((id, environment), step)| AcceptReleaseStepInput {
            id,
            environment,
            step,
            note,
        });
        let AcceptReleaseStepInput { id, environment, step, note } =
            super::inputs::input_or(input, loose, any_loose, "{id, environment, step, note}")?;
        let release_id = resolve_release(ctx, &id).await?;
        let command = ReleaseCommand::Accept { release_id, environment: environment.into(), step, note };
        app(ctx).release(&command, metadata(ctx)?).await.map_err(app_error)?;
        release_now(ctx, release_id).await
    }

    /// Links an incident to a release (RL-7).
    #[graphql(guard = "Requires(Operation::ManageReleases)")]
    async fn link_incident_to_release(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, incident, title, occurredAt}")] id: Option<String>,
        #[graphql(deprecation = "pass input: {id, incident, title, occurredAt}")] incident: Option<String>,
        #[graphql(deprecation = "pass input: {id, incident, title, occurredAt}")] title: Option<String>,
        #[graphql(deprecation = "pass input: {id, incident, title, occurredAt}")] occurred_at: Option<DateTime>,
        input: Option<LinkIncidentToReleaseInput>,
    ) -> async_graphql::Result<Release> {
        let any_loose = id.is_some() || incident.is_some() || title.is_some() || occurred_at.is_some();
        let loose = id.zip(incident).zip(occurred_at).map(|((id, incident), occurred_at)| LinkIncidentToReleaseInput {
            id,
            incident,
            title,
            occurred_at,
        });
        let LinkIncidentToReleaseInput { id, incident, title, occurred_at } =
            super::inputs::input_or(input, loose, any_loose, "{id, incident, title, occurredAt}")?;
        let release_id = resolve_release(ctx, &id).await?;
        let command = ReleaseCommand::LinkIncident { release_id, incident, title, occurred_at: occurred_at.0 };
        app(ctx).release(&command, metadata(ctx)?).await.map_err(app_error)?;
        release_now(ctx, release_id).await
    }

    /// Requests a deployment. A digest that is not the release's is refused with
    /// `DIGEST_MISMATCH`, and the refusal is recorded (RL-3).
    #[graphql(guard = "Requires(Operation::Deploy)")]
    async fn request_deployment(&self, ctx: &Context<'_>, input: DeploymentInput) -> async_graphql::Result<Deployment> {
        let release = match &input.release {
            Some(text) => Some(resolve_release(ctx, text).await?),
            None => None,
        };
        let change_id = resolve_change(ctx, &input.change).await?;
        let targets = versions(input.targets)?
            .into_iter()
            .map(|v| domain::DeploymentTarget {
                ci: v.ci,
                artifact: v.artifact,
                version: v.version,
                digest: Some(v.digest),
            })
            .collect();
        let pipeline = match (input.pipeline_provider, input.pipeline_run_id) {
            (Some(provider), Some(run_id)) => {
                Some(domain::Pipeline { provider, run_id, run_url: input.pipeline_run_url })
            }
            (None, None) => None,
            _ => return Err(bad_input("give pipelineProvider and pipelineRunId together")),
        };
        let deployment_id = cmdb_core::ids::DeploymentId(state(ctx).ids.next_id());
        let requested = domain::DeploymentRequested {
            deployment_id,
            release_id: release,
            change_id: Some(change_id),
            environment: input.environment.into(),
            targets,
            pipeline,
            observed: None,
            unauthorised: false,
        };
        app(ctx).request_deployment(requested, metadata(ctx)?).await.map_err(app_error)?;
        deployment_now(ctx, deployment_id)
    }

    /// Reports a deployment's outcome: a success edits its CIs in the same append (CM-3).
    #[graphql(guard = "Requires(Operation::Deploy)")]
    async fn report_deployment(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, outcome, note}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, outcome, note}")] outcome: Option<DeploymentOutcome>,
        #[graphql(deprecation = "pass input: {id, outcome, note}")] note: Option<String>,
        input: Option<ReportDeploymentInput>,
    ) -> async_graphql::Result<Deployment> {
        let any_loose = id.is_some() || outcome.is_some() || note.is_some();
        let loose = id.zip(outcome).map(|(id, outcome)| ReportDeploymentInput { id, outcome, note });
        let ReportDeploymentInput { id, outcome, note } =
            super::inputs::input_or(input, loose, any_loose, "{id, outcome, note}")?;
        let deployment_id = parse_id(&id)?;
        app(ctx).report_deployment(deployment_id, outcome.into(), note, metadata(ctx)?).await.map_err(app_error)?;
        deployment_now(ctx, deployment_id)
    }

    /// Rolls a deployment back: every CI it touched returns to what it was when it started,
    /// under `change` (default: the deployment's own, if it is still implementing or failed).
    #[graphql(guard = "Requires(Operation::Deploy)")]
    async fn roll_back_deployment(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {id, change, reason}")] id: Option<ID>,
        #[graphql(deprecation = "pass input: {id, change, reason}")] change: Option<ID>,
        #[graphql(deprecation = "pass input: {id, change, reason}")] reason: Option<String>,
        input: Option<RollBackDeploymentInput>,
    ) -> async_graphql::Result<Deployment> {
        let any_loose = id.is_some() || change.is_some() || reason.is_some();
        let loose = id.zip(reason).map(|(id, reason)| RollBackDeploymentInput { id, change, reason });
        let RollBackDeploymentInput { id, change, reason } =
            super::inputs::input_or(input, loose, any_loose, "{id, change, reason}")?;
        let deployment_id = parse_id(&id)?;
        let change_id = match &change {
            Some(c) => Some(resolve_change(ctx, c).await?),
            None => None,
        };
        app(ctx).roll_back(deployment_id, change_id, reason, metadata(ctx)?).await.map_err(app_error)?;
        deployment_now(ctx, deployment_id)
    }

    /// Names the standard-change template a service's pipelines get their changes from (or
    /// none).
    #[graphql(guard = "Requires(Operation::ManageReleases)")]
    async fn set_pipeline_template(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {ci, template}")] ci: Option<ID>,
        #[graphql(deprecation = "pass input: {ci, template}")] template: Option<ID>,
        input: Option<SetPipelineTemplateInput>,
    ) -> async_graphql::Result<bool> {
        let any_loose = ci.is_some() || template.is_some();
        let loose = ci.map(|ci| SetPipelineTemplateInput { ci, template });
        let SetPipelineTemplateInput { ci, template } =
            super::inputs::input_or(input, loose, any_loose, "{ci, template}")?;
        let set = domain::PipelineTemplateSet {
            ci: parse_id(&ci)?,
            template_id: template.as_ref().map(parse_id).transpose()?,
        };
        app(ctx).release(&ReleaseCommand::SetPipelineTemplate(set), metadata(ctx)?).await.map_err(app_error)?;
        Ok(true)
    }
}

/// A gate answer.
#[derive(SimpleObject)]
pub struct GateAnswer {
    decision: GateDecision,
    reasons: Vec<GateReason>,
    change: Option<String>,
    release: Option<String>,
    window_start: Option<DateTime>,
    window_end: Option<DateTime>,
    retry_after_seconds: Option<u64>,
    /// Whether an allow would start (or started) the change's implementation.
    starts_implementation: bool,
}

/// One reason.
#[derive(SimpleObject)]
pub struct GateReason {
    code: String,
    message: String,
}

/// The gate as a dry run: the answer `POST /api/v1/gate` would give now, writing nothing.
pub async fn gate_dry_run(
    ctx: &Context<'_>,
    service: String,
    environment: Environment,
    artifact: ArtifactInput,
    change: Option<ID>,
    release: Option<String>,
) -> async_graphql::Result<GateAnswer> {
    let ask = GateAsk {
        ci: service,
        environment: environment.into(),
        artifact: domain::gate::Artifact {
            name: artifact.name,
            version: artifact.version,
            digest: digest(&artifact.digest)?,
        },
        change: change.as_ref().map(super::context::parse_change_ref).transpose()?,
        release: release.as_deref().map(release_ref).transpose()?,
        pipeline: None,
    };
    let answer = app(ctx).gate(&ask, true, metadata(ctx)?).await.map_err(app_error)?;
    let outcome = answer.outcome;
    Ok(GateAnswer {
        decision: outcome.decision.into(),
        reasons: outcome.reasons.into_iter().map(|r| GateReason { code: r.code, message: r.message }).collect(),
        change: outcome.change,
        release: outcome.release,
        window_start: outcome.window.as_ref().map(|w| DateTime(w.start)),
        window_end: outcome.window.as_ref().map(|w| DateTime(w.end)),
        retry_after_seconds: outcome.retry_after_seconds,
        starts_implementation: outcome.starts_implementation,
    })
}

/// A deployment moved.
#[derive(SimpleObject)]
pub struct DeploymentEvent {
    deployment: ID,
    state: DeploymentState,
    position: Position,
    time: DateTime,
    by: String,
}

/// The deployment subscription.
#[derive(Default)]
pub struct DeploymentSubscription;

#[Subscription]
impl DeploymentSubscription {
    /// Deployments from now on (or after `after`): requested, started, ended, rolled back.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<DeploymentEvent>>> {
        super::context::follow_log(ctx, after, DEPLOYMENT_PAGE_EVENTS, deployment_event).await
    }
}

fn deployment_event(record: &cmdb_core::EventRecord) -> Option<DeploymentEvent> {
    let (deployment, state) = match domain::ReleaseEvent::from_record(record).ok()?? {
        domain::ReleaseEvent::DeploymentRequested(r) => (r.deployment_id, domain::DeploymentState::Requested),
        domain::ReleaseEvent::DeploymentStarted(s) => (s.deployment_id, domain::DeploymentState::Started),
        domain::ReleaseEvent::DeploymentEnded(e) => (e.deployment_id, e.state),
        _ => return None,
    };
    Some(DeploymentEvent {
        deployment: ID(deployment.to_string()),
        state: state.into(),
        position: Position(record.position),
        time: DateTime(record.recorded_at),
        by: record.principal.to_string(),
    })
}

/// `transitionRelease(input:)`.
#[derive(async_graphql::InputObject)]
pub struct TransitionReleaseInput {
    id: String,
    action: ReleaseAction,
    note: Option<String>,
}

/// `acceptReleaseStep(input:)`.
#[derive(async_graphql::InputObject)]
pub struct AcceptReleaseStepInput {
    id: String,
    environment: Environment,
    step: String,
    note: Option<String>,
}

/// `linkIncidentToRelease(input:)`.
#[derive(async_graphql::InputObject)]
pub struct LinkIncidentToReleaseInput {
    id: String,
    incident: String,
    title: Option<String>,
    occurred_at: DateTime,
}

/// `reportDeployment(input:)`.
#[derive(async_graphql::InputObject)]
pub struct ReportDeploymentInput {
    id: ID,
    outcome: DeploymentOutcome,
    note: Option<String>,
}

/// `rollBackDeployment(input:)`.
#[derive(async_graphql::InputObject)]
pub struct RollBackDeploymentInput {
    id: ID,
    change: Option<ID>,
    reason: String,
}

/// `setPipelineTemplate(input:)`.
#[derive(async_graphql::InputObject)]
pub struct SetPipelineTemplateInput {
    ci: ID,
    template: Option<ID>,
}
