//! Runs CI commands against a store: load the streams a decision needs, decide, append every
//! written stream at the version read and every referenced stream as a condition; on a
//! conflict, load again and re-decide (at most [`MAX_COMMAND_ATTEMPTS`]).

use crate::Error;
use crate::event::{EventRecord, Metadata, StreamId};
use crate::store::{AppendOutcome, AppendRequest, Direction, EventStore, ExpectedVersion, StoreError};
use crate::time::Timestamp;

use super::{CiCommand, CiEvent, CiState, Loaded, NameState, RelState, decide, needs};

/// Re-decisions after a conflict before giving up.
pub const MAX_COMMAND_ATTEMPTS: usize = 8;
/// Rounds of loading (a withdrawal loads the CI, then its relationships and their other ends).
const MAX_LOAD_ROUNDS: usize = 4;

/// Who asks, and, for a bulk load into an empty log, when it happened.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub metadata: Metadata,
    /// Only for fixtures and imports into an empty log (see the store's bulk-load rule).
    pub recorded_at: Option<Timestamp>,
}

impl CommandContext {
    pub fn new(metadata: Metadata) -> Self {
        CommandContext { metadata, recorded_at: None }
    }
}

pub(crate) async fn read_whole_stream(store: &dyn EventStore, stream: &StreamId) -> Result<Vec<EventRecord>, Error> {
    let page = store.limits().max_page_events;
    let mut records: Vec<EventRecord> = Vec::new();
    loop {
        let from = records.last().map_or(0, |r| r.stream_version + 1);
        let batch = store.read_stream(stream, Direction::Forward, Some(from), page).await?;
        if batch.is_empty() {
            return Ok(records);
        }
        records.extend(batch);
    }
}

async fn load(store: &dyn EventStore, command: &CiCommand) -> Result<Loaded, Error> {
    // The schema first: it declares the custom classes the other streams may name.
    let mut loaded = Loaded { schema: super::registry::load(store).await?, ..Loaded::default() };
    for _ in 0..MAX_LOAD_ROUNDS {
        let wanted = needs(command, &loaded);
        if wanted.is_empty() {
            break;
        }
        for id in wanted.cis {
            let mut state = CiState::default();
            for record in read_whole_stream(store, &id.stream()).await? {
                state.apply(&CiEvent::from_record(&record)?, record.stream_version);
            }
            loaded.cis.insert(id, state);
        }
        for id in wanted.rels {
            let mut state = RelState::default();
            for record in read_whole_stream(store, &id.stream()).await? {
                state.apply(&CiEvent::from_record(&record)?, record.stream_version);
            }
            loaded.rels.insert(id, state);
        }
        for key in wanted.names {
            let mut state = NameState::default();
            for record in read_whole_stream(store, &key.stream()).await? {
                state.apply(&CiEvent::from_record(&record)?, record.stream_version);
            }
            loaded.names.insert(key, state);
        }
        for id in wanted.changes {
            loaded.changes.insert(id, crate::change::service::load_control(store, id).await?);
        }
    }
    Ok(loaded)
}

fn version_of(loaded: &Loaded, stream: &StreamId) -> Option<u64> {
    let text = stream.as_str();
    if let Some(state) = loaded.cis.iter().find(|(id, _)| id.stream() == *stream).map(|(_, s)| s) {
        return state.version;
    }
    if let Some(state) = loaded.rels.iter().find(|(id, _)| id.stream() == *stream).map(|(_, s)| s) {
        return state.version;
    }
    if text.starts_with("ci-name-") {
        return loaded.names.iter().find(|(key, _)| key.stream() == *stream).and_then(|(_, s)| s.version);
    }
    if let Some((_, control)) = loaded.changes.iter().find(|(id, _)| crate::change::state_stream(**id) == *stream) {
        return control.version;
    }
    None
}

fn expected(version: Option<u64>) -> ExpectedVersion {
    version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
}

/// Executes one command; answers with where its events landed.
pub async fn execute(
    store: &dyn EventStore,
    command: &CiCommand,
    context: &CommandContext,
) -> Result<AppendOutcome, Error> {
    for _ in 0..MAX_COMMAND_ATTEMPTS {
        let loaded = load(store, command).await?;
        let decision = decide(command, &loaded)?;
        let mut request = AppendRequest::new();
        for (stream, events) in &decision.writes {
            let new_events = events
                .iter()
                .map(|event| {
                    let mut new = event.to_new_event(context.metadata.clone());
                    new.recorded_at = context.recorded_at;
                    new
                })
                .collect();
            request = request.write(stream.clone(), expected(version_of(&loaded, stream)), new_events);
        }
        // The registry the command was validated against must not change underneath it.
        request = request.condition(super::registry::schema_stream(), expected(loaded.schema.version));
        for stream in &decision.conditions {
            if decision.writes.iter().any(|(written, _)| written == stream) {
                continue;
            }
            if request.conditions.iter().any(|c| c.stream == *stream) {
                continue;
            }
            request = request.condition(stream.clone(), expected(version_of(&loaded, stream)));
        }
        match store.append(request).await {
            Ok(outcome) => return Ok(outcome),
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(Error::Contended { stream: "ci".into(), attempts: MAX_COMMAND_ATTEMPTS })
}
