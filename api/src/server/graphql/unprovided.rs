//! Variables a request declares but does not send: the arguments they fill are left out, as the
//! GraphQL specification's coercion of field arguments says ("CoerceArgumentValues": a variable
//! with no value and no default gives the argument no value, so the argument's own default
//! applies).
//!
//! async-graphql 7 reads such a variable as `null` instead. An argument with a default in the
//! schema (`impact(direction:)`, `changeReport(period:)`, `diff(depth:)`) then refuses the
//! request ("Expected input type ..., found null"), although clients such as Apollo and urql
//! leave undefined variables out of the JSON they send. Leaving the argument out of the
//! request's copy of the document gives the behaviour the specification asks for. Only nullable
//! variables without a default are concerned: a missing non-null one stays an error. It runs as
//! an extension ([`UnprovidedFactory`]), so requests over `/graphql/ws` get it too.

use async_graphql::parser::types::{
    Directive, DocumentOperations, ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};
use async_graphql_value::Value;

/// Makes one [`UnprovidedExtension`] per request.
pub struct UnprovidedFactory;

impl async_graphql::extensions::ExtensionFactory for UnprovidedFactory {
    fn create(&self) -> std::sync::Arc<dyn async_graphql::extensions::Extension> {
        std::sync::Arc::new(UnprovidedExtension)
    }
}

/// Applies [`leave_out_unprovided`] as a request is prepared: every request the schema runs,
/// over HTTP and over `/graphql/ws` alike, before it is validated.
pub struct UnprovidedExtension;

#[async_trait::async_trait]
impl async_graphql::extensions::Extension for UnprovidedExtension {
    async fn prepare_request(
        &self,
        ctx: &async_graphql::extensions::ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: async_graphql::extensions::NextPrepareRequest<'_>,
    ) -> async_graphql::ServerResult<async_graphql::Request> {
        leave_out_unprovided(&mut request);
        next.run(ctx, request).await
    }
}

/// Leaves out of `request`'s document every field argument whose value is a variable the
/// selected operation declares nullable and without a default, and the request does not send.
/// Does nothing when no such variable exists (the usual case: no copy is made).
pub fn leave_out_unprovided(request: &mut async_graphql::Request) {
    // Moved out and back (no copy): `parsed_query` borrows the whole request.
    let variables = std::mem::take(&mut request.variables);
    let operation = request.operation_name.take();
    let missing = match request.parsed_query() {
        Ok(document) => unprovided(document, operation.as_deref(), &variables),
        Err(_) => Vec::new(),
    };
    request.variables = variables;
    request.operation_name = operation;
    if missing.is_empty() {
        return;
    }
    let Ok(document) = request.parsed_query() else { return };
    let mut document = document.clone();
    let ExecutableDocument { operations, fragments } = &mut document;
    let Some(selected) = selected_mut(operations, request.operation_name.as_deref()) else { return };
    // Whatever still names a missing variable (a directive, a value inside a list or an input
    // object) keeps it declared.
    let mut still_named: Vec<&Name> = Vec::new();
    let mut directives: Vec<&Positioned<Directive>> = selected.node.directives.iter().collect();
    let mut left_out: Vec<Name> = Vec::new();
    // An explicit stack rather than recursion: the document's nesting is bounded only by its
    // text until the cost model measures it, after this.
    let mut pending: Vec<&mut SelectionSet> = vec![&mut selected.node.selection_set.node];
    pending.extend(fragments.values_mut().map(|fragment| &mut fragment.node.selection_set.node));
    while let Some(set) = pending.pop() {
        for item in &mut set.items {
            match &mut item.node {
                Selection::Field(field) => {
                    field.node.arguments.retain(|(_, value)| match &value.node {
                        Value::Variable(name) if missing.contains(name) => {
                            left_out.push(name.clone());
                            false
                        }
                        _ => true,
                    });
                    for (_, value) in &field.node.arguments {
                        still_named.extend(missing.iter().filter(|name| mentions(&value.node, name)));
                    }
                    directives.extend(field.node.directives.iter());
                    pending.push(&mut field.node.selection_set.node);
                }
                Selection::InlineFragment(fragment) => {
                    directives.extend(fragment.node.directives.iter());
                    pending.push(&mut fragment.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => directives.extend(spread.node.directives.iter()),
            }
        }
    }
    for directive in directives {
        for (_, value) in &directive.node.arguments {
            still_named.extend(missing.iter().filter(|name| mentions(&value.node, name)));
        }
    }
    // The variables this left unused are undeclared too (validation refuses a declared
    // variable nothing uses). One the text never used stays declared, and is refused as before.
    let unused: Vec<Name> =
        missing.iter().filter(|name| left_out.contains(name) && !still_named.contains(name)).cloned().collect();
    selected.node.variable_definitions.retain(|definition| !unused.contains(&definition.node.name.node));
    request.set_parsed_query(document);
}

/// Whether `value` names the variable `name` anywhere inside it.
fn mentions(value: &Value, name: &Name) -> bool {
    match value {
        Value::Variable(variable) => variable == name,
        Value::List(items) => items.iter().any(|item| mentions(item, name)),
        Value::Object(fields) => fields.values().any(|field| mentions(field, name)),
        _ => false,
    }
}

/// The operation a request runs: the only one, or the one it names (async-graphql refuses a
/// document of several operations without a name anyway).
fn selected_mut<'a>(
    operations: &'a mut DocumentOperations,
    name: Option<&str>,
) -> Option<&'a mut Positioned<OperationDefinition>> {
    match (operations, name) {
        (DocumentOperations::Single(only), _) => Some(only),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get_mut(name),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The selected operation's nullable variables without a default that `variables` lacks.
fn unprovided(
    document: &ExecutableDocument,
    operation: Option<&str>,
    variables: &async_graphql::Variables,
) -> Vec<Name> {
    let selected = match (&document.operations, operation) {
        (DocumentOperations::Single(only), _) => Some(only),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(_), None) => None, // async-graphql refuses it anyway
    };
    let Some(selected) = selected else { return Vec::new() };
    selected
        .node
        .variable_definitions
        .iter()
        .map(|definition: &Positioned<_>| &definition.node)
        .filter(|definition| definition.default_value.is_none() && definition.var_type.node.nullable)
        .filter(|definition| !variables.contains_key(&definition.name.node))
        .map(|definition| definition.name.node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments_after(query: &str, variables: serde_json::Value) -> String {
        let mut request = async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(variables));
        leave_out_unprovided(&mut request);
        format!("{:?}", request.parsed_query().expect("parses"))
    }

    #[test]
    fn an_argument_filled_by_an_unsent_nullable_variable_is_left_out() {
        let query = "query($d: ImpactDirection, $n: Int!, $m: Int = 3, $id: ID) {
            at { impact(ci: $id, direction: $d, maxDepth: $n, maxResults: $m) { count ...F } }
        } fragment F on ImpactResult { reached { ci { history(ci: $id, last: 1) { position } } } }";
        let sent = arguments_after(query, serde_json::json!({"d": "UPSTREAM", "n": 2, "id": "x"}));
        let unsent = arguments_after(query, serde_json::json!({"n": 2}));
        let uses = |variable: &str| format!("Variable(Name(\"{variable}\"))");
        for variable in ["d", "id"] {
            assert!(sent.contains(&uses(variable)), "${variable} kept when sent");
            assert!(!unsent.contains(&uses(variable)), "${variable}'s arguments left out when not sent: {unsent}");
        }
        assert!(unsent.contains(&uses("n")), "a non-null variable stays (its absence is an error)");
        assert!(unsent.contains(&uses("m")), "a variable with a default stays (the default applies)");
        assert!(!unsent.contains("Name(\"d\") }, var_type"), "$d, used by no argument now, is not declared either");
        // A variable the text never used stays declared (validation refuses it, sent or not).
        let never_used = arguments_after("query($z: Int) { head { position } }", serde_json::json!({}));
        assert!(never_used.contains("Name(\"z\") }, var_type"), "{never_used}");
        // A variable still named elsewhere (a directive, a list) stays declared.
        let nested =
            "query($c: [String!], $x: Boolean) { at { cis(filter: { classes: $c }) { totalCount @include(if: $x) } } }";
        let kept = arguments_after(nested, serde_json::json!({}));
        for variable in ["c", "x"] {
            assert!(kept.contains(&format!("Name(\"{variable}\") }}, var_type")), "${variable} stays declared: {kept}");
        }
        assert_eq!(
            arguments_after(query, serde_json::json!({"d": null, "n": 2, "id": "x"})),
            sent,
            "an explicit null is sent, so the argument stays"
        );
    }
}
