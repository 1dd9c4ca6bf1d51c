//! The outcome record: everything known about one request when its decision is final ([`Outcome`]), and how
//! a tunnel or forwarded exchange ended ([`Close`]). The decision and close lines and the metrics are all made
//! from these, so they sit below telemetry (which renders and counts them) and above the policy.

use crate::reason::Reason;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Http,
    /// A TLS connection redirected to `listen_transparent` (the SNI names the destination).
    Transparent,
    /// A plain-HTTP request on a connection redirected to `listen_transparent_http` (the Host header names it).
    TransparentHttp,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Http => "http",
            Kind::Transparent => "transparent",
            Kind::TransparentHttp => "transparent_http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    WouldDeny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// Everything known about one request when its decision is final.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub conn_id: u64,
    /// Position of the request on its client connection (1 for the first).
    pub request: u32,
    pub client_addr: SocketAddr,
    pub kind: Kind,
    pub method: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub decision: Verdict,
    pub reason: Reason,
    pub rule: Option<Arc<str>>,
    pub detail: Option<String>,
    pub resolved_addrs: Vec<IpAddr>,
    pub denied_addr: Option<IpAddr>,
    pub upstream_addr: Option<SocketAddr>,
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    /// SNI and ALPN of the ClientHello inside a CONNECT tunnel.
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    /// Transparent mode: where the client was connecting to before the redirect (SO_ORIGINAL_DST).
    pub original_dst: Option<SocketAddr>,
    /// The allowing rule's own tunnel idle timeout (not logged; the rule name says where it came from).
    pub idle: Option<crate::policy::IdleOverride>,
    /// The request goes through on a rule in report mode (`mode: report` on the rule): later policy refusals
    /// (SNI checks) are reported as `would_deny` too. Not logged; `decision` and `rule` say it.
    pub report_rule: bool,
    /// The client groups the request belongs to (logged as `client`).
    pub client: Vec<Arc<str>>,
    /// The same, as the policy sees it (not logged).
    pub identity: crate::policy::Identity,
    /// The first name of the verified client certificate (TLS listener with `tls.client_ca`).
    pub client_cert: Option<String>,
    /// What the Proxy-Authorization header established (not logged; `user` is).
    pub credentials: crate::policy::Credentials,
}

impl Outcome {
    pub fn new(conn_id: u64, request: u32, client_addr: SocketAddr, kind: Kind) -> Self {
        Outcome {
            conn_id,
            request,
            client_addr,
            kind,
            method: None,
            host: None,
            port: None,
            decision: Verdict::Deny,
            reason: Reason::BadRequest,
            rule: None,
            detail: None,
            resolved_addrs: Vec::new(),
            denied_addr: None,
            upstream_addr: None,
            dns_ms: None,
            connect_ms: None,
            sni: None,
            alpn: Vec::new(),
            original_dst: None,
            idle: None,
            report_rule: false,
            client: Vec::new(),
            identity: Default::default(),
            credentials: Default::default(),
            client_cert: None,
        }
    }

    /// Mark as refused for `reason` with a human explanation.
    pub fn refuse(&mut self, reason: Reason, detail: impl Into<String>) {
        self.decision = Verdict::Deny;
        self.reason = reason;
        self.detail = Some(detail.into());
    }
}

/// How a tunnel or forwarded exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides finished normally.
    Eof,
    /// No bytes either way for `timeouts.idle`.
    IdleTimeout,
    /// The client reset or broke the connection.
    ClientError,
    /// The upstream reset or broke the connection.
    UpstreamError,
    /// The client went away before the response was complete.
    ClientGone,
    /// The proxy is shutting down.
    Shutdown,
    /// The tunnel was refused after the 200 (SNI or ClientHello checks) and closed unused.
    Denied,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::ClientError => "client_error",
            CloseReason::UpstreamError => "upstream_error",
            CloseReason::ClientGone => "client_gone",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Denied => "denied",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Close {
    pub conn_id: u64,
    pub request: u32,
    pub kind: Kind,
    pub host: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
    pub close_reason: CloseReason,
    /// TLS records the ClientHello spanned, when one was read.
    pub hello_records: Option<usize>,
    /// Reads (roughly, TCP segments) the tunnel's first bytes arrived in, when they were peeked.
    pub hello_reads: Option<usize>,
}

impl Close {
    /// A tunnel that ended before any byte was forwarded.
    pub fn ended(o: &Outcome, reason: CloseReason) -> Self {
        Close {
            conn_id: o.conn_id,
            request: o.request,
            kind: o.kind,
            host: o.host.clone(),
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
            close_reason: reason,
            hello_records: None,
            hello_reads: None,
        }
    }
}
