//! Client identity end to end: client groups by source address (curl bound to 127.0.0.2 / 127.0.0.3), rules
//! and profiles scoped to groups, the `client` field of the decision line, and `egressd check --client`.

mod support;
use std::process::Command;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_egressd");

fn yaml(port: u16) -> String {
    format!(
        r#"
clients:
  - name: vendor-a-agents
    cidrs: ["127.0.0.2/32"]
  - name: vendor-b-agents
    cidrs: ["127.0.0.3/32"]
allow:
  - name: vendor-a
    hosts: ["a.test"]
    ports: [{port}]
    clients: [vendor-a-agents]
  - name: vendor-b
    hosts: ["b.test"]
    ports: [{port}]
    clients: [vendor-b-agents]
  - name: shared
    hosts: ["shared.test"]
    ports: [{port}]
deny:
  - name: shared-not-for-b
    hosts: ["shared.test"]
    clients: [vendor-b-agents]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    a.test: ["127.0.0.1"]
    b.test: ["127.0.0.1"]
    shared.test: ["127.0.0.1"]
"#
    )
}

/// curl from source address `from` through the proxy to `https://host:port/`.
async fn fetch(proxy: &TestProxy, origin: &TlsOrigin, from: &str, host: &str) -> CurlOut {
    let url = format!("https://{host}:{}/", origin.addr.port());
    curl(
        &[
            "--interface",
            from,
            "--proxy",
            &proxy.url(),
            "--cacert",
            origin.ca_pem.to_str().unwrap(),
            &url,
        ],
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_group_reaches_only_its_own_vendor() {
    let origin = tls_origin(&["a.test", "b.test", "shared.test"]).await;
    let proxy = start_proxy(&yaml(origin.addr.port())).await;

    let cases = [
        ("127.0.0.2", "a.test", true),
        ("127.0.0.2", "b.test", false),
        ("127.0.0.3", "b.test", true),
        ("127.0.0.3", "a.test", false),
        // An unidentified client sees only the unscoped rules.
        ("127.0.0.1", "a.test", false),
        ("127.0.0.1", "shared.test", true),
        // The same destination: allowed for one group, denied by a rule scoped to the other.
        ("127.0.0.2", "shared.test", true),
        ("127.0.0.3", "shared.test", false),
    ];
    for (from, host, allowed) in cases {
        let out = fetch(&proxy, &origin, from, host).await;
        if allowed {
            assert_eq!(out.code, 0, "{from} → {host}: {}", out.stderr);
            assert_eq!(out.stdout, "hello from tls origin");
        } else {
            assert_ne!(out.code, 0, "{from} → {host} should be refused");
            assert!(
                out.stderr.contains("403"),
                "{from} → {host}: {}",
                out.stderr
            );
        }
    }

    let lines = proxy.log.wait_events("decision", cases.len()).await;
    let line = |from: &str, host: &str| {
        lines
            .iter()
            .find(|d| {
                d["host"] == host
                    && d["client_addr"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{from}:"))
            })
            .unwrap_or_else(|| panic!("no decision for {from} → {host} in {lines:?}"))
    };
    let d = line("127.0.0.2", "a.test");
    assert_eq!(d["client"], serde_json::json!(["vendor-a-agents"]));
    assert_eq!(d["rule"], "vendor-a");
    let d = line("127.0.0.3", "a.test");
    assert_eq!(d["client"], serde_json::json!(["vendor-b-agents"]));
    assert_eq!(
        (&d["decision"], &d["reason"]),
        (&"deny".into(), &"denied_no_rule".into())
    );
    let d = line("127.0.0.3", "shared.test");
    assert_eq!(
        (&d["reason"], &d["rule"]),
        (&"denied_by_rule".into(), &"shared-not-for-b".into())
    );
    let d = line("127.0.0.1", "shared.test");
    assert_eq!(d["client"], serde_json::json!([]));
    assert_eq!(d["rule"], "shared");

    // Metrics carry the group, never the address.
    let text = proxy.metrics().await;
    let series = r#"egressd_decisions_total{decision="allow",reason="allowed",rule="vendor-a",vendor="",client_group="vendor-a-agents"}"#;
    assert_eq!(metric_value(&text, series), Some(1.0), "{text}");
    assert!(!text.contains("127.0.0.2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_identity_refuses_clients_outside_every_group() {
    let origin = tls_origin(&["shared.test"]).await;
    let yaml = format!("require_identity: true\n{}", yaml(origin.addr.port()));
    let proxy = start_proxy(&yaml).await;
    let out = fetch(&proxy, &origin, "127.0.0.1", "shared.test").await;
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    let out = fetch(&proxy, &origin, "127.0.0.2", "shared.test").await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = proxy.log.decision_for("shared.test").await;
    assert_eq!(d["reason"], "denied_no_identity");
    assert_eq!(d["client"], serde_json::json!([]));
}

#[test]
fn check_evaluates_as_the_named_client_group() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("egressd.yaml");
    std::fs::write(&cfg, yaml(443)).unwrap();
    let cfg = cfg.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["check", "--config", cfg])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&[
        "--client",
        "vendor-a-agents",
        "a.test:443",
        "shared.test:443",
    ]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("a.test:443\tallow\trule=vendor-a"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["--client", "vendor-b-agents", "a.test:443"]);
    assert_eq!(code, Some(1), "{stdout}");
    let (code, stdout, _) = run(&["--client", "vendor-b-agents", "shared.test:443"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("rule=shared-not-for-b\treason=denied_by_rule"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["a.test:443"]);
    assert_eq!(code, Some(1), "unidentified: {stdout}");
    // --from: the groups a client at that address is in, as the proxy finds them.
    let (code, stdout, _) = run(&["--from", "127.0.0.2", "a.test:443"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("rule=vendor-a"), "{stdout}");
    let (code, stdout, _) = run(&["--from", "::ffff:127.0.0.3", "a.test:443"]);
    assert_eq!(code, Some(1), "{stdout}");
    let (code, _, stderr) = run(&["--client", "nosuch", "a.test:443"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("\"nosuch\" is not a client group") && stderr.contains("vendor-a-agents"),
        "{stderr}"
    );
}

/// On a dual-stack `[::]` listener IPv4 clients arrive as `::ffff:127.0.0.2`: they are still in the group of
/// `127.0.0.2/32`, and their decision line names the IPv4 address. IPv6 clients are matched as themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_groups_hold_on_a_dual_stack_listener() {
    let origin = tls_origin(&["a.test", "b.test", "shared.test"]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    let yaml = yaml(origin.addr.port()).replace(
        "cidrs: [\"127.0.0.3/32\"]",
        "cidrs: [\"127.0.0.3/32\", \"::1/128\"]",
    );
    std::fs::write(
        &path,
        format!("listen: \"[::]:0\"\nadmin: {{listen: off}}\n{yaml}"),
    )
    .unwrap();
    let proxy = start_proxy_file(&path).await;
    assert!(proxy.addr.ip().is_unspecified() && proxy.addr.is_ipv6());
    let port = proxy.addr.port();
    let ca = origin.ca_pem.to_str().unwrap().to_string();
    let via = |from: &str, proxy_host: &str, host: &str| {
        let url = format!("https://{host}:{}/", origin.addr.port());
        let proxy_url = format!("http://{proxy_host}:{port}");
        let ca = ca.clone();
        let from = from.to_string();
        async move {
            curl(
                &[
                    "--interface",
                    &from,
                    "--proxy",
                    &proxy_url,
                    "--cacert",
                    &ca,
                    &url,
                ],
                &[],
            )
            .await
        }
    };
    let a = via("127.0.0.2", "127.0.0.1", "a.test").await;
    assert_eq!(a.code, 0, "{}", a.stderr);
    let b = via("::1", "[::1]", "b.test").await;
    assert_eq!(b.code, 0, "{}", b.stderr);
    let denied = via("127.0.0.2", "127.0.0.1", "b.test").await;
    assert_ne!(denied.code, 0, "{}", denied.stdout);

    let lines = proxy.log.wait_events("decision", 3).await;
    assert_eq!(lines[0]["client"], serde_json::json!(["vendor-a-agents"]));
    assert!(
        lines[0]["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.2:"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["client"], serde_json::json!(["vendor-b-agents"]));
    assert_eq!(lines[2]["reason"], "denied_no_rule", "{}", lines[2]);
}
