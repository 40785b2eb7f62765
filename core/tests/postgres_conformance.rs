//! The conformance suite on the PostgreSQL backend: each check gets a fresh schema in the
//! database named by `CMDB_TEST_POSTGRES_URL` (`.ci/run` starts PostgreSQL and sets it). With
//! `CI=true` a missing URL fails every check; elsewhere each check says it was skipped.

use std::sync::Arc;

use async_trait::async_trait;
use cmdb_core::conformance::{Backend, BackendFactory, FreshOptions, fresh_schema_name, postgres_test_url};
use cmdb_core::store::postgres::{PostgresOptions, PostgresStore, PostgresTamper};

struct Postgres;

#[async_trait]
impl BackendFactory for Postgres {
    fn name(&self) -> &str {
        "postgres"
    }

    fn unavailable(&self) -> Option<String> {
        postgres_test_url().err()
    }

    async fn fresh(&self, options: FreshOptions) -> Backend {
        let url = postgres_test_url().expect("checked by unavailable()");
        let schema = fresh_schema_name();
        let store = PostgresStore::open(
            &url,
            PostgresOptions {
                limits: options.limits,
                clock: options.clock,
                ids: options.ids,
                schema: schema.clone(),
                ..PostgresOptions::default()
            },
        )
        .await
        .expect("open a fresh store");
        Backend { store: Arc::new(store), tamper: Some(Box::new(PostgresTamper::new(&url, &schema))) }
    }
}

cmdb_core::conformance_suite!(Postgres);
