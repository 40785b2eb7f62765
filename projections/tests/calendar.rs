//! Conflicts through the graph (CH-5): two overlapping changes conflict when their scopes share
//! a CI or one reaches the other within conflict_max_depth impact-propagating hops; at depths
//! 1 to 3 they do, at 4 they do not; either direction counts, and the path is given.

mod common;

use cmdb_core::ci::{CiClass, CiId, RelType};
use cmdb_core::time::Timestamp;
use cmdb_projections::calendar::{Candidate, DEFAULT_CONFLICT_MAX_DEPTH, conflicts_with};
use common::{World, ci, register, relate};

fn change(n: u128) -> cmdb_core::ci::ChangeId {
    cmdb_core::ci::ChangeId(uuid::Uuid::from_u128(0xC0_0000 + n))
}

/// One overlapping scheduled change with this scope.
fn other_change(cis: &[CiId]) -> Vec<Candidate<'_>> {
    let (start, end) = (Timestamp::from_micros(0), Timestamp::from_micros(1));
    vec![Candidate { id: change(2), label: "CHG-000002", start, end, cis, acknowledged_by_other: false }]
}

#[tokio::test]
async fn conflicts_reach_three_hops_and_not_four_in_either_direction() {
    let world = World::new();
    // A chain: app 2 depends on app 1, app 3 on app 2, ... so app 1's failure reaches app 5
    // in four hops; plus an unrelated app 9.
    for n in [1, 2, 3, 4, 5, 9] {
        world.ok(register(n, CiClass::Application, None)).await;
    }
    for n in 1..=4u128 {
        world.ok(relate(100 + n, RelType::DependsOn, n + 1, n)).await;
    }
    let graph = world.graph().await;
    let position = graph.applied();
    let scope = [ci(1)];
    for (depth, other) in [(1u32, 2u128), (2, 3), (3, 4)] {
        let cis = [ci(other)];
        let found = conflicts_with(&graph, position, &scope, other_change(&cis), DEFAULT_CONFLICT_MAX_DEPTH);
        assert_eq!(found.len(), 1, "depth {depth}");
        assert!(found[0].reason.contains(&format!("in {depth} hop")), "{}", found[0].reason);
        assert_eq!(found[0].path.first(), Some(&ci(1)));
        assert_eq!(found[0].path.last(), Some(&ci(other)));
        assert_eq!(found[0].path.len(), depth as usize + 1, "the path crosses every hop");
        // The other direction: the candidate's scope affects this one.
        let reverse = conflicts_with(&graph, position, &cis, other_change(&scope), DEFAULT_CONFLICT_MAX_DEPTH);
        assert_eq!(reverse.len(), 1, "reverse at depth {depth}");
        assert!(reverse[0].reason.contains("the other scope affects this one"), "{}", reverse[0].reason);
    }
    let four = [ci(5)];
    assert!(conflicts_with(&graph, position, &scope, other_change(&four), DEFAULT_CONFLICT_MAX_DEPTH).is_empty());
    assert_eq!(conflicts_with(&graph, position, &scope, other_change(&four), 4).len(), 1, "a deeper setting finds it");
    let unrelated = [ci(9)];
    assert!(conflicts_with(&graph, position, &scope, other_change(&unrelated), DEFAULT_CONFLICT_MAX_DEPTH).is_empty());
    // A shared CI is a conflict at once.
    let shared = [ci(9), ci(1)];
    let found = conflicts_with(&graph, position, &scope, other_change(&shared), DEFAULT_CONFLICT_MAX_DEPTH);
    assert!(found[0].reason.starts_with("both change"), "{}", found[0].reason);
    assert_eq!(found[0].path, vec![ci(1)]);
}
