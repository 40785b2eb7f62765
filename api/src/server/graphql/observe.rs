//! What the server records about each GraphQL operation: its latency by kind and outcome (a
//! Prometheus histogram) and every internal error with the request id (logged once, here; the
//! errors themselves say only what the client may know).
//!
//! These are functions the limits extension (`LimitsExtension`, in the sibling `limits` module)
//! calls, not an extension of their own: async-graphql wraps every resolved field in every
//! installed extension's `resolve` hook, overridden or not, so each extension costs a boxed future
//! per field, and large answers have hundreds of thousands of fields.

use std::time::Instant;

use async_graphql::extensions::ExtensionContext;
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response, Value};

use super::context::RequestContext;
use crate::server::errors::Code;

/// The kind of a parsed document's (first) operation, as the latency histogram labels it.
pub fn operation_kind(document: &ExecutableDocument) -> &'static str {
    document.operations.iter().next().map_or("unknown", |(_, op)| match op.node.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    })
}

/// Records one operation's latency, by kind and outcome.
pub fn record_latency(kind: &'static str, started: Instant, response: &Response) {
    let outcome = if response.errors.is_empty() { "ok" } else { "error" };
    metrics::histogram!("graphql_operation_duration_seconds", "kind" => kind, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// Logs every internal error of an executed operation, once, with the request id.
pub fn log_internal_errors(ctx: &ExtensionContext<'_>, operation_name: Option<&str>, response: &Response) {
    let internal = Value::from(Code::Internal.as_str());
    for error in &response.errors {
        let code = error.extensions.as_ref().and_then(|e| e.get("code"));
        if code.is_some_and(|c| *c == internal) {
            let request_id = ctx.data_opt::<RequestContext>().map_or("-", |r| r.correlation_id.as_str());
            let path: Vec<String> = error.path.iter().map(|p| format!("{p:?}")).collect();
            tracing::error!(request_id, operation = operation_name.unwrap_or("-"), path = %path.join("."), message = %error.message, "internal error in a GraphQL operation");
        }
    }
}
