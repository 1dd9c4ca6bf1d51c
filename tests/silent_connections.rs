//! Connections that never send a byte are not requests: counted, not logged. Connections refused before
//! their request is read are counted each, and logged once per burst.

mod support;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy certificate in a temporary directory, and the config lines of a TLS listener using it.
fn tls_listener() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
    std::fs::write(dir.path().join("p.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("p.key"), cert.key_pair.serialize_pem()).unwrap();
    let yaml = format!(
        "listen_tls: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n",
        dir.path().join("p.pem").display(),
        dir.path().join("p.key").display()
    );
    (dir, yaml)
}

/// Wait (up to 10 s) until a series reaches `want`.
async fn wait_metric(proxy: &TestProxy, series: &str, want: f64) {
    let mut got = 0.0;
    for _ in 0..500 {
        got = proxy.metric(series).await;
        if got == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "{series} is {got}, expected {want}:\n{}",
        proxy.metrics().await
    );
}

/// Everything the proxy sends before it closes the connection.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_counted_not_logged() {
    let (_dir, tls) = tls_listener();
    let proxy = start_proxy(&format!("{tls}timeouts: {{header: 300ms}}\n")).await;
    let tls_addr = proxy.tls_addr.unwrap();
    // Connect and close at once (health checks, port scans), on both listeners.
    for _ in 0..5 {
        drop(TcpStream::connect(proxy.addr).await.unwrap());
        drop(TcpStream::connect(tls_addr).await.unwrap());
    }
    // Connect and say nothing until the proxy gives up: closed quietly, no 408.
    for addr in [proxy.addr, tls_addr] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            until_closed(&mut s).await,
            b"",
            "{addr} answered a silent connection"
        );
    }
    wait_metric(
        &proxy,
        r#"egressd_connections_empty_total{listener="plain"}"#,
        6.0,
    )
    .await;
    wait_metric(
        &proxy,
        r#"egressd_connections_empty_total{listener="tls"}"#,
        6.0,
    )
    .await;
    // A client that sent bytes the TLS listener cannot take is a refusal with its decision line, and is the
    // only one.
    let mut s = TcpStream::connect(tls_addr).await.unwrap();
    s.write_all(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    until_closed(&mut s).await;
    let lines = proxy.log.wait_events("decision", 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["reason"], "client_tls_failed");
    let text = proxy.metrics().await;
    for (series, want) in [
        (
            r#"egressd_connections_rejected_total{reason="client_tls_failed"}"#,
            1.0,
        ),
        (
            r#"egressd_decisions_total{decision="deny",reason="client_tls_failed",rule="",vendor="",client_group=""}"#,
            1.0,
        ),
    ] {
        assert_eq!(metric_value(&text, series), Some(want), "{series}: {text}");
    }
    assert!(!text.contains("header_timeout"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_over_the_limit_are_counted_each_and_logged_once_per_burst() {
    let proxy = start_proxy("limits: {max_connections: 1}\n").await;
    // The only slot, held by a head that has started.
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    first.write_all(b"CON").await.unwrap();
    let refused = r#"egressd_connections_rejected_total{reason="connection_limit"}"#;
    // A burst: each one is refused with the 503, whether it sent its request or just connected.
    for i in 0..30 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
        }
        let resp = String::from_utf8_lossy(&until_closed(&mut s).await).into_owned();
        assert_eq!(status(&resp), 503, "{resp}");
        assert_eq!(header(&resp, "x-egressd-reason"), Some("connection_limit"));
    }
    wait_metric(&proxy, refused, 30.0).await;
    // The slot frees up: a request is served and logged, which also flushes any line about the burst.
    drop(first);
    let (mut served, mut more) = (false, 0.0);
    for _ in 0..200 {
        match status(&connect(proxy.addr, "a.test:443").await) {
            403 => {
                served = true;
                break;
            }
            _ => more += 1.0,
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served, "the freed slot was not reused");
    proxy.log.decision_for("a.test").await;
    let lines = proxy.log.events("decision");
    let limit: Vec<_> = lines
        .iter()
        .filter(|d| d["reason"] == "connection_limit")
        .collect();
    assert_eq!(limit.len(), 1, "one line for the burst: {limit:?}");
    assert!(
        limit[0]["detail"]
            .as_str()
            .unwrap()
            .contains("limits.max_connections"),
        "{limit:?}"
    );
    let text = proxy.metrics().await;
    assert_eq!(metric_value(&text, refused), Some(30.0 + more), "{text}");
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_decisions_total{decision="deny",reason="connection_limit",rule="",vendor="",client_group=""}"#
        ),
        Some(1.0),
        "the decision counter follows the lines: {text}"
    );
}
