//! What the two transparent listeners share about a redirected connection: where it was going
//! (SO_ORIGINAL_DST), whether it is egressd's own traffic coming back (the loop guard), and dialling the
//! original destination once it is checked against the name's resolved addresses.

use super::dial::DialInfo;
use super::{ctx::Ctx, original_dst};
use crate::policy::transparent::{check_original_dst, is_loop};
use crate::reason::{Reason, Refusal};
use crate::target::Target;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The original destination of an accepted connection, unless it is unknown or egressd itself.
pub(super) fn redirected_to(stream: &TcpStream, own: &[SocketAddr]) -> Result<SocketAddr, Refusal> {
    let original = original_dst::original_dst(stream).map_err(|e| {
        Refusal::new(
            Reason::OriginalDstUnknown,
            format!(
                "no original destination for this connection ({e}); transparent listeners serve only \
                 connections redirected with iptables REDIRECT"
            ),
        )
    })?;
    let local = stream.local_addr().map_err(|e| {
        Refusal::new(
            Reason::OriginalDstUnknown,
            format!("the connection has no local address: {e}"),
        )
    })?;
    if is_loop(original, local, own) {
        return Err(Refusal::new(
            Reason::DeniedOriginalDstLoop,
            format!(
                "the original destination {original} is egressd's own listener: the connection was not \
                 redirected, or egressd's own traffic is redirected back to it (exclude egressd's user from \
                 the REDIRECT rule)"
            ),
        ));
    }
    Ok(original)
}

/// egressd's own upstream traffic redirected back to it (a REDIRECT rule that does not exclude egressd).
/// Checked once the connection's first bytes arrived: by then the dial that sent them has been recorded.
pub(super) fn own_traffic(ctx: &Ctx, client: SocketAddr) -> Option<Refusal> {
    ctx.dialer.dialled_from(client).then(|| {
        Refusal::new(
            Reason::DeniedOriginalDstLoop,
            format!(
                "the connection comes from {client}, an upstream connection of egressd itself: its own traffic \
                 is redirected back to it (exclude egressd from the REDIRECT rule, e.g. -m owner ! --uid-owner)"
            ),
        )
    })
}

/// Resolve the name, check every address, require the original destination among them (unless
/// `trust_original_dst`), and connect to the original destination.
pub(super) async fn dial_original(
    ctx: &Ctx,
    target: &Target,
    original: SocketAddr,
    info: &mut DialInfo,
) -> Result<TcpStream, Refusal> {
    if let Err(f) = ctx
        .settings
        .policy
        .destinations()
        .check_original(original.ip())
    {
        info.denied_addr = Some(f.addr);
        return Err(f.refusal);
    }
    if !ctx.settings.transparent.trust_original_dst {
        let resolved = ctx.dialer.resolve(target, info).await?;
        check_original_dst(original.ip(), &resolved, &target.host)?;
    }
    ctx.dialer
        .connect(&[original.ip()], original.port(), info)
        .await
}
