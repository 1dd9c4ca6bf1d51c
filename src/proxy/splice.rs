//! Copy bytes both ways between client and upstream, counting them, passing half-closes through, and closing
//! the pair after `idle` with no traffic in either direction.
//!
//! When both sides are plain TCP sockets (the plain listener), the copy is readiness-driven and holds no buffer
//! while a tunnel is idle: each direction waits for its socket to become readable, reads into the worker
//! thread's shared buffer and writes straight on. Only bytes the other side cannot take yet are kept, in a
//! buffer that is released as soon as the direction goes quiet again. A direction whose read fills the whole
//! shared buffer is busy: it takes a pipe and moves bytes with splice(2), never through user space, until it
//! goes quiet and gives the pipe back (see [`super::pipe`]). Other clients (TLS to the proxy, upgraded HTTP
//! connections) use a buffered copy.

use super::client_io::ClientIo;
use super::pipe::Pipe;
use super::upstream_io::UpstreamIo;
use crate::outcome::CloseReason;
use std::cell::RefCell;
use std::future::Future;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Buffer of the buffered copy, per direction.
const BUF_SIZE: usize = 16 * 1024;
/// The per-thread read buffer of the readiness-driven copy: large reads mean fewer system calls in bulk.
const SHARED_BUF_SIZE: usize = 64 * 1024;

thread_local! {
    static SHARED_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SHARED_BUF_SIZE].into_boxed_slice());
}

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

/// Byte count and time of the last transfer in either direction, shared by both directions.
struct Activity<'a> {
    count: &'a AtomicU64,
    last: &'a AtomicU64,
    epoch: Instant,
}

impl Activity<'_> {
    fn moved(&self, n: usize) {
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

async fn pump<R, W>(mut from: R, mut to: W, activity: Activity<'_>) -> Result<(), Broken>
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
        activity.moved(n);
    }
}

/// What one read-and-forward step on a readable socket did.
enum Step {
    /// These bytes were read and written.
    Forwarded(usize),
    /// Nothing to read right now.
    Quiet,
    /// The reader finished (half-close).
    Eof,
    /// Bytes were read but the writer took only the first `moved`; the rest must wait for it.
    Stalled {
        moved: usize,
        rest: Vec<u8>,
    },
    Broken(Broken),
}

/// Read what is available from `from` into the thread's shared buffer and write it to `to` without waiting.
fn step(from: &TcpStream, to: &TcpStream) -> Step {
    SHARED_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let len = buf.len();
        let mut got = 0;
        // A short read emptied the socket's receive queue: answering WouldBlock to `try_io` clears the
        // readiness now, saving the empty read that would otherwise find that out (what tokio's own
        // `poll_read` does). A half-close stays visible: tokio never clears the read-closed readiness.
        let read = from.try_io(Interest::READABLE, || {
            got = from.try_read(&mut buf)?;
            if got > 0 && got < len {
                Err(ErrorKind::WouldBlock.into())
            } else {
                Ok(got)
            }
        });
        let n = match read {
            Ok(0) => return Step::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock && got > 0 => got,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Quiet,
            Err(_) => return Step::Broken(Broken::Reader),
        };
        match to.try_write(&buf[..n]) {
            Ok(m) if m == n => Step::Forwarded(n),
            Ok(m) => Step::Stalled {
                moved: m,
                rest: buf[m..n].to_vec(),
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => Step::Stalled {
                moved: 0,
                rest: buf[..n].to_vec(),
            },
            Err(_) => Step::Broken(Broken::Writer),
        }
    })
}

/// One direction of a TCP-to-TCP tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read that the writer could not take yet; no allocation while the direction keeps up.
    pending: Vec<u8>,
    /// While the direction is busy (a read filled the whole shared buffer), bytes move through this pipe
    /// with splice(2) instead of through user space; it goes back to the pool once the direction is quiet.
    pipe: Option<Pipe>,
    /// Bytes forwarded.
    moved: u64,
    /// The reader finished and the direction is done.
    done: bool,
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some(p) = self.pipe.take() {
            p.give_back();
        }
    }
}

impl Flow {
    /// Move bytes from `from` to `to` until neither side can make progress (`Pending`, with wakers
    /// registered), the reader finishes (`Ready(Ok)`) or a side breaks. `other_done` says whether the opposite
    /// direction has already ended. Sets `*active` when any byte moved.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        other_done: bool,
        active: &mut bool,
    ) -> Poll<Result<(), Broken>> {
        loop {
            // The writer is full: hold just these bytes until it drains (back-pressure on the reader).
            while !self.pending.is_empty() {
                ready!(to.poll_write_ready(cx)).map_err(|_| Broken::Writer)?;
                match to.try_write(&self.pending) {
                    Ok(m) => {
                        self.moved += m as u64;
                        *active = true;
                        self.pending.drain(..m);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(Err(Broken::Writer)),
                }
            }
            if self.pending.capacity() > 0 {
                self.pending = Vec::new();
            }
            if let Some(pipe) = &mut self.pipe {
                while pipe.held > 0 {
                    ready!(to.poll_write_ready(cx)).map_err(|_| Broken::Writer)?;
                    match pipe.drain(to) {
                        Ok(m) => {
                            self.moved += m as u64;
                            *active = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => return Poll::Ready(Err(Broken::Writer)),
                    }
                }
            }
            ready!(from.poll_read_ready(cx)).map_err(|_| Broken::Reader)?;
            let step = match &mut self.pipe {
                Some(pipe) => match pipe.fill(from) {
                    // Moved on at the top of the loop.
                    Ok(n) if n > 0 => continue,
                    Ok(_) => Step::Eof,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // Quiet again: the pipe (empty now) goes back to the pool.
                        if let Some(p) = self.pipe.take() {
                            p.give_back();
                        }
                        Step::Quiet
                    }
                    Err(_) => Step::Broken(Broken::Reader),
                },
                None => step(from, to),
            };
            match step {
                Step::Forwarded(n) => {
                    self.moved += n as u64;
                    *active = true;
                    if n == SHARED_BUF_SIZE {
                        // A full buffer: a bulk transfer is under way; move it without copying.
                        self.pipe = Pipe::take();
                    }
                }
                Step::Quiet => {}
                Step::Stalled { moved, rest } => {
                    self.moved += moved as u64;
                    *active |= moved > 0;
                    self.pending = rest;
                }
                Step::Broken(b) => return Poll::Ready(Err(b)),
                Step::Eof => {
                    self.done = true;
                    // The second direction to end needs no half-close: both sockets are closed right after,
                    // which sends the FIN anyway.
                    if other_done {
                        return Poll::Ready(Ok(()));
                    }
                    // Pass the half-close on. A writer whose peer has already closed completely
                    // (NotConnected) has nothing left to tell.
                    return Poll::Ready(
                        match socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write) {
                            Ok(()) => Ok(()),
                            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(()),
                            Err(_) => Err(Broken::Writer),
                        },
                    );
                }
            }
        }
    }
}

/// A TCP-to-TCP tunnel, readiness-driven (see the module comment): one small state machine rather than a
/// future per direction, so an idle tunnel's task stays small.
async fn splice_tcp(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) -> Spliced {
    let mut up = Flow::default();
    let mut down = Flow::default();
    let mut last = Instant::now();
    // Wakes at the earliest moment the tunnel could have idled out, then checks when it was last active.
    let mut idle_at = last.checked_add(idle);
    let sleep = tokio::time::sleep_until(idle_at.unwrap_or(last));
    tokio::pin!(sleep, shutdown);
    let close_reason = std::future::poll_fn(|cx| {
        if shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(CloseReason::Shutdown);
        }
        let mut active = false;
        if !up.done {
            match up.poll(cx, client, upstream, down.done, &mut active) {
                Poll::Ready(Err(Broken::Reader)) => return Poll::Ready(CloseReason::ClientError),
                Poll::Ready(Err(Broken::Writer)) => return Poll::Ready(CloseReason::UpstreamError),
                _ => {}
            }
        }
        if !down.done {
            match down.poll(cx, upstream, client, up.done, &mut active) {
                Poll::Ready(Err(Broken::Reader)) => return Poll::Ready(CloseReason::UpstreamError),
                Poll::Ready(Err(Broken::Writer)) => return Poll::Ready(CloseReason::ClientError),
                _ => {}
            }
        }
        if up.done && down.done {
            return Poll::Ready(CloseReason::Eof);
        }
        if active {
            last = Instant::now();
        }
        // `None`: an unbounded idle time (`idle_timeout: none`) never wakes.
        while idle_at.is_some() {
            if sleep.as_mut().poll(cx).is_pending() {
                break;
            }
            let Some(quiet_until) = last.checked_add(idle) else {
                idle_at = None;
                break;
            };
            if Instant::now() >= quiet_until {
                return Poll::Ready(CloseReason::IdleTimeout);
            }
            idle_at = Some(quiet_until);
            sleep.as_mut().reset(quiet_until);
        }
        Poll::Pending
    })
    .await;
    Spliced {
        bytes_up: up.moved,
        bytes_down: down.moved,
        close_reason,
    }
}

/// Splice until both directions are done, one side breaks, the tunnel idles out, or `shutdown` fires.
pub async fn splice<C>(
    client: C,
    upstream: impl Into<UpstreamIo>,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) -> Spliced
where
    C: ClientIo,
{
    // Plain TCP clients (with the guard that counts them, kept until the tunnel ends) to a TCP upstream take
    // the readiness-driven path; the rest (TLS on either side) is copied through buffers.
    let upstream = match upstream.into() {
        UpstreamIo::Tcp(tcp) => tcp,
        tls => return Box::pin(splice_buffered(client, tls, idle, shutdown)).await,
    };
    match client.into_tcp() {
        Ok((Ok(client), _counted)) => splice_tcp(&client, &upstream, idle, shutdown).await,
        // The client socket could not join the event loop (and is closed): nothing can be spliced.
        Ok((Err(_), _counted)) => Spliced {
            bytes_up: 0,
            bytes_down: 0,
            close_reason: CloseReason::ClientError,
        },
        // Boxed: the buffered copy's state would otherwise size every tunnel's task.
        Err(client) => Box::pin(splice_buffered(client, upstream, idle, shutdown)).await,
    }
}

/// The buffered copy, for clients that are not plain TCP sockets and TLS upstreams.
async fn splice_buffered<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) -> Spliced
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let last = AtomicU64::new(0);
    let epoch = Instant::now();
    let activity = |count| Activity {
        count,
        last: &last,
        epoch,
    };
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let upward = pump(cr, uw, activity(&up));
    let downward = pump(ur, cw, activity(&down));
    let close_reason = watch(upward, downward, &last, epoch, idle, shutdown).await;
    Spliced {
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        close_reason,
    }
}

/// Drive both directions until both finish or one breaks, the pair idles out, or `shutdown` fires.
async fn watch(
    upward: impl std::future::Future<Output = Result<(), Broken>>,
    downward: impl std::future::Future<Output = Result<(), Broken>>,
    last: &AtomicU64,
    epoch: Instant,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) -> CloseReason {
    let upward = async {
        match upward.await {
            Ok(()) => None,
            Err(Broken::Reader) => Some(CloseReason::ClientError),
            Err(Broken::Writer) => Some(CloseReason::UpstreamError),
        }
    };
    let downward = async {
        match downward.await {
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
    tokio::select! {
        r = both => r.unwrap_or(CloseReason::Eof),
        _ = idle_watch => CloseReason::IdleTimeout,
        _ = shutdown => CloseReason::Shutdown,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::counted_client::CountedClient;
    use super::*;

    /// A connected pair of loopback TCP sockets.
    pub(in crate::proxy) async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// Plain TCP clients, as the listener hands them over (unregistered and counted), take the readiness-driven
    /// path with their connection guard; anything else is given back for the buffered copy.
    #[tokio::test]
    async fn accepted_plain_clients_take_the_tcp_path() {
        let listener =
            super::super::accept::Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let metrics = crate::telemetry::metrics::Metrics::new();
        let counted = CountedClient::new(socket, metrics.connection_opened("plain"));
        let Ok((Ok(_tcp), Some(_active))) = counted.into_tcp() else {
            panic!("a counted plain client is spliced as TCP")
        };
        let (transparent, _peer) = tcp_pair().await;
        let Ok((Ok(_tcp), None)) = transparent.into_tcp() else {
            panic!("a transparent client is spliced as TCP, with no guard")
        };
        let (duplex, _other) = tokio::io::duplex(64);
        assert!(duplex.into_tcp().is_err());
    }

    /// `splice` running in a task with a 10 s idle time and no shutdown.
    fn spawn_splice<C: ClientIo>(
        client: C,
        upstream: TcpStream,
    ) -> tokio::task::JoinHandle<Spliced> {
        tokio::spawn(splice(
            client,
            upstream,
            Duration::from_secs(10),
            std::future::pending(),
        ))
    }

    async fn half_close_both_ways<C>(
        client: C,
        mut client_peer: impl AsyncRead + AsyncWrite + Unpin,
    ) where
        C: ClientIo,
    {
        let (upstream, mut upstream_peer) = tcp_pair().await;
        let task = spawn_splice(client, upstream);
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
    async fn buffered_copy_counts_and_half_closes() {
        let (client, client_peer) = tokio::io::duplex(1024);
        half_close_both_ways(client, client_peer).await;
    }

    #[tokio::test]
    async fn tcp_copy_counts_and_half_closes() {
        let (client, client_peer) = tcp_pair().await;
        half_close_both_ways(client, client_peer).await;
    }

    #[tokio::test]
    async fn tcp_copy_keeps_every_byte_when_the_reader_is_slow() {
        // 8 MiB one way while the receiving side reads late: the writer fills, the copy must hold and resume.
        let (client, mut client_peer) = tcp_pair().await;
        let (upstream, mut upstream_peer) = tcp_pair().await;
        let task = spawn_splice(client, upstream);
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            upstream_peer.write_all(&sent).await.unwrap();
            upstream_peer.shutdown().await.unwrap();
            upstream_peer
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert!(
            got == data,
            "bytes lost or reordered: got {} of {}",
            got.len(),
            data.len()
        );
        client_peer.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        let s = task.await.unwrap();
        assert_eq!(s.bytes_down, data.len() as u64);
        assert_eq!(s.bytes_up, 0);
    }

    #[tokio::test]
    async fn busy_directions_switch_to_zero_copy_and_back_without_losing_bytes() {
        let (client, mut client_peer) = tcp_pair().await;
        let (upstream, mut upstream_peer) = tcp_pair().await;
        let task = spawn_splice(client, upstream);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        // Bulk (through a pipe), a pause, a few bytes (copied), bulk again.
        for (round, size) in [4 << 20, 5, 3 << 20, 7].into_iter().enumerate() {
            let chunk: Vec<u8> = (0..size).map(|i| ((i + round) % 253) as u8).collect();
            sent.extend_from_slice(&chunk);
            let writer = tokio::spawn(async move {
                upstream_peer.write_all(&chunk).await.unwrap();
                upstream_peer
            });
            let mut buf = vec![0u8; size];
            client_peer.read_exact(&mut buf).await.unwrap();
            got.extend_from_slice(&buf);
            upstream_peer = writer.await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(got == sent, "bytes lost or reordered");
        // Quiet again: the pipe went back to this thread's pool (tokio::test runs on one thread).
        assert!(Pipe::spare() >= 1, "the pipe was not given back");
        drop(upstream_peer);
        drop(client_peer);
        let s = task.await.unwrap();
        assert_eq!(s.bytes_down, sent.len() as u64);
    }

    #[tokio::test]
    async fn unbounded_idle_never_fires() {
        let (client, _client_peer) = tcp_pair().await;
        let (upstream, _upstream_peer) = tcp_pair().await;
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            splice(client, upstream, Duration::MAX, std::future::pending()),
        )
        .await;
        assert!(r.is_err(), "the tunnel closed although idle is unbounded");
    }

    #[tokio::test]
    async fn idle_timeout_closes() {
        for tcp_client in [true, false] {
            let (upstream, _upstream_peer) = tcp_pair().await;
            let idle = Duration::from_millis(50);
            let s = if tcp_client {
                let (client, _peer) = tcp_pair().await;
                splice(client, upstream, idle, std::future::pending()).await
            } else {
                let (client, _peer) = tokio::io::duplex(1024);
                splice(client, upstream, idle, std::future::pending()).await
            };
            assert_eq!(s.close_reason, CloseReason::IdleTimeout);
        }
    }

    #[tokio::test]
    async fn client_reset_is_a_client_error() {
        let (client, client_peer) = tcp_pair().await;
        let (upstream, _upstream_peer) = tcp_pair().await;
        // Unread data + close = RST.
        let std_peer = client_peer.into_std().unwrap();
        socket2::SockRef::from(&std_peer)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(std_peer);
        let s = splice(
            client,
            upstream,
            Duration::from_secs(5),
            std::future::pending(),
        )
        .await;
        assert_eq!(s.close_reason, CloseReason::ClientError);
    }
}
