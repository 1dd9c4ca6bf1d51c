//! ClientHello parsing micro-benchmarks: the SNI peek on hellos captured from real clients (see
//! tests/data/clienthello/capture.py), whole, cut short, and on bytes that are not TLS.
//! `cargo bench --bench clienthello`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use egressd::wire::client_hello::{peek_client_hello, Peek};

const CAPTURES: [(&str, &[u8]); 4] = [
    ("curl", include_bytes!("../tests/data/clienthello/curl.bin")),
    (
        "openssl",
        include_bytes!("../tests/data/clienthello/openssl.bin"),
    ),
    (
        "openssl_no_sni",
        include_bytes!("../tests/data/clienthello/openssl-nosni.bin"),
    ),
    (
        "python",
        include_bytes!("../tests/data/clienthello/python.bin"),
    ),
];

fn peek(c: &mut Criterion) {
    let mut group = c.benchmark_group("clienthello");
    for (name, hello) in CAPTURES {
        // Measure the path the proxy takes: a complete hello is parsed to the end.
        assert!(
            matches!(peek_client_hello(hello), Peek::Complete(_)),
            "{name} capture does not parse"
        );
        group.bench_function(format!("{name}/complete"), |b| {
            b.iter(|| black_box(peek_client_hello(black_box(hello))))
        });
    }
    // The first segment of a hello that arrives in two: the proxy peeks again when the rest comes.
    let (_, curl) = CAPTURES[0];
    let first = &curl[..curl.len() / 2];
    assert_eq!(peek_client_hello(first), Peek::Incomplete);
    group.bench_function("curl/first_half", |b| {
        b.iter(|| black_box(peek_client_hello(black_box(first))))
    });
    // A client that speaks plain HTTP into a tunnel.
    let plain = b"GET / HTTP/1.1\r\nHost: api.cast.ai\r\n\r\n";
    assert_eq!(peek_client_hello(plain), Peek::NotTls);
    group.bench_function("not_tls", |b| {
        b.iter(|| black_box(peek_client_hello(black_box(plain))))
    });
    group.finish();
}

criterion_group!(benches, peek);
criterion_main!(benches);
