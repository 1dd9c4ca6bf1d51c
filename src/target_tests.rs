use super::*;

fn v4(s: &str) -> Host {
    Host::Ip(IpAddr::V4(s.parse().unwrap()))
}

fn v6(s: &str) -> Host {
    Host::Ip(IpAddr::V6(s.parse().unwrap()))
}

fn name(s: &str) -> Host {
    Host::Name(s.to_owned())
}

#[test]
fn normalize_host_accepts_and_canonicalizes() {
    let cases: &[(&str, Host)] = &[
        // Plain names.
        ("api.cast.ai", name("api.cast.ai")),
        ("API.Cast.AI", name("api.cast.ai")),
        ("a.com.", name("a.com")),
        ("localhost", name("localhost")),
        ("_dmarc.example.com", name("_dmarc.example.com")),
        ("a_b.example", name("a_b.example")),
        ("123.example.com", name("123.example.com")),
        (
            "r3---sn-abc.googlevideo.com",
            name("r3---sn-abc.googlevideo.com"),
        ),
        ("0xg", name("0xg")),
        ("1.2.3.4a", name("1.2.3.4a")),
        ("1e3", name("1e3")),
        // IDNA.
        ("bücher.example", name("xn--bcher-kva.example")),
        ("BÜCHER.Example", name("xn--bcher-kva.example")),
        ("xn--bcher-kva.example", name("xn--bcher-kva.example")),
        ("XN--BCHER-KVA.EXAMPLE", name("xn--bcher-kva.example")),
        ("ß.de", name("xn--zca.de")),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", name("example.com")),
        ("a\u{3002}com", name("a.com")),
        ("a\u{00AD}b.com", name("ab.com")),
        ("a＿b.com", name("a_b.com")),
        // IPv4 in every WHATWG spelling.
        ("127.0.0.1", v4("127.0.0.1")),
        ("127.0.0.1.", v4("127.0.0.1")),
        ("2130706433", v4("127.0.0.1")),
        ("0x7f.1", v4("127.0.0.1")),
        ("127.1", v4("127.0.0.1")),
        ("127.0.1", v4("127.0.0.1")),
        ("0177.0.0.1", v4("127.0.0.1")),
        ("0x7F000001", v4("127.0.0.1")),
        ("0X7f.0.0.1", v4("127.0.0.1")),
        ("0x7f.0x0.0x0.0x1", v4("127.0.0.1")),
        ("017700000001", v4("127.0.0.1")),
        ("１２７.0.0.1", v4("127.0.0.1")),
        ("２１３０７０６４３３", v4("127.0.0.1")),
        ("127。0。0。1", v4("127.0.0.1")),
        ("0", v4("0.0.0.0")),
        ("0x", v4("0.0.0.0")),
        ("0X", v4("0.0.0.0")),
        ("0x.0x.0x.0x", v4("0.0.0.0")),
        ("00", v4("0.0.0.0")),
        ("255.255.255.255", v4("255.255.255.255")),
        ("4294967295", v4("255.255.255.255")),
        ("0xffffffff", v4("255.255.255.255")),
        ("1.16777215", v4("1.255.255.255")),
        ("1.2.65535", v4("1.2.255.255")),
        ("169.254.43518", v4("169.254.169.254")),
        ("010.0.0.1", v4("8.0.0.1")),
        ("08.0.0.1a", name("08.0.0.1a")),
        // IPv6.
        ("[::1]", v6("::1")),
        ("[2001:DB8::1]", v6("2001:db8::1")),
        ("[::ffff:127.0.0.1]", v6("::ffff:7f00:1")),
        ("::1", v6("::1")),
        ("2001:db8::1", v6("2001:db8::1")),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_host(raw).as_ref(), Ok(want), "input {raw:?}");
    }
}

#[test]
fn normalize_host_rejects() {
    use TargetError::{InvalidHost as H, InvalidTarget as T};
    type Variant = fn(String) -> TargetError;
    let long_label = format!("{}.com", "a".repeat(64));
    let max_label = format!("{}.com", "a".repeat(63));
    let long_name = ["a".repeat(63).as_str(); 4].join(".") + ".ab";
    let cases: Vec<(&str, Variant)> = vec![
        // Malformed: InvalidTarget.
        ("", T),
        (" ", T),
        ("a.com ", T),
        ("a .com", T),
        ("a.com\0", T),
        ("a\r\n.com", T),
        ("a\t.com", T),
        ("a\u{7f}.com", T),
        ("a\u{85}.com", T),
        ("a\u{a0}.com", T),
        ("a\u{3000}.com", T),
        ("user@a.com", T),
        ("a.com/x", T),
        ("a.com\\x", T),
        ("a.com?x", T),
        ("a.com#x", T),
        ("a%2ecom", T),
        ("%31%32%37.0.0.1", T),
        ("a<b", T),
        ("a>b", T),
        ("a\"b", T),
        ("a{b", T),
        ("a}b", T),
        ("a|b", T),
        ("a^b", T),
        ("a`b", T),
        ("fe80::1%eth0", T),
        ("[fe80::1%25eth0]", T),
        ("[fe80::1%eth0]", T),
        ("[::1", T),
        ("::1]", T),
        ("[]", T),
        ("[a.com]", T),
        ("[127.0.0.1]", T),
        ("[::1]x", T),
        ("a[b]", T),
        ("a.com:443", T),
        ("1.2.3.4:80", T),
        (":::", T),
        // Name-shaped but invalid: InvalidHost.
        ("a.com..", H),
        ("a..com", H),
        (".a.com", H),
        (".", H),
        ("..", H),
        ("-a.com", H),
        ("a-.com", H),
        ("a.-com", H),
        ("a!b.com", H),
        ("a*b.com", H),
        ("a,b.com", H),
        ("a;b.com", H),
        ("a=b.com", H),
        ("a~b.com", H),
        ("a'b.com", H),
        ("xn--zz", H),
        ("xn--a", H),
        ("xn--", H),
        ("xn--abc.com", H),
        ("xn--ab-.com", H),
        ("a\u{200D}b.com", H),
        ("\u{0301}a.com", H),
        ("\u{FFFD}.com", H),
        ("a／b", H),
        ("a：b", H),
        (long_label.as_str(), H),
        (long_name.as_str(), H),
        // Numeric: must be valid IPv4 or nothing.
        ("1.2.3.4.5", H),
        ("1.2.3.4.5.", H),
        ("foo.123", H),
        ("foo.0x1", H),
        ("foo.0x", H),
        ("256.1.1.1", H),
        ("1.256.1.1", H),
        ("1.1.256.1", H),
        ("1.1.1.256", H),
        ("1.1.65536", H),
        ("1.16777216", H),
        ("4294967296", H),
        ("0x100000000", H),
        ("99999999999999999999999999", H),
        ("1.2.3.09", H),
        ("09", H),
        ("08.1", H),
        ("0x1g.1", H),
        ("1..2", H),
        ("1.2..3", H),
        (".1.2.3", H),
        ("127.0.0.1..", H),
        ("１２７.0.0.1.1.1", H),
    ];
    // Sanity check for the length cases above: the boundary is accepted.
    assert_eq!(
        normalize_host(&max_label),
        Ok(Host::Name(max_label.clone()))
    );
    let max_name = ["a".repeat(63).as_str(); 4].join(".")[..253].to_owned();
    assert_eq!(normalize_host(&max_name), Ok(Host::Name(max_name.clone())));
    for (raw, variant) in cases {
        let err = normalize_host(raw).expect_err(raw);
        let expected = variant(String::new());
        assert_eq!(err.reason(), expected.reason(), "input {raw:?}: {err}");
    }
}

#[test]
fn oversized_input_is_rejected_without_processing() {
    let raw = "a".repeat(MAX_RAW_HOST_LEN + 1);
    assert_eq!(
        normalize_host(&raw).unwrap_err().reason(),
        Reason::InvalidHost
    );
}

#[test]
fn error_messages_show_escaped_input() {
    let cases: &[(&str, &str)] = &[
        ("a\r\nb", "\"a\\r\\nb\""),
        ("a\0b", "\"a\\0b\""),
        ("fe80::1%eth0", "zone"),
        ("1.2.3.4.5", "\"1.2.3.4.5\""),
        ("xn--zz", "\"xn--zz\""),
    ];
    for (raw, needle) in cases {
        let msg = normalize_host(raw).unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}

#[test]
fn parse_authority_accepts() {
    let cases: &[(&str, Option<u16>, Host, u16)] = &[
        ("api.cast.ai:443", None, name("api.cast.ai"), 443),
        ("API.cast.ai.:443", None, name("api.cast.ai"), 443),
        ("api.cast.ai", Some(80), name("api.cast.ai"), 80),
        ("api.cast.ai:8443", Some(80), name("api.cast.ai"), 8443),
        ("10.0.0.1:80", None, v4("10.0.0.1"), 80),
        ("0x7f.1:22", None, v4("127.0.0.1"), 22),
        ("2130706433", Some(443), v4("127.0.0.1"), 443),
        ("[2001:db8::1]:443", None, v6("2001:db8::1"), 443),
        ("[::1]", Some(443), v6("::1"), 443),
        ("[::ffff:10.0.0.1]:443", None, v6("::ffff:a00:1"), 443),
        (
            "bücher.example:443",
            None,
            name("xn--bcher-kva.example"),
            443,
        ),
        ("a.com:1", None, name("a.com"), 1),
        ("a.com:65535", None, name("a.com"), 65535),
        ("a.com:0443", None, name("a.com"), 443),
    ];
    for (raw, default_port, host, port) in cases {
        let want = Target {
            host: host.clone(),
            port: *port,
        };
        assert_eq!(
            parse_authority(raw, *default_port),
            Ok(want),
            "input {raw:?}"
        );
    }
}

#[test]
fn parse_authority_rejects() {
    let cases: &[(&str, Option<u16>, &str)] = &[
        ("user@host:443", Some(443), "invalid_target"),
        ("user:pass@host:443", None, "invalid_target"),
        ("@host:443", None, "invalid_target"),
        ("a.com:443@evil.com:443", None, "invalid_target"),
        ("a.com: 443", None, "invalid_target"),
        (" a.com:443", None, "invalid_target"),
        ("a.com:443 ", None, "invalid_target"),
        ("a.com:443\r\n", None, "invalid_target"),
        ("a.com\t:443", None, "invalid_target"),
        ("a.com:443\0", None, "invalid_target"),
        (":443", None, "invalid_target"),
        ("", Some(443), "invalid_target"),
        ("[]:443", None, "invalid_target"),
        ("a.com", None, "invalid_target"),
        ("[::1]", None, "invalid_target"),
        ("a.com:", None, "invalid_target"),
        ("a.com:", Some(443), "invalid_target"),
        ("a.com:0", None, "invalid_target"),
        ("a.com:00", None, "invalid_target"),
        ("a.com:65536", None, "invalid_target"),
        ("a.com:99999999999", None, "invalid_target"),
        ("a.com:+443", None, "invalid_target"),
        ("a.com:-443", None, "invalid_target"),
        ("a.com:0x1bb", None, "invalid_target"),
        ("a.com:443a", None, "invalid_target"),
        ("a.com:443:443", None, "invalid_target"),
        ("a.com:４４３", None, "invalid_target"),
        ("::1:443", None, "invalid_target"),
        ("::1", Some(443), "invalid_target"),
        ("2001:db8::1:443", None, "invalid_target"),
        ("[::1:443", None, "invalid_target"),
        ("::1]:443", None, "invalid_target"),
        ("[::1]]:443", None, "invalid_target"),
        ("[[::1]]:443", None, "invalid_target"),
        ("[::1]443", None, "invalid_target"),
        ("[::1]:443]", None, "invalid_target"),
        ("a[b]:443", None, "invalid_target"),
        ("[a.com]:443", None, "invalid_target"),
        ("[fe80::1%25eth0]:443", None, "invalid_target"),
        ("a.com/path:443", None, "invalid_target"),
        ("a.com#:443", None, "invalid_target"),
        ("1.2.3.4.5:443", None, "invalid_host"),
        ("foo.123:443", None, "invalid_host"),
        ("xn--zz:443", None, "invalid_host"),
        ("a..com:443", None, "invalid_host"),
    ];
    for (raw, default_port, reason) in cases {
        let err = parse_authority(raw, *default_port).expect_err(raw);
        assert_eq!(err.reason().as_str(), *reason, "input {raw:?}: {err}");
    }
}

#[test]
fn parse_authority_error_messages() {
    let cases: &[(&str, &str)] = &[
        ("a.com:0", "port 0 is not a valid port in \"a.com:0\""),
        ("a.com", "port is required"),
        ("u@a.com:443", "userinfo"),
        ("::1:443", "brackets"),
        ("a.com:99999", "out of range"),
        ("a.com:443\n", "\"a.com:443\\n\""),
    ];
    for (raw, needle) in cases {
        let msg = parse_authority(raw, None).unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    assert_eq!(
        parse_authority("a.com:0", None),
        Err(TargetError::InvalidTarget(
            "port 0 is not a valid port in \"a.com:0\"".to_owned()
        ))
    );
}

#[test]
fn display_and_authority() {
    let cases: &[(Host, u16, &str, &str)] = &[
        (name("a.com"), 443, "a.com", "a.com:443"),
        (v4("10.0.0.1"), 80, "10.0.0.1", "10.0.0.1:80"),
        (v6("::1"), 443, "::1", "[::1]:443"),
        (v6("2001:db8::1"), 8080, "2001:db8::1", "[2001:db8::1]:8080"),
        (
            v6("::ffff:127.0.0.1"),
            443,
            "::ffff:127.0.0.1",
            "[::ffff:127.0.0.1]:443",
        ),
    ];
    for (host, port, display, authority) in cases {
        assert_eq!(host.to_string(), *display);
        let target = Target {
            host: host.clone(),
            port: *port,
        };
        assert_eq!(target.authority(), *authority);
        // What `authority` produces must parse back to the same target.
        assert_eq!(parse_authority(authority, None), Ok(target));
    }
}

#[test]
fn as_name() {
    assert_eq!(name("a.com").as_name(), Some("a.com"));
    assert_eq!(v4("1.2.3.4").as_name(), None);
    assert_eq!(v6("::1").as_name(), None);
}

#[test]
fn error_display_and_reason() {
    let t = TargetError::InvalidTarget("x".to_owned());
    let h = TargetError::InvalidHost("y".to_owned());
    assert_eq!(t.to_string(), "invalid target: x");
    assert_eq!(h.to_string(), "invalid host: y");
    assert_eq!(t.reason(), Reason::InvalidTarget);
    assert_eq!(h.reason(), Reason::InvalidHost);
}

#[test]
fn normalization_is_idempotent() {
    let inputs = [
        "Bücher.Example.",
        "0x7f.1",
        "[::FFFF:127.0.0.1]",
        "A_B.example",
        "１２７.0.0.1",
    ];
    for raw in inputs {
        let once = normalize_host(raw).unwrap();
        let again = match &once {
            Host::Ip(IpAddr::V6(ip)) => normalize_host(&format!("[{ip}]")),
            other => normalize_host(&other.to_string()),
        };
        assert_eq!(again, Ok(once), "input {raw:?}");
    }
}
