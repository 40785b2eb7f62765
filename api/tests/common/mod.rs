//! Shared helpers: a real server on 127.0.0.1:0 in a temporary data directory, and a client.
#![allow(dead_code)]

pub mod browser;
pub mod pg;
pub mod ws;

use std::path::PathBuf;

use cmdb_api::server::{Server, StartOptions};
use cmdb_api::settings::ServeSettings;
use serde_json::{Value, json};

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

/// Test settings: any port; checkpoints are signed at start when due (the demo's history) but
/// not on a schedule, so that no test's "the log is unchanged" races a checkpoint record
/// (`evidence.rs` tests the schedule with its own settings).
pub fn settings() -> ServeSettings {
    ServeSettings {
        listen: "127.0.0.1:0".parse().expect("address"),
        sign_every_ms: 3_600_000,
        sign_every_events: 10_000_000,
        ..ServeSettings::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(settings()).await
    }

    pub async fn start_with(settings: ServeSettings) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Server::start(dir.path(), settings, StartOptions::default()).await.expect("server starts");
        let admin_token = server.bootstrap_token().expect("a new data directory bootstraps a token").to_owned();
        let base = format!("http://{}", server.local_addr());
        TestServer { server: Some(server), base, admin_token, dir, client: reqwest::Client::new() }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http://", "ws://", 1))
    }

    /// POST /graphql with a token; returns (HTTP status, body as JSON).
    pub async fn graphql(&self, token: &str, query: &str, variables: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// A GraphQL query that must succeed without errors; returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.graphql(token, query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Creates a principal with roles and returns a token for it.
    pub async fn principal_with_token(&self, name: &str, roles: &[&str]) -> String {
        self.ok(
            &self.admin_token,
            "mutation($input: CreatePrincipalInput!) { createPrincipal(input: $input) { position } }",
            json!({ "input": { "name": name, "kind": "SYSTEM", "roles": roles } }),
        )
        .await;
        let data = self
            .ok(
                &self.admin_token,
                "mutation($p: String!) { createToken(principal: $p) { token } }",
                json!({ "p": name }),
            )
            .await;
        data["createToken"]["token"].as_str().expect("token").to_owned()
    }

    /// Declares every class uncontrolled, as an admin: for tests of rules other than change
    /// control (CM-3 has its own tests, against controlled classes).
    pub async fn uncontrolled(&self) {
        let data = self.ok(&self.admin_token, "{ classes { name controlled } }", json!({})).await;
        for class in data["classes"].as_array().expect("classes") {
            if class["controlled"] == json!(true) {
                self.ok(
                    &self.admin_token,
                    "mutation($c: String!) { declareClassControl(class: $c, controlled: false, reason: \"tests of other rules\") { position } }",
                    json!({ "c": class["name"] }),
                )
                .await;
            }
        }
    }

    pub async fn head(&self) -> u64 {
        let data = self.ok(&self.admin_token, "{ head { position } }", json!({})).await;
        data["head"]["position"].as_u64().expect("position")
    }

    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Runs the `cmdb` binary built for these tests.
pub fn cmdb(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cmdb")).args(args).output().expect("run cmdb")
}

/// Process output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The RFC 6901 pointer of the first string equal to `value` in `json` (`at` is where `json` is).
pub fn pointer_to(json: &Value, value: &str, at: String) -> Option<String> {
    match json {
        Value::String(s) if s == value => Some(at),
        Value::Object(map) => map.iter().find_map(|(k, v)| pointer_to(v, value, format!("{at}/{k}"))),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| pointer_to(v, value, format!("{at}/{i}"))),
        _ => None,
    }
}

/// The first error's `extensions.code`.
pub fn error_code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("").to_owned()
}
