//! The README is true by construction: every fenced `graphql` block runs against a fresh demo
//! server and answers without errors, and every fenced `sh` block (the curl commands) runs in
//! bash against it, each GraphQL answer it prints free of errors. Blocks of other kinds (the
//! life-cycle diagram, CLI pipelines, set-up commands) are text, not run.

mod common;

use std::process::Command;

use common::{TestServer, settings};
use serde_json::{Value, json};

/// A fenced code block of the README: its language and text, and the line it starts on.
struct Block {
    language: String,
    text: String,
    line: usize,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => {
                open = Some(Block { language: language.trim().to_owned(), text: String::new(), line: n + 1 });
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "the README has an unclosed code block");
    blocks
}

/// The secret the README's webhook example signs with.
const README_WEBHOOK_SECRET: &str = "demo-secret-0123456789";

/// Every JSON value a shell block printed (several curls print several answers).
fn printed_json(stdout: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(stdout).into_iter::<Value>().map_while(Result::ok).collect()
}

fn assert_no_errors(answer: &Value, block: &Block) {
    assert!(
        answer.get("errors").is_none(),
        "README line {}: the answer has errors: {answer}\n{}",
        block.line,
        block.text
    );
}

/// The README names demo changes by number (`CHG-000046`, the core-switch replacement, assessed;
/// `CHG-000050`, which conflicts with two others). When the demo's history changes, the numbers
/// move: an answer with no such change, no assessment or no conflict means the text now points
/// at another change than the one it describes.
fn assert_names_what_it_describes(answer: &Value, block: &Block) {
    let mut pending = vec![answer];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(fields) => {
                for (key, field) in fields {
                    let empty = field.is_null() || (key == "conflicts" && field.as_array().is_some_and(Vec::is_empty));
                    assert!(
                        !(["change", "assessment", "conflicts"].contains(&key.as_str()) && empty),
                        "README line {}: `{key}` is empty; the example names another change than it describes: {answer}",
                        block.line
                    );
                    pending.push(field);
                }
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_example_runs_against_the_demo() {
    let readme_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(readme_path).expect("README.md");
    let blocks = fenced_blocks(&readme);
    let graphql: Vec<&Block> = blocks.iter().filter(|b| b.language == "graphql").collect();
    let shell: Vec<&Block> = blocks.iter().filter(|b| b.language == "sh").collect();
    // So that the README cannot lose its examples and still pass.
    assert!(graphql.len() >= 6, "only {} graphql blocks", graphql.len());
    assert!(shell.len() >= 5, "only {} sh blocks", shell.len());
    for tool in ["bash", "curl", "jq", "openssl"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().expect("sh");
        assert!(found.status.success(), "the README's examples need {tool} (.ci/run installs it)");
    }

    let server = TestServer::start_with(cmdb_api::settings::ServeSettings {
        demo: true,
        github_webhook_secret: Some(README_WEBHOOK_SECRET.parse().expect("secret")),
        ..settings()
    })
    .await;

    for block in &graphql {
        let (status, answer) = server.graphql(&server.admin_token, &block.text, json!({})).await;
        assert_eq!(status, 200, "README line {}: {answer}", block.line);
        assert_no_errors(&answer, block);
        assert!(answer["data"].is_object(), "README line {}: no data: {answer}", block.line);
        assert_names_what_it_describes(&answer, block);
    }

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let address = server.base.trim_start_matches("http://").to_owned();
    for block in &shell {
        let script = block.text.replace("127.0.0.1:8080", &address).replace("localhost:8080", &address);
        let output = Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(root)
            .env("TOKEN", &server.admin_token)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "README line {}: the block failed: {}\n{stdout}\n{}",
            block.line,
            String::from_utf8_lossy(&output.stderr),
            block.text
        );
        let answers = printed_json(&stdout);
        if answers.is_empty() {
            // The calendar feed: iCalendar text, not JSON.
            assert!(stdout.starts_with("BEGIN:VCALENDAR"), "README line {}: {stdout}", block.line);
            continue;
        }
        for answer in &answers {
            assert_no_errors(answer, block);
            assert!(
                answer.get("data").is_some_and(Value::is_object) || answer.get("outcome").is_some(),
                "README line {}: neither data nor an outcome: {answer}",
                block.line
            );
        }
    }
}
