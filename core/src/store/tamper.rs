//! Editing stored rows behind a store's back: what the conformance suite's tamper checks and
//! the tests of `cmdb verify` need to show that the hash chain catches it. Never used by the
//! server.

/// Edits stored rows directly, bypassing the store, as an attacker with file access would.
pub trait Tamper: Send + Sync {
    /// Flips one byte of the stored payload.
    fn flip_data_byte(&self, position: u64);
    /// Replaces the stored stream id.
    fn set_stream_id(&self, position: u64, stream_id: &str);
    /// Replaces the stored actor principal.
    fn set_principal(&self, position: u64, principal: &str);
    /// Moves the stored `recorded_at` by one microsecond.
    fn shift_recorded_at(&self, position: u64);
    /// Deletes one row.
    fn delete(&self, position: u64);
    /// Swaps the contents of two rows (each keeps its position).
    fn swap(&self, a: u64, b: u64);
    /// Inserts a copy of the row at `position` just before it, renumbering the rest up by one.
    fn insert_copy_before(&self, position: u64);
    /// Deletes every row after `position`.
    fn truncate_after(&self, position: u64);
    /// Rewrites the row at `position` with a recomputed hash for altered data, and the chain
    /// after it: a forger who knows the algorithm. Only an exported digest catches this.
    fn rewrite_chain_from(&self, position: u64, new_data: &[u8]);
}
