//! Refusal responses: status from the reason code, an `X-Egressd-Reason` header, and a short text body that
//! names the host, the reason code and what was wrong.

use super::client_io::ClientIo;
use crate::outcome::{Kind, Outcome};
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub const REASON_HEADER: &str = "x-egressd-reason";

pub fn body_text(o: &Outcome) -> String {
    let what = match (o.kind, &o.host, o.port) {
        (Kind::Connect, Some(h), Some(p)) => format!("CONNECT to {}:{p}", bracket(h)),
        (Kind::Transparent, Some(h), Some(p)) => format!("connection to {}:{p}", bracket(h)),
        (Kind::Http | Kind::TransparentHttp, Some(h), Some(p)) => {
            format!("request to {}:{p}", bracket(h))
        }
        _ => "request".to_string(),
    };
    let mut s = format!("egressd refused the {what}: {}", o.reason);
    if let Some(d) = &o.detail {
        s.push_str(&format!(" ({d})"));
    }
    s.push('\n');
    s
}

fn bracket(h: &str) -> String {
    if h.contains(':') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// Write a refusal on a raw connection and close it.
pub async fn write_refusal<S: ClientIo>(mut stream: S, o: &Outcome) {
    let body = body_text(o);
    let status = o.reason.status();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Egressd-Reason: {}\r\n\
         {}Content-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        o.reason,
        challenges(status)
            .iter()
            .map(|c| format!("Proxy-Authenticate: {c}\r\n"))
            .collect::<String>(),
        body.len()
    );
    // One write for head and body.
    let mut response = head.into_bytes();
    response.extend_from_slice(body.as_bytes());
    // A plain client socket takes the refusal and the FIN in one segment, mostly.
    let sent = stream.send_last(&response);
    if sent == response.len() {
        return;
    }
    let write = async {
        stream.write_all(&response[sent..]).await?;
        stream.shutdown().await
    };
    // A client that does not read its refusal must not hold the connection open.
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

/// A refusal as a hyper response (keep-alive connections stay usable for the next request).
pub fn refusal_response(o: &Outcome) -> http::Response<Full<Bytes>> {
    let mut b = http::Response::builder()
        .status(o.reason.status())
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(REASON_HEADER, o.reason.as_str());
    for c in challenges(o.reason.status()) {
        b = b.header(http::header::PROXY_AUTHENTICATE, *c);
    }
    b.body(Full::new(Bytes::from(body_text(o))))
        .expect("static response parts are valid")
}

/// The Proxy-Authenticate challenges of a 407: Basic first (what Java and .NET clients answer), then Bearer.
fn challenges(status: u16) -> &'static [&'static str] {
    if status == 407 {
        &[
            "Basic realm=\"egressd\", charset=\"UTF-8\"",
            "Bearer realm=\"egressd\"",
        ]
    } else {
        &[]
    }
}
