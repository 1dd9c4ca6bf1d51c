//! One client flooding the proxy with connections that hold a slot without finishing anything (half-open
//! tunnels, slow request heads, stalled TLS handshakes) runs into `limits.max_connections_per_client`; the
//! others keep being served until `limits.max_connections` itself is reached. Clients are told apart by
//! source address: each one binds its own loopback address (127.0.0.2, 127.0.0.3, ...).

mod support;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

const PER_CLIENT: usize = 400;
const MAX: usize = 1200;
/// The first bytes of a ClientHello record, and no more: the reader waits for the rest.
const PARTIAL_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

/// An origin that accepts every connection and holds it open, silent.
async fn holding_origin() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    (addr, held)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// A CONNECT tunnel past its 200 that sends the start of a ClientHello and then nothing.
async fn half_open_tunnel(from: &'static str, proxy: SocketAddr, authority: String) -> TcpStream {
    let mut s = connect_from(from, proxy).await;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 200, "{from}: {resp}");
    s.write_all(PARTIAL_HELLO).await.unwrap();
    s
}

/// `n` half-open tunnels from `from`, opened a few dozen at a time.
async fn half_open_tunnels(
    from: &'static str,
    proxy: SocketAddr,
    authority: &str,
    n: usize,
) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let mut set = JoinSet::new();
        for _ in chunk {
            set.spawn(half_open_tunnel(from, proxy, authority.to_string()));
        }
        while let Some(s) = set.join_next().await {
            out.push(s.unwrap());
        }
    }
    out
}

/// Everything until the proxy closes the connection, as text.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Wait (up to 20 s) until `series` reaches `want`.
async fn wait_metric(proxy: &TestProxy, series: &str, want: f64) {
    let mut got = 0.0;
    for _ in 0..1000 {
        got = proxy.metric(series).await;
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} is {got}, expected {want}");
}

/// The status of a CONNECT from `from`, and the stream (a 200 leaves the tunnel open).
async fn connect_status(from: &'static str, proxy: SocketAddr, authority: &str) -> (u16, String) {
    let mut s = connect_from(from, proxy).await;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    (status(&resp), resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_slot() {
    let (origin, _held) = holding_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
    std::fs::write(dir.path().join("p.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("p.key"), cert.key_pair.serialize_pem()).unwrap();
    let port = origin.port();
    // Long waits: every slow client keeps its slot for the whole test.
    let proxy = start_proxy(&format!(
        "listen_tls: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n\
         allow:\n  - {{name: hold, hosts: [hold.test], ports: [{port}], tls: true}}\n\
         dns:\n  hosts: {{hold.test: [\"127.0.0.1\"]}}\n\
         destinations:\n  allow_cidrs: [\"127.0.0.0/8\"]\n\
         timeouts: {{header: 120s}}\nclient_hello: {{timeout: 120s}}\n\
         limits: {{max_connections: {MAX}, max_connections_per_client: {PER_CLIENT}}}\n",
        dir.path().join("p.pem").display(),
        dir.path().join("p.key").display(),
    ))
    .await;
    let (plain, tls) = (proxy.addr, proxy.tls_addr.unwrap());
    let target = format!("hold.test:{port}");
    let active = |l: &str| format!(r#"egressd_connections_active{{listener="{l}"}}"#);

    // The flood from 127.0.0.2: half-open tunnels stuck in the ClientHello wait, request heads that never
    // end, TLS handshakes to listen_tls that stall after the first bytes. Exactly its limit.
    let mut flood = half_open_tunnels("127.0.0.2", plain, &target, 250).await;
    for _ in 0..100 {
        let mut s = connect_from("127.0.0.2", plain).await;
        s.write_all(b"CONNECT hold.test:1 HTTP/1.1\r\nHost: h")
            .await
            .unwrap();
        flood.push(s);
    }
    for _ in 0..50 {
        let mut s = connect_from("127.0.0.2", tls).await;
        s.write_all(PARTIAL_HELLO).await.unwrap();
        flood.push(s);
    }
    wait_metric(&proxy, &active("plain"), 350.0).await;
    wait_metric(&proxy, &active("tls"), 50.0).await;

    // Its next connections are refused, whether they send a request or nothing, on either listener.
    for i in 0..40 {
        let mut s = connect_from("127.0.0.2", plain).await;
        if i % 2 == 0 {
            s.write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
        }
        let resp = until_closed(&mut s).await;
        assert_eq!(status(&resp), 503, "{resp}");
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("client_connection_limit")
        );
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client_tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let connector = tokio_rustls::TlsConnector::from(client_tls);
    let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
    // On the TLS listener the refusal comes before the handshake (a 503 would need one): the connection is
    // closed, and the refusal counted.
    let handshake = connector
        .connect(name, connect_from("127.0.0.2", tls).await)
        .await;
    assert!(
        handshake.is_err(),
        "the over-limit client got a TLS handshake"
    );

    // Another client is served meanwhile.
    let (code, resp) = connect_status("127.0.0.3", plain, &target).await;
    assert_eq!(code, 200, "{resp}");

    // Every refusal is counted; the burst has one line, naming the client.
    let refused = r#"egressd_connections_rejected_total{reason="client_connection_limit"}"#;
    wait_metric(&proxy, refused, 41.0).await;
    let lines: Vec<_> = proxy
        .log
        .events("decision")
        .into_iter()
        .filter(|d| d["reason"] == "client_connection_limit")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let detail = lines[0]["detail"].as_str().unwrap();
    assert!(detail.contains("address 127.0.0.2"), "{detail}");
    assert!(
        detail.contains("limits.max_connections_per_client"),
        "{detail}"
    );

    // Two more clients fill the proxy, each within its own limit: 400 + 400 + 399 + the victim's one.
    let b = half_open_tunnels("127.0.0.4", plain, &target, PER_CLIENT).await;
    let c = half_open_tunnels("127.0.0.5", plain, &target, PER_CLIENT - 1).await;
    let victim = half_open_tunnel("127.0.0.3", plain, target.clone()).await;
    // Every slot is taken now: a fresh client gets connection_limit, not its own limit.
    let (code, resp) = connect_status("127.0.0.6", plain, &target).await;
    assert_eq!(code, 503, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("connection_limit"));
    // One client leaves: the fresh one is served again.
    drop(c);
    let mut served = false;
    for _ in 0..500 {
        if connect_status("127.0.0.6", plain, &target).await.0 == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the freed slots were not reused");
    // The flood is still held to its limit: its slots did not come back by others leaving.
    let (code, _) = connect_status("127.0.0.2", plain, &target).await;
    assert_eq!(code, 503);
    drop((flood, b, victim));
}

// --- identity: a verified client certificate ---

/// A CA and certificates it signs, for the proxy and for clients.
struct Pki {
    ca: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "noisy neighbours CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Pki {
            ca: p.self_signed(&key).unwrap(),
            key,
        }
    }

    fn issue(&self, san: rcgen::SanType) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![san];
        let key = rcgen::KeyPair::generate().unwrap();
        (p.signed_by(&key, &self.ca, &self.key).unwrap(), key)
    }
}

/// A TLS connection from `from` to the TLS listener, presenting `cert` (signed by `pki`).
async fn tls_from(
    from: &str,
    to: SocketAddr,
    pki: &Pki,
    cert: &(rcgen::Certificate, rcgen::KeyPair),
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![cert.0.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.1.serialize_der())),
    )
    .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("127.0.0.1").unwrap(),
            connect_from(from, to).await,
        )
        .await
        .unwrap()
}

/// Send a plain-HTTP request for a host no rule allows and read the answer (the connection stays open).
async fn denied_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"GET http://denied.test/ HTTP/1.1\r\nHost: denied.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_is_counted_as_its_own_client() {
    use rcgen::SanType;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (proxy_cert, proxy_key) = pki.issue(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(path("proxy.pem"), proxy_cert.pem()).unwrap();
    std::fs::write(path("proxy.key"), proxy_key.serialize_pem()).unwrap();
    std::fs::write(path("ca.pem"), pki.ca.pem()).unwrap();
    let proxy = start_proxy(&format!(
        "listen_tls: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n  client_ca: {}\n\
         limits: {{max_connections_per_client: 1}}\n",
        path("proxy.pem"),
        path("proxy.key"),
        path("ca.pem"),
    ))
    .await;
    let tls = proxy.tls_addr.unwrap();
    let uri = |u: &str| SanType::URI(u.try_into().unwrap());
    let (a, b) = (
        pki.issue(uri("spiffe://test/a")),
        pki.issue(uri("spiffe://test/b")),
    );
    // Two workloads behind one address, one connection each: both are served.
    let mut first = tls_from("127.0.0.2", tls, &pki, &a).await;
    let resp = denied_get(&mut first).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let mut second = tls_from("127.0.0.2", tls, &pki, &b).await;
    let resp = denied_get(&mut second).await;
    assert_eq!(status(&resp), 403, "{resp}");
    // The address itself holds nothing once the handshakes are done.
    let mut plain = connect_from("127.0.0.2", proxy.addr).await;
    let resp = denied_get(&mut plain).await;
    assert_eq!(status(&resp), 403, "{resp}");
    // A second connection with a's certificate is over a's share.
    let mut again = tls_from("127.0.0.3", tls, &pki, &a).await;
    let mut got = Vec::new();
    let _ = again.read_to_end(&mut got).await;
    let resp = String::from_utf8_lossy(&got);
    assert_eq!(status(&resp), 503, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("client_connection_limit")
    );
    let line = proxy.log.wait_events("decision", 4).await;
    let refusal = line
        .iter()
        .find(|d| d["reason"] == "client_connection_limit")
        .unwrap();
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("certificate spiffe://test/a"),
        "{refusal}"
    );
    drop((first, second, plain));
}
