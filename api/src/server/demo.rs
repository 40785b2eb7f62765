//! `cmdb serve --demo`: loads the small demo estate into an empty data directory, starts
//! normally on a directory that already holds it, and refuses any other.

use cmdb_core::{Clock, EventStore};
use cmdb_fixtures::{DEMO_MARKER_TYPE, DemoMarker, EstateSize, EstateSpec, load_into};

use super::StartError;

/// The demo's seed: the same estate every time.
pub const DEMO_SEED: u64 = 20_261_125;
/// How far back the demo's history reaches.
pub const DEMO_HISTORY_DAYS: u32 = 180;

/// Loads the demo estate into an empty log, accepts a log that holds it, refuses any other.
pub async fn prepare(store: &dyn EventStore, clock: &dyn Clock) -> Result<(), StartError> {
    let head = store.head().await.map_err(cmdb_core::Error::from)?.position;
    if head == 0 {
        // End a minute ago so the bulk load is never "in the future" of the store's clock.
        let end = clock.now().saturating_add_micros(-60_000_000);
        let spec = EstateSpec { size: EstateSize::Small, seed: DEMO_SEED, end, history_days: DEMO_HISTORY_DAYS };
        let report = load_into(store, &spec).await.map_err(|e| StartError::Io(format!("cannot load the demo: {e}")))?;
        tracing::info!(
            cis = report.cis,
            relationships = report.relationships,
            events = report.events,
            "loaded the demo estate"
        );
        println!(
            "cmdb: loaded the demo estate: {} CIs, {} relationships, {} events from {} to {}",
            report.cis, report.relationships, report.events, report.first, report.last
        );
        return Ok(());
    }
    let first = store.event_at(1).await.map_err(cmdb_core::Error::from)?;
    let holds_demo = first
        .filter(|e| e.event_type == DEMO_MARKER_TYPE)
        .and_then(|e| e.data_as::<DemoMarker>().ok())
        .is_some_and(|marker| marker.size == EstateSize::Small);
    if holds_demo {
        return Ok(());
    }
    Err(StartError::Settings(
        "--demo needs an empty data directory (or one that already holds the demo); this one holds another log. Start without --demo, or pick another --data-dir".into(),
    ))
}
