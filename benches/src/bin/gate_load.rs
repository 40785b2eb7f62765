//! Load for the deployment gate and deployments, over HTTP as pipelines use them.
//!
//! `--mode gate`: `POST /api/v1/gate` at a fixed open-loop rate (`--rate`, default 1,000/s),
//! every request a new pipeline run naming an implementing change, so every answer is an allow
//! that is recorded (one append per request). Target: p99 <= 2 ms at 1,000/s.
//!
//! Latency, without coordinated omission and without the generator's own lateness: a request
//! whose connection was still waiting for an earlier answer at its scheduled time is measured
//! from that time (the server held it up); one whose connection was free is measured from when
//! it was sent, because tokio's timer has millisecond granularity and wakes a sleeper up to a
//! millisecond after its deadline, the same phase for a whole run. That lateness is printed.
//!
//! `--mode deployments`: deployments of 5 CIs each, requested beforehand (not measured), then
//! reported succeeded over GraphQL as fast as `--connections` workers can, each worker on its
//! own five CIs (as separate services deploy in parallel); each report edits 5 CIs in the same
//! append under one implementing change. Target: >= 2,000/s.
//!
//! Starts `--spawn PATH serve --demo` on a fresh data directory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use cmdb_benches::http::{Connection, Endpoint, spawn_server};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// The cmdb binary to start (`serve --demo` on a fresh data directory).
    #[arg(long)]
    spawn: String,
    /// `gate` or `deployments`.
    #[arg(long, default_value = "gate")]
    mode: String,
    /// Gate: requests per second, open loop.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Gate: measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Gate: warm-up seconds.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Deployments: how many to report.
    #[arg(long, default_value_t = 10_000)]
    deployments: usize,
}

const AUTO: &str = "package cmdb.change\nimport rego.v1\ndecision := {\"auto_approve\": input.change.type == \"standard\", \"deny\": [], \"approvals\": [{\"role\": \"approver\", \"count\": 1, \"reason\": \"one approver\"}]}\n";
const DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

async fn principal(admin: &mut Connection, token: &str, name: &str, role: &str) -> anyhow::Result<String> {
    admin
        .graphql(
            token,
            "mutation($n: String!, $r: [Role!]) { createPrincipal(input: { name: $n, kind: SYSTEM, roles: $r }) { position } }",
            json!({ "n": name, "r": [role] }),
        )
        .await?;
    let data = admin
        .graphql(token, "mutation($n: String!) { createToken(principal: $n) { token } }", json!({ "n": name }))
        .await?;
    Ok(data["createToken"]["token"].as_str().context("token")?.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = spawn_server(&args.spawn, None, &["--demo"])?;
    let graphql = Endpoint::parse(&server.url)?;
    let base = server.url.trim_end_matches("/graphql").to_owned();
    let mut admin = Connection::open(&graphql).await?;
    let root = server.token.clone();
    admin
        .graphql(
            &root,
            "mutation($t: String!) { loadPolicy(name: \"bench\", text: $t) { position } }",
            json!({ "t": AUTO }),
        )
        .await?;
    let deployer = principal(&mut admin, &root, "bench-deployer", "DEPLOYER").await?;
    let manager = principal(&mut admin, &root, "bench-manager", "CHANGE_MANAGER").await?;
    let emergency = principal(&mut admin, &root, "bench-emergency", "EMERGENCY_APPROVER").await?;
    match args.mode.as_str() {
        "gate" => gate(&args, &base, &mut admin, &deployer, &manager).await,
        "deployments" => deployments(&args, &graphql, &mut admin, &deployer, &emergency).await,
        other => bail!("--mode is gate or deployments, not {other}"),
    }
}

async fn gate(args: &Args, base: &str, admin: &mut Connection, deployer: &str, manager: &str) -> anyhow::Result<()> {
    let data = admin
        .graphql(
            deployer,
            "{ at { cis(filter: { classes: [\"application\"], statuses: [LIVE] }, first: 1) { nodes { id } } } }",
            json!({}),
        )
        .await?;
    let ci = data["at"]["cis"]["nodes"][0]["id"].as_str().context("an application")?.to_owned();
    let template = admin
        .graphql(manager, "mutation { createChangeTemplate(input: { name: \"bench\", title: \"Deploy\", description: \"d\", backOutPlan: \"b\", allowedClasses: [\"application\"] }) { template { id } } }", json!({}))
        .await?;
    let template = template["createChangeTemplate"]["template"]["id"].as_str().context("template")?.to_owned();
    admin
        .graphql(
            manager,
            "mutation($c: ID!, $t: ID) { setPipelineTemplate(ci: $c, template: $t) }",
            json!({ "c": ci, "t": template }),
        )
        .await?;
    let body = |run: &str, change: Option<&str>| {
        Bytes::from(
            json!({ "service": ci, "environment": "production", "change": change,
                "artifact": { "name": "bench/app", "version": "1.0.0", "digest": DIGEST },
                "pipeline": { "provider": "bench", "runId": run } })
            .to_string(),
        )
    };
    let endpoint = Endpoint::parse(&format!("{base}/api/v1/gate"))?;
    let mut first = Connection::open(&endpoint).await?;
    let (status, answer) = first.post(deployer, body("setup", None)).await?;
    let answer: Value = serde_json::from_slice(&answer)?;
    if status != 200 || answer["decision"] != "allow" {
        bail!("the setup call was not allowed: {status} {answer}");
    }
    let change = answer["change"].as_str().context("change")?.to_owned();
    eprintln!("gate: every request names {change} (implementing) and a new run; open loop at {}/s", args.rate);

    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    let start = Instant::now() + Duration::from_millis(200);
    let warm_until = start + Duration::from_secs(args.warmup_secs);
    let end = warm_until + Duration::from_secs(args.duration_secs);
    let total = usize::try_from((end - start).as_nanos() / interval.as_nanos()).unwrap_or(0);
    let per = args.connections.max(1);
    let mut tasks = Vec::new();
    for worker in 0..per {
        let endpoint = endpoint.clone();
        let token = deployer.to_owned();
        let bodies: Vec<(Instant, Bytes)> = (worker..total)
            .step_by(per)
            .map(|i| {
                (start + interval * u32::try_from(i).unwrap_or(u32::MAX), body(&format!("run-{i}"), Some(&change)))
            })
            .collect();
        tasks.push(tokio::spawn(open_loop(endpoint, token, bodies, start, warm_until)));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut allowed, mut other) = (0, 0);
    for task in tasks {
        let (h, l, a, o) = task.await??;
        histogram.add(h)?;
        lateness.add(l)?;
        allowed += a;
        other += o;
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "gate open loop {}/s over {} s: {} answers ({} allow, {} other); p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        args.rate,
        args.duration_secs,
        histogram.len(),
        allowed,
        other,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    println!(
        "  sent after the scheduled time (the generator's timer, not counted when the connection was free): p50 {:.2} ms, p99 {:.2} ms",
        lateness.value_at_quantile(0.5) as f64 / 1000.0,
        lateness.value_at_quantile(0.99) as f64 / 1000.0
    );
    Ok(())
}

/// What one open-loop connection measured: latencies, the generator's lateness, allows, others.
type Measured = (Histogram<u64>, Histogram<u64>, u64, u64);

/// Sends `bodies` on one connection, each at its scheduled time (see the module's note on
/// latency), recording those scheduled from `warm_until` on.
async fn open_loop(
    endpoint: Endpoint,
    token: String,
    bodies: Vec<(Instant, Bytes)>,
    start: Instant,
    warm_until: Instant,
) -> anyhow::Result<Measured> {
    let mut connection = Connection::open(&endpoint).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut allowed, mut other) = (0u64, 0u64);
    let mut free_at = start;
    for (at, body) in bodies {
        tokio::time::sleep_until(at.into()).await;
        let sent = Instant::now();
        let from = if free_at > at { at } else { sent };
        let (status, answer) = connection.post(&token, body).await?;
        free_at = Instant::now();
        let latency = u64::try_from(free_at.duration_since(from).as_micros()).unwrap_or(u64::MAX);
        if at >= warm_until {
            histogram.record(latency.max(1))?;
            let late = u64::try_from(sent.duration_since(at).as_micros()).unwrap_or(u64::MAX);
            lateness.record(late.max(1))?;
            if status == 200 && answer.windows(18).any(|w| w == b"\"decision\":\"allow\"") {
                allowed += 1;
            } else {
                if other == 0 {
                    eprintln!("not an allow: HTTP {status}: {}", String::from_utf8_lossy(&answer));
                }
                other += 1;
            }
        }
    }
    Ok((histogram, lateness, allowed, other))
}

/// Requests every deployment (not measured), each group of 5 CIs on its own connection.
async fn request_all(
    args: &Args,
    graphql: &Endpoint,
    deployer: &str,
    change: &str,
    cis: &[String],
    groups: usize,
) -> anyhow::Result<Vec<Vec<String>>> {
    let per_group = args.deployments.div_ceil(groups);
    let mut requesters = Vec::new();
    for group in 0..groups {
        let endpoint = graphql.clone();
        let token = deployer.to_owned();
        let change = change.to_owned();
        let mine: Vec<String> = cis[group * 5..group * 5 + 5].to_vec();
        requesters.push(tokio::spawn(async move {
            let mut connection = Connection::open(&endpoint).await?;
            let mut ids = Vec::with_capacity(per_group);
            for n in 0..per_group {
                let targets: Vec<Value> = mine
                    .iter()
                    .map(|ci| json!({ "ci": ci, "artifact": "bench/app", "version": format!("{group}.{n}"), "digest": DIGEST }))
                    .collect();
                let data = connection
                    .graphql(
                        &token,
                        "mutation($input: DeploymentInput!) { requestDeployment(input: $input) { id } }",
                        json!({ "input": { "change": change, "environment": "PRODUCTION", "targets": targets } }),
                    )
                    .await?;
                ids.push(data["requestDeployment"]["id"].as_str().context("id")?.to_owned());
            }
            anyhow::Ok(ids)
        }));
    }
    let mut queues = Vec::new();
    for requester in requesters {
        queues.push(requester.await??);
    }
    Ok(queues)
}

async fn deployments(
    args: &Args,
    graphql: &Endpoint,
    admin: &mut Connection,
    deployer: &str,
    emergency: &str,
) -> anyhow::Result<()> {
    let groups = args.connections.clamp(1, 100);
    let data = admin
        .graphql(deployer, "query($n: Int) { at { cis(filter: { classes: [\"host\", \"virtual_machine\", \"container\", \"application\", \"database\"], statuses: [LIVE] }, first: $n) { nodes { id } } } }", json!({ "n": groups * 5 }))
        .await?;
    let cis: Vec<String> = data["at"]["cis"]["nodes"]
        .as_array()
        .context("cis")?
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    if cis.len() < groups * 5 {
        bail!("the demo has {} live CIs of those classes; {} needed", cis.len(), groups * 5);
    }
    let draft = admin
        .graphql(
            deployer,
            "mutation($input: DraftChangeInput!) { draftChange(input: $input) { change { id } } }",
            json!({ "input": { "type": "EMERGENCY", "title": "bench", "description": "d", "justification": "j",
                "backOutPlan": "b", "implementer": "bench-deployer", "scope": { "cis": cis } } }),
        )
        .await?;
    let change = draft["draftChange"]["change"]["id"].as_str().context("change")?.to_owned();
    for (token, mutation) in [(deployer, "submitChange"), (emergency, "approveChange"), (deployer, "startChange")] {
        admin
            .graphql(
                token,
                &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ position }} }}"),
                json!({ "id": change }),
            )
            .await?;
    }
    let queues = request_all(args, graphql, deployer, &change, &cis, groups).await?;
    eprintln!(
        "deployments: {} requested in {groups} groups of 5 CIs; reporting",
        queues.iter().map(Vec::len).sum::<usize>()
    );
    let started = Instant::now();
    let mut reporters = Vec::new();
    for queue in queues {
        let endpoint = graphql.clone();
        let token = deployer.to_owned();
        reporters.push(tokio::spawn(async move {
            let mut connection = Connection::open(&endpoint).await?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for id in queue {
                let sent = Instant::now();
                connection
                    .graphql(
                        &token,
                        "mutation($id: ID!) { reportDeployment(id: $id, outcome: SUCCEEDED) { state } }",
                        json!({ "id": id }),
                    )
                    .await?;
                histogram.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX).max(1))?;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for reporter in reporters {
        histogram.add(reporter.await??)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "deployments reported and applied (5 CIs each) over HTTP, {groups} connections: {} in {:.2} s = {:.0}/s ({:.0} CI edits/s); p50 {:.2} ms, p99 {:.2} ms",
        histogram.len(),
        seconds,
        histogram.len() as f64 / seconds,
        histogram.len() as f64 * 5.0 / seconds,
        ms(0.5),
        ms(0.99)
    );
    Ok(())
}
