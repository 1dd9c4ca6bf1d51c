//! Raw configuration → runtime settings. Every value is checked and every error is collected with its key
//! path, so one `validate` run shows everything that needs fixing.

mod clients;
mod dns;
mod fragments;
mod listeners;
mod parents;
mod profiles;
mod rules;
mod shadow;
#[cfg(test)]
mod tests;

use super::own_addresses;
use super::raw::{RawClientGroup, RawConfig, RawPort, RawRule};
use super::{ConfigError, ConfigErrors};
use crate::noproxy;
use crate::policy::credentials::{self, GroupCredentials, User};
use crate::policy::tls::{EchMode, SniMode, TlsChecks};
use crate::policy::{
    parse_pattern, ClientGroups, IdleOverride, Policy, PolicyBuilder, PortSet, RuleKind,
};
use crate::target::{normalize_host, Host};
use crate::vendors::{self, ParamValue};
use clients::*;
use dns::*;
pub use fragments::FragmentStatus;
use ipnet::IpNet;
use listeners::*;
use profiles::*;
use rules::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Denials are enforced.
    Enforce,
    /// Policy denials are allowed through and logged as `would_deny`.
    Report,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub header: Duration,
    pub connect: Duration,
    pub idle: Duration,
    pub dns: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections one client (source address; verified client certificate on the TLS listener) may hold.
    pub max_connections_per_client: usize,
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Dns {
    /// Static name → addresses map, consulted before any DNS query.
    pub hosts: HashMap<String, Vec<IpAddr>>,
    /// Upstream DNS servers; empty means the system configuration (/etc/resolv.conf).
    pub servers: Vec<SocketAddr>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

/// A compiled configuration: the listeners bound at start, and everything else. The two parts are apart
/// because a reload treats them differently: it cannot move a bound listener (that takes a restart), and it
/// replaces all of the rest at once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listeners: Listeners,
    pub runtime: Runtime,
}

/// The addresses egressd listens on, bound once at start: restart-only. A reload that names other addresses
/// leaves these bound and logs a warning per key that differs. Fields are named after their configuration
/// keys (`admin` is `admin.listen`).
///
/// What a listener serves with (the TLS listener's certificate, `trust_original_dst`, timeouts, limits) is
/// not here but in [`Runtime`]: it changes on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    /// The plain proxy listener.
    pub listen: SocketAddr,
    /// The listener speaking TLS to clients (`HTTPS_PROXY=https://...`); its server configuration is
    /// [`Runtime::listen_tls`].
    pub listen_tls: Option<SocketAddr>,
    /// Listener for TLS connections redirected with iptables REDIRECT (transparent mode); the SNI names the
    /// destination.
    pub listen_transparent: Option<SocketAddr>,
    /// Listener for plain-HTTP connections redirected with iptables REDIRECT; the Host header names the
    /// destination.
    pub listen_transparent_http: Option<SocketAddr>,
    /// Admin listener (/metrics, /healthz, /readyz); `None` when `admin.listen: off`.
    pub admin: Option<SocketAddr>,
}

impl Listeners {
    /// Is a transparent listener configured?
    pub fn transparent(&self) -> bool {
        self.listen_transparent.is_some() || self.listen_transparent_http.is_some()
    }
}

/// Everything a reload replaces, as one value: the policy and how requests are served under it. Each
/// configuration generation of the proxy holds one; connections started under it keep it.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub mode: Mode,
    pub policy: Arc<Policy>,
    /// How the ClientHello inside CONNECT tunnels is read and judged.
    pub tls: TlsChecks,
    pub dns: Dns,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// How long open connections may drain after SIGTERM/SIGINT before they are cut.
    pub shutdown_grace: Duration,
    /// The server configuration of the `listen_tls` listener (certificate, key, client certificate
    /// verifier), when one is configured: a reload re-reads the files.
    pub listen_tls: Option<Arc<rustls::ServerConfig>>,
    /// Transparent mode's checks (the listeners are in [`Listeners`]).
    pub transparent: super::Transparent,
    /// Files the configuration reads besides itself (the TLS listener's certificate and key): a reload
    /// re-reads them and the configuration watcher watches them.
    pub files: Vec<std::path::PathBuf>,
    /// The TLS listener's client CA bundle as read (and whether certificates are required): connections whose
    /// certificate it verified end after their current request when a reload changes it.
    pub client_ca: Option<(Vec<u8>, bool)>,
    /// Parent proxies and which allowed requests go through them.
    pub routes: Arc<crate::policy::route::Routes>,
    /// PROXY protocol on the forward listeners: which listeners read a header, from whom.
    pub proxy_protocol: ProxyProtocol,
    /// The candidate policy of `shadow: FILE`: every request is decided by it too, and disagreements are
    /// logged and counted; only `policy` decides.
    pub shadow: Option<Arc<Policy>>,
    /// What became of each `include:` fragment (loaded, or skipped and why).
    pub fragments: Vec<FragmentStatus>,
    /// Where pods are read from, when client groups use workload identity (`None` otherwise).
    pub kubernetes: Option<Kubernetes>,
    /// Things that work but not as a reader might expect (path rules over CONNECT); logged at startup.
    pub warnings: Vec<String>,
}

/// PROXY protocol on the forward listeners (`proxy_protocol:`). Off (no listener) by default.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    /// The balancers: a connection from one of these must start with a PROXY header.
    pub trusted: Vec<IpNet>,
    /// On `listen`.
    pub plain: bool,
    /// On `listen_tls` (the header comes before the TLS handshake).
    pub tls: bool,
}

impl ProxyProtocol {
    /// Must a connection from `peer` on this listener (`tls` or plain) start with a PROXY header?
    pub fn expected(&self, tls: bool, peer: IpAddr) -> bool {
        let on = if tls { self.tls } else { self.plain };
        on && self.trusted.iter().any(|n| n.contains(&peer))
    }
}

/// `kubernetes:`, in force when a client group uses workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// A kubeconfig file; `None`: the in-cluster configuration (the pod's service account token and CA,
    /// `KUBERNETES_SERVICE_HOST` and `_PORT`).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// After this long without reaching the API server, workload identity is unknown.
    pub stale_after: Duration,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub fn compile(raw: &RawConfig) -> Result<Settings, ConfigErrors> {
    if !raw.include.is_empty() {
        let (merged, statuses, watched) = fragments::expand(raw);
        let mut settings = compile(&merged)?;
        let rt = &mut settings.runtime;
        rt.files.extend(watched);
        for s in statuses.iter().filter(|s| s.error.is_some()) {
            rt.warnings.push(format!(
                "fragment {} skipped: {}",
                s.file.display(),
                s.error.as_deref().unwrap_or_default()
            ));
        }
        rt.fragments = statuses;
        return Ok(settings);
    }
    let mut errs = Errors::default();

    let listen_raw = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
        errs.push(
            "listen",
            format!("{listen_raw:?} is not an address:port such as 127.0.0.1:3128 or [::]:3128"),
        );
        SocketAddr::from(([127, 0, 0, 1], 3128))
    });

    let listen_tls = compile_tls_listener(raw, listen, &mut errs);

    let mode = match raw.mode.as_deref().unwrap_or("enforce") {
        "enforce" => Mode::Enforce,
        "report" => Mode::Report,
        other => {
            errs.push("mode", format!("{other:?} is not one of: enforce, report"));
            Mode::Enforce
        }
    };

    let sni = match raw.sni.as_deref().unwrap_or("strict") {
        "strict" => SniMode::Strict,
        "policy" => SniMode::Policy,
        "off" => SniMode::Off,
        other => {
            errs.push(
                "sni",
                format!("{other:?} is not one of: strict, policy, off"),
            );
            SniMode::Strict
        }
    };
    let ech = match raw.client_hello.ech.as_deref().unwrap_or("deny") {
        "deny" => EchMode::Deny,
        "outer" => EchMode::Outer,
        other => {
            errs.push(
                "client_hello.ech",
                format!("{other:?} is not one of: deny, outer"),
            );
            EchMode::Deny
        }
    };
    let hello_max = raw.client_hello.max_bytes.unwrap_or(64 * 1024);
    if !(512..=1024 * 1024).contains(&hello_max) {
        errs.push(
            "client_hello.max_bytes",
            format!("{hello_max} is outside 512..=1048576"),
        );
    }

    let mut builder = PolicyBuilder::default();
    let mut credential_files = Vec::new();
    builder.clients(
        compile_clients(raw, &mut errs, &mut credential_files),
        raw.require_identity.unwrap_or(false),
    );
    builder.report_all(mode == Mode::Report);
    let mut seen = HashSet::new();
    // Local allow rules come first, so where one matches the same host and port as a profile entry, its name,
    // paths and idle timeout decide. Deny rules beat every allow rule whatever their position.
    for (i, rule) in raw.allow.iter().enumerate() {
        compile_rule(
            &mut builder,
            &mut errs,
            &mut seen,
            &format!("allow[{i}]"),
            RuleKind::Allow,
            rule,
        );
    }
    let vendor_rules = vendor_rules(raw, &mut errs);
    builder.vendors(selected_profiles(raw));
    for (path, rule) in &vendor_rules {
        compile_rule(
            &mut builder,
            &mut errs,
            &mut seen,
            path,
            RuleKind::Allow,
            rule,
        );
    }
    for (i, rule) in raw.deny.iter().enumerate() {
        compile_rule(
            &mut builder,
            &mut errs,
            &mut seen,
            &format!("deny[{i}]"),
            RuleKind::Deny,
            rule,
        );
    }
    let mut own_addresses = Vec::new();
    for (path, kind, rule) in raw
        .allow
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("allow[{i}]"), RuleKind::Allow, r))
        .chain(
            vendor_rules
                .iter()
                .map(|(p, r)| (p.clone(), RuleKind::Allow, r)),
        )
        .chain(
            raw.deny
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("deny[{i}]"), RuleKind::Deny, r)),
        )
    {
        let ports = rule_ports(rule);
        match own_addresses::compile(rule, kind == RuleKind::Allow, ports) {
            Ok(Some(own)) => own_addresses.push(own),
            Ok(None) => {}
            Err(list) => {
                for (key, m) in list {
                    errs.push(format!("{path}.{key}"), m);
                }
            }
        }
    }
    let warnings: Vec<String> = raw
        .allow
        .iter()
        .chain(vendor_rules.iter().map(|(_, r)| r))
        .filter(|r| !r.paths.is_empty())
        .map(|r| {
            format!(
                "rule {}: paths {:?} are enforced only for plain-HTTP requests; a CONNECT tunnel (https) to {} \
                 reaches any path, because restricting it would need TLS interception, which egressd does not do",
                r.name,
                r.paths,
                r.hosts.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .into_iter()
        .chain(opt_out_deny_warnings(raw))
        .collect();
    let allow_cidrs = raw
        .destinations
        .allow_cidrs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let parsed = c
                .parse::<IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(IpNet::from));
            parsed
                .map(|n| n.trunc())
                .map_err(|_| {
                    errs.push(
                        format!("destinations.allow_cidrs[{i}]"),
                        format!("{c:?} is not a CIDR or IP address"),
                    )
                })
                .ok()
        })
        .collect::<Vec<IpNet>>();

    builder.destinations(crate::policy::destination::Destinations::new(
        allow_cidrs.clone(),
        own_addresses.clone(),
    ));
    let policy = builder.build().unwrap_or_else(|e| {
        errs.push("allow", e);
        Policy::default()
    });

    let dns = compile_dns(raw, &mut errs);

    let mut duration = |path: &str, v: &Option<String>, default: &str| -> Duration {
        let text = v.as_deref().unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                errs.push(path, format!("{text:?} must be greater than zero"));
                humantime::parse_duration(default).unwrap_or_default()
            }
            Err(e) => {
                errs.push(
                    path,
                    format!("{text:?} is not a duration such as 10s or 15m ({e})"),
                );
                humantime::parse_duration(default).unwrap_or_default()
            }
        }
    };
    let stale_after = duration("kubernetes.stale_after", &raw.kubernetes.stale_after, "60s");
    let tls = TlsChecks {
        sni,
        ech,
        hello_timeout: duration("client_hello.timeout", &raw.client_hello.timeout, "5s"),
        hello_max_bytes: hello_max as usize,
    };
    let timeouts = Timeouts {
        header: duration("timeouts.header", &raw.timeouts.header, "10s"),
        connect: duration("timeouts.connect", &raw.timeouts.connect, "10s"),
        idle: duration("timeouts.idle", &raw.timeouts.idle, "15m"),
        dns: duration("timeouts.dns", &raw.timeouts.dns, "5s"),
    };
    let shutdown_grace = duration("shutdown.grace", &raw.shutdown.grace, "30s");
    let dns = Dns {
        min_ttl: duration("dns.min_ttl", &raw.dns.min_ttl, "5s"),
        max_ttl: duration("dns.max_ttl", &raw.dns.max_ttl, "5m"),
        ..dns
    };
    if dns.min_ttl > dns.max_ttl {
        errs.push("dns.min_ttl", "must not be greater than dns.max_ttl");
    }

    let proxy_listeners: Vec<SocketAddr> = std::iter::once(listen)
        .chain(listen_tls.as_ref().map(|(a, _)| *a))
        .collect();
    let admin = compile_admin(raw, &proxy_listeners, &mut errs);
    let mut warnings = warnings;
    warnings.extend(own_addresses::param_warnings(
        &vendor_rules,
        &allow_cidrs,
        &own_addresses,
        &dns.hosts,
    ));
    let ((listen_transparent, listen_transparent_http), transparent) = super::transparent::compile(
        raw,
        &[Some(listen), listen_tls.as_ref().map(|(a, _)| *a), admin],
        &mut warnings,
    )
    .unwrap_or_else(|e| {
        errs.0.extend(e);
        Default::default()
    });
    let max_connections = raw.limits.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        errs.push("limits.max_connections", "must be at least 1");
    }
    // A workload rarely holds more than a few hundred proxy connections at once; at the default
    // max_connections, one client at this bound takes a tenth of the slots.
    let max_per_client = raw.limits.max_connections_per_client.unwrap_or(1000);
    if max_per_client == 0 {
        errs.push("limits.max_connections_per_client", "must be at least 1");
    }
    let max_header_bytes = raw.limits.max_header_bytes.unwrap_or(32 * 1024);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        errs.push(
            "limits.max_header_bytes",
            format!("{max_header_bytes} is outside 1024..=1048576"),
        );
    }
    let limits = Limits {
        max_connections: max_connections as usize,
        max_connections_per_client: max_per_client as usize,
        max_header_bytes: max_header_bytes as usize,
    };

    let routes = parents::compile_routes(raw, &mut errs, &mut credential_files);
    let shadow = shadow::compile_shadow(raw, &mut warnings, &mut credential_files);
    let proxy_protocol = listeners::compile_proxy_protocol(raw, &mut errs);

    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    let kubernetes = policy.clients.uses_workloads().then(|| Kubernetes {
        kubeconfig: raw.kubernetes.kubeconfig.as_ref().map(Into::into),
        stale_after,
    });
    let (listen_tls, tls_server) = listen_tls.unzip();
    let listeners = Listeners {
        listen,
        listen_tls,
        listen_transparent,
        listen_transparent_http,
        admin,
    };
    let runtime = Runtime {
        mode,
        policy: Arc::new(policy),
        tls,
        dns,
        timeouts,
        limits,
        shutdown_grace,
        listen_tls: tls_server,
        transparent,
        client_ca: raw.tls.client_ca.as_ref().map(|ca| {
            (
                std::fs::read(ca).unwrap_or_default(),
                raw.tls.client_auth.as_deref() == Some("required"),
            )
        }),
        files: [&raw.tls.cert, &raw.tls.key, &raw.tls.client_ca]
            .into_iter()
            .flatten()
            .map(std::path::PathBuf::from)
            .chain(credential_files)
            .collect(),
        routes: Arc::new(routes),
        proxy_protocol,
        shadow,
        fragments: Vec::new(),
        kubernetes,
        warnings,
    };
    Ok(Settings { listeners, runtime })
}
