//! Deployment tooling in, against the real server: GitHub's real webhook payloads
//! (`@octokit/webhooks-examples`, in fixtures/data/github) signed as GitHub signs them, and the
//! CDEvents spec's conformance events (../shared/data/cdevents) wrapped in CloudEvents in each
//! HTTP mode. A deployment with no change becomes an unauthorised change with a retrospective
//! emergency change; one under an implementing change edits its CI under it; incidents land on
//! the mapped CIs; every bad input (forged or missing signature, replay, wrong content type,
//! truncated or non-JSON body, malformed CDEvent) is refused with nothing appended.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use std::path::PathBuf;

use cmdb_api::server::hooks::github::sign;
use common::{TestServer, settings};
use serde_json::{Value, json};

const SECRET: &str = "a-webhook-secret-for-tests";

fn github_fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/github").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cdevents_dir(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cdevents").join(version)
}

/// A conformance CDEvent of the spec, or `None` (with a note) when ../shared is absent.
fn conformance(version: &str, name: &str) -> Option<Value> {
    let path = cdevents_dir(version).join("conformance").join(format!("{name}.json"));
    match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("conformance JSON")),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{}: {e}", path.display()),
        Err(e) => {
            eprintln!("skipped: {} is not here ({e})", path.display());
            None
        }
    }
}

/// Checks a CDEvent against the spec's own JSON schema for its type.
fn assert_valid_cdevent(version: &str, event: &Value) {
    let event_type = event["context"]["type"].as_str().expect("type");
    let mut parts = event_type.trim_start_matches("dev.cdevents.").split('.');
    let (subject, predicate) = (parts.next().expect("subject"), parts.next().expect("predicate"));
    let path = cdevents_dir(version).join("schemas").join(format!("{subject}{predicate}.json"));
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).expect("schema")).expect("schema JSON");
    let validator = jsonschema::options()
        .with_retriever(LocalSchemas(cdevents_dir(version).join("schemas")))
        .build(&schema)
        .expect("a valid schema");
    let errors: Vec<String> = validator.iter_errors(event).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{event_type} against {}: {errors:?}", path.display());
}

/// The spec's `$ref`s (`https://cdevents.dev/0.5.1/schema/links/...`) read from its folder.
struct LocalSchemas(PathBuf);

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.path().as_str();
        let name = path.split("/schema/").nth(1).ok_or_else(|| format!("not a CDEvents schema: {uri}"))?;
        let bytes = std::fs::read(self.0.join(format!("{name}.json")))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A CDEvent in a structured-mode CloudEvent.
fn cloudevent(cdevent: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": cdevent["context"]["id"],
        "source": cdevent["context"]["source"],
        "type": cdevent["context"]["type"],
        "time": cdevent["context"]["timestamp"],
        "datacontenttype": "application/json",
        "data": cdevent,
    })
}

async fn post_github(
    server: &TestServer,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, Value) {
    let mut request = server
        .client
        .post(server.url("/hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_signed(server: &TestServer, event: &str, delivery: &str, body: &[u8]) -> (u16, Value) {
    post_github(server, event, delivery, body, Some(sign(SECRET.as_bytes(), body))).await
}

async fn post_cdevents(server: &TestServer, token: &str, content_type: &str, body: &Value) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/hooks/cdevents"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A token for a principal the demo made (`argocd`, a deployer).
async fn token_for(server: &TestServer, name: &str) -> String {
    let data = server
        .ok(&server.admin_token, "mutation($p: String!) { createToken(principal: $p) { token } }", json!({ "p": name }))
        .await;
    data["createToken"]["token"].as_str().expect("token").to_owned()
}

/// An application CI of the demo: (id, name).
async fn application(server: &TestServer, skip: usize) -> (String, String) {
    let data = server
        .ok(
            &server.admin_token,
            "{ at { cis(filter: { classes: [\"application\"] }, first: 20) { nodes { id name } } } }",
            json!({}),
        )
        .await;
    let node = &data["at"]["cis"]["nodes"][skip];
    (node["id"].as_str().expect("id").to_owned(), node["name"].as_str().expect("name").to_owned())
}

async fn map(server: &TestServer, provider: &str, source: &str, subject: Option<&str>, ci: &str) {
    server
        .ok(
            &server.admin_token,
            "mutation($i: ToolMappingInput!) { setToolMapping(input: $i) { ci } }",
            json!({ "i": { "provider": provider, "source": source, "subject": subject, "ci": ci } }),
        )
        .await;
}

async fn ci_now(server: &TestServer, id: &str) -> Value {
    let query = "query($id: ID!) { at { ci(id: $id) { version attributes } } }";
    server.ok(&server.admin_token, query, json!({ "id": id })).await["at"]["ci"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_deliveries_catch_an_unauthorised_deployment_and_refuse_bad_input() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        demo: true,
        github_webhook_secret: Some(SECRET.parse().expect("secret")),
        ..settings()
    })
    .await;
    // The demo made the principal `github` (a deployer) the hook acts as.
    let (ci, _) = application(&server, 0).await;
    map(&server, "GITHUB", "Codertocat/Hello-World", Some("production"), &ci).await;

    // Bad input first: each refused with nothing appended.
    let created = github_fixture("deployment.1.json");
    let head = server.head().await;
    let (status, body) = post_github(&server, "deployment", "d-0", &created, None).await;
    assert_eq!((status, body["errors"][0]["extensions"]["code"].as_str()), (401, Some("BAD_SIGNATURE")), "{body}");
    let forged = sign(b"not-the-secret-at-all", &created);
    assert_eq!(post_github(&server, "deployment", "d-0", &created, Some(forged)).await.0, 401);
    let mut tampered = created.clone();
    let at = tampered.iter().position(|b| *b == b'9').expect("a digit");
    tampered[at] = b'8';
    let original_signature = sign(SECRET.as_bytes(), &created);
    assert_eq!(post_github(&server, "deployment", "d-0", &tampered, Some(original_signature)).await.0, 401);
    let truncated = &created[..created.len() / 2];
    let (status, body) = post_signed(&server, "deployment", "d-0", truncated).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("not a GitHub deployment event")),
        "{body}"
    );
    assert_eq!(post_signed(&server, "deployment", "d-0", b"payload=%7B%7D").await.0, 400);
    let form = server
        .client
        .post(server.url("/hooks/github"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "deployment")
        .header("x-github-delivery", "d-0")
        .header("x-hub-signature-256", sign(SECRET.as_bytes(), b"payload=%7B%7D"))
        .body("payload=%7B%7D")
        .send()
        .await
        .expect("post");
    assert_eq!(form.status().as_u16(), 415);
    let missing_delivery = server
        .client
        .post(server.url("/hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "deployment")
        .header("x-hub-signature-256", sign(SECRET.as_bytes(), &created))
        .body(created.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(missing_delivery.status().as_u16(), 400);
    let mut bad_state: Value = serde_json::from_slice(&github_fixture("deployment_status.1.json")).expect("json");
    bad_state["deployment_status"]["state"] = json!("exploded");
    let bad_state = serde_json::to_vec(&bad_state).expect("json");
    let (status, body) = post_signed(&server, "deployment_status", "d-0", &bad_state).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("deployment_status.state")), "{body}");
    for event in ["deployment_status", "deployment"] {
        let mut no_repository: Value =
            serde_json::from_slice(&github_fixture("deployment_status.1.json")).expect("json");
        no_repository.as_object_mut().expect("object").remove("repository");
        let no_repository = serde_json::to_vec(&no_repository).expect("json");
        let (status, body) = post_signed(&server, event, "d-0", &no_repository).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("repository.full_name is missing")),
            "{event}: {body}"
        );
    }
    assert_eq!(server.head().await, head, "no refused delivery appended anything");

    // The deployment is created with no change on the CI: an unauthorised change at once.
    let (status, body) = post_signed(&server, "deployment", "d-1", &created).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["outcome"], "recorded");
    assert_eq!(body["unauthorised"], true, "{body}");
    assert_eq!(body["state"], "requested");
    let retrospective = body["change"].as_str().expect("change").to_owned();
    let change = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { change(id: $id) { number type state retrospective approvalDueAt requester } } }",
            json!({ "id": retrospective }),
        )
        .await;
    let change = &change["at"]["change"];
    assert_eq!(change["type"], "EMERGENCY");
    assert_eq!(change["retrospective"], true);
    assert_eq!(change["state"], "IMPLEMENTED");
    assert_eq!(change["requester"], "github");
    assert!(change["approvalDueAt"].is_string() && change["number"].is_string(), "{change}");

    // GitHub redelivers: 200 duplicate, nothing appended.
    let head = server.head().await;
    let (status, body) = post_signed(&server, "deployment", "d-1", &created).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")), "{body}");
    assert_eq!(server.head().await, head);

    // The success lands on the same record: the CI now runs the commit, the edit flagged.
    let (status, body) =
        post_signed(&server, "deployment_status", "d-2", &github_fixture("deployment_status.1.json")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "succeeded");
    let deployment = body["deployment"].as_str().expect("deployment").to_owned();
    let now = ci_now(&server, &ci).await;
    assert_eq!(now["version"], "master@f95f852");
    assert_eq!(now["attributes"]["digest"], "sha1:f95f852bd8fca8fcc58a9a2d6c842781e32a215e");
    let listed = server
        .ok(
            &server.admin_token,
            "{ at { unauthorisedChanges { deployment ci environment change tool { provider source id } } } }",
            json!({}),
        )
        .await;
    let listed = listed["at"]["unauthorisedChanges"].as_array().expect("list").clone();
    assert_eq!(listed.len(), 1, "flagged once: {listed:?}");
    assert_eq!(listed[0]["deployment"], deployment.as_str());
    assert_eq!(listed[0]["change"], retrospective.as_str());
    assert_eq!(listed[0]["tool"]["id"], "145988746");
    let record = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { deployment(id: $id) { state unauthorised observedFrom { provider source id } observations { state delivery } } } }",
            json!({ "id": deployment }),
        )
        .await;
    let record = &record["at"]["deployment"];
    assert_eq!(record["unauthorised"], true);
    let states: Vec<&str> =
        record["observations"].as_array().expect("list").iter().filter_map(|o| o["state"].as_str()).collect();
    assert_eq!(states, ["PENDING", "SUCCESS"]);

    // A repository nobody mapped, and an event that is not about deployments: kept unmapped.
    let mut elsewhere: Value = serde_json::from_slice(&created).expect("json");
    elsewhere["repository"]["full_name"] = json!("Codertocat/Other");
    let (status, body) =
        post_signed(&server, "deployment", "d-3", &serde_json::to_vec(&elsewhere).expect("json")).await;
    assert_eq!((status, body["outcome"].as_str()), (202, Some("unmapped")), "{body}");
    let (status, body) = post_signed(&server, "push", "d-4", &created).await;
    assert_eq!((status, body["outcome"].as_str()), (202, Some("unmapped")), "{body}");
    let unmapped = server
        .ok(
            &server.admin_token,
            "{ at { unmappedSources { provider source count reason } deliveries { provider mapped unmapped } } }",
            json!({}),
        )
        .await;
    let sources = unmapped["at"]["unmappedSources"].as_array().expect("list");
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert!(sources.iter().any(|s| s["source"] == "Codertocat/Other" && s["count"] == 1));
    assert_eq!(unmapped["at"]["deliveries"], json!([{ "provider": "GITHUB", "mapped": 2, "unmapped": 2 }]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_deployment_under_an_implementing_change_edits_its_ci_under_it() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        demo: true,
        github_webhook_secret: Some(SECRET.parse().expect("secret")),
        ..settings()
    })
    .await;
    // The demo made the principal `github` (a deployer) the hook acts as.
    let dora = server.principal_with_token("dora", &["DEPLOYER"]).await;
    let eve = server.principal_with_token("eve", &["EMERGENCY_APPROVER"]).await;
    let (ci, _) = application(&server, 1).await;
    map(&server, "GITHUB", "Codertocat/Hello-World", None, &ci).await;
    let draft = server
        .ok(
            &dora,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": {
                "type": "EMERGENCY", "title": "Deploy master", "description": "hotfix", "justification": "outage",
                "backOutPlan": "redeploy the previous commit", "implementer": "dora", "scope": { "cis": [ci] }
            } }),
        )
        .await;
    let change = draft["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    for (token, mutation) in [(&dora, "submitChange"), (&eve, "approveChange"), (&dora, "startChange")] {
        server
            .ok(token, &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ position }} }}"), json!({ "id": change }))
            .await;
    }
    let (status, body) =
        post_signed(&server, "deployment_status", "s-1", &github_fixture("deployment_status.2.json")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!((body["state"].as_str(), body["unauthorised"].as_bool()), (Some("started"), Some(false)), "{body}");
    assert_eq!(body["change"], change.as_str());
    let (status, body) =
        post_signed(&server, "deployment_status", "s-2", &github_fixture("deployment_status.3.json")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "succeeded");
    let edits = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { change(id: $id) { edits { ci { id } } } } }",
            json!({ "id": change }),
        )
        .await;
    assert!(
        edits["at"]["change"]["edits"].as_array().is_some_and(|e| !e.is_empty()),
        "the CI edit names the change: {edits}"
    );
    let none = server.ok(&server.admin_token, "{ at { unauthorisedChanges { ci } } }", json!({})).await;
    assert_eq!(none["at"]["unauthorisedChanges"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdevents_in_every_http_mode_record_deployments_and_incidents() {
    let Some(deployed) = conformance("v0.5.1", "service_deployed") else { return };
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let argo = token_for(&server, "argocd").await;
    let viewer = server.principal_with_token("vera", &["VIEWER"]).await;
    let (ci, _) = application(&server, 2).await;
    let (service_ci, _) = application(&server, 3).await;
    map(&server, "CDEVENTS", "/event/source/123", Some("mySubject123"), &ci).await;
    map(&server, "CDEVENTS", "/clusterA/namespaceB", Some("myApp"), &service_ci).await;
    assert_valid_cdevent("v0.5.1", &deployed);

    // Refusals first: nothing appended.
    let head = server.head().await;
    let structured = cloudevent(&deployed);
    assert_eq!(post_cdevents(&server, &viewer, "application/cloudevents+json", &structured).await.0, 403);
    assert_eq!(post_cdevents(&server, &argo, "text/plain", &structured).await.0, 415);
    let mut no_environment = deployed.clone();
    no_environment["subject"]["content"].as_object_mut().expect("content").remove("environment");
    let (status, body) =
        post_cdevents(&server, &argo, "application/cloudevents+json", &cloudevent(&no_environment)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("subject.content.environment.id")),
        "{body}"
    );
    let (status, body) =
        post_cdevents(&server, &argo, "application/cloudevents+json", &json!({"specversion": "1.0", "id": "x"})).await;
    assert_eq!(status, 400, "{body}");
    let mut second = deployed.clone();
    second["context"]["id"] = json!("second-event");
    let batch = json!([cloudevent(&second), cloudevent(&no_environment)]);
    let (status, body) = post_cdevents(&server, &argo, "application/cloudevents-batch+json", &batch).await;
    assert_eq!(status, 400, "a batch with one malformed event records none: {body}");
    assert!(
        body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("[1]") || m.contains("environment")),
        "{body}"
    );
    assert_eq!(server.head().await, head);

    // A dashboard watches unauthorised changes as they happen.
    let mut socket = common::ws::connect(&server, None).await;
    common::ws::init(&mut socket, json!({ "Authorization": format!("Bearer {viewer}") })).await;
    let from = server.head().await;
    let watch = format!(
        "subscription {{ unauthorisedChanges(after: {from}) {{ ci environment tool {{ provider source }} }} }}"
    );
    common::ws::subscribe(&mut socket, "u", &watch).await;

    // Structured mode: service.deployed with no change on the CI is unauthorised.
    let (status, body) = post_cdevents(&server, &argo, "application/cloudevents+json", &structured).await;
    let pushed = common::ws::next_json(&mut socket).await;
    assert_eq!(pushed["payload"]["data"]["unauthorisedChanges"]["ci"], ci.as_str(), "{pushed}");
    assert_eq!(pushed["payload"]["data"]["unauthorisedChanges"]["tool"]["provider"], "CDEVENTS");
    assert_eq!(status, 202, "{body}");
    assert_eq!((body["state"].as_str(), body["unauthorised"].as_bool()), (Some("succeeded"), Some(true)), "{body}");
    let now = ci_now(&server, &ci).await;
    assert_eq!(now["attributes"]["digest"], "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427");
    assert_eq!(now["attributes"]["artifact"], "myapp");
    // Idempotent on (source, id).
    let head = server.head().await;
    let (status, body) = post_cdevents(&server, &argo, "application/cloudevents+json", &structured).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(server.head().await, head);

    // Binary mode: the CDEvent is the body, the envelope in ce-* headers (a 0.4 event).
    if let Some(mut upgraded) = conformance("v0.4.1", "service_upgraded") {
        assert_valid_cdevent("v0.4.1", &upgraded);
        // The spec's conformance events share one id: this one is another event.
        upgraded["context"]["id"] = json!("0b6e3f5a-upgraded");
        let response = server
            .client
            .post(server.url("/hooks/cdevents"))
            .bearer_auth(&argo)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", upgraded["context"]["id"].as_str().expect("id"))
            .header("ce-source", upgraded["context"]["source"].as_str().expect("source"))
            .header("ce-type", upgraded["context"]["type"].as_str().expect("type"))
            .body(upgraded.to_string())
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["outcome"], "recorded", "{body}");
    }

    // A batch: an incident on the service, an unknown type kept unmapped, a change merged.
    let incident = conformance("v0.5.1", "incident_detected").expect("with the rest of the spec");
    assert_valid_cdevent("v0.5.1", &incident);
    let merged = conformance("v0.5.1", "change_merged").expect("with the rest of the spec");
    assert_valid_cdevent("v0.5.1", &merged);
    let unknown = json!({"specversion": "1.0", "id": "u-1", "source": "/somewhere", "type": "com.example.unknown", "data": {"x": 1}});
    let batch = json!([cloudevent(&incident), unknown, cloudevent(&merged)]);
    let (status, body) = post_cdevents(&server, &argo, "application/cloudevents-batch+json", &batch).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(3), "{body}");
    let incidents = server
        .ok(
            &server.admin_token,
            "{ at { incidents { tool { id } cis priority resolvedAt } unmappedSources { source } } }",
            json!({}),
        )
        .await;
    let list = incidents["at"]["incidents"].as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["cis"], json!([service_ci]));
    assert_eq!(list[0]["priority"], 3, "medium impact and urgency by default");
    assert!(list[0]["resolvedAt"].is_null());
    assert!(
        incidents["at"]["unmappedSources"].as_array().is_some_and(|s| s.iter().any(|x| x["source"] == "/somewhere"))
    );
    // Resolved by the spec's incident.resolved of the same incident.
    if let Some(mut resolved) = conformance("v0.5.1", "incident_resolved") {
        assert_valid_cdevent("v0.5.1", &resolved);
        resolved["context"]["id"] = json!("5b1c8e2e-resolved");
        let (status, body) =
            post_cdevents(&server, &argo, "application/cloudevents+json", &cloudevent(&resolved)).await;
        assert_eq!(status, 202, "{body}");
        let after = server.ok(&server.admin_token, "{ at { incidents { resolvedAt } } }", json!({})).await;
        assert!(after["at"]["incidents"][0]["resolvedAt"].is_string(), "{after} {body}");
    }

    // A person reports an incident on the CI the unauthorised deployment changed: the
    // retrospective change is followed by an incident (CH-10), and both show in the report.
    server
        .ok(
            &argo,
            "mutation($i: IncidentInput!) { reportIncident(input: $i) { priority cis } }",
            json!({ "i": { "id": "INC-1", "source": "pagerduty", "title": "Checkout errors", "impact": "HIGH", "urgency": "HIGH", "cis": [ci] } }),
        )
        .await;
    let report = server
        .ok(
            &server.admin_token,
            "query($f: DateTime!, $t: DateTime!) { at { changeReport(from: $f, to: $t, period: MONTH) { totals { unauthorised followedByIncidents retrospective } } } }",
            json!({ "f": "2025-01-01T00:00:00Z", "t": "2035-01-01T00:00:00Z" }),
        )
        .await;
    let totals = &report["at"]["changeReport"]["totals"];
    assert_eq!(totals["unauthorised"], 2, "service.deployed and the 0.4 service.upgraded: {totals}");
    assert!(totals["followedByIncidents"].as_u64().is_some_and(|n| n >= 1), "{totals}");
    let (status, body) = server
        .graphql(
            &argo,
            "mutation($i: IncidentInput!) { reportIncident(input: $i) { priority } }",
            json!({ "i": { "id": "INC-1", "source": "pagerduty", "title": "again", "impact": "LOW", "urgency": "LOW", "cis": [ci] } }),
        )
        .await;
    assert_eq!((status, common::error_code(&body).as_str()), (200, "ALREADY_EXISTS"), "{body}");
}

fn to_template_value(value: &Value) -> gtmpl::Value {
    match value {
        Value::Null => gtmpl::Value::Nil,
        Value::Bool(b) => gtmpl::Value::Bool(*b),
        Value::Number(n) => {
            n.as_i64().map_or_else(|| gtmpl::Value::from(n.as_f64().unwrap_or(0.0)), gtmpl::Value::from)
        }
        Value::String(s) => gtmpl::Value::String(s.clone()),
        Value::Array(items) => gtmpl::Value::Array(items.iter().map(to_template_value).collect()),
        Value::Object(map) => {
            gtmpl::Value::Object(map.iter().map(|(k, v)| (k.clone(), to_template_value(v))).collect())
        }
    }
}

/// The webhook bodies of the Argo CD notification templates, rendered for `application`.
fn argo_bodies(application: &Value) -> Vec<(String, Value)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/integrations/argocd-notifications.yaml");
    let text = std::fs::read_to_string(&path).expect("the notifications ConfigMap");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("YAML");
    let data = docs[0]["data"].as_hash().expect("data");
    let context =
        to_template_value(&json!({ "app": application, "context": { "argocdUrl": "https://argocd.example.com" } }));
    let mut bodies = Vec::new();
    for (key, value) in data {
        let name = key.as_str().expect("key");
        let Some(template) = name.strip_prefix("template.") else { continue };
        let spec =
            yaml_rust2::YamlLoader::load_from_str(value.as_str().expect("template text")).expect("template YAML");
        let body = spec[0]["webhook"]["cmdb"]["body"].as_str().expect("a webhook body for the cmdb service");
        let rendered = gtmpl::template(body, context.clone()).unwrap_or_else(|e| panic!("{template}: {e}"));
        let json: Value =
            serde_json::from_str(&rendered).unwrap_or_else(|e| panic!("{template} renders JSON: {e}\n{rendered}"));
        bodies.push((template.to_owned(), json));
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_cd_notifications_render_to_cdevents_the_engine_records() {
    let application: Value = serde_json::from_slice(
        &std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/argocd/application.json"))
            .expect("the sample Application"),
    )
    .expect("JSON");
    let bodies = argo_bodies(&application);
    let names: Vec<&str> = bodies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let argo = token_for(&server, "argocd").await;
    let (ci, _) = application_ci(&server).await;
    map(&server, "CDEVENTS", "/argocd", Some("payments-api"), &ci).await;
    for (name, body) in &bodies {
        if cdevents_dir("v0.4.1").exists() {
            assert_valid_cdevent("v0.4.1", &body["data"]);
        }
        let (status, answer) = post_cdevents(&server, &argo, "application/cloudevents+json", body).await;
        assert_eq!(status, 202, "{name}: {answer}");
        match name.as_str() {
            "cmdb-service-deployed" => {
                assert_eq!(answer["outcome"], "recorded", "{answer}");
                assert_eq!(answer["environment"], "production");
                assert_eq!(answer["ci"], ci.as_str());
            }
            _ => assert_eq!(
                (answer["outcome"].as_str(), answer["cis"].clone()),
                (Some("incident"), json!([ci])),
                "{name}: {answer}"
            ),
        }
    }
    let now = ci_now(&server, &ci).await;
    assert_eq!(now["version"], "5f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(now["attributes"]["artifact"], "https://github.com/acme/payments-deploy.git");
    let incidents = server.ok(&server.admin_token, "{ at { incidents { priority title } } }", json!({})).await;
    let priorities: Vec<u64> =
        incidents["at"]["incidents"].as_array().expect("list").iter().filter_map(|i| i["priority"].as_u64()).collect();
    assert_eq!(priorities.len(), 2);
    assert!(
        priorities.contains(&1) && priorities.contains(&2),
        "degraded: high/high, sync failed: medium/high: {priorities:?}"
    );
}

async fn application_ci(server: &TestServer) -> (String, String) {
    application(server, 4).await
}

/// GitHub's two endpoints, as the engine calls them: an installation token bought with the
/// App's RS256 JWT, then the protection rule's callback with that token.
#[derive(Clone, Default)]
struct FakeGithub {
    calls: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

async fn fake_token(
    axum::extract::State(github): axum::extract::State<FakeGithub>,
    axum::extract::Path(installation): axum::extract::Path<u64>,
    headers: axum::http::HeaderMap,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let public =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/github/test-app-key.pub.pem"))
            .expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).expect("public key");
    let Ok(claims) = jsonwebtoken::decode::<Value>(jwt, &key, &validation) else {
        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "bad JWT"})));
    };
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    github.calls.lock().expect("lock").push((format!("token {installation} {accept}"), claims.claims));
    (
        axum::http::StatusCode::CREATED,
        axum::Json(json!({"token": "ghs_installation", "expires_at": "2099-01-01T00:00:00Z"})),
    )
}

async fn fake_callback(
    axum::extract::State(github): axum::extract::State<FakeGithub>,
    axum::extract::Path((owner, repo, run)): axum::extract::Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::http::StatusCode {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer ghs_installation") {
        return axum::http::StatusCode::UNAUTHORIZED;
    }
    github.calls.lock().expect("lock").push((format!("callback {owner}/{repo} {run}"), body));
    axum::http::StatusCode::NO_CONTENT
}

async fn start_fake_github() -> (FakeGithub, String) {
    let github = FakeGithub::default();
    let app = axum::Router::new()
        .route("/app/installations/{installation}/access_tokens", axum::routing::post(fake_token))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{run}/deployment_protection_rule",
            axum::routing::post(fake_callback),
        )
        .with_state(github.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (github, format!("http://{address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protection_rule_waits_for_approval_across_a_restart_and_is_answered_as_the_app() {
    let (github, api) = start_fake_github().await;
    let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/github/test-app-key.pem");
    let configured = cmdb_api::settings::ServeSettings {
        demo: true,
        github_webhook_secret: Some(SECRET.parse().expect("secret")),
        github_api_url: api.clone(),
        github_app_id: Some(4242),
        github_app_private_key_file: Some(key),
        ..settings()
    };
    let server = TestServer::start_with(configured.clone()).await;
    let mark = server.principal_with_token("mark", &["CHANGE_MANAGER"]).await;
    let quinn = server.principal_with_token("quinn", &["APPROVER"]).await;
    server
        .ok(
            &server.admin_token,
            "mutation($t: String!) { loadPolicy(name: \"one approver\", text: $t) { position } }",
            json!({ "t": "package cmdb.change\nimport rego.v1\ndecision := {\"auto_approve\": false, \"deny\": [], \"approvals\": [{\"role\": \"approver\", \"count\": 1, \"reason\": \"one approver\"}]}\n" }),
        )
        .await;
    let (ci, _) = application(&server, 0).await;
    map(&server, "GITHUB", "Codertocat/Hello-World", Some("production"), &ci).await;
    let template = server
        .ok(
            &mark,
            "mutation { createChangeTemplate(input: { name: \"deploy\", title: \"Deploy\", description: \"Deploy a new version\", backOutPlan: \"Redeploy the previous commit\", allowedClasses: [\"application\"] }) { template { id } } }",
            json!({}),
        )
        .await;
    let template = template["createChangeTemplate"]["template"]["id"].as_str().expect("template").to_owned();
    server
        .ok(
            &mark,
            "mutation($ci: ID!, $t: ID) { setPipelineTemplate(ci: $ci, template: $t) }",
            json!({ "ci": ci, "t": template }),
        )
        .await;

    // GitHub asks: the gate opens the run's change, which needs an approver: pending.
    let mut event: Value = serde_json::from_slice(&github_fixture("deployment.1.json")).expect("json");
    let callback = format!("{api}/repos/Codertocat/Hello-World/actions/runs/4711/deployment_protection_rule");
    event["action"] = json!("requested");
    event["environment"] = json!("production");
    event["event"] = json!("push");
    event["deployment_callback_url"] = json!(callback);
    event["installation"] = json!({ "id": 99 });
    let body = serde_json::to_vec(&event).expect("json");
    let (status, answer) = post_signed(&server, "deployment_protection_rule", "p-1", &body).await;
    assert_eq!((status, answer["outcome"].as_str()), (202, Some("waiting")), "{answer}");
    let mut change = Value::Null;
    for _ in 0..200 {
        let data = server
            .ok(
                &server.admin_token,
                "{ at { changes(filter: { states: [ASSESSED] }) { nodes { id number implementer } } } }",
                json!({}),
            )
            .await;
        if let Some(found) =
            data["at"]["changes"]["nodes"].as_array().and_then(|c| c.iter().find(|c| c["implementer"] == "github"))
        {
            change = found.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let number = change["number"].as_str().expect("the run's change is open, waiting for approval").to_owned();
    assert!(github.calls.lock().expect("lock").is_empty(), "nothing answered while pending");

    // The server restarts; the waiting callback is in the log.
    let TestServer { server: running, dir, admin_token, client, .. } = server;
    if let Some(running) = running {
        running.shutdown().await;
    }
    let restarted = cmdb_api::server::Server::start(dir.path(), configured, cmdb_api::server::StartOptions::default())
        .await
        .expect("restart");
    let server = TestServer {
        base: format!("http://{}", restarted.local_addr()),
        server: Some(restarted),
        admin_token,
        dir,
        client,
    };
    server.ok(&quinn, "mutation($id: ID!) { approveChange(id: $id) { position } }", json!({ "id": number })).await;
    let mut answered = Vec::new();
    for _ in 0..400 {
        answered = github.calls.lock().expect("lock").clone();
        if answered.iter().any(|(what, _)| what.starts_with("callback")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let token_call =
        answered.iter().find(|(what, _)| what.starts_with("token")).expect("an installation token was bought");
    assert_eq!(token_call.0, "token 99 application/vnd.github+json");
    assert_eq!(token_call.1["iss"], "4242", "the JWT names the App");
    let (what, body) =
        answered.iter().find(|(what, _)| what.starts_with("callback")).expect("the callback was answered");
    assert_eq!(what, "callback Codertocat/Hello-World 4711");
    assert_eq!(body["environment_name"], "production");
    assert_eq!(body["state"], "approved", "{body}");
    assert!(body["comment"].as_str().is_some_and(|c| c.contains(&number)), "the comment names the change: {body}");
    let mut server = server;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_refuse_oversized_bodies_limit_each_source_and_need_their_configuration() {
    // Without a secret the GitHub hook is off.
    let unconfigured = TestServer::start().await;
    let (status, body) = post_signed(&unconfigured, "push", "u-1", b"{}").await;
    assert_eq!((status, body["errors"][0]["extensions"]["code"].as_str()), (503, Some("UNAVAILABLE")), "{body}");

    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        github_webhook_secret: Some(SECRET.parse().expect("secret")),
        hook_deliveries_per_second: 1,
        max_request_body_bytes: 64 * 1024,
        ..settings()
    })
    .await;
    let argo = server.principal_with_token("github", &["DEPLOYER"]).await;
    let head = server.head().await;
    let huge = vec![b' '; 64 * 1024 + 1];
    let (status, body) = post_signed(&server, "push", "big-1", &huge).await;
    assert_eq!((status, body["errors"][0]["extensions"]["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{body}");
    let (status, _) =
        post_cdevents(&server, &argo, "application/cloudevents+json", &json!({ "pad": " ".repeat(64 * 1024) })).await;
    assert_eq!(status, 413);
    let (status, _) = post_cdevents(&server, &argo, "application/cloudevents+json", &json!("not an event")).await;
    assert_eq!(status, 400);
    let response = server
        .client
        .post(server.url("/hooks/cdevents"))
        .bearer_auth(&argo)
        .header("content-type", "application/cloudevents+json")
        .body("{\"specversion\": \"1.0\", \"id\": \"trunc")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 400, "a truncated body");
    assert_eq!(server.head().await, head, "nothing recorded");

    // GraphQL inputs of tooling: refused with a code, nothing recorded.
    let head = server.head().await;
    let (_, body) = server
        .graphql(
            &server.admin_token,
            "mutation { setToolMapping(input: { provider: GITHUB, source: \"octo/app\", ci: \"01890a5d-ac96-774b-bcce-b302099a8057\" }) { ci } }",
            json!({}),
        )
        .await;
    assert!(!common::error_code(&body).is_empty(), "an unknown CI: {body}");
    let (_, body) = server
        .graphql(
            &server.admin_token,
            "mutation { setToolMapping(input: { provider: GITHUB, source: \"octo/app\", ci: \"not-an-id\" }) { ci } }",
            json!({}),
        )
        .await;
    assert_eq!(common::error_code(&body), "BAD_USER_INPUT", "{body}");
    let (_, body) = server
        .graphql(
            &server.admin_token,
            "mutation { removeToolMapping(provider: CDEVENTS, source: \"/nowhere\") }",
            json!({}),
        )
        .await;
    assert_eq!(common::error_code(&body), "NOT_FOUND", "{body}");
    let (_, body) = server
        .graphql(&argo, "mutation { resolveIncident(id: \"INC-0\", source: \"pagerduty\") { title } }", json!({}))
        .await;
    assert_eq!(common::error_code(&body), "NOT_FOUND", "{body}");
    let (_, body) = server
        .graphql(&argo, "mutation { setToolMapping(input: { provider: GITHUB, source: \"octo/app\", ci: \"01890a5d-ac96-774b-bcce-b302099a8057\" }) { ci } }", json!({}))
        .await;
    assert_eq!(common::error_code(&body), "FORBIDDEN", "a deployer may not map: {body}");
    assert_eq!(server.head().await, head, "nothing recorded");

    // One delivery a second with a burst of two per repository: the third is refused.
    let push = json!({ "repository": { "full_name": "octo/busy" } }).to_string().into_bytes();
    assert_eq!(post_signed(&server, "push", "r-1", &push).await.0, 202);
    assert_eq!(post_signed(&server, "push", "r-2", &push).await.0, 202);
    let head = server.head().await;
    let response = server
        .client
        .post(server.url("/hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "r-3")
        .header("x-hub-signature-256", sign(SECRET.as_bytes(), &push))
        .body(push.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(server.head().await, head, "a refused delivery records nothing");
    // Another repository has its own bucket.
    let other = json!({ "repository": { "full_name": "octo/quiet" } }).to_string().into_bytes();
    assert_eq!(post_signed(&server, "push", "q-1", &other).await.0, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unauthorised_deployments_each_get_their_own_retrospective_change() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        demo: true,
        github_webhook_secret: Some(SECRET.parse().expect("secret")),
        ..settings()
    })
    .await;
    let data = server
        .ok(
            &server.admin_token,
            "{ at { cis(filter: { classes: [\"application\"], statuses: [LIVE] }, first: 16) { nodes { id } } } }",
            json!({}),
        )
        .await;
    let cis: Vec<String> = data["at"]["cis"]["nodes"]
        .as_array()
        .expect("cis")
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    assert!(cis.len() >= 8, "{cis:?}");
    for (i, ci) in cis.iter().enumerate() {
        map(&server, "GITHUB", &format!("octo/app-{i}"), None, ci).await;
    }
    let template: Value = serde_json::from_slice(&github_fixture("deployment_status.1.json")).expect("json");
    let posts = cis.iter().enumerate().map(|(i, _)| {
        let mut body = template.clone();
        body["repository"]["full_name"] = json!(format!("octo/app-{i}"));
        body["deployment"]["id"] = json!(9_000 + i);
        let body = serde_json::to_vec(&body).expect("json");
        let server = &server;
        async move { post_signed(server, "deployment_status", &format!("c-{i}"), &body).await }
    });
    let answers = futures::future::join_all(posts).await;
    let mut changes = std::collections::BTreeSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body["unauthorised"], true, "{body}");
        changes.insert(body["change"].as_str().expect("change").to_owned());
    }
    assert_eq!(changes.len(), cis.len(), "one retrospective change each");
    let listed = server.ok(&server.admin_token, "{ at { unauthorisedChanges { change } } }", json!({})).await;
    assert_eq!(listed["at"]["unauthorisedChanges"].as_array().map(Vec::len), Some(cis.len()));
}
