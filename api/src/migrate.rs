//! `cmdb migrate --from A --to B`: copies a whole log between backends (sqlite:PATH and
//! postgres://...), verbatim: the same positions, stream versions, event ids, times, metadata
//! and payload bytes, hence the same hashes. The target must hold no events (nothing is
//! written into a log that has any). After the copy, the target's chain is verified and its
//! head digest and event count are compared with the source's; any difference fails the
//! command (exit 2) and says where.

use std::process::ExitCode;

use anyhow::{Context, bail};
use cmdb_core::store::location::StoreLocation;
use cmdb_core::{AppendRequest, EventStore};

use crate::opening::open_location;

/// Most events read from the source per page.
const MIGRATE_PAGE_EVENTS: usize = 5_000;

/// Copies the log at `from` into the empty log at `to`, then verifies the copy.
pub async fn migrate(from: &StoreLocation, to: &StoreLocation) -> anyhow::Result<ExitCode> {
    if from == to {
        bail!("--from and --to name the same log ({from}); nothing was copied");
    }
    if let Some(path) = from.sqlite_log_file()
        && !path.is_file()
    {
        bail!("no event log at {} (is --from right?)", path.display());
    }
    let source_store = open_location(from, true).await.context("--from")?;
    let target_store = open_location(to, true).await.context("--to")?;
    let (source, target) = (source_store.as_dyn(), target_store.as_dyn());
    let result = copy_and_check(source.as_ref(), target.as_ref(), from, to).await;
    source_store.shutdown().await;
    target_store.shutdown().await;
    let copied = result?;
    println!(
        "migrated {} events from {from} to {to}; chain verified on the target; head {} on both",
        copied.events_checked, copied.last_good
    );
    Ok(ExitCode::SUCCESS)
}

async fn copy_and_check(
    source: &dyn EventStore,
    target: &dyn EventStore,
    from: &StoreLocation,
    to: &StoreLocation,
) -> anyhow::Result<cmdb_core::chain::VerifyReport> {
    let target_head = target.refresh_head().await?;
    if target_head != 0 {
        bail!(
            "the target {to} already holds {target_head} events; migrate only into an empty log (nothing was changed)"
        );
    }
    let source_head = source.refresh_head().await?;
    let source_digest = source.head().await?;
    let limits = target.limits();
    let page = MIGRATE_PAGE_EVENTS.min(source.limits().max_page_events).min(limits.max_batch_events).max(1);
    let mut after = 0;
    while after < source_head {
        let records = source.read_all(after, page.min((source_head - after) as usize)).await?;
        let Some(last) = records.last() else { break };
        after = last.position;
        for chunk in cmdb_core::store::copy_chunks(&records, &limits) {
            let outcome = target
                .append(AppendRequest::copy_of(chunk))
                .await
                .with_context(|| format!("copying the events from position {}", chunk[0].position))?;
            if outcome.first_position != chunk[0].position {
                bail!(
                    "the target placed position {} at {}; the copy is not verbatim (was the target written meanwhile?)",
                    chunk[0].position,
                    outcome.first_position
                );
            }
        }
        eprint!("\rcopied {after} of {source_head} events");
    }
    eprintln!();
    let report = target.verify().await.context("verifying the target's chain")?;
    if let Some(first_break) = &report.first_break {
        bail!("the copy in {to} does not verify: {first_break}");
    }
    if report.events_checked != source_head || report.last_good != source_digest {
        bail!(
            "the copy differs: {from} has {source_head} events ending {source_digest}; {to} has {} ending {}",
            report.events_checked,
            report.last_good
        );
    }
    Ok(report)
}
