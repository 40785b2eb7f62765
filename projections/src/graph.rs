//! The temporal configuration graph (CM-2, CM-5, CM-8). Every CI version and every
//! relationship carries its validity interval of log positions `[from, to)`; an as-of read
//! binary-searches the versions, and a traversal at position `p` follows only the edges valid
//! at `p`. Nothing is replayed to answer a question about the past.
//!
//! The structure is append-only: applying an event only adds versions or closes the open
//! one, so the answer at a position the graph has applied never changes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

use crate::changes::ChangeBook;
use cmdb_core::baseline::{self, BaselineCreated, BaselineScope};
use cmdb_core::change::ChangeEvent;
use cmdb_core::change::risk::ServiceHours;
use cmdb_core::ci::schema::{self as registry, SchemaRegistry};
use cmdb_core::ci::{
    ChangeId, CiClass, CiEvent, CiId, CiRegistered, CiSnapshot, NameKey, RelId, RelType, RelationshipCreated, Status,
};
use cmdb_core::{FoldRecord, Text, Timestamp};
use petgraph::Direction as EdgeDirection;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use serde::{Deserialize, Serialize};

mod alive;
mod head_hops;
mod hops;
mod hours;
mod past_hops;
mod reach;
mod report_nodes;
mod severity;
mod visits;
use alive::Alive;
pub use head_hops::HEAD_HOPS_MAX_REWRITTEN_LISTS;
use head_hops::HeadHops;
use hops::{Hop, Hops};
pub(crate) use hours::HoursPatterns;
use past_hops::{Epoch, PastHops};
pub use past_hops::{PAST_HOPS_MAX_EPOCHS, PAST_HOPS_MIN_EPOCH_POSITIONS};
pub use reach::{Reach, ServiceReached};
pub use report_nodes::ReportNodes;
pub use severity::{Severity, SeverityChain};
use visits::Visits;

/// The `to` of a version still in force.
pub const OPEN: u64 = u64::MAX;
/// Deepest traversal allowed.
pub const MAX_DEPTH: u32 = 32;
/// Most CIs an impact analysis may return.
pub const MAX_RESULTS: usize = 10_000;
/// Most cycles an impact analysis reports.
pub const MAX_CYCLES_REPORTED: usize = 32;
/// Most CIs one impact analysis starts from (a rack, a site, a change's scope).
pub const MAX_IMPACT_ROOTS: usize = 1_000;
/// Most steps [`Impact::severity_chain`] returns. A chain of causes can be longer than the
/// shortest path (the severity may arrive by a longer way than the first arrival), but it only
/// crosses CIs the walk reached within its depth, so a longer chain than twice the deepest walk
/// is a pathological graph: the caller follows [`Impact::cause_of`] from CI to CI instead.
pub const MAX_SEVERITY_CHAIN_STEPS: usize = 2 * (MAX_DEPTH as usize + 1);

/// Why a graph question could not be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum GraphError {
    #[error("CI {ci} is a {class}, not a business service")]
    /// CI … is a …, not a business service.
    NotAService { ci: CiId, class: CiClass },
    #[error("from ({from}) is after to ({to})")]
    /// From (…) is after to (…).
    FromAfterTo { from: u64, to: u64 },
    #[error("position {asked} is past what the graph has applied ({applied})")]
    /// Position … is past what the graph has applied (…).
    PositionAhead { asked: u64, applied: u64 },
    #[error("no CI {ci} at position {position}")]
    /// No CI … at position ….
    UnknownCi { ci: CiId, position: u64 },
    #[error("max_depth must be between 1 and {MAX_DEPTH}, got {0}")]
    /// Max_depth must be between 1 and …, got ….
    Depth(u32),
    #[error("max_results must be between 1 and {MAX_RESULTS}, got {0}")]
    /// Max_results must be between 1 and …, got ….
    Results(usize),
    #[error("CI event at position {position} cannot be applied: {detail}")]
    /// CI event at position … cannot be applied: ….
    Apply { position: u64, detail: String },
    #[error(
        "the chain of causes to CI {ci} is {steps} steps, more than {MAX_SEVERITY_CHAIN_STEPS}; follow each CI's cause instead"
    )]
    /// The chain of causes to CI … is … steps, more than …; follow each CI's cause instead.
    SeverityChain { ci: CiId, steps: usize },
    #[error("an impact analysis starts from 1 to {MAX_IMPACT_ROOTS} CIs, got {0}")]
    /// An impact analysis starts from 1 to … CIs, got ….
    Roots(usize),
    #[error("{0}")]
    /// ….
    Invalid(String),
}

/// One version of a CI and the positions it is valid for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CiVersion {
    /// The first position it is valid at.
    pub from: u64,
    /// The position it stops being valid at ([`OPEN`](crate::graph::OPEN) while it is).
    pub to: u64,
    /// The CI.
    pub ci: Arc<CiSnapshot>,
}

/// The kinds of event in a CI's own stream, one byte each in its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryKind {
    #[serde(rename = "ci.registered")]
    /// Registered.
    Registered,
    #[serde(rename = "ci.updated")]
    /// Updated.
    Updated,
    #[serde(rename = "ci.status_changed")]
    /// Moved to another status.
    StatusChanged,
    #[serde(rename = "ci.withdrawn")]
    /// Withdrawn.
    Withdrawn,
    #[serde(rename = "ci.relationship_added")]
    /// A relationship attached.
    RelationshipAdded,
    #[serde(rename = "ci.relationship_removed")]
    /// A relationship removed.
    RelationshipRemoved,
}

impl HistoryKind {
    /// The value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Registered => CiEvent::REGISTERED,
            HistoryKind::Updated => CiEvent::UPDATED,
            HistoryKind::StatusChanged => CiEvent::STATUS_CHANGED,
            HistoryKind::Withdrawn => CiEvent::WITHDRAWN,
            HistoryKind::RelationshipAdded => CiEvent::LINKED,
            HistoryKind::RelationshipRemoved => CiEvent::UNLINKED,
        }
    }

    fn of(event: &CiEvent) -> HistoryKind {
        match event {
            CiEvent::Registered(_) => HistoryKind::Registered,
            CiEvent::Updated(_) => HistoryKind::Updated,
            CiEvent::StatusChanged(_) => HistoryKind::StatusChanged,
            CiEvent::Withdrawn(_) => HistoryKind::Withdrawn,
            CiEvent::Linked(_) => HistoryKind::RelationshipAdded,
            _ => HistoryKind::RelationshipRemoved,
        }
    }
}

/// One event in a CI's life, for its history (CM-8 traceability).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The log position.
    pub position: u64,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The event type.
    pub event_type: HistoryKind,
    /// Shared: a few principals make most history.
    pub principal: Arc<str>,
    /// The request it came from (inline up to 24 bytes, as in the record: a history entry is
    /// one of millions, and a copy that allocated was one allocation per CI event).
    pub correlation_id: Option<Text>,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
    /// The relationship concerned, for relationship events.
    pub relationship: Option<RelId>,
}

/// A node of the graph: one CI's whole life.
#[derive(Clone, Debug)]
struct CiEntry {
    versions: Vec<CiVersion>,
    history: Vec<HistoryEntry>,
}

/// How a CI version is stored in a checkpoint: its attributes as JSON text (binary formats
/// cannot carry arbitrary JSON values), and only when they differ from the previous version's,
/// so versions that shared their attributes in memory share them again after a restart.
#[derive(Serialize, Deserialize)]
struct StoredVersion {
    from: u64,
    to: u64,
    id: CiId,
    class: CiClass,
    name: cmdb_core::Text,
    status: Status,
    environment: Option<cmdb_core::ci::Environment>,
    owner: Option<CiId>,
    location: Option<CiId>,
    version: Option<cmdb_core::Text>,
    /// `None`: the same attributes as the version before.
    attributes: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    versions: Vec<StoredVersion>,
    history: Vec<HistoryEntry>,
}

impl Serialize for CiEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut versions = Vec::with_capacity(self.versions.len());
        let mut previous: Option<&Arc<cmdb_core::ci::AttributeMap>> = None;
        for v in &self.versions {
            let same = previous.is_some_and(|p| Arc::ptr_eq(p, &v.ci.attributes));
            let attributes = if same {
                None
            } else {
                Some(serde_json::to_string(&*v.ci.attributes).map_err(serde::ser::Error::custom)?)
            };
            previous = Some(&v.ci.attributes);
            let ci = &v.ci;
            versions.push(StoredVersion {
                from: v.from,
                to: v.to,
                id: ci.id,
                class: ci.class,
                name: ci.name.clone(),
                status: ci.status,
                environment: ci.environment,
                owner: ci.owner,
                location: ci.location,
                version: ci.version.clone(),
                attributes,
            });
        }
        StoredEntry { versions, history: self.history.clone() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CiEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredEntry::deserialize(deserializer)?;
        let mut versions = Vec::with_capacity(stored.versions.len());
        let mut previous: Option<Arc<cmdb_core::ci::AttributeMap>> = None;
        for v in stored.versions {
            let attributes = match (v.attributes, &previous) {
                (Some(text), _) => Arc::new(serde_json::from_str(&text).map_err(serde::de::Error::custom)?),
                (None, Some(shared)) => shared.clone(),
                (None, None) => return Err(serde::de::Error::custom("a first version without attributes")),
            };
            previous = Some(attributes.clone());
            let ci = CiSnapshot {
                id: v.id,
                class: v.class,
                name: v.name,
                status: v.status,
                environment: v.environment,
                owner: v.owner,
                location: v.location,
                version: v.version,
                attributes,
            };
            versions.push(CiVersion { from: v.from, to: v.to, ci: Arc::new(ci) });
        }
        Ok(CiEntry { versions, history: stored.history })
    }
}

/// A relationship and the positions it is valid for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relationship {
    /// Its id.
    pub id: RelId,
    /// The relationship type.
    pub rel_type: RelType,
    /// The CI it goes from.
    pub source: CiId,
    /// The CI it goes to.
    pub target: CiId,
    /// The first position it is valid at.
    pub from: u64,
    /// The position it stops being valid at ([`OPEN`](crate::graph::OPEN) while it is).
    pub to: u64,
    /// The change that created it.
    pub created_by: Option<ChangeId>,
    /// The change that removed it.
    pub removed_by: Option<ChangeId>,
    /// Who created it, and when.
    pub created: EventInfo,
    /// Who removed it, and when (boxed: most relationships are never removed).
    pub removed: Option<Box<EventInfo>>,
}

/// Who did something, when, and under which change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// The log position.
    pub position: u64,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The event type (shared: a handful of types make every relationship).
    pub event_type: Arc<str>,
    /// The principal (shared, as in histories).
    pub principal: Arc<str>,
    /// The change that authorised it (CM-3).
    pub authorized_by: Option<ChangeId>,
}

/// What a position changed: a CI's state or a relationship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Touched {
    /// A CI.
    Ci(NodeIndex),
    /// A relationship.
    Relationship(EdgeIndex),
}

impl Relationship {
    /// Whether it existed at `position`.
    pub fn valid_at(&self, position: u64) -> bool {
        self.from <= position && position < self.to
    }
}

/// One CI an impact walk reached: from which CI, across which relationship, how deep.
#[derive(Clone, Copy, Debug)]
struct WalkStep {
    node: NodeIndex,
    parent: NodeIndex,
    edge: EdgeIndex,
    depth: u32,
}

/// Impact direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImpactDirection {
    /// What depends on the CI: whom its failure reaches, up to the business services.
    Downstream,
    /// What the CI depends on.
    Upstream,
}

/// One step of a path: across `relationship` to `ci`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The relationship.
    pub relationship: RelId,
    /// The relationship type.
    pub rel_type: RelType,
    /// The CI.
    pub ci: CiId,
}

/// A CI an impact analysis reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reached {
    /// The CI.
    pub ci: Arc<CiSnapshot>,
    /// How many relationships away (the shortest chain).
    pub depth: u32,
    /// How badly the failure reaches it (downstream walks only).
    pub severity: Option<Severity>,
}

/// A business service an impact analysis reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceHit {
    /// The service.
    pub ci: Arc<CiSnapshot>,
    /// Its `criticality_tier`.
    pub tier: Option<i64>,
    /// How many relationships away.
    pub depth: u32,
    /// How badly the failure reaches it (downstream walks only).
    pub severity: Option<Severity>,
}

/// The answer of an impact analysis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Impact {
    /// Where the walk started (the first of `roots`).
    pub root: Arc<CiSnapshot>,
    /// Every CI it started from, failing together, in the order given, each once.
    pub roots: Vec<Arc<CiSnapshot>>,
    /// The log position.
    pub position: u64,
    /// Which way it went.
    pub direction: ImpactDirection,
    /// What was reached.
    pub reached: Vec<Reached>,
    /// The business services among the reached, with their tier and severity.
    pub services: Vec<ServiceHit>,
    /// A bound (`max_results`) cut the traversal short.
    pub truncated: bool,
    /// Cycles met (each a list of CIs ending where it starts). Never followed twice.
    pub cycles: Vec<Vec<CiId>>,
    /// How each reached CI was first reached (its breadth-first parent), for [`Impact::path_to`].
    #[serde(skip)]
    parents: HashMap<CiId, (CiId, RelId, RelType)>,
    /// Downstream: the neighbour (and relationship) whose failure gave each reached CI its
    /// severity, for [`Impact::cause_of`].
    #[serde(skip)]
    causes: HashMap<CiId, (CiId, RelId, RelType)>,
}

impl Impact {
    /// About how many bytes it holds beyond the snapshots it shares with the graph: what a
    /// cache of impacts counts against its bound.
    pub fn approximate_bytes(&self) -> usize {
        let per_map_entry = 2 * (std::mem::size_of::<CiId>() + std::mem::size_of::<(CiId, RelId, RelType)>());
        std::mem::size_of::<Impact>()
            + self.reached.len() * std::mem::size_of::<Reached>()
            + self.services.len() * std::mem::size_of::<ServiceHit>()
            + (self.parents.len() + self.causes.len()) * per_map_entry
            + self.cycles.iter().map(|c| c.len() * std::mem::size_of::<CiId>() + 24).sum::<usize>()
    }
}

/// Why a reached CI has its severity: the failure arrived from `from` across `relationship`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// The neighbour the failure arrived from (for a redundant group brought down, the
    /// member that reached its threshold).
    pub from: CiId,
    /// The relationship it crossed.
    pub relationship: RelId,
    /// The relationship's type.
    pub rel_type: RelType,
}

impl Impact {
    /// One shortest path from the root to a reached CI (empty for the root or an unreached CI).
    pub fn path_to(&self, target: CiId) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut cursor = target;
        while let Some((up, rel, rel_type)) = self.parents.get(&cursor) {
            steps.push(Step { relationship: *rel, rel_type: *rel_type, ci: cursor });
            cursor = *up;
        }
        steps.reverse();
        steps
    }

    /// Downstream: where the failure that gave `target` its severity came from. Following
    /// causes back from CI to CI reaches the root along the chain that carries the severity.
    pub fn cause_of(&self, target: CiId) -> Option<Cause> {
        self.causes.get(&target).map(|(from, relationship, rel_type)| Cause {
            from: *from,
            relationship: *relationship,
            rel_type: *rel_type,
        })
    }

    /// Downstream: the chain of causes from the root to `target` (empty for the root, an
    /// unreached CI or an upstream walk), each step the CI the failure arrived at. It can be
    /// longer than the shortest path when the severity arrives by a longer way (a shorter way
    /// passing a redundant group that survives). At most [`MAX_SEVERITY_CHAIN_STEPS`] steps:
    /// a longer chain is [`GraphError::SeverityChain`], with its length.
    pub fn severity_chain(&self, target: CiId) -> Result<Vec<Step>, GraphError> {
        let mut steps = Vec::new();
        let mut cursor = target;
        // Causes form a tree over the reached CIs, so the walk back ends within their count;
        // the bound only guards that invariant.
        while let Some((from, rel, rel_type)) = self.causes.get(&cursor) {
            steps.push(Step { relationship: *rel, rel_type: *rel_type, ci: cursor });
            cursor = *from;
            if steps.len() > self.causes.len() {
                debug_assert!(false, "the causes of an impact form a cycle");
                break;
            }
        }
        if steps.len() > MAX_SEVERITY_CHAIN_STEPS {
            return Err(GraphError::SeverityChain { ci: target, steps: steps.len() });
        }
        steps.reverse();
        debug_assert!(steps.last().is_none_or(|s| s.ci == target), "a chain ends at its CI");
        Ok(steps)
    }
}

/// Bounds and filters of a traversal.
#[derive(Clone, Debug, PartialEq)]
pub struct Traversal {
    /// Which way to walk.
    pub direction: ImpactDirection,
    /// How many relationships deep.
    pub max_depth: u32,
    /// Most CIs to return.
    pub max_results: usize,
    /// Only these relationship types (all propagating types if `None`).
    pub types: Option<Vec<RelType>>,
}

impl Traversal {
    /// Checks it, naming what is wrong.
    pub fn validate(&self) -> Result<(), GraphError> {
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH {
            return Err(GraphError::Depth(self.max_depth));
        }
        if self.max_results == 0 || self.max_results > MAX_RESULTS {
            return Err(GraphError::Results(self.max_results));
        }
        Ok(())
    }
}

/// Where a page of CIs starts: after a cursor (forward), or before one (backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CiPage {
    /// The first ones after this id (from the start if `None`).
    After(Option<CiId>),
    /// The last ones before this id (up to the end if `None`).
    Before(Option<CiId>),
}

/// Filters of a CI listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CiFilter {
    /// Classes to keep.
    pub classes: Option<Vec<CiClass>>,
    /// Statuses to keep.
    pub statuses: Option<Vec<Status>>,
    /// Environments to keep.
    pub environments: Option<Vec<cmdb_core::ci::Environment>>,
    /// Attribute name and the JSON value it must equal.
    pub attribute: Option<(String, serde_json::Value)>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Include withdrawn CIs (when no status filter says otherwise).
    pub include_withdrawn: bool,
}

/// The temporal graph.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TemporalGraph {
    /// Nodes hold a CI's versions, edges hold the relationship: a traversal never hashes.
    graph: StableDiGraph<CiEntry, Relationship>,
    cis: FxHashMap<CiId, NodeIndex>,
    rels: FxHashMap<RelId, EdgeIndex>,
    /// CIs of each class, in registration order (a class never changes).
    by_class: BTreeMap<CiClass, Vec<CiId>>,
    /// Name intervals per (class, normalized name): (from, to, ci).
    names: HashMap<String, Vec<(u64, u64, CiId)>>,
    /// (position, recorded_at) of every event applied, in order.
    times: Vec<(u64, Timestamp)>,
    applied: u64,
    applied_hash: cmdb_core::Hash,
    /// The commits (atomic appends) of more than one event, as (first, last) positions in
    /// order: a read inside one snaps to a whole commit (issue 18, part 5).
    multi_event_commits: Vec<(u64, u64)>,
    /// Every state change in position order: the index a diff reads.
    changes: Vec<(u64, Touched)>,
    /// Baselines by normalized name.
    #[serde(with = "crate::as_json")]
    baselines: BTreeMap<String, BaselineInfo>,
    /// Custom classes and attributes.
    #[serde(with = "crate::as_json")]
    schema: SchemaRegistry,
    /// Change requests and templates.
    change_book: ChangeBook,
    /// Releases, deployments and pipeline templates.
    release_book: crate::releases::ReleaseBook,
    /// Discovery runs, audits and rules (issue 17).
    #[serde(default, with = "crate::as_json")]
    discovery: crate::discovery_book::DiscoveryBook,
    /// The CIs registered under each change (they are in its scope from then on).
    registered_under: FxHashMap<ChangeId, Vec<CiId>>,
    /// Principal names and event types shared by history entries and relationships. Not in
    /// checkpoints: after a load it starts empty, and what was read back keeps its own copies.
    #[serde(skip)]
    shared_text: FxHashSet<Arc<str>>,
    /// Every redundancy declaration: (position, class, redundant), in position order, so an
    /// impact at a past position uses the declarations in force then.
    redundancy_changes: Vec<(u64, CiClass, bool)>,
    /// How many redaction records were applied: answers kept outside the graph (the impact
    /// and findings caches) name it in their keys, so none computed before a redaction (with
    /// values since erased) is served after it.
    redactions_applied: u64,
    /// The relationships as the walks cross them, per CI (derived from the edges: rebuilt
    /// after a checkpoint is loaded, not stored).
    #[serde(skip)]
    hops: Hops,
    /// Each CI's class and presence, by node (derived from the versions like `hops`).
    #[serde(skip)]
    alive: Vec<Alive>,
    /// Each change's scope and services as nodes at the head, for the change report (derived
    /// from the change book: rebuilt after a checkpoint is loaded, not stored).
    #[serde(skip)]
    report_nodes: FxHashMap<ChangeId, ReportNodes>,
    /// The hops valid at the head in one flat array, once the log is caught up (derived from
    /// `hops` and `alive`: built by [`build_head_hops`](Self::build_head_hops), not stored).
    #[serde(skip)]
    head_hops: Option<HeadHops>,
    /// The hops valid through each epoch of the log before, built with `head_hops` (derived
    /// the same way, not stored; `graph/past_hops.rs`).
    #[serde(skip)]
    past_hops: Option<PastHops>,
    /// Each business service's newest version, with its id, tier and hours read, by node
    /// index (derived from the versions like `alive`, kept as versions are added, not stored).
    #[serde(skip)]
    service_heads: FxHashMap<u32, ServiceHead>,
    /// The service-hours patterns the heads share.
    #[serde(skip)]
    head_hours: HoursPatterns,
    /// A bit per node, set for the CIs present from their registration on and never withdrawn
    /// (derived from `alive`, kept with it): a walk at a past position reads the presence
    /// entry (a cache miss each, in a 2.4 MB array on the large estate) only for the others.
    #[serde(skip)]
    settled: fixedbitset::FixedBitSet,
    /// A bit per node, set for the business services: a walk of 26,000 CIs tells its services
    /// apart in 12 KiB instead of reading each CI's presence entry.
    #[serde(skip)]
    service_bits: Vec<u64>,
}

/// A baseline as the graph knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineInfo {
    /// The baseline as recorded.
    pub baseline: BaselineCreated,
    /// When it was created.
    pub created: EventInfo,
    /// Its deletion, if it was deleted.
    pub deleted: Option<EventInfo>,
}

fn baseline_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The most events [`TemporalGraph::reserve_for_events`] makes room for at once (16 bytes
/// each in two arrays: 1 GiB of address space at most, touched only as events arrive).
pub const RESERVED_EVENTS_MAX: u64 = 32 * 1024 * 1024;

fn name_index_key(key: &NameKey) -> String {
    format!("{}/{}", key.class, key.normalized)
}

fn tier_of(ci: &CiSnapshot) -> Option<i64> {
    ci.attributes.get("criticality_tier").and_then(serde_json::Value::as_i64)
}

/// A service's `criticality_tier` as assessments rank it: a whole number from 0 to 255, else
/// none (CH-2).
pub fn criticality_tier(ci: &CiSnapshot) -> Option<u8> {
    ci.attributes.get("criticality_tier").and_then(serde_json::Value::as_u64).and_then(|t| u8::try_from(t).ok())
}

/// A business service's newest version as an assessment ranks and lists it: its id and tier,
/// kept by node so that ranking thousands of services reached does not read their snapshots
/// (and their attributes) one cache miss after another, and for the listed ones the version
/// and its service hours already read. It holds from `from` on (a newest version is open).
#[derive(Clone, Debug)]
struct ServiceHead {
    id: CiId,
    tier: Option<u8>,
    /// Where the newest version starts.
    from: u64,
    /// The newest version.
    ci: Arc<CiSnapshot>,
    /// Its `service_hours`, read ([`ServiceHours::from_attribute`]) and shared by pattern.
    hours: Option<Arc<ServiceHours>>,
}

/// The version of `versions` valid at `position`.
pub(crate) fn version_at(versions: &[CiVersion], position: u64) -> Option<&CiVersion> {
    let count = versions.partition_point(|v| v.from <= position);
    versions[..count].last().filter(|v| position < v.to)
}

impl TemporalGraph {
    /// The last log position applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// How many redactions the graph has applied (a cache generation: see the field).
    pub fn redactions_applied(&self) -> u64 {
        self.redactions_applied
    }

    /// What changed in `(from, to]`, in position order, each once (first change first).
    pub(crate) fn touched_between(&self, from: u64, to: u64) -> Vec<Touched> {
        let start = self.changes.partition_point(|(p, _)| *p <= from);
        let end = self.changes.partition_point(|(p, _)| *p <= to);
        let mut seen = FxHashSet::default();
        self.changes[start..end].iter().map(|(_, t)| *t).filter(|t| seen.insert(*t)).collect()
    }

    /// A CI's whole entry by node.
    pub(crate) fn node_versions(&self, node: NodeIndex) -> (&[CiVersion], &[HistoryEntry]) {
        let entry = &self.graph[node];
        (&entry.versions, &entry.history)
    }

    pub(crate) fn edge(&self, edge: EdgeIndex) -> &Relationship {
        &self.graph[edge]
    }

    /// The CIs within `depth` relationships of `center` (either direction, any type) at
    /// `position`, the center included.
    pub fn neighbourhood(&self, center: CiId, position: u64, depth: u32) -> Result<FxHashSet<CiId>, GraphError> {
        if depth > MAX_DEPTH {
            return Err(GraphError::Depth(depth));
        }
        let mut found = FxHashSet::default();
        let Some(start) = self.cis.get(&center).copied() else { return Ok(found) };
        let mut seen: FxHashSet<NodeIndex> = FxHashSet::default();
        seen.insert(start);
        let mut frontier = vec![start];
        for _ in 0..depth {
            let mut next = Vec::new();
            for node in frontier {
                for (_, other) in self.neighbours_any(node, position, None) {
                    if seen.insert(other) {
                        next.push(other);
                    }
                }
            }
            frontier = next;
        }
        found.extend(seen.into_iter().map(|node| self.graph[node].versions[0].ci.id));
        Ok(found)
    }

    /// The schema registry as of the newest applied event (declarations only add).
    pub fn schema(&self) -> &SchemaRegistry {
        &self.schema
    }

    /// The baselines that exist at `position` (created at or before it, not deleted by then).
    pub fn baselines_at(&self, position: u64) -> Vec<&BaselineInfo> {
        self.baselines
            .values()
            .filter(|b| b.created.position <= position && b.deleted.as_ref().is_none_or(|d| d.position > position))
            .collect()
    }

    /// One baseline by name (case-insensitive), as of `position`.
    pub fn baseline(&self, name: &str, position: u64) -> Option<&BaselineInfo> {
        self.baselines
            .get(&baseline_key(name))
            .filter(|b| b.created.position <= position && b.deleted.as_ref().is_none_or(|d| d.position > position))
    }

    /// The members of a baseline scope at `position`, sorted.
    pub fn baseline_members(&self, scope: &BaselineScope, position: u64) -> Result<Vec<CiId>, GraphError> {
        self.check_position(position)?;
        let mut members: Vec<CiId> = match scope {
            BaselineScope::Filter { classes, statuses, environments, name_contains } => {
                let filter = CiFilter {
                    classes: classes.clone(),
                    statuses: statuses.clone(),
                    environments: environments.clone(),
                    name_contains: name_contains.clone(),
                    attribute: None,
                    include_withdrawn: false,
                };
                self.cis_at(position, &filter, None, usize::MAX).0.iter().map(|c| c.id).collect()
            }
            BaselineScope::Service { service, depth } => {
                let root = self.ci_at(*service, position).ok_or(GraphError::UnknownCi { ci: *service, position })?;
                if root.class != CiClass::BusinessService {
                    return Err(GraphError::NotAService { ci: *service, class: root.class });
                }
                let traversal = Traversal {
                    direction: ImpactDirection::Upstream,
                    max_depth: *depth,
                    max_results: MAX_RESULTS,
                    types: None,
                };
                let impact = self.impact(*service, position, &traversal)?;
                if impact.truncated {
                    return Err(GraphError::Results(MAX_RESULTS + 1));
                }
                std::iter::once(*service).chain(impact.reached.iter().map(|r| r.ci.id)).collect()
            }
        };
        members.sort_unstable();
        Ok(members)
    }

    /// Rebuilds the hops from the edges, in creation order as [`apply`](Self::apply) adds
    /// them, and the presence entries from the versions (after a checkpoint is loaded: they
    /// are not stored).
    pub(crate) fn rebuild_derived(&mut self) {
        let mut hops = Hops::default();
        for edge in self.graph.edge_indices() {
            let rel = &self.graph[edge];
            if let Some((s, t)) = self.graph.edge_endpoints(edge) {
                hops.add(s, t, edge, rel.rel_type, (rel.from, rel.to));
            }
        }
        self.hops = hops;
        self.alive.clear();
        self.settled.clear();
        let nodes: Vec<NodeIndex> = self.graph.node_indices().collect();
        self.service_heads.clear();
        self.service_bits.clear();
        for node in nodes {
            self.set_alive(node);
            self.note_service_head(node);
        }
        self.head_hops = None;
        self.past_hops = None;
    }

    /// Builds the index of the hops at the head ([`head_hops`]): walks at the head read it
    /// from now on, and applying events keeps it. The runner builds it once the log is caught
    /// up; until then (and in a graph folded by hand) walks read the hops of every position.
    pub fn build_head_hops(&mut self) {
        let head = self.applied;
        self.head_hops = Some(self.head_index_at(head));
        self.build_past_hops(PAST_HOPS_MIN_EPOCH_POSITIONS);
    }

    /// Builds the epochs of past hops (`graph/past_hops.rs`) over the positions applied, each
    /// at least `min_epoch_positions` long and at most [`PAST_HOPS_MAX_EPOCHS`] of them: walks
    /// at a position in an epoch read its lists.
    pub fn build_past_hops(&mut self, min_epoch_positions: u64) {
        let length = PastHops::epoch_positions(self.applied, min_epoch_positions);
        let mut past = PastHops::new(length);
        self.extend_past_hops(&mut past, self.applied);
        self.past_hops = Some(past);
    }

    /// Adds to `past` the epochs of its length that end at or before `last_final + 1`.
    fn extend_past_hops(&self, past: &mut PastHops, last_final: u64) {
        past.grow(last_final, self.graph.node_bound(), |node, start, end, out| {
            self.write_epoch_list(node, start, end, out)
        });
    }

    /// How many epochs of past hops there are, and the first position after them.
    pub fn past_hops_epochs(&self) -> Option<(usize, u64)> {
        self.past_hops.as_ref().map(|past| (past.len(), past.end()))
    }

    /// Appends `node`'s downstream hops valid through `[start, end)` into CIs present through
    /// it, in the order of `hops`; false if any hop of it, or its target's presence, changes
    /// within the epoch (the walk then reads the hops of every position).
    fn write_epoch_list(&self, node: NodeIndex, start: u64, end: u64, out: &mut Vec<u32>) -> bool {
        for hop in self.hops.of(node, ImpactDirection::Downstream) {
            if hop.until <= start || hop.from >= end {
                continue; // not valid anywhere in the epoch
            }
            let through = hop.from <= start && end <= hop.until;
            let present = self.alive.get(hop.to.index()).is_some_and(|a| a.present_through(start, end));
            if !(through && present) {
                return false;
            }
            out.push(head_hops::entry(hop.to, hop.into_group));
        }
        true
    }

    /// The epoch of past hops `position` falls in, if built.
    #[inline]
    fn past_epoch_at(&self, position: u64) -> Option<&Epoch> {
        self.past_hops.as_ref()?.epoch_at(position)
    }

    /// The head index built whole at `position`.
    fn head_index_at(&self, position: u64) -> HeadHops {
        HeadHops::build(
            self.graph.node_bound(),
            position,
            |node, out| self.write_head_list(node, position, out),
            |node| self.group_threshold_of(node, position),
        )
    }

    /// `node`'s `members_to_fail` at `position` if it is a redundant group there, asking the
    /// versions only of CIs of a redundant class.
    fn group_threshold_of(&self, node: NodeIndex, position: u64) -> Option<u32> {
        let class = self.class_at(node)?;
        if !self.redundant_at(class, position) {
            return None;
        }
        self.members_to_fail(node, position)
    }

    /// After a change at `position`, recomputes the head index's thresholds of `nodes`.
    fn refresh_head_thresholds(&mut self, nodes: impl IntoIterator<Item = NodeIndex>, position: u64) {
        let Some(mut index) = self.head_hops.take() else { return };
        for node in nodes {
            index.set_threshold(node, self.group_threshold_of(node, position), position);
        }
        self.head_hops = Some(index);
    }

    /// Where the head index holds from, if it is built: walks at positions from there on read it.
    pub fn head_hops_valid_from(&self) -> Option<u64> {
        self.head_hops.as_ref().map(HeadHops::valid_from)
    }

    /// Appends the head list of `node` at `position`: its downstream hops valid there into CIs
    /// present there, in the order of `hops`.
    fn write_head_list(&self, node: NodeIndex, position: u64, out: &mut Vec<u32>) {
        out.extend(
            self.hops_at(node, position, ImpactDirection::Downstream, None)
                .filter(|hop| self.alive_at(hop.to, position))
                .map(|hop| head_hops::entry(hop.to, hop.into_group)),
        );
    }

    /// After a change at `position`, rewrites the head lists of `nodes` (if the index is built).
    fn refresh_head_lists(&mut self, nodes: &[NodeIndex], position: u64) {
        let Some(mut index) = self.head_hops.take() else { return };
        for node in nodes {
            let mut list = Vec::new();
            self.write_head_list(*node, position, &mut list);
            index.rewrite(*node, list, position);
        }
        if index.needs_rebuild() {
            index = self.head_index_at(position);
            // As often, the epochs of past hops grow to the positions now final.
            if let Some(mut past) = self.past_hops.take() {
                self.extend_past_hops(&mut past, position.saturating_sub(1));
                self.past_hops = Some(past);
            }
        }
        self.head_hops = Some(index);
        // A relationship made or removed changes the member count of a group at either end.
        self.refresh_head_thresholds(nodes.iter().copied(), position);
    }

    /// Keeps the id and tier of `node`'s newest version if it is a business service.
    fn note_service_head(&mut self, node: NodeIndex) {
        let Some(newest) = self.graph[node].versions.last() else { return };
        if newest.ci.class == CiClass::BusinessService {
            let hours = newest.ci.attributes.get("service_hours").and_then(|value| self.head_hours.read(value));
            let head = ServiceHead {
                id: newest.ci.id,
                tier: criticality_tier(&newest.ci),
                from: newest.from,
                ci: newest.ci.clone(),
                hours,
            };
            self.service_heads.insert(node.index() as u32, head);
            let (word, bit) = (node.index() / 64, node.index() % 64);
            if self.service_bits.len() <= word {
                self.service_bits.resize(word + 1, 0);
            }
            self.service_bits[word] |= 1 << bit;
        }
    }

    /// Whether the CI at `node` is a business service.
    #[inline]
    pub(crate) fn is_service_node(&self, node: NodeIndex) -> bool {
        self.service_bits.get(node.index() / 64).is_some_and(|word| word & (1 << (node.index() % 64)) != 0)
    }

    /// The id and tier of the business service at `node`, present at `position`: from its
    /// newest version's entry when that version holds there, else read from the version that
    /// does.
    #[inline]
    pub(crate) fn service_id_and_tier(&self, node: NodeIndex, position: u64) -> Option<(CiId, Option<u8>)> {
        debug_assert!(self.alive_at(node, position), "asked only of CIs present at the position");
        match self.service_head_at(node, position) {
            Some(head) => Some((head.id, head.tier)),
            None => self.present(node, position).map(|ci| (ci.id, criticality_tier(ci))),
        }
    }

    /// The head entry of the business service at `node` if its newest version holds at
    /// `position` (a newest version is open, so from its start on).
    #[inline]
    fn service_head_at(&self, node: NodeIndex, position: u64) -> Option<&ServiceHead> {
        self.service_heads.get(&(node.index() as u32)).filter(|head| head.from <= position)
    }

    /// The version at `position` of the business service at `node`, as [`ci_at`](Self::ci_at)
    /// reads it, with its service hours: those of the head when its newest version holds there,
    /// else read from the version, shared with the heads' patterns or those in `patterns`.
    pub(crate) fn service_version(
        &self,
        node: NodeIndex,
        position: u64,
        patterns: &mut HoursPatterns,
    ) -> Option<(Arc<CiSnapshot>, Option<Arc<ServiceHours>>)> {
        if let Some(head) = self.service_head_at(node, position) {
            debug_assert!(
                head.hours.as_deref()
                    == head.ci.attributes.get("service_hours").and_then(ServiceHours::from_attribute).as_ref(),
                "a head's hours are its version's"
            );
            return Some((head.ci.clone(), head.hours.clone()));
        }
        let versions = &self.graph.node_weight(node)?.versions;
        let ci = version_at(versions, position)?.ci.clone();
        // The heads' patterns first, so that a service read here shares its pattern with those
        // read at the head.
        let hours = ci
            .attributes
            .get("service_hours")
            .and_then(|value| self.head_hours.known(value).unwrap_or_else(|| patterns.read(value)));
        Some((ci, hours))
    }

    /// A CI as it was at `position`, with its node.
    pub(crate) fn ci_and_node_at(&self, id: CiId, position: u64) -> Option<(Arc<CiSnapshot>, NodeIndex)> {
        let node = *self.cis.get(&id)?;
        Some((version_at(&self.graph[node].versions, position)?.ci.clone(), node))
    }

    /// Derives the presence entry of `node` from its versions.
    fn set_alive(&mut self, node: NodeIndex) {
        let Some(alive) = Alive::of(&self.graph[node].versions) else { return };
        if self.alive.len() <= node.index() {
            self.alive.resize(node.index() + 1, alive);
        }
        self.alive[node.index()] = alive;
        self.note_settled(node);
    }

    /// Keeps `node`'s bit in `settled`: set while its presence entry says it is present from
    /// its registration on, for good.
    fn note_settled(&mut self, node: NodeIndex) {
        let settled = self.alive.get(node.index()).is_some_and(|a| a.present_through(a.from, OPEN));
        if self.settled.len() <= node.index() {
            self.settled.grow(node.index() + 1);
        }
        self.settled.set(node.index(), settled);
    }

    /// Whether the CI at `node` is present at every position from its registration on: then a
    /// hop valid at a position leads into a CI present there, since a relationship is made
    /// only to a CI registered before it.
    #[inline]
    pub(crate) fn settled(&self, node: NodeIndex) -> bool {
        self.settled.contains(node.index())
    }

    /// Whether the CI at `node` exists at `position` and is not withdrawn: [`present`]
    /// without reading the versions.
    ///
    /// [`present`]: Self::present
    #[inline]
    fn alive_at(&self, node: NodeIndex, position: u64) -> bool {
        match self.alive.get(node.index()) {
            Some(a) if a.exact => a.from <= position && position < a.until,
            _ => self.present(node, position).is_some(),
        }
    }

    /// The class of the CI at `node` (it never changes).
    #[inline]
    fn class_at(&self, node: NodeIndex) -> Option<CiClass> {
        match self.alive.get(node.index()) {
            Some(a) => Some(a.class),
            None => self.graph.node_weight(node).and_then(|e| e.versions.first()).map(|v| v.ci.class),
        }
    }

    /// How many changes to CIs, relationships and redundancy rules the graph holds up to
    /// `position`: two positions with the same count see the same graph, so an answer
    /// computed at one holds at the other (the key of the impact cache, issue 15 part 4).
    pub fn change_counter(&self, position: u64) -> u64 {
        let changes = self.changes.partition_point(|(p, _)| *p <= position);
        let rules = self.redundancy_changes.partition_point(|(p, _, _)| *p <= position);
        (changes + rules) as u64
    }

    /// The hash of the last event applied.
    pub fn applied_hash(&self) -> cmdb_core::Hash {
        self.applied_hash
    }

    /// (CI versions, CIs, relationships): for memory accounting.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let versions = self.graph.node_weights().map(|n| n.versions.len()).sum();
        (versions, self.cis.len(), self.rels.len())
    }

    /// Counts, for metrics and tests.
    pub fn counts(&self) -> (usize, usize) {
        (self.cis.len(), self.rels.len())
    }

    /// Applies one event from the log, in position order.
    pub fn apply(&mut self, record: &FoldRecord) -> Result<(), GraphError> {
        let decoded = Self::decode(record)?;
        self.apply_decoded(record, decoded)
    }

    /// The part of applying an event that needs no state: parsing its payload. A rebuild does
    /// it on another core while the previous events are applied.
    pub fn decode(record: &FoldRecord) -> Result<Option<CiEvent>, GraphError> {
        if !CiEvent::is_ci_event(&record.event_type) {
            return Ok(None);
        }
        CiEvent::from_record(record)
            .map(Some)
            .map_err(|e| GraphError::Apply { position: record.position, detail: e.to_string() })
    }

    /// Makes room in the per-event arrays (the times and the changes a diff reads) for
    /// `events` more, at most [`RESERVED_EVENTS_MAX`]: a catch-up knows how far it goes, and
    /// arrays of millions of entries grown by doubling copy themselves and touch fresh memory
    /// at every step (issue 15, part 6).
    pub fn reserve_for_events(&mut self, events: u64) {
        let events = usize::try_from(events.min(RESERVED_EVENTS_MAX)).unwrap_or(0);
        self.times.reserve(events);
        self.changes.reserve(events);
    }

    /// Applies an event whose payload [`decode`](Self::decode) parsed.
    pub fn apply_decoded(&mut self, record: &FoldRecord, decoded: Option<CiEvent>) -> Result<(), GraphError> {
        if record.position <= self.applied {
            return Ok(()); // already applied (a replayed page)
        }
        // A fold never skips a position: the log is gapless and read in order.
        debug_assert_eq!(record.position, self.applied + 1, "the graph applies every position in order");
        let p = record.position;
        let apply_error = |detail: String| GraphError::Apply { position: p, detail };
        if let Some(event) = decoded {
            self.apply_ci_event(record, event)?;
        } else if record.stream_id.as_str() == registry::SCHEMA_STREAM {
            self.schema.apply(record).map_err(|e| apply_error(e.to_string()))?;
            if record.event_type == registry::REDUNDANCY_DECLARED {
                let declared: registry::RedundancyDeclared =
                    record.data_as().map_err(|e| apply_error(e.to_string()))?;
                self.redundancy_changes.push((p, declared.class, declared.redundant));
            }
            // A rule, or a class declared like a redundant one, may make groups of any class.
            if self.head_hops.is_some() {
                self.refresh_head_thresholds(self.graph.node_indices().collect::<Vec<_>>(), p);
            }
        } else if ChangeEvent::is_change_event(&record.event_type) {
            self.change_book.apply(record).map_err(apply_error)?;
            self.refresh_report_nodes(record);
        } else if crate::releases::ReleaseBook::keeps(&record.event_type) {
            self.release_book.apply(record).map_err(|e| apply_error(e.to_string()))?;
        } else if cmdb_core::discovery::DiscoveryEvent::is_discovery_event(&record.event_type) {
            self.discovery.apply(record).map_err(apply_error)?;
        } else if record.event_type == baseline::CREATED {
            let created = baseline::created_from(record).map_err(|e| apply_error(e.to_string()))?;
            let info = BaselineInfo { created: self.event_info(record, None), baseline: created, deleted: None };
            self.baselines.insert(baseline_key(&info.baseline.name), info);
        } else if record.event_type == baseline::DELETED {
            let deleted = baseline::deleted_from(record).map_err(|e| apply_error(e.to_string()))?;
            let deleted_info = self.event_info(record, None);
            if let Some(info) = self.baselines.get_mut(&baseline_key(&deleted.name)) {
                info.deleted = Some(deleted_info);
            }
        } else if record.event_type == cmdb_core::chain::REDACTION_APPLIED {
            self.redactions_applied += 1;
        }
        if self.times.last().is_none_or(|(_, t)| *t != record.recorded_at) {
            self.times.push((p, record.recorded_at));
        } else if let Some(last) = self.times.last_mut() {
            last.0 = p;
        }
        if record.commit.events > 1 && record.commit.first_position == p {
            self.multi_event_commits.push((p, record.commit.last_position()));
        }
        self.applied = p;
        self.applied_hash = record.hash;
        Ok(())
    }

    /// `text` shared with every other use of it in the graph (principals, event types): a
    /// few values make millions of entries.
    fn shared(&mut self, text: &str) -> Arc<str> {
        match self.shared_text.get(text) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = Arc::from(text);
                self.shared_text.insert(shared.clone());
                shared
            }
        }
    }

    /// Who did what at `record`, with its strings shared.
    fn event_info(&mut self, record: &FoldRecord, authorized_by: Option<ChangeId>) -> EventInfo {
        EventInfo {
            position: record.position,
            recorded_at: record.recorded_at,
            event_type: self.shared(&record.event_type),
            principal: self.shared(&record.principal),
            authorized_by,
        }
    }

    fn history_entry(&mut self, record: &FoldRecord, event: &CiEvent, relationship: Option<RelId>) -> HistoryEntry {
        self.history_of(record, HistoryKind::of(event), event.authorized_by(), relationship)
    }

    fn history_of(
        &mut self,
        record: &FoldRecord,
        kind: HistoryKind,
        authorized_by: Option<ChangeId>,
        relationship: Option<RelId>,
    ) -> HistoryEntry {
        HistoryEntry {
            position: record.position,
            recorded_at: record.recorded_at,
            event_type: kind,
            principal: self.shared(&record.principal),
            correlation_id: record.correlation_id.clone(),
            authorized_by,
            relationship,
        }
    }

    /// Applies a CI event; a registration is taken by value, so the CI's first version keeps
    /// the attributes that were decoded rather than a copy of them.
    fn apply_ci_event(&mut self, record: &FoldRecord, event: CiEvent) -> Result<(), GraphError> {
        match event {
            CiEvent::Registered(registered) => {
                let history = self.history_of(record, HistoryKind::Registered, registered.authorized_by, None);
                self.register_ci(record.position, *registered, history);
                Ok(())
            }
            other => self.apply_ci_change(record, &other),
        }
    }

    fn register_ci(&mut self, p: u64, registered: CiRegistered, history: HistoryEntry) {
        let (ci_id, class, authorized_by) = (registered.ci_id, registered.class, registered.authorized_by);
        let key = name_index_key(&NameKey::new(class, &registered.name));
        let snapshot = Arc::new(CiSnapshot::from(registered));
        let node = self.graph.add_node(CiEntry {
            versions: vec![CiVersion { from: p, to: OPEN, ci: snapshot }],
            history: vec![history],
        });
        self.cis.insert(ci_id, node);
        self.set_alive(node);
        self.note_service_head(node);
        self.refresh_head_thresholds([node], p);
        self.changes.push((p, Touched::Ci(node)));
        self.by_class.entry(class).or_default().push(ci_id);
        if let Some(change) = authorized_by {
            self.registered_under.entry(change).or_default().push(ci_id);
        }
        self.names.entry(key).or_default().push((p, OPEN, ci_id));
    }

    /// Applies a CI event other than a registration.
    fn apply_ci_change(&mut self, record: &FoldRecord, event: &CiEvent) -> Result<(), GraphError> {
        let p = record.position;
        let missing = |what: String| GraphError::Apply { position: p, detail: what };
        match event {
            // `apply_ci_event` applies registrations itself, by value.
            CiEvent::Registered(_) => return Err(missing("a registration on the path of changes".into())),
            CiEvent::Updated(_) | CiEvent::StatusChanged(_) | CiEvent::Withdrawn(_) => {
                let id = match event {
                    CiEvent::Updated(u) => u.ci_id,
                    CiEvent::StatusChanged(c) | CiEvent::Withdrawn(c) => Some(c.ci_id),
                    _ => None,
                };
                let id = id.ok_or_else(|| missing("an update without a CI id".into()))?;
                let node = *self.cis.get(&id).ok_or_else(|| missing(format!("CI {id} was never registered")))?;
                self.changes.push((p, Touched::Ci(node)));
                let was_present = self.head_hops.is_some() && self.alive_at(node, p);
                let history = self.history_entry(record, event, None);
                let entry = &mut self.graph[node];
                let current = entry.versions.last_mut().ok_or_else(|| missing(format!("CI {id} has no version")))?;
                let mut next = (*current.ci).clone();
                next.evolve(event);
                let renamed_or_withdrawn = next.name != current.ci.name || next.status == Status::Withdrawn;
                current.to = p;
                if renamed_or_withdrawn {
                    // The key is built only here: most updates keep the name, and a key is a
                    // lower-cased copy of it.
                    let old_key = name_index_key(&NameKey::new(next.class, &current.ci.name));
                    if let Some(interval) =
                        self.names.get_mut(&old_key).and_then(|v| v.iter_mut().rev().find(|i| i.2 == id))
                    {
                        interval.1 = p;
                    }
                    if next.status != Status::Withdrawn {
                        let key = name_index_key(&NameKey::new(next.class, &next.name));
                        self.names.entry(key).or_default().push((p, OPEN, id));
                    }
                }
                let status = next.status;
                entry.versions.push(CiVersion { from: p, to: OPEN, ci: Arc::new(next) });
                entry.history.push(history);
                match self.alive.get_mut(node.index()) {
                    Some(alive) => alive.record(p, status),
                    None => self.set_alive(node),
                }
                self.note_settled(node);
                self.note_service_head(node);
                if self.head_hops.is_some() && was_present != self.alive_at(node, p) {
                    // Withdrawn (or back): the lists that lead to it change, and so do the
                    // member counts of the groups it is a member of.
                    let leading: Vec<NodeIndex> =
                        self.hops.of(node, ImpactDirection::Upstream).iter().map(|hop| hop.to).collect();
                    self.refresh_head_lists(&leading, p);
                    let groups: Vec<NodeIndex> = self
                        .hops
                        .of(node, ImpactDirection::Downstream)
                        .iter()
                        .filter(|hop| hop.into_group)
                        .map(|hop| hop.to)
                        .collect();
                    self.refresh_head_thresholds(groups, p);
                }
                // Its own threshold may change with its attributes or its presence.
                self.refresh_head_thresholds([node], p);
            }
            CiEvent::Linked(link) => {
                if let Some(node) = self.cis.get(&link.ci_id).copied() {
                    let history = self.history_entry(record, event, Some(link.rel_id));
                    self.graph[node].history.push(history);
                }
            }
            CiEvent::Unlinked(unlink) => {
                if let Some(node) = self.cis.get(&unlink.ci_id).copied() {
                    let history = self.history_entry(record, event, Some(unlink.rel_id));
                    self.graph[node].history.push(history);
                }
            }
            CiEvent::RelationshipCreated(created) => self.relationship_created(record, created)?,
            CiEvent::RelationshipRemoved(removed) => self.relationship_removed(record, removed)?,
            CiEvent::NameClaimed(_) | CiEvent::NameReleased(_) => {}
        }
        Ok(())
    }

    fn relationship_created(&mut self, record: &FoldRecord, created: &RelationshipCreated) -> Result<(), GraphError> {
        let p = record.position;
        let missing = |what: String| GraphError::Apply { position: p, detail: what };
        let RelationshipCreated { rel_id, rel_type, source, target, authorized_by } = created;
        let (Some(s), Some(t)) = (self.cis.get(source).copied(), self.cis.get(target).copied()) else {
            return Err(missing(format!("relationship {rel_id} joins an unknown CI")));
        };
        let created_info = self.event_info(record, *authorized_by);
        let edge = self.graph.add_edge(
            s,
            t,
            Relationship {
                id: *rel_id,
                rel_type: *rel_type,
                source: *source,
                target: *target,
                from: p,
                to: OPEN,
                created_by: *authorized_by,
                removed_by: None,
                created: created_info,
                removed: None,
            },
        );
        self.rels.insert(*rel_id, edge);
        self.hops.add(s, t, edge, *rel_type, (p, OPEN));
        self.refresh_head_lists(&[s, t], p);
        self.changes.push((p, Touched::Relationship(edge)));
        Ok(())
    }

    fn relationship_removed(
        &mut self,
        record: &FoldRecord,
        removed: &cmdb_core::ci::RelationshipRemoved,
    ) -> Result<(), GraphError> {
        let p = record.position;
        let missing = |what: String| GraphError::Apply { position: p, detail: what };
        let edge = *self
            .rels
            .get(&removed.rel_id)
            .ok_or_else(|| missing(format!("relationship {} unknown", removed.rel_id)))?;
        let info = self.event_info(record, removed.authorized_by);
        let rel = &mut self.graph[edge];
        rel.to = p;
        rel.removed_by = removed.authorized_by;
        rel.removed = Some(Box::new(info));
        let (rel_type, from) = (rel.rel_type, rel.from);
        if let Some(ends) = self.graph.edge_endpoints(edge) {
            self.hops.close(ends, edge, rel_type, from, p);
            self.refresh_head_lists(&[ends.0, ends.1], p);
        }
        self.changes.push((p, Touched::Relationship(edge)));
        Ok(())
    }

    /// Change requests and templates.
    pub fn change_book_mut(&mut self) -> &mut ChangeBook {
        &mut self.change_book
    }

    /// The release book, to rebuild what checkpoints leave out.
    pub fn release_book_mut(&mut self) -> &mut crate::releases::ReleaseBook {
        &mut self.release_book
    }

    /// Releases, deployments and pipeline templates.
    pub fn release_book(&self) -> &crate::releases::ReleaseBook {
        &self.release_book
    }

    /// Discovery runs, audits and rules.
    pub fn discovery(&self) -> &crate::discovery_book::DiscoveryBook {
        &self.discovery
    }

    /// Every CI id ever registered, by class then registration.
    pub fn ci_ids(&self) -> impl Iterator<Item = CiId> + '_ {
        self.by_class.values().flatten().copied()
    }

    /// The change book (changes, templates, freezes).
    pub fn change_book(&self) -> &ChangeBook {
        &self.change_book
    }

    /// The CI edits `change` authorised up to `position`, in log order: every event in the
    /// history of a CI of its scope (or registered under it) that names the change, directly or
    /// through the relationship it created or removed.
    pub fn edits_under(&self, change: ChangeId, scope: &[CiId], position: u64) -> Vec<(CiId, &HistoryEntry)> {
        let mut cis: Vec<CiId> = scope.to_vec();
        cis.extend(self.registered_under.get(&change).into_iter().flatten().copied());
        cis.sort_unstable();
        cis.dedup();
        let mut edits: Vec<(CiId, &HistoryEntry)> = Vec::new();
        for id in cis {
            let Some(node) = self.cis.get(&id) else { continue };
            for entry in self.graph[*node].history.iter().take_while(|h| h.position <= position) {
                let by_relationship =
                    entry.relationship.and_then(|rel| self.relationship(rel)).and_then(|rel| match entry.event_type {
                        HistoryKind::RelationshipAdded => rel.created_by,
                        _ => rel.removed_by,
                    });
                if entry.authorized_by == Some(change) || by_relationship == Some(change) {
                    edits.push((id, entry));
                }
            }
        }
        edits.sort_by_key(|(_, entry)| entry.position);
        edits
    }

    /// The last position whose event was recorded at or before `time`.
    pub fn position_at(&self, time: Timestamp) -> Result<u64, GraphError> {
        // Before the first event (or on an empty log) the estate is empty: position 0, as the
        // store's own `position_at` says.
        let count = self.times.partition_point(|(_, t)| *t <= time);
        Ok(count.checked_sub(1).map_or(0, |last| self.times[last].0))
    }

    /// When the event at `position` was recorded (the last one's time past the head; `None`
    /// at position 0: nothing was). `times` keeps runs: (the last position recorded at a time,
    /// that time).
    pub fn time_of(&self, position: u64) -> Option<Timestamp> {
        if position == 0 {
            return None;
        }
        let count = self.times.partition_point(|(p, _)| *p < position);
        self.times.get(count).map(|(_, t)| *t).or_else(|| self.times.last().map(|(_, t)| *t))
    }

    /// The position a read asked at `position` happens at: the end of the commit (atomic
    /// append) that holds `position`, so no read shows part of one command; or, while that
    /// commit is not yet wholly applied, the position before it. Every position this answers
    /// is the end of a commit (or 0).
    pub fn whole_commit(&self, position: u64) -> u64 {
        let after = self.multi_event_commits.partition_point(|(first, _)| *first <= position);
        match after.checked_sub(1).map(|i| self.multi_event_commits[i]) {
            Some((first, last)) if position < last => {
                if last <= self.applied {
                    last
                } else {
                    first - 1
                }
            }
            _ => position,
        }
    }

    /// The commits of more than one event applied, as (first, last) positions.
    pub fn multi_event_commits(&self) -> &[(u64, u64)] {
        &self.multi_event_commits
    }

    /// Checks that `position` is one this graph can answer for.
    pub fn check_position(&self, position: u64) -> Result<(), GraphError> {
        if position > self.applied {
            return Err(GraphError::PositionAhead { asked: position, applied: self.applied });
        }
        Ok(())
    }

    /// A CI as it was at `position`.
    pub fn ci_at(&self, id: CiId, position: u64) -> Option<Arc<CiSnapshot>> {
        self.ci_and_node_at(id, position).map(|(ci, _)| ci)
    }

    fn entry(&self, id: CiId) -> Option<&CiEntry> {
        self.cis.get(&id).map(|node| &self.graph[*node])
    }

    /// The CI at a node at `position`, if it exists there and is not withdrawn.
    fn present(&self, node: NodeIndex, position: u64) -> Option<&Arc<CiSnapshot>> {
        version_at(&self.graph[node].versions, position).map(|v| &v.ci).filter(|ci| ci.status != Status::Withdrawn)
    }

    /// A CI's class (it never changes), if the CI was ever registered.
    pub fn class_of(&self, id: CiId) -> Option<CiClass> {
        self.cis.get(&id).and_then(|node| self.graph[*node].versions.first()).map(|v| v.ci.class)
    }

    /// A CI's newest version, whatever position it is read at: what a replay that stopped at
    /// the applied position would hold.
    pub fn latest_ci(&self, id: CiId) -> Option<Arc<CiSnapshot>> {
        self.entry(id).and_then(|e| e.versions.last()).map(|v| v.ci.clone())
    }

    /// The version of a CI valid at `position`, with its interval.
    pub fn version_at(&self, id: CiId, position: u64) -> Option<&CiVersion> {
        self.entry(id).and_then(|e| version_at(&e.versions, position))
    }

    /// The CI that held (class, name) at `position` (not withdrawn).
    pub fn ci_by_name(&self, class: CiClass, name: &str, position: u64) -> Option<Arc<CiSnapshot>> {
        let key = name_index_key(&NameKey::new(class, name));
        let intervals = self.names.get(&key)?;
        let (_, _, id) = intervals.iter().rev().find(|(from, to, _)| *from <= position && position < *to)?;
        self.ci_at(*id, position)
    }

    /// Every version of a CI, oldest first, and its full history.
    pub fn history(&self, id: CiId) -> Option<(&[CiVersion], &[HistoryEntry])> {
        self.entry(id).map(|e| (e.versions.as_slice(), e.history.as_slice()))
    }

    /// CIs present at `position` (withdrawn ones included) counted by class and status.
    pub fn ci_tally_at(&self, position: u64) -> BTreeMap<(CiClass, Status), u64> {
        let mut tally = BTreeMap::new();
        for (class, ids) in &self.by_class {
            for id in ids {
                if let Some(ci) = self.ci_at(*id, position) {
                    *tally.entry((*class, ci.status)).or_insert(0) += 1;
                }
            }
        }
        tally
    }

    /// CIs at `position` matching `filter`, ordered by id (registration order for UUIDv7),
    /// after the `after` id, at most `limit`. Returns the page and whether more follow.
    pub fn cis_at(
        &self,
        position: u64,
        filter: &CiFilter,
        after: Option<CiId>,
        limit: usize,
    ) -> (Vec<Arc<CiSnapshot>>, bool) {
        self.cis_page(position, filter, CiPage::After(after), limit)
    }

    /// A page of CIs at `position` matching `filter`, in id order: the first `limit` after a
    /// cursor, or the last `limit` before one (Relay's `last`/`before`). Returns the page in id
    /// order and whether more lie beyond it in the direction read.
    pub fn cis_page(
        &self,
        position: u64,
        filter: &CiFilter,
        page: CiPage,
        limit: usize,
    ) -> (Vec<Arc<CiSnapshot>>, bool) {
        let classes: Vec<CiClass> = filter.classes.clone().unwrap_or_else(|| self.by_class.keys().copied().collect());
        let mut ids: Vec<CiId> = classes.iter().filter_map(|c| self.by_class.get(c)).flatten().copied().collect();
        ids.sort_unstable();
        let needle = filter.name_contains.as_ref().map(|n| n.to_lowercase());
        let matches = |ci: &CiSnapshot| {
            let status_ok = match &filter.statuses {
                Some(statuses) => statuses.contains(&ci.status),
                None => filter.include_withdrawn || ci.status != Status::Withdrawn,
            };
            let environment_ok =
                filter.environments.as_ref().is_none_or(|envs| ci.environment.is_some_and(|e| envs.contains(&e)));
            let attribute_ok =
                filter.attribute.as_ref().is_none_or(|(name, value)| ci.attributes.get(name) == Some(value));
            let name_ok = needle.as_ref().is_none_or(|n| ci.name.to_lowercase().contains(n));
            status_ok && environment_ok && attribute_ok && name_ok
        };
        let candidates: Box<dyn Iterator<Item = &CiId>> = match page {
            CiPage::After(after) => Box::new(ids[after.map_or(0, |a| ids.partition_point(|id| *id <= a))..].iter()),
            CiPage::Before(before) => {
                Box::new(ids[..before.map_or(ids.len(), |b| ids.partition_point(|id| *id < b))].iter().rev())
            }
        };
        let mut found = Vec::new();
        for id in candidates {
            let Some(ci) = self.ci_at(*id, position) else { continue };
            if matches(&ci) {
                if found.len() == limit {
                    if matches!(page, CiPage::Before(_)) {
                        found.reverse();
                    }
                    return (found, true);
                }
                found.push(ci);
            }
        }
        if matches!(page, CiPage::Before(_)) {
            found.reverse();
        }
        (found, false)
    }

    /// Relationships valid at `position`, optionally only those touching `ci` or of `types`.
    pub fn relationships_at(&self, position: u64, ci: Option<CiId>, types: Option<&[RelType]>) -> Vec<&Relationship> {
        let wanted = |rel: &Relationship| rel.valid_at(position) && types.is_none_or(|t| t.contains(&rel.rel_type));
        let mut found: Vec<&Relationship> = match ci {
            Some(id) => {
                let Some(node) = self.cis.get(&id) else { return Vec::new() };
                self.graph
                    .edges_directed(*node, EdgeDirection::Outgoing)
                    .chain(self.graph.edges_directed(*node, EdgeDirection::Incoming))
                    .map(|edge| edge.weight())
                    .filter(|rel| wanted(rel))
                    .collect()
            }
            None => self.graph.edge_weights().filter(|rel| wanted(rel)).collect(),
        };
        found.sort_by_key(|rel| rel.id);
        found
    }

    /// A relationship by id, whatever its interval.
    pub fn relationship(&self, id: RelId) -> Option<&Relationship> {
        self.rels.get(&id).map(|edge| &self.graph[*edge])
    }

    /// The hops a failure takes from `node` at `position` in `direction`, across
    /// relationships of `types` only if given (all propagating types otherwise).
    #[inline]
    fn hops_at<'a>(
        &'a self,
        node: NodeIndex,
        position: u64,
        direction: ImpactDirection,
        types: Option<&'a [RelType]>,
    ) -> impl Iterator<Item = &'a Hop> + 'a {
        self.hops
            .of(node, direction)
            .iter()
            .filter(move |hop| hop.valid_at(position) && types.is_none_or(|t| t.contains(&hop.rel_type)))
    }

    /// Every CI joined to `node` at `position` by a relationship (of `types` if given),
    /// whichever way it points and whether or not a failure crosses it: the relationship and
    /// the node at its other end.
    fn neighbours_any<'a>(
        &'a self,
        node: NodeIndex,
        position: u64,
        types: Option<&'a [RelType]>,
    ) -> impl Iterator<Item = (EdgeIndex, NodeIndex)> + 'a {
        let outgoing = self.graph.edges_directed(node, EdgeDirection::Outgoing).map(|e| (e, true));
        let incoming = self.graph.edges_directed(node, EdgeDirection::Incoming).map(|e| (e, false));
        outgoing.chain(incoming).filter_map(move |(edge, node_is_source)| {
            let rel = edge.weight();
            if !rel.valid_at(position) || types.is_some_and(|t| !t.contains(&rel.rel_type)) {
                return None;
            }
            Some((edge.id(), if node_is_source { edge.target() } else { edge.source() }))
        })
    }

    /// The neighbours of `node` a walk in `direction` goes to (any neighbour if `None`).
    fn neighbours(
        &self,
        node: NodeIndex,
        position: u64,
        direction: Option<ImpactDirection>,
        types: Option<&[RelType]>,
    ) -> Vec<(EdgeIndex, NodeIndex)> {
        match direction {
            Some(direction) => self.hops_at(node, position, direction, types).map(|h| (h.edge, h.to)).collect(),
            None => self.neighbours_any(node, position, types).collect(),
        }
    }

    fn step(&self, edge: EdgeIndex, to: NodeIndex) -> Step {
        let rel = &self.graph[edge];
        let ci = if self.cis.get(&rel.target) == Some(&to) { rel.target } else { rel.source };
        Step { relationship: rel.id, rel_type: rel.rel_type, ci }
    }

    /// Impact analysis from `root` at `position`: breadth first, so each CI is reached at its
    /// least depth with one shortest path; cycle-safe (each CI visited once; cycles reported).
    pub fn impact(&self, root: CiId, position: u64, traversal: &Traversal) -> Result<Impact, GraphError> {
        self.impact_of(&[root], position, traversal)
    }

    /// Impact analysis of `roots` failing together at `position` (or, upstream, what any of them
    /// depends on): breadth first from all of them, so each CI is reached at its least depth
    /// from the nearest root with one shortest path; a redundant group two roots belong to
    /// counts both. Repeated roots count once; at most [`MAX_IMPACT_ROOTS`], each present at
    /// `position`.
    pub fn impact_of(&self, roots: &[CiId], position: u64, traversal: &Traversal) -> Result<Impact, GraphError> {
        traversal.validate()?;
        self.check_position(position)?;
        if roots.is_empty() || roots.len() > MAX_IMPACT_ROOTS {
            return Err(GraphError::Roots(roots.len()));
        }
        let types = traversal.types.as_deref();
        // The walk: (node, parent node, edge crossed, depth), the roots first (each its own
        // parent); `visits` maps a node to its index there.
        let mut walk: Vec<WalkStep> = Vec::with_capacity(roots.len());
        let mut visits = Visits::new(self.graph.node_bound());
        let mut root_cis = Vec::with_capacity(roots.len());
        for root in roots {
            let node = *self.cis.get(root).ok_or(GraphError::UnknownCi { ci: *root, position })?;
            let ci = version_at(&self.graph[node].versions, position)
                .map(|v| v.ci.clone())
                .ok_or(GraphError::UnknownCi { ci: *root, position })?;
            if visits.get(node).is_none() {
                visits.insert(node, walk.len() as u32);
                walk.push(WalkStep { node, parent: node, edge: EdgeIndex::end(), depth: 0 });
                root_cis.push(ci);
            }
        }
        let root_count = walk.len();
        let mut next = 0;
        let mut cycles: Vec<Vec<CiId>> = Vec::new();
        let mut truncated = false;
        'walk: while let Some(&WalkStep { node: current, depth, .. }) = walk.get(next) {
            next += 1;
            if depth >= traversal.max_depth {
                continue;
            }
            for hop in self.hops_at(current, position, traversal.direction, types) {
                let other = hop.to;
                if let Some(index) = visits.get(other) {
                    // Already reached: a cycle if `other` is on the path to `current`, which
                    // only a shallower node can be (most such edges are cross edges).
                    if cycles.len() < MAX_CYCLES_REPORTED
                        && walk[index as usize].depth < depth
                        && let Some(cycle) = self.cycle_through(&walk, &visits, current, other)
                        && !cycles.contains(&cycle)
                    {
                        cycles.push(cycle);
                    }
                    continue;
                }
                if !self.alive_at(other, position) {
                    continue;
                }
                if walk.len() - root_count == traversal.max_results {
                    truncated = true;
                    break 'walk;
                }
                visits.insert(other, walk.len() as u32);
                walk.push(WalkStep { node: other, parent: current, edge: hop.edge, depth: depth + 1 });
            }
        }
        let root_nodes: Vec<NodeIndex> = walk[..root_count].iter().map(|step| step.node).collect();
        let id_of = |node: NodeIndex| self.graph[node].versions[0].ci.id;
        let severities = (traversal.direction == ImpactDirection::Downstream)
            .then(|| self.severities(&root_nodes, position, types, |n| visits.contains(n)));
        let reached_count = walk.len() - root_count;
        let mut parents = HashMap::with_capacity(reached_count);
        let mut causes = HashMap::with_capacity(if severities.is_some() { reached_count } else { 0 });
        let mut reached = Vec::with_capacity(reached_count);
        let mut services = Vec::new();
        for &WalkStep { node, parent: bfs_parent, edge: bfs_edge, depth } in &walk[root_count..] {
            let Some(ci) = self.present(node, position).cloned() else { continue };
            let found = severities.as_ref().and_then(|s| s.get(node));
            debug_assert!(severities.is_none() || found.is_some(), "every CI a downstream walk reaches has a severity");
            let severity = found.map(|(s, _)| *s);
            let rel = &self.graph[bfs_edge];
            parents.insert(ci.id, (id_of(bfs_parent), rel.id, rel.rel_type));
            if let Some((from, edge)) = found.and_then(|(_, cause)| *cause) {
                let rel = &self.graph[edge];
                causes.insert(ci.id, (id_of(from), rel.id, rel.rel_type));
            }
            if ci.class == CiClass::BusinessService {
                services.push(ServiceHit { ci: ci.clone(), tier: tier_of(&ci), depth, severity });
            }
            reached.push(Reached { ci, depth, severity });
        }
        Ok(Impact {
            root: root_cis[0].clone(),
            roots: root_cis,
            position,
            direction: traversal.direction,
            reached,
            services,
            truncated,
            cycles,
            parents,
            causes,
        })
    }

    /// The shortest chain of at most `max_hops` relationships along which a failure of one of
    /// `from` travels (in `direction`) to one of `to`, at `position`; `None` if there is none
    /// within the budget or `max_visited` CIs were seen first. Bidirectional: each step grows
    /// the smaller frontier, so a hub on one side is crossed only if the other side cannot
    /// meet it sooner. Shared CIs are a chain of one.
    pub fn chain_within(
        &self,
        from: &[CiId],
        to: &[CiId],
        position: u64,
        direction: ImpactDirection,
        max_hops: u32,
        max_visited: usize,
    ) -> Option<Vec<CiId>> {
        let opposite = match direction {
            ImpactDirection::Downstream => ImpactDirection::Upstream,
            ImpactDirection::Upstream => ImpactDirection::Downstream,
        };
        let start = |ids: &[CiId]| {
            let mut seen: FxHashMap<NodeIndex, Option<NodeIndex>> = FxHashMap::default();
            let mut frontier = Vec::new();
            for id in ids {
                if let Some(node) = self.cis.get(id)
                    && self.present(*node, position).is_some()
                    && seen.insert(*node, None).is_none()
                {
                    frontier.push(*node);
                }
            }
            (seen, frontier)
        };
        let (mut forward, mut forward_frontier) = start(from);
        let (mut backward, mut backward_frontier) = start(to);
        let id_of = |node: NodeIndex| self.graph[node].versions[0].ci.id;
        let chain = |meet: NodeIndex,
                     forward: &FxHashMap<NodeIndex, Option<NodeIndex>>,
                     backward: &FxHashMap<NodeIndex, Option<NodeIndex>>| {
            let mut head = vec![id_of(meet)];
            let mut cursor = meet;
            while let Some(Some(parent)) = forward.get(&cursor) {
                head.push(id_of(*parent));
                cursor = *parent;
            }
            head.reverse();
            let mut cursor = meet;
            while let Some(Some(next)) = backward.get(&cursor) {
                head.push(id_of(*next));
                cursor = *next;
            }
            head
        };
        if let Some(shared) = forward_frontier.iter().find(|n| backward.contains_key(n)) {
            return Some(vec![id_of(*shared)]);
        }
        let mut hops = 0;
        while hops < max_hops && !forward_frontier.is_empty() && !backward_frontier.is_empty() {
            hops += 1;
            let grow_forward = forward_frontier.len() <= backward_frontier.len();
            let (seen, frontier, other, towards) = if grow_forward {
                (&mut forward, &mut forward_frontier, &backward, direction)
            } else {
                (&mut backward, &mut backward_frontier, &forward, opposite)
            };
            let mut next = Vec::new();
            let mut met = None;
            'grow: for node in std::mem::take(frontier) {
                for neighbour in self.hops_at(node, position, towards, None).map(|h| h.to) {
                    if seen.contains_key(&neighbour) || !self.alive_at(neighbour, position) {
                        continue;
                    }
                    seen.insert(neighbour, Some(node));
                    if other.contains_key(&neighbour) {
                        met = Some(neighbour);
                        break 'grow;
                    }
                    if seen.len() + other.len() > max_visited {
                        return None;
                    }
                    next.push(neighbour);
                }
            }
            *frontier = next;
            if let Some(meet) = met {
                return Some(chain(meet, &forward, &backward));
            }
        }
        None
    }

    /// A breadth-first walk from `roots` at `position` in `direction`, remembering each CI's
    /// parent (`None` for a root) and depth, at most `max_results` CIs besides the roots.
    pub fn walk_with_parents(
        &self,
        roots: &[CiId],
        position: u64,
        direction: ImpactDirection,
        max_depth: u32,
        max_results: usize,
    ) -> (FxHashMap<CiId, (Option<CiId>, u32)>, bool) {
        let mut seen: FxHashMap<CiId, (Option<CiId>, u32)> = FxHashMap::default();
        let mut queue = VecDeque::new();
        for root in roots {
            if let Some(node) = self.cis.get(root)
                && self.present(*node, position).is_some()
                && !seen.contains_key(root)
            {
                seen.insert(*root, (None, 0));
                queue.push_back((*node, *root, 0));
            }
        }
        let mut found = 0;
        while let Some((node, id, depth)) = queue.pop_front() {
            if depth >= max_depth {
                continue;
            }
            for other in self.hops_at(node, position, direction, None).map(|h| h.to) {
                let Some(ci) = self.present(other, position) else { continue };
                if seen.contains_key(&ci.id) {
                    continue;
                }
                if found == max_results {
                    return (seen, true);
                }
                found += 1;
                seen.insert(ci.id, (Some(id), depth + 1));
                queue.push_back((other, ci.id, depth + 1));
            }
        }
        (seen, false)
    }

    /// The cycle closed by an edge from `current` to the already visited `other`, if `other`
    /// is an ancestor of `current` (or `current` itself).
    fn cycle_through(
        &self,
        walk: &[WalkStep],
        visits: &Visits,
        current: NodeIndex,
        other: NodeIndex,
    ) -> Option<Vec<CiId>> {
        // Most edges to visited nodes are cross edges, not cycles: look before allocating.
        let mut cursor = current;
        while cursor != other {
            let parent = walk[visits.get(cursor)? as usize].parent;
            if parent == cursor {
                return None; // a root: `other` is not on the path to `current`
            }
            cursor = parent;
        }
        let id_of = |node: NodeIndex| self.graph[node].versions[0].ci.id;
        let mut chain = vec![id_of(current)];
        let mut cursor = current;
        while cursor != other {
            cursor = walk[visits.get(cursor)? as usize].parent;
            chain.push(id_of(cursor));
        }
        if chain.len() < 2 && other != current {
            return None;
        }
        chain.reverse();
        chain.push(id_of(other));
        Some(chain)
    }

    /// One shortest path from `from` to `to` at `position` along the traversal's direction
    /// (following any relationship when `direction` is `None`), within `max_depth`.
    pub fn path(
        &self,
        from: CiId,
        to: CiId,
        position: u64,
        direction: Option<ImpactDirection>,
        max_depth: u32,
        types: Option<&[RelType]>,
    ) -> Result<Option<Vec<Step>>, GraphError> {
        if max_depth == 0 || max_depth > MAX_DEPTH {
            return Err(GraphError::Depth(max_depth));
        }
        self.check_position(position)?;
        let mut nodes = [NodeIndex::end(); 2];
        for (slot, id) in nodes.iter_mut().zip([from, to]) {
            *slot = *self.cis.get(&id).ok_or(GraphError::UnknownCi { ci: id, position })?;
            if version_at(&self.graph[*slot].versions, position).is_none() {
                return Err(GraphError::UnknownCi { ci: id, position });
            }
        }
        let [start, goal] = nodes;
        if start == goal {
            return Ok(Some(Vec::new()));
        }
        let mut parent: FxHashMap<NodeIndex, (NodeIndex, EdgeIndex)> = FxHashMap::default();
        let mut seen: FxHashSet<NodeIndex> = FxHashSet::default();
        seen.insert(start);
        let mut frontier = vec![start];
        for _ in 0..max_depth {
            let mut next = Vec::new();
            for current in frontier {
                for (edge, other) in self.neighbours(current, position, direction, types) {
                    if !seen.insert(other) || !self.alive_at(other, position) && other != goal {
                        continue;
                    }
                    parent.insert(other, (current, edge));
                    if other == goal {
                        let mut path = Vec::new();
                        let mut cursor = goal;
                        while let Some((up, edge)) = parent.get(&cursor) {
                            path.push(self.step(*edge, cursor));
                            cursor = *up;
                        }
                        path.reverse();
                        return Ok(Some(path));
                    }
                    next.push(other);
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(None)
    }
}
