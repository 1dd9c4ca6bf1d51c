//! Reading a tunnel's first client bytes, bounded in size and time, until they are a complete ClientHello,
//! clearly not TLS, or clearly broken. Nothing read here is lost: the bytes are replayed to the upstream
//! once the tunnel is judged.

use crate::policy::first_bytes::Seen;
use crate::wire::client_hello::{peek_client_hello, HelloInfo, Peek};
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

impl FirstBytes {
    /// What was found, as the policy judges it.
    pub fn seen(&self) -> Seen<'_> {
        match self {
            FirstBytes::Hello(info) => Seen::Hello(info.hello()),
            FirstBytes::NotTls => Seen::NotTls,
            FirstBytes::Invalid(why) => Seen::Invalid(why),
            FirstBytes::TooLarge => Seen::TooLarge,
            FirstBytes::Timeout => Seen::Timeout,
            FirstBytes::Closed => Seen::Closed,
            FirstBytes::ServerFirst => Seen::ServerFirst,
            FirstBytes::Cut => Seen::Cut,
        }
    }
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
                // A hello that came whole in fewer reads is held to the same bound.
                Peek::Complete(info) if info.hello_len > max_bytes => {
                    p.first = FirstBytes::TooLarge;
                    return p;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    const CURL_HELLO: &[u8] = include_bytes!("../../tests/data/clienthello/curl.bin");

    async fn peek_all(early: &[u8], rest: &[u8], max_bytes: usize) -> FirstBytes {
        let mut client = rest;
        let wait = Duration::from_secs(1);
        let cut = CancellationToken::new();
        peek(
            &mut client,
            None,
            early.to_vec(),
            true,
            max_bytes,
            wait,
            wait,
            &cut,
        )
        .await
        .first
    }

    #[tokio::test]
    async fn a_whole_hello_over_max_bytes_is_too_large_however_it_arrived() {
        let len = CURL_HELLO.len();
        assert!(matches!(
            peek_all(&[], CURL_HELLO, len).await,
            FirstBytes::Hello(_)
        ));
        assert!(matches!(
            peek_all(&[], CURL_HELLO, len - 1).await,
            FirstBytes::TooLarge
        ));
        // With the CONNECT head, before the 200.
        assert!(matches!(
            peek_all(CURL_HELLO, &[], len - 1).await,
            FirstBytes::TooLarge
        ));
        assert!(matches!(
            peek_all(CURL_HELLO, &[], len).await,
            FirstBytes::Hello(_)
        ));
    }

    #[tokio::test]
    async fn cut_ends_the_wait_for_the_first_bytes() {
        let (mut client, _other_end) = tokio::io::duplex(64);
        let cut = CancellationToken::new();
        cut.cancel();
        let wait = Duration::from_secs(60);
        let p = peek(&mut client, None, Vec::new(), false, 4096, wait, wait, &cut).await;
        assert!(matches!(p.first, FirstBytes::Cut), "{:?}", p.first);
    }
}
