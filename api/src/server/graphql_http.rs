//! GraphQL over HTTP, as the specification (graphql.github.io/graphql-over-http) and generic
//! clients expect it: `POST /graphql` with a JSON body, `GET /graphql?query=` for queries
//! (never mutations: 405), the answer's media type negotiated from `Accept`
//! (`application/graphql-response+json` or `application/json`), request errors (the body,
//! parse, validation, limits) with no `data` and, for `application/graphql-response+json`, a
//! 4xx status, and every refusal (authentication, body size, rate) in the
//! `{"errors": [{"message", "extensions": {"code"}}]}` shape.
//!
//! Before anything runs, a request is measured against the limits ([`admit_batch`]); heavy
//! bodies and answers are handled off the async workers.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::ApiError;
use super::graphql::{self, Admitted, Limits, RequestContext};
use super::{RequestId, ServerState, auth::authenticate_header, graphiql};

/// The media type of the GraphQL-over-HTTP specification's answers.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
/// The legacy media type every client reads.
pub const JSON: &str = "application/json";
/// The `code` of a request async-graphql found invalid against the schema.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// The media type an answer is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: request errors get a 4xx status.
    GraphqlResponseJson,
    /// `application/json`: every well-formed GraphQL answer is 200.
    Json,
}

impl MediaType {
    fn header(self) -> HeaderValue {
        match self {
            MediaType::GraphqlResponseJson => {
                HeaderValue::from_static("application/graphql-response+json; charset=utf-8")
            }
            MediaType::Json => HeaderValue::from_static("application/json"),
        }
    }

    /// The status of an answer that is a request error (nothing executed).
    fn request_error_status(self) -> StatusCode {
        match self {
            MediaType::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            MediaType::Json => StatusCode::OK,
        }
    }
}

/// Picks the answer's media type from `Accept`: the acceptable one with the highest `q`,
/// `application/graphql-response+json` on a tie; `*/*` and `application/*` (and no header) mean
/// `application/json`, as the specification's legacy rule says. `None`: neither is acceptable.
pub fn negotiate(accept: Option<&HeaderValue>) -> Option<MediaType> {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else { return Some(MediaType::Json) };
    if accept.trim().is_empty() {
        return Some(MediaType::Json);
    }
    let mut best: Option<(MediaType, u32, bool)> = None;
    for item in accept.split(',').take(MAX_ACCEPT_ITEMS) {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts.filter_map(|p| p.trim().strip_prefix("q=")).find_map(parse_quality).unwrap_or(1000);
        let (kind, exact) = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => (MediaType::GraphqlResponseJson, true),
            JSON => (MediaType::Json, true),
            "*/*" | "application/*" => (MediaType::Json, false),
            _ => continue,
        };
        if quality == 0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((held, q, held_exact)) => {
                quality > q
                    || (quality == q && exact && !held_exact)
                    || (quality == q && exact == held_exact && kind == MediaType::GraphqlResponseJson && held != kind)
            }
        };
        if better {
            best = Some((kind, quality, exact));
        }
    }
    best.map(|(kind, _, _)| kind)
}

/// Most `Accept` items read (a longer header is not a reason to spend more).
pub const MAX_ACCEPT_ITEMS: usize = 32;

/// `q` in thousandths; `None` if malformed.
fn parse_quality(text: &str) -> Option<u32> {
    let value: f32 = text.trim().parse().ok()?;
    (0.0..=1.0).contains(&value).then(|| (value * 1000.0).round() as u32)
}

/// A refusal before anything ran, in the answer's media type.
fn refusal(media: MediaType, error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, media.header());
    response
}

/// `406`: the client accepts neither media type (said in `application/json`).
fn not_acceptable() -> Response {
    let body = super::errors::error_body(
        "NOT_ACCEPTABLE",
        "Accept names neither application/graphql-response+json nor application/json",
    );
    (StatusCode::NOT_ACCEPTABLE, [(header::CONTENT_TYPE, JSON)], body).into_response()
}

/// The body's content type must be JSON (a form or plain text is what a cross-site page could
/// send without a preflight); no content type at all is read as JSON.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let media = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media == JSON || media == GRAPHQL_RESPONSE_JSON {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "a GraphQL request is sent as application/json, not {}",
        if media.is_empty() { "an empty content type" } else { media.as_str() }
    )))
}

/// `POST /graphql`.
pub async fn post(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = negotiate(headers.get(header::ACCEPT)) else { return not_acceptable() };
    if let Err(error) = check_content_type(&headers) {
        return refusal(media, error);
    }
    let bound = state.app.settings.max_request_body_bytes;
    let bytes = match axum::body::to_bytes(body, bound).await {
        Ok(bytes) => bytes,
        Err(_) => return refusal(media, ApiError::PayloadTooLarge { bound }),
    };
    let request = off_the_worker(bytes.len(), || serde_json::from_slice::<async_graphql::BatchRequest>(&bytes));
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            return refusal(
                media,
                ApiError::BadRequest(format!(
                    "the body is not a GraphQL request ({{\"query\": \"...\", \"variables\": {{...}}}} as JSON): {e}"
                )),
            );
        }
    };
    run(&state, &headers, request_id, media, request, bytes.len(), Method::Post).await
}

/// What `GET /graphql` reads from its query string.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql`: with `?query=`, runs a query (a mutation or subscription is `405`); without,
/// GraphiQL for a browser.
pub async fn get(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let wants_page = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|accept| accept.contains("text/html") || accept.contains("*/*"));
    let Some(media) = negotiate(headers.get(header::ACCEPT)).or(wants_page.then_some(MediaType::Json)) else {
        return not_acceptable();
    };
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return refusal(media, ApiError::BadRequest(format!("the query string is malformed: {e}"))),
    };
    let Some(query) = params.query else {
        if wants_page {
            return graphiql::page().await;
        }
        return refusal(media, ApiError::BadRequest("a GET names its operation in ?query=".into()));
    };
    let mut request = async_graphql::Request::new(query);
    request.operation_name = params.operation_name;
    for (name, text) in [("variables", params.variables), ("extensions", params.extensions)] {
        let Some(text) = text else { continue };
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(e) => return refusal(media, ApiError::BadRequest(format!("?{name}= is not JSON: {e}"))),
        };
        if name == "variables" {
            request.variables = async_graphql::Variables::from_json(value);
        } else if let Ok(extensions) = serde_json::from_value(value) {
            request.extensions = extensions;
        } else {
            return refusal(media, ApiError::BadRequest("?extensions= is not a JSON object".into()));
        }
    }
    let size = request.query.len();
    run(&state, &headers, request_id, media, async_graphql::BatchRequest::Single(request), size, Method::Get).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// Authenticates, charges the budget, admits against the limits, executes, writes the answer.
async fn run(
    state: &ServerState,
    headers: &HeaderMap,
    request_id: RequestId,
    media: MediaType,
    request: async_graphql::BatchRequest,
    body_bytes: usize,
    method: Method,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let caller = match authenticate_header(&state.app.access, authorization, state.app.clock.now()) {
        Ok(caller) => caller,
        Err(error) => return refusal(media, error.into()),
    };
    let settings = &state.app.settings;
    let rate = settings.cost_per_second.of(&caller.roles);
    if let Err(retry) = state.app.budgets.admit(caller.token_id, rate, std::time::Instant::now()) {
        ::metrics::counter!("graphql_requests_refused_total", "reason" => "rate_limited").increment(1);
        return refusal(media, ApiError::RateLimited { retry_after_seconds: retry.seconds });
    }
    let admitted = off_the_worker(body_bytes, || {
        admit_batch(&state.limits, &state.documents, settings.max_batch_operations, request)
    });
    let (mut request, cost) = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return request_errors(media, vec![error]),
    };
    if method == Method::Get
        && let Some(kind) = mutating_operation(&mut request)
    {
        let mut response =
            refusal(media, ApiError::MethodNotAllowed(format!("a {kind} is sent with POST; GET runs queries only")));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if let async_graphql::BatchRequest::Batch(requests) = &mut request {
        for one in requests {
            one.data.insert(Admitted);
        }
    } else if let async_graphql::BatchRequest::Single(one) = &mut request {
        one.data.insert(Admitted);
    }
    // The answer is written by `write_batch`, so large lists may be written as text.
    let raw = graphql::raw_json::RawAnswers { max_response_bytes: settings.max_response_bytes };
    let request = request.data(caller).data(RequestContext { correlation_id: request_id.0 }).data(raw);
    let response = if cost >= LARGE_ANSWER_COST {
        match execute_off_the_workers(&state.schema, request).await {
            Ok(response) => response,
            Err(error) => return refusal(media, error),
        }
    } else {
        state.schema.execute_batch(request).await
    };
    write_answer(media, response, cost, settings.max_response_bytes)
}

/// The kind of the operation a GET would run, when it is not a query.
fn mutating_operation(request: &mut async_graphql::BatchRequest) -> Option<&'static str> {
    use async_graphql::parser::types::OperationType;
    let async_graphql::BatchRequest::Single(one) = request else { return Some("batch") };
    let name = one.operation_name.clone();
    let document = one.parsed_query().ok()?;
    let operation = match (&document.operations, name.as_deref()) {
        (async_graphql::parser::types::DocumentOperations::Single(op), _) => Some(op),
        (async_graphql::parser::types::DocumentOperations::Multiple(ops), Some(name)) => {
            ops.iter().find(|(n, _)| n.as_str() == name).map(|(_, op)| op)
        }
        // Several operations and none named: execution reports it.
        (async_graphql::parser::types::DocumentOperations::Multiple(_), None) => None,
    }?;
    match operation.node.ty {
        OperationType::Query => None,
        OperationType::Mutation => Some("mutation"),
        OperationType::Subscription => Some("subscription"),
    }
}

/// A request refused before it executed: no `data`, each error with a `code`.
fn request_errors(media: MediaType, mut errors: Vec<async_graphql::ServerError>) -> Response {
    for error in &mut errors {
        with_code(error);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "errors": errors })).unwrap_or_else(|_| b"{}".to_vec());
    (media.request_error_status(), [(header::CONTENT_TYPE, media.header())], body).into_response()
}

/// Gives an error async-graphql made (validation) the `code` every other error has.
fn with_code(error: &mut async_graphql::ServerError) {
    let has_code = error.extensions.as_ref().is_some_and(|e| e.get("code").is_some());
    if !has_code {
        error.extensions.get_or_insert_with(Default::default).set("code", VALIDATION_FAILED);
    }
}

/// A response is a request error when nothing executed: no data and no error on a field.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// Writes an executed answer, bounded at `max_response_bytes`.
fn write_answer(media: MediaType, response: async_graphql::BatchResponse, cost: u64, max_bytes: usize) -> Response {
    let response = match response {
        async_graphql::BatchResponse::Single(one) if is_request_error(&one) => {
            return request_errors(media, one.errors);
        }
        async_graphql::BatchResponse::Single(mut one) => {
            one.errors.iter_mut().for_each(with_code);
            async_graphql::BatchResponse::Single(one)
        }
        async_graphql::BatchResponse::Batch(mut many) => {
            many.iter_mut().flat_map(|one| one.errors.iter_mut()).for_each(with_code);
            async_graphql::BatchResponse::Batch(many)
        }
    };
    let text_bytes = graphql::raw_json::text_bytes(&response);
    let capacity = text_bytes.saturating_add(RESPONSE_SLACK_BYTES).min(max_bytes);
    let mut body = BoundedWriter { bytes: Vec::with_capacity(capacity), bound: max_bytes };
    // A large answer is written off the worker, for the same reason a large body is parsed so.
    let size = if cost >= LARGE_ANSWER_COST { LARGE_BODY_BYTES } else { 0 };
    if off_the_worker(size, || graphql::raw_json::write_batch(&mut body, &response)).is_err() {
        ::metrics::counter!("graphql_requests_refused_total", "reason" => "response_bytes").increment(1);
        let error = graphql::limits::limit_error(
            "The answer grew too large; ask for fewer fields or a smaller page",
            "max_response_bytes",
            max_bytes as u64,
            None,
        );
        // It executed: the answer has data (null), so 200 in either media type.
        let body = serde_json::json!({ "data": null, "errors": [error] }).to_string();
        return ([(header::CONTENT_TYPE, media.header())], body).into_response();
    }
    ([(header::CONTENT_TYPE, media.header())], body.bytes).into_response()
}

/// Room in a response body beyond its lists written as text, for the rest of the answer.
const RESPONSE_SLACK_BYTES: usize = 4 * 1024;

/// Bodies from this size up are parsed and measured off the async worker: parsing a large
/// query takes long enough (a second for 800 KB in a debug build) that the requests queued
/// behind it on the same worker would wait, however cheap they are.
pub const LARGE_BODY_BYTES: usize = 64 * 1024;

/// Answers whose worst-case cost reaches this many units (about a page of 1,000 rows of a few
/// fields) are serialised off the async worker.
pub const LARGE_ANSWER_COST: u64 = 20_000;

/// Runs `work` so that a large body does not hold up the worker's other requests: on the
/// multi-threaded runtime, the worker hands its queue to another thread for the duration.
pub fn off_the_worker<T>(body_bytes: usize, work: impl FnOnce() -> T) -> T {
    if body_bytes >= LARGE_BODY_BYTES { blocking(work) } else { work() }
}

/// Runs synchronous work that takes milliseconds: on the multi-threaded runtime the worker
/// hands its queue to another thread for the duration (the current-thread runtime of tests
/// cannot, and runs it in place).
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread { tokio::task::block_in_place(work) } else { work() }
}

/// Runs a heavy request on a blocking thread of its own, so that its synchronous parts
/// (async-graphql validates every operation in one go before any field yields; a batch of 16
/// pages took most of a second in a debug build) never hold up the async workers and the
/// cheap requests queued on them. Dropping the returned future (the request timeout) cancels
/// the execution at its next await.
async fn execute_off_the_workers(
    schema: &graphql::CmdbSchema,
    request: async_graphql::BatchRequest,
) -> Result<async_graphql::BatchResponse, ApiError> {
    let schema = schema.clone();
    let handle = tokio::runtime::Handle::current();
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            tokio::select! {
                response = schema.execute_batch(request) => Some(response),
                _ = cancelled => None,
            }
        })
    });
    let response = task.await.map_err(|e| ApiError::Internal(format!("a request's execution failed: {e}")))?;
    drop(cancel);
    response.ok_or_else(|| ApiError::Internal("a request's execution was cancelled".into()))
}

/// Checks a request before any of it runs: the batch's length, then each operation's measure
/// and their total against the limits. Parses each query once (async-graphql reuses it).
fn admit_batch(
    limits: &Limits,
    documents: &graphql::documents::Documents,
    max_batch_operations: usize,
    mut request: async_graphql::BatchRequest,
) -> Result<(async_graphql::BatchRequest, u64), async_graphql::ServerError> {
    let requests: Vec<&mut async_graphql::Request> = match &mut request {
        async_graphql::BatchRequest::Single(one) => vec![one],
        async_graphql::BatchRequest::Batch(many) => many.iter_mut().collect(),
    };
    if requests.len() > max_batch_operations {
        ::metrics::counter!("graphql_requests_refused_total", "reason" => "batch").increment(1);
        return Err(graphql::limits::limit_error(
            "The batch has too many operations",
            "max_batch_operations",
            max_batch_operations as u64,
            Some(requests.len() as u64),
        ));
    }
    let mut total = graphql::cost::Measure::default();
    for one in requests {
        let operation = one.operation_name.clone();
        let variables = one.variables.clone();
        documents.prepare(one).map_err(|e| limits.parse_error(e))?;
        let document = one.parsed_query().map_err(|e| limits.parse_error(e))?;
        let measure = limits.measure(document, operation.as_deref(), &variables)?;
        total = graphql::cost::Measure {
            cost: total.cost.saturating_add(measure.cost),
            depth: total.depth.max(measure.depth),
            fields: total.fields.saturating_add(measure.fields),
        };
    }
    limits.check(total)?;
    Ok((request, total.cost))
}

/// A writer that fails past `bound` bytes, so an answer is never held whole past it.
struct BoundedWriter {
    bytes: Vec<u8>,
    bound: usize,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.bound {
            return Err(std::io::Error::other("max_response_bytes"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
