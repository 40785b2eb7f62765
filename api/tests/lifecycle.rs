//! The server's life: graceful shutdown under load (in process and as a real process
//! receiving SIGTERM), settings from the environment, the README's first steps.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cmdb_core::EventStore;
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use common::{TestServer, ws};
use serde_json::json;

/// POST a GraphQL query to a server at `address`.
async fn post(address: &str, token: &str, query: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json")
}

/// Creates principals as fast as it can until the server stops answering; returns the
/// (position, name) of every creation the server acknowledged.
async fn load(base: String, token: String, writer: usize, stop: Arc<AtomicBool>) -> Vec<(u64, String)> {
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let name = format!("load-{writer}-{n}");
        let response = client
            .post(format!("{base}/graphql"))
            .bearer_auth(&token)
            .json(&json!({ "query": "mutation($n: String!) { createPrincipal(input: { name: $n, kind: SYSTEM }) { position } }", "variables": { "n": name } }))
            .send()
            .await;
        let Ok(response) = response else { break };
        let Ok(body) = response.json::<serde_json::Value>().await else { break };
        match body["data"]["createPrincipal"]["position"].as_u64() {
            Some(position) => acknowledged.push((position, name)),
            None if body["errors"][0]["extensions"]["code"] == "CONFLICT" => continue,
            None => break,
        }
    }
    acknowledged
}

async fn assert_all_present(data_dir: &Path, acknowledged: &[(u64, String)]) {
    let store = SqliteStore::open(data_dir, SqliteOptions::default()).expect("reopen");
    let report = store.verify().await.expect("verify");
    assert!(report.is_intact(), "{report:?}");
    for (position, name) in acknowledged {
        let record =
            store.event_at(*position).await.expect("read").unwrap_or_else(|| panic!("acknowledged {position} lost"));
        let data: serde_json::Value = record.data_as().expect("json");
        assert_eq!(data["name"], name.as_str(), "position {position}");
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_under_load_loses_nothing_acknowledged() {
    let mut server = TestServer::start().await;
    let mut socket = ws::connect(&server, Some(&server.admin_token)).await;
    ws::init(&mut socket, json!({})).await;
    ws::subscribe(&mut socket, "live", "subscription { events { position } }").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| tokio::spawn(load(server.base.clone(), server.admin_token.clone(), writer, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.shutdown().await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(acknowledged.len() > 10, "the load ran ({} acknowledged)", acknowledged.len());
    // The subscription saw events, then was completed and the socket closed as going away.
    let mut last = json!(null);
    loop {
        let message = ws::next_json(&mut socket).await;
        if message["type"] == "closed" {
            last = message;
            break;
        }
        assert!(matches!(message["type"].as_str(), Some("next") | Some("complete")), "{message}");
    }
    assert_eq!(last["code"], 1001, "{last}");
    // New connections are refused once the server is down.
    assert!(reqwest::get(server.url("/healthz")).await.is_err());
    assert!(!server.data_dir().join("server.json").exists(), "the server file is removed");
    assert_all_present(&server.data_dir(), &acknowledged).await;
}

/// Starts the real binary; returns the child, its address and its bootstrap token.
fn spawn_server(
    data_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String, Option<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cmdb"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).args(extra);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn cmdb");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut token = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(found) = line.split_whitespace().find(|w| w.starts_with("cmdb_")) {
            token = Some(found.to_owned());
        }
        if let Some(rest) = line.split("http://").nth(1) {
            let address = rest.split('/').next().expect("address").to_owned();
            std::thread::spawn(move || for _ in lines {});
            return (child, address, token);
        }
    }
    panic!("cmdb serve exited before it listened: {:?}", child.wait());
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    child.wait().expect("wait")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_the_real_server_gracefully_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, address, token) = spawn_server(dir.path(), &[], &[]);
    let token = token.expect("the first start prints a token");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| tokio::spawn(load(format!("http://{address}"), token.clone(), writer, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || terminate(&mut child)).await.expect("join");
    assert!(status.success(), "a SIGTERM is a clean exit: {status}");
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(acknowledged.len() > 10);
    assert_all_present(dir.path(), &acknowledged).await;

    // A second start on the same directory creates no new admin and prints no token.
    let (mut child, address, token) = spawn_server(dir.path(), &[], &[]);
    assert!(token.is_none(), "the bootstrap token is printed only once");
    let ready: serde_json::Value =
        reqwest::get(format!("http://{address}/readyz")).await.expect("get").json().await.expect("json");
    assert_eq!(ready["ready"], true);
    for projection in ["access", "graph", "evidence"] {
        assert!(ready["projections"][projection]["lag"].is_u64(), "{projection} is listed: {ready}");
    }
    let status = terminate(&mut child);
    assert!(status.success(), "the server stopped with {status:?}");
}

#[tokio::test]
async fn settings_come_from_flags_and_cmdb_environment_variables_and_flags_win() {
    let dir = tempfile::tempdir().expect("dir");
    // From the environment, validated.
    let output = Command::new(env!("CARGO_BIN_EXE_cmdb"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("CMDB_MAX_PAGE_SIZE", "0")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_page_size is 0"), "{stderr}");
    let output =
        Command::new(env!("CARGO_BIN_EXE_cmdb")).args(["serve", "--listen", "not-an-address"]).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));

    // A flag wins over the environment; the environment sets what flags leave alone.
    let (mut child, address, token) = spawn_server(
        dir.path(),
        &["--max-page-size", "7"],
        &[("CMDB_MAX_PAGE_SIZE", "0"), ("CMDB_MAX_SCAN_EVENTS", "4242")],
    );
    let token = token.expect("token");
    let limits = post(&address, &token, "{ limits { maxPageSize maxScanEvents } }").await;
    assert_eq!(limits["data"]["limits"]["maxPageSize"], 7);
    assert_eq!(limits["data"]["limits"]["maxScanEvents"], 4242);
    let status = terminate(&mut child);
    assert!(status.success(), "the server stopped with {status:?}");
}

#[tokio::test]
async fn the_readme_first_query_works() {
    // README: start, take the printed token, POST { head { position } } with curl's headers.
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, address, token) = spawn_server(dir.path(), &[], &[]);
    let token = token.expect("token");
    let output = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json"])
        .args(["-d", r#"{"query":"{ head { position hash } me { principal roles } }"}"#])
        .arg(format!("http://{address}/graphql"))
        .output();
    match output {
        Ok(output) => {
            let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
            assert_eq!(body["data"]["me"]["principal"], "admin", "{body}");
            assert_eq!(body["data"]["head"]["position"], 2);
        }
        Err(error) => println!("SKIPPED the curl part: curl is not available here ({error})"),
    }
    let status = terminate(&mut child);
    assert!(status.success(), "the server stopped with {status:?}");
}

#[tokio::test]
async fn no_bootstrap_token_creates_the_admin_without_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    let settings = cmdb_api::settings::ServeSettings { no_bootstrap_token: true, ..common::settings() };
    let server = cmdb_api::server::Server::start(dir.path(), settings, Default::default()).await.expect("start");
    assert!(server.bootstrap_token().is_none());
    let address = server.local_addr();
    // The operator makes the first token on the machine itself.
    let data_dir = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cmdb"))
            .args(["token", "create", "--principal", "admin", "--data-dir"])
            .arg(data_dir)
            .output()
    })
    .await
    .expect("join")
    .expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let body = post(&address.to_string(), &token, "{ me { principal roles } }").await;
    assert_eq!(body["data"]["me"]["principal"], "admin");
    assert_eq!(body["data"]["me"]["roles"][0], "ADMIN");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_requests_graphql_appends_head_and_projection_lag() {
    let server = TestServer::start().await;
    let viewer = server.principal_with_token("scraper", &["VIEWER"]).await;
    server.ok(&viewer, "{ head { position } }", json!({})).await;
    let text = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    for series in [
        "http_requests_total{route=\"/graphql\",method=\"POST\",status=\"200\"}",
        "http_request_duration_seconds_bucket{route=\"/graphql\"",
        "graphql_operation_duration_seconds_bucket{kind=\"query\",outcome=\"ok\"",
        "graphql_operation_duration_seconds_bucket{kind=\"mutation\",outcome=\"ok\"",
        "log_append_duration_seconds_bucket{outcome=\"ok\"",
        "log_append_batch_events_bucket",
        "log_head_position",
        "projection_lag_events{projection=\"access\"}",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}:\n{text}");
    }
}
