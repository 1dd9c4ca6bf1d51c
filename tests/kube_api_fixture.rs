//! The Kubernetes API fixture (tests/support/kube_api.rs) against the real `kube` client: lists (whole and
//! paged), watches (events in order, replays, bookmarks, 410 after compaction, dropped streams), a wrong
//! token, the server going down and coming back, and the service account files of a pod.

mod support;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::Status;
use std::path::Path;
use std::time::Duration;
use support::kube_api::{hostnetwork_pod, pod, succeeded_pod, KubeApi};

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    // HTTPS_PROXY in the environment would become the client's proxy (NO_PROXY is not consulted).
    config.proxy_url = None;
    kube::Client::try_from(config).unwrap()
}

async fn pods_api(fixture: &KubeApi) -> Api<Pod> {
    Api::all(client_from(&fixture.kubeconfig).await)
}

async fn start() -> (KubeApi, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    (KubeApi::start(dir.path()).await, dir)
}

type Events =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = kube::Result<WatchEvent<Pod>>> + Send>>;

async fn watch(api: &Api<Pod>, rv: &str) -> Events {
    // Bookmarks are on by default (`allowWatchBookmarks=true`).
    let wp = WatchParams::default().timeout(30);
    Box::pin(api.watch(&wp, rv).await.unwrap())
}

/// The next item of a watch stream (None when it ended); panics after 10 s.
async fn next(events: &mut Events) -> Option<kube::Result<WatchEvent<Pod>>> {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("no watch event within 10 s")
}

async fn next_event(events: &mut Events) -> WatchEvent<Pod> {
    match next(events).await {
        Some(Ok(ev)) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap()
}

fn gone(ev: WatchEvent<Pod>) -> Box<Status> {
    match ev {
        WatchEvent::Error(e) => e,
        other => panic!("expected an ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn list_returns_the_pods_as_the_client_deserializes_them() {
    let (fixture, _dir) = start().await;
    let web = pod(
        "web-5d9c7b6f4-abcde",
        "shop",
        "web",
        &["10.1.2.3", "fd00::3"],
        &[("app", "web"), ("tier", "front")],
    );
    let rv_web = fixture.add(&web);
    fixture.add(&hostnetwork_pod("kube-proxy-x9s2d", "192.168.41.73"));
    fixture.add(&succeeded_pod("nightly-report-29148720-4kz8n", "10.1.9.9"));

    let api = pods_api(&fixture).await;
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(fixture.resource_version().as_str())
    );
    assert_eq!(list.metadata.continue_, None);
    let mut names: Vec<&str> = list.items.iter().map(name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "kube-proxy-x9s2d",
            "nightly-report-29148720-4kz8n",
            "web-5d9c7b6f4-abcde"
        ]
    );

    let p = list
        .items
        .iter()
        .find(|p| name(p) == "web-5d9c7b6f4-abcde")
        .unwrap();
    assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        p.metadata.resource_version.as_deref(),
        Some(rv_web.as_str())
    );
    assert_eq!(p.metadata.generate_name.as_deref(), Some("web-5d9c7b6f4-"));
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["tier"], "front");
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "ReplicaSet");
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("web"));
    assert_eq!(spec.host_network, None);
    let status = p.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.2.3"));
    let ips: Vec<&str> = status
        .pod_ips
        .as_ref()
        .unwrap()
        .iter()
        .map(|i| i.ip.as_str())
        .collect();
    assert_eq!(ips, ["10.1.2.3", "fd00::3"]);

    let host = list
        .items
        .iter()
        .find(|p| name(p) == "kube-proxy-x9s2d")
        .unwrap();
    assert_eq!(host.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(host.spec.as_ref().unwrap().host_network, Some(true));
    let st = host.status.as_ref().unwrap();
    assert_eq!(st.pod_ip.as_deref(), Some("192.168.41.73"));
    assert_eq!(st.host_ip.as_deref(), Some("192.168.41.73"));

    let done = list
        .items
        .iter()
        .find(|p| name(p) == "nightly-report-29148720-4kz8n")
        .unwrap();
    assert_eq!(
        done.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("nightly-report")
    );
    let st = done.status.as_ref().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Succeeded"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.1.9.9"));

    // Every pod gets its own uid.
    let mut uids: Vec<&str> = list
        .items
        .iter()
        .map(|p| p.metadata.uid.as_deref().unwrap())
        .collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 3);

    let seen = fixture.request_log();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].target, "/api/v1/pods?");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {}", fixture.token()).as_str())
    );
}

#[tokio::test]
async fn list_pages_with_limit_and_continue_from_one_snapshot() {
    let (fixture, _dir) = start().await;
    let mut pods = Vec::new();
    for i in 0..5 {
        let p = pod(
            &format!("app-{i}"),
            "ns",
            "sa",
            &[&format!("10.0.0.{i}")],
            &[],
        );
        fixture.add(&p);
        pods.push(p);
    }
    let rv = fixture.resource_version();
    let api = pods_api(&fixture).await;

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(
        first.items.iter().map(name).collect::<Vec<_>>(),
        ["app-0", "app-1"]
    );
    assert_eq!(
        first.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");

    // Changes between pages do not show in the next pages: they come from the first page's snapshot.
    fixture.delete(&pods[3]);
    fixture.add(&pod("app-9", "ns", "sa", &["10.0.0.9"], &[]));

    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second.items.iter().map(name).collect::<Vec<_>>(),
        ["app-2", "app-3"]
    );
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(second.metadata.remaining_item_count, Some(1));
    let token = second.metadata.continue_.clone().unwrap();
    let third = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(third.items.iter().map(name).collect::<Vec<_>>(), ["app-4"]);
    assert_eq!(third.metadata.continue_, None);
    assert_eq!(third.metadata.remaining_item_count, None);

    // A fresh list sees the changes.
    let now = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        now.items.iter().map(name).collect::<Vec<_>>(),
        ["app-0", "app-1", "app-2", "app-4", "app-9"]
    );
    assert_ne!(now.metadata.resource_version.as_deref(), Some(rv.as_str()));

    let requests = fixture.requests();
    assert_eq!(requests[0], "/api/v1/pods?&limit=2");
    assert!(
        requests[1].starts_with("/api/v1/pods?&limit=2&continue="),
        "{requests:?}"
    );

    // A continue token from before a compaction is expired.
    fixture.expire();
    let err = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_and_bookmarks_in_order() {
    let (fixture, _dir) = start().await;
    let mut a = pod("a-1", "ns", "sa-a", &["10.0.0.1"], &[("app", "a")]);
    fixture.add(&a);
    let api = pods_api(&fixture).await;
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = watch(&api, &rv).await;
    fixture
        .wait_until("the watch", |f| f.watches_open() == 1)
        .await;
    let watch_req = fixture.request_log().last().unwrap().clone();
    // kube asks for an uncompressed watch stream.
    assert_eq!(watch_req.header("accept-encoding"), Some("identity"));
    let watch_url = watch_req.target;
    assert_eq!(
        watch_url,
        format!(
            "/api/v1/pods?&watch=true&timeoutSeconds=30&allowWatchBookmarks=true&resourceVersion={rv}"
        )
    );

    let b = pod("b-1", "other", "sa-b", &["10.0.0.2"], &[]);
    let rv_b = fixture.add(&b);
    a["metadata"]["labels"]["app"] = "a2".into();
    let rv_a = fixture.modify(&a);
    let rv_del = fixture.delete(&b);
    assert_eq!(fixture.bookmark(), 1);

    match next_event(&mut events).await {
        WatchEvent::Added(p) => {
            assert_eq!(name(&p), "b-1");
            assert_eq!(p.metadata.namespace.as_deref(), Some("other"));
            assert_eq!(p.metadata.resource_version.as_deref(), Some(rv_b.as_str()));
            let st = p.status.unwrap();
            assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.2"));
        }
        other => panic!("expected Added, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Modified(p) => {
            assert_eq!(name(&p), "a-1");
            assert_eq!(p.metadata.labels.unwrap()["app"], "a2");
            assert_eq!(p.metadata.resource_version.as_deref(), Some(rv_a.as_str()));
            assert_eq!(
                p.spec.unwrap().service_account_name.as_deref(),
                Some("sa-a")
            );
        }
        other => panic!("expected Modified, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Deleted(p) => {
            assert_eq!(name(&p), "b-1");
            assert_eq!(
                p.metadata.resource_version.as_deref(),
                Some(rv_del.as_str())
            );
        }
        other => panic!("expected Deleted, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, rv_del);
            assert_eq!(
                (b.types.api_version.as_str(), b.types.kind.as_str()),
                ("v1", "Pod")
            );
        }
        other => panic!("expected Bookmark, got {other:?}"),
    }
    assert_eq!(fixture.pods().len(), 1);
}

#[tokio::test]
async fn a_watch_replays_the_events_after_its_resource_version() {
    let (fixture, _dir) = start().await;
    let mut a = pod("a-1", "ns", "sa", &["10.0.0.1"], &[]);
    let rv_a = fixture.add(&a);
    fixture.add(&pod("b-1", "ns", "sa", &["10.0.0.2"], &[]));
    a["status"]["podIP"] = "10.0.0.7".into();
    fixture.modify(&a);
    let api = pods_api(&fixture).await;

    let mut events = watch(&api, &rv_a).await;
    match next_event(&mut events).await {
        WatchEvent::Added(p) => assert_eq!(name(&p), "b-1"),
        other => panic!("expected Added b-1, got {other:?}"),
    }
    match next_event(&mut events).await {
        WatchEvent::Modified(p) => {
            assert_eq!(name(&p), "a-1");
            assert_eq!(p.status.unwrap().pod_ip.as_deref(), Some("10.0.0.7"));
        }
        other => panic!("expected Modified a-1, got {other:?}"),
    }

    // From "0": a synthetic ADDED for every pod there is.
    let mut events = watch(&api, "0").await;
    let mut added = Vec::new();
    for _ in 0..2 {
        match next_event(&mut events).await {
            WatchEvent::Added(p) => added.push(name(&p).to_string()),
            other => panic!("expected Added, got {other:?}"),
        }
    }
    assert_eq!(added, ["a-1", "b-1"]);
    assert_eq!(fixture.watches_open(), 2);
}

#[tokio::test]
async fn a_streaming_list_ends_its_initial_events_with_an_annotated_bookmark() {
    let (fixture, _dir) = start().await;
    fixture.add(&pod("a-1", "ns", "sa", &["10.0.0.1"], &[]));
    fixture.add(&pod("b-1", "ns", "sa", &["10.0.0.2"], &[]));
    let api = pods_api(&fixture).await;
    let wp = WatchParams::default().initial_events();
    let mut events: Events = Box::pin(api.watch(&wp, "").await.unwrap());
    for want in ["a-1", "b-1"] {
        match next_event(&mut events).await {
            WatchEvent::Added(p) => assert_eq!(name(&p), want),
            other => panic!("expected Added {want}, got {other:?}"),
        }
    }
    match next_event(&mut events).await {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, fixture.resource_version());
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    assert!(
        fixture
            .requests()
            .last()
            .unwrap()
            .contains("&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion="),
        "{:?}",
        fixture.requests()
    );
    fixture.add(&pod("c-1", "ns", "sa", &["10.0.0.3"], &[]));
    match next_event(&mut events).await {
        WatchEvent::Added(p) => assert_eq!(name(&p), "c-1"),
        other => panic!("expected Added c-1, got {other:?}"),
    }
}

#[tokio::test]
async fn expire_ends_open_watches_with_410_and_old_versions_stay_expired_until_a_relist() {
    let (fixture, _dir) = start().await;
    fixture.add(&pod("a-1", "ns", "sa", &["10.0.0.1"], &[]));
    let api = pods_api(&fixture).await;
    let old_rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = watch(&api, &old_rv).await;
    assert_eq!(fixture.watches_open(), 1);

    fixture.expire();
    assert_eq!(fixture.watches_open(), 0);
    let e = gone(next_event(&mut events).await);
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    assert!(
        next(&mut events).await.is_none(),
        "the stream ends after the error"
    );

    // Watching from the old version again: a single 410 ERROR event, then the end.
    let mut events = watch(&api, &old_rv).await;
    let e = gone(next_event(&mut events).await);
    assert_eq!(e.code, 410);
    assert!(e.message.contains(&old_rv), "{e:?}");
    assert!(next(&mut events).await.is_none());
    assert_eq!(fixture.watches_open(), 0);

    // A relist gives a newer version, from which a watch works.
    let new_rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    assert!(new_rv.parse::<u64>().unwrap() > old_rv.parse::<u64>().unwrap());
    let mut events = watch(&api, &new_rv).await;
    fixture.add(&pod("b-1", "ns", "sa", &["10.0.0.2"], &[]));
    match next_event(&mut events).await {
        WatchEvent::Added(p) => assert_eq!(name(&p), "b-1"),
        other => panic!("expected Added, got {other:?}"),
    }
}

#[tokio::test]
async fn drop_watches_ends_the_stream_without_an_event() {
    let (fixture, _dir) = start().await;
    let api = pods_api(&fixture).await;
    let rv = fixture.resource_version();
    let mut events = watch(&api, &rv).await;
    assert_eq!(fixture.watches_open(), 1);
    fixture.drop_watches();
    assert_eq!(fixture.watches_open(), 0);
    // kube turns the cut connection into the end of the stream.
    let got = next(&mut events).await;
    assert!(got.is_none(), "expected the end of the stream, got {got:?}");
    // The client reconnects as usual.
    let mut events = watch(&api, &rv).await;
    fixture.add(&pod("a-1", "ns", "sa", &["10.0.0.1"], &[]));
    assert!(matches!(
        next_event(&mut events).await,
        WatchEvent::Added(_)
    ));
}

#[tokio::test]
async fn the_watch_ends_cleanly_after_timeout_seconds() {
    let (fixture, _dir) = start().await;
    let api = pods_api(&fixture).await;
    let wp = WatchParams::default().timeout(1);
    let mut events: Events = Box::pin(api.watch(&wp, &fixture.resource_version()).await.unwrap());
    let started = std::time::Instant::now();
    assert!(next(&mut events).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(fixture.watches_open(), 0);
}

#[tokio::test]
async fn a_wrong_token_gets_401_and_a_rotated_token_is_required() {
    let (fixture, dir) = start().await;
    let wrong = dir.path().join("wrong-kubeconfig");
    fixture.write_kubeconfig(&wrong, "not-the-token");
    let api: Api<Pod> = Api::all(client_from(&wrong).await);
    match api.list(&ListParams::default()).await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized")),
        other => panic!("expected a 401, got {other:?}"),
    }
    let wp = WatchParams::default();
    match api
        .watch(&wp, "0")
        .await
        .err()
        .expect("the watch must fail")
    {
        kube::Error::Api(s) => assert_eq!(s.code, 401),
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(fixture.watches_open(), 0);

    let good = pods_api(&fixture).await;
    assert!(good.list(&ListParams::default()).await.is_ok());
    fixture.set_token("rotated");
    assert_eq!(
        std::fs::read_to_string(fixture.serviceaccount.join("token")).unwrap(),
        "rotated"
    );
    match good.list(&ListParams::default()).await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!(s.code, 401),
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn down_fails_lists_and_ends_watches_and_up_recovers() {
    let (fixture, _dir) = start().await;
    fixture.add(&pod("a-1", "ns", "sa", &["10.0.0.1"], &[]));
    let api = pods_api(&fixture).await;
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let mut events = watch(&api, &fixture.resource_version()).await;

    fixture.set_down(true);
    assert_eq!(fixture.watches_open(), 0);
    assert!(next(&mut events).await.is_none(), "the watch ends");
    let failed = tokio::time::timeout(Duration::from_secs(10), api.list(&ListParams::default()))
        .await
        .expect("a list while down fails at once");
    assert!(failed.is_err(), "a list while down must fail: {failed:?}");
    let seen = fixture.requests().len();

    fixture.set_down(false);
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(fixture.requests().len(), seen + 1);
}

#[tokio::test]
async fn selectors_are_refused_rather_than_ignored() {
    let (fixture, _dir) = start().await;
    let api = pods_api(&fixture).await;
    let err = api
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 400),
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[tokio::test]
async fn the_service_account_files_configure_a_client_like_in_a_pod() {
    use base64::Engine;
    let (fixture, _dir) = start().await;
    fixture.add(&pod("a-1", "ns", "sa", &["10.0.0.1"], &[]));
    let sa = &fixture.serviceaccount;
    assert_eq!(
        std::fs::read_to_string(sa.join("namespace")).unwrap(),
        "egressd"
    );
    let pem = std::fs::read_to_string(sa.join("ca.crt")).unwrap();
    assert_eq!(pem, fixture.ca_pem);
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();

    let mut config = kube::Config::new(fixture.url().parse().unwrap());
    config.root_cert = Some(vec![der]);
    config.auth_info.token_file = Some(sa.join("token").display().to_string());
    let api: Api<Pod> = Api::all(kube::Client::try_from(config).unwrap());
    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.namespace.as_deref(), Some("ns"));
}
