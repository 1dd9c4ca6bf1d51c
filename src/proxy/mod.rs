//! The proxy listener: accept, bound, read the first request head, and hand off to CONNECT or forwarding.

mod accept;
mod admission;
mod body;
mod client_io;
mod connect;
mod counted_client;
pub mod dial;
mod forward;
pub mod head;
mod http1;
mod original_dst;
mod password_checks;
mod peek;
mod pipe;
mod redirect;
mod respond;
mod retry;
pub mod splice;
mod transparent;
mod transparent_http;
mod upstream;

use crate::config::{Listeners, Runtime, Settings};
use crate::outcome::{Kind, Outcome};
use crate::policy::credentials::CertName;
use crate::policy::verdict::Client;
use crate::policy::Credentials;
use crate::reason::{Reason, Refusal};
use crate::reload::Reloader;
use crate::target::{parse_authority, Target};
use crate::telemetry::log::EventLog;
use crate::telemetry::metrics::Metrics;
use crate::wire::request_head::Request;
use accept::{ClientSocket, Listener};
use arc_swap::ArcSwap;
use counted_client::CountedClient;
use dial::Dialer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a connection handler needs, shared by all connections that started under one configuration.
/// A reload builds a new `Ctx` (new policy, resolver and upstream pool) that new connections pick up; open
/// connections keep the one they started with.
pub struct Ctx {
    /// The configuration of this generation: everything but the listener addresses (see [`Live`]).
    pub settings: Runtime,
    pub dialer: Arc<Dialer>,
    /// Decision and close lines, each also counted in `metrics`.
    pub log: EventLog,
    pub metrics: Arc<Metrics>,
    /// Fires when shutdown begins: listeners stop accepting, idle kept-alive connections close, the rest
    /// may finish within `shutdown.grace`.
    pub drain: CancellationToken,
    /// Fires when the grace period is over (or at once without one): open tunnels and requests are cut.
    pub shutdown: CancellationToken,
    next_conn: Arc<AtomicU64>,
    /// Every connection task (and tunnel task) of every configuration generation, for draining.
    tasks: TaskTracker,
    client: upstream::UpstreamClient,
    /// The newest generation, shared by all of them: each request of a kept-alive connection is decided
    /// with the configuration in force when it arrives, not the one its connection was accepted under.
    newest: Arc<std::sync::RwLock<std::sync::Weak<Ctx>>>,
    /// Fires when a reload replaces this generation.
    superseded: CancellationToken,
}

impl Ctx {
    fn new(settings: Settings, log: EventLog, drain: CancellationToken) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        Self::build(
            &settings.listeners,
            settings.runtime,
            log.with_metrics(metrics.clone()),
            metrics,
            drain,
            CancellationToken::new(),
            Arc::new(AtomicU64::new(1)),
            TaskTracker::new(),
            Arc::default(),
        )
    }

    /// The context for a reloaded configuration served on `listeners`: the same log, metrics, shutdown
    /// signals and connection ids.
    fn next(&self, listeners: &Listeners, settings: Runtime) -> Arc<Self> {
        Self::build(
            listeners,
            settings,
            self.log.clone(),
            self.metrics.clone(),
            self.drain.clone(),
            self.shutdown.clone(),
            self.next_conn.clone(),
            self.tasks.clone(),
            self.newest.clone(),
        )
    }

    /// The configuration generation in force now (this one unless a reload replaced it).
    pub(crate) fn current(self: &Arc<Self>) -> Arc<Ctx> {
        let newest = self.newest.read().unwrap_or_else(|e| e.into_inner());
        newest.upgrade().unwrap_or_else(|| self.clone())
    }

    /// Fires when a reload replaces this generation.
    pub(crate) fn superseded(&self) -> &CancellationToken {
        &self.superseded
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        listeners: &Listeners,
        settings: Runtime,
        log: EventLog,
        metrics: Arc<Metrics>,
        drain: CancellationToken,
        shutdown: CancellationToken,
        next_conn: Arc<AtomicU64>,
        tasks: TaskTracker,
        newest: Arc<std::sync::RwLock<std::sync::Weak<Ctx>>>,
    ) -> Arc<Self> {
        let dialer = Arc::new(Dialer::new(listeners, &settings));
        let ctx = Arc::new(Ctx {
            client: upstream::upstream_client(dialer.clone(), &settings),
            settings,
            dialer,
            log,
            metrics,
            drain,
            shutdown,
            next_conn,
            tasks,
            newest,
            superseded: CancellationToken::new(),
        });
        *ctx.newest.write().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&ctx);
        ctx
    }

    /// The verdict on a request for `target` (and, for plain HTTP, `path`), recorded in the outcome.
    /// `Ok(rule_tls)`: proceed, with the deciding rule's `tls` setting.
    fn decide(
        &self,
        target: &Target,
        path: Option<&str>,
        o: &mut Outcome,
    ) -> Result<Option<bool>, Refusal> {
        let policy = &self.settings.policy;
        let credentials = std::mem::take(&mut o.client.credentials);
        let cert = client_cert().unwrap_or_default();
        o.client = Client::identify(policy, o.client_addr.ip(), credentials, &cert);
        let ruling = crate::policy::verdict::decide(policy, &o.client, target, path);
        let tls = ruling.tls;
        let proceeds = ruling.proceeds();
        o.rule(ruling);
        if proceeds {
            return Ok(tls);
        }
        Err(Refusal::new(o.reason, o.detail.take().unwrap_or_default()))
    }

    /// A connection refused before a request could be read (over a limit, a failed TLS handshake, a head that
    /// could not be parsed, a redirected connection with no usable original destination): its one decision
    /// line, or, for the refusals of a burst after its first (`logged: false`), only the count.
    pub(super) fn refused_early(&self, o: &Outcome, logged: bool) {
        if logged {
            self.log.decision(o);
        } else {
            self.metrics.rejected_unlogged(o.reason);
        }
    }

    /// Check the request's Proxy-Authorization header (if any) and record the result for the decision. A
    /// header not seen before is checked on the blocking pool, when one of the few password-check turns is
    /// free (see `password_checks`): argon2 is slow on purpose and must not stall the connections sharing
    /// this worker, nor take every core.
    async fn authenticate(
        &self,
        header: Option<crate::policy::credentials::ProxyAuth>,
        o: &mut Outcome,
    ) {
        let policy = self.settings.policy.clone();
        let waited = self.settings.timeouts.header;
        o.client.credentials = match policy.clients.known(header.as_ref()) {
            Some(c) => c,
            None => password_checks::run(o.client_addr.ip(), waited, move || {
                policy.clients.authenticate(header.as_ref())
            })
            .await
            .unwrap_or(Credentials::Unchecked {
                waited,
                per_source: password_checks::PER_SOURCE,
            }),
        };
    }

    /// Normalize an authority and record it in the outcome.
    fn target(
        &self,
        authority: &str,
        default_port: Option<u16>,
        o: &mut Outcome,
    ) -> Result<Target, Refusal> {
        let t = parse_authority(authority, default_port)
            .map_err(|e| Refusal::new(e.reason(), e.to_string()))?;
        o.host = Some(t.host.to_string());
        o.port = Some(t.port);
        Ok(t)
    }
}

tokio::task_local! {
    /// The names of the verified client certificate of a TLS-listener connection, for every request decided
    /// while serving it (set around the connection's task in `accept_tls`).
    static CLIENT_CERT: Arc<[CertName]>;
}

/// The certificate names of the connection being served, if it presented a verified client certificate.
fn client_cert() -> Option<Arc<[CertName]>> {
    CLIENT_CERT
        .try_with(|c| c.clone())
        .ok()
        .filter(|c| !c.is_empty())
}

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

pub use client_io::ClientIo;

/// What outlives a configuration reload: the listeners bound at start, the configuration in force and the
/// connection limit.
pub struct Live {
    /// The listener addresses configured at start (and bound): a reload cannot change them.
    listeners: Listeners,
    current: ArcSwap<Ctx>,
    limit: Arc<Semaphore>,
    /// The permits `limit` was sized for (`limits.max_connections` in force).
    limit_size: std::sync::Mutex<usize>,
    /// Per-client counts (`limits.max_connections_per_client`) and which refusals are logged.
    gate: admission::Gate,
}

impl Live {
    /// Admit a connection just accepted from `client` under `ctx`'s limits, or say why not.
    fn admit(&self, ctx: &Ctx, client: std::net::IpAddr) -> admission::Admitted {
        self.gate.admit(&self.limit, &ctx.settings.limits, client)
    }

    /// The context new connections start with.
    pub fn ctx(&self) -> Arc<Ctx> {
        self.current.load_full()
    }

    /// Ready to serve: not draining, and the resolver is usable (the listeners are bound and a policy is
    /// loaded once a `Live` exists). `Err` says why not.
    pub fn ready(&self) -> Result<(), String> {
        let ctx = self.current.load();
        if ctx.drain.is_cancelled() {
            return Err("shutting down".into());
        }
        if let Some(e) = ctx.dialer.resolver_error() {
            return Err(format!("DNS resolver unusable: {e}"));
        }
        Ok(())
    }
}

impl crate::admin::Health for Live {
    fn metrics_text(&self) -> String {
        self.ctx().metrics.render()
    }

    fn ready(&self) -> Result<(), String> {
        Live::ready(self)
    }
}

impl crate::reload::InForce for Live {
    fn files(&self) -> Vec<PathBuf> {
        self.ctx().settings.files.clone()
    }

    fn guard_names(&self) -> (Vec<Arc<str>>, Vec<String>) {
        self.ctx().settings.policy.guard_names()
    }

    fn metrics(&self) -> Arc<Metrics> {
        self.ctx().metrics.clone()
    }

    fn replace(&self, settings: Settings) {
        Live::replace(self, settings)
    }
}

impl Live {
    /// Put a new configuration in force for new connections: its [`Runtime`] replaces the one in force as a
    /// whole. Listener addresses cannot change without a restart: where they differ, the bound ones stay and a
    /// warning says so.
    pub(crate) fn replace(&self, new: Settings) {
        let Settings {
            listeners,
            runtime: mut new,
        } = new;
        let old = self.current.load_full();
        let was = &self.listeners;
        if listeners.listen != was.listen {
            tracing::warn!(listen = %was.listen, new = %listeners.listen, "listen cannot change on reload; restart to apply it");
        }
        if listeners.listen_tls != was.listen_tls {
            tracing::warn!(
                listen_tls = ?was.listen_tls,
                new = ?listeners.listen_tls,
                "listen_tls cannot change on reload; restart to apply it (the old listener and certificate stay)"
            );
            // The certificate configured for another address (or none) is not for the listener bound here.
            new.listen_tls = old.settings.listen_tls.clone();
        }
        for (key, bound, now) in [
            (
                "listen_transparent",
                was.listen_transparent,
                listeners.listen_transparent,
            ),
            (
                "listen_transparent_http",
                was.listen_transparent_http,
                listeners.listen_transparent_http,
            ),
        ] {
            if now != bound {
                tracing::warn!(listener = key, bound = ?bound, new = ?now, "{key} cannot change on reload; restart to apply it");
            }
        }
        if listeners.admin != was.admin {
            let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
            tracing::warn!(admin = %show(was.admin), new = %show(listeners.admin), "admin.listen cannot change on reload; restart to apply it");
        }
        self.resize_limit(new.limits.max_connections);
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        self.current.store(old.next(&self.listeners, new));
        old.superseded.cancel();
    }

    fn resize_limit(&self, want: usize) {
        let mut size = self.limit_size.lock().unwrap_or_else(|e| e.into_inner());
        if want > *size {
            self.limit.add_permits(want - *size);
        } else if want < *size {
            let excess = *size - want;
            let forgotten = self.limit.forget_permits(excess);
            if forgotten < excess {
                // The rest are held by open connections: take them back as those close.
                let missing = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
                let limit = self.limit.clone();
                tokio::spawn(async move {
                    if let Ok(p) = limit.acquire_many_owned(missing).await {
                        p.forget();
                    }
                });
            }
        }
        *size = want;
    }
}

/// The bound proxy listeners, ready to serve.
pub struct Proxy {
    plain: Listener,
    tls: Option<Listener>,
    transparent: Vec<(Listener, transparent::Flavor)>,
    admin: Option<TcpListener>,
    live: Arc<Live>,
    reloader: Reloader,
    watch: bool,
}

impl Proxy {
    /// Bind the proxy listeners and the admin listener. Cancelling `shutdown` starts a graceful shutdown:
    /// readiness turns false, listeners stop accepting and open connections get `shutdown.grace` to finish.
    pub async fn bind(
        settings: Settings,
        log: EventLog,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        // Errors name the listener and its configuration key.
        let bind = |addr: SocketAddr, key: &str| {
            Listener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("listener {addr} ({key}): {e}")))
        };
        let listeners = &settings.listeners;
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
        let admin = match listeners.admin {
            Some(addr) => Some(
                crate::net::listen(addr, 1024, |_| {})
                    .and_then(TcpListener::from_std)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("listener {addr} (admin.listen): {e}"),
                        )
                    })?,
            ),
            None => None,
        };
        let max = settings.runtime.limits.max_connections;
        let listeners = settings.listeners.clone();
        let ctx = Ctx::new(settings, log, shutdown);
        ctx.metrics.config_ok_now();
        let live = Arc::new(Live {
            listeners,
            current: ArcSwap::new(ctx),
            limit: Arc::new(Semaphore::new(max)),
            limit_size: std::sync::Mutex::new(max),
            gate: admission::Gate::default(),
        });
        Ok(Proxy {
            plain,
            tls,
            transparent,
            admin,
            reloader: Reloader::new(live.clone(), None),
            live,
            watch: false,
        })
    }

    /// Reload from this configuration file (the one the settings were loaded from), and watch it and the
    /// files it names for changes.
    pub fn watch_config(&mut self, path: PathBuf) {
        self.reloader = Reloader::new(self.live.clone(), Some(path));
        self.watch = true;
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

    /// The admin listener's address, unless `admin.listen: off`.
    pub fn admin_local_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The configuration in force for new connections.
    pub fn ctx(&self) -> Arc<Ctx> {
        self.live.ctx()
    }

    /// A handle that reloads the configuration (from the watched file, or from settings given to it).
    pub fn reload_handle(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Accept on every listener until shutdown begins, then drain. Connections over
    /// `limits.max_connections` (counted across listeners) get 503 `connection_limit`.
    pub async fn serve(self) {
        let Proxy {
            plain,
            tls,
            transparent,
            admin,
            live,
            reloader,
            watch,
        } = self;
        let ctx = live.ctx();
        // Transparent connections whose original destination is one of these are loops.
        let own: Arc<Vec<SocketAddr>> = Arc::new(
            std::iter::once(&plain)
                .chain(tls.as_ref())
                .chain(transparent.iter().map(|(l, _)| l))
                .filter_map(|l| l.local_addr().ok())
                .chain(admin.as_ref().and_then(|l| l.local_addr().ok()))
                .collect(),
        );
        for (listener, flavor) in transparent {
            tokio::spawn(transparent::accept_loop(
                listener,
                flavor,
                live.clone(),
                own.clone(),
            ));
        }
        // The admin endpoints answer through the drain (readiness false) and stop when it is over.
        let stopped = CancellationToken::new();
        if let Some(listener) = admin {
            tokio::spawn(crate::admin::serve(listener, live.clone(), stopped.clone()));
        }
        tokio::spawn(crate::admin::upkeep(ctx.metrics.clone(), stopped.clone()));
        if watch {
            if let Err(e) = crate::reload::watch(reloader, ctx.drain.clone()) {
                tracing::warn!(error = %e, "cannot watch the configuration files; reload with SIGHUP");
            }
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
        stopped.cancel();
    }
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

/// How often a listener that keeps failing to accept (out of descriptors) logs it.
const ACCEPT_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The next accepted connection; `None` once `drain` fires.
pub(super) async fn next_connection(
    listener: &Listener,
    drain: &CancellationToken,
) -> Option<(ClientSocket, SocketAddr)> {
    let mut warnings = accept::WarnEvery::new(ACCEPT_WARNING_INTERVAL);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.cancelled() => return None,
        };
        match accepted {
            // TCP_NODELAY and keepalive come from the listener (see `Listener::bind`).
            Ok((stream, peer)) => return Some((stream, peer)),
            // That one connection failed before it could be accepted; the next may be waiting already.
            Err(e) if accept::lost_one_connection(&e) => {
                tracing::debug!(error = %e, "a connection went away before it was accepted");
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning, and say so once per
                // interval (with how many failures were not logged), not every 50 ms.
                if let Some(suppressed) = warnings.due(std::time::Instant::now()) {
                    let listen = listener.local_addr().ok().map(|a| a.to_string());
                    tracing::warn!(
                        error = %e,
                        listener = listen.as_deref().unwrap_or("?"),
                        failures_not_logged = suppressed,
                        "accept failed; accepting again in 50 ms"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_loop(listener: Listener, kind: ListenerKind, live: Arc<Live>) {
    let drain = live.ctx().drain.clone();
    while let Some((stream, peer)) = next_connection(&listener, &drain).await {
        let ctx = live.ctx();
        let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
        let admitted = live.admit(&ctx, peer.ip());
        let stream = CountedClient::new(stream, ctx.metrics.connection_opened(kind.as_str()));
        let tasks = ctx.tasks.clone();
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
    let acceptor = TlsAcceptor::from(cfg.clone());
    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
    let detail = match handshake.await {
        Ok(Ok(tls_stream)) => {
            let names: Arc<[CertName]> = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::tls_files::certificate_names(leaf))
                .unwrap_or_default()
                .into();
            // A verified certificate is who the client is: count it there, not by its address.
            if let (Some(name), Ok(slots)) = (names.first(), admitted.as_mut()) {
                let key = admission::ClientKey::Cert(name.to_string().into());
                let limit = ctx.settings.limits.max_connections_per_client;
                if let Err(refused) = live.gate.rekey(slots, key, limit) {
                    admitted = Err(refused);
                }
            }
            let kind = ListenerKind::Tls;
            return CLIENT_CERT
                .scope(names, admit(ctx, tls_stream, peer, conn_id, admitted, kind))
                .await;
        }
        Ok(Err(e)) => format!("TLS handshake with the client failed: {e}"),
        Err(_) => format!(
            "TLS handshake with the client did not finish within {:?} (timeouts.header)",
            ctx.settings.timeouts.header
        ),
    };
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
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
            if e.method.as_deref() == Some("CONNECT") {
                o.kind = Kind::Connect;
            }
            o.method = e.method;
            o.refuse(e.refusal);
            ctx.refused_early(&o, true);
            respond::write_refusal(stream, &o).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::log::LogFormat;

    fn ctx(yaml: &str) -> Arc<Ctx> {
        Ctx::new(
            crate::config::from_yaml_str(yaml).unwrap(),
            EventLog::to_writer(LogFormat::Json, Box::new(std::io::sink())),
            CancellationToken::new(),
        )
    }

    /// Credentials that got no turn for a password check are refused as busy, not as wrong (the client's
    /// credentials may well be right) and not let through (fail closed).
    #[test]
    fn unchecked_credentials_are_refused_as_busy() {
        let ctx = ctx(
            "listen: 127.0.0.1:0\nclients:\n  - name: robots\n    token_sha256: [\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\nallow:\n  - {name: open, hosts: [open.test]}\n",
        );
        let target = parse_authority("open.test:443", None).unwrap();
        let mut o = Outcome::new(1, 1, "127.0.0.1:5000".parse().unwrap(), Kind::Connect);
        assert_eq!(
            ctx.decide(&target, None, &mut o),
            Ok(None),
            "allowed without credentials"
        );
        let mut o = Outcome::new(1, 1, "127.0.0.1:5000".parse().unwrap(), Kind::Connect);
        o.client.credentials = Credentials::Unchecked {
            waited: std::time::Duration::from_secs(1),
            per_source: password_checks::PER_SOURCE,
        };
        assert!(ctx.decide(&target, None, &mut o).is_err());
        assert_eq!(o.reason, Reason::AuthBusy);
        assert_eq!(o.reason.status(), 503);
    }

    /// Every connection's task is as large as `admit`'s future for as long as the connection lives, idle
    /// tunnels included: it must keep only what an established tunnel needs (the rest is boxed and freed).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let ctx = ctx("listen: 127.0.0.1:0\n");
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
