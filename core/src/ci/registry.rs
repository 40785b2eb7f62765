//! The schema registry: custom classes and attributes declared by admins, as events in the
//! `schema` stream. A CI command validates against the registry as it stands when the command
//! is decided, and its append is conditional on the registry's version. Declarations only
//! add (a class, an optional attribute), so no recorded version of a CI ever reads
//! differently after a schema change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CiError;
use super::model::CiClass;
use super::schema::{AttrSpec, COMMON_ATTRIBUTES, class_attributes};
use crate::event::{EventRecord, Metadata, NewEvent, StreamId};
use crate::store::{AppendOutcome, AppendRequest, Direction, EventStore, ExpectedVersion, StoreError};

/// The stream holding every schema declaration.
pub const SCHEMA_STREAM: &str = "schema";
/// Most custom classes.
pub const MAX_CUSTOM_CLASSES: usize = 200;
/// Most declared attributes per class.
pub const MAX_DECLARED_ATTRIBUTES: usize = 64;
/// Most choices of a choice attribute.
pub const MAX_CHOICES: usize = 100;
/// Longest attribute name or description, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 63;
pub const MAX_SCHEMA_TEXT_BYTES: usize = 500;

pub const CLASS_DECLARED: &str = "schema.class_declared";
pub const ATTRIBUTE_DECLARED: &str = "schema.attribute_declared";
pub const CONTROL_DECLARED: &str = "schema.class_control_declared";
/// Longest reason for declaring a class (un)controlled, in bytes.
pub const MAX_CONTROL_REASON_BYTES: usize = 1000;

pub fn schema_stream() -> StreamId {
    StreamId::new(SCHEMA_STREAM).expect("valid stream id")
}

/// The type of a declared attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeclaredType {
    Text,
    Integer { min: i64, max: i64 },
    Number { min: f64, max: f64 },
    Boolean,
    Choice { choices: Vec<String> },
    TextList,
    IpAddressList,
    Date,
    Url,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeclaredAttribute {
    pub name: String,
    #[serde(flatten)]
    pub attr_type: DeclaredType,
    pub required: bool,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassDeclared {
    pub name: CiClass,
    /// The built-in class it behaves like for relationships and references.
    pub like: CiClass,
    pub description: Option<String>,
    pub attributes: Vec<DeclaredAttribute>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributeDeclared {
    pub class: CiClass,
    pub attribute: DeclaredAttribute,
}

/// An admin's declaration that edits to a class do (or no longer) need an implementing change
/// (CM-3: uncontrolled classes are declared explicitly, never by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlDeclared {
    pub class: CiClass,
    pub controlled: bool,
    pub reason: String,
}

/// A declared class as the registry holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomClassDef {
    pub like: CiClass,
    pub description: Option<String>,
    pub attributes: Vec<DeclaredAttribute>,
}

/// One attribute's spec, built in or declared.
#[derive(Clone, Copy, Debug)]
pub enum AttrRef<'a> {
    Builtin(&'static AttrSpec),
    Declared(&'a DeclaredAttribute),
}

impl AttrRef<'_> {
    pub fn name(&self) -> &str {
        match self {
            AttrRef::Builtin(spec) => spec.name,
            AttrRef::Declared(attribute) => &attribute.name,
        }
    }

    pub fn required(&self) -> bool {
        match self {
            AttrRef::Builtin(spec) => spec.required,
            AttrRef::Declared(attribute) => attribute.required,
        }
    }

    pub fn is_builtin(&self) -> bool {
        matches!(self, AttrRef::Builtin(_))
    }
}

/// The fold of the schema stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaRegistry {
    pub version: Option<u64>,
    pub classes: BTreeMap<CiClass, CustomClassDef>,
    /// Declared attributes added to built-in classes.
    pub extra: BTreeMap<CiClass, Vec<DeclaredAttribute>>,
    /// Classes declared uncontrolled: edits need no change (every other class needs one).
    #[serde(default)]
    pub uncontrolled: std::collections::BTreeSet<CiClass>,
}

impl SchemaRegistry {
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), CiError> {
        let bad = |e: serde_json::Error| CiError::Undecodable { position: record.position, detail: e.to_string() };
        match record.event_type.as_str() {
            CLASS_DECLARED => {
                let declared: ClassDeclared = record.data_as().map_err(bad)?;
                self.classes.insert(
                    declared.name,
                    CustomClassDef {
                        like: declared.like,
                        description: declared.description,
                        attributes: declared.attributes,
                    },
                );
            }
            ATTRIBUTE_DECLARED => {
                let declared: AttributeDeclared = record.data_as().map_err(bad)?;
                match self.classes.get_mut(&declared.class) {
                    Some(custom) => custom.attributes.push(declared.attribute),
                    None => self.extra.entry(declared.class).or_default().push(declared.attribute),
                }
            }
            CONTROL_DECLARED => {
                let declared: ControlDeclared = record.data_as().map_err(bad)?;
                if declared.controlled {
                    self.uncontrolled.remove(&declared.class);
                } else {
                    self.uncontrolled.insert(declared.class);
                }
            }
            _ => {}
        }
        self.version = Some(record.stream_version);
        Ok(())
    }

    /// Whether edits to CIs of `class` need an implementing change (CM-3).
    pub fn controlled(&self, class: CiClass) -> bool {
        !self.uncontrolled.contains(&class)
    }

    pub fn knows(&self, class: CiClass) -> bool {
        class.is_builtin() || self.classes.contains_key(&class)
    }

    /// The built-in class a class behaves like (itself when built in).
    pub fn like(&self, class: CiClass) -> CiClass {
        self.classes.get(&class).map_or(class, |c| c.like)
    }

    /// Every attribute of a class: built in, common, declared.
    pub fn attributes(&self, class: CiClass) -> Vec<AttrRef<'_>> {
        let mut all: Vec<AttrRef<'_>> =
            class_attributes(class).iter().chain(COMMON_ATTRIBUTES).map(AttrRef::Builtin).collect();
        if let Some(custom) = self.classes.get(&class) {
            all.extend(custom.attributes.iter().map(AttrRef::Declared));
        }
        if let Some(extra) = self.extra.get(&class) {
            all.extend(extra.iter().map(AttrRef::Declared));
        }
        all
    }

    pub fn attribute(&self, class: CiClass, name: &str) -> Option<AttrRef<'_>> {
        self.attributes(class).into_iter().find(|a| a.name() == name)
    }

    /// Every class known: built in and declared.
    pub fn all_classes(&self) -> Vec<CiClass> {
        CiClass::BUILTIN.iter().copied().chain(self.classes.keys().copied()).collect()
    }
}

/// An admin's schema command.
#[derive(Clone, Debug, PartialEq)]
pub enum SchemaCommand {
    DeclareClass(ClassDeclared),
    DeclareAttribute(AttributeDeclared),
    DeclareControl(ControlDeclared),
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
        DeclaredType::Choice { choices } => {
            if choices.is_empty()
                || choices.len() > MAX_CHOICES
                || choices.iter().any(|c| c.is_empty() || c.len() > MAX_ATTRIBUTE_NAME_BYTES)
            {
                return Err(CiError::InvalidDeclaration(format!(
                    "attribute {name:?}: choices must be 1 to {MAX_CHOICES} non-empty names of at most {MAX_ATTRIBUTE_NAME_BYTES} bytes"
                )));
            }
        }
        DeclaredType::Integer { min, max } if min > max => {
            return Err(CiError::InvalidDeclaration(format!("attribute {name:?}: min {min} is above max {max}")));
        }
        DeclaredType::Number { min, max } if !(min <= max) => {
            return Err(CiError::InvalidDeclaration(format!("attribute {name:?}: min {min} is above max {max}")));
        }
        _ => {}
    }
    Ok(())
}

/// Decides a schema command against the registry. Pure.
pub fn decide(
    registry: &SchemaRegistry,
    command: &SchemaCommand,
) -> Result<(&'static str, serde_json::Value), CiError> {
    match command {
        SchemaCommand::DeclareClass(declared) => {
            if declared.name.is_builtin() || registry.classes.contains_key(&declared.name) {
                return Err(CiError::ClassNameTaken(declared.name.as_str().to_owned()));
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
            Ok((CLASS_DECLARED, serde_json::to_value(declared).unwrap_or_default()))
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
            Ok((ATTRIBUTE_DECLARED, serde_json::to_value(declared).unwrap_or_default()))
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
            if declared.reason.trim().is_empty() {
                return Err(CiError::Empty { field: "reason" });
            }
            if declared.reason.len() > MAX_CONTROL_REASON_BYTES {
                return Err(CiError::TooLong {
                    field: "reason",
                    bytes: declared.reason.len(),
                    bound: MAX_CONTROL_REASON_BYTES,
                });
            }
            Ok((CONTROL_DECLARED, serde_json::to_value(declared).unwrap_or_default()))
        }
    }
}

/// Reads the whole schema stream.
pub async fn load(store: &dyn EventStore) -> Result<SchemaRegistry, crate::Error> {
    let stream = schema_stream();
    let page = store.limits().max_page_events;
    let mut registry = SchemaRegistry::default();
    loop {
        let from = registry.version.map_or(0, |v| v + 1);
        let records = store.read_stream(&stream, Direction::Forward, Some(from), page).await?;
        if records.is_empty() {
            return Ok(registry);
        }
        for record in &records {
            registry.apply(record)?;
        }
    }
}

/// Executes a schema command, conditional on the registry version it was decided against.
pub async fn execute(
    store: &dyn EventStore,
    command: &SchemaCommand,
    metadata: Metadata,
) -> Result<AppendOutcome, crate::Error> {
    for _ in 0..super::service::MAX_COMMAND_ATTEMPTS {
        let registry = load(store).await?;
        let (event_type, data) = decide(&registry, command)?;
        let event =
            NewEvent::json(event_type, &data, metadata.clone()).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let expected = registry.version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        match store.append(AppendRequest::single(schema_stream(), expected, vec![event])).await {
            Ok(outcome) => return Ok(outcome),
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(crate::Error::Contended { stream: SCHEMA_STREAM.into(), attempts: super::service::MAX_COMMAND_ATTEMPTS })
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
        match execute(store, &command, metadata.clone()).await {
            Ok(_) => {}
            // Another writer declared it first.
            Err(_) if !load(store).await?.controlled(*class) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(())
}
