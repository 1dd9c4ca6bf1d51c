//! What a client connection is, and what each kind of client stream can do beyond reading and writing.
//!
//! Every type a connection handler may be given implements [`ClientIo`] explicitly: the plain listener's
//! counted sockets, the transparent listeners' TCP streams, TLS-listener streams and hyper's upgraded
//! connections. The plain sockets override the methods that have a faster path; the rest keep the defaults.

use super::accept::ClientSocket;
use super::counted_client::CountedClient;
use crate::policy::credentials::CertName;
use crate::telemetry::metrics::Active;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Anything a client connection can be: a TCP stream, TLS over one, or an upgraded HTTP connection.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Send `bytes` as the last of the connection together with its FIN (a refusal), when this stream can and
    /// takes them all at once; returns how many bytes it took. When that is not all, nothing was closed and
    /// the caller writes the rest and shuts down as usual. By default nothing is sent.
    fn send_last(&mut self, _bytes: &[u8]) -> usize {
        0
    }

    /// The connection as a plain TCP socket registered with the event loop (an error if registering failed:
    /// the socket is closed then), with the guard that counts it in `egressd_connections_active` if it is
    /// counted; the guard must live as long as the socket. A stream that is not a plain TCP socket comes back
    /// unchanged, which is the default.
    /// The names of the client certificate the connection's TLS handshake verified; none by default.
    fn cert_names(&self) -> Arc<[CertName]> {
        Arc::from([])
    }

    /// The load balancer the connection came through (PROXY protocol), when one did; none by default.
    fn balancer(&self) -> Option<SocketAddr> {
        None
    }

    #[allow(clippy::type_complexity)]
    fn into_tcp(self) -> Result<(io::Result<TcpStream>, Option<Active>), Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

/// The plain listener's clients: sent straight from the unregistered socket when possible, and spliced.
impl ClientIo for CountedClient<ClientSocket> {
    fn balancer(&self) -> Option<SocketAddr> {
        CountedClient::balancer(self)
    }

    fn send_last(&mut self, bytes: &[u8]) -> usize {
        self.get_mut().send_last(bytes)
    }

    fn into_tcp(self) -> Result<(io::Result<TcpStream>, Option<Active>), Self> {
        let (socket, active) = self.into_parts();
        Ok((socket.into_tcp(), Some(active)))
    }
}

/// The transparent listeners' clients (not counted in `egressd_connections_active`): spliced.
impl ClientIo for TcpStream {
    fn into_tcp(self) -> Result<(io::Result<TcpStream>, Option<Active>), Self> {
        Ok((Ok(self), None))
    }
}

/// The TLS listener's clients, who may have presented a verified certificate.
impl ClientIo for TlsStream<CountedClient<ClientSocket>> {
    fn balancer(&self) -> Option<SocketAddr> {
        self.get_ref().0.balancer()
    }

    fn cert_names(&self) -> Arc<[CertName]> {
        self.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| crate::tls_files::certificate_names(leaf))
            .unwrap_or_default()
            .into()
    }
}

/// A CONNECT that follows a kept-alive request, taken over from hyper.
impl ClientIo for TokioIo<Upgraded> {}

/// In-memory clients for tests.
#[cfg(test)]
impl ClientIo for tokio::io::DuplexStream {}
