//! The PostgreSQL backend's tables, how a row becomes an [`EventRecord`], and the checks made
//! when a log is opened. The logical schema is the embedded store's (same columns, same
//! meaning), so a log copied between backends keeps its positions, bytes and hashes.

use tokio_postgres::Row;
use uuid::Uuid;

use crate::chain::Hash;
use crate::event::{CommitSpan, EventRecord, FoldRecord, PayloadSeal, SealColumns, Source, StreamId};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The log format this build writes and reads (kept in `meta`). Format 3 added each payload's
/// seal (`chain_version`, `salt`, `commitment`, `redacted_by`); format 2 each event's commit
/// (`commit_first`, `commit_size`); older logs are upgraded in place when opened.
pub const FORMAT_VERSION: i64 = 3;
/// Upgrades a format 1 log (its events then read as commits of one event each).
pub const UPGRADE_FROM_FORMAT_1: &str = "ALTER TABLE events ADD COLUMN IF NOT EXISTS commit_first bigint, \
     ADD COLUMN IF NOT EXISTS commit_size bigint; UPDATE meta SET value = '2' WHERE key = 'format_version'";
/// Upgrades a format 2 log (its events then read as chain version 1).
pub const UPGRADE_FROM_FORMAT_2: &str = "ALTER TABLE events ADD COLUMN IF NOT EXISTS chain_version bigint, \
     ADD COLUMN IF NOT EXISTS salt bytea, ADD COLUMN IF NOT EXISTS commitment bytea, \
     ADD COLUMN IF NOT EXISTS redacted_by bigint; UPDATE meta SET value = '3' WHERE key = 'format_version'";
/// `meta.application`: marks a schema as a cmdb event log.
pub const APPLICATION: &str = "cmdb-event-log";
/// The notification channel commits are announced on (the payload is the schema's name; a
/// notification is only a hint to read the head, never the data).
pub const CHANNEL: &str = "cmdb_log";

/// The tables, created when missing (under the schema's initialisation lock).
pub fn ddl(schema: &str) -> String {
    let schema = quote_identifier(schema);
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.events (
             position        bigint PRIMARY KEY,
             stream_id       text   NOT NULL,
             stream_version  bigint NOT NULL,
             event_id        bytea  NOT NULL,
             event_type      text   NOT NULL,
             schema_version  bigint NOT NULL,
             data            bytea  NOT NULL,
             actor_principal text   NOT NULL,
             actor_token     text,
             correlation_id  text,
             causation_id    text,
             source          text   NOT NULL,
             occurred_at     bigint,
             recorded_at     bigint NOT NULL,
             prev_hash       bytea  NOT NULL,
             hash            bytea  NOT NULL,
             commit_first    bigint,
             commit_size     bigint,
             chain_version   bigint,
             salt            bytea,
             commitment      bytea,
             redacted_by     bigint
         );
         CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream ON {schema}.events (stream_id, stream_version);
         CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON {schema}.events (event_id);
         CREATE TABLE IF NOT EXISTS {schema}.meta (key text PRIMARY KEY, value text NOT NULL);
         CREATE TABLE IF NOT EXISTS {schema}.head (
             singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             position    bigint NOT NULL,
             hash        bytea  NOT NULL,
             recorded_at bigint NOT NULL
         );"
    )
}

/// The columns of a [`FoldRecord`], first in every read of whole records so that one decoder
/// ([`fold_of`]) reads both.
macro_rules! fold_columns {
    () => {
        "position, stream_id, stream_version, event_type, data, actor_principal, correlation_id, recorded_at, hash, \
         commit_first, commit_size"
    };
}
/// What a projection's catch-up reads (`read_fold`): 11 of the 22 columns, in [`decode_fold_row`]'s order.
pub const FOLD_COLUMNS: &str = fold_columns!();
/// The columns of whole records, in [`decode_row`]'s order: the fold's, then the rest.
pub const SELECT_COLUMNS: &str = concat!(
    fold_columns!(),
    ", actor_token, causation_id, source, occurred_at, event_id, schema_version, prev_hash, chain_version, salt, \
     commitment, redacted_by"
);

/// Quotes an identifier for SQL (doubling any quote inside).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether a schema name is one we accept: lower-case letters, digits and `_`, 1 to 63 bytes,
/// not starting with a digit (so it means the same quoted or not, in `search_path` too).
pub fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// The advisory lock key of a schema's log: every writer of the log takes it per transaction.
pub fn lock_key(schema: &str) -> i64 {
    let digest = blake3::hash(format!("cmdb-log-writer:{schema}").as_bytes());
    let bytes = digest.as_bytes();
    i64::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
}

fn corrupt(position: i64, detail: impl Into<String>) -> StoreError {
    StoreError::Corruption { location: format!("position {position}"), detail: detail.into() }
}

/// Reads column `index` of `row` as `T`, naming the column if it cannot.
fn column<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r Row, index: usize) -> Result<T, String> {
    row.try_get(index).map_err(|e| format!("column {index}: {e}"))
}

/// Decodes the [`FOLD_COLUMNS`] at the start of a row.
fn fold_of(row: &Row, position: i64) -> Result<FoldRecord, String> {
    Ok(FoldRecord {
        position: u64::try_from(position).map_err(|_| "negative position".to_string())?,
        stream_id: StreamId::new(column::<String>(row, 1)?).map_err(|e| e.to_string())?,
        stream_version: u64::try_from(column::<i64>(row, 2)?).map_err(|_| "negative stream version".to_string())?,
        event_type: column::<&str>(row, 3)?.into(),
        data: column::<&[u8]>(row, 4)?.to_vec(),
        principal: column::<&str>(row, 5)?.into(),
        correlation_id: column::<Option<&str>>(row, 6)?.map(crate::Text::from),
        recorded_at: Timestamp::from_micros(column(row, 7)?),
        hash: Hash::from_slice(column(row, 8)?).ok_or_else(|| "hash is not 32 bytes".to_string())?,
        commit: CommitSpan::from_columns(u64::try_from(position).unwrap_or(0), column(row, 9)?, column(row, 10)?)?,
    })
}

/// Decodes one row of [`FOLD_COLUMNS`]. Any value that could not have been written by us is
/// corruption.
pub fn decode_fold_row(row: &Row) -> Result<FoldRecord, StoreError> {
    let position: i64 = row.try_get(0).map_err(|e| corrupt(-1, format!("position: {e}")))?;
    fold_of(row, position).map_err(|detail| corrupt(position, detail))
}

/// Decodes one row of [`SELECT_COLUMNS`]. Any value that could not have been written by us is
/// corruption.
pub fn decode_row(row: &Row) -> Result<EventRecord, StoreError> {
    let position: i64 = row.try_get(0).map_err(|e| corrupt(-1, format!("position: {e}")))?;
    let decoded = (|| -> Result<EventRecord, String> {
        Ok(EventRecord {
            fold: fold_of(row, position)?,
            token_id: column(row, 11)?,
            causation_id: column(row, 12)?,
            source: column::<&str>(row, 13)?.parse::<Source>().map_err(|e| e.to_string())?,
            occurred_at: column::<Option<i64>>(row, 14)?.map(Timestamp::from_micros),
            event_id: Uuid::from_slice(column(row, 15)?).map_err(|_| "event id is not 16 bytes".to_string())?,
            schema_version: u32::try_from(column::<i64>(row, 16)?)
                .map_err(|_| "schema version out of range".to_string())?,
            prev_hash: Hash::from_slice(column(row, 17)?).ok_or_else(|| "prev_hash is not 32 bytes".to_string())?,
            seal: PayloadSeal::from_columns(SealColumns::<Vec<u8>> {
                chain_version: column(row, 18)?,
                salt: column(row, 19)?,
                commitment: column(row, 20)?,
                redacted_by: column(row, 21)?,
            })?,
        })
    })();
    decoded.map_err(|detail| corrupt(position, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema_name("cmdb"));
        assert!(valid_schema_name("cmdb_test_01"));
        assert!(valid_schema_name(&"a".repeat(63)));
        assert!(!valid_schema_name(&"a".repeat(64)));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("1cmdb"));
        assert!(!valid_schema_name("cmdb; DROP TABLE x"));
        assert!(!valid_schema_name("Cmdb"));
        assert!(!valid_schema_name("cmdb-log"));
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_ne!(lock_key("cmdb"), lock_key("cmdb_other"));
        assert_eq!(lock_key("cmdb"), lock_key("cmdb"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
