//! The PostgreSQL backend's writer: one task per process owning one connection, doing group
//! commit. Appends queue on a bounded channel; the writer takes what is waiting (up to
//! `max_group_commit_events`), and in one transaction:
//!
//! 1. takes the log's transaction-level advisory lock (every writer of the log, in any
//!    process, takes it first, so transactions on the log run one at a time and a later
//!    statement sees every earlier commit);
//! 2. reads the counter row (last position, hash, time) and the versions of every stream the
//!    group names, in one pipelined round trip;
//! 3. checks each append in order against those versions in memory (an append refused for a
//!    conflict is answered and leaves no trace; later ones see the versions of earlier ones),
//!    assigns gapless positions and chains the hashes;
//! 4. inserts every accepted event in one statement (`unnest` of column arrays), moves the
//!    counter row, announces the commit (`pg_notify`, delivered at commit) and commits.
//!
//! Failures: an error before `COMMIT` means nothing was written (answered as retryable
//! storage errors). An error *from* `COMMIT` that the server reported means the same. A lost
//! connection during `COMMIT` leaves the outcome unknown: those appends are answered with
//! [`StoreError::CommitOutcomeUnknown`] and never retried here (fail-stop for that group);
//! the writer drops the connection, reconnects on the next group and reads the counter row
//! again, trusting nothing it held in memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

use crate::chain::{ChainFields, Digest, Hash, event_hash};
use crate::event::EventRecord;
use crate::ids::IdGenerator;
use crate::store::head::HeadPublisher;
use crate::store::postgres::schema::{CHANNEL, SELECT_COLUMNS, decode_row, lock_key};
use crate::store::validate::{check_bulk_load, check_expectations};
use crate::store::{AppendOutcome, AppendRequest, Erasure, StoreError, StreamAppended, check_redaction, erased};
use crate::time::{Clock, Timestamp};

/// A job for the writer.
pub(super) enum Job {
    Append { request: AppendRequest, reply: Reply },
    Redact { erasures: Vec<Erasure>, record: AppendRequest, reply: Reply },
    Shutdown { reply: oneshot::Sender<()> },
}

pub(super) type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

const INSERT_EVENTS: &str = "INSERT INTO events (position, stream_id, stream_version, event_id, event_type, \
     schema_version, data, actor_principal, actor_token, correlation_id, causation_id, source, occurred_at, \
     recorded_at, prev_hash, hash, commit_first, commit_size, chain_version, salt, commitment, redacted_by) \
     SELECT * FROM unnest($1::bigint[], $2::text[], \
     $3::bigint[], $4::bytea[], $5::text[], $6::bigint[], $7::bytea[], $8::text[], $9::text[], $10::text[], \
     $11::text[], $12::text[], $13::bigint[], $14::bigint[], $15::bytea[], $16::bytea[], $17::bigint[], $18::bigint[], \
     $19::bigint[], $20::bytea[], $21::bytea[], $22::bigint[])";
/// Replaces a redacted event's payload and seal.
const ERASE: &str = "UPDATE events SET data = $1, chain_version = $2, salt = $3, commitment = $4, redacted_by = $5 \
     WHERE position = $6";
/// `meta` key `live_appends_started` is set by the first append stamped at commit; after it,
/// bulk loads are refused.
const READ_COUNTER: &str = "SELECT position, hash, recorded_at, \
     EXISTS (SELECT 1 FROM meta WHERE key = 'live_appends_started') FROM head";
/// One backward index probe per stream (`max(...) GROUP BY` would read every version).
const READ_VERSIONS: &str = "SELECT s.id, (SELECT e.stream_version FROM events e WHERE e.stream_id = s.id \
     ORDER BY e.stream_version DESC LIMIT 1) FROM unnest($1::text[]) AS s(id)";
const READ_EXISTING_IDS: &str = "SELECT event_id FROM events WHERE event_id = ANY($1)";
const MOVE_COUNTER: &str = "UPDATE head SET position = $1, hash = $2, recorded_at = $3";
const MARK_LIVE: &str = "INSERT INTO meta (key, value) VALUES ('live_appends_started', '1') ON CONFLICT DO NOTHING";
const ANNOUNCE: &str = "SELECT pg_notify($1, $2)";

pub(super) struct Connection {
    client: Client,
    insert: Statement,
    counter: Statement,
    versions: Statement,
    existing_ids: Statement,
    move_counter: Statement,
    mark_live: Statement,
    announce: Statement,
}

/// The writer's state; runs as one task.
pub(super) struct Writer {
    pub(super) config: tokio_postgres::Config,
    pub(super) schema: String,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) ids: Arc<dyn IdGenerator>,
    pub(super) head: Arc<HeadPublisher>,
    pub(super) max_group_commit_events: usize,
    pub(super) reconnect_backoff_ms: u64,
    pub(super) connection: Option<Connection>,
    pub(super) last_connect_failure: Option<(Instant, String)>,
}

#[derive(Clone, Copy)]
struct Tail {
    position: u64,
    hash: Hash,
    recorded_at: Timestamp,
}

/// Column arrays of the rows one transaction inserts.
#[derive(Default)]
struct Rows {
    position: Vec<i64>,
    stream_id: Vec<String>,
    stream_version: Vec<i64>,
    event_id: Vec<Vec<u8>>,
    event_type: Vec<String>,
    schema_version: Vec<i64>,
    data: Vec<Vec<u8>>,
    principal: Vec<String>,
    token: Vec<Option<String>>,
    correlation: Vec<Option<String>>,
    causation: Vec<Option<String>>,
    source: Vec<&'static str>,
    occurred_at: Vec<Option<i64>>,
    recorded_at: Vec<i64>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    commit_first: Vec<i64>,
    commit_size: Vec<i64>,
    chain_version: Vec<Option<i64>>,
    salt: Vec<Option<Vec<u8>>>,
    commitment: Vec<Option<Vec<u8>>>,
    redacted_by: Vec<Option<i64>>,
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::InvalidInput(format!("{what} {value} is beyond the log's range")))
}

/// A PostgreSQL error as a store error. Errors the server reported about a statement are
/// storage errors (retryable: the transaction did not commit); a full disk is named; a lost or
/// refused connection makes the database unavailable (retryable).
pub(super) fn pg_error(error: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        // 53100 disk_full, 53200 out_of_memory, 53300 too_many_connections, 53400 configuration_limit_exceeded.
        if code == "53100" {
            return StoreError::StorageFull(format!("PostgreSQL: {}", db.message()));
        }
        // Class 08 (connection exception) and 57P0x (shutting down, starting up, crashed).
        if code.starts_with("08") || code.starts_with("57P") {
            return StoreError::Unavailable(format!("PostgreSQL {code}: {}", db.message()));
        }
        return StoreError::Storage(format!("PostgreSQL {code}: {}", db.message()));
    }
    StoreError::Unavailable(format!("PostgreSQL: {error}"))
}

impl Writer {
    pub(super) async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut carried: Option<Job> = None;
        loop {
            let job = match carried.take() {
                Some(job) => job,
                None => match jobs.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            let (request, reply) = match job {
                Job::Append { request, reply } => (request, reply),
                Job::Redact { erasures, record, reply } => {
                    let _ = reply.send(self.redact(&erasures, record).await);
                    continue;
                }
                Job::Shutdown { reply } => {
                    let _ = reply.send(());
                    break;
                }
            };
            let mut events = request.event_count();
            let mut group = vec![(request, reply)];
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
            self.commit_group(group).await;
        }
    }

    async fn connect(&mut self) -> Result<(), StoreError> {
        if self.connection.as_ref().is_some_and(|c| !c.client.is_closed()) {
            return Ok(());
        }
        self.connection = None;
        if let Some((at, reason)) = &self.last_connect_failure
            && at.elapsed() < Duration::from_millis(self.reconnect_backoff_ms)
        {
            return Err(StoreError::Unavailable(format!("PostgreSQL is unreachable ({reason})")));
        }
        match open_connection(&self.config).await {
            Ok(connection) => {
                self.connection = Some(connection);
                self.last_connect_failure = None;
                Ok(())
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(%reason, "the log writer cannot connect to PostgreSQL");
                self.last_connect_failure = Some((Instant::now(), reason.clone()));
                Err(StoreError::Unavailable(format!("PostgreSQL is unreachable ({reason})")))
            }
        }
    }

    async fn commit_group(&mut self, group: Vec<(AppendRequest, Reply)>) {
        let fail_all = |group: Vec<Reply>, error: StoreError| {
            for reply in group {
                let _ = reply.send(Err(error.clone()));
            }
        };
        if let Err(error) = self.connect().await {
            return fail_all(group.into_iter().map(|(_, reply)| reply).collect(), error);
        }
        let Some(conn) = self.connection.as_ref() else { return };
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({})", lock_key(&self.schema));
        let prepared = match prepare_group(conn, &lock, &group).await {
            Ok(state) => state,
            Err(error) => {
                self.abandon().await;
                return fail_all(group.into_iter().map(|(_, reply)| reply).collect(), error);
            }
        };
        let (tail, mut live, mut versions, existing_ids) = prepared;
        let stamp = self.clock.now().max(tail.recorded_at);
        let mut state = GroupState { tail, rows: Rows::default(), seen_ids: existing_ids, mark_live: false };
        let mut accepted: Vec<(Reply, AppendOutcome)> = Vec::with_capacity(group.len());
        for (request, reply) in group {
            match state.apply(&request, &mut versions, &mut live, stamp, self.ids.as_ref()) {
                Ok(outcome) => accepted.push((reply, outcome)),
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            }
        }
        if accepted.is_empty() {
            self.abandon().await;
            return;
        }
        let replies = |accepted: Vec<(Reply, AppendOutcome)>| accepted.into_iter().map(|(reply, _)| reply).collect();
        if let Err(error) = write_rows(conn, &state, &self.schema).await {
            self.abandon().await;
            return fail_all(replies(accepted), error);
        }
        match conn.client.batch_execute("COMMIT").await {
            Ok(()) => {
                self.head.publish(Digest { position: state.tail.position, hash: state.tail.hash });
                for (reply, outcome) in accepted {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) if error.as_db_error().is_some() => {
                // The server answered: the transaction did not commit.
                self.abandon().await;
                fail_all(replies(accepted), pg_error(&error));
            }
            Err(error) => {
                let reason = format!("the connection to PostgreSQL was lost during COMMIT ({error})");
                tracing::error!(%reason, events = state.rows.position.len(), "commit outcome unknown");
                self.connection = None;
                fail_all(replies(accepted), StoreError::CommitOutcomeUnknown(reason));
            }
        }
    }

    /// One redaction in its own transaction: the record appended as a group of one, then the
    /// erased payloads replaced, under the log's lock.
    async fn redact(&mut self, erasures: &[Erasure], record: AppendRequest) -> Result<AppendOutcome, StoreError> {
        self.connect().await?;
        let Some(conn) = self.connection.as_ref() else {
            return Err(StoreError::Unavailable("no connection to PostgreSQL".into()));
        };
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({})", lock_key(&self.schema));
        let (sender, _unused) = oneshot::channel();
        let group = [(record, sender)];
        let result = async {
            let (tail, mut live, mut versions, existing_ids) = prepare_group(conn, &lock, &group).await?;
            check_redaction(erasures, &group[0].0, tail.position)?;
            let record_position = tail.position + 1;
            let positions: Vec<i64> =
                erasures.iter().map(|e| to_i64(e.position, "position")).collect::<Result<_, _>>()?;
            let rows = conn
                .client
                .query(&format!("SELECT {SELECT_COLUMNS} FROM events WHERE position = ANY($1)"), &[&positions])
                .await
                .map_err(|e| pg_error(&e))?;
            let stored: HashMap<u64, EventRecord> =
                rows.iter().map(decode_row).map(|r| r.map(|r| (r.position, r))).collect::<Result<_, _>>()?;
            let mut replaced = Vec::with_capacity(erasures.len());
            for erasure in erasures {
                let event = stored.get(&erasure.position).ok_or_else(|| {
                    StoreError::InvalidInput(format!("position {} is not in the log", erasure.position))
                })?;
                replaced.push(erased(event, erasure, record_position)?);
            }
            let stamp = self.clock.now().max(tail.recorded_at);
            let mut state = GroupState { tail, rows: Rows::default(), seen_ids: existing_ids, mark_live: false };
            let outcome = state.apply(&group[0].0, &mut versions, &mut live, stamp, self.ids.as_ref())?;
            write_rows(conn, &state, &self.schema).await?;
            let erase = conn.client.prepare(ERASE).await.map_err(|e| pg_error(&e))?;
            for event in &replaced {
                let columns = event.seal.to_columns();
                let position = to_i64(event.position, "position")?;
                conn.client
                    .execute(
                        &erase,
                        &[
                            &event.data,
                            &columns.chain_version,
                            &columns.salt,
                            &columns.commitment,
                            &columns.redacted_by,
                            &position,
                        ],
                    )
                    .await
                    .map_err(|e| pg_error(&e))?;
            }
            Ok::<_, StoreError>((outcome, state.tail))
        }
        .await;
        let (outcome, tail) = match result {
            Ok(done) => done,
            Err(error) => {
                self.abandon().await;
                return Err(error);
            }
        };
        let Some(conn) = self.connection.as_ref() else {
            return Err(StoreError::Unavailable("no connection to PostgreSQL".into()));
        };
        match conn.client.batch_execute("COMMIT").await {
            Ok(()) => {
                self.head.publish(Digest { position: tail.position, hash: tail.hash });
                Ok(outcome)
            }
            Err(error) if error.as_db_error().is_some() => {
                self.abandon().await;
                Err(pg_error(&error))
            }
            Err(error) => {
                self.connection = None;
                Err(StoreError::CommitOutcomeUnknown(format!(
                    "the connection to PostgreSQL was lost during the COMMIT of a redaction ({error})"
                )))
            }
        }
    }

    /// Rolls back whatever is open; drops a connection that is gone.
    async fn abandon(&mut self) {
        if let Some(conn) = &self.connection
            && (conn.client.is_closed() || conn.client.batch_execute("ROLLBACK").await.is_err())
        {
            self.connection = None;
        }
    }
}

/// Opens the writer's connection and prepares its statements.
async fn open_connection(config: &tokio_postgres::Config) -> Result<Connection, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "the log writer's PostgreSQL connection ended");
        }
    });
    let (insert, counter, versions, existing_ids, move_counter, mark_live, announce) = futures::try_join!(
        client.prepare(INSERT_EVENTS),
        client.prepare(READ_COUNTER),
        client.prepare(READ_VERSIONS),
        client.prepare(READ_EXISTING_IDS),
        client.prepare(MOVE_COUNTER),
        client.prepare(MARK_LIVE),
        client.prepare(ANNOUNCE),
    )?;
    Ok(Connection { client, insert, counter, versions, existing_ids, move_counter, mark_live, announce })
}

type Prepared = (Tail, bool, HashMap<String, u64>, HashSet<Uuid>);

/// Begins the transaction, takes the lock, and reads what the group's checks need.
async fn prepare_group(
    conn: &Connection,
    begin_and_lock: &str,
    group: &[(AppendRequest, Reply)],
) -> Result<Prepared, StoreError> {
    conn.client.batch_execute(begin_and_lock).await.map_err(|e| pg_error(&e))?;
    let mut names: Vec<&str> = Vec::new();
    let mut supplied_ids: Vec<Vec<u8>> = Vec::new();
    for (request, _) in group {
        names.extend(request.conditions.iter().map(|c| c.stream.as_str()));
        for write in &request.writes {
            names.push(write.stream.as_str());
            supplied_ids.extend(write.events.iter().filter_map(|e| e.event_id).map(|id| id.as_bytes().to_vec()));
        }
    }
    names.sort_unstable();
    names.dedup();
    let existing = async {
        if supplied_ids.is_empty() {
            return Ok(Vec::new());
        }
        conn.client.query(&conn.existing_ids, &[&supplied_ids]).await
    };
    let version_params: [&(dyn ToSql + Sync); 1] = [&names];
    let (counter, version_rows, existing_rows) = futures::try_join!(
        conn.client.query_one(&conn.counter, &[]),
        conn.client.query(&conn.versions, &version_params),
        existing,
    )
    .map_err(|e| pg_error(&e))?;
    let storage = |e: tokio_postgres::Error| StoreError::Storage(format!("unexpected row from PostgreSQL: {e}"));
    let position: i64 = counter.try_get(0).map_err(storage)?;
    let hash: Vec<u8> = counter.try_get(1).map_err(storage)?;
    let recorded_at: i64 = counter.try_get(2).map_err(storage)?;
    let live: bool = counter.try_get(3).map_err(storage)?;
    let tail = Tail {
        position: u64::try_from(position).map_err(|_| StoreError::Corruption {
            location: "the head row".into(),
            detail: "negative position".into(),
        })?,
        hash: Hash::from_slice(&hash).ok_or_else(|| StoreError::Corruption {
            location: "the head row".into(),
            detail: "hash is not 32 bytes".into(),
        })?,
        recorded_at: Timestamp::from_micros(recorded_at),
    };
    let mut versions = HashMap::with_capacity(version_rows.len());
    for row in version_rows {
        let stream: String = row.try_get(0).map_err(storage)?;
        let version: Option<i64> = row.try_get(1).map_err(storage)?;
        if let Some(version) = version {
            versions.insert(stream, u64::try_from(version).unwrap_or(0));
        }
    }
    let mut existing_ids = HashSet::with_capacity(existing_rows.len());
    for row in existing_rows {
        let id: Vec<u8> = row.try_get(0).map_err(storage)?;
        if let Ok(id) = Uuid::from_slice(&id) {
            existing_ids.insert(id);
        }
    }
    Ok((tail, live, versions, existing_ids))
}

/// Inserts the rows, moves the counter row and announces the commit, pipelined.
async fn write_rows(conn: &Connection, state: &GroupState, schema: &str) -> Result<(), StoreError> {
    let rows = &state.rows;
    let prev_hashes: Vec<&[u8]> = rows.prev_hash.iter().map(Vec::as_slice).collect();
    let hashes: Vec<&[u8]> = rows.hash.iter().map(Vec::as_slice).collect();
    let ids: Vec<&[u8]> = rows.event_id.iter().map(Vec::as_slice).collect();
    let data: Vec<&[u8]> = rows.data.iter().map(Vec::as_slice).collect();
    let params: [&(dyn ToSql + Sync); 22] = [
        &rows.position,
        &rows.stream_id,
        &rows.stream_version,
        &ids,
        &rows.event_type,
        &rows.schema_version,
        &data,
        &rows.principal,
        &rows.token,
        &rows.correlation,
        &rows.causation,
        &rows.source,
        &rows.occurred_at,
        &rows.recorded_at,
        &prev_hashes,
        &hashes,
        &rows.commit_first,
        &rows.commit_size,
        &rows.chain_version,
        &rows.salt,
        &rows.commitment,
        &rows.redacted_by,
    ];
    let position = to_i64(state.tail.position, "position")?;
    let hash = state.tail.hash.as_bytes().to_vec();
    let recorded_at = state.tail.recorded_at.as_micros();
    let mark_live = async {
        if state.mark_live {
            conn.client.execute(&conn.mark_live, &[]).await?;
        }
        Ok(0)
    };
    let counter_params: [&(dyn ToSql + Sync); 3] = [&position, &hash, &recorded_at];
    let announce_params: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &schema];
    futures::try_join!(
        conn.client.execute(&conn.insert, &params),
        conn.client.execute(&conn.move_counter, &counter_params),
        mark_live,
        conn.client.execute(&conn.announce, &announce_params),
    )
    .map_err(|e| pg_error(&e))?;
    Ok(())
}

/// What one group has assigned so far.
struct GroupState {
    tail: Tail,
    rows: Rows,
    seen_ids: HashSet<Uuid>,
    mark_live: bool,
}

impl GroupState {
    /// Checks one append against the versions as the group has moved them, and adds its rows.
    /// A refused append changes nothing.
    fn apply(
        &mut self,
        request: &AppendRequest,
        versions: &mut HashMap<String, u64>,
        live: &mut bool,
        stamp: Timestamp,
        ids: &dyn IdGenerator,
    ) -> Result<AppendOutcome, StoreError> {
        let current = check_expectations(request, |stream| Ok(versions.get(stream.as_str()).copied()))?;
        let bulk = check_bulk_load(request, *live, self.tail.recorded_at)?;
        let mut new_ids = HashSet::new();
        for event in request.writes.iter().flat_map(|w| &w.events) {
            if let Some(id) = event.event_id
                && (self.seen_ids.contains(&id) || !new_ids.insert(id))
            {
                return Err(StoreError::DuplicateEventId(id));
            }
        }
        let mut tail = self.tail;
        let first_position = tail.position + 1;
        let mut streams = Vec::with_capacity(request.writes.len());
        let mut event_ids = Vec::with_capacity(request.event_count());
        let mut rows = Rows::default();
        let mut moved: Vec<(&str, u64)> = Vec::with_capacity(request.writes.len());
        for (write, actual) in request.writes.iter().zip(current) {
            let first_version = actual.map_or(0, |v| v + 1);
            let mut version = first_version;
            for event in &write.events {
                let position = tail.position + 1;
                let event_id = event.event_id.unwrap_or_else(|| ids.next_id());
                let recorded_at = event.recorded_at.unwrap_or(stamp);
                let seal = request.seal_of(event_ids.len());
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
                let metadata = &event.metadata;
                rows.position.push(to_i64(position, "position")?);
                rows.stream_id.push(write.stream.as_str().to_owned());
                rows.stream_version.push(to_i64(version, "stream version")?);
                rows.event_id.push(event_id.as_bytes().to_vec());
                rows.event_type.push(event.event_type.clone());
                rows.schema_version.push(i64::from(event.schema_version));
                rows.data.push(event.data.clone());
                rows.principal.push(metadata.actor.principal.to_string());
                rows.token.push(metadata.actor.token_id.clone());
                rows.correlation.push(metadata.correlation_id.as_ref().map(ToString::to_string));
                rows.causation.push(metadata.causation_id.clone());
                rows.source.push(metadata.source.as_str());
                rows.occurred_at.push(metadata.occurred_at.map(Timestamp::as_micros));
                rows.recorded_at.push(recorded_at.as_micros());
                rows.prev_hash.push(tail.hash.as_bytes().to_vec());
                rows.hash.push(hash.as_bytes().to_vec());
                let commit = request.commit_of(event_ids.len(), first_position);
                rows.commit_first.push(to_i64(commit.first_position, "commit position")?);
                rows.commit_size.push(i64::from(commit.events));
                let columns = seal.to_columns();
                rows.chain_version.push(columns.chain_version);
                rows.salt.push(columns.salt);
                rows.commitment.push(columns.commitment);
                rows.redacted_by.push(columns.redacted_by);
                tail = Tail { position, hash, recorded_at };
                event_ids.push(event_id);
                version += 1;
            }
            moved.push((write.stream.as_str(), version - 1));
            streams.push(StreamAppended { stream: write.stream.clone(), first_version, last_version: version - 1 });
        }
        // Accepted: the group's state moves.
        for (stream, version) in moved {
            versions.insert(stream.to_owned(), version);
        }
        self.seen_ids.extend(event_ids.iter().copied());
        if !bulk && !*live {
            *live = true;
            self.mark_live = true;
        }
        self.rows.append(rows);
        self.tail = tail;
        debug_assert_eq!(self.rows.position.last().copied(), i64::try_from(tail.position).ok());
        Ok(AppendOutcome {
            first_position,
            last_position: tail.position,
            streams,
            recorded_at: tail.recorded_at,
            event_ids,
        })
    }
}

impl Rows {
    fn append(&mut self, mut other: Rows) {
        self.position.append(&mut other.position);
        self.stream_id.append(&mut other.stream_id);
        self.stream_version.append(&mut other.stream_version);
        self.event_id.append(&mut other.event_id);
        self.event_type.append(&mut other.event_type);
        self.schema_version.append(&mut other.schema_version);
        self.data.append(&mut other.data);
        self.principal.append(&mut other.principal);
        self.token.append(&mut other.token);
        self.correlation.append(&mut other.correlation);
        self.causation.append(&mut other.causation);
        self.source.append(&mut other.source);
        self.occurred_at.append(&mut other.occurred_at);
        self.recorded_at.append(&mut other.recorded_at);
        self.prev_hash.append(&mut other.prev_hash);
        self.hash.append(&mut other.hash);
        self.commit_first.append(&mut other.commit_first);
        self.commit_size.append(&mut other.commit_size);
        self.chain_version.append(&mut other.chain_version);
        self.salt.append(&mut other.salt);
        self.commitment.append(&mut other.commitment);
        self.redacted_by.append(&mut other.redacted_by);
    }
}
