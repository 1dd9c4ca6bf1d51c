//! Raw configuration → runtime settings. Every value is checked and every error is collected with its key
//! path, so one `validate` run shows everything that needs fixing.

use super::raw::{RawConfig, RawPort, RawRule};
use super::{ConfigError, ConfigErrors};
use crate::policy::tls::{EchMode, SniMode, TlsChecks};
use crate::policy::{noproxy, parse_pattern, Policy, PolicyBuilder, PortSet, RuleKind};
use crate::target::{normalize_host, Host};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
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
    pub mode: Mode,
    pub policy: Arc<Policy>,
    /// How the ClientHello inside CONNECT tunnels is read and judged.
    pub tls: TlsChecks,
    /// Exceptions to the special-purpose address deny list.
    pub allow_cidrs: Vec<IpNet>,
    pub dns: Dns,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";

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
    let mut seen = HashSet::new();
    for (list, kind, rules) in [
        ("allow", RuleKind::Allow, &raw.allow),
        ("deny", RuleKind::Deny, &raw.deny),
    ] {
        for (i, rule) in rules.iter().enumerate() {
            compile_rule(
                &mut builder,
                &mut errs,
                &mut seen,
                &format!("{list}[{i}]"),
                kind,
                rule,
            );
        }
    }
    let policy = builder.build().unwrap_or_else(|e| {
        errs.push("allow", e);
        Policy::default()
    });

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
        .collect();

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
    let dns = Dns {
        min_ttl: duration("dns.min_ttl", &raw.dns.min_ttl, "5s"),
        max_ttl: duration("dns.max_ttl", &raw.dns.max_ttl, "5m"),
        ..dns
    };
    if dns.min_ttl > dns.max_ttl {
        errs.push("dns.min_ttl", "must not be greater than dns.max_ttl");
    }

    let max_connections = raw.limits.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        errs.push("limits.max_connections", "must be at least 1");
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
        max_header_bytes: max_header_bytes as usize,
    };

    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    Ok(Settings {
        listen,
        mode,
        policy: Arc::new(policy),
        tls,
        allow_cidrs,
        dns,
        timeouts,
        limits,
    })
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
    let id = builder.rule(&rule.name, kind, ports);
    if let Some(tls) = rule.tls {
        if kind == RuleKind::Deny {
            errs.push(format!("{path}.tls"), "`tls` applies to allow rules only");
        }
        builder.set_tls(id, tls);
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

    #[test]
    fn embedded_default_compiles() {
        let s = from_yaml_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:3128");
        assert!(s.policy.rule_count() > 0);
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
limits: {max_connections: 0, max_header_bytes: 10}
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
        assert_eq!(s.limits.max_header_bytes, 32768);
        assert_eq!(s.mode, super::Mode::Enforce);
    }

    #[test]
    fn dotted_host_keys_survive() {
        let s =
            from_yaml_str("dns:\n  hosts:\n    API.cast.ai: [\"127.0.0.1\", \"::1\"]\n").unwrap();
        assert_eq!(s.dns.hosts["api.cast.ai"].len(), 2);
    }
}
