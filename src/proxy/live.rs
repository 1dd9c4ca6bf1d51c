//! What outlives a configuration reload: the listeners bound at start, the generation in force (swapped as
//! one value on reload) and the connection limits.

use super::{admission, ctx::Ctx};
use crate::config::{Listeners, Settings};
use crate::telemetry::log::EventLog;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
    pub(super) gate: admission::Gate,
}

impl Live {
    /// The configuration in force at start, and the limits it sets. Cancelling `shutdown` starts a graceful
    /// shutdown: readiness turns false, listeners stop accepting and open connections get `shutdown.grace`.
    pub fn new(settings: Settings, log: EventLog, shutdown: CancellationToken) -> Arc<Self> {
        let max = settings.runtime.limits.max_connections;
        let listeners = settings.listeners.clone();
        let ctx = Ctx::new(settings, log, shutdown);
        ctx.metrics.config_ok_now();
        Arc::new(Live {
            listeners,
            current: ArcSwap::new(ctx),
            limit: Arc::new(Semaphore::new(max)),
            limit_size: std::sync::Mutex::new(max),
            gate: admission::Gate::default(),
        })
    }

    /// Admit a connection just accepted from `client` under `ctx`'s limits, or say why not.
    pub(super) fn admit(&self, ctx: &Ctx, client: std::net::IpAddr) -> admission::Admitted {
        self.gate.admit(&self.limit, &ctx.settings.limits, client)
    }

    /// Admit a load balancer's connection: only `limits.max_connections` applies until its PROXY header names
    /// the client, whose share it is then counted in (`rekey`).
    pub(super) fn admit_balancer(
        &self,
        ctx: &Ctx,
        balancer: std::net::IpAddr,
    ) -> admission::Admitted {
        let mut limits = ctx.settings.limits.clone();
        limits.max_connections_per_client = usize::MAX;
        self.gate.admit(&self.limit, &limits, balancer)
    }

    /// The context new connections start with.
    pub fn ctx(&self) -> Arc<Ctx> {
        self.current.load_full()
    }

    /// Ready to serve: not draining, and the resolver is usable (the listeners are bound and a policy is
    /// loaded once a `Live` exists). `Err` says why not; `Ok` carries notes on what works only in part
    /// (skipped fragments, workload identity lost after the first list).
    pub fn ready(&self) -> Result<Vec<String>, String> {
        let ctx = self.current.load();
        if ctx.drain.is_cancelled() {
            return Err("shutting down".into());
        }
        if let Some(e) = ctx.dialer.resolver_error() {
            return Err(format!("DNS resolver unusable: {e}"));
        }
        // Until the first pod list, rules scoped to workloads cannot match: not ready. Losing the API server
        // later does not make the proxy unready (every replica shares the API server, so none would be
        // better); identity-scoped rules stop matching and the metrics and log say so.
        if ctx.settings.kubernetes.is_some() && !ctx.workloads.listed() {
            let why = ctx.workloads.unavailable().unwrap_or_default();
            return Err(format!("workload identity: {why}"));
        }
        let mut notes = Vec::new();
        if ctx.settings.kubernetes.is_some() {
            if let Some(why) = ctx.workloads.unavailable() {
                notes.push(format!("workload identity unavailable: {why}"));
            }
        }
        for f in &ctx.settings.fragments {
            if let Some(e) = &f.error {
                notes.push(format!("fragment {} skipped: {e}", f.file.display()));
            }
        }
        Ok(notes)
    }
}

impl Live {
    /// Put a new configuration in force for new connections: its [`crate::config::Runtime`] replaces the one in force as a
    /// whole. Listener addresses cannot change without a restart: where they differ, the bound ones stay and a
    /// warning says so.
    pub fn replace(&self, new: Settings) {
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
