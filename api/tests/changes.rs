//! Change control over GraphQL, as a new user would drive it against `serve --demo`: a change
//! from draft to closed with CI edits only under it, every refusal the standard requires, the
//! record as of any position, the overdue report, and the change-state subscription.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use common::{TestServer, error_code, settings, ws};
use serde_json::{Value, json};

const CHANGE_FIELDS: &str = "id number state type requester implementer
    transitions { action from to by note }
    approvals { by decision authority rolesHeld holdsAuthorityNow }
    scope { cis { id ci { name } } planned { class name registered { id name } } }
    links { kind id } signOff { by note } review { objectiveMet usersSatisfied followUpActions by }
    edits { type ciId principal } allowedActions";

struct People {
    alice: String,
    ivan: String,
    amy: String,
    mark: String,
    vera: String,
}

async fn people(server: &TestServer) -> People {
    People {
        alice: server.principal_with_token("alice", &["EDITOR"]).await,
        ivan: server.principal_with_token("ivan", &["EDITOR", "DEPLOYER"]).await,
        amy: server.principal_with_token("amy", &["APPROVER"]).await,
        mark: server.principal_with_token("mark", &["CHANGE_MANAGER"]).await,
        vera: server.principal_with_token("vera", &["EDITOR"]).await,
    }
}

/// A mutation that must be refused with `code`; the log must not move.
async fn refused(server: &TestServer, token: &str, query: &str, variables: Value, code: &str) -> String {
    let before = server.head().await;
    let (status, body) = server.graphql(token, query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(error_code(&body), code, "{body}");
    assert_eq!(server.head().await, before, "a refused command appends nothing: {body}");
    body["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

async fn act(server: &TestServer, token: &str, mutation: &str, id: &str, args: &str) -> Value {
    let query = format!("mutation($id: ID!) {{ {mutation}(id: $id{args}) {{ position change {{ state number }} }} }}");
    server.ok(token, &query, json!({ "id": id })).await[mutation].clone()
}

async fn demo() -> TestServer {
    TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await
}

async fn some_ci(server: &TestServer, class: &str, skip: usize) -> (String, String) {
    let data = server
        .ok(
            &server.admin_token,
            "query($c: [String!]) { at { cis(filter: { classes: $c }, first: 20) { nodes { id name } } } }",
            json!({ "c": [class] }),
        )
        .await;
    let node = &data["at"]["cis"]["nodes"][skip];
    (node["id"].as_str().expect("id").to_owned(), node["name"].as_str().expect("name").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_takes_a_change_from_draft_to_closed_editing_cis_only_under_it() {
    let server = demo().await;
    let p = people(&server).await;
    // This walk-through is about the life cycle; the default policy's decisions (several
    // approvers for the demo's critical hosts) have their own tests in policy.rs. Here the
    // organisation's CAB wants one approver for any normal change.
    let one_approver = "package cmdb.change\nimport rego.v1\ndecision := {\"approvals\": [{\"role\": \"approver\", \"count\": 1, \"reason\": \"one approver\"}]}\n";
    server
        .ok(
            &server.admin_token,
            "mutation($t: String!) { loadPolicy(name: \"one approver\", text: $t) { position } }",
            json!({ "t": one_approver }),
        )
        .await;
    let (host, host_name) = some_ci(&server, "host", 0).await;
    let (other_host, _) = some_ci(&server, "host", 1).await;

    // Without a change, the demo's controlled classes refuse edits, naming what is missing.
    let update = "mutation($id: ID!, $by: ID) { updateCi(id: $id, input: { setAttributes: { os: \"debian-13\" }, authorizedBy: $by }) { position } }";
    let message = refused(&server, &p.ivan, update, json!({ "id": host }), "CHANGE_REQUIRED").await;
    assert!(message.contains("authorizedBy") && message.contains("CM-3"), "{message}");

    let draft = server
        .ok(
            &p.alice,
            &format!("mutation($input: DraftChangeInput!) {{ draftChange(input: $input) {{ position change {{ {CHANGE_FIELDS} }} }} }}"),
            json!({ "input": {
                "type": "NORMAL",
                "title": "Upgrade the OS of one hypervisor and add a VM",
                "description": "debian-13 on the host; a new VM for the batch jobs",
                "justification": "debian-12 leaves support",
                "backOutPlan": "reinstall debian-12 from the golden image",
                "window": { "start": "2030-01-10T22:00:00Z", "end": "2030-01-11T02:00:00Z", "timeZone": "Europe/Paris" },
                "implementer": "ivan",
                "scope": { "cis": [host], "planned": [{ "class": "virtual_machine", "name": "batch-vm-01" }] },
                "links": [{ "kind": "INCIDENT", "id": "INC-77" }]
            } }),
        )
        .await;
    let change = &draft["draftChange"]["change"];
    let id = change["id"].as_str().expect("id").to_owned();
    assert_eq!(change["state"], "DRAFT");
    assert_eq!(change["number"], Value::Null, "numbers come at submission");
    assert_eq!(change["scope"]["cis"][0]["ci"]["name"], host_name.as_str(), "the scope links to the live CI");
    assert_eq!(change["allowedActions"], json!(["SUBMIT", "CANCEL"]));

    let submitted = act(&server, &p.alice, "submitChange", &id, "").await;
    let number = submitted["change"]["number"].as_str().expect("number").to_owned();
    assert!(number.starts_with("CHG-") && number.len() == 10, "{number}");
    let after_submit = submitted["position"].as_u64().expect("position");
    act(&server, &p.mark, "assessChange", &id, ", note: \"low risk: one host of a pair\"").await;

    // Segregation of duties: the requester and the implementer may not approve, whatever roles.
    for (name, token) in [("alice", &p.alice), ("ivan", &p.ivan)] {
        server
            .ok(
                &server.admin_token,
                "mutation($n: String!) { grantRole(principal: $n, role: APPROVER) { position } }",
                json!({ "n": name }),
            )
            .await;
        let approve = "mutation($id: ID!) { approveChange(id: $id) { position } }";
        let message = refused(&server, token, approve, json!({ "id": number }), "SEGREGATION_OF_DUTIES").await;
        assert!(message.contains(name), "{message}");
    }
    act(&server, &p.amy, "approveChange", &number, ", note: \"fine\"").await;
    let again = "mutation($id: ID!) { approveChange(id: $id) { position } }";
    refused(&server, &p.amy, again, json!({ "id": id }), "FAILED_PRECONDITION").await;
    server
        .ok(
            &p.mark,
            "mutation($input: ChangeActionInput!) { scheduleChange(input: $input) { position } }",
            json!({ "input": { "id": id } }),
        )
        .await;
    // Only the implementer starts the work.
    let start = "mutation($id: ID!) { startChange(id: $id) { position } }";
    refused(&server, &p.vera, start, json!({ "id": id }), "SEGREGATION_OF_DUTIES").await;
    act(&server, &p.ivan, "startChange", &id, "").await;

    // CI edits under the change, named by its number.
    let updated = server.ok(&p.ivan, update, json!({ "id": host, "by": number })).await;
    assert!(updated["updateCi"]["position"].as_u64().is_some());
    let register = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position ci { id } } }";
    let vm = json!({ "class": "virtual_machine", "name": "batch-vm-01", "authorizedBy": id,
        "attributes": { "hostname": "batch-vm-01", "ip_addresses": ["10.9.9.9"], "os": "debian-13", "cpu_cores": 4, "memory_mib": 8192 } });
    let registered = server.ok(&p.ivan, register, json!({ "input": vm })).await;
    let vm_id = registered["registerCi"]["ci"]["id"].as_str().expect("vm").to_owned();
    let relate = "mutation($s: ID!, $t: ID!, $by: ID) { relate(type: RUNS_ON, source: $s, target: $t, authorizedBy: $by) { position } }";
    server.ok(&p.ivan, relate, json!({ "s": vm_id, "t": host, "by": number })).await;
    // Outside the scope, or not planned: refused, nothing appended.
    let message =
        refused(&server, &p.ivan, update, json!({ "id": other_host, "by": number }), "FAILED_PRECONDITION").await;
    assert!(message.contains("not in the scope"), "{message}");
    let stray = json!({ "class": "virtual_machine", "name": "stray-vm", "authorizedBy": number,
        "attributes": { "hostname": "stray", "ip_addresses": ["10.9.9.8"], "os": "debian-13", "cpu_cores": 4, "memory_mib": 8192 } });
    refused(&server, &p.ivan, register, json!({ "input": stray }), "FAILED_PRECONDITION").await;

    act(&server, &p.ivan, "completeChange", &id, "").await;
    // Once implemented, the change authorises nothing more.
    let message = refused(&server, &p.ivan, update, json!({ "id": host, "by": number }), "FAILED_PRECONDITION").await;
    assert!(message.contains("implemented"), "{message}");
    let verify = "mutation($id: ID!) { verifyChange(id: $id, note: \"mine\") { position } }";
    refused(&server, &p.ivan, verify, json!({ "id": id }), "SEGREGATION_OF_DUTIES").await;
    let no_note = "mutation($id: ID!) { verifyChange(id: $id, note: \"  \") { position } }";
    refused(&server, &p.vera, no_note, json!({ "id": id }), "BAD_USER_INPUT").await;
    act(&server, &p.vera, "verifyChange", &id, ", note: \"host boots debian-13; VM answers\"").await;
    // A normal change closes only after its review.
    let close = "mutation($id: ID!) { closeChange(id: $id) { position } }";
    refused(&server, &p.mark, close, json!({ "id": id }), "FAILED_PRECONDITION").await;
    // The review as one input object (the loose id and review are deprecated).
    let review = "mutation($input: ReviewChangeInput!) { reviewChange(input: $input) { change { review { objectiveMet followUpActions } } } }";
    let reviewed = server
        .ok(
            &p.mark,
            review,
            json!({ "input": { "id": id, "review": { "objectiveMet": true, "usersSatisfied": true, "sideEffects": "none", "followUpActions": ["automate it"] } } }),
        )
        .await;
    assert_eq!(reviewed["reviewChange"]["change"]["review"]["followUpActions"], json!(["automate it"]), "{reviewed}");
    let closed = act(&server, &p.mark, "closeChange", &id, "").await;
    assert_eq!(closed["change"]["state"], "CLOSED");

    // A role revoked later does not undo the approval; the record shows both.
    server
        .ok(&server.admin_token, "mutation { revokeRole(principal: \"amy\", role: APPROVER) { position } }", json!({}))
        .await;
    let query = format!("query($id: ID!) {{ at {{ change(id: $id) {{ {CHANGE_FIELDS} }} }} }}");
    let now = server.ok(&p.vera, &query, json!({ "id": number })).await["at"]["change"].clone();
    assert_eq!(now["state"], "CLOSED");
    let actions: Vec<&str> =
        now["transitions"].as_array().expect("t").iter().filter_map(|t| t["action"].as_str()).collect();
    assert_eq!(actions, ["SUBMIT", "ASSESS", "APPROVE", "SCHEDULE", "START", "COMPLETE", "VERIFY", "REVIEW", "CLOSE"]);
    let who: Vec<&str> = now["transitions"].as_array().expect("t").iter().filter_map(|t| t["by"].as_str()).collect();
    assert_eq!(who, ["alice", "alice", "mark", "amy", "mark", "ivan", "ivan", "vera", "mark", "mark"]);
    assert_eq!(
        now["approvals"],
        json!([{ "by": "amy", "decision": "APPROVE", "authority": "APPROVER", "rolesHeld": ["APPROVER"], "holdsAuthorityNow": false }])
    );
    assert_eq!(now["scope"]["planned"][0]["registered"]["id"], vm_id.as_str());
    let edits: Vec<&str> = now["edits"].as_array().expect("edits").iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(
        edits.contains(&"ci.updated") && edits.contains(&"ci.registered") && edits.contains(&"ci.relationship_added"),
        "{edits:?}"
    );
    assert_eq!(now["signOff"]["by"], "vera");
    assert_eq!(now["review"]["followUpActions"], json!(["automate it"]));
    assert_eq!(now["links"], json!([{ "kind": "INCIDENT", "id": "INC-77" }]));

    // As of the submission, it was submitted and had authorised nothing.
    let then = server
        .ok(
            &p.vera,
            &format!(
                "query($id: ID!, $p: Position!) {{ at(position: $p) {{ change(id: $id) {{ {CHANGE_FIELDS} }} }} }}"
            ),
            json!({ "id": id, "p": after_submit }),
        )
        .await;
    assert_eq!(then["at"]["change"]["state"], "SUBMITTED");
    assert_eq!(then["at"]["change"]["edits"], json!([]));
    assert_eq!(then["at"]["change"]["scope"]["planned"][0]["registered"], Value::Null);
    // Filters.
    let listed = server
        .ok(
            &p.vera,
            "query($ci: ID!) { at { changes(filter: { ci: $ci, states: [CLOSED], types: [NORMAL], requester: \"alice\" }) { nodes { number } } } }",
            json!({ "ci": host }),
        )
        .await;
    assert_eq!(listed["at"]["changes"]["nodes"], json!([{ "number": number }]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_change_input_gets_a_clear_error_and_appends_nothing() {
    let server = TestServer::start().await;
    let p = people(&server).await;
    let draft = "mutation($input: DraftChangeInput!) { draftChange(input: $input) { position change { id } } }";
    let base = json!({ "type": "NORMAL", "title": "t", "description": "d", "implementer": "ivan" });
    let with = |extra: Value| {
        let mut input = base.clone();
        for (key, value) in extra.as_object().expect("object") {
            input[key] = value.clone();
        }
        json!({ "input": input })
    };
    let cases = [
        (
            with(json!({ "window": { "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z" } })),
            "BAD_USER_INPUT",
            "ends",
        ),
        (
            with(
                json!({ "window": { "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z", "timeZone": "Mars/Base" } }),
            ),
            "BAD_USER_INPUT",
            "time zone",
        ),
        (
            with(json!({ "scope": { "cis": ["0196a1d2-0000-7000-8000-000000000001"] } })),
            "BAD_USER_INPUT",
            "does not exist",
        ),
        (with(json!({ "scope": { "cis": ["not-a-uuid"] } })), "BAD_USER_INPUT", "not a configuration item id"),
        (
            with(json!({ "scope": { "planned": [{ "class": "spaceship", "name": "x" }] } })),
            "BAD_USER_INPUT",
            "unknown class",
        ),
        (with(json!({ "implementer": "nobody" })), "BAD_USER_INPUT", "nobody"),
        (with(json!({ "title": "" })), "BAD_USER_INPUT", "title"),
        (with(json!({ "template": "0196a1d2-0000-7000-8000-000000000002" })), "BAD_USER_INPUT", "standard"),
    ];
    for (variables, code, text) in cases {
        let message = refused(&server, &p.alice, draft, variables.clone(), code).await;
        assert!(message.contains(text), "{variables}: {message}");
    }
    // A draft without a back-out plan is fine; submitting it is not (CH-3).
    let data = server
        .ok(
            &p.alice,
            draft,
            with(json!({ "justification": "j", "scope": { "planned": [{ "class": "host", "name": "h1" }] } })),
        )
        .await;
    let id = data["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    let submit = "mutation($id: ID!) { submitChange(id: $id) { position } }";
    let message = refused(&server, &p.alice, submit, json!({ "id": id }), "BAD_USER_INPUT").await;
    assert!(message.contains("back_out_plan"), "{message}");
    // Unknown changes, by id and by number; malformed numbers; the wrong state.
    refused(&server, &p.alice, submit, json!({ "id": "CHG-999999" }), "NOT_FOUND").await;
    refused(&server, &p.alice, submit, json!({ "id": "0196a1d2-0000-7000-8000-000000000003" }), "NOT_FOUND").await;
    refused(&server, &p.alice, submit, json!({ "id": "CHG-12x" }), "BAD_USER_INPUT").await;
    let assess = "mutation($id: ID!) { assessChange(id: $id, note: \"n\") { position } }";
    let message = refused(&server, &p.mark, assess, json!({ "id": id }), "FAILED_PRECONDITION").await;
    assert!(message.contains("draft"), "{message}");
    // Roles: a viewer may not raise changes; an editor may not assess.
    let viewer = server.principal_with_token("olga", &["VIEWER"]).await;
    refused(&server, &viewer, draft, with(json!({})), "FORBIDDEN").await;
    refused(&server, &p.vera, assess, json!({ "id": id }), "FORBIDDEN").await;
    // Bounds: a comment past max_comment_bytes.
    let comment = "mutation($id: ID!, $t: String!) { commentOnChange(id: $id, text: $t) { position } }";
    let long = "x".repeat(cmdb_core::change::MAX_COMMENT_BYTES + 1);
    refused(&server, &p.vera, comment, json!({ "id": id, "t": long }), "BAD_USER_INPUT").await;
    let at_bound = "x".repeat(cmdb_core::change::MAX_COMMENT_BYTES);
    server.ok(&p.vera, comment, json!({ "id": id, "t": at_bound })).await;
    // Retrospective recording is for emergency changes only.
    let retro = "mutation($input: DraftChangeInput!) { recordRetrospectiveChange(input: $input) { position } }";
    refused(&server, &p.ivan, retro, with(json!({})), "BAD_USER_INPUT").await;

    // Declaring a class's control (CM-3): unknown classes, no-op declarations, missing or
    // over-long reasons and non-admins are refused, and the log does not move.
    let declare = "mutation($c: String!, $on: Boolean!, $r: String!) { declareClassControl(class: $c, controlled: $on, reason: $r) { position } }";
    let admin = server.admin_token.clone();
    let long_reason = "r".repeat(cmdb_core::ci::schema::registry::MAX_CONTROL_REASON_BYTES + 1);
    let cases = [
        (json!({ "c": "spaceship", "on": false, "r": "why" }), "BAD_USER_INPUT", "spaceship"),
        (json!({ "c": "host", "on": true, "r": "why" }), "BAD_USER_INPUT", "already controlled"),
        (json!({ "c": "host", "on": false, "r": "  " }), "BAD_USER_INPUT", "reason"),
        (json!({ "c": "host", "on": false, "r": long_reason }), "BAD_USER_INPUT", "reason"),
    ];
    for (variables, code, text) in cases {
        let message = refused(&server, &admin, declare, variables.clone(), code).await;
        assert!(message.contains(text), "{message}");
    }
    refused(&server, &p.mark, declare, json!({ "c": "host", "on": false, "r": "why" }), "FORBIDDEN").await;
    let at_bound = "r".repeat(cmdb_core::ci::schema::registry::MAX_CONTROL_REASON_BYTES);
    server.ok(&admin, declare, json!({ "c": "host", "on": false, "r": at_bound })).await;
    let message =
        refused(&server, &admin, declare, json!({ "c": "host", "on": false, "r": "again" }), "BAD_USER_INPUT").await;
    assert!(message.contains("already uncontrolled"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_lists_overdue_emergencies_and_a_retrospective_change_joins_them() {
    let server = demo().await;
    let p = people(&server).await;
    let report = "query($now: DateTime) { at { overdueChanges(now: $now) { change { number type retrospective state } overdue } } }";
    let data = server.ok(&p.vera, report, json!({})).await;
    let overdue = data["at"]["overdueChanges"].as_array().expect("report").clone();
    assert!(overdue.iter().any(|o| o["overdue"] == json!(["APPROVAL", "REVIEW"])), "{overdue:?}");
    assert!(overdue.iter().any(|o| o["overdue"] == json!(["REVIEW"])), "{overdue:?}");
    let (app, _) = some_ci(&server, "application", 0).await;
    let retro = "mutation($input: DraftChangeInput!) { recordRetrospectiveChange(input: $input) { change { id number state approvalDueAt reviewDueAt overdue } } }";
    let data = server
        .ok(
            &p.ivan,
            retro,
            json!({ "input": { "type": "EMERGENCY", "title": "restarted the app at 3am", "description": "it hung",
                "justification": "customers could not pay", "backOutPlan": "none needed", "implementer": "ivan",
                "scope": { "cis": [app] } } }),
        )
        .await;
    let change = &data["recordRetrospectiveChange"]["change"];
    assert_eq!(change["state"], "IMPLEMENTED");
    assert_eq!(change["overdue"], json!([]), "not yet due");
    let number = change["number"].as_str().expect("number").to_owned();
    // 73 hours on, with the default 72-hour deadline, it is overdue.
    let later = cmdb_core::Timestamp::parse_rfc3339(change["reviewDueAt"].as_str().expect("due"))
        .expect("time")
        .saturating_add_micros(3_600_000_000)
        .to_rfc3339();
    let data = server.ok(&p.vera, report, json!({ "now": later })).await;
    let line = data["at"]["overdueChanges"]
        .as_array()
        .expect("report")
        .iter()
        .find(|o| o["change"]["number"] == number.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(line["overdue"], json!(["APPROVAL", "REVIEW"]));
    // The emergency authority approves it retrospectively; only the review stays overdue.
    let eve = server.principal_with_token("eve", &["EMERGENCY_APPROVER"]).await;
    // A normal approver is not the emergency authority.
    let approve = "mutation($id: ID!) { approveChange(id: $id) { position } }";
    refused(&server, &p.amy, approve, json!({ "id": number }), "FORBIDDEN").await;
    act(&server, &eve, "approveChange", &number, "").await;
    let data = server.ok(&p.vera, report, json!({ "now": later })).await;
    let line = data["at"]["overdueChanges"]
        .as_array()
        .expect("report")
        .iter()
        .find(|o| o["change"]["number"] == number.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(line["overdue"], json!(["REVIEW"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_states_stream_to_subscribers() {
    let server = TestServer::start().await;
    let p = people(&server).await;
    let draft = "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }";
    let data = server
        .ok(
            &p.alice,
            draft,
            json!({ "input": { "type": "NORMAL", "title": "t", "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "ivan", "scope": { "planned": [{ "class": "host", "name": "h" }] } } }),
        )
        .await;
    let id = data["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    let mut socket = ws::connect(&server, Some(&p.vera)).await;
    ws::init(&mut socket, json!({})).await;
    ws::subscribe(
        &mut socket,
        "s",
        &format!("subscription {{ changeStates(change: \"{id}\") {{ number action from to by }} }}"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    act(&server, &p.alice, "submitChange", &id, "").await;
    server
        .ok(&p.vera, "mutation($id: ID!) { commentOnChange(id: $id, text: \"hi\") { position } }", json!({ "id": id }))
        .await;
    act(&server, &p.mark, "assessChange", &id, ", note: \"ok\"").await;
    let first = ws::next_json(&mut socket).await;
    assert_eq!(first["payload"]["data"]["changeStates"]["to"], "SUBMITTED", "{first}");
    assert_eq!(first["payload"]["data"]["changeStates"]["number"], "CHG-000001");
    let second = ws::next_json(&mut socket).await;
    assert_eq!(second["payload"]["data"]["changeStates"]["action"], "ASSESS", "comments are not state: {second}");
    assert_eq!(second["payload"]["data"]["changeStates"]["by"], "mark");
}

/// The fields an error's `problems` extension names.
fn problem_fields(body: &Value) -> Vec<String> {
    body["errors"][0]["extensions"]["problems"]
        .as_array()
        .map(|all| all.iter().filter_map(|p| p["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_problem_of_a_command_is_reported_at_once_with_its_field() {
    let server = TestServer::start().await;
    let p = people(&server).await;
    let head = server.head().await;

    // A host with a bad name, no hostname and no ip addresses, on a controlled class without
    // a change: the three input problems come back together, before CHANGE_REQUIRED.
    let register = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { position } }";
    let input = json!({ "input": { "class": "HOST", "name": " padded ", "attributes": { "os": "debian-12", "cpu_cores": "eight" } } });
    let (status, body) = server.graphql(&p.alice, register, input).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let fields = problem_fields(&body);
    for field in ["name", "attributes.cpu_cores", "attributes.hostname", "attributes.ip_addresses"] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}: {body}");
    }
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("problems") && message.contains("hostname") && message.contains("ip_addresses"),
        "{message}"
    );
    // One problem alone is reported as itself, with its field.
    let one = json!({ "input": { "class": "HOST", "name": "web-9", "attributes": { "hostname": "web-9", "ip_addresses": ["10.0.0.9"], "os": "debian-12", "cpu_cores": 4 } } });
    let (_, body) = server.graphql(&p.alice, register, one).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "attributes.memory_mib", "{body}");
    // A well-formed host without a change: now CHANGE_REQUIRED (CM-3).
    let whole = json!({ "input": { "class": "HOST", "name": "web-9", "attributes": { "hostname": "web-9", "ip_addresses": ["10.0.0.9"], "os": "debian-12", "cpu_cores": 4, "memory_mib": 4096 } } });
    let (_, body) = server.graphql(&p.alice, register, whole).await;
    assert_eq!(error_code(&body), "CHANGE_REQUIRED", "{body}");

    // A change submitted with no description, implementer, scope, justification or back-out
    // plan: all five at once.
    let draft = "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }";
    let data = server.ok(&p.alice, draft, json!({ "input": { "type": "NORMAL", "title": "bare" } })).await;
    let id = data["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    let head_before_submit = server.head().await;
    let (_, body) = server
        .graphql(&p.alice, "mutation($id: ID!) { submitChange(id: $id) { position } }", json!({ "id": id }))
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let fields = problem_fields(&body);
    assert_eq!(fields, ["description", "implementer", "scope", "justification", "back_out_plan"], "{body}");
    // A draft with several malformed fields: all of them.
    let bad = json!({ "input": { "type": "NORMAL", "title": "", "implementer": "nobody",
        "window": { "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z" } } });
    let (_, body) = server.graphql(&p.alice, draft, bad).await;
    let fields = problem_fields(&body);
    for field in ["title", "window", "implementer"] {
        assert!(fields.iter().any(|f| f == field), "{field} missing from {fields:?}: {body}");
    }
    assert_eq!(server.head().await, head_before_submit, "no refusal appended anything");
    assert!(head_before_submit > head, "only the draft was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_take_one_input_object_and_the_old_arguments_still_work() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let p = people(&server).await;
    let host = server
        .ok(
            &server.admin_token,
            "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }",
            json!({ "input": { "class": "HOST", "name": "web-1", "attributes": { "hostname": "web-1", "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 2, "memory_mib": 2048 } } }),
        )
        .await["registerCi"]["ci"]["id"]
        .clone();
    let draft = server
        .ok(
            &p.alice,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": { "type": "NORMAL", "title": "t", "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "ivan", "scope": { "cis": [host] } } }),
        )
        .await;
    let id = draft["draftChange"]["change"]["id"].clone();
    // The input object.
    let submitted = server
        .ok(
            &p.alice,
            "mutation($input: ChangeActionInput!) { submitChange(input: $input) { change { state number } } }",
            json!({ "input": { "id": id } }),
        )
        .await;
    assert_eq!(submitted["submitChange"]["change"]["state"], "SUBMITTED");
    let number = submitted["submitChange"]["change"]["number"].clone();
    // A required note is still required, named as before.
    let head = server.head().await;
    let (_, body) = server
        .graphql(
            &p.mark,
            "mutation($input: ChangeActionInput!) { assessChange(input: $input) { position } }",
            json!({ "input": { "id": number } }),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "note", "{body}");
    // Both ways at once, or neither: refused; nothing written.
    for (query, variables) in [
        (
            "mutation($id: ID!, $input: ChangeActionInput!) { assessChange(id: $id, input: $input) { position } }",
            json!({ "id": number, "input": { "id": number, "note": "n" } }),
        ),
        ("mutation { assessChange { position } }", json!({})),
    ] {
        let (_, body) = server.graphql(&p.mark, query, variables).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    }
    assert_eq!(server.head().await, head);
    // The deprecated arguments still work for one release.
    let assessed = server
        .ok(
            &p.mark,
            "mutation($id: ID!) { assessChange(id: $id, note: \"low risk\") { change { state } } }",
            json!({ "id": number }),
        )
        .await;
    assert_eq!(assessed["assessChange"]["change"]["state"], "ASSESSED");
    // The schema says which arguments are deprecated.
    let schema = server
        .ok(
            &server.admin_token,
            "{ __type(name: \"Mutation\") { fields { name args(includeDeprecated: true) { name isDeprecated } } } }",
            json!({}),
        )
        .await;
    let assess = schema["__type"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == "assessChange")
        .expect("assessChange")
        .clone();
    let deprecated: Vec<&str> = assess["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter(|a| a["isDeprecated"] == json!(true))
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(deprecated, ["id", "note"], "{assess}");
}
