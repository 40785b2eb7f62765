//! The `Environment` enum, on its own so that every domain's module can name it without
//! importing another domain's module (CIs and releases both use it).

use async_graphql::Enum;

/// Where a CI runs, or where a release goes.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "cmdb_core::ci::Environment")]
pub enum Environment {
    Development,
    Test,
    Staging,
    Production,
}
