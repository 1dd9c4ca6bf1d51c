//! Reading the first request head on a client connection: one bounded async read loop over the pure
//! classifier in [`crate::wire::request_head`].

use crate::reason::Reason;
use crate::wire::request_head::{classify, err, HeadError, Request};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Read until a complete head is buffered, within `max` bytes and `timeout`.
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<Request, HeadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    loop {
        if !buf.is_empty() {
            if let Some(r) = classify(buf)? {
                return Ok(r);
            }
        }
        if buf.len() >= max {
            return Err(err(
                Reason::HeaderTooLarge,
                format!("request head is larger than limits.max_header_bytes ({max})"),
            ));
        }
        let want = chunk.len().min(max - buf.len());
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk[..want])).await {
            Err(_) => {
                return Err(err(
                    Reason::HeaderTimeout,
                    format!("request head not complete within timeouts.header ({timeout:?})"),
                ))
            }
            Ok(Err(e)) => {
                return Err(err(
                    Reason::BadRequest,
                    format!("reading request head: {e}"),
                ))
            }
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(err(
                Reason::BadRequest,
                if buf.is_empty() {
                    "connection closed before any request".to_string()
                } else {
                    "connection closed in the middle of the request head".to_string()
                },
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds() {
        let big = format!("GET http://a/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
        let mut io = big.as_bytes();
        let mut buf = Vec::new();
        let e = read_head(&mut io, &mut buf, 2048, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.refusal.reason, Reason::HeaderTooLarge);

        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"CONNECT a:443 HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let e = read_head(&mut server, &mut buf, 2048, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.refusal.reason, Reason::HeaderTimeout);
    }
}
