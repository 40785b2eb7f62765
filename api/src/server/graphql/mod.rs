//! The GraphQL schema. Every field that touches data has a guard naming the operation it
//! performs; the guard asks the permission matrix in `cmdb_core::access` and nothing else.

mod access;
mod at;
mod baselines;
mod calendar;
mod change_views;
mod changes;
mod ci_edits;
mod cis;
mod classes;
pub mod context;
pub mod cost;
mod diff;
mod discovery;
pub mod documents;
mod environment;
mod evidence;
mod inputs;
pub mod limits;
mod lists;
mod log;
mod node;
mod observe;
mod paging;
mod policy;
mod query;
pub mod raw_json;
mod redaction;
mod releases;
mod reports;
mod risk;
pub mod scalars;
pub(crate) mod tooling;
pub mod unprovided;
pub mod validations;

use std::sync::Arc;

use async_graphql::Schema;

use crate::server::AppState;

pub use access::new_token_text;
pub use context::{RequestContext, SubscriptionSlots};
pub use limits::{Admitted, Limits, LimitsFactory};
pub use query::QueryRoot;

/// Every mutation, by domain.
#[derive(async_graphql::MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    access::AccessMutation,
    ci_edits::CiMutation,
    baselines::BaselineMutation,
    classes::ClassMutation,
    changes::ChangeMutation,
    policy::PolicyMutation,
    calendar::CalendarMutation,
    releases::ReleaseMutation,
    tooling::ToolingMutation,
    discovery::DiscoveryMutation,
    evidence::EvidenceMutation,
    redaction::RedactionMutation,
);

/// Every subscription: the log, configuration changes and change transitions.
#[derive(async_graphql::MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(
    log::LogSubscription,
    ci_edits::CiSubscription,
    changes::ChangeSubscription,
    releases::DeploymentSubscription,
    tooling::UnauthorisedSubscription,
);

/// The schema.
pub type CmdbSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema with the server's limits (see [`limits`]); the limits come back too, for
/// the HTTP handler that measures whole batches.
pub fn build_schema(app: Arc<AppState>) -> Result<(CmdbSchema, Arc<Limits>), String> {
    let settings = &app.settings;
    let bare = Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot::default()).finish();
    let limits = Arc::new(Limits {
        model: cost::CostModel::from_sdl(&bare.sdl(), settings.max_page_size as u64)?,
        max_query_depth: settings.max_query_depth as u64,
        max_query_complexity: settings.max_query_complexity as u64,
        max_query_fields: settings.max_query_fields as u64,
        max_response_bytes: settings.max_response_bytes as u64,
    });
    let schema = Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot::default())
        // The parser's own nesting bound stays above ours, so ours is the one that refuses.
        .limit_recursive_depth(settings.max_query_depth.saturating_mul(2).max(32))
        .extension(LimitsFactory(limits.clone()))
        .extension(unprovided::UnprovidedFactory)
        .extension(validations::KeptValidationsFactory(Arc::default()))
        .data(app.clone())
        .finish();
    Ok((schema, limits))
}

/// The SDL of the schema, for docs and clients.
pub fn sdl(schema: &CmdbSchema) -> String {
    schema.sdl()
}
