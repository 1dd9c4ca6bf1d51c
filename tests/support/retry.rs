//! TLS 1.3 HelloRetryRequest by hand: crafted ClientHellos, a raw TCP origin that answers the first hello with
//! a canned HelloRetryRequest and records the server name of every hello it receives, and a blocking client
//! that answers the retry with a second hello of its choice.

use egressd::wire::client_hello::{peek_client_hello, Peek};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// RFC 8446 §4.1.3: the `random` of a HelloRetryRequest.
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// The middlebox-compatibility ChangeCipherSpec record.
pub const CCS: [u8; 6] = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];

fn u16be(v: usize) -> [u8; 2] {
    (v as u16).to_be_bytes()
}

fn ext(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&u16be(data.len()));
    out.extend_from_slice(data);
}

/// A TLS 1.3 ClientHello record naming `sni` (none if `None`), with `extra` extensions appended.
pub fn client_hello(sni: Option<&str>, extra: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let mut list = vec![0u8];
        list.extend_from_slice(&u16be(name.len()));
        list.extend_from_slice(name.as_bytes());
        let mut data = u16be(list.len()).to_vec();
        data.extend_from_slice(&list);
        ext(&mut exts, 0, &data);
    }
    ext(&mut exts, 43, &[2, 0x03, 0x04]); // supported_versions: TLS 1.3
    ext(&mut exts, 10, &[0, 2, 0x00, 0x1d]); // supported_groups: x25519
    ext(&mut exts, 13, &[0, 2, 0x08, 0x04]); // signature_algorithms
    let mut share = vec![0x00, 0x1d, 0x00, 0x20];
    share.extend_from_slice(&[0x42; 32]);
    let mut ks = u16be(share.len()).to_vec();
    ks.extend_from_slice(&share);
    ext(&mut exts, 51, &ks); // key_share
    for (ty, data) in extra {
        ext(&mut exts, *ty, data);
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x22; 32]); // legacy_session_id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&u16be(exts.len()));
    body.extend_from_slice(&exts);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&u16be(body.len()));
    msg.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16be(msg.len()));
    rec.extend_from_slice(&msg);
    rec
}

/// A HelloRetryRequest record (TLS 1.3, asking for an x25519 share), then a ChangeCipherSpec.
pub fn hello_retry_request() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&HRR_RANDOM);
    body.push(32);
    body.extend_from_slice(&[0x22; 32]);
    body.extend_from_slice(&[0x13, 0x01, 0x00]);
    let mut exts = Vec::new();
    ext(&mut exts, 43, &[0x03, 0x04]);
    ext(&mut exts, 51, &[0x00, 0x1d]);
    body.extend_from_slice(&u16be(exts.len()));
    body.extend_from_slice(&exts);
    let mut msg = vec![2, 0];
    msg.extend_from_slice(&u16be(body.len()));
    msg.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x03];
    rec.extend_from_slice(&u16be(msg.len()));
    rec.extend_from_slice(&msg);
    rec.extend_from_slice(&CCS);
    rec
}

/// What the origin answers once it has the second hello.
pub const SERVED: &[u8] = b"served after retry";

pub struct RetryOrigin {
    pub addr: SocketAddr,
    /// The server name of every ClientHello received, in order, over all connections.
    pub seen: Arc<Mutex<Vec<Option<String>>>>,
}

/// Reads one ClientHello (after a ChangeCipherSpec, if one leads), or `None` if the peer leaves first.
async fn read_hello(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Option<String>> {
    let mut chunk = [0u8; 4096];
    loop {
        let start = if buf.starts_with(&CCS) { CCS.len() } else { 0 };
        if let Peek::Complete(info) = peek_client_hello(&buf[start..]) {
            buf.drain(..start + info.hello_len);
            return Some(info.sni);
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw TCP origin that answers every first ClientHello with a HelloRetryRequest and the second one with
/// [`SERVED`], recording both hellos' server names.
pub async fn retry_origin_at(bind: SocketAddr) -> RetryOrigin {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let Some(first) = read_hello(&mut s, &mut buf).await else {
                    return;
                };
                log.lock().unwrap().push(first);
                if s.write_all(&hello_retry_request()).await.is_err() {
                    return;
                }
                if let Some(second) = read_hello(&mut s, &mut buf).await {
                    log.lock().unwrap().push(second);
                    let _ = s.write_all(SERVED).await;
                }
            });
        }
    });
    RetryOrigin { addr, seen }
}

/// Over an open connection (a CONNECT tunnel or a redirected connection): send a hello naming `first`, read
/// the HelloRetryRequest, answer with a ChangeCipherSpec and a hello naming `second` (with `extra`
/// extensions), and return everything the server sent afterwards until it closed. `Err` if no retry came.
pub fn retry_exchange(
    s: &mut std::net::TcpStream,
    first: &str,
    second: Option<&str>,
    extra: &[(u16, Vec<u8>)],
) -> std::io::Result<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&client_hello(Some(first), &[]))?;
    let mut hrr = vec![0u8; hello_retry_request().len()];
    s.read_exact(&mut hrr)?;
    assert_eq!(
        hrr,
        hello_retry_request(),
        "the retry reached the client whole"
    );
    let mut second_flight = CCS.to_vec();
    second_flight.extend_from_slice(&client_hello(second, extra));
    s.write_all(&second_flight)?;
    let mut rest = Vec::new();
    // A reset (the proxy refusing) ends the read like a close.
    let _ = s.read_to_end(&mut rest);
    Ok(rest)
}

/// A blocking client connection through the proxy's CONNECT to `authority`.
pub fn connect_blocking(proxy: SocketAddr, authority: &str) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}
