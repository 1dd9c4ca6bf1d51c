//! Per-rule report mode: a deny rule or a vendor profile on trial lets through what it would refuse, logged
//! and counted as `would_deny` with its own name; enforcing rules keep refusing.

mod support;
use support::*;

async fn curl_through(proxy: &TestProxy, origin: &TlsOrigin, url: &str) -> CurlOut {
    curl(
        &[
            "--proxy",
            &proxy.url(),
            "--cacert",
            origin.ca_pem.to_str().unwrap(),
            url,
        ],
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rule_on_trial_reports_instead_of_refusing() {
    let origin = tls_origin(&["api.test.example", "bad.test.example"]).await;
    let port = origin.addr.port();
    let yaml = format!(
        r#"
allow:
  - name: origin
    hosts: [".test.example"]
    ports: [{port}]
deny:
  - name: trial
    hosts: ["api.test.example"]
    mode: report
  - name: enforced
    hosts: ["bad.test.example"]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    api.test.example: ["127.0.0.1"]
    bad.test.example: ["127.0.0.1"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    let out = curl_through(
        &proxy,
        &origin,
        &format!("https://api.test.example:{port}/"),
    )
    .await;
    assert_eq!(
        out.code, 0,
        "the trial rule must not refuse: {}",
        out.stderr
    );
    assert_eq!(out.stdout, "hello from tls origin");
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "would_deny");
    assert_eq!(d["reason"], "denied_by_rule");
    assert_eq!(d["rule"], "trial");

    let resp = connect(proxy.addr, &format!("bad.test.example:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    let text = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_decisions_total{decision="would_deny",reason="denied_by_rule",rule="trial",vendor="",client_group=""}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            r#"egressd_decisions_total{decision="deny",reason="denied_by_rule",rule="enforced",vendor="",client_group=""}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_on_trial_lets_its_near_misses_through() {
    // api.cast.ai is in the castai-us profile on port 443 only; the origin listens elsewhere.
    let origin = tls_origin(&["api.cast.ai"]).await;
    let port = origin.addr.port();
    let yaml = r#"
vendors: [{name: castai-us, mode: report}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    api.cast.ai: ["127.0.0.1"]
    unrelated.test: ["127.0.0.1"]
"#;
    let proxy = start_proxy(yaml).await;
    let out = curl_through(&proxy, &origin, &format!("https://api.cast.ai:{port}/")).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(d["decision"], "would_deny");
    assert_eq!(d["reason"], "denied_port");
    assert_eq!(d["rule"], "castai-us/api");
    // Hosts the profile does not name are none of its business: still refused.
    let resp = connect(proxy.addr, &format!("unrelated.test:{port}")).await;
    assert_eq!(status(&resp), 403, "{resp}");
    assert_eq!(
        proxy
            .metric(r#"egressd_decisions_total{decision="would_deny",reason="denied_port",rule="castai-us/api",vendor="castai-us",client_group=""}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_refusal_on_a_trial_rule_is_reported() {
    let origin = tls_origin(&["api.test.example"]).await;
    let port = origin.addr.port();
    let yaml = format!(
        r#"
allow:
  - name: trial
    hosts: ["api.test.example"]
    ports: [{port}]
    mode: report
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    api.test.example: ["127.0.0.1"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    // CONNECT to the allowed name, then a ClientHello for another name (curl --connect-to keeps the SNI).
    let out = curl(
        &[
            "--proxy",
            &proxy.url(),
            "--insecure",
            "--connect-to",
            &format!("other.test.example:{port}:api.test.example:{port}"),
            &format!("https://other.test.example:{port}/"),
        ],
        &[],
    )
    .await;
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_eq!(out.code, 0, "{}\n{d}", out.stderr);
    assert_eq!(d["decision"], "would_deny", "{d}");
    assert_eq!(d["reason"], "denied_sni_mismatch", "{d}");
    assert_eq!(d["rule"], "trial");
}

/// A trial rule listed before an enforcing one does not relax it: the enforcing rule's SNI binding holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_rule_does_not_relax_an_enforcing_rule_on_the_same_host() {
    let origin = tls_origin(&["api.trial.test"]).await;
    let port = origin.addr.port();
    let yaml = format!(
        r#"
allow:
  - name: trial
    hosts: ["*.trial.test"]
    ports: [{port}]
    mode: report
  - name: api
    hosts: ["api.trial.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    api.trial.test: ["127.0.0.1"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    let out = curl(
        &[
            "--proxy",
            &proxy.url(),
            "--insecure",
            "--connect-to",
            &format!("other.test.example:{port}:api.trial.test:{port}"),
            &format!("https://other.test.example:{port}/"),
        ],
        &[],
    )
    .await;
    let d = &proxy.log.wait_events("decision", 1).await[0];
    assert_ne!(out.code, 0, "the fronted tunnel went through: {d}");
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["reason"], "denied_sni_mismatch", "{d}");
    assert_eq!(d["rule"], "api", "{d}");
}

/// `egressd check` shows a trial rule's would-be denials the way the proxy logs them.
#[test]
fn check_shows_would_deny_for_a_rule_on_trial() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("egressd.yaml");
    std::fs::write(
        &path,
        "allow:\n  - name: a\n    hosts: [\".test.example\"]\n\
         deny:\n  - name: trial\n    hosts: [\"api.test.example\"]\n    mode: report\n\
         \x20 - name: enforced\n    hosts: [\"bad.test.example\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["check", "--config", path.to_str().unwrap()])
        .args(["api.test.example:443", "ok.test.example:443"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("api.test.example:443\twould_deny\trule=trial\treason=denied_by_rule"),
        "{text}"
    );
    assert!(
        text.contains("ok.test.example:443\tallow\trule=a"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args([
            "check",
            "--config",
            path.to_str().unwrap(),
            "bad.test.example:443",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Report mode for one client group (`clients[].mode: report`): that group discovers the endpoints its
/// vendor forgot to document (would_deny, the request proceeds, SNI checks relaxed too); every other client
/// is enforced; destination safety holds for the group as for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_for_one_client_group_only() {
    let origin = tls_origin(&["undocumented.vendor.test", "api.vendor.test"]).await;
    let port = origin.addr.port();
    let yaml = format!(
        r#"
clients:
  - name: new-vendor
    cidrs: ["127.0.0.2/32"]
    mode: report
  - name: others
    cidrs: ["127.0.0.3/32"]
allow:
  - name: documented
    hosts: ["api.vendor.test"]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.1/32"]
dns:
  hosts:
    undocumented.vendor.test: ["127.0.0.1"]
    api.vendor.test: ["127.0.0.1"]
"#
    );
    let proxy = start_proxy(&yaml).await;
    let fetch = |from: &'static str, host: &'static str| {
        let url = format!("https://{host}:{port}/");
        let ca = origin.ca_pem.to_str().unwrap().to_string();
        let proxy = proxy.url();
        async move {
            curl(
                &[
                    "--interface",
                    from,
                    "--proxy",
                    &proxy,
                    "--cacert",
                    &ca,
                    &url,
                ],
                &[],
            )
            .await
        }
    };
    let out = fetch("127.0.0.2", "undocumented.vendor.test").await;
    assert_eq!(
        out.code, 0,
        "the report group is let through: {}",
        out.stderr
    );
    let d = proxy.log.decision_for("undocumented.vendor.test").await;
    assert_eq!(
        (&d["decision"], &d["reason"]),
        (&"would_deny".into(), &"denied_no_rule".into()),
        "{d}"
    );
    assert_eq!(d["client"], serde_json::json!(["new-vendor"]));
    for from in ["127.0.0.3", "127.0.0.1"] {
        let out = fetch(from, "undocumented.vendor.test").await;
        assert!(
            out.stderr.contains("403"),
            "{from} must be enforced: {}",
            out.stderr
        );
    }
    // The metadata address is refused for the report group too.
    let out = curl(
        &[
            "--interface",
            "127.0.0.2",
            "--proxy",
            &proxy.url(),
            "http://169.254.169.254/latest/meta-data/",
        ],
        &[],
    )
    .await;
    assert!(
        out.stdout.contains("denied_private_address"),
        "{}",
        out.stdout
    );
    let lines = proxy.log.wait_events("decision", 4).await;
    let meta = lines
        .iter()
        .find(|l| l["host"] == "169.254.169.254")
        .unwrap();
    assert_eq!(meta["decision"], "deny", "{meta}");
    assert_eq!(meta["reason"], "denied_private_address", "{meta}");
    // `check --client` evaluates as the group does.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("egressd.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let check = |client: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
            .args([
                "check",
                "--config",
                cfg.to_str().unwrap(),
                "--client",
                client,
            ])
            .arg(format!("undocumented.vendor.test:{port}"))
            .output()
            .unwrap()
    };
    let out = check("new-vendor");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would_deny"),
        "{out:?}"
    );
    let out = check("others");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\tdeny"),
        "{out:?}"
    );
}
