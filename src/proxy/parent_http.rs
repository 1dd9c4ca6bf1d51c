//! Plain HTTP through parent proxies: the request, already decided and with its upstream headers, goes in
//! absolute form to the first of the route's parents that can be reached, over that parent's pooled client
//! (kept-alive connections to the parent). A parent that cannot be reached is passed over and the request goes
//! to the next one with its body intact (nothing of it was sent); the response a parent relays is final, except
//! its own `407` challenge, which is egressd's business and never the client's.

use super::ctx::Ctx;
use super::dial::DialInfo;
use super::http1::{chain, ProxyBody};
use super::parent::refused;
use super::parent_reach::{check_destination, Failover};
use super::upstream::{find_dial_error, DialRecord};
use crate::outcome::Outcome;
use crate::policy::route::Parent;
use crate::reason::{Reason, Refusal};
use crate::target::Target;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Send `parts` and `body` (an absolute-form request for `target`) through `parents`; what happened is in `o`.
pub(super) async fn send(
    ctx: &Ctx,
    parents: &[Arc<Parent>],
    target: &Target,
    parts: http::request::Parts,
    body: ProxyBody,
    o: &mut Outcome,
) -> Result<Response<Incoming>, Refusal> {
    let mut info = DialInfo::default();
    let result = attempt(ctx, parents, target, parts, body, &mut info).await;
    info.record_into(o);
    let (resp, parent) = result?;
    if let Some(rec) = resp.extensions().get::<Arc<DialRecord>>() {
        rec.report_into(o);
    }
    if resp.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        o.parent_status.push(format!("{}=407", parent.name));
        let phrase = resp.status().canonical_reason().unwrap_or_default();
        return Err(refused(&parent, 407, phrase));
    }
    o.parent_status.push(format!("{}=relayed", parent.name));
    Ok(resp)
}

async fn attempt(
    ctx: &Ctx,
    parents: &[Arc<Parent>],
    target: &Target,
    parts: http::request::Parts,
    body: ProxyBody,
    info: &mut DialInfo,
) -> Result<(Response<Incoming>, Arc<Parent>), Refusal> {
    let mut failover = Failover::new(parents, &ctx.parents_down, info);
    check_destination(&ctx.dialer, parents, target, info).await?;
    let (body, mut kept) = Reclaimable::wrap(body);
    let mut body = Some(body);
    while let Some(parent) = failover.next(info) {
        let Some(client) = ctx.parent_client(&parent.name) else {
            continue;
        };
        let Some(this_body) = body.take().or_else(|| kept.reclaim()) else {
            break;
        };
        let mut req = Request::new(this_body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        if let Some(auth) = parent
            .authorization
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            req.headers_mut().insert(header::PROXY_AUTHORIZATION, auth);
        }
        match client.request(req).await {
            Ok(resp) => {
                failover.reached(parent, info);
                return Ok((resp, parent.clone()));
            }
            Err(e) => match find_dial_error(&e) {
                Some(d) if d.parent.is_some() => {
                    info.upstream = d.info.upstream;
                    info.connect_ms = d.info.connect_ms;
                    // Nothing was sent: the next parent gets the body (`kept.reclaim`).
                    if let Some(why) = d.parent.clone() {
                        failover.failed(parent, why, info);
                    }
                }
                _ => {
                    failover.reached(parent, info);
                    info.parent_status.push(format!("{}=error", parent.name));
                    return Err(Refusal::new(
                        Reason::UpstreamError,
                        format!(
                            "exchange through parent {} failed: {}",
                            parent.name,
                            chain(&e)
                        ),
                    ));
                }
            },
        }
    }
    Err(failover.exhausted(info))
}

/// The request body while it may still be taken back: it stays in a shared slot until the first read, so a
/// request whose connection failed before sending anything keeps its body for the next parent.
struct Reclaimable {
    state: State,
}

enum State {
    Waiting(Arc<Mutex<Option<ProxyBody>>>),
    Reading(ProxyBody),
}

/// The other end of a [`Reclaimable`]: takes the body back if nothing of it was read.
struct Kept(Arc<Mutex<Option<ProxyBody>>>);

impl Reclaimable {
    fn wrap(body: ProxyBody) -> (ProxyBody, Kept) {
        let slot = Arc::new(Mutex::new(Some(body)));
        let body = Reclaimable {
            state: State::Waiting(slot.clone()),
        };
        (body.boxed(), Kept(slot))
    }
}

impl Kept {
    /// The body, boxed again for the next request, unless it was read (then `None`).
    fn reclaim(&mut self) -> Option<ProxyBody> {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let (body, kept) = Reclaimable::wrap(body);
        *self = kept;
        Some(body)
    }
}

impl Body for Reclaimable {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let State::Waiting(slot) = &this.state {
            let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match taken {
                Some(body) => this.state = State::Reading(body),
                // Taken back for another request: this one ends.
                None => return Poll::Ready(None),
            }
        }
        match &mut this.state {
            State::Reading(body) => Pin::new(body).poll_frame(cx),
            State::Waiting(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Waiting(slot) => slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_none_or(|b| b.is_end_stream()),
            State::Reading(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Waiting(slot) => slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_default(),
            State::Reading(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn body(text: &'static str) -> ProxyBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed()
    }

    #[tokio::test]
    async fn an_unread_body_is_taken_back_whole() {
        let (first, mut kept) = Reclaimable::wrap(body("payload"));
        assert_eq!(first.size_hint().exact(), Some(7));
        drop(first);
        let again = kept.reclaim().expect("nothing was read");
        assert_eq!(again.size_hint().exact(), Some(7));
        let bytes = again.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"payload");
    }

    #[tokio::test]
    async fn a_body_once_read_is_not_taken_back() {
        let (first, mut kept) = Reclaimable::wrap(body("payload"));
        let bytes = first.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"payload");
        assert!(kept.reclaim().is_none());
    }
}
