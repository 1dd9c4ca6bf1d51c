//! Raw configuration → runtime settings. Every value is checked and every error is collected with its key
//! path, so one `validate` run shows everything that needs fixing.

use super::own_addresses;
use super::raw::{RawClientGroup, RawConfig, RawPort, RawRule};
use super::{ConfigError, ConfigErrors};
use crate::policy::credentials::{self, GroupCredentials, User};
use crate::policy::tls::{EchMode, SniMode, TlsChecks};
use crate::policy::{
    noproxy, parse_pattern, ClientGroups, IdleOverride, Policy, PolicyBuilder, PortSet, RuleKind,
};
use crate::target::{normalize_host, Host};
use crate::vendors::{self, ParamValue};
use ipnet::IpNet;
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

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Optional listener speaking TLS to clients (`HTTPS_PROXY=https://...`), with its server configuration.
    pub listen_tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// Listeners for connections redirected with iptables REDIRECT (transparent mode).
    pub transparent: super::Transparent,
    pub mode: Mode,
    pub policy: Arc<Policy>,
    /// How the ClientHello inside CONNECT tunnels is read and judged.
    pub tls: TlsChecks,
    /// Exceptions to the special-purpose address deny list.
    pub allow_cidrs: Vec<IpNet>,
    /// Per-rule exceptions: a rule's exact hosts may reach these private addresses on its ports.
    pub own_addresses: Vec<crate::policy::own_addresses::OwnAddresses>,
    pub dns: Dns,
    pub timeouts: Timeouts,
    pub limits: Limits,
    /// Admin listener (/metrics, /healthz, /readyz); `None` when `admin.listen: off`.
    pub admin: Option<SocketAddr>,
    /// How long open connections may drain after SIGTERM/SIGINT before they are cut.
    pub shutdown_grace: Duration,
    /// Files the configuration reads besides itself (the TLS listener's certificate and key): a reload
    /// re-reads them and the configuration watcher watches them.
    pub files: Vec<std::path::PathBuf>,
    /// The TLS listener's client CA bundle as read (and whether certificates are required): connections whose
    /// certificate it verified end after their current request when a reload changes it.
    pub client_ca: Option<(Vec<u8>, bool)>,
    /// Things that work but not as a reader might expect (path rules over CONNECT); logged at startup.
    pub warnings: Vec<String>,
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

    builder.destination_exceptions(allow_cidrs.clone());
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
    let transparent = super::transparent::compile(
        raw,
        &[Some(listen), listen_tls.as_ref().map(|(a, _)| *a), admin],
        &mut warnings,
    )
    .unwrap_or_else(|e| {
        errs.0.extend(e);
        super::Transparent::default()
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

    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    Ok(Settings {
        listen,
        listen_tls,
        transparent,
        mode,
        policy: Arc::new(policy),
        tls,
        allow_cidrs,
        own_addresses,
        dns,
        timeouts,
        limits,
        admin,
        shutdown_grace,
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
        warnings,
    })
}

/// The credentials of one client group, from the config and its files (added to `files` for reloads).
fn compile_credentials(
    g: &RawClientGroup,
    at: &str,
    errs: &mut Errors,
    files: &mut Vec<std::path::PathBuf>,
) -> GroupCredentials {
    let mut creds = GroupCredentials::default();
    let mut user = |path: String, name: &str, phc: &str| match credentials::check_phc(phc) {
        Ok(()) if !name.is_empty() && !name.contains(':') => creds.users.push(User {
            name: name.to_string(),
            phc: phc.to_string(),
        }),
        Ok(()) => errs.push(
            path,
            format!("{name:?} is not a user name (non-empty, no ':')"),
        ),
        // The hash is not a secret, but it is not repeated either: the error says what is wrong with it.
        Err(m) => errs.push(path, format!("the argon2 hash of user {name:?}: {m}")),
    };
    for (j, u) in g.users.iter().enumerate() {
        user(format!("{at}.users[{j}]"), &u.user, &u.argon2);
    }
    if let Some(path) = &g.users_file {
        files.push(path.into());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (name, phc) = line.split_once(':').unwrap_or((line, ""));
                    user(
                        format!("{at}.users_file ({path} line {})", n + 1),
                        name,
                        phc,
                    );
                }
            }
            Err(e) => errs.push(
                format!("{at}.users_file"),
                format!("cannot read {path}: {e}"),
            ),
        }
    }
    for (j, t) in g.token_sha256.iter().enumerate() {
        match credentials::parse_sha256_hex(t) {
            Some(d) => creds.token_sha256.push(d),
            None => errs.push(
                format!("{at}.token_sha256[{j}]"),
                "not a SHA-256 digest in hex (64 digits, e.g. from `printf %s TOKEN | sha256sum`)",
            ),
        }
    }
    if let Some(path) = &g.tokens_file {
        files.push(path.into());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines().map(str::trim) {
                    if !line.is_empty() && !line.starts_with('#') {
                        creds
                            .token_sha256
                            .push(Sha256::digest(line.as_bytes()).into());
                    }
                }
            }
            Err(e) => errs.push(
                format!("{at}.tokens_file"),
                format!("cannot read {path}: {e}"),
            ),
        }
    }
    creds
}

/// The top-level `clients:` groups: unique names, each with source CIDRs or credentials.
fn compile_clients(
    raw: &RawConfig,
    errs: &mut Errors,
    files: &mut Vec<std::path::PathBuf>,
) -> ClientGroups {
    let mut groups = ClientGroups::default();
    for (i, g) in raw.clients.iter().enumerate() {
        let at = format!("clients[{i}]");
        let name = g.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errs.push(
                format!("{at}.name"),
                format!(
                    "{:?} is not a group name (letters, digits, '-', '_', '.')",
                    g.name
                ),
            );
            continue;
        }
        if groups.find(name).is_some() {
            errs.push(format!("{at}.name"), format!("{name:?} is defined twice"));
            continue;
        }
        let creds = compile_credentials(g, &at, errs, files);
        if g.cidrs.is_empty()
            && g.certs.is_empty()
            && g.users.is_empty()
            && g.users_file.is_none()
            && g.token_sha256.is_empty()
            && g.tokens_file.is_none()
        {
            errs.push(
                format!("{at}.cidrs"),
                "give the source addresses of the group's clients, e.g. [\"10.42.0.0/16\"], or its \
                 credentials (certs, users, users_file, token_sha256, tokens_file)",
            );
        }
        let cidrs = g
            .cidrs
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        errs.push(
                            format!("{at}.cidrs[{j}]"),
                            format!("{c:?} is not a CIDR or IP address"),
                        )
                    })
                    .ok()
            })
            .collect();
        for (j, c) in g.certs.iter().enumerate() {
            if c.is_empty()
                || c == "*"
                || (c.contains('*') && !c.ends_with('*'))
                || c[..c.len() - 1].contains('*')
            {
                errs.push(
                    format!("{at}.certs[{j}]"),
                    format!("{c:?}: give a URI SAN, dns:NAME or cn:NAME; only a trailing * is a wildcard"),
                );
            }
        }
        if !g.certs.is_empty() && raw.tls.client_ca.is_none() {
            errs.push(
                format!("{at}.certs"),
                "certificate names need tls.client_ca (and listen_tls)",
            );
        }
        let creds = GroupCredentials {
            certs: g.certs.clone(),
            ..creds
        };
        let id = groups.add_with_credentials(name, cidrs, creds);
        match g.mode.as_deref() {
            None | Some("enforce") => {}
            Some("report") => groups.set_report(id),
            Some(other) => errs.push(
                format!("{at}.mode"),
                format!("{other:?} is not one of: enforce, report"),
            ),
        }
    }
    if raw.require_identity == Some(true) && groups.is_empty() {
        errs.push(
            "require_identity",
            "every client would be refused: define client groups under `clients:`",
        );
    }
    groups
}

/// The admin listener, which must not share a port with the proxy listeners (`proxy`): the same port on
/// the same address, or on any address when either side is a wildcard (0.0.0.0, [::]).
fn compile_admin(raw: &RawConfig, proxy: &[SocketAddr], errs: &mut Errors) -> Option<SocketAddr> {
    let text = raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    if text == "off" {
        return None;
    }
    match text.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 && proxy.iter().any(|p| super::transparent::overlaps(*p, a)) => {
            errs.push(
                "admin.listen",
                format!("{a} shares its port with a proxy listener; the admin endpoints need their own port"),
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                "admin.listen",
                format!("{text:?} is not an address:port such as 127.0.0.1:9090 (or \"off\")"),
            );
            None
        }
    }
}

/// Expand the selected vendor profiles into allow rules (`<profile>/<entry>`), minus `vendors_disable`. Each
/// comes with the key path its errors are reported at.
fn vendor_rules(raw: &RawConfig, errs: &mut Errors) -> Vec<(String, RawRule)> {
    let mut out = Vec::new();
    let mut selected = HashSet::new();
    for (i, item) in raw.vendors.iter().enumerate() {
        let at = format!("vendors[{i}]");
        let (name, params, mode, clients, private_cidrs) = match vendor_item(item) {
            Ok(v) => v,
            Err(m) => {
                errs.push(at, m);
                continue;
            }
        };
        let Some(profile) = vendors::find(&name) else {
            errs.push(
                at,
                format!(
                    "{name:?} is not a vendor profile; available: {} (see `egressd vendors`)",
                    vendors::names().join(", ")
                ),
            );
            continue;
        };
        if !selected.insert(name.clone()) {
            errs.push(at, format!("{name:?} is listed twice"));
            continue;
        }
        match profile.expand(&params) {
            Ok(endpoints) => {
                for e in endpoints {
                    let path = format!("{at}({})", e.rule);
                    // The vendor's own endpoints are the entries made from parameters.
                    let own = own_addresses::is_param_entry(profile, &e.rule);
                    out.push((
                        path,
                        RawRule {
                            name: e.rule,
                            hosts: e.hosts,
                            no_proxy: None,
                            ports: e
                                .ports
                                .into_iter()
                                .map(|p| RawPort::Number(p.into()))
                                .collect(),
                            paths: e.paths,
                            idle_timeout: e.idle_timeout,
                            tls: None,
                            mode: mode.clone(),
                            clients: clients.clone(),
                            broad_hosts: None,
                            private_cidrs: if own {
                                private_cidrs.clone()
                            } else {
                                Vec::new()
                            },
                        },
                    ));
                }
            }
            Err(list) => {
                for e in list {
                    errs.push(format!("{at}.params"), e.0);
                }
            }
        }
    }
    for (i, name) in raw.vendors_disable.iter().enumerate() {
        let before = out.len();
        out.retain(|(_, r)| &r.name != name);
        if out.len() == before {
            errs.push(
                format!("vendors_disable[{i}]"),
                format!(
                    "{name:?} is not a rule of the selected vendor profiles (names look like castai-us/helm; \
                     `egressd vendors show NAME` lists them)"
                ),
            );
        }
    }
    out
}

/// A deny rule scoped only to client groups that identify their members by certificate or credentials does
/// not apply to a client that presents neither: it can leave the certificate out (`client_auth: optional`),
/// use the plain listener, or send no Proxy-Authorization, and so escape the rule. Only a group's `cidrs`
/// cannot be opted out of.
fn opt_out_deny_warnings(raw: &RawConfig) -> Vec<String> {
    raw.deny
        .iter()
        .filter(|r| !r.clients.is_empty())
        .filter(|r| {
            r.clients.iter().all(|name| {
                raw.clients
                    .iter()
                    .find(|g| &g.name == name)
                    .is_some_and(|g| g.cidrs.is_empty())
            })
        })
        .map(|r| {
            format!(
                "deny rule {}: scoped to client groups [{}] that are identified only by certificate or \
                 credentials; a client that presents neither (no client certificate with client_auth: optional, \
                 the plain listener, no Proxy-Authorization) is in no group and the rule does not apply to it. \
                 Give the groups cidrs, or drop clients: from the rule",
                r.name,
                r.clients.join(", ")
            )
        })
        .collect()
}

/// A profile's name, parameters, `mode`, `clients` (for its rules) and `private_cidrs` (for the rules of its
/// parameter entries), from one `vendors:` item.
type VendorItem = (
    String,
    BTreeMap<String, ParamValue>,
    Option<String>,
    Vec<String>,
    Vec<String>,
);

/// One `vendors:` item: a profile name, or
/// `{name: ..., mode: report, clients: [group], params: {key: value or [values]}}`.
fn vendor_item(item: &serde_json::Value) -> Result<VendorItem, String> {
    use serde_json::Value;
    match item {
        Value::String(name) => Ok((name.clone(), BTreeMap::new(), None, Vec::new(), Vec::new())),
        Value::Object(map) => {
            if let Some(k) = map.keys().find(|k| {
                !matches!(
                    k.as_str(),
                    "name" | "params" | "mode" | "clients" | "private_cidrs"
                )
            }) {
                return Err(format!(
                    "unknown key {k:?}; an item has `name`, `params`, `mode`, `clients` and `private_cidrs`"
                ));
            }
            let strings = |key: &str, what: &str| -> Result<Vec<String>, String> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => Ok(s.clone()),
                            other => Err(format!("{key}: {other} is not a {what}")),
                        })
                        .collect(),
                    Some(other) => Err(format!("{key}: {other} is not a list of {what}s")),
                }
            };
            let clients = strings("clients", "client group name")?;
            let private_cidrs = strings("private_cidrs", "CIDR")?;
            let mode = match map.get("mode") {
                None | Some(Value::Null) => None,
                Some(Value::String(m)) if m == "enforce" || m == "report" => Some(m.clone()),
                Some(other) => return Err(format!("mode: {other} is not one of: enforce, report")),
            };
            let name = match map.get("name") {
                Some(Value::String(n)) => n.clone(),
                _ => {
                    return Err(
                        "give the profile `name`, e.g. {name: cloudcasa, params: {...}}".into(),
                    )
                }
            };
            let mut params = BTreeMap::new();
            match map.get("params") {
                None | Some(Value::Null) => {}
                Some(Value::Object(ps)) => {
                    for (k, v) in ps {
                        let value = match v {
                            Value::String(s) => ParamValue::One(s.clone()),
                            Value::Array(items) => ParamValue::Many(
                                items
                                    .iter()
                                    .map(|x| match x {
                                        Value::String(s) => Ok(s.clone()),
                                        other => {
                                            Err(format!("params.{k}: {other} is not a string"))
                                        }
                                    })
                                    .collect::<Result<_, _>>()?,
                            ),
                            other => {
                                return Err(format!(
                                    "params.{k}: {other} is neither a string nor a list of strings"
                                ))
                            }
                        };
                        params.insert(k.clone(), value);
                    }
                }
                Some(other) => return Err(format!("params: {other} is not a map")),
            }
            Ok((name, params, mode, clients, private_cidrs))
        }
        other => Err(format!(
            "{other} is neither a profile name nor {{name: ..., params: {{...}}}}"
        )),
    }
}

/// `idle_timeout`: `"none"` (never cut for idleness) or a positive duration.
fn parse_idle(text: &str) -> Result<IdleOverride, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(IdleOverride::Never);
    }
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(IdleOverride::After(d)),
        Ok(_) => Err(format!("{text:?} must be greater than zero (or \"none\")")),
        Err(e) => Err(format!(
            "{text:?} is not a duration such as 15m or 2h, or \"none\" ({e})"
        )),
    }
}

fn compile_rule(
    builder: &mut PolicyBuilder,
    errs: &mut Errors,
    seen: &mut HashSet<String>,
    path: &str,
    kind: RuleKind,
    rule: &RawRule,
) {
    if rule.name.trim().is_empty() {
        errs.push(format!("{path}.name"), "a rule needs a non-empty name");
    } else if !seen.insert(rule.name.clone()) {
        errs.push(
            format!("{path}.name"),
            format!("{:?} is used by another rule", rule.name),
        );
    }
    // Allow rules default to 443 (what the agents use); deny rules default to every port so a deny of a
    // host cannot be sidestepped on another port.
    let ports = if rule.ports.is_empty() {
        match kind {
            RuleKind::Allow => PortSet::from_ranges(vec![443..=443]),
            RuleKind::Deny => PortSet::any(),
        }
    } else {
        PortSet::from_ranges(
            rule.ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    parse_port(p)
                        .map_err(|m| errs.push(format!("{path}.ports[{i}]"), m))
                        .ok()
                })
                .collect(),
        )
    };
    let id = builder.rule(&rule.name, kind, ports.clone());
    if rule.broad_hosts.is_some() && kind == RuleKind::Deny {
        errs.push(
            format!("{path}.broad_hosts"),
            "`broad_hosts` applies to allow rules only (a deny rule may be as broad as it likes)",
        );
    }
    if let Some(tls) = rule.tls {
        if kind == RuleKind::Deny {
            errs.push(format!("{path}.tls"), "`tls` applies to allow rules only");
        }
        builder.set_tls(id, tls);
    }
    if !rule.paths.is_empty() {
        if kind == RuleKind::Deny {
            errs.push(
                format!("{path}.paths"),
                "paths apply only to allow rules (a deny rule covers the whole host)",
            );
        }
        for (j, p) in rule.paths.iter().enumerate() {
            if !p.starts_with('/') || p.contains(['?', '#']) {
                errs.push(
                    format!("{path}.paths[{j}]"),
                    format!(
                        "{p:?} must be a path prefix starting with / (no query), e.g. \"/bucket/\""
                    ),
                );
            }
        }
        builder.rule_paths(id, &rule.paths);
    }
    let mut groups = Vec::new();
    for (j, c) in rule.clients.iter().enumerate() {
        match builder.client_group(c) {
            Some(g) => groups.push(g),
            None => errs.push(
                format!("{path}.clients[{j}]"),
                format!("{c:?} is not a client group; define it under the top-level `clients:`"),
            ),
        }
    }
    if !groups.is_empty() {
        builder.rule_clients(id, groups);
    }
    match rule.mode.as_deref() {
        None | Some("enforce") => {}
        Some("report") => builder.rule_report(id),
        Some(other) => errs.push(
            format!("{path}.mode"),
            format!("{other:?} is not one of: enforce, report"),
        ),
    }
    if let Some(text) = &rule.idle_timeout {
        match parse_idle(text) {
            Ok(idle) => builder.rule_idle(id, idle),
            Err(m) => errs.push(format!("{path}.idle_timeout"), m),
        }
    }
    match (&rule.no_proxy, rule.hosts.is_empty()) {
        (Some(_), false) => errs.push(
            path,
            "give either `hosts` or `no_proxy`, not both (split them into two rules)",
        ),
        (None, true) => errs.push(
            format!("{path}.hosts"),
            "a rule needs at least one host pattern",
        ),
        (Some(list), true) => {
            let parsed = noproxy::parse(list);
            for ig in &parsed.ignored {
                errs.push(
                    format!("{path}.no_proxy"),
                    format!("entry {:?} can never match: {}", ig.entry, ig.why),
                );
            }
            for e in &parsed.entries {
                if matches!(e, noproxy::Entry::Any) {
                    errs.push(
                        format!("{path}.no_proxy"),
                        "\"*\" would match every destination; list the hosts instead",
                    );
                }
                let pinned = match e {
                    noproxy::Entry::Ip { port, .. } | noproxy::Entry::Domain { port, .. } => *port,
                    _ => None,
                };
                if let Some(p) = pinned.filter(|p| !ports.contains(*p)) {
                    errs.push(
                        format!("{path}.no_proxy"),
                        format!(
                            "an entry pinned to port {p} can never match: add {p} to the rule's `ports` \
                             (allow rules default to 443)"
                        ),
                    );
                }
                if let noproxy::Entry::Domain {
                    name, include_apex, ..
                } = e
                {
                    let p = crate::policy::Pattern::Suffix {
                        name: name.clone(),
                        include_apex: *include_apex,
                    };
                    if let Some(why) = broad(kind, rule, &p, path) {
                        errs.push(format!("{path}.no_proxy"), why);
                    }
                }
                builder.no_proxy_entry(id, e);
            }
            if parsed.entries.is_empty() && parsed.ignored.is_empty() {
                errs.push(format!("{path}.no_proxy"), "the list is empty");
            }
        }
        (None, false) => {
            for (j, h) in rule.hosts.iter().enumerate() {
                let at = format!("{path}.hosts[{j}]");
                match parse_pattern(h) {
                    Ok(p) => {
                        if let Some(why) = broad(kind, rule, &p, path) {
                            errs.push(at.clone(), why);
                        }
                        if let Err(m) = builder.pattern(id, &p) {
                            errs.push(at, m);
                        }
                    }
                    Err(m) => errs.push(at, m),
                }
            }
        }
    }
}

/// Why an allow rule's pattern is refused for reaching beyond one registrable domain, unless the rule sets
/// `broad_hosts: true`. Deny rules may be as broad as they like.
fn broad(kind: RuleKind, rule: &RawRule, p: &crate::policy::Pattern, path: &str) -> Option<String> {
    if kind == RuleKind::Deny || rule.broad_hosts == Some(true) {
        return None;
    }
    let why = crate::policy::pattern::breadth(p)?;
    Some(if path.starts_with("vendors") {
        format!(
            "{why}; a profile parameter cannot opt in: if this is meant, allow it in a local rule with \
             `broad_hosts: true`"
        )
    } else {
        format!("{why}; if the rule means it, set `broad_hosts: true` on the rule")
    })
}

/// A rule's ports as compile_rule reads them (errors are reported there).
fn rule_ports(rule: &RawRule) -> PortSet {
    if rule.ports.is_empty() {
        return PortSet::from_ranges(vec![443..=443]);
    }
    PortSet::from_ranges(
        rule.ports
            .iter()
            .filter_map(|p| parse_port(p).ok())
            .collect(),
    )
}

fn parse_port(p: &RawPort) -> Result<std::ops::RangeInclusive<u16>, String> {
    let one = |n: i64| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| format!("{n} is not a port (1-65535)"))
    };
    match p {
        RawPort::Number(n) => one(*n).map(|n| n..=n),
        RawPort::Text(t) => {
            let num = |s: &str| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{t:?} is not a port or a range such as \"8000-8100\""))
                    .and_then(one)
            };
            match t.split_once('-') {
                None => num(t).map(|n| n..=n),
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("{t:?}: the range starts after it ends"));
                    }
                    Ok(a..=b)
                }
            }
        }
    }
}

fn compile_tls_listener(
    raw: &RawConfig,
    listen: SocketAddr,
    errs: &mut Errors,
) -> Option<(SocketAddr, Arc<rustls::ServerConfig>)> {
    let (cert, key) = (raw.tls.cert.as_deref(), raw.tls.key.as_deref());
    let Some(addr_text) = raw.listen_tls.as_deref() else {
        if cert.is_some() || key.is_some() {
            errs.push(
                "tls",
                "tls.cert and tls.key are only used with listen_tls; set listen_tls too",
            );
        }
        if raw.tls.client_ca.is_some() || raw.tls.client_auth.is_some() {
            errs.push(
                "tls.client_ca",
                "client certificates are asked for on listen_tls only; set listen_tls too",
            );
        }
        return None;
    };
    let addr = addr_text
        .parse::<SocketAddr>()
        .map_err(|_| {
            errs.push(
                "listen_tls",
                format!("{addr_text:?} is not an address:port such as 0.0.0.0:3129"),
            )
        })
        .ok();
    if let Some(a) = addr.filter(|a| a.port() != 0 && super::transparent::overlaps(*a, listen)) {
        errs.push(
            "listen_tls",
            format!(
                "{a} shares its port with listen ({listen}); give the TLS listener its own port"
            ),
        );
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        errs.push("tls", "listen_tls needs tls.cert and tls.key (PEM files)");
        return None;
    };
    let required = match raw.tls.client_auth.as_deref() {
        None | Some("optional") => false,
        Some("required") => true,
        Some(other) => {
            errs.push(
                "tls.client_auth",
                format!("{other:?} is not one of: optional, required"),
            );
            false
        }
    };
    if raw.tls.client_auth.is_some() && raw.tls.client_ca.is_none() {
        errs.push(
            "tls.client_auth",
            "client certificates need tls.client_ca (the CA bundle that issues them)",
        );
    }
    let client_auth = raw
        .tls
        .client_ca
        .as_deref()
        .map(|ca| (std::path::Path::new(ca), required));
    match crate::tls_files::server_config(
        std::path::Path::new(cert),
        std::path::Path::new(key),
        client_auth,
    ) {
        Ok(cfg) => addr.map(|a| (a, cfg)),
        Err((which, msg)) => {
            errs.push(format!("tls.{which}"), msg);
            None
        }
    }
}

fn compile_dns(raw: &RawConfig, errs: &mut Errors) -> Dns {
    let mut hosts = HashMap::new();
    for (name, addrs) in &raw.dns.hosts {
        let path = format!("dns.hosts.{name:?}");
        let key = match normalize_host(name) {
            Ok(Host::Name(n)) => n,
            Ok(Host::Ip(_)) => {
                errs.push(&path, "the key must be a hostname, not an IP address");
                continue;
            }
            Err(e) => {
                errs.push(&path, e.to_string());
                continue;
            }
        };
        if addrs.is_empty() {
            errs.push(&path, "give at least one address");
        }
        let parsed: Vec<IpAddr> = addrs
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.parse::<IpAddr>()
                    .map_err(|_| {
                        errs.push(
                            format!("{path}[{i}]"),
                            format!("{a:?} is not an IP address"),
                        )
                    })
                    .ok()
            })
            .collect();
        hosts.insert(key, parsed);
    }
    // The hosts file fills in names `dns.hosts` does not list. The default path may be missing (a host
    // without one); a path the configuration names must be readable.
    let (path, named) = match raw.dns.hosts_file.as_deref() {
        Some("off") => (None, true),
        Some(p) => (Some(p), true),
        None => (Some(super::hosts_file::DEFAULT_PATH), false),
    };
    if let Some(path) = path {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (name, addrs) in super::hosts_file::parse(&text) {
                    hosts.entry(name).or_insert(addrs);
                }
            }
            Err(e) if named || e.kind() != std::io::ErrorKind::NotFound => errs.push(
                "dns.hosts_file",
                format!("cannot read {path}: {e} (write \"off\" to read no hosts file)"),
            ),
            Err(_) => {}
        }
    }
    let servers = raw
        .dns
        .servers
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    errs.push(
                        format!("dns.servers[{i}]"),
                        format!("{s:?} is not an IP address or address:port"),
                    )
                })
                .ok()
        })
        .collect();
    Dns {
        hosts,
        servers,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{from_yaml_str, DEFAULT_CONFIG};
    use crate::reason::Reason;

    #[test]
    fn embedded_default_compiles() {
        let s = from_yaml_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:3128");
        assert!(s.policy.rule_count() > 0);
    }

    #[test]
    fn a_no_proxy_port_pin_must_be_one_of_the_rule_ports() {
        let rule = |ports: &str| {
            from_yaml_str(&format!(
                "allow:\n  - name: internal\n    no_proxy: \"api.internal:8443,10.0.0.0/8\"\n{ports}"
            ))
        };
        let err = rule("").unwrap_err().to_string();
        assert!(
            err.contains("allow[0].no_proxy") && err.contains("pinned to port 8443"),
            "{err}"
        );
        assert!(rule("    ports: [443, 8443]\n").is_ok());
    }

    #[test]
    fn every_error_reported_with_its_path() {
        let yaml = r#"
listen: "nowhere"
mode: loud
allow:
  - name: a
    hosts: ["api.cast.ai:443", "10.0.0.0/40"]
    ports: [0, "9-1", 70000]
  - name: a
    hosts: []
  - name: b
    no_proxy: "*,192.168.0.0/16a"
destinations:
  allow_cidrs: ["10.0.0.0/8", "nope"]
dns:
  hosts:
    api.cast.ai: ["127.0.0.1", "localhost"]
  servers: ["x"]
timeouts: {header: 10q, connect: 0s}
limits: {max_connections: 0, max_connections_per_client: 0, max_header_bytes: 10}
"#;
        let errs = from_yaml_str(yaml).unwrap_err().0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "listen",
            "mode",
            "allow[0].hosts[0]",
            "allow[0].hosts[1]",
            "allow[0].ports[0]",
            "allow[0].ports[1]",
            "allow[0].ports[2]",
            "allow[1].name",
            "allow[1].hosts",
            "allow[2].no_proxy",
            "destinations.allow_cidrs[1]",
            "dns.hosts.\"api.cast.ai\"[1]",
            "dns.servers[0]",
            "timeouts.header",
            "timeouts.connect",
            "limits.max_connections",
            "limits.max_connections_per_client",
            "limits.max_header_bytes",
        ] {
            assert!(
                paths.contains(&want),
                "missing error at {want}; got {paths:?}"
            );
        }
        // The offending value is quoted in the message.
        assert!(
            errs.iter().any(|e| e.message.contains("\"nope\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_keys_rejected() {
        let err = from_yaml_str("allow: []\nlisten_addr: 1.2.3.4:5\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err =
            from_yaml_str("allow:\n  - name: x\n    hosts: [a.b]\n    port: [1]\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn defaults() {
        let s = from_yaml_str("allow: []").unwrap();
        assert_eq!(s.timeouts.header.as_secs(), 10);
        assert_eq!(s.timeouts.connect.as_secs(), 10);
        assert_eq!(s.timeouts.idle.as_secs(), 900);
        assert_eq!(s.timeouts.dns.as_secs(), 5);
        assert_eq!(s.limits.max_connections, 10_000);
        assert_eq!(s.limits.max_connections_per_client, 1000);
        assert_eq!(s.limits.max_header_bytes, 32768);
        assert_eq!(s.mode, super::Mode::Enforce);
        assert_eq!(s.admin, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(s.shutdown_grace.as_secs(), 30);
    }

    #[test]
    fn admin_listener_and_grace() {
        let s = from_yaml_str("admin: {listen: off}\nshutdown: {grace: 5s}\n").unwrap();
        assert_eq!(s.admin, None);
        assert_eq!(s.shutdown_grace.as_secs(), 5);
        let err =
            from_yaml_str("listen: 127.0.0.1:3128\nadmin: {listen: 127.0.0.1:3128}\n").unwrap_err();
        assert!(err.to_string().contains("admin.listen"), "{err}");
        // A wildcard address takes the port on every address of its family, so these collide too.
        for (proxy, admin) in [
            ("127.0.0.1:3128", "0.0.0.0:3128"),
            ("[::]:3128", "127.0.0.1:3128"),
        ] {
            let err = from_yaml_str(&format!(
                "listen: \"{proxy}\"\nadmin: {{listen: \"{admin}\"}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("admin.listen") && err.contains("shares its port"),
                "{err}"
            );
        }
        let err = from_yaml_str("listen: 127.0.0.1:3128\nlisten_tls: \"0.0.0.0:3128\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen_tls: 0.0.0.0:3128 shares its port with listen"),
            "{err}"
        );
        let ok = from_yaml_str("listen: 127.0.0.1:3128\nadmin: {listen: \"127.0.0.2:3128\"}\n");
        assert!(ok.is_ok(), "different addresses may share a port number");
        let err = from_yaml_str("admin: {listen: nine}\nshutdown: {grace: 0s}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin.listen") && err.contains("shutdown.grace"),
            "{err}"
        );
    }

    #[test]
    fn rule_and_profile_mode() {
        let s = from_yaml_str(
            "deny:\n  - name: trial\n    hosts: [\"a.test\"]\n    mode: report\n\
             allow:\n  - name: a\n    hosts: [\"a.test\"]\n\
             vendors: [{name: castai-us, mode: report}]\n",
        )
        .unwrap();
        let d = decide(&s, "a.test:443");
        assert!(d.report && !d.allowed, "{d:?}");
        assert_eq!(d.rule.as_deref(), Some("trial"));
        let d = decide(&s, "api.cast.ai:8443");
        assert!(d.report, "{d:?}");
        assert_eq!(d.rule.as_deref(), Some("castai-us/api"));
        let err = from_yaml_str(
            "allow:\n  - name: a\n    hosts: [\"a.test\"]\n    mode: audit\n\
             vendors: [{name: castai-us, mode: loud}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("allow[0].mode"), "{err}");
        assert!(err.contains("vendors[0]") && err.contains("loud"), "{err}");
    }

    #[test]
    fn rules_and_profiles_scoped_to_client_groups() {
        let s = from_yaml_str(
            r#"
clients:
  - {name: castai-agents, cidrs: ["10.1.0.0/16"]}
  - {name: cloudcasa-agents, cidrs: ["10.2.0.0/16", "10.9.9.9"]}
vendors:
  - {name: castai-us, clients: [castai-agents]}
allow:
  - name: shared
    hosts: [shared.example]
deny:
  - name: no-shared-for-cloudcasa
    hosts: [shared.example]
    clients: [cloudcasa-agents]
"#,
        )
        .unwrap();
        let as_client = |ip: &str, authority: &str| {
            let id = s.policy.clients.identify(ip.parse().unwrap());
            let t = crate::target::parse_authority(authority, None).unwrap();
            s.policy.decide_request(&t, None, &id)
        };
        assert!(as_client("10.1.0.5", "api.cast.ai:443").allowed);
        let d = as_client("10.2.0.5", "api.cast.ai:443");
        assert_eq!((d.allowed, d.reason), (false, Reason::DeniedNoRule));
        assert!(!as_client("192.0.2.1", "api.cast.ai:443").allowed);
        assert!(as_client("10.1.0.5", "shared.example:443").allowed);
        assert!(as_client("192.0.2.1", "shared.example:443").allowed);
        let d = as_client("10.9.9.9", "shared.example:443");
        assert_eq!(d.rule.as_deref(), Some("no-shared-for-cloudcasa"));
        assert!(!d.allowed);
    }

    #[test]
    fn require_identity_refuses_unidentified_clients() {
        let s = from_yaml_str(
            "clients: [{name: a, cidrs: [\"127.0.0.2/32\"]}]\nrequire_identity: true\n\
             allow: [{name: open, hosts: [open.example]}]\n",
        )
        .unwrap();
        let id = s.policy.clients.identify("127.0.0.2".parse().unwrap());
        let t = crate::target::parse_authority("open.example:443", None).unwrap();
        assert!(s.policy.decide_request(&t, None, &id).allowed);
        let d = s.policy.decide(&t);
        assert_eq!((d.allowed, d.reason), (false, Reason::DeniedNoIdentity));
    }

    #[test]
    fn client_group_errors_name_the_key() {
        let err = from_yaml_str(
            r#"
require_identity: true
clients:
  - {name: "bad name", cidrs: ["10.0.0.0/8"]}
  - {name: a, cidrs: ["10.0.0.0/33"]}
  - {name: a, cidrs: ["10.0.0.0/8"]}
  - {name: b}
  - {name: c, certs: ["spiffe://a/*/b"], users: [{user: bob, argon2: "plain"}], token_sha256: ["12"]}
tls: {client_auth: sometimes}
allow:
  - {name: r, hosts: [x.example], clients: [nosuch]}
vendors:
  - {name: castai-us, clients: [7]}
"#,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "clients[0].name",
            "clients[1].cidrs[0]",
            "clients[2].name: \"a\" is defined twice",
            "clients[3].cidrs",
            "clients[4].certs[0]",
            "clients[4].certs: certificate names need tls.client_ca",
            "clients[4].users[0]: the argon2 hash of user \"bob\"",
            "clients[4].token_sha256[0]",
            "tls.client_ca: client certificates are asked for on listen_tls only",
            "allow[0].clients[0]: \"nosuch\" is not a client group",
            "vendors[0]: clients: 7",
        ] {
            assert!(err.contains(want), "missing {want:?} in\n{err}");
        }
        let err = from_yaml_str("require_identity: true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("require_identity"), "{err}");
    }

    #[test]
    fn dotted_host_keys_survive() {
        let s =
            from_yaml_str("dns:\n  hosts:\n    API.cast.ai: [\"127.0.0.1\", \"::1\"]\n").unwrap();
        assert_eq!(s.dns.hosts["api.cast.ai"].len(), 2);
    }

    fn decide(s: &super::Settings, authority: &str) -> crate::policy::Decision {
        s.policy
            .decide(&crate::target::parse_authority(authority, None).unwrap())
    }

    #[test]
    fn vendor_profiles_become_named_rules() {
        let s = from_yaml_str(
            "vendors:\n  - castai-us\n  - name: cloudcasa\n    params:\n      storage: [\"s3.us-east-1.amazonaws.com\"]\n",
        )
        .unwrap();
        let rule = |a: &str| decide(&s, a).rule.map(|r| r.to_string());
        assert_eq!(rule("api.cast.ai:443").as_deref(), Some("castai-us/api"));
        assert_eq!(rule("grpc.cast.ai:443").as_deref(), Some("castai-us/grpc"));
        assert_eq!(
            rule("agent.cloudcasa.io:443").as_deref(),
            Some("cloudcasa/agent")
        );
        assert_eq!(
            rule("s3.us-east-1.amazonaws.com:443").as_deref(),
            Some("cloudcasa/storage")
        );
        assert_eq!(
            decide(&s, "grpc.cast.ai:443").idle,
            Some(crate::policy::IdleOverride::Never)
        );
        assert_eq!(decide(&s, "api.cast.ai:443").idle, None);
        // The storage paths are enforced for plain HTTP only, and that is said at startup.
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("castai-us/node-components"));
        assert!(s.warnings[0].contains("TLS interception"));
    }

    #[test]
    fn a_deny_rule_only_credentialed_clients_are_in_is_warned_about() {
        let token = "0".repeat(64);
        let s = from_yaml_str(&format!(
            r#"
clients:
  - {{name: tokens, token_sha256: ["{token}"]}}
  - {{name: nodes, cidrs: ["10.0.0.0/8"]}}
deny:
  - {{name: escapable, hosts: [a.example], clients: [tokens]}}
  - {{name: bound, hosts: [b.example], clients: [tokens, nodes]}}
  - {{name: everyone, hosts: [c.example]}}
"#
        ))
        .unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].starts_with("deny rule escapable:"),
            "{:?}",
            s.warnings
        );
        assert!(s.warnings[0].contains("[tokens]"));
    }

    #[test]
    fn local_rules_extend_and_override_profiles() {
        let s = from_yaml_str(
            r#"
vendors: [castai-us]
vendors_disable: ["castai-us/helm"]
allow:
  - name: castai-api-long
    hosts: [api.cast.ai]
    idle_timeout: 2h
  - name: extra
    hosts: [extra.example]
deny:
  - name: no-kvisor
    hosts: [api-grpc.cast.ai]
"#,
        )
        .unwrap();
        let d = decide(&s, "api.cast.ai:443");
        assert_eq!(d.rule.as_deref(), Some("castai-api-long"));
        assert_eq!(
            d.idle,
            Some(crate::policy::IdleOverride::After(
                std::time::Duration::from_secs(7200)
            ))
        );
        assert!(decide(&s, "extra.example:443").allowed);
        assert!(!decide(&s, "castai.github.io:443").allowed, "disabled");
        let d = decide(&s, "api-grpc.cast.ai:443");
        assert_eq!((d.allowed, d.rule.as_deref()), (false, Some("no-kvisor")));
        assert!(decide(&s, "kvisor.prod-master.cast.ai:443").allowed);
    }

    #[test]
    fn vendor_errors_name_the_profile_and_parameter() {
        let errs = from_yaml_str(
            r#"
vendors:
  - castai-us
  - cloudcasa
  - nosuch
  - castai-us
  - {name: cloudcasa-self-hosted, params: {storage: []}, extra: 1}
  - {name: cloudcasa-ui, params: {storage: [a]}}
  - 42
vendors_disable: ["castai-us/nope"]
allow:
  - name: p
    hosts: [h.example]
    paths: ["nope", "/ok/"]
    idle_timeout: 0s
  - name: q
    hosts: [h.example]
    idle_timeout: soonish
deny:
  - name: d
    hosts: [h.example]
    paths: ["/x/"]
"#,
        )
        .unwrap_err()
        .0;
        let text: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        let all = text.join("\n");
        for want in [
            "vendors[1].params: vendor profile cloudcasa needs parameter \"storage\"",
            "vendors[2]: \"nosuch\" is not a vendor profile; available: castai-us",
            "vendors[3]: \"castai-us\" is listed twice",
            "vendors[4]: unknown key \"extra\"",
            "vendors[5].params: vendor profile cloudcasa-ui has no parameter \"storage\"",
            "vendors[6]: 42 is neither",
            "vendors_disable[0]: \"castai-us/nope\"",
            "allow[0].paths[0]: \"nope\" must be a path prefix",
            "allow[0].idle_timeout: \"0s\" must be greater than zero",
            "allow[1].idle_timeout: \"soonish\" is not a duration",
            "deny[0].paths: paths apply only to allow rules",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn self_hosted_needs_its_server_and_has_no_saas_endpoints() {
        let errs =
            from_yaml_str("vendors:\n  - {name: cloudcasa-self-hosted, params: {storage: []}}\n")
                .unwrap_err();
        assert!(
            errs.to_string().contains("needs parameter \"server\""),
            "{errs}"
        );
        let s = from_yaml_str(
            "vendors:\n  - {name: cloudcasa-self-hosted, params: {server: cc.example.internal, storage: [minio.example.internal]}}\n",
        )
        .unwrap();
        assert_eq!(
            decide(&s, "cc.example.internal:443").rule.as_deref(),
            Some("cloudcasa-self-hosted/server")
        );
        assert!(decide(&s, "minio.example.internal:443").allowed);
        assert!(!decide(&s, "agent.cloudcasa.io:443").allowed);
        assert!(!decide(&s, "api.cloudcasa.io:443").allowed);
    }
}
