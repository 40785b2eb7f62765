//! Editing stored rows behind the PostgreSQL store's back, for the conformance suite's tamper
//! checks: each edit runs on its own connection, on a thread of its own (the [`Tamper`] trait
//! is synchronous and is called from inside async tests). Never used by the server.

use crate::chain::{ChainFields, event_hash};
use crate::store::postgres::schema::{SELECT_COLUMNS, decode_row};
use crate::store::tamper::Tamper;

/// Edits the rows of one schema's log directly, as an attacker with database access would.
pub struct PostgresTamper {
    url: String,
    schema: String,
}

impl PostgresTamper {
    /// Tampers with the log in `schema` of the database at `url`.
    pub fn new(url: &str, schema: &str) -> Self {
        PostgresTamper { url: url.to_string(), schema: schema.to_string() }
    }

    /// Runs `work` with a client whose `search_path` is the log's schema, on a thread and
    /// runtime of its own (the trait is synchronous and called from inside async tests).
    fn with_client<T: Send + 'static>(
        &self,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> T + Send + 'static,
    ) -> T {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tamper: runtime");
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("tamper: connect");
                let driver = tokio::spawn(connection);
                client.batch_execute(&format!("SET search_path TO {schema}")).await.expect("tamper: search path");
                let result = work(&client).await;
                drop(client);
                let _ = driver.await;
                result
            })
        })
        .join()
        .expect("tamper thread")
    }

    /// Runs `sql` (several statements allowed) in one transaction.
    fn run(&self, sql: String) {
        self.with_client(async move |client| {
            client.batch_execute(&format!("BEGIN; {sql}; COMMIT;")).await.expect("tamper: execute");
        });
    }

    fn bytes(value: &[u8]) -> String {
        format!("'\\x{}'::bytea", hex::encode(value))
    }
}

impl Tamper for PostgresTamper {
    fn flip_data_byte(&self, position: u64) {
        self.run(format!(
            "UPDATE events SET data = set_byte(data, length(data) / 2, get_byte(data, length(data) / 2) # 1) WHERE position = {position}"
        ));
    }

    fn set_stream_id(&self, position: u64, stream_id: &str) {
        let stream_id = stream_id.replace('\'', "''");
        self.run(format!("UPDATE events SET stream_id = '{stream_id}' WHERE position = {position}"));
    }

    fn set_principal(&self, position: u64, principal: &str) {
        let principal = principal.replace('\'', "''");
        self.run(format!("UPDATE events SET actor_principal = '{principal}' WHERE position = {position}"));
    }

    fn shift_recorded_at(&self, position: u64) {
        self.run(format!("UPDATE events SET recorded_at = recorded_at + 1 WHERE position = {position}"));
    }

    fn delete(&self, position: u64) {
        self.run(format!("DELETE FROM events WHERE position = {position}"));
    }

    fn swap(&self, a: u64, b: u64) {
        self.run(format!(
            "UPDATE events SET position = -1 WHERE position = {a};
             UPDATE events SET position = {a} WHERE position = {b};
             UPDATE events SET position = {b} WHERE position = -1"
        ));
    }

    fn insert_copy_before(&self, position: u64) {
        self.run(format!(
            "UPDATE events SET position = -(position + 1) WHERE position >= {position};
             UPDATE events SET position = -position WHERE position < 0;
             INSERT INTO events SELECT {position}, stream_id, stream_version + 1000000, decode(md5(random()::text), 'hex'), event_type,
                 schema_version, data, actor_principal, actor_token, correlation_id, causation_id, source,
                 occurred_at, recorded_at, prev_hash, hash, commit_first, commit_size, chain_version, salt, commitment, redacted_by FROM events WHERE position = {position} + 1"
        ));
    }

    fn truncate_after(&self, position: u64) {
        self.run(format!("DELETE FROM events WHERE position > {position}"));
    }

    fn rewrite_chain_from(&self, position: u64, new_data: &[u8]) {
        let new_data = new_data.to_vec();
        let records = self.with_client(async move |client| {
            let rows = client
                .query(
                    &format!("SELECT {SELECT_COLUMNS} FROM events WHERE position >= $1 ORDER BY position"),
                    &[&(position as i64)],
                )
                .await
                .expect("tamper: read");
            rows.iter().map(|row| decode_row(row).expect("tamper: decodable row")).collect::<Vec<_>>()
        });
        let mut records = records;
        assert!(!records.is_empty(), "tamper: nothing at {position}");
        records[0].data = new_data;
        let mut prev = records[0].prev_hash;
        let mut sql = String::new();
        for record in &mut records {
            record.prev_hash = prev;
            record.hash = event_hash(&prev, &ChainFields::of(record));
            prev = record.hash;
            sql.push_str(&format!(
                "UPDATE events SET data = {}, prev_hash = {}, hash = {} WHERE position = {};",
                Self::bytes(&record.data),
                Self::bytes(record.prev_hash.as_bytes()),
                Self::bytes(record.hash.as_bytes()),
                record.position
            ));
        }
        self.run(sql.trim_end_matches(';').to_string());
    }
}
