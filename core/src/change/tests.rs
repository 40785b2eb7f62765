//! Given/when/then tests of the change decider: the transition table walked row by row, every
//! segregation-of-duties rule, both emergency paths and the overdue report, and bad input.

use uuid::Uuid;

use super::decide::{ChangeDecision, ChangeSettings};
use super::table::{self, Requirement, Target};
use super::*;
use crate::access::{AccessCommand, AccessDecider, AccessKey, AccessState, PrincipalKind, Role};
use crate::ci::{CiEvent, CiSnapshot, Environment, NameKey, Status};
use crate::decider::testing::Scenario;
use crate::model::Severity;
use crate::policy::{LoadPolicy, PolicyDecider};

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);
const HOUR_MICROS: i64 = 3_600_000_000;

fn ci(n: u128) -> CiId {
    CiId(Uuid::from_u128(n))
}

fn change(n: u128) -> ChangeId {
    ChangeId(Uuid::from_u128(0xC0_0000 + n))
}

fn template(n: u128) -> TemplateId {
    TemplateId(Uuid::from_u128(0x7E_0000 + n))
}

/// The test world on the one harness: principals, CIs, changes, templates and the clock.
struct World {
    scenario: Scenario,
    decider: ChangeDecider,
}

impl World {
    /// CIs 1 to 3 live and 9 withdrawn (registered first, at positions 1 to 5), and the
    /// principals of the tests with their roles.
    fn new() -> World {
        let world = World { scenario: Scenario::new(), decider: ChangeDecider::default() };
        for n in 1..=3 {
            world.add_ci(host(n, Status::Live));
        }
        world.add_ci(host(9, Status::Live));
        let withdrawn = CiEvent::Withdrawn(crate::ci::CiStatusChanged {
            ci_id: ci(9),
            from: Status::Live,
            to: Status::Withdrawn,
            reason: None,
            authorized_by: None,
        });
        world.scenario.given_events(ci(9).stream(), [withdrawn]);
        for (name, roles) in [
            ("alice", &[Role::Editor][..]),
            ("ivan", &[Role::Editor, Role::Deployer][..]),
            ("amy", &[Role::Approver][..]),
            ("abe", &[Role::Approver][..]),
            ("eve", &[Role::EmergencyApprover][..]),
            ("emma", &[Role::EmergencyApprover][..]),
            ("mark", &[Role::ChangeManager][..]),
            ("vera", &[Role::Editor][..]),
            ("olga", &[Role::Viewer][..]),
            ("otto", &[Role::Editor][..]),
        ] {
            world.access_command(AccessCommand::CreatePrincipal {
                name: name.into(),
                kind: PrincipalKind::Person,
                display_name: None,
                roles: roles.iter().copied().collect(),
            });
        }
        world
    }

    /// Registers a CI as the CI domain records it.
    fn add_ci(&self, snapshot: CiSnapshot) {
        let registered = CiEvent::Registered(Box::new(crate::ci::CiRegistered {
            ci_id: snapshot.id,
            class: snapshot.class,
            name: snapshot.name.to_string(),
            status: snapshot.status,
            environment: snapshot.environment,
            owner: snapshot.owner,
            location: snapshot.location,
            version: snapshot.version.as_ref().map(ToString::to_string),
            attributes: (*snapshot.attributes).clone(),
            authorized_by: None,
        }));
        self.scenario.given_events(snapshot.id.stream(), [registered]);
    }

    /// Gives a CI's name to it (a claim of the CI domain).
    fn claim_name(&self, class: CiClass, name: &str, holder: CiId) {
        let claim = CiEvent::NameClaimed(crate::ci::NameClaim { class, name: name.into(), ci_id: holder });
        self.scenario.given_events(NameKey::new(class, name).stream(), [claim]);
    }

    fn access_command(&self, command: AccessCommand) {
        self.scenario.given(&AccessDecider, "system", command);
    }

    fn access(&self) -> AccessState {
        self.scenario.fold(&AccessKey)
    }

    /// Loads an approval policy as the CLI does.
    fn load_policy(&self, name: &str, text: &str) {
        let command = LoadPolicy { name: name.into(), text: text.into(), local_operator: true };
        self.scenario.given(&PolicyDecider, "root", command);
    }

    fn when(&self, actor: &str, command: &ChangeCommand) -> Result<ChangeDecision, ChangeError> {
        self.scenario.when(&self.decider, actor, command)
    }

    /// Decided, and appended.
    fn given(&mut self, actor: &str, command: ChangeCommand) -> &mut World {
        self.scenario.given(&self.decider, actor, command);
        self
    }

    /// The change as its streams tell it.
    fn change(&self, id: ChangeId) -> ChangeRecord {
        match self.scenario.fold(&ChangeKey::Change(id)) {
            ChangeRead::Change(Some(record)) => *record,
            other => panic!("no change {id}: {other:?}"),
        }
    }
}

fn host(n: u128, status: Status) -> CiSnapshot {
    CiSnapshot {
        id: ci(n),
        class: CiClass::Host,
        name: format!("web-{n:02}").into(),
        status,
        environment: Some(Environment::Production),
        owner: None,
        location: None,
        version: None,
        attributes: Default::default(),
    }
}

fn window() -> Window {
    Window {
        start: NOW.saturating_add_micros(24 * HOUR_MICROS),
        end: NOW.saturating_add_micros(26 * HOUR_MICROS),
        time_zone: "Europe/Paris".into(),
    }
}

fn complete_details() -> ChangeDetails {
    ChangeDetails {
        title: "Patch web hosts".into(),
        description: Some("Apply the kernel patch to web-01".into()),
        justification: Some("CVE fix".into()),
        back_out_plan: Some("Boot the previous kernel".into()),
        window: Some(window()),
        implementer: Some("ivan".into()),
        scope: Scope { cis: vec![ci(1)], planned: vec![PlannedCi { class: CiClass::Host, name: "web-10".into() }] },
        links: vec![RecordLink { kind: LinkKind::Incident, id: "INC-1234".into() }],
    }
}

fn draft(id: ChangeId, change_type: ChangeType) -> ChangeCommand {
    ChangeCommand::Draft { change_id: id, change_type, template_id: None, details: complete_details() }
}

fn act(id: ChangeId, action: ChangeAction) -> ChangeCommand {
    let review = (action == ChangeAction::Review).then(|| Review {
        objective_met: true,
        users_satisfied: true,
        side_effects: None,
        follow_up_actions: vec!["automate the patch".into()],
    });
    ChangeCommand::Act { change_id: id, action, note: Some(format!("{action} note")), review, facts: None }
}

fn bare(id: ChangeId, action: ChangeAction) -> ChangeCommand {
    ChangeCommand::Act { change_id: id, action, note: None, review: None, facts: None }
}

fn standard_template(world: &mut World) {
    world.given(
        "mark",
        ChangeCommand::CreateTemplate {
            template_id: template(1),
            name: "restart-web".into(),
            title: "Restart a web host".into(),
            description: "Rolling restart of one web host".into(),
            back_out_plan: "Start it again".into(),
            allowed_classes: vec![CiClass::Host],
        },
    );
}

/// A world with change 1 of `change_type` taken through `path` by the usual actors.
fn through(change_type: ChangeType, path: &[ChangeAction]) -> World {
    let mut world = World::new();
    standard_template(&mut world);
    let command = match change_type {
        ChangeType::Standard => ChangeCommand::Draft {
            change_id: change(1),
            change_type,
            template_id: Some(template(1)),
            details: ChangeDetails { back_out_plan: None, justification: None, ..complete_details() },
        },
        _ => draft(change(1), change_type),
    };
    world.given("alice", command);
    for action in path {
        let actor = actor_for(change_type, *action);
        world.given(actor, act(change(1), *action));
    }
    world
}

fn actor_for(change_type: ChangeType, action: ChangeAction) -> &'static str {
    use ChangeAction::*;
    match action {
        Submit | Cancel => "alice",
        Approve | Reject if change_type == ChangeType::Emergency => "eve",
        Approve | Reject => "amy",
        Start | Complete | Fail | BackOut => "ivan",
        Verify => "vera",
        _ => "mark",
    }
}

fn state_written(decision: &ChangeDecision, id: ChangeId) -> Option<ChangeState> {
    decision.writes.iter().filter(|(s, _)| *s == ChangeKey::State(id)).flat_map(|(_, events)| events).find_map(|e| {
        match e {
            ChangeEvent::Submitted(s) => Some(s.to),
            ChangeEvent::Transitioned(t) => Some(t.to),
            _ => None,
        }
    })
}

// ----------------------------------------------------------------------------------------
// The table, row by row
// ----------------------------------------------------------------------------------------

/// A change of `change_type` put straight into `state`, complete: its events appended as
/// they are, not decided.
fn world_in(state: ChangeState, change_type: ChangeType, retrospective: bool) -> World {
    let mut world = World::new();
    standard_template(&mut world);
    let id = change(1);
    let drafted = ChangeDrafted {
        change_id: id,
        change_type,
        template_id: (change_type == ChangeType::Standard).then(|| template(1)),
        requester: "alice".into(),
        details: complete_details(),
    };
    world.scenario.given_events(details_stream(id), [ChangeEvent::Drafted(drafted)]);
    if state == ChangeState::Draft {
        return world;
    }
    let number = ChangeNumber(1);
    world
        .scenario
        .given_events(numbers_stream(), [ChangeEvent::NumberAssigned(NumberAssigned { number, change_id: id })]);
    let opened = if retrospective {
        ChangeEvent::RetrospectiveRecorded(RetrospectiveRecorded {
            change_id: id,
            number,
            by: "alice".into(),
            scope: complete_details().scope,
            approval_due_at: NOW,
            review_due_at: NOW,
        })
    } else {
        ChangeEvent::Submitted(ChangeSubmitted {
            change_id: id,
            number,
            change_type,
            from: ChangeState::Draft,
            to: ChangeState::Submitted,
            by: "alice".into(),
            scope: complete_details().scope,
        })
    };
    let moved = ChangeEvent::Transitioned(ChangeTransitioned {
        change_id: id,
        action: ChangeAction::Submit,
        from: ChangeState::Submitted,
        to: state,
        by: "mark".into(),
        note: None,
        review: None,
        review_due_at: None,
        in_freeze: Vec::new(),
    });
    world.scenario.given_events(state_stream(id), [opened, moved]);
    assert_eq!(world.change(id).state, state, "put straight into {state}");
    assert_eq!(world.change(id).retrospective, retrospective);
    world
}

fn actor_for_row(row: &table::Transition) -> &'static str {
    if row.requires.contains(&Requirement::SegregatedApprover) {
        return if row.operation == crate::access::Operation::ApproveEmergencyChange { "eve" } else { "amy" };
    }
    if row.requires.contains(&Requirement::ActorIsImplementer) {
        return "ivan";
    }
    if row.requires.contains(&Requirement::RequesterOrManager) {
        return "alice";
    }
    "mark"
}

#[test]
fn every_transition_in_the_table_is_allowed_and_every_other_is_refused() {
    let mut allowed = 0;
    let mut refused = 0;
    for &change_type in ChangeType::ALL {
        for &state in ChangeState::ALL {
            for &action in ChangeAction::ALL {
                let row = table::find(action, state, change_type);
                let retrospective = row.is_some_and(|r| r.requires.contains(&Requirement::Retrospective));
                let world = world_in(state, change_type, retrospective);
                let actor = row.map_or("mark", actor_for_row);
                let result = world.when(actor, &act(change(1), action));
                match row {
                    Some(row) => {
                        let decision = result.unwrap_or_else(|e| {
                            panic!("{action} of a {change_type} change in {state} by {actor}: {e}")
                        });
                        let expected = match row.to {
                            Target::To(to) => Some(to),
                            Target::Same => None,
                        };
                        assert_eq!(state_written(&decision, change(1)), expected, "{action} {change_type} {state}");
                        allowed += 1;
                    }
                    None => {
                        match result {
                            Err(ChangeError::TransitionNotAllowed { action: a, state: s, .. }) => {
                                assert_eq!((a, s), (action, state));
                            }
                            other => panic!("{action} of a {change_type} change in {state}: {other:?}"),
                        }
                        refused += 1;
                    }
                }
            }
        }
    }
    assert_eq!(allowed + refused, ChangeType::ALL.len() * ChangeState::ALL.len() * ChangeAction::ALL.len());
    assert!(allowed >= 40, "{allowed} allowed cells");
}

#[test]
fn every_row_refuses_an_actor_without_its_role() {
    for row in table::TRANSITIONS {
        let state = row.from[0];
        let change_type = row.types[0];
        let retrospective = row.requires.contains(&Requirement::Retrospective);
        let world = world_in(state, change_type, retrospective);
        // olga is a viewer: no change operation is hers.
        match world.when("olga", &act(change(1), row.action)) {
            Err(ChangeError::NotPermitted { principal, .. }) => assert_eq!(principal, "olga"),
            other => panic!("{:?} by a viewer: {other:?}", row.action),
        }
    }
}

#[test]
fn rows_that_need_a_note_refuse_without_one() {
    for row in table::TRANSITIONS {
        if !row.requires.iter().any(|r| matches!(r, Requirement::Note | Requirement::SignOffNote)) {
            continue;
        }
        let retrospective = row.requires.contains(&Requirement::Retrospective);
        let world = world_in(row.from[0], row.types[0], retrospective);
        match world.when(actor_for_row(row), &bare(change(1), row.action)) {
            Err(ChangeError::Missing { field: "note", .. }) => {}
            other => panic!("{:?} without a note: {other:?}", row.action),
        }
    }
}

// ----------------------------------------------------------------------------------------
// Life cycles
// ----------------------------------------------------------------------------------------

#[test]
fn a_normal_change_goes_from_draft_to_closed_and_gets_the_first_number() {
    use ChangeAction::*;
    let world =
        through(ChangeType::Normal, &[Submit, Assess, Approve, Schedule, Start, Complete, Verify, Review, Close]);
    let record = world.change(change(1));
    assert_eq!(record.state, ChangeState::Closed);
    assert_eq!(record.number, Some(ChangeNumber(1)));
    assert_eq!(record.number.map(|n| n.to_string()).as_deref(), Some("CHG-000001"));
    let path: Vec<ChangeState> = record.transitions.iter().map(|t| t.to).collect();
    assert_eq!(
        path,
        [
            ChangeState::Draft,
            ChangeState::Submitted,
            ChangeState::Assessed,
            ChangeState::Approved,
            ChangeState::Scheduled,
            ChangeState::Implementing,
            ChangeState::Implemented,
            ChangeState::Verified,
            ChangeState::Reviewed,
            ChangeState::Closed
        ]
    );
    let who: Vec<&str> = record.transitions.iter().map(|t| t.by.as_str()).collect();
    assert_eq!(who, ["alice", "alice", "mark", "amy", "mark", "ivan", "ivan", "vera", "mark", "mark"]);
    assert_eq!(record.approvals.len(), 1);
    assert_eq!(record.approvals[0].roles_held, [Role::Approver].into());
    assert_eq!(record.sign_off.as_ref().map(|s| s.by.as_str()), Some("vera"));
    assert!(record.review.as_ref().is_some_and(|r| r.review.objective_met));
}

#[test]
fn a_failed_change_is_backed_out_reviewed_and_closed() {
    use ChangeAction::*;
    let world = through(ChangeType::Normal, &[Submit, Assess, Approve, Schedule, Start, Fail, BackOut, Review, Close]);
    assert_eq!(world.change(change(1)).state, ChangeState::Closed);
}

#[test]
fn a_normal_change_cannot_close_without_its_review() {
    use ChangeAction::*;
    let world = through(ChangeType::Normal, &[Submit, Assess, Approve, Schedule, Start, Complete, Verify]);
    match world.when("mark", &act(change(1), Close)) {
        Err(ChangeError::TransitionNotAllowed { state: ChangeState::Verified, allowed, .. }) => {
            assert_eq!(allowed, "review");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_standard_change_is_pre_approved_at_submission_and_may_close_without_review() {
    use ChangeAction::*;
    let world = through(ChangeType::Standard, &[Submit]);
    let record = world.change(change(1));
    assert_eq!(record.state, ChangeState::Approved);
    assert_eq!(record.details.back_out_plan.as_deref(), Some("Start it again"), "from the template");
    let world = through(ChangeType::Standard, &[Submit, Schedule, Start, Complete, Verify, Close]);
    assert_eq!(world.change(change(1)).state, ChangeState::Closed);
}

#[test]
fn a_standard_change_must_come_from_an_active_template_and_stay_within_its_classes() {
    let mut world = World::new();
    standard_template(&mut world);
    let command = |details: ChangeDetails, template_id| ChangeCommand::Draft {
        change_id: change(1),
        change_type: ChangeType::Standard,
        template_id,
        details,
    };
    assert_eq!(
        world.when("alice", &command(complete_details(), None)),
        Err(ChangeError::TemplateMismatch(ChangeType::Standard))
    );
    assert_eq!(
        world.when("alice", &command(complete_details(), Some(template(2)))),
        Err(ChangeError::UnknownTemplate(template(2)))
    );
    let database = ChangeDetails {
        scope: Scope { cis: vec![], planned: vec![PlannedCi { class: CiClass::Database, name: "db".into() }] },
        ..complete_details()
    };
    assert!(matches!(
        world.when("alice", &command(database, Some(template(1)))),
        Err(ChangeError::ClassNotInTemplate { class: CiClass::Database, .. })
    ));
    assert_eq!(
        world.when(
            "alice",
            &ChangeCommand::Draft {
                change_id: change(1),
                change_type: ChangeType::Normal,
                template_id: Some(template(1)),
                details: complete_details()
            }
        ),
        Err(ChangeError::TemplateMismatch(ChangeType::Normal))
    );
    world.given("alice", command(complete_details(), Some(template(1))));
    world.given("mark", ChangeCommand::RetireTemplate { template_id: template(1), reason: Some("replaced".into()) });
    assert_eq!(
        world.when("alice", &act(change(1), ChangeAction::Submit)),
        Err(ChangeError::TemplateRetired(template(1))),
        "a retired template's drafts cannot be submitted"
    );
}

#[test]
fn numbers_are_assigned_at_submission_in_order_without_gaps() {
    let mut world = World::new();
    for n in 1..=3 {
        world.given("alice", draft(change(n), ChangeType::Normal));
    }
    assert!((1..=3).all(|n| world.change(change(n)).number.is_none()), "drafts have no number");
    for n in [2, 3, 1] {
        world.given("alice", act(change(n), ChangeAction::Submit));
    }
    assert_eq!(world.change(change(2)).number, Some(ChangeNumber(1)));
    assert_eq!(world.change(change(3)).number, Some(ChangeNumber(2)));
    assert_eq!(world.change(change(1)).number, Some(ChangeNumber(3)));
}

#[test]
fn change_numbers_parse_and_print() {
    assert_eq!("CHG-000042".parse::<ChangeNumber>(), Ok(ChangeNumber(42)));
    assert_eq!("chg-7".parse::<ChangeNumber>(), Ok(ChangeNumber(7)));
    assert_eq!(ChangeNumber(1_234_567).to_string(), "CHG-1234567");
    for bad in ["CHG-", "CHG-0", "CHG-12a", "42", "INC-000001", "CHG--1", ""] {
        assert!(
            matches!(bad.parse::<ChangeNumber>(), Err(crate::model::ModelError::InvalidChangeNumber(_))),
            "{bad:?}"
        );
    }
}

// ----------------------------------------------------------------------------------------
// Segregation of duties (CH-4)
// ----------------------------------------------------------------------------------------

#[test]
fn the_requester_cannot_approve_even_holding_the_approver_role() {
    use ChangeAction::*;
    let world = through(ChangeType::Normal, &[Submit, Assess]);
    world.access_command(AccessCommand::GrantRole { name: "alice".into(), role: Role::Approver });
    match world.when("alice", &act(change(1), Approve)) {
        Err(ChangeError::SegregationOfDuties { principal, rule, .. }) => {
            assert_eq!(principal, "alice");
            assert!(rule.contains("requester"), "{rule}");
        }
        other => panic!("{other:?}"),
    }
    match world.when("alice", &act(change(1), Reject)) {
        Err(ChangeError::SegregationOfDuties { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_implementer_cannot_approve() {
    use ChangeAction::*;
    let world = through(ChangeType::Normal, &[Submit, Assess]);
    world.access_command(AccessCommand::GrantRole { name: "ivan".into(), role: Role::Approver });
    match world.when("ivan", &act(change(1), Approve)) {
        Err(ChangeError::SegregationOfDuties { rule, .. }) => assert!(rule.contains("implementer"), "{rule}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_principal_decides_at_most_once() {
    use ChangeAction::*;
    let mut world = World::new();
    world.given("ivan", ChangeCommand::RecordRetrospective { change_id: change(1), details: complete_details() });
    world.given("eve", act(change(1), Approve));
    world.given("vera", act(change(1), Verify));
    match world.when("eve", &act(change(1), Approve)) {
        Err(ChangeError::AlreadyDecided { principal, decision, .. }) => {
            assert_eq!((principal.as_str(), decision), ("eve", Verdict::Approve));
        }
        other => panic!("{other:?}"),
    }
    // Another emergency approver still may.
    assert!(world.when("emma", &act(change(1), Approve)).is_ok());
}

#[test]
fn an_approval_counts_only_with_the_role_held_at_that_moment_and_survives_a_later_revocation() {
    use ChangeAction::*;
    let mut world = through(ChangeType::Normal, &[Submit, Assess]);
    // vera is an editor, not an approver.
    assert!(matches!(world.when("vera", &act(change(1), Approve)), Err(ChangeError::NotPermitted { .. })));
    // A normal approver is not the emergency authority, and the reverse.
    assert!(matches!(world.when("eve", &act(change(1), Approve)), Err(ChangeError::NotPermitted { .. })));
    world.given("amy", act(change(1), Approve));
    world.access_command(AccessCommand::RevokeRole { name: "amy".into(), role: Role::Approver });
    let record = world.change(change(1));
    assert_eq!(record.state, ChangeState::Approved, "a later revocation does not undo the approval");
    assert_eq!(record.approvals[0].roles_held, [Role::Approver].into(), "the record shows the role then");
    assert!(!world.access().principals["amy"].roles.contains(&Role::Approver), "and the access state shows it now");
    world.given("mark", act(change(1), Schedule));
}

#[test]
fn the_implementer_cannot_verify_and_only_the_implementer_implements() {
    use ChangeAction::*;
    let mut world = through(ChangeType::Normal, &[Submit, Assess, Approve, Schedule]);
    match world.when("vera", &act(change(1), Start)) {
        Err(ChangeError::NotImplementer { implementer, .. }) => assert_eq!(implementer, "ivan"),
        other => panic!("{other:?}"),
    }
    world.given("ivan", act(change(1), Start)).given("ivan", act(change(1), Complete));
    match world.when("ivan", &act(change(1), Verify)) {
        Err(ChangeError::SegregationOfDuties { rule, .. }) => assert!(rule.contains("sign off"), "{rule}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(world.when("vera", &bare(change(1), Verify)), Err(ChangeError::Missing { field: "note", .. })));
}

#[test]
fn only_the_requester_or_a_change_manager_submits_amends_or_cancels() {
    let world = {
        let mut w = World::new();
        w.given("alice", draft(change(1), ChangeType::Normal));
        w
    };
    for command in [
        act(change(1), ChangeAction::Submit),
        act(change(1), ChangeAction::Cancel),
        ChangeCommand::Amend {
            change_id: change(1),
            patch: DetailsPatch { title: Some("Other".into()), ..DetailsPatch::default() },
        },
    ] {
        assert!(matches!(world.when("vera", &command), Err(ChangeError::NotRequester { .. })), "{command:?}");
        assert!(world.when("mark", &command).is_ok(), "{command:?}");
    }
}

// ----------------------------------------------------------------------------------------
// Emergency changes (CH-8)
// ----------------------------------------------------------------------------------------

#[test]
fn emergency_path_a_approved_by_the_emergency_authority_then_implemented_at_once() {
    use ChangeAction::*;
    let mut world = through(ChangeType::Emergency, &[Submit, Approve, Start, Complete]);
    let record = world.change(change(1));
    assert_eq!(record.state, ChangeState::Implemented);
    assert_eq!(record.approvals[0].authority, Some(Role::EmergencyApprover));
    let due = NOW.saturating_add_micros(72 * HOUR_MICROS);
    assert_eq!(record.review_due_at, Some(due));
    assert!(record.overdue(due).is_empty(), "due, not yet overdue");
    assert_eq!(record.overdue(due.saturating_add_micros(1)), vec![Overdue::Review]);
    world.given("vera", act(change(1), Verify)).given("mark", act(change(1), Review));
    assert!(world.change(change(1)).overdue(due.saturating_add_micros(1)).is_empty());
    world.given("mark", act(change(1), Close));
}

#[test]
fn emergency_path_b_recorded_retrospectively_must_be_approved_and_reviewed_in_time() {
    use ChangeAction::*;
    let mut world = World::new();
    world.given("ivan", ChangeCommand::RecordRetrospective { change_id: change(1), details: complete_details() });
    let record = world.change(change(1));
    assert_eq!(record.state, ChangeState::Implemented);
    assert_eq!(record.change_type, ChangeType::Emergency);
    assert_eq!(record.number, Some(ChangeNumber(1)));
    assert!(record.retrospective);
    let due = NOW.saturating_add_micros(72 * HOUR_MICROS);
    assert_eq!((record.approval_due_at, record.review_due_at), (Some(due), Some(due)));
    let late = due.saturating_add_micros(HOUR_MICROS);
    assert_eq!(record.overdue(late), vec![Overdue::Approval, Overdue::Review]);
    // Reviewing first is refused: it must be brought back into compliance.
    world.given("vera", act(change(1), Verify));
    assert_eq!(
        world.when("mark", &act(change(1), Review)),
        Err(ChangeError::NotYetApproved { change: "CHG-000001".into() })
    );
    // A normal approver is not the emergency authority.
    assert!(matches!(world.when("amy", &act(change(1), Approve)), Err(ChangeError::NotPermitted { .. })));
    world.given("eve", act(change(1), Approve));
    assert_eq!(world.change(change(1)).state, ChangeState::Verified, "a retrospective approval keeps the state");
    assert_eq!(world.change(change(1)).overdue(late), vec![Overdue::Review]);
    world.given("mark", act(change(1), Review)).given("mark", act(change(1), Close));
    assert!(world.change(change(1)).overdue(late).is_empty());
}

#[test]
fn a_retrospective_change_needs_justification_and_back_out_plan() {
    let world = World::new();
    let details = ChangeDetails { justification: None, ..complete_details() };
    assert_eq!(
        world.when("ivan", &ChangeCommand::RecordRetrospective { change_id: change(1), details }),
        Err(ChangeError::Missing {
            field: "justification",
            why: "for normal and emergency changes (why the change is worth making)"
        })
    );
}

// ----------------------------------------------------------------------------------------
// Bad input: a clear error and nothing to append
// ----------------------------------------------------------------------------------------

#[test]
#[allow(clippy::too_many_lines, reason = "one table of bad inputs and their errors")]
fn bad_input_is_refused_with_a_clear_error() {
    let mut world = World::new();
    let with = |f: &dyn Fn(&mut ChangeDetails)| {
        let mut details = complete_details();
        f(&mut details);
        ChangeCommand::Draft { change_id: change(5), change_type: ChangeType::Normal, template_id: None, details }
    };
    let cases: Vec<(ChangeCommand, ChangeError)> = vec![
        (act(change(77), ChangeAction::Submit), ChangeError::UnknownChange(change(77).to_string())),
        (with(&|d| d.scope.cis.push(ci(42))), ChangeError::UnknownCi(ci(42))),
        (with(&|d| d.scope.cis.push(ci(9))), ChangeError::CiWithdrawn(ci(9))),
        (with(&|d| d.scope.cis.push(ci(1))), ChangeError::DuplicateScope(ci(1).to_string())),
        (
            with(&|d| {
                d.window = Some(Window { start: NOW, end: NOW.saturating_add_micros(-1), time_zone: "UTC".into() })
            }),
            ChangeError::WindowEndsBeforeStart { start: NOW, end: NOW.saturating_add_micros(-1) },
        ),
        (
            with(&|d| d.window = Some(Window { start: NOW, end: NOW, time_zone: "UTC".into() })),
            ChangeError::WindowEndsBeforeStart { start: NOW, end: NOW },
        ),
        (
            with(&|d| {
                d.window = Some(Window {
                    start: NOW,
                    end: NOW.saturating_add_micros(HOUR_MICROS),
                    time_zone: "Mars/Olympus".into(),
                })
            }),
            ChangeError::UnknownTimeZone("Mars/Olympus".into()),
        ),
        (
            with(&|d| {
                d.window = Some(Window {
                    start: NOW,
                    end: NOW.saturating_add_micros((MAX_WINDOW_HOURS + 1) * HOUR_MICROS),
                    time_zone: "UTC".into(),
                })
            }),
            ChangeError::WindowTooLong { hours: MAX_WINDOW_HOURS + 1 },
        ),
        (with(&|d| d.implementer = Some("nobody".into())), ChangeError::UnknownPrincipal("nobody".into())),
        (with(&|d| d.title = " ".into()), ChangeError::Empty { field: "title" }),
        (
            with(&|d| d.title = "x".repeat(MAX_TITLE_BYTES + 1)),
            ChangeError::TooLong { field: "title", bytes: MAX_TITLE_BYTES + 1, bound: MAX_TITLE_BYTES },
        ),
        (
            with(&|d| d.scope.planned.push(PlannedCi { class: CiClass::Host, name: "web-01".into() })),
            ChangeError::PlannedExists { class: CiClass::Host, name: "web-01".into(), existing: ci(1) },
        ),
        (
            with(&|d| d.scope.planned.push(PlannedCi { class: CiClass::Host, name: " spaced".into() })),
            ChangeError::InvalidPlannedName(" spaced".into()),
        ),
        (
            with(&|d| d.links.push(RecordLink { kind: LinkKind::Problem, id: "".into() })),
            ChangeError::InvalidLink("".into()),
        ),
        (
            with(&|d| d.links.push(RecordLink { kind: LinkKind::Incident, id: "INC-1234".into() })),
            ChangeError::DuplicateLink {
                change: format!("draft change {}", change(5)),
                kind: LinkKind::Incident,
                id: "INC-1234".into(),
            },
        ),
    ];
    world.claim_name(CiClass::Host, "web-01", ci(1));
    for (command, expected) in cases {
        assert_eq!(world.when("alice", &command), Err(expected), "{command:?}");
    }
    // Missing fields at submission.
    for (index, (field, strip)) in [
        ("back_out_plan", &(|d: &mut ChangeDetails| d.back_out_plan = None) as &dyn Fn(&mut ChangeDetails)),
        ("justification", &|d: &mut ChangeDetails| d.justification = None),
        ("description", &|d: &mut ChangeDetails| d.description = None),
        ("implementer", &|d: &mut ChangeDetails| d.implementer = None),
        ("scope", &|d: &mut ChangeDetails| d.scope = Scope::default()),
    ]
    .into_iter()
    .enumerate()
    {
        let id = change(10 + index as u128);
        let mut details = complete_details();
        strip(&mut details);
        world.given(
            "alice",
            ChangeCommand::Draft { change_id: id, change_type: ChangeType::Normal, template_id: None, details },
        );
        match world.when("alice", &act(id, ChangeAction::Submit)) {
            Err(ChangeError::Missing { field: missing, .. }) => assert_eq!(missing, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Wrong state.
    world.given("alice", draft(change(1), ChangeType::Normal));
    assert!(matches!(
        world.when("amy", &act(change(1), ChangeAction::Approve)),
        Err(ChangeError::TransitionNotAllowed { state: ChangeState::Draft, .. })
    ));
    // Amending after submission.
    world.given("alice", act(change(1), ChangeAction::Submit));
    assert_eq!(
        world.when(
            "alice",
            &ChangeCommand::Amend {
                change_id: change(1),
                patch: DetailsPatch { title: Some("x".into()), ..DetailsPatch::default() }
            }
        ),
        Err(ChangeError::NotEditable { change: "CHG-000001".into(), state: ChangeState::Submitted })
    );
    // Review findings with another action.
    let mut with_review = act(change(1), ChangeAction::Review);
    if let ChangeCommand::Act { action, .. } = &mut with_review {
        *action = ChangeAction::Assess;
    }
    assert_eq!(
        world.when("mark", &with_review),
        Err(ChangeError::NotApplicable { field: "review", only_with: ChangeAction::Review })
    );
}

#[test]
fn the_scope_is_bounded_at_max_scope_items() {
    let mut world = World::new();
    let planned = |count: usize| -> Vec<PlannedCi> {
        (0..count).map(|i| PlannedCi { class: CiClass::Host, name: format!("new-{i}") }).collect()
    };
    let at_bound = ChangeDetails {
        scope: Scope { cis: vec![ci(1)], planned: planned(MAX_SCOPE_ITEMS - 1) },
        ..complete_details()
    };
    let past =
        ChangeDetails { scope: Scope { cis: vec![ci(1)], planned: planned(MAX_SCOPE_ITEMS) }, ..complete_details() };
    let draft_with = |details| ChangeCommand::Draft {
        change_id: change(1),
        change_type: ChangeType::Normal,
        template_id: None,
        details,
    };
    assert_eq!(world.when("alice", &draft_with(past)), Err(ChangeError::ScopeTooLarge { count: MAX_SCOPE_ITEMS + 1 }));
    world.given("alice", draft_with(at_bound));
}

#[test]
fn comments_and_links_are_recorded_and_bounded() {
    let mut world = World::new();
    world.given("alice", draft(change(1), ChangeType::Normal));
    world.given("vera", ChangeCommand::Comment { change_id: change(1), text: "looks fine".into() });
    assert_eq!(
        world.when("vera", &ChangeCommand::Comment { change_id: change(1), text: "x".repeat(MAX_COMMENT_BYTES + 1) }),
        Err(ChangeError::TooLong { field: "comment", bytes: MAX_COMMENT_BYTES + 1, bound: MAX_COMMENT_BYTES })
    );
    assert!(matches!(
        world.when("olga", &ChangeCommand::Comment { change_id: change(1), text: "hi".into() }),
        Err(ChangeError::NotPermitted { .. })
    ));
    world.given(
        "alice",
        ChangeCommand::Link { change_id: change(1), link: RecordLink { kind: LinkKind::Problem, id: "PRB-7".into() } },
    );
    let record = world.change(change(1));
    assert_eq!(record.comments.len(), 1);
    assert_eq!(record.details.links.len(), 2);
    // A comment writes the request stream only, never the state stream CI edits depend on.
    let decision =
        world.when("vera", &ChangeCommand::Comment { change_id: change(1), text: "again".into() }).expect("comment");
    assert!(decision.writes.iter().all(|(s, _)| *s == ChangeKey::Details(change(1))));
    for _ in 1..MAX_COMMENTS_PER_CHANGE {
        world.given("vera", ChangeCommand::Comment { change_id: change(1), text: "more".into() });
    }
    assert!(matches!(
        world.when("vera", &ChangeCommand::Comment { change_id: change(1), text: "one too many".into() }),
        Err(ChangeError::TooMany { what: "comments", .. })
    ));
}

#[test]
fn approvals_write_the_request_stream_and_the_transition_the_state_stream() {
    use ChangeAction::*;
    let world = through(ChangeType::Normal, &[Submit, Assess]);
    let decision = world.when("amy", &act(change(1), Approve)).expect("approve");
    let keys: Vec<&ChangeKey> = decision.writes.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [&ChangeKey::Details(change(1)), &ChangeKey::State(change(1))]);
}

// ----------------------------------------------------------------------------------------
// Assessment and the approval policy (CH-2, CH-4)
// ----------------------------------------------------------------------------------------

mod policy_decisions {
    use super::*;
    use crate::change::risk::{AssessmentFacts, CiFailures, RiskLevel, ServiceFact, ServiceHours, WeeklyHours};
    use crate::policy::{PolicyRecord, replay};

    fn service(tier: u8, always_open: bool, owners: &[&str]) -> ServiceFact {
        ServiceFact {
            id: ci(100 + u128::from(tier)),
            name: format!("tier-{tier} service"),
            tier: Some(tier),
            service_hours: always_open.then(|| {
                std::sync::Arc::new(ServiceHours {
                    time_zone: "Europe/Paris".into(),
                    weekly: vec![WeeklyHours {
                        days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(String::from).to_vec(),
                        start: "00:00".into(),
                        end: "24:00".into(),
                    }],
                })
            }),
            owner_contacts: owners.iter().map(|o| format!("{o}@example.com")).collect(),
            depth: 2,
            severity: Severity::Down,
        }
    }

    fn facts(services: Vec<ServiceFact>, downstream: u32, failures: u32) -> Box<AssessmentFacts> {
        Box::new(AssessmentFacts {
            position: 5,
            computed_at: NOW,
            downstream_cis: downstream,
            truncated: false,
            services,
            services_not_listed: 0,
            other_services: vec![],
            history_days: 90,
            failures: if failures == 0 {
                vec![]
            } else {
                vec![CiFailures { ci: ci(1), failed: failures, backed_out: 0 }]
            },
            calendar: None,
        })
    }

    fn assess(id: ChangeId, facts: Box<AssessmentFacts>) -> ChangeCommand {
        ChangeCommand::Act {
            change_id: id,
            action: ChangeAction::Assess,
            note: Some("assessed".into()),
            review: None,
            facts: Some(facts),
        }
    }

    fn assessed(facts: Box<AssessmentFacts>) -> World {
        let mut world = World::new();
        world.given("alice", draft(change(1), ChangeType::Normal));
        world.given("alice", bare(change(1), ChangeAction::Submit));
        world.given("mark", assess(change(1), facts));
        world
    }

    #[test]
    fn a_low_risk_normal_change_needs_one_approver_as_the_default_policy_says() {
        let mut world = assessed(facts(vec![], 3, 0));
        let record = world.change(change(1));
        let entry = record.assessment().expect("assessed");
        assert_eq!(entry.assessment.level, RiskLevel::Low);
        assert_eq!(entry.decision.policy_version, 0, "the built-in default");
        assert_eq!(entry.decision.output.approvals.len(), 1);
        assert_eq!(record.state, ChangeState::Assessed);
        world.given("amy", bare(change(1), ChangeAction::Approve));
        let record = world.change(change(1));
        assert_eq!(record.state, ChangeState::Approved);
        assert_eq!(record.approvals[0].counts_for, vec!["a change needs an approver (CH-4)".to_owned()]);
    }

    #[test]
    fn high_risk_needs_two_distinct_approvers_before_the_change_is_approved() {
        // normal 10 + tier 2 15 + 11-100 downstream 10 + two failures 20 = 55: high.
        let mut world = assessed(facts(vec![service(2, false, &[])], 50, 2));
        assert_eq!(world.change(change(1)).assessment().map(|a| a.assessment.level), Some(RiskLevel::High));
        world.given("amy", bare(change(1), ChangeAction::Approve));
        let record = world.change(change(1));
        assert_eq!(record.state, ChangeState::Assessed, "one of two approvals");
        let status = record.approval_status().expect("a decision");
        assert_eq!(status[0].approved_by, vec!["amy".to_owned()]);
        assert!(!status[0].met());
        // The same approver cannot count twice.
        let again = world.when("amy", &bare(change(1), ChangeAction::Approve)).unwrap_err();
        assert!(matches!(again, ChangeError::AlreadyDecided { .. }), "{again}");
        world.given("abe", bare(change(1), ChangeAction::Approve));
        assert_eq!(world.change(change(1)).state, ChangeState::Approved);
    }

    #[test]
    fn a_tier1_service_needs_one_of_its_owners_who_approves_without_an_approver_role() {
        let mut world = assessed(facts(vec![service(1, false, &["otto"])], 5, 0));
        let record = world.change(change(1));
        let output = &record.assessment().expect("assessed").decision.output;
        assert!(output.approvals.iter().any(|r| r.principals == vec!["otto".to_owned()]), "{output:?}");
        // An editor the decision does not name may not approve.
        let refused = world.when("vera", &bare(change(1), ChangeAction::Approve)).unwrap_err();
        assert!(matches!(refused, ChangeError::NotPermitted { .. }), "{refused}");
        world.given("amy", bare(change(1), ChangeAction::Approve));
        assert_eq!(world.change(change(1)).state, ChangeState::Assessed, "the owner has not approved");
        world.given("otto", bare(change(1), ChangeAction::Approve));
        let record = world.change(change(1));
        assert_eq!(record.state, ChangeState::Approved);
        assert_eq!(record.approvals[1].authority, None, "named by the policy, not by a role");
        // The requester stays barred even when named as an owner.
        let mut world = World::new();
        world.given("alice", draft(change(1), ChangeType::Normal));
        world.given("alice", bare(change(1), ChangeAction::Submit));
        world.given("mark", assess(change(1), facts(vec![service(1, false, &["alice"])], 5, 0)));
        let refused = world.when("alice", &bare(change(1), ChangeAction::Approve)).unwrap_err();
        assert!(matches!(refused, ChangeError::SegregationOfDuties { .. }), "{refused}");
    }

    #[test]
    fn a_denied_change_cannot_be_approved_but_can_be_rejected() {
        // Critical without a requested window: denied by the default policy.
        // normal 10 + tier 1 25 + 101-1,000 CIs 15 + two failures 20 + no window 5 = 75.
        let mut world = World::new();
        let mut details = complete_details();
        details.window = None;
        world.given(
            "alice",
            ChangeCommand::Draft { change_id: change(1), change_type: ChangeType::Normal, template_id: None, details },
        );
        world.given("alice", bare(change(1), ChangeAction::Submit));
        world.given("mark", assess(change(1), facts(vec![service(1, true, &["otto"])], 500, 2)));
        let entry = world.change(change(1)).assessment().expect("assessed").clone();
        assert_eq!(entry.assessment.level, RiskLevel::Critical);
        assert!(!entry.decision.output.deny.is_empty());
        let refused = world.when("amy", &bare(change(1), ChangeAction::Approve)).unwrap_err();
        match refused {
            ChangeError::PolicyDenied { reasons, .. } => assert!(reasons[0].contains("window"), "{reasons:?}"),
            other => panic!("{other}"),
        }
        world.given("amy", act(change(1), ChangeAction::Reject));
        assert_eq!(world.change(change(1)).state, ChangeState::Rejected);
    }

    #[test]
    fn a_standard_change_is_auto_approved_unless_the_policy_withdraws_it() {
        let mut world = World::new();
        standard_template(&mut world);
        let draft_standard = |id| ChangeCommand::Draft {
            change_id: id,
            change_type: ChangeType::Standard,
            template_id: Some(template(1)),
            details: ChangeDetails {
                title: String::new(),
                implementer: Some("ivan".into()),
                window: Some(window()),
                scope: Scope { cis: vec![ci(1)], planned: vec![] },
                ..ChangeDetails::default()
            },
        };
        let submit = |id, facts| ChangeCommand::Act {
            change_id: id,
            action: ChangeAction::Submit,
            note: None,
            review: None,
            facts: Some(facts),
        };
        world.given("alice", draft_standard(change(1)));
        world.given("alice", submit(change(1), facts(vec![], 2, 0)));
        assert_eq!(world.change(change(1)).state, ChangeState::Approved);
        assert!(world.change(change(1)).assessment().expect("decided").decision.output.auto_approve);
        // Inside a tier-1 service's hours: assessed, and an approver decides.
        world.given("alice", draft_standard(change(2)));
        world.given("alice", submit(change(2), facts(vec![service(1, true, &[])], 2, 0)));
        let record = world.change(change(2));
        assert_eq!(record.state, ChangeState::Assessed);
        assert_eq!(record.number, Some(ChangeNumber(2)), "the decision saw the number");
        // standard 0 + tier 1 25 + downstream 5 + tier-1 hours 20 = 50: high, so two approvers,
        // and a change manager for the owner-less tier-1 service.
        world.given("amy", bare(change(2), ChangeAction::Approve));
        world.given("abe", bare(change(2), ChangeAction::Approve));
        assert_eq!(world.change(change(2)).state, ChangeState::Assessed, "the change manager is missing");
        world.given("mark", bare(change(2), ChangeAction::Approve));
        let record = world.change(change(2));
        assert_eq!(record.state, ChangeState::Approved, "two approvers and a change manager");
        assert_eq!(record.approvals[2].authority, Some(Role::ChangeManager));
        // Facts belong to assessments and standard submissions only.
        world.given("alice", draft(change(3), ChangeType::Normal));
        let refused = world.when("alice", &submit(change(3), facts(vec![], 0, 0))).unwrap_err();
        assert!(matches!(refused, ChangeError::NotApplicable { .. }), "{refused}");
    }

    #[test]
    fn reassessment_adds_a_decision_and_is_refused_where_it_makes_no_sense() {
        let mut world = assessed(facts(vec![], 3, 0));
        let reassess =
            |facts| ChangeCommand::Reassess { change_id: change(1), facts, trigger: AssessmentTrigger::ScopeChanged };
        let refused = world.when("vera", &reassess(facts(vec![], 3, 0))).unwrap_err();
        assert!(matches!(refused, ChangeError::NotPermitted { .. }), "{refused}");
        world.given("amy", reassess(facts(vec![service(2, false, &[])], 50, 2)));
        let record = world.change(change(1));
        assert_eq!(record.assessments.len(), 2);
        assert_eq!(record.assessments[1].trigger, AssessmentTrigger::ScopeChanged);
        assert_eq!(record.assessment().map(|a| a.assessment.level), Some(RiskLevel::High));
        // Bad facts: a history window out of range.
        let mut bad = facts(vec![], 3, 0);
        bad.history_days = 0;
        assert!(matches!(world.when("mark", &reassess(bad)).unwrap_err(), ChangeError::HistoryDays { days: 0 }));
        world.given("amy", bare(change(1), ChangeAction::Approve));
        world.given("abe", bare(change(1), ChangeAction::Approve));
        let late = world.when("mark", &reassess(facts(vec![], 3, 0))).unwrap_err();
        assert!(matches!(late, ChangeError::NotReassessable { state: ChangeState::Approved, .. }), "{late}");
        let mut draft_world = World::new();
        draft_world.given("alice", draft(change(1), ChangeType::Normal));
        let early = draft_world.when("mark", &reassess(facts(vec![], 3, 0))).unwrap_err();
        assert!(matches!(early, ChangeError::NotReassessable { state: ChangeState::Draft, .. }), "{early}");
    }

    #[test]
    fn a_loaded_policy_decides_and_its_decisions_replay_even_after_a_newer_one() {
        let strict = PolicyRecord {
            version: 1,
            name: "strict".into(),
            text: "package cmdb.change\nimport rego.v1\ndefault score := 0\nscore := input.assessment.score\ndecision := {\"approvals\": [{\"role\": \"approver\", \"count\": 2, \"reason\": sprintf(\"always two (score %d)\", [score])}]}\n".into(),
            hash: crate::policy::text_hash("placeholder"),
            by: "root".into(),
            loaded_at: Some(NOW),
            position: Some(1),
        };
        let strict = PolicyRecord { hash: crate::policy::text_hash(&strict.text), ..strict };
        let mut world = World::new();
        world.load_policy("strict", &strict.text);
        world.given("alice", draft(change(1), ChangeType::Normal));
        world.given("alice", bare(change(1), ChangeAction::Submit));
        world.given("mark", assess(change(1), facts(vec![], 3, 0)));
        let entry = world.change(change(1)).assessment().expect("assessed").clone();
        assert_eq!(entry.decision.policy_version, 1);
        assert_eq!(entry.decision.policy_hash, strict.hash);
        assert_eq!(entry.decision.output.approvals[0].reason, "always two (score 15)");
        let input: serde_json::Value = serde_json::from_str(&entry.decision.input).expect("canonical JSON");
        assert_eq!(input["change"]["scope"]["cis"][0]["name"], "web-01");
        assert_eq!(input["now"], NOW.to_rfc3339());
        // A newer policy does not change how the old decision replays.
        world.load_policy("default again", crate::policy::DEFAULT_POLICY);
        let replayed = replay(&entry.decision, &strict);
        assert!(replayed.matches, "{replayed:?}");
        assert!(!replay(&entry.decision, &PolicyRecord::default_policy()).matches, "another text does not match");
    }

    #[test]
    fn a_policy_failing_on_an_input_refuses_the_assessment_and_writes_nothing() {
        let mut world = World::new();
        // Well-formed on the sample inputs, malformed for this title.
        let text = "package cmdb.change\nimport rego.v1\ndefault role := \"approver\"\nrole := \"pope\" if input.change.title == \"Patch web hosts\"\ndecision := {\"approvals\": [{\"role\": role, \"count\": 1, \"reason\": \"r\"}]}\n";
        crate::policy::Policy::compile(text).expect("passes the load-time checks");
        world.load_policy("odd", text);
        world.given("alice", draft(change(1), ChangeType::Normal));
        world.given("alice", bare(change(1), ChangeAction::Submit));
        let refused = world.when("mark", &assess(change(1), facts(vec![], 3, 0))).unwrap_err();
        assert!(refused.to_string().contains("unknown role \"pope\""), "{refused}");
        assert_eq!(world.change(change(1)).state, ChangeState::Submitted);
    }
}

// ----------------------------------------------------------------------------------------
// Scheduling: freeze windows and conflicts (CH-5)
// ----------------------------------------------------------------------------------------

mod scheduling {
    use super::*;
    use crate::change::freeze::{FreezeId, FreezeSchedule, FreezeScope};
    use crate::ci::Environment;

    fn freeze_id(n: u128) -> FreezeId {
        FreezeId(Uuid::from_u128(0xF0_0000 + n))
    }

    fn approved(change_type: ChangeType) -> World {
        use ChangeAction::*;
        match change_type {
            ChangeType::Standard => through(change_type, &[Submit]),
            ChangeType::Emergency => through(change_type, &[Submit, Approve]),
            ChangeType::Normal => through(change_type, &[Submit, Assess, Approve]),
        }
    }

    fn create_freeze(world: &mut World, n: u128, scope: FreezeScope, schedule: FreezeSchedule) {
        world.given(
            "mark",
            ChangeCommand::CreateFreeze {
                freeze_id: freeze_id(n),
                name: format!("freeze {n}"),
                scope,
                schedule,
                reason: "year-end trading".into(),
            },
        );
    }

    /// The test window is 2026-01-02 00:00 to 02:00 UTC.
    fn covering() -> FreezeSchedule {
        FreezeSchedule::Interval {
            start: NOW.saturating_add_micros(20 * HOUR_MICROS),
            end: NOW.saturating_add_micros(30 * HOUR_MICROS),
        }
    }

    fn schedule(facts: ScheduleFacts) -> ChangeCommand {
        ChangeCommand::Schedule { change_id: change(1), note: None, facts: Box::new(facts) }
    }

    fn conflict(other: u128, acknowledged_by_other: bool) -> ConflictFact {
        ConflictFact {
            other: change(other),
            other_label: format!("CHG-{other:06}"),
            reason: "both change web-01".into(),
            path: vec![ci(1)],
            acknowledged_by_other,
        }
    }

    #[test]
    fn a_normal_change_cannot_be_scheduled_into_a_freeze_that_covers_its_scope() {
        // Global.
        let mut world = approved(ChangeType::Normal);
        create_freeze(&mut world, 1, FreezeScope::Global, covering());
        let refused = world.when("mark", &schedule(ScheduleFacts::default())).unwrap_err();
        match &refused {
            ChangeError::Frozen { hits, .. } => assert!(hits[0].contains("freeze 1"), "{hits:?}"),
            other => panic!("{other}"),
        }
        // Lifted: the change goes in.
        world.given(
            "mark",
            ChangeCommand::LiftFreeze { freeze_id: freeze_id(1), reason: "trading closed early".into() },
        );
        world.given("mark", schedule(ScheduleFacts::default()));
        assert_eq!(world.change(change(1)).state, ChangeState::Scheduled);

        // An environment freeze covers the production host, not staging.
        let mut world = approved(ChangeType::Normal);
        create_freeze(&mut world, 2, FreezeScope::Environment { environment: Environment::Staging }, covering());
        world.when("mark", &schedule(ScheduleFacts::default())).expect("staging is not in scope");
        create_freeze(&mut world, 3, FreezeScope::Environment { environment: Environment::Production }, covering());
        assert!(matches!(world.when("mark", &schedule(ScheduleFacts::default())), Err(ChangeError::Frozen { .. })));

        // A service freeze covers changes whose scope reaches the service.
        let mut world = approved(ChangeType::Normal);
        world.add_ci(CiSnapshot { class: CiClass::BusinessService, ..host(50, Status::Live) });
        create_freeze(&mut world, 4, FreezeScope::Service { service: ci(50) }, covering());
        world.when("mark", &schedule(ScheduleFacts::default())).expect("does not reach the service");
        let reaching = ScheduleFacts { services: vec![ci(50)], ..ScheduleFacts::default() };
        assert!(matches!(world.when("mark", &schedule(reaching)), Err(ChangeError::Frozen { .. })));

        // A freeze elsewhere in time does not matter.
        let mut world = approved(ChangeType::Normal);
        let later = FreezeSchedule::Interval {
            start: NOW.saturating_add_micros(26 * HOUR_MICROS),
            end: NOW.saturating_add_micros(40 * HOUR_MICROS),
        };
        create_freeze(&mut world, 5, FreezeScope::Global, later);
        world.when("mark", &schedule(ScheduleFacts::default())).expect("the window ends as the freeze starts");
    }

    #[test]
    fn an_emergency_change_passes_a_freeze_flagged_and_a_standard_one_follows_the_setting() {
        let mut world = approved(ChangeType::Emergency);
        create_freeze(&mut world, 1, FreezeScope::Global, covering());
        world.given("mark", schedule(ScheduleFacts::default()));
        let record = world.change(change(1));
        assert_eq!(record.state, ChangeState::Scheduled);
        assert_eq!(record.in_freeze.len(), 1);
        assert_eq!(record.in_freeze[0].name, "freeze 1");

        let mut world = approved(ChangeType::Standard);
        create_freeze(&mut world, 1, FreezeScope::Global, covering());
        assert!(matches!(world.when("mark", &schedule(ScheduleFacts::default())), Err(ChangeError::Frozen { .. })));
        let lenient =
            ChangeDecider { settings: ChangeSettings { freeze_blocks_standard: false, ..ChangeSettings::default() } };
        let decision = world.scenario.when(&lenient, "mark", &schedule(ScheduleFacts::default()));
        decision.expect("standard changes pass when the setting says so");
    }

    #[test]
    fn a_conflict_blocks_scheduling_until_acknowledged_on_either_side() {
        let mut world = approved(ChangeType::Normal);
        let facts = ScheduleFacts { conflicts: vec![conflict(7, false)], ..ScheduleFacts::default() };
        let refused = world.when("mark", &schedule(facts.clone())).unwrap_err();
        match &refused {
            ChangeError::Conflicting { conflicts, .. } => assert!(conflicts[0].contains("CHG-000007"), "{conflicts:?}"),
            other => panic!("{other}"),
        }
        // Acknowledged by the other change: no longer blocking.
        let acked = ScheduleFacts { conflicts: vec![conflict(7, true)], ..ScheduleFacts::default() };
        world.when("mark", &schedule(acked)).expect("acknowledged on the other side");
        // Acknowledging needs a reason, the scheduling authority, and another change.
        let ack = |reason: &str, other| ChangeCommand::AcknowledgeConflict {
            change_id: change(1),
            other: change(other),
            reason: reason.into(),
        };
        assert!(matches!(world.when("mark", &ack("  ", 7)), Err(ChangeError::Empty { .. })));
        assert!(matches!(world.when("vera", &ack("fine", 7)), Err(ChangeError::NotPermitted { .. })));
        assert!(matches!(world.when("mark", &ack("fine", 1)), Err(ChangeError::SelfConflict)));
        world.given("mark", ack("different racks; agreed with the DBA team", 7));
        assert!(matches!(world.when("mark", &ack("again", 7)), Err(ChangeError::NothingToChange)));
        world.given("mark", schedule(facts));
        let record = world.change(change(1));
        assert_eq!(record.state, ChangeState::Scheduled);
        assert_eq!(record.acknowledged[0].0.reason, "different racks; agreed with the DBA team");
        // A new conflict found later blocks a reschedule until acknowledged too.
        let new_window = Window {
            start: NOW.saturating_add_micros(48 * HOUR_MICROS),
            end: NOW.saturating_add_micros(50 * HOUR_MICROS),
            time_zone: "UTC".into(),
        };
        let reschedule = |facts: ScheduleFacts, window: Window| ChangeCommand::Reschedule {
            change_id: change(1),
            window,
            note: Some("moved".into()),
            facts: Box::new(facts),
        };
        let other = ScheduleFacts { conflicts: vec![conflict(8, false)], ..ScheduleFacts::default() };
        assert!(matches!(
            world.when("mark", &reschedule(other, new_window.clone())),
            Err(ChangeError::Conflicting { .. })
        ));
        world.given("mark", reschedule(ScheduleFacts::default(), new_window.clone()));
        let record = world.change(change(1));
        assert_eq!(record.details.window.as_ref(), Some(&new_window));
        assert_eq!(record.reschedules.len(), 1);
        assert_eq!(record.reschedules[0].0, window());
        // Bad windows and the same window are refused.
        let backwards = Window { start: new_window.end, end: new_window.start, time_zone: "UTC".into() };
        assert!(matches!(
            world.when("mark", &reschedule(ScheduleFacts::default(), backwards)),
            Err(ChangeError::WindowEndsBeforeStart { .. })
        ));
        let mars = Window { time_zone: "Mars/Base".into(), ..new_window.clone() };
        assert!(matches!(
            world.when("mark", &reschedule(ScheduleFacts::default(), mars)),
            Err(ChangeError::UnknownTimeZone(_))
        ));
        assert!(matches!(
            world.when("mark", &reschedule(ScheduleFacts::default(), new_window)),
            Err(ChangeError::NothingToChange)
        ));
    }

    #[test]
    fn freeze_commands_refuse_bad_input() {
        let mut world = approved(ChangeType::Normal);
        let create = |scope, schedule, name: &str| ChangeCommand::CreateFreeze {
            freeze_id: freeze_id(9),
            name: name.into(),
            scope,
            schedule,
            reason: "r".into(),
        };
        assert!(matches!(
            world.when("vera", &create(FreezeScope::Global, covering(), "f")),
            Err(ChangeError::NotPermitted { .. })
        ));
        assert!(matches!(
            world.when("mark", &create(FreezeScope::Global, covering(), "")),
            Err(ChangeError::Empty { .. })
        ));
        let bad_rule = FreezeSchedule::Recurring {
            rrule: "FREQ=FORTNIGHTLY".into(),
            start_local: "2026-01-02T18:00".into(),
            time_zone: "Europe/Berlin".into(),
            duration_minutes: 60,
        };
        assert!(matches!(
            world.when("mark", &create(FreezeScope::Global, bad_rule, "f")),
            Err(ChangeError::InvalidRecurrence(_))
        ));
        assert!(matches!(
            world.when("mark", &create(FreezeScope::Service { service: ci(77) }, covering(), "f")),
            Err(ChangeError::UnknownCi(_))
        ));
        assert!(matches!(
            world.when("mark", &create(FreezeScope::Service { service: ci(1) }, covering(), "f")),
            Err(ChangeError::NotAService(_))
        ));
        let lift = ChangeCommand::LiftFreeze { freeze_id: freeze_id(9), reason: "r".into() };
        assert!(matches!(world.when("mark", &lift), Err(ChangeError::UnknownFreeze(_))));
        world.given("mark", create(FreezeScope::Global, covering(), "f"));
        world.given("mark", lift.clone());
        assert!(matches!(world.when("mark", &lift), Err(ChangeError::FreezeAlreadyLifted(_))));
    }
}
