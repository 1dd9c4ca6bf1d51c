//! ClientHellos captured from real clients connecting to a loopback listener
//! (see tests/data/clienthello/capture.py).

use egressd::wire::client_hello::{peek_client_hello, HelloInfo, Peek};

const CURL: &[u8] = include_bytes!("data/clienthello/curl.bin");
const OPENSSL: &[u8] = include_bytes!("data/clienthello/openssl.bin");
const OPENSSL_NOSNI: &[u8] = include_bytes!("data/clienthello/openssl-nosni.bin");
const PYTHON: &[u8] = include_bytes!("data/clienthello/python.bin");

const TLS13: u16 = 0x0304;
const TLS12: u16 = 0x0303;

fn complete(buf: &[u8]) -> HelloInfo {
    match peek_client_hello(buf) {
        Peek::Complete(info) => info,
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn assert_prefixes_incomplete(buf: &[u8]) {
    for end in 0..buf.len() {
        assert_eq!(
            peek_client_hello(&buf[..end]),
            Peek::Incomplete,
            "prefix of {end}/{} bytes",
            buf.len()
        );
    }
}

/// The handshake message carried by a capture's records.
fn handshake_message(buf: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    let mut rest = buf;
    while let [_, _, _, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        message.extend_from_slice(&tail[..len]);
        rest = &tail[len..];
    }
    message
}

/// Re-frames a handshake message into records of at most `size` bytes.
fn reframe(message: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Properties every capture must have besides its own expectations.
fn check_capture(buf: &[u8]) -> HelloInfo {
    let info = complete(buf);
    assert_eq!(info.hello_len, buf.len());
    assert_eq!(info.legacy_version, TLS12);
    assert!(!info.ech);
    assert_prefixes_incomplete(buf);

    let message = handshake_message(buf);
    for size in [1, 3, 64, 200] {
        let split = reframe(&message, size);
        let again = complete(&split);
        assert_eq!(again.records, message.len().div_ceil(size));
        assert_eq!(again.hello_len, split.len());
        assert_eq!(
            (&again.sni, &again.alpn, &again.supported_versions),
            (&info.sni, &info.alpn, &info.supported_versions)
        );
    }
    info
}

#[test]
fn curl() {
    let info = check_capture(CURL);
    assert_eq!(info.sni.as_deref(), Some("api.cast.ai"));
    assert_eq!(info.alpn, ["h2", "http/1.1"]);
    assert_eq!(info.records, 1);
    assert!(info.supported_versions.contains(&TLS13));
}

#[test]
fn openssl_s_client() {
    let info = check_capture(OPENSSL);
    assert_eq!(info.sni.as_deref(), Some("grpc.cast.ai"));
    assert!(info.alpn.is_empty());
    assert!(info.supported_versions.contains(&TLS13));
}

#[test]
fn openssl_s_client_without_sni() {
    let info = check_capture(OPENSSL_NOSNI);
    assert_eq!(info.sni, None);
    assert!(info.supported_versions.contains(&TLS13));
}

#[test]
fn python_ssl() {
    let info = check_capture(PYTHON);
    assert_eq!(info.sni.as_deref(), Some("python.cast.ai"));
    assert!(info.supported_versions.contains(&TLS13));
}

#[test]
fn capture_followed_by_other_bytes() {
    let mut buf = CURL.to_vec();
    buf.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
    assert_eq!(complete(&buf).hello_len, CURL.len());
}

#[test]
fn capture_with_sni_byte_corrupted() {
    let at = CURL
        .windows(b"api.cast.ai".len())
        .position(|w| w == b"api.cast.ai")
        .unwrap();
    let mut buf = CURL.to_vec();
    buf[at + 3] = b' ';
    assert_eq!(
        peek_client_hello(&buf),
        Peek::Invalid("SNI contains non-ASCII or control bytes")
    );
}
