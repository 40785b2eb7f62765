//! The schema registry: custom classes and attributes declared by admins, as events in the
//! `schema` stream. A CI command validates against the registry as it stands when the command
//! is decided, and its append is conditional on the registry's version. Declarations only
//! add (a class, an optional attribute), so no recorded version of a CI ever reads
//! differently after a schema change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::builtin::{AttrSpec, COMMON_ATTRIBUTES, class_attributes};
use crate::ci::CiError;
use crate::event::{FoldRecord, StreamId};
use crate::model::CiClass;

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
/// Longest description, in bytes.
pub const MAX_SCHEMA_TEXT_BYTES: usize = 500;

/// The type of the event `schema.class_declared`.
pub const CLASS_DECLARED: &str = "schema.class_declared";
/// The type of the event `schema.attribute_declared`.
pub const ATTRIBUTE_DECLARED: &str = "schema.attribute_declared";
/// The type of the event `schema.class_control_declared`.
pub const CONTROL_DECLARED: &str = "schema.class_control_declared";
/// Longest reason for declaring a class (un)controlled, in bytes.
pub const MAX_CONTROL_REASON_BYTES: usize = 1000;
/// The type of the event `schema.class_redundancy_declared`.
pub const REDUNDANCY_DECLARED: &str = "schema.class_redundancy_declared";

/// The schema stream.
pub fn schema_stream() -> StreamId {
    StreamId::new(SCHEMA_STREAM).expect("valid stream id")
}

/// The type of a declared attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeclaredType {
    /// Text.
    Text,
    /// An integer in a range.
    Integer {
        /// The smallest value allowed.
        min: i64,
        /// The largest value allowed.
        max: i64,
    },
    /// A number in a range.
    Number {
        /// The smallest value allowed.
        min: f64,
        /// The largest value allowed.
        max: f64,
    },
    /// True or false.
    Boolean,
    /// One of fixed names.
    Choice {
        /// The values allowed.
        choices: Vec<String>,
    },
    /// A list of text.
    TextList,
    /// A list of IP addresses.
    IpAddressList,
    /// A date, YYYY-MM-DD.
    Date,
    /// A URL (http, https, ssh or git).
    Url,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// An attribute an admin declared.
pub struct DeclaredAttribute {
    /// The name.
    pub name: String,
    #[serde(flatten)]
    /// Its type.
    pub attr_type: DeclaredType,
    /// Whether a CI must have it.
    pub required: bool,
    /// A description.
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// A custom class was declared.
pub struct ClassDeclared {
    /// The name.
    pub name: CiClass,
    /// The built-in class it behaves like for relationships and references.
    pub like: CiClass,
    /// A description.
    pub description: Option<String>,
    /// Its attributes.
    pub attributes: Vec<DeclaredAttribute>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// An optional attribute was added to a class.
pub struct AttributeDeclared {
    /// The class.
    pub class: CiClass,
    /// The attribute.
    pub attribute: DeclaredAttribute,
}

/// An admin's declaration that edits to a class do (or no longer) need an implementing change
/// (CM-3: uncontrolled classes are declared explicitly, never by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlDeclared {
    /// The class.
    pub class: CiClass,
    /// Whether edits need an implementing change (CM-3).
    pub controlled: bool,
    /// Why.
    pub reason: String,
}

/// An admin's declaration that the CIs of a class are (or are no longer) redundant groups: a
/// cluster, a load-balanced pool, a replica set. A redundant group is down only when the number
/// of its members (the CIs `part_of` it) given by its `members_to_fail` attribute are down (all
/// of them by default); fewer leave it degraded (CM-2, CH-2; issue 15).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedundancyDeclared {
    /// The class.
    pub class: CiClass,
    /// Whether its CIs are redundant groups.
    pub redundant: bool,
    /// Why.
    pub reason: String,
}

/// A declared class as the registry holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomClassDef {
    /// The built-in class it behaves like for relationships and references.
    pub like: CiClass,
    /// A description.
    pub description: Option<String>,
    /// Its attributes.
    pub attributes: Vec<DeclaredAttribute>,
}

/// One attribute's spec, built in or declared.
#[derive(Clone, Copy, Debug)]
pub enum AttrRef<'a> {
    /// Built in.
    Builtin(&'static AttrSpec),
    /// Declared.
    Declared(&'a DeclaredAttribute),
}

impl AttrRef<'_> {
    /// The attribute's name.
    pub fn name(&self) -> &str {
        match self {
            AttrRef::Builtin(spec) => spec.name,
            AttrRef::Declared(attribute) => &attribute.name,
        }
    }

    /// Whether a CI must have it.
    pub fn required(&self) -> bool {
        match self {
            AttrRef::Builtin(spec) => spec.required,
            AttrRef::Declared(attribute) => attribute.required,
        }
    }

    /// Whether it is built in.
    pub fn is_builtin(&self) -> bool {
        matches!(self, AttrRef::Builtin(_))
    }
}

/// The fold of the schema stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaRegistry {
    /// The stream version folded.
    pub version: Option<u64>,
    /// Classes to keep.
    pub classes: BTreeMap<CiClass, CustomClassDef>,
    /// Declared attributes added to built-in classes.
    pub extra: BTreeMap<CiClass, Vec<DeclaredAttribute>>,
    /// Classes declared uncontrolled: edits need no change (every other class needs one).
    #[serde(default)]
    pub uncontrolled: std::collections::BTreeSet<CiClass>,
    /// Classes whose redundancy was declared, overriding the built-in default
    /// ([`crate::model::REDUNDANT_BY_DEFAULT`]).
    #[serde(default)]
    pub redundancy: BTreeMap<CiClass, bool>,
}

impl SchemaRegistry {
    /// Folds one stored event.
    pub fn apply(&mut self, record: &FoldRecord) -> Result<(), CiError> {
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
            REDUNDANCY_DECLARED => {
                let declared: RedundancyDeclared = record.data_as().map_err(bad)?;
                self.redundancy.insert(declared.class, declared.redundant);
            }
            _ => {}
        }
        debug_assert!(self.version.is_none_or(|v| v < record.stream_version), "a version only grows");
        self.version = Some(record.stream_version);
        Ok(())
    }

    /// Whether edits to CIs of `class` need an implementing change (CM-3).
    pub fn controlled(&self, class: CiClass) -> bool {
        !self.uncontrolled.contains(&class)
    }

    /// Whether the CIs of `class` are redundant groups: as declared, else as the built-in class
    /// it behaves like is by default.
    pub fn redundant(&self, class: CiClass) -> bool {
        self.redundancy
            .get(&class)
            .copied()
            .unwrap_or_else(|| crate::model::REDUNDANT_BY_DEFAULT.contains(&self.like(class)))
    }

    /// Whether the class exists (built in, or declared).
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

    /// One attribute of a class, by name.
    pub fn attribute(&self, class: CiClass, name: &str) -> Option<AttrRef<'_>> {
        self.attributes(class).into_iter().find(|a| a.name() == name)
    }

    /// Every class known: built in and declared.
    pub fn all_classes(&self) -> Vec<CiClass> {
        CiClass::BUILTIN.iter().copied().chain(self.classes.keys().copied()).collect()
    }
}
