//! The one "read a stream and fold it": page through a stream from a version, and bring a
//! key's fold up to date from the store.

use super::{Depth, Entry, StreamKey};
use crate::event::{EventRecord, StreamId};
use crate::store::{Direction, EventStore};

/// Reads `stream` from version `from` (inclusive) to its end, page by page, handing each
/// record to `each`. Returns the version of the last record read, if any.
pub async fn read_stream_from(
    store: &dyn EventStore,
    stream: &StreamId,
    from: u64,
    mut each: impl FnMut(&EventRecord) -> Result<(), crate::Error>,
) -> Result<Option<u64>, crate::Error> {
    let page = store.limits().max_page_events;
    let mut next = from;
    let mut last = None;
    loop {
        let batch = store.read_stream(stream, Direction::Forward, Some(next), page).await?;
        let Some(newest) = batch.last() else { return Ok(last) };
        debug_assert!(newest.stream_version >= next, "a forward read never goes back");
        next = newest.stream_version + 1;
        last = Some(newest.stream_version);
        for record in &batch {
            each(record)?;
        }
        if batch.len() < page {
            return Ok(last);
        }
    }
}

/// Every record of `stream`, in stream order.
pub async fn read_whole_stream(store: &dyn EventStore, stream: &StreamId) -> Result<Vec<EventRecord>, crate::Error> {
    let mut records = Vec::new();
    read_stream_from(store, stream, 0, |record| {
        records.push(record.clone());
        Ok(())
    })
    .await?;
    Ok(records)
}

/// Brings `entry` (the fold of `key` at the versions it records) up to the end of its streams.
pub async fn catch_up<K: StreamKey>(
    store: &dyn EventStore,
    key: &K,
    mut entry: Entry<K::State>,
) -> Result<Entry<K::State>, crate::Error> {
    match key.depth() {
        Depth::Newest => {
            for (stream, version) in &mut entry.versions {
                let newest = store.read_stream(stream, Direction::Backward, None, 1).await?;
                if let Some(record) = newest.first().filter(|r| Some(r.stream_version) > *version) {
                    key.evolve(&mut entry.state, record)?;
                    *version = Some(record.stream_version);
                }
            }
        }
        Depth::Whole if entry.versions.len() == 1 => {
            let (stream, version) = &mut entry.versions[0];
            let state = &mut entry.state;
            let from = version.map_or(0, |v| v + 1);
            if let Some(last) = read_stream_from(store, stream, from, |record| key.evolve(state, record)).await? {
                *version = Some(last);
            }
        }
        Depth::Whole => {
            // Several streams: gather what is new in each, then fold it all in log order.
            let mut new = Vec::new();
            for (stream, version) in &mut entry.versions {
                let from = version.map_or(0, |v| v + 1);
                let last = read_stream_from(store, stream, from, |record| {
                    new.push(record.clone());
                    Ok(())
                })
                .await?;
                if last.is_some() {
                    *version = last;
                }
            }
            new.sort_by_key(|record| record.position);
            for record in &new {
                key.evolve(&mut entry.state, record)?;
            }
        }
    }
    Ok(entry)
}

/// The fold of `key` as the store holds it now.
pub async fn load<K: StreamKey>(store: &dyn EventStore, key: &K) -> Result<K::State, crate::Error> {
    Ok(catch_up(store, key, Entry::initial(key)).await?.state)
}
