//! What offline CLI commands share: who the shell acts as, opening an existing log, an event
//! as `cmdb export` writes it, and telling a server running on the same data directory to
//! catch up with what they wrote.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, bail};
use cmdb_core::{EventRecord, EventStore, Timestamp};
use serde::Serialize;

use crate::opening::open_location;
use crate::settings::DataDir;

use crate::server::running_server;

/// How long a CLI command waits for a running server to apply its change.
const SERVER_NOTIFY_TIMEOUT_MS: u64 = 10_000;

/// The principal of commands run from this shell.
pub(crate) fn local_principal() -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into());
    format!("local:{user}")
}

/// Asks a server running on this data directory to apply the log up to `position`.
pub(crate) async fn notify_server(data_dir: &Path, position: u64) -> anyhow::Result<()> {
    let Some(server) = running_server(data_dir) else { return Ok(()) };
    let url = format!("http://{}/readyz?minPosition={position}", server.address);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(SERVER_NOTIFY_TIMEOUT_MS)).build()?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => bail!(
            "the change is recorded at position {position}, but the server at {} has not applied it: {}",
            server.address,
            response.text().await.unwrap_or_default()
        ),
        // A stale server file: nothing is listening, so nothing can be out of date.
        Err(error) if error.is_connect() => Ok(()),
        Err(error) => bail!(
            "the change is recorded at position {position}, but the server at {} did not answer: {error}",
            server.address
        ),
    }
}

/// Opens an existing log (refusing to create an embedded one where the user meant to read
/// one; a PostgreSQL schema is created empty if missing).
pub(crate) async fn open_existing(data: &DataDir, verify_tail_on_open: bool) -> anyhow::Result<Arc<dyn EventStore>> {
    let location = data.location()?;
    if let Some(path) = location.sqlite_log_file()
        && !path.is_file()
    {
        bail!("no event log at {} (is --data-dir or --store right?)", path.display());
    }
    Ok(open_location(&location, verify_tail_on_open).await?.as_dyn())
}

/// One exported line. `data` is the stored payload, embedded byte for byte.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportedEvent<'a> {
    position: u64,
    stream_id: &'a str,
    stream_version: u64,
    event_id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    data: &'a serde_json::value::RawValue,
    metadata: cmdb_core::Metadata,
    recorded_at: Timestamp,
    prev_hash: String,
    hash: String,
    /// The atomic append it was part of (not covered by the chain).
    commit: ExportedCommit,
    /// How the chain commits to the payload: its salt, or the kept commitment of a redacted one.
    seal: &'a cmdb_core::PayloadSeal,
}

/// An event's commit in an exported line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportedCommit {
    first_position: u64,
    events: u32,
}

pub(crate) fn export_line(record: &EventRecord) -> anyhow::Result<String> {
    let text = std::str::from_utf8(&record.data)
        .with_context(|| format!("the payload at position {} is not UTF-8 (run `cmdb verify`)", record.position))?;
    let data: &serde_json::value::RawValue = serde_json::from_str(text)
        .with_context(|| format!("the payload at position {} is not JSON (run `cmdb verify`)", record.position))?;
    let line = ExportedEvent {
        position: record.position,
        stream_id: record.stream_id.as_str(),
        stream_version: record.stream_version,
        event_id: record.event_id.to_string(),
        event_type: &record.event_type,
        schema_version: record.schema_version,
        data,
        metadata: record.metadata(),
        recorded_at: record.recorded_at,
        prev_hash: record.prev_hash.to_hex(),
        hash: record.hash.to_hex(),
        commit: ExportedCommit { first_position: record.commit.first_position, events: record.commit.events },
        seal: &record.seal,
    };
    Ok(serde_json::to_string(&line)?)
}
