//! The server's live view of principals and tokens: the access stream folded, kept current by
//! following the log. Authentication reads it without touching the store.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cmdb_core::EventStore;
use cmdb_core::access::{self, AccessState, access_stream};
use cmdb_core::store::subscribe;
use futures::StreamExt;
use tokio::sync::watch;

/// Events read per page while following the log.
const FOLLOW_PAGE_EVENTS: usize = 1000;

/// Principals and tokens as the log holds them, followed live.
pub struct AccessView {
    state: RwLock<Arc<AccessState>>,
    applied: watch::Sender<u64>,
    failure: Mutex<Option<String>>,
}

impl AccessView {
    /// Loads the access stream, then follows the log from the head it saw.
    pub async fn start(store: Arc<dyn EventStore>) -> Result<Arc<AccessView>, cmdb_core::Error> {
        // The head first, then the state: the state may already include events past that head,
        // which the follower recognises by their stream version and skips.
        let head = store.head().await?.position;
        let state = access::load_state(store.as_ref()).await?;
        let applied = head.max(state.position);
        let (sender, _) = watch::channel(applied);
        let view =
            Arc::new(AccessView { state: RwLock::new(Arc::new(state)), applied: sender, failure: Mutex::new(None) });
        let follower = view.clone();
        tokio::spawn(async move {
            let mut events = subscribe(store.clone(), applied, FOLLOW_PAGE_EVENTS);
            let stream = access_stream();
            while let Some(next) = events.next().await {
                let record = match next {
                    Ok(record) => record,
                    Err(error) => {
                        follower.fail(format!("following the log failed: {error}"));
                        return;
                    }
                };
                if record.event_type == cmdb_core::chain::REDACTION_APPLIED {
                    // Erased display names and labels: fold the access stream again from the
                    // log, as the projections rebuild (events past this record it may already
                    // hold are skipped below by their stream version).
                    match access::load_state(store.as_ref()).await {
                        Ok(reloaded) => {
                            if let Ok(mut state) = follower.state.write() {
                                *state = Arc::new(reloaded);
                            }
                        }
                        Err(error) => {
                            follower.fail(format!("reloading after a redaction failed: {error}"));
                            return;
                        }
                    }
                }
                if record.stream_id == stream {
                    let current = follower.snapshot();
                    if current.version.is_none_or(|v| record.stream_version > v) {
                        let mut next_state = (*current).clone();
                        if let Err(error) = next_state.apply(&record) {
                            follower.fail(error.to_string());
                            return;
                        }
                        if let Ok(mut state) = follower.state.write() {
                            *state = Arc::new(next_state);
                        }
                    }
                }
                follower.applied.send_replace(record.position);
            }
        });
        Ok(view)
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the access view stopped");
        if let Ok(mut failure) = self.failure.lock() {
            *failure = Some(reason);
        }
    }

    /// The current access state; an immutable snapshot.
    pub fn snapshot(&self) -> Arc<AccessState> {
        self.state.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The log position the view has applied through.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Why the view stopped following the log, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Waits until the view has applied `position`; false on timeout.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|p| *p >= position)).await.is_ok_and(|r| r.is_ok())
    }
}
