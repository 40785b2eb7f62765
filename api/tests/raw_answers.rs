//! Large lists written straight as JSON text (issue 15, part 7): over HTTP a plain selection on a
//! diff's entries, a page of CIs or a page of relationships is written from the graph without a
//! value per field, also when the selection is written with fragments. The answer must not
//! depend on which path ran: the same selection written twice (each key twice, which only the
//! general path answers) gives the same JSON, over random selections of the demo estate. The byte bound holds on the text path too.

mod common;

use common::{TestServer, settings};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// One field of a selection: its name and, for an object, its own selection.
#[derive(Clone, Debug)]
struct Pick {
    alias: Option<String>,
    name: &'static str,
    sub: Vec<Pick>,
}

const CI_SCALARS: &[&str] =
    &["id", "class", "name", "status", "environment", "version", "attributes", "validFrom", "validTo", "__typename"];
const REL_SCALARS: &[&str] =
    &["id", "type", "sourceId", "targetId", "validFrom", "validTo", "authorizedBy", "__typename"];

/// Up to `width` distinct fields of `scalars` and `objects` (objects get a `Ci` selection), in
/// random order, some aliased.
fn picks(scalars: &'static [&'static str], objects: &'static [&'static str], depth: u32) -> BoxedStrategy<Vec<Pick>> {
    let names: Vec<&'static str> =
        scalars.iter().copied().chain(if depth > 0 { objects.to_vec() } else { vec![] }).collect();
    let count = names.len();
    (proptest::sample::subsequence(names, 1..=count), any::<u64>())
        .prop_flat_map(move |(chosen, seed)| {
            let subs: Vec<BoxedStrategy<Vec<Pick>>> = chosen
                .iter()
                .map(|name| {
                    if objects.contains(name) {
                        picks(CI_SCALARS, &["owner", "location"], depth - 1)
                    } else {
                        Just(vec![]).boxed()
                    }
                })
                .collect();
            (Just(chosen), subs, Just(seed))
        })
        .prop_map(|(chosen, subs, seed)| {
            let mut picked: Vec<Pick> = chosen
                .into_iter()
                .zip(subs)
                .enumerate()
                .map(|(index, (name, sub))| Pick {
                    alias: (seed >> (index % 64) & 1 == 1).then(|| format!("a{index}")),
                    name,
                    sub,
                })
                .collect();
            // A fixed shuffle from the seed: the order of the keys is the selection's.
            let len = picked.len();
            for index in 0..len {
                let other = (seed.rotate_left(index as u32) as usize) % len;
                picked.swap(index, other);
            }
            picked
        })
        .boxed()
}

fn selection(picks: &[Pick]) -> String {
    written(picks, false)
}

/// The same selection as a client with fragments writes it: every object's selection inside an
/// inline fragment without a type, the first field of each level on its own before it.
fn with_fragments(picks: &[Pick]) -> String {
    written(picks, true)
}

fn written(picks: &[Pick], fragments: bool) -> String {
    let fields: Vec<String> = picks
        .iter()
        .map(|pick| {
            let alias = pick.alias.as_ref().map(|a| format!("{a}: ")).unwrap_or_default();
            if pick.sub.is_empty() {
                format!("{alias}{}", pick.name)
            } else {
                format!("{alias}{} {{ {} }}", pick.name, written(&pick.sub, fragments))
            }
        })
        .collect();
    match fields.split_first() {
        Some((first, rest)) if fragments && !rest.is_empty() => format!("{first} ... {{ {} }}", rest.join(" ")),
        _ => fields.join(" "),
    }
}

async fn body(server: &TestServer, query: &str) -> String {
    let response = server
        .client
        .post(server.url("/graphql"))
        .bearer_auth(&server.admin_token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// `data.<path>.nodes` of an answer.
fn nodes<'a>(answer: &'a async_graphql::Value, path: &[&str]) -> Option<&'a async_graphql::Value> {
    nodes_at(answer, &[path, &["nodes"]].concat())
}

/// `data.<path>` of an answer.
fn nodes_at<'a>(answer: &'a async_graphql::Value, path: &[&str]) -> Option<&'a async_graphql::Value> {
    let mut at = answer;
    for key in std::iter::once(&"data").chain(path) {
        let async_graphql::Value::Object(fields) = at else { return None };
        at = fields.get(*key)?;
    }
    Some(at)
}

/// How many lists the server wrote each way (`graphql_lists_total`): (as text, field by field).
async fn lists_written(server: &TestServer) -> (u64, u64) {
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let count = |label: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("graphql_lists_total{{written=\"{label}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (count("as_text"), count("field_by_field"))
}

async fn demo() -> TestServer {
    TestServer::start_with(cmdb_api::settings::ServeSettings { demo: true, max_page_size: 10_000, ..settings() }).await
}

/// Whether every object under `value` answering `picks` has its keys in the selection's order
/// (the GraphQL spec's order).
fn in_selection_order(value: &async_graphql::Value, picks: &[Pick]) -> bool {
    match value {
        async_graphql::Value::List(items) => items.iter().all(|item| in_selection_order(item, picks)),
        async_graphql::Value::Object(fields) => {
            let keys: Vec<&str> = fields.keys().map(|k| k.as_str()).collect();
            let wanted: Vec<&str> = picks.iter().map(|p| p.alias.as_deref().unwrap_or(p.name)).collect();
            keys == wanted
                && picks
                    .iter()
                    .filter(|p| !p.sub.is_empty())
                    .all(|p| in_selection_order(&fields[p.alias.as_deref().unwrap_or(p.name)], &p.sub))
        }
        _ => true,
    }
}

/// Runs random selections: `query(selection)` answered as text and, written twice (each key
/// twice, which GraphQL merges and only the general path answers), by the general path, must
/// be the same JSON, and list something. The selection written with fragments (a named one on `typename` around
/// fragments inside) is answered as text too, with the same JSON.
/// The text path's keys follow the selection's order; async-graphql's general path orders an
/// object's keys as its fields complete (a field that yields to the limits' time slice comes
/// last), so the two are compared as JSON values, not bytes.
fn same_on_both_paths(
    server: &TestServer,
    strategy: BoxedStrategy<Vec<Pick>>,
    typename: &str,
    query: impl Fn(&str) -> String,
    list: impl Fn(&async_graphql::Value) -> Option<&async_graphql::Value>,
) {
    let handle = tokio::runtime::Handle::current();
    let before = tokio::task::block_in_place(|| handle.block_on(lists_written(server)));
    let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |picked| {
            let plain = selection(&picked);
            let spread =
                format!("{} fragment Picked on {typename} {{ {} }}", query("...Picked"), with_fragments(&picked));
            let (text, general, fragmented) = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    (
                        body(server, &query(&plain)).await,
                        body(server, &query(&format!("{plain} {plain}"))).await,
                        body(server, &spread).await,
                    )
                })
            });
            let fragmented: Value = serde_json::from_str(&fragmented).expect("json");
            let as_plain: Value = serde_json::from_str(&text).expect("json");
            prop_assert_eq!(&fragmented, &as_plain, "the selection written with fragments, {}", spread);
            let short = |t: &str| t.chars().take(400).collect::<String>();
            let ordered: async_graphql::Value = serde_json::from_str(&text).expect("the text path writes JSON");
            let items = list(&ordered).ok_or_else(|| TestCaseError::fail(format!("no list: {}", short(&text))))?;
            prop_assert!(matches!(items, async_graphql::Value::List(l) if !l.is_empty()), "{}", short(&text));
            prop_assert!(in_selection_order(items, &picked), "keys out of order: {}", short(&text));
            let (text, general): (Value, Value) =
                (serde_json::from_str(&text).expect("json"), serde_json::from_str(&general).expect("json"));
            prop_assert!(general.get("errors").is_none(), "{}", short(&general.to_string()));
            if text != general {
                let (a, b) = (text.to_string(), general.to_string());
                let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
                let around = |t: &str| t.chars().skip(at.saturating_sub(200)).take(400).collect::<String>();
                prop_assert!(false, "selection {plain}\ntext:    {}\ngeneral: {}", around(&a), around(&b));
            }
            Ok(())
        })
        .expect("the text path answers as the general path");
    // Each case ran twice as text (plain, and with fragments) and once on the general path
    // (the doubled selection). The counters are the process's: tests running beside this one
    // add to them, so they are checked as lower bounds.
    let after = tokio::task::block_in_place(|| handle.block_on(lists_written(server)));
    assert!(after.0 >= before.0 + 48 && after.1 >= before.1 + 24, "{before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diff_written_as_text_equals_the_general_answer_for_any_plain_selection() {
    let server = demo().await;
    let head = server.head().await;
    // Every CI kind (created, changed, withdrawn) over the whole demo history.
    let diff_ci = (picks(&["id", "kind", "transitioned", "__typename"], &["before", "after"], 2)).boxed();
    same_on_both_paths(
        &server,
        diff_ci,
        "DiffCi",
        |s| {
            format!(
                "{{ diff(from: {{position: 40}}, to: {{position: {head}}}) {{ cis(first: 300) {{ nodes {{ {s} }} }} }} }}"
            )
        },
        |v| nodes(v, &["diff", "cis"]),
    );
    // Each entry's changed fields, with the entry's id before or after them.
    let field_change = proptest::sample::subsequence(vec!["field", "before", "after", "__typename"], 1..=4)
        .prop_map(|names| names.into_iter().map(|name| Pick { alias: None, name, sub: vec![] }).collect::<Vec<_>>());
    let diff_fields = (field_change, any::<bool>())
        .prop_map(|(sub, fields_first)| {
            let fields = Pick { alias: Some("f".into()), name: "fields", sub };
            let id = Pick { alias: None, name: "id", sub: vec![] };
            if fields_first { vec![fields, id] } else { vec![id, fields] }
        })
        .boxed();
    same_on_both_paths(
        &server,
        diff_fields,
        "DiffCi",
        |s| {
            format!(
                "{{ diff(from: {{position: 40}}, to: {{position: {head}}}) {{ cis(first: 300) {{ nodes {{ {s} }} }} }} }}"
            )
        },
        |v| nodes(v, &["diff", "cis"]),
    );
    let rel = picks(REL_SCALARS, &["source", "target"], 1);
    let diff_rel = rel
        .prop_flat_map(|rel| {
            (Just(rel), any::<bool>()).prop_map(|(rel, kind_first)| {
                let relationship = Pick { alias: None, name: "relationship", sub: rel };
                let kind = Pick { alias: Some("k".into()), name: "kind", sub: vec![] };
                if kind_first { vec![kind, relationship] } else { vec![relationship, kind] }
            })
        })
        .boxed();
    same_on_both_paths(
        &server,
        diff_rel,
        "DiffRelationship",
        |s| {
            format!(
                "{{ diff(from: {{position: 40}}, to: {{position: {head}}}) {{ relationships(first: 300) {{ nodes {{ {s} }} }} }} }}"
            )
        },
        |v| nodes(v, &["diff", "relationships"]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_cis_and_relationships_written_as_text_equal_the_general_answer() {
    let server = demo().await;
    let head = server.head().await;
    // A moment in the past (owners, locations and version bounds read there) and the head.
    for position in [head / 2, head] {
        same_on_both_paths(
            &server,
            picks(CI_SCALARS, &["owner", "location"], 2),
            "Ci",
            |s| {
                format!(
                    "{{ at(position: {position}) {{ cis(first: 200, filter: {{includeWithdrawn: true}}) {{ nodes {{ {s} }} }} }} }}"
                )
            },
            |v| nodes(v, &["at", "cis"]),
        );
    }
    // An impact's reached CIs and services, from a switch (it reaches much of the estate).
    let switch = server
        .ok(
            &server.admin_token,
            r#"{ at { cis(first: 1, filter: {classes: ["network_device"]}) { nodes { id } } } }"#,
            json!({}),
        )
        .await["at"]["cis"]["nodes"][0]["id"]
        .as_str()
        .expect("the demo has a switch")
        .to_owned();
    let impact = |list: &str, s: &str| {
        format!("{{ at {{ impact(ci: \"{switch}\", maxDepth: 8, maxResults: 5000) {{ {list} {{ {s} }} }} }} }}")
    };
    let entry = |ci_field: &'static str, scalars: &'static [&'static str]| {
        (picks(scalars, &[], 0), picks(CI_SCALARS, &["owner"], 1), any::<u8>())
            .prop_map(move |(mut picked, ci, at)| {
                let at = usize::from(at) % (picked.len() + 1);
                picked.insert(at, Pick { alias: None, name: ci_field, sub: ci });
                picked
            })
            .boxed()
    };
    same_on_both_paths(
        &server,
        entry("ci", &["depth", "severity", "__typename"]),
        "ImpactedCi",
        |s| impact("reached", s),
        |v| nodes_at(v, &["at", "impact", "reached"]),
    );
    same_on_both_paths(
        &server,
        entry("service", &["depth", "severity", "tier", "__typename"]),
        "ImpactedService",
        |s| impact("services", s),
        |v| nodes_at(v, &["at", "impact", "services"]),
    );
    same_on_both_paths(
        &server,
        picks(REL_SCALARS, &["source", "target"], 1),
        "Relationship",
        |s| format!("{{ at {{ relationships(first: 200) {{ nodes {{ {s} }} }} }} }}"),
        |v| nodes(v, &["at", "relationships"]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_written_as_text_past_max_response_bytes_is_refused_as_a_whole() {
    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        demo: true,
        max_page_size: 10_000,
        max_response_bytes: 65_536,
        ..settings()
    })
    .await;
    let head_before = server.head().await;
    let text = body(&server, "{ at { cis(first: 5000) { nodes { id name attributes } } } }").await;
    assert!(text.len() < 4_096, "the refusal is short, not the cut text: {} bytes", text.len());
    let value: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(value["data"], Value::Null, "{value}");
    assert_eq!(value["errors"][0]["extensions"]["limit"], "max_response_bytes", "{value}");
    // Under the bound the same list answers, and nothing was written by either read.
    let small = body(&server, "{ at { cis(first: 20) { nodes { id name } } } }").await;
    let small: Value = serde_json::from_str(&small).expect("json");
    assert_eq!(small["data"]["at"]["cis"]["nodes"].as_array().map(Vec::len), Some(20), "{small}");
    assert_eq!(server.head().await, head_before);
}
