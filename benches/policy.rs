//! Policy micro-benchmarks: decision time with 10, 1k and 100k rules (exact, suffix, glob and CIDR; hit and
//! miss), target normalization and NO_PROXY parsing. `cargo bench --bench policy`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use egressd::noproxy;
use egressd::policy::{parse_pattern, Policy, PolicyBuilder, PortSet, RuleKind};
use egressd::target::parse_authority;

fn build(n: usize) -> Policy {
    let mut b = PolicyBuilder::default();
    for i in 0..n {
        let id = b.rule(
            &format!("r{i}"),
            RuleKind::Allow,
            PortSet::from_ranges(vec![443..=443]),
        );
        let pattern = match i % 4 {
            0 => format!("api{i}.example.com"),
            1 => format!("*.svc{i}.example.net"),
            2 => format!(".zone{i}.example.org"),
            _ => format!("10.{}.{}.0/24", (i >> 8) & 0xff, i & 0xff),
        };
        b.pattern(id, &parse_pattern(&pattern).unwrap()).unwrap();
    }
    // A few globs, as real configs have.
    let id = b.rule(
        "globs",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    for g in ["api-*.cast.ai", "*.prod-*.example.io"] {
        b.pattern(id, &parse_pattern(g).unwrap()).unwrap();
    }
    b.build().unwrap()
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for n in [10usize, 1_000, 100_000] {
        let p = build(n);
        let targets = [
            ("exact_hit", "api4.example.com:443".to_string()),
            ("suffix_hit", "a.b.svc5.example.net:443".to_string()),
            ("apex_hit", "zone6.example.org:443".to_string()),
            ("glob_hit", "api-eu.cast.ai:443".to_string()),
            ("cidr_hit", "10.0.7.9:443".to_string()),
            ("name_miss", "www.not-listed.example:443".to_string()),
            ("ip_miss", "192.0.2.1:443".to_string()),
        ];
        for (label, t) in &targets {
            let target = parse_authority(t, None).unwrap();
            group.bench_with_input(BenchmarkId::new(*label, n), &target, |b, t| {
                b.iter(|| black_box(p.decide(black_box(t))))
            });
        }
    }
    group.finish();
}

fn normalization(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    for (label, input) in [
        ("ascii", "API.Cast.AI.:443"),
        ("idn", "bücher.example:443"),
        ("numeric_ipv4", "0x7f.1:443"),
        ("ipv6", "[2001:db8::1]:443"),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| black_box(parse_authority(black_box(input), None)))
        });
    }
    group.finish();
}

fn no_proxy(c: &mut Criterion) {
    let list = "localhost,127.0.0.1,.cluster.local,*.svc,10.0.0.0/8,172.16.0.0/12,metadata.google.internal,api.example:8443";
    c.bench_function("noproxy/parse", |b| {
        b.iter(|| black_box(noproxy::parse(black_box(list))))
    });
    let parsed = noproxy::parse(list);
    c.bench_function("noproxy/go_bypasses", |b| {
        b.iter(|| black_box(parsed.go_bypasses(black_box("a.b.svc"), 443)))
    });
}

criterion_group!(benches, decisions, normalization, no_proxy);
criterion_main!(benches);
