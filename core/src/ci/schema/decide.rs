//! The schema decider: admins declare custom classes, attributes, and which classes are
//! uncontrolled (CM-3), as events on the `schema` stream.

use super::registry::{
    ATTRIBUTE_DECLARED, AttributeDeclared, CLASS_DECLARED, CONTROL_DECLARED, ClassDeclared, ControlDeclared,
    DeclaredAttribute, DeclaredType, MAX_ATTRIBUTE_NAME_BYTES, MAX_CHOICES, MAX_CONTROL_REASON_BYTES,
    MAX_CUSTOM_CLASSES, MAX_DECLARED_ATTRIBUTES, MAX_SCHEMA_TEXT_BYTES, REDUNDANCY_DECLARED, RedundancyDeclared,
    SchemaRegistry, schema_stream,
};
use crate::ci::CiError;
use crate::decider::{CommandContext, Decider, Decision, DomainEvent, ReadSet, StreamKey, execute, fold};
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::model::{CiClass, ModelError};
use crate::store::EventStore;

/// The schema stream, as a decision reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaKey;

impl StreamKey for SchemaKey {
    type State = SchemaRegistry;

    fn streams(&self) -> Vec<StreamId> {
        vec![schema_stream()]
    }

    fn initial(&self) -> SchemaRegistry {
        SchemaRegistry::default()
    }

    fn evolve(&self, state: &mut SchemaRegistry, record: &EventRecord) -> Result<(), crate::Error> {
        Ok(state.apply(record)?)
    }
}

/// A schema declaration, as appended.
#[derive(Clone, Debug, PartialEq)]
pub enum SchemaEvent {
    /// A custom class.
    ClassDeclared(ClassDeclared),
    /// An optional attribute added to a class.
    AttributeDeclared(AttributeDeclared),
    /// A class declared controlled or uncontrolled.
    ControlDeclared(ControlDeclared),
    /// A class declared redundant (its CIs are groups) or not.
    RedundancyDeclared(RedundancyDeclared),
}

impl DomainEvent for SchemaEvent {
    fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let (event_type, data) = match self {
            SchemaEvent::ClassDeclared(e) => (CLASS_DECLARED, serde_json::to_vec(e)),
            SchemaEvent::AttributeDeclared(e) => (ATTRIBUTE_DECLARED, serde_json::to_vec(e)),
            SchemaEvent::ControlDeclared(e) => (CONTROL_DECLARED, serde_json::to_vec(e)),
            SchemaEvent::RedundancyDeclared(e) => (REDUNDANCY_DECLARED, serde_json::to_vec(e)),
        };
        // Serialising these plain structs cannot fail.
        NewEvent::raw(event_type, data.unwrap_or_default(), metadata)
    }
}

/// An admin's schema command.
#[derive(Clone, Debug, PartialEq)]
pub enum SchemaCommand {
    /// Declare a custom class.
    DeclareClass(ClassDeclared),
    /// Add an optional attribute to a class.
    DeclareAttribute(AttributeDeclared),
    /// Declare a class controlled or uncontrolled.
    DeclareControl(ControlDeclared),
    /// Declare a class's CIs redundant groups, or not.
    DeclareRedundancy(RedundancyDeclared),
}

/// Decides schema commands.
#[derive(Clone, Copy, Debug, Default)]
pub struct SchemaDecider;

impl Decider for SchemaDecider {
    type Command = SchemaCommand;
    type Key = SchemaKey;
    type Event = SchemaEvent;
    type Error = CiError;
    const NAME: &'static str = "schema";

    fn reads(&self, _command: &SchemaCommand, _read: &ReadSet<SchemaKey>) -> Vec<SchemaKey> {
        vec![SchemaKey]
    }

    fn decide(
        &self,
        command: &SchemaCommand,
        read: &ReadSet<SchemaKey>,
        _context: &CommandContext,
    ) -> Result<Decision<SchemaKey, SchemaEvent>, CiError> {
        let registry = read.get(&SchemaKey).cloned().unwrap_or_default();
        let mut decision = Decision::default();
        decision.write(SchemaKey, decide_declaration(&registry, command)?);
        Ok(decision)
    }
}

/// The registry as the store holds it now.
pub async fn load(store: &dyn EventStore) -> Result<SchemaRegistry, crate::Error> {
    fold::load(store, &SchemaKey).await
}

fn check_text(field: &'static str, text: Option<&str>) -> Result<(), CiError> {
    match text {
        Some(text) if text.len() > MAX_SCHEMA_TEXT_BYTES => {
            Err(CiError::TooLong { field, bytes: text.len(), bound: MAX_SCHEMA_TEXT_BYTES })
        }
        _ => Ok(()),
    }
}

fn check_attribute(
    registry: &SchemaRegistry,
    class: CiClass,
    attribute: &DeclaredAttribute,
    taken: &[&str],
) -> Result<(), CiError> {
    let name = &attribute.name;
    let shaped = !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME_BYTES
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !shaped {
        return Err(CiError::InvalidAttributeName(name.clone()));
    }
    if let Some(existing) = registry.attribute(class, name) {
        return Err(CiError::AttributeClash { class, attribute: name.clone(), builtin: existing.is_builtin() });
    }
    if taken.contains(&name.as_str()) {
        return Err(CiError::AttributeClash { class, attribute: name.clone(), builtin: false });
    }
    check_text("description", attribute.description.as_deref())?;
    match &attribute.attr_type {
        DeclaredType::Choice { choices }
            if (choices.is_empty()
                || choices.len() > MAX_CHOICES
                || choices.iter().any(|c| c.is_empty() || c.len() > MAX_ATTRIBUTE_NAME_BYTES)) =>
        {
            return Err(CiError::InvalidDeclaration(format!(
                "attribute {name:?}: choices must be 1 to {MAX_CHOICES} non-empty names of at most {MAX_ATTRIBUTE_NAME_BYTES} bytes"
            )));
        }
        DeclaredType::Integer { min, max } if min > max => {
            return Err(CiError::InvalidDeclaration(format!("attribute {name:?}: min {min} is above max {max}")));
        }
        DeclaredType::Number { min, max }
            if matches!(min.partial_cmp(max), Some(std::cmp::Ordering::Greater) | None) =>
        {
            return Err(CiError::InvalidDeclaration(format!("attribute {name:?}: min {min} is above max {max}")));
        }
        _ => {}
    }
    Ok(())
}

/// Decides a schema command against the registry. Pure.
fn decide_declaration(registry: &SchemaRegistry, command: &SchemaCommand) -> Result<SchemaEvent, CiError> {
    match command {
        SchemaCommand::DeclareClass(declared) => {
            if declared.name.is_builtin() || registry.classes.contains_key(&declared.name) {
                return Err(ModelError::ClassNameTaken(declared.name.as_str().to_owned()).into());
            }
            if !declared.like.is_builtin() {
                return Err(CiError::InvalidDeclaration(format!(
                    "like must name a built-in class, not {}",
                    declared.like
                )));
            }
            if registry.classes.len() >= MAX_CUSTOM_CLASSES {
                return Err(CiError::InvalidDeclaration(format!(
                    "there are already {MAX_CUSTOM_CLASSES} custom classes (max_custom_classes)"
                )));
            }
            if declared.attributes.len() > MAX_DECLARED_ATTRIBUTES {
                return Err(CiError::TooManyAttributes { count: declared.attributes.len() });
            }
            check_text("description", declared.description.as_deref())?;
            let mut taken: Vec<&str> = Vec::new();
            for attribute in &declared.attributes {
                check_attribute(registry, declared.name, attribute, &taken)?;
                taken.push(&attribute.name);
            }
            Ok(SchemaEvent::ClassDeclared(declared.clone()))
        }
        SchemaCommand::DeclareAttribute(declared) => {
            if !registry.knows(declared.class) {
                return Err(CiError::UnknownClass(declared.class.as_str().to_owned()));
            }
            if declared.attribute.required {
                return Err(CiError::InvalidDeclaration(format!(
                    "attribute {:?}: an attribute added to an existing class must be optional (existing CIs do not have it)",
                    declared.attribute.name
                )));
            }
            let count = registry.attributes(declared.class).iter().filter(|a| !a.is_builtin()).count();
            if count >= MAX_DECLARED_ATTRIBUTES {
                return Err(CiError::TooManyAttributes { count: count + 1 });
            }
            check_attribute(registry, declared.class, &declared.attribute, &[])?;
            Ok(SchemaEvent::AttributeDeclared(declared.clone()))
        }
        SchemaCommand::DeclareControl(declared) => {
            if !registry.knows(declared.class) {
                return Err(CiError::UnknownClass(declared.class.as_str().to_owned()));
            }
            if registry.controlled(declared.class) == declared.controlled {
                return Err(CiError::InvalidDeclaration(format!(
                    "class {} is already {}",
                    declared.class,
                    if declared.controlled { "controlled" } else { "uncontrolled" }
                )));
            }
            check_reason(&declared.reason)?;
            Ok(SchemaEvent::ControlDeclared(declared.clone()))
        }
        SchemaCommand::DeclareRedundancy(declared) => {
            if !registry.knows(declared.class) {
                return Err(CiError::UnknownClass(declared.class.as_str().to_owned()));
            }
            if registry.redundant(declared.class) == declared.redundant {
                return Err(CiError::InvalidDeclaration(format!(
                    "class {} is already {}",
                    declared.class,
                    if declared.redundant { "redundant" } else { "not redundant" }
                )));
            }
            check_reason(&declared.reason)?;
            Ok(SchemaEvent::RedundancyDeclared(declared.clone()))
        }
    }
}

fn check_reason(reason: &str) -> Result<(), CiError> {
    if reason.trim().is_empty() {
        return Err(CiError::Empty { field: "reason" });
    }
    if reason.len() > MAX_CONTROL_REASON_BYTES {
        return Err(CiError::TooLong { field: "reason", bytes: reason.len(), bound: MAX_CONTROL_REASON_BYTES });
    }
    Ok(())
}

/// Declares each of `classes` uncontrolled (skipping those already so): for imports of
/// classes a team manages outside change control, and for tests of other rules. Each
/// declaration is an audited event.
pub async fn declare_uncontrolled(
    store: &dyn EventStore,
    classes: &[CiClass],
    reason: &str,
    metadata: Metadata,
) -> Result<(), crate::Error> {
    for class in classes {
        if !load(store).await?.controlled(*class) {
            continue;
        }
        let command = SchemaCommand::DeclareControl(ControlDeclared {
            class: *class,
            controlled: false,
            reason: reason.to_owned(),
        });
        let context = CommandContext::new(metadata.clone(), crate::time::Timestamp::from_micros(0));
        match execute(store, &SchemaDecider, &command, &context, None).await {
            Ok(_) => {}
            // Another writer declared it first.
            Err(_) if !load(store).await?.controlled(*class) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(())
}
