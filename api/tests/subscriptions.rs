//! GraphQL subscriptions over WebSocket (graphql-transport-ws).

mod common;

use std::sync::Arc;

use common::{TestServer, settings, ws};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_receives_concurrent_events_in_order_without_gaps() {
    let server = Arc::new(TestServer::start().await);
    let start = server.head().await;
    // Authenticated in the connection_init payload, as browser clients must.
    let mut socket = ws::connect(&server, None).await;
    ws::init(&mut socket, json!({ "Authorization": format!("Bearer {}", server.admin_token) })).await;
    ws::subscribe(&mut socket, "all", &format!("subscription {{ events(after: {start}) {{ position type }} }}")).await;
    let mut typed = ws::connect(&server, Some(&server.admin_token)).await;
    ws::init(&mut typed, json!({})).await;
    ws::subscribe(&mut typed, "tokens", "subscription { events(types: [\"token.issued\"]) { position type } }").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let mut writers = Vec::new();
    for writer in 0..4 {
        let server = server.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..8 {
                server.principal_with_token(&format!("w{writer}-{n}"), &["VIEWER"]).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let end = server.head().await;
    assert_eq!(end - start, 64, "32 principals and 32 tokens");

    let mut seen = Vec::new();
    while seen.len() < (end - start) as usize {
        let message = ws::next_json(&mut socket).await;
        assert_eq!(message["type"], "next", "{message}");
        seen.push(message["payload"]["data"]["events"]["position"].as_u64().expect("position"));
    }
    assert_eq!(seen, (start + 1..=end).collect::<Vec<_>>(), "every event once, in order");

    let mut tokens = Vec::new();
    while tokens.len() < 32 {
        let message = ws::next_json(&mut typed).await;
        assert_eq!(message["payload"]["data"]["events"]["type"], "token.issued", "{message}");
        tokens.push(message["payload"]["data"]["events"]["position"].as_u64().expect("position"));
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn websocket_authentication_failures_close_with_the_protocol_codes() {
    let server =
        TestServer::start_with(cmdb_api::settings::ServeSettings { ws_init_timeout_ms: 300, ..settings() }).await;
    let cases = [
        (
            json!({ "type": "connection_init", "payload": { "Authorization": "Bearer cmdb_nope" } }),
            4403,
            "not a cmdb token",
        ),
        (json!({ "type": "connection_init", "payload": {} }), 4403, "missing bearer token"),
        (json!({ "type": "connection_init" }), 4403, "missing bearer token"),
        (
            json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { events { position } }" } }),
            4401,
            "connection_init first",
        ),
    ];
    for (first, code, reason) in cases {
        let mut socket = ws::connect(&server, None).await;
        ws::send(&mut socket, first.clone()).await;
        let closed = ws::next_json(&mut socket).await;
        assert_eq!(closed["type"], "closed", "{first}: {closed}");
        assert_eq!(closed["code"], code, "{first}: {closed}");
        assert!(closed["reason"].as_str().expect("reason").contains(reason), "{first}: {closed}");
    }
    // Silence: closed after ws_init_timeout_ms.
    let mut socket = ws::connect(&server, None).await;
    let closed = ws::next_json(&mut socket).await;
    assert_eq!(closed["code"], 4408, "{closed}");
    // Other token shapes clients send are understood.
    for payload in [
        json!({ "token": server.admin_token }),
        json!({ "headers": { "Authorization": format!("Bearer {}", server.admin_token) } }),
    ] {
        let mut socket = ws::connect(&server, None).await;
        ws::init(&mut socket, payload).await;
    }
}

#[tokio::test]
async fn a_subscription_over_plain_http_is_refused_clearly() {
    let server = TestServer::start().await;
    let (status, body) = server.graphql(&server.admin_token, "subscription { events { position } }", json!({})).await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].as_str().is_some(), "{body}");
}

/// A nullable variable a client leaves out over the socket gives the argument its default, as
/// over HTTP (Apollo and urql leave undefined variables out of what they send).
#[tokio::test]
async fn a_query_over_the_socket_with_a_variable_left_out_uses_the_arguments_default() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let registered = server
        .ok(
            &server.admin_token,
            "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }",
            json!({ "input": { "class": "TEAM", "name": "ops" } }),
        )
        .await;
    let id = registered["registerCi"]["ci"]["id"].clone();
    let mut socket = ws::connect(&server, Some(&server.admin_token)).await;
    ws::init(&mut socket, json!({})).await;
    let query = "query($id: ID!, $d: ImpactDirection) { at { impact(ci: $id, direction: $d) { direction count } } }";
    ws::send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": query, "variables": { "id": id } } }),
    )
    .await;
    let message = ws::next_json(&mut socket).await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["payload"]["data"]["at"]["impact"]["direction"], "DOWNSTREAM", "{message}");
}
