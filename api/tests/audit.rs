//! Audit views over GraphQL and the CLI: diffs between moments, baselines and their
//! comparisons, and the bad input around them.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use std::process::Command;

use common::{TestServer, error_code};
use serde_json::{Value, json};

const REGISTER: &str = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id } } }";

async fn register(server: &TestServer, input: Value) -> (String, u64) {
    let data = server.ok(&server.admin_token, REGISTER, json!({ "input": input })).await;
    (
        data["registerCi"]["ci"]["id"].as_str().expect("id").to_owned(),
        data["registerCi"]["position"].as_u64().expect("p"),
    )
}

fn host(name: &str, cores: u32) -> Value {
    json!({"class": "HOST", "name": name, "environment": "PRODUCTION",
           "attributes": {"hostname": name, "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": cores, "memory_mib": 8192}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diffs_between_moments_are_paged_scoped_and_explained() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let (web01, start) = register(&server, host("web-01", 4)).await;
    let (app, _) = register(&server, json!({"class": "APPLICATION", "name": "shop", "version": "1"})).await;
    let (_other, _) = register(&server, host("far-away", 4)).await;
    server
        .ok(
            &server.admin_token,
            "mutation($a: ID!, $h: ID!) { relate(type: RUNS_ON, source: $a, target: $h) { position } }",
            json!({"a": app, "h": web01}),
        )
        .await;
    server
        .ok(
            &server.admin_token,
            "mutation($h: ID!) { updateCi(id: $h, input: {setAttributes: {cpu_cores: 16}}) { position } }",
            json!({"h": web01}),
        )
        .await;
    let end = server.head().await;
    let query = "query($f: Position!, $t: Position!, $around: ID, $after: String) { diff(from: {position: $f}, to: {position: $t}, around: $around, depth: 1) {
        from to createdCount changedCount relationshipsAddedCount
        cis(first: 2, after: $after) { nodes { id kind fields { field before after } events { type principal } after { name } } pageInfo { hasNextPage endCursor } }
        relationships { nodes { kind relationship { type } cause { principal type } } } } }";
    let page = server.ok(&server.admin_token, query, json!({"f": start, "t": end})).await;
    let diff = &page["diff"];
    assert_eq!(diff["createdCount"], 2, "app and far-away are new after web-01's registration: {diff}");
    assert_eq!(diff["changedCount"], 1);
    assert_eq!(diff["relationshipsAddedCount"], 1);
    assert_eq!(diff["cis"]["pageInfo"]["hasNextPage"], true);
    let changed = diff["cis"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .chain(std::iter::empty())
        .find(|n| n["kind"] == "CHANGED");
    let next = server
        .ok(&server.admin_token, query, json!({"f": start, "t": end, "after": diff["cis"]["pageInfo"]["endCursor"]}))
        .await;
    let all: Vec<Value> = diff["cis"]["nodes"]
        .as_array()
        .expect("a")
        .iter()
        .chain(next["diff"]["cis"]["nodes"].as_array().expect("b"))
        .cloned()
        .collect();
    assert_eq!(all.len(), 3);
    let host_entry =
        changed.cloned().or_else(|| all.iter().find(|n| n["kind"] == "CHANGED").cloned()).expect("the host changed");
    assert_eq!(host_entry["fields"], json!([{"field": "attributes.cpu_cores", "before": 4, "after": 16}]));
    assert!(
        host_entry["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["type"] == "ci.updated" && e["principal"] == "admin")
    );
    assert_eq!(diff["relationships"]["nodes"][0]["cause"]["type"], "relationship.created");
    // Around the application, depth 1: the app and its host, not far-away.
    let around = server.ok(&server.admin_token, query, json!({"f": start, "t": end, "around": app})).await;
    assert_eq!(around["diff"]["createdCount"], 1);
    // By time: the whole history.
    let by_time = server
        .ok(
            &server.admin_token,
            "{ diff(from: {position: 0}, to: {time: \"2100-01-01T00:00:00Z\"}) { to createdCount } }",
            json!({}),
        )
        .await;
    assert_eq!(by_time["diff"]["createdCount"], 3);
    assert_eq!(by_time["diff"]["to"], end);
    let before_log = server
        .graphql(
            &server.admin_token,
            "{ diff(from: {time: \"2000-01-01T00:00:00Z\"}, to: {position: 3}) { from to } }",
            json!({}),
        )
        .await
        .1;
    // Before the first event is the empty estate at position 0, as `at(time:)` reads it.
    assert_eq!(before_log["data"]["diff"], json!({"from": 0, "to": 3}), "{before_log}");

    let head = server.head().await;
    for (query, code) in [
        ("{ diff(from: {position: 9}, to: {position: 3}) { from } }", "BAD_USER_INPUT"),
        ("{ diff(from: {position: 1, time: \"2026-01-01T00:00:00Z\"}, to: {position: 3}) { from } }", "BAD_USER_INPUT"),
        ("{ diff(from: {}, to: {position: 3}) { from } }", "BAD_USER_INPUT"),
        ("{ diff(from: {position: 1}, to: {position: 99999}) { from } }", "BAD_USER_INPUT"),
        (
            "{ diff(from: {position: 1}, to: {position: 3}, around: \"01935b6a-0000-7000-8000-000000000000\") { from } }",
            "NOT_FOUND",
        ),
        (
            "{ diff(from: {position: 1}, to: {position: 3}) { cis(after: \"zz\") { pageInfo { hasNextPage } } } }",
            "BAD_USER_INPUT",
        ),
    ] {
        let (_, body) = server.graphql(&server.admin_token, query, json!({})).await;
        assert_eq!(error_code(&body), code, "{query}: {body}");
    }
    assert_eq!(server.head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_compare_correctly_after_a_ci_is_withdrawn_and_its_name_reused() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let (team, _) = register(&server, json!({"class": "TEAM", "name": "ops"})).await;
    let (old_web, _) = register(&server, host("web-01", 4)).await;
    let (_db_host, _) = register(&server, host("db-01", 8)).await;
    let service_hours = json!({"time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "00:00", "end": "24:00"}]});
    let (service, _) = register(&server, json!({"class": "BUSINESS_SERVICE", "name": "Shop", "owner": team, "attributes": {"criticality_tier": 2, "service_hours": service_hours}})).await;
    let (app, _) = register(&server, json!({"class": "APPLICATION", "name": "shop-api"})).await;
    server
        .ok(
            &server.admin_token,
            "mutation($a: ID!, $s: ID!) { relate(type: PROVIDES, source: $a, target: $s) { position } }",
            json!({"a": app, "s": service}),
        )
        .await;
    server
        .ok(
            &server.admin_token,
            "mutation($a: ID!, $h: ID!) { relate(type: RUNS_ON, source: $a, target: $h) { position } }",
            json!({"a": app, "h": old_web}),
        )
        .await;

    let create = "mutation($input: CreateBaselineInput!) { createBaseline(input: $input) { position baseline { name memberCount position } } }";
    let hosts = server
        .ok(&server.admin_token, create, json!({"input": {"name": "Hosts Q4", "filter": {"classes": ["HOST"]}}}))
        .await;
    assert_eq!(hosts["createBaseline"]["baseline"]["memberCount"], 2);
    let shop = server
        .ok(&server.admin_token, create, json!({"input": {"name": "shop service", "service": service, "depth": 4}}))
        .await;
    assert_eq!(shop["createBaseline"]["baseline"]["memberCount"], 3, "the service, its app and the app's host");

    // web-01 is replaced by a new CI with the same name.
    server
        .ok(
            &server.admin_token,
            "mutation($h: ID!) { withdrawCi(id: $h, reason: \"replaced\") { position } }",
            json!({"h": old_web}),
        )
        .await;
    let (new_web, _) = register(&server, host("web-01", 16)).await;
    let compare = server
        .ok(&server.admin_token, "{ baseline(name: \"hosts q4\") { compare { createdCount withdrawnCount cis { nodes { id kind after { name status } } } } members { nodes { name } totalCount } } }", json!({}))
        .await;
    let cmp = &compare["baseline"]["compare"];
    assert_eq!(cmp["withdrawnCount"], 1);
    assert_eq!(cmp["createdCount"], 1);
    let kinds: Vec<(String, String)> = cmp["cis"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("id").to_owned(), n["kind"].as_str().expect("kind").to_owned()))
        .collect();
    assert!(kinds.contains(&(old_web.clone(), "WITHDRAWN".into())), "{kinds:?}");
    assert!(kinds.contains(&(new_web.clone(), "CREATED".into())), "{kinds:?}");
    let members: Vec<&str> = compare["baseline"]["members"]["nodes"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["name"].as_str().expect("n"))
        .collect();
    assert_eq!(members.len(), 2, "the members as they were: {members:?}");

    // Baseline against baseline, and against a position.
    let later = server
        .ok(&server.admin_token, create, json!({"input": {"name": "Hosts Q4 after", "filter": {"classes": ["HOST"]}}}))
        .await;
    let against = server
        .ok(&server.admin_token, "{ baseline(name: \"Hosts Q4\") { compare(withBaseline: \"Hosts Q4 after\") { from to createdCount withdrawnCount } } }", json!({}))
        .await;
    assert_eq!(against["baseline"]["compare"]["withdrawnCount"], 1);
    assert_eq!(against["baseline"]["compare"]["to"], later["createBaseline"]["baseline"]["position"]);
    let listed = server
        .ok(&server.admin_token, "{ baselines { name memberCount created { principal } scope } }", json!({}))
        .await;
    assert_eq!(listed["baselines"].as_array().expect("list").len(), 3);
    assert_eq!(listed["baselines"][0]["created"]["principal"], "admin");

    // Bad input: clear errors, nothing appended.
    let head = server.head().await;
    for (query, variables, code) in [
        (create, json!({"input": {"name": "Hosts Q4", "filter": {}}}), "ALREADY_EXISTS"),
        (create, json!({"input": {"name": "x", "service": app}}), "BAD_USER_INPUT"),
        (create, json!({"input": {"name": "x", "service": service, "depth": 40}}), "BAD_USER_INPUT"),
        (create, json!({"input": {"name": "x"}}), "BAD_USER_INPUT"),
        (create, json!({"input": {"name": " padded", "filter": {}}}), "BAD_USER_INPUT"),
        (create, json!({"input": {"name": "x", "filter": {}, "at": {"position": 99999}}}), "BAD_USER_INPUT"),
        ("{ baseline(name: \"Hosts Q4\") { compare(withBaseline: \"no such\") { from } } }", json!({}), "NOT_FOUND"),
        ("mutation { deleteBaseline(name: \"no such\") { position } }", json!({}), "NOT_FOUND"),
    ] {
        let (_, body) = server.graphql(&server.admin_token, query, variables.clone()).await;
        assert_eq!(error_code(&body), code, "{variables}: {body}");
    }
    let (_, body) = server
        .graphql(&server.admin_token, create, json!({"input": {"name": "x", "filter": {"classes": ["MAINFRAME"]}}}))
        .await;
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("MAINFRAME"), "{body}");
    assert_eq!(server.head().await, head);
    assert!(
        server.ok(&server.admin_token, "{ baseline(name: \"no such\") { name } }", json!({})).await["baseline"]
            .is_null()
    );
    server
        .ok(
            &server.admin_token,
            "mutation { deleteBaseline(name: \"hosts q4 AFTER\", reason: \"superseded\") { position } }",
            json!({}),
        )
        .await;
    let listed = server.ok(&server.admin_token, "{ baselines { name } }", json!({})).await;
    assert_eq!(listed["baselines"].as_array().expect("list").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_diff_prints_a_summary_or_json_and_refuses_bad_input() {
    let mut server = TestServer::start().await;
    server.uncontrolled().await;
    let (web01, start) = register(&server, host("web-01", 4)).await;
    server
        .ok(
            &server.admin_token,
            "mutation($h: ID!) { updateCi(id: $h, input: {setAttributes: {cpu_cores: 8}}) { position } }",
            json!({"h": web01}),
        )
        .await;
    let (app, _) = register(&server, json!({"class": "APPLICATION", "name": "shop", "version": "1"})).await;
    server
        .ok(
            &server.admin_token,
            "mutation($a: ID!, $h: ID!) { relate(type: RUNS_ON, source: $a, target: $h) { position } }",
            json!({"a": app, "h": web01}),
        )
        .await;
    server.shutdown().await;
    let data_dir = server.data_dir();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cmdb")).arg("--data-dir").arg(&data_dir).args(args).output().expect("run")
    };
    let output = run(&["diff", "--from", &start.to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("1 changed") && text.contains("attributes.cpu_cores: 4 -> 8"), "{text}");
    let output = run(&["diff", "--from", "0", "--json"]);
    let json: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["cis"].as_array().expect("cis").len(), 2);
    // A relationship that still stands has no end: null, as GraphQL writes it.
    let added = &json["relationships"][0]["relationship"];
    assert!(added["to"].is_null(), "{added}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains(&u64::MAX.to_string()));
    for (args, needle) in [
        (vec!["diff", "--from", "yesterday"], "RFC 3339"),
        (vec!["diff", "--from", "5", "--to", "1"], "after --to"),
        (vec!["diff", "--from", "1", "--to", "999"], "past what the graph has applied"),
        (vec!["diff", "--from", "1", "--around", "nope"], "not a configuration item id"),
        (vec!["diff", "--from", "1", "--around", "01935b6a-0000-7000-8000-000000000000"], "no CI"),
    ] {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needle),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_classes_and_attributes_over_graphql() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let declare = "mutation($input: DeclareClassInput!) { declareClass(input: $input) { position } }";
    server
        .ok(
            &server.admin_token,
            declare,
            json!({"input": {"name": "pos_terminal", "like": "physical_asset", "description": "card terminal",
                   "attributes": [{"name": "terminal_id", "type": "TEXT", "required": true},
                                  {"name": "lane", "type": "INTEGER", "min": 1, "max": 40}]}}),
        )
        .await;
    server.uncontrolled().await; // the new class too
    let (terminal, _) = register(
        &server,
        json!({"class": "pos_terminal", "name": "till 1", "attributes": {"terminal_id": "T1", "lane": 3}}),
    )
    .await;
    let listed = server
        .ok(&server.admin_token, "{ at { cis(filter: {classes: [\"POS_TERMINAL\"]}) { nodes { id class attribute(name: \"lane\") } } } classes { name builtIn like attributes { name required builtIn } } }", json!({}))
        .await;
    assert_eq!(listed["at"]["cis"]["nodes"][0]["id"], terminal.as_str());
    assert_eq!(listed["at"]["cis"]["nodes"][0]["class"], "pos_terminal");
    let custom = listed["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .find(|c| c["name"] == "pos_terminal")
        .expect("listed")
        .clone();
    assert_eq!(custom["like"], "physical_asset");
    assert!(
        custom["attributes"]
            .as_array()
            .expect("a")
            .iter()
            .any(|a| a["name"] == "terminal_id" && a["required"] == true && a["builtIn"] == false)
    );
    // An optional attribute on a built-in class, then used.
    server
        .ok(
            &server.admin_token,
            "mutation { declareAttribute(class: \"host\", attribute: {name: \"rack\", type: TEXT}) { position } }",
            json!({}),
        )
        .await;
    register(&server, json!({"class": "host", "name": "h1", "attributes": {"hostname": "h1", "ip_addresses": ["10.0.0.9"], "os": "linux", "cpu_cores": 1, "memory_mib": 512, "rack": "B7"}})).await;

    let head = server.head().await;
    for (query, variables, code) in [
        (declare, json!({"input": {"name": "pos_terminal", "like": "physical_asset"}}), "BAD_USER_INPUT"),
        (declare, json!({"input": {"name": "host", "like": "physical_asset"}}), "BAD_USER_INPUT"),
        (declare, json!({"input": {"name": "Bad-Name", "like": "host"}}), "BAD_USER_INPUT"),
        (declare, json!({"input": {"name": "gadget", "like": "pos_terminal"}}), "BAD_USER_INPUT"),
        (declare, json!({"input": {"name": "gadget", "like": "no_such_class"}}), "BAD_USER_INPUT"),
        (
            "mutation { declareAttribute(class: \"host\", attribute: {name: \"hostname\", type: TEXT}) { position } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation { declareAttribute(class: \"host\", attribute: {name: \"rack2\", type: TEXT, required: true}) { position } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation { declareAttribute(class: \"mainframe\", attribute: {name: \"x\", type: TEXT}) { position } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (
            "mutation { declareAttribute(class: \"host\", attribute: {name: \"tier\", type: CHOICE}) { position } }",
            json!({}),
            "BAD_USER_INPUT",
        ),
        (REGISTER, json!({"input": {"class": "pos_terminal", "name": "till 2"}}), "BAD_USER_INPUT"),
        (
            REGISTER,
            json!({"input": {"class": "pos_terminal", "name": "till 2", "attributes": {"terminal_id": "T2", "lane": 99}}}),
            "BAD_USER_INPUT",
        ),
        ("{ at { cis(filter: {classes: [\"mainframe\"]}) { nodes { id } } } }", json!({}), "BAD_USER_INPUT"),
    ] {
        let (_, body) = server.graphql(&server.admin_token, query, variables.clone()).await;
        assert_eq!(error_code(&body), code, "{query} {variables}: {body}");
        assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.len() > 10));
    }
    let clash = server
        .graphql(
            &server.admin_token,
            "mutation { declareAttribute(class: \"host\", attribute: {name: \"hostname\", type: TEXT}) { position } }",
            json!({}),
        )
        .await
        .1;
    assert!(clash["errors"][0]["message"].as_str().expect("m").contains("built in"), "{clash}");
    assert_eq!(server.head().await, head, "refused declarations and registrations appended nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_as_of_a_moment_reveals_nothing_after_it() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let (web01, registered) = register(&server, host("web-01", 4)).await;
    let updated = server
        .ok(
            &server.admin_token,
            "mutation($h: ID!) { updateCi(id: $h, input: {setAttributes: {cpu_cores: 8}}) { position } }",
            json!({"h": web01}),
        )
        .await["updateCi"]["position"]
        .as_u64()
        .expect("position");
    let read = |position: u64| {
        server.ok(
            &server.admin_token,
            "query($p: Int, $h: ID!) { at(position: $p) { ci(id: $h) { validFrom validTo } history(ci: $h) { position } } }",
            json!({"p": position, "h": web01}),
        )
    };
    // As of the registration, the update had not happened: the version's end is unknown.
    let then = read(registered).await;
    assert_eq!(then["at"]["ci"]["validFrom"], json!(registered), "{then}");
    assert!(then["at"]["ci"]["validTo"].is_null(), "validTo leaks the future: {then}");
    assert_eq!(then["at"]["history"].as_array().expect("history").len(), 1, "{then}");
    // At the head the current version is open.
    let now = read(updated).await;
    assert_eq!(now["at"]["ci"]["validFrom"], json!(updated));
    assert!(now["at"]["ci"]["validTo"].is_null());
    // Before the CI existed (before the registration's whole append: a read inside it snaps
    // to its end), history answers like ci(id:): null.
    let commit = server
        .ok(
            &server.admin_token,
            "query($p: Position!) { event(position: $p) { commit { firstPosition } } }",
            json!({"p": registered}),
        )
        .await;
    let first = commit["event"]["commit"]["firstPosition"].as_u64().expect("first position");
    let before = read(first - 1).await;
    assert!(before["at"]["ci"].is_null() && before["at"]["history"].is_null(), "{before}");

    // Before the first event: the empty estate at position 0.
    let empty = server
        .ok(
            &server.admin_token,
            r#"{ at(time: "2000-01-01T00:00:00Z") { position time cis(first: 5) { nodes { id } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(empty["at"]["position"], json!(0), "{empty}");
    assert!(empty["at"]["time"].is_null(), "{empty}");
    assert_eq!(empty["at"]["cis"]["nodes"], json!([]), "{empty}");
}
