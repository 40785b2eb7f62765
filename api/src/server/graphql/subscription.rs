use async_graphql::{Context, Subscription};
use cmdb_core::access::Operation;
use cmdb_core::store::subscribe;
use futures::{Stream, StreamExt};

use super::query::type_filter;
use super::scalars::Position;
use super::types::Event;
use super::{Requires, SubscriptionSlots, app};
use crate::server::errors::{graphql_error, store_error};

/// Events a subscription reads from the log per page (its memory bound).
const SUBSCRIPTION_PAGE_EVENTS: usize = 500;

#[derive(Default)]
pub struct LogSubscription;

#[Subscription]
impl LogSubscription {
    /// Every event after `after` (default: the current head, i.e. only new events), in order,
    /// without gaps, optionally only those of the given `types`. Ends when the server shuts
    /// down.
    #[graphql(guard = "Requires(Operation::SubscribeLog)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
        types: Option<Vec<String>>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let app = app(ctx).clone();
        let slot = ctx
            .data_opt::<SubscriptionSlots>()
            .ok_or_else(|| graphql_error("BAD_REQUEST", "subscriptions are served over the WebSocket at /graphql/ws"))?
            .take()?;
        let types = type_filter(types)?;
        let after = match after {
            Some(position) => position.0,
            None => app.store.head().await.map_err(store_error)?.position,
        };
        let shutdown = app.shutdown.clone();
        let events = subscribe(app.store.clone(), after, SUBSCRIPTION_PAGE_EVENTS)
            .take_until(async move { shutdown.cancelled().await })
            .filter_map(move |next| {
                let keep = match &next {
                    Ok(record) => types.as_ref().is_none_or(|t| t.iter().any(|t| *t == record.event_type)),
                    Err(_) => true,
                };
                futures::future::ready(keep.then(|| next.map(Event).map_err(store_error)))
            })
            // The slot is held for as long as the stream lives.
            .map(move |item| {
                let _held = &slot;
                item
            });
        Ok(events)
    }
}
