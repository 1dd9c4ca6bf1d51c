//! Hostile DNS answers from a resolver the test runs on loopback (`dns.servers`): answers mixing public and
//! private addresses, IPv4-mapped and NAT64 IPv6 into private ranges, CNAME chains ending in a private
//! address, SERVFAIL, NXDOMAIN and silence. Each test runs in a network namespace of its own with only a
//! loopback interface, so the "public" addresses in the answers can never be reached: the proxy must refuse
//! before dialling, and the decision lines show that nothing was dialled.

mod hostile;
mod support;
use hostile::dns::{in_private_netns, start, Rec, Zone};
use hostile::*;
use support::*;

const PUBLIC4: &str = "93.184.215.14";
const PUBLIC6: &str = "2606:2800:21f:cb07:6820:80da:af6b:8b2c";

fn a(s: &str) -> Rec {
    Rec::A(s.parse().unwrap())
}

fn aaaa(s: &str) -> Rec {
    Rec::Aaaa(s.parse().unwrap())
}

async fn fixture(
    zones: Vec<(&'static str, Zone)>,
    dns_timeout: &str,
) -> (Fixture, hostile::dns::Dns) {
    let dns = start(zones).await;
    let rules = "  - name: dns\n    hosts: [\".dns.test\"]\n    ports: [443, 8443]\n";
    let extra = format!(
        "  servers: [\"{}\"]\ntimeouts:\n  dns: {dns_timeout}\n",
        dns.addr
    );
    // `extra` continues the fixture's `dns:` map (servers) and adds timeouts.
    (Fixture::with(rules, &extra).await, dns)
}

/// The refusal happened before any connection attempt.
fn nothing_dialled(d: &serde_json::Value) {
    assert!(d["upstream_addr"].is_null(), "{d}");
    assert!(d["connect_ms"].is_null(), "{d}");
}

#[test]
fn answers_mixing_public_and_private_addresses_are_refused_whole() {
    in_private_netns(|isolated| async move {
        let (fx, _dns) = fixture(
            vec![
                (
                    "mixed.dns.test",
                    Zone::Records(vec![a(PUBLIC4), a("10.0.0.5")]),
                ),
                (
                    "mixed-late.dns.test",
                    Zone::Records(vec![a(PUBLIC4), a(PUBLIC4), a("169.254.169.254")]),
                ),
                (
                    "mixed6.dns.test",
                    Zone::Records(vec![aaaa(PUBLIC6), aaaa("fd00::5")]),
                ),
                ("public.dns.test", Zone::Records(vec![a(PUBLIC4)])),
            ],
            "2s",
        )
        .await;
        for (name, denied) in [
            ("mixed.dns.test", "10.0.0.5"),
            ("mixed-late.dns.test", "169.254.169.254"),
            ("mixed6.dns.test", "fd00::5"),
        ] {
            let resp = connect(fx.addr(), &format!("{name}:443")).await;
            let d = fx.refused(name, &resp, 403, "denied_private_address").await;
            assert_eq!(d["denied_addr"], denied, "{d}");
            assert_eq!(d["rule"], "dns", "{d}");
            nothing_dialled(&d);
        }
        // A purely public answer is dialled: in this namespace that address is unreachable, which proves the
        // namespace holds nothing but loopback (and that the refusals above were decided, not failed dials).
        // Outside a private namespace it would be a real outside connection, so it is left out there.
        if isolated {
            let resp = connect(fx.addr(), "public.dns.test:443").await;
            let d = fx
                .refused("public", &resp, 502, "upstream_unreachable")
                .await;
            assert_eq!(d["resolved_addrs"], serde_json::json!([PUBLIC4]));
        }
        fx.serves().await;
    });
}

#[test]
fn ipv6_forms_of_private_ipv4_addresses_are_refused() {
    in_private_netns(|_| async {
        let (fx, _dns) = fixture(
            vec![
                (
                    "mapped.dns.test",
                    Zone::Records(vec![aaaa("::ffff:10.0.0.1")]),
                ),
                (
                    "mapped-meta.dns.test",
                    Zone::Records(vec![aaaa("::ffff:169.254.169.254")]),
                ),
                (
                    "nat64.dns.test",
                    Zone::Records(vec![aaaa("64:ff9b::a9fe:a9fe")]),
                ),
                ("compat.dns.test", Zone::Records(vec![aaaa("::10.0.0.1")])),
                ("6to4.dns.test", Zone::Records(vec![aaaa("2002:a00:1::1")])),
            ],
            "2s",
        )
        .await;
        for (name, denied) in [
            ("mapped.dns.test", "::ffff:10.0.0.1"),
            ("mapped-meta.dns.test", "::ffff:169.254.169.254"),
            ("nat64.dns.test", "64:ff9b::a9fe:a9fe"),
            ("compat.dns.test", "::a00:1"),
            ("6to4.dns.test", "2002:a00:1::1"),
        ] {
            let resp = connect(fx.addr(), &format!("{name}:443")).await;
            let d = fx.refused(name, &resp, 403, "denied_private_address").await;
            assert_eq!(d["denied_addr"], denied, "{d}");
            nothing_dialled(&d);
        }
        fx.serves().await;
    });
}

#[test]
fn cname_chains_are_followed_to_the_final_address() {
    in_private_netns(|_| async {
        let (fx, dns) = fixture(
            vec![
                (
                    "alias.dns.test",
                    Zone::Records(vec![Rec::Cname("cdn.public.example")]),
                ),
                (
                    "cdn.public.example",
                    Zone::Records(vec![Rec::Cname("internal.corp.example")]),
                ),
                ("internal.corp.example", Zone::Records(vec![a("10.1.2.3")])),
                (
                    "meta-alias.dns.test",
                    Zone::Records(vec![Rec::Cname("metadata.google.internal")]),
                ),
                (
                    "metadata.google.internal",
                    Zone::Records(vec![a("169.254.169.254")]),
                ),
                (
                    "loop-alias.dns.test",
                    Zone::Records(vec![Rec::Cname("origin.loop.example")]),
                ),
                ("origin.loop.example", Zone::Records(vec![a("127.0.0.1")])),
            ],
            "2s",
        )
        .await;
        for (name, denied) in [
            ("alias.dns.test", "10.1.2.3"),
            ("meta-alias.dns.test", "169.254.169.254"),
        ] {
            let resp = connect(fx.addr(), &format!("{name}:443")).await;
            let d = fx.refused(name, &resp, 403, "denied_private_address").await;
            assert_eq!(d["denied_addr"], denied, "{d}");
            assert_eq!(d["host"], name, "the log names the requested host: {d}");
            nothing_dialled(&d);
        }
        // A chain to an address allowed by destinations.allow_cidrs is followed and dialled.
        let resp = connect(fx.addr(), "loop-alias.dns.test:8443").await;
        // Nothing listens on 8443 in this namespace: the address was checked, allowed and dialled.
        let d = fx
            .refused("loop alias", &resp, 502, "upstream_refused")
            .await;
        assert_eq!(d["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
        assert!(
            d["connect_ms"].as_f64().is_some(),
            "a connection was attempted: {d}"
        );
        let asked: Vec<String> = dns
            .queries
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, qtype)| *qtype == 1)
            .map(|(n, _)| n.clone())
            .collect();
        // A queries only: the chains end without an AAAA record, and for that empty answer the resolver
        // asks for the chain's last name itself (whatever it gets is checked like any answer).
        assert!(
            asked.iter().all(|n| n.ends_with(".dns.test")),
            "the proxy asks for the name, the server follows the chain: {asked:?}"
        );
        fx.serves().await;
    });
}

#[test]
fn servfail_nxdomain_and_silence() {
    in_private_netns(|_| async {
        let (fx, dns) = fixture(
            vec![
                ("fail.dns.test", Zone::ServFail),
                ("slow.dns.test", Zone::Silent),
                ("empty.dns.test", Zone::Records(vec![])),
            ],
            "500ms",
        )
        .await;
        for (name, code, reason) in [
            ("fail.dns.test", 502, "dns_failed"),
            ("missing.dns.test", 502, "dns_failed"),
            ("empty.dns.test", 502, "dns_failed"),
            ("slow.dns.test", 504, "dns_timeout"),
        ] {
            let started = std::time::Instant::now();
            let resp = connect(fx.addr(), &format!("{name}:443")).await;
            let d = fx.refused(name, &resp, code, reason).await;
            nothing_dialled(&d);
            assert!(
                d["resolved_addrs"].as_array().is_none_or(|a| a.is_empty()),
                "{d}"
            );
            if reason == "dns_timeout" {
                assert!(started.elapsed() >= std::time::Duration::from_millis(450));
                assert!(started.elapsed() < std::time::Duration::from_secs(5));
            }
        }
        assert!(
            dns.queries
                .lock()
                .unwrap()
                .iter()
                .any(|(n, _)| n == "slow.dns.test"),
            "the silent server was asked"
        );
        fx.serves().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_literals_meet_the_ipv4_checks() {
    // An IP rule for a private range is not enough: the destination check still refuses it, in any spelling.
    let fx = Fixture::with(
        "  - name: corp\n    hosts: [\"10.0.0.0/8\", \"169.254.169.254\"]\n    ports: [443]\n",
        "",
    )
    .await;
    for (target, denied) in [
        ("10.0.0.1:443", "10.0.0.1"),
        ("[::ffff:10.0.0.1]:443", "::ffff:10.0.0.1"),
        ("[::ffff:a00:1]:443", "::ffff:10.0.0.1"),
        ("[::ffff:169.254.169.254]:443", "::ffff:169.254.169.254"),
        ("0xa9fea9fe:443", "169.254.169.254"),
    ] {
        let d = fx
            .refused(
                target,
                &connect(fx.addr(), target).await,
                403,
                "denied_private_address",
            )
            .await;
        assert_eq!(d["denied_addr"], denied, "{d}");
        assert_eq!(d["rule"], "corp", "{d}");
        nothing_dialled(&d);
    }
    // Without an IP rule the mapped form is no way around the allowlist either.
    fx.refused(
        "mapped, no rule",
        &connect(fx.addr(), "[::ffff:8.8.8.8]:443").await,
        403,
        "denied_no_rule",
    )
    .await;
    fx.serves().await;
}

/// A name with A and AAAA records resolves to both families; the IPv6 address is dialled first.
#[test]
fn dual_stack_names_resolve_both_families_and_dial_ipv6_first() {
    in_private_netns(|_| async {
        let dns = start(vec![(
            "dual.dns.test",
            Zone::Records(vec![a("127.0.0.1"), aaaa("::1")]),
        )])
        .await;
        // The origin listens on IPv6 loopback only: an IPv4-only lookup could not reach it.
        let origin = tls_origin_at("[::1]:0".parse().unwrap(), &["dual.dns.test"]).await;
        let port = origin.addr.port();
        let proxy = start_proxy(&format!(
            r#"
allow:
  - name: dual
    hosts: ["dual.dns.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8", "::1/128"]
dns:
  servers: ["{}"]
"#,
            dns.addr
        ))
        .await;
        let resp = connect(proxy.addr, &format!("dual.dns.test:{port}")).await;
        let d = proxy.log.decision_for("dual.dns.test").await;
        assert_eq!(status(&resp), 200, "{resp}\n{d}");
        let mut resolved: Vec<&str> = d["resolved_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        resolved.sort_unstable();
        assert_eq!(resolved, ["127.0.0.1", "::1"], "{d}");
        assert_eq!(d["upstream_addr"], format!("[::1]:{port}"), "{d}");
    });
}
