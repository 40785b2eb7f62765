//! The head index of hops (issue 15, part 3; CH-2): a walk that reads it gives what the walk
//! over the hops of every position gives, whether the index was built before the last changes
//! (rewritten lists) or after them, across relationships made and removed and CIs withdrawn.

mod common;

use cmdb_core::ci::{CiClass, CiId, RelType};
use cmdb_projections::graph::{HEAD_HOPS_MAX_REWRITTEN_LISTS, TemporalGraph};
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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let world = World::new();
            play(&world, &steps).await;
            let log = world.log().await;
            let plain = replay(&log, u64::MAX);
            let split = ((log.len() as f64) * split) as usize;
            let kept = indexed_at(&log, split);
            let fresh = indexed_at(&log, log.len());
            let head = plain.applied();
            prop_assert_eq!(fresh.head_hops_valid_from(), Some(head));
            let valid_from = kept.head_hops_valid_from().expect("built");
            prop_assert!(valid_from <= head);
            let mut all: Vec<CiId> = (0..12).map(ci).collect();
            all.push(ci(99)); // never registered: skipped
            let sets: Vec<Vec<CiId>> = all
                .iter()
                .map(|id| vec![*id])
                .chain(std::iter::once(roots.iter().map(|n| ci(u128::from(*n))).collect()))
                .collect();
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
            Ok(())
        })?;
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
    let built = graph.head_hops_valid_from().expect("built");
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
    assert_eq!(walked(&graph, &[ci(0)], head).len() as u128, chain - 1, "the whole chain depends on the first");
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
    // The withdrawal's append with its relationship removals made into notes on CI 3's history
    // (the positions stay in order, as the graph requires).
    let note = serde_json::to_vec(&serde_json::json!({"ci_id": ci(3), "rel_id": common::rel(2)})).expect("json");
    let log: Vec<cmdb_core::EventRecord> = world
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
        .collect();
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
