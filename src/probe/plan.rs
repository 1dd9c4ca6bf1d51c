//! What `egressd probe` probes (pure): the endpoints of an expanded vendor profile, one per distinct
//! `host:port`, where `--connect-to` sends each one, and the `--via` proxy URL.

use crate::policy::pattern::{parse_pattern, Pattern};
use crate::target::{normalize_host, parse_authority, Host, Target};
use crate::vendors::Endpoint;

/// One `host:port` of the profile, and the rules (`<profile>/<entry>`) that list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// `host:port` as shown (`api.cast.ai:443`, `[2001:db8::1]:443`, `10.0.0.0/8:443`).
    pub endpoint: String,
    pub rules: Vec<String>,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Probe `target` (the name an agent asks for: SNI, certificate name, policy) by connecting to `dial`
    /// (the same, unless `--connect-to` sends it elsewhere).
    Probe { target: Target, dial: Target },
    /// A host pattern that names no one host: why it is not probed.
    NotProbed(&'static str),
}

/// `--connect-to HOST1:PORT1:HOST2:PORT2` (curl's syntax): connections to HOST1:PORT1 go to HOST2:PORT2
/// instead, while the TLS name, the certificate check and the policy stay those of HOST1. An empty HOST1 or
/// PORT1 matches any; an empty HOST2 or PORT2 keeps the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    pub from_host: Option<Host>,
    pub from_port: Option<u16>,
    pub to_host: Option<Host>,
    pub to_port: Option<u16>,
}

impl ConnectTo {
    pub fn parse(arg: &str) -> Result<ConnectTo, String> {
        let usage = || {
            format!(
                "--connect-to {arg:?}: write HOST1:PORT1:HOST2:PORT2 (empty parts match any, or keep the \
                 original), e.g. :443::8443 or api.cast.ai:443:127.0.0.1:8443; IPv6 addresses in brackets"
            )
        };
        let fields = split_fields(arg).ok_or_else(usage)?;
        let [h1, p1, h2, p2] = fields.as_slice() else {
            return Err(usage());
        };
        let host = |h: &str| -> Result<Option<Host>, String> {
            if h.is_empty() {
                return Ok(None);
            }
            let bare = h.strip_prefix('[').and_then(|x| x.strip_suffix(']'));
            normalize_host(bare.unwrap_or(h))
                .map(Some)
                .map_err(|e| format!("--connect-to {arg:?}: {h:?}: {e}"))
        };
        let port = |p: &str| -> Result<Option<u16>, String> {
            if p.is_empty() {
                return Ok(None);
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!(
                    "--connect-to {arg:?}: {p:?} is not a port (1-65535)"
                )),
            }
        };
        Ok(ConnectTo {
            from_host: host(h1)?,
            from_port: port(p1)?,
            to_host: host(h2)?,
            to_port: port(p2)?,
        })
    }

    fn matches(&self, t: &Target) -> bool {
        self.from_host.as_ref().is_none_or(|h| *h == t.host)
            && self.from_port.is_none_or(|p| p == t.port)
    }
}

/// The four `:`-separated fields, with `:` inside brackets kept.
fn split_fields(arg: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let (mut start, mut depth) = (0, 0);
    for (i, c) in arg.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = (depth as i32 - 1).max(0) as usize,
            ':' if depth == 0 => {
                out.push(&arg[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&arg[start..]);
    (depth == 0).then_some(out)
}

/// Where a connection to `target` goes: the first `--connect-to` that matches it, else `target` itself.
pub fn dial_target(target: &Target, connect_to: &[ConnectTo]) -> Target {
    match connect_to.iter().find(|c| c.matches(target)) {
        Some(c) => Target {
            host: c.to_host.clone().unwrap_or_else(|| target.host.clone()),
            port: c.to_port.unwrap_or(target.port),
        },
        None => target.clone(),
    }
}

/// Every `host:port` of `endpoints`, in profile order, once each (a host two entries list, such as
/// `storage.googleapis.com`, is probed once and names both rules). A host that is not a valid host pattern
/// (a bad `--param` value) is an error naming the rule and the value.
pub fn plan(endpoints: &[Endpoint], connect_to: &[ConnectTo]) -> Result<Vec<Planned>, Vec<String>> {
    let mut out: Vec<Planned> = Vec::new();
    let mut errs = Vec::new();
    for e in endpoints {
        for h in &e.hosts {
            let pattern = match parse_pattern(h) {
                Ok(p) => p,
                Err(why) => {
                    errs.push(format!("{}: {why}", e.rule));
                    continue;
                }
            };
            for &port in &e.ports {
                let item = planned(&pattern, h, port, connect_to);
                match out.iter_mut().find(|p| p.endpoint == item.endpoint) {
                    Some(seen) if !seen.rules.contains(&e.rule) => seen.rules.push(e.rule.clone()),
                    Some(_) => {}
                    None => out.push(Planned {
                        rules: vec![e.rule.clone()],
                        ..item
                    }),
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn planned(pattern: &Pattern, written: &str, port: u16, connect_to: &[ConnectTo]) -> Planned {
    let host = match pattern {
        Pattern::Exact(name) => Host::Name(name.clone()),
        Pattern::Net(net) if net.prefix_len() == net.max_prefix_len() => Host::Ip(net.addr()),
        Pattern::Net(_) => return not_probed(written, port, "range, not probed"),
        Pattern::Suffix { .. } | Pattern::Glob(_) => {
            return not_probed(written, port, "pattern, not probed")
        }
    };
    let target = Target { host, port };
    Planned {
        endpoint: target.authority(),
        rules: Vec::new(),
        what: What::Probe {
            dial: dial_target(&target, connect_to),
            target,
        },
    }
}

fn not_probed(written: &str, port: u16, why: &'static str) -> Planned {
    Planned {
        endpoint: format!("{written}:{port}"),
        rules: Vec::new(),
        what: What::NotProbed(why),
    }
}

/// `--via http://[USER:PASSWORD@]HOST:PORT`: the proxy to probe through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub proxy: Target,
    /// `Basic ...` for `Proxy-Authorization`, from the URL's credentials.
    pub authorization: Option<String>,
    /// The URL as shown in the report: the password replaced by `***`.
    pub shown: String,
}

impl Via {
    pub fn parse(url: &str) -> Result<Via, String> {
        let usage = "write it as http://HOST:PORT or http://USER:PASSWORD@HOST:PORT, e.g. \
                     http://egressd.egressd.svc:3128 (a TLS proxy listener, https://, is not supported here)";
        let Some(rest) = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
        else {
            let shown = if url.contains('@') { "the URL" } else { url };
            return Err(format!("--via {shown:?}: {usage}"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, authority) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let proxy = parse_authority(authority, None)
            .map_err(|e| format!("--via http://{authority}: {e}; {usage}"))?;
        let (authorization, shown) = match userinfo {
            None => (None, format!("http://{}", proxy.authority())),
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let (user, password) = (percent_decode(user), percent_decode(password));
                if user.is_empty() {
                    return Err(format!(
                        "--via http://***@{authority}: no user name; {usage}"
                    ));
                }
                use base64::Engine;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                (
                    Some(format!("Basic {token}")),
                    format!("http://{user}:***@{}", proxy.authority()),
                )
            }
        };
        Ok(Via {
            proxy,
            authorization,
            shown,
        })
    }
}

/// `%XX` escapes decoded (credentials in a URL); anything else is kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(rule: &str, hosts: &[&str], ports: &[u16]) -> Endpoint {
        Endpoint {
            rule: rule.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ports: ports.to_vec(),
            paths: Vec::new(),
            idle_timeout: None,
            purpose: String::new(),
            source: String::new(),
        }
    }

    fn t(s: &str) -> Target {
        parse_authority(s, None).unwrap()
    }

    #[test]
    fn one_line_per_host_and_port_with_every_rule_that_lists_it() {
        let eps = [
            endpoint("v/a", &["API.example", "104.16.81.56"], &[443]),
            endpoint("v/b", &["storage.example", "api.example"], &[443, 8443]),
            endpoint(
                "v/c",
                &["storage.example", "10.0.0.0/8", "*.blob.example"],
                &[443],
            ),
        ];
        let got = plan(&eps, &[]).unwrap();
        let shown: Vec<(&str, String)> = got
            .iter()
            .map(|p| (p.endpoint.as_str(), p.rules.join(",")))
            .collect();
        assert_eq!(
            shown,
            [
                ("api.example:443", "v/a,v/b".to_string()),
                ("104.16.81.56:443", "v/a".into()),
                ("storage.example:443", "v/b,v/c".into()),
                ("storage.example:8443", "v/b".into()),
                ("api.example:8443", "v/b".into()),
                ("10.0.0.0/8:443", "v/c".into()),
                ("*.blob.example:443", "v/c".into()),
            ]
        );
        assert_eq!(
            got[1].what,
            What::Probe {
                target: t("104.16.81.56:443"),
                dial: t("104.16.81.56:443")
            }
        );
        assert_eq!(got[5].what, What::NotProbed("range, not probed"));
        assert_eq!(got[6].what, What::NotProbed("pattern, not probed"));
    }

    #[test]
    fn a_bad_parameter_value_names_its_rule() {
        let errs = plan(&[endpoint("v/storage", &["a b.example"], &[443])], &[]).unwrap_err();
        assert!(errs[0].starts_with("v/storage: "), "{errs:?}");
    }

    #[test]
    fn connect_to_sends_matching_endpoints_elsewhere_first_match_wins() {
        let rules: Vec<ConnectTo> = [
            "api.example:443::9001",
            ":443:127.0.0.1:9000",
            "[2001:db8::1]::[::1]:",
        ]
        .iter()
        .map(|a| ConnectTo::parse(a).unwrap())
        .collect();
        assert_eq!(
            dial_target(&t("api.example:443"), &rules),
            t("api.example:9001")
        );
        assert_eq!(
            dial_target(&t("other.example:443"), &rules),
            t("127.0.0.1:9000")
        );
        assert_eq!(
            dial_target(&t("other.example:80"), &rules),
            t("other.example:80")
        );
        assert_eq!(dial_target(&t("[2001:db8::1]:80"), &rules), t("[::1]:80"));
        // Names are compared normalized.
        let upper = ConnectTo::parse("API.Example.:443::1").unwrap();
        assert_eq!(
            dial_target(&t("api.example:443"), &[upper]),
            t("api.example:1")
        );
    }

    #[test]
    fn connect_to_errors_say_how_to_write_it() {
        for bad in [
            "443=8443",
            "a:b:c",
            ":443::0",
            ":443::70000",
            ":x::1",
            "[::1:443::1",
        ] {
            let e = ConnectTo::parse(bad).unwrap_err();
            assert!(e.contains("--connect-to"), "{bad}: {e}");
        }
        assert!(ConnectTo::parse("bad host:443::1")
            .unwrap_err()
            .contains("bad host"));
    }

    #[test]
    fn via_urls() {
        let v = Via::parse("http://127.0.0.1:3128/").unwrap();
        assert_eq!(
            (v.proxy, v.authorization, v.shown.as_str()),
            (t("127.0.0.1:3128"), None, "http://127.0.0.1:3128")
        );
        let v = Via::parse("http://castai:p%40ss@egressd.example:3128").unwrap();
        assert_eq!(v.authorization.as_deref(), Some("Basic Y2FzdGFpOnBAc3M="));
        assert_eq!(v.shown, "http://castai:***@egressd.example:3128");
        for bad in [
            "egressd:3128",
            "https://egressd:3129",
            "http://egressd",
            "http://egressd:0",
        ] {
            assert!(
                Via::parse(bad).unwrap_err().contains("http://HOST:PORT"),
                "{bad}"
            );
        }
        let e = Via::parse("socks5://u:secret@h:1").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
