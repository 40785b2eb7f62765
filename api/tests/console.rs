//! The web console (issue 19) in a real browser (headless Chromium, no internet), on the demo
//! estate: sign in, search, open a CI, move the time control and see the older version, draw
//! the impact of a host, open a diff, the calendar, a change and a replay. Every answer the
//! page shows is checked against the API's own answer for the same moment. Screenshots of
//! each page go to `target/console-screenshots/`, or to `docs/console/` with
//! `CMDB_UPDATE_SCREENSHOTS=1` (how the README's pictures are made). How long each page took
//! to become interactive is printed (measured, not asserted: BENCHMARKS.md has the figures).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::browser::Browser;
use common::{TestServer, settings};
use serde_json::{Value, json};

/// The console's state marker: `main[data-state]` is `ready` once a page is drawn.
const MAIN: &str = "document.getElementById('main')";

fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if std::env::var("CMDB_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        root.join("docs/console")
    } else {
        root.join("target/console-screenshots")
    }
}

/// Marks the page stale, runs `action` (JavaScript), and waits for `page` to be drawn again.
async fn act_and_wait(browser: &mut Browser, action: &str, page: &str) {
    browser.eval(&format!("{MAIN}.dataset.state = 'stale'; true")).await;
    browser.eval(&format!("(() => {{ {action}; return true; }})()")).await;
    browser
        .wait_for(&format!(
            "{MAIN}.dataset.state !== 'stale' && {MAIN}.dataset.state !== 'loading' && {MAIN}.dataset.page === '{page}'"
        ))
        .await;
    let state = browser.eval(&format!("{MAIN}.dataset.state")).await;
    if state != json!("ready") {
        let text = browser.eval(&format!("{MAIN}.innerText")).await;
        panic!("the {page} page is {state}: {text}");
    }
}

async fn text_of(browser: &mut Browser, selector: &str) -> String {
    let value =
        browser.eval(&format!("(document.querySelector({}) || {{ innerText: '' }}).innerText", json!(selector))).await;
    value.as_str().unwrap_or_default().to_owned()
}

/// Sets a form control's value as a user would, firing `input` and `change`.
fn type_into(selector: &str, value: &str) -> String {
    format!(
        "{{ const field = document.querySelector({}); field.value = {}; field.dispatchEvent(new Event('input', {{ bubbles: true }})); field.dispatchEvent(new Event('change', {{ bubbles: true }})); }}",
        json!(selector),
        json!(value)
    )
}

/// Puts `token` where the console keeps a signed-in token (the tab's session storage), as
/// signing in would; the sign-in form itself is tested once.
async fn keep_token(browser: &mut Browser, token: &str) {
    browser.eval(&format!("sessionStorage.setItem('cmdb.console.token', {}); true", json!(token))).await;
}

async fn shoot(browser: &mut Browser, name: &str) {
    browser.screenshot(&screenshot_dir().join(format!("{name}.png"))).await;
}

/// The last edit of a CI's version in the demo's history: the position before its commit,
/// the commit's last position, and the CI.
async fn a_version_edit(server: &TestServer) -> (u64, u64, String) {
    let data = server
        .ok(
            &server.admin_token,
            r#"{ events(types: ["ci.updated"], last: 50) { edges { node { data commit { firstPosition lastPosition } } } } }"#,
            json!({}),
        )
        .await;
    let edges = data["events"]["edges"].as_array().expect("edges");
    let edit = edges.iter().rev().find(|e| e["node"]["data"]["version"].is_string()).expect("the demo edits a version");
    let commit = &edit["node"]["commit"];
    let before = commit["firstPosition"].as_u64().expect("position") - 1;
    let after = commit["lastPosition"].as_u64().expect("position");
    let ci = edit["node"]["data"]["ci_id"].as_str().expect("ci id").to_owned();
    (before, after, ci)
}

/// The text of a CI page's fact (`Version`, `Environment`, ...).
async fn fact(browser: &mut Browser, name: &str) -> String {
    let value = browser
        .eval(&format!(
            "(Array.from(document.querySelectorAll('dl.facts dt')).find(d => d.innerText === {}) || {{ nextElementSibling: {{ innerText: '' }} }}).nextElementSibling.innerText",
            json!(name)
        ))
        .await;
    value.as_str().unwrap_or_default().to_owned()
}

async fn version_at(server: &TestServer, ci: &str, position: Option<u64>) -> (String, String) {
    let data = server
        .ok(
            &server.admin_token,
            "query($id: ID!, $p: Position) { at(position: $p) { ci(id: $id) { name version } } }",
            json!({ "id": ci, "p": position }),
        )
        .await;
    let found = &data["at"]["ci"];
    (found["name"].as_str().expect("name").to_owned(), found["version"].as_str().unwrap_or("—").to_owned())
}

/// A service's severity path as the console writes it: the CIs' names joined by arrows, or
/// "in scope" when the path is empty (the scope names the service).
fn way_of(steps: &Value) -> String {
    let names: Vec<&str> = steps
        .as_array()
        .expect("a severity path")
        .iter()
        .map(|step| step["ci"]["name"].as_str().expect("name"))
        .collect();
    if names.is_empty() { "in scope".to_owned() } else { names.join(" → ") }
}

/// The (service, "Through") cells of the services table `table_id` as the page shows them.
async fn shown_ways(browser: &mut Browser, table_id: &str) -> Vec<(String, String)> {
    let shown = browser
        .eval(&format!(
            "[...document.querySelectorAll('#{table_id} tbody tr')].filter(r => r.cells.length === 5).map(r => [r.cells[0].textContent, r.cells[4].textContent])"
        ))
        .await;
    serde_json::from_value(shown).expect("rows")
}

/// The impact of a host, drawn: every CI the API reaches is a node on the page, and a click
/// centres the picture on another.
async fn impact_of_a_host(browser: &mut Browser, server: &TestServer) {
    // The impact of a host, drawn: every CI the API reaches is a node on the page.
    let hosts = server
        .ok(
            &server.admin_token,
            r#"{ at { cis(filter: { classes: ["host"], includeWithdrawn: false }, first: 20) { nodes { id name } } } }"#,
            json!({}),
        )
        .await;
    // A host whose failure reaches a business service within three hops.
    let mut host = Value::Null;
    for candidate in hosts["at"]["cis"]["nodes"].as_array().expect("hosts") {
        let reach = server
            .ok(
                &server.admin_token,
                "query($id: ID!) { at { impact(ci: $id, maxDepth: 3, maxResults: 300) { services { tier } } } }",
                json!({ "id": candidate["id"] }),
            )
            .await;
        if reach["at"]["impact"]["services"].as_array().is_some_and(|s| !s.is_empty()) {
            host = candidate.clone();
            break;
        }
    }
    let host_id = host["id"].as_str().expect("a host reaching a service within three hops");
    let expected = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { impact(ci: $id, direction: DOWNSTREAM, maxDepth: 3, maxResults: 300) { count root { name } reached { ci { name } } } } }",
            json!({ "id": host_id }),
        )
        .await;
    let mut names: BTreeSet<String> = expected["at"]["impact"]["reached"]
        .as_array()
        .expect("reached")
        .iter()
        .map(|r| r["ci"]["name"].as_str().expect("name").to_owned())
        .collect();
    names.insert(host["name"].as_str().expect("name").to_owned());
    assert!(names.len() > 3, "the host reaches something: {names:?}");
    act_and_wait(browser, &format!("location.hash = '#/impact/{host_id}?dir=DOWNSTREAM&depth=3'"), "impact").await;
    let drawn = browser.eval("window.cmdbConsole.picture.nodes().map(n => n.data('label'))").await;
    let drawn: BTreeSet<String> =
        drawn.as_array().expect("nodes").iter().map(|n| n.as_str().expect("label").to_owned()).collect();
    assert_eq!(drawn, names, "the picture's nodes are the CIs the API reaches");
    let arrows = browser.eval("window.cmdbConsole.picture.edges().length").await;
    assert_eq!(arrows, json!(names.len() - 1), "one arrow per CI reached");
    assert!(browser.eval("document.querySelector('#picture canvas') !== null").await == json!(true));
    // Each service's "Through" is the way its severity arrives (`severityPath`).
    let services = server
        .ok(
            &server.admin_token,
            "query($id: ID!) { at { impact(ci: $id, direction: DOWNSTREAM, maxDepth: 3, maxResults: 300) { services { service { name } severityPath { ci { name } } } } } }",
            json!({ "id": host_id }),
        )
        .await;
    let ways: Vec<(String, String)> = services["at"]["impact"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| (s["service"]["name"].as_str().expect("name").to_owned(), way_of(&s["severityPath"])))
        .collect();
    let shown = shown_ways(browser, "impact-services").await;
    assert!(ways.iter().all(|(_, way)| way != "in scope"), "a host is no service: every path has steps");
    assert!(!ways.is_empty(), "the host reaches business services within three hops");
    assert_eq!(shown, ways, "the services table shows each service's severity path");
    shoot(browser, "impact").await;
    // Clicking a node centres the picture on it.
    let other = browser.eval("window.cmdbConsole.picture.nodes().filter(n => !n.hasClass('root'))[0].id()").await;
    let other = other.as_str().expect("node id").to_owned();
    act_and_wait(browser, &format!("window.cmdbConsole.picture.$id('{other}').emit('tap')"), "impact").await;
    assert!(browser.eval("location.hash").await.as_str().expect("hash").contains(&other));
}

/// The calendar: the week's changes are the API's; a change opens with its decision.
async fn calendar_and_a_change(browser: &mut Browser, server: &TestServer) {
    // The calendar: the week's changes are the API's, and a change opens with its decision.
    act_and_wait(browser, "location.hash = '#/calendar'", "calendar").await;
    let title = text_of(browser, "#page-title").await;
    let monday = title.rsplit(' ').next().expect("date").to_owned();
    let from = chrono::NaiveDate::parse_from_str(&monday, "%Y-%m-%d").expect("the title ends with the week's Monday");
    let to = from + chrono::Days::new(7);
    let week = server
        .ok(
            &server.admin_token,
            "query($f: DateTime, $t: DateTime) { at { calendar(from: $f, to: $t) { changes { change { id number } } } } }",
            json!({ "f": format!("{from}T00:00:00Z"), "t": format!("{to}T00:00:00Z") }),
        )
        .await;
    let listed = week["at"]["calendar"]["changes"].as_array().expect("changes").clone();
    let shown = browser.eval("document.querySelectorAll('.week a.slot').length").await;
    assert!(
        shown.as_u64().expect("count") >= listed.len() as u64,
        "every change of the week is on the grid: {shown} < {}",
        listed.len()
    );
    shoot(browser, "calendar").await;
    let change_id = match listed.first() {
        Some(entry) => entry["change"]["id"].as_str().expect("id").to_owned(),
        None => {
            let any = server.ok(&server.admin_token, "{ at { changes(first: 1) { nodes { id } } } }", json!({})).await;
            any["at"]["changes"]["nodes"][0]["id"].as_str().expect("the demo has changes").to_owned()
        }
    };
    act_and_wait(browser, &format!("location.hash = '#/change/{change_id}'"), "change").await;
    let record = text_of(browser, "main").await;
    assert!(record.contains("Transitions") && record.contains("Approvals"), "{record}");
    shoot(browser, "change").await;
    // An assessed change lists the services it reaches, each with the way the failure gets
    // there (the API's `severityPath`).
    let changes = server
        .ok(
            &server.admin_token,
            "{ at { changes(first: 20) { nodes { id assessment { services { name severityPath { ci { name } } } } } } } }",
            json!({}),
        )
        .await;
    let assessed = changes["at"]["changes"]["nodes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["assessment"]["services"].as_array().is_some_and(|s| !s.is_empty()))
        .expect("the demo has an assessed change that reaches a service")
        .clone();
    let ways: Vec<(String, String)> = assessed["assessment"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| (s["name"].as_str().expect("name").to_owned(), way_of(&s["severityPath"])))
        .collect();
    let assessed_id = assessed["id"].as_str().expect("id");
    act_and_wait(browser, &format!("location.hash = '#/change/{assessed_id}'"), "change").await;
    let shown = shown_ways(browser, "change-services").await;
    assert_eq!(shown, ways, "the change page shows each assessed service's severity path");
}

/// Signing in: the page asks for a token, refuses a wrong one, keeps a good one in the tab's
/// session storage and never in the URL.
async fn sign_in_as_a_user_would(browser: &mut Browser, server: &TestServer) {
    // Signing in: the page asks for a token, refuses a wrong one, keeps a good one in the
    // tab's session storage and never in the URL.
    browser.open(&server.url("/")).await;
    browser.wait_for(&format!("{MAIN}.dataset.page === 'sign-in'")).await;
    shoot(browser, "sign-in").await;
    browser
        .eval(&format!(
            "{}; document.querySelector('form').requestSubmit(); true",
            type_into("#token-input", "cmdb_wrong")
        ))
        .await;
    browser.wait_for("document.getElementById('sign-in-error').innerText.includes('refused')").await;
    act_and_wait(
        browser,
        &format!("{}; document.querySelector('form').requestSubmit()", type_into("#token-input", &server.admin_token)),
        "search",
    )
    .await;
    let href = browser.eval("location.href").await;
    assert!(!href.as_str().expect("href").contains(&server.admin_token), "the token is never in a URL: {href}");
    assert_eq!(browser.eval("sessionStorage.getItem('cmdb.console.token')").await, json!(server.admin_token));
    assert!(text_of(browser, "nav").await.contains("signed in as admin"));
}

#[tokio::test]
async fn the_console_answers_what_the_estate_looked_like_and_what_changed() {
    let Some(mut browser) = Browser::start("the_console_answers_what_the_estate_looked_like_and_what_changed").await
    else {
        return;
    };
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    browser.set_viewport(1400, 1000).await;

    sign_in_as_a_user_would(&mut browser, &server).await;

    // Search: by name, as the API finds it.
    let (before, after, ci) = a_version_edit(&server).await;
    let (name, version_now) = version_at(&server, &ci, None).await;
    act_and_wait(
        &mut browser,
        &format!(
            "{}; document.querySelector('form[role=search]').requestSubmit()",
            type_into("input[name=name]", &name)
        ),
        "search",
    )
    .await;
    let found = browser.eval("Array.from(document.querySelectorAll('main a[data-ci]')).map(a => a.innerText)").await;
    assert!(found.as_array().expect("links").iter().any(|n| n == &json!(name)), "{name} among {found}");
    shoot(&mut browser, "search").await;

    // Open the CI: the version now.
    act_and_wait(&mut browser, &format!("document.querySelector('main a[data-ci=\"{ci}\"]').click()"), "ci").await;
    assert!(text_of(&mut browser, "#page-title").await.contains(&name));
    assert_eq!(fact(&mut browser, "Version").await, version_now);
    shoot(&mut browser, "ci").await;

    // Move the time control to just before the edit: the older version, and the moment in the URL.
    let (_, version_before) = version_at(&server, &ci, Some(before)).await;
    assert_ne!(version_before, version_now, "the demo's edit changed the version");
    act_and_wait(
        &mut browser,
        &format!("{}; {}", type_into("#moment-kind", "position"), type_into("#moment-position", &before.to_string())),
        "ci",
    )
    .await;
    // The kind change alone navigates first; wait for the asked position to be shown.
    browser.wait_for(&format!("location.hash.includes('at={before}')")).await;
    browser.wait_for(&format!("{MAIN}.dataset.state === 'ready' && document.getElementById('moment-shown').innerText.includes('position {before} ')")).await;
    assert_eq!(fact(&mut browser, "Version").await, version_before);
    let link = browser.eval("location.href").await.as_str().expect("href").to_owned();

    // A colleague opening the link sees the same moment (their own sign-in aside).
    browser.open(&server.url("/")).await;
    browser.open(&link).await;
    browser.wait_for(&format!("{MAIN}.dataset.state === 'ready' && {MAIN}.dataset.page === 'ci'")).await;
    assert_eq!(fact(&mut browser, "Version").await, version_before);

    // Stepping forward one commit reaches the edit: the new version again.
    act_and_wait(&mut browser, "document.getElementById('step-forward').click()", "ci").await;
    assert_eq!(fact(&mut browser, "Version").await, version_now);
    assert!(text_of(&mut browser, "#moment-shown").await.contains(&format!("position {after} ")));

    impact_of_a_host(&mut browser, &server).await;

    // The diff across the edit names the CI and its version before and after.
    act_and_wait(&mut browser, &format!("location.hash = '#/diff?from={before}&to={after}'"), "diff").await;
    let table = text_of(&mut browser, "#diff-cis").await;
    assert!(table.contains(&name) && table.contains(&version_before) && table.contains(&version_now), "{table}");
    // Filtering hides what does not match.
    browser.eval(&format!("{}; true", type_into("#diff-filter", "no-such-ci-anywhere"))).await;
    let visible =
        browser.eval("Array.from(document.querySelectorAll('#diff-cis tbody tr')).filter(r => !r.hidden).length").await;
    assert_eq!(visible, json!(0));
    browser.eval(&format!("{}; true", type_into("#diff-filter", ""))).await;
    act_and_wait(&mut browser, "location.hash = '#/diff'", "diff").await;
    shoot(&mut browser, "diff").await;

    calendar_and_a_change(&mut browser, &server).await;

    // Replay: step through events, and the time control follows.
    act_and_wait(&mut browser, &format!("location.hash = '#/replay?from={}&to={after}&ci={ci}'", before - 2), "replay")
        .await;
    // Step to the range's last event, one click at a time.
    let events = browser.eval("document.querySelectorAll('ol.events li').length").await.as_u64().expect("count");
    for _ in 1..events {
        browser.eval("document.getElementById('replay-forward').click(); true").await;
    }
    browser.wait_for(&format!("document.getElementById('replay-now').innerText.startsWith('Position {after}:')")).await;
    browser.wait_for(&format!("document.getElementById('moment-shown').innerText.includes('position {after} ')")).await;
    browser
        .wait_for(&format!(
            "(document.getElementById('replay-ci') || {{ innerText: '' }}).innerText.includes({})",
            json!(version_now)
        ))
        .await;
    shoot(&mut browser, "replay").await;

    // The console and everything it loaded came from this server.
    let foreign = browser.foreign_resources(&server.url("")).await;
    assert_eq!(foreign, json!([]), "the console loaded files from elsewhere");

    let timings: Value = browser.eval("window.cmdbConsole.timings").await;
    eprintln!("console pages, milliseconds to interactive (demo estate): {timings}");

    // Signing out forgets the token.
    act_and_wait(&mut browser, "document.getElementById('sign-out').click()", "sign-in").await;
    assert_eq!(browser.eval("sessionStorage.getItem('cmdb.console.token')").await, Value::Null);
}

#[tokio::test]
async fn the_console_is_usable_from_the_keyboard_and_every_control_is_labelled() {
    let Some(mut browser) =
        Browser::start("the_console_is_usable_from_the_keyboard_and_every_control_is_labelled").await
    else {
        return;
    };
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    browser.open(&server.url("/")).await;
    browser.wait_for(&format!("{MAIN}.dataset.page === 'sign-in'")).await;
    // The token field has the focus, so a user types and presses Enter.
    assert_eq!(browser.eval("document.activeElement.id").await, json!("token-input"));
    keep_token(&mut browser, &server.admin_token).await;
    for page in ["search", "changes", "calendar", "diff", "replay"] {
        act_and_wait(&mut browser, &format!("location.hash = '#/{page}'"), page).await;
        // Every form control has a name a screen reader reads out.
        let unlabelled = browser
            .eval(
                "Array.from(document.querySelectorAll('input, select, button')).filter(c => !c.closest('[hidden]') && !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !(c.innerText || '').trim()).map(c => c.outerHTML)",
            )
            .await;
        assert_eq!(unlabelled, json!([]), "unlabelled controls on {page}");
    }
    // "[" and "]" step the moment when no control has the focus.
    act_and_wait(&mut browser, "location.hash = '#/search'", "search").await;
    let head = server.head().await;
    browser.eval("document.activeElement.blur(); true").await;
    act_and_wait(
        &mut browser,
        "document.body.dispatchEvent(new KeyboardEvent('keydown', { key: '[', bubbles: true }))",
        "search",
    )
    .await;
    let shown = text_of(&mut browser, "#moment-shown").await;
    assert!(!shown.contains(&format!("position {head} ")), "one commit back from the head: {shown}");
    assert!(browser.eval("location.hash").await.as_str().expect("hash").contains("at="));

    // Showing now, the page says when the log moves on and shows the latest on request.
    act_and_wait(&mut browser, "location.hash = '#/changes'", "changes").await;
    server.principal_with_token("someone-new", &["VIEWER"]).await;
    let head = server.head().await;
    browser.wait_for(&format!("!document.getElementById('newer').hidden && document.getElementById('newer').innerText.includes('position {head}')")).await;
    act_and_wait(&mut browser, "document.getElementById('show-latest').click()", "changes").await;
    assert!(text_of(&mut browser, "#moment-shown").await.contains(&format!("position {head} of {head}")));
    assert_eq!(browser.eval("document.getElementById('newer').hidden").await, json!(true));

    // A page that does not exist says so; a refused token sends the user back to sign in.
    browser.eval(&format!("{MAIN}.dataset.state = 'stale'; location.hash = '#/nowhere'; true")).await;
    browser.wait_for(&format!("{MAIN}.dataset.state === 'error'")).await;
    assert!(text_of(&mut browser, "main").await.contains("there is no page \"nowhere\""));
    keep_token(&mut browser, "cmdb_revoked_or_wrong").await;
    browser.eval(&format!("{MAIN}.dataset.state = 'stale'; location.hash = '#/changes'; true")).await;
    browser.wait_for(&format!("{MAIN}.dataset.page === 'sign-in'")).await;
}

/// Opens each page once and prints how long it took to become interactive: on the demo, or on
/// the server `CMDB_CONSOLE_BENCH_URL` names with `CMDB_CONSOLE_BENCH_TOKEN` (how
/// `benches/scripts/console.sh` measures the large estate). Every page must be drawn.
#[tokio::test]
async fn every_page_is_drawn_and_timed() {
    let Some(mut browser) = Browser::start("every_page_is_drawn_and_timed").await else {
        return;
    };
    let external = std::env::var("CMDB_CONSOLE_BENCH_URL").ok().zip(std::env::var("CMDB_CONSOLE_BENCH_TOKEN").ok());
    let demo = match external {
        Some(_) => None,
        None => Some(TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await),
    };
    let (base, token) = match (&external, &demo) {
        (Some((url, token)), _) => (url.trim_end_matches('/').to_owned(), token.clone()),
        (None, Some(server)) => (server.base.clone(), server.admin_token.clone()),
        (None, None) => unreachable!("one of the two is set"),
    };
    let client = reqwest::Client::new();
    let ask = |query: &'static str| {
        let client = client.clone();
        let (base, token) = (base.clone(), token.clone());
        async move {
            let body: Value = client
                .post(format!("{base}/graphql"))
                .bearer_auth(token)
                .json(&json!({ "query": query }))
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            assert!(body.get("errors").is_none(), "{body}");
            body["data"].clone()
        }
    };
    let ids = ask(r#"{ at {
        host: cis(filter: { classes: ["host"], includeWithdrawn: false }, first: 1) { nodes { id } }
        app: cis(filter: { classes: ["application"], includeWithdrawn: false }, first: 1) { nodes { id } }
        changes(first: 1) { nodes { id } }
        devices: cis(filter: { classes: ["network_device"], includeWithdrawn: false }, first: 20) {
          nodes { id relationshipsConnection(first: 1) { totalCount } } } }
      head { position recordedAt } }"#)
    .await;
    let host = ids["at"]["host"]["nodes"][0]["id"].as_str().expect("a host").to_owned();
    let app = ids["at"]["app"]["nodes"][0]["id"].as_str().expect("an application").to_owned();
    let change = ids["at"]["changes"]["nodes"][0]["id"].as_str().expect("a change").to_owned();
    // The hub: the network device with the most relationships (a core router on the large estate).
    let hub = ids["at"]["devices"]["nodes"]
        .as_array()
        .expect("devices")
        .iter()
        .max_by_key(|d| d["relationshipsConnection"]["totalCount"].as_u64())
        .and_then(|d| d["id"].as_str())
        .expect("a network device")
        .to_owned();
    let now =
        chrono::DateTime::parse_from_rfc3339(ids["head"]["recordedAt"].as_str().expect("time")).expect("rfc 3339");
    let day_before = (now - chrono::Duration::days(1)).to_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    browser.set_viewport(1400, 1000).await;
    browser.open(&format!("{base}/")).await;
    keep_token(&mut browser, &token).await;
    let pages = [
        ("search", "#/search?name=a".to_owned()),
        ("ci", format!("#/ci/{app}")),
        ("ci", format!("#/ci/{hub}")),
        ("impact", format!("#/impact/{hub}?dir=DOWNSTREAM&depth=3")),
        ("impact", format!("#/impact/{host}?dir=DOWNSTREAM&depth=3")),
        ("diff", format!("#/diff?from={day_before}")),
        ("replay", "#/replay".to_owned()),
        ("calendar", "#/calendar".to_owned()),
        ("changes", "#/changes".to_owned()),
        ("change", format!("#/change/{change}")),
    ];
    let mut report = Vec::new();
    for (page, hash) in pages {
        act_and_wait(&mut browser, &format!("location.hash = {}", json!(hash)), page).await;
        let ms = browser.eval(&format!("Number({MAIN}.dataset.renderMs)")).await;
        let what = if hash.contains(&hub) { format!("{page} (hub)") } else { page.to_owned() };
        report.push(format!("{what} {ms} ms"));
    }
    // The first page after a fresh load: the scripts (the graph library among them) included.
    act_and_wait(&mut browser, "location.hash = '#/search'", "search").await;
    browser.eval("window.beforeReload = true").await;
    browser.call("Page.reload", json!({ "ignoreCache": true })).await;
    browser
        .wait_for(&format!(
            "!window.beforeReload && document.getElementById('main') && {MAIN}.dataset.state === 'ready' && {MAIN}.dataset.loadMs"
        ))
        .await;
    let load = browser.eval(&format!("Number({MAIN}.dataset.loadMs)")).await;
    report.push(format!("first load of search {load} ms"));
    eprintln!("console pages to interactive on {base}: {}", report.join(", "));
}

/// The issue's "done when": what did this service depend on a month ago, and what changed
/// since, answered with clicks and checked against the API's answers for the same moments.
#[tokio::test]
async fn what_a_service_depended_on_a_month_ago_and_what_changed_since() {
    let Some(mut browser) = Browser::start("what_a_service_depended_on_a_month_ago_and_what_changed_since").await
    else {
        return;
    };
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let found = server
        .ok(
            &server.admin_token,
            r#"{ head { position recordedAt } at { cis(filter: { classes: ["business_service"], includeWithdrawn: false }, first: 1) { nodes { id name } } } }"#,
            json!({}),
        )
        .await;
    let service = found["at"]["cis"]["nodes"][0]["id"].as_str().expect("a service").to_owned();
    let name = found["at"]["cis"]["nodes"][0]["name"].as_str().expect("name").to_owned();
    let head = found["head"]["position"].as_u64().expect("head");
    let now = chrono::DateTime::parse_from_rfc3339(found["head"]["recordedAt"].as_str().expect("time")).expect("time");
    let month_ago = (now - chrono::Duration::days(30)).to_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
    let then = server
        .ok(
            &server.admin_token,
            "query($t: DateTime, $id: ID!) { at(time: $t) { position impact(ci: $id, direction: UPSTREAM, maxDepth: 3, maxResults: 300) { reached { ci { name } } } } }",
            json!({ "t": format!("{month_ago}Z"), "id": service }),
        )
        .await;
    let position_then = then["at"]["position"].as_u64().expect("position");
    let mut depended: BTreeSet<String> = then["at"]["impact"]["reached"]
        .as_array()
        .expect("reached")
        .iter()
        .map(|r| r["ci"]["name"].as_str().expect("name").to_owned())
        .collect();
    depended.insert(name.clone());

    browser.open(&server.url("/")).await;
    keep_token(&mut browser, &server.admin_token).await;
    // Search, open the service, set the time control a month back.
    act_and_wait(&mut browser, &format!("location.hash = '#/search?name={}'", name.replace(' ', "%20")), "search")
        .await;
    act_and_wait(&mut browser, &format!("document.querySelector('main a[data-ci=\"{service}\"]').click()"), "ci").await;
    act_and_wait(
        &mut browser,
        &format!("{}; {}", type_into("#moment-kind", "time"), type_into("#moment-time", &month_ago)),
        "ci",
    )
    .await;
    browser
        .wait_for(&format!(
            "{MAIN}.dataset.state === 'ready' && document.getElementById('moment-shown').innerText.includes('position {position_then} ')"
        ))
        .await;
    // What it depended on then: the picture holds the API's answer for that moment.
    act_and_wait(
        &mut browser,
        "Array.from(document.querySelectorAll('main a')).find(a => a.innerText === 'What it depends on').click()",
        "impact",
    )
    .await;
    let drawn = browser.eval("window.cmdbConsole.picture.nodes().map(n => n.data('label'))").await;
    let drawn: BTreeSet<String> =
        drawn.as_array().expect("nodes").iter().map(|n| n.as_str().expect("label").to_owned()).collect();
    assert_eq!(drawn, depended, "the service's dependencies a month ago");
    // What changed around it since: the diff from that moment to the head, as the API counts it.
    act_and_wait(&mut browser, "history.back()", "ci").await;
    act_and_wait(&mut browser, "document.getElementById('changed-since').click()", "diff").await;
    let expected = server
        .ok(
            &server.admin_token,
            "query($f: Position, $t: Position, $id: ID!) { diff(from: { position: $f }, to: { position: $t }, around: $id, depth: 2) { createdCount changedCount withdrawnCount } }",
            json!({ "f": position_then, "t": head, "id": service }),
        )
        .await;
    let summary = text_of(&mut browser, "main").await;
    for (field, label) in [("createdCount", "created"), ("changedCount", "changed"), ("withdrawnCount", "withdrawn")] {
        let count = expected["diff"][field].as_u64().expect("count");
        assert!(summary.contains(&format!("{count} {label}")), "{count} {label} in {summary}");
    }
}

/// The console's files: the page at `/` with the page's CSP, its scripts as JavaScript, a
/// file it does not have answered 404 in the API's error shape.
#[tokio::test]
async fn the_console_is_served_from_the_binary() {
    let server = TestServer::start().await;
    let page = server.client.get(server.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let header = |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(header("content-type").starts_with("text/html"));
    assert!(header("content-security-policy").contains("script-src 'self'"), "{}", header("content-security-policy"));
    assert!(header("content-security-policy").contains("connect-src 'self'"));
    let html = page.text().await.expect("html");
    for file in ["/console/app.js", "/console/cytoscape.min.js", "/console/console.css"] {
        assert!(html.contains(file), "the page loads {file}");
    }
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("views.js", "text/javascript"),
        ("cytoscape.min.js", "text/javascript"),
        ("console.css", "text/css"),
        ("LICENSE.cytoscape", "text/plain"),
    ] {
        let answer = server.client.get(server.url(&format!("/console/{file}"))).send().await.expect("file");
        assert_eq!(answer.status(), 200, "{file}");
        let content_type = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(content_type.starts_with(kind), "{file}: {content_type}");
    }
    for missing in ["/console/nope.js", "/console/..%2Fsrc%2Fmain.rs", "/console/"] {
        let answer = server.client.get(server.url(missing)).send().await.expect("answer");
        assert_eq!(answer.status(), 404, "{missing}");
        let body: Value = answer.json().await.expect("json error");
        assert_eq!(body["errors"][0]["extensions"]["code"], json!("NOT_FOUND"), "{missing}: {body}");
    }
}

/// Bad input in the URL (an id that is not one, a moment that is not one, a moment before the
/// log) gets the API's own message on the page, and the log is unchanged (the console only
/// reads).
#[tokio::test]
async fn bad_input_in_the_url_is_shown_as_the_api_refuses_it_and_changes_nothing() {
    let Some(mut browser) =
        Browser::start("bad_input_in_the_url_is_shown_as_the_api_refuses_it_and_changes_nothing").await
    else {
        return;
    };
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let head = server.head().await;
    browser.open(&server.url("/")).await;
    keep_token(&mut browser, &server.admin_token).await;
    for (hash, expected) in [
        ("#/ci/not-a-uuid", "BAD_USER_INPUT"),
        ("#/search?at=yesterday-ish", "not an RFC 3339 timestamp"),
        ("#/impact/not-a-uuid", "BAD_USER_INPUT"),
        ("#/diff?from=not-a-time&to=1", "not an RFC 3339 timestamp"),
    ] {
        browser.eval(&format!("{MAIN}.dataset.state = 'stale'; location.hash = {}; true", json!(hash))).await;
        browser.wait_for(&format!("{MAIN}.dataset.state === 'error' || {MAIN}.dataset.state === 'ready'")).await;
        let text = text_of(&mut browser, "main").await;
        assert_eq!(browser.eval(&format!("{MAIN}.dataset.state")).await, json!("error"), "{hash}: {text}");
        assert!(text.contains(expected), "{hash}: {text}");
    }
    // A CI that does not exist (a well-formed id) is a page that says so, not an error.
    browser
        .eval(&format!(
            "{MAIN}.dataset.state = 'stale'; location.hash = '#/ci/00000000-0000-7000-8000-000000000000'; true"
        ))
        .await;
    browser.wait_for(&format!("{MAIN}.dataset.state === 'ready'")).await;
    assert!(text_of(&mut browser, "main").await.contains("did not exist at position"));
    assert_eq!(server.head().await, head, "the console wrote nothing");
}

/// A hub's page shows a page of its relationships with a link to the next, and the newest
/// part of its history with a link to the whole.
#[tokio::test]
async fn a_hub_pages_its_relationships_and_history() {
    let Some(mut browser) = Browser::start("a_hub_pages_its_relationships_and_history").await else {
        return;
    };
    let server = TestServer::start().await;
    server.uncontrolled().await;
    let register = "mutation($input: RegisterCiInput!) { registerCi(input: $input) { ci { id } } }";
    let relate = "mutation($input: RelateInput!) { relate(input: $input) { position } }";
    let hub = server
        .ok(
            &server.admin_token,
            register,
            json!({ "input": { "class": "network_device", "name": "core-router", "status": "LIVE", "attributes": { "device_type": "router" } } }),
        )
        .await["registerCi"]["ci"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // More relationships than two pages of the CI page, more history than it shows at first.
    let total = 205;
    for n in 0..total {
        let input = json!({ "input": { "class": "firewall", "name": format!("firewall-{n:03}"), "status": "LIVE" } });
        let app = server.ok(&server.admin_token, register, input).await["registerCi"]["ci"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        server
            .ok(
                &server.admin_token,
                relate,
                json!({ "input": { "type": "CONNECTS_TO", "source": app, "target": hub } }),
            )
            .await;
    }
    browser.open(&server.url("/")).await;
    keep_token(&mut browser, &server.admin_token).await;
    act_and_wait(&mut browser, &format!("location.hash = '#/ci/{hub}'"), "ci").await;
    let rows = "document.querySelectorAll('#relationships tbody tr').length";
    assert_eq!(browser.eval(rows).await, json!(100));
    let page = text_of(&mut browser, "main").await;
    assert!(page.contains(&format!("Relationships ({total})")), "{page}");
    assert!(page.contains("History (newest 200 entries)"), "{page}");
    let mut seen = 100;
    while seen < total {
        act_and_wait(&mut browser, "document.querySelector('main a[rel=next]').click()", "ci").await;
        seen += browser.eval(rows).await.as_u64().expect("rows");
    }
    assert_eq!(seen, total, "the pages add up to the relationships");
    assert_eq!(browser.eval("document.querySelector('main a[rel=next]') === null").await, json!(true));
    // The whole history on request: one entry for the registration and one per relationship.
    act_and_wait(
        &mut browser,
        "Array.from(document.querySelectorAll('main a')).find(a => a.innerText === 'Show the whole history').click()",
        "ci",
    )
    .await;
    let history = "document.querySelectorAll('#history tbody tr').length";
    assert_eq!(browser.eval(history).await, json!(total + 1));
}

/// Two members of a redundant group that needs two of them down, found through the API: the
/// group, and the two members' ids and names.
async fn a_group_needing_two(server: &TestServer) -> (String, [(String, String); 2]) {
    let groups = server
        .ok(
            &server.admin_token,
            r#"{ at { cis(filter: { classes: ["kubernetes_cluster", "load_balanced_pool"] }, first: 50) {
                 nodes { id name attributes relationships { type sourceId targetId source { id name } } } } } }"#,
            json!({}),
        )
        .await;
    for group in groups["at"]["cis"]["nodes"].as_array().expect("groups") {
        if group["attributes"]["members_to_fail"] != json!(2) {
            continue;
        }
        let members: Vec<(String, String)> = group["relationships"]
            .as_array()
            .expect("relationships")
            .iter()
            .filter(|r| r["type"] == json!("PART_OF") && r["targetId"] == group["id"])
            .map(|r| {
                let source = &r["source"];
                (source["id"].as_str().expect("id").to_owned(), source["name"].as_str().expect("name").to_owned())
            })
            .collect();
        if let [first, second, ..] = members.as_slice() {
            return (group["name"].as_str().expect("name").to_owned(), [first.clone(), second.clone()]);
        }
    }
    panic!("the demo declares a redundant group of at least two members that needs two down");
}

/// The severity the API gives `group` when `ids` fail together (within three hops).
async fn group_severity(server: &TestServer, ids: &[&str], group: &str) -> String {
    let data = server
        .ok(
            &server.admin_token,
            "query($ids: [ID!]) { at { impact(cis: $ids, maxDepth: 3, maxResults: 300) { reached { severity ci { name } } } } }",
            json!({ "ids": ids }),
        )
        .await;
    let reached = data["at"]["impact"]["reached"].as_array().expect("reached");
    let found = reached.iter().find(|r| r["ci"]["name"] == json!(group)).expect("the group is reached");
    found["severity"].as_str().expect("severity").to_owned()
}

/// The (CI, severity) rows of the impact page's table of every CI reached.
async fn shown_severities(browser: &mut Browser) -> Vec<(String, String)> {
    let shown = browser
        .eval("[...document.querySelectorAll('#impact-reached tbody tr')].filter(r => r.cells.length === 5).map(r => [r.cells[0].textContent, r.cells[3].textContent])")
        .await;
    serde_json::from_value(shown).expect("rows")
}

/// The impact page shows the API's answer for `roots` failing together (within three hops): the
/// picture's nodes and roots, and each service with the way its failure arrives.
async fn assert_page_is_the_apis(browser: &mut Browser, server: &TestServer, roots: [(&str, &str); 2]) {
    let [(first_id, first), (second_id, second)] = roots;
    let expected = server
        .ok(
            &server.admin_token,
            "query($ids: [ID!]) { at { impact(cis: $ids, maxDepth: 3, maxResults: 300) {
               roots { name } reached { ci { name } } services { service { name } severityPath { ci { name } } } } } }",
            json!({ "ids": [first_id, second_id] }),
        )
        .await;
    let answer = &expected["at"]["impact"];
    let mut names: BTreeSet<String> = answer["reached"]
        .as_array()
        .expect("reached")
        .iter()
        .map(|r| r["ci"]["name"].as_str().expect("name").to_owned())
        .collect();
    names.extend([first.to_owned(), second.to_owned()]);
    let drawn = browser.eval("window.cmdbConsole.picture.nodes().map(n => n.data('label'))").await;
    let drawn: BTreeSet<String> = serde_json::from_value(drawn).expect("labels");
    assert_eq!(drawn, names, "the picture's nodes are the roots and the CIs the API reaches");
    let roots = browser.eval("window.cmdbConsole.picture.nodes('.root').map(n => n.data('label')).sort()").await;
    let mut both_names = vec![first.to_owned(), second.to_owned()];
    both_names.sort();
    assert_eq!(roots, json!(both_names), "both CIs failing are drawn as roots");
    let ways: Vec<(String, String)> = answer["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| (s["service"]["name"].as_str().expect("name").to_owned(), way_of(&s["severityPath"])))
        .collect();
    assert_eq!(shown_ways(browser, "impact-services").await, ways, "the services and the ways they go down");
}

/// Part 2 of issue 15 in the console: CIs failing together, ticked in the search results or
/// added by name, drawn as one impact; the page's answer is the API's for the same set, a group
/// needing two members down is down only when both are, and leaving one out says degraded.
#[tokio::test]
async fn several_cis_failing_together_are_one_impact() {
    let Some(mut browser) = Browser::start("several_cis_failing_together_are_one_impact").await else {
        return;
    };
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let head = server.head().await;
    let (group, [(first_id, first), (second_id, second)]) = a_group_needing_two(&server).await;
    assert_eq!(group_severity(&server, &[&first_id], &group).await, "DEGRADED", "one member of {group} down");
    assert_eq!(group_severity(&server, &[&first_id, &second_id], &group).await, "DOWN", "two members down");
    browser.set_viewport(1400, 1000).await;
    browser.open(&server.url("/")).await;
    keep_token(&mut browser, &server.admin_token).await;

    // Tick the first member in the search results: the button opens its impact.
    act_and_wait(&mut browser, &format!("location.hash = '#/search?name={first}'"), "search").await;
    assert_eq!(browser.eval("document.getElementById('impact-selected').disabled").await, json!(true));
    browser
        .eval(&format!(
            "{{ const box = document.querySelector('#search-results input[value=\"{first_id}\"]'); box.checked = true; box.dispatchEvent(new Event('change', {{ bubbles: true }})); }} true"
        ))
        .await;
    assert_eq!(browser.eval("document.getElementById('impact-selected').disabled").await, json!(false));
    act_and_wait(&mut browser, "document.getElementById('impact-selected').click()", "impact").await;
    assert!(text_of(&mut browser, "#page-title").await.contains(&first));
    let alone = shown_severities(&mut browser).await;
    assert!(
        alone.contains(&(group.clone(), "DEGRADED".to_owned())),
        "{group} degraded with one member down: {alone:?}"
    );

    // "Fails too", by exact name: the second member joins.
    act_and_wait(
        &mut browser,
        &format!(
            "{}; document.querySelector('form[aria-label=\"Add a CI that fails too\"]').requestSubmit()",
            type_into("#also-failing", &second)
        ),
        "impact",
    )
    .await;
    browser.wait_for("document.querySelectorAll('#impact-roots li').length === 2").await;
    assert!(text_of(&mut browser, "#page-title").await.contains("2 CIs failing together"));
    let both = shown_severities(&mut browser).await;
    assert!(both.contains(&(group.clone(), "DOWN".to_owned())), "{group} down with both members down: {both:?}");

    // The page's answer is the API's for the same two CIs: the picture, and the services.
    assert_page_is_the_apis(&mut browser, &server, [(&first_id, &first), (&second_id, &second)]).await;
    shoot(&mut browser, "impact-together").await;

    // Leaving the first out: the second alone, and the group degraded again.
    act_and_wait(
        &mut browser,
        &format!("document.querySelector('a[data-leave-out=\"{first_id}\"]').click()"),
        "impact",
    )
    .await;
    assert!(text_of(&mut browser, "#page-title").await.contains(&second));
    let left = shown_severities(&mut browser).await;
    assert!(left.contains(&(group.clone(), "DEGRADED".to_owned())), "{group} degraded again: {left:?}");

    // A name several CIs share offers them; picking the first member brings both back.
    let shared: String = first.chars().take(first.len().saturating_sub(1)).collect();
    browser
        .eval(&format!(
            "{}; document.querySelector('form[aria-label=\"Add a CI that fails too\"]').requestSubmit(); true",
            type_into("#also-failing", &shared)
        ))
        .await;
    browser
        .wait_for(&format!("document.querySelector('#also-failing-choices a[data-add=\"{first_id}\"]') !== null"))
        .await;
    act_and_wait(
        &mut browser,
        &format!("document.querySelector('#also-failing-choices a[data-add=\"{first_id}\"]').click()"),
        "impact",
    )
    .await;
    browser.wait_for("document.querySelectorAll('#impact-roots li').length === 2").await;

    // A name nobody has is said so, and the page stays as it was.
    browser
        .eval(&format!(
            "{}; document.querySelector('form[aria-label=\"Add a CI that fails too\"]').requestSubmit(); true",
            type_into("#also-failing", "no-such-ci-anywhere")
        ))
        .await;
    browser
        .wait_for("document.getElementById('also-failing-choices').innerText.includes('No CI at this moment')")
        .await;
    assert_eq!(browser.eval("document.querySelectorAll('#impact-roots li').length").await, json!(2));

    // Ids written in upper case name the same CIs: leaving one out still finds it.
    let upper = format!("#/impact/{},{}", first_id.to_uppercase(), second_id.to_uppercase());
    act_and_wait(&mut browser, &format!("location.hash = '{upper}'"), "impact").await;
    assert_eq!(browser.eval("document.querySelectorAll('#impact-roots li').length").await, json!(2));
    act_and_wait(
        &mut browser,
        &format!("document.querySelector('a[data-leave-out=\"{first_id}\"]').click()"),
        "impact",
    )
    .await;
    assert!(text_of(&mut browser, "#page-title").await.contains(&second), "left with {second} alone");

    // A malformed id among the roots is refused as the API refuses it.
    browser
        .eval(&format!("{MAIN}.dataset.state = 'stale'; location.hash = '#/impact/{first_id},not-a-uuid'; true"))
        .await;
    browser.wait_for(&format!("{MAIN}.dataset.state === 'error' || {MAIN}.dataset.state === 'ready'")).await;
    assert_eq!(browser.eval(&format!("{MAIN}.dataset.state")).await, json!("error"));
    assert!(text_of(&mut browser, "main").await.contains("BAD_USER_INPUT"));
    assert_eq!(server.head().await, head, "the console wrote nothing");
}
