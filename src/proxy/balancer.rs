//! Connections from load balancers that speak the PROXY protocol (`proxy_protocol:`): the header is read
//! before anything else (before the TLS handshake on `listen_tls`), exactly to its last byte, and the
//! client it names is the connection's client from then on: its identity, its decision lines
//! (`client_addr`, with the balancer in `peer_addr`) and its share of `limits.max_connections_per_client`.

use super::accept::ClientSocket;
use crate::reason::{Reason, Refusal};
use crate::wire::proxy_header::{self, Header};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// How long to wait before looking again at a header that has not all arrived.
const PARTIAL_WAIT: Duration = Duration::from_millis(10);

/// What reading the header found.
pub(super) enum Read {
    /// The header was taken off the stream; the client it names (`None`: the balancer speaks for itself).
    Client(Option<SocketAddr>),
    /// The connection ended without a byte (a balancer's TCP health check): no request.
    Empty,
    Refused(Refusal),
}

/// Read the PROXY header at the start of `sock` within `timeout` (`timeouts.header`).
pub(super) async fn read_header(sock: &mut ClientSocket, timeout: Duration) -> Read {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; proxy_header::V2_MAX];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.peek(&mut buf)).await {
            Ok(Ok(0)) if seen == 0 => return Read::Empty,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return refused(
                    Reason::ProxyHeaderInvalid,
                    format!("the connection ended inside its PROXY header ({seen} bytes)"),
                )
            }
            Ok(Ok(n)) => n,
            Err(_) if seen == 0 => {
                return refused(
                    Reason::ProxyHeaderMissing,
                    format!("no PROXY header within timeouts.header ({timeout:?})"),
                )
            }
            Err(_) => {
                return refused(
                    Reason::ProxyHeaderInvalid,
                    format!(
                    "the PROXY header stopped after {seen} bytes (timeouts.header, {timeout:?})"
                ),
                )
            }
        };
        seen = n;
        match proxy_header::parse(&buf[..n]) {
            Header::Complete { len, client } => {
                return match sock.read_exact(&mut buf[..len]).await {
                    Ok(_) => Read::Client(client),
                    Err(e) => refused(
                        Reason::ProxyHeaderInvalid,
                        format!("reading the PROXY header: {e}"),
                    ),
                };
            }
            Header::Absent => {
                return refused(
                    Reason::ProxyHeaderMissing,
                    "the connection comes from a peer in proxy_protocol.trusted but does not start with a \
                     PROXY header (configure the load balancer to send PROXY protocol v1 or v2)"
                        .to_string(),
                )
            }
            Header::Invalid(why) => return refused(Reason::ProxyHeaderInvalid, why),
            // The rest has not arrived yet: what is there stays in the socket, looked at again shortly.
            Header::Incomplete => {
                let now = Instant::now();
                if now >= deadline {
                    return refused(
                        Reason::ProxyHeaderInvalid,
                        format!(
                            "a truncated PROXY header: {seen} bytes and no more within timeouts.header ({timeout:?})"
                        ),
                    );
                }
                tokio::time::sleep(PARTIAL_WAIT.min(deadline - now)).await;
            }
        }
    }
}

fn refused(reason: Reason, detail: String) -> Read {
    Read::Refused(Refusal::new(reason, detail))
}

/// The refusal of a PROXY header from a peer that may not send one, when `first` (the connection's first
/// bytes) starts with one. `on`: the listener reads PROXY headers (from other peers).
pub(super) fn untrusted(first: &[u8], peer: SocketAddr, on: bool) -> Option<Refusal> {
    if !proxy_header::looks_like_one(first) {
        return None;
    }
    let why = if on {
        format!("{} is not in proxy_protocol.trusted", peer.ip())
    } else {
        "this listener takes no PROXY header (proxy_protocol.listeners)".to_string()
    };
    Some(Refusal::new(
        Reason::ProxyHeaderUntrusted,
        format!("a PROXY header from {peer}, not believed: {why}"),
    ))
}
