//! egressd: an egress allowlisting forward proxy.
//!
//! # The request path
//!
//! ```text
//! proxy::server   accept on a listener, admit under the limits, (TLS listener: handshake), read the head
//!   wire          classify the head / later the ClientHello (pure parsers)
//!   target        normalize host and port
//!   proxy::ctx    gather facts: credentials (argon2 on the blocking pool), the client certificate
//!   policy        verdict::decide(facts) → allow | deny | would_deny, reason, detail, rule   (pure)
//!   proxy::dial   resolve → policy::destination checks EVERY address → connect to a checked one
//!   proxy::parent (a route through parents: policy::route chose it) resolve and check unless the parents
//!                 resolve, then CONNECT by name through the first parent that answers 200
//!   proxy::connect / forward / transparent / transparent_http
//!                 CONNECT: 200, peek, policy::verdict::judge_tunnel(first bytes), replay, splice
//!                 HTTP: forward through the pooled upstream client, stream the response
//!   outcome       one Outcome per request: its decision line is written once, at the request's exit
//!   telemetry     the decision and close lines and the metrics, all made from the outcome record
//! ```
//!
//! # The module map, from the bottom up
//!
//! - [`reason`] (reason codes from one list, [`reason::Refusal`]), [`net`], [`target`].
//! - [`policy`]: everything that decides, pure: rules, client identity, [`policy::verdict`] (the whole
//!   verdict from facts, which `egressd check` calls too), [`policy::first_bytes`], [`policy::destination`],
//!   the SNI and transparent-mode checks, [`policy::route`] (direct or through parent proxies, chosen after the
//!   verdict). [`noproxy`]: NO_PROXY as clients read it (pure).
//! - [`wire`]: pure parsers of what clients and servers send.
//! - [`outcome`]: the outcome record; [`telemetry`] renders and counts it.
//! - [`config`]: raw YAML → compiled [`Settings`] (restart-only listeners + one reloadable runtime);
//!   [`vendors`]: the embedded vendor profiles.
//! - [`proxy`]: the I/O around the verdict (see its module map); [`admin`]: `/metrics`, `/healthz`,
//!   `/readyz`; [`reload`]: SIGHUP and file-watch reloads. Neither admin nor reload knows the proxy: they
//!   see it through [`admin::Health`] and [`reload::InForce`].
//! - This file composes them ([`Proxy`], [`run`]); [`check`], [`audit`], [`agent_env`], [`probe`] and [`load`]
//!   are the library side of the other subcommands (`src/cli/`).

pub mod admin;
pub mod agent_env;
pub mod audit;
pub mod check;
pub mod config;
pub mod fd_limit;
#[doc(hidden)]
pub mod fuzzing;
pub mod load;
pub mod net;
pub mod noproxy;
pub mod outcome;
pub mod policy;
pub mod policy_cases;
pub mod probe;
pub mod proxy;
pub mod reason;
pub mod reload;
pub mod target;
pub mod telemetry;
pub mod tls_files;
pub mod vendors;
pub mod wire;
pub mod workloads;

pub use config::Settings;
pub use telemetry::log::{EventLog, LogFormat};
pub use tokio_util::sync::CancellationToken;

use proxy::Live;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use telemetry::metrics::Metrics;

/// egressd composed: the proxy listeners, the admin endpoints and the reloader around one [`Live`]
/// configuration. Neither the proxy nor admin nor reload imports this: admin and reload see the proxy
/// through the traits it implements here ([`admin::Health`], [`reload::InForce`]).
pub struct Proxy {
    bound: proxy::Bound,
    admin: Option<tokio::net::TcpListener>,
    live: Arc<Live>,
    reloader: reload::Reloader,
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
        let bound = proxy::Bound::bind(&settings.listeners)?;
        let admin = match settings.listeners.admin {
            Some(addr) => Some(
                net::listen(addr, 1024, |_| {})
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("listener {addr} (admin.listen): {e}"),
                        )
                    })?,
            ),
            None => None,
        };
        let live = Live::new(settings, log, shutdown);
        Ok(Proxy {
            bound,
            admin,
            reloader: reload::Reloader::new(live.clone(), None),
            live,
            watch: false,
        })
    }

    /// Reload from this configuration file (the one the settings were loaded from), and watch it and the
    /// files it names for changes.
    pub fn watch_config(&mut self, path: PathBuf) {
        self.reloader = reload::Reloader::new(self.live.clone(), Some(path));
        self.watch = true;
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// The TLS listener's address, when one is configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.bound.tls_local_addr()
    }

    /// The transparent listeners' addresses (`listen_transparent`, `listen_transparent_http`), when set.
    pub fn transparent_local_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.bound.transparent_local_addrs()
    }

    /// The admin listener's address, unless `admin.listen: off`.
    pub fn admin_local_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The configuration in force for new connections.
    pub fn ctx(&self) -> Arc<proxy::Ctx> {
        self.live.ctx()
    }

    /// A handle that reloads the configuration (from the watched file, or from settings given to it).
    pub fn reload_handle(&self) -> reload::Reloader {
        self.reloader.clone()
    }

    /// Serve until shutdown begins, then drain. The admin endpoints answer through the drain (readiness
    /// false) and stop when it is over.
    pub async fn serve(self) {
        let Proxy {
            bound,
            admin,
            live,
            reloader,
            watch,
        } = self;
        let ctx = live.ctx();
        let stopped = CancellationToken::new();
        let admin_addr: Vec<SocketAddr> =
            admin.iter().filter_map(|l| l.local_addr().ok()).collect();
        if let Some(listener) = admin {
            tokio::spawn(admin::serve(listener, live.clone(), stopped.clone()));
        }
        tokio::spawn(admin::upkeep(ctx.metrics.clone(), stopped.clone()));
        if watch {
            if let Err(e) = reload::watch(reloader, ctx.drain.clone()) {
                tracing::warn!(error = %e, "cannot watch the configuration files; reload with SIGHUP");
            }
        }
        proxy::server::serve(bound, live, admin_addr).await;
        stopped.cancel();
    }
}

impl admin::Health for Live {
    fn metrics_text(&self) -> String {
        let ctx = self.ctx();
        ctx.publish_gauges();
        ctx.metrics.render()
    }

    fn ready(&self) -> Result<Vec<String>, String> {
        Live::ready(self)
    }
}

impl reload::InForce for Live {
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

/// Bind the proxy and admin listeners and serve until `shutdown` is cancelled, then drain for
/// `shutdown.grace`. With `config_path`, the file (and the files it names) is watched and reloaded on change;
/// SIGHUP reloads it too.
pub async fn run(
    settings: Settings,
    config_path: Option<std::path::PathBuf>,
    log: EventLog,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    for w in &settings.runtime.warnings {
        tracing::warn!("{w}");
    }
    let mut proxy = Proxy::bind(settings, log, shutdown.clone()).await?;
    if let Some(p) = config_path {
        proxy.watch_config(p);
    }
    if let Some(e) = proxy.ctx().dialer.resolver_error() {
        tracing::warn!(error = %e, "DNS resolver unavailable; only names in dns.hosts can be reached");
    }
    tracing::info!(
        listen = %proxy.local_addr(),
        listen_tls = %proxy.tls_local_addr().map_or("none".into(), |a| a.to_string()),
        admin = %proxy.admin_local_addr().map_or("off".into(), |a| a.to_string()),
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "egressd listening"
    );
    reload_on_sighup(proxy.reload_handle(), shutdown);
    let (tls, http) = proxy.transparent_local_addrs();
    if tls.is_some() || http.is_some() {
        tracing::info!(transparent = ?tls, transparent_http = ?http, "transparent listeners ready");
    }
    proxy.serve().await;
    Ok(())
}

fn reload_on_sighup(reloader: reload::Reloader, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by changing the file");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                s = hup.recv() => if s.is_none() { return },
                _ = shutdown.cancelled() => return,
            }
            tracing::info!("SIGHUP: reloading the configuration");
            // Errors are logged and counted by the reloader; the configuration in force keeps serving.
            let _ = reloader.reload();
        }
    });
}
