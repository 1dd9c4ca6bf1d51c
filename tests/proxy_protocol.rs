//! PROXY protocol from load balancers on the forward listener: the client a trusted peer's header names is
//! the connection's client (identity, decision lines, per-client limits); a trusted peer without a header, a
//! broken header, and a header from anyone else are refused, each with its reason. curl's
//! `--haproxy-protocol` and raw version 1 and 2 headers.

mod support;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const NAME: &str = "allowed.test";

/// Trusted: `trusted` CIDRs. A client group `office` (10.1.2.0/24) may reach NAME at `port`; nobody else.
fn yaml(trusted: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
proxy_protocol:
  trusted: [{trusted}]
clients:
  - name: office
    cidrs: ["10.1.2.0/24"]
allow:
  - name: office-origin
    hosts: ["{NAME}"]
    ports: [{port}]
    clients: [office]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts_file: "off"
  hosts:
    {NAME}: ["127.0.0.1"]
timeouts:
  header: 1s
{extra}
"#
    )
}

fn v1(client: &str, port: u16) -> Vec<u8> {
    let family = if client.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if client.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {client} {dst} {port} 3128\r\n").into_bytes()
}

fn v2(command: u8, client: Option<SocketAddr>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    let mut addresses = Vec::new();
    let family = match client {
        Some(SocketAddr::V4(a)) => {
            addresses.extend(a.ip().octets());
            addresses.extend([127, 0, 0, 1]);
            addresses.extend(a.port().to_be_bytes());
            addresses.extend(3128u16.to_be_bytes());
            0x11
        }
        Some(SocketAddr::V6(a)) => {
            addresses.extend(a.ip().octets());
            addresses.extend(std::net::Ipv6Addr::LOCALHOST.octets());
            addresses.extend(a.port().to_be_bytes());
            addresses.extend(3128u16.to_be_bytes());
            0x21
        }
        None => 0x00,
    };
    h.push(family);
    h.extend((addresses.len() as u16).to_be_bytes());
    h.extend(addresses);
    h
}

/// A connection that sends `header`, then `request`; the response.
async fn through_balancer(proxy: SocketAddr, header: &[u8], request: &[u8]) -> (String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(header).await.unwrap();
    s.write_all(request).await.unwrap();
    let resp = read_response(&mut s).await;
    (resp, s)
}

fn connect_request(port: u16) -> Vec<u8> {
    format!("CONNECT {NAME}:{port} HTTP/1.1\r\nHost: {NAME}:{port}\r\n\r\n").into_bytes()
}

fn get_request(port: u16, path: &str) -> Vec<u8> {
    format!("GET http://{NAME}:{port}{path} HTTP/1.1\r\nHost: {NAME}:{port}\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_a_trusted_balancer_names_is_the_client() {
    let origin = http_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml("\"127.0.0.0/8\"", port, "")).await;
    let get = get_request(port, "/");

    // Version 1, a client of the office group: allowed as that client.
    let (resp, _) = through_balancer(proxy.addr, &v1("10.1.2.3", 5555), &get).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["client_addr"], "10.1.2.3:5555", "{d}");
    assert_eq!(d["client"], serde_json::json!(["office"]), "{d}");
    assert_eq!(d["decision"], "allow", "{d}");
    let balancer = d["peer_addr"].as_str().expect("the balancer is logged");
    assert!(balancer.starts_with("127.0.0.1:"), "{d}");

    // Version 2 naming a client outside the group, from the same balancer: refused, as that client.
    let other: SocketAddr = "10.9.9.9:6666".parse().unwrap();
    let (resp, _) = through_balancer(proxy.addr, &v2(1, Some(other)), &get).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let d = &proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["client_addr"], "10.9.9.9:6666", "{d}");
    assert_eq!(d["client"], serde_json::json!([]), "{d}");

    // Version 2 for an office client: allowed.
    let office: SocketAddr = "10.1.2.9:7777".parse().unwrap();
    let (resp, _) = through_balancer(proxy.addr, &v2(1, Some(office)), &get).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let d = &proxy.log.wait_events("decision", 3).await[2];
    assert_eq!(d["client_addr"], "10.1.2.9:7777", "{d}");

    // Version 2 over IPv6.
    let six: SocketAddr = "[2001:db8::7]:4444".parse().unwrap();
    let (resp, _) = through_balancer(proxy.addr, &v2(1, Some(six)), &get).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let d = &proxy.log.wait_events("decision", 4).await[3];
    assert_eq!(d["client_addr"], "[2001:db8::7]:4444", "{d}");

    // LOCAL: the balancer speaks for itself (its health checks), and is the client.
    let (resp, _) = through_balancer(proxy.addr, &v2(0, None), &get).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let d = &proxy.log.wait_events("decision", 5).await[4];
    assert!(
        d["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{d}"
    );
    assert_eq!(d["client_addr"], d["peer_addr"], "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_kept_alive_connection_is_the_named_clients() {
    let origin = http_origin().await;
    let proxy = start_proxy(&yaml("\"127.0.0.0/8\"", origin.port(), "")).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(&v1("10.1.2.3", 5555)).await.unwrap();
    for (i, path) in ["/one", "/two"].into_iter().enumerate() {
        s.write_all(&get_request(origin.port(), path))
            .await
            .unwrap();
        let resp = read_response(&mut s).await;
        assert_eq!(status(&resp), 200, "{resp}");
        assert!(resp.contains(&format!("GET {path}\n")), "{resp}");
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["client_addr"], "10.1.2.3:5555", "{d}");
        assert_eq!(d["request"], i + 1, "{d}");
        assert!(d["peer_addr"].is_string(), "{d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_haproxy_protocol_through_the_plain_listener() {
    let origin = http_origin().await;
    // curl names its own address (127.0.0.1), which the office group does not hold: allow it by address.
    let extra = "  - name: loopback\n    cidrs: [\"127.0.0.1/32\"]\n";
    let yaml = yaml("\"127.0.0.0/8\"", origin.port(), "")
        .replace("clients:\n", &format!("clients:\n{extra}"));
    let yaml = yaml.replace("clients: [office]", "clients: [office, loopback]");
    let proxy = start_proxy(&yaml).await;
    let out = curl(
        &[
            "-sS",
            "--haproxy-protocol",
            &format!("http://{NAME}:{}/curl", origin.port()),
        ],
        &[("http_proxy", &proxy.url())],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("GET /curl\n"), "{}", out.stdout);
    let d = proxy.log.decision_for(NAME).await;
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(d["client"], serde_json::json!(["loopback"]), "{d}");
    assert!(d["peer_addr"].is_string(), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_broken_and_untrusted_headers_are_refused_each_with_its_reason() {
    let origin = echo_origin().await;
    let port = origin.port();
    let proxy = start_proxy(&yaml("\"127.0.0.0/8\"", port, "")).await;
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    oversized.extend(5000u16.to_be_bytes());
    let cases: [(&[u8], &str, u16); 4] = [
        (b"", "proxy_header_missing", 400),
        (
            b"PROXY TCP4 10.1.2.3 nonsense\r\n",
            "proxy_header_invalid",
            400,
        ),
        (&oversized, "proxy_header_invalid", 400),
        // Truncated: half a header, then nothing until timeouts.header.
        (b"\r\n\r\n\0\r\nQU", "proxy_header_invalid", 400),
    ];
    for (i, (sent, reason, code)) in cases.into_iter().enumerate() {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        if i == 0 {
            s.write_all(&connect_request(port)).await.unwrap();
        }
        let resp = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s))
            .await
            .expect("answered");
        assert_eq!(status(&resp), code, "case {i}: {resp}");
        assert_eq!(header(&resp, "x-egressd-reason"), Some(reason), "{resp}");
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["reason"], reason, "{d}");
        assert!(d["peer_addr"].is_string(), "{d}");
    }

    // A peer that is not a trusted balancer may not name a client.
    let proxy = start_proxy(&yaml("\"127.0.0.2/32\"", port, "")).await;
    let (resp, _) =
        through_balancer(proxy.addr, &v1("10.1.2.3", 5555), &connect_request(port)).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("proxy_header_untrusted")
    );
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["reason"], "proxy_header_untrusted", "{d}");
    assert!(
        d["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "the address it named is not believed: {d}"
    );
    // And the proxy keeps serving (a client that may not use the origin: refused by policy).
    let (resp, _) = through_balancer(proxy.addr, b"", &connect_request(port)).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(header(&resp, "x-egressd-reason"), Some("denied_no_rule"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_limit_counts_the_named_client_not_the_balancer() {
    let origin = echo_origin().await;
    let port = origin.port();
    let extra = "limits:\n  max_connections_per_client: 1\n";
    let proxy = start_proxy(&yaml("\"127.0.0.0/8\"", port, extra)).await;
    let (resp, _held) =
        through_balancer(proxy.addr, &v1("10.1.2.3", 5555), &connect_request(port)).await;
    assert_eq!(status(&resp), 200, "{resp}");
    // The same client again, through the same balancer: over its share.
    let (resp, _) =
        through_balancer(proxy.addr, &v1("10.1.2.3", 5556), &connect_request(port)).await;
    assert_eq!(status(&resp), 503, "{resp}");
    assert_eq!(
        header(&resp, "x-egressd-reason"),
        Some("client_connection_limit")
    );
    // Another client through the same balancer has its own share.
    let (resp, _also_held) =
        through_balancer(proxy.addr, &v1("10.1.2.4", 5557), &connect_request(port)).await;
    assert_eq!(status(&resp), 200, "{resp}");
}
