//! Clients of the harness: through a proxy (`CONNECT name:port`, then TLS 1.3 with SNI = that name) or
//! directly to the origin (the baseline). Every step has a deadline so a stuck proxy shows up as errors.

use super::origin::Origin;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A host every proxy under test must refuse.
pub const DENIED_NAME: &str = "denied.egressd.test";

const STEP: Duration = Duration::from_secs(10);

pub type Error = String;

/// How clients reach the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Direct,
    Proxy(SocketAddr),
}

async fn step<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress within {}s", STEP.as_secs())),
    }
}

/// Read an HTTP response head (and, for a refusal, its Content-Length body); returns the status. After a
/// `200` to CONNECT the proxy must not send anything before the client's TLS ClientHello, so extra bytes
/// after that head are an error.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Result<u16, Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        match s.read(&mut chunk).await {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {} bytes of response head",
                    buf.len()
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading response head: {e}")),
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no status in {:?}", text.lines().next().unwrap_or("")))?;
    let extra = buf.len() - end;
    if status == 200 {
        if extra > 0 {
            return Err(format!(
                "{extra} unexpected bytes after the 200 response head"
            ));
        }
        return Ok(status);
    }
    let len = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if len > extra {
        let mut body = vec![0u8; len - extra];
        s.read_exact(&mut body)
            .await
            .map_err(|e| format!("reading response body: {e}"))?;
    }
    Ok(status)
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, Error> {
    let s = step("connect", TcpStream::connect(addr)).await?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// A TCP stream to `port` on the origin: through the proxy's CONNECT tunnel or directly.
pub async fn open(via: Via, origin: &Origin, port: u16) -> Result<TcpStream, Error> {
    match via {
        Via::Direct => tcp(SocketAddr::from(([127, 0, 0, 1], port))).await,
        Via::Proxy(proxy) => {
            let mut s = tcp(proxy).await?;
            let authority = format!("{}:{port}", origin.name);
            let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            step("send CONNECT", s.write_all(req.as_bytes())).await?;
            let status = step("CONNECT response", read_response(&mut s)).await?;
            if status != 200 {
                return Err(format!("CONNECT answered {status}"));
            }
            Ok(s)
        }
    }
}

/// TLS 1.3 handshake with SNI = the origin's name.
pub async fn handshake(origin: &Origin, s: TcpStream) -> Result<TlsStream<TcpStream>, Error> {
    step(
        "TLS handshake",
        origin.connector.connect(origin.server_name.clone(), s),
    )
    .await
}

/// Send `payload` and read the same number of bytes back.
pub async fn echo(tls: &mut TlsStream<TcpStream>, payload: &[u8]) -> Result<(), Error> {
    step("echo write", async {
        tls.write_all(payload).await?;
        tls.flush().await
    })
    .await?;
    let mut back = vec![0u8; payload.len()];
    step("echo read", tls.read_exact(&mut back)).await?;
    if back != payload {
        return Err("echo came back different".into());
    }
    Ok(())
}

/// An echo tunnel, handshaken and with one round-trip done.
pub async fn echo_tunnel(
    via: Via,
    origin: &Origin,
    payload: &[u8],
) -> Result<TlsStream<TcpStream>, Error> {
    let s = open(via, origin, origin.echo.port()).await?;
    let mut tls = handshake(origin, s).await?;
    echo(&mut tls, payload).await?;
    Ok(tls)
}

/// One whole tunnel: CONNECT, handshake, one echo, close. Returns the time to the echo reply.
pub async fn tunnel_once(via: Via, origin: &Origin, payload: &[u8]) -> Result<Duration, Error> {
    let t0 = Instant::now();
    let mut tls = echo_tunnel(via, origin, payload).await?;
    let took = t0.elapsed();
    // close_notify and FIN; the origin answers in kind. Not part of the measured latency.
    let _ = tokio::time::timeout(STEP, tls.shutdown()).await;
    Ok(took)
}

/// CONNECT to a host the proxy must refuse; succeeds on a 403.
pub async fn deny_once(proxy: SocketAddr) -> Result<Duration, Error> {
    let t0 = Instant::now();
    let mut s = tcp(proxy).await?;
    let authority = format!("{DENIED_NAME}:443");
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    step("send CONNECT", s.write_all(req.as_bytes())).await?;
    let status = step("CONNECT response", read_response(&mut s)).await?;
    if status != 403 {
        return Err(format!("denied CONNECT answered {status}, not 403"));
    }
    Ok(t0.elapsed())
}

/// Download `bytes` through one tunnel from the bulk port; returns the bytes received and the time from the
/// request to the last byte (the handshake is not included).
pub async fn bulk(via: Via, origin: &Origin, bytes: u64) -> Result<(u64, Duration), Error> {
    let s = open(via, origin, origin.bulk.port()).await?;
    let mut tls = handshake(origin, s).await?;
    let t0 = Instant::now();
    step("bulk request", async {
        tls.write_all(&bytes.to_be_bytes()).await?;
        tls.flush().await
    })
    .await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        match step("bulk read", tls.read(&mut buf)).await {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            // The origin closes right after its last byte; a missing close_notify is not a short read.
            Err(_) if got == bytes => break,
            Err(e) => return Err(e),
        }
    }
    let took = t0.elapsed();
    if got != bytes {
        return Err(format!("bulk: got {got} of {bytes} bytes"));
    }
    Ok((got, took))
}
