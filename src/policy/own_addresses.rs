//! Per-rule exceptions to the refusal of special-purpose addresses: an allow rule (or a vendor profile's
//! parameter entries) naming a vendor's own endpoint by exact host names or addresses may reach that endpoint's
//! private addresses on the rule's ports, and nothing else gains from it. Unlike `destinations.allow_cidrs`,
//! which opens its ranges to every rule, the exception holds only for the rule's own destinations. Loopback,
//! link-local (the cloud metadata servers among them) and every other special-purpose range can never be
//! exempted. Pure: the dialer asks [`exempted`] about each resolved address.

use crate::policy::PortSet;
use crate::target::{normalize_host, Host, Target};
use ipnet::IpNet;
use std::net::IpAddr;

/// The ranges a rule may exempt: private networks (RFC 1918), shared address space (RFC 6598) and IPv6
/// unique local addresses (RFC 4193).
const EXEMPTABLE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

/// Cloud metadata endpoints inside the exemptable ranges (AWS IMDS and Pod Identity over IPv6, Alibaba
/// Cloud's metadata server): never exempted, whatever the CIDR.
const METADATA: &[&str] = &["fd00:ec2::254", "fd00:ec2::23", "100.100.100.200"];

/// One rule's exception: its exact hosts, its ports, and the private CIDRs its destinations may resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnAddresses {
    pub rule: String,
    pub hosts: Vec<Host>,
    pub ports: PortSet,
    pub cidrs: Vec<IpNet>,
}

/// Check one CIDR of a rule's `private_cidrs`: inside a private range, holding no metadata address.
pub fn check_cidr(net: &IpNet) -> Result<(), String> {
    let ranges: Vec<IpNet> = EXEMPTABLE.iter().map(|c| c.parse().unwrap()).collect();
    if !ranges.iter().any(|r| r.contains(net)) {
        return Err(format!(
            "{net} is not inside a private range ({}): loopback, link-local (cloud metadata), and other \
             special-purpose addresses are never exempted",
            EXEMPTABLE.join(", ")
        ));
    }
    if let Some(m) = METADATA
        .iter()
        .find(|m| net.contains(&m.parse::<IpAddr>().unwrap()))
    {
        return Err(format!(
            "{net} contains the cloud metadata address {m}, which is never exempted"
        ));
    }
    Ok(())
}

/// Check a rule's host for an exception: an exact name or address, normalized like a request's target.
pub fn check_host(pattern: &str) -> Result<Host, String> {
    if pattern.contains(['*', '?', '[', '/']) || pattern.starts_with('.') {
        return Err(format!(
            "{pattern:?}: a rule with private_cidrs names its hosts exactly (no wildcards, suffixes or CIDRs), \
             so the exception reaches only the vendor's own endpoint"
        ));
    }
    normalize_host(pattern).map_err(|e| format!("{pattern:?}: {e}"))
}

/// The rule whose exception lets `target` reach `ip`, if one does.
pub fn exempted<'a>(list: &'a [OwnAddresses], target: &Target, ip: IpAddr) -> Option<&'a str> {
    if METADATA
        .iter()
        .any(|m| m.parse::<IpAddr>().ok() == Some(ip))
    {
        return None;
    }
    list.iter()
        .find(|e| {
            e.ports.contains(target.port)
                && e.hosts.contains(&target.host)
                && e.cidrs.iter().any(|n| n.contains(&ip))
        })
        .map(|e| e.rule.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse_authority;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn only_private_ranges_without_metadata_can_be_exempted() {
        for ok in [
            "10.20.0.5/32",
            "10.0.0.0/8",
            "172.16.4.0/24",
            "192.168.1.0/24",
            "100.64.0.0/16",
            "fd12:3456::/48",
        ] {
            assert_eq!(check_cidr(&net(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1/32",
            "169.254.169.254/32",
            "169.254.0.0/16",
            "0.0.0.0/0",
            "8.0.0.0/7",
            "::1/128",
            "fe80::/10",
            "fd00:ec2::/32",
            "100.100.100.0/24",
            "9.0.0.0/7",
            "192.0.2.0/24",
        ] {
            assert!(check_cidr(&net(bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hosts_are_exact() {
        assert_eq!(
            check_host("MinIO.Example.Internal."),
            Ok(Host::Name("minio.example.internal".into()))
        );
        assert_eq!(
            check_host("10.20.0.5"),
            Ok(Host::Ip("10.20.0.5".parse().unwrap()))
        );
        for bad in [
            "*.example.internal",
            ".example.internal",
            "10.0.0.0/8",
            "a?b",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_exception_holds_for_its_hosts_ports_and_cidrs_only() {
        let list = vec![OwnAddresses {
            rule: "minio".into(),
            hosts: vec![check_host("minio.example.internal").unwrap()],
            ports: PortSet::from_ranges(vec![9000..=9000]),
            cidrs: vec![net("10.20.0.0/24")],
        }];
        let t = |a: &str| parse_authority(a, None).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            exempted(&list, &t("minio.example.internal:9000"), ip("10.20.0.7")),
            Some("minio")
        );
        // Another address, port or host: not exempted.
        assert_eq!(
            exempted(&list, &t("minio.example.internal:9000"), ip("10.21.0.7")),
            None
        );
        assert_eq!(
            exempted(&list, &t("minio.example.internal:22"), ip("10.20.0.7")),
            None
        );
        assert_eq!(
            exempted(&list, &t("other.example.internal:9000"), ip("10.20.0.7")),
            None
        );
        // Metadata addresses are never exempted, even by a CIDR that was let through.
        let wide = vec![OwnAddresses {
            cidrs: vec![net("::/0")],
            ..list[0].clone()
        }];
        assert_eq!(
            exempted(
                &wide,
                &t("minio.example.internal:9000"),
                ip("fd00:ec2::254")
            ),
            None
        );
    }
}
