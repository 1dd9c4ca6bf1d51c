//! Copy bytes both ways between client and upstream, counting them, passing half-closes through, and closing
//! the pair after `idle` with no traffic in either direction.

use crate::telemetry::log::CloseReason;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const BUF_SIZE: usize = 16 * 1024;

pub struct Spliced {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub close_reason: CloseReason,
}

/// Which side broke a copy.
enum Broken {
    Reader,
    Writer,
}

async fn pump<R, W>(
    mut from: R,
    mut to: W,
    count: &AtomicU64,
    last: &AtomicU64,
    epoch: Instant,
) -> Result<(), Broken>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = from.read(&mut buf).await.map_err(|_| Broken::Reader)?;
        if n == 0 {
            // Pass the half-close on; the other direction may still be sending.
            return to.shutdown().await.map_err(|_| Broken::Writer);
        }
        to.write_all(&buf[..n]).await.map_err(|_| Broken::Writer)?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Splice until both directions are done, one side breaks, the tunnel idles out, or `shutdown` fires.
pub async fn splice<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Spliced
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let last = AtomicU64::new(0);
    let epoch = Instant::now();

    let upward = async {
        match pump(cr, uw, &up, &last, epoch).await {
            Ok(()) => None,
            Err(Broken::Reader) => Some(CloseReason::ClientError),
            Err(Broken::Writer) => Some(CloseReason::UpstreamError),
        }
    };
    let downward = async {
        match pump(ur, cw, &down, &last, epoch).await {
            Ok(()) => None,
            Err(Broken::Reader) => Some(CloseReason::UpstreamError),
            Err(Broken::Writer) => Some(CloseReason::ClientError),
        }
    };
    let both = async {
        tokio::pin!(upward, downward);
        let mut up_done = false;
        let mut down_done = false;
        loop {
            tokio::select! {
                r = &mut upward, if !up_done => { if r.is_some() { return r; } up_done = true; }
                r = &mut downward, if !down_done => { if r.is_some() { return r; } down_done = true; }
            }
            if up_done && down_done {
                return None;
            }
        }
    };
    let idle_watch = async {
        loop {
            let quiet_since = epoch + Duration::from_millis(last.load(Ordering::Relaxed));
            // `Duration::MAX` (a rule with `idle_timeout: none`) never wakes.
            let Some(wake) = quiet_since.checked_add(idle) else {
                return std::future::pending().await;
            };
            if Instant::now() >= wake {
                return;
            }
            tokio::time::sleep_until(wake).await;
        }
    };
    let close_reason = tokio::select! {
        r = both => r.unwrap_or(CloseReason::Eof),
        _ = idle_watch => CloseReason::IdleTimeout,
        _ = shutdown => CloseReason::Shutdown,
    };
    Spliced {
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        close_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_counts_and_half_closes() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice(
            client,
            upstream,
            Duration::from_secs(10),
            std::future::pending(),
        ));
        client_peer.write_all(b"hello").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // The upstream can still answer after the client half-closed.
        upstream_peer.write_all(b"world!").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        let s = task.await.unwrap();
        assert_eq!((s.bytes_up, s.bytes_down), (5, 6));
        assert_eq!(s.close_reason, CloseReason::Eof);
    }

    #[tokio::test]
    async fn unbounded_idle_never_fires() {
        let (client, _client_peer) = tokio::io::duplex(1024);
        let (upstream, _upstream_peer) = tokio::io::duplex(1024);
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            splice(client, upstream, Duration::MAX, std::future::pending()),
        )
        .await;
        assert!(r.is_err(), "the tunnel closed although idle is unbounded");
    }

    #[tokio::test]
    async fn idle_timeout_closes() {
        let (client, _client_peer) = tokio::io::duplex(1024);
        let (upstream, _upstream_peer) = tokio::io::duplex(1024);
        let s = splice(
            client,
            upstream,
            Duration::from_millis(50),
            std::future::pending(),
        )
        .await;
        assert_eq!(s.close_reason, CloseReason::IdleTimeout);
    }
}
