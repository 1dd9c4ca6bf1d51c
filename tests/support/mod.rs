//! Test support: real origins on loopback (TLS with an rcgen certificate, plain HTTP, a tiny DNS server),
//! the proxy started in-process on port 0 with its event log captured, and raw/curl clients; a fake Kubernetes
//! API server (`kube_api`) and Squid as a parent proxy (`squid`).
#![allow(dead_code)]

pub mod cli;
pub mod kube_api;
pub mod retry;
pub mod squid;

use egressd::{CancellationToken, EventLog, LogFormat};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

// --- captured event log ---

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    pub fn events(&self, event: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect()
    }

    /// Wait (up to 5 s) until `n` lines of `event` have been written, and return them.
    pub async fn wait_events(&self, event: &str, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            let ev = self.events(event);
            if ev.len() >= n {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} {event} lines, got {:?}", self.events(event));
    }

    /// Wait (up to 5 s) for the close line of the request with this decision line (same connection and
    /// request): tunnels end in any order, so close lines are looked up, not counted.
    pub async fn close_of(&self, decision: &Value) -> Value {
        for _ in 0..500 {
            if let Some(c) = self.events("close").into_iter().find(|c| {
                c["conn_id"] == decision["conn_id"] && c["request"] == decision["request"]
            }) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no close line for {decision}: {:?}", self.events("close"));
    }

    /// Wait (up to 5 s) for the decision line about `host` and return it. Lines of concurrent or tunnelled
    /// requests can arrive in any order (a tunnel's line waits for its ClientHello), so tests that make
    /// several requests look lines up by host rather than by position.
    pub async fn decision_for(&self, host: &str) -> Value {
        for _ in 0..500 {
            if let Some(d) = self
                .events("decision")
                .into_iter()
                .find(|d| d["host"] == host)
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no decision line for {host}: {:?}", self.events("decision"));
    }
}

// --- the proxy ---

pub struct TestProxy {
    pub addr: SocketAddr,
    /// The TLS listener's address when the config sets `listen_tls`.
    pub tls_addr: Option<SocketAddr>,
    /// The transparent listeners' addresses when the config sets `listen_transparent` / `_http`.
    pub transparent_addr: Option<SocketAddr>,
    pub transparent_http_addr: Option<SocketAddr>,
    /// The admin listener's address (127.0.0.1:0 unless the config sets `admin`).
    pub admin_addr: Option<SocketAddr>,
    pub reloader: egressd::reload::Reloader,
    pub log: Captured,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestProxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GET a path on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let addr = self.admin_addr.expect("the admin listener is off");
        let resp = raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        (status(&resp), body.unwrap_or_default())
    }

    /// The /metrics exposition.
    pub async fn metrics(&self) -> String {
        let (code, body) = self.admin_get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// The value of one series (`name{labels}` exactly as exposed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series).unwrap_or(0.0)
    }
}

/// The value of one series in a Prometheus exposition, by its exact `name{labels}` text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Start the proxy from a YAML config (listen is forced to 127.0.0.1:0, and admin to 127.0.0.1:0 unless the
/// config sets `admin`).
pub async fn start_proxy(yaml: &str) -> TestProxy {
    let admin = if yaml.contains("admin:") {
        ""
    } else {
        "admin: {listen: 127.0.0.1:0}\n"
    };
    let yaml = format!("listen: 127.0.0.1:0\n{admin}{yaml}");
    let settings = egressd::config::from_yaml_str(&yaml)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{yaml}"));
    launch(settings, None).await
}

/// Start the proxy from a configuration file, watched for changes like `egressd run --config`.
pub async fn start_proxy_file(path: &std::path::Path) -> TestProxy {
    let settings =
        egressd::config::load(Some(path)).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    launch(settings, Some(path.to_path_buf())).await
}

async fn launch(settings: egressd::Settings, watch: Option<PathBuf>) -> TestProxy {
    let log = Captured::default();
    let shutdown = CancellationToken::new();
    let mut proxy = egressd::Proxy::bind(
        settings,
        EventLog::to_writer(LogFormat::Json, Box::new(log.clone())),
        shutdown.clone(),
    )
    .await
    .unwrap();
    if let Some(p) = watch {
        proxy.watch_config(p);
    }
    let addr = proxy.local_addr();
    let tls_addr = proxy.tls_local_addr();
    let (transparent_addr, transparent_http_addr) = proxy.transparent_local_addrs();
    let admin_addr = proxy.admin_local_addr();
    let reloader = proxy.reload_handle();
    tokio::spawn(proxy.serve());
    TestProxy {
        addr,
        tls_addr,
        transparent_addr,
        transparent_http_addr,
        admin_addr,
        reloader,
        log,
        shutdown,
        dir: tempfile::tempdir().unwrap(),
    }
}

// --- origins ---

pub struct TlsOrigin {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    pub ca_pem: PathBuf,
    _dir: tempfile::TempDir,
}

/// A TLS origin on 127.0.0.1 with a self-signed certificate for `names`. It answers any HTTP request with
/// `hello from tls origin`.
pub async fn tls_origin(names: &[&str]) -> TlsOrigin {
    tls_origin_at("127.0.0.1:0".parse().unwrap(), names).await
}

/// [`tls_origin`] on a given address.
pub async fn tls_origin_at(bind: SocketAddr, names: &[&str]) -> TlsOrigin {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("origin.pem");
    std::fs::write(&ca_pem, cert.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(bind)
        .await
        .unwrap_or_else(|e| panic!("binding the TLS origin to {bind}: {e}"));
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = "hello from tls origin";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsOrigin {
        addr,
        accepted,
        ca_pem,
        _dir: dir,
    }
}

/// A plain HTTP/1.1 origin (hyper) that answers every request with its request line and headers as the body,
/// one `name: value` per line, after reading the whole request body (whose length it reports).
pub async fn http_origin() -> SocketAddr {
    http_origin_at("127.0.0.1:0".parse().unwrap()).await
}

/// [`http_origin`] on a given address.
pub async fn http_origin_at(bind: SocketAddr) -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    let listener = TcpListener::bind(bind)
        .await
        .unwrap_or_else(|e| panic!("binding the HTTP origin to {bind}: {e}"));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut text = format!("{} {}\n", req.method(), req.uri());
                        for (k, v) in req.headers() {
                            text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        text.push_str(&format!("body-length: {}\n", body.len()));
                        let resp = hyper::Response::builder()
                            .header("x-origin", "plain")
                            .header("connection", "keep-alive, x-hop")
                            .header("x-hop", "should be stripped")
                            .body(Full::new(bytes::Bytes::from(text)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TCP origin on 127.0.0.1 that echoes every byte back until the client closes.
pub async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Open a CONNECT tunnel through the proxy and return the stream once the 200 is read.
pub async fn open_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut s).await;
    assert_eq!(status(&resp), 200, "{resp}");
    s
}

/// Send `msg` through an echo tunnel and read it back (panics after 5 s).
pub async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await {
        Ok(r) => r?,
        Err(_) => panic!("no echo within 5s"),
    };
    assert_eq!(got, msg);
    Ok(())
}

/// Send a signal (`libc::SIGTERM`, `libc::SIGHUP`, ...) to a child process.
pub fn send_signal(child: &tokio::process::Child, sig: i32) {
    let pid = child.id().expect("the child is running") as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}) failed");
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A listener on 127.0.0.1 with a backlog of 0 that never accepts, its queue filled: further SYNs go
/// unanswered, so connecting to it times out. Keep all three values alive while it is used.
pub async fn silent_listener() -> (socket2::Socket, u16, Vec<TcpStream>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    (sock, addr.port(), fillers)
}

/// A DNS server on 127.0.0.1 (UDP) answering A queries for names in `records`, NXDOMAIN for anything else.
pub async fn dns_server(records: Vec<(&'static str, [u8; 4])>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            if n < 12 {
                continue;
            }
            let q = &buf[..n];
            // Question: labels from offset 12 until a zero byte, then QTYPE and QCLASS.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_lowercase());
                i += 1 + len;
            }
            let qend = i + 5;
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let name = labels.join(".");
            let answer = records.iter().find(|(r, _)| *r == name).map(|(_, a)| *a);
            let mut resp = Vec::new();
            resp.extend_from_slice(&q[..2]); // id
            let rcode = if answer.is_some() { 0 } else { 3 };
            resp.extend_from_slice(&[0x81, 0x80 | rcode]);
            resp.extend_from_slice(&[0, 1]); // qdcount
            let ancount = u16::from(answer.is_some() && qtype == 1);
            resp.extend_from_slice(&ancount.to_be_bytes());
            resp.extend_from_slice(&[0, 0, 0, 0]);
            resp.extend_from_slice(&q[12..qend]);
            if let (Some(a), 1) = (answer, ancount) {
                resp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                resp.extend_from_slice(&a);
            }
            let _ = sock.send_to(&resp, peer).await;
        }
    });
    addr
}

// --- clients ---

/// Send raw bytes to the proxy and read the response head (and body, up to close or Content-Length).
pub async fn raw(proxy: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    read_response(&mut s).await
}

/// Read one HTTP response: head plus Content-Length body (or to EOF without one).
pub async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            if head.starts_with("http/1.1 200 connection established") {
                return String::from_utf8_lossy(&buf).into_owned();
            }
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                if buf.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no response within 10s; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"))
}

pub fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `CONNECT authority` from source address `from` (127.0.0.x: a client group, a pod); the status code.
pub async fn connect_from(proxy: SocketAddr, from: &str, authority: &str) -> u16 {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut c = s.connect(proxy).await.unwrap();
    c.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    status(&read_response(&mut c).await)
}

/// `CONNECT authority` and return the proxy's response head.
pub async fn connect(proxy: SocketAddr, authority: &str) -> String {
    raw(
        proxy,
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
    )
    .await
}

pub struct CurlOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run curl with `args` and extra environment variables (proxy variables from the environment are cleared).
pub async fn curl(args: &[&str], env: &[(&str, &str)]) -> CurlOut {
    curl_in(&[], args, env).await
}

/// [`curl`] run through a wrapper command, such as `["ip", "netns", "exec", "ns1"]`.
pub async fn curl_in(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> CurlOut {
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = tokio::process::Command::new(program);
            c.args(rest).arg("curl");
            c
        }
        None => tokio::process::Command::new("curl"),
    };
    cmd.args(["-sS", "--max-time", "15"]).args(args);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("curl must be installed");
    CurlOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
