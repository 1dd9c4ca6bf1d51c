//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which replays every corpus
//! file through them. Each function feeds arbitrary bytes to one parser of untrusted input and panics if
//! the parser panics or its result is inconsistent (a normalized target that does not re-normalize to
//! itself, a ClientHello whose SNI is not a plain name, ...). They are not part of the proxy's API.

use crate::reason::Reason;
use crate::target::{self, Host, Target};
use crate::wire::client_hello::{self as sni, Peek};
use crate::wire::request_head::{self as head, Request};

/// The first request head on a client connection ([`head::classify`]), then the CONNECT authority.
pub fn request_head(data: &[u8]) {
    match head::classify(data) {
        Ok(Some(Request::Connect {
            authority,
            head_len,
            proxy_auth,
        })) => {
            assert!(head_len <= data.len(), "head_len past the input");
            // The head alone classifies the same: bytes after it are tunnel data, never part of the request.
            assert_eq!(
                head::classify(&data[..head_len]),
                Ok(Some(Request::Connect {
                    authority: authority.clone(),
                    head_len,
                    proxy_auth,
                })),
                "the head without its trailing bytes classifies differently"
            );
            if let Ok(t) = target::parse_authority(&authority, None) {
                check_target(&t);
            }
        }
        Ok(Some(Request::Forward)) | Ok(None) => {}
        Err(e) => assert!(
            matches!(
                e.refusal.reason,
                Reason::BadRequest
                    | Reason::UnsupportedVersion
                    | Reason::HeaderTooLarge
                    | Reason::InvalidTarget
                    | Reason::NotProxyRequest
                    | Reason::UnsupportedScheme
            ),
            "unexpected reason {:?} for a request head",
            e.refusal.reason
        ),
    }
}

/// Target normalization: an authority with and without a default port, and a bare host.
pub fn normalize_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for default_port in [None, Some(80)] {
        if let Ok(t) = target::parse_authority(text, default_port) {
            check_target(&t);
        }
    }
    if let Ok(host) = target::normalize_host(text) {
        let t = Target { host, port: 443 };
        check_target(&t);
    }
}

/// What every normalized target must satisfy: a valid port, a canonical name, and a fixed point —
/// normalizing its own printed form gives the same target back.
fn check_target(t: &Target) {
    assert_ne!(t.port, 0, "port 0 accepted");
    if let Host::Name(name) = &t.host {
        assert!(!name.is_empty(), "empty name accepted");
        assert!(name.len() <= 253, "name longer than 253 bytes: {name:?}");
        assert!(!name.ends_with('.'), "trailing dot kept: {name:?}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()),
            "name not lowercase printable ASCII: {name:?}"
        );
        assert!(
            name.split('.').all(|l| !l.is_empty() && l.len() <= 63),
            "empty or over-long label: {name:?}"
        );
    }
    let again = target::parse_authority(&t.authority(), None);
    assert_eq!(
        again.as_ref(),
        Ok(t),
        "{} does not re-normalize to itself",
        t.authority()
    );
    assert_eq!(
        target::normalize_host(&t.host_for_header()).as_ref(),
        Ok(&t.host),
        "host {} does not re-normalize to itself",
        t.host_for_header()
    );
}

/// The ClientHello peek on the first bytes of a tunnel.
pub fn client_hello(data: &[u8]) {
    let Peek::Complete(info) = sni::peek_client_hello(data) else {
        return;
    };
    assert!(info.hello_len <= data.len(), "hello_len past the input");
    assert!(info.records >= 1, "a hello in zero records");
    if let Some(sni) = &info.sni {
        assert!(
            !sni.is_empty() && sni.bytes().all(|b| b.is_ascii_graphic()),
            "SNI with empty, control, space or non-ASCII bytes: {sni:?}"
        );
    }
    // The records that carry the hello decide alone; one byte less is a valid prefix that needs more.
    assert_eq!(
        sni::peek_client_hello(&data[..info.hello_len]),
        Peek::Complete(info.clone()),
        "the hello's own records parse differently"
    );
    assert_eq!(
        sni::peek_client_hello(&data[..info.hello_len - 1]),
        Peek::Incomplete,
        "a strict prefix of a complete hello is not incomplete"
    );
}

/// The stream of requests on a kept-alive connection ([`crate::wire::request_stream::HeadWatch`]): however the
/// bytes are split into reads, the verdicts are the same.
pub fn request_stream(data: &[u8]) {
    use crate::wire::request_stream::HeadWatch;
    let verdicts = |chunk: usize| {
        let mut w = HeadWatch::new(4096);
        for part in data.chunks(chunk.max(1)) {
            w.feed(part);
        }
        std::iter::from_fn(move || w.take()).collect::<Vec<_>>()
    };
    let whole = verdicts(data.len());
    for chunk in [1, 2, 7] {
        assert_eq!(verdicts(chunk), whole, "split into {chunk}-byte reads");
    }
    // After a refusal nothing more is judged.
    if let Some(i) = whole.iter().position(Result::is_err) {
        assert_eq!(i + 1, whole.len(), "a verdict after a refused head");
    }
}

/// The server's first bytes after a ClientHello ([`crate::wire::server_hello`]): a decision never changes as more
/// bytes arrive, and the interlude before a second hello never reaches past the input.
pub fn server_answer(data: &[u8]) {
    use crate::wire::server_hello::{interlude_len, server_answer, ServerAnswer};
    let mut decided = None;
    for end in 0..=data.len() {
        let a = server_answer(&data[..end]);
        match decided {
            None if a != ServerAnswer::Incomplete => decided = Some(a),
            None => {}
            Some(d) => assert_eq!(a, d, "the answer changed at {end} bytes"),
        }
    }
    if let Some(n) = interlude_len(data) {
        assert!(n <= data.len(), "interlude past the input");
    }
}

/// NO_PROXY parsing: every usable entry prints in a form that parses back to the same entry; matching hosts,
/// the curl and Python readings and the lint do not panic.
pub fn no_proxy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let list = crate::noproxy::parse(text);
    for entry in &list.entries {
        let printed = entry.to_string();
        let back = crate::noproxy::parse(&printed);
        assert_eq!(
            back.entries.as_slice(),
            std::slice::from_ref(entry),
            "entry {printed:?} does not parse back to itself"
        );
    }
    for host in [
        "localhost",
        "a.example",
        "10.1.2.3",
        "[::1]",
        "b.svc.cluster.local.",
    ] {
        let _ = list.go_match(host, 443);
    }
    // The other clients' readings and the lint, as `egressd noproxy` runs them on a user's value; the input
    // is also tried as a URL against a fixed list.
    use crate::noproxy::Client;
    let clients = [Client::Go, Client::Curl, Client::Urllib, Client::Requests];
    let urls = ["http://a.example/", "https://[::1]:8443/", "10.1.2.3:443"].map(String::from);
    let _ = crate::noproxy::explain(text, &clients, &urls);
    let _ = crate::noproxy::explain(
        "localhost,.example,10.0.0.0/8",
        &clients,
        &[text.to_string()],
    );
    let _ = crate::noproxy::lint(text, None, None);
}

/// Config compilation from YAML (no environment overrides).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = crate::config::from_yaml_str(text) {
        assert!(!errors.0.is_empty(), "a config error without any message");
    }
}

/// A PROXY protocol header: the verdict never changes once decided as bytes arrive (so reading it while it
/// arrives is the same as reading it whole), and a complete header never ends past the bytes read.
pub fn proxy_header(data: &[u8]) {
    use crate::wire::proxy_header::{parse, Header};
    let mut decided: Option<Header> = None;
    for end in 0..=data.len() {
        let h = parse(&data[..end]);
        if let Header::Complete { len, .. } = &h {
            assert!(*len <= end, "a header that ends past the input");
        }
        match &decided {
            None if h != Header::Incomplete && end > 0 => decided = Some(h),
            None => {}
            Some(d) => assert_eq!(&h, d, "the verdict changed at {end} bytes"),
        }
    }
}
