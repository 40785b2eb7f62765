//! Custom classes and attributes declared at run time, through the real services: validation
//! uses the schema in force when a command is decided; declarations never change recorded
//! history; clashes are refused and append nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use cmdb_core::ci::schema::{
    self as registry, AttributeDeclared, ClassDeclared, DeclaredAttribute, DeclaredType, SchemaCommand, SchemaDecider,
};
use cmdb_core::ci::{
    CiClass, CiCommand, CiDecider, CiError, CiId, ModelError, Register, RelId, RelType, Status, Update,
};
use cmdb_core::decider::{CommandContext, execute};
use cmdb_core::store::memory::{MemoryOptions, MemoryStore};
use cmdb_core::{Actor, Error, EventStore, Metadata, Source};
use serde_json::{Value, json};
use uuid::Uuid;

fn metadata() -> Metadata {
    Metadata::new(Actor::principal("admin"), Source::Api)
}

fn attrs(value: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(value).expect("object")
}

fn register(n: u128, class: CiClass, name: &str, attributes: Value) -> CiCommand {
    CiCommand::Register(Register {
        ci_id: CiId(Uuid::from_u128(n)),
        class,
        name: name.into(),
        status: Status::Live,
        environment: None,
        owner: None,
        location: None,
        version: None,
        attributes: attrs(attributes),
        authorized_by: None,
    })
}

fn terminal_class() -> ClassDeclared {
    ClassDeclared {
        name: CiClass::declared("payment_terminal").expect("a valid name"),
        like: CiClass::PhysicalAsset,
        description: Some("a card terminal in a shop".into()),
        attributes: vec![
            DeclaredAttribute {
                name: "terminal_id".into(),
                attr_type: DeclaredType::Text,
                required: true,
                description: None,
            },
            DeclaredAttribute {
                name: "network".into(),
                attr_type: DeclaredType::Choice { choices: vec!["visa".into(), "mastercard".into()] },
                required: false,
                description: None,
            },
        ],
    }
}

/// These tests are about schemas, not change control (CM-3 has its own tests): every class
/// they use is declared uncontrolled.
async fn uncontrolled(store: &MemoryStore) {
    let mut classes: Vec<CiClass> = CiClass::BUILTIN.to_vec();
    classes.extend(registry::load(store).await.expect("schema").classes.keys().copied());
    registry::declare_uncontrolled(store, &classes, "schema tests", metadata()).await.expect("declare uncontrolled");
}

async fn run(store: &MemoryStore, command: CiCommand) -> Result<u64, Error> {
    uncontrolled(store).await;
    let context = CommandContext::new(metadata(), cmdb_core::Timestamp::from_micros(0));
    execute(store, &CiDecider, &command, &context, None).await.map(|e| e.outcome.last_position)
}

/// A schema declaration through the one executor.
async fn declare(store: &dyn EventStore, command: &SchemaCommand, metadata: Metadata) -> Result<u64, Error> {
    let context = CommandContext::new(metadata, cmdb_core::Timestamp::from_micros(0));
    execute(store, &SchemaDecider, command, &context, None).await.map(|e| e.outcome.last_position)
}

#[tokio::test]
async fn a_declared_class_validates_its_cis_and_relates_like_its_model() {
    let store = MemoryStore::new(MemoryOptions::default());
    let terminal = terminal_class();
    let class = terminal.name;
    // Before the declaration, the class is unknown.
    let early = run(&store, register(1, class, "T-1", json!({"terminal_id": "A1"}))).await;
    assert!(matches!(early, Err(Error::Ci(CiError::UnknownClass(_)))), "{early:?}");
    declare(&store, &SchemaCommand::DeclareClass(terminal.clone()), metadata()).await.expect("declare");
    assert_eq!("PAYMENT_TERMINAL".parse::<CiClass>(), Ok(class), "known by name once declared");
    run(&store, register(1, class, "T-1", json!({"terminal_id": "A1", "network": "visa"}))).await.expect("register");
    let missing = run(&store, register(2, class, "T-2", json!({}))).await;
    assert!(matches!(missing, Err(Error::Ci(CiError::MissingAttribute { .. }))), "{missing:?}");
    let wrong_choice = run(&store, register(2, class, "T-2", json!({"terminal_id": "A2", "network": "amex"}))).await;
    assert!(matches!(wrong_choice, Err(Error::Ci(CiError::InvalidAttribute { .. }))), "{wrong_choice:?}");
    // It relates as a physical asset: it may connect to a network device, not run an app.
    run(&store, register(3, CiClass::NetworkDevice, "sw-1", json!({"device_type": "switch"}))).await.expect("switch");
    run(
        &store,
        CiCommand::Relate {
            rel_id: RelId(Uuid::from_u128(10)),
            rel_type: RelType::ConnectsTo,
            source: CiId(Uuid::from_u128(1)),
            target: CiId(Uuid::from_u128(3)),
            authorized_by: None,
        },
    )
    .await
    .expect("a physical asset connects to a switch");
    run(&store, register(4, CiClass::Application, "pos-app", json!({}))).await.expect("app");
    let refused = run(
        &store,
        CiCommand::Relate {
            rel_id: RelId(Uuid::from_u128(11)),
            rel_type: RelType::RunsOn,
            source: CiId(Uuid::from_u128(4)),
            target: CiId(Uuid::from_u128(1)),
            authorized_by: None,
        },
    )
    .await;
    assert!(matches!(refused, Err(Error::Ci(CiError::RelationshipNotAllowed { .. }))), "{refused:?}");
}

#[tokio::test]
async fn declared_attributes_extend_built_in_classes_without_rewriting_history() {
    let store = MemoryStore::new(MemoryOptions::default());
    let host =
        json!({"hostname": "h1", "ip_addresses": ["10.0.0.1"], "os": "linux", "cpu_cores": 2, "memory_mib": 1024});
    let first = run(&store, register(1, CiClass::Host, "h1", host.clone())).await.expect("register");
    let before = store.event_at(first).await.expect("read").expect("present");
    let rack = |name: &str, required: bool| {
        SchemaCommand::DeclareAttribute(AttributeDeclared {
            class: CiClass::Host,
            attribute: DeclaredAttribute {
                name: name.into(),
                attr_type: DeclaredType::Integer { min: 1, max: 48 },
                required,
                description: None,
            },
        })
    };
    // Setting it before it is declared is refused.
    let early = run(
        &store,
        CiCommand::Update(
            CiId(Uuid::from_u128(1)),
            Update { set_attributes: attrs(json!({"rack_unit": 12})), ..Update::default() },
        ),
    )
    .await;
    assert!(matches!(early, Err(Error::Ci(CiError::UnknownAttribute { .. }))), "{early:?}");
    declare(&store, &rack("rack_unit", false), metadata()).await.expect("declare");
    run(
        &store,
        CiCommand::Update(
            CiId(Uuid::from_u128(1)),
            Update { set_attributes: attrs(json!({"rack_unit": 12})), ..Update::default() },
        ),
    )
    .await
    .expect("now allowed");
    let out_of_range = run(
        &store,
        CiCommand::Update(
            CiId(Uuid::from_u128(1)),
            Update { set_attributes: attrs(json!({"rack_unit": 99})), ..Update::default() },
        ),
    )
    .await;
    assert!(matches!(out_of_range, Err(Error::Ci(CiError::InvalidAttribute { .. }))));
    // The first version reads exactly as it was written.
    assert_eq!(store.event_at(first).await.expect("read").expect("present"), before);
    // A host registered without the new optional attribute is still fine.
    run(
        &store,
        register(
            2,
            CiClass::Host,
            "h2",
            json!({"hostname": "h2", "ip_addresses": ["10.0.0.2"], "os": "linux", "cpu_cores": 2, "memory_mib": 1024}),
        ),
    )
    .await
    .expect("optional");

    // Clashes and other bad declarations: clear errors, nothing appended.
    let head = store.head().await.expect("head");
    let refused = [
        rack("hostname", false),
        rack("description", false),
        rack("rack_unit", false),
        rack("new_required", true),
        rack("Bad Name", false),
        SchemaCommand::DeclareClass(ClassDeclared { like: CiClass::Host, ..terminal_class() }),
        SchemaCommand::DeclareClass(ClassDeclared { name: CiClass::Host, ..terminal_class() }),
        SchemaCommand::DeclareAttribute(AttributeDeclared {
            class: CiClass::declared("never_declared").expect("name"),
            attribute: DeclaredAttribute {
                name: "x".into(),
                attr_type: DeclaredType::Text,
                required: false,
                description: None,
            },
        }),
    ];
    let mut results = Vec::new();
    for (index, command) in refused.iter().enumerate() {
        if index == 5 {
            declare(&store, &SchemaCommand::DeclareClass(terminal_class()), metadata())
                .await
                .expect("first declaration");
        }
        let head_before = store.head().await.expect("head");
        let result = declare(&store, command, metadata()).await;
        assert_eq!(store.head().await.expect("head"), head_before, "refused declaration {index} appended");
        results.push(result);
    }
    let clash = |r: &Result<_, Error>| matches!(r, Err(Error::Ci(CiError::AttributeClash { .. })));
    assert!(clash(&results[0]) && clash(&results[1]) && clash(&results[2]), "{results:?}");
    assert!(results[0].as_ref().expect_err("clash").to_string().contains("built in"));
    assert!(matches!(&results[3], Err(Error::Ci(CiError::InvalidDeclaration(m))) if m.contains("optional")));
    assert!(matches!(&results[4], Err(Error::Ci(CiError::InvalidAttributeName(_)))));
    assert!(matches!(&results[5], Err(Error::Ci(CiError::Model(ModelError::ClassNameTaken(_))))), "{:?}", results[5]);
    assert!(matches!(&results[6], Err(Error::Ci(CiError::Model(ModelError::ClassNameTaken(_))))));
    assert!(matches!(&results[7], Err(Error::Ci(CiError::UnknownClass(_)))));
    let _ = head;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_in_flight_makes_a_ci_command_decide_again() {
    // The CI append is conditional on the schema version it was validated against; the
    // service re-decides after a conflict, so a racing declaration never lets an invalid CI in.
    let store = Arc::new(MemoryStore::new(MemoryOptions::default()));
    let mut tasks = Vec::new();
    for n in 0..20u128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let host = json!({"hostname": format!("h{n}"), "ip_addresses": ["10.0.0.1"], "os": "linux", "cpu_cores": 2, "memory_mib": 1024});
            run(&store, register(n + 1, CiClass::Host, &format!("h{n}"), host)).await
        }));
    }
    for n in 0..5 {
        let declaration = SchemaCommand::DeclareAttribute(AttributeDeclared {
            class: CiClass::Host,
            attribute: DeclaredAttribute {
                name: format!("extra_{n}"),
                attr_type: DeclaredType::Text,
                required: false,
                description: None,
            },
        });
        declare(store.as_ref(), &declaration, metadata()).await.expect("declare");
    }
    for task in tasks {
        task.await.expect("task").expect("every registration lands, re-decided if needed");
    }
    let registry = registry::load(store.as_ref()).await.expect("load");
    assert_eq!(registry.extra[&CiClass::Host].len(), 5);
}
