//! Laws of assessment and decision, over generated facts (CH-2, CH-4): every decision replays
//! to the recorded answer; each risk factor only ever raises the score; an approval never
//! counts for a requirement its principal does not qualify for.

use std::collections::BTreeMap;

use cmdb_core::access::{AccessState, PrincipalInfo, PrincipalKind, Role};
use cmdb_core::change::decide::{PolicyInput, policy_input};
use cmdb_core::change::freeze::FreezeHit;
use cmdb_core::change::risk::{self, AssessmentFacts, CiFailures, ServiceFact, ServiceHours, WeeklyHours};
use cmdb_core::change::{
    At, CalendarFacts, ChangeDetails, ChangeDrafted, ChangeNumber, ChangeRecord, ChangeType, ConflictAcknowledged,
    ConflictFact, LinkKind, PlannedCi, RecordLink, Scope, Window,
};
use cmdb_core::ci::{ChangeId, CiClass, CiId, CiSnapshot, Status};
use cmdb_core::ids::FreezeId;
use cmdb_core::model::Severity;
use cmdb_core::policy::DecisionInput;
use cmdb_core::policy::{self, PolicyRecord};
use cmdb_core::time::Timestamp;
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::from_micros(1_893_456_000_000_000);

fn service() -> impl Strategy<Value = ServiceFact> {
    (1u8..=4, any::<bool>(), proptest::collection::vec("[a-e]", 0..3), 0u32..6, 0u128..1000, any::<bool>()).prop_map(
        |(tier, open, owners, depth, n, down)| ServiceFact {
            id: CiId(uuid::Uuid::from_u128(n)),
            name: format!("service {n}"),
            tier: Some(tier),
            service_hours: open.then(|| {
                std::sync::Arc::new(ServiceHours {
                    time_zone: "Europe/Berlin".into(),
                    weekly: vec![WeeklyHours {
                        days: vec!["mon".into(), "tue".into(), "wed".into()],
                        start: "08:00".into(),
                        end: "18:00".into(),
                    }],
                })
            }),
            owner_contacts: owners.iter().map(|o| format!("{o}@example.com")).collect(),
            depth,
            severity: if down { Severity::Down } else { Severity::Degraded },
        },
    )
}

fn facts() -> impl Strategy<Value = AssessmentFacts> {
    (proptest::collection::vec(service(), 0..8), 0u32..20_000, any::<bool>(), 0u32..4).prop_map(
        |(services, downstream, truncated, failures)| AssessmentFacts {
            position: 10,
            computed_at: NOW,
            downstream_cis: downstream,
            truncated,
            services,
            services_not_listed: 0,
            other_services: vec![],
            history_days: 90,
            failures: (0..failures)
                .map(|n| CiFailures { ci: CiId(uuid::Uuid::from_u128(u128::from(n))), failed: 1, backed_out: 0 })
                .collect(),
            calendar: None,
        },
    )
}

fn change_type() -> impl Strategy<Value = ChangeType> {
    prop_oneof![Just(ChangeType::Standard), Just(ChangeType::Normal), Just(ChangeType::Emergency)]
}

fn record(change_type: ChangeType, window: Option<Window>) -> ChangeRecord {
    let drafted = ChangeDrafted {
        change_id: ChangeId(uuid::Uuid::from_u128(7)),
        change_type,
        template_id: None,
        requester: "alice".into(),
        details: ChangeDetails {
            title: "t".into(),
            window,
            scope: Scope { cis: vec![CiId(uuid::Uuid::from_u128(1))], planned: vec![] },
            ..ChangeDetails::default()
        },
    };
    ChangeRecord::drafted(&drafted, At { position: 1, recorded_at: NOW })
}

fn window(start_hours: i64) -> Window {
    Window {
        start: NOW.saturating_add_micros(start_hours * 3_600_000_000),
        end: NOW.saturating_add_micros((start_hours + 3) * 3_600_000_000),
        time_zone: "UTC".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn every_decision_replays_to_the_recorded_answer(
        facts in facts(),
        change_type in change_type(),
        start in proptest::option::of(0i64..24 * 14),
    ) {
        let change = record(change_type, start.map(window));
        let assessment = risk::assess(facts, change_type, change.details.window.as_ref());
        let input = policy_input(&change, Some(&assessment), &AccessState::default(), &Default::default(), NOW);
        let policy = PolicyRecord::default_policy();
        let decision = policy::decide(&policy, &input).expect("the default policy decides every input");
        let replayed = policy::replay(&decision, &policy);
        prop_assert!(replayed.matches, "{:?}", replayed);
        // The recorded input is canonical: parsing and re-serialising changes nothing.
        let reparsed: serde_json::Value = serde_json::from_str(&decision.input).expect("json");
        prop_assert_eq!(reparsed.to_string(), decision.input.clone());
    }

    #[test]
    fn more_risk_in_any_factor_never_lowers_the_score(
        facts in facts(),
        change_type in change_type(),
        extra in service(),
        more_cis in 1u32..5_000,
    ) {
        let base = risk::assess(facts.clone(), change_type, None).score;
        let mut failing = facts.clone();
        failing.failures.push(CiFailures { ci: CiId(uuid::Uuid::from_u128(99)), failed: 1, backed_out: 1 });
        prop_assert!(risk::assess(failing, change_type, None).score >= base);
        let mut reaching = facts.clone();
        reaching.services.push(extra);
        prop_assert!(risk::assess(reaching, change_type, None).score >= base);
        let mut wider = facts.clone();
        wider.downstream_cis = wider.downstream_cis.saturating_add(more_cis);
        prop_assert!(risk::assess(wider, change_type, None).score >= base);
        let mut cut = facts;
        cut.truncated = true;
        prop_assert!(risk::assess(cut, change_type, None).score >= base);
    }

    #[test]
    fn an_approval_counts_only_where_its_principal_qualifies(
        facts in facts(),
        roles in proptest::collection::btree_set(prop_oneof![Just(Role::Approver), Just(Role::ChangeManager), Just(Role::Editor)], 0..3),
        name in "[a-f]",
    ) {
        let change = record(ChangeType::Normal, Some(window(30)));
        let assessment = risk::assess(facts, ChangeType::Normal, change.details.window.as_ref());
        let input = policy_input(&change, Some(&assessment), &AccessState::default(), &Default::default(), NOW);
        let decision = policy::decide(&PolicyRecord::default_policy(), &input).expect("decides");
        for requirement in &decision.output.approvals {
            let counts = requirement.counts(&name, &roles);
            let qualifies = match requirement.role {
                Some(role) => roles.contains(&role),
                None => requirement.principals.contains(&name),
            };
            prop_assert_eq!(counts, qualifies);
        }
    }
}

/// A value of the input that the engine writes as `good`, or, rarely, of another shape.
fn or_odd(good: BoxedStrategy<serde_json::Value>) -> BoxedStrategy<serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        12 => good,
        1 => prop_oneof![Just(json!(null)), Just(json!(1.5)), Just(json!("1")), Just(json!([1])), Just(json!({"a": 1}))],
    ]
    .boxed()
}

/// Inputs shaped as the engine builds them, widened: absent keys, nulls, shared owner sets,
/// many tier-1 services, calendars with open and acknowledged conflicts, and now and then a value
/// of another type.
fn any_input() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let owners = prop_oneof![
        Just(json!(["ops@example.com"])),
        Just(json!(["ops@example.com", "dba@example.com"])),
        Just(json!([])),
        Just(serde_json::Value::Null),
    ];
    let service = (
        proptest::option::of(or_odd((1i64..=4).prop_map(|t| json!(t)).boxed())),
        0u8..12,
        or_odd(any::<bool>().prop_map(|b| json!(b)).boxed()),
        owners,
    )
        .prop_map(|(tier, n, hours, owners)| {
            let mut service = json!({"id": format!("id-{n}"), "name": format!("service {}", n % 7), "window_in_service_hours": hours});
            if let Some(tier) = tier {
                service["tier"] = tier;
            }
            if !owners.is_null() {
                service["owners"] = owners;
            }
            if n == 11 {
                // Without an id, sameness is the whole object's (the native set's slow path).
                service.as_object_mut().map(|o| o.remove("id"));
            }
            service
        });
    let level = proptest::option::of(or_odd(
        prop_oneof![Just("low"), Just("medium"), Just("high"), Just("critical")].prop_map(|l| json!(l)).boxed(),
    ));
    let assessment = (
        level,
        proptest::collection::vec(service, 0..12),
        or_odd(any::<bool>().prop_map(|b| json!(b)).boxed()),
        0u64..50_000,
    )
        .prop_map(|(level, services, truncated, reached)| {
            let mut a = json!({"score": 10, "services": services, "truncated": truncated, "downstream_cis": reached});
            if let Some(level) = level {
                a["level"] = level;
            }
            a
        });
    let conflict = (0u8..5, any::<bool>(), any::<bool>())
        .prop_map(|(n, ack, other)| json!({"change": format!("CHG-{n}"), "reason": "overlap", "acknowledged": ack, "acknowledged_by_other": other}));
    let calendar = proptest::option::of(
        (proptest::collection::vec(conflict, 0..4), proptest::collection::vec(0u8..3, 0..3)).prop_map(
            |(conflicts, freezes)| {
                let freezes: Vec<_> =
                    freezes.iter().map(|n| json!({"name": format!("freeze {n}"), "start": "a", "end": "b"})).collect();
                json!({"conflicts": conflicts, "freezes": freezes})
            },
        ),
    );
    let change_type = proptest::option::of(or_odd(
        prop_oneof![Just("standard"), Just("normal"), Just("emergency")].prop_map(|t| json!(t)).boxed(),
    ));
    let window = prop_oneof![
        Just(None),
        Just(Some(json!(null))),
        Just(Some(json!({"start": "a", "end": "b", "time_zone": "UTC"})))
    ];
    (proptest::option::of(assessment), calendar, change_type, window, any::<bool>()).prop_map(
        |(assessment, calendar, change_type, window, null_assessment)| {
            let mut change = json!({"id": "c", "number": "CHG-9"});
            if let Some(t) = change_type {
                change["type"] = t;
            }
            if let Some(w) = window {
                change["window"] = w;
            }
            let mut input = json!({"now": "2030-01-01T00:00:00Z", "change": change, "requester_roles": ["requester"]});
            match assessment {
                Some(a) => input["assessment"] = a,
                None if null_assessment => input["assessment"] = serde_json::Value::Null,
                None => {}
            }
            input["calendar"] = calendar.unwrap_or(serde_json::Value::Null);
            input
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// The default policy written natively decides as the interpreter does, or leaves the input
    /// to it; never otherwise.
    #[test]
    fn the_native_default_policy_decides_as_the_interpreter_or_declines(input in any_input()) {
        let interpreter = policy::Policy::compile(policy::DEFAULT_POLICY).expect("the default compiles");
        let interpreted = interpreter.evaluate(&input);
        if let Some(native) = policy::native::decision(&input) {
            let native = policy::PolicyOutput::from_json(&native);
            prop_assert_eq!(native, interpreted, "{}", input);
        }
    }
}

#[test]
fn the_native_default_policy_answers_every_input_the_engine_builds() {
    // Engine-built inputs, the same generators as the replay law: never left to the interpreter.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 200, ..ProptestConfig::default() });
    runner
        .run(&(facts(), change_type(), proptest::option::of(0i64..24 * 14)), |(facts, change_type, start)| {
            let change = record(change_type, start.map(window));
            let assessment = risk::assess(facts, change_type, change.details.window.as_ref());
            let input = policy_input(&change, Some(&assessment), &AccessState::default(), &Default::default(), NOW);
            let native = policy::native::decision(&input);
            prop_assert!(native.is_some(), "{}", input);
            let interpreted = policy::Policy::compile(policy::DEFAULT_POLICY).expect("compiles").evaluate(&input);
            prop_assert_eq!(native.map(|n| policy::PolicyOutput::from_json(&n)), Some(interpreted));
            Ok(())
        })
        .expect("native on every engine input");
}

/// Calendars of conflicts (some acknowledged by either side) and freezes.
fn calendar() -> impl Strategy<Value = Option<CalendarFacts>> {
    let conflicts = proptest::collection::vec((0u128..4, any::<bool>()), 0..4);
    let freezes = proptest::collection::vec(0u128..3, 0..3);
    proptest::option::of((conflicts, freezes).prop_map(|(conflicts, freezes)| {
        CalendarFacts {
            conflicts: conflicts
                .into_iter()
                .map(|(n, by_other)| ConflictFact {
                    other: ChangeId(uuid::Uuid::from_u128(100 + n)),
                    other_label: format!("CHG-{n}"),
                    reason: "overlapping windows, shared \"CI\"".into(),
                    path: vec![],
                    acknowledged_by_other: by_other,
                })
                .collect(),
            freezes: freezes
                .into_iter()
                .map(|n| FreezeHit {
                    freeze_id: FreezeId(uuid::Uuid::from_u128(n)),
                    name: format!("freeze {n}"),
                    start: NOW,
                    end: NOW.saturating_add_micros(3_600_000_000),
                })
                .collect(),
        }
    }))
}

/// The keys of a JSON object, in order (none for anything else).
fn keys(value: &serde_json::Value) -> Vec<&str> {
    value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

/// Principals for some of the owner contacts the service generator writes (`a@example.com`
/// names `a`), so owners resolve to some, none or all of their principals.
fn access_with_owners() -> AccessState {
    let mut access = AccessState::default();
    for name in ["a", "c@example.com", "e", "alice"] {
        access.principals.insert(
            name.into(),
            PrincipalInfo {
                name: name.into(),
                kind: PrincipalKind::Person,
                display_name: None,
                roles: [Role::Approver, Role::Editor].into(),
                created_at: NOW,
                tokens: vec![],
            },
        );
    }
    access
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// The typed input the engine decides on is the JSON input: the same canonical text (so
    /// the record and a replay see what the rules saw), the same reading by the rules, and
    /// so the same decision.
    #[test]
    fn the_typed_input_is_its_json_value(
        mut facts in facts(),
        calendar in calendar(),
        change_type in change_type(),
        start in proptest::option::of(0i64..24 * 14),
        acknowledged in proptest::collection::vec(0u128..4, 0..3),
        scope_known in any::<bool>(),
    ) {
        facts.calendar = calendar;
        let mut change = record(change_type, start.map(window));
        change.number = Some(ChangeNumber(42));
        change.details.implementer = Some("bob \u{e9}".into());
        change.details.links = vec![RecordLink { kind: LinkKind::Incident, id: "INC-1".into() }];
        change.details.scope.planned = vec![PlannedCi { class: CiClass::VirtualMachine, name: "planned vm".into() }];
        for n in acknowledged {
            let ack = ConflictAcknowledged {
                change_id: change.change_id,
                other: ChangeId(uuid::Uuid::from_u128(100 + n)),
                reason: "seen".into(),
                by: "alice".into(),
            };
            change.acknowledged.push((ack, At { position: 2, recorded_at: NOW }));
        }
        let assessment = risk::assess(facts, change_type, change.details.window.as_ref());
        let access = access_with_owners();
        let mut cis = BTreeMap::new();
        if scope_known {
            let ci = CiSnapshot {
                id: CiId(uuid::Uuid::from_u128(1)),
                class: CiClass::Host,
                name: "web-01".into(),
                status: Status::Live,
                environment: None,
                owner: None,
                location: None,
                version: None,
                attributes: Default::default(),
            };
            cis.insert(ci.id, Some(ci));
        }
        for assessed in [None, Some(&assessment)] {
            let typed = PolicyInput::new(&change, assessed, &access, &cis, NOW);
            let value = typed.to_value();
            // The input's shape is the contract every policy is written against.
            prop_assert_eq!(keys(&value), ["assessment", "calendar", "change", "now", "now_ns", "requester_roles"]);
            prop_assert_eq!(
                keys(&value["change"]),
                ["id", "implementer", "links", "number", "requester", "scope", "template", "title", "type", "window"]
            );
            if assessed.is_some() {
                prop_assert_eq!(keys(&value["assessment"]), [
                    "downstream_cis", "factors", "formula_version", "history_days", "level", "position",
                    "recent_failures", "score", "services", "services_degraded", "services_down",
                    "services_not_listed", "truncated",
                ]);
                for service in value["assessment"]["services"].as_array().into_iter().flatten() {
                    prop_assert_eq!(
                        keys(service),
                        ["depth", "id", "name", "owners", "severity", "tier", "window_in_service_hours"]
                    );
                }
            }
            prop_assert_eq!(serde_json::to_string(&typed).expect("json"), value.to_string());
            prop_assert_eq!(typed.rule_input(), policy::native::read(&value), "{}", value);
            let policy = PolicyRecord::default_policy();
            let from_typed = policy::decide(&policy, &typed).expect("decides");
            prop_assert_eq!(&from_typed, &policy::decide(&policy, &value).expect("decides"));
            prop_assert!(policy::replay(&from_typed, &policy).matches);
        }
    }
}
