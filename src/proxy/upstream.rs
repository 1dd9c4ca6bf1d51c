//! The upstream side of forwarded plain HTTP: a pooled hyper client whose connector is egressd's resolve →
//! check → connect dialer, and what each dial found, reported on the responses of its pooled connection.

use super::dial::{DialInfo, Dialer};
use crate::config::Runtime;
use crate::outcome::Outcome;
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
use tokio::net::TcpStream;

/// A body passed through egressd in either direction.
pub(super) type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

pub(super) type UpstreamClient = Client<Connector, ProxyBody>;

pub(super) fn upstream_client(dialer: Arc<Dialer>, settings: &Runtime) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(
            settings
                .timeouts
                .idle
                .min(std::time::Duration::from_secs(90)),
        )
        .pool_timer(TokioTimer::new())
        .set_host(false)
        .build(Connector { dialer })
}

/// What dialling found, attached to every response on the pooled connection. Timings are reported only
/// on the first request; later ones reuse the connection without a lookup or connect.
pub(super) struct DialRecord {
    info: DialInfo,
    reported: AtomicBool,
}

impl DialRecord {
    pub(super) fn report_into(&self, o: &mut Outcome) {
        let first = !self.reported.swap(true, Ordering::Relaxed);
        o.resolved_addrs = self.info.resolved.clone();
        o.upstream_addr = self.info.upstream;
        if first {
            o.dns_ms = self.info.dns_ms;
            o.connect_ms = self.info.connect_ms;
        }
    }
}

/// A dial failure together with what was learned before it failed.
#[derive(Debug)]
pub(super) struct ConnectFailure {
    pub(super) refusal: Refusal,
    pub(super) info: DialInfo,
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

#[derive(Clone)]
pub(super) struct Connector {
    dialer: Arc<Dialer>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Upstream;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Upstream, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let mut info = DialInfo::default();
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            let target = crate::target::parse_authority(authority, Some(80)).map_err(|e| {
                ConnectFailure {
                    refusal: Refusal::new(Reason::InvalidTarget, e.to_string()),
                    info: DialInfo::default(),
                }
            })?;
            match dialer.dial(&target, &mut info).await {
                Ok(stream) => Ok(Upstream {
                    io: TokioIo::new(stream),
                    record: Arc::new(DialRecord {
                        info,
                        reported: AtomicBool::new(false),
                    }),
                }),
                Err(refusal) => Err(ConnectFailure { refusal, info }),
            }
        })
    }
}

pub(super) struct Upstream {
    io: TokioIo<TcpStream>,
    record: Arc<DialRecord>,
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.record.clone())
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
