//! Evidence for auditors (RC-1, CM-4): signing checkpoints of the Merkle tree and recording
//! them, on a schedule and on request, and the signing key's file.
//!
//! The tree itself is the `evidence` projection (`cmdb_projections::evidence`); this module
//! reads its root at its current size, signs the C2SP checkpoint with the key (which never
//! enters the log) and records the signed note through `EvidenceDecider`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cmdb_core::evidence::{EvidenceDecider, EvidenceError, RecordCheckpoint};
use cmdb_core::merkle::ProofError;
use cmdb_core::note::{Checkpoint, NoteError, NoteSigner};
use cmdb_core::{Actor, Metadata, Source};
use cmdb_projections::evidence::{EvidenceLog, RecordedCheckpoint};
use cmdb_projections::runner::ProjectionHandle;
use tokio_util::sync::CancellationToken;

use super::{App, AppError};

/// Longest key file read, in bytes (a key string is about 100).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;
/// How often the signer looks whether a checkpoint is due, at most, in milliseconds.
const SIGNER_POLL_MS: u64 = 1000;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum KeyFileError {
    #[error("cannot read the signing key {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("the signing key {path} is not a key: {source}")]
    Parse { path: String, source: NoteError },
    #[error("{path} exists; a key is never overwritten (remove it first if you mean to)")]
    Exists { path: String },
}

/// Reads a signing key written by `cmdb key create`.
pub fn read_key_file(path: &Path) -> Result<NoteSigner, KeyFileError> {
    let shown = path.display().to_string();
    let read_error = |detail: String| KeyFileError::Read { path: shown.clone(), detail };
    let size = std::fs::metadata(path).map_err(|e| read_error(e.to_string()))?.len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(read_error(format!("{size} bytes; a key file is at most {MAX_KEY_FILE_BYTES}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
    NoteSigner::parse(&text).map_err(|source| KeyFileError::Parse { path: shown, source })
}

/// Writes a new key to `path` (never over an existing file), readable by its owner only.
pub fn create_key_file(path: &Path, signer: &NoteSigner) -> Result<(), KeyFileError> {
    use std::io::Write;
    let shown = path.display().to_string();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyFileError::Exists { path: shown.clone() },
        _ => KeyFileError::Read { path: shown.clone(), detail: e.to_string() },
    })?;
    writeln!(file, "{}", signer.private_key_string())
        .and_then(|()| file.sync_all())
        .map_err(|e| KeyFileError::Read { path: shown, detail: e.to_string() })
}

/// A new key named `origin` from the operating system's randomness.
pub fn generate_key(origin: &str) -> Result<NoteSigner, NoteError> {
    let seed: [u8; 32] = rand::random();
    NoteSigner::generate(origin, seed)
}

/// The tree, the checkpoints and the key that signs them.
#[derive(Clone)]
pub struct Evidence {
    /// The Merkle tree and the recorded checkpoints, following the log.
    pub log: ProjectionHandle<EvidenceLog>,
    signer: Option<Arc<NoteSigner>>,
}

/// Why no checkpoint could be signed now.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum SignError {
    #[error("no signing key is configured (start the server with --signing-key; see `cmdb key create`)")]
    NoSigningKey,
    #[error("the log is empty: there is nothing to sign")]
    EmptyLog,
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

impl Evidence {
    /// Over a running projection, with or without a key.
    pub fn new(log: ProjectionHandle<EvidenceLog>, signer: Option<NoteSigner>) -> Evidence {
        Evidence { log, signer: signer.map(Arc::new) }
    }

    /// The signing key's verifier string, if a key is configured.
    pub fn verifier(&self) -> Option<String> {
        self.signer.as_ref().map(|s| s.verifier().to_string())
    }

    /// Signs and records a checkpoint of the whole tree now, unless the newest one already
    /// covers every event but checkpoint records; answers the checkpoint in force either way.
    pub async fn sign_now(&self, app: &App, metadata: Metadata) -> Result<RecordedCheckpoint, SignError> {
        let signer = self.signer.clone().ok_or(SignError::NoSigningKey)?;
        // The tree must hold what the log holds now, or the checkpoint would lag the answer.
        let head = app.store.head().await.map_err(|e| AppError::Core(e.into()))?.position;
        self.wait_for(head, app).await?;
        let (size, root, current) = {
            let log = self.log.read();
            let current = log.latest_checkpoint().filter(|_| log.uncovered_events() == 0).cloned();
            (log.size(), log.root(log.size())?, current)
        };
        if let Some(current) = current {
            return Ok(current);
        }
        if size == 0 {
            return Err(SignError::EmptyLog);
        }
        let checkpoint = Checkpoint { origin: signer.name().to_owned(), size, root };
        let note = signer.sign(&checkpoint.text()).map_err(|e| AppError::Core(EvidenceError::Note(e).into()))?;
        let command = RecordCheckpoint { note, verifier: signer.verifier() };
        let written = match app.run(&EvidenceDecider, &command, metadata).await {
            Ok(executed) => executed.outcome.last_position,
            // Another signer (a second server on a shared log) recorded a newer one first.
            Err(AppError::Core(cmdb_core::Error::Evidence(EvidenceError::NotNewer { .. }))) => {
                app.store.head().await.map_err(|e| AppError::Core(e.into()))?.position
            }
            Err(error) => return Err(error.into()),
        };
        self.wait_for(written, app).await?;
        let log = self.log.read();
        log.latest_checkpoint().cloned().ok_or(SignError::EmptyLog)
    }

    async fn wait_for(&self, position: u64, app: &App) -> Result<(), AppError> {
        if self.log.wait_for(position, app.settings.apply_wait).await {
            Ok(())
        } else {
            let waited_ms = u64::try_from(app.settings.apply_wait.as_millis()).unwrap_or(u64::MAX);
            Err(AppError::NotYetApplied { position, model: "evidence", waited_ms })
        }
    }
}

/// Signs a checkpoint whenever `every_events` events are uncovered, or `every_ms` passed since
/// the last one and any event is uncovered; until `shutdown`.
pub async fn signer_loop(
    evidence: Evidence,
    app: Arc<App>,
    every_events: u64,
    every_ms: u64,
    shutdown: CancellationToken,
) {
    if evidence.signer.is_none() {
        return;
    }
    let mut last_signed = tokio::time::Instant::now();
    let mut applied = evidence.log.subscribe_applied();
    let poll = Duration::from_millis(SIGNER_POLL_MS.min(every_ms.max(1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = applied.changed() => {
                if changed.is_err() {
                    // The projection stopped: look again at the poll's pace, not in a spin.
                    tokio::time::sleep(poll).await;
                }
            }
            () = tokio::time::sleep(poll) => {}
        }
        let uncovered = evidence.log.read().uncovered_events();
        let due =
            uncovered >= every_events || (uncovered > 0 && last_signed.elapsed() >= Duration::from_millis(every_ms));
        if !due {
            continue;
        }
        let metadata = Metadata::new(Actor::system(), Source::System);
        match evidence.sign_now(&app, metadata).await {
            Ok(checkpoint) => {
                tracing::info!(size = checkpoint.signed.size, position = checkpoint.position, "checkpoint signed");
                last_signed = tokio::time::Instant::now();
            }
            Err(error) => {
                tracing::warn!(%error, "could not sign a checkpoint; will retry");
                tokio::time::sleep(Duration::from_millis(SIGNER_POLL_MS)).await;
            }
        }
    }
}
