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
    for (i, (name, addr)) in [
        ("loop.test", "127.0.0.1"),
        ("meta.test", "169.254.169.254"),
        ("mapped.test", "::ffff:10.0.0.1"),
        ("ula.test", "fd00::1"),
    ]
    .iter()
    .enumerate()
    {
        let resp = connect(proxy.addr, &format!("{name}:{port}")).await;
        assert_eq!(status(&resp), 403, "{name}: {resp}");
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("denied_private_address")
        );
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
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
    // The tunnel's line may come after the refusal (it is written when its first bytes are judged).
    let lines = proxy.log.wait_events("decision", 2).await;
    let d = lines.iter().find(|v| v["host"] == "mixed.test").unwrap();
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
    // A tunnel's decision line is written once its first bytes (here: the client closing) are judged, so it
    // may come after the refusals that follow it: find each line by host.
    let d = proxy.log.wait_events("decision", 3).await;
    let by_host = |h: &str| {
        d.iter()
            .find(|v| v["host"] == h)
            .unwrap_or_else(|| panic!("no decision for {h}: {d:?}"))
    };
    let api = by_host("api.dns.test");
    assert_eq!(api["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(api["upstream_addr"], format!("127.0.0.1:{port}"));
    assert!(
        api["dns_ms"].as_f64().is_some(),
        "a real lookup is timed: {api}"
    );
    assert_eq!(by_host("meta.dns.test")["denied_addr"], "169.254.169.254");
    assert_eq!(by_host("missing.dns.test")["reason"], "dns_failed");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_probes_of_special_addresses_are_reported_as_such() {
    // No rule names these addresses: a metadata or internal probe is still told apart from an unlisted host.
    let proxy = start_proxy("allow:\n  - name: t\n    hosts: [\"api.test\"]\n").await;
    for (i, (authority, addr)) in [
        ("169.254.169.254:80", "169.254.169.254"),
        ("[fd00:ec2::254]:80", "fd00:ec2::254"),
        ("168.63.129.16:80", "168.63.129.16"),
        ("100.100.100.200:80", "100.100.100.200"),
    ]
    .iter()
    .enumerate()
    {
        let resp = connect(proxy.addr, authority).await;
        assert_eq!(status(&resp), 403, "{authority}: {resp}");
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("denied_private_address"),
            "{authority}"
        );
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["reason"], "denied_private_address", "{d}");
        assert_eq!(d["denied_addr"], *addr, "{d}");
        assert!(d["rule"].is_null(), "{d}");
    }
    // Plain HTTP (absolute form) is judged the same way.
    let resp = raw(
        proxy.addr,
        b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("denied_private_address")
    );
    let d = &proxy.log.wait_events("decision", 5).await[4];
    assert!(
        d["detail"]
            .as_str()
            .is_some_and(|s| s.contains("169.254.0.0/16")),
        "{d}"
    );
    // A public address that no rule names stays an ordinary denial.
    let resp = connect(proxy.addr, "8.8.8.8:443").await;
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_wireserver_is_refused_by_ip_rule_and_by_name() {
    let port = closed_port().await;
    let yaml = format!(
        r#"
allow:
  - name: azure-ip
    hosts: ["168.63.129.16"]
    ports: [{port}]
  - name: azure-name
    hosts: ["wire.test"]
    ports: [{port}]
dns:
  hosts:
    wire.test: ["168.63.129.16"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    for (i, (authority, rule)) in [
        (format!("168.63.129.16:{port}"), "azure-ip"),
        (format!("wire.test:{port}"), "azure-name"),
    ]
    .iter()
    .enumerate()
    {
        let resp = connect(proxy.addr, authority).await;
        assert_eq!(status(&resp), 403, "{authority}: {resp}");
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("denied_private_address")
        );
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["rule"], *rule);
        assert_eq!(d["denied_addr"], "168.63.129.16");
        assert!(d["upstream_addr"].is_null(), "nothing was dialled: {d}");
    }
}
