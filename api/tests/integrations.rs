//! The pipeline examples in docs/integrations/ (GitHub Actions, GitLab CI, an Argo CD PreSync
//! hook) parsed as their tools read them: each calls `cmdb gate --wait` with every field the
//! gate needs and reports both outcomes, and every `cmdb` command line in them is accepted by
//! the real command-line parser.

use std::path::PathBuf;

use clap::Parser;
use cmdb_api::cli::{Cli, Command};
use yaml_rust2::{Yaml, YamlLoader};

fn docs(file: &str) -> (String, Vec<Yaml>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/integrations").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    (text, docs)
}

/// Every string anywhere in a document.
fn strings(yaml: &Yaml, out: &mut Vec<String>) {
    match yaml {
        Yaml::String(s) => out.push(s.clone()),
        Yaml::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Yaml::Hash(map) => map.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        _ => {}
    }
}

/// `${{ expr }}`, `$(command)`, `${VAR}` and `$VAR` replaced by a placeholder, as a shell would
/// substitute them.
fn substitute(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = if let Some(inner) = tail.strip_prefix("${{") {
            inner.find("}}").map(|e| e + 5)
        } else if let Some(inner) = tail.strip_prefix("$(") {
            inner.find(')').map(|e| e + 3)
        } else if let Some(inner) = tail.strip_prefix("${") {
            inner.find('}').map(|e| e + 3)
        } else {
            Some(1 + tail[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len() - 1))
        };
        let end = end.unwrap_or(tail.len());
        out.push_str("placeholder");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The `cmdb` command lines of a file: from shell text, or from a container's command array.
fn command_lines(docs: &[Yaml]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for doc in docs {
        let mut all = Vec::new();
        strings(doc, &mut all);
        for text in &all {
            for line in text.replace("\\\n", " ").lines() {
                let line = line.trim();
                if line.starts_with("cmdb ") {
                    let args = shlex::split(&substitute(line)).unwrap_or_else(|| panic!("not shell words: {line}"));
                    found.push(args);
                }
            }
        }
        // Kubernetes: command: [cmdb, gate, ...]
        for container in containers(doc) {
            if let Some(command) = container["command"].as_vec()
                && command.first().and_then(Yaml::as_str) == Some("cmdb")
            {
                found
                    .push(command.iter().map(|a| a.as_str().map_or_else(|| format!("{a:?}"), str::to_owned)).collect());
            }
        }
    }
    found
}

fn containers(doc: &Yaml) -> Vec<&Yaml> {
    doc["spec"]["template"]["spec"]["containers"].as_vec().map(|v| v.iter().collect()).unwrap_or_default()
}

/// Parses one command line with the real parser; the token and the pipeline come from the
/// environment the file sets, which `defines` says it does.
fn parse(args: &[String], text: &str) -> Command {
    let mut argv = args.to_vec();
    for (flag, variable) in [
        ("--token", "CMDB_TOKEN"),
        ("--url", "CMDB_URL"),
        ("--provider", "CMDB_PIPELINE_PROVIDER"),
        ("--run-id", "CMDB_PIPELINE_RUN_ID"),
    ] {
        if !argv.iter().any(|a| a == flag) {
            assert!(text.contains(variable), "{flag} is neither given nor set as {variable}: {args:?}");
            argv.push(flag.into());
            argv.push("from-the-environment".into());
        }
    }
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{args:?} does not parse: {e}")).command
}

fn check(file: &str) {
    let (text, docs) = docs(file);
    let lines = command_lines(&docs);
    let mut gate_with_wait = false;
    let mut reports = Vec::new();
    for args in &lines {
        let joined = args.join(" ");
        match parse(args, &text) {
            Command::Gate(_) => {
                for field in ["--service", "--environment", "--artifact", "--version", "--digest"] {
                    assert!(args.iter().any(|a| a == field), "{file}: the gate needs {field}: {joined}");
                }
                gate_with_wait |= args.iter().any(|a| a == "--wait");
            }
            Command::Deployment(_) => {
                let status = args.iter().position(|a| a == "--status").and_then(|i| args.get(i + 1)).cloned();
                reports.push(status.unwrap_or_default());
            }
            other => panic!("{file}: unexpected command {other:?}"),
        }
    }
    assert!(gate_with_wait, "{file} calls cmdb gate --wait: {lines:?}");
    for status in ["succeeded", "failed"] {
        assert!(reports.iter().any(|r| r == status), "{file} reports {status}: {reports:?}");
    }
}

#[test]
fn the_github_actions_workflow_asks_the_gate_and_reports_both_outcomes() {
    check("github-actions.yml");
    let (_, docs) = docs("github-actions.yml");
    assert!(!docs[0]["jobs"]["deploy"]["steps"].is_badvalue(), "a workflow with a deploy job");
}

#[test]
fn the_gitlab_job_asks_the_gate_and_reports_both_outcomes() {
    check("gitlab-ci.yml");
    let (_, docs) = docs("gitlab-ci.yml");
    assert_eq!(docs[0]["deploy-production"]["stage"].as_str(), Some("deploy"));
}

#[test]
fn the_argo_cd_hooks_gate_before_sync_and_report_after() {
    check("argocd-presync-hook.yaml");
    let (_, docs) = docs("argocd-presync-hook.yaml");
    let hooks: Vec<&str> =
        docs.iter().filter_map(|d| d["metadata"]["annotations"]["argocd.argoproj.io/hook"].as_str()).collect();
    assert_eq!(hooks, ["PreSync", "PostSync", "SyncFail"]);
    assert_eq!(docs[0]["kind"].as_str(), Some("Job"));
    let gate = &containers(&docs[0])[0]["command"];
    assert_eq!(gate[1].as_str(), Some("gate"), "the PreSync hook is the gate");
}

#[test]
fn the_extractor_finds_bad_command_lines() {
    // The checks above can fail: a gate without a digest is not accepted.
    let args: Vec<String> =
        ["cmdb", "gate", "--service", "s", "--environment", "production", "--artifact", "a", "--version", "1"]
            .map(String::from)
            .to_vec();
    let mut argv = args.clone();
    argv.extend(["--token", "t", "--provider", "p", "--run-id", "r"].map(String::from));
    assert!(Cli::try_parse_from(&argv).is_err(), "--digest is required");
    assert_eq!(
        substitute("--run-id ${{ github.run_id }}-$CI_JOB_ID --d \"$(cat f)\""),
        "--run-id placeholder-placeholder --d \"placeholder\""
    );
}
