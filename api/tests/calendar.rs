//! The change calendar over GraphQL and as an iCalendar feed (CH-5): freeze windows with
//! recurrences, scheduling refused inside them, conflicts through the graph (blocking until
//! acknowledged), rescheduling, the calendar view, and `/api/v1/calendar.ics` parsed as a
//! calendar application would.
#![allow(clippy::too_many_lines, reason = "a scenario test reads top to bottom as one user's session")]

mod common;

use common::{TestServer, error_code};
use serde_json::{Value, json};

const REGISTER: &str = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }";

async fn host(server: &TestServer, name: &str, environment: &str) -> String {
    let data = server
        .ok(
            &server.admin_token,
            REGISTER,
            json!({ "input": { "class": "HOST", "name": name, "environment": environment,
                "attributes": {"hostname": name, "ip_addresses": ["10.1.1.1"], "os": "debian-12", "cpu_cores": 8, "memory_mib": 16384} } }),
        )
        .await;
    data["registerCi"]["ci"]["id"].as_str().expect("id").to_owned()
}

struct Crew {
    alice: String,
    mark: String,
    amy: String,
}

async fn crew(server: &TestServer) -> Crew {
    server.principal_with_token("ivan", &["EDITOR"]).await;
    let crew = Crew {
        alice: server.principal_with_token("alice", &["EDITOR"]).await,
        mark: server.principal_with_token("mark", &["CHANGE_MANAGER"]).await,
        amy: server.principal_with_token("amy", &["APPROVER"]).await,
    };
    // One approver for any change: the calendar is what is under test here.
    let one = "package cmdb.change\nimport rego.v1\ndecision := {\"approvals\": [{\"role\": \"approver\", \"count\": 1, \"reason\": \"one\"}]}\n";
    server
        .ok(
            &server.admin_token,
            "mutation($t: String!) { loadPolicy(name: \"one\", text: $t) { position } }",
            json!({ "t": one }),
        )
        .await;
    crew
}

/// A normal change on `cis` in [start, end), taken to approved; returns (id, number).
async fn approved(
    server: &TestServer,
    crew: &Crew,
    title: &str,
    cis: &[&str],
    start: &str,
    end: &str,
) -> (String, String) {
    let data = server
        .ok(
            &crew.alice,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": { "type": "NORMAL", "title": title, "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "ivan", "scope": { "cis": cis },
                "window": { "start": start, "end": end, "timeZone": "Europe/Berlin" } } }),
        )
        .await;
    let id = data["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    let submitted = server
        .ok(&crew.alice, "mutation($id: ID!) { submitChange(id: $id) { change { number } } }", json!({ "id": id }))
        .await;
    server
        .ok(&crew.mark, "mutation($id: ID!) { assessChange(id: $id, note: \"n\") { position } }", json!({ "id": id }))
        .await;
    server.ok(&crew.amy, "mutation($id: ID!) { approveChange(id: $id) { position } }", json!({ "id": id })).await;
    (id, submitted["submitChange"]["change"]["number"].as_str().expect("number").to_owned())
}

const SCHEDULE: &str = "mutation($id: ID!) { scheduleChange(id: $id) { change { state inFreeze } } }";
const CREATE_FREEZE: &str = "mutation($input: FreezeInput!) { createFreeze(input: $input) { id position } }";

/// A mutation that must fail with `code`, appending nothing; returns the message.
async fn refused(server: &TestServer, token: &str, query: &str, variables: Value, code: &str) -> String {
    let before = server.head().await;
    let (_, body) = server.graphql(token, query, variables).await;
    assert_eq!(error_code(&body), code, "{body}");
    assert_eq!(server.head().await, before, "refused, so nothing appended: {body}");
    body["errors"][0]["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_conflicts_and_the_calendar_over_graphql_and_ics() {
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let crew = crew(&server).await;
    let db = host(&server, "db-01", "PRODUCTION").await;
    let web = host(&server, "web-01", "PRODUCTION").await;
    let far = host(&server, "batch-01", "STAGING").await;
    server
        .ok(
            &server.admin_token,
            "mutation($s: ID!, $t: ID!) { relate(type: DEPENDS_ON, source: $s, target: $t) { position } }",
            json!({ "s": web, "t": db }),
        )
        .await;

    // A weekend freeze: every Friday 18:00 Berlin for 62 hours. Bad input first.
    for (input, needle) in [
        (
            json!({ "name": "f", "reason": "r", "recurrence": { "rrule": "FREQ=SOMETIMES", "startLocal": "2030-01-04T18:00", "timeZone": "Europe/Berlin", "durationMinutes": 60 } }),
            "FREQ=SOMETIMES",
        ),
        (
            json!({ "name": "f", "reason": "r", "recurrence": { "rrule": "FREQ=WEEKLY", "startLocal": "2030-01-04T18:00", "timeZone": "Mars/Base", "durationMinutes": 60 } }),
            "Mars/Base",
        ),
        (
            json!({ "name": "f", "reason": "r", "interval": { "start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z" } }),
            "ends",
        ),
        (json!({ "name": "f", "reason": "r" }), "exactly one"),
        (
            json!({ "name": "f", "reason": "r", "environment": "PRODUCTION", "service": web, "interval": { "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z" } }),
            "not both",
        ),
        (
            json!({ "name": "f", "reason": "r", "service": web, "interval": { "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z" } }),
            "not a business service",
        ),
    ] {
        let message = refused(&server, &crew.mark, CREATE_FREEZE, json!({ "input": input }), "BAD_USER_INPUT").await;
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let weekend = json!({ "name": "weekend freeze", "reason": "nobody on call", "environment": "PRODUCTION",
        "recurrence": { "rrule": "FREQ=WEEKLY;BYDAY=FR", "startLocal": "2030-01-04T18:00", "timeZone": "Europe/Berlin", "durationMinutes": 3720 } });
    refused(&server, &crew.alice, CREATE_FREEZE, json!({ "input": weekend }), "FORBIDDEN").await;
    let freeze = server.ok(&crew.mark, CREATE_FREEZE, json!({ "input": weekend })).await;
    let freeze_id = freeze["createFreeze"]["id"].as_str().expect("id").to_owned();

    // A normal change on a Saturday is refused; on a Wednesday it goes in.
    let (saturday, _) =
        approved(&server, &crew, "saturday", &[&db], "2030-01-12T10:00:00Z", "2030-01-12T12:00:00Z").await;
    let message = refused(&server, &crew.mark, SCHEDULE, json!({ "id": saturday }), "FREEZE_WINDOW").await;
    assert!(message.contains("weekend freeze"), "{message}");
    // The freeze covers production only: a staging change that Saturday is fine.
    let (staging, _) =
        approved(&server, &crew, "staging", &[&far], "2030-01-12T10:00:00Z", "2030-01-12T12:00:00Z").await;
    server.ok(&crew.mark, SCHEDULE, json!({ "id": staging })).await;
    let (a, a_number) =
        approved(&server, &crew, "db upgrade", &[&db], "2030-01-09T20:00:00Z", "2030-01-09T23:00:00Z").await;
    let scheduled = server.ok(&crew.mark, SCHEDULE, json!({ "id": a })).await;
    assert_eq!(scheduled["scheduleChange"]["change"]["state"], "SCHEDULED");
    // Rescheduling into the freeze is refused; to Thursday it is recorded.
    let reschedule = "mutation($id: ID!, $s: DateTime!, $e: DateTime!) { rescheduleChange(id: $id, window: { start: $s, end: $e }) { change { reschedules { previousStart } } } }";
    refused(
        &server,
        &crew.mark,
        reschedule,
        json!({ "id": a, "s": "2030-01-11T20:00:00Z", "e": "2030-01-11T22:00:00Z" }),
        "FREEZE_WINDOW",
    )
    .await;
    refused(
        &server,
        &crew.mark,
        reschedule,
        json!({ "id": a, "s": "2030-01-10T22:00:00Z", "e": "2030-01-10T20:00:00Z" }),
        "BAD_USER_INPUT",
    )
    .await;
    let moved = server
        .ok(&crew.mark, reschedule, json!({ "id": a, "s": "2030-01-10T20:00:00Z", "e": "2030-01-10T23:00:00Z" }))
        .await;
    assert_eq!(moved["rescheduleChange"]["change"]["reschedules"][0]["previousStart"], "2030-01-09T20:00:00.000000Z");

    // B changes a host that depends on A's host, overlapping: a conflict through the graph.
    let (b, _) = approved(&server, &crew, "web patch", &[&web], "2030-01-10T21:00:00Z", "2030-01-10T22:00:00Z").await;
    let message = refused(&server, &crew.mark, SCHEDULE, json!({ "id": b }), "CHANGE_CONFLICT").await;
    assert!(message.contains(&a_number), "{message}");
    // The conflict was known when B was assessed: it is in the policy's input (input.calendar).
    let decision = server
        .ok(&crew.mark, "query($id: ID!) { at { change(id: $id) { decision { input } } } }", json!({ "id": b }))
        .await;
    let calendar = &decision["at"]["change"]["decision"]["input"]["calendar"];
    assert_eq!(calendar["conflicts"][0]["change"], a_number.as_str(), "{calendar}");
    assert_eq!(calendar["freezes"], json!([]));
    let conflicts = server
        .ok(
            &crew.mark,
            "query($id: ID!) { at { conflicts(change: $id) { otherNumber reason path { name } } } }",
            json!({ "id": b }),
        )
        .await;
    // B shows the conflict before it is scheduled: A's host is what B's host depends on.
    assert_eq!(
        conflicts["at"]["conflicts"],
        json!([{ "otherNumber": a_number, "reason": "db-01 reaches web-01 in 1 hop (the other scope affects this one)",
                 "path": [{ "name": "db-01" }, { "name": "web-01" }] }])
    );
    let ack =
        "mutation($id: ID!, $w: ID!, $r: String!) { acknowledgeConflict(id: $id, with: $w, reason: $r) { position } }";
    refused(&server, &crew.mark, ack, json!({ "id": b, "w": b, "r": "x" }), "BAD_USER_INPUT").await;
    refused(&server, &crew.mark, ack, json!({ "id": b, "w": "CHG-999999", "r": "x" }), "NOT_FOUND").await;
    server.ok(&crew.mark, ack, json!({ "id": b, "w": a, "r": "web-01 is drained first" })).await;
    server.ok(&crew.mark, SCHEDULE, json!({ "id": b })).await;
    // Now both are scheduled: each shows the conflict, with the path through the graph.
    let conflicts = server
        .ok(&crew.mark, "query($id: ID!) { at { conflicts(change: $id) { otherNumber reason path { name } acknowledgedByOther } } }", json!({ "id": a }))
        .await;
    let found = &conflicts["at"]["conflicts"][0];
    assert!(found["reason"].as_str().expect("reason").contains("reaches"), "{found}");
    assert_eq!(found["path"], json!([{ "name": "db-01" }, { "name": "web-01" }]));
    assert_eq!(found["acknowledgedByOther"], true);

    // The calendar for that week.
    let calendar = server
        .ok(
            &crew.mark,
            "{ at { calendar(from: \"2030-01-07T00:00:00Z\", to: \"2030-01-14T00:00:00Z\") {
                changes { change { number state } scopeSummary riskLevel conflicts { otherNumber } }
                freezes { name occurrences { start end } } truncated } } }",
            json!({}),
        )
        .await;
    let view = &calendar["at"]["calendar"];
    let states: Vec<(&str, &str)> = view["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (c["change"]["number"].as_str().unwrap_or(""), c["change"]["state"].as_str().unwrap_or("")))
        .collect();
    assert!(states.contains(&(a_number.as_str(), "SCHEDULED")), "{states:?}");
    assert_eq!(view["freezes"][0]["name"], "weekend freeze");
    // The one begun the Friday before still runs into Monday; then the next, 18:00 Berlin (winter).
    assert_eq!(view["freezes"][0]["occurrences"][0]["end"], "2030-01-07T07:00:00.000000Z");
    assert_eq!(view["freezes"][0]["occurrences"][1]["start"], "2030-01-11T17:00:00.000000Z");
    let a_entry = view["changes"]
        .as_array()
        .expect("c")
        .iter()
        .find(|c| c["change"]["number"] == a_number.as_str())
        .expect("a")
        .clone();
    assert_eq!(a_entry["conflicts"].as_array().map(Vec::len), Some(1));
    assert!(a_entry["scopeSummary"].as_str().expect("summary").contains("db-01"));
    // Filtered by environment: the staging change only.
    let staging_only = server
        .ok(&crew.mark, "{ at { calendar(from: \"2030-01-07T00:00:00Z\", to: \"2030-01-14T00:00:00Z\", environment: STAGING) { changes { change { title } } } } }", json!({}))
        .await;
    assert_eq!(staging_only["at"]["calendar"]["changes"], json!([{ "change": { "title": "staging" } }]));
    // Bad ranges.
    let (_, body) = server
        .graphql(
            &crew.mark,
            "{ at { calendar(from: \"2030-01-07T00:00:00Z\", to: \"2030-01-01T00:00:00Z\") { truncated } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let (_, body) = server
        .graphql(
            &crew.mark,
            "{ at { calendar(from: \"2030-01-01T00:00:00Z\", to: \"2032-01-01T00:00:00Z\") { truncated } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "LIMIT_EXCEEDED", "{body}");

    // The iCalendar feed, parsed as a calendar application would; a viewer token suffices.
    let viewer = server.principal_with_token("calendar-app", &["VIEWER"]).await;
    let url = server.url("/api/v1/calendar.ics?from=2030-01-07T00:00:00Z&to=2030-01-14T00:00:00Z");
    let response = server.client.get(&url).bearer_auth(&viewer).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().expect("ct").starts_with("text/calendar"));
    let text = response.text().await.expect("body");
    let parsed: icalendar::Calendar = text.parse().expect("a valid iCalendar document");
    let summaries: Vec<String> = parsed
        .components
        .iter()
        .filter_map(|c| c.as_event())
        .filter_map(|e| icalendar::Component::get_summary(e).map(str::to_owned))
        .collect();
    assert!(summaries.iter().any(|s| s.starts_with(&a_number) && s.contains("db upgrade")), "{summaries:?}");
    assert!(summaries.iter().any(|s| s == "FREEZE weekend freeze"), "{summaries:?}");
    // The token as a query parameter (calendar applications cannot send headers).
    let with_param = server.url(&format!("/api/v1/calendar.ics?access_token={viewer}"));
    assert_eq!(server.client.get(&with_param).send().await.expect("get").status(), 200);
    assert_eq!(server.client.get(server.url("/api/v1/calendar.ics")).send().await.expect("get").status(), 401);
    let bad = server.url("/api/v1/calendar.ics?from=yesterday");
    assert_eq!(server.client.get(&bad).bearer_auth(&viewer).send().await.expect("get").status(), 400);

    // An emergency change passes the freeze, flagged on the change and in the report.
    let eve = server.principal_with_token("eve", &["EMERGENCY_APPROVER"]).await;
    let data = server
        .ok(
            &crew.alice,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": { "type": "EMERGENCY", "title": "disk full", "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "ivan", "scope": { "cis": [db] },
                "window": { "start": "2030-01-12T01:00:00Z", "end": "2030-01-12T02:00:00Z" } } }),
        )
        .await;
    let emergency = data["draftChange"]["change"]["id"].as_str().expect("id").to_owned();
    server
        .ok(&crew.alice, "mutation($id: ID!) { submitChange(id: $id) { position } }", json!({ "id": emergency }))
        .await;
    server.ok(&eve, "mutation($id: ID!) { approveChange(id: $id) { position } }", json!({ "id": emergency })).await;
    let ack_all =
        "mutation($id: ID!, $w: ID!) { acknowledgeConflict(id: $id, with: $w, reason: \"emergency\") { position } }";
    for other in [&a, &b] {
        let (_, body) = server.graphql(&crew.mark, ack_all, json!({ "id": emergency, "w": other })).await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    let scheduled = server.ok(&crew.mark, SCHEDULE, json!({ "id": emergency })).await;
    assert_eq!(scheduled["scheduleChange"]["change"]["inFreeze"], json!(["weekend freeze"]));
    let report = server
        .ok(&crew.mark, "{ at { changeReport(from: \"2020-01-01T00:00:00Z\", to: \"2021-01-01T00:00:00Z\", period: MONTH) { totals { total } } } }", json!({}))
        .await;
    assert_eq!(report["at"]["changeReport"]["totals"]["total"], 0, "nothing submitted in 2020");
    let year = server
        .ok(&crew.mark, "query($f: DateTime!, $t: DateTime!) { at { changeReport(from: $f, to: $t, period: MONTH) { totals { total emergency inFreeze } } } }",
            json!({ "f": "2025-01-01T00:00:00Z", "t": "2028-01-01T00:00:00Z" }))
        .await;
    let totals = &year["at"]["changeReport"]["totals"];
    assert_eq!(totals["emergency"], 1, "{totals}");
    assert_eq!(totals["inFreeze"], 1, "{totals}");

    // Bad report, conflict and lift arguments: clear errors, nothing appended.
    let before = server.head().await;
    for (query, code) in [
        (
            "{ at { changeReport(from: \"2030-01-07T00:00:00Z\", to: \"2030-01-01T00:00:00Z\", period: WEEK) { totals { total } } } }",
            "BAD_USER_INPUT",
        ),
        (
            "{ at { changeReport(from: \"2000-01-01T00:00:00Z\", to: \"2030-01-01T00:00:00Z\", period: DAY) { totals { total } } } }",
            "BAD_USER_INPUT",
        ),
        ("{ at { conflicts(change: \"CHG-999999\") { reason } } }", "NOT_FOUND"),
        ("mutation { liftFreeze(id: \"not-a-freeze\", reason: \"r\") { position } }", "BAD_USER_INPUT"),
        (
            "mutation { liftFreeze(id: \"0196a1d2-0000-7000-8000-000000000009\", reason: \"r\") { position } }",
            "NOT_FOUND",
        ),
    ] {
        let (_, body) = server.graphql(&crew.mark, query, json!({})).await;
        assert_eq!(error_code(&body), code, "{query}: {body}");
    }
    let lift = "mutation($id: ID!, $r: String!) { liftFreeze(id: $id, reason: $r) { position } }";
    refused(&server, &crew.mark, lift, json!({ "id": freeze_id, "r": " " }), "BAD_USER_INPUT").await;
    assert_eq!(server.head().await, before);

    // Lifting the freeze lets the Saturday change in.
    server
        .ok(
            &crew.mark,
            "mutation($id: ID!) { liftFreeze(id: $id, reason: \"on-call found\") { position } }",
            json!({ "id": freeze_id }),
        )
        .await;
    server.ok(&crew.mark, SCHEDULE, json!({ "id": saturday })).await;
    let freezes = server
        .ok(
            &crew.mark,
            "{ now: at { freezes { name } } all: at { freezes(includeLifted: true) { name liftedAt } } }",
            json!({}),
        )
        .await;
    assert_eq!(freezes["now"]["freezes"], json!([]));
    refused(&server, &crew.mark, lift, json!({ "id": freeze_id, "r": "again" }), "FAILED_PRECONDITION").await;
    assert!(freezes["all"]["freezes"][0]["liftedAt"].is_string());
}
