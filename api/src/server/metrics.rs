//! Prometheus metrics through the `metrics` facade: HTTP requests by route and status, append
//! latency and batch size, the head position and projection lag (GraphQL operation latency by
//! kind is recorded by `graphql/observe.rs`), the process (CPU, memory, open files), and the
//! estate's business gauges (CIs by class and status, changes by state, overdue and
//! unauthorised changes). Every family has HELP text ([`FAMILIES`]). Labels are bounded (route
//! templates, status codes, operation kinds, classes, states), never user text.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use cmdb_core::chain::{Digest, DigestCheck, VerifyReport};
use cmdb_core::store::{AppendOutcome, AppendRequest, Capabilities, Direction, EventStore, StoreError, StoreLimits};
use cmdb_core::{EventRecord, StreamId, Timestamp};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS_EVENTS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 10000.0];

/// What kind of family a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution in buckets.
    Histogram,
}

/// Every family the engine records (the process collector describes its own), with its HELP
/// text: a new family must be added here, and a test holds every family `/metrics` renders to
/// having HELP.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    ("http_requests_total", Kind::Counter, "HTTP requests answered, by route template, method and status."),
    ("http_request_duration_seconds", Kind::Histogram, "Time to answer an HTTP request, by route template and status."),
    (
        "http_connections_open",
        Kind::Gauge,
        "Connections held now; standing=anonymous counts those that have not shown a valid token.",
    ),
    ("http_connections_refused_total", Kind::Counter, "Connections refused at max_connections, by reason."),
    (
        "http_connections_evicted_total",
        Kind::Counter,
        "Connections without a valid token closed to make room for others.",
    ),
    (
        "graphql_operation_duration_seconds",
        Kind::Histogram,
        "Time to execute a GraphQL operation, by kind (query, mutation, subscription).",
    ),
    (
        "graphql_requests_refused_total",
        Kind::Counter,
        "GraphQL requests refused before or while running, by the limit that refused them.",
    ),
    (
        "graphql_lists_total",
        Kind::Counter,
        "Large GraphQL lists answered, by how: written as text from the graph, or field by field.",
    ),
    (
        "graphql_validations_kept_hits_total",
        Kind::Counter,
        "GraphQL requests whose query text, operation and variables were validated before (the rules skipped).",
    ),
    (
        "graphql_documents_kept_hits_total",
        Kind::Counter,
        "GraphQL requests whose query text was parsed before and reused.",
    ),
    (
        "log_append_duration_seconds",
        Kind::Histogram,
        "Time to append a batch of events to the log, by outcome (ok, conflict, error).",
    ),
    ("log_append_batch_events", Kind::Histogram, "Events per append."),
    ("log_head_position", Kind::Gauge, "The position of the last event in the log."),
    ("projection_lag_events", Kind::Gauge, "Events in the log a projection has not applied yet, by projection."),
    ("impact_cache_hits_total", Kind::Counter, "Impact walks answered from the cache."),
    ("impact_cache_misses_total", Kind::Counter, "Impact walks computed."),
    ("impact_cache_bytes", Kind::Gauge, "Bytes held by the impact cache (bounded by IMPACT_CACHE_MAX_BYTES)."),
    ("impact_cache_entries", Kind::Gauge, "Answers held by the impact cache."),
    ("outbound_delivered_total", Kind::Counter, "CDEvents delivered to an outbound target, by target."),
    (
        "outbound_dead_letters_total",
        Kind::Counter,
        "CDEvents an outbound target did not take after every attempt, by target.",
    ),
    ("estate_cis", Kind::Gauge, "CIs at the head by class and status (withdrawn ones included)."),
    (
        "changes_by_state",
        Kind::Gauge,
        "Changes at the head by state; open ones are every state but closed, rejected and cancelled.",
    ),
    ("changes_overdue", Kind::Gauge, "Emergency changes whose approval or review is overdue now (CH-8)."),
    (
        "unauthorised_changes_recorded",
        Kind::Gauge,
        "Unauthorised changes recorded in the log (deployments no change covered).",
    ),
    (
        "business_gauges_age_seconds",
        Kind::Gauge,
        "How old the business gauges are: they are recomputed at most every BUSINESS_GAUGES_REFRESH_MS.",
    ),
];

/// Gives every family its HELP text, and the process collector its own.
fn describe() {
    for (name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
    process_collector().describe();
}

/// The process metrics: CPU seconds, resident and virtual memory, open and maximum files,
/// threads, start time.
pub fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The process-wide Prometheus recorder (installed once; servers in one process share it).
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("log_append_batch_events".into()), BATCH_BUCKETS_EVENTS));
            match builder.map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => {
                    describe();
                    handle
                }
                other => {
                    tracing::warn!(error = ?other.err(), "could not install the metrics recorder; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Longest the business gauges are reused before a scrape recomputes them, in milliseconds:
/// counting a large estate's CIs and changes takes tens of milliseconds, and scrapes come
/// every few seconds from each Prometheus.
pub const BUSINESS_GAUGES_REFRESH_MS: u64 = 5_000;

/// Longest the business gauges of an unchanged log are reused, in milliseconds (what is
/// overdue changes with the time alone).
pub const BUSINESS_GAUGES_MAX_AGE_MS: u64 = 60_000;

/// When the business gauges were last computed, and at which position.
#[derive(Default)]
pub struct BusinessGauges {
    last: std::sync::Mutex<Option<(Instant, u64)>>,
}

impl BusinessGauges {
    /// Sets the business gauges from the graph at `position`, unless they were set for the same
    /// position, or less than [`BUSINESS_GAUGES_REFRESH_MS`] ago.
    pub fn refresh(&self, graph: &cmdb_projections::graph::TemporalGraph, position: u64, now: cmdb_core::Timestamp) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, was)) = *last {
            let age = at.elapsed();
            metrics::gauge!("business_gauges_age_seconds").set(age.as_secs_f64());
            // Overdue depends on the time: even an unchanged log is counted again in a while.
            let unchanged_for = std::time::Duration::from_millis(BUSINESS_GAUGES_MAX_AGE_MS);
            if age < std::time::Duration::from_millis(BUSINESS_GAUGES_REFRESH_MS)
                || (was == position && age < unchanged_for)
            {
                return;
            }
        }
        set_business_gauges(graph, position, now);
        metrics::gauge!("business_gauges_age_seconds").set(0.0);
        *last = Some((Instant::now(), position));
    }
}

/// Every class's count for every status (zeros too, so a count that fell to nothing does not
/// linger), every state's count, overdue and unauthorised changes.
fn set_business_gauges(graph: &cmdb_projections::graph::TemporalGraph, position: u64, now: cmdb_core::Timestamp) {
    use cmdb_core::change::ChangeState;
    use cmdb_core::model::Status;
    let tally = graph.ci_tally_at(position);
    let classes: std::collections::BTreeSet<_> = tally.keys().map(|(class, _)| *class).collect();
    for class in classes {
        for status in Status::ALL {
            let count = tally.get(&(class, *status)).copied().unwrap_or(0);
            metrics::gauge!("estate_cis", "class" => class.to_string(), "status" => status.as_str()).set(count as f64);
        }
    }
    let (by_state, overdue) = graph.change_book().tally_at(position, now);
    for state in ChangeState::ALL {
        let count = by_state.get(state).copied().unwrap_or(0);
        metrics::gauge!("changes_by_state", "state" => state.as_str(), "open" => if state.is_terminal() { "false" } else { "true" })
            .set(count as f64);
    }
    metrics::gauge!("changes_overdue").set(overdue as f64);
    metrics::gauge!("unauthorised_changes_recorded").set(graph.release_book().unauthorised_count_at(position) as f64);
}

/// Axum middleware (as a route layer, so the matched route template is known).
pub async fn track_http(request: Request, next: Next) -> axum::response::Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    // The route, never the path or query: a feed's query carries its token.
    tracing::debug!(%method, %route, %status, micros = started.elapsed().as_micros() as u64, "request");
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status.clone())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Wraps a store to record append latency, batch size and outcome.
pub struct InstrumentedStore {
    inner: Arc<dyn EventStore>,
}

impl InstrumentedStore {
    /// A new one.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        InstrumentedStore { inner }
    }
}

#[async_trait]
impl EventStore for InstrumentedStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }

    async fn redact(
        &self,
        erasures: Vec<cmdb_core::store::Erasure>,
        record: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.redact(erasures, record).await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let events = request.event_count();
        let started = Instant::now();
        let result = self.inner.append(request).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StoreError::VersionConflict { .. }) => "conflict",
            Err(_) => "error",
        };
        metrics::histogram!("log_append_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("log_append_batch_events").record(events as f64);
        if let Ok(outcome) = &result {
            metrics::gauge!("log_head_position").set(outcome.last_position as f64);
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.read_stream(stream, direction, from, max_count).await
    }

    async fn read_all(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.read_all(after, max_count).await
    }

    async fn read_all_stored(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.read_all_stored(after, max_count).await
    }

    async fn read_fold(&self, after: u64, max_count: usize) -> Result<Vec<cmdb_core::FoldRecord>, StoreError> {
        self.inner.read_fold(after, max_count).await
    }

    async fn read_links(&self, after: u64, max_count: usize) -> Result<Vec<cmdb_core::ChainLink>, StoreError> {
        self.inner.read_links(after, max_count).await
    }

    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError> {
        self.inner.event_at(position).await
    }

    async fn head(&self) -> Result<Digest, StoreError> {
        self.inner.head().await
    }

    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch_head()
    }

    async fn refresh_head(&self) -> Result<u64, StoreError> {
        self.inner.refresh_head().await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError> {
        self.inner.position_at(at).await
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.inner.verify().await
    }

    async fn check_digest(&self, digest: Digest) -> Result<DigestCheck, StoreError> {
        self.inner.check_digest(digest).await
    }
}
