//! The conformance suite on the in-memory backend.

use std::sync::Arc;

use async_trait::async_trait;
use cmdb_core::conformance::{Backend, BackendFactory, FreshOptions};
use cmdb_core::store::memory::{MemoryOptions, MemoryStore, MemoryTamper};

struct Memory;

#[async_trait]
impl BackendFactory for Memory {
    fn name(&self) -> &str {
        "memory"
    }

    async fn fresh(&self, options: FreshOptions) -> Backend {
        let store = MemoryStore::new(MemoryOptions {
            limits: options.limits,
            clock: options.clock,
            ids: options.ids,
            ..MemoryOptions::default()
        });
        Backend { store: Arc::new(store.clone()), tamper: Some(Box::new(MemoryTamper(store))) }
    }
}

cmdb_core::conformance_suite!(Memory);
