//! Risk assessment and the approval policy over GraphQL (CH-2, CH-4), as a change manager, an
//! approver, a service owner and an administrator would drive them: assessment from the graph,
//! approval completing when the decision's requirements are met, `whatIf` without recording,
//! policies loaded (and refused) as events, replay of past decisions, and reassessment when a
//! CI in scope changes before approval.

mod common;

use common::{TestServer, error_code};
use serde_json::{Value, json};

const REGISTER: &str = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }";

async fn register(server: &TestServer, input: Value) -> String {
    let data = server.ok(&server.admin_token, REGISTER, json!({ "input": input })).await;
    data["registerCi"]["ci"]["id"].as_str().expect("id").to_owned()
}

async fn relate(server: &TestServer, rel_type: &str, source: &str, target: &str) {
    server
        .ok(
            &server.admin_token,
            "mutation($t: RelationshipType!, $s: ID!, $d: ID!) { relate(type: $t, source: $s, target: $d) { position } }",
            json!({ "t": rel_type, "s": source, "d": target }),
        )
        .await;
}

struct Estate {
    server: TestServer,
    host: String,
    service: String,
    alice: String,
    mark: String,
    amy: String,
    abe: String,
    otto: String,
}

/// A production host named `name` at `ip`, for `registerCi`.
fn production_host(name: &str, ip: &str) -> Value {
    json!({"class": "HOST", "name": name, "environment": "PRODUCTION",
           "attributes": {"hostname": name, "ip_addresses": [ip], "os": "debian-12", "cpu_cores": 8, "memory_mib": 16384}})
}

/// A tier-1 payments service open around the clock, owned by the person otto, provided by an
/// application running on one host; classes uncontrolled (CM-3 has its own tests).
async fn estate() -> Estate {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let person = register(
        &server,
        json!({"class": "PERSON", "name": "Otto Owner", "attributes": {"email": "otto@example.com"}}),
    )
    .await;
    let service = register(
        &server,
        json!({"class": "BUSINESS_SERVICE", "name": "Payments", "owner": person,
               "attributes": {"criticality_tier": 1, "service_hours": {"time_zone": "Europe/Berlin",
                   "weekly": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "24:00"}]}}}),
    )
    .await;
    let app = register(&server, json!({"class": "APPLICATION", "name": "payments-api"})).await;
    let host = register(&server, production_host("pay-01", "10.1.1.1")).await;
    relate(&server, "PROVIDES", &app, &service).await;
    relate(&server, "RUNS_ON", &app, &host).await;
    Estate {
        alice: server.principal_with_token("alice", &["EDITOR"]).await,
        mark: server.principal_with_token("mark", &["CHANGE_MANAGER"]).await,
        amy: server.principal_with_token("amy", &["APPROVER"]).await,
        abe: server.principal_with_token("abe", &["APPROVER"]).await,
        otto: server.principal_with_token("otto", &["EDITOR"]).await,
        server,
        host,
        service,
    }
}

const DECISION: &str = "decision { policyVersion policyHash regorusVersion autoApprove deny
    approvals { role principals count reason approvedBy met } replay { matches policyIntact } }";
const ASSESSMENT: &str = "assessment { score level position downstreamCis truncated trigger by
    factors { name points why } services { name tier depth windowInServiceHours ownerContacts } }";

fn draft_input(host: &str, window: (&str, &str)) -> Value {
    json!({
        "type": "NORMAL", "title": "Kernel patch on pay-01", "description": "patch", "justification": "CVE",
        "backOutPlan": "boot the old kernel", "implementer": "alice", "scope": { "cis": [host] },
        "window": { "start": window.0, "end": window.1, "timeZone": "Europe/Berlin" }
    })
}

async fn submitted(e: &Estate) -> String {
    let data = e
        .server
        .ok(
            &e.alice,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": draft_input(&e.host, ("2030-01-08T22:00:00Z", "2030-01-08T23:00:00Z")) }),
        )
        .await;
    let id = data["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    e.server.ok(&e.alice, "mutation($id: ID!) { submitChange(id: $id) { position } }", json!({ "id": id })).await;
    id
}

async fn act(server: &TestServer, token: &str, mutation: &str, id: &str) -> Value {
    let query = format!(
        "mutation($id: ID!) {{ {mutation}(id: $id{}) {{ position change {{ state {ASSESSMENT} {DECISION} }} }} }}",
        if mutation == "assessChange" { ", note: \"assessed\"" } else { "" }
    );
    server.ok(token, &query, json!({ "id": id })).await[mutation]["change"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_follows_the_decision_the_default_policy_made_from_the_graph() {
    let e = estate().await;
    let id = submitted(&e).await;
    let change = act(&e.server, &e.mark, "assessChange", &id).await;
    assert_eq!(change["state"], "ASSESSED");
    let assessment = &change["assessment"];
    assert_eq!(assessment["trigger"], "ASSESS");
    assert_eq!(assessment["by"], "mark");
    assert_eq!(assessment["downstreamCis"], 2, "the application and the service");
    assert_eq!(assessment["services"][0]["name"], "Payments");
    assert_eq!(assessment["services"][0]["tier"], 1);
    assert_eq!(assessment["services"][0]["depth"], 2);
    assert_eq!(assessment["services"][0]["windowInServiceHours"], true);
    assert_eq!(assessment["services"][0]["ownerContacts"], json!(["otto@example.com"]));
    // normal 10 + tier 1 25 + 2 CIs 5 + tier-1 hours 20 = 60: high.
    assert_eq!(assessment["score"], 60, "{assessment}");
    assert_eq!(assessment["level"], "HIGH");
    let decision = &change["decision"];
    assert_eq!(decision["policyVersion"], 0);
    assert_eq!(decision["regorusVersion"], cmdb_core::policy::REGORUS_VERSION);
    assert_eq!(decision["replay"]["matches"], true);
    let approvals = decision["approvals"].as_array().expect("approvals");
    assert_eq!(approvals.len(), 2, "{decision}");
    assert!(approvals.iter().any(|a| a["role"] == "APPROVER" && a["count"] == 2));
    assert!(approvals.iter().any(|a| a["principals"] == json!(["otto"]) && a["count"] == 1));

    // Two approvers are not enough: the owner of the tier-1 service must approve too.
    act(&e.server, &e.amy, "approveChange", &id).await;
    let change = act(&e.server, &e.abe, "approveChange", &id).await;
    assert_eq!(change["state"], "ASSESSED", "{change}");
    let met: Vec<bool> =
        change["decision"]["approvals"].as_array().expect("a").iter().map(|a| a["met"] == true).collect();
    assert!(met.contains(&true) && met.contains(&false), "{change}");
    // An editor the decision does not name is refused, and nothing is appended.
    let vera = e.server.principal_with_token("vera", &["EDITOR"]).await;
    let before = e.server.head().await;
    let (_, body) = e
        .server
        .graphql(&vera, "mutation($id: ID!) { approveChange(id: $id) { position } }", json!({ "id": id }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert_eq!(e.server.head().await, before);
    let change = act(&e.server, &e.otto, "approveChange", &id).await;
    assert_eq!(change["state"], "APPROVED", "{change}");
    let data = e
        .server
        .ok(
            &e.mark,
            "query($id: ID!) { at { change(id: $id) { approvals { by authority countsFor } } } }",
            json!({ "id": id }),
        )
        .await;
    let approvals = &data["at"]["change"]["approvals"];
    assert_eq!(approvals[2]["by"], "otto");
    assert_eq!(approvals[2]["authority"], Value::Null, "named by the decision, not by a role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_assesses_and_decides_a_draft_without_recording_it() {
    let e = estate().await;
    let before = e.server.head().await;
    let query = "query($input: DraftChangeInput!) { at { whatIf(input: $input) {
        assessment { score level services { name windowInServiceHours } }
        decision { policyVersion autoApprove deny approvals { role principals count } input } } } }";
    let inside = e
        .server
        .ok(&e.alice, query, json!({ "input": draft_input(&e.host, ("2030-01-08T10:00:00Z", "2030-01-08T11:00:00Z")) }))
        .await;
    let what_if = &inside["at"]["whatIf"];
    assert_eq!(what_if["assessment"]["level"], "HIGH");
    assert_eq!(what_if["decision"]["input"]["change"]["requester"], "alice", "the caller is the requester");
    assert_eq!(what_if["decision"]["input"]["change"]["scope"]["cis"][0]["name"], "pay-01");
    // The input is built only when selected: asked for under an alias in a fragment, it is
    // still there; the decision is the same without it.
    let through_fragment = "query($input: DraftChangeInput!) { at { whatIf(input: $input) {
        d: decision { ...Seen } } } } fragment Seen on WhatIfDecision { autoApprove seen: input }";
    let window = ("2030-01-08T10:00:00Z", "2030-01-08T11:00:00Z");
    let seen = e.server.ok(&e.alice, through_fragment, json!({ "input": draft_input(&e.host, window) })).await;
    let (seen_input, input) = (&seen["at"]["whatIf"]["d"]["seen"], &what_if["decision"]["input"]);
    for key in ["change", "assessment", "calendar", "requester_roles"] {
        assert_eq!(seen_input[key], input[key], "{key}: only the clock reading differs");
    }
    assert_eq!(seen["at"]["whatIf"]["d"]["autoApprove"], what_if["decision"]["autoApprove"]);
    assert_eq!(e.server.head().await, before, "a what-if records nothing");
    // An unknown CI, a window ending before it starts: clear errors.
    let mut unknown = draft_input(&e.host, ("2030-01-08T10:00:00Z", "2030-01-08T11:00:00Z"));
    unknown["scope"]["cis"] = json!(["0196a1d2-0000-7000-8000-000000000001"]);
    let (_, body) = e.server.graphql(&e.alice, query, json!({ "input": unknown })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let backwards = draft_input(&e.host, ("2030-01-08T11:00:00Z", "2030-01-08T10:00:00Z"));
    let (_, body) = e.server.graphql(&e.alice, query, json!({ "input": backwards })).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(e.server.head().await, before);

    // Reassessment: only of an assessed change, only by who may assess, only of a known one.
    let id = submitted(&e).await;
    let before = e.server.head().await;
    let reassess = "mutation($id: ID!) { reassessChange(id: $id) { position } }";
    for (token, id, code) in [
        (&e.mark, id.as_str(), "FAILED_PRECONDITION"),
        (&e.alice, id.as_str(), "FORBIDDEN"),
        (&e.mark, "CHG-999999", "NOT_FOUND"),
        (&e.mark, "not-an-id", "BAD_USER_INPUT"),
    ] {
        let (_, body) = e.server.graphql(token, reassess, json!({ "id": id })).await;
        assert_eq!(error_code(&body), code, "{id}: {body}");
    }
    assert_eq!(e.server.head().await, before, "refused reassessments append nothing");
}

const LOAD: &str =
    "mutation($n: String!, $t: String!) { loadPolicy(name: $n, text: $t) { position policy { version hash name } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_events_refused_when_broken_and_past_decisions_replay() {
    let e = estate().await;
    let id = submitted(&e).await;
    act(&e.server, &e.mark, "assessChange", &id).await;
    let first_decision_at = e.server.head().await;

    // Broken policies are refused with the reason; the log does not move.
    let default = cmdb_core::policy::DEFAULT_POLICY;
    let sneaky = format!("{default}\nsneaky if {{\n\ttime.now_ns() > 0\n}}\n");
    for (name, text, code, words) in [
        ("syntax", "package cmdb.change\nimport rego.v1\ndecision := {", "BAD_USER_INPUT", "does not parse"),
        ("clock", sneaky.as_str(), "BAD_USER_INPUT", "time.now_ns"),
        (
            "other package",
            "package other\nimport rego.v1\ndecision := {}",
            "BAD_USER_INPUT",
            "data.cmdb.change.decision",
        ),
        ("same", default, "FAILED_PRECONDITION", "already in force"),
        ("", "package cmdb.change", "BAD_USER_INPUT", "name"),
    ] {
        let before = e.server.head().await;
        let (_, body) = e.server.graphql(&e.server.admin_token, LOAD, json!({ "n": name, "t": text })).await;
        assert_eq!(error_code(&body), code, "{name}: {body}");
        assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains(words), "{name}: {body}");
        assert_eq!(e.server.head().await, before, "{name}: nothing appended");
    }
    let (_, body) = e.server.graphql(&e.mark, LOAD, json!({ "n": "mine", "t": default })).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");

    // A strict policy: three approvers for anything.
    let strict = "package cmdb.change\nimport rego.v1\ndecision := {\"approvals\": [{\"role\": \"approver\", \"count\": 3, \"reason\": \"three\"}]}\n";
    let loaded = e.server.ok(&e.server.admin_token, LOAD, json!({ "n": "strict", "t": strict })).await;
    assert_eq!(loaded["loadPolicy"]["policy"]["version"], 1);
    let data = e
        .server
        .ok(
            &e.mark,
            "query($p: Position!) { now: at { policy { version name } } then: at(position: $p) { policy { version builtIn } } all: at { policies { version } } }",
            json!({ "p": first_decision_at }),
        )
        .await;
    assert_eq!(data["now"]["policy"]["version"], 1);
    assert_eq!(data["then"]["policy"], json!({ "version": 0, "builtIn": true }));
    assert_eq!(data["all"]["policies"], json!([{ "version": 0 }, { "version": 1 }]));

    // Reassessing decides with the new policy; both decisions replay to what was recorded.
    let change = act(&e.server, &e.mark, "reassessChange", &id).await;
    assert_eq!(change["assessment"]["trigger"], "REQUEST");
    assert_eq!(change["decision"]["policyVersion"], 1);
    assert_eq!(change["decision"]["approvals"][0]["count"], 3);
    let data = e
        .server
        .ok(
            &e.mark,
            "query($id: ID!) { at { change(id: $id) { decisions { policyVersion replay { matches policyIntact } } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        data["at"]["change"]["decisions"],
        json!([
            { "policyVersion": 0, "replay": { "matches": true, "policyIntact": true } },
            { "policyVersion": 1, "replay": { "matches": true, "policyIntact": true } }
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_ci_changed_before_approval_is_reassessed_when_approving() {
    let e = estate().await;
    let id = submitted(&e).await;
    act(&e.server, &e.mark, "assessChange", &id).await;
    // The service drops to tier 3 and a new application comes to depend on the host.
    e.server
        .ok(
            &e.server.admin_token,
            "mutation($id: ID!) { updateCi(id: $id, input: { setAttributes: { criticality_tier: 3 } }) { position } }",
            json!({ "id": e.service }),
        )
        .await;
    e.server
        .ok(
            &e.server.admin_token,
            "mutation($id: ID!) { updateCi(id: $id, input: { setAttributes: { os: \"debian-13\" } }) { position } }",
            json!({ "id": e.host }),
        )
        .await;
    let change = act(&e.server, &e.amy, "approveChange", &id).await;
    assert_eq!(change["assessment"]["trigger"], "SCOPE_CHANGED", "{change}");
    assert_eq!(change["assessment"]["by"], "amy");
    assert_eq!(change["assessment"]["services"][0]["tier"], 3);
    // Tier 3 with no owner rule: one approver is enough now.
    assert_eq!(change["state"], "APPROVED", "{change}");
}

/// A freeze scoped to a business service covers the changes whose scope reaches it, and only
/// those (CH-5): the policy's `input.calendar.freezes` names it for a what-if at the head (the
/// assessment's own walk gives the services) and at a past position (the calendar walks the
/// head itself), and not for a CI that reaches no frozen service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_on_a_service_covers_what_reaches_the_service() {
    let e = estate().await;
    let other = register(&e.server, production_host("batch-01", "10.1.1.2")).await;
    let freeze = json!({ "name": "payments freeze", "reason": "quarter end", "service": e.service,
        "interval": { "start": "2030-01-08T00:00:00Z", "end": "2030-01-09T00:00:00Z" } });
    let created = e
        .server
        .ok(
            &e.mark,
            "mutation($input: FreezeInput!) { createFreeze(input: $input) { position } }",
            json!({ "input": freeze }),
        )
        .await;
    let frozen_at = created["createFreeze"]["position"].as_u64().expect("position");
    // The head moves on, so `frozen_at` is a past position.
    register(&e.server, json!({"class": "APPLICATION", "name": "later-app"})).await;
    let query = "query($p: Position, $input: DraftChangeInput!) { at(position: $p) { whatIf(input: $input) {
        decision { input } } } }";
    let freezes = |data: &Value| -> Vec<String> {
        data["at"]["whatIf"]["decision"]["input"]["calendar"]["freezes"]
            .as_array()
            .map(|f| f.iter().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let inside = ("2030-01-08T10:00:00Z", "2030-01-08T11:00:00Z");
    for position in [Value::Null, json!(frozen_at)] {
        let reaching =
            e.server.ok(&e.alice, query, json!({ "p": position, "input": draft_input(&e.host, inside) })).await;
        assert_eq!(freezes(&reaching), vec!["payments freeze".to_owned()], "at {position}: {reaching}");
        let apart = e.server.ok(&e.alice, query, json!({ "p": position, "input": draft_input(&other, inside) })).await;
        assert!(freezes(&apart).is_empty(), "batch-01 reaches no frozen service, at {position}: {apart}");
        let outside = ("2030-01-10T10:00:00Z", "2030-01-10T11:00:00Z");
        let later =
            e.server.ok(&e.alice, query, json!({ "p": position, "input": draft_input(&e.host, outside) })).await;
        assert!(freezes(&later).is_empty(), "the window misses the freeze, at {position}: {later}");
    }
}
