//! The event envelope: what a caller hands the store ([`NewEvent`]) and what the store hands
//! back ([`EventRecord`]). The data payload is kept as the exact JSON bytes received; the store
//! never re-serialises it, so its hash is stable across backends and releases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::Hash;
use crate::time::Timestamp;

/// Longest stream id, in bytes of UTF-8.
pub const MAX_STREAM_ID_BYTES: usize = 256;
/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;
/// Longest metadata text field (principal, token id, correlation id, causation id), in bytes.
pub const MAX_METADATA_FIELD_BYTES: usize = 256;

/// Why a stream id, event type or metadata field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum EnvelopeError {
    #[error("stream id must not be empty")]
    /// Stream id must not be empty.
    EmptyStreamId,
    #[error("stream id is {bytes} bytes long; the bound is {MAX_STREAM_ID_BYTES} (max_stream_id_bytes)")]
    /// Stream id is … bytes long; the bound is … (max_stream_id_bytes).
    StreamIdTooLong { bytes: usize },
    #[error("stream id must not contain control characters or whitespace: {0:?}")]
    /// Stream id must not contain control characters or whitespace: ….
    StreamIdCharacters(String),
    #[error("event type must not be empty")]
    /// Event type must not be empty.
    EmptyEventType,
    #[error("event type is {bytes} bytes long; the bound is {MAX_EVENT_TYPE_BYTES} (max_event_type_bytes)")]
    /// Event type is … bytes long; the bound is … (max_event_type_bytes).
    EventTypeTooLong { bytes: usize },
    #[error("event type {0:?} may hold only ASCII letters, digits and . _ - : / and must start with a letter or digit")]
    /// Event type … may hold only ASCII letters, digits and . _ - : / and must start with a letter or digit.
    EventTypeCharacters(String),
    #[error(
        "metadata field {field} is {bytes} bytes long; the bound is {MAX_METADATA_FIELD_BYTES} (max_metadata_field_bytes)"
    )]
    MetadataFieldTooLong { field: &'static str, bytes: usize },
    #[error("metadata field {field} must not be empty")]
    /// Metadata field … must not be empty.
    EmptyMetadataField { field: &'static str },
    #[error("unknown event source {0:?}; expected one of api, cli, webhook, fixture, import, migration, system")]
    /// Unknown event source …; expected one of api, cli, webhook, fixture, import, migration, system.
    UnknownSource(String),
}

/// A short string kept inline (up to 24 bytes) rather than on the heap: a record's event
/// type, principal and correlation id, and a CI snapshot's name and version label. A rebuild
/// reads millions of records (each `String` was an allocation made on a reader's thread and
/// freed on another) and copies a snapshot per update (issue 15, part 6). Dereferences to
/// `str` like a `String`; serialises as a string.
pub type Text = compact_str::CompactString;

/// Whether `text` holds a control or whitespace character. Stream ids are checked on every
/// read of the log, and almost all are ASCII: for ASCII, control characters and whitespace
/// are exactly the bytes up to the space and DEL.
fn has_control_or_whitespace(text: &str) -> bool {
    // One pass over the bytes: printable ASCII is accepted as it is read, anything else
    // (a control byte, or the first byte of a non-ASCII character) decides or falls back.
    for (at, b) in text.bytes().enumerate() {
        if b > b' ' && b < 0x7f {
            continue;
        }
        if b.is_ascii() {
            return true; // a control character, a space or DEL
        }
        return text[at..].chars().any(|c| c.is_control() || c.is_whitespace());
    }
    false
}

/// A validated stream id: non-empty, at most [`MAX_STREAM_ID_BYTES`], no whitespace or
/// control characters (so ids print and parse unambiguously in logs, CLIs and URLs).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(std::sync::Arc<str>);

impl StreamId {
    /// Validates `id` as a stream id. (Shared, not copied, when cloned: stream ids are cloned
    /// on every command's read and append.)
    pub fn new(id: impl AsRef<str>) -> Result<Self, EnvelopeError> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(EnvelopeError::EmptyStreamId);
        }
        if id.len() > MAX_STREAM_ID_BYTES {
            return Err(EnvelopeError::StreamIdTooLong { bytes: id.len() });
        }
        if has_control_or_whitespace(id) {
            return Err(EnvelopeError::StreamIdCharacters(id.to_owned()));
        }
        Ok(StreamId(id.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = EnvelopeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        StreamId::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0.to_string()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", self.0)
    }
}

/// Checks an event type name (`ci.registered`, `change.approved`, ...).
pub fn validate_event_type(event_type: &str) -> Result<(), EnvelopeError> {
    if event_type.is_empty() {
        return Err(EnvelopeError::EmptyEventType);
    }
    if event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(EnvelopeError::EventTypeTooLong { bytes: event_type.len() });
    }
    let mut chars = event_type.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
    if !first_ok || !rest_ok {
        return Err(EnvelopeError::EventTypeCharacters(event_type.to_owned()));
    }
    Ok(())
}

/// Where an event entered the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The HTTP API.
    Api,
    /// The command line.
    Cli,
    /// A webhook from a tool.
    Webhook,
    /// The fixtures' generator.
    Fixture,
    /// An import.
    Import,
    /// A migration between backends.
    Migration,
    /// The engine itself.
    System,
}

impl Source {
    /// Every value, in declaration order.
    pub const ALL: [Source; 7] =
        [Source::Api, Source::Cli, Source::Webhook, Source::Fixture, Source::Import, Source::Migration, Source::System];

    /// The value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Cli => "cli",
            Source::Webhook => "webhook",
            Source::Fixture => "fixture",
            Source::Import => "import",
            Source::Migration => "migration",
            Source::System => "system",
        }
    }

    /// Only these sources may carry their own `recorded_at` (a bulk load into an empty store).
    pub fn may_supply_recorded_at(self) -> bool {
        matches!(self, Source::Fixture | Source::Import | Source::Migration)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|source| source.as_str() == s)
            .ok_or_else(|| EnvelopeError::UnknownSource(s.to_owned()))
    }
}

/// Who did it: a principal (person or system) and, when a token was used, which one.
/// Segregation-of-duties rules compare principals, never tokens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The principal.
    pub principal: Text,
    /// The token.
    pub token_id: Option<String>,
}

impl Actor {
    /// The engine itself (bootstrap, migrations, housekeeping).
    pub fn system() -> Self {
        Actor { principal: Text::const_new("system"), token_id: None }
    }

    /// A principal acting without a token (the CLI, the engine).
    pub fn principal(name: impl Into<Text>) -> Self {
        Actor { principal: name.into(), token_id: None }
    }
}

/// Metadata carried by every event. Every field is part of the hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Who acted.
    pub actor: Actor,
    /// The request it came from.
    pub correlation_id: Option<Text>,
    /// The event that caused it.
    pub causation_id: Option<String>,
    /// Where the command came from (API, CLI, webhook, ...).
    pub source: Source,
    /// When an external tool says the thing happened (a CDEvent's timestamp), if it said.
    pub occurred_at: Option<Timestamp>,
}

impl Metadata {
    /// A new one.
    pub fn new(actor: Actor, source: Source) -> Self {
        Metadata { actor, correlation_id: None, causation_id: None, source, occurred_at: None }
    }

    /// With the id of the request it came from.
    pub fn with_correlation_id(mut self, id: impl Into<Text>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// With the id of the event that caused it.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Checks it, naming what is wrong.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_field("actor.principal", Some(&self.actor.principal), false)?;
        check_field("actor.token_id", self.actor.token_id.as_deref(), true)?;
        check_field("correlation_id", self.correlation_id.as_deref(), true)?;
        check_field("causation_id", self.causation_id.as_deref(), true)?;
        Ok(())
    }
}

fn check_field(field: &'static str, value: Option<&str>, optional: bool) -> Result<(), EnvelopeError> {
    match value {
        None if optional => Ok(()),
        None => Err(EnvelopeError::EmptyMetadataField { field }),
        Some("") => Err(EnvelopeError::EmptyMetadataField { field }),
        Some(text) if text.len() > MAX_METADATA_FIELD_BYTES => {
            Err(EnvelopeError::MetadataFieldTooLong { field, bytes: text.len() })
        }
        Some(_) => Ok(()),
    }
}

/// An event to append. The store assigns position, stream version, `recorded_at` (unless this
/// is a bulk load) and, when `event_id` is `None`, the id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// The event's id.
    pub event_id: Option<Uuid>,
    /// The event type.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The JSON payload exactly as received. Checked to be JSON; never re-serialised.
    pub data: Vec<u8>,
    /// Actor, correlation and causation.
    pub metadata: Metadata,
    /// Only for a bulk load into an empty store (source fixture, import or migration).
    pub recorded_at: Option<Timestamp>,
}

impl NewEvent {
    /// An event whose payload is the given raw bytes (validated as JSON by the store).
    pub fn raw(event_type: impl Into<String>, data: impl Into<Vec<u8>>, metadata: Metadata) -> Self {
        NewEvent {
            event_id: None,
            event_type: event_type.into(),
            schema_version: 1,
            data: data.into(),
            metadata,
            recorded_at: None,
        }
    }

    /// An event whose payload is `value` serialised as compact JSON.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
        metadata: Metadata,
    ) -> Result<Self, serde_json::Error> {
        Ok(NewEvent::raw(event_type, serde_json::to_vec(value)?, metadata))
    }

    /// With its id.
    pub fn with_event_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// With its payload's schema version.
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// With the time it carries (bulk loads only).
    pub fn with_recorded_at(mut self, at: Timestamp) -> Self {
        self.recorded_at = Some(at);
        self
    }
}

/// A record's place in the hash chain, without its payload or metadata: what a follower of
/// the chain alone (the evidence tree) reads ([`crate::EventStore::read_links`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainLink {
    /// Its position.
    pub position: u64,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its type.
    pub event_type: Text,
    /// Its chain hash.
    pub hash: Hash,
}

impl From<&EventRecord> for ChainLink {
    fn from(record: &EventRecord) -> Self {
        ChainLink {
            position: record.position,
            stream_id: record.stream_id.clone(),
            event_type: record.event_type.clone(),
            hash: record.hash,
        }
    }
}

/// What folding an event into a read model reads of its record: its place, type, payload,
/// principal, correlation id, time, hash and commit. A rebuild reads only these (11 of the 22
/// columns in SQLite: each column read costs SQLite a copy and the row's decoding three or
/// four calls; issue 15, part 6). An [`EventRecord`] hands its own out through `Deref`, so code
/// that folds takes `&FoldRecord` and is given either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldRecord {
    /// Global position: gapless, the first event is 1.
    pub position: u64,
    /// The stream.
    pub stream_id: StreamId,
    /// Version within its stream: the first event of a stream is 0.
    pub stream_version: u64,
    /// The event type.
    pub event_type: Text,
    /// The payload bytes exactly as they were appended.
    pub data: Vec<u8>,
    /// Who acted ([`Actor::principal`]).
    pub principal: Text,
    /// The request it came from ([`Metadata::correlation_id`]).
    pub correlation_id: Option<Text>,
    /// When the store committed it (or, for a bulk load, the time the loader supplied).
    pub recorded_at: Timestamp,
    /// The blake3 hash.
    pub hash: Hash,
    /// The atomic append (commit) it was part of: events of one append have consecutive
    /// positions and share this. Not covered by the chain (it adds nothing an attacker could
    /// use: it only says where reads may stop); logs written before it was recorded read each
    /// event as its own commit.
    pub commit: CommitSpan,
}

/// An event as stored: immutable, positioned, chained. Its [`FoldRecord`] fields read as its
/// own (`record.position`) through `Deref`; the rest of its [`Metadata`] (token, causation, source,
/// occurrence time), its id, schema version, previous hash and seal are read by the chain's
/// checks, exports and audit views. [`EventRecord::metadata`] gathers the metadata whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// Everything a fold reads.
    pub fold: FoldRecord,
    /// The token the actor used, if any ([`Actor::token_id`]).
    pub token_id: Option<String>,
    /// The event that caused it ([`Metadata::causation_id`]).
    pub causation_id: Option<String>,
    /// Where the command came from ([`Metadata::source`]).
    pub source: Source,
    /// When an external tool says the thing happened ([`Metadata::occurred_at`]).
    pub occurred_at: Option<Timestamp>,
    /// The event's id.
    pub event_id: Uuid,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The previous event's hash.
    pub prev_hash: Hash,
    /// How the chain commits to the payload: its salt, or what is left after a redaction.
    pub seal: PayloadSeal,
}

impl EventRecord {
    /// Its metadata as it was appended, gathered from the fold's part (actor, correlation)
    /// and the record's own (causation, source, occurrence time).
    pub fn metadata(&self) -> Metadata {
        Metadata {
            actor: Actor { principal: self.fold.principal.clone(), token_id: self.token_id.clone() },
            correlation_id: self.fold.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            source: self.source,
            occurred_at: self.occurred_at,
        }
    }
}

impl std::ops::Deref for EventRecord {
    type Target = FoldRecord;

    fn deref(&self) -> &FoldRecord {
        &self.fold
    }
}

impl std::ops::DerefMut for EventRecord {
    fn deref_mut(&mut self) -> &mut FoldRecord {
        &mut self.fold
    }
}

/// The chain encoding an event was hashed with (see `chain`). Version 1 commits to the
/// payload's plain hash; version 2 to a salted one, so an erased value cannot be found again
/// by hashing guesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChainEncoding {
    /// `cmdb.event.v1`: blake3(payload).
    V1,
    /// `cmdb.event.v2`: blake3 keyed with a random 32-byte salt, over the payload.
    V2,
}

impl ChainEncoding {
    /// The number stored and exported (1 or 2).
    pub fn number(self) -> u8 {
        match self {
            ChainEncoding::V1 => 1,
            ChainEncoding::V2 => 2,
        }
    }

    /// From the stored number.
    pub fn from_number(number: i64) -> Option<ChainEncoding> {
        match number {
            1 => Some(ChainEncoding::V1),
            2 => Some(ChainEncoding::V2),
            _ => None,
        }
    }
}

/// Bytes of a payload's salt.
pub const SALT_BYTES: usize = 32;

/// What the chain hashes in place of the payload, and what a reader needs to recompute it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadSeal {
    /// Chain version 1 (logs written before salts): the commitment is blake3(payload).
    Plain,
    /// Chain version 2: the commitment is blake3 keyed with this salt over the payload. The salt
    /// is stored with the payload and erased with it.
    Salted([u8; SALT_BYTES]),
    /// The payload was (partly) erased by a redaction: the commitment computed before, kept so
    /// the chain still verifies, and the position of the redaction record that erased it.
    Redacted {
        /// The encoding the event was hashed with.
        encoding: ChainEncoding,
        /// The payload commitment as it was before the erasure.
        commitment: Hash,
        /// The position of the `redaction.applied` record.
        record: u64,
    },
}

impl PayloadSeal {
    /// The chain encoding.
    pub fn encoding(&self) -> ChainEncoding {
        match self {
            PayloadSeal::Plain => ChainEncoding::V1,
            PayloadSeal::Salted(_) => ChainEncoding::V2,
            PayloadSeal::Redacted { encoding, .. } => *encoding,
        }
    }

    /// The position of the redaction record, when the payload was redacted.
    pub fn redaction_record(&self) -> Option<u64> {
        match self {
            PayloadSeal::Redacted { record, .. } => Some(*record),
            _ => None,
        }
    }

    /// The stored columns: chain version, salt, kept commitment, redaction record.
    pub fn to_columns(&self) -> SealColumns {
        match self {
            PayloadSeal::Plain => SealColumns::default(),
            PayloadSeal::Salted(salt) => {
                SealColumns { chain_version: Some(2), salt: Some(salt.to_vec()), ..SealColumns::default() }
            }
            PayloadSeal::Redacted { encoding, commitment, record } => SealColumns {
                chain_version: Some(i64::from(encoding.number())),
                salt: None,
                commitment: Some(commitment.0.to_vec()),
                redacted_by: i64::try_from(*record).ok(),
            },
        }
    }

    /// Decodes the stored columns (all NULL in a log written before salts: chain version 1).
    /// Both backends read them so.
    /// The blobs may be borrowed from the row being read (`SealColumns<&[u8]>`): a catch-up
    /// reads millions of rows, and a copy of each salt was an allocation per row.
    pub fn from_columns<B: AsRef<[u8]>>(columns: SealColumns<B>) -> Result<PayloadSeal, String> {
        let SealColumns { chain_version, salt, commitment, redacted_by } = columns;
        let encoding = match chain_version {
            None => ChainEncoding::V1,
            Some(number) => {
                ChainEncoding::from_number(number).ok_or_else(|| format!("unknown chain version {number}"))?
            }
        };
        match (salt, commitment, redacted_by) {
            (None, None, None) if encoding == ChainEncoding::V1 => Ok(PayloadSeal::Plain),
            (Some(salt), None, None) if encoding == ChainEncoding::V2 => {
                let salt = salt.as_ref();
                let salt: [u8; SALT_BYTES] = salt.try_into().map_err(|_| format!("a salt of {} bytes", salt.len()))?;
                Ok(PayloadSeal::Salted(salt))
            }
            (None, Some(commitment), Some(record)) => {
                let commitment = commitment.as_ref();
                let commitment: [u8; 32] =
                    commitment.try_into().map_err(|_| format!("a commitment of {} bytes", commitment.len()))?;
                let record = u64::try_from(record).map_err(|_| "a negative redaction record".to_string())?;
                Ok(PayloadSeal::Redacted { encoding, commitment: Hash(commitment), record })
            }
            _ => Err("the payload's seal columns do not fit together".to_string()),
        }
    }
}

/// The seal as `cmdb export` and proofs write it: `{"chainVersion": 2, "salt": hex}`, or
/// `{"chainVersion": n, "commitment": hex, "redactedBy": position}` after a redaction, or
/// `{"chainVersion": 1}`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SealText {
    chain_version: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commitment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redacted_by: Option<u64>,
}

impl Serialize for PayloadSeal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = match self {
            PayloadSeal::Plain => SealText { chain_version: 1, salt: None, commitment: None, redacted_by: None },
            PayloadSeal::Salted(salt) => {
                SealText { chain_version: 2, salt: Some(hex::encode(salt)), commitment: None, redacted_by: None }
            }
            PayloadSeal::Redacted { encoding, commitment, record } => SealText {
                chain_version: encoding.number(),
                salt: None,
                commitment: Some(commitment.to_hex()),
                redacted_by: Some(*record),
            },
        };
        text.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PayloadSeal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = SealText::deserialize(deserializer)?;
        let bytes = |hex_text: &str| hex::decode(hex_text).map_err(D::Error::custom);
        PayloadSeal::from_columns(SealColumns {
            chain_version: Some(i64::from(text.chain_version)),
            salt: text.salt.as_deref().map(bytes).transpose()?,
            commitment: text.commitment.as_deref().map(bytes).transpose()?,
            redacted_by: text.redacted_by.map(|p| i64::try_from(p).unwrap_or(-1)),
        })
        .map_err(D::Error::custom)
    }
}

/// The seal as the stores keep it: four nullable columns. `B` holds the blobs: owned to
/// write them, borrowed from the row to read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealColumns<B = Vec<u8>> {
    /// `chain_version`: NULL is 1.
    pub chain_version: Option<i64>,
    /// `salt`: 32 bytes for an unredacted version 2 payload.
    pub salt: Option<B>,
    /// `commitment`: the kept commitment of a redacted payload.
    pub commitment: Option<B>,
    /// `redacted_by`: the position of the redaction record.
    pub redacted_by: Option<i64>,
}

/// The positions of one atomic append: `first_position ..= first_position + events - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommitSpan {
    /// The first event's position.
    pub first_position: u64,
    /// How many events the append wrote (at least 1).
    pub events: u32,
}

impl CommitSpan {
    /// The span of one event alone (logs written before spans were recorded).
    pub fn single(position: u64) -> CommitSpan {
        CommitSpan { first_position: position, events: 1 }
    }

    /// The last event's position: reads there see the whole append.
    pub fn last_position(&self) -> u64 {
        self.first_position + u64::from(self.events.max(1)) - 1
    }

    /// Decodes the two stored columns of the event at `position` (both NULL in a log written
    /// before commits were recorded: the event is its own commit). Both backends read them so.
    pub fn from_columns(position: u64, first: Option<i64>, events: Option<i64>) -> Result<CommitSpan, String> {
        match (first, events) {
            (Some(first), Some(events)) => Ok(CommitSpan {
                first_position: u64::try_from(first).map_err(|_| "negative commit position".to_string())?,
                events: u32::try_from(events).map_err(|_| "commit size out of range".to_string())?,
            }),
            (None, None) => Ok(CommitSpan::single(position)),
            _ => Err("half a commit recorded".to_string()),
        }
    }

    /// Whether `position` is inside the span.
    pub fn contains(&self, position: u64) -> bool {
        position >= self.first_position && position <= self.last_position()
    }
}

impl FoldRecord {
    /// The payload as text. Stored payloads were checked to be JSON, hence UTF-8; a tampered
    /// payload that is not UTF-8 yields `None` (and fails `verify`).
    pub fn data_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }

    /// The payload decoded.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_checked_at_the_bounds() {
        assert_eq!(StreamId::new(""), Err(EnvelopeError::EmptyStreamId));
        assert!(StreamId::new("a".repeat(MAX_STREAM_ID_BYTES)).is_ok());
        assert_eq!(
            StreamId::new("a".repeat(MAX_STREAM_ID_BYTES + 1)),
            Err(EnvelopeError::StreamIdTooLong { bytes: MAX_STREAM_ID_BYTES + 1 })
        );
        assert!(StreamId::new("ci 1").is_err());
        assert!(StreamId::new("ci\n1").is_err());
        assert!(StreamId::new("ci-ünïcode/1").is_ok());
    }

    #[test]
    fn the_ascii_check_of_stream_ids_is_the_character_rule() {
        let by_chars = |text: &str| text.chars().any(|c| c.is_control() || c.is_whitespace());
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            for text in [c.to_string(), format!("ci-{c}-1")] {
                assert_eq!(has_control_or_whitespace(&text), by_chars(&text), "{c:?}");
            }
        }
        for text in ["ci-1\u{2028}", "\u{00a0}", "ci-ünïcode/1", "\u{85}x"] {
            assert_eq!(has_control_or_whitespace(text), by_chars(text), "{text:?}");
        }
    }

    #[test]
    fn stream_ids_deserialise_through_validation() {
        let bad: Result<StreamId, _> = serde_json::from_str("\"\"");
        assert!(bad.is_err());
        let good: StreamId = serde_json::from_str("\"ci-1\"").expect("valid");
        assert_eq!(good.as_str(), "ci-1");
    }

    #[test]
    fn event_types_are_checked() {
        assert!(validate_event_type("ci.registered").is_ok());
        assert!(validate_event_type("").is_err());
        assert!(validate_event_type(".x").is_err());
        assert!(validate_event_type("ci registered").is_err());
        assert!(validate_event_type(&"a".repeat(MAX_EVENT_TYPE_BYTES)).is_ok());
        assert!(validate_event_type(&"a".repeat(MAX_EVENT_TYPE_BYTES + 1)).is_err());
    }

    #[test]
    fn sources_round_trip_through_text() {
        for source in Source::ALL {
            assert_eq!(source.as_str().parse::<Source>(), Ok(source));
        }
        assert!("nonsense".parse::<Source>().is_err());
    }

    #[test]
    fn metadata_fields_are_bounded() {
        let mut metadata = Metadata::new(Actor::principal("alice"), Source::Api);
        assert!(metadata.validate().is_ok());
        metadata.correlation_id = Some("x".repeat(MAX_METADATA_FIELD_BYTES).into());
        assert!(metadata.validate().is_ok());
        metadata.correlation_id = Some("x".repeat(MAX_METADATA_FIELD_BYTES + 1).into());
        assert!(matches!(
            metadata.validate(),
            Err(EnvelopeError::MetadataFieldTooLong { field: "correlation_id", .. })
        ));
        metadata.correlation_id = None;
        metadata.actor.principal = Text::default();
        assert!(metadata.validate().is_err());
    }
}
