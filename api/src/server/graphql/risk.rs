//! Risk assessments and approval-policy decisions as a change shows them (CH-2, CH-4): score,
//! factors, services reached, required approvals and their replay.

use std::sync::{Arc, OnceLock};

use super::access::Role;
use super::cis::Ci;
use super::context::state;
use super::scalars::{DateTime, Position};
use crate::server::errors::{core_error, graph_error};
use async_graphql::{Context, Enum, Object, SimpleObject};
use cmdb_core::change::risk::{self, Assessment};
use cmdb_core::change::{self as domain, ChangeRecord};
use cmdb_core::policy::{self, PolicyDecision};

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
    /// Its place among the assessment's listed services, in `explained`.
    index: usize,
    explained: Arc<Explained>,
}

/// The CIs an assessment walked from: what its services' severity paths start at.
#[derive(Clone, Debug)]
pub(super) enum AssessedFrom {
    /// A what-if: the scope asked about.
    Scope(Arc<[cmdb_core::ci::CiId]>),
    /// A recorded assessment: the change's scope as it stood when the assessment was recorded.
    Change { id: cmdb_core::ci::ChangeId, recorded: u64 },
}

/// The severity paths of an assessment's listed services, worked out once (one fixpoint over
/// the whole failure) when the first is asked for, and shared by them all.
pub(super) struct Explained {
    from: AssessedFrom,
    position: u64,
    services: Vec<cmdb_core::ci::CiId>,
    chains: OnceLock<Result<ServiceChains, cmdb_projections::graph::GraphError>>,
}

type ServiceChains = Vec<cmdb_projections::graph::SeverityChain>;

impl Explained {
    fn severity_path(
        &self,
        ctx: &Context<'_>,
        index: usize,
    ) -> async_graphql::Result<Option<Vec<super::cis::PathStep>>> {
        let graph = state(ctx).graph.read();
        let chains = self.chains.get_or_init(|| {
            let roots: Arc<[cmdb_core::ci::CiId]> = match &self.from {
                AssessedFrom::Scope(cis) => cis.clone(),
                AssessedFrom::Change { id, recorded } => graph
                    .change_book()
                    .change_at(*id, *recorded)
                    .map_or_else(|| Arc::from([]), |record| Arc::from(record.details.scope.cis.as_slice())),
            };
            graph.severity_chains(&roots, &self.services, self.position)
        });
        let chain = match chains {
            Ok(chains) => chains.get(index).cloned().unwrap_or(Ok(None)),
            Err(error) => Err(error.clone()),
        };
        let steps = chain.map_err(graph_error)?;
        Ok(steps.map(|steps| steps.into_iter().map(|s| super::cis::PathStep::new(&graph, s, self.position)).collect()))
    }
}

/// A reached service beyond the ones an assessment describes in full.
pub struct ServiceBriefView {
    brief: risk::ServiceBrief,
    position: u64,
}

#[Object(name = "ServiceBrief")]
impl ServiceBriefView {
    async fn id(&self) -> async_graphql::ID {
        async_graphql::ID(self.brief.id.to_string())
    }
    async fn tier(&self) -> Option<i32> {
        self.brief.tier.map(i32::from)
    }
    /// Hops from the nearest CI in scope.
    async fn depth(&self) -> u32 {
        self.brief.depth
    }
    /// How badly the change's failure reaches it.
    async fn severity(&self) -> super::cis::Severity {
        self.brief.severity.into()
    }
    /// The service CI as it stood when the facts were computed.
    async fn ci(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        graph.ci_at(self.brief.id, self.position).map(|ci| Ci::new(&graph, ci, self.position))
    }
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
    /// How badly the change's failure reaches it (DOWN in assessments of formula 1).
    async fn severity(&self) -> super::cis::Severity {
        self.fact.severity.into()
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
    /// How the change's failure reaches the service with its severity: the chain of
    /// relationships from a CI in scope, worked out again on the graph at the assessment's
    /// position with the propagation rules of today (see `ImpactedCi.severityPath`; empty when
    /// the scope names the service). Null when those rules do not reach the service from that
    /// scope: an assessment of an earlier formula, made under other rules.
    async fn severity_path(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<super::cis::PathStep>>> {
        self.explained.severity_path(ctx, self.index)
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
    pub(super) assessment: Assessment,
    pub(super) recorded: Option<(String, domain::AssessmentTrigger, domain::At)>,
    pub(super) from: AssessedFrom,
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
        let position = self.assessment.facts.position;
        let explained = Arc::new(Explained {
            from: self.from.clone(),
            position,
            services: self.assessment.facts.services.iter().map(|s| s.id).collect(),
            chains: OnceLock::new(),
        });
        self.assessment
            .facts
            .services
            .iter()
            .enumerate()
            .map(|(index, fact)| ServiceReached {
                in_hours: self.assessment.window_in_service_hours.contains(&fact.id),
                fact: fact.clone(),
                position,
                index,
                explained: explained.clone(),
            })
            .collect()
    }
    /// How many reached services `services` leaves out (each is in `otherServices`).
    async fn services_not_listed(&self) -> u32 {
        self.assessment.facts.services_not_listed
    }
    /// Every reached service beyond `services`, briefly: with `services`, every business
    /// service the change reaches (empty in assessments made before issue 15). In the order of
    /// `services` (down first, most critical, nearest) with ties by id rather than name.
    async fn other_services(&self) -> Vec<ServiceBriefView> {
        let position = self.assessment.facts.position;
        self.assessment
            .facts
            .other_services
            .iter()
            .map(|brief| ServiceBriefView { brief: brief.clone(), position })
            .collect()
    }
    /// How many reached services the change takes down.
    async fn services_down(&self) -> usize {
        self.assessment.facts.services_with(cmdb_core::model::Severity::Down)
    }
    /// How many reached services the change leaves degraded.
    async fn services_degraded(&self) -> usize {
        self.assessment.facts.services_with(cmdb_core::model::Severity::Degraded)
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
pub struct DecisionView {
    decision: PolicyDecision,
    status: Option<Vec<domain::RequirementStatus>>,
}

pub(super) fn requirement(r: &policy::ApprovalRequirement, approved_by: Vec<String>) -> ApprovalRequirement {
    ApprovalRequirement {
        role: r.role.map(Into::into),
        principals: r.principals.clone(),
        count: r.count,
        reason: r.reason.clone(),
        met: approved_by.len() >= r.count as usize,
        approved_by,
    }
}

#[Object(name = "Decision")]
impl DecisionView {
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
pub fn assessment_of(change: cmdb_core::ci::ChangeId, entry: &domain::AssessmentEntry) -> RiskAssessment {
    RiskAssessment {
        assessment: entry.assessment.clone(),
        recorded: Some((entry.by.clone(), entry.trigger, entry.at)),
        from: AssessedFrom::Change { id: change, recorded: entry.at.position },
    }
}

pub fn decision_of(record: &ChangeRecord) -> Option<DecisionView> {
    record.assessment().map(|entry| decision_for(record, entry))
}

/// One of the change's decisions, with the approvals on record counted against it.
pub fn decision_for(record: &ChangeRecord, entry: &domain::AssessmentEntry) -> DecisionView {
    DecisionView { decision: entry.decision.clone(), status: Some(record.status_for(&entry.decision.output)) }
}
