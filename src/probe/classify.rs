//! How `egressd probe` names what went wrong (pure): each failure is one step (`dns`, `refused_address`,
//! `connect`, `proxy`, `tls`, `certificate`), a short stable error code and the detail; plus the facts read off
//! a proxy's answer and a server's certificate.

use crate::policy::special_ip;
use crate::proxy::dial::{DialInfo, DnsFailure};
use crate::reason::{Reason, Refusal};
use rustls::CertificateError;
use serde::Serialize;
use std::time::Duration;

/// The step of a probe that failed, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Dns,
    RefusedAddress,
    Connect,
    Proxy,
    Tls,
    Certificate,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Dns => "dns",
            Step::RefusedAddress => "refused_address",
            Step::Connect => "connect",
            Step::Proxy => "proxy",
            Step::Tls => "tls",
            Step::Certificate => "certificate",
        }
    }
}

/// A failed step: `error` is a short snake_case code (`nxdomain`, `refused`, `unknown_issuer`, a proxy's reason
/// code, ...), `detail` says what happened and, where there is one, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub step: Step,
    pub error: String,
    pub detail: String,
}

impl Failure {
    pub fn new(step: Step, error: impl Into<String>, detail: impl Into<String>) -> Self {
        Failure {
            step,
            error: error.into(),
            detail: detail.into(),
        }
    }

    /// A step that did not finish within `--timeout`.
    pub fn timeout(step: Step, what: &str, limit: Duration) -> Self {
        Failure::new(
            step,
            "timeout",
            format!(
                "{what}: no answer within {} (--timeout)",
                humantime::format_duration(limit)
            ),
        )
    }
}

/// A refusal of the dialer's resolve, check or connect, as the step it failed at.
pub fn dial_failure(r: &Refusal, info: &DialInfo) -> Failure {
    match r.reason {
        Reason::DnsFailed | Reason::DnsTimeout => {
            let error = match info.dns_failure {
                Some(DnsFailure::NxDomain) => "nxdomain",
                Some(DnsFailure::NoAddresses) => "no_addresses",
                Some(DnsFailure::Timeout) => "timeout",
                _ if r.reason == Reason::DnsTimeout => "timeout",
                _ => "failed",
            };
            Failure::new(Step::Dns, error, r.detail.clone())
        }
        Reason::DeniedPrivateAddress => {
            let range = info
                .denied_addr
                .and_then(special_ip::special_purpose)
                .map_or("special_purpose", |r| r.name);
            Failure::new(
                Step::RefusedAddress,
                range,
                format!(
                    "{}; egressd refuses it unless destinations.allow_cidrs (or the rule's private_cidrs) \
                     lists it",
                    r.detail
                ),
            )
        }
        Reason::UpstreamRefused => Failure::new(Step::Connect, "refused", r.detail.clone()),
        Reason::UpstreamConnectTimeout => Failure::new(Step::Connect, "timeout", r.detail.clone()),
        _ => Failure::new(Step::Connect, "unreachable", r.detail.clone()),
    }
}

/// A failed TLS handshake: a certificate the roots or the name do not vouch for is a `certificate` failure,
/// anything else a `tls` one.
pub fn tls_failure(e: &rustls::Error, custom_ca: bool) -> Failure {
    let rustls::Error::InvalidCertificate(cert) = e else {
        let error = match e {
            rustls::Error::AlertReceived(_) => "alert",
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                "incompatible"
            }
            _ => "handshake",
        };
        return Failure::new(Step::Tls, error, e.to_string());
    };
    let error = match cert {
        CertificateError::UnknownIssuer => "unknown_issuer",
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "name_mismatch"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not_yet_valid"
        }
        CertificateError::Revoked => "revoked",
        CertificateError::BadSignature => "bad_signature",
        _ => "invalid",
    };
    let mut detail = e.to_string();
    if error == "unknown_issuer" {
        detail.push_str(if custom_ca {
            "; the --ca bundle does not hold its issuer"
        } else {
            "; not issued by a Mozilla root: a server with a private CA needs --ca FILE, and a proxy that \
             intercepts TLS on the way makes this too"
        });
    }
    Failure::new(Step::Certificate, error, detail)
}

/// An I/O error during the handshake: the rustls error inside it, or the connection lost.
pub fn handshake_io_failure(e: &std::io::Error, custom_ca: bool) -> Failure {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return tls_failure(tls, custom_ca);
    }
    let error = match e.kind() {
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => "closed",
        _ => "handshake",
    };
    Failure::new(
        Step::Tls,
        error,
        format!(
            "the handshake ended: {e} (the server, or something on the way, closed the connection)"
        ),
    )
}

/// The head of a proxy's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyAnswer {
    pub status: u16,
    /// egressd's reason code (`X-Egressd-Reason`), when the proxy sent one.
    pub reason: Option<String>,
    /// The first line of a refusal's body (egressd says there what was refused and why).
    pub message: Option<String>,
    #[serde(skip)]
    pub content_length: Option<usize>,
}

/// Parse a complete response head (through the blank line).
pub fn parse_proxy_answer(head: &[u8]) -> Result<ProxyAnswer, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("an incomplete response head".into()),
        Err(e) => {
            let line =
                String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default())
                    .trim_end()
                    .chars()
                    .take(80)
                    .collect::<String>();
            return Err(format!("not an HTTP response ({e}): {line:?}"));
        }
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_string())
    };
    Ok(ProxyAnswer {
        status: resp.code.unwrap_or_default(),
        reason: header(crate::proxy::REASON_HEADER),
        message: None,
        content_length: header("content-length").and_then(|v| v.parse().ok()),
    })
}

/// The first non-empty line of a refusal's body, for [`ProxyAnswer::message`].
pub fn body_message(body: &[u8]) -> Option<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}

/// A proxy answer other than 2xx, as a `proxy` failure: egressd's reason code when it sent one.
pub fn proxy_failure(a: &ProxyAnswer) -> Option<Failure> {
    if (200..300).contains(&a.status) {
        return None;
    }
    let error = a
        .reason
        .clone()
        .unwrap_or_else(|| format!("status_{}", a.status));
    let phrase = http::StatusCode::from_u16(a.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut detail = format!("the proxy answered {} {phrase}", a.status);
    if let Some(m) = &a.message {
        detail.push_str(&format!(": {m}"));
    }
    if a.status == 407 {
        detail.push_str(" (give credentials in --via http://USER:PASSWORD@HOST:PORT)");
    }
    Some(Failure::new(Step::Proxy, error, detail))
}

/// When the certificate `der` stops being valid (RFC 3339, UTC) and how many whole days are left from `now`
/// (negative once past).
pub fn expiry(der: &[u8], now: time::OffsetDateTime) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.to_datetime();
    let shown = not_after
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    Some((shown, (not_after - now).whole_days()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn dial_refusals_become_their_step() {
        let mut info = DialInfo {
            dns_failure: Some(DnsFailure::NxDomain),
            ..DialInfo::default()
        };
        let f = dial_failure(&Refusal::new(Reason::DnsFailed, "x does not exist"), &info);
        assert_eq!((f.step, f.error.as_str()), (Step::Dns, "nxdomain"));
        info.dns_failure = Some(DnsFailure::NoAddresses);
        let f = dial_failure(&Refusal::new(Reason::DnsFailed, "-"), &info);
        assert_eq!(f.error, "no_addresses");
        info.dns_failure = None;
        let f = dial_failure(&Refusal::new(Reason::DnsTimeout, "-"), &info);
        assert_eq!((f.step, f.error.as_str()), (Step::Dns, "timeout"));

        info.denied_addr = Some("127.0.0.1".parse::<IpAddr>().unwrap());
        let f = dial_failure(
            &Refusal::new(
                Reason::DeniedPrivateAddress,
                "127.0.0.1 is in 127.0.0.0/8 (loopback)",
            ),
            &info,
        );
        assert_eq!(
            (f.step, f.error.as_str()),
            (Step::RefusedAddress, "loopback")
        );
        assert!(
            f.detail.contains("127.0.0.1 is in 127.0.0.0/8") && f.detail.contains("allow_cidrs")
        );

        for (reason, error) in [
            (Reason::UpstreamRefused, "refused"),
            (Reason::UpstreamConnectTimeout, "timeout"),
            (Reason::UpstreamUnreachable, "unreachable"),
        ] {
            let f = dial_failure(&Refusal::new(reason, "-"), &info);
            assert_eq!((f.step, f.error.as_str()), (Step::Connect, error));
        }
    }

    #[test]
    fn certificate_errors_are_told_apart_from_handshake_errors() {
        let cert = |c| rustls::Error::InvalidCertificate(c);
        for (e, error) in [
            (cert(CertificateError::UnknownIssuer), "unknown_issuer"),
            (cert(CertificateError::NotValidForName), "name_mismatch"),
            (cert(CertificateError::Expired), "expired"),
            (cert(CertificateError::NotValidYet), "not_yet_valid"),
            (cert(CertificateError::BadEncoding), "invalid"),
        ] {
            let f = tls_failure(&e, false);
            assert_eq!(
                (f.step, f.error.as_str()),
                (Step::Certificate, error),
                "{e}"
            );
        }
        assert!(tls_failure(&cert(CertificateError::UnknownIssuer), false)
            .detail
            .contains("--ca FILE"));
        let f = tls_failure(
            &rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            false,
        );
        assert_eq!((f.step, f.error.as_str()), (Step::Tls, "alert"));

        // tokio-rustls hands the rustls error over inside an io::Error.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            cert(CertificateError::Expired),
        );
        assert_eq!(handshake_io_failure(&io, true).error, "expired");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        let f = handshake_io_failure(&eof, true);
        assert_eq!((f.step, f.error.as_str()), (Step::Tls, "closed"));
    }

    #[test]
    fn proxy_answers_carry_egressd_reason_codes() {
        let head = b"HTTP/1.1 403 Forbidden\r\nX-Egressd-Reason: denied_no_rule\r\nContent-Length: 12\r\n\r\n";
        let mut a = parse_proxy_answer(head).unwrap();
        assert_eq!(
            (a.status, a.reason.as_deref(), a.content_length),
            (403, Some("denied_no_rule"), Some(12))
        );
        a.message = body_message(b"\negressd refused the CONNECT to x:443: denied_no_rule\n");
        let f = proxy_failure(&a).unwrap();
        assert_eq!((f.step, f.error.as_str()), (Step::Proxy, "denied_no_rule"));
        assert!(
            f.detail
                .starts_with("the proxy answered 403 Forbidden: egressd refused"),
            "{}",
            f.detail
        );

        let other = parse_proxy_answer(b"HTTP/1.0 502 Bad Gateway\r\n\r\n").unwrap();
        assert_eq!(proxy_failure(&other).unwrap().error, "status_502");
        let ok = parse_proxy_answer(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap();
        assert_eq!(proxy_failure(&ok), None);
        assert!(parse_proxy_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        let auth =
            parse_proxy_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").unwrap();
        assert!(proxy_failure(&auth)
            .unwrap()
            .detail
            .contains("USER:PASSWORD"));
    }

    #[test]
    fn expiry_counts_days_left() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let at = |day, hour| {
            time::Date::from_calendar_date(2030, time::Month::January, day)
                .unwrap()
                .with_hms(hour, 0, 0)
                .unwrap()
                .assume_utc()
        };
        params.not_after = at(31, 12);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let now = at(1, 0);
        assert_eq!(
            expiry(cert.der(), now),
            Some(("2030-01-31T12:00:00Z".to_string(), 30))
        );
        assert_eq!(expiry(b"not a certificate", now), None);
    }
}
