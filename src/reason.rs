//! Reason codes: the one stable, snake_case name of every outcome. Logs, HTTP responses and (later) metrics
//! are all made from these, so they can never disagree.
//!
//! Every reason is one entry of the `reasons!` list below: its doc comment, the variant, its code,
//! the HTTP status a client sees, and whether it is a policy denial. `reasons!` makes the enum and every
//! per-reason fact (`ALL`, `as_str`, `status`, `is_policy_denial`) from that list, so adding a reason is
//! adding one entry.

use std::fmt;

/// Makes `Reason` from the list of entries
/// `/// doc` `Variant => "code", status, kind;` where kind is `policy` for a denial made by policy (rules and
/// the SNI checks; report mode turns only these into `would_deny`) and `-` for every other outcome.
macro_rules! reasons {
    ($(
        $(#[$attr:meta])*
        $variant:ident => $code:literal, $status:literal, $kind:tt;
    )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(
                $(#[$attr])*
                $variant,
            )*
        }

        impl Reason {
            /// Every reason, in the order of the list.
            pub const ALL: [Reason; [$(Reason::$variant),*].len()] = [$(Reason::$variant),*];

            /// The reason code, as logs and responses carry it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// The HTTP status a client sees for this outcome.
            pub fn status(self) -> u16 {
                match self {
                    $(Reason::$variant => $status,)*
                }
            }

            /// Denials made by policy (rules and the SNI checks), as opposed to malformed input, destination
            /// safety or upstream failures. Report mode turns only these into `would_deny`.
            pub fn is_policy_denial(self) -> bool {
                match self {
                    $(Reason::$variant => policy_denial!($kind),)*
                }
            }
        }
    };

}

/// The kind column of `reasons!`: `policy` or `-`.
macro_rules! policy_denial {
    (policy) => {
        true
    };
    (-) => {
        false
    };
}

reasons! {
    // Variant => "code", HTTP status, policy denial (`policy`) or not (`-`);
    /// An allow rule matched and every resolved address passed the destination checks.
    Allowed => "allowed", 200, -;
    /// No allow rule matches the host.
    DeniedNoRule => "denied_no_rule", 403, policy;
    /// A deny rule matches the host and port.
    DeniedByRule => "denied_by_rule", 403, policy;
    /// An allow rule matches the host, but not the port.
    DeniedPort => "denied_port", 403, policy;
    /// The destination address (literal or resolved) is loopback, private, link-local, metadata, ...
    DeniedPrivateAddress => "denied_private_address", 403, -;
    /// The ClientHello's SNI differs from the CONNECT host (`sni: strict`).
    DeniedSniMismatch => "denied_sni_mismatch", 403, policy;
    /// The ClientHello has no SNI where one is required.
    DeniedSniMissing => "denied_sni_missing", 403, policy;
    /// The SNI names a host the policy does not allow (`sni: policy`, or CONNECT to an allowed IP).
    DeniedSniNotAllowed => "denied_sni_not_allowed", 403, policy;
    /// The ClientHello carries encrypted_client_hello, hiding the real name (`client_hello.ech: deny`).
    DeniedEch => "denied_ech", 403, policy;
    /// The first bytes of a tunnel that requires TLS are not a TLS handshake.
    DeniedNotTls => "denied_not_tls", 403, policy;
    /// The first bytes look like TLS but the ClientHello is malformed or larger than `client_hello.max_bytes`.
    InvalidClientHello => "invalid_client_hello", 400, -;
    /// No complete ClientHello within `client_hello.timeout`.
    ClientHelloTimeout => "client_hello_timeout", 408, -;
    /// The request target is malformed (userinfo, control characters, bad port, ...).
    InvalidTarget => "invalid_target", 400, -;
    /// The host is not a valid DNS name (bad IDNA, label too long, numeric-looking name, ...).
    InvalidHost => "invalid_host", 400, -;
    /// An origin-form request (`GET /path`) was sent to the proxy port.
    NotProxyRequest => "not_proxy_request", 400, -;
    /// The request head could not be parsed as HTTP/1.x.
    BadRequest => "bad_request", 400, -;
    /// The request line names a protocol version other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion => "unsupported_version", 400, -;
    /// An absolute-form request with a scheme other than http (https:// must use CONNECT).
    UnsupportedScheme => "unsupported_scheme", 400, -;
    /// The request head is larger than `limits.max_header_bytes`.
    HeaderTooLarge => "header_too_large", 431, -;
    /// The request head did not arrive within `timeouts.header`.
    HeaderTimeout => "header_timeout", 408, -;
    /// `limits.max_connections` connections are already open.
    ConnectionLimit => "connection_limit", 503, -;
    /// This client (source address, or verified client certificate) already has
    /// `limits.max_connections_per_client` connections open.
    ClientConnectionLimit => "client_connection_limit", 503, -;
    /// Too many password checks were in progress to check this request's credentials within
    /// `timeouts.header`.
    AuthBusy => "auth_busy", 503, -;
    /// The name does not resolve (NXDOMAIN, SERVFAIL, no addresses).
    DnsFailed => "dns_failed", 502, -;
    /// The resolver did not answer within `timeouts.dns`.
    DnsTimeout => "dns_timeout", 504, -;
    /// Every upstream address refused the connection.
    UpstreamRefused => "upstream_refused", 502, -;
    /// No upstream address accepted the connection within `timeouts.connect`.
    UpstreamConnectTimeout => "upstream_connect_timeout", 504, -;
    /// The upstream could not be reached (network unreachable, reset, ...).
    UpstreamUnreachable => "upstream_unreachable", 502, -;
    /// The upstream broke the HTTP exchange (closed early, sent an invalid response).
    UpstreamError => "upstream_error", 502, -;
    /// A parent proxy answered the CONNECT with something other than 200 (403, 407, 5xx); its status is in
    /// the detail, and its answer is never passed on.
    ParentRefused => "parent_refused", 502, -;
    /// No parent proxy of the route accepted the connection (refused, unreachable, or skipped after failing).
    ParentUnreachable => "parent_unreachable", 502, -;
    /// A parent proxy did not accept the connection within its `connect_timeout`, or did not answer the
    /// CONNECT within `timeouts.connect`.
    ParentTimeout => "parent_timeout", 504, -;
    /// A rule matches host and port but restricts paths, and the request's path is not one of them.
    DeniedPath => "denied_path", 403, policy;
    /// `require_identity: true` and the client belongs to no client group.
    DeniedNoIdentity => "denied_no_identity", 403, policy;
    /// No Proxy-Authorization, and credentials of a client group would let the request through.
    ProxyAuthRequired => "proxy_auth_required", 407, -;
    /// A Proxy-Authorization header that no client group accepts.
    DeniedBadCredentials => "denied_bad_credentials", 407, -;
    /// The TLS handshake with the client on the TLS listener failed or did not finish within `timeouts.header`
    /// (no HTTP answer is possible without TLS; the log line is the only record).
    ClientTlsFailed => "client_tls_failed", 400, -;
    /// A peer in `proxy_protocol.trusted` connected to a listener with PROXY protocol without sending a PROXY
    /// header first (or sent nothing decisive within `timeouts.header`).
    ProxyHeaderMissing => "proxy_header_missing", 400, -;
    /// A PROXY header that cannot be used: malformed, truncated, or larger than egressd accepts.
    ProxyHeaderInvalid => "proxy_header_invalid", 400, -;
    /// A PROXY header from a peer that may not send one (not in `proxy_protocol.trusted`, or a listener
    /// without PROXY protocol): the address it names is not believed.
    ProxyHeaderUntrusted => "proxy_header_untrusted", 403, -;
    /// Transparent mode: the address the client connected to (SO_ORIGINAL_DST) is not one of the addresses
    /// the SNI or Host name resolves to (`trust_original_dst: false`).
    DeniedOriginalDstMismatch => "denied_original_dst_mismatch", 403, -;
    /// Transparent mode: the original destination is egressd's own listener (a connection made to the
    /// transparent port directly, or egressd's own traffic redirected back to it).
    DeniedOriginalDstLoop => "denied_original_dst_loop", 508, -;
    // The request names a real destination, but egressd cannot tell where the connection was going.
    /// Transparent mode: the kernel has no original destination for the connection (it was not redirected
    /// with iptables REDIRECT/DNAT, or connection tracking is off).
    OriginalDstUnknown => "original_dst_unknown", 421, -;
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_snake_case(code: &str) -> bool {
        code.starts_with(|c: char| c.is_ascii_lowercase())
            && !code.ends_with('_')
            && !code.contains("__")
            && code
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    #[test]
    fn snake_case_check() {
        assert!(is_snake_case("denied_no_rule"));
        assert!(is_snake_case("allowed"));
        for bad in [
            "",
            "Denied",
            "denied-no-rule",
            "_denied",
            "denied_",
            "denied__rule",
            "1xx",
            "déni",
        ] {
            assert!(!is_snake_case(bad), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for r in Reason::ALL {
            let code = r.as_str();
            assert!(is_snake_case(code), "{r:?}: {code:?} is not snake_case");
            assert!(seen.insert(code), "{r:?}: code {code:?} is used twice");
            assert_eq!(r.to_string(), code);
        }
        assert_eq!(seen.len(), Reason::ALL.len());
    }

    #[test]
    fn all_lists_each_reason_once() {
        let set: HashSet<Reason> = Reason::ALL.into_iter().collect();
        assert_eq!(set.len(), Reason::ALL.len());
    }

    #[test]
    fn statuses_are_errors_except_allowed() {
        for r in Reason::ALL {
            if r == Reason::Allowed {
                assert_eq!(r.status(), 200);
            } else {
                assert!(
                    (400..600).contains(&r.status()),
                    "{r:?}: status {} is not 4xx or 5xx",
                    r.status()
                );
            }
        }
    }

    #[test]
    fn policy_denials_are_403_denials() {
        for r in Reason::ALL.into_iter().filter(|r| r.is_policy_denial()) {
            assert!(r.as_str().starts_with("denied_"), "{r:?}");
            assert_eq!(r.status(), 403, "{r:?}");
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
