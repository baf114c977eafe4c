//! The connection loop: accepts TCP connections (TLS when configured), serves HTTP/1.1 on
//! each with the gateway's router, and bounds what a slow or greedy client can hold:
//!
//! - the request head (and, on a kept-alive connection, the wait for the next one) must
//!   arrive within [`ConnectionLimits::header_timeout`], and a TLS handshake within the
//!   same time;
//! - a response that makes no progress for [`ConnectionLimits::send_timeout`] (the client
//!   stopped reading) ends its connection;
//! - the whole request body within [`ConnectionLimits::body_timeout`] of its head (a client
//!   sending a byte a second is cut off, however steadily it trickles);
//! - a body whose declared length is over [`ConnectionLimits::max_request`] is refused 413
//!   before any of it is read;
//! - at most [`ConnectionLimits::max_connections`] connections are served at once (more
//!   wait in the listen queue);
//! - a STOW-RS request that would leave less than the [`DiskReserve`] free on the data
//!   directory's filesystem is refused 507 before its body is read.
//!
//! The refusals made here, before the router, are recorded in the audit trail as the
//! router's audit middleware records the requests it sees.
//!
//! Each connection is its own task, so one stalled client never delays another. On
//! shutdown the listener is closed, requests in flight finish, idle connections close.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::disk::{DiskReserve, NoRoom};

/// What one connection and one request may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a request's head (from the connection's start or the previous
    /// response), and for a TLS handshake.
    pub header_timeout: Duration,
    /// Longest time for a request's whole body to arrive, counted from its head.
    pub body_timeout: Duration,
    /// Longest a write to the client may wait (a client that stops reading a response).
    pub send_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Largest request body, in bytes: a larger declared `Content-Length` is refused 413
    /// unread (a chunked body is cut off at this size by the router's limit).
    pub max_request: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_request: crate::Limits::default().max_request,
        }
    }
}

/// Serves `app` on `listener` (through `tls` when given) until `shutdown` resolves, then
/// stops accepting and waits for the connections still open to finish their requests.
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    disk: Option<Arc<DiskReserve>>,
    auditor: Option<crate::audit::Auditor>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let app = app.clone();
        let tls = tls.clone();
        let disk = disk.clone();
        let auditor = auditor.clone();
        tokio::spawn(async move {
            let on = On {
                remote,
                app,
                limits,
                disk,
                auditor,
            };
            match tls {
                None => connection(stream, on, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => connection(stream, on, watcher).await,
                        // A refused version or suite, a port scan, a slow handshake.
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What a connection is served with.
struct On {
    remote: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    disk: Option<Arc<DiskReserve>>,
    auditor: Option<crate::audit::Auditor>,
}

/// Serves HTTP/1.1 on one connection.
async fn connection<I>(io: I, on: On, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let On {
        remote,
        app,
        limits,
        disk,
        auditor,
    } = on;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut app = app.clone();
        let disk = disk.clone();
        let auditor = auditor.clone();
        async move {
            let declared = declared_length(&req);
            let refused = if declared.is_some_and(|n| n > limits.max_request as u64) {
                Some(too_large(limits.max_request))
            } else {
                disk.filter(|_| is_store(&req))
                    .and_then(|d| d.room_for(declared.unwrap_or(0)).err())
                    .map(no_room)
            };
            if let Some(resp) = refused {
                return Ok(audited(auditor.as_ref(), &req, remote, resp).await);
            }
            let deadline = Instant::now() + limits.body_timeout;
            let mut req = req.map(|body| {
                axum::body::Body::new(Deadline {
                    inner: body,
                    sleep: Box::pin(tokio::time::sleep_until(deadline)),
                    limit: limits.body_timeout,
                })
            });
            // The client's address goes into the audit trail.
            req.extensions_mut().insert(ConnectInfo(remote));
            app.call(req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let io = Stall {
        io,
        limit: limits.send_timeout,
        stalled: None,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// `resp`, a refusal made before the router, once its event is in the audit trail (a 500
/// when it cannot be written: no request goes unaudited).
async fn audited<B>(
    auditor: Option<&crate::audit::Auditor>,
    req: &Request<B>,
    remote: SocketAddr,
    resp: Response<axum::body::Body>,
) -> Response<axum::body::Body> {
    let (Some(auditor), Some(action)) = (auditor, audit_action(req)) else {
        return resp;
    };
    let event = crate::audit::event_of(
        action,
        None,
        None,
        None,
        resp.status(),
        Some(remote.ip().to_string()),
    );
    match auditor.append(event).await {
        Ok(()) => resp,
        Err(e) => {
            tracing::error!(error = %e, action = %action, "request refused: its audit event could not be written");
            let mut r = Response::new(axum::body::Body::from(
                "the audit trail could not be written: the request is refused\n",
            ));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
    }
}

/// The audited action of a request, named as the audit middleware names it; `None` for
/// the routes it does not audit (health, metrics).
fn audit_action<B>(req: &Request<B>) -> Option<radveil_audit::Action> {
    use radveil_access::Action as Asked;
    use radveil_audit::Action;
    let path = req.uri().path();
    if path == "/audit" || path == "/me/access-log" {
        return Some(Action::AuditRead);
    }
    if !(path == "/dicom-web" || path.starts_with("/dicom-web/")) {
        return None;
    }
    Some(match crate::auth::action_of(req.method(), path) {
        Asked::Store => Action::Store,
        Asked::Delete => Action::Delete,
        Asked::Search => Action::Query,
        Asked::Read | Asked::ReadAudit => Action::Retrieve,
    })
}

/// The request's `Content-Length`, when it has one that parses.
fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the request is a STOW-RS (the only requests that write more than an event).
fn is_store<B>(req: &Request<B>) -> bool {
    req.method() == axum::http::Method::POST && req.uri().path().starts_with("/dicom-web/studies")
}

fn no_room(e: NoRoom) -> Response<axum::body::Body> {
    tracing::warn!(
        free = e.free,
        needed = e.needed,
        reserve = e.reserve,
        "store refused: the data directory's filesystem is (nearly) full"
    );
    let mut r = Response::new(axum::body::Body::from(format!(
        "insufficient storage: {e}. Nothing of this request was stored; what was stored before is kept and served. Free space on the data directory's filesystem and send it again.\n"
    )));
    *r.status_mut() = StatusCode::INSUFFICIENT_STORAGE;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn too_large(max: usize) -> Response<axum::body::Body> {
    tracing::warn!(
        limit = max,
        "request refused: its declared body is over the limit"
    );
    let mut r = Response::new(axum::body::Body::from(format!(
        "the request body is larger than the limit of {max} bytes\n"
    )));
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    // The unread body leaves the connection unusable: say so.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The body did not arrive within its time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            tracing::info!(
                limit_s = this.limit.as_secs(),
                "request body timed out: cutting the connection"
            );
            return Poll::Ready(Some(Err(BodyTimeout(this.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail once one has waited `limit` without progress: a client
/// that stops reading cannot hold the connection (and the response in memory) forever.
struct Stall<I> {
    io: I,
    limit: Duration,
    /// Since when the pending write has waited.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> Stall<I> {
    /// `polled` as it is, unless it is still pending after `limit`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            tracing::info!(
                limit_s = limit.as_secs(),
                "the client stopped reading: cutting the connection"
            );
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Stall<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Stall<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check(cx, polled)
    }
}
