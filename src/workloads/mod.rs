//! Workload identity's facts: which pod a client address belongs to, from a read-only list and watch of Pods
//! through the Kubernetes API ([`watch`]), kept in a [`index::PodIndex`]. The policy decides what the pod's
//! namespace, service account and labels mean (`policy::workload`); this only finds them.
//!
//! One [`Workloads`] outlives configuration reloads: a reload that keeps `kubernetes:` as it was keeps the
//! watch and what it knows; one that changes it starts a new watch.

pub mod index;
pub mod pod;
mod watch;

use crate::config::Kubernetes;
use crate::policy::workload::WorkloadFact;
use crate::telemetry::metrics::Metrics;
use index::PodIndex;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// The pods known from the API server, and whether that knowledge can be used.
pub struct Workloads {
    index: RwLock<PodIndex>,
    health: Health,
    running: Mutex<Option<Running>>,
}

struct Running {
    settings: Kubernetes,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// How fresh the index is. Read on every lookup, so atomics rather than a lock.
struct Health {
    epoch: Instant,
    /// The first complete pod list has been indexed.
    synced: AtomicBool,
    /// Milliseconds after `epoch` since which the API server has not been reached (0: it is being reached).
    failing_since: AtomicU64,
    stale_after_ms: AtomicU64,
    last_error: Mutex<String>,
}

impl Default for Workloads {
    fn default() -> Self {
        Workloads {
            index: RwLock::default(),
            health: Health {
                epoch: Instant::now(),
                synced: AtomicBool::new(false),
                failing_since: AtomicU64::new(0),
                stale_after_ms: AtomicU64::new(60_000),
                last_error: Mutex::new(String::new()),
            },
            running: Mutex::new(None),
        }
    }
}

impl Workloads {
    /// What is known of the workload behind `ip`.
    pub fn lookup(&self, ip: IpAddr) -> WorkloadFact {
        if let Some(why) = self.unavailable() {
            return WorkloadFact::Unavailable(Arc::new(why));
        }
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        match index.lookup(ip) {
            Some(w) => WorkloadFact::Pod(w),
            None => WorkloadFact::NotAPod,
        }
    }

    /// Why workload identity cannot be used now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        let h = &self.health;
        let error = || h.last_error.lock().map(|e| e.clone()).unwrap_or_default();
        if !h.synced.load(Ordering::Acquire) {
            let e = error();
            return Some(if e.is_empty() {
                "waiting for the first pod list from the Kubernetes API".into()
            } else {
                format!("no pod list from the Kubernetes API yet: {e}")
            });
        }
        let since = h.failing_since.load(Ordering::Acquire);
        if since == 0 {
            return None;
        }
        let failing = Duration::from_millis(h.now_ms().saturating_sub(since));
        let bound = Duration::from_millis(h.stale_after_ms.load(Ordering::Relaxed));
        (failing > bound).then(|| {
            format!(
                "the Kubernetes API has been unreachable for {}s (kubernetes.stale_after {}): {}",
                failing.as_secs(),
                humantime::format_duration(bound),
                error()
            )
        })
    }

    /// Has a complete pod list been indexed (since the watch in force started)?
    pub fn listed(&self) -> bool {
        self.health.synced.load(Ordering::Acquire)
    }

    /// Pods indexed and addresses claimed by two live pods.
    pub fn counts(&self) -> (usize, usize) {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        (index.pods(), index.ambiguous())
    }

    /// Set the gauges (`egressd_workload_*`) to the state now.
    pub fn publish(&self, metrics: &Metrics) {
        let (pods, ambiguous) = self.counts();
        metrics.workload_status(self.unavailable().is_none(), pods, ambiguous);
    }

    /// Watch pods as `settings` say (`None`: stop watching). A watch already running with the same settings
    /// goes on; with others it is replaced, and identity is unknown until the new one has listed.
    pub fn ensure(self: &Arc<Self>, settings: Option<&Kubernetes>, metrics: &Arc<Metrics>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(r), Some(s)) = (running.as_mut(), settings) {
            if r.settings.kubeconfig == s.kubeconfig {
                r.settings = s.clone();
                self.health
                    .stale_after_ms
                    .store(s.stale_after.as_millis() as u64, Ordering::Relaxed);
                return;
            }
        }
        if let Some(old) = running.take() {
            old.tasks.iter().for_each(|t| t.abort());
            self.health.synced.store(false, Ordering::Release);
        }
        let Some(settings) = settings else {
            return;
        };
        self.health
            .stale_after_ms
            .store(settings.stale_after.as_millis() as u64, Ordering::Relaxed);
        // The tasks hold the index weakly: they end when the proxy that owns it is gone.
        let weak = Arc::downgrade(self);
        let tasks = vec![
            tokio::spawn(watch::run(weak.clone(), settings.clone(), metrics.clone()))
                .abort_handle(),
            tokio::spawn(report(weak, metrics.clone())).abort_handle(),
        ];
        *running = Some(Running {
            settings: settings.clone(),
            tasks,
        });
    }

    fn with_index<T>(&self, f: impl FnOnce(&mut PodIndex) -> T) -> T {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        f(&mut index)
    }

    /// The API server answered.
    fn reached(&self) {
        self.health.failing_since.store(0, Ordering::Release);
    }

    /// The first (or a new) complete list is indexed.
    fn synced(&self) {
        self.reached();
        self.health.synced.store(true, Ordering::Release);
    }

    /// The API server could not be reached, or a request failed.
    fn failed(&self, error: String) {
        let h = &self.health;
        let now = h.now_ms().max(1);
        let _ = (h.failing_since).compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        if let Ok(mut e) = h.last_error.lock() {
            *e = error;
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        if let Ok(Some(r)) = self.running.get_mut().map(Option::take) {
            r.tasks.iter().for_each(|t| t.abort());
        }
    }
}

/// Keep the gauges current and count each time identity is lost (every second: the bound is checked
/// between events, since an outage sends none).
async fn report(workloads: Weak<Workloads>, metrics: Arc<Metrics>) {
    let mut up_before = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(workloads) = workloads.upgrade() else {
            return;
        };
        let synced = workloads.health.synced.load(Ordering::Acquire);
        let why = workloads.unavailable();
        let up = why.is_none();
        if up_before && !up && synced {
            metrics.workload_identity_lost();
            tracing::warn!(reason = why.as_deref().unwrap_or(""), "workload identity lost: rules for namespaces, service accounts and pod labels match no client until the API server is reached again");
        }
        if !up_before && up {
            tracing::info!("workload identity available");
        }
        up_before = up;
        workloads.publish(&metrics);
    }
}
