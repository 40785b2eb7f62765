//! CI edits under change control, over GraphQL (issue 6's benchmark): `clients` concurrent
//! keep-alive connections each update their own CI in a closed loop, in three runs side by
//! side on one server:
//!
//! - `one-change`: every update names one implementing change whose scope holds all the CIs;
//! - `many-changes`: each client's updates name its own implementing change;
//! - `uncontrolled`: the same updates to CIs of a class declared uncontrolled, naming no
//!   change: the cost of CM-3 is the difference.
//!
//! Every update changes the CI (its version alternates), so every request appends. Run with
//! `--spawn target/release/cmdb`; the setup (principals, changes, CIs) goes through the same
//! GraphQL API a user would use.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use cmdb_benches::http::{Connection, Endpoint, spawn_server};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// The cmdb binary to start on a fresh data directory.
    #[arg(long)]
    spawn: String,
    /// Concurrent clients (one connection and one CI each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
}

struct Setup {
    endpoint: Endpoint,
    admin: String,
    tokens: std::collections::HashMap<&'static str, String>,
    /// Changes drafted so far: each gets its own hour, so no two scheduled windows overlap
    /// (overlapping changes on the same CIs conflict, CH-5).
    drafted: std::sync::atomic::AtomicU64,
}

impl Setup {
    async fn call(&self, who: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
        let token = if who == "admin" { &self.admin } else { &self.tokens[who] };
        Connection::open(&self.endpoint).await?.graphql(token, query, variables).await
    }

    /// A normal change with `scope`, taken to implementing; answers its id.
    async fn implementing(&self, title: &str, scope: Value) -> anyhow::Result<String> {
        let n = self.drafted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let start = 1_893_456_000 + n * 3_600; // 2030-01-01T00:00:00Z plus n hours
        let at = |secs: u64| cmdb_core::Timestamp::from_micros(secs as i64 * 1_000_000).to_rfc3339();
        let window = json!({ "start": at(start), "end": at(start + 3_600) });
        let data = self
            .call(
                "req",
                "mutation($i: DraftChangeInput!) { draftChange(input: $i) { change { id } } }",
                json!({ "i": { "type": "NORMAL", "title": title, "description": "benchmark", "justification": "benchmark",
                    "backOutPlan": "none", "implementer": "imp", "scope": scope,
                    "window": window } }),
            )
            .await?;
        let id = data["draftChange"]["change"]["id"].as_str().context("change id")?.to_owned();
        let act = async |who: &str, mutation: &str| {
            self.call(
                who,
                &format!("mutation($id: ID!) {{ {mutation} {{ change {{ state }} }} }}"),
                json!({ "id": id }),
            )
            .await
        };
        act("req", "submitChange(id: $id)").await?;
        act("mgr", "assessChange(id: $id, note: \"bench\")").await?;
        // The default policy may ask for more than one approval (two approvers for high risk,
        // a change manager when the impact walk was bounded): approve until it is approved.
        for who in ["apr", "apr2", "mgr"] {
            let data = act(who, "approveChange(id: $id)").await?;
            if data["approveChange"]["change"]["state"] == "APPROVED" {
                break;
            }
        }
        act("mgr", "scheduleChange(id: $id)").await?;
        act("imp", "startChange(id: $id)").await?;
        Ok(id)
    }
}

/// One client: updates `ci` naming `change` (if any) until `end`.
async fn client(
    endpoint: Endpoint,
    token: String,
    ci: String,
    change: Option<String>,
    start: Instant,
    warmup: Duration,
    end: Duration,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut connection = Connection::open(&endpoint).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let query = "mutation($id: ID!, $v: String!, $by: ID) { updateCi(id: $id, input: { version: $v, authorizedBy: $by }) { position } }";
    let bodies: Vec<Bytes> = ["a", "b"]
        .iter()
        .map(|v| Bytes::from(json!({ "query": query, "variables": { "id": ci, "v": v, "by": change } }).to_string()))
        .collect();
    let mut errors = 0;
    let mut n = 0usize;
    tokio::time::sleep_until(start.into()).await;
    loop {
        let issued = Instant::now();
        if issued.duration_since(start) >= end {
            break;
        }
        let (status, body) = connection.post(&token, bodies[n % 2].clone()).await?;
        n += 1;
        let ok = status == 200 && body.starts_with(b"{\"data\"");
        if issued.duration_since(start) >= warmup {
            if ok {
                histogram.record(issued.elapsed().as_micros().max(1) as u64)?;
            } else {
                errors += 1;
                if errors == 1 {
                    eprintln!("first error: {}", String::from_utf8_lossy(&body));
                }
            }
        }
    }
    Ok((histogram, errors))
}

async fn run(
    setup: &Setup,
    args: &Args,
    label: &str,
    cis: &[String],
    changes: &[Option<String>],
) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(args.warmup_secs);
    let end = warmup + Duration::from_secs(args.duration_secs);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for (index, ci) in cis.iter().enumerate() {
        tasks.push(tokio::spawn(client(
            setup.endpoint.clone(),
            setup.tokens["imp"].clone(),
            ci.clone(),
            changes[index % changes.len()].clone(),
            start,
            warmup,
            end,
        )));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await??;
        histogram.add(&h)?;
        errors += e;
    }
    println!(
        "{label:<13} {} clients: {} edits in {}s = {:.0} edits/s, errors {errors}, latency us p50 {} p90 {} p99 {} max {}",
        cis.len(),
        histogram.len(),
        args.duration_secs,
        histogram.len() as f64 / args.duration_secs as f64,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.9),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.clients > 500 {
        bail!("--clients must be 1 to 500 (a change's scope holds at most 500 CIs)");
    }
    let server = spawn_server(&args.spawn, None, &[])?;
    let endpoint = Endpoint::parse(&server.url)?;
    let mut setup =
        Setup { endpoint, admin: server.token.clone(), tokens: Default::default(), drafted: Default::default() };
    for (name, role) in
        [("req", "EDITOR"), ("imp", "EDITOR"), ("apr", "APPROVER"), ("apr2", "APPROVER"), ("mgr", "CHANGE_MANAGER")]
    {
        setup
            .call(
                "admin",
                "mutation($i: CreatePrincipalInput!) { createPrincipal(input: $i) { position } }",
                json!({ "i": { "name": name, "kind": "SYSTEM", "roles": [role] } }),
            )
            .await?;
        let data = setup
            .call("admin", "mutation($p: String!) { createToken(principal: $p) { token } }", json!({ "p": name }))
            .await?;
        setup.tokens.insert(name, data["createToken"]["token"].as_str().context("token")?.to_owned());
    }
    // The CIs: teams registered under a setup change; locations, declared uncontrolled, without.
    let names: Vec<String> = (0..args.clients).map(|n| format!("bench team {n:03}")).collect();
    let planned: Vec<Value> = names.iter().map(|n| json!({ "class": "team", "name": n })).collect();
    let registration = setup.implementing("register the benchmark teams", json!({ "planned": planned })).await?;
    let mut teams = Vec::new();
    for name in &names {
        let data = setup
            .call(
                "imp",
                "mutation($i: RegisterCiInput!) { registerCi(input: $i) { ci { id } } }",
                json!({ "i": { "class": "team", "name": name, "authorizedBy": registration } }),
            )
            .await?;
        teams.push(data["registerCi"]["ci"]["id"].as_str().context("ci id")?.to_owned());
    }
    setup
        .call("imp", "mutation($id: ID!) { completeChange(id: $id) { position } }", json!({ "id": registration }))
        .await?;
    setup
        .call(
            "admin",
            "mutation { declareClassControl(class: \"location\", controlled: false, reason: \"benchmark baseline\") { position } }",
            json!({}),
        )
        .await?;
    let mut locations = Vec::new();
    for n in 0..args.clients {
        let data = setup
            .call(
                "imp",
                "mutation($i: RegisterCiInput!) { registerCi(input: $i) { ci { id } } }",
                json!({ "i": { "class": "location", "name": format!("bench site {n:03}") } }),
            )
            .await?;
        locations.push(data["registerCi"]["ci"]["id"].as_str().context("ci id")?.to_owned());
    }
    let one = setup.implementing("one change for every client", json!({ "cis": teams })).await?;
    let mut many = Vec::new();
    for (n, team) in teams.iter().enumerate() {
        many.push(Some(setup.implementing(&format!("client {n}'s change"), json!({ "cis": [team] })).await?));
    }
    println!(
        "change_edits: {} clients, closed loop, {}s measured after {}s warm-up per run; each update changes its CI's version",
        args.clients, args.duration_secs, args.warmup_secs
    );
    run(&setup, &args, "uncontrolled", &locations, &[None]).await?;
    run(&setup, &args, "one-change", &teams, &[Some(one)]).await?;
    run(&setup, &args, "many-changes", &teams, &many).await?;
    drop(server);
    Ok(())
}
