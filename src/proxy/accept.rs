//! Proxy listeners, and accepted client sockets that join the event loop only once they have to wait.
//!
//! Most refusals need one read and one write: the request head is usually in the socket by the time it is
//! accepted, and the refusal fits in its send buffer. A [`ClientSocket`] therefore starts out as a plain
//! non-blocking socket and reads and writes it directly; it registers with tokio's event loop (two `epoll_ctl`
//! calls and a wakeup per connection) only when a read or write would block. A refused request never
//! touches the event loop, and an allowed one reads its head without waiting for a turn of the loop first.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Queue of connections the kernel has completed and egressd has not accepted yet (capped by
/// `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// A bound, listening TCP socket whose accepted connections inherit TCP_NODELAY and keepalive from it.
pub struct Listener {
    fd: AsyncFd<std::net::TcpListener>,
}

impl Listener {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = crate::net::listen(addr, BACKLOG, |socket| {
            super::dial::tune_socket(socket2::SockRef::from(socket))
        })?;
        // SAFETY: a std listener owns its descriptor, which stays open and the same until it is dropped
        // together with the AsyncFd.
        let fd = unsafe { AsyncFd::register(listener) }.map_err(io::Error::from)?;
        Ok(Listener { fd })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd.get_ref().local_addr()
    }

    /// The next connection, not yet registered with the event loop.
    pub async fn accept(&self) -> io::Result<(ClientSocket, SocketAddr)> {
        use rustix::net::{acceptfrom_with, SocketFlags};
        loop {
            let mut ready = self.fd.readable().await?;
            let accepted = ready.try_io(|l| {
                let (fd, peer) =
                    acceptfrom_with(l.get_ref(), SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
                let peer = peer
                    .and_then(|p| SocketAddr::try_from(p).ok())
                    .ok_or_else(|| {
                        io::Error::other("accepted a connection without an IP peer address")
                    })?;
                // IPv4 clients of a `[::]` listener arrive v4-mapped: every later comparison (client CIDRs,
                // the loop guard) and every log line uses the IPv4 address.
                Ok((std::net::TcpStream::from(fd), crate::net::canonical(peer)))
            });
            if let Ok(result) = accepted {
                return result.map(|(s, peer)| (ClientSocket::Direct(s), peer));
            }
        }
    }
}

/// A warning that is written at most once per interval: `due` says whether to write it now, and how many
/// were held back since the last one.
pub struct WarnEvery {
    interval: std::time::Duration,
    last: Option<std::time::Instant>,
    held_back: u64,
}

impl WarnEvery {
    pub fn new(interval: std::time::Duration) -> Self {
        WarnEvery {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(held back)` when the warning is due at `now`, else `None` (and one more is held back).
    pub fn due(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Did `accept` fail for one pending connection only (it was reset or aborted before it was accepted, or
/// Linux passed on a network error pending on it)? Such errors are no reason to pause accepting; running out
/// of descriptors or memory is.
pub fn lost_one_connection(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let Some(errno) = Errno::from_io_error(e) else {
        return false;
    };
    [
        Errno::CONNABORTED,
        Errno::CONNRESET,
        Errno::PROTO,
        Errno::PERM,
        Errno::NETDOWN,
        Errno::NETUNREACH,
        Errno::HOSTDOWN,
        Errno::HOSTUNREACH,
        Errno::NONET,
        Errno::NOPROTOOPT,
        Errno::OPNOTSUPP,
        Errno::TIMEDOUT,
        Errno::INTR,
    ]
    .contains(&errno)
}

/// An accepted client connection: used directly while reads and writes complete at once, registered with the
/// event loop from the first one that would block.
#[derive(Debug)]
pub enum ClientSocket {
    /// Non-blocking and not registered.
    Direct(std::net::TcpStream),
    Registered(TcpStream),
    /// Registering failed (the socket is closed); every use is an error.
    Failed,
}

impl ClientSocket {
    /// The connection as a tokio stream, registering it if it is not yet.
    pub fn into_tcp(self) -> io::Result<TcpStream> {
        match self {
            ClientSocket::Direct(s) => TcpStream::from_std(s),
            ClientSocket::Registered(s) => Ok(s),
            ClientSocket::Failed => Err(failed()),
        }
    }

    /// Send the last bytes of the connection with its FIN in the same segment (a refusal), when the socket
    /// takes them all at once; returns how many bytes it took. When that is not all, nothing was closed and
    /// the caller writes the rest and shuts down as usual.
    pub fn send_last(&mut self, data: &[u8]) -> usize {
        use rustix::net::{send, SendFlags};
        let ClientSocket::Direct(s) = self else {
            return 0;
        };
        // MSG_MORE holds the bytes back; the shutdown appends the FIN to them and sends both.
        let sent = send(&*s, data, SendFlags::MORE | SendFlags::NOSIGNAL).unwrap_or(0);
        if sent == data.len() {
            let _ = s.shutdown(Shutdown::Write);
        }
        sent
    }

    /// Wait until the client has sent its first byte (`true`) or ended the connection without one (`false`).
    /// Nothing is consumed.
    pub async fn first_byte(&mut self) -> io::Result<bool> {
        let mut b = [0u8; 1];
        if let Some(r) = self.direct(|s| s.peek(&mut b)) {
            return r.map(|n| n > 0);
        }
        Ok(self.register()?.peek(&mut b).await? > 0)
    }

    /// Look at what the client has sent so far without taking it, waiting for at least one byte (0: the
    /// client ended the connection).
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(r) = self.direct(|s| s.peek(buf)) {
            return r;
        }
        self.register()?.peek(buf).await
    }

    /// Register with the event loop: the last attempt would have blocked.
    fn register(&mut self) -> io::Result<&mut TcpStream> {
        if matches!(self, ClientSocket::Direct(_)) {
            if let ClientSocket::Direct(s) = std::mem::replace(self, ClientSocket::Failed) {
                *self = ClientSocket::Registered(TcpStream::from_std(s)?);
            }
        }
        match self {
            ClientSocket::Registered(s) => Ok(s),
            _ => Err(failed()),
        }
    }

    /// Try `op` on the unregistered socket; `None` when the socket is (or has just become) registered
    /// because it would block.
    fn direct<T>(
        &mut self,
        mut op: impl FnMut(&std::net::TcpStream) -> io::Result<T>,
    ) -> Option<io::Result<T>> {
        let ClientSocket::Direct(s) = self else {
            return None;
        };
        loop {
            match op(s) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return self.register().err().map(Err);
                }
                r => return Some(r),
            }
        }
    }

    fn registered(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.register().map(Pin::new)
    }
}

fn failed() -> io::Error {
    io::Error::new(
        ErrorKind::NotConnected,
        "the connection could not be registered with the event loop",
    )
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let ClientSocket::Direct(_) = this {
            let unfilled = buf.initialize_unfilled();
            if let Some(r) = this.direct(|mut s| s.read(unfilled)) {
                return Poll::Ready(r.map(|n| buf.advance(n)));
            }
        }
        this.registered()?.poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.direct(|mut s| s.write(data)) {
            return Poll::Ready(r);
        }
        this.registered()?.poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(r) = this.direct(|mut s| s.write_vectored(bufs)) {
            return Poll::Ready(r);
        }
        this.registered()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientSocket::Direct(s) => Poll::Ready(s.shutdown(Shutdown::Write)),
            ClientSocket::Registered(s) => Pin::new(s).poll_shutdown(cx),
            ClientSocket::Failed => Poll::Ready(Err(failed())),
        }
    }
}

/// How often a listener that keeps failing to accept (out of descriptors) logs it.
const ACCEPT_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The next accepted connection; `None` once `drain` fires.
pub(super) async fn next_connection(
    listener: &Listener,
    drain: &tokio_util::sync::CancellationToken,
) -> Option<(ClientSocket, SocketAddr)> {
    let mut warnings = WarnEvery::new(ACCEPT_WARNING_INTERVAL);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.cancelled() => return None,
        };
        match accepted {
            // TCP_NODELAY and keepalive come from the listener (see `Listener::bind`).
            Ok((stream, peer)) => return Some((stream, peer)),
            // That one connection failed before it could be accepted; the next may be waiting already.
            Err(e) if lost_one_connection(&e) => {
                tracing::debug!(error = %e, "a connection went away before it was accepted");
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning, and say so once per
                // interval (with how many failures were not logged), not every 50 ms.
                if let Some(suppressed) = warnings.due(std::time::Instant::now()) {
                    let listen = listener.local_addr().ok().map(|a| a.to_string());
                    tracing::warn!(
                        error = %e,
                        listener = listen.as_deref().unwrap_or("?"),
                        failures_not_logged = suppressed,
                        "accept failed; accepting again in 50 ms"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_accept_failures_are_logged_once_per_interval() {
        let start = std::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut w = super::WarnEvery::new(ms(10_000));
        assert_eq!(w.due(start), Some(0));
        // 50 ms apart, as the accept loop retries: held back.
        for i in 1..200 {
            assert_eq!(w.due(start + ms(50 * i)), None);
        }
        assert_eq!(w.due(start + ms(10_000)), Some(199));
        assert_eq!(w.due(start + ms(10_050)), None);
        assert_eq!(w.due(start + ms(30_000)), Some(1));
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (ClientSocket, tokio::net::TcpStream) {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        (server, client)
    }

    #[tokio::test]
    async fn reads_and_writes_that_complete_at_once_stay_off_the_event_loop() {
        let (mut server, mut client) = pair().await;
        client
            .write_all(b"CONNECT a:443 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        // Let the bytes arrive before the first read.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"CONNECT a:443 HTTP/1.1\r\n\r\n");
        server
            .write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            .await
            .unwrap();
        server.shutdown().await.unwrap();
        assert!(matches!(server, ClientSocket::Direct(_)), "{server:?}");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 403 Forbidden\r\n\r\n");
    }

    #[test]
    fn only_resource_errors_pause_accepting() {
        let raw = |errno: rustix::io::Errno| io::Error::from_raw_os_error(errno.raw_os_error());
        use rustix::io::Errno;
        assert!(lost_one_connection(&raw(Errno::CONNABORTED)));
        assert!(lost_one_connection(&raw(Errno::PROTO)));
        for exhausted in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert!(!lost_one_connection(&raw(exhausted)), "{exhausted:?}");
        }
        assert!(!lost_one_connection(&io::Error::other(
            "not a system error"
        )));
    }

    #[tokio::test]
    async fn the_last_bytes_go_out_with_the_close() {
        let (mut server, mut client) = pair().await;
        let refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(server.send_last(refusal), refusal.len());
        // The write side is closed: the client reads the whole refusal and then the end of the stream.
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, refusal);
        // A registered socket leaves the writing to its caller.
        let (server, _client) = pair().await;
        let mut server = ClientSocket::Registered(server.into_tcp().unwrap());
        assert_eq!(server.send_last(refusal), 0);
    }

    #[tokio::test]
    async fn a_read_that_would_block_registers_and_waits() {
        let (mut server, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = server.read(&mut buf).await.unwrap();
            (server, buf[..n].to_vec())
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        client.write_all(b"late").await.unwrap();
        let (server, got) = reader.await.unwrap();
        assert_eq!(got, b"late");
        assert!(matches!(server, ClientSocket::Registered(_)), "{server:?}");
        // A registered socket converts without a second registration, and still carries data.
        let mut tcp = server.into_tcp().unwrap();
        tcp.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");
    }

    #[tokio::test]
    async fn the_first_byte_is_waited_for_and_not_consumed() {
        let (mut server, mut client) = pair().await;
        let waiting = tokio::spawn(async move {
            let sent = server.first_byte().await.unwrap();
            (server, sent)
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        client.write_all(b"x").await.unwrap();
        let (mut server, sent) = waiting.await.unwrap();
        assert!(sent);
        let mut buf = [0u8; 4];
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        assert_eq!(buf[0], b'x');
        // Closed without a byte.
        let (mut server, client) = pair().await;
        drop(client);
        assert!(!server.first_byte().await.unwrap());
    }

    #[tokio::test]
    async fn accepted_sockets_are_non_blocking_and_tuned() {
        let (server, _client) = pair().await;
        let ClientSocket::Direct(s) = server else {
            panic!("a fresh connection starts unregistered")
        };
        let mut buf = [0u8; 8];
        let e = (&s).read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        // Tuned once on the listener, inherited by every accepted socket.
        assert!(s.nodelay().unwrap());
        assert!(socket2::SockRef::from(&s).keepalive().unwrap());
    }
}
