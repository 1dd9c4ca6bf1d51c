//! Normalization of proxy request targets.
//!
//! Every allowlist decision is made on the output of this module, so it has
//! to map all the spellings a client (or an attacker) might use for one
//! destination onto a single canonical form: `127.1`, `0x7f000001` and
//! `２１３０７０６４３３` must all become `127.0.0.1`, and `Bücher.Example.`
//! must become `xn--bcher-kva.example`. Anything that cannot be mapped
//! unambiguously is rejected rather than guessed at.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use crate::reason::Reason;

/// A normalized destination host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A lowercase ASCII (punycode) DNS name without a trailing dot.
    Name(String),
    /// A literal address. IPv4-mapped IPv6 addresses stay IPv6 so that the
    /// special-purpose check can report how the IPv4 address was embedded.
    Ip(IpAddr),
}

impl Host {
    /// The DNS name, or `None` for an address literal.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    /// IPv6 is printed without brackets; use [`Target::authority`] when the
    /// result is going to be combined with a port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A normalized `host:port` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// The `host:port` form, with IPv6 addresses bracketed as required in an
    /// authority.
    pub fn authority(&self) -> String {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The host as written in a Host header or URL: IPv6 bracketed, no port.
    pub fn host_for_header(&self) -> String {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.to_string(),
        }
    }
}

/// Why a target was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The authority is malformed: it cannot even be split into a host and a
    /// port, or it contains characters no host may contain.
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// The host is shaped like a name but is not a valid one (bad IDNA,
    /// bad labels, too long, or numeric but not a valid IPv4 address).
    #[error("invalid host: {0}")]
    InvalidHost(String),
}

impl TargetError {
    /// The reason code a refusal of this target carries.
    pub fn reason(&self) -> Reason {
        match self {
            TargetError::InvalidTarget(_) => Reason::InvalidTarget,
            TargetError::InvalidHost(_) => Reason::InvalidHost,
        }
    }
}

/// Longest host input that is worth handing to IDNA processing. A valid
/// result is at most 253 bytes; the slack allows for multi-byte UTF-8 input
/// and for code points that UTS-46 maps away, while keeping the work done on
/// hostile input bounded.
const MAX_RAW_HOST_LEN: usize = 1024;

/// Longest DNS name, excluding the trailing root dot.
const MAX_NAME_LEN: usize = 253;

/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// ASCII characters that can never appear in a host, either because they
/// delimit other URL/authority components or because accepting them would
/// let two parsers disagree about where the host ends. `%` is here because
/// percent-encoded hosts are rejected rather than decoded, which also rules
/// out IPv6 zone identifiers.
const FORBIDDEN_HOST_CHARS: &[char] = &[
    '@', '/', '\\', '?', '#', '%', '<', '>', '"', '{', '}', '|', '^', '`',
];

/// Handed to UTS-46 so that it fails fast on ASCII that cannot end up in a
/// valid name. It is deliberately not [`AsciiDenyList::STD3`], which would
/// also reject `_`, used by real names (for example SRV-style labels).
/// Characters are re-checked after conversion anyway, so this is an early
/// exit, not the source of truth.
const IDNA_DENY_LIST: AsciiDenyList = AsciiDenyList::new(true, "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~");

fn invalid_target(msg: impl fmt::Display, raw: &str) -> TargetError {
    TargetError::InvalidTarget(format!("{msg} in {raw:?}"))
}

fn invalid_host(msg: impl fmt::Display, raw: &str) -> TargetError {
    TargetError::InvalidHost(format!("{msg} in {raw:?}"))
}

/// Control characters and whitespace are rejected everywhere: they are never
/// legitimate in an authority and are a classic source of parser confusion
/// (request splitting, log injection).
fn is_control_or_space(c: char) -> bool {
    c.is_control() || c.is_whitespace()
}

/// Normalizes the host part of a target (brackets allowed around IPv6).
pub fn normalize_host(raw: &str) -> Result<Host, TargetError> {
    if raw.is_empty() {
        return Err(TargetError::InvalidTarget("empty host".to_owned()));
    }
    if raw.len() > MAX_RAW_HOST_LEN {
        return Err(TargetError::InvalidHost(format!(
            "host is {} bytes long, more than the {MAX_RAW_HOST_LEN} accepted",
            raw.len()
        )));
    }
    if raw.chars().any(is_control_or_space) {
        return Err(invalid_target(
            "control characters and whitespace are not allowed",
            raw,
        ));
    }
    if raw.contains('%') && raw.contains(':') {
        // Zone ids only make sense on the proxy host's own links, and the
        // `%25` URL spelling of them is percent-encoding, which is refused.
        return Err(invalid_target("IPv6 zone identifiers are not allowed", raw));
    }
    if let Some(c) = raw.chars().find(|c| FORBIDDEN_HOST_CHARS.contains(c)) {
        return Err(invalid_target(
            format_args!("character {c:?} is not allowed in a host"),
            raw,
        ));
    }

    if let Some(rest) = raw.strip_prefix('[') {
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| invalid_target("'[' without a matching ']' at the end", raw))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| invalid_target("brackets must contain an IPv6 address", raw));
    }
    if raw.contains(['[', ']']) {
        return Err(invalid_target("misplaced bracket in host", raw));
    }
    if raw.contains(':') {
        // Accepted without brackets so that configuration and command line
        // input can name an IPv6 address naturally; `parse_authority` never
        // passes an unbracketed ':' through.
        return raw
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| invalid_target("':' is only allowed in an IPv6 address", raw));
    }

    normalize_name(raw)
}

/// Converts a non-IPv6 host to its canonical form: an IPv4 address if it
/// ends in a number, otherwise a validated ASCII DNS name.
fn normalize_name(raw: &str) -> Result<Host, TargetError> {
    // UTS-46 mapping runs before the numeric check, as in the WHATWG host
    // parser, because mapping can produce digits and dots from other code
    // points (fullwidth digits, ideographic full stop). Checking first would
    // let `１２７.0.0.1` through as a *name* that resolves to loopback.
    let ascii = Uts46::new()
        .to_ascii(
            raw.as_bytes(),
            IDNA_DENY_LIST,
            // Hyphen placement is checked below; UTS-46's full check would
            // also reject `--` in positions 3-4, which real hosts (such as
            // CDN node names) use.
            Hyphens::Allow,
            DnsLength::Ignore,
        )
        .map_err(|_| invalid_host("not a valid internationalized domain name", raw))?;

    let name = ascii.strip_suffix('.').unwrap_or(&ascii);

    if ends_in_number(name) {
        return parse_ipv4(name)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| invalid_host("numeric host is not a valid IPv4 address", raw));
    }

    validate_dns_name(name).map_err(|msg| invalid_host(msg, raw))?;
    Ok(Host::Name(name.to_owned()))
}

/// Checks the converted name against DNS syntax (letters, digits and
/// hyphens, plus `_`), returning what is wrong with it.
fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("host name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "host name is {} characters long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("host name has an empty label".to_owned());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label {label:?} is longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'))
        {
            return Err(format!("character {c:?} is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with a hyphen"));
        }
    }
    Ok(())
}

/// The WHATWG "ends in a number" check: a host whose last label is numeric
/// must be parsed as IPv4 and may never be treated as a name. `name` has
/// already had one trailing dot removed.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    // `0x`-prefixed hex also counts, including a bare `0x`. Other radixes
    // are covered by the all-digits test above (octal is all digits too).
    parse_ipv4_number(last).is_some()
}

/// The WHATWG IPv4 parser, applied to a host without its trailing dot.
/// Returns `None` for anything the standard treats as failure.
fn parse_ipv4(name: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u64; 4];
    let mut count = 0;
    for part in name.split('.') {
        if count == parts.len() {
            return None;
        }
        parts[count] = parse_ipv4_number(part)?;
        count += 1;
    }
    let (last, leading) = parts[..count].split_last()?;
    if leading.iter().any(|&p| p > 255) {
        return None;
    }
    // The last part fills all the bytes not given by the leading parts.
    let last_bits = 8 * (5 - count as u32);
    if *last >= 1u64 << last_bits {
        return None;
    }
    let mut addr = *last;
    for (i, &p) in leading.iter().enumerate() {
        addr |= p << (8 * (3 - i as u32));
    }
    Some(Ipv4Addr::from(u32::try_from(addr).ok()?))
}

/// The WHATWG IPv4 number parser: decimal, `0x`/`0X` hex, or `0`-prefixed
/// octal. An empty part is a failure, but a bare `0x` is zero.
fn parse_ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(0);
    }
    // Checked by hand because `from_str_radix` accepts a leading '+'.
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Overflow means the value is far beyond any valid part, so failing is
    // equivalent to the standard's unbounded integer followed by the range
    // checks in `parse_ipv4`.
    u64::from_str_radix(digits, radix).ok()
}

/// Parses a request authority (`host:port`, `[v6]:port`, or a bare host when
/// `default_port` is given) into a normalized target.
pub fn parse_authority(raw: &str, default_port: Option<u16>) -> Result<Target, TargetError> {
    if raw.chars().any(is_control_or_space) {
        return Err(invalid_target(
            "control characters and whitespace are not allowed",
            raw,
        ));
    }
    if raw.contains('@') {
        // Userinfo would be a way to smuggle a second, different-looking
        // host past anything that reads the authority naively.
        return Err(invalid_target("userinfo is not allowed", raw));
    }

    let (host, port) = split_host_port(raw)?;
    if host.is_empty() {
        return Err(invalid_target("empty host", raw));
    }
    let port = match port {
        Some(port) => parse_port(port, raw)?,
        None => default_port
            .ok_or_else(|| invalid_target("a port is required (expected host:port)", raw))?,
    };
    let host = normalize_host(host)?;
    Ok(Target { host, port })
}

/// Splits an authority into host and optional port text. IPv6 addresses
/// must be bracketed, since otherwise `::1:443` could mean either `::1` port
/// 443 or the address `::1:443`.
fn split_host_port(raw: &str) -> Result<(&str, Option<&str>), TargetError> {
    if raw.starts_with('[') {
        let close = raw
            .find(']')
            .ok_or_else(|| invalid_target("unterminated '[' in authority", raw))?;
        let (host, rest) = raw.split_at(close + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(invalid_target("unexpected text after ']'", raw)),
        };
    }
    if raw.contains(['[', ']']) {
        return Err(invalid_target("misplaced bracket in authority", raw));
    }
    match raw.split_once(':') {
        Some((_, port)) if port.contains(':') => Err(invalid_target(
            "IPv6 addresses must be enclosed in brackets in an authority",
            raw,
        )),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((raw, None)),
    }
}

fn parse_port(port: &str, raw: &str) -> Result<u16, TargetError> {
    if port.is_empty() {
        return Err(invalid_target("empty port", raw));
    }
    // Digits only: `u16::from_str` would also accept a leading '+'.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_target(
            format_args!("port {port:?} is not a decimal number"),
            raw,
        ));
    }
    match port.parse::<u16>() {
        Ok(0) => Err(invalid_target("port 0 is not a valid port", raw)),
        Ok(port) => Ok(port),
        Err(_) => Err(invalid_target(
            format_args!("port {port} is out of range"),
            raw,
        )),
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
