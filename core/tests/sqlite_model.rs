//! Property test: the SQLite store behaves exactly like a tiny in-memory model of the
//! expected-version and condition rules, for random sequences of appends; and reading the log
//! back gives exactly what the model recorded, with an intact chain.

use std::collections::HashMap;

use cmdb_core::conformance::{event, stream};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use proptest::prelude::*;

const STREAMS: usize = 4;

#[derive(Clone, Debug)]
struct Op {
    writes: Vec<(usize, ExpectedVersion, u64)>,
    conditions: Vec<(usize, ExpectedVersion)>,
}

fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        (0u64..4).prop_map(ExpectedVersion::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // A random split of distinct streams between writes and conditions.
    (Just((0..STREAMS).collect::<Vec<_>>()).prop_shuffle(), 1usize..=3, 0usize..=1).prop_flat_map(
        |(order, writes, conditions)| {
            let write_streams: Vec<usize> = order[..writes].to_vec();
            let condition_streams: Vec<usize> = order[writes..writes + conditions].to_vec();
            (
                proptest::collection::vec((expected_version(), 1u64..=3), writes),
                proptest::collection::vec(expected_version(), conditions),
            )
                .prop_map(move |(w, c)| Op {
                    writes: write_streams.iter().zip(w).map(|(&s, (e, n))| (s, e, n)).collect(),
                    conditions: condition_streams.iter().zip(c).map(|(&s, e)| (s, e)).collect(),
                })
        },
    )
}

#[derive(Default)]
struct Model {
    versions: HashMap<usize, u64>,
    log: Vec<(usize, u64, u64)>, // (stream, version, payload n)
}

impl Model {
    /// The first failing stream (conditions first, then writes, in order), or the new positions.
    fn apply(&mut self, op: &Op, first_payload: u64) -> Result<(u64, u64), (usize, Option<u64>)> {
        let checks = op.conditions.iter().copied().chain(op.writes.iter().map(|&(s, e, _)| (s, e)));
        for (s, expected) in checks {
            let actual = self.versions.get(&s).copied();
            if !expected.admits(actual) {
                return Err((s, actual));
            }
        }
        let first = self.log.len() as u64 + 1;
        let mut payload = first_payload;
        for &(s, _, n) in &op.writes {
            for _ in 0..n {
                let version = self.versions.get(&s).map_or(0, |v| v + 1);
                self.versions.insert(s, version);
                self.log.push((s, version, payload));
                payload += 1;
            }
        }
        Ok((first, self.log.len() as u64))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let dir = tempfile::tempdir().expect("dir");
            let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
            let mut model = Model::default();
            let mut payload = 0u64;
            for op in &ops {
                let mut request = AppendRequest::new();
                let mut n = payload;
                for &(s, expected, count) in &op.writes {
                    let events = (0..count).map(|i| event(n + i)).collect();
                    n += count;
                    request = request.write(stream(&format!("s{s}")), expected, events);
                }
                for &(s, expected) in &op.conditions {
                    request = request.condition(stream(&format!("s{s}")), expected);
                }
                let expected = model.apply(op, payload);
                let actual = store.append(request).await;
                match (expected, actual) {
                    (Ok((first, last)), Ok(outcome)) => {
                        assert_eq!((outcome.first_position, outcome.last_position), (first, last));
                        payload = n;
                    }
                    (Err((s, found)), Err(StoreError::VersionConflict { stream: conflicted, actual, .. })) => {
                        assert_eq!(conflicted.as_str(), format!("s{s}"));
                        assert_eq!(actual.0, found);
                    }
                    (expected, actual) => panic!("model said {expected:?}, store said {actual:?} for {op:?}"),
                }
            }
            let log = store.read_all(0, 10_000).await.expect("read");
            let seen: Vec<(String, u64, Vec<u8>)> =
                log.iter().map(|r| (r.stream_id.to_string(), r.stream_version, r.data.clone())).collect();
            let wanted: Vec<(String, u64, Vec<u8>)> = model
                .log
                .iter()
                .map(|&(s, v, n)| (format!("s{s}"), v, event(n).data))
                .collect();
            assert_eq!(seen, wanted);
            // Every prefix read is the model's prefix: reading "as of" p is replaying to p.
            for p in [0, log.len() as u64 / 2, log.len() as u64] {
                let prefix = store.read_all(0, p as usize).await.expect("read");
                assert_eq!(prefix.len() as u64, p);
                assert_eq!(&log[..p as usize], &prefix[..]);
            }
            let report = store.verify().await.expect("verify");
            assert!(report.is_intact());
            assert_eq!(report.events_checked, model.log.len() as u64);
        });
    }
}
