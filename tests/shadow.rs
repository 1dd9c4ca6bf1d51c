//! `shadow: FILE`: a candidate configuration decides every request too; only the live one is applied, and
//! where the two differ the decision line says what the candidate would have done and a counter counts it.

mod support;
use std::time::Duration;
use support::*;

fn live_yaml(port: u16, shadow: &std::path::Path) -> String {
    format!(
        r#"
shadow: {shadow}
clients:
  - name: agents
    cidrs: ["127.0.0.2/32"]
allow:
  - name: old
    hosts: [a.test, b.test]
    ports: [{port}]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    a.test: ["127.0.0.1"]
    b.test: ["127.0.0.1"]
    c.test: ["127.0.0.1"]
    d.test: ["127.0.0.1"]
"#,
        shadow = shadow.display()
    )
}

/// The candidate: `b.test` dropped, `c.test` added, `d.test` for the agents group only (defined again here).
fn candidate_yaml(port: u16) -> String {
    format!(
        r#"
clients:
  - name: agents
    cidrs: ["127.0.0.2/32"]
allow:
  - name: new
    hosts: [a.test, c.test]
    ports: [{port}]
  - name: agents-only
    hosts: [d.test]
    ports: [{port}]
    clients: [agents]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_policy_decides_and_disagreements_are_logged_and_counted() {
    let echo = echo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.yaml");
    std::fs::write(&candidate, candidate_yaml(echo.port())).unwrap();
    let proxy = start_proxy(&live_yaml(echo.port(), &candidate)).await;
    let at = |h: &str| format!("{h}:{}", echo.port());

    // Agreement: nothing added to the line.
    assert_eq!(
        connect_from(proxy.addr, "127.0.0.1", &at("a.test")).await,
        200
    );
    let line = proxy.log.decision_for("a.test").await;
    assert!(line.get("shadow_decision").is_none(), "{line}");
    // Live allows, the candidate would refuse: still allowed.
    assert_eq!(
        connect_from(proxy.addr, "127.0.0.1", &at("b.test")).await,
        200
    );
    let line = proxy.log.decision_for("b.test").await;
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["shadow_decision"], "deny", "{line}");
    assert_eq!(line["shadow_reason"], "denied_no_rule");
    assert!(line.get("shadow_rule").is_none());
    // Live refuses, the candidate would allow: still refused.
    assert_eq!(
        connect_from(proxy.addr, "127.0.0.1", &at("c.test")).await,
        403
    );
    let line = proxy.log.decision_for("c.test").await;
    assert_eq!(line["shadow_decision"], "allow", "{line}");
    assert_eq!(line["shadow_rule"], "new");
    // The candidate sees the same client in its own groups: the agents get d.test there, others do not.
    assert_eq!(
        connect_from(proxy.addr, "127.0.0.2", &at("d.test")).await,
        403
    );
    assert_eq!(
        connect_from(proxy.addr, "127.0.0.1", &at("d.test")).await,
        403
    );
    let d: Vec<_> = (proxy.log.events("decision").into_iter())
        .filter(|l| l["host"] == "d.test")
        .collect();
    let agents = d.iter().find(|l| l["client"][0] == "agents").unwrap();
    assert_eq!(agents["shadow_rule"], "agents-only", "{agents}");
    let others = d.iter().find(|l| l["client"][0].is_null()).unwrap();
    assert!(others.get("shadow_decision").is_none(), "{others}");

    let text = proxy.metrics().await;
    let count = |labels: &str| {
        metric_value(
            &text,
            &format!("egressd_shadow_disagreements_total{{{labels}}}"),
        )
    };
    assert_eq!(
        count(r#"live="allow",shadow="deny",rule="old""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count(r#"live="deny",shadow="allow",rule="new""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count(r#"live="deny",shadow="allow",rule="agents-only""#),
        Some(1.0)
    );

    // The same lines through `egressd audit --shadow`: what promoting the candidate would change.
    let log: String = (proxy.log.events("decision").iter())
        .map(|l| format!("{l}\n"))
        .collect();
    let file = dir.path().join("egressd.log");
    std::fs::write(&file, log).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["audit", "--shadow", "--format", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &report["decisions"],
            &report["would_newly_refuse"],
            &report["would_newly_allow"]
        ),
        (&5.into(), &1.into(), &2.into()),
        "{report:#}"
    );
    let group = |host: &str| {
        (report["groups"].as_array().unwrap().iter())
            .find(|g| g["host"] == host)
            .unwrap_or_else(|| panic!("no group for {host}: {report:#}"))
            .clone()
    };
    let b = group("b.test");
    assert_eq!(
        (
            &b["direction"],
            &b["live_rule"],
            &b["shadow"],
            &b["shadow_reason"]
        ),
        (
            &"would_newly_refuse".into(),
            &"old".into(),
            &"deny".into(),
            &"denied_no_rule".into()
        )
    );
    let c = group("c.test");
    assert_eq!(
        (&c["direction"], &c["live_reason"], &c["shadow_rule"]),
        (
            &"would_newly_allow".into(),
            &"denied_no_rule".into(),
            &"new".into()
        )
    );
    let d = group("d.test");
    assert_eq!(
        (&d["shadow_rule"], &d["client_groups"]),
        (&"agents-only".into(), &serde_json::json!(["agents"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_candidate_is_read_again_and_a_broken_one_never_stops_the_live_policy() {
    let echo = echo_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.yaml");
    std::fs::write(&candidate, candidate_yaml(echo.port())).unwrap();
    let config = dir.path().join("egressd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\n{}",
            live_yaml(echo.port(), &candidate)
        ),
    )
    .unwrap();
    let proxy = start_proxy_file(&config).await;
    let b = format!("b.test:{}", echo.port());
    assert_eq!(connect_from(proxy.addr, "127.0.0.1", &b).await, 200);
    assert_eq!(
        proxy.log.decision_for("b.test").await["shadow_decision"],
        "deny"
    );

    // The candidate now keeps b.test: the watch on the shadow file reloads it, and they agree.
    std::fs::write(
        &candidate,
        format!(
            "allow:\n  - {{name: new, hosts: [a.test, b.test], ports: [{}]}}\n",
            echo.port()
        ),
    )
    .unwrap();
    let mut agreed = false;
    for _ in 0..200 {
        assert_eq!(connect_from(proxy.addr, "127.0.0.1", &b).await, 200);
        let last = proxy.log.events("decision").pop().unwrap();
        if last.get("shadow_decision").is_none() {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(agreed, "the changed candidate was not read again");

    // A broken candidate: the live configuration still loads and decides; no shadow fields.
    std::fs::write(&candidate, "allow:\n  - {name: x, hosts: []}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
        .args(["validate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("shadow:") && text.contains("no shadow policy"),
        "{text}"
    );
}
