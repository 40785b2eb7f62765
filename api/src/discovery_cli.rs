//! `cmdb import` and `cmdb audit` (issue 17, parts 4 and 5): import a discovery source into
//! the data directory, print the configuration audit, and apply it under standard changes
//! with `--apply`. `cmdb audit` exits 1 when a finding is unauthorised (for a nightly job).
//! Both write to the log directly, as the other offline commands do, then tell a server
//! running on the same data directory to catch up.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use cmdb_core::access::{AccessCommand, PrincipalKind, Role};
use cmdb_core::discovery::SourceKind;
use cmdb_core::{Actor, Clock, Metadata, Source, SystemClock};
use serde_json::json;

use crate::app::discovery::{ImportReport, ImportRequest, Opener};
use crate::app::{App, AppSettings, access_view::AccessView};
use crate::settings::ServeSettings;

/// The principal `cmdb import` acts as.
pub const DISCOVERY_PRINCIPAL: &str = "discovery";

/// Most findings printed as text (every one is in `--json` and in GraphQL).
pub const MAX_FINDINGS_PRINTED: usize = 200;

/// `cmdb import SOURCE FILE`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// terraform, kubernetes, cyclonedx or netbox.
    pub source: String,
    /// The file (a state, manifests or a kubectl JSON list, a CycloneDX JSON SBOM, a NetBox export).
    pub file: PathBuf,
    /// Make the CMDB match what was observed, under standard changes from a discovery template.
    #[arg(long)]
    pub apply: bool,
    /// What the file covers (default: the state's lineage, the SBOM's product, else "default").
    #[arg(long)]
    pub scope: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cmdb audit --source S FILE`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// terraform, kubernetes, cyclonedx or netbox.
    #[arg(long)]
    pub source: String,
    /// The file.
    pub file: PathBuf,
    /// What the file covers (as for `import`).
    #[arg(long)]
    pub scope: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn opener(path: &Path) -> anyhow::Result<Opener> {
    if !path.is_file() {
        anyhow::bail!("{} is not a file", path.display());
    }
    let path = path.to_owned();
    Ok(Arc::new(move || {
        let file = std::fs::File::open(&path)?;
        Ok(Box::new(BufReader::with_capacity(256 * 1024, file)) as Box<dyn std::io::BufRead + Send>)
    }))
}

/// Runs `cmdb import`.
pub async fn import(data: &crate::settings::DataDir, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let report = run(data, &args.source, &args.file, args.scope, args.apply).await?;
    print(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cmdb audit`: exit 1 when a finding is unauthorised.
pub async fn audit(data: &crate::settings::DataDir, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let report = run(data, &args.source, &args.file, args.scope, false).await?;
    print(&report, args.json)?;
    Ok(if report.counts.unauthorised > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn run(
    data: &crate::settings::DataDir,
    source: &str,
    file: &Path,
    scope: Option<String>,
    apply: bool,
) -> anyhow::Result<ImportReport> {
    let source = SourceKind::parse(source)?;
    let open = opener(file)?;
    let label = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let store = crate::opening::open_location(&data.location()?, true).await?.as_dyn();
    let options = cmdb_projections::runner::RunnerOptions {
        checkpoint_dir: Some(data.data_dir.join(crate::server::PROJECTIONS_DIR)),
        checkpoint_interval_ms: 3_600_000,
        ..Default::default()
    };
    let graph = cmdb_projections::runner::start(store.clone(), options).await?;
    let access = AccessView::start(store.clone()).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings: AppSettings = crate::server::app_settings(&ServeSettings::default());
    let app = App::new(store.clone(), graph, access, clock, settings);
    ensure_principal(&app).await?;
    let metadata = Metadata::new(Actor::principal(DISCOVERY_PRINCIPAL), Source::Cli)
        .with_correlation_id(uuid::Uuid::now_v7().to_string());
    let request = ImportRequest { source, open, file: label, scope, apply };
    let outcome = app.import(request, metadata).await;
    let head = store.head().await.map(|h| h.position).unwrap_or(0);
    store.shutdown().await;
    let report = outcome.with_context(|| format!("importing {} as {source}", file.display()))?;
    crate::local::notify_server(&data.data_dir, head).await?;
    Ok(report)
}

/// Creates the discovery principal the first time: a system holding `editor` (to raise,
/// implement and edit under standard changes) and `change-manager` (to create the discovery
/// template). The shell running this has the data directory, so it may (as `cmdb principal`).
async fn ensure_principal(app: &App) -> anyhow::Result<()> {
    if app.access.snapshot().principals.contains_key(DISCOVERY_PRINCIPAL) {
        return Ok(());
    }
    let command = AccessCommand::CreatePrincipal {
        name: DISCOVERY_PRINCIPAL.into(),
        kind: PrincipalKind::System,
        display_name: Some("Discovery imports (cmdb import)".into()),
        roles: [Role::Editor, Role::ChangeManager].into_iter().collect(),
    };
    let metadata = Metadata::new(Actor::principal(crate::local::local_principal()), Source::Cli);
    app.access(&command, metadata).await?;
    Ok(())
}

fn print(report: &ImportReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let applied = report.applied.as_ref().map(|a| {
            json!({
                "changes": a.changes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "registered": a.registered, "updated": a.updated, "withdrawn": a.withdrawn,
                "related": a.related, "unrelated": a.unrelated, "skipped": a.skipped,
                "auditAfter": a.audit_after.as_ref().map(|(id, counts)| json!({"id": id.to_string(), "counts": counts})),
            })
        });
        let value = json!({
            "run": report.run.to_string(), "scope": report.scope, "finishedAt": report.finished_at,
            "items": report.items, "relationships": report.relationships, "unmapped": report.unmapped,
            "danglingRelationships": report.dangling_relationships, "droppedValues": report.dropped_values,
            "audit": {"id": report.audit.to_string(), "counts": report.counts, "findings": report.findings},
            "applied": applied,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "run {} (scope {}): {} items, {} relationships recorded at position {}",
        report.run, report.scope, report.items, report.relationships, report.finished_at
    );
    if !report.unmapped.is_empty() {
        let list: Vec<String> = report.unmapped.iter().map(|(t, n)| format!("{t} {n}")).collect();
        println!("not mapped (no rule): {}", list.join(", "));
    }
    if report.dangling_relationships > 0 {
        println!("{} relationships name items the file does not hold", report.dangling_relationships);
    }
    let c = &report.counts;
    println!(
        "audit {}: {} not in the CMDB, {} no longer observed, {} attribute drifts, {} relationship drifts; {} unauthorised",
        report.audit, c.not_in_cmdb, c.not_observed, c.attribute_drift, c.relationship_drift, c.unauthorised
    );
    for finding in report.findings.iter().take(MAX_FINDINGS_PRINTED) {
        let authority =
            finding.authorised_by_label.as_deref().map_or("UNAUTHORISED".to_owned(), |l| format!("authorised by {l}"));
        let detail = match (&finding.attribute, &finding.relationship) {
            (Some(attribute), _) => format!(
                " {attribute}: {} -> {}",
                finding.recorded.as_ref().map_or("(none)".into(), ToString::to_string),
                finding.observed.as_ref().map_or("(none)".into(), ToString::to_string)
            ),
            (None, Some((rel_type, other))) => {
                let side = if finding.observed.is_some() { "observed, not recorded" } else { "recorded, not observed" };
                format!(" {rel_type} -> {other} ({side})")
            }
            _ => String::new(),
        };
        println!("  {:?} {} {:?}{detail} [{authority}]", finding.kind, finding.class, finding.name);
    }
    if report.findings.len() > MAX_FINDINGS_PRINTED {
        println!("  ... {} more (use --json)", report.findings.len() - MAX_FINDINGS_PRINTED);
    }
    if let Some(applied) = &report.applied {
        println!(
            "applied under {} change(s): {} registered, {} updated, {} withdrawn, {} related, {} unrelated",
            applied.changes.len(),
            applied.registered,
            applied.updated,
            applied.withdrawn,
            applied.related,
            applied.unrelated
        );
        for skipped in &applied.skipped {
            println!("  skipped: {skipped}");
        }
        if let Some((audit, counts)) = &applied.audit_after {
            println!("audit {audit} after applying: {} findings, {} unauthorised", counts.total(), counts.unauthorised);
        }
    }
    Ok(())
}
