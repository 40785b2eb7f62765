//! Classes and attributes over GraphQL: every class with its attributes, and the admin's
//! declarations of custom classes, attributes and uncontrolled classes.

use super::context::{Requires, app, metadata, parse_class, state};
use super::log::Written;
use super::scalars::Position;
use crate::server::errors::{app_error, bad_input};
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject};
use cmdb_core::access::Operation;
use cmdb_core::ci::schema::{
    self as registry, AttrRef, AttributeDeclared, ClassDeclared, DeclaredAttribute, DeclaredType, SchemaCommand,
    SchemaDecider,
};
use cmdb_core::ci::{self as domain};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKind {
    Text,
    Integer,
    Number,
    Boolean,
    Choice,
    TextList,
    IpAddressList,
    Date,
    Url,
}

#[derive(InputObject)]
pub struct AttributeInput {
    /// Lowercase letters, digits and `_`, starting with a letter.
    pub name: String,
    #[graphql(name = "type")]
    pub kind: AttributeKind,
    /// Bounds for INTEGER and NUMBER.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The choices for CHOICE.
    pub choices: Option<Vec<String>>,
    #[graphql(default)]
    pub required: bool,
    pub description: Option<String>,
}

impl AttributeInput {
    fn into_declared(self) -> async_graphql::Result<DeclaredAttribute> {
        let attr_type = match self.kind {
            AttributeKind::Text => DeclaredType::Text,
            AttributeKind::Integer => DeclaredType::Integer {
                min: self.min.map_or(i64::MIN, |v| v as i64),
                max: self.max.map_or(i64::MAX, |v| v as i64),
            },
            AttributeKind::Number => {
                DeclaredType::Number { min: self.min.unwrap_or(f64::MIN), max: self.max.unwrap_or(f64::MAX) }
            }
            AttributeKind::Boolean => DeclaredType::Boolean,
            AttributeKind::Choice => DeclaredType::Choice {
                choices: self
                    .choices
                    .ok_or_else(|| bad_input(format!("attribute {:?}: CHOICE needs choices", self.name)))?,
            },
            AttributeKind::TextList => DeclaredType::TextList,
            AttributeKind::IpAddressList => DeclaredType::IpAddressList,
            AttributeKind::Date => DeclaredType::Date,
            AttributeKind::Url => DeclaredType::Url,
        };
        Ok(DeclaredAttribute { name: self.name, attr_type, required: self.required, description: self.description })
    }
}

#[derive(InputObject)]
pub struct DeclareClassInput {
    pub name: String,
    /// The built-in class it behaves like for relationships, owners and impact.
    pub like: String,
    pub description: Option<String>,
    #[graphql(default)]
    pub attributes: Vec<AttributeInput>,
}

#[derive(SimpleObject)]
pub struct AttributeInfo {
    pub name: String,
    pub required: bool,
    pub built_in: bool,
    /// The type, as JSON (`{"type": "integer", "min": 1, "max": 4}`, ...).
    #[graphql(name = "type")]
    pub kind: Json<serde_json::Value>,
}

#[derive(SimpleObject)]
pub struct ClassInfo {
    pub name: String,
    pub built_in: bool,
    pub like: String,
    pub description: Option<String>,
    pub attributes: Vec<AttributeInfo>,
    /// Whether edits to its CIs need an implementing change (CM-3); false only when an admin
    /// declared the class uncontrolled.
    pub controlled: bool,
    /// Whether its CIs are redundant groups (a cluster, a pool, a replica set): one is down
    /// only when `members_to_fail` of its members (`part_of` it; all by default) are down,
    /// degraded while fewer are. Kubernetes clusters are by default.
    pub redundant: bool,
}

fn attribute_info(attribute: &AttrRef<'_>) -> AttributeInfo {
    let kind = match attribute {
        AttrRef::Builtin(spec) => serde_json::json!({ "type": spec.attr_type.describe() }),
        AttrRef::Declared(declared) => serde_json::to_value(&declared.attr_type).unwrap_or_default(),
    };
    AttributeInfo {
        name: attribute.name().to_owned(),
        required: attribute.required(),
        built_in: attribute.is_builtin(),
        kind: Json(kind),
    }
}

/// Every class, built in and declared, with its attributes.
pub fn classes(ctx: &Context<'_>) -> Vec<ClassInfo> {
    let graph = state(ctx).graph.read();
    let schema = graph.schema();
    schema
        .all_classes()
        .into_iter()
        .map(|class| ClassInfo {
            name: class.as_str().to_owned(),
            built_in: class.is_builtin(),
            like: schema.like(class).as_str().to_owned(),
            description: schema.classes.get(&class).and_then(|c| c.description.clone()),
            attributes: schema.attributes(class).iter().map(attribute_info).collect(),
            controlled: schema.controlled(class),
            redundant: schema.redundant(class),
        })
        .collect()
}

async fn run(ctx: &Context<'_>, command: SchemaCommand) -> async_graphql::Result<Written> {
    let outcome = app(ctx).run(&SchemaDecider, &command, metadata(ctx)?).await.map_err(app_error)?.outcome;
    Ok(Written { position: Position(outcome.last_position) })
}

#[derive(Default)]
pub struct ClassMutation;

#[Object]
impl ClassMutation {
    /// Declares a custom class with its attributes. Existing data is never reinterpreted.
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn declare_class(&self, ctx: &Context<'_>, input: DeclareClassInput) -> async_graphql::Result<Written> {
        let name = domain::CiClass::declared(&input.name).map_err(|e| bad_input(e.to_string()))?;
        let like = parse_class(ctx, &input.like)?;
        let attributes = input.attributes.into_iter().map(AttributeInput::into_declared).collect::<Result<_, _>>()?;
        run(ctx, SchemaCommand::DeclareClass(ClassDeclared { name, like, description: input.description, attributes }))
            .await
    }

    /// Adds an optional attribute to a built-in or declared class.
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn declare_attribute(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {class, attribute}")] class: Option<String>,
        #[graphql(deprecation = "pass input: {class, attribute}")] attribute: Option<AttributeInput>,
        input: Option<DeclareAttributeInput>,
    ) -> async_graphql::Result<Written> {
        let any_loose = class.is_some() || attribute.is_some();
        let loose = class.zip(attribute).map(|(class, attribute)| DeclareAttributeInput { class, attribute });
        let DeclareAttributeInput { class, attribute } =
            super::inputs::input_or(input, loose, any_loose, "{class, attribute}")?;
        let class = parse_class(ctx, &class)?;
        let attribute = attribute.into_declared()?;
        run(ctx, SchemaCommand::DeclareAttribute(AttributeDeclared { class, attribute })).await
    }

    /// Declares whether edits to a class need an implementing change (CM-3). Every class is
    /// controlled unless declared otherwise; the declaration and its reason are audited events.
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn declare_class_control(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {class, controlled, reason}")] class: Option<String>,
        #[graphql(deprecation = "pass input: {class, controlled, reason}")] controlled: Option<bool>,
        #[graphql(deprecation = "pass input: {class, controlled, reason}")] reason: Option<String>,
        input: Option<DeclareClassControlInput>,
    ) -> async_graphql::Result<Written> {
        let any_loose = class.is_some() || controlled.is_some() || reason.is_some();
        let loose = class.zip(controlled).zip(reason).map(|((class, controlled), reason)| DeclareClassControlInput {
            class,
            controlled,
            reason,
        });
        let DeclareClassControlInput { class, controlled, reason } =
            super::inputs::input_or(input, loose, any_loose, "{class, controlled, reason}")?;
        let class = parse_class(ctx, &class)?;
        run(ctx, SchemaCommand::DeclareControl(registry::ControlDeclared { class, controlled, reason })).await
    }

    /// Declares whether the CIs of a class are redundant groups (CM-2, CH-2): a failure of
    /// some of a group's members (`part_of` it) leaves it `DEGRADED`; it is `DOWN` only when
    /// its `members_to_fail` attribute's count of members (all by default) are down. Impact
    /// at positions before the declaration keeps the rule in force then.
    #[graphql(guard = "Requires(Operation::ManageSchema)")]
    async fn declare_class_redundancy(
        &self,
        ctx: &Context<'_>,
        #[graphql(deprecation = "pass input: {class, redundant, reason}")] class: Option<String>,
        #[graphql(deprecation = "pass input: {class, redundant, reason}")] redundant: Option<bool>,
        #[graphql(deprecation = "pass input: {class, redundant, reason}")] reason: Option<String>,
        input: Option<DeclareClassRedundancyInput>,
    ) -> async_graphql::Result<Written> {
        let any_loose = class.is_some() || redundant.is_some() || reason.is_some();
        let loose = class.zip(redundant).zip(reason).map(|((class, redundant), reason)| DeclareClassRedundancyInput {
            class,
            redundant,
            reason,
        });
        let DeclareClassRedundancyInput { class, redundant, reason } =
            super::inputs::input_or(input, loose, any_loose, "{class, redundant, reason}")?;
        let class = parse_class(ctx, &class)?;
        run(ctx, SchemaCommand::DeclareRedundancy(registry::RedundancyDeclared { class, redundant, reason })).await
    }
}

/// `declareAttribute(input:)`.
#[derive(async_graphql::InputObject)]
pub struct DeclareAttributeInput {
    class: String,
    attribute: AttributeInput,
}

/// `declareClassControl(input:)`.
#[derive(async_graphql::InputObject)]
pub struct DeclareClassControlInput {
    class: String,
    controlled: bool,
    reason: String,
}

/// `declareClassRedundancy(input:)`.
#[derive(async_graphql::InputObject)]
pub struct DeclareClassRedundancyInput {
    class: String,
    redundant: bool,
    reason: String,
}
