//! CONNECT tunnels: decide, dial the checked address, answer 200, read the ClientHello and bind its SNI to the
//! CONNECT host, then replay the peeked bytes and splice. The decision line is written once the hello has
//! been judged (or the request refused earlier), so it carries the SNI.

use super::peek::{peek, FirstBytes, Peeked};
use super::retry::{replay_hello, End};
use super::upstream_io::UpstreamIo;
use super::{ctx::Ctx, parent, respond, splice};
use crate::outcome::{Close, CloseReason, Kind, Outcome};
use crate::policy::credentials::ProxyAuth;
use crate::policy::tls::{tls_required, SniMode};
use crate::policy::verdict::{judge_tunnel, Tunnel, TunnelStart};
use crate::reason::Refusal;
use crate::target::Target;
use crate::telemetry::metrics::Active;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// An allowed CONNECT with its upstream connected, waiting for the client's first bytes.
pub(super) struct Opened {
    target: Target,
    upstream: UpstreamIo,
    rule_tls: Option<bool>,
}

/// Decide and dial for a CONNECT authority. `None` means refused: the decision line is written here, and
/// the outcome holds the reason for the response.
pub(super) async fn open(
    ctx: &Ctx,
    authority: &str,
    proxy_auth: Option<&ProxyAuth>,
    o: &mut Outcome,
) -> Option<Opened> {
    o.method = Some("CONNECT".into());
    match decide_and_dial(ctx, authority, proxy_auth, o).await {
        Ok(opened) => Some(opened),
        Err(r) => {
            o.refuse(r);
            ctx.log.decision(o);
            None
        }
    }
}

async fn decide_and_dial(
    ctx: &Ctx,
    authority: &str,
    proxy_auth: Option<&ProxyAuth>,
    o: &mut Outcome,
) -> Result<Opened, Refusal> {
    ctx.authenticate(proxy_auth.cloned(), o).await;
    let target = ctx.target(authority, None, o)?;
    let rule_tls = ctx.decide(&target, None, o)?;
    let mut info = super::dial::DialInfo::default();
    let dialled = match parent::route(ctx, o.rule.as_deref(), &target, &mut info.via) {
        Some(parents) => parent::dial(ctx, &parents, &target, &mut info).await,
        None => ctx
            .dialer
            .dial(&target, &mut info)
            .await
            .map(UpstreamIo::from),
    };
    info.record_into(o);
    Ok(Opened {
        target,
        upstream: dialled?,
        rule_tls,
    })
}

/// A judged tunnel whose first bytes went upstream: all an established (often idle) tunnel keeps.
pub(super) struct Splicing<C> {
    client: C,
    upstream: UpstreamIo,
    idle: Duration,
    close: Close,
    started: Instant,
    /// Counts the tunnel in `egressd_tunnels_active`, and a long-lived rule's in
    /// `egressd_control_connections_open`, until it closes (boxed: every idle tunnel's task holds it).
    active: Box<(Active, Option<Active>)>,
}

impl<C: super::client_io::ClientIo> Splicing<C> {
    /// Splice until the tunnel ends, then write the close line.
    pub(super) async fn run(self, ctx: &Ctx) {
        let Splicing {
            client,
            upstream,
            idle,
            mut close,
            started,
            active,
        } = self;
        let s = splice::splice(client, upstream, idle, ctx.shutdown.cancelled()).await;
        close.bytes_up += s.bytes_up;
        close.bytes_down += s.bytes_down;
        close.close_reason = s.close_reason;
        close.duration = started.elapsed();
        ctx.log.close(&close);
        drop(active);
    }
}

/// Peek, judge, log the decision, then replay the first bytes upstream. Returns the tunnel to splice, or
/// `None` when it ended here (its close line written). `early` is data the client sent after the CONNECT head
/// without waiting for the 200; it is judged and forwarded first, never dropped.
///
/// Callers run this boxed and the returned [`Splicing`] inline, so a connection's task is only as large as
/// an established tunnel needs, not as large as the peek and judgment.
pub(super) async fn tunnel<C>(
    ctx: &Ctx,
    mut client: C,
    opened: Opened,
    early: Vec<u8>,
    mut o: Outcome,
) -> Option<Splicing<C>>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let started = Instant::now();
    let active = ctx.metrics.tunnel_opened();
    let Opened {
        target,
        mut upstream,
        rule_tls,
    } = opened;
    let checks = &ctx.settings.tls;
    let idle = crate::policy::IdleOverride::resolve(o.idle, ctx.settings.timeouts.idle);
    let required = tls_required(rule_tls, target.port);
    let mut peeked = if checks.sni == SniMode::Off && !required {
        Peeked {
            first: FirstBytes::ServerFirst,
            reads: usize::from(!early.is_empty()),
            buf: early,
        }
    } else {
        Box::pin(peek(
            &mut client,
            Some(upstream.socket()),
            early,
            required,
            checks.hello_max_bytes,
            checks.hello_timeout,
            idle,
            &ctx.shutdown,
        ))
        .await
    };

    let hello_records = match &peeked.first {
        FirstBytes::Hello(info) => {
            o.sni = info.sni.clone();
            o.alpn = info.alpn.clone();
            Some(info.records)
        }
        _ => None,
    };
    let facts = Tunnel {
        target: &target,
        required,
        client: &o.client,
        lenient: o.lenient,
    };
    let start = judge_tunnel(
        &ctx.settings.policy,
        checks,
        &facts,
        peeked.first.seen(),
        !peeked.buf.is_empty(),
    );
    let lenient = o.lenient;
    let mut close = Close {
        conn_id: o.conn_id,
        request: o.request,
        kind: Kind::Connect,
        host: o.host.clone(),
        bytes_up: 0,
        bytes_down: 0,
        duration: Duration::ZERO,
        close_reason: CloseReason::Eof,
        hello_records,
        hello_reads: Some(peeked.reads),
    };
    let end = match start {
        // The 200 is already sent: refusing means closing the tunnel without forwarding a byte.
        TunnelStart::Refuse(r) => End::Refuse(r),
        TunnelStart::Quiet(q) => End::Ended(q.into()),
        TunnelStart::Go | TunnelStart::Reported(_) => {
            if let TunnelStart::Reported(r) = start {
                o.report(r);
            }
            // The replayed bytes are released before splicing: an idle tunnel holds no buffer.
            let replay = std::mem::take(&mut peeked.buf);
            if let FirstBytes::Hello(info) = &peeked.first {
                // A TLS tunnel: the server may ask for a retry, and the second hello is judged too.
                let first = info.hello();
                let r = Box::pin(replay_hello(
                    &mut client,
                    &mut upstream,
                    replay,
                    info.hello_len,
                    first,
                    checks,
                    lenient,
                    &ctx.shutdown,
                ))
                .await;
                close.bytes_up = r.up;
                close.bytes_down = r.down;
                if let Some(reported) = r.reported {
                    o.report(reported);
                }
                r.end
            } else if !replay.is_empty() && upstream.write_all(&replay).await.is_err() {
                End::Ended(CloseReason::UpstreamError)
            } else {
                close.bytes_up = replay.len() as u64;
                End::Go
            }
        }
    };
    let go = end.record(&mut o, &mut close);
    ctx.log.decision(&o);
    if go {
        let control = (o.idle == Some(crate::policy::IdleOverride::Never))
            .then(|| (ctx.metrics).control_connection(o.rule.as_deref().unwrap_or("")));
        let active = Box::new((active, control));
        return Some(Splicing {
            client,
            upstream,
            idle,
            close,
            started,
            active,
        });
    }
    close.duration = started.elapsed();
    ctx.log.close(&close);
    None
}

/// CONNECT as the first request on a connection: answered on the raw socket, no HTTP library involved.
pub(super) async fn handle_first<S: super::client_io::ClientIo>(
    ctx: Arc<Ctx>,
    mut stream: S,
    peer: SocketAddr,
    conn_id: u64,
    (buf, head_len): (Vec<u8>, usize),
    authority: String,
    proxy_auth: Option<ProxyAuth>,
) -> Option<Splicing<S>> {
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
    o.cert_names = stream.cert_names();
    o.peer_addr = stream.balancer();
    // Boxed, like the peek below: resolving and dialling take far more state than a spliced tunnel, and a
    // future's size is reserved for the whole life of the connection's task.
    let Some(opened) = Box::pin(open(&ctx, &authority, proxy_auth.as_ref(), &mut o)).await else {
        respond::write_refusal(stream, &o).await;
        return None;
    };
    let early = buf[head_len..].to_vec();
    drop(buf);
    match stream
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
    {
        Ok(()) => tunnel(&ctx, stream, opened, early, o).await,
        Err(_) => {
            client_gone(&ctx, &o);
            None
        }
    }
}

/// An allowed CONNECT whose client left before its tunnel could start: its decision, and a close line for
/// the tunnel that never carried a byte.
pub(super) fn client_gone(ctx: &Ctx, o: &Outcome) {
    ctx.log.decision(o);
    ctx.log.close(&Close::ended(o, CloseReason::ClientGone));
}
