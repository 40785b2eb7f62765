//! What a walk has seen, in arrays indexed by node instead of hash maps (issue 15, part 3).
//!
//! A walk over 20,000 CIs spent most of its time hashing node indices. [`Visits`] keeps one
//! `u32` per node of the graph (its depth, or the index of what the walk knows about it) and
//! remembers which entries it set, so that clearing costs what the walk visited, not the
//! graph's size. Cleared arrays go back to a small per-thread pool: a walk allocates only
//! when the pool is empty (the first walk on a thread, or a walk inside a walk).

use std::cell::RefCell;

use petgraph::stable_graph::NodeIndex;

/// The value of a node the walk has not seen.
const UNSEEN: u32 = u32::MAX;
/// Arrays kept per thread between walks (a walk nests at most one other).
const POOLED_PER_THREAD: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
}

/// A `u32` per node seen by one walk; back to the thread's pool when dropped.
pub(crate) struct Visits {
    values: Vec<u32>,
    touched: Vec<u32>,
}

impl Visits {
    /// Room for nodes below `node_bound`.
    pub fn new(node_bound: usize) -> Visits {
        let mut values = POOL.with(|pool| pool.borrow_mut().pop()).unwrap_or_default();
        debug_assert!(values.iter().all(|v| *v == UNSEEN), "a pooled array comes back cleared");
        if values.len() < node_bound {
            values.resize(node_bound, UNSEEN);
        }
        Visits { values, touched: Vec::new() }
    }

    /// What the walk recorded for `node`, if it saw it.
    #[inline]
    pub fn get(&self, node: NodeIndex) -> Option<u32> {
        self.values.get(node.index()).copied().filter(|v| *v != UNSEEN)
    }

    /// Whether the walk saw `node`.
    #[inline]
    pub fn contains(&self, node: NodeIndex) -> bool {
        self.get(node).is_some()
    }

    /// Records `value` (not `u32::MAX`) for `node`; returns the value it had.
    #[inline]
    pub fn insert(&mut self, node: NodeIndex, value: u32) -> Option<u32> {
        match self.get(node) {
            Some(old) => {
                debug_assert_ne!(value, UNSEEN, "u32::MAX marks an unseen node");
                self.values[node.index()] = value;
                Some(old)
            }
            None => {
                self.insert_unseen(node, value);
                None
            }
        }
    }

    /// Records `value` (not `u32::MAX`) for `node`, which the walk has not seen (the caller
    /// knows it from elsewhere): written without reading the entry first.
    #[inline]
    pub fn insert_unseen(&mut self, node: NodeIndex, value: u32) {
        debug_assert_ne!(value, UNSEEN, "u32::MAX marks an unseen node");
        debug_assert!(self.get(node).is_none(), "only for a node not seen");
        let index = node.index();
        if index >= self.values.len() {
            self.values.resize(index + 1, UNSEEN);
        }
        self.values[index] = value;
        self.touched.push(index as u32);
    }

    /// How many nodes the walk saw.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.touched.len()
    }
}

impl Drop for Visits {
    fn drop(&mut self) {
        for index in self.touched.drain(..) {
            self.values[index as usize] = UNSEEN;
        }
        let values = std::mem::take(&mut self.values);
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_PER_THREAD {
                pool.push(values);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooled_array_comes_back_cleared_and_nested_walks_do_not_share() {
        {
            let mut outer = Visits::new(10);
            assert_eq!(outer.insert(NodeIndex::new(3), 7), None);
            assert_eq!(outer.insert(NodeIndex::new(3), 8), Some(7));
            let mut inner = Visits::new(10);
            assert_eq!(inner.get(NodeIndex::new(3)), None, "a walk inside a walk has its own array");
            inner.insert(NodeIndex::new(12), 1);
            assert_eq!(outer.get(NodeIndex::new(3)), Some(8));
            assert_eq!(outer.len(), 1);
            outer.insert_unseen(NodeIndex::new(5), 9);
            outer.insert_unseen(NodeIndex::new(15), 2);
            assert_eq!((outer.get(NodeIndex::new(5)), outer.get(NodeIndex::new(15))), (Some(9), Some(2)));
            assert_eq!(outer.len(), 3, "written without reading, still cleared when dropped");
        }
        let again = Visits::new(20);
        assert!((0..20).all(|n| again.get(NodeIndex::new(n)).is_none()));
    }
}
