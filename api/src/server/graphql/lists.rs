//! Long lists resolved item after item ([`Seq`]), for the lists that carry large answers (a
//! diff's entries, an impact's reached CIs, a page of CIs or events).
//!
//! async-graphql resolves a `Vec<T>` by joining one future per item (`try_join_all`): past 30
//! items that is a `FuturesOrdered`, with a task, a waker registration and a queue entry per
//! item, about a tenth of the server's time on a day's diff. Our resolvers do not wait on
//! anything between items, so joining them buys no concurrency; awaiting each in turn gives the
//! same answer (same order, same first error with its path) without the bookkeeping, and a
//! resolver that does wait (the limits' time slices) no longer makes its siblings poll again.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{ContextSelectionSet, OutputType, Positioned, ServerResult, Value};

/// A list whose items are resolved one after another. Same GraphQL type as `Vec<T>`.
pub struct Seq<T>(pub Vec<T>);

impl<T> From<Vec<T>> for Seq<T> {
    fn from(items: Vec<T>) -> Self {
        Seq(items)
    }
}

impl<T: OutputType> OutputType for Seq<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        resolve_in_turn(ctx, field, &self.0).await
    }
}

/// Resolves `items` in order, each to its value; the first error stops the list, with its path.
pub async fn resolve_in_turn<T: OutputType>(
    ctx: &ContextSelectionSet<'_>,
    field: &Positioned<Field>,
    items: &[T],
) -> ServerResult<Value> {
    let mut values = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_ctx = ctx.with_index(index);
        let value = OutputType::resolve(item, &item_ctx, field).await.map_err(|e| item_ctx.set_error_path(e))?;
        values.push(value);
    }
    debug_assert_eq!(values.len(), items.len());
    Ok(Value::List(values))
}

#[cfg(test)]
mod tests {
    use super::Seq;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Item(i32);

    #[Object]
    impl Item {
        async fn value(&self) -> async_graphql::Result<i32> {
            if self.0 < 0 { Err("negative".into()) } else { Ok(self.0) }
        }

        async fn doubled(&self) -> i32 {
            self.0 * 2
        }
    }

    struct Query(Vec<i32>);

    #[Object]
    impl Query {
        async fn in_turn(&self) -> Seq<Item> {
            Seq(self.0.iter().map(|v| Item(*v)).collect())
        }

        async fn joined(&self) -> Vec<Item> {
            self.0.iter().map(|v| Item(*v)).collect()
        }
    }

    async fn answer(values: Vec<i32>, field: &str) -> serde_json::Value {
        let schema = Schema::new(Query(values), EmptyMutation, EmptySubscription);
        let response = schema.execute(format!("{{ {field} {{ value doubled }} }}")).await;
        let mut json = serde_json::to_value(&response).expect("json");
        // The same answer under another field name: compare the list, not the key.
        if let Some(data) = json.get_mut("data").and_then(|d| d.as_object_mut()) {
            let list = data.remove(field).unwrap_or_default();
            data.insert("list".into(), list);
        }
        if let Some(errors) = json.get_mut("errors").and_then(|e| e.as_array_mut()) {
            for error in errors {
                error["path"][0] = "list".into();
                error.as_object_mut().map(|e| e.remove("locations"));
            }
        }
        json
    }

    #[tokio::test]
    async fn a_list_in_turn_answers_as_the_joined_list_does() {
        // Past 30 items async-graphql joins with a FuturesOrdered; the answers must not differ.
        for values in
            [vec![], vec![1, 2, 3], (0..100).collect(), (0..100).map(|v| if v == 41 { -1 } else { v }).collect()]
        {
            let (in_turn, joined) = (answer(values.clone(), "inTurn").await, answer(values.clone(), "joined").await);
            assert_eq!(in_turn, joined, "{values:?}");
        }
        // A failing field names its item, and the items after it are still answered (as
        // async-graphql does for a joined list: the field is left out, not the list nulled).
        let failed = answer(vec![1, -1, 2], "inTurn").await;
        assert_eq!(failed["errors"][0]["path"], serde_json::json!(["list", 1, "value"]), "{failed}");
        assert_eq!(failed["data"]["list"][2]["value"], serde_json::json!(2), "{failed}");
        assert_eq!(failed, answer(vec![1, -1, 2], "joined").await);
    }
}
