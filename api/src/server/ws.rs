//! GraphQL subscriptions over WebSocket (`graphql-transport-ws`, and the older
//! `graphql-ws`). The caller authenticates with the `Authorization` header of the upgrade
//! request or, when there is none, in the `connection_init` payload (`Authorization`,
//! `authorization`, `headers.Authorization`, `token` or `authToken`). A bad token closes the
//! socket with 4403 Forbidden; no `connection_init` in time closes it with 4408.
//!
//! An open socket follows the access state (issue 20): every message from the client is
//! checked against the access view as it is now, and the socket checks itself every
//! [`ACCESS_CHECK_INTERVAL_MS`]; when the token is revoked or expires, or the principal loses a
//! role it had when the socket opened, the socket closes with 4403 and its subscriptions end.

use std::time::Duration;

use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};

use crate::server::auth::{AuthError, Caller, authenticate, authenticate_header, bearer_token};
use crate::server::errors::ApiError;
use crate::server::graphql::{RequestContext, SubscriptionSlots};
use crate::server::listener::ConnectionSlot;
use crate::server::{RequestId, ServerState};

/// Messages buffered between the GraphQL engine and the socket, per connection.
const OUTGOING_BUFFER_MESSAGES: usize = 64;
/// How often an open socket checks that its token and roles still hold, in milliseconds.
pub const ACCESS_CHECK_INTERVAL_MS: u64 = 250;
/// After shutdown begins, how long a connection may take to flush its `complete` messages.
const CLOSE_FLUSH_MS: u64 = 500;

pub async fn graphql_ws(
    State(state): State<ServerState>,
    Extension(request_id): Extension<RequestId>,
    protocol: GraphQLProtocol,
    connection: Option<Extension<ConnectionSlot>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let connection = connection.map(|Extension(slot)| slot);
    let now = state.app.clock.now();
    let header_caller = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => match authenticate_header(&state.app.access, value.to_str().ok(), now) {
            Ok(caller) => {
                let token = value.to_str().ok().and_then(|v| bearer_token(v).ok()).unwrap_or_default().to_owned();
                Some((caller, token))
            }
            Err(error) => return ApiError::Unauthorized(error).into_response(),
        },
    };
    let tracker = state.ws_tasks.clone();
    upgrade.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| {
        tracker.track_future(serve_socket(state, socket, protocol, header_caller, request_id, connection))
    })
}

/// What a socket re-checks: its token, and the roles it opened with.
#[derive(Clone)]
struct AccessCheck {
    state: ServerState,
    token: String,
    principal: String,
    roles: std::collections::BTreeSet<cmdb_core::access::Role>,
}

impl AccessCheck {
    /// Ok while the token is valid now and the principal still holds every role it had.
    fn holds(&self) -> Result<(), String> {
        let now = self.state.app.clock.now();
        let caller = authenticate(&self.state.app.access, &self.token, now).map_err(|e| e.to_string())?;
        if caller.principal != self.principal || !caller.roles.is_superset(&self.roles) {
            return Err("the principal's roles changed; reconnect".into());
        }
        Ok(())
    }
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes (RFC 6455 section 5.5).
    let mut reason = reason.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame { code, reason: reason.as_str().into() }))
}

/// The token in a `connection_init` payload, in any of the shapes clients send.
fn payload_token(payload: &serde_json::Value) -> Result<&str, AuthError> {
    let header = ["Authorization", "authorization"]
        .iter()
        .find_map(|key| payload.get(key))
        .or_else(|| payload.get("headers").and_then(|h| h.get("Authorization").or_else(|| h.get("authorization"))))
        .and_then(|v| v.as_str());
    if let Some(header) = header {
        return bearer_token(header).or_else(|_| Ok(header.trim()));
    }
    ["token", "authToken"]
        .iter()
        .find_map(|key| payload.get(key).and_then(|v| v.as_str()))
        .map(str::trim)
        .ok_or(AuthError::Missing)
}

/// The caller of a socket: from the upgrade's header, or from the `connection_init` message's
/// payload. `Err` carries the close frame to send.
fn authenticate_init(
    state: &ServerState,
    first: &Message,
    header_caller: Option<(Caller, String)>,
) -> Result<(Caller, String), Message> {
    let text = match first {
        Message::Text(text) => text.to_string(),
        Message::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    };
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if parsed.get("type").and_then(|t| t.as_str()) != Some("connection_init") {
        return Err(close(4401, "Unauthorized: send connection_init first"));
    }
    if let Some(known) = header_caller {
        return Ok(known);
    }
    let payload = parsed.get("payload").cloned().unwrap_or(serde_json::Value::Null);
    let token = payload_token(&payload).map(str::to_owned);
    token
        .and_then(|t| authenticate(&state.app.access, &t, state.app.clock.now()).map(|caller| (caller, t)))
        .map_err(|error| close(4403, &format!("Forbidden: {error}")))
}

/// The first message (it must be `connection_init`), or `None` after closing the socket: no
/// message in time (4408), or evicted to make room while it had no token yet (1013).
async fn first_message(
    state: &ServerState,
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    incoming: &mut futures::stream::SplitStream<WebSocket>,
    connection: Option<&ConnectionSlot>,
) -> Option<Message> {
    let init_timeout = Duration::from_millis(state.app.settings.ws_init_timeout_ms);
    let evicted = connection.map(ConnectionSlot::evicted).unwrap_or_default();
    let first = tokio::select! {
        first = tokio::time::timeout(init_timeout, incoming.next()) => first,
        _ = evicted.cancelled() => {
            let _ = sink.send(close(1013, "Try again later: too many connections without a token")).await;
            return None;
        }
    };
    match first {
        Err(_) => {
            let _ = sink.send(close(4408, "Connection initialisation timeout")).await;
            None
        }
        Ok(None) | Ok(Some(Err(_))) => None,
        Ok(Some(Ok(message))) => Some(message),
    }
}

async fn serve_socket(
    state: ServerState,
    socket: WebSocket,
    protocol: GraphQLProtocol,
    header_caller: Option<(Caller, String)>,
    request_id: RequestId,
    connection: Option<ConnectionSlot>,
) {
    let (mut sink, mut incoming) = socket.split();
    let Some(first) = first_message(&state, &mut sink, &mut incoming, connection.as_ref()).await else { return };
    let (caller, token) = match authenticate_init(&state, &first, header_caller) {
        Ok(known) => known,
        Err(refusal) => {
            let _ = sink.send(refusal).await;
            return;
        }
    };
    if let Some(connection) = &connection {
        connection.authenticate();
    }
    tracing::debug!(principal = %caller.principal, request_id = %request_id.0, "websocket authenticated");
    let access =
        AccessCheck { state: state.clone(), token, roles: caller.roles.clone(), principal: caller.principal.clone() };

    let mut data = Data::default();
    data.insert(caller);
    data.insert(SubscriptionSlots::new(state.app.settings.max_subscriptions_per_connection));
    data.insert(RequestContext { correlation_id: request_id.0.clone() });

    // The GraphQL engine writes into a bounded channel; this task owns the socket, so at
    // shutdown it can flush the final `complete` messages and send a proper close frame.
    let (outgoing, mut to_socket) = futures::channel::mpsc::channel::<Message>(OUTGOING_BUFFER_MESSAGES);
    // Every message after connection_init is let through only while access still holds.
    let lost = tokio_util::sync::CancellationToken::new();
    let (lost_on_message, message_check) = (lost.clone(), access.clone());
    let incoming = incoming.take_while(move |_| {
        let holds = message_check.holds().is_ok();
        if !holds {
            lost_on_message.cancel();
        }
        futures::future::ready(holds)
    });
    let replayed = futures::stream::once(async move { Ok::<Message, axum::Error>(first) }).chain(incoming);
    let engine =
        GraphQLWebSocket::new_with_pair(outgoing.sink_map_err(|_| ()), replayed, state.schema.clone(), protocol)
            .with_data(data)
            .serve();
    let engine = tokio::spawn(engine);
    let shutdown = state.app.shutdown.clone();
    let mut checks = tokio::time::interval(Duration::from_millis(ACCESS_CHECK_INTERVAL_MS));
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = lost.cancelled() => {
                let reason = access.holds().err().unwrap_or_else(|| "access changed".into());
                let _ = sink.send(close(4403, &format!("Forbidden: {reason}"))).await;
                break;
            }
            _ = checks.tick() => {
                if let Err(reason) = access.holds() {
                    let _ = sink.send(close(4403, &format!("Forbidden: {reason}"))).await;
                    break;
                }
            }
            message = to_socket.next() => match message {
                Some(message) => {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The engine ends when the client's messages end, as they do when access
                    // was lost: say so before closing.
                    if let Err(reason) = access.holds() {
                        let _ = sink.send(close(4403, &format!("Forbidden: {reason}"))).await;
                    }
                    break;
                }
            },
            _ = shutdown.cancelled() => {
                let deadline = tokio::time::sleep(Duration::from_millis(CLOSE_FLUSH_MS));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        message = to_socket.next() => match message {
                            Some(message) => { if sink.send(message).await.is_err() { break; } }
                            None => break,
                        },
                        _ = &mut deadline => break,
                    }
                }
                let _ = sink.send(close(1001, "server shutting down")).await;
                break;
            }
        }
    }
    engine.abort();
    let _ = sink.close().await;
}
