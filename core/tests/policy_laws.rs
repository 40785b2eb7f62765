//! Laws of assessment and decision, over generated facts (CH-2, CH-4): every decision replays
//! to the recorded answer; each risk factor only ever raises the score; an approval never
//! counts for a requirement its principal does not qualify for.

use cmdb_core::access::{AccessState, Role};
use cmdb_core::change::decide::policy_input;
use cmdb_core::change::risk::{self, AssessmentFacts, CiFailures, ServiceFact, ServiceHours, WeeklyHours};
use cmdb_core::change::{At, ChangeDetails, ChangeDrafted, ChangeRecord, ChangeType, Scope, Window};
use cmdb_core::ci::{ChangeId, CiId};
use cmdb_core::model::Severity;
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
            service_hours: open.then(|| ServiceHours {
                time_zone: "Europe/Berlin".into(),
                weekly: vec![WeeklyHours {
                    days: vec!["mon".into(), "tue".into(), "wed".into()],
                    start: "08:00".into(),
                    end: "18:00".into(),
                }],
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
