//! The temporal graph: as-of reads equal a replay, impact analysis on cycles and hubs, paths,
//! history, time lookups.

mod common;

use cmdb_core::ci::{CiClass, CiCommand, RelType, Status, Update};
use cmdb_projections::graph::{GraphError, ImpactDirection, Traversal};
use common::{World, ci, register, rel, relate, replay, step};
use proptest::prelude::*;
use serde_json::json;

fn downstream(max_depth: u32) -> Traversal {
    Traversal { direction: ImpactDirection::Downstream, max_depth, max_results: 1000, types: None }
}

/// team 1; service 2 (owned by 1); app 3 provides 2; app 3 runs_on host 4; db 5 runs_on host 4;
/// app 3 depends_on db 5; document 6 documents app 3 (no propagation).
async fn small_estate(world: &World) {
    world.ok(register(1, CiClass::Team, None)).await;
    world.ok(register(2, CiClass::BusinessService, Some(1))).await;
    world.ok(register(3, CiClass::Application, None)).await;
    world.ok(register(4, CiClass::Host, None)).await;
    world.ok(register(5, CiClass::Database, None)).await;
    world.ok(relate(1, RelType::Provides, 3, 2)).await;
    world.ok(relate(2, RelType::RunsOn, 3, 4)).await;
    world.ok(relate(3, RelType::RunsOn, 5, 4)).await;
    world.ok(relate(4, RelType::DependsOn, 3, 5)).await;
    world
        .ok(CiCommand::Register(cmdb_core::ci::Register {
            attributes: serde_json::from_value(
                json!({"document_type": "runbook", "uri": "https://wiki.example/runbook"}),
            )
            .expect("map"),
            ..match register(6, CiClass::Document, None) {
                CiCommand::Register(r) => r,
                _ => unreachable!(),
            }
        }))
        .await;
    world.ok(relate(5, RelType::DocumentedBy, 3, 6)).await;
}

#[tokio::test]
async fn downstream_impact_reaches_the_service_with_tier_and_shortest_paths() {
    let world = World::new();
    small_estate(&world).await;
    let graph = world.graph().await;
    let head = graph.applied();
    let impact = graph.impact(ci(4), head, &downstream(6)).expect("impact");
    let mut reached: Vec<(u128, u32)> = impact.reached.iter().map(|r| (r.ci.id.0.as_u128(), r.depth)).collect();
    reached.sort_unstable();
    assert_eq!(reached, vec![(2, 2), (3, 1), (5, 1)], "host -> app, db -> service; the document is not impacted");
    assert_eq!(impact.services.len(), 1);
    assert_eq!(impact.services[0].tier, Some(3), "service 2's tier is 2 % 4 + 1");
    let to_service = impact.reached.iter().find(|r| r.ci.id == ci(2)).expect("service");
    assert_eq!(impact.path_to(to_service.ci.id).iter().map(|s| s.ci).collect::<Vec<_>>(), vec![ci(3), ci(2)]);
    assert!(!impact.truncated);

    let upstream = graph
        .impact(ci(2), head, &Traversal { direction: ImpactDirection::Upstream, ..downstream(6) })
        .expect("upstream");
    let mut ids: Vec<u128> = upstream.reached.iter().map(|r| r.ci.id.0.as_u128()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![3, 4, 5], "the service depends on the app, its host and its database");

    let shallow = graph.impact(ci(4), head, &downstream(1)).expect("depth 1");
    assert!(shallow.reached.iter().all(|r| r.depth == 1));
    let only_runs_on = graph
        .impact(ci(4), head, &Traversal { types: Some(vec![RelType::RunsOn]), ..downstream(6) })
        .expect("filtered");
    assert_eq!(only_runs_on.reached.len(), 2);
    let truncated = graph.impact(ci(4), head, &Traversal { max_results: 1, ..downstream(6) }).expect("bounded");
    assert!(truncated.truncated);
    assert_eq!(truncated.reached.len(), 1);
    assert_eq!(graph.impact(ci(4), head, &downstream(0)), Err(GraphError::Depth(0)));
    assert_eq!(graph.impact(ci(4), head, &downstream(33)), Err(GraphError::Depth(33)));
    assert!(matches!(graph.impact(ci(99), head, &downstream(3)), Err(GraphError::UnknownCi { .. })));
    assert!(matches!(graph.impact(ci(4), head + 1, &downstream(3)), Err(GraphError::PositionAhead { .. })));
}

#[tokio::test]
async fn cycles_are_reported_and_never_followed_forever() {
    let world = World::new();
    for n in 1..=4 {
        world.ok(register(n, CiClass::Application, None)).await;
    }
    // 1 -> 2 -> 3 -> 1 (depends_on), and 4 depends on 3.
    world.ok(relate(1, RelType::DependsOn, 1, 2)).await;
    world.ok(relate(2, RelType::DependsOn, 2, 3)).await;
    world.ok(relate(3, RelType::DependsOn, 3, 1)).await;
    world.ok(relate(4, RelType::DependsOn, 4, 3)).await;
    let graph = world.graph().await;
    let impact = graph.impact(ci(1), graph.applied(), &downstream(32)).expect("impact");
    let mut reached: Vec<u128> = impact.reached.iter().map(|r| r.ci.id.0.as_u128()).collect();
    reached.sort_unstable();
    assert_eq!(reached, vec![2, 3, 4], "each CI once, the root not re-reached");
    assert!(!impact.cycles.is_empty(), "the cycle is reported");
    let cycle = &impact.cycles[0];
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&ci(1)) && cycle.contains(&ci(2)) && cycle.contains(&ci(3)), "{cycle:?}");
    // A path follows the dependencies one way only.
    let path = graph.path(ci(4), ci(2), graph.applied(), Some(ImpactDirection::Upstream), 8, None).expect("path");
    assert_eq!(path.expect("4 depends on 2 through 3 and 1").len(), 3);
    assert_eq!(
        graph.path(ci(2), ci(4), graph.applied(), Some(ImpactDirection::Upstream), 8, None).expect("path"),
        None
    );
}

#[tokio::test]
async fn a_hub_reaches_everything_at_depth_one_and_max_results_bounds_it() {
    let world = World::new();
    world.ok(register(1, CiClass::KubernetesCluster, None)).await;
    for n in 0..300u128 {
        world.ok(register(1000 + n, CiClass::Application, None)).await;
        world.ok(relate(n, RelType::RunsOn, 1000 + n, 1)).await;
    }
    let graph = world.graph().await;
    let impact = graph.impact(ci(1), graph.applied(), &downstream(3)).expect("impact");
    assert_eq!(impact.reached.len(), 300);
    assert!(impact.reached.iter().all(|r| r.depth == 1 && impact.path_to(r.ci.id).len() == 1));
    let bounded =
        graph.impact(ci(1), graph.applied(), &Traversal { max_results: 100, ..downstream(3) }).expect("bounded");
    assert!(bounded.truncated);
    assert_eq!(bounded.reached.len(), 100);
}

#[tokio::test]
async fn history_as_of_reads_withdrawal_and_time_lookups() {
    let world = World::new();
    small_estate(&world).await;
    let before_update = world.graph().await.applied();
    world
        .ok(CiCommand::Update(
            ci(4),
            Update {
                set_attributes: serde_json::from_value(json!({"cpu_cores": 32})).expect("map"),
                ..Update::default()
            },
        ))
        .await;
    world
        .ok(CiCommand::Transition {
            ci_id: ci(4),
            to: Status::UnderChange,
            reason: Some("kernel".into()),
            authorized_by: None,
        })
        .await;
    world.ok(CiCommand::Withdraw { ci_id: ci(5), reason: None, authorized_by: None }).await;
    let graph = world.graph().await;
    let head = graph.applied();
    assert_eq!(graph.ci_at(ci(4), before_update).expect("then").attributes["cpu_cores"], json!(4));
    assert_eq!(graph.ci_at(ci(4), head).expect("now").attributes["cpu_cores"], json!(32));
    assert_eq!(graph.ci_at(ci(4), head).expect("now").status, Status::UnderChange);
    assert_eq!(graph.ci_at(ci(5), head).expect("withdrawn CIs stay readable").status, Status::Withdrawn);
    assert!(graph.ci_at(ci(4), 1).is_none(), "not registered yet at position 1");
    let (versions, history) = graph.history(ci(4)).expect("history");
    assert_eq!(versions.len(), 3, "registered, updated, under change");
    assert!(versions.windows(2).all(|w| w[0].to == w[1].from));
    let types: Vec<&str> = history.iter().map(|h| h.event_type.as_str()).collect();
    assert!(types.contains(&"ci.relationship_added") && types.contains(&"ci.relationship_removed"), "{types:?}");
    assert_eq!(&*history[0].principal, "tester");
    // The database's relationships ended with it.
    assert!(graph.relationships_at(head, Some(ci(5)), None).is_empty());
    assert_eq!(graph.relationships_at(before_update, Some(ci(5)), None).len(), 2);
    assert!(graph.relationship(rel(3)).expect("kept").to <= head);
    // Names: free again once withdrawn.
    assert!(graph.ci_by_name(CiClass::Database, "database-5", head).is_none());
    assert_eq!(graph.ci_by_name(CiClass::Database, "DATABASE-5", before_update).expect("then").id, ci(5));
    // Time: each command advanced the clock by a second; the declarations that make every
    // class uncontrolled share the first instant, the first registration's two events the next.
    let declarations = CiClass::BUILTIN.len() as u64;
    let first_time = graph.time_of(declarations + 1).expect("time");
    assert_eq!(
        graph.position_at(first_time).expect("position"),
        declarations + 2,
        "the first registration's events share a second"
    );
    // Before the first event: the empty estate at position 0, with no time of its own.
    assert_eq!(graph.position_at(graph.time_of(1).expect("time").saturating_add_micros(-1)), Ok(0));
    assert_eq!(graph.time_of(0), None);
    assert_eq!(graph.position_at(cmdb_core::Timestamp::from_micros(i64::MAX)).expect("now"), head);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The law: the graph built from the whole log, read at p, answers exactly as a graph
    /// built from scratch from the events up to p.
    #[test]
    fn as_of_equals_replay(steps in proptest::collection::vec(step(), 1..80), probes in proptest::collection::vec(0.0f64..1.0, 4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let world = World::new();
            common::play(&world, &steps).await;
            let log = world.log().await;
            let full = replay(&log, u64::MAX);
            let head = full.applied();
            for probe in &probes {
                let p = ((head as f64) * probe) as u64;
                let partial = replay(&log, p);
                for n in 0..12u128 {
                    // The replay's newest state is the oracle: no as-of lookup involved.
                    prop_assert_eq!(full.ci_at(ci(n), p), partial.latest_ci(ci(n)), "CI {} at {}", n, p);
                    let a: Vec<_> = full.relationships_at(p, Some(ci(n)), None).into_iter().map(|r| (r.id, r.rel_type, r.source, r.target)).collect();
                    let b: Vec<_> = partial
                        .relationships_at(u64::MAX - 1, Some(ci(n)), None)
                        .into_iter()
                        .map(|r| (r.id, r.rel_type, r.source, r.target))
                        .collect();
                    prop_assert_eq!(a, b, "relationships of {} at {}", n, p);
                    if p > 0 && full.ci_at(ci(n), p).is_some() {
                        let x = full.impact(ci(n), p, &downstream(6)).expect("impact");
                        let y = partial.impact(ci(n), p, &downstream(6)).expect("impact");
                        let ids = |i: &cmdb_projections::graph::Impact| {
                            let mut v: Vec<_> = i.reached.iter().map(|r| (r.ci.id, r.depth)).collect();
                            v.sort();
                            v
                        };
                        prop_assert_eq!(ids(&x), ids(&y));
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// Changes are part of the graph's checkpoint: a change read back from a checkpoint is the
/// change replayed from the log, at every position.
#[tokio::test]
async fn changes_survive_a_checkpoint_round_trip_exactly() {
    use cmdb_core::access::{AccessCommand, AccessDecider, PrincipalKind, Role};
    use cmdb_core::change::ChangeDecider;
    use cmdb_core::change::{ChangeAction, ChangeCommand, ChangeDetails, ChangeType, PlannedCi, Scope};
    use cmdb_core::ci::ChangeId;
    use cmdb_core::decider::{CommandContext, execute};
    use cmdb_core::{Actor, Clock, Metadata, Source};
    use cmdb_projections::graph::TemporalGraph;
    let world = World::new();
    world.ok(register(1, CiClass::Host, None)).await;
    for (name, role) in [("req", Role::Editor), ("apr", Role::Approver), ("mgr", Role::ChangeManager)] {
        let command = AccessCommand::CreatePrincipal {
            name: name.into(),
            kind: PrincipalKind::Person,
            display_name: None,
            roles: [role].into(),
        };
        let context = CommandContext::new(Metadata::new(Actor::system(), Source::Api), world.clock.now());
        execute(&world.store, &AccessDecider, &command, &context, None).await.expect("principal");
    }
    let id = ChangeId(uuid::Uuid::from_u128(77));
    let details = ChangeDetails {
        title: "t".into(),
        description: Some("d".into()),
        justification: Some("j".into()),
        back_out_plan: Some("b".into()),
        window: None,
        implementer: Some("req".into()),
        scope: Scope { cis: vec![ci(1)], planned: vec![PlannedCi { class: CiClass::Host, name: "new".into() }] },
        links: vec![],
    };
    let run = |actor: &'static str, command: ChangeCommand| {
        let store = &world.store;
        let now = world.clock.now();
        async move {
            let context = CommandContext::new(Metadata::new(Actor::principal(actor), Source::Api), now);
            execute(store, &ChangeDecider::default(), &command, &context, None).await.expect("change command");
        }
    };
    run("req", ChangeCommand::Draft { change_id: id, change_type: ChangeType::Normal, template_id: None, details })
        .await;
    // Assessed with facts (a decision, service hours, owners), so the checkpoint carries them.
    // Facts as the graph at the head gives them (an approval refuses facts older than the scope).
    let head = cmdb_core::EventStore::head(&world.store).await.expect("head").position;
    let facts = cmdb_core::change::risk::AssessmentFacts {
        position: head,
        computed_at: world.clock.now(),
        downstream_cis: 3,
        truncated: false,
        services: vec![cmdb_core::change::risk::ServiceFact {
            id: ci(1),
            name: "svc".into(),
            tier: Some(1),
            service_hours: Some(std::sync::Arc::new(cmdb_core::change::risk::ServiceHours {
                time_zone: "UTC".into(),
                weekly: vec![cmdb_core::change::risk::WeeklyHours {
                    days: vec!["mon".into()],
                    start: "08:00".into(),
                    end: "18:00".into(),
                }],
            })),
            owner_contacts: vec!["apr@example.com".into()],
            depth: 1,
            severity: cmdb_core::model::Severity::Down,
        }],
        services_not_listed: 0,
        other_services: vec![],
        history_days: 90,
        failures: vec![],
        calendar: None,
    };
    for (actor, action, facts) in [
        ("req", ChangeAction::Submit, None),
        ("mgr", ChangeAction::Assess, Some(Box::new(facts))),
        ("apr", ChangeAction::Approve, None),
    ] {
        run(actor, ChangeCommand::Act { change_id: id, action, note: Some("n".into()), review: None, facts }).await;
    }
    run("mgr", ChangeCommand::Comment { change_id: id, text: "c".into() }).await;
    let log = world.log().await;
    let graph = replay(&log, u64::MAX);
    let bytes = postcard::to_allocvec(&graph).expect("serialize");
    let restored: TemporalGraph = postcard::from_bytes(&bytes).expect("deserialize");
    for position in 0..=graph.applied() {
        let (a, b) = (graph.change_book().change_at(id, position), restored.change_book().change_at(id, position));
        assert_eq!(a, b, "at {position}");
        assert_eq!(
            a,
            replay(&log, position).change_book().change_at(id, position),
            "as-of equals replay at {position}"
        );
    }
    let now = restored.change_book().change_at(id, restored.applied()).expect("exists");
    assert_eq!(now.details.scope.cis, vec![ci(1)], "the scope kept once is still the scope");
    assert_eq!(now.comments.len(), 1);
}

/// A CI's history keeps each event's correlation id as the record had it, short (held
/// inline) or long, and a registration's entry is its first (CM-8); the CI's first version
/// holds the registration's attributes.
#[tokio::test]
async fn history_keeps_each_records_correlation_id_short_or_long() {
    let world = World::new();
    world.ok(register(1, CiClass::Host, None)).await;
    world
        .ok(CiCommand::Update(
            ci(1),
            Update {
                set_attributes: serde_json::from_value(json!({"cpu_cores": 8})).expect("map"),
                ..Update::default()
            },
        ))
        .await;
    let mut log = world.log().await;
    let long = "a-correlation-id-longer-than-twenty-four-bytes";
    for record in &mut log {
        record.correlation_id = Some(if record.position % 2 == 0 { "req-1" } else { long }.into());
    }
    let graph = replay(&log, u64::MAX);
    let (versions, history) = graph.history(ci(1)).expect("history");
    assert_eq!(history.len(), 2, "registered, updated");
    assert_eq!(history[0].event_type, cmdb_projections::graph::HistoryKind::Registered);
    for entry in history {
        let record = log.iter().find(|r| r.position == entry.position).expect("the record");
        assert_eq!(entry.correlation_id, record.correlation_id);
    }
    assert!(history.iter().any(|h| h.correlation_id.as_deref() == Some(long)), "both lengths appear");
    let registered = common::attributes(CiClass::Host, 1);
    assert_eq!(versions[0].ci.attributes.to_btree(), registered);
    assert_eq!(versions[1].ci.attributes["cpu_cores"], json!(8));
}

/// A CI withdrawn while relationships into it stay (a log whose withdrawal did not remove
/// them, as an older writer or an import may leave it) is not crossed into at a position
/// after its withdrawal, and was before it. A walk at a past position skips the presence check
/// only for CIs never withdrawn (issue 15 part 3); this one must be checked.
#[tokio::test]
async fn a_walk_does_not_cross_into_a_ci_withdrawn_with_its_relationships_left() {
    let world = World::new();
    world.ok(register(1, CiClass::Host, None)).await;
    world.ok(register(2, CiClass::Application, None)).await;
    world.ok(register(3, CiClass::Application, None)).await;
    world.ok(relate(10, RelType::DependsOn, 2, 1)).await;
    world.ok(relate(11, RelType::DependsOn, 3, 2)).await;
    let before = world.graph().await.applied();
    world.ok(CiCommand::Withdraw { ci_id: ci(2), reason: None, authorized_by: None }).await;
    world.ok(register(4, CiClass::Application, None)).await;
    let mut log = world.log().await;
    // The removals the withdrawal wrote become events the graph does not read (the log stays
    // gapless), so both relationships into and out of CI 2 stay.
    let mut neutralised = 0;
    for record in &mut log {
        if [cmdb_core::ci::CiEvent::RELATIONSHIP_REMOVED, cmdb_core::ci::CiEvent::UNLINKED]
            .contains(&record.fold.event_type.as_str())
        {
            record.fold.event_type = "test.not_read".into();
            neutralised += 1;
        }
    }
    assert!(neutralised > 0, "the withdrawal removed relationships");
    let graph = replay(&log, u64::MAX);
    assert_eq!(graph.relationships_at(graph.applied(), Some(ci(2)), None).len(), 2, "they stay");
    let reached = |position| {
        let mut ids: Vec<_> = graph.reach_all(&[ci(1)], position).expect("walk").iter().map(|r| r.ci.id).collect();
        ids.sort();
        (ids, graph.reach(&[ci(1)], position).expect("reach").cis)
    };
    assert_eq!(reached(before), (vec![ci(2), ci(3)], 2));
    assert_eq!(reached(graph.applied()), (vec![], 0), "nothing through the withdrawn CI");
    // The same with epochs of past hops of one and two positions: the hop into the withdrawn
    // CI is valid through them, its target not present through them.
    for length in [1, 2] {
        let mut epochs = replay(&log, u64::MAX);
        epochs.build_past_hops(length);
        let head = epochs.applied();
        for position in 1..=head {
            let ids = |g: &cmdb_projections::graph::TemporalGraph| -> Vec<_> {
                g.reach_all(&[ci(1)], position).expect("walk").iter().map(|r| r.ci.id).collect()
            };
            assert_eq!(ids(&epochs), ids(&graph), "epochs of {length}, at {position}");
        }
    }
}
