//! Absolute-form HTTP forwarding through egressd to a plain HTTP origin on loopback.

mod support;
use support::*;
use tokio::io::AsyncWriteExt;

fn yaml(port: u16) -> String {
    format!(
        r#"
allow:
  - name: plain
    hosts: ["plain.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    plain.test: ["127.0.0.1"]
    denied.test: ["127.0.0.1"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_forwarded_with_hop_by_hop_headers_removed() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml(port)).await;
    let url = format!("http://plain.test:{port}/echo?q=1");
    let out = curl(
        &[
            "--proxy",
            &proxy.url(),
            "-i",
            "-H",
            "Connection: X-Private",
            "-H",
            "X-Private: secret",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Authorization: Basic dXNlcjpwYXNz",
            "-H",
            "TE: trailers",
            "-H",
            "Upgrade: websocket",
            "-H",
            "X-Kept: yes",
            &url,
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout.to_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-origin: plain"));
    assert!(
        !head.contains("x-hop"),
        "response headers named in Connection are removed: {head}"
    );
    // The origin sees the request in origin-form with the Host from the URI, and no hop-by-hop headers.
    assert!(body.starts_with("get /echo?q=1\n"), "{body}");
    assert!(
        body.contains(&format!("host: plain.test:{port}\n")),
        "{body}"
    );
    assert!(body.contains("x-kept: yes"), "{body}");
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te:",
        "upgrade",
        "connection",
    ] {
        assert!(
            !body.contains(gone),
            "{gone} must not reach the origin: {body}"
        );
    }

    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["kind"], "http");
    assert_eq!(d["method"], "GET");
    assert_eq!(d["host"], "plain.test");
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["rule"], "plain");
    assert_eq!(d["upstream_addr"], format!("127.0.0.1:{port}"));
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["kind"], "http");
    assert_eq!(c["conn_id"], d["conn_id"]);
    assert_eq!(c["close_reason"], "eof");
    assert_eq!(c["bytes_down"].as_u64().unwrap() as usize, body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_variable_and_request_body_streamed() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml(port)).await;
    let file = proxy.dir.path().join("upload.bin");
    std::fs::write(&file, "x".repeat(200_000)).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://plain.test:{port}/upload");
    // curl reads only the lower-case http_proxy for http:// URLs.
    let out = curl(
        &["--data-binary", &data, &url],
        &[("http_proxy", &proxy.url())],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("POST /upload"), "{}", out.stdout);
    assert!(out.stdout.contains("body-length: 200000"), "{}", out.stdout);
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["bytes_up"], 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_kept_alive_connection_is_decided() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml(port)).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for (host, want) in [
        ("plain.test", 200),
        ("denied.test", 403),
        ("plain.test", 200),
    ] {
        s.write_all(
            format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let resp = read_response(&mut s).await;
        assert_eq!(status(&resp), want, "{host}: {resp}");
        if want == 403 {
            assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));
        }
    }
    let d = proxy.log.wait_events("decision", 3).await;
    assert_eq!(d[0]["conn_id"], d[1]["conn_id"]);
    assert_eq!(d[1]["conn_id"], d[2]["conn_id"]);
    let reqs: Vec<u64> = d.iter().map(|v| v["request"].as_u64().unwrap()).collect();
    assert_eq!(reqs, [1, 2, 3]);
    assert_eq!(d[1]["decision"], "deny");
    assert_eq!(d[1]["host"], "denied.test");
    // The second allowed request reused the pooled upstream connection: no new connect timing.
    assert!(d[2]["connect_ms"].is_null(), "{}", d[2]);
}

/// A kept-alive connection left idle closes after timeouts.header without a decision line: nothing was
/// asked. A later head started and not finished in that time is a header_timeout refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_closes_without_a_refusal() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&format!("{}timeouts:\n  header: 1s\n", yaml(port))).await;
    let get = format!("GET http://plain.test:{port}/ HTTP/1.1\r\nHost: plain.test\r\n\r\n");

    let mut idle = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&read_response(&mut idle).await), 200);
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(status(&read_response(&mut slow).await), 200);
    slow.write_all(b"GET http://plain.test/ HTTP/1.1\r\nHo")
        .await
        .unwrap();

    for s in [&mut idle, &mut slow] {
        let mut b = [0u8; 256];
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            use tokio::io::AsyncReadExt;
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "the connection stayed open past timeouts.header"
        );
    }
    proxy.log.wait_events("decision", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let d = proxy.log.events("decision");
    assert_eq!(d.len(), 3, "{d:?}");
    let allowed: Vec<_> = d.iter().filter(|v| v["reason"] == "allowed").collect();
    let timeouts: Vec<_> = d
        .iter()
        .filter(|v| v["reason"] == "header_timeout")
        .collect();
    assert_eq!((allowed.len(), timeouts.len()), (2, 1), "{d:?}");
    assert_eq!(timeouts[0]["request"], 0);
    // The refusal is the slow connection's (the second one opened).
    assert_eq!(timeouts[0]["conn_id"], allowed[1]["conn_id"], "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_decides_not_the_host_header() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml(port)).await;
    let resp = raw(
        proxy.addr,
        format!("GET http://plain.test:{port}/ HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(
        resp.contains(&format!("host: plain.test:{port}")),
        "Host is rewritten from the URI: {resp}"
    );
    assert!(!resp.contains("evil.test"), "{resp}");
    let resp = raw(
        proxy.addr,
        format!("GET http://denied.test:{port}/ HTTP/1.1\r\nHost: plain.test\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 403, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_non_proxy_requests_get_400() {
    let proxy = start_proxy(&yaml(80)).await;
    let cases: &[(&[u8], u16, &str)] = &[
        (
            b"GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n",
            400,
            "not_proxy_request",
        ),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (
            b"GET http://plain.test/ HTTP/1.1\r\nBad Header\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"GET http://plain.test/ HTTP/2.0\r\n\r\n",
            400,
            "unsupported_version",
        ),
        (
            b"GET https://plain.test/ HTTP/1.1\r\n\r\n",
            400,
            "unsupported_scheme",
        ),
        (
            b"GET http://user:pw@plain.test/ HTTP/1.1\r\n\r\n",
            400,
            "invalid_target",
        ),
        (
            b"GET http://plain.test:0/ HTTP/1.1\r\n\r\n",
            400,
            "invalid_target",
        ),
    ];
    for (i, (req, code, reason)) in cases.iter().enumerate() {
        let resp = raw(proxy.addr, req).await;
        assert_eq!(
            status(&resp),
            *code,
            "{:?}: {resp}",
            String::from_utf8_lossy(req)
        );
        assert_eq!(header(&resp, "x-egressd-reason"), Some(*reason), "{resp}");
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["reason"], *reason);
        assert_eq!(d["decision"], "deny");
        assert!(d["detail"].as_str().is_some_and(|s| !s.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refused_is_502() {
    let port = closed_port().await;
    let proxy = start_proxy(&yaml(port)).await;
    let resp = raw(
        proxy.addr,
        format!("GET http://plain.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("upstream_refused"));
    let resp = connect(proxy.addr, &format!("plain.test:{port}")).await;
    assert_eq!(status(&resp), 502, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("upstream_refused"));
    let d = proxy.log.wait_events("decision", 2).await;
    assert_eq!(d[0]["reason"], "upstream_refused");
    assert_eq!(d[0]["resolved_addrs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(d[1]["reason"], "upstream_refused");
}
