//! A read-only view of a store, for followers (`cmdb serve --read-only`): every read, the
//! head and subscriptions pass through; every append is refused with
//! [`StoreError::ReadOnly`] naming where writes go, before it reaches the log.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::chain::Digest;
use crate::event::{EventRecord, StreamId};
use crate::store::{
    AppendOutcome, AppendRequest, Capabilities, Direction, Erasure, EventStore, StoreError, StoreLimits,
};
use crate::time::Timestamp;

/// Refuses appends; passes everything else to `inner`.
pub struct ReadOnlyStore {
    inner: Arc<dyn EventStore>,
    writes_go_to: String,
}

impl ReadOnlyStore {
    /// `writes_go_to` says where to send writes (a URL, or a sentence).
    pub fn new(inner: Arc<dyn EventStore>, writes_go_to: impl Into<String>) -> Self {
        ReadOnlyStore { inner, writes_go_to: writes_go_to.into() }
    }
}

#[async_trait]
impl EventStore for ReadOnlyStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }

    async fn append(&self, _request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        Err(StoreError::ReadOnly(format!("send writes to {}", self.writes_go_to)))
    }

    async fn redact(&self, _erasures: Vec<Erasure>, _record: AppendRequest) -> Result<AppendOutcome, StoreError> {
        Err(StoreError::ReadOnly(format!("send redactions to {}", self.writes_go_to)))
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

    async fn read_fold(&self, after: u64, max_count: usize) -> Result<Vec<crate::FoldRecord>, StoreError> {
        self.inner.read_fold(after, max_count).await
    }

    async fn read_links(&self, after: u64, max_count: usize) -> Result<Vec<crate::ChainLink>, StoreError> {
        self.inner.read_links(after, max_count).await
    }

    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError> {
        self.inner.event_at(position).await
    }

    async fn head(&self) -> Result<Digest, StoreError> {
        self.inner.head().await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
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

    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}
