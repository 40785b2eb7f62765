//! `cmdb serve`: the HTTP server. Routes, the shared state, start-up (open the log, follow
//! access, bootstrap an admin), and graceful shutdown (stop accepting, finish in-flight
//! requests and their appends, complete subscriptions, close the log).

pub mod auth;
pub mod budget;
pub mod demo;
pub mod errors;
pub mod gate;
mod graphiql;
pub mod graphql;
pub mod hooks;
mod ics;
pub mod listener;
pub mod metrics;
pub mod outbound;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cmdb_core::access::{self, AccessCommand, AccessDecider, Operation, PrincipalKind, Role, permits, token_hash};
use cmdb_core::store::location::{OpenedStore, StoreLocation};
use cmdb_core::store::postgres::PostgresOptions;
use cmdb_core::store::read_only::ReadOnlyStore;
use cmdb_core::store::sqlite::SqliteOptions;
use cmdb_core::{Actor, Clock, EventStore, IdGenerator, Metadata, Source, SystemClock, UuidV7Ids};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use cmdb_projections::graph::TemporalGraph;
use cmdb_projections::runner::{self, ProjectionHandle, RunnerOptions};

use crate::app::access_view::AccessView;
use crate::app::{App, AppSettings, run_offline};
use crate::settings::ServeSettings;
use auth::{Caller, authenticate_header};
use errors::ApiError;
use graphql::{Admitted, CmdbSchema, Limits, RequestContext, build_schema};

/// The name of the bootstrap admin principal.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// The folder in the data directory that holds projection checkpoints.
pub const PROJECTIONS_DIR: &str = "projections";
/// The file in the data directory that tells CLI commands where a running server listens.
pub const SERVER_FILE_NAME: &str = "server.json";
/// Longest `X-Request-Id` accepted, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Longest the server waits for WebSocket connections to close at shutdown.
const WS_CLOSE_WAIT_MS: u64 = 2_000;

/// What handlers and resolvers share.
pub struct AppState {
    /// The event log.
    pub store: Arc<dyn EventStore>,
    /// Principals and roles now.
    pub access: Arc<AccessView>,
    /// The settings.
    pub settings: ServeSettings,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where ids of new records come from.
    pub ids: Arc<dyn IdGenerator>,
    /// Cancelled when shutdown begins: subscriptions complete, WebSockets close.
    pub shutdown: CancellationToken,
    /// The temporal configuration graph.
    pub graph: ProjectionHandle<TemporalGraph>,
    /// The application layer every write goes through.
    pub app: Arc<App>,
    /// Every token's query budget.
    pub budgets: budget::Budgets,
}

/// The router's state: one `Arc`, because every request clones it (once per extractor and
/// middleware that takes it) and a clone of several `Arc`s showed in profiles.
#[derive(Clone)]
pub struct ServerState(Arc<ServerShared>);

impl std::ops::Deref for ServerState {
    type Target = ServerShared;

    fn deref(&self) -> &ServerShared {
        &self.0
    }
}

/// What the router's state holds.
pub struct ServerShared {
    /// The shared state.
    pub app: Arc<AppState>,
    /// The schema registry.
    pub schema: CmdbSchema,
    /// The limits every operation runs under.
    pub limits: Arc<Limits>,
    /// Parsed query texts kept between requests.
    pub documents: graphql::documents::Documents,
    /// The Prometheus recorder.
    pub metrics: PrometheusHandle,
    /// The WebSocket connections' tasks (waited for at shutdown).
    pub ws_tasks: TaskTracker,
    /// The connection slots.
    pub slots: Arc<listener::Slots>,
    /// Webhook deliveries per source.
    pub hook_limiter: hooks::SourceLimiter,
}

/// The tasks that talk to other systems: outbound CDEvents, protection-rule answers.
fn start_background(app: &Arc<AppState>, settings: &ServeSettings) -> Result<(), StartError> {
    outbound::start_dispatchers(&app.app, settings, &app.shutdown);
    if let Some(auth) = hooks::protection::GithubAuth::from_settings(settings).map_err(StartError::Settings)? {
        let principal = settings.github_hook_principal.clone();
        tokio::spawn(hooks::protection::answer_callbacks(app.app.clone(), auth, principal, app.shutdown.clone()));
    }
    Ok(())
}

/// The correlation id of a request: from `X-Request-Id`, or generated.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// A request authenticated by its bearer token.
pub struct Authenticated(pub Caller);

impl FromRequestParts<ServerState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ServerState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
        Ok(Authenticated(authenticate_header(&state.app.access, header, state.app.clock.now())?))
    }
}

/// Options that tests inject; production uses the defaults.
#[derive(Clone)]
pub struct StartOptions {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where ids come from.
    pub ids: Arc<dyn IdGenerator>,
    /// How the log is opened (the clock, ids and limits here apply to either backend).
    pub store_options: SqliteOptions,
    /// Where the log lives; `None`: the embedded log in the data directory.
    pub location: Option<StoreLocation>,
    /// How a PostgreSQL log is opened.
    pub postgres_options: PostgresOptions,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            store_options: SqliteOptions::default(),
            location: None,
            postgres_options: PostgresOptions::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum StartError {
    #[error("invalid setting: {0}")]
    /// Invalid setting: ….
    Settings(String),
    #[error(transparent)]
    /// Passed on as it is.
    Core(#[from] cmdb_core::Error),
    #[error("cannot listen on {address}: {source}")]
    /// Cannot listen on …: ….
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    /// ….
    Io(String),
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    bootstrap_token: Option<String>,
    http_shutdown: CancellationToken,
    finished: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the log in `data_dir`, catches up, bootstraps an admin on a new log, binds
    /// `settings.listen` and starts serving.
    pub async fn start(data_dir: &Path, settings: ServeSettings, options: StartOptions) -> Result<Server, StartError> {
        settings.validate().map_err(StartError::Settings)?;
        let (opened, store) = open_log(data_dir, &settings, &options).await?;
        if settings.demo {
            demo::prepare(store.as_ref(), options.clock.as_ref()).await?;
        }
        let access = AccessView::start(store.clone()).await?;
        let graph = runner::start::<TemporalGraph>(
            store.clone(),
            RunnerOptions {
                checkpoint_dir: Some(data_dir.join(PROJECTIONS_DIR)),
                checkpoint_interval_ms: settings.checkpoint_interval_ms,
                ..RunnerOptions::default()
            },
        )
        .await
        .map_err(|e| StartError::Io(e.to_string()))?;
        tracing::info!(started_from = %graph.started_from, position = graph.applied(), "graph projection ready");
        let bootstrap_token =
            if settings.read_only { None } else { bootstrap(store.as_ref(), &access, &settings, &options).await? };

        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| StartError::Listen { address: settings.listen, source })?;
        let local_addr = listener.local_addr().map_err(|e| StartError::Io(e.to_string()))?;
        let slots = listener::Slots::new(listener::ConnectionLimits {
            max_connections: settings.max_connections,
            reserved_authenticated: settings.reserved_authenticated_connections,
            per_address: settings.max_connections_per_address,
            header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        });

        let application = Arc::new(App::new(
            store.clone(),
            graph.clone(),
            access.clone(),
            options.clock.clone(),
            app_settings(&settings),
        ));
        if settings.demo {
            demo::release_story(&application)
                .await
                .map_err(|e| StartError::Io(format!("the demo's release story: {e}")))?;
            demo::hooks(&application).await.map_err(|e| StartError::Io(format!("the demo's hooks: {e}")))?;
        }
        let app = Arc::new(AppState {
            store,
            access,
            settings: settings.clone(),
            clock: options.clock.clone(),
            ids: options.ids.clone(),
            shutdown: CancellationToken::new(),
            graph,
            app: application,
            budgets: budget::Budgets::new(settings.cost_burst_seconds),
        });
        let (schema, limits) = build_schema(app.clone()).map_err(StartError::Io)?;
        let state = ServerState(Arc::new(ServerShared {
            app: app.clone(),
            schema,
            limits,
            documents: graphql::documents::Documents::default(),
            metrics: metrics::prometheus(),
            ws_tasks: TaskTracker::new(),
            slots: slots.clone(),
            hook_limiter: hooks::SourceLimiter::new(settings.hook_deliveries_per_second),
        }));
        let router = router(state.clone());
        let server_file = data_dir.join(SERVER_FILE_NAME);
        write_server_file(&server_file, local_addr);
        if !settings.read_only {
            start_background(&app, &settings)?;
        }

        let checkpoints = data_dir.join(PROJECTIONS_DIR);
        let http_shutdown = CancellationToken::new();
        let signal = http_shutdown.clone();
        let grace = Duration::from_millis(settings.shutdown_grace_ms);
        let finished = tokio::spawn(async move {
            let serve = listener::serve(listener, router, slots, signal.clone());
            tokio::pin!(serve);
            // In-flight requests (and the appends they wait for) finish within the grace.
            tokio::select! {
                _ = &mut serve => {}
                _ = async { signal.cancelled().await; tokio::time::sleep(grace).await } => {
                    tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running after the shutdown grace; dropping them");
                }
            }
            // A last checkpoint, so the next start does not replay what this run applied.
            let mut saved = u64::MAX;
            if let Err(error) = runner::save_checkpoint(&app.graph, &checkpoints, &mut saved).await {
                tracing::warn!(%error, "could not save the graph checkpoint at shutdown");
            }
            // Subscriptions complete and WebSockets close, then the log closes.
            app.shutdown.cancel();
            state.ws_tasks.close();
            let _ = tokio::time::timeout(Duration::from_millis(WS_CLOSE_WAIT_MS), state.ws_tasks.wait()).await;
            opened.shutdown().await;
            let _ = std::fs::remove_file(&server_file);
            tracing::info!("shut down");
        });
        tracing::info!(address = %local_addr, "listening");
        Ok(Server { local_addr, bootstrap_token, http_shutdown, finished })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin token created on a new data directory (shown once).
    pub fn bootstrap_token(&self) -> Option<&str> {
        self.bootstrap_token.as_deref()
    }

    /// A handle that starts the shutdown.
    pub fn shutdown_trigger(&self) -> CancellationToken {
        self.http_shutdown.clone()
    }

    /// Starts the shutdown and waits for it to finish.
    pub async fn shutdown(self) {
        self.http_shutdown.cancel();
        let _ = self.finished.await;
    }

    /// Waits until something else triggered the shutdown and it finished.
    pub async fn finished(self) {
        let _ = self.finished.await;
    }
}

/// Opens the log the options name (the embedded one in `data_dir` by default), read-only for
/// a follower, instrumented. Returns the backend (to shut it down) and the store every part
/// of the server uses.
async fn open_log(
    data_dir: &Path,
    settings: &ServeSettings,
    options: &StartOptions,
) -> Result<(OpenedStore, Arc<dyn EventStore>), StartError> {
    let store_options = SqliteOptions { clock: options.clock.clone(), ..options.store_options.clone() };
    let location = options.location.clone().unwrap_or_else(|| StoreLocation::Sqlite(data_dir.to_path_buf()));
    let opened =
        location.open(store_options, options.postgres_options.clone()).await.map_err(cmdb_core::Error::from)?;
    tracing::info!(store = %location, read_only = settings.read_only, "event log open");
    let log = if settings.read_only {
        let writes_go_to = settings
            .writes_go_to
            .clone()
            .unwrap_or_else(|| "a server on the same log started without --read-only".to_string());
        Arc::new(ReadOnlyStore::new(opened.as_dyn(), writes_go_to)) as Arc<dyn EventStore>
    } else {
        opened.as_dyn()
    };
    let store: Arc<dyn EventStore> = Arc::new(metrics::InstrumentedStore::new(log));
    Ok((opened, store))
}

/// What the application layer takes from the server's settings.
pub fn app_settings(settings: &ServeSettings) -> AppSettings {
    AppSettings {
        change: cmdb_core::change::ChangeSettings {
            emergency_review_deadline_hours: settings.emergency_review_deadline_hours,
            freeze_blocks_standard: settings.freeze_blocks_standard,
        },
        facts: cmdb_projections::facts::FactSettings {
            history_days: settings.risk_history_days,
            conflict_max_depth: settings.conflict_max_depth,
        },
        apply_wait: Duration::from_millis(settings.min_position_wait_ms),
    }
}

#[derive(serde::Serialize, Deserialize)]
/// What a running server writes into its data directory, for CLI commands.
pub struct ServerFile {
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub address: SocketAddr,
}

fn write_server_file(path: &Path, address: SocketAddr) {
    let contents = serde_json::json!({ "pid": std::process::id(), "address": address }).to_string();
    if let Err(error) = std::fs::write(path, contents) {
        tracing::warn!(%error, path = %path.display(), "cannot write the server file; CLI commands will not notify this server");
    }
}

/// Where a server on this data directory listens, if one wrote its file.
pub fn running_server(data_dir: &Path) -> Option<ServerFile> {
    let text = std::fs::read_to_string(data_dir.join(SERVER_FILE_NAME)).ok()?;
    serde_json::from_str(&text).ok()
}

/// On a log where no principal is an admin (a new log, or a loaded demo whose principals are
/// not admins): create `admin` and, unless told not to, its first token.
async fn bootstrap(
    store: &dyn EventStore,
    access: &AccessView,
    settings: &ServeSettings,
    options: &StartOptions,
) -> Result<Option<String>, StartError> {
    let state = access.snapshot();
    if state.principals.values().any(|p| p.roles.contains(&Role::Admin)) {
        return Ok(None);
    }
    let metadata = Metadata::new(Actor::system(), Source::System).with_correlation_id("bootstrap");
    let create = AccessCommand::CreatePrincipal {
        name: BOOTSTRAP_ADMIN.into(),
        kind: PrincipalKind::Person,
        display_name: Some("Bootstrap administrator".into()),
        roles: [Role::Admin].into_iter().collect(),
    };
    match run_offline(store, &AccessDecider, &create, metadata.clone(), options.clock.now()).await {
        Ok(_) => {}
        // Another process bootstrapped first.
        Err(cmdb_core::Error::Access(access::AccessError::PrincipalExists(_))) => return Ok(None),
        Err(other) => return Err(other.into()),
    }
    if settings.no_bootstrap_token {
        return Ok(None);
    }
    let token = graphql::new_token_text();
    let issue = AccessCommand::IssueToken {
        principal: BOOTSTRAP_ADMIN.into(),
        token_id: options.ids.next_id(),
        token_hash: token_hash(&token),
        label: Some("bootstrap".into()),
        expires_at: None,
    };
    let outcome = run_offline(store, &AccessDecider, &issue, metadata, options.clock.now()).await?.outcome;
    access.wait_for(outcome.last_position, Duration::from_millis(settings.min_position_wait_ms)).await;
    Ok(Some(token))
}

fn router(state: ServerState) -> Router {
    let timeout = Duration::from_millis(state.app.settings.request_timeout_ms);
    let http = Router::new()
        .route("/graphql", get(graphiql::page).post(graphql_post))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/calendar.ics", get(ics::calendar_ics))
        .route("/api/v1/gate", axum::routing::post(gate::gate))
        .route("/api/v1/deployments/report", axum::routing::post(gate::report))
        .route("/hooks/github", axum::routing::post(hooks::github::receive))
        .route("/hooks/cdevents", axum::routing::post(hooks::cdevents::receive))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout));
    let ws = Router::new().route("/graphql/ws", get(ws::graphql_ws));
    http.merge(ws)
        .route_layer(middleware::from_fn(metrics::track_http))
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), listener::admit))
        .layer(middleware::from_fn(correlation))
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        errors::error_body("NOT_FOUND", "no such route; the API is at /graphql"),
    )
        .into_response()
}

/// Takes or makes the correlation id, hands it to the handlers, returns it on the response.
async fn correlation(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get("x-request-id") {
        None => uuid::Uuid::now_v7().to_string(),
        Some(value) => {
            let valid = value.to_str().ok().filter(|v| {
                !v.is_empty() && v.len() <= MAX_REQUEST_ID_BYTES && v.bytes().all(|b| b.is_ascii_graphic())
            });
            match valid {
                Some(v) => v.to_owned(),
                None => {
                    return ApiError::BadRequest(format!(
                        "X-Request-Id must be 1 to {MAX_REQUEST_ID_BYTES} visible ASCII characters"
                    ))
                    .into_response();
                }
            }
        }
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The Content-Security-Policy of every answer that is not a page: nothing may load.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";
/// The Content-Security-Policy of GraphiQL: scripts, styles and fonts from this server only,
/// requests to this server only (HTTP and its WebSocket), never framed.
pub const PAGE_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Security headers on every answer: no sniffing, no framing, no referrer, a strict CSP (the
/// page's own on HTML), and `no-store` on everything but the health probes (answers carry
/// tokens, the estate, and the feed is authenticated by a URL token).
async fn security_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let is_page =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/html"));
    let policy = if is_page { PAGE_CONTENT_SECURITY_POLICY } else { API_CONTENT_SECURITY_POLICY };
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    if path != "/healthz" && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Bodies from this size up are parsed and measured off the async worker: parsing a large
/// query takes long enough (a second for 800 KB in a debug build) that the requests queued
/// behind it on the same worker would wait, however cheap they are.
pub const LARGE_BODY_BYTES: usize = 64 * 1024;

/// Answers whose worst-case cost reaches this many units (about a page of 1,000 rows of a few
/// fields) are serialised off the async worker.
pub const LARGE_ANSWER_COST: u64 = 20_000;

/// Runs `work` so that a large body does not hold up the worker's other requests: on the
/// multi-threaded runtime, the worker hands its queue to another thread for the duration.
fn off_the_worker<T>(body_bytes: usize, work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if body_bytes >= LARGE_BODY_BYTES && multi_thread { tokio::task::block_in_place(work) } else { work() }
}

async fn graphql_post(
    State(state): State<ServerState>,
    axum::extract::Extension(request_id): axum::extract::Extension<RequestId>,
    Authenticated(caller): Authenticated,
    body: Body,
) -> Result<Response, ApiError> {
    let settings = &state.app.settings;
    let bound = settings.max_request_body_bytes;
    let bytes = axum::body::to_bytes(body, bound).await.map_err(|_| ApiError::PayloadTooLarge { bound })?;
    let request: async_graphql::BatchRequest =
        off_the_worker(bytes.len(), || serde_json::from_slice(&bytes)).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body is not a GraphQL request ({{\"query\": \"...\", \"variables\": {{...}}}} as JSON): {e}"
            ))
        })?;
    let rate = settings.cost_per_second.of(&caller.roles);
    state.app.budgets.admit(caller.token_id, rate, std::time::Instant::now()).map_err(|retry| {
        ::metrics::counter!("graphql_requests_refused_total", "reason" => "rate_limited").increment(1);
        ApiError::RateLimited { retry_after_seconds: retry.seconds }
    })?;
    let admitted = off_the_worker(bytes.len(), || {
        admit_batch(&state.limits, &state.documents, settings.max_batch_operations, request)
    });
    let (mut request, cost) = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return Ok(graphql_json(&async_graphql::Response::from_errors(vec![error]))),
    };
    if let async_graphql::BatchRequest::Batch(requests) = &mut request {
        for one in requests {
            one.data.insert(Admitted);
        }
    } else if let async_graphql::BatchRequest::Single(one) = &mut request {
        one.data.insert(Admitted);
    }
    let request = request.data(caller).data(RequestContext { correlation_id: request_id.0 });
    let response = if cost >= LARGE_ANSWER_COST {
        execute_off_the_workers(&state.schema, request).await?
    } else {
        state.schema.execute_batch(request).await
    };
    let max_bytes = settings.max_response_bytes;
    let mut body = BoundedWriter { bytes: Vec::new(), bound: max_bytes };
    // A large answer is written off the worker, for the same reason a large body is parsed so.
    let size = if cost >= LARGE_ANSWER_COST { LARGE_BODY_BYTES } else { 0 };
    if off_the_worker(size, || serde_json::to_writer(&mut body, &response)).is_err() {
        ::metrics::counter!("graphql_requests_refused_total", "reason" => "response_bytes").increment(1);
        let error = graphql::limits::limit_error(
            "The answer grew too large; ask for fewer fields or a smaller page",
            "max_response_bytes",
            max_bytes as u64,
            None,
        );
        return Ok(graphql_json(&async_graphql::Response::from_errors(vec![error])));
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body.bytes).into_response())
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

/// A GraphQL answer as JSON.
fn graphql_json(response: &async_graphql::Response) -> Response {
    let body = serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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

async fn healthz() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], r#"{"status":"ok"}"#).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadyQuery {
    min_position: Option<u64>,
}

/// Ready when the log is open and every projection has applied the head (or `minPosition`,
/// waiting up to `min_position_wait_ms` for it). Open, so load balancers and the CLI can ask.
async fn readyz(
    State(state): State<ServerState>,
    query: Result<Query<ReadyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::BadRequest("minPosition must be a whole number >= 0".into()).into_response();
    };
    let app = &state.app;
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "ready": false, "reason": reason }).to_string(),
        )
            .into_response()
    };
    if app.shutdown.is_cancelled() {
        return not_ready("shutting down".into());
    }
    if let Some(reason) = app.access.failure() {
        return not_ready(format!("projection access stopped: {reason}"));
    }
    if let Some(reason) = app.graph.failure() {
        return not_ready(format!("projection graph stopped: {reason}"));
    }
    // Commits by other processes (the CLI) become visible now, not at the next poll.
    let head = match app.store.refresh_head().await {
        Ok(head) => head,
        Err(error) => return not_ready(format!("the log is not readable: {error}")),
    };
    let target = query.min_position.unwrap_or(head);
    let wait = Duration::from_millis(if query.min_position.is_some() { app.settings.min_position_wait_ms } else { 0 });
    if !app.access.wait_for(target, wait).await {
        return not_ready(format!("projection access is at {}, the target is {target}", app.access.applied()));
    }
    if !app.graph.wait_for(target, wait).await {
        return not_ready(format!("projection graph is at {}, the target is {target}", app.graph.applied()));
    }
    let lag = |applied: u64| head.saturating_sub(applied);
    let body = serde_json::json!({
        "ready": true,
        "head": head,
        "projections": {
            "access": { "applied": app.access.applied(), "lag": lag(app.access.applied()) },
            "graph": { "applied": app.graph.applied(), "lag": lag(app.graph.applied()) },
        },
    });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics_text(
    State(state): State<ServerState>,
    Authenticated(caller): Authenticated,
) -> Result<Response, ApiError> {
    if !permits(&caller.roles, Operation::ReadMetrics) {
        return Err(ApiError::Forbidden(Operation::ReadMetrics));
    }
    let head = *state.app.store.watch_head().borrow();
    ::metrics::gauge!("log_head_position").set(head as f64);
    let (connections, anonymous) = state.slots.held();
    ::metrics::gauge!("http_connections_open", "standing" => "all").set(connections as f64);
    ::metrics::gauge!("http_connections_open", "standing" => "anonymous").set(anonymous as f64);
    ::metrics::gauge!("projection_lag_events", "projection" => "access")
        .set(head.saturating_sub(state.app.access.applied()) as f64);
    ::metrics::gauge!("projection_lag_events", "projection" => "graph")
        .set(head.saturating_sub(state.app.graph.applied()) as f64);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response())
}

/// The path of the log file in a data directory.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(cmdb_core::store::sqlite::LOG_FILE_NAME)
}
