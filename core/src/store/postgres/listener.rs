//! Following commits made by other processes: a dedicated connection `LISTEN`s on the log's
//! channel and, on a notification or every `head_poll_ms` (whichever comes first), reads the
//! last event and publishes it as the head. A notification is only a hint: the head is always
//! read from the table, so a lost notification or a dropped connection delays the head by at
//! most one poll, and subscriptions, which page by position from their own cursor, miss
//! nothing. The connection is re-opened after `reconnect_backoff_ms` when it drops.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, GenericClient, NoTls};

use crate::chain::{Digest, Hash};
use crate::store::StoreError;
use crate::store::head::HeadPublisher;
use crate::store::postgres::schema::CHANNEL;

/// Most notifications buffered between the connection and the follower; more are dropped
/// (one pending hint is as good as many).
const MAX_PENDING_HINTS: usize = 16;

/// What the follower needs.
pub(super) struct Follower {
    pub(super) config: tokio_postgres::Config,
    pub(super) schema: String,
    pub(super) head: Arc<HeadPublisher>,
    pub(super) head_poll_ms: u64,
    pub(super) reconnect_backoff_ms: u64,
    pub(super) stop: watch::Receiver<bool>,
}

/// The last event's position and hash (the empty digest for an empty log).
pub(super) async fn read_tail(client: &impl GenericClient) -> Result<Digest, StoreError> {
    let row = client
        .query_opt("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1", &[])
        .await
        .map_err(|e| super::writer::pg_error(&e))?;
    let Some(row) = row else { return Ok(Digest::EMPTY) };
    let position: i64 = row.try_get(0).map_err(|e| StoreError::Storage(e.to_string()))?;
    let hash: Vec<u8> = row.try_get(1).map_err(|e| StoreError::Storage(e.to_string()))?;
    Ok(Digest {
        position: u64::try_from(position).unwrap_or(0),
        hash: Hash::from_slice(&hash).ok_or_else(|| StoreError::Corruption {
            location: format!("position {position}"),
            detail: "hash is not 32 bytes".into(),
        })?,
    })
}

impl Follower {
    pub(super) async fn run(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            if let Err(error) = self.follow().await {
                tracing::warn!(%error, "the log follower lost PostgreSQL; reconnecting");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(self.reconnect_backoff_ms)) => {}
                _ = self.stop.changed() => return,
            }
        }
    }

    /// One connection's life: returns when it drops (or the store stops).
    async fn follow(&mut self) -> Result<(), StoreError> {
        let (client, mut connection) =
            self.config.connect(NoTls).await.map_err(|e| StoreError::Storage(format!("PostgreSQL: {e}")))?;
        let (hints, mut hint_receiver) = mpsc::channel::<()>(MAX_PENDING_HINTS);
        let schema = self.schema.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) if note.channel() == CHANNEL && note.payload() == schema => {
                        let _ = hints.try_send(());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "the log follower's connection failed");
                        break;
                    }
                }
            }
            // Dropping `hints` tells the follower the connection is gone.
        });
        let result = self.listen(&client, &mut hint_receiver).await;
        driver.abort();
        result
    }

    async fn listen(&mut self, client: &Client, hints: &mut mpsc::Receiver<()>) -> Result<(), StoreError> {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await.map_err(|e| super::writer::pg_error(&e))?;
        let mut poll = tokio::time::interval(Duration::from_millis(self.head_poll_ms.max(1)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.head.publish(read_tail(client).await?);
            tokio::select! {
                hint = hints.recv() => {
                    if hint.is_none() {
                        return Err(StoreError::Storage("the notification connection closed".into()));
                    }
                    while hints.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
                _ = self.stop.changed() => return Ok(()),
            }
        }
    }
}
