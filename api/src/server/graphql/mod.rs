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
mod diff;
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

/// Builds the schema with the server's limits.
pub fn build_schema(app: Arc<AppState>) -> CmdbSchema {
    let settings = &app.settings;
    Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot::default())
        .limit_depth(settings.max_query_depth)
        .limit_complexity(settings.max_query_complexity)
        .extension(GraphqlMetrics)
        .extension(ErrorLog)
        .extension(LimitErrors {
            max_query_depth: settings.max_query_depth,
            max_query_complexity: settings.max_query_complexity,
        })
        .data(app.clone())
        .finish()
}

/// The SDL of the schema, for docs and clients.
pub fn sdl(schema: &CmdbSchema) -> String {
    schema.sdl()
}

/// Names the limit, its bound and a code in async-graphql's depth and complexity refusals.
struct LimitErrors {
    max_query_depth: usize,
    max_query_complexity: usize,
}

impl async_graphql::extensions::ExtensionFactory for LimitErrors {
    fn create(&self) -> Arc<dyn async_graphql::extensions::Extension> {
        Arc::new(LimitErrors { max_query_depth: self.max_query_depth, max_query_complexity: self.max_query_complexity })
    }
}

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for LimitErrors {
    async fn validation(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        next: async_graphql::extensions::NextValidation<'_>,
    ) -> Result<async_graphql::ValidationResult, Vec<async_graphql::ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|error| {
                    let (limit, bound) = match error.message.as_str() {
                        "Query is nested too deep." => ("max_query_depth", self.max_query_depth),
                        "Query is too complex." => ("max_query_complexity", self.max_query_complexity),
                        _ => return error,
                    };
                    let mut named = async_graphql::ServerError::new(
                        format!("{} The limit {limit} is {bound}.", error.message.trim_end_matches('.'))
                            .replace(" The", ": the"),
                        None,
                    );
                    let mut extensions = async_graphql::ErrorExtensionValues::default();
                    extensions.set("code", Code::LimitExceeded.as_str());
                    extensions.set("limit", limit);
                    extensions.set("bound", bound as u64);
                    named.extensions = Some(extensions);
                    named
                })
                .collect()
        })
    }
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
