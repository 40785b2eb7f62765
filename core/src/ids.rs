//! Ids: event ids (UUIDv7 from an injected generator, so tests can make them deterministic)
//! and the typed ids of the domain's records, each with the stream that holds its events.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::StreamId;
use crate::model::ModelError;
use crate::time::Clock;

macro_rules! id_type {
    ($name:ident, $prefix:literal, $what:literal) => {
        id_type!($name, $what);

        impl $name {
            /// The stream holding this one's events.
            pub fn stream(&self) -> StreamId {
                StreamId::new(format!(concat!($prefix, "{}"), self.0)).expect("a uuid stream id is valid")
            }
        }
    };
    ($name:ident, $what:literal) => {
        #[doc = concat!("The immutable id of a ", $what, ".")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| ModelError::InvalidId { what: $what, input: s.to_owned() })
            }
        }
    };
}

id_type!(CiId, "ci-", "configuration item");
id_type!(RelId, "rel-", "relationship");
id_type!(ChangeId, "change-", "change");
id_type!(TemplateId, "change-template-", "change template");
// Freeze windows share one stream (`change-freezes`): their ids name no stream.
id_type!(FreezeId, "freeze window");
id_type!(ReleaseId, "release-", "release");
id_type!(DeploymentId, "deployment-", "deployment");

/// Makes ids for new events.
pub trait IdGenerator: Send + Sync + 'static {
    /// The next id.
    fn next_id(&self) -> Uuid;
}

/// Real UUIDv7: millisecond time prefix plus randomness (the `uuid` crate's generator, which
/// keeps ids monotonic within a process).
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidV7Ids;

impl IdGenerator for UuidV7Ids {
    fn next_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// Deterministic UUIDv7: the time prefix from an injected clock, the rest from a seed and a
/// counter. The same seed, clock and call order give the same ids.
pub struct SequentialIds {
    clock: Arc<dyn Clock>,
    seed: u64,
    counter: AtomicU64,
}

impl SequentialIds {
    /// A new one.
    pub fn new(clock: Arc<dyn Clock>, seed: u64) -> Self {
        SequentialIds { clock, seed, counter: AtomicU64::new(0) }
    }
}

impl IdGenerator for SequentialIds {
    fn next_id(&self) -> Uuid {
        let count = self.counter.fetch_add(1, Ordering::SeqCst);
        let millis = u64::try_from(self.clock.now().as_micros() / 1000).unwrap_or(0);
        let mixed = self.seed.rotate_left(17) ^ count;
        let mut tail = [0u8; 10];
        tail[..8].copy_from_slice(&mixed.to_be_bytes());
        tail[8..].copy_from_slice(&(count as u16).to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{ManualClock, Timestamp};

    #[test]
    fn sequential_ids_are_v7_distinct_and_reproducible() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_micros(1_700_000_000_000_000)));
        let a = SequentialIds::new(clock.clone(), 7);
        let b = SequentialIds::new(clock, 7);
        let first: Vec<Uuid> = (0..100).map(|_| a.next_id()).collect();
        let second: Vec<Uuid> = (0..100).map(|_| b.next_id()).collect();
        assert_eq!(first, second);
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), 100);
        assert!(first.iter().all(|id| id.get_version_num() == 7));
    }
}
