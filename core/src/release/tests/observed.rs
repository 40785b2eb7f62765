//! Given/when/then tests of what deployment tooling reports: an observed deployment under an
//! implementing change edits its CI as any deployment does; one without authority is an
//! unauthorised change with a retrospective emergency change and a flagged CI edit in the
//! same append; deliveries are kept once; mapping rules are admin's; incidents.

use super::*;
use crate::change::{ChangeKey, ChangeRead};
use crate::ci::CiUpdated;
use crate::release::observe::*;

const DELIVERY_SHA: &str = "sha1:0123456789abcdef0123456789abcdef01234567";

fn tool(id: &str) -> ToolRef {
    ToolRef { provider: Provider::Github, source: "octo-org/app".into(), id: id.into() }
}

fn observed(delivery: &str, deployment: &str, state: ObservedState, authorising: &[u128]) -> ReleaseCommand {
    ReleaseCommand::Observe(Box::new(ObservedDeployment {
        delivery: DeliveryReceived {
            tool: tool(delivery),
            event_type: "deployment_status".into(),
            subject: Some("production".into()),
            unmapped: None,
        },
        deployment: tool(deployment),
        ci: ci(1),
        environment: Environment::Production,
        artifact: Some("octo-org/app".into()),
        version: Some("v2.1.0".into()),
        digest: Some(digest(DELIVERY_SHA)),
        state,
        description: None,
        url: None,
        occurred_at: None,
        authorising: authorising.iter().map(|n| change(*n)).collect(),
        release: None,
        retrospective: change(99),
    }))
}

fn ci_updates(decision: &ReleaseDecision) -> Vec<CiUpdated> {
    decision
        .events()
        .filter_map(|(_, e)| match e {
            ReleaseEvent::Ci(CiEvent::Updated(u)) => Some(u.as_ref().clone()),
            _ => None,
        })
        .collect()
}

fn change_events(decision: &ReleaseDecision) -> usize {
    decision.events().filter(|(_, e)| matches!(e, ReleaseEvent::Change(_))).count()
}

#[test]
fn an_observed_success_under_an_implementing_change_edits_the_ci_under_it() {
    let world = World::new();
    let decision = world.when("dora", &observed("d-1", "42", ObservedState::Success, &[1])).expect("accepted");
    let updates = ci_updates(&decision);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].authorized_by, Some(change(1)));
    assert!(!updates[0].unauthorised);
    assert_eq!(change_events(&decision), 0, "no retrospective change");
    world.given("dora", observed("d-1", "42", ObservedState::Success, &[1]));
    let id = tool("42").deployment_id();
    let record = world.deployment(id);
    assert_eq!(record.state, DeploymentState::Succeeded);
    assert_eq!(record.request.change_id, Some(change(1)));
    assert!(record.unauthorised.is_none() && !record.request.unauthorised);
    assert_eq!(world.ci(1).version.as_deref(), Some("v2.1.0"));
    assert_eq!(world.ci(1).attributes.get("digest"), Some(&serde_json::json!(DELIVERY_SHA)));
}

#[test]
fn an_unauthorised_deployment_is_recorded_with_a_retrospective_change_in_one_append() {
    let world = World::new();
    // Change 2 covers the CI but is only approved: it does not authorise edits (CM-3).
    world.change_in(2, &[1], "approved");
    let decision = world.when("dora", &observed("d-1", "42", ObservedState::Success, &[2])).expect("accepted");
    let updates = ci_updates(&decision);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].authorized_by, Some(change(99)));
    assert!(updates[0].unauthorised, "the CI edit is flagged");
    assert_eq!(change_events(&decision), 3, "drafted, numbered, recorded retrospectively");
    assert!(decision.events().any(|(_, e)| matches!(e, ReleaseEvent::Unauthorised(_))));
    let before = world.scenario.head();
    world.given("dora", observed("d-1", "42", ObservedState::Success, &[2]));
    assert_eq!(world.scenario.head(), before + decision.event_count() as u64, "one append");
    let record = world.deployment(tool("42").deployment_id());
    let (unauthorised, _) = record.unauthorised.clone().expect("recorded");
    assert_eq!((unauthorised.ci, unauthorised.change_id), (ci(1), change(99)));
    assert!(record.request.unauthorised);
    assert_eq!(world.ci(1).version.as_deref(), Some("v2.1.0"));
    let ChangeRead::Change(Some(retro)) = world.scenario.fold(&ChangeKey::Change(change(99))) else {
        panic!("no retrospective change");
    };
    assert!(retro.retrospective);
    assert_eq!(retro.change_type, crate::change::ChangeType::Emergency);
    assert_eq!(retro.details.scope.cis, vec![ci(1)]);
    let deadline = crate::change::ChangeSettings::default().emergency_review_deadline_hours;
    assert_eq!(
        retro.approval_due_at,
        Some(world.scenario.now().saturating_add_micros(i64::from(deadline) * 3_600_000_000))
    );
}

#[test]
fn a_tool_deployment_walks_its_statuses_on_one_record_and_is_flagged_once() {
    let world = World::new();
    world.given("dora", observed("d-1", "7", ObservedState::Pending, &[]));
    let id = tool("7").deployment_id();
    assert_eq!(world.deployment(id).state, DeploymentState::Requested);
    assert!(world.deployment(id).unauthorised.is_some(), "no authority when first seen: flagged at once");
    world.given("dora", observed("d-2", "7", ObservedState::InProgress, &[]));
    assert_eq!(world.deployment(id).state, DeploymentState::Started);
    let success = world.when("dora", &observed("d-3", "7", ObservedState::Success, &[])).expect("accepted");
    assert_eq!(change_events(&success), 0, "the retrospective change was opened once");
    assert!(ci_updates(&success).iter().all(|u| u.unauthorised && u.authorized_by == Some(change(99))));
    world.given("dora", observed("d-3", "7", ObservedState::Success, &[]));
    // GitHub marks it inactive when a later deployment succeeds: kept as an observation only.
    world.given("dora", observed("d-4", "7", ObservedState::Inactive, &[]));
    let record = world.deployment(id);
    assert_eq!(record.state, DeploymentState::Succeeded);
    let states: Vec<ObservedState> = record.observations.iter().map(|(o, _)| o.state).collect();
    assert_eq!(
        states,
        [ObservedState::Pending, ObservedState::InProgress, ObservedState::Success, ObservedState::Inactive]
    );
}

#[test]
fn a_failure_records_what_the_tool_said_and_edits_nothing() {
    let world = World::new();
    world.given("dora", observed("d-1", "8", ObservedState::Queued, &[1]));
    let failed = world.when("dora", &observed("d-2", "8", ObservedState::Failure, &[1])).expect("accepted");
    assert!(ci_updates(&failed).is_empty());
    world.given("dora", observed("d-2", "8", ObservedState::Failure, &[1]));
    let record = world.deployment(tool("8").deployment_id());
    assert_eq!(record.state, DeploymentState::Failed);
    assert!(record.history.last().and_then(|(_, note, _)| note.clone()).is_some_and(|n| n.contains("failure")));
    assert_eq!(world.ci(1).version.as_deref(), Some("1.0"));
}

#[test]
fn a_delivery_is_kept_once_and_a_replay_changes_nothing() {
    let world = World::new();
    world.given("dora", observed("d-1", "9", ObservedState::Success, &[1]));
    let again = world.execute("dora", &observed("d-1", "9", ObservedState::Success, &[1]));
    assert!(
        matches!(again, Err(crate::Error::Release(ReleaseError::Observe(ObserveError::DuplicateDelivery { .. })))),
        "{again:?}"
    );
    let unmapped = ReleaseCommand::RecordUnmapped(Box::new(DeliveryReceived {
        tool: tool("d-1"),
        event_type: "deployment".into(),
        subject: None,
        unmapped: Some("no rule".into()),
    }));
    assert!(world.execute("dora", &unmapped).is_err(), "the same delivery id, even unmapped");
}

#[test]
fn bad_observations_are_refused_with_the_field_named() {
    let world = World::new();
    let ReleaseCommand::Observe(mut long) = observed("d-1", "9", ObservedState::Success, &[1]) else { unreachable!() };
    long.version = Some("v".repeat(MAX_NAME_BYTES + 1));
    let refused = world.execute("dora", &ReleaseCommand::Observe(long));
    assert!(
        matches!(
            refused,
            Err(crate::Error::Release(ReleaseError::Observe(ObserveError::TooLong { field: "version", .. })))
        ),
        "{refused:?}"
    );
    let ReleaseCommand::Observe(mut empty) = observed("d-1", "9", ObservedState::Success, &[1]) else { unreachable!() };
    empty.delivery.tool.id = " ".into();
    let refused = world.execute("dora", &ReleaseCommand::Observe(empty));
    assert!(
        matches!(refused, Err(crate::Error::Release(ReleaseError::Observe(ObserveError::Empty { field: "id" })))),
        "{refused:?}"
    );
    let ReleaseCommand::Observe(mut unknown) = observed("d-1", "9", ObservedState::Success, &[1]) else {
        unreachable!()
    };
    unknown.ci = ci(77);
    assert!(world.execute("dora", &ReleaseCommand::Observe(unknown)).is_err(), "an unknown CI");
}

#[test]
fn mapping_rules_are_set_and_removed_by_admins_only() {
    let world = World::new();
    world.scenario.given(
        &AccessDecider,
        "system",
        AccessCommand::CreatePrincipal {
            name: "ada".into(),
            kind: PrincipalKind::Person,
            display_name: None,
            roles: [Role::Admin].into_iter().collect(),
        },
    );
    let rule = MappingRule {
        provider: Provider::Cdevents,
        source: "/argocd/prod".into(),
        subject: Some("payments".into()),
        ci: ci(1),
        environment: Some(Environment::Production),
    };
    let refused = world.execute("dora", &ReleaseCommand::SetMapping(rule.clone()));
    assert!(matches!(refused, Err(crate::Error::Release(ReleaseError::NotPermitted { .. }))), "{refused:?}");
    world.given("ada", ReleaseCommand::SetMapping(rule.clone()));
    let ReleaseRead::Mappings(mappings) = world.scenario.fold(&ReleaseKey::Mappings) else { panic!() };
    assert_eq!(mappings.resolve(Provider::Cdevents, "/ArgoCD/prod", Some("Payments")), Some(&rule));
    let bad = MappingRule { ci: ci(77), ..rule.clone() };
    assert!(world.execute("ada", &ReleaseCommand::SetMapping(bad)).is_err(), "an unknown CI");
    let removal = MappingRemoved { provider: Provider::Cdevents, source: "/argocd/prod".into(), subject: None };
    let missing = world.execute("ada", &ReleaseCommand::RemoveMapping(removal));
    assert!(
        matches!(missing, Err(crate::Error::Release(ReleaseError::Observe(ObserveError::NoSuchRule { .. })))),
        "{missing:?}"
    );
    let removal = MappingRemoved {
        subject: Some("payments".into()),
        ..MappingRemoved { provider: Provider::Cdevents, source: "/argocd/prod".into(), subject: None }
    };
    world.given("ada", ReleaseCommand::RemoveMapping(removal));
    let ReleaseRead::Mappings(mappings) = world.scenario.fold(&ReleaseKey::Mappings) else { panic!() };
    assert!(mappings.is_empty());
}

#[test]
fn incidents_open_with_a_priority_and_resolve_once() {
    let world = World::new();
    let incident =
        ToolRef { provider: Provider::Cdevents, source: "/monitoring/prod1".into(), id: "incident-123".into() };
    let open = |delivery: &str| ReleaseCommand::OpenIncident {
        opened: Box::new(IncidentOpened {
            incident: incident.clone(),
            title: "Response time above threshold".into(),
            impact: Impact::High,
            urgency: Urgency::Medium,
            priority: 0,
            cis: vec![ci(1)],
            environment: Some(Environment::Production),
            detected_at: NOW,
        }),
        delivery: Some(Box::new(DeliveryReceived {
            tool: ToolRef { id: delivery.into(), ..incident.clone() },
            event_type: "dev.cdevents.incident.detected.0.3.0".into(),
            subject: Some("incident-123".into()),
            unmapped: None,
        })),
    };
    world.given("dora", open("e-1"));
    // Reported again by another event: the delivery is kept, the incident stays as opened.
    world.given("dora", open("e-2"));
    let ReleaseRead::Incident(Some(record)) = world.scenario.fold(&ReleaseKey::Incident(incident.incident_stream()))
    else {
        panic!("no incident")
    };
    assert_eq!(record.opened.priority, 2, "high impact, medium urgency");
    let resolve = ReleaseCommand::ResolveIncident {
        resolved: Box::new(IncidentResolved { incident: incident.clone(), resolved_at: NOW, note: None }),
        delivery: None,
    };
    world.given("dora", resolve.clone());
    let again = world.execute("dora", &resolve);
    assert!(
        matches!(again, Err(crate::Error::Release(ReleaseError::Observe(ObserveError::IncidentResolved(_))))),
        "{again:?}"
    );
    let unknown = ReleaseCommand::ResolveIncident {
        resolved: Box::new(IncidentResolved { incident: tool("nope"), resolved_at: NOW, note: None }),
        delivery: None,
    };
    let refused = world.execute("dora", &unknown);
    assert!(
        matches!(refused, Err(crate::Error::Release(ReleaseError::Observe(ObserveError::UnknownIncident(_))))),
        "{refused:?}"
    );
}

/// The deployment's and the delivery's streams are presumed new (not read) for the first
/// decision; a tool's second word about a deployment finds the stream there, the append
/// conflicts, and the command is decided again on the log: one request, the state moves on.
#[test]
fn a_second_word_about_a_deployment_is_decided_on_the_log_not_on_the_presumption() {
    let world = World::new();
    world.given("dora", observed("d-1", "11", ObservedState::Queued, &[1]));
    world.given("dora", observed("d-2", "11", ObservedState::Success, &[1]));
    let record = world.deployment(tool("11").deployment_id());
    assert_eq!(record.state, DeploymentState::Succeeded);
    let succeeded = record.history.iter().filter(|(state, _, _)| *state == DeploymentState::Succeeded).count();
    assert_eq!(succeeded, 1, "one success: {:?}", record.history);
    assert_eq!(world.ci(1).version.as_deref(), Some("v2.1.0"), "the success edited the CI");
    let again = world.execute("dora", &observed("d-2", "11", ObservedState::Success, &[1]));
    assert!(again.is_err(), "the same delivery again is refused, though its stream was presumed new");
}
