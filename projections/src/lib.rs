//! # cmdb-projections
//!
//! Read models rebuilt from the event log: the temporal configuration graph and impact
//! analysis ([`graph`]), change requests as of any position ([`changes`], held by the graph so
//! one runner and one checkpoint serve both), and the projection runner with its checkpoints
//! ([`runner`]). Every projection can be dropped and rebuilt from the log.
//!
//! What it is **not**: no HTTP or GraphQL (that is `cmdb-api`), no storage details (it reads
//! through `cmdb_core::EventStore`).

pub(crate) mod as_json;
pub mod assessment;
pub mod calendar;
pub mod changes;
pub mod diff;
pub mod discovery;
pub mod discovery_book;
pub mod evidence;
pub mod facts;
pub mod graph;
pub mod releases;
pub mod reports;
pub mod runner;
