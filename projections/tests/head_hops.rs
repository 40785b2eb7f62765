//! The head index of hops (issue 15, part 3; CH-2): a walk that reads it gives what the walk
//! over the hops of every position gives, whether the index was built before the last changes
//! (rewritten lists) or after them, across relationships made and removed and CIs withdrawn.

mod common;

use cmdb_core::ci::{CiClass, CiId, RelType};
use cmdb_projections::graph::{HEAD_HOPS_MAX_REWRITTEN_LISTS, PAST_HOPS_MAX_EPOCHS, TemporalGraph};
use common::{World, ci, play, register, relate, replay, step};
use proptest::prelude::*;

/// Every CI a walk from `roots` reaches, in the order reached, with depth and severity.
fn walked(
    graph: &TemporalGraph,
    roots: &[CiId],
    position: u64,
) -> Vec<(CiId, u32, Option<cmdb_projections::graph::Severity>)> {
    let reached = graph.reach_all(roots, position).expect("walk");
    reached.iter().map(|r| (r.ci.id, r.depth, r.severity)).collect()
}

/// The log of a world that played `steps`.
fn played(steps: &[common::Step]) -> Vec<cmdb_core::EventRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let world = World::new();
        play(&world, steps).await;
        world.log().await
    })
}

/// Each of CIs 0-11 alone, CI 99 (never registered: skipped), and the CIs of `roots` together.
fn failure_sets(roots: &std::collections::BTreeSet<u8>) -> Vec<Vec<CiId>> {
    let mut all: Vec<CiId> = (0..12).map(ci).collect();
    all.push(ci(99));
    all.iter().map(|id| vec![*id]).chain(std::iter::once(roots.iter().map(|n| ci(u128::from(*n))).collect())).collect()
}

/// The graph folded up to `split` events, the index built there, then the rest folded.
fn indexed_at(log: &[cmdb_core::EventRecord], split: usize) -> TemporalGraph {
    let mut graph = replay(&log[..split], u64::MAX);
    graph.build_head_hops();
    for record in &log[split..] {
        graph.apply(record).expect("apply");
    }
    graph
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The law: at every position the index covers, a walk reading it equals the walk over the
    /// hops of every position (same CIs, same order, depths and severities), for every CI as
    /// the failed one and for a set of them; before that position the walks are the same code.
    #[test]
    fn walks_at_the_head_read_the_index_and_answer_as_the_hops_of_every_position(
        steps in proptest::collection::vec(step(), 1..90),
        split in 0.0f64..1.0,
        roots in proptest::collection::btree_set(0u8..12, 1..4),
    ) {
        let log = played(&steps);
        let plain = replay(&log, u64::MAX);
        let split = ((log.len() as f64) * split) as usize;
        let kept = indexed_at(&log, split);
        let fresh = indexed_at(&log, log.len());
        let head = plain.applied();
        prop_assert_eq!(fresh.head_hops_valid_from(), Some(head));
        let valid_from = kept.head_hops_valid_from().expect("built");
        prop_assert!(valid_from <= head);
        let sets = failure_sets(&roots);
        for position in (valid_from..=head).rev().take(3) {
            for set in &sets {
                let want = walked(&plain, set, position);
                prop_assert_eq!(&walked(&kept, set, position), &want, "kept index, {:?} at {}", set, position);
                if position == head {
                    prop_assert_eq!(&walked(&fresh, set, position), &want, "fresh index, {:?}", set);
                    let (a, b) = (kept.reach(set, head).expect("reach"), plain.reach(set, head).expect("reach"));
                    prop_assert_eq!(a.cis, b.cis);
                    let ids = |r: &cmdb_projections::graph::Reach| {
                        r.services.iter().map(|s| (s.id, s.depth, s.severity)).collect::<Vec<_>>()
                    };
                    prop_assert_eq!(ids(&a), ids(&b));
                }
            }
        }
        // Before the index holds, the walks read the hops of every position.
        if valid_from > 1 {
            for set in &sets {
                prop_assert_eq!(walked(&kept, set, valid_from - 1), walked(&plain, set, valid_from - 1));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The law of the epochs of past hops: at every position, a walk reading them equals the
    /// walk over the hops of every position (same CIs, same order, depths and severities, the
    /// same services), for every CI as the failed one and for a set of them.
    #[test]
    fn walks_at_past_positions_read_the_epochs_and_answer_as_the_hops_of_every_position(
        steps in proptest::collection::vec(step(), 1..90),
        length in 1u64..6,
        roots in proptest::collection::btree_set(0u8..12, 1..4),
    ) {
        let log = played(&steps);
        let plain = replay(&log, u64::MAX);
        let mut epochs = replay(&log, u64::MAX);
        epochs.build_past_hops(length);
        let head = plain.applied();
        let (count, end) = epochs.past_hops_epochs().expect("built");
        // Epochs of `length` positions, longer when more would pass the bound on their count.
        let epoch = length.max(head.div_ceil(PAST_HOPS_MAX_EPOCHS as u64));
        prop_assert_eq!(count as u64, head / epoch, "every final stretch of {} positions", epoch);
        prop_assert!(count <= PAST_HOPS_MAX_EPOCHS);
        prop_assert!(end <= head + 1);
        let sets = failure_sets(&roots);
        let services = |r: &cmdb_projections::graph::Reach| {
            (r.cis, r.services.iter().map(|s| (s.id, s.tier, s.depth, s.severity)).collect::<Vec<_>>())
        };
        for position in 1..=head {
            for set in &sets {
                prop_assert_eq!(walked(&epochs, set, position), walked(&plain, set, position), "{:?} at {}", set, position);
                let (a, b) = (epochs.reach(set, position).expect("reach"), plain.reach(set, position).expect("reach"));
                prop_assert_eq!(services(&a), services(&b));
            }
        }
    }
}

/// Past the bound of rewritten lists the arrays are built again, and the answers stay.
#[tokio::test]
async fn more_changes_than_the_bound_rebuild_the_index_and_answers_stay() {
    let world = World::new();
    let chain = HEAD_HOPS_MAX_REWRITTEN_LISTS as u128 + 100;
    for n in 0..chain {
        world.ok(register(n, CiClass::Application, None)).await;
    }
    let mut graph = world.graph().await;
    graph.build_head_hops();
    graph.build_past_hops(64);
    let built = graph.head_hops_valid_from().expect("built");
    let (_, epochs_end) = graph.past_hops_epochs().expect("built");
    // Each CI depends on the one before: every list is rewritten, past the bound.
    for n in 1..chain {
        world.ok(relate(n, RelType::DependsOn, n, n - 1)).await;
    }
    let log = world.log().await;
    let applied = graph.applied();
    for record in log.iter().filter(|r| r.position > applied) {
        graph.apply(record).expect("apply");
    }
    let plain = world.graph().await;
    let head = plain.applied();
    assert!(graph.head_hops_valid_from().expect("kept") > built, "the changes moved it");
    for n in (0..chain).step_by(97) {
        assert_eq!(walked(&graph, &[ci(n)], head), walked(&plain, &[ci(n)], head), "from {n}");
    }
    // The rebuild also grew the epochs of past hops over the positions made final since, and
    // walks in them (through the chain, made one relationship at a time) answer the same.
    let (_, grown_end) = graph.past_hops_epochs().expect("kept");
    assert!(grown_end > epochs_end + 64, "grown from {epochs_end} to {grown_end}");
    for position in (epochs_end..grown_end).step_by(331) {
        for n in [0, 1, chain / 2] {
            assert_eq!(walked(&graph, &[ci(n)], position), walked(&plain, &[ci(n)], position), "{n} at {position}");
        }
    }
    assert_eq!(walked(&graph, &[ci(0)], head).len() as u128, chain - 1, "the whole chain depends on the first");
}

/// The world's log with its relationship removals made into notes on the history of CI
/// `noted` about relationship `rel` (the positions stay in order, as the graph requires): a
/// withdrawal whose relationships still stand, as an older or imported log may hold.
async fn with_removals_as_notes(world: &World, noted: u128, rel: u128) -> Vec<cmdb_core::EventRecord> {
    let note = serde_json::to_vec(&serde_json::json!({"ci_id": ci(noted), "rel_id": common::rel(rel)})).expect("json");
    world
        .log()
        .await
        .into_iter()
        .map(|mut record| {
            if record.event_type == "relationship.removed" {
                record.event_type = "ci.relationship_removed".into();
                record.data = note.clone();
            }
            record
        })
        .collect()
}

/// A log in which a CI is withdrawn while relationships still lead to it (the engine removes
/// them in the same append; an older or imported log need not have): the lists that lead to it
/// drop it at the withdrawal, so a walk does not cross it.
#[tokio::test]
async fn a_ci_withdrawn_with_relationships_leading_to_it_leaves_the_head_lists() {
    let world = World::new();
    for n in 1..=3 {
        world.ok(register(n, CiClass::Application, None)).await;
    }
    world.ok(relate(1, RelType::DependsOn, 2, 1)).await; // 1's failure reaches 2
    world.ok(relate(2, RelType::DependsOn, 3, 2)).await; // 2's reaches 3
    let before = world.log().await.len();
    let withdraw = cmdb_core::ci::CiCommand::Withdraw { ci_id: ci(2), reason: None, authorized_by: None };
    world.ok(withdraw).await;
    let log = with_removals_as_notes(&world, 3, 2).await;
    assert!(log[before..].iter().any(|r| r.event_type == "ci.withdrawn"));
    let plain = replay(&log, u64::MAX);
    let kept = indexed_at(&log, before);
    let head = plain.applied();
    assert!(plain.relationships_at(head, None, None).len() == 2, "both relationships still stand");
    assert_eq!(walked(&plain, &[ci(1)], head), vec![], "a withdrawn CI is not crossed");
    assert_eq!(walked(&kept, &[ci(1)], head), vec![]);
    assert_eq!(walked(&kept, &[ci(1)], log[before - 1].position), walked(&plain, &[ci(1)], log[before - 1].position));
    assert_eq!(walked(&plain, &[ci(1)], log[before - 1].position).len(), 2, "before it, the chain is whole");
}

/// The head index keeps each redundant group's threshold (issue 15, part 3): after every kind
/// of change that moves one (the group's `members_to_fail`, a member related or withdrawn, a
/// redundancy rule), a walk reading the index finds what a walk over every position finds,
/// and the group's severity flips as the rules say.
#[tokio::test]
async fn group_thresholds_follow_attributes_members_and_rules() {
    use cmdb_core::ci::schema::{MEMBERS_TO_FAIL, RedundancyDeclared, SchemaCommand, SchemaDecider};
    use cmdb_core::ci::{CiCommand, Update};
    use cmdb_core::decider::{CommandContext, execute};
    use cmdb_core::{Actor, Clock, Metadata, Source};
    use cmdb_projections::graph::Severity;

    let world = World::new();
    for n in 1..=4 {
        world.ok(register(n, CiClass::Host, None)).await;
    }
    world.ok(register(10, CiClass::KubernetesCluster, None)).await;
    world.ok(register(20, CiClass::Application, None)).await;
    for n in 1..=3 {
        world.ok(relate(n, RelType::PartOf, n, 10)).await;
    }
    world.ok(relate(5, RelType::RunsOn, 20, 10)).await;
    let mut kept = world.graph().await;
    kept.build_head_hops();
    // Hosts 1 and 2 fail; what becomes of the cluster, checked against a plain replay.
    let roots = [ci(1), ci(2)];
    let check = async |kept: &mut TemporalGraph, want: Severity, step: &str| {
        let log = world.log().await;
        let applied = kept.applied();
        log.iter().filter(|r| r.position > applied).for_each(|r| kept.apply(r).expect("apply"));
        let plain = replay(&log, u64::MAX);
        let head = plain.applied();
        assert!(kept.head_hops_valid_from().is_some_and(|from| from <= head), "{step}: the walk reads the index");
        assert_eq!(walked(kept, &roots, head), walked(&plain, &roots, head), "{step}");
        let cluster = walked(kept, &roots, head).into_iter().find(|(id, _, _)| *id == ci(10)).and_then(|r| r.2);
        assert_eq!(cluster, Some(want), "{step}");
    };
    check(&mut kept, Severity::Degraded, "all three members must fail").await;
    let set = |n: u64| {
        let mut update = Update::default();
        update.set_attributes.insert(MEMBERS_TO_FAIL.into(), serde_json::json!(n));
        CiCommand::Update(ci(10), update)
    };
    world.ok(set(2)).await;
    check(&mut kept, Severity::Down, "two of three").await;
    world.ok(relate(6, RelType::PartOf, 4, 10)).await;
    world.ok(set(9)).await;
    check(&mut kept, Severity::Degraded, "more than the members: all four").await;
    world.ok(CiCommand::Unrelate { rel_id: common::rel(3), reason: None, authorized_by: None }).await;
    world.ok(CiCommand::Withdraw { ci_id: ci(4), reason: None, authorized_by: None }).await;
    check(&mut kept, Severity::Down, "hosts 3 and 4 gone: the two left").await;
    world.ok(relate(7, RelType::PartOf, 3, 10)).await;
    check(&mut kept, Severity::Degraded, "host 3 back: three of three").await;
    let context = CommandContext::new(Metadata::new(Actor::principal("tester"), Source::Api), world.clock.now());
    let rule = RedundancyDeclared { class: CiClass::KubernetesCluster, redundant: false, reason: "tests".into() };
    execute(&world.store, &SchemaDecider, &SchemaCommand::DeclareRedundancy(rule), &context, None).await.expect("rule");
    check(&mut kept, Severity::Down, "not a group: any member down takes it down").await;
    let rule = RedundancyDeclared { class: CiClass::KubernetesCluster, redundant: true, reason: "tests".into() };
    execute(&world.store, &SchemaDecider, &SchemaCommand::DeclareRedundancy(rule), &context, None).await.expect("rule");
    check(&mut kept, Severity::Degraded, "a group again, three of three").await;
}

/// A member withdrawn while its `part_of` still stands (a log the engine no longer writes, as
/// above) stops counting towards its group's threshold at the head index too.
#[tokio::test]
async fn a_member_withdrawn_with_its_relationship_standing_leaves_the_count() {
    let world = World::new();
    for n in 1..=3 {
        world.ok(register(n, CiClass::Host, None)).await;
    }
    world.ok(register(10, CiClass::KubernetesCluster, None)).await;
    for n in 1..=3 {
        world.ok(relate(n, RelType::PartOf, n, 10)).await;
    }
    let before = world.log().await.len();
    world.ok(cmdb_core::ci::CiCommand::Withdraw { ci_id: ci(3), reason: None, authorized_by: None }).await;
    let log = with_removals_as_notes(&world, 10, 3).await;
    let plain = replay(&log, u64::MAX);
    let kept = indexed_at(&log, before);
    let head = plain.applied();
    let roots = [ci(1), ci(2)];
    assert_eq!(walked(&kept, &roots, head), walked(&plain, &roots, head));
    let down = cmdb_projections::graph::Severity::Down;
    assert_eq!(walked(&plain, &roots, head), vec![(ci(10), 1, Some(down))], "two of the two members left");
}
