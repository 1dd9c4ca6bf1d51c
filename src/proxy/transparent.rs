//! Transparent mode: connections redirected to egressd with iptables REDIRECT, without CONNECT. The kernel
//! says where the client was going (SO_ORIGINAL_DST); the ClientHello's SNI (or, on the plain-HTTP listener,
//! the Host header) says which name that is for. The name is judged by the policy on the original port, and
//! the original destination must be one of the name's resolved, checked addresses before anything is
//! forwarded to it.

use super::dial::DialInfo;
use super::peek::{peek, FirstBytes, Peeked};
use super::redirect::{dial_original, own_traffic, redirected_to};
use super::retry::replay_hello;
use super::upstream_io::UpstreamIo;
use super::{ctx::Ctx, live::Live, splice, transparent_http};
use crate::outcome::{Close, CloseReason, Kind, Outcome};
use crate::policy::first_bytes::Quiet;
use crate::policy::verdict::transparent_target;
use crate::reason::Refusal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Which transparent listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `listen_transparent`: TLS, named by the SNI.
    Tls,
    /// `listen_transparent_http`: plain HTTP, named by the Host header.
    Http,
}

impl Flavor {
    /// The `listener` label of `egressd_connections_active`.
    fn listener(self) -> &'static str {
        match self {
            Flavor::Tls => "transparent",
            Flavor::Http => "transparent_http",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Flavor::Tls => Kind::Transparent,
            Flavor::Http => Kind::TransparentHttp,
        }
    }
}

/// Accept redirected connections until shutdown. `own` are the addresses egressd listens on (the loop guard).
pub(super) async fn accept_loop(
    listener: super::accept::Listener,
    flavor: Flavor,
    live: Arc<Live>,
    own: Arc<Vec<SocketAddr>>,
) {
    let drain = live.ctx().drain.clone();
    while let Some((stream, peer)) = super::accept::next_connection(&listener, &drain).await {
        // Registered at once: the original destination and the reset on refusal need the tokio stream.
        let stream = match stream.into_tcp() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot register a transparent connection; closed it");
                continue;
            }
        };
        // The configuration in force now; a reload applies to the next connection.
        let ctx = live.ctx();
        let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
        let admitted = live.admit(&ctx, peer.ip());
        let active = ctx.metrics.connection_opened(flavor.listener());
        let own = own.clone();
        let tasks = ctx.tasks.clone();
        tasks.spawn(async move {
            let _active = active;
            let mut o = Outcome::new(conn_id, 1, peer, flavor.kind());
            let original = match redirected_to(&stream, &own) {
                Ok(a) => a,
                Err(r) => {
                    o.refuse(r);
                    return refuse(&ctx, stream, flavor, &o, true).await;
                }
            };
            o.original_dst = Some(original);
            let slots = match admitted {
                Ok(slots) => slots,
                Err(refused) => {
                    o.refuse(refused.refusal);
                    // One line per burst (see admission); every refusal is counted.
                    return refuse(&ctx, stream, flavor, &o, refused.logged).await;
                }
            };
            match flavor {
                Flavor::Tls => serve_tls(&ctx, stream, o).await,
                Flavor::Http => transparent_http::serve(ctx.clone(), stream, o).await,
            }
            drop(slots);
        });
    }
}

/// Record the refusal of a connection before its request and end it: a reset for TLS (there is no way to
/// answer inside the client's TLS session), a response with the reason for plain HTTP.
async fn refuse(ctx: &Ctx, stream: TcpStream, flavor: Flavor, o: &Outcome, logged: bool) {
    ctx.refused_early(o, logged);
    match flavor {
        Flavor::Tls => reset(stream),
        Flavor::Http => super::respond::write_refusal(stream, o).await,
    }
}

/// Close with RST, so the client fails at once instead of waiting for a TLS answer.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// A redirected TLS connection: peek the ClientHello, judge its SNI on the original port, dial the original
/// destination if it is one of the name's addresses (or ask the route's parents to CONNECT to the name),
/// replay the hello and splice.
async fn serve_tls(ctx: &Ctx, mut client: TcpStream, mut o: Outcome) {
    let started = Instant::now();
    let Some(original) = o.original_dst else {
        return;
    };
    let checks = &ctx.settings.tls;
    let peeked = peek(
        &mut client,
        None,
        Vec::new(),
        true,
        checks.hello_max_bytes,
        checks.hello_timeout,
        checks.hello_timeout,
        &ctx.shutdown,
    )
    .await;
    if let FirstBytes::Hello(info) = &peeked.first {
        o.sni = info.sni.clone();
        o.alpn = info.alpn.clone();
    }
    let mut upstream = match open(ctx, &peeked, original, &mut o).await {
        Ok(u) => u,
        // No request: the client left or stayed silent, or shutdown came first.
        Err(Err(q)) => {
            if q != Quiet::Cut {
                ctx.metrics.empty_connection(Flavor::Tls.listener());
            }
            return;
        }
        Err(Ok(r)) => {
            o.refuse(r);
            ctx.log.decision(&o);
            return reset(client);
        }
    };

    let idle = crate::policy::IdleOverride::resolve(o.idle, ctx.settings.timeouts.idle);
    let mut close = Close::ended(&o, CloseReason::Eof);
    close.hello_reads = Some(peeked.reads);
    let Peeked {
        first: FirstBytes::Hello(info),
        buf,
        ..
    } = peeked
    else {
        return;
    };
    close.hello_records = Some(info.records);
    // Replay the hello; after a HelloRetryRequest the second hello is judged before it goes upstream.
    let first = info.hello();
    let r = Box::pin(replay_hello(
        &mut client,
        &mut upstream,
        buf,
        info.hello_len,
        first,
        checks,
        false,
        &ctx.shutdown,
    ))
    .await;
    close.bytes_up = r.up;
    close.bytes_down = r.down;
    let go = r.end.record(&mut o, &mut close);
    ctx.log.decision(&o);
    if close.close_reason == CloseReason::Denied {
        close.duration = started.elapsed();
        ctx.log.close(&close);
        return reset(client);
    }
    if go {
        let s = splice::splice(client, upstream, idle, ctx.shutdown.cancelled()).await;
        close.bytes_up += s.bytes_up;
        close.bytes_down += s.bytes_down;
        close.close_reason = s.close_reason;
    }
    close.duration = started.elapsed();
    ctx.log.close(&close);
}

/// Name the redirected connection by its ClientHello, decide, and dial its original destination.
/// `Err(Err(quiet))`: nothing decisive came, so there was no request.
async fn open(
    ctx: &Ctx,
    peeked: &Peeked,
    original: SocketAddr,
    o: &mut Outcome,
) -> Result<UpstreamIo, Result<Refusal, Quiet>> {
    if let Some(r) = own_traffic(ctx, o.client_addr) {
        return Err(Ok(r));
    }
    let checks = &ctx.settings.tls;
    let started = !peeked.buf.is_empty();
    let target = transparent_target(checks, original.port(), peeked.first.seen(), started)?;
    o.host = Some(target.host.to_string());
    o.port = Some(target.port);
    ctx.decide(&target, None, o).map_err(Ok)?;
    let mut info = DialInfo::default();
    // Through a parent the connection goes to the NAME the hello gave (which the verdict allowed), wherever
    // the client was sending it.
    let dialled = match super::parent::route(ctx, o.rule.as_deref(), &target, &mut info.via) {
        Some(parents) => super::parent::dial(ctx, &parents, &target, &mut info).await,
        None => dial_original(ctx, &target, original, &mut info)
            .await
            .map(UpstreamIo::from),
    };
    info.record_into(o);
    dialled.map_err(Ok)
}
