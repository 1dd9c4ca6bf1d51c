//! Hostile host names: IDN homographs and invalid punycode, trailing dots, mixed case, very long names and
//! labels. Each is normalized before any rule sees it; invalid ones are refused with a reason, and the proxy
//! keeps serving.

mod hostile;
mod support;
use hostile::*;
use support::*;

/// Rules for IDN names (written in Unicode and in punycode), with the names mapped to loopback.
const IDN_RULES: &str = r#"  - name: idn
    hosts: ["bücher.test", "xn--mnchen-3ya.test"]
    ports: [1]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idn_homographs_and_invalid_punycode() {
    let fx = Fixture::with(IDN_RULES, "").await;
    // Cyrillic "а" (U+0430) in place of the Latin "a": a different name, so no rule matches, and the log
    // shows the punycode a reader can tell apart.
    let d = fx
        .refused(
            "homograph",
            &connect(fx.addr(), "аpple.test:443").await,
            403,
            "denied_no_rule",
        )
        .await;
    assert_eq!(d["host"], "xn--pple-43d.test");
    // Unicode and punycode spellings of an allowed name both reach the rule (port 2 is not in it).
    for spelling in [
        "bücher.test",
        "BÜCHER.test",
        "xn--bcher-kva.test",
        "münchen.test",
    ] {
        let d = fx
            .refused(
                spelling,
                &connect(fx.addr(), &format!("{spelling}:2")).await,
                403,
                "denied_port",
            )
            .await;
        assert_eq!(d["rule"], "idn", "{d}");
        assert!(d["host"].as_str().unwrap().starts_with("xn--"), "{d}");
    }
    // Punycode that does not decode, or decodes to something UTS-46 forbids.
    for bad in [
        "xn--zz.test",
        "xn--.test",
        "xn--a.test",
        "xn--bcher-kva-.test",
        "xn--ls8h.xn--ls8h-.test",
        "xn--pple-43d\u{301}.test",
    ] {
        fx.refused(
            bad,
            &connect(fx.addr(), &format!("{bad}:443")).await,
            400,
            "invalid_host",
        )
        .await;
    }
    // UTS-46 drops a zero-width space, as browsers and resolvers do: the name decided is the name dialled.
    let d = fx
        .refused(
            "zero-width space",
            &connect(fx.addr(), "a\u{200b}b.test:443").await,
            403,
            "denied_no_rule",
        )
        .await;
    assert_eq!(d["host"], "ab.test");
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_dots_and_mixed_case_are_one_name() {
    let fx = Fixture::new().await;
    let p = fx.tls_port();
    for spelling in ["good.test.", "GOOD.TEST", "GoOd.TeSt.", "good\u{3002}test"] {
        let resp = connect(fx.addr(), &format!("{spelling}:{p}")).await;
        assert_eq!(status(&resp), 200, "{spelling}: {resp}");
        let d = fx.next_decision().await;
        assert_eq!(d["host"], "good.test", "{spelling}: {d}");
        assert_eq!(d["rule"], "good", "{spelling}: {d}");
    }
    for (bad, reason) in [
        ("good.test..", "invalid_host"),
        (".good.test", "invalid_host"),
        ("good..test", "invalid_host"),
        (".", "invalid_host"),
        ("..", "invalid_host"),
    ] {
        fx.refused(
            bad,
            &connect(fx.addr(), &format!("{bad}:{p}")).await,
            400,
            reason,
        )
        .await;
    }
    fx.serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_names_and_labels() {
    let fx = Fixture::new().await;
    let label63 = "a".repeat(63);
    let label64 = "a".repeat(64);
    // 4 labels of 63 plus "test": 4*64 + 4 = 260 > 253.
    let long_name = format!("{label63}.{label63}.{label63}.{label63}.test");
    // Exactly 253 bytes: valid, so it is decided (no rule) rather than refused as malformed.
    let max_name = format!("{label63}.{label63}.{label63}.{}.test", "b".repeat(56));
    assert_eq!(max_name.len(), 253);
    let d = fx
        .refused(
            "253 bytes",
            &connect(fx.addr(), &format!("{max_name}:443")).await,
            403,
            "denied_no_rule",
        )
        .await;
    assert_eq!(d["host"], max_name.as_str());
    fx.refused(
        "63-byte label",
        &connect(fx.addr(), &format!("{label63}.test:443")).await,
        403,
        "denied_no_rule",
    )
    .await;
    for bad in [
        format!("{label64}.test"),
        long_name,
        format!("{max_name}x"),
        format!("{}.test", "é".repeat(70)),
        "a.".repeat(600) + "test",
    ] {
        fx.refused(
            &bad[..20],
            &connect(fx.addr(), &format!("{bad}:443")).await,
            400,
            "invalid_host",
        )
        .await;
    }
    // A name far beyond any DNS limit but inside the header limit is refused cheaply as a name...
    let huge = "a".repeat(20_000);
    fx.refused(
        "20000-byte host",
        &raw(
            fx.addr(),
            format!("CONNECT {huge}.test:443 HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await,
        400,
        "invalid_host",
    )
    .await;
    // ... and one beyond limits.max_header_bytes never gets to be a name.
    let over = "a".repeat(40_000);
    fx.refused(
        "40000-byte host",
        &connect(fx.addr(), &format!("{over}.test:443")).await,
        431,
        "header_too_large",
    )
    .await;
    fx.serves().await;
}
