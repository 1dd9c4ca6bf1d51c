//! `egressd audit` throughput: classifying decision lines and counting them into groups, per line, for a log
//! whose destinations repeat and for one where every line is a new group beyond `--max-groups`.
//! `cargo bench --bench audit`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use egressd::audit::event::classify;
use egressd::audit::summary::{Summary, Tally};
use egressd::audit::window::Window;

fn line(i: usize, distinct: usize) -> String {
    format!(
        "{{\"ts\":\"2026-11-29T10:{:02}:{:02}Z\",\"event\":\"decision\",\"conn_id\":{i},\"request\":1,\
         \"client_addr\":\"10.1.{}.{}:{}\",\"kind\":\"connect\",\"method\":\"CONNECT\",\
         \"host\":\"h{}.example.com\",\"port\":443,\"decision\":\"deny\",\"reason\":\"denied_no_rule\",\
         \"rule\":null,\"detail\":\"no allow rule matches this host and port\",\"resolved_addrs\":[],\
         \"denied_addr\":null,\"upstream_addr\":null,\"dns_ms\":null,\"connect_ms\":null,\"sni\":null,\
         \"alpn\":[]}}",
        (i / 60) % 60,
        i % 60,
        (i / 256) % 4,
        i % 256,
        1024 + i % 60000,
        i % distinct,
    )
}

fn audit(c: &mut Criterion) {
    const LINES: usize = 10_000;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, distinct) in [("repeating", 100), ("all_new_groups", usize::MAX)] {
        let lines: Vec<String> = (0..LINES).map(|i| line(i, distinct)).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                // With a limit of 1000 groups, the all-new log exercises the "not kept" path.
                let mut s = Summary::new(Window::default(), 1_000, Default::default());
                for l in &lines {
                    s.add(classify(black_box(l.as_bytes())));
                }
                black_box(s.counts)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, audit);
criterion_main!(benches);
