//! The committed head as a process knows it: published after each durable commit (and when
//! commits by other processes are noticed), never going backwards. Shared by the backends.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::chain::Digest;
use crate::store::StoreError;

/// Publishes the committed head (position and hash); closed (dropped) at shutdown so
/// subscriptions end. `head()` answers from here without touching the file.
pub(crate) struct HeadPublisher {
    sender: Mutex<Option<watch::Sender<u64>>>,
    digest: Mutex<Digest>,
}

impl HeadPublisher {
    pub(crate) fn publish(&self, digest: Digest) {
        let position = digest.position;
        if let Ok(mut current) = self.digest.lock()
            && position > current.position
        {
            *current = digest;
        }
        if let Ok(guard) = self.sender.lock()
            && let Some(sender) = guard.as_ref()
        {
            sender.send_if_modified(|head| {
                let advanced = position > *head;
                if advanced {
                    *head = position;
                }
                advanced
            });
        }
    }

    pub(crate) fn close(&self) {
        if let Ok(mut guard) = self.sender.lock() {
            guard.take();
        }
    }
}

impl HeadPublisher {
    pub(crate) fn new(sender: watch::Sender<u64>, digest: Digest) -> Self {
        HeadPublisher { sender: Mutex::new(Some(sender)), digest: Mutex::new(digest) }
    }

    /// The last published digest.
    pub(crate) fn digest(&self) -> Result<Digest, StoreError> {
        self.digest.lock().map(|d| *d).map_err(|_| StoreError::Storage("head lock poisoned".into()))
    }
}
