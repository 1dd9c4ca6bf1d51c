//! Transparent plain HTTP (`listen_transparent_http`): requests on a redirected connection are origin-form
//! (`GET /path`), named by their Host header. Every request on a kept-alive connection is judged on its own
//! (name, original port, path), and goes over its own upstream connection to the original destination, so a
//! later request for another name cannot ride on an earlier request's approval.

use super::body::{CountingBody, PendingClose, Tracked};
use super::ctx::Ctx;
use super::dial::DialInfo;
use super::http1::{
    absolute_uri, answer, chain, drive, raw_framing, refusal, server_builder, upstream_headers,
    within_idle, ClientConn, ProxyBody,
};
use super::redirect::{dial_original, own_traffic};
use crate::outcome::{Kind, Outcome};
use crate::policy::transparent::request_target;
use crate::reason::{Reason, Refusal};
use http::header::{self};
use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// Serve the requests of one redirected connection. `first` carries the connection's identity and original
/// destination.
pub(super) async fn serve(ctx: Arc<Ctx>, stream: TcpStream, first: Outcome) {
    let Some(original) = first.original_dst else {
        return;
    };
    let (peer, conn_id) = (first.client_addr, first.conn_id);
    let requests = Arc::new(AtomicU32::new(0));
    let asked = requests.clone();
    let svc_ctx = ctx.clone();
    let (io, sent, heads) = ClientConn::new(bytes::Bytes::new(), stream, &ctx);
    let service = hyper::service::service_fn(move |req| {
        // The configuration in force when the request arrives (see forward::serve).
        let ctx = svc_ctx.current();
        let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
        let mut o = Outcome::new(conn_id, n, peer, Kind::TransparentHttp);
        o.original_dst = Some(original);
        let framing = raw_framing(&heads);
        async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, framing, o).await) }
    });
    let conn = server_builder(&ctx).serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let graceful =
        |c: Pin<&mut hyper::server::conn::http1::Connection<_, _>>| c.graceful_shutdown();
    drive(
        &ctx,
        conn,
        graceful,
        (peer, conn_id, Kind::TransparentHttp),
        &sent,
        false,
    )
    .await;
    // Not a byte before it ended or timed out: no request, only counted (as on the other listeners).
    if asked.load(Ordering::Relaxed) == 0 && !sent.load(Ordering::Relaxed) {
        ctx.metrics.empty_connection("transparent_http");
    }
}

/// The absolute-form target's authority and the Host header (the raw head has at most one).
fn request_names(req: &Request<Incoming>) -> (Option<&str>, Option<String>) {
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    (authority, host)
}

/// One redirected request: its decision line is written here, once, whatever the outcome.
async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    framing: Result<(), String>,
    mut o: Outcome,
) -> Response<ProxyBody> {
    let Some(original) = o.original_dst else {
        return refusal(&o);
    };
    o.method = Some(req.method().to_string());
    // The same framing checks as on the proxy listener, on every request's raw head.
    let in_doubt = framing.is_err();
    let result = match framing {
        Err(problem) => Err(Refusal::new(Reason::BadRequest, problem)),
        Ok(()) => forward(&ctx, req, original, &mut o).await,
    };
    answer(&ctx, &mut o, result, in_doubt)
}

/// Name, decide and forward a redirected request to its original destination.
async fn forward(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    original: SocketAddr,
    o: &mut Outcome,
) -> Result<Response<ProxyBody>, Refusal> {
    if let Some(r) = own_traffic(ctx, o.client_addr) {
        return Err(r);
    }
    if req.method() == Method::CONNECT {
        return Err(Refusal::new(
            Reason::BadRequest,
            "CONNECT is not served on listen_transparent_http; send it to the proxy listener",
        ));
    }
    let (authority, host) = request_names(&req);
    let target = request_target(authority, host.as_deref(), original.port())?;
    o.host = Some(target.host.to_string());
    o.port = Some(target.port);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    ctx.decide(&target, Some(&path), o)?;

    let started = Instant::now();
    if let Some(parents) = super::parent::route(ctx, o.rule.as_deref(), &target, &mut o.via) {
        // Through a parent the request goes to the NAME the Host header gave (which the verdict allowed).
        let (mut parts, body) = req.into_parts();
        parts.uri = absolute_uri(&target, &path)?;
        upstream_headers(&mut parts.headers, &target);
        let (body, up) = CountingBody::wrap(body);
        let sent = super::parent_http::send(ctx, &parents, &target, parts, body, o);
        let resp = within_idle(ctx, sent).await?;
        return Ok(Tracked::response(
            resp,
            PendingClose::of(ctx, o, up, started),
        ));
    }
    let mut info = DialInfo::default();
    let dialled = dial_original(ctx, &target, original, &mut info).await;
    info.record_into(o);
    let upstream = dialled?;
    let exchange_failed = |e: hyper::Error| {
        Refusal::new(
            Reason::UpstreamError,
            format!("upstream exchange failed: {}", chain(&e)),
        )
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(exchange_failed)?;
    tokio::spawn(conn);

    let (mut parts, body) = req.into_parts();
    // Origin-form upstream, as the client sent it to the origin it thought it reached.
    parts.uri = Uri::try_from(path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
    upstream_headers(&mut parts.headers, &target);
    let (body, up) = CountingBody::wrap(body);
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(exchange_failed)?;
    Ok(Tracked::response(
        resp,
        PendingClose::of(ctx, o, up, started),
    ))
}
