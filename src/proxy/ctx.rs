//! The context of one configuration generation: what every connection handler needs (the runtime settings,
//! dialer, upstream pool, log and metrics, shutdown signals), and the steps every request takes through it
//! (credentials, target, verdict), which record facts in the outcome and never write a line.

use super::dial::Dialer;
use super::{password_checks, upstream};
use crate::config::{Listeners, Runtime, Settings};
use crate::outcome::Outcome;
use crate::policy::verdict::Client;
use crate::policy::Credentials;
use crate::reason::Refusal;
use crate::target::{parse_authority, Target};
use crate::telemetry::log::EventLog;
use crate::telemetry::metrics::Metrics;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a connection handler needs, shared by all connections that started under one configuration.
/// A reload builds a new `Ctx` (new policy, resolver and upstream pool) that new connections pick up; open
/// connections keep the one they started with.
pub struct Ctx {
    /// The configuration of this generation: everything but the listener addresses (see [`super::Live`]).
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
    pub(super) next_conn: Arc<AtomicU64>,
    /// Every connection task (and tunnel task) of every configuration generation, for draining.
    pub(super) tasks: TaskTracker,
    pub(super) client: upstream::UpstreamClient,
    /// A pooled client per parent proxy, by name.
    parent_clients: Vec<(Arc<str>, upstream::UpstreamClient)>,
    /// The newest generation, shared by all of them: each request of a kept-alive connection is decided
    /// with the configuration in force when it arrives, not the one its connection was accepted under.
    pub(super) newest: Arc<std::sync::RwLock<std::sync::Weak<Ctx>>>,
    /// Fires when a reload replaces this generation.
    pub(super) superseded: CancellationToken,
    /// Parent proxies that failed recently, shared by every generation: a reload does not forget them.
    pub(super) parents_down: Arc<super::parent_health::Down>,
    /// The pods behind client addresses (workload identity), shared by every generation.
    pub(super) workloads: Arc<crate::workloads::Workloads>,
}

impl Ctx {
    pub(super) fn new(settings: Settings, log: EventLog, drain: CancellationToken) -> Arc<Self> {
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
            Arc::default(),
            Arc::default(),
        )
    }

    /// The context for a reloaded configuration served on `listeners`: the same log, metrics, shutdown
    /// signals and connection ids.
    pub(super) fn next(&self, listeners: &Listeners, settings: Runtime) -> Arc<Self> {
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
            self.parents_down.clone(),
            self.workloads.clone(),
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
        parents_down: Arc<super::parent_health::Down>,
        workloads: Arc<crate::workloads::Workloads>,
    ) -> Arc<Self> {
        let dialer = Arc::new(Dialer::new(listeners, &settings));
        let parent_clients = (settings.routes.parents.iter())
            .map(|p| {
                let client = upstream::parent_client(p.clone(), &settings);
                (p.name.clone(), client)
            })
            .collect();
        let ctx = Arc::new(Ctx {
            client: upstream::upstream_client(dialer.clone(), &settings),
            parent_clients,
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
            parents_down,
            workloads,
        });
        ctx.workloads
            .ensure(ctx.settings.kubernetes.as_ref(), &ctx.metrics);
        ctx.metrics.rules_in_force(&ctx.settings.policy);
        ctx.metrics
            .control_rules(ctx.settings.policy.long_lived_rules());
        let skipped = (ctx.settings.fragments.iter())
            .filter(|f| f.error.is_some())
            .count();
        ctx.metrics
            .fragments(ctx.settings.fragments.len() - skipped, skipped);
        *ctx.newest.write().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&ctx);
        ctx
    }

    /// Bring the gauges that are read from state rather than events up to date (before a scrape).
    pub fn publish_gauges(&self) {
        if self.settings.kubernetes.is_some() {
            self.workloads.publish(&self.metrics);
        }
    }

    /// The pooled client for plain HTTP through the parent `name`.
    pub(super) fn parent_client(&self, name: &str) -> Option<&upstream::UpstreamClient> {
        self.parent_clients
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, c)| c)
    }

    /// The verdict on a request for `target` (and, for plain HTTP, `path`), recorded in the outcome.
    /// `Ok(rule_tls)`: proceed, with the deciding rule's `tls` setting.
    pub(super) fn decide(
        &self,
        target: &Target,
        path: Option<&str>,
        o: &mut Outcome,
    ) -> Result<Option<bool>, Refusal> {
        let policy = &self.settings.policy;
        let credentials = std::mem::take(&mut o.client.credentials);
        let workload = if policy.clients.uses_workloads() {
            self.workloads.lookup(o.client_addr.ip())
        } else {
            crate::policy::workload::WorkloadFact::Unused
        };
        o.client = Client::identify(
            policy,
            o.client_addr.ip(),
            credentials,
            &o.cert_names,
            workload,
        );
        let ruling = crate::policy::verdict::decide(policy, &o.client, target, path);
        if let Some(candidate) = &self.settings.shadow {
            let seen = (o.client).as_seen_by(policy, candidate, o.client_addr.ip(), &o.cert_names);
            o.shadow = crate::policy::verdict::shadow(candidate, &seen, target, path, &ruling)
                .map(Box::new);
        }
        let tls = ruling.tls;
        let proceeds = ruling.proceeds();
        o.rule(ruling);
        if proceeds {
            return Ok(tls);
        }
        Err(Refusal::new(o.reason, o.detail.take().unwrap_or_default()))
    }

    /// A generation from a YAML configuration, logging nowhere (unit tests).
    #[cfg(test)]
    pub(super) fn for_tests(yaml: &str) -> Arc<Self> {
        Self::new(
            crate::config::from_yaml_str(yaml).unwrap(),
            EventLog::to_writer(crate::LogFormat::Json, Box::new(std::io::sink())),
            CancellationToken::new(),
        )
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
    pub(super) async fn authenticate(
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
    pub(super) fn target(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Kind;
    use crate::reason::Reason;

    /// Credentials that got no turn for a password check are refused as busy, not as wrong (the client's
    /// credentials may well be right) and not let through (fail closed).
    #[test]
    fn unchecked_credentials_are_refused_as_busy() {
        let ctx = Ctx::for_tests(
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
}
