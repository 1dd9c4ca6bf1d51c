//! SNI binding inside CONNECT tunnels, with real clients: curl, openssl s_client, and a rustls client that
//! trickles its ClientHello byte by byte or splits it into many records.

mod support;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

fn yaml(port: u16, extra: &str) -> String {
    format!(
        r#"
{extra}
allow:
  - name: origin
    hosts: ["api.test.example", "other.test.example"]
    ports: [{port}]
  - name: origin-ip
    hosts: ["127.0.0.1"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    api.test.example: ["127.0.0.1"]
    other.test.example: ["127.0.0.1"]
"#
    )
}

async fn s_client(proxy: std::net::SocketAddr, connect: &str, sni: Option<&str>) -> i32 {
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-proxy",
        &proxy.to_string(),
        "-connect",
        connect,
        "-brief",
    ]);
    match sni {
        Some(s) => cmd.args(["-servername", s]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl must be installed");
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_sni_must_match_the_connect_host() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port, "")).await;
    let target = format!("api.test.example:{port}");

    assert_eq!(
        s_client(proxy.addr, &target, Some("api.test.example")).await,
        0
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "allow");
    assert_eq!(d["sni"], "api.test.example");

    // Domain fronting: an allowed CONNECT host carrying TLS for another name is cut.
    assert_ne!(s_client(proxy.addr, &target, Some("evil.example")).await, 0);
    let d = &proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["reason"], "denied_sni_mismatch");
    assert_eq!(d["sni"], "evil.example");
    // Even another allowed name is a mismatch in strict mode.
    assert_ne!(
        s_client(proxy.addr, &target, Some("other.test.example")).await,
        0
    );
    let d = &proxy.log.wait_events("decision", 3).await[2];
    assert_eq!(d["reason"], "denied_sni_mismatch");

    assert_ne!(s_client(proxy.addr, &target, None).await, 0);
    let d = &proxy.log.wait_events("decision", 4).await[3];
    assert_eq!(d["reason"], "denied_sni_missing");
    assert!(d["sni"].is_null());

    let closes = proxy.log.wait_events("close", 4).await;
    for c in &closes[1..] {
        assert_eq!(c["close_reason"], "denied", "{c}");
        assert_eq!(
            c["bytes_up"], 0,
            "nothing reaches the upstream from a refused tunnel: {c}"
        );
    }
    assert_eq!(
        proxy.log.events("decision").len(),
        4,
        "one decision line per CONNECT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_mode_and_ip_connects() {
    let origin = tls_origin(&["api.test.example", "other.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port, "sni: policy")).await;
    let target = format!("api.test.example:{port}");
    // Any allowed name passes in policy mode; names the policy does not allow do not.
    assert_eq!(
        s_client(proxy.addr, &target, Some("other.test.example")).await,
        0
    );
    assert_ne!(s_client(proxy.addr, &target, Some("evil.example")).await, 0);
    let d = proxy.log.wait_events("decision", 2).await;
    assert_eq!(d[0]["decision"], "allow");
    assert_eq!(d[1]["reason"], "denied_sni_not_allowed");

    // CONNECT to an allowed IP: no SNI is fine, an allowed SNI is fine, a foreign SNI is not.
    let proxy = start_proxy(&yaml(port, "")).await;
    let ip_target = format!("127.0.0.1:{port}");
    assert_eq!(s_client(proxy.addr, &ip_target, None).await, 0);
    assert_eq!(
        s_client(proxy.addr, &ip_target, Some("api.test.example")).await,
        0
    );
    assert_ne!(
        s_client(proxy.addr, &ip_target, Some("evil.example")).await,
        0
    );
    let d = proxy.log.wait_events("decision", 3).await;
    assert_eq!(d[0]["decision"], "allow");
    assert_eq!(d[1]["decision"], "allow");
    assert_eq!(d[2]["reason"], "denied_sni_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_off_allows_anything_inside() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port, "sni: \"off\"")).await;
    assert_eq!(
        s_client(
            proxy.addr,
            &format!("api.test.example:{port}"),
            Some("evil.example")
        )
        .await,
        0
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_logs_sni_mismatch_as_would_deny() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port, "mode: report")).await;
    assert_eq!(
        s_client(
            proxy.addr,
            &format!("api.test.example:{port}"),
            Some("evil.example")
        )
        .await,
        0
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "would_deny");
    assert_eq!(d["reason"], "denied_sni_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bytes_refused_where_tls_is_required() {
    // A plain TCP origin; the rule says the tunnel carries TLS (as port 443 does by default).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let received = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v).await;
        v
    });
    let cfg = format!(
        "allow:\n  - name: tls-only\n    hosts: [\"o.test\"]\n    ports: [{port}]\n    tls: true\ndestinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\ndns:\n  hosts:\n    o.test: [\"127.0.0.1\"]\n"
    );
    let proxy = start_proxy(&cfg).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT o.test:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(status(&read_response(&mut s).await), 200);
    s.write_all(b"GET / HTTP/1.1\r\nHost: o.test\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "the tunnel is closed without an answer");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "denied_not_tls");
    assert_eq!(received.await.unwrap(), b"", "not one byte went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_timeout() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port, "client_hello: {timeout: 300ms}")).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT api.test.example:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(status(&read_response(&mut s).await), 200);
    // Half a record header, then silence.
    s.write_all(&[0x16, 0x03]).await.unwrap();
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "client_hello_timeout");
}

/// A stream that writes at most one byte per write call, with a pause before each, so the bytes of the
/// ClientHello leave in separate segments (TCP_NODELAY is set).
struct Trickle(tokio::net::TcpStream, Option<Pin<Box<tokio::time::Sleep>>>);

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let pause = self.1.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep(std::time::Duration::from_millis(1)))
        });
        if pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.1 = None;
        let n = buf.len().min(1);
        Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn rustls_through_proxy(
    proxy: std::net::SocketAddr,
    host: &str,
    port: u16,
    ca: &std::path::Path,
    fragment: Option<usize>,
    trickle: bool,
) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile(&pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.max_fragment_size = fragment;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let mut body = Vec::new();
    if trickle {
        let mut tls = connector.connect(name, Trickle(s, None)).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        tls.read_to_end(&mut body).await.unwrap();
    } else {
        let mut tls = connector.connect(name, s).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        tls.read_to_end(&mut body).await.unwrap();
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// DER certificates from a PEM file (the origin's self-signed certificate).
fn rustls_pemfile(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_one_byte_at_a_time_and_split_into_records() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port, "timeouts: {idle: 5s}")).await;

    let body = rustls_through_proxy(
        proxy.addr,
        "api.test.example",
        port,
        &origin.ca_pem,
        None,
        true,
    )
    .await;
    assert!(body.ends_with("hello from tls origin"), "{body}");
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert!(
        c["hello_reads"].as_u64().unwrap() > 10,
        "the hello arrived in many segments: {c}"
    );
    assert_eq!(c["hello_records"], 1);

    let body = rustls_through_proxy(
        proxy.addr,
        "api.test.example",
        port,
        &origin.ca_pem,
        Some(64),
        false,
    )
    .await;
    assert!(body.ends_with("hello from tls origin"), "{body}");
    let c = &proxy.log.wait_events("close", 2).await[1];
    assert!(
        c["hello_records"].as_u64().unwrap() > 2,
        "the hello spanned several records: {c}"
    );
    let d = proxy.log.wait_events("decision", 2).await;
    assert!(d
        .iter()
        .all(|d| d["decision"] == "allow" && d["sni"] == "api.test.example"));
}
