//! The proxy listener: accept, bound, read the first request head, and hand off to CONNECT or forwarding.

mod connect;
pub mod dial;
mod forward;
pub mod head;
mod original_dst;
mod peek;
mod respond;
pub mod sni;
pub mod splice;
mod transparent;
mod transparent_http;

use crate::config::{Mode, Settings};
use crate::policy::Decision;
use crate::reason::Reason;
use crate::target::{parse_authority, Target};
use crate::telemetry::log::{EventLog, Kind, Outcome, Verdict};
use dial::Dialer;
use head::Request;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Everything a connection handler needs, shared by all connections.
pub struct Ctx {
    pub settings: Settings,
    pub dialer: Arc<Dialer>,
    pub log: EventLog,
    pub shutdown: CancellationToken,
    next_conn: AtomicU64,
    client: forward::UpstreamClient,
}

impl Ctx {
    pub fn new(settings: Settings, log: EventLog, shutdown: CancellationToken) -> Arc<Self> {
        let dialer = Arc::new(Dialer::new(&settings));
        Arc::new(Ctx {
            client: forward::upstream_client(dialer.clone(), &settings),
            settings,
            dialer,
            log,
            shutdown,
            next_conn: AtomicU64::new(1),
        })
    }

    /// Policy decision for a normalized target, with report mode applied, recorded in the outcome.
    /// `Some(rule_tls)` means proceed (with the deciding rule's `tls` setting), `None` means refused.
    fn decide(&self, target: &Target, o: &mut Outcome) -> Option<Option<bool>> {
        self.decide_request(target, None, o)
    }

    /// As [`Ctx::decide`], with the request path of a plain-HTTP request for rules that restrict paths.
    fn decide_request(
        &self,
        target: &Target,
        path: Option<&str>,
        o: &mut Outcome,
    ) -> Option<Option<bool>> {
        let Decision {
            allowed,
            rule,
            reason,
            tls,
            idle,
        } = self.settings.policy.decide_request(target, path);
        o.rule = rule;
        o.reason = reason;
        o.idle = idle;
        if allowed {
            o.decision = Verdict::Allow;
            return Some(tls);
        }
        if self.settings.mode == Mode::Report && reason.is_policy_denial() {
            o.decision = Verdict::WouldDeny;
            return Some(None);
        }
        o.decision = Verdict::Deny;
        o.detail = Some(match reason {
            Reason::DeniedByRule => "a deny rule matches this host".into(),
            Reason::DeniedPort => {
                format!("port {} is not in the matching rule's ports", target.port)
            }
            Reason::DeniedPath => "the path is not under the matching rule's paths".into(),
            _ => "no allow rule matches this host and port".into(),
        });
        None
    }

    /// Normalize an authority and record it in the outcome; on error the outcome is refused.
    fn target(
        &self,
        authority: &str,
        default_port: Option<u16>,
        o: &mut Outcome,
    ) -> Option<Target> {
        match parse_authority(authority, default_port) {
            Ok(t) => {
                o.host = Some(t.host.to_string());
                o.port = Some(t.port);
                Some(t)
            }
            Err(e) => {
                let reason = match e.reason() {
                    "invalid_host" => Reason::InvalidHost,
                    _ => Reason::InvalidTarget,
                };
                o.refuse(reason, e.to_string());
                None
            }
        }
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Plain,
    Tls,
}

/// Anything a client connection can be: a TCP stream or TLS over one.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// The bound proxy listeners, ready to serve.
pub struct Proxy {
    plain: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
    transparent: Vec<(TcpListener, transparent::Flavor)>,
    ctx: Arc<Ctx>,
}

impl Proxy {
    pub async fn bind(
        settings: Settings,
        log: EventLog,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let plain = TcpListener::bind(settings.listen).await?;
        let tls = match &settings.listen_tls {
            Some((addr, cfg)) => Some((
                TcpListener::bind(addr).await?,
                TlsAcceptor::from(cfg.clone()),
            )),
            None => None,
        };
        let mut transparent = Vec::new();
        for (addr, flavor) in [
            (settings.transparent.tls, transparent::Flavor::Tls),
            (settings.transparent.http, transparent::Flavor::Http),
        ] {
            if let Some(addr) = addr {
                transparent.push((TcpListener::bind(addr).await?, flavor));
            }
        }
        Ok(Proxy {
            plain,
            tls,
            transparent,
            ctx: Ctx::new(settings, log, shutdown),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.plain
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The TLS listener's address, when one is configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The transparent listeners' addresses (`listen_transparent`, `listen_transparent_http`), when set.
    pub fn transparent_local_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let find = |f| {
            self.transparent
                .iter()
                .find(|(_, flavor)| *flavor == f)
                .and_then(|(l, _)| l.local_addr().ok())
        };
        (
            find(transparent::Flavor::Tls),
            find(transparent::Flavor::Http),
        )
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Accept on every listener until shutdown. Connections over `limits.max_connections` (counted across
    /// listeners) get 503 `connection_limit`.
    pub async fn serve(self) {
        let limit = Arc::new(Semaphore::new(self.ctx.settings.limits.max_connections));
        // Transparent connections whose original destination is one of these are loops.
        let own: Vec<SocketAddr> = [Some(self.local_addr()), self.tls_local_addr()]
            .into_iter()
            .flatten()
            .chain(
                self.transparent
                    .iter()
                    .filter_map(|(l, _)| l.local_addr().ok()),
            )
            .chain(self.ctx.settings.admin)
            .collect();
        let own = Arc::new(own);
        for (listener, flavor) in self.transparent {
            let (ctx, limit, own) = (self.ctx.clone(), limit.clone(), own.clone());
            tokio::spawn(transparent::accept_loop(listener, flavor, ctx, limit, own));
        }
        let plain = accept_loop(self.plain, None, self.ctx.clone(), limit.clone());
        match self.tls {
            Some((listener, acceptor)) => {
                let tls = accept_loop(listener, Some(acceptor), self.ctx.clone(), limit);
                tokio::join!(plain, tls);
            }
            None => plain.await,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ctx.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        dial::enable_keepalive(&stream);
        let ctx = ctx.clone();
        let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
        let permit = limit.clone().try_acquire_owned().ok();
        // Separate tasks: a plain connection's task is not sized by the TLS session state.
        match tls.clone() {
            None => {
                tokio::spawn(admit(ctx, stream, peer, conn_id, permit));
            }
            Some(acceptor) => {
                tokio::spawn(accept_tls(ctx, acceptor, stream, peer, conn_id, permit));
            }
        }
    }
}

/// The TLS handshake with a client of the TLS listener, then the same service as the plain listener.
async fn accept_tls(
    ctx: Arc<Ctx>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    permit: Option<OwnedSemaphorePermit>,
) {
    // The handshake counts against the header time: a client that stalls in it is cut there.
    let handshake = tokio::time::timeout(ctx.settings.timeouts.header, acceptor.accept(stream));
    let detail = match handshake.await {
        Ok(Ok(tls_stream)) => return admit(ctx, tls_stream, peer, conn_id, permit).await,
        Ok(Err(e)) => format!("TLS handshake with the client failed: {e}"),
        Err(_) => format!(
            "TLS handshake with the client did not finish within {:?} (timeouts.header)",
            ctx.settings.timeouts.header
        ),
    };
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
    o.refuse(Reason::ClientTlsFailed, detail);
    ctx.log.decision(&o);
}

/// Serve a connection that holds a slot, or refuse it with 503 when none was free.
async fn admit<S: ClientIo>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    conn_id: u64,
    permit: Option<OwnedSemaphorePermit>,
) {
    match permit {
        Some(permit) => {
            // Everything up to an established tunnel runs boxed and is freed once done; the task keeps only
            // the tunnel itself (see connect::Splicing).
            if let Some(tunnel) = Box::pin(handle(ctx.clone(), stream, peer, conn_id)).await {
                tunnel.run(&ctx).await;
            }
            drop(permit);
        }
        None => {
            let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
            o.refuse(
                Reason::ConnectionLimit,
                format!(
                    "{} connections already open (limits.max_connections)",
                    ctx.settings.limits.max_connections
                ),
            );
            ctx.log.decision(&o);
            respond::write_refusal(stream, &o).await;
        }
    }
}

/// Read the first request head and serve it. A CONNECT that becomes an established tunnel is returned for the
/// caller to splice.
async fn handle<S: ClientIo>(
    ctx: Arc<Ctx>,
    mut stream: S,
    peer: SocketAddr,
    conn_id: u64,
) -> Option<connect::Splicing<S>> {
    let limits = &ctx.settings.limits;
    let mut buf = Vec::with_capacity(1024);
    let read = head::read_head(
        &mut stream,
        &mut buf,
        limits.max_header_bytes,
        ctx.settings.timeouts.header,
    );
    let request = tokio::select! {
        r = read => r,
        _ = ctx.shutdown.cancelled() => return None,
    };
    match request {
        Ok(Request::Connect {
            authority,
            head_len,
        }) => connect::handle_first(ctx, stream, peer, conn_id, buf, head_len, authority).await,
        Ok(Request::Forward) => {
            forward::serve(ctx, stream, peer, conn_id, buf).await;
            None
        }
        // A connection that closes without sending anything made no request: nothing to decide or log.
        Err(e) if buf.is_empty() && e.reason == Reason::BadRequest => None,
        Err(e) => {
            let mut o = Outcome::new(conn_id, 1, peer, Kind::Http);
            if e.method.as_deref() == Some("CONNECT") {
                o.kind = Kind::Connect;
            }
            o.method = e.method;
            o.refuse(e.reason, e.detail);
            ctx.log.decision(&o);
            respond::write_refusal(stream, &o).await;
            None
        }
    }
}
