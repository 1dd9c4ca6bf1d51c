//! The PROXY protocol header a load balancer sends before the client's bytes (HAProxy's specification,
//! versions 1 and 2): where it ends and which client it names. Pure: the bytes in, the verdict out; parsing
//! is the `ppp` crate's, framing (how many bytes are the header, so that not one byte of the request is taken
//! with it) is decided here.

use std::net::SocketAddr;

/// The signature that starts a version 2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The largest version 1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The largest version 2 header accepted (16 fixed bytes plus addresses and TLVs). Balancers send a few
/// hundred bytes at most; the format would allow 64 KiB.
pub const V2_MAX: usize = 4096;

/// What the first bytes of a connection say about a PROXY header.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A whole header of `len` bytes. `client`: the address it carries; `None` when it carries none to use
    /// (v2 `LOCAL`, a balancer's own health check; v1 `UNKNOWN`; an unsupported family): the connection's own
    /// peer is the client then.
    Complete {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// The start of a header: more bytes are needed.
    Incomplete,
    /// Not a PROXY header.
    Absent,
    /// A PROXY header that cannot be used: why.
    Invalid(String),
}

/// Read the header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Header {
    if starts_like(bytes, b"PROXY ") {
        v1(bytes)
    } else if starts_like(bytes, V2_SIGNATURE) {
        v2(bytes)
    } else {
        Header::Absent
    }
}

/// Do the first bytes look like a PROXY header (of either version)? For refusing one from a peer that may
/// not send it.
pub fn looks_like_one(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PROXY ") || bytes.starts_with(V2_SIGNATURE)
}

/// `bytes` starts with `prefix`, or is a (non-empty) start of it.
fn starts_like(bytes: &[u8], prefix: &[u8]) -> bool {
    let n = bytes.len().min(prefix.len());
    n > 0 && bytes[..n] == prefix[..n]
}

fn v1(bytes: &[u8]) -> Header {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Header::Invalid(format!(
                "a version 1 PROXY header without its CRLF in the first {V1_MAX} bytes"
            ))
        } else {
            Header::Incomplete
        };
    };
    let len = end + 2;
    match ppp::v1::Header::try_from(&bytes[..len]) {
        Ok(h) => Header::Complete {
            len,
            client: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(e) => Header::Invalid(format!("a malformed version 1 PROXY header: {e}")),
    }
}

fn v2(bytes: &[u8]) -> Header {
    if bytes.len() < 16 {
        return Header::Incomplete;
    }
    let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > V2_MAX {
        return Header::Invalid(format!(
            "a version 2 PROXY header of {len} bytes; at most {V2_MAX} are accepted"
        ));
    }
    if bytes.len() < len {
        return Header::Incomplete;
    }
    match ppp::v2::Header::try_from(&bytes[..len]) {
        Ok(h) => Header::Complete {
            len,
            client: match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => Some((a.source_address, a.source_port).into()),
                (_, ppp::v2::Addresses::IPv6(a)) => Some((a.source_address, a.source_port).into()),
                _ => None,
            },
        },
        Err(e) => Header::Invalid(format!("a malformed version 2 PROXY header: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn version_1_names_the_client_and_ends_at_its_crlf() {
        let bytes = b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 3128\r\nCONNECT x:443 HTTP/1.1\r\n";
        assert_eq!(
            parse(bytes),
            Header::Complete {
                len: 40,
                client: Some("10.1.2.3:5555".parse().unwrap())
            }
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 4444 3128\r\n";
        assert_eq!(
            parse(six),
            Header::Complete {
                len: six.len(),
                client: Some("[2001:db8::7]:4444".parse().unwrap())
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nGET"),
            Header::Complete {
                len: 15,
                client: None
            }
        );
        assert_eq!(parse(b"PROXY TCP4 10.1.2.3"), Header::Incomplete);
        assert_eq!(parse(b"PRO"), Header::Incomplete);
        assert!(matches!(
            parse(b"PROXY TCP4 nonsense\r\n"),
            Header::Invalid(_)
        ));
        assert!(matches!(parse(&[b'P'; 200]), Header::Absent));
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend([b'1'; 120]);
        assert!(matches!(parse(&long), Header::Invalid(e) if e.contains("107")));
    }

    #[test]
    fn version_2_proxy_local_and_bounds() {
        let mut four = vec![10, 1, 2, 3, 10, 0, 0, 1];
        four.extend(5555u16.to_be_bytes());
        four.extend(3128u16.to_be_bytes());
        let h = v2_header(1, 0x11, &four);
        let mut with_request = h.clone();
        with_request.extend_from_slice(b"CONNECT");
        assert_eq!(
            parse(&with_request),
            Header::Complete {
                len: h.len(),
                client: Some("10.1.2.3:5555".parse().unwrap())
            }
        );
        let mut six = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        six.extend(
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        six.extend(4444u16.to_be_bytes());
        six.extend(3128u16.to_be_bytes());
        assert_eq!(
            parse(&v2_header(1, 0x21, &six)),
            Header::Complete {
                len: 16 + 36,
                client: Some("[2001:db8::7]:4444".parse().unwrap())
            }
        );
        // LOCAL: the balancer speaking for itself.
        assert_eq!(
            parse(&v2_header(0, 0x00, &[])),
            Header::Complete {
                len: 16,
                client: None
            }
        );
        assert_eq!(parse(&h[..10]), Header::Incomplete);
        assert_eq!(parse(&h[..20]), Header::Incomplete);
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11]);
        huge.extend(5000u16.to_be_bytes());
        assert!(matches!(parse(&huge), Header::Invalid(e) if e.contains("5016")));
        assert!(looks_like_one(&h) && looks_like_one(b"PROXY TCP4 ..."));
        assert!(!looks_like_one(b"POST / HTTP/1.1") && !looks_like_one(b"\x16\x03\x01"));
        assert_eq!(parse(b"CONNECT x:443 HTTP/1.1\r\n"), Header::Absent);
    }
}
