//! Signed checkpoints (RC-1, CM-4): the C2SP `tlog-checkpoint` text signed as a C2SP
//! `signed-note` with Ed25519, byte for byte as the Go checksum database, Sigstore and the
//! transparency.dev witnesses write and check them.
//!
//! ```text
//! cmdb.example/log            origin: the log's name (and the signing key's name)
//! 4096                        tree size, decimal
//! 3M3ZqnCE...Q=               root hash, standard base64
//!                             one empty line ends the text
//! — cmdb.example/log Az3grl...  signature line: em dash, key name, base64(key id || signature)
//! ```
//!
//! - Key id: the first 4 bytes of `SHA-256(name || "\n" || 0x01 || public key)`.
//! - Verifier key: `<name>+<8 hex digits of the key id>+<base64(0x01 || public key)>`.
//! - Signer key: `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte seed)>`; kept in a file
//!   outside the log (`cmdb key create`), never in an event.
//!
//! Pure: no I/O; the caller supplies the seed of a new key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::merkle::TreeHash;

/// The algorithm byte of Ed25519 in C2SP signed notes.
const ALGORITHM_ED25519: u8 = 0x01;
/// Longest key name (and so origin) accepted, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 255;
/// Longest signed note accepted, in bytes (C2SP's verifiers accept 1 MB; a checkpoint is ~200 B).
pub const MAX_NOTE_BYTES: usize = 1_000_000;
/// Most signature lines read from one note (C2SP: at most 100).
pub const MAX_NOTE_SIGNATURES: usize = 100;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a key, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum NoteError {
    #[error("not a key name: {0:?} (1 to 255 bytes, no spaces, no '+')")]
    KeyName(String),
    #[error("not a {kind} key: {detail}")]
    Key { kind: &'static str, detail: String },
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("the note carries no valid signature by {name} (key id {key_id:08x})")]
    NotSigned { name: String, key_id: u32 },
    #[error("not a checkpoint: {0}")]
    Checkpoint(String),
    #[error("the checkpoint is for log {found:?}, not {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

fn check_name(name: &str) -> Result<(), NoteError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_KEY_NAME_BYTES
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid { Ok(()) } else { Err(NoteError::KeyName(name.to_owned())) }
}

/// The key id of an Ed25519 key named `name`.
pub fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALGORITHM_ED25519]);
    hasher.update(public_key.as_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A log's signing key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteSigner({}, key id {:08x})", self.name, self.key_id())
    }
}

impl NoteSigner {
    /// A new key named `name` from 32 random bytes.
    pub fn generate(name: &str, seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        Ok(NoteSigner { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`.
    pub fn parse(text: &str) -> Result<NoteSigner, NoteError> {
        let bad = |detail: &str| NoteError::Key { kind: "signer", detail: detail.to_owned() };
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| bad("it does not start PRIVATE+KEY+"))?;
        // The key is base64, which may hold '+': only the first two separate.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected PRIVATE+KEY+<name>+<key id>+<key>"));
        };
        check_name(name)?;
        let bytes = BASE64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let seed: [u8; 32] = match bytes.split_first() {
            Some((&ALGORITHM_ED25519, seed)) => seed.try_into().map_err(|_| bad("an Ed25519 seed is 32 bytes"))?,
            _ => return Err(bad("only Ed25519 keys (algorithm 1) are supported")),
        };
        let signer = NoteSigner { name: name.to_owned(), key: SigningKey::from_bytes(&seed) };
        if format!("{:08x}", signer.key_id()) != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(signer)
    }

    /// The key's name (the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &self.key.verifying_key())
    }

    /// The private key string, to be written to a file only its owner reads.
    pub fn private_key_string(&self) -> String {
        let mut bytes = vec![ALGORITHM_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.key_id(), BASE64.encode(bytes))
    }

    /// The verifier key string, to be published.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// Signs a note text (it must end with a newline): the text, a blank line, our signature.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.key_id().to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!("{text}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(blob)))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') || text.ends_with("\n\n") || text.is_empty() {
        return Err(NoteError::Malformed("the text must end with exactly one newline".into()));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("the text holds a control character".into()));
    }
    Ok(())
}

/// A published verifier key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<key id>+<base64(0x01 || public key)>`.
    pub fn parse(text: &str) -> Result<NoteVerifier, NoteError> {
        let bad = |detail: &str| NoteError::Key { kind: "verifier", detail: detail.to_owned() };
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <name>+<key id>+<key>"));
        };
        check_name(name)?;
        let bytes = BASE64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let key = match bytes.split_first() {
            Some((&ALGORITHM_ED25519, key)) => {
                let key: [u8; 32] = key.try_into().map_err(|_| bad("an Ed25519 public key is 32 bytes"))?;
                VerifyingKey::from_bytes(&key).map_err(|_| bad("not a point on the curve"))?
            }
            _ => return Err(bad("only Ed25519 keys (algorithm 1) are supported")),
        };
        let verifier = NoteVerifier { name: name.to_owned(), key };
        if format!("{:08x}", verifier.key_id()) != id {
            return Err(bad("the key id does not match the key"));
        }
        Ok(verifier)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        key_id(&self.name, &self.key)
    }

    /// Checks that `note` carries this key's valid signature; returns the signed text.
    pub fn verify<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::Malformed(format!("longer than {MAX_NOTE_BYTES} bytes")));
        }
        let split =
            note.rfind("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        check_text(text)?;
        if !signatures.ends_with('\n') {
            return Err(NoteError::Malformed("the signature lines must end with a newline".into()));
        }
        let wanted_id = self.key_id();
        for (count, line) in signatures.lines().enumerate() {
            if count >= MAX_NOTE_SIGNATURES {
                return Err(NoteError::Malformed(format!("more than {MAX_NOTE_SIGNATURES} signatures")));
            }
            let line = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
            let (name, blob) =
                line.split_once(' ').ok_or_else(|| NoteError::Malformed(format!("not a signature line: {line:?}")))?;
            let blob = BASE64.decode(blob).map_err(|_| NoteError::Malformed("a signature is not base64".into()))?;
            if name != self.name || blob.len() != 4 + 64 || blob[..4] != wanted_id.to_be_bytes() {
                continue; // Another key's signature (a witness's, say): not ours to check.
            }
            let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| NoteError::Malformed("not an Ed25519 signature".into()))?;
            if self.key.verify_strict(text.as_bytes(), &signature).is_ok() {
                return Ok(text);
            }
        }
        Err(NoteError::NotSigned { name: self.name.clone(), key_id: wanted_id })
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = vec![ALGORITHM_ED25519];
        bytes.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id(), BASE64.encode(bytes))
    }
}

/// A tree head: which log, how many leaves, the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// Leaves in the tree (events in the log).
    pub size: u64,
    /// The RFC 6962 root of those leaves.
    pub root: TreeHash,
}

impl Checkpoint {
    /// The note text: origin, size, root, each on its own line (no extension lines).
    pub fn text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, self.root)
    }

    /// Parses a checkpoint's text (extension lines are allowed and ignored).
    pub fn parse_text(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |detail: &str| NoteError::Checkpoint(detail.to_owned());
        let mut lines = text.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("the tree size is not a decimal number without leading zeros"));
        }
        let size = size.parse().map_err(|_| bad("the tree size does not fit in 64 bits"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root = root.parse().map_err(|_| bad("the root hash is not base64 of 32 bytes"))?;
        Ok(Checkpoint { origin: origin.to_owned(), size, root })
    }

    /// Checks a signed checkpoint with `verifier`; its origin must be the key's name.
    pub fn verify(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, NoteError> {
        let text = verifier.verify(note)?;
        let checkpoint = Checkpoint::parse_text(text)?;
        if checkpoint.origin != verifier.name() {
            return Err(NoteError::WrongOrigin { expected: verifier.name().to_owned(), found: checkpoint.origin });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::generate("cmdb.example/log", [7u8; 32]).unwrap()
    }

    #[test]
    fn keys_round_trip_through_their_strings() {
        let signer = signer();
        let again = NoteSigner::parse(&signer.private_key_string()).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        let verifier = NoteVerifier::parse(&signer.verifier().to_string()).unwrap();
        assert_eq!(verifier, signer.verifier());
        assert!(signer.verifier().to_string().starts_with(&format!("cmdb.example/log+{:08x}+", signer.key_id())));
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let signer = signer();
        let checkpoint = Checkpoint { origin: "cmdb.example/log".into(), size: 42, root: crate::merkle::empty_root() };
        let note = signer.sign(&checkpoint.text()).unwrap();
        assert_eq!(Checkpoint::verify(&note, &signer.verifier()).unwrap(), checkpoint);
        let tampered = note.replacen("42", "43", 1);
        assert!(matches!(Checkpoint::verify(&tampered, &signer.verifier()), Err(NoteError::NotSigned { .. })));
        let other = NoteSigner::generate("cmdb.example/log", [8u8; 32]).unwrap();
        assert!(matches!(Checkpoint::verify(&note, &other.verifier()), Err(NoteError::NotSigned { .. })));
        let renamed = NoteSigner::generate("another.example/log", [7u8; 32]).unwrap();
        let foreign = renamed.sign(&checkpoint.text()).unwrap();
        assert!(matches!(Checkpoint::verify(&foreign, &renamed.verifier()), Err(NoteError::WrongOrigin { .. })));
    }

    #[test]
    fn malformed_keys_and_notes_are_refused_by_name() {
        assert!(matches!(NoteSigner::generate("has space", [1; 32]), Err(NoteError::KeyName(_))));
        assert!(matches!(NoteSigner::generate("a+b", [1; 32]), Err(NoteError::KeyName(_))));
        assert!(matches!(NoteVerifier::parse("name+00000000+AQ=="), Err(NoteError::Key { .. })));
        let signer = signer();
        let wrong_id = signer.verifier().to_string().replacen('+', "+f", 1);
        assert!(NoteVerifier::parse(&wrong_id).is_err());
        assert!(matches!(signer.verifier().verify("no blank line\n"), Err(NoteError::Malformed(_))));
        for text in ["", "origin\n\n", "origin\n01\nAAAA\n"] {
            assert!(Checkpoint::parse_text(text).is_err() || signer.sign(text).is_err(), "{text:?}");
        }
        assert!(Checkpoint::parse_text("o\n18446744073709551616\nAAAA\n").is_err());
    }
}
