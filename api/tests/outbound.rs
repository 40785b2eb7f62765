//! The engine's facts out, as CDEvents in CloudEvents, against a local receiver that fails on
//! purpose: retried with backoff until delivered, dead-lettered after the attempts (listed,
//! replayed on request), and carried across a restart (a fact not yet sent when the server
//! stopped is sent by the next one, from what the log records).
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use cmdb_api::server::{Server, StartOptions};
use common::{TestServer, settings};
use serde_json::{Value, json};

/// A receiver: fails while `failing` is above zero (counting down), keeps what it accepted.
#[derive(Clone, Default)]
struct Receiver {
    failing: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<Value>>>,
    attempts: Arc<AtomicUsize>,
}

async fn receive(State(receiver): State<Receiver>, headers: axum::http::HeaderMap, body: String) -> StatusCode {
    receiver.attempts.fetch_add(1, Ordering::SeqCst);
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/cloudevents+json"));
    let left = receiver.failing.load(Ordering::SeqCst);
    if left > 0 {
        if left != usize::MAX {
            receiver.failing.store(left - 1, Ordering::SeqCst);
        }
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let value: Value = serde_json::from_str(&body).expect("JSON");
    receiver.accepted.lock().expect("lock").push(value);
    StatusCode::ACCEPTED
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = axum::Router::new().route("/events", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, format!("http://{address}/events"))
}

fn outbound_settings(url: &str) -> cmdb_api::settings::ServeSettings {
    cmdb_api::settings::ServeSettings {
        demo: true,
        cdevents_targets: vec![format!("ops={url}").parse().expect("target")],
        outbound_max_attempts: 3,
        outbound_backoff_ms: 1_000,
        ..settings()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Drafts, submits and approves an emergency change on the demo's first application.
async fn approved_change(server: &TestServer, dora: &str, eve: &str, title: &str) -> String {
    let cis = server
        .ok(
            &server.admin_token,
            "{ at { cis(filter: { classes: [\"application\"] }, first: 1) { nodes { id } } } }",
            json!({}),
        )
        .await;
    let ci = cis["at"]["cis"]["nodes"][0]["id"].as_str().expect("ci").to_owned();
    let draft = server
        .ok(
            dora,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": {
                "type": "EMERGENCY", "title": title, "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "dora", "scope": { "cis": [ci] }
            } }),
        )
        .await;
    let change = draft["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    for (token, mutation) in [(dora, "submitChange"), (eve, "approveChange")] {
        server
            .ok(token, &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ position }} }}"), json!({ "id": change }))
            .await;
    }
    change
}

fn assert_valid_custom_cdevent(event: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cdevents/v0.5.1/custom/schema.json");
    let Ok(bytes) = std::fs::read(&path) else {
        assert!(
            std::env::var("CI").is_ok_and(|v| v != "true") || std::env::var("CI").is_err(),
            "{} is needed under CI",
            path.display()
        );
        eprintln!("skipped: {} is not here", path.display());
        return;
    };
    let schema: Value = serde_json::from_slice(&bytes).expect("schema");
    let links = path.parent().and_then(|p| p.parent()).map(|p| p.join("schemas")).expect("folder");
    let validator = jsonschema::options().with_retriever(Local(links)).build(&schema).expect("schema builds");
    let errors: Vec<String> = validator.iter_errors(event).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:?}: {event}");
}

struct Local(PathBuf);

impl jsonschema::Retrieve for Local {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().as_str();
        let name = path.split("/schema/").nth(1).ok_or_else(|| format!("not a CDEvents schema: {uri}"))?;
        Ok(serde_json::from_slice(&std::fs::read(self.0.join(format!("{name}.json")))?)?)
    }
}

async fn dead_letters(server: &TestServer) -> Vec<Value> {
    let data = server
        .ok(&server.admin_token, "{ outbound { name handledThrough delivered deadLetters { position eventType attempts error replayRequested } } }", json!({}))
        .await;
    data["outbound"][0]["deadLetters"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_are_retried_dead_lettered_replayed_and_survive_a_restart() {
    let (receiver, url) = start_receiver().await;
    receiver.failing.store(1, Ordering::SeqCst);
    let mut server = TestServer::start_with(outbound_settings(&url)).await;
    let dora = server.principal_with_token("dora", &["DEPLOYER"]).await;
    let eve = server.principal_with_token("eve", &["EMERGENCY_APPROVER"]).await;

    // A failure, then delivered on the second attempt, a second later.
    let change = approved_change(&server, &dora, &eve, "first").await;
    wait_until("the approval to arrive", || !receiver.accepted.lock().expect("lock").is_empty()).await;
    let first = receiver.accepted.lock().expect("lock")[0].clone();
    assert_eq!(first["type"], "dev.cdeventsx.cmdb-change.approved.0.1.0");
    assert_eq!(first["source"], "/cmdb");
    assert_eq!(first["data"]["context"]["id"], first["id"]);
    assert!(first["data"]["subject"]["id"].as_str().is_some_and(|s| s.starts_with("CHG-")), "{first}");
    assert!(receiver.attempts.load(Ordering::SeqCst) >= 2);
    assert_valid_custom_cdevent(&first["data"]);
    let _ = change;

    // The receiver is down for good: the next fact is dead-lettered after three attempts.
    receiver.failing.store(usize::MAX, Ordering::SeqCst);
    approved_change(&server, &dora, &eve, "second").await;
    let mut letters = Vec::new();
    for _ in 0..500 {
        letters = dead_letters(&server).await;
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["attempts"], 3);
    assert_eq!(letters[0]["error"], "HTTP 503");
    let position = letters[0]["position"].as_u64().expect("position");

    // Replayed on request once the receiver is back.
    receiver.failing.store(0, Ordering::SeqCst);
    let (status, body) = server
        .graphql(
            &dora,
            "mutation($t: String!, $p: Position!) { replayDeadLetter(target: $t, position: $p) }",
            json!({ "t": "ops", "p": position }),
        )
        .await;
    assert_eq!(common::error_code(&body), "FORBIDDEN", "a deployer may not replay: {status} {body}");
    let (_, body) = server
        .graphql(
            &server.admin_token,
            "mutation($t: String!) { replayDeadLetter(target: $t, position: 1) }",
            json!({ "t": "ops" }),
        )
        .await;
    assert_eq!(common::error_code(&body), "NOT_FOUND", "{body}");
    server
        .ok(
            &server.admin_token,
            "mutation($t: String!, $p: Position!) { replayDeadLetter(target: $t, position: $p) }",
            json!({ "t": "ops", "p": position }),
        )
        .await;
    wait_until("the replay to arrive", || receiver.accepted.lock().expect("lock").len() == 2).await;
    let replayed = receiver.accepted.lock().expect("lock")[1].clone();
    assert_eq!(replayed["id"], format!("cmdb-{position}"));
    for _ in 0..250 {
        if dead_letters(&server).await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(dead_letters(&server).await.is_empty());

    // A fact not yet sent when the server stops (it failed once and waits to retry) is sent
    // by the next server, from what the log records.
    receiver.failing.store(usize::MAX, Ordering::SeqCst);
    let attempts = receiver.attempts.load(Ordering::SeqCst);
    approved_change(&server, &dora, &eve, "third").await;
    wait_until("a failed attempt", || receiver.attempts.load(Ordering::SeqCst) > attempts).await;
    let outbound_admin = server.admin_token.clone();
    server.shutdown().await;
    let sent_before = receiver.accepted.lock().expect("lock").len();
    assert_eq!(sent_before, 2);
    receiver.failing.store(0, Ordering::SeqCst);
    let restarted =
        Server::start(&server.data_dir(), outbound_settings(&url), StartOptions::default()).await.expect("restart");
    wait_until("the third approval to arrive after the restart", || receiver.accepted.lock().expect("lock").len() >= 3)
        .await;
    let after: Vec<String> =
        receiver.accepted.lock().expect("lock").iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect();
    let unique: std::collections::BTreeSet<&String> = after.iter().collect();
    assert_eq!(unique.len(), 3, "each fact once (at least once, the same id when repeated): {after:?}");
    // The CLI on the data directory: the outbox, and bad input refused with nothing written.
    let cmdb = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cmdb"))
            .arg("--data-dir")
            .arg(server.data_dir())
            .args(args)
            .output()
            .expect("cmdb runs")
    };
    let listed = cmdb(&["outbound", "dead-letters", "--target", "ops", "--json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(listed["deadLetters"], json!([]));
    assert!(listed["delivered"].as_u64().is_some_and(|n| n >= 3), "{listed}");
    let head_of = |server: &Server| {
        let url = format!("http://{}/graphql", server.local_addr());
        let client = reqwest::Client::new();
        let token = outbound_admin.clone();
        async move {
            let body: Value = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "query": "{ head { position } }" }))
                .send()
                .await
                .expect("head")
                .json()
                .await
                .expect("JSON");
            body["data"]["head"]["position"].as_u64().expect("position")
        }
    };
    let head = head_of(&restarted).await;
    let missing = cmdb(&["outbound", "replay", "--target", "ops", "--position", "999999999"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no dead letter"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let bad = cmdb(&["outbound", "replay", "--target", "not a name", "--position", "1"]);
    assert!(!bad.status.success());
    assert_eq!(head_of(&restarted).await, head, "nothing appended");
    restarted.shutdown().await;
}
