//! Subscriptions for any backend: page through the committed log from the subscriber's own
//! position, and when caught up, wait on the store's published head. The writer never waits
//! for a subscriber and holds nothing per subscriber; a slow subscriber only falls behind,
//! its memory bounded by one page.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::stream;

use crate::event::EventRecord;
use crate::store::{EventStore, EventStream, StoreError};

/// How long to wait before reading again when the head says there is more but a read saw none.
const RETRY_EMPTY_PAGE_MS: u64 = 5;

struct Cursor {
    store: Arc<dyn EventStore>,
    head: tokio::sync::watch::Receiver<u64>,
    after: u64,
    page_events: usize,
    buffered: VecDeque<EventRecord>,
    failed: bool,
}

/// Every event with position > `after`, in order, with no gap and no duplicate, then every
/// event appended later, for as long as the stream is polled. Ends when the store shuts down.
/// `page_events` bounds the memory held per subscriber (clamped to the store's page limit).
pub fn subscribe(store: Arc<dyn EventStore>, after: u64, page_events: usize) -> EventStream {
    let page_events = page_events.clamp(1, store.limits().max_page_events);
    let head = store.watch_head();
    let cursor = Cursor { store, head, after, page_events, buffered: VecDeque::new(), failed: false };
    Box::pin(stream::unfold(cursor, |mut cursor| async move {
        if cursor.failed {
            return None;
        }
        loop {
            if let Some(record) = cursor.buffered.pop_front() {
                cursor.after = record.position;
                return Some((Ok(record), cursor));
            }
            if *cursor.head.borrow_and_update() > cursor.after {
                match cursor.store.read_all(cursor.after, cursor.page_events).await {
                    Ok(page) => {
                        if let Some(first) = page.first()
                            && first.position != cursor.after + 1
                        {
                            cursor.failed = true;
                            let detail = format!(
                                "subscription expected position {} but the log returned {}",
                                cursor.after + 1,
                                first.position
                            );
                            let location = format!("position {}", cursor.after + 1);
                            return Some((Err(StoreError::Corruption { location, detail }), cursor));
                        }
                        if page.is_empty() {
                            // The head was published but this reader does not see it yet (a
                            // replica or another connection lagging): look again shortly.
                            tokio::time::sleep(std::time::Duration::from_millis(RETRY_EMPTY_PAGE_MS)).await;
                        }
                        cursor.buffered.extend(page);
                        continue;
                    }
                    Err(error) => {
                        cursor.failed = true;
                        return Some((Err(error), cursor));
                    }
                }
            }
            // Caught up: wait until a commit moves the head past us. `changed` only misses
            // nothing because the head value is re-checked above after each wake-up.
            if cursor.head.changed().await.is_err() {
                return None;
            }
        }
    }))
}
