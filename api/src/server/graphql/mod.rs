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
pub mod limits;
mod log;
mod policy;
mod query;
mod reports;
mod risk;
pub mod scalars;

use std::sync::Arc;

use async_graphql::Schema;

use crate::server::AppState;
use crate::server::errors::Code;
use crate::server::metrics::GraphqlMetrics;

pub use access::new_token_text;
pub use context::{RequestContext, SubscriptionSlots};
pub use limits::{Admitted, Limits, LimitsFactory};
pub use query::QueryRoot;

/// Every mutation, by domain.
#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(
    access::AccessMutation,
    ci_edits::CiMutation,
    baselines::BaselineMutation,
    classes::ClassMutation,
    changes::ChangeMutation,
    policy::PolicyMutation,
    calendar::CalendarMutation,
);

/// Every subscription: the log, configuration changes and change transitions.
#[derive(async_graphql::MergedSubscription, Default)]
pub struct SubscriptionRoot(log::LogSubscription, ci_edits::CiSubscription, changes::ChangeSubscription);

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
        .extension(GraphqlMetrics)
        .extension(ErrorLog)
        .data(app.clone())
        .finish();
    Ok((schema, limits))
}

/// The SDL of the schema, for docs and clients.
pub fn sdl(schema: &CmdbSchema) -> String {
    schema.sdl()
}

/// Logs every internal error of a response with the request id, once: the one place where
/// they are logged (the errors themselves say only what the client may know).
struct ErrorLog;

impl async_graphql::extensions::ExtensionFactory for ErrorLog {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(ErrorLog)
    }
}

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for ErrorLog {
    async fn execute(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: async_graphql::extensions::NextExecute<'_>,
    ) -> async_graphql::Response {
        let response = next.run(ctx, operation_name).await;
        let internal = Code::Internal.as_str();
        for error in &response.errors {
            let code = error.extensions.as_ref().and_then(|e| e.get("code"));
            if code.is_some_and(|c| *c == async_graphql::Value::from(internal)) {
                let request_id = ctx.data_opt::<RequestContext>().map_or("-", |r| r.correlation_id.as_str());
                let path: Vec<String> = error.path.iter().map(|p| format!("{p:?}")).collect();
                tracing::error!(request_id, operation = operation_name.unwrap_or("-"), path = %path.join("."), message = %error.message, "internal error in a GraphQL operation");
            }
        }
        response
    }
}
