//! The approval policy's input, typed (issue 15, part 3; CH-4, CH-5, CH-8).
//!
//! Everything a decision depends on: the change, its assessment, the requester's roles, the
//! calendar and the clock reading, so a replay needs nothing else. [`PolicyInput`] borrows
//! them from the change and its assessment and serialises straight to the canonical JSON text
//! the decision records (keys sorted at every level: every struct here declares its fields in
//! key order, which a test holds against the text of the same input as a `serde_json::Value`).
//! The default policy's rules read it directly ([`DecisionInput::rule_input`]), so an
//! assessment or a what-if never builds the input as JSON values: at 500 services that took
//! 0.35 ms, a tenth of an assessment. [`policy_input`] gives the JSON value, for the API's
//! `input` field and for tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::access::AccessState;
use crate::ci::{CiId, CiSnapshot};
use crate::policy::DecisionInput;
use crate::policy::native::{Owners, RuleInput, Tier1Service};
use crate::time::Timestamp;

use super::risk::Assessment;
use super::{ChangeRecord, Window};

/// The policy's input (module docs). Fields in key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyInput<'a> {
    assessment: Option<AssessmentInput<'a>>,
    calendar: Option<CalendarInput<'a>>,
    change: ChangeInput<'a>,
    now: String,
    now_ns: i64,
    requester_roles: Vec<&'static str>,
}

/// The change as the policy sees it. Fields in key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct ChangeInput<'a> {
    id: String,
    implementer: Option<&'a str>,
    links: Vec<LinkInput<'a>>,
    number: Option<String>,
    requester: &'a str,
    scope: ScopeInput<'a>,
    template: Option<String>,
    title: &'a str,
    #[serde(rename = "type")]
    change_type: &'static str,
    window: Option<WindowInput<'a>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct LinkInput<'a> {
    id: &'a str,
    kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct ScopeInput<'a> {
    cis: Vec<ScopeCi<'a>>,
    planned: Vec<PlannedInput<'a>>,
}

/// A CI of the scope: class and name null when it does not exist at the position.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct ScopeCi<'a> {
    class: Option<&'static str>,
    id: String,
    name: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct PlannedInput<'a> {
    class: &'static str,
    name: &'a str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct WindowInput<'a> {
    end: String,
    start: String,
    time_zone: &'a str,
}

/// The assessment. Fields in key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct AssessmentInput<'a> {
    downstream_cis: u32,
    factors: Vec<FactorInput<'a>>,
    formula_version: u32,
    history_days: u32,
    level: &'static str,
    position: u64,
    recent_failures: u32,
    score: u32,
    services: Vec<ServiceInput<'a>>,
    services_degraded: usize,
    services_down: usize,
    services_not_listed: u32,
    truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct FactorInput<'a> {
    name: &'a str,
    points: u32,
    why: &'a str,
}

/// A listed service. Fields in key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
struct ServiceInput<'a> {
    depth: u32,
    id: CiId,
    name: &'a str,
    /// Shared by the services of one owner list (a team owns many).
    owners: Arc<[String]>,
    severity: &'static str,
    tier: Option<u8>,
    window_in_service_hours: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct CalendarInput<'a> {
    conflicts: Vec<ConflictInput<'a>>,
    freezes: Vec<FreezeInput<'a>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct ConflictInput<'a> {
    acknowledged: bool,
    acknowledged_by_other: bool,
    change: &'a str,
    reason: &'a str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct FreezeInput<'a> {
    end: String,
    name: &'a str,
    start: String,
}

impl<'a> PolicyInput<'a> {
    /// The input for `change` with `assessment` (if any), owners resolved through `access`,
    /// the scope's CIs as `cis` has them, at clock reading `now`.
    pub fn new(
        change: &'a ChangeRecord,
        assessment: Option<&'a Assessment>,
        access: &AccessState,
        cis: &'a BTreeMap<CiId, Option<CiSnapshot>>,
        now: Timestamp,
    ) -> PolicyInput<'a> {
        let calendar = assessment.and_then(|a| a.facts.calendar.as_ref()).map(|c| CalendarInput {
            conflicts: c
                .conflicts
                .iter()
                .map(|k| ConflictInput {
                    acknowledged: change.acknowledged.iter().any(|(a, _)| a.other == k.other),
                    acknowledged_by_other: k.acknowledged_by_other,
                    change: &k.other_label,
                    reason: &k.reason,
                })
                .collect(),
            freezes: c
                .freezes
                .iter()
                .map(|f| FreezeInput { end: f.end.to_rfc3339(), name: &f.name, start: f.start.to_rfc3339() })
                .collect(),
        });
        let requester_roles = access
            .principals
            .get(&change.requester)
            .map(|p| p.roles.iter().map(|r| r.as_str()).collect())
            .unwrap_or_default();
        PolicyInput {
            assessment: assessment.map(|a| AssessmentInput::new(a, access)),
            calendar,
            change: ChangeInput::new(change, cis),
            now: now.to_rfc3339(),
            now_ns: now.as_micros().saturating_mul(1000),
            requester_roles,
        }
    }
}

impl<'a> ChangeInput<'a> {
    fn new(change: &'a ChangeRecord, cis: &'a BTreeMap<CiId, Option<CiSnapshot>>) -> ChangeInput<'a> {
        let details = &change.details;
        ChangeInput {
            id: change.change_id.to_string(),
            implementer: details.implementer.as_deref(),
            links: details.links.iter().map(|l| LinkInput { id: &l.id, kind: l.kind.as_str() }).collect(),
            number: change.number.map(|n| n.to_string()),
            requester: &change.requester,
            scope: ScopeInput {
                cis: details
                    .scope
                    .cis
                    .iter()
                    .map(|id| {
                        let ci = cis.get(id).and_then(Option::as_ref);
                        ScopeCi {
                            class: ci.map(|c| c.class.as_str()),
                            id: id.to_string(),
                            name: ci.map(|c| c.name.as_str()),
                        }
                    })
                    .collect(),
                planned: details
                    .scope
                    .planned
                    .iter()
                    .map(|p| PlannedInput { class: p.class.as_str(), name: &p.name })
                    .collect(),
            },
            template: change.template_id.map(|t| t.to_string()),
            title: &details.title,
            change_type: change.change_type.as_str(),
            window: details.window.as_ref().map(WindowInput::new),
        }
    }
}

impl<'a> WindowInput<'a> {
    fn new(window: &'a Window) -> WindowInput<'a> {
        WindowInput { end: window.end.to_rfc3339(), start: window.start.to_rfc3339(), time_zone: &window.time_zone }
    }
}

impl<'a> AssessmentInput<'a> {
    fn new(a: &'a Assessment, access: &AccessState) -> AssessmentInput<'a> {
        // Looked up per listed service: a set, not a scan of up to 500 ids for each of 500.
        let in_hours: HashSet<CiId> = a.window_in_service_hours.iter().copied().collect();
        // Services share owners (a team owns many): each owner list is resolved once.
        let mut principals_of: HashMap<&[String], Arc<[String]>> = HashMap::new();
        let services = a
            .facts
            .services
            .iter()
            .map(|s| ServiceInput {
                depth: s.depth,
                id: s.id,
                name: &s.name,
                owners: principals_of
                    .entry(s.owner_contacts.as_slice())
                    .or_insert_with(|| owner_principals(access, &s.owner_contacts).into())
                    .clone(),
                severity: s.severity.as_str(),
                tier: s.tier,
                window_in_service_hours: in_hours.contains(&s.id),
            })
            .collect();
        AssessmentInput {
            downstream_cis: a.facts.downstream_cis,
            factors: a.factors.iter().map(|f| FactorInput { name: &f.name, points: f.points, why: &f.why }).collect(),
            formula_version: a.formula_version,
            history_days: a.facts.history_days,
            level: a.level.as_str(),
            position: a.facts.position,
            recent_failures: a.facts.failures.iter().map(|f| f.failed + f.backed_out).sum(),
            score: a.score,
            services,
            services_degraded: a.facts.services_with(crate::model::Severity::Degraded),
            services_down: a.facts.services_with(crate::model::Severity::Down),
            services_not_listed: a.facts.services_not_listed,
            truncated: a.facts.truncated,
        }
    }
}

/// The principals an owner contact (an e-mail address) stands for: a principal named by the
/// address itself, or by its part before the `@`.
fn owner_principals(access: &AccessState, contacts: &[String]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for contact in contacts {
        let local = contact.split('@').next().unwrap_or_default();
        for candidate in [contact.as_str(), local] {
            if !candidate.is_empty() && access.principals.contains_key(candidate) {
                names.insert(candidate.to_owned());
            }
        }
    }
    names.into_iter().collect()
}

impl DecisionInput for PolicyInput<'_> {
    /// What the default policy's rules read, taken from the typed fields as [`native::read`]
    /// takes it from the same input as JSON (a test holds them equal).
    ///
    /// [`native::read`]: crate::policy::native::read
    fn rule_input(&self) -> Option<RuleInput<'_>> {
        let assessment = self.assessment.as_ref();
        let (open_conflicts, freezes) = match &self.calendar {
            None => (Vec::new(), Vec::new()),
            Some(c) => (
                c.conflicts.iter().filter(|k| !k.acknowledged && !k.acknowledged_by_other).map(|k| k.change).collect(),
                c.freezes.iter().map(|f| f.name).collect(),
            ),
        };
        Some(RuleInput {
            change_type: Some(self.change.change_type),
            assessment_given: assessment.is_some(),
            level: assessment.map(|a| a.level),
            window_is_null: self.change.window.is_none(),
            tier1: assessment.map(AssessmentInput::tier1).unwrap_or_default(),
            open_conflicts,
            freezes,
            truncated_at: assessment.filter(|a| a.truncated).map(|a| u64::from(a.downstream_cis)),
        })
    }
}

impl AssessmentInput<'_> {
    /// The distinct tier-1 services in input order (a set of whole objects, as the rules
    /// read it: only a repeated id needs the whole comparison).
    fn tier1(&self) -> Vec<Tier1Service<'_>> {
        let mut ids: HashSet<CiId> = HashSet::new();
        let mut kept: Vec<&ServiceInput> = Vec::new();
        for service in self.services.iter().filter(|s| s.tier == Some(1)) {
            if ids.insert(service.id) || !kept.contains(&service) {
                kept.push(service);
            }
        }
        kept.into_iter()
            .map(|s| Tier1Service {
                name: s.name,
                in_hours: s.window_in_service_hours,
                owners: Some(Owners::Text(&s.owners)),
            })
            .collect()
    }
}

/// The policy's input as a JSON value (keys sorted when serialised: canonical JSON).
pub fn policy_input(
    change: &ChangeRecord,
    assessment: Option<&Assessment>,
    access: &AccessState,
    cis: &BTreeMap<CiId, Option<CiSnapshot>>,
    now: Timestamp,
) -> Value {
    PolicyInput::new(change, assessment, access, cis, now).to_value()
}

impl PolicyInput<'_> {
    /// The same input as a JSON value.
    pub fn to_value(&self) -> Value {
        // Serialising these structs into a value cannot fail: every key is text, every
        // number whole.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
