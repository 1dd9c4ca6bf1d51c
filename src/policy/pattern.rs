//! Host patterns as written in `hosts:` lists, parsed into the forms the indexes understand.
//!
//! | written            | meaning                                                    |
//! |--------------------|------------------------------------------------------------|
//! | `api.cast.ai`      | exactly that name                                          |
//! | `*.cast.ai`        | any subdomain of cast.ai, not cast.ai itself               |
//! | `.cast.ai`         | cast.ai and any subdomain                                  |
//! | `api-*.cast.ai`    | glob (globset syntax; `*` also crosses dots)               |
//! | `104.16.81.56`     | exactly that IP (IPv6 with or without brackets)            |
//! | `10.0.0.0/8`       | any IP in the CIDR (IPv4 or IPv6)                          |

use crate::target::{normalize_host, Host};
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Suffix { name: String, include_apex: bool },
    Glob(String),
    Net(IpNet),
}

const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}'];

/// Parse one `hosts:` entry. The error says what is wrong with it and how to write it instead.
pub fn parse_pattern(raw: &str) -> Result<Pattern, String> {
    let p = raw.trim();
    if p.is_empty() {
        return Err("empty host pattern".into());
    }
    if p != raw {
        return Err(format!("{raw:?} has surrounding whitespace"));
    }
    if p.contains('/') {
        let net: IpNet = p.parse().map_err(|_| {
            format!("{raw:?} is not a valid CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)")
        })?;
        return Ok(Pattern::Net(net.trunc()));
    }
    let unbracketed = p
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(p);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(Pattern::Net(IpNet::from(ip)));
    }
    if p.contains(':') {
        return Err(format!(
            "{raw:?} contains ':'; write ports in the rule's `ports:` list, not in the host"
        ));
    }
    if let Some(rest) = p.strip_prefix("*.") {
        if !rest.contains(GLOB_CHARS) {
            return Ok(Pattern::Suffix {
                name: normalize_name(rest, raw)?,
                include_apex: false,
            });
        }
    }
    if let Some(rest) = p.strip_prefix('.') {
        return Ok(Pattern::Suffix {
            name: normalize_name(rest, raw)?,
            include_apex: true,
        });
    }
    if p.contains(GLOB_CHARS) {
        let lower = p.to_ascii_lowercase();
        globset::Glob::new(&lower).map_err(|e| format!("{raw:?} is not a valid glob: {e}"))?;
        return Ok(Pattern::Glob(lower));
    }
    match normalize_host(p) {
        Ok(Host::Name(n)) => Ok(Pattern::Exact(n)),
        Ok(Host::Ip(ip)) => Err(format!(
            "{raw:?} is a numeric form of the IP address {ip}; write the address as {ip}"
        )),
        Err(e) => Err(format!("{raw:?}: {e}")),
    }
}

fn normalize_name(name: &str, raw: &str) -> Result<String, String> {
    match normalize_host(name) {
        Ok(Host::Name(n)) => Ok(n),
        Ok(Host::Ip(_)) => Err(format!(
            "{raw:?}: a domain suffix cannot be an IP address; use a CIDR instead"
        )),
        Err(e) => Err(format!("{raw:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suffix(name: &str, include_apex: bool) -> Pattern {
        Pattern::Suffix {
            name: name.into(),
            include_apex,
        }
    }

    #[test]
    fn forms() {
        let cases: &[(&str, Pattern)] = &[
            ("api.cast.ai", Pattern::Exact("api.cast.ai".into())),
            ("API.Cast.AI.", Pattern::Exact("api.cast.ai".into())),
            ("*.cast.ai", suffix("cast.ai", false)),
            (".cast.ai", suffix("cast.ai", true)),
            ("api-*.cast.ai", Pattern::Glob("api-*.cast.ai".into())),
            ("*.*.cast.ai", Pattern::Glob("*.*.cast.ai".into())),
            (
                "104.16.81.56",
                Pattern::Net("104.16.81.56/32".parse().unwrap()),
            ),
            (
                "2001:db8::1",
                Pattern::Net("2001:db8::1/128".parse().unwrap()),
            ),
            (
                "[2001:db8::1]",
                Pattern::Net("2001:db8::1/128".parse().unwrap()),
            ),
            ("10.1.2.3/8", Pattern::Net("10.0.0.0/8".parse().unwrap())),
            (
                "2001:db8::/32",
                Pattern::Net("2001:db8::/32".parse().unwrap()),
            ),
            (
                "bücher.example",
                Pattern::Exact("xn--bcher-kva.example".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(&parse_pattern(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn errors() {
        for raw in [
            "",
            " api.cast.ai",
            "api.cast.ai:443",
            "10.0.0.0/33",
            "10.0.0.0/8a",
            "127.1",
            "a..b",
            "xn--zz.example",
            "[a-.example",
            ".10.0.0.1",
        ] {
            assert!(parse_pattern(raw).is_err(), "{raw:?} should be rejected");
        }
    }
}
