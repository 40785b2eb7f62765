//! What a GraphQL operation may cost, worked out from its text before any of it runs: the
//! worst-case number of values it can resolve (its cost), its deepest nesting, and the number
//! of fields its text expands to once fragments are spread. Pure: no I/O, no clock.
//!
//! The model (issue 20):
//! - a field costs 1; a field with a selection costs 1 plus its children times its
//!   *multiplier*;
//! - the multiplier of a field with a `first` argument is that page size (a literal or a
//!   variable; the server's `max_page_size` when absent, and never more); of any other list
//!   field, the bound its domain puts on its length ([`LIST_BOUNDS`]), else `max_page_size`;
//!   the `edges` and `nodes` of a connection or page are paged by the field that made it;
//! - aliases are fields like any other; `__schema` costs what the whole schema's introspection
//!   can return and `__type` one type's;
//! - fragments are costed once each (memoised), so a document that spreads a fragment twice
//!   per level is measured in time linear in its text, and refused when what it expands to
//!   passes `max_query_fields`, long before anything expands it.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
    ServiceDocument, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, Variables};
use async_graphql_value::Value;

/// How deep fragment spreads may nest inside each other (a fragment spreading one that
/// spreads another ...). Bounds the walk's recursion, whatever the document's length.
pub const MAX_FRAGMENT_NESTING: usize = 64;

/// Lists whose length the domain bounds, with that bound: they cost it rather than the page
/// maximum. Each bound is a constant the domain enforces, never an estimate.
pub const LIST_BOUNDS: &[(&str, &str, u64)] = &[
    ("Approval", "countsFor", cmdb_core::access::Role::ALL.len() as u64),
    ("Approval", "rolesHeld", cmdb_core::access::Role::ALL.len() as u64),
    ("Me", "roles", cmdb_core::access::Role::ALL.len() as u64),
    ("Principal", "roles", cmdb_core::access::Role::ALL.len() as u64),
    ("Change", "allowedActions", cmdb_core::change::ChangeAction::ALL.len() as u64),
    ("Change", "links", cmdb_core::change::MAX_LINKS_PER_CHANGE as u64),
    ("Change", "comments", cmdb_core::change::MAX_COMMENTS_PER_CHANGE as u64),
    ("Change", "assessments", cmdb_core::change::MAX_ASSESSMENTS_PER_CHANGE as u64),
    ("ChangeScope", "cis", cmdb_core::change::MAX_SCOPE_ITEMS as u64),
    ("ChangeScope", "planned", cmdb_core::change::MAX_SCOPE_ITEMS as u64),
    ("ChangeReview", "followUpActions", cmdb_core::change::MAX_FOLLOW_UP_ACTIONS as u64),
    ("ChangeTemplate", "allowedClasses", cmdb_core::change::MAX_TEMPLATE_CLASSES as u64),
    ("ClassInfo", "attributes", cmdb_core::ci::schema::builtin::MAX_ATTRIBUTES as u64),
    ("RiskAssessment", "services", cmdb_core::change::risk::MAX_ASSESSED_SERVICES as u64),
    ("ServiceReached", "ownerContacts", cmdb_projections::assessment::MAX_OWNER_CONTACTS as u64),
    ("Deployment", "observations", cmdb_core::release::observe::MAX_OBSERVATIONS_PER_DEPLOYMENT as u64),
    ("Incident", "cis", cmdb_core::release::observe::MAX_CIS_PER_INCIDENT as u64),
    ("Conflict", "path", cmdb_projections::calendar::MAX_CONFLICT_DEPTH as u64 + 1),
    ("CalendarView", "changes", cmdb_projections::calendar::MAX_CALENDAR_CHANGES as u64),
    ("CalendarView", "serviceHours", cmdb_projections::calendar::MAX_CALENDAR_SERVICES as u64),
    ("ChangeReport", "periods", cmdb_projections::reports::MAX_REPORT_BUCKETS as u64),
    ("DiffCi", "fields", cmdb_projections::diff::MAX_FIELD_CHANGES as u64),
    // Impact and paths: the graph's own bounds, which can be above the page maximum.
    ("ImpactResult", "reached", cmdb_projections::graph::MAX_RESULTS as u64),
    ("ImpactResult", "cycles", cmdb_projections::graph::MAX_CYCLES_REPORTED as u64),
    ("ImpactResult", "roots", cmdb_projections::graph::MAX_IMPACT_ROOTS as u64),
    ("ImpactedCi", "path", cmdb_projections::graph::MAX_DEPTH as u64 + 1),
    ("ImpactedService", "path", cmdb_projections::graph::MAX_DEPTH as u64 + 1),
    ("ImpactedCi", "severityPath", cmdb_projections::graph::MAX_SEVERITY_CHAIN_STEPS as u64),
    ("ImpactedService", "severityPath", cmdb_projections::graph::MAX_SEVERITY_CHAIN_STEPS as u64),
    ("ServiceReached", "severityPath", cmdb_projections::graph::MAX_SEVERITY_CHAIN_STEPS as u64),
    ("At", "path", cmdb_projections::graph::MAX_DEPTH as u64 + 1),
];

/// What [`CostModel::measure`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    /// Worst-case values resolved.
    pub cost: u64,
    /// Deepest field nesting (a top-level leaf is 1).
    pub depth: u64,
    /// Fields in the document once every fragment is spread.
    pub fields: u64,
}

impl Measure {
    fn add(self, other: Measure) -> Measure {
        Measure {
            cost: self.cost.saturating_add(other.cost),
            depth: self.depth.max(other.depth),
            fields: self.fields.saturating_add(other.fields),
        }
    }
}

/// Why an operation was refused before it ran.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message says what its fields are")]
pub enum CostError {
    /// Fragments spread each other in a circle.
    #[error("fragment {0} spreads itself (directly or through other fragments)")]
    FragmentCycle(String),
    /// Fragment spreads nest deeper than [`MAX_FRAGMENT_NESTING`].
    #[error("fragments spread fragments {bound} deep or more: the bound is {bound}")]
    FragmentNesting { bound: usize },
}

/// One field of the schema, as the model needs it.
#[derive(Clone, Debug)]
struct FieldShape {
    /// The named type it returns (list and non-null wrappers removed).
    returns: String,
    /// Whether it returns a list.
    list: bool,
    /// Whether it takes `first`.
    paged: bool,
    /// The bound on its length, if it is a list the domain bounds.
    bound: Option<u64>,
}

/// The schema's fields, read from its SDL, and the settings the model uses.
#[derive(Clone, Debug)]
pub struct CostModel {
    fields: HashMap<(String, String), FieldShape>,
    // Asked for every object a query resolves: a fast hash.
    composite: rustc_hash::FxHashSet<String>,
    roots: [Option<String>; 3],
    max_page_size: u64,
    schema_introspection_cost: u64,
    type_introspection_cost: u64,
}

impl CostModel {
    /// Reads the schema's SDL. `max_page_size` is the page a list without `first` is costed at.
    pub fn from_sdl(sdl: &str, max_page_size: u64) -> Result<CostModel, String> {
        let document: ServiceDocument = async_graphql::parser::parse_schema(sdl).map_err(|e| e.to_string())?;
        let mut fields = HashMap::new();
        let mut composite = rustc_hash::FxHashSet::default();
        let mut roots = [Some("Query".to_owned()), Some("Mutation".to_owned()), Some("Subscription".to_owned())];
        let (mut types, mut largest_type) = (0u64, 0u64);
        for definition in &document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    let schema = &schema.node;
                    roots = [&schema.query, &schema.mutation, &schema.subscription]
                        .map(|name| name.as_ref().map(|n| n.node.to_string()));
                }
                TypeSystemDefinition::Type(definition) => {
                    let definition = &definition.node;
                    let type_name = definition.name.node.to_string();
                    let (declared, size) = match &definition.kind {
                        TypeKind::Object(object) => (object.fields.as_slice(), object.fields.len()),
                        TypeKind::Interface(interface) => (interface.fields.as_slice(), interface.fields.len()),
                        TypeKind::Enum(e) => (&[][..], e.values.len()),
                        TypeKind::InputObject(input) => (&[][..], input.fields.len()),
                        TypeKind::Union(union) => (&[][..], union.members.len()),
                        TypeKind::Scalar => (&[][..], 0),
                    };
                    types += 1;
                    if matches!(definition.kind, TypeKind::Object(_) | TypeKind::Interface(_) | TypeKind::Union(_)) {
                        composite.insert(type_name.clone());
                    }
                    let mut type_size = 1 + size as u64;
                    for field in declared {
                        let field = &field.node;
                        type_size += field.arguments.len() as u64;
                        let name = field.name.node.to_string();
                        let (returns, list) = unwrap_type(&field.ty.node);
                        let paged =
                            field.arguments.iter().any(|a| a.node.name.node == "first" || a.node.name.node == "last");
                        let bound = LIST_BOUNDS
                            .iter()
                            .find(|(t, f, _)| *t == type_name && *f == name)
                            .map(|(_, _, bound)| *bound)
                            .or_else(|| paged_by_parent(&type_name, &name).then_some(1));
                        fields.insert((type_name.clone(), name), FieldShape { returns, list, paged, bound });
                    }
                    largest_type = largest_type.max(type_size);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        // Every type, field, argument and enum value, each with its few own fields (name,
        // description, type reference): a generous bound on what introspection can return.
        const VALUES_PER_INTROSPECTED_ITEM: u64 = 20;
        let items: u64 = types + fields.len() as u64 + fields.values().filter(|f| f.paged).count() as u64;
        Ok(CostModel {
            fields,
            composite,
            roots,
            max_page_size,
            schema_introspection_cost: items.saturating_mul(VALUES_PER_INTROSPECTED_ITEM).max(1),
            type_introspection_cost: largest_type.saturating_mul(VALUES_PER_INTROSPECTED_ITEM).max(1),
        })
    }

    /// Whether a field's return type (as `[Ci!]!`) names an object, interface or union,
    /// whose values are counted field by field rather than as a whole.
    pub fn is_composite(&self, return_type: &str) -> bool {
        self.composite.contains(return_type.trim_matches(|c| c == '[' || c == ']' || c == '!'))
    }

    /// What running `document`'s operation (the one named, or every one when none is) may
    /// cost. Linear in the document's length: each fragment is measured once.
    pub fn measure(
        &self,
        document: &ExecutableDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Result<Measure, CostError> {
        let mut walk = Walk { model: self, document, variables, memo: HashMap::new(), open: Vec::new() };
        let mut worst = Measure::default();
        let mut measure_one = |operation: &OperationDefinition| -> Result<(), CostError> {
            let root = self.roots[operation.ty as usize].clone().unwrap_or_default();
            let measure = walk.selection_set(&operation.selection_set.node, &root)?;
            worst = Measure {
                cost: worst.cost.max(measure.cost),
                depth: worst.depth.max(measure.depth),
                fields: worst.fields.max(measure.fields),
            };
            Ok(())
        };
        match (&document.operations, operation_name) {
            (DocumentOperations::Single(operation), _) => measure_one(&operation.node)?,
            (DocumentOperations::Multiple(operations), Some(name)) => {
                if let Some(operation) = operations.get(name) {
                    measure_one(&operation.node)?;
                }
            }
            (DocumentOperations::Multiple(operations), None) => {
                for operation in operations.values() {
                    measure_one(&operation.node)?;
                }
            }
        }
        Ok(worst)
    }
}

/// `edges` and `nodes` of a connection or page: the field that made it applied `first`.
fn paged_by_parent(type_name: &str, field: &str) -> bool {
    (type_name.ends_with("Connection") || type_name.ends_with("Page")) && (field == "edges" || field == "nodes")
}

fn unwrap_type(ty: &Type) -> (String, bool) {
    match &ty.base {
        BaseType::Named(name) => (name.to_string(), false),
        BaseType::List(inner) => (unwrap_type(inner).0, true),
    }
}

/// One measurement: the memo of fragments measured, and the fragments being measured now.
struct Walk<'a> {
    model: &'a CostModel,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    memo: HashMap<Name, Measure>,
    open: Vec<Name>,
}

impl Walk<'_> {
    fn selection_set(&mut self, set: &SelectionSet, parent: &str) -> Result<Measure, CostError> {
        let mut total = Measure::default();
        for item in &set.items {
            let measure = match &item.node {
                Selection::Field(field) => self.field(&field.node, parent)?,
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on = fragment.type_condition.as_ref().map(|c| c.node.on.node.to_string());
                    self.selection_set(&fragment.selection_set.node, on.as_deref().unwrap_or(parent))?
                }
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node)?,
            };
            total = total.add(measure);
        }
        Ok(total)
    }

    fn fragment(&mut self, name: &Name) -> Result<Measure, CostError> {
        if let Some(measure) = self.memo.get(name) {
            return Ok(*measure);
        }
        if self.open.contains(name) {
            return Err(CostError::FragmentCycle(name.to_string()));
        }
        if self.open.len() >= MAX_FRAGMENT_NESTING {
            return Err(CostError::FragmentNesting { bound: MAX_FRAGMENT_NESTING });
        }
        // A spread of an unknown fragment costs nothing here; validation refuses it.
        let Some(definition) = self.document.fragments.get(name) else { return Ok(Measure::default()) };
        let on = definition.node.type_condition.node.on.node.to_string();
        self.open.push(name.clone());
        let measure = self.selection_set(&definition.node.selection_set.node, &on);
        self.open.pop();
        let measure = measure?;
        self.memo.insert(name.clone(), measure);
        Ok(measure)
    }

    fn field(&mut self, field: &Field, parent: &str) -> Result<Measure, CostError> {
        let name = field.name.node.as_str();
        let shape = self.model.fields.get(&(parent.to_owned(), name.to_owned()));
        let child_type = shape.map_or("", |s| s.returns.as_str());
        let children = self.selection_set(&field.selection_set.node, child_type)?;
        let introspection = match name {
            "__schema" => Some(self.model.schema_introspection_cost),
            "__type" => Some(self.model.type_introspection_cost),
            _ => None,
        };
        let cost = match introspection {
            Some(bound) => bound.max(children.cost),
            None if field.selection_set.node.items.is_empty() => self.multiplier(field, shape),
            None => 1u64.saturating_add(self.multiplier(field, shape).saturating_mul(children.cost)),
        };
        Ok(Measure { cost, depth: children.depth + 1, fields: children.fields.saturating_add(1) })
    }

    /// How many items a field may return (at least 1, so every field of the text counts).
    fn multiplier(&self, field: &Field, shape: Option<&FieldShape>) -> u64 {
        let max = self.model.max_page_size;
        let Some(shape) = shape else { return 1 };
        if shape.paged {
            // `first` or `last` (Relay): the smaller of those given; neither: the page bound.
            let requested = field
                .arguments
                .iter()
                .filter(|(name, _)| name.node == "first" || name.node == "last")
                .map(|(_, value)| match &value.node {
                    Value::Variable(variable) => self.variables.get(variable).and_then(const_integer).unwrap_or(max),
                    value => integer(value).unwrap_or(max),
                })
                .min()
                .unwrap_or(max);
            return requested.clamp(1, max);
        }
        if shape.list { shape.bound.unwrap_or(max).max(1) } else { 1 }
    }
}

fn const_integer(value: &async_graphql::Value) -> Option<u64> {
    match value {
        async_graphql::Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDL: &str = r#"
        schema { query: QueryRoot }
        type QueryRoot { head: Head! events(first: Int, after: String): EventConnection! cis(first: Int): CiConnection! me: Me! }
        type Head { position: Int! }
        type EventConnection { edges: [EventEdge!]! }
        type EventEdge { cursor: String! node: Event! }
        type Event { position: Int! }
        type CiConnection { nodes: [Ci!]! }
        type Ci { name: String! relationships: [Relationship!]! }
        type Relationship { target: Ci! }
        type Me { roles: [String!]! }
    "#;

    fn measure(query: &str, variables: serde_json::Value) -> Result<Measure, CostError> {
        let model = CostModel::from_sdl(SDL, 100).expect("sdl");
        let document = async_graphql::parser::parse_query(query).expect("query");
        model.measure(&document, None, &Variables::from_json(variables))
    }

    #[test]
    fn a_leaf_costs_one_and_a_page_its_size_times_its_children() {
        assert_eq!(measure("{ head { position } }", serde_json::json!({})).expect("ok").cost, 2);
        let page = measure("{ events(first: 10) { edges { cursor } } }", serde_json::json!({})).expect("ok");
        assert_eq!(page, Measure { cost: 1 + 10 * 2, depth: 3, fields: 3 });
        let variable =
            measure("query($n: Int) { events(first: $n) { edges { cursor } } }", serde_json::json!({"n": 7}));
        assert_eq!(variable.expect("ok").cost, 1 + 7 * 2);
    }

    #[test]
    fn a_list_without_first_costs_the_page_maximum_or_its_domain_bound() {
        // No first: the server's maximum (100 here), never more even when asked.
        assert_eq!(measure("{ events { edges { cursor } } }", serde_json::json!({})).expect("ok").cost, 1 + 100 * 2);
        assert_eq!(
            measure("{ events(first: 5000) { edges { cursor } } }", serde_json::json!({})).expect("ok").cost,
            201
        );
        // An unpaged list of objects inside a page multiplies.
        let nested =
            measure("{ cis(first: 10) { nodes { relationships { target { name } } } } }", serde_json::json!({}));
        assert_eq!(nested.expect("ok").cost, 1 + 10 * (1 + (1 + 100 * (1 + 1))));
        // Me.roles is bounded by the roles that exist.
        let roles = cmdb_core::access::Role::ALL.len() as u64;
        assert_eq!(measure("{ me { roles } }", serde_json::json!({})).expect("ok").cost, 1 + roles);
    }

    #[test]
    fn aliases_count_and_fragments_are_measured_without_expanding_them() {
        let aliases: String = (0..1000).map(|i| format!("a{i}: head {{ position }} ")).collect();
        assert_eq!(measure(&format!("{{ {aliases} }}"), serde_json::json!({})).expect("ok").cost, 2000);
        // 40 fragments, each spreading the previous twice: 2^40 fields once expanded.
        let mut text = String::from("{ ...F39 } fragment F0 on QueryRoot { head { position } } ");
        for i in 1..40 {
            text.push_str(&format!("fragment F{i} on QueryRoot {{ ...F{} ...F{} }} ", i - 1, i - 1));
        }
        let started = std::time::Instant::now();
        let measure = measure(&text, serde_json::json!({})).expect("ok");
        assert_eq!(measure.fields, 2u64.pow(40));
        assert_eq!(measure.cost, 2u64.pow(40));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "memoised: linear in the text");
    }

    #[test]
    fn cycles_and_deep_spread_chains_are_refused() {
        let cycle = "{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }";
        assert!(matches!(measure(cycle, serde_json::json!({})), Err(CostError::FragmentCycle(_))));
        let mut chain = String::from("{ ...F0 } ");
        for i in 0..=MAX_FRAGMENT_NESTING {
            chain.push_str(&format!("fragment F{i} on QueryRoot {{ ...F{} }} ", i + 1));
        }
        chain.push_str(&format!("fragment F{} on QueryRoot {{ head {{ position }} }}", MAX_FRAGMENT_NESTING + 1));
        assert_eq!(
            measure(&chain, serde_json::json!({})),
            Err(CostError::FragmentNesting { bound: MAX_FRAGMENT_NESTING })
        );
    }

    #[test]
    fn introspection_is_counted() {
        let one = measure("{ __schema { types { name } } }", serde_json::json!({})).expect("ok").cost;
        assert!(one > 50, "{one}");
        let many: String = (0..100).map(|i| format!("s{i}: __schema {{ types {{ name }} }} ")).collect();
        assert_eq!(measure(&format!("{{ {many} }}"), serde_json::json!({})).expect("ok").cost, 100 * one);
    }
}
