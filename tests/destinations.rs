//! Destination safety after DNS: every resolved address is checked; special-purpose ranges are refused
//! unless destinations.allow_cidrs covers them. Uses static hosts and a DNS server on loopback.

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolving_to_private_or_metadata_addresses_are_denied() {
    let port = closed_port().await;
    let yaml = format!(
        r#"
allow:
  - name: all-test
    hosts: [".test"]
    ports: [{port}]
dns:
  hosts:
    loop.test: ["127.0.0.1"]
    meta.test: ["169.254.169.254"]
    mapped.test: ["::ffff:10.0.0.1"]
    ula.test: ["fd00::1"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    for (name, addr) in [
        ("loop.test", "127.0.0.1"),
        ("meta.test", "169.254.169.254"),
        ("mapped.test", "::ffff:10.0.0.1"),
        ("ula.test", "fd00::1"),
    ] {
        let resp = connect(proxy.addr, &format!("{name}:{port}")).await;
        assert_eq!(status(&resp), 403, "{name}: {resp}");
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("denied_private_address")
        );
        let d = &proxy.log.decision_for(name).await;
        assert_eq!(d["reason"], "denied_private_address");
        assert_eq!(d["denied_addr"], *addr, "{name}");
        assert_eq!(
            d["rule"], "all-test",
            "the allow rule that matched is still named"
        );
        assert!(d["upstream_addr"].is_null(), "nothing was dialled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_cidrs_exception_and_mixed_answers() {
    let origin = tls_origin(&["x"]).await;
    let port = origin.addr.port();
    let yaml = format!(
        r#"
allow:
  - name: all-test
    hosts: [".test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    loop.test: ["127.0.0.1"]
    mixed.test: ["127.0.0.1", "169.254.169.254"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("loop.test:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    // One bad answer poisons the whole name, even when the first answer is allowed.
    let resp = connect(proxy.addr, &format!("mixed.test:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let d = &proxy.log.decision_for("mixed.test").await;
    assert_eq!(d["denied_addr"], "169.254.169.254");
    assert_eq!(
        d["resolved_addrs"],
        serde_json::json!(["127.0.0.1", "169.254.169.254"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_answers_are_checked_and_pinned() {
    let origin = tls_origin(&["x"]).await;
    let port = origin.addr.port();
    let dns = dns_server(vec![
        ("api.dns.test", [127, 0, 0, 1]),
        ("meta.dns.test", [169, 254, 169, 254]),
    ])
    .await;
    let yaml = format!(
        r#"
allow:
  - name: dns-test
    hosts: [".dns.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  servers: ["{dns}"]
timeouts:
  dns: 2s
"#
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("api.dns.test:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let resp = connect(proxy.addr, &format!("meta.dns.test:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("denied_private_address")
    );
    let resp = connect(proxy.addr, &format!("missing.dns.test:{port}")).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("dns_failed"));
    let d = [
        proxy.log.decision_for("api.dns.test").await,
        proxy.log.decision_for("meta.dns.test").await,
        proxy.log.decision_for("missing.dns.test").await,
    ];
    assert_eq!(d[0]["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(d[0]["upstream_addr"], format!("127.0.0.1:{port}"));
    assert!(
        d[0]["dns_ms"].as_f64().is_some(),
        "a real lookup is timed: {}",
        d[0]
    );
    assert_eq!(d[1]["denied_addr"], "169.254.169.254");
    assert_eq!(d[2]["reason"], "dns_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_timeout_is_504() {
    // A UDP socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dns = silent.local_addr().unwrap();
    let yaml = format!(
        "allow:\n  - name: t\n    hosts: [\".test\"]\ndns:\n  servers: [\"{dns}\"]\ntimeouts:\n  dns: 300ms\n"
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, "slow.test:443").await;
    assert_eq!(status(&resp), 504, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("dns_timeout"));
    drop(silent);
}
