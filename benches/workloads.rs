//! Workload identity's pod index: memory for 10,000 pods (live heap bytes, counted by the allocator), whether
//! it stays flat through rollouts that replace every pod five times, and the cost of a lookup (the per-request
//! hot path). `cargo bench --bench workloads`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use egressd::workloads::index::PodIndex;
use egressd::workloads::pod::entry;
use k8s_openapi::api::core::v1::Pod;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const PODS: u32 = 10_000;

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i))
}

/// A pod as a Deployment makes it: 200 namespaces, a service account per namespace, eight labels of which
/// `pod-template-hash` changes with every rollout (`generation`).
fn pod(i: u32, generation: u32) -> Pod {
    let ns = format!("team-{}", i % 200);
    let app = format!("app-{}", i % 1000);
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("{app}-{generation:x}-{i:05x}"),
            "namespace": ns,
            "uid": format!("{generation:08x}-0000-4000-8000-{i:012x}"),
            "labels": {
                "app.kubernetes.io/name": app,
                "app.kubernetes.io/instance": format!("{app}-prod"),
                "app.kubernetes.io/component": "agent",
                "app.kubernetes.io/part-of": ns,
                "app.kubernetes.io/managed-by": "Helm",
                "helm.sh/chart": "agent-1.2.3",
                "pod-template-hash": format!("{:x}", 0x5d8f9c7b4 + u64::from(generation) * 7919 + u64::from(i % 1000)),
                "version": "v1"
            }
        },
        "spec": {"serviceAccountName": format!("{ns}-agent"), "containers": []},
        "status": {"phase": "Running", "podIP": ip(i).to_string(), "podIPs": [{"ip": ip(i).to_string()}]}
    }))
    .unwrap()
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Print the index's memory for 10,000 pods, and after five rollouts of every pod.
fn memory() {
    let before = live();
    let mut index = PodIndex::default();
    for i in 0..PODS {
        index.apply(entry(&pod(i, 0)).unwrap());
    }
    let first = live() - before;
    println!(
        "workloads/memory: {PODS} pods: {first} bytes ({} per pod)",
        first / PODS as isize
    );
    for generation in 1..=5 {
        // A rollout: each new pod is added before the old one goes (its address reused at once).
        for i in 0..PODS {
            index.apply(entry(&pod(i, generation)).unwrap());
            index.remove(&format!("{:08x}-0000-4000-8000-{i:012x}", generation - 1));
        }
        let now = live() - before;
        println!(
            "workloads/memory: after rollout {generation}: {now} bytes ({:+.1}% of the first)",
            (now - first) as f64 * 100.0 / first as f64
        );
    }
    assert_eq!(index.pods(), PODS as usize);
    assert_eq!(index.ambiguous(), 0);
}

fn lookups(c: &mut Criterion) {
    memory();
    let mut index = PodIndex::default();
    for i in 0..PODS {
        index.apply(entry(&pod(i, 0)).unwrap());
    }
    let mut group = c.benchmark_group("workloads");
    group.bench_function("lookup_hit_10k", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7919) % PODS;
            black_box(index.lookup(black_box(ip(i))))
        })
    });
    group.bench_function("lookup_miss_10k", |b| {
        b.iter(|| black_box(index.lookup(black_box(ip(PODS + 5)))))
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
