//! Redaction of personal data (issue 18, part 4; IS-1, RC-1): an admin asks, a second
//! principal approves, the values are erased from the store, the chain, the Merkle tree and
//! every old proof still verify, reads show `[redacted]` with the record at every position,
//! bad requests change nothing, and neither the log's file nor a backup made later holds an
//! erased byte.

mod common;

use cmdb_api::app::evidence::{create_key_file, generate_key};
use cmdb_api::server::{Server, StartOptions};
use cmdb_core::merkle::{self, TreeHash};
use common::{TestServer, cmdb, error_code, pointer_to, settings, text};
use serde_json::{Value, json};

const EMAIL: &str = "jane.doe@example.com";
const NEW_EMAIL: &str = "jane.d@example.org";
const SIGN: &str = "mutation { signCheckpoint { treeSize rootHash note } }";
const REQUEST: &str =
    "mutation($input: RedactionInput!) { requestRedaction(input: $input) { id status positions fields requestedBy } }";
const APPROVE: &str = "mutation($id: String!) { approveRedaction(input: { id: $id }) { unsaltedPositions redaction { id status decidedBy recordPosition erasures { position erasedFields } } } }";
const EVENT: &str = "query($p: Position!) { event(position: $p) { hash dataText chainVersion salt payloadCommitment redaction { id recordPosition reason requestedBy approvedBy erasedFields } } }";
const PERSON: &str =
    "query($id: ID!, $p: Position) { at(position: $p) { ci(id: $id) { name attribute(name: \"email\") } } }";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every event of the log: (position, type, payload text).
async fn events(server: &TestServer) -> Vec<(u64, String, String)> {
    let data = server
        .ok(&server.admin_token, "{ events(first: 1000) { edges { node { position type dataText } } } }", json!({}))
        .await;
    data["events"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let node = &e["node"];
            (
                node["position"].as_u64().expect("position"),
                node["type"].as_str().expect("type").to_owned(),
                node["dataText"].as_str().expect("text").to_owned(),
            )
        })
        .collect()
}

fn hashes(value: &Value) -> Vec<TreeHash> {
    value.as_array().expect("hashes").iter().map(|h| h.as_str().expect("text").parse().expect("hash")).collect()
}

#[tokio::test]
#[allow(
    clippy::too_many_lines,
    reason = "one privacy request read top to bottom: ask, refuse, approve, check every copy"
)]
async fn a_person_is_erased_by_two_principals_and_every_proof_still_verifies() {
    let keys = tempfile::tempdir().expect("key dir");
    let key = generate_key("cmdb.test/redaction").expect("key");
    create_key_file(&keys.path().join("signing.key"), &key).expect("key file");
    let mut settings = settings();
    settings.signing_key = Some(keys.path().join("signing.key"));
    let mut server = TestServer::start_with(settings.clone()).await;
    let admin = server.admin_token.clone();
    server.uncontrolled().await;
    let auditor = server.principal_with_token("auditor-bo", &["AUDITOR"]).await;
    let second_admin = server.principal_with_token("admin-cy", &["ADMIN"]).await;
    let viewer = server.principal_with_token("viewer-di", &["VIEWER"]).await;

    let registered = server
        .ok(
            &admin,
            "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id } } }",
            json!({ "input": { "class": "PERSON", "name": "Jane Doe", "attributes": { "email": EMAIL } } }),
        )
        .await;
    let id = registered["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();
    let updated = server
        .ok(
            &admin,
            "mutation($id: ID!, $input: UpdateCiInput!) { updateCi(id: $id, input: $input) { position } }",
            json!({ "id": id, "input": { "setAttributes": { "email": NEW_EMAIL } } }),
        )
        .await;
    let before_update = updated["updateCi"]["position"].as_u64().expect("position") - 1;
    let checkpoint = server.ok(&admin, SIGN, json!({})).await["signCheckpoint"].clone();
    let old_size = checkpoint["treeSize"].as_u64().expect("size");
    let old_root: TreeHash = checkpoint["rootHash"].as_str().expect("root").parse().expect("root");

    // The events holding either address, and the pointer to it in each.
    let log = events(&server).await;
    let holding: Vec<(u64, String)> = log
        .iter()
        .filter_map(|(position, _, data)| {
            let json: Value = serde_json::from_str(data).expect("json");
            let found = pointer_to(&json, EMAIL, String::new()).or_else(|| pointer_to(&json, NEW_EMAIL, String::new()));
            found.map(|pointer| (*position, pointer))
        })
        .collect();
    assert_eq!(holding.len(), 2, "the registration and the update: {log:?}");
    let mut old_proofs = Vec::new();
    let mut old_hashes = Vec::new();
    for (position, _) in &holding {
        let query = "query($p: Position!, $s: Position!) { inclusionProof(position: $p, treeSize: $s) { hashes } event(position: $p) { hash salt chainVersion } }";
        let data = server.ok(&admin, query, json!({ "p": position, "s": old_size })).await;
        assert_eq!(data["event"]["chainVersion"], 2, "new events are salted");
        assert_eq!(data["event"]["salt"].as_str().map(str::len), Some(64));
        old_proofs.push(hashes(&data["inclusionProof"]["hashes"]));
        old_hashes.push(data["event"]["hash"].as_str().expect("hash").to_owned());
    }

    // Bad requests: each refused with its code, the log unchanged.
    let head = server.head().await;
    let checkpoint_position = checkpoint_event(&log).unwrap_or(head);
    let (first, pointer) = holding[0].clone();
    let bad = [
        (json!({ "positions": [head + 50], "fields": [pointer], "reason": "r" }), "NOT_FOUND"),
        (json!({ "positions": [first], "fields": ["/no/such/field"], "reason": "r" }), "BAD_USER_INPUT"),
        (json!({ "positions": [first], "fields": ["email"], "reason": "r" }), "BAD_USER_INPUT"),
        (json!({ "positions": [first], "fields": [pointer], "reason": "  " }), "BAD_USER_INPUT"),
        (json!({ "positions": [first, first], "fields": [pointer], "reason": "r" }), "BAD_USER_INPUT"),
        (json!({ "positions": [], "reason": "r" }), "BAD_USER_INPUT"),
        (json!({ "positions": (1..=1001).collect::<Vec<u64>>(), "reason": "r" }), "LIMIT_EXCEEDED"),
    ];
    for (input, code) in bad {
        let (_, body) = server.graphql(&admin, REQUEST, json!({ "input": input })).await;
        assert_eq!(error_code(&body), code, "{input}: {body}");
    }
    // An id the engine needs (the CI's id, its class) cannot be erased; nor a checkpoint.
    let registration: Value = serde_json::from_str(&log[(first - 1) as usize].2).expect("json");
    let structural = pointer_to(&registration, &id, String::new()).expect("the id is in the registration");
    let (_, body) = server
        .graphql(&admin, REQUEST, json!({ "input": { "positions": [first], "fields": [structural], "reason": "r" } }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or("").contains("unreadable"), "{body}");
    let (_, body) = server
        .graphql(&admin, REQUEST, json!({ "input": { "positions": [checkpoint_position], "reason": "r" } }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    // Only an admin asks.
    let (_, body) =
        server.graphql(&auditor, REQUEST, json!({ "input": { "positions": [first], "reason": "r" } })).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert_eq!(server.head().await, head, "refused requests record nothing");

    // Asked for by one admin; the same admin cannot approve it; a viewer cannot either.
    let mut ids = Vec::new();
    for (n, (position, pointer)) in holding.iter().enumerate() {
        let input = json!({ "id": format!("gdpr-118-{n}"), "positions": [position], "fields": [pointer], "reason": "GDPR art. 17 request 118" });
        let asked = server.ok(&admin, REQUEST, json!({ "input": input })).await;
        assert_eq!(asked["requestRedaction"]["status"], "pending");
        ids.push(asked["requestRedaction"]["id"].as_str().expect("id").to_owned());
    }
    let head = server.head().await;
    let (_, body) = server.graphql(&admin, APPROVE, json!({ "id": ids[0] })).await;
    assert_eq!(error_code(&body), "SEGREGATION_OF_DUTIES", "{body}");
    let (_, body) = server.graphql(&viewer, APPROVE, json!({ "id": ids[0] })).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let (_, body) = server.graphql(&auditor, APPROVE, json!({ "id": "no-such" })).await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    assert_eq!(server.head().await, head, "refused approvals record nothing");
    assert!(contains(
        server.ok(&admin, EVENT, json!({ "p": first })).await["event"]["dataText"].as_str().unwrap_or("").as_bytes(),
        EMAIL
    ));

    // Before: the address is in the log's files (so the search below can fail).
    let log_bytes = |dir: &std::path::Path| {
        let mut bytes = std::fs::read(dir.join("events.sqlite")).unwrap_or_default();
        bytes.extend(std::fs::read(dir.join("events.sqlite-wal")).unwrap_or_default());
        bytes
    };
    assert!(contains(&log_bytes(&server.data_dir()), EMAIL), "the address was stored");

    // Approved by an auditor and by a second admin.
    for (redaction, token) in ids.iter().zip([&auditor, &second_admin]) {
        let approved = server.ok(token, APPROVE, json!({ "id": redaction })).await["approveRedaction"].clone();
        assert_eq!(approved["redaction"]["status"], "applied", "{approved}");
        assert_eq!(approved["unsaltedPositions"], json!([]), "every event was salted");
    }
    let (_, body) = server.graphql(&auditor, APPROVE, json!({ "id": ids[0] })).await;
    assert_eq!(error_code(&body), "FAILED_PRECONDITION", "approved once only: {body}");

    // Reads: the values read [redacted], with the record; every hash and proof is as before.
    for (n, (position, pointer)) in holding.iter().enumerate() {
        let event = server.ok(&admin, EVENT, json!({ "p": position })).await["event"].clone();
        let data: Value = serde_json::from_str(event["dataText"].as_str().expect("text")).expect("json");
        assert_eq!(data.pointer(pointer), Some(&json!("[redacted]")), "{data}");
        assert!(!contains(event["dataText"].as_str().unwrap_or("").as_bytes(), "example."));
        assert_eq!(event["hash"].as_str(), Some(old_hashes[n].as_str()), "the chain hash is kept");
        assert_eq!(event["salt"], Value::Null, "the salt is erased with the values");
        assert_eq!(event["redaction"]["id"], json!(ids[n]));
        assert_eq!(event["redaction"]["requestedBy"], "admin");
        assert_eq!(event["redaction"]["erasedFields"], json!([pointer]));
        let leaf = merkle::leaf_hash(&hex_bytes(&old_hashes[n]));
        merkle::verify_inclusion(position - 1, old_size, &leaf, &old_proofs[n], &old_root)
            .expect("the old proof verifies against the old checkpoint");
    }
    let verify = server.ok(&admin, "{ verifyLog { intact firstBreak { kind } } }", json!({})).await;
    assert_eq!(verify["verifyLog"]["intact"], true, "{verify}");
    let consistency = server
        .ok(
            &admin,
            "query($f: Position!) { consistencyProof(fromSize: $f) { fromRootHash } }",
            json!({ "f": old_size }),
        )
        .await;
    assert_eq!(consistency["consistencyProof"]["fromRootHash"], checkpoint["rootHash"], "the old tree is unchanged");
    // The graph, now and as of before the update: erased everywhere.
    for at in [Value::Null, json!(before_update)] {
        let person = server.ok(&admin, PERSON, json!({ "id": id, "p": at })).await;
        assert_eq!(person["at"]["ci"]["attribute"], "[redacted]", "at {at}: {person}");
        assert_eq!(person["at"]["ci"]["name"], "Jane Doe", "what was not named stays");
    }
    let listed = server.ok(&viewer, "{ redactions { id status decidedBy recordPosition } }", json!({})).await;
    assert_eq!(listed["redactions"].as_array().map(Vec::len), Some(2), "{listed}");

    // The log's file (the WAL was emptied) and a backup made now hold no erased byte.
    let data_dir = server.data_dir();
    let backup = data_dir.join("after-redaction.sqlite");
    let made =
        cmdb(&["--data-dir", data_dir.to_str().expect("path"), "backup", "--to", backup.to_str().expect("path")]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let backup_bytes = std::fs::read(&backup).expect("backup");
    for secret in [EMAIL, NEW_EMAIL] {
        assert!(!contains(&backup_bytes, secret), "the backup holds {secret}");
    }
    server.shutdown().await;
    for file in ["events.sqlite", "events.sqlite-wal", "projections/graph.checkpoint"] {
        let path = data_dir.join(file);
        let bytes = std::fs::read(&path).unwrap_or_default();
        for secret in [EMAIL, NEW_EMAIL] {
            assert!(!contains(&bytes, secret), "{file} holds {secret}");
        }
    }
    // After a restart (from the projections' checkpoints or not), still erased.
    let restarted = Server::start(&data_dir, settings, StartOptions::default()).await.expect("restarts");
    let base = format!("http://{}", restarted.local_addr());
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(&admin)
        .json(&json!({ "query": PERSON, "variables": { "id": id, "p": before_update } }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["data"]["at"]["ci"]["attribute"], "[redacted]", "{body}");
    restarted.shutdown().await;

    // The CLI proves the redacted event with the key and the old checkpoint alone.
    let work = tempfile::tempdir().expect("work");
    let proof = cmdb(&[
        "--data-dir",
        data_dir.to_str().expect("path"),
        "proof",
        "inclusion",
        "--position",
        &first.to_string(),
        "--tree-size",
        &old_size.to_string(),
    ]);
    assert!(proof.status.success(), "{}", text(&proof.stderr));
    assert!(!contains(&proof.stdout, EMAIL));
    let proof_file = work.path().join("proof.json");
    std::fs::write(&proof_file, &proof.stdout).expect("write");
    let note_file = work.path().join("old.note");
    std::fs::write(&note_file, checkpoint["note"].as_str().expect("note")).expect("write");
    let verified = cmdb(&[
        "proof",
        "verify",
        "--key",
        &key.verifier().to_string(),
        "--proof",
        proof_file.to_str().expect("path"),
        "--checkpoint",
        note_file.to_str().expect("path"),
    ]);
    assert!(verified.status.success(), "{}{}", text(&verified.stdout), text(&verified.stderr));
}

#[tokio::test]
async fn a_rejected_redaction_erases_nothing_and_a_whole_payload_keeps_what_the_engine_needs() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    server.uncontrolled().await;
    let auditor = server.principal_with_token("auditor-eve", &["AUDITOR"]).await;
    let registered = server
        .ok(
            &admin,
            "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id } } }",
            json!({ "input": { "class": "TEAM", "name": "Payments", "attributes": { "email": "pay@example.com", "on_call": "+44 20 7946 0000" } } }),
        )
        .await;
    let position = registered["registerCi"]["position"].as_u64().expect("position");
    let id = registered["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();
    let ask = |rid: &str| json!({ "input": { "id": rid, "positions": [position], "reason": "privacy request 7" } });
    server.ok(&admin, REQUEST, ask("whole-1")).await;
    let before = server.ok(&admin, EVENT, json!({ "p": position })).await;
    let rejected = server
        .ok(&auditor, "mutation { rejectRedaction(input: { id: \"whole-1\", reason: \"a team address is not personal\" }) { status decidedBy rejectionReason } }", json!({}))
        .await;
    assert_eq!(rejected["rejectRedaction"]["status"], "rejected");
    assert_eq!(
        server.ok(&admin, EVENT, json!({ "p": position })).await["event"]["dataText"],
        before["event"]["dataText"]
    );
    let (_, body) = server.graphql(&auditor, APPROVE, json!({ "id": "whole-1" })).await;
    assert_eq!(error_code(&body), "FAILED_PRECONDITION", "{body}");
    let (_, body) = server.graphql(&admin, REQUEST, ask("whole-1")).await;
    assert_eq!(error_code(&body), "ALREADY_EXISTS", "{body}");

    // The whole payload: every value the engine can do without is erased, the rest listed.
    server.ok(&admin, REQUEST, ask("whole-2")).await;
    let approved = server.ok(&auditor, APPROVE, json!({ "id": "whole-2" })).await;
    let erasure = approved["approveRedaction"]["redaction"]["erasures"][0].clone();
    let erased: Vec<&str> =
        erasure["erasedFields"].as_array().expect("fields").iter().filter_map(Value::as_str).collect();
    assert!(
        erased.iter().any(|f| f.ends_with("/email")) && erased.iter().any(|f| f.ends_with("/on_call")),
        "{erasure}"
    );
    let team = server
        .ok(
            &admin,
            "query($id: ID!) { at { ci(id: $id) { name class attribute(name: \"on_call\") } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(team["at"]["ci"]["attribute"], "[redacted]", "{team}");
    assert_eq!(team["at"]["ci"]["class"], "team", "the class is kept: {team}");
    let event = server.ok(&admin, EVENT, json!({ "p": position })).await;
    assert!(!contains(event["event"]["dataText"].as_str().unwrap_or("").as_bytes(), "7946"), "{event}");
    let verify = server.ok(&admin, "{ verifyLog { intact } }", json!({})).await;
    assert_eq!(verify["verifyLog"]["intact"], true);
}

fn checkpoint_event(log: &[(u64, String, String)]) -> Option<u64> {
    log.iter().find(|(_, kind, _)| kind == "evidence.checkpoint_signed").map(|(p, _, _)| *p)
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

#[tokio::test]
async fn a_principals_display_name_is_erased_and_its_tokens_still_work() {
    let server = TestServer::start().await;
    let admin = server.admin_token.clone();
    let auditor = server.principal_with_token("auditor-fay", &["AUDITOR"]).await;
    server
        .ok(
            &admin,
            "mutation { createPrincipal(input: { name: \"gus\", kind: PERSON, displayName: \"Gus Grantham\", roles: [VIEWER] }) { position } }",
            json!({}),
        )
        .await;
    let gus = server.ok(&admin, "mutation { createToken(input: { principal: \"gus\" }) { token } }", json!({})).await
        ["createToken"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let log = events(&server).await;
    let (position, _, _) = log
        .iter()
        .find(|(_, kind, data)| kind == "principal.created" && data.contains("Gus Grantham"))
        .expect("created");
    // Its name is how tokens find it: refused, naming the field.
    let (_, body) = server
        .graphql(&admin, REQUEST, json!({ "input": { "positions": [position], "fields": ["/name"], "reason": "r" } }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    // The whole payload: only what people wrote goes.
    server
        .ok(&admin, REQUEST, json!({ "input": { "id": "gus", "positions": [position], "reason": "leaver 12" } }))
        .await;
    let approved = server.ok(&auditor, APPROVE, json!({ "id": "gus" })).await;
    assert_eq!(approved["approveRedaction"]["redaction"]["erasures"][0]["erasedFields"], json!(["/display_name"]));
    let me = server.ok(&gus, "{ me { principal } }", json!({})).await;
    assert_eq!(me["me"]["principal"], "gus", "the token still authenticates: {me}");
    // The access view folds the stream again when it meets the record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed = server.ok(&admin, "{ principals { name displayName } }", json!({})).await;
        let gus = listed["principals"].as_array().expect("list").iter().find(|p| p["name"] == "gus").cloned();
        if gus.as_ref().is_some_and(|p| p["displayName"] == "[redacted]") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still named: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
