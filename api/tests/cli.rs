//! The operator commands, run as the real binary: each clear on bad input, exiting non-zero,
//! and never changing the stored log when it refuses.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use cmdb_core::store::sqlite::{LOG_FILE_NAME, SqliteTamper};
use cmdb_core::store::tamper::Tamper;
use common::TestServer;
use serde_json::json;

fn cmdb(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cmdb")).arg("--data-dir").arg(data_dir).args(args).output().expect("run cmdb")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let output = cmdb(data_dir, args);
    assert!(output.status.success(), "cmdb {args:?} failed: {}", stderr(&output));
    stdout(&output)
}

fn refused(data_dir: &Path, args: &[&str], needle: &str) {
    let output = cmdb(data_dir, args);
    assert_eq!(
        output.status.code(),
        Some(2),
        "cmdb {args:?} should fail with 2: {}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stderr(&output).contains(needle), "cmdb {args:?}: {:?} should mention {needle:?}", stderr(&output));
}

fn log_fingerprint(data_dir: &Path) -> String {
    ok(data_dir, &["digest"])
}

/// A data directory with a few principals and tokens, made by the CLI alone.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    ok(dir.path(), &["principal", "create", "root", "--role", "admin"]);
    ok(
        dir.path(),
        &["principal", "create", "deploy-bot", "--kind", "system", "--role", "deployer", "--display-name", "CI"],
    );
    ok(dir.path(), &["principal", "grant", "deploy-bot", "viewer"]);
    ok(dir.path(), &["token", "create", "--principal", "deploy-bot", "--label", "github", "--expires-in-days", "30"]);
    dir
}

#[test]
fn principals_and_tokens_are_managed_from_the_cli() {
    let dir = populated();
    let list = ok(dir.path(), &["principal", "list"]);
    assert!(
        list.contains("deploy-bot") && list.contains("deployer,viewer") || list.contains("viewer,deployer"),
        "{list}"
    );
    let tokens = ok(dir.path(), &["token", "list", "--principal", "deploy-bot"]);
    assert!(tokens.contains("live") && tokens.contains("github"), "{tokens}");
    let token_id = tokens.lines().nth(1).and_then(|l| l.split_whitespace().next()).expect("a token row").to_owned();
    ok(dir.path(), &["principal", "revoke-role", "deploy-bot", "viewer"]);
    ok(dir.path(), &["token", "revoke", &token_id, "--reason", "rotated"]);
    assert!(ok(dir.path(), &["token", "list"]).contains("revoked"));

    let before = log_fingerprint(dir.path());
    refused(dir.path(), &["principal", "create", "deploy-bot"], "already exists");
    refused(dir.path(), &["principal", "create", "Bad Name"], "not valid");
    refused(dir.path(), &["principal", "create", "x", "--role", "superuser"], "unknown role");
    refused(dir.path(), &["principal", "create", "x", "--kind", "robot"], "unknown principal kind");
    refused(dir.path(), &["principal", "grant", "nobody", "viewer"], "no principal named");
    refused(dir.path(), &["principal", "revoke-role", "root", "admin"], "last principal with the admin role");
    refused(dir.path(), &["token", "create", "--principal", "nobody"], "no principal named");
    refused(dir.path(), &["token", "revoke", "not-a-uuid"], "not a token id");
    refused(dir.path(), &["token", "revoke", &token_id], "already revoked");
    refused(dir.path(), &["token", "list", "--principal", "nobody"], "no principal named");
    let clap = cmdb(dir.path(), &["token", "create", "--principal", "root", "--expires-in-days", "0"]);
    assert_eq!(clap.status.code(), Some(2));
    assert!(stderr(&clap).contains("--expires-in-days"));
    assert_eq!(log_fingerprint(dir.path()), before, "refused commands changed the log");
}

#[test]
fn commands_on_a_missing_log_say_so() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [&["verify"][..], &["digest"], &["principal", "list"], &["export", "--as-of", "1"]] {
        refused(dir.path(), args, "no event log");
    }
    assert!(!dir.path().join(LOG_FILE_NAME).exists(), "reading commands never create a log");
}

#[test]
fn verify_reports_tampering_with_exit_code_1_and_digests_catch_rewrites() {
    let dir = populated();
    let digest = log_fingerprint(dir.path()).trim().to_owned();
    assert!(ok(dir.path(), &["verify"]).contains("chain intact: 4 events"));
    assert!(ok(dir.path(), &["verify", "--digest", &digest]).contains("matches"));
    refused(dir.path(), &["verify", "--digest", "nonsense"], "not a digest");

    SqliteTamper::new(dir.path().join(LOG_FILE_NAME)).set_principal(2, "mallory");
    let output = cmdb(dir.path(), &["verify"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("CHAIN BROKEN at position 2"), "{}", stdout(&output));
    let output = cmdb(dir.path(), &["verify", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["intact"], false);
    assert_eq!(report["report"]["first_break"]["position"], 2);
    // The server refuses to open a log whose last event was altered; verify still reads it.
    let clean = populated();
    SqliteTamper::new(clean.path().join(LOG_FILE_NAME)).truncate_after(3);
    let output = cmdb(clean.path(), &["verify", "--digest", &digest]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("TRUNCATED"), "{}", stdout(&output));
}

#[test]
fn backup_and_restore_round_trip_and_refuse_to_overwrite() {
    let dir = populated();
    let backups = tempfile::tempdir().expect("dir");
    let file = backups.path().join("cmdb.backup");
    let file_text = file.to_str().expect("utf-8");
    assert!(ok(dir.path(), &["backup", "--to", file_text]).contains("chain verified"));
    refused(dir.path(), &["backup", "--to", file_text], "already exists");

    let restored = tempfile::tempdir().expect("dir");
    let target = restored.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_cmdb"))
        .args(["restore", "--from", file_text, "--data-dir"])
        .arg(&target)
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(log_fingerprint(&target), log_fingerprint(dir.path()));
    // Never over an existing log; never from something that is not a verified backup.
    let before = log_fingerprint(dir.path());
    refused(dir.path(), &["restore", "--from", file_text], "already holds a log");
    let junk = backups.path().join("junk");
    std::fs::write(&junk, b"not a database at all, just some bytes in a file ".repeat(100)).expect("write");
    let empty = restored.path().join("empty");
    let output = Command::new(env!("CARGO_BIN_EXE_cmdb"))
        .args(["restore", "--from", junk.to_str().expect("utf-8"), "--data-dir"])
        .arg(&empty)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("refusing to restore"), "{}", stderr(&output));
    assert!(!empty.join(LOG_FILE_NAME).exists());
    let output = Command::new(env!("CARGO_BIN_EXE_cmdb"))
        .args(["restore", "--from", "/no/such/file", "--data-dir"])
        .arg(&empty)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(log_fingerprint(dir.path()), before);
}

#[test]
fn export_writes_ndjson_as_of_a_position_or_a_time() {
    let dir = populated();
    let all = ok(dir.path(), &["export", "--as-of", "4"]);
    let lines: Vec<serde_json::Value> = all.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["position"], 1);
    assert_eq!(lines[0]["type"], "principal.created");
    assert_eq!(lines[0]["data"]["name"], "root");
    assert_eq!(lines[3]["type"], "token.issued");
    assert_eq!(lines[3]["metadata"]["source"], "cli");
    let two = ok(dir.path(), &["export", "--as-of", "2"]);
    assert_eq!(two.lines().count(), 2);
    let recorded_at = lines[1]["recordedAt"].as_str().expect("time").to_owned();
    let by_time = ok(dir.path(), &["export", "--as-of", &recorded_at]);
    assert!(by_time.lines().count() >= 2);
    assert_eq!(ok(dir.path(), &["export", "--as-of", "2000-01-01T00:00:00Z"]).lines().count(), 0);

    let out = tempfile::tempdir().expect("dir");
    let file = out.path().join("export.ndjson");
    ok(dir.path(), &["export", "--as-of", "4", "--to", file.to_str().expect("utf-8")]);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), all);
    refused(dir.path(), &["export", "--as-of", "4", "--to", file.to_str().expect("utf-8")], "already exists");
    refused(dir.path(), &["export", "--as-of", "99"], "past the end of the log (its head is 4)");
    refused(dir.path(), &["export", "--as-of", "yesterday"], "RFC 3339");
    let missing = cmdb(dir.path(), &["export"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("--as-of"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_revocation_is_in_force_for_a_running_server_when_the_command_returns() {
    let server = TestServer::start().await;
    let token = server.principal_with_token("pipeline", &["VIEWER"]).await;
    let me = server.ok(&token, "{ me { tokenId } }", json!({})).await;
    let token_id = me["me"]["tokenId"].as_str().expect("id").to_owned();
    let data_dir = server.data_dir();
    let output =
        tokio::task::spawn_blocking(move || cmdb(&data_dir, &["token", "revoke", &token_id])).await.expect("join");
    assert!(output.status.success(), "{}", stderr(&output));
    let (status, _) = server.graphql(&token, "{ me { principal } }", json!({})).await;
    assert_eq!(status, 401, "refused right after the command returned");
    // A principal created by the CLI can get a token from the server at once.
    let data_dir = server.data_dir();
    let output =
        tokio::task::spawn_blocking(move || cmdb(&data_dir, &["principal", "create", "from-cli", "--role", "auditor"]))
            .await
            .expect("join");
    assert!(output.status.success());
    server.ok(&server.admin_token, "mutation { createToken(principal: \"from-cli\") { tokenId } }", json!({})).await;
}

#[test]
fn change_show_prints_a_change_and_refuses_unknown_or_malformed_numbers() {
    let dir = tempfile::tempdir().expect("dir");
    ok(dir.path(), &["fixtures", "load", "--size", "small", "--seed", "4"]);
    let before = log_fingerprint(dir.path());
    let text = ok(dir.path(), &["change", "show", "CHG-000001"]);
    assert!(text.starts_with("CHG-000001  normal  closed"), "{text}");
    for needle in ["transitions:", "submit", "approve by", "signed off by", "reviewed by", "CI edits it authorised:"] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["change", "show", "chg-1", "--json"])).expect("json");
    assert_eq!(json["label"], "CHG-000001");
    assert_eq!(json["state"], "closed");
    assert!(json["edits"].as_array().is_some_and(|e| !e.is_empty()), "the build change authorised edits");
    // As of the first event, it did not exist yet.
    refused(dir.path(), &["change", "show", "CHG-000001", "--as-of", "1"], "no change");
    refused(dir.path(), &["change", "show", "CHG-999999"], "no change CHG-999999");
    refused(dir.path(), &["change", "show", "CHG-12x"], "not a change number");
    refused(dir.path(), &["change", "show", "banana"], "change number");
    let overdue = ok(dir.path(), &["change", "overdue"]);
    assert!(overdue.contains("overdue: approval, review"), "{overdue}");
    assert_eq!(log_fingerprint(dir.path()), before, "reading changes writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_tested_loaded_and_shown_and_change_explain_replays_decisions() {
    use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
    use cmdb_core::{AppendRequest, Direction, EventStore, ExpectedVersion, Metadata, NewEvent, Source, StreamId};

    let run = |args: Vec<String>, dir: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cmdb(&dir, &args)
        })
        .await
        .expect("join")
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let dir = server.data_dir();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/policies");
    let policy_file = policies.join("change_approval.rego").display().to_string();
    let tests_file = policies.join("change_approval_test.rego").display().to_string();

    // The shipped policy passes its own Rego tests from the CLI; a failing test exits 1.
    let output = run(args(&["policy", "test", &policy_file, "--tests", &tests_file]), dir.clone()).await;
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("PASS test_tier1_needs_its_owner"), "{}", stdout(&output));
    let scratch = tempfile::tempdir().expect("scratch");
    let failing = scratch.path().join("failing_test.rego");
    std::fs::write(
        &failing,
        "package cmdb.change_test\nimport rego.v1\nimport data.cmdb.change\ntest_never if {\n\tchange.decision.auto_approve with input as {\"change\": {\"type\": \"normal\"}}\n}\n",
    )
    .expect("write");
    let output =
        run(args(&["policy", "test", &policy_file, "--tests", &failing.display().to_string()]), dir.clone()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("FAIL test_never"));

    // A change assessed over GraphQL under the default policy.
    let host = server
        .ok(
            &server.admin_token,
            "mutation($i: RegisterCiInput!) { registerCi(input: $i) { ci { id } } }",
            json!({ "i": { "class": "HOST", "name": "h1", "attributes": {"hostname": "h1", "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 2, "memory_mib": 2048} } }),
        )
        .await["registerCi"]["ci"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let alice = server.principal_with_token("alice", &["EDITOR"]).await;
    let mark = server.principal_with_token("mark", &["CHANGE_MANAGER"]).await;
    let drafted = server
        .ok(
            &alice,
            "mutation($h: ID!) { draftChange(input: { type: NORMAL, title: \"t\", description: \"d\", justification: \"j\", backOutPlan: \"b\", implementer: \"alice\", scope: { cis: [$h] } }) { change { id } } }",
            json!({ "h": host }),
        )
        .await;
    let id = drafted["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    server.ok(&alice, "mutation($id: ID!) { submitChange(id: $id) { position } }", json!({ "id": id })).await;
    server
        .ok(&mark, "mutation($id: ID!) { assessChange(id: $id, note: \"n\") { position } }", json!({ "id": id }))
        .await;

    // Bad policy files are refused with the reason; the log does not move.
    let before = log_fingerprint(&dir);
    let broken = scratch.path().join("broken.rego");
    std::fs::write(&broken, "package cmdb.change\nimport rego.v1\ndecision := {").expect("write");
    let clock = scratch.path().join("clock.rego");
    std::fs::write(&clock, format!("{}\nx if time.now_ns() > 0\n", cmdb_core::policy::DEFAULT_POLICY)).expect("write");
    let binary = scratch.path().join("binary.rego");
    std::fs::write(&binary, [0xff_u8, 0xfe, 0x00]).expect("write");
    for (file, needle) in [
        (broken.display().to_string(), "does not parse"),
        (clock.display().to_string(), "time.now_ns"),
        (binary.display().to_string(), "not UTF-8"),
        (scratch.path().join("missing.rego").display().to_string(), "cannot read"),
        (policy_file.clone(), "already in force"),
    ] {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || refused(&d, &["policy", "load", &file], needle)).await.expect("join");
    }
    assert_eq!(log_fingerprint(&dir), before, "refused loads append nothing");

    let strict = scratch.path().join("strict.rego");
    std::fs::write(
        &strict,
        "package cmdb.change\nimport rego.v1\ndecision := {\"approvals\": [{\"role\": \"approver\", \"count\": 3, \"reason\": \"three\"}]}\n",
    )
    .expect("write");
    let output = run(args(&["policy", "load", &strict.display().to_string(), "--name", "strict"]), dir.clone()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("loaded policy version 1"), "{}", stdout(&output));
    let shown = run(args(&["policy", "show"]), dir.clone()).await;
    assert!(stdout(&shown).contains("# policy version 1 \"strict\"") && stdout(&shown).contains("count\": 3"));
    let shown = run(args(&["policy", "show", "--version", "0"]), dir.clone()).await;
    assert!(stdout(&shown).contains("(built in)") && stdout(&shown).contains("package cmdb.change"));
    let d = dir.clone();
    tokio::task::spawn_blocking(move || refused(&d, &["policy", "show", "--version", "7"], "not in the log"))
        .await
        .expect("join");

    // The past decision (policy version 0) replays to the recorded answer.
    let explained = run(args(&["change", "explain", "CHG-000001"]), dir.clone()).await;
    assert!(explained.status.success(), "{}{}", stdout(&explained), stderr(&explained));
    assert!(stdout(&explained).contains("decision: policy v0") && stdout(&explained).contains("replay: MATCHES"));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(args(&["change", "explain", "CHG-000001", "--json"]), dir.clone()).await))
            .expect("json");
    assert_eq!(json["mismatches"], 0);
    assert_eq!(json["assessments"][0]["replay"]["matches"], true);

    // A recorded decision that does not replay (forged here) is reported loudly: exit 1.
    let store = SqliteStore::open(&dir, SqliteOptions::default()).expect("open");
    let stream = StreamId::new(format!("change-{id}")).expect("stream");
    let records = store.read_stream(&stream, Direction::Forward, None, 100).await.expect("read");
    let assessed = records.iter().rev().find(|r| r.event_type == "change.assessed").expect("assessed");
    let mut forged: serde_json::Value = serde_json::from_slice(&assessed.data).expect("json");
    forged["decision"]["output"]["auto_approve"] = json!(true);
    let last = records.last().expect("records").stream_version;
    store
        .append(AppendRequest::new().write(
            stream,
            ExpectedVersion::Exact(last),
            vec![NewEvent::raw(
                "change.assessed",
                serde_json::to_vec(&forged).expect("bytes"),
                Metadata::new(cmdb_core::Actor::principal("forger"), Source::System),
            )],
        ))
        .await
        .expect("append");
    store.shutdown().await;
    let explained = run(args(&["change", "explain", "CHG-000001"]), dir.clone()).await;
    assert_eq!(explained.status.code(), Some(1), "{}", stdout(&explained));
    assert!(stdout(&explained).contains("replay: MISMATCH"), "{}", stdout(&explained));
    assert!(stderr(&explained).contains("did NOT replay"), "{}", stderr(&explained));
    let d = dir.clone();
    tokio::task::spawn_blocking(move || {
        refused(&d, &["change", "explain", "CHG-999999"], "no change CHG-999999");
        refused(&d, &["change", "explain", "CHG-1x"], "not a change number");
    })
    .await
    .expect("join");
}

/// `cmdb diff`: the CIs created and changed between two moments with their fields and the
/// events that caused them, as text and JSON; bad moments refused with the log unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_prints_fields_and_events_and_refuses_bad_moments() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let register = "mutation($i: RegisterCiInput!) { registerCi(input: $i) { ci { id } position } }";
    let host = |name: &str| json!({ "i": { "class": "HOST", "name": name, "attributes": {"hostname": name, "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 2, "memory_mib": 2048} } });
    let first = server.ok(&server.admin_token, register, host("h1")).await;
    let h1 = first["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();
    let from = first["registerCi"]["position"].as_u64().expect("position").to_string();
    let update = "mutation($id: ID!) { updateCi(id: $id, input: { setAttributes: { cpu_cores: 4 } }) { position } }";
    server.ok(&server.admin_token, update, json!({ "id": h1 })).await;
    let second = server.ok(&server.admin_token, register, host("h2")).await;
    let h2 = second["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();

    let dir = server.data_dir();
    let run = |args: Vec<String>| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cmdb(&dir, &args)
        })
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let output = run(args(&["diff", "--from", &from, "--json"])).await.expect("join");
    assert!(output.status.success(), "{}", stderr(&output));
    let diff: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let entry = |id: &str| diff["cis"].as_array().expect("cis").iter().find(|c| c["id"] == id).cloned().expect(id);
    let (changed, created) = (entry(&h1), entry(&h2));
    assert_eq!(changed["kind"], "changed");
    assert_eq!(changed["fields"], json!([{ "field": "attributes.cpu_cores", "before": 2, "after": 4 }]));
    let events = changed["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "only the update is after --from: {events:?}");
    assert_eq!(events[0]["event_type"], "ci.updated");
    assert_eq!(created["kind"], "created");
    assert_eq!(created["events"].as_array().expect("events").len(), 1);
    assert!(created["fields"].as_array().expect("fields").iter().any(|f| f["field"] == "name" && f["after"] == "h2"));

    let text = run(args(&["diff", "--from", &from])).await.expect("join");
    let text = stdout(&text);
    assert!(text.contains("1 created, 1 changed, 0 withdrawn"), "{text}");
    assert!(text.contains("attributes.cpu_cores: 2 -> 4"), "{text}");
    assert!(text.contains("ci.updated by"), "{text}");

    let fingerprint = log_fingerprint(&dir);
    for (bad, needle) in [
        (vec!["diff", "--from", "999999"], "is past what the graph has applied"),
        (vec!["diff", "--from", "yesterday"], "RFC 3339"),
        (vec!["diff", "--from", &from, "--to", "1"], "is after --to"),
    ] {
        let output = run(args(&bad)).await.expect("join");
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", stdout(&output));
        assert!(stderr(&output).contains(needle), "{bad:?}: {}", stderr(&output));
    }
    assert_eq!(log_fingerprint(&dir), fingerprint, "a refused diff changes nothing");
}
