//! `/metrics` as Prometheus reads it: HELP on every family, the process's own metrics, and the
//! estate's business gauges equal to what GraphQL says of the estate. (Alone in its binary:
//! the recorder is per process, and another server's gauges would overwrite these.)

mod common;

use std::collections::BTreeMap;

use common::{TestServer, settings};
use serde_json::json;

/// The value of one series, by its exact name and labels.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn every_family_has_help_and_the_business_gauges_match_the_estate() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, ..settings() }).await;
    let viewer = server.principal_with_token("scraper", &["VIEWER"]).await;
    let text = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");

    // Every family rendered has a HELP line.
    let helped: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next()).collect();
    let typed: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    assert!(!typed.is_empty(), "{text}");
    for family in &typed {
        assert!(helped.contains(family), "{family} has no HELP:\n{text}");
    }

    // The process: CPU, memory, open files.
    for family in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        assert!(typed.contains(&family), "{family} missing:\n{text}");
    }

    // CIs by class and status: the live hosts GraphQL lists.
    let mut live_hosts = 0;
    let mut after = serde_json::Value::Null;
    loop {
        let data = server
            .ok(
                &viewer,
                r#"query($after: String) { at { cis(filter: {classes: ["host"], statuses: [LIVE]}, first: 200, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } } }"#,
                json!({ "after": after }),
            )
            .await;
        let page = &data["at"]["cis"];
        live_hosts += page["nodes"].as_array().expect("nodes").len();
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert!(live_hosts > 0);
    assert_eq!(series(&text, r#"estate_cis{class="host",status="live"}"#), Some(live_hosts as f64), "{text}");

    // Changes by state: what GraphQL lists.
    let data = server
        .ok(
            &viewer,
            "{ at { changes(first: 1000) { nodes { state } totalCount } overdueChanges { overdue } } }",
            json!({}),
        )
        .await;
    let mut by_state: BTreeMap<String, f64> = BTreeMap::new();
    for change in data["at"]["changes"]["nodes"].as_array().expect("changes") {
        *by_state.entry(change["state"].as_str().expect("state").to_ascii_lowercase()).or_default() += 1.0;
    }
    assert!(!by_state.is_empty());
    for (state, count) in &by_state {
        let open = !matches!(state.as_str(), "closed" | "rejected" | "cancelled");
        let name = format!(r#"changes_by_state{{state="{state}",open="{open}"}}"#);
        assert_eq!(series(&text, &name), Some(*count), "{name}:\n{text}");
    }
    let overdue = data["at"]["overdueChanges"].as_array().expect("overdue").len() as f64;
    assert_eq!(series(&text, "changes_overdue"), Some(overdue));
    assert!(series(&text, "unauthorised_changes_recorded").is_some());
}
