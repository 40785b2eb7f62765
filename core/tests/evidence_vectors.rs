//! The Merkle proofs and signed checkpoints of `cmdb_core::merkle` / `cmdb_core::note`
//! against material we did not write (RC-1, CM-4):
//! - the RFC 6962 / 9162 reference vectors of transparency-dev (fixtures/data/rfc6962-vectors),
//!   every file: a case wanting an error must fail, every other must verify;
//! - `tlog_tiles` and `signed_note`, Cloudflare's ports of Go's `golang.org/x/mod/sumdb/tlog`
//!   and `note` (the code the Go checksum database and its witnesses run): their roots and
//!   proofs against ours in both directions, and their note verifier on our checkpoints.

use std::path::{Path, PathBuf};

use cmdb_core::merkle::{self, MerkleTree, TreeHash};
use cmdb_core::note::{Checkpoint, NoteSigner, NoteVerifier};
use serde_json::Value;

fn vectors(kind: &str) -> Vec<(PathBuf, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/rfc6962-vectors").join(kind);
    let mut files = Vec::new();
    let mut directories = vec![root];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).expect("vector directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                directories.push(path);
            } else {
                let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
                files.push((path, json));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// A proof hash or leaf hash: base64 of 32 bytes, or the case is malformed.
fn hash(value: &Value) -> Result<TreeHash, merkle::ProofError> {
    value.as_str().unwrap_or_default().parse()
}

/// A root. Some vectors give a placeholder ("don't care 1", 12 bytes) where the verdict only
/// compares two roots for equality; our type holds exactly 32 bytes, so a placeholder stands in
/// as the SHA-256 of its bytes: equal placeholders stay equal, different ones stay different.
fn root(value: &Value) -> Result<TreeHash, merkle::ProofError> {
    use base64::Engine as _;
    let text = value.as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| merkle::ProofError::NotAHash(text.into()))?;
    Ok(TreeHash::from_slice(&bytes).unwrap_or_else(|| {
        use sha2::Digest as _;
        TreeHash(sha2::Sha256::digest(&bytes).into())
    }))
}

fn hashes(value: &Value) -> Result<Vec<TreeHash>, merkle::ProofError> {
    value.as_array().map(|list| list.iter().map(hash).collect()).unwrap_or(Ok(Vec::new()))
}

#[test]
fn every_reference_inclusion_vector_gives_the_expected_verdict() {
    let cases = vectors("inclusion");
    assert!(cases.len() > 60, "{} inclusion vectors", cases.len());
    for (path, case) in cases {
        let verdict = (|| {
            let index = case["leafIdx"].as_u64().unwrap_or(u64::MAX);
            let size = case["treeSize"].as_u64().unwrap_or(0);
            merkle::verify_inclusion(
                index,
                size,
                &hash(&case["leafHash"])?,
                &hashes(&case["proof"])?,
                &root(&case["root"])?,
            )
        })();
        let want_error = case["wantErr"].as_bool().expect("wantErr");
        assert_eq!(verdict.is_err(), want_error, "{}: {verdict:?}", path.display());
    }
}

#[test]
fn every_reference_consistency_vector_gives_the_expected_verdict() {
    let cases = vectors("consistency");
    assert!(cases.len() > 60, "{} consistency vectors", cases.len());
    for (path, case) in cases {
        let verdict = (|| {
            let from = case["size1"].as_u64().unwrap_or(0);
            let to = case["size2"].as_u64().unwrap_or(0);
            merkle::verify_consistency(
                from,
                to,
                &root(&case["root1"])?,
                &root(&case["root2"])?,
                &hashes(&case["proof"])?,
            )
        })();
        let want_error = case["wantErr"].as_bool().expect("wantErr");
        assert_eq!(verdict.is_err(), want_error, "{}: {verdict:?}", path.display());
    }
}

#[test]
fn the_happy_path_vectors_are_proofs_our_tree_makes() {
    // The CT reference tree's eight leaves (merkle_tree_test.cc).
    let leaves: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let mut tree = MerkleTree::default();
    leaves.iter().for_each(|leaf| tree.push(leaf));
    let mut checked = 0;
    for (path, case) in vectors("inclusion") {
        if case["desc"] == "happy path" {
            let (index, size) = (case["leafIdx"].as_u64().expect("idx"), case["treeSize"].as_u64().expect("size"));
            assert_eq!(
                tree.inclusion_proof(index, size).expect("proof"),
                hashes(&case["proof"]).expect("hashes"),
                "{}",
                path.display()
            );
            assert_eq!(tree.root(size).expect("root"), hash(&case["root"]).expect("root"));
            checked += 1;
        }
    }
    for (path, case) in vectors("consistency") {
        if case["desc"] == "happy path" {
            let (from, to) = (case["size1"].as_u64().expect("size1"), case["size2"].as_u64().expect("size2"));
            assert_eq!(
                tree.consistency_proof(from, to).expect("proof"),
                hashes(&case["proof"]).expect("hashes"),
                "{}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} happy paths");
}

/// Go's tlog keeps hashes in one dense array (Crosby and Wallach's order).
struct GoStore(Vec<tlog_tiles::Hash>);

impl tlog_tiles::HashReader for GoStore {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        Ok(indexes.iter().map(|i| self.0[*i as usize]).collect())
    }
}

fn go(hash: &TreeHash) -> tlog_tiles::Hash {
    tlog_tiles::Hash(hash.0)
}

#[test]
fn go_tlog_and_our_tree_agree_on_roots_and_accept_each_others_proofs() {
    let mut ours = MerkleTree::default();
    let mut theirs = GoStore(Vec::new());
    for n in 0..300u64 {
        // Leaf inputs shaped like ours: 32-byte chain hashes.
        let input = blake3::hash(&n.to_be_bytes());
        ours.push(input.as_bytes());
        let stored = tlog_tiles::stored_hashes(n, input.as_bytes(), &theirs).expect("stored hashes");
        theirs.0.extend(stored);
    }
    for size in 1..=300u64 {
        let root = ours.root(size).expect("root");
        assert_eq!(go(&root), tlog_tiles::tree_hash(size, &theirs).expect("go root"), "size {size}");
        for index in (0..size).step_by(7) {
            let proof: Vec<_> = ours.inclusion_proof(index, size).expect("proof").iter().map(go).collect();
            let leaf = go(&ours.leaf(index).expect("leaf"));
            tlog_tiles::check_record(&proof, size, go(&root), index, leaf).expect("Go accepts our inclusion proof");
            let go_proof = tlog_tiles::prove_record(size, index, &theirs).expect("go proof");
            let go_proof: Vec<_> = go_proof.iter().map(|h| TreeHash(h.0)).collect();
            merkle::verify_inclusion(index, size, &ours.leaf(index).expect("leaf"), &go_proof, &root)
                .expect("we accept Go's inclusion proof");
        }
        for from in (1..=size).step_by(11) {
            let old = ours.root(from).expect("old root");
            let proof: Vec<_> = ours.consistency_proof(from, size).expect("proof").iter().map(go).collect();
            tlog_tiles::check_tree(&proof, size, go(&root), from, go(&old)).expect("Go accepts our consistency proof");
            let go_proof = tlog_tiles::prove_tree(size, from, &theirs).expect("go proof");
            let go_proof: Vec<_> = go_proof.iter().map(|h| TreeHash(h.0)).collect();
            merkle::verify_consistency(from, size, &old, &root, &go_proof).expect("we accept Go's consistency proof");
        }
    }
}

#[test]
fn go_note_verifies_our_signed_checkpoints_and_we_verify_its_signatures() {
    let signer = NoteSigner::generate("cmdb.example.org/log", [42u8; 32]).expect("signer");
    let checkpoint = Checkpoint { origin: "cmdb.example.org/log".into(), size: 7, root: merkle::empty_root() };
    let note = signer.sign(&checkpoint.text()).expect("sign");

    let verifier =
        signed_note::StandardVerifier::new(&signer.verifier().to_string()).expect("Go parses our verifier key");
    let parsed = signed_note::Note::from_bytes(note.as_bytes()).expect("Go parses our note");
    let list = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let (verified, _) = parsed.verify(&list).expect("Go verifies our signature");
    assert_eq!(verified.len(), 1);
    assert_eq!(parsed.text(), checkpoint.text().as_bytes());

    // And the other way: a note Go signs with our private key string verifies with ours.
    let go_signer = signed_note::StandardSigner::new(&signer.private_key_string()).expect("Go parses our private key");
    let mut go_note = signed_note::Note::new(checkpoint.text().as_bytes(), &[]).expect("note");
    go_note.add_sigs(&[&go_signer]).expect("Go signs");
    let go_bytes = String::from_utf8(go_note.to_bytes()).expect("utf-8");
    assert_eq!(go_bytes, note, "Ed25519 is deterministic: the same key signs the same bytes");
    let ours = NoteVerifier::parse(&signer.verifier().to_string()).expect("verifier");
    assert_eq!(Checkpoint::verify(&go_bytes, &ours).expect("we verify Go's note"), checkpoint);
}
