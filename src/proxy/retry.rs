//! Replaying a judged ClientHello and watching for a HelloRetryRequest (see [`crate::wire::server_hello`]): the first hello
//! goes upstream alone; whatever the client sent after it is held until the server's first handshake message
//! is known. After a retry the HelloRetryRequest goes to the client, and the client's second hello is read,
//! bounded like the first, and judged before any of it goes upstream.

use super::peek::FirstBytes;
use crate::outcome::{Close, CloseReason, Outcome};
use crate::policy::tls::{Hello, TlsChecks};
use crate::policy::verdict::judge_second_hello;
use crate::reason::{Reason, Refusal};
use crate::wire::client_hello::{peek_client_hello, Peek};
use crate::wire::server_hello::{interlude_len, server_answer, ServerAnswer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The server's first handshake message is decided within this many bytes for any sane record framing; a
/// server still undecided past it is refused rather than waited on.
const MAX_SERVER_ANSWER: usize = 16 * 1024;

/// How the tunnel goes on after the replay.
#[derive(Debug)]
pub enum End {
    /// Splice: every byte read from either side so far has been passed on.
    Go,
    /// Refuse the tunnel (nothing more passes).
    Refuse(Refusal),
    /// The tunnel ended here (a side left, or shutdown cut it).
    Ended(CloseReason),
}

impl End {
    /// Record how the tunnel's start ended in its outcome and close records; true when it goes on to splice.
    pub fn record(self, o: &mut Outcome, close: &mut Close) -> bool {
        match self {
            End::Go => return true,
            End::Refuse(r) => {
                o.refuse(r);
                close.close_reason = CloseReason::Denied;
            }
            End::Ended(reason) => close.close_reason = reason,
        }
        false
    }
}

#[derive(Debug)]
pub struct Replayed {
    pub end: End,
    /// Bytes passed upstream / to the client here.
    pub up: u64,
    pub down: u64,
    /// A refusal of the second hello let through because `report` was set.
    pub reported: Option<Refusal>,
    /// Whether the server asked for a retry.
    pub retried: bool,
}

/// Replay `buf` (the client's first bytes, `hello_len` of them the judged ClientHello `first`), watch the
/// server's answer and, after a HelloRetryRequest, judge the second hello with `checks`. A policy refusal
/// of the second hello is let through (and returned in `reported`) when `report` is set.
#[allow(clippy::too_many_arguments)]
pub async fn replay_hello<C: AsyncRead + AsyncWrite + Unpin, U: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    upstream: &mut U,
    buf: Vec<u8>,
    hello_len: usize,
    first: Hello<'_>,
    checks: &TlsChecks,
    report: bool,
    cut: &CancellationToken,
) -> Replayed {
    let mut r = Replayed {
        end: End::Go,
        up: 0,
        down: 0,
        reported: None,
        retried: false,
    };
    let hello_len = hello_len.min(buf.len());
    if upstream.write_all(&buf[..hello_len]).await.is_err() {
        r.end = End::Ended(CloseReason::UpstreamError);
        return r;
    }
    r.up = hello_len as u64;
    let held = buf[hello_len..].to_vec();
    drop(buf);

    // --- the server's first handshake message ---
    let mut server = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let deadline = Instant::now() + checks.hello_timeout;
    let answer = loop {
        match server_answer(&server) {
            ServerAnswer::Incomplete => {}
            decided => break Some(decided),
        }
        if server.len() >= MAX_SERVER_ANSWER {
            r.end = End::Refuse(Refusal::new(
                Reason::UpstreamError,
                format!(
                    "the upstream's first {} bytes are not a recognisable TLS handshake message",
                    server.len()
                ),
            ));
            return r;
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, upstream.read(&mut chunk)) => r,
            _ = cut.cancelled() => {
                r.end = End::Ended(CloseReason::Shutdown);
                return r;
            }
        };
        match read {
            Err(_) => {
                r.end = End::Refuse(Refusal::new(
                    Reason::UpstreamError,
                    format!(
                        "the upstream did not answer the ClientHello within client_hello.timeout ({:?})",
                        checks.hello_timeout
                    ),
                ));
                return r;
            }
            // The upstream left before its answer was known: pass on what it said, then end.
            Ok(Ok(0)) | Ok(Err(_)) => break None,
            Ok(Ok(n)) => server.extend_from_slice(&chunk[..n]),
        }
    };
    if client.write_all(&server).await.is_err() {
        r.end = End::Ended(CloseReason::ClientError);
        return r;
    }
    r.down = server.len() as u64;
    drop(server);
    match answer {
        None => {
            r.end = End::Ended(CloseReason::Eof);
            return r;
        }
        Some(ServerAnswer::Retry) => r.retried = true,
        Some(_) => {
            // No second hello can follow: what was held goes up, and the tunnel is spliced.
            if upstream.write_all(&held).await.is_err() {
                r.end = End::Ended(CloseReason::UpstreamError);
            }
            r.up += held.len() as u64;
            return r;
        }
    }

    // --- the second ClientHello ---
    let (second, bytes) = read_second_hello(client, held, checks, cut).await;
    match judge_second_hello(checks, first, second.seen(), report) {
        Ok(reported) => r.reported = reported,
        Err(end) => {
            r.end = match end {
                Ok(refusal) => End::Refuse(refusal),
                Err(q) => End::Ended(q.into()),
            };
            return r;
        }
    }
    if upstream.write_all(&bytes).await.is_err() {
        r.end = End::Ended(CloseReason::UpstreamError);
    }
    r.up += bytes.len() as u64;
    r
}

/// Read the client's second hello after `held` (bytes it sent before seeing the retry), skipping the records
/// that may come between the hellos. Returns the verdict on the bytes and every byte read, `held` first.
async fn read_second_hello<C: AsyncRead + Unpin>(
    client: &mut C,
    mut buf: Vec<u8>,
    checks: &TlsChecks,
    cut: &CancellationToken,
) -> (FirstBytes, Vec<u8>) {
    let max_bytes = checks.hello_max_bytes;
    let deadline = Instant::now() + checks.hello_timeout;
    let mut chunk = vec![0u8; 4096];
    loop {
        if let Some(skip) = interlude_len(&buf) {
            let first = match peek_client_hello(&buf[skip..]) {
                Peek::Complete(info) if skip + info.hello_len > max_bytes => {
                    Some(FirstBytes::TooLarge)
                }
                Peek::Complete(info) => Some(FirstBytes::Hello(info)),
                Peek::NotTls => Some(FirstBytes::NotTls),
                Peek::Invalid(why) => Some(FirstBytes::Invalid(why)),
                Peek::Incomplete => None,
            };
            if let Some(first) = first {
                return (first, buf);
            }
        }
        if buf.len() >= max_bytes {
            return (FirstBytes::TooLarge, buf);
        }
        let want = chunk.len().min(max_bytes - buf.len());
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, client.read(&mut chunk[..want])) => r,
            _ = cut.cancelled() => return (FirstBytes::Cut, buf),
        };
        match read {
            Err(_) => return (FirstBytes::Timeout, buf),
            Ok(Ok(0)) | Ok(Err(_)) => return (FirstBytes::Closed, buf),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
