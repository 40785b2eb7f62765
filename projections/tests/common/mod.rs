//! Building histories through the real domain, on the in-memory store.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use cmdb_core::ci::{CiClass, CiCommand, CiDecider, CiId, Environment, Register, RelId, RelType, Status};
use cmdb_core::decider::{CommandContext, execute};
use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
use cmdb_core::{Actor, Clock, EventRecord, EventStore, ManualClock, Metadata, SequentialIds, Source, Timestamp};
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
        if self.store.head().await.map(|d| d.position).unwrap_or(0) == 0 {
            // These tests are about the graph, not change control (CM-3 has its own tests).
            let metadata = Metadata::new(Actor::principal("tester"), Source::Api);
            cmdb_core::ci::schema::declare_uncontrolled(&self.store, CiClass::BUILTIN, "graph tests", metadata).await?;
        }
        self.clock.advance_micros(1_000_000);
        let context = CommandContext::new(Metadata::new(Actor::principal("tester"), Source::Api), self.clock.now());
        execute(&self.store, &CiDecider, &command, &context, None).await.map(|_| ())
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

// Random histories for property tests.

use proptest::prelude::*;

#[derive(Clone, Debug)]
pub enum Step {
    Register(u8, u8),
    Relate(u8, u8, u8),
    Update(u8, u8),
    Transition(u8, u8),
    Withdraw(u8),
    Unrelate(u8),
}

pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..12, 0u8..4).prop_map(|(n, c)| Step::Register(n, c)),
        4 => (0u8..12, 0u8..12, 0u8..4).prop_map(|(a, b, t)| Step::Relate(a, b, t)),
        2 => (0u8..12, 0u8..50).prop_map(|(n, v)| Step::Update(n, v)),
        1 => (0u8..12, 0u8..7).prop_map(|(n, s)| Step::Transition(n, s)),
        1 => (0u8..12).prop_map(Step::Withdraw),
        1 => (0u8..40).prop_map(Step::Unrelate),
    ]
}

pub const CLASSES: [CiClass; 4] = [CiClass::Application, CiClass::Database, CiClass::Host, CiClass::Container];
pub const TYPES: [RelType; 4] = [RelType::DependsOn, RelType::RunsOn, RelType::ConnectsTo, RelType::Hosts];

/// Plays a random history; refusals are part of a realistic history and are skipped.
pub async fn play(world: &World, steps: &[Step]) {
    let mut rel_counter = 0u128;
    for step in steps {
        let command = match step {
            Step::Register(n, c) => register(*n as u128, CLASSES[*c as usize], None),
            Step::Relate(a, b, t) => {
                rel_counter += 1;
                relate(rel_counter, TYPES[*t as usize], *a as u128, *b as u128)
            }
            Step::Update(n, v) => {
                let mut update =
                    cmdb_core::ci::Update { version: Some(format!("1.{v}")), ..cmdb_core::ci::Update::default() };
                if v % 3 == 0 {
                    update.set_attributes =
                        serde_json::from_value(json!({"description": format!("d{v}")})).expect("map");
                }
                if v % 5 == 0 {
                    update.remove_attributes = vec!["description".into()];
                }
                if v % 7 == 0 {
                    update.name = Some(format!("renamed-{n}-{v}"));
                }
                CiCommand::Update(ci(*n as u128), update)
            }
            Step::Transition(n, s) => CiCommand::Transition {
                ci_id: ci(*n as u128),
                to: Status::ALL[*s as usize],
                reason: None,
                authorized_by: None,
            },
            Step::Withdraw(n) => CiCommand::Withdraw { ci_id: ci(*n as u128), reason: None, authorized_by: None },
            Step::Unrelate(n) => CiCommand::Unrelate { rel_id: rel(*n as u128), reason: None, authorized_by: None },
        };
        let _ = world.run(command).await;
    }
}
