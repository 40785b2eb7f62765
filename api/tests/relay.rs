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

/// Every page of `events` walked with `args` then the cursor (`after` from `endCursor`
/// forward, `before` from `startCursor` backward), positions in log order.
async fn walk_events(server: &TestServer, first_args: &str, forward: bool) -> Vec<u64> {
    let mut all: Vec<u64> = Vec::new();
    let mut args = first_args.to_owned();
    for _ in 0..10_000 {
        let query = format!(
            "{{ events({args}) {{ edges {{ node {{ position }} }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }}"
        );
        let data = server.ok(&server.admin_token, &query, json!({})).await;
        let page = &data["events"];
        let positions: Vec<u64> = page["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["position"].as_u64().expect("position"))
            .collect();
        let info = &page["pageInfo"];
        if forward {
            all.extend(positions);
            if info["hasNextPage"] != json!(true) {
                return all;
            }
            let cursor = info["endCursor"].as_str().expect("end cursor");
            args = format!("{}, after: \"{cursor}\"", first_args.split(", after").next().unwrap_or(first_args));
        } else {
            let mut page_positions = positions;
            page_positions.extend(all);
            all = page_positions;
            if info["hasPreviousPage"] != json!(true) {
                return all;
            }
            let cursor = info["startCursor"].as_str().expect("start cursor");
            args = format!("{}, before: \"{cursor}\"", first_args.split(", before").next().unwrap_or(first_args));
        }
    }
    panic!("the walk did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_backward_as_they_page_forward_filtered_or_not() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let head = server.head().await;
    let forward = walk_events(&server, "first: 500", true).await;
    assert_eq!(forward, (1..=head).collect::<Vec<_>>(), "forward: every position once");
    let backward = walk_events(&server, "last: 500", false).await;
    assert_eq!(backward, forward, "backward: the same positions");
    for filter in ["types: [\"ci.updated\"]", "stream: \"access\""] {
        let forward = walk_events(&server, &format!("first: 37, {filter}"), true).await;
        let backward = walk_events(&server, &format!("last: 37, {filter}"), false).await;
        assert!(!forward.is_empty(), "{filter} matches some events");
        assert_eq!(backward, forward, "{filter}");
    }
    // The last 3 before a position, and the refusals.
    let data = server
        .ok(
            &server.admin_token,
            "{ events(last: 3, before: 10) { edges { node { position } } pageInfo { hasNextPage hasPreviousPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["events"]["edges"],
        json!([{"node": {"position": 7}}, {"node": {"position": 8}}, {"node": {"position": 9}}])
    );
    assert_eq!(data["events"]["pageInfo"], json!({"hasNextPage": true, "hasPreviousPage": true}));
    for bad in ["first: 2, last: 2", "after: 3, before: 9", "last: 0"] {
        let (_, body) = server
            .graphql(&server.admin_token, &format!("{{ events({bad}) {{ edges {{ cursor }} }} }}"), json!({}))
            .await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_takes_one_input_object_and_loose_arguments_are_deprecated() {
    let server = TestServer::start().await;
    let schema = server
        .ok(
            &server.admin_token,
            "{ __schema { mutationType { fields { name args(includeDeprecated: true) { name isDeprecated } } } } }",
            json!({}),
        )
        .await;
    let mut offenders = Vec::new();
    for field in schema["__schema"]["mutationType"]["fields"].as_array().expect("fields") {
        let name = field["name"].as_str().expect("name");
        let args = field["args"].as_array().expect("args");
        let has_input = args.iter().any(|a| a["name"] == "input");
        let loose: Vec<&str> = args
            .iter()
            .filter(|a| a["name"] != "input" && a["isDeprecated"] != json!(true))
            .filter_map(|a| a["name"].as_str())
            .collect();
        // A mutation of one object names it by `id` beside its input (updateCi, withdrawCi...).
        let allowed_beside_input: &[&str] = if has_input { &["id"] } else { &[] };
        if (!args.is_empty() && !has_input) || loose.iter().any(|a| !allowed_beside_input.contains(a)) {
            offenders.push(format!("{name}({})", loose.join(", ")));
        }
    }
    assert!(offenders.is_empty(), "mutations with loose arguments: {offenders:?}");

    // The new way and the deprecated way both work; both at once, or half of the old way, is refused.
    let token = server.admin_token.clone();
    server
        .ok(
            &token,
            "mutation { createPrincipal(input: { name: \"zoe\", kind: PERSON, roles: [VIEWER] }) { position } }",
            json!({}),
        )
        .await;
    let granted = server
        .ok(
            &token,
            "mutation { grantRole(input: { principal: \"zoe\", role: AUDITOR }) { principal { roles } } }",
            json!({}),
        )
        .await;
    assert!(granted.to_string().contains("AUDITOR"), "{granted}");
    server.ok(&token, "mutation { revokeRole(principal: \"zoe\", role: AUDITOR) { position } }", json!({})).await;
    let created = server
        .ok(&token, "mutation { createToken(input: { principal: \"zoe\", label: \"ci\" }) { tokenId } }", json!({}))
        .await;
    let token_id = created["createToken"]["tokenId"].as_str().expect("id").to_owned();
    let head = server.head().await;
    for bad in [
        format!(
            "mutation {{ revokeToken(tokenId: \"{token_id}\", input: {{ tokenId: \"{token_id}\" }}) {{ position }} }}"
        ),
        "mutation { grantRole(principal: \"zoe\") { position } }".to_owned(),
        "mutation { revokeToken { position } }".to_owned(),
    ] {
        let (_, body) = server.graphql(&token, &bad, json!({})).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{bad}: {body}");
    }
    assert_eq!(server.head().await, head, "refused: nothing written");
    server
        .ok(
            &token,
            &format!(
                "mutation {{ revokeToken(input: {{ tokenId: \"{token_id}\", reason: \"rotated\" }}) {{ position }} }}"
            ),
            json!({}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cis_relationships_page_both_ways_and_add_up_to_its_list() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    // The CI with the most relationships in the demo (a hub).
    let data = server
        .ok(&server.admin_token, "{ at { cis(first: 1000) { nodes { id relationships { id } } } } }", json!({}))
        .await;
    let (hub, all) = data["at"]["cis"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let ids: Vec<String> = n["relationships"]
                .as_array()
                .expect("list")
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_owned())
                .collect();
            (n["id"].as_str().expect("id").to_owned(), ids)
        })
        .max_by_key(|(_, ids)| ids.len())
        .expect("a CI");
    assert!(all.len() > 4, "a hub with several relationships: {}", all.len());
    let read = |paging: String| {
        format!(
            "{{ at {{ ci(id: \"{hub}\") {{ relationshipsConnection({paging}) {{ totalCount edges {{ node {{ id }} }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }} }} }}"
        )
    };
    let ids = |page: &Value| -> Vec<String> {
        page["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (mut forward, mut paging) = (Vec::new(), "first: 2".to_owned());
    loop {
        let page =
            server.ok(&server.admin_token, &read(paging), json!({})).await["at"]["ci"]["relationshipsConnection"]
                .clone();
        assert_eq!(page["totalCount"], json!(all.len()));
        forward.extend(ids(&page));
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        paging = format!("first: 2, after: \"{}\"", page["pageInfo"]["endCursor"].as_str().expect("cursor"));
    }
    let (mut backward, mut paging) = (Vec::<String>::new(), "last: 2".to_owned());
    loop {
        let page =
            server.ok(&server.admin_token, &read(paging), json!({})).await["at"]["ci"]["relationshipsConnection"]
                .clone();
        let mut page_ids = ids(&page);
        page_ids.extend(backward);
        backward = page_ids;
        if page["pageInfo"]["hasPreviousPage"] != json!(true) {
            break;
        }
        paging = format!("last: 2, before: \"{}\"", page["pageInfo"]["startCursor"].as_str().expect("cursor"));
    }
    assert_eq!(forward, backward);
    let mut sorted = all.clone();
    sorted.sort();
    let mut paged = forward.clone();
    paged.sort();
    assert_eq!(paged, sorted, "the pages hold exactly the list's relationships");
}

/// `history(ci, last:)` is the tail of the whole history at the same position: the newest
/// entries, still oldest first; a past position cuts first, then `last` counts.
#[tokio::test]
async fn history_last_is_the_newest_entries_of_the_whole_history() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let devices = server
        .ok(
            &server.admin_token,
            r#"{ at { cis(filter: { includeWithdrawn: false }, first: 1000) { nodes { id relationshipsConnection(first: 1) { totalCount } } } } }"#,
            json!({}),
        )
        .await;
    let hub = devices["at"]["cis"]["nodes"]
        .as_array()
        .expect("devices")
        .iter()
        .max_by_key(|d| d["relationshipsConnection"]["totalCount"].as_u64())
        .and_then(|d| d["id"].as_str())
        .expect("a CI")
        .to_owned();
    let positions = |data: &Value| -> Vec<u64> {
        data["at"]["history"].as_array().expect("history").iter().map(|h| h["position"].as_u64().expect("p")).collect()
    };
    let query =
        "query($id: ID!, $p: Position, $last: Int) { at(position: $p) { history(ci: $id, last: $last) { position } } }";
    let whole = positions(&server.ok(&server.admin_token, query, json!({ "id": hub })).await);
    assert!(whole.len() > 10, "a hub has a long history: {}", whole.len());
    for last in [0_usize, 1, 7, whole.len(), whole.len() + 5] {
        let tail = positions(&server.ok(&server.admin_token, query, json!({ "id": hub, "last": last })).await);
        assert_eq!(tail, whole[whole.len().saturating_sub(last)..].to_vec(), "last: {last}");
    }
    // At a past position: the entries up to it, then the newest of those.
    let middle = whole[whole.len() / 2];
    let then = positions(&server.ok(&server.admin_token, query, json!({ "id": hub, "p": middle, "last": 3 })).await);
    let upto: Vec<u64> = whole.iter().copied().filter(|p| *p <= middle).collect();
    assert_eq!(then, upto[upto.len().saturating_sub(3)..].to_vec());
    // A negative count is refused as the schema's Int refuses it, at the field that took it.
    let (_, refused) = server.graphql(&server.admin_token, query, json!({ "id": hub, "last": -1 })).await;
    assert!(refused["errors"][0]["message"].as_str().is_some_and(|m| m.contains("\"Int\"")), "{refused}");
    assert_eq!(refused["errors"][0]["path"], json!(["at", "history"]), "{refused}");
}
