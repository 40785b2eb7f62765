//! The configuration over GraphQL against a real server: commands, as-of views, impact,
//! history, read-your-writes, bad input (which never changes the log), subscriptions, the
//! demo and checkpoints.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use common::{TestServer, error_code, settings, ws};
use serde_json::{Value, json};

const REGISTER: &str =
    "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id name status validFrom } } }";

async fn register(server: &TestServer, input: Value) -> (String, u64) {
    let data = server.ok(&server.admin_token, REGISTER, json!({ "input": input })).await;
    let id = data["registerCi"]["ci"]["id"].as_str().expect("id").to_owned();
    (id, data["registerCi"]["position"].as_u64().expect("position"))
}

fn host(name: &str) -> Value {
    json!({
        "class": "HOST", "name": name, "environment": "PRODUCTION",
        "attributes": {"hostname": name, "ip_addresses": ["10.1.1.1"], "os": "debian-12", "cpu_cores": 8, "memory_mib": 16384}
    })
}

async fn relate(server: &TestServer, rel_type: &str, source: &str, target: &str) -> u64 {
    let data = server
        .ok(
            &server.admin_token,
            "mutation($t: RelationshipType!, $s: ID!, $d: ID!) { relate(type: $t, source: $s, target: $d) { position relationship { id type } } }",
            json!({ "t": rel_type, "s": source, "d": target }),
        )
        .await;
    data["relate"]["position"].as_u64().expect("position")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_views_impact_and_history_over_graphql() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let (team, _) = register(&server, json!({"class": "TEAM", "name": "payments team"})).await;
    let (service, _) = register(
        &server,
        json!({"class": "BUSINESS_SERVICE", "name": "Payments", "owner": team,
               "attributes": {"criticality_tier": 1, "service_hours": {"time_zone": "Europe/Berlin", "weekly": [{"days": ["mon","tue","wed","thu","fri"], "start": "08:00", "end": "18:00"}]}}}),
    )
    .await;
    let (app, _) = register(&server, json!({"class": "APPLICATION", "name": "payments-api", "version": "1.0.0"})).await;
    let (web01, _) = register(&server, host("web-01")).await;
    relate(&server, "PROVIDES", &app, &service).await;
    let before_upgrade = relate(&server, "RUNS_ON", &app, &web01).await;

    // An update, read back at once through minPosition.
    let data = server
        .ok(
            &server.admin_token,
            "mutation($id: ID!) { updateCi(id: $id, input: { version: \"2.0.0\", setAttributes: {language: \"rust\"} }) { position } }",
            json!({ "id": app }),
        )
        .await;
    let upgraded = data["updateCi"]["position"].as_u64().expect("position");
    let read = server
        .ok(
            &server.admin_token,
            "query($min: Position!, $id: ID!) { at(minPosition: $min) { position ci(id: $id) { version attribute(name: \"language\") validFrom } } }",
            json!({ "min": upgraded, "id": app }),
        )
        .await;
    assert_eq!(read["at"]["ci"]["version"], "2.0.0");
    assert_eq!(read["at"]["ci"]["attribute"], "rust");
    assert_eq!(read["at"]["ci"]["validFrom"], upgraded);

    // The past, by position: the old version, and the same relationships.
    let then = server
        .ok(
            &server.admin_token,
            "query($p: Position!, $id: ID!) { at(position: $p) { ci(id: $id) { version validTo relationships { type target { name } } } } }",
            json!({ "p": before_upgrade, "id": app }),
        )
        .await;
    assert_eq!(then["at"]["ci"]["version"], "1.0.0");
    // As of that moment the upgrade had not happened: nothing after the moment is revealed.
    assert!(then["at"]["ci"]["validTo"].is_null(), "{then}");
    assert_eq!(then["at"]["ci"]["relationships"].as_array().expect("list").len(), 2);

    // Impact: the host's failure reaches the tier-1 service through the application.
    let impact = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { impact(ci: $id, maxDepth: 6) { count truncated reached { depth ci { name } path { type ci { name } } } services { tier service { name owner { name } } } } } }",
            json!({ "id": web01 }),
        )
        .await;
    let impact = &impact["at"]["impact"];
    assert_eq!(impact["count"], 2);
    assert_eq!(impact["services"][0]["tier"], 1);
    assert_eq!(impact["services"][0]["service"]["owner"]["name"], "payments team");
    let upstream = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { impact(ci: $id, direction: UPSTREAM) { reached { ci { name } } } } }",
            json!({ "id": service }),
        )
        .await;
    assert_eq!(upstream["at"]["impact"]["reached"].as_array().expect("list").len(), 2);
    let path = server
        .ok(
            &server.admin_token,
            "query($a: ID!, $b: ID!) { at { path(from: $a, to: $b, direction: UPSTREAM) { type ci { name } } } }",
            json!({ "a": service, "b": web01 }),
        )
        .await;
    let steps: Vec<&str> =
        path["at"]["path"].as_array().expect("path").iter().map(|s| s["ci"]["name"].as_str().expect("name")).collect();
    assert_eq!(steps, vec!["payments-api", "web-01"]);

    // Life cycle, withdrawal and history.
    server
        .ok(
            &server.admin_token,
            "mutation($id: ID!) { transitionCi(id: $id, to: UNDER_CHANGE, reason: \"patching\") { position } }",
            json!({ "id": web01 }),
        )
        .await;
    server
        .ok(
            &server.admin_token,
            "mutation($id: ID!) { withdrawCi(id: $id, reason: \"replaced\") { position ci { status } } }",
            json!({ "id": web01 }),
        )
        .await;
    let history = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { history(ci: $id) { type principal recordedAt version { status } } ci(id: $id) { status relationships { id } } } }",
            json!({ "id": web01 }),
        )
        .await;
    let types: Vec<&str> = history["at"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        vec!["ci.registered", "ci.relationship_added", "ci.status_changed", "ci.relationship_removed", "ci.withdrawn"]
    );
    assert!(history["at"]["history"].as_array().expect("history").iter().all(|h| h["principal"] == "admin"));
    assert_eq!(history["at"]["ci"]["status"], "WITHDRAWN");
    assert_eq!(history["at"]["ci"]["relationships"].as_array().expect("list").len(), 0);
    // A filtered listing and a lookup by name.
    let listing = server
        .ok(&server.admin_token, "{ at { cis(filter: {classes: [\"application\", \"host\"], includeWithdrawn: true}) { nodes { name } pageInfo { hasNextPage } } ci(class: \"application\", name: \"PAYMENTS-API\") { name } } }", json!({}))
        .await;
    assert_eq!(listing["at"]["cis"]["nodes"].as_array().expect("nodes").len(), 2);
    // Relay paging: one at a time, following the cursors.
    let first = server
        .ok(&server.admin_token, "{ at { cis(first: 1, filter: {includeWithdrawn: true}) { edges { cursor node { name } } pageInfo { hasNextPage endCursor } } } }", json!({}))
        .await;
    let cursor = first["at"]["cis"]["pageInfo"]["endCursor"].as_str().expect("cursor").to_owned();
    assert_eq!(first["at"]["cis"]["edges"][0]["cursor"], cursor.as_str());
    assert_eq!(first["at"]["cis"]["pageInfo"]["hasNextPage"], true);
    let second = server
        .ok(&server.admin_token, "query($a: String!) { at { cis(first: 1, after: $a, filter: {includeWithdrawn: true}) { edges { node { name } } pageInfo { hasPreviousPage } } } }", json!({"a": cursor}))
        .await;
    assert_ne!(second["at"]["cis"]["edges"][0]["node"]["name"], first["at"]["cis"]["edges"][0]["node"]["name"]);
    assert_eq!(second["at"]["cis"]["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(listing["at"]["ci"]["name"], "payments-api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_appends_nothing() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let (team, _) = register(&server, json!({"class": "TEAM", "name": "ops"})).await;
    let (web01, _) = register(&server, host("web-01")).await;
    let (document, _) = register(&server, json!({"class": "DOCUMENT", "name": "runbook", "attributes": {"document_type": "runbook", "uri": "https://wiki.example.com/r"}})).await;
    let (gone, _) = register(&server, host("old-01")).await;
    server
        .ok(&server.admin_token, "mutation($id: ID!) { withdrawCi(id: $id) { position } }", json!({ "id": gone }))
        .await;
    let head = server.head().await;
    let unknown_ci = "01935b6a-0000-7000-8000-000000000000";
    let mut no_memory = host("web-02");
    no_memory["attributes"].as_object_mut().expect("object").remove("memory_mib");
    let mut mistyped = host("web-03");
    mistyped["attributes"]["cpu_cores"] = json!("eight");
    let cases: Vec<(&str, Value, &str)> = vec![
        (REGISTER, json!({"input": {"class": "MAINFRAME", "name": "x"}}), ""),
        (REGISTER, json!({"input": no_memory}), "BAD_USER_INPUT"),
        (REGISTER, json!({"input": mistyped}), "BAD_USER_INPUT"),
        (REGISTER, json!({"input": host("web-01")}), "ALREADY_EXISTS"),
        (REGISTER, json!({"input": {"class": "TEAM", "name": "x", "attributes": {"colour": "red"}}}), "BAD_USER_INPUT"),
        (REGISTER, json!({"input": {"class": "APPLICATION", "name": "x", "owner": web01}}), "BAD_USER_INPUT"),
        (REGISTER, json!({"input": {"class": "APPLICATION", "name": "x", "owner": "not-an-id"}}), "BAD_USER_INPUT"),
        (
            "mutation($id: ID!) { updateCi(id: $id, input: { version: \"2\" }) { position } }",
            json!({"id": gone}),
            "FAILED_PRECONDITION",
        ),
        (
            "mutation($id: ID!) { updateCi(id: $id, input: { version: \"2\" }) { position } }",
            json!({"id": unknown_ci}),
            "NOT_FOUND",
        ),
        (
            "mutation($id: ID!) { transitionCi(id: $id, to: ORDERED) { position } }",
            json!({"id": web01}),
            "FAILED_PRECONDITION",
        ),
        (
            "mutation($a: ID!, $b: ID!) { relate(type: RUNS_ON, source: $a, target: $b) { position } }",
            json!({"a": web01, "b": document}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($a: ID!) { relate(type: DEPENDS_ON, source: $a, target: $a) { position } }",
            json!({"a": web01}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation($a: ID!, $b: ID!) { relate(type: DEPENDS_ON, source: $a, target: $b) { position } }",
            json!({"a": web01, "b": gone}),
            "FAILED_PRECONDITION",
        ),
        ("mutation($id: ID!) { unrelate(id: $id) { position } }", json!({"id": unknown_ci}), "NOT_FOUND"),
        ("query { at(time: \"yesterday\") { position } }", json!({}), ""),
        ("query { at(position: 1, time: \"2030-01-01T00:00:00Z\") { position } }", json!({}), "BAD_USER_INPUT"),
        ("query { at(position: 99999) { position } }", json!({}), "BAD_USER_INPUT"),
        ("query($id: ID!) { at { impact(ci: $id, maxDepth: 99) { count } } }", json!({"id": web01}), "LIMIT_EXCEEDED"),
        ("query($id: ID!) { at { impact(ci: $id) { count } } }", json!({"id": unknown_ci}), "NOT_FOUND"),
    ];
    for (query, variables, code) in cases {
        let (status, body) = server.graphql(&server.admin_token, query, variables.clone()).await;
        assert_eq!(status, 200);
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.len() > 10, "{query} {variables}: no clear error: {body}");
        if !code.is_empty() {
            assert_eq!(error_code(&body), code, "{query} {variables}: {body}");
        }
    }
    // Before the first event is not an error: the empty estate at position 0.
    let before_log =
        server.ok(&server.admin_token, "query { at(time: \"1999-01-01T00:00:00Z\") { position } }", json!({})).await;
    assert_eq!(before_log["at"]["position"], 0);
    let editor = server.principal_with_token("viewer-only", &["VIEWER"]).await;
    let (_, body) = server.graphql(&editor, REGISTER, json!({"input": host("web-09")})).await;
    assert_eq!(error_code(&body), "FORBIDDEN");
    // Two principals plus their token were made; nothing else was appended.
    assert_eq!(server.head().await, head + 2, "refused commands appended nothing");
    let _ = team;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_changes_are_streamed_filtered_by_class() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let mut socket = ws::connect(&server, Some(&server.admin_token)).await;
    ws::init(&mut socket, json!({})).await;
    ws::subscribe(&mut socket, "hosts", "subscription { ciChanges(classes: [\"host\"]) { position type class ciId } }")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    register(&server, json!({"class": "TEAM", "name": "not a host"})).await;
    let (web01, position) = register(&server, host("web-01")).await;
    let message = ws::next_json(&mut socket).await;
    let change = &message["payload"]["data"]["ciChanges"];
    assert_eq!(change["class"], "host", "{message}");
    assert_eq!(change["ciId"], web01.as_str());
    assert_eq!(change["type"], "ci.registered");
    assert_eq!(change["position"], position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_loads_once_restarts_from_a_checkpoint_and_refuses_other_logs() {
    let dir = tempfile::tempdir().expect("dir");
    let demo = cmdb_api::settings::ServeSettings { demo: true, ..settings() };
    let server = cmdb_api::server::Server::start(dir.path(), demo.clone(), Default::default()).await.expect("start");
    let token = server.bootstrap_token().expect("token").to_owned();
    let base = format!("http://{}", server.local_addr());
    let client = reqwest::Client::new();
    let query = |q: &'static str| {
        let client = client.clone();
        let url = format!("{base}/graphql");
        let token = token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"query": q}))
                .send()
                .await
                .expect("post")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let now =
        query("{ at { position cis(filter: {classes: [\"business_service\"]}, first: 100) { nodes { id } } } }").await;
    assert!(now["data"]["at"]["cis"]["nodes"].as_array().expect("nodes").len() >= 20, "{now}");
    let apps_now =
        query("{ at { cis(filter: {classes: [\"application\"]}, first: 1000) { nodes { id version } } } }").await;
    let month_ago = query("{ head { recordedAt } }").await;
    let head_time =
        cmdb_core::Timestamp::parse_rfc3339(month_ago["data"]["head"]["recordedAt"].as_str().expect("time"))
            .expect("time");
    let then_time = head_time.saturating_add_micros(-30 * 86_400_000_000).to_rfc3339();
    let body = client
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "query($t: DateTime!) { at(time: $t) { position cis(filter: {classes: [\"application\"]}, first: 1000) { nodes { id version } } } }", "variables": {"t": then_time}}))
        .send()
        .await
        .expect("post")
        .json::<Value>()
        .await
        .expect("json");
    assert_ne!(body["data"]["at"]["cis"], apps_now["data"]["at"]["cis"], "a month back differs from now");
    server.shutdown().await;
    assert!(dir.path().join("projections/graph.checkpoint").exists(), "a checkpoint at shutdown");

    // Again on the same directory: no second load, the graph from its checkpoint.
    let server = cmdb_api::server::Server::start(dir.path(), demo.clone(), Default::default()).await.expect("restart");
    assert!(server.bootstrap_token().is_none());
    server.shutdown().await;

    // Any other non-empty directory is refused.
    let other = TestServer::start().await;
    let mut other = other;
    other.shutdown().await;
    let refused = cmdb_api::server::Server::start(&other.data_dir(), demo, Default::default()).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("--demo needs an empty data directory"), "{message}");
}
