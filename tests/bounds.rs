//! Every bound has a config key, a default and a test: header size, header time, connections, connect time,
//! idle tunnel time.

mod support;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_is_431() {
    let proxy = start_proxy("limits: {max_header_bytes: 2048}\n").await;
    let req = format!(
        "GET http://a.test/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4096)
    );
    let resp = raw(proxy.addr, req.as_bytes()).await;
    assert_eq!(status(&resp), 431, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("header_too_large"));
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "header_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_times_out_with_408() {
    let proxy = start_proxy("timeouts: {header: 300ms}\n").await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 408, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("header_timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "header_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_503() {
    let proxy = start_proxy("limits: {max_connections: 1}\n").await;
    // The first connection holds the only slot (it is waiting for its request head).
    let mut first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    first.write_all(b"CON").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = connect(proxy.addr, "a.test:443").await;
    assert_eq!(status(&resp), 503, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("connection_limit"));
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "connection_limit");
    // Once the slot frees up, the proxy serves again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = connect(proxy.addr, "a.test:443").await;
    assert_eq!(status(&resp), 403, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let _keep = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let yaml = format!(
        "allow:\n  - name: o\n    hosts: [\"127.0.0.1\"]\n    ports: [{port}]\ndestinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\ntimeouts: {{idle: 300ms}}\n"
    );
    let proxy = start_proxy(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(status(&read_response(&mut s).await), 200);
    // No traffic: the proxy closes the tunnel after the idle timeout.
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "idle_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504() {
    let (sock, port, _fillers) = silent_listener().await;
    let yaml = format!(
        "allow:\n  - name: o\n    hosts: [\"127.0.0.1\"]\n    ports: [{port}]\ndestinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\ntimeouts: {{connect: 300ms}}\n"
    );
    let proxy = start_proxy(&yaml).await;
    let resp = connect(proxy.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(status(&resp), 504, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("upstream_connect_timeout")
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "upstream_connect_timeout");
    assert!(d["connect_ms"].as_f64().unwrap() >= 250.0, "{d}");
    drop(sock);
}
