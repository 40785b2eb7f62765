//! Discovery and configuration audit (CM-1, CM-2, CM-3, CM-5, CM-7, CM-8; issue 17).
//!
//! An import never edits CIs. It records what a source (Terraform state, Kubernetes, CycloneDX,
//! NetBox) says exists: a *run* stream `discovery-run-<id>` holding `discovery.run_started`,
//! batches of `discovery.observed` (items and relationships, already mapped by the rules in
//! force) and `discovery.run_finished` with their digest. A run without its finish is
//! incomplete and nothing reads it as evidence.
//!
//! Mapping, identification and authority rules ([`rules`]) are events in the one
//! `discovery-rules` stream, versioned like approval policies; defaults ship for the four
//! sources. An audit (`discovery-audit-<id>`, `discovery.audit_recorded`) names a finished run,
//! the position it compared against, its findings' counts and their digest: the findings are
//! recomputed from the log (which never changes) and checked against the digest, so an audit
//! at a past moment reads back exactly (as baselines do).

pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decider::{CommandContext, Decider, Decision, Depth, DomainEvent, ReadSet, StreamKey};
use crate::event::{EventRecord, FoldRecord, Metadata, NewEvent, StreamId};
use crate::hash::Hash;
use crate::model::{CiClass, RelType};
use crate::time::Timestamp;

pub use rules::{RelationshipRule, Rules, RulesSet, TypeRule};

/// Most items and relationships one run may record (a bound on every loop over a run).
pub const MAX_ITEMS_PER_RUN: u64 = 2_000_000;
/// Most items plus relationships in one `discovery.observed` event (keeps it far below the
/// store's event bound).
pub const MAX_OBSERVATIONS_PER_EVENT: usize = 250;
/// Longest identity (`external_id`) of an observed item, in bytes.
pub const MAX_EXTERNAL_ID_BYTES: usize = 1024;
/// Longest scope label (a state's lineage, a cluster's name), in bytes.
pub const MAX_SCOPE_BYTES: usize = 128;
/// Longest file label recorded with a run, in bytes.
pub const MAX_FILE_LABEL_BYTES: usize = 512;

/// The type of `discovery.run_started`.
pub const RUN_STARTED: &str = "discovery.run_started";
/// The type of `discovery.observed`.
pub const OBSERVED: &str = "discovery.observed";
/// The type of `discovery.run_finished`.
pub const RUN_FINISHED: &str = "discovery.run_finished";
/// The type of `discovery.audit_recorded`.
pub const AUDIT_RECORDED: &str = "discovery.audit_recorded";
/// The type of `discovery.rules_set`.
pub const RULES_SET: &str = "discovery.rules_set";
/// The stream of every rules version.
pub const RULES_STREAM: &str = "discovery-rules";

/// Where observations come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Terraform state, format 4.
    Terraform,
    /// Kubernetes objects: manifests or `kubectl get -o json` lists.
    Kubernetes,
    /// A CycloneDX 1.4 to 1.6 JSON SBOM.
    Cyclonedx,
    /// A NetBox export (Django `dumpdata` JSON).
    Netbox,
}

impl SourceKind {
    /// Every source.
    pub const ALL: &'static [SourceKind] =
        &[SourceKind::Terraform, SourceKind::Kubernetes, SourceKind::Cyclonedx, SourceKind::Netbox];

    /// Its name in commands and events.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Terraform => "terraform",
            SourceKind::Kubernetes => "kubernetes",
            SourceKind::Cyclonedx => "cyclonedx",
            SourceKind::Netbox => "netbox",
        }
    }

    /// The source of a name.
    pub fn parse(name: &str) -> Result<SourceKind, DiscoveryError> {
        SourceKind::ALL
            .iter()
            .copied()
            .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| DiscoveryError::UnknownSource(name.to_owned()))
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// The stream it names.
            pub fn stream(self) -> StreamId {
                StreamId::new(format!(concat!($prefix, "{}"), self.0)).expect("a uuid makes a valid stream id")
            }

            /// Parses its text form.
            pub fn parse(text: &str) -> Result<$name, DiscoveryError> {
                uuid::Uuid::parse_str(text.trim()).map($name).map_err(|_| DiscoveryError::InvalidId(text.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// One import of one file.
    RunId,
    "discovery-run-"
);
uuid_id!(
    /// One configuration audit.
    AuditId,
    "discovery-audit-"
);

/// An item a source says exists, mapped by the rules in force when the run started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedItem {
    /// Its identity (`<source>:<scope>/<identifying values>`), kept on the CI as `external_id`.
    pub external_id: String,
    /// The source's type of it (`aws_instance`, `Deployment`, `library`, `dcim.device`).
    pub source_type: String,
    /// The class it maps to.
    pub class: CiClass,
    /// The name its CI gets.
    pub name: String,
    /// The version label, where the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The mapped attributes (CI attribute name to value).
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

/// A relationship a source says exists, between two observed items of the same run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObservedRelationship {
    /// The source's kind of it (`depends_on`, `selects`, `cable`).
    pub kind: String,
    /// The relationship type it maps to.
    pub rel_type: RelType,
    /// The item it goes from (its `external_id`).
    pub from: String,
    /// The item it goes to.
    pub to: String,
}

/// A run began.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The source.
    pub source: SourceKind,
    /// What the run covers within the source (a state's lineage, a cluster, a BOM, a NetBox
    /// instance): an item of this scope that is no longer observed is reported missing.
    pub scope: String,
    /// The file's label (its name), for people.
    pub file: String,
    /// The version of the rules stream the items were mapped with (0: the defaults).
    pub rules_version: u64,
    /// When the source says it observed (else when the run started).
    pub observed_at: Timestamp,
}

/// A batch of observations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Items.
    #[serde(default)]
    pub items: Vec<ObservedItem>,
    /// Relationships.
    #[serde(default)]
    pub relationships: Vec<ObservedRelationship>,
    /// Items of the run up to and including this batch (set by the decider: the newest
    /// event of a run's stream is all a decision reads).
    #[serde(default)]
    pub items_total: u64,
    /// Relationships likewise.
    #[serde(default)]
    pub relationships_total: u64,
}

impl Observed {
    /// A batch of these observations.
    pub fn of(items: Vec<ObservedItem>, relationships: Vec<ObservedRelationship>) -> Observed {
        Observed { items, relationships, items_total: 0, relationships_total: 0 }
    }
}

/// A run ended: every observation is in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunFinished {
    /// How many items it recorded.
    pub items: u64,
    /// How many relationships it recorded.
    pub relationships: u64,
    /// Items the rules did not map (no rule for their type), counted by source type.
    #[serde(default)]
    pub unmapped: BTreeMap<String, u64>,
    /// The digest of the observations ([`observations_digest`]).
    pub digest: Hash,
}

/// How many findings of each kind an audit had.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingCounts {
    /// Observed, not in the CMDB.
    pub not_in_cmdb: u64,
    /// In the CMDB (from this source and scope), no longer observed.
    pub not_observed: u64,
    /// An authoritative attribute differs.
    pub attribute_drift: u64,
    /// A relationship observed but not recorded, or recorded but no longer observed.
    pub relationship_drift: u64,
    /// Of all these, how many no change authorised.
    pub unauthorised: u64,
}

impl FindingCounts {
    /// Every finding.
    pub fn total(&self) -> u64 {
        self.not_in_cmdb + self.not_observed + self.attribute_drift + self.relationship_drift
    }
}

/// An audit was recorded: the run compared with the graph at `position` (CM-7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecorded {
    /// The run audited.
    pub run: RunId,
    /// The source of the run.
    pub source: SourceKind,
    /// The run's scope.
    pub scope: String,
    /// The graph position compared against (the run's finish).
    pub position: u64,
    /// The findings' counts.
    pub counts: FindingCounts,
    /// The digest of the findings, in their canonical order.
    pub findings_digest: Hash,
}

/// Why a discovery command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum DiscoveryError {
    #[error("{0:?} is not a discovery source; the sources are terraform, kubernetes, cyclonedx and netbox")]
    UnknownSource(String),
    #[error("{0:?} is not an id (a UUID)")]
    InvalidId(String),
    #[error("the run {0} already exists")]
    RunExists(RunId),
    #[error("no run {0}")]
    UnknownRun(RunId),
    #[error("the run {0} is finished; it takes no more observations")]
    RunFinished(RunId),
    #[error("the run {0} is not finished")]
    RunNotFinished(RunId),
    #[error("the run would hold {count} observations; the bound is {MAX_ITEMS_PER_RUN} (max_items_per_run)")]
    RunTooLarge { count: u64 },
    #[error("a batch of {count} observations is larger than {MAX_OBSERVATIONS_PER_EVENT} (max_observations_per_event)")]
    BatchTooLarge { count: usize },
    #[error("the run recorded {recorded} {what} but its finish says {claimed}")]
    CountMismatch { what: &'static str, recorded: u64, claimed: u64 },
    #[error("the audit {0} already exists")]
    AuditExists(AuditId),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("discovery event at position {position} cannot be read: {detail}")]
    Undecodable { position: u64, detail: String },
}

impl DiscoveryError {
    /// The input field a refusal is about, if one.
    pub fn field(&self) -> Option<&str> {
        match self {
            DiscoveryError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> DiscoveryError {
    DiscoveryError::Invalid { field: field.into(), detail: detail.into() }
}

/// The digest of a run's observations: blake3 over each item's and relationship's canonical
/// JSON, in the order recorded.
#[derive(Default)]
pub struct ObservationDigest(blake3::Hasher);

impl ObservationDigest {
    /// Adds a batch.
    pub fn add(&mut self, batch: &Observed) {
        for item in &batch.items {
            self.0.update(b"i");
            self.0.update(&serde_json::to_vec(item).unwrap_or_default());
        }
        for rel in &batch.relationships {
            self.0.update(b"r");
            self.0.update(&serde_json::to_vec(rel).unwrap_or_default());
        }
    }

    /// The digest.
    pub fn finish(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

/// A discovery event.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryEvent {
    /// A run began.
    RunStarted(RunStarted),
    /// Observations.
    Observed(Observed),
    /// A run ended.
    RunFinished(RunFinished),
    /// An audit.
    AuditRecorded(AuditRecorded),
    /// New rules for a source.
    RulesSet(RulesSet),
}

impl DiscoveryEvent {
    /// Whether an event type is one of discovery's.
    pub fn is_discovery_event(event_type: &str) -> bool {
        matches!(event_type, RUN_STARTED | OBSERVED | RUN_FINISHED | AUDIT_RECORDED | RULES_SET)
    }

    /// The event a record holds.
    pub fn from_record(record: &FoldRecord) -> Result<DiscoveryEvent, DiscoveryError> {
        let undecodable =
            |e: serde_json::Error| DiscoveryError::Undecodable { position: record.position, detail: e.to_string() };
        Ok(match record.event_type.as_str() {
            RUN_STARTED => DiscoveryEvent::RunStarted(record.data_as().map_err(undecodable)?),
            OBSERVED => DiscoveryEvent::Observed(record.data_as().map_err(undecodable)?),
            RUN_FINISHED => DiscoveryEvent::RunFinished(record.data_as().map_err(undecodable)?),
            AUDIT_RECORDED => DiscoveryEvent::AuditRecorded(record.data_as().map_err(undecodable)?),
            RULES_SET => DiscoveryEvent::RulesSet(record.data_as().map_err(undecodable)?),
            other => {
                return Err(DiscoveryError::Undecodable {
                    position: record.position,
                    detail: format!("{other} is not a discovery event"),
                });
            }
        })
    }
}

impl DomainEvent for DiscoveryEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let (event_type, data) = match self {
            DiscoveryEvent::RunStarted(e) => (RUN_STARTED, serde_json::to_vec(e)),
            DiscoveryEvent::Observed(e) => (OBSERVED, serde_json::to_vec(e)),
            DiscoveryEvent::RunFinished(e) => (RUN_FINISHED, serde_json::to_vec(e)),
            DiscoveryEvent::AuditRecorded(e) => (AUDIT_RECORDED, serde_json::to_vec(e)),
            DiscoveryEvent::RulesSet(e) => (RULES_SET, serde_json::to_vec(e)),
        };
        // Serialising these plain structs cannot fail.
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }
}

/// What a discovery decision reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiscoveryKey {
    /// A run's stream.
    Run(RunId),
    /// An audit's stream.
    Audit(AuditId),
    /// The rules stream.
    Rules,
}

/// The fold of a run's stream: its newest event only (a run's stream grows with every batch;
/// each batch carries the run's totals so far).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunState {
    /// Whether it started.
    pub started: bool,
    /// Items recorded so far.
    pub items: u64,
    /// Relationships recorded so far.
    pub relationships: u64,
    /// Whether it finished.
    pub finished: bool,
}

/// The fold a key reads.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryState {
    /// A run.
    Run(Box<RunState>),
    /// Whether the audit exists.
    Audit(bool),
    /// The rules in force, with the stream's version.
    Rules(Box<(u64, Rules)>),
}

impl StreamKey for DiscoveryKey {
    type State = DiscoveryState;

    fn streams(&self) -> Vec<StreamId> {
        vec![match self {
            DiscoveryKey::Run(run) => run.stream(),
            DiscoveryKey::Audit(audit) => audit.stream(),
            DiscoveryKey::Rules => StreamId::new(RULES_STREAM).expect("valid stream id"),
        }]
    }

    fn depth(&self) -> Depth {
        match self {
            DiscoveryKey::Run(_) => Depth::Newest,
            DiscoveryKey::Audit(_) | DiscoveryKey::Rules => Depth::Whole,
        }
    }

    fn initial(&self) -> DiscoveryState {
        match self {
            DiscoveryKey::Run(_) => DiscoveryState::Run(Box::default()),
            DiscoveryKey::Audit(_) => DiscoveryState::Audit(false),
            DiscoveryKey::Rules => DiscoveryState::Rules(Box::new((0, Rules::defaults()))),
        }
    }

    fn evolve(&self, state: &mut DiscoveryState, record: &EventRecord) -> Result<(), crate::Error> {
        let event = DiscoveryEvent::from_record(record)?;
        match (state, event) {
            (DiscoveryState::Run(run), DiscoveryEvent::RunStarted(_)) => run.started = true,
            (DiscoveryState::Run(run), DiscoveryEvent::Observed(batch)) => {
                run.started = true;
                run.items = batch.items_total;
                run.relationships = batch.relationships_total;
            }
            (DiscoveryState::Run(run), DiscoveryEvent::RunFinished(finished)) => {
                run.started = true;
                run.finished = true;
                run.items = finished.items;
                run.relationships = finished.relationships;
            }
            (DiscoveryState::Audit(exists), DiscoveryEvent::AuditRecorded(_)) => *exists = true,
            (DiscoveryState::Rules(rules), DiscoveryEvent::RulesSet(set)) => {
                rules.1.set(set);
                rules.0 = record.stream_version + 1;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A discovery command.
#[derive(Clone, Debug, PartialEq)]
pub enum DiscoveryCommand {
    /// Begin a run.
    StartRun {
        /// The run.
        run: RunId,
        /// What it is.
        started: RunStarted,
    },
    /// Record observations of a run (at most [`MAX_OBSERVATIONS_PER_EVENT`] per batch).
    Observe {
        /// The run.
        run: RunId,
        /// The batches.
        batches: Vec<Observed>,
    },
    /// End a run: the counts and digest must match what was recorded.
    FinishRun {
        /// The run.
        run: RunId,
        /// What it says it recorded.
        finished: RunFinished,
    },
    /// Record an audit of a finished run.
    RecordAudit {
        /// The audit.
        audit: AuditId,
        /// What it found.
        recorded: AuditRecorded,
    },
    /// Replace the rules of one source (admin).
    SetRules(RulesSet),
}

/// Decides discovery commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscoveryDecider;

impl Decider for DiscoveryDecider {
    type Command = DiscoveryCommand;
    type Key = DiscoveryKey;
    type Event = DiscoveryEvent;
    type Error = DiscoveryError;
    const NAME: &'static str = "discovery";

    fn reads(&self, command: &DiscoveryCommand, _read: &ReadSet<DiscoveryKey>) -> Vec<DiscoveryKey> {
        match command {
            DiscoveryCommand::StartRun { run, .. } => vec![DiscoveryKey::Run(*run), DiscoveryKey::Rules],
            DiscoveryCommand::Observe { run, .. } | DiscoveryCommand::FinishRun { run, .. } => {
                vec![DiscoveryKey::Run(*run)]
            }
            DiscoveryCommand::RecordAudit { audit, recorded } => {
                vec![DiscoveryKey::Audit(*audit), DiscoveryKey::Run(recorded.run)]
            }
            DiscoveryCommand::SetRules(_) => vec![DiscoveryKey::Rules],
        }
    }

    fn decide(
        &self,
        command: &DiscoveryCommand,
        read: &ReadSet<DiscoveryKey>,
        _context: &CommandContext,
    ) -> Result<Decision<DiscoveryKey, DiscoveryEvent>, DiscoveryError> {
        let mut decision = Decision::default();
        match command {
            DiscoveryCommand::StartRun { run, started } => {
                if run_state(read, *run).started {
                    return Err(DiscoveryError::RunExists(*run));
                }
                check_label("scope", &started.scope, MAX_SCOPE_BYTES)?;
                if started.scope.contains('/') {
                    return Err(invalid("scope", "must not contain '/' (it ends the scope in every identity)"));
                }
                check_label("file", &started.file, MAX_FILE_LABEL_BYTES)?;
                let version = match read.get(&DiscoveryKey::Rules) {
                    Some(DiscoveryState::Rules(rules)) => rules.0,
                    _ => 0,
                };
                if started.rules_version != version {
                    return Err(invalid(
                        "rules_version",
                        format!("the rules are at version {version}, the run mapped with {}", started.rules_version),
                    ));
                }
                decision.write(DiscoveryKey::Run(*run), DiscoveryEvent::RunStarted(started.clone()));
            }
            DiscoveryCommand::Observe { run, batches } => {
                let state = open_run(read, *run)?;
                let (mut items, mut relationships) = (state.items, state.relationships);
                for batch in batches {
                    let count = batch.items.len() + batch.relationships.len();
                    if count > MAX_OBSERVATIONS_PER_EVENT {
                        return Err(DiscoveryError::BatchTooLarge { count });
                    }
                    check_batch(batch)?;
                    items += batch.items.len() as u64;
                    relationships += batch.relationships.len() as u64;
                    if items + relationships > MAX_ITEMS_PER_RUN {
                        return Err(DiscoveryError::RunTooLarge { count: items + relationships });
                    }
                    let totalled = Observed { items_total: items, relationships_total: relationships, ..batch.clone() };
                    decision.write(DiscoveryKey::Run(*run), DiscoveryEvent::Observed(totalled));
                }
            }
            DiscoveryCommand::FinishRun { run, finished } => {
                let state = open_run(read, *run)?;
                for (what, recorded, claimed) in [
                    ("items", state.items, finished.items),
                    ("relationships", state.relationships, finished.relationships),
                ] {
                    if recorded != claimed {
                        return Err(DiscoveryError::CountMismatch { what, recorded, claimed });
                    }
                }
                decision.write(DiscoveryKey::Run(*run), DiscoveryEvent::RunFinished(finished.clone()));
            }
            DiscoveryCommand::RecordAudit { audit, recorded } => {
                if matches!(read.get(&DiscoveryKey::Audit(*audit)), Some(DiscoveryState::Audit(true))) {
                    return Err(DiscoveryError::AuditExists(*audit));
                }
                let run = run_state(read, recorded.run);
                if !run.started {
                    return Err(DiscoveryError::UnknownRun(recorded.run));
                }
                if !run.finished {
                    return Err(DiscoveryError::RunNotFinished(recorded.run));
                }
                decision.write(DiscoveryKey::Audit(*audit), DiscoveryEvent::AuditRecorded(recorded.clone()));
                decision.require_unchanged(DiscoveryKey::Run(recorded.run));
            }
            DiscoveryCommand::SetRules(set) => {
                set.rules.check()?;
                decision.write(DiscoveryKey::Rules, DiscoveryEvent::RulesSet(set.clone()));
            }
        }
        Ok(decision)
    }
}

fn run_state(read: &ReadSet<DiscoveryKey>, run: RunId) -> RunState {
    match read.get(&DiscoveryKey::Run(run)) {
        Some(DiscoveryState::Run(state)) => (**state).clone(),
        _ => RunState::default(),
    }
}

fn open_run(read: &ReadSet<DiscoveryKey>, run: RunId) -> Result<RunState, DiscoveryError> {
    let state = run_state(read, run);
    if !state.started {
        return Err(DiscoveryError::UnknownRun(run));
    }
    if state.finished {
        return Err(DiscoveryError::RunFinished(run));
    }
    Ok(state)
}

fn check_label(field: &str, text: &str, max_bytes: usize) -> Result<(), DiscoveryError> {
    if text.trim().is_empty() || text.len() > max_bytes || text.chars().any(char::is_control) {
        return Err(invalid(field, format!("must be 1 to {max_bytes} bytes of text without control characters")));
    }
    Ok(())
}

fn check_batch(batch: &Observed) -> Result<(), DiscoveryError> {
    for item in &batch.items {
        if item.external_id.is_empty() || item.external_id.len() > MAX_EXTERNAL_ID_BYTES {
            return Err(invalid("external_id", format!("must be 1 to {MAX_EXTERNAL_ID_BYTES} bytes")));
        }
    }
    for rel in &batch.relationships {
        if rel.from == rel.to {
            return Err(invalid("relationship", format!("{} relates {} to itself", rel.kind, rel.from)));
        }
    }
    Ok(())
}

/// The observations of a run that an audit reads: items by identity and relationships, in a
/// canonical order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunObservations {
    /// Items by `external_id` (a later observation of the same identity replaces an earlier).
    pub items: BTreeMap<String, ObservedItem>,
    /// Relationships.
    pub relationships: std::collections::BTreeSet<ObservedRelationship>,
}

impl RunObservations {
    /// Adds a batch.
    pub fn add(&mut self, batch: Observed) {
        for item in batch.items {
            self.items.insert(item.external_id.clone(), item);
        }
        self.relationships.extend(batch.relationships);
    }
}

/// The class an identity names, for readers that only have the `external_id`.
pub fn source_of(external_id: &str) -> Option<SourceKind> {
    let (source, _) = external_id.split_once(':')?;
    SourceKind::parse(source).ok()
}

/// The `external_id` of an item: `<source>:<scope>/<identifying values joined by '/'>`.
pub fn external_id(source: SourceKind, scope: &str, identity: &[&str]) -> String {
    format!("{}:{}/{}", source.as_str(), scope, identity.join("/"))
}

/// The prefix every `external_id` of a source's scope starts with.
pub fn scope_prefix(source: SourceKind, scope: &str) -> String {
    format!("{}:{}/", source.as_str(), scope)
}
