//! Approval policies over GraphQL (CH-4): the policy in force and those loaded, `whatIf` (assess
//! and decide a draft without recording anything), and `loadPolicy`.

use super::context::{Requires, caller, metadata, state};
use super::risk::ApprovalRequirement;
use super::risk::RiskAssessment;
use super::risk::requirement;
use super::scalars::{DateTime, Position};
use crate::server::errors::{Code, app_error, bad_input, coded, core_error, graph_error};
use async_graphql::{Context, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::change::decide::PolicyInput;
use cmdb_core::change::risk::{self};
use cmdb_core::change::{self as domain, ChangeRecord};
use cmdb_core::ci::{CiId, CiSnapshot};
use cmdb_core::policy::{self, PolicyRecord};
use cmdb_projections::facts::risk_facts;
use std::collections::BTreeMap;

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
    let caller = caller(ctx)?;
    if let Some(window) = &details.window
        && window.end <= window.start
    {
        return Err(bad_input("the window ends before it starts"));
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
        let now = app.clock.now();
        let settings = app.app.settings.facts;
        (risk_facts(&graph, None, &details, position, now, settings).map_err(graph_error)?, cis)
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
    let typed = PolicyInput::new(&record, Some(&assessment), &access, &cis, app.clock.now());
    // Nothing is recorded, so the input needs no canonical text, and the default policy reads
    // the typed input: the JSON value is built only when the caller asks for it.
    let output = policy::evaluate(&policy_record, &typed)
        .map_err(|e| coded(Code::PolicyFailed, format!("the policy in force failed on this input: {e}")))?;
    let input = if ctx.look_ahead().field("decision").field("input").exists() {
        typed.to_value()
    } else {
        serde_json::Value::Null // not selected: never seen
    };
    Ok(WhatIf {
        assessment: RiskAssessment {
            assessment,
            recorded: None,
            from: super::risk::AssessedFrom::Scope(std::sync::Arc::from(record.details.scope.cis.as_slice())),
        },
        decision: WhatIfDecision {
            policy_version: policy_record.version,
            policy_hash: policy_record.hash.to_hex(),
            auto_approve: output.auto_approve,
            deny: output.deny.clone(),
            approvals: output.approvals.iter().map(|r| requirement(r, Vec::new())).collect(),
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
    async fn load_policy(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {name, text}")] name: Option<String>,
        #[graphql(deprecation = "pass input: {name, text}")] text: Option<String>,
        input: Option<LoadPolicyInput>,
    ) -> async_graphql::Result<PolicyResult> {
        let any_loose = name.is_some() || text.is_some();
        let loose = name.zip(text).map(|(name, text)| LoadPolicyInput { name, text });
        let LoadPolicyInput { name, text } = super::inputs::input_or(input, loose, any_loose, "{name, text}")?;
        let app = state(ctx);
        let command = policy::LoadPolicy { name, text, local_operator: false };
        // Read-your-writes: `at { policy }` reads at the graph's position.
        let outcome = app.app.run(&policy::PolicyDecider, &command, metadata(ctx)?).await.map_err(app_error)?.outcome;
        let policies = policy::load(app.store.as_ref()).await.map_err(core_error)?;
        Ok(PolicyResult {
            position: Position(outcome.last_position),
            policy: PolicyView { record: policies.in_force_at(outcome.last_position) },
        })
    }
}

/// Approval policies at one position (CH-4).
pub struct PolicyAt {
    pub(super) position: u64,
}

#[Object]
impl PolicyAt {
    /// The approval policy in force here (CH-4); version 0 is the engine's default.
    async fn policy(&self, ctx: &Context<'_>) -> async_graphql::Result<super::policy::PolicyView> {
        super::policy::policy_at(ctx, self.position).await
    }

    /// Every policy loaded by here, the built-in default first.
    async fn policies(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::policy::PolicyView>> {
        super::policy::policies_at(ctx, self.position).await
    }

    /// Assesses a draft change against the graph here and lets the policy in force here decide,
    /// without recording anything (the caller is taken as its requester).
    async fn what_if(
        &self,
        ctx: &Context<'_>,
        input: super::changes::DraftChangeInput,
    ) -> async_graphql::Result<super::policy::WhatIf> {
        let (change_type, details) = super::changes::draft_details(ctx, input)?;
        super::policy::what_if(ctx, change_type, details, self.position).await
    }
}

/// `loadPolicy(input:)`.
#[derive(async_graphql::InputObject)]
pub struct LoadPolicyInput {
    name: String,
    text: String,
}
