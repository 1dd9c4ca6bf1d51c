//! Absolute-form HTTP (`GET http://host/path`): served by hyper on the client side, forwarded through a
//! pooled hyper client whose connector is our resolve → check → connect dialer. Each request on a kept-alive
//! client connection is normalized and decided on its own. CONNECT arriving after a forwarded request on the
//! same connection is handled through hyper's upgrade.

use super::dial::{DialInfo, Dialer};
use super::heads::HeadWatch;
use super::{connect, respond, Ctx};
use crate::config::Runtime;
use crate::outcome::{Close, CloseReason, Kind, Outcome};
use crate::policy::credentials::ProxyAuth;
use crate::reason::{Reason, Refusal};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub(super) type ProxyBody = BoxBody<Bytes, hyper::Error>;
pub(super) type UpstreamClient = Client<Connector, ProxyBody>;

// --- serving the client connection ---

pub(super) async fn serve<S: super::ClientIo>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    conn_id: u64,
    buf: Vec<u8>,
) {
    let (io, sent, heads) = ClientConn::new(Bytes::from(buf), stream, &ctx);
    let io = TokioIo::new(io);
    let requests = Arc::new(AtomicU32::new(0));
    let svc_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req| {
        // Each request is decided with the configuration in force when it arrives (a reload reaches
        // kept-alive connections); only established tunnels and requests in flight keep the old one.
        let ctx = svc_ctx.current();
        let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
        let framing = raw_framing(&heads);
        async move {
            Ok::<_, std::convert::Infallible>(handle(ctx, req, framing, peer, conn_id, n).await)
        }
    });
    let conn = server_builder(&ctx)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let graceful = |c: Pin<&mut hyper::server::conn::http1::UpgradeableConnection<_, _>>| {
        c.graceful_shutdown()
    };
    drive(&ctx, conn, graceful, (peer, conn_id, Kind::Http), &sent).await;
}

/// Serve a client-side HTTP/1 connection until it ends. Once shutdown begins, it closes as soon as the request
/// in flight is answered (`graceful` tells hyper so), and is cut when the grace is over.
pub(super) async fn drive<C>(
    ctx: &Arc<Ctx>,
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
    (peer, conn_id, kind): (SocketAddr, u64, Kind),
    client_sent: &AtomicBool,
) where
    C: Future<Output = hyper::Result<()>>,
{
    // A client certificate was verified against the CA in force at its handshake: once a reload changes
    // the CA, the connection ends after its current request, and the client handshakes again.
    let verified_by = super::client_cert().map(|_| ctx.settings.client_ca.clone());
    let mut superseded = ctx.superseded().clone();
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    let started_a_head = client_sent.load(Ordering::Relaxed);
                    log_connection_error(ctx, peer, conn_id, kind, &e, started_a_head);
                }
                return;
            }
            _ = superseded.cancelled(), if verified_by.is_some() => {
                let now = ctx.current();
                if Arc::ptr_eq(&now, ctx) || Some(&now.settings.client_ca) != verified_by.as_ref() {
                    tracing::debug!(conn_id, "client CA changed on reload; closing after the current request");
                    break;
                }
                superseded = now.superseded().clone();
            }
            _ = ctx.drain.cancelled() => break,
        }
    }
    graceful(conn.as_mut());
    tokio::select! {
        _ = conn => {}
        _ = ctx.shutdown.cancelled() => {}
    }
}

/// The client-side HTTP/1 server: header time and size bounds, keep-alive.
pub(super) fn server_builder(ctx: &Ctx) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.settings.timeouts.header)
        .max_buf_size(ctx.settings.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
}

/// Errors hyper hit between requests (malformed or oversized later heads, header timeouts). hyper has
/// already answered with the status; this records the reason. `started_a_head`: the client sent bytes after
/// its last answer; without them, a header timeout only ends a kept-alive connection left idle.
pub(super) fn log_connection_error(
    ctx: &Ctx,
    peer: SocketAddr,
    conn_id: u64,
    kind: Kind,
    e: &hyper::Error,
    started_a_head: bool,
) {
    let reason = if e.is_parse_too_large() {
        Reason::HeaderTooLarge
    } else if e.is_timeout() && !started_a_head {
        tracing::debug!(
            conn_id,
            "closed a kept-alive connection idle for timeouts.header"
        );
        return;
    } else if e.is_timeout() {
        Reason::HeaderTimeout
    } else if e.is_parse() || e.is_parse_status() {
        Reason::BadRequest
    } else {
        // The client went away or reset between requests: nothing was asked, nothing to decide.
        return;
    };
    let mut o = Outcome::new(conn_id, 0, peer, kind);
    o.refuse(Refusal::new(
        reason,
        format!("on a kept-alive connection: {e}"),
    ));
    ctx.log.decision(&o);
}

/// What the raw head of the request hyper is about to hand over said (see [`super::heads`]): `Err` with the
/// problem, also when the head could not be followed. Taken when the request starts, in request order.
pub(super) fn raw_framing(heads: &Mutex<HeadWatch>) -> Result<(), String> {
    let verdict = heads.lock().ok().and_then(|mut w| w.take());
    verdict.unwrap_or_else(|| {
        Err(
            "this request's head could not be checked as sent (it follows one egressd could not \
             follow); the connection is closed"
                .into(),
        )
    })
}

/// A refusal of a request whose framing is in doubt: the connection closes after it, since where the next
/// request starts is in doubt too.
pub(super) fn framing_refusal(o: &Outcome) -> Response<ProxyBody> {
    let mut resp = refusal(o);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    framing: Result<(), String>,
    peer: SocketAddr,
    conn_id: u64,
    n: u32,
) -> Response<ProxyBody> {
    // Every head, the first and each later one on a kept-alive connection, is checked as the client sent
    // it (hyper drops a Content-Length beside Transfer-Encoding and merges repeated fields).
    if let Err(problem) = framing {
        let kind = if req.method() == Method::CONNECT {
            Kind::Connect
        } else {
            Kind::Http
        };
        let mut o = Outcome::new(conn_id, n, peer, kind);
        o.method = Some(req.method().to_string());
        o.refuse(Refusal::new(Reason::BadRequest, problem));
        ctx.log.decision(&o);
        return framing_refusal(&o);
    }
    if req.method() == Method::CONNECT {
        return connect_upgrade(ctx, req, peer, conn_id, n).await;
    }
    let mut o = Outcome::new(conn_id, n, peer, Kind::Http);
    o.method = Some(req.method().to_string());
    let Some(authority) = absolute_http_authority(req.uri(), &mut o) else {
        ctx.log.decision(&o);
        return refusal(&o);
    };
    let Some(target) = ctx.target(&authority, Some(80), &mut o) else {
        ctx.log.decision(&o);
        return refusal(&o);
    };
    ctx.authenticate(proxy_auth(req.headers()), &mut o).await;
    let request_path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if ctx.decide(&target, Some(request_path), &mut o).is_none() {
        ctx.log.decision(&o);
        return refusal(&o);
    }

    let started = Instant::now();
    let host_header = if target.port == 80 {
        target.host_for_header()
    } else {
        target.authority()
    };
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    parts.uri = match Uri::try_from(format!("http://{}{}", target.authority(), path)) {
        Ok(u) => u,
        Err(e) => {
            o.refuse(Refusal::new(
                Reason::InvalidTarget,
                format!("cannot rebuild the request URI: {e}"),
            ));
            ctx.log.decision(&o);
            return refusal(&o);
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    if let Ok(v) = HeaderValue::from_str(&host_header) {
        parts.headers.insert(header::HOST, v);
    }
    let (body, up) = Counted::wrap(body);

    // An upstream that accepts and never answers is cut like an idle tunnel, not waited for forever.
    let idle = ctx.settings.timeouts.idle;
    let exchange = tokio::time::timeout(idle, ctx.client.request(Request::from_parts(parts, body)));
    let Ok(result) = exchange.await else {
        o.refuse(Refusal::new(
            Reason::UpstreamError,
            format!("no response from the upstream within timeouts.idle ({idle:?})"),
        ));
        ctx.log.decision(&o);
        return refusal(&o);
    };
    match result {
        Ok(resp) => {
            if let Some(rec) = resp.extensions().get::<Arc<DialRecord>>() {
                rec.fill(&mut o);
            }
            ctx.log.decision(&o);
            Tracked::response(
                resp,
                PendingClose {
                    ctx: ctx.clone(),
                    conn_id,
                    request: n,
                    kind: Kind::Http,
                    host: o.host.clone(),
                    up,
                    started,
                },
            )
        }
        Err(e) => {
            match find_dial_error(&e) {
                Some(d) => {
                    d.info.fill(&mut o);
                    o.refuse(d.refusal.clone());
                }
                None => o.refuse(Refusal::new(
                    Reason::UpstreamError,
                    format!("upstream exchange failed: {}", chain(&e)),
                )),
            }
            ctx.log.decision(&o);
            refusal(&o)
        }
    }
}

pub(super) fn refusal(o: &Outcome) -> Response<ProxyBody> {
    respond::refusal_response(o).map(|b| b.map_err(|never| match never {}).boxed())
}

/// The authority of an absolute http:// URI, or a refusal recorded in the outcome.
fn absolute_http_authority(uri: &Uri, o: &mut Outcome) -> Option<String> {
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) if s.eq_ignore_ascii_case("http") => Some(a.as_str().to_string()),
        (Some(s), Some(_)) => {
            o.refuse(Refusal::new(
                Reason::UnsupportedScheme,
                format!("{s}:// URLs are not proxied; use CONNECT for https"),
            ));
            None
        }
        _ => {
            o.refuse(Refusal::new(
                Reason::NotProxyRequest,
                format!("{uri} is not an absolute http:// URL; this is a forward proxy"),
            ));
            None
        }
    }
}

async fn connect_upgrade(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    peer: SocketAddr,
    conn_id: u64,
    n: u32,
) -> Response<ProxyBody> {
    let mut o = Outcome::new(conn_id, n, peer, Kind::Connect);
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let proxy_auth = proxy_auth(req.headers());
    let Some(opened) = connect::open(&ctx, &authority, proxy_auth.as_ref(), &mut o).await else {
        return refusal(&o);
    };
    // Tracked so that a shutdown drains this tunnel too.
    ctx.tasks.clone().spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let judged = connect::tunnel(&ctx, TokioIo::new(upgraded), opened, Vec::new(), o);
                if let Some(tunnel) = Box::pin(judged).await {
                    tunnel.run(&ctx).await;
                }
            }
            Err(_) => {
                ctx.log.decision(&o);
                ctx.log.close(&Close::ended(&o, CloseReason::ClientGone));
            }
        }
    });
    Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}

// --- headers ---

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The Proxy-Authorization header of a request (never forwarded: it is hop-by-hop).
fn proxy_auth(h: &HeaderMap) -> Option<ProxyAuth> {
    h.get(http::header::PROXY_AUTHORIZATION)
        .map(|v| ProxyAuth(String::from_utf8_lossy(v.as_bytes()).into_owned()))
}

/// Remove hop-by-hop headers: the fixed list plus every header named in Connection.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .chain(h.get_all("proxy-connection").iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

// --- upstream client and connector ---

pub(super) fn upstream_client(dialer: Arc<Dialer>, settings: &Runtime) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(
            settings
                .timeouts
                .idle
                .min(std::time::Duration::from_secs(90)),
        )
        .pool_timer(TokioTimer::new())
        .set_host(false)
        .build(Connector { dialer })
}

/// What dialling found, attached to every response on the pooled connection. Timings are reported only
/// on the first request; later ones reuse the connection without a lookup or connect.
pub(super) struct DialRecord {
    info: DialInfo,
    reported: AtomicBool,
}

impl DialRecord {
    fn fill(&self, o: &mut Outcome) {
        let first = !self.reported.swap(true, Ordering::Relaxed);
        o.resolved_addrs = self.info.resolved.clone();
        o.upstream_addr = self.info.upstream;
        if first {
            o.dns_ms = self.info.dns_ms;
            o.connect_ms = self.info.connect_ms;
        }
    }
}

impl DialInfo {
    pub(super) fn fill(&self, o: &mut Outcome) {
        o.resolved_addrs = self.resolved.clone();
        o.denied_addr = self.denied_addr;
        o.upstream_addr = self.upstream;
        o.dns_ms = self.dns_ms;
        o.connect_ms = self.connect_ms;
    }
}

/// A dial failure together with what was learned before it failed.
#[derive(Debug)]
pub(super) struct ConnectFailure {
    refusal: Refusal,
    info: DialInfo,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.refusal.fmt(f)
    }
}

impl std::error::Error for ConnectFailure {}

fn find_dial_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<ConnectFailure>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

#[derive(Clone)]
pub(super) struct Connector {
    dialer: Arc<Dialer>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Upstream;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Upstream, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let mut info = DialInfo::default();
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let target = crate::target::parse_authority(authority, Some(80)).map_err(|e| {
                ConnectFailure {
                    refusal: Refusal::new(Reason::InvalidTarget, e.to_string()),
                    info: DialInfo::default(),
                }
            })?;
            match dialer.dial(&target, &mut info).await {
                Ok(stream) => Ok(Upstream {
                    io: TokioIo::new(stream),
                    record: Arc::new(DialRecord {
                        info,
                        reported: AtomicBool::new(false),
                    }),
                }),
                Err(refusal) => Err(ConnectFailure { refusal, info }),
            }
        })
    }
}

pub(super) struct Upstream {
    io: TokioIo<TcpStream>,
    record: Arc<DialRecord>,
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.record.clone())
    }
}

impl hyper::rt::Read for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// --- bodies ---

/// Request body passed through while counting its bytes.
pub(super) struct Counted {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl Counted {
    /// `body` boxed for the upstream request, and the count of its bytes sent so far.
    pub(super) fn wrap(body: Incoming) -> (ProxyBody, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner: body,
            count: count.clone(),
        };
        (counted.boxed(), count)
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(super) struct PendingClose {
    pub(super) ctx: Arc<Ctx>,
    pub(super) conn_id: u64,
    pub(super) request: u32,
    pub(super) kind: Kind,
    pub(super) host: Option<String>,
    pub(super) up: Arc<AtomicU64>,
    pub(super) started: Instant,
}

/// Response body passed through while counting; the close line is written when it ends or is dropped.
pub(super) struct Tracked {
    inner: Incoming,
    down: u64,
    close: Option<PendingClose>,
}

impl Tracked {
    /// The upstream's response for the client: hop-by-hop headers removed, and the body tracked so that
    /// `close` is logged when it ends.
    pub(super) fn response(resp: Response<Incoming>, close: PendingClose) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let tracked = Tracked {
            inner: body,
            down: 0,
            close: Some(close),
        };
        Response::from_parts(parts, tracked.boxed())
    }

    fn finish(&mut self, reason: CloseReason) {
        if let Some(p) = self.close.take() {
            p.ctx.log.close(&Close {
                conn_id: p.conn_id,
                request: p.request,
                kind: p.kind,
                host: p.host,
                bytes_up: p.up.load(Ordering::Relaxed),
                bytes_down: self.down,
                duration: p.started.elapsed(),
                close_reason: reason,
                hello_records: None,
                hello_reads: None,
            });
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.down += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(CloseReason::Eof);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(CloseReason::UpstreamError),
            Poll::Ready(None) => self.finish(CloseReason::Eof),
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let reason = if self.inner.is_end_stream() {
            CloseReason::Eof
        } else {
            CloseReason::ClientGone
        };
        self.finish(reason);
    }
}

// --- the client stream as hyper sees it ---

/// The client stream with the bytes already read (the first head, if any) put back in front, noting
/// whether the client has sent anything since egressd last wrote to it.
pub(super) struct ClientConn<S> {
    prefix: Bytes,
    inner: S,
    /// Follows every byte handed to hyper, so each request's raw head is checked.
    heads: Arc<Mutex<HeadWatch>>,
    /// Set by every read that returns bytes, cleared by every write. Clear when hyper's header timeout
    /// fires: the client sent nothing after its last answer (a kept-alive connection left idle). Set: it
    /// started a head and did not finish it.
    sent_since_answer: Arc<AtomicBool>,
}

impl<S> ClientConn<S> {
    pub(super) fn new(
        prefix: Bytes,
        inner: S,
        ctx: &Ctx,
    ) -> (Self, Arc<AtomicBool>, Arc<Mutex<HeadWatch>>) {
        let sent = Arc::new(AtomicBool::new(!prefix.is_empty()));
        let max_head = ctx.settings.limits.max_header_bytes.max(8192);
        let heads = Arc::new(Mutex::new(HeadWatch::new(max_head)));
        let conn = ClientConn {
            prefix,
            inner,
            heads: heads.clone(),
            sent_since_answer: sent.clone(),
        };
        (conn, sent, heads)
    }

    fn follow(&self, bytes: &[u8]) {
        if let Ok(mut w) = self.heads.lock() {
            w.feed(bytes);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientConn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            self.follow(&chunk);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.sent_since_answer.store(true, Ordering::Relaxed);
            self.follow(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientConn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.sent_since_answer.store(false, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}
