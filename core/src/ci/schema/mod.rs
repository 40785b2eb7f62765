//! The schema of CIs: the built-in classes' attributes ([`builtin`]), the registry of classes
//! and attributes admins declared and of which classes are uncontrolled ([`registry`], the
//! fold of the `schema` stream), checking values against both ([`check`]), and the decider of
//! declarations ([`decide`]).
//!
//! A CI command validates against the registry as it stands when the command is decided, and
//! its append is conditional on the registry's version. Declarations only add (a class, an
//! optional attribute), so no recorded version of a CI ever reads differently after a schema
//! change.

pub mod builtin;
pub mod check;
pub mod decide;
pub mod registry;

pub use builtin::{AttrSpec, AttrType, MAX_ATTRIBUTES, MEMBERS_TO_FAIL, attribute_spec, class_attributes};
pub use check::{check_complete, check_value};
pub use decide::{SchemaCommand, SchemaDecider, SchemaEvent, SchemaKey, declare_uncontrolled, load};
pub use registry::{
    AttrRef, AttributeDeclared, ClassDeclared, ControlDeclared, CustomClassDef, DeclaredAttribute, DeclaredType,
    REDUNDANCY_DECLARED, RedundancyDeclared, SCHEMA_STREAM, SchemaRegistry, schema_stream,
};
