//! The admin listener: `GET /metrics` (Prometheus text), `/healthz` (the process answers), `/readyz` (ready to
//! take traffic: listeners bound, policy loaded, resolver usable, not shutting down). Anything else is 404.

use crate::telemetry::metrics::Metrics;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Time a scraper gets to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often buffered histogram samples are folded into buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What the admin endpoints report on (the proxy's live state implements it): the admin listener needs
/// nothing else of the proxy.
pub trait Health: Send + Sync + 'static {
    /// The Prometheus text of the metrics in force.
    fn metrics_text(&self) -> String;
    /// `Ok` when ready for traffic (with notes on what works only in part, shown after `ready`), else why not.
    fn ready(&self) -> Result<Vec<String>, String>;
}

/// Serve the admin endpoints until `stop` fires.
pub async fn serve(listener: TcpListener, live: Arc<dyn Health>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let live = live.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let live = live.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&*live, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Fold histogram samples periodically so memory stays bounded however rarely /metrics is scraped.
pub async fn upkeep(metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(UPKEEP_EVERY) => metrics.upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

fn route(live: &dyn Health, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, live.metrics_text());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => match live.ready() {
            Ok(notes) => text(
                StatusCode::OK,
                notes
                    .iter()
                    .fold("ready\n".to_string(), |t, n| t + n + "\n"),
            ),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
