//! `cmdb gate` and `cmdb deployment report`: what a pipeline step runs. Both talk to a running
//! server over HTTP (`--url` / `CMDB_URL`, `--token` / `CMDB_TOKEN`, a deployer's token).
//!
//! `cmdb gate` exits 0 on allow, 1 on deny, 3 on pending and 2 on an error, printing the
//! decision and then one reason per line (`CODE: message`). With `--wait DURATION` it holds
//! while the answer is pending: each request asks the server to hold it until the answer
//! changes (the server wakes on new events, it does not poll), for at most
//! `MAX_GATE_WAIT_SECONDS` per request, until the duration is spent.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::app::releases::MAX_GATE_WAIT_SECONDS;

/// Exit code of an allow.
pub const EXIT_ALLOW: u8 = 0;
/// Exit code of a deny.
pub const EXIT_DENY: u8 = 1;
/// Exit code of an error (bad input, no server, refused).
pub const EXIT_ERROR: u8 = 2;
/// Exit code of a pending answer.
pub const EXIT_PENDING: u8 = 3;
/// Least time between two gate requests while waiting, in milliseconds (a server that answers
/// at once, for instance with a short request timeout, is not hammered).
pub const MIN_REQUEST_INTERVAL_MS: u64 = 1_000;
/// Longest `--wait` accepted, in seconds (a day).
pub const MAX_WAIT_SECONDS: u64 = 86_400;

/// Where the server is and who asks.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "CMDB_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A bearer token of a principal with the deployer role.
    #[arg(long, env = "CMDB_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// What is deployed, where, by which run.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service or CI deployed to: its id, or a name only one CI has.
    #[arg(long)]
    pub service: String,
    /// The environment (development, test, staging, production).
    #[arg(long)]
    pub environment: String,
    /// The artifact's name (e.g. ghcr.io/acme/payments-api).
    #[arg(long)]
    pub artifact: String,
    /// The artifact's version.
    #[arg(long)]
    pub version: String,
    /// The artifact's digest (sha256:<64 hex digits>).
    #[arg(long)]
    pub digest: String,
    /// The change authorising it (CHG-000042 or an id); default: the run's or the release's.
    #[arg(long)]
    pub change: Option<String>,
    /// The release it carries out (REL-000001 or an id).
    #[arg(long)]
    pub release: Option<String>,
    /// The pipeline's provider (github, gitlab, argocd, jenkins...).
    #[arg(long, env = "CMDB_PIPELINE_PROVIDER")]
    pub provider: String,
    /// The run's id in that provider.
    #[arg(long, env = "CMDB_PIPELINE_RUN_ID")]
    pub run_id: String,
    /// A link to the run.
    #[arg(long, env = "CMDB_PIPELINE_RUN_URL")]
    pub run_url: Option<String>,
}

impl DeployArgs {
    fn body(&self) -> Value {
        json!({
            "service": self.service,
            "environment": self.environment,
            "artifact": {"name": self.artifact, "version": self.version, "digest": self.digest},
            "change": self.change,
            "release": self.release,
            "pipeline": {"provider": self.provider, "runId": self.run_id, "runUrl": self.run_url},
        })
    }
}

/// `cmdb gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    deploy: DeployArgs,
    /// While pending, wait this long for the decision to change (`90s`, `15m`, `2h`).
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Ask without recording anything (no change is opened or started).
    #[arg(long)]
    dry_run: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

/// `cmdb deployment ...`.
#[derive(Debug, Subcommand)]
pub enum DeploymentSubcommand {
    /// Report what the pipeline did: started, succeeded (the CMDB then holds the new versions)
    /// or failed.
    Report {
        #[command(flatten)]
        /// Where the server is.
        server: ServerArgs,
        #[command(flatten)]
        /// What was deployed.
        deploy: DeployArgs,
        /// started, succeeded or failed.
        #[arg(long)]
        status: String,
        /// What happened (required for failed).
        #[arg(long)]
        note: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A duration as `90`, `90s`, `15m`, `2h` or `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = digits.parse().map_err(|_| format!("{text:?} is not a duration (90s, 15m, 2h)"))?;
    let seconds = match unit {
        "" | "s" => Some(value),
        "m" => value.checked_mul(60),
        "h" => value.checked_mul(3_600),
        "d" => value.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration (90s, 15m, 2h)"))?;
    if seconds > MAX_WAIT_SECONDS {
        return Err(format!("{text:?} is longer than {MAX_WAIT_SECONDS} s"));
    }
    Ok(Duration::from_secs(seconds))
}

async fn post(server: &ServerArgs, path: &str, body: &Value, timeout: Duration) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let url = format!("{}{path}", server.url.trim_end_matches('/'));
    let response = client
        .post(&url)
        .bearer_auth(&server.token)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let code = answer.pointer("/errors/0/extensions/code").and_then(Value::as_str).unwrap_or("ERROR");
        let message = answer.pointer("/errors/0/message").and_then(Value::as_str).unwrap_or("");
        bail!("{code}: {message} (HTTP {status})");
    }
    Ok(answer)
}

/// Runs `cmdb gate`.
pub async fn gate(args: GateArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let wait = args.wait.unwrap_or_default();
    loop {
        let remaining = wait.saturating_sub(started.elapsed());
        let hold = remaining.as_secs().min(MAX_GATE_WAIT_SECONDS);
        let mut body = args.deploy.body();
        body["waitSeconds"] = json!(hold);
        body["dryRun"] = json!(args.dry_run);
        let sent = Instant::now();
        let answer = post(&args.server, "/api/v1/gate", &body, Duration::from_secs(hold + 30)).await?;
        let decision = answer.get("decision").and_then(Value::as_str).unwrap_or("");
        let waiting = decision == "pending" && !args.dry_run && started.elapsed() < wait;
        if !waiting {
            print_answer(&answer, args.json);
            return Ok(ExitCode::from(match decision {
                "allow" => EXIT_ALLOW,
                "deny" => EXIT_DENY,
                "pending" => EXIT_PENDING,
                other => bail!("the server answered an unknown decision {other:?}"),
            }));
        }
        let since = sent.elapsed();
        if since < Duration::from_millis(MIN_REQUEST_INTERVAL_MS) {
            tokio::time::sleep(Duration::from_millis(MIN_REQUEST_INTERVAL_MS) - since).await;
        }
    }
}

fn print_answer(answer: &Value, as_json: bool) {
    if as_json {
        println!("{answer}");
        return;
    }
    let field = |name: &str| answer.get(name).and_then(Value::as_str).map(crate::terminal::terminal_safe);
    println!("decision: {}", field("decision").unwrap_or_default());
    if let Some(change) = field("change") {
        println!("change: {change}");
    }
    if let Some(release) = field("release") {
        println!("release: {release}");
    }
    if let Some(retry) = answer.get("retryAfterSeconds").and_then(Value::as_u64) {
        println!("retry after: {retry} s");
    }
    for reason in answer.get("reasons").and_then(Value::as_array).into_iter().flatten() {
        let code = reason.get("code").and_then(Value::as_str).unwrap_or("");
        let message = reason.get("message").and_then(Value::as_str).unwrap_or("");
        println!("{}", crate::terminal::terminal_safe(&format!("{code}: {message}")));
    }
}

/// Runs `cmdb deployment ...`.
pub async fn deployment(command: DeploymentSubcommand) -> anyhow::Result<ExitCode> {
    let DeploymentSubcommand::Report { server, deploy, status, note, json } = command;
    let mut body = deploy.body();
    body["status"] = json!(status);
    body["note"] = json!(note);
    let answer = post(&server, "/api/v1/deployments/report", &body, Duration::from_secs(60)).await?;
    if json {
        println!("{answer}");
    } else {
        let field = |name: &str| {
            answer.get(name).and_then(Value::as_str).map(crate::terminal::terminal_safe).unwrap_or_default()
        };
        println!("deployment: {}", field("deployment"));
        println!("state: {}", field("state"));
    }
    Ok(ExitCode::SUCCESS)
}
