//! egressd: an egress allowlisting forward proxy.
//!
//! Data flow: listener → request head → normalized [`target::Target`] → [`policy::Policy::decide`] (pure) →
//! resolve and check every address → dial the checked address → splice (CONNECT) or forward (HTTP) →
//! one decision line and one close line per request.

pub mod agent_env;
pub mod check;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod load;
pub mod noproxy;
pub mod policy;
pub mod proxy;
pub mod reason;
pub mod target;
pub mod telemetry;
pub mod tls_files;
pub mod vendors;

pub use config::Settings;
pub use proxy::Proxy;
pub use telemetry::log::{EventLog, LogFormat};
pub use tokio_util::sync::CancellationToken;

/// Bind the proxy listener and serve until `shutdown` is cancelled.
pub async fn run(
    settings: Settings,
    log: EventLog,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    let proxy = Proxy::bind(settings, log, shutdown).await?;
    if let Some(e) = proxy.ctx().dialer.resolver_error() {
        tracing::warn!(error = %e, "DNS resolver unavailable; only names in dns.hosts can be reached");
    }
    tracing::info!(listen = %proxy.local_addr(), "egressd listening");
    proxy.serve().await;
    Ok(())
}
