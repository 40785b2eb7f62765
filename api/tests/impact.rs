//! Redundancy-aware impact over GraphQL (issue 15; CM-2, CH-2): a CI's impact shows down and
//! degraded services with their paths and causes; declaring a class's redundancy is audited,
//! changes answers from then on only, and bad input is refused with the log unchanged.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use common::{TestServer, error_code};
use serde_json::{Value, json};

const REGISTER: &str = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id } } }";
const RELATE: &str =
    "mutation($t: RelationshipType!, $s: ID!, $d: ID!) { relate(type: $t, source: $s, target: $d) { position } }";
const IMPACT: &str = "query($ci: ID!, $p: Position) { at(position: $p) { impact(ci: $ci, maxDepth: 10) {
    count downCount degradedCount
    reached { ci { id name } depth severity cause { ci { name } type } path { ci { name } type } }
    services { service { name } tier depth severity cause { ci { name } } path { ci { name } } } } } }";
const DECLARE: &str = "mutation($c: String!, $on: Boolean!, $r: String!) { declareClassRedundancy(class: $c, redundant: $on, reason: $r) { position } }";

async fn register(server: &TestServer, input: Value) -> String {
    let data = server.ok(&server.admin_token, REGISTER, json!({ "input": input })).await;
    data["registerCi"]["ci"]["id"].as_str().expect("id").to_owned()
}

async fn relate(server: &TestServer, rel_type: &str, source: &str, target: &str) {
    server.ok(&server.admin_token, RELATE, json!({"t": rel_type, "s": source, "d": target})).await;
}

fn host(name: &str) -> Value {
    json!({"class": "HOST", "name": name, "environment": "PRODUCTION",
           "attributes": {"hostname": name, "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 4, "memory_mib": 8192}})
}

fn by_name<'a>(items: &'a [Value], key: &str, name: &str) -> &'a Value {
    items.iter().find(|i| i[key]["name"] == name).unwrap_or_else(|| panic!("{name} not in {items:?}"))
}

/// The estate most tests here share: three nodes in a cluster that is down once two are, an
/// app on the cluster providing "Shop" (tier 1), and a batch job on one node (`batch_on`, 1 to
/// 3) providing "Billing" (tier 2).
struct Cluster {
    nodes: [String; 3],
    shop: String,
    billing: String,
}

async fn cluster_estate(server: &TestServer, batch_on: usize) -> Cluster {
    server.uncontrolled().await;
    let team = register(server, json!({"class": "TEAM", "name": "ops"})).await;
    let hours = json!({"time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "00:00", "end": "24:00"}]});
    let service = |name: &str, tier: u8| json!({"class": "BUSINESS_SERVICE", "name": name, "owner": team, "attributes": {"criticality_tier": tier, "service_hours": hours}});
    let nodes = [
        register(server, host("node-1")).await,
        register(server, host("node-2")).await,
        register(server, host("node-3")).await,
    ];
    // Two of three nodes must fail for the cluster to be down.
    let cluster = register(
        server,
        json!({"class": "KUBERNETES_CLUSTER", "name": "k8s-prod", "attributes": {"members_to_fail": 2}}),
    )
    .await;
    for node in &nodes {
        relate(server, "PART_OF", node, &cluster).await;
    }
    let shop = register(server, json!({"class": "APPLICATION", "name": "shop"})).await;
    relate(server, "RUNS_ON", &shop, &cluster).await;
    let shop_service = register(server, service("Shop", 1)).await;
    relate(server, "PROVIDES", &shop, &shop_service).await;
    // The batch job runs on the node itself: that node failing takes it and its service down.
    let batch = register(server, json!({"class": "APPLICATION", "name": "batch"})).await;
    relate(server, "RUNS_ON", &batch, &nodes[batch_on - 1]).await;
    let billing = register(server, service("Billing", 2)).await;
    relate(server, "PROVIDES", &batch, &billing).await;
    Cluster { nodes, shop, billing }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_failure_shows_down_and_degraded_services_with_paths_and_causes() {
    let server = TestServer::start().await;
    let Cluster { nodes: [node1, ..], shop, .. } = cluster_estate(&server, 1).await;
    let before_declaration = server.head().await;

    let data = server.ok(&server.admin_token, IMPACT, json!({"ci": node1})).await;
    let impact = &data["at"]["impact"];
    assert_eq!(impact["count"], 5, "{impact}");
    assert_eq!(impact["downCount"], 2, "batch and Billing: {impact}");
    assert_eq!(impact["degradedCount"], 3, "cluster, shop, Shop: {impact}");
    let services = impact["services"].as_array().expect("services");
    let shop_hit = by_name(services, "service", "Shop");
    assert_eq!(shop_hit["severity"], "DEGRADED");
    assert_eq!(shop_hit["tier"], 1);
    let path: Vec<&str> =
        shop_hit["path"].as_array().expect("path").iter().map(|s| s["ci"]["name"].as_str().expect("name")).collect();
    assert_eq!(path, ["k8s-prod", "shop", "Shop"]);
    assert_eq!(shop_hit["cause"]["ci"]["name"], "shop");
    let billing_hit = by_name(services, "service", "Billing");
    assert_eq!(billing_hit["severity"], "DOWN");
    let reached = impact["reached"].as_array().expect("reached");
    let cluster_hit = by_name(reached, "ci", "k8s-prod");
    assert_eq!(cluster_hit["severity"], "DEGRADED");
    assert_eq!(cluster_hit["cause"]["ci"]["name"], "node-1");
    assert_eq!(cluster_hit["cause"]["type"], "PART_OF");
    // Upstream: no severity, no cause.
    let up = server
        .ok(
            &server.admin_token,
            "query($ci: ID!) { at { impact(ci: $ci, direction: UPSTREAM) {
                reached { severity cause { type } severityPath { type } } services { severityPath { type } } downCount } } }",
            json!({"ci": shop}),
        )
        .await;
    let up_reached = up["at"]["impact"]["reached"].as_array().expect("reached");
    assert!(!up_reached.is_empty());
    assert!(up_reached.iter().all(|r| r["severity"].is_null() && r["cause"].is_null()), "{up}");
    // Upstream has no severities, so no severity path either.
    assert!(up_reached.iter().all(|r| r["severityPath"].is_null()), "{up}");
    let up_services = up["at"]["impact"]["services"].as_array().expect("services");
    assert!(up_services.iter().all(|s| s["severityPath"].is_null()), "{up}");

    // Classes say whether they are redundant; the declaration is audited and changes answers
    // from its position on only.
    let classes = server.ok(&server.admin_token, "{ classes { name redundant } }", json!({})).await;
    let redundant: Vec<&str> = classes["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .filter(|c| c["redundant"] == true)
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(redundant, ["kubernetes_cluster"]);
    let admin = server.admin_token.clone();
    server
        .ok(&admin, DECLARE, json!({"c": "kubernetes_cluster", "on": false, "r": "this cluster has no spare capacity"}))
        .await;
    let now = server.ok(&admin, IMPACT, json!({"ci": node1})).await;
    let shop_now = by_name(now["at"]["impact"]["services"].as_array().expect("services"), "service", "Shop").clone();
    assert_eq!(shop_now["severity"], "DOWN", "a plain whole: one member down, all down");
    let then = server.ok(&admin, IMPACT, json!({"ci": node1, "p": before_declaration})).await;
    let shop_then = by_name(then["at"]["impact"]["services"].as_array().expect("services"), "service", "Shop").clone();
    assert_eq!(shop_then["severity"], "DEGRADED", "the past keeps the rule in force then");

    // Bad input: unknown class, no-op, empty or over-long reason, a non-admin. The log does
    // not move.
    let viewer = server.principal_with_token("vic", &["VIEWER"]).await;
    let head = server.head().await;
    let long_reason = "r".repeat(cmdb_core::ci::schema::registry::MAX_CONTROL_REASON_BYTES + 1);
    let cases = [
        (json!({"c": "spaceship", "on": true, "r": "why"}), "BAD_USER_INPUT", "spaceship"),
        (json!({"c": "kubernetes_cluster", "on": false, "r": "why"}), "BAD_USER_INPUT", "already not redundant"),
        (json!({"c": "host", "on": false, "r": "why"}), "BAD_USER_INPUT", "already not redundant"),
        (json!({"c": "host", "on": true, "r": "  "}), "BAD_USER_INPUT", "reason"),
        (json!({"c": "host", "on": true, "r": long_reason}), "BAD_USER_INPUT", "reason"),
    ];
    for (variables, code, text) in cases {
        let (_, body) = server.graphql(&admin, DECLARE, variables.clone()).await;
        assert_eq!(error_code(&body), code, "{variables} -> {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{variables} -> {message}");
    }
    let (_, body) = server.graphql(&viewer, DECLARE, json!({"c": "host", "on": true, "r": "why"})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    // members_to_fail is checked like any attribute: at least 1.
    let (_, body) = server
        .graphql(
            &admin,
            REGISTER,
            json!({"input": {"class": "KUBERNETES_CLUSTER", "name": "bad", "attributes": {"members_to_fail": 0}}}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(server.head().await, head, "refusals leave the log as it was");
}

/// Issue 15, part 4: a repeated impact query is answered from the cache, and the cache never
/// answers for a graph that changed since (the key is the graph's change counter at the
/// position), whether at the head or at a past position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_impacts_are_cached_and_never_stale() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let db =
        register(&server, json!({"class": "DATABASE", "name": "orders-db", "attributes": {"engine": "postgresql"}}))
            .await;
    let api = register(&server, json!({"class": "APPLICATION", "name": "orders-api"})).await;
    relate(&server, "DEPENDS_ON", &api, &db).await;
    let count = |data: &Value| data["at"]["impact"]["count"].as_u64().expect("count");
    let first = server.ok(&server.admin_token, IMPACT, json!({"ci": db})).await;
    let before: u64 = first["at"]["impact"]["reached"][0]["depth"].as_u64().expect("depth");
    assert_eq!((count(&first), before), (1, 1));
    let position_before =
        server.ok(&server.admin_token, "{ head { position } }", json!({})).await["head"]["position"].clone();
    let hits_before = metric(&server, "impact_cache_hits_total").await;
    let again = server.ok(&server.admin_token, IMPACT, json!({"ci": db})).await;
    assert_eq!(again, first, "the same answer");
    assert!(metric(&server, "impact_cache_hits_total").await > hits_before, "the repeat was a hit");
    // The graph changes: the head answer changes with it, the past one does not.
    let web = register(&server, json!({"class": "APPLICATION", "name": "orders-web"})).await;
    relate(&server, "DEPENDS_ON", &web, &db).await;
    let now = server.ok(&server.admin_token, IMPACT, json!({"ci": db})).await;
    assert_eq!(count(&now), 2, "not the cached answer of a graph that changed: {now}");
    let past = server.ok(&server.admin_token, IMPACT, json!({"ci": db, "p": position_before})).await;
    assert_eq!(count(&past), 1);
    assert_eq!(past["at"]["impact"]["reached"], first["at"]["impact"]["reached"]);
}

/// The value of a counter on `/metrics` (0 if absent).
/// The steps' CI names of a path.
fn names(path: &Value) -> Vec<String> {
    path.as_array().expect("path").iter().map(|s| s["ci"]["name"].as_str().expect("name").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_severity_path_shows_the_way_the_failure_arrived_when_the_shortest_way_survives() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let team = register(&server, json!({"class": "TEAM", "name": "ops"})).await;
    let hours = json!({"time_zone": "UTC", "weekly": [{"days": ["mon"], "start": "00:00", "end": "24:00"}]});
    let (node1, node2, node3) = (
        register(&server, host("node-1")).await,
        register(&server, host("node-2")).await,
        register(&server, host("node-3")).await,
    );
    let cluster = register(
        &server,
        json!({"class": "KUBERNETES_CLUSTER", "name": "k8s-prod", "attributes": {"members_to_fail": 2}}),
    )
    .await;
    for node in [&node1, &node2, &node3] {
        relate(&server, "PART_OF", node, &cluster).await;
    }
    // Every app runs on the cluster (node-1 failing leaves them degraded, two hops away); app-1
    // also runs on node-1 itself, and each next app consumes the one before, so node-1 failing
    // brings the chain down one app after the other: the way down is longer than the shortest.
    let chain_length = cmdb_projections::graph::MAX_SEVERITY_CHAIN_STEPS + 2;
    let mut apps: Vec<String> = Vec::new();
    for n in 1..=chain_length {
        let app = register(&server, json!({"class": "APPLICATION", "name": format!("app-{n}")})).await;
        relate(&server, "RUNS_ON", &app, &cluster).await;
        match apps.last() {
            None => relate(&server, "RUNS_ON", &app, &node1).await,
            Some(before) => relate(&server, "CONSUMES", &app, before.as_str()).await,
        }
        apps.push(app);
    }
    let service = register(
        &server,
        json!({"class": "BUSINESS_SERVICE", "name": "Shop", "owner": team,
               "attributes": {"criticality_tier": 1, "service_hours": hours}}),
    )
    .await;
    relate(&server, "PROVIDES", &apps[2], &service).await;
    let head = server.head().await;

    let query = "query($ci: ID!) { at { impact(ci: $ci, maxDepth: 4) {
        reached { ci { name } depth severity cause { ci { name } } path { ci { name } } severityPath { ci { name } } }
        services { service { name } depth severity path { ci { name } } severityPath { ci { name } type } } } } }";
    let (status, body) = server.graphql(&server.admin_token, query, json!({"ci": node1})).await;
    assert_eq!(status, 200, "{body}");
    let impact = &body["data"]["at"]["impact"];
    let reached = impact["reached"].as_array().expect("reached");
    // The shop's service: two hops by the cluster (degraded) but down by app-1, app-2, app-3.
    let shop = &impact["services"][0];
    assert_eq!(shop["severity"], "DOWN", "{shop}");
    assert_eq!(shop["depth"], 3);
    assert_eq!(names(&shop["path"]), ["k8s-prod", "app-3", "Shop"], "the shortest way crosses the cluster");
    assert_eq!(names(&shop["severityPath"]), ["app-1", "app-2", "app-3", "Shop"], "the way that brings it down");
    let types: Vec<&str> =
        shop["severityPath"].as_array().expect("steps").iter().map(|s| s["type"].as_str().expect("type")).collect();
    assert_eq!(types, ["RUNS_ON", "CONSUMES", "CONSUMES", "PROVIDES"]);
    // Where the shortest way carries the severity, the two paths are the same.
    let cluster_hit = by_name(reached, "ci", "k8s-prod");
    assert_eq!(cluster_hit["severity"], "DEGRADED");
    assert_eq!(cluster_hit["severityPath"], cluster_hit["path"]);
    // Each step's cause is the step before it, and the chain starts at the root.
    for hit in reached.iter().filter(|r| !r["severityPath"].is_null()) {
        let chain = names(&hit["severityPath"]);
        assert_eq!(chain.last(), hit["ci"]["name"].as_str().map(str::to_owned).as_ref(), "{hit}");
        let before = if chain.len() > 1 { chain[chain.len() - 2].as_str() } else { "node-1" };
        assert_eq!(hit["cause"]["ci"]["name"], before, "{hit}");
    }
    // The bound: app-66's chain is 66 steps and is given; app-67's and app-68's are longer,
    // and are errors on that field alone, with the limit named.
    let bound = cmdb_projections::graph::MAX_SEVERITY_CHAIN_STEPS;
    let at_bound = by_name(reached, "ci", &format!("app-{bound}"));
    assert_eq!(at_bound["depth"], 2);
    assert_eq!(at_bound["severity"], "DOWN");
    assert_eq!(names(&at_bound["severityPath"]).len(), bound, "{at_bound}");
    for n in [bound + 1, bound + 2] {
        let past = by_name(reached, "ci", &format!("app-{n}"));
        assert_eq!(past["severity"], "DOWN");
        assert!(past["severityPath"].is_null(), "{past}");
        assert_eq!(past["cause"]["ci"]["name"], format!("app-{}", n - 1), "the cause is still given");
    }
    let errors = body["errors"].as_array().expect("the chains past the bound are errors");
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in errors {
        assert_eq!(error_code(&json!({"errors": [error]})), "LIMIT_EXCEEDED", "{error}");
        assert_eq!(error["extensions"]["limit"], "severity_path_steps");
        assert_eq!(error["extensions"]["bound"], bound);
        assert!(error["message"].as_str().expect("message").contains("follow each CI's cause"), "{error}");
    }
    assert_eq!(server.head().await, head, "reading an impact writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assessments_services_show_the_way_the_changes_failure_reaches_them() {
    let server = TestServer::start().await;
    let Cluster { nodes: [node1, node2, _], billing, .. } = cluster_estate(&server, 2).await;
    let draft = |scope: Vec<&String>| {
        json!({"type": "NORMAL", "title": "Patch the nodes", "description": "kernel", "justification": "CVE",
               "backOutPlan": "old kernel", "implementer": "admin", "scope": {"cis": scope},
               "window": {"start": "2030-01-08T10:00:00Z", "end": "2030-01-08T11:00:00Z", "timeZone": "UTC"}})
    };
    let services = "services { name severity depth severityPath { ci { name } type sourceId targetId } }";
    let by_service = |services: &Value, name: &str| -> Value {
        services.as_array().expect("services").iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
    };

    // A what-if on node-1 alone: the cluster survives (Shop degraded), Billing is not reached.
    let what_if = format!(
        "query($input: DraftChangeInput!) {{ at {{ whatIf(input: $input) {{ assessment {{ {services} }} }} }} }}"
    );
    let one = server.ok(&server.admin_token, &what_if, json!({"input": draft(vec![&node1])})).await;
    let one = &one["at"]["whatIf"]["assessment"]["services"];
    let shop_hit = by_service(one, "Shop");
    assert_eq!(shop_hit["severity"], "DEGRADED", "{one}");
    assert_eq!(names(&shop_hit["severityPath"]), ["k8s-prod", "shop", "Shop"]);
    assert_eq!(shop_hit["severityPath"][0]["sourceId"], node1.as_str(), "the chain starts at the CI in scope");
    assert_eq!(by_service(one, "Billing"), Value::Null, "{one}");
    // A service in scope is its own cause: an empty path.
    let with_service = server.ok(&server.admin_token, &what_if, json!({"input": draft(vec![&node1, &billing])})).await;
    let billing_hit = by_service(&with_service["at"]["whatIf"]["assessment"]["services"], "Billing");
    assert_eq!(billing_hit["depth"], 0);
    assert_eq!(billing_hit["severityPath"], json!([]), "{billing_hit}");

    // A recorded assessment of both nodes: the cluster is down, by the member that reached
    // its threshold, and so are Shop and Billing.
    let drafted = server
        .ok(
            &server.admin_token,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({"input": draft(vec![&node1, &node2])}),
        )
        .await;
    let id = drafted["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    for action in ["submitChange(id: $id)", "assessChange(id: $id, note: \"both nodes\")"] {
        server
            .ok(&server.admin_token, &format!("mutation($id: ID!) {{ {action} {{ position }} }}"), json!({"id": id}))
            .await;
    }
    let head = server.head().await;
    let recorded = server
        .ok(
            &server.admin_token,
            &format!("query($id: ID!) {{ at {{ change(id: $id) {{ assessment {{ {services} }} assessments {{ level }} }} }} }}"),
            json!({"id": id}),
        )
        .await;
    let change = &recorded["at"]["change"];
    let both = &change["assessment"]["services"];
    let shop_hit = by_service(both, "Shop");
    assert_eq!(shop_hit["severity"], "DOWN", "{both}");
    assert_eq!(names(&shop_hit["severityPath"]), ["k8s-prod", "shop", "Shop"]);
    let first = &shop_hit["severityPath"][0];
    assert_eq!(first["type"], "PART_OF");
    assert!([node1.as_str(), node2.as_str()].contains(&first["sourceId"].as_str().expect("source")), "{first}");
    let billing_hit = by_service(both, "Billing");
    assert_eq!(billing_hit["severity"], "DOWN");
    assert_eq!(names(&billing_hit["severityPath"]), ["batch", "Billing"]);
    assert_eq!(billing_hit["severityPath"][0]["targetId"], node2.as_str(), "batch runs on node-2");
    assert_eq!(change["assessments"].as_array().map(Vec::len), Some(1), "the assessment in force is the only one");
    assert_eq!(server.head().await, head, "explaining an assessment records nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_cis_failing_together_bring_down_what_one_alone_leaves_degraded() {
    let server = TestServer::start().await;
    let Cluster { nodes: [node1, node2, node3], shop, billing } = cluster_estate(&server, 1).await;
    let head = server.head().await;
    // `$d` is left out of most requests, as Apollo and urql leave out undefined variables: the
    // argument's default (DOWNSTREAM) applies, as the GraphQL specification says.
    let query = "query($ci: ID, $cis: [ID!], $d: ImpactDirection) { at { impact(ci: $ci, cis: $cis, direction: $d, maxDepth: 10) {
        root { name } roots { name } count downCount degradedCount
        reached { ci { name } depth severity cause { ci { name } type } severityPath { ci { name } } }
        services { service { name } depth severity severityPath { ci { name } } } } } }";
    let impact = |variables: Value| {
        let server = &server;
        async move { server.ok(&server.admin_token, query, variables).await["at"]["impact"].clone() }
    };
    let root_names = |impact: &Value| -> Vec<String> {
        impact["roots"]
            .as_array()
            .expect("roots")
            .iter()
            .map(|r| r["name"].as_str().expect("name").to_owned())
            .collect()
    };

    // One node of three: the cluster survives, degraded, and so does the shop.
    let one = impact(json!({"ci": node2})).await;
    assert_eq!(root_names(&one), ["node-2"]);
    assert_eq!(by_name(one["services"].as_array().expect("services"), "service", "Shop")["severity"], "DEGRADED");
    // The same node named twice in `cis` is the same analysis.
    let twice = impact(json!({"cis": [node2, node2]})).await;
    assert_eq!(twice, one, "a root named twice counts once");

    // Two nodes together reach the cluster's threshold: it is down, and everything on it.
    let both = impact(json!({"cis": [node1, node2]})).await;
    assert_eq!(root_names(&both), ["node-1", "node-2"]);
    assert_eq!(both["root"]["name"], "node-1", "root is the first of the roots");
    assert_eq!(
        (both["count"].as_u64(), both["downCount"].as_u64(), both["degradedCount"].as_u64()),
        (Some(5), Some(5), Some(0)),
        "{both}"
    );
    let reached = both["reached"].as_array().expect("reached");
    let cluster = by_name(reached, "ci", "k8s-prod");
    assert_eq!((cluster["depth"].as_u64(), cluster["severity"].as_str()), (Some(1), Some("DOWN")));
    assert_eq!(cluster["cause"]["type"], "PART_OF");
    let member = cluster["cause"]["ci"]["name"].as_str().expect("the member that reached the threshold");
    assert!(["node-1", "node-2"].contains(&member), "{cluster}");
    let services = both["services"].as_array().expect("services");
    let shop_hit = by_name(services, "service", "Shop");
    assert_eq!((shop_hit["depth"].as_u64(), shop_hit["severity"].as_str()), (Some(3), Some("DOWN")));
    assert_eq!(names(&shop_hit["severityPath"]), ["k8s-prod", "shop", "Shop"]);
    let billing_hit = by_name(services, "service", "Billing");
    assert_eq!(
        (billing_hit["depth"].as_u64(), billing_hit["severity"].as_str()),
        (Some(2), Some("DOWN")),
        "by batch on node-1"
    );
    // The third node alone with node-2 leaves Billing out: it runs on node-1.
    let other_pair = impact(json!({"cis": [node2, node3]})).await;
    assert!(other_pair["services"].as_array().expect("services").iter().all(|s| s["service"]["name"] != "Billing"));

    // Upstream from two CIs: what either depends on, each once.
    let up = impact(json!({"cis": [shop, billing], "d": "UPSTREAM"})).await;
    let up_names: std::collections::BTreeSet<&str> =
        up["reached"].as_array().expect("reached").iter().map(|r| r["ci"]["name"].as_str().expect("name")).collect();
    for depended in ["k8s-prod", "node-1", "node-2", "node-3", "batch"] {
        assert!(up_names.contains(depended), "{depended} in {up_names:?}");
    }

    // A non-null variable left out is still an error.
    let (_, body) =
        server.graphql(&server.admin_token, "query($ci: ID!) { at { impact(ci: $ci) { count } } }", json!({})).await;
    assert!(!body["errors"].as_array().is_none_or(Vec::is_empty), "{body}");

    // Bad input: a clear error each time, and nothing recorded.
    let unknown = "01900000-0000-7000-8000-000000000000";
    let too_many: Vec<&str> =
        std::iter::repeat_n(node1.as_str(), cmdb_projections::graph::MAX_IMPACT_ROOTS + 1).collect();
    for (variables, code, says) in [
        (json!({"ci": node1, "cis": [node2]}), "BAD_USER_INPUT", "not both"),
        (json!({}), "BAD_USER_INPUT", "give the CI"),
        (json!({"cis": []}), "BAD_USER_INPUT", "at least one"),
        (json!({"cis": too_many}), "LIMIT_EXCEEDED", "1000"),
        (json!({"cis": [node1, unknown]}), "NOT_FOUND", unknown),
        (json!({"cis": [node1, "not-an-id"]}), "BAD_USER_INPUT", "not-an-id"),
    ] {
        let (status, body) = server.graphql(&server.admin_token, query, variables.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(error_code(&body), code, "{variables}: {body}");
        let message = body["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains(says), "{variables}: {message}");
    }
    // Exactly at the bound: 1,000 roots (one CI named 1,000 times) is answered.
    let at_bound: Vec<&str> = std::iter::repeat_n(node1.as_str(), cmdb_projections::graph::MAX_IMPACT_ROOTS).collect();
    assert_eq!(root_names(&impact(json!({"cis": at_bound})).await), ["node-1"]);
    assert_eq!(server.head().await, head, "impact analyses record nothing");
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
