//! The TLS origin the clients reach through the proxy: an echo port (every byte back) and a bulk port (the
//! client asks for N bytes with an 8-byte big-endian count; the origin sends them as fast as it can and
//! closes). Both on 127.0.0.1, with an rcgen certificate for one name.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

/// The name the origin's certificate is for, mapped to 127.0.0.1 in every proxy's configuration.
pub const ORIGIN_NAME: &str = "origin.egressd.test";

pub struct Origin {
    pub name: String,
    pub echo: SocketAddr,
    pub bulk: SocketAddr,
    /// A TLS 1.3-only client configuration that trusts the origin's certificate.
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
    stop: CancellationToken,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn listener(port: u16) -> io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.listen(4096)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Start the origin on 127.0.0.1: echo on `port` and bulk on `port + 1`, or on two ephemeral ports when
/// `port` is `None` (a proxy the harness does not configure itself needs fixed ports in its allowlist).
pub async fn start(name: &str, port: Option<u16>) -> io::Result<Origin> {
    let err = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).map_err(|e| err(&e))?;
    let der: CertificateDer<'static> = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .map_err(|e| err(&e))?;
    let acceptor = TlsAcceptor::from(Arc::new(server));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).map_err(|e| err(&e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| err(&e))?;

    let stop = CancellationToken::new();
    let echo = listener(port.unwrap_or(0))?;
    let bulk = listener(port.map_or(0, |p| p.wrapping_add(1)))?;
    let (echo_addr, bulk_addr) = (echo.local_addr()?, bulk.local_addr()?);
    tokio::spawn(serve(echo, acceptor.clone(), stop.clone(), false));
    tokio::spawn(serve(bulk, acceptor, stop.clone(), true));
    Ok(Origin {
        name: name.to_string(),
        echo: echo_addr,
        bulk: bulk_addr,
        connector: TlsConnector::from(Arc::new(client)),
        server_name,
        stop,
    })
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, stop: CancellationToken, bulk: bool) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let s = match accepted {
            Ok((s, _)) => s,
            // Out of descriptors or similar: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = handle(s, acceptor, bulk) => {}
            }
        });
    }
}

async fn handle(s: TcpStream, acceptor: TlsAcceptor, bulk: bool) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut tls = acceptor.accept(s).await?;
    if bulk {
        let want = tls.read_u64().await?;
        let chunk = vec![0x5a; 256 * 1024];
        let mut left = want;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            tls.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        tls.shutdown().await?;
        return Ok(());
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            let _ = tls.shutdown().await;
            return Ok(());
        }
        tls.write_all(&buf[..n]).await?;
        tls.flush().await?;
    }
}
