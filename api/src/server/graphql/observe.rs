//! What the server records about each GraphQL operation: its latency by kind and outcome (a
//! Prometheus histogram) and every internal error with the request id (logged once, here; the
//! errors themselves say only what the client may know).
//!
//! One extension for both, because async-graphql wraps every resolved field in every
//! extension's `resolve` hook, even one that does not override it: each extension costs a boxed
//! future per field, and large answers have tens of thousands of fields.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Value, Variables};

use super::context::RequestContext;
use crate::server::errors::Code;

/// Makes one [`ObserveExtension`] per operation.
pub struct Observe;

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ObserveExtension { kind: Mutex::new("unparsed") })
    }
}

/// One operation's observation.
struct ObserveExtension {
    /// query, mutation or subscription, once parsed.
    kind: Mutex<&'static str>,
}

#[async_trait::async_trait]
impl Extension for ObserveExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let kind = document.operations.iter().next().map_or("unknown", |(_, op)| match op.node.ty {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        });
        if let Ok(mut slot) = self.kind.lock() {
            *slot = kind;
        }
        Ok(document)
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let kind = self.kind.lock().map(|k| *k).unwrap_or("unknown");
        let outcome = if response.errors.is_empty() { "ok" } else { "error" };
        metrics::histogram!("graphql_operation_duration_seconds", "kind" => kind, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        response
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let response = next.run(ctx, operation_name).await;
        let internal = Value::from(Code::Internal.as_str());
        for error in &response.errors {
            let code = error.extensions.as_ref().and_then(|e| e.get("code"));
            if code.is_some_and(|c| *c == internal) {
                let request_id = ctx.data_opt::<RequestContext>().map_or("-", |r| r.correlation_id.as_str());
                let path: Vec<String> = error.path.iter().map(|p| format!("{p:?}")).collect();
                tracing::error!(request_id, operation = operation_name.unwrap_or("-"), path = %path.join("."), message = %error.message, "internal error in a GraphQL operation");
            }
        }
        response
    }
}
