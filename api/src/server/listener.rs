//! Accepting and serving client connections, so that slow or idle clients cannot lock out
//! everyone (issue 20).
//!
//! - At most `max_connections` at once. A connection that has not yet sent a request with a
//!   valid token is *unauthenticated*; those hold at most `max_connections -
//!   reserved_authenticated_connections` slots, and one client address at most
//!   `max_connections_per_address` of them.
//! - When a new connection would pass one of these bounds, the oldest unauthenticated
//!   connection (of the same address, when it is that address's bound) is closed to make room:
//!   idle and slow-header sockets are evicted, never authenticated ones. Only when every slot
//!   is held by authenticated connections is a new one answered `503` with a JSON body naming
//!   the limit, and closed. So a client with a token gets in however many idle sockets are
//!   open: its request arrives long before the hundreds of newer sockets that would evict it.
//! - Headers must arrive within `header_read_timeout_ms`; hyper starts that clock whenever the
//!   connection waits for a request, so it also closes idle keep-alive connections.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
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
    /// `header_read_timeout_ms`.
    pub header_read_timeout: Duration,
}

impl ConnectionLimits {
    fn unauthenticated(&self) -> usize {
        self.max_connections - self.reserved_authenticated.min(self.max_connections / 2)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Unauthenticated,
    Authenticated,
    /// Closed to make room; its slot is free already.
    Evicted,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Unauthenticated connections, oldest first.
    unauthenticated: VecDeque<Arc<Slot>>,
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
    address: IpAddr,
    /// Changed only under the lock of [`Slots::counts`].
    standing: Mutex<Standing>,
    /// Cancelled when the connection is evicted.
    evicted: CancellationToken,
}

impl Slots {
    /// Slots under `limits`.
    pub fn new(limits: ConnectionLimits) -> Arc<Slots> {
        Arc::new(Slots { limits, counts: Mutex::new(Counts::default()) })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for a new connection from `address`, evicting the oldest unauthenticated
    /// connection when a bound is reached; `None` when every slot is authenticated.
    fn take(&self, address: IpAddr) -> Option<Arc<Slot>> {
        let mut counts = self.counts();
        if counts.by_address.get(&address).copied().unwrap_or(0) >= self.limits.per_address {
            let oldest = counts.unauthenticated.iter().position(|s| s.address == address);
            if let Some(index) = oldest {
                evict(&mut counts, index);
            }
        }
        if counts.unauthenticated.len() >= self.limits.unauthenticated() || counts.total >= self.limits.max_connections
        {
            if counts.unauthenticated.is_empty() {
                return None;
            }
            evict(&mut counts, 0);
        }
        if counts.total >= self.limits.max_connections {
            return None;
        }
        let slot = Arc::new(Slot {
            address,
            standing: Mutex::new(Standing::Unauthenticated),
            evicted: CancellationToken::new(),
        });
        counts.total += 1;
        *counts.by_address.entry(address).or_insert(0) += 1;
        counts.unauthenticated.push_back(slot.clone());
        debug_assert!(counts.unauthenticated.len() <= self.limits.unauthenticated());
        Some(slot)
    }

    /// Connections held now: (all, unauthenticated).
    pub fn held(&self) -> (usize, usize) {
        let counts = self.counts();
        (counts.total, counts.unauthenticated.len())
    }

    /// A request on `slot`'s connection carried a valid token: it is never evicted.
    pub fn authenticate(&self, slot: &Arc<Slot>) {
        let mut counts = self.counts();
        let mut standing = slot.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *standing == Standing::Unauthenticated {
            forget_unauthenticated(&mut counts, slot);
            *standing = Standing::Authenticated;
        }
    }

    fn release(&self, slot: &Arc<Slot>) {
        let mut counts = self.counts();
        let standing = *slot.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match standing {
            Standing::Evicted => return,
            Standing::Unauthenticated => forget_unauthenticated(&mut counts, slot),
            Standing::Authenticated => {}
        }
        counts.total -= 1;
    }
}

impl Slot {
    fn standing(&self) -> Standing {
        *self.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Takes an unauthenticated slot out of the queue and its address's count.
fn forget_unauthenticated(counts: &mut Counts, slot: &Arc<Slot>) {
    if let Some(index) = counts.unauthenticated.iter().position(|s| Arc::ptr_eq(s, slot)) {
        counts.unauthenticated.remove(index);
    }
    if let Some(held) = counts.by_address.get_mut(&slot.address) {
        *held -= 1;
        if *held == 0 {
            counts.by_address.remove(&slot.address);
        }
    }
}

/// Closes the unauthenticated connection at `index` of the queue and frees its slot now.
fn evict(counts: &mut Counts, index: usize) {
    let Some(slot) = counts.unauthenticated.get(index).cloned() else { return };
    forget_unauthenticated(counts, &slot);
    counts.total -= 1;
    *slot.standing.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Standing::Evicted;
    slot.evicted.cancel();
    metrics::counter!("http_connections_evicted_total").increment(1);
}

/// Gives the slot back when the connection's stream goes.
#[derive(Debug)]
struct SlotGuard(Arc<Slots>, Arc<Slot>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.release(&self.1);
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
        connections.spawn(serve_connection(
            stream,
            (slots.clone(), slot),
            router.clone(),
            slots.limits,
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: TcpStream,
    (slots, slot): (Arc<Slots>, Arc<Slot>),
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let evicted = slot.evicted.clone();
    let io = TokioIo::new(CountedStream { stream, _slot: SlotGuard(slots.clone(), slot.clone()) });
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectionSlot { slots: slots.clone(), slot: slot.clone() });
        router.clone().oneshot(request.map(Body::new))
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, "connection ended with an error");
                }
                break;
            }
            // Dropping the connection closes the socket.
            _ = evicted.cancelled() => break,
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The slot of the connection a request came on (a request extension).
#[derive(Clone, Debug)]
pub struct ConnectionSlot {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

impl ConnectionSlot {
    /// The connection showed a valid token: it is never evicted.
    pub fn authenticate(&self) {
        self.slots.authenticate(&self.slot);
    }

    /// Cancelled if the connection is evicted before it authenticates.
    pub fn evicted(&self) -> CancellationToken {
        self.slot.evicted.clone()
    }
}

/// Middleware: a request with a valid token (header, or the feed's `access_token`)
/// authenticates its connection, which is then never evicted.
pub async fn admit(state: axum::extract::State<super::ServerState>, request: Request, next: Next) -> Response {
    if let Some(connection) = request.extensions().get::<ConnectionSlot>()
        && connection.slot.standing() == Standing::Unauthenticated
    {
        let app = &state.app;
        let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let query_token = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("access_token=")))
            .map(|token| format!("Bearer {token}"));
        let header = header.map(str::to_owned).or(query_token);
        if super::auth::authenticate_header(&app.access, header.as_deref(), app.clock.now()).is_ok() {
            connection.authenticate();
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
            header_read_timeout: Duration::from_secs(1),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn past_the_unauthenticated_share_the_oldest_unauthenticated_connection_makes_room() {
        let slots = Slots::new(limits(10, 4, 100));
        let held: Vec<_> = (0..6).map(|_| slots.take(ip("10.0.0.1")).expect("slot")).collect();
        assert_eq!(slots.held(), (6, 6));
        let newcomer = slots.take(ip("10.0.0.2")).expect("room is made");
        assert!(held[0].evicted.is_cancelled() && !held[1].evicted.is_cancelled());
        assert_eq!(slots.held(), (6, 6));
        // Authenticated connections are never evicted and may use the reserve.
        slots.authenticate(&newcomer);
        for slot in &held[1..] {
            slots.authenticate(slot);
        }
        assert_eq!(slots.held(), (6, 0));
        let more: Vec<_> = (0..4).map(|_| slots.take(ip("10.0.0.3")).expect("slot")).collect();
        assert_eq!(slots.held(), (10, 4));
        // Full: a newcomer evicts an unauthenticated one; none left after they authenticate.
        assert!(slots.take(ip("10.0.0.4")).is_some());
        assert!(more[0].evicted.is_cancelled());
        let (all, unauthenticated) = slots.held();
        assert_eq!((all, unauthenticated), (10, 4));
        let mut counts = slots.counts();
        let queued: Vec<_> = counts.unauthenticated.drain(..).collect();
        for slot in &queued {
            *slot.standing.lock().expect("lock") = Standing::Authenticated;
        }
        drop(counts);
        assert!(slots.take(ip("10.0.0.5")).is_none(), "every slot authenticated: refused");
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_evicts_its_own_oldest() {
        let slots = Slots::new(limits(100, 10, 3));
        let from_one: Vec<_> = (0..3).map(|_| slots.take(ip("10.0.0.1")).expect("slot")).collect();
        let other = slots.take(ip("10.0.0.2")).expect("slot");
        let fourth = slots.take(ip("10.0.0.1")).expect("slot");
        assert!(from_one[0].evicted.is_cancelled(), "its own oldest goes");
        assert!(!other.evicted.is_cancelled(), "not another address's");
        assert!(!fourth.evicted.is_cancelled());
        assert_eq!(slots.held(), (4, 4));
    }

    #[test]
    fn released_slots_return_whatever_their_standing() {
        let slots = Slots::new(limits(10, 2, 10));
        let a = slots.take(ip("10.0.0.1")).expect("slot");
        let b = slots.take(ip("10.0.0.1")).expect("slot");
        slots.authenticate(&b);
        drop(SlotGuard(slots.clone(), a));
        drop(SlotGuard(slots.clone(), b));
        assert_eq!(slots.held(), (0, 0));
        assert!(slots.counts().by_address.is_empty());
    }

    #[test]
    fn the_reserve_is_at_most_half() {
        assert_eq!(limits(10, 1_000, 5).unauthenticated(), 5);
        assert_eq!(limits(1, 0, 5).unauthenticated(), 1);
    }
}
