//! Reading a tunnel's first client bytes, bounded in size and time, until they are a complete ClientHello,
//! clearly not TLS, or clearly broken. Nothing read here is lost: the bytes are replayed to the upstream
//! once the tunnel is judged.

use super::sni::{peek_client_hello, HelloInfo, Peek};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub enum FirstBytes {
    Hello(HelloInfo),
    /// The client's first bytes are not a TLS handshake record.
    NotTls,
    /// TLS-looking but malformed.
    Invalid(&'static str),
    /// Still incomplete at `max_bytes`.
    TooLarge,
    /// Nothing decisive within the wait.
    Timeout,
    /// The client closed before anything decisive.
    Closed,
    /// The upstream spoke first (a server-first protocol on a tunnel that does not require TLS).
    ServerFirst,
    /// Shutdown cut the tunnel (end of `shutdown.grace`) before anything decisive.
    Cut,
}

pub struct Peeked {
    pub first: FirstBytes,
    /// Every byte read from the client, to be replayed upstream.
    pub buf: Vec<u8>,
    /// How many reads (roughly, TCP segments) the bytes arrived in.
    pub reads: usize,
}

/// Read from `client` (after any `early` bytes that came with the CONNECT head). When TLS is not required,
/// the wait for the first byte also ends if the upstream (when there is one yet) speaks first, and lasts up
/// to `first_wait`. Every wait ends when `cut` fires.
#[allow(clippy::too_many_arguments)]
pub async fn peek<C: AsyncRead + Unpin>(
    client: &mut C,
    upstream: Option<&TcpStream>,
    early: Vec<u8>,
    require_tls: bool,
    max_bytes: usize,
    hello_wait: Duration,
    first_wait: Duration,
    cut: &CancellationToken,
) -> Peeked {
    let mut p = Peeked {
        reads: usize::from(!early.is_empty()),
        buf: early,
        first: FirstBytes::Timeout,
    };
    let mut chunk = vec![0u8; 4096];
    if p.buf.is_empty() && !require_tls {
        let read = tokio::select! {
            r = client.read(&mut chunk) => r,
            _ = async {
                match upstream {
                    Some(u) => u.readable().await,
                    None => std::future::pending().await,
                }
            } => {
                p.first = FirstBytes::ServerFirst;
                return p;
            }
            _ = tokio::time::sleep(first_wait) => return p,
            _ = cut.cancelled() => {
                p.first = FirstBytes::Cut;
                return p;
            }
        };
        match read {
            Ok(0) | Err(_) => {
                p.first = FirstBytes::Closed;
                return p;
            }
            Ok(n) => {
                p.buf.extend_from_slice(&chunk[..n]);
                p.reads += 1;
            }
        }
    }
    let deadline = Instant::now() + hello_wait;
    loop {
        if !p.buf.is_empty() {
            match peek_client_hello(&p.buf) {
                Peek::Complete(info) => {
                    p.first = FirstBytes::Hello(info);
                    return p;
                }
                Peek::NotTls => {
                    p.first = FirstBytes::NotTls;
                    return p;
                }
                Peek::Invalid(why) => {
                    p.first = FirstBytes::Invalid(why);
                    return p;
                }
                Peek::Incomplete => {}
            }
        }
        if p.buf.len() >= max_bytes {
            p.first = FirstBytes::TooLarge;
            return p;
        }
        let want = chunk.len().min(max_bytes - p.buf.len());
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, client.read(&mut chunk[..want])) => r,
            _ = cut.cancelled() => {
                p.first = FirstBytes::Cut;
                return p;
            }
        };
        match read {
            Err(_) => {
                p.first = FirstBytes::Timeout;
                return p;
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                p.first = FirstBytes::Closed;
                return p;
            }
            Ok(Ok(n)) => {
                p.buf.extend_from_slice(&chunk[..n]);
                p.reads += 1;
            }
        }
    }
}
