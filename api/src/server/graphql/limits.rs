//! The limits every GraphQL operation runs under, over HTTP and WebSocket alike (issue 20):
//! before it is validated, its measured cost, depth and expanded fields against the settings
//! (see [`super::cost`]); while it runs, the size of its answer, stopping it cleanly past
//! `max_response_bytes`; and a yield to the scheduler at every field, so a long answer shares
//! the workers and the request timeout can interrupt it. Afterwards, the caller's budget is
//! charged what the operation actually resolved. It also observes the operation (latency and
//! internal errors, [`super::observe`]): one extension, because each installed extension costs
//! every resolved field a boxed future.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest, NextResolve, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ErrorExtensionValues, Response, ServerError, ServerResult, Value, Variables};

use super::cost::{CostError, CostModel, Measure};
use crate::server::AppState;
use crate::server::auth::Caller;
use crate::server::errors::Code;

/// Longest error message taken from the parser: its messages can quote the query.
pub const MAX_PARSE_ERROR_CHARS: usize = 300;

/// How long one request may resolve fields before it yields its worker to other requests (and
/// lets the request timeout fire). Yielding per field instead (`consume_budget`) cost large
/// answers 2.5 times their throughput: every yield re-polls the list futures around it.
pub const RESOLVE_SLICE_MICROS: u64 = 500;
/// Fields resolved between two looks at the clock.
pub const FIELDS_PER_CLOCK_CHECK: u64 = 64;

/// Marks a request the HTTP handler measured and admitted already (with its whole batch).
pub struct Admitted;

/// The limits, as the settings give them.
pub struct Limits {
    /// The cost model of the schema.
    pub model: CostModel,
    /// `max_query_depth`.
    pub max_query_depth: u64,
    /// `max_query_complexity`.
    pub max_query_complexity: u64,
    /// `max_query_fields`.
    pub max_query_fields: u64,
    /// `max_response_bytes`.
    pub max_response_bytes: u64,
}

/// A LIMIT_EXCEEDED error naming the limit, its bound and the value found.
pub fn limit_error(message: &str, limit: &str, bound: u64, value: Option<u64>) -> ServerError {
    let mut error = ServerError::new(format!("{message}: the limit {limit} is {bound}."), None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", Code::LimitExceeded.as_str());
    extensions.set("limit", limit);
    extensions.set("bound", bound);
    if let Some(value) = value {
        extensions.set("value", value);
    }
    error.extensions = Some(extensions);
    error
}

fn coded_error(code: Code, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code.as_str());
    error.extensions = Some(extensions);
    error
}

/// The RATE_LIMITED error of a token whose budget is spent.
pub fn rate_limited_error(retry_after_seconds: u64) -> ServerError {
    let mut error = coded_error(
        Code::RateLimited,
        format!("this token spent its query budget (cost_per_second); retry in {retry_after_seconds} s"),
    );
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set("retryAfterSeconds", retry_after_seconds);
    }
    error
}

impl Limits {
    /// Measures an operation and checks it against every limit.
    pub fn measure(
        &self,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Result<Measure, ServerError> {
        let measure = self.model.measure(document, operation_name, variables).map_err(|error| match error {
            CostError::FragmentNesting { bound } => {
                limit_error("Fragments nest too deep", "fragment nesting", bound as u64, None)
            }
            CostError::FragmentCycle(_) => coded_error(Code::BadUserInput, error.to_string()),
        })?;
        self.check(measure)?;
        Ok(measure)
    }

    /// Checks a measure (one operation's, or a batch's total) against the limits.
    pub fn check(&self, measure: Measure) -> Result<(), ServerError> {
        let refused = |reason: &str, error: ServerError| {
            metrics::counter!("graphql_requests_refused_total", "reason" => reason.to_owned()).increment(1);
            Err(error)
        };
        if measure.depth > self.max_query_depth {
            let error = limit_error("Query is nested too deep", "max_query_depth", self.max_query_depth, None);
            return refused("depth", error);
        }
        if measure.fields > self.max_query_fields {
            let error = limit_error(
                "Query expands to too many fields",
                "max_query_fields",
                self.max_query_fields,
                Some(measure.fields),
            );
            return refused("fields", error);
        }
        if measure.cost > self.max_query_complexity {
            let error = limit_error(
                "Query is too complex",
                "max_query_complexity",
                self.max_query_complexity,
                Some(measure.cost),
            );
            return refused("complexity", error);
        }
        Ok(())
    }

    /// A parser error, short and coded: nesting past the parser's recursion bound is a depth
    /// refusal; any other message is cut (the parser may quote the whole query).
    pub fn parse_error(&self, error: ServerError) -> ServerError {
        if error.message.contains("recursion") {
            metrics::counter!("graphql_requests_refused_total", "reason" => "depth").increment(1);
            return limit_error("Query is nested too deep", "max_query_depth", self.max_query_depth, None);
        }
        let mut message: String = error.message.chars().take(MAX_PARSE_ERROR_CHARS).collect();
        if message.len() < error.message.len() {
            message.push_str(" …");
        }
        let mut short = coded_error(Code::BadUserInput, message);
        short.locations = error.locations;
        short
    }
}

/// Makes one [`LimitsExtension`] per request.
pub struct LimitsFactory(pub Arc<Limits>);

impl ExtensionFactory for LimitsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsExtension {
            limits: self.0.clone(),
            counting: AtomicBool::new(false),
            exceeded: AtomicBool::new(false),
            values: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            slice_end_micros: AtomicU64::new(RESOLVE_SLICE_MICROS),
            stop: tokio::sync::Notify::new(),
            kind: OnceLock::new(),
        })
    }
}

/// One request's limits while it runs.
pub struct LimitsExtension {
    limits: Arc<Limits>,
    /// Set while a query or mutation executes (not between a subscription's events).
    counting: AtomicBool,
    exceeded: AtomicBool,
    values: AtomicU64,
    bytes: AtomicU64,
    /// When the extension was made: the clock the slices are measured on.
    started: Instant,
    /// Microseconds after `started` at which the running slice ends.
    slice_end_micros: AtomicU64,
    stop: tokio::sync::Notify,
    /// query, mutation or subscription, once parsed (the latency histogram's label).
    kind: OnceLock<&'static str>,
}

impl LimitsExtension {
    /// Yields the worker when this request has resolved fields for longer than
    /// [`RESOLVE_SLICE_MICROS`] since it last yielded; looks at the clock every
    /// [`FIELDS_PER_CLOCK_CHECK`] fields.
    async fn yield_if_slice_spent(&self, resolved: u64) {
        if !resolved.is_multiple_of(FIELDS_PER_CLOCK_CHECK) {
            return;
        }
        let now_micros = self.started.elapsed().as_micros() as u64;
        if now_micros < self.slice_end_micros.load(Ordering::Relaxed) {
            return;
        }
        self.slice_end_micros.store(now_micros + RESOLVE_SLICE_MICROS, Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
}

/// The caller's rate and the budgets, when the request has a caller.
fn budget_of<'a>(ctx: &'a ExtensionContext<'_>) -> Option<(&'a Caller, &'a Arc<AppState>, u64)> {
    let caller = ctx.data_opt::<Caller>()?;
    let state = ctx.data_opt::<Arc<AppState>>()?;
    Some((caller, state, state.settings.cost_per_second.of(&caller.roles)))
}

#[async_trait::async_trait]
impl Extension for LimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await.map_err(|e| self.limits.parse_error(e))?;
        let _ = self.kind.set(super::observe::operation_kind(&document));
        if ctx.data_opt::<Admitted>().is_none() {
            // Not measured by the HTTP handler: an operation over WebSocket.
            self.limits.measure(&document, None, variables)?;
            if let Some((caller, state, rate)) = budget_of(ctx) {
                state.budgets.admit(caller.token_id, rate, Instant::now()).map_err(|retry| {
                    metrics::counter!("graphql_requests_refused_total", "reason" => "rate_limited").increment(1);
                    rate_limited_error(retry.seconds)
                })?;
            }
        }
        Ok(document)
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        super::observe::record_latency(self.kind.get().copied().unwrap_or("unparsed"), started, &response);
        response
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.values.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.counting.store(true, Ordering::Relaxed);
        let response = tokio::select! {
            response = next.run(ctx, operation_name) => response,
            _ = self.stop.notified() => {
                metrics::counter!("graphql_requests_refused_total", "reason" => "response_bytes").increment(1);
                let bound = self.limits.max_response_bytes;
                Response::from_errors(vec![limit_error(
                    "The answer grew too large; ask for fewer fields or a smaller page",
                    "max_response_bytes",
                    bound,
                    None,
                )])
            }
        };
        self.counting.store(false, Ordering::Relaxed);
        if let Some((caller, state, rate)) = budget_of(ctx) {
            let resolved = self.values.load(Ordering::Relaxed).saturating_add(1);
            state.budgets.charge(caller.token_id, rate, resolved, Instant::now());
        }
        super::observe::log_internal_errors(ctx, operation_name, &response);
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if self.exceeded.load(Ordering::Relaxed) {
            // The execute hook answers with the limit error; nothing more is resolved.
            return std::future::pending().await;
        }
        // Other requests run, and the request timeout can interrupt, at least every slice.
        let resolved = self.values.fetch_add(1, Ordering::Relaxed) + 1;
        self.yield_if_slice_spent(resolved).await;
        let key = info.alias.unwrap_or(info.name).len() as u64 + 4;
        let return_type = info.return_type;
        let value = next.run(ctx, info).await?;
        if let Some(blob) = value.as_ref().and_then(super::raw_json::decode) {
            // A list written as text: its fields resolved without passing here.
            self.values.fetch_add(blob.fields, Ordering::Relaxed);
        }
        if self.counting.load(Ordering::Relaxed) {
            let size = match &value {
                // Only an object or a list can be a composite (its fields counted as they
                // resolved); the schema is asked only then, most fields being scalars.
                Some(value @ (Value::Object(_) | Value::List(_))) if !self.limits.model.is_composite(return_type) => {
                    json_bytes(value)
                }
                Some(Value::Object(_) | Value::List(_)) => 2,
                Some(value) => json_bytes(value),
                None => 4,
            };
            let total = self.bytes.fetch_add(key + size, Ordering::Relaxed) + key + size;
            if total > self.limits.max_response_bytes {
                self.exceeded.store(true, Ordering::Relaxed);
                self.stop.notify_one();
                return std::future::pending().await;
            }
        }
        Ok(value)
    }
}

/// About what `value` takes as JSON (scalars and their lists; objects are counted field by
/// field as they resolve).
fn json_bytes(value: &Value) -> u64 {
    match value {
        Value::Null => 4,
        Value::Boolean(_) => 5,
        Value::Number(_) => 8,
        Value::String(text) => text.len() as u64 + 2,
        Value::Enum(name) => name.len() as u64 + 2,
        Value::Binary(bytes) => {
            super::raw_json::decode(value).map_or(bytes.len() as u64 * 2, |blob| blob.json.len() as u64)
        }
        Value::List(items) => 2 + items.iter().map(|item| json_bytes(item) + 1).sum::<u64>(),
        Value::Object(fields) => {
            2 + fields.iter().map(|(name, value)| name.len() as u64 + 4 + json_bytes(value)).sum::<u64>()
        }
    }
}
