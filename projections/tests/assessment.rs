//! The order of an assessment's services (CH-2): the first `MAX_ASSESSED_SERVICES` listed in
//! full, down before degraded, most critical, nearest, then by name; every further one briefly
//! in the same order with its id in place of its name. On an estate where more services than
//! the bound are reached, with many ties on tier and depth, and names ordered against ids.

mod common;

use cmdb_core::change::Scope;
use cmdb_core::change::risk::MAX_ASSESSED_SERVICES;
use cmdb_core::ci::{CiClass, CiCommand, CiId, RelType, Update};
use cmdb_projections::assessment::assessment_facts;
use cmdb_projections::graph::TemporalGraph;
use common::{World, ci, register, relate};
use serde_json::json;

const SERVICES: u128 = MAX_ASSESSED_SERVICES as u128 + 40;

/// Ten applications on host 1, and `SERVICES` services on the host (every third, depth 1)
/// or on an application (depth 2), named against their ids.
async fn estate(world: &World) {
    world.ok(register(1, CiClass::Host, None)).await;
    world.ok(register(99, CiClass::Team, None)).await;
    for app in 2..=11u128 {
        world.ok(register(app, CiClass::Application, None)).await;
        world.ok(relate(app, RelType::DependsOn, app, 1)).await;
    }
    for n in 0..SERVICES {
        let id = 1_000 + n;
        let CiCommand::Register(mut service) = register(id, CiClass::BusinessService, Some(99)) else { unreachable!() };
        // Names run against ids, so ordering by one is not ordering by the other.
        service.name = format!("svc-{:04}", SERVICES - n);
        world.ok(CiCommand::Register(service)).await;
        // Every third service on the host itself (depth 1), the rest on an application (2).
        let target = if n % 3 == 0 { 1 } else { 2 + n % 10 };
        world.ok(relate(10_000 + n, RelType::DependsOn, id, target)).await;
    }
}

/// Checks the facts of a failure of host 1 at `position` against the order computed
/// independently from each service's version there.
fn check_order(graph: &TemporalGraph, position: u64) {
    let scope = Scope { cis: vec![ci(1)], planned: vec![] };
    let now = graph.time_of(position).expect("time");
    let facts = assessment_facts(graph, &scope, position, now, 90).expect("facts");

    assert_eq!(facts.services.len(), MAX_ASSESSED_SERVICES);
    assert_eq!(facts.other_services.len(), SERVICES as usize - MAX_ASSESSED_SERVICES);
    assert_eq!(facts.services_not_listed as usize, facts.other_services.len());
    // The independent order: every service reached, sorted by the rule in full.
    let mut all: Vec<(u8, u32, String, CiId)> = (0..SERVICES)
        .map(|n| {
            let id = ci(1_000 + n);
            let depth = if n % 3 == 0 { 1 } else { 2 };
            let version = graph.ci_at(id, position).expect("the service");
            let tier = version.attributes["criticality_tier"].as_u64().expect("tier");
            (u8::try_from(tier).expect("tier"), depth, version.name.to_string(), id)
        })
        .collect();
    all.sort();
    let listed: Vec<(Option<u8>, u32, &str)> =
        facts.services.iter().map(|s| (s.tier, s.depth, s.name.as_str())).collect();
    let expected: Vec<(Option<u8>, u32, &str)> =
        all[..MAX_ASSESSED_SERVICES].iter().map(|(t, d, name, _)| (Some(*t), *d, name.as_str())).collect();
    assert_eq!(listed, expected, "the first of the full order, in it, at {position}");
    let briefed: Vec<(Option<u8>, u32, CiId)> = facts.other_services.iter().map(|s| (s.tier, s.depth, s.id)).collect();
    let mut rest: Vec<(Option<u8>, u32, CiId)> =
        all[MAX_ASSESSED_SERVICES..].iter().map(|(t, d, _, id)| (Some(*t), *d, *id)).collect();
    rest.sort();
    assert_eq!(briefed, rest, "the rest, by tier and depth, then id, at {position}");
    assert!(facts.services.iter().all(|s| s.severity == cmdb_core::model::Severity::Down));
}

#[tokio::test]
async fn services_beyond_the_bound_are_briefed_in_the_same_order() {
    let world = World::new();
    estate(&world).await;
    let graph = world.graph().await;
    check_order(&graph, graph.applied());
}

/// Tiers and names read at a past position are those of then; at the head, those of the
/// newest versions (which an assessment reads without the snapshots, issue 15 part 3).
#[tokio::test]
async fn a_past_position_ranks_by_the_tiers_and_names_of_then() {
    let world = World::new();
    estate(&world).await;
    let before = world.graph().await.applied();
    for n in (0..SERVICES).filter(|n| n % 5 == 0) {
        let mut update = Update::default();
        // Every fifth service becomes the most critical, and some move in the name order.
        update.set_attributes.insert("criticality_tier".into(), json!(1));
        if n % 2 == 0 {
            update.name = Some(format!("a-svc-{n:04}"));
        }
        world.ok(CiCommand::Update(ci(1_000 + n), update)).await;
    }
    let graph = world.graph().await;
    check_order(&graph, before);
    check_order(&graph, graph.applied());
    check_order(&graph, before + 7);
    let scope = Scope { cis: vec![ci(1)], planned: vec![] };
    let at = |position| {
        let facts = assessment_facts(&graph, &scope, position, graph.time_of(position).expect("time"), 90);
        facts.expect("facts").services.iter().filter(|s| s.tier == Some(1)).count()
    };
    assert!(at(graph.applied()) > at(before), "the new tiers count at the head, not before");
}

fn office(zone: &str, start: &str) -> serde_json::Value {
    json!({"time_zone": zone, "weekly": [{"days": ["mon", "tue"], "start": start, "end": "17:00"}]})
}

/// Checks every listed service's hours at `position` against its version there, read on its
/// own, and that the services of one pattern share one value.
fn check_hours(graph: &TemporalGraph, position: u64) -> usize {
    let scope = Scope { cis: vec![ci(1)], planned: vec![] };
    let facts = assessment_facts(graph, &scope, position, graph.time_of(position).expect("time"), 90).expect("facts");
    let mut patterns: Vec<std::sync::Arc<cmdb_core::change::risk::ServiceHours>> = Vec::new();
    for service in &facts.services {
        let version = graph.ci_at(service.id, position).expect("the service");
        let expected =
            version.attributes.get("service_hours").and_then(cmdb_core::change::risk::ServiceHours::from_attribute);
        assert_eq!(service.service_hours.as_deref(), expected.as_ref(), "{} at {position}", service.name);
        if let Some(hours) = &service.service_hours {
            match patterns.iter().find(|known| ***known == **hours) {
                Some(known) => assert!(std::sync::Arc::ptr_eq(known, hours), "one pattern, one value, at {position}"),
                None => patterns.push(hours.clone()),
            }
        }
    }
    patterns.len()
}

/// Service hours are those of the version at the position: at the head an assessment takes
/// them from the services' newest versions, read once per pattern as they are applied; at a
/// past position from the versions of then (issue 15 part 3).
#[tokio::test]
async fn service_hours_are_those_of_the_position_and_shared_by_pattern() {
    let world = World::new();
    estate(&world).await;
    let before = world.graph().await.applied();
    let set_hours = |n: u128, hours: serde_json::Value| {
        let mut update = Update::default();
        update.set_attributes.insert("service_hours".into(), hours);
        CiCommand::Update(ci(1_000 + n), update)
    };
    for n in 0..SERVICES {
        let zone = if n % 2 == 0 { "UTC" } else { "Europe/Paris" };
        world.ok(set_hours(n, office(zone, "09:00"))).await;
    }
    let with_two = world.graph().await.applied();
    for n in (0..SERVICES).filter(|n| n % 7 == 0) {
        // A third pattern, and back to the first (a value equal to one read before).
        let hours = if n % 2 == 0 { office("Asia/Tokyo", "08:00") } else { office("UTC", "09:00") };
        world.ok(set_hours(n, hours)).await;
    }
    let graph = world.graph().await;
    assert_eq!(check_hours(&graph, before), 1, "the hours every service was registered with");
    assert_eq!(check_hours(&graph, with_two), 2);
    assert_eq!(check_hours(&graph, with_two + 5), 3, "part way through the second round");
    assert_eq!(check_hours(&graph, graph.applied()), 3);
}
