//! # cmdb-benches
//!
//! Criterion benchmarks, the HTTP load generator, and peer comparisons. No product logic.
