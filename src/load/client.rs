//! Clients of the harness: through a proxy (`CONNECT name:port`, then TLS 1.3 with SNI = that name) or
//! directly to the origin (the baseline). Every step has a deadline so a stuck proxy shows up as errors.

use super::origin::{BulkRequest, Origin};
use super::stats::{BulkCase, Direction};
use std::net::SocketAddr;
use std::sync::Arc;
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

/// CONNECT to a host the proxy must refuse; succeeds on the status `expect` (403 for most proxies).
pub async fn deny_once(proxy: SocketAddr, expect: u16) -> Result<Duration, Error> {
    let t0 = Instant::now();
    let mut s = tcp(proxy).await?;
    let authority = format!("{DENIED_NAME}:443");
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    step("send CONNECT", s.write_all(req.as_bytes())).await?;
    let status = step("CONNECT response", read_response(&mut s)).await?;
    if status != expect {
        return Err(format!("denied CONNECT answered {status}, not {expect}"));
    }
    Ok(t0.elapsed())
}

/// How the bulk scenario moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkShape {
    pub case: BulkCase,
    /// Size of each write by the sending side (client or origin).
    pub write: usize,
    /// Size of the receiving side's read buffer.
    pub read: usize,
}

/// Move `bytes` in `shape.case.direction`, split evenly over `shape.case.streams` tunnels that transfer at
/// once. Every tunnel is opened and handshaken first; the time runs from the moment they all start to the
/// last byte (download) or the last acknowledgement (upload). Returns the bytes moved and that time.
pub async fn bulk(
    via: Via,
    origin: &Arc<Origin>,
    shape: BulkShape,
    bytes: u64,
) -> Result<(u64, Duration), Error> {
    let streams = shape.case.streams.max(1);
    let start = Arc::new(tokio::sync::Barrier::new(streams));
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams as u64 {
        // The first streams take the remainder, so the total is exactly `bytes`.
        let share = bytes / streams as u64 + u64::from(i < bytes % streams as u64);
        let (origin, start) = (origin.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let s = open(via, &origin, origin.bulk.port()).await?;
                handshake(&origin, s).await
            }
            .await;
            // Every stream reaches the barrier, even one that failed, so the others are not held forever.
            start.wait().await;
            let t0 = Instant::now();
            let moved = one_stream(opened?, shape, share).await?;
            Ok::<_, Error>((moved, t0, Instant::now()))
        }));
    }
    let (mut moved, mut first, mut last) = (0u64, None::<Instant>, None::<Instant>);
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok((n, t0, t1))) => {
                moved += n;
                first = Some(first.map_or(t0, |f| f.min(t0)));
                last = Some(last.map_or(t1, |l| l.max(t1)));
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("bulk task failed: {e}")),
        }
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let took = first.zip(last).map_or(Duration::ZERO, |(f, l)| l - f);
    Ok((moved, took))
}

/// One bulk tunnel: send the request, then receive `bytes` (download) or send them and wait for the origin's
/// count (upload).
async fn one_stream(
    mut tls: TlsStream<TcpStream>,
    shape: BulkShape,
    bytes: u64,
) -> Result<u64, Error> {
    let origin_chunk = match shape.case.direction {
        Direction::Download => shape.write,
        Direction::Upload => shape.read,
    };
    let req = BulkRequest {
        bytes,
        direction: shape.case.direction,
        chunk: origin_chunk as u32,
    };
    step("bulk request", async {
        tls.write_all(&req.encode()).await?;
        tls.flush().await
    })
    .await?;
    match shape.case.direction {
        Direction::Download => {
            let mut buf = vec![0u8; shape.read];
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
            if got != bytes {
                return Err(format!("bulk download: got {got} of {bytes} bytes"));
            }
            Ok(got)
        }
        Direction::Upload => {
            let buf = vec![0xa5u8; shape.write];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                step("bulk write", tls.write_all(&buf[..n])).await?;
                left -= n as u64;
            }
            step("bulk flush", tls.flush()).await?;
            let acked = step("bulk acknowledgement", tls.read_u64()).await?;
            if acked != bytes {
                return Err(format!(
                    "bulk upload: the origin got {acked} of {bytes} bytes"
                ));
            }
            let _ = tokio::time::timeout(STEP, tls.shutdown()).await;
            Ok(bytes)
        }
    }
}
