//! Serving the router with the limits a shared service needs (docs/operations.md).
//!
//! Each connection has one deadline at a time ([`Clock`]):
//! - from accept, the TLS handshake (with a TLS acceptor, [`crate::tls`]), protocol sniffing and
//!   the whole first request header must take at most `header_read_timeout`;
//! - with no request in flight, the connection may stay idle for `idle_timeout`, kept alive for
//!   the caller's pool; on HTTP/1 the first byte of the next request starts a new
//!   `header_read_timeout` for its header;
//! - while a request is in flight there is no connection deadline: the whole request must be
//!   read and answered within `request_timeout` (408 otherwise).
//!
//! The header and idle timeouts are separate on purpose (issue 35): hyper's own HTTP/1
//! `header_read_timeout` starts as soon as a kept-alive connection goes idle, so it closed
//! every connection idle for the header timeout, and a caller reusing it at that moment lost
//! its request. Callers' pools must close idle connections before `idle_timeout` does
//! (Envoy: the cluster's `common_http_protocol_options.idle_timeout`).
//!
//! Connection slots ([`Slots`]): a connection starts unauthenticated, in a pool of
//! `max_pending` slots of which one peer (a source IPv4 address or IPv6 /64) may hold
//! `max_pending_per_peer`; more wait unread for one (as many as the pool holds, within the
//! same deadline), and more still are closed on accept. It moves to one of `max_connections`
//! served slots once the peer is authenticated: with TLS when the mutual-TLS handshake
//! succeeds, in plain HTTP when its first request header is complete. A connection that cannot
//! get a served slot is closed (TLS) or answered 503 and closed (plain HTTP). So peers that
//! connect and send nothing hold only pending slots, each for at most the header timeout, and
//! never the slots of the callers being served.
//!
//! HTTP/2 connections are pinged after `idle_timeout / 2` without a frame from the peer and
//! closed when the ping is not answered within the header timeout.
//!
//! On shutdown the listener closes, in-flight requests get `shutdown_timeout` to finish, and
//! then the process goes on regardless of clients that never finish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::problem::ProblemDetails;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Version};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_http::timeout::TimeoutLayer;
use tracing::{debug, info, warn};

/// Bounds on what one client can hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the end of the first request header (TLS handshake included), and from
    /// the first byte of a later request to the end of its header.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight is kept open for its next request.
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    /// Connections served at once (authenticated, or in plain HTTP past their first header).
    pub max_connections: usize,
    /// Connections not yet authenticated at once.
    pub max_pending: usize,
    /// Connections not yet authenticated from one peer (an IPv4 address or an IPv6 /64).
    pub max_pending_per_peer: usize,
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_pending: 1024,
            max_pending_per_peer: 128,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the shutdown deadline.
    Drained,
    /// The deadline passed with connections still open; they were dropped.
    DeadlinePassed,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains within the deadline.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's header timer would also run while a kept-alive connection is idle (and close it
    // then): the connection's Clock keeps both deadlines instead.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    // A peer that stops answering pings is gone (an idle connection is closed by its Clock).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(limits.header_read_timeout);
    // Every connection task holds a receiver: `closed()` on the sender is "all drained".
    let (stopping, _) = watch::channel(false);
    let slots = Arc::new(Slots::new(&limits));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(admission) = slots.admit(peer.ip()) else {
            debug!(%peer, "connection refused: at the cap of unauthenticated connections");
            drop(stream);
            continue;
        };
        let conn = Connection {
            app: app.clone(),
            builder: builder.clone(),
            tls: tls.clone(),
            limits,
            stopping: stopping.subscribe(),
        };
        tokio::spawn(conn.run(stream, peer, admission));
    }
    drop(listener);
    info!(
        deadline_ms = limits.shutdown_timeout.as_millis() as u64,
        "draining connections"
    );
    stopping.send_replace(true);
    match tokio::time::timeout(limits.shutdown_timeout, stopping.closed()).await {
        Ok(()) => Stopped::Drained,
        Err(_) => {
            warn!("shutdown deadline passed with connections open; closing them");
            Stopped::DeadlinePassed
        }
    }
}

/// What serving one accepted connection needs.
struct Connection {
    app: Router,
    builder: Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    /// Turns true when the service shuts down.
    stopping: watch::Receiver<bool>,
}

impl Connection {
    /// Serves the connection until it ends, its deadline passes or shutdown has drained it.
    async fn run(mut self, stream: TcpStream, peer: SocketAddr, admission: Admission) {
        let clock = Arc::new(Clock::new(self.limits));
        let served = async {
            // Over its peer's share: not read until a slot frees, within the same deadline.
            let slot = match admission {
                Admission::Now(slot) => slot,
                Admission::Wait(waiting) => tokio::select! {
                    slot = waiting.pending() => slot,
                    _ = self.stopping.wait_for(|s| *s) => return,
                },
            };
            clock.hold(slot);
            match self.tls.take() {
                None => self.http(stream, &clock).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    let stream = tokio::select! {
                        done = handshake => match done {
                            Ok(s) => s,
                            Err(e) => return debug!(%peer, "TLS handshake refused: {e}"),
                        },
                        _ = self.stopping.wait_for(|s| *s) => return,
                    };
                    // The client certificate checked out: the peer is a caller.
                    if !clock.promote() {
                        return debug!(%peer, "connection closed: at the connection cap");
                    }
                    self.http(stream, &clock).await;
                }
            }
        };
        tokio::select! {
            () = served => {}
            why = clock.expired() => debug!(%peer, "connection closed: {why}"),
        }
    }

    /// HTTP/1 or HTTP/2 over `stream`; on shutdown, answers what is in flight and closes.
    async fn http<S>(&mut self, stream: S, clock: &Arc<Clock>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = Counted {
            inner: TowerToHyperService::new(self.app.clone()),
            clock: clock.clone(),
        };
        let io = TokioIo::new(Watched {
            inner: stream,
            clock: clock.clone(),
        });
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    debug!("connection ended: {e}");
                }
                return;
            }
            _ = self.stopping.wait_for(|s| *s) => {}
        }
        conn.as_mut().graceful_shutdown();
        if let Err(e) = conn.await {
            debug!("connection ended while draining: {e}");
        }
    }
}

/// Why a connection's deadline closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Handshake, protocol and first request header took longer than the header timeout.
    FirstRequest,
    /// A later request header took longer than the header timeout from its first byte.
    Header,
    /// No request within the idle timeout.
    Idle,
    /// Answered 503: no served slot was free for it.
    AtCap,
    /// A request in flight whose answer the peer did not take (a zero HTTP/2 window, an
    /// unread socket) within the request timeout plus the header timeout.
    Answer,
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::FirstRequest => "no complete first request within the header timeout",
            Expiry::Header => "request header not complete within the header timeout",
            Expiry::Idle => "idle for the idle timeout",
            Expiry::AtCap => "at the connection cap",
            Expiry::Answer => "an answer not taken within the request and header timeouts",
        })
    }
}

/// One connection's deadline, moved by what happens on it.
struct Clock {
    limits: Limits,
    state: Mutex<ClockState>,
    /// The connection's slot: pending until the peer is authenticated, then served (`None`
    /// before it has one, and while it changes).
    slot: Mutex<Option<Slot>>,
    /// Told whenever the deadline moves (one waiter: [`Clock::expired`]).
    moved: Notify,
}

#[derive(Debug)]
struct ClockState {
    /// Requests whose answers are not all sent yet.
    in_flight: usize,
    /// `None` while a request is in flight.
    deadline: Option<(Instant, Expiry)>,
    /// HTTP/2 (known from the first request): bytes on an idle connection are frames such as
    /// PING and SETTINGS, not the start of a request, and do not start a header deadline.
    h2: bool,
}

impl Clock {
    fn new(limits: Limits) -> Clock {
        Clock {
            limits,
            slot: Mutex::new(None),
            state: Mutex::new(ClockState {
                in_flight: 0,
                deadline: Some((
                    Instant::now() + limits.header_read_timeout,
                    Expiry::FirstRequest,
                )),
                h2: false,
            }),
            moved: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: on an idle HTTP/1 connection they start the next request's header.
    fn bytes_read(&self) {
        let mut s = self.state();
        if s.in_flight == 0 && !s.h2 && matches!(s.deadline, Some((_, Expiry::Idle))) {
            let header = Instant::now() + self.limits.header_read_timeout;
            let at = match s.deadline {
                Some((idle, _)) => header.min(idle),
                None => header,
            };
            s.deadline = Some((at, Expiry::Header));
            drop(s);
            self.moved.notify_one();
        }
    }

    /// The pending slot the connection was admitted with.
    fn hold(&self, slot: Pending) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Slot::Pending(slot));
    }

    /// The peer is authenticated: trades the pending slot for a served one. `false` when
    /// none is free (the connection must close).
    fn promote(&self) -> bool {
        let mut guard = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let promoted = match guard.take() {
            // Dropping the pending slot frees it and the peer's count.
            Some(Slot::Pending(p)) => match p.slots.served.clone().try_acquire_owned() {
                Ok(permit) => Slot::Served(permit),
                Err(_) => Slot::Closing(p),
            },
            Some(other) => other,
            None => return false,
        };
        let served = matches!(promoted, Slot::Served(_));
        *guard = Some(promoted);
        served
    }

    /// A request header is complete and the request goes to the router (`false`: the
    /// connection is at the cap, answer 503). While requests are in flight the deadline is
    /// [`Expiry::Answer`], moved on by each answer the peer takes (the returned guard, carried
    /// by the answer's body, is dropped once the body is sent): a peer that never takes its
    /// answer cannot hold its slot for good. A connection at the cap keeps the
    /// [`Expiry::AtCap`] deadline of its first refusal, however many requests it sends.
    fn request(self: &Arc<Self>, version: Version) -> (InFlight, bool) {
        // In plain HTTP a complete request header is what "authenticated" can mean.
        let admitted = self.promote();
        let now = Instant::now();
        let mut s = self.state();
        s.in_flight += 1;
        s.deadline = match s.deadline {
            Some((at, Expiry::AtCap)) => Some((at, Expiry::AtCap)),
            _ if !admitted => Some((now + self.limits.header_read_timeout, Expiry::AtCap)),
            _ => Some((now + self.answer_time(), Expiry::Answer)),
        };
        s.h2 = version == Version::HTTP_2;
        drop(s);
        self.moved.notify_one();
        (InFlight(self.clone()), admitted)
    }

    fn answered(&self) {
        let closing = matches!(
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner),
            Some(Slot::Closing(_))
        );
        let now = Instant::now();
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.deadline = match s.deadline {
            // At the cap: the first refusal's deadline stands (time to send the 503; HTTP/1
            // closes by itself after `connection: close`).
            Some((at, Expiry::AtCap)) => Some((at, Expiry::AtCap)),
            _ if closing => Some((now + self.limits.header_read_timeout, Expiry::AtCap)),
            _ if s.in_flight == 0 => Some((now + self.limits.idle_timeout, Expiry::Idle)),
            // An answer taken is progress: the others get their time from now.
            _ => Some((now + self.answer_time(), Expiry::Answer)),
        };
        drop(s);
        self.moved.notify_one();
    }

    /// How long a request in flight may take before its answer is taken: the router's
    /// `request_timeout` (408 after it), and the header timeout to send the answer.
    fn answer_time(&self) -> Duration {
        self.limits.request_timeout + self.limits.header_read_timeout
    }

    /// Resolves when the deadline passes, with the reason.
    async fn expired(&self) -> Expiry {
        loop {
            // Created before the state is read: a move in between is not missed.
            let moved = self.moved.notified();
            let deadline = self.state().deadline;
            match deadline {
                None => moved.await,
                Some((at, why)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            if self.state().deadline == Some((at, why)) {
                                return why;
                            }
                        }
                        () = moved => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on its connection; dropped once its answer is sent (or abandoned).
struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// The router, telling the connection's clock when a request starts and when its answer ends.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    clock: Arc<Clock>,
}

type Answered = Pin<Box<dyn Future<Output = Result<Response<Answer>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Answered;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (in_flight, admitted) = self.clock.request(req.version());
        if !admitted {
            // Never reaches the router, so nothing is counted; the connection then closes.
            let mut res = ProblemDetails::unavailable("at the connection cap").into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            if req.version() == Version::HTTP_2 {
                res.headers_mut().remove(header::CONNECTION);
            }
            return Box::pin(async move { Ok(res.map(|body| Answer { body, in_flight })) });
        }
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await?;
            Ok(res.map(|body| Answer { body, in_flight }))
        })
    }
}

/// An answer's body, holding its request's [`InFlight`] until hyper has sent it all.
struct Answer {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    in_flight: InFlight,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's stream, telling its clock when bytes arrive.
struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The connection slots of the whole listener.
struct Slots {
    served: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    /// Connections over their peer's share (or over a full pending pool), waiting unread for
    /// a pending slot: as many as there are pending slots.
    waiting: Arc<Semaphore>,
    /// Told whenever a pending slot frees.
    freed: Notify,
    /// Pending connections per peer; a peer is here only while it has one, so this holds at
    /// most `max_pending` entries.
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    max_per_peer: usize,
}

impl Slots {
    fn new(limits: &Limits) -> Slots {
        Slots {
            served: Arc::new(Semaphore::new(limits.max_connections)),
            pending: Arc::new(Semaphore::new(limits.max_pending)),
            waiting: Arc::new(Semaphore::new(limits.max_pending)),
            freed: Notify::new(),
            per_peer: Mutex::new(HashMap::new()),
            max_per_peer: limits.max_pending_per_peer,
        }
    }

    /// What a connection just accepted from `ip` gets: a pending slot; else, when its peer's
    /// share or the pool is full, a place to wait for one; else (`None`) nothing: it is closed.
    /// Waiting instead of refusing keeps a caller's burst of new connections (an Envoy opening
    /// one per concurrent call) whole, while one peer still handshakes or reads no more than
    /// its share at once.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admission> {
        let peer = peer_key(ip);
        if let Some(slot) = self.try_pending(peer) {
            return Some(Admission::Now(slot));
        }
        let place = self.waiting.clone().try_acquire_owned().ok()?;
        Some(Admission::Wait(Waiting {
            _place: place,
            peer,
            slots: self.clone(),
        }))
    }

    /// A pending slot for `peer` (see [`peer_key`]), unless the pool or its share is full.
    fn try_pending(self: &Arc<Self>, peer: IpAddr) -> Option<Pending> {
        let mut per_peer = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let held = per_peer.get(&peer).copied().unwrap_or(0);
        if held >= self.max_per_peer {
            return None;
        }
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        per_peer.insert(peer, held + 1);
        Some(Pending {
            permit: Some(permit),
            peer,
            slots: self.clone(),
        })
    }
}

/// How an accepted connection was admitted.
enum Admission {
    Now(Pending),
    Wait(Waiting),
}

/// A connection waiting for a pending slot.
struct Waiting {
    _place: OwnedSemaphorePermit,
    peer: IpAddr,
    slots: Arc<Slots>,
}

impl Waiting {
    /// Resolves with a pending slot once one is free for this peer (the connection's deadline
    /// bounds the wait).
    async fn pending(self) -> Pending {
        loop {
            // Enabled before the check: a slot freed in between is not missed.
            let freed = self.slots.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.slots.try_pending(self.peer) {
                return slot;
            }
            freed.await;
        }
    }
}

/// One peer as the per-peer cap counts it: an IPv4 address, or the /64 of an IPv6 address (one
/// host commonly holds a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// A connection's slot.
enum Slot {
    /// Not authenticated yet.
    Pending(Pending),
    /// Authenticated and served.
    #[allow(dead_code)] // held for its Drop
    Served(OwnedSemaphorePermit),
    /// No served slot was free: the connection closes, holding its pending slot till then.
    #[allow(dead_code)] // held for its Drop
    Closing(Pending),
}

/// A pending slot; frees its peer's count when dropped.
struct Pending {
    /// `None` only inside `drop`.
    permit: Option<OwnedSemaphorePermit>,
    peer: IpAddr,
    slots: Arc<Slots>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut per_peer = self
            .slots
            .per_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
        drop(per_peer);
        // Both the pool's permit and the peer's count are back before waiters look.
        drop(self.permit.take());
        self.slots.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_ipv4_addresses_and_ipv6_64s() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(peer_key(v4), v4);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(peer_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
    }

    #[test]
    fn one_peer_holds_at_most_its_share_of_pending_slots() {
        let limits = Limits {
            max_pending: 5,
            max_pending_per_peer: 2,
            max_connections: 1,
            ..Limits::default()
        };
        let slots = Arc::new(Slots::new(&limits));
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let (a, b) = (peer_key(a), peer_key(b));
        let held: Vec<_> = (0..4).filter_map(|_| slots.try_pending(a)).collect();
        assert_eq!(held.len(), 2);
        let other = slots.try_pending(b);
        assert!(other.is_some());
        drop(held);
        assert!(slots.try_pending(a).is_some());
        assert_eq!(slots.per_peer.lock().unwrap().len(), 1);
        drop(other);
    }
}
