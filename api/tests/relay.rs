//! GraphQL conventions clients rely on: Relay's `node(id:)` across CIs, changes and releases,
//! backward paging (`last`/`before`) equal to forward paging reversed, and enum values written
//! the same in diff entries as in the fields they come from.

mod common;

use common::{TestServer, error_code, settings};
use serde_json::{Value, json};

const NODE: &str = "query($id: ID!) { node(id: $id) { __typename id ... on Ci { name } ... on Change { number } ... on Release { number } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_finds_cis_changes_and_releases_by_their_global_ids() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let token = server.admin_token.clone();
    let ids = server
        .ok(
            &token,
            r#"{ at { cis(first: 1) { nodes { id name } } change(id: "CHG-000001") { id number } release(id: "REL-000001") { id number } } }"#,
            json!({}),
        )
        .await;
    let at = &ids["at"];
    for (id, typename, field, value) in [
        (&at["cis"]["nodes"][0]["id"], "Ci", "name", &at["cis"]["nodes"][0]["name"]),
        (&at["change"]["id"], "Change", "number", &at["change"]["number"]),
        (&at["release"]["id"], "Release", "number", &at["release"]["number"]),
    ] {
        let data = server.ok(&token, NODE, json!({ "id": id })).await;
        assert_eq!(data["node"]["__typename"], typename, "{data}");
        assert_eq!(&data["node"]["id"], id);
        assert_eq!(&data["node"][field], value, "{data}");
    }
    // Unknown or malformed ids: null, like every single lookup.
    for id in ["0196a1d2-0000-7000-8000-000000000001", "not-an-id"] {
        let data = server.ok(&token, NODE, json!({ "id": id })).await;
        assert!(data["node"].is_null(), "{id}: {data}");
    }
    // As of a moment: the CI did not exist at position 1.
    let then = server
        .ok(
            &token,
            "query($id: ID!) { at(position: 1) { node(id: $id) { id } } }",
            json!({ "id": at["cis"]["nodes"][0]["id"] }),
        )
        .await;
    assert!(then["at"]["node"].is_null(), "{then}");
}

async fn page(server: &TestServer, args: &str) -> Value {
    let query = format!(
        "{{ at {{ cis(filter: {{classes: [\"host\"]}}, {args}) {{ nodes {{ id }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }} }}"
    );
    server.ok(&server.admin_token, &query, json!({})).await["at"]["cis"].clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["nodes"].as_array().expect("nodes").iter().map(|n| n["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_backward_gives_the_forward_pages_in_reverse() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let mut forward = Vec::new();
    let mut args = "first: 7".to_owned();
    loop {
        let page = page(&server, &args).await;
        forward.extend(ids(&page));
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        args = format!("first: 7, after: \"{}\"", page["pageInfo"]["endCursor"].as_str().expect("cursor"));
    }
    assert!(forward.len() > 14, "enough hosts for several pages: {}", forward.len());
    let mut backward: Vec<String> = Vec::new();
    let mut args = "last: 7".to_owned();
    let mut first_page = true;
    loop {
        let page = page(&server, &args).await;
        if first_page {
            assert_eq!(page["pageInfo"]["hasNextPage"], json!(false), "the last page has nothing after it");
            first_page = false;
        }
        let mut ids = ids(&page);
        ids.extend(backward);
        backward = ids;
        if page["pageInfo"]["hasPreviousPage"] != json!(true) {
            break;
        }
        args = format!("last: 7, before: \"{}\"", page["pageInfo"]["startCursor"].as_str().expect("cursor"));
    }
    assert_eq!(backward, forward);
    // One direction at a time.
    let (_, body) =
        server.graphql(&server.admin_token, "{ at { cis(first: 2, last: 2) { nodes { id } } } }", json!({})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_entries_write_enum_values_as_the_fields_do() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let register = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id status } } }";
    let data = server
        .ok(
            &server.admin_token,
            register,
            json!({ "input": { "class": "HOST", "name": "web-1", "status": "PLANNED", "environment": "PRODUCTION",
                "attributes": { "hostname": "web-1", "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 2, "memory_mib": 2048 } } }),
        )
        .await;
    let id = data["registerCi"]["ci"]["id"].clone();
    let from = data["registerCi"]["position"].clone();
    let moved = server
        .ok(
            &server.admin_token,
            "mutation($id: ID!) { transitionCi(id: $id, to: ORDERED) { position ci { status } } }",
            json!({ "id": id }),
        )
        .await;
    let status = moved["transitionCi"]["ci"]["status"].clone();
    let to = moved["transitionCi"]["position"].clone();
    let diff = server
        .ok(
            &server.admin_token,
            "query($from: Position!, $to: Position!) { diff(from: {position: $from}, to: {position: $to}) { cis { nodes { fields { field before after } } } } }",
            json!({ "from": from, "to": to }),
        )
        .await;
    let fields = diff["diff"]["cis"]["nodes"][0]["fields"].as_array().expect("fields").clone();
    let change = fields.iter().find(|f| f["field"] == "status").expect("a status change");
    assert_eq!(change["before"], "PLANNED", "{change}");
    assert_eq!(change["after"], status, "as Ci.status writes it: {change}");
}

/// Every node id of a connection field inside `at`, paged forward with `first`, then
/// backward with `last`: the two must agree.
async fn both_ways(server: &TestServer, field: &str, args: &str) -> (Vec<String>, Vec<String>) {
    let read = |paging: String| {
        let extra = if args.is_empty() { paging } else { format!("{args}, {paging}") };
        format!(
            "{{ at {{ {field}({extra}) {{ totalCount edges {{ cursor node {{ id }} }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }} }}"
        )
    };
    let mut forward = Vec::new();
    let mut paging = "first: 9".to_owned();
    loop {
        let page = server.ok(&server.admin_token, &read(paging), json!({})).await["at"][field].clone();
        forward.extend(
            page["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].as_str().expect("id").to_owned()),
        );
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            assert_eq!(page["totalCount"], json!(forward.len()), "{field}: totalCount");
            break;
        }
        paging = format!("first: 9, after: \"{}\"", page["pageInfo"]["endCursor"].as_str().expect("cursor"));
    }
    let mut backward: Vec<String> = Vec::new();
    let mut paging = "last: 9".to_owned();
    loop {
        let page = server.ok(&server.admin_token, &read(paging), json!({})).await["at"][field].clone();
        let mut ids: Vec<String> = page["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["id"].as_str().expect("id").to_owned())
            .collect();
        ids.extend(backward);
        backward = ids;
        if page["pageInfo"]["hasPreviousPage"] != json!(true) {
            break;
        }
        paging = format!("last: 9, before: \"{}\"", page["pageInfo"]["startCursor"].as_str().expect("cursor"));
    }
    (forward, backward)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_relationships_are_relay_connections_both_ways() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let (forward, backward) = both_ways(&server, "changes", "").await;
    assert!(forward.len() > 20, "{}", forward.len());
    assert_eq!(forward, backward, "changes");
    let (forward, backward) = both_ways(&server, "relationships", "types: [RUNS_ON]").await;
    assert!(forward.len() > 20, "{}", forward.len());
    assert_eq!(forward, backward, "relationships");
    // A cursor stays valid as the list grows at the head: a new change does not move it.
    let page = server
        .ok(&server.admin_token, "{ at { changes(first: 3) { pageInfo { endCursor } nodes { id } } } }", json!({}))
        .await;
    let cursor = page["at"]["changes"]["pageInfo"]["endCursor"].as_str().expect("cursor").to_owned();
    let query = format!("{{ at {{ changes(first: 3, after: \"{cursor}\") {{ nodes {{ id }} }} }} }}");
    let before = server.ok(&server.admin_token, &query, json!({})).await["at"]["changes"]["nodes"].clone();
    server
        .ok(
            &server.admin_token,
            "mutation { draftChange(input: {type: NORMAL, title: \"one more\"}) { position } }",
            json!({}),
        )
        .await;
    let after = server.ok(&server.admin_token, &query, json!({})).await["at"]["changes"]["nodes"].clone();
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_edits_take_one_input_object() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let token = server.admin_token.clone();
    let register = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }";
    let host = server
        .ok(&token, register, json!({ "input": { "class": "HOST", "name": "web-1", "attributes": { "hostname": "web-1", "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 2, "memory_mib": 2048 } } }))
        .await["registerCi"]["ci"]["id"]
        .clone();
    let app = server
        .ok(&token, register, json!({ "input": { "class": "APPLICATION", "name": "shop", "version": "1" } }))
        .await["registerCi"]["ci"]["id"]
        .clone();
    let related = server
        .ok(
            &token,
            "mutation($input: RelateInput!) { relate(input: $input) { relationship { id type } } }",
            json!({ "input": { "type": "RUNS_ON", "source": app, "target": host } }),
        )
        .await;
    let rel = related["relate"]["relationship"]["id"].clone();
    assert_eq!(related["relate"]["relationship"]["type"], "RUNS_ON");
    let moved = server
        .ok(
            &token,
            "mutation($input: TransitionCiInput!) { transitionCi(input: $input) { ci { status } } }",
            json!({ "input": { "id": host, "to": "UNDER_CHANGE", "reason": "patching" } }),
        )
        .await;
    assert_eq!(moved["transitionCi"]["ci"]["status"], "UNDER_CHANGE");
    server
        .ok(
            &token,
            "mutation($input: EndInput!) { unrelate(input: $input) { position } }",
            json!({ "input": { "id": rel, "reason": "moved" } }),
        )
        .await;
    // Both ways at once, half of the old way, or nothing: refused, nothing written.
    let head = server.head().await;
    for (query, variables) in [
        (
            "mutation($id: ID!, $input: EndInput!) { withdrawCi(id: $id, input: $input) { position } }",
            json!({ "id": app, "input": { "id": app } }),
        ),
        ("mutation($id: ID!) { transitionCi(id: $id) { position } }", json!({ "id": app })),
        ("mutation { relate { position } }", json!({})),
    ] {
        let (_, body) = server.graphql(&token, query, variables).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{query}: {body}");
    }
    assert_eq!(server.head().await, head);
    let withdrawn = server
        .ok(
            &token,
            "mutation($input: EndInput!) { withdrawCi(input: $input) { ci { status } } }",
            json!({ "input": { "id": app, "reason": "retired" } }),
        )
        .await;
    assert_eq!(withdrawn["withdrawCi"]["ci"]["status"], "WITHDRAWN");
}
