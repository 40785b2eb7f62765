//! Releases, deployments and the deployment gate against the real server and the real `cmdb`
//! binary, as a pipeline and a release manager use them: a pipeline held by `cmdb gate --wait`
//! until its change is approved, the deployment reported and applied to the CMDB, a roll-back
//! restoring the previous versions at every moment after; releases accepted only by the named
//! role and refused on a digest mismatch; the gate inside a freeze; 16 identical concurrent
//! calls opening one change; and bad input refused with nothing appended.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use std::process::Stdio;

use common::{TestServer, error_code, settings};
use serde_json::{Value, json};

const SHA_OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const SHA_NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

const ONE_APPROVER: &str = "package cmdb.change\nimport rego.v1\ndecision := {\"auto_approve\": false, \"deny\": [], \"approvals\": [{\"role\": \"approver\", \"count\": 1, \"reason\": \"one approver\"}]}\n";
const AUTO: &str = "package cmdb.change\nimport rego.v1\ndecision := {\"auto_approve\": input.change.type == \"standard\", \"deny\": [], \"approvals\": [{\"role\": \"approver\", \"count\": 1, \"reason\": \"one approver\"}]}\n";

struct Team {
    mark: String,
    quinn: String,
    dora: String,
    eve: String,
    olga: String,
}

async fn team(server: &TestServer) -> Team {
    Team {
        mark: server.principal_with_token("mark", &["CHANGE_MANAGER"]).await,
        quinn: server.principal_with_token("quinn", &["APPROVER"]).await,
        dora: server.principal_with_token("dora", &["DEPLOYER"]).await,
        eve: server.principal_with_token("eve", &["EMERGENCY_APPROVER"]).await,
        olga: server.principal_with_token("olga", &["VIEWER"]).await,
    }
}

async fn load_policy(server: &TestServer, text: &str) {
    server
        .ok(
            &server.admin_token,
            "mutation($t: String!) { loadPolicy(name: \"tests\", text: $t) { position } }",
            json!({ "t": text }),
        )
        .await;
}

/// An application CI of the demo: (id, name, version).
async fn application(server: &TestServer, skip: usize) -> (String, String, Option<String>) {
    let data = server
        .ok(
            &server.admin_token,
            "{ at { cis(filter: { classes: [\"application\"] }, first: 20) { nodes { id name version } } } }",
            json!({}),
        )
        .await;
    let node = &data["at"]["cis"]["nodes"][skip];
    (
        node["id"].as_str().expect("id").to_owned(),
        node["name"].as_str().expect("name").to_owned(),
        node["version"].as_str().map(str::to_owned),
    )
}

/// A template for pipeline changes, named by `ci`'s service.
async fn pipeline_template(server: &TestServer, team: &Team, ci: &str) -> String {
    let data = server
        .ok(
            &team.mark,
            "mutation { createChangeTemplate(input: { name: \"deploy an application\", title: \"Deploy\", description: \"Deploy a new version\", backOutPlan: \"Redeploy the previous digest\", allowedClasses: [\"application\"] }) { template { id } } }",
            json!({}),
        )
        .await;
    let template = data["createChangeTemplate"]["template"]["id"].as_str().expect("template").to_owned();
    server
        .ok(
            &team.mark,
            "mutation($ci: ID!, $t: ID) { setPipelineTemplate(ci: $ci, template: $t) }",
            json!({ "ci": ci, "t": template }),
        )
        .await;
    template
}

/// An emergency change drafted by dora over `ci`, implemented by dora: its id.
async fn emergency_change(server: &TestServer, team: &Team, ci: &str, title: &str) -> String {
    let draft = server
        .ok(
            &team.dora,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": {
                "type": "EMERGENCY", "title": title, "description": "errors up", "justification": "outage",
                "backOutPlan": "redeploy the previous version", "implementer": "dora", "scope": { "cis": [ci] }
            } }),
        )
        .await;
    draft["draftChange"]["change"]["id"].as_str().expect("id").to_owned()
}

async fn gate(server: &TestServer, token: &str, body: &Value) -> (u16, Value) {
    let response =
        server.client.post(server.url("/api/v1/gate")).bearer_auth(token).json(body).send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ask(service: &str, run: &str, digest: &str) -> Value {
    json!({
        "service": service,
        "environment": "production",
        "artifact": { "name": "ghcr.io/acme/app", "version": "2.0.0", "digest": digest },
        "pipeline": { "provider": "github", "runId": run, "runUrl": "https://github.com/acme/app/actions/runs/1" },
    })
}

fn cmdb(server: &TestServer, token: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cmdb"));
    command.env("CMDB_URL", &server.base).env("CMDB_TOKEN", token).args(args);
    command
}

async fn ci_now(server: &TestServer, id: &str, position: Option<u64>) -> Value {
    let query = "query($id: ID!, $p: Position) { at(position: $p) { ci(id: $id) { version attributes } } }";
    server.ok(&server.admin_token, query, json!({ "id": id, "p": position })).await["at"]["ci"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_is_held_until_its_change_is_approved_deploys_and_a_roll_back_restores_the_old_versions() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let team = team(&server).await;
    load_policy(&server, ONE_APPROVER).await;
    let (ci, name, old_version) = application(&server, 0).await;
    pipeline_template(&server, &team, &ci).await;
    let before_position = server.head().await;
    let before = ci_now(&server, &ci, None).await;

    // The pipeline asks and waits; its change needs an approver.
    let args = [
        "gate",
        "--service",
        &name,
        "--environment",
        "production",
        "--artifact",
        "ghcr.io/acme/app",
        "--version",
        "2.0.0",
        "--digest",
        SHA_NEW,
        "--provider",
        "github",
        "--run-id",
        "run-42",
        "--wait",
        "60s",
    ];
    let waiting =
        cmdb(&server, &team.dora, &args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    // The change appears, pending.
    let mut change = None;
    for _ in 0..100 {
        let data = server
            .ok(
                &server.admin_token,
                "{ at { changes(filter: { states: [ASSESSED] }) { nodes { id number implementer } } } }",
                json!({}),
            )
            .await;
        if let Some(found) =
            data["at"]["changes"]["nodes"].as_array().and_then(|c| c.iter().find(|c| c["implementer"] == "dora"))
        {
            change = Some(found.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let change = change.expect("the gate opened a change from the template");
    let number = change["number"].as_str().expect("number").to_owned();
    // A dry run says why it waits.
    let mut dry_body = ask(&name, "run-42", SHA_NEW);
    dry_body["dryRun"] = json!(true);
    let (status, dry) = gate(&server, &team.dora, &dry_body).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["decision"], "pending", "{dry}");
    assert_eq!(dry["reasons"][0]["code"], "CHANGE_NOT_APPROVED", "{dry}");
    assert_eq!(dry["change"], number.as_str());
    let pending = cmdb(&server, &team.dora, &args[..args.len() - 2]).output().expect("run");
    assert_eq!(pending.status.code(), Some(3), "pending without --wait: {}", String::from_utf8_lossy(&pending.stdout));
    server.ok(&team.quinn, "mutation($id: ID!) { approveChange(id: $id) { position } }", json!({ "id": number })).await;
    let output = tokio::task::spawn_blocking(move || waiting.wait_with_output()).await.expect("join").expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "allowed once approved: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("decision: allow") && stdout.contains(&number), "{stdout}");

    // The change is implementing; the pipeline deploys and reports.
    let report = [
        "deployment",
        "report",
        "--status",
        "succeeded",
        "--service",
        &name,
        "--environment",
        "production",
        "--artifact",
        "ghcr.io/acme/app",
        "--version",
        "2.0.0",
        "--digest",
        SHA_NEW,
        "--provider",
        "github",
        "--run-id",
        "run-42",
    ];
    let reported = cmdb(&server, &team.dora, &report).output().expect("report");
    let text = String::from_utf8_lossy(&reported.stdout);
    assert!(
        reported.status.success() && text.contains("state: succeeded"),
        "{text} {}",
        String::from_utf8_lossy(&reported.stderr)
    );
    let after = ci_now(&server, &ci, None).await;
    assert_eq!(after["version"], "2.0.0");
    assert_eq!(after["attributes"]["digest"], SHA_NEW);
    let state = server
        .ok(&server.admin_token, "query($n: ID!) { at { change(id: $n) { state } } }", json!({ "n": number }))
        .await;
    assert_eq!(state["at"]["change"]["state"], "IMPLEMENTED", "the change completes with the pipeline's success");

    // The CI's history shows the deployment; the deployment is visible at any moment.
    let data = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { ci(id: $id) { deployments { id state change before { version } } } } }",
            json!({ "id": ci }),
        )
        .await;
    let deployment = data["at"]["ci"]["deployments"][0].clone();
    assert_eq!(deployment["state"], "SUCCEEDED");
    assert_eq!(deployment["before"][0]["version"], old_version.clone().map_or(Value::Null, Value::from));
    let deployment_id = deployment["id"].as_str().expect("id").to_owned();
    let deployed_at = server.head().await;

    // Rolling back after the change completed needs a change that is implementing: an emergency one.
    let rollback =
        "mutation($id: ID!, $c: ID, $r: String!) { rollBackDeployment(id: $id, change: $c, reason: $r) { state } }";
    let (_, body) = server.graphql(&team.dora, rollback, json!({ "id": deployment_id, "r": "errors up" })).await;
    assert_eq!(error_code(&body), "CHANGE_REQUIRED", "{body}");
    assert_eq!(server.head().await, deployed_at, "a refused roll-back appends nothing");
    let emergency = emergency_change(&server, &team, &ci, "Roll back 2.0.0").await;
    for (token, mutation) in [(&team.dora, "submitChange"), (&team.eve, "approveChange"), (&team.dora, "startChange")] {
        server
            .ok(
                token,
                &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ position }} }}"),
                json!({ "id": emergency }),
            )
            .await;
    }
    let rolled =
        server.ok(&team.dora, rollback, json!({ "id": deployment_id, "c": emergency, "r": "errors up" })).await;
    assert_eq!(rolled["rollBackDeployment"]["state"], "ROLLED_BACK");

    // Roll-back law: the CI after the roll-back equals the CI before the deployment.
    let restored = ci_now(&server, &ci, None).await;
    assert_eq!(restored, before, "every field back as it was before the deployment");
    // And every step stays visible at its moment.
    assert_eq!(ci_now(&server, &ci, Some(before_position)).await, before);
    assert_eq!(ci_now(&server, &ci, Some(deployed_at)).await["version"], "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_low_risk_pipeline_change_is_allowed_at_once_and_sixteen_identical_calls_open_one_change() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let team = team(&server).await;
    load_policy(&server, AUTO).await;
    let (ci, name, _) = application(&server, 1).await;
    pipeline_template(&server, &team, &ci).await;
    let before = server.head().await;
    let calls = (0..16).map(|_| {
        let body = ask(&name, "run-7", SHA_NEW);
        let client = server.client.clone();
        let url = server.url("/api/v1/gate");
        let token = team.dora.clone();
        tokio::spawn(async move {
            let response = client.post(url).bearer_auth(token).json(&body).send().await.expect("post");
            response.json::<Value>().await.expect("json")
        })
    });
    let answers: Vec<Value> = futures::future::join_all(calls).await.into_iter().map(|a| a.expect("join")).collect();
    let changes: std::collections::BTreeSet<String> =
        answers.iter().map(|a| a["change"].as_str().unwrap_or_else(|| panic!("{a}")).to_owned()).collect();
    assert_eq!(changes.len(), 1, "one change for one pipeline run: {answers:?}");
    assert!(answers.iter().all(|a| a["decision"] == "allow"), "approved outright: {answers:?}");
    assert_eq!(answers.iter().filter(|a| a["startedImplementation"] == true).count(), 1, "started once");
    let number = changes.into_iter().next().expect("one");
    let data = server
        .ok(&server.admin_token, "query($n: ID!) { at { change(id: $n) { state type } } }", json!({ "n": number }))
        .await;
    assert_eq!(data["at"]["change"]["state"], "IMPLEMENTING");
    assert_eq!(data["at"]["change"]["type"], "STANDARD");
    // Every answer is recorded: 16 decisions, plus the change's own events.
    let events = server
        .ok(
            &server.admin_token,
            "query($a: Position) { events(after: $a, first: 500) { edges { node { type } } } }",
            json!({ "a": before }),
        )
        .await;
    let types: Vec<&str> = events["events"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["node"]["type"].as_str())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "gate.decided").count(), 16, "{types:?}");
    assert_eq!(types.iter().filter(|t| **t == "pipeline.change_opened").count(), 1, "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gate_input_is_refused_clearly_and_appends_nothing_and_a_freeze_denies_with_a_record() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let team = team(&server).await;
    load_policy(&server, AUTO).await;
    let (ci, name, _) = application(&server, 2).await;
    pipeline_template(&server, &team, &ci).await;
    let head = server.head().await;
    let mut cases: Vec<(&str, Value, u16, &str)> = Vec::new();
    let mut malformed = ask(&name, "run-1", "sha256:abc");
    cases.push(("malformed digest", malformed.clone(), 400, "BAD_REQUEST"));
    malformed["artifact"]["digest"] = json!("md5:zz");
    cases.push(("not hex", malformed, 400, "BAD_REQUEST"));
    let mut environment = ask(&name, "run-1", SHA_NEW);
    environment["environment"] = json!("prod-eu");
    cases.push(("unknown environment", environment, 400, "BAD_REQUEST"));
    cases.push(("unknown service", ask("no such service", "run-1", SHA_NEW), 404, "NOT_FOUND"));
    let mut no_pipeline = ask(&name, "run-1", SHA_NEW);
    no_pipeline.as_object_mut().expect("object").remove("pipeline");
    cases.push(("no pipeline", no_pipeline, 400, "BAD_USER_INPUT"));
    let mut stale = ask(&name, "run-1", SHA_NEW);
    stale["release"] = json!("REL-999999");
    cases.push(("unknown release", stale, 404, "NOT_FOUND"));
    let mut unknown_field = ask(&name, "run-1", SHA_NEW);
    unknown_field["sevice"] = json!("typo");
    cases.push(("unknown field", unknown_field, 400, "BAD_REQUEST"));
    let mut change = ask(&name, "run-1", SHA_NEW);
    change["change"] = json!("CHG-9x");
    cases.push(("malformed change", change, 400, "BAD_REQUEST"));
    for (what, body, status, code) in cases {
        let (got, answer) = gate(&server, &team.dora, &body).await;
        assert_eq!(
            (got, answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{what}: {answer}"
        );
        assert!(!answer["errors"][0]["message"].as_str().unwrap_or("").is_empty(), "{what}: a message");
    }
    let (got, _) = gate(&server, &team.olga, &ask(&name, "run-1", SHA_NEW)).await;
    assert_eq!(got, 403, "a viewer may not ask the gate");
    let response = server
        .client
        .post(server.url("/api/v1/gate"))
        .bearer_auth(&team.dora)
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(server.head().await, head, "bad input appends nothing");

    // A freeze over everything: the gate says no, and says so in the log.
    server
        .ok(
            &team.mark,
            "mutation($s: DateTime!, $e: DateTime!) { createFreeze(input: { name: \"year end\", reason: \"peak\", interval: { start: $s, end: $e } }) { id } }",
            json!({
                "s": (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339(),
                "e": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
            }),
        )
        .await;
    let (status, answer) = gate(&server, &team.dora, &ask(&name, "run-2", SHA_NEW)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert!(answer["reasons"].as_array().expect("reasons").iter().any(|r| r["code"] == "FROZEN"), "{answer}");
    assert!(answer["recordedAt"].as_u64().is_some(), "a deny is recorded: {answer}");
    let (_, again) = gate(&server, &team.dora, &ask(&name, "run-2", SHA_NEW)).await;
    assert_eq!(again["change"], answer["change"], "the same run keeps its change");

    // The CLI's exit codes: 1 on deny (the freeze), 2 on bad input, 3 on pending.
    let args = |digest: &str, run: &str| {
        [
            "gate",
            "--service",
            &name,
            "--environment",
            "production",
            "--artifact",
            "a",
            "--version",
            "1",
            "--digest",
            digest,
            "--provider",
            "github",
            "--run-id",
            run,
        ]
        .map(str::to_owned)
    };
    let denied =
        cmdb(&server, &team.dora, &args(SHA_NEW, "run-2").each_ref().map(String::as_str)).output().expect("run");
    let text = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{text}");
    assert!(text.lines().any(|l| l.starts_with("FROZEN: ")), "one reason per line: {text}");
    let head = server.head().await;
    let bad =
        cmdb(&server, &team.dora, &args("sha256:nope", "run-3").each_ref().map(String::as_str)).output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("digest"), "{}", String::from_utf8_lossy(&bad.stderr));
    assert_eq!(server.head().await, head, "nothing appended for bad input");
    let (_, dry) = server
        .graphql(
            &team.dora,
            "query($s: String!) { gate(service: $s, environment: PRODUCTION, artifact: { name: \"a\", version: \"1\", digest: \"sha256:2222222222222222222222222222222222222222222222222222222222222222\" }) { decision reasons { code } } }",
            json!({ "s": name }),
        )
        .await;
    assert_eq!(dry["data"]["gate"]["decision"], "DENY", "{dry}");
    assert_eq!(server.head().await, head, "a dry run writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_accepted_only_by_the_named_role_and_refuses_a_digest_it_did_not_record() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let team = team(&server).await;
    let (ci, name, _) = application(&server, 3).await;
    let plan = "mutation($input: ReleaseInput!) { planRelease(input: $input) { id number state acceptance { name role signed { by } } } }";
    let input = |digest: &str| {
        json!({ "input": {
            "title": "App 2.0", "releaseType": "MINOR", "versions": [{ "ci": ci, "artifact": "ghcr.io/acme/app", "version": "2.0.0", "digest": digest }],
            "environments": ["STAGING", "PRODUCTION"], "releasePlan": "staging then production", "rollBackPlan": "redeploy 1.x",
            "acceptance": [{ "environment": "PRODUCTION", "name": "load test", "role": "approver" }]
        } })
    };
    let head = server.head().await;
    let (_, body) = server.graphql(&team.mark, plan, input("sha256:short")).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let (_, body) = server.graphql(&team.dora, plan, input(SHA_NEW)).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let mut minor_without_step = input(SHA_NEW);
    minor_without_step["input"]["acceptance"] = json!([]);
    let (_, body) = server.graphql(&team.mark, plan, minor_without_step).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "RL-1 policy: {body}");
    assert_eq!(server.head().await, head, "refusals append nothing");

    let planned = server.ok(&team.mark, plan, input(SHA_NEW)).await;
    let release = planned["planRelease"]["number"].as_str().expect("number").to_owned();
    assert!(release.starts_with("REL-"), "{release}");
    let transition = "mutation($id: String!, $a: ReleaseAction!, $n: String) { transitionRelease(id: $id, action: $a, note: $n) { state } }";
    let built = server.ok(&team.mark, transition, json!({ "id": release, "a": "BUILD" })).await;
    assert_eq!(built["transitionRelease"]["state"], "ACCEPTED", "staging has no step: accepted at build");
    let accept = "mutation($id: String!) { acceptReleaseStep(id: $id, environment: PRODUCTION, step: \"load test\") { accepted { environment } } }";
    let (_, body) = server.graphql(&team.mark, accept, json!({ "id": release })).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "a change manager is not the approver the step names: {body}");

    // The gate: production waits for acceptance; the wrong digest is denied.
    let with_release = |digest: &str, environment: &str| {
        let mut body = ask(&name, "run-9", digest);
        body["release"] = json!(release);
        body["environment"] = json!(environment);
        body["dryRun"] = json!(true);
        body
    };
    let (_, answer) = gate(&server, &team.dora, &with_release(SHA_NEW, "production")).await;
    assert_eq!(answer["decision"], "deny", "no change yet: {answer}");
    let codes: Vec<&str> =
        answer["reasons"].as_array().expect("reasons").iter().filter_map(|r| r["code"].as_str()).collect();
    assert!(codes.contains(&"RELEASE_NOT_ACCEPTED") && codes.contains(&"EARLIER_ENVIRONMENT"), "{codes:?}");
    let (_, answer) = gate(&server, &team.dora, &with_release(SHA_OLD, "staging")).await;
    let codes: Vec<&str> =
        answer["reasons"].as_array().expect("reasons").iter().filter_map(|r| r["code"].as_str()).collect();
    assert!(codes.contains(&"DIGEST_MISMATCH"), "{codes:?}");

    server.ok(&team.quinn, accept, json!({ "id": release })).await;
    let data = server.ok(&team.olga, "query($id: ID!) { at { release(id: $id) { state accepted { environment } acceptance { signed { by } } transitions { action stamp { by } } } } }", json!({ "id": release })).await;
    assert_eq!(data["at"]["release"]["accepted"].as_array().map(Vec::len), Some(2));
    assert_eq!(data["at"]["release"]["acceptance"][0]["signed"]["by"], "quinn");

    // A deployment with another digest is refused and the refusal recorded (RL-3).
    let change = emergency_change(&server, &team, &ci, "Ship 2.0").await;
    server.ok(&team.dora, "mutation($id: ID!) { submitChange(id: $id) { position } }", json!({ "id": change })).await;
    let request = "mutation($input: DeploymentInput!) { requestDeployment(input: $input) { id state } }";
    let deployment = |digest: &str| {
        json!({ "input": { "release": release, "change": change, "environment": "STAGING",
            "targets": [{ "ci": ci, "artifact": "ghcr.io/acme/app", "version": "2.0.0", "digest": digest }] } })
    };
    let head = server.head().await;
    let (_, body) = server.graphql(&team.dora, request, deployment(SHA_OLD)).await;
    assert_eq!(error_code(&body), "DIGEST_MISMATCH", "{body}");
    assert_eq!(server.head().await, head + 2, "the request and its refusal are recorded");
    let refused = server
        .ok(&team.olga, "{ at { deployments(filter: { outcome: [REFUSED] }) { state refusedCode } } }", json!({}))
        .await;
    assert_eq!(refused["at"]["deployments"][0]["refusedCode"], "DIGEST_MISMATCH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_holds_releases_deployments_and_a_roll_back_visible_at_every_moment() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let data = server
        .ok(
            &server.admin_token,
            "{ at { releases { number state versions { ci version } incidents { incident } incidentsInReview { incident } transitions { action } }
                    deployments { id state targets { ci version } before { version } history { state } } } }",
            json!({}),
        )
        .await;
    let releases = data["at"]["releases"].as_array().expect("releases");
    let states: Vec<(&str, &str)> =
        releases.iter().map(|r| (r["number"].as_str().unwrap_or(""), r["state"].as_str().unwrap_or(""))).collect();
    assert_eq!(states, [("REL-000002", "ROLLED_BACK"), ("REL-000001", "DEPLOYED")], "{data}");
    assert_eq!(releases[0]["incidentsInReview"][0]["incident"], "INC-4711", "RL-7: {data}");
    let deployments = data["at"]["deployments"].as_array().expect("deployments");
    assert_eq!(deployments.len(), 2, "{data}");
    assert_eq!(deployments[0]["state"], "ROLLED_BACK");
    assert_eq!(deployments[1]["state"], "SUCCEEDED");
    let ci = deployments[0]["targets"][0]["ci"].as_str().expect("ci").to_owned();
    let now = ci_now(&server, &ci, None).await;
    assert_eq!(now["version"], "2.4.0", "the roll-back restored 2.4.0: {now}");
    // The deployment of 2.5.0 was live at the moment of its success.
    let history = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { ci(id: $id) { deployments { history { state stamp { position } } } } } }",
            json!({ "id": ci }),
        )
        .await;
    let steps = history["at"]["ci"]["deployments"][0]["history"].as_array().expect("steps").clone();
    let succeeded = steps.iter().find(|s| s["state"] == "SUCCEEDED").expect("succeeded")["stamp"]["position"].as_u64();
    assert_eq!(ci_now(&server, &ci, succeeded).await["version"], "2.5.0");
}
