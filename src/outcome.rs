//! The outcome record: everything known about one request when its decision is final ([`Outcome`]), and how
//! a tunnel or forwarded exchange ended ([`Close`]). The decision and close lines and the metrics are all made
//! from these, so they sit below telemetry (which renders and counts them) and above the policy.

use crate::policy::credentials::CertName;
use crate::policy::verdict::{Client, Ruling};
use crate::reason::{Reason, Refusal};
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

pub use crate::policy::verdict::Verdict;

/// Everything known about one request when its decision is final.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub conn_id: u64,
    /// Position of the request on its client connection (1 for the first).
    pub request: u32,
    pub client_addr: SocketAddr,
    /// The load balancer that carried the connection and named `client_addr` in a PROXY header.
    pub peer_addr: Option<SocketAddr>,
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
    /// Report mode applies to what the request goes through on: later policy refusals (SNI checks) are
    /// reported as `would_deny` too. Not logged; `decision` and `rule` say it.
    pub lenient: bool,
    /// Who the client is: its groups (logged as `client`), certificate name and credentials (`user`).
    pub client: Client,
    /// The names of the connection's verified client certificate (TLS listener with `tls.client_ca`), a fact
    /// for the verdict; empty without one.
    pub cert_names: Arc<[CertName]>,
    /// With parents configured: the route the request took (`direct` or the parent that carried it, or the
    /// route's parents when none did).
    pub via: Option<String>,
    /// Every parent asked, in order: `name=200`, `name=403`, `name=refused`, `name=timeout`, `name=skipped`.
    pub parent_status: Vec<String>,
    /// Through a parent: `local` (egressd resolved and checked the name first) or `parent` (only the parent did).
    pub resolve: Option<&'static str>,
    /// With `shadow:`, the candidate policy's verdict where it differs from the live one.
    pub shadow: Option<Box<crate::policy::verdict::ShadowVerdict>>,
}

impl Outcome {
    pub fn new(conn_id: u64, request: u32, client_addr: SocketAddr, kind: Kind) -> Self {
        Outcome {
            conn_id,
            request,
            client_addr,
            peer_addr: None,
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
            lenient: false,
            client: Client::default(),
            cert_names: Arc::from([]),
            via: None,
            parent_status: Vec::new(),
            resolve: None,
            shadow: None,
        }
    }

    /// Mark as refused.
    pub fn refuse(&mut self, r: Refusal) {
        self.decision = Verdict::Deny;
        self.reason = r.reason;
        self.detail = Some(r.detail);
    }

    /// A refusal that report mode let through: the request goes on as a would-be denial.
    pub fn report(&mut self, r: Refusal) {
        self.decision = Verdict::WouldDeny;
        self.reason = r.reason;
        self.detail = Some(r.detail);
    }

    /// Record the verdict on the request's head.
    /// The shadow policy's verdict, when it differs from the final decision (a refusal after the head, such
    /// as a private address found at dial time, can make the two agree after all).
    pub fn shadow_disagreement(&self) -> Option<&crate::policy::verdict::ShadowVerdict> {
        self.shadow
            .as_deref()
            .filter(|s| s.verdict != self.decision)
    }

    pub fn rule(&mut self, ruling: Ruling) {
        self.decision = ruling.verdict;
        self.reason = ruling.reason;
        self.detail = ruling.detail;
        self.rule = ruling.rule;
        self.idle = ruling.idle;
        self.lenient = ruling.lenient;
        if ruling.denied_addr.is_some() {
            self.denied_addr = ruling.denied_addr;
        }
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

/// How a tunnel that saw nothing decisive from its client ends.
impl From<crate::policy::first_bytes::Quiet> for CloseReason {
    fn from(q: crate::policy::first_bytes::Quiet) -> Self {
        use crate::policy::first_bytes::Quiet;
        match q {
            Quiet::Left => CloseReason::ClientGone,
            Quiet::Silent => CloseReason::IdleTimeout,
            Quiet::Cut => CloseReason::Shutdown,
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
