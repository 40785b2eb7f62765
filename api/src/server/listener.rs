//! Accepting and serving client connections, so that slow or idle clients cannot lock out
//! everyone (issue 20).
//!
//! - At most `max_connections` at once; past it a connection is answered `503` with a JSON body
//!   naming the limit, and closed: it never reaches the router.
//! - A connection that has not yet sent a request with a valid token is *anonymous*. Anonymous
//!   connections may hold at most `max_connections - reserved_authenticated_connections` slots,
//!   and one client address at most `max_connections_per_address` of them.
//! - Past either bound a connection is still taken, on *probation*: its first request must
//!   carry a valid token (it is then authenticated, like any connection whose request does),
//!   or it gets `503` and is closed; it is closed too if no such request arrives within
//!   `probation_ms`. So idle and slow-header sockets fill the anonymous share and no more, and
//!   a client with a token always finds a slot while reserved ones are free.
//! - Headers must arrive within `header_read_timeout_ms`; hyper starts that clock whenever the
//!   connection waits for a request, so it also closes idle keep-alive connections.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::server::errors::error_body;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 50;
/// Most bytes of a refused connection's request read before it is answered.
const REFUSAL_MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// How long a refused connection may take to send its request and receive its 503.
const REFUSAL_WRITE_TIMEOUT_MS: u64 = 1000;

/// The bounds of [`serve`], from the settings.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// `max_connections`.
    pub max_connections: usize,
    /// `reserved_authenticated_connections`, at most half of `max_connections`.
    pub reserved_authenticated: usize,
    /// `max_connections_per_address`.
    pub per_address: usize,
    /// `probation_ms`.
    pub probation: Duration,
    /// `header_read_timeout_ms`.
    pub header_read_timeout: Duration,
}

impl ConnectionLimits {
    fn anonymous(&self) -> usize {
        self.max_connections - self.reserved_authenticated.min(self.max_connections / 2)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Anonymous,
    Probation,
    Authenticated,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    anonymous: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// The slots of every connection.
#[derive(Debug)]
pub struct Slots {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
}

/// One connection's slot: held by its stream (so a WebSocket keeps it), shared with its
/// requests (so one with a valid token can authenticate it).
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    address: IpAddr,
    standing: Mutex<Standing>,
}

impl Slots {
    /// Slots under `limits`.
    pub fn new(limits: ConnectionLimits) -> Arc<Slots> {
        Arc::new(Slots { limits, counts: Mutex::new(Counts::default()) })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for a new connection from `address`, or `None` when every slot is taken.
    fn take(self: &Arc<Self>, address: IpAddr) -> Option<Arc<Slot>> {
        let mut counts = self.counts();
        if counts.total >= self.limits.max_connections {
            return None;
        }
        let from_address = counts.by_address.get(&address).copied().unwrap_or(0);
        let standing = if counts.anonymous < self.limits.anonymous() && from_address < self.limits.per_address {
            counts.anonymous += 1;
            *counts.by_address.entry(address).or_insert(0) += 1;
            Standing::Anonymous
        } else {
            Standing::Probation
        };
        counts.total += 1;
        Some(Arc::new(Slot { slots: self.clone(), address, standing: Mutex::new(standing) }))
    }

    /// Connections held now: (all, anonymous).
    pub fn held(&self) -> (usize, usize) {
        let counts = self.counts();
        (counts.total, counts.anonymous)
    }
}

impl Slot {
    fn standing(&self) -> Standing {
        *self.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request on this connection carried a valid token: it no longer counts as anonymous.
    pub fn authenticate(&self) {
        let mut counts = self.slots.counts();
        let mut standing = self.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *standing == Standing::Anonymous {
            counts.anonymous -= 1;
            release_address(&mut counts, self.address);
        }
        *standing = Standing::Authenticated;
    }
}

fn release_address(counts: &mut Counts, address: IpAddr) {
    if let Some(held) = counts.by_address.get_mut(&address) {
        *held -= 1;
        if *held == 0 {
            counts.by_address.remove(&address);
        }
    }
}

/// Gives the slot back when the connection's stream goes.
#[derive(Debug)]
struct SlotGuard(Arc<Slot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let slot = &self.0;
        let mut counts = slot.slots.counts();
        counts.total -= 1;
        if slot.standing() == Standing::Anonymous {
            counts.anonymous -= 1;
            release_address(&mut counts, slot.address);
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish (the
/// caller bounds how long).
pub async fn serve(listener: TcpListener, router: Router, slots: Arc<Slots>, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = slots.take(address.ip()) else {
            metrics::counter!("http_connections_refused_total", "reason" => "max_connections").increment(1);
            tokio::spawn(refuse(stream, slots.limits.max_connections));
            continue;
        };
        connections.spawn(serve_connection(stream, slot, router.clone(), slots.limits, shutdown.clone()));
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    slot: Arc<Slot>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let on_probation = slot.standing() == Standing::Probation;
    let io = TokioIo::new(CountedStream { stream, _slot: SlotGuard(slot.clone()) });
    let request_slot = slot.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(request_slot.clone());
        router.clone().oneshot(request.map(Body::new))
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let probation = tokio::time::sleep(limits.probation);
    tokio::pin!(probation);
    let mut watching_probation = on_probation;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, "connection ended with an error");
                }
                break;
            }
            _ = &mut probation, if watching_probation => {
                if slot.standing() == Standing::Probation {
                    metrics::counter!("http_connections_refused_total", "reason" => "probation").increment(1);
                    break;
                }
                watching_probation = false;
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Middleware: a request with a valid token authenticates its connection; the first request
/// of a connection on probation without one is refused, and the connection closed.
pub async fn admit(state: axum::extract::State<super::ServerState>, request: Request, next: Next) -> Response {
    let Some(slot) = request.extensions().get::<Arc<Slot>>().cloned() else { return next.run(request).await };
    if slot.standing() != Standing::Authenticated {
        let app = &state.app;
        let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let query_token = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("access_token=")))
            .map(|token| format!("Bearer {token}"));
        let header = header.map(str::to_owned).or(query_token);
        if super::auth::authenticate_header(&app.access, header.as_deref(), app.clock.now()).is_ok() {
            slot.authenticate();
        } else if slot.standing() == Standing::Probation {
            metrics::counter!("http_connections_refused_total", "reason" => "probation").increment(1);
            let limits = slot.slots.limits;
            let body = error_body(
                "TOO_MANY_CONNECTIONS",
                &format!(
                    "the server holds its share of {} connections without a valid token (max_connections - reserved_authenticated_connections, or max_connections_per_address {}); send a valid token or retry later",
                    limits.anonymous(),
                    limits.per_address
                ),
            );
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    }
    next.run(request).await
}

async fn refuse(mut stream: TcpStream, max_connections: usize) {
    let body = error_body(
        "TOO_MANY_CONNECTIONS",
        &format!("the server holds its maximum of {max_connections} connections (max_connections); retry later"),
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        // Read the request head first: an HTTP client may not accept an answer to a request it
        // has not finished sending.
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while head.len() < REFUSAL_MAX_REQUEST_HEAD_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..read]);
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_millis(REFUSAL_WRITE_TIMEOUT_MS), write).await;
}

/// A connection that gives its slot back when it closes.
struct CountedStream {
    stream: TcpStream,
    _slot: SlotGuard,
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, reserved: usize, per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max,
            reserved_authenticated: reserved,
            per_address,
            probation: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn anonymous_connections_fill_their_share_then_go_on_probation() {
        let slots = Slots::new(limits(10, 4, 100));
        let one: IpAddr = "10.0.0.1".parse().expect("ip");
        let held: Vec<_> = (0..6).map(|_| slots.take(one).expect("slot")).collect();
        assert!(held.iter().all(|s| s.standing() == Standing::Anonymous));
        let extra: Vec<_> = (0..4).map(|_| slots.take(one).expect("reserved slot")).collect();
        assert!(extra.iter().all(|s| s.standing() == Standing::Probation));
        assert!(slots.take(one).is_none(), "past max_connections");
        // An authenticated one frees nothing by itself; a dropped anonymous one does.
        extra[0].authenticate();
        assert_eq!(slots.held(), (10, 6));
        let guards: Vec<_> = held.into_iter().map(SlotGuard).collect();
        drop(guards);
        assert_eq!(slots.held(), (4, 0));
        let next = slots.take(one).expect("slot");
        assert_eq!(next.standing(), Standing::Anonymous);
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_anonymous_slots() {
        let slots = Slots::new(limits(100, 10, 3));
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let from_one: Vec<_> = (0..4).map(|_| slots.take(one).expect("slot")).collect();
        let standings: Vec<_> = from_one.iter().map(|s| s.standing()).collect();
        assert_eq!(standings, [Standing::Anonymous, Standing::Anonymous, Standing::Anonymous, Standing::Probation]);
        assert_eq!(slots.take(two).expect("slot").standing(), Standing::Anonymous);
        // Authenticating frees the address's share.
        from_one[0].authenticate();
        assert_eq!(slots.take(one).expect("slot").standing(), Standing::Anonymous);
    }

    #[test]
    fn the_reserve_is_at_most_half() {
        assert_eq!(limits(10, 1_000, 5).anonymous(), 5);
        assert_eq!(limits(1, 0, 5).anonymous(), 1);
    }
}
