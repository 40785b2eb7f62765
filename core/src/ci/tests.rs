//! Given/when/then tests of the CI decider, on the one harness ([`Scenario`]): given accepted
//! commands (and, for CM-3, a change's state stream as the change domain writes it), when a
//! command comes, then these events per stream, or this error.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use uuid::Uuid;

use super::schema::{ControlDeclared, SchemaEvent, schema_stream};
use super::*;
use crate::control::{ChangeState, state_stream};
use crate::decider::DomainEvent;
use crate::decider::testing::Scenario;
use crate::event::{Metadata, NewEvent};

const ACTOR: &str = "tester";

/// A log and what the tests ask of it.
struct World(Scenario);

/// Every built-in class declared uncontrolled, or controlled again.
fn control_every_class(world: &World, controlled: bool) {
    let events = CiClass::BUILTIN.iter().map(|class| {
        SchemaEvent::ControlDeclared(ControlDeclared { class: *class, controlled, reason: "tests".into() })
    });
    world.0.given_events(schema_stream(), events);
}

/// The world after these commands, each decided and appended in order, with every built-in
/// class uncontrolled: the tests of CI rules other than CM-3.
fn given(commands: &[CiCommand]) -> World {
    let world = World(Scenario::new());
    control_every_class(&world, false);
    given_in(world, commands)
}

fn given_in(world: World, commands: &[CiCommand]) -> World {
    for command in commands {
        world.0.given(&CiDecider, ACTOR, command.clone());
    }
    world
}

fn then_ok(world: &World, command: &CiCommand) -> Result<CiDecision, CiError> {
    world.0.when(&CiDecider, ACTOR, command)
}

impl World {
    fn ci_state(&self, id: CiId) -> CiState {
        match self.0.fold(&CiKey::Ci(id)) {
            CiRead::Ci(state) => state,
            other => panic!("{other:?}"),
        }
    }

    fn rel_state(&self, id: RelId) -> RelState {
        match self.0.fold(&CiKey::Rel(id)) {
            CiRead::Rel(state) => state,
            other => panic!("{other:?}"),
        }
    }
}

/// An event of a change's state stream, as the change domain writes it (the CM-3 contract's
/// fields only).
#[derive(Clone, Debug)]
struct StateEvent(&'static str, Value);

impl DomainEvent for StateEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        NewEvent::json(self.0, &self.1, metadata).expect("json")
    }
}

fn ci(n: u128) -> CiId {
    CiId(Uuid::from_u128(n))
}

fn rel(n: u128) -> RelId {
    RelId(Uuid::from_u128(1_000 + n))
}

/// A JSON object as attributes (the tests of `ci` and its submodules share it).
pub(crate) fn attrs(value: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(value).expect("object")
}

fn host_attrs() -> BTreeMap<String, Value> {
    attrs(
        json!({"hostname": "web-01", "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 8, "memory_mib": 16384}),
    )
}

fn register(n: u128, class: CiClass, name: &str, attributes: BTreeMap<String, Value>) -> CiCommand {
    CiCommand::Register(Register {
        ci_id: ci(n),
        class,
        name: name.into(),
        status: Status::Live,
        environment: Some(Environment::Production),
        owner: None,
        location: None,
        version: None,
        attributes,
        authorized_by: None,
    })
}

fn host(n: u128, name: &str) -> CiCommand {
    register(n, CiClass::Host, name, host_attrs())
}

fn app(n: u128, name: &str) -> CiCommand {
    register(n, CiClass::Application, name, BTreeMap::new())
}

fn team(n: u128, name: &str) -> CiCommand {
    register(n, CiClass::Team, name, BTreeMap::new())
}

fn relate(n: u128, rel_type: RelType, source: u128, target: u128) -> CiCommand {
    CiCommand::Relate { rel_id: rel(n), rel_type, source: ci(source), target: ci(target), authorized_by: None }
}

fn events_of(decision: &CiDecision, key: CiKey) -> &[CiEvent] {
    decision.events_of(&key)
}

#[test]
fn register_writes_the_ci_and_claims_its_name() {
    let change = ChangeId(Uuid::from_u128(77));
    let mut command = host(1, "web-01");
    if let CiCommand::Register(r) = &mut command {
        r.authorized_by = Some(change);
    }
    let world = World(Scenario::new());
    implementing(&world, change, &[], &[(CiClass::Host, "web-01")]);
    let decision = then_ok(&world, &command).expect("accepted");
    let registered = events_of(&decision, CiKey::Ci(ci(1)));
    assert!(matches!(registered, [CiEvent::Registered(e)] if e.name == "web-01" && e.authorized_by == Some(change)));
    let claim = events_of(&decision, CiKey::Name(NameKey::new(CiClass::Host, "web-01")));
    assert!(matches!(claim, [CiEvent::NameClaimed(c)] if c.ci_id == ci(1)));
}

#[test]
fn names_are_unique_per_class_case_insensitively_until_withdrawn() {
    let world = given(&[host(1, "web-01")]);
    let duplicate = then_ok(&world, &host(2, "WEB-01 ")).expect_err("a trailing space is refused");
    assert!(matches!(duplicate, CiError::InvalidName(_)));
    let duplicate = then_ok(&world, &host(2, "WEB-01")).expect_err("taken");
    assert_eq!(duplicate, CiError::NameTaken { class: CiClass::Host, name: "WEB-01".into(), holder: ci(1) });
    assert!(then_ok(&world, &app(2, "web-01")).is_ok(), "another class may use the name");
    let world = given(&[host(1, "web-01"), CiCommand::Withdraw { ci_id: ci(1), reason: None, authorized_by: None }]);
    assert!(then_ok(&world, &host(2, "web-01")).is_ok(), "a withdrawn CI frees its name");
}

#[test]
fn register_refuses_bad_classes_of_input() {
    let world = given(&[team(9, "ops")]);
    let mut missing = host_attrs();
    missing.remove("memory_mib");
    assert!(matches!(
        then_ok(&world, &register(1, CiClass::Host, "h", missing)),
        Err(CiError::MissingAttribute { .. })
    ));
    let mut mistyped = host_attrs();
    mistyped.insert("cpu_cores".into(), json!(-1));
    assert!(matches!(
        then_ok(&world, &register(1, CiClass::Host, "h", mistyped)),
        Err(CiError::InvalidAttribute { .. })
    ));
    assert!(matches!(then_ok(&world, &register(1, CiClass::Host, "", host_attrs())), Err(CiError::InvalidName(_))));
    let service = register(
        2,
        CiClass::BusinessService,
        "Payments",
        attrs(
            json!({"criticality_tier": 1, "service_hours": {"time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "00:00", "end": "24:00"}]}}),
        ),
    );
    assert_eq!(then_ok(&world, &service), Err(CiError::OwnerRequired { class: CiClass::BusinessService }));
    let CiCommand::Register(mut owned) = service else { unreachable!() };
    owned.owner = Some(ci(9));
    let decision = then_ok(&world, &CiCommand::Register(owned.clone())).expect("owned service");
    assert_eq!(
        decision.conditions,
        vec![CiKey::Ci(ci(9)), CiKey::Schema],
        "the owner and the schema must not change underneath"
    );
    owned.owner = Some(ci(404));
    assert_eq!(then_ok(&world, &CiCommand::Register(owned.clone())), Err(CiError::UnknownCi(ci(404))));
    let world = given(&[team(9, "ops"), host(3, "h3")]);
    owned.owner = Some(ci(3));
    assert!(matches!(
        then_ok(&world, &CiCommand::Register(owned)),
        Err(CiError::WrongReferenceClass { field: "owner", .. })
    ));
    let CiCommand::Register(mut withdrawn_status) = host(4, "h4") else { unreachable!() };
    withdrawn_status.status = Status::Withdrawn;
    assert_eq!(
        then_ok(&world, &CiCommand::Register(withdrawn_status)),
        Err(CiError::InitialStatusNotAllowed(Status::Withdrawn))
    );
    assert_eq!(then_ok(&world, &host(3, "again")), Err(CiError::CiExists(ci(3))));
}

#[test]
fn updates_change_only_what_differs_and_renames_move_the_claim() {
    let world = given(&[host(1, "web-01")]);
    let update = Update {
        name: Some("web-01a".into()),
        set_attributes: attrs(json!({"cpu_cores": 16, "os": "debian-12"})),
        version: Some("2.0".into()),
        ..Update::default()
    };
    let decision = then_ok(&world, &CiCommand::Update(ci(1), update)).expect("accepted");
    let CiEvent::Updated(event) = &events_of(&decision, CiKey::Ci(ci(1)))[0] else { panic!("an update") };
    assert_eq!(event.attributes_set.to_btree(), attrs(json!({"cpu_cores": 16})), "unchanged values are not repeated");
    assert_eq!(event.name.as_deref(), Some("web-01a"));
    assert!(matches!(
        events_of(&decision, CiKey::Name(NameKey::new(CiClass::Host, "web-01"))),
        [CiEvent::NameReleased(_)]
    ));
    assert!(matches!(
        events_of(&decision, CiKey::Name(NameKey::new(CiClass::Host, "web-01a"))),
        [CiEvent::NameClaimed(_)]
    ));

    let same = Update { set_attributes: attrs(json!({"cpu_cores": 8})), ..Update::default() };
    assert_eq!(then_ok(&world, &CiCommand::Update(ci(1), same)), Err(CiError::NothingToChange));
    let required = Update { remove_attributes: vec!["hostname".into()], ..Update::default() };
    assert!(matches!(then_ok(&world, &CiCommand::Update(ci(1), required)), Err(CiError::MissingAttribute { .. })));
    let unknown = Update { set_attributes: attrs(json!({"colour": "red"})), ..Update::default() };
    assert!(matches!(then_ok(&world, &CiCommand::Update(ci(1), unknown)), Err(CiError::UnknownAttribute { .. })));
    assert_eq!(then_ok(&world, &CiCommand::Update(ci(2), Update::default())), Err(CiError::UnknownCi(ci(2))));
}

#[test]
fn transitions_follow_the_table() {
    let world = given(&[host(1, "h")]);
    let to = |status| CiCommand::Transition { ci_id: ci(1), to: status, reason: None, authorized_by: None };
    let decision = then_ok(&world, &to(Status::UnderChange)).expect("live to under_change");
    assert!(
        matches!(events_of(&decision, CiKey::Ci(ci(1))), [CiEvent::StatusChanged(e)] if e.from == Status::Live && e.to == Status::UnderChange)
    );
    let refused = then_ok(&world, &to(Status::Ordered)).expect_err("live to ordered");
    assert!(matches!(refused, CiError::TransitionNotAllowed { from: Status::Live, to: Status::Ordered, .. }));
    assert!(refused.to_string().contains("under_change, withdrawn"), "{refused}");
}

#[test]
fn a_withdrawn_ci_cannot_change_or_be_related() {
    let world = given(&[
        host(1, "h"),
        app(2, "a"),
        CiCommand::Withdraw { ci_id: ci(1), reason: Some("decommissioned".into()), authorized_by: None },
    ]);
    let update = Update { set_attributes: attrs(json!({"cpu_cores": 4})), ..Update::default() };
    assert_eq!(then_ok(&world, &CiCommand::Update(ci(1), update)), Err(CiError::CiWithdrawn(ci(1))));
    assert_eq!(then_ok(&world, &relate(1, RelType::RunsOn, 2, 1)), Err(CiError::CiWithdrawn(ci(1))));
    assert_eq!(
        then_ok(&world, &CiCommand::Withdraw { ci_id: ci(1), reason: None, authorized_by: None }),
        Err(CiError::CiWithdrawn(ci(1)))
    );
}

#[test]
fn relationships_obey_the_class_table_and_refuse_loops_and_duplicates() {
    let world = given(&[
        host(1, "h"),
        app(2, "a"),
        register(3, CiClass::Document, "runbook", attrs(json!({"document_type": "runbook", "uri": "https://wiki/x"}))),
    ]);
    let decision = then_ok(&world, &relate(1, RelType::RunsOn, 2, 1)).expect("an application runs on a host");
    assert_eq!(decision.writes.len(), 3, "the relationship and both CIs");
    assert!(matches!(then_ok(&world, &relate(1, RelType::RunsOn, 1, 2)), Err(CiError::RelationshipNotAllowed { .. })));
    assert!(matches!(
        then_ok(&world, &relate(1, RelType::DocumentedBy, 3, 2)),
        Err(CiError::RelationshipNotAllowed { .. })
    ));
    assert!(then_ok(&world, &relate(1, RelType::DocumentedBy, 2, 3)).is_ok());
    assert_eq!(then_ok(&world, &relate(1, RelType::DependsOn, 2, 2)), Err(CiError::SelfLoop(ci(2))));
    assert_eq!(then_ok(&world, &relate(1, RelType::RunsOn, 2, 404)), Err(CiError::UnknownCi(ci(404))));
    let world = given(&[host(1, "h"), app(2, "a"), relate(1, RelType::RunsOn, 2, 1)]);
    assert_eq!(
        then_ok(&world, &relate(2, RelType::RunsOn, 2, 1)),
        Err(CiError::DuplicateRelationship {
            rel_type: RelType::RunsOn,
            source_ci: ci(2),
            target_ci: ci(1),
            existing: rel(1)
        })
    );
    assert_eq!(then_ok(&world, &relate(1, RelType::DependsOn, 2, 1)), Err(CiError::RelationshipExists(rel(1))));
    assert!(then_ok(&world, &relate(2, RelType::DependsOn, 2, 1)).is_ok(), "another type between the same CIs");
}

#[test]
fn unrelate_removes_once_and_updates_both_ends() {
    let world = given(&[host(1, "h"), app(2, "a"), relate(1, RelType::RunsOn, 2, 1)]);
    assert_eq!(world.ci_state(ci(1)).links.len(), 1);
    let unrelate = CiCommand::Unrelate { rel_id: rel(1), reason: None, authorized_by: None };
    let decision = then_ok(&world, &unrelate).expect("accepted");
    assert!(matches!(events_of(&decision, CiKey::Ci(ci(2))), [CiEvent::Unlinked(_)]));
    assert!(matches!(events_of(&decision, CiKey::Ci(ci(1))), [CiEvent::Unlinked(_)]));
    let world = given(&[host(1, "h"), app(2, "a"), relate(1, RelType::RunsOn, 2, 1), unrelate.clone()]);
    assert_eq!(then_ok(&world, &unrelate), Err(CiError::RelationshipRemoved(rel(1))));
    assert!(world.ci_state(ci(1)).links.is_empty());
    let unknown = CiCommand::Unrelate { rel_id: rel(9), reason: None, authorized_by: None };
    assert_eq!(then_ok(&world, &unknown), Err(CiError::UnknownRelationship(rel(9))));
}

#[test]
fn withdrawing_removes_the_active_relationships_atomically() {
    let world = given(&[
        host(1, "h"),
        app(2, "a"),
        app(3, "b"),
        relate(1, RelType::RunsOn, 2, 1),
        relate(2, RelType::RunsOn, 3, 1),
    ]);
    let decision =
        then_ok(&world, &CiCommand::Withdraw { ci_id: ci(1), reason: None, authorized_by: None }).expect("accepted");
    for n in [1, 2] {
        assert!(matches!(events_of(&decision, CiKey::Rel(rel(n))), [CiEvent::RelationshipRemoved(_)]));
    }
    assert!(matches!(events_of(&decision, CiKey::Ci(ci(2))), [CiEvent::Unlinked(_)]));
    let own = events_of(&decision, CiKey::Ci(ci(1)));
    assert!(matches!(own.last(), Some(CiEvent::Withdrawn(e)) if e.from == Status::Live));
    let world = given(&[
        host(1, "h"),
        app(2, "a"),
        app(3, "b"),
        relate(1, RelType::RunsOn, 2, 1),
        relate(2, RelType::RunsOn, 3, 1),
        CiCommand::Withdraw { ci_id: ci(1), reason: None, authorized_by: None },
    ]);
    assert!(world.ci_state(ci(2)).links.is_empty());
    assert!(world.rel_state(rel(1)).removed);
}

#[test]
fn a_hub_withdrawal_is_bounded() {
    let mut commands = vec![host(1, "hub")];
    for n in 0..=MAX_RELATIONSHIPS_PER_WITHDRAWAL as u128 {
        commands.push(app(100 + n, &format!("app-{n}")));
        commands.push(relate(n, RelType::RunsOn, 100 + n, 1));
    }
    let world = given(&commands);
    let refused = then_ok(&world, &CiCommand::Withdraw { ci_id: ci(1), reason: None, authorized_by: None });
    assert_eq!(refused, Err(CiError::TooManyRelationships { ci: ci(1), count: MAX_RELATIONSHIPS_PER_WITHDRAWAL + 1 }));
}

// ----------------------------------------------------------------------------------------
// CM-3: edits to controlled classes only under an implementing change that covers them
// ----------------------------------------------------------------------------------------

/// `change` is submitted as CHG-000012 with this scope and is implementing.
fn implementing(world: &World, change: ChangeId, cis: &[u128], planned: &[(CiClass, &str)]) {
    let scope = json!({
        "cis": cis.iter().map(|n| ci(*n).to_string()).collect::<Vec<_>>(),
        "planned": planned.iter().map(|(class, name)| json!({"class": class.as_str(), "name": name})).collect::<Vec<_>>(),
    });
    let submitted = StateEvent(crate::control::SUBMITTED, json!({"number": 12, "scope": scope, "to": "approved"}));
    world.0.given_events(state_stream(change), [submitted]);
    move_to(world, change, ChangeState::Implementing);
}

/// `change` moves to `state`.
fn move_to(world: &World, change: ChangeId, state: ChangeState) {
    world.0.given_events(state_stream(change), [StateEvent(crate::control::TRANSITIONED, json!({"to": state}))]);
}

fn under(change: ChangeId, mut command: CiCommand) -> CiCommand {
    match &mut command {
        CiCommand::Register(r) => r.authorized_by = Some(change),
        CiCommand::Update(_, u) => u.authorized_by = Some(change),
        CiCommand::Transition { authorized_by, .. }
        | CiCommand::Withdraw { authorized_by, .. }
        | CiCommand::Relate { authorized_by, .. }
        | CiCommand::Unrelate { authorized_by, .. } => *authorized_by = Some(change),
    }
    command
}

/// Hosts 1 and 2 and app 3 exist; then every class is controlled again, and change 12 is
/// implementing with host 1 in scope and a host "web-09" planned.
fn controlled_world() -> (World, ChangeId) {
    let world = given(&[host(1, "web-01"), host(2, "web-02"), app(3, "shop")]);
    control_every_class(&world, true);
    let change = ChangeId(Uuid::from_u128(12));
    implementing(&world, change, &[1], &[(CiClass::Host, "web-09")]);
    (world, change)
}

fn rename(n: u128, name: &str) -> CiCommand {
    CiCommand::Update(ci(n), Update { name: Some(name.into()), ..Update::default() })
}

#[test]
fn a_controlled_edit_without_a_change_is_refused_and_names_what_is_missing() {
    let (world, _) = controlled_world();
    let refused = then_ok(&world, &rename(1, "web-01a")).expect_err("no change");
    assert_eq!(
        refused,
        CiError::Unauthorized { action: "updating", class: CiClass::Host, subject: format!("CI {}", ci(1)) }
    );
    assert!(refused.to_string().contains("authorizedBy"), "{refused}");
    let refused = then_ok(&world, &host(5, "web-05")).expect_err("no change");
    assert!(matches!(refused, CiError::Unauthorized { action: "registering", .. }));
}

#[test]
fn an_implementing_change_authorises_edits_to_what_its_scope_covers_and_is_a_condition() {
    let (world, change) = controlled_world();
    let decision = then_ok(&world, &under(change, rename(1, "web-01a"))).expect("in scope");
    assert!(decision.conditions.contains(&CiKey::Control(change)));
    // Outside the scope.
    assert_eq!(
        then_ok(&world, &under(change, rename(2, "web-02a"))),
        Err(CiError::NotInScope { change: "CHG-000012".into(), ci: ci(2) })
    );
    // A registration must match a planned CI (class and name, case-insensitively).
    assert_eq!(
        then_ok(&world, &under(change, host(6, "web-06"))),
        Err(CiError::NotPlanned { change: "CHG-000012".into(), class: CiClass::Host, name: "web-06".into() })
    );
    assert!(then_ok(&world, &under(change, register(6, CiClass::Application, "web-09", BTreeMap::new()))).is_err());
    let world = given_in(world, &[under(change, host(9, "WEB-09"))]);
    // What the change registered, it covers from then on.
    assert!(then_ok(&world, &under(change, rename(9, "web-09b"))).is_ok());
    // Relate needs the source covered, not the target.
    assert!(then_ok(&world, &under(change, relate(1, RelType::RunsOn, 3, 1))).is_err());
    let world = given_in(world, &[under(change, relate(1, RelType::ConnectsTo, 1, 2))]);
    assert!(
        then_ok(&world, &under(change, CiCommand::Unrelate { rel_id: rel(1), reason: None, authorized_by: None }))
            .is_ok()
    );
    assert!(matches!(
        then_ok(&world, &CiCommand::Unrelate { rel_id: rel(1), reason: None, authorized_by: None }),
        Err(CiError::Unauthorized { action: "unrelating", .. })
    ));
    assert!(
        then_ok(&world, &under(change, CiCommand::Withdraw { ci_id: ci(2), reason: None, authorized_by: None }))
            .is_err()
    );
    assert!(
        then_ok(&world, &under(change, CiCommand::Withdraw { ci_id: ci(1), reason: None, authorized_by: None }))
            .is_ok()
    );
    assert!(
        then_ok(
            &world,
            &under(
                change,
                CiCommand::Transition { ci_id: ci(1), to: Status::UnderChange, reason: None, authorized_by: None }
            )
        )
        .is_ok()
    );
}

#[test]
fn only_an_implementing_or_failed_change_authorises() {
    let (world, change) = controlled_world();
    for state in ChangeState::ALL {
        move_to(&world, change, *state);
        let result = then_ok(&world, &under(change, rename(1, "web-01a")));
        match state {
            ChangeState::Implementing | ChangeState::Failed => assert!(result.is_ok(), "{state}"),
            other => assert_eq!(
                result,
                Err(CiError::ChangeNotImplementing { change: "CHG-000012".into(), state: other.to_string() }),
            ),
        }
    }
    let unknown = ChangeId(Uuid::from_u128(404));
    assert_eq!(then_ok(&world, &under(unknown, rename(1, "web-01a"))), Err(CiError::UnknownChange(unknown)));
}

#[test]
fn an_uncontrolled_class_needs_no_change_but_a_named_change_is_still_checked() {
    let (world, _) = controlled_world();
    world.0.given_events(
        schema_stream(),
        [SchemaEvent::ControlDeclared(ControlDeclared {
            class: CiClass::Team,
            controlled: false,
            reason: "people and teams are managed in the directory".into(),
        })],
    );
    assert!(then_ok(&world, &team(7, "ops")).is_ok());
    let unknown = ChangeId(Uuid::from_u128(404));
    assert_eq!(then_ok(&world, &under(unknown, team(7, "ops"))), Err(CiError::UnknownChange(unknown)));
}

#[test]
fn a_decoded_ci_event_stays_small_since_rebuilds_move_millions_of_them_between_cores() {
    // The two large events are boxed (issue 15, part 6): the enum is the size of its largest
    // variant, and a rebuild writes and reads one per event across cores.
    assert!(std::mem::size_of::<CiEvent>() <= 80, "CiEvent is {} bytes", std::mem::size_of::<CiEvent>());
    assert!(std::mem::size_of::<Option<CiEvent>>() <= 80);
}
