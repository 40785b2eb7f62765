//! Risk assessments, approval-policy decisions and policies over GraphQL (CH-2, CH-4): a
//! change's `assessment`, `assessments`, `decision` (with its replay) and `approvalStatus`;
//! inside `at(...)` the `policy` in force and `policies` loaded, and `whatIf`, which assesses
//! and decides a draft without recording anything; the `loadPolicy` mutation.
//!
//! Facts come from the projection at its applied position ([`facts_for`]); the core scores
//! them and the policy decides on them.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, Object, SimpleObject};
use cmdb_core::change::decide::policy_input;
use cmdb_core::change::risk::{self, Assessment, AssessmentFacts};
use cmdb_core::change::{self as domain, ChangeRecord};
use cmdb_core::ci::{CiId, CiSnapshot};
use cmdb_core::policy::{self, PolicyDecision, PolicyRecord};
use cmdb_projections::assessment::assessment_facts;

use super::config::{Ci, state};
use super::scalars::{DateTime, Position};
use super::types::Role;
use super::{Requires, metadata};
use crate::server::errors::{bad_input, core_error, graphql_error};
use cmdb_core::access::Operation;

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::risk::RiskLevel")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::change::AssessmentTrigger")]
pub enum AssessmentTrigger {
    /// The change was assessed.
    Assess,
    /// A standard change was submitted.
    Submission,
    /// Someone asked for a reassessment.
    Request,
    /// A CI in scope changed after the last assessment, before approval.
    ScopeChanged,
}

/// Computes the risk facts for a change (its scope, and the calendar around its window) from
/// the projection at its applied position.
pub fn facts_for(
    ctx: &Context<'_>,
    change_id: Option<cmdb_core::ci::ChangeId>,
    details: &domain::ChangeDetails,
) -> async_graphql::Result<(AssessmentFacts, u64)> {
    let graph = state(ctx).graph.read();
    let position = graph.applied();
    let facts = facts_at(ctx, &graph, change_id, details, position)?;
    Ok((facts, position))
}

/// The risk facts at `position`, and the calendar around the window (at the head: scheduling
/// is checked against the calendar as it is now).
fn facts_at(
    ctx: &Context<'_>,
    graph: &cmdb_projections::graph::TemporalGraph,
    change_id: Option<cmdb_core::ci::ChangeId>,
    details: &domain::ChangeDetails,
    position: u64,
) -> async_graphql::Result<AssessmentFacts> {
    let app = state(ctx);
    let internal = |e: cmdb_projections::graph::GraphError| graphql_error("INTERNAL", e.to_string());
    let mut facts = assessment_facts(graph, &details.scope, position, app.clock.now(), app.settings.risk_history_days)
        .map_err(internal)?;
    if let Some(window) = &details.window {
        let depth = app.settings.conflict_max_depth;
        facts.calendar = Some(
            cmdb_projections::calendar::calendar_facts(graph, change_id, &details.scope, window, depth)
                .map_err(internal)?,
        );
    }
    Ok(facts)
}

/// Whether a CI in the scope has a version newer than the assessment's facts.
pub fn scope_changed_since(ctx: &Context<'_>, scope: &domain::Scope, position: u64) -> bool {
    let graph = state(ctx).graph.read();
    let head = graph.applied();
    scope.cis.iter().any(|id| graph.version_at(*id, head).is_some_and(|v| v.from > position))
}

#[derive(SimpleObject)]
pub struct RiskFactor {
    pub name: String,
    pub points: u32,
    pub why: String,
}

/// A business service the change reaches.
pub struct ServiceReached {
    fact: risk::ServiceFact,
    in_hours: bool,
    position: u64,
}

#[Object]
impl ServiceReached {
    async fn id(&self) -> async_graphql::ID {
        async_graphql::ID(self.fact.id.to_string())
    }
    async fn name(&self) -> &str {
        &self.fact.name
    }
    async fn tier(&self) -> Option<i32> {
        self.fact.tier.map(i32::from)
    }
    /// Hops from the nearest CI in scope (0: the scope names the service).
    async fn depth(&self) -> u32 {
        self.fact.depth
    }
    /// Whether the requested window touches the service's hours (in its own time zone).
    async fn window_in_service_hours(&self) -> bool {
        self.in_hours
    }
    /// The service hours' time zone (IANA).
    async fn time_zone(&self) -> Option<&str> {
        self.fact.service_hours.as_ref().map(|h| h.time_zone.as_str())
    }
    /// E-mail addresses of the people who own the service.
    async fn owner_contacts(&self) -> &[String] {
        &self.fact.owner_contacts
    }
    /// The service CI as it stood when the facts were computed.
    async fn ci(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        graph.ci_at(self.fact.id, self.position).map(|ci| Ci::new(&graph, ci, self.position))
    }
}

#[derive(SimpleObject)]
pub struct CiFailureCount {
    pub ci_id: async_graphql::ID,
    pub failed: u32,
    pub backed_out: u32,
}

/// A risk assessment (CH-2): the facts, the score and level, each factor with its reason.
pub struct RiskAssessment {
    assessment: Assessment,
    recorded: Option<(String, domain::AssessmentTrigger, domain::At)>,
}

#[Object]
impl RiskAssessment {
    async fn score(&self) -> u32 {
        self.assessment.score
    }
    async fn level(&self) -> RiskLevel {
        self.assessment.level.into()
    }
    async fn formula_version(&self) -> u32 {
        self.assessment.formula_version
    }
    async fn factors(&self) -> Vec<RiskFactor> {
        self.assessment
            .factors
            .iter()
            .map(|f| RiskFactor { name: f.name.clone(), points: f.points, why: f.why.clone() })
            .collect()
    }
    /// The log position the facts were computed at.
    async fn position(&self) -> Position {
        Position(self.assessment.facts.position)
    }
    async fn computed_at(&self) -> DateTime {
        DateTime(self.assessment.facts.computed_at)
    }
    async fn downstream_cis(&self) -> u32 {
        self.assessment.facts.downstream_cis
    }
    /// The downstream walk hit its bound: more CIs lie beyond.
    async fn truncated(&self) -> bool {
        self.assessment.facts.truncated
    }
    async fn services(&self) -> Vec<ServiceReached> {
        self.assessment
            .facts
            .services
            .iter()
            .map(|fact| ServiceReached {
                in_hours: self.assessment.window_in_service_hours.contains(&fact.id),
                fact: fact.clone(),
                position: self.assessment.facts.position,
            })
            .collect()
    }
    async fn services_not_listed(&self) -> u32 {
        self.assessment.facts.services_not_listed
    }
    async fn history_days(&self) -> u32 {
        self.assessment.facts.history_days
    }
    /// Scope CIs with failed or backed-out changes within `historyDays`.
    async fn failures(&self) -> Vec<CiFailureCount> {
        self.assessment
            .facts
            .failures
            .iter()
            .map(|f| CiFailureCount {
                ci_id: async_graphql::ID(f.ci.to_string()),
                failed: f.failed,
                backed_out: f.backed_out,
            })
            .collect()
    }
    /// Who assessed (`null` for a what-if).
    async fn by(&self) -> Option<&str> {
        self.recorded.as_ref().map(|(by, _, _)| by.as_str())
    }
    async fn trigger(&self) -> Option<AssessmentTrigger> {
        self.recorded.as_ref().map(|(_, trigger, _)| (*trigger).into())
    }
    async fn recorded_at(&self) -> Option<DateTime> {
        self.recorded.as_ref().map(|(_, _, at)| DateTime(at.recorded_at))
    }
    async fn recorded_position(&self) -> Option<Position> {
        self.recorded.as_ref().map(|(_, _, at)| Position(at.position))
    }
}

/// One approval a decision requires, and who has given it.
#[derive(SimpleObject)]
pub struct ApprovalRequirement {
    /// The role each approver must hold (or `null` when `principals` names them).
    pub role: Option<Role>,
    pub principals: Vec<String>,
    pub count: u32,
    pub reason: String,
    /// Distinct principals whose approval counts towards it (on a recorded change).
    pub approved_by: Vec<String>,
    pub met: bool,
}

/// What re-running a recorded decision gave.
#[derive(SimpleObject)]
pub struct DecisionReplay {
    /// The replay gave the recorded output with the recorded policy text.
    pub matches: bool,
    /// The policy text of that version still hashes to the recorded hash.
    pub policy_intact: bool,
    /// This build's regorus differs from the one that decided.
    pub regorus_differs: bool,
    pub auto_approve: Option<bool>,
    pub deny: Option<Vec<String>>,
    pub approvals: Option<Vec<ApprovalRequirement>>,
    /// Why the replay could not run.
    pub error: Option<String>,
}

/// An approval-policy decision (CH-4), with everything needed to replay it.
pub struct Decision {
    decision: PolicyDecision,
    status: Option<Vec<domain::RequirementStatus>>,
}

fn requirement(r: &policy::ApprovalRequirement, approved_by: Vec<String>) -> ApprovalRequirement {
    ApprovalRequirement {
        role: r.role.map(Into::into),
        principals: r.principals.clone(),
        count: r.count,
        reason: r.reason.clone(),
        met: approved_by.len() >= r.count as usize,
        approved_by,
    }
}

#[Object]
impl Decision {
    async fn policy_version(&self) -> u32 {
        self.decision.policy_version
    }
    async fn policy_hash(&self) -> String {
        self.decision.policy_hash.to_hex()
    }
    async fn regorus_version(&self) -> &str {
        &self.decision.regorus_version
    }
    /// The complete input the policy saw (canonical JSON).
    async fn input(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(serde_json::from_str(&self.decision.input).unwrap_or(serde_json::Value::Null))
    }
    async fn auto_approve(&self) -> bool {
        self.decision.output.auto_approve
    }
    async fn deny(&self) -> &[String] {
        &self.decision.output.deny
    }
    async fn approvals(&self) -> Vec<ApprovalRequirement> {
        match &self.status {
            Some(status) => status.iter().map(|s| requirement(&s.requirement, s.approved_by.clone())).collect(),
            None => self.decision.output.approvals.iter().map(|r| requirement(r, Vec::new())).collect(),
        }
    }
    /// Re-runs the recorded policy version on the recorded input and compares.
    async fn replay(&self, ctx: &Context<'_>) -> async_graphql::Result<DecisionReplay> {
        let policies = policy::load(state(ctx).store.as_ref()).await.map_err(core_error)?;
        Ok(replay_view(&self.decision, &policies))
    }
}

pub fn replay_view(decision: &PolicyDecision, policies: &policy::PolicyState) -> DecisionReplay {
    let record = match policies.version(decision.policy_version) {
        Ok(record) => record,
        Err(e) => {
            return DecisionReplay {
                matches: false,
                policy_intact: false,
                regorus_differs: decision.regorus_version != policy::REGORUS_VERSION,
                auto_approve: None,
                deny: None,
                approvals: None,
                error: Some(e.to_string()),
            };
        }
    };
    let replay = policy::replay(decision, &record);
    let (auto_approve, deny, approvals, error) = match &replay.output {
        Ok(output) => (
            Some(output.auto_approve),
            Some(output.deny.clone()),
            Some(output.approvals.iter().map(|r| requirement(r, Vec::new())).collect()),
            None,
        ),
        Err(e) => (None, None, None, Some(e.to_string())),
    };
    DecisionReplay {
        matches: replay.matches,
        policy_intact: replay.policy_intact,
        regorus_differs: replay.regorus_differs,
        auto_approve,
        deny,
        approvals,
        error,
    }
}

/// The change's fields about assessment and decision.
pub fn assessment_of(entry: &domain::AssessmentEntry) -> RiskAssessment {
    RiskAssessment { assessment: entry.assessment.clone(), recorded: Some((entry.by.clone(), entry.trigger, entry.at)) }
}

pub fn decision_of(record: &ChangeRecord) -> Option<Decision> {
    record.assessment().map(|entry| decision_for(record, entry))
}

/// One of the change's decisions, with the approvals on record counted against it.
pub fn decision_for(record: &ChangeRecord, entry: &domain::AssessmentEntry) -> Decision {
    Decision { decision: entry.decision.clone(), status: Some(record.status_for(&entry.decision.output)) }
}

/// A policy as loaded.
pub struct PolicyView {
    record: PolicyRecord,
}

#[Object]
impl PolicyView {
    /// 0 for the engine's default.
    async fn version(&self) -> u32 {
        self.record.version
    }
    async fn name(&self) -> &str {
        &self.record.name
    }
    async fn hash(&self) -> String {
        self.record.hash.to_hex()
    }
    async fn text(&self) -> &str {
        &self.record.text
    }
    async fn loaded_by(&self) -> &str {
        &self.record.by
    }
    async fn loaded_at(&self) -> Option<DateTime> {
        self.record.loaded_at.map(DateTime)
    }
    async fn position(&self) -> Option<Position> {
        self.record.position.map(Position)
    }
    /// Whether this is the built-in default (no policy loaded yet).
    async fn built_in(&self) -> bool {
        self.record.position.is_none()
    }
}

pub async fn policy_at(ctx: &Context<'_>, position: u64) -> async_graphql::Result<PolicyView> {
    let policies = policy::load(state(ctx).store.as_ref()).await.map_err(core_error)?;
    Ok(PolicyView { record: policies.in_force_at(position) })
}

pub async fn policies_at(ctx: &Context<'_>, position: u64) -> async_graphql::Result<Vec<PolicyView>> {
    let policies = policy::load(state(ctx).store.as_ref()).await.map_err(core_error)?;
    let mut all = vec![PolicyView { record: PolicyRecord::default_policy() }];
    all.extend(
        policies
            .versions
            .into_iter()
            .filter(|p| p.position.is_some_and(|at| at <= position))
            .map(|record| PolicyView { record }),
    );
    Ok(all)
}

/// What a draft would be assessed and decided as; nothing is recorded.
#[derive(SimpleObject)]
pub struct WhatIf {
    pub assessment: RiskAssessment,
    pub decision: WhatIfDecision,
}

/// The decision a what-if would get.
#[derive(SimpleObject)]
pub struct WhatIfDecision {
    pub policy_version: u32,
    pub policy_hash: String,
    pub auto_approve: bool,
    pub deny: Vec<String>,
    pub approvals: Vec<ApprovalRequirement>,
    /// The input the policy saw.
    pub input: async_graphql::Json<serde_json::Value>,
}

/// Assesses and decides a draft change as of `position` (facts from the graph there, the policy
/// in force there, roles as they are now).
pub async fn what_if(
    ctx: &Context<'_>,
    change_type: domain::ChangeType,
    details: domain::ChangeDetails,
    position: u64,
) -> async_graphql::Result<WhatIf> {
    let app = state(ctx);
    let caller = super::caller(ctx)?;
    if let Some(window) = &details.window {
        if window.end <= window.start {
            return Err(bad_input("the window ends before it starts"));
        }
    }
    if details.scope.len() > domain::MAX_SCOPE_ITEMS {
        return Err(bad_input(format!(
            "the scope has {} items; the bound is {} (max_scope_items)",
            details.scope.len(),
            domain::MAX_SCOPE_ITEMS
        )));
    }
    let policies = policy::load(app.store.as_ref()).await.map_err(core_error)?;
    let policy_record = policies.in_force_at(position);
    let (facts, cis) = {
        let graph = app.graph.read();
        graph.check_position(position).map_err(|e| bad_input(e.to_string()))?;
        let mut cis: BTreeMap<CiId, Option<CiSnapshot>> = BTreeMap::new();
        for id in &details.scope.cis {
            let ci = graph
                .ci_at(*id, position)
                .ok_or_else(|| bad_input(format!("configuration item {id} does not exist at position {position}")))?;
            cis.insert(*id, Some((*ci).clone()));
        }
        (facts_at(ctx, &graph, None, &details, position)?, cis)
    };
    let drafted = domain::ChangeDrafted {
        change_id: cmdb_core::ci::ChangeId(uuid::Uuid::nil()),
        change_type,
        template_id: None,
        requester: caller.principal.clone(),
        details,
    };
    let record = ChangeRecord::drafted(&drafted, domain::At { position, recorded_at: app.clock.now() });
    let assessment = risk::assess(facts, change_type, record.details.window.as_ref());
    let access = app.access.snapshot();
    let input = policy_input(&record, Some(&assessment), &access, &cis, app.clock.now());
    let decision = policy::decide(&policy_record, &input)
        .map_err(|e| graphql_error("POLICY_FAILED", format!("the policy in force failed on this input: {e}")))?;
    Ok(WhatIf {
        assessment: RiskAssessment { assessment, recorded: None },
        decision: WhatIfDecision {
            policy_version: decision.policy_version,
            policy_hash: decision.policy_hash.to_hex(),
            auto_approve: decision.output.auto_approve,
            deny: decision.output.deny.clone(),
            approvals: decision.output.approvals.iter().map(|r| requirement(r, Vec::new())).collect(),
            input: async_graphql::Json(input),
        },
    })
}

#[derive(SimpleObject)]
pub struct PolicyResult {
    pub position: Position,
    pub policy: PolicyView,
}

#[derive(Default)]
pub struct PolicyMutation;

#[Object]
impl PolicyMutation {
    /// Loads a new approval policy (Rego, package `cmdb.change`, rule `decision`). Refused with
    /// the parser's message if it does not compile, calls a non-replayable built-in, or
    /// decides malformed; the policy in force then stays.
    #[graphql(guard = "Requires(Operation::ManagePolicy)")]
    async fn load_policy(&self, ctx: &Context<'_>, name: String, text: String) -> async_graphql::Result<PolicyResult> {
        let app = state(ctx);
        let (outcome, _) =
            policy::execute_load(app.store.as_ref(), metadata(ctx)?, false, &name, &text).await.map_err(core_error)?;
        // Read-your-writes: `at { policy }` reads at the graph's position.
        app.graph
            .wait_for(outcome.last_position, std::time::Duration::from_millis(app.settings.min_position_wait_ms))
            .await;
        let policies = policy::load(app.store.as_ref()).await.map_err(core_error)?;
        Ok(PolicyResult {
            position: Position(outcome.last_position),
            policy: PolicyView { record: policies.in_force_at(outcome.last_position) },
        })
    }
}
