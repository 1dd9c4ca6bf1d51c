//! Transparent mode: connections redirected to egressd with iptables REDIRECT, without CONNECT. The kernel
//! says where the client was going (SO_ORIGINAL_DST); the ClientHello's SNI (or, on the plain-HTTP listener,
//! the Host header) says which name that is for. The name is judged by the policy on the original port, and
//! the original destination must be one of the name's resolved, checked addresses before anything is
//! forwarded to it.

use super::dial::DialInfo;
use super::peek::{peek, FirstBytes, Peeked};
use super::redirect::{dial_original, own_traffic, redirected_to};
use super::retry::{replay_hello, End};
use super::{splice, transparent_http, Ctx, Live};
use crate::outcome::{Close, CloseReason, Kind, Outcome};
use crate::policy::tls::{Hello, TlsChecks};
use crate::policy::transparent::{sni_target, Refusal};
use crate::reason::Reason;
use crate::target::Target;
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
    while let Some((stream, peer)) = super::next_connection(&listener, &drain).await {
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
                Err((reason, detail)) => {
                    o.refuse(reason, detail);
                    return refuse(&ctx, stream, flavor, &o).await;
                }
            };
            o.original_dst = Some(original);
            let slots = match admitted {
                Ok(slots) => slots,
                Err(refused) => {
                    o.refuse(refused.reason, refused.detail);
                    // One line per burst (see admission); every refusal is counted.
                    if !refused.logged {
                        ctx.metrics.rejected_unlogged(o.reason);
                        return end_refused(stream, flavor, &o).await;
                    }
                    return refuse(&ctx, stream, flavor, &o).await;
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

/// Log the refusal and end the connection: a reset for TLS (there is no way to answer inside the client's TLS
/// session), a response with the reason for plain HTTP.
async fn refuse(ctx: &Ctx, stream: TcpStream, flavor: Flavor, o: &Outcome) {
    ctx.log.decision(o);
    end_refused(stream, flavor, o).await;
}

/// End a refused connection (see `refuse`), without a line.
async fn end_refused(stream: TcpStream, flavor: Flavor, o: &Outcome) {
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

/// The target a peeked ClientHello names, or why there is none. `Err(None)`: the client left without sending
/// anything, or shutdown came first, so there was no request to decide.
fn hello_target(
    p: &Peeked,
    checks: &TlsChecks,
    port: u16,
    o: &mut Outcome,
) -> Result<Target, Option<Refusal>> {
    let refusal = |reason, detail: String| Err(Some((reason, detail)));
    match &p.first {
        FirstBytes::Hello(info) => {
            o.sni = info.sni.clone();
            o.alpn = info.alpn.clone();
            sni_target(info.sni.as_deref(), info.ech, checks.ech, port).map_err(Some)
        }
        FirstBytes::NotTls | FirstBytes::ServerFirst => refusal(
            Reason::DeniedNotTls,
            "the first bytes are not a TLS ClientHello; listen_transparent carries TLS only (redirect \
             plain HTTP to listen_transparent_http)"
                .into(),
        ),
        FirstBytes::Invalid(why) => refusal(
            Reason::InvalidClientHello,
            format!("malformed ClientHello: {why}"),
        ),
        FirstBytes::TooLarge => refusal(
            Reason::InvalidClientHello,
            format!(
                "ClientHello larger than client_hello.max_bytes ({})",
                checks.hello_max_bytes
            ),
        ),
        // Nothing arrived before the client left or went silent until the wait was over, or shutdown cut the
        // connection: no request.
        FirstBytes::Closed | FirstBytes::Timeout if p.buf.is_empty() => Err(None),
        FirstBytes::Timeout => refusal(
            Reason::ClientHelloTimeout,
            format!(
                "no complete ClientHello within client_hello.timeout ({:?})",
                checks.hello_timeout
            ),
        ),
        FirstBytes::Cut => Err(None),
        FirstBytes::Closed => refusal(
            Reason::InvalidClientHello,
            "the client closed the connection in the middle of its ClientHello".into(),
        ),
    }
}

/// A redirected TLS connection: peek the ClientHello, judge its SNI on the original port, dial the original
/// destination if it is one of the name's addresses, replay the hello and splice.
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
    let target = match own_traffic(ctx, o.client_addr).map_or_else(
        || hello_target(&peeked, checks, original.port(), &mut o),
        |r| Err(Some(r)),
    ) {
        Ok(t) => t,
        Err(None) => {
            if !matches!(peeked.first, FirstBytes::Cut) {
                ctx.metrics.empty_connection(Flavor::Tls.listener());
            }
            return;
        }
        Err(Some((reason, detail))) => {
            o.refuse(reason, detail);
            ctx.log.decision(&o);
            return reset(client);
        }
    };
    o.host = Some(target.host.to_string());
    o.port = Some(target.port);
    if ctx.decide(&target, &mut o).is_none() {
        ctx.log.decision(&o);
        return reset(client);
    }
    let mut info = DialInfo::default();
    let dialled = dial_original(ctx, &target, original, &mut info).await;
    info.fill(&mut o);
    let mut upstream = match dialled {
        Ok(u) => u,
        Err(e) => {
            o.refuse(e.reason, e.detail);
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
    let first = Hello {
        sni: info.sni.as_deref(),
        ech: info.ech,
    };
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
    match r.end {
        End::Refuse(reason, detail) => {
            o.refuse(reason, detail);
            ctx.log.decision(&o);
            close.close_reason = CloseReason::Denied;
            close.duration = started.elapsed();
            ctx.log.close(&close);
            return reset(client);
        }
        End::Ended(reason) => {
            ctx.log.decision(&o);
            close.close_reason = reason;
        }
        End::Go => {
            ctx.log.decision(&o);
            let s = splice::splice(client, upstream, idle, ctx.shutdown.cancelled()).await;
            close.bytes_up += s.bytes_up;
            close.bytes_down += s.bytes_down;
            close.close_reason = s.close_reason;
        }
    }
    close.duration = started.elapsed();
    ctx.log.close(&close);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tls::{EchMode, SniMode};
    use crate::proxy::sni::HelloInfo;

    fn checks() -> TlsChecks {
        TlsChecks {
            sni: SniMode::Strict,
            ech: EchMode::Deny,
            hello_timeout: Duration::from_secs(5),
            hello_max_bytes: 16384,
        }
    }

    fn peeked(first: FirstBytes, buf: &[u8]) -> Peeked {
        Peeked {
            first,
            buf: buf.to_vec(),
            reads: 1,
        }
    }

    fn outcome() -> Outcome {
        Outcome::new(1, 1, "10.0.0.2:40000".parse().unwrap(), Kind::Transparent)
    }

    #[test]
    fn first_bytes_decide_the_target_or_the_refusal() {
        let hello = HelloInfo {
            sni: Some("api.example.com".into()),
            alpn: vec!["h2".into()],
            ech: false,
            records: 1,
            hello_len: 100,
            legacy_version: 0x0303,
            supported_versions: vec![0x0304],
        };
        let mut o = outcome();
        let t = hello_target(
            &peeked(FirstBytes::Hello(hello.clone()), b"x"),
            &checks(),
            443,
            &mut o,
        )
        .unwrap();
        assert_eq!(t.authority(), "api.example.com:443");
        assert_eq!(o.sni.as_deref(), Some("api.example.com"));
        assert_eq!(o.alpn, ["h2"]);

        let no_sni = HelloInfo { sni: None, ..hello };
        let cases = [
            (FirstBytes::Hello(no_sni), Reason::DeniedSniMissing),
            (FirstBytes::NotTls, Reason::DeniedNotTls),
            (FirstBytes::Invalid("bad"), Reason::InvalidClientHello),
            (FirstBytes::TooLarge, Reason::InvalidClientHello),
            (FirstBytes::Timeout, Reason::ClientHelloTimeout),
            (FirstBytes::Closed, Reason::InvalidClientHello),
        ];
        for (first, want) in cases {
            let what = format!("{first:?}");
            let got = hello_target(&peeked(first, b"\x16\x03"), &checks(), 443, &mut outcome());
            assert_eq!(got.unwrap_err().map(|r| r.0), Some(want), "{what}");
        }
        for first in [FirstBytes::Closed, FirstBytes::Timeout] {
            let silent = hello_target(&peeked(first, b""), &checks(), 443, &mut outcome());
            assert!(silent.unwrap_err().is_none(), "no bytes, no request");
        }
    }
}
