//! # cmdb-api
//!
//! The `cmdb` binary's library: the HTTP/GraphQL server, authentication and authorisation, and
//! the CLI commands. It translates requests into commands and calls `cmdb-core`; it holds no
//! domain rules.

pub mod app;
pub mod cli;
pub mod discovery_cli;
pub mod evidence_cli;
pub mod import;
pub(crate) mod local;
pub mod logging;
pub mod migrate;
pub mod opening;
pub mod pipeline;
pub mod server;
pub mod settings;
pub mod terminal;
