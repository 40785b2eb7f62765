//! Discovery and configuration audit over GraphQL (issue 17, part 5): `audits`, `audit(id)`
//! with its findings (recomputed from the log at the audit's position and checked against the
//! recorded digest), `observations(ci)` inside `at(...)`, and `importDiscovery` (the same
//! import as `cmdb import`, the file in the request). Resolvers only translate: the rules are
//! in `cmdb_core::discovery`, reconciliation in `cmdb_projections::discovery`.

use std::io::Cursor;
use std::sync::Arc;

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::discovery::{AuditId, FindingCounts, SourceKind};
use cmdb_projections::discovery::{AuditInfo, EXTERNAL_ID, Finding, FindingKind, findings_digest, reconcile};

use super::cis::Ci;
use super::context::{Requires, app, list_limit, metadata, parse_id, state};
use super::scalars::{DateTime, Position};
use crate::app::discovery::{DiscoveryAppError, ImportRequest, Opener};
use crate::server::errors::{Code, app_error, bad_input, coded};

/// Largest file `importDiscovery` takes in the request, in bytes (larger files: `cmdb import`).
pub const MAX_IMPORT_CONTENT_BYTES: usize = 8 * 1024 * 1024;

/// A discovery source.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::discovery::SourceKind")]
pub enum DiscoverySource {
    Terraform,
    Kubernetes,
    Cyclonedx,
    Netbox,
}

/// What kind of finding.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_projections::discovery::FindingKind")]
pub enum AuditFindingKind {
    /// Observed, not in the CMDB.
    NotInCmdb,
    /// In the CMDB (from the source and scope), no longer observed.
    NotObserved,
    /// An attribute the source is authoritative for differs.
    AttributeDrift,
    /// A relationship observed but not recorded, or recorded but no longer observed.
    RelationshipDrift,
}

/// Findings counted by kind.
#[derive(SimpleObject, Clone)]
pub struct AuditCounts {
    not_in_cmdb: u64,
    not_observed: u64,
    attribute_drift: u64,
    relationship_drift: u64,
    /// Of all findings, those no change authorised.
    unauthorised: u64,
    total: u64,
}

impl From<&FindingCounts> for AuditCounts {
    fn from(c: &FindingCounts) -> Self {
        AuditCounts {
            not_in_cmdb: c.not_in_cmdb,
            not_observed: c.not_observed,
            attribute_drift: c.attribute_drift,
            relationship_drift: c.relationship_drift,
            unauthorised: c.unauthorised,
            total: c.total(),
        }
    }
}

/// One import of one file.
pub struct DiscoveryRun {
    id: cmdb_core::discovery::RunId,
    position: u64,
}

#[Object]
impl DiscoveryRun {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    async fn source(&self, ctx: &Context<'_>) -> Option<DiscoverySource> {
        with_run(ctx, self, |r| r.started.source.into())
    }

    /// What the run covers within its source.
    async fn scope(&self, ctx: &Context<'_>) -> Option<String> {
        with_run(ctx, self, |r| r.started.scope.clone())
    }

    /// The file's label.
    async fn file(&self, ctx: &Context<'_>) -> Option<String> {
        with_run(ctx, self, |r| r.started.file.clone())
    }

    /// When the source observed.
    async fn observed_at(&self, ctx: &Context<'_>) -> Option<DateTime> {
        with_run(ctx, self, |r| DateTime(r.started.observed_at))
    }

    /// Who ran it.
    async fn by(&self, ctx: &Context<'_>) -> Option<String> {
        with_run(ctx, self, |r| r.actor.clone())
    }

    /// Items recorded (null while unfinished).
    async fn items(&self, ctx: &Context<'_>) -> Option<u64> {
        with_run(ctx, self, |r| r.finished_by(self.position).map(|(_, _, f)| f.items)).flatten()
    }

    /// Relationships recorded (null while unfinished).
    async fn relationships(&self, ctx: &Context<'_>) -> Option<u64> {
        with_run(ctx, self, |r| r.finished_by(self.position).map(|(_, _, f)| f.relationships)).flatten()
    }

    /// Where it finished (null while unfinished).
    async fn finished_at(&self, ctx: &Context<'_>) -> Option<Position> {
        with_run(ctx, self, |r| r.finished_by(self.position).map(|(p, _, _)| Position(*p))).flatten()
    }

    /// Items the rules did not map, by source type.
    async fn unmapped(&self, ctx: &Context<'_>) -> Option<Json<std::collections::BTreeMap<String, u64>>> {
        with_run(ctx, self, |r| r.finished_by(self.position).map(|(_, _, f)| Json(f.unmapped.clone()))).flatten()
    }
}

fn with_run<T>(
    ctx: &Context<'_>,
    run: &DiscoveryRun,
    f: impl FnOnce(&cmdb_projections::discovery::RunInfo) -> T,
) -> Option<T> {
    let graph = state(ctx).graph.read();
    graph.discovery().run_at(run.id, run.position).map(f)
}

/// A configuration audit (CM-7): a run compared with the CMDB at a position.
pub struct Audit {
    info: AuditInfo,
}

#[Object]
impl Audit {
    async fn id(&self) -> ID {
        ID(self.info.id.to_string())
    }

    /// The run audited.
    async fn run(&self) -> DiscoveryRun {
        DiscoveryRun { id: self.info.recorded.run, position: self.info.position }
    }

    async fn source(&self) -> DiscoverySource {
        self.info.recorded.source.into()
    }

    async fn scope(&self) -> &str {
        &self.info.recorded.scope
    }

    /// The position of the CMDB the run was compared with.
    async fn compared_at(&self) -> Position {
        Position(self.info.recorded.position)
    }

    /// Where the audit was recorded, and when.
    async fn position(&self) -> Position {
        Position(self.info.position)
    }

    async fn recorded_at(&self) -> DateTime {
        DateTime(self.info.recorded_at)
    }

    /// Who recorded it.
    async fn by(&self) -> &str {
        &self.info.actor
    }

    /// The counts recorded.
    async fn counts(&self) -> AuditCounts {
        (&self.info.recorded.counts).into()
    }

    /// The digest of the findings recorded.
    async fn findings_digest(&self) -> String {
        self.info.recorded.findings_digest.to_hex()
    }

    /// Whether the findings recomputed from the log now have the recorded digest (they always
    /// should: the log does not change).
    async fn digest_matches(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let findings = self.findings_now(ctx)?;
        Ok(findings_digest(&findings) == self.info.recorded.findings_digest)
    }

    /// How many findings match `kinds` and `authorised` (to page through them with `offset`).
    async fn finding_count(
        &self,
        ctx: &Context<'_>,
        kinds: Option<Vec<AuditFindingKind>>,
        authorised: Option<bool>,
    ) -> async_graphql::Result<u64> {
        let kinds: Option<Vec<FindingKind>> = kinds.map(|k| k.into_iter().map(Into::into).collect());
        let findings = self.findings_now(ctx)?;
        Ok(findings.iter().filter(|f| matches(f, kinds.as_deref(), authorised)).count() as u64)
    }

    /// The findings, in canonical order; only those of `kinds`, and only authorised (true) or
    /// unauthorised (false) ones if given.
    async fn findings(
        &self,
        ctx: &Context<'_>,
        kinds: Option<Vec<AuditFindingKind>>,
        authorised: Option<bool>,
        first: Option<i32>,
        #[graphql(desc = "How many matching findings to skip (the canonical order never changes).")] offset: Option<
            i32,
        >,
    ) -> async_graphql::Result<Vec<AuditFinding>> {
        let limit = list_limit(first)?;
        let skip = usize::try_from(offset.unwrap_or(0)).map_err(|_| bad_input("offset must not be negative"))?;
        let kinds: Option<Vec<FindingKind>> = kinds.map(|k| k.into_iter().map(Into::into).collect());
        let findings = self.findings_now(ctx)?;
        Ok(findings
            .iter()
            .filter(|f| matches(f, kinds.as_deref(), authorised))
            .skip(skip)
            .take(limit)
            .map(|finding| AuditFinding { finding: finding.clone(), position: self.info.recorded.position })
            .collect())
    }
}

impl Audit {
    fn findings_now(&self, ctx: &Context<'_>) -> async_graphql::Result<Arc<Vec<Finding>>> {
        let graph = state(ctx).graph.read();
        let compared = self.info.recorded.position;
        let run = graph.discovery().run_at(self.info.recorded.run, compared).ok_or_else(|| {
            coded(Code::Internal, format!("the audit's run {} is not in the log", self.info.recorded.run))
        })?;
        Ok(app(ctx)
            .audit_findings
            .get_or(self.info.id, graph.redactions_applied(), || reconcile(&graph, run, compared)))
    }
}

fn matches(finding: &Finding, kinds: Option<&[FindingKind]>, authorised: Option<bool>) -> bool {
    kinds.is_none_or(|k| k.contains(&finding.kind)) && authorised.is_none_or(|a| a == finding.authorised_by.is_some())
}

/// One finding.
pub struct AuditFinding {
    finding: Finding,
    position: u64,
}

#[Object]
impl AuditFinding {
    async fn kind(&self) -> AuditFindingKind {
        self.finding.kind.into()
    }

    /// The item's identity (`<source>:<scope>/...`), as the CI's `external_id` holds it.
    async fn external_id(&self) -> &str {
        &self.finding.external_id
    }

    /// The CI, as it stood when audited (null: not in the CMDB).
    async fn ci(&self, ctx: &Context<'_>) -> Option<Ci> {
        let graph = state(ctx).graph.read();
        let id = self.finding.ci?;
        graph.ci_at(id, self.position).map(|ci| Ci::new(&graph, ci, self.position))
    }

    async fn class(&self) -> &str {
        self.finding.class.as_str()
    }

    async fn name(&self) -> &str {
        &self.finding.name
    }

    /// The attribute that drifted.
    async fn attribute(&self) -> Option<&str> {
        self.finding.attribute.as_deref()
    }

    /// What the CMDB records (for a relationship: true when recorded).
    async fn recorded(&self) -> Option<Json<&serde_json::Value>> {
        self.finding.recorded.as_ref().map(Json)
    }

    /// What the source observed (for a relationship: true when observed).
    async fn observed(&self) -> Option<Json<&serde_json::Value>> {
        self.finding.observed.as_ref().map(Json)
    }

    /// The drifted relationship's type.
    async fn relationship_type(&self) -> Option<&str> {
        self.finding.relationship.as_ref().map(|(t, _)| t.as_str())
    }

    /// The drifted relationship's other end (its identity).
    async fn relationship_target(&self) -> Option<&str> {
        self.finding.relationship.as_ref().map(|(_, other)| other.as_str())
    }

    /// Whether a change authorised it.
    async fn authorised(&self) -> bool {
        self.finding.authorised_by.is_some()
    }

    /// The change that authorised it (its number).
    async fn authorised_by(&self) -> Option<&str> {
        self.finding.authorised_by_label.as_deref()
    }
}

/// What one run observed of a CI.
#[derive(SimpleObject)]
pub struct DiscoveryObservation {
    run: DiscoveryRun,
    source: DiscoverySource,
    observed_at: DateTime,
    source_type: String,
    class: String,
    name: String,
    version: Option<String>,
    attributes: Json<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// Discovery as it stood at one position.
pub struct DiscoveryAt {
    /// The position.
    pub position: u64,
}

#[Object]
impl DiscoveryAt {
    /// Configuration audits recorded by this position, newest first.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn audits(
        &self,
        ctx: &Context<'_>,
        source: Option<DiscoverySource>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Audit>> {
        self.audits_list(ctx, source, first)
    }

    /// One audit, if recorded by this position.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn audit(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Audit>> {
        self.audit_by_id(ctx, &id)
    }

    /// The mapping, identification and authority rules of a source in force at this position.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn discovery_rules(&self, ctx: &Context<'_>, source: DiscoverySource) -> DiscoveryRules {
        let graph = state(ctx).graph.read();
        let (version, rules) = graph.discovery().rules_at(self.position);
        DiscoveryRules { source, version, rules: Json(rules.of(source.into())) }
    }

    /// What discovery runs finished by this position observed of a CI (by its `external_id`),
    /// oldest first.
    #[graphql(guard = "Requires(Operation::ReadConfiguration)")]
    async fn observations(
        &self,
        ctx: &Context<'_>,
        ci: ID,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<DiscoveryObservation>> {
        let limit = list_limit(first)?;
        let id = parse_id(&ci)?;
        let graph = state(ctx).graph.read();
        let Some(snapshot) = graph.ci_at(id, self.position) else { return Ok(Vec::new()) };
        let Some(external) = snapshot.attributes.get(EXTERNAL_ID).and_then(|v| v.as_str()) else {
            return Ok(Vec::new());
        };
        Ok(graph
            .discovery()
            .observations_of(external, self.position)
            .into_iter()
            .take(limit)
            .map(|(run, item)| DiscoveryObservation {
                run: DiscoveryRun { id: run.id, position: self.position },
                source: run.started.source.into(),
                observed_at: DateTime(run.started.observed_at),
                source_type: item.source_type.clone(),
                class: item.class.as_str().to_owned(),
                name: item.name.clone(),
                version: item.version.clone(),
                attributes: Json(item.attributes.clone()),
            })
            .collect())
    }
}

impl DiscoveryAt {
    /// The view at the graph's head.
    pub fn now(ctx: &Context<'_>) -> DiscoveryAt {
        DiscoveryAt { position: state(ctx).graph.read().applied() }
    }

    /// Audits, newest first.
    pub fn audits_list(
        &self,
        ctx: &Context<'_>,
        source: Option<DiscoverySource>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Audit>> {
        let limit = list_limit(first)?;
        let graph = state(ctx).graph.read();
        let wanted: Option<SourceKind> = source.map(Into::into);
        Ok(graph
            .discovery()
            .audits_at(self.position)
            .into_iter()
            .filter(|a| wanted.is_none_or(|s| a.recorded.source == s))
            .take(limit)
            .map(|info| Audit { info: info.clone() })
            .collect())
    }

    /// One audit.
    pub fn audit_by_id(&self, ctx: &Context<'_>, id: &ID) -> async_graphql::Result<Option<Audit>> {
        let id = AuditId::parse(id).map_err(|e| bad_input(e.to_string()))?;
        let graph = state(ctx).graph.read();
        Ok(graph.discovery().audit_at(id, self.position).map(|info| Audit { info: info.clone() }))
    }
}

/// The rules of one source in force at a position.
#[derive(SimpleObject)]
pub struct DiscoveryRules {
    source: DiscoverySource,
    /// The version of the rules stream (0: the defaults).
    version: u64,
    /// The rules: `types` (source type to class, name, identity, attributes), `relationships`
    /// (kind to relationship type) and `authoritative` (the attributes the source owns).
    rules: Json<cmdb_core::discovery::rules::SourceRules>,
}

/// New rules for a source.
#[derive(InputObject)]
pub struct SetDiscoveryRulesInput {
    pub source: DiscoverySource,
    /// The rules, in the shape `discoveryRules` answers.
    pub rules: Json<serde_json::Value>,
    /// Why they change.
    pub reason: String,
}

/// An import through the API.
#[derive(InputObject)]
pub struct ImportDiscoveryInput {
    pub source: DiscoverySource,
    /// The file's text (at most 8 MiB; larger files: `cmdb import`).
    pub content: String,
    /// The file's name, for people.
    pub file: Option<String>,
    /// What the file covers (default: the state's lineage, the SBOM's product, else "default").
    pub scope: Option<String>,
    /// Make the CMDB match it under standard changes from a discovery template.
    #[graphql(default)]
    pub apply: bool,
}

/// What an import did.
#[derive(SimpleObject)]
pub struct ImportResult {
    run: ID,
    scope: String,
    items: u64,
    relationships: u64,
    unmapped: Json<std::collections::BTreeMap<String, u64>>,
    dangling_relationships: u64,
    /// The audit of the run (read it with `audit(id:)`).
    audit: ID,
    counts: AuditCounts,
    /// The changes applying opened and completed.
    changes: Vec<ID>,
    /// What applying could not do, and why.
    skipped: Vec<String>,
    /// The audit after applying.
    audit_after: Option<ID>,
    counts_after: Option<AuditCounts>,
    position: Position,
}

/// Discovery's mutations.
#[derive(Default)]
pub struct DiscoveryMutation;

#[Object]
impl DiscoveryMutation {
    /// Replaces a source's mapping, identification and authority rules (admin). Runs started
    /// after use them; every run records the version it mapped with.
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn set_discovery_rules(
        &self,
        ctx: &Context<'_>,
        input: SetDiscoveryRulesInput,
    ) -> async_graphql::Result<DiscoveryRules> {
        let rules: cmdb_core::discovery::rules::SourceRules = serde_json::from_value(input.rules.0)
            .map_err(|e| crate::server::errors::bad_input_field("rules", format!("not discovery rules: {e}")))?;
        if input.reason.trim().is_empty() {
            return Err(crate::server::errors::bad_input_field("reason", "say why the rules change"));
        }
        let set =
            cmdb_core::discovery::RulesSet { source: input.source.into(), rules: rules.clone(), reason: input.reason };
        app(ctx)
            .run(
                &cmdb_core::discovery::DiscoveryDecider,
                &cmdb_core::discovery::DiscoveryCommand::SetRules(set),
                metadata(ctx)?,
            )
            .await
            .map_err(app_error)?;
        let version = {
            let graph = state(ctx).graph.read();
            graph.discovery().rules_at(graph.applied()).0
        };
        Ok(DiscoveryRules { source: input.source, version, rules: Json(rules) })
    }

    /// Imports a discovery source: records its observations and audits them; with `apply`,
    /// makes the CMDB match under standard changes. A file that cannot be read records nothing.
    #[graphql(guard = "Requires(Operation::EditConfiguration)")]
    async fn import_discovery(
        &self,
        ctx: &Context<'_>,
        input: ImportDiscoveryInput,
    ) -> async_graphql::Result<ImportResult> {
        if input.content.len() > MAX_IMPORT_CONTENT_BYTES {
            return Err(crate::server::errors::limit_exceeded(
                "max_import_content_bytes",
                input.content.len() as u64,
                MAX_IMPORT_CONTENT_BYTES as u64,
            ));
        }
        let content: Arc<Vec<u8>> = Arc::new(input.content.into_bytes());
        let open: Opener =
            Arc::new(move || Ok(Box::new(Cursor::new(content.as_ref().clone())) as Box<dyn std::io::BufRead + Send>));
        let request = ImportRequest {
            source: input.source.into(),
            open,
            file: input.file.unwrap_or_else(|| "request".into()),
            scope: input.scope,
            apply: input.apply,
        };
        let report = app(ctx).import(request, metadata(ctx)?).await.map_err(|e| match e {
            DiscoveryAppError::File(file) => coded(Code::BadUserInput, file.to_string()),
            DiscoveryAppError::App(app) => app_error(app),
        })?;
        let position = state(ctx).graph.read().applied();
        let applied = report.applied.unwrap_or_default();
        Ok(ImportResult {
            run: ID(report.run.to_string()),
            scope: report.scope,
            items: report.items,
            relationships: report.relationships,
            unmapped: Json(report.unmapped),
            dangling_relationships: report.dangling_relationships,
            audit: ID(report.audit.to_string()),
            counts: (&report.counts).into(),
            changes: applied.changes.iter().map(|c| ID(c.to_string())).collect(),
            skipped: applied.skipped,
            audit_after: applied.audit_after.as_ref().map(|(id, _)| ID(id.to_string())),
            counts_after: applied.audit_after.as_ref().map(|(_, c)| c.into()),
            position: Position(position),
        })
    }
}
