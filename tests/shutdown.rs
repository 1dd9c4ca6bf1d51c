//! Graceful shutdown: readiness turns false and listeners close at once, open tunnels keep working for
//! `shutdown.grace`, then they are cut and the number cut is logged.

mod support;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn echo_yaml(port: u16, grace: &str) -> String {
    format!(
        "allow:\n  - name: echo\n    hosts: [\"echo.test\"]\n    ports: [{port}]\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts:\n    echo.test: [\"127.0.0.1\"]\n\
         shutdown:\n  grace: {grace}\n"
    )
}

/// Wait (up to 5 s) until reading the tunnel shows it closed.
async fn wait_closed(s: &mut tokio::net::TcpStream) {
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .expect("the tunnel was not cut");
    assert!(matches!(r, Ok(0) | Err(_)), "unexpected data: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_drain_during_grace_and_are_cut_after() {
    let echo = echo_origin().await;
    let proxy = start_proxy(&echo_yaml(echo.port(), "1500ms")).await;
    let authority = format!("echo.test:{}", echo.port());
    let mut tunnel = open_tunnel(proxy.addr, &authority).await;
    echo_roundtrip(&mut tunnel, b"before").await.unwrap();

    let began = Instant::now();
    proxy.shutdown.cancel();
    // Readiness turns false and the listener closes right away.
    let mut not_ready = false;
    for _ in 0..100 {
        if proxy.admin_get("/readyz").await.0 == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "readiness stayed true while draining");
    assert_eq!(proxy.admin_get("/healthz").await.0, 200);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(proxy.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts while draining");

    // The open tunnel keeps working during the grace period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_roundtrip(&mut tunnel, b"during grace").await.unwrap();
    assert!(began.elapsed() < Duration::from_millis(1500));

    // After it, the tunnel is cut and its close line says why.
    wait_closed(&mut tunnel).await;
    assert!(
        began.elapsed() >= Duration::from_millis(1400),
        "cut before the grace was over: {:?}",
        began.elapsed()
    );
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "shutdown");
    assert_eq!(c["bytes_up"], "before".len() + "during grace".len());
}

/// A tunnel still waiting for its client's first bytes (the peek) is cut with the others at the end of the
/// grace, and still gets its decision and close lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_waiting_for_its_first_bytes_is_cut_at_the_end_of_grace() {
    let echo = echo_origin().await;
    let proxy = start_proxy(&echo_yaml(echo.port(), "1s")).await;
    // Not port 443 and no `tls: true`: the peek waits up to timeouts.idle for the first byte.
    let mut tunnel = open_tunnel(proxy.addr, &format!("echo.test:{}", echo.port())).await;
    let began = Instant::now();
    proxy.shutdown.cancel();
    wait_closed(&mut tunnel).await;
    let took = began.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(3000)).contains(&took),
        "cut after {took:?}, not at the end of the 1 s grace"
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "allow", "{d}");
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_eq!(c["close_reason"], "shutdown", "{c}");
    assert_eq!(c["bytes_up"], 0, "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_that_ends_within_grace_is_not_cut() {
    let echo = echo_origin().await;
    let proxy = start_proxy(&echo_yaml(echo.port(), "10s")).await;
    let mut tunnel = open_tunnel(proxy.addr, &format!("echo.test:{}", echo.port())).await;
    echo_roundtrip(&mut tunnel, b"x").await.unwrap();
    proxy.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(tunnel);
    let c = &proxy.log.wait_events("close", 1).await[0];
    assert_ne!(c["close_reason"], "shutdown", "{c}");
}

/// The binary: SIGTERM with a tunnel open logs the drain, keeps the tunnel through the grace, cuts it and
/// logs how many were cut, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_cuts_and_logs_the_count() {
    let echo = echo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("egressd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\n{}",
            echo_yaml(echo.port(), "1s")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("EGRESSD_LOG")
        .env("TOKIO_WORKER_THREADS", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let collected = lines.clone();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = out.next_line().await {
            if let Ok(v) = serde_json::from_str(&l) {
                collected.lock().unwrap().push(v);
            }
        }
    });
    let find = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        lines.lock().unwrap().iter().find(|v| pred(v)).cloned()
    };
    let mut listening = None;
    for _ in 0..500 {
        listening = find(&|v| v["message"] == "egressd listening");
        if listening.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listening = listening.expect("no 'egressd listening' line");
    let addr: std::net::SocketAddr = listening["listen"].as_str().unwrap().parse().unwrap();
    assert_eq!(listening["worker_threads"], 3, "{listening}");

    let mut tunnel = open_tunnel(addr, &format!("echo.test:{}", echo.port())).await;
    echo_roundtrip(&mut tunnel, b"ping").await.unwrap();
    send_signal(&child, libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_roundtrip(&mut tunnel, b"still here").await.unwrap();
    wait_closed(&mut tunnel).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("egressd did not exit after the grace period")
        .unwrap();
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = find(&|v| v.get("open_tunnels").is_some()).expect("no drain line");
    assert_eq!(draining["open_tunnels"], 1, "{draining}");
    let cut = find(&|v| v.get("cut_connections").is_some()).expect("no cut line");
    assert_eq!(cut["cut_connections"], 1, "{cut}");
    assert_eq!(cut["cut_tunnels"], 1, "{cut}");
    let close = find(&|v| v["event"] == "close").expect("no close line");
    assert_eq!(close["close_reason"], "shutdown");
}
