//! Change commands and the pure decider: given the change as its streams tell it, the access
//! state (who holds which role now), the CIs the scope names and the clock reading, which
//! events to append, or why not.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use crate::access::{AccessState, Operation, PERMISSIONS, Role, permits, roles_for};
use crate::ci::schema::SchemaRegistry;
use crate::ci::{CiClass, CiId, CiSnapshot, NameKey, Status, TemplateId};
use crate::decider::{CommandContext, Decider, Decision, ReadSet};
use crate::policy::{self, PolicyDecision, PolicyRecord};
use crate::time::Timestamp;

use super::command::ChangeCommand;
use super::freeze::{
    self, FreezeCreated, FreezeEvent, FreezeHit, FreezeId, FreezeLifted, FreezeSchedule, FreezeScope, Freezes,
};
pub use super::policy_input::{PolicyInput, policy_input};
use super::reads::{self, ChangeKey, ChangeRead};
use super::risk::{self, AssessmentFacts};
use super::table::{self, Requirement, Target};
use super::*;

/// Settings that shape decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeSettings {
    /// Hours within which a retrospective emergency change must be approved, and any emergency
    /// change reviewed after its implementation ends (CH-8).
    pub emergency_review_deadline_hours: u32,
    /// Whether freeze windows block standard changes as they block normal ones (CH-5).
    pub freeze_blocks_standard: bool,
}

impl Default for ChangeSettings {
    fn default() -> Self {
        ChangeSettings {
            emergency_review_deadline_hours: DEFAULT_EMERGENCY_REVIEW_DEADLINE_HOURS,
            freeze_blocks_standard: true,
        }
    }
}

/// Everything a decision reads.
#[derive(Clone, Copy, Debug)]
pub struct ChangeInput<'a> {
    /// The principal asking.
    pub actor: &'a str,
    /// Principals and roles now.
    pub access: &'a AccessState,
    /// The change.
    pub change: Option<&'a ChangeRecord>,
    /// The template.
    pub template: Option<&'a TemplateRecord>,
    /// The schema registry.
    pub schema: &'a SchemaRegistry,
    /// The CIs the scope names, as they stand (`None`: no such CI).
    pub cis: &'a BTreeMap<CiId, Option<CiSnapshot>>,
    /// Which CI holds each planned (class, name) now.
    pub names: &'a BTreeMap<NameKey, Option<CiId>>,
    /// The number the next submission gets.
    pub next_number: ChangeNumber,
    /// The clock reading.
    pub now: Timestamp,
    /// The settings.
    pub settings: ChangeSettings,
    /// The approval policy in force (used by assessments and standard submissions).
    pub policy: &'a PolicyRecord,
    /// Freeze windows (used by scheduling and freeze commands).
    pub freezes: &'a Freezes,
    /// The newest position at which a CI of `cis` itself changed (to tell whether an
    /// assessment's facts are still those of the scope).
    pub cis_changed_at: Option<u64>,
}

/// A change decision: events per key, and keys read that must not change.
pub type ChangeDecision = Decision<ChangeKey, ChangeEvent>;

fn roles_of(input: &ChangeInput<'_>) -> BTreeSet<Role> {
    input.access.roles_of(input.actor)
}

fn require(input: &ChangeInput<'_>, operation: Operation, action: &str) -> Result<BTreeSet<Role>, ChangeError> {
    let roles = roles_of(input);
    if permits(&roles, operation) {
        Ok(roles)
    } else {
        Err(ChangeError::NotPermitted {
            principal: input.actor.to_owned(),
            action: action.to_owned(),
            roles: roles_for(operation),
        })
    }
}

fn text(field: &'static str, value: &str, bound: usize) -> Result<(), ChangeError> {
    if value.trim().is_empty() {
        return Err(ChangeError::Empty { field });
    }
    if value.len() > bound {
        return Err(ChangeError::TooLong { field, bytes: value.len(), bound });
    }
    Ok(())
}

fn optional_text(field: &'static str, value: Option<&str>, bound: usize) -> Result<(), ChangeError> {
    value.map_or(Ok(()), |v| text(field, v, bound))
}

fn check_window(window: &Window) -> Result<(), ChangeError> {
    if window.end <= window.start {
        return Err(ChangeError::WindowEndsBeforeStart { start: window.start, end: window.end });
    }
    let hours = (window.end.as_micros() - window.start.as_micros()) / 3_600_000_000;
    if hours > MAX_WINDOW_HOURS {
        return Err(ChangeError::WindowTooLong { hours });
    }
    if chrono_tz::Tz::from_str(&window.time_zone).is_err() {
        return Err(ChangeError::UnknownTimeZone(window.time_zone.clone()));
    }
    Ok(())
}

fn check_link(link: &RecordLink) -> Result<(), ChangeError> {
    let ok = !link.id.trim().is_empty()
        && link.id.len() <= MAX_LINK_ID_BYTES
        && link.id.trim() == link.id
        && !link.id.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(ChangeError::InvalidLink(link.id.clone())) }
}

fn check_links(label: &str, links: &[RecordLink]) -> Result<(), ChangeError> {
    if links.len() > MAX_LINKS_PER_CHANGE {
        return Err(ChangeError::TooMany {
            change: label.to_owned(),
            what: "links",
            count: links.len(),
            bound: MAX_LINKS_PER_CHANGE,
        });
    }
    let mut seen = BTreeSet::new();
    for link in links {
        check_link(link)?;
        if !seen.insert((link.kind, link.id.as_str())) {
            return Err(ChangeError::DuplicateLink { change: label.to_owned(), kind: link.kind, id: link.id.clone() });
        }
    }
    Ok(())
}

/// The scope's CIs exist and are not withdrawn, planned CIs are of known classes with valid
/// names that no CI holds yet, nothing twice, and a template's classes are respected.
fn check_scope(input: &ChangeInput<'_>, scope: &Scope, template: Option<&TemplateRecord>) -> Result<(), ChangeError> {
    if scope.len() > MAX_SCOPE_ITEMS {
        return Err(ChangeError::ScopeTooLarge { count: scope.len() });
    }
    let allowed = |class: CiClass| -> Result<(), ChangeError> {
        match template {
            Some(t) if !t.template.allowed_classes.contains(&class) => Err(ChangeError::ClassNotInTemplate {
                template: t.template.name.clone(),
                class,
                allowed: t.template.allowed_classes.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
            }),
            _ => Ok(()),
        }
    };
    let mut seen = BTreeSet::new();
    for id in &scope.cis {
        if !seen.insert(*id) {
            return Err(ChangeError::DuplicateScope(id.to_string()));
        }
        let ci = input.cis.get(id).and_then(Option::as_ref).ok_or(ChangeError::UnknownCi(*id))?;
        if ci.status == Status::Withdrawn {
            return Err(ChangeError::CiWithdrawn(*id));
        }
        allowed(ci.class)?;
    }
    let mut planned = BTreeSet::new();
    for plan in &scope.planned {
        if !input.schema.knows(plan.class) {
            return Err(ChangeError::UnknownClass(plan.class.as_str().to_owned()));
        }
        if crate::ci::decide::check_name(&plan.name).is_err() {
            return Err(ChangeError::InvalidPlannedName(plan.name.clone()));
        }
        let key = NameKey::planned(plan);
        if let Some(existing) = input.names.get(&key).copied().flatten() {
            return Err(ChangeError::PlannedExists { class: plan.class, name: plan.name.clone(), existing });
        }
        if !planned.insert(key) {
            return Err(ChangeError::DuplicateScope(format!("{} {:?}", plan.class, plan.name)));
        }
        allowed(plan.class)?;
    }
    Ok(())
}

/// Shapes every field (a draft may still be incomplete).
fn check_details(
    input: &ChangeInput<'_>,
    label: &str,
    details: &ChangeDetails,
    template: Option<&TemplateRecord>,
) -> Result<(), ChangeError> {
    // Every field's problem at once.
    let mut problems = crate::problems::Problems::new();
    problems.check(text("title", &details.title, MAX_TITLE_BYTES));
    problems.check(optional_text("description", details.description.as_deref(), MAX_TEXT_BYTES));
    problems.check(optional_text("justification", details.justification.as_deref(), MAX_TEXT_BYTES));
    problems.check(optional_text("back_out_plan", details.back_out_plan.as_deref(), MAX_TEXT_BYTES));
    if let Some(window) = &details.window {
        problems.check(check_window(window));
    }
    if let Some(implementer) = &details.implementer
        && !input.access.principals.contains_key(implementer)
    {
        problems.push(ChangeError::UnknownPrincipal(implementer.clone()));
    }
    problems.check(check_scope(input, &details.scope, template));
    problems.check(check_links(label, &details.links));
    problems.finish(|problems| ChangeError::Invalid { problems })
}

/// What a submission needs on top of well-shaped fields (CH-1, CH-3, CH-8).
fn check_complete(change_type: ChangeType, details: &ChangeDetails) -> Result<(), ChangeError> {
    // Every missing field at once.
    let mut problems = crate::problems::Problems::new();
    if details.description.is_none() {
        problems.push(ChangeError::Missing { field: "description", why: "to submit a change" });
    }
    if details.implementer.is_none() {
        problems.push(ChangeError::Missing { field: "implementer", why: "to submit a change (who will do the work)" });
    }
    if details.scope.is_empty() {
        problems.push(ChangeError::Missing {
            field: "scope",
            why: "to submit a change: the CIs it touches or will register (CH-1)",
        });
    }
    if change_type != ChangeType::Standard {
        if details.justification.is_none() {
            problems.push(ChangeError::Missing {
                field: "justification",
                why: "for normal and emergency changes (why the change is worth making)",
            });
        }
        if details.back_out_plan.is_none() {
            problems
                .push(ChangeError::Missing { field: "back_out_plan", why: "for normal and emergency changes (CH-3)" });
        }
    }
    problems.finish(|problems| ChangeError::Invalid { problems })
}

fn active_template<'a>(input: &ChangeInput<'a>, id: TemplateId) -> Result<&'a TemplateRecord, ChangeError> {
    let template = input.template.filter(|t| t.template.template_id == id).ok_or(ChangeError::UnknownTemplate(id))?;
    if template.retired.is_some() {
        return Err(ChangeError::TemplateRetired(id));
    }
    Ok(template)
}

fn deadline(input: &ChangeInput<'_>) -> Timestamp {
    input.now.saturating_add_micros(i64::from(input.settings.emergency_review_deadline_hours) * 3_600_000_000)
}

fn existing<'a>(input: &ChangeInput<'a>, id: ChangeId) -> Result<&'a ChangeRecord, ChangeError> {
    input.change.filter(|c| c.change_id == id).ok_or_else(|| ChangeError::UnknownChange(id.to_string()))
}

fn check_review(review: &Review) -> Result<(), ChangeError> {
    optional_text("side_effects", review.side_effects.as_deref(), MAX_TEXT_BYTES)?;
    if review.follow_up_actions.len() > MAX_FOLLOW_UP_ACTIONS {
        return Err(ChangeError::TooLong {
            field: "follow_up_actions",
            bytes: review.follow_up_actions.len(),
            bound: MAX_FOLLOW_UP_ACTIONS,
        });
    }
    for action in &review.follow_up_actions {
        text("follow_up_actions", action, MAX_COMMENT_BYTES)?;
    }
    Ok(())
}

/// Decides a change command. Pure.
pub fn decide(command: &ChangeCommand, input: &ChangeInput<'_>) -> Result<ChangeDecision, ChangeError> {
    let mut decision = ChangeDecision::default();
    let actor = input.actor.to_owned();
    match command {
        ChangeCommand::Draft { change_id, change_type, template_id, details } => {
            draft(input, &mut decision, change_id, change_type, template_id, details)?;
        }
        ChangeCommand::Amend { change_id, patch } => {
            amend(input, &mut decision, change_id, patch)?;
        }
        ChangeCommand::RecordRetrospective { change_id, details } => {
            record_retrospective(input, &mut decision, change_id, details)?;
        }
        ChangeCommand::Act { change_id, action, note, review, facts } => {
            let change = existing(input, *change_id)?;
            let assessed = change.state == ChangeState::Assessed && change.assessment().is_some();
            if *action == ChangeAction::Approve && assessed {
                approve_assessed(input, change, note.as_deref(), facts.as_deref(), &mut decision)?;
            } else {
                act(input, change, *action, note.as_deref(), review.as_ref(), facts.as_deref(), &mut decision)?;
            }
        }
        ChangeCommand::Schedule { change_id, note, facts } => {
            schedule(input, &mut decision, change_id, note, facts)?;
        }
        ChangeCommand::Reschedule { change_id, window, note, facts } => {
            reschedule(input, &mut decision, change_id, window, note, facts)?;
        }
        ChangeCommand::AcknowledgeConflict { change_id, other, reason } => {
            acknowledge_conflict(input, &mut decision, change_id, other, reason)?;
        }
        ChangeCommand::CreateFreeze { freeze_id, name, scope, schedule, reason } => {
            create_freeze(input, &mut decision, freeze_id, name, scope, schedule, reason)?;
        }
        ChangeCommand::LiftFreeze { freeze_id, reason } => {
            lift_freeze(input, &mut decision, freeze_id, reason)?;
        }
        ChangeCommand::Reassess { change_id, facts, trigger } => {
            reassess(input, &mut decision, change_id, facts, trigger)?;
        }
        ChangeCommand::Comment { change_id, text: body } => {
            comment(input, &mut decision, change_id, body)?;
        }
        ChangeCommand::Link { change_id, link } => {
            link_record(input, &mut decision, change_id, link)?;
        }
        ChangeCommand::CreateTemplate { template_id, name, title, description, back_out_plan, allowed_classes } => {
            require(input, Operation::ManageChangeTemplates, "create change templates")?;
            if input.template.is_some() {
                return Err(ChangeError::TemplateExists(*template_id));
            }
            text("name", name, MAX_TEMPLATE_NAME_BYTES)?;
            text("title", title, MAX_TITLE_BYTES)?;
            text("description", description, MAX_TEXT_BYTES)?;
            text("back_out_plan", back_out_plan, MAX_TEXT_BYTES)?;
            if allowed_classes.is_empty() {
                return Err(ChangeError::Missing {
                    field: "allowed_classes",
                    why: "for a template (the classes its standard changes may touch)",
                });
            }
            if allowed_classes.len() > MAX_TEMPLATE_CLASSES {
                return Err(ChangeError::TooLong {
                    field: "allowed_classes",
                    bytes: allowed_classes.len(),
                    bound: MAX_TEMPLATE_CLASSES,
                });
            }
            let mut seen = BTreeSet::new();
            for class in allowed_classes {
                if !input.schema.knows(*class) {
                    return Err(ChangeError::UnknownClass(class.as_str().to_owned()));
                }
                if !seen.insert(*class) {
                    return Err(ChangeError::DuplicateScope(class.as_str().to_owned()));
                }
            }
            decision.write(
                ChangeKey::Template(*template_id),
                ChangeEvent::TemplateCreated(TemplateCreated {
                    template_id: *template_id,
                    name: name.to_owned(),
                    title: title.clone(),
                    description: description.clone(),
                    back_out_plan: back_out_plan.clone(),
                    allowed_classes: allowed_classes.clone(),
                    by: actor,
                }),
            );
        }
        ChangeCommand::RetireTemplate { template_id, reason } => {
            retire_template(input, &mut decision, template_id, reason)?;
        }
    }
    Ok(decision)
}

/// Decides [`ChangeCommand::Draft`].
fn draft(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    change_type: &ChangeType,
    template_id: &Option<TemplateId>,
    details: &ChangeDetails,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    require(input, Operation::RequestChange, "raise")?;
    if input.change.is_some() {
        return Err(ChangeError::ChangeExists(*change_id));
    }
    let mut details = details.clone();
    let template = match (change_type, template_id) {
        (ChangeType::Standard, Some(id)) => Some(active_template(input, *id)?),
        (ChangeType::Standard, None) => return Err(ChangeError::TemplateMismatch(ChangeType::Standard)),
        (other, Some(_)) => return Err(ChangeError::TemplateMismatch(*other)),
        (_, None) => None,
    };
    if let Some(t) = template {
        if details.title.trim().is_empty() {
            details.title = t.template.title.clone();
        }
        details.description.get_or_insert_with(|| t.template.description.clone());
        details.back_out_plan.get_or_insert_with(|| t.template.back_out_plan.clone());
        decision.require_unchanged(ChangeKey::Template(t.template.template_id));
    }
    check_details(input, &format!("draft change {change_id}"), &details, template)?;
    decision.write(
        ChangeKey::Details(*change_id),
        ChangeEvent::Drafted(ChangeDrafted {
            change_id: *change_id,
            change_type: *change_type,
            template_id: *template_id,
            requester: actor,
            details,
        }),
    );
    Ok(())
}

/// Decides [`ChangeCommand::Amend`].
fn amend(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    patch: &DetailsPatch,
) -> Result<(), ChangeError> {
    let change = existing(input, *change_id)?;
    require(input, Operation::RequestChange, "amend")?;
    requester_or_manager(input, change, "amend")?;
    if change.state != ChangeState::Draft {
        return Err(ChangeError::NotEditable { change: change.label(), state: change.state });
    }
    let details = patch.applied_to(&change.details);
    if details == change.details {
        return Err(ChangeError::NothingToChange);
    }
    let template = match change.template_id {
        Some(id) => {
            decision.require_unchanged(ChangeKey::Template(id));
            Some(active_template(input, id)?)
        }
        None => None,
    };
    check_details(input, &change.label(), &details, template)?;
    decision
        .write(ChangeKey::Details(*change_id), ChangeEvent::Amended(ChangeAmended { change_id: *change_id, details }));
    Ok(())
}

/// Decides [`ChangeCommand::RecordRetrospective`].
fn record_retrospective(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    details: &ChangeDetails,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    require(input, Operation::RequestChange, "record")?;
    if input.change.is_some() {
        return Err(ChangeError::ChangeExists(*change_id));
    }
    check_details(input, &format!("change {change_id}"), details, None)?;
    check_complete(ChangeType::Emergency, details)?;
    let due = deadline(input);
    decision.write(
        ChangeKey::Details(*change_id),
        ChangeEvent::Drafted(ChangeDrafted {
            change_id: *change_id,
            change_type: ChangeType::Emergency,
            template_id: None,
            requester: actor.clone(),
            details: details.clone(),
        }),
    );
    decision.write(
        ChangeKey::Numbers,
        ChangeEvent::NumberAssigned(NumberAssigned { number: input.next_number, change_id: *change_id }),
    );
    decision.write(
        ChangeKey::State(*change_id),
        ChangeEvent::RetrospectiveRecorded(RetrospectiveRecorded {
            change_id: *change_id,
            number: input.next_number,
            by: actor,
            scope: details.scope.clone(),
            approval_due_at: due,
            review_due_at: due,
        }),
    );
    Ok(())
}

/// Decides [`ChangeCommand::Schedule`].
fn schedule(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    note: &Option<String>,
    facts: &ScheduleFacts,
) -> Result<(), ChangeError> {
    let change = existing(input, *change_id)?;
    act(input, change, ChangeAction::Schedule, note.as_deref(), None, None, decision)?;
    let in_freeze = schedule_checks(input, change, change.details.window.as_ref(), facts)?;
    for (_, events) in &mut decision.writes {
        for event in events.iter_mut() {
            if let ChangeEvent::Transitioned(t) = event {
                t.in_freeze = in_freeze.clone();
            }
        }
    }
    decision.require_unchanged(ChangeKey::Freezes);
    Ok(())
}

/// Decides [`ChangeCommand::Reschedule`].
fn reschedule(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    window: &Window,
    note: &Option<String>,
    facts: &ScheduleFacts,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    let change = existing(input, *change_id)?;
    require(input, Operation::ScheduleChange, "reschedule")?;
    if change.state != ChangeState::Scheduled {
        return Err(ChangeError::NotReschedulable { change: change.label(), state: change.state });
    }
    optional_text("note", note.as_deref(), MAX_TEXT_BYTES)?;
    check_window(window)?;
    if change.details.window.as_ref() == Some(window) {
        return Err(ChangeError::NothingToChange);
    }
    let in_freeze = schedule_checks(input, change, Some(window), facts)?;
    decision.write(
        ChangeKey::Details(*change_id),
        ChangeEvent::Rescheduled(ChangeRescheduled {
            change_id: *change_id,
            window: window.clone(),
            by: actor,
            note: note.clone(),
            in_freeze,
        }),
    );
    decision.require_unchanged(ChangeKey::State(*change_id));
    decision.require_unchanged(ChangeKey::Freezes);
    Ok(())
}

/// Decides [`ChangeCommand::AcknowledgeConflict`].
fn acknowledge_conflict(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    other: &ChangeId,
    reason: &str,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    let change = existing(input, *change_id)?;
    require(input, Operation::ScheduleChange, "acknowledge conflicts of")?;
    if !matches!(change.state, ChangeState::Approved | ChangeState::Scheduled) {
        return Err(ChangeError::NotEditable { change: change.label(), state: change.state });
    }
    if other == change_id {
        return Err(ChangeError::SelfConflict);
    }
    text("reason", reason, MAX_TEXT_BYTES)?;
    if change.acknowledged.iter().any(|(a, _)| a.other == *other) {
        return Err(ChangeError::NothingToChange);
    }
    if change.acknowledged.len() >= MAX_LINKS_PER_CHANGE {
        return Err(ChangeError::TooMany {
            change: change.label(),
            what: "acknowledged conflicts",
            count: change.acknowledged.len(),
            bound: MAX_LINKS_PER_CHANGE,
        });
    }
    decision.write(
        ChangeKey::Details(*change_id),
        ChangeEvent::ConflictAcknowledged(ConflictAcknowledged {
            change_id: *change_id,
            other: *other,
            reason: reason.to_owned(),
            by: actor,
        }),
    );
    Ok(())
}

/// Decides [`ChangeCommand::CreateFreeze`].
fn create_freeze(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    freeze_id: &FreezeId,
    name: &str,
    scope: &FreezeScope,
    schedule: &FreezeSchedule,
    reason: &str,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    require(input, Operation::ManageChanges, "create freeze windows")?;
    text("name", name, freeze::MAX_FREEZE_NAME_BYTES)?;
    text("reason", reason, MAX_TEXT_BYTES)?;
    if input.freezes.records.contains_key(freeze_id) {
        return Err(ChangeError::NothingToChange);
    }
    if input.freezes.records.values().filter(|r| r.lifted.is_none()).count() >= freeze::MAX_ACTIVE_FREEZES {
        return Err(ChangeError::TooMany {
            change: "the calendar".into(),
            what: "freeze windows in force",
            count: freeze::MAX_ACTIVE_FREEZES,
            bound: freeze::MAX_ACTIVE_FREEZES,
        });
    }
    schedule.validate()?;
    if let FreezeScope::Service { service } = scope {
        let ci = input.cis.get(service).and_then(Option::as_ref).ok_or(ChangeError::UnknownCi(*service))?;
        if ci.class != CiClass::BusinessService {
            return Err(ChangeError::NotAService(*service));
        }
    }
    decision.write(
        ChangeKey::Freezes,
        ChangeEvent::Freeze(FreezeEvent::Created(FreezeCreated {
            freeze_id: *freeze_id,
            name: name.to_owned(),
            scope: scope.clone(),
            schedule: schedule.clone(),
            reason: reason.to_owned(),
            by: actor,
        })),
    );
    Ok(())
}

/// Decides [`ChangeCommand::LiftFreeze`].
fn lift_freeze(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    freeze_id: &FreezeId,
    reason: &str,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    require(input, Operation::ManageChanges, "lift freeze windows")?;
    text("reason", reason, MAX_TEXT_BYTES)?;
    let record =
        input.freezes.records.get(freeze_id).ok_or_else(|| ChangeError::UnknownFreeze(freeze_id.to_string()))?;
    if record.lifted.is_some() {
        return Err(ChangeError::FreezeAlreadyLifted(record.freeze.name.clone()));
    }
    decision.write(
        ChangeKey::Freezes,
        ChangeEvent::Freeze(FreezeEvent::Lifted(FreezeLifted {
            freeze_id: *freeze_id,
            reason: reason.to_owned(),
            by: actor,
        })),
    );
    Ok(())
}

/// Decides [`ChangeCommand::Reassess`].
fn reassess(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    facts: &AssessmentFacts,
    trigger: &AssessmentTrigger,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    let change = existing(input, *change_id)?;
    let roles = roles_of(input);
    if ![Operation::AssessChange, Operation::ApproveChange, Operation::ApproveEmergencyChange]
        .iter()
        .any(|op| permits(&roles, *op))
    {
        return Err(ChangeError::NotPermitted {
            principal: actor,
            action: "reassess".into(),
            roles: "change-manager, admin, approver or emergency-approver".into(),
        });
    }
    if change.state != ChangeState::Assessed {
        return Err(ChangeError::NotReassessable { change: change.label(), state: change.state });
    }
    if change.assessments.is_empty() {
        return Err(ChangeError::NotAssessed { change: change.label() });
    }
    let recorded = evaluate(input, change, facts, *trigger)?;
    decision.write(ChangeKey::Details(*change_id), ChangeEvent::Assessed(Box::new(recorded)));
    Ok(())
}

/// Decides [`ChangeCommand::Comment`].
fn comment(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    body: &str,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    let change = existing(input, *change_id)?;
    require(input, Operation::CommentChange, "comment on")?;
    text("comment", body, MAX_COMMENT_BYTES)?;
    if change.comments.len() >= MAX_COMMENTS_PER_CHANGE {
        return Err(ChangeError::TooMany {
            change: change.label(),
            what: "comments",
            count: change.comments.len(),
            bound: MAX_COMMENTS_PER_CHANGE,
        });
    }
    decision.write(
        ChangeKey::Details(*change_id),
        ChangeEvent::Commented(ChangeCommented { change_id: *change_id, by: actor, text: body.to_owned() }),
    );
    Ok(())
}

/// Decides [`ChangeCommand::Link`].
fn link_record(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    change_id: &ChangeId,
    link: &RecordLink,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    let change = existing(input, *change_id)?;
    require(input, Operation::RequestChange, "link records to")?;
    let mut links = change.details.links.clone();
    links.push(link.clone());
    check_links(&change.label(), &links)?;
    decision.write(
        ChangeKey::Details(*change_id),
        ChangeEvent::Linked(ChangeLinked { change_id: *change_id, by: actor, link: link.clone() }),
    );
    Ok(())
}

/// Decides [`ChangeCommand::RetireTemplate`].
fn retire_template(
    input: &ChangeInput<'_>,
    decision: &mut ChangeDecision,
    template_id: &TemplateId,
    reason: &Option<String>,
) -> Result<(), ChangeError> {
    let actor = input.actor.to_owned();
    require(input, Operation::ManageChangeTemplates, "retire change templates")?;
    active_template(input, *template_id)?;
    optional_text("reason", reason.as_deref(), MAX_TEXT_BYTES)?;
    decision.write(
        ChangeKey::Template(*template_id),
        ChangeEvent::TemplateRetired(TemplateRetired { template_id: *template_id, by: actor, reason: reason.clone() }),
    );
    Ok(())
}

fn requester_or_manager(input: &ChangeInput<'_>, change: &ChangeRecord, action: &str) -> Result<(), ChangeError> {
    if input.actor == change.requester || permits(&roles_of(input), Operation::ManageChanges) {
        Ok(())
    } else {
        Err(ChangeError::NotRequester {
            requester: change.requester.clone(),
            action: action.to_owned(),
            change: change.label(),
        })
    }
}

/// Assesses `change` on `facts` and lets the policy in force decide.
fn evaluate(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    facts: &AssessmentFacts,
    trigger: AssessmentTrigger,
) -> Result<AssessmentRecorded, ChangeError> {
    if facts.history_days == 0 || facts.history_days > risk::MAX_RISK_HISTORY_DAYS {
        return Err(ChangeError::HistoryDays { days: facts.history_days });
    }
    if facts.services.len() > risk::MAX_ASSESSED_SERVICES {
        return Err(ChangeError::TooMany {
            change: change.label(),
            what: "services in the assessment",
            count: facts.services.len(),
            bound: risk::MAX_ASSESSED_SERVICES,
        });
    }
    if change.assessments.len() >= MAX_ASSESSMENTS_PER_CHANGE {
        return Err(ChangeError::TooManyAssessments { change: change.label(), count: change.assessments.len() });
    }
    let assessment = risk::assess(facts.clone(), change.change_type, change.details.window.as_ref());
    let policy_input = PolicyInput::new(change, Some(&assessment), input.access, input.cis, input.now);
    let decision: PolicyDecision = policy::decide(input.policy, &policy_input)?;
    Ok(AssessmentRecorded { change_id: change.change_id, by: input.actor.to_owned(), trigger, assessment, decision })
}

/// Whether the actor may approve or reject under the decision in force: an approving role, or
/// a requirement they qualify for (a role it asks for, or their name).
fn policy_authority(change: &ChangeRecord, actor: &str, roles: &BTreeSet<Role>) -> Option<(Option<Role>, Vec<String>)> {
    let entry = change.assessment()?;
    let qualifying: Vec<&policy::ApprovalRequirement> =
        entry.decision.output.approvals.iter().filter(|r| r.counts(actor, roles)).collect();
    let holds_approver = permits(roles, Operation::ApproveChange);
    if qualifying.is_empty() && !holds_approver {
        return None;
    }
    let authority = qualifying.iter().find_map(|r| r.role).or(holds_approver.then_some(Role::Approver));
    Some((authority, qualifying.iter().map(|r| r.reason.clone()).collect()))
}

/// Freeze windows and conflicts for `window` (CH-5). Returns the freezes an emergency (or,
/// by setting, a standard) change was let into, to flag.
fn schedule_checks(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    window: Option<&Window>,
    facts: &ScheduleFacts,
) -> Result<Vec<FreezeHit>, ChangeError> {
    let Some(window) = window else { return Ok(Vec::new()) };
    let mut environments: Vec<crate::ci::Environment> = change
        .details
        .scope
        .cis
        .iter()
        .filter_map(|id| input.cis.get(id).and_then(Option::as_ref).and_then(|ci| ci.environment))
        .collect();
    environments.sort_by_key(|e| format!("{e:?}"));
    environments.dedup();
    let hits = freeze::hits(input.freezes, window, &environments, &facts.services)?;
    let blocked = match change.change_type {
        ChangeType::Normal => true,
        ChangeType::Standard => input.settings.freeze_blocks_standard,
        ChangeType::Emergency => false,
    };
    if blocked && !hits.is_empty() {
        return Err(ChangeError::Frozen {
            change: change.label(),
            hits: hits.iter().map(|h| format!("{:?} ({} to {})", h.name, h.start, h.end)).collect(),
        });
    }
    let open: Vec<String> = facts
        .conflicts
        .iter()
        .filter(|c| !c.acknowledged_by_other && !change.acknowledged.iter().any(|(a, _)| a.other == c.other))
        .map(|c| format!("{} ({})", c.other_label, c.reason))
        .collect();
    if !open.is_empty() {
        return Err(ChangeError::Conflicting { change: change.label(), conflicts: open });
    }
    Ok(hits)
}

/// What a transition's text says, checked: the note, and the review for `review`.
struct ActText<'a> {
    note: Option<&'a str>,
    review: Option<&'a Review>,
}

/// Any transition of the table (CH-1 to CH-8): the row allowing it, the actor's authority,
/// the row's requirements, then what it records: an approval, an assessment, the transition.
fn act(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    action: ChangeAction,
    note: Option<&str>,
    review: Option<&Review>,
    facts: Option<&AssessmentFacts>,
    decision: &mut ChangeDecision,
) -> Result<(), ChangeError> {
    let row = table::find(action, change.state, change.change_type).ok_or_else(|| not_allowed(change, action))?;
    let authority = authority_for(input, change, action, row)?;
    if facts.is_some() && !matches!(action, ChangeAction::Assess | ChangeAction::Submit) {
        return Err(ChangeError::NotApplicable { field: "facts", only_with: ChangeAction::Assess });
    }
    optional_text("note", note, MAX_TEXT_BYTES)?;
    if review.is_some() && action != ChangeAction::Review {
        return Err(ChangeError::NotApplicable { field: "review", only_with: ChangeAction::Review });
    }
    check_requirements(input, change, action, row.requires, ActText { note, review }, decision)?;
    let mut to = row.to;
    if matches!(action, ChangeAction::Approve | ChangeAction::Reject) {
        to = record_verdict(input, change, action, row, authority, note, decision)?;
    }
    // An assessment with facts records the risk and the policy's decision (CH-2, CH-4); so
    // does a standard change's submission, where the decision may withdraw the pre-approval.
    if let Some(facts) = facts {
        let (recorded, target) = assessment_with(input, change, action, facts, to)?;
        to = target;
        decision.write(ChangeKey::Details(change.change_id), ChangeEvent::Assessed(Box::new(recorded)));
    }
    let Target::To(to) = to else {
        return Ok(());
    };
    write_transition(input, change, action, to, ActText { note, review }, decision);
    Ok(())
}

/// Refuses `action` in the change's state, naming what is allowed.
fn not_allowed(change: &ChangeRecord, action: ChangeAction) -> ChangeError {
    ChangeError::TransitionNotAllowed {
        change: change.label(),
        action,
        state: change.state,
        change_type: change.change_type,
        allowed: table::allowed_from(change.state, change.change_type)
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Who the actor acts as: their roles, and, for an approval under a policy decision, the
/// authority the decision names (a role it asks for, or their own name) and what it counts for.
struct Authority {
    roles: BTreeSet<Role>,
    decided: Option<(Option<Role>, Vec<String>)>,
}

/// The actor's authority for the row: its operation's roles, or, when approving or rejecting
/// a change under a policy decision (normal and standard changes), what the decision names.
fn authority_for(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    action: ChangeAction,
    row: &table::Transition,
) -> Result<Authority, ChangeError> {
    let decided_approval = matches!(action, ChangeAction::Approve | ChangeAction::Reject)
        && row.operation == Operation::ApproveChange
        && change.assessment().is_some();
    if !decided_approval {
        return Ok(Authority { roles: require(input, row.operation, action.as_str())?, decided: None });
    }
    let roles = roles_of(input);
    match policy_authority(change, input.actor, &roles) {
        Some(found) => Ok(Authority { roles, decided: Some(found) }),
        None => Err(ChangeError::NotPermitted {
            principal: input.actor.to_owned(),
            action: action.as_str().to_owned(),
            roles: "approver, or a role or principal the change's approval decision names".into(),
        }),
    }
}

/// Checks the row's requirements (complete request, window, notes, review, segregation of
/// duties, the implementer, retrospective rules).
fn check_requirements(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    action: ChangeAction,
    requires: &[Requirement],
    text: ActText<'_>,
    decision: &mut ChangeDecision,
) -> Result<(), ChangeError> {
    let implementer = change.details.implementer.clone().unwrap_or_default();
    let sod = |rule: &'static str| ChangeError::SegregationOfDuties {
        principal: input.actor.to_owned(),
        action,
        change: change.label(),
        rule,
    };
    for requirement in requires {
        match requirement {
            Requirement::CompleteRequest => {
                let template = match change.template_id {
                    Some(id) => {
                        decision.require_unchanged(ChangeKey::Template(id));
                        Some(active_template(input, id)?)
                    }
                    None => None,
                };
                check_details(input, &change.label(), &change.details, template)?;
                check_complete(change.change_type, &change.details)?;
            }
            Requirement::Window => {
                if change.details.window.is_none() {
                    return Err(ChangeError::Missing {
                        field: "window",
                        why: "to schedule a change (amend it while a draft, or cancel and raise it again)",
                    });
                }
            }
            Requirement::Note => {
                if text.note.is_none() {
                    return Err(ChangeError::Missing { field: "note", why: note_why(action) });
                }
            }
            Requirement::SignOffNote => {
                if text.note.is_none() {
                    return Err(ChangeError::Missing {
                        field: "note",
                        why: "to verify: the sign-off says what was checked (CH-6)",
                    });
                }
            }
            Requirement::ReviewFindings => match text.review {
                Some(review) => check_review(review)?,
                None => {
                    return Err(ChangeError::Missing {
                        field: "review",
                        why: "to review: objective met, users satisfied, side effects, follow-up actions (CH-7)",
                    });
                }
            },
            Requirement::SegregatedApprover => {
                if input.actor == change.requester {
                    return Err(sod("the requester cannot approve or reject their own change"));
                }
                if input.actor == implementer {
                    return Err(sod("the implementer cannot approve or reject the change they implement"));
                }
                if let Some(earlier) = change.approvals.iter().find(|a| a.by == input.actor) {
                    return Err(ChangeError::AlreadyDecided {
                        principal: input.actor.to_owned(),
                        change: change.label(),
                        decision: earlier.decision,
                    });
                }
            }
            Requirement::ActorIsImplementer => {
                if input.actor != implementer {
                    return Err(ChangeError::NotImplementer {
                        principal: input.actor.to_owned(),
                        implementer: implementer.clone(),
                        action,
                        change: change.label(),
                    });
                }
            }
            Requirement::ActorIsNotImplementer => {
                if input.actor == implementer {
                    return Err(sod("the implementer cannot sign off their own work"));
                }
            }
            Requirement::RequesterOrManager => requester_or_manager(input, change, action.as_str())?,
            Requirement::Retrospective | Requirement::NotRetrospective => {
                let wanted = *requirement == Requirement::Retrospective;
                if change.retrospective != wanted {
                    return Err(not_allowed(change, action));
                }
            }
            Requirement::RetrospectiveApproved => {
                if change.retrospective && !change.approved() {
                    return Err(ChangeError::NotYetApproved { change: change.label() });
                }
            }
        }
    }
    Ok(())
}

/// Records an approval or a rejection with the roles held (CH-4). Under a policy decision the
/// change is approved once every requirement is met (the target stays the same until then),
/// and a denied change cannot be approved. Returns the transition's target.
fn record_verdict(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    action: ChangeAction,
    row: &table::Transition,
    authority: Authority,
    note: Option<&str>,
    decision: &mut ChangeDecision,
) -> Result<Target, ChangeError> {
    let decided = authority.decided.is_some();
    let (role, counts_for) = match authority.decided {
        Some(found) => found,
        None => (
            PERMISSIONS
                .iter()
                .find(|(op, _)| *op == row.operation)
                .and_then(|(_, allowed)| authority.roles.iter().find(|r| allowed.contains(r)).copied()),
            Vec::new(),
        ),
    };
    let recorded = ApprovalRecorded {
        change_id: change.change_id,
        by: input.actor.to_owned(),
        decision: if action == ChangeAction::Approve { Verdict::Approve } else { Verdict::Reject },
        authority: role,
        roles_held: authority.roles,
        note: note.map(str::to_owned),
        retrospective: change.retrospective,
        counts_for,
    };
    let mut to = row.to;
    if decided && action == ChangeAction::Approve {
        let entry = change.assessment().map(|a| &a.decision.output);
        if let Some(output) = entry.filter(|o| !o.deny.is_empty()) {
            return Err(ChangeError::PolicyDenied { change: change.label(), reasons: output.deny.clone() });
        }
        // CH-4: approved once every requirement of the decision is met.
        let mut after = change.clone();
        after.apply(&ChangeEvent::ApprovalRecorded(recorded.clone()), change.updated);
        let all_met = after.approval_status().is_none_or(|status| status.iter().all(|s| s.met()));
        if !all_met {
            to = Target::Same;
        }
    }
    decision.write(ChangeKey::Details(change.change_id), ChangeEvent::ApprovalRecorded(recorded));
    Ok(to)
}

/// The assessment an `assess` (or a standard change's `submit`) records with its facts, and
/// the transition's target: a standard change the policy does not approve outright goes to
/// assessed; a denied one is refused.
fn assessment_with(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    action: ChangeAction,
    facts: &AssessmentFacts,
    to: Target,
) -> Result<(AssessmentRecorded, Target), ChangeError> {
    match action {
        ChangeAction::Assess => Ok((evaluate(input, change, facts, AssessmentTrigger::Assess)?, to)),
        ChangeAction::Submit if change.change_type == ChangeType::Standard => {
            let mut numbered = change.clone();
            numbered.number = Some(input.next_number);
            let recorded = evaluate(input, &numbered, facts, AssessmentTrigger::Submission)?;
            if !recorded.decision.output.deny.is_empty() {
                return Err(ChangeError::PolicyDenied {
                    change: change.label(),
                    reasons: recorded.decision.output.deny.clone(),
                });
            }
            let to = if recorded.decision.output.auto_approve { to } else { Target::To(ChangeState::Assessed) };
            Ok((recorded, to))
        }
        _ => Err(ChangeError::NotApplicable { field: "facts", only_with: ChangeAction::Assess }),
    }
}

/// Writes the transition to the state stream: a submission assigns the next number and freezes
/// the scope; an emergency change's end sets its review deadline (CH-8).
fn write_transition(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    action: ChangeAction,
    to: ChangeState,
    text: ActText<'_>,
    decision: &mut ChangeDecision,
) {
    let by = input.actor.to_owned();
    if action == ChangeAction::Submit {
        let number = input.next_number;
        decision.write(
            ChangeKey::Numbers,
            ChangeEvent::NumberAssigned(NumberAssigned { number, change_id: change.change_id }),
        );
        decision.write(
            ChangeKey::State(change.change_id),
            ChangeEvent::Submitted(ChangeSubmitted {
                change_id: change.change_id,
                number,
                change_type: change.change_type,
                from: change.state,
                to,
                by,
                scope: change.details.scope.clone(),
            }),
        );
        return;
    }
    let ends_emergency =
        change.change_type == ChangeType::Emergency && matches!(action, ChangeAction::Complete | ChangeAction::Fail);
    decision.write(
        ChangeKey::State(change.change_id),
        ChangeEvent::Transitioned(ChangeTransitioned {
            change_id: change.change_id,
            action,
            from: change.state,
            to,
            by,
            note: text.note.map(str::to_owned),
            review: text.review.cloned(),
            review_due_at: ends_emergency.then(|| deadline(input)),
            in_freeze: Vec::new(),
        }),
    );
}

/// Approves an assessed change (CH-2, CH-4). If a CI in its scope changed since the facts of
/// the assessment in force, the approval needs fresh facts: with them, the reassessment and
/// the approval under the new decision are one decision (one atomic append); without them,
/// it is refused with [`ChangeError::StaleAssessment`]. Either way the append is conditional
/// on the scope's CIs, so an edit racing the approval makes it decide again.
fn approve_assessed(
    input: &ChangeInput<'_>,
    change: &ChangeRecord,
    note: Option<&str>,
    facts: Option<&AssessmentFacts>,
    decision: &mut ChangeDecision,
) -> Result<(), ChangeError> {
    let assessed_at = change.assessment().map_or(0, |entry| entry.assessment.facts.position);
    let scope_changed = input.cis_changed_at.is_some_and(|changed| changed > assessed_at);
    for id in &change.details.scope.cis {
        decision.require_unchanged(ChangeKey::Ci(*id));
    }
    match facts {
        Some(_) | None if !scope_changed => act(input, change, ChangeAction::Approve, note, None, None, decision),
        None => Err(ChangeError::StaleAssessment { change: change.label() }),
        Some(facts) => {
            if input.cis_changed_at.is_some_and(|changed| changed > facts.position) {
                return Err(ChangeError::StaleAssessment { change: change.label() });
            }
            let recorded = evaluate(input, change, facts, AssessmentTrigger::ScopeChanged)?;
            let mut reassessed = change.clone();
            reassessed.apply(&ChangeEvent::Assessed(Box::new(recorded.clone())), change.updated);
            decision.write(ChangeKey::Details(change.change_id), ChangeEvent::Assessed(Box::new(recorded)));
            act(input, &reassessed, ChangeAction::Approve, note, None, None, decision)
        }
    }
}

/// Decides change commands, with the settings that shape decisions.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeDecider {
    /// Deadlines and freeze rules.
    pub settings: ChangeSettings,
}

impl Decider for ChangeDecider {
    type Command = ChangeCommand;
    type Key = ChangeKey;
    type Event = ChangeEvent;
    type Error = ChangeError;
    const NAME: &'static str = "change";

    fn reads(&self, command: &ChangeCommand, read: &ReadSet<ChangeKey>) -> Vec<ChangeKey> {
        reads::reads_of(command, read)
    }

    fn decide(
        &self,
        command: &ChangeCommand,
        read: &ReadSet<ChangeKey>,
        context: &CommandContext,
    ) -> Result<ChangeDecision, ChangeError> {
        let mut cis = BTreeMap::new();
        let mut names = BTreeMap::new();
        let mut cis_changed_at = None;
        // Only the CIs and names this command reads (a read set kept in memory holds more).
        for key in reads::reads_of(command, read) {
            match (&key, read.get(&key)) {
                (ChangeKey::Ci(id), Some(ChangeRead::Ci(state))) => {
                    cis.insert(*id, state.ci.clone());
                    cis_changed_at = cis_changed_at.max(state.changed_at);
                }
                (ChangeKey::Name(name), Some(ChangeRead::Name(state))) => {
                    names.insert(name.clone(), state.holder);
                }
                _ => {}
            }
        }
        let change = command.change_id().and_then(|id| read.change(id));
        let template_id = match command {
            ChangeCommand::Draft { template_id, .. } => *template_id,
            ChangeCommand::CreateTemplate { template_id, .. } | ChangeCommand::RetireTemplate { template_id, .. } => {
                Some(*template_id)
            }
            _ => change.and_then(|c| c.template_id),
        };
        let policy = read.policies().in_force();
        let input = ChangeInput {
            actor: context.actor(),
            access: read.access(),
            change,
            template: template_id.and_then(|id| read.template(id)),
            schema: read.schema(),
            cis: &cis,
            names: &names,
            next_number: read.next_number(),
            now: context.now,
            settings: self.settings,
            policy: &policy,
            freezes: read.freezes(),
            cis_changed_at,
        };
        let mut decision = decide(command, &input)?;
        // The roles the decision used, and the classes it checked, must still hold; so must the
        // freezes scheduling read and the policy in force.
        decision.require_unchanged(ChangeKey::Access);
        decision.require_unchanged(ChangeKey::Schema);
        if reads::needs_freezes(command) {
            decision.require_unchanged(ChangeKey::Freezes);
        }
        if reads::needs_policy(command) {
            decision.require_unchanged(ChangeKey::Policy);
        }
        debug_assert!(decision.event_count() > 0, "an accepted change command writes something");
        Ok(decision)
    }
}

fn note_why(action: ChangeAction) -> &'static str {
    match action {
        ChangeAction::Assess => "to assess: the assessment's findings",
        ChangeAction::Reject => "to reject: the reason",
        ChangeAction::Fail => "to record a failure: what went wrong",
        ChangeAction::BackOut => "to record a back-out: what was undone (CH-3)",
        ChangeAction::Cancel => "to cancel: the reason",
        _ => "for this action",
    }
}
