//! `/etc/hosts` (`dns.hosts_file`): in a pod the kubelet writes it, with the pod's `hostAliases`, so names a
//! manifest pins there resolve in egressd as in every other container. `dns.hosts` comes first; every address
//! from either is checked like a DNS answer (a hosts entry cannot open a special-purpose address).

use crate::target::{normalize_host, Host};
use std::collections::HashMap;
use std::net::IpAddr;

/// The path read when `dns.hosts_file` is not set.
pub const DEFAULT_PATH: &str = "/etc/hosts";

/// Name → addresses from the text of a hosts file, in file order. Lines that are not `address name...`
/// (a zone-scoped or unparsable address, a name no URL could hold) are skipped: the name then goes to DNS,
/// whose answers are checked the same way.
pub fn parse(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in fields {
            if let Ok(Host::Name(name)) = normalize_host(name) {
                let addrs = hosts.entry(name).or_default();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file the kubelet writes for a pod with `hostAliases`.
    const KUBELET: &str = "# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::1\tip6-allnodes
10.244.1.7\tegressd-7d9f-abcde

# Entries added by HostAliases.
203.0.113.10\tmirror.example.com\tMirror.Example.COM.
203.0.113.11\tmirror.example.com
fe80::1%eth0\tlinklocal.example
not-an-ip\tbroken.example
";

    #[test]
    fn reads_the_kubelet_layout() {
        let h = parse(KUBELET);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(h["localhost"], vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(
            h["mirror.example.com"],
            vec![ip("203.0.113.10"), ip("203.0.113.11")],
            "names are normalized, each address once, in file order"
        );
        assert_eq!(h["egressd-7d9f-abcde"], vec![ip("10.244.1.7")]);
        assert!(!h.contains_key("linklocal.example"));
        assert!(!h.contains_key("broken.example"));
        assert!(!h.contains_key("not-an-ip"));
    }
}
