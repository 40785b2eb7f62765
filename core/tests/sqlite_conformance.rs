//! The conformance suite on the embedded SQLite backend.

use std::sync::Arc;

use async_trait::async_trait;
use cmdb_core::conformance::{Backend, BackendFactory, FreshOptions};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore, SqliteTamper};

struct Sqlite;

#[async_trait]
impl BackendFactory for Sqlite {
    fn name(&self) -> &str {
        "sqlite"
    }

    async fn fresh(&self, options: FreshOptions) -> Backend {
        // The directory must outlive the store: leak it for the test's lifetime.
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let store = SqliteStore::open(
            &dir,
            SqliteOptions {
                limits: options.limits,
                clock: options.clock,
                ids: options.ids,
                ..SqliteOptions::default()
            },
        )
        .expect("open a fresh store");
        let tamper = SqliteTamper::new(store.path());
        Backend { store: Arc::new(store), tamper: Some(Box::new(tamper)) }
    }
}

cmdb_core::conformance_suite!(Sqlite);
