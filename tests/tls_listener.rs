//! The TLS listener (`listen_tls`): clients reach the proxy over TLS (`HTTPS_PROXY=https://...`) and send
//! CONNECT inside it; the same policy, SNI binding and logs apply as on the plain listener.

mod support;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct ProxyCert {
    dir: tempfile::TempDir,
}

impl ProxyCert {
    /// A self-signed certificate for the proxy itself, valid for 127.0.0.1 and "proxy.test".
    fn new() -> Self {
        let cert =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "proxy.test".into()])
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("proxy.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("proxy.key"), cert.key_pair.serialize_pem()).unwrap();
        ProxyCert { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn yaml(&self, origin_port: u16) -> String {
        format!(
            r#"
listen_tls: 127.0.0.1:0
tls:
  cert: {cert}
  key: {key}
allow:
  - name: origin
    hosts: ["api.test.example"]
    ports: [{origin_port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    api.test.example: ["127.0.0.1"]
    denied.test.example: ["127.0.0.1"]
"#,
            cert = self.path("proxy.pem"),
            key = self.path("proxy.key"),
        )
    }
}

#[tokio::test]
async fn curl_over_https_proxy_reaches_allowed_origin_and_is_denied_elsewhere() {
    let origin = tls_origin(&["api.test.example", "denied.test.example"]).await;
    let port = origin.addr.port();
    let cert = ProxyCert::new();
    let proxy = start_proxy(&cert.yaml(port)).await;
    let tls_addr = proxy.tls_addr.expect("listen_tls is set");
    assert_ne!(tls_addr, proxy.addr, "the TLS listener is its own socket");

    let proxy_url = format!("https://{tls_addr}");
    let ca = origin.ca_pem.display().to_string();
    let proxy_ca = cert.path("proxy.pem");
    let ok = curl(
        &[
            "--proxy",
            &proxy_url,
            "--proxy-cacert",
            &proxy_ca,
            "--cacert",
            &ca,
            &format!("https://api.test.example:{port}/"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        ok.code, 0,
        "curl over the TLS listener failed: {}",
        ok.stderr
    );
    assert_eq!(ok.stdout, "hello from tls origin");

    let denied = curl(
        &[
            "--proxy",
            &proxy_url,
            "--proxy-cacert",
            &proxy_ca,
            "--cacert",
            &ca,
            "-w",
            "%{http_connect}",
            &format!("https://denied.test.example:{port}/"),
        ],
        &[],
    )
    .await;
    assert_ne!(denied.code, 0);
    assert!(
        denied.stdout.contains("403"),
        "expected a 403 to CONNECT: {denied:?}",
        denied = denied.stdout
    );

    let decisions = proxy.log.wait_events("decision", 2).await;
    let reasons: Vec<_> = decisions
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons.contains(&"allowed".to_string()), "{reasons:?}");
    assert!(
        reasons.contains(&"denied_no_rule".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn untrusted_proxy_certificate_is_refused_by_the_client() {
    let origin = tls_origin(&["api.test.example"]).await;
    let cert = ProxyCert::new();
    let proxy = start_proxy(&cert.yaml(origin.addr.port())).await;
    let tls_addr = proxy.tls_addr.unwrap();
    // Trusting only the origin's CA, curl must refuse the proxy's certificate.
    let ca = origin.ca_pem.display().to_string();
    let out = curl(
        &[
            "--proxy",
            &format!("https://{tls_addr}"),
            "--proxy-cacert",
            &ca,
            "--cacert",
            &ca,
            &format!("https://api.test.example:{}/", origin.addr.port()),
        ],
        &[],
    )
    .await;
    assert_ne!(out.code, 0, "curl accepted an untrusted proxy certificate");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_answer_and_the_proxy_keeps_serving() {
    let origin = tls_origin(&["api.test.example"]).await;
    let cert = ProxyCert::new();
    let proxy = start_proxy(&cert.yaml(origin.addr.port())).await;
    let tls_addr = proxy.tls_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    s.write_all(b"CONNECT api.test.example:443 HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200"),
        "plain text was served on the TLS port"
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "client_tls_failed");
    assert_eq!(d["decision"], "deny");
    // The plain listener still answers.
    let resp = connect(proxy.addr, "denied.test.example:443").await;
    assert_eq!(status(&resp), 403);
}

#[test]
fn listen_tls_without_files_is_a_config_error() {
    let err = egressd::config::from_yaml_str("listen_tls: 127.0.0.1:0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls.cert and tls.key"), "{err}");
    let err = egressd::config::from_yaml_str(
        "listen_tls: 127.0.0.1:0\ntls: {cert: /nonexistent.pem, key: /nonexistent.key}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent.pem"), "{err}");
    let err = egressd::config::from_yaml_str("tls: {cert: a.pem, key: a.key}\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("set listen_tls"), "{err}");
}

/// With `limits.max_connections` taken, connections to the TLS listener are refused before the handshake:
/// a stalled handshake cannot hold a descriptor until `timeouts.header`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_the_tls_listener_closes_before_the_handshake() {
    let cert = ProxyCert::new();
    let yaml = format!(
        "{}limits: {{max_connections: 1}}\ntimeouts: {{header: 60s}}\n",
        cert.yaml(1)
    );
    let proxy = start_proxy(&yaml).await;
    let tls_addr = proxy.tls_addr.unwrap();
    // The only slot: a plain connection waiting for its request head.
    let mut first = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    first.write_all(b"CON").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for i in 0..3 {
        // Sends nothing: a handshake that would stall until timeouts.header.
        let mut stalled = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), stalled.read(&mut buf))
            .await
            .expect("the connection was held open, waiting for a handshake");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // Every refusal is counted; only the first of the burst writes a line.
        let series = r#"egressd_connections_rejected_total{reason="connection_limit"}"#;
        for _ in 0..250 {
            if proxy.metric(series).await == (i + 1) as f64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(proxy.metric(series).await, (i + 1) as f64);
    }
    let d = proxy.log.wait_events("decision", 1).await;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["reason"], "connection_limit", "{}", d[0]);
    drop(first);
}

#[tokio::test]
async fn a_proxy_header_comes_before_the_tls_handshake_on_the_tls_listener() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let cert = ProxyCert::new();
    let yaml = format!(
        "{}proxy_protocol:\n  trusted: [\"127.0.0.0/8\"]\n  listeners: [listen_tls]\n",
        cert.yaml(port)
    );
    let proxy = start_proxy(&yaml).await;
    // A balancer: the PROXY header, then the client's TLS to the proxy, CONNECT inside it.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert.path("proxy.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tcp = tokio::net::TcpStream::connect(proxy.tls_addr.unwrap())
        .await
        .unwrap();
    tcp.write_all(b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 3129\r\n")
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS after the header");
    tls.write_all(
        format!("CONNECT denied.test.example:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tls.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let d = proxy.log.decision_for("denied.test.example").await;
    assert_eq!(d["client_addr"], "10.1.2.3:5555", "{d}");
    assert!(d["peer_addr"].is_string(), "{d}");

    let proxy_url = format!("https://{}", proxy.tls_addr.unwrap());
    let without: Vec<String> = vec![
        "--proxy".to_string(),
        proxy_url,
        "--proxy-cacert".to_string(),
        cert.path("proxy.pem"),
        "--cacert".to_string(),
        origin.ca_pem.display().to_string(),
        format!("https://api.test.example:{port}/"),
    ];
    // Without the header, from a trusted peer: refused before the handshake, with its reason.
    let refused = curl(&without.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    assert_ne!(refused.code, 0);
    let d = &proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["reason"], "proxy_header_missing", "{d}");
    // The plain listener takes no header here: one sent there is not believed.
    let resp = raw(
        proxy.addr,
        b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 3128\r\nCONNECT api.test.example:443 HTTP/1.1\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("proxy_header_untrusted")
    );
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_peer_is_refused_on_the_tls_listener() {
    let cert = ProxyCert::new();
    let yaml = format!(
        "{}proxy_protocol:\n  trusted: [\"127.0.0.2/32\"]\n",
        cert.yaml(443)
    );
    let proxy = start_proxy(&yaml).await;
    let mut s = tokio::net::TcpStream::connect(proxy.tls_addr.unwrap())
        .await
        .unwrap();
    s.write_all(b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 3129\r\n")
        .await
        .unwrap();
    // No TLS to answer in: the connection is closed, and the line says why.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "proxy_header_untrusted", "{d}");
    assert!(
        d["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{d}"
    );
}
