//! The embedded backend: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! * **One writer thread** owns the only write connection and does group commit: appends
//!   queue on a bounded channel; the writer takes as many as are waiting (up to
//!   `max_group_commit_events`), runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//!   transaction (so one append's version conflict does not fail the others), commits once,
//!   and only then answers the callers and publishes the new head. Positions are assigned
//!   after the checks, inside the transaction.
//! * **Fail-stop:** an error from `COMMIT` (which includes the WAL fsync) stops the writer for
//!   good: every later append is refused with [`StoreError::WriterStopped`]; the process must
//!   restart and re-read the file. Nothing is retried silently.
//! * **Other processes** (e.g. `cmdb token create` while a server runs) may write the same
//!   file: SQLite's lock serialises the transactions, and the writer reads the tail (position,
//!   hash, time) inside every write transaction, so the chain never forks. A poller notices
//!   commits made by other connections (`PRAGMA data_version`) and publishes the new head.
//! * **Readers** use a bounded pool of their own connections, on the blocking thread pool.
//! * **Opening** inspects an existing file read-only first (`application_id`, `user_version`,
//!   schema, `quick_check`, the tail row): a database that is not ours, of a newer format, or
//!   corrupted is refused and never modified.

mod tamper;

pub use tamper::SqliteTamper;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, params};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::chain::{ChainFields, Digest, Hash, event_hash};
use crate::event::{
    ChainLink, CommitSpan, EventRecord, FoldRecord, NewEvent, PayloadSeal, SealColumns, Source, StreamId, Text,
};
use crate::ids::{IdGenerator, UuidV7Ids};
use crate::store::head::HeadPublisher;
use crate::store::recent::RecentEvents;
use crate::store::validate::{check_bulk_load, check_expectations, check_page, stream_read_start};
use crate::store::{
    AppendOutcome, AppendRequest, Capabilities, Direction, Erasure, EventStore, StoreError, StoreLimits,
    StreamAppended, check_redaction, erased, validate_request,
};
use crate::time::{Clock, SystemClock, Timestamp};

/// `PRAGMA application_id` of our files: "CMDB" in ASCII.
pub const APPLICATION_ID: i32 = 0x434D_4442;
/// `PRAGMA user_version`: the file format this build writes and reads. Format 3 added each
/// payload's seal (`chain_version`, `salt`, `commitment`, `redacted_by`: chain version 2 and
/// redaction); older logs are upgraded in place, their events read as chain version 1. Format 2 added each
/// event's commit (`commit_first`, `commit_size`); a format 1 log is upgraded in place when a
/// writer opens it (its events read as commits of one event each).
pub const FORMAT_VERSION: i32 = 3;
/// The oldest format this build upgrades.
const OLDEST_FORMAT_VERSION: i32 = 1;
/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "events.sqlite";

const SCHEMA: &str = "
CREATE TABLE events (
    position        INTEGER PRIMARY KEY,
    stream_id       TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    event_id        BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    data            BLOB    NOT NULL,
    actor_principal TEXT    NOT NULL,
    actor_token     TEXT,
    correlation_id  TEXT,
    causation_id    TEXT,
    source          TEXT    NOT NULL,
    occurred_at     INTEGER,
    recorded_at     INTEGER NOT NULL,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL,
    commit_first    INTEGER,
    commit_size     INTEGER,
    chain_version   INTEGER,
    salt            BLOB,
    commitment      BLOB,
    redacted_by     INTEGER
) STRICT;
CREATE UNIQUE INDEX events_by_stream ON events (stream_id, stream_version);
CREATE UNIQUE INDEX events_by_id ON events (event_id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT, WITHOUT ROWID;
";

/// The columns of a [`FoldRecord`], first in every read of whole records so that one decoder
/// ([`fold_of`]) reads both.
macro_rules! fold_columns {
    () => {
        "position, stream_id, stream_version, event_type, data, actor_principal, correlation_id, recorded_at, hash, \
         commit_first, commit_size"
    };
}
/// What followers of the hash chain alone read (`read_links`), in `decode_link`'s order.
const LINK_COLUMNS: &str = "position, stream_id, event_type, hash";
/// What a projection's catch-up reads (`read_fold`): 11 of the 22 columns.
const FOLD_COLUMNS: &str = fold_columns!();
/// A whole record: the fold's columns, then what only the chain's checks, exports and audit
/// views read.
const SELECT_COLUMNS: &str = concat!(
    fold_columns!(),
    ", actor_token, causation_id, source, occurred_at, event_id, schema_version, prev_hash, chain_version, salt, \
     commitment, redacted_by"
);
/// The same columns from a log of an older format (before its upgrade).
fn select_columns(user_version: i32) -> &'static str {
    match user_version {
        1 => {
            "position, stream_id, stream_version, event_type, data, actor_principal, correlation_id, recorded_at, \
             hash, NULL, NULL, \
             actor_token, causation_id, source, occurred_at, event_id, schema_version, prev_hash, NULL, NULL, NULL, NULL"
        }
        2 => concat!(
            fold_columns!(),
            ", actor_token, causation_id, source, occurred_at, event_id, schema_version, prev_hash, NULL, NULL, NULL, \
             NULL"
        ),
        _ => SELECT_COLUMNS,
    }
}
/// Upgrades a format 1 log to format 2.
const UPGRADE_FROM_FORMAT_1: &str = "ALTER TABLE events ADD COLUMN commit_first INTEGER; \
     ALTER TABLE events ADD COLUMN commit_size INTEGER; PRAGMA user_version = 2;";
/// Upgrades a format 2 log to format 3.
const UPGRADE_FROM_FORMAT_2: &str = "ALTER TABLE events ADD COLUMN chain_version INTEGER; \
     ALTER TABLE events ADD COLUMN salt BLOB; ALTER TABLE events ADD COLUMN commitment BLOB; \
     ALTER TABLE events ADD COLUMN redacted_by INTEGER; PRAGMA user_version = 3;";

/// How many times a redaction tries to empty the WAL before leaving it to the next checkpoint.
const REDACTION_CHECKPOINT_ATTEMPTS: u32 = 20;
/// The pause between those attempts, in milliseconds.
const REDACTION_CHECKPOINT_RETRY_MS: u64 = 50;

/// Set in `meta` by the first append stamped at commit; after it, bulk loads are refused.
const META_LIVE_APPENDS_STARTED: &str = "live_appends_started";

/// Settings of the embedded store. Units are in the names.
#[derive(Clone)]
pub struct SqliteOptions {
    /// The limits to enforce.
    pub limits: StoreLimits,
    /// The clock commits are stamped with.
    pub clock: Arc<dyn Clock>,
    /// Where event ids come from.
    pub ids: Arc<dyn IdGenerator>,
    /// Bound of the writer's queue; an append waits for room when it is full.
    pub max_pending_appends: usize,
    /// Most events gathered into one transaction (a single larger append still goes alone).
    pub max_group_commit_events: usize,
    /// Most read connections (and concurrent reads).
    pub max_read_connections: usize,
    /// How long a transaction waits for another process's lock on the file.
    pub busy_timeout_ms: u64,
    /// How often to look for commits made by other processes.
    pub external_change_poll_ms: u64,
    /// The writer connection's page cache.
    pub writer_cache_kib: u64,
    /// How much of the file each read connection maps into memory (reads without copies).
    pub reader_mmap_bytes: u64,
    /// WAL size (in pages) at which the writer checkpoints by itself, should the background
    /// checkpointer fall behind.
    pub backstop_checkpoint_pages: u64,
    /// Files up to this size get a full `PRAGMA quick_check` when opened.
    pub quick_check_max_file_bytes: u64,
    /// Refuse to open a log whose last event does not match its hash (tampered). Off only for
    /// tools that must read a damaged log, such as `cmdb verify`.
    pub verify_tail_on_open: bool,
    /// Caps the file at this many pages (`PRAGMA max_page_count`): a full disk, simulated.
    pub max_page_count: Option<u64>,
    /// Fault injection for tests: the commit after this many successful ones fails.
    #[doc(hidden)]
    pub fail_commit_after_commits: Option<u64>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            limits: StoreLimits::DEFAULT,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            max_pending_appends: 4096,
            max_group_commit_events: 20_000,
            max_read_connections: 8,
            busy_timeout_ms: 10_000,
            external_change_poll_ms: 50,
            writer_cache_kib: 64 * 1024,
            backstop_checkpoint_pages: 16_384,
            reader_mmap_bytes: 1 << 30,
            quick_check_max_file_bytes: 1 << 30,
            verify_tail_on_open: true,
            max_page_count: None,
            fail_commit_after_commits: None,
        }
    }
}

/// The pragmas in force on the writer's connection, for tests and `cmdb` diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterPragmas {
    /// `journal_mode` (`wal`).
    pub journal_mode: String,
    /// 2 is FULL.
    pub synchronous: i64,
    /// `application_id` (the engine's own).
    pub application_id: i32,
    /// `user_version` (the file format's version).
    pub user_version: i32,
}

enum Job {
    Append { request: AppendRequest, reply: oneshot::Sender<Result<AppendOutcome, StoreError>> },
    Inspect { reply: oneshot::Sender<Result<WriterPragmas, StoreError>> },
    Redact { erasures: Vec<Erasure>, record: AppendRequest, reply: oneshot::Sender<Result<AppendOutcome, StoreError>> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// The embedded event store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    limits: StoreLimits,
    clock: Arc<dyn Clock>,
    jobs: mpsc::Sender<Job>,
    head: Arc<HeadPublisher>,
    head_receiver: watch::Receiver<u64>,
    recent: Arc<RecentEvents>,
    readers: Arc<ReaderPool>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    stop_poller: Arc<AtomicBool>,
    closed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_poller.store(true, Ordering::SeqCst);
        self.head.close();
    }
}

fn open_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Open { path: path.display().to_string(), reason: reason.into() }
}

fn storage_error(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::StorageFull(error.to_string()),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            StoreError::Corruption { location: "the log file".into(), detail: error.to_string() }
        }
        _ => StoreError::Storage(error.to_string()),
    }
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidInput(format!("{what} {value} is beyond the log's range")))
}

impl SqliteStore {
    /// A page of the global log read past the checks every read of it makes: refused past the
    /// page bound, empty for a page of 0, else answered from the writer's copy of the newest
    /// events when that holds it (`None`: read the file).
    fn recent_page(&self, after: u64, max_count: usize) -> Result<Option<Vec<EventRecord>>, StoreError> {
        check_page(&self.shared.limits, max_count)?;
        if max_count == 0 {
            return Ok(Some(Vec::new()));
        }
        let head = self.shared.head.digest()?.position;
        Ok(self.shared.recent.after(after, max_count, head))
    }

    /// A page of the log after `after` read from the file, `columns` decoded by `decode`: the
    /// one query behind whole records, folds and links.
    async fn stored_page<T: Send + 'static>(
        &self,
        after: u64,
        max_count: usize,
        columns: &'static str,
        decode: fn(&Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
    ) -> Result<Vec<T>, StoreError> {
        check_page(&self.shared.limits, max_count)?;
        if max_count == 0 {
            return Ok(Vec::new());
        }
        let Ok(after) = i64::try_from(after) else { return Ok(Vec::new()) };
        self.shared
            .readers
            .run(move |conn| {
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT {columns} FROM events WHERE position > ?1 ORDER BY position ASC LIMIT ?2"
                    ))
                    .map_err(storage_error)?;
                collect_decoded(&mut statement, params![after, max_count as i64], max_count, decode)
            })
            .await
    }

    /// Opens (creating if needed) the log in `data_dir`. Blocking: call at start-up, or from
    /// `spawn_blocking`.
    pub fn open(data_dir: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let data_dir = data_dir.as_ref();
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(open_error(data_dir, "the data directory path exists and is not a directory"));
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| open_error(data_dir, format!("cannot create the data directory: {e}")))?;
        let path = data_dir.join(LOG_FILE_NAME);
        let existing_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if existing_bytes > 0 {
            inspect_read_only(
                &path,
                existing_bytes <= options.quick_check_max_file_bytes,
                options.verify_tail_on_open,
            )?;
        }

        let conn = open_connection(&path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE, &options)?;
        let journal_mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| open_error(&path, format!("cannot switch to WAL mode: {e}")))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(&path, format!("the file refused WAL mode (journal_mode is {journal_mode})")));
        }
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(|e| open_error(&path, format!("cannot set synchronous=FULL: {e}")))?;
        // A redaction overwrites payloads: freed space is zeroed, so no erased byte stays in
        // the file (or in a backup copied from it). Appends free nothing, so it costs them
        // nothing.
        conn.execute_batch("PRAGMA secure_delete = ON")
            .map_err(|e| open_error(&path, format!("cannot set secure_delete: {e}")))?;
        // Checkpoints run on a background connection (see the poller), off the commit path;
        // the writer checkpoints itself only as a backstop if the WAL grows past this.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA wal_autocheckpoint = {};",
            options.writer_cache_kib, options.backstop_checkpoint_pages
        ))
        .map_err(|e| open_error(&path, format!("cannot set the cache and checkpoint pragmas: {e}")))?;
        if let Some(pages) = options.max_page_count {
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(|e| open_error(&path, format!("cannot set max_page_count: {e}")))?;
        }
        initialise_schema(&conn, &path)?;
        let tail = read_tail(&conn).map_err(|e| open_error(&path, e.to_string()))?;

        let (head_sender, head_receiver) = watch::channel(tail.position);
        let head_publisher =
            Arc::new(HeadPublisher::new(head_sender, Digest { position: tail.position, hash: tail.hash }));
        let (jobs, job_receiver) = mpsc::channel(options.max_pending_appends.max(1));
        let recent = Arc::new(RecentEvents::default());
        let writer = Writer {
            conn,
            clock: options.clock.clone(),
            ids: options.ids.clone(),
            head: head_publisher.clone(),
            recent: recent.clone(),
            pending: Vec::new(),
            stopped: None,
            max_group_commit_events: options.max_group_commit_events.max(1),
            commits: 0,
            fail_commit_after_commits: options.fail_commit_after_commits,
        };
        let writer_thread = std::thread::Builder::new()
            .name("cmdb-log-writer".into())
            .spawn(move || writer.run(job_receiver))
            .map_err(|e| open_error(&path, format!("cannot start the writer thread: {e}")))?;

        let readers = Arc::new(ReaderPool::new(path.clone(), &options));
        let stop_poller = Arc::new(AtomicBool::new(false));
        spawn_external_change_poller(
            readers.clone(),
            head_publisher.clone(),
            stop_poller.clone(),
            options.external_change_poll_ms.max(1),
        )
        .map_err(|e| open_error(&path, format!("cannot start the change poller: {e}")))?;

        Ok(SqliteStore {
            shared: Arc::new(Shared {
                path,
                limits: options.limits,
                clock: options.clock,
                jobs,
                head: head_publisher,
                head_receiver,
                recent,
                readers,
                writer_thread: Mutex::new(Some(writer_thread)),
                stop_poller,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The pragmas in force on the writer's connection.
    pub async fn writer_pragmas(&self) -> Result<WriterPragmas, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shared.jobs.send(Job::Inspect { reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops accepting appends, lets every append already queued finish, checkpoints the WAL,
    /// ends subscriptions. Idempotent.
    pub async fn shutdown(&self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let (reply, done) = oneshot::channel();
        if self.shared.jobs.send(Job::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
        let thread = self.shared.writer_thread.lock().ok().and_then(|mut guard| guard.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.shared.stop_poller.store(true, Ordering::SeqCst);
        self.shared.head.close();
    }

    /// A consistent online copy of the log to `destination` (SQLite's backup API, in one step
    /// inside one read transaction, so concurrent appends neither block nor restart it).
    /// Returns the digest of the copy's head.
    pub async fn backup_to(&self, destination: &Path) -> Result<Digest, StoreError> {
        let destination = destination.to_path_buf();
        self.shared
            .readers
            .run(move |conn| {
                if destination.exists() {
                    return Err(StoreError::InvalidInput(format!(
                        "backup destination {} already exists; choose a new file",
                        destination.display()
                    )));
                }
                let mut target = Connection::open(&destination).map_err(|e| {
                    StoreError::Storage(format!("cannot create backup file {}: {e}", destination.display()))
                })?;
                {
                    let backup = rusqlite::backup::Backup::new(conn, &mut target).map_err(storage_error)?;
                    backup.step(-1).map_err(storage_error)?;
                }
                target.execute_batch("PRAGMA journal_mode = DELETE").map_err(storage_error)?;
                let tail = read_tail(&target).map_err(storage_error)?;
                Ok(Digest { position: tail.position, hash: tail.hash })
            })
            .await
    }
}

fn open_connection(path: &Path, flags: OpenFlags, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(path, e.to_string()))?;
    conn.busy_timeout(Duration::from_millis(options.busy_timeout_ms)).map_err(|e| open_error(path, e.to_string()))?;
    stable_plans(&conn).map_err(|e| open_error(path, e.to_string()))?;
    Ok(conn)
}

/// Turns on SQLite's query planner stability guarantee on `conn`. Without it, a cached
/// statement whose plan may depend on a bound value (a `LIMIT ?`, a range `>= ?` on an indexed
/// column: every stream and log read here) is compiled again on its first step after another
/// connection commits; perf showed that re-preparing at 17 % of the server's CPU under a
/// gate load. Our statements have one good plan whatever the values, so none is lost.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ())
}

/// Refuses a file that is not ours, is newer, or is damaged, without writing to it.
/// The SQLite file header's magic string.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses a file whose raw header already says it is not ours or newer, before SQLite
/// touches it at all.
fn inspect_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut header = [0u8; 100];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut header))
        .map_err(|e| open_error(path, format!("cannot read the file: {e}")))?;
    if read < header.len() || &header[..16] != SQLITE_MAGIC {
        return Err(open_error(path, "not a SQLite database (bad file header); refusing to touch it"));
    }
    let user_version = i32::from_be_bytes([header[60], header[61], header[62], header[63]]);
    let application_id = i32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(open_error(
            path,
            format!(
                "not a cmdb event log (application_id {application_id:#x}, expected {APPLICATION_ID:#x}); refusing to touch it"
            ),
        ));
    }
    if application_id == APPLICATION_ID && user_version > FORMAT_VERSION {
        return Err(newer_format(path, user_version));
    }
    Ok(())
}

fn newer_format(path: &Path, user_version: i32) -> StoreError {
    open_error(
        path,
        format!(
            "written by a newer cmdb (log format {user_version}; this build reads up to {FORMAT_VERSION}); upgrade cmdb to open it"
        ),
    )
}

/// Refuses a file that is not ours, is newer, or is damaged. Reads through a read-only
/// connection; only when SQLite needs to recover the WAL after a crash (which a read-only
/// connection cannot) does it inspect through a read-write one: that recovery is SQLite's own
/// and changes no committed content, and the raw header was checked to be ours or blank.
fn inspect_read_only(path: &Path, quick_check: bool, verify_tail: bool) -> Result<(), StoreError> {
    inspect_header(path)?;
    let read_only =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| open_error(path, format!("cannot open read-only for inspection: {e}")))?;
    match inspect(&read_only, path, quick_check, verify_tail) {
        Err(InspectError::NeedsRecovery) => {
            drop(read_only);
            let conn =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                    .map_err(|e| open_error(path, format!("cannot open for crash recovery: {e}")))?;
            match inspect(&conn, path, quick_check, verify_tail) {
                Ok(()) => Ok(()),
                Err(InspectError::Refused(error)) => Err(error),
                Err(InspectError::NeedsRecovery) => Err(open_error(path, "the WAL cannot be recovered")),
            }
        }
        Err(InspectError::Refused(error)) => Err(error),
        Ok(()) => Ok(()),
    }
}

enum InspectError {
    NeedsRecovery,
    Refused(StoreError),
}

impl From<StoreError> for InspectError {
    fn from(error: StoreError) -> Self {
        InspectError::Refused(error)
    }
}

fn inspect(conn: &Connection, path: &Path, quick_check: bool, verify_tail: bool) -> Result<(), InspectError> {
    let damaged = |e: rusqlite::Error| {
        if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
            return InspectError::NeedsRecovery;
        }
        InspectError::Refused(open_error(path, format!("not a readable SQLite database ({e}); refusing to touch it")))
    };
    let application_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(damaged)?;
    let user_version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(damaged)?;
    let table_count: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(damaged)?;
    if application_id != APPLICATION_ID {
        if application_id == 0 && user_version == 0 && table_count == 0 {
            return Ok(()); // an empty SQLite file: ours to initialise
        }
        return Err(open_error(
            path,
            format!(
                "not a cmdb event log (application_id {application_id:#x}, expected {APPLICATION_ID:#x}); refusing to touch it"
            ),
        )
        .into());
    }
    if user_version > FORMAT_VERSION {
        return Err(newer_format(path, user_version).into());
    }
    if user_version < OLDEST_FORMAT_VERSION {
        return Err(open_error(path, format!("log format {user_version} is not known to this build")).into());
    }
    let columns = select_columns(user_version);
    if quick_check {
        let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(damaged)?;
        if verdict != "ok" {
            return Err(
                open_error(path, format!("the file is corrupted (quick_check: {verdict}); restore a backup")).into()
            );
        }
    }
    if verify_tail {
        let tail: Option<EventRecord> = conn
            .query_row(&format!("SELECT {columns} FROM events ORDER BY position DESC LIMIT 1"), [], decode_row)
            .optional()
            .map_err(damaged)?
            .transpose()
            .map_err(|e| open_error(path, format!("the last event is unreadable: {e}; run `cmdb verify`")))?;
        if let Some(tail) = tail
            && event_hash(&tail.prev_hash, &ChainFields::of(&tail)) != tail.hash
        {
            return Err(open_error(
                    path,
                    format!(
                        "the last event (position {}) does not match its hash: the file was altered; run `cmdb verify` and restore a backup",
                        tail.position
                    ),
                )
                .into());
        }
    }
    Ok(())
}

fn initialise_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| open_error(path, format!("cannot initialise the log: {e}"));
    conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
    let result = (|| {
        let application_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        if application_id == APPLICATION_ID {
            let user_version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if user_version == 1 {
                conn.execute_batch(UPGRADE_FROM_FORMAT_1)?;
            }
            if user_version <= 2 {
                conn.execute_batch(UPGRADE_FROM_FORMAT_2)?;
            }
            return Ok(());
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {FORMAT_VERSION};"
        ))
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(fail),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(fail(e))
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Tail {
    position: u64,
    hash: Hash,
    recorded_at: Timestamp,
}

fn read_tail(conn: &Connection) -> rusqlite::Result<Tail> {
    let mut statement =
        conn.prepare_cached("SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1")?;
    let tail = statement
        .query_row([], |row| {
            let position: i64 = row.get(0)?;
            let hash: Vec<u8> = row.get(1)?;
            let recorded_at: i64 = row.get(2)?;
            Ok(Tail {
                position: position as u64,
                hash: Hash::from_slice(&hash).unwrap_or_default(),
                recorded_at: Timestamp::from_micros(recorded_at),
            })
        })
        .optional()?;
    Ok(tail.unwrap_or(Tail { position: 0, hash: Hash::GENESIS, recorded_at: Timestamp::from_micros(i64::MIN) }))
}

fn live_appends_started(conn: &Connection) -> rusqlite::Result<bool> {
    let mut statement = conn.prepare_cached("SELECT 1 FROM meta WHERE key = ?1")?;
    Ok(statement.query_row([META_LIVE_APPENDS_STARTED], |_| Ok(())).optional()?.is_some())
}

fn stream_version(conn: &Connection, stream: &str) -> rusqlite::Result<Option<u64>> {
    let mut statement = conn.prepare_cached("SELECT max(stream_version) FROM events WHERE stream_id = ?1")?;
    let version: Option<i64> = statement.query_row([stream], |row| row.get(0))?;
    Ok(version.map(|v| v as u64))
}

fn corrupt(position: i64, detail: impl Into<String>) -> StoreError {
    StoreError::Corruption { location: format!("position {position}"), detail: detail.into() }
}

/// One row's columns, read in place: any value that could not have been written by us is an
/// error naming the column (the callers report it as corruption at the row's position).
struct Columns<'r, 's>(&'r Row<'s>);

impl<'r> Columns<'r, '_> {
    fn value(&self, index: usize) -> Result<rusqlite::types::ValueRef<'r>, String> {
        self.0.get_ref(index).map_err(|e| e.to_string())
    }

    fn text(&self, index: usize) -> Result<&'r str, String> {
        self.value(index)?.as_str().map_err(|e| format!("column {index}: {e}"))
    }

    fn optional_text(&self, index: usize) -> Result<Option<&'r str>, String> {
        self.value(index)?.as_str_or_null().map_err(|e| format!("column {index}: {e}"))
    }

    fn blob(&self, index: usize) -> Result<&'r [u8], String> {
        self.value(index)?.as_blob().map_err(|e| format!("column {index}: {e}"))
    }

    fn optional_blob(&self, index: usize) -> Result<Option<&'r [u8]>, String> {
        self.value(index)?.as_blob_or_null().map_err(|e| format!("column {index}: {e}"))
    }

    fn integer(&self, index: usize) -> Result<i64, String> {
        self.value(index)?.as_i64().map_err(|e| format!("column {index}: {e}"))
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, String> {
        self.value(index)?.as_i64_or_null().map_err(|e| format!("column {index}: {e}"))
    }
}

/// Decodes the [`FOLD_COLUMNS`] at the start of a row. Fixed-size blobs and the source are
/// read in place; only the variable-length fields are copied.
fn fold_of(columns: &Columns<'_, '_>, position: i64) -> Result<FoldRecord, String> {
    Ok(FoldRecord {
        position: u64::try_from(position).map_err(|_| "negative position".to_string())?,
        stream_id: StreamId::new(columns.text(1)?).map_err(|e| e.to_string())?,
        stream_version: u64::try_from(columns.integer(2)?).map_err(|_| "negative stream version".to_string())?,
        event_type: Text::from(columns.text(3)?),
        data: columns.blob(4)?.to_vec(),
        principal: Text::from(columns.text(5)?),
        // Straight into `Text`: most correlation ids fit inline, and a `String` first was an
        // allocation and a free per record.
        correlation_id: columns.optional_text(6)?.map(Text::from),
        recorded_at: Timestamp::from_micros(columns.integer(7)?),
        hash: Hash::from_slice(columns.blob(8)?).ok_or_else(|| "hash is not 32 bytes".to_string())?,
        commit: CommitSpan::from_columns(
            u64::try_from(position).unwrap_or(0),
            columns.optional_integer(9)?,
            columns.optional_integer(10)?,
        )?,
    })
}

/// Decodes one row of [`FOLD_COLUMNS`].
fn decode_fold_row(row: &Row<'_>) -> rusqlite::Result<Result<FoldRecord, StoreError>> {
    let position: i64 = row.get(0)?;
    Ok(fold_of(&Columns(row), position).map_err(|detail| corrupt(position, detail)))
}

/// Decodes one row of [`SELECT_COLUMNS`]: the fold's columns, then the chain's.
fn decode_row(row: &Row<'_>) -> rusqlite::Result<Result<EventRecord, StoreError>> {
    let position: i64 = row.get(0)?;
    let columns = Columns(row);
    let decoded = (|| -> Result<EventRecord, String> {
        Ok(EventRecord {
            fold: fold_of(&columns, position)?,
            token_id: columns.optional_text(11)?.map(str::to_owned),
            causation_id: columns.optional_text(12)?.map(str::to_owned),
            source: columns.text(13)?.parse::<Source>().map_err(|e| e.to_string())?,
            occurred_at: columns.optional_integer(14)?.map(Timestamp::from_micros),
            event_id: Uuid::from_slice(columns.blob(15)?).map_err(|_| "event id is not 16 bytes".to_string())?,
            schema_version: u32::try_from(columns.integer(16)?)
                .map_err(|_| "schema version out of range".to_string())?,
            prev_hash: Hash::from_slice(columns.blob(17)?).ok_or_else(|| "prev_hash is not 32 bytes".to_string())?,
            seal: PayloadSeal::from_columns(SealColumns {
                chain_version: columns.optional_integer(18)?,
                salt: columns.optional_blob(19)?,
                commitment: columns.optional_blob(20)?,
                redacted_by: columns.optional_integer(21)?,
            })?,
        })
    })();
    Ok(decoded.map_err(|detail| corrupt(position, detail)))
}

/// Decodes one row of `read_links`' columns; anything we could not have written is corruption.
fn decode_link(row: &Row<'_>) -> rusqlite::Result<Result<ChainLink, StoreError>> {
    let position: i64 = row.get(0)?;
    let columns = Columns(row);
    let decoded = (|| -> Result<ChainLink, String> {
        Ok(ChainLink {
            position: u64::try_from(position).map_err(|_| "negative position".to_string())?,
            stream_id: StreamId::new(columns.text(1)?).map_err(|e| e.to_string())?,
            event_type: Text::from(columns.text(2)?),
            hash: Hash::from_slice(columns.blob(3)?).ok_or_else(|| "hash is not 32 bytes".to_string())?,
        })
    })();
    Ok(decoded.map_err(|detail| corrupt(position, detail)))
}

fn collect_rows(
    statement: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    capacity: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    collect_decoded(statement, params, capacity, decode_row)
}

/// Runs `statement` and decodes each row with `decode` (whole records or links).
fn collect_decoded<T>(
    statement: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    capacity: usize,
    decode: fn(&Row<'_>) -> rusqlite::Result<Result<T, StoreError>>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = statement.query(params).map_err(storage_error)?;
    let mut decoded = Vec::with_capacity(capacity);
    while let Some(row) = rows.next().map_err(storage_error)? {
        decoded.push(decode(row).map_err(storage_error)??);
    }
    Ok(decoded)
}

struct Writer {
    conn: Connection,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    head: Arc<HeadPublisher>,
    /// The newest committed events, for the log's followers (filled before `head` moves).
    recent: Arc<RecentEvents>,
    /// The records of the transaction being built, kept once it commits.
    pending: Vec<EventRecord>,
    stopped: Option<String>,
    max_group_commit_events: usize,
    commits: u64,
    fail_commit_after_commits: Option<u64>,
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut carried: Option<Job> = None;
        loop {
            let job = match carried.take() {
                Some(job) => job,
                None => match jobs.blocking_recv() {
                    Some(job) => job,
                    None => break,
                },
            };
            let (request, reply) = match job {
                Job::Append { request, reply } => (request, reply),
                Job::Inspect { reply } => {
                    let _ = reply.send(self.pragmas());
                    continue;
                }
                Job::Redact { erasures, record, reply } => {
                    let _ = reply.send(self.redact(&erasures, &record));
                    continue;
                }
                Job::Shutdown { reply } => {
                    let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
                    let _ = reply.send(());
                    break;
                }
            };
            let mut events = request.event_count();
            let mut group = vec![(request, reply)];
            // Gather what is already waiting; bounded by the event count of one transaction.
            while events < self.max_group_commit_events {
                match jobs.try_recv() {
                    Ok(Job::Append { request, reply }) => {
                        events += request.event_count();
                        group.push((request, reply));
                    }
                    Ok(other) => {
                        carried = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn pragmas(&self) -> Result<WriterPragmas, StoreError> {
        let conn = &self.conn;
        Ok(WriterPragmas {
            journal_mode: conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(storage_error)?,
            synchronous: conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).map_err(storage_error)?,
            application_id: conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(storage_error)?,
            user_version: conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(storage_error)?,
        })
    }

    fn commit_group(&mut self, group: Vec<(AppendRequest, Reply)>) {
        if let Some(reason) = &self.stopped {
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::WriterStopped(reason.clone())));
            }
            return;
        }
        let fail_all = |group: Vec<(AppendRequest, Reply)>, error: StoreError| {
            for (_, reply) in group {
                let _ = reply.send(Err(error.clone()));
            }
        };
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            return fail_all(group, storage_error(e));
        }
        let (mut tail, mut live) = match read_tail(&self.conn).and_then(|t| Ok((t, live_appends_started(&self.conn)?)))
        {
            Ok(state) => state,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return fail_all(group, storage_error(e));
            }
        };
        let stamp = self.clock.now().max(tail.recorded_at);
        let mut accepted: Vec<(Reply, AppendOutcome)> = Vec::with_capacity(group.len());
        let mut aborted: Option<StoreError> = None;
        for (request, reply) in group {
            if let Some(error) = &aborted {
                let _ = reply.send(Err(error.clone()));
                continue;
            }
            if let Err(e) = self.conn.execute_batch("SAVEPOINT append") {
                let error = storage_error(e);
                let _ = reply.send(Err(error.clone()));
                aborted = Some(error);
                continue;
            }
            let before = (tail, live);
            let kept_before = self.pending.len();
            match self.apply(&request, &mut tail, &mut live, stamp) {
                Ok(outcome) => match self.conn.execute_batch("RELEASE append") {
                    Ok(()) => accepted.push((reply, outcome)),
                    Err(e) => {
                        let error = storage_error(e);
                        let _ = reply.send(Err(error.clone()));
                        aborted = Some(error);
                    }
                },
                Err(error) => {
                    (tail, live) = before;
                    self.pending.truncate(kept_before);
                    let rolled_back = self.conn.execute_batch("ROLLBACK TO append; RELEASE append");
                    if rolled_back.is_err() || self.conn.is_autocommit() {
                        // SQLite abandoned the whole transaction (it may on a full disk): the
                        // appends accepted so far in this group are gone too.
                        aborted = Some(StoreError::Storage(format!(
                            "the group commit was abandoned after another append failed ({error}); nothing was written; retry"
                        )));
                    }
                    let _ = reply.send(Err(error));
                }
            }
        }
        let committed_records = std::mem::take(&mut self.pending);
        if let Some(error) = aborted {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            for (reply, _) in accepted {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        if accepted.is_empty() {
            let _ = self.conn.execute_batch("ROLLBACK");
            return;
        }
        self.commit_accepted(accepted, tail, committed_records);
    }

    /// Commits the group's transaction and answers its appends: all acknowledged, or (the
    /// commit failed) all refused and the writer stopped for good.
    fn commit_accepted(&mut self, accepted: Vec<(Reply, AppendOutcome)>, tail: Tail, records: Vec<EventRecord>) {
        let injected_failure = self.fail_commit_after_commits.is_some_and(|after| self.commits >= after);
        let committed = if injected_failure {
            let _ = self.conn.execute_batch("ROLLBACK");
            Err("injected commit failure (fault injection)".to_string())
        } else {
            self.conn.execute_batch("COMMIT").map_err(|e| e.to_string())
        };
        match committed {
            Ok(()) => {
                self.commits += 1;
                debug_assert!(records.last().is_none_or(|r| r.position == tail.position));
                self.recent.extend(records);
                self.head.publish(Digest { position: tail.position, hash: tail.hash });
                for (reply, outcome) in accepted {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(reason) => {
                // Fail-stop: the state of the file after a failed COMMIT/fsync is unknown to us.
                tracing::error!(%reason, "COMMIT failed; the log writer stops for good");
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let reason = format!("COMMIT failed: {reason}");
                self.stopped = Some(reason.clone());
                for (reply, _) in accepted {
                    let _ = reply.send(Err(StoreError::WriterStopped(reason.clone())));
                }
            }
        }
    }

    /// One redaction in its own transaction: the record appended and the payloads replaced,
    /// then a truncating WAL checkpoint so the old pages leave the WAL too.
    fn redact(&mut self, erasures: &[Erasure], record: &AppendRequest) -> Result<AppendOutcome, StoreError> {
        if let Some(reason) = &self.stopped {
            return Err(StoreError::WriterStopped(reason.clone()));
        }
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(storage_error)?;
        let applied = self.redact_in_transaction(erasures, record);
        // The redaction record is not kept: everything kept is forgotten below.
        self.pending.clear();
        let (outcome, tail) = match applied {
            Ok(applied) => applied,
            Err(error) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(error);
            }
        };
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let reason = format!("COMMIT failed: {e}");
            tracing::error!(%reason, "COMMIT of a redaction failed; the log writer stops for good");
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            self.stopped = Some(reason.clone());
            return Err(StoreError::WriterStopped(reason));
        }
        self.commits += 1;
        // Stored payloads were rewritten: nothing kept may be served again.
        self.recent.clear();
        self.head.publish(Digest { position: tail.position, hash: tail.hash });
        self.truncate_wal();
        Ok(outcome)
    }

    fn redact_in_transaction(
        &mut self,
        erasures: &[Erasure],
        record: &AppendRequest,
    ) -> Result<(AppendOutcome, Tail), StoreError> {
        let mut tail = read_tail(&self.conn).map_err(storage_error)?;
        let mut live = live_appends_started(&self.conn).map_err(storage_error)?;
        check_redaction(erasures, record, tail.position)?;
        let record_position = tail.position + 1;
        let replaced = {
            let mut select = self
                .conn
                .prepare_cached(&format!("SELECT {SELECT_COLUMNS} FROM events WHERE position = ?1"))
                .map_err(storage_error)?;
            let mut replaced = Vec::with_capacity(erasures.len());
            for erasure in erasures {
                let stored =
                    select.query_row([to_i64(erasure.position, "position")?], decode_row).map_err(storage_error)??;
                replaced.push(erased(&stored, erasure, record_position)?);
            }
            replaced
        };
        let stamp = self.clock.now().max(tail.recorded_at);
        let outcome = self.apply(record, &mut tail, &mut live, stamp)?;
        let mut update = self
            .conn
            .prepare_cached(
                "UPDATE events SET data = ?1, chain_version = ?2, salt = ?3, commitment = ?4, redacted_by = ?5 \
                 WHERE position = ?6",
            )
            .map_err(storage_error)?;
        for record in &replaced {
            let columns = record.seal.to_columns();
            update
                .execute(params![
                    record.data,
                    columns.chain_version,
                    columns.salt,
                    columns.commitment,
                    columns.redacted_by,
                    to_i64(record.position, "position")?,
                ])
                .map_err(storage_error)?;
        }
        Ok((outcome, tail))
    }

    /// Moves every page into the database file and empties the WAL, so the pages written
    /// before a redaction are gone from it. Readers holding an old snapshot make it wait (the
    /// busy timeout), at most `REDACTION_CHECKPOINT_ATTEMPTS` times.
    fn truncate_wal(&self) {
        for _ in 0..REDACTION_CHECKPOINT_ATTEMPTS {
            let busy: rusqlite::Result<i64> = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
            if matches!(busy, Ok(0)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(REDACTION_CHECKPOINT_RETRY_MS));
        }
        tracing::warn!(
            "the WAL could not be emptied after a redaction (readers held it); it will be at the next checkpoint"
        );
    }

    fn apply(
        &mut self,
        request: &AppendRequest,
        tail: &mut Tail,
        live: &mut bool,
        stamp: Timestamp,
    ) -> Result<AppendOutcome, StoreError> {
        let current =
            check_expectations(request, |stream| stream_version(&self.conn, stream.as_str()).map_err(storage_error))?;
        let bulk = check_bulk_load(request, *live, tail.recorded_at)?;
        if !bulk && !*live {
            let mut statement = self
                .conn
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, '1')")
                .map_err(storage_error)?;
            statement.execute([META_LIVE_APPENDS_STARTED]).map_err(storage_error)?;
            *live = true;
        }

        let first_position = tail.position + 1;
        let mut streams = Vec::with_capacity(request.writes.len());
        let mut event_ids = Vec::with_capacity(request.event_count());
        let mut statement = self
            .conn
            .prepare_cached(
                "INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, data, \
                 actor_principal, actor_token, correlation_id, causation_id, source, occurred_at, recorded_at, prev_hash, hash, \
                 commit_first, commit_size, chain_version, salt, commitment, redacted_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
            )
            .map_err(storage_error)?;
        for (write, actual) in request.writes.iter().zip(current) {
            let first_version = actual.map_or(0, |v| v + 1);
            let mut version = first_version;
            for event in &write.events {
                let position = tail.position + 1;
                let commit = request.commit_of(event_ids.len(), first_position);
                let seal = request.seal_of(event_ids.len());
                let event_id = event.event_id.unwrap_or_else(|| self.ids.next_id());
                let recorded_at = event.recorded_at.unwrap_or(stamp);
                let fields = ChainFields {
                    position,
                    stream_id: write.stream.as_str(),
                    stream_version: version,
                    event_id: &event_id,
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    data: &event.data,
                    metadata: (&event.metadata).into(),
                    recorded_at,
                    seal: &seal,
                };
                let hash = event_hash(&tail.hash, &fields);
                let seal_columns = seal.to_columns();
                let metadata = &event.metadata;
                let inserted = statement.execute(params![
                    to_i64(position, "position")?,
                    write.stream.as_str(),
                    to_i64(version, "stream version")?,
                    event_id.as_bytes().as_slice(),
                    event.event_type,
                    i64::from(event.schema_version),
                    event.data,
                    metadata.actor.principal.as_str(),
                    metadata.actor.token_id,
                    metadata.correlation_id.as_deref(),
                    metadata.causation_id,
                    metadata.source.as_str(),
                    metadata.occurred_at.map(Timestamp::as_micros),
                    recorded_at.as_micros(),
                    tail.hash.as_bytes().as_slice(),
                    hash.as_bytes().as_slice(),
                    to_i64(commit.first_position, "commit position")?,
                    i64::from(commit.events),
                    seal_columns.chain_version,
                    seal_columns.salt,
                    seal_columns.commitment,
                    seal_columns.redacted_by,
                ]);
                if let Err(e) = inserted {
                    if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
                        && e.to_string().contains("event_id")
                    {
                        return Err(StoreError::DuplicateEventId(event_id));
                    }
                    return Err(storage_error(e));
                }
                let stored = Stored { position, stream: &write.stream, version, event_id, recorded_at, hash };
                self.pending.push(kept_record(&stored, event, tail.hash, commit, seal_columns)?);
                *tail = Tail { position, hash, recorded_at };
                event_ids.push(event_id);
                version += 1;
            }
            streams.push(StreamAppended { stream: write.stream.clone(), first_version, last_version: version - 1 });
        }
        Ok(AppendOutcome {
            first_position,
            last_position: tail.position,
            streams,
            recorded_at: tail.recorded_at,
            event_ids,
        })
    }
}

/// Where and how an event was just stored.
struct Stored<'a> {
    position: u64,
    stream: &'a StreamId,
    version: u64,
    event_id: Uuid,
    recorded_at: Timestamp,
    hash: Hash,
}

/// The record a read of the row just stored returns (the seal decoded from the very columns
/// stored), kept for the log's followers.
fn kept_record(
    stored: &Stored<'_>,
    event: &NewEvent,
    prev_hash: Hash,
    commit: CommitSpan,
    seal: SealColumns,
) -> Result<EventRecord, StoreError> {
    let position = stored.position;
    let corrupt_here = |detail: String| corrupt(to_i64(position, "position").unwrap_or(-1), detail);
    let metadata = event.metadata.clone();
    Ok(EventRecord {
        fold: FoldRecord {
            position,
            stream_id: stored.stream.clone(),
            stream_version: stored.version,
            event_type: event.event_type.as_str().into(),
            data: event.data.clone(),
            principal: metadata.actor.principal,
            correlation_id: metadata.correlation_id,
            recorded_at: stored.recorded_at,
            hash: stored.hash,
            commit,
        },
        token_id: metadata.actor.token_id,
        causation_id: metadata.causation_id,
        source: metadata.source,
        occurred_at: metadata.occurred_at,
        event_id: stored.event_id,
        schema_version: event.schema_version,
        prev_hash,
        seal: PayloadSeal::from_columns(seal).map_err(corrupt_here)?,
    })
}

/// Read connections, at most `max_read_connections` in use at once, used on the blocking pool.
struct ReaderPool {
    path: PathBuf,
    busy_timeout_ms: u64,
    reader_mmap_bytes: u64,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReaderPool {
    fn new(path: PathBuf, options: &SqliteOptions) -> Self {
        ReaderPool {
            path,
            busy_timeout_ms: options.busy_timeout_ms,
            reader_mmap_bytes: options.reader_mmap_bytes,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(options.max_read_connections.max(1))),
        }
    }

    fn checkout(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(storage_error)?;
        conn.busy_timeout(Duration::from_millis(self.busy_timeout_ms)).map_err(storage_error)?;
        stable_plans(&conn).map_err(storage_error)?;
        conn.execute_batch(&format!("PRAGMA query_only = 1; PRAGMA mmap_size = {};", self.reader_mmap_bytes))
            .map_err(storage_error)?;
        Ok(conn)
    }

    fn checkin(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    fn run_blocking<T>(&self, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.checkout()?;
        let result = work(&conn);
        self.checkin(conn);
        result
    }

    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            pool.run_blocking(work)
        })
        .await
        .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))?
    }
}

/// One background thread: notices commits made by other connections (`PRAGMA data_version`)
/// and publishes the head; and after any commit, runs a passive WAL checkpoint on its own
/// connection so that the writer's commits never pay for one.
fn spawn_external_change_poller(
    readers: Arc<ReaderPool>,
    head: Arc<HeadPublisher>,
    stop: Arc<AtomicBool>,
    interval_ms: u64,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("cmdb-log-poller".into()).spawn(move || {
        let Ok(conn) = Connection::open_with_flags(
            &readers.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) else {
            return;
        };
        let _ = conn.busy_timeout(Duration::from_millis(readers.busy_timeout_ms));
        let _ = stable_plans(&conn);
        let mut last_seen: Option<i64> = None;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(version) = conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                && last_seen != Some(version)
            {
                last_seen = Some(version);
                if let Ok(tail) = read_tail(&conn) {
                    head.publish(Digest { position: tail.position, hash: tail.hash });
                }
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
            std::thread::sleep(Duration::from_millis(interval_ms));
        }
    })?;
    Ok(())
}

#[async_trait]
impl EventStore for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ALL
    }

    async fn shutdown(&self) {
        SqliteStore::shutdown(self).await;
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
        let stream = stream.clone();
        let from = stream_read_start(direction, from);
        self.shared
            .readers
            .run(move |conn| {
                let sql = match direction {
                    Direction::Forward => format!(
                        "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version >= ?2 ORDER BY stream_version ASC LIMIT ?3"
                    ),
                    Direction::Backward => format!(
                        "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version <= ?2 ORDER BY stream_version DESC LIMIT ?3"
                    ),
                };
                let mut statement = conn.prepare_cached(&sql).map_err(storage_error)?;
                collect_rows(&mut statement, params![stream.as_str(), from, max_count as i64], max_count)
            })
            .await
    }

    async fn read_all(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        if let Some(page) = self.recent_page(after, max_count)? {
            return Ok(page);
        }
        self.read_all_stored(after, max_count).await
    }

    async fn read_all_stored(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.stored_page(after, max_count, SELECT_COLUMNS, decode_row).await
    }

    async fn read_fold(&self, after: u64, max_count: usize) -> Result<Vec<FoldRecord>, StoreError> {
        if let Some(page) = self.recent_page(after, max_count)? {
            return Ok(page.into_iter().map(|record| record.fold).collect());
        }
        // 11 of the 22 columns: every column read is a copy in SQLite and calls to read it here
        // (issue 15, part 6: about a third of the read of whole records).
        self.stored_page(after, max_count, FOLD_COLUMNS, decode_fold_row).await
    }

    async fn read_links(&self, after: u64, max_count: usize) -> Result<Vec<ChainLink>, StoreError> {
        if let Some(page) = self.recent_page(after, max_count)? {
            return Ok(page.iter().map(ChainLink::from).collect());
        }
        // Four narrow columns: a quarter of the time of whole rows on the large estate.
        self.stored_page(after, max_count, LINK_COLUMNS, decode_link).await
    }

    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError> {
        let Ok(position) = i64::try_from(position) else { return Ok(None) };
        self.shared
            .readers
            .run(move |conn| {
                let mut statement = conn
                    .prepare_cached(&format!("SELECT {SELECT_COLUMNS} FROM events WHERE position = ?1"))
                    .map_err(storage_error)?;
                Ok(collect_rows(&mut statement, [position], 1)?.pop())
            })
            .await
    }

    async fn head(&self) -> Result<Digest, StoreError> {
        self.shared.head.digest()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head_receiver.clone()
    }

    async fn refresh_head(&self) -> Result<u64, StoreError> {
        let tail = self.shared.readers.run(|conn| read_tail(conn).map_err(storage_error)).await?;
        self.shared.head.publish(Digest { position: tail.position, hash: tail.hash });
        Ok(tail.position)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        let stream = stream.clone();
        self.shared.readers.run(move |conn| stream_version(conn, stream.as_str()).map_err(storage_error)).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError> {
        self.shared
            .readers
            .run(move |conn| {
                // One read transaction: a consistent snapshot for the whole search.
                let snapshot = conn.unchecked_transaction().map_err(storage_error)?;
                let head = read_tail(&snapshot).map_err(storage_error)?.position;
                let mut statement = snapshot
                    .prepare_cached("SELECT recorded_at FROM events WHERE position = ?1")
                    .map_err(storage_error)?;
                let mut recorded_at = |position: u64| -> Result<Timestamp, StoreError> {
                    let micros: i64 = statement
                        .query_row([position as i64], |r| r.get(0))
                        .optional()
                        .map_err(storage_error)?
                        .ok_or_else(|| corrupt(position as i64, "missing row (the log has a gap)"))?;
                    Ok(Timestamp::from_micros(micros))
                };
                if head == 0 || recorded_at(1)? > at {
                    return Ok(0);
                }
                if recorded_at(head)? <= at {
                    return Ok(head);
                }
                // Invariant: recorded_at(low) <= at < recorded_at(high); recorded_at never
                // decreases with position, so a binary search finds the boundary.
                let (mut low, mut high) = (1u64, head);
                while high - low > 1 {
                    let middle = low + (high - low) / 2;
                    if recorded_at(middle)? <= at {
                        low = middle;
                    } else {
                        high = middle;
                    }
                }
                Ok(low)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{event, stream};
    use crate::store::ExpectedVersion;

    /// The stream read's statement is compiled once, not again after each commit of the
    /// writer (see [`stable_plans`]).
    #[tokio::test]
    async fn a_cached_read_is_not_compiled_again_after_each_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
        let name = stream("plans");
        const ROUNDS: u64 = 20;
        for i in 0..ROUNDS {
            store
                .append(AppendRequest::single(name.clone(), ExpectedVersion::Any, vec![event(i)]))
                .await
                .expect("append");
            let read = store.read_stream(&name, Direction::Forward, None, 100).await.expect("read");
            assert_eq!(read.len() as u64, i + 1, "each read sees every commit before it");
            let after = store.read_all(0, 100).await.expect("read all");
            assert_eq!(after.len() as u64, i + 1);
        }
        let sql = format!(
            "SELECT {SELECT_COLUMNS} FROM events WHERE stream_id = ?1 AND stream_version >= ?2 ORDER BY stream_version ASC LIMIT ?3"
        );
        let all = format!("SELECT {SELECT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position ASC LIMIT ?2");
        let (stream_reads, log_reads) = store
            .shared
            .readers
            .run_blocking(|conn| {
                let status =
                    |sql: &str| conn.prepare_cached(sql).map(|s| s.get_status(rusqlite::StatementStatus::RePrepare));
                Ok((status(&sql).map_err(storage_error)?, status(&all).map_err(storage_error)?))
            })
            .expect("status");
        assert_eq!((stream_reads, log_reads), (0, 0), "compiled again after commits");
        store.shutdown().await;
    }

    fn from_file(store: &SqliteStore, after: u64) -> Vec<EventRecord> {
        let sql = format!("SELECT {SELECT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position ASC LIMIT 10000");
        store
            .shared
            .readers
            .run_blocking(|conn| {
                let mut statement = conn.prepare(&sql).map_err(storage_error)?;
                collect_rows(&mut statement, [after as i64], 100)
            })
            .expect("read the file")
    }

    /// What the followers read from memory is exactly what the file holds: every field, in
    /// commits of one and of several events, several streams, metadata with and without
    /// optional fields; a refused append in a group leaves nothing behind.
    #[tokio::test]
    async fn the_recent_events_are_the_events_the_file_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
        let mut with_metadata = event(7);
        with_metadata.metadata.correlation_id = Some("request-1".into());
        with_metadata.metadata.causation_id = Some("cause".into());
        with_metadata.metadata.actor.token_id = Some("token".into());
        with_metadata.metadata.occurred_at = Some(crate::time::Timestamp::from_micros(42));
        store.append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(1)])).await.expect("one");
        let several = AppendRequest::new()
            .write(stream("b"), ExpectedVersion::NoStream, vec![event(2), event(3)])
            .write(stream("c"), ExpectedVersion::NoStream, vec![with_metadata]);
        store.append(several).await.expect("several");
        // Concurrent appends, one refused: group commits with a rolled-back savepoint.
        let appends = (0..8u64).map(|i| {
            let expected = if i == 3 { ExpectedVersion::Exact(99) } else { ExpectedVersion::Any };
            store.append(AppendRequest::single(stream("d"), expected, vec![event(10 + i)]))
        });
        let outcomes = futures::future::join_all(appends).await;
        assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 1, "the one at a wrong version is refused");
        let head = store.head().await.expect("head").position;
        assert_eq!(head, 11);
        for after in 0..head {
            let kept = store.shared.recent.after(after, 100, head).expect("kept in memory");
            assert_eq!(kept, from_file(&store, after), "after {after}");
            assert_eq!(store.read_all(after, 100).await.expect("read"), kept);
        }
        store.shutdown().await;
    }

    /// Another process's commit is read from the file, never mistaken for a gap in memory.
    #[tokio::test]
    async fn a_commit_by_another_process_is_read_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = || SqliteOptions { external_change_poll_ms: 5, ..SqliteOptions::default() };
        let mine = SqliteStore::open(dir.path(), options()).expect("open");
        let other = SqliteStore::open(dir.path(), options()).expect("open again");
        mine.append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(1)])).await.expect("mine");
        other.append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(2)])).await.expect("other");
        let mut head = mine.watch_head();
        tokio::time::timeout(Duration::from_secs(10), head.wait_for(|p| *p >= 2))
            .await
            .expect("noticed")
            .expect("open");
        let all = mine.read_all(0, 100).await.expect("read");
        assert_eq!(all.iter().map(|r| r.position).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(all, from_file(&mine, 0));
        mine.append(AppendRequest::single(stream("a"), ExpectedVersion::Any, vec![event(3)]))
            .await
            .expect("mine again");
        assert_eq!(mine.read_all(1, 100).await.expect("read"), from_file(&mine, 1));
        other.shutdown().await;
        mine.shutdown().await;
    }

    /// A store in a new folder holding six single-event appends, alternating streams a and b.
    async fn store_of_six_events() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
        for n in 0..6 {
            let name = if n % 2 == 0 { "a" } else { "b" };
            store
                .append(AppendRequest::single(stream(name), ExpectedVersion::Any, vec![event(n)]))
                .await
                .expect("append");
        }
        (dir, store)
    }

    #[tokio::test]
    async fn links_read_from_the_file_or_from_memory_are_the_records_places() {
        let (dir, store) = store_of_six_events().await;
        let links = |records: &[EventRecord]| records.iter().map(ChainLink::from).collect::<Vec<_>>();
        // Served from the writer's copy in memory.
        assert_eq!(store.read_links(2, 100).await.expect("links"), links(&from_file(&store, 2)));
        store.shutdown().await;
        // A new process: nothing in memory, the narrow columns from the file.
        let reopened = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("reopen");
        assert_eq!(reopened.read_links(0, 100).await.expect("links"), links(&from_file(&reopened, 0)));
        assert_eq!(reopened.read_links(4, 1).await.expect("links"), links(&from_file(&reopened, 4)[..1]));
        reopened.shutdown().await;
        // A hash we could not have written: corruption at its position, as a whole row's is.
        let path = dir.path().join("events.sqlite");
        Connection::open(&path)
            .expect("raw")
            .execute("UPDATE events SET hash = x'00' WHERE position = 3", [])
            .expect("edit");
        let edited = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("reopen");
        let error = edited.read_links(0, 100).await.expect_err("a 1-byte hash");
        assert!(matches!(&error, StoreError::Corruption { location, .. } if location == "position 3"), "{error}");
        assert!(edited.read_all(0, 100).await.is_err(), "whole rows refuse it too");
        edited.shutdown().await;
    }

    #[tokio::test]
    async fn folds_read_from_the_file_or_from_memory_are_the_records_fold_parts() {
        let (dir, store) = store_of_six_events().await;
        let folds = |records: Vec<EventRecord>| records.into_iter().map(|r| r.fold).collect::<Vec<_>>();
        // Served from the writer's copy in memory.
        assert_eq!(store.read_fold(2, 100).await.expect("folds"), folds(from_file(&store, 2)));
        store.shutdown().await;
        // A new process: nothing in memory, the fold's 11 columns from the file.
        let reopened = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("reopen");
        assert_eq!(reopened.read_fold(0, 100).await.expect("folds"), folds(from_file(&reopened, 0)));
        assert_eq!(reopened.read_fold(4, 1).await.expect("folds"), folds(from_file(&reopened, 4)[..1].to_vec()));
        reopened.shutdown().await;
        let path = dir.path().join("events.sqlite");
        let edit = |sql: &str| Connection::open(&path).expect("raw").execute(sql, []).expect("edit");
        // Columns the fold does not read (the event id, the source) are not its to judge:
        // `verify` and whole reads are.
        for sql in [
            "UPDATE events SET event_id = x'00' WHERE position = 2",
            "UPDATE events SET event_id = randomblob(16), source = 'carrier pigeon' WHERE position = 2",
        ] {
            edit(sql);
            let edited = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("reopen");
            assert_eq!(edited.read_fold(0, 100).await.expect("folds").len(), 6);
            assert!(edited.read_all(0, 100).await.is_err(), "whole rows refuse it: {sql}");
            edited.shutdown().await;
        }
        edit("UPDATE events SET source = 'api' WHERE position = 2");
        // A column it reads that we could not have written: corruption at its position.
        for (sql, what) in [
            ("UPDATE events SET hash = x'00' WHERE position = 3", "a 1-byte hash"),
            (
                "UPDATE events SET hash = randomblob(32), stream_id = 'a b' WHERE position = 3",
                "a stream id with a space",
            ),
            ("UPDATE events SET stream_id = 'a', commit_size = NULL WHERE position = 3", "half a commit"),
        ] {
            edit(sql);
            let edited = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("reopen");
            let error = edited.read_fold(0, 100).await.expect_err(what);
            assert!(
                matches!(&error, StoreError::Corruption { location, .. } if location == "position 3"),
                "{what}: {error}"
            );
            edited.shutdown().await;
        }
    }
}
