//! Opening the log a command names (`--store`, or the embedded log in `--data-dir`), with
//! the options every operator command uses.

use anyhow::Context;
use cmdb_core::store::location::{OpenedStore, StoreLocation};
use cmdb_core::store::postgres::PostgresOptions;
use cmdb_core::store::sqlite::SqliteOptions;

/// Opens (creating if needed) the log at a location.
pub async fn open_location(location: &StoreLocation, verify_tail_on_open: bool) -> anyhow::Result<OpenedStore> {
    let sqlite = SqliteOptions { verify_tail_on_open, ..SqliteOptions::default() };
    location
        .open(sqlite, PostgresOptions::default())
        .await
        .with_context(|| format!("cannot open the event log at {location}"))
}
