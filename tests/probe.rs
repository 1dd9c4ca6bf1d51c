//! `egressd probe` against local origins only: vendor names mapped to loopback with `dns.hosts`, TLS origins
//! with certificates from a test CA (`--ca`), ports redirected with `--connect-to`, and an in-process egressd
//! for `--via`.

mod support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

const CASTAI_NAMES: &[&str] = &[
    "api.cast.ai",
    "grpc.cast.ai",
    "api-grpc.cast.ai",
    "kvisor.prod-master.cast.ai",
    "us-docker.pkg.dev",
    "castai.github.io",
    "objects.githubusercontent.com",
    "storage.googleapis.com",
];

// --- a CA, origins with its certificates, the command ---

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
    dir: tempfile::TempDir,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "egressd probe test CA");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca {
        cert,
        key,
        pem,
        dir,
    }
}

impl Ca {
    fn ca_arg(&self) -> String {
        self.pem.display().to_string()
    }

    /// A file in the CA's temporary directory.
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// A TLS origin on 127.0.0.1 whose certificate, issued by this CA, names `names` and expires in `days`
    /// (negative: expired that many days ago).
    async fn origin(&self, names: &[&str], days: i64) -> Origin {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(days.abs() + 30);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der_key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let snis = Arc::new(Mutex::new(Vec::new()));
        let seen = snis.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(String::from);
                    seen.lock().unwrap().push(sni);
                    let mut buf = [0u8; 256];
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Origin { addr, snis }
    }
}

struct Origin {
    addr: SocketAddr,
    /// The SNI of every completed handshake (`None`: the client sent none).
    snis: Arc<Mutex<Vec<Option<String>>>>,
}

impl Origin {
    fn port(&self) -> u16 {
        self.addr.port()
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The line about `endpoint` (its second column).
    fn line(&self, endpoint: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(endpoint))
            .unwrap_or_else(|| panic!("no line for {endpoint}:\n{}", self.stdout))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

async fn probe(args: &[&str]) -> Out {
    let out = tokio::process::Command::new(BIN)
        .arg("probe")
        .args(args)
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `dns.hosts` mapping each name to 127.0.0.1, no hosts file.
fn loopback_dns(names: &[&str]) -> String {
    let mut s = String::from("dns:\n  hosts_file: \"off\"\n  hosts:\n");
    for n in names {
        s.push_str(&format!("    {n}: [127.0.0.1]\n"));
    }
    s
}

const ALLOW_LOOPBACK: &str = "destinations: {allow_cidrs: [127.0.0.0/8]}\n";

// --- the tests ---

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_of_a_profile_is_ok_against_local_origins() {
    let ca = ca();
    let mut names = CASTAI_NAMES.to_vec();
    names.extend(["104.16.81.56", "104.16.82.56"]);
    let origin = ca.origin(&names, 90).await;
    let cfg = ca.write(
        "egressd.yaml",
        &format!(
            "vendors: [castai-us]\n{ALLOW_LOOPBACK}{}",
            loopback_dns(CASTAI_NAMES)
        ),
    );
    let (to_ip1, to_ip2, to_any) = (
        format!("104.16.81.56:443:127.0.0.1:{}", origin.port()),
        format!("104.16.82.56:443:127.0.0.1:{}", origin.port()),
        format!(":443::{}", origin.port()),
    );
    let args: &[&str] = &[
        "--vendor",
        "castai-us",
        "--config",
        &cfg,
        "--ca",
        &ca.ca_arg(),
        "--connect-to",
        &to_ip1,
        "--connect-to",
        &to_ip2,
        "--connect-to",
        &to_any,
    ];
    let out = probe(args).await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        11,
        "ten endpoints and the summary:\n{}",
        out.stdout
    );
    for l in &lines[..10] {
        assert!(l.starts_with("ok "), "{l}");
        assert!(
            l.contains("policy=allow") && l.contains("TLSv1.3 alpn=h2"),
            "{l}"
        );
    }
    let api = out.line("api.cast.ai:443");
    assert!(api.contains("castai-us/api "), "{api}");
    assert!(
        api.contains(&format!("dialled=api.cast.ai:{}", origin.port())),
        "{api}"
    );
    assert!(
        api.contains("(89 days)") || api.contains("(90 days)"),
        "{api}"
    );
    // storage.googleapis.com is listed by two entries and probed once.
    assert!(out
        .line("storage.googleapis.com:443")
        .contains("castai-us/node-components,castai-us/node-logs"));
    assert!(out
        .line("104.16.81.56:443")
        .contains("castai-us/fallback-ips"));
    assert!(
        lines[10].starts_with("castai-us: 10 endpoints, 10 ok, 0 failed, 0 refused by the configuration, 0 not probed (direct; policy of "),
        "{}",
        lines[10]
    );
    // The agent's SNI for names, none for the fallback addresses.
    let snis = origin.snis.lock().unwrap().clone();
    assert_eq!(snis.len(), 10, "{snis:?}");
    assert!(snis.contains(&Some("api.cast.ai".to_string())), "{snis:?}");
    assert_eq!(snis.iter().filter(|s| s.is_none()).count(), 2, "{snis:?}");

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let out = probe(&json_args).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["vendor"], "castai-us");
    assert_eq!(v["via"], "direct");
    assert_eq!(v["summary"]["ok"], 10);
    let api = &v["endpoints"][0];
    assert_eq!(api["endpoint"], "api.cast.ai:443");
    assert_eq!(api["status"], "ok");
    assert_eq!(api["rules"][0], "castai-us/api");
    assert_eq!(api["policy"]["decision"], "allow");
    assert_eq!(api["policy"]["rule"], "castai-us/api");
    assert_eq!(api["addresses"][0], "127.0.0.1");
    assert_eq!(api["connected"], origin.addr.to_string());
    assert_eq!(api["tls"]["version"], "TLSv1.3");
    assert_eq!(api["tls"]["alpn"], "h2");
    assert!(api["tls"]["days_left"].as_i64().unwrap() >= 89);
    assert!(api["failure"].is_null());

    // The network works, but a configuration that leaves a rule out refuses its hosts.
    let disabled = ca.write(
        "disabled.yaml",
        &format!(
            "vendors: [castai-us]\nvendors_disable: [castai-us/helm]\n{ALLOW_LOOPBACK}{}",
            loopback_dns(CASTAI_NAMES)
        ),
    );
    let mut args = args.to_vec();
    args[3] = &disabled;
    let out = probe(&args).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let helm = out.line("castai.github.io:443");
    assert!(helm.starts_with("DENIED "), "{helm}");
    assert!(helm.contains("policy=deny(denied_no_rule)"), "{helm}");
    assert!(
        helm.contains("TLSv1.3") && helm.contains("the configuration refuses it"),
        "{helm}"
    );
    assert!(
        out.stdout
            .contains("10 endpoints, 8 ok, 0 failed, 2 refused by the configuration"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_connect_and_address_failures_name_their_step() {
    let ca = ca();
    let good = ca.origin(&["server.test"], 30).await;
    let wrong_name = ca.origin(&["other.test"], 30).await;
    let expired = ca.origin(&["expired.test"], -2).await;
    let closed = support::closed_port().await;
    let names = ["server.test", "wrong.test", "expired.test", "closed.test"];
    let params = [
        "--param",
        "server=server.test",
        "--param",
        "storage=wrong.test,expired.test,10.20.0.0/16",
        "--param",
        "registry=closed.test",
    ];
    let vendor = "vendors:\n  - name: cloudcasa-self-hosted\n    params: {server: server.test, storage: [wrong.test, expired.test], registry: [closed.test]}\n";
    let cfg = ca.write(
        "c.yaml",
        &format!("{vendor}{ALLOW_LOOPBACK}{}", loopback_dns(&names)),
    );
    let connect_to = [
        format!("server.test:443::{}", good.port()),
        format!("wrong.test:443::{}", wrong_name.port()),
        format!("expired.test:443::{}", expired.port()),
        format!("closed.test:443::{closed}"),
    ];
    let mut args = vec![
        "--vendor",
        "cloudcasa-self-hosted",
        "--config",
        cfg.as_str(),
    ];
    args.extend(params);
    for c in &connect_to {
        args.extend(["--connect-to", c.as_str()]);
    }
    let ca_arg = ca.ca_arg();
    let mut with_ca = args.clone();
    with_ca.extend(["--ca", &ca_arg]);

    let out = probe(&with_ca).await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.line("server.test:443").starts_with("ok "),
        "{}",
        out.stdout
    );
    let wrong = out.line("wrong.test:443");
    assert!(wrong.starts_with("FAIL "), "{wrong}");
    assert!(wrong.contains("certificate: name_mismatch: "), "{wrong}");
    assert!(
        wrong.contains("other.test"),
        "the names the certificate holds: {wrong}"
    );
    assert!(
        out.line("expired.test:443")
            .contains("certificate: expired: "),
        "{}",
        out.stdout
    );
    let refused = out.line("closed.test:443");
    assert!(
        refused.contains("connect: refused: connection refused by [127.0.0.1]"),
        "{refused}"
    );
    let range = out.line("10.20.0.0/16:443");
    assert!(
        range.starts_with("skip ") && range.ends_with("range, not probed"),
        "{range}"
    );
    assert!(
        out.stdout.contains("cloudcasa-self-hosted: 5 endpoints, 1 ok, 3 failed, 0 refused by the configuration, 1 not probed"),
        "{}",
        out.stdout
    );

    // Without --ca the test CA is no Mozilla root.
    let out = probe(&args).await;
    assert_eq!(out.code, Some(1));
    let server = out.line("server.test:443");
    assert!(
        server.contains("certificate: unknown_issuer: ") && server.contains("--ca FILE"),
        "{server}"
    );

    // Without allow_cidrs, 127.0.0.1 is loopback: refused before any connection, as the proxy refuses it.
    let strict = ca.write("strict.yaml", &format!("{vendor}{}", loopback_dns(&names)));
    with_ca[3] = &strict;
    let accepted = good.snis.lock().unwrap().len();
    let out = probe(&with_ca).await;
    assert_eq!(out.code, Some(1));
    for host in names {
        let line = out.line(&format!("{host}:443")).to_string();
        assert!(
            line.contains("refused_address: loopback: 127.0.0.1 is in 127.0.0.0/8"),
            "{line}"
        );
        assert!(line.contains("destinations.allow_cidrs"), "{line}");
    }
    assert_eq!(
        good.snis.lock().unwrap().len(),
        accepted,
        "nothing was dialled"
    );
    let v = probe(&[with_ca.as_slice(), &["--format", "json"]].concat())
        .await
        .json();
    assert_eq!(v["endpoints"][0]["failure"]["step"], "refused_address");
    assert_eq!(v["endpoints"][0]["addresses"][0], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_failures_are_named() {
    let dns = support::dns_server(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!("dns: {{servers: [\"{dns}\"], hosts_file: \"off\"}}\n"),
    )
    .unwrap();
    let out = probe(&[
        "--vendor",
        "cloudcasa-self-hosted",
        "--config",
        cfg.to_str().unwrap(),
        "--param",
        "server=missing.test",
        "--param",
        "storage=",
        "--timeout",
        "3s",
    ])
    .await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    let line = out.line("missing.test:443");
    assert!(line.starts_with("FAIL "), "{line}");
    assert!(
        line.contains("dns: nxdomain: missing.test does not exist (NXDOMAIN)"),
        "{line}"
    );
    // Not in the configuration's rules either.
    assert!(line.contains("policy=deny(denied_no_rule)"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_egressd_a_refused_endpoint_shows_the_proxys_status_and_reason() {
    let ca = ca();
    let origin = ca
        .origin(&["server.test", "store-a.test", "store-b.test"], 30)
        .await;
    let port = origin.port();
    let proxy = support::start_proxy(&format!(
        "allow:\n  - {{name: agents, hosts: [server.test, store-a.test], ports: [{port}]}}\n{ALLOW_LOOPBACK}{}",
        loopback_dns(&["server.test", "store-a.test", "store-b.test"])
    ))
    .await;
    // The probe's own configuration: the vendor profile, as it will run (its policy is checked on port 443).
    let cfg = ca.write(
        "probe.yaml",
        "vendors:\n  - name: cloudcasa-self-hosted\n    params: {server: server.test, storage: [store-a.test, store-b.test]}\n",
    );
    let to = format!(":443::{port}");
    let url = proxy.url();
    let ca_arg = ca.ca_arg();
    let args: &[&str] = &[
        "--vendor",
        "cloudcasa-self-hosted",
        "--param",
        "server=server.test",
        "--param",
        "storage=store-a.test,store-b.test",
        "--config",
        &cfg,
        "--via",
        &url,
        "--connect-to",
        &to,
        "--ca",
        &ca_arg,
    ];
    let out = probe(args).await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.line("server.test:443").starts_with("ok "),
        "{}",
        out.stdout
    );
    assert!(
        out.line("store-a.test:443").starts_with("ok "),
        "{}",
        out.stdout
    );
    let refused = out.line("store-b.test:443");
    assert!(refused.starts_with("FAIL "), "{refused}");
    assert!(
        refused.contains("policy=allow"),
        "the probe's configuration allows it: {refused}"
    );
    assert!(
        refused.contains(&format!(
            "proxy: denied_no_rule: the proxy answered 403 Forbidden: egressd refused the CONNECT to store-b.test:{port}: denied_no_rule"
        )),
        "{refused}"
    );
    assert!(
        out.stdout
            .contains(&format!("(via {url}; policy of {cfg})")),
        "{}",
        out.stdout
    );
    // The TLS handshakes went through egressd's tunnels, with the agent's SNI.
    let snis = origin.snis.lock().unwrap().clone();
    assert!(
        snis.contains(&Some("server.test".into())) && snis.contains(&Some("store-a.test".into())),
        "{snis:?}"
    );
    assert_eq!(
        proxy.log.decision_for("store-b.test").await["reason"],
        "denied_no_rule"
    );
    assert_eq!(
        proxy.log.decision_for("server.test").await["decision"],
        "allow"
    );

    let v = probe(&[args, &["--format", "json"]].concat()).await.json();
    let by = |host: &str| {
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == host)
            .unwrap()
            .clone()
    };
    let b = by("store-b.test:443");
    assert_eq!(b["proxy"]["status"], 403);
    assert_eq!(b["proxy"]["reason"], "denied_no_rule");
    assert_eq!(b["failure"]["step"], "proxy");
    assert_eq!(b["connected"], proxy.addr.to_string());
    let a = by("store-a.test:443");
    assert_eq!(a["proxy"]["status"], 200);
    assert_eq!(a["tls"]["version"], "TLSv1.3");

    // A proxy that does not listen.
    let closed = format!("http://127.0.0.1:{}", support::closed_port().await);
    let mut args = args.to_vec();
    args[9] = &closed;
    let out = probe(&args).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.line("server.test:443")
            .contains("proxy: refused: cannot reach the proxy 127.0.0.1:"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_and_say_what_to_fix() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--vendor", "nosuch"],
            "is not a vendor profile; available: castai-us",
        ),
        (
            &["--vendor", "cloudcasa"],
            "vendor profile cloudcasa needs parameter \"storage\"",
        ),
        (
            &["--vendor", "castai-us", "--param", "storage=x"],
            "vendor profile castai-us has no parameter \"storage\"",
        ),
        (
            &[
                "--vendor",
                "cloudcasa",
                "--param",
                "storage=bad host.example",
            ],
            "--param: cloudcasa/storage: ",
        ),
        (
            &["--vendor", "castai-us", "--connect-to", "443=8443"],
            "HOST1:PORT1:HOST2:PORT2",
        ),
        (
            &["--vendor", "castai-us", "--via", "egressd:3128"],
            "http://HOST:PORT",
        ),
        (
            &["--vendor", "castai-us", "--ca", "/nonexistent/ca.pem"],
            "--ca: cannot read /nonexistent/ca.pem",
        ),
        (
            &[
                "--vendor",
                "castai-us",
                "--config",
                "/nonexistent/egressd.yaml",
            ],
            "configuration error",
        ),
        (
            &["--vendor", "castai-us", "--client", "nosuch"],
            "--client \"nosuch\" is not a client group",
        ),
        (
            &["--vendor", "castai-us", "--timeout", "soon"],
            "is not a duration",
        ),
        (&["--param", "a=b"], "--vendor"),
    ];
    for (args, message) in cases {
        let out = probe(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(message),
            "{args:?}: expected {message:?} in:\n{}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}
