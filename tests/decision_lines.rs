//! Exactly one `decision` line per request, and one `close` line per tunnel or forwarded exchange, on every
//! kind of request the plain and TLS listeners take: allowed and refused CONNECTs, tunnels refused or abandoned
//! after their 200, absolute-form requests alone and on kept-alive connections, malformed heads, connections
//! that ask nothing, and refusals over the connection limit. Each scenario runs, the log is left to settle,
//! and the lines are grouped by (conn_id, request).
//!
//! The transparent listeners (`transparent`, `transparent_http`) need network namespaces and iptables; their
//! lines are covered by tests/transparent.rs, not here.

mod support;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one request must leave in the log: its reason code, and whether it has a close line.
type Want = (&'static str, bool);

/// The proxy under test and its origins: `api.test` (TLS origin, TLS required), `plain.test` (HTTP origin),
/// `closed.test` (a port nothing listens on), `missing.test` (allowed, but NXDOMAIN from the only resolver),
/// `denied.test` (resolvable, no rule).
struct Env {
    proxy: TestProxy,
    origin: TlsOrigin,
    tls_port: u16,
    http_port: u16,
    closed: u16,
}

async fn env(extra: &str) -> Env {
    let origin = tls_origin(&["api.test", "other.test"]).await;
    let (tls_port, http_port) = (origin.addr.port(), http_origin().await.port());
    let closed = closed_port().await;
    let dns = dns_server(vec![]).await;
    let proxy = start_proxy(&format!(
        r#"{extra}
allow:
  - name: tls
    hosts: ["api.test", "missing.test"]
    ports: [{tls_port}]
    tls: true
  - name: plain
    hosts: ["plain.test"]
    ports: [{http_port}]
  - name: closed
    hosts: ["closed.test"]
    ports: [{closed}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts_file: "off"
  servers: ["{dns}"]
  hosts:
    api.test: ["127.0.0.1"]
    plain.test: ["127.0.0.1"]
    closed.test: ["127.0.0.1"]
    denied.test: ["127.0.0.1"]
"#
    ))
    .await;
    Env {
        proxy,
        origin,
        tls_port,
        http_port,
        closed,
    }
}

impl Env {
    fn api(&self) -> String {
        format!("api.test:{}", self.tls_port)
    }
    fn get(&self, host: &str) -> String {
        format!("GET http://{host}:{}/ HTTP/1.1\r\n\r\n", self.http_port)
    }
}

fn key(v: &Value) -> (u64, u64) {
    let n = |f: &str| v[f].as_u64().unwrap_or_else(|| panic!("no {f} in {v}"));
    (n("conn_id"), n("request"))
}

/// Wait until the log holds at least `decisions` decision lines and `closes` close lines and then has not
/// changed for 300 ms (lines are written within 5 ms), so that extra lines are caught too. Gives up after 10 s
/// and returns what is there: the assertions say what is missing.
async fn settle(log: &Captured, decisions: usize, closes: usize) -> (Vec<Value>, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut seen, mut since) = (usize::MAX, Instant::now());
    loop {
        let lines = log.lines();
        let of =
            |e: &str| -> Vec<Value> { lines.iter().filter(|l| l["event"] == e).cloned().collect() };
        let (d, c) = (of("decision"), of("close"));
        if lines.len() != seen {
            (seen, since) = (lines.len(), Instant::now());
        } else if (d.len() >= decisions
            && c.len() >= closes
            && since.elapsed() >= Duration::from_millis(300))
            || Instant::now() > deadline
        {
            return (d, c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The invariants over everything the scenario made the proxy write: one decision line per (conn_id, request);
/// at most one close line per (conn_id, request), each with a decision line of the same kind; every allowed
/// request has its close line; and the reasons, with whether each request has a close line, are exactly `want`
/// (one entry per request made). Returns the decision lines.
async fn check(proxy: &TestProxy, want: &[Want]) -> Vec<Value> {
    let closes_wanted = want.iter().filter(|w| w.1).count();
    let (decisions, closes) = settle(&proxy.log, want.len(), closes_wanted).await;
    let all = format!("decision lines: {decisions:#?}\nclose lines: {closes:#?}");
    let mut by_request: BTreeMap<_, Vec<&Value>> = BTreeMap::new();
    for d in &decisions {
        by_request.entry(key(d)).or_default().push(d);
    }
    for (k, lines) in &by_request {
        assert_eq!(
            lines.len(),
            1,
            "request {k:?}: not one decision line\n{all}"
        );
    }
    let mut closed: BTreeMap<_, usize> = BTreeMap::new();
    for c in &closes {
        let d = by_request
            .get(&key(c))
            .unwrap_or_else(|| panic!("a close line without its decision line: {c}\n{all}"));
        assert_eq!(c["kind"], d[0]["kind"], "{c}\n{all}");
        *closed.entry(key(c)).or_default() += 1;
    }
    for (k, n) in &closed {
        assert_eq!(*n, 1, "request {k:?}: {n} close lines\n{all}");
    }
    for d in decisions.iter().filter(|d| d["decision"] == "allow") {
        assert!(
            closed.contains_key(&key(d)),
            "allowed, not closed: {d}\n{all}"
        );
    }
    let mut got: Vec<_> = decisions
        .iter()
        .map(|d| {
            (
                d["reason"].as_str().unwrap().to_string(),
                closed.contains_key(&key(d)),
            )
        })
        .collect();
    let mut expected: Vec<_> = want.iter().map(|(r, c)| (r.to_string(), *c)).collect();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "(reason, has a close line) per request\n{all}"
    );
    decisions
}

/// The close line of the request this decision line is about.
async fn close_reason(proxy: &TestProxy, decisions: &[Value], reason: &str) -> Value {
    let d = decisions.iter().find(|d| d["reason"] == reason).unwrap();
    proxy.log.close_of(d).await["close_reason"].clone()
}

/// The decision lines of the connection from this client socket, in request order.
fn lines_of(decisions: &[Value], client: &TcpStream) -> Vec<Value> {
    let addr = client.local_addr().unwrap().to_string();
    let mut lines: Vec<_> = decisions
        .iter()
        .filter(|d| d["client_addr"] == addr.as_str())
        .cloned()
        .collect();
    lines.sort_by_key(|d| d["request"].as_u64());
    lines
}

async fn expect_status(proxy: &TestProxy, request: &[u8], code: u16) {
    let resp = raw(proxy.addr, request).await;
    assert_eq!(
        status(&resp),
        code,
        "{}: {resp}",
        String::from_utf8_lossy(request)
    );
}

async fn send(s: &mut TcpStream, request: &str, code: u16) {
    s.write_all(request.as_bytes()).await.unwrap();
    let resp = read_response(s).await;
    assert_eq!(status(&resp), code, "{request}: {resp}");
}

/// A response head, read byte by byte so that nothing after it is consumed.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(Duration::from_secs(5), s.read_u8()).await;
        head.push(
            b.expect("no response head within 5 s")
                .expect("the head ended early"),
        );
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Everything the proxy sends until it closes (5 s at most).
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    got
}

/// A TLS handshake with `sni` in an open tunnel, trusting `ca`, then a GET: the response, or the error.
async fn tls_get(s: TcpStream, sni: &str, ca: &Path) -> std::io::Result<String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector.connect(name, s).await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// curl through `proxy` (trusting the origin's and, for an `https://` proxy, the proxy's certificate).
async fn curl_via(proxy: &str, proxy_ca: Option<&str>, ca: &Path, url: &str) -> CurlOut {
    let mut args = vec!["--proxy", proxy, "--cacert", ca.to_str().unwrap()];
    if let Some(p) = proxy_ca {
        args.extend(["--proxy-cacert", p]);
    }
    args.push(url);
    curl(&args, &[]).await
}

async fn wait_metric(proxy: &TestProxy, series: &str, want: f64) {
    for _ in 0..250 {
        if proxy.metric(series).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} is not {want}:\n{}", proxy.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_tunnel_closed_normally() {
    let e = env("").await;
    let url = format!("https://{}/", e.api());
    let out = curl_via(&e.proxy.url(), None, &e.origin.ca_pem, &url).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from tls origin"),
        "{}",
        out.stderr
    );
    let d = check(&e.proxy, &[("allowed", true)]).await;
    assert_eq!(
        (d[0]["kind"].as_str(), d[0]["request"].as_u64()),
        (Some("connect"), Some(1))
    );
    assert_eq!(close_reason(&e.proxy, &d, "allowed").await, "eof");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_refused_before_the_tunnel() {
    let e = env("").await;
    let cases = [
        (format!("denied.test:{}", e.tls_port), 403, "denied_no_rule"),
        (format!("api.test:{}", e.http_port), 403, "denied_port"),
        ("api.test".to_string(), 400, "invalid_target"),
        (format!("missing.test:{}", e.tls_port), 502, "dns_failed"),
        (format!("closed.test:{}", e.closed), 502, "upstream_refused"),
    ];
    for (authority, code, reason) in &cases {
        let resp = connect(e.proxy.addr, authority).await;
        assert_eq!(status(&resp), *code, "{authority}: {resp}");
        assert_eq!(header(&resp, "x-egressd-reason"), Some(*reason), "{resp}");
    }
    let want: Vec<Want> = cases.iter().map(|c| (c.2, false)).collect();
    let d = check(&e.proxy, &want).await;
    assert!(d.iter().all(|d| d["kind"] == "connect"), "{d:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_refused_or_abandoned_after_their_200() {
    let e = env("").await;
    // A ClientHello naming another host than the CONNECT.
    let s = open_tunnel(e.proxy.addr, &e.api()).await;
    let r = tls_get(s, "other.test", &e.origin.ca_pem).await;
    assert!(r.is_err(), "a mismatched SNI got through: {r:?}");
    // The client leaves without a byte.
    drop(open_tunnel(e.proxy.addr, &e.api()).await);
    // Plain text where the rule requires TLS (as on port 443 by default).
    let mut s = open_tunnel(e.proxy.addr, &e.api()).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(until_closed(&mut s).await, b"", "plain text was answered");
    let want = [
        ("denied_sni_mismatch", true),
        ("allowed", true),
        ("denied_not_tls", true),
    ];
    let d = check(&e.proxy, &want).await;
    for (reason, close) in [
        ("denied_sni_mismatch", "denied"),
        ("allowed", "client_gone"),
        ("denied_not_tls", "denied"),
    ] {
        assert_eq!(close_reason(&e.proxy, &d, reason).await, close, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_requests_alone_and_kept_alive() {
    let e = env("").await;
    let close = |r: String| r.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    expect_status(&e.proxy, close(e.get("plain.test")).as_bytes(), 200).await;
    expect_status(&e.proxy, close(e.get("denied.test")).as_bytes(), 403).await;
    let mut s = TcpStream::connect(e.proxy.addr).await.unwrap();
    send(&mut s, &e.get("plain.test"), 200).await;
    send(&mut s, &e.get("denied.test"), 403).await;
    send(&mut s, &e.get("plain.test"), 200).await;
    let want = [
        ("allowed", true),
        ("denied_no_rule", false),
        ("allowed", true),
        ("denied_no_rule", false),
        ("allowed", true),
    ];
    let kept = lines_of(&check(&e.proxy, &want).await, &s);
    let got: Vec<_> = kept
        .iter()
        .map(|d| {
            (
                d["kind"].as_str(),
                d["request"].as_u64(),
                d["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("http"), Some(1), Some("allowed")),
            (Some("http"), Some(2), Some("denied_no_rule")),
            (Some("http"), Some(3), Some("allowed")),
        ],
        "{kept:#?}"
    );
    assert!(
        kept.iter().all(|d| d["conn_id"] == kept[0]["conn_id"]),
        "{kept:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_after_a_get_on_a_kept_alive_connection() {
    let e = env("").await;
    let mut s = TcpStream::connect(e.proxy.addr).await.unwrap();
    send(&mut s, &e.get("plain.test"), 200).await;
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", e.api());
    s.write_all(connect.as_bytes()).await.unwrap();
    // hyper answers this one: a 200 without a body, and the tunnel follows at once.
    let head = read_head(&mut s).await;
    assert_eq!(status(&head), 200, "{head}");
    let client = s.local_addr().unwrap().to_string();
    let body = tls_get(s, "api.test", &e.origin.ca_pem).await.unwrap();
    assert!(body.ends_with("hello from tls origin"), "{body}");
    let mut d = check(&e.proxy, &[("allowed", true), ("allowed", true)]).await;
    d.sort_by_key(|d| d["request"].as_u64());
    let got: Vec<_> = d
        .iter()
        .map(|d| {
            (
                d["client_addr"].as_str(),
                d["request"].as_u64(),
                d["kind"].as_str(),
            )
        })
        .collect();
    let c = Some(client.as_str());
    assert_eq!(
        got,
        [(c, Some(1), Some("http")), (c, Some(2), Some("connect"))],
        "{d:#?}"
    );
    assert_eq!(d[0]["conn_id"], d[1]["conn_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads() {
    let e = env("timeouts: {header: 300ms}\nlimits: {max_header_bytes: 1024}\n").await;
    let hp = e.http_port;
    let cases: [(String, u16); 5] = [
        ("G\x01T http://plain.test/ HTTP/1.1\r\n\r\n".into(), 400),
        (
            format!(
                "GET http://plain.test:{hp}/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(2048)
            ),
            431,
        ),
        (
            format!("GET http://plain.test:{hp}/ HTTP/1.1\r\nHost: pla"),
            408,
        ),
        ("GET /path HTTP/1.1\r\nHost: plain.test\r\n\r\n".into(), 400),
        (
            format!(
                "POST http://plain.test:{hp}/ HTTP/1.1\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
    ];
    for (request, code) in &cases {
        expect_status(&e.proxy, request.as_bytes(), *code).await;
    }
    // A kept-alive connection whose second head cannot be parsed: answered by hyper, one line each.
    let mut s = TcpStream::connect(e.proxy.addr).await.unwrap();
    send(&mut s, &e.get("plain.test"), 200).await;
    send(&mut s, "G\x01T http://plain.test/ HTTP/1.1\r\n\r\n", 400).await;
    let want = [
        ("bad_request", false),
        ("header_too_large", false),
        ("header_timeout", false),
        ("not_proxy_request", false),
        ("bad_request", false),
        ("allowed", true),
        ("bad_request", false),
    ];
    let kept = lines_of(&check(&e.proxy, &want).await, &s);
    // The unparsable head between kept-alive requests is numbered 0, as the Logs section says.
    let got: Vec<_> = kept
        .iter()
        .map(|d| (d["request"].as_u64(), d["reason"].as_str()))
        .collect();
    assert_eq!(
        got,
        [(Some(0), Some("bad_request")), (Some(1), Some("allowed"))],
        "{kept:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_asks_nothing_has_no_line() {
    let e = env("").await;
    drop(TcpStream::connect(e.proxy.addr).await.unwrap());
    wait_metric(
        &e.proxy,
        r#"egressd_connections_empty_total{listener="plain"}"#,
        1.0,
    )
    .await;
    check(&e.proxy, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (pem, key) = (dir.path().join("p.pem"), dir.path().join("p.key"));
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.key_pair.serialize_pem()).unwrap();
    let tls = format!(
        "listen_tls: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n",
        pem.display(),
        key.display()
    );
    let e = env(&tls).await;
    let proxy = format!("https://{}", e.proxy.tls_addr.unwrap());
    let (ca, pem) = (&e.origin.ca_pem, pem.to_str());
    let ok = curl_via(&proxy, pem, ca, &format!("https://{}/", e.api())).await;
    assert_eq!(
        (ok.code, ok.stdout.as_str()),
        (0, "hello from tls origin"),
        "{}",
        ok.stderr
    );
    let url = format!("http://denied.test:{}/", e.http_port);
    let (proxy_ca, w) = (pem.unwrap(), "%{http_code}");
    let args = [
        "--proxy",
        &proxy,
        "--proxy-cacert",
        proxy_ca,
        "-w",
        w,
        "-o",
        "/dev/null",
        &url,
    ];
    let denied = curl(&args, &[]).await;
    assert_eq!(denied.stdout, "403", "{}", denied.stderr);
    let d = check(&e.proxy, &[("allowed", true), ("denied_no_rule", false)]).await;
    let mut kinds: Vec<_> = d.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(kinds, ["connect", "http"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_over_the_connection_limit_log_the_first_of_the_burst() {
    let e = env("limits: {max_connections: 1}\n").await;
    // The only slot: a plain TCP tunnel to the HTTP origin, carrying one exchange.
    let mut held = open_tunnel(e.proxy.addr, &format!("plain.test:{}", e.http_port)).await;
    send(&mut held, "GET / HTTP/1.1\r\nHost: plain.test\r\n\r\n", 200).await;
    const BURST: usize = 5;
    for i in 0..BURST {
        let mut s = TcpStream::connect(e.proxy.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(e.get("plain.test").as_bytes()).await.unwrap();
        }
        let resp = String::from_utf8_lossy(&until_closed(&mut s).await).into_owned();
        assert_eq!(
            header(&resp, "x-egressd-reason"),
            Some("connection_limit"),
            "{resp}"
        );
    }
    let series = r#"egressd_connections_rejected_total{reason="connection_limit"}"#;
    wait_metric(&e.proxy, series, BURST as f64).await;
    drop(held);
    // BURST + 1 requests: the tunnel's line, and one line for the whole burst (its first refusal).
    check(&e.proxy, &[("allowed", true), ("connection_limit", false)]).await;
}

/// The check itself fails on a second decision line for a request, and on a close line without its decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_fails_on_a_second_line_or_a_stray_close() {
    use std::io::Write;
    for stray in ["decision", "close"] {
        let e = env("").await;
        let resp = connect(e.proxy.addr, "denied.test:443").await;
        assert_eq!(status(&resp), 403, "{resp}");
        let mut line = e.proxy.log.wait_events("decision", 1).await.remove(0);
        if stray == "close" {
            line["event"] = "close".into();
            line["conn_id"] = 999.into();
        }
        writeln!(e.proxy.log.clone(), "{line}").unwrap();
        let checked = tokio::spawn(async move {
            check(&e.proxy, &[("denied_no_rule", false)]).await;
        });
        let r = checked.await;
        assert!(
            r.is_err_and(|e| e.is_panic()),
            "a stray {stray} line passed"
        );
    }
}
