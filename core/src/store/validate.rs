//! Checks an append request against the envelope rules and the store's limits before it
//! reaches a backend's writer, so a bad request costs the writer nothing and changes nothing.

use std::collections::HashSet;

use serde::de::IgnoredAny;

use crate::event::validate_event_type;
use crate::store::{AppendRequest, ExpectedVersion, Limit, StoreError, StoreLimits};
use crate::time::Timestamp;

fn limit(limit: Limit, value: usize, bound: usize) -> StoreError {
    StoreError::LimitExceeded { limit, value: value as u64, bound: bound as u64 }
}

/// Validates shape, limits, envelopes and payloads. `now` bounds supplied `recorded_at` values.
///
/// Checks, in order: at least one event; streams per append; batch events; each event's size,
/// type, metadata and JSON payload; batch bytes; no stream twice; the bulk-load rules that do
/// not depend on the log (all or no events carry `recorded_at`, only fixture/import/migration
/// sources, never decreasing, not in the future). The rules that depend on the log (empty or
/// still bulk-loading, not before the tail) are the backend's.
pub fn validate_request(request: &AppendRequest, limits: &StoreLimits, now: Timestamp) -> Result<(), StoreError> {
    let event_count = request.event_count();
    if event_count == 0 {
        return Err(StoreError::InvalidInput("an append must write at least one event".into()));
    }
    let stream_count = request.writes.len() + request.conditions.len();
    if stream_count > limits.max_streams_per_append {
        return Err(limit(Limit::MaxStreamsPerAppend, stream_count, limits.max_streams_per_append));
    }
    if event_count > limits.max_batch_events {
        return Err(limit(Limit::MaxBatchEvents, event_count, limits.max_batch_events));
    }

    // A bulk load replays a history in order, touching a busy stream again and again; it may
    // name a stream more than once (with `Any`), the writes applying in order. A live append
    // names each stream once.
    let bulk = request.writes.iter().flat_map(|w| w.events.iter()).any(|e| e.recorded_at.is_some());
    let mut seen = HashSet::with_capacity(stream_count);
    for write in &request.writes {
        let first_time = seen.insert(write.stream.as_str());
        if !first_time && (!bulk || write.expected != ExpectedVersion::Any) {
            return Err(StoreError::InvalidInput(format!("stream {} is written twice in one append", write.stream)));
        }
    }
    for condition in &request.conditions {
        if !seen.insert(condition.stream.as_str()) {
            return Err(StoreError::InvalidInput(format!(
                "stream {} is both written and a condition, or a condition twice",
                condition.stream
            )));
        }
    }

    let mut total_bytes = 0usize;
    let mut supplied = 0usize;
    let mut last_supplied: Option<Timestamp> = None;
    for (index, event) in request.writes.iter().flat_map(|w| w.events.iter()).enumerate() {
        if event.data.len() > limits.max_event_bytes {
            return Err(limit(Limit::MaxEventBytes, event.data.len(), limits.max_event_bytes));
        }
        total_bytes += event.data.len();
        validate_event_type(&event.event_type).map_err(|e| StoreError::InvalidInput(format!("event {index}: {e}")))?;
        event.metadata.validate().map_err(|e| StoreError::InvalidInput(format!("event {index}: {e}")))?;
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(&event.data) {
            return Err(StoreError::InvalidInput(format!("event {index}: data is not JSON: {e}")));
        }
        if let Some(occurred_at) = event.metadata.occurred_at {
            // Guard the i64 micros arithmetic of every consumer; any real date fits.
            if occurred_at.as_micros() == i64::MIN {
                return Err(StoreError::InvalidInput(format!("event {index}: occurred_at is out of range")));
            }
        }
        if let Some(at) = event.recorded_at {
            supplied += 1;
            if !request.copy && !event.metadata.source.may_supply_recorded_at() {
                return Err(StoreError::InvalidInput(format!(
                    "event {index}: only a bulk load (source fixture, import or migration) may supply recorded_at; source is {}",
                    event.metadata.source
                )));
            }
            if at > now {
                return Err(StoreError::InvalidInput(format!(
                    "event {index}: supplied recorded_at {at} is in the future (now {now})"
                )));
            }
            if last_supplied.is_some_and(|last| at < last) {
                return Err(StoreError::InvalidInput(format!(
                    "event {index}: supplied recorded_at {at} is before the previous event's"
                )));
            }
            last_supplied = Some(at);
        }
    }
    if total_bytes > limits.max_batch_bytes {
        return Err(limit(Limit::MaxBatchBytes, total_bytes, limits.max_batch_bytes));
    }
    if request.copy
        && (supplied != event_count || request.writes.iter().flat_map(|w| &w.events).any(|e| e.event_id.is_none()))
    {
        return Err(StoreError::InvalidInput("a copy must supply every event's id and recorded_at".into()));
    }
    if supplied != 0 && supplied != event_count {
        return Err(StoreError::InvalidInput(
            "either every event of a bulk load supplies recorded_at, or none does".into(),
        ));
    }
    Ok(())
}

/// Checks a request's conditions and expected versions against the log, in order (conditions
/// first, then written streams). `version_of` gives a stream's last version. Returns the
/// current version of each written stream, in request order.
pub fn check_expectations(
    request: &AppendRequest,
    mut version_of: impl FnMut(&crate::event::StreamId) -> Result<Option<u64>, StoreError>,
) -> Result<Vec<Option<u64>>, StoreError> {
    use crate::store::{StreamRole, StreamState};
    for condition in &request.conditions {
        let actual = version_of(&condition.stream)?;
        if !condition.expected.admits(actual) {
            return Err(StoreError::VersionConflict {
                stream: condition.stream.clone(),
                expected: condition.expected,
                actual: StreamState(actual),
                role: StreamRole::Condition,
            });
        }
    }
    // Writes apply in order: a stream named again sees the versions its earlier writes added.
    let mut written: std::collections::HashMap<&crate::event::StreamId, u64> = std::collections::HashMap::new();
    let mut current = Vec::with_capacity(request.writes.len());
    for write in &request.writes {
        let actual = match written.get(&write.stream) {
            Some(last) => Some(*last),
            None => version_of(&write.stream)?,
        };
        if !write.expected.admits(actual) {
            return Err(StoreError::VersionConflict {
                stream: write.stream.clone(),
                expected: write.expected,
                actual: StreamState(actual),
                role: StreamRole::Written,
            });
        }
        current.push(actual);
        if let Some(events) = u64::try_from(write.events.len()).ok().filter(|n| *n > 0) {
            written.insert(&write.stream, actual.map_or(events - 1, |v| v + events));
        }
    }
    Ok(current)
}

/// The bulk-load rules that depend on the log. Returns whether the request is a bulk load.
/// `live`: the log already holds an event stamped at commit; `tail`: the last `recorded_at`.
pub fn check_bulk_load(request: &AppendRequest, live: bool, tail: Timestamp) -> Result<bool, StoreError> {
    let first = request.writes.iter().flat_map(|w| w.events.first()).find_map(|e| e.recorded_at);
    let Some(first) = first else { return Ok(false) };
    if live {
        return Err(StoreError::InvalidInput(
            "a bulk load may supply recorded_at only into an empty log (or one holding only bulk-loaded events); this log already has events stamped at commit".into(),
        ));
    }
    if first < tail {
        return Err(StoreError::InvalidInput(format!(
            "supplied recorded_at {first} is before the log's last event ({tail})"
        )));
    }
    Ok(true)
}

/// Refuses a read asking for more than `max_page_events` (every backend's reads).
pub fn check_page(limits: &StoreLimits, max_count: usize) -> Result<(), StoreError> {
    if max_count > limits.max_page_events {
        return Err(limit(Limit::MaxPageEvents, max_count, limits.max_page_events));
    }
    Ok(())
}

/// The inclusive stream version a stream read starts at, as SQL stores it: `from`, or the
/// start (forward) or the end (backward) of the stream.
pub fn stream_read_start(direction: crate::store::Direction, from: Option<u64>) -> i64 {
    match (direction, from) {
        (crate::store::Direction::Forward, None) => 0,
        (crate::store::Direction::Backward, None) => i64::MAX,
        (_, Some(version)) => i64::try_from(version).unwrap_or(i64::MAX),
    }
}
