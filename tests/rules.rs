//! Per-rule behaviour end to end: a rule's own idle timeout keeps a quiet tunnel open past the global one, and
//! path prefixes are enforced for plain-HTTP requests.

mod support;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn yaml(port: u16) -> String {
    format!(
        r#"
allow:
  - name: control
    hosts: ["control.test"]
    ports: [{port}]
    idle_timeout: 30s
  - name: forever
    hosts: ["forever.test"]
    ports: [{port}]
    idle_timeout: none
  - name: plain
    hosts: ["plain.test"]
    ports: [{port}]
  - name: bucket
    hosts: ["plain.test"]
    ports: [{port}]
    paths: ["/bucket/"]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    control.test: ["127.0.0.1"]
    forever.test: ["127.0.0.1"]
    plain.test: ["127.0.0.1"]
    paths.test: ["127.0.0.1"]
timeouts:
  idle: 300ms
"#
    )
}

/// Open a tunnel through the proxy, stay quiet for `quiet`, then send one HTTP request through it. Returns the
/// response text, empty if the tunnel was closed.
async fn quiet_then_request(
    proxy: std::net::SocketAddr,
    authority: &str,
    quiet: Duration,
) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_response(&mut s).await;
    assert_eq!(status(&head), 200, "{head}");
    tokio::time::sleep(quiet).await;
    let _ = s
        .write_all(b"GET /inside HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_tunnel_to_a_control_rule_outlives_the_global_idle_timeout() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml(port)).await;

    // Global idle 300ms; the rule's 30s and "none" keep the tunnel through 1s of silence.
    for host in ["control.test", "forever.test"] {
        let resp = quiet_then_request(
            proxy.addr,
            &format!("{host}:{port}"),
            Duration::from_secs(1),
        )
        .await;
        assert!(
            resp.contains("GET /inside"),
            "{host}: tunnel closed: {resp:?}"
        );
    }

    // A rule without its own idle timeout is cut by the global one.
    let resp = quiet_then_request(
        proxy.addr,
        &format!("plain.test:{port}"),
        Duration::from_secs(1),
    )
    .await;
    assert!(!resp.contains("GET /inside"), "{resp:?}");
    let closes = proxy.log.wait_events("close", 3).await;
    let plain = closes
        .iter()
        .find(|c| c["host"] == "plain.test")
        .expect("close line for plain.test");
    assert_eq!(plain["close_reason"], "idle_timeout", "{plain}");
    for c in closes.iter().filter(|c| c["host"] != "plain.test") {
        assert_ne!(c["close_reason"], "idle_timeout", "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefixes_are_enforced_for_plain_http() {
    let origin = http_origin().await;
    let port = origin.port();
    let mut cfg = yaml(port);
    // Only the path rule covers paths.test.
    cfg = cfg.replace(
        "    paths: [\"/bucket/\"]",
        "    paths: [\"/bucket/\"]\n  - name: paths-only\n    hosts: [\"paths.test\"]\n    ports: [PORT]\n    paths: [\"/bucket/\"]",
    );
    let cfg = cfg.replace("PORT", &port.to_string());
    let proxy = start_proxy(&cfg).await;

    let get = |path: &str| {
        format!("GET http://paths.test:{port}{path} HTTP/1.1\r\nHost: paths.test:{port}\r\nConnection: close\r\n\r\n")
    };
    let resp = raw(proxy.addr, get("/bucket/object").as_bytes()).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.contains("GET /bucket/object"), "{resp}");

    for path in [
        "/other/object",
        "/bucket/../other",
        "/bucket/%2e%2e/other",
        "/bucke",
    ] {
        let resp = raw(proxy.addr, get(path).as_bytes()).await;
        assert_eq!(status(&resp), 403, "{path}: {resp}");
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("denied_path"),
            "{path}"
        );
    }
    let decisions = proxy.log.wait_events("decision", 5).await;
    let denied = decisions
        .iter()
        .filter(|d| d["reason"] == "denied_path")
        .count();
    assert_eq!(denied, 4, "{decisions:?}");
    assert!(decisions.iter().all(|d| d["rule"] == "paths-only"));

    // A host with a path-free rule as well is allowed on any path (the first matching rule names it).
    let resp = raw(
        proxy.addr,
        format!("GET http://plain.test:{port}/anything HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");

    // CONNECT carries no path: the host is allowed.
    let resp = connect(proxy.addr, &format!("paths.test:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_refused_with_the_reason_in_the_detail() {
    let origin = http_origin().await;
    let port = origin.port();
    let cfg = format!(
        r#"
allow:
  - name: bucket
    hosts: ["paths.test"]
    ports: [{port}]
    paths: ["/bucket/"]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    paths.test: ["127.0.0.1"]
"#
    );
    let proxy = start_proxy(&cfg).await;
    let get = |path: &str| {
        format!("GET http://paths.test:{port}{path} HTTP/1.1\r\nHost: paths.test:{port}\r\nConnection: close\r\n\r\n")
    };
    let cases = [
        ("/bucket/%252e%252e/secret", "%25"),
        ("/bucket/%2E%2E/secret", "%2e"),
        ("/bucket/..%2Fsecret", "%2f"),
        ("/bucket/..;/secret", "'..' segment"),
        ("/bucket/a\\..\\secret", "backslash"),
        ("/bucket/%c0%ae%c0%ae/secret", "overlong"),
    ];
    for (i, (path, why)) in cases.iter().enumerate() {
        let resp = raw(proxy.addr, get(path).as_bytes()).await;
        assert_eq!(status(&resp), 403, "{path}: {resp}");
        assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_path"));
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        let detail = d["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("ambiguous") && detail.contains(why),
            "{path}: {d}"
        );
    }
    // A plain path under the prefix still goes through, percent-encoded characters included.
    let resp = raw(proxy.addr, get("/bucket/a%20b").as_bytes()).await;
    assert_eq!(status(&resp), 200, "{resp}");
}
