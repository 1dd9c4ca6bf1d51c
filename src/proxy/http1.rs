//! HTTP/1 serving shared by the forward-proxy listeners and the transparent HTTP listener: the hyper
//! server's bounds, driving a client connection through shutdown and reloads, the raw-framing verdict each
//! request takes, refusals as responses, hop-by-hop headers, and the client stream as hyper sees it.

use super::{ctx::Ctx, respond};
use crate::outcome::{Kind, Outcome};
use crate::policy::credentials::ProxyAuth;
use crate::reason::{Reason, Refusal};
use crate::target::Target;
use crate::wire::request_stream::HeadWatch;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, Uri};
use http_body_util::BodyExt;
use hyper_util::rt::TokioTimer;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) use super::upstream::ProxyBody;

// --- serving the client connection ---

/// Serve a client-side HTTP/1 connection until it ends. Once shutdown begins, it closes as soon as the request
/// in flight is answered (`graceful` tells hyper so), and is cut when the grace is over.
pub(super) async fn drive<C>(
    ctx: &Arc<Ctx>,
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
    (peer, conn_id, kind): (SocketAddr, u64, Kind),
    client_sent: &AtomicBool,
    verified_client: bool,
) where
    C: Future<Output = hyper::Result<()>>,
{
    // A client certificate was verified against the CA in force at its handshake: once a reload changes
    // the CA, the connection ends after its current request, and the client handshakes again.
    let verified_by = verified_client.then(|| ctx.settings.client_ca.clone());
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
    ctx.refused_early(&o, true);
}

/// What the raw head of the request hyper is about to hand over said (see [`crate::wire::request_stream`]): `Err` with the
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

/// The exit of one request: its response, or its refusal as one (closing the connection when the request's
/// framing is in doubt, since where the next request starts is in doubt too); its decision line, once.
pub(super) fn answer(
    ctx: &Ctx,
    o: &mut Outcome,
    result: Result<Response<ProxyBody>, Refusal>,
    framing_in_doubt: bool,
) -> Response<ProxyBody> {
    let resp = match result {
        Ok(resp) => resp,
        Err(r) => {
            o.refuse(r);
            if framing_in_doubt {
                framing_refusal(o)
            } else {
                refusal(o)
            }
        }
    };
    ctx.log.decision(o);
    resp
}

/// A refusal of a request whose framing is in doubt: the connection closes after it, since where the next
/// request starts is in doubt too.
pub(super) fn framing_refusal(o: &Outcome) -> Response<ProxyBody> {
    let mut resp = refusal(o);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pub(super) fn refusal(o: &Outcome) -> Response<ProxyBody> {
    respond::refusal_response(o).map(|b| b.map_err(|never| match never {}).boxed())
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
pub(super) fn proxy_auth(h: &HeaderMap) -> Option<ProxyAuth> {
    h.get(http::header::PROXY_AUTHORIZATION)
        .map(|v| ProxyAuth(String::from_utf8_lossy(v.as_bytes()).into_owned()))
}

/// The headers a forwarded request goes upstream with: hop-by-hop headers removed, and the `Host` header
/// naming the target that was judged (without the default port), never another one the client wrote.
/// The absolute-form URI of a request for `target` (what goes to a parent proxy or the direct pool).
pub(super) fn absolute_uri(target: &Target, path: &str) -> Result<Uri, Refusal> {
    Uri::try_from(format!("http://{}{}", target.authority(), path)).map_err(|e| {
        Refusal::new(
            Reason::InvalidTarget,
            format!("cannot rebuild the request URI: {e}"),
        )
    })
}

/// An upstream that accepts and never answers is cut like an idle tunnel, not waited for forever.
pub(super) async fn within_idle<T>(
    ctx: &Ctx,
    exchange: impl Future<Output = Result<T, Refusal>>,
) -> Result<T, Refusal> {
    let idle = ctx.settings.timeouts.idle;
    tokio::time::timeout(idle, exchange).await.map_err(|_| {
        Refusal::new(
            Reason::UpstreamError,
            format!("no response from the upstream within timeouts.idle ({idle:?})"),
        )
    })?
}

pub(super) fn upstream_headers(h: &mut HeaderMap, target: &Target) {
    strip_hop_by_hop(h);
    h.remove(header::HOST);
    let host = if target.port == 80 {
        target.host_for_header()
    } else {
        target.authority()
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        h.insert(header::HOST, v);
    }
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
