use super::*;

const N: &str = "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, \
    192.168.1.3:80, 10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, \
    [2001:db8::52:0:3]:80, 2002:db8:a::45/64";

/// Every vector of NO_PROXY.md. Go and curl columns are the document's table (URL `http://host/`, port 80).
/// Python columns were derived from the urllib and requests sources and checked against CPython 3.11.7 and
/// requests 2.34.2, for the URL without a port (`http://host/`) and with it written (`http://host:80/`),
/// because urllib compares `host[:port]` as written.
/// (n, NO_PROXY, host, go, curl, urllib, urllib :80, requests, requests :80); true = direct.
#[allow(clippy::type_complexity)]
const VECTORS: &[(u32, &str, &str, bool, bool, bool, bool, bool, bool)] = &[
    (1, N, "localhost", true, false, false, false, false, false),
    (2, N, "127.0.0.2", true, false, false, false, false, false),
    (3, N, "[::1]", true, false, false, false, false, false),
    (4, N, "[::2]", false, false, false, false, false, false),
    (5, N, "192.168.1.1", true, true, true, true, true, true),
    (
        6,
        N,
        "192.168.1.2",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
    (7, N, "192.168.1.3", true, false, false, true, false, false),
    (8, N, "10.0.0.2", true, true, false, false, true, true),
    (
        9,
        N,
        "[2001:db8::52:0:1]",
        true,
        true,
        false,
        false,
        true,
        true,
    ),
    (
        10,
        N,
        "[2001:db8::52:0:3]",
        true,
        false,
        false,
        true,
        false,
        false,
    ),
    (
        11,
        N,
        "[2002:db8:a::123]",
        true,
        true,
        false,
        false,
        false,
        false,
    ),
    (12, N, "barbaz.net", false, true, true, true, true, true),
    (13, N, "www.barbaz.net", true, true, true, true, true, true),
    (14, N, "www.foobar.com", true, true, true, true, true, true),
    (
        15,
        N,
        "foofoobar.com",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
    (
        16,
        N,
        "nested.wildcard.io",
        true,
        false,
        false,
        false,
        false,
        false,
    ),
    (
        17,
        N,
        "wildcard.io",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
    (18, "*", "example.org", true, true, true, true, true, true),
    (18, "*", "10.1.2.3", true, true, true, true, true, true),
    (18, "*", "[2001:db8::1]", true, true, true, true, true, true),
    (
        19,
        ".example.com",
        "example.com",
        false,
        true,
        true,
        true,
        true,
        true,
    ),
    (
        20,
        "ample.com",
        "example.com",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
    (
        21,
        "localhost,.example.com,.example.de",
        "example.com",
        false,
        true,
        true,
        true,
        true,
        true,
    ),
    (
        22,
        "localhost,www.example.com.,.example.de",
        "www.example.com",
        false,
        true,
        false,
        false,
        false,
        false,
    ),
    (
        23,
        "localhost,.example.com,.example.de",
        "www.example.com.",
        false,
        true,
        false,
        false,
        false,
        false,
    ),
    (
        24,
        "localhost .example.com .example.de",
        "www.example.com",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
    (
        25,
        "192.168.0.0/16a",
        "192.168.0.1",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
    (
        26,
        "192.168.0.0/16 ",
        "192.168.0.1",
        true,
        true,
        false,
        false,
        true,
        true,
    ),
    (
        27,
        "foo,,,,,   bar, ::1/64",
        "BAr",
        true,
        true,
        true,
        true,
        true,
        true,
    ),
    (
        28,
        "2001:db8::/65",
        "[2001:db8::1]",
        true,
        true,
        false,
        false,
        false,
        false,
    ),
    (
        29,
        "2001:db8::/65",
        "[2001:db8:8000::1]",
        false,
        false,
        false,
        false,
        false,
        false,
    ),
];

#[test]
fn every_vector_per_client() {
    for &(n, np, host, go, curl, ul, ul80, rq, rq80) in VECTORS {
        let plain = Url::parse(&format!("http://{host}/")).unwrap();
        let written = Url::parse(&format!("http://{host}:80/")).unwrap();
        let got = [
            (route(Client::Go, Some(np), &plain).direct, go, "go"),
            (route(Client::Go, Some(np), &written).direct, go, "go :80"),
            (route(Client::Curl, Some(np), &plain).direct, curl, "curl"),
            (
                route(Client::Curl, Some(np), &written).direct,
                curl,
                "curl :80",
            ),
            (route(Client::Urllib, Some(np), &plain).direct, ul, "urllib"),
            (
                route(Client::Urllib, Some(np), &written).direct,
                ul80,
                "urllib :80",
            ),
            (
                route(Client::Requests, Some(np), &plain).direct,
                rq,
                "requests",
            ),
            (
                route(Client::Requests, Some(np), &written).direct,
                rq80,
                "requests :80",
            ),
        ];
        for (got, want, client) in got {
            assert_eq!(
                got, want,
                "vector {n} {client}: NO_PROXY={np:?} host={host:?}"
            );
        }
    }
}

#[test]
fn deciding_entry_is_reported() {
    let u = Url::parse("http://nested.barbaz.net/").unwrap();
    assert_eq!(
        route(Client::Go, Some(N), &u).because.as_deref(),
        Some("entry \".barbaz.net\"")
    );
    assert_eq!(
        route(Client::Curl, Some(N), &u).because.as_deref(),
        Some("entry \".barbaz.net\"")
    );
    let u = Url::parse("http://localhost/").unwrap();
    assert!(route(Client::Go, None, &u)
        .because
        .unwrap()
        .contains("built-in"));
    assert_eq!(route(Client::Curl, None, &u), Route::proxy());
    assert_eq!(route(Client::Urllib, None, &u), Route::proxy());
    let u = Url::parse("http://10.0.0.1/").unwrap();
    assert!(route(Client::Requests, Some("10.0.0.0/8"), &u)
        .because
        .unwrap()
        .contains("CIDR"));
}

#[test]
fn curl_details() {
    let cases: &[(&str, &str, bool)] = &[
        // `*` only as the whole value.
        ("*,foo", "http://example.com/", false),
        ("foo,*", "http://example.com/", false),
        // Ports are not parsed: the token never equals a host.
        ("example.com:443", "https://example.com/", false),
        // Case-insensitive, trailing dots on both sides ignored.
        ("EXAMPLE.com.", "http://www.example.COM./", true),
        // IPv4 CIDR, host bits allowed; IPv4 entries never match names.
        ("10.1.2.3/8", "http://10.9.9.9/", true),
        ("10.0.0.0/8", "http://10.0.0.1.example/", false),
        // Blank-separated: only the first entry counts.
        ("a.example b.example", "http://b.example/", false),
        ("a.example b.example", "http://a.example/", true),
        // Blank then comma continues.
        ("a.example , b.example", "http://b.example/", true),
        ("10.0.0.0/40", "http://10.0.0.1/", false),
        // `/0` is the address alone, not every address.
        ("10.0.0.1/0", "http://10.0.0.1/", true),
        ("10.0.0.0/0", "http://10.0.0.1/", false),
        // IPv6 CIDR; an entry of the other family never matches.
        ("2001:db8::/32", "http://[2001:db8:ffff::1]/", true),
        ("2001:db8::/129", "http://[2001:db8::1]/", false),
        ("::ffff:10.0.0.1", "http://10.0.0.1/", false),
        ("10.0.0.1", "http://[::ffff:10.0.0.1]/", false),
    ];
    for bad in ["not a url", "http://a b/", "http://a<b>/", "http://:80/"] {
        assert!(Url::parse(bad).is_err(), "{bad:?} parsed");
    }
    assert!(Url::parse("http://bücher.example/").is_ok());
    for &(np, url, want) in cases {
        assert_eq!(
            route(Client::Curl, Some(np), &Url::parse(url).unwrap()).direct,
            want,
            "{np:?} {url}"
        );
    }
}

#[test]
fn python_details() {
    // urllib: no CIDR; compares host[:port] as written, so brackets matter for IPv6.
    let u = Url::parse("http://[::1]:8080/").unwrap();
    assert!(route(Client::Urllib, Some("[::1]"), &u).direct);
    assert!(!route(Client::Urllib, Some("::1"), &u).direct);
    // requests matches ::1 on the bare hostname.
    assert!(route(Client::Requests, Some("::1"), &u).direct);
    assert!(
        !route(
            Client::Urllib,
            Some("10.0.0.0/8"),
            &Url::parse("http://10.0.0.1/").unwrap()
        )
        .direct
    );
    // An unset NO_PROXY is not the same as "*" or an empty list.
    assert!(!route(Client::Urllib, None, &Url::parse("http://a/").unwrap()).direct);
    // Case-insensitive on both sides.
    assert!(
        route(
            Client::Urllib,
            Some("Example.COM"),
            &Url::parse("http://WWW.example.com/").unwrap()
        )
        .direct
    );
    // *.x is dead in urllib.
    assert!(
        !route(
            Client::Urllib,
            Some("*.example.com"),
            &Url::parse("http://a.example.com/").unwrap()
        )
        .direct
    );
}

#[test]
fn url_parsing() {
    let u = Url::parse("https://[2001:db8::1]:8443/x").unwrap();
    assert_eq!(u.host, "[2001:db8::1]");
    assert_eq!(u.port(), 8443);
    assert_eq!(u.hostname(), "2001:db8::1");
    let u = Url::parse("api.cast.ai").unwrap();
    assert_eq!((u.scheme.as_str(), u.port()), ("https", 443));
    let u = Url::parse("http://user@Host.example/").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port(), u.netloc()),
        ("Host.example", 80, "Host.example".to_string())
    );
    assert!(Url::parse("ftp://x/").is_err());
    assert!(Url::parse("http://x:99999/").is_err());
    assert!(Url::parse("http://[::1/").is_err());
    assert_eq!(Client::parse_set("python").unwrap().len(), 2);
    assert!(Client::parse_set("java").is_err());
}
