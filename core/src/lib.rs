//! # cmdb-core
//!
//! The heart of the engine: the event envelope and its codec, the tamper-evident hash chain,
//! the `EventStore` trait with its backends (embedded SQLite now; PostgreSQL and KurrentDB
//! later) and the conformance suite every backend runs. Later it also holds the domain:
//! configuration items, changes, releases, their commands and pure deciders.
//!
//! What it is **not**: no HTTP, no GraphQL, no graph library. Read models (the temporal graph,
//! impact analysis, audit views) live in `cmdb-projections`; the server lives in `cmdb-api`.
//!
//! Requirements served here: RC-1 (records are immutable events, protected from loss and
//! corruption), CM-4 (protection and recoverability of configuration data).

pub mod access;
pub mod baseline;
pub mod chain;
pub mod change;
pub mod ci;
pub mod conformance;
pub mod control;
pub mod decider;
pub mod discovery;
mod error;
pub mod event;
pub mod evidence;
pub mod hash;
pub mod ids;
pub mod merkle;
pub mod model;
pub mod note;
pub mod outbound;
pub mod policy;
pub mod problems;
pub mod redaction;
pub mod release;
pub mod store;
pub mod time;

pub use chain::{ChainBreak, ChainVerifier, Digest};
pub use error::Error;
pub use event::{
    Actor, ChainEncoding, ChainLink, CommitSpan, EventRecord, FoldRecord, Metadata, NewEvent, PayloadSeal, Source,
    StreamId, Text,
};
pub use hash::Hash;
pub use ids::{IdGenerator, SequentialIds, UuidV7Ids};
pub use store::{
    AppendOutcome, AppendRequest, Capabilities, Condition, Direction, EventStore, ExpectedVersion, Limit, StoreError,
    StoreLimits, StreamWrite,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
