//! The PostgreSQL backend: the log in a PostgreSQL schema, shared by any number of processes
//! on any number of machines, with every guarantee of the embedded store (CM-4, RC-1).
//!
//! * **Writes** go through one writer task per process doing group commit (see [`writer`]);
//!   writers in every process serialise on a transaction-level advisory lock and take the
//!   next position from a counter row, so positions are gapless (sequences are not: they
//!   leave gaps on rollback) and the hash chain never forks.
//! * **Reads** use a bounded pool of connections (`deadpool-postgres`).
//! * **The head** moves when this process commits, and when a commit by another process is
//!   noticed through `LISTEN`/`NOTIFY` or the fallback poll (see [`listener`]).
//! * **Opening** creates the schema when it is missing (under a lock, so two processes may
//!   start together), and refuses a schema that is not a cmdb log, is of a newer format, or
//!   whose last event does not match its hash.
//!
//! Location: a `postgres://` (or `postgresql://`) URL as libpq understands it; the schema
//! (default [`DEFAULT_SCHEMA`]) is chosen with [`PostgresOptions::schema`].

mod listener;
pub mod schema;
mod tamper;
mod writer;

pub use tamper::PostgresTamper;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::NoTls;

use crate::chain::{ChainFields, Digest, event_hash};
use crate::event::{EventRecord, FoldRecord, StreamId};
use crate::ids::{IdGenerator, UuidV7Ids};
use crate::store::head::HeadPublisher;
use crate::store::validate::{check_page, stream_read_start};
use crate::store::{
    AppendOutcome, AppendRequest, Capabilities, Direction, Erasure, EventStore, StoreError, StoreLimits,
    validate_request,
};
use crate::time::{Clock, SystemClock, Timestamp};

use schema::{
    APPLICATION, FOLD_COLUMNS, FORMAT_VERSION, SELECT_COLUMNS, decode_fold_row, decode_row, lock_key, valid_schema_name,
};
use writer::{Job, Writer, pg_error};

/// The schema the log lives in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "cmdb";

/// Settings of the PostgreSQL store. Units are in the names.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The limits to enforce.
    pub limits: StoreLimits,
    /// The clock commits are stamped with.
    pub clock: Arc<dyn Clock>,
    /// Where event ids come from.
    pub ids: Arc<dyn IdGenerator>,
    /// The schema holding the log's tables (lower-case letters, digits, `_`).
    pub schema: String,
    /// Bound of the writer's queue; an append waits for room when it is full.
    pub max_pending_appends: usize,
    /// Most events gathered into one transaction (a single larger append still goes alone).
    pub max_group_commit_events: usize,
    /// Most read connections (and concurrent reads).
    pub max_read_connections: usize,
    /// How long a read waits for a free connection before failing.
    pub read_wait_ms: u64,
    /// How long a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// How often the head is read even without a notification (the fallback when one is lost).
    pub head_poll_ms: u64,
    /// How long to wait before connecting again after a connection failed.
    pub reconnect_backoff_ms: u64,
    /// How long a writer waits for the log's lock (held by another process's transaction)
    /// before its group fails with a retryable error (`lock_timeout`).
    pub lock_timeout_ms: u64,
    /// How long a transaction may sit idle before PostgreSQL ends its session, so a frozen
    /// writer process cannot hold the log's lock for ever (`idle_in_transaction_session_timeout`).
    pub idle_in_transaction_timeout_ms: u64,
    /// How long sent data may stay unacknowledged by a silent peer before the connection is
    /// dropped (`TCP_USER_TIMEOUT`), so a writer does not wait for ever on a partitioned network.
    pub tcp_user_timeout_ms: u64,
    /// Refuse to open a log whose last event does not match its hash (tampered). Off only for
    /// tools that must read a damaged log, such as `cmdb verify`.
    pub verify_tail_on_open: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            limits: StoreLimits::DEFAULT,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            schema: DEFAULT_SCHEMA.to_string(),
            max_pending_appends: 4096,
            max_group_commit_events: 20_000,
            max_read_connections: 8,
            read_wait_ms: 30_000,
            connect_timeout_ms: 5_000,
            head_poll_ms: 250,
            reconnect_backoff_ms: 200,
            lock_timeout_ms: 30_000,
            idle_in_transaction_timeout_ms: 30_000,
            tcp_user_timeout_ms: 30_000,
            verify_tail_on_open: true,
        }
    }
}

/// The PostgreSQL event store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    schema: String,
    limits: StoreLimits,
    clock: Arc<dyn Clock>,
    jobs: mpsc::Sender<Job>,
    head: Arc<HeadPublisher>,
    head_receiver: watch::Receiver<u64>,
    readers: Pool,
    read_wait: Duration,
    stop: watch::Sender<bool>,
    closed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.head.close();
    }
}

fn open_error(location: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Open { path: location.to_string(), reason: reason.into() }
}

/// A URL with its password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl PostgresStore {
    /// Connects to `url`, creates the log's schema if it is missing, checks it, and starts the
    /// writer and the follower. Must run inside a Tokio runtime.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let location = redact_url(url);
        if !valid_schema_name(&options.schema) {
            return Err(open_error(
                &location,
                format!(
                    "schema name {:?} is not allowed: use 1 to 63 lower-case letters, digits and _ (not starting with a digit)",
                    options.schema
                ),
            ));
        }
        let base: tokio_postgres::Config =
            url.parse().map_err(|e| open_error(&location, format!("not a PostgreSQL connection URL: {e}")))?;
        let config = |application: &str| {
            let mut config = base.clone();
            config
                .options(format!(
                    "-c search_path={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
                    options.schema,
                    options.lock_timeout_ms.max(1),
                    options.idle_in_transaction_timeout_ms.max(1)
                ))
                .application_name(application)
                .connect_timeout(Duration::from_millis(options.connect_timeout_ms.max(1)))
                .tcp_user_timeout(Duration::from_millis(options.tcp_user_timeout_ms.max(1)))
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(10))
                .keepalives_interval(Duration::from_secs(5))
                .keepalives_retries(3);
            config
        };
        let head_digest = initialise(&config("cmdb-open"), &options, &location).await?;

        let (head_sender, head_receiver) = watch::channel(head_digest.position);
        let head = Arc::new(HeadPublisher::new(head_sender, head_digest));
        let (jobs, job_receiver) = mpsc::channel(options.max_pending_appends.max(1));
        let writer = Writer {
            config: config("cmdb-log-writer"),
            schema: options.schema.clone(),
            clock: options.clock.clone(),
            ids: options.ids.clone(),
            head: head.clone(),
            max_group_commit_events: options.max_group_commit_events.max(1),
            reconnect_backoff_ms: options.reconnect_backoff_ms,
            connection: None,
            last_connect_failure: None,
        };
        tokio::spawn(writer.run(job_receiver));

        let manager = Manager::from_config(
            config("cmdb-log-reader"),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let readers = Pool::builder(manager)
            .max_size(options.max_read_connections.max(1))
            .build()
            .map_err(|e| open_error(&location, format!("cannot build the read pool: {e}")))?;
        let (stop, stop_receiver) = watch::channel(false);
        tokio::spawn(
            listener::Follower {
                config: config("cmdb-head-listener"),
                schema: options.schema.clone(),
                head: head.clone(),
                head_poll_ms: options.head_poll_ms,
                reconnect_backoff_ms: options.reconnect_backoff_ms,
                stop: stop_receiver,
            }
            .run(),
        );
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                schema: options.schema,
                limits: options.limits,
                clock: options.clock,
                jobs,
                head,
                head_receiver,
                readers,
                read_wait: Duration::from_millis(options.read_wait_ms.max(1)),
                stop,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The schema holding the log.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Stops accepting appends, lets every append already queued finish, ends subscriptions.
    /// Idempotent.
    pub async fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (reply, done) = oneshot::channel();
        if self.shared.jobs.send(Job::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        let _ = self.shared.stop.send(true);
        self.shared.head.close();
        self.shared.readers.close();
    }

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        match tokio::time::timeout(self.shared.read_wait, self.shared.readers.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(StoreError::Unavailable(format!("no PostgreSQL read connection: {error}"))),
            Err(_) => Err(StoreError::Storage(format!(
                "no PostgreSQL read connection became free within {} ms",
                self.shared.read_wait.as_millis()
            ))),
        }
    }

    async fn query_records(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.query_decoded(sql, params, decode_row).await
    }

    /// Up to `max_count` events after position `after` (within the page bound), `columns` of
    /// each decoded with `decode`: the page read behind whole records and folds.
    async fn page_after<T>(
        &self,
        columns: &str,
        after: u64,
        max_count: usize,
        decode: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        check_page(&self.shared.limits, max_count)?;
        let Ok(after) = i64::try_from(after) else { return Ok(Vec::new()) };
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {columns} FROM events WHERE position > $1 ORDER BY position ASC LIMIT $2");
        self.query_decoded(&sql, &[&after, &(max_count as i64)], decode).await
    }

    /// Runs `sql` on a reader and decodes each row with `decode` (whole records or folds).
    async fn query_decoded<T>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        decode: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.reader().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| pg_error(&e))?;
        let rows = client.query(&statement, params).await.map_err(|e| pg_error(&e))?;
        rows.iter().map(decode).collect()
    }
}

/// Creates the schema when missing and checks it; returns the head.
async fn initialise(
    config: &tokio_postgres::Config,
    options: &PostgresOptions,
    location: &str,
) -> Result<Digest, StoreError> {
    let (mut client, connection) =
        config.connect(NoTls).await.map_err(|e| open_error(location, format!("cannot connect: {e}")))?;
    let driver = tokio::spawn(connection);
    let failed = |what: &str, e: tokio_postgres::Error| open_error(location, format!("{what}: {}", pg_error(&e)));
    let transaction = client.transaction().await.map_err(|e| failed("cannot begin", e))?;
    // One initialiser at a time per schema, in every process.
    transaction
        .batch_execute(&format!("SELECT pg_advisory_xact_lock({})", lock_key(&options.schema)))
        .await
        .map_err(|e| failed("cannot lock the log", e))?;
    let tables: i64 = transaction
        .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", &[&options.schema])
        .await
        .map_err(|e| failed("cannot inspect the schema", e))?
        .get(0);
    if tables == 0 {
        transaction
            .batch_execute(&schema::ddl(&options.schema))
            .await
            .map_err(|e| failed("cannot create the log", e))?;
        transaction
            .execute(
                "INSERT INTO meta (key, value) VALUES ('application', $1), ('format_version', $2)",
                &[&APPLICATION, &FORMAT_VERSION.to_string()],
            )
            .await
            .map_err(|e| failed("cannot create the log", e))?;
        transaction
            .execute(
                "INSERT INTO head (position, hash, recorded_at) VALUES (0, $1, $2)",
                &[&crate::chain::Hash::GENESIS.as_bytes().as_slice(), &i64::MIN],
            )
            .await
            .map_err(|e| failed("cannot create the log", e))?;
    }
    check_schema(&transaction, options, location).await?;
    let digest = listener::read_tail(&transaction).await?;
    transaction.commit().await.map_err(|e| failed("cannot commit", e))?;
    drop(client);
    driver.abort();
    Ok(digest)
}

/// Refuses a schema that is not ours, newer, or whose last event does not match its hash.
async fn check_schema(
    client: &tokio_postgres::Transaction<'_>,
    options: &PostgresOptions,
    location: &str,
) -> Result<(), StoreError> {
    let not_ours = || {
        open_error(
            location,
            format!("schema {} holds tables that are not a cmdb event log; refusing to touch it", options.schema),
        )
    };
    let rows = client.query("SELECT key, value FROM meta", &[]).await.map_err(|_| not_ours())?;
    let value = |key: &str| rows.iter().find(|r| r.get::<_, &str>(0) == key).map(|r| r.get::<_, String>(1));
    if value("application").as_deref() != Some(APPLICATION) {
        return Err(not_ours());
    }
    let format: i64 = value("format_version").and_then(|v| v.parse().ok()).unwrap_or(0);
    if format > FORMAT_VERSION {
        return Err(open_error(
            location,
            format!(
                "written by a newer cmdb (log format {format}; this build reads up to {FORMAT_VERSION}); upgrade cmdb to open it"
            ),
        ));
    }
    if format < 1 {
        return Err(open_error(location, format!("log format {format} is not known to this build")));
    }
    if format == 1 {
        client
            .batch_execute(schema::UPGRADE_FROM_FORMAT_1)
            .await
            .map_err(|e| open_error(location, format!("cannot upgrade the log from format 1: {}", pg_error(&e))))?;
    }
    if format <= 2 {
        client
            .batch_execute(schema::UPGRADE_FROM_FORMAT_2)
            .await
            .map_err(|e| open_error(location, format!("cannot upgrade the log from format 2: {}", pg_error(&e))))?;
    }
    if options.verify_tail_on_open {
        let row = client
            .query_opt(&format!("SELECT {SELECT_COLUMNS} FROM events ORDER BY position DESC LIMIT 1"), &[])
            .await
            .map_err(|e| open_error(location, pg_error(&e).to_string()))?;
        if let Some(row) = row {
            let tail = decode_row(&row)
                .map_err(|e| open_error(location, format!("the last event is unreadable: {e}; run `cmdb verify`")))?;
            if event_hash(&tail.prev_hash, &ChainFields::of(&tail)) != tail.hash {
                return Err(open_error(
                    location,
                    format!(
                        "the last event (position {}) does not match its hash: the log was altered; run `cmdb verify` and restore a backup",
                        tail.position
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl EventStore for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn shutdown(&self) {
        PostgresStore::shutdown(self).await;
    }

    fn limits(&self) -> StoreLimits {
        self.shared.limits
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        validate_request(&request, &self.shared.limits, self.shared.clock.now())?;
        let (reply, answer) = oneshot::channel();
        self.shared.jobs.send(Job::Append { request, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn redact(&self, erasures: Vec<Erasure>, record: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        validate_request(&record, &self.shared.limits, self.shared.clock.now())?;
        let (reply, answer) = oneshot::channel();
        self.shared.jobs.send(Job::Redact { erasures, record, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        check_page(&self.shared.limits, max_count)?;
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let from = stream_read_start(direction, from);
        let sql = match direction {
            Direction::Forward => format!(
                "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version ASC LIMIT $3"
            ),
            Direction::Backward => format!(
                "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = $1 AND stream_version <= $2 ORDER BY stream_version DESC LIMIT $3"
            ),
        };
        self.query_records(&sql, &[&stream.as_str(), &from, &(max_count as i64)]).await
    }

    async fn read_all(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.page_after(SELECT_COLUMNS, after, max_count, decode_row).await
    }

    async fn read_fold(&self, after: u64, max_count: usize) -> Result<Vec<FoldRecord>, StoreError> {
        self.page_after(FOLD_COLUMNS, after, max_count, decode_fold_row).await
    }

    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError> {
        let Ok(position) = i64::try_from(position) else { return Ok(None) };
        let sql = format!("SELECT {SELECT_COLUMNS} FROM events WHERE position = $1");
        Ok(self.query_records(&sql, &[&position]).await?.pop())
    }

    async fn head(&self) -> Result<Digest, StoreError> {
        self.shared.head.digest()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head_receiver.clone()
    }

    async fn refresh_head(&self) -> Result<u64, StoreError> {
        let client = self.reader().await?;
        let plain: &tokio_postgres::Client = &client;
        let digest = listener::read_tail(plain).await?;
        self.shared.head.publish(digest);
        Ok(digest.position)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        let client = self.reader().await?;
        let statement = client
            .prepare_cached("SELECT max(stream_version) FROM events WHERE stream_id = $1")
            .await
            .map_err(|e| pg_error(&e))?;
        let row = client.query_one(&statement, &[&stream.as_str()]).await.map_err(|e| pg_error(&e))?;
        let version: Option<i64> = row.try_get(0).map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok(version.map(|v| u64::try_from(v).unwrap_or(0)))
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError> {
        let mut client = self.reader().await?;
        // One snapshot for the whole search.
        let snapshot = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| pg_error(&e))?;
        let plain: &tokio_postgres::Transaction<'_> = &snapshot;
        let head = listener::read_tail(plain).await?.position;
        let statement = snapshot
            .prepare_cached("SELECT recorded_at FROM events WHERE position = $1")
            .await
            .map_err(|e| pg_error(&e))?;
        let recorded_at = async |position: u64| -> Result<Timestamp, StoreError> {
            let row =
                snapshot.query_opt(&statement, &[&(position as i64)]).await.map_err(|e| pg_error(&e))?.ok_or_else(
                    || StoreError::Corruption {
                        location: format!("position {position}"),
                        detail: "missing row (the log has a gap)".into(),
                    },
                )?;
            Ok(Timestamp::from_micros(row.try_get(0).map_err(|e| StoreError::Storage(e.to_string()))?))
        };
        if head == 0 || recorded_at(1).await? > at {
            return Ok(0);
        }
        if recorded_at(head).await? <= at {
            return Ok(head);
        }
        // Invariant: recorded_at(low) <= at < recorded_at(high); recorded_at never decreases
        // with position, so a binary search finds the boundary.
        let (mut low, mut high) = (1u64, head);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if recorded_at(middle).await? <= at {
                low = middle;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }
}
