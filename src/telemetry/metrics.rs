//! Prometheus metrics, one registry per [`Metrics`] (one per proxy), so several proxies in one process never
//! mix their numbers. Counters and histograms are recorded from the same [`Outcome`] and [`Close`] the log
//! lines are made from (the event log calls the recorder), so logs and metrics agree.
//!
//! Labels are bounded: decision, reason code, rule name, vendor profile, listener, direction, result, parent.
//! Hostnames and client addresses are never labels.

use super::last_match::LastMatch;
pub use super::last_match::RULE_LAST_MATCH;
use crate::outcome::{Close, Kind, Outcome, Verdict};
use crate::policy::{Policy, RuleKind};
use crate::reason::Reason;
use metrics::{Gauge, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const DECISIONS: &str = "egressd_decisions_total";
pub const CONNECTIONS_ACTIVE: &str = "egressd_connections_active";
pub const TUNNELS_ACTIVE: &str = "egressd_tunnels_active";
pub const BYTES: &str = "egressd_bytes_total";
pub const TUNNEL_DURATION: &str = "egressd_tunnel_duration_seconds";
pub const DNS_LOOKUP: &str = "egressd_dns_lookup_seconds";
pub const UPSTREAM_CONNECT: &str = "egressd_upstream_connect_seconds";
pub const CONFIG_RELOADS: &str = "egressd_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "egressd_config_last_reload_success_timestamp_seconds";
pub const CONNECTIONS_REJECTED: &str = "egressd_connections_rejected_total";
pub const CONNECTIONS_EMPTY: &str = "egressd_connections_empty_total";
pub const BUILD_INFO: &str = "egressd_build_info";
pub const PARENT_ATTEMPTS: &str = "egressd_parent_attempts_total";
pub const FRAGMENTS: &str = "egressd_fragments";
pub const SHADOW_DISAGREEMENTS: &str = "egressd_shadow_disagreements_total";
pub const CONTROL_CONNECTIONS: &str = "egressd_control_connections_open";
pub const WORKLOAD_IDENTITY_UP: &str = "egressd_workload_identity_up";
pub const WORKLOAD_PODS: &str = "egressd_workload_pods";
pub const WORKLOAD_AMBIGUOUS_IPS: &str = "egressd_workload_ambiguous_ips";
pub const WORKLOAD_WATCH_RESTARTS: &str = "egressd_workload_watch_restarts_total";
pub const WORKLOAD_IDENTITY_LOST: &str = "egressd_workload_identity_lost_total";

/// Every metric family egressd exports (the README table and the dashboards are built on these names).
pub const METRIC_NAMES: &[&str] = &[
    DECISIONS,
    CONNECTIONS_ACTIVE,
    TUNNELS_ACTIVE,
    BYTES,
    TUNNEL_DURATION,
    DNS_LOOKUP,
    UPSTREAM_CONNECT,
    CONFIG_RELOADS,
    CONFIG_LAST_RELOAD_SUCCESS,
    CONNECTIONS_REJECTED,
    CONNECTIONS_EMPTY,
    BUILD_INFO,
];

/// Reasons a connection is refused before any request is read.
const REJECTIONS: [Reason; 3] = [
    Reason::ConnectionLimit,
    Reason::ClientConnectionLimit,
    Reason::ClientTlsFailed,
];

/// The `listener` label values.
const LISTENERS: [&str; 4] = ["plain", "tls", "transparent", "transparent_http"];

/// Short lookups and connects: 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Tunnels live from milliseconds to hours.
const TUNNEL_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

/// One proxy's metrics: its own Prometheus recorder, recorded into directly (never the global recorder).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    tunnels: Gauge,
    tunnels_open: Arc<AtomicUsize>,
    /// `egressd_rule_last_match_timestamp_seconds`, whose series follow the configuration in force.
    last_match: LastMatch,
    /// A configuration with `include:` has been in force: `egressd_fragments` is shown from then on.
    fragments_shown: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(TUNNEL_DURATION.into()), TUNNEL_BUCKETS)
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            tunnels: recorder.register_gauge(&key(TUNNELS_ACTIVE, vec![]), &METADATA),
            recorder,
            handle,
            tunnels_open: Arc::new(AtomicUsize::new(0)),
            last_match: LastMatch::default(),
            fragments_shown: AtomicBool::new(false),
        };
        m.gauge(
            BUILD_INFO,
            vec![label("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        // Series that dashboards and alerts expect before the first event.
        for result in ["success", "error"] {
            m.counter_add(CONFIG_RELOADS, vec![label("result", result)], 0);
        }
        for r in REJECTIONS {
            m.counter_add(CONNECTIONS_REJECTED, vec![label("reason", r.as_str())], 0);
        }
        for l in LISTENERS {
            m.counter_add(CONNECTIONS_EMPTY, vec![label("listener", l)], 0);
        }
        m.tunnels.set(0.0);
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        let rules = self.last_match.render();
        if !rules.is_empty() {
            if !text.is_empty() && !text.ends_with("\n\n") {
                text.push('\n');
            }
            text.push_str(&rules);
        }
        text
    }

    /// The configuration in force (at start and after each reload): its allow rules are the series of
    /// `egressd_rule_last_match_timestamp_seconds`; removed rules' series go away.
    pub fn rules_in_force(&self, policy: &Policy) {
        self.last_match.configure(
            policy
                .rules()
                .filter(|(_, kind)| *kind == RuleKind::Allow)
                .map(|(name, _)| name),
        );
    }

    /// Workload identity's state: usable (`up`), pods indexed, addresses two live pods claim.
    pub fn workload_status(&self, up: bool, pods: usize, ambiguous: usize) {
        self.gauge(WORKLOAD_IDENTITY_UP, vec![])
            .set(if up { 1.0 } else { 0.0 });
        self.gauge(WORKLOAD_PODS, vec![]).set(pods as f64);
        self.gauge(WORKLOAD_AMBIGUOUS_IPS, vec![])
            .set(ambiguous as f64);
    }

    /// The pod watch started over: `gone` (410, a relist follows), `error` (the request or stream failed),
    /// `closed` (the server ended the stream).
    pub fn workload_watch_restart(&self, cause: &'static str) {
        self.counter_add(WORKLOAD_WATCH_RESTARTS, vec![label("cause", cause)], 1);
    }

    /// Workload identity became unknown: the API server was unreachable for longer than
    /// `kubernetes.stale_after`.
    pub fn workload_identity_lost(&self) {
        self.counter_add(WORKLOAD_IDENTITY_LOST, vec![], 1);
    }

    /// Fold buffered histogram samples into their buckets; run periodically so memory stays bounded between
    /// scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Count a final decision (one per request, as logged).
    pub fn decision(&self, o: &Outcome) {
        let rule = o.rule.as_deref().unwrap_or("");
        let mut labels = vec![
            label("decision", o.decision.as_str()),
            label("reason", o.reason.as_str()),
            label("rule", rule),
            label("vendor", vendor_of(rule)),
            // The first client group: bounded by the configuration, unlike users or addresses.
            label("client_group", o.client.groups.first().map_or("", |c| &**c)),
        ];
        // The route, once one was taken (only with `parents` configured): `direct`, the parent that took the
        // request, or the route's parents when none did; all from the configuration. Absent otherwise, which
        // Prometheus reads as empty.
        if let Some(via) = &o.via {
            labels.push(label("via", via));
        }
        self.counter_add(DECISIONS, labels, 1);
        // Where a shadow policy decides otherwise: `rule` is the candidate's deciding rule, or the live one's
        // when the candidate has none (a rule the candidate dropped); both from configurations, so bounded.
        if let Some(s) = o.shadow_disagreement() {
            let rule = s.rule.as_deref().unwrap_or(rule);
            self.counter_add(
                SHADOW_DISAGREEMENTS,
                vec![
                    label("live", o.decision.as_str()),
                    label("shadow", s.verdict.as_str()),
                    label("rule", rule),
                ],
                1,
            );
        }
        // A rule let the request through (a would-be denial proceeds on its rule too): it is in use.
        if let (Verdict::Allow | Verdict::WouldDeny, Some(rule)) = (o.decision, &o.rule) {
            self.last_match.matched(rule, unix_now().as_secs());
        }
        if REJECTIONS.contains(&o.reason) {
            self.counter_add(
                CONNECTIONS_REJECTED,
                vec![label("reason", o.reason.as_str())],
                1,
            );
        }
        // Every parent asked (`parent_status`): parent names come from the configuration, results are a
        // status code or one of a few words.
        for attempt in &o.parent_status {
            if let Some((parent, result)) = attempt.split_once('=') {
                self.counter_add(
                    PARENT_ATTEMPTS,
                    vec![label("parent", parent), label("result", result)],
                    1,
                );
            }
        }
        if let Some(ms) = o.dns_ms {
            self.histogram(DNS_LOOKUP, ms / 1000.0);
        }
        if let Some(ms) = o.connect_ms {
            self.histogram(UPSTREAM_CONNECT, ms / 1000.0);
        }
    }

    /// Count a connection refused before its request was read whose refusal got no decision line (one of a
    /// burst: see `proxy::admission`). Logged refusals are counted by [`Metrics::decision`].
    pub fn rejected_unlogged(&self, reason: Reason) {
        self.counter_add(
            CONNECTIONS_REJECTED,
            vec![label("reason", reason.as_str())],
            1,
        );
    }

    /// Count a client connection on `listener` that ended without sending a byte (no request, no line).
    pub fn empty_connection(&self, listener: &'static str) {
        self.counter_add(CONNECTIONS_EMPTY, vec![label("listener", listener)], 1);
    }

    /// Count the bytes and duration of a finished tunnel or forwarded exchange.
    pub fn close(&self, c: &Close) {
        self.counter_add(BYTES, vec![label("direction", "upstream")], c.bytes_up);
        self.counter_add(BYTES, vec![label("direction", "downstream")], c.bytes_down);
        if c.kind == Kind::Connect {
            self.histogram(TUNNEL_DURATION, c.duration.as_secs_f64());
        }
    }

    /// A client connection accepted on `listener` (plain, tls, ...); counted until the guard drops.
    pub fn connection_opened(&self, listener: &'static str) -> Active {
        Active::new(
            self.gauge(CONNECTIONS_ACTIVE, vec![label("listener", listener)]),
            None,
        )
    }

    /// A CONNECT tunnel past its 200; counted until the guard drops.
    pub fn tunnel_opened(&self) -> Active {
        Active::new(self.tunnels.clone(), Some(self.tunnels_open.clone()))
    }

    /// A tunnel allowed by a long-lived rule (`idle_timeout: none`: a vendor's control connection) is spliced:
    /// counted per rule until the guard drops (besides its count as a tunnel).
    pub fn control_connection(&self, rule: &str) -> Active {
        let gauge = self.gauge(
            CONTROL_CONNECTIONS,
            vec![label("rule", rule), label("vendor", vendor_of(rule))],
        );
        Active::new(gauge, None)
    }

    /// The `include:` fragments of the configuration in force: loaded and skipped.
    pub fn fragments(&self, loaded: usize, skipped: usize) {
        // Without fragments the series stay away, unless an earlier configuration had some: then a reload
        // that drops `include:` shows 0 and 0, and an alert on skipped fragments clears.
        if loaded + skipped == 0 && !self.fragments_shown.load(Ordering::Relaxed) {
            return;
        }
        self.fragments_shown.store(true, Ordering::Relaxed);
        for (state, n) in [("loaded", loaded), ("skipped", skipped)] {
            self.gauge(FRAGMENTS, vec![label("state", state)])
                .set(n as f64);
        }
    }

    /// Show the long-lived rules of a configuration at 0 until their first tunnel, so that an alert can tell
    /// "no connection" from "no such rule" (a rule that has counts keeps them).
    pub fn control_rules<'a>(&self, rules: impl Iterator<Item = &'a str>) {
        for rule in rules {
            self.gauge(
                CONTROL_CONNECTIONS,
                vec![label("rule", rule), label("vendor", vendor_of(rule))],
            )
            .increment(0.0);
        }
    }

    /// Tunnels open right now.
    pub fn tunnels_open(&self) -> usize {
        self.tunnels_open.load(Ordering::Relaxed)
    }

    /// Count a configuration reload; a success (and startup) also sets the last-success timestamp.
    pub fn config_loaded(&self, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.counter_add(CONFIG_RELOADS, vec![label("result", result)], 1);
        if ok {
            self.config_ok_now();
        }
    }

    /// Record that the configuration in force was loaded now (at startup and after each good reload).
    pub fn config_ok_now(&self) {
        self.gauge(CONFIG_LAST_RELOAD_SUCCESS, vec![])
            .set(unix_now().as_secs_f64());
    }

    fn counter_add(&self, name: &'static str, labels: Vec<Label>, n: u64) {
        self.recorder
            .register_counter(&key(name, labels), &METADATA)
            .increment(n);
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder.register_gauge(&key(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, value: f64) {
        self.recorder
            .register_histogram(&key(name, vec![]), &METADATA)
            .record(value);
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

fn key(name: &'static str, labels: Vec<Label>) -> metrics::Key {
    metrics::Key::from_parts(name, labels)
}

fn label(k: &'static str, v: &str) -> Label {
    Label::new(k, v.to_string())
}

/// The vendor profile a rule came from: profile rules are named `<profile>/<entry>`.
pub fn vendor_of(rule: &str) -> &str {
    match rule.split_once('/') {
        Some((profile, _)) if crate::vendors::find(profile).is_some() => profile,
        _ => "",
    }
}

/// Holds one unit of an "active" gauge until dropped.
pub struct Active {
    gauge: Gauge,
    count: Option<Arc<AtomicUsize>>,
}

impl Active {
    fn new(gauge: Gauge, count: Option<Arc<AtomicUsize>>) -> Self {
        gauge.increment(1.0);
        if let Some(c) = &count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Active { gauge, count }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);

        if let Some(c) = &self.count {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
