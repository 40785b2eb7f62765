//! Importing a discovery source, auditing it and applying it (issue 17, parts 3 and 4).
//!
//! An import reads the file twice: a first pass checks all of it (a file that fails anywhere
//! records nothing), a second maps each item with the rules in force and records the
//! observations as a run, in batches, through a bounded queue between the parsing thread and
//! the appends. The run is then reconciled with the graph at its finish and the audit recorded
//! (`discovery.audit_recorded`). Applying opens standard changes from a discovery template
//! (at most `MAX_SCOPE_ITEMS` CIs each), makes the CMDB match the observations under them
//! (CM-3 holds: every edit names an implementing change that covers it) and completes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::sync::Arc;

use cmdb_core::Metadata;
use cmdb_core::change::{ChangeAction, ChangeCommand, ChangeDetails, ChangeType, MAX_SCOPE_ITEMS};
use cmdb_core::ci::schema::registry::{AttributeDeclared, ClassDeclared, DeclaredAttribute, DeclaredType};
use cmdb_core::ci::schema::{SchemaCommand, SchemaDecider, attribute_spec};
use cmdb_core::ci::{CiCommand, Register, Update};
use cmdb_core::control::{PlannedCi, Scope};
use cmdb_core::discovery::rules::{DISCOVERED_CLASSES, RawItem, RawRelationship, SourceRules, Unmapped};
use cmdb_core::discovery::{
    AuditId, AuditRecorded, DiscoveryCommand, DiscoveryDecider, FindingCounts, MAX_OBSERVATIONS_PER_EVENT,
    ObservationDigest, Observed, ObservedItem, ObservedRelationship, RunFinished, RunId, RunStarted, SourceKind,
};
use cmdb_core::ids::{ChangeId, CiId, RelId, TemplateId};
use cmdb_core::model::{CiClass, Status};
use cmdb_projections::discovery::{EXTERNAL_ID, Finding, FindingKind, count, findings_digest, reconcile};

use super::{App, AppError};
use crate::import::{self, FileFacts, ImportError, Sink};

/// The note an import's discovery change is completed with.
const APPLIED_NOTE: &str = "applied by the import";

/// Batches of observations waiting between the parsing thread and the appends.
pub const IMPORT_QUEUE_BATCHES: usize = 8;
/// `discovery.observed` events per append.
pub const OBSERVED_EVENTS_PER_APPEND: usize = 8;
/// The scope of a file that names none, unless the caller gives one.
pub const DEFAULT_SCOPE: &str = "default";
/// The name of the discovery templates (a suffix tells their class sets apart).
pub const TEMPLATE_NAME_PREFIX: &str = "Discovery import";

/// Audits whose findings are kept between reads.
pub const AUDIT_FINDINGS_CACHED: usize = 4;

/// The findings of the audits read most recently: an audit's findings never change (the log
/// does not), so a page of them need not recompute them all.
pub struct FindingsCache(std::sync::Mutex<lru::LruCache<FindingsKey, Arc<Vec<Finding>>>>);

/// An audit and the graph's redaction count its findings were computed at.
type FindingsKey = (AuditId, u64);

impl Default for FindingsCache {
    fn default() -> Self {
        let bound = std::num::NonZeroUsize::new(AUDIT_FINDINGS_CACHED).unwrap_or(std::num::NonZeroUsize::MIN);
        FindingsCache(std::sync::Mutex::new(lru::LruCache::new(bound)))
    }
}

impl FindingsCache {
    /// The findings of `audit`, computed by `compute` if not kept. `redactions` is the graph's
    /// redaction count: findings from before a redaction (erased values in them) are not served.
    pub fn get_or(&self, audit: AuditId, redactions: u64, compute: impl FnOnce() -> Vec<Finding>) -> Arc<Vec<Finding>> {
        let key = (audit, redactions);
        if let Some(found) = self.0.lock().ok().and_then(|mut cache| cache.get(&key).cloned()) {
            return found;
        }
        let findings = Arc::new(compute());
        if let Ok(mut cache) = self.0.lock() {
            cache.put(key, findings.clone());
        }
        findings
    }
}

/// Opens the file again for each pass.
pub type Opener = Arc<dyn Fn() -> std::io::Result<Box<dyn BufRead + Send>> + Send + Sync>;

/// What to import.
pub struct ImportRequest {
    /// The source.
    pub source: SourceKind,
    /// The file, opened once per pass.
    pub open: Opener,
    /// The file's label (its name).
    pub file: String,
    /// The scope, if the caller names one (else the file's, else [`DEFAULT_SCOPE`]).
    pub scope: Option<String>,
    /// Whether to make the CMDB match what was observed.
    pub apply: bool,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryAppError {
    /// The file could not be read; nothing was recorded.
    #[error(transparent)]
    File(#[from] ImportError),
    /// Recording or applying failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<cmdb_core::Error> for DiscoveryAppError {
    fn from(error: cmdb_core::Error) -> Self {
        DiscoveryAppError::App(AppError::Core(error))
    }
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportReport {
    /// The run.
    pub run: RunId,
    /// Its scope.
    pub scope: String,
    /// Where the run finished.
    pub finished_at: u64,
    /// Items recorded.
    pub items: u64,
    /// Relationships recorded.
    pub relationships: u64,
    /// Items not mapped, by source type.
    pub unmapped: BTreeMap<String, u64>,
    /// Relationships naming an item the file does not hold.
    pub dangling_relationships: u64,
    /// Attribute values left out for their length.
    pub dropped_values: u64,
    /// The audit of the run.
    pub audit: AuditId,
    /// Its counts.
    pub counts: FindingCounts,
    /// Its findings.
    pub findings: Vec<Finding>,
    /// What applying did, if asked.
    pub applied: Option<ApplyReport>,
}

/// What applying did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// The changes opened and completed.
    pub changes: Vec<ChangeId>,
    /// CIs registered.
    pub registered: u64,
    /// CIs updated (existing ones adopted included).
    pub updated: u64,
    /// CIs withdrawn (no longer observed).
    pub withdrawn: u64,
    /// Relationships created.
    pub related: u64,
    /// Relationships removed.
    pub unrelated: u64,
    /// What could not be applied, and why.
    pub skipped: Vec<String>,
    /// The audit after applying (a second audit of the same run).
    pub audit_after: Option<(AuditId, FindingCounts)>,
}

/// Maps raw items as they are read and sends them in batches.
struct MappingSink {
    source: SourceKind,
    scope: String,
    rules: SourceRules,
    refs: HashMap<String, String>,
    names: HashMap<(CiClass, String), String>,
    raw_relationships: Vec<RawRelationship>,
    batch: Observed,
    unmapped: BTreeMap<String, u64>,
    dropped: u64,
    items: u64,
    sender: tokio::sync::mpsc::Sender<Observed>,
}

impl MappingSink {
    fn flush(&mut self) -> Result<(), ImportError> {
        if self.batch.items.is_empty() && self.batch.relationships.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Observed::of(Vec::new(), Vec::new()));
        self.sender
            .blocking_send(batch)
            .map_err(|_| ImportError::Invalid("the import stopped while the file was being read".into()))
    }

    fn full(&self) -> bool {
        self.batch.items.len() + self.batch.relationships.len() >= MAX_OBSERVATIONS_PER_EVENT
    }

    /// Resolves the relationships once every item is known.
    fn finish(mut self) -> Result<(BTreeMap<String, u64>, u64, u64), ImportError> {
        self.flush()?;
        let mut seen = BTreeSet::new();
        let mut dangling = 0;
        let raw = std::mem::take(&mut self.raw_relationships);
        for relationship in &raw {
            let (Some(from), Some(to)) = (self.refs.get(&relationship.from), self.refs.get(&relationship.to)) else {
                dangling += 1;
                continue;
            };
            let Some(mapped) = self.rules.map_relationship(relationship, from, to) else { continue };
            if seen.insert((mapped.rel_type, mapped.from.clone(), mapped.to.clone())) {
                self.batch.relationships.push(mapped);
                if self.full() {
                    self.flush()?;
                }
            }
        }
        self.flush()?;
        Ok((self.unmapped, self.dropped, dangling))
    }
}

impl Sink for MappingSink {
    fn item(&mut self, item: RawItem) -> Result<(), ImportError> {
        self.items += 1;
        if self.items > cmdb_core::discovery::MAX_ITEMS_PER_RUN {
            return Err(ImportError::TooManyItems { bound: cmdb_core::discovery::MAX_ITEMS_PER_RUN });
        }
        match self.rules.map(self.source, &self.scope, &item, &mut self.dropped) {
            Ok(mut observed) => {
                // Names are unique per class: a second identity under a taken name gets a
                // suffix from its identity (the same on every run).
                let key = (observed.class, cmdb_core::model::normalized_name(&observed.name));
                match self.names.get(&key) {
                    Some(holder) if *holder != observed.external_id => {
                        let suffix = &blake3::hash(observed.external_id.as_bytes()).to_hex()[..8];
                        observed.name = format!("{} ({suffix})", observed.name);
                    }
                    Some(_) => {}
                    None => {
                        self.names.insert(key, observed.external_id.clone());
                    }
                }
                if self.source == SourceKind::Terraform
                    && let Some(alias) = import::terraform::aliases(&item.local_ref)
                {
                    self.refs.entry(alias.to_owned()).or_insert_with(|| observed.external_id.clone());
                }
                self.refs.insert(item.local_ref, observed.external_id.clone());
                self.batch.items.push(observed);
                if self.full() {
                    self.flush()?;
                }
            }
            Err(Unmapped::NoRule | Unmapped::NoIdentity) => *self.unmapped.entry(item.source_type).or_default() += 1,
        }
        Ok(())
    }

    fn relationship(&mut self, relationship: RawRelationship) -> Result<(), ImportError> {
        if self.raw_relationships.len() as u64 >= cmdb_core::discovery::MAX_ITEMS_PER_RUN {
            return Err(ImportError::TooManyItems { bound: cmdb_core::discovery::MAX_ITEMS_PER_RUN });
        }
        self.raw_relationships.push(relationship);
        Ok(())
    }
}

/// The first pass: the whole file is read and checked; its own facts come back.
async fn check_file(source: SourceKind, open: &Opener) -> Result<FileFacts, ImportError> {
    let open = open.clone();
    tokio::task::spawn_blocking(move || {
        let input = open()?;
        import::read(source, input, &mut import::Counter::default())
    })
    .await
    .map_err(|e| ImportError::Invalid(format!("the reading thread failed: {e}")))?
}

impl App {
    /// Imports a file: records its observations as a run, audits the run, and applies it if
    /// asked. A file that cannot be read records nothing.
    pub async fn import(&self, request: ImportRequest, metadata: Metadata) -> Result<ImportReport, DiscoveryAppError> {
        let began = std::time::Instant::now();
        let facts = check_file(request.source, &request.open).await?;
        let checked_ms = began.elapsed().as_millis();
        let scope = request.scope.clone().or(facts.scope).unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
        let (rules_version, rules) = {
            let graph = self.graph.read();
            let (version, rules) = graph.discovery().rules_at(graph.applied());
            (version, rules.of(request.source))
        };
        let run = RunId(uuid::Uuid::now_v7());
        let started = RunStarted {
            source: request.source,
            scope: scope.clone(),
            file: request.file.clone(),
            rules_version,
            observed_at: facts.observed_at.unwrap_or_else(|| self.clock.now()),
        };
        self.discovery(&DiscoveryCommand::StartRun { run, started }, &metadata).await?;

        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Observed>(IMPORT_QUEUE_BATCHES);
        let sink = MappingSink {
            source: request.source,
            scope: scope.clone(),
            rules,
            refs: HashMap::new(),
            names: HashMap::new(),
            raw_relationships: Vec::new(),
            batch: Observed::of(Vec::new(), Vec::new()),
            unmapped: BTreeMap::new(),
            dropped: 0,
            items: 0,
            sender,
        };
        let (source, open) = (request.source, request.open.clone());
        let reader = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            let input = open()?;
            import::read(source, input, &mut sink)?;
            sink.finish()
        });
        let mut digest = ObservationDigest::default();
        let (mut items, mut relationships) = (0u64, 0u64);
        let mut pending = Vec::new();
        while let Some(batch) = receiver.recv().await {
            digest.add(&batch);
            items += batch.items.len() as u64;
            relationships += batch.relationships.len() as u64;
            pending.push(batch);
            if pending.len() == OBSERVED_EVENTS_PER_APPEND {
                let batches = std::mem::take(&mut pending);
                self.discovery(&DiscoveryCommand::Observe { run, batches }, &metadata).await?;
            }
        }
        let read = reader.await.map_err(|e| ImportError::Invalid(format!("the reading thread failed: {e}")))?;
        // The file passed the first pass: a failure now means it changed under us. The run
        // stays unfinished, and nothing reads an unfinished run.
        let (unmapped, dropped, dangling) = read?;
        if !pending.is_empty() {
            self.discovery(&DiscoveryCommand::Observe { run, batches: pending }, &metadata).await?;
        }
        let finished = RunFinished { items, relationships, unmapped: unmapped.clone(), digest: digest.finish() };
        let written = self.discovery(&DiscoveryCommand::FinishRun { run, finished }, &metadata).await?;
        let finished_at = written.outcome.last_position;
        let recorded_ms = began.elapsed().as_millis();
        self.wait_for_graph(finished_at).await?;
        let applied_ms = began.elapsed().as_millis();
        let (audit, counts, findings) = self.audit_run(run, &metadata).await?;
        tracing::info!(
            %run, items, relationships, checked_ms, recorded_ms, applied_ms, audited_ms = began.elapsed().as_millis(),
            "discovery run recorded and audited"
        );
        let mut report = ImportReport {
            run,
            scope,
            finished_at,
            items,
            relationships,
            unmapped,
            dangling_relationships: dangling,
            dropped_values: dropped,
            audit,
            counts,
            findings,
            applied: None,
        };
        if request.apply {
            let mut applied = self.apply_findings(request.source, run, &report.findings, &metadata).await?;
            if !applied.changes.is_empty() {
                let (audit, counts, _) = self.audit_run(run, &metadata).await?;
                applied.audit_after = Some((audit, counts));
            }
            report.applied = Some(applied);
        }
        Ok(report)
    }

    async fn discovery(
        &self,
        command: &DiscoveryCommand,
        metadata: &Metadata,
    ) -> Result<
        cmdb_core::decider::Executed<cmdb_core::discovery::DiscoveryKey, cmdb_core::discovery::DiscoveryEvent>,
        AppError,
    > {
        let context = self.context(metadata.clone());
        Ok(cmdb_core::decider::execute(self.store.as_ref(), &DiscoveryDecider, command, &context, None).await?)
    }

    /// Audits a finished run against the graph now and records the audit.
    pub async fn audit_run(
        &self,
        run: RunId,
        metadata: &Metadata,
    ) -> Result<(AuditId, FindingCounts, Vec<Finding>), AppError> {
        let (recorded, findings) = {
            let graph = self.graph.read();
            let position = graph.applied();
            let info = graph
                .discovery()
                .run_at(run, position)
                .filter(|r| r.finished_by(position).is_some())
                .ok_or(cmdb_core::Error::Discovery(cmdb_core::discovery::DiscoveryError::RunNotFinished(run)))?;
            let findings = reconcile(&graph, info, position);
            let recorded = AuditRecorded {
                run,
                source: info.started.source,
                scope: info.started.scope.clone(),
                position,
                counts: count(&findings),
                findings_digest: findings_digest(&findings),
            };
            (recorded, findings)
        };
        let audit = AuditId(uuid::Uuid::now_v7());
        let counts = recorded.counts.clone();
        let written = self.discovery(&DiscoveryCommand::RecordAudit { audit, recorded }, metadata).await?;
        self.wait_for_graph(written.outcome.last_position).await?;
        Ok((audit, counts, findings))
    }

    /// Makes the CMDB match the findings under standard changes from a discovery template.
    async fn apply_findings(
        &self,
        source: SourceKind,
        run: RunId,
        findings: &[Finding],
        metadata: &Metadata,
    ) -> Result<ApplyReport, AppError> {
        let mut report = ApplyReport::default();
        let plan = self.plan(source, findings);
        if plan.is_empty() {
            return Ok(report);
        }
        self.declare_discovered_schema(&plan, metadata).await?;
        let mut template = self.discovery_template(source, &plan, metadata).await?;
        // CIs first (registrations, updates, withdrawals), then relationships, whose sources
        // may be CIs registered by the first changes.
        for chunk in plan.ci_steps.chunks(MAX_SCOPE_ITEMS) {
            let scope = Scope {
                cis: chunk.iter().filter_map(|s| s.existing()).collect(),
                planned: chunk.iter().filter_map(|s| s.planned()).collect(),
            };
            let change = self.open_discovery_change(source, template, scope, chunk.len(), metadata).await?;
            for step in chunk {
                let outcome = self.edit_ci(&step.command(change), metadata.clone()).await;
                report.count(step, outcome);
            }
            self.transition(change, ChangeAction::Complete, Some(APPLIED_NOTE.into()), None, metadata.clone()).await?;
            report.changes.push(change);
        }
        // Relationships between CIs registered just now are only findings once both ends are
        // recorded: reconcile again.
        let relationships = if plan.ci_steps.is_empty() {
            plan.relationships.clone()
        } else {
            let graph = self.graph.read();
            let position = graph.applied();
            match graph.discovery().run_at(run, position) {
                Some(info) => reconcile(&graph, info, position)
                    .into_iter()
                    .filter(|f| f.kind == FindingKind::RelationshipDrift)
                    .collect(),
                None => Vec::new(),
            }
        };
        let rel_steps = self.relationship_steps(&relationships, &mut report);
        // Without CI steps the template above was chosen for these findings' classes already.
        if !rel_steps.is_empty() && !plan.ci_steps.is_empty() {
            let sources = Plan { source: Some(source), ci_steps: Vec::new(), relationships };
            template = self.discovery_template(source, &sources, metadata).await?;
        }
        for chunk in chunk_by_source(&rel_steps, MAX_SCOPE_ITEMS) {
            let sources: BTreeSet<CiId> = chunk.iter().map(|s| s.source).collect();
            let scope = Scope { cis: sources.into_iter().collect(), planned: Vec::new() };
            let change = self.open_discovery_change(source, template, scope, chunk.len(), metadata).await?;
            for step in chunk {
                let outcome = self.edit_ci(&step.command(change), metadata.clone()).await;
                match (outcome, step.remove) {
                    (Ok(_), None) => report.related += 1,
                    (Ok(_), Some(_)) => report.unrelated += 1,
                    (Err(e), _) => report.skipped.push(format!("relationship {}: {e}", step.label)),
                }
            }
            self.transition(change, ChangeAction::Complete, Some(APPLIED_NOTE.into()), None, metadata.clone()).await?;
            report.changes.push(change);
        }
        Ok(report)
    }

    /// What applying the findings takes.
    fn plan(&self, source: SourceKind, findings: &[Finding]) -> Plan {
        let graph = self.graph.read();
        let position = graph.applied();
        let mut plan = Plan::default();
        let mut drifted: BTreeMap<CiId, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        for finding in findings {
            match finding.kind {
                FindingKind::NotInCmdb => {
                    let Some(item) = observed_item(&graph, finding) else { continue };
                    match graph.ci_by_name(item.class, &item.name, position) {
                        // A CI of that class and name recorded without an identity is the
                        // item: adopt it (identification by name, the fallback rule).
                        Some(existing) if !existing.attributes.contains_key(EXTERNAL_ID) => {
                            let mut set = item.attributes.clone();
                            set.insert(EXTERNAL_ID.into(), serde_json::Value::String(item.external_id.clone()));
                            plan.ci_steps.push(CiStep::Update { ci: existing.id, set, version: item.version.clone() });
                        }
                        // The name is another identity's (another state, cluster or BOM): the
                        // item gets a suffix from its identity, the same on every run.
                        Some(_) => {
                            let mut item = item;
                            let suffix = &blake3::hash(item.external_id.as_bytes()).to_hex()[..8];
                            item.name = format!("{} ({suffix})", item.name);
                            plan.ci_steps.push(CiStep::Register(Box::new(item)));
                        }
                        None => plan.ci_steps.push(CiStep::Register(Box::new(item))),
                    }
                }
                FindingKind::AttributeDrift => {
                    if let (Some(ci), Some(attribute), Some(value)) =
                        (finding.ci, &finding.attribute, &finding.observed)
                    {
                        drifted.entry(ci).or_default().insert(attribute.clone(), value.clone());
                    }
                }
                FindingKind::NotObserved => {
                    if let Some(ci) = finding.ci {
                        plan.ci_steps.push(CiStep::Withdraw(ci));
                    }
                }
                FindingKind::RelationshipDrift => plan.relationships.push(finding.clone()),
            }
        }
        for (ci, set) in drifted {
            plan.ci_steps.push(CiStep::Update { ci, set, version: None });
        }
        plan.source = Some(source);
        plan
    }

    /// Custom classes and attributes the plan needs that the schema lacks.
    async fn declare_discovered_schema(&self, plan: &Plan, metadata: &Metadata) -> Result<(), AppError> {
        let mut commands = Vec::new();
        {
            let graph = self.graph.read();
            let schema = graph.schema();
            let mut wanted: BTreeMap<CiClass, BTreeSet<String>> = BTreeMap::new();
            for step in &plan.ci_steps {
                let (class, attributes): (CiClass, Vec<&String>) = match step {
                    CiStep::Register(item) => (item.class, item.attributes.keys().collect()),
                    CiStep::Update { ci, set, .. } => match graph.class_of(*ci) {
                        Some(class) => (class, set.keys().collect()),
                        None => continue,
                    },
                    CiStep::Withdraw(_) => continue,
                };
                let entry = wanted.entry(class).or_default();
                entry.extend(
                    attributes.into_iter().filter(|a| *a != EXTERNAL_ID && attribute_spec(class, a).is_none()).cloned(),
                );
            }
            for (class, attributes) in wanted {
                let text = |name: &String| DeclaredAttribute {
                    name: name.clone(),
                    attr_type: DeclaredType::Text,
                    required: false,
                    description: Some("observed by discovery".into()),
                };
                if !schema.knows(class) {
                    let Some((_, like, description)) = DISCOVERED_CLASSES.iter().find(|(n, _, _)| *n == class.as_str())
                    else {
                        continue; // a rule names a class nobody declared: the registration reports it
                    };
                    commands.push(SchemaCommand::DeclareClass(ClassDeclared {
                        name: class,
                        like: *like,
                        description: Some((*description).to_owned()),
                        attributes: attributes.iter().map(text).collect(),
                    }));
                    continue;
                }
                for attribute in attributes.iter().filter(|a| schema.attribute(class, a).is_none()) {
                    commands
                        .push(SchemaCommand::DeclareAttribute(AttributeDeclared { class, attribute: text(attribute) }));
                }
            }
        }
        for command in commands {
            self.run(&SchemaDecider, &command, metadata.clone()).await?;
        }
        Ok(())
    }

    /// A discovery template allowing every class the plan touches: an active one, else a new one.
    async fn discovery_template(
        &self,
        source: SourceKind,
        plan: &Plan,
        metadata: &Metadata,
    ) -> Result<TemplateId, AppError> {
        let classes: BTreeSet<CiClass> = {
            let graph = self.graph.read();
            let mut classes: BTreeSet<CiClass> = plan.ci_steps.iter().filter_map(|s| s.class(&graph)).collect();
            for finding in &plan.relationships {
                classes.insert(finding.class);
            }
            classes
        };
        let existing = {
            let graph = self.graph.read();
            graph
                .change_book()
                .templates_at(graph.applied())
                .into_iter()
                .filter(|t| t.retired.is_none() && t.template.name.starts_with(TEMPLATE_NAME_PREFIX))
                .find(|t| classes.iter().all(|c| t.template.allowed_classes.contains(c)))
                .map(|t| t.template.template_id)
        };
        if let Some(template) = existing {
            return Ok(template);
        }
        let mut allowed: BTreeSet<CiClass> = classes;
        // Every class the source's rules map to, so later imports reuse the template.
        let graph_rules = {
            let graph = self.graph.read();
            graph.discovery().rules_at(graph.applied()).1.of(source)
        };
        {
            // Those the schema knows now (a discovered class is declared when first applied).
            let graph = self.graph.read();
            allowed.extend(graph_rules.types.iter().map(|t| t.class).filter(|c| graph.schema().knows(*c)));
        }
        let allowed: Vec<CiClass> = allowed.into_iter().take(cmdb_core::change::MAX_TEMPLATE_CLASSES).collect();
        let names: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
        let suffix = &blake3::hash(names.join(",").as_bytes()).to_hex()[..8];
        let template = TemplateId(uuid::Uuid::now_v7());
        let command = ChangeCommand::CreateTemplate {
            template_id: template,
            name: format!("{TEMPLATE_NAME_PREFIX} {suffix}"),
            title: "Apply a discovery import".into(),
            description: "Makes the CMDB match what a discovery source observed: registers what was found, updates the attributes the source is authoritative for, withdraws what is no longer observed and records observed relationships.".into(),
            back_out_plan: "Run the import again from the previous file, or edit the CIs back by hand under a normal change; every edit is in the change's record.".into(),
            allowed_classes: allowed,
        };
        self.change(&command, metadata.clone()).await?;
        Ok(template)
    }

    /// Drafts, submits and starts a standard change from the template over `scope`.
    async fn open_discovery_change(
        &self,
        source: SourceKind,
        template: TemplateId,
        scope: Scope,
        steps: usize,
        metadata: &Metadata,
    ) -> Result<ChangeId, AppError> {
        let change_id = ChangeId(uuid::Uuid::now_v7());
        let details = ChangeDetails {
            title: format!("Apply a {source} discovery import ({steps} edits)"),
            description: Some(format!("Opened by `cmdb import {source} --apply` to record what the source observed.")),
            justification: None,
            back_out_plan: None,
            window: Some(cmdb_core::change::Window {
                start: self.clock.now(),
                end: self.clock.now().saturating_add_micros(3_600_000_000),
                time_zone: "UTC".into(),
            }),
            implementer: Some(metadata.actor.principal.to_string()),
            scope,
            links: Vec::new(),
        };
        let draft =
            ChangeCommand::Draft { change_id, change_type: ChangeType::Standard, template_id: Some(template), details };
        self.change(&draft, metadata.clone()).await?;
        self.transition(change_id, ChangeAction::Submit, None, None, metadata.clone()).await?;
        self.transition(change_id, ChangeAction::Start, None, None, metadata.clone()).await?;
        Ok(change_id)
    }

    /// The relationship edits the findings ask for, with the CIs resolved now.
    fn relationship_steps(&self, findings: &[Finding], report: &mut ApplyReport) -> Vec<RelStep> {
        let graph = self.graph.read();
        let position = graph.applied();
        // Every identity of one run shares its `<source>:<scope>/` prefix: one scan finds them.
        let mut by_identity: HashMap<String, CiId> = HashMap::new();
        let prefixes: BTreeSet<&str> =
            findings.iter().filter_map(|f| f.external_id.find('/').map(|end| &f.external_id[..=end])).collect();
        for prefix in prefixes {
            for (identity, ci) in cmdb_projections::discovery::recorded_items(&graph, position, prefix) {
                by_identity.insert(identity, ci.id);
            }
        }
        let mut steps = Vec::new();
        for finding in findings {
            let Some((rel_type, other)) = &finding.relationship else { continue };
            let label = format!("{rel_type} {} -> {other}", finding.external_id);
            let (Some(source), Some(target)) = (by_identity.get(&finding.external_id), by_identity.get(other)) else {
                report.skipped.push(format!("relationship {label}: an end is not recorded"));
                continue;
            };
            let remove = if finding.observed.is_none() {
                graph
                    .relationships_at(position, Some(*source), Some(&[*rel_type]))
                    .into_iter()
                    .find(|r| r.source == *source && r.target == *target)
                    .map(|r| r.id)
            } else {
                None
            };
            if finding.observed.is_none() && remove.is_none() {
                continue;
            }
            steps.push(RelStep { source: *source, target: *target, rel_type: *rel_type, remove, label });
        }
        steps
    }
}

fn observed_item(graph: &cmdb_projections::graph::TemporalGraph, finding: &Finding) -> Option<ObservedItem> {
    let observations = graph.discovery().observations_of(&finding.external_id, graph.applied());
    observations.last().map(|(_, item)| (*item).clone())
}

/// Splits relationship steps into chunks whose sources number at most `bound`.
fn chunk_by_source(steps: &[RelStep], bound: usize) -> Vec<&[RelStep]> {
    let mut sorted_chunks = Vec::new();
    let mut start = 0;
    let mut sources = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        if !sources.contains(&step.source) && sources.len() == bound {
            sorted_chunks.push(&steps[start..i]);
            start = i;
            sources.clear();
        }
        sources.insert(step.source);
    }
    if start < steps.len() {
        sorted_chunks.push(&steps[start..]);
    }
    sorted_chunks
}

#[derive(Default)]
struct Plan {
    source: Option<SourceKind>,
    ci_steps: Vec<CiStep>,
    relationships: Vec<Finding>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.ci_steps.is_empty() && self.relationships.is_empty()
    }
}

enum CiStep {
    Register(Box<ObservedItem>),
    Update { ci: CiId, set: BTreeMap<String, serde_json::Value>, version: Option<String> },
    Withdraw(CiId),
}

impl CiStep {
    fn existing(&self) -> Option<CiId> {
        match self {
            CiStep::Register(_) => None,
            CiStep::Update { ci, .. } | CiStep::Withdraw(ci) => Some(*ci),
        }
    }

    fn planned(&self) -> Option<PlannedCi> {
        match self {
            CiStep::Register(item) => Some(PlannedCi { class: item.class, name: item.name.clone() }),
            _ => None,
        }
    }

    fn class(&self, graph: &cmdb_projections::graph::TemporalGraph) -> Option<CiClass> {
        match self {
            CiStep::Register(item) => Some(item.class),
            CiStep::Update { ci, .. } | CiStep::Withdraw(ci) => graph.class_of(*ci),
        }
    }

    fn command(&self, change: ChangeId) -> CiCommand {
        match self {
            CiStep::Register(item) => {
                let mut attributes = item.attributes.clone();
                attributes.insert(EXTERNAL_ID.into(), serde_json::Value::String(item.external_id.clone()));
                CiCommand::Register(Register {
                    ci_id: CiId(uuid::Uuid::now_v7()),
                    class: item.class,
                    name: item.name.clone(),
                    status: Status::Live,
                    environment: None,
                    owner: None,
                    location: None,
                    version: item.version.clone(),
                    attributes,
                    authorized_by: Some(change),
                })
            }
            CiStep::Update { ci, set, version } => CiCommand::Update(
                *ci,
                Update {
                    set_attributes: set.clone(),
                    version: version.clone(),
                    authorized_by: Some(change),
                    ..Update::default()
                },
            ),
            CiStep::Withdraw(ci) => CiCommand::Withdraw {
                ci_id: *ci,
                reason: Some("no longer observed by its discovery source".into()),
                authorized_by: Some(change),
            },
        }
    }
}

struct RelStep {
    source: CiId,
    target: CiId,
    rel_type: cmdb_core::model::RelType,
    remove: Option<RelId>,
    label: String,
}

impl RelStep {
    fn command(&self, change: ChangeId) -> CiCommand {
        match self.remove {
            Some(rel_id) => CiCommand::Unrelate {
                rel_id,
                reason: Some("no longer observed by its discovery source".into()),
                authorized_by: Some(change),
            },
            None => CiCommand::Relate {
                rel_id: RelId(uuid::Uuid::now_v7()),
                rel_type: self.rel_type,
                source: self.source,
                target: self.target,
                authorized_by: Some(change),
            },
        }
    }
}

impl ApplyReport {
    fn count(&mut self, step: &CiStep, outcome: Result<super::Written, AppError>) {
        match (step, outcome) {
            (CiStep::Register(_), Ok(_)) => self.registered += 1,
            (CiStep::Update { .. }, Ok(_)) => self.updated += 1,
            (CiStep::Withdraw(_), Ok(_)) => self.withdrawn += 1,
            (CiStep::Register(item), Err(e)) => self.skipped.push(format!("{} {:?}: {e}", item.class, item.name)),
            (CiStep::Update { ci, .. } | CiStep::Withdraw(ci), Err(e)) => self.skipped.push(format!("CI {ci}: {e}")),
        }
    }
}

/// Relationship identities observed in a run, for callers that list them.
pub fn relationship_label(relationship: &ObservedRelationship) -> String {
    format!("{} {} -> {}", relationship.rel_type, relationship.from, relationship.to)
}
