//! Parsing and matching of `NO_PROXY` lists with the semantics of Go's
//! `golang.org/x/net/http/httpproxy` (used by `net/http.ProxyFromEnvironment`).
//!
//! Go is the reference because most Kubernetes agents are Go programs: a policy
//! built from a workload's `NO_PROXY` must agree with what that workload's HTTP
//! client actually sends direct.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// One usable entry of a `NO_PROXY` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `*`: every target goes direct.
    Any,
    /// An IPv4 or IPv6 network; matches IP targets on any port. Stored with the
    /// host bits cleared, IPv4-mapped IPv6 networks as IPv4.
    Cidr(IpNet),
    /// A single IP (IPv4-mapped IPv6 stored as IPv4), optionally restricted to a port.
    Ip { ip: IpAddr, port: Option<u16> },
    /// A domain suffix. `name` is lowercase ASCII (punycode for IDNs) without a
    /// leading dot; it keeps a trailing dot if the entry had one, in which case
    /// it only matches targets written with a trailing dot. `include_apex` is
    /// true for `example.com` (matches itself and subdomains) and false for
    /// `.example.com` / `*.example.com` (subdomains only).
    Domain {
        name: String,
        include_apex: bool,
        port: Option<u16>,
    },
}

/// Why Go sends a request direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoMatch<'a> {
    /// The host is exactly `localhost` (Go's implicit rule).
    Localhost,
    /// The host is a loopback IP (Go's implicit rule).
    Loopback,
    /// This entry of the list.
    Entry(&'a Entry),
}

/// An entry that Go skips or that can never match a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The entry after trimming and lowercasing, as Go sees it.
    pub entry: String,
    /// Human-readable reason, suitable for a lint message.
    pub why: &'static str,
}

/// A parsed `NO_PROXY` value: usable entries in list order plus the rejects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxyList {
    pub entries: Vec<Entry>,
    pub ignored: Vec<Ignored>,
}

const WHY_EMPTY_HOST: &str = "empty host";
const WHY_BRACKETS: &str = "IPv6 in brackets needs a port";
const WHY_WHITESPACE: &str = "contains whitespace; entries must be separated by commas";
const WHY_URL: &str = "looks like a URL; entries must be a host name, IP or CIDR";
const WHY_PORT: &str = "port must be a number from 0 to 65535 without leading zeros";
const WHY_STAR: &str = "'*' is only allowed as the whole entry or as a leading \"*.\"";
const WHY_EMPTY_DOMAIN: &str = "empty domain name";
const WHY_IDN: &str = "not a valid internationalized domain name";
const WHY_INVALID: &str = "not a valid CIDR, IP or hostname";

/// Parse with Go's semantics.
///
/// Entries are split on `,`, trimmed and lowercased; empty ones are skipped
/// silently (Go does too, and `a,,b` is harmless). Unlike Go, parsing continues
/// after `*` so that the remaining entries can still be reported on; matching
/// is unaffected because [`Entry::Any`] matches everything.
pub fn parse(list: &str) -> NoProxyList {
    let mut out = NoProxyList::default();
    for raw in list.split(',') {
        let p = raw.trim().to_lowercase();
        if p.is_empty() {
            continue;
        }
        match parse_entry(&p) {
            Ok(entry) => out.entries.push(entry),
            Err(why) => out.ignored.push(Ignored { entry: p, why }),
        }
    }
    out
}

/// Classify one trimmed, lowercased, non-empty entry in the order Go tries the
/// interpretations: `*`, CIDR, then `host[:port]` as IP, then as domain.
fn parse_entry(p: &str) -> Result<Entry, &'static str> {
    if p == "*" {
        return Ok(Entry::Any);
    }
    if let Some(net) = parse_cidr(p) {
        return Ok(Entry::Cidr(net));
    }
    // Checked before the host/port split so that the common mistakes of a
    // space-separated list or a pasted URL get a message naming the problem.
    if p.contains(char::is_whitespace) {
        return Err(WHY_WHITESPACE);
    }
    if p.contains("://") {
        return Err(WHY_URL);
    }

    let (host, port) = match split_host_port(p) {
        Some((host, port)) => {
            if host.is_empty() {
                return Err(WHY_EMPTY_HOST);
            }
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            (host, parse_port(port)?)
        }
        None => (p, None),
    };

    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Entry::Ip {
            ip: ip.to_canonical(),
            port,
        });
    }

    // Go turns `[v6]` without a port into a domain that no URL host can end
    // with, so it is dead; say why instead of a generic message.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return Err(if inner.parse::<IpAddr>().is_ok() {
            WHY_BRACKETS
        } else {
            WHY_INVALID
        });
    }

    let (name, include_apex) = if let Some(rest) = host.strip_prefix("*.") {
        (rest, false)
    } else if let Some(rest) = host.strip_prefix('.') {
        (rest, false)
    } else {
        (host, true)
    };
    if name.is_empty() {
        return Err(WHY_EMPTY_DOMAIN);
    }
    let name = to_ascii(name).ok_or(WHY_IDN)?;
    validate_domain(&name)?;
    Ok(Entry::Domain {
        name: name.into_owned(),
        include_apex,
        port,
    })
}

/// Go's `net.ParseCIDR`: address without zone, `/`, decimal prefix length
/// (leading zeros accepted) no larger than the address width.
fn parse_cidr(p: &str) -> Option<IpNet> {
    let (addr, prefix) = p.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let net = IpNet::new(addr, prefix).ok()?.trunc();
    Some(canonical_net(net))
}

/// Go compares IPv4-mapped IPv6 networks as IPv4 networks (it converts both the
/// network and the target with `To4`), so store them that way.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) => v6
            .network()
            .to_ipv4_mapped()
            .zip(v6.prefix_len().checked_sub(96))
            .and_then(|(v4, prefix)| IpNet::new(IpAddr::V4(v4), prefix).ok())
            .unwrap_or(net),
        IpNet::V4(_) => net,
    }
}

/// Go's `net.SplitHostPort`, returning `None` where it returns an error. The
/// host of a bracketed form comes back without its brackets.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    let colon = s.rfind(':')?;
    let (host, rest_start) = if let Some(stripped) = s.strip_prefix('[') {
        let end = s.find(']')?;
        // The closing bracket must be immediately followed by the last colon.
        if end + 1 != colon {
            return None;
        }
        (&stripped[..end - 1], end + 1)
    } else {
        let host = &s[..colon];
        if host.contains(':') {
            return None;
        }
        (host, 0)
    };
    // Bytes, not str slices: the entry may start with a multi-byte character (`ʓ:1`).
    if s.as_bytes()[1..].contains(&b'[') || s.as_bytes()[rest_start..].contains(&b']') {
        return None;
    }
    Some((host, &s[colon + 1..]))
}

/// Go keeps the port as a string and compares it with the URL's port string,
/// so only the canonical decimal form can ever match a `u16` port. An empty
/// port (`host:`) means "any port" in Go.
fn parse_port(port: &str) -> Result<Option<u16>, &'static str> {
    if port.is_empty() {
        return Ok(None);
    }
    let canonical =
        port.bytes().all(|b| b.is_ascii_digit()) && (port == "0" || !port.starts_with('0'));
    if !canonical {
        return Err(WHY_PORT);
    }
    port.parse().map(Some).map_err(|_| WHY_PORT)
}

/// Go's `idnaASCII`: ASCII passes through untouched, anything else goes
/// through UTS #46 lookup processing with STD3 rules.
fn to_ascii(name: &str) -> Option<Cow<'_, str>> {
    if name.is_ascii() {
        return Some(Cow::Borrowed(name));
    }
    idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::STD3).ok()
}

/// Reject names no URL host can ever equal or end with, so that they are
/// reported instead of silently never matching.
fn validate_domain(name: &str) -> Result<(), &'static str> {
    if name.contains('*') {
        return Err(WHY_STAR);
    }
    let allowed =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.');
    if !name.bytes().all(allowed) {
        return Err(WHY_INVALID);
    }
    // One trailing dot is a legal (fully qualified) spelling; empty labels
    // elsewhere are not.
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() || body.split('.').any(str::is_empty) {
        return Err(WHY_INVALID);
    }
    Ok(())
}

impl NoProxyList {
    /// Would a Go client (net/http ProxyFromEnvironment) go DIRECT (bypass the proxy) for this host and port?
    /// `host` is as it appears in the URL (may be bracketed IPv6 "[::1]", may have a trailing dot, any case).
    pub fn go_bypasses(&self, host: &str, port: u16) -> bool {
        self.go_match(host, port).is_some()
    }

    /// Why a Go client goes direct, if it does: Go's implicit localhost/loopback rule or the first entry that
    /// matches.
    pub fn go_match(&self, host: &str, port: u16) -> Option<GoMatch<'_>> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        // Go converts the URL host before matching and keeps it as is if that fails.
        let host = to_ascii(host).unwrap_or(Cow::Borrowed(host));

        // Go's implicit rule, applied before the list and case-sensitively.
        if host == "localhost" {
            return Some(GoMatch::Localhost);
        }
        let ip = host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return Some(GoMatch::Loopback);
        }

        let lower = host.trim().to_lowercase();
        self.entries
            .iter()
            .find(|entry| match entry {
                // Go runs its domain matchers on IP targets too, comparing the
                // address text; only all-numeric entries such as `0.1` can hit.
                Entry::Domain { .. } => domain_matches(entry, &lower, port),
                _ => Self::matches_entry(entry, None, ip, port),
            })
            .map(GoMatch::Entry)
    }

    /// Does one of the list's entries (ignoring Go's implicit localhost/loopback rule) match this already-normalized
    /// target? `name` is Some(lowercase ascii name without trailing dot) for hostname targets, `ip` is Some for IP targets.
    /// This is what a policy rule built from a NO_PROXY string uses.
    ///
    /// Domain entries never match an IP target here, even the all-numeric ones
    /// Go would compare textually: a policy must not treat `0.1` as covering
    /// `10.0.0.1`.
    pub fn matches_entry(entry: &Entry, name: Option<&str>, ip: Option<IpAddr>, port: u16) -> bool {
        match entry {
            Entry::Any => true,
            Entry::Cidr(net) => ip.is_some_and(|ip| net.contains(&ip.to_canonical())),
            Entry::Ip { ip: want, port: p } => {
                ip.is_some_and(|ip| ip.to_canonical() == *want) && p.is_none_or(|p| p == port)
            }
            Entry::Domain { .. } => match (ip, name) {
                (None, Some(name)) => domain_matches(entry, name, port),
                _ => false,
            },
        }
    }
}

/// Go's `domainMatch`: suffix match on a label boundary, the apex itself only
/// when `include_apex`, and the port only when the entry names one.
fn domain_matches(entry: &Entry, host: &str, port: u16) -> bool {
    let Entry::Domain {
        name,
        include_apex,
        port: want,
    } = entry
    else {
        return false;
    };
    let suffix = host
        .strip_suffix(name.as_str())
        .is_some_and(|head| head.ends_with('.'));
    (suffix || (*include_apex && host == name)) && want.is_none_or(|p| p == port)
}

/// Renders the entry in a form that [`parse`] reads back to the same entry.
impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Any => f.write_str("*"),
            Entry::Cidr(net) => write!(f, "{net}"),
            Entry::Ip { ip, port: None } => write!(f, "{ip}"),
            Entry::Ip {
                ip: IpAddr::V4(ip),
                port: Some(p),
            } => write!(f, "{ip}:{p}"),
            Entry::Ip {
                ip: IpAddr::V6(ip),
                port: Some(p),
            } => write!(f, "[{ip}]:{p}"),
            Entry::Domain {
                name,
                include_apex,
                port,
            } => {
                if !include_apex {
                    f.write_str(".")?;
                }
                f.write_str(name)?;
                match port {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "go_tests.rs"]
mod tests;
