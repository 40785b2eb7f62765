//! Helpers every resolver shares: the caller, the server state and the application layer, the
//! metadata of the events a request writes, the permission guard, and parsing ids, classes and
//! change references.

use std::sync::Arc;

use async_graphql::{Context, Guard, ID};
use cmdb_core::Metadata;
use cmdb_core::access::{Operation, permits};
use cmdb_core::ci::CiClass;
use cmdb_core::model::ModelError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::App;
use crate::app::changes::ChangeRef;
use crate::server::AppState;
use crate::server::auth::Caller;
use crate::server::errors::{Code, bad_input, coded, forbidden, limit_exceeded};

/// Per-request context: the correlation id of the HTTP request or WebSocket connection.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// `X-Request-Id`, or the one generated for the request.
    pub correlation_id: String,
}

/// The subscription slots of one WebSocket connection (`max_subscriptions_per_connection`).
#[derive(Clone)]
pub struct SubscriptionSlots {
    slots: Arc<Semaphore>,
    bound: usize,
}

impl SubscriptionSlots {
    /// `bound` slots.
    pub fn new(bound: usize) -> Self {
        SubscriptionSlots { slots: Arc::new(Semaphore::new(bound)), bound }
    }

    /// Takes a slot for one subscription, or refuses past the bound.
    pub(super) fn take(&self) -> async_graphql::Result<OwnedSemaphorePermit> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| limit_exceeded("max_subscriptions_per_connection", self.bound as u64 + 1, self.bound as u64))
    }
}

/// Refuses a field unless the caller's roles permit `operation`.
pub struct Requires(pub Operation);

impl Guard for Requires {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let caller = caller(ctx)?;
        if permits(&caller.roles, self.0) { Ok(()) } else { Err(forbidden(self.0)) }
    }
}

/// The authenticated caller.
pub(super) fn caller<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Caller> {
    ctx.data_opt::<Caller>().ok_or_else(|| coded(Code::Unauthenticated, "no authenticated caller"))
}

/// The server's shared state (settings, read models).
pub(super) fn state<'a>(ctx: &'a Context<'_>) -> &'a Arc<AppState> {
    ctx.data_unchecked::<Arc<AppState>>()
}

/// The application layer every write goes through.
pub(super) fn app<'a>(ctx: &'a Context<'_>) -> &'a App {
    &state(ctx).app
}

/// The metadata every event written on behalf of this request carries.
pub(super) fn metadata(ctx: &Context<'_>) -> async_graphql::Result<Metadata> {
    let correlation_id = ctx.data_opt::<RequestContext>().map(|r| r.correlation_id.clone());
    Ok(caller(ctx)?.metadata(correlation_id))
}

/// A class named by a client: built in (any case) or declared; refused otherwise.
pub(super) fn parse_class(ctx: &Context<'_>, name: &str) -> async_graphql::Result<CiClass> {
    let class: CiClass = name.parse().map_err(|e: ModelError| bad_input(e.to_string()))?;
    if !state(ctx).graph.read().schema().knows(class) {
        return Err(bad_input(format!("unknown class {name:?}")));
    }
    Ok(class)
}

/// Classes named by a client.
pub(super) fn parse_classes(
    ctx: &Context<'_>,
    names: Option<Vec<String>>,
) -> async_graphql::Result<Option<Vec<CiClass>>> {
    names.map(|names| names.iter().map(|n| parse_class(ctx, n)).collect()).transpose()
}

/// An id of the domain (a CI, a relationship, a change, a template, a freeze).
pub(super) fn parse_id<T: std::str::FromStr<Err = ModelError>>(id: &ID) -> async_graphql::Result<T> {
    id.as_str().parse::<T>().map_err(|e| bad_input(e.to_string()))
}

/// A change id or number (`CHG-000042`) from a client.
pub(super) fn parse_change_ref(id: &ID) -> async_graphql::Result<ChangeRef> {
    id.as_str().parse::<ChangeRef>().map_err(|e| bad_input(e.to_string()))
}

/// The change a client names, as the log holds it now (a number assigned a moment ago is found).
pub(super) async fn resolve_change(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<cmdb_core::ci::ChangeId> {
    let reference = parse_change_ref(id)?;
    app(ctx).resolve_change(&reference).await.map_err(crate::server::errors::app_error)
}

/// Most releases, deployments, incidents or rules one list returns.
pub const MAX_RELEASE_LIST: usize = 500;

/// The length of a list: `first` (default 100), at most [`MAX_RELEASE_LIST`].
pub(super) fn list_limit(first: Option<i32>) -> async_graphql::Result<usize> {
    match first {
        None => Ok(100),
        Some(n) if n < 0 => Err(bad_input("first must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(0).min(MAX_RELEASE_LIST)),
    }
}

/// A subscription that follows the log from `after` (default: the head now) and yields what
/// `map` makes of each record, held in one of the connection's subscription slots and ended
/// by shutdown: the shape of every domain's log-backed subscription.
pub(super) async fn follow_log<T, F>(
    ctx: &Context<'_>,
    after: Option<super::scalars::Position>,
    page_events: usize,
    map: F,
) -> async_graphql::Result<impl futures::Stream<Item = async_graphql::Result<T>> + use<T, F>>
where
    T: Send + 'static,
    F: Fn(&cmdb_core::EventRecord) -> Option<T> + Send + 'static,
{
    use futures::StreamExt;
    let app_state = state(ctx).clone();
    let slot = ctx
        .data_opt::<SubscriptionSlots>()
        .ok_or_else(|| coded(Code::BadRequest, "subscriptions are served over the WebSocket at /graphql/ws"))?
        .take()?;
    let after = match after {
        Some(p) => p.0,
        None => app_state.store.head().await.map_err(crate::server::errors::store_error)?.position,
    };
    let shutdown = app_state.shutdown.clone();
    Ok(cmdb_core::store::subscribe(app_state.store.clone(), after, page_events)
        .take_until(async move { shutdown.cancelled().await })
        .filter_map(move |next| {
            let _slot = &slot;
            let result = match next {
                Err(error) => Some(Err(crate::server::errors::store_error(error))),
                Ok(record) => map(&record).map(Ok),
            };
            async move { result }
        }))
}
