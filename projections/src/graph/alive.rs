//! When each CI is present, in a dense array the walks read (issue 15, part 3).
//!
//! A walk asks of every CI it reaches whether the CI existed (and was not withdrawn) at the
//! position. Answering from the CI's versions costs a binary search and two pointer chases,
//! each a likely cache miss; on a walk over 20,000 CIs that was half its time. A CI is present
//! from its registration until it is withdrawn, and withdrawal is final, so one interval and
//! the class (which never changes) answer the walks from one array entry. Should a CI ever
//! have a version that is not withdrawn after one that is, its entry says `exact: false` and
//! the walks ask its versions instead.
//!
//! Derived from the versions: kept as CI events are applied, rebuilt after a checkpoint is
//! loaded (not stored).

use cmdb_core::ci::{CiClass, Status};

use super::{CiVersion, OPEN};

/// A CI's class and the positions it is present at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Alive {
    /// Its class (never changes).
    pub class: CiClass,
    /// Registered at.
    pub from: u64,
    /// Withdrawn at (`OPEN` while it is not).
    pub until: u64,
    /// Whether `from..until` is the whole answer (else ask the versions).
    pub exact: bool,
}

impl Alive {
    /// The entry of a CI with these versions (in order, the first its registration).
    pub fn of(versions: &[CiVersion]) -> Option<Alive> {
        let first = versions.first()?;
        let mut alive = Alive { class: first.ci.class, from: first.from, until: OPEN, exact: true };
        for version in versions {
            alive.record(version.from, version.ci.status);
        }
        Some(alive)
    }

    /// Whether the entry alone says the CI is present at every position of `[start, end)`
    /// (`end` may be `OPEN`: from `start` on, for good).
    #[inline]
    pub fn present_through(&self, start: u64, end: u64) -> bool {
        self.exact && self.from <= start && end <= self.until
    }

    /// Records a version with `status` from `position` on.
    pub fn record(&mut self, position: u64, status: Status) {
        match (status == Status::Withdrawn, self.until == OPEN) {
            (true, true) => self.until = position,
            (false, false) => self.exact = false,
            _ => {}
        }
    }
}
