//! The GraphQL schema. Every field that touches data has a guard naming the operation it
//! performs; the guard asks the permission matrix in `cmdb_core::access` and nothing else.

pub mod audit;
pub mod calendar;
pub mod changes;
pub mod config;
mod mutation;
pub mod policy;
mod query;
pub mod reports;
pub mod scalars;
pub mod schema_admin;
mod subscription;
pub mod types;

use std::sync::Arc;

use async_graphql::{Context, Guard, Schema};
use cmdb_core::access::{Operation, permits};
use cmdb_core::{Actor, Metadata, Source};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::AppState;
use crate::server::auth::Caller;
use crate::server::errors::{forbidden, graphql_error, limit_exceeded};
use crate::server::metrics::GraphqlMetrics;

pub use mutation::new_token_text as mutation_token_text;
pub use query::QueryRoot;

/// Every mutation: access and configuration.
#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(
    mutation::AccessMutation,
    config::ConfigMutation,
    audit::BaselineMutation,
    schema_admin::SchemaMutation,
    changes::ChangeMutation,
    policy::PolicyMutation,
    calendar::CalendarMutation,
);

/// Every subscription: the log and configuration changes.
#[derive(async_graphql::MergedSubscription, Default)]
pub struct SubscriptionRoot(subscription::LogSubscription, config::ConfigSubscription, changes::ChangeSubscription);

pub type CmdbSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema with the server's limits.
pub fn build_schema(app: Arc<AppState>) -> CmdbSchema {
    let settings = &app.settings;
    Schema::build(QueryRoot, MutationRoot::default(), SubscriptionRoot::default())
        .limit_depth(settings.max_query_depth)
        .limit_complexity(settings.max_query_complexity)
        .extension(GraphqlMetrics)
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

/// Per-request context: the correlation id of the HTTP request or WebSocket connection.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub correlation_id: String,
}

/// The subscription slots of one WebSocket connection (`max_subscriptions_per_connection`).
#[derive(Clone)]
pub struct SubscriptionSlots {
    slots: Arc<Semaphore>,
    bound: usize,
}

impl SubscriptionSlots {
    pub fn new(bound: usize) -> Self {
        SubscriptionSlots { slots: Arc::new(Semaphore::new(bound)), bound }
    }

    fn take(&self) -> async_graphql::Result<OwnedSemaphorePermit> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| limit_exceeded("max_subscriptions_per_connection", self.bound as u64 + 1, self.bound as u64))
    }
}

/// Refuses a field unless the caller's roles permit `operation`.
pub struct Requires(pub Operation);

impl Guard for Requires {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let caller = caller(ctx)?;
        if permits(&caller.roles, self.0) { Ok(()) } else { Err(forbidden(self.0)) }
    }
}

fn caller<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Caller> {
    ctx.data_opt::<Caller>().ok_or_else(|| graphql_error("UNAUTHENTICATED", "no authenticated caller"))
}

fn app<'a>(ctx: &'a Context<'_>) -> &'a Arc<AppState> {
    ctx.data_unchecked::<Arc<AppState>>()
}

/// The metadata every event written on behalf of this request carries.
fn metadata(ctx: &Context<'_>) -> async_graphql::Result<Metadata> {
    let caller = caller(ctx)?;
    let mut metadata = Metadata::new(
        Actor { principal: caller.principal.clone(), token_id: Some(caller.token_id.to_string()) },
        Source::Api,
    );
    metadata.correlation_id = ctx.data_opt::<RequestContext>().map(|r| r.correlation_id.clone());
    Ok(metadata)
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
                    extensions.set("code", "LIMIT_EXCEEDED");
                    extensions.set("limit", limit);
                    extensions.set("bound", bound as u64);
                    named.extensions = Some(extensions);
                    named
                })
                .collect()
        })
    }
}
