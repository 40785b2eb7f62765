//! A fresh PostgreSQL database per test, in the cluster named by `CMDB_TEST_POSTGRES_URL`;
//! dropped when the test ends. Without the variable the test says it was skipped (and fails
//! under `CI=true`, where `.ci/run` must have set it).

use cmdb_core::conformance::postgres_test_url;

pub struct FreshDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// Runs SQL on `url` from a thread of its own (callable from sync and async code alike).
pub fn run_sql(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            let driver = tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            drop(client);
            let _ = driver.await;
        });
    })
    .join()
    .expect("sql thread");
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{database}{query}")
}

impl FreshDatabase {
    /// A new, empty database, or `None` (after printing why) when PostgreSQL is not configured.
    pub fn create(test: &str) -> Option<FreshDatabase> {
        let admin_url = match postgres_test_url() {
            Ok(url) => url,
            Err(reason) => {
                println!("SKIPPED {test}: {reason}");
                return None;
            }
        };
        let name = format!("cmdb_t_{}", uuid::Uuid::now_v7().simple());
        run_sql(&admin_url, &format!("CREATE DATABASE {name}"));
        Some(FreshDatabase { url: with_database(&admin_url, &name), admin_url, name })
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ =
            std::panic::catch_unwind(move || run_sql(&url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
    }
}
