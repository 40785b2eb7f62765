//! The configuration audit (CM-7; issue 17, part 3); the book it reads is `discovery_book`.
//!
//! [`reconcile`] compares a finished run with the graph at a position and yields
//! the findings: observed but not in the CMDB, in the CMDB (from the run's source and scope)
//! but no longer observed, drift of an attribute the source is authoritative for, and
//! relationship drift. Each finding says which change, if any, authorised it: one whose scope
//! covers the CI (or plans it, for a CI not yet recorded) and whose implementation had started
//! when the source observed, and was still going or finished after the CI's record last
//! changed. The findings' digest is what an audit records; reading an audit recomputes them
//! from the log and checks the digest.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cmdb_core::change::ChangeState;
use cmdb_core::discovery::{FindingCounts, SourceKind, scope_prefix};
use cmdb_core::ids::{ChangeId, CiId};
use cmdb_core::model::normalized_name;
use cmdb_core::model::{CiClass, RelType, Status};
use cmdb_core::{Hash, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::discovery_book::{AuditInfo, DiscoveryBook, RunInfo};
use crate::graph::TemporalGraph;

/// The CI attribute holding an item's identity.
pub const EXTERNAL_ID: &str = "external_id";

/// What kind of finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Observed, not in the CMDB.
    NotInCmdb,
    /// In the CMDB, no longer observed.
    NotObserved,
    /// An authoritative attribute differs.
    AttributeDrift,
    /// A relationship observed but not recorded, or recorded but no longer observed.
    RelationshipDrift,
}

/// One finding of a configuration audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Its kind.
    pub kind: FindingKind,
    /// The identity of the item.
    pub external_id: String,
    /// The CI it concerns, when the CMDB has one.
    pub ci: Option<CiId>,
    /// The class (the CI's, else the mapped one).
    pub class: CiClass,
    /// The name (the CI's, else the mapped one).
    pub name: String,
    /// The attribute that drifted.
    pub attribute: Option<String>,
    /// What the CMDB records (the attribute's value; for a relationship, `true` when recorded).
    pub recorded: Option<Value>,
    /// What the source observed.
    pub observed: Option<Value>,
    /// The relationship: its type and the other end's identity.
    pub relationship: Option<(RelType, String)>,
    /// The change that authorised it, if any.
    pub authorised_by: Option<ChangeId>,
    /// That change's label (`CHG-000042`).
    pub authorised_by_label: Option<String>,
}

/// The findings of a run against the graph at `position`, in canonical order (kind, identity,
/// attribute, relationship).
pub fn reconcile(graph: &TemporalGraph, run: &RunInfo, position: u64) -> Vec<Finding> {
    let rules = graph.discovery().rules_version(run.started.rules_version).of(run.started.source);
    let observed_at = run.started.observed_at;
    let looked_before = looked_before(graph, run);
    let authority = Authority::at(graph, position, observed_at, looked_before);
    let prefix = scope_prefix(run.started.source, &run.started.scope);
    let recorded = recorded_items(graph, position, &prefix);
    let mut findings = Vec::new();
    let observations = &run.observations;
    for (id, item) in &observations.items {
        match recorded.get(id) {
            None => findings.push(
                Finding {
                    kind: FindingKind::NotInCmdb,
                    external_id: id.clone(),
                    ci: None,
                    class: item.class,
                    name: item.name.clone(),
                    attribute: None,
                    recorded: None,
                    observed: None,
                    relationship: None,
                    authorised_by: None,
                    authorised_by_label: None,
                }
                .authorised(authority.for_planned(item.class, &item.name)),
            ),
            Some(ci) => {
                for (attribute, value) in &item.attributes {
                    if !rules.owns(attribute) {
                        continue;
                    }
                    let current = ci.attributes.get(attribute);
                    if current != Some(value) {
                        let by = authority.for_ci(graph, ci.id, position);
                        findings.push(
                            Finding {
                                kind: FindingKind::AttributeDrift,
                                external_id: id.clone(),
                                ci: Some(ci.id),
                                class: ci.class,
                                name: ci.name.to_string(),
                                attribute: Some(attribute.clone()),
                                recorded: current.cloned(),
                                observed: Some(value.clone()),
                                relationship: None,
                                authorised_by: None,
                                authorised_by_label: None,
                            }
                            .authorised(by),
                        );
                    }
                }
            }
        }
    }
    for (id, ci) in &recorded {
        if !observations.items.contains_key(id) {
            let by = authority.for_ci(graph, ci.id, position);
            findings.push(Finding::new(FindingKind::NotObserved, id, Some(ci.id), ci.class, &ci.name).authorised(by));
        }
    }
    relationship_drift(graph, run, &rules, &recorded, position, &authority, &mut findings);
    findings.sort_by(|a, b| {
        (a.kind, &a.external_id, &a.attribute, &a.relationship).cmp(&(
            b.kind,
            &b.external_id,
            &b.attribute,
            &b.relationship,
        ))
    });
    findings
}

/// The last time the source looked at the run's scope before it: the previous runs' and
/// audits' times. Drift found now happened since.
fn looked_before(graph: &TemporalGraph, run: &RunInfo) -> Option<Timestamp> {
    graph
        .discovery()
        .runs
        .values()
        .filter(|r| {
            r.started.source == run.started.source
                && r.started.scope == run.started.scope
                && r.started_position < run.started_position
                && r.finished_by(run.started_position).is_some()
        })
        .map(|r| r.started.observed_at)
        .chain(
            // An audit of the scope is a look too: what an apply did before it is not new.
            graph
                .discovery()
                .audits
                .values()
                .filter(|a| {
                    a.recorded.source == run.started.source
                        && a.recorded.scope == run.started.scope
                        && a.position < run.started_position
                })
                .map(|a| a.recorded_at),
        )
        .max()
}

fn relationship_drift(
    graph: &TemporalGraph,
    run: &RunInfo,
    rules: &cmdb_core::discovery::rules::SourceRules,
    recorded: &BTreeMap<String, std::sync::Arc<cmdb_core::ci::CiSnapshot>>,
    position: u64,
    authority: &Authority,
    findings: &mut Vec<Finding>,
) {
    let by_ci: HashMap<CiId, &String> = recorded.iter().map(|(id, ci)| (ci.id, id)).collect();
    let mapped_types: BTreeSet<RelType> = rules.relationships.iter().map(|r| r.rel_type).collect();
    // Relationships the CMDB records between two CIs of this scope, of types the rules map.
    let mut in_cmdb: BTreeSet<(RelType, &String, &String)> = BTreeSet::new();
    for (id, ci) in recorded {
        for rel in graph.relationships_at(position, Some(ci.id), None) {
            if rel.source == ci.id
                && mapped_types.contains(&rel.rel_type)
                && let Some(target) = by_ci.get(&rel.target)
            {
                in_cmdb.insert((rel.rel_type, id, target));
            }
        }
    }
    let observed: BTreeSet<(RelType, &String, &String)> =
        run.observations.relationships.iter().map(|r| (r.rel_type, &r.from, &r.to)).collect();
    for (rel_type, from, to) in &observed {
        // Only where both ends are recorded: a missing end is its own finding.
        let (Some(source), Some(_)) = (recorded.get(*from), recorded.get(*to)) else { continue };
        if !in_cmdb.contains(&(*rel_type, *from, *to)) {
            findings.push(rel_finding(
                graph,
                source,
                (*rel_type, to),
                (None, Some(Value::Bool(true))),
                position,
                authority,
                from,
            ));
        }
    }
    for (rel_type, from, to) in &in_cmdb {
        if !observed.contains(&(*rel_type, *from, *to)) {
            let source = &recorded[*from];
            findings.push(rel_finding(
                graph,
                source,
                (*rel_type, to),
                (Some(Value::Bool(true)), None),
                position,
                authority,
                from,
            ));
        }
    }
}

fn rel_finding(
    graph: &TemporalGraph,
    source: &cmdb_core::ci::CiSnapshot,
    (rel_type, other): (RelType, &str),
    (recorded, observed): (Option<Value>, Option<Value>),
    position: u64,
    authority: &Authority,
    external_id: &str,
) -> Finding {
    Finding {
        kind: FindingKind::RelationshipDrift,
        external_id: external_id.to_owned(),
        ci: Some(source.id),
        class: source.class,
        name: source.name.to_string(),
        attribute: None,
        recorded,
        observed,
        relationship: Some((rel_type, other.to_owned())),
        authorised_by: None,
        authorised_by_label: None,
    }
    .authorised(authority.for_ci(graph, source.id, position))
}

impl Finding {
    fn new(kind: FindingKind, external_id: &str, ci: Option<CiId>, class: CiClass, name: &str) -> Finding {
        Finding {
            kind,
            external_id: external_id.to_owned(),
            ci,
            class,
            name: name.to_owned(),
            attribute: None,
            recorded: None,
            observed: None,
            relationship: None,
            authorised_by: None,
            authorised_by_label: None,
        }
    }

    fn authorised(mut self, by: Option<(ChangeId, String)>) -> Finding {
        if let Some((id, label)) = by {
            self.authorised_by = Some(id);
            self.authorised_by_label = Some(label);
        }
        self
    }
}

/// CIs at `position`, not withdrawn, whose identity is of the scope, by identity.
pub fn recorded_items(
    graph: &TemporalGraph,
    position: u64,
    prefix: &str,
) -> BTreeMap<String, std::sync::Arc<cmdb_core::ci::CiSnapshot>> {
    let mut found = BTreeMap::new();
    for id in graph.ci_ids() {
        let Some(ci) = graph.ci_at(id, position) else { continue };
        if ci.status == Status::Withdrawn {
            continue;
        }
        if let Some(Value::String(external)) = ci.attributes.get(EXTERNAL_ID)
            && external.starts_with(prefix)
        {
            found.insert(external.clone(), ci);
        }
    }
    found
}

/// A change's implementation as authority: when it started, when it ended and how.
#[derive(Clone, Debug)]
struct Implementation {
    change: ChangeId,
    label: String,
    started_at: Timestamp,
    /// When it left `implementing`, and whether it completed (not failed).
    ended: Option<(Timestamp, bool)>,
}

/// The changes whose implementation had started when the source observed, by what their
/// scope covers.
struct Authority {
    observed_at: Timestamp,
    looked_before: Option<Timestamp>,
    by_ci: HashMap<CiId, Vec<Implementation>>,
    by_plan: HashMap<(CiClass, String), Vec<Implementation>>,
}

impl Authority {
    fn at(graph: &TemporalGraph, position: u64, observed_at: Timestamp, looked_before: Option<Timestamp>) -> Authority {
        let mut authority = Authority { observed_at, looked_before, by_ci: HashMap::new(), by_plan: HashMap::new() };
        let filter = crate::changes::ChangeFilter::default();
        for change in graph.change_book().changes_at(position, &filter, usize::MAX) {
            let started = change.transitions.iter().find(|t| t.to == ChangeState::Implementing);
            let Some(started) = started.filter(|t| t.at.recorded_at <= observed_at) else { continue };
            let ended = change
                .transitions
                .iter()
                .find(|t| t.from == Some(ChangeState::Implementing) && t.at.position > started.at.position)
                .map(|t| (t.at.recorded_at, t.to == ChangeState::Implemented));
            let implementation = Implementation {
                change: change.change_id,
                label: change.label(),
                started_at: started.at.recorded_at,
                ended,
            };
            for ci in &change.details.scope.cis {
                authority.by_ci.entry(*ci).or_default().push(implementation.clone());
            }
            for planned in &change.details.scope.planned {
                let key = (planned.class, normalized_name(&planned.name));
                authority.by_plan.entry(key).or_default().push(implementation.clone());
            }
        }
        authority
    }

    /// Whether an implementation covers what the source saw: implementing when it observed, or
    /// completed after both the source last looked and the record last changed (`since`), so
    /// that the drift can be its work.
    fn covers(&self, implementation: &Implementation, since: Option<Timestamp>) -> bool {
        match implementation.ended {
            None => true,
            Some((ended_at, _)) if ended_at >= self.observed_at => true,
            Some((ended_at, completed)) => {
                completed
                    && since.is_none_or(|s| ended_at > s)
                    && self.looked_before.is_none_or(|looked| ended_at > looked)
            }
        }
    }

    fn for_ci(&self, graph: &TemporalGraph, ci: CiId, position: u64) -> Option<(ChangeId, String)> {
        let since = graph.version_at(ci, position).and_then(|v| graph.time_of(v.from));
        self.by_ci
            .get(&ci)?
            .iter()
            .filter(|i| self.covers(i, since) && i.started_at <= self.observed_at)
            .max_by_key(|i| i.started_at)
            .map(|i| (i.change, i.label.clone()))
    }

    fn for_planned(&self, class: CiClass, name: &str) -> Option<(ChangeId, String)> {
        self.by_plan
            .get(&(class, normalized_name(name)))?
            .iter()
            .filter(|i| self.covers(i, None))
            .max_by_key(|i| i.started_at)
            .map(|i| (i.change, i.label.clone()))
    }
}

/// Counts findings by kind, and those no change authorised.
pub fn count(findings: &[Finding]) -> FindingCounts {
    let mut counts = FindingCounts::default();
    for finding in findings {
        match finding.kind {
            FindingKind::NotInCmdb => counts.not_in_cmdb += 1,
            FindingKind::NotObserved => counts.not_observed += 1,
            FindingKind::AttributeDrift => counts.attribute_drift += 1,
            FindingKind::RelationshipDrift => counts.relationship_drift += 1,
        }
        if finding.authorised_by.is_none() {
            counts.unauthorised += 1;
        }
    }
    counts
}

/// The digest of findings in canonical order: blake3 over each finding's JSON.
pub fn findings_digest(findings: &[Finding]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    for finding in findings {
        hasher.update(&serde_json::to_vec(finding).unwrap_or_default());
        hasher.update(b"\n");
    }
    Hash(*hasher.finalize().as_bytes())
}

/// Identities of a source, for readers that only have a CI.
pub fn source_of_ci(ci: &cmdb_core::ci::CiSnapshot) -> Option<SourceKind> {
    ci.attributes.get(EXTERNAL_ID).and_then(Value::as_str).and_then(cmdb_core::discovery::source_of)
}
