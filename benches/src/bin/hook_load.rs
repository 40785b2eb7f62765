//! Load for the webhooks, over HTTP as the tools send them.
//!
//! `--mode github`: `POST /hooks/github` with GitHub's `deployment_status` payload (the
//! `@octokit/webhooks-examples` one, ~7 KiB), each delivery a new GitHub deployment that
//! succeeded, signed with the secret (HMAC-SHA256); the engine verifies the signature, maps
//! the repository to a CI, and appends the delivery, the deployment record and the CI edit.
//! `--mode cdevents`: `POST /hooks/cdevents`, structured mode, a CDEvents 0.5
//! `service.deployed` per request. Closed loop: `--connections` workers for `--duration-secs`,
//! each worker its own repository (or subject) and CI, as separate services deploy in parallel.
//! With `--unauthorised` no change covers the CIs, so every delivery also records an
//! unauthorised change and opens a retrospective emergency change (gapless numbers: one
//! stream for all). Targets: >= 5,000 deliveries/s for each mode.
//!
//! Starts `--spawn PATH serve --demo` on a fresh data directory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use cmdb_benches::http::{Connection, Endpoint, spawn_server};
use hdrhistogram::Histogram;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// The cmdb binary to start (`serve --demo` on a fresh data directory).
    #[arg(long)]
    spawn: String,
    /// `github` or `cdevents`.
    #[arg(long, default_value = "github")]
    mode: String,
    /// Concurrent keep-alive connections (one CI each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// No change covers the CIs: every delivery is an unauthorised change.
    #[arg(long)]
    unauthorised: bool,
}

const SECRET: &str = "bench-webhook-secret-0123456789";
const STATUS: &str = include_str!("../../../fixtures/data/github/deployment_status.1.json");

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn token_for(admin: &mut Connection, root: &str, name: &str, role: Option<&str>) -> anyhow::Result<String> {
    if let Some(role) = role {
        admin
            .graphql(
                root,
                "mutation($n: String!, $r: [Role!]) { createPrincipal(input: { name: $n, kind: SYSTEM, roles: $r }) { position } }",
                json!({ "n": name, "r": [role] }),
            )
            .await?;
    }
    let data = admin
        .graphql(root, "mutation($n: String!) { createToken(principal: $n) { token } }", json!({ "n": name }))
        .await?;
    Ok(data["createToken"]["token"].as_str().context("token")?.to_owned())
}

/// Live CIs of the demo, one per worker.
async fn cis(admin: &mut Connection, root: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let data = admin
        .graphql(root, "query($n: Int) { at { cis(filter: { classes: [\"application\", \"container\", \"database\", \"host\", \"virtual_machine\"], statuses: [LIVE] }, first: $n) { nodes { id } } } }", json!({ "n": count }))
        .await?;
    let ids: Vec<String> = data["at"]["cis"]["nodes"]
        .as_array()
        .context("cis")?
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    if ids.len() < count {
        bail!("the demo has {} live CIs of those classes; {count} needed", ids.len());
    }
    Ok(ids)
}

/// An emergency change implementing over `cis`, so every delivery is authorised.
async fn implementing_change(admin: &mut Connection, root: &str, cis: &[String]) -> anyhow::Result<()> {
    let deployer = token_for(admin, root, "bench-deployer", Some("DEPLOYER")).await?;
    let approver = token_for(admin, root, "bench-emergency", Some("EMERGENCY_APPROVER")).await?;
    let draft = admin
        .graphql(
            &deployer,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": { "type": "EMERGENCY", "title": "bench", "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "bench-deployer", "scope": { "cis": cis } } }),
        )
        .await?;
    let change = draft["draftChange"]["change"]["id"].as_str().context("change")?.to_owned();
    for (token, mutation) in [(&deployer, "submitChange"), (&approver, "approveChange"), (&deployer, "startChange")] {
        admin
            .graphql(
                token,
                &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ position }} }}"),
                json!({ "id": change }),
            )
            .await?;
    }
    Ok(())
}

/// The GitHub payload with its varying fields as holes, parsed and serialised once: a real
/// sender's cost is not on this machine, so the generator only fills the holes (the body is
/// the same bytes as parsing, editing and serialising it per request would give).
struct GithubTemplate {
    /// The text between the holes, each with the hole that follows it (none after the last).
    parts: Vec<(String, Option<usize>)>,
}

/// The holes, in the order of `fill`'s values.
const HOLES: [&str; 4] = ["\"@@REPO@@\"", "\"@@DEPLOYMENT@@\"", "\"@@STATUS@@\"", "\"@@SHA@@\""];

impl GithubTemplate {
    fn new() -> anyhow::Result<Self> {
        let mut body: Value = serde_json::from_str(STATUS)?;
        body["repository"]["full_name"] = json!("@@REPO@@");
        body["deployment"]["id"] = json!("@@DEPLOYMENT@@");
        body["deployment_status"]["id"] = json!("@@STATUS@@");
        body["deployment"]["sha"] = json!("@@SHA@@");
        let mut text = serde_json::to_string(&body)?;
        let mut parts = Vec::new();
        loop {
            let next = HOLES.iter().enumerate().filter_map(|(i, hole)| text.find(hole).map(|at| (at, i))).min();
            let Some((at, hole)) = next else { break };
            parts.push((text[..at].to_owned(), Some(hole)));
            text = text[at + HOLES[hole].len()..].to_owned();
        }
        parts.push((text, None));
        let mut holes: Vec<usize> = parts.iter().filter_map(|(_, hole)| *hole).collect();
        holes.sort_unstable();
        if holes != [0, 1, 2, 3] {
            bail!("the payload does not have each hole once");
        }
        Ok(Self { parts })
    }

    fn fill(&self, worker: usize, n: u64) -> Bytes {
        let id = worker as u64 * 1_000_000_000 + n;
        let values = [format!("\"bench/app-{worker}\""), id.to_string(), id.to_string(), format!("\"{id:040x}\"")];
        let mut body = Vec::with_capacity(STATUS.len() + 64);
        for (part, hole) in &self.parts {
            body.extend_from_slice(part.as_bytes());
            if let Some(hole) = hole {
                body.extend_from_slice(values[*hole].as_bytes());
            }
        }
        Bytes::from(body)
    }
}

fn github_body(worker: usize, n: u64) -> anyhow::Result<Bytes> {
    let mut body: Value = serde_json::from_str(STATUS)?;
    body["repository"]["full_name"] = json!(format!("bench/app-{worker}"));
    body["deployment"]["id"] = json!(worker as u64 * 1_000_000_000 + n);
    body["deployment_status"]["id"] = json!(worker as u64 * 1_000_000_000 + n);
    body["deployment"]["sha"] = json!(format!("{:040x}", worker as u64 * 1_000_000_000 + n));
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

fn cdevents_body(worker: usize, n: u64) -> Bytes {
    let id = format!("bench-{worker}-{n}");
    let cdevent = json!({
        "context": { "specversion": "0.5.1", "id": id, "source": "/bench", "type": "dev.cdevents.service.deployed.0.3.0", "timestamp": "2026-12-01T10:00:00Z" },
        "subject": { "id": format!("app-{worker}"), "source": "/bench", "content": {
            "environment": { "id": "production" },
            "artifactId": format!("pkg:oci/app-{worker}@sha256%3A{:064x}?tag=v{n}", n),
        } }
    });
    Bytes::from(
        json!({ "specversion": "1.0", "id": id, "source": "/bench", "type": "dev.cdevents.service.deployed.0.3.0", "data": cdevent })
            .to_string(),
    )
}

async fn worker(
    endpoint: Endpoint,
    mode: String,
    token: String,
    index: usize,
    until: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut connection = Connection::open(&endpoint).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let template = GithubTemplate::new()?;
    // The template gives the same bytes as editing the payload per request would.
    if template.fill(index, 7) != github_body(index, 7)? {
        bail!("the GitHub template does not give the payload's bytes");
    }
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let sent = Instant::now();
        let (status, answer) = if mode == "github" {
            let body = template.fill(index, n);
            let signature = sign(&body);
            let delivery = format!("bench-{index}-{n}");
            let headers = [
                ("content-type", "application/json"),
                ("x-github-event", "deployment_status"),
                ("x-github-delivery", delivery.as_str()),
                ("x-hub-signature-256", signature.as_str()),
            ];
            connection.send("/hooks/github", &headers, body).await?
        } else {
            let bearer = format!("Bearer {token}");
            let headers = [("content-type", "application/cloudevents+json"), ("authorization", bearer.as_str())];
            connection.send("/hooks/cdevents", &headers, cdevents_body(index, n)).await?
        };
        if status != 202 {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&answer));
        }
        histogram.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
    }
    Ok(histogram)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = spawn_server(
        &args.spawn,
        None,
        &["--demo", "--github-webhook-secret", SECRET, "--hook-deliveries-per-second", "1000000"],
    )?;
    let graphql = Endpoint::parse(&server.url)?;
    let base = server.url.trim_end_matches("/graphql").to_owned();
    let hooks = Endpoint::parse(&base)?;
    let mut admin = Connection::open(&graphql).await?;
    let root = server.token.clone();
    let workers = args.connections.max(1);
    let targets = cis(&mut admin, &root, workers).await?;
    for (i, ci) in targets.iter().enumerate() {
        let (provider, source, subject) = if args.mode == "github" {
            ("GITHUB", format!("bench/app-{i}"), None)
        } else {
            ("CDEVENTS", "/bench".to_owned(), Some(format!("app-{i}")))
        };
        admin
            .graphql(
                &root,
                "mutation($i: ToolMappingInput!) { setToolMapping(input: $i) { ci } }",
                json!({ "i": { "provider": provider, "source": source, "subject": subject, "ci": ci, "environment": "PRODUCTION" } }),
            )
            .await?;
    }
    if !args.unauthorised {
        implementing_change(&mut admin, &root, &targets).await?;
    }
    // The demo made the principal `argocd` (a deployer); its token sends the CDEvents.
    let token = token_for(&mut admin, &root, "argocd", None).await?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_secs);
    let mut handles = Vec::new();
    for index in 0..workers {
        handles.push(tokio::spawn(worker(hooks.clone(), args.mode.clone(), token.clone(), index, until)));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for handle in handles {
        histogram.add(handle.await??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} deliveries ({}), {workers} connections: {} in {:.2} s = {:.0}/s; p50 {:.2} ms, p99 {:.2} ms",
        args.mode,
        if args.unauthorised { "each an unauthorised change" } else { "under an implementing change" },
        histogram.len(),
        seconds,
        histogram.len() as f64 / seconds,
        ms(0.5),
        ms(0.99)
    );
    Ok(())
}
