//! `cmdb key` and `cmdb proof` (issue 18): the checkpoint signing key, and proofs an auditor
//! checks without the log.
//!
//! - `cmdb key create --name ORIGIN --out FILE` writes a new Ed25519 key (owner-readable only,
//!   never over an existing file) and prints its verifier string, the one thing to publish.
//! - `cmdb proof inclusion --position P` / `cmdb proof consistency --from N` print a proof as
//!   JSON, read from the data directory (the tree's checkpoint, so no full read of the log),
//!   with the signed checkpoint of the tree it is for when one was recorded, and for
//!   inclusion the event itself as `cmdb export` writes it.
//! - `cmdb proof verify --key VERIFIER --proof FILE [--checkpoint FILE] [--old-checkpoint FILE]`
//!   checks a proof against signed checkpoints and the public key alone: exit 0 verified,
//!   1 not verified (the reason on standard error), 2 bad input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use cmdb_core::chain::{ChainFields, event_hash};
use cmdb_core::merkle::{self, MAX_PROOF_HASHES, TreeHash};
use cmdb_core::note::{Checkpoint, MAX_NOTE_BYTES, NoteVerifier};
use cmdb_core::{Hash, Metadata, Timestamp};
use cmdb_projections::evidence::EvidenceLog;
use serde::{Deserialize, Serialize};

use crate::app::evidence::{create_key_file, generate_key};
use crate::settings::DataDir;

/// Largest proof file `cmdb proof verify` reads, in bytes (an inclusion proof with its event
/// is a few kilobytes; events are bounded by the store).
pub const MAX_PROOF_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// `cmdb key ...`.
#[derive(Debug, Subcommand)]
pub enum KeySubcommand {
    /// Create a checkpoint signing key; prints the verifier string to publish.
    Create {
        /// The log's name, which every checkpoint names as its origin: a schema-less URL that
        /// is yours, e.g. cmdb.example.com/production.
        #[arg(long)]
        name: String,
        /// The key file to create (must not exist); give it to `cmdb serve --signing-key`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the verifier string of an existing key file.
    Verifier {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
}

/// `cmdb proof ...`.
#[derive(Debug, Subcommand)]
pub enum ProofSubcommand {
    /// Print the proof that the event at a position is in the log's tree.
    Inclusion {
        /// The event's position.
        #[arg(long)]
        position: u64,
        /// The tree (default: the newest signed checkpoint's, else the whole log).
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Print the proof that the tree of --from events is a prefix of the tree of --to.
    Consistency {
        /// The older tree size.
        #[arg(long)]
        from: u64,
        /// The newer tree size (default: the newest signed checkpoint's, else the whole log).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Check a proof against signed checkpoints and the public key, without the log.
    Verify {
        /// The verifier string (`cmdb key create` printed it), or a file holding it.
        #[arg(long)]
        key: String,
        /// The proof (JSON, as `cmdb proof inclusion|consistency` prints it).
        #[arg(long)]
        proof: PathBuf,
        /// The signed checkpoint of the proof's tree (default: the one inside the proof).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// For a consistency proof: the signed checkpoint of the older tree (default: the one
        /// inside the proof).
        #[arg(long)]
        old_checkpoint: Option<PathBuf>,
    },
}

/// An inclusion proof as a file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionFile {
    /// Always "inclusion".
    pub kind: String,
    /// The event's position (leaf index + 1).
    pub position: u64,
    /// The tree's size.
    pub tree_size: u64,
    /// The event's chain hash, hex: the leaf's input.
    pub leaf_input: String,
    /// The audit path, base64.
    pub hashes: Vec<TreeHash>,
    /// The signed checkpoint of `tree_size`, if one was recorded.
    pub checkpoint: Option<String>,
    /// The event, as `cmdb export` writes it (kept verbatim: its payload's bytes are hashed).
    pub event: Option<Box<serde_json::value::RawValue>>,
}

/// A consistency proof as a file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyFile {
    /// Always "consistency".
    pub kind: String,
    /// The older tree's size.
    pub from_size: u64,
    /// The newer tree's size.
    pub to_size: u64,
    /// The proof, base64.
    pub hashes: Vec<TreeHash>,
    /// The signed checkpoint of `from_size`, if one was recorded.
    pub from_checkpoint: Option<String>,
    /// The signed checkpoint of `to_size`, if one was recorded.
    pub to_checkpoint: Option<String>,
}

/// `cmdb key ...`.
pub fn key(command: KeySubcommand) -> anyhow::Result<ExitCode> {
    match command {
        KeySubcommand::Create { name, out } => {
            let key = generate_key(&name)?;
            create_key_file(&out, &key)?;
            eprintln!(
                "wrote {} (keep it outside the data directory's backups; only its owner may read it)",
                out.display()
            );
            println!("{}", key.verifier());
        }
        KeySubcommand::Verifier { key } => {
            println!("{}", crate::app::evidence::read_key_file(&key)?.verifier());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cmdb proof ...`.
pub async fn proof(data: &DataDir, command: ProofSubcommand) -> anyhow::Result<ExitCode> {
    match command {
        ProofSubcommand::Inclusion { position, tree_size } => {
            let (store, log) = load_tree(data).await?;
            let record = store.event_at(position).await?;
            let file = {
                let log = log.read();
                let size = tree_size.unwrap_or_else(|| log.default_proof_size());
                let Some(record) = record.filter(|_| position >= 1 && position <= size) else {
                    bail!("position {position} is not in a tree of {size} events (positions start at 1)");
                };
                let hashes = log.tree().inclusion_proof(position - 1, size)?;
                InclusionFile {
                    kind: "inclusion".into(),
                    position,
                    tree_size: size,
                    leaf_input: record.hash.to_hex(),
                    hashes,
                    checkpoint: log.checkpoint_of_size(size).map(|c| c.signed.note.clone()),
                    event: Some(serde_json::value::RawValue::from_string(crate::local::export_line(&record)?)?),
                }
            };
            store.shutdown().await;
            println!("{}", serde_json::to_string_pretty(&file)?);
        }
        ProofSubcommand::Consistency { from, to } => {
            let (store, log) = load_tree(data).await?;
            let file = {
                let log = log.read();
                let to = to.unwrap_or_else(|| log.default_proof_size());
                ConsistencyFile {
                    kind: "consistency".into(),
                    from_size: from,
                    to_size: to,
                    hashes: log.tree().consistency_proof(from, to)?,
                    from_checkpoint: log.checkpoint_of_size(from).map(|c| c.signed.note.clone()),
                    to_checkpoint: log.checkpoint_of_size(to).map(|c| c.signed.note.clone()),
                }
            };
            store.shutdown().await;
            println!("{}", serde_json::to_string_pretty(&file)?);
        }
        ProofSubcommand::Verify { key, proof, checkpoint, old_checkpoint } => {
            let inputs = VerifyInputs::read(&key, &proof, checkpoint.as_deref(), old_checkpoint.as_deref())?;
            return Ok(match inputs.verify() {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(reason) => {
                    eprintln!("NOT VERIFIED: {reason}");
                    ExitCode::from(1)
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn load_tree(
    data: &DataDir,
) -> anyhow::Result<(std::sync::Arc<dyn cmdb_core::EventStore>, cmdb_projections::runner::ProjectionHandle<EvidenceLog>)>
{
    let store = crate::local::open_existing(data, true).await?;
    let options = cmdb_projections::runner::RunnerOptions {
        checkpoint_dir: Some(data.data_dir.join(crate::server::PROJECTIONS_DIR)),
        checkpoint_interval_ms: 3_600_000,
        ..Default::default()
    };
    let log = cmdb_projections::runner::start(store.clone(), options).await?;
    Ok((store, log))
}

/// Everything `cmdb proof verify` reads, parsed: a bad input is an error (exit 2), a proof that
/// does not hold is a verdict (exit 1).
pub struct VerifyInputs {
    verifier: NoteVerifier,
    proof: ProofFile,
    checkpoint: Option<String>,
    old_checkpoint: Option<String>,
}

/// Either proof.
pub enum ProofFile {
    /// An inclusion proof.
    Inclusion(InclusionFile),
    /// A consistency proof.
    Consistency(ConsistencyFile),
}

fn read_bounded(path: &Path, bound: u64, what: &str) -> anyhow::Result<String> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read the {what} {}", path.display()))?.len();
    if size > bound {
        bail!("the {what} {} is {size} bytes; the bound is {bound}", path.display());
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

impl VerifyInputs {
    /// Reads and parses the inputs.
    pub fn read(key: &str, proof: &Path, checkpoint: Option<&Path>, old: Option<&Path>) -> anyhow::Result<Self> {
        let key_text = if Path::new(key).is_file() {
            read_bounded(Path::new(key), crate::app::evidence::MAX_KEY_FILE_BYTES, "key")?
        } else {
            key.to_owned()
        };
        let verifier = NoteVerifier::parse(key_text.trim()).context("--key")?;
        let text = read_bounded(proof, MAX_PROOF_FILE_BYTES, "proof")?;
        #[derive(Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        // Parsed straight from the text (never through a `Value`): the embedded event's payload
        // must keep its bytes, key order included, to hash back to its chain hash.
        let kind: Kind = serde_json::from_str(&text).context("the proof is not a JSON object")?;
        let proof = match kind.kind.as_deref() {
            Some("inclusion") => ProofFile::Inclusion(serde_json::from_str(&text).context("not an inclusion proof")?),
            Some("consistency") => {
                ProofFile::Consistency(serde_json::from_str(&text).context("not a consistency proof")?)
            }
            _ => bail!("the proof's \"kind\" must be \"inclusion\" or \"consistency\""),
        };
        let hashes = match &proof {
            ProofFile::Inclusion(p) => p.hashes.len(),
            ProofFile::Consistency(p) => p.hashes.len(),
        };
        if hashes > MAX_PROOF_HASHES {
            bail!("the proof has {hashes} hashes; no proof has more than {MAX_PROOF_HASHES}");
        }
        let note = |path: Option<&Path>| path.map(|p| read_bounded(p, MAX_NOTE_BYTES as u64, "checkpoint")).transpose();
        Ok(VerifyInputs { verifier, proof, checkpoint: note(checkpoint)?, old_checkpoint: note(old)? })
    }

    /// The verdict: a one-line summary, or why the proof does not hold.
    pub fn verify(&self) -> Result<String, String> {
        match &self.proof {
            ProofFile::Inclusion(p) => self.verify_inclusion(p),
            ProofFile::Consistency(p) => self.verify_consistency(p),
        }
    }

    fn signed(&self, given: Option<&String>, embedded: Option<&String>, size: u64) -> Result<Checkpoint, String> {
        let note = given.or(embedded).ok_or_else(|| {
            format!("no signed checkpoint of tree size {size}: give one with --checkpoint / --old-checkpoint")
        })?;
        let checkpoint = Checkpoint::verify(note, &self.verifier).map_err(|e| e.to_string())?;
        if checkpoint.size != size {
            return Err(format!("the checkpoint is of tree size {}, the proof of {size}", checkpoint.size));
        }
        Ok(checkpoint)
    }

    fn verify_inclusion(&self, p: &InclusionFile) -> Result<String, String> {
        let checkpoint = self.signed(self.checkpoint.as_ref(), p.checkpoint.as_ref(), p.tree_size)?;
        let chain_hash: Hash = p.leaf_input.parse().map_err(|e: cmdb_core::hash::HashParseError| e.to_string())?;
        if p.position == 0 {
            return Err("positions start at 1".into());
        }
        merkle::verify_inclusion(
            p.position - 1,
            p.tree_size,
            &merkle::leaf_hash(chain_hash.as_bytes()),
            &p.hashes,
            &checkpoint.root,
        )
        .map_err(|e| e.to_string())?;
        let event_note = match &p.event {
            None => String::new(),
            Some(event) => {
                check_event(event, p.position, &chain_hash)?;
                ", and the event's fields hash to that chain hash".to_owned()
            }
        };
        Ok(format!(
            "VERIFIED: the event at position {} (chain hash {}) is in {} at tree size {}{event_note}",
            p.position, p.leaf_input, checkpoint.origin, checkpoint.size
        ))
    }

    fn verify_consistency(&self, p: &ConsistencyFile) -> Result<String, String> {
        let old = self.signed(self.old_checkpoint.as_ref(), p.from_checkpoint.as_ref(), p.from_size)?;
        let new = self.signed(self.checkpoint.as_ref(), p.to_checkpoint.as_ref(), p.to_size)?;
        merkle::verify_consistency(p.from_size, p.to_size, &old.root, &new.root, &p.hashes)
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "VERIFIED: {} only grew from tree size {} to {} (the first {} events are unchanged)",
            new.origin, p.from_size, p.to_size, p.from_size
        ))
    }
}

/// An event as `cmdb export` writes it, read back to recompute its chain hash.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportedEvent<'a> {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u32,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    metadata: Metadata,
    recorded_at: Timestamp,
    prev_hash: String,
    hash: String,
    /// Absent in exports of logs written before salts: chain version 1.
    #[serde(default)]
    seal: Option<cmdb_core::PayloadSeal>,
}

/// Recomputes an exported event's chain hash from its fields and its predecessor's hash.
fn check_event(event: &serde_json::value::RawValue, position: u64, chain_hash: &Hash) -> Result<(), String> {
    // The payload's exact bytes matter: the event is read from its verbatim text.
    let exported: ExportedEvent<'_> =
        serde_json::from_str(event.get()).map_err(|e| format!("the proof's event: {e}"))?;
    let prev: Hash = exported.prev_hash.parse().map_err(|e: cmdb_core::hash::HashParseError| e.to_string())?;
    if exported.position != position || exported.hash != chain_hash.to_hex() {
        return Err("the proof's event is not the event at the proof's position".into());
    }
    let fields = ChainFields {
        position: exported.position,
        stream_id: &exported.stream_id,
        stream_version: exported.stream_version,
        event_id: &exported.event_id,
        event_type: &exported.event_type,
        schema_version: exported.schema_version,
        data: exported.data.get().as_bytes(),
        metadata: (&exported.metadata).into(),
        recorded_at: exported.recorded_at,
        seal: &exported.seal.unwrap_or(cmdb_core::PayloadSeal::Plain),
    };
    let computed = event_hash(&prev, &fields);
    if computed != *chain_hash {
        return Err(format!("the event's fields hash to {computed}, not to the chain hash {chain_hash}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
    use cmdb_core::{Actor, AppendRequest, EventStore, ExpectedVersion, NewEvent, Source, StreamId};

    use super::*;

    #[tokio::test]
    async fn an_exported_event_hashes_back_to_its_chain_hash_and_a_changed_byte_does_not() {
        let store = MemoryStore::new(MemoryOptions::default());
        let mut metadata = Metadata::new(Actor::principal("ann"), Source::Api).with_correlation_id("r-1");
        metadata.occurred_at = Some(Timestamp::from_micros(1_700_000_000_123_456));
        let payload = br#"{"b": 1,   "a": "x\u00e9"}"#.to_vec();
        let request = AppendRequest::single(
            StreamId::new("s-1").expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::raw("thing.done", payload, metadata)],
        );
        store.append(request).await.expect("append");
        let record = store.event_at(1).await.expect("read").expect("event");
        let line = crate::local::export_line(&record).expect("export");
        let raw = serde_json::value::RawValue::from_string(line.clone()).expect("raw");
        check_event(&raw, 1, &record.hash).expect("the exported event hashes to its chain hash");
        let changed = serde_json::value::RawValue::from_string(line.replace("\"b\": 1", "\"b\": 2")).expect("raw");
        assert!(check_event(&changed, 1, &record.hash).is_err());
    }
}
