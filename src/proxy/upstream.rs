//! The upstream side of forwarded plain HTTP: pooled hyper clients, one whose connector is egressd's resolve →
//! check → connect dialer and one per parent proxy (requests in absolute form), and what each dial found,
//! reported on the responses of its pooled connection.

use super::dial::{DialInfo, Dialer};
use super::parent_reach::Unreached;
use super::upstream_io::UpstreamIo;
use crate::config::Runtime;
use crate::outcome::Outcome;
use crate::policy::route::Parent;
use crate::reason::{Reason, Refusal};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// A body passed through egressd in either direction.
pub(super) type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

pub(super) type UpstreamClient = Client<Connector, ProxyBody>;

/// The client for direct requests.
pub(super) fn upstream_client(dialer: Arc<Dialer>, settings: &Runtime) -> UpstreamClient {
    client(Connector::Direct(dialer), settings)
}

/// The client for requests through `parent`: its connections go to the parent (pooled per destination, so a
/// kept-alive connection carries requests for one destination only).
pub(super) fn parent_client(parent: Arc<Parent>, settings: &Runtime) -> UpstreamClient {
    client(Connector::Parent(parent), settings)
}

fn client(connector: Connector, settings: &Runtime) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(
            settings
                .timeouts
                .idle
                .min(std::time::Duration::from_secs(90)),
        )
        .pool_timer(TokioTimer::new())
        .set_host(false)
        .build(connector)
}

/// What dialling found, attached to every response on the pooled connection. Timings are reported only
/// on the first request; later ones reuse the connection without a lookup or connect.
pub(super) struct DialRecord {
    info: DialInfo,
    reported: AtomicBool,
}

impl DialRecord {
    /// Through a parent the connection did no lookup: what the request's own lookup recorded stays.
    pub(super) fn report_into(&self, o: &mut Outcome) {
        let first = !self.reported.swap(true, Ordering::Relaxed);
        if !self.info.resolved.is_empty() {
            o.resolved_addrs = self.info.resolved.clone();
        }
        o.upstream_addr = self.info.upstream;
        if first {
            o.dns_ms = self.info.dns_ms.or(o.dns_ms);
            o.connect_ms = self.info.connect_ms;
        }
    }
}

/// A dial failure together with what was learned before it failed.
#[derive(Debug)]
pub(super) struct ConnectFailure {
    pub(super) refusal: Refusal,
    pub(super) info: DialInfo,
    /// A parent that could not be reached: why, for its failover.
    pub(super) parent: Option<Unreached>,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.refusal.fmt(f)
    }
}

impl std::error::Error for ConnectFailure {}

pub(super) fn find_dial_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ConnectFailure> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<ConnectFailure>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

/// Where a client's connections go: to the destination (resolved and checked), or to a parent proxy.
#[derive(Clone)]
pub(super) enum Connector {
    Direct(Arc<Dialer>),
    Parent(Arc<Parent>),
}

impl tower_service::Service<Uri> for Connector {
    type Response = Upstream;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Upstream, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let mut info = DialInfo::default();
            let dialled = match connector {
                Connector::Direct(dialer) => {
                    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                    let target =
                        crate::target::parse_authority(authority, Some(80)).map_err(|e| {
                            ConnectFailure {
                                refusal: Refusal::new(Reason::InvalidTarget, e.to_string()),
                                info: DialInfo::default(),
                                parent: None,
                            }
                        })?;
                    match dialer.dial(&target, &mut info).await {
                        Ok(stream) => Ok((UpstreamIo::from(stream), false)),
                        Err(refusal) => Err((refusal, None)),
                    }
                }
                Connector::Parent(parent) => {
                    match super::parent_reach::connect(&parent, &mut info).await {
                        Ok(stream) => Ok((stream, true)),
                        // What the request's failover makes of it (`parent_http`) is what the client sees.
                        Err(why) => {
                            let detail = format!("parent {}: {}", parent.name, why.detail);
                            Err((Refusal::new(Reason::ParentUnreachable, detail), Some(why)))
                        }
                    }
                }
            };
            match dialled {
                Ok((stream, proxied)) => Ok(Upstream {
                    io: TokioIo::new(stream),
                    proxied,
                    record: Arc::new(DialRecord {
                        info,
                        reported: AtomicBool::new(false),
                    }),
                }),
                Err((refusal, parent)) => Err(ConnectFailure {
                    refusal,
                    info,
                    parent,
                }),
            }
        })
    }
}

pub(super) struct Upstream {
    io: TokioIo<UpstreamIo>,
    /// A connection to a parent proxy: requests go in absolute form.
    proxied: bool,
    record: Arc<DialRecord>,
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        Connected::new()
            .proxy(self.proxied)
            .extra(self.record.clone())
    }
}

impl hyper::rt::Read for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
