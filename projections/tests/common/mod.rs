//! Building histories through the real domain, on the in-memory store.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use cmdb_core::ci::service::{CommandContext, execute};
use cmdb_core::ci::{CiClass, CiCommand, CiId, Environment, Register, RelId, RelType, Status};
use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
use cmdb_core::{Actor, EventRecord, EventStore, ManualClock, Metadata, SequentialIds, Source, Timestamp};
use cmdb_projections::graph::TemporalGraph;
use serde_json::{Value, json};
use uuid::Uuid;

pub struct World {
    pub store: MemoryStore,
    pub clock: Arc<ManualClock>,
}

pub const START: Timestamp = Timestamp::from_micros(1_767_225_600_000_000);

impl World {
    pub fn new() -> World {
        let clock = Arc::new(ManualClock::new(START));
        let ids = Arc::new(SequentialIds::new(clock.clone(), 3));
        let store = MemoryStore::new(MemoryOptions { clock: clock.clone(), ids, ..MemoryOptions::default() });
        World { store, clock }
    }

    pub async fn run(&self, command: CiCommand) -> Result<(), cmdb_core::Error> {
        self.clock.advance_micros(1_000_000);
        let context = CommandContext::new(Metadata::new(Actor::principal("tester"), Source::Api));
        execute(&self.store, &command, &context).await.map(|_| ())
    }

    pub async fn ok(&self, command: CiCommand) {
        let described = format!("{command:?}");
        self.run(command).await.unwrap_or_else(|e| panic!("{described} refused: {e}"));
    }

    pub async fn log(&self) -> Vec<EventRecord> {
        let mut all: Vec<EventRecord> = Vec::new();
        loop {
            let after = all.last().map_or(0, |r| r.position);
            let page = self.store.read_all(after, 10_000).await.expect("read");
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    pub async fn graph(&self) -> TemporalGraph {
        replay(&self.log().await, u64::MAX)
    }
}

/// A graph built from scratch from the events up to `position`.
pub fn replay(log: &[EventRecord], position: u64) -> TemporalGraph {
    let mut graph = TemporalGraph::default();
    for record in log.iter().take_while(|r| r.position <= position) {
        graph.apply(record).expect("apply");
    }
    graph
}

pub fn ci(n: u128) -> CiId {
    CiId(Uuid::from_u128(n))
}

pub fn rel(n: u128) -> RelId {
    RelId(Uuid::from_u128(1_000_000 + n))
}

pub fn attributes(class: CiClass, n: u128) -> BTreeMap<String, Value> {
    let value = match class {
        CiClass::Host | CiClass::VirtualMachine => {
            json!({"hostname": format!("h{n}"), "ip_addresses": [format!("10.0.{}.{}", n / 250, n % 250)], "os": "linux", "cpu_cores": 4, "memory_mib": 8192})
        }
        CiClass::BusinessService => {
            json!({"criticality_tier": (n % 4 + 1) as i64, "service_hours": {"time_zone": "Europe/Berlin", "weekly": [{"days": ["mon","tue","wed","thu","fri"], "start": "08:00", "end": "18:00"}]}})
        }
        CiClass::Database => json!({"engine": "postgresql"}),
        CiClass::Container => json!({"image": format!("registry.example/app:{n}")}),
        _ => json!({}),
    };
    serde_json::from_value(value).expect("object")
}

pub fn register(n: u128, class: CiClass, owner: Option<u128>) -> CiCommand {
    CiCommand::Register(Register {
        ci_id: ci(n),
        class,
        name: format!("{class}-{n}"),
        status: Status::Live,
        environment: Some(Environment::Production),
        owner: owner.map(ci),
        location: None,
        version: None,
        attributes: attributes(class, n),
        authorized_by: None,
    })
}

pub fn relate(n: u128, rel_type: RelType, source: u128, target: u128) -> CiCommand {
    CiCommand::Relate { rel_id: rel(n), rel_type, source: ci(source), target: ci(target), authorized_by: None }
}
