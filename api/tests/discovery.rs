//! Discovery and configuration audit as users drive it (issue 17, parts 3 to 6): `cmdb import`
//! and `cmdb audit` on the real files of ../shared/data into an empty data directory, drift
//! after editing a copy, idempotent re-imports, refusals that record nothing, and over
//! GraphQL an import, an audit read back at its position, and drift authorised by an
//! implementing change.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TestServer, error_code};
use serde_json::{Value, json};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(path)
}

fn cmdb(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cmdb")).arg("--data-dir").arg(data_dir).args(args).output().expect("run cmdb")
}

fn json_of(output: &Output) -> Value {
    assert!(output.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn head(data_dir: &Path) -> String {
    let output = cmdb(data_dir, &["digest"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn findings<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    report["audit"]["findings"].as_array().expect("findings").iter().filter(|f| f["kind"] == kind).collect()
}

const SHOP: &str = "k8s/microservices-demo-kubernetes-manifests.yaml";

#[test]
fn the_demo_shop_is_imported_applied_and_drift_in_an_edited_copy_is_found() {
    let dir = tempfile::tempdir().expect("dir");
    let shop = data(SHOP);
    let shop = shop.to_str().expect("path");

    // Without --apply: observations and an audit, no CI.
    let report = json_of(&cmdb(dir.path(), &["import", "kubernetes", shop, "--json"]));
    assert_eq!(report["items"], 24, "12 Services and 12 Deployments: {report}");
    assert_eq!(report["relationships"], 12, "each Service runs on the Deployment it selects");
    assert_eq!(report["unmapped"]["ServiceAccount"], 11);
    assert_eq!(report["audit"]["counts"]["not_in_cmdb"], 24);
    assert_eq!(report["audit"]["counts"]["unauthorised"], 24, "nothing authorised them");
    assert_eq!(report["applied"], Value::Null);

    // With --apply: registered under standard changes, related, and a clean audit after.
    let applied = json_of(&cmdb(dir.path(), &["import", "kubernetes", shop, "--apply", "--json"]));
    assert_eq!(applied["applied"]["registered"], 24, "{applied}");
    assert_eq!(applied["applied"]["related"], 12, "{applied}");
    assert_eq!(applied["applied"]["skipped"], json!([]));
    assert_eq!(applied["applied"]["auditAfter"]["counts"]["not_in_cmdb"], 0);
    assert_eq!(applied["applied"]["auditAfter"]["counts"]["relationship_drift"], 0);
    assert!(!applied["applied"]["changes"].as_array().expect("changes").is_empty());

    // Idempotent: the same file again finds nothing and opens no change.
    let again = json_of(&cmdb(dir.path(), &["import", "kubernetes", shop, "--apply", "--json"]));
    assert_eq!(again["audit"]["counts"]["not_in_cmdb"], 0, "{again}");
    assert_eq!(again["audit"]["findings"], json!([]));
    assert_eq!(again["applied"]["changes"], json!([]));
    let clean = cmdb(dir.path(), &["audit", "--source", "kubernetes", shop]);
    assert_eq!(clean.status.code(), Some(0), "{}", String::from_utf8_lossy(&clean.stdout));

    // An edited copy: an image changed, a service and its deployment removed, one added.
    let text = std::fs::read_to_string(data(SHOP)).expect("manifests");
    let mut documents: Vec<String> = text
        .split("\n---\n")
        .filter(|d| !d.contains("name: adservice\n") || d.contains("kind: ServiceAccount"))
        .map(|d| {
            if d.contains("kind: Deployment") && d.contains("name: cartservice\n") {
                let start = d.find("image: ").expect("an image");
                let end = start + d[start..].find('\n').expect("line end");
                format!("{}image: cartservice:unapproved{}", &d[..start], &d[end..])
            } else {
                d.to_owned()
            }
        })
        .collect();
    documents.push("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: miner\nspec:\n  template:\n    metadata:\n      labels: {app: miner}\n    spec:\n      containers:\n      - image: miner:1\n".into());
    let edited = dir.path().join("shop-edited.yaml");
    std::fs::write(&edited, documents.join("\n---\n")).expect("write");
    let output = cmdb(dir.path(), &["audit", "--source", "kubernetes", edited.to_str().expect("path"), "--json"]);
    assert_eq!(output.status.code(), Some(1), "unauthorised findings exit 1");
    let audit = json_of(&output);
    let drift = findings(&audit, "attribute_drift");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["attribute"], "image");
    assert_eq!(drift[0]["observed"], "cartservice:unapproved");
    assert!(drift[0]["recorded"].as_str().is_some_and(|r| r.contains("cartservice:v")), "{}", drift[0]);
    let missing: Vec<&Value> = findings(&audit, "not_observed");
    let names: Vec<&str> = missing.iter().map(|f| f["name"].as_str().expect("name")).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| *n == "default/adservice"));
    let added = findings(&audit, "not_in_cmdb");
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["name"], "default/miner");
    assert_eq!(findings(&audit, "relationship_drift").len(), 1, "adservice's runs_on is no longer observed");
    assert!(audit["audit"]["findings"].as_array().expect("list").iter().all(|f| f["authorised_by"].is_null()));

    // Applying the edited copy makes the CMDB match it.
    let applied =
        json_of(&cmdb(dir.path(), &["import", "kubernetes", edited.to_str().expect("path"), "--apply", "--json"]));
    assert_eq!(applied["applied"]["withdrawn"], 2, "{applied}");
    assert_eq!(applied["applied"]["updated"], 1);
    assert_eq!(applied["applied"]["registered"], 1);
    assert_eq!(applied["applied"]["auditAfter"]["counts"]["unauthorised"], 0, "{applied}");
    let verify = cmdb(dir.path(), &["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn bad_files_and_arguments_are_refused_and_record_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let shop = data(SHOP);
    json_of(&cmdb(dir.path(), &["import", "kubernetes", shop.to_str().expect("path"), "--json"]));
    let before = head(dir.path());
    let invalid = data("terraform-state/driftctl/testdata__v4__invalid.tfstate");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["import".into(), "terraform".into(), invalid.display().to_string()], "not valid Terraform state JSON"),
        (
            vec![
                "import".into(),
                "terraform".into(),
                data("terraform-state/driftctl/testdata__v4__unsupported_version.tfstate").display().to_string(),
            ],
            "Terraform 0.10.26",
        ),
        (vec!["import".into(), "chef".into(), shop.display().to_string()], "not a discovery source"),
        (vec!["import".into(), "netbox".into(), "/nonexistent/file.json".into()], "is not a file"),
        (vec!["import".into(), "cyclonedx".into(), shop.display().to_string()], "CycloneDX"),
        (
            vec!["import".into(), "kubernetes".into(), shop.display().to_string(), "--scope".into(), "a/b".into()],
            "scope",
        ),
        (vec!["audit".into(), "--source".into(), "netbox".into(), invalid.display().to_string()], "NetBox"),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = cmdb(dir.path(), &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stdout));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(head(dir.path()), before, "{args:?} appended nothing");
    }
}

#[test]
fn the_keycloak_sbom_the_netbox_demo_and_every_terraform_state_are_imported() {
    let dir = tempfile::tempdir().expect("dir");
    let sbom = json_of(&cmdb(
        dir.path(),
        &[
            "import",
            "cyclonedx",
            data("sbom/cyclonedx/SBOM/keycloak-10.0.2/bom.json").to_str().expect("path"),
            "--apply",
            "--json",
        ],
    ));
    assert!(sbom["items"].as_u64().is_some_and(|n| n >= 903), "{}", sbom["items"]);
    assert!(sbom["relationships"].as_u64().is_some_and(|n| n > 0));
    assert!(sbom["applied"]["registered"].as_u64().is_some_and(|n| n >= 903), "{}", sbom["applied"]);
    assert_eq!(sbom["applied"]["auditAfter"]["counts"]["unauthorised"], 0, "{}", sbom["applied"]);
    assert!(sbom["applied"]["changes"].as_array().expect("changes").len() >= 2, "at most 500 CIs per change");

    let netbox = json_of(&cmdb(
        dir.path(),
        &[
            "import",
            "netbox",
            data("cmdb-datasets/netbox-demo/netbox-demo-v3.6.json").to_str().expect("path"),
            "--apply",
            "--json",
        ],
    ));
    let applied = &netbox["applied"];
    assert_eq!(applied["skipped"], json!([]), "{applied}");
    assert_eq!(applied["auditAfter"]["counts"]["unauthorised"], 0, "{applied}");
    let related = applied["related"].as_u64().expect("related");
    assert!(related >= 1586 + 72, "interfaces on devices, devices in sites and racks: {related}");

    let states = data("terraform-state/driftctl");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&states).expect("dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let (mut imported, mut refused) = (0, 0);
    for file in &files {
        let output = cmdb(dir.path(), &["import", "terraform", file.to_str().expect("path"), "--apply", "--json"]);
        match output.status.code() {
            Some(0) => {
                let report = json_of(&output);
                let skipped = &report["applied"]["skipped"];
                assert_eq!(skipped, &json!([]), "{}: {report}", file.display());
                imported += 1;
            }
            _ => refused += 1,
        }
    }
    assert_eq!((imported, refused), (151, 2));
    let verify = cmdb(dir.path(), &["verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

const IMPORT: &str = "mutation($input: ImportDiscoveryInput!) { importDiscovery(input: $input) { run scope items relationships audit counts { notInCmdb unauthorised total } changes skipped auditAfter countsAfter { total unauthorised } } }";

#[tokio::test]
async fn over_graphql_an_audit_reads_back_and_an_implementing_change_authorises_drift() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let text = std::fs::read_to_string(data(SHOP)).expect("manifests");
    let input = json!({ "input": { "source": "KUBERNETES", "content": text, "file": "shop.yaml", "scope": "prod", "apply": true } });
    let imported = server.ok(&token, IMPORT, input).await["importDiscovery"].clone();
    assert_eq!(imported["items"], 24);
    assert_eq!(imported["countsAfter"]["total"], 0, "{imported}");
    let first_audit = imported["audit"].as_str().expect("audit").to_owned();

    // The audit reads back: its findings recomputed from the log match the recorded digest.
    let read = server
        .ok(
            &token,
            "query($id: ID!) { audit(id: $id) { source scope counts { notInCmdb } digestMatches findings(kinds: [NOT_IN_CMDB], first: 100) { kind name class authorised ci { id } } run { file items } } }",
            json!({ "id": first_audit }),
        )
        .await;
    let audit = &read["audit"];
    assert_eq!(audit["digestMatches"], true);
    assert_eq!(audit["counts"]["notInCmdb"], 24);
    assert_eq!(audit["findings"].as_array().expect("findings").len(), 24);
    assert_eq!(audit["run"]["file"], "shop.yaml");
    assert_eq!(audit["findings"][0]["ci"], Value::Null, "not in the CMDB when audited");

    // The CMDB's cartservice container, and what the source observed of it.
    let ci = server
        .ok(&token, "{ at { ci(class: \"container\", name: \"default/cartservice\") { id attributes } } }", json!({}))
        .await["at"]["ci"]
        .clone();
    let ci_id = ci["id"].as_str().expect("id").to_owned();
    assert!(ci["attributes"]["external_id"].as_str().is_some_and(|e| e.starts_with("kubernetes:prod/")), "{ci}");
    let observations = server
        .ok(
            &token,
            "query($ci: ID!) { at { observations(ci: $ci) { source sourceType attributes } } }",
            json!({ "ci": ci_id }),
        )
        .await;
    let list = observations["at"]["observations"].as_array().expect("observations");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["sourceType"], "Deployment");

    // An implementing standard change covering the container authorises its drift.
    let window = implementing_change(&server, &ci_id).await;
    let patched = text.replacen("cartservice:v0.10.", "cartservice:patched-v0.10.", 1);
    assert_ne!(patched, text);
    let again = server
        .ok(&token, IMPORT, json!({ "input": { "source": "KUBERNETES", "content": patched, "scope": "prod" } }))
        .await["importDiscovery"]
        .clone();
    assert_eq!(again["counts"]["total"], 1, "{again}");
    assert_eq!(again["counts"]["unauthorised"], 0, "the implementing change covers it: {again}");
    let audit = server
        .ok(
            &token,
            "query($id: ID!) { audit(id: $id) { findings { kind attribute authorised authorisedBy observed } unauthorised: findings(authorised: false) { name } } }",
            json!({ "id": again["audit"] }),
        )
        .await;
    let finding = &audit["audit"]["findings"][0];
    assert_eq!(finding["kind"], "ATTRIBUTE_DRIFT");
    assert_eq!(finding["attribute"], "image");
    assert_eq!(finding["authorised"], true);
    assert!(finding["authorisedBy"].as_str().is_some_and(|l| l.starts_with("CHG-")), "{finding}");
    assert_eq!(audit["audit"]["unauthorised"], json!([]));

    // The change report counts the unauthorised findings of each run's first audit.
    let report = server
        .ok(
            &token,
            "query($f: DateTime!, $t: DateTime!) { at { changeReport(from: $f, to: $t, period: DAY) { totals { unauthorisedDrift } } } }",
            json!({ "f": window.0, "t": window.1 }),
        )
        .await;
    assert_eq!(report["at"]["changeReport"]["totals"]["unauthorisedDrift"], 24, "{report}");

    // The first audit, read at a past moment, reads as it did.
    let past = server
        .ok(
            &token,
            "query($id: ID!) { audit(id: $id) { digestMatches counts { notInCmdb } } }",
            json!({ "id": first_audit }),
        )
        .await;
    assert_eq!(past["audit"]["digestMatches"], true);
}

/// Opens a standard change from the discovery template covering `ci` and starts it (as admin);
/// returns its window.
async fn implementing_change(server: &TestServer, ci_id: &str) -> (String, String) {
    let token = server.admin_token.clone();
    let templates = server.ok(&token, "{ at { changeTemplates { id name } } }", json!({})).await;
    let template = templates["at"]["changeTemplates"]
        .as_array()
        .expect("templates")
        .iter()
        .find(|t| t["name"].as_str().is_some_and(|n| n.starts_with("Discovery import")))
        .expect("the discovery template")["id"]
        .clone();
    let now = chrono::Utc::now();
    let window = ((now - chrono::Duration::hours(1)).to_rfc3339(), (now + chrono::Duration::hours(8)).to_rfc3339());
    let draft = server
        .ok(
            &token,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": {
                "type": "STANDARD", "template": template, "title": "Roll cartservice to a patched image",
                "description": "CVE fix", "implementer": "admin",
                "window": { "start": window.0, "end": window.1, "timeZone": "UTC" },
                "scope": { "cis": [ci_id] }
            } }),
        )
        .await;
    let change = draft["draftChange"]["change"]["id"].clone();
    for action in ["submitChange", "startChange"] {
        server
            .ok(
                &token,
                &format!("mutation($id: ID!) {{ {action}(input: {{ id: $id }}) {{ position }} }}"),
                json!({ "id": change }),
            )
            .await;
    }
    window
}

#[tokio::test]
async fn bad_graphql_input_is_refused_with_a_code_and_appends_nothing() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let text = std::fs::read_to_string(data(SHOP)).expect("manifests");
    // Bad input: refused with a code, nothing appended.
    let before = server.head().await;
    for (content, code) in [("kind: [", "BAD_USER_INPUT"), ("", "BAD_USER_INPUT")] {
        let (_, body) =
            server.graphql(&token, IMPORT, json!({ "input": { "source": "KUBERNETES", "content": content } })).await;
        assert_eq!(error_code(&body), code, "{body}");
    }
    let (_, body) = server.graphql(&token, "{ audit(id: \"not-a-uuid\") { scope } }", json!({})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let viewer = server.principal_with_token("viewer-1", &["VIEWER"]).await;
    let after_principal = server.head().await;
    let (_, body) =
        server.graphql(&viewer, IMPORT, json!({ "input": { "source": "KUBERNETES", "content": text } })).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert_eq!(server.head().await, after_principal);
    assert!(after_principal > before, "only the principal and its token were appended");
}

mod laws {
    //! Property: import -> apply -> import again finds nothing; one attribute edited in the
    //! source is exactly one attribute drift.

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::IMPORT;
    use super::common::TestServer;

    #[derive(Debug, Clone)]
    struct Resource {
        kind: usize,
        instance_type: usize,
        instances: usize,
        depends_on: Option<usize>,
    }

    const KINDS: &[&str] = &["aws_instance", "aws_s3_bucket", "aws_iam_role", "google_compute_instance"];
    const INSTANCE_TYPES: &[&str] = &["t3.micro", "m5.large", "c6g.xlarge"];

    fn state(lineage: &str, resources: &[Resource], edited: Option<usize>) -> String {
        let list: Vec<Value> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let instances: Vec<Value> = (0..r.instances)
                    .map(|n| {
                        let mut attributes =
                            json!({ "id": format!("id-{i}-{n}"), "arn": format!("arn:aws:x::1:{i}/{n}") });
                        if KINDS[r.kind].ends_with("instance") {
                            let t = if edited == Some(i) { "x9.metal" } else { INSTANCE_TYPES[r.instance_type] };
                            attributes["instance_type"] = json!(t);
                        }
                        let mut instance = json!({ "schema_version": 0, "attributes": attributes });
                        if r.instances > 1 {
                            instance["index_key"] = json!(n);
                        }
                        if let Some(d) = r.depends_on.filter(|d| *d < i) {
                            instance["dependencies"] = json!([format!("{}.r{d}", KINDS[resources[d].kind])]);
                        }
                        instance
                    })
                    .collect();
                json!({ "mode": "managed", "type": KINDS[r.kind], "name": format!("r{i}"),
                        "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]", "instances": instances })
            })
            .collect();
        json!({ "version": 4, "terraform_version": "1.6.0", "serial": 1, "lineage": lineage, "resources": list })
            .to_string()
    }

    fn resource() -> impl Strategy<Value = Resource> {
        (0..KINDS.len(), 0..INSTANCE_TYPES.len(), 1..3usize, proptest::option::of(0..20usize)).prop_map(
            |(kind, instance_type, instances, depends_on)| Resource { kind, instance_type, instances, depends_on },
        )
    }

    #[test]
    fn import_apply_import_again_finds_no_drift_and_one_edit_is_one_drift() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let server = runtime.block_on(TestServer::start());
        let token = server.admin_token.clone();
        let case = std::sync::atomic::AtomicU32::new(0);
        let config = ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() };
        proptest!(config, |(resources in proptest::collection::vec(resource(), 1..16))| {
            let lineage = format!("law-{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let import = |content: String, apply: bool| {
                let variables = json!({ "input": { "source": "TERRAFORM", "content": content, "apply": apply } });
                runtime.block_on(server.ok(&token, IMPORT, variables))["importDiscovery"].clone()
            };
            let first = import(state(&lineage, &resources, None), true);
            prop_assert_eq!(&first["skipped"], &json!([]), "{}", first);
            prop_assert_eq!(&first["countsAfter"]["total"], &json!(0), "{}", first);
            let again = import(state(&lineage, &resources, None), false);
            prop_assert_eq!(&again["counts"]["total"], &json!(0), "{}", again);
            if let Some(edited) = resources.iter().position(|r| KINDS[r.kind].ends_with("instance")) {
                let drifted = import(state(&lineage, &resources, Some(edited)), false);
                let expected = resources[edited].instances;
                prop_assert_eq!(&drifted["counts"]["total"], &json!(expected), "{}", drifted);
                prop_assert_eq!(&drifted["counts"]["unauthorised"], &json!(expected));
            }
        });
    }
}

#[tokio::test]
async fn rules_are_versioned_admin_only_and_a_run_maps_with_the_rules_in_force() {
    let server = TestServer::start().await;
    let token = server.admin_token.clone();
    let read = "{ at { discoveryRules(source: KUBERNETES) { version rules } } }";
    let defaults = server.ok(&token, read, json!({})).await["at"]["discoveryRules"].clone();
    assert_eq!(defaults["version"], 0);
    let mut rules = defaults["rules"].clone();
    // Let the source own no attribute at all: a later import then reports no drift.
    rules["authoritative"] = json!([]);
    let set = "mutation($input: SetDiscoveryRulesInput!) { setDiscoveryRules(input: $input) { version } }";
    let changed = server
        .ok(
            &token,
            set,
            json!({ "input": { "source": "KUBERNETES", "rules": rules, "reason": "the CMDB owns images" } }),
        )
        .await;
    assert_eq!(changed["setDiscoveryRules"]["version"], 1);
    let text = std::fs::read_to_string(data(SHOP)).expect("manifests");
    server.ok(&token, IMPORT, json!({ "input": { "source": "KUBERNETES", "content": text, "apply": true } })).await;
    let patched = text.replacen("cartservice:v0.10.", "cartservice:patched-v0.10.", 1);
    let again = server.ok(&token, IMPORT, json!({ "input": { "source": "KUBERNETES", "content": patched } })).await;
    assert_eq!(again["importDiscovery"]["counts"]["total"], 0, "no attribute is the source's: {again}");

    // Refusals: not rules, no identity, no reason, not an admin; the log unchanged.
    let before = server.head().await;
    let mut no_identity = rules.clone();
    no_identity["types"][0]["identify"] = json!([]);
    for (input, field) in [
        (json!({ "source": "KUBERNETES", "rules": { "types": "nope" }, "reason": "x" }), "rules"),
        (json!({ "source": "KUBERNETES", "rules": no_identity, "reason": "x" }), "types[0].identify"),
        (json!({ "source": "KUBERNETES", "rules": rules, "reason": " " }), "reason"),
    ] {
        let (_, body) = server.graphql(&token, set, json!({ "input": input })).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    assert_eq!(server.head().await, before);
    let editor = server.principal_with_token("editor-1", &["EDITOR"]).await;
    let after = server.head().await;
    let (_, body) = server
        .graphql(&editor, set, json!({ "input": { "source": "KUBERNETES", "rules": rules, "reason": "x" } }))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    assert_eq!(server.head().await, after);
}
