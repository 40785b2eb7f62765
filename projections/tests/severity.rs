//! Redundancy-aware impact (issue 15; CM-2, CH-2): `DOWN` against `DEGRADED`, checked on a
//! hand-built cluster and against an independent fixpoint computation on random graphs.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cmdb_core::ci::schema::{MEMBERS_TO_FAIL, REDUNDANCY_DECLARED, RedundancyDeclared, SchemaCommand, SchemaDecider};
use cmdb_core::ci::{CiClass, CiCommand, CiId, Propagation, RelType, propagation};
use cmdb_core::decider::{CommandContext, execute};
use cmdb_core::{Actor, Clock, EventRecord, Metadata, Source};
use cmdb_projections::graph::{ImpactDirection, Severity, TemporalGraph, Traversal, criticality_tier};
use common::{World, ci, register, relate, replay};
use proptest::prelude::*;
use serde_json::json;

fn downstream() -> Traversal {
    Traversal { direction: ImpactDirection::Downstream, max_depth: 32, max_results: 10_000, types: None }
}

fn with_attribute(command: CiCommand, name: &str, value: serde_json::Value) -> CiCommand {
    match command {
        CiCommand::Register(mut r) => {
            r.attributes.insert(name.to_owned(), value);
            CiCommand::Register(r)
        }
        other => other,
    }
}

async fn declare_redundancy(world: &World, class: CiClass, redundant: bool) -> Result<(), cmdb_core::Error> {
    world.clock.advance_micros(1_000_000);
    let context = CommandContext::new(Metadata::new(Actor::principal("tester"), Source::Api), world.clock.now());
    let command = SchemaCommand::DeclareRedundancy(RedundancyDeclared { class, redundant, reason: "tests".into() });
    execute(&world.store, &SchemaDecider, &command, &context, None).await.map(|_| ())
}

fn severity_of(graph: &TemporalGraph, root: CiId, target: CiId) -> Option<Severity> {
    let impact = graph.impact(root, graph.applied(), &downstream()).expect("impact");
    impact.reached.iter().find(|r| r.ci.id == target).and_then(|r| r.severity)
}

/// Hosts 1, 2, 3 are part_of cluster 10 (two must fail); app 20 runs_on the cluster and
/// provides service 30; host 4 is part_of cluster 11 (no threshold: all, i.e. its only member).
async fn cluster_estate(world: &World) {
    world.ok(register(99, CiClass::Team, None)).await;
    for n in 1..=4 {
        world.ok(register(n, CiClass::Host, None)).await;
    }
    world.ok(with_attribute(register(10, CiClass::KubernetesCluster, None), MEMBERS_TO_FAIL, json!(2))).await;
    world.ok(register(11, CiClass::KubernetesCluster, None)).await;
    world.ok(register(20, CiClass::Application, None)).await;
    world.ok(register(30, CiClass::BusinessService, Some(99))).await;
    for n in 1..=3 {
        world.ok(relate(n, RelType::PartOf, n, 10)).await;
    }
    world.ok(relate(4, RelType::PartOf, 4, 11)).await;
    world.ok(relate(5, RelType::RunsOn, 20, 10)).await;
    world.ok(relate(6, RelType::Provides, 20, 30)).await;
}

#[tokio::test]
async fn given_a_cluster_of_three_when_one_member_fails_then_the_cluster_and_what_it_carries_are_degraded() {
    let world = World::new();
    cluster_estate(&world).await;
    let graph = world.graph().await;
    let impact = graph.impact(ci(1), graph.applied(), &downstream()).expect("impact");
    let severity: BTreeMap<CiId, Option<Severity>> = impact.reached.iter().map(|r| (r.ci.id, r.severity)).collect();
    assert_eq!(severity[&ci(10)], Some(Severity::Degraded), "one of three down, two must fail");
    assert_eq!(severity[&ci(20)], Some(Severity::Degraded), "degraded travels on as degraded");
    assert_eq!(severity[&ci(30)], Some(Severity::Degraded));
    assert_eq!(impact.services.len(), 1);
    assert_eq!(impact.services[0].severity, Some(Severity::Degraded));
    let path: Vec<CiId> = impact.path_to(ci(30)).iter().map(|s| s.ci).collect();
    assert_eq!(path, vec![ci(10), ci(20), ci(30)]);
    assert_eq!(impact.severity_chain(ci(30)).expect("short chain"), impact.path_to(ci(30)));
    assert_eq!(impact.cause_of(ci(10)).map(|c| c.from), Some(ci(1)));
    // A cluster with one member is down when it is.
    assert_eq!(severity_of(&graph, ci(4), ci(11)), Some(Severity::Down));
    // Upstream walks carry no severity.
    let up = graph
        .impact(ci(20), graph.applied(), &Traversal { direction: ImpactDirection::Upstream, ..downstream() })
        .expect("upstream");
    assert!(up.reached.iter().all(|r| r.severity.is_none()));
}

#[tokio::test]
async fn given_a_cluster_when_its_threshold_of_members_fails_together_then_it_is_down() {
    let world = World::new();
    cluster_estate(&world).await;
    let graph = world.graph().await;
    let head = graph.applied();
    let reached = graph.reach_all(&[ci(1), ci(2)], head).expect("walk");
    assert!(reached.iter().all(|r| r.severity.is_some()), "everything reached has a severity");
    let severity: BTreeMap<CiId, Option<Severity>> = reached.iter().map(|r| (r.ci.id, r.severity)).collect();
    assert_eq!(severity[&ci(10)], Some(Severity::Down), "two of three down, two must fail");
    assert_eq!(severity[&ci(20)], Some(Severity::Down));
    assert_eq!(severity[&ci(30)], Some(Severity::Down));
}

#[tokio::test]
async fn declaring_a_class_not_redundant_changes_impact_from_then_on_only() {
    let world = World::new();
    cluster_estate(&world).await;
    let before = world.graph().await.applied();
    declare_redundancy(&world, CiClass::KubernetesCluster, false).await.expect("declared");
    let graph = world.graph().await;
    let at = |position| {
        let impact = graph.impact(ci(1), position, &downstream()).expect("impact");
        impact.reached.iter().find(|r| r.ci.id == ci(30)).and_then(|r| r.severity)
    };
    assert_eq!(at(before), Some(Severity::Degraded), "the past keeps the rule in force then");
    assert_eq!(at(graph.applied()), Some(Severity::Down), "a plain whole loses function with a part");
    // Bad input: declaring what already holds is refused and leaves the log as it was.
    let log = world.log().await.len();
    let refused = declare_redundancy(&world, CiClass::KubernetesCluster, false).await;
    assert!(refused.is_err(), "already not redundant");
    assert_eq!(world.log().await.len(), log);
}

// The independent model.

/// What the oracle knows of the graph at one position: CIs, their classes and thresholds,
/// and the relationships.
struct Model {
    classes: BTreeMap<CiId, CiClass>,
    asked: BTreeMap<CiId, u64>,
    edges: Vec<(RelType, CiId, CiId)>,
    redundant: BTreeSet<CiClass>,
}

impl Model {
    fn of(graph: &TemporalGraph, log: &[EventRecord], position: u64, ids: &[CiId]) -> Model {
        let mut classes = BTreeMap::new();
        let mut asked = BTreeMap::new();
        for id in ids {
            if let Some(ci) = graph.ci_at(*id, position)
                && ci.status != cmdb_core::ci::Status::Withdrawn
            {
                classes.insert(*id, ci.class);
                if let Some(n) = ci.attributes.get(MEMBERS_TO_FAIL).and_then(|v| v.as_u64()) {
                    asked.insert(*id, n);
                }
            }
        }
        let edges = graph
            .relationships_at(position, None, None)
            .into_iter()
            .filter(|r| classes.contains_key(&r.source) && classes.contains_key(&r.target))
            .map(|r| (r.rel_type, r.source, r.target))
            .collect();
        // Redundancy as declared in the log up to the position, over the built-in default.
        let mut redundant: BTreeSet<CiClass> = [CiClass::KubernetesCluster].into();
        for record in log.iter().take_while(|r| r.position <= position) {
            if record.event_type == REDUNDANCY_DECLARED {
                let declared: RedundancyDeclared = record.data_as().expect("declaration");
                if declared.redundant {
                    redundant.insert(declared.class);
                } else {
                    redundant.remove(&declared.class);
                }
            }
        }
        Model { classes, asked, edges, redundant }
    }

    /// Each CI's least number of hops from one of `failed`, following dependencies breadth
    /// first (the failed CIs at 0).
    fn depths(&self, failed: &[CiId]) -> BTreeMap<CiId, u32> {
        let mut depth: BTreeMap<CiId, u32> = failed.iter().map(|id| (*id, 0)).collect();
        let mut frontier: Vec<CiId> = failed.to_vec();
        let mut hops = 0;
        while !frontier.is_empty() {
            hops += 1;
            let mut next = Vec::new();
            for (rel_type, source, target) in &self.edges {
                let (dependent, dependency) = match propagation(*rel_type) {
                    Propagation::SourceDependsOnTarget => (source, target),
                    Propagation::TargetDependsOnSource => (target, source),
                    _ => continue,
                };
                if frontier.contains(dependency)
                    && self.classes.contains_key(dependent)
                    && !depth.contains_key(dependent)
                {
                    depth.insert(*dependent, hops);
                    next.push(*dependent);
                }
            }
            frontier = next;
        }
        depth
    }

    /// The least fixpoint, by plain repetition from "nothing failed but `failed`" until no
    /// severity changes.
    fn severities(&self, failed: &[CiId]) -> BTreeMap<CiId, Severity> {
        let mut severity: BTreeMap<CiId, Severity> = failed.iter().map(|id| (*id, Severity::Down)).collect();
        loop {
            let mut next = severity.clone();
            for (id, class) in &self.classes {
                if failed.contains(id) {
                    continue;
                }
                let group = self.redundant.contains(class);
                let mut best: Option<Severity> = None;
                let mut members = 0u64;
                let (mut down, mut hit) = (0u64, false);
                for (rel_type, source, target) in &self.edges {
                    // Which end depends on which.
                    let (dependent, dependency) = match propagation(*rel_type) {
                        Propagation::SourceDependsOnTarget => (source, target),
                        Propagation::TargetDependsOnSource => (target, source),
                        _ => continue,
                    };
                    if dependent != id {
                        continue;
                    }
                    let arriving = severity.get(dependency).copied();
                    if group && *rel_type == RelType::PartOf && target == id {
                        members += 1;
                        down += u64::from(arriving == Some(Severity::Down));
                        hit |= arriving.is_some();
                    } else {
                        best = best.max(arriving);
                    }
                }
                if group && hit {
                    let needed = self.asked.get(id).copied().unwrap_or(members).clamp(1, members.max(1));
                    best = best.max(Some(if down >= needed { Severity::Down } else { Severity::Degraded }));
                }
                if let Some(s) = best {
                    next.insert(*id, s);
                }
            }
            if next == severity {
                return severity;
            }
            severity = next;
        }
    }
}

#[derive(Clone, Debug)]
enum Build {
    Relate(u8, u8, u8),
    Redundant(bool),
    /// Removes the n-th relationship made (modulo how many).
    Unrelate(u8),
    /// Withdraws a CI: by the command that removes its relationships too, or by a transition.
    Withdraw(u8, bool),
    /// Sets a CI's `members_to_fail` (0 removes it).
    Threshold(u8, u8),
}

const CLASSES: [CiClass; 5] =
    [CiClass::Host, CiClass::KubernetesCluster, CiClass::Application, CiClass::Application, CiClass::BusinessService];
const TYPES: [RelType; 6] =
    [RelType::PartOf, RelType::PartOf, RelType::RunsOn, RelType::DependsOn, RelType::Provides, RelType::Consumes];
const CIS: u8 = 14;

fn build() -> impl Strategy<Value = Build> {
    prop_oneof![
        12 => (0..CIS, 0..CIS, 0u8..6).prop_map(|(a, b, t)| Build::Relate(a, b, t)),
        1 => any::<bool>().prop_map(Build::Redundant),
        2 => any::<u8>().prop_map(Build::Unrelate),
        1 => (0..CIS, any::<bool>()).prop_map(|(n, command)| Build::Withdraw(n, command)),
        2 => (0..CIS, 0u8..4).prop_map(|(n, t)| Build::Threshold(n, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The law: every severity an impact (one failed CI) or a risk walk (several) reports is
    /// the independent model's least fixpoint of the same rules, at the head and at an
    /// earlier position; nothing the model reaches is missing and nothing else is reached.
    #[test]
    fn severities_equal_an_independent_fixpoint(
        thresholds in proptest::collection::vec(0u64..4, CIS as usize),
        steps in proptest::collection::vec(build(), 1..45),
        probe in 0.0f64..1.0,
        failed in proptest::collection::btree_set(0..CIS, 1..4),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let world = World::new();
            world.ok(register(99, CiClass::Team, None)).await;
            for n in 0..CIS {
                let class = CLASSES[n as usize % CLASSES.len()];
                let owner = (class == CiClass::BusinessService).then_some(99);
                let mut command = register(u128::from(n), class, owner);
                if thresholds[n as usize] > 0 {
                    command = with_attribute(command, MEMBERS_TO_FAIL, json!(thresholds[n as usize]));
                }
                world.ok(command).await;
            }
            let mut counter = 0u128;
            for step in &steps {
                let _ = match step {
                    Build::Relate(a, b, t) => {
                        counter += 1;
                        world.run(relate(counter, TYPES[*t as usize], u128::from(*a), u128::from(*b))).await
                    }
                    Build::Redundant(on) => declare_redundancy(&world, CiClass::Application, *on).await,
                    Build::Unrelate(k) if counter > 0 => {
                        let rel_id = common::rel(u128::from(*k) % counter + 1);
                        world.run(CiCommand::Unrelate { rel_id, reason: None, authorized_by: None }).await
                    }
                    Build::Unrelate(_) => Ok(()),
                    Build::Withdraw(n, true) => {
                        world.run(CiCommand::Withdraw { ci_id: ci(u128::from(*n)), reason: None, authorized_by: None }).await
                    }
                    Build::Withdraw(n, false) => {
                        let to = cmdb_core::ci::Status::Withdrawn;
                        world.run(CiCommand::Transition { ci_id: ci(u128::from(*n)), to, reason: None, authorized_by: None }).await
                    }
                    Build::Threshold(n, t) => {
                        let mut update = cmdb_core::ci::Update::default();
                        match t {
                            0 => update.remove_attributes.push(MEMBERS_TO_FAIL.to_owned()),
                            t => {
                                update.set_attributes.insert(MEMBERS_TO_FAIL.to_owned(), json!(t));
                            }
                        }
                        world.run(CiCommand::Update(ci(u128::from(*n)), update)).await
                    }
                };
            }
            let log = world.log().await;
            let graph = replay(&log, u64::MAX);
            let head = graph.applied();
            // The same graph with the head index built part way (issue 15, part 3).
            let split = ((log.len() as f64) * probe) as usize;
            let mut indexed = replay(&log[..split], u64::MAX);
            indexed.build_head_hops();
            log[split..].iter().for_each(|record| indexed.apply(record).expect("apply"));
            let ids: Vec<CiId> = (0..CIS).map(|n| ci(u128::from(n))).collect();
            let earlier = ((head as f64) * probe) as u64;
            for position in [head, earlier.max(1)] {
                let model = Model::of(&graph, &log, position, &ids);
                let roots: Vec<CiId> = failed.iter().map(|n| ci(u128::from(*n))).filter(|id| model.classes.contains_key(id)).collect();
                if let Some(root) = roots.first() {
                    let expected = model.severities(&[*root]);
                    let impact = graph.impact(*root, position, &downstream()).expect("impact");
                    let got: BTreeMap<CiId, Severity> =
                        impact.reached.iter().map(|r| (r.ci.id, r.severity.expect("downstream severity"))).collect();
                    let mut want = expected.clone();
                    want.remove(root);
                    prop_assert_eq!(&got, &want, "one failed CI {} at {}", root, position);
                    // Each chain of causes ends at its CI, crosses only reached CIs, and every CI
                    // on it is at least as badly hit as the CI.
                    for reached in &impact.reached {
                        let chain = impact.severity_chain(reached.ci.id).expect("chains within the bound");
                        prop_assert_eq!(chain.last().map(|s| s.ci), Some(reached.ci.id));
                        prop_assert!(chain.iter().all(|s| want.contains_key(&s.ci)));
                        prop_assert!(chain.iter().all(|s| want[&s.ci] >= reached.severity.expect("severity")));
                        prop_assert!(impact.path_to(reached.ci.id).len() as u32 == reached.depth);
                    }
                }
                let expected = model.severities(&roots);
                // An impact analysis of the roots failing together finds the same severities,
                // each CI at its least depth from the nearest root, with a shortest path.
                if !roots.is_empty() {
                    let together = graph.impact_of(&roots, position, &downstream()).expect("impact of several");
                    let got: BTreeMap<CiId, Severity> =
                        together.reached.iter().map(|r| (r.ci.id, r.severity.expect("downstream severity"))).collect();
                    let want: BTreeMap<CiId, Severity> =
                        expected.iter().filter(|(id, _)| !roots.contains(id)).map(|(id, s)| (*id, *s)).collect();
                    prop_assert_eq!(&got, &want, "impact of {:?} at {}", roots, position);
                    let mut want_depths = model.depths(&roots);
                    want_depths.retain(|id, _| !roots.contains(id));
                    let depths: BTreeMap<CiId, u32> = together.reached.iter().map(|r| (r.ci.id, r.depth)).collect();
                    prop_assert_eq!(depths, want_depths, "impact depths from {:?} at {}", roots, position);
                    for reached in &together.reached {
                        prop_assert_eq!(together.path_to(reached.ci.id).len() as u32, reached.depth);
                        let chain = together.severity_chain(reached.ci.id).expect("within the bound");
                        prop_assert_eq!(chain.last().map(|s| s.ci), Some(reached.ci.id));
                    }
                    let distinct: std::collections::BTreeSet<CiId> = roots.iter().copied().collect();
                    prop_assert_eq!(together.roots.len(), distinct.len(), "each root once");
                }
                let reached = graph.reach_all(&roots, position).expect("walk");
                prop_assert!(reached.iter().all(|r| r.severity.is_some()), "everything reached has a severity");
                let got: BTreeMap<CiId, Severity> =
                    reached.iter().map(|r| (r.ci.id, r.severity.expect("downstream severity"))).collect();
                let want: BTreeMap<CiId, Severity> =
                    expected.into_iter().filter(|(id, _)| !roots.contains(id)).collect();
                prop_assert_eq!(&got, &want, "failed {:?} at {}", roots, position);
                // Depths are the least, as an independent breadth-first walk finds them.
                let depths: BTreeMap<CiId, u32> = reached.iter().map(|r| (r.ci.id, r.depth)).collect();
                let mut want_depths = model.depths(&roots);
                want_depths.retain(|id, _| !roots.contains(id));
                prop_assert_eq!(depths, want_depths, "depths from {:?} at {}", roots, position);
                // The count-and-services form of an assessment finds the same count, and the
                // same services at the same depth with the same severity.
                let reach = graph.reach(&roots, position).expect("reach");
                prop_assert_eq!(reach.cis, reached.len());
                let mut walked: Vec<(CiId, u32, Severity)> = reached
                    .iter()
                    .filter(|r| r.ci.class == CiClass::BusinessService)
                    .map(|r| (r.ci.id, r.depth, r.severity.expect("severity")))
                    .collect();
                let mut one_pass: Vec<(CiId, u32, Severity)> =
                    reach.services.iter().map(|s| (s.id, s.depth, s.severity)).collect();
                walked.sort();
                one_pass.sort();
                prop_assert_eq!(one_pass, walked, "services of {:?} at {}", roots, position);
                for service in &reach.services {
                    let version = graph.ci_at(service.id, position);
                    prop_assert_eq!(service.tier, version.as_deref().and_then(criticality_tier), "tier of {}", service.id);
                }
                let with_index: Vec<(CiId, u32, Option<Severity>)> =
                    indexed.reach_all(&roots, position).expect("walk").iter().map(|r| (r.ci.id, r.depth, r.severity)).collect();
                let without: Vec<(CiId, u32, Option<Severity>)> = reached.iter().map(|r| (r.ci.id, r.depth, r.severity)).collect();
                prop_assert_eq!(with_index, without, "with the head index, {:?} at {}", roots, position);
                // The chain of causes to each CI (what explains an assessment's services): none
                // for a CI the failure does not reach, empty for a failed one, else a chain of
                // relationships from a failed CI to it through CIs hit at least as badly.
                let chains = graph.severity_chains(&roots, &ids, position).expect("chains");
                for (id, chain) in ids.iter().zip(chains) {
                    let chain = chain.expect("random graphs stay within the bound");
                    if roots.contains(id) {
                        prop_assert_eq!(chain, Some(Vec::new()));
                        continue;
                    }
                    let Some(severity) = want.get(id) else {
                        prop_assert_eq!(chain, None, "{} is not reached", id);
                        continue;
                    };
                    let chain = chain.expect("a reached CI has a chain");
                    prop_assert_eq!(chain.last().map(|s| s.ci), Some(*id));
                    let mut from: Option<CiId> = None;
                    for step in &chain {
                        prop_assert!(want.get(&step.ci).is_some_and(|s| s >= severity), "{} on the chain to {}", step.ci, id);
                        let rel = graph.relationship(step.relationship).expect("the step's relationship");
                        let ends = [rel.source, rel.target];
                        prop_assert!(ends.contains(&step.ci), "the step arrives by its relationship");
                        let other = if rel.source == step.ci { rel.target } else { rel.source };
                        match from {
                            None => prop_assert!(roots.contains(&other), "the chain starts at a failed CI"),
                            Some(before) => prop_assert_eq!(other, before, "each step follows the one before"),
                        }
                        from = Some(step.ci);
                    }
                }
            }
            Ok(())
        })?;
    }
}
