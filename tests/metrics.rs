//! The admin listener and the metrics: exact counts after known traffic, scraped from /metrics.

mod support;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer_and_unknown_paths_are_404() {
    let proxy = start_proxy("").await;
    let admin = proxy.admin_addr.expect("admin listener");
    assert_ne!(admin, proxy.addr, "the admin listener has its own port");
    assert_eq!(proxy.admin_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(proxy.admin_get("/readyz").await, (200, "ready\n".into()));
    assert_eq!(proxy.admin_get("/nope").await.0, 404);
    assert_eq!(proxy.admin_get("/metrics/extra").await.0, 404);
    let resp = raw(
        admin,
        b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 405, "{resp}");
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "egressd_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{text}"
    );
    let started = metric_value(
        &text,
        "egressd_config_last_reload_success_timestamp_seconds",
    )
    .expect("set at startup");
    assert!(started > 1.7e9, "{started}");
    // The admin port does not proxy: a proxy request there is just an unknown path.
    let resp = raw(
        admin,
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 404, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_off_binds_nothing() {
    let proxy = start_proxy("admin: {listen: \"off\"}\n").await;
    assert_eq!(proxy.admin_addr, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_bytes_and_timings_are_counted_exactly() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let plain = http_origin().await;
    let dns = dns_server(vec![("api.test.example", [127, 0, 0, 1])]).await;
    let yaml = format!(
        r#"
allow:
  - name: origin
    hosts: ["api.test.example"]
    ports: [{port}]
  - name: plain
    hosts: ["plain.test"]
    ports: [{}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  servers: ["{dns}"]
  hosts:
    plain.test: ["127.0.0.1"]
"#,
        plain.port()
    );
    let proxy = start_proxy(&yaml).await;
    let url = format!("https://api.test.example:{port}/");
    for _ in 0..2 {
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
    }
    let resp = connect(proxy.addr, "denied.example:443").await;
    assert_eq!(status(&resp), 403, "{resp}");
    let body = "x".repeat(1234);
    let out = curl(
        &[
            "--proxy",
            &proxy.url(),
            "--data-binary",
            &body,
            &format!("http://plain.test:{}/upload", plain.port()),
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "curl failed: {}", out.stderr);
    assert!(out.stdout.contains("body-length: 1234"), "{}", out.stdout);

    let closes = proxy.log.wait_events("close", 3).await;
    let text = proxy.metrics().await;
    let get = |series: &str| metric_value(&text, series).unwrap_or(0.0);
    assert_eq!(
        get(
            r#"egressd_decisions_total{decision="allow",reason="allowed",rule="origin",vendor="",client_group=""}"#
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        get(
            r#"egressd_decisions_total{decision="allow",reason="allowed",rule="plain",vendor="",client_group=""}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        get(
            r#"egressd_decisions_total{decision="deny",reason="denied_no_rule",rule="",vendor="",client_group=""}"#
        ),
        1.0,
        "{text}"
    );
    // Bytes: the metric is the sum of the close lines, and the forwarded body is counted exactly.
    let http_close = closes.iter().find(|c| c["kind"] == "http").unwrap();
    assert_eq!(http_close["bytes_up"], 1234);
    let sum = |k: &str| closes.iter().map(|c| c[k].as_u64().unwrap()).sum::<u64>() as f64;
    assert_eq!(
        get(r#"egressd_bytes_total{direction="upstream"}"#),
        sum("bytes_up")
    );
    assert_eq!(
        get(r#"egressd_bytes_total{direction="downstream"}"#),
        sum("bytes_down")
    );
    assert!(sum("bytes_down") > 1000.0, "{closes:?}");
    // Two tunnels, two DNS lookups (plain.test is in dns.hosts: no lookup), three upstream connects.
    assert_eq!(get("egressd_tunnel_duration_seconds_count"), 2.0, "{text}");
    assert_eq!(get("egressd_dns_lookup_seconds_count"), 2.0, "{text}");
    assert_eq!(get("egressd_upstream_connect_seconds_count"), 3.0, "{text}");
    // Hostnames and client addresses never become labels.
    assert!(!text.contains("api.test.example"), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    for name in egressd::telemetry::metrics::METRIC_NAMES {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from {text}"
        );
    }
    // Nothing is left open once the clients are done.
    for _ in 0..100 {
        let text = proxy.metrics().await;
        if metric_value(&text, r#"egressd_connections_active{listener="plain"}"#) == Some(0.0)
            && metric_value(&text, "egressd_tunnels_active") == Some(0.0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "connections still counted active: {}",
        proxy.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_counts_would_deny() {
    let origin = tls_origin(&["unlisted.test"]).await;
    let port = origin.addr.port();
    let yaml = r#"
mode: report
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    unlisted.test: ["127.0.0.1"]
"#;
    let proxy = start_proxy(yaml).await;
    let out = curl(
        &[
            "--proxy",
            &proxy.url(),
            "--cacert",
            origin.ca_pem.to_str().unwrap(),
            &format!("https://unlisted.test:{port}/"),
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "report mode lets it through: {}", out.stderr);
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "would_deny");
    assert_eq!(
        proxy
            .metric(r#"egressd_decisions_total{decision="would_deny",reason="denied_no_rule",rule="",vendor="",client_group=""}"#)
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric(r#"egressd_decisions_total{decision="deny",reason="denied_no_rule",rule="",vendor="",client_group=""}"#)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_label_names_the_profile() {
    // Allowed by the profile, then refused at the destination check (mapped to a private address): the
    // decision names the profile rule, and the vendor label the profile.
    let proxy =
        start_proxy("vendors: [castai-us]\ndns:\n  hosts:\n    api.cast.ai: [\"10.1.2.3\"]\n")
            .await;
    let resp = connect(proxy.addr, "api.cast.ai:443").await;
    assert_eq!(status(&resp), 403, "{resp}");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["rule"], "castai-us/api");
    assert_eq!(d["reason"], "denied_private_address");
    assert_eq!(
        proxy
            .metric(r#"egressd_decisions_total{decision="deny",reason="denied_private_address",rule="castai-us/api",vendor="castai-us",client_group=""}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_rejection_is_counted() {
    let proxy = start_proxy("limits: {max_connections: 1}\n").await;
    let mut first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    first.write_all(b"CON").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = connect(proxy.addr, "a.test:443").await;
    assert_eq!(status(&resp), 503, "{resp}");
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_connections_rejected_total{reason="connection_limit"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_connections_rejected_total{reason="client_tls_failed"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_decisions_total{decision="deny",reason="connection_limit",rule="",vendor="",client_group=""}"#
        ),
        Some(1.0),
        "{text}"
    );
    // The held connection is still counted as active.
    assert_eq!(
        metric_value(&text, r#"egressd_connections_active{listener="plain"}"#),
        Some(1.0),
        "{text}"
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_client_tls_handshake_is_counted_as_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
    std::fs::write(dir.path().join("p.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("p.key"), cert.key_pair.serialize_pem()).unwrap();
    let yaml = format!(
        "listen_tls: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n",
        dir.path().join("p.pem").display(),
        dir.path().join("p.key").display()
    );
    let proxy = start_proxy(&yaml).await;
    // Plain HTTP to the TLS listener: not a TLS handshake.
    let mut s = tokio::net::TcpStream::connect(proxy.tls_addr.unwrap())
        .await
        .unwrap();
    s.write_all(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "client_tls_failed");
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_connections_rejected_total{reason="client_tls_failed"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains(r#"egressd_connections_active{listener="tls"}"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_becomes_a_tunnel_stays_counted() {
    let plain = http_origin().await;
    let echo = echo_origin().await;
    let yaml = format!(
        "allow:\n  - name: plain\n    hosts: [\"plain.test\"]\n    ports: [{}]\n\
         \x20 - name: echo\n    hosts: [\"echo.test\"]\n    ports: [{}]\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts:\n    plain.test: [\"127.0.0.1\"]\n    echo.test: [\"127.0.0.1\"]\n",
        plain.port(),
        echo.port()
    );
    let proxy = start_proxy(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!(
            "GET http://plain.test:{}/ HTTP/1.1\r\nHost: plain.test\r\n\r\n",
            plain.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(status(&read_response(&mut s).await), 200);
    let authority = format!("echo.test:{}", echo.port());
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The upgrade's 200 has no body and no length: read just the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "{head:?}");
        head.push(b[0]);
    }
    assert_eq!(status(&String::from_utf8_lossy(&head)), 200);
    echo_roundtrip(&mut s, b"through the upgrade")
        .await
        .unwrap();
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(&text, r#"egressd_connections_active{listener="plain"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "egressd_tunnels_active"),
        Some(1.0),
        "{text}"
    );
    drop(s);
    for _ in 0..100 {
        let text = proxy.metrics().await;
        if metric_value(&text, r#"egressd_connections_active{listener="plain"}"#) == Some(0.0)
            && metric_value(&text, "egressd_tunnels_active") == Some(0.0)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("still counted: {}", proxy.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_connections_are_counted_per_long_lived_rule_across_a_reload() {
    let echo = echo_origin().await;
    let yaml = format!(
        "allow:\n  - name: control\n    hosts: [\"agent.test\"]\n    ports: [{p}]\n    idle_timeout: none\n\
         \x20 - name: short\n    hosts: [\"short.test\"]\n    ports: [{p}]\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts:\n    agent.test: [\"127.0.0.1\"]\n    short.test: [\"127.0.0.1\"]\n",
        p = echo.port()
    );
    let proxy = start_proxy(&yaml).await;
    let series = r#"egressd_control_connections_open{rule="control",vendor=""}"#;
    // Shown at 0 before the first connection; rules that are not long-lived have no series.
    let text = proxy.metrics().await;
    assert_eq!(metric_value(&text, series), Some(0.0), "{text}");
    assert!(!text.contains("egressd_control_connections_open{rule=\"short\""));
    let mut control = open_tunnel(proxy.addr, &format!("agent.test:{}", echo.port())).await;
    echo_roundtrip(&mut control, b"hello").await.unwrap();
    let mut other = open_tunnel(proxy.addr, &format!("short.test:{}", echo.port())).await;
    echo_roundtrip(&mut other, b"hello").await.unwrap();
    assert_eq!(proxy.metric(series).await, 1.0);
    // A reload keeps counting the tunnel opened before it, and a second one after it.
    let reloaded = egressd::config::from_yaml_str(&format!("listen: 127.0.0.1:0\n{yaml}"));
    proxy.reloader.apply(reloaded).unwrap();
    let mut second = open_tunnel(proxy.addr, &format!("agent.test:{}", echo.port())).await;
    echo_roundtrip(&mut second, b"hello").await.unwrap();
    assert_eq!(proxy.metric(series).await, 2.0);
    drop(control);
    drop(second);
    for _ in 0..100 {
        if proxy.metric(series).await == 0.0 {
            assert!(!proxy
                .metrics()
                .await
                .contains("egressd_control_connections_open{rule=\"short\""));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("still counted: {}", proxy.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_last_match_is_set_by_allowed_requests_and_follows_reloads() {
    let plain = http_origin().await;
    let config = |rules: &[&str]| {
        let mut yaml = format!(
            "destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
             dns:\n  hosts:\n    plain.test: [\"127.0.0.1\"]\n\
             deny:\n  - {{name: guard, hosts: [blocked.test]}}\n\
             allow:\n  - {{name: plain, hosts: [plain.test], ports: [{}]}}\n",
            plain.port()
        );
        for r in rules {
            yaml.push_str(&format!("  - {{name: {r}, hosts: [{r}.test]}}\n"));
        }
        yaml
    };
    let series =
        |rule: &str| format!("egressd_rule_last_match_timestamp_seconds{{rule=\"{rule}\"}}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, config(&["stale"])).unwrap();
    let proxy = start_proxy_file(&path).await;
    let text = proxy.metrics().await;
    assert_eq!(metric_value(&text, &series("plain")), Some(0.0), "{text}");
    assert_eq!(metric_value(&text, &series("stale")), Some(0.0), "{text}");
    assert_eq!(
        metric_value(&text, &series("guard")),
        None,
        "deny rules are not series"
    );

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let resp = raw(
        proxy.addr,
        format!(
            "GET http://plain.test:{}/ HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n",
            plain.port()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    // Refusals, by a deny rule or for want of one, set nothing.
    assert_eq!(status(&connect(proxy.addr, "blocked.test:443").await), 403);
    assert_eq!(status(&connect(proxy.addr, "stale.test:8443").await), 403);
    proxy.log.wait_events("decision", 3).await;
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let text = proxy.metrics().await;
    let at = metric_value(&text, &series("plain")).expect("plain is a series");
    assert!(
        at >= before.floor() && at <= after,
        "{at} not in {before}..{after}"
    );
    assert_eq!(metric_value(&text, &series("stale")), Some(0.0), "{text}");
    assert_eq!(metric_value(&text, &series("guard")), None, "{text}");

    // A reload removes the series of the rules it removes, adds the new ones, and keeps the time of the rest.
    std::fs::write(&path, config(&["fresh"])).unwrap();
    proxy.reloader.reload().expect("valid configuration");
    let text = proxy.metrics().await;
    assert_eq!(metric_value(&text, &series("stale")), None, "{text}");
    assert_eq!(metric_value(&text, &series("fresh")), Some(0.0), "{text}");
    assert_eq!(metric_value(&text, &series("plain")), Some(at), "{text}");
    assert_eq!(
        text.matches("# TYPE egressd_rule_last_match_timestamp_seconds gauge")
            .count(),
        1,
        "{text}"
    );
}
