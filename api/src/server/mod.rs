//! `cmdb serve`: the HTTP server. Routes, the shared state, start-up (open the log, follow
//! access, bootstrap an admin), and graceful shutdown (stop accepting, finish in-flight
//! requests and their appends, complete subscriptions, close the log).

pub mod auth;
pub mod budget;
mod checkpoint_http;
mod console;
pub mod demo;
pub mod errors;
pub mod gate;
mod graphiql;
pub mod graphql;
pub mod graphql_http;
pub mod hooks;
pub mod ics;
pub mod listener;
pub mod metrics;
pub mod outbound;
mod static_files;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
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
use graphql::{CmdbSchema, Limits, build_schema};

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
    /// The Merkle tree, the signed checkpoints and the key that signs them.
    pub evidence: crate::app::evidence::Evidence,
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
    /// The estate's gauges, recomputed at most so often.
    pub business_gauges: metrics::BusinessGauges,
}

/// The tasks that talk to other systems: outbound CDEvents, protection-rule answers.
fn start_background(app: &Arc<AppState>, settings: &ServeSettings) -> Result<(), StartError> {
    outbound::start_dispatchers(&app.app, settings, &app.shutdown);
    tokio::spawn(crate::app::evidence::signer_loop(
        app.evidence.clone(),
        app.app.clone(),
        settings.sign_every_events,
        settings.sign_every_ms,
        app.shutdown.clone(),
    ));
    if let Some(auth) = hooks::protection::GithubAuth::from_settings(settings).map_err(StartError::Settings)? {
        let principal = settings.github_hook_principal.clone();
        tokio::spawn(hooks::protection::answer_callbacks(app.app.clone(), auth, principal, app.shutdown.clone()));
    }
    Ok(())
}

/// The graph and the evidence projections, caught up with the log (both at once: from the
/// same position, one read of the log feeds both, `runner::start_pair`), and the signing
/// key, read first so that a bad key stops the start before any catch-up.
async fn start_projections(
    store: &Arc<dyn EventStore>,
    data_dir: &Path,
    settings: &ServeSettings,
) -> Result<(ProjectionHandle<TemporalGraph>, crate::app::evidence::Evidence), StartError> {
    let key = signing_key(data_dir, settings)?;
    let options = RunnerOptions {
        checkpoint_dir: Some(data_dir.join(PROJECTIONS_DIR)),
        checkpoint_interval_ms: settings.checkpoint_interval_ms,
        ..RunnerOptions::default()
    };
    let (graph, evidence_log) =
        runner::start_pair::<TemporalGraph, cmdb_projections::evidence::EvidenceLog>(store.clone(), options)
            .await
            .map_err(|e| StartError::Io(e.to_string()))?;
    tracing::info!(started_from = %graph.started_from, position = graph.applied(), "graph projection ready");
    let evidence = crate::app::evidence::Evidence::new(evidence_log, key);
    if let Some(verifier) = evidence.verifier() {
        tracing::info!(%verifier, "checkpoints are signed; verify them with this key");
    }
    Ok((graph, evidence))
}

/// Saves every projection's checkpoint (at shutdown: the next start replays nothing).
async fn save_checkpoints(app: &AppState, dir: &Path) {
    let mut saved = u64::MAX;
    if let Err(error) = runner::save_checkpoint(&app.graph, dir, &mut saved).await {
        tracing::warn!(%error, "could not save the graph checkpoint at shutdown");
    }
    let mut saved = u64::MAX;
    if let Err(error) = runner::save_checkpoint(&app.evidence.log, dir, &mut saved).await {
        tracing::warn!(%error, "could not save the evidence checkpoint at shutdown");
    }
}

/// Signs the checkpoint that is already due (a log that grew while no key was configured, the
/// demo's history) before the server answers, so that it is not appended under a client's
/// first requests.
async fn sign_before_serving(app: &AppState, settings: &ServeSettings) {
    if app.evidence.verifier().is_none() || app.evidence.log.read().uncovered_events() < settings.sign_every_events {
        return;
    }
    let metadata = cmdb_core::Metadata::new(cmdb_core::Actor::system(), cmdb_core::Source::System);
    match app.evidence.sign_now(&app.app, metadata).await {
        Ok(checkpoint) => tracing::info!(size = checkpoint.signed.size, "checkpoint signed at start"),
        Err(error) => tracing::warn!(%error, "could not sign a checkpoint at start; the schedule will retry"),
    }
}

/// The name of the key `--demo` creates in the data directory when none is given.
pub const DEMO_SIGNING_KEY_FILE: &str = "signing.key";
/// The origin (log name) of the demo's key.
pub const DEMO_ORIGIN: &str = "cmdb.demo/log";

/// The checkpoint signing key: `--signing-key`, else under `--demo` the data directory's own
/// (created on first start), else none.
fn signing_key(data_dir: &Path, settings: &ServeSettings) -> Result<Option<cmdb_core::note::NoteSigner>, StartError> {
    use crate::app::evidence::{create_key_file, generate_key, read_key_file};
    let settings_error = |e: crate::app::evidence::KeyFileError| StartError::Settings(e.to_string());
    if let Some(path) = &settings.signing_key {
        return read_key_file(path).map(Some).map_err(settings_error);
    }
    if !settings.demo || settings.read_only {
        return Ok(None);
    }
    let path = data_dir.join(DEMO_SIGNING_KEY_FILE);
    if !path.exists() {
        let key = generate_key(DEMO_ORIGIN).map_err(|e| StartError::Settings(e.to_string()))?;
        create_key_file(&path, &key).map_err(settings_error)?;
    }
    read_key_file(&path).map(Some).map_err(settings_error)
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
        let (graph, evidence) = start_projections(&store, data_dir, &settings).await?;
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
            demo::stories(&application).await?;
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
            evidence,
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
            business_gauges: metrics::BusinessGauges::default(),
        }));
        let router = router(state.clone());
        let server_file = data_dir.join(SERVER_FILE_NAME);
        write_server_file(&server_file, local_addr);
        if !settings.read_only {
            sign_before_serving(&app, &settings).await;
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
            save_checkpoints(&app, &checkpoints).await;
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
        .route("/graphql", get(graphql_http::get).post(graphql_http::post))
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/", get(console::page))
        .route("/console/{file}", get(console::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/calendar.ics", get(ics::calendar_ics))
        .route("/api/v1/checkpoint", get(checkpoint_http::checkpoint))
        .route("/api/v1/gate", axum::routing::post(gate::gate))
        .route("/api/v1/deployments/report", axum::routing::post(gate::report))
        .route("/hooks/github", axum::routing::post(hooks::github::receive))
        .route("/hooks/cdevents", axum::routing::post(hooks::cdevents::receive))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout));
    let ws = Router::new().route("/graphql/ws", get(ws::graphql_ws));
    let cors = cors_layer(&state.app.settings.cors_allow_origins);
    http.merge(ws)
        .route_layer(middleware::from_fn(metrics::track_http))
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .layer(tower::util::option_layer(cors))
        .layer(middleware::from_fn_with_state(state.clone(), listener::admit))
        .layer(middleware::from_fn(correlation))
        .with_state(state)
}

/// How long a browser may keep a preflight's answer.
pub const CORS_MAX_AGE_SECONDS: u64 = 600;

/// Cross-origin calls from the allowed origins' pages (none unless `--cors-allow-origin`):
/// the preflight is answered for them only, with the methods and headers the API reads; the
/// headers a client needs (the request id, `Retry-After`, `WWW-Authenticate`) are exposed;
/// credentials (cookies) are never allowed, so `*` cannot lend a browser's ambient
/// authority to any page: a page sends its token in `Authorization`.
fn cors_layer(origins: &[crate::settings::CorsOrigin]) -> Option<tower_http::cors::CorsLayer> {
    use crate::settings::CorsOrigin;
    use axum::http::Method;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&CorsOrigin::Any) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| match o {
            CorsOrigin::Exact(text) => HeaderValue::from_str(text).ok(),
            CorsOrigin::Any => None,
        }))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::HeaderName::from_static("x-request-id"),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .allow_credentials(false)
            .max_age(Duration::from_secs(CORS_MAX_AGE_SECONDS)),
    )
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
/// The Content-Security-Policy of the pages (GraphiQL, the console): scripts, styles and fonts from this server only,
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
    if let Some(reason) = app.evidence.log.failure() {
        return not_ready(format!("projection evidence stopped: {reason}"));
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
            // Reported, not waited for: proofs name their tree size, and the tree follows
            // the log on its own (a lag here delays only the newest events' proofs).
            "evidence": { "applied": app.evidence.log.applied(), "lag": lag(app.evidence.log.applied()) },
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
    metrics::process_collector().collect();
    let now = state.app.clock.now();
    let (gauges, graph) = (&state.business_gauges, &state.app.graph);
    // Counting a large estate takes milliseconds: off the async worker.
    graphql_http::blocking(|| {
        let graph = graph.read();
        gauges.refresh(&graph, graph.applied(), now);
    });
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response())
}

/// The path of the log file in a data directory.
pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(cmdb_core::store::sqlite::LOG_FILE_NAME)
}
