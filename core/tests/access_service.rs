//! Access commands against a real store: decisions are conditional on the access stream's
//! version, and concurrent commands are re-decided rather than lost or duplicated.

use std::sync::Arc;

use cmdb_core::access::{self, AccessCommand, AccessDecider, AccessError, PrincipalKind, Role};
use cmdb_core::decider::{CommandContext, Executed};
use cmdb_core::store::sqlite::{SqliteOptions, SqliteStore};
use cmdb_core::{Actor, Clock, Error, EventStore, Metadata, Source, SystemClock};

fn create(name: &str) -> AccessCommand {
    AccessCommand::CreatePrincipal {
        name: name.into(),
        kind: PrincipalKind::System,
        display_name: None,
        roles: [Role::Viewer].into_iter().collect(),
    }
}

fn metadata() -> Metadata {
    Metadata::new(Actor::principal("tester"), Source::Cli)
}

/// Runs an access command through the one executor.
async fn execute(
    store: &dyn EventStore,
    command: &AccessCommand,
) -> Result<Executed<access::AccessKey, access::AccessEvent>, Error> {
    let context = CommandContext::new(metadata(), SystemClock.now());
    cmdb_core::decider::execute(store, &AccessDecider, command, &context, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_are_all_decided_against_the_latest_state() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    let mut tasks = Vec::new();
    for n in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { execute(store.as_ref(), &create(&format!("bot-{n}"))).await }));
    }
    for task in tasks {
        task.await.expect("task").expect("every distinct principal is created");
    }
    let state = access::load_state(store.as_ref()).await.expect("load");
    assert_eq!(state.principals.len(), 4);
    assert_eq!(state.version, Some(3));

    // The same name twice, concurrently: exactly one wins, the other is told why.
    let twin = create("twin");
    let (a, b) = tokio::join!(execute(store.as_ref(), &twin), execute(store.as_ref(), &twin));
    let outcomes = [a, b];
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert!(
        outcomes.iter().any(|o| matches!(o, Err(Error::Access(AccessError::PrincipalExists(name))) if name == "twin"))
    );
}

#[tokio::test]
async fn a_refused_command_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
    execute(&store, &create("bot")).await.expect("create");
    let head = store.head().await.expect("head");
    let refused = execute(&store, &create("bot")).await;
    assert!(matches!(refused, Err(Error::Access(AccessError::PrincipalExists(_)))));
    let refused = execute(&store, &create("Not Valid")).await;
    assert!(matches!(refused, Err(Error::Access(AccessError::InvalidName(_)))));
    assert_eq!(store.head().await.expect("head"), head);
}
