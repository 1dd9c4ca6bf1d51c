//! Absolute-form HTTP (`GET http://host/path`): served by hyper on the client side, forwarded through a
//! pooled hyper client whose connector is our resolve → check → connect dialer. Each request on a kept-alive
//! client connection is normalized and decided on its own. CONNECT arriving after a forwarded request on the
//! same connection is handled through hyper's upgrade.

use super::body::{CountingBody, PendingClose, Tracked};
use super::http1::{
    absolute_uri, answer, chain, drive, proxy_auth, raw_framing, refusal, server_builder,
    upstream_headers, within_idle, ClientConn, ProxyBody,
};
use super::upstream::{find_dial_error, DialRecord};
use super::{connect, ctx::Ctx};
use crate::outcome::{Kind, Outcome};
use crate::policy::credentials::CertName;
use crate::reason::{Reason, Refusal};
use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

// --- serving the client connection ---

pub(super) async fn serve<S: super::client_io::ClientIo>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    conn_id: u64,
    buf: Vec<u8>,
) {
    let cert = stream.cert_names();
    let balancer = stream.balancer();
    let verified = !cert.is_empty();
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
        let cert = cert.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                handle(ctx, req, framing, (peer, balancer, conn_id, cert), n).await,
            )
        }
    });
    let conn = server_builder(&ctx)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let graceful = |c: Pin<&mut hyper::server::conn::http1::UpgradeableConnection<_, _>>| {
        c.graceful_shutdown()
    };
    drive(
        &ctx,
        conn,
        graceful,
        (peer, conn_id, Kind::Http),
        &sent,
        verified,
    )
    .await;
}

/// One request of a kept-alive connection: its decision line is written here, once, whatever the outcome.
async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    framing: Result<(), String>,
    (peer, balancer, conn_id, cert): (SocketAddr, Option<SocketAddr>, u64, Arc<[CertName]>),
    n: u32,
) -> Response<ProxyBody> {
    let connect = req.method() == Method::CONNECT;
    let kind = if connect { Kind::Connect } else { Kind::Http };
    let mut o = Outcome::new(conn_id, n, peer, kind);
    o.cert_names = cert;
    o.peer_addr = balancer;
    if connect && framing.is_ok() {
        return connect_upgrade(ctx, req, o).await;
    }
    o.method = Some(req.method().to_string());
    // Every head, the first and each later one on a kept-alive connection, is checked as the client sent
    // it (hyper drops a Content-Length beside Transfer-Encoding and merges repeated fields).
    let in_doubt = framing.is_err();
    let result = match framing {
        Err(problem) => Err(Refusal::new(Reason::BadRequest, problem)),
        Ok(()) => forward(&ctx, req, &mut o).await,
    };
    answer(&ctx, &mut o, result, in_doubt)
}

/// Decide an absolute-form request and forward it; the response streams back with its close line pending.
async fn forward(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    o: &mut Outcome,
) -> Result<Response<ProxyBody>, Refusal> {
    let authority = absolute_http_authority(req.uri())?;
    let target = ctx.target(&authority, Some(80), o)?;
    ctx.authenticate(proxy_auth(req.headers()), o).await;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    ctx.decide(&target, Some(&path), o)?;

    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    parts.uri = absolute_uri(&target, &path)?;
    upstream_headers(&mut parts.headers, &target);
    let (body, up) = CountingBody::wrap(body);

    let exchange = async {
        match super::parent::route(ctx, o.rule.as_deref(), &target, &mut o.via) {
            Some(parents) => super::parent_http::send(ctx, &parents, &target, parts, body, o).await,
            None => direct(ctx, Request::from_parts(parts, body), o).await,
        }
    };
    let resp = within_idle(ctx, exchange).await?;
    Ok(Tracked::response(
        resp,
        PendingClose::of(ctx, o, up, started),
    ))
}

/// The request sent over the direct client's pool; what its dial found is recorded in `o`.
async fn direct(
    ctx: &Ctx,
    req: Request<ProxyBody>,
    o: &mut Outcome,
) -> Result<Response<Incoming>, Refusal> {
    let resp = ctx
        .client
        .request(req)
        .await
        .map_err(|e| match find_dial_error(&e) {
            Some(d) => {
                d.info.record_into(o);
                d.refusal.clone()
            }
            None => Refusal::new(
                Reason::UpstreamError,
                format!("upstream exchange failed: {}", chain(&e)),
            ),
        })?;
    if let Some(rec) = resp.extensions().get::<Arc<DialRecord>>() {
        rec.report_into(o);
    }
    Ok(resp)
}

/// The authority of an absolute http:// URI.
fn absolute_http_authority(uri: &Uri) -> Result<String, Refusal> {
    match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) if s.eq_ignore_ascii_case("http") => Ok(a.as_str().to_string()),
        (Some(s), Some(_)) => Err(Refusal::new(
            Reason::UnsupportedScheme,
            format!("{s}:// URLs are not proxied; use CONNECT for https"),
        )),
        _ => Err(Refusal::new(
            Reason::NotProxyRequest,
            format!("{uri} is not an absolute http:// URL; this is a forward proxy"),
        )),
    }
}

async fn connect_upgrade(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    mut o: Outcome,
) -> Response<ProxyBody> {
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
            Err(_) => connect::client_gone(&ctx, &o),
        }
    });
    Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}
