//! Reason codes: the one stable, snake_case name of every outcome. Logs, HTTP responses and (later) metrics
//! are all made from these, so they can never disagree.

use std::fmt;

/// Why something was refused: the reason code and what the client or operator should know about it. Every
/// step of a request's story returns this, never a log line; the exit of the story records it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Refusal {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow rule matched and every resolved address passed the destination checks.
    Allowed,
    /// No allow rule matches the host.
    DeniedNoRule,
    /// A deny rule matches the host and port.
    DeniedByRule,
    /// An allow rule matches the host, but not the port.
    DeniedPort,
    /// The destination address (literal or resolved) is loopback, private, link-local, metadata, ...
    DeniedPrivateAddress,
    /// The ClientHello's SNI differs from the CONNECT host (`sni: strict`).
    DeniedSniMismatch,
    /// The ClientHello has no SNI where one is required.
    DeniedSniMissing,
    /// The SNI names a host the policy does not allow (`sni: policy`, or CONNECT to an allowed IP).
    DeniedSniNotAllowed,
    /// The ClientHello carries encrypted_client_hello, hiding the real name (`client_hello.ech: deny`).
    DeniedEch,
    /// The first bytes of a tunnel that requires TLS are not a TLS handshake.
    DeniedNotTls,
    /// The first bytes look like TLS but the ClientHello is malformed or larger than `client_hello.max_bytes`.
    InvalidClientHello,
    /// No complete ClientHello within `client_hello.timeout`.
    ClientHelloTimeout,
    /// The request target is malformed (userinfo, control characters, bad port, ...).
    InvalidTarget,
    /// The host is not a valid DNS name (bad IDNA, label too long, numeric-looking name, ...).
    InvalidHost,
    /// An origin-form request (`GET /path`) was sent to the proxy port.
    NotProxyRequest,
    /// The request head could not be parsed as HTTP/1.x.
    BadRequest,
    /// The request line names a protocol version other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// An absolute-form request with a scheme other than http (https:// must use CONNECT).
    UnsupportedScheme,
    /// The request head is larger than `limits.max_header_bytes`.
    HeaderTooLarge,
    /// The request head did not arrive within `timeouts.header`.
    HeaderTimeout,
    /// `limits.max_connections` connections are already open.
    ConnectionLimit,
    /// This client (source address, or verified client certificate) already has
    /// `limits.max_connections_per_client` connections open.
    ClientConnectionLimit,
    /// Too many password checks were in progress to check this request's credentials within
    /// `timeouts.header`.
    AuthBusy,
    /// The name does not resolve (NXDOMAIN, SERVFAIL, no addresses).
    DnsFailed,
    /// The resolver did not answer within `timeouts.dns`.
    DnsTimeout,
    /// Every upstream address refused the connection.
    UpstreamRefused,
    /// No upstream address accepted the connection within `timeouts.connect`.
    UpstreamConnectTimeout,
    /// The upstream could not be reached (network unreachable, reset, ...).
    UpstreamUnreachable,
    /// The upstream broke the HTTP exchange (closed early, sent an invalid response).
    UpstreamError,
    /// A rule matches host and port but restricts paths, and the request's path is not one of them.
    DeniedPath,
    /// `require_identity: true` and the client belongs to no client group.
    DeniedNoIdentity,
    /// No Proxy-Authorization, and credentials of a client group would let the request through.
    ProxyAuthRequired,
    /// A Proxy-Authorization header that no client group accepts.
    DeniedBadCredentials,
    /// The TLS handshake with the client on the TLS listener failed or did not finish within `timeouts.header`
    /// (no HTTP answer is possible without TLS; the log line is the only record).
    ClientTlsFailed,
    /// Transparent mode: the address the client connected to (SO_ORIGINAL_DST) is not one of the addresses
    /// the SNI or Host name resolves to (`trust_original_dst: false`).
    DeniedOriginalDstMismatch,
    /// Transparent mode: the original destination is egressd's own listener (a connection made to the
    /// transparent port directly, or egressd's own traffic redirected back to it).
    DeniedOriginalDstLoop,
    /// Transparent mode: the kernel has no original destination for the connection (it was not redirected
    /// with iptables REDIRECT/DNAT, or connection tracking is off).
    OriginalDstUnknown,
}

impl Reason {
    pub const ALL: [Reason; 37] = [
        Reason::Allowed,
        Reason::DeniedNoRule,
        Reason::DeniedByRule,
        Reason::DeniedPort,
        Reason::DeniedPrivateAddress,
        Reason::DeniedSniMismatch,
        Reason::DeniedSniMissing,
        Reason::DeniedSniNotAllowed,
        Reason::DeniedEch,
        Reason::DeniedNotTls,
        Reason::InvalidClientHello,
        Reason::ClientHelloTimeout,
        Reason::InvalidTarget,
        Reason::InvalidHost,
        Reason::NotProxyRequest,
        Reason::BadRequest,
        Reason::UnsupportedVersion,
        Reason::UnsupportedScheme,
        Reason::HeaderTooLarge,
        Reason::HeaderTimeout,
        Reason::ConnectionLimit,
        Reason::ClientConnectionLimit,
        Reason::AuthBusy,
        Reason::DnsFailed,
        Reason::DnsTimeout,
        Reason::UpstreamRefused,
        Reason::UpstreamConnectTimeout,
        Reason::UpstreamUnreachable,
        Reason::UpstreamError,
        Reason::DeniedPath,
        Reason::DeniedNoIdentity,
        Reason::ProxyAuthRequired,
        Reason::DeniedBadCredentials,
        Reason::ClientTlsFailed,
        Reason::DeniedOriginalDstMismatch,
        Reason::DeniedOriginalDstLoop,
        Reason::OriginalDstUnknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::DeniedNoRule => "denied_no_rule",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::DeniedPort => "denied_port",
            Reason::DeniedPrivateAddress => "denied_private_address",
            Reason::DeniedSniMismatch => "denied_sni_mismatch",
            Reason::DeniedSniMissing => "denied_sni_missing",
            Reason::DeniedSniNotAllowed => "denied_sni_not_allowed",
            Reason::DeniedEch => "denied_ech",
            Reason::DeniedNotTls => "denied_not_tls",
            Reason::InvalidClientHello => "invalid_client_hello",
            Reason::ClientHelloTimeout => "client_hello_timeout",
            Reason::InvalidTarget => "invalid_target",
            Reason::InvalidHost => "invalid_host",
            Reason::NotProxyRequest => "not_proxy_request",
            Reason::BadRequest => "bad_request",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::HeaderTimeout => "header_timeout",
            Reason::ConnectionLimit => "connection_limit",
            Reason::ClientConnectionLimit => "client_connection_limit",
            Reason::AuthBusy => "auth_busy",
            Reason::DnsFailed => "dns_failed",
            Reason::DnsTimeout => "dns_timeout",
            Reason::UpstreamRefused => "upstream_refused",
            Reason::UpstreamConnectTimeout => "upstream_connect_timeout",
            Reason::UpstreamUnreachable => "upstream_unreachable",
            Reason::UpstreamError => "upstream_error",
            Reason::DeniedPath => "denied_path",
            Reason::DeniedNoIdentity => "denied_no_identity",
            Reason::ProxyAuthRequired => "proxy_auth_required",
            Reason::DeniedBadCredentials => "denied_bad_credentials",
            Reason::ClientTlsFailed => "client_tls_failed",
            Reason::DeniedOriginalDstMismatch => "denied_original_dst_mismatch",
            Reason::DeniedOriginalDstLoop => "denied_original_dst_loop",
            Reason::OriginalDstUnknown => "original_dst_unknown",
        }
    }

    /// The HTTP status a client sees for this outcome.
    pub fn status(self) -> u16 {
        match self {
            Reason::Allowed => 200,
            Reason::DeniedNoRule
            | Reason::DeniedByRule
            | Reason::DeniedPort
            | Reason::DeniedPrivateAddress
            | Reason::DeniedSniMismatch
            | Reason::DeniedSniMissing
            | Reason::DeniedSniNotAllowed
            | Reason::DeniedEch
            | Reason::DeniedNotTls
            | Reason::DeniedPath
            | Reason::DeniedNoIdentity
            | Reason::DeniedOriginalDstMismatch => 403,
            // The request names a real destination, but egressd cannot tell where the connection was going.
            Reason::OriginalDstUnknown => 421,
            Reason::DeniedOriginalDstLoop => 508,
            Reason::InvalidClientHello => 400,
            Reason::ProxyAuthRequired | Reason::DeniedBadCredentials => 407,
            Reason::ClientHelloTimeout => 408,
            Reason::InvalidTarget
            | Reason::InvalidHost
            | Reason::NotProxyRequest
            | Reason::BadRequest
            | Reason::UnsupportedVersion
            | Reason::UnsupportedScheme
            | Reason::ClientTlsFailed => 400,
            Reason::HeaderTimeout => 408,
            Reason::HeaderTooLarge => 431,
            Reason::ConnectionLimit | Reason::ClientConnectionLimit | Reason::AuthBusy => 503,
            Reason::DnsFailed
            | Reason::UpstreamRefused
            | Reason::UpstreamUnreachable
            | Reason::UpstreamError => 502,
            Reason::DnsTimeout | Reason::UpstreamConnectTimeout => 504,
        }
    }

    /// Denials made by policy (rules and the SNI checks), as opposed to malformed input, destination safety or
    /// upstream failures. Report mode turns only these into `would_deny`.
    pub fn is_policy_denial(self) -> bool {
        matches!(
            self,
            Reason::DeniedNoRule
                | Reason::DeniedByRule
                | Reason::DeniedPort
                | Reason::DeniedSniMismatch
                | Reason::DeniedSniMissing
                | Reason::DeniedSniNotAllowed
                | Reason::DeniedEch
                | Reason::DeniedNotTls
                | Reason::DeniedPath
                | Reason::DeniedNoIdentity
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_snake_case() {
        let codes: HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for c in codes {
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(Reason::DeniedNoRule.status(), 403);
        assert_eq!(Reason::DnsFailed.status(), 502);
        assert_eq!(Reason::UpstreamRefused.status(), 502);
        assert_eq!(Reason::UpstreamConnectTimeout.status(), 504);
        assert_eq!(Reason::HeaderTooLarge.status(), 431);
        assert_eq!(Reason::ConnectionLimit.status(), 503);
        assert_eq!(Reason::ClientConnectionLimit.status(), 503);
        assert_eq!(Reason::AuthBusy.status(), 503);
        assert_eq!(Reason::NotProxyRequest.status(), 400);
        assert_eq!(Reason::DeniedPath.status(), 403);
        assert!(Reason::DeniedPath.is_policy_denial());
        assert_eq!(Reason::DeniedOriginalDstMismatch.status(), 403);
        assert_eq!(Reason::DeniedOriginalDstLoop.status(), 508);
        assert_eq!(Reason::OriginalDstUnknown.status(), 421);
        // Destination safety, not policy: report mode never lets a mismatched address through.
        assert!(!Reason::DeniedOriginalDstMismatch.is_policy_denial());
    }
}
