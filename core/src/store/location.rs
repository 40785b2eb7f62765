//! Where a log lives, as `--store` (and `CMDB_STORE`) name it: `sqlite:PATH` (the embedded
//! store in the data directory PATH, the default) or a `postgres://` / `postgresql://` URL
//! (the log shared by many processes). Opening a location gives an [`OpenedStore`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::store::postgres::{PostgresOptions, PostgresStore, redact_url};
use crate::store::sqlite::{LOG_FILE_NAME, SqliteOptions, SqliteStore};
use crate::store::{EventStore, StoreError};

/// Where a log lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded store in this data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shows the location with any password hidden.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(dir) => write!(f, "sqlite:{}", dir.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// Why a `--store` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--store takes sqlite:PATH (a data directory) or a postgres:// URL, got {0:?}")]
pub struct LocationError(pub String);

impl FromStr for StoreLocation {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(LocationError(text.to_string()));
            }
            let path = Path::new(path);
            // A path naming the log file itself means its directory.
            let dir = if path.file_name().is_some_and(|n| n == LOG_FILE_NAME) {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                path.to_path_buf()
            };
            return Ok(StoreLocation::Sqlite(dir));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            text.parse::<tokio_postgres::Config>().map_err(|e| LocationError(format!("{}: {e}", redact_url(text))))?;
            return Ok(StoreLocation::Postgres(text.to_string()));
        }
        Err(LocationError(redact_url(text)))
    }
}

/// An open log of either backend.
#[derive(Clone)]
pub enum OpenedStore {
    /// The embedded store.
    Sqlite(SqliteStore),
    /// The PostgreSQL store.
    Postgres(PostgresStore),
}

impl OpenedStore {
    /// The store, as every caller uses it.
    pub fn as_dyn(&self) -> Arc<dyn EventStore> {
        match self {
            OpenedStore::Sqlite(store) => Arc::new(store.clone()),
            OpenedStore::Postgres(store) => Arc::new(store.clone()),
        }
    }

    /// Stops it (queued appends finish, subscriptions end).
    pub async fn shutdown(&self) {
        match self {
            OpenedStore::Sqlite(store) => store.shutdown().await,
            OpenedStore::Postgres(store) => store.shutdown().await,
        }
    }
}

impl StoreLocation {
    /// The embedded log's file (for commands that must not create one where none is);
    /// `None` for PostgreSQL, where opening answers whether a log is there.
    pub fn sqlite_log_file(&self) -> Option<PathBuf> {
        match self {
            StoreLocation::Sqlite(dir) => Some(dir.join(LOG_FILE_NAME)),
            StoreLocation::Postgres(_) => None,
        }
    }

    /// Opens (creating if needed) the log with these options (the clock, ids, limits and
    /// `verify_tail_on_open` of `sqlite` apply to both backends).
    pub async fn open(&self, sqlite: SqliteOptions, postgres: PostgresOptions) -> Result<OpenedStore, StoreError> {
        match self {
            StoreLocation::Sqlite(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir, sqlite))
                    .await
                    .map_err(|e| StoreError::Storage(format!("the opening task failed: {e}")))??;
                Ok(OpenedStore::Sqlite(store))
            }
            StoreLocation::Postgres(url) => {
                let options = PostgresOptions {
                    limits: sqlite.limits,
                    clock: sqlite.clock,
                    ids: sqlite.ids,
                    verify_tail_on_open: sqlite.verify_tail_on_open,
                    ..postgres
                };
                Ok(OpenedStore::Postgres(PostgresStore::open(url, options).await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!("sqlite:/var/lib/cmdb".parse(), Ok(StoreLocation::Sqlite("/var/lib/cmdb".into())));
        assert_eq!("sqlite:/var/lib/cmdb/events.sqlite".parse(), Ok(StoreLocation::Sqlite("/var/lib/cmdb".into())));
        assert_eq!(
            "postgres://cmdb:secret@db:5432/cmdb".parse(),
            Ok(StoreLocation::Postgres("postgres://cmdb:secret@db:5432/cmdb".into()))
        );
        assert!("postgresql://localhost/cmdb".parse::<StoreLocation>().is_ok());
    }

    #[test]
    fn bad_locations_are_refused_without_showing_passwords() {
        for bad in ["", "sqlite:", "mysql://x", "/var/lib/cmdb", "postgres://u:pw@h:notaport/db"] {
            let error = bad.parse::<StoreLocation>().expect_err(bad).to_string();
            assert!(error.contains("--store takes"), "{error}");
            assert!(!error.contains("pw@"), "the password leaked: {error}");
        }
    }

    #[test]
    fn display_hides_the_password() {
        let location: StoreLocation = "postgres://cmdb:secret@db/cmdb".parse().expect("valid");
        assert_eq!(location.to_string(), "postgres://cmdb:***@db/cmdb");
    }
}
