//! HTTP load generator for `cmdb serve`: POSTs one GraphQL query over HTTP/1.1 keep-alive
//! connections and reports throughput and latency percentiles (HDR histogram).
//!
//! Closed loop (default): every connection sends its next request as soon as the previous
//! answer arrives: the maximum throughput. Open loop (`--rate R`): requests are scheduled at a
//! fixed total rate and latency is measured from the scheduled time, so a stall is counted
//! against every request it delays (no coordinated omission).
//!
//! `--spawn PATH` starts `PATH serve` on a fresh data directory and port, takes the bootstrap
//! token it prints, and stops it at the end; otherwise give `--url` and `--token`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use cmdb_benches::http::{Connection, Endpoint, spawn_server};
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
struct Args {
    /// The GraphQL endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/graphql")]
    url: String,
    /// A bearer token.
    #[arg(long)]
    token: Option<String>,
    /// Start this cmdb binary on a temporary data directory instead of using --url/--token.
    #[arg(long)]
    spawn: Option<String>,
    /// With --spawn: serve this data directory (new: it prints the token) instead of a fresh one.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Open loop at this many requests per second in total (default: closed loop).
    #[arg(long)]
    rate: Option<u64>,
    /// The GraphQL query.
    #[arg(long, default_value = "{ head { position } }")]
    query: String,
    /// A file of GraphQL queries, one per line, sent in turn (instead of --query).
    #[arg(long)]
    query_file: Option<std::path::PathBuf>,
}

struct Target {
    endpoint: Endpoint,
    token: String,
    bodies: Vec<Bytes>,
}

struct Outcome {
    histogram: Histogram<u64>,
    errors: u64,
}

async fn one_request(connection: &mut Connection, target: &Target, body: Bytes) -> anyhow::Result<bool> {
    let (status, body) = connection.post(&target.token, body).await?;
    Ok(status == 200 && body.starts_with(b"{\"data\""))
}

/// One connection's loop. `interval`: open loop (time between scheduled sends).
async fn worker(
    target: std::sync::Arc<Target>,
    start: Instant,
    warmup: Duration,
    end: Duration,
    interval: Option<Duration>,
    offset: Duration,
) -> anyhow::Result<Outcome> {
    let mut sender = Connection::open(&target.endpoint).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    let mut scheduled = start + offset;
    let mut sent = offset.as_nanos() as usize;
    loop {
        let issue_at = match interval {
            Some(step) => {
                tokio::time::sleep_until(scheduled.into()).await;
                let at = scheduled;
                scheduled += step;
                at
            }
            None => Instant::now(),
        };
        if issue_at.duration_since(start) >= end {
            break;
        }
        let body = target.bodies[sent % target.bodies.len()].clone();
        sent += 1;
        let ok = match one_request(&mut sender, &target, body).await {
            Ok(ok) => ok,
            Err(_) => {
                sender = Connection::open(&target.endpoint).await?;
                false
            }
        };
        if issue_at.duration_since(start) >= warmup {
            if ok {
                histogram.record(issue_at.elapsed().as_micros().max(1) as u64)?;
            } else {
                errors += 1;
            }
        }
    }
    Ok(Outcome { histogram, errors })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut spawned = None;
    let (url, token) = match &args.spawn {
        Some(binary) => {
            let server = spawn_server(binary, args.data_dir.as_deref(), &[])?;
            let found = (server.url.clone(), server.token.clone());
            spawned = Some(server);
            found
        }
        None => (args.url.clone(), args.token.clone().context("--token is needed without --spawn")?),
    };
    let endpoint = Endpoint::parse(&url)?;
    let queries: Vec<String> = match &args.query_file {
        Some(file) => {
            std::fs::read_to_string(file)?.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
        }
        None => vec![args.query.clone()],
    };
    if queries.is_empty() {
        bail!("no queries");
    }
    let bodies = queries.iter().map(|q| Bytes::from(serde_json::json!({ "query": q }).to_string())).collect();
    let target = std::sync::Arc::new(Target { endpoint, token, bodies });

    let warmup = Duration::from_secs(args.warmup_secs);
    let end = warmup + Duration::from_secs(args.duration_secs);
    let interval = args.rate.map(|rate| Duration::from_secs_f64(args.connections as f64 / rate as f64));
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for index in 0..args.connections {
        let offset = interval.map_or(Duration::ZERO, |step| step.mul_f64(index as f64 / args.connections as f64));
        tasks.push(tokio::spawn(worker(target.clone(), start, warmup, end, interval, offset)));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let outcome = task.await??;
        histogram.add(&outcome.histogram)?;
        errors += outcome.errors;
    }
    let seconds = args.duration_secs as f64;
    let mode = args.rate.map_or("closed loop".to_owned(), |r| format!("open loop at {r} req/s"));
    let what = match &args.query_file {
        Some(file) => format!("{} queries from {} in turn", queries.len(), file.display()),
        None => format!("query {:?}", args.query),
    };
    println!(
        "{mode}, {} connections, {}s measured after {}s warm-up, {what}",
        args.connections, args.duration_secs, args.warmup_secs
    );
    println!(
        "requests {} ({:.0}/s), errors {errors}, latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        histogram.len(),
        histogram.len() as f64 / seconds,
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
    drop(spawned);
    Ok(())
}
