//! Open WebSockets follow the access state (issue 20): a revoked token, a revoked role or an
//! expired token closes the socket with 4403 within a second, its subscriptions end, and no
//! operation sent afterwards runs.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, ws};
use serde_json::json;

/// How soon after the revocation returns the socket must be closed.
const CLOSE_BOUND: Duration = Duration::from_millis(1_000);

const REGISTER: &str = "mutation { registerCi(input: { class: \"team\", name: \"after revocation\" }) { position } }";

/// Opens a socket with the token in `connection_init` and subscribes to the log.
async fn subscribed(server: &TestServer, token: &str) -> ws::Socket {
    let mut socket = ws::connect(server, None).await;
    ws::init(&mut socket, json!({ "Authorization": format!("Bearer {token}") })).await;
    let head = server.head().await;
    ws::subscribe(&mut socket, "log", &format!("subscription {{ events(after: {head}) {{ position type }} }}")).await;
    socket
}

/// Reads until the socket closes (events may arrive first); returns the close code and when.
async fn closed(socket: &mut ws::Socket) -> (u64, String, Instant) {
    loop {
        let message = ws::next_json(socket).await;
        if message["type"] == "closed" {
            let reason = message["reason"].as_str().unwrap_or("").to_owned();
            return (message["code"].as_u64().unwrap_or(0), reason, Instant::now());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_closes_its_open_socket_and_nothing_more_runs() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let token = server.principal_with_token("pipeline", &["VIEWER", "EDITOR"]).await;
    let mut socket = subscribed(&server, &token).await;
    // Works before: a mutation over the socket runs.
    ws::send(&mut socket, json!({ "id": "m1", "type": "subscribe", "payload": { "query": REGISTER } })).await;
    let before = loop {
        let message = ws::next_json(&mut socket).await;
        if message["id"] == "m1" && message["type"] == "next" {
            break message;
        }
    };
    assert!(ws::first_error(&before).is_none(), "{before}");

    let me = server.ok(&token, "{ me { tokenId } }", json!({})).await;
    let revoked_at = Instant::now();
    server
        .ok(
            &server.admin_token,
            "mutation($id: ID!) { revokeToken(tokenId: $id, reason: \"leaked\") { position } }",
            json!({ "id": me["me"]["tokenId"] }),
        )
        .await;
    let head = server.head().await;
    // A mutation sent now is not run, whatever the timing of the close.
    let _ = futures::SinkExt::send(
        &mut socket,
        tokio_tungstenite::tungstenite::Message::Text(
            json!({ "id": "m2", "type": "subscribe", "payload": { "query": REGISTER } }).to_string().into(),
        ),
    )
    .await;
    let (code, reason, at) = closed(&mut socket).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(at - revoked_at < CLOSE_BOUND + Duration::from_millis(500), "closed after {:?}", at - revoked_at);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.head().await, head, "nothing ran after the revocation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_role_closes_sockets_opened_with_it() {
    let server = TestServer::start().await;
    let token = server.principal_with_token("editor", &["VIEWER", "EDITOR"]).await;
    let mut socket = subscribed(&server, &token).await;
    let mut untouched_token_socket = {
        let other = server.principal_with_token("reader", &["VIEWER"]).await;
        subscribed(&server, &other).await
    };
    let started = Instant::now();
    server
        .ok(&server.admin_token, "mutation { revokeRole(principal: \"editor\", role: EDITOR) { position } }", json!({}))
        .await;
    let (code, reason, at) = closed(&mut socket).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("roles changed"), "{reason}");
    assert!(at - started < CLOSE_BOUND + Duration::from_millis(500), "closed after {:?}", at - started);
    // Another principal's socket stays open and keeps receiving events.
    let event = ws::next_json(&mut untouched_token_socket).await;
    assert_eq!(event["type"], "next", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_closes_its_socket_when_it_expires() {
    let server = TestServer::start().await;
    server
        .ok(
            &server.admin_token,
            "mutation { createPrincipal(input: { name: \"brief\", kind: SYSTEM, roles: [VIEWER] }) { position } }",
            json!({}),
        )
        .await;
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(2_000);
    let expires_text = expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let data = server
        .ok(
            &server.admin_token,
            "mutation($at: DateTime!) { createToken(principal: \"brief\", expiresAt: $at) { token } }",
            json!({ "at": expires_text }),
        )
        .await;
    let token = data["createToken"]["token"].as_str().expect("token").to_owned();
    let mut socket = subscribed(&server, &token).await;
    let (code, reason, at) = closed(&mut socket).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    let late = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()) - expires;
    assert!(late < chrono::Duration::milliseconds(1_000), "closed {late} after the expiry");
    let _ = at;
}
