use super::*;
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::Ipv4Addr;

type Expected = Option<(&'static str, &'static str, Option<&'static str>)>;

fn check(cases: &[(&str, Expected)]) {
    for (addr, want) in cases {
        let ip: IpAddr = addr.parse().unwrap();
        let got = special_purpose(ip).map(|r| (r.name, r.cidr, r.via));
        assert_eq!(got, *want, "address {addr}");
    }
}

const fn direct(name: &'static str, cidr: &'static str) -> Expected {
    Some((name, cidr, None))
}

const fn via(name: &'static str, cidr: &'static str, via: &'static str) -> Expected {
    Some((name, cidr, Some(via)))
}

#[test]
fn tables_match_their_cidr_text() {
    for r in V4_RANGES {
        let net: Ipv4Net = r.range.cidr.parse().unwrap();
        assert_eq!(u32::from(net.network()), r.net, "{}", r.range.cidr);
        assert_eq!(u32::from(net.netmask()), r.mask, "{}", r.range.cidr);
        assert_eq!(r.net & !r.mask, 0, "host bits set in {}", r.range.cidr);
        assert!(r.range.via.is_none());
    }
    for r in V6_RANGES {
        let net: Ipv6Net = r.range.cidr.parse().unwrap();
        assert_eq!(u128::from(net.network()), r.net, "{}", r.range.cidr);
        assert_eq!(u128::from(net.netmask()), r.mask, "{}", r.range.cidr);
        assert_eq!(r.net & !r.mask, 0, "host bits set in {}", r.range.cidr);
        assert!(r.range.via.is_none());
    }
    for r in [V6_UNSPECIFIED, V6_LOOPBACK] {
        let net: Ipv6Net = r.cidr.parse().unwrap();
        assert_eq!(net.prefix_len(), 128);
    }
}

#[test]
fn every_table_range_is_special_at_both_ends() {
    for r in V4_RANGES {
        for addr in [r.net, r.net | !r.mask] {
            let ip = IpAddr::V4(Ipv4Addr::from(addr));
            assert!(special_purpose(ip).is_some(), "{ip} in {}", r.range.cidr);
        }
    }
    for r in V6_RANGES {
        for addr in [r.net, r.net | !r.mask] {
            let ip = IpAddr::V6(Ipv6Addr::from(addr));
            assert!(special_purpose(ip).is_some(), "{ip} in {}", r.range.cidr);
        }
    }
}

#[test]
fn ipv4_ranges_and_boundaries() {
    check(&[
        ("0.0.0.0", direct("unspecified", "0.0.0.0/32")),
        ("0.0.0.1", direct("this_network", "0.0.0.0/8")),
        ("0.255.255.255", direct("this_network", "0.0.0.0/8")),
        ("1.0.0.0", None),
        ("9.255.255.255", None),
        ("10.0.0.0", direct("private", "10.0.0.0/8")),
        ("10.255.255.255", direct("private", "10.0.0.0/8")),
        ("11.0.0.0", None),
        ("100.63.255.255", None),
        ("100.64.0.0", direct("cgnat", "100.64.0.0/10")),
        ("100.127.255.255", direct("cgnat", "100.64.0.0/10")),
        ("100.128.0.0", None),
        ("126.255.255.255", None),
        ("127.0.0.0", direct("loopback", "127.0.0.0/8")),
        ("127.0.0.1", direct("loopback", "127.0.0.0/8")),
        ("127.255.255.255", direct("loopback", "127.0.0.0/8")),
        ("128.0.0.0", None),
        ("169.253.255.255", None),
        ("169.254.0.0", direct("link_local", "169.254.0.0/16")),
        ("169.254.169.254", direct("link_local", "169.254.0.0/16")),
        ("169.254.255.255", direct("link_local", "169.254.0.0/16")),
        ("169.255.0.0", None),
        ("172.15.255.255", None),
        ("172.16.0.0", direct("private", "172.16.0.0/12")),
        ("172.31.255.255", direct("private", "172.16.0.0/12")),
        ("172.32.0.0", None),
        ("191.255.255.255", None),
        ("192.0.0.0", direct("ietf_protocol", "192.0.0.0/24")),
        ("192.0.0.255", direct("ietf_protocol", "192.0.0.0/24")),
        ("192.0.1.0", None),
        ("192.0.1.255", None),
        ("192.0.2.0", direct("documentation", "192.0.2.0/24")),
        ("192.0.2.255", direct("documentation", "192.0.2.0/24")),
        ("192.0.3.0", None),
        ("192.88.98.255", None),
        ("192.88.99.0", direct("6to4_relay", "192.88.99.0/24")),
        ("192.88.99.255", direct("6to4_relay", "192.88.99.0/24")),
        ("192.88.100.0", None),
        ("192.167.255.255", None),
        ("192.168.0.0", direct("private", "192.168.0.0/16")),
        ("192.168.255.255", direct("private", "192.168.0.0/16")),
        ("192.169.0.0", None),
        ("198.17.255.255", None),
        ("198.18.0.0", direct("benchmarking", "198.18.0.0/15")),
        ("198.19.255.255", direct("benchmarking", "198.18.0.0/15")),
        ("198.20.0.0", None),
        ("198.51.99.255", None),
        ("198.51.100.0", direct("documentation", "198.51.100.0/24")),
        ("198.51.100.255", direct("documentation", "198.51.100.0/24")),
        ("198.51.101.0", None),
        ("203.0.112.255", None),
        ("203.0.113.0", direct("documentation", "203.0.113.0/24")),
        ("203.0.113.255", direct("documentation", "203.0.113.0/24")),
        ("203.0.114.0", None),
        ("223.255.255.255", None),
        ("224.0.0.0", direct("multicast", "224.0.0.0/4")),
        ("239.255.255.255", direct("multicast", "224.0.0.0/4")),
        ("240.0.0.0", direct("reserved", "240.0.0.0/4")),
        ("255.255.255.254", direct("reserved", "240.0.0.0/4")),
        ("255.255.255.255", direct("broadcast", "255.255.255.255/32")),
    ]);
}

#[test]
fn cloud_platform_endpoints_are_special() {
    check(&[
        // AWS instance metadata, Time Sync, DNS, ECS task metadata, EKS Pod Identity.
        ("169.254.169.254", direct("link_local", "169.254.0.0/16")),
        ("169.254.169.123", direct("link_local", "169.254.0.0/16")),
        ("169.254.169.253", direct("link_local", "169.254.0.0/16")),
        ("169.254.170.2", direct("link_local", "169.254.0.0/16")),
        ("169.254.170.23", direct("link_local", "169.254.0.0/16")),
        ("fd00:ec2::254", direct("unique_local", "fc00::/7")),
        ("fd00:ec2::123", direct("unique_local", "fc00::/7")),
        ("fd00:ec2::253", direct("unique_local", "fc00::/7")),
        ("fd00:ec2::23", direct("unique_local", "fc00::/7")),
        // Google Cloud metadata over IPv6.
        ("fd20:ce::254", direct("unique_local", "fc00::/7")),
        // Azure WireServer.
        (
            "168.63.129.16",
            direct("cloud_platform", "168.63.129.16/32"),
        ),
        (
            "::ffff:168.63.129.16",
            via("cloud_platform", "168.63.129.16/32", "ipv4_mapped"),
        ),
        // Oracle Cloud, Alibaba Cloud.
        ("192.0.0.192", direct("ietf_protocol", "192.0.0.0/24")),
        ("100.100.100.200", direct("cgnat", "100.64.0.0/10")),
    ]);
}

#[test]
fn forbidden_explains_and_honours_exceptions() {
    let ip: IpAddr = "168.63.129.16".parse().unwrap();
    assert_eq!(
        forbidden(ip, &[]).as_deref(),
        Some("168.63.129.16 is in 168.63.129.16/32 (cloud_platform)")
    );
    assert_eq!(forbidden(ip, &["168.63.129.16/32".parse().unwrap()]), None);
    assert_eq!(forbidden("8.8.8.8".parse().unwrap(), &[]), None);
}

#[test]
fn public_addresses_are_not_special() {
    check(&[
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("104.16.81.56", None),
        ("100.100.100.100", direct("cgnat", "100.64.0.0/10")),
        ("168.63.129.15", None),
        ("168.63.129.17", None),
        ("2606:4700::6810:5138", None),
        ("2001:4860:4860::8888", None),
        ("2a00:1450:4001:80b::200e", None),
        ("2000::", None),
        ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
    ]);
}

#[test]
fn ipv6_ranges_and_boundaries() {
    check(&[
        ("::", direct("unspecified", "::/128")),
        ("::1", direct("loopback", "::1/128")),
        // Just outside ::/96 and ::ffff:0:0/96.
        ("::1:0:0", direct("reserved", "::/8")),
        ("::fffe:ffff:ffff", direct("reserved", "::/8")),
        ("::1:0:0:0", direct("reserved", "::/8")),
        // IPv4-translated (RFC 2765) is not an embedding form here.
        ("::ffff:0:0:0", direct("reserved", "::/8")),
        ("0:0:0:0:0:1:ffff:ffff", direct("reserved", "::/8")),
        (
            "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("reserved", "::/8"),
        ),
        // Around the NAT64 prefixes.
        (
            "64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("reserved", "::/8"),
        ),
        ("64:ff9b:0:0:0:1::", direct("reserved", "::/8")),
        ("64:ff9b:1::", direct("nat64_local", "64:ff9b:1::/48")),
        ("64:ff9b:1::a00:1", direct("nat64_local", "64:ff9b:1::/48")),
        (
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            direct("nat64_local", "64:ff9b:1::/48"),
        ),
        ("64:ff9b:2::", direct("reserved", "::/8")),
        ("100::", direct("discard", "100::/64")),
        ("100::ffff:ffff:ffff:ffff", direct("discard", "100::/64")),
        ("100:0:0:1::", direct("reserved", "100::/8")),
        (
            "1ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("reserved", "100::/8"),
        ),
        ("200::", direct("reserved", "200::/7")),
        (
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("reserved", "1000::/4"),
        ),
        ("2001:1::", None),
        ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2001:2::", direct("benchmarking", "2001:2::/48")),
        (
            "2001:2:0:ffff:ffff:ffff:ffff:ffff",
            direct("benchmarking", "2001:2::/48"),
        ),
        ("2001:2:1::", None),
        ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2001:10::", direct("orchid", "2001:10::/28")),
        (
            "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("orchid", "2001:10::/28"),
        ),
        ("2001:20::", direct("orchid_v2", "2001:20::/28")),
        (
            "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("orchid_v2", "2001:20::/28"),
        ),
        ("2001:30::", None),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2001:db8::", direct("documentation", "2001:db8::/32")),
        ("2001:db8::1", direct("documentation", "2001:db8::/32")),
        (
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("documentation", "2001:db8::/32"),
        ),
        ("2001:db9::", None),
        ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
        ("2003::", None),
        ("3fff::", direct("documentation", "3fff::/20")),
        (
            "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("documentation", "3fff::/20"),
        ),
        ("3fff:1000::", None),
        ("4000::", direct("reserved", "4000::/3")),
        ("5f00::1", direct("reserved", "4000::/3")),
        (
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("reserved", "f800::/6"),
        ),
        ("fc00::", direct("unique_local", "fc00::/7")),
        ("fd12:3456::1", direct("unique_local", "fc00::/7")),
        (
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("unique_local", "fc00::/7"),
        ),
        ("fe00::", direct("reserved", "fe00::/9")),
        (
            "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("reserved", "fe00::/9"),
        ),
        ("fe80::", direct("link_local", "fe80::/10")),
        ("fe80::1", direct("link_local", "fe80::/10")),
        (
            "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("link_local", "fe80::/10"),
        ),
        ("fec0::", direct("site_local", "fec0::/10")),
        (
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("site_local", "fec0::/10"),
        ),
        ("ff00::", direct("multicast", "ff00::/8")),
        ("ff02::1", direct("multicast", "ff00::/8")),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            direct("multicast", "ff00::/8"),
        ),
    ]);
}

#[test]
fn embedded_ipv4_forms() {
    check(&[
        // IPv4-mapped.
        (
            "::ffff:169.254.169.254",
            via("link_local", "169.254.0.0/16", "ipv4_mapped"),
        ),
        (
            "::ffff:127.0.0.1",
            via("loopback", "127.0.0.0/8", "ipv4_mapped"),
        ),
        (
            "::ffff:10.1.2.3",
            via("private", "10.0.0.0/8", "ipv4_mapped"),
        ),
        (
            "::ffff:0.0.0.0",
            via("unspecified", "0.0.0.0/32", "ipv4_mapped"),
        ),
        (
            "::ffff:255.255.255.255",
            via("broadcast", "255.255.255.255/32", "ipv4_mapped"),
        ),
        ("::ffff:8.8.8.8", None),
        // IPv4-compatible.
        (
            "::127.0.0.1",
            via("loopback", "127.0.0.0/8", "ipv4_compatible"),
        ),
        (
            "::169.254.169.254",
            via("link_local", "169.254.0.0/16", "ipv4_compatible"),
        ),
        ("::2", via("this_network", "0.0.0.0/8", "ipv4_compatible")),
        (
            "::ffff",
            via("this_network", "0.0.0.0/8", "ipv4_compatible"),
        ),
        ("::8.8.8.8", None),
        (
            "::255.255.255.255",
            via("broadcast", "255.255.255.255/32", "ipv4_compatible"),
        ),
        // NAT64 well-known prefix.
        ("64:ff9b::10.0.0.1", via("private", "10.0.0.0/8", "nat64")),
        (
            "64:ff9b::127.0.0.1",
            via("loopback", "127.0.0.0/8", "nat64"),
        ),
        ("64:ff9b::", via("unspecified", "0.0.0.0/32", "nat64")),
        (
            "64:ff9b::ffff:ffff",
            via("broadcast", "255.255.255.255/32", "nat64"),
        ),
        ("64:ff9b::8.8.8.8", None),
        // 6to4.
        ("2002:7f00:1::", via("loopback", "127.0.0.0/8", "6to4")),
        (
            "2002:a9fe:a9fe::1",
            via("link_local", "169.254.0.0/16", "6to4"),
        ),
        (
            "2002:c0a8:101:1::1",
            via("private", "192.168.0.0/16", "6to4"),
        ),
        ("2002::", via("unspecified", "0.0.0.0/32", "6to4")),
        ("2002:808:808::1", None),
        ("2002:808:808:ffff:ffff:ffff:ffff:ffff", None),
        // Teredo: client 127.0.0.1 obfuscated as 80ff:fffe.
        (
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            via("loopback", "127.0.0.0/8", "teredo_client"),
        ),
        // RFC 4380's own example: client 192.0.2.45.
        (
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            via("documentation", "192.0.2.0/24", "teredo_client"),
        ),
        (
            "2001:0:a9fe:a9fe:8000:63bf:f7f7:f7f7",
            via("link_local", "169.254.0.0/16", "teredo_server"),
        ),
        // Both ends special: the server is reported.
        (
            "2001:0:a00:1:8000:63bf:80ff:fffe",
            via("private", "10.0.0.0/8", "teredo_server"),
        ),
        // Client bits all zero decode to 255.255.255.255.
        (
            "2001:0:4136:e378::",
            via("broadcast", "255.255.255.255/32", "teredo_client"),
        ),
        // Server 65.54.227.120 and client 8.8.8.8 are both public.
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None),
    ]);
}

#[test]
fn every_ipv4_range_is_seen_through_every_embedding() {
    for r in V4_RANGES {
        for addr in [r.net, r.net | !r.mask] {
            let direct = special_v4(addr).unwrap();
            let a = u128::from(addr);
            let mut forms = vec![
                ((0xffff << 32) | a, "ipv4_mapped"),
                ((NAT64_PREFIX << 32) | a, "nat64"),
                ((SIX_TO_FOUR_PREFIX << 112) | (a << 80), "6to4"),
                (
                    (TEREDO_PREFIX << 96) | (a << 64) | 0x0808_0808,
                    "teredo_server",
                ),
                (
                    (TEREDO_PREFIX << 96) | (0x0808_0808 << 64) | u128::from(!addr),
                    "teredo_client",
                ),
            ];
            // ::0.0.0.0 and ::0.0.0.1 are :: and ::1, not embeddings.
            if addr > 1 {
                forms.push((a, "ipv4_compatible"));
            }
            for (bits, how) in forms {
                let ip = IpAddr::V6(Ipv6Addr::from(bits));
                let want = SpecialRange {
                    via: Some(how),
                    ..direct
                };
                assert_eq!(special_purpose(ip), Some(want), "{ip}");
            }
        }
    }
}

#[test]
fn direct_hits_have_no_via() {
    for addr in ["10.0.0.1", "fe80::1", "::1", "::", "2001:db8::1"] {
        let range = special_purpose(addr.parse().unwrap()).unwrap();
        assert_eq!(range.via, None, "{addr}");
    }
}
