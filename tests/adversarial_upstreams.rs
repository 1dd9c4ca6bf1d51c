//! Hostile upstreams: refusing, resetting mid-stream, silent (connect timeout), and half-closing in each
//! direction. Each case gets an exact status or close reason, a log line, and the proxy keeps serving.

mod hostile;
mod support;
use hostile::*;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A CONNECT through the proxy to `tcp.test:port`, returning the tunnel after the 200.
async fn tunnel(fx: &Fixture, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(fx.addr()).await.unwrap();
    s.write_all(format!("CONNECT tcp.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert_eq!(status(&head), 200, "{head}");
    s
}

async fn read_until_eof(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Err(_) => panic!("no EOF within 5s; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) => return (got, Ok(())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (got, Err(e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream() {
    let port = closed_port().await;
    let fx = Fixture::with(&tcp_rule(port), "").await;
    let d = fx
        .refused(
            "CONNECT",
            &connect(fx.addr(), &format!("tcp.test:{port}")).await,
            502,
            "upstream_refused",
        )
        .await;
    assert_eq!(d["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert!(d["upstream_addr"].is_null(), "{d}");
    fx.serves().await;
}

/// Read exactly `n` bytes (within 5 s).
async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut v))
        .await
        .expect("bytes within 5s")
        .unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_tunnel() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"partial").await.unwrap();
        let _ = wait.await;
        reset(s);
    });
    let fx = Fixture::with(&tcp_rule(port), "").await;
    let mut s = tunnel(&fx, port).await;
    assert_eq!(read_n(&mut s, 7).await, b"partial");
    go.send(()).unwrap();
    let (rest, _) = read_until_eof(&mut s).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    let c = &fx.proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "upstream_error", "{c}");
    assert_eq!(c["bytes_down"], 7, "{c}");
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_http_response_and_before_it() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // First connection: a response head promising 100 bytes, 10 of them, then a reset.
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .unwrap();
        let _ = wait.await;
        reset(s);
        // Second: a reset before any response.
        let (mut s, _) = l.accept().await.unwrap();
        let _ = s.read(&mut buf).await;
        reset(s);
    });
    let fx = Fixture::with(&tcp_rule(port), "").await;
    let mut s = TcpStream::connect(fx.addr()).await.unwrap();
    s.write_all(format!("GET http://tcp.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"0123456789") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response within 5s")
            .unwrap();
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    go.send(()).unwrap();
    let (rest, _) = read_until_eof(&mut s).await;
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("content-length: 100\r\n"), "{got}");
    assert!(
        rest.is_empty(),
        "the client sees a short body, then the close: {rest:?}"
    );
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    let c = &fx.proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "upstream_error", "{c}");
    assert_eq!(c["bytes_down"], 10, "{c}");

    let d = fx
        .expect(
            format!("GET http://tcp.test:{port}/again HTTP/1.1\r\n\r\n").as_bytes(),
            502,
            "upstream_error",
        )
        .await;
    assert_eq!(d["host"], "tcp.test");
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_times_out_on_connect_for_connect_and_http() {
    let (_sock, port, _fillers) = silent_listener().await;
    let fx = Fixture::with(&tcp_rule(port), "timeouts:\n  connect: 300ms\n").await;
    let started = std::time::Instant::now();
    fx.refused(
        "CONNECT",
        &connect(fx.addr(), &format!("tcp.test:{port}")).await,
        504,
        "upstream_connect_timeout",
    )
    .await;
    let d = fx
        .expect(
            format!("GET http://tcp.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes(),
            504,
            "upstream_connect_timeout",
        )
        .await;
    assert!(d["connect_ms"].as_f64().unwrap() >= 250.0, "{d}");
    assert!(started.elapsed() < Duration::from_secs(5));
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_passes_through() {
    // The client finishes sending; the upstream still answers, then closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).await.unwrap();
        s.write_all(b"got: ").await.unwrap();
        s.write_all(&req).await.unwrap();
    });
    let fx = Fixture::with(&tcp_rule(port), "").await;
    let mut s = tunnel(&fx, port).await;
    s.write_all(b"question").await.unwrap();
    s.shutdown().await.unwrap();
    let (got, r) = read_until_eof(&mut s).await;
    r.unwrap();
    assert_eq!(got, b"got: question");
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    let c = &fx.proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "eof", "{c}");
    assert_eq!(
        (c["bytes_up"].as_u64(), c["bytes_down"].as_u64()),
        (Some(8), Some(13)),
        "{c}"
    );
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_half_close_passes_through() {
    // The upstream speaks first and finishes sending; the client still sends, and the upstream reads it.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let heard = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"banner").await.unwrap();
        s.shutdown().await.unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).await.unwrap();
        v
    });
    let fx = Fixture::with(&tcp_rule(port), "").await;
    let mut s = tunnel(&fx, port).await;
    let (got, r) = read_until_eof(&mut s).await;
    r.unwrap();
    assert_eq!(got, b"banner");
    // Our side is still open for writing.
    s.write_all(b"reply after your FIN").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(heard.await.unwrap(), b"reply after your FIN");
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    let c = &fx.proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "eof", "{c}");
    assert_eq!(
        (c["bytes_up"].as_u64(), c["bytes_down"].as_u64()),
        (Some(20), Some(6)),
        "{c}"
    );
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_an_http_request() {
    // Accepts, reads the request, says nothing: the wait is bounded by timeouts.idle like a silent tunnel.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    });
    let fx = Fixture::with(&tcp_rule(port), "timeouts:\n  idle: 500ms\n").await;
    let started = std::time::Instant::now();
    let d = fx
        .expect(
            format!("GET http://tcp.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes(),
            502,
            "upstream_error",
        )
        .await;
    assert!(
        d["detail"].as_str().unwrap().contains("timeouts.idle"),
        "{d}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    fx.serves().await;
}
