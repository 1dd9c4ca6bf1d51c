//! The SNI binding holds across a TLS 1.3 HelloRetryRequest: the client's second ClientHello, sent in clear
//! after the server's retry, is judged like the first before any of it reaches the origin.

mod support;
use support::retry::*;
use support::*;

fn yaml(port: u16) -> String {
    format!(
        r#"
allow:
  - name: allowed
    hosts: ["allowed.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    allowed.test: ["127.0.0.1"]
"#
    )
}

/// Run the blocking exchange off the runtime.
async fn exchange(
    proxy: std::net::SocketAddr,
    authority: String,
    second: Option<&'static str>,
    extra: Vec<(u16, Vec<u8>)>,
) -> Vec<u8> {
    tokio::task::spawn_blocking(move || {
        let mut s = connect_blocking(proxy, &authority);
        retry_exchange(&mut s, "allowed.test", second, &extra).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_for_another_name_never_reaches_the_origin() {
    let origin = retry_origin_at("127.0.0.1:0".parse().unwrap()).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port)).await;
    let authority = format!("allowed.test:{port}");

    // The same name twice: the retry goes through and the origin serves.
    let got = exchange(proxy.addr, authority.clone(), Some("allowed.test"), vec![]).await;
    assert_eq!(got, SERVED);
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "allow", "{d}");

    // Fronting through the retry: the second hello names another host.
    let got = exchange(proxy.addr, authority.clone(), Some("evil.test"), vec![]).await;
    assert!(got.is_empty(), "the origin answered the fronted hello");
    let d = &proxy.log.wait_events("decision", 2).await[1];
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["reason"], "denied_sni_mismatch", "{d}");
    assert!(d["detail"].as_str().unwrap().contains("evil.test"), "{d}");
    let close = &proxy.log.close_of(d).await;
    assert_eq!(close["close_reason"], "denied", "{close}");

    // The second hello leaves the name out, or hides it with ECH (final or draft codepoint).
    let got = exchange(proxy.addr, authority.clone(), None, vec![]).await;
    assert!(got.is_empty());
    let d = &proxy.log.wait_events("decision", 3).await[2];
    assert_eq!(d["reason"], "denied_sni_mismatch", "{d}");
    for (i, ech) in [0xfe0d_u16, 0xfe0a].into_iter().enumerate() {
        let got = exchange(
            proxy.addr,
            authority.clone(),
            Some("allowed.test"),
            vec![(ech, vec![0; 16])],
        )
        .await;
        assert!(got.is_empty());
        let d = &proxy.log.wait_events("decision", 4 + i).await[3 + i];
        assert_eq!(d["reason"], "denied_ech", "{d}");
    }

    // The origin saw the first hellos, and a second one only where it repeated the name.
    let seen = origin.seen.lock().unwrap().clone();
    let allowed = Some("allowed.test".to_string());
    assert_eq!(seen.first(), Some(&allowed));
    assert!(
        seen.iter().all(|s| *s == allowed),
        "a hello for another name reached the origin: {seen:?}"
    );
    assert_eq!(seen.len(), 2 + 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_ech_and_esni_are_refused_in_the_first_hello() {
    let origin = tls_origin(&["allowed.test"]).await;
    let port = origin.addr.port();
    let proxy = start_proxy(&yaml(port)).await;
    for (i, ext) in [0xfe0a_u16, 0xfe0b, 0xfe0c, 0xffce].into_iter().enumerate() {
        let mut s = open_tunnel(proxy.addr, &format!("allowed.test:{port}")).await;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(&client_hello(Some("allowed.test"), &[(ext, vec![0; 16])]))
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{ext:#06x}: the origin answered");
        let d = &proxy.log.wait_events("decision", i + 1).await[i];
        assert_eq!(d["reason"], "denied_ech", "{ext:#06x}: {d}");
    }
}
