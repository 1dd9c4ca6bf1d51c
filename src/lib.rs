//! egressd: an egress allowlisting forward proxy.
//!
//! Data flow: listener → request head → normalized [`target::Target`] → [`policy::Policy::decide`] (pure) →
//! resolve and check every address → dial the checked address → splice (CONNECT) or forward (HTTP) →
//! one decision line and one close line per request.

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
pub mod proxy;
pub mod reason;
pub mod reload;
pub mod target;
pub mod telemetry;
pub mod tls_files;
pub mod vendors;
pub mod wire;

pub use config::Settings;
pub use proxy::Proxy;
pub use telemetry::log::{EventLog, LogFormat};
pub use tokio_util::sync::CancellationToken;

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
