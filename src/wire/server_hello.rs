//! TLS 1.3 HelloRetryRequest, seen from the middle (pure; no I/O).
//!
//! A server that cannot use the key shares of the first ClientHello answers with a HelloRetryRequest, and the
//! client sends a second ClientHello, in clear like the first. The server serves the name of the second one,
//! so a tunnel judged on the first hello alone could be fronted: hello 1 names an allowed host, hello 2
//! another. The proxy therefore classifies the server's first handshake message after replaying hello 1,
//! and when it is a HelloRetryRequest it judges the client's next hello as well before forwarding it.
//!
//! RFC 8446 §4.1.3: a HelloRetryRequest is a ServerHello whose `random` is a fixed value.

/// RFC 8446 §4.1.3: SHA-256 of "HelloRetryRequest".
pub const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

const RECORD_HEADER_LEN: usize = 5;
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 0x14;
const CONTENT_HANDSHAKE: u8 = 0x16;
const CONTENT_APPLICATION_DATA: u8 = 0x17;
const HANDSHAKE_SERVER_HELLO: u8 = 2;
/// Handshake header (4), legacy_version (2), random (32): enough to tell a HelloRetryRequest.
const DECIDING_LEN: usize = 4 + 2 + 32;

/// What the server's first bytes say, as far as a retry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAnswer {
    /// Not enough bytes to tell yet.
    Incomplete,
    /// A HelloRetryRequest: the client's next ClientHello must be judged too.
    Retry,
    /// Anything else (a ServerHello, an alert, not TLS): no second hello can follow.
    Other,
}

/// Classifies the first bytes the upstream sent after the ClientHello. The handshake message may be split
/// across records; it is reassembled until the random is known.
pub fn server_answer(buf: &[u8]) -> ServerAnswer {
    let mut message = [0u8; DECIDING_LEN];
    let mut got = 0;
    let mut pos = 0;
    while got < DECIDING_LEN {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER_LEN) else {
            // A partial header already says whether a handshake record follows.
            return match buf.get(pos) {
                Some(&t) if t != CONTENT_HANDSHAKE => ServerAnswer::Other,
                _ => ServerAnswer::Incomplete,
            };
        };
        if header[0] != CONTENT_HANDSHAKE {
            return ServerAnswer::Other;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let start = pos + RECORD_HEADER_LEN;
        let available = buf
            .get(start..(start + len).min(buf.len()))
            .unwrap_or_default();
        for (slot, &b) in message.iter_mut().skip(got).zip(available) {
            *slot = b;
        }
        let before = got;
        got = (got + available.len()).min(DECIDING_LEN);
        if before == 0 && got > 0 && message[0] != HANDSHAKE_SERVER_HELLO {
            return ServerAnswer::Other;
        }
        if available.len() < len {
            break;
        }
        pos = start + len;
    }
    if got < DECIDING_LEN {
        return ServerAnswer::Incomplete;
    }
    if message[6..] == HRR_RANDOM {
        ServerAnswer::Retry
    } else {
        ServerAnswer::Other
    }
}

/// Length of the records a client may send between its two hellos without them being a hello: the
/// middlebox-compatibility ChangeCipherSpec and early data (rejected by a server that asks for a retry).
/// `None`: a skippable record is not complete yet, or nothing follows it yet.
pub fn interlude_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let &content = buf.get(pos)?;
        if content != CONTENT_CHANGE_CIPHER_SPEC && content != CONTENT_APPLICATION_DATA {
            return Some(pos);
        }
        let header = buf.get(pos..pos + RECORD_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if buf.len() < pos + RECORD_HEADER_LEN + len {
            return None;
        }
        pos += RECORD_HEADER_LEN + len;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A HelloRetryRequest (or, with another random, a ServerHello) record, as a TLS 1.3 server sends it.
    pub(crate) fn server_hello(random: [u8; 32]) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&random);
        body.push(0); // legacy_session_id_echo
        body.extend_from_slice(&[0x13, 0x01, 0x00]); // cipher suite, compression
                                                     // supported_versions = TLS 1.3, key_share = x25519
        body.extend_from_slice(&[0x00, 0x0c, 0x00, 0x2b, 0x00, 0x02, 0x03, 0x04]);
        body.extend_from_slice(&[0x00, 0x33, 0x00, 0x02, 0x00, 0x1d]);
        let mut msg = vec![HANDSHAKE_SERVER_HELLO, 0, 0, body.len() as u8];
        msg.extend_from_slice(&body);
        let mut rec = vec![CONTENT_HANDSHAKE, 0x03, 0x03, 0, msg.len() as u8];
        rec.extend_from_slice(&msg);
        rec
    }

    /// The same handshake message re-framed in records of at most `size` payload bytes.
    fn reframe(record: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in record[RECORD_HEADER_LEN..].chunks(size) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 0x03, 0x03, 0, chunk.len() as u8]);
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn a_retry_is_told_from_a_server_hello_at_the_deciding_byte() {
        let hrr = server_hello(HRR_RANDOM);
        let sh = server_hello([7; 32]);
        assert_eq!(server_answer(&hrr), ServerAnswer::Retry);
        assert_eq!(server_answer(&sh), ServerAnswer::Other);
        // Every prefix that ends before the random's last byte is undecided.
        for n in 0..RECORD_HEADER_LEN + DECIDING_LEN {
            assert_eq!(server_answer(&hrr[..n]), ServerAnswer::Incomplete, "{n}");
        }
        // Split across records, even one byte a record.
        for size in [1, 3, 10, 37] {
            assert_eq!(server_answer(&reframe(&hrr, size)), ServerAnswer::Retry);
            assert_eq!(server_answer(&reframe(&sh, size)), ServerAnswer::Other);
        }
    }

    #[test]
    fn anything_else_is_not_a_retry() {
        // An alert, a TLS 1.2 server speaking first with another handshake message, plain text.
        assert_eq!(
            server_answer(&[0x15, 3, 3, 0, 2, 2, 40]),
            ServerAnswer::Other
        );
        assert_eq!(server_answer(&[0x16, 3, 3, 0, 4, 11]), ServerAnswer::Other);
        assert_eq!(server_answer(b"HTTP/1.1 400"), ServerAnswer::Other);
        assert_eq!(server_answer(&[0x15]), ServerAnswer::Other);
        assert_eq!(server_answer(&[]), ServerAnswer::Incomplete);
        // An alert record inside the reassembly.
        let hrr = reframe(&server_hello(HRR_RANDOM), 10);
        let mut cut = hrr[..15].to_vec();
        cut.extend_from_slice(&[0x15, 3, 3, 0, 2, 2, 40]);
        assert_eq!(server_answer(&cut), ServerAnswer::Other);
    }

    #[test]
    fn the_interlude_skips_change_cipher_spec_and_early_data_only() {
        let ccs = [0x14, 3, 3, 0, 1, 1];
        let early = [0x17, 3, 3, 0, 3, 9, 9, 9];
        let hello = [0x16, 3, 1, 0, 9];
        let mut buf = ccs.to_vec();
        buf.extend_from_slice(&early);
        assert_eq!(interlude_len(&buf), None, "nothing follows yet");
        buf.extend_from_slice(&hello);
        assert_eq!(interlude_len(&buf), Some(ccs.len() + early.len()));
        assert_eq!(interlude_len(&hello), Some(0));
        assert_eq!(interlude_len(&ccs[..4]), None);
        assert_eq!(interlude_len(&[]), None);
        // Garbage is not skipped: the hello parser refuses it.
        assert_eq!(interlude_len(b"GET /"), Some(0));
    }
}
