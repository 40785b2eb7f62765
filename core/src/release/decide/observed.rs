//! The decisions about what deployment tooling reports: deliveries (once each), mapping rules,
//! observed deployments (authorised by an implementing change, or recorded as an unauthorised
//! change with a retrospective emergency change in the same append) and incidents.

use super::*;
use crate::change::{ChangeCommand, ChangeDecider, ChangeDetails};
use crate::control::Scope;
use crate::release::observe::{
    CallbackAnswered, CallbackPending, DeploymentObserved, MAX_MAPPING_RULES, MAX_OBSERVATIONS_PER_DEPLOYMENT,
    ObserveError, ObservedState, UnauthorisedChange, bounded_text, optional_bounded,
};

/// The keys a tooling command reads.
pub(super) fn reads(command: &ReleaseCommand, read: &ReadSet<ReleaseKey>) -> Vec<ReleaseKey> {
    let mut keys = Vec::new();
    match command {
        ReleaseCommand::Observe(observed) => {
            keys.push(ReleaseKey::Delivery(observed.delivery.tool.delivery_stream()));
            let id = observed.deployment.deployment_id();
            keys.extend([
                ReleaseKey::Deployment(id),
                ReleaseKey::Ci(CiKey::Schema),
                ReleaseKey::Ci(CiKey::Ci(observed.ci)),
            ]);
            keys.extend(observed.release.map(ReleaseKey::Release));
            keys.extend(observed.authorising.iter().map(|c| ReleaseKey::Ci(CiKey::Control(*c))));
            if let Some(existing) = read.deployment(id) {
                keys.extend(existing.request.change_id.map(|c| ReleaseKey::Ci(CiKey::Control(c))));
                keys.extend(existing.request.release_id.map(ReleaseKey::Release));
                keys.extend(existing.request.targets.iter().map(|t| ReleaseKey::Ci(CiKey::Ci(t.ci))));
            }
            // Only once the rest is read, and only when nothing authorises it: what the
            // retrospective change reads.
            if keys.iter().all(|k| read.get(k).is_some()) && needs_retrospective(read, observed) {
                let command = retrospective_command(observed, None);
                let sub = read.change_read_set();
                keys.extend(ChangeDecider::default().reads(&command, &sub).into_iter().map(ReleaseKey::Change));
            }
        }
        ReleaseCommand::RecordUnmapped(delivery) => keys.push(ReleaseKey::Delivery(delivery.tool.delivery_stream())),
        ReleaseCommand::SetMapping(rule) => keys.extend([ReleaseKey::Mappings, ReleaseKey::Ci(CiKey::Ci(rule.ci))]),
        ReleaseCommand::RemoveMapping(_) => keys.push(ReleaseKey::Mappings),
        ReleaseCommand::OpenIncident { opened, delivery } => {
            keys.push(ReleaseKey::Incident(opened.incident.incident_stream()));
            keys.extend(opened.cis.iter().map(|ci| ReleaseKey::Ci(CiKey::Ci(*ci))));
            keys.extend(delivery.iter().map(|d| ReleaseKey::Delivery(d.tool.delivery_stream())));
        }
        ReleaseCommand::ResolveIncident { resolved, delivery } => {
            keys.push(ReleaseKey::Incident(resolved.incident.incident_stream()));
            keys.extend(delivery.iter().map(|d| ReleaseKey::Delivery(d.tool.delivery_stream())));
        }
        _ => {}
    }
    keys
}

/// Records a delivery once: a second delivery of the same id is refused and changes nothing.
pub(super) fn receive(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    delivery: &DeliveryReceived,
) -> Result<(), ReleaseError> {
    delivery.tool.check()?;
    bounded_text("event type", &delivery.event_type, MAX_NAME_BYTES)?;
    optional_bounded("subject", delivery.subject.as_deref(), MAX_PIPELINE_FIELD_BYTES)?;
    optional_bounded("reason", delivery.unmapped.as_deref(), MAX_TEXT_BYTES)?;
    let stream = delivery.tool.delivery_stream();
    if read.delivery(&stream).is_some() {
        return Err(
            ObserveError::DuplicateDelivery { provider: delivery.tool.provider, id: delivery.tool.id.clone() }.into()
        );
    }
    decision.write(ReleaseKey::Delivery(stream), ReleaseEvent::DeliveryReceived(Box::new(delivery.clone())));
    Ok(())
}

pub(super) fn set_mapping(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    actor: &str,
    rule: &MappingRule,
) -> Result<(), ReleaseError> {
    require(read.access(), actor, Operation::ManageSchema, "set a mapping rule")?;
    bounded_text("source", &rule.source, MAX_PIPELINE_FIELD_BYTES)?;
    if let Some(subject) = &rule.subject {
        bounded_text("subject", subject, MAX_PIPELINE_FIELD_BYTES)?;
    }
    live_ci(read, rule.ci)?;
    let mappings = read.mappings();
    if !mappings.contains(rule.provider, &rule.source, rule.subject.as_deref()) {
        bounded("mapping rules", mappings.len() + 1, MAX_MAPPING_RULES)?;
    }
    decision.write(ReleaseKey::Mappings, ReleaseEvent::MappingSet(rule.clone()));
    Ok(())
}

pub(super) fn remove_mapping(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    actor: &str,
    removed: &MappingRemoved,
) -> Result<(), ReleaseError> {
    require(read.access(), actor, Operation::ManageSchema, "remove a mapping rule")?;
    if !read.mappings().contains(removed.provider, &removed.source, removed.subject.as_deref()) {
        return Err(ObserveError::NoSuchRule {
            provider: removed.provider,
            source_name: removed.source.clone(),
            subject: removed.subject.clone(),
        }
        .into());
    }
    decision.write(ReleaseKey::Mappings, ReleaseEvent::MappingRemoved(removed.clone()));
    Ok(())
}

/// The change that authorises an observed deployment's CI edits (none for a CI of an
/// uncontrolled class that no change covers), and whether it is the retrospective change of
/// an unauthorised one.
struct Authority {
    change: Option<ChangeId>,
    unauthorised: bool,
    open_retrospective: bool,
}

fn authority(
    read: &ReadSet<ReleaseKey>,
    observed: &ObservedDeployment,
    existing: Option<&DeploymentRecord>,
    controlled: bool,
) -> Authority {
    let plain = |change| Authority { change, unauthorised: false, open_retrospective: false };
    if let Some(d) = existing.filter(|d| d.request.unauthorised) {
        return Authority { change: d.request.change_id, unauthorised: true, open_retrospective: false };
    }
    let authorises =
        |c: &ChangeId| read.change_control(*c).is_some_and(|c| c.state.is_some_and(|s| s.authorises_edits()));
    let recorded = existing.and_then(|d| d.request.change_id);
    if let Some(change) = recorded.iter().chain(observed.authorising.iter()).find(|c| authorises(c)) {
        return plain(Some(*change));
    }
    match recorded {
        _ if !controlled => plain(None),
        // Authorised when first seen; its change lapsed before anything was deployed.
        Some(change) if !observed.state.deploys() => plain(Some(change)),
        _ => Authority { change: Some(observed.retrospective), unauthorised: true, open_retrospective: true },
    }
}

/// Whether the observation, on what is read, opens a retrospective change.
fn needs_retrospective(read: &ReadSet<ReleaseKey>, observed: &ObservedDeployment) -> bool {
    let Some(ci) = read.ci(observed.ci) else { return false };
    let controlled = read.controlled(ci.class);
    let existing = read.deployment(observed.deployment.deployment_id());
    authority(read, observed, existing, controlled).open_retrospective
}

/// Decides one observation of a tool's deployment.
pub(super) fn observe(
    decider: &ReleaseDecider,
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    context: &CommandContext,
    observed: &ObservedDeployment,
) -> Result<(), ReleaseError> {
    observed.check()?;
    receive(read, decision, &observed.delivery)?;
    let id = observed.deployment.deployment_id();
    let ci = live_ci(read, observed.ci)?.clone();
    let existing = read.deployment(id).cloned();
    if let Some(d) = &existing
        && d.observations.len() >= MAX_OBSERVATIONS_PER_DEPLOYMENT
    {
        return Err(ObserveError::TooMany {
            field: "observations of one deployment",
            count: d.observations.len() + 1,
            bound: MAX_OBSERVATIONS_PER_DEPLOYMENT,
        }
        .into());
    }
    let controlled = read.controlled(ci.class);
    let authority = authority(read, observed, existing.as_ref(), controlled);
    let key = ReleaseKey::Deployment(id);
    let mut deployment = match existing {
        Some(d) => d,
        None => {
            let request = DeploymentRequested {
                deployment_id: id,
                release_id: observed.release,
                change_id: authority.change,
                environment: observed.environment,
                targets: vec![target_of(observed, &ci)],
                pipeline: None,
                observed: Some(observed.deployment.clone()),
                unauthorised: authority.unauthorised,
            };
            decision.write(key.clone(), ReleaseEvent::DeploymentRequested(Box::new(request.clone())));
            new_record(request, context)
        }
    };
    decision.write(
        key.clone(),
        ReleaseEvent::DeploymentObserved(Box::new(DeploymentObserved {
            deployment_id: id,
            tool: observed.deployment.clone(),
            delivery: observed.delivery.tool.id.clone(),
            state: observed.state,
            description: observed.description.clone(),
            url: observed.url.clone(),
            occurred_at: observed.occurred_at,
        })),
    );
    if authority.open_retrospective {
        retrospective(decider, read, decision, context, observed, &ci.name)?;
        decision.write(
            key.clone(),
            ReleaseEvent::Unauthorised(Box::new(UnauthorisedChange {
                deployment_id: id,
                ci: observed.ci,
                environment: observed.environment,
                tool: observed.deployment.clone(),
                change_id: observed.retrospective,
                version: observed.version.clone(),
            })),
        );
        // Edits from now on are made under the retrospective change, flagged.
        deployment.request.change_id = authority.change;
        deployment.request.unauthorised = true;
    } else if !authority.unauthorised {
        deployment.request.change_id = authority.change;
    }
    move_deployment(read, decision, observed, &deployment)
}

/// The deployment's life cycle as the observed state moves it; a state that does not move it
/// (a late `in_progress`, `inactive`, a second success) is kept only as the observation.
fn move_deployment(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    observed: &ObservedDeployment,
    deployment: &DeploymentRecord,
) -> Result<(), ReleaseError> {
    let id = deployment.request.deployment_id;
    let key = ReleaseKey::Deployment(id);
    let running = matches!(deployment.state, DeploymentState::Requested | DeploymentState::Started);
    let state = observed.state;
    if !running || !(state == ObservedState::InProgress || state.deploys() || state.fails()) {
        return Ok(());
    }
    let start = (deployment.state == DeploymentState::Requested).then(|| started(read, deployment)).transpose()?;
    if state.deploys() {
        // This observation's artifact wins over the request's (a roll-back names an older one).
        let mut targets = deployment.request.targets.clone();
        if let Some(ci) = read.ci(observed.ci) {
            let fresh = target_of(observed, ci);
            for t in targets.iter_mut().filter(|t| t.ci == fresh.ci) {
                if observed.version.is_some() || observed.digest.is_some() {
                    *t = fresh.clone();
                }
            }
        }
        let request = &deployment.request;
        apply_versions(read, decision, &targets, request.change_id, request.unauthorised)?;
        if let Some(change) = request.change_id.filter(|_| !request.unauthorised) {
            decision.require_unchanged(ReleaseKey::Ci(CiKey::Control(change)));
        }
    }
    if let Some(start) = start {
        decision.write(key.clone(), start);
    }
    let note = observed.description.clone().unwrap_or_else(|| {
        format!("{} reported {} ({})", observed.deployment.provider, state, observed.delivery.event_type)
    });
    if state.deploys() {
        decision.write(key, ended(id, DeploymentState::Succeeded, Some(&note), None));
        if let Some(release_id) = deployment.request.release_id {
            release_moved(read, decision, release_id, deployment, ReleaseAction::Deployed, Some(&note))?;
        }
    } else if state.fails() {
        decision.write(key, ended(id, DeploymentState::Failed, Some(&note), None));
    }
    Ok(())
}

fn new_record(request: DeploymentRequested, context: &CommandContext) -> DeploymentRecord {
    DeploymentRecord {
        request,
        state: DeploymentState::Requested,
        requested: Stamp { by: context.actor().to_owned(), at: context.now, position: 0 },
        before: Vec::new(),
        history: Vec::new(),
        refused_code: None,
        observations: Vec::new(),
        unauthorised: None,
        version: 0,
    }
}

/// What an observation says is deployed; the version defaults to the digest's first digits.
fn target_of(observed: &ObservedDeployment, ci: &CiSnapshot) -> DeploymentTarget {
    let short = observed.digest.as_ref().map(|d| {
        let text = d.as_str();
        let hex = text.split_once(':').map_or(text, |(_, hex)| hex);
        hex.chars().take(12).collect::<String>()
    });
    DeploymentTarget {
        ci: observed.ci,
        artifact: observed.artifact.clone().unwrap_or_else(|| ci.name.to_string()),
        version: observed.version.clone().or(short).unwrap_or_else(|| "unknown".to_owned()),
        digest: observed.digest.clone(),
    }
}

/// The retrospective emergency change of an unauthorised deployment (CH-8).
fn retrospective_command(observed: &ObservedDeployment, ci_name: Option<&str>) -> ChangeCommand {
    let tool = &observed.deployment;
    let what = ci_name.map_or_else(|| observed.ci.to_string(), str::to_owned);
    let version = observed.version.as_deref().unwrap_or("an unknown version");
    let title =
        format!("Unauthorised deployment of {what} to {} observed from {}", observed.environment, tool.provider);
    let details = ChangeDetails {
        title: title.chars().take(crate::change::MAX_TITLE_BYTES / 2).collect(),
        description: Some(format!(
            "{} deployed {version} of {what} to {} ({} {}, deployment {}) with no implementing change or accepted release covering it. Recorded retrospectively: approve or reject it, and review it, before the deadline (CH-8).",
            tool.provider, observed.environment, tool.source, observed.delivery.event_type, tool.id
        )),
        justification: Some("Recorded by the engine: the deployment already happened (CM-3, CH-8).".to_owned()),
        back_out_plan: Some(format!("Roll back deployment {} to the configuration it replaced.", tool.deployment_id())),
        window: None,
        implementer: None,
        scope: Scope { cis: vec![observed.ci], ..Scope::default() },
        links: Vec::new(),
    };
    ChangeCommand::RecordRetrospective { change_id: observed.retrospective, details }
}

fn retrospective(
    decider: &ReleaseDecider,
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    context: &CommandContext,
    observed: &ObservedDeployment,
    ci_name: &str,
) -> Result<(), ReleaseError> {
    let mut command = retrospective_command(observed, Some(ci_name));
    if let ChangeCommand::RecordRetrospective { details, .. } = &mut command {
        details.implementer = Some(context.actor().to_owned());
    }
    let sub = read.change_read_set();
    let change = ChangeDecider { settings: decider.change_settings }.decide(&command, &sub, context)?;
    for (key, events) in change.writes {
        for event in events {
            decision.write(ReleaseKey::Change(key.clone()), ReleaseEvent::Change(event));
        }
    }
    for key in change.conditions {
        decision.require_unchanged(ReleaseKey::Change(key));
    }
    Ok(())
}

pub(super) fn callback_pending(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    pending: &CallbackPending,
) -> Result<(), ReleaseError> {
    bounded_text("callback_url", &pending.callback_url, MAX_PIPELINE_FIELD_BYTES)?;
    bounded_text("environment_name", &pending.environment_name, MAX_NAME_BYTES)?;
    bounded_text("run_id", &pending.run_id, MAX_PIPELINE_FIELD_BYTES)?;
    let waiting = match read.get(&ReleaseKey::Callbacks) {
        Some(ReleaseRead::Callbacks(callbacks)) => callbacks.pending.len(),
        _ => 0,
    };
    if waiting >= crate::release::observe::MAX_PENDING_CALLBACKS {
        return Err(ObserveError::TooMany {
            field: "pending callbacks",
            count: waiting + 1,
            bound: crate::release::observe::MAX_PENDING_CALLBACKS,
        }
        .into());
    }
    decision.write(ReleaseKey::Callbacks, ReleaseEvent::CallbackPending(Box::new(pending.clone())));
    Ok(())
}

pub(super) fn callback_answered(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    answered: &CallbackAnswered,
) -> Result<(), ReleaseError> {
    let waiting = matches!(
        read.get(&ReleaseKey::Callbacks),
        Some(ReleaseRead::Callbacks(callbacks)) if callbacks.pending.contains_key(&answered.callback_url)
    );
    if !waiting {
        return Err(ObserveError::NoSuchCallback(answered.callback_url.clone()).into());
    }
    optional_bounded("comment", Some(&answered.comment), MAX_TEXT_BYTES)?;
    decision.write(ReleaseKey::Callbacks, ReleaseEvent::CallbackAnswered(Box::new(answered.clone())));
    Ok(())
}

pub(super) fn open_incident(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    opened: &IncidentOpened,
    delivery: Option<&DeliveryReceived>,
) -> Result<(), ReleaseError> {
    opened.check()?;
    let stream = opened.incident.incident_stream();
    let exists = read.incident(&stream).is_some();
    match delivery {
        Some(delivery) => receive(read, decision, delivery)?,
        None if exists => return Err(ObserveError::IncidentExists(opened.incident.id.clone()).into()),
        None => {}
    }
    if exists {
        // `incident.reported` after `incident.detected` of the same incident: the delivery is
        // kept; the incident stays as first opened.
        return Ok(());
    }
    for ci in &opened.cis {
        live_ci(read, *ci)?;
    }
    let mut opened = opened.clone();
    opened.priority = super::super::observe::priority(opened.impact, opened.urgency);
    decision.write(ReleaseKey::Incident(stream), ReleaseEvent::IncidentOpened(Box::new(opened)));
    Ok(())
}

pub(super) fn resolve_incident(
    read: &ReadSet<ReleaseKey>,
    decision: &mut ReleaseDecision,
    resolved: &IncidentResolved,
    delivery: Option<&DeliveryReceived>,
) -> Result<(), ReleaseError> {
    resolved.incident.check()?;
    optional_bounded("note", resolved.note.as_deref(), MAX_TEXT_BYTES)?;
    let stream = resolved.incident.incident_stream();
    let Some(incident) = read.incident(&stream) else {
        return Err(ObserveError::UnknownIncident(resolved.incident.id.clone()).into());
    };
    if incident.resolved.is_some() {
        return Err(ObserveError::IncidentResolved(resolved.incident.id.clone()).into());
    }
    if let Some(delivery) = delivery {
        receive(read, decision, delivery)?;
    }
    decision.write(ReleaseKey::Incident(stream), ReleaseEvent::IncidentResolved(Box::new(resolved.clone())));
    Ok(())
}
