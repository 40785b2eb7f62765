//! Times CI updates through the one executor with a state cache, on the in-memory store:
//! the in-process cost of a server's CI edit (decide, append, fold the decision back into the
//! cache) without HTTP or fsync. `cargo run --release -p cmdb-benches --bin ci_executor`.
use cmdb_core::ci::{CiClass, CiCommand, CiDecider, CiId, CiKey, Register, Status, Update};
use cmdb_core::decider::{CommandContext, cache::StateCache, execute};
use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
use cmdb_core::{Actor, Metadata, Source, Timestamp};
/// Updates measured.
const UPDATES: usize = 100_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = MemoryStore::new(MemoryOptions::default());
    let md = Metadata::new(Actor::principal("b"), Source::Api);
    cmdb_core::ci::schema::declare_uncontrolled(&store, &[CiClass::Location], "bench", md.clone()).await.unwrap();
    let ctx = CommandContext::new(md, Timestamp::from_micros(0));
    let cache = StateCache::<CiKey>::new();
    let ids: Vec<CiId> = (0..64u128).map(|n| CiId(uuid::Uuid::from_u128(n + 1))).collect();
    for (n, id) in ids.iter().enumerate() {
        let reg = CiCommand::Register(Register {
            ci_id: *id,
            class: CiClass::Location,
            name: format!("l{n}"),
            status: Status::Live,
            environment: None,
            owner: None,
            location: None,
            version: None,
            attributes: Default::default(),
            authorized_by: None,
        });
        execute(&store, &CiDecider, &reg, &ctx, Some(&cache)).await.unwrap();
    }
    let n = UPDATES;
    let start = std::time::Instant::now();
    for i in 0..n {
        let cmd = CiCommand::Update(ids[i % 64], Update { version: Some(format!("v{i}")), ..Update::default() });
        execute(&store, &CiDecider, &cmd, &ctx, Some(&cache)).await.unwrap();
    }
    let el = start.elapsed();
    println!("{n} updates of 64 CIs: {:.2} us per update", el.as_secs_f64() * 1e6 / n as f64);
}
