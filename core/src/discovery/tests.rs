//! Given/when/then tests of the discovery decider and the default rules (issue 17).

use std::collections::BTreeMap;

use serde_json::json;

use super::rules::{RawItem, RawRelationship, SourceRules, Unmapped};
use super::*;
use crate::decider::testing::Scenario;

fn run_id(n: u128) -> RunId {
    RunId(uuid::Uuid::from_u128(n))
}

fn started(scope: &str) -> RunStarted {
    RunStarted {
        source: SourceKind::Terraform,
        scope: scope.into(),
        file: "prod.tfstate".into(),
        rules_version: 0,
        observed_at: Timestamp::from_micros(1),
    }
}

fn item(n: usize) -> ObservedItem {
    ObservedItem {
        external_id: format!("terraform:s/aws_instance.web{n}"),
        source_type: "aws_instance".into(),
        class: CiClass::declared("cloud_resource").expect("class"),
        name: format!("aws_instance.web{n}"),
        version: None,
        attributes: BTreeMap::new(),
    }
}

fn batch(range: std::ops::Range<usize>) -> Observed {
    Observed::of(range.map(item).collect(), Vec::new())
}

#[test]
fn a_run_starts_observes_and_finishes_with_matching_counts() {
    let scenario = Scenario::new();
    let run = run_id(1);
    scenario.given(&DiscoveryDecider, "importer", DiscoveryCommand::StartRun { run, started: started("s") });
    scenario.given(
        &DiscoveryDecider,
        "importer",
        DiscoveryCommand::Observe { run, batches: vec![batch(0..3), batch(3..5)] },
    );
    let mut digest = ObservationDigest::default();
    digest.add(&batch(0..3));
    digest.add(&batch(3..5));
    let wrong = RunFinished { items: 4, relationships: 0, unmapped: BTreeMap::new(), digest: digest.finish() };
    let refused =
        scenario.execute(&DiscoveryDecider, "importer", &DiscoveryCommand::FinishRun { run, finished: wrong });
    assert!(
        matches!(refused, Err(crate::Error::Discovery(DiscoveryError::CountMismatch { recorded: 5, claimed: 4, .. }))),
        "{refused:?}"
    );
    let finished = RunFinished { items: 5, relationships: 0, unmapped: BTreeMap::new(), digest: digest.finish() };
    scenario.given(&DiscoveryDecider, "importer", DiscoveryCommand::FinishRun { run, finished });
    let DiscoveryState::Run(state) = scenario.fold(&DiscoveryKey::Run(run)) else { panic!("a run") };
    assert!(state.finished);
    assert_eq!(state.items, 5);
    // A finished run takes nothing more.
    let late =
        scenario.execute(&DiscoveryDecider, "importer", &DiscoveryCommand::Observe { run, batches: vec![batch(5..6)] });
    assert!(matches!(late, Err(crate::Error::Discovery(DiscoveryError::RunFinished(_)))), "{late:?}");
}

#[test]
fn observations_need_a_started_run_and_bounded_batches() {
    let scenario = Scenario::new();
    let run = run_id(2);
    let unknown =
        scenario.execute(&DiscoveryDecider, "importer", &DiscoveryCommand::Observe { run, batches: vec![batch(0..1)] });
    assert!(matches!(unknown, Err(crate::Error::Discovery(DiscoveryError::UnknownRun(_)))), "{unknown:?}");
    scenario.given(&DiscoveryDecider, "importer", DiscoveryCommand::StartRun { run, started: started("s") });
    let at_bound = batch(0..MAX_OBSERVATIONS_PER_EVENT);
    assert!(
        scenario
            .when(&DiscoveryDecider, "importer", &DiscoveryCommand::Observe { run, batches: vec![at_bound] })
            .is_ok()
    );
    let past = batch(0..MAX_OBSERVATIONS_PER_EVENT + 1);
    let refused =
        scenario.execute(&DiscoveryDecider, "importer", &DiscoveryCommand::Observe { run, batches: vec![past] });
    assert!(matches!(refused, Err(crate::Error::Discovery(DiscoveryError::BatchTooLarge { .. }))), "{refused:?}");
    let twice =
        scenario.execute(&DiscoveryDecider, "importer", &DiscoveryCommand::StartRun { run, started: started("s") });
    assert!(matches!(twice, Err(crate::Error::Discovery(DiscoveryError::RunExists(_)))), "{twice:?}");
    let bad_scope = scenario.execute(
        &DiscoveryDecider,
        "importer",
        &DiscoveryCommand::StartRun { run: run_id(3), started: started("a\nb") },
    );
    assert!(matches!(bad_scope, Err(crate::Error::Discovery(DiscoveryError::Invalid { .. }))), "{bad_scope:?}");
}

#[test]
fn an_audit_needs_a_finished_run_and_is_recorded_once() {
    let scenario = Scenario::new();
    let run = run_id(4);
    let audit = AuditId(uuid::Uuid::from_u128(9));
    let recorded = AuditRecorded {
        run,
        source: SourceKind::Terraform,
        scope: "s".into(),
        position: 2,
        counts: FindingCounts::default(),
        findings_digest: Hash([0; 32]),
    };
    scenario.given(&DiscoveryDecider, "importer", DiscoveryCommand::StartRun { run, started: started("s") });
    let early = scenario.execute(
        &DiscoveryDecider,
        "importer",
        &DiscoveryCommand::RecordAudit { audit, recorded: recorded.clone() },
    );
    assert!(matches!(early, Err(crate::Error::Discovery(DiscoveryError::RunNotFinished(_)))), "{early:?}");
    let finished = RunFinished { items: 0, relationships: 0, unmapped: BTreeMap::new(), digest: Hash([0; 32]) };
    scenario.given(&DiscoveryDecider, "importer", DiscoveryCommand::FinishRun { run, finished });
    scenario.given(&DiscoveryDecider, "importer", DiscoveryCommand::RecordAudit { audit, recorded: recorded.clone() });
    let again = scenario.execute(&DiscoveryDecider, "importer", &DiscoveryCommand::RecordAudit { audit, recorded });
    assert!(matches!(again, Err(crate::Error::Discovery(DiscoveryError::AuditExists(_)))), "{again:?}");
}

#[test]
fn rules_are_versioned_and_a_run_names_the_version_it_mapped_with() {
    let scenario = Scenario::new();
    let mut rules = SourceRules::defaults(SourceKind::Terraform);
    rules.authoritative.push("owner".into());
    let set = RulesSet { source: SourceKind::Terraform, rules: rules.clone(), reason: "owner from tags".into() };
    scenario.given(&DiscoveryDecider, "admin", DiscoveryCommand::SetRules(set));
    let DiscoveryState::Rules(folded) = scenario.fold(&DiscoveryKey::Rules) else { panic!("rules") };
    assert_eq!(folded.0, 1);
    assert_eq!(folded.1.of(SourceKind::Terraform), rules);
    assert_eq!(folded.1.of(SourceKind::Netbox), SourceRules::defaults(SourceKind::Netbox));
    let stale = scenario.execute(
        &DiscoveryDecider,
        "importer",
        &DiscoveryCommand::StartRun { run: run_id(5), started: started("s") },
    );
    assert!(matches!(stale, Err(crate::Error::Discovery(DiscoveryError::Invalid { .. }))), "{stale:?}");
    let mut bad = SourceRules::defaults(SourceKind::Terraform);
    bad.types[0].identify.clear();
    let refused = scenario.execute(
        &DiscoveryDecider,
        "admin",
        &DiscoveryCommand::SetRules(RulesSet { source: SourceKind::Terraform, rules: bad, reason: "x".into() }),
    );
    assert!(matches!(refused, Err(crate::Error::Discovery(DiscoveryError::Invalid { .. }))), "{refused:?}");
}

#[test]
fn the_default_rules_check_and_identify_kubernetes_by_uid_else_by_name() {
    for source in SourceKind::ALL {
        SourceRules::defaults(*source).check().unwrap_or_else(|e| panic!("{source}: {e}"));
    }
    let rules = SourceRules::defaults(SourceKind::Kubernetes);
    let mut fields: BTreeMap<String, serde_json::Value> = [
        ("kind", json!("Deployment")),
        ("namespace", json!("shop")),
        ("name", json!("cart")),
        ("image", json!("cart:1.2")),
        ("replicas", json!(3)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let raw = RawItem { source_type: "Deployment".into(), local_ref: "x".into(), fields: fields.clone() };
    let mut dropped = 0;
    let by_name = rules.map(SourceKind::Kubernetes, "c1", &raw, &mut dropped).expect("mapped");
    assert_eq!(by_name.external_id, "kubernetes:c1/shop/Deployment/cart");
    assert_eq!(by_name.class, CiClass::Container);
    assert_eq!(by_name.name, "shop/cart");
    assert_eq!(by_name.attributes["replicas"], json!(3), "a built-in integer attribute stays a number");
    fields.insert("uid".into(), json!("8f1c"));
    let by_uid =
        rules.map(SourceKind::Kubernetes, "c1", &RawItem { fields, ..raw.clone() }, &mut dropped).expect("mapped");
    assert_eq!(by_uid.external_id, "kubernetes:c1/8f1c");
    let unknown = RawItem { source_type: "ConfigMap".into(), ..raw };
    assert_eq!(rules.map(SourceKind::Kubernetes, "c1", &unknown, &mut dropped), Err(Unmapped::NoRule));
    let rel = RawRelationship { kind: "selects".into(), from: "a".into(), to: "b".into() };
    assert_eq!(rules.map_relationship(&rel, "x", "y").map(|r| r.rel_type), Some(RelType::RunsOn));
    let unknown_kind = RawRelationship { kind: "mounts".into(), ..rel };
    assert_eq!(rules.map_relationship(&unknown_kind, "x", "y"), None);
}
