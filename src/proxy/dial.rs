//! Resolve → check every address → connect to a checked address. The address dialled is always one that was
//! checked; there is never a second lookup between the check and the connect.

use crate::config::{Listeners, Runtime};
use crate::outcome::Outcome;
use crate::policy::destination::Destinations;
use crate::reason::{Reason, Refusal};
use crate::target::{Host, Target};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What dialling found out, for the decision log line, whether it succeeded or not.
#[derive(Debug, Default, Clone)]
pub struct DialInfo {
    pub resolved: Vec<IpAddr>,
    pub denied_addr: Option<IpAddr>,
    pub upstream: Option<SocketAddr>,
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    /// The route taken, when parents are configured: `direct` or the parent(s) (see `parent`).
    pub via: Option<String>,
    /// Every parent asked or passed over, `NAME=result`.
    pub parent_status: Vec<String>,
    /// Through a parent: whether egressd resolved the name (`local`) or left it to the parent.
    pub resolve: Option<&'static str>,
    /// Why the lookup gave no address, when it failed (`egressd probe` reports it).
    pub dns_failure: Option<DnsFailure>,
}

/// Why a name gave no address to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFailure {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no A or AAAA record.
    NoAddresses,
    /// No answer within `timeouts.dns`.
    Timeout,
    /// No usable resolver, or another error (SERVFAIL, refused, unreachable servers).
    Failed,
}

impl DialInfo {
    /// Record what dialling found in the outcome (whether it succeeded or not).
    pub(crate) fn record_into(&self, o: &mut Outcome) {
        o.resolved_addrs = self.resolved.clone();
        o.denied_addr = self.denied_addr;
        o.upstream_addr = self.upstream;
        o.dns_ms = self.dns_ms;
        o.connect_ms = self.connect_ms;
        // A dial that knows nothing of routes leaves the route recorded so far.
        if self.via.is_some() {
            o.via.clone_from(&self.via);
            o.parent_status.clone_from(&self.parent_status);
            o.resolve = self.resolve;
        }
    }
}

pub struct Dialer {
    resolver: Result<TokioResolver, String>,
    static_hosts: HashMap<String, Vec<IpAddr>>,
    /// The destination check every address passes before it is dialled.
    destinations: Destinations,
    dns_timeout: Duration,
    connect_timeout: Duration,
    /// Local addresses of recent upstream connections: a connection that arrives from one of them is egressd's
    /// own traffic redirected back to a transparent listener. `None` without transparent listeners.
    recent_local: Option<Mutex<RecentLocal>>,
}

#[derive(Default)]
struct RecentLocal {
    at: HashMap<SocketAddr, Instant>,
    pruned: Option<Instant>,
}

/// How long an upstream connection's local address is remembered. A redirected copy of it arrives at once.
const RECENT_LOCAL_WINDOW: Duration = Duration::from_secs(30);
/// Pruning starts past this many remembered addresses, at most once a second.
const RECENT_LOCAL_PRUNE: usize = 4096;

impl Dialer {
    /// The dialer for configuration `s`. With a transparent listener among `listeners`, it remembers its
    /// upstream connections' local addresses, so a redirected copy of one is recognised as a loop.
    pub fn new(listeners: &Listeners, s: &Runtime) -> Self {
        let resolver = build_resolver(s);
        Dialer {
            resolver,
            static_hosts: s.dns.hosts.clone(),
            destinations: s.policy.destinations().clone(),
            dns_timeout: s.timeouts.dns,
            connect_timeout: s.timeouts.connect,
            recent_local: listeners
                .transparent()
                .then(|| Mutex::new(RecentLocal::default())),
        }
    }

    /// Is the resolver usable (static hosts work either way)?
    pub fn resolver_error(&self) -> Option<&str> {
        self.resolver.as_ref().err().map(String::as_str)
    }

    /// Addresses for the target, every one checked. Any forbidden address fails the whole lookup, so a
    /// name that mixes public and private answers cannot be used to reach the private one.
    pub async fn resolve(
        &self,
        target: &Target,
        info: &mut DialInfo,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let addrs = self.addresses(&target.host, info).await?;
        self.check(target, &addrs, info)?;
        Ok(addrs)
    }

    /// The addresses of `host` (static hosts first, then DNS), not yet checked; recorded in `info`.
    pub async fn addresses(
        &self,
        host: &Host,
        info: &mut DialInfo,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let addrs = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => match self.static_hosts.get(name) {
                Some(a) => a.clone(),
                None => {
                    let started = Instant::now();
                    let r = self.lookup(name).await;
                    info.dns_ms = Some(crate::telemetry::log::elapsed_ms(started.elapsed()));
                    r.map_err(|(why, refusal)| {
                        info.dns_failure = Some(why);
                        refusal
                    })?
                }
            },
        };
        info.resolved = addrs.clone();
        Ok(addrs)
    }

    /// The destination check of every address `target` resolved to; the refused address is recorded in `info`.
    pub fn check(
        &self,
        target: &Target,
        addrs: &[IpAddr],
        info: &mut DialInfo,
    ) -> Result<(), Refusal> {
        self.destinations.check(target, addrs).map_err(|f| {
            info.denied_addr = Some(f.addr);
            f.refusal
        })
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, (DnsFailure, Refusal)> {
        let resolver = self.resolver.as_ref().map_err(|e| {
            (
                DnsFailure::Failed,
                Refusal::new(
                    Reason::DnsFailed,
                    format!("no usable resolver ({e}); {name} is not in dns.hosts"),
                ),
            )
        })?;
        // hickory treats names without a trailing dot as relative; the target is always absolute.
        let fqdn = format!("{name}.");
        let no_addresses = || {
            (
                DnsFailure::NoAddresses,
                Refusal::new(
                    Reason::DnsFailed,
                    format!("{name} has no addresses (no A or AAAA record)"),
                ),
            )
        };
        match tokio::time::timeout(self.dns_timeout, resolver.lookup_ip(fqdn)).await {
            Err(_) => Err((
                DnsFailure::Timeout,
                Refusal::new(
                    Reason::DnsTimeout,
                    format!("no DNS answer for {name} within {:?}", self.dns_timeout),
                ),
            )),
            Ok(Err(e)) if e.is_nx_domain() => Err((
                DnsFailure::NxDomain,
                Refusal::new(
                    Reason::DnsFailed,
                    format!("{name} does not exist (NXDOMAIN)"),
                ),
            )),
            Ok(Err(e)) if e.is_no_records_found() => Err(no_addresses()),
            Ok(Err(e)) => Err((
                DnsFailure::Failed,
                Refusal::new(Reason::DnsFailed, format!("{name}: {e}")),
            )),
            Ok(Ok(lookup)) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    Err(no_addresses())
                } else {
                    Ok(addrs)
                }
            }
        }
    }

    /// Connect to the first address that accepts, IPv6 and IPv4 interleaved, within one overall deadline.
    pub async fn connect(
        &self,
        addrs: &[IpAddr],
        port: u16,
        info: &mut DialInfo,
    ) -> Result<TcpStream, Refusal> {
        let started = Instant::now();
        let deadline = started + self.connect_timeout;
        let mut last: Option<io::Error> = None;
        let mut timed_out = false;
        for ip in interleave(addrs) {
            let addr = SocketAddr::new(ip, port);
            match tokio::time::timeout_at(deadline.into(), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    if self.recent_local.is_some() {
                        if let Ok(local) = stream.local_addr() {
                            self.remember_local(crate::net::canonical(local));
                        }
                    }
                    tune_socket(socket2::SockRef::from(&stream));
                    info.upstream = Some(addr);
                    info.connect_ms = Some(crate::telemetry::log::elapsed_ms(started.elapsed()));
                    return Ok(stream);
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        info.connect_ms = Some(crate::telemetry::log::elapsed_ms(started.elapsed()));
        if timed_out {
            return Err(Refusal::new(
                Reason::UpstreamConnectTimeout,
                format!(
                    "no answer from {addrs:?} port {port} within {:?}",
                    self.connect_timeout
                ),
            ));
        }
        match last {
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(Refusal::new(
                Reason::UpstreamRefused,
                format!("connection refused by {addrs:?} port {port}"),
            )),
            Some(e) => Err(Refusal::new(
                Reason::UpstreamUnreachable,
                format!("{addrs:?} port {port}: {e}"),
            )),
            None => Err(Refusal::new(
                Reason::UpstreamUnreachable,
                "no addresses to dial",
            )),
        }
    }

    fn remember_local(&self, local: SocketAddr) {
        let Some(Ok(mut recent)) = self.recent_local.as_ref().map(Mutex::lock) else {
            return;
        };
        let now = Instant::now();
        let due = recent
            .pruned
            .is_none_or(|p| now.duration_since(p) >= Duration::from_secs(1));
        if recent.at.len() >= RECENT_LOCAL_PRUNE && due {
            recent
                .at
                .retain(|_, at| now.duration_since(*at) < RECENT_LOCAL_WINDOW);
            recent.pruned = Some(now);
        }
        recent.at.insert(local, now);
    }

    /// Is `peer` the local address of an upstream connection egressd opened recently (its own traffic coming
    /// back through a redirect)?
    pub fn dialled_from(&self, peer: SocketAddr) -> bool {
        let Some(Ok(recent)) = self.recent_local.as_ref().map(Mutex::lock) else {
            return false;
        };
        recent
            .at
            .get(&crate::net::canonical(peer))
            .is_some_and(|at| at.elapsed() < RECENT_LOCAL_WINDOW)
    }

    /// Resolve, check and connect.
    pub async fn dial(&self, target: &Target, info: &mut DialInfo) -> Result<TcpStream, Refusal> {
        let addrs = self.resolve(target, info).await?;
        self.connect(&addrs, target.port, info).await
    }
}

/// IPv6 first, then alternate families (RFC 8305 ordering without the racing).
fn interleave(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

fn build_resolver(s: &Runtime) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = if s.dns.servers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|e| format!("reading the system DNS configuration: {e}"))?
    } else {
        let mut cfg = ResolverConfig::new();
        for addr in &s.dns.servers {
            cfg.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            cfg.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(cfg, provider)
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.positive_min_ttl = Some(s.dns.min_ttl);
    opts.positive_max_ttl = Some(s.dns.max_ttl);
    opts.negative_min_ttl = Some(s.dns.min_ttl);
    opts.negative_max_ttl = Some(s.dns.max_ttl);
    opts.timeout = s.timeouts.dns;
    opts.attempts = 1;
    // Both families (hickory's default asks for A only, and AAAA only when there is none): a dual-stack
    // name must give its IPv6 addresses to the dial order and to the original-destination check too.
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    // Only our own static hosts map names; /etc/hosts could map an allowed name to anything.
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    Ok(builder.build())
}

/// Long-lived tunnels (agent control streams) may be quiet for hours: TCP keepalive lets the kernel notice a
/// dead peer or a NAT that forgot the flow, on both legs, without an application idle timeout.
pub const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// TCP_NODELAY (a relay must not hold small writes back) and TCP keepalive, best effort: a failure only costs
/// latency or the early dead-peer detection. Connections accepted by a listening socket inherit both (Linux),
/// which saves four system calls per connection.
pub fn tune_socket(sock: socket2::SockRef<'_>) {
    if let Err(e) = sock.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_families_v6_first() {
        let a: Vec<IpAddr> = ["1.1.1.1", "2.2.2.2", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got: Vec<String> = interleave(&a).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["2001:db8::1", "1.1.1.1", "2.2.2.2"]);
    }

    #[tokio::test]
    async fn remembers_where_its_own_connections_come_from() {
        let s =
            crate::config::from_yaml_str("listen: 127.0.0.1:0\nlisten_transparent: 127.0.0.1:0\n")
                .unwrap();
        let dialer = Dialer::new(&s.listeners, &s.runtime);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut info = DialInfo::default();
        let stream = dialer
            .connect(&["127.0.0.1".parse().unwrap()], port, &mut info)
            .await
            .unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());
        assert!(dialer.dialled_from(peer));
        let stranger = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert!(!dialer.dialled_from(stranger.local_addr().unwrap()));

        // Without transparent listeners there is nothing to loop back: nothing is remembered.
        let s = crate::config::from_yaml_str("listen: 127.0.0.1:0\n").unwrap();
        let plain = Dialer::new(&s.listeners, &s.runtime);
        let stream = plain
            .connect(&["127.0.0.1".parse().unwrap()], port, &mut info)
            .await
            .unwrap();
        assert!(!plain.dialled_from(stream.local_addr().unwrap()));
    }

    #[tokio::test]
    async fn tuning_sets_nodelay_and_keepalive_and_accepted_streams_inherit_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (before, _) = listener.accept().await.unwrap();
        assert!(!socket2::SockRef::from(&before).keepalive().unwrap());
        let sock = socket2::SockRef::from(&stream);
        assert!(!sock.keepalive().unwrap(), "off by default");
        assert!(!sock.nodelay().unwrap(), "off by default");
        tune_socket(socket2::SockRef::from(&stream));
        assert!(sock.keepalive().unwrap());
        assert!(sock.nodelay().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(sock.keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);

        // Set once on the listener, carried by every connection it accepts.
        tune_socket(socket2::SockRef::from(&listener));
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(sock.keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
    }
}
