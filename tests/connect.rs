//! CONNECT tunnels end to end: curl → egressd → TLS origin on loopback.

mod support;
use support::*;

fn allow_yaml(port: u16) -> String {
    format!(
        r#"
allow:
  - name: origin
    hosts: ["api.test.example"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    api.test.example: ["127.0.0.1"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_connect_reaches_origin_with_decision_and_close_lines() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&allow_yaml(port)).await;
    let url = format!("https://api.test.example:{port}/");
    let out = curl(
        &[
            "--proxy",
            &proxy.url(),
            "--cacert",
            origin.ca_pem.to_str().unwrap(),
            &url,
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");

    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["kind"], "connect");
    assert_eq!(d["method"], "CONNECT");
    assert_eq!(d["host"], "api.test.example");
    assert_eq!(d["port"], port);
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["reason"], "allowed");
    assert_eq!(d["rule"], "origin");
    assert_eq!(d["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(d["upstream_addr"], format!("127.0.0.1:{port}"));
    assert!(d["connect_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        d["dns_ms"].is_null(),
        "static hosts need no DNS lookup: {d}"
    );
    assert!(d["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(d["ts"].as_str().unwrap().contains('T'));
    let conn_id = d["conn_id"].as_u64().unwrap();

    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["conn_id"].as_u64().unwrap(), conn_id);
    assert_eq!(c["kind"], "connect");
    assert!(
        c["bytes_up"].as_u64().unwrap() > 200,
        "ClientHello and request go up: {c}"
    );
    assert!(
        c["bytes_down"].as_u64().unwrap() > 500,
        "certificate and response come down: {c}"
    );
    assert!(c["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(c["close_reason"], "eof");
    assert_eq!(
        proxy.log.events("decision").len(),
        1,
        "exactly one decision line per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_environment_variable() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&allow_yaml(port)).await;
    let url = format!("https://api.test.example:{port}/");
    let out = curl(
        &["--cacert", origin.ca_pem.to_str().unwrap(), &url],
        &[("HTTPS_PROXY", &proxy.url())],
    )
    .await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    // A denied host through the same variable fails with the proxy's 403.
    let out = curl(
        &[&format!("https://denied.test.example:{port}/")],
        &[("HTTPS_PROXY", &proxy.url())],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_host_gets_403_with_reason() {
    let proxy = start_proxy(&allow_yaml(443)).await;
    let resp = connect(proxy.addr, "evil.example:443").await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    assert!(
        body.contains("evil.example:443") && body.contains("denied_no_rule"),
        "{body}"
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["reason"], "denied_no_rule");
    assert!(d["rule"].is_null());
    assert!(
        d["resolved_addrs"].as_array().unwrap().is_empty(),
        "nothing is resolved before the decision"
    );
    assert!(
        proxy.log.events("close").is_empty(),
        "a refused CONNECT has no tunnel to close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_pattern_form() {
    let origin = tls_origin(&["x"]).await;
    let port = origin.addr.port();
    let names = [
        "api.exact.test",
        "a.sub.test",
        "deep.a.sub.test",
        "sub.test",
        "apex.test",
        "w.apex.test",
        "api-eu.glob.test",
        "api.glob.test",
        "other.test",
    ];
    let hosts: String = names
        .iter()
        .map(|n| format!("    {n}: [\"127.0.0.1\"]\n"))
        .collect();
    let yaml = format!(
        r#"
allow:
  - name: exact
    hosts: ["api.exact.test"]
    ports: [{port}]
  - name: subdomains
    hosts: ["*.sub.test"]
    ports: [{port}]
  - name: apex
    hosts: [".apex.test"]
    ports: [{port}]
  - name: glob
    hosts: ["api-*.glob.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
{hosts}"#
    );
    let proxy = start_proxy(&yaml).await;
    let cases = [
        ("api.exact.test", Some("exact")),
        ("a.sub.test", Some("subdomains")),
        ("deep.a.sub.test", Some("subdomains")),
        ("sub.test", None),
        ("apex.test", Some("apex")),
        ("w.apex.test", Some("apex")),
        ("api-eu.glob.test", Some("glob")),
        ("api.glob.test", None),
        ("other.test", None),
    ];
    for (i, (name, rule)) in cases.iter().enumerate() {
        let resp = connect(proxy.addr, &format!("{name}:{port}")).await;
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        match rule {
            Some(r) => {
                assert_eq!(status(&resp), 200, "{name}: {resp}");
                assert_eq!(d["rule"], *r, "{name}");
            }
            None => {
                assert_eq!(status(&resp), 403, "{name}: {resp}");
                assert_eq!(d["reason"], "denied_no_rule", "{name}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_ip_allowed_only_by_ip_rule() {
    let origin = tls_origin(&["x"]).await;
    let port = origin.addr.port();
    // The name rule covers a name that resolves to 127.0.0.1; CONNECT to the IP itself is not covered by it.
    let yaml = format!(
        r#"
allow:
  - name: by-name
    hosts: ["origin.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    origin.test: ["127.0.0.1"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));

    let yaml = format!(
        r#"
allow:
  - name: fallback-ip
    hosts: ["127.0.0.1"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["rule"], "fallback-ip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_ipv4_forms_are_canonicalized_and_denied() {
    let port = closed_port().await;
    // Only names are allowed (including a glob that matches every name), so no form of 127.0.0.1 may pass.
    let yaml = format!(
        r#"
allow:
  - name: names
    hosts: ["*", ".test"]
    ports: [{port}]
    broad_hosts: true
"#
    );
    let proxy = start_proxy(&yaml).await;
    let forms = [
        "2130706433",
        "0x7f.1",
        "127.1",
        "0177.0.0.1",
        "0x7F000001",
        "127.0.0.1.",
    ];
    for (i, form) in forms.iter().enumerate() {
        let resp = connect(proxy.addr, &format!("{form}:{port}")).await;
        assert_eq!(status(&resp), 403, "{form}: {resp}");
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(
            d["host"], "127.0.0.1",
            "{form} must be logged as the address it means"
        );
        // No rule names the address, and it is loopback: reported as the probe it is.
        assert_eq!(d["reason"], "denied_private_address", "{form}");
    }
    // Numeric-looking names that are not valid IPv4 are refused as invalid hosts.
    let resp = connect(proxy.addr, &format!("1.2.3.4.5:{port}")).await;
    assert_eq!(status(&resp), 400, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("invalid_host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rule_does_not_bypass_the_address_check() {
    // An IP rule for a loopback address still needs destinations.allow_cidrs.
    let port = closed_port().await;
    let yaml = format!("allow:\n  - name: ip\n    hosts: [\"127.0.0.1\"]\n    ports: [{port}]\n");
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("0x7f.1:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("denied_private_address")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_targets_get_400() {
    let proxy = start_proxy(&allow_yaml(443)).await;
    for (target, reason) in [
        ("api.test.example", "invalid_target"),
        ("api.test.example:0", "invalid_target"),
        ("api.test.example:65536", "invalid_target"),
        ("user@api.test.example:443", "invalid_target"),
        (":443", "invalid_target"),
        ("xn--zz.example:443", "invalid_host"),
    ] {
        let resp = connect(proxy.addr, target).await;
        assert_eq!(status(&resp), 400, "{target}: {resp}");
        assert_eq!(header(&resp, "x-egressd-reason"), Some(reason), "{target}");
    }
    // The proxy still serves afterwards.
    let resp = connect(proxy.addr, "evil.example:443").await;
    assert_eq!(status(&resp), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_allows_and_logs_would_deny() {
    let origin = tls_origin(&["x"]).await;
    let port = origin.addr.port();
    let yaml = r#"
mode: report
allow:
  - name: other
    hosts: ["other.test"]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    unlisted.test: ["127.0.0.1"]
    meta.test: ["169.254.169.254"]
"#;
    let proxy = start_proxy(yaml).await;
    let resp = connect(proxy.addr, &format!("unlisted.test:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "would_deny");
    assert_eq!(d["reason"], "denied_no_rule");
    // Report mode never opens the destination safety net.
    let resp = connect(proxy.addr, &format!("meta.test:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let d = &proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["reason"], "denied_private_address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_data_after_connect_is_forwarded_not_dropped() {
    // A plain TCP echo-ish origin: records what it receives.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut s, _) = l.accept().await.unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).await.unwrap();
        v
    });
    let yaml = format!(
        "allow:\n  - name: o\n    hosts: [\"o.test\"]\n    ports: [{port}]\ndestinations:\n  allow_cidrs: [\"127.0.0.0/8\"]\ndns:\n  hosts:\n    o.test: [\"127.0.0.1\"]\n"
    );
    let proxy = start_proxy(&yaml).await;
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT o.test:{port} HTTP/1.1\r\n\r\nEARLY").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 200);
    s.write_all(b"-LATER").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(got.await.unwrap(), b"EARLY-LATER");
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["bytes_up"], 11);
}

/// A name pinned by the pod's `hostAliases` (which the kubelet writes to /etc/hosts) resolves through the
/// hosts file; `dns.hosts` comes first; an address from the hosts file is checked like a DNS answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_in_the_hosts_file_resolve_after_dns_hosts() {
    let origin = tls_origin(&["mirror.test", "pinned.test", "meta.test"]).await;
    let port = origin.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\n# Entries added by HostAliases.\n\
         127.0.0.1\tmirror.test\n127.0.0.9\tpinned.test\n169.254.169.254\tmeta.test\n",
    )
    .unwrap();
    let proxy = start_proxy(&format!(
        r#"
allow:
  - name: origin
    hosts: ["mirror.test", "pinned.test", "meta.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts_file: {hosts}
  hosts:
    pinned.test: ["127.0.0.1"]
"#,
        hosts = hosts.display()
    ))
    .await;
    let get = |host: &str| {
        let url = format!("https://{host}:{port}/");
        let ca = origin.ca_pem.to_str().unwrap().to_string();
        let proxy = proxy.url();
        async move { curl(&["--proxy", &proxy, "--cacert", &ca, &url], &[]).await }
    };
    for host in ["mirror.test", "pinned.test"] {
        let out = get(host).await;
        assert_eq!(out.code, 0, "{host}: {}", out.stderr);
        assert_eq!(out.stdout, "hello from tls origin");
    }
    let out = get("meta.test").await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    let lines = proxy.log.wait_events("decision", 3).await;
    assert_eq!(lines[0]["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(lines[1]["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(lines[2]["reason"], "denied_private_address", "{}", lines[2]);

    // A hosts file the configuration names must exist.
    let missing = dir.path().join("no-such-hosts");
    let err =
        egressd::config::from_yaml_str(&format!("dns: {{hosts_file: {}}}\n", missing.display()))
            .unwrap_err();
    assert!(
        err.to_string().contains("dns.hosts_file: cannot read"),
        "{err}"
    );
    assert!(egressd::config::from_yaml_str("dns: {hosts_file: \"off\"}\n").is_ok());
}
