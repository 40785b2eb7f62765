//! The engine's default change-approval policy (`core/policies/change_approval.rego`) evaluated
//! without the Rego interpreter (issue 15, part 3; CH-4, CH-5, CH-8).
//!
//! At 500 services the interpreter's run of the default policy took 2.4 ms of a 3.3 ms
//! decision, and the input's text round trip most of the rest. The default policy's text cannot
//! change (its hash is in every decision recorded under policy version 0, and a replay re-runs
//! that text), so its meaning is written here a second time, rule by rule, for the inputs the
//! engine builds. [`decision`] returns the `decision` value the interpreter would, or `None` for
//! any input whose shape it does not vouch for (a value of another type than the engine writes,
//! a number that is not whole): those take the interpreter. Sets are ordered with regorus's own
//! `Value` order, so the lists come out in the interpreter's order.
//!
//! The rules read a [`RuleInput`]: [`read`] takes it from any JSON input, and the change domain
//! takes it straight from its typed input, without building the JSON value at all (a 500-service
//! input as JSON values cost 0.35 ms of an assessment). A law test holds the two readings equal.
//!
//! The law, held by a property test against the interpreter over random inputs: for the default
//! policy's text, `decision(input)` is `None` or the interpreter's value. Replays still run the
//! interpreter (`replay`), so every replayed decision checks this code again.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

/// What the default policy's rules read of an input, whichever form it came in: the JSON
/// value (any input, read by [`read`]) or the engine's typed input (read by the change
/// domain, which builds it without a JSON value; issue 15, part 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInput<'a> {
    /// `change.type`, when present.
    pub change_type: Option<&'a str>,
    /// Whether `assessment` is present and not null.
    pub assessment_given: bool,
    /// `assessment.level`, when present.
    pub level: Option<&'a str>,
    /// Whether `change.window` is present and null.
    pub window_is_null: bool,
    /// The distinct tier-1 services of the assessment, in input order.
    pub tier1: Vec<Tier1Service<'a>>,
    /// The calendar's conflicts neither side acknowledged: the other change's label.
    pub open_conflicts: Vec<&'a str>,
    /// The names of the freezes the window falls into.
    pub freezes: Vec<&'a str>,
    /// `assessment.downstream_cis` when the walk was truncated.
    pub truncated_at: Option<u64>,
}

/// A tier-1 service, as the rules read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier1Service<'a> {
    /// Its name.
    pub name: &'a str,
    /// Whether the window falls into its service hours.
    pub in_hours: bool,
    /// `None`: no `owners` key (then it is neither owned nor an orphan to the rules).
    pub owners: Option<Owners<'a>>,
}

/// A service's owner principals, as a JSON list of text or as text (equal when the names are).
#[derive(Clone, Copy, Debug)]
pub enum Owners<'a> {
    /// From a JSON input ([`read`] checked every entry is text).
    Json(&'a [Value]),
    /// From the typed input.
    Text(&'a [String]),
}

impl PartialEq for Owners<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.names() == other.names()
    }
}

impl Eq for Owners<'_> {}

impl<'a> Owners<'a> {
    fn is_empty(self) -> bool {
        match self {
            Owners::Json(list) => list.is_empty(),
            Owners::Text(list) => list.is_empty(),
        }
    }

    fn names(self) -> Vec<&'a str> {
        match self {
            Owners::Json(list) => list.iter().filter_map(Value::as_str).collect(),
            Owners::Text(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

/// The `decision` value the default policy gives for `input`, or `None` when only the
/// interpreter may answer (module docs).
pub fn decision(input: &Value) -> Option<Value> {
    decide(&read(input)?)
}

/// What the rules read of a JSON input, or `None` for a shape this module does not vouch for.
pub fn read(input: &Value) -> Option<RuleInput<'_>> {
    let change = field(input, "change");
    let assessment = match field(input, "assessment") {
        None | Some(Value::Null) => None,
        Some(object @ Value::Object(_)) => Some(object),
        Some(_) => return None,
    };
    let (open_conflicts, freezes) = calendar(field(input, "calendar"))?;
    Some(RuleInput {
        change_type: optional_str(change.and_then(|c| field(c, "type")))?,
        assessment_given: assessment.is_some(),
        level: optional_str(assessment.and_then(|a| field(a, "level")))?,
        window_is_null: change.and_then(|c| field(c, "window")).is_some_and(Value::is_null),
        tier1: tier1_services(assessment)?,
        open_conflicts,
        freezes,
        truncated_at: truncated_at(assessment)?,
    })
}

/// The `decision` value of the default policy on what its rules read.
pub fn decide(input: &RuleInput<'_>) -> Option<Value> {
    let change_type = input.change_type;
    let high_risk = matches!(input.level, Some("high" | "critical"));
    let critical = input.level == Some("critical");
    let in_hours: Vec<&Tier1Service> = input.tier1.iter().filter(|s| s.in_hours).collect();

    let auto_approve = change_type == Some("standard") && input.assessment_given && !high_risk && in_hours.is_empty();
    let needs_cab = change_type.is_some_and(|t| t != "emergency") && !auto_approve;
    let mut deny: Vec<Value> = Vec::new();
    if change_type.is_some_and(|t| t != "emergency") && critical && input.window_is_null {
        deny.push("a critical-risk change must request a window before it can be approved".into());
    }

    let mut approvals: Vec<Value> = Vec::new();
    if needs_cab {
        approvals.extend(cab_approvals(input.level, high_risk, critical, &in_hours));
        approvals.extend(calendar_approvals(&input.open_conflicts, &input.freezes));
        approvals.extend(input.truncated_at.map(truncation_approval));
        approvals.extend(owner_approvals(&input.tier1));
    }
    if change_type == Some("emergency") {
        approvals.push(role(
            "emergency-approver",
            1,
            "an emergency change needs the emergency authority (CH-8)".into(),
        ));
    }
    Some(json!({
        "auto_approve": auto_approve,
        "deny": as_rego_set(deny)?,
        "approvals": as_rego_set(approvals)?,
    }))
}

/// `object.key`, when `object` is an object that has it (else Rego's undefined).
fn field<'a>(object: &'a Value, key: &str) -> Option<&'a Value> {
    object.as_object().and_then(|o| o.get(key))
}

/// A value that must be text when present: `Some(None)` when absent, `None` when not text.
fn optional_str(value: Option<&Value>) -> Option<Option<&str>> {
    match value {
        None => Some(None),
        Some(Value::String(text)) => Some(Some(text)),
        Some(_) => None,
    }
}

/// A value that must be true or false when present (absent reads as false).
fn optional_bool(value: Option<&Value>) -> Option<bool> {
    match value {
        None => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    }
}

/// The assessment's services with tier 1. `None` when a service has a shape the rules would
/// read differently from here: the set of services is a set of whole objects, so every value
/// in a tier-1 service must compare in JSON as it does in Rego (text, booleans, null, whole
/// numbers, lists of text).
fn tier1_services(assessment: Option<&Value>) -> Option<Vec<Tier1Service<'_>>> {
    let services = match assessment.and_then(|a| field(a, "services")) {
        None => return Some(Vec::new()),
        Some(Value::Array(services)) => services,
        Some(_) => return None,
    };
    let mut tier1: Vec<Tier1Service> = Vec::new();
    let mut wholes: Vec<&Value> = Vec::new();
    // Two objects with different ids differ: only an id seen before (or none) needs the
    // whole comparison, so the set is built in linear time for the engine's inputs.
    let mut ids: HashSet<&str> = HashSet::new();
    for service in services {
        let object = service.as_object()?;
        let tier = match object.get("tier") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64()?),
            Some(_) => return None,
        };
        if tier != Some(1) {
            continue;
        }
        if !object.values().all(comparable) {
            return None;
        }
        let new_id = object.get("id").and_then(Value::as_str).is_some_and(|id| ids.insert(id));
        if !new_id && wholes.contains(&service) {
            continue; // a set: the same object once
        }
        let owners = match object.get("owners") {
            None => None,
            Some(Value::Array(owners)) => Some(Owners::Json(owners)),
            Some(_) => return None,
        };
        wholes.push(service);
        tier1.push(Tier1Service {
            name: object.get("name")?.as_str()?,
            in_hours: optional_bool(object.get("window_in_service_hours"))?,
            owners,
        });
    }
    Some(tier1)
}

/// Whether JSON equality of `value` is Rego's (no fractions, no nested objects).
fn comparable(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::Array(items) => items.iter().all(Value::is_string),
        Value::Object(_) => false,
    }
}

/// The calendar's open conflicts and its freezes' names (none when it is absent or null).
fn calendar(calendar: Option<&Value>) -> Option<(Vec<&str>, Vec<&str>)> {
    let Some(calendar) = calendar.and_then(Value::as_object) else {
        return match calendar {
            None | Some(Value::Null) => Some((Vec::new(), Vec::new())),
            Some(_) => None,
        };
    };
    let mut open: Vec<&str> = Vec::new();
    for conflict in list(calendar, "conflicts")? {
        let conflict = conflict.as_object()?;
        let acknowledged = optional_bool(conflict.get("acknowledged"))?;
        let by_other = optional_bool(conflict.get("acknowledged_by_other"))?;
        if !acknowledged && !by_other {
            open.push(conflict.get("change")?.as_str()?);
        }
    }
    let freezes = list(calendar, "freezes")?.iter().map(|f| field(f, "name")?.as_str()).collect::<Option<_>>()?;
    Some((open, freezes))
}

/// `calendar.key` as a list: empty when absent, `None` when not a list.
fn list<'a>(calendar: &'a Map<String, Value>, key: &str) -> Option<&'a [Value]> {
    match calendar.get(key) {
        None => Some(&[]),
        Some(Value::Array(items)) => Some(items),
        Some(_) => None,
    }
}

/// `Some(downstream_cis)` for a truncated walk, `Some(None)` for a whole one.
fn truncated_at(assessment: Option<&Value>) -> Option<Option<u64>> {
    let Some(assessment) = assessment else { return Some(None) };
    if !optional_bool(field(assessment, "truncated"))? {
        return Some(None);
    }
    Some(Some(field(assessment, "downstream_cis")?.as_u64()?))
}

/// `{"role": role, "count": count, "reason": reason}`.
fn role(role: &str, count: u64, reason: String) -> Value {
    json!({ "role": role, "count": count, "reason": reason })
}

/// The approver rules, and a change manager for critical risk inside tier-1 service hours.
fn cab_approvals(level: Option<&str>, high_risk: bool, critical: bool, in_hours: &[&Tier1Service]) -> Vec<Value> {
    let mut approvals = Vec::new();
    match level {
        Some(level) if high_risk => {
            approvals.push(role("approver", 2, format!("{level} risk needs two approvers")));
        }
        _ => approvals.push(role("approver", 1, "a change needs an approver (CH-4)".into())),
    }
    if critical && !in_hours.is_empty() {
        let names: Vec<&str> = in_hours.iter().map(|s| s.name).collect();
        approvals.push(role(
            "change-manager",
            1,
            format!(
                "critical risk inside the service hours of tier-1 services ({}) needs a change manager",
                names_text(names)
            ),
        ));
    }
    approvals
}

/// Open conflicts and freezes of the requested window: a change manager (CH-5).
fn calendar_approvals(open: &[&str], freezes: &[&str]) -> Vec<Value> {
    let mut approvals = Vec::new();
    if !open.is_empty() {
        approvals.push(role(
            "change-manager",
            1,
            format!("the window conflicts with {} scheduled changes ({})", open.len(), open.join(", ")),
        ));
    }
    if !freezes.is_empty() {
        approvals.push(role(
            "change-manager",
            1,
            format!("the window falls into freeze windows ({})", freezes.join(", ")),
        ));
    }
    approvals
}

/// A truncated walk (stopped at `reached` CIs): a change manager judges the services beyond it.
fn truncation_approval(reached: u64) -> Value {
    role(
        "change-manager",
        1,
        format!(
            "the impact walk stopped at {reached} CIs, so services beyond it are not listed; a change manager judges the rest"
        ),
    )
}

/// One of the owners of each tier-1 service (one requirement per set of owners), and a change
/// manager for tier-1 services without owners.
fn owner_approvals(tier1: &[Tier1Service]) -> Vec<Value> {
    let mut approvals = Vec::new();
    // Each distinct set of owners (lists of text) with its services, in order of first use.
    let mut owner_sets: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
    let mut index_of: HashMap<Vec<&str>, usize> = HashMap::new();
    for service in tier1 {
        let Some(owners) = service.owners.filter(|o| !o.is_empty()) else { continue };
        let key = owners.names();
        let index = *index_of.entry(key).or_insert_with_key(|key| {
            owner_sets.push((key.clone(), Vec::new()));
            owner_sets.len() - 1
        });
        owner_sets[index].1.push(service.name);
    }
    for (owners, names) in owner_sets {
        approvals.push(json!({
            "principals": owners,
            "count": 1,
            "reason": format!("tier-1 services ({}) need one of their owners to approve", names_text(names)),
        }));
    }
    let orphans: Vec<&str> = tier1.iter().filter(|s| s.owners.is_some_and(Owners::is_empty)).map(|s| s.name).collect();
    if !orphans.is_empty() {
        approvals.push(role(
            "change-manager",
            1,
            format!(
                "tier-1 services ({}) have no owner principal; a change manager approves for them",
                names_text(orphans)
            ),
        ));
    }
    approvals
}

/// How many names a reason lists before "and N more" (the policy's `array.slice(names, 0, 3)`).
const NAMES_SHOWN: usize = 3;

/// The policy's `names_text` of `sort(names)`: the first three names in byte order (duplicates
/// kept, as Rego's `sort`), and how many in all. The three are chosen by linear selection, not
/// by sorting the whole list (a tier-1 list runs to 500 names).
fn names_text(mut names: Vec<&str>) -> String {
    let count = names.len();
    if count > NAMES_SHOWN {
        // Afterwards the first `NAMES_SHOWN` slots hold the smallest names, unordered.
        names.select_nth_unstable(NAMES_SHOWN - 1);
        names.truncate(NAMES_SHOWN);
    }
    names.sort_unstable();
    match names.as_slice() {
        [one] if count == 1 => (*one).to_owned(),
        first if count > NAMES_SHOWN => format!("{} and {} more", first.join(", "), count - NAMES_SHOWN),
        first => first.join(", "),
    }
}

/// A Rego set of `values` as the interpreter lists it: distinct, in regorus's value order.
fn as_rego_set(values: Vec<Value>) -> Option<Value> {
    let set: BTreeSet<regorus::Value> =
        values.into_iter().map(|v| serde_json::from_value::<regorus::Value>(v).ok()).collect::<Option<_>>()?;
    set.into_iter().map(|v| serde_json::to_value(&v).ok()).collect::<Option<Vec<Value>>>().map(Value::Array)
}
