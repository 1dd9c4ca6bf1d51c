use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The shared list `N` from the test vectors.
const N: &str = "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, \
    192.168.1.3:80, 10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, \
    [2001:db8::52:0:3]:80, 2002:db8:a::45/64";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn domain(name: &str, include_apex: bool, port: Option<u16>) -> Entry {
    Entry::Domain {
        name: name.to_string(),
        include_apex,
        port,
    }
}

/// Parses a list that must consist of exactly one usable entry.
fn single(input: &str) -> Entry {
    let list = parse(input);
    assert!(
        list.ignored.is_empty(),
        "{input:?}: unexpected ignored {:?}",
        list.ignored
    );
    assert_eq!(list.entries.len(), 1, "{input:?}: {:?}", list.entries);
    list.entries.into_iter().next().unwrap()
}

#[test]
fn go_column_of_the_test_vectors() {
    // (vector number, NO_PROXY, target host, Go goes direct); all targets are http://host:80/.
    let vectors: &[(u32, &str, &str, bool)] = &[
        (1, N, "localhost", true),
        (2, N, "127.0.0.2", true),
        (3, N, "[::1]", true),
        (4, N, "[::2]", false),
        (5, N, "192.168.1.1", true),
        (6, N, "192.168.1.2", false),
        (7, N, "192.168.1.3", true),
        (8, N, "10.0.0.2", true),
        (9, N, "[2001:db8::52:0:1]", true),
        (10, N, "[2001:db8::52:0:3]", true),
        (11, N, "[2002:db8:a::123]", true),
        (12, N, "barbaz.net", false),
        (13, N, "www.barbaz.net", true),
        (14, N, "www.foobar.com", true),
        (15, N, "foofoobar.com", false),
        (16, N, "nested.wildcard.io", true),
        (17, N, "wildcard.io", false),
        (18, "*", "example.org", true),
        (18, "*", "[2001:db8::1]", true),
        (18, "*", "10.1.2.3", true),
        (19, ".example.com", "example.com", false),
        (20, "ample.com", "example.com", false),
        (
            21,
            "localhost,.example.com,.example.de",
            "example.com",
            false,
        ),
        (
            22,
            "localhost,www.example.com.,.example.de",
            "www.example.com",
            false,
        ),
        (
            23,
            "localhost,.example.com,.example.de",
            "www.example.com.",
            false,
        ),
        (
            24,
            "localhost .example.com .example.de",
            "www.example.com",
            false,
        ),
        (25, "192.168.0.0/16a", "192.168.0.1", false),
        (26, "192.168.0.0/16 ", "192.168.0.1", true),
        (27, "foo,,,,,   bar, ::1/64", "BAr", true),
        (28, "2001:db8::/65", "[2001:db8::1]", true),
        (29, "2001:db8::/65", "[2001:db8:8000::1]", false),
    ];
    for &(n, no_proxy, host, direct) in vectors {
        assert_eq!(
            parse(no_proxy).go_bypasses(host, 80),
            direct,
            "vector {n}: NO_PROXY={no_proxy:?} target={host:?}"
        );
    }
}

#[test]
fn shared_list_parses_completely() {
    let list = parse(N);
    assert!(list.ignored.is_empty(), "{:?}", list.ignored);
    assert_eq!(
        list.entries,
        vec![
            domain("foobar.com", true, None),
            domain("barbaz.net", false, None),
            domain("wildcard.io", false, None),
            Entry::Ip {
                ip: ip("192.168.1.1"),
                port: None
            },
            Entry::Ip {
                ip: ip("192.168.1.2"),
                port: Some(81)
            },
            Entry::Ip {
                ip: ip("192.168.1.3"),
                port: Some(80)
            },
            Entry::Cidr(net("10.0.0.0/30")),
            Entry::Ip {
                ip: ip("2001:db8::52:0:1"),
                port: None
            },
            Entry::Ip {
                ip: ip("2001:db8::52:0:2"),
                port: Some(443)
            },
            Entry::Ip {
                ip: ip("2001:db8::52:0:3"),
                port: Some(80)
            },
            Entry::Cidr(net("2002:db8:a::/64")),
        ]
    );
}

#[test]
fn entry_kinds() {
    let cases: &[(&str, Entry)] = &[
        ("*", Entry::Any),
        ("  *  ", Entry::Any),
        // CIDR: host bits allowed and cleared, IPv6, leading zeros in the prefix length.
        ("10.0.0.0/8", Entry::Cidr(net("10.0.0.0/8"))),
        ("10.1.2.3/8", Entry::Cidr(net("10.0.0.0/8"))),
        ("192.168.0.0/016", Entry::Cidr(net("192.168.0.0/16"))),
        ("0.0.0.0/0", Entry::Cidr(net("0.0.0.0/0"))),
        ("1.2.3.4/32", Entry::Cidr(net("1.2.3.4/32"))),
        ("2001:DB8::/32", Entry::Cidr(net("2001:db8::/32"))),
        ("::1/64", Entry::Cidr(net("::/64"))),
        ("::ffff:10.0.0.0/104", Entry::Cidr(net("10.0.0.0/8"))),
        // IPs, with and without ports.
        (
            "192.168.1.1",
            Entry::Ip {
                ip: ip("192.168.1.1"),
                port: None,
            },
        ),
        (
            "192.168.1.2:81",
            Entry::Ip {
                ip: ip("192.168.1.2"),
                port: Some(81),
            },
        ),
        (
            "[192.168.1.2]:81",
            Entry::Ip {
                ip: ip("192.168.1.2"),
                port: Some(81),
            },
        ),
        (
            "2001:db8::52:0:1",
            Entry::Ip {
                ip: ip("2001:db8::52:0:1"),
                port: None,
            },
        ),
        (
            "::1",
            Entry::Ip {
                ip: ip("::1"),
                port: None,
            },
        ),
        (
            "[2001:db8::52:0:2]:443",
            Entry::Ip {
                ip: ip("2001:db8::52:0:2"),
                port: Some(443),
            },
        ),
        (
            "[2001:DB8::52:0:3]:80",
            Entry::Ip {
                ip: ip("2001:db8::52:0:3"),
                port: Some(80),
            },
        ),
        (
            "::ffff:1.2.3.4",
            Entry::Ip {
                ip: ip("1.2.3.4"),
                port: None,
            },
        ),
        (
            "1.2.3.4:0",
            Entry::Ip {
                ip: ip("1.2.3.4"),
                port: Some(0),
            },
        ),
        (
            "1.2.3.4:65535",
            Entry::Ip {
                ip: ip("1.2.3.4"),
                port: Some(65535),
            },
        ),
        // An empty port means any port in Go.
        (
            "[::1]:",
            Entry::Ip {
                ip: ip("::1"),
                port: None,
            },
        ),
        // Domains.
        ("example.com", domain("example.com", true, None)),
        (".example.com", domain("example.com", false, None)),
        ("*.example.com", domain("example.com", false, None)),
        ("Example.COM", domain("example.com", true, None)),
        ("example.com:443", domain("example.com", true, Some(443))),
        (
            "*.example.com:8443",
            domain("example.com", false, Some(8443)),
        ),
        (".example.com:80", domain("example.com", false, Some(80))),
        ("example.com:", domain("example.com", true, None)),
        ("[example.com]:80", domain("example.com", true, Some(80))),
        ("localhost", domain("localhost", true, None)),
        ("my_svc.my-ns.svc", domain("my_svc.my-ns.svc", true, None)),
        ("www.example.com.", domain("www.example.com.", true, None)),
        // Not an IP (three parts), so Go treats it as a domain.
        ("10.0.0", domain("10.0.0", true, None)),
        // IDNs are converted to punycode.
        (
            "bücher.example",
            domain("xn--bcher-kva.example", true, None),
        ),
        (
            "*.BÜCHER.example",
            domain("xn--bcher-kva.example", false, None),
        ),
        (
            ".bücher.example:443",
            domain("xn--bcher-kva.example", false, Some(443)),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&single(input), want, "{input:?}");
    }
}

#[test]
fn ignored_entries_with_reasons() {
    let cases: &[(&str, &str)] = &[
        (":1", WHY_EMPTY_HOST),
        (":", WHY_EMPTY_HOST),
        ("[]:80", WHY_EMPTY_HOST),
        ("[::1]", WHY_BRACKETS),
        ("[2001:db8::1]", WHY_BRACKETS),
        ("[example.com]", WHY_INVALID),
        ("192.168.0.0/16a", WHY_INVALID),
        ("192.168.0.0/33", WHY_INVALID),
        ("2001:db8::/129", WHY_INVALID),
        ("10.0.0.0/", WHY_INVALID),
        ("example.com/path", WHY_INVALID),
        ("foo..com", WHY_INVALID),
        ("..example.com", WHY_INVALID),
        ("exa$mple.com", WHY_INVALID),
        ("fe80::1%eth0", WHY_INVALID),
        ("localhost .example.com .example.de", WHY_WHITESPACE),
        ("10.0.0.0/8 192.168.0.0/16", WHY_WHITESPACE),
        ("foo\tbar", WHY_WHITESPACE),
        ("http://example.com", WHY_URL),
        ("https://10.0.0.1:8443", WHY_URL),
        ("example.com:abc", WHY_PORT),
        ("example.com:080", WHY_PORT),
        ("example.com:65536", WHY_PORT),
        ("[::1]:-1", WHY_PORT),
        ("1.2.3.4:+80", WHY_PORT),
        ("*:443", WHY_STAR),
        ("*example.com", WHY_STAR),
        ("foo.*.example.com", WHY_STAR),
        ("*.*.example.com", WHY_STAR),
        ("**", WHY_STAR),
        (".", WHY_EMPTY_DOMAIN),
        ("*.", WHY_EMPTY_DOMAIN),
        ("bü_cher.example", WHY_IDN),
    ];
    for &(input, why) in cases {
        let list = parse(input);
        assert!(
            list.entries.is_empty(),
            "{input:?}: unexpected entries {:?}",
            list.entries
        );
        assert_eq!(
            list.ignored,
            vec![Ignored {
                entry: input.trim().to_lowercase(),
                why
            }],
            "{input:?}"
        );
    }
}

#[test]
fn ignored_entries_never_bypass_in_go() {
    // Each of these is dead in Go too: a target matching the entry's
    // apparent intent still goes through the proxy.
    let cases: &[(&str, &str, u16)] = &[
        ("[2001:db8::1]", "[2001:db8::1]", 80),
        ("192.168.0.0/16a", "192.168.0.1", 80),
        ("example.com:080", "example.com", 80),
        ("http://example.com", "example.com", 80),
        ("*:443", "example.com", 443),
        ("*example.com", "www.example.com", 80),
        ("localhost .example.com", "www.example.com", 80),
    ];
    for &(no_proxy, host, port) in cases {
        assert!(
            !parse(no_proxy).go_bypasses(host, port),
            "{no_proxy:?} vs {host:?}:{port}"
        );
    }
}

#[test]
fn list_order_and_skipping() {
    let list = parse(" , a.example ,, :1 ,*, 10.0.0.0/8,\t,B.example:8080 ");
    assert_eq!(
        list.entries,
        vec![
            domain("a.example", true, None),
            Entry::Any,
            Entry::Cidr(net("10.0.0.0/8")),
            domain("b.example", true, Some(8080)),
        ]
    );
    assert_eq!(
        list.ignored,
        vec![Ignored {
            entry: ":1".to_string(),
            why: WHY_EMPTY_HOST
        }]
    );
    assert_eq!(parse(""), NoProxyList::default());
    assert_eq!(parse(" , ,, "), NoProxyList::default());
}

#[test]
fn go_bypasses_beyond_the_vectors() {
    // (NO_PROXY, target host, port, Go goes direct)
    let cases: &[(&str, &str, u16, bool)] = &[
        // The implicit localhost rule is exact and case-sensitive ...
        ("", "localhost", 80, true),
        ("", "LOCALHOST", 80, false),
        ("", "localhost.", 80, false),
        // ... but the list itself is case-insensitive.
        ("localhost", "LocalHost", 80, true),
        // Loopback in every spelling Go recognises.
        ("", "127.255.255.254", 80, true),
        ("", "[::ffff:127.0.0.1]", 80, true),
        ("", "::1", 443, true),
        ("", "[::2]", 80, false),
        // Ports on entries.
        ("example.com:443", "example.com", 443, true),
        ("example.com:443", "example.com", 80, false),
        ("example.com:443", "www.example.com", 443, true),
        ("[2001:db8::52:0:2]:443", "[2001:db8::52:0:2]", 443, true),
        ("[2001:db8::52:0:2]:443", "[2001:db8::52:0:2]", 80, false),
        ("10.0.0.0/8", "10.9.9.9", 8443, true),
        // Domain matching details.
        ("example.com", "example.com", 80, true),
        ("example.com", "EXAMPLE.com", 80, true),
        ("example.com", "a.b.example.com", 80, true),
        ("example.com", "badexample.com", 80, false),
        ("example.com", "example.com.", 80, false),
        ("*.example.com", "example.com", 80, false),
        ("*.example.com", "a.example.com", 80, true),
        ("www.example.com.", "www.example.com.", 80, true),
        // IDN in the list and in the target.
        ("bücher.example", "xn--bcher-kva.example", 80, true),
        ("bücher.example", "www.BÜCHER.example", 80, true),
        ("xn--bcher-kva.example", "bücher.example", 80, true),
        // IPv4-mapped targets are compared as IPv4.
        ("10.0.0.0/8", "[::ffff:10.1.2.3]", 80, true),
        ("10.1.2.3", "[::ffff:10.1.2.3]", 80, true),
        ("::ffff:10.1.2.3", "10.1.2.3", 80, true),
        // IPv4 networks never contain IPv6 targets and vice versa.
        ("0.0.0.0/0", "[2001:db8::1]", 80, false),
        ("::/0", "10.0.0.1", 80, false),
        // A name that looks like an IP but is not one is not matched by CIDRs.
        ("10.0.0.0/8", "10.0.0.1.example", 80, false),
        // Domain entries do not match ordinary IP targets ...
        ("example.com", "10.0.0.1", 80, false),
        ("10.0.0", "10.0.0.1", 80, false),
        // ... except that Go compares the address text, so an all-numeric
        // entry can suffix-match one.
        ("0.1", "10.0.0.1", 80, true),
        ("3.4", "[::ffff:1.2.3.4]", 80, true),
    ];
    for &(no_proxy, host, port, direct) in cases {
        assert_eq!(
            parse(no_proxy).go_bypasses(host, port),
            direct,
            "NO_PROXY={no_proxy:?} target={host:?}:{port}"
        );
    }
}

#[test]
fn matches_entry_cases() {
    let name = |s: &'static str| (Some(s), None);
    let addr = |s: &str| (None, Some(ip(s)));
    type Target<'a> = (Option<&'a str>, Option<IpAddr>);
    // (entry, target, port, matches)
    let cases: Vec<(Entry, Target, u16, bool)> = vec![
        (Entry::Any, name("example.com"), 80, true),
        (Entry::Any, addr("10.0.0.1"), 443, true),
        (Entry::Any, (None, None), 443, true),
        // CIDR ignores the port and only matches IPs.
        (Entry::Cidr(net("10.0.0.0/8")), addr("10.255.0.1"), 1, true),
        (
            Entry::Cidr(net("10.0.0.0/8")),
            addr("10.255.0.1"),
            443,
            true,
        ),
        (Entry::Cidr(net("10.0.0.0/8")), addr("11.0.0.1"), 80, false),
        (
            Entry::Cidr(net("10.0.0.0/8")),
            addr("::ffff:10.0.0.1"),
            80,
            true,
        ),
        (
            Entry::Cidr(net("10.0.0.0/8")),
            name("10.0.0.1.example"),
            80,
            false,
        ),
        (
            Entry::Cidr(net("2001:db8::/65")),
            addr("2001:db8::1"),
            80,
            true,
        ),
        (
            Entry::Cidr(net("2001:db8::/65")),
            addr("2001:db8:0:0:8000::1"),
            80,
            false,
        ),
        // IP with and without port.
        (
            Entry::Ip {
                ip: ip("192.168.1.3"),
                port: Some(80),
            },
            addr("192.168.1.3"),
            80,
            true,
        ),
        (
            Entry::Ip {
                ip: ip("192.168.1.3"),
                port: Some(80),
            },
            addr("192.168.1.3"),
            443,
            false,
        ),
        (
            Entry::Ip {
                ip: ip("192.168.1.3"),
                port: None,
            },
            addr("192.168.1.3"),
            443,
            true,
        ),
        (
            Entry::Ip {
                ip: ip("192.168.1.3"),
                port: None,
            },
            addr("192.168.1.4"),
            443,
            false,
        ),
        (
            Entry::Ip {
                ip: ip("1.2.3.4"),
                port: None,
            },
            addr("::ffff:1.2.3.4"),
            80,
            true,
        ),
        (
            Entry::Ip {
                ip: ip("2001:db8::1"),
                port: None,
            },
            addr("2001:db8::1"),
            80,
            true,
        ),
        (
            Entry::Ip {
                ip: ip("192.168.1.3"),
                port: None,
            },
            name("192.168.1.3"),
            80,
            false,
        ),
        // Domains: suffix on a label boundary, apex only when included, port when given.
        (
            domain("example.com", true, None),
            name("example.com"),
            80,
            true,
        ),
        (
            domain("example.com", true, None),
            name("a.b.example.com"),
            80,
            true,
        ),
        (
            domain("example.com", true, None),
            name("notexample.com"),
            80,
            false,
        ),
        (
            domain("example.com", false, None),
            name("example.com"),
            80,
            false,
        ),
        (
            domain("example.com", false, None),
            name("www.example.com"),
            80,
            true,
        ),
        (
            domain("example.com", true, Some(443)),
            name("www.example.com"),
            443,
            true,
        ),
        (
            domain("example.com", true, Some(443)),
            name("www.example.com"),
            80,
            false,
        ),
        (
            domain("www.example.com.", true, None),
            name("www.example.com"),
            80,
            false,
        ),
        // Domain entries never match an IP target, not even textually.
        (
            domain("example.com", true, None),
            addr("10.0.0.1"),
            80,
            false,
        ),
        (domain("0.1", true, None), addr("10.0.0.1"), 80, false),
        (
            domain("0.1", true, None),
            (Some("10.0.0.1"), Some(ip("10.0.0.1"))),
            80,
            false,
        ),
        (domain("example.com", true, None), (None, None), 80, false),
    ];
    for (entry, (n, a), port, want) in &cases {
        assert_eq!(
            NoProxyList::matches_entry(entry, *n, *a, *port),
            *want,
            "{entry:?} vs name={n:?} ip={a:?} port={port}"
        );
    }
}

#[test]
fn display_round_trips() {
    let cases: &[(Entry, &str)] = &[
        (Entry::Any, "*"),
        (Entry::Cidr(net("10.0.0.0/8")), "10.0.0.0/8"),
        (Entry::Cidr(net("2001:db8::/32")), "2001:db8::/32"),
        (
            Entry::Ip {
                ip: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
                port: None,
            },
            "1.2.3.4",
        ),
        (
            Entry::Ip {
                ip: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
                port: Some(81),
            },
            "1.2.3.4:81",
        ),
        (
            Entry::Ip {
                ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: None,
            },
            "::1",
        ),
        (
            Entry::Ip {
                ip: ip("2001:db8::52:0:2"),
                port: Some(443),
            },
            "[2001:db8::52:0:2]:443",
        ),
        (domain("example.com", true, None), "example.com"),
        (domain("example.com", false, None), ".example.com"),
        (
            domain("example.com", false, Some(8443)),
            ".example.com:8443",
        ),
        (
            domain("www.example.com.", true, Some(80)),
            "www.example.com.:80",
        ),
        (
            domain("xn--bcher-kva.example", true, None),
            "xn--bcher-kva.example",
        ),
    ];
    for (entry, text) in cases {
        assert_eq!(entry.to_string(), *text);
        assert_eq!(&single(text), entry, "{text:?} does not parse back");
    }
}

#[test]
fn split_host_port_follows_go() {
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("host:80", Some(("host", "80"))),
        ("host:", Some(("host", ""))),
        (":80", Some(("", "80"))),
        ("[::1]:80", Some(("::1", "80"))),
        ("[::1]:", Some(("::1", ""))),
        ("host", None),
        ("::1", None),
        ("[::1]", None),
        ("[::1]x:80", None),
        ("[::1:80", None),
        ("a[b:80", None),
        ("ab]:80", None),
        ("[[::1]]:80", None),
        // Multi-byte characters first (found by fuzzing: used to panic on a str slice).
        ("ʓ:1", Some(("ʓ", "1"))),
        ("é[:1", None),
    ];
    for &(input, want) in cases {
        assert_eq!(split_host_port(input), want, "{input:?}");
    }
    let list = parse("foo,ʓ\0:1/64,é:80");
    assert_eq!(list.entries.len() + list.ignored.len(), 3);
}
