//! Prometheus metrics through the `metrics` facade: HTTP requests by route and status, append
//! latency and batch size, the head position and projection lag (GraphQL operation latency by
//! kind is recorded by `graphql/observe.rs`). Labels are bounded (route templates, status codes,
//! operation kinds), never user text.

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

/// The process-wide Prometheus recorder (installed once; servers in one process share it).
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("log_append_batch_events".into()), BATCH_BUCKETS_EVENTS));
            match builder.map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => handle,
                other => {
                    tracing::warn!(error = ?other.err(), "could not install the metrics recorder; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
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
