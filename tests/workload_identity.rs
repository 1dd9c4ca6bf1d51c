//! Workload identity end to end: egressd lists and watches Pods from a test API server over HTTPS (the real
//! `kube` client, recorded Pod objects in the API's JSON), and clients connecting from pod IPs (127.0.0.x on
//! loopback) are identified by their pod's namespace, service account and labels.

mod support;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use support::kube_api::{hostnetwork_pod, pod, succeeded_pod, KubeApi};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The pods: the CAST AI agent at 127.0.0.2, another workload on the same node at 127.0.0.3.
fn castai(ip: &str) -> Value {
    pod(
        "castai-agent-5d8f9c7b4-x2x9q",
        "castai-agent",
        "castai-agent",
        &[ip],
        &[("app.kubernetes.io/name", "castai-agent")],
    )
}

fn other(ip: &str) -> Value {
    pod(
        "web-7c9d8-abcde",
        "shop",
        "default",
        &[ip],
        &[("app", "web")],
    )
}

fn yaml(api: &KubeApi, origin: SocketAddr, extra: &str) -> String {
    format!(
        r#"
kubernetes:
  kubeconfig: {kubeconfig}
  stale_after: 1s
clients:
  - name: castai
    namespaces: [castai-agent]
    service_accounts: ["castai-agent/castai-agent"]
  - name: labelled
    pod_labels: {{app.kubernetes.io/name: castai-agent}}
allow:
  - name: castai-api
    hosts: [api.cast.ai]
    ports: [{port}]
    clients: [castai]
  - name: by-label
    hosts: [label.cast.ai]
    ports: [{port}]
    clients: [labelled]
destinations:
  allow_cidrs: ["127.0.0.0/8"]
dns:
  hosts:
    api.cast.ai: ["127.0.0.1"]
    label.cast.ai: ["127.0.0.1"]
{extra}"#,
        kubeconfig = api.kubeconfig.display(),
        port = origin.port(),
    )
}

/// Two plain-HTTP requests on one kept-alive connection from `from`: both status codes.
async fn two_gets_from(proxy: &TestProxy, from: &str, authority: &str) -> (u16, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut c = s.connect(proxy.addr).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..2 {
        c.write_all(
            format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let resp = read_response(&mut c).await;
        codes.push(status(&resp));
        if let Some(n) = header(&resp, "content-length").and_then(|n| n.parse::<usize>().ok()) {
            let have = resp.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
            let mut rest = vec![0; n.saturating_sub(have)];
            c.read_exact(&mut rest).await.unwrap();
        }
    }
    (codes[0], codes[1])
}

async fn ready(proxy: &TestProxy) -> (u16, String) {
    proxy.admin_get("/readyz").await
}

async fn wait_ready(proxy: &TestProxy) {
    for _ in 0..500 {
        if ready(proxy).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not ready: {:?}", ready(proxy).await);
}

/// Poll until a CONNECT from `from` gets `want` (the watch applies events asynchronously).
async fn until_connect(proxy: &TestProxy, from: &str, authority: &str, want: u16) {
    let mut got = 0;
    for _ in 0..300 {
        got = connect_from(proxy.addr, from, authority).await;
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("CONNECT {authority} from {from}: {got}, wanted {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_rule_allows_its_pod_and_refuses_another_from_the_same_node() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    api.add(&castai("127.0.0.2"));
    api.add(&other("127.0.0.3"));
    // A host-network pod and a finished Job pod claim addresses too; neither is an identity.
    api.add(&hostnetwork_pod("kube-proxy-abcde", "127.0.0.4"));
    let mut done = succeeded_pod("backup-job-28374650-xk2p9", "127.0.0.5");
    done["metadata"]["namespace"] = "castai-agent".into();
    done["spec"]["serviceAccountName"] = "castai-agent".into();
    api.add(&done);
    let origin = echo_origin().await;
    let http = http_origin().await;
    let proxy = start_proxy(&yaml(&api, origin, "")).await;
    wait_ready(&proxy).await;

    let target = format!("api.cast.ai:{}", origin.port());
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 200);
    assert_eq!(connect_from(proxy.addr, "127.0.0.3", &target).await, 403);
    assert_eq!(connect_from(proxy.addr, "127.0.0.4", &target).await, 403);
    assert_eq!(connect_from(proxy.addr, "127.0.0.5", &target).await, 403);
    // By label, and the label alone does not open what the service account rule opens to others.
    let labelled = format!("label.cast.ai:{}", origin.port());
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &labelled).await, 200);
    assert_eq!(connect_from(proxy.addr, "127.0.0.3", &labelled).await, 403);

    // Allowed tunnels' lines are written when they close: wait for all six.
    let lines = proxy.log.wait_events("decision", 6).await;
    let mine = (lines.iter())
        .find(|l| l["client_addr"].as_str().unwrap().starts_with("127.0.0.2:"))
        .unwrap();
    assert_eq!(mine["decision"], "allow");
    assert_eq!(mine["namespace"], "castai-agent");
    assert_eq!(mine["service_account"], "castai-agent");
    assert_eq!(mine["pod"], "castai-agent-5d8f9c7b4-x2x9q");
    assert_eq!(mine["client"], serde_json::json!(["castai", "labelled"]));
    let theirs = (lines.iter())
        .find(|l| l["client_addr"].as_str().unwrap().starts_with("127.0.0.3:"))
        .unwrap();
    assert_eq!(theirs["reason"], "denied_no_rule");
    assert_eq!(theirs["namespace"], "shop");
    assert_eq!(theirs["client"], serde_json::json!([]));
    // Not pods: no workload fields.
    let node = (lines.iter())
        .find(|l| l["client_addr"].as_str().unwrap().starts_with("127.0.0.4:"))
        .unwrap();
    assert!(node.get("namespace").is_none(), "{node}");

    // Plain HTTP, on the first and the second request of a kept-alive connection.
    let http_yaml = yaml(&api, http, "");
    let reloaded = egressd::config::from_yaml_str(&format!("listen: 127.0.0.1:0\n{http_yaml}"));
    proxy.reloader.apply(reloaded).unwrap();
    let authority = format!("api.cast.ai:{}", http.port());
    // The reload kept the watch and what it knew: ready at once, no new list.
    assert_eq!(ready(&proxy).await.0, 200);
    assert_eq!(
        two_gets_from(&proxy, "127.0.0.2", &authority).await,
        (200, 200)
    );
    assert_eq!(
        two_gets_from(&proxy, "127.0.0.3", &authority).await,
        (403, 403)
    );
    let lists = (api.requests().iter())
        .filter(|r| !r.contains("watch="))
        .count();
    assert_eq!(lists, 1, "{:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_list_and_scoped_rules_fail_closed_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    api.add(&castai("127.0.0.2"));
    api.set_down(true);
    let origin = echo_origin().await;
    let proxy = start_proxy(&yaml(&api, origin, "")).await;
    let target = format!("api.cast.ai:{}", origin.port());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = ready(&proxy).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("workload identity"), "{body}");
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 403);
    let refused = proxy.log.decision_for("api.cast.ai").await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("workload identity is unavailable"),
        "{refused}"
    );
    api.set_down(false);
    wait_ready(&proxy).await;
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_move_identities_and_a_reused_address_is_nobodys_while_two_pods_claim_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    let first = castai("127.0.0.2");
    api.add(&first);
    let origin = echo_origin().await;
    let proxy = start_proxy(&yaml(&api, origin, "")).await;
    wait_ready(&proxy).await;
    let target = format!("api.cast.ai:{}", origin.port());
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 200);

    // Another pod gets the address before the first one's deletion is seen: nobody's.
    let newcomer = other("127.0.0.2");
    api.add(&newcomer);
    until_connect(&proxy, "127.0.0.2", &target, 403).await;
    // The first pod's deletion: the address is the newcomer's, which the rule does not allow.
    api.delete(&first);
    api.bookmark();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 403);
    let line = proxy.log.events("decision").last().cloned().unwrap();
    assert_eq!(line["namespace"], "shop", "{line}");
    // The newcomer goes, and a CAST AI pod is created at the same address.
    api.delete(&newcomer);
    api.add(&castai("127.0.0.2"));
    until_connect(&proxy, "127.0.0.2", &target, 200).await;
    // A pod moved by an update (MODIFIED) leaves its old address.
    let mut moved = api.pods()["castai-agent/castai-agent-5d8f9c7b4-x2x9q"].clone();
    moved["status"]["podIP"] = "127.0.0.6".into();
    moved["status"]["podIPs"] = serde_json::json!([{"ip": "127.0.0.6"}]);
    api.modify(&moved);
    until_connect(&proxy, "127.0.0.6", &target, 200).await;
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_and_410_gone_lists_again() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    let agent = castai("127.0.0.2");
    api.add(&agent);
    let origin = echo_origin().await;
    let proxy = start_proxy(&yaml(&api, origin, "")).await;
    wait_ready(&proxy).await;
    let target = format!("api.cast.ai:{}", origin.port());
    api.wait_until("a watch", |a| a.watches_open() == 1).await;

    // Dropped mid-stream: resumed from the last version seen, so a change made meanwhile still arrives.
    api.drop_watches();
    api.add(&castai_second("127.0.0.7"));
    until_connect(&proxy, "127.0.0.7", &target, 200).await;
    let lists = |api: &KubeApi| {
        (api.requests().iter())
            .filter(|r| !r.contains("watch="))
            .count()
    };
    assert_eq!(lists(&api), 1, "{:?}", api.requests());

    // 410 Gone: listed again; a pod deleted while the history was compacted is gone after the relist.
    api.wait_until("a watch", |a| a.watches_open() == 1).await;
    api.set_down(true);
    api.delete(&agent);
    api.expire();
    api.set_down(false);
    api.wait_until("a relist", |a| lists(a) >= 2).await;
    until_connect(&proxy, "127.0.0.2", &target, 403).await;
    assert_eq!(connect_from(proxy.addr, "127.0.0.7", &target).await, 200);
    let metrics = proxy.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "egressd_workload_watch_restarts_total{cause=\"gone\"}"
        )
        .unwrap_or(0.0)
            + metric_value(
                &metrics,
                "egressd_workload_watch_restarts_total{cause=\"error\"}"
            )
            .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric_value(&metrics, "egressd_workload_pods"), Some(1.0));
}

fn castai_second(ip: &str) -> Value {
    pod(
        "castai-agent-5d8f9c7b4-k7h2m",
        "castai-agent",
        "castai-agent",
        &[ip],
        &[("app.kubernetes.io/name", "castai-agent")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_unknown_after_stale_after_without_the_api_and_comes_back_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    api.add(&castai("127.0.0.2"));
    let origin = echo_origin().await;
    let proxy = start_proxy(&yaml(&api, origin, "")).await;
    wait_ready(&proxy).await;
    let target = format!("api.cast.ai:{}", origin.port());
    assert_eq!(connect_from(proxy.addr, "127.0.0.2", &target).await, 200);
    assert_eq!(proxy.metric("egressd_workload_identity_up").await, 1.0);

    api.set_down(true);
    // Within stale_after (1s) the pods known still count; after it, nobody is a pod.
    until_connect(&proxy, "127.0.0.2", &target, 403).await;
    let line = proxy.log.events("decision").last().cloned().unwrap();
    assert!(
        line["detail"].as_str().unwrap().contains("unreachable"),
        "{line}"
    );
    // Still ready: every replica shares the API server.
    assert_eq!(ready(&proxy).await.0, 200);
    for _ in 0..300 {
        if proxy.metric("egressd_workload_identity_lost_total").await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        proxy.metric("egressd_workload_identity_lost_total").await,
        1.0
    );
    assert_eq!(proxy.metric("egressd_workload_identity_up").await, 0.0);

    api.set_down(false);
    until_connect(&proxy, "127.0.0.2", &target, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_evaluates_as_a_namespace_and_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("egressd.yaml");
    std::fs::write(
        &config,
        "clients:\n  - name: castai\n    service_accounts: [castai-agent/castai-agent]\nallow:\n  - {name: castai, hosts: [api.cast.ai], clients: [castai]}\n",
    )
    .unwrap();
    let check = |client: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_egressd"))
            .args([
                "check",
                "--config",
                config.to_str().unwrap(),
                "--client",
                client,
            ])
            .arg("https://api.cast.ai/")
            .output()
            .unwrap()
    };
    let out = check("castai-agent/castai-agent");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("allow"), "{text}");
    let out = check("castai-agent/default");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = check("Not/AServiceAccount");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAMESPACE/SERVICEACCOUNT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_balancer_the_pod_is_the_one_the_proxy_header_names() {
    let dir = tempfile::tempdir().unwrap();
    let api = KubeApi::start(dir.path()).await;
    api.add(&castai("127.0.0.2"));
    api.add(&other("127.0.0.3"));
    let origin = echo_origin().await;
    let balancer = "proxy_protocol:\n  trusted: [\"127.0.0.1/32\"]\n  listeners: [listen]\n";
    let proxy = start_proxy(&yaml(&api, origin, balancer)).await;
    wait_ready(&proxy).await;
    let target = format!("api.cast.ai:{}", origin.port());
    // The balancer (127.0.0.1) carries both pods' connections: each is identified as the pod it names.
    for (named, want) in [("127.0.0.2", 200), ("127.0.0.3", 403)] {
        let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let head = format!(
            "PROXY TCP4 {named} 127.0.0.1 40000 {}\r\nCONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n",
            proxy.addr.port()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(status(&read_response(&mut c).await), want, "{named}");
    }
    // An allowed tunnel's line is written once its first bytes are judged (here: when it closes).
    let lines = proxy.log.wait_events("decision", 2).await;
    let allowed = lines.iter().find(|l| l["decision"] == "allow").unwrap();
    assert_eq!(allowed["pod"], "castai-agent-5d8f9c7b4-x2x9q");
    assert!(allowed["peer_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let refused = lines.iter().find(|l| l["decision"] == "deny").unwrap();
    assert_eq!(refused["namespace"], "shop");
}
