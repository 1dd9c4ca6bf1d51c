//! How each client decides "direct or through the proxy" for one URL and one NO_PROXY value. Go is
//! [`super::go`] (the reference); curl, Python urllib and requests are alternates written from their
//! sources (curl lib/noproxy.c; CPython urllib.request.proxy_bypass_environment; requests
//! utils.should_bypass_proxies). Pure functions, no environment access.

use super::go::{self, GoMatch};
use ipnet::{IpNet, Ipv4Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// Go net/http (ProxyFromEnvironment, golang.org/x/net/http/httpproxy).
    Go,
    /// curl / libcurl.
    Curl,
    /// Python urllib.request.
    Urllib,
    /// Python requests (its own check, then urllib's).
    Requests,
}

impl Client {
    pub const ALL: [Client; 4] = [Client::Go, Client::Curl, Client::Urllib, Client::Requests];

    pub fn name(self) -> &'static str {
        match self {
            Client::Go => "go",
            Client::Curl => "curl",
            Client::Urllib => "python-urllib",
            Client::Requests => "python-requests",
        }
    }

    /// `go`, `curl`, `python` (urllib and requests), `urllib`, `requests`, `all`.
    pub fn parse_set(s: &str) -> Result<Vec<Client>, String> {
        Ok(match s {
            "go" => vec![Client::Go],
            "curl" => vec![Client::Curl],
            "python" => vec![Client::Urllib, Client::Requests],
            "urllib" | "python-urllib" => vec![Client::Urllib],
            "requests" | "python-requests" => vec![Client::Requests],
            "all" => Client::ALL.to_vec(),
            other => {
                return Err(format!(
                    "unknown client {other:?}; use go, curl, python, urllib, requests or all"
                ))
            }
        })
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request URL as the clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    /// The host exactly as written (IPv6 keeps its brackets, case kept).
    pub host: String,
    /// The port if the URL writes one.
    pub port_written: Option<u16>,
}

impl Url {
    /// `http://host[:port]/...` or `https://...`; a bare `host[:port]` is read as https.
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some((sc, rest)) => (sc.to_ascii_lowercase(), rest),
            None => ("https".to_string(), s),
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "{s:?}: only http:// and https:// URLs are explained"
            ));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let end = stripped
                .find(']')
                .ok_or_else(|| format!("{s:?}: unclosed '['"))?;
            let host = &authority[..end + 2];
            let after = &stripped[end + 1..];
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        // RFC 3986 reg-name characters (and any non-ASCII, for IDNs); brackets hold an IPv6 literal.
        let reg_name =
            |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c) || !c.is_ascii();
        if !host.starts_with('[') && !host.chars().all(reg_name) {
            return Err(format!("{s:?}: {host:?} is not a host name"));
        }
        let port_written = match port {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("{s:?}: {p:?} is not a port"))?,
            ),
        };
        Ok(Url {
            scheme,
            host: host.to_string(),
            port_written,
        })
    }

    pub fn port(&self) -> u16 {
        self.port_written
            .unwrap_or(if self.scheme == "http" { 80 } else { 443 })
    }

    /// The host without IPv6 brackets, lowercased (what Python's `urlparse().hostname` gives).
    pub fn hostname(&self) -> String {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
            .to_lowercase()
    }

    /// `host[:port]` as written in the URL (what urllib's `Request.host` gives).
    pub fn netloc(&self) -> String {
        match self.port_written {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// A client's verdict for one URL, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub direct: bool,
    /// The entry (or built-in rule) that sent it direct; `None` when it goes through the proxy.
    pub because: Option<String>,
}

impl Route {
    fn proxy() -> Route {
        Route {
            direct: false,
            because: None,
        }
    }
    fn direct(because: impl Into<String>) -> Route {
        Route {
            direct: true,
            because: Some(because.into()),
        }
    }
}

/// What `client` does for `url` given the NO_PROXY value it reads (`None`: unset).
pub fn route(client: Client, no_proxy: Option<&str>, url: &Url) -> Route {
    match client {
        Client::Go => go(no_proxy.unwrap_or(""), url),
        Client::Curl => curl(no_proxy.unwrap_or(""), url),
        Client::Urllib => urllib(no_proxy, &url.netloc()),
        Client::Requests => requests(no_proxy, url),
    }
}

// --- Go ---

fn go(no_proxy: &str, url: &Url) -> Route {
    let list = go::parse(no_proxy);
    match list.go_match(&url.host, url.port()) {
        None => Route::proxy(),
        Some(GoMatch::Localhost) => Route::direct("built-in: localhost always goes direct"),
        Some(GoMatch::Loopback) => Route::direct("built-in: loopback IPs always go direct"),
        Some(GoMatch::Entry(e)) => Route::direct(format!("entry {:?}", e.to_string())),
    }
}

// --- curl ---

enum CurlHost {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// curl's `Curl_check_noproxy`: `*` only as the whole value; entries end at a comma or blank, and a blank not
/// followed by a comma ends the list; leading and trailing dots ignored; ports never parsed; IP targets only
/// against IP/CIDR entries.
pub fn curl(no_proxy: &str, url: &Url) -> Route {
    if no_proxy.is_empty() {
        return Route::proxy();
    }
    if no_proxy == "*" {
        return Route::direct("the whole value is \"*\"");
    }
    let target = if let Some(inner) = url.host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        match inner.parse::<Ipv6Addr>() {
            Ok(ip) => CurlHost::V6(ip),
            Err(_) => CurlHost::Name(inner.to_string()),
        }
    } else if let Ok(ip) = url.host.parse::<Ipv4Addr>() {
        CurlHost::V4(ip)
    } else {
        let h = url.host.strip_suffix('.').unwrap_or(&url.host);
        CurlHost::Name(h.to_ascii_lowercase())
    };
    let bytes = no_proxy.as_bytes();
    let blank = |b: u8| b == b' ' || b == b'\t';
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && blank(bytes[i]) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && !blank(bytes[i]) && bytes[i] != b',' {
            i += 1;
        }
        let token = &no_proxy[start..i];
        if !token.is_empty() && curl_token_matches(token, &target) {
            return Route::direct(format!("entry {token:?}"));
        }
        while i < bytes.len() && blank(bytes[i]) {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b',' {
            break;
        }
        while i < bytes.len() && bytes[i] == b',' {
            i += 1;
        }
    }
    Route::proxy()
}

fn curl_token_matches(token: &str, target: &CurlHost) -> bool {
    match target {
        CurlHost::Name(name) => {
            let t = token.strip_suffix('.').unwrap_or(token);
            let t = t.strip_prefix('.').unwrap_or(t).to_ascii_lowercase();
            if t.is_empty() {
                return false;
            }
            name == &t
                || name
                    .strip_suffix(t.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        }
        CurlHost::V4(ip) => curl_address_match(token, IpAddr::V4(*ip)),
        CurlHost::V6(ip) => curl_address_match(token, IpAddr::V6(*ip)),
    }
}

/// curl's NO_PROXY entry for an address host: the same address, or `addr/bits` covering it, of the host's
/// family. `/0` means the address alone, not every address.
fn curl_address_match(token: &str, ip: IpAddr) -> bool {
    let Some((addr, bits)) = curl_split_bits(token) else {
        return false;
    };
    let Ok(net_ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    if net_ip.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    if bits == 0 {
        return net_ip == ip;
    }
    u8::try_from(bits)
        .ok()
        .and_then(|bits| IpNet::new(net_ip, bits).ok())
        .is_some_and(|net| net.trunc().contains(&ip))
}

/// `addr[/bits]`; a prefix length that is not all digits makes the entry unusable.
fn curl_split_bits(token: &str) -> Option<(&str, u32)> {
    match token.split_once('/') {
        None => Some((token, 0)),
        Some((a, b)) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) && b.len() <= 3 => {
            Some((a, b.parse().ok()?))
        }
        Some(_) => None,
    }
}

// --- Python ---

/// CPython `urllib.request.proxy_bypass_environment(host)`, where `host` is `host[:port]` as the caller passes
/// it (urllib: as written in the URL, brackets kept; requests: the bare hostname).
pub fn urllib(no_proxy: Option<&str>, host: &str) -> Route {
    let Some(no_proxy) = no_proxy else {
        return Route::proxy();
    };
    if no_proxy == "*" {
        return Route::direct("the whole value is \"*\"");
    }
    let host = host.to_lowercase();
    let hostonly = python_splitport(&host);
    for raw in no_proxy.split(',') {
        let name = raw.trim();
        if name.is_empty() {
            continue;
        }
        let bare = name.trim_start_matches('.').to_lowercase();
        let dotted = format!(".{bare}");
        if hostonly == bare
            || host == bare
            || hostonly.ends_with(&dotted)
            || host.ends_with(&dotted)
        {
            return Route::direct(format!("entry {name:?}"));
        }
    }
    Route::proxy()
}

/// Python's `_splitport`: `(.*):([0-9]*)` over the whole string; a non-empty port is split off. (So a bare
/// IPv6 address loses its last group.)
fn python_splitport(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if i + 1 < host.len() && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &host[..i]
        }
        _ => host,
    }
}

/// requests `should_bypass_proxies`: spaces removed and split on commas; IPv4 targets against IPv4 CIDRs and
/// exact IPs; other targets by label-boundary suffix with and without the written port; then urllib's check
/// on the bare hostname.
pub fn requests(no_proxy: Option<&str>, url: &Url) -> Route {
    let hostname = url.hostname();
    if let Some(np) = no_proxy.filter(|s| !s.is_empty()) {
        let cleaned = np.replace(' ', "");
        let entries = cleaned.split(',').filter(|e| !e.is_empty());
        if let Ok(ip) = hostname.parse::<Ipv4Addr>() {
            for e in entries {
                if let Some(net) = requests_cidr(e) {
                    if net.contains(&ip) {
                        return Route::direct(format!("entry {e:?} (CIDR)"));
                    }
                } else if hostname == e {
                    return Route::direct(format!("entry {e:?}"));
                }
            }
        } else {
            let with_port = match url.port_written {
                Some(p) => format!("{hostname}:{p}"),
                None => hostname.clone(),
            };
            for e in entries {
                let bare = e.trim_start_matches('.');
                let dotted = format!(".{bare}");
                if hostname == bare
                    || with_port == bare
                    || hostname.ends_with(&dotted)
                    || with_port.ends_with(&dotted)
                {
                    return Route::direct(format!("entry {e:?}"));
                }
            }
        }
    }
    match urllib(no_proxy, &hostname) {
        Route {
            direct: true,
            because: Some(b),
        } => Route::direct(format!("{b} (urllib's check on the hostname)")),
        other => other,
    }
}

/// requests `is_valid_cidr`: `a.b.c.d/n` with 1 <= n <= 32; host bits allowed.
fn requests_cidr(e: &str) -> Option<Ipv4Net> {
    let (a, b) = e.split_once('/')?;
    let bits: u8 = b.parse().ok().filter(|n| (1..=32).contains(n))?;
    Ipv4Net::new(a.parse().ok()?, bits).ok().map(|n| n.trunc())
}

/// The host as an IP, if it is one (brackets removed).
pub fn host_ip(host: &str) -> Option<IpAddr> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

#[cfg(test)]
#[path = "clients_tests.rs"]
mod tests;
