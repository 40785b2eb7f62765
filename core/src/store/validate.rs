//! Checks an append request against the envelope rules and the store's limits before it
//! reaches a backend's writer, so a bad request costs the writer nothing and changes nothing.

use std::collections::HashSet;

use serde::de::IgnoredAny;

use crate::event::validate_event_type;
use crate::store::{AppendRequest, Limit, StoreError, StoreLimits};
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

    let mut seen = HashSet::with_capacity(stream_count);
    for write in &request.writes {
        if !seen.insert(write.stream.as_str()) {
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
            if !event.metadata.source.may_supply_recorded_at() {
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
    if supplied != 0 && supplied != event_count {
        return Err(StoreError::InvalidInput(
            "either every event of a bulk load supplies recorded_at, or none does".into(),
        ));
    }
    Ok(())
}
