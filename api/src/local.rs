//! What offline CLI commands share: who the shell acts as, and telling a server running on the
//! same data directory to catch up with what they wrote.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use crate::server::running_server;

/// How long a CLI command waits for a running server to apply its change.
const SERVER_NOTIFY_TIMEOUT_MS: u64 = 10_000;

/// The principal of commands run from this shell.
pub(crate) fn local_principal() -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into());
    format!("local:{user}")
}

/// Asks a server running on this data directory to apply the log up to `position`.
pub(crate) async fn notify_server(data_dir: &Path, position: u64) -> anyhow::Result<()> {
    let Some(server) = running_server(data_dir) else { return Ok(()) };
    let url = format!("http://{}/readyz?minPosition={position}", server.address);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(SERVER_NOTIFY_TIMEOUT_MS)).build()?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => bail!(
            "the change is recorded at position {position}, but the server at {} has not applied it: {}",
            server.address,
            response.text().await.unwrap_or_default()
        ),
        // A stale server file: nothing is listening, so nothing can be out of date.
        Err(error) if error.is_connect() => Ok(()),
        Err(error) => bail!(
            "the change is recorded at position {position}, but the server at {} did not answer: {error}",
            server.address
        ),
    }
}
