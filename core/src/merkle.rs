//! The Merkle tree over the log (RC-1, CM-4): RFC 6962 / RFC 9162 section 2.1, exactly.
//!
//! - The hash is SHA-256. A leaf hash is `SHA-256(0x00 || leaf input)`, a node hash
//!   `SHA-256(0x01 || left || right)`, the empty tree's root `SHA-256("")`.
//! - Leaf `i` (from 0) is the event at log position `i + 1`; its leaf input is the event's
//!   32-byte chain hash (see `chain`), so the tree commits to everything the chain commits to,
//!   and a redaction that keeps the chain keeps the tree.
//! - [`MerkleTree`] keeps every complete ("perfect") subtree's hash, level by level, so an
//!   append costs one leaf hash plus one node hash per level it completes (amortised two
//!   hashes), and any root, inclusion or consistency proof of any size up to the current one
//!   is O(log n) lookups plus at most O(log n) hashes for the incomplete right edge.
//! - Verification ([`verify_inclusion`], [`verify_consistency`]) follows RFC 9162 2.1.3.2 and
//!   2.1.4.2 in the decomposed form the transparency-dev verifiers use; it needs no tree. The
//!   reference vectors of transparency-dev (fixtures/data/rfc6962-vectors) check both halves.
//!
//! Pure: no I/O. Memory: 64 bytes per leaf (the leaf and, amortised, its ancestors).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Bytes in a tree hash.
pub const TREE_HASH_BYTES: usize = 32;
/// Most hashes a proof of a tree of at most 2^64 leaves can hold (inclusion: one per level;
/// consistency: one per level plus the seed). Longer proofs are refused before any hashing.
pub const MAX_PROOF_HASHES: usize = 65;

/// A SHA-256 hash in the tree. Shown and parsed as standard base64 with padding, as
/// C2SP checkpoints and the transparency-dev tools show them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TreeHash(pub [u8; TREE_HASH_BYTES]);

impl TreeHash {
    /// From exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<TreeHash> {
        <[u8; TREE_HASH_BYTES]>::try_from(bytes).ok().map(TreeHash)
    }

    /// Standard base64.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl fmt::Display for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreeHash({})", self.to_base64())
    }
}

impl FromStr for TreeHash {
    type Err = ProofError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64.decode(text.trim()).map_err(|_| ProofError::NotAHash(text.to_owned()))?;
        TreeHash::from_slice(&bytes).ok_or_else(|| ProofError::NotAHash(text.to_owned()))
    }
}

impl Serialize for TreeHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for TreeHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum ProofError {
    #[error("not a tree hash (base64 of 32 bytes): {0:?}")]
    NotAHash(String),
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size} is larger than the tree ({available} leaves so far)")]
    SizeBeyondTree { size: u64, available: u64 },
    #[error("tree size {from} is larger than tree size {to}: a log only grows")]
    SizesReversed { from: u64, to: u64 },
    #[error("the proof has {actual} hashes; a proof for these sizes has {expected}")]
    WrongProofLength { actual: usize, expected: usize },
    #[error("the proof does not lead to the {which} root: computed {computed}, expected {expected}")]
    RootMismatch { which: &'static str, computed: TreeHash, expected: TreeHash },
    #[error("a consistency proof from the empty tree is meaningless: every tree extends it")]
    EmptyTreeProof,
}

/// `SHA-256(0x00 || input)`.
pub fn leaf_hash(input: &[u8]) -> TreeHash {
    // A leaf is nearly always an event's 32-byte hash: one call over 33 bytes on the stack.
    if input.len() == TREE_HASH_BYTES {
        let mut message = [0u8; 1 + TREE_HASH_BYTES];
        message[1..].copy_from_slice(input);
        return TreeHash(Sha256::digest(message).into());
    }
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(input);
    TreeHash(hasher.finalize().into())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    // One call over the whole 65 bytes: the digest's buffering of three small updates was a
    // sixth of the tree's hashing in a rebuild (issue 15, part 6).
    let mut message = [1u8; 1 + 2 * TREE_HASH_BYTES];
    message[1..=TREE_HASH_BYTES].copy_from_slice(&left.0);
    message[1 + TREE_HASH_BYTES..].copy_from_slice(&right.0);
    TreeHash(Sha256::digest(message).into())
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> TreeHash {
    TreeHash(Sha256::digest([]).into())
}

/// The largest power of two strictly below `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// A Merkle tree that grows by appends, keeping every complete subtree's hash.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleTree {
    /// `levels[k]` holds, 32 bytes each, the hashes of the complete subtrees of 2^k leaves,
    /// left to right: entry `j` covers leaves `[j * 2^k, (j + 1) * 2^k)`.
    levels: Vec<Level>,
}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MerkleTree(size {})", self.size())
    }
}

/// One level's hashes, stored flat (serialised as one byte string: a 3-million-leaf tree's
/// checkpoint is a few large copies, not six million small ones).
#[derive(Clone, Default, PartialEq, Eq)]
struct Level(Vec<u8>);

impl Level {
    fn len(&self) -> u64 {
        (self.0.len() / TREE_HASH_BYTES) as u64
    }

    fn get(&self, index: u64) -> TreeHash {
        let start = usize::try_from(index).unwrap_or(usize::MAX).saturating_mul(TREE_HASH_BYTES);
        let mut hash = [0u8; TREE_HASH_BYTES];
        hash.copy_from_slice(&self.0[start..start + TREE_HASH_BYTES]);
        TreeHash(hash)
    }

    fn push(&mut self, hash: &TreeHash) {
        self.0.extend_from_slice(&hash.0);
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes::ByteBuf = serde_bytes::ByteBuf::deserialize(deserializer)?;
        if !bytes.len().is_multiple_of(TREE_HASH_BYTES) {
            return Err(serde::de::Error::custom("a tree level is not a whole number of hashes"));
        }
        Ok(Level(bytes.into_vec()))
    }
}

impl MerkleTree {
    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, Level::len)
    }

    /// Appends a leaf whose input is `leaf_input` (the event's chain hash).
    pub fn push(&mut self, leaf_input: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf_input));
    }

    /// Appends a leaf by its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf: TreeHash) {
        let mut level = 0;
        let mut hash = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Level::default());
            }
            self.levels[level].push(&hash);
            let count = self.levels[level].len();
            if count % 2 == 1 {
                break;
            }
            // This level just completed a pair: their parent is complete too.
            let left = self.levels[level].get(count - 2);
            hash = node_hash(&left, &hash);
            level += 1;
        }
        debug_assert!(self.levels.iter().enumerate().all(|(k, l)| l.len() == self.size() >> k));
    }

    /// The hash of leaf `index` (the RFC's leaf hash, not its input).
    pub fn leaf(&self, index: u64) -> Result<TreeHash, ProofError> {
        let size = self.size();
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        Ok(self.levels[0].get(index))
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<TreeHash, ProofError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        Ok(self.subtree(0, size))
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let available = self.size();
        if size > available {
            return Err(ProofError::SizeBeyondTree { size, available });
        }
        Ok(())
    }

    /// MTH(D[start..end]) for `start < end <= size`, as the RFC defines it.
    fn subtree(&self, start: u64, end: u64) -> TreeHash {
        debug_assert!(start < end && end <= self.size());
        let width = end - start;
        if width.is_power_of_two() && start.is_multiple_of(width) {
            // A complete, aligned subtree: stored.
            let level = width.trailing_zeros() as usize;
            return self.levels[level].get(start >> level);
        }
        let k = split_point(width);
        node_hash(&self.subtree(start, start + k), &self.subtree(start + k, end))
    }

    /// The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves:
    /// RFC 6962 2.1.1 PATH(m, D[n]).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<TreeHash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut path = Vec::new();
        let (mut start, mut end, mut m) = (0u64, size, index);
        // Walk down from the root, collecting siblings; the RFC appends them bottom-up.
        while end - start > 1 {
            let k = split_point(end - start);
            if m < k {
                path.push(self.subtree(start + k, end));
                end = start + k;
            } else {
                path.push(self.subtree(start, start + k));
                start += k;
                m -= k;
            }
        }
        path.reverse();
        Ok(path)
    }

    /// The consistency proof between the trees of `from` and `to` leaves:
    /// RFC 6962 2.1.2 PROOF(m, D[n]).
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<TreeHash>, ProofError> {
        self.check_size(to)?;
        if from > to {
            return Err(ProofError::SizesReversed { from, to });
        }
        if from == 0 {
            return Err(ProofError::EmptyTreeProof);
        }
        if from == to {
            return Ok(Vec::new());
        }
        let mut proof = Vec::new();
        let (mut start, mut end, mut m, mut whole) = (0u64, to, from, true);
        // SUBPROOF(m, D[start..end], whole), unrolled; siblings collected top-down.
        loop {
            let n = end - start;
            if m == n {
                if !whole {
                    proof.push(self.subtree(start, end));
                }
                break;
            }
            let k = split_point(n);
            if m <= k {
                proof.push(self.subtree(start + k, end));
                end = start + k;
            } else {
                proof.push(self.subtree(start, start + k));
                start += k;
                m -= k;
                whole = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }
}

/// The number of hashes in an inclusion proof: (inner, border), as RFC 9162 decomposes it.
fn decompose_inclusion(index: u64, size: u64) -> (usize, usize) {
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    (inner, border)
}

fn chain_inner(seed: TreeHash, proof: &[TreeHash], index: u64) -> TreeHash {
    proof.iter().enumerate().fold(seed, |seed, (i, hash)| {
        if (index >> i) & 1 == 0 { node_hash(&seed, hash) } else { node_hash(hash, &seed) }
    })
}

fn chain_inner_right(seed: TreeHash, proof: &[TreeHash], index: u64) -> TreeHash {
    proof
        .iter()
        .enumerate()
        .fold(seed, |seed, (i, hash)| if (index >> i) & 1 == 1 { node_hash(hash, &seed) } else { seed })
}

fn chain_border_right(seed: TreeHash, proof: &[TreeHash]) -> TreeHash {
    proof.iter().fold(seed, |seed, hash| node_hash(hash, &seed))
}

/// The root an inclusion proof leads to, or why it cannot lead anywhere.
pub fn root_from_inclusion(index: u64, size: u64, leaf: &TreeHash, proof: &[TreeHash]) -> Result<TreeHash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (inner, border) = decompose_inclusion(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongProofLength { actual: proof.len(), expected: inner + border });
    }
    let hash = chain_inner(*leaf, &proof[..inner], index);
    Ok(chain_border_right(hash, &proof[inner..]))
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &TreeHash,
    proof: &[TreeHash],
    root: &TreeHash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion(index, size, leaf, proof)?;
    matches("tree", computed, *root)
}

fn matches(which: &'static str, computed: TreeHash, expected: TreeHash) -> Result<(), ProofError> {
    if computed == expected { Ok(()) } else { Err(ProofError::RootMismatch { which, computed, expected }) }
}

/// Checks that the tree of `from` leaves with root `from_root` is a prefix of the tree of
/// `to` leaves with root `to_root` (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &TreeHash,
    to_root: &TreeHash,
    proof: &[TreeHash],
) -> Result<(), ProofError> {
    if to < from {
        return Err(ProofError::SizesReversed { from, to });
    }
    if from == 0 {
        return Err(ProofError::EmptyTreeProof);
    }
    if from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength { actual: proof.len(), expected: 0 });
        }
        return matches("old", *from_root, *to_root);
    }
    if proof.is_empty() {
        return Err(ProofError::WrongProofLength { actual: 0, expected: 1 });
    }
    let (mut inner, border) = decompose_inclusion(from - 1, to);
    let shift = from.trailing_zeros() as usize;
    inner -= shift;
    // The proof starts with the root of the subtree of 2^shift leaves, unless that subtree is
    // the whole old tree.
    let (seed, start) = if from == 1u64 << shift { (*from_root, 0) } else { (proof[0], 1) };
    if proof.len() != start + inner + border {
        return Err(ProofError::WrongProofLength { actual: proof.len(), expected: start + inner + border });
    }
    let proof = &proof[start..];
    let mask = (from - 1) >> shift;
    let old = chain_border_right(chain_inner_right(seed, &proof[..inner], mask), &proof[inner..]);
    matches("old", old, *from_root)?;
    let new = chain_border_right(chain_inner(seed, &proof[..inner], mask), &proof[inner..]);
    matches("new", new, *to_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_and_node_hashes_are_the_prefixed_sha256_of_their_inputs_at_every_length() {
        let prefixed = |prefix: u8, parts: &[&[u8]]| {
            let mut hasher = Sha256::new();
            hasher.update([prefix]);
            parts.iter().for_each(|part| hasher.update(part));
            TreeHash(hasher.finalize().into())
        };
        for len in [0, 1, 31, 32, 33, 64, 100] {
            let input: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(leaf_hash(&input), prefixed(0, &[&input]), "a leaf of {len} bytes");
        }
        let (left, right) = (leaf_hash(b"left"), leaf_hash(b"right"));
        assert_eq!(node_hash(&left, &right), prefixed(1, &[&left.0, &right.0]));
        assert_ne!(node_hash(&left, &right), node_hash(&right, &left), "order matters");
    }

    /// The RFC's recursive definition, for comparison.
    fn reference_root(leaves: &[TreeHash]) -> TreeHash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn tree_of(n: u64) -> (MerkleTree, Vec<TreeHash>) {
        let mut tree = MerkleTree::default();
        let mut leaves = Vec::new();
        for i in 0..n {
            tree.push(&i.to_be_bytes());
            leaves.push(leaf_hash(&i.to_be_bytes()));
        }
        (tree, leaves)
    }

    #[test]
    fn roots_equal_the_recursive_definition_at_every_size() {
        let (tree, leaves) = tree_of(70);
        for size in 0..=70u64 {
            assert_eq!(tree.root(size).unwrap(), reference_root(&leaves[..size as usize]), "size {size}");
        }
        assert_eq!(tree.root(71), Err(ProofError::SizeBeyondTree { size: 71, available: 70 }));
    }

    #[test]
    fn every_inclusion_and_consistency_proof_of_a_small_tree_verifies_and_any_flipped_bit_fails() {
        let (tree, _) = tree_of(33);
        for size in 1..=33u64 {
            let root = tree.root(size).unwrap();
            for index in 0..size {
                let leaf = tree.leaf(index).unwrap();
                let proof = tree.inclusion_proof(index, size).unwrap();
                verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
                for at in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[at].0[index as usize % 32] ^= 1;
                    assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
                }
                let mut bad_leaf = leaf;
                bad_leaf.0[0] ^= 0x80;
                assert!(verify_inclusion(index, size, &bad_leaf, &proof, &root).is_err());
                if size > 1 {
                    assert!(verify_inclusion((index + 1) % size, size, &leaf, &proof, &root).is_err());
                }
            }
            assert_eq!(tree.consistency_proof(0, size), Err(ProofError::EmptyTreeProof));
            for from in 1..=size {
                let proof = tree.consistency_proof(from, size).unwrap();
                let old = tree.root(from).unwrap();
                verify_consistency(from, size, &old, &root, &proof).unwrap();
                for at in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[at].0[31] ^= 1;
                    assert!(verify_consistency(from, size, &old, &root, &bad).is_err(), "{from} {size} {at}");
                }
            }
        }
    }

    #[test]
    fn a_tree_survives_serialisation() {
        let (tree, _) = tree_of(1000);
        let bytes = serde_json::to_vec(&tree).unwrap();
        let back: MerkleTree = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, tree);
        assert_eq!(back.root(1000).unwrap(), tree.root(1000).unwrap());
    }
}
