//! The TLS origin the clients reach through the proxy: an echo port (every byte back) and a bulk port (see
//! [`BulkRequest`]: the origin sends N bytes as fast as it can and closes, or takes N bytes and acknowledges
//! them). Both on 127.0.0.1, with an rcgen certificate for one name.

use super::stats::Direction;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

/// What a client asks of the bulk port, in the first [`BulkRequest::LEN`] bytes of the tunnel: the byte
/// count (u64), the direction (u8: 0 download, 1 upload) and the origin's own chunk size (u32: the size of
/// each write when it sends, of its read buffer when it receives), all big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRequest {
    pub bytes: u64,
    pub direction: Direction,
    pub chunk: u32,
}

impl BulkRequest {
    pub const LEN: usize = 13;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.bytes.to_be_bytes());
        out[8] = match self.direction {
            Direction::Download => 0,
            Direction::Upload => 1,
        };
        out[9..].copy_from_slice(&self.chunk.to_be_bytes());
        out
    }

    pub fn decode(b: &[u8; Self::LEN]) -> Result<BulkRequest, String> {
        let direction = match b[8] {
            0 => Direction::Download,
            1 => Direction::Upload,
            d => return Err(format!("bulk request: unknown direction {d}")),
        };
        let chunk = u32::from_be_bytes([b[9], b[10], b[11], b[12]]);
        if chunk == 0 || chunk > MAX_CHUNK {
            return Err(format!("bulk request: chunk of {chunk} bytes"));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&b[..8]);
        Ok(BulkRequest {
            bytes: u64::from_be_bytes(count),
            direction,
            chunk,
        })
    }
}

/// The largest write or read size a bulk request may ask of the origin.
pub const MAX_CHUNK: u32 = 16 << 20;

/// Serve one bulk request: send the bytes and close, or take them and answer with their count (u64).
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(tls: &mut S) -> io::Result<()> {
    let mut head = [0u8; BulkRequest::LEN];
    tls.read_exact(&mut head).await?;
    let req = BulkRequest::decode(&head).map_err(io::Error::other)?;
    let mut buf = vec![0x5a; req.chunk as usize];
    match req.direction {
        Direction::Download => {
            let mut left = req.bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                tls.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
        }
        Direction::Upload => {
            let mut got = 0u64;
            while got < req.bytes {
                match tls.read(&mut buf).await? {
                    0 => break,
                    n => got += n as u64,
                }
            }
            tls.write_all(&got.to_be_bytes()).await?;
        }
    }
    tls.shutdown().await
}

async fn handle(s: TcpStream, acceptor: TlsAcceptor, bulk_port: bool) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut tls = acceptor.accept(s).await?;
    if bulk_port {
        return bulk(&mut tls).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_requests_round_trip_and_bad_ones_are_refused() {
        let req = BulkRequest {
            bytes: 5 << 30,
            direction: Direction::Upload,
            chunk: 256 * 1024,
        };
        assert_eq!(BulkRequest::decode(&req.encode()), Ok(req));
        let mut bad = req.encode();
        bad[8] = 7;
        assert!(BulkRequest::decode(&bad)
            .unwrap_err()
            .contains("direction 7"));
        let zero = BulkRequest { chunk: 0, ..req }.encode();
        assert!(BulkRequest::decode(&zero).is_err());
    }

    #[tokio::test]
    async fn upload_is_acknowledged_with_its_byte_count() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(async move { bulk(&mut server).await });
        let req = BulkRequest {
            bytes: 300_000,
            direction: Direction::Upload,
            chunk: 4096,
        };
        client.write_all(&req.encode()).await.unwrap();
        client.write_all(&vec![1u8; 300_000]).await.unwrap();
        assert_eq!(client.read_u64().await.unwrap(), 300_000);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn download_sends_exactly_the_bytes_asked_for() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(async move { bulk(&mut server).await });
        let req = BulkRequest {
            bytes: 100_001,
            direction: Direction::Download,
            chunk: 1000,
        };
        client.write_all(&req.encode()).await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 100_001);
        served.await.unwrap().unwrap();
    }
}
