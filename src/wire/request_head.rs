//! Classifying the first request head on a client connection (pure parsing; the bounded read loop is
//! `proxy::head`). CONNECT is handled directly from the result; absolute-form requests are handed to hyper
//! together with the bytes already read.

use crate::policy::credentials::ProxyAuth;
use crate::reason::{Reason, Refusal};

const MAX_HEADERS: usize = 128;

/// What the first request on a connection asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `CONNECT authority`; `head_len` bytes of the buffer are the head, anything after is tunnel data.
    /// `proxy_auth` is the Proxy-Authorization header, if any.
    Connect {
        authority: String,
        head_len: usize,
        proxy_auth: Option<ProxyAuth>,
    },
    /// An absolute-form http:// request: hyper re-reads it from the buffer.
    Forward,
}

#[derive(Debug, PartialEq, Eq)]
pub struct HeadError {
    pub refusal: Refusal,
    /// Method and request-target, when the request line could be read, for the log line.
    pub method: Option<String>,
}

pub(crate) fn err(reason: Reason, detail: impl Into<String>) -> HeadError {
    HeadError {
        refusal: Refusal::new(reason, detail),
        method: None,
    }
}

/// Classify a complete head; `Ok(None)` means more bytes are needed.
pub fn classify(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::Version) => {
            return Err(err(
                Reason::UnsupportedVersion,
                "only HTTP/1.0 and HTTP/1.1 requests are supported",
            ))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(err(
                Reason::HeaderTooLarge,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(_) if is_http09(buf) => {
            return Err(err(
                Reason::UnsupportedVersion,
                "HTTP/0.9 requests (a request line without a version) are not supported",
            ))
        }
        Err(e) => {
            return Err(err(
                Reason::BadRequest,
                format!("malformed request head: {e}"),
            ))
        }
    };
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    let with_method = |mut e: HeadError| {
        e.method = Some(method.to_string());
        e
    };
    let fields = req.headers.iter().map(|h| (h.name, h.value));
    if let Some(problem) = framing_problem(fields, req.version == Some(0)) {
        return Err(with_method(err(Reason::BadRequest, problem)));
    }
    if method == "CONNECT" {
        if path.starts_with('/') || path.contains("://") {
            return Err(with_method(err(
                Reason::InvalidTarget,
                format!("CONNECT needs host:port as its target, got {path:?}"),
            )));
        }
        let proxy_auth = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
            .map(|h| ProxyAuth(String::from_utf8_lossy(h.value).into_owned()));
        return Ok(Some(Request::Connect {
            authority: path.to_string(),
            head_len,
            proxy_auth,
        }));
    }
    if path.starts_with('/') || path == "*" {
        return Err(with_method(err(
            Reason::NotProxyRequest,
            format!(
                "{method} {path} is an origin-form request; this is a forward proxy: send CONNECT host:port \
                 or an absolute URL such as GET http://host/path"
            ),
        )));
    }
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("http://") {
        // hyper re-reads this head and would answer an unparsable URI with a bare 400; refuse it here,
        // with the reason, instead.
        if let Err(e) = path.parse::<http::Uri>() {
            return Err(with_method(err(
                Reason::InvalidTarget,
                format!("{path:?} is not a valid URL: {e}"),
            )));
        }
        return Ok(Some(Request::Forward));
    }
    let scheme = lower.split_once("://").map(|(s, _)| s.to_string());
    Err(with_method(match scheme {
        Some(s) => err(
            Reason::UnsupportedScheme,
            format!(
                "{s}:// URLs are not proxied; use CONNECT for https and http:// for plain HTTP"
            ),
        ),
        None => err(
            Reason::InvalidTarget,
            format!("{path:?} is not an absolute http:// URL"),
        ),
    }))
}

/// `METHOD target` and the end of the line: an HTTP/0.9 request line.
fn is_http09(buf: &[u8]) -> bool {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        return false;
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let mut parts = line.split(|b| *b == b' ');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(m), Some(t), None) if !m.is_empty() && !t.is_empty() && m.iter().all(u8::is_ascii_uppercase)
    )
}

/// Header fields that make a request ambiguous to the next parser: more than one Host, more than one
/// Content-Length (or a list of them), Content-Length together with Transfer-Encoding (the classic request
/// smuggling pair, RFC 9112 §6.3), more than one Transfer-Encoding field, a Transfer-Encoding other than
/// `chunked` alone (the proxy re-frames the body as chunked, so any other coding would be lost), or one on
/// HTTP/1.0. Such requests are refused rather than repaired. `None` when the framing is unambiguous.
pub fn framing_problem<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
    http10: bool,
) -> Option<String> {
    let (mut hosts, mut lengths, mut tes, mut te): (usize, usize, usize, Option<&[u8]>) =
        (0, 0, 0, None);
    for (name, value) in fields {
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            lengths += 1 + value.iter().filter(|b| **b == b',').count();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            tes += 1;
            te = Some(value);
        }
    }
    if hosts > 1 {
        return Some("more than one Host header".into());
    }
    if lengths > 1 {
        return Some("more than one Content-Length value".into());
    }
    if tes > 1 {
        return Some("more than one Transfer-Encoding header".into());
    }
    let te = te?;
    if lengths > 0 {
        return Some(
            "both Content-Length and Transfer-Encoding: a request framed two ways could be read \
             differently upstream (request smuggling)"
                .into(),
        );
    }
    if http10 {
        return Some("Transfer-Encoding in an HTTP/1.0 request".into());
    }
    let codings = String::from_utf8_lossy(te);
    let last = codings.rsplit(',').next().unwrap_or_default().trim();
    if !last.eq_ignore_ascii_case("chunked") {
        return Some(format!(
            "Transfer-Encoding {last:?}: the last coding of a request must be chunked"
        ));
    }
    if !codings.trim().eq_ignore_ascii_case("chunked") {
        return Some(format!(
            "Transfer-Encoding {:?}: only chunked is forwarded; another coding would be dropped",
            codings.trim()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let cases: &[(&str, Result<&str, Reason>)] = &[
            (
                "CONNECT api.cast.ai:443 HTTP/1.1\r\nHost: api.cast.ai:443\r\n\r\n",
                Ok("connect"),
            ),
            (
                "GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Ok("forward"),
            ),
            ("POST HTTP://a.example/ HTTP/1.0\r\n\r\n", Ok("forward")),
            (
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Err(Reason::NotProxyRequest),
            ),
            ("OPTIONS * HTTP/1.1\r\n\r\n", Err(Reason::NotProxyRequest)),
            (
                "GET https://a.example/ HTTP/1.1\r\n\r\n",
                Err(Reason::UnsupportedScheme),
            ),
            (
                "GET ftp://a.example/ HTTP/1.1\r\n\r\n",
                Err(Reason::UnsupportedScheme),
            ),
            ("GET a.example HTTP/1.1\r\n\r\n", Err(Reason::InvalidTarget)),
            (
                "CONNECT http://a.example:443 HTTP/1.1\r\n\r\n",
                Err(Reason::InvalidTarget),
            ),
            (
                "GET http://a/ HTTP/2.0\r\n\r\n",
                Err(Reason::UnsupportedVersion),
            ),
            (
                "GET http://a/ HTTP/1.1\r\nbad header\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            ("\x00\x01\x02 garbage\r\n\r\n", Err(Reason::BadRequest)),
            (
                "GET http://a/ HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Ok("forward"),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                Err(Reason::BadRequest),
            ),
            (
                "POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
                Ok("forward"),
            ),
            ("GET http://a/\r\n\r\n", Err(Reason::UnsupportedVersion)),
            (
                "GET http://a%2e/ HTTP/1.1\r\n\r\n",
                Err(Reason::InvalidTarget),
            ),
        ];
        for (input, want) in cases {
            let got = classify(input.as_bytes()).map(|r| match r {
                Some(Request::Connect { .. }) => "connect",
                Some(Request::Forward) => "forward",
                None => "partial",
            });
            assert_eq!(got.map_err(|e| e.refusal.reason), *want, "{input:?}");
        }
    }

    #[test]
    fn partial_and_pipelined() {
        assert_eq!(classify(b"CONNECT a:443 HTTP/1.1\r\n"), Ok(None));
        let buf = b"CONNECT a.example:443 HTTP/1.1\r\n\r\n\x16\x03\x01";
        match classify(buf).unwrap().unwrap() {
            Request::Connect {
                authority,
                head_len,
                ..
            } => {
                assert_eq!(authority, "a.example:443");
                assert_eq!(&buf[head_len..], b"\x16\x03\x01");
            }
            other => panic!("{other:?}"),
        }
    }
}
