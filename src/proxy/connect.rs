//! CONNECT tunnels: decide, dial the checked address, answer 200, splice.

use super::{respond, splice, Ctx};
use crate::telemetry::log::{Close, Kind, Outcome};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Decide and dial for a CONNECT authority. The outcome is complete (and logged) when this returns;
/// `None` means refused, with the reason in the outcome.
pub(super) async fn open(ctx: &Ctx, authority: &str, o: &mut Outcome) -> Option<TcpStream> {
    o.method = Some("CONNECT".into());
    let target = ctx.target(authority, None, o)?;
    let upstream = if ctx.decide(&target, o) {
        let mut info = super::dial::DialInfo::default();
        let r = ctx.dialer.dial(&target, &mut info).await;
        o.resolved_addrs = info.resolved;
        o.denied_addr = info.denied_addr;
        o.upstream_addr = info.upstream;
        o.dns_ms = info.dns_ms;
        o.connect_ms = info.connect_ms;
        r.map_err(|e| o.refuse(e.reason, e.detail)).ok()
    } else {
        None
    };
    ctx.log.decision(o);
    upstream
}

/// Splice an established tunnel and log its close line. `early` is data the client sent after the CONNECT
/// head without waiting for the 200; it is forwarded first, never dropped.
pub(super) async fn run_tunnel<C>(
    ctx: &Ctx,
    client: C,
    mut upstream: TcpStream,
    early: &[u8],
    o: &Outcome,
) where
    C: AsyncRead + AsyncWrite,
{
    let started = Instant::now();
    let mut early_bytes = 0;
    if !early.is_empty() && upstream.write_all(early).await.is_ok() {
        early_bytes = early.len() as u64;
    }
    let idle = crate::policy::IdleOverride::resolve(o.idle, ctx.settings.timeouts.idle);
    let s = splice::splice(client, upstream, idle, ctx.shutdown.cancelled()).await;
    ctx.log.close(&Close {
        conn_id: o.conn_id,
        request: o.request,
        kind: Kind::Connect,
        host: o.host.clone(),
        bytes_up: s.bytes_up + early_bytes,
        bytes_down: s.bytes_down,
        duration: started.elapsed(),
        close_reason: s.close_reason,
    });
}

/// CONNECT as the first request on a connection: answered on the raw socket, no HTTP library involved.
pub(super) async fn handle_first(
    ctx: Arc<Ctx>,
    mut stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    buf: Vec<u8>,
    head_len: usize,
    authority: String,
) {
    let mut o = Outcome::new(conn_id, 1, peer, Kind::Connect);
    let Some(upstream) = open(&ctx, &authority, &mut o).await else {
        respond::write_refusal(stream, &o).await;
        return;
    };
    let established = stream
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await;
    match established {
        Ok(()) => run_tunnel(&ctx, stream, upstream, &buf[head_len..], &o).await,
        Err(_) => ctx.log.close(&Close {
            conn_id,
            request: 1,
            kind: Kind::Connect,
            host: o.host.clone(),
            bytes_up: 0,
            bytes_down: 0,
            duration: std::time::Duration::ZERO,
            close_reason: crate::telemetry::log::CloseReason::ClientGone,
        }),
    }
}
