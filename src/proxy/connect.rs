//! CONNECT tunnels: decide, dial the checked address, answer 200, read the ClientHello and bind its SNI to the
//! CONNECT host, then replay the peeked bytes and splice. The decision line is written once the hello has
//! been judged (or the request refused earlier), so it carries the SNI.

use super::peek::{peek, FirstBytes, Peeked};
use super::retry::{replay_hello, End};
use super::{respond, splice, Ctx};
use crate::outcome::{Close, CloseReason, Kind, Outcome, Verdict};
use crate::policy::credentials::ProxyAuth;
use crate::policy::tls::{judge, tls_required, Hello, SniMode};
use crate::reason::Reason;
use crate::target::Target;
use crate::telemetry::metrics::Active;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// An allowed CONNECT with its upstream connected, waiting for the client's first bytes.
pub(super) struct Opened {
    target: Target,
    upstream: TcpStream,
    rule_tls: Option<bool>,
}

/// Decide and dial for a CONNECT authority. `None` means refused: the decision line is already written and
/// the outcome holds the reason for the response.
pub(super) async fn open(
    ctx: &Ctx,
    authority: &str,
    proxy_auth: Option<&ProxyAuth>,
    o: &mut Outcome,
) -> Option<Opened> {
    o.method = Some("CONNECT".into());
    ctx.authenticate(proxy_auth.cloned(), o).await;
    let Some(target) = ctx.target(authority, None, o) else {
        ctx.log.decision(o);
        return None;
    };
    let Some(rule_tls) = ctx.decide(&target, o) else {
        ctx.log.decision(o);
        return None;
    };
    let mut info = super::dial::DialInfo::default();
    let r = ctx.dialer.dial(&target, &mut info).await;
    o.resolved_addrs = info.resolved;
    o.denied_addr = info.denied_addr;
    o.upstream_addr = info.upstream;
    o.dns_ms = info.dns_ms;
    o.connect_ms = info.connect_ms;
    match r {
        Ok(upstream) => Some(Opened {
            target,
            upstream,
            rule_tls,
        }),
        Err(e) => {
            o.refuse(e.reason, e.detail);
            ctx.log.decision(o);
            None
        }
    }
}

/// How the judged first bytes let the tunnel go on.
enum Verdict2 {
    Splice,
    /// The client left or stayed silent before sending anything decisive: allowed, but nothing to splice.
    Ended(CloseReason),
    Refuse(Reason, String),
}

/// A judged tunnel whose first bytes went upstream: all an established (often idle) tunnel keeps.
pub(super) struct Splicing<C> {
    client: C,
    upstream: TcpStream,
    idle: Duration,
    close: Close,
    started: Instant,
    /// Counts the tunnel in `egressd_tunnels_active` until it closes.
    active: Active,
}

impl<C: AsyncRead + AsyncWrite + Unpin + 'static> Splicing<C> {
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
            Some(&upstream),
            early,
            required,
            checks.hello_max_bytes,
            checks.hello_timeout,
            idle,
            &ctx.shutdown,
        ))
        .await
    };

    let mut hello_records = None;
    let verdict = match &peeked.first {
        FirstBytes::Hello(info) => {
            o.sni = info.sni.clone();
            o.alpn = info.alpn.clone();
            hello_records = Some(info.records);
            let hello = Hello {
                sni: info.sni.as_deref(),
                ech: info.ech,
            };
            match judge(&ctx.settings.policy, checks, &target, hello, &o.identity) {
                Ok(()) => Verdict2::Splice,
                Err((r, d)) => Verdict2::Refuse(r, d),
            }
        }
        FirstBytes::NotTls if required => Verdict2::Refuse(
            Reason::DeniedNotTls,
            "the first bytes are not a TLS ClientHello and this tunnel carries TLS only (port 443, or the \
             rule's tls: true); set tls: false on the rule to allow plain TCP"
                .into(),
        ),
        FirstBytes::NotTls | FirstBytes::ServerFirst => Verdict2::Splice,
        FirstBytes::Invalid(why) => Verdict2::Refuse(Reason::InvalidClientHello, format!("malformed ClientHello: {why}")),
        FirstBytes::TooLarge => Verdict2::Refuse(
            Reason::InvalidClientHello,
            format!("ClientHello larger than client_hello.max_bytes ({})", checks.hello_max_bytes),
        ),
        // A hello that was started must finish, whatever the port; silence is only fatal where TLS is required.
        FirstBytes::Timeout if required || !peeked.buf.is_empty() => Verdict2::Refuse(
            Reason::ClientHelloTimeout,
            format!("no complete ClientHello within client_hello.timeout ({:?})", checks.hello_timeout),
        ),
        FirstBytes::Timeout => Verdict2::Ended(CloseReason::IdleTimeout),
        FirstBytes::Closed => Verdict2::Ended(CloseReason::ClientGone),
        FirstBytes::Cut => Verdict2::Ended(CloseReason::Shutdown),
    };
    // Report mode (everyone's, the client group's or the rule's): the policy says so in the decision.
    let lenient = o.report_rule;
    let verdict = match verdict {
        Verdict2::Refuse(r, d) if lenient && r.is_policy_denial() => {
            o.decision = Verdict::WouldDeny;
            o.reason = r;
            o.detail = Some(d);
            Verdict2::Splice
        }
        v => v,
    };
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
    match verdict {
        Verdict2::Refuse(reason, detail) => {
            // The 200 is already sent: refusing means closing the tunnel without forwarding a byte.
            o.refuse(reason, detail);
            ctx.log.decision(&o);
            close.close_reason = CloseReason::Denied;
        }
        Verdict2::Ended(reason) => {
            ctx.log.decision(&o);
            close.close_reason = reason;
        }
        Verdict2::Splice => {
            // The replayed bytes are released before splicing: an idle tunnel holds no buffer.
            let replay = std::mem::take(&mut peeked.buf);
            let end = if let FirstBytes::Hello(info) = &peeked.first {
                // A TLS tunnel: the server may ask for a retry, and the second hello is judged too.
                let first = Hello {
                    sni: info.sni.as_deref(),
                    ech: info.ech,
                };
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
                if let Some((reason, detail)) = r.reported {
                    o.decision = Verdict::WouldDeny;
                    o.reason = reason;
                    o.detail = Some(detail);
                }
                r.end
            } else if !replay.is_empty() && upstream.write_all(&replay).await.is_err() {
                End::Ended(CloseReason::UpstreamError)
            } else {
                close.bytes_up = replay.len() as u64;
                End::Go
            };
            let go = matches!(end, End::Go);
            match end {
                End::Refuse(reason, detail) => {
                    o.refuse(reason, detail);
                    close.close_reason = CloseReason::Denied;
                }
                End::Ended(reason) => close.close_reason = reason,
                End::Go => {}
            }
            ctx.log.decision(&o);
            if go {
                return Some(Splicing {
                    client,
                    upstream,
                    idle,
                    close,
                    started,
                    active,
                });
            }
        }
    }
    close.duration = started.elapsed();
    ctx.log.close(&close);
    None
}

/// CONNECT as the first request on a connection: answered on the raw socket, no HTTP library involved.
pub(super) async fn handle_first<S: super::ClientIo>(
    ctx: Arc<Ctx>,
    mut stream: S,
    peer: SocketAddr,
    conn_id: u64,
    (buf, head_len): (Vec<u8>, usize),
    authority: String,
    proxy_auth: Option<ProxyAuth>,
) -> Option<Splicing<S>> {
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
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
            ctx.log.decision(&o);
            ctx.log.close(&Close::ended(&o, CloseReason::ClientGone));
            None
        }
    }
}
