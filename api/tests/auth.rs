//! Authentication and the permission matrix, over real HTTP.

mod common;

use cmdb_core::access::{Operation, PERMISSIONS, Role};
use common::{TestServer, error_code, ws};
use serde_json::json;

/// A request that performs exactly `operation`: (path, GraphQL query or None for /metrics).
fn exercise(operation: Operation) -> (&'static str, &'static str) {
    match operation {
        Operation::ReadLog => ("/graphql", "{ head { position } }"),
        Operation::SubscribeLog => ("ws", "subscription { events { position } }"),
        Operation::VerifyLog => ("/graphql", "{ verifyLog { intact } }"),
        Operation::ReadMetrics => ("/metrics", ""),
        Operation::ReadOwnIdentity => ("/graphql", "{ me { principal } }"),
        Operation::ReadPrincipals => ("/graphql", "{ principals { name } }"),
        Operation::ManagePrincipals => (
            "/graphql",
            "mutation { createPrincipal(input: { name: \"probe-PLACEHOLDER\", kind: SYSTEM }) { position } }",
        ),
        Operation::ManageTokens => {
            ("/graphql", "mutation { createToken(principal: \"admin\", label: \"probe\") { tokenId } }")
        }
        Operation::ReadConfiguration => ("/graphql", "{ at { position } }"),
        Operation::ManageSchema => (
            "/graphql",
            "mutation { declareAttribute(class: \"host\", attribute: { name: \"probe_PLACEHOLDER\", type: TEXT }) { position } }",
        ),
        Operation::ManageBaselines => {
            ("/graphql", "mutation { createBaseline(input: { name: \"probe PLACEHOLDER\", filter: {} }) { position } }")
        }
        Operation::EditConfiguration => (
            "/graphql",
            "mutation { registerCi(input: { class: \"team\", name: \"probe team PLACEHOLDER\" }) { position } }",
        ),
        // Change operations: on DRAFT (a draft raised by another principal) or on an unknown
        // change (NOT_FOUND shows the guard let the caller through).
        Operation::RequestChange => {
            ("/graphql", "mutation { draftChange(input: { type: NORMAL, title: \"probe PLACEHOLDER\" }) { position } }")
        }
        Operation::CommentChange => {
            ("/graphql", "mutation { commentOnChange(id: \"DRAFT\", text: \"probe PLACEHOLDER\") { position } }")
        }
        Operation::ManageChanges => (
            "/graphql",
            "mutation { amendChange(id: \"DRAFT\", input: { title: \"amended by probe PLACEHOLDER\" }) { position } }",
        ),
        Operation::AssessChange => ("/graphql", "mutation { assessChange(id: \"UNKNOWN\", note: \"n\") { position } }"),
        Operation::ApproveChange | Operation::ApproveEmergencyChange => {
            ("/graphql", "mutation { approveChange(id: \"UNKNOWN\") { position } }")
        }
        Operation::ScheduleChange => ("/graphql", "mutation { scheduleChange(id: \"UNKNOWN\") { position } }"),
        Operation::ImplementChange => ("/graphql", "mutation { startChange(id: \"UNKNOWN\") { position } }"),
        Operation::VerifyChange => ("/graphql", "mutation { verifyChange(id: \"UNKNOWN\", note: \"n\") { position } }"),
        Operation::ReviewChange => (
            "/graphql",
            "mutation { reviewChange(id: \"UNKNOWN\", review: { objectiveMet: true, usersSatisfied: true }) { position } }",
        ),
        Operation::CloseChange => ("/graphql", "mutation { closeChange(id: \"UNKNOWN\") { position } }"),
        Operation::ManagePolicy => (
            "/graphql",
            "mutation { loadPolicy(name: \"probe\", text: \"package cmdb.change\\nimport rego.v1\\n# probe PLACEHOLDER\\ndecision := {\\\"approvals\\\": [{\\\"role\\\": \\\"approver\\\", \\\"count\\\": 1, \\\"reason\\\": \\\"probe\\\"}]}\\n\") { position } }",
        ),
        Operation::ManageReleases => {
            ("/graphql", "mutation { transitionRelease(id: \"REL-999999\", action: BUILD) { id } }")
        }
        Operation::Deploy => ("/graphql", "mutation { reportDeployment(id: \"UNKNOWN\", outcome: STARTED) { id } }"),
        Operation::RequestRedaction => {
            ("/graphql", "mutation { requestRedaction(input: { positions: [\"999999\"], reason: \"probe\" }) { id } }")
        }
        Operation::ApproveRedaction => {
            ("/graphql", "mutation { approveRedaction(input: { id: \"UNKNOWN\" }) { unsaltedPositions } }")
        }
        Operation::ManageChangeTemplates => (
            "/graphql",
            "mutation { createChangeTemplate(input: { name: \"probe PLACEHOLDER\", title: \"t\", description: \"d\", backOutPlan: \"b\", allowedClasses: [\"host\"] }) { position } }",
        ),
    }
}

/// The operations one probe stands for: approving is one mutation for both authorities (the
/// change's type decides which applies), and open to anyone taking part in changes, because
/// an approval policy may name a service owner as the authority (the decider checks).
fn covered_by(operation: Operation) -> Vec<Operation> {
    match operation {
        Operation::ApproveChange | Operation::ApproveEmergencyChange => {
            vec![Operation::ApproveChange, Operation::ApproveEmergencyChange, Operation::CommentChange]
        }
        _ => vec![operation],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_allowed_exactly_to_the_roles_the_matrix_names() {
    let server = TestServer::start().await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let name = format!("only-{}", role.as_str());
        tokens.push((role, server.principal_with_token(&name, &[graphql_role(role)]).await));
    }
    server
        .ok(
            &server.admin_token,
            "mutation { declareClassControl(class: \"team\", controlled: false, reason: \"probes\") { position } }",
            json!({}),
        )
        .await;
    let requester = server.principal_with_token("probe-requester", &["EDITOR"]).await;
    let draft = server
        .ok(
            &requester,
            "mutation { draftChange(input: { type: NORMAL, title: \"probe draft\" }) { change { id } } }",
            json!({}),
        )
        .await;
    let draft =
        draft["draftChange"]["change"]["id"].as_str().unwrap_or_else(|| panic!("draft id in {draft}")).to_owned();
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut probe = 0;
    for operation in Operation::ALL {
        for (role, token) in &tokens {
            let expected = covered_by(operation)
                .iter()
                .any(|op| PERMISSIONS.iter().find(|(o, _)| o == op).expect("in the matrix").1.contains(role));
            let (path, query) = exercise(operation);
            let permitted = match path {
                "/metrics" => {
                    let response =
                        server.client.get(server.url("/metrics")).bearer_auth(token).send().await.expect("get");
                    match response.status().as_u16() {
                        200 => true,
                        403 => false,
                        other => panic!("/metrics answered {other}"),
                    }
                }
                "ws" => subscription_permitted(&server, token).await,
                _ => {
                    probe += 1;
                    let query = query
                        .replace("PLACEHOLDER", &probe.to_string())
                        .replace("DRAFT", &draft)
                        .replace("UNKNOWN", &unknown);
                    let (status, body) = server.graphql(token, &query, json!({})).await;
                    assert_eq!(status, 200);
                    match error_code(&body).as_str() {
                        "" | "NOT_FOUND" => true,
                        "FORBIDDEN" => false,
                        other => panic!("{operation} as {role}: unexpected error {other}: {body}"),
                    }
                }
            };
            assert_eq!(permitted, expected, "{operation} as {role}");
        }
    }
}

fn graphql_role(role: Role) -> &'static str {
    match role {
        Role::Viewer => "VIEWER",
        Role::Auditor => "AUDITOR",
        Role::Editor => "EDITOR",
        Role::ChangeManager => "CHANGE_MANAGER",
        Role::Approver => "APPROVER",
        Role::EmergencyApprover => "EMERGENCY_APPROVER",
        Role::Deployer => "DEPLOYER",
        Role::Admin => "ADMIN",
    }
}

/// Subscribes over WebSocket; true if the server accepted the subscription (an event arrives),
/// false if it answered with a FORBIDDEN error.
async fn subscription_permitted(server: &TestServer, token: &str) -> bool {
    let mut socket = ws::connect(server, Some(token)).await;
    ws::init(&mut socket, json!({})).await;
    ws::subscribe(&mut socket, "1", "subscription { events(after: 0) { position } }").await;
    let message = ws::next_json(&mut socket).await;
    match ws::first_error(&message) {
        None if message["type"] == "next" => true,
        Some(error) => {
            assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{message}");
            false
        }
        None => panic!("unexpected message {message}"),
    }
}

#[tokio::test]
async fn missing_malformed_unknown_and_wrong_scheme_tokens_get_401_with_a_reason() {
    let server = TestServer::start().await;
    let post = |auth: Option<&'static str>| {
        let mut request = server.client.post(server.url("/graphql")).json(&json!({ "query": "{ head { position } }" }));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        request.send()
    };
    let cases: [(Option<&'static str>, &str); 4] = [
        (None, "missing bearer token"),
        (Some("Basic YWRtaW46YWRtaW4="), "must be `Bearer <token>`"),
        (Some("Bearer not-a-token"), "not a cmdb token"),
        (Some("Bearer cmdb_0000000000000000000000000000000000000000000000000000000000000000"), "not known"),
    ];
    for (auth, reason) in cases {
        let response = post(auth).await.expect("request");
        assert_eq!(response.status().as_u16(), 401, "{auth:?}");
        assert!(response.headers().get("www-authenticate").is_some());
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
        assert!(body["errors"][0]["message"].as_str().expect("message").contains(reason), "{body}");
    }
    let metrics = server.client.get(server.url("/metrics")).send().await.expect("get");
    assert_eq!(metrics.status().as_u16(), 401);
    // Open routes.
    for path in ["/healthz", "/readyz", "/graphql"] {
        let response = server.client.get(server.url(path)).send().await.expect("get");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    let graphiql = server.client.get(server.url("/graphql")).send().await.expect("get").text().await.expect("text");
    assert!(graphiql.contains("graphiql"), "GET /graphql serves GraphiQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_as_soon_as_the_revocation_returns() {
    let server = TestServer::start().await;
    let token = server.principal_with_token("pipeline", &["VIEWER"]).await;
    let me = server.ok(&token, "{ me { principal tokenId } }", json!({})).await;
    let token_id = me["me"]["tokenId"].as_str().expect("id").to_owned();
    server
        .ok(
            &server.admin_token,
            "mutation($id: ID!) { revokeToken(tokenId: $id, reason: \"leaked\") { position } }",
            json!({ "id": token_id }),
        )
        .await;
    let (status, body) = server.graphql(&token, "{ me { principal } }", json!({})).await;
    assert_eq!(status, 401);
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("revoked"));
    // Revoking twice is a clear error, and changes nothing.
    let head = server.head().await;
    let (_, body) = server
        .graphql(
            &server.admin_token,
            "mutation($id: ID!) { revokeToken(tokenId: $id) { position } }",
            json!({ "id": token_id }),
        )
        .await;
    assert_eq!(error_code(&body), "FAILED_PRECONDITION", "{body}");
    assert_eq!(server.head().await, head);
    // A WebSocket with the revoked token is refused at the upgrade.
    let refused = tokio_tungstenite::connect_async(ws::request(&server, Some(&token))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected 401 at the upgrade, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_mutations_record_actor_and_correlation_id_and_refuse_bad_input() {
    let server = TestServer::start().await;
    let response = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&server.admin_token)
        .header("X-Request-Id", "req-4711")
        .json(&json!({ "query": "mutation { createPrincipal(input: { name: \"alice\", kind: PERSON, roles: [APPROVER] }) { position principal { roles } } }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "req-4711");
    let body: serde_json::Value = response.json().await.expect("json");
    let position = body["data"]["createPrincipal"]["position"].as_u64().expect("position");
    let event = server
        .ok(
            &server.admin_token,
            "query($p: Position!) { event(position: $p) { type metadata { principal tokenId correlationId source } } }",
            json!({ "p": position }),
        )
        .await;
    let metadata = &event["event"]["metadata"];
    assert_eq!(event["event"]["type"], "principal.created");
    assert_eq!(metadata["principal"], "admin");
    assert!(metadata["tokenId"].as_str().is_some());
    assert_eq!(metadata["correlationId"], "req-4711");
    assert_eq!(metadata["source"], "api");

    // Generated correlation ids come back too.
    let response = server.client.get(server.url("/healthz")).send().await.expect("get");
    assert!(response.headers().get("x-request-id").is_some());
    // A bad X-Request-Id is refused.
    let response =
        server.client.get(server.url("/healthz")).header("X-Request-Id", "x".repeat(200)).send().await.expect("get");
    assert_eq!(response.status().as_u16(), 400);

    // Bad input: each a clear error, nothing written.
    let head = server.head().await;
    let bad = [
        ("mutation { createPrincipal(input: { name: \"Alice Smith\", kind: PERSON }) { position } }", "BAD_USER_INPUT"),
        ("mutation { createPrincipal(input: { name: \"alice\", kind: PERSON }) { position } }", "ALREADY_EXISTS"),
        ("mutation { grantRole(principal: \"nobody\", role: VIEWER) { position } }", "NOT_FOUND"),
        ("mutation { revokeRole(principal: \"admin\", role: ADMIN) { position } }", "FAILED_PRECONDITION"),
        ("mutation { revokeToken(tokenId: \"not-a-uuid\") { position } }", "BAD_USER_INPUT"),
        (
            "mutation { createToken(principal: \"alice\", expiresAt: \"2001-01-01T00:00:00Z\") { token } }",
            "BAD_USER_INPUT",
        ),
    ];
    for (query, code) in bad {
        let (status, body) = server.graphql(&server.admin_token, query, json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(error_code(&body), code, "{query}: {body}");
        assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.len() > 10));
    }
    // Not even valid GraphQL input: an unknown enum value, an unknown field, a bad date.
    for query in [
        "mutation { grantRole(principal: \"alice\", role: SUPERUSER) { position } }",
        "{ head { position nonsense } }",
        "mutation { createToken(principal: \"alice\", expiresAt: \"soon\") { token } }",
    ] {
        let (_, body) = server.graphql(&server.admin_token, query, json!({})).await;
        assert!(body["errors"][0]["message"].as_str().is_some(), "{query}: {body}");
        assert!(body["data"].is_null(), "{query}: {body}");
    }
    assert_eq!(server.head().await, head, "refused mutations wrote nothing");
}

#[tokio::test]
async fn malformed_bodies_get_400_and_change_nothing() {
    let server = TestServer::start().await;
    let head = server.head().await;
    for body in ["{not json", "[1, 2", "\"just a string\"", ""] {
        let response = server
            .client
            .post(server.url("/graphql"))
            .bearer_auth(&server.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 400, "{body:?}");
        let json: serde_json::Value = response.json().await.expect("json");
        assert_eq!(json["errors"][0]["extensions"]["code"], "BAD_REQUEST");
        assert!(json["errors"][0]["message"].as_str().expect("message").contains("not a GraphQL request"));
    }
    assert_eq!(server.head().await, head);
}
