//! `include: [DIR]`: team-owned fragments, each scoped by its file name (a namespace through workload
//! identity, or a client group of the main file), under the main file's guardrails; a bad fragment is skipped
//! with its reason and the others load.

mod support;
use std::time::Duration;
use support::kube_api::{pod, KubeApi};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_open_destinations_for_their_team_only_under_the_guardrails() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    api.add(&pod(
        "web-1",
        "payments",
        "default",
        &["127.0.0.2"],
        &[("app", "web")],
    ));
    api.add(&pod(
        "batch-1",
        "payments",
        "batch",
        &["127.0.0.4"],
        &[("app", "batch")],
    ));
    api.add(&pod(
        "shop-1",
        "shop",
        "default",
        &["127.0.0.5"],
        &[("app", "web")],
    ));
    let echo = echo_origin().await;
    let port = echo.port();
    let teams = dir.path().join("teams");
    std::fs::create_dir(&teams).unwrap();
    let write = |name: &str, text: String| std::fs::write(teams.join(name), text).unwrap();
    // The payments namespace's fragment: a rule for the whole namespace and one for its batch pods.
    write(
        "payments.yaml",
        format!(
            "clients:\n  - name: batch\n    pod_labels: {{app: batch}}\nallow:\n  - {{name: stripe, hosts: [stripe.test], ports: [{port}]}}\n  - {{name: reports, hosts: [reports.test], ports: [{port}], clients: [batch]}}\n  - {{name: evil, hosts: [evil.test], ports: [{port}]}}\n"
        ),
    );
    // The legacy client group of the main file (by address).
    write(
        "legacy.yaml",
        format!("allow:\n  - {{name: old, hosts: [legacy.test], ports: [{port}]}}\n"),
    );
    // Breaks the guardrails: skipped, the others load.
    write(
        "shop.yaml",
        format!("allow:\n  - {{name: db, hosts: [db.corp.test], ports: [{port}]}}\n"),
    );
    // Not YAML of a fragment: skipped.
    write(
        "broken.yaml",
        "deny:\n  - {name: x, hosts: [a.test]}\n".into(),
    );
    let hosts = [
        "stripe.test",
        "reports.test",
        "evil.test",
        "legacy.test",
        "db.corp.test",
        "new.test",
    ];
    let config = dir.path().join("egressd.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\ninclude: [{teams}]\nfragments:\n  forbidden_hosts: [\"*.corp.test\"]\nkubernetes: {{kubeconfig: {kc}}}\nclients:\n  - name: legacy\n    cidrs: [127.0.0.3/32]\ndeny:\n  - {{name: no-evil, hosts: [evil.test]}}\ndestinations:\n  allow_cidrs: [127.0.0.0/8]\ndns:\n  hosts:\n{h}",
            teams = teams.display(),
            kc = api.kubeconfig.display(),
            h = hosts.iter().map(|h| format!("    {h}: [127.0.0.1]\n")).collect::<String>(),
        ),
    )
    .unwrap();
    let proxy = start_proxy_file(&config).await;
    for _ in 0..500 {
        if proxy.admin_get("/readyz").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let at = |h: &str| format!("{h}:{port}");
    for (from, host, want) in [
        ("127.0.0.2", "stripe.test", 200),
        ("127.0.0.4", "stripe.test", 200),
        ("127.0.0.5", "stripe.test", 403),
        ("127.0.0.3", "stripe.test", 403),
        ("127.0.0.4", "reports.test", 200),
        ("127.0.0.2", "reports.test", 403),
        // The main file's deny rules win over a fragment's allow.
        ("127.0.0.2", "evil.test", 403),
        ("127.0.0.3", "legacy.test", 200),
        ("127.0.0.2", "legacy.test", 403),
        ("127.0.0.5", "db.corp.test", 403),
    ] {
        assert_eq!(
            connect_from(proxy.addr, from, &at(host)).await,
            want,
            "{from} {host}"
        );
    }
    let stripe = proxy.log.decision_for("stripe.test").await;
    assert_eq!(stripe["rule"], "payments.stripe");

    let (code, body) = proxy.admin_get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("shop.yaml skipped") && body.contains("forbidden_hosts"),
        "{body}"
    );
    assert!(body.contains("broken.yaml skipped"), "{body}");
    assert!(!body.contains("payments.yaml"), "{body}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric_value(&metrics, "egressd_fragments{state=\"loaded\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "egressd_fragments{state=\"skipped\"}"),
        Some(2.0)
    );

    // A new team's file is picked up without touching the main file.
    write(
        "shop.yaml",
        format!("allow:\n  - {{name: new, hosts: [new.test], ports: [{port}]}}\n"),
    );
    let mut got = 0;
    for _ in 0..200 {
        got = connect_from(proxy.addr, "127.0.0.5", &at("new.test")).await;
        if got == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(got, 200);
    assert_eq!(
        connect_from(proxy.addr, "127.0.0.2", &at("new.test")).await,
        403
    );
}
