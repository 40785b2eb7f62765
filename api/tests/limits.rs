//! Every server limit, at its bound and one past it, over real HTTP and WebSocket.

mod common;

use common::{TestServer, error_code, settings, ws};
use serde_json::json;

#[tokio::test]
async fn request_body_size_is_bounded() {
    let bound = 4096;
    let server =
        TestServer::start_with(cmdb_api::settings::ServeSettings { max_request_body_bytes: bound, ..settings() }).await;
    let body_of = |size: usize| {
        let skeleton = json!({ "query": "{ head { position } }" }).to_string();
        let padding = size - skeleton.len();
        format!("{{\"query\": \"{{ head {{ position }} }}{}\"}}", " ".repeat(padding - 1))
    };
    assert_eq!(body_of(bound).len(), bound);
    let at = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .body(body_of(bound))
        .send()
        .await
        .expect("request");
    assert_eq!(at.status().as_u16(), 200);
    let past = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .body(body_of(bound + 1))
        .send()
        .await
        .expect("request");
    assert_eq!(past.status().as_u16(), 413);
    let body: serde_json::Value = past.json().await.expect("json");
    assert!(
        body["errors"][0]["message"].as_str().expect("message").contains("max_request_body_bytes (4096 bytes)"),
        "{body}"
    );
}

#[tokio::test]
async fn query_depth_is_bounded() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { max_query_depth: 4, ..settings() }).await;
    // events > edges > node > position: depth 4.
    let at = "{ events(first: 1) { edges { node { position } } } }";
    let past = "{ events(first: 1) { edges { node { metadata { principal } } } } }";
    server.ok(&server.admin_token, at, json!({})).await;
    let (status, body) = server.graphql(&server.admin_token, past, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["message"], "Query is nested too deep: the limit max_query_depth is 4.", "{body}");
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED");
    assert!(body["data"].is_null());
}

#[tokio::test]
async fn query_complexity_is_bounded() {
    let server =
        TestServer::start_with(cmdb_api::settings::ServeSettings { max_query_complexity: 100, ..settings() }).await;
    // The page costs 1, and each item its selection (edges + cursor = 2): 49 items cost 99.
    let query = |first: u32| format!("{{ events(first: {first}) {{ edges {{ cursor }} }} }}");
    server.ok(&server.admin_token, &query(49), json!({})).await;
    let (_, body) = server.graphql(&server.admin_token, &query(50), json!({})).await;
    assert_eq!(body["errors"][0]["message"], "Query is too complex: the limit max_query_complexity is 100.", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "max_query_complexity");
    assert_eq!(body["errors"][0]["extensions"]["value"], 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_and_filtered_scans_are_bounded() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        max_page_size: 5,
        max_scan_events: 8,
        ..settings()
    })
    .await;
    for n in 0..10 {
        server.principal_with_token(&format!("p{n}"), &["VIEWER"]).await;
    }
    // 2 bootstrap events + 2 per principal = 22 events.
    async fn page(server: &TestServer, first: i64, after: u64, types: Option<Vec<&str>>) -> serde_json::Value {
        server
                .graphql(
                    &server.admin_token,
                    "query($first: Int, $after: Position, $types: [String!]) { events(first: $first, after: $after, types: $types) { edges { node { position type } } pageInfo { hasNextPage endCursor } } }",
                    json!({ "first": first, "after": after, "types": types }),
                )
                .await
                .1
    }
    let at = page(&server, 5, 0, None).await;
    assert_eq!(at["data"]["events"]["edges"].as_array().expect("edges").len(), 5);
    assert_eq!(at["data"]["events"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(at["data"]["events"]["pageInfo"]["endCursor"], "5");
    let past = page(&server, 6, 0, None).await;
    assert_eq!(error_code(&past), "LIMIT_EXCEEDED");
    assert_eq!(past["errors"][0]["extensions"]["limit"], "max_page_size");
    assert_eq!(past["errors"][0]["extensions"]["bound"], 5);
    assert_eq!(error_code(&page(&server, 0, 0, None).await), "BAD_USER_INPUT");

    // A filtered page scans at most 8 events, then hands back a cursor to resume from.
    let filtered = page(&server, 5, 0, Some(vec!["token.issued"])).await;
    let events = &filtered["data"]["events"];
    let positions: Vec<u64> =
        events["edges"].as_array().expect("edges").iter().map(|e| e["node"]["position"].as_u64().expect("p")).collect();
    assert_eq!(positions, vec![2, 4, 6, 8]);
    assert_eq!(events["pageInfo"]["hasNextPage"], true);
    assert_eq!(events["pageInfo"]["endCursor"], "8");
    // Following the cursors finds every token event exactly once.
    let mut after = 0u64;
    let mut all = Vec::new();
    loop {
        let body = page(&server, 5, after, Some(vec!["token.issued"])).await;
        let events = &body["data"]["events"];
        all.extend(
            events["edges"].as_array().expect("edges").iter().map(|e| e["node"]["position"].as_u64().expect("p")),
        );
        if events["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = events["pageInfo"]["endCursor"].as_str().expect("cursor").parse().expect("number");
    }
    assert_eq!(all, (1..=11).map(|n| n * 2).collect::<Vec<_>>());
    let bad_type = page(&server, 5, 0, Some(vec!["not a type"])).await;
    assert_eq!(error_code(&bad_type), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_bounded() {
    let server =
        TestServer::start_with(cmdb_api::settings::ServeSettings { max_subscriptions_per_connection: 2, ..settings() })
            .await;
    let mut socket = ws::connect(&server, Some(&server.admin_token)).await;
    ws::init(&mut socket, json!({})).await;
    ws::subscribe(&mut socket, "a", "subscription { events { position } }").await;
    ws::subscribe(&mut socket, "b", "subscription { events { position } }").await;
    ws::subscribe(&mut socket, "c", "subscription { events { position } }").await;
    // The three are started concurrently: whichever starts last is refused.
    let refused = ws::next_json(&mut socket).await;
    let refused_id = refused["id"].as_str().expect("id").to_owned();
    let error = ws::first_error(&refused).expect("an error");
    assert_eq!(error["extensions"]["code"], "LIMIT_EXCEEDED");
    assert_eq!(error["extensions"]["limit"], "max_subscriptions_per_connection");
    // Completing one of the two running frees its slot.
    let running = ["a", "b", "c"].into_iter().find(|id| *id != refused_id).expect("one running");
    ws::send(&mut socket, json!({ "id": running, "type": "complete" })).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    ws::subscribe(&mut socket, "d", "subscription { events(after: 0) { position } }").await;
    let mut accepted = ws::next_json(&mut socket).await;
    while accepted["type"] == "complete" {
        accepted = ws::next_json(&mut socket).await;
    }
    assert_eq!(accepted["type"], "next", "{accepted}");
    assert_eq!(accepted["id"], "d");
    assert!(ws::first_error(&accepted).is_none(), "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_and_only_authenticated_ones_fill_the_server_with_a_503() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { max_connections: 3, ..settings() }).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    // Three idle sockets without a token hold every slot; a newcomer evicts the oldest.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&address).await.expect("connect"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let response = reqwest::Client::new().get(server.url("/healthz")).send().await.expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), idle[0].read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the oldest idle socket was closed: {read:?}");
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Connections that showed a token are never evicted: three of them fill the server.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
        let answer = client
            .post(server.url("/graphql"))
            .bearer_auth(&server.admin_token)
            .json(&json!({ "query": "{ head { position } }" }))
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status().as_u16(), 200);
        clients.push(client);
    }
    let response = reqwest::Client::new().get(server.url("/healthz")).send().await.expect("an answer, not a reset");
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "TOO_MANY_CONNECTIONS");
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("max_connections"));
    // Releasing one makes room.
    clients.pop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let response = reqwest::Client::new().get(server.url("/healthz")).send().await.expect("request");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn invalid_settings_are_refused_at_start_with_the_setting_named() {
    let dir = tempfile::tempdir().expect("dir");
    let result = cmdb_api::server::Server::start(
        dir.path(),
        cmdb_api::settings::ServeSettings { max_page_size: 0, ..settings() },
        Default::default(),
    )
    .await;
    let error = result.err().expect("refused");
    assert!(error.to_string().contains("max_page_size is 0"), "{error}");
    assert!(!dir.path().join("events.sqlite").exists(), "nothing was created");
}

/// Every list the cost model bounds by its domain (`LIST_BOUNDS`) is a list field of the served
/// schema: a misspelt entry would silently cost the page maximum instead.
#[tokio::test]
async fn every_domain_bound_names_a_list_of_the_schema() {
    let server = TestServer::start().await;
    for (type_name, field, _) in cmdb_api::server::graphql::cost::LIST_BOUNDS {
        let data = server
            .ok(
                &server.admin_token,
                "query($t: String!) { __type(name: $t) { fields { name type { kind ofType { kind ofType { kind } } } } } }",
                json!({ "t": type_name }),
            )
            .await;
        let fields = data["__type"]["fields"].as_array().unwrap_or_else(|| panic!("{type_name} is a type: {data}"));
        let found = fields.iter().find(|f| f["name"] == json!(field)).unwrap_or_else(|| panic!("{type_name}.{field}"));
        let mut kind = &found["type"];
        while kind["kind"] == json!("NON_NULL") {
            kind = &kind["ofType"];
        }
        assert_eq!(kind["kind"], json!("LIST"), "{type_name}.{field} is a list");
    }
}

/// A diff entry's changed `fields` cost what a CI can have (`MAX_FIELD_CHANGES`), not the page
/// maximum: a day's diff with them, a page of 10,000 entries, is admitted at the complexity
/// the side-by-side comparison with PostgreSQL serves with (it was refused at 300 M units), and
/// one more entry per page than the bound allows is still refused.
#[tokio::test]
async fn a_diff_with_its_changed_fields_costs_what_a_ci_can_have() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        demo: true,
        max_page_size: 10_000,
        max_query_complexity: 10_000_000,
        ..settings()
    })
    .await;
    let head = server.head().await;
    let query = "query($n: Int!, $to: Position!) { diff(from: { position: 1 }, to: { position: $to }) {
        cis(first: $n) { nodes { id kind fields { field before after } } pageInfo { hasNextPage endCursor } }
        relationships(first: $n) { nodes { kind relationship { id type sourceId targetId } } pageInfo { hasNextPage } } } }";
    let data = server.ok(&server.admin_token, query, json!({ "n": 10_000, "to": head })).await;
    let entries = data["diff"]["cis"]["nodes"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["fields"].as_array().is_some_and(|f| !f.is_empty())), "fields are listed");
    // The bound is what is charged: three such pages cost 12 M units, past the limit (at the
    // page maximum they would cost 900 M). Each entry: nodes, id, kind, and the fields list
    // (one, plus three leaves for each field it can hold).
    let too_many = "query($to: Position!) { diff(from: { position: 1 }, to: { position: $to }) {
        a: cis(first: 10000) { nodes { id kind fields { field before after } } }
        b: cis(first: 10000) { nodes { id kind fields { field before after } } }
        c: cis(first: 10000) { nodes { id kind fields { field before after } } } } }";
    let per_entry = 3 + (1 + 3 * cmdb_projections::diff::MAX_FIELD_CHANGES as u64);
    let (_, body) = server.graphql(&server.admin_token, too_many, json!({ "to": head })).await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["limit"], "max_query_complexity");
    assert_eq!(body["errors"][0]["extensions"]["value"], json!(1 + 3 * (1 + 10_000 * per_entry)), "{body}");
    assert_eq!(server.head().await, head, "reads record nothing");
}
