//! Bodies of forwarded exchanges: the request body counted on its way up, and the response body counted on
//! its way down, whose end (or drop) writes the exchange's close line.

use super::ctx::Ctx;
use super::http1::{strip_hop_by_hop, ProxyBody};
use crate::outcome::{Close, CloseReason, Kind, Outcome};
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Request body passed through while counting its bytes.
pub(super) struct CountingBody {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl CountingBody {
    /// `body` boxed for the upstream request, and the count of its bytes sent so far.
    pub(super) fn wrap(body: Incoming) -> (ProxyBody, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        let counted = CountingBody {
            inner: body,
            count: count.clone(),
        };
        (counted.boxed(), count)
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub(super) struct PendingClose {
    pub(super) ctx: Arc<Ctx>,
    pub(super) conn_id: u64,
    pub(super) request: u32,
    pub(super) kind: Kind,
    pub(super) host: Option<String>,
    pub(super) up: Arc<AtomicU64>,
    pub(super) started: Instant,
}

impl PendingClose {
    /// The close line a forwarded request's response owes, once it has streamed; `up` counts its request body.
    pub(super) fn of(ctx: &Arc<Ctx>, o: &Outcome, up: Arc<AtomicU64>, started: Instant) -> Self {
        PendingClose {
            ctx: ctx.clone(),
            conn_id: o.conn_id,
            request: o.request,
            kind: o.kind,
            host: o.host.clone(),
            up,
            started,
        }
    }
}

/// Response body passed through while counting; the close line is written when it ends or is dropped.
pub(super) struct Tracked {
    inner: Incoming,
    down: u64,
    close: Option<PendingClose>,
}

impl Tracked {
    /// The upstream's response for the client: hop-by-hop headers removed, and the body tracked so that
    /// `close` is logged when it ends.
    pub(super) fn response(resp: Response<Incoming>, close: PendingClose) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let tracked = Tracked {
            inner: body,
            down: 0,
            close: Some(close),
        };
        Response::from_parts(parts, tracked.boxed())
    }

    fn finish(&mut self, reason: CloseReason) {
        if let Some(p) = self.close.take() {
            p.ctx.log.close(&Close {
                conn_id: p.conn_id,
                request: p.request,
                kind: p.kind,
                host: p.host,
                bytes_up: p.up.load(Ordering::Relaxed),
                bytes_down: self.down,
                duration: p.started.elapsed(),
                close_reason: reason,
                hello_records: None,
                hello_reads: None,
            });
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.down += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(CloseReason::Eof);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(CloseReason::UpstreamError),
            Poll::Ready(None) => self.finish(CloseReason::Eof),
            Poll::Pending => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let reason = if self.inner.is_end_stream() {
            CloseReason::Eof
        } else {
            CloseReason::ClientGone
        };
        self.finish(reason);
    }
}
