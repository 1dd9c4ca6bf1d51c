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
mod tests {
    use super::*;

    fn v4(s: &str) -> Host {
        Host::Ip(IpAddr::V4(s.parse().unwrap()))
    }

    fn v6(s: &str) -> Host {
        Host::Ip(IpAddr::V6(s.parse().unwrap()))
    }

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    #[test]
    fn normalize_host_accepts_and_canonicalizes() {
        let cases: &[(&str, Host)] = &[
            // Plain names.
            ("api.cast.ai", name("api.cast.ai")),
            ("API.Cast.AI", name("api.cast.ai")),
            ("a.com.", name("a.com")),
            ("localhost", name("localhost")),
            ("_dmarc.example.com", name("_dmarc.example.com")),
            ("a_b.example", name("a_b.example")),
            ("123.example.com", name("123.example.com")),
            (
                "r3---sn-abc.googlevideo.com",
                name("r3---sn-abc.googlevideo.com"),
            ),
            ("0xg", name("0xg")),
            ("1.2.3.4a", name("1.2.3.4a")),
            ("1e3", name("1e3")),
            // IDNA.
            ("bücher.example", name("xn--bcher-kva.example")),
            ("BÜCHER.Example", name("xn--bcher-kva.example")),
            ("xn--bcher-kva.example", name("xn--bcher-kva.example")),
            ("XN--BCHER-KVA.EXAMPLE", name("xn--bcher-kva.example")),
            ("ß.de", name("xn--zca.de")),
            ("ｅｘａｍｐｌｅ．ｃｏｍ", name("example.com")),
            ("a\u{3002}com", name("a.com")),
            ("a\u{00AD}b.com", name("ab.com")),
            ("a＿b.com", name("a_b.com")),
            // IPv4 in every WHATWG spelling.
            ("127.0.0.1", v4("127.0.0.1")),
            ("127.0.0.1.", v4("127.0.0.1")),
            ("2130706433", v4("127.0.0.1")),
            ("0x7f.1", v4("127.0.0.1")),
            ("127.1", v4("127.0.0.1")),
            ("127.0.1", v4("127.0.0.1")),
            ("0177.0.0.1", v4("127.0.0.1")),
            ("0x7F000001", v4("127.0.0.1")),
            ("0X7f.0.0.1", v4("127.0.0.1")),
            ("0x7f.0x0.0x0.0x1", v4("127.0.0.1")),
            ("017700000001", v4("127.0.0.1")),
            ("１２７.0.0.1", v4("127.0.0.1")),
            ("２１３０７０６４３３", v4("127.0.0.1")),
            ("127。0。0。1", v4("127.0.0.1")),
            ("0", v4("0.0.0.0")),
            ("0x", v4("0.0.0.0")),
            ("0X", v4("0.0.0.0")),
            ("0x.0x.0x.0x", v4("0.0.0.0")),
            ("00", v4("0.0.0.0")),
            ("255.255.255.255", v4("255.255.255.255")),
            ("4294967295", v4("255.255.255.255")),
            ("0xffffffff", v4("255.255.255.255")),
            ("1.16777215", v4("1.255.255.255")),
            ("1.2.65535", v4("1.2.255.255")),
            ("169.254.43518", v4("169.254.169.254")),
            ("010.0.0.1", v4("8.0.0.1")),
            ("08.0.0.1a", name("08.0.0.1a")),
            // IPv6.
            ("[::1]", v6("::1")),
            ("[2001:DB8::1]", v6("2001:db8::1")),
            ("[::ffff:127.0.0.1]", v6("::ffff:7f00:1")),
            ("::1", v6("::1")),
            ("2001:db8::1", v6("2001:db8::1")),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_host(raw).as_ref(), Ok(want), "input {raw:?}");
        }
    }

    #[test]
    fn normalize_host_rejects() {
        use TargetError::{InvalidHost as H, InvalidTarget as T};
        type Variant = fn(String) -> TargetError;
        let long_label = format!("{}.com", "a".repeat(64));
        let max_label = format!("{}.com", "a".repeat(63));
        let long_name = ["a".repeat(63).as_str(); 4].join(".") + ".ab";
        let cases: Vec<(&str, Variant)> = vec![
            // Malformed: InvalidTarget.
            ("", T),
            (" ", T),
            ("a.com ", T),
            ("a .com", T),
            ("a.com\0", T),
            ("a\r\n.com", T),
            ("a\t.com", T),
            ("a\u{7f}.com", T),
            ("a\u{85}.com", T),
            ("a\u{a0}.com", T),
            ("a\u{3000}.com", T),
            ("user@a.com", T),
            ("a.com/x", T),
            ("a.com\\x", T),
            ("a.com?x", T),
            ("a.com#x", T),
            ("a%2ecom", T),
            ("%31%32%37.0.0.1", T),
            ("a<b", T),
            ("a>b", T),
            ("a\"b", T),
            ("a{b", T),
            ("a}b", T),
            ("a|b", T),
            ("a^b", T),
            ("a`b", T),
            ("fe80::1%eth0", T),
            ("[fe80::1%25eth0]", T),
            ("[fe80::1%eth0]", T),
            ("[::1", T),
            ("::1]", T),
            ("[]", T),
            ("[a.com]", T),
            ("[127.0.0.1]", T),
            ("[::1]x", T),
            ("a[b]", T),
            ("a.com:443", T),
            ("1.2.3.4:80", T),
            (":::", T),
            // Name-shaped but invalid: InvalidHost.
            ("a.com..", H),
            ("a..com", H),
            (".a.com", H),
            (".", H),
            ("..", H),
            ("-a.com", H),
            ("a-.com", H),
            ("a.-com", H),
            ("a!b.com", H),
            ("a*b.com", H),
            ("a,b.com", H),
            ("a;b.com", H),
            ("a=b.com", H),
            ("a~b.com", H),
            ("a'b.com", H),
            ("xn--zz", H),
            ("xn--a", H),
            ("xn--", H),
            ("xn--abc.com", H),
            ("xn--ab-.com", H),
            ("a\u{200D}b.com", H),
            ("\u{0301}a.com", H),
            ("\u{FFFD}.com", H),
            ("a／b", H),
            ("a：b", H),
            (long_label.as_str(), H),
            (long_name.as_str(), H),
            // Numeric: must be valid IPv4 or nothing.
            ("1.2.3.4.5", H),
            ("1.2.3.4.5.", H),
            ("foo.123", H),
            ("foo.0x1", H),
            ("foo.0x", H),
            ("256.1.1.1", H),
            ("1.256.1.1", H),
            ("1.1.256.1", H),
            ("1.1.1.256", H),
            ("1.1.65536", H),
            ("1.16777216", H),
            ("4294967296", H),
            ("0x100000000", H),
            ("99999999999999999999999999", H),
            ("1.2.3.09", H),
            ("09", H),
            ("08.1", H),
            ("0x1g.1", H),
            ("1..2", H),
            ("1.2..3", H),
            (".1.2.3", H),
            ("127.0.0.1..", H),
            ("１２７.0.0.1.1.1", H),
        ];
        // Sanity check for the length cases above: the boundary is accepted.
        assert_eq!(
            normalize_host(&max_label),
            Ok(Host::Name(max_label.clone()))
        );
        let max_name = ["a".repeat(63).as_str(); 4].join(".")[..253].to_owned();
        assert_eq!(normalize_host(&max_name), Ok(Host::Name(max_name.clone())));
        for (raw, variant) in cases {
            let err = normalize_host(raw).expect_err(raw);
            let expected = variant(String::new());
            assert_eq!(err.reason(), expected.reason(), "input {raw:?}: {err}");
        }
    }

    #[test]
    fn oversized_input_is_rejected_without_processing() {
        let raw = "a".repeat(MAX_RAW_HOST_LEN + 1);
        assert_eq!(
            normalize_host(&raw).unwrap_err().reason(),
            Reason::InvalidHost
        );
    }

    #[test]
    fn error_messages_show_escaped_input() {
        let cases: &[(&str, &str)] = &[
            ("a\r\nb", "\"a\\r\\nb\""),
            ("a\0b", "\"a\\0b\""),
            ("fe80::1%eth0", "zone"),
            ("1.2.3.4.5", "\"1.2.3.4.5\""),
            ("xn--zz", "\"xn--zz\""),
        ];
        for (raw, needle) in cases {
            let msg = normalize_host(raw).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn parse_authority_accepts() {
        let cases: &[(&str, Option<u16>, Host, u16)] = &[
            ("api.cast.ai:443", None, name("api.cast.ai"), 443),
            ("API.cast.ai.:443", None, name("api.cast.ai"), 443),
            ("api.cast.ai", Some(80), name("api.cast.ai"), 80),
            ("api.cast.ai:8443", Some(80), name("api.cast.ai"), 8443),
            ("10.0.0.1:80", None, v4("10.0.0.1"), 80),
            ("0x7f.1:22", None, v4("127.0.0.1"), 22),
            ("2130706433", Some(443), v4("127.0.0.1"), 443),
            ("[2001:db8::1]:443", None, v6("2001:db8::1"), 443),
            ("[::1]", Some(443), v6("::1"), 443),
            ("[::ffff:10.0.0.1]:443", None, v6("::ffff:a00:1"), 443),
            (
                "bücher.example:443",
                None,
                name("xn--bcher-kva.example"),
                443,
            ),
            ("a.com:1", None, name("a.com"), 1),
            ("a.com:65535", None, name("a.com"), 65535),
            ("a.com:0443", None, name("a.com"), 443),
        ];
        for (raw, default_port, host, port) in cases {
            let want = Target {
                host: host.clone(),
                port: *port,
            };
            assert_eq!(
                parse_authority(raw, *default_port),
                Ok(want),
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn parse_authority_rejects() {
        let cases: &[(&str, Option<u16>, &str)] = &[
            ("user@host:443", Some(443), "invalid_target"),
            ("user:pass@host:443", None, "invalid_target"),
            ("@host:443", None, "invalid_target"),
            ("a.com:443@evil.com:443", None, "invalid_target"),
            ("a.com: 443", None, "invalid_target"),
            (" a.com:443", None, "invalid_target"),
            ("a.com:443 ", None, "invalid_target"),
            ("a.com:443\r\n", None, "invalid_target"),
            ("a.com\t:443", None, "invalid_target"),
            ("a.com:443\0", None, "invalid_target"),
            (":443", None, "invalid_target"),
            ("", Some(443), "invalid_target"),
            ("[]:443", None, "invalid_target"),
            ("a.com", None, "invalid_target"),
            ("[::1]", None, "invalid_target"),
            ("a.com:", None, "invalid_target"),
            ("a.com:", Some(443), "invalid_target"),
            ("a.com:0", None, "invalid_target"),
            ("a.com:00", None, "invalid_target"),
            ("a.com:65536", None, "invalid_target"),
            ("a.com:99999999999", None, "invalid_target"),
            ("a.com:+443", None, "invalid_target"),
            ("a.com:-443", None, "invalid_target"),
            ("a.com:0x1bb", None, "invalid_target"),
            ("a.com:443a", None, "invalid_target"),
            ("a.com:443:443", None, "invalid_target"),
            ("a.com:４４３", None, "invalid_target"),
            ("::1:443", None, "invalid_target"),
            ("::1", Some(443), "invalid_target"),
            ("2001:db8::1:443", None, "invalid_target"),
            ("[::1:443", None, "invalid_target"),
            ("::1]:443", None, "invalid_target"),
            ("[::1]]:443", None, "invalid_target"),
            ("[[::1]]:443", None, "invalid_target"),
            ("[::1]443", None, "invalid_target"),
            ("[::1]:443]", None, "invalid_target"),
            ("a[b]:443", None, "invalid_target"),
            ("[a.com]:443", None, "invalid_target"),
            ("[fe80::1%25eth0]:443", None, "invalid_target"),
            ("a.com/path:443", None, "invalid_target"),
            ("a.com#:443", None, "invalid_target"),
            ("1.2.3.4.5:443", None, "invalid_host"),
            ("foo.123:443", None, "invalid_host"),
            ("xn--zz:443", None, "invalid_host"),
            ("a..com:443", None, "invalid_host"),
        ];
        for (raw, default_port, reason) in cases {
            let err = parse_authority(raw, *default_port).expect_err(raw);
            assert_eq!(err.reason().as_str(), *reason, "input {raw:?}: {err}");
        }
    }

    #[test]
    fn parse_authority_error_messages() {
        let cases: &[(&str, &str)] = &[
            ("a.com:0", "port 0 is not a valid port in \"a.com:0\""),
            ("a.com", "port is required"),
            ("u@a.com:443", "userinfo"),
            ("::1:443", "brackets"),
            ("a.com:99999", "out of range"),
            ("a.com:443\n", "\"a.com:443\\n\""),
        ];
        for (raw, needle) in cases {
            let msg = parse_authority(raw, None).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
        assert_eq!(
            parse_authority("a.com:0", None),
            Err(TargetError::InvalidTarget(
                "port 0 is not a valid port in \"a.com:0\"".to_owned()
            ))
        );
    }

    #[test]
    fn display_and_authority() {
        let cases: &[(Host, u16, &str, &str)] = &[
            (name("a.com"), 443, "a.com", "a.com:443"),
            (v4("10.0.0.1"), 80, "10.0.0.1", "10.0.0.1:80"),
            (v6("::1"), 443, "::1", "[::1]:443"),
            (v6("2001:db8::1"), 8080, "2001:db8::1", "[2001:db8::1]:8080"),
            (
                v6("::ffff:127.0.0.1"),
                443,
                "::ffff:127.0.0.1",
                "[::ffff:127.0.0.1]:443",
            ),
        ];
        for (host, port, display, authority) in cases {
            assert_eq!(host.to_string(), *display);
            let target = Target {
                host: host.clone(),
                port: *port,
            };
            assert_eq!(target.authority(), *authority);
            // What `authority` produces must parse back to the same target.
            assert_eq!(parse_authority(authority, None), Ok(target));
        }
    }

    #[test]
    fn as_name() {
        assert_eq!(name("a.com").as_name(), Some("a.com"));
        assert_eq!(v4("1.2.3.4").as_name(), None);
        assert_eq!(v6("::1").as_name(), None);
    }

    #[test]
    fn error_display_and_reason() {
        let t = TargetError::InvalidTarget("x".to_owned());
        let h = TargetError::InvalidHost("y".to_owned());
        assert_eq!(t.to_string(), "invalid target: x");
        assert_eq!(h.to_string(), "invalid host: y");
        assert_eq!(t.reason(), Reason::InvalidTarget);
        assert_eq!(h.reason(), Reason::InvalidHost);
    }

    #[test]
    fn normalization_is_idempotent() {
        let inputs = [
            "Bücher.Example.",
            "0x7f.1",
            "[::FFFF:127.0.0.1]",
            "A_B.example",
            "１２７.0.0.1",
        ];
        for raw in inputs {
            let once = normalize_host(raw).unwrap();
            let again = match &once {
                Host::Ip(IpAddr::V6(ip)) => normalize_host(&format!("[{ip}]")),
                other => normalize_host(&other.to_string()),
            };
            assert_eq!(again, Ok(once), "input {raw:?}");
        }
    }
}
