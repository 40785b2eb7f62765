//! What changed between two positions (CM-5, CM-6, CM-8): CIs created, changed (every field
//! with its value before and after), transitioned and withdrawn; relationships added and
//! removed; each with the events, actors and authorising changes that caused it. Computed from
//! the graph's change index: the work is proportional to what changed, not to the estate.
//!
//! The law (tested): applying `diff(a, b)` to the state at `a` gives the state at `b`.

use std::sync::Arc;

use cmdb_core::ci::{CiId, CiSnapshot, Status};
use rustc_hash::FxHashSet;
use serde::Serialize;
use serde_json::Value;

use crate::graph::{EventInfo, GraphError, HistoryEntry, Relationship, TemporalGraph, Touched, version_at};

/// How a CI differs between the two positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CiChangeKind {
    /// Not there at `from`, there at `to`.
    Created,
    /// There at both; its fields differ (see `transitioned` for a status change).
    Changed,
    /// Withdrawn between the two.
    Withdrawn,
}

/// One field's value before and after (`null` when absent).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// `name`, `status`, `environment`, `owner`, `location`, `version`, or `attributes.<name>`.
    pub field: String,
    /// The value before.
    pub before: Value,
    /// The value after.
    pub after: Value,
}

#[derive(Clone, Debug, PartialEq)]
/// What happened to one CI between the two moments. Its fields that changed and its events are
/// read when asked ([`CiDiff::fields`], [`TemporalGraph::events_between`]): most readers want
/// the two versions, and writing every changed field's values as JSON, then finding each CI's
/// events in its history, were a quarter of a day's diff over GraphQL (issue 15, part 7). It
/// serialises with its fields, as `fields`.
pub struct CiDiff {
    /// Its id.
    pub id: CiId,
    /// What kind.
    pub kind: CiChangeKind,
    /// The status changed (other than by withdrawal).
    pub transitioned: bool,
    /// The CI at the first moment.
    pub before: Option<Arc<CiSnapshot>>,
    /// The CI at the second moment.
    pub after: Option<Arc<CiSnapshot>>,
}

impl CiDiff {
    /// The fields that changed, with before and after, in a fixed order ([`field_changes`]).
    pub fn fields(&self) -> Vec<FieldChange> {
        field_changes(self.before.as_deref(), self.after.as_deref())
    }
}

impl Serialize for CiDiff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = serializer.serialize_struct("CiDiff", 6)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("kind", &self.kind)?;
        out.serialize_field("transitioned", &self.transitioned)?;
        out.serialize_field("before", &self.before)?;
        out.serialize_field("after", &self.after)?;
        out.serialize_field("fields", &self.fields())?;
        out.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
/// What happened to a relationship.
pub enum RelChangeKind {
    /// Added.
    Added,
    /// Removed.
    Removed,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
/// A relationship added or removed between the two moments.
pub struct RelDiff {
    /// What kind.
    pub kind: RelChangeKind,
    /// The relationship.
    pub relationship: Relationship,
    /// The event that made the difference.
    pub cause: EventInfo,
}

/// Everything that differs between `from` and `to`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    /// The first position it is valid at.
    pub from: u64,
    /// The position it stops being valid at ([`OPEN`](crate::graph::OPEN) while it is).
    pub to: u64,
    /// The CIs.
    pub cis: Vec<CiDiff>,
    /// Relationships added and removed.
    pub relationships: Vec<RelDiff>,
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The fields [`field_changes`] compares besides the attributes: name, status, environment,
/// owner, location, version.
const FIXED_FIELDS: usize = 6;

/// Most fields that can differ between two versions of a CI: the fixed ones, and every
/// attribute of either version (each carries at most `MAX_ATTRIBUTES`, which the domain
/// enforces on every write). What bounds a diff entry's `fields` in the API's cost model.
pub const MAX_FIELD_CHANGES: usize = FIXED_FIELDS + 2 * cmdb_core::ci::schema::MAX_ATTRIBUTES;

/// The fields of two versions that differ, in a fixed order. Values are turned into JSON only
/// when they differ; attribute maps shared by both versions are not even walked.
pub fn field_changes(before: Option<&CiSnapshot>, after: Option<&CiSnapshot>) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    fn push<T: Serialize + PartialEq>(
        changes: &mut Vec<FieldChange>,
        field: &str,
        before: Option<&T>,
        after: Option<&T>,
    ) {
        if before != after {
            changes.push(FieldChange {
                field: field.to_owned(),
                before: before.map_or(Value::Null, json),
                after: after.map_or(Value::Null, json),
            });
        }
    }
    push(&mut changes, "name", before.map(|c| &c.name), after.map(|c| &c.name));
    push(&mut changes, "status", before.map(|c| &c.status), after.map(|c| &c.status));
    push(
        &mut changes,
        "environment",
        before.and_then(|c| c.environment.as_ref()),
        after.and_then(|c| c.environment.as_ref()),
    );
    push(&mut changes, "owner", before.and_then(|c| c.owner.as_ref()), after.and_then(|c| c.owner.as_ref()));
    push(&mut changes, "location", before.and_then(|c| c.location.as_ref()), after.and_then(|c| c.location.as_ref()));
    push(&mut changes, "version", before.and_then(|c| c.version.as_ref()), after.and_then(|c| c.version.as_ref()));
    if let (Some(b), Some(a)) = (before, after)
        && Arc::ptr_eq(&b.attributes, &a.attributes)
    {
        return changes;
    }
    let empty = cmdb_core::ci::AttributeMap::new();
    let old = before.map_or(&empty, |c| &*c.attributes);
    let new = after.map_or(&empty, |c| &*c.attributes);
    let names: std::collections::BTreeSet<&str> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (b, a) = (old.get(name), new.get(name));
        if b != a {
            changes.push(FieldChange {
                field: format!("attributes.{name}"),
                before: b.cloned().unwrap_or(Value::Null),
                after: a.cloned().unwrap_or(Value::Null),
            });
        }
    }
    debug_assert!(changes.len() <= MAX_FIELD_CHANGES, "{} fields differ", changes.len());
    changes
}

/// Whether two versions differ in a field [`field_changes`] lists (it lists none exactly when
/// this is false), without writing any value: a diff keeps only the CIs that differ.
pub fn differs(before: Option<&CiSnapshot>, after: Option<&CiSnapshot>) -> bool {
    let (Some(b), Some(a)) = (before, after) else {
        return before.is_some() || after.is_some(); // a name appears or disappears
    };
    b.name != a.name
        || b.status != a.status
        || b.environment != a.environment
        || b.owner != a.owner
        || b.location != a.location
        || b.version != a.version
        || (!Arc::ptr_eq(&b.attributes, &a.attributes) && b.attributes != a.attributes)
}

/// The entries of `history` (in log order) in `(from, to]`, found by binary search: a CI
/// changed today may have months of history before.
fn events_between(history: &[HistoryEntry], from: u64, to: u64) -> &[HistoryEntry] {
    debug_assert!(history.is_sorted_by_key(|h| h.position), "a history is in log order");
    let first = history.partition_point(|h| h.position <= from);
    let end = history.partition_point(|h| h.position <= to);
    &history[first..end.max(first)]
}

impl TemporalGraph {
    /// The events of CI `id` in `(from, to]`, in log order: who changed it between two moments,
    /// when, under which change (a diff entry's causes).
    pub fn events_between(&self, id: CiId, from: u64, to: u64) -> &[HistoryEntry] {
        self.history(id).map_or(&[], |(_, history)| events_between(history, from, to))
    }

    /// The difference between positions `from` and `to` (`from <= to`), optionally only for
    /// the CIs in `scope` (and relationships touching them).
    pub fn diff(&self, from: u64, to: u64, scope: Option<&FxHashSet<CiId>>) -> Result<Diff, GraphError> {
        if from > to {
            return Err(GraphError::FromAfterTo { from, to });
        }
        self.check_position(to)?;
        let in_scope = |id: &CiId| scope.is_none_or(|s| s.contains(id));
        let mut cis = Vec::new();
        let mut relationships = Vec::new();
        for touched in self.touched_between(from, to) {
            match touched {
                Touched::Ci(node) => {
                    let (versions, _) = self.node_versions(node);
                    let id = versions[0].ci.id;
                    if !in_scope(&id) {
                        continue;
                    }
                    // Read from the entry at hand: looking the CI up again by id was a tenth
                    // of a day's diff over GraphQL (issue 15 part 7).
                    let before = version_at(versions, from).map(|v| v.ci.clone());
                    let after = version_at(versions, to).map(|v| v.ci.clone());
                    let differ = differs(before.as_deref(), after.as_deref());
                    debug_assert_eq!(differ, !field_changes(before.as_deref(), after.as_deref()).is_empty());
                    if !differ {
                        continue; // changed and changed back: no net difference
                    }
                    let kind = match (&before, &after) {
                        (None, _) => CiChangeKind::Created,
                        (Some(b), Some(a)) if a.status == Status::Withdrawn && b.status != Status::Withdrawn => {
                            CiChangeKind::Withdrawn
                        }
                        _ => CiChangeKind::Changed,
                    };
                    let transitioned = kind == CiChangeKind::Changed
                        && before.as_ref().map(|c| c.status) != after.as_ref().map(|c| c.status);
                    cis.push(CiDiff { id, kind, transitioned, before, after });
                }
                Touched::Relationship(edge) => {
                    let rel = self.edge(edge);
                    if !in_scope(&rel.source) && !in_scope(&rel.target) {
                        continue;
                    }
                    let (was, is) = (rel.valid_at(from), rel.valid_at(to));
                    let (kind, cause) = match (was, is) {
                        (false, true) => (RelChangeKind::Added, rel.created.clone()),
                        (true, false) => match &rel.removed {
                            Some(removed) => (RelChangeKind::Removed, EventInfo::clone(removed)),
                            None => continue,
                        },
                        _ => continue,
                    };
                    relationships.push(RelDiff { kind, relationship: rel.clone(), cause });
                }
            }
        }
        Ok(Diff { from, to, cis, relationships })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::HistoryKind;
    use cmdb_core::Timestamp;

    fn history(positions: &[u64]) -> Vec<HistoryEntry> {
        positions
            .iter()
            .map(|p| HistoryEntry {
                position: *p,
                recorded_at: Timestamp::from_micros(i64::try_from(*p).expect("small")),
                event_type: HistoryKind::Updated,
                principal: Arc::from("tester"),
                correlation_id: None,
                authorized_by: None,
                relationship: None,
            })
            .collect()
    }

    /// `differs` says whether `field_changes` lists anything, field by field.
    #[test]
    fn differs_exactly_when_a_field_changes() {
        use cmdb_core::ci::{CiClass, Status};
        let base = CiSnapshot {
            id: CiId(uuid::Uuid::from_u128(7)),
            class: CiClass::Host,
            name: cmdb_core::Text::from("h1"),
            status: Status::Live,
            environment: None,
            owner: None,
            location: None,
            version: None,
            attributes: Default::default(),
        };
        let mut renamed = base.clone();
        renamed.name = cmdb_core::Text::from("h2");
        let mut retired = base.clone();
        retired.status = Status::Withdrawn;
        let mut versioned = base.clone();
        versioned.version = Some(cmdb_core::Text::from("1.2"));
        let mut attributed = base.clone();
        let mut attributes = cmdb_core::ci::AttributeMap::new();
        attributes.insert("cpu_cores", serde_json::json!(4));
        attributed.attributes = Arc::new(attributes);
        let mut same_values = base.clone();
        same_values.attributes = Arc::new((*base.attributes).clone());
        let cases = [
            (None, None),
            (Some(&base), None),
            (None, Some(&base)),
            (Some(&base), Some(&base)),
            (Some(&base), Some(&same_values)),
            (Some(&base), Some(&renamed)),
            (Some(&base), Some(&retired)),
            (Some(&versioned), Some(&base)),
            (Some(&base), Some(&attributed)),
        ];
        for (before, after) in cases {
            assert_eq!(differs(before, after), !field_changes(before, after).is_empty(), "{before:?} -> {after:?}");
        }
        assert!(!differs(Some(&base), Some(&same_values)), "equal maps in separate allocations");
        assert!(differs(Some(&base), Some(&attributed)));
    }

    /// `(from, to]` by binary search equals the filter it replaced, at and around every bound.
    #[test]
    fn events_between_is_the_half_open_range() {
        let entries = history(&[3, 5, 5, 8, 13, 21]);
        for from in 0..25 {
            for to in from..25 {
                let expected: Vec<u64> =
                    entries.iter().filter(|h| h.position > from && h.position <= to).map(|h| h.position).collect();
                let found: Vec<u64> = events_between(&entries, from, to).iter().map(|h| h.position).collect();
                assert_eq!(found, expected, "({from}, {to}]");
            }
        }
        assert!(events_between(&[], 0, 10).is_empty());
        assert!(events_between(&entries, 9, 4).is_empty(), "from after to gives nothing");
    }
}
