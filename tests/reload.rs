//! Configuration reload: through the API, the file watcher (plain rewrites and the Kubernetes ConfigMap
//! `..data` symlink swap) and SIGHUP, under concurrent traffic with no failed request; an invalid file keeps
//! the old policy serving.

mod support;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn config(origin_port: u16, hosts: &[&str]) -> String {
    let names: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let mapped: Vec<String> = ["a.test", "b.test"]
        .iter()
        .map(|h| format!("    {h}: [\"127.0.0.1\"]"))
        .collect();
    format!(
        "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\n\
         allow:\n  - name: origin\n    hosts: [{}]\n    ports: [{origin_port}]\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts:\n{}\n",
        names.join(", "),
        mapped.join("\n")
    )
}

/// Replace a file the way editors and tools do: write a temporary file beside it, then rename.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn get_status(proxy: std::net::SocketAddr, host: &str, port: u16) -> u16 {
    let req =
        format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    status(&raw(proxy, req.as_bytes()).await)
}

/// Wait (up to 5 s) until `host` gets `want`.
async fn wait_status(proxy: std::net::SocketAddr, host: &str, port: u16, want: u16) {
    let mut last = 0;
    for _ in 0..250 {
        last = get_status(proxy, host, port).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{host} still answers {last}, expected {want}");
}

/// Wait (up to 5 s) until a metric series reaches `want`.
async fn wait_metric(proxy: &TestProxy, series: &str, want: f64) {
    let mut last = 0.0;
    for _ in 0..250 {
        last = proxy.metric(series).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{series} is {last}, expected {want}");
}

/// Requests to `host` in a loop on `workers` tasks until stopped; counts answers other than 200.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(proxy: std::net::SocketAddr, host: &'static str, port: u16, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if get_status(proxy, host, port).await == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

const SUCCESS: &str = r#"egressd_config_reloads_total{result="success"}"#;
const ERROR: &str = r#"egressd_config_reloads_total{result="error"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_hosts_and_survives_an_invalid_file_under_traffic() {
    let origin = http_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, config(port, &["a.test"])).unwrap();
    let proxy = start_proxy_file(&path).await;
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 403);
    let started_at = proxy
        .metric("egressd_config_last_reload_success_timestamp_seconds")
        .await;
    assert!(started_at > 0.0);

    let traffic = Traffic::start(proxy.addr, "a.test", port, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 1. Through the API: add b.test.
    std::fs::write(&path, config(port, &["a.test", "b.test"])).unwrap();
    proxy.reloader.reload().expect("valid configuration");
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 200);
    wait_metric(&proxy, SUCCESS, 1.0).await;

    // 2. Through the file watcher: remove b.test again.
    replace_file(&path, &config(port, &["a.test"]));
    wait_status(proxy.addr, "b.test", port, 403).await;
    wait_metric(&proxy, SUCCESS, 2.0).await;

    // 3. An invalid file: the watcher counts the error, the old policy keeps serving, readiness holds.
    replace_file(
        &path,
        &config(port, &["a.test", "b.test"]).replace("ports: [", "ports: [99999, "),
    );
    wait_metric(&proxy, ERROR, 1.0).await;
    let err = proxy.reloader.reload().expect_err("invalid configuration");
    assert!(err.to_string().contains("99999"), "{err}");
    wait_metric(&proxy, ERROR, 2.0).await;
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 403);
    assert_eq!(get_status(proxy.addr, "a.test", port).await, 200);
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ok, failed) = traffic.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} requests failed during reloads ({ok} ok)"
    );
    assert!(ok > 20, "too little traffic to mean anything: {ok}");
    assert_eq!(proxy.metric(SUCCESS).await, 2.0);
    assert_eq!(proxy.metric(ERROR).await, 2.0);
    assert!(
        proxy
            .metric("egressd_config_last_reload_success_timestamp_seconds")
            .await
            >= started_at
    );
}

/// A writer that truncates the file and rewrites it in place, pausing halfway (`cat > egressd.yaml` from a slow
/// pipe, an editor without atomic save): the prefix is valid YAML cut before `deny:`, and is never applied; the
/// whole file is, once its writer closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_is_applied_only_when_its_writer_closes_it() {
    use std::io::Write;
    let origin = http_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    let yaml = |hosts: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\n\
             allow:\n  - name: origin\n    hosts: [{hosts}]\n    ports: [{port}]\n\
             destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
             dns:\n  hosts:\n    a.test: [\"127.0.0.1\"]\n    b.test: [\"127.0.0.1\"]\n    c.test: [\"127.0.0.1\"]\n\
             deny:\n  - name: never-b\n    hosts: [b.test]\n"
        )
    };
    std::fs::write(&path, yaml("a.test, b.test")).unwrap();
    let proxy = start_proxy_file(&path).await;
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 403);

    let new = yaml("a.test, b.test, c.test");
    let cut = new.find("deny:").unwrap();
    let prefix = &new[..cut];
    assert!(
        egressd::config::from_yaml_str(prefix).is_ok(),
        "the prefix must compile for this test to mean anything"
    );
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(prefix.as_bytes()).unwrap();
    f.flush().unwrap();
    // Longer than any quiet period a watcher could wait for.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        get_status(proxy.addr, "b.test", port).await,
        403,
        "the half-written file was applied"
    );
    assert_eq!(get_status(proxy.addr, "c.test", port).await, 403);
    f.write_all(&new.as_bytes()[cut..]).unwrap();
    drop(f);
    wait_status(proxy.addr, "c.test", port, 200).await;
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 403);
    assert_eq!(
        proxy.metric(SUCCESS).await,
        1.0,
        "one reload, of the whole file"
    );
}

/// A reload reaches connections opened before it: each later request of a kept-alive connection is decided
/// with the configuration in force when it arrives, for a removed rule and for a new deny rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_kept_alive_connections() {
    use tokio::io::AsyncWriteExt;
    let origin = http_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, config(port, &["a.test", "b.test"])).unwrap();
    let proxy = start_proxy_file(&path).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    async fn get(s: &mut tokio::net::TcpStream, host: &str, port: u16) -> String {
        s.write_all(
            format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        read_response(s).await
    }
    assert_eq!(status(&get(&mut s, "b.test", port).await), 200);

    std::fs::write(&path, config(port, &["a.test"])).unwrap();
    proxy.reloader.reload().unwrap();
    let resp = get(&mut s, "b.test", port).await;
    assert_eq!(status(&resp), 403, "a removed rule still applies: {resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));
    assert_eq!(status(&get(&mut s, "a.test", port).await), 200);

    std::fs::write(
        &path,
        config(port, &["a.test"]) + "deny:\n  - name: no-a\n    hosts: [a.test]\n",
    )
    .unwrap();
    proxy.reloader.reload().unwrap();
    let resp = get(&mut s, "a.test", port).await;
    assert_eq!(status(&resp), 403, "a new deny rule does not apply: {resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_by_rule"));

    let d = proxy.log.wait_events("decision", 4).await;
    assert!(
        d.iter().all(|l| l["conn_id"] == d[0]["conn_id"]),
        "one connection: {d:?}"
    );
    assert_eq!(d[3]["rule"], "no-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let origin = http_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The layout the kubelet makes for a mounted ConfigMap.
    std::fs::create_dir(d.join("..2026_01_01_v1")).unwrap();
    std::fs::write(
        d.join("..2026_01_01_v1/egressd.yaml"),
        config(port, &["a.test"]),
    )
    .unwrap();
    symlink("..2026_01_01_v1", d.join("..data")).unwrap();
    symlink("..data/egressd.yaml", d.join("egressd.yaml")).unwrap();
    let proxy = start_proxy_file(&d.join("egressd.yaml")).await;
    let traffic = Traffic::start(proxy.addr, "a.test", port, 2);
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 403);

    // The update: a new timestamped directory, then an atomic swap of `..data`.
    std::fs::create_dir(d.join("..2026_01_02_v2")).unwrap();
    std::fs::write(
        d.join("..2026_01_02_v2/egressd.yaml"),
        config(port, &["a.test", "b.test"]),
    )
    .unwrap();
    symlink("..2026_01_02_v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_01_01_v1")).unwrap();

    wait_status(proxy.addr, "b.test", port, 200).await;
    let (ok, failed) = traffic.finish().await;
    assert_eq!(failed, 0, "{failed} requests failed ({ok} ok)");
    assert_eq!(proxy.metric(SUCCESS).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_tunnels_survive_a_reload_that_removes_their_host() {
    let echo = echo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    let yaml = |allowed: bool| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nallow:\n  - name: echo\n    hosts: [\"{}\"]\n    ports: [{}]\n\
             destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\ndns:\n  hosts:\n    echo.test: [\"127.0.0.1\"]\n",
            if allowed { "echo.test" } else { "other.test" },
            echo.port()
        )
    };
    std::fs::write(&path, yaml(true)).unwrap();
    let proxy = start_proxy_file(&path).await;
    let authority = format!("echo.test:{}", echo.port());
    let mut tunnel = open_tunnel(proxy.addr, &authority).await;
    echo_roundtrip(&mut tunnel, b"one").await.unwrap();
    std::fs::write(&path, yaml(false)).unwrap();
    proxy.reloader.reload().unwrap();
    // New tunnels to the host are refused; the open one keeps working.
    assert_eq!(status(&connect(proxy.addr, &authority).await), 403);
    echo_roundtrip(&mut tunnel, b"two").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_addresses_do_not_change_on_reload() {
    let origin = http_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, config(port, &["a.test"])).unwrap();
    let proxy = start_proxy_file(&path).await;
    let other = closed_port().await;
    std::fs::write(
        &path,
        config(port, &["a.test", "b.test"]).replacen(
            "listen: 127.0.0.1:0",
            &format!("listen: 127.0.0.1:{other}"),
            1,
        ),
    )
    .unwrap();
    proxy
        .reloader
        .reload()
        .expect("the rest of the configuration applies");
    // Still on the old address, with the new rules.
    assert_eq!(get_status(proxy.addr, "b.test", port).await, 200);
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", other))
        .await
        .is_err());
}

/// Handshake with the TLS listener trusting only `ca_pem`.
async fn tls_handshake(addr: std::net::SocketAddr, ca_pem: &str) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("proxy.test").unwrap();
    connector
        .connect(name, tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The certificates in a PEM text.
fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_certificate_is_reread_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let write_cert = || {
        let cert = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
        std::fs::write(dir.path().join("proxy.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("proxy.key"), cert.key_pair.serialize_pem()).unwrap();
        cert.cert.pem()
    };
    let first = write_cert();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0\nlisten_tls: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\ntls:\n  cert: {}\n  key: {}\n",
            dir.path().join("proxy.pem").display(),
            dir.path().join("proxy.key").display()
        ),
    )
    .unwrap();
    let proxy = start_proxy_file(&path).await;
    let tls_addr = proxy.tls_addr.unwrap();
    tls_handshake(tls_addr, &first).await.unwrap();

    // A renewed certificate (as cert-manager writes it): the watcher sees the file and reloads.
    let second = write_cert();
    let mut renewed = false;
    for _ in 0..250 {
        if tls_handshake(tls_addr, &second).await.is_ok() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        renewed,
        "the TLS listener still presents the old certificate"
    );
    assert!(tls_handshake(tls_addr, &first).await.is_err());
}

/// A reload that drops `listen_tls` cannot close the bound TLS listener: it keeps serving with its certificate
/// while the rest of the configuration applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_keeps_its_certificate_when_a_reload_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["proxy.test".into()]).unwrap();
    std::fs::write(dir.path().join("proxy.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("proxy.key"), cert.key_pair.serialize_pem()).unwrap();
    let path = dir.path().join("egressd.yaml");
    let plain = "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n";
    std::fs::write(
        &path,
        format!(
            "{plain}listen_tls: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n",
            dir.path().join("proxy.pem").display(),
            dir.path().join("proxy.key").display()
        ),
    )
    .unwrap();
    let proxy = start_proxy_file(&path).await;
    let tls_addr = proxy.tls_addr.unwrap();
    tls_handshake(tls_addr, &cert.cert.pem()).await.unwrap();

    std::fs::write(&path, plain).unwrap();
    proxy
        .reloader
        .reload()
        .expect("the rest of the configuration applies");
    tls_handshake(tls_addr, &cert.cert.pem()).await.unwrap();
}

/// The binary reloads on SIGHUP (the file unchanged: SIGHUP alone triggers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(&path, config(1, &["a.test"])).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env_remove("EGRESSD_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let admin: std::net::SocketAddr = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await
            .expect("no 'egressd listening' line")
            .unwrap()
            .expect("egressd exited");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "egressd listening" {
            break v["admin"].as_str().unwrap().parse().unwrap();
        }
    };
    let scrape = || async move {
        let resp = raw(
            admin,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        metric_value(&resp, SUCCESS).unwrap_or(-1.0)
    };
    assert_eq!(scrape().await, 0.0);
    send_signal(&child, libc::SIGHUP);
    let mut reloaded = false;
    for _ in 0..250 {
        if scrape().await == 1.0 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP did not reload");
    send_signal(&child, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_follows_reloads_up_and_down() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    let yaml = |max: u32| {
        format!("listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nlimits: {{max_connections: {max}}}\n")
    };
    std::fs::write(&path, yaml(1)).unwrap();
    let proxy = start_proxy_file(&path).await;
    // A connection that holds a slot: it has started a request head and waits (no 503 came back).
    let hold = || async {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"CON").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut b = [0u8; 64];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the connection did not get a slot: {other:?}"),
        }
        s
    };
    let refused = || async { status(&connect(proxy.addr, "a.test:443").await) == 503 };

    let a = hold().await;
    assert!(refused().await);
    std::fs::write(&path, yaml(3)).unwrap();
    proxy.reloader.reload().unwrap();
    let b = hold().await;
    let c = hold().await;
    assert!(refused().await, "three held, limit three");

    std::fs::write(&path, yaml(1)).unwrap();
    proxy.reloader.reload().unwrap();
    drop((b, c));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(refused().await, "one held, limit one");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!refused().await, "nothing held, limit one");

    // Lowered while connections are open, then raised again before they close: the raise wins.
    std::fs::write(&path, yaml(2)).unwrap();
    proxy.reloader.reload().unwrap();
    let (a, b) = (hold().await, hold().await);
    assert!(refused().await, "two held, limit two");
    std::fs::write(&path, yaml(1)).unwrap();
    proxy.reloader.reload().unwrap();
    std::fs::write(&path, yaml(3)).unwrap();
    proxy.reloader.reload().unwrap();
    let c = hold().await;
    assert!(refused().await, "three held, limit three");
    drop((a, b, c));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held: Vec<_> = [hold().await, hold().await, hold().await].into();
    assert!(refused().await, "three held again, limit three");
    drop(held);
}
