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

/// Is `name` itself a suffix listed in the Public Suffix List (`com`, `co.uk`, `s3.amazonaws.com`), under which
/// anyone can register names? Unlisted TLDs (`test`, `internal`) are not counted: nothing says who owns them.
pub fn is_public_suffix(name: &str) -> bool {
    psl::suffix(name.as_bytes())
        .is_some_and(|s| s.is_known() && s.trim().as_bytes() == name.as_bytes())
}

/// Why an allow pattern reaches names its author most likely did not mean, with the safer pattern to write
/// instead; `None` for patterns bounded by a registrable domain. A glob's wildcards must be followed by a dot
/// and a domain that is not a public suffix (`api-*.cast.ai` is bounded; `*cast.ai` matches `evilcast.ai`,
/// `api.*` matches `api.evil.com`); a suffix pattern must not be a public suffix (`*.com`, `.co.uk`).
pub fn breadth(p: &Pattern) -> Option<String> {
    match p {
        Pattern::Glob(g) => {
            let tail = g.rfind(GLOB_CHARS).map_or(g.as_str(), |i| &g[i + 1..]);
            match tail.split_once('.') {
                None => Some(format!(
                    "glob {g:?} ends in a wildcard, so it matches names in any domain (\"api.*\" matches \
                     api.evil.com); name the domain, e.g. \"{}.example.com\"",
                    match g[..g.find(GLOB_CHARS).unwrap_or(0)].trim_end_matches('.') {
                        "" => "api",
                        stem => stem,
                    }
                )),
                Some(("", anchor)) if is_public_suffix(anchor) => Some(format!(
                    "glob {g:?} spans the public suffix {anchor:?}: it matches anyone's names under it; name the \
                     registrable domain, e.g. \"*.example.{anchor}\""
                )),
                Some((label, anchor)) if !label.is_empty() && is_public_suffix(anchor) => Some(format!(
                    "glob {g:?} is not bounded by a label: it matches \"evil{label}.{anchor}\" too; write \
                     \"*.{label}.{anchor}\" (its subdomains) or \".{label}.{anchor}\" (also {label}.{anchor} itself)"
                )),
                _ => None,
            }
        }
        Pattern::Suffix { name, include_apex } if is_public_suffix(name) => Some(format!(
            "{:?} covers every name under the public suffix {name:?}, which anyone can register; name the \
             registrable domain, e.g. \"*.example.{name}\"",
            if *include_apex {
                format!(".{name}")
            } else {
                format!("*.{name}")
            }
        )),
        _ => None,
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
    fn broad_patterns_are_told_apart() {
        let broad = |raw: &str| breadth(&parse_pattern(raw).unwrap());
        for raw in [
            "*cast.ai",
            "api.*",
            "*",
            "api.*.com",
            "*-cdn.co.uk",
            "[ab]cast.ai",
            "x.{cast.ai,com}",
            "*.com",
            ".co.uk",
            "*.s3.amazonaws.com",
        ] {
            assert!(broad(raw).is_some(), "{raw} should be broad");
        }
        for raw in [
            "api-*.cast.ai",
            "*.*.cast.ai",
            "api?.cast.ai",
            "*x.cast.ai",
            "{a,b}.cast.ai",
            "*.cast.ai",
            ".cast.ai",
            "api.cast.ai",
            "10.0.0.0/8",
            ".test",
            "*.cluster.local",
            "*.amazonaws.com",
        ] {
            assert_eq!(broad(raw), None, "{raw}");
        }
        let m = broad("*cast.ai").unwrap();
        assert!(
            m.contains("evilcast.ai") && m.contains("\"*.cast.ai\"") && m.contains("\".cast.ai\""),
            "{m}"
        );
        let m = broad("api.*").unwrap();
        assert!(
            m.contains("api.evil.com") && m.contains("\"api.example.com\""),
            "{m}"
        );
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
