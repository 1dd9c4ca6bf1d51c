//! CONNECT through parent proxies: after the verdict allowed the request (and, unless every parent of the
//! route resolves for itself, after the destination check of its addresses), ask the route's parents in
//! order to CONNECT to the NAME. A parent that cannot be reached is skipped for `parent_health::DOWN_FOR` and the next one
//! is asked; a parent's refusal is final. Steps record facts in the outcome and never log.

use super::ctx::Ctx;
use super::dial::{tune_socket, DialInfo};
use crate::outcome::Outcome;
use crate::policy::route::Parent;
use crate::reason::{Reason, Refusal};
use crate::target::Target;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest parent response head read.
const MAX_HEAD: usize = 16 * 1024;

/// A tunnel to `target` through the first of `parents` that takes it. The stream returned has had the
/// parent's `200` read off it: it is the tunnel.
pub(super) async fn dial(
    ctx: &Ctx,
    parents: &[Arc<Parent>],
    target: &Target,
    info: &mut DialInfo,
    o: &mut Outcome,
) -> Result<TcpStream, Refusal> {
    o.via = Some(
        parents
            .iter()
            .map(|p| &*p.name)
            .collect::<Vec<_>>()
            .join(","),
    );
    if parents.iter().all(|p| p.resolve_at_parent) {
        o.resolve = Some("parent");
    } else {
        o.resolve = Some("local");
        ctx.dialer.resolve(target, info).await?;
    }
    // Parents passed over are asked anyway when every one of them is down: one that came back is used at once.
    let all_down = parents.iter().all(|p| ctx.parents_down.is_down(&p.name));
    let mut timeouts = 0;
    let mut tried = 0;
    for parent in parents {
        if !all_down && ctx.parents_down.is_down(&parent.name) {
            o.parent_status.push(format!("{}=skipped", parent.name));
            continue;
        }
        tried += 1;
        let started = Instant::now();
        let connected = tokio::time::timeout(
            parent.connect_timeout,
            TcpStream::connect((parent.host.as_str(), parent.port)),
        )
        .await;
        info.connect_ms = Some(crate::telemetry::log::elapsed_ms(started.elapsed()));
        let mut stream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                ctx.parents_down.mark(&parent.name);
                let what = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    "refused"
                } else {
                    "unreachable"
                };
                o.parent_status.push(format!("{}={what}", parent.name));
                continue;
            }
            Err(_) => {
                ctx.parents_down.mark(&parent.name);
                timeouts += 1;
                o.parent_status.push(format!("{}=timeout", parent.name));
                continue;
            }
        };
        ctx.parents_down.clear(&parent.name);
        tune_socket(socket2::SockRef::from(&stream));
        info.upstream = stream.peer_addr().ok();
        o.via = Some(parent.name.to_string());
        let answer = tokio::time::timeout(
            ctx.settings.timeouts.connect,
            ask(&mut stream, parent, target),
        )
        .await;
        return match answer {
            Err(_) => {
                o.parent_status.push(format!("{}=timeout", parent.name));
                Err(Refusal::new(
                    Reason::ParentTimeout,
                    format!(
                        "parent {} did not answer the CONNECT within {:?}",
                        parent.name, ctx.settings.timeouts.connect
                    ),
                ))
            }
            Ok(Err(e)) => {
                o.parent_status.push(format!("{}=error", parent.name));
                Err(Refusal::new(
                    Reason::ParentUnreachable,
                    format!("parent {}: {e}", parent.name),
                ))
            }
            Ok(Ok((status, phrase))) => {
                o.parent_status.push(format!("{}={status}", parent.name));
                if (200..300).contains(&status) {
                    Ok(stream)
                } else {
                    Err(Refusal::new(
                        Reason::ParentRefused,
                        format!("parent {} answered {status} {phrase}", parent.name),
                    ))
                }
            }
        };
    }
    let attempts = o.parent_status.join(", ");
    if tried > 0 && timeouts == tried {
        Err(Refusal::new(
            Reason::ParentTimeout,
            format!("no parent accepted the connection in time ({attempts})"),
        ))
    } else {
        Err(Refusal::new(
            Reason::ParentUnreachable,
            format!("no parent could be reached ({attempts})"),
        ))
    }
}

/// Send the CONNECT (by name) and read the parent's response head: its status and reason phrase.
async fn ask(
    stream: &mut TcpStream,
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
    // Byte by byte: nothing past the head may be read, it belongs to the tunnel.
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
    // Reading stopped at the head's last byte without seeing the socket empty, so it still counts as readable:
    // look (without taking anything) until the kernel says there is nothing, or the tunnel's first bytes would be
    // taken for a server speaking first.
    let sock = socket2::SockRef::from(&*stream);
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        sock.peek(&mut [std::mem::MaybeUninit::uninit(); 1])
    });
    parse_status(&head)
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
