//! Change control through the real services and a store (CH-1, CH-4, CH-6, CM-3): a change
//! taken through its life cycle with CI edits under it; the CM-3 race (the change leaves
//! `implementing` while a CI edit is in flight); a comment during a CI edit; gapless numbers
//! under concurrent submissions; refused commands append nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use cmdb_core::access::{AccessCommand, AccessDecider, PrincipalKind, Role};
use cmdb_core::change::{self as changes, ChangeDecider, load_change};
use cmdb_core::change::{
    ChangeAction, ChangeCommand, ChangeDetails, ChangeError, ChangeNumber, ChangeState, ChangeType, PlannedCi, Review,
    Scope,
};
use cmdb_core::ci::{ChangeId, CiClass, CiCommand, CiDecider, CiError, CiId, CiKey, Register, Status, Update};
use cmdb_core::decider::cache::StateCache;
use cmdb_core::decider::{CommandContext, execute};
use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
use cmdb_core::store::{AppendOutcome, AppendRequest, Capabilities, Direction, StoreError, StoreLimits};
use cmdb_core::{Actor, Digest, Error, EventRecord, EventStore, Metadata, Source, StreamId, Timestamp};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A store that runs `hook` just before the first append that writes a CI stream: another
/// writer's commit lands between a CI command's read and its append.
struct Interleaving {
    inner: Arc<MemoryStore>,
    hook: std::sync::Mutex<Option<Hook>>,
    ci_appends: AtomicUsize,
    conflicts: AtomicUsize,
}

impl Interleaving {
    fn new(inner: Arc<MemoryStore>) -> Interleaving {
        Interleaving {
            inner,
            hook: std::sync::Mutex::new(None),
            ci_appends: AtomicUsize::new(0),
            conflicts: AtomicUsize::new(0),
        }
    }

    fn before_next_ci_append(&self, hook: Hook) {
        *self.hook.lock().expect("lock") = Some(hook);
    }
}

#[async_trait]
impl EventStore for Interleaving {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits()
    }

    async fn redact(
        &self,
        erasures: Vec<cmdb_core::store::Erasure>,
        record: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.redact(erasures, record).await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.writes.iter().any(|w| w.stream.as_str().starts_with("ci-")) {
            self.ci_appends.fetch_add(1, Ordering::SeqCst);
            let hook = self.hook.lock().expect("lock").take();
            if let Some(hook) = hook {
                hook().await;
            }
        }
        let result = self.inner.append(request).await;
        if matches!(result, Err(StoreError::VersionConflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from: Option<u64>,
        max_count: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.read_stream(stream, direction, from, max_count).await
    }

    async fn read_all(&self, after: u64, max_count: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.inner.read_all(after, max_count).await
    }

    async fn event_at(&self, position: u64) -> Result<Option<EventRecord>, StoreError> {
        self.inner.event_at(position).await
    }

    async fn head(&self) -> Result<Digest, StoreError> {
        self.inner.head().await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        self.inner.stream_version(stream).await
    }

    async fn position_at(&self, at: Timestamp) -> Result<u64, StoreError> {
        self.inner.position_at(at).await
    }
}

fn as_principal(name: &str) -> Metadata {
    Metadata::new(Actor::principal(name), Source::Api)
}

fn now() -> Timestamp {
    Timestamp::from_micros(1_767_225_600_000_000)
}

async fn principals(store: &dyn EventStore) {
    for (name, roles) in [
        ("alice", &[Role::Editor][..]),
        ("ivan", &[Role::Editor, Role::Deployer][..]),
        ("amy", &[Role::Approver][..]),
        ("mark", &[Role::ChangeManager][..]),
        ("vera", &[Role::Editor][..]),
    ] {
        let command = AccessCommand::CreatePrincipal {
            name: name.into(),
            kind: PrincipalKind::Person,
            display_name: None,
            roles: roles.iter().copied().collect::<BTreeSet<_>>(),
        };
        let context = CommandContext::new(as_principal("system"), now());
        execute(store, &AccessDecider, &command, &context, None).await.expect("principal");
    }
}

async fn change_cmd(store: &dyn EventStore, actor: &str, command: ChangeCommand) -> Result<u64, Error> {
    let context = CommandContext::new(as_principal(actor), now());
    execute(store, &ChangeDecider::default(), &command, &context, None).await.map(|e| e.outcome.last_position)
}

async fn act(store: &dyn EventStore, id: ChangeId, action: ChangeAction) {
    let (actor, review) = match action {
        ChangeAction::Submit => ("alice", None),
        ChangeAction::Approve => ("amy", None),
        ChangeAction::Start | ChangeAction::Complete | ChangeAction::Fail => ("ivan", None),
        ChangeAction::Verify => ("vera", None),
        ChangeAction::Review => (
            "mark",
            Some(Review { objective_met: true, users_satisfied: true, side_effects: None, follow_up_actions: vec![] }),
        ),
        _ => ("mark", None),
    };
    let command = ChangeCommand::Act { change_id: id, action, note: Some(format!("{action}")), review, facts: None };
    change_cmd(store, actor, command).await.unwrap_or_else(|e| panic!("{action}: {e}"));
}

fn ci(n: u128) -> CiId {
    CiId(Uuid::from_u128(n))
}

fn register_host(n: u128, name: &str, change: Option<ChangeId>) -> CiCommand {
    CiCommand::Register(Register {
        ci_id: ci(n),
        class: CiClass::Host,
        name: name.into(),
        status: Status::Live,
        environment: None,
        owner: None,
        location: None,
        version: None,
        attributes: serde_json::from_value(
            json!({"hostname": name, "ip_addresses": ["10.0.0.1"], "os": "debian-12", "cpu_cores": 4, "memory_mib": 8192}),
        )
        .expect("object"),
        authorized_by: change,
    })
}

fn set_os(n: u128, os: &str, change: Option<ChangeId>) -> CiCommand {
    CiCommand::Update(
        ci(n),
        Update {
            set_attributes: [("os".to_owned(), json!(os))].into_iter().collect(),
            authorized_by: change,
            ..Update::default()
        },
    )
}

async fn ci_cmd(store: &dyn EventStore, command: &CiCommand) -> Result<u64, Error> {
    let context = CommandContext::new(as_principal("ivan"), now());
    execute(store, &CiDecider, command, &context, None).await.map(|e| e.outcome.last_position)
}

/// A normal change planning `planned` hosts, taken to `implementing`.
async fn implementing(store: &dyn EventStore, n: u128, planned: &[&str], cis: &[CiId]) -> ChangeId {
    let id = ChangeId(Uuid::from_u128(0xC0_0000 + n));
    let details = ChangeDetails {
        title: format!("change {n}"),
        description: Some("hosts".into()),
        justification: Some("capacity".into()),
        back_out_plan: Some("remove them".into()),
        window: Some(cmdb_core::change::Window {
            start: now(),
            end: now().saturating_add_micros(3_600_000_000),
            time_zone: "UTC".into(),
        }),
        implementer: Some("ivan".into()),
        scope: Scope {
            cis: cis.to_vec(),
            planned: planned.iter().map(|name| PlannedCi { class: CiClass::Host, name: (*name).into() }).collect(),
        },
        links: vec![],
    };
    change_cmd(
        store,
        "alice",
        ChangeCommand::Draft { change_id: id, change_type: ChangeType::Normal, template_id: None, details },
    )
    .await
    .expect("draft");
    for action in
        [ChangeAction::Submit, ChangeAction::Assess, ChangeAction::Approve, ChangeAction::Schedule, ChangeAction::Start]
    {
        act(store, id, action).await;
    }
    id
}

async fn head(store: &dyn EventStore) -> u64 {
    store.head().await.expect("head").position
}

#[tokio::test]
async fn a_change_from_draft_to_closed_with_ci_edits_only_under_it() {
    let store = MemoryStore::new(MemoryOptions::default());
    principals(&store).await;
    // Without a change, nothing.
    let before = head(&store).await;
    let refused = ci_cmd(&store, &register_host(1, "web-01", None)).await;
    assert!(matches!(refused, Err(Error::Ci(CiError::Unauthorized { .. }))), "{refused:?}");
    assert_eq!(head(&store).await, before, "a refused edit appends nothing");

    let change = implementing(&store, 1, &["web-01"], &[]).await;
    ci_cmd(&store, &register_host(1, "web-01", Some(change))).await.expect("planned");
    ci_cmd(&store, &set_os(1, "debian-13", Some(change))).await.expect("registered under it");
    let refused = ci_cmd(&store, &register_host(2, "web-02", Some(change))).await;
    assert!(matches!(refused, Err(Error::Ci(CiError::NotPlanned { .. }))), "{refused:?}");
    for action in [ChangeAction::Complete, ChangeAction::Verify, ChangeAction::Review, ChangeAction::Close] {
        act(&store, change, action).await;
    }
    let record = load_change(&store, change).await.expect("load").expect("exists");
    assert_eq!(record.state, ChangeState::Closed);
    assert_eq!(record.number, Some(ChangeNumber(1)));
    // Once closed, it authorises nothing.
    let before = head(&store).await;
    let refused = ci_cmd(&store, &set_os(1, "debian-14", Some(change))).await;
    assert!(
        matches!(&refused, Err(Error::Ci(CiError::ChangeNotImplementing { change, state })) if change == "CHG-000001" && state == "closed"),
        "{refused:?}"
    );
    assert_eq!(head(&store).await, before);
    let found = changes::find_by_number(&store, ChangeNumber(1)).await.expect("find");
    assert_eq!(found, Some(change));
    assert_eq!(changes::find_by_number(&store, ChangeNumber(2)).await.expect("find"), None);
}

#[tokio::test]
async fn the_change_leaving_implementing_while_an_edit_is_in_flight_fails_the_edit_and_appends_nothing() {
    let inner = Arc::new(MemoryStore::new(MemoryOptions::default()));
    let store = Interleaving::new(inner.clone());
    principals(&store).await;
    let change = implementing(&store, 1, &["web-01"], &[]).await;
    ci_cmd(&store, &register_host(1, "web-01", Some(change))).await.expect("register");
    let completer = inner.clone();
    store.before_next_ci_append(Box::new(move || {
        Box::pin(async move {
            act(completer.as_ref(), change, ChangeAction::Complete).await;
        })
    }));
    let before = inner.head().await.expect("head").position;
    let result = ci_cmd(&store, &set_os(1, "debian-13", Some(change))).await;
    assert!(
        matches!(&result, Err(Error::Ci(CiError::ChangeNotImplementing { state, .. })) if state == "implemented"),
        "{result:?}"
    );
    assert_eq!(store.conflicts.load(Ordering::SeqCst), 1, "the first append met the change's new state");
    let after = inner.head().await.expect("head").position;
    let tail = inner.read_all(before, 100).await.expect("read");
    assert_eq!(after - before, tail.len() as u64);
    assert!(tail.iter().all(|r| r.event_type == "change.transitioned"), "only the completion landed: {tail:?}");
}

#[tokio::test]
async fn a_comment_on_the_change_during_an_edit_does_not_fail_the_edit() {
    let inner = Arc::new(MemoryStore::new(MemoryOptions::default()));
    let store = Interleaving::new(inner.clone());
    principals(&store).await;
    let change = implementing(&store, 1, &["web-01"], &[]).await;
    ci_cmd(&store, &register_host(1, "web-01", Some(change))).await.expect("register");
    let commenter = inner.clone();
    store.before_next_ci_append(Box::new(move || {
        Box::pin(async move {
            let comment = ChangeCommand::Comment { change_id: change, text: "how is it going?".into() };
            change_cmd(commenter.as_ref(), "mark", comment).await.expect("comment");
        })
    }));
    let appends = store.ci_appends.load(Ordering::SeqCst);
    ci_cmd(&store, &set_os(1, "debian-13", Some(change))).await.expect("the edit lands");
    assert_eq!(store.ci_appends.load(Ordering::SeqCst), appends + 1, "in one attempt");
    assert_eq!(store.conflicts.load(Ordering::SeqCst), 0);
    let record = load_change(&store, change).await.expect("load").expect("exists");
    assert_eq!(record.comments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_get_gapless_numbers() {
    let store = Arc::new(MemoryStore::new(MemoryOptions::default()));
    principals(store.as_ref()).await;
    let count = 16u128;
    let ids: Vec<ChangeId> = (1..=count).map(|n| ChangeId(Uuid::from_u128(0xD0_0000 + n))).collect();
    for id in &ids {
        let details = ChangeDetails {
            title: "t".into(),
            description: Some("d".into()),
            justification: Some("j".into()),
            back_out_plan: Some("b".into()),
            window: None,
            implementer: Some("ivan".into()),
            scope: Scope { cis: vec![], planned: vec![PlannedCi { class: CiClass::Host, name: format!("h-{id}") }] },
            links: vec![],
        };
        let draft =
            ChangeCommand::Draft { change_id: *id, change_type: ChangeType::Normal, template_id: None, details };
        change_cmd(store.as_ref(), "alice", draft).await.expect("draft");
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let store = store.clone();
            let id = *id;
            tokio::spawn(async move { act(store.as_ref(), id, ChangeAction::Submit).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let mut numbers = Vec::new();
    for id in &ids {
        numbers
            .push(load_change(store.as_ref(), *id).await.expect("load").expect("exists").number.expect("numbered").0);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=count as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn refused_change_commands_append_nothing() {
    let store = MemoryStore::new(MemoryOptions::default());
    principals(&store).await;
    let change = implementing(&store, 1, &["web-01"], &[]).await;
    let before = head(&store).await;
    let unknown = ChangeId(Uuid::from_u128(404));
    let cases: Vec<(&str, ChangeCommand)> = vec![
        (
            "alice",
            ChangeCommand::Act {
                change_id: unknown,
                action: ChangeAction::Submit,
                note: None,
                review: None,
                facts: None,
            },
        ),
        (
            "amy",
            ChangeCommand::Act {
                change_id: change,
                action: ChangeAction::Approve,
                note: None,
                review: None,
                facts: None,
            },
        ),
        (
            "alice",
            ChangeCommand::Draft {
                change_id: ChangeId(Uuid::from_u128(5)),
                change_type: ChangeType::Normal,
                template_id: None,
                details: ChangeDetails {
                    title: "x".into(),
                    scope: Scope { cis: vec![ci(99)], planned: vec![] },
                    ..ChangeDetails::default()
                },
            },
        ),
        ("vera", ChangeCommand::Comment { change_id: change, text: "   ".into() }),
    ];
    for (actor, command) in cases {
        let result = change_cmd(&store, actor, command.clone()).await;
        assert!(matches!(result, Err(Error::Change(_))), "{command:?}: {result:?}");
    }
    let result = change_cmd(
        &store,
        "alice",
        ChangeCommand::Act { change_id: unknown, action: ChangeAction::Submit, note: None, review: None, facts: None },
    )
    .await;
    assert_eq!(result, Err(Error::Change(ChangeError::UnknownChange(unknown.to_string()))));
    assert_eq!(head(&store).await, before);
}

/// Two servers on one log, each with its own state cache: the cache changes what is read,
/// never what is decided.
#[tokio::test]
async fn a_stale_state_cache_never_changes_a_decision() {
    let store = MemoryStore::new(MemoryOptions::default());
    principals(&store).await;
    let change = implementing(&store, 1, &["web-01"], &[]).await;
    let (a, b) = (StateCache::<CiKey>::new(), StateCache::<CiKey>::new());
    let context = CommandContext::new(as_principal("ivan"), now());
    let run = async |command: &CiCommand, cache: &StateCache<CiKey>| {
        execute(&store, &CiDecider, command, &context, Some(cache)).await
    };
    run(&register_host(1, "web-01", Some(change)), &a).await.expect("register via a");
    run(&set_os(1, "debian-13", Some(change)), &a).await.expect("a caches the CI");
    assert!(!a.is_empty());
    // b moves the CI on; a's cached version is stale: its append conflicts, it reads and
    // decides again, and lands after b's.
    run(&set_os(1, "debian-14", Some(change)), &b).await.expect("b");
    run(&set_os(1, "debian-13", Some(change)), &a).await.expect("a re-decides on fresh state");
    let record = load_change(&store, change).await.expect("load").expect("exists");
    assert_eq!(record.state, ChangeState::Implementing);
    // b takes the CI out of service; a, still believing it live, asks for a transition only a
    // CI under change allows: refused on the cache, decided again on the log, accepted.
    let under_change = |ci_id, to| CiCommand::Transition { ci_id, to, reason: None, authorized_by: Some(change) };
    run(&under_change(ci(1), Status::UnderChange), &b).await.expect("b: under change");
    run(&under_change(ci(1), Status::Live), &a).await.expect("a: back to live, seen fresh");
    // The change completes elsewhere; a's cache still says implementing: its edit is refused
    // (the append is conditional on the change's state stream) and nothing is appended.
    act(&store, change, ChangeAction::Complete).await;
    let before = head(&store).await;
    let refused = run(&set_os(1, "debian-15", Some(change)), &a).await;
    assert!(matches!(refused, Err(Error::Ci(CiError::ChangeNotImplementing { .. }))), "{refused:?}");
    assert_eq!(head(&store).await, before);
}
