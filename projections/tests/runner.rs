//! The projection runner: follows the log, checkpoints, restarts from a checkpoint, and
//! rebuilds when the checkpoint does not match the log.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cmdb_core::ci::{CiClass, CiDecider, RelType};
use cmdb_core::decider::{CommandContext, execute};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{Actor, EventStore, Metadata, Source};
use cmdb_projections::evidence::EvidenceLog;
use cmdb_projections::graph::{ImpactDirection, TemporalGraph, Traversal};
use cmdb_projections::runner::{Projection, RunnerOptions, save_checkpoint, start};
use common::{ci, register, relate};

async fn populate(store: &dyn EventStore, base: u128, count: u128) {
    let metadata = Metadata::new(Actor::principal("tester"), Source::Api);
    // About the runner, not change control: applications are uncontrolled here.
    cmdb_core::ci::schema::declare_uncontrolled(store, &[CiClass::Application], "runner tests", metadata.clone())
        .await
        .expect("declare");
    let context = CommandContext::new(metadata, cmdb_core::Timestamp::from_micros(0));
    for n in 0..count {
        execute(store, &CiDecider, &register(base + n, CiClass::Application, None), &context, None)
            .await
            .expect("register");
        if n > 0 {
            execute(store, &CiDecider, &relate(base + n, RelType::DependsOn, base + n, base + n - 1), &context, None)
                .await
                .expect("relate");
        }
    }
}

/// An empty log in a fresh directory (kept alive by the returned guard).
fn empty_store() -> (tempfile::TempDir, Arc<dyn EventStore>) {
    let data = tempfile::tempdir().expect("dir");
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(data.path(), SqliteOptions::default()).expect("open"));
    (data, store)
}

fn options(dir: &std::path::Path) -> RunnerOptions {
    RunnerOptions {
        checkpoint_dir: Some(dir.to_path_buf()),
        checkpoint_interval_ms: 60_000,
        ..RunnerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_log_checkpoints_and_restarts_from_the_checkpoint() {
    let (_data, store) = empty_store();
    let checkpoints = tempfile::tempdir().expect("dir");
    populate(store.as_ref(), 1, 5).await;
    let graph = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("start");
    assert!(graph.started_from.starts_with("rebuilt: no checkpoint"), "{}", graph.started_from);
    assert_eq!(graph.applied(), store.head().await.expect("head").position, "caught up when start returns");
    // It follows new events.
    populate(store.as_ref(), 100, 3).await;
    let head = store.head().await.expect("head").position;
    assert!(graph.wait_for(head, Duration::from_secs(5)).await);
    assert!(graph.read().ci_at(ci(102), head).is_some());
    // A relationship ended before the checkpoint: the walks' hops, rebuilt after loading it,
    // must end it too.
    let context = CommandContext::new(
        Metadata::new(Actor::principal("tester"), Source::Api),
        cmdb_core::Timestamp::from_micros(0),
    );
    let unrelate = cmdb_core::ci::CiCommand::Unrelate { rel_id: common::rel(3), reason: None, authorized_by: None };
    let before_unrelate = head;
    execute(store.as_ref(), &CiDecider, &unrelate, &context, None).await.expect("unrelate");
    let head = store.head().await.expect("head").position;
    assert!(graph.wait_for(head, Duration::from_secs(5)).await);
    let mut saved = 0;
    save_checkpoint(&graph, checkpoints.path(), &mut saved).await.expect("checkpoint");
    assert_eq!(saved, head);
    let file = checkpoints.path().join("graph.checkpoint");
    assert!(file.exists());
    assert!(!checkpoints.path().join("graph.checkpoint.tmp").exists(), "the temporary file was renamed");

    let again = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("restart");
    assert_eq!(again.started_from, format!("checkpoint at position {head}"));
    assert_eq!(again.read().ci_at(ci(3), head), graph.read().ci_at(ci(3), head));
    assert_eq!(again.read().counts(), graph.read().counts());
    assert!(again.read().change_book().current().is_some(), "head records rebuilt after loading the checkpoint");
    // The same walks before and after the restart, at the head and before the removal.
    let walk = |g: &TemporalGraph, root: u128, position: u64, direction: ImpactDirection| {
        let traversal = Traversal { direction, max_depth: 32, max_results: 1_000, types: None };
        let impact = g.impact(ci(root), position, &traversal).expect("impact");
        impact.reached.iter().map(|r| (r.ci.id, r.depth, r.severity)).collect::<Vec<_>>()
    };
    for (root, direction) in [(1, ImpactDirection::Downstream), (5, ImpactDirection::Upstream)] {
        for position in [before_unrelate, head] {
            let before = walk(&graph.read(), root, position, direction);
            assert_eq!(walk(&again.read(), root, position, direction), before);
        }
    }
    assert_eq!(walk(&again.read(), 1, head, ImpactDirection::Downstream).len(), 1, "ci 3 no longer depends on ci 2");
    assert_eq!(walk(&again.read(), 1, before_unrelate, ImpactDirection::Downstream).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_does_not_match_the_log_is_discarded_and_rebuilt() {
    let checkpoints = tempfile::tempdir().expect("dir");
    let first = tempfile::tempdir().expect("dir");
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(first.path(), SqliteOptions::default()).expect("open"));
    populate(store.as_ref(), 1, 6).await;
    let graph = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("start");
    let mut saved = 0;
    save_checkpoint(&graph, checkpoints.path(), &mut saved).await.expect("checkpoint");

    // Another log (a restore of something else): same positions exist, other hashes.
    let second = tempfile::tempdir().expect("dir");
    let other: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(second.path(), SqliteOptions::default()).expect("open"));
    populate(other.as_ref(), 500, 8).await;
    let rebuilt = start::<TemporalGraph>(other.clone(), options(checkpoints.path())).await.expect("start");
    assert!(rebuilt.started_from.contains("another hash"), "{}", rebuilt.started_from);
    assert!(rebuilt.read().ci_at(ci(1), rebuilt.applied()).is_none(), "nothing of the old log");
    assert!(rebuilt.read().ci_at(ci(505), rebuilt.applied()).is_some());

    // A shorter log (an older backup).
    let third = tempfile::tempdir().expect("dir");
    let short: Arc<dyn EventStore> = Arc::new(SqliteStore::open(third.path(), SqliteOptions::default()).expect("open"));
    populate(short.as_ref(), 1, 1).await;
    let rebuilt = start::<TemporalGraph>(short.clone(), options(checkpoints.path())).await.expect("start");
    assert!(rebuilt.started_from.contains("not in the log"), "{}", rebuilt.started_from);

    // A damaged checkpoint file.
    std::fs::write(checkpoints.path().join("graph.checkpoint"), b"{\"projection\": \"graph\"").expect("write");
    let rebuilt = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("start");
    assert!(
        rebuilt.started_from.contains("no header line") || rebuilt.started_from.contains("bad header"),
        "{}",
        rebuilt.started_from
    );
    // Another format version.
    let mut saved = 0;
    save_checkpoint(&rebuilt, checkpoints.path(), &mut saved).await.expect("checkpoint");
    let bytes = std::fs::read(checkpoints.path().join("graph.checkpoint")).expect("read");
    let newline = bytes.iter().position(|b| *b == b'\n').expect("a header line");
    let header = String::from_utf8(bytes[..newline].to_vec()).expect("a text header");
    let current = format!("\"format_version\":{}", <TemporalGraph as Projection>::FORMAT_VERSION);
    assert!(header.contains(&current), "{header}");
    let mut changed = header.replacen(&current, "\"format_version\":99", 1).into_bytes();
    changed.extend_from_slice(&bytes[newline..]);
    std::fs::write(checkpoints.path().join("graph.checkpoint"), changed).expect("write");
    let rebuilt = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("start");
    assert!(rebuilt.started_from.contains("format graph 99"), "{}", rebuilt.started_from);
}

/// The pointer of the first string equal to `value` in `json`.
fn pointer_to(json: &serde_json::Value, value: &str, at: String) -> Option<String> {
    match json {
        serde_json::Value::String(s) if s == value => Some(at),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| pointer_to(v, value, format!("{at}/{k}"))),
        _ => None,
    }
}

/// A redaction (issue 18): the running projection rebuilds when it meets the record, and a
/// start from a checkpoint taken before the record rebuilds instead of trusting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_rebuilds_the_running_state_and_a_checkpoint_from_before_it() {
    let (_data, store) = empty_store();
    let checkpoints = tempfile::tempdir().expect("dir");
    populate(store.as_ref(), 1, 3).await;
    let graph = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("start");
    let mut saved = u64::MAX;
    save_checkpoint(&graph, checkpoints.path(), &mut saved).await.expect("checkpoint");
    let head = store.head().await.expect("head").position;
    let name = graph.read().ci_at(ci(2), head).expect("ci 2").name.clone();
    // Erase ci 2's name from its registration.
    let outcome = erase_from_registration(store.as_ref(), &name).await;
    // The running projection: rebuilt before it says it applied the record.
    assert!(graph.wait_for(outcome.last_position, Duration::from_secs(10)).await);
    assert_eq!(graph.read().ci_at(ci(2), head).expect("ci 2").name, "[redacted]", "as of before the redaction too");
    assert_eq!(graph.read().ci_at(ci(1), head).expect("ci 1").name, "application-1", "others are untouched");
    // A start from the checkpoint saved before the redaction: not trusted, rebuilt.
    let restarted = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("restart");
    assert_eq!(restarted.started_from, "rebuilt: a redaction follows the checkpoint");
    assert_eq!(restarted.read().ci_at(ci(2), head).expect("ci 2").name, "[redacted]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_over_many_small_pages_applies_every_event_in_order() {
    // Read, decode and apply overlap on three threads: pages of 3 events, so dozens of pages
    // are in flight between the stages. The result must be the fold of the log in order.
    let (_data, store) = empty_store();
    populate(store.as_ref(), 1, 40).await;
    let head = store.head().await.expect("head").position;
    let log = store.read_all(0, 10_000).await.expect("read");
    assert_eq!(log.len() as u64, head);
    let mut folded = TemporalGraph::default();
    for record in &log {
        Projection::apply(&mut folded, record).expect("apply");
    }
    let small = RunnerOptions { checkpoint_dir: None, page_events: 3, ..RunnerOptions::default() };
    let graph = start::<TemporalGraph>(store.clone(), small).await.expect("start");
    assert_eq!(graph.applied(), head);
    assert_eq!(graph.read().position_hash(), folded.position_hash(), "the same last event");
    assert_eq!(graph.read().counts(), folded.counts());
    for position in (1..=head).step_by(7).chain([head]) {
        for n in [1, 20, 40] {
            assert_eq!(graph.read().ci_at(ci(n), position), folded.ci_at(ci(n), position), "ci {n} at {position}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_cannot_be_decoded_stops_the_catch_up_with_its_position() {
    let (_data, store) = empty_store();
    populate(store.as_ref(), 1, 10).await;
    let broken = cmdb_core::AppendRequest::single(
        cmdb_core::StreamId::new("ci-broken").expect("stream"),
        cmdb_core::ExpectedVersion::Any,
        vec![cmdb_core::NewEvent::raw(
            "ci.updated",
            br#"{"ci_id": 17, "version": [1]}"#.to_vec(),
            Metadata::new(Actor::principal("tester"), Source::Api),
        )],
    );
    let at = store.append(broken).await.expect("append").last_position;
    populate(store.as_ref(), 100, 10).await;
    let small = RunnerOptions { checkpoint_dir: None, page_events: 4, ..RunnerOptions::default() };
    let Err(error) = start::<TemporalGraph>(store.clone(), small).await else {
        panic!("a log with an undecodable CI event must not start a graph");
    };
    let message = error.to_string();
    assert!(message.contains("graph") && message.contains(&format!("position {at}")), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_tree_caught_up_from_links_equals_the_fold_of_whole_records() {
    let (data, store) = empty_store();
    populate(store.as_ref(), 1, 6).await;
    // A checkpoint record between other events, as the evidence decider writes it (the tree
    // does not verify notes: the decider did before appending).
    let folded = evidence_folded(store.as_ref()).await;
    append_signed_checkpoint(store.as_ref(), folded.size(), folded.root(folded.size()).expect("root")).await;
    populate(store.as_ref(), 100, 4).await;
    let head = store.head().await.expect("head").position;
    let folded = evidence_folded(store.as_ref()).await;
    assert_eq!(folded.size(), head);
    assert_eq!(folded.checkpoints_between(0, u64::MAX, 10).len(), 1);
    // From this process (links from the writer's copy in memory) and from a new one (links
    // from the file), in pages of 3.
    let reopened: Arc<dyn EventStore> =
        Arc::new(SqliteStore::open(data.path(), SqliteOptions::default()).expect("reopen"));
    for store in [store, reopened] {
        let small = RunnerOptions { checkpoint_dir: None, page_events: 3, ..RunnerOptions::default() };
        let evidence = start::<EvidenceLog>(store, small).await.expect("start");
        assert_same_tree(&evidence.read(), &folded);
    }
}

/// The evidence tree folded from every whole record of `store`'s log, one by one.
async fn evidence_folded(store: &dyn EventStore) -> EvidenceLog {
    let mut folded = EvidenceLog::default();
    for record in store.read_all(0, 1_000).await.expect("read") {
        Projection::apply(&mut folded, &record).expect("fold");
    }
    folded
}

/// Two evidence trees hold the same leaves, roots at every size, checkpoints and what the
/// next checkpoint would cover.
fn assert_same_tree(tree: &EvidenceLog, other: &EvidenceLog) {
    assert_eq!(tree.size(), other.size());
    assert_eq!(tree.position_hash(), other.position_hash());
    for size in 1..=tree.size() {
        assert_eq!(tree.root(size).expect("root"), other.root(size).expect("root"), "size {size}");
    }
    assert_eq!(tree.checkpoints_between(0, u64::MAX, 10), other.checkpoints_between(0, u64::MAX, 10));
    assert_eq!(tree.uncovered_events(), other.uncovered_events());
}

/// A signed checkpoint record of the tree at `size` with `root` appended to `store`, as the
/// evidence decider writes it (the evidence tree folds it whole).
async fn append_signed_checkpoint(store: &dyn EventStore, size: u64, root: cmdb_core::merkle::TreeHash) {
    use cmdb_core::evidence::{CHECKPOINT_SIGNED, CheckpointSigned, checkpoint_stream};
    let signed =
        CheckpointSigned { origin: "cmdb.test".into(), size, root, key_id: "0123abcd".into(), note: "a note".into() };
    let checkpoint = cmdb_core::AppendRequest::single(
        checkpoint_stream(),
        cmdb_core::ExpectedVersion::Any,
        vec![cmdb_core::NewEvent::raw(
            CHECKPOINT_SIGNED,
            serde_json::to_vec(&signed).expect("json"),
            Metadata::new(Actor::principal("signer"), Source::System),
        )],
    );
    store.append(checkpoint).await.expect("append the checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_caught_up_from_one_read_equals_each_caught_up_alone_and_both_follow() {
    use cmdb_projections::runner::start_pair;

    let (_data, store) = empty_store();
    populate(store.as_ref(), 1, 12).await;
    let before = evidence_folded(store.as_ref()).await;
    append_signed_checkpoint(store.as_ref(), before.size(), before.root(before.size()).expect("root")).await;
    populate(store.as_ref(), 100, 9).await;
    let head = store.head().await.expect("head").position;
    // Pages of 3 events: a dozen pages pass from the graph's fold to the tree's.
    let small = RunnerOptions { checkpoint_dir: None, page_events: 3, ..RunnerOptions::default() };
    let (graph, evidence) =
        start_pair::<TemporalGraph, EvidenceLog>(store.clone(), small.clone()).await.expect("start the pair");
    let graph_alone = start::<TemporalGraph>(store.clone(), small.clone()).await.expect("start the graph");
    let evidence_alone = start::<EvidenceLog>(store.clone(), small).await.expect("start the tree");
    assert_eq!((graph.applied(), evidence.applied()), (head, head), "both caught up when the pair starts");
    assert_eq!(graph.read().position_hash(), graph_alone.read().position_hash());
    assert_eq!(graph.read().counts(), graph_alone.read().counts());
    for position in (1..=head).step_by(5).chain([head]) {
        for n in [1, 6, 12, 100, 108] {
            assert_eq!(
                graph.read().ci_at(ci(n), position),
                graph_alone.read().ci_at(ci(n), position),
                "{n} at {position}"
            );
        }
    }
    {
        let tree = evidence.read();
        assert_eq!(tree.size(), head);
        assert_eq!(tree.checkpoints_between(0, u64::MAX, 10).len(), 1, "the checkpoint record was folded whole");
        assert_same_tree(&tree, &evidence_alone.read());
    }
    // Each follows the log on its own afterwards.
    populate(store.as_ref(), 200, 2).await;
    let head = store.head().await.expect("head").position;
    assert!(
        graph.wait_for(head, Duration::from_secs(5)).await && evidence.wait_for(head, Duration::from_secs(5)).await
    );
    assert!(graph.read().ci_at(ci(201), head).is_some());
    assert_eq!(evidence.read().size(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_from_different_checkpoints_catches_up_each_from_its_own() {
    use cmdb_projections::runner::start_pair;

    let (_data, store) = empty_store();
    let checkpoints = tempfile::tempdir().expect("dir");
    populate(store.as_ref(), 1, 6).await;
    // Only the graph has a checkpoint: the tree rebuilds from the start, the graph does not.
    let graph = start::<TemporalGraph>(store.clone(), options(checkpoints.path())).await.expect("start");
    let mut saved = 0;
    save_checkpoint(&graph, checkpoints.path(), &mut saved).await.expect("checkpoint");
    drop(graph);
    populate(store.as_ref(), 100, 4).await;
    let head = store.head().await.expect("head").position;
    let (graph, evidence) =
        start_pair::<TemporalGraph, EvidenceLog>(store.clone(), options(checkpoints.path())).await.expect("start");
    assert_eq!(graph.started_from, format!("checkpoint at position {saved}"));
    assert!(evidence.started_from.starts_with("rebuilt: no checkpoint"), "{}", evidence.started_from);
    assert_eq!((graph.applied(), evidence.applied()), (head, head));
    assert!(graph.read().ci_at(ci(103), head).is_some());
    assert_eq!(evidence.read().size(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_whose_first_fold_fails_reports_its_position_and_starts_neither() {
    use cmdb_projections::runner::start_pair;

    let (_data, store) = empty_store();
    populate(store.as_ref(), 1, 5).await;
    let broken = cmdb_core::AppendRequest::single(
        cmdb_core::StreamId::new("ci-broken").expect("stream"),
        cmdb_core::ExpectedVersion::Any,
        vec![cmdb_core::NewEvent::raw(
            "ci.updated",
            br#"{"ci_id": 17}"#.to_vec(),
            Metadata::new(Actor::principal("tester"), Source::Api),
        )],
    );
    let at = store.append(broken).await.expect("append").last_position;
    populate(store.as_ref(), 100, 5).await;
    let before = store.head().await.expect("head");
    let small = RunnerOptions { checkpoint_dir: None, page_events: 2, ..RunnerOptions::default() };
    let Err(error) = start_pair::<TemporalGraph, EvidenceLog>(store.clone(), small).await else {
        panic!("a log with an undecodable CI event must not start the pair");
    };
    let message = error.to_string();
    assert!(message.contains("graph") && message.contains(&format!("position {at}")), "{message}");
    assert_eq!(store.head().await.expect("head"), before, "starting wrote nothing");
}

/// Erases `name` from the registration that holds it (a redaction record after it); the
/// outcome of the redaction's append.
async fn erase_from_registration(store: &dyn EventStore, name: &str) -> cmdb_core::AppendOutcome {
    let log = store.read_all(0, 1000).await.expect("read");
    let registration = log
        .iter()
        .find(|r| r.event_type == "ci.registered" && String::from_utf8_lossy(&r.data).contains(name))
        .expect("the registration");
    let payload: serde_json::Value = serde_json::from_slice(&registration.data).expect("json");
    let pointer = pointer_to(&payload, name, String::new()).expect("the name is in the payload");
    let (erased, _) = cmdb_core::redaction::plan_erasure(registration, &[pointer]).expect("a name erases");
    let record = cmdb_core::AppendRequest::single(
        cmdb_core::StreamId::new("redactions").expect("stream"),
        cmdb_core::ExpectedVersion::Any,
        vec![cmdb_core::NewEvent::raw(
            cmdb_core::chain::REDACTION_APPLIED,
            format!(r#"{{"positions":[{}]}}"#, registration.position).into_bytes(),
            Metadata::new(Actor::principal("dpo"), Source::Api),
        )],
    );
    store
        .redact(vec![cmdb_core::store::Erasure { position: registration.position, data: erased }], record)
        .await
        .expect("redact")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_from_checkpoints_before_a_redaction_rebuilds_the_graph_and_keeps_the_tree() {
    use cmdb_projections::runner::start_pair;

    let (_data, store) = empty_store();
    let checkpoints = tempfile::tempdir().expect("dir");
    populate(store.as_ref(), 1, 3).await;
    let (graph, evidence) =
        start_pair::<TemporalGraph, EvidenceLog>(store.clone(), options(checkpoints.path())).await.expect("start");
    let (mut saved_graph, mut saved_tree) = (u64::MAX, u64::MAX);
    save_checkpoint(&graph, checkpoints.path(), &mut saved_graph).await.expect("graph checkpoint");
    save_checkpoint(&evidence, checkpoints.path(), &mut saved_tree).await.expect("tree checkpoint");
    let head = store.head().await.expect("head").position;
    assert_eq!((saved_graph, saved_tree), (head, head), "both saved at one position");
    let name = graph.read().ci_at(ci(2), head).expect("ci 2").name.clone();
    drop((graph, evidence));
    let outcome = erase_from_registration(store.as_ref(), &name).await;
    populate(store.as_ref(), 100, 2).await;
    let head_now = store.head().await.expect("head").position;
    assert!(head_now > outcome.last_position);
    // One read from the shared position; the graph's checkpoint is not trusted, the tree's
    // is (hashes survive a redaction).
    let (graph, evidence) =
        start_pair::<TemporalGraph, EvidenceLog>(store.clone(), options(checkpoints.path())).await.expect("restart");
    assert_eq!(graph.started_from, "rebuilt: a redaction follows the checkpoint");
    assert_eq!(evidence.started_from, format!("checkpoint at position {head}"));
    assert_eq!((graph.applied(), evidence.applied()), (head_now, head_now));
    assert_eq!(graph.read().ci_at(ci(2), head).expect("ci 2").name, "[redacted]");
    assert!(graph.read().ci_at(ci(101), head_now).is_some());
    let folded = evidence_folded(store.as_ref()).await;
    assert_eq!(evidence.read().root(head_now).expect("root"), folded.root(head_now).expect("root"));
}
