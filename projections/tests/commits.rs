//! Commits as the unit of the past (issue 18, part 5): a read asked at any position happens at
//! the end of a commit (an atomic append), never between two events of one command. The
//! property: over random appends of 1 to 5 events (some of several streams at once), every
//! position read is the end of a commit, is the asked position exactly when that one ends a
//! commit, and is otherwise the end of the commit holding it, or the position before it while
//! the commit is only partly applied.

use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
use cmdb_core::{Actor, AppendRequest, EventRecord, EventStore, ExpectedVersion, Metadata, NewEvent, Source, StreamId};
use cmdb_projections::graph::TemporalGraph;
use proptest::prelude::*;

fn event(n: usize) -> NewEvent {
    NewEvent::raw(
        "test.happened",
        format!("{{\"n\":{n}}}").into_bytes(),
        Metadata::new(Actor::principal("p"), Source::Api),
    )
}

/// Appends `sizes` (each split over two streams when it has more than two events) and reads
/// the log back.
fn log_of(sizes: &[usize]) -> Vec<EventRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = MemoryStore::new(MemoryOptions::default());
        for (i, size) in sizes.iter().enumerate() {
            let stream = |s: &str| StreamId::new(format!("{s}-{i}")).expect("stream");
            let mut request = AppendRequest::new();
            let split = if *size > 2 { size / 2 } else { *size };
            request = request.write(stream("a"), ExpectedVersion::NoStream, (0..split).map(event).collect());
            if split < *size {
                request = request.write(stream("b"), ExpectedVersion::NoStream, (split..*size).map(event).collect());
            }
            store.append(request).await.expect("append");
        }
        store.read_all(0, 10_000).await.expect("read")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_position_read_is_the_end_of_a_commit(
        sizes in proptest::collection::vec(1usize..=5, 1..30),
        cut in 0usize..200,
    ) {
        let log = log_of(&sizes);
        prop_assert_eq!(log.len(), sizes.iter().sum::<usize>());
        // Apply a prefix, possibly ending inside a commit (as a batch boundary may).
        let applied = cut.min(log.len());
        let mut graph = TemporalGraph::default();
        for record in &log[..applied] {
            graph.apply(record).expect("apply");
        }
        let ends: std::collections::BTreeSet<u64> = log.iter().map(|r| r.commit.last_position()).collect();
        for position in 0..=applied as u64 {
            let read = graph.whole_commit(position);
            prop_assert!(read == 0 || ends.contains(&read), "{} read at {}, not a commit's end", position, read);
            prop_assert!(read <= applied as u64, "{} read at {}, past what was applied", position, read);
            if position == 0 || ends.contains(&position) {
                prop_assert_eq!(read, position, "a commit's end reads where it was asked");
            } else {
                let commit = log[(position - 1) as usize].commit;
                if commit.last_position() <= applied as u64 {
                    prop_assert_eq!(read, commit.last_position(), "snapped forward to the commit's end");
                } else {
                    prop_assert_eq!(read, commit.first_position - 1, "the commit is partly applied: before it");
                }
            }
        }
    }
}
