//! Client certificates on the TLS listener: a certificate from the configured CA identifies the client by its
//! URI SAN (SPIFFE ID); an untrusted certificate fails the handshake; no certificate is an unidentified client
//! (`client_auth: optional`) or a failed handshake (`required`).

mod support;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use support::*;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A certificate signed by `ca`, written as NAME.pem / NAME.key; returns the two paths.
fn issue(dir: &std::path::Path, ca: &Ca, name: &str, sans: Vec<SanType>) -> (String, String) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = sans;
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string())
}

struct Setup {
    proxy: TestProxy,
    origin: TlsOrigin,
    dir: tempfile::TempDir,
    ca_pem: String,
}

async fn setup(client_auth: &str) -> Setup {
    let origin = tls_origin(&["a.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("egressd test CA");
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
    let (cert, key) = issue(
        dir.path(),
        &ca,
        "proxy",
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
    );
    issue(
        dir.path(),
        &ca,
        "agent",
        vec![SanType::URI(
            "spiffe://cluster.local/ns/castai-agent/sa/agent"
                .try_into()
                .unwrap(),
        )],
    );
    // A DNS SAN, and a URI SAN spelled like one: only the first is the DNS name.
    issue(
        dir.path(),
        &ca,
        "dnsagent",
        vec![SanType::DnsName("agent.castai.example".try_into().unwrap())],
    );
    issue(
        dir.path(),
        &ca,
        "impostor",
        vec![SanType::URI("dns:agent.castai.example".try_into().unwrap())],
    );
    let rogue = self::ca("rogue CA");
    issue(
        dir.path(),
        &rogue,
        "rogue",
        vec![SanType::URI(
            "spiffe://cluster.local/ns/castai-agent/sa/agent"
                .try_into()
                .unwrap(),
        )],
    );
    let yaml = format!(
        r#"
listen_tls: 127.0.0.1:0
tls:
  cert: {cert}
  key: {key}
  client_ca: {ca}
  client_auth: {client_auth}
clients:
  - name: castai-agents
    certs: ["spiffe://cluster.local/ns/castai-agent/*"]
  - name: dns-agents
    certs: ["dns:agent.castai.example"]
allow:
  - name: castai
    hosts: ["a.test"]
    ports: [{port}]
    clients: [castai-agents, dns-agents]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    a.test: ["127.0.0.1"]
"#,
        ca = ca_pem.display(),
        port = origin.addr.port(),
    );
    Setup {
        proxy: start_proxy(&yaml).await,
        origin,
        ca_pem: ca_pem.display().to_string(),
        dir,
    }
}

impl Setup {
    async fn fetch(&self, client: Option<&str>) -> CurlOut {
        let proxy = format!("https://127.0.0.1:{}", self.proxy.tls_addr.unwrap().port());
        let url = format!("https://a.test:{}/", self.origin.addr.port());
        let path = |ext: &str| {
            format!(
                "{}/{}.{ext}",
                self.dir.path().display(),
                client.unwrap_or("")
            )
        };
        let (cert, key) = (path("pem"), path("key"));
        let mut args = vec![
            "--proxy",
            &proxy,
            "--proxy-cacert",
            &self.ca_pem,
            "--cacert",
            self.origin.ca_pem.to_str().unwrap(),
        ];
        if client.is_some() {
            args.extend_from_slice(&["--proxy-cert", &cert, "--proxy-key", &key]);
        }
        args.push(&url);
        curl(&args, &[]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_untrusted_and_absent_client_certificates() {
    let s = setup("optional").await;
    let out = s.fetch(Some("agent")).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "hello from tls origin");
    let d = &s.proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(
        d["client_cert"],
        "spiffe://cluster.local/ns/castai-agent/sa/agent"
    );
    assert_eq!(d["client"], serde_json::json!(["castai-agents"]));
    assert_eq!(d["rule"], "castai");

    // A certificate from another CA: the handshake fails, nothing is decided for it.
    let out = s.fetch(Some("rogue")).await;
    assert_ne!(out.code, 0);
    let d = &s.proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["reason"], "client_tls_failed");

    // No certificate: served, as a client in no group.
    let out = s.fetch(None).await;
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    let d = &s.proxy.log.wait_events("decision", 3).await[2];
    assert_eq!(d["reason"], "denied_no_rule");
    assert!(d["client_cert"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_clients_without_one() {
    let s = setup("required").await;
    let out = s.fetch(None).await;
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("403"), "{}", out.stderr);
    let d = &s.proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "client_tls_failed");
    let out = s.fetch(Some("agent")).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A client certificate was verified by the CA in force at its handshake. After a reload that replaces the
/// CA, a kept-alive connection of the TLS listener ends after its current request (the client must handshake
/// again, against the new CA); a reload that leaves the CA alone keeps it open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_rotates_the_client_ca_ends_verified_connections() {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = http_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca1 = ca("egressd test CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca1.cert.pem()).unwrap();
    let (cert, key) = issue(
        dir.path(),
        &ca1,
        "proxy",
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
    );
    let (agent_cert, agent_key) = issue(
        dir.path(),
        &ca1,
        "agent",
        vec![SanType::URI(
            "spiffe://cluster.local/ns/castai-agent/sa/agent"
                .try_into()
                .unwrap(),
        )],
    );
    let path = dir.path().join("egressd.yaml");
    let yaml = |extra: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nlisten_tls: 127.0.0.1:0\n\
             tls: {{cert: {cert}, key: {key}, client_ca: {ca}}}\n\
             clients:\n  - name: castai-agents\n    certs: [\"spiffe://cluster.local/ns/castai-agent/*\"]\n\
             allow:\n  - name: plain\n    hosts: [b.test{extra}]\n    ports: [{port}]\n    clients: [castai-agents]\n\
             destinations: {{allow_cidrs: [\"127.0.0.0/8\"]}}\ndns: {{hosts: {{b.test: [\"127.0.0.1\"]}}}}\n",
            ca = ca_path.display(),
            port = origin.port(),
        )
    };
    std::fs::write(&path, yaml("")).unwrap();
    let proxy = start_proxy_file(&path).await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca1.cert.pem().as_bytes()).unwrap())
        .unwrap();
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&agent_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&agent_key).unwrap();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(proxy.tls_addr.unwrap())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(cfg.clone()))
            .connect(name, tcp)
            .await
            .unwrap()
    };
    let get = format!(
        "GET http://b.test:{}/ HTTP/1.1\r\nHost: b.test\r\n\r\n",
        origin.port()
    );
    // Reads one response (the origin's body is short): its status line.
    async fn answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    let mut s = connect().await;
    s.write_all(get.as_bytes()).await.unwrap();
    assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));

    // A reload that keeps the CA: the connection stays and is served.
    std::fs::write(&path, yaml(", c.test")).unwrap();
    proxy.reloader.reload().unwrap();
    s.write_all(get.as_bytes()).await.unwrap();
    assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));

    // A new CA: the connection ends (it is idle, so at once).
    std::fs::write(&ca_path, ca("another CA").cert.pem()).unwrap();
    proxy.reloader.reload().unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the connection is closed, not left open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_names_are_compared_by_type() {
    let s = setup("optional").await;
    let out = s.fetch(Some("dnsagent")).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &s.proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["client_cert"], "dns:agent.castai.example", "{d}");
    assert_eq!(d["client"], serde_json::json!(["dns-agents"]), "{d}");
    // A URI SAN "dns:agent.castai.example" is not that DNS name.
    let out = s.fetch(Some("impostor")).await;
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    let d = &s.proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["reason"], "denied_no_rule", "{d}");
    assert_eq!(d["client"], serde_json::json!([]), "{d}");
}
