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
//! The law, held by a property test against the interpreter over random inputs: for the default
//! policy's text, `decision(input)` is `None` or the interpreter's value. Replays still run the
//! interpreter (`replay`), so every replayed decision checks this code again.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

/// A tier-1 service of the assessment, as the rules read it.
struct Service<'a> {
    whole: &'a Value,
    name: &'a str,
    in_hours: bool,
    /// `None`: no `owners` key (then it is neither owned nor an orphan to the rules).
    owners: Option<&'a Vec<Value>>,
}

/// The `decision` value the default policy gives for `input`, or `None` when only the
/// interpreter may answer (module docs).
pub fn decision(input: &Value) -> Option<Value> {
    let change = field(input, "change");
    let change_type = optional_str(change.and_then(|c| field(c, "type")))?;
    let assessment = match field(input, "assessment") {
        None | Some(Value::Null) => None,
        Some(object @ Value::Object(_)) => Some(object),
        Some(_) => return None,
    };
    let assessment_given = matches!(field(input, "assessment"), Some(v) if !v.is_null());
    let level = optional_str(assessment.and_then(|a| field(a, "level")))?;
    let high_risk = matches!(level, Some("high" | "critical"));
    let critical = level == Some("critical");
    let tier1 = tier1_services(assessment)?;
    let in_hours: Vec<&Service> = tier1.iter().filter(|s| s.in_hours).collect();

    let auto_approve = change_type == Some("standard") && assessment_given && !high_risk && in_hours.is_empty();
    let needs_cab = change_type.is_some_and(|t| t != "emergency") && !auto_approve;
    let mut deny: Vec<Value> = Vec::new();
    let window_is_null = change.and_then(|c| field(c, "window")).is_some_and(Value::is_null);
    if change_type.is_some_and(|t| t != "emergency") && critical && window_is_null {
        deny.push("a critical-risk change must request a window before it can be approved".into());
    }

    let mut approvals: Vec<Value> = Vec::new();
    if needs_cab {
        approvals.extend(cab_approvals(level, high_risk, critical, &in_hours));
        approvals.extend(calendar_approvals(field(input, "calendar"))?);
        approvals.extend(truncation_approval(assessment)?);
        approvals.extend(owner_approvals(&tier1));
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
fn tier1_services(assessment: Option<&Value>) -> Option<Vec<Service<'_>>> {
    let services = match assessment.and_then(|a| field(a, "services")) {
        None => return Some(Vec::new()),
        Some(Value::Array(services)) => services,
        Some(_) => return None,
    };
    let mut tier1: Vec<Service> = Vec::new();
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
        if !new_id && tier1.iter().any(|s| s.whole == service) {
            continue; // a set: the same object once
        }
        let owners = match object.get("owners") {
            None => None,
            Some(Value::Array(owners)) => Some(owners),
            Some(_) => return None,
        };
        tier1.push(Service {
            whole: service,
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

/// `{"role": role, "count": count, "reason": reason}`.
fn role(role: &str, count: u64, reason: String) -> Value {
    json!({ "role": role, "count": count, "reason": reason })
}

/// The approver rules, and a change manager for critical risk inside tier-1 service hours.
fn cab_approvals(level: Option<&str>, high_risk: bool, critical: bool, in_hours: &[&Service]) -> Vec<Value> {
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
fn calendar_approvals(calendar: Option<&Value>) -> Option<Vec<Value>> {
    let Some(calendar) = calendar.and_then(Value::as_object) else {
        return match calendar {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(_) => None,
        };
    };
    let mut approvals = Vec::new();
    let conflicts = list(calendar, "conflicts")?;
    let mut open: Vec<&str> = Vec::new();
    for conflict in conflicts {
        let conflict = conflict.as_object()?;
        let acknowledged = optional_bool(conflict.get("acknowledged"))?;
        let by_other = optional_bool(conflict.get("acknowledged_by_other"))?;
        if !acknowledged && !by_other {
            open.push(conflict.get("change")?.as_str()?);
        }
    }
    if !open.is_empty() {
        approvals.push(role(
            "change-manager",
            1,
            format!("the window conflicts with {} scheduled changes ({})", open.len(), open.join(", ")),
        ));
    }
    let freezes = list(calendar, "freezes")?;
    if !freezes.is_empty() {
        let names: Vec<&str> = freezes.iter().map(|f| field(f, "name")?.as_str()).collect::<Option<_>>()?;
        approvals.push(role(
            "change-manager",
            1,
            format!("the window falls into freeze windows ({})", names.join(", ")),
        ));
    }
    Some(approvals)
}

/// `calendar.key` as a list: empty when absent, `None` when not a list.
fn list<'a>(calendar: &'a Map<String, Value>, key: &str) -> Option<&'a [Value]> {
    match calendar.get(key) {
        None => Some(&[]),
        Some(Value::Array(items)) => Some(items),
        Some(_) => None,
    }
}

/// A truncated walk: a change manager judges the services beyond it.
fn truncation_approval(assessment: Option<&Value>) -> Option<Option<Value>> {
    let Some(assessment) = assessment else { return Some(None) };
    if !optional_bool(field(assessment, "truncated"))? {
        return Some(None);
    }
    let reached = field(assessment, "downstream_cis")?.as_u64()?;
    Some(Some(role(
        "change-manager",
        1,
        format!(
            "the impact walk stopped at {reached} CIs, so services beyond it are not listed; a change manager judges the rest"
        ),
    )))
}

/// One of the owners of each tier-1 service (one requirement per set of owners), and a change
/// manager for tier-1 services without owners.
fn owner_approvals(tier1: &[Service]) -> Vec<Value> {
    let mut approvals = Vec::new();
    // Each distinct set of owners (lists of text, as `comparable` checked) with its services.
    let mut owner_sets: Vec<(&Vec<Value>, Vec<&str>)> = Vec::new();
    let mut index_of: HashMap<Vec<&str>, usize> = HashMap::new();
    for service in tier1 {
        let Some(owners) = service.owners.filter(|o| !o.is_empty()) else { continue };
        let key: Vec<&str> = owners.iter().filter_map(Value::as_str).collect();
        let index = *index_of.entry(key).or_insert_with(|| {
            owner_sets.push((owners, Vec::new()));
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
    let orphans: Vec<&str> = tier1.iter().filter(|s| s.owners.is_some_and(Vec::is_empty)).map(|s| s.name).collect();
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
