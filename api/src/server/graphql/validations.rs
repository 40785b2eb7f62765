//! Validations kept between requests (issue 15, part 7).
//!
//! async-graphql validates every request against the schema: two dozen rules visit the whole
//! document, then complexity and depth are counted. For a small query that is most of what the
//! GraphQL layer costs (a profile of one-CI as-of reads put 40 % of the GraphQL work in
//! `check_rules`), and it is the same work each time a dashboard repeats a query.
//!
//! Validation reads only the schema (fixed for the server's life), the query text, the
//! operation's name and the variables, so its result is kept under all three:
//! the next request with the same three takes the kept result and skips the rules. Only
//! successes are kept: a refused query is validated (and refused) again. A text longer than
//! [`MAX_KEPT_QUERY_BYTES`] or variables longer than [`MAX_KEPT_VARIABLES_BYTES`] (as JSON) are
//! validated each time; at most [`MAX_KEPT_VALIDATIONS`] results are kept, least recently used
//! out first, so the keys take at most about 10 MiB (512 x 20 KiB).

use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation};
use async_graphql::{Request, ServerError, ServerResult, ValidationResult};

use super::documents::MAX_KEPT_QUERY_BYTES;

/// Most validation results kept.
pub const MAX_KEPT_VALIDATIONS: usize = 512;
/// Longest variables kept under, in bytes of JSON.
pub const MAX_KEPT_VARIABLES_BYTES: usize = 4 * 1024;

/// The kept results by (text, operation name, variables).
pub struct KeptValidations {
    kept: Mutex<lru::LruCache<String, ValidationResult>>,
}

impl Default for KeptValidations {
    fn default() -> Self {
        let bound = std::num::NonZeroUsize::new(MAX_KEPT_VALIDATIONS).unwrap_or(std::num::NonZeroUsize::MIN);
        KeptValidations { kept: Mutex::new(lru::LruCache::new(bound)) }
    }
}

impl KeptValidations {
    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, ValidationResult>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many results are kept.
    pub fn kept_count(&self) -> usize {
        self.lock().len()
    }
}

/// The key of a request's validation, or `None` when it is not kept (past a bound).
fn key_of(request: &Request) -> Option<String> {
    if request.query.len() > MAX_KEPT_QUERY_BYTES {
        return None;
    }
    // Variables are a sorted map, so the same variables always give the same text.
    let variables = serde_json::to_string(&request.variables).ok()?;
    if variables.len() > MAX_KEPT_VARIABLES_BYTES {
        return None;
    }
    let operation = request.operation_name.as_deref().unwrap_or("");
    // The separators cannot be confused: a name has no NUL, and the text's length comes first.
    Some(format!("{}\u{0}{}\u{0}{operation}\u{0}{variables}", request.query.len(), request.query))
}

/// Makes one [`KeptValidationsExtension`] per request.
pub struct KeptValidationsFactory(pub Arc<KeptValidations>);

impl ExtensionFactory for KeptValidationsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(KeptValidationsExtension { kept: self.0.clone(), key: OnceLock::new() })
    }
}

/// One request's key, taken when the request is prepared and used when it is validated.
pub struct KeptValidationsExtension {
    kept: Arc<KeptValidations>,
    key: OnceLock<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for KeptValidationsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        let _ = self.key.set(key_of(&request));
        Ok(request)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let Some(Some(key)) = self.key.get() else { return next.run(ctx).await };
        let found = self.kept.lock().get(key).copied();
        if let Some(result) = found {
            metrics::counter!("graphql_validations_kept_hits_total").increment(1);
            return Ok(result);
        }
        let result = next.run(ctx).await?;
        self.kept.lock().put(key.clone(), result);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, Variables};

    use super::*;

    struct Query;

    #[Object]
    impl Query {
        async fn double(&self, n: i32) -> i32 {
            n.saturating_mul(2)
        }

        async fn length(&self, s: String) -> usize {
            s.len()
        }
    }

    fn schema(kept: &Arc<KeptValidations>) -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(KeptValidationsFactory(kept.clone()))
            .limit_complexity(5)
            .finish()
    }

    fn with_n(query: &str, n: serde_json::Value) -> Request {
        Request::new(query).variables(Variables::from_json(serde_json::json!({ "n": n })))
    }

    #[tokio::test]
    async fn a_repeated_request_is_validated_once_and_a_refused_one_every_time() {
        let kept = Arc::new(KeptValidations::default());
        let schema = schema(&kept);
        let query = "query($n: Int!) { double(n: $n) }";
        let first = schema.execute(with_n(query, 2.into())).await;
        let second = schema.execute(with_n(query, 2.into())).await;
        assert!(first.errors.is_empty() && second.errors.is_empty(), "{:?} {:?}", first.errors, second.errors);
        assert_eq!(first.data, second.data);
        assert_eq!(kept.kept_count(), 1, "one result for one (text, operation, variables)");
        // Other variables are another key: a wrong type is refused, not taken from the first.
        let wrong = schema.execute(with_n(query, "two".into())).await;
        assert!(!wrong.errors.is_empty(), "a string for an Int! is refused");
        let third = schema.execute(with_n(query, 3.into())).await;
        assert_eq!(third.data.to_string(), "{double: 6}");
        assert_eq!(kept.kept_count(), 2, "the refusal is not kept; the other variables are");
        // A query past the schema's limits or rules is refused every time.
        for _ in 0..2 {
            let unknown = schema.execute("{ triple(n: 1) }").await;
            assert!(unknown.errors.iter().any(|e| e.message.contains("triple")), "{:?}", unknown.errors);
            let complex = schema.execute("{ a: double(n: 1) b: double(n: 1) c: double(n: 1) d: double(n: 1) e: double(n: 1) f: double(n: 1) }").await;
            assert!(complex.errors.iter().any(|e| e.message.contains("complex")), "{:?}", complex.errors);
        }
        assert_eq!(kept.kept_count(), 2, "refusals are never kept");
        // The operation's name is part of the key.
        let named = "query A { double(n: 1) } query B { double(n: 2) }";
        let a = schema.execute(Request::new(named).operation_name("A")).await;
        let b = schema.execute(Request::new(named).operation_name("B")).await;
        assert_eq!((a.data.to_string(), b.data.to_string()), ("{double: 2}".into(), "{double: 4}".into()));
        assert_eq!(kept.kept_count(), 4);
    }

    #[tokio::test]
    async fn the_bounds_hold_at_and_past_them() {
        let kept = Arc::new(KeptValidations::default());
        let schema = schema(&kept);
        let at_bound = format!("{{ double(n: 1) }} #{}", "x".repeat(MAX_KEPT_QUERY_BYTES - 18));
        assert_eq!(at_bound.len(), MAX_KEPT_QUERY_BYTES);
        assert!(schema.execute(at_bound.as_str()).await.errors.is_empty());
        assert_eq!(kept.kept_count(), 1, "a text at the bound is kept");
        let past = format!("{at_bound}x");
        assert!(schema.execute(past.as_str()).await.errors.is_empty());
        assert_eq!(kept.kept_count(), 1, "a text past the bound is validated, not kept");
        let long = "y".repeat(MAX_KEPT_VARIABLES_BYTES);
        let request = Request::new("query($s: String!) { length(s: $s) }")
            .variables(Variables::from_json(serde_json::json!({ "s": long })));
        let answer = schema.execute(request).await;
        assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        assert_eq!(kept.kept_count(), 1, "variables past the bound are validated, not kept");
        for n in 0..MAX_KEPT_VALIDATIONS + 10 {
            assert!(schema.execute(format!("{{ double(n: {n}) }}").as_str()).await.errors.is_empty());
        }
        assert_eq!(kept.kept_count(), MAX_KEPT_VALIDATIONS, "the count bound holds");
    }
}
