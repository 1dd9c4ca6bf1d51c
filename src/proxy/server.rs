//! The proxy's listeners: binding them, accepting on each until shutdown begins, admitting connections under
//! the limits, the TLS listener's handshake, reading the first request head and handing it to CONNECT or
//! forwarding, then draining.

use super::accept::{self, ClientSocket, Listener};
use super::counted_client::CountedClient;
use super::{
    admission, balancer, client_io::ClientIo, connect, ctx::Ctx, forward, head, live::Live,
    respond, transparent,
};
use crate::config::Listeners;
use crate::outcome::{Kind, Outcome};
use crate::reason::{Reason, Refusal};
use crate::wire::request_head::Request;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Plain,
    Tls,
}

impl ListenerKind {
    /// The `listener` label of `egressd_connections_active`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Plain => "plain",
            ListenerKind::Tls => "tls",
        }
    }
}

/// The proxy listeners, bound (plain, TLS, transparent TLS and HTTP), ready to serve.
pub struct Bound {
    plain: Listener,
    tls: Option<Listener>,
    transparent: Vec<(Listener, transparent::Flavor)>,
}

impl Bound {
    /// Bind every configured proxy listener; errors name the listener and its configuration key.
    pub fn bind(listeners: &Listeners) -> std::io::Result<Self> {
        let bind = |addr: SocketAddr, key: &str| {
            Listener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("listener {addr} ({key}): {e}")))
        };
        let plain = bind(listeners.listen, "listen")?;
        let tls = match listeners.listen_tls {
            Some(addr) => Some(bind(addr, "listen_tls")?),
            None => None,
        };
        let mut transparent = Vec::new();
        for (addr, flavor, key) in [
            (
                listeners.listen_transparent,
                transparent::Flavor::Tls,
                "listen_transparent",
            ),
            (
                listeners.listen_transparent_http,
                transparent::Flavor::Http,
                "listen_transparent_http",
            ),
        ] {
            if let Some(addr) = addr {
                transparent.push((bind(addr, key)?, flavor));
            }
        }
        Ok(Bound {
            plain,
            tls,
            transparent,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.plain
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The TLS listener's address, when one is configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
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

    /// Every address bound here.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(&self.plain)
            .chain(self.tls.as_ref())
            .chain(self.transparent.iter().map(|(l, _)| l))
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Accept on every listener until shutdown begins, then drain. Connections over `limits.max_connections`
/// (counted across listeners) get 503 `connection_limit`. `also_own`: egressd's other listening addresses
/// (the admin listener), which a redirected connection must not loop back to either.
pub async fn serve(bound: Bound, live: Arc<Live>, also_own: Vec<SocketAddr>) {
    // Transparent connections whose original destination is one of these are loops.
    let mut own = bound.local_addrs();
    own.extend(also_own);
    let own = Arc::new(own);
    let Bound {
        plain,
        tls,
        transparent,
    } = bound;
    for (listener, flavor) in transparent {
        tokio::spawn(transparent::accept_loop(
            listener,
            flavor,
            live.clone(),
            own.clone(),
        ));
    }
    // Accepting runs on the runtime's worker threads, like the connections: a connection task spawned
    // there starts on the same thread, where one spawned from outside (the thread awaiting `serve`) has to
    // be handed over and a worker woken for it.
    let plain = tokio::spawn(accept_loop(plain, ListenerKind::Plain, live.clone()));
    let tls = tls.map(|l| tokio::spawn(accept_loop(l, ListenerKind::Tls, live.clone())));
    let _ = plain.await;
    if let Some(tls) = tls {
        let _ = tls.await;
    }
    drain(&live.ctx()).await;
}

/// After the listeners stopped: wait up to `shutdown.grace` for open connections, then cut the rest.
async fn drain(ctx: &Ctx) {
    ctx.tasks.close();
    let grace = ctx.settings.shutdown_grace;
    tracing::info!(
        open_connections = ctx.tasks.len(),
        open_tunnels = ctx.metrics.tunnels_open(),
        grace = ?grace,
        "shutting down: listeners closed, draining open connections"
    );
    if tokio::time::timeout(grace, ctx.tasks.wait()).await.is_ok() {
        tracing::info!("shutdown: every connection finished within shutdown.grace");
        ctx.shutdown.cancel();
        return;
    }
    let (connections, tunnels) = (ctx.tasks.len(), ctx.metrics.tunnels_open());
    ctx.shutdown.cancel();
    // Cut tasks write their close lines promptly; do not wait on a stuck one forever.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), ctx.tasks.wait()).await;
    tracing::warn!(
        cut_connections = connections,
        cut_tunnels = tunnels,
        grace = ?grace,
        "shutdown: shutdown.grace is over; cut the connections still open"
    );
}

async fn accept_loop(listener: Listener, kind: ListenerKind, live: Arc<Live>) {
    let drain = live.ctx().drain.clone();
    while let Some((stream, peer)) = accept::next_connection(&listener, &drain).await {
        let ctx = live.ctx();
        let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
        let tls = kind == ListenerKind::Tls;
        let from_balancer = ctx.settings.proxy_protocol.expected(tls, peer.ip());
        let admitted = if from_balancer {
            live.admit_balancer(&ctx, peer.ip())
        } else {
            live.admit(&ctx, peer.ip())
        };
        let stream = CountedClient::new(stream, ctx.metrics.connection_opened(kind.as_str()));
        let tasks = ctx.tasks.clone();
        if from_balancer {
            let task = behind_balancer(ctx, live.clone(), stream, peer, conn_id, admitted, kind);
            tasks.spawn(Box::pin(task));
            continue;
        }
        // Separate tasks: a plain connection's task is not sized by the TLS session state.
        match kind {
            ListenerKind::Plain => tasks.spawn(admit(ctx, stream, peer, conn_id, admitted, kind)),
            ListenerKind::Tls => tasks.spawn(accept_tls(
                ctx,
                live.clone(),
                stream,
                peer,
                conn_id,
                admitted,
            )),
        };
    }
}

/// A connection from a load balancer (`proxy_protocol.trusted`): its PROXY header first, then the service of
/// its listener for the client the header names.
async fn behind_balancer(
    ctx: Arc<Ctx>,
    live: Arc<Live>,
    mut stream: CountedClient<ClientSocket>,
    balancer: SocketAddr,
    conn_id: u64,
    admitted: admission::Admitted,
    kind: ListenerKind,
) {
    let mut admitted = admitted;
    let mut peer = balancer;
    // Over `limits.max_connections`: refused as any other connection, without reading it.
    if let Ok(slots) = admitted.as_mut() {
        match balancer::read_header(stream.get_mut(), ctx.settings.timeouts.header).await {
            balancer::Read::Client(client) => {
                stream.set_balancer(balancer);
                if let Some(client) = client {
                    peer = client;
                    let key = admission::ClientKey::Addr(client.ip());
                    let limit = ctx.settings.limits.max_connections_per_client;
                    if let Err(refused) = live.gate.rekey(slots, key, limit) {
                        admitted = Err(refused);
                    }
                }
            }
            balancer::Read::Empty => return ctx.metrics.empty_connection(kind.as_str()),
            balancer::Read::Refused(refusal) => {
                let mut o = Outcome::new(conn_id, 1, balancer, Kind::Connect);
                o.peer_addr = Some(balancer);
                o.refuse(refusal);
                ctx.refused_early(&o, true);
                if kind == ListenerKind::Plain {
                    respond::write_refusal(stream, &o).await;
                }
                return;
            }
        }
    }
    match kind {
        ListenerKind::Plain => admit(ctx, stream, peer, conn_id, admitted, kind).await,
        ListenerKind::Tls => accept_tls(ctx, live, stream, peer, conn_id, admitted).await,
    }
}

/// The TLS handshake with a client of the TLS listener, then the same service as the plain listener.
async fn accept_tls(
    ctx: Arc<Ctx>,
    live: Arc<Live>,
    mut stream: CountedClient<ClientSocket>,
    peer: SocketAddr,
    conn_id: u64,
    admitted: admission::Admitted,
) {
    // The certificate in force now: a reload re-reads it.
    let Some(cfg) = &ctx.settings.listen_tls else {
        return;
    };
    // Over a limit: refused before the first byte and the handshake, so stalled or silent connections never
    // hold more descriptors than the limits allow. A 503 would need the handshake; the close is the answer.
    // (A client over its per-certificate share is refused with a 503 after the handshake, below.)
    let mut admitted = match admitted {
        Err(refused) => {
            let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
            o.peer_addr = stream.balancer();
            let Refusal { reason, detail } = refused.refusal;
            o.refuse(Refusal::new(
                reason,
                format!("{detail}; closed before the TLS handshake"),
            ));
            return ctx.refused_early(&o, refused.logged);
        }
        ok => ok,
    };
    // The handshake counts against the header time: a client that stalls in it is cut there.
    let deadline = tokio::time::Instant::now() + ctx.settings.timeouts.header;
    // A connection that ends (or times out) without sending a byte made no attempt at all: counted, no line.
    let first = tokio::time::timeout_at(deadline, stream.get_mut().first_byte()).await;
    if !matches!(first, Ok(Ok(true))) {
        return ctx.metrics.empty_connection(ListenerKind::Tls.as_str());
    }
    let balancer = stream.balancer();
    // A PROXY header where none is expected, instead of a ClientHello: refused with its own reason.
    let mut start = [0u8; 12];
    if let Ok(n) = stream.get_mut().peek(&mut start).await {
        let on = ctx.settings.proxy_protocol.tls;
        if let Some(refusal) = balancer::untrusted(&start[..n], peer, on) {
            let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
            o.peer_addr = balancer;
            o.refuse(refusal);
            return ctx.refused_early(&o, true);
        }
    }
    let acceptor = TlsAcceptor::from(cfg.clone());
    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
    let detail = match handshake.await {
        Ok(Ok(tls_stream)) => {
            let names = tls_stream.cert_names();
            // A verified certificate is who the client is: count it there, not by its address.
            if let (Some(name), Ok(slots)) = (names.first(), admitted.as_mut()) {
                let key = admission::ClientKey::Cert(name.to_string().into());
                let limit = ctx.settings.limits.max_connections_per_client;
                if let Err(refused) = live.gate.rekey(slots, key, limit) {
                    admitted = Err(refused);
                }
            }
            return admit(ctx, tls_stream, peer, conn_id, admitted, ListenerKind::Tls).await;
        }
        Ok(Err(e)) => format!("TLS handshake with the client failed: {e}"),
        Err(_) => format!(
            "TLS handshake with the client did not finish within {:?} (timeouts.header)",
            ctx.settings.timeouts.header
        ),
    };
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
    o.peer_addr = balancer;
    o.refuse(Refusal::new(Reason::ClientTlsFailed, detail));
    ctx.refused_early(&o, true);
}

/// Serve a connection that holds its slots, or refuse it with 503 when it got none.
async fn admit<S: ClientIo>(
    ctx: Arc<Ctx>,
    stream: S,
    peer: SocketAddr,
    conn_id: u64,
    admitted: admission::Admitted,
    kind: ListenerKind,
) {
    match admitted {
        Ok(slots) => {
            // Everything up to an established tunnel runs boxed and is freed once done; the task keeps only
            // the tunnel itself (see connect::Splicing).
            if let Some(tunnel) = Box::pin(handle(ctx.clone(), stream, peer, conn_id, kind)).await {
                tunnel.run(&ctx).await;
            }
            drop(slots);
        }
        // Boxed, like `handle`: the refusal's state would otherwise size every connection's task.
        Err(refused) => Box::pin(refuse_over_limit(&ctx, stream, peer, conn_id, *refused)).await,
    }
}

/// `limits.max_connections` (or the client's `limits.max_connections_per_client`) are open already: refuse
/// this one without reading it. Every refusal is counted; only the first of a burst is logged.
async fn refuse_over_limit<S: ClientIo>(
    ctx: &Ctx,
    stream: S,
    peer: SocketAddr,
    conn_id: u64,
    refused: admission::Refused,
) {
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
    o.peer_addr = stream.balancer();
    o.refuse(refused.refusal);
    ctx.refused_early(&o, refused.logged);
    respond::write_refusal(stream, &o).await;
}

/// Read the first request head and serve it. A CONNECT that becomes an established tunnel is returned for the
/// caller to splice.
async fn handle<S: ClientIo>(
    ctx: Arc<Ctx>,
    mut stream: S,
    peer: SocketAddr,
    conn_id: u64,
    kind: ListenerKind,
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
            proxy_auth,
        }) => {
            connect::handle_first(
                ctx,
                stream,
                peer,
                conn_id,
                (buf, head_len),
                authority,
                proxy_auth,
            )
            .await
        }
        Ok(Request::Forward) => {
            forward::serve(ctx, stream, peer, conn_id, buf).await;
            None
        }
        // A connection that ends, or stays silent until the header timeout, without sending anything made no
        // request: nothing to decide or log, only to count.
        Err(e)
            if buf.is_empty()
                && matches!(e.refusal.reason, Reason::BadRequest | Reason::HeaderTimeout) =>
        {
            ctx.metrics.empty_connection(kind.as_str());
            None
        }
        Err(e) => {
            let mut o = Outcome::new(conn_id, 1, peer, Kind::Http);
            o.peer_addr = stream.balancer();
            if e.method.as_deref() == Some("CONNECT") {
                o.kind = Kind::Connect;
            }
            o.method = e.method;
            // A PROXY header where none is expected: a head that cannot parse, and an address not believed.
            let on = ctx.settings.proxy_protocol.plain;
            let refusal = balancer::untrusted(&buf, peer, on).unwrap_or(e.refusal);
            o.refuse(refusal);
            ctx.refused_early(&o, true);
            respond::write_refusal(stream, &o).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's task is as large as `admit`'s future for as long as the connection lives, idle
    /// tunnels included: it must keep only what an established tunnel needs (the rest is boxed and freed).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let ctx = Ctx::for_tests("listen: 127.0.0.1:0\n");
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let stream = CountedClient::new(stream, ctx.metrics.connection_opened("plain"));
        let refused = Err(Box::new(admission::Refused {
            refusal: Refusal::new(Reason::ConnectionLimit, ""),
            logged: true,
        }));
        let task = admit(ctx, stream, peer, 1, refused, ListenerKind::Plain);
        let size = std::mem::size_of_val(&task);
        // Debug builds lay futures out less tightly than release builds (about half this there). Before the
        // tunnel became one state machine and the refusal paths were boxed, this was several times larger.
        assert!(size <= 2048, "a connection's task holds {size} bytes");
    }
}
