//! Many servers on one PostgreSQL log (issue 14; CM-4, RC-1): two writers and two read-only
//! followers, as separate `cmdb serve --store postgres://...` processes, under mixed load.
//! Conditional appends keep the invariants across processes (unique names, gapless change
//! numbers); followers refuse writes naming where they go, converge to the head and answer the
//! same as-of queries as the writers, field by field; minPosition works across processes.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one operator's session")]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::FreshDatabase;
use serde_json::{Value, json};

/// How long the followers may take to reach the writers' head after the load stops.
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);

struct Process {
    child: Child,
    base: String,
    token: Option<String>,
    log: PathBuf,
    _dirs: tempfile::TempDir,
}

impl Process {
    fn start(url: &str, args: &[&str]) -> Process {
        let dirs = tempfile::tempdir().expect("dirs");
        let log = dirs.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cmdb"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", url, "--data-dir"])
            .arg(dirs.path().join("data"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (mut token, mut base) = (None, String::new());
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if line.trim().starts_with("cmdb_") {
                token = Some(line.trim().to_owned());
            }
            if let Some(rest) = line.strip_prefix("cmdb: serving GraphQL on ") {
                base = rest.split("/graphql").next().expect("address").to_owned();
                break;
            }
        }
        if base.is_empty() {
            panic!("the server did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        Process { child, base, token, log, _dirs: dirs }
    }

    async fn post(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        response.json::<Value>().await.expect("json")
    }

    async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.post(token, query, variables).await;
        assert!(body.get("errors").is_none(), "{} answered errors: {body}", self.base);
        body["data"].clone()
    }

    async fn head(&self, token: &str) -> u64 {
        self.ok(token, "{ head { position } }", json!({})).await["head"]["position"].as_u64().expect("head")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} stderr:\n{}", self.base, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

const REGISTER: &str = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id } } }";

fn host(name: &str, cores: u32) -> Value {
    json!({"class": "HOST", "name": name, "environment": "PRODUCTION",
           "attributes": {"hostname": name, "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": cores, "memory_mib": 8192}})
}

/// The whole estate at a position, as a follower or a writer answers it.
async fn estate(server: &Process, token: &str, position: u64) -> Value {
    let query = "query($p: Position!) { at(position: $p) { position cis(first: 1000) { nodes { id name class version attribute(name: \"cpu_cores\") } } } }";
    server.ok(token, query, json!({ "p": position })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_and_two_followers_share_one_log() {
    let Some(db) = FreshDatabase::create("two_writers_and_two_followers_share_one_log") else { return };
    let writer_a = Process::start(&db.url, &[]);
    let admin = writer_a.token.clone().expect("the first server on a new log bootstraps an admin token");
    let writer_b = Process::start(&db.url, &[]);
    assert!(writer_b.token.is_none(), "a second server on the same log does not bootstrap again");
    let writes_go_to = writer_a.base.clone();
    let follower_1 = Process::start(&db.url, &["--read-only", "--writes-go-to", &writes_go_to]);
    let follower_2 = Process::start(&db.url, &["--read-only", "--writes-go-to", &writes_go_to]);

    // Setup through writer A; writer B sees it (the admin token works everywhere).
    let classes = writer_a.ok(&admin, "{ classes { name controlled } }", json!({})).await;
    for class in classes["classes"].as_array().expect("classes") {
        if class["controlled"] == json!(true) {
            writer_a
                .ok(
                    &admin,
                    "mutation($c: String!) { declareClassControl(class: $c, controlled: false, reason: \"load test\") { position } }",
                    json!({ "c": class["name"] }),
                )
                .await;
        }
    }
    let created = writer_a
        .ok(
            &admin,
            "mutation { createPrincipal(input: { name: \"alice\", kind: PERSON, roles: [EDITOR] }) { position } }",
            json!({}),
        )
        .await;
    let principal_position = created["createPrincipal"]["position"].as_u64().expect("position");
    // Read your writes across processes: B has applied A's write when asked with minPosition.
    let seen = writer_b
        .ok(&admin, "query($p: Position!) { at(minPosition: $p) { position } }", json!({ "p": principal_position }))
        .await;
    assert!(seen["at"]["position"].as_u64().expect("position") >= principal_position);
    let alice =
        writer_b.ok(&admin, "mutation { createToken(principal: \"alice\") { token } }", json!({})).await["createToken"]
            ["token"]
            .as_str()
            .expect("token")
            .to_owned();

    // A follower refuses a write, names where writes go, and the log does not move.
    let before = writer_a.head(&admin).await;
    let refused = follower_1.post(&alice, REGISTER, json!({ "input": host("refused-01", 2) })).await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "READ_ONLY", "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&writes_go_to), "the refusal names where writes go: {message}");
    assert_eq!(writer_a.head(&admin).await, before, "a refused write appends nothing");

    // Mixed load: both writers register and update hosts while both followers answer reads;
    // every few rounds both writers race to register the same name.
    let writers = [&writer_a, &writer_b];
    let mut ids = Vec::new();
    let mut race_winners = 0;
    for round in 0..30u32 {
        let names = [format!("a-{round:03}"), format!("b-{round:03}")];
        let (one, two, read_1, read_2) = tokio::join!(
            writers[0].ok(&alice, REGISTER, json!({ "input": host(&names[0], 2) })),
            writers[1].ok(&alice, REGISTER, json!({ "input": host(&names[1], 2) })),
            follower_1.post(&alice, "{ at { cis(first: 50) { nodes { id name } } } }", json!({})),
            follower_2.post(&alice, "{ head { position } }", json!({})),
        );
        assert!(read_1.get("errors").is_none() && read_2.get("errors").is_none(), "{read_1} {read_2}");
        for (data, writer) in [(one, 0usize), (two, 1usize)] {
            let id = data["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();
            let position = data["registerCi"]["position"].as_u64().expect("position");
            ids.push((id, position, writer));
        }
        if round % 5 == 0 {
            let name = format!("contested-{round}");
            let (first, second) = tokio::join!(
                writer_a.post(&alice, REGISTER, json!({ "input": host(&name, 1) })),
                writer_b.post(&alice, REGISTER, json!({ "input": host(&name, 1) })),
            );
            let wins = [&first, &second].iter().filter(|body| body.get("errors").is_none()).count();
            assert_eq!(wins, 1, "exactly one server registers a contested name: {first} {second}");
            for body in [&first, &second] {
                if let Some(errors) = body.get("errors") {
                    assert_eq!(errors[0]["extensions"]["code"], "ALREADY_EXISTS", "{body}");
                }
            }
            race_winners += 1;
        }
    }
    // Each writer updates hosts the other registered (it must have applied them first).
    for (index, (id, position, writer)) in ids.iter().enumerate().take(20) {
        let other = writers[1 - writer];
        let update = "mutation($id: ID!, $n: Int!) { updateCi(id: $id, input: { setAttributes: { cpu_cores: $n } }) { position } }";
        other.ok(&alice, "query($p: Position!) { at(minPosition: $p) { position } }", json!({ "p": position })).await;
        other.ok(&alice, update, json!({ "id": id, "n": 4 + index as u32 })).await;
    }

    // Gapless change numbers across processes: drafts submitted on both writers at once.
    let draft = "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }";
    let submit = "mutation($id: ID!) { submitChange(id: $id) { change { number } } }";
    let mut numbers = BTreeSet::new();
    for (round, (scope_ci, _, _)) in ids.iter().enumerate().take(6) {
        let input = |writer: &str| {
            json!({ "input": {
                "type": "NORMAL", "title": format!("change {round} on {writer}"), "description": "load",
                "justification": "test", "backOutPlan": "revert",
                "window": { "start": "2030-01-10T22:00:00Z", "end": "2030-01-11T02:00:00Z", "timeZone": "UTC" },
                "implementer": "alice", "scope": { "cis": [scope_ci] }
            } })
        };
        let (one, two) = tokio::join!(writer_a.ok(&alice, draft, input("a")), writer_b.ok(&alice, draft, input("b")));
        let (one, two) = (
            one["draftChange"]["change"]["id"].as_str().expect("id").to_owned(),
            two["draftChange"]["change"]["id"].as_str().expect("id").to_owned(),
        );
        let (one, two) = tokio::join!(
            writer_a.ok(&alice, submit, json!({ "id": one })),
            writer_b.ok(&alice, submit, json!({ "id": two })),
        );
        for data in [one, two] {
            let number = data["submitChange"]["change"]["number"].as_str().expect("number").to_owned();
            assert!(numbers.insert(number.clone()), "change number {number} was given twice");
        }
    }
    let expected: BTreeSet<String> = (1..=12).map(|n| format!("CHG-{n:06}")).collect();
    assert_eq!(numbers, expected, "change numbers are gapless and unique across both writers");

    // The followers converge to the head and answer as-of queries as the writers do.
    let head = writer_a.head(&admin).await.max(writer_b.head(&admin).await);
    let started = Instant::now();
    for follower in [&follower_1, &follower_2] {
        follower.ok(&alice, "query($p: Position!) { at(minPosition: $p) { position } }", json!({ "p": head })).await;
    }
    assert!(started.elapsed() < CONVERGE_WITHIN, "followers took {:?} to reach {head}", started.elapsed());
    for position in [principal_position, ids[10].1, ids[40].1, head] {
        let reference = estate(&writer_a, &alice, position).await;
        assert!(
            reference["at"]["cis"]["nodes"].as_array().is_some_and(|n| !n.is_empty()) || position == principal_position,
            "{reference}"
        );
        for other in [&writer_b, &follower_1, &follower_2] {
            assert_eq!(estate(other, &alice, position).await, reference, "{} differs at {position}", other.base);
        }
    }
    let registered = estate(&follower_2, &alice, head).await["at"]["cis"]["nodes"].as_array().expect("nodes").len();
    assert_eq!(registered, ids.len() + race_winners, "every registered host, once");
}

fn cmdb(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cmdb")).args(args).output().expect("cmdb runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn digest(store: &str) -> String {
    let (code, out, err) = cmdb(&["digest", "--store", store]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

#[test]
fn migrate_copies_a_log_both_ways_with_the_same_digest_and_refuses_a_non_empty_target() {
    let Some(db) = FreshDatabase::create("migrate_copies_a_log_both_ways") else { return };
    let dirs = tempfile::tempdir().expect("dirs");
    let source = format!("sqlite:{}", dirs.path().join("source").display());
    for name in ["alice", "bob", "carol"] {
        let (code, _, err) = cmdb(&["principal", "create", name, "--role", "editor", "--store", &source]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = cmdb(&["token", "create", "--principal", "bob", "--store", &source]);
    assert_eq!(code, 0, "{err}");
    let source_digest = digest(&source);

    let (code, out, err) = cmdb(&["migrate", "--from", &source, "--to", &db.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain verified"), "{out}");
    assert_eq!(digest(&db.url), source_digest, "the same head digest on PostgreSQL");
    let (code, out, err) = cmdb(&["verify", "--store", &db.url, "--digest", &source_digest]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matches"), "{out}");

    // Back to a new embedded log: the same digest again.
    let back = format!("sqlite:{}", dirs.path().join("back").display());
    let (code, out, err) = cmdb(&["migrate", "--from", &db.url, "--to", &back]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(digest(&back), source_digest);

    // A non-empty target is refused, and neither log changes.
    let (code, _, err) = cmdb(&["migrate", "--from", &source, "--to", &db.url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already holds") && err.contains("nothing was changed"), "{err}");
    assert_eq!(digest(&db.url), source_digest);
    assert_eq!(digest(&source), source_digest);
    // The same log twice, a missing source and a bad location are refused too.
    let (code, _, err) = cmdb(&["migrate", "--from", &source, "--to", &source]);
    assert_eq!(code, 2);
    assert!(err.contains("same log"), "{err}");
    let missing = format!("sqlite:{}", dirs.path().join("missing").display());
    let (code, _, err) = cmdb(&["migrate", "--from", &missing, "--to", &back]);
    assert_eq!(code, 2);
    assert!(err.contains("no event log"), "{err}");
    assert!(!dirs.path().join("missing").exists(), "a missing source is not created");
    for bad in ["mysql://x/y", "sqlite:", "/just/a/path"] {
        let (code, _, err) = cmdb(&["migrate", "--from", bad, "--to", &back]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--store takes sqlite:PATH"), "{bad}: {err}");
    }
    assert_eq!(digest(&back), source_digest, "refused commands changed nothing");
    // `cmdb backup` names what to do on PostgreSQL.
    let (code, _, err) =
        cmdb(&["backup", "--store", &db.url, "--to", &dirs.path().join("b.sqlite").display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("pg_dump") && err.contains("cmdb migrate"), "{err}");
}

#[test]
fn bad_store_flags_are_refused_before_anything_is_touched() {
    let dirs = tempfile::tempdir().expect("dirs");
    let data = dirs.path().join("data").display().to_string();
    for bad in ["mysql://x/y", "sqlite:", "postgres://u:secret@h:notaport/db"] {
        let (code, _, err) = cmdb(&["serve", "--data-dir", &data, "--store", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("--store takes"), "{bad}: {err}");
        assert!(!err.contains("secret"), "the password is not echoed: {err}");
    }
    let (code, _, err) = cmdb(&["serve", "--data-dir", &data, "--read-only", "--demo"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--read-only"), "{err}");
    let (code, _, err) = cmdb(&["serve", "--data-dir", &data, "--writes-go-to", "http://x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--writes-go-to is for a --read-only follower"), "{err}");
    assert!(!dirs.path().join("data").join("events.sqlite").exists(), "no log was created by a refused start");
}

/// Evidence on the shared log (issue 18): two writers with the same key sign checkpoints in
/// turn, a follower serves the same checkpoints and the same proofs, and a proof from one
/// server verifies against a checkpoint from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_server_of_a_shared_log_serves_the_same_tree_and_checkpoints() {
    let Some(db) = FreshDatabase::create("every_server_of_a_shared_log_serves_the_same_tree_and_checkpoints") else {
        return;
    };
    let keys = tempfile::tempdir().expect("keys");
    let key_file = keys.path().join("log.key");
    let key = cmdb_api::app::evidence::generate_key("cmdb.test/shared").expect("key");
    cmdb_api::app::evidence::create_key_file(&key_file, &key).expect("key file");
    let key_path = key_file.to_str().expect("path");
    let quiet = ["--signing-key", key_path, "--sign-every-events", "10000000", "--sign-every-ms", "3600000"];
    let writer_a = Process::start(&db.url, &quiet);
    let admin = writer_a.token.clone().expect("token");
    let writer_b = Process::start(&db.url, &quiet);
    let mut follower_args = quiet.to_vec();
    follower_args.extend(["--read-only", "--writes-go-to", "http://writer.example"]);
    let follower = Process::start(&db.url, &follower_args);

    let sign = "mutation { signCheckpoint { treeSize rootHash note } }";
    let first = writer_a.ok(&admin, sign, json!({})).await["signCheckpoint"].clone();
    writer_b
        .ok(
            &admin,
            "mutation { createPrincipal(input: { name: \"bob\", kind: PERSON, roles: [VIEWER] }) { position } }",
            json!({}),
        )
        .await;
    let second = writer_b.ok(&admin, sign, json!({})).await["signCheckpoint"].clone();
    let verifier = key.verifier();
    let old = cmdb_core::note::Checkpoint::verify(first["note"].as_str().expect("note"), &verifier).expect("verifies");
    let new = cmdb_core::note::Checkpoint::verify(second["note"].as_str().expect("note"), &verifier).expect("verifies");
    assert!(new.size > old.size);

    let listing = "{ checkpoints { treeSize rootHash } }";
    let deadline = std::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        let a = writer_a.ok(&admin, listing, json!({})).await;
        let f = follower.ok(&admin, listing, json!({})).await;
        if a == f && a["checkpoints"].as_array().is_some_and(|c| c.len() == 2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the servers did not converge: {a} / {f}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consistency = "query($f: Position!, $t: Position!) { consistencyProof(fromSize: $f, toSize: $t) { hashes } }";
    let proof = follower.ok(&admin, consistency, json!({ "f": old.size, "t": new.size })).await;
    let hashes: Vec<cmdb_core::merkle::TreeHash> = proof["consistencyProof"]["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| h.as_str().expect("text").parse().expect("hash"))
        .collect();
    cmdb_core::merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes)
        .expect("the follower's proof joins the two writers' checkpoints");
    let (_, body) = (0, follower.post(&admin, sign, json!({})).await);
    assert_eq!(body["errors"][0]["extensions"]["code"], "READ_ONLY", "{body}");
}

/// A redaction approved on one writer of a shared log (issue 18, part 4): the other writer and
/// a follower rebuild their read models from the log when they meet the record, so every
/// server reads `[redacted]` at every position, and the chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redaction_on_one_writer_is_read_as_redacted_by_every_server() {
    let Some(db) = FreshDatabase::create("a_redaction_on_one_writer_is_read_as_redacted_by_every_server") else {
        return;
    };
    let writer_a = Process::start(&db.url, &[]);
    let admin = writer_a.token.clone().expect("token");
    let writer_b = Process::start(&db.url, &[]);
    let follower = Process::start(&db.url, &["--read-only", "--writes-go-to", "http://writer.example"]);
    writer_a
        .ok(
            &admin,
            "mutation { createPrincipal(input: { name: \"eve\", kind: PERSON, roles: [AUDITOR] }) { position } }",
            json!({}),
        )
        .await;
    let auditor = writer_a.ok(&admin, "mutation { createToken(principal: \"eve\") { token } }", json!({})).await["createToken"]
        ["token"]
        .as_str()
        .expect("token")
        .to_owned();
    writer_a
        .ok(
            &admin,
            "mutation { declareClassControl(class: \"person\", controlled: false, reason: \"a test of redaction\") { position } }",
            json!({}),
        )
        .await;
    let registered = writer_a
        .ok(
            &admin,
            "mutation { registerCi(input: { class: \"PERSON\", name: \"Jane Doe\", attributes: { email: \"jane.doe@example.com\" } }) { position ci { id } } }",
            json!({}),
        )
        .await;
    let position = registered["registerCi"]["position"].as_u64().expect("position");
    let id = registered["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();
    let data = writer_a
        .ok(&admin, "query($p: Position!) { event(position: $p) { dataText } }", json!({ "p": position }))
        .await;
    let payload: Value = serde_json::from_str(data["event"]["dataText"].as_str().expect("text")).expect("json");
    let pointer =
        common::pointer_to(&payload, "jane.doe@example.com", String::new()).expect("the address is in the payload");
    let request = "mutation($input: RedactionInput!) { requestRedaction(input: $input) { id } }";
    writer_a
        .ok(&admin, request, json!({ "input": { "id": "r1", "positions": [position], "fields": [pointer], "reason": "privacy request" } }))
        .await;
    // The other writer learns of the auditor's token by following the log.
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while writer_b.post(&auditor, "{ me { principal } }", json!({})).await.get("errors").is_some() {
        assert!(Instant::now() < deadline, "the second writer never saw the token");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let approved = writer_b
        .ok(
            &auditor,
            "mutation { approveRedaction(input: { id: \"r1\" }) { redaction { recordPosition } } }",
            json!({}),
        )
        .await;
    let record = approved["approveRedaction"]["redaction"]["recordPosition"].as_u64().expect("record");
    let read = "query($id: ID!, $p: Position) { at(position: $p, minPosition: $p) { ci(id: $id) { attribute(name: \"email\") } } }";
    for server in [&writer_a, &writer_b, &follower] {
        for at in [position, record] {
            let deadline = Instant::now() + CONVERGE_WITHIN;
            loop {
                let body = server.post(&admin, read, json!({ "id": id, "p": at })).await;
                if body["data"]["at"]["ci"]["attribute"] == "[redacted]" {
                    break;
                }
                assert!(Instant::now() < deadline, "{} still reads the address at {at}: {body}", server.base);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let verify = follower.ok(&admin, "{ verifyLog { intact } }", json!({})).await;
    assert_eq!(verify["verifyLog"]["intact"], true, "{verify}");
}
