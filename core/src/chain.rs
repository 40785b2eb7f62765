//! The tamper-evident hash chain (RC-1, CM-4).
//!
//! Every event stores the hash of its predecessor and its own hash, computed with blake3 over
//! a canonical encoding that any backend can reproduce byte for byte:
//!
//! ```text
//! "cmdb.event.v1" | "cmdb.event.v2"    domain tag, 13 bytes, no length prefix
//! prev_hash                            32 bytes (all zero before position 1)
//! position                             u64 big-endian
//! stream_id                            u32 BE length + UTF-8 bytes
//! stream_version                       u64 BE
//! event_id                             16 bytes (UUID, big-endian as printed)
//! event_type                           u32 BE length + bytes
//! schema_version                       u32 BE
//! commitment                           32 bytes: the payload's commitment (below)
//! actor.principal                      u32 BE length + bytes
//! actor.token_id                       option: 0x00, or 0x01 + u32 BE length + bytes
//! correlation_id                       option, as above
//! causation_id                         option, as above
//! source                               u32 BE length + bytes (`api`, `cli`, ...)
//! occurred_at                          option: 0x00, or 0x01 + i64 BE microseconds
//! recorded_at                          i64 BE microseconds since the Unix epoch, UTC
//! ```
//!
//! The payload's commitment is `blake3(data)` in version 1 and `blake3::keyed_hash(salt, data)`
//! in version 2, with a random 32-byte salt per payload stored beside it. Hashing a commitment
//! (not the payload) means a redaction of personal data can erase payload bytes, keep the
//! commitment, and the chain, the Merkle tree and every proof still verify. The salt is what
//! makes that safe: it is erased with the payload, so a kept version 2 commitment cannot be
//! matched against guesses ("is it alice@example.com?"). Version 1 events (logs written before
//! salts) keep verifying; their commitments could be matched so, which the redaction answer
//! says. Every event says its version (`EventRecord::seal`); the two differ only in the tag
//! and the commitment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{ChainEncoding, CommitSpan, EventRecord, Metadata, PayloadSeal, Source};
pub use crate::hash::{Hash, HashParseError};
use crate::time::Timestamp;

const DOMAIN_TAG_V1: &[u8] = b"cmdb.event.v1";
const DOMAIN_TAG_V2: &[u8] = b"cmdb.event.v2";

/// The commitment the chain hashes for a payload: version 1 unsalted, version 2 salted.
pub fn payload_commitment(seal: &PayloadSeal, data: &[u8]) -> Hash {
    match seal {
        PayloadSeal::Plain => Hash(*blake3::hash(data).as_bytes()),
        PayloadSeal::Salted(salt) => Hash(*blake3::keyed_hash(salt, data).as_bytes()),
        PayloadSeal::Redacted { commitment, .. } => *commitment,
    }
}

/// The fields of an event that the chain covers, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct ChainFields<'a> {
    /// The log position.
    pub position: u64,
    /// The stream.
    pub stream_id: &'a str,
    /// The version within its stream (the first event is 0).
    pub stream_version: u64,
    /// The event's id.
    pub event_id: &'a Uuid,
    /// The event type.
    pub event_type: &'a str,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The JSON payload exactly as stored.
    pub data: &'a [u8],
    /// Actor, correlation and causation.
    pub metadata: MetadataRef<'a>,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// How the payload is committed to.
    pub seal: &'a PayloadSeal,
}

/// The metadata fields the chain covers, borrowed from an appended event's [`Metadata`] or
/// from a stored record (which keeps them in two parts: see [`EventRecord`]).
#[derive(Clone, Copy, Debug)]
pub struct MetadataRef<'a> {
    /// Who acted.
    pub principal: &'a str,
    /// The token they used, if any.
    pub token_id: Option<&'a str>,
    /// The request it came from.
    pub correlation_id: Option<&'a str>,
    /// The event that caused it.
    pub causation_id: Option<&'a str>,
    /// Where the command came from.
    pub source: Source,
    /// When an external tool says the thing happened.
    pub occurred_at: Option<Timestamp>,
}

impl<'a> From<&'a Metadata> for MetadataRef<'a> {
    fn from(metadata: &'a Metadata) -> Self {
        MetadataRef {
            principal: &metadata.actor.principal,
            token_id: metadata.actor.token_id.as_deref(),
            correlation_id: metadata.correlation_id.as_deref(),
            causation_id: metadata.causation_id.as_deref(),
            source: metadata.source,
            occurred_at: metadata.occurred_at,
        }
    }
}

impl<'a> From<&'a EventRecord> for MetadataRef<'a> {
    fn from(record: &'a EventRecord) -> Self {
        MetadataRef {
            principal: &record.principal,
            token_id: record.token_id.as_deref(),
            correlation_id: record.correlation_id.as_deref(),
            causation_id: record.causation_id.as_deref(),
            source: record.source,
            occurred_at: record.occurred_at,
        }
    }
}

impl<'a> ChainFields<'a> {
    /// The fields of a stored event.
    pub fn of(record: &'a EventRecord) -> Self {
        ChainFields {
            position: record.position,
            stream_id: record.stream_id.as_str(),
            stream_version: record.stream_version,
            event_id: &record.event_id,
            event_type: &record.event_type,
            schema_version: record.schema_version,
            data: &record.data,
            metadata: MetadataRef::from(record),
            recorded_at: record.recorded_at,
            seal: &record.seal,
        }
    }
}

fn put_bytes(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    // Fields are bounded far below 4 GiB (see the limits in `event` and `store`).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    hasher.update(&len.to_be_bytes());
    hasher.update(bytes);
}

fn put_optional_text(hasher: &mut blake3::Hasher, text: Option<&str>) {
    match text {
        None => {
            hasher.update(&[0]);
        }
        Some(text) => {
            hasher.update(&[1]);
            put_bytes(hasher, text.as_bytes());
        }
    }
}

/// The canonical hash of one event given its predecessor's hash.
pub fn event_hash(prev_hash: &Hash, fields: &ChainFields<'_>) -> Hash {
    let commitment = payload_commitment(fields.seal, fields.data);
    let mut hasher = blake3::Hasher::new();
    hasher.update(match fields.seal.encoding() {
        ChainEncoding::V1 => DOMAIN_TAG_V1,
        ChainEncoding::V2 => DOMAIN_TAG_V2,
    });
    hasher.update(&prev_hash.0);
    hasher.update(&fields.position.to_be_bytes());
    put_bytes(&mut hasher, fields.stream_id.as_bytes());
    hasher.update(&fields.stream_version.to_be_bytes());
    hasher.update(fields.event_id.as_bytes());
    put_bytes(&mut hasher, fields.event_type.as_bytes());
    hasher.update(&fields.schema_version.to_be_bytes());
    hasher.update(&commitment.0);
    let metadata = fields.metadata;
    put_bytes(&mut hasher, metadata.principal.as_bytes());
    put_optional_text(&mut hasher, metadata.token_id);
    put_optional_text(&mut hasher, metadata.correlation_id);
    put_optional_text(&mut hasher, metadata.causation_id);
    put_bytes(&mut hasher, metadata.source.as_str().as_bytes());
    match metadata.occurred_at {
        None => {
            hasher.update(&[0]);
        }
        Some(at) => {
            hasher.update(&[1]);
            hasher.update(&at.as_micros().to_be_bytes());
        }
    }
    hasher.update(&fields.recorded_at.as_micros().to_be_bytes());
    Hash(*hasher.finalize().as_bytes())
}

/// A point in the log a user can write down and check later: "at position p the hash was h".
/// Text form: `<position>:<hex hash>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Digest {
    /// The log position.
    pub position: u64,
    /// The blake3 hash.
    pub hash: Hash,
}

impl Digest {
    /// The digest of an empty log.
    pub const EMPTY: Digest = Digest { position: 0, hash: Hash::GENESIS };
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.position, self.hash)
    }
}

/// Text that is not `<position>:<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a digest (expected <position>:<64 hex digits>): {0:?}")]
pub struct DigestParseError(pub String);

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DigestParseError(s.to_owned());
        let (position, hash) = s.trim().split_once(':').ok_or_else(err)?;
        Ok(Digest { position: position.parse().map_err(|_| err())?, hash: hash.parse().map_err(|_| err())? })
    }
}

/// What a digest check found.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DigestCheck {
    /// The event at the digest's position has the digest's hash.
    Matches,
    /// The log is shorter than the digest: its tail was truncated (or this is another log).
    /// The log is shorter than the digest: it ends at `head`.
    Truncated {
        /// Where the log ends.
        head: u64,
    },
    /// The event at that position has another hash: the log was rewritten.
    /// The event at the digest's position has another hash now (`stored`).
    Mismatch {
        /// The hash stored there now.
        stored: Hash,
    },
}

/// Where and how the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// A position is missing or out of order (a deleted, inserted or moved row).
    /// Positions are not consecutive at `position`.
    Sequence {
        /// The position found.
        position: u64,
        /// The position that should follow.
        expected_position: u64,
    },
    /// The stored `prev_hash` is not the previous event's hash.
    /// The event at `position` does not carry its predecessor's hash.
    PrevHash {
        /// Where.
        position: u64,
    },
    /// The event's fields do not hash to its stored hash (a changed byte somewhere).
    /// The event at `position` does not hash to its stored hash.
    Hash {
        /// Where.
        position: u64,
    },
    /// The row cannot even be decoded.
    /// The event at `position` cannot be read.
    Unreadable {
        /// Where.
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// The recorded commits do not tile the log (the commit record is not in the hash, so this
    /// is checked on its own: every commit starts where the last one ended and all its events
    /// name it).
    Commit {
        /// Where.
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// A redacted payload that no redaction record accounts for (the record it names is
    /// missing, is not a redaction record, or does not list it). The redaction record is in
    /// the chain, so erasing bytes without one is caught here.
    Redaction {
        /// The redacted event.
        position: u64,
        /// What is wrong.
        detail: String,
    },
}

impl ChainBreak {
    /// The first position at which the log is not what the chain says it must be.
    pub fn position(&self) -> u64 {
        match self {
            // The break is where the expected position is missing.
            ChainBreak::Sequence { expected_position, .. } => *expected_position,
            ChainBreak::PrevHash { position }
            | ChainBreak::Hash { position }
            | ChainBreak::Unreadable { position, .. }
            | ChainBreak::Commit { position, .. }
            | ChainBreak::Redaction { position, .. } => *position,
        }
    }
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Sequence { position, expected_position } => write!(
                f,
                "position {expected_position} expected but {position} found: a row was deleted, inserted or moved"
            ),
            ChainBreak::PrevHash { position } => {
                write!(f, "position {position}: prev_hash is not the hash of the event before it")
            }
            ChainBreak::Hash { position } => {
                write!(f, "position {position}: the stored fields do not hash to the stored hash (altered)")
            }
            ChainBreak::Unreadable { position, detail } => write!(f, "position {position}: unreadable row: {detail}"),
            ChainBreak::Commit { position, detail } => write!(f, "position {position}: commit record: {detail}"),
            ChainBreak::Redaction { position, detail } => write!(f, "position {position}: redaction: {detail}"),
        }
    }
}

/// Walks records in position order and checks each link.
#[derive(Clone, Debug)]
pub struct ChainVerifier {
    next_position: u64,
    prev_hash: Hash,
    /// The commit the previous event left open (it was not its last event).
    open_commit: Option<CommitSpan>,
    /// Resumed from a digest: the first event may be inside a commit that began before it.
    resumed: bool,
    /// Redacted events seen whose redaction record is still ahead: record position to the
    /// redacted positions naming it.
    redactions_ahead: std::collections::BTreeMap<u64, Vec<u64>>,
}

/// The type of the record a redaction appends (see `redaction`); the chain checks that every
/// redacted payload is accounted for by one.
pub const REDACTION_APPLIED: &str = "redaction.applied";

/// What the chain reads of a redaction record: the positions it erased.
#[derive(Clone, Debug, Deserialize)]
pub struct RedactionCover {
    /// The redacted events' positions.
    pub positions: Vec<u64>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier::new()
    }
}

impl ChainVerifier {
    /// Starts at position 1 with the genesis hash.
    pub fn new() -> Self {
        ChainVerifier {
            next_position: 1,
            prev_hash: Hash::GENESIS,
            open_commit: None,
            resumed: false,
            redactions_ahead: Default::default(),
        }
    }

    /// Continues from a trusted digest (checks only what follows it).
    pub fn from_digest(digest: Digest) -> Self {
        ChainVerifier {
            next_position: digest.position + 1,
            prev_hash: digest.hash,
            open_commit: None,
            resumed: digest.position > 0,
            redactions_ahead: Default::default(),
        }
    }

    /// Checks the next event of the walk.
    pub fn check(&mut self, record: &EventRecord) -> Result<(), ChainBreak> {
        if record.position != self.next_position {
            return Err(ChainBreak::Sequence { position: record.position, expected_position: self.next_position });
        }
        if record.prev_hash != self.prev_hash {
            return Err(ChainBreak::PrevHash { position: record.position });
        }
        if event_hash(&record.prev_hash, &ChainFields::of(record)) != record.hash {
            return Err(ChainBreak::Hash { position: record.position });
        }
        self.check_commit(record)?;
        self.check_redaction(record)?;
        self.next_position += 1;
        self.prev_hash = record.hash;
        Ok(())
    }

    fn check_commit(&mut self, record: &EventRecord) -> Result<(), ChainBreak> {
        let commit = record.commit;
        let broken = |detail: String| ChainBreak::Commit { position: record.position, detail };
        if !commit.contains(record.position) {
            return Err(broken(format!("the event is outside its own commit {commit:?}")));
        }
        match self.open_commit {
            Some(open) if open != commit => {
                return Err(broken(format!("the commit {open:?} is not finished, but this event names {commit:?}")));
            }
            None if commit.first_position != record.position && !self.resumed => {
                return Err(broken(format!("a commit starts here, but this event names {commit:?}")));
            }
            _ => {}
        }
        self.resumed = false;
        self.open_commit = (commit.last_position() != record.position).then_some(commit);
        Ok(())
    }

    fn check_redaction(&mut self, record: &EventRecord) -> Result<(), ChainBreak> {
        if let Some(at) = record.seal.redaction_record() {
            if at <= record.position {
                return Err(ChainBreak::Redaction {
                    position: record.position,
                    detail: format!("it names the redaction record at {at}, which is not after it"),
                });
            }
            self.redactions_ahead.entry(at).or_default().push(record.position);
        }
        let Some(redacted) = self.redactions_ahead.remove(&record.position) else {
            return Ok(());
        };
        let cover = (record.event_type == REDACTION_APPLIED)
            .then(|| record.data_as::<RedactionCover>().ok())
            .flatten()
            .map(|cover| cover.positions)
            .unwrap_or_default();
        match redacted.iter().find(|position| !cover.contains(position)) {
            None => Ok(()),
            Some(position) => Err(ChainBreak::Redaction {
                position: *position,
                detail: format!("the record at {} does not list it as redacted", record.position),
            }),
        }
    }

    /// Ends a walk of the whole log: a redacted event whose record was never reached breaks.
    pub fn finish(&self) -> Result<(), ChainBreak> {
        match self.redactions_ahead.iter().next() {
            None => Ok(()),
            Some((at, positions)) => Err(ChainBreak::Redaction {
                position: positions.first().copied().unwrap_or(*at),
                detail: format!("it names the redaction record at {at}, beyond the end of the log"),
            }),
        }
    }

    /// The digest of the last record checked.
    pub fn digest(&self) -> Digest {
        Digest { position: self.next_position - 1, hash: self.prev_hash }
    }
}

/// The outcome of walking the whole log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many events were checked and found sound.
    pub events_checked: u64,
    /// The digest of the last sound event (the head, when the log is intact).
    pub last_good: Digest,
    /// The first break, if any. Nothing after it is trusted.
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    /// Whether the walk found no break.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, FoldRecord, Source, StreamId};

    fn record(position: u64, prev: Hash) -> EventRecord {
        let metadata = Metadata::new(Actor::principal("alice"), Source::Api);
        let mut record = EventRecord {
            fold: FoldRecord {
                position,
                stream_id: StreamId::new("ci-1").expect("valid"),
                stream_version: position - 1,
                event_type: "ci.registered".into(),
                data: br#"{"name":"web-01"}"#.to_vec(),
                principal: metadata.actor.principal,
                correlation_id: metadata.correlation_id,
                recorded_at: Timestamp::from_micros(1_000_000 * position as i64),
                hash: Hash::GENESIS,
                commit: crate::event::CommitSpan::single(position),
            },
            token_id: metadata.actor.token_id,
            causation_id: metadata.causation_id,
            source: metadata.source,
            occurred_at: metadata.occurred_at,
            event_id: Uuid::from_u128(position as u128),
            schema_version: 1,
            prev_hash: prev,
            seal: PayloadSeal::Plain,
        };
        record.hash = event_hash(&prev, &ChainFields::of(&record));
        record
    }

    fn chain(n: u64) -> Vec<EventRecord> {
        let mut prev = Hash::GENESIS;
        (1..=n)
            .map(|p| {
                let r = record(p, prev);
                prev = r.hash;
                r
            })
            .collect()
    }

    /// A fixed vector: other backends and other languages must reproduce this hash exactly.
    /// It was computed independently from the encoding documented above, in Python with the
    /// `blake3` package, not by this code.
    #[test]
    fn commit_records_must_tile_the_log() {
        let verify = |log: &[EventRecord]| {
            let mut verifier = ChainVerifier::new();
            log.iter().try_for_each(|r| verifier.check(r))
        };
        let mut log = chain(6);
        // Positions 2..=4 as one commit: sound.
        for record in &mut log[1..4] {
            record.commit = CommitSpan { first_position: 2, events: 3 };
        }
        assert_eq!(verify(&log), Ok(()));
        // Position 3 names another commit while 2..=4 is open.
        let mut forged = log.clone();
        forged[2].commit = CommitSpan::single(3);
        assert!(matches!(verify(&forged), Err(ChainBreak::Commit { position: 3, .. })), "{:?}", verify(&forged));
        // A commit that claims to start before the event that opens it.
        let mut forged = log.clone();
        forged[4].commit = CommitSpan { first_position: 4, events: 2 };
        assert!(matches!(verify(&forged), Err(ChainBreak::Commit { position: 5, .. })));
        // An event outside its own commit.
        let mut forged = log.clone();
        forged[5].commit = CommitSpan { first_position: 1, events: 2 };
        assert!(matches!(verify(&forged), Err(ChainBreak::Commit { position: 6, .. })));
        // Resuming from a digest inside a commit is allowed.
        let mut verifier = ChainVerifier::from_digest(Digest { position: 2, hash: log[1].hash });
        assert_eq!(log[2..].iter().try_for_each(|r| verifier.check(r)), Ok(()));
    }

    #[test]
    fn canonical_encoding_has_a_stable_test_vector() {
        let first = record(1, Hash::GENESIS);
        assert_eq!(first.hash.to_hex(), "326cce0dbc72533baffa78514b035f5286ddc6e73cd79c6b6946eaf2bf91f8b2");
        // Recomputing gives the same bytes; any field change gives another hash.
        assert_eq!(event_hash(&Hash::GENESIS, &ChainFields::of(&first)), first.hash);
    }

    /// Chain version 2: the same fields, tag `cmdb.event.v2` and the payload keyed with a salt.
    /// Computed independently in Python (`blake3` package, `blake3(data, key=salt)`).
    #[test]
    fn salted_encoding_has_a_stable_test_vector_and_hides_the_payload() {
        let mut salted = record(1, Hash::GENESIS);
        salted.seal = PayloadSeal::Salted([7; 32]);
        let hash = event_hash(&Hash::GENESIS, &ChainFields::of(&salted));
        assert_eq!(hash.to_hex(), "b328876904e8c07c479a8ade84bd966fc1412bb09d4467ebac8b91c6760db28b");
        // Another salt, another commitment: a guess cannot be checked without the salt.
        let mut other = salted.clone();
        other.seal = PayloadSeal::Salted([8; 32]);
        assert_ne!(payload_commitment(&other.seal, &other.data), payload_commitment(&salted.seal, &salted.data));
        assert_ne!(
            payload_commitment(&salted.seal, &salted.data),
            payload_commitment(&PayloadSeal::Plain, &salted.data)
        );
        // Redacted: the payload no longer matters, the kept commitment does.
        let mut redacted = salted.clone();
        redacted.seal = PayloadSeal::Redacted {
            encoding: ChainEncoding::V2,
            commitment: payload_commitment(&salted.seal, &salted.data),
            record: 2,
        };
        redacted.data = br#"{"name":"[redacted]"}"#.to_vec();
        assert_eq!(event_hash(&Hash::GENESIS, &ChainFields::of(&redacted)), hash);
    }

    fn redaction_record(position: u64, prev: Hash, positions: &str) -> EventRecord {
        let mut record = record(position, prev);
        record.event_type = REDACTION_APPLIED.into();
        record.data = format!(r#"{{"positions":[{positions}]}}"#).into_bytes();
        record.hash = event_hash(&prev, &ChainFields::of(&record));
        record
    }

    /// `log[index]` erased by the record at `record_position`, its hash kept.
    fn erase(log: &mut [EventRecord], index: usize, record_position: u64) {
        let event = &mut log[index];
        event.seal = PayloadSeal::Redacted {
            encoding: event.seal.encoding(),
            commitment: payload_commitment(&event.seal, &event.data),
            record: record_position,
        };
        event.data = br#"{"name":"[redacted]"}"#.to_vec();
    }

    #[test]
    fn every_redacted_payload_must_be_accounted_for_by_a_later_record() {
        let walk = |log: &[EventRecord]| {
            let mut verifier = ChainVerifier::new();
            log.iter().try_for_each(|r| verifier.check(r))?;
            verifier.finish()
        };
        let mut log = chain(2);
        log.push(redaction_record(3, log[1].hash, "1"));
        erase(&mut log, 0, 3);
        assert_eq!(walk(&log), Ok(()));
        // Erased but not listed by the record it names.
        let mut forged = log.clone();
        erase(&mut forged, 1, 3);
        assert!(matches!(walk(&forged), Err(ChainBreak::Redaction { position: 2, .. })), "{:?}", walk(&forged));
        // Naming a record that is not a redaction record, or one past the end.
        let mut forged = log.clone();
        erase(&mut forged, 1, 1);
        assert!(matches!(walk(&forged), Err(ChainBreak::Redaction { position: 2, .. })));
        let mut forged = chain(3);
        erase(&mut forged, 0, 3);
        assert!(matches!(walk(&forged), Err(ChainBreak::Redaction { position: 1, .. })));
        let mut forged = chain(3);
        erase(&mut forged, 0, 9);
        assert!(matches!(walk(&forged), Err(ChainBreak::Redaction { position: 1, .. })), "{:?}", walk(&forged));
        // A forged payload under a kept commitment that is not the original's breaks the hash.
        let mut forged = log.clone();
        if let PayloadSeal::Redacted { commitment, .. } = &mut forged[0].seal {
            commitment.0[0] ^= 1;
        }
        assert_eq!(walk(&forged), Err(ChainBreak::Hash { position: 1 }));
    }

    #[test]
    fn every_field_is_covered() {
        let base = record(1, Hash::GENESIS);
        let hash = |r: &EventRecord| event_hash(&r.prev_hash, &ChainFields::of(r));
        let mut variants: Vec<EventRecord> = Vec::new();
        let mut r = base.clone();
        r.position = 2;
        variants.push(r);
        let mut r = base.clone();
        r.stream_id = StreamId::new("ci-2").expect("valid");
        variants.push(r);
        let mut r = base.clone();
        r.stream_version = 9;
        variants.push(r);
        let mut r = base.clone();
        r.event_id = Uuid::from_u128(99);
        variants.push(r);
        let mut r = base.clone();
        r.event_type = "ci.updated".into();
        variants.push(r);
        let mut r = base.clone();
        r.schema_version = 2;
        variants.push(r);
        let mut r = base.clone();
        r.data = br#"{"name":"web-02"}"#.to_vec();
        variants.push(r);
        let mut r = base.clone();
        r.principal = "bob".into();
        variants.push(r);
        let mut r = base.clone();
        r.token_id = Some("t".into());
        variants.push(r);
        let mut r = base.clone();
        r.correlation_id = Some("c".into());
        variants.push(r);
        let mut r = base.clone();
        r.causation_id = Some("c".into());
        variants.push(r);
        let mut r = base.clone();
        r.source = Source::Cli;
        variants.push(r);
        let mut r = base.clone();
        r.occurred_at = Some(Timestamp::from_micros(0));
        variants.push(r);
        let mut r = base.clone();
        r.recorded_at = Timestamp::from_micros(1);
        variants.push(r);
        let mut r = base.clone();
        r.prev_hash = Hash([1; 32]);
        variants.push(r);
        let mut seen = std::collections::HashSet::new();
        seen.insert(base.hash);
        for variant in &variants {
            assert!(seen.insert(hash(variant)), "a field change did not change the hash: {variant:?}");
        }
    }

    #[test]
    fn length_prefixes_keep_adjacent_fields_apart() {
        // "ab" + "c" and "a" + "bc" must not collide.
        let mut one = record(1, Hash::GENESIS);
        one.stream_id = StreamId::new("ab").expect("valid");
        one.principal = "c".into();
        let mut two = one.clone();
        two.stream_id = StreamId::new("a").expect("valid");
        two.principal = "bc".into();
        assert_ne!(
            event_hash(&one.prev_hash, &ChainFields::of(&one)),
            event_hash(&two.prev_hash, &ChainFields::of(&two))
        );
    }

    #[test]
    fn verifier_accepts_an_intact_chain_and_names_the_first_break() {
        let events = chain(5);
        let mut verifier = ChainVerifier::new();
        for e in &events {
            verifier.check(e).expect("intact");
        }
        assert_eq!(verifier.digest(), Digest { position: 5, hash: events[4].hash });

        let mut tampered = events.clone();
        tampered[2].data = br#"{"name":"evil"}"#.to_vec();
        let mut verifier = ChainVerifier::new();
        let err = tampered.iter().try_for_each(|e| verifier.check(e)).expect_err("broken");
        assert_eq!(err, ChainBreak::Hash { position: 3 });

        let mut deleted = events.clone();
        deleted.remove(1);
        let mut verifier = ChainVerifier::new();
        let err = deleted.iter().try_for_each(|e| verifier.check(e)).expect_err("broken");
        assert_eq!(err, ChainBreak::Sequence { position: 3, expected_position: 2 });
        assert_eq!(err.position(), 2);

        let mut swapped = events;
        swapped.swap(1, 2);
        let mut verifier = ChainVerifier::new();
        let err = swapped.iter().try_for_each(|e| verifier.check(e)).expect_err("broken");
        assert_eq!(err.position(), 2);
    }

    #[test]
    fn digests_round_trip_through_text() {
        let digest = Digest { position: 42, hash: Hash([7; 32]) };
        assert_eq!(digest.to_string().parse::<Digest>(), Ok(digest));
        assert!("42".parse::<Digest>().is_err());
        assert!("x:00".parse::<Digest>().is_err());
    }
}
