//! The newest events this process committed, kept in memory after their commit.
//!
//! Every commit wakes each follower of the log (in the server: the graph, the evidence log,
//! the access view and the outbox), and each then asks for the events past its position. Kept
//! here, those reads are answered from memory instead of each querying the file and decoding
//! the same rows again (perf under webhook load: 13 % of the server's CPU in those reads).
//!
//! What is kept is only ever a contiguous run of positions this process's writer committed,
//! built from exactly the values it stored. It is cleared when that run would break (another
//! process committed in between), when a redaction rewrites stored payloads, and it is not
//! used once the published head passes its last position (another process committed after
//! it): then the file answers.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::event::EventRecord;

/// Most events kept.
pub const MAX_RECENT_EVENTS: usize = 4_096;
/// Most payload bytes kept (data plus stream and type names).
pub const MAX_RECENT_BYTES: usize = 8 << 20;

#[derive(Default)]
struct Kept {
    records: VecDeque<EventRecord>,
    bytes: usize,
}

/// A bounded, contiguous run of the newest committed events.
#[derive(Default)]
pub(crate) struct RecentEvents {
    kept: Mutex<Kept>,
}

fn size_of(record: &EventRecord) -> usize {
    record.data.len() + record.stream_id.as_str().len() + record.event_type.len()
}

impl RecentEvents {
    /// Adds events just committed, in position order. A run that does not continue the kept
    /// one replaces it.
    pub(crate) fn extend(&self, records: Vec<EventRecord>) {
        let Some(first) = records.first().map(|r| r.position) else { return };
        let Ok(mut kept) = self.kept.lock() else { return };
        if kept.records.back().is_some_and(|last| last.position + 1 != first) {
            kept.records.clear();
            kept.bytes = 0;
        }
        for record in records {
            debug_assert!(kept.records.back().is_none_or(|last| last.position + 1 == record.position));
            kept.bytes += size_of(&record);
            kept.records.push_back(record);
        }
        while kept.records.len() > MAX_RECENT_EVENTS || (kept.bytes > MAX_RECENT_BYTES && kept.records.len() > 1) {
            if let Some(old) = kept.records.pop_front() {
                kept.bytes -= size_of(&old);
            }
        }
    }

    /// Forgets everything (a redaction rewrote stored payloads).
    pub(crate) fn clear(&self) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.records.clear();
            kept.bytes = 0;
        }
    }

    /// The events after `after`, at most `max_count`, when the run holds the next one and the
    /// published `head` is not past the run; `None` sends the reader to the file.
    pub(crate) fn after(&self, after: u64, max_count: usize, head: u64) -> Option<Vec<EventRecord>> {
        let kept = self.kept.lock().ok()?;
        let first = kept.records.front()?.position;
        let last = kept.records.back()?.position;
        if head > last || after < first.checked_sub(1)? || after >= last {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).ok()?;
        let page: Vec<EventRecord> = kept.records.iter().skip(skip).take(max_count).cloned().collect();
        debug_assert!(page.first().is_some_and(|r| r.position == after + 1));
        Some(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{event, stream};
    use crate::event::{CommitSpan, FoldRecord, PayloadSeal};
    use crate::hash::Hash;
    use crate::time::Timestamp;

    fn record(position: u64, bytes: usize) -> EventRecord {
        let new = event(position);
        let metadata = new.metadata;
        EventRecord {
            fold: FoldRecord {
                position,
                stream_id: stream("s"),
                stream_version: position,
                event_type: new.event_type.into(),
                data: vec![b'x'; bytes],
                principal: metadata.actor.principal,
                correlation_id: metadata.correlation_id,
                recorded_at: Timestamp::from_micros(1),
                hash: Hash::GENESIS,
                commit: CommitSpan { first_position: position, events: 1 },
            },
            token_id: metadata.actor.token_id,
            causation_id: metadata.causation_id,
            source: metadata.source,
            occurred_at: metadata.occurred_at,
            event_id: uuid::Uuid::from_u128(u128::from(position)),
            schema_version: 1,
            prev_hash: Hash::GENESIS,
            seal: PayloadSeal::Plain,
        }
    }

    fn positions(page: Option<Vec<EventRecord>>) -> Option<Vec<u64>> {
        page.map(|p| p.iter().map(|r| r.position).collect())
    }

    #[test]
    fn it_answers_only_inside_its_run_and_never_past_the_head() {
        let recent = RecentEvents::default();
        assert_eq!(positions(recent.after(0, 10, 0)), None, "empty");
        recent.extend((5..=9).map(|p| record(p, 10)).collect());
        assert_eq!(positions(recent.after(4, 10, 9)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(positions(recent.after(6, 2, 9)), Some(vec![7, 8]));
        assert_eq!(positions(recent.after(3, 10, 9)), None, "position 4 is not kept");
        assert_eq!(positions(recent.after(9, 10, 9)), None, "nothing newer is known here");
        assert_eq!(positions(recent.after(6, 10, 10)), None, "another process committed 10");
    }

    #[test]
    fn a_run_that_does_not_continue_replaces_the_kept_one() {
        let recent = RecentEvents::default();
        recent.extend((1..=3).map(|p| record(p, 10)).collect());
        recent.extend((6..=7).map(|p| record(p, 10)).collect());
        assert_eq!(positions(recent.after(0, 10, 7)), None);
        assert_eq!(positions(recent.after(5, 10, 7)), Some(vec![6, 7]));
        recent.clear();
        assert_eq!(positions(recent.after(5, 10, 7)), None);
    }

    #[test]
    fn it_is_bounded_in_events_and_in_bytes() {
        let recent = RecentEvents::default();
        let total = MAX_RECENT_EVENTS as u64 + 10;
        recent.extend((1..=total).map(|p| record(p, 1)).collect());
        assert_eq!(positions(recent.after(10, 1, total)), Some(vec![11]), "the oldest ten went");
        assert_eq!(positions(recent.after(9, 1, total)), None);
        // Four of these fit in the bound, five do not.
        let big = MAX_RECENT_BYTES / 4 - 100;
        recent.extend((total + 1..=total + 5).map(|p| record(p, big)).collect());
        assert_eq!(
            positions(recent.after(total + 1, 10, total + 5)),
            Some(vec![total + 2, total + 3, total + 4, total + 5])
        );
        assert_eq!(positions(recent.after(total, 10, total + 5)), None, "past the byte bound");
    }
}
