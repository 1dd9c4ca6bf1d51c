//! Hostile request heads: each gets an exact status, reason code and decision line, and the proxy keeps
//! serving correct traffic afterwards.

mod hostile;
mod support;
use hostile::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_and_versions() {
    let fx = Fixture::with("", "timeouts: {header: 1s}").await;
    let cases: &[(&[u8], u16, &str)] = &[
        (
            b"GET  http://plain.test/ HTTP/1.1\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"GET http://plain.test/ HTTP/1.1 x\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"CONNECT\r\n\r\n", 400, "bad_request"),
        // Empty lines before a request line are skipped (RFC 9112 §2.2): only empty lines is an unfinished head.
        (b"\r\n\r\n\r\n", 408, "header_timeout"),
        (
            b"G\x01T http://plain.test/ HTTP/1.1\r\n\r\n",
            400,
            "bad_request",
        ),
        // HTTP/0.9 has no version and no headers; HTTP/2 and unknown versions are not HTTP/1.
        (
            b"GET http://plain.test/\r\n\r\n",
            400,
            "unsupported_version",
        ),
        (
            b"GET http://plain.test/ HTTP/0.9\r\n\r\n",
            400,
            "unsupported_version",
        ),
        (
            b"GET http://plain.test/ HTTP/1.2\r\n\r\n",
            400,
            "unsupported_version",
        ),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            400,
            "unsupported_version",
        ),
        // Obsolete line folding is refused, never unfolded into a header the upstream reads differently.
        (
            b"GET http://plain.test/ HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"GET http://plain.test/ HTTP/1.1\r\n Host: plain.test\r\n\r\n",
            400,
            "bad_request",
        ),
    ];
    for (req, code, reason) in cases {
        fx.expect(req, *code, reason).await;
    }
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_line_endings_are_read_as_crlf() {
    // RFC 9112 §2.2 lets a recipient accept a bare LF; the request is re-serialized upstream with CRLF, so
    // no second parser ever sees the bare LF.
    let fx = Fixture::new().await;
    let hp = fx.http_port;
    let resp = raw(
        fx.addr(),
        format!("GET http://plain.test:{hp}/lf HTTP/1.1\nX-Probe: yes\nConnection: close\n\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.contains("GET /lf\n"), "{resp}");
    assert!(resp.contains("x-probe: yes"), "{resp}");
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    // A CONNECT head with bare LFs is decided like any other.
    let resp = raw(fx.addr(), b"CONNECT evil.test:443 HTTP/1.1\nHost: x\n\n").await;
    fx.refused("bare LF CONNECT", &resp, 403, "denied_no_rule")
        .await;
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_in_the_host() {
    let fx = Fixture::new().await;
    let p = fx.tls_port();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // In the request target, NUL/CR/LF end or break the request line.
        (
            format!("CONNECT good.test\0.evil:{p} HTTP/1.1\r\n\r\n").into(),
            "bad_request",
        ),
        (
            format!("CONNECT good.test\r.evil:{p} HTTP/1.1\r\n\r\n").into(),
            "bad_request",
        ),
        (
            // The LF ends the request line: what is left reads as an HTTP/0.9 line.
            format!("CONNECT good.test\n.evil:{p} HTTP/1.1\r\n\r\n").into(),
            "unsupported_version",
        ),
        (
            b"GET http://plain.test\0.evil/ HTTP/1.1\r\n\r\n".to_vec(),
            "bad_request",
        ),
        // In a header value, they make the head unparsable.
        (
            b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\0evil\r\n\r\n".to_vec(),
            "bad_request",
        ),
        (
            b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\revil\r\n\r\n".to_vec(),
            "bad_request",
        ),
    ];
    for (req, reason) in &cases {
        fx.expect(req, 400, reason).await;
    }
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_and_content_length_are_refused() {
    let fx = Fixture::new().await;
    let hp = fx.http_port;
    let p = fx.tls_port();
    let cases = [
        format!("GET http://plain.test:{hp}/ HTTP/1.1\r\nHost: plain.test\r\nHost: evil.test\r\n\r\n"),
        format!("CONNECT good.test:{p} HTTP/1.1\r\nHost: good.test\r\nhost: evil.test\r\n\r\n"),
        format!(
            "POST http://plain.test:{hp}/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc"
        ),
        format!(
            "POST http://plain.test:{hp}/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
        ),
        format!("POST http://plain.test:{hp}/ HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc"),
    ];
    for req in &cases {
        let d = fx.expect(req.as_bytes(), 400, "bad_request").await;
        assert!(
            d["detail"].as_str().unwrap().contains("more than one"),
            "{d}"
        );
    }
    fx.serves().await;
}

/// An origin that records the raw bytes it receives and answers each request head with a fixed response.
async fn recording_origin() -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let _ = tx.send(buf[..n].to_vec());
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_not_forwarded() {
    let (port, mut seen) = recording_origin().await;
    let fx = Fixture::with(
        &format!("  - name: rec\n    hosts: [\"rec.test\"]\n    ports: [{port}]\n"),
        "",
    )
    .await;
    let smuggle = |order: &str| {
        let (a, b) = ("Content-Length: 6", "Transfer-Encoding: chunked");
        let (first, second) = if order == "cl-first" { (a, b) } else { (b, a) };
        format!(
            "POST http://rec.test:{port}/ HTTP/1.1\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\nGET http://rec.test:{port}/smuggled HTTP/1.1\r\n\r\n"
        )
    };
    for order in ["cl-first", "te-first"] {
        let d = fx
            .expect(smuggle(order).as_bytes(), 400, "bad_request")
            .await;
        assert!(
            d["detail"].as_str().unwrap().contains("Transfer-Encoding"),
            "{d}"
        );
    }
    // TE other than chunked, and TE on HTTP/1.0, are refused too.
    fx.expect(
        format!("POST http://rec.test:{port}/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
            .as_bytes(),
        400,
        "bad_request",
    )
    .await;
    fx.expect(
        format!(
            "POST http://rec.test:{port}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        .as_bytes(),
        400,
        "bad_request",
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(seen.try_recv().is_err(), "nothing reached the origin");
    // A well-formed chunked request to the same origin goes through, re-framed.
    let resp = raw(
        fx.addr(),
        format!("POST http://rec.test:{port}/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    let got = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert!(got.starts_with("POST /c HTTP/1.1\r\n"), "{got}");
    assert!(!got.to_lowercase().contains("content-length: 6"), "{got}");
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_on_a_kept_alive_connection_is_refused_too() {
    let fx = Fixture::new().await;
    let hp = fx.http_port;
    let mut s = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    s.write_all(format!("GET http://plain.test:{hp}/1 HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(fx.next_decision().await["reason"], "allowed");
    s.write_all(
        format!("POST http://plain.test:{hp}/2 HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let resp = read_response(&mut s).await;
    fx.refused("duplicate Host, second request", &resp, 400, "bad_request")
        .await;
    fx.serves().await;
}

/// The raw head of every request on a kept-alive connection is checked, not what hyper made of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_on_later_kept_alive_requests_is_checked_as_sent() {
    let (port, mut seen) = recording_origin().await;
    let fx = Fixture::with(
        &format!("  - name: rec\n    hosts: [\"rec.test\"]\n    ports: [{port}]\n"),
        "",
    )
    .await;
    let later = [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
    ];
    for fields in later {
        let mut s = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
        s.write_all(
            format!("POST http://rec.test:{port}/1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
                .as_bytes(),
        )
        .await
        .unwrap();
        let resp = read_response(&mut s).await;
        assert_eq!(status(&resp), 200, "{resp}");
        assert_eq!(fx.next_decision().await["reason"], "allowed");
        let first = String::from_utf8(seen.recv().await.unwrap()).unwrap();
        assert!(first.starts_with("POST /1 "), "{first}");
        s.write_all(
            format!("POST http://rec.test:{port}/2 HTTP/1.1\r\n{fields}\r\n\r\n0\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let resp = read_response(&mut s).await;
        let d = fx
            .refused(
                &format!("second request with {fields:?}"),
                &resp,
                400,
                "bad_request",
            )
            .await;
        assert!(
            d["detail"].as_str().unwrap().contains("Transfer-Encoding"),
            "{d}"
        );
        assert_eq!(header(&resp, "connection"), Some("close"), "{resp}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        seen.try_recv().is_err(),
        "a refused request reached the origin"
    );
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uri_decides_and_the_host_header_is_rewritten() {
    let fx = Fixture::new().await;
    let hp = fx.http_port;
    // Allowed URI, Host header naming a denied host: forwarded to the URI's host, Host rewritten.
    let resp = raw(
        fx.addr(),
        format!("GET http://plain.test:{hp}/x HTTP/1.1\r\nHost: evil.test:{hp}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.contains(&format!("host: plain.test:{hp}\n")), "{resp}");
    assert!(!resp.contains("evil"), "{resp}");
    let d = fx.next_decision().await;
    assert_eq!(d["host"], "plain.test");
    // Denied URI, Host header naming the allowed host: denied by the URI.
    let d = fx
        .expect(
            format!("GET http://evil.test:{hp}/ HTTP/1.1\r\nHost: plain.test:{hp}\r\n\r\n")
                .as_bytes(),
            403,
            "denied_no_rule",
        )
        .await;
    assert_eq!(d["host"], "evil.test");
    // CONNECT: the request target decides, whatever Host says.
    let d = fx
        .expect(
            format!(
                "CONNECT evil.test:{} HTTP/1.1\r\nHost: good.test:{}\r\n\r\n",
                fx.tls_port(),
                fx.tls_port()
            )
            .as_bytes(),
            403,
            "denied_no_rule",
        )
        .await;
    assert_eq!(d["host"], "evil.test");
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorities() {
    let fx = Fixture::new().await;
    let p = fx.tls_port();
    let cases: Vec<(String, &str)> = vec![
        ("good.test".into(), "invalid_target"),
        ("good.test:".into(), "invalid_target"),
        ("good.test:0".into(), "invalid_target"),
        ("good.test:65536".into(), "invalid_target"),
        ("good.test:99999999999999999999".into(), "invalid_target"),
        (format!("good.test:+{p}"), "invalid_target"),
        (format!("good.test:{p}:{p}"), "invalid_target"),
        (format!("user@good.test:{p}"), "invalid_target"),
        (format!("user:pw@good.test:{p}"), "invalid_target"),
        (format!("evil.test@good.test:{p}"), "invalid_target"),
        (format!("good%2etest:{p}"), "invalid_target"),
        (format!("%67ood.test:{p}"), "invalid_target"),
        (format!("[fe80::1%25eth0]:{p}"), "invalid_target"),
        (format!("[fe80::1%eth0]:{p}"), "invalid_target"),
        (format!("fe80::1:{p}"), "invalid_target"),
        (format!("[::1:{p}"), "invalid_target"),
        (format!("good.test/x:{p}"), "invalid_target"),
        (format!("good.test\\x:{p}"), "invalid_target"),
    ];
    for (authority, reason) in &cases {
        let resp = connect(fx.addr(), authority).await;
        let d = fx.refused(authority, &resp, 400, reason).await;
        assert_eq!(d["kind"], "connect", "{d}");
    }
    // The same forms in an absolute URI.
    let hp = fx.http_port;
    for url in [
        format!("http://user@plain.test:{hp}/"),
        format!("http://plain%2etest:{hp}/"),
        "http://plain.test:0/".to_string(),
        "http://plain.test:65536/".to_string(),
    ] {
        fx.expect(
            format!("GET {url} HTTP/1.1\r\n\r\n").as_bytes(),
            400,
            "invalid_target",
        )
        .await;
    }
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_after_connect() {
    // Allowed CONNECT on a plain-TCP port, with a second CONNECT and a GET pipelined before the 200: they are
    // tunnel data for the origin, never requests the proxy acts on.
    let (port, got) = sink_origin().await;
    let fx = Fixture::with(&tcp_rule(port), "").await;
    let pipelined = b"CONNECT evil.test:443 HTTP/1.1\r\n\r\nGET http://evil.test/ HTTP/1.1\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    let mut req = format!("CONNECT tcp.test:{port} HTTP/1.1\r\n\r\n").into_bytes();
    req.extend_from_slice(pipelined);
    s.write_all(&req).await.unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 200, "{resp}");
    s.shutdown().await.unwrap();
    assert_eq!(got.await.unwrap(), pipelined);
    let d = fx.next_decision().await;
    assert_eq!(d["host"], "tcp.test");
    fx.no_more_decisions().await;

    // Denied CONNECT with an allowed one pipelined behind it: refused and closed; the second is never read.
    let mut s = tokio::net::TcpStream::connect(fx.addr()).await.unwrap();
    s.write_all(
        format!(
            "CONNECT evil.test:{port} HTTP/1.1\r\n\r\nCONNECT tcp.test:{port} HTTP/1.1\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the proxy closes after a refused CONNECT")
        .ok();
    let all = String::from_utf8_lossy(&all).into_owned();
    assert_eq!(
        all.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {all}"
    );
    fx.refused("denied CONNECT", &all, 403, "denied_no_rule")
        .await;
    fx.no_more_decisions().await;
    fx.serves().await;
}
