//! Edits a log file behind the store's back, as someone with write access to the file could.
//! For the conformance suite's tamper checks and for tests of `cmdb verify`; never used by the
//! product itself.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::{SELECT_COLUMNS, decode_row};
use crate::chain::{ChainFields, event_hash};
use crate::event::EventRecord;
use crate::store::tamper::Tamper;

#[doc(hidden)]
pub struct SqliteTamper {
    path: PathBuf,
}

impl SqliteTamper {
    /// `path` is the log file (`<data dir>/events.sqlite`).
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteTamper { path: path.as_ref().to_path_buf() }
    }

    fn connection(&self) -> Connection {
        let conn = Connection::open(&self.path).expect("tamper: open the log file");
        conn.busy_timeout(std::time::Duration::from_secs(10)).expect("tamper: busy timeout");
        conn
    }

    fn execute(&self, sql: &str, values: impl rusqlite::Params) {
        let conn = self.connection();
        let changed = conn.execute(sql, values).expect("tamper: execute");
        assert!(changed > 0, "tamper: {sql} changed nothing");
    }

    fn records_from(conn: &Connection, position: u64) -> Vec<EventRecord> {
        let mut statement = conn
            .prepare(&format!("SELECT {SELECT_COLUMNS} FROM events WHERE position >= ?1 ORDER BY position"))
            .expect("tamper: prepare");
        let rows = statement.query_map([position as i64], decode_row).expect("tamper: query");
        rows.map(|row| row.expect("tamper: row").expect("tamper: decodable row")).collect()
    }
}

impl Tamper for SqliteTamper {
    fn flip_data_byte(&self, position: u64) {
        let conn = self.connection();
        let mut data: Vec<u8> = conn
            .query_row("SELECT data FROM events WHERE position = ?1", [position as i64], |r| r.get(0))
            .expect("tamper: read data");
        let middle = data.len() / 2;
        data[middle] ^= 0x01;
        conn.execute("UPDATE events SET data = ?1 WHERE position = ?2", params![data, position as i64])
            .expect("tamper: write data");
    }

    fn set_stream_id(&self, position: u64, stream_id: &str) {
        self.execute("UPDATE events SET stream_id = ?1 WHERE position = ?2", params![stream_id, position as i64]);
    }

    fn set_principal(&self, position: u64, principal: &str) {
        self.execute("UPDATE events SET actor_principal = ?1 WHERE position = ?2", params![principal, position as i64]);
    }

    fn shift_recorded_at(&self, position: u64) {
        self.execute("UPDATE events SET recorded_at = recorded_at + 1 WHERE position = ?1", [position as i64]);
    }

    fn delete(&self, position: u64) {
        self.execute("DELETE FROM events WHERE position = ?1", [position as i64]);
    }

    fn swap(&self, a: u64, b: u64) {
        let conn = self.connection();
        conn.execute_batch(&format!(
            "BEGIN; UPDATE events SET position = -1 WHERE position = {a};
             UPDATE events SET position = {a} WHERE position = {b};
             UPDATE events SET position = {b} WHERE position = -1; COMMIT;"
        ))
        .expect("tamper: swap");
    }

    fn insert_copy_before(&self, position: u64) {
        let conn = self.connection();
        conn.execute_batch(&format!(
            "BEGIN;
             UPDATE events SET position = -(position + 1) WHERE position >= {position};
             UPDATE events SET position = -position WHERE position < 0;
             INSERT INTO events SELECT {position}, stream_id, stream_version + 1000000, randomblob(16), event_type,
                 schema_version, data, actor_principal, actor_token, correlation_id, causation_id, source,
                 occurred_at, recorded_at, prev_hash, hash, commit_first, commit_size, chain_version, salt, commitment, redacted_by
                 FROM events WHERE position = {position} + 1;
             COMMIT;"
        ))
        .expect("tamper: insert");
    }

    fn truncate_after(&self, position: u64) {
        self.execute("DELETE FROM events WHERE position > ?1", [position as i64]);
    }

    fn rewrite_chain_from(&self, position: u64, new_data: &[u8]) {
        let conn = self.connection();
        let mut records = Self::records_from(&conn, position);
        assert!(!records.is_empty(), "tamper: nothing at {position}");
        records[0].data = new_data.to_vec();
        let mut prev = records[0].prev_hash;
        conn.execute_batch("BEGIN").expect("tamper: begin");
        for record in &mut records {
            record.prev_hash = prev;
            record.hash = event_hash(&prev, &ChainFields::of(record));
            prev = record.hash;
            conn.execute(
                "UPDATE events SET data = ?1, prev_hash = ?2, hash = ?3 WHERE position = ?4",
                params![
                    record.data,
                    record.prev_hash.as_bytes().as_slice(),
                    record.hash.as_bytes().as_slice(),
                    record.position as i64
                ],
            )
            .expect("tamper: rewrite");
        }
        conn.execute_batch("COMMIT").expect("tamper: commit");
    }
}
