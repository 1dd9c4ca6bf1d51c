//! Parent proxies: after the verdict allowed the request (and, unless every parent of the route resolves for
//! itself, after the destination check of its addresses), the route's parents are tried in order. A CONNECT
//! asks the parent to CONNECT to the NAME (here); plain HTTP is sent to it in absolute form (`forward`). A
//! parent that cannot be reached (TCP, or the TLS handshake of an `https://` parent) is passed over for
//! `parent_health::DOWN_FOR` and the next one is tried; a parent's answer is final. Steps record facts in the
//! dial record and never log.

use super::ctx::Ctx;
use super::dial::DialInfo;
use super::parent_reach::{check_destination, connect, Failover};
use super::upstream_io::UpstreamIo;
use crate::policy::route::{Parent, Via};
use crate::reason::{Reason, Refusal};
use crate::target::Target;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest parent response head read.
const MAX_HEAD: usize = 16 * 1024;

/// The parents an allowed request for `target` goes through (the rule that allowed it chooses), or `None` to
/// send it directly; a direct route is recorded in `via` as such when parents are configured.
pub(super) fn route(
    ctx: &Ctx,
    rule: Option<&str>,
    target: &Target,
    via: &mut Option<String>,
) -> Option<Vec<Arc<Parent>>> {
    let routes = &ctx.settings.routes;
    match routes.choose(rule, target) {
        Via::Parents(parents) => Some(parents),
        Via::Direct => {
            if routes.any() {
                *via = Some("direct".into());
            }
            None
        }
    }
}

/// A tunnel to `target` through the first of `parents` that takes it. The stream returned has had the
/// parent's `200` read off it: it is the tunnel.
pub(super) async fn dial(
    ctx: &Ctx,
    parents: &[Arc<Parent>],
    target: &Target,
    info: &mut DialInfo,
) -> Result<UpstreamIo, Refusal> {
    let mut failover = Failover::new(parents, &ctx.parents_down, info);
    check_destination(&ctx.dialer, parents, target, info).await?;
    while let Some(parent) = failover.next(info) {
        let mut stream = match connect(parent, info).await {
            Ok(s) => s,
            Err(why) => {
                failover.failed(parent, why, info);
                continue;
            }
        };
        failover.reached(parent, info);
        let answer = tokio::time::timeout(
            ctx.settings.timeouts.connect,
            ask(&mut stream, parent, target),
        )
        .await;
        return match answer {
            Err(_) => {
                info.parent_status.push(format!("{}=timeout", parent.name));
                Err(Refusal::new(
                    Reason::ParentTimeout,
                    format!(
                        "parent {} did not answer the CONNECT within {:?}",
                        parent.name, ctx.settings.timeouts.connect
                    ),
                ))
            }
            Ok(Err(e)) => {
                info.parent_status.push(format!("{}=error", parent.name));
                Err(Refusal::new(
                    Reason::ParentUnreachable,
                    format!("parent {}: {e}", parent.name),
                ))
            }
            Ok(Ok((status, phrase))) => {
                info.parent_status.push(format!("{}={status}", parent.name));
                if (200..300).contains(&status) {
                    Ok(stream)
                } else {
                    Err(refused(parent, status, &phrase))
                }
            }
        };
    }
    Err(failover.exhausted(info))
}

/// A parent's answer other than success: final, and never passed to the client as it is (a 407 challenge is
/// egressd's business, not the client's).
pub(super) fn refused(parent: &Parent, status: u16, phrase: &str) -> Refusal {
    Refusal::new(
        Reason::ParentRefused,
        format!("parent {} answered {status} {phrase}", parent.name),
    )
}

/// Send the CONNECT (by name) and read the parent's response head: its status and reason phrase.
async fn ask(
    stream: &mut UpstreamIo,
    parent: &Parent,
    target: &Target,
) -> Result<(u16, String), String> {
    let authority = target.authority();
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = &parent.authorization {
        req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending the CONNECT: {e}"))?;
    // Nothing past the head may be taken: it belongs to the tunnel.
    let head = match stream {
        UpstreamIo::Tcp(tcp) => read_head_tcp(tcp).await?,
        // Over TLS the bytes are already in rustls's buffer: one at a time costs no system call.
        UpstreamIo::Tls(tls) => read_head_bytewise(tls).await?,
    };
    parse_status(&head)
}

/// The response head on a TCP socket: look at what has arrived (MSG_PEEK), then take exactly the head, so
/// the answer usually costs one peek and one read.
async fn read_head_tcp(tcp: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut head: Vec<u8> = Vec::with_capacity(128);
    let mut buf = vec![0u8; MAX_HEAD];
    loop {
        let n = match tcp.peek(&mut buf).await {
            Ok(0) => return Err("closed the connection without answering the CONNECT".into()),
            Ok(n) => n,
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        // The end of the head may straddle what was taken before and what arrived now.
        let carried = head.len().min(3);
        let mut window = head[head.len() - carried..].to_vec();
        window.extend_from_slice(&buf[..n]);
        let take = match window.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) => at + 4 - carried,
            None => n,
        };
        if head.len() + take > MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
        tcp.read_exact(&mut buf[..take])
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        head.extend_from_slice(&buf[..take]);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    // The read took the head's last byte without seeing the socket empty, so it still counts as readable:
    // look (without taking anything) until the kernel says there is nothing, or the tunnel's first bytes would be
    // taken for a server speaking first.
    let sock = socket2::SockRef::from(&*tcp);
    let _ = tcp.try_io(tokio::io::Interest::READABLE, || {
        sock.peek(&mut [std::mem::MaybeUninit::uninit(); 1])
    });
    Ok(head)
}

async fn read_head_bytewise<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, String> {
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("closed the connection without answering the CONNECT".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    Ok(head)
}

/// `HTTP/1.x NNN phrase` of a response head.
fn parse_status(head: &[u8]) -> Result<(u16, String), String> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("not an HTTP response: {line:?}"));
    };
    match code.parse::<u16>() {
        Ok(status) if version.starts_with("HTTP/1.") && (100..600).contains(&status) => {
            let phrase: String = parts
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            Ok((status, phrase))
        }
        _ => Err(format!("not an HTTP response: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head is taken whole, even split mid-terminator, and not a byte of the tunnel after it.
    #[tokio::test]
    async fn the_head_is_taken_and_nothing_after_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let writer = tokio::spawn(async move {
            server
                .write_all(b"HTTP/1.1 200 OK\r\nX: y\r\n\r")
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            server.write_all(b"\nserver-first").await.unwrap();
            server
        });
        let head = read_head_tcp(&mut client).await.unwrap();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n");
        let _server = writer.await.unwrap();
        let mut rest = [0u8; 12];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"server-first");
    }

    #[test]
    fn reads_status_and_phrase() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Ok((200, "Connection established".into()))
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 407 Proxy Authentication Required\r\nX: y\r\n\r\n"),
            Ok((407, "Proxy Authentication Required".into()))
        );
        assert!(parse_status(b"SSH-2.0-x\r\n\r\n").is_err());
    }
}
