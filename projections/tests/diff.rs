//! Diffs between two positions: the law (state at a + diff(a, b) = state at b), scoping, and
//! what each entry says about its cause.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cmdb_core::ci::{CiClass, CiCommand, CiId, CiSnapshot, RelId, RelType, Status, Update};
use cmdb_projections::diff::{CiChangeKind, Diff, RelChangeKind};
use cmdb_projections::graph::{GraphError, TemporalGraph};
use common::{World, ci, register, relate, replay, step};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every CI present at `p` and every relationship valid at `p`.
fn state(graph: &TemporalGraph, p: u64) -> (BTreeMap<CiId, CiSnapshot>, BTreeSet<RelId>) {
    let mut cis = BTreeMap::new();
    for n in 0..12u128 {
        if let Some(ci) = graph.ci_at(ci(n), p) {
            cis.insert(ci.id, (*ci).clone());
        }
    }
    let rels = graph.relationships_at(p, None, None).into_iter().map(|r| r.id).collect();
    (cis, rels)
}

fn parse<T: serde::de::DeserializeOwned>(value: &Value) -> T {
    serde_json::from_value(value.clone()).expect("typed")
}

fn set_field(ci: &mut CiSnapshot, field: &str, value: &Value) {
    match field {
        "name" => ci.name = parse(value),
        "status" => ci.status = parse(value),
        "environment" => ci.environment = parse(value),
        "owner" => ci.owner = parse(value),
        "location" => ci.location = parse(value),
        "version" => ci.version = parse(value),
        other => {
            let name = other.strip_prefix("attributes.").expect("an attribute");
            if value.is_null() {
                std::sync::Arc::make_mut(&mut ci.attributes).remove(name);
            } else {
                std::sync::Arc::make_mut(&mut ci.attributes).insert(name, value.clone());
            }
        }
    }
}

/// Applies a diff to a state, using only the field changes (never the `after` snapshots,
/// except for the identity and class of a created CI).
fn apply(
    mut state: (BTreeMap<CiId, CiSnapshot>, BTreeSet<RelId>),
    diff: &Diff,
) -> (BTreeMap<CiId, CiSnapshot>, BTreeSet<RelId>) {
    for change in &diff.cis {
        let ci = match change.kind {
            CiChangeKind::Created => {
                let after = change.after.as_ref().expect("a created CI has an after");
                state.0.entry(change.id).or_insert_with(|| CiSnapshot {
                    id: after.id,
                    class: after.class,
                    name: cmdb_core::Text::default(),
                    status: Status::Planned,
                    environment: None,
                    owner: None,
                    location: None,
                    version: None,
                    attributes: Default::default(),
                })
            }
            _ => state.0.get_mut(&change.id).expect("a changed CI existed"),
        };
        for field in &change.fields() {
            set_field(ci, &field.field, &field.after);
        }
    }
    for rel in &diff.relationships {
        match rel.kind {
            RelChangeKind::Added => assert!(state.1.insert(rel.relationship.id)),
            RelChangeKind::Removed => assert!(state.1.remove(&rel.relationship.id)),
        }
    }
    state
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn applying_the_diff_to_the_state_at_a_gives_the_state_at_b(
        steps in proptest::collection::vec(step(), 1..80),
        a in 0.0f64..1.0,
        b in 0.0f64..1.0,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let world = World::new();
            common::play(&world, &steps).await;
            let graph = world.graph().await;
            let head = graph.applied();
            let (a, b) = {
                let (x, y) = (((head as f64) * a) as u64, ((head as f64) * b) as u64);
                (x.min(y), x.max(y))
            };
            let diff = graph.diff(a, b, None).expect("diff");
            prop_assert_eq!(apply(state(&graph, a), &diff), state(&graph, b));
            // The same from scratch: the diff of a graph that only ever saw the log up to b.
            // (Relationships then lack what happened to them after b, so compare their causes.)
            let partial = replay(&world.log().await, b).diff(a, b, None).expect("diff");
            prop_assert_eq!(&partial.cis, &diff.cis);
            let causes = |d: &Diff| d.relationships.iter().map(|r| (r.kind, r.relationship.id, r.cause.clone())).collect::<Vec<_>>();
            prop_assert_eq!(causes(&partial), causes(&diff));
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn entries_name_their_fields_and_causes_and_scoping_keeps_the_neighbourhood() {
    let world = World::new();
    world.ok(register(1, CiClass::Host, None)).await;
    world.ok(register(2, CiClass::Application, None)).await;
    world.ok(register(3, CiClass::Application, None)).await;
    let start = world.graph().await.applied();
    world.ok(relate(1, RelType::RunsOn, 2, 1)).await;
    world
        .ok(CiCommand::Update(
            ci(1),
            Update {
                set_attributes: serde_json::from_value(json!({"cpu_cores": 16})).expect("map"),
                ..Update::default()
            },
        ))
        .await;
    world.ok(CiCommand::Transition { ci_id: ci(3), to: Status::UnderChange, reason: None, authorized_by: None }).await;
    world.ok(register(4, CiClass::Database, None)).await;
    world.ok(CiCommand::Withdraw { ci_id: ci(2), reason: None, authorized_by: None }).await;
    let graph = world.graph().await;
    let end = graph.applied();
    let diff = graph.diff(start, end, None).expect("diff");
    let kind = |n: u128| diff.cis.iter().find(|c| c.id == ci(n)).map(|c| (c.kind, c.transitioned));
    assert_eq!(kind(1), Some((CiChangeKind::Changed, false)));
    assert_eq!(kind(2), Some((CiChangeKind::Withdrawn, false)));
    assert_eq!(kind(3), Some((CiChangeKind::Changed, true)));
    assert_eq!(kind(4), Some((CiChangeKind::Created, false)));
    let host = diff.cis.iter().find(|c| c.id == ci(1)).expect("host");
    let fields = host.fields();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].field, "attributes.cpu_cores");
    assert_eq!((fields[0].before.clone(), fields[0].after.clone()), (json!(4), json!(16)));
    assert!(
        graph
            .events_between(host.id, start, end)
            .iter()
            .any(|e| e.event_type.as_str() == "ci.updated" && &*e.principal == "tester")
    );
    // The relationship was added and removed within the range: no net difference.
    assert!(diff.relationships.is_empty());
    let mid = graph.diff(start, start + 3, None).expect("diff");
    assert_eq!(mid.relationships.len(), 1);
    assert_eq!(mid.relationships[0].kind, RelChangeKind::Added);
    assert_eq!(&*mid.relationships[0].cause.principal, "tester");

    // Scoped to the host's neighbourhood at either end: the host and app 2, not 3 or 4.
    let mut scope = graph.neighbourhood(ci(1), start + 3, 1).expect("scope");
    scope.extend(graph.neighbourhood(ci(1), end, 1).expect("scope"));
    let scoped = graph.diff(start, end, Some(&scope)).expect("diff");
    let ids: BTreeSet<CiId> = scoped.cis.iter().map(|c| c.id).collect();
    assert_eq!(ids, [ci(1), ci(2)].into_iter().collect());

    assert_eq!(graph.diff(end, start, None), Err(GraphError::FromAfterTo { from: end, to: start }));
    assert!(matches!(graph.diff(start, end + 5, None), Err(GraphError::PositionAhead { .. })));
}
