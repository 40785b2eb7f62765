//! # cmdb-projections
//!
//! Read models rebuilt from the event log: the temporal configuration graph, impact analysis,
//! history and diffs, the change calendar, reports, and the projection runner with its
//! checkpoints. Every projection can be dropped and rebuilt from the log.
//!
//! What it is **not**: no HTTP or GraphQL (that is `cmdb-api`), no storage details (it reads
//! through `cmdb_core::EventStore`).
