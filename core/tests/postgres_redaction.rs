//! Redaction on the PostgreSQL backend (issue 18, part 4): a logical backup made after a
//! redaction (`pg_dump`, as docs/evidence.md advises) holds no erased byte, and the log
//! verifies. With `CI=true` a missing `CMDB_TEST_POSTGRES_URL` fails; elsewhere the test says
//! it was skipped.

use std::process::Command;

use cmdb_core::conformance::{event, fresh_schema_name, metadata, postgres_test_url, stream};
use cmdb_core::store::Erasure;
use cmdb_core::store::postgres::{PostgresOptions, PostgresStore};
use cmdb_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent};

const SECRET: &str = "jane.doe@example.com";

fn dump(url: &str, schema: &str) -> Vec<u8> {
    let output = Command::new("pg_dump")
        .args(["--data-only", "--schema", schema, "--dbname", url])
        .output()
        .expect("pg_dump runs (it comes with PostgreSQL)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    // pg_dump writes bytea as hex: look for the text and for its hex.
    let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
        || haystack.windows(hex.len()).any(|w| w == hex.as_bytes())
}

#[tokio::test]
async fn a_backup_made_after_a_redaction_holds_no_erased_byte() {
    let url = match postgres_test_url() {
        Ok(url) => url,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return;
        }
    };
    let schema = fresh_schema_name();
    let store = PostgresStore::open(&url, PostgresOptions { schema: schema.clone(), ..PostgresOptions::default() })
        .await
        .expect("open");
    let person = NewEvent::raw("test.person", format!(r#"{{"email":"{SECRET}"}}"#).into_bytes(), metadata());
    store
        .append(AppendRequest::single(stream("people"), ExpectedVersion::Any, vec![person, event(2)]))
        .await
        .expect("append");
    assert!(contains(&dump(&url, &schema), SECRET), "the address is in a backup made before");
    let record = AppendRequest::single(
        stream("redactions"),
        ExpectedVersion::Any,
        vec![NewEvent::raw(cmdb_core::chain::REDACTION_APPLIED, br#"{"positions":[1]}"#.to_vec(), metadata())],
    );
    store
        .redact(vec![Erasure { position: 1, data: br#"{"email":"[redacted]"}"#.to_vec() }], record)
        .await
        .expect("redacted");
    assert!(!contains(&dump(&url, &schema), SECRET), "a backup made after holds no erased byte");
    assert!(store.verify().await.expect("verify").is_intact());
    store.shutdown().await;
}
