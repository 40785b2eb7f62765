//! Evidence an auditor checks alone (issue 18; RC-1, CM-4): signed checkpoints over GraphQL
//! and `/api/v1/checkpoint`, inclusion and consistency proofs that verify against them with
//! the public key only, refusals that record nothing, the tree after a restart, and the CLI
//! (`cmdb key`, `cmdb proof`) end to end.

mod common;

use std::path::Path;
use std::time::Duration;

use cmdb_api::app::evidence::{create_key_file, generate_key};
use cmdb_api::server::{Server, StartOptions};
use cmdb_core::merkle::{self, TreeHash};
use cmdb_core::note::{Checkpoint, NoteSigner, NoteVerifier};
use common::{TestServer, cmdb, error_code, settings, text};
use serde_json::{Value, json};

const ORIGIN: &str = "cmdb.test/evidence";
const SIGN: &str = "mutation { signCheckpoint { origin treeSize rootHash keyId note recordedAtPosition } }";
const TEAM: &str = "mutation($n: String!) { registerCi(input: { class: \"team\", name: $n }) { position } }";

/// Settings with a new key in a directory of its own, signing every `every_events` events
/// (never by time); the directory lives as long as the caller keeps it.
fn keyed_settings(every_events: u64) -> (cmdb_api::settings::ServeSettings, NoteSigner, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("key dir");
    let key = generate_key(ORIGIN).expect("key");
    create_key_file(&keys.path().join("signing.key"), &key).expect("key file");
    let mut settings = settings();
    settings.signing_key = Some(keys.path().join("signing.key"));
    settings.sign_every_events = every_events;
    settings.sign_every_ms = 3_600_000;
    (settings, key, keys)
}

/// A server that signs only when asked (the schedule is tested on its own).
async fn signing_server() -> (TestServer, NoteVerifier, tempfile::TempDir) {
    let (settings, key, keys) = keyed_settings(10_000_000);
    (TestServer::start_with(settings).await, key.verifier(), keys)
}

async fn add_teams(server: &TestServer, prefix: &str, count: usize) {
    // Teams edited without a change: these tests are about the log, not about CM-3.
    server.uncontrolled().await;
    for i in 0..count {
        server.ok(&server.admin_token, TEAM, json!({ "n": format!("{prefix} {i}") })).await;
    }
}

fn hashes(value: &Value) -> Vec<TreeHash> {
    value.as_array().expect("hashes").iter().map(|h| h.as_str().expect("text").parse().expect("hash")).collect()
}

fn size(value: &Value) -> u64 {
    value.as_u64().expect("a size")
}

#[tokio::test]
async fn every_event_is_proven_in_a_signed_checkpoint_and_the_log_only_grew_between_two() {
    let (server, verifier, _keys) = signing_server().await;
    let token = server.admin_token.clone();
    add_teams(&server, "first", 5).await;
    let first = server.ok(&token, SIGN, json!({})).await["signCheckpoint"].clone();
    let old = Checkpoint::verify(first["note"].as_str().expect("note"), &verifier).expect("the note verifies");
    assert_eq!(old.origin, ORIGIN);
    assert_eq!(old.size, size(&first["treeSize"]));
    assert_eq!(old.root.to_base64(), first["rootHash"]);
    assert_eq!(size(&first["recordedAtPosition"]), old.size + 1, "recorded right after the tree it signs");
    // Nothing new but the record itself: asking again answers the same checkpoint.
    let again = server.ok(&token, SIGN, json!({})).await["signCheckpoint"].clone();
    assert_eq!(again["treeSize"], first["treeSize"]);

    add_teams(&server, "second", 7).await;
    let second = server.ok(&token, SIGN, json!({})).await["signCheckpoint"].clone();
    let new = Checkpoint::verify(second["note"].as_str().expect("note"), &verifier).expect("verifies");
    assert!(new.size > old.size + 7);

    // Every event of the newer tree, with only the key and the checkpoint.
    let inclusion = "query($p: Position!) { inclusionProof(position: $p) { leafIndex treeSize leafInput leafHash hashes rootHash checkpoint { treeSize } } event(position: $p) { hash } }";
    for position in 1..=new.size {
        let data = server.ok(&token, inclusion, json!({ "p": position })).await;
        let proof = &data["inclusionProof"];
        assert_eq!(size(&proof["treeSize"]), new.size, "defaults to the newest checkpoint's tree");
        assert_eq!(proof["checkpoint"]["treeSize"], new.size);
        assert_eq!(proof["leafInput"], data["event"]["hash"], "the leaf is the event's chain hash");
        let chain: cmdb_core::Hash = proof["leafInput"].as_str().expect("hex").parse().expect("hash");
        let leaf = merkle::leaf_hash(chain.as_bytes());
        merkle::verify_inclusion(position - 1, new.size, &leaf, &hashes(&proof["hashes"]), &new.root)
            .unwrap_or_else(|e| panic!("position {position}: {e}"));
        let mut forged = chain;
        forged.0[0] ^= 1;
        let forged = merkle::leaf_hash(forged.as_bytes());
        assert!(
            merkle::verify_inclusion(position - 1, new.size, &forged, &hashes(&proof["hashes"]), &new.root).is_err()
        );
    }

    // The log only grew between the two checkpoints.
    let consistency = "query($f: Position!, $t: Position) { consistencyProof(fromSize: $f, toSize: $t) { hashes fromRootHash toRootHash fromCheckpoint { treeSize } toCheckpoint { treeSize } } }";
    let data = server.ok(&token, consistency, json!({ "f": old.size, "t": new.size })).await;
    let proof = &data["consistencyProof"];
    assert_eq!(proof["fromCheckpoint"]["treeSize"], old.size);
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes(&proof["hashes"]))
        .expect("consistent");
    let mut tampered = hashes(&proof["hashes"]);
    tampered[0].0[5] ^= 0x10;
    assert!(merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &tampered).is_err());

    // Both listed, oldest first; a range picks one.
    let list = server.ok(&token, "{ checkpoints { treeSize } }", json!({})).await;
    let sizes: Vec<u64> = list["checkpoints"].as_array().expect("list").iter().map(|c| size(&c["treeSize"])).collect();
    assert_eq!(sizes, vec![old.size, new.size]);
    let ranged = server
        .ok(&token, "query($f: Position) { checkpoints(fromSize: $f) { treeSize } }", json!({ "f": old.size + 1 }))
        .await;
    assert_eq!(ranged["checkpoints"].as_array().expect("list").len(), 1);

    // The same note as text, as C2SP tools fetch it.
    let response =
        server.client.get(server.url("/api/v1/checkpoint")).bearer_auth(&token).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(response.text().await.expect("body"), second["note"].as_str().expect("note"));
    let by_size = server
        .client
        .get(server.url(&format!("/api/v1/checkpoint?size={}", old.size)))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(by_size.text().await.expect("body"), first["note"].as_str().expect("note"));
}

#[tokio::test]
async fn bad_proof_requests_and_unpermitted_signing_are_refused_and_record_nothing() {
    let (server, _verifier, _keys) = signing_server().await;
    let token = server.admin_token.clone();
    add_teams(&server, "t", 3).await;
    server.ok(&token, SIGN, json!({})).await;
    let before = server.head().await;
    let cases = [
        ("{ inclusionProof(position: 0) { treeSize } }", "BAD_USER_INPUT", Some("position")),
        ("{ inclusionProof(position: 99999) { treeSize } }", "BAD_USER_INPUT", Some("position")),
        ("{ inclusionProof(position: 1, treeSize: 99999) { treeSize } }", "NOT_FOUND", Some("treeSize")),
        ("{ consistencyProof(fromSize: 0) { hashes } }", "BAD_USER_INPUT", Some("fromSize")),
        ("{ consistencyProof(fromSize: 3, toSize: 2) { hashes } }", "BAD_USER_INPUT", Some("fromSize")),
        ("{ consistencyProof(fromSize: 1, toSize: 99999) { hashes } }", "NOT_FOUND", Some("treeSize")),
        ("{ checkpoints(fromSize: 9, toSize: 2) { treeSize } }", "BAD_USER_INPUT", Some("fromSize")),
        ("{ inclusionProof(position: -1) { treeSize } }", "GRAPHQL_VALIDATION_FAILED", None),
    ];
    for (query, code, field) in cases {
        let (_, body) = server.graphql(&token, query, json!({})).await;
        assert_eq!(error_code(&body), code, "{query}: {body}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["extensions"]["field"], field, "{query}: {body}");
        }
    }
    let viewer = server.principal_with_token("viewer-1", &["VIEWER"]).await;
    let after_viewer = server.head().await;
    let (_, body) = server.graphql(&viewer, SIGN, json!({})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    // A viewer may read the checkpoint and proofs: they reveal hashes only.
    let (_, body) = server.graphql(&viewer, "{ checkpoint { treeSize } }", json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(server.head().await, after_viewer);
    assert!(after_viewer > before, "only the viewer's creation was recorded");
    for path in ["/api/v1/checkpoint?size=abc", "/api/v1/checkpoint?size=2"] {
        let response = server.client.get(server.url(path)).bearer_auth(&token).send().await.expect("request");
        assert!(response.status() == 400 || response.status() == 404, "{path}: {}", response.status());
    }
    let unauthenticated = server.client.get(server.url("/api/v1/checkpoint")).send().await.expect("request");
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(server.head().await, after_viewer);
}

#[tokio::test]
async fn without_a_key_nothing_is_signed_and_proofs_still_answer_for_the_whole_log() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    add_teams(&server, "k", 2).await;
    let before = server.head().await;
    let (_, body) = server.graphql(&token, SIGN, json!({})).await;
    assert_eq!(error_code(&body), "FAILED_PRECONDITION", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or("").contains("--signing-key"), "{body}");
    assert_eq!(server.head().await, before);
    let data = server
        .ok(
            &token,
            "{ checkpoint { treeSize } inclusionProof(position: 1) { treeSize checkpoint { treeSize } } }",
            json!({}),
        )
        .await;
    assert!(data["checkpoint"].is_null());
    assert_eq!(size(&data["inclusionProof"]["treeSize"]), before, "no checkpoint: the whole log");
    let response =
        server.client.get(server.url("/api/v1/checkpoint")).bearer_auth(&token).send().await.expect("request");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_schedule_signs_after_n_events_and_the_tree_survives_a_restart() {
    let (settings, key, _keys) = keyed_settings(5);
    let mut server = TestServer::start_with(settings.clone()).await;
    let token = server.admin_token.clone();
    add_teams(&server, "s", 6).await;
    let mut signed = Value::Null;
    for _ in 0..100 {
        signed = server.ok(&token, "{ checkpoint { treeSize rootHash note } }", json!({})).await["checkpoint"].clone();
        if !signed.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!signed.is_null(), "a checkpoint is signed once 5 events are uncovered");
    Checkpoint::verify(signed["note"].as_str().expect("note"), &key.verifier()).expect("verifies");
    let roots = server.ok(&token, "{ consistencyProof(fromSize: 1) { toSize toRootHash } }", json!({})).await;

    server.shutdown().await;
    let restarted = Server::start(server.dir.path(), settings, StartOptions::default()).await.expect("restarts");
    let base = format!("http://{}", restarted.local_addr());
    let body: Value = server
        .client
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ checkpoint { treeSize rootHash } consistencyProof(fromSize: 1) { toSize toRootHash } }" }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["data"]["checkpoint"]["rootHash"], signed["rootHash"], "{body}");
    assert_eq!(body["data"]["consistencyProof"], roots["consistencyProof"], "the same tree after a restart");
    assert!(
        server.dir.path().join("projections").join("evidence.checkpoint").is_file(),
        "the tree is saved beside the graph's checkpoint, so a restart reads no log for it"
    );
    restarted.shutdown().await;
}

#[tokio::test]
async fn cmdb_key_creates_an_owner_only_key_never_over_another_and_prints_its_verifier() {
    let keys = tempfile::tempdir().expect("key dir");
    let key_file = keys.path().join("log.key");
    let key_path = key_file.to_str().expect("path");
    let created = cmdb(&["key", "create", "--name", ORIGIN, "--out", key_path]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let verifier = text(&created.stdout).trim().to_owned();
    NoteVerifier::parse(&verifier).expect("a verifier string");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only the owner reads the key");
    }
    let again = cmdb(&["key", "create", "--name", ORIGIN, "--out", key_path]);
    assert_eq!(again.status.code(), Some(2), "a key is never overwritten");
    let bad_name = cmdb(&["key", "create", "--name", "has space", "--out", &format!("{key_path}.2")]);
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(!Path::new(&format!("{key_path}.2")).exists());
    assert_eq!(text(&cmdb(&["key", "verifier", "--key", key_path]).stdout).trim(), verifier);
}

#[tokio::test]
async fn cmdb_proof_prints_proofs_that_verify_without_the_log_and_fail_on_any_change() {
    let (settings, key, _keys) = keyed_settings(10_000_000);
    let verifier = key.verifier().to_string();
    let mut server = TestServer::start_with(settings).await;
    let token = server.admin_token.clone();
    add_teams(&server, "c", 3).await;
    let old = server.ok(&token, SIGN, json!({})).await["signCheckpoint"].clone();
    add_teams(&server, "d", 3).await;
    let new = server.ok(&token, SIGN, json!({})).await["signCheckpoint"].clone();
    server.shutdown().await;
    let data = server.data_dir();
    let data = data.to_str().expect("path");
    let work = tempfile::tempdir().expect("work dir");
    let write = |name: &str, content: &str| {
        let path = work.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.to_str().expect("path").to_owned()
    };

    let proof = cmdb(&["--data-dir", data, "proof", "inclusion", "--position", "2"]);
    assert!(proof.status.success(), "{}", text(&proof.stderr));
    let proof_file = write("inclusion.json", &text(&proof.stdout));
    let old_note = write("old.note", old["note"].as_str().expect("note"));
    let new_note = write("new.note", new["note"].as_str().expect("note"));
    // Only the key, the checkpoint and the proof: no data directory.
    let verified = cmdb(&["proof", "verify", "--key", &verifier, "--proof", &proof_file, "--checkpoint", &new_note]);
    assert!(verified.status.success(), "{}{}", text(&verified.stdout), text(&verified.stderr));
    assert!(text(&verified.stdout).contains("VERIFIED"), "{}", text(&verified.stdout));
    assert!(text(&verified.stdout).contains("fields hash to that chain hash"));

    // The proof against the wrong checkpoint, a changed event, a changed hash: not verified.
    let wrong = cmdb(&["proof", "verify", "--key", &verifier, "--proof", &proof_file, "--checkpoint", &old_note]);
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong.stderr));
    let json: Value = serde_json::from_slice(&proof.stdout).expect("json");
    let body = text(&proof.stdout);
    // Position 2 is the bootstrap token's issue: change one byte of its payload.
    let changed_event = write("event.json", &body.replacen("\"bootstrap\"", "\"bootstrab\"", 1));
    assert_ne!(body, text(std::fs::read(&changed_event).expect("read").as_slice()), "the label is in the event");
    let failed = cmdb(&["proof", "verify", "--key", &verifier, "--proof", &changed_event, "--checkpoint", &new_note]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    let first_hash = json["hashes"][0].as_str().expect("hash");
    let mut flipped = merkle::leaf_hash(b"x");
    flipped.0[0] ^= first_hash.len() as u8;
    let changed_hash = write("hash.json", &body.replacen(first_hash, &flipped.to_base64(), 1));
    let failed = cmdb(&["proof", "verify", "--key", &verifier, "--proof", &changed_hash, "--checkpoint", &new_note]);
    assert_eq!(failed.status.code(), Some(1));
    let other_key = generate_key(ORIGIN).expect("key").verifier().to_string();
    let failed = cmdb(&["proof", "verify", "--key", &other_key, "--proof", &proof_file, "--checkpoint", &new_note]);
    assert_eq!(failed.status.code(), Some(1), "another key did not sign it");

    // Consistency between the two checkpoints the auditor kept.
    let from = old["treeSize"].as_u64().expect("size").to_string();
    let to = new["treeSize"].as_u64().expect("size").to_string();
    let consistency = cmdb(&["--data-dir", data, "proof", "consistency", "--from", &from, "--to", &to]);
    assert!(consistency.status.success(), "{}", text(&consistency.stderr));
    let consistency_file = write("consistency.json", &text(&consistency.stdout));
    let verified = cmdb(&[
        "proof",
        "verify",
        "--key",
        &verifier,
        "--proof",
        &consistency_file,
        "--old-checkpoint",
        &old_note,
        "--checkpoint",
        &new_note,
    ]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let swapped = cmdb(&[
        "proof",
        "verify",
        "--key",
        &verifier,
        "--proof",
        &consistency_file,
        "--old-checkpoint",
        &new_note,
        "--checkpoint",
        &old_note,
    ]);
    assert_eq!(swapped.status.code(), Some(1));

    // Bad input: exit 2, with a reason.
    let not_json = write("bad.json", "{ not json");
    let unknown_kind = write("kind.json", r#"{"kind": "exclusion"}"#);
    for (args, why) in [
        (vec!["proof", "verify", "--key", "nonsense", "--proof", &proof_file], "--key"),
        (vec!["proof", "verify", "--key", &verifier, "--proof", &not_json], "JSON"),
        (vec!["proof", "verify", "--key", &verifier, "--proof", &unknown_kind], "kind"),
        (vec!["proof", "verify", "--key", &verifier, "--proof", "/nonexistent/proof.json"], "cannot read"),
        (vec!["--data-dir", data, "proof", "inclusion", "--position", "0"], "position"),
        (vec!["--data-dir", data, "proof", "consistency", "--from", "0"], "empty tree"),
    ] {
        let output = cmdb(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output.stderr));
        assert!(text(&output.stderr).contains(why), "{args:?}: {}", text(&output.stderr));
    }
}

#[tokio::test]
async fn a_missing_or_malformed_key_or_schedule_stops_the_start_with_the_reason() {
    let keys = tempfile::tempdir().expect("key dir");
    let garbage = keys.path().join("garbage.key");
    std::fs::write(&garbage, "PRIVATE+KEY+name+00000000+AQ==").expect("write");
    type Change = Box<dyn Fn(&mut cmdb_api::settings::ServeSettings)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|s| s.signing_key = Some("/nonexistent/signing.key".into())), "/nonexistent/signing.key"),
        (Box::new(move |s| s.signing_key = Some(garbage.clone())), "garbage.key"),
        (Box::new(|s| s.sign_every_events = 0), "sign_every_events"),
        (Box::new(|s| s.sign_every_ms = 0), "sign_every_ms"),
    ];
    for (change, named) in cases {
        let dir = tempfile::tempdir().expect("data dir");
        let mut settings = settings();
        change(&mut settings);
        let error = match Server::start(dir.path(), settings, StartOptions::default()).await {
            Ok(_) => panic!("started with a bad {named}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(named), "{error}");
    }
}

/// Commits as the unit of the past (part 5): withdrawing a CI removes its relationships and
/// the CI in one append; `at(position:)` between those events reads the state after the whole
/// append and says so, and each event's commit is in `cmdb export`.
#[tokio::test]
async fn a_read_inside_one_command_snaps_to_its_end_and_says_so() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    server.uncontrolled().await;
    let register = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }";
    let id = |data: Value| data["registerCi"]["ci"]["id"].clone();
    let host = |name: &str| {
        json!({"class": "HOST", "name": name, "attributes": {"hostname": name, "ip_addresses": ["10.0.0.1"],
               "os": "debian-12", "cpu_cores": 2, "memory_mib": 4096}})
    };
    let a = id(server
        .ok(&token, register, json!({ "input": {"class": "APPLICATION", "name": "snap-a", "version": "1"} }))
        .await);
    let h = id(server.ok(&token, register, json!({ "input": host("snap-h") })).await);
    let d = id(server.ok(&token, register, json!({ "input": host("snap-h2") })).await);
    for (kind, target) in [("RUNS_ON", &h), ("RUNS_ON", &d)] {
        let relate =
            format!("mutation($a: ID!, $b: ID!) {{ relate(type: {kind}, source: $a, target: $b) {{ position }} }}");
        server.ok(&token, &relate, json!({ "a": a, "b": target })).await;
    }
    let before = server.head().await;
    let withdrawn =
        server.ok(&token, "mutation($id: ID!) { withdrawCi(id: $id) { position } }", json!({ "id": a })).await;
    let end = size(&withdrawn["withdrawCi"]["position"]);
    assert!(end >= before + 3, "two relationship removals and the withdrawal in one append: {before} -> {end}");
    let at = "query($p: Position!) { at(position: $p) { position requestedPosition snappedToCommit cis(first: 50) { edges { node { name status } } } } }";
    for asked in before + 1..end {
        let view = server.ok(&token, at, json!({ "p": asked })).await["at"].clone();
        assert_eq!(size(&view["position"]), end, "asked {asked}: read at the end of the command");
        assert_eq!(size(&view["requestedPosition"]), asked);
        assert_eq!(view["snappedToCommit"], true);
        let names: Vec<&str> =
            view["cis"]["edges"].as_array().expect("edges").iter().filter_map(|e| e["node"]["name"].as_str()).collect();
        assert!(!names.contains(&"snap-a") || view["cis"].to_string().contains("WITHDRAWN"), "{view}");
    }
    for asked in [before, end] {
        let view = server.ok(&token, at, json!({ "p": asked })).await["at"].clone();
        assert_eq!(size(&view["position"]), asked, "a commit's end reads where it was asked");
        assert_eq!(view["snappedToCommit"], false);
    }
    let mut server = server;
    server.shutdown().await;
    let exported =
        cmdb(&["--data-dir", server.data_dir().to_str().expect("path"), "export", "--as-of", &end.to_string()]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let lines: Vec<Value> =
        text(&exported.stdout).lines().map(|l| serde_json::from_str(l).expect("an NDJSON line")).collect();
    let last = &lines[(end - 1) as usize];
    assert_eq!(last["commit"]["firstPosition"], before + 1, "{last}");
    assert_eq!(size(&last["commit"]["events"]), end - before);
}
