//! Shared fixture of the adversarial tests: a proxy that allows one TLS origin (`good.test`) and one plain HTTP
//! origin (`plain.test`) on loopback, helpers that check a refusal (status, `X-Egressd-Reason`, decision line)
//! and one that proves the proxy still serves correct traffic afterwards.
#![allow(dead_code)]

pub mod dns;

use crate::support::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

pub struct Fixture {
    pub proxy: TestProxy,
    pub tls: TlsOrigin,
    pub http_port: u16,
    /// Decision lines already checked by `refused`/`serves`.
    seen: std::cell::Cell<usize>,
}

/// The fixture's config. `rules` are more `allow` entries (indented as list items); the names `aux.test`,
/// `rec.test` and `tcp.test` map to 127.0.0.1 for them. `extra` adds top-level keys the base does not set.
pub fn fixture_yaml(tls_port: u16, http_port: u16, rules: &str, extra: &str) -> String {
    format!(
        r#"
allow:
  - name: good
    hosts: ["good.test"]
    ports: [{tls_port}]
  - name: plain
    hosts: ["plain.test"]
    ports: [{http_port}]
{rules}
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    good.test: ["127.0.0.1"]
    plain.test: ["127.0.0.1"]
    aux.test: ["127.0.0.1"]
    rec.test: ["127.0.0.1"]
    tcp.test: ["127.0.0.1"]
{extra}
"#
    )
}

impl Fixture {
    pub async fn new() -> Fixture {
        Self::with("", "").await
    }

    /// With more allow rules and top-level keys (see [`fixture_yaml`]).
    pub async fn with(rules: &str, extra: &str) -> Fixture {
        let tls = tls_origin(&["good.test"]).await;
        let http_port = http_origin().await.port();
        let proxy = start_proxy(&fixture_yaml(tls.addr.port(), http_port, rules, extra)).await;
        Fixture {
            proxy,
            tls,
            http_port,
            seen: std::cell::Cell::new(0),
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.proxy.addr
    }

    pub fn tls_port(&self) -> u16 {
        self.tls.addr.port()
    }

    /// The next decision line (waits for it), in order.
    pub async fn next_decision(&self) -> Value {
        let n = self.seen.get();
        let d = self.proxy.log.wait_events("decision", n + 1).await[n].clone();
        self.seen.set(n + 1);
        d
    }

    /// Mark every decision line written so far as checked; returns them.
    pub fn take_all_decisions(&self) -> Vec<Value> {
        let all = self.proxy.log.events("decision");
        let new = all[self.seen.get()..].to_vec();
        self.seen.set(all.len());
        new
    }

    /// No decision line beyond the ones already checked, after a short settle.
    pub async fn no_more_decisions(&self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let all = self.proxy.log.events("decision");
        assert_eq!(
            all.len(),
            self.seen.get(),
            "unexpected decision lines: {:?}",
            &all[self.seen.get().min(all.len())..]
        );
    }

    /// `resp` is a refusal with `status` and `reason`, and the next decision line says so (deny, with a
    /// detail). Returns that line.
    pub async fn refused(&self, what: &str, resp: &str, status_code: u16, reason: &str) -> Value {
        assert_eq!(status(resp), status_code, "{what}: {resp}");
        assert_eq!(
            header(resp, "x-egressd-reason"),
            Some(reason),
            "{what}: {resp}"
        );
        let d = self.next_decision().await;
        assert_eq!(d["reason"], reason, "{what}: {d}");
        assert_eq!(d["decision"], "deny", "{what}: {d}");
        assert!(
            d["detail"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: a refusal explains itself: {d}"
        );
        d
    }

    /// Raw request bytes, expecting a refusal.
    pub async fn expect(&self, request: &[u8], status_code: u16, reason: &str) -> Value {
        let what = String::from_utf8_lossy(request).into_owned();
        let resp = raw(self.addr(), request).await;
        self.refused(&what, &resp, status_code, reason).await
    }

    /// curl through the proxy to `https://good.test:PORT/` (the TLS origin).
    pub async fn curl_good(&self) -> CurlOut {
        let port = self.tls_port();
        curl(
            &[
                "--proxy",
                &self.proxy.url(),
                "--cacert",
                self.tls.ca_pem.to_str().unwrap(),
                &format!("https://good.test:{port}/"),
            ],
            &[],
        )
        .await
    }

    /// The proxy still serves: curl through it to the TLS origin gets the origin's answer, and a plain-HTTP
    /// request is forwarded with its Host rewritten; both are logged as allowed.
    pub async fn serves(&self) {
        let out = self.curl_good().await;
        assert_eq!(out.code, 0, "follow-up request failed: {}", out.stderr);
        assert_eq!(out.stdout, "hello from tls origin");
        let d = self.next_decision().await;
        assert_eq!(d["reason"], "allowed", "{d}");
        assert_eq!(d["host"], "good.test", "{d}");

        let hp = self.http_port;
        let resp = raw(
            self.addr(),
            format!("GET http://plain.test:{hp}/ok HTTP/1.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(status(&resp), 200, "{resp}");
        assert!(resp.contains(&format!("host: plain.test:{hp}")), "{resp}");
        let d = self.next_decision().await;
        assert_eq!(d["reason"], "allowed", "{d}");
    }
}

// --- raw TCP helpers ---

/// An allow rule for `tcp.test` (a plain TCP origin, no TLS required) on `port`, for [`Fixture::with`].
pub fn tcp_rule(port: u16) -> String {
    format!("  - name: tcp\n    hosts: [\"tcp.test\"]\n    ports: [{port}]\n    tls: false\n")
}

/// Close with a reset (SO_LINGER 0) instead of a FIN.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// Close with a reset or a FIN.
pub fn close(s: TcpStream, with_reset: bool) {
    if with_reset {
        reset(s);
    }
}

/// Read a response head byte by byte, so that tunnel data arriving right behind it stays unread.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// A TCP origin on 127.0.0.1 that accepts one connection and returns everything it read until EOF.
pub async fn sink_origin() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v).await;
        v
    });
    (port, got)
}
