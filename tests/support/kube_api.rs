//! A Kubernetes API server for tests: HTTPS on 127.0.0.1 (a certificate for IP 127.0.0.1 signed by a CA made
//! for each server), bearer-token authentication, and the cluster-wide Pod collection, listed (with `limit` and
//! `continue`) and watched (newline-delimited watch events in a chunked response), in the JSON the real API
//! server sends. The real `kube` client talks to it through the kubeconfig it writes.
//!
//! The test drives it: [`KubeApi::add`], [`KubeApi::modify`] and [`KubeApi::delete`] change the store, take
//! the next resourceVersion and send the event to every open watch; [`KubeApi::bookmark`],
//! [`KubeApi::expire`], [`KubeApi::drop_watches`] and [`KubeApi::set_down`] make the failures a watcher must
//! survive. [`KubeApi::requests`] tells what the client asked for.
//!
//! What is served, as the real API server serves it:
//! - `GET /api/v1/pods`: a `PodList` (items without `kind`/`apiVersion`) with `metadata.resourceVersion`.
//!   `limit=N` cuts a page and sets `metadata.continue` (an opaque token holding the list's resourceVersion)
//!   and `metadata.remainingItemCount`; the next pages (`continue=TOKEN`) come from the same snapshot, even
//!   if pods changed in between. A token older than the last [`KubeApi::expire`] gets a 410 `Expired`
//!   Status. `resourceVersion=0` without `continue` is served "from the watch cache": whole, `limit`
//!   ignored. `resourceVersionMatch=Exact&resourceVersion=N` lists the snapshot at N.
//! - `GET /api/v1/pods?watch=true&resourceVersion=RV[&allowWatchBookmarks=true][&timeoutSeconds=N]`: a 200
//!   with `Transfer-Encoding: chunked`, one `{"type":...,"object":...}` line per chunk. RV empty or `0`
//!   starts with a synthetic ADDED for every pod; otherwise the events after RV are replayed first. An RV
//!   older than the last [`KubeApi::expire`] gets a single ERROR event (a 410 `Expired` Status) and the
//!   stream ends, still a 200. The stream ends cleanly (terminating chunk) after `timeoutSeconds` (default
//!   1800). The connection stays usable after a stream ends cleanly. `sendInitialEvents=true` (a streaming
//!   list) starts with an ADDED for every pod and a BOOKMARK annotated `k8s.io/initial-events-end: "true"`,
//!   whatever the RV.
//! - A missing or wrong `Authorization: Bearer` gets a 401 `Unauthorized` Status; another path a 404
//!   `NotFound` Status; `labelSelector` / `fieldSelector` a 400 (not implemented, so that no test silently
//!   relies on a filter this server does not apply).

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as received: method, request target (path and query, exactly as sent) and headers (names in
/// lower case, in order).
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A fake Kubernetes API server on 127.0.0.1; it stops (closing every connection) when dropped.
pub struct KubeApi {
    pub addr: SocketAddr,
    /// `dir/kubeconfig`: cluster `https://127.0.0.1:PORT` with the CA inline, a user with the bearer token,
    /// one context, current.
    pub kubeconfig: PathBuf,
    /// `dir/serviceaccount`: `token`, `ca.crt` and `namespace`, as the kubelet mounts them into a pod.
    pub serviceaccount: PathBuf,
    /// The CA certificate (PEM) the server's certificate is signed by.
    pub ca_pem: String,
    inner: Arc<Inner>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.inner.down.send_replace(true);
    }
}

struct Inner {
    state: Mutex<State>,
    /// Whether the server is down; connection tasks end (abruptly) when it turns true.
    down: tokio::sync::watch::Sender<bool>,
}

struct State {
    token: String,
    rv: u64,
    /// Watches from an RV older than this, and continue tokens from before it, get 410.
    compacted: u64,
    pods: BTreeMap<String, Value>,
    /// Every change ever made: (resourceVersion, event type, key, object), for replays and list snapshots.
    log: Vec<(u64, &'static str, String, Value)>,
    watches: HashMap<u64, Watcher>,
    next_watch: u64,
    requests: Vec<SeenRequest>,
}

struct Watcher {
    tx: mpsc::UnboundedSender<WatchMsg>,
    bookmarks: bool,
}

enum WatchMsg {
    /// One event line (JSON, without the newline).
    Event(String),
    /// End the response cleanly (terminating chunk).
    End,
    /// Close the connection without ending the response.
    Abort,
}

/// The first resourceVersion handed out (real clusters are far from 1; small numbers hide parsing bugs).
const FIRST_RV: u64 = 48213400;

impl KubeApi {
    /// Start a server on 127.0.0.1 (a free port) and write `dir/kubeconfig` and `dir/serviceaccount/*`.
    pub async fn start(dir: &Path) -> KubeApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (ca_pem, server_config) = certificates();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = format!("kube-api-fixture-{}", unique_hex(32));
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                token: token.clone(),
                rv: FIRST_RV,
                compacted: 0,
                pods: BTreeMap::new(),
                log: Vec::new(),
                watches: HashMap::new(),
                next_watch: 0,
                requests: Vec::new(),
            }),
            down: tokio::sync::watch::channel(false).0,
        });
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let acceptor = tokio::spawn(accept_loop(listener, tls, inner.clone()));
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr, &ca_pem, &token)).unwrap();
        let serviceaccount = dir.join("serviceaccount");
        std::fs::create_dir_all(&serviceaccount).unwrap();
        std::fs::write(serviceaccount.join("token"), &token).unwrap();
        std::fs::write(serviceaccount.join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(serviceaccount.join("namespace"), "egressd").unwrap();
        KubeApi {
            addr,
            kubeconfig,
            serviceaccount,
            ca_pem,
            inner,
            acceptor,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> String {
        self.state().token.clone()
    }

    /// Accept only `token` from now on (a rotated service account token); rewrites `serviceaccount/token`
    /// (atomically, by rename). `dir/kubeconfig` keeps the old one.
    pub fn set_token(&self, token: &str) {
        self.state().token = token.to_string();
        let tmp = self.serviceaccount.join(".token.new");
        std::fs::write(&tmp, token).unwrap();
        std::fs::rename(&tmp, self.serviceaccount.join("token")).unwrap();
    }

    /// Write a kubeconfig for this server that presents `token` (a wrong one, for a 401).
    pub fn write_kubeconfig(&self, path: &Path, token: &str) {
        std::fs::write(path, kubeconfig_yaml(self.addr, &self.ca_pem, token)).unwrap();
    }

    /// The current resourceVersion (what a list returns now).
    pub fn resource_version(&self) -> String {
        self.state().rv.to_string()
    }

    /// Create a pod (panics if `namespace/name` exists): stamps the next resourceVersion into it, stores it
    /// and sends ADDED to every open watch. Returns the new resourceVersion.
    pub fn add(&self, pod: &Value) -> String {
        self.change("ADDED", pod)
    }

    /// Replace a stored pod (panics if absent), as an update would: next resourceVersion, MODIFIED to every
    /// open watch. Returns the new resourceVersion.
    pub fn modify(&self, pod: &Value) -> String {
        self.change("MODIFIED", pod)
    }

    /// Remove the pod with this pod's namespace/name (panics if absent): next resourceVersion, DELETED (with
    /// the stored pod, stamped with the deletion's resourceVersion) to every open watch. Returns the new
    /// resourceVersion. Graceful deletion (a MODIFIED with `deletionTimestamp` first) is up to the test.
    pub fn delete(&self, pod: &Value) -> String {
        self.change("DELETED", pod)
    }

    fn change(&self, kind: &'static str, pod: &Value) -> String {
        let key = key_of(pod);
        let mut st = self.state();
        let exists = st.pods.contains_key(&key);
        match kind {
            "ADDED" => assert!(!exists, "add: pod {key} exists already"),
            _ => assert!(exists, "{kind}: no pod {key}"),
        }
        st.rv += 1;
        let rv = st.rv;
        let mut obj = if kind == "DELETED" {
            st.pods.remove(&key).unwrap()
        } else {
            pod.clone()
        };
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind != "DELETED" {
            st.pods.insert(key.clone(), obj.clone());
        }
        let line = event_line(kind, &obj);
        st.log.push((rv, kind, key, obj));
        for w in st.watches.values() {
            let _ = w.tx.send(WatchMsg::Event(line.clone()));
        }
        rv.to_string()
    }

    /// Send a BOOKMARK at the current resourceVersion to every open watch that allowed bookmarks; returns how
    /// many got one.
    pub fn bookmark(&self) -> usize {
        let st = self.state();
        let line = bookmark_line(st.rv);
        st.watches
            .values()
            .filter(|w| w.bookmarks)
            .filter(|w| w.tx.send(WatchMsg::Event(line.clone())).is_ok())
            .count()
    }

    /// Compact the history: the resourceVersion moves on (as if something else in the cluster changed), every
    /// open watch gets an ERROR event (410 `Expired`) and ends, and from now on a watch from any older
    /// resourceVersion (or a continue token from before) gets 410: the client must list again.
    pub fn expire(&self) {
        let mut st = self.state();
        st.rv += 1;
        st.compacted = st.rv;
        let line = error_line(&gone_status(
            "The resourceVersion for the provided watch is too old.",
        ));
        for (_, w) in st.watches.drain() {
            let _ = w.tx.send(WatchMsg::Event(line.clone()));
            let _ = w.tx.send(WatchMsg::End);
        }
    }

    /// Close every open watch's connection at once, mid-response and without an event (a network failure).
    pub fn drop_watches(&self) {
        for (_, w) in self.state().watches.drain() {
            let _ = w.tx.send(WatchMsg::Abort);
        }
    }

    /// Take the server down (`true`): every open connection, watches included, is closed abruptly, and new
    /// connections are accepted and closed at once, before TLS. `false` serves again (same certificate,
    /// token and store).
    pub fn set_down(&self, down: bool) {
        if down {
            self.state().watches.clear();
        }
        self.inner.down.send_replace(down);
    }

    /// The request targets seen, in order (e.g. `/api/v1/pods?limit=500`, `/api/v1/pods?&watch=true&...`),
    /// unauthenticated ones included.
    pub fn requests(&self) -> Vec<String> {
        self.state()
            .requests
            .iter()
            .map(|r| r.target.clone())
            .collect()
    }

    /// Every request seen, with its headers.
    pub fn request_log(&self) -> Vec<SeenRequest> {
        self.state().requests.clone()
    }

    /// Watch responses now open.
    pub fn watches_open(&self) -> usize {
        self.state().watches.len()
    }

    /// The stored pods (as served, with their resourceVersions), by `namespace/name`.
    pub fn pods(&self) -> BTreeMap<String, Value> {
        self.state().pods.clone()
    }

    /// Wait (up to 10 s) until `cond` holds; panics with the requests seen otherwise.
    pub async fn wait_until(&self, what: &str, cond: impl Fn(&KubeApi) -> bool) {
        if !self.wait_until_within(Duration::from_secs(10), &cond).await {
            panic!(
                "the Kubernetes API fixture waited 10 s for {what}; watches open: {}, requests: {:#?}",
                self.watches_open(),
                self.requests()
            );
        }
    }

    /// Whether `cond` holds within `timeout` (polled every 10 ms).
    pub async fn wait_until_within(
        &self,
        timeout: Duration,
        cond: impl Fn(&KubeApi) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }
}

// --- pods ---

fn fixture(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kube")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `tests/data/kube/pod.json` (a castai-agent Deployment pod, as `kubectl get pod -o json` prints it) made
/// into another pod: `metadata.name` (and a matching `generateName`), `metadata.namespace`, a fresh
/// `metadata.uid`, `metadata.labels` (exactly `labels`), `spec.serviceAccountName` and `spec.serviceAccount`,
/// `status.podIP` = `ips[0]` and `status.podIPs` = all of `ips` (both absent when `ips` is empty, as for a
/// pod not yet started). The server sets `metadata.resourceVersion` when it is added.
pub fn pod(
    name: &str,
    namespace: &str,
    service_account: &str,
    ips: &[&str],
    labels: &[(&str, &str)],
) -> Value {
    let mut p = fixture("pod.json");
    p["metadata"]["name"] = json!(name);
    match name.rsplit_once('-') {
        Some((prefix, _)) => p["metadata"]["generateName"] = json!(format!("{prefix}-")),
        None => {
            p["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("generateName");
        }
    }
    p["metadata"]["namespace"] = json!(namespace);
    p["metadata"]["uid"] = json!(uid());
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    // The managed fields name the labels and IPs too.
    let mut managed = serde_json::Map::new();
    managed.insert(".".into(), json!({}));
    for k in labels.keys() {
        managed.insert(format!("f:{k}"), json!({}));
    }
    p["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:labels"] =
        Value::Object(managed);
    p["metadata"]["labels"] = Value::Object(labels);
    p["spec"]["serviceAccountName"] = json!(service_account);
    p["spec"]["serviceAccount"] = json!(service_account);
    set_pod_ips(&mut p, ips);
    p
}

/// `tests/data/kube/pod-hostnetwork.json` (a kube-proxy DaemonSet pod, `spec.hostNetwork: true`) named
/// `name` with a fresh uid, on a node whose IP is `node_ip`: `status.podIP(s)` and `status.hostIP(s)` are
/// all `node_ip`, as for every host-network pod.
pub fn hostnetwork_pod(name: &str, node_ip: &str) -> Value {
    let mut p = fixture("pod-hostnetwork.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(uid());
    set_pod_ips(&mut p, &[node_ip]);
    p["status"]["hostIP"] = json!(node_ip);
    p["status"]["hostIPs"] = json!([{ "ip": node_ip }]);
    p
}

/// `tests/data/kube/pod-succeeded.json` (a finished Job pod: `status.phase: Succeeded`, which keeps its
/// `status.podIP`) named `name` with a fresh uid and pod IP `ip`.
pub fn succeeded_pod(name: &str, ip: &str) -> Value {
    let mut p = fixture("pod-succeeded.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(uid());
    set_pod_ips(&mut p, &[ip]);
    p
}

fn set_pod_ips(p: &mut Value, ips: &[&str]) {
    let status = p["status"].as_object_mut().unwrap();
    match ips.first() {
        Some(first) => {
            status.insert("podIP".into(), json!(first));
            status.insert(
                "podIPs".into(),
                Value::Array(ips.iter().map(|ip| json!({ "ip": ip })).collect()),
            );
        }
        None => {
            status.remove("podIP");
            status.remove("podIPs");
        }
    }
    let mut managed = serde_json::Map::new();
    managed.insert(".".into(), json!({}));
    for ip in ips {
        managed.insert(
            format!("k:{{\"ip\":\"{ip}\"}}"),
            json!({ ".": {}, "f:ip": {} }),
        );
    }
    if let Some(fields) = p["metadata"]["managedFields"]
        .as_array_mut()
        .and_then(|m| m.iter_mut().find(|f| f["subresource"] == "status"))
    {
        fields["fieldsV1"]["f:status"]["f:podIPs"] = Value::Object(managed);
    }
}

fn key_of(pod: &Value) -> String {
    let (Some(ns), Some(name)) = (
        pod["metadata"]["namespace"].as_str(),
        pod["metadata"]["name"].as_str(),
    ) else {
        panic!("a pod needs metadata.namespace and metadata.name: {pod}");
    };
    format!("{ns}/{name}")
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `n` hex digits, different on every call in this process and unlikely to repeat across processes.
fn unique_hex(n: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The counter in the first digits keeps values from one process apart; splitmix64 fills the rest.
    let mut seed = nanos ^ (u64::from(std::process::id()) << 32) ^ c;
    let mut s = format!("{:08x}", c as u32);
    while s.len() < n {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        s.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    s.truncate(n);
    s
}

/// A UUID-shaped uid (version 4 layout), unique per call.
fn uid() -> String {
    let h = unique_hex(32);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

// --- TLS and kubeconfig ---

/// A CA and a server certificate for 127.0.0.1 it signs: (CA PEM, server config).
fn certificates() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "kubernetes");
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    p.subject_alt_names = vec![
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), ca.der().clone()], der)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), config)
}

fn kubeconfig_yaml(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: https://{addr}\n  name: fixture\n\
         contexts:\n\
         - context:\n    cluster: fixture\n    namespace: egressd\n    user: egressd\n  name: fixture\n\
         current-context: fixture\n\
         preferences: {{}}\n\
         users:\n\
         - name: egressd\n  user:\n    token: {token}\n"
    )
}

// --- JSON the API server sends ---

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn gone_status(message: &str) -> Value {
    status(410, "Expired", message)
}

/// A pod as a watch event carries it: with `kind` and `apiVersion` first.
fn with_type(obj: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!("Pod"));
    out.insert("apiVersion".into(), json!("v1"));
    for (k, v) in obj.as_object().unwrap() {
        if k != "kind" && k != "apiVersion" {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// A pod as a list item carries it: without `kind` and `apiVersion`.
fn without_type(obj: &Value) -> Value {
    let mut o = obj.as_object().unwrap().clone();
    o.remove("kind");
    o.remove("apiVersion");
    Value::Object(o)
}

fn event_line(kind: &str, obj: &Value) -> String {
    json!({ "type": kind, "object": with_type(obj) }).to_string()
}

fn error_line(status: &Value) -> String {
    json!({ "type": "ERROR", "object": status }).to_string()
}

/// A bookmark exactly as the API server encodes it: an empty Pod but for the resourceVersion, so
/// `creationTimestamp` is null and `spec.containers` null.
fn bookmark_line(rv: u64) -> String {
    json!({
        "type": "BOOKMARK",
        "object": {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": { "resourceVersion": rv.to_string(), "creationTimestamp": null },
            "spec": { "containers": null },
            "status": {},
        },
    })
    .to_string()
}

/// The bookmark that ends the initial events of a streaming list (`sendInitialEvents=true`).
fn initial_events_end_line(rv: u64) -> String {
    let mut v: Value = serde_json::from_str(&bookmark_line(rv)).unwrap();
    v["object"]["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    v.to_string()
}

/// The continue token: base64url (no padding) of `{"v":"meta.k8s.io/v1","rv":RV,"start":"KEY\u0000"}`, as
/// the API server makes it.
fn continue_token(rv: u64, last_key: &str) -> String {
    use base64::Engine;
    let raw = json!({ "v": "meta.k8s.io/v1", "rv": rv, "start": format!("{last_key}\u{0}") });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

fn parse_continue(token: &str) -> Option<(u64, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((v["rv"].as_u64()?, v["start"].as_str()?.to_string()))
}

impl State {
    /// The pods as they were at resourceVersion `rv`.
    fn snapshot(&self, rv: u64) -> BTreeMap<String, Value> {
        let mut pods = BTreeMap::new();
        for (at, kind, key, obj) in &self.log {
            if *at > rv {
                break;
            }
            if *kind == "DELETED" {
                pods.remove(key);
            } else {
                pods.insert(key.clone(), obj.clone());
            }
        }
        pods
    }
}

// --- HTTP/1.1 ---

async fn accept_loop(listener: TcpListener, tls: tokio_rustls::TlsAcceptor, inner: Arc<Inner>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *inner.down.borrow() {
            drop(tcp);
            continue;
        }
        let (tls, inner) = (tls.clone(), inner.clone());
        tokio::spawn(async move {
            let mut down = inner.down.subscribe();
            tokio::select! {
                _ = down.wait_for(|d| *d) => {}
                _ = async {
                    if let Ok(s) = tls.accept(tcp).await {
                        serve_connection(&inner, s).await;
                    }
                } => {}
            }
        });
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

/// Read one request head (and skip a body), keeping any bytes after it in `buf`. None at EOF or on garbage.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Request> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => {
                let request = Request {
                    method: req.method?.to_string(),
                    target: req.path?.to_string(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                buf.drain(..n);
                let body: usize = request
                    .headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..body);
                return Some(request);
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return None,
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(inner: &Inner, mut s: S) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut s, &mut buf).await {
        let close = req
            .headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        if !handle(inner, req, &mut s, &mut buf).await || close {
            return;
        }
    }
}

fn head(code: u16, reason: &str, framing: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let date = format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        &now.weekday().to_string()[..3],
        now.day(),
        &now.month().to_string()[..3],
        now.year(),
        now.hour(),
        now.minute(),
        now.second()
    );
    format!(
        "HTTP/1.1 {code} {reason}\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\n\
         Content-Type: application/json\r\nX-Kubernetes-Pf-Flowschema-Uid: {}\r\n\
         X-Kubernetes-Pf-Prioritylevel-Uid: {}\r\nDate: {date}\r\n{framing}\r\n",
        uid(),
        uid(),
        uid()
    )
}

/// Write a whole JSON response; false if the connection failed.
async fn respond<S: AsyncWrite + Unpin>(s: &mut S, code: u16, reason: &str, body: &Value) -> bool {
    let body = body.to_string();
    let mut out = head(code, reason, &format!("Content-Length: {}\r\n", body.len()));
    out.push_str(&body);
    s.write_all(out.as_bytes()).await.is_ok() && s.flush().await.is_ok()
}

async fn chunk<S: AsyncWrite + Unpin>(s: &mut S, line: &str) -> bool {
    let data = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
    s.write_all(data.as_bytes()).await.is_ok() && s.flush().await.is_ok()
}

async fn last_chunk<S: AsyncWrite + Unpin>(s: &mut S) -> bool {
    s.write_all(b"0\r\n\r\n").await.is_ok() && s.flush().await.is_ok()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Answer one request; false when the connection must close.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Inner,
    req: Request,
    s: &mut S,
    buf: &mut Vec<u8>,
) -> bool {
    let token = {
        let mut st = inner.state.lock().unwrap();
        st.requests.push(SeenRequest {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
        });
        st.token.clone()
    };
    let authorized = req
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && *v == format!("Bearer {token}"));
    if !authorized {
        return respond(
            s,
            401,
            "Unauthorized",
            &status(401, "Unauthorized", "Unauthorized"),
        )
        .await;
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    if path != "/api/v1/pods" {
        let mut st = status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        st["details"] = json!({});
        return respond(s, 404, "Not Found", &st).await;
    }
    if req.method != "GET" {
        let msg = format!("{} is not supported by the test API server", req.method);
        return respond(
            s,
            405,
            "Method Not Allowed",
            &status(405, "MethodNotAllowed", &msg),
        )
        .await;
    }
    let q = Query(
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect(),
    );
    for sel in ["labelSelector", "fieldSelector"] {
        if q.get(sel).is_some_and(|v| !v.is_empty()) {
            let msg = format!("{sel} is not implemented by the test API server");
            return respond(s, 400, "Bad Request", &status(400, "BadRequest", &msg)).await;
        }
    }
    if matches!(q.get("watch"), Some("true" | "1")) {
        watch(inner, &q, s, buf).await
    } else {
        list(inner, &q, s).await
    }
}

async fn list<S: AsyncWrite + Unpin>(inner: &Inner, q: &Query, s: &mut S) -> bool {
    let (code, reason, body) = match list_body(&inner.state.lock().unwrap(), q) {
        Ok(body) => (200, "OK", body),
        Err((code, reason, body)) => (code, reason, body),
    };
    respond(s, code, reason, &body).await
}

type Failure = (u16, &'static str, Value);

fn bad_request(message: &str) -> Failure {
    (400, "Bad Request", status(400, "BadRequest", message))
}

/// The `PodList` for a list request, or the error response.
fn list_body(st: &State, q: &Query) -> Result<Value, Failure> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0);
    let rv_param = q.get("resourceVersion").unwrap_or("");
    // (resourceVersion of the snapshot, first key, page size)
    let (rv, start, limit) = if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
        let Some((rv, start)) = parse_continue(token) else {
            return Err(bad_request(
                "continue key is not valid: illegal base64 data",
            ));
        };
        if rv < st.compacted {
            let msg =
                "The provided continue parameter is too old to display a consistent list result. \
                       You can start a new list without the continue parameter.";
            return Err((410, "Gone", gone_status(msg)));
        }
        (rv, start, limit)
    } else if rv_param == "0" {
        // Served from the watch cache: whole, whatever the limit.
        (st.rv, String::new(), None)
    } else if q.get("resourceVersionMatch") == Some("Exact") {
        let Ok(rv) = rv_param.parse::<u64>() else {
            return Err(bad_request(&format!(
                "resourceVersion: Invalid value: {rv_param:?}"
            )));
        };
        if rv < st.compacted {
            let msg = format!("too old resource version: {rv} ({})", st.compacted);
            return Err((410, "Gone", gone_status(&msg)));
        }
        (rv.min(st.rv), String::new(), limit)
    } else {
        (st.rv, String::new(), limit)
    };
    let pods = st.snapshot(rv);
    let rest: Vec<(&String, &Value)> = pods
        .iter()
        .filter(|(k, _)| k.as_str() >= start.as_str())
        .collect();
    let take = limit.unwrap_or(rest.len()).min(rest.len());
    let items: Vec<Value> = rest[..take].iter().map(|(_, p)| without_type(p)).collect();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if take < rest.len() {
        metadata["continue"] = json!(continue_token(rv, rest[take - 1].0));
        metadata["remainingItemCount"] = json!(rest.len() - take);
    }
    Ok(json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": metadata,
        "items": items,
    }))
}

/// Removes a watch from the open ones when its response ends, however it ends.
struct WatchGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.inner.state.lock().unwrap().watches.remove(&self.id);
    }
}

async fn watch<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Inner,
    q: &Query,
    s: &mut S,
    buf: &mut Vec<u8>,
) -> bool {
    let bookmarks = q.get("allowWatchBookmarks") == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let rv_param = q.get("resourceVersion").unwrap_or("");
    // A streaming list: the current pods, then a bookmark that marks their end.
    let initial_events = q.get("sendInitialEvents") == Some("true");
    enum Start {
        Events(Vec<String>),
        Gone(Value),
        Invalid(String),
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The replay and the registration under one lock: no event is missed or sent twice.
    let (guard, start) = {
        let mut st = inner.state.lock().unwrap();
        let start = match rv_param {
            _ if initial_events => {
                let mut lines: Vec<String> =
                    st.pods.values().map(|p| event_line("ADDED", p)).collect();
                lines.push(initial_events_end_line(st.rv));
                Start::Events(lines)
            }
            "" | "0" => Start::Events(st.pods.values().map(|p| event_line("ADDED", p)).collect()),
            rv => match rv.parse::<u64>() {
                Err(_) => Start::Invalid(format!("resourceVersion: Invalid value: {rv:?}")),
                Ok(rv) if rv < st.compacted => Start::Gone(gone_status(&format!(
                    "too old resource version: {rv} ({})",
                    st.compacted
                ))),
                Ok(rv) => Start::Events(
                    st.log
                        .iter()
                        .filter(|(at, ..)| *at > rv)
                        .map(|(_, kind, _, obj)| event_line(kind, obj))
                        .collect(),
                ),
            },
        };
        let guard = if let Start::Events(_) = start {
            st.next_watch += 1;
            let id = st.next_watch;
            st.watches.insert(id, Watcher { tx, bookmarks });
            Some(WatchGuard { inner, id })
        } else {
            None
        };
        (guard, start)
    };
    let lines = match start {
        Start::Invalid(msg) => {
            return respond(s, 400, "Bad Request", &status(400, "BadRequest", &msg)).await
        }
        Start::Gone(gone) => {
            // Still a 200: the error is the stream's one event.
            let head = head(200, "OK", "Transfer-Encoding: chunked\r\n");
            return s.write_all(head.as_bytes()).await.is_ok()
                && chunk(s, &error_line(&gone)).await
                && last_chunk(s).await;
        }
        Start::Events(lines) => lines,
    };
    let head = head(200, "OK", "Transfer-Encoding: chunked\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    for line in lines {
        if !chunk(s, &line).await {
            return false;
        }
    }
    if s.flush().await.is_err() {
        return false;
    }
    let deadline = tokio::time::sleep(Duration::from_secs(timeout));
    tokio::pin!(deadline);
    let mut scratch = [0u8; 1024];
    loop {
        enum Next {
            Msg(Option<WatchMsg>),
            Read(std::io::Result<usize>),
            Timeout,
        }
        let next = tokio::select! {
            m = rx.recv() => Next::Msg(m),
            r = s.read(&mut scratch) => Next::Read(r),
            _ = &mut deadline => Next::Timeout,
        };
        match next {
            Next::Msg(Some(WatchMsg::Event(line))) => {
                if !chunk(s, &line).await {
                    return false;
                }
            }
            Next::Msg(Some(WatchMsg::End)) | Next::Timeout => {
                drop(guard);
                return last_chunk(s).await;
            }
            // Dropped, or the server went down: close mid-response.
            Next::Msg(Some(WatchMsg::Abort) | None) => return false,
            // The client went away.
            Next::Read(Ok(0) | Err(_)) => return false,
            Next::Read(Ok(n)) => buf.extend_from_slice(&scratch[..n]),
        }
    }
}
