//! The `cmdb` command line: `serve`, and the operator commands that work directly on a data
//! directory (also while a server runs on it: the log takes several writers, and a command
//! that changes access tells the running server and waits until it applied the change).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cmdb_core::access::{self, AccessCommand, AccessDecider, PrincipalKind, Role, token_hash};
use cmdb_core::chain::DigestCheck;
use cmdb_core::store::location::{OpenedStore, StoreLocation};
use cmdb_core::store::sqlite::{LOG_FILE_NAME, SqliteOptions, SqliteStore};
use cmdb_core::{Actor, Clock, Digest, EventStore, IdGenerator, Metadata, Source, SystemClock, Timestamp, UuidV7Ids};

use crate::app::changes::ChangeRef;
use crate::app::run_offline;
use crate::local::{export_line, open_existing};
use crate::opening::open_location;
use crate::server::{Server, StartOptions};
use crate::settings::{DataDir, LogFormat, ServeSettings};

/// Prints one line of a human-readable table or report with every control character from
/// user input (line breaks, escape sequences) shown escaped, so names and titles cannot forge
/// lines or drive the terminal.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::terminal_safe(&format!($($arg)*)))
    };
}

pub use crate::terminal::terminal_safe;

#[derive(Debug, Parser)]
#[command(name = "cmdb", version, about = "An event-sourced CMDB and change-control engine")]
/// The `cmdb` command line.
pub struct Cli {
    #[command(flatten)]
    /// The JSON payload exactly as stored.
    pub data: DataDir,

    /// Log format on standard error.
    #[arg(long, env = "CMDB_LOG_FORMAT", value_enum, default_value = "pretty", global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    /// What to do.
    pub command: Command,
}

#[derive(Debug, Subcommand)]
/// The commands.
pub enum Command {
    /// Serve GraphQL, health and metrics over HTTP.
    Serve(ServeSettings),
    /// Recompute the hash chain of the whole log; exit 1 if it is broken or a digest no longer matches.
    Verify {
        /// Also check a digest (`<position>:<hash>`) written down earlier.
        #[arg(long)]
        digest: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the head digest (`<position>:<hash>`) to keep for a later `verify --digest`.
    Digest,
    /// Copy the log, online and consistent, to a new file; the copy is verified.
    Backup {
        /// The backup file to create (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into an empty data directory; the backup is verified first.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
    /// Copy a whole log between backends (sqlite:PATH, postgres://...), then verify the copy's
    /// chain and counts against the source; the target must be empty.
    Migrate {
        /// The log to copy (sqlite:PATH or postgres://...).
        #[arg(long)]
        from: String,
        /// Where to copy it (must hold no events).
        #[arg(long)]
        to: String,
    },
    /// Write the events up to a position or a time as NDJSON.
    Export {
        /// A position (e.g. 1200) or an RFC 3339 time (e.g. 2026-11-25T14:02:00Z).
        #[arg(long)]
        as_of: String,
        /// The file to create (default: standard output).
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// What changed between two moments (positions or RFC 3339 times).
    Diff {
        #[arg(long)]
        /// The state it came from.
        from: String,
        /// Default: the head.
        #[arg(long)]
        to: Option<String>,
        /// Only the CIs within --depth relationships of this CI (id) at either moment.
        #[arg(long)]
        around: Option<String>,
        #[arg(long, default_value_t = 2)]
        /// How many relationships away.
        depth: u32,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Read change requests.
    #[command(subcommand)]
    Change(ChangeSubcommand),
    /// Approval policies (Rego; CH-4): load, show, test.
    #[command(subcommand)]
    Policy(PolicySubcommand),
    /// Generate a realistic estate with months of history into an empty data directory.
    #[command(subcommand)]
    Fixtures(FixturesSubcommand),
    /// Manage principals (people and systems) and their roles.
    #[command(subcommand)]
    Principal(PrincipalSubcommand),
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(TokenSubcommand),
    /// Ask the deployment gate of a running server whether this pipeline may deploy now: exit
    /// 0 allow, 1 deny, 3 pending, 2 error; reasons one per line.
    Gate(crate::pipeline::GateArgs),
    /// Report deployments to a running server.
    #[command(subcommand)]
    Deployment(crate::pipeline::DeploymentSubcommand),
    /// Import a discovery source (terraform, kubernetes, cyclonedx, netbox): record what it
    /// observed and print the configuration audit; with --apply make the CMDB match it under
    /// standard changes.
    Import(crate::discovery_cli::ImportArgs),
    /// Audit the CMDB against a discovery source; exit 1 when a finding is unauthorised.
    Audit(crate::discovery_cli::AuditArgs),
    /// The outbound CDEvents targets: dead letters, and replaying one.
    #[command(subcommand)]
    Outbound(OutboundSubcommand),
    /// The checkpoint signing key: create one, print its verifier string.
    #[command(subcommand)]
    Key(crate::evidence_cli::KeySubcommand),
    /// Merkle proofs: print an inclusion or consistency proof, or verify one without the log
    /// (exit 0 verified, 1 not verified, 2 bad input).
    #[command(subcommand)]
    Proof(crate::evidence_cli::ProofSubcommand),
}

#[derive(Debug, Subcommand)]
/// `cmdb outbound ...`.
pub enum OutboundSubcommand {
    /// Lists a target's dead letters (facts it could not be sent) and how far it was sent.
    DeadLetters {
        /// The target's name (as in --cdevents-target NAME=URL).
        #[arg(long)]
        target: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Asks for a dead letter to be sent once more (a running server sends it).
    Replay {
        /// The target's name.
        #[arg(long)]
        target: String,
        /// The dead letter's log position.
        #[arg(long)]
        position: u64,
    },
}

#[derive(Debug, Subcommand)]
/// `cmdb change ...`.
pub enum ChangeSubcommand {
    /// Show one change: its request, transitions, approvals, review and the CI edits it authorised.
    Show {
        /// The change's number (CHG-000042) or id.
        change: String,
        /// As it stood at a position or RFC 3339 time (default: now).
        #[arg(long)]
        as_of: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List emergency changes whose approval or review is overdue now (CH-8).
    Overdue {
        #[arg(long)]
        /// Print JSON.
        json: bool,
    },
    /// Show every risk assessment and policy decision of a change and replay each decision
    /// with the recorded policy on the recorded input; exit 1 if any replay differs.
    Explain {
        /// The change's number (CHG-000042) or id.
        change: String,
        #[arg(long)]
        /// Print JSON.
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
/// `cmdb policy ...`.
pub enum PolicySubcommand {
    /// Load a Rego policy file as the new approval policy. A file that does not parse, calls a
    /// non-replayable built-in or decides malformed is refused, and the policy in force stays.
    Load {
        /// The Rego file.
        file: PathBuf,
        /// A name for this policy (default: the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print the policy in force, or one version (0: the built-in default).
    Show {
        #[arg(long)]
        /// The stream version folded.
        version: Option<u32>,
    },
    /// Check a policy file and run its Rego tests (every `test_` rule of the tests file)
    /// without loading anything; no data directory needed. Exit 1 if a test fails.
    Test {
        /// The Rego file.
        file: PathBuf,
        /// The Rego tests (default: none, only the checks a load makes).
        #[arg(long)]
        tests: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
/// `cmdb fixtures ...`.
pub enum FixturesSubcommand {
    /// Load an estate (small: 584 CIs, the demo's; medium: ~10,000; large: ~96,000) into an empty data directory.
    Load {
        #[arg(long, default_value = "small")]
        /// Which size.
        size: String,
        #[arg(long, default_value_t = 1)]
        /// The random seed.
        seed: u64,
        /// Days of history, ending now.
        #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=3650))]
        history_days: u32,
    },
}

#[derive(Debug, Subcommand)]
/// `cmdb principal ...`.
pub enum PrincipalSubcommand {
    /// Create a principal.
    Create {
        /// The name.
        name: String,
        /// person or system.
        #[arg(long, default_value = "person")]
        kind: String,
        /// A role to hold (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        /// A name for people.
        display_name: Option<String>,
    },
    /// Grant a role.
    /// Give a principal a role.
    Grant {
        /// The principal.
        name: String,
        /// The role.
        role: String,
    },
    /// Revoke a role.
    /// Take a role from a principal.
    RevokeRole {
        /// The principal.
        name: String,
        /// The role.
        role: String,
    },
    /// List principals and roles.
    List,
}

#[derive(Debug, Subcommand)]
/// `cmdb token ...`.
pub enum TokenSubcommand {
    /// Create a token for a principal; it is printed once.
    Create {
        #[arg(long)]
        /// The principal.
        principal: String,
        #[arg(long)]
        /// A label to recognise it by.
        label: Option<String>,
        /// Expire the token after this many days.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: Option<u32>,
    },
    /// Revoke a token by its id; in force for a running server before this returns.
    Revoke {
        /// The token.
        token_id: String,
        #[arg(long)]
        /// Why.
        reason: Option<String>,
    },
    /// List tokens (never their text).
    List {
        #[arg(long)]
        /// The principal.
        principal: Option<String>,
    },
}

/// Exit codes: 0 success, 1 the log failed verification, 2 bad input or any other error.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data = &cli.data;
    match cli.command {
        Command::Serve(settings) => serve(data, settings).await,
        Command::Verify { digest, json } => verify(data, digest.as_deref(), json).await,
        Command::Digest => {
            let store = open_existing(data, false).await?;
            println!("{}", store.head().await?);
            store.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { to } => backup(data, &to).await,
        Command::Restore { from } => restore(data, &from).await,
        Command::Migrate { from, to } => crate::migrate::migrate(&from.parse()?, &to.parse()?).await,
        Command::Import(args) => crate::discovery_cli::import(data, args).await,
        Command::Audit(args) => crate::discovery_cli::audit(data, args).await,
        Command::Export { as_of, to } => export(data, &as_of, to.as_deref()).await,
        Command::Diff { from, to, around, depth, json } => {
            diff(data, &from, to.as_deref(), around.as_deref(), depth, json).await
        }
        Command::Change(ChangeSubcommand::Show { change, as_of, json }) => {
            show_change(data, &change, as_of.as_deref(), json).await
        }
        Command::Change(ChangeSubcommand::Overdue { json }) => overdue_changes(data, json).await,
        Command::Change(ChangeSubcommand::Explain { change, json }) => explain_change(data, &change, json).await,
        Command::Policy(command) => policy_command(data, command).await,
        Command::Fixtures(FixturesSubcommand::Load { size, seed, history_days }) => {
            load_fixtures(data, &size, seed, history_days).await
        }
        Command::Principal(command) => principal(data, command).await,
        Command::Token(command) => token(data, command).await,
        Command::Gate(args) => crate::pipeline::gate(args).await,
        Command::Deployment(command) => crate::pipeline::deployment(command).await,
        Command::Outbound(command) => outbound_command(data, command).await,
        Command::Key(command) => crate::evidence_cli::key(command),
        Command::Proof(command) => crate::evidence_cli::proof(data, command).await,
    }
}

async fn outbound_command(data: &DataDir, command: OutboundSubcommand) -> anyhow::Result<ExitCode> {
    use cmdb_core::outbound::{OutboundCommand, OutboundDecider, OutboundKey, OutboundRead};
    match command {
        OutboundSubcommand::DeadLetters { target, json } => {
            if !cmdb_core::outbound::valid_target_name(&target) {
                bail!("{target:?} is not a target name: 1 to 64 letters, digits, - and _");
            }
            let store = open_existing(data, true).await?;
            let state = cmdb_core::decider::fold::load(store.as_ref(), &OutboundKey::Target(target.clone())).await;
            store.shutdown().await;
            let OutboundRead::Target(state) = state? else { bail!("unexpected fold") };
            if json {
                let letters: Vec<serde_json::Value> = state
                    .dead_letters
                    .values()
                    .map(|l| serde_json::json!({
                        "position": l.handled.position, "eventType": l.handled.event_type, "attempts": l.handled.attempts,
                        "error": l.handled.error, "at": l.at.to_rfc3339(), "replayRequested": l.replay_requested,
                    }))
                    .collect();
                say!(
                    "{}",
                    serde_json::json!({ "target": target, "handledThrough": state.handled_through, "delivered": state.delivered, "deadLetters": letters })
                );
            } else {
                say!(
                    "target {target}: sent through position {}, {} delivered, {} dead letters",
                    state.handled_through,
                    state.delivered,
                    state.dead_letters.len()
                );
                for letter in state.dead_letters.values() {
                    let error = crate::terminal::terminal_safe(letter.handled.error.as_deref().unwrap_or(""));
                    let replay = if letter.replay_requested { " (replay asked)" } else { "" };
                    say!(
                        "{:>10} {} after {} attempts: {error}{replay}",
                        letter.handled.position,
                        letter.handled.event_type,
                        letter.handled.attempts
                    );
                }
            }
        }
        OutboundSubcommand::Replay { target, position } => {
            let store = open_existing(data, true).await?;
            let command = OutboundCommand::Replay { target: target.clone(), position };
            let outcome =
                run_offline(store.as_ref(), &OutboundDecider, &command, cli_metadata(), SystemClock.now()).await;
            store.shutdown().await;
            let written = outcome?.outcome.last_position;
            say!("replay of position {position} to {target} asked (position {written}); a running server sends it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(data: &DataDir, settings: ServeSettings) -> anyhow::Result<ExitCode> {
    let data_dir = data.data_dir.as_path();
    // Signals are caught from before the first line is printed: a supervisor (or a test) that
    // reads "serving" and sends SIGTERM at once gets a graceful stop, not the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let location = data.location()?;
    let options = StartOptions { location: Some(location.clone()), ..StartOptions::default() };
    let server = Server::start(data_dir, settings, options).await?;
    if let Some(token) = server.bootstrap_token() {
        println!("cmdb: this data directory is new. An admin principal was created with this token,");
        println!("shown once; keep it now (`cmdb token create --principal admin` makes more):");
        println!();
        println!("    {token}");
        println!();
    }
    println!(
        "cmdb: serving GraphQL on http://{0}/graphql and the console on http://{0}/ (log: {location})",
        server.local_addr()
    );
    let _ = std::io::stdout().flush();
    let trigger = server.shutdown_trigger();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
        trigger.cancel();
    });
    server.finished().await;
    Ok(ExitCode::SUCCESS)
}

async fn verify(data: &DataDir, digest: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let digest: Option<Digest> = digest.map(str::parse).transpose()?;
    let store = open_existing(data, false).await?;
    let report = store.verify().await?;
    let digest_check = match digest {
        Some(digest) => Some((digest, store.check_digest(digest).await?)),
        None => None,
    };
    store.shutdown().await;
    let intact = report.is_intact() && digest_check.is_none_or(|(_, check)| check == DigestCheck::Matches);
    if json {
        let body = serde_json::json!({
            "intact": intact,
            "report": report,
            "digest": digest_check.map(|(d, check)| serde_json::json!({ "digest": d.to_string(), "check": check })),
        });
        println!("{body}");
    } else {
        match &report.first_break {
            None => println!("chain intact: {} events verified; head {}", report.events_checked, report.last_good),
            Some(first_break) => {
                println!("CHAIN BROKEN at position {}: {first_break}", first_break.position());
                println!("the last sound event is {}", report.last_good);
            }
        }
        if let Some((digest, check)) = digest_check {
            match check {
                DigestCheck::Matches => println!("digest {digest}: matches"),
                DigestCheck::Truncated { head } => {
                    println!("digest {digest}: TRUNCATED: the log ends at {head}, before the digest's position")
                }
                DigestCheck::Mismatch { stored } => {
                    println!("digest {digest}: MISMATCH: position {} now has hash {stored}", digest.position)
                }
            }
        }
    }
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn backup(data: &DataDir, to: &Path) -> anyhow::Result<ExitCode> {
    let data_dir = data.data_dir.as_path();
    if to.exists() {
        bail!("{} already exists; a backup never overwrites a file", to.display());
    }
    let location = data.location()?;
    let StoreLocation::Sqlite(_) = &location else {
        bail!(
            "cmdb backup copies the embedded log; a PostgreSQL log is backed up with pg_dump or base backups \
             (docs/deployment.md), or copied to a file with `cmdb migrate --from {location} --to sqlite:DIR`"
        );
    };
    if location.sqlite_log_file().is_none_or(|path| !path.is_file()) {
        bail!("no event log in {} (is --data-dir right?)", data_dir.display());
    }
    let OpenedStore::Sqlite(store) = open_location(&location, true).await? else {
        bail!("the embedded log did not open as one");
    };
    let digest = store.backup_to(to).await?;
    store.shutdown().await;
    let report = verify_file(to).await.with_context(|| format!("the backup {} does not verify", to.display()))?;
    println!("backup written to {}: {} events, head {digest}, chain verified", to.display(), report);
    Ok(ExitCode::SUCCESS)
}

/// Verifies a standalone log file by opening a copy of it; returns the number of events.
async fn verify_file(file: &Path) -> anyhow::Result<u64> {
    let scratch = tempfile::tempdir_in(file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        .context("cannot create a scratch directory next to the file")?;
    std::fs::copy(file, scratch.path().join(LOG_FILE_NAME))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let store = SqliteStore::open(scratch.path(), SqliteOptions::default())?;
    let report = store.verify().await?;
    store.shutdown().await;
    if let Some(first_break) = report.first_break {
        bail!("chain broken at position {}: {first_break}", first_break.position());
    }
    Ok(report.events_checked)
}

async fn restore(data: &DataDir, from: &Path) -> anyhow::Result<ExitCode> {
    let data_dir = data.data_dir.as_path();
    if !from.is_file() {
        bail!("no backup file at {}", from.display());
    }
    let target = data_dir.join(LOG_FILE_NAME);
    if target.exists() {
        bail!(
            "{} already holds a log; restore into a new, empty data directory (nothing was changed)",
            data_dir.display()
        );
    }
    let events = verify_file(from).await.with_context(|| format!("refusing to restore {}", from.display()))?;
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let staging = data_dir.join(format!("{LOG_FILE_NAME}.restoring"));
    std::fs::copy(from, &staging).with_context(|| format!("cannot copy into {}", data_dir.display()))?;
    std::fs::File::open(&staging).and_then(|f| f.sync_all()).context("cannot sync the restored file")?;
    std::fs::rename(&staging, &target).context("cannot move the restored file into place")?;
    let store = open_location(&data.location()?, true).await?.as_dyn();
    let report = store.verify().await?;
    let head = store.head().await?;
    store.shutdown().await;
    if !report.is_intact() {
        bail!("the restored log does not verify: {:?}", report.first_break);
    }
    println!("restored {events} events into {}; head {head}; chain verified", data_dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Parses `--as-of`: a position, or an RFC 3339 time.
pub fn parse_as_of(text: &str) -> anyhow::Result<AsOf> {
    if let Ok(position) = text.trim().parse::<u64>() {
        return Ok(AsOf::Position(position));
    }
    match Timestamp::parse_rfc3339(text) {
        Ok(at) => Ok(AsOf::Time(at)),
        Err(_) => {
            bail!("--as-of takes a position (e.g. 1200) or an RFC 3339 time (e.g. 2026-11-25T14:02:00Z), got {text:?}")
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
/// A moment of the log, as `--as-of` names it.
pub enum AsOf {
    /// A position.
    Position(u64),
    /// A time (the last event at or before it).
    Time(Timestamp),
}

async fn export(data: &DataDir, as_of: &str, to: Option<&Path>) -> anyhow::Result<ExitCode> {
    let as_of = parse_as_of(as_of)?;
    if let Some(to) = to
        && to.exists()
    {
        bail!("{} already exists; export never overwrites a file", to.display());
    }
    let store = open_existing(data, true).await?;
    let head = store.head().await?.position;
    let last = match as_of {
        AsOf::Position(position) if position > head => {
            bail!("position {position} is past the end of the log (its head is {head})")
        }
        AsOf::Position(position) => position,
        AsOf::Time(at) => store.position_at(at).await?,
    };
    let mut out: Box<dyn Write> = match to {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create_new(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let page = store.limits().max_page_events;
    let mut after = 0;
    while after < last {
        let records = store.read_all(after, page.min((last - after) as usize)).await?;
        let Some(tail) = records.last() else { break };
        after = tail.position;
        for record in &records {
            writeln!(out, "{}", export_line(record)?)?;
        }
    }
    out.flush()?;
    drop(out);
    store.shutdown().await;
    eprintln!("exported events 1 to {last}");
    Ok(ExitCode::SUCCESS)
}

/// The graph of a data directory, from its checkpoint when one matches.
async fn load_graph(
    data: &DataDir,
) -> anyhow::Result<(
    Arc<dyn EventStore>,
    cmdb_projections::runner::ProjectionHandle<cmdb_projections::graph::TemporalGraph>,
)> {
    let data_dir = data.data_dir.as_path();
    let store = open_existing(data, true).await?;
    let options = cmdb_projections::runner::RunnerOptions {
        checkpoint_dir: Some(data_dir.join(crate::server::PROJECTIONS_DIR)),
        checkpoint_interval_ms: 3_600_000,
        ..Default::default()
    };
    let graph = cmdb_projections::runner::start(store.clone(), options).await?;
    Ok((store, graph))
}

fn moment(graph: &cmdb_projections::graph::TemporalGraph, text: &str, flag: &str) -> anyhow::Result<u64> {
    Ok(match parse_as_of(text).with_context(|| format!("--{flag}"))? {
        AsOf::Position(position) => {
            graph.check_position(position)?;
            position
        }
        AsOf::Time(at) => graph.position_at(at)?,
    })
}

async fn diff(
    data: &DataDir,
    from: &str,
    to: Option<&str>,
    around: Option<&str>,
    depth: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (store, handle) = load_graph(data).await?;
    let printed = print_diff(&handle.read(), from, to, around, depth, json);
    store.shutdown().await;
    printed?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what changed between two moments of `graph`.
fn print_diff(
    graph: &cmdb_projections::graph::TemporalGraph,
    from: &str,
    to: Option<&str>,
    around: Option<&str>,
    depth: u32,
    json: bool,
) -> anyhow::Result<()> {
    use cmdb_projections::diff::{CiChangeKind, RelChangeKind};
    let from = moment(graph, from, "from")?;
    let to = match to {
        Some(text) => moment(graph, text, "to")?,
        None => graph.applied(),
    };
    if from > to {
        bail!("--from ({from}) is after --to ({to})");
    }
    let scope = match around {
        None => None,
        Some(id) => {
            let id: cmdb_core::ci::CiId = id.parse()?;
            if depth > 6 {
                bail!("--depth is at most 6");
            }
            if graph.ci_at(id, to).is_none() && graph.ci_at(id, from).is_none() {
                bail!("no CI {id} at either moment");
            }
            let mut scope = graph.neighbourhood(id, from, depth)?;
            scope.extend(graph.neighbourhood(id, to, depth)?);
            Some(scope)
        }
    };
    let diff = graph.diff(from, to, scope.as_ref())?;
    if json {
        let mut value = serde_json::to_value(&diff)?;
        // Each CI's events, as the entry's causes (the projection reads them only when asked).
        if let Some(entries) = value.get_mut("cis").and_then(serde_json::Value::as_array_mut) {
            for (entry, ci) in entries.iter_mut().zip(&diff.cis) {
                entry["events"] = serde_json::to_value(graph.events_between(ci.id, from, to))?;
            }
        }
        open_ends_as_null(&mut value);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let count = |kind| diff.cis.iter().filter(|c| c.kind == kind).count();
        let rels = |kind| diff.relationships.iter().filter(|r| r.kind == kind).count();
        let when = |p| graph.time_of(p).map(|t| t.to_rfc3339()).unwrap_or_default();
        say!(
            "diff {from} ({}) -> {to} ({}): {} created, {} changed, {} withdrawn; {} relationships added, {} removed",
            when(from),
            when(to),
            count(CiChangeKind::Created),
            count(CiChangeKind::Changed),
            count(CiChangeKind::Withdrawn),
            rels(RelChangeKind::Added),
            rels(RelChangeKind::Removed)
        );
        for ci in &diff.cis {
            let shown = ci.after.as_ref().or(ci.before.as_ref()).expect("a diffed CI exists at one end");
            let mark = match ci.kind {
                CiChangeKind::Created => "+",
                CiChangeKind::Changed => "~",
                CiChangeKind::Withdrawn => "-",
            };
            let by: Vec<String> = graph
                .events_between(ci.id, from, to)
                .iter()
                .map(|e| match e.authorized_by {
                    Some(change) => format!("{} by {} under change {change}", e.event_type.as_str(), e.principal),
                    None => format!("{} by {}", e.event_type.as_str(), e.principal),
                })
                .collect();
            say!("{mark} {} {} ({})  [{}]", shown.class, shown.name, ci.id, by.join("; "));
            if ci.kind == CiChangeKind::Changed {
                for field in &ci.fields() {
                    say!("    {}: {} -> {}", field.field, field.before, field.after);
                }
            }
        }
        for rel in &diff.relationships {
            let mark = if rel.kind == RelChangeKind::Added { "+" } else { "-" };
            let name = |id| graph.latest_ci(id).map(|c| c.name.to_string()).unwrap_or_else(|| id.to_string());
            say!(
                "{mark} relationship {} {} -> {}  [{} by {}]",
                rel.relationship.rel_type,
                name(rel.relationship.source),
                name(rel.relationship.target),
                rel.cause.event_type,
                rel.cause.principal
            );
        }
    }
    Ok(())
}

async fn show_change(data: &DataDir, text: &str, as_of: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let wanted = text.parse::<ChangeRef>()?;
    let (store, handle) = load_graph(data).await?;
    let result = (|| {
        let graph = handle.read();
        let position = match as_of {
            Some(text) => moment(&graph, text, "as-of")?,
            None => graph.applied(),
        };
        let book = graph.change_book();
        let id = wanted.resolve_at(book, position).with_context(|| format!("no change {wanted}"))?;
        let change =
            book.change_at(id, position).with_context(|| format!("no change {text} at position {position}"))?;
        let edits = graph.edits_under(id, &change.details.scope.cis, position);
        let name = |ci: cmdb_core::ci::CiId| {
            graph
                .ci_at(ci, position)
                .or_else(|| graph.latest_ci(ci))
                .map(|c| format!("{} {}", c.class, c.name))
                .unwrap_or_else(|| "(unknown)".into())
        };
        if json {
            let edits: Vec<serde_json::Value> = edits
                .iter()
                .map(|(ci, e)| {
                    serde_json::json!({ "position": e.position, "recorded_at": e.recorded_at, "type": e.event_type.as_str(),
                        "ci": ci, "principal": &*e.principal, "relationship": e.relationship })
                })
                .collect();
            let mut value = serde_json::to_value(&change)?;
            value["label"] = serde_json::json!(change.label());
            value["edits"] = serde_json::Value::Array(edits);
            value["overdue"] = serde_json::to_value(change.overdue(cmdb_core::Clock::now(&SystemClock)))?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        print_change(&change, &edits, &name);
        Ok(())
    })();
    store.shutdown().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// Prints a change for people: request, scope, transitions, approvals, assessment, sign-off,
/// review, comments, what is overdue and the CI edits it authorised.
fn print_change(
    change: &cmdb_core::change::ChangeRecord,
    edits: &[(cmdb_core::ci::CiId, &cmdb_projections::graph::HistoryEntry)],
    name: &dyn Fn(cmdb_core::ci::CiId) -> String,
) {
    let d = &change.details;
    say!(
        "{}  {}  {}{}",
        change.label(),
        change.change_type,
        change.state,
        if change.retrospective { "  (recorded retrospectively)" } else { "" }
    );
    say!("  {}", d.title);
    say!("  requester {}   implementer {}", change.requester, d.implementer.as_deref().unwrap_or("-"));
    if let Some(w) = &d.window {
        say!("  window {} to {} ({})", w.start, w.end, w.time_zone);
    }
    for (label, text) in
        [("description", &d.description), ("justification", &d.justification), ("back-out plan", &d.back_out_plan)]
    {
        say!("  {label}: {}", text.as_deref().unwrap_or("-"));
    }
    say!("  scope:");
    for ci in &d.scope.cis {
        say!("    {} ({ci})", name(*ci));
    }
    for plan in &d.scope.planned {
        say!("    planned {} {:?}", plan.class, plan.name);
    }
    for link in &d.links {
        say!("  link: {} {}", link.kind, link.id);
    }
    say!("  transitions:");
    for t in &change.transitions {
        let action = t.action.map_or_else(|| "created".to_owned(), |a| a.to_string());
        let from = t.from.map(|f| format!("{f} -> ")).unwrap_or_default();
        let note = t.note.as_ref().map(|n| format!("  \"{n}\"")).unwrap_or_default();
        say!("    {}  {action:<9} {from}{}  by {}{note}", t.at.recorded_at, t.to, t.by);
    }
    for a in &change.approvals {
        let held: Vec<&str> = a.roles_held.iter().map(|r| r.as_str()).collect();
        say!(
            "  {}: {} by {} as {} (held: {}){}",
            a.at.recorded_at,
            a.decision,
            a.by,
            a.authority.map_or_else(|| "a principal the policy named".to_owned(), |r| r.to_string()),
            held.join(", "),
            if a.retrospective { ", retrospectively" } else { "" }
        );
    }
    print_assessment(change);
    if let Some(s) = &change.sign_off {
        say!("  signed off by {} at {}: {}", s.by, s.at.recorded_at, s.note);
    }
    if let Some(r) = &change.review {
        say!(
            "  reviewed by {} at {}: objective met {}, users satisfied {}, side effects: {}, follow-ups: {}",
            r.by,
            r.at.recorded_at,
            r.review.objective_met,
            r.review.users_satisfied,
            r.review.side_effects.as_deref().unwrap_or("none"),
            if r.review.follow_up_actions.is_empty() {
                "none".to_owned()
            } else {
                r.review.follow_up_actions.join("; ")
            }
        );
    }
    for c in &change.comments {
        say!("  comment by {} at {}: {}", c.by, c.at.recorded_at, c.text);
    }
    for o in change.overdue(cmdb_core::Clock::now(&SystemClock)) {
        say!(
            "  OVERDUE: {}",
            match o {
                cmdb_core::change::Overdue::Approval => "emergency approval",
                cmdb_core::change::Overdue::Review => "review",
            }
        );
    }
    say!("  CI edits it authorised: {}", edits.len());
    for (ci, e) in edits.iter().take(50) {
        say!("    {}  {}  {}  by {}", e.position, e.event_type.as_str(), name(*ci), e.principal);
    }
    if edits.len() > 50 {
        say!("    ... {} more (use --json)", edits.len() - 50);
    }
}

/// Prints the risk assessment in force and the policy's decision with each requirement.
fn print_assessment(change: &cmdb_core::change::ChangeRecord) {
    if let Some(entry) = change.assessment() {
        let a = &entry.assessment;
        say!(
            "  risk {} ({} of {}), assessed by {} at position {} ({} CIs downstream{}, {} services)",
            a.level.as_str(),
            a.score,
            cmdb_core::change::risk::MAX_SCORE,
            entry.by,
            a.facts.position,
            a.facts.downstream_cis,
            if a.facts.truncated { "+" } else { "" },
            a.facts.services.len() as u32 + a.facts.services_not_listed
        );
        for f in &a.factors {
            say!("    {:>3}  {:<16} {}", f.points, f.name, f.why);
        }
        if let Some(status) = change.approval_status() {
            let out = &entry.decision.output;
            say!(
                "  policy v{} decided: auto-approve {}{}",
                entry.decision.policy_version,
                out.auto_approve,
                if out.deny.is_empty() { String::new() } else { format!(", DENIED: {}", out.deny.join("; ")) }
            );
            for s in status {
                say!(
                    "    [{}] {}: {} of {} ({})",
                    if s.met() { "met" } else { "   " },
                    s.requirement.role.map_or_else(|| s.requirement.principals.join(" or "), |r| r.to_string()),
                    s.approved_by.len(),
                    s.requirement.count,
                    s.requirement.reason
                );
            }
        }
    }
}

fn read_policy_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > cmdb_core::policy::MAX_POLICY_BYTES {
        bail!(
            "{} is {} bytes; a policy is at most {} bytes",
            path.display(),
            bytes.len(),
            cmdb_core::policy::MAX_POLICY_BYTES
        );
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

async fn policy_command(data: &DataDir, command: PolicySubcommand) -> anyhow::Result<ExitCode> {
    use cmdb_core::policy;
    match command {
        PolicySubcommand::Load { file, name } => {
            let text = read_policy_file(&file)?;
            let name = name.unwrap_or_else(|| {
                file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "policy".into())
            });
            let store = open_existing(data, false).await?;
            let command = policy::LoadPolicy { name, text, local_operator: true };
            let result =
                run_offline(store.as_ref(), &policy::PolicyDecider, &command, cli_metadata(), SystemClock.now()).await;
            store.shutdown().await;
            let executed = result?;
            let outcome = executed.outcome;
            let loaded = executed.decision.events().next().map(|(_, e)| e.clone()).context("nothing loaded")?;
            say!(
                "loaded policy version {} ({:?}, blake3 {}) at position {}",
                loaded.version,
                loaded.name,
                loaded.hash.to_hex(),
                outcome.last_position
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicySubcommand::Show { version } => {
            let store = open_existing(data, false).await?;
            let state = policy::load(store.as_ref()).await;
            store.shutdown().await;
            let state = state?;
            let record = match version {
                Some(v) => state.version(v)?,
                None => state.in_force(),
            };
            say!(
                "# policy version {} {:?}, blake3 {}, loaded by {}{}",
                record.version,
                record.name,
                record.hash.to_hex(),
                record.by,
                record.loaded_at.map(|t| format!(" at {t}")).unwrap_or_else(|| " (built in)".into())
            );
            print!("{}", record.text);
            Ok(ExitCode::SUCCESS)
        }
        PolicySubcommand::Test { file, tests } => {
            let text = read_policy_file(&file)?;
            policy::Policy::compile(&text)?;
            say!("{}: compiles, calls no forbidden built-in, decides well-formed on the sample inputs", file.display());
            let Some(tests) = tests else { return Ok(ExitCode::SUCCESS) };
            let results = policy::run_tests(&text, &read_policy_file(&tests)?)?;
            let failed = results.iter().filter(|(_, passed)| !passed).count();
            for (name, passed) in &results {
                say!("{} {name}", if *passed { "PASS" } else { "FAIL" });
            }
            say!("{} tests, {} failed", results.len(), failed);
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

async fn explain_change(data: &DataDir, text: &str, json: bool) -> anyhow::Result<ExitCode> {
    use cmdb_core::policy;
    let store = open_existing(data, false).await?;
    let result = async {
        let id = text.parse::<ChangeRef>()?.resolve(store.as_ref()).await?;
        let change = crate::app::changes::load(store.as_ref(), id).await?;
        let policies = policy::load(store.as_ref()).await?;
        anyhow::Ok((change, policies))
    }
    .await;
    store.shutdown().await;
    let (change, policies) = result?;
    let mut mismatches = 0;
    let mut rows = Vec::new();
    if !json {
        say!("{}  {}  {}  {}", change.label(), change.change_type, change.state, change.details.title);
        if change.assessments.is_empty() {
            say!("  no assessment or policy decision on record");
        }
    }
    for (n, entry) in change.assessments.iter().enumerate() {
        let decision = &entry.decision;
        let replay = policies.version(decision.policy_version).map(|record| policy::replay(decision, &record));
        let matches = replay.as_ref().is_ok_and(|r| r.matches);
        if !matches {
            mismatches += 1;
        }
        if json {
            rows.push(explained_json(entry, &replay));
        } else {
            print_explained(n, entry, &replay)?;
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "change": change.label(), "assessments": rows, "mismatches": mismatches })
            )?
        );
    } else if mismatches > 0 {
        eprintln!(
            "cmdb: {mismatches} recorded decision(s) of {} did NOT replay to the recorded answer",
            change.label()
        );
    }
    Ok(if mismatches == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One recorded decision and its replay, as JSON.
fn explained_json(
    entry: &cmdb_core::change::AssessmentEntry,
    replay: &Result<cmdb_core::policy::Replay, cmdb_core::policy::PolicyError>,
) -> serde_json::Value {
    let decision = &entry.decision;
    serde_json::json!({
        "assessment": entry.assessment,
        "by": entry.by,
        "trigger": entry.trigger.as_str(),
        "position": entry.at.position,
        "recorded_at": entry.at.recorded_at,
        "decision": {
            "policy_version": decision.policy_version,
            "policy_hash": decision.policy_hash.to_hex(),
            "regorus_version": decision.regorus_version,
            "input": serde_json::from_str::<serde_json::Value>(&decision.input).unwrap_or_default(),
            "output": decision.output,
        },
        "replay": match &replay {
            Ok(r) => serde_json::json!({
                "matches": r.matches, "policy_intact": r.policy_intact, "regorus_differs": r.regorus_differs,
                "output": r.output.as_ref().ok(), "error": r.output.as_ref().err().map(|e| e.to_string()),
            }),
            Err(e) => serde_json::json!({ "matches": false, "error": e.to_string() }),
        },
    })
}

/// One recorded decision and its replay, for people.
fn print_explained(
    n: usize,
    entry: &cmdb_core::change::AssessmentEntry,
    replay: &Result<cmdb_core::policy::Replay, cmdb_core::policy::PolicyError>,
) -> anyhow::Result<()> {
    let decision = &entry.decision;
    let a = &entry.assessment;
    say!(
        "\n  assessment {} ({}) by {} at position {}: risk {} ({} points), facts computed at position {}",
        n + 1,
        entry.trigger,
        entry.by,
        entry.at.position,
        a.level.as_str(),
        a.score,
        a.facts.position
    );
    for f in &a.factors {
        say!("    {:>3}  {:<16} {}", f.points, f.name, f.why);
    }
    say!(
        "  decision: policy v{} (blake3 {}), regorus {}",
        decision.policy_version,
        decision.policy_hash.to_hex(),
        decision.regorus_version
    );
    say!("    input:  {}", decision.input);
    say!("    output: {}", serde_json::to_string(&decision.output)?);
    match &replay {
        Ok(r) if r.matches => say!(
            "    replay: MATCHES{}",
            if r.regorus_differs { " (decided with another regorus release)" } else { "" }
        ),
        Ok(r) => {
            say!("    replay: MISMATCH");
            if !r.policy_intact {
                say!(
                    "      the policy text of version {} no longer hashes to the recorded hash",
                    decision.policy_version
                );
            }
            match &r.output {
                Ok(output) => say!("      replayed output: {}", serde_json::to_string(output)?),
                Err(e) => say!("      replay failed: {e}"),
            }
        }
        Err(e) => say!("    replay: MISMATCH: {e}"),
    }
    Ok(())
}

/// Writes an interval that has not ended (`to` at the graph's `OPEN` marker) as `null`, as
/// the GraphQL API does, instead of 18446744073709551615.
fn open_ends_as_null(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if name == "to" && field.as_u64() == Some(cmdb_projections::graph::OPEN) {
                    *field = serde_json::Value::Null;
                } else {
                    open_ends_as_null(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(open_ends_as_null),
        _ => {}
    }
}

async fn overdue_changes(data: &DataDir, json: bool) -> anyhow::Result<ExitCode> {
    let (store, handle) = load_graph(data).await?;
    let listed: Vec<(String, String, Vec<cmdb_core::change::Overdue>)> = {
        let graph = handle.read();
        graph
            .change_book()
            .overdue_at(graph.applied(), cmdb_core::Clock::now(&SystemClock))
            .into_iter()
            .map(|(change, overdue)| (change.label(), change.details.title.clone(), overdue))
            .collect()
    };
    store.shutdown().await;
    if json {
        let rows: Vec<serde_json::Value> = listed
            .iter()
            .map(|(label, title, overdue)| serde_json::json!({ "change": label, "title": title, "overdue": overdue }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if listed.is_empty() {
        say!("no emergency change is overdue");
    } else {
        for (label, title, overdue) in &listed {
            let what: Vec<String> = overdue.iter().map(|o| format!("{o:?}").to_lowercase()).collect();
            say!("{label}  {title}  overdue: {}", what.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn load_fixtures(data: &DataDir, size: &str, seed: u64, history_days: u32) -> anyhow::Result<ExitCode> {
    let data_dir = data.data_dir.as_path();
    use cmdb_core::Clock;
    let size: cmdb_fixtures::EstateSize = size.parse()?;
    let store = open_location(&data.location()?, true).await?.as_dyn();
    if store.head().await?.position != 0 {
        store.shutdown().await;
        bail!("{} already holds a log; fixtures load only into an empty data directory", data_dir.display());
    }
    let end = SystemClock.now().saturating_add_micros(-60_000_000);
    let spec = cmdb_fixtures::EstateSpec { size, seed, end, history_days };
    let report = cmdb_fixtures::load_into(store.as_ref(), &spec).await;
    store.shutdown().await;
    let report = report?;
    say!(
        "loaded {} CIs, {} relationships, {} events ({} to {}) into {}",
        report.cis,
        report.relationships,
        report.events,
        report.first,
        report.last,
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The actor of commands run from this shell.
fn cli_metadata() -> Metadata {
    Metadata::new(Actor::principal(crate::local::local_principal()), Source::Cli)
        .with_correlation_id(uuid::Uuid::now_v7().to_string())
}

/// Runs an access command on the data directory, then makes sure a server running on it has
/// applied the change before returning.
async fn execute_access(data: &DataDir, command: AccessCommand) -> anyhow::Result<u64> {
    let data_dir = data.data_dir.as_path();
    // Access may be set up before the first `serve` (then no bootstrap admin is made), so
    // these commands create the log if there is none.
    let store = open_location(&data.location()?, true).await?.as_dyn();
    let outcome = run_offline(store.as_ref(), &AccessDecider, &command, cli_metadata(), SystemClock.now()).await;
    store.shutdown().await;
    let position = outcome?.outcome.last_position;
    crate::local::notify_server(data_dir, position).await?;
    Ok(position)
}

fn parse_roles(roles: &[String]) -> anyhow::Result<BTreeSet<Role>> {
    Ok(roles.iter().map(|r| r.parse::<Role>()).collect::<Result<_, _>>()?)
}

async fn principal(data: &DataDir, command: PrincipalSubcommand) -> anyhow::Result<ExitCode> {
    match command {
        PrincipalSubcommand::Create { name, kind, roles, display_name } => {
            let kind: PrincipalKind = kind.parse()?;
            let roles = parse_roles(&roles)?;
            let listed = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
            let position =
                execute_access(data, AccessCommand::CreatePrincipal { name: name.clone(), kind, display_name, roles })
                    .await?;
            say!("created {kind} principal {name} with roles [{listed}] (position {position})");
        }
        PrincipalSubcommand::Grant { name, role } => {
            let role: Role = role.parse()?;
            let position = execute_access(data, AccessCommand::GrantRole { name: name.clone(), role }).await?;
            say!("granted {role} to {name} (position {position})");
        }
        PrincipalSubcommand::RevokeRole { name, role } => {
            let role: Role = role.parse()?;
            let position = execute_access(data, AccessCommand::RevokeRole { name: name.clone(), role }).await?;
            say!("revoked {role} from {name} (position {position})");
        }
        PrincipalSubcommand::List => {
            let store = open_existing(data, true).await?;
            let state = access::load_state(store.as_ref()).await;
            store.shutdown().await;
            let state = state?;
            say!("{:<32} {:<8} ROLES", "NAME", "KIND");
            for principal in state.principals.values() {
                let roles = principal.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
                say!("{:<32} {:<8} {roles}", principal.name, principal.kind.to_string());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(data: &DataDir, command: TokenSubcommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenSubcommand::Create { principal, label, expires_in_days } => {
            let token = crate::server::graphql::new_token_text();
            let token_id = UuidV7Ids.next_id();
            let expires_at = expires_in_days.map(|days| {
                use cmdb_core::Clock;
                SystemClock.now().saturating_add_micros(i64::from(days) * 86_400 * 1_000_000)
            });
            let command = AccessCommand::IssueToken {
                principal: principal.clone(),
                token_id,
                token_hash: token_hash(&token),
                label,
                expires_at,
            };
            execute_access(data, command).await?;
            eprintln!("token {token_id} for {principal}; it is shown once:");
            say!("{token}");
        }
        TokenSubcommand::Revoke { token_id, reason } => {
            let token_id = uuid::Uuid::parse_str(&token_id)
                .map_err(|_| anyhow::anyhow!("{token_id:?} is not a token id (a UUID, as `cmdb token list` shows)"))?;
            let position = execute_access(data, AccessCommand::RevokeToken { token_id, reason }).await?;
            say!("revoked token {token_id} (position {position}); refused from now on");
        }
        TokenSubcommand::List { principal } => {
            let store = open_existing(data, true).await?;
            let state = access::load_state(store.as_ref()).await;
            store.shutdown().await;
            let state = state?;
            if let Some(name) = &principal
                && !state.principals.contains_key(name)
            {
                bail!("no principal named {name:?}");
            }
            use cmdb_core::Clock;
            let now = SystemClock.now();
            say!("{:<36} {:<24} {:<8} {:<27} LABEL", "TOKEN ID", "PRINCIPAL", "STATE", "EXPIRES");
            for token in state.tokens.values().filter(|t| principal.as_ref().is_none_or(|p| *p == t.principal)) {
                let status = if token.revoked_at.is_some() {
                    "revoked"
                } else if token.is_live(now) {
                    "live"
                } else {
                    "expired"
                };
                let expires = token.expires_at.map_or("never".to_owned(), |t| t.to_rfc3339());
                say!(
                    "{:<36} {:<24} {:<8} {:<27} {}",
                    token.token_id,
                    token.principal,
                    status,
                    expires,
                    token.label.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_takes_a_position_or_a_time() {
        assert_eq!(parse_as_of("42").expect("position"), AsOf::Position(42));
        assert!(matches!(parse_as_of("2026-11-25T14:02:00Z").expect("time"), AsOf::Time(_)));
        let error = parse_as_of("last tuesday").expect_err("neither");
        assert!(error.to_string().contains("RFC 3339"));
        assert!(parse_as_of("-1").is_err());
    }

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

#[cfg(test)]
mod terminal_tests {
    #[test]
    fn control_characters_from_input_are_shown_escaped() {
        let forged = "title\nCHAIN BROKEN at position 1\r\u{1b}[2J";
        let shown = super::terminal_safe(forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "title\\nCHAIN BROKEN at position 1\\r\\u{1b}[2J");
        assert_eq!(super::terminal_safe("plain ünïcode"), "plain ünïcode");
    }
}
