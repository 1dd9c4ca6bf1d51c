//! A client connection counted in `egressd_connections_active` for as long as it exists, wherever it goes
//! (into hyper, through an upgrade, into a tunnel).

use crate::telemetry::metrics::Active;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client connection of a proxy listener with the guard that counts it in `egressd_connections_active`.
pub struct CountedClient<S> {
    inner: S,
    _active: Active,
    /// The load balancer that carried the connection (PROXY protocol), when one did.
    balancer: Option<std::net::SocketAddr>,
}

impl<S> CountedClient<S> {
    pub fn new(inner: S, active: Active) -> Self {
        CountedClient {
            inner,
            _active: active,
            balancer: None,
        }
    }

    /// The connection came through `balancer`, which named its client in a PROXY header.
    pub fn set_balancer(&mut self, balancer: std::net::SocketAddr) {
        self.balancer = Some(balancer);
    }

    pub fn balancer(&self) -> Option<std::net::SocketAddr> {
        self.balancer
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The stream and its guard, for code that needs the stream's own type (the guard must be kept alive).
    pub fn into_parts(self) -> (S, Active) {
        (self.inner, self._active)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedClient<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedClient<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
