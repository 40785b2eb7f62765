//! Given/when/then tests of the release decider: numbers, RL-1's policy, the life cycle table
//! walked row by row, acceptance by the named role only, deployments with their CI edits under
//! CM-3, refusals recorded (digest mismatch), roll-back restoring exactly the previous versions
//! (a property test), and the gate's answer for each reason.

use proptest::prelude::*;
use uuid::Uuid;

use super::decide::ReleaseDecision;
use super::gate::{self, Artifact, ChangeFact, CiFact, GateDecision, GateFacts, GateRequest, ReleaseFact};
use super::table::{self, Authority};
use super::*;
use crate::access::{AccessCommand, AccessDecider, PrincipalKind, Role};
use crate::ci::{CiClass, CiEvent, CiKey, CiRead, CiSnapshot, Status};
use crate::control::{self, ChangeState};
use crate::decider::DomainEvent;
use crate::decider::testing::Scenario;
use crate::event::{Metadata, NewEvent};
use crate::ids::{ChangeId, CiId};
use crate::time::Timestamp;

const NOW: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);
const SHA_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn ci(n: u128) -> CiId {
    CiId(Uuid::from_u128(n))
}
fn change(n: u128) -> ChangeId {
    ChangeId(Uuid::from_u128(0xC0_0000 + n))
}
fn release(n: u128) -> ReleaseId {
    ReleaseId(Uuid::from_u128(0xE1_0000 + n))
}
fn deployment(n: u128) -> DeploymentId {
    DeploymentId(Uuid::from_u128(0xD0_0000 + n))
}
fn digest(text: &str) -> ArtifactDigest {
    text.parse().expect("a valid digest")
}

/// A raw event of the change domain's state stream, as the CM-3 contract reads it.
#[derive(Clone, Debug)]
struct Raw(&'static str, serde_json::Value);

impl DomainEvent for Raw {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        NewEvent::raw(self.0, serde_json::to_vec(&self.1).unwrap_or_default(), metadata)
    }
}

struct World {
    scenario: Scenario,
}

impl World {
    /// Applications 1 to 3 live in production at version 1.0 (CI 3 without a version), the
    /// principals, and change 1 implementing over CIs 1 to 3.
    fn new() -> World {
        let world = World { scenario: Scenario::new() };
        for n in 1..=3 {
            let mut attributes = std::collections::BTreeMap::new();
            if n != 3 {
                attributes.insert("artifact".to_owned(), serde_json::json!("ghcr.io/acme/app"));
                attributes.insert("digest".to_owned(), serde_json::json!(SHA_A));
            }
            world.add_ci(CiSnapshot {
                id: ci(n),
                class: CiClass::Application,
                name: format!("app-{n}").into(),
                status: Status::Live,
                environment: Some(Environment::Production),
                owner: None,
                location: None,
                version: (n != 3).then(|| "1.0".into()),
                attributes: std::sync::Arc::new(attributes.into()),
            });
        }
        for (name, roles) in [
            ("mark", &[Role::ChangeManager][..]),
            ("quinn", &[Role::Approver][..]),
            ("dora", &[Role::Deployer][..]),
            ("olga", &[Role::Viewer][..]),
        ] {
            world.scenario.given(
                &AccessDecider,
                "system",
                AccessCommand::CreatePrincipal {
                    name: name.into(),
                    kind: PrincipalKind::Person,
                    display_name: None,
                    roles: roles.iter().copied().collect(),
                },
            );
        }
        world.change_in(1, &[1, 2, 3], "implementing");
        world
    }

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

    /// Change `n` submitted over `cis` and moved to `state`.
    fn change_in(&self, n: u128, cis: &[u128], state: &str) {
        let scope: Vec<String> = cis.iter().map(|c| ci(*c).to_string()).collect();
        let submitted = Raw(control::SUBMITTED, serde_json::json!({"number": n, "scope": {"cis": scope}}));
        self.scenario.given_events(control::state_stream(change(n)), [submitted]);
        self.move_change(n, state);
    }

    fn move_change(&self, n: u128, state: &str) {
        let moved = Raw(control::TRANSITIONED, serde_json::json!({"to": state}));
        self.scenario.given_events(control::state_stream(change(n)), [moved]);
    }

    fn when(&self, actor: &str, command: &ReleaseCommand) -> Result<ReleaseDecision, ReleaseError> {
        self.scenario.when(&ReleaseDecider::default(), actor, command)
    }

    fn given(&self, actor: &str, command: ReleaseCommand) {
        self.scenario.given(&ReleaseDecider::default(), actor, command);
    }

    fn execute(&self, actor: &str, command: &ReleaseCommand) -> Result<(), crate::Error> {
        self.scenario.execute(&ReleaseDecider::default(), actor, command).map(|_| ())
    }

    fn release(&self, id: ReleaseId) -> ReleaseRecord {
        match self.scenario.fold(&ReleaseKey::Release(id)) {
            ReleaseRead::Release(Some(record)) => *record,
            other => panic!("no release {id}: {other:?}"),
        }
    }

    fn deployment(&self, id: DeploymentId) -> DeploymentRecord {
        match self.scenario.fold(&ReleaseKey::Deployment(id)) {
            ReleaseRead::Deployment(Some(record)) => *record,
            other => panic!("no deployment {id}: {other:?}"),
        }
    }

    fn ci(&self, n: u128) -> CiSnapshot {
        match self.scenario.fold(&CiKey::Ci(ci(n))) {
            CiRead::Ci(state) => state.ci.expect("registered"),
            other => panic!("{other:?}"),
        }
    }
}

fn details(release_type: ReleaseType) -> ReleaseDetails {
    ReleaseDetails {
        title: "Payments 2.0".into(),
        release_type,
        changes: vec![change(1)],
        versions: vec![
            CiVersion { ci: ci(1), artifact: "ghcr.io/acme/app".into(), version: "2.0".into(), digest: digest(SHA_B) },
            CiVersion {
                ci: ci(3),
                artifact: "ghcr.io/acme/worker".into(),
                version: "2.0".into(),
                digest: digest(SHA_B),
            },
        ],
        environments: vec![Environment::Staging, Environment::Production],
        release_plan: "Blue-green, staging first".into(),
        roll_back_plan: "Switch back to blue".into(),
        baseline: None,
        acceptance: vec![
            AcceptanceStep { environment: Environment::Production, name: "load test".into(), role: Role::Approver },
            AcceptanceStep { environment: Environment::Production, name: "go/no-go".into(), role: Role::ChangeManager },
        ],
    }
}

fn plan(n: u128) -> ReleaseCommand {
    ReleaseCommand::Plan { release_id: release(n), details: details(ReleaseType::Minor) }
}

fn act(n: u128, action: ReleaseAction) -> ReleaseCommand {
    ReleaseCommand::Act { release_id: release(n), action, note: Some(format!("{action} note")) }
}

fn accept(n: u128, environment: Environment, step: &str) -> ReleaseCommand {
    ReleaseCommand::Accept { release_id: release(n), environment, step: step.into(), note: None }
}

fn request(d: u128, r: Option<u128>, environment: Environment, sha: &str) -> ReleaseCommand {
    ReleaseCommand::RequestDeployment(Box::new(DeploymentRequested {
        deployment_id: deployment(d),
        release_id: r.map(release),
        change_id: Some(change(1)),
        environment,
        targets: vec![
            DeploymentTarget {
                ci: ci(1),
                artifact: "ghcr.io/acme/app".into(),
                version: "2.0".into(),
                digest: Some(digest(sha)),
            },
            DeploymentTarget {
                ci: ci(3),
                artifact: "ghcr.io/acme/worker".into(),
                version: "2.0".into(),
                digest: Some(digest(sha)),
            },
        ],
        pipeline: Some(Pipeline { provider: "github".into(), run_id: format!("run-{d}"), run_url: None }),
        observed: None,
        unauthorised: false,
    }))
}

fn report(d: u128, outcome: ReportedOutcome) -> ReleaseCommand {
    ReleaseCommand::Report { deployment_id: deployment(d), outcome, note: Some("pipeline says so".into()) }
}

/// Release 1 built and accepted for production (staging has no steps: accepted at build).
fn accepted_world() -> World {
    let world = World::new();
    world.given("mark", plan(1));
    world.given("mark", act(1, ReleaseAction::Build));
    world.given("quinn", accept(1, Environment::Production, "load test"));
    world.given("mark", accept(1, Environment::Production, "go/no-go"));
    world
}

#[test]
fn release_numbers_are_gapless_and_a_refusal_takes_none() {
    let world = World::new();
    world.given("mark", plan(1));
    let refused = world.execute("olga", &plan(2));
    assert!(matches!(refused, Err(crate::Error::Release(ReleaseError::NotPermitted { .. }))), "{refused:?}");
    world.given("mark", plan(3));
    assert_eq!(world.release(release(1)).number.to_string(), "REL-000001");
    assert_eq!(world.release(release(3)).number.to_string(), "REL-000002");
    assert_eq!("rel-2".parse::<ReleaseNumber>(), Ok(ReleaseNumber(2)));
    assert!("REL-0".parse::<ReleaseNumber>().is_err() && "CHG-1".parse::<ReleaseNumber>().is_err());
    let again = world.execute("mark", &plan(1));
    assert!(matches!(again, Err(crate::Error::Release(ReleaseError::ReleaseExists(_)))), "{again:?}");
}

#[test]
fn digests_are_checked_for_shape() {
    assert!("sha256:".parse::<ArtifactDigest>().is_err());
    assert!("sha256:abc".parse::<ArtifactDigest>().is_err());
    assert!(SHA_A.to_uppercase().parse::<ArtifactDigest>().is_err(), "uppercase hex is not OCI");
    assert!("aaaa".parse::<ArtifactDigest>().is_err());
    assert!(format!("sha512:{}", "0".repeat(128)).parse::<ArtifactDigest>().is_ok());
    assert!(format!("custom-hash:{}", "ab".repeat(20)).parse::<ArtifactDigest>().is_ok());
    assert!(format!("custom:{}", "a".repeat(31)).parse::<ArtifactDigest>().is_err(), "odd length");
    let refused = serde_json::from_str::<ArtifactDigest>("\"md5:zz\"");
    assert!(refused.is_err(), "a stored digest is checked when read too");
}

#[test]
fn the_release_policy_of_each_type_is_enforced() {
    let world = World::new();
    let with = |f: &dyn Fn(&mut ReleaseDetails)| {
        let mut d = details(ReleaseType::Minor);
        f(&mut d);
        world.when("mark", &ReleaseCommand::Plan { release_id: release(9), details: d }).err()
    };
    assert!(matches!(
        with(&|d| d.acceptance.clear()),
        Some(ReleaseError::Policy { release_type: ReleaseType::Minor, .. })
    ));
    assert!(
        matches!(with(&|d| d.release_type = ReleaseType::Major), Some(ReleaseError::Policy { .. })),
        "staging has no step"
    );
    assert!(matches!(
        with(&|d| {
            d.release_type = ReleaseType::Emergency;
            d.changes.clear();
        }),
        Some(ReleaseError::Policy { .. })
    ));
    assert!(
        with(&|d| {
            d.release_type = ReleaseType::Emergency;
            d.acceptance.clear();
        })
        .is_none()
    );
    assert!(matches!(with(&|d| d.versions.clear()), Some(ReleaseError::Missing { field: "versions", .. })));
    assert!(matches!(
        with(&|d| d.roll_back_plan = " ".into()),
        Some(ReleaseError::Missing { field: "rollBackPlan", .. })
    ));
    assert!(matches!(with(&|d| d.versions[1].ci = ci(1)), Some(ReleaseError::Duplicate { .. })));
    assert!(matches!(with(&|d| d.versions[0].ci = ci(77)), Some(ReleaseError::UnknownCi(_))));
    assert!(matches!(with(&|d| d.changes = vec![change(55)]), Some(ReleaseError::UnknownChange(_))));
    assert!(matches!(
        with(&|d| d.acceptance[0].environment = Environment::Test),
        Some(ReleaseError::NotATarget { .. })
    ));
    assert!(matches!(
        with(&|d| d.baseline = Some("nope".into())),
        Some(ReleaseError::Missing { field: "baseline", .. })
    ));
}

/// Walks every row of the table: allowed from each of its states with its authority, and
/// refused from every other state.
#[test]
fn every_transition_of_the_table_is_allowed_where_it_says_and_refused_elsewhere() {
    for row in table::TRANSITIONS.iter().filter(|r| matches!(r.authority, Authority::Operation(_))) {
        for state in ReleaseState::ALL {
            let world = reach(*state);
            let Some(world) = world else { continue };
            let result = world.when("mark", &act(1, row.action));
            if row.from.contains(state) {
                let decision = result.unwrap_or_else(|e| panic!("{} from {state}: {e}", row.action));
                assert_eq!(decision.event_count(), 1);
                assert!(world.when("olga", &act(1, row.action)).is_err(), "a viewer may not {}", row.action);
                if row.needs_note {
                    let bare = ReleaseCommand::Act { release_id: release(1), action: row.action, note: None };
                    assert!(matches!(world.when("mark", &bare), Err(ReleaseError::Missing { .. })));
                }
            } else {
                assert!(
                    matches!(result, Err(ReleaseError::TransitionNotAllowed { .. })),
                    "{} from {state}: {result:?}",
                    row.action
                );
            }
        }
    }
}

/// A world with release 1 in `state`, if the test can reach it.
fn reach(state: ReleaseState) -> Option<World> {
    let world = World::new();
    world.given("mark", plan(1));
    match state {
        ReleaseState::Planned => {}
        ReleaseState::Built => {
            // Every environment with a step: built, not yet accepted anywhere.
            let mut d = details(ReleaseType::Minor);
            d.acceptance.push(AcceptanceStep {
                environment: Environment::Staging,
                name: "smoke".into(),
                role: Role::Approver,
            });
            let world = World::new();
            world.given("mark", ReleaseCommand::Plan { release_id: release(1), details: d });
            world.given("mark", act(1, ReleaseAction::Build));
            return Some(world);
        }
        ReleaseState::Accepted => world.given("mark", act(1, ReleaseAction::Build)),
        ReleaseState::Deployed | ReleaseState::RolledBack | ReleaseState::Reviewed | ReleaseState::Closed => {
            let world = accepted_world();
            deploy_both(&world);
            if state == ReleaseState::RolledBack {
                world.given("dora", rollback(2));
            }
            if matches!(state, ReleaseState::Reviewed | ReleaseState::Closed) {
                world.given("mark", act(1, ReleaseAction::Review));
            }
            if state == ReleaseState::Closed {
                world.given("mark", act(1, ReleaseAction::Close));
            }
            return Some(world);
        }
        ReleaseState::Rejected => world.given("mark", act(1, ReleaseAction::Reject)),
        ReleaseState::Deferred => world.given("mark", act(1, ReleaseAction::Defer)),
    }
    assert_eq!(world.release(release(1)).state, state);
    Some(world)
}

fn rollback(d: u128) -> ReleaseCommand {
    ReleaseCommand::RollBack { deployment_id: deployment(d), change_id: None, reason: "errors went up".into() }
}

/// Deploys release 1 to staging (deployment 1) then production (deployment 2).
fn deploy_both(world: &World) {
    world.given("dora", request(1, Some(1), Environment::Staging, SHA_B));
    world.given("dora", report(1, ReportedOutcome::Succeeded));
    world.given("dora", request(2, Some(1), Environment::Production, SHA_B));
    world.given("dora", report(2, ReportedOutcome::Succeeded));
    assert_eq!(world.release(release(1)).state, ReleaseState::Deployed);
}

#[test]
fn acceptance_is_signed_only_by_the_role_the_step_names() {
    let world = World::new();
    world.given("mark", plan(1));
    let early = world.when("quinn", &accept(1, Environment::Production, "load test"));
    assert!(matches!(early, Err(ReleaseError::TransitionNotAllowed { .. })), "not before it is built: {early:?}");
    world.given("mark", act(1, ReleaseAction::Build));
    let release_now = world.release(release(1));
    assert_eq!(release_now.state, ReleaseState::Accepted, "staging has no step: accepted at build");
    assert!(release_now.accepted.contains_key(&Environment::Staging));
    assert!(!release_now.accepted.contains_key(&Environment::Production));
    let wrong = world.execute("mark", &accept(1, Environment::Production, "load test"));
    assert!(
        matches!(wrong, Err(crate::Error::Release(ReleaseError::WrongRole { role: Role::Approver, .. }))),
        "{wrong:?}"
    );
    let unknown = world.when("quinn", &accept(1, Environment::Production, "pen test"));
    assert!(matches!(unknown, Err(ReleaseError::UnknownStep { .. })));
    world.given("quinn", accept(1, Environment::Production, "LOAD TEST"));
    let twice = world.when("quinn", &accept(1, Environment::Production, "load test"));
    assert!(matches!(twice, Err(ReleaseError::StepSigned { .. })));
    assert!(!world.release(release(1)).accepted.contains_key(&Environment::Production), "one step of two");
    world.given("mark", accept(1, Environment::Production, "go/no-go"));
    let done = world.release(release(1));
    assert!(done.accepted.contains_key(&Environment::Production));
    assert_eq!(done.signatures.iter().map(|s| s.stamp.by.as_str()).collect::<Vec<_>>(), ["quinn", "mark"]);
}

#[test]
fn a_deployment_needs_an_accepted_release_in_order_and_a_matching_digest() {
    let world = World::new();
    world.given("mark", plan(1));
    world.given("mark", act(1, ReleaseAction::Build));
    let not_accepted = world.execute("dora", &request(1, Some(1), Environment::Production, SHA_B));
    assert!(matches!(not_accepted, Err(crate::Error::Release(ReleaseError::NotAccepted { .. }))), "{not_accepted:?}");
    world.given("quinn", accept(1, Environment::Production, "load test"));
    world.given("mark", accept(1, Environment::Production, "go/no-go"));
    let early = world.execute("dora", &request(1, Some(1), Environment::Production, SHA_B));
    assert!(matches!(early, Err(crate::Error::Release(ReleaseError::OutOfOrder { .. }))), "{early:?}");
    let wrong_env = world.when("dora", &request(1, Some(1), Environment::Test, SHA_B));
    assert!(matches!(wrong_env, Err(ReleaseError::NotATarget { .. })));

    // A digest mismatch is refused and recorded as refused.
    let head = world.scenario.head();
    world.given("dora", request(1, Some(1), Environment::Staging, SHA_A));
    assert_eq!(world.scenario.head(), head + 2, "the request and its refusal");
    let refused = world.deployment(deployment(1));
    assert_eq!(refused.state, DeploymentState::Refused);
    assert_eq!(refused.refused_code.as_deref(), Some("DIGEST_MISMATCH"));
    let again = world.when("dora", &report(1, ReportedOutcome::Succeeded));
    assert!(matches!(again, Err(ReleaseError::DeploymentState { .. })), "a refused deployment never runs");
    assert_eq!(world.ci(1).version.as_deref(), Some("1.0"), "nothing was deployed");
}

#[test]
fn a_success_edits_every_ci_in_the_same_append_under_the_change() {
    let world = accepted_world();
    world.given("dora", request(1, Some(1), Environment::Staging, SHA_B));
    world.given("dora", report(1, ReportedOutcome::Started));
    let decision = world.when("dora", &report(1, ReportedOutcome::Succeeded)).expect("succeeds");
    // The deployment's end, the release's move and both CI edits, conditional on the change.
    assert!(decision.conditions.contains(&ReleaseKey::Ci(CiKey::Control(change(1)))));
    world.given("dora", report(1, ReportedOutcome::Succeeded));
    let app = world.ci(1);
    assert_eq!(app.version.as_deref(), Some("2.0"));
    assert_eq!(app.attributes.get("digest"), Some(&serde_json::json!(SHA_B)));
    assert_eq!(world.ci(3).attributes.get("artifact"), Some(&serde_json::json!("ghcr.io/acme/worker")));
    assert_eq!(world.ci(2).version.as_deref(), Some("1.0"), "CI 2 was not a target");
    let release_now = world.release(release(1));
    assert_eq!(release_now.state, ReleaseState::Accepted, "staging is not the last environment");
    assert!(release_now.deployed.contains_key(&Environment::Staging));

    // CM-3: with the change no longer implementing, a success is refused and appends nothing.
    world.given("dora", request(2, Some(1), Environment::Production, SHA_B));
    world.move_change(1, "implemented");
    let refused = world.execute("dora", &report(2, ReportedOutcome::Succeeded));
    assert!(matches!(refused, Err(crate::Error::Release(ReleaseError::Ci(_)))), "{refused:?}");
    assert_eq!(world.deployment(deployment(2)).state, DeploymentState::Requested);
}

#[test]
fn a_failure_needs_a_note_and_a_roll_back_needs_an_authorising_change() {
    let world = accepted_world();
    world.given("dora", request(1, Some(1), Environment::Staging, SHA_B));
    let bare = ReleaseCommand::Report { deployment_id: deployment(1), outcome: ReportedOutcome::Failed, note: None };
    assert!(matches!(world.when("dora", &bare), Err(ReleaseError::Missing { field: "note", .. })));
    world.given("dora", report(1, ReportedOutcome::Succeeded));
    world.move_change(1, "implemented");
    let refused = world.execute("dora", &rollback(1));
    assert!(matches!(refused, Err(crate::Error::Release(ReleaseError::NoAuthority(_)))), "{refused:?}");
    world.change_in(2, &[1, 3], "implementing");
    let with_emergency =
        ReleaseCommand::RollBack { deployment_id: deployment(1), change_id: Some(change(2)), reason: "broken".into() };
    world.given("dora", with_emergency);
    assert_eq!(world.ci(1).version.as_deref(), Some("1.0"));
    assert_eq!(world.deployment(deployment(1)).state, DeploymentState::RolledBack);
    assert_eq!(world.release(release(1)).state, ReleaseState::RolledBack);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Roll-back law: for every CI a deployment touched, the CI after the roll-back equals the
    /// CI before the deployment, field by field, whatever it held before (a version or none,
    /// an artifact and digest or none).
    #[test]
    fn a_roll_back_restores_exactly_the_previous_versions(
        versions in proptest::collection::vec(proptest::option::of("[0-9]\\.[0-9]{1,2}"), 3),
        with_digest in proptest::collection::vec(any::<bool>(), 3),
        targets in proptest::sample::subsequence(vec![1u128, 2, 3], 1..=3),
        started_first in any::<bool>(),
    ) {
        let world = World { scenario: Scenario::new() };
        for n in 1..=3u128 {
            let i = usize::try_from(n - 1).unwrap_or(0);
            let mut attributes = std::collections::BTreeMap::new();
            if with_digest[i] {
                attributes.insert("digest".to_owned(), serde_json::json!(SHA_A));
                attributes.insert("artifact".to_owned(), serde_json::json!("old"));
            }
            world.add_ci(CiSnapshot {
                id: ci(n), class: CiClass::Application, name: format!("app-{n}").into(), status: Status::Live,
                environment: None, owner: None, location: None, version: versions[i].as_deref().map(Into::into),
                attributes: std::sync::Arc::new(attributes.into()),
            });
        }
        world.scenario.given(&AccessDecider, "system", AccessCommand::CreatePrincipal {
            name: "dora".into(), kind: PrincipalKind::Person, display_name: None, roles: [Role::Deployer].into(),
        });
        world.change_in(1, &[1, 2, 3], "implementing");
        let before: Vec<CiSnapshot> = (1..=3).map(|n| world.ci(n)).collect();
        let command = ReleaseCommand::RequestDeployment(Box::new(DeploymentRequested {
            deployment_id: deployment(1), release_id: None, change_id: Some(change(1)), environment: Environment::Production,
            targets: targets.iter().map(|n| DeploymentTarget {
                ci: ci(*n), artifact: "new".into(), version: "9.9".into(), digest: Some(digest(SHA_B)),
            }).collect(),
            pipeline: None, observed: None, unauthorised: false,
        }));
        world.given("dora", command);
        if started_first {
            world.given("dora", report(1, ReportedOutcome::Started));
        }
        world.given("dora", report(1, ReportedOutcome::Succeeded));
        for n in &targets {
            let now = world.ci(*n);
            prop_assert_eq!(now.version.as_deref(), Some("9.9"));
        }
        world.given("dora", rollback(1));
        for n in 1..=3u128 {
            let i = usize::try_from(n - 1).unwrap_or(0);
            prop_assert_eq!(&world.ci(n), &before[i], "CI {} after the roll-back", n);
        }
    }
}

fn gate_facts() -> (GateRequest, GateFacts) {
    let request = GateRequest {
        ci: ci(1),
        environment: Environment::Production,
        artifact: Artifact { name: "app".into(), version: "2.0".into(), digest: digest(SHA_B) },
        change: Some(change(1)),
        release: Some(release(1)),
        pipeline: None,
    };
    let window = crate::change::Window {
        start: NOW.saturating_add_micros(-3_600_000_000),
        end: NOW.saturating_add_micros(3_600_000_000),
        time_zone: "UTC".into(),
    };
    let facts = GateFacts {
        now: NOW,
        position: 10,
        actor: "dora".into(),
        ci: CiFact { name: "app-1".into(), status: Status::Live, environment: Some(Environment::Production) },
        change: Some(ChangeFact {
            label: "CHG-000001".into(),
            state: ChangeState::Scheduled,
            change_type: crate::change::ChangeType::Normal,
            window: Some(window),
            implementer: Some("dora".into()),
            covers_ci: true,
        }),
        release: Some(ReleaseFact {
            label: "REL-000001".into(),
            state: ReleaseState::Accepted,
            environments: vec![Environment::Staging, Environment::Production],
            accepted: vec![Environment::Staging, Environment::Production],
            deployed: vec![Environment::Staging],
            recorded: Some(("2.0".into(), digest(SHA_B))),
        }),
        freezes: Vec::new(),
        conflicts: Vec::new(),
    };
    (request, facts)
}

#[test]
fn the_gate_allows_only_when_every_check_passes_and_says_why_otherwise() {
    let (request, facts) = gate_facts();
    let allowed = gate::evaluate(&request, &facts);
    assert_eq!(allowed.decision, GateDecision::Allow, "{allowed:?}");
    assert!(allowed.starts_implementation, "a scheduled change inside its window starts");

    let case = |f: &dyn Fn(&mut GateRequest, &mut GateFacts)| {
        let (mut request, mut facts) = gate_facts();
        f(&mut request, &mut facts);
        let outcome = gate::evaluate(&request, &facts);
        (outcome.decision, outcome.reasons.first().map(|r| r.code.clone()).unwrap_or_default(), outcome)
    };
    let hour = 3_600_000_000;
    let expectations: Vec<(&str, GateDecision, &str, Box<Tweak>)> = vec![
        ("no change", GateDecision::Deny, "NO_CHANGE", Box::new(|_, f| f.change = None)),
        (
            "assessed",
            GateDecision::Pending,
            "CHANGE_NOT_APPROVED",
            Box::new(|_, f| set_state(f, ChangeState::Assessed)),
        ),
        ("approved", GateDecision::Pending, "NOT_SCHEDULED", Box::new(|_, f| set_state(f, ChangeState::Approved))),
        ("rejected", GateDecision::Deny, "CHANGE_NOT_OPEN", Box::new(|_, f| set_state(f, ChangeState::Rejected))),
        (
            "before window",
            GateDecision::Pending,
            "OUTSIDE_WINDOW",
            Box::new(move |_, f| f.now = NOW.saturating_add_micros(-2 * hour)),
        ),
        (
            "after window",
            GateDecision::Deny,
            "WINDOW_PASSED",
            Box::new(move |_, f| f.now = NOW.saturating_add_micros(2 * hour)),
        ),
        (
            "not in scope",
            GateDecision::Deny,
            "NOT_IN_SCOPE",
            Box::new(|_, f| f.change.as_mut().map_or((), |c| c.covers_ci = false)),
        ),
        ("other implementer", GateDecision::Deny, "NOT_IMPLEMENTER", Box::new(|_, f| f.actor = "eve".into())),
        ("digest", GateDecision::Deny, "DIGEST_MISMATCH", Box::new(|r, _| r.artifact.digest = digest(SHA_A))),
        ("version", GateDecision::Deny, "VERSION_MISMATCH", Box::new(|r, _| r.artifact.version = "2.1".into())),
        (
            "not accepted",
            GateDecision::Pending,
            "RELEASE_NOT_ACCEPTED",
            Box::new(|_, f| f.release.as_mut().map_or((), |r| r.accepted.truncate(1))),
        ),
        (
            "earlier env",
            GateDecision::Pending,
            "EARLIER_ENVIRONMENT",
            Box::new(|_, f| f.release.as_mut().map_or((), |r| r.deployed.clear())),
        ),
        ("not a target", GateDecision::Deny, "NOT_A_TARGET", Box::new(|r, _| r.environment = Environment::Test)),
        (
            "rejected release",
            GateDecision::Deny,
            "RELEASE_NOT_DEPLOYABLE",
            Box::new(|_, f| f.release.as_mut().map_or((), |r| r.state = ReleaseState::Rejected)),
        ),
        ("withdrawn", GateDecision::Deny, "CI_WITHDRAWN", Box::new(|_, f| f.ci.status = Status::Withdrawn)),
        ("frozen", GateDecision::Deny, "FROZEN", Box::new(|_, f| f.freezes.push(freeze_hit()))),
        ("conflict", GateDecision::Deny, "CONFLICT", Box::new(|_, f| f.conflicts.push(conflict()))),
    ];
    for (name, decision, code, f) in &expectations {
        let (got, first, outcome) = case(f.as_ref());
        assert_eq!((got, first.as_str()), (*decision, *code), "{name}: {outcome:?}");
        assert!(!outcome.starts_implementation, "{name}: only an allow starts anything");
        assert_eq!(outcome.retry_after_seconds.is_some(), *decision == GateDecision::Pending, "{name}");
    }
    // A standard change approved (pre-authorised by its template) starts inside its window.
    let (decision, _, outcome) = case(&|_, f| {
        if let Some(c) = f.change.as_mut() {
            c.state = ChangeState::Approved;
            c.change_type = crate::change::ChangeType::Standard;
        }
    });
    assert_eq!(decision, GateDecision::Allow, "{outcome:?}");
    assert!(outcome.starts_implementation);
    // An implementing change allows without starting anything.
    let (decision, _, outcome) = case(&|_, f| set_state(f, ChangeState::Implementing));
    assert_eq!((decision, outcome.starts_implementation), (GateDecision::Allow, false));
    // Before the window: wait exactly until it opens.
    let (_, _, early) = case(&|_, f| f.now = NOW.saturating_add_micros(-2 * hour));
    assert_eq!(early.retry_after_seconds, Some(3_601));
    // An emergency change passes a freeze, flagged.
    let (decision, _, outcome) = case(&|_, f| {
        f.freezes.push(freeze_hit());
        if let Some(c) = f.change.as_mut() {
            c.change_type = crate::change::ChangeType::Emergency;
        }
    });
    assert_eq!(decision, GateDecision::Allow);
    assert!(outcome.reasons.iter().any(|r| r.code == "EMERGENCY_IN_FREEZE"));
}

#[test]
fn a_recorded_gate_decision_replays_to_the_same_answer() {
    let (request, facts) = gate_facts();
    let outcome = gate::evaluate(&request, &facts);
    let recorded = GateDecided { request, facts, outcome };
    let json = serde_json::to_string(&recorded).expect("serialises");
    let back: GateDecided = serde_json::from_str(&json).expect("reads back");
    let (again, same) = gate::replay(&back);
    assert!(same, "{again:?}");
    let mut tampered = back.clone();
    tampered.outcome.decision = GateDecision::Deny;
    assert!(!gate::replay(&tampered).1, "a changed answer does not replay");
}

/// A change to a gate request and its facts, for one case.
type Tweak = dyn Fn(&mut GateRequest, &mut GateFacts);

fn set_state(facts: &mut GateFacts, state: ChangeState) {
    if let Some(change) = facts.change.as_mut() {
        change.state = state;
    }
}

fn freeze_hit() -> crate::change::freeze::FreezeHit {
    crate::change::freeze::FreezeHit {
        freeze_id: crate::ids::FreezeId(Uuid::from_u128(5)),
        name: "year end".into(),
        start: NOW,
        end: NOW.saturating_add_micros(1),
    }
}

fn conflict() -> crate::change::ConflictFact {
    crate::change::ConflictFact {
        other: change(9),
        other_label: "CHG-000009".into(),
        reason: "shares app-1".into(),
        path: vec![ci(1)],
        acknowledged_by_other: false,
    }
}

mod observed;
