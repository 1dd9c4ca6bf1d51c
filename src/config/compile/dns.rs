//! `dns:`: static hosts, the hosts file, servers.

use super::*;

pub(super) fn compile_dns(raw: &RawConfig, errs: &mut Errors) -> Dns {
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
        None => (Some(crate::config::hosts_file::DEFAULT_PATH), false),
    };
    if let Some(path) = path {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (name, addrs) in crate::config::hosts_file::parse(&text) {
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
