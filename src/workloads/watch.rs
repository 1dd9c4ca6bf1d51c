//! The list and watch of Pods: list every pod (in pages), index them as a whole, then watch from the list's
//! resourceVersion, applying each event. A watch that ends is resumed from the last version seen (events and
//! bookmarks move it); `410 Gone` (the version is too old) means list again. Failures are retried with a
//! capped exponential backoff, and recorded so that identity turns unknown after `kubernetes.stale_after`.

use super::{pod, Workloads};
use crate::config::Kubernetes;
use crate::telemetry::metrics::Metrics;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::Api;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Pods per list page.
const PAGE: u32 = 500;
/// Seconds a watch request lasts before the server ends it (and it is resumed).
const WATCH_SECONDS: u32 = 290;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// How a watch ended.
enum Ended {
    /// The server closed it (its timeout, or a dropped connection): resume from the last version.
    Closed,
    /// `410 Gone`: the version is too old, list again.
    Gone,
    Failed(String),
}

/// Keep the index of `workloads` current until it is dropped.
pub(super) async fn run(workloads: Weak<Workloads>, settings: Kubernetes, metrics: Arc<Metrics>) {
    let mut backoff = Backoff::default();
    let api = loop {
        match client(&settings).await {
            Ok(c) => break Api::<Pod>::all(c),
            Err(e) => {
                let Some(w) = workloads.upgrade() else { return };
                tracing::warn!(error = %e, "workload identity: no Kubernetes API client");
                w.failed(e);
                drop(w);
                backoff.wait().await;
            }
        }
    };
    'list: loop {
        let mut version = match list(&api).await {
            Ok((pods, version)) => {
                let Some(w) = workloads.upgrade() else { return };
                let entries = pods.iter().filter_map(pod::entry);
                w.with_index(|ix| ix.replace(entries));
                let was_synced = w.health.synced.load(std::sync::atomic::Ordering::Acquire);
                w.synced();
                if !was_synced {
                    let (pods, _) = w.counts();
                    tracing::info!(pods, "workload identity: pods listed");
                }
                backoff.reset();
                version
            }
            Err(e) => {
                let Some(w) = workloads.upgrade() else { return };
                tracing::warn!(error = %e, "workload identity: listing pods failed; retrying");
                w.failed(e);
                drop(w);
                backoff.wait().await;
                continue 'list;
            }
        };
        loop {
            let started = std::time::Instant::now();
            let ended = watch(&api, &workloads, &mut version, &mut backoff).await;
            let Some(w) = workloads.upgrade() else { return };
            match ended {
                Ended::Closed => {
                    metrics.workload_watch_restart("closed");
                    // A server that ends every watch at once is not asked again in a tight loop.
                    if started.elapsed() < Duration::from_secs(1) {
                        drop(w);
                        backoff.wait().await;
                    }
                }
                Ended::Gone => {
                    metrics.workload_watch_restart("gone");
                    tracing::info!(
                        "workload identity: watch expired (410 Gone); listing pods again"
                    );
                    continue 'list;
                }
                Ended::Failed(e) => {
                    metrics.workload_watch_restart("error");
                    tracing::warn!(error = %e, "workload identity: watching pods failed; retrying");
                    w.failed(e);
                    drop(w);
                    backoff.wait().await;
                }
            }
        }
    }
}

/// The API client: from `kubernetes.kubeconfig`, or in-cluster (the pod's service account).
async fn client(settings: &Kubernetes) -> Result<kube::Client, String> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubernetes.kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("kubernetes.kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::incluster().map_err(|e| {
            format!(
                "not in a pod with a service account token ({e}); mount one \
                 (automountServiceAccountToken) or set kubernetes.kubeconfig"
            )
        })?,
    };
    let mut config = config;
    // The API server is reached directly: egressd's own environment may name a proxy (itself) for the agents,
    // which the kube client would otherwise take from HTTPS_PROXY.
    config.proxy_url = None;
    // Failed requests are retried here, with the backoff and the staleness bound above; the client's own
    // retries of 429/503 could hold one list for minutes.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes API client: {e}"))
}

/// Every pod, page by page, and the resourceVersion of the list.
async fn list(api: &Api<Pod>) -> Result<(Vec<Pod>, String), String> {
    let mut pods = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await.map_err(|e| described(&e))?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => {
                let version = page.metadata.resource_version.unwrap_or_default();
                return Ok((pods, version));
            }
        }
    }
}

/// One watch request from `version`, applying its events until it ends.
async fn watch(
    api: &Api<Pod>,
    workloads: &Weak<Workloads>,
    version: &mut String,
    backoff: &mut Backoff,
) -> Ended {
    let params = WatchParams::default().timeout(WATCH_SECONDS);
    let stream = match api.watch(&params, version).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 410 => return Ended::Gone,
        Err(e) => return Ended::Failed(described(&e)),
    };
    if let Some(w) = workloads.upgrade() {
        w.reached();
    }
    backoff.reset();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let Some(w) = workloads.upgrade() else {
            return Ended::Closed;
        };
        match event {
            Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                remember(version, &p);
                if let Some(e) = pod::entry(&p) {
                    w.with_index(|ix| ix.apply(e));
                }
            }
            Ok(WatchEvent::Deleted(p)) => {
                remember(version, &p);
                if let Some(uid) = p.metadata.uid.as_deref() {
                    w.with_index(|ix| ix.remove(uid));
                }
            }
            Ok(WatchEvent::Bookmark(b)) => *version = b.metadata.resource_version,
            Ok(WatchEvent::Error(s)) if s.code == 410 => return Ended::Gone,
            Ok(WatchEvent::Error(s)) => {
                return Ended::Failed(format!("watch error {}: {}", s.code, s.message))
            }
            Err(e) => return Ended::Failed(described(&e)),
        }
    }
    Ended::Closed
}

fn remember(version: &mut String, p: &Pod) {
    if let Some(v) = &p.metadata.resource_version {
        version.clone_from(v);
    }
}

/// An error as one line, with the API server's status code and message when it sent one.
fn described(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("API status {} {}: {}", s.code, s.reason, s.message),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Capped exponential backoff between failed requests.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    async fn wait(&mut self) {
        let d = self.next.unwrap_or(BACKOFF_MIN);
        self.next = Some((d * 2).min(BACKOFF_MAX));
        tokio::time::sleep(d).await;
    }

    fn reset(&mut self) {
        self.next = None;
    }
}
