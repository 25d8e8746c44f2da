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
//! At most `max_connections` are open at once (more are closed on accept); on shutdown the
//! listener closes, in-flight requests get `shutdown_timeout` to finish, and then the process
//! goes on regardless of clients that never finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Request, Response, StatusCode, Version};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
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
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_connections: 4096,
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
    // Every connection task holds a receiver: `closed()` on the sender is "all drained".
    let (stopping, _) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, max = limits.max_connections, "connection refused: at the connection cap");
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
        tokio::spawn(async move {
            conn.run(stream, peer).await;
            drop(slot);
        });
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
    async fn run(mut self, stream: TcpStream, peer: std::net::SocketAddr) {
        let clock = Arc::new(Clock::new(self.limits));
        let served = async {
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
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::FirstRequest => "no complete first request within the header timeout",
            Expiry::Header => "request header not complete within the header timeout",
            Expiry::Idle => "idle for the idle timeout",
        })
    }
}

/// One connection's deadline, moved by what happens on it.
struct Clock {
    limits: Limits,
    state: Mutex<ClockState>,
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

    /// A request header is complete and the request goes to the router; the connection has
    /// no deadline until the returned guard (carried by the answer's body) is dropped.
    fn request(self: &Arc<Self>, version: Version) -> InFlight {
        let mut s = self.state();
        s.in_flight += 1;
        s.deadline = None;
        s.h2 = version == Version::HTTP_2;
        drop(s);
        self.moved.notify_one();
        InFlight(self.clone())
    }

    fn answered(&self) {
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.deadline = Some((Instant::now() + self.limits.idle_timeout, Expiry::Idle));
            drop(s);
            self.moved.notify_one();
        }
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
        let in_flight = self.clock.request(req.version());
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
