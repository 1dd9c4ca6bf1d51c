//! `egressd noproxy lint` and `suggest`: known NO_PROXY pitfalls, each with its fix, and a value that behaves the
//! same in Go, curl and Python clients. Pure.

use super::clients::{route, Client, Url};
use super::go::{self, Entry};
use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Stable snake_case code.
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

/// Cloud metadata and credential endpoints: egressd refuses these destinations, so they must go direct.
pub const METADATA: &[&str] = &[
    "169.254.169.254",
    "169.254.170.23",
    "metadata.google.internal",
    "fd00:ec2::254",
];

/// The clients that send `url` through the proxy under `no_proxy`.
pub fn proxied_by(no_proxy: &str, url: &str) -> Vec<Client> {
    let url = Url::parse(url).expect("built-in URL");
    Client::ALL
        .into_iter()
        .filter(|c| !route(*c, Some(no_proxy), &url).direct)
        .collect()
}

fn names(clients: &[Client]) -> String {
    clients
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first usable host address of a network (the Kubernetes API service is the first address of the service
/// CIDR).
pub fn first_host(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()).saturating_add(1)).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()).saturating_add(1)).into()),
    }
}

fn url_for(ip: IpAddr, scheme: &str) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{scheme}://{v4}/"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]/"),
    }
}

pub fn lint(no_proxy: &str, pod_cidr: Option<IpNet>, service_cidr: Option<IpNet>) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut warn = |code, message: String, fix: String| out.push(Warning { code, message, fix });
    let items: Vec<&str> = no_proxy
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let parsed = go::parse(no_proxy);

    if items.iter().any(|i| i.contains(char::is_whitespace)) {
        warn(
            "space_separator",
            "entries are separated by spaces: Go ignores such an item, curl stops reading at the first space \
             and Python requests glues the names together"
                .into(),
            format!(
                "separate entries with commas: {}",
                no_proxy.split([',', ' ', '\t']).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(",")
            ),
        );
    }
    let bare_v6: Vec<String> = parsed
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Ip {
                ip: IpAddr::V6(v6),
                port: None,
            } => Some(v6.to_string()),
            _ => None,
        })
        .collect();
    for ig in &parsed.ignored {
        if ig.entry.contains(char::is_whitespace) {
            continue;
        }
        let inner = ig.entry.trim_start_matches('[').trim_end_matches(']');
        if ig.entry.starts_with('[')
            && bare_v6
                .iter()
                .any(|b| inner.parse::<IpAddr>().map(|i| i.to_string()).as_deref() == Ok(b))
        {
            continue; // the bracketed twin of a bare entry, for urllib
        }
        warn(
            "ignored_by_go",
            format!("entry {:?} is ignored by Go: {}", ig.entry, ig.why),
            "fix or remove the entry".into(),
        );
    }
    for i in &items {
        if let Some(rest) = i.strip_prefix("*.") {
            warn(
                "wildcard_prefix",
                format!("entry {i:?} works in Go only; curl, Python (urllib, requests) and wget never match it"),
                format!("write .{rest} (subdomains) or {rest} (the domain and its subdomains)"),
            );
        }
    }
    if items.contains(&"*") && no_proxy.trim() != "*" {
        warn(
            "star_in_list",
            "\"*\" inside a list sends everything direct in Go, and is ignored by curl and Python".into(),
            "remove \"*\" (or make it the whole value if everything really should bypass the proxy)".into(),
        );
    }
    for e in &parsed.entries {
        let has_port = matches!(
            e,
            Entry::Ip { port: Some(_), .. } | Entry::Domain { port: Some(_), .. }
        );
        if has_port {
            warn(
                "host_port",
                format!(
                    "entry {:?} has a port: curl never matches it, Python only when the URL writes that port",
                    e.to_string()
                ),
                "drop the port; NO_PROXY entries cannot portably select a port".into(),
            );
        }
        if let Entry::Domain { name, .. } = e {
            if name.ends_with('.') {
                warn(
                    "trailing_dot",
                    format!("entry {name:?} ends with a dot: Go matches it only for hosts written with the dot"),
                    format!("write {}", name.trim_end_matches('.')),
                );
            }
        }
    }
    for v6 in &bare_v6 {
        if !items.iter().any(|i| *i == format!("[{v6}]")) {
            warn(
                "ipv6_form",
                format!("IPv6 entry {v6:?}: Python urllib compares the host as written in the URL, [{v6}]"),
                format!("list both forms: {v6},[{v6}]"),
            );
        }
    }
    if parsed.entries.iter().any(|e| matches!(e, Entry::Cidr(_))) {
        warn(
            "cidr_python",
            "CIDR entries are ignored by Python urllib and wget (requests understands IPv4 CIDRs only): those \
             clients send requests to IP addresses in the ranges through the proxy"
                .into(),
            "also list the specific addresses Python clients use (for example the API server IP)".into(),
        );
    }

    // --- Kubernetes ---
    match service_cidr {
        Some(svc) => {
            let api = first_host(&svc);
            let p = proxied_by(no_proxy, &url_for(api, "https"));
            if !p.is_empty() {
                warn(
                    "api_server_ip",
                    format!(
                        "the API server is reached by IP (KUBERNETES_SERVICE_HOST, usually {api}); {} would send it \
                         through the proxy (.svc and .cluster.local do not cover an IP)",
                        names(&p)
                    ),
                    format!("add {svc} and {api}"),
                );
            }
        }
        None => {
            if !parsed.entries.iter().any(|e| matches!(e, Entry::Cidr(_))) {
                warn(
                    "api_server_ip",
                    "no CIDR entry: the API server is reached by IP (KUBERNETES_SERVICE_HOST), which .svc and \
                     .cluster.local do not cover"
                        .into(),
                    "add the service CIDR and the API server IP (run again with --service-cidr to check)".into(),
                );
            }
        }
    }
    if let Some(pod) = pod_cidr {
        let ip = first_host(&pod);
        let p = proxied_by(no_proxy, &url_for(ip, "https"));
        if !p.is_empty() {
            warn(
                "pod_cidr",
                format!(
                    "pod IPs ({pod}, used by webhooks and scraping) go through the proxy for {}",
                    names(&p)
                ),
                if p.iter()
                    .all(|c| matches!(c, Client::Urllib | Client::Requests))
                {
                    // The CIDR is there (Go and curl match it); no entry can make Python match a range.
                    format!(
                        "nothing to add for Go and curl; {} cannot match {pod} (urllib has no CIDR support, \
                         requests none for IPv6): list the pod IPs such a client calls, or let it use the proxy",
                        names(&p)
                    )
                } else {
                    format!(
                        "add {pod} (Python urllib cannot match CIDRs at all; only Go, curl and requests can)"
                    )
                },
            );
        }
    }
    let svc_proxied = proxied_by(no_proxy, "https://my-svc.my-ns.svc/");
    if !svc_proxied.is_empty() {
        warn(
            "cluster_services",
            format!(
                "in-cluster service names (my-svc.my-ns.svc) go through the proxy for {}",
                names(&svc_proxied)
            ),
            "add .svc and .cluster.local".into(),
        );
    } else {
        let short = proxied_by(no_proxy, "https://my-svc.my-ns/");
        if !short.is_empty() {
            warn(
                "short_names",
                "short service names (my-svc, my-svc.my-ns) are not covered by .svc or .cluster.local".into(),
                "use full names (my-svc.my-ns.svc) in agent settings, or list the short names".into(),
            );
        }
    }
    for m in METADATA {
        let url = match m.parse::<IpAddr>() {
            Ok(ip) => url_for(ip, "http"),
            Err(_) => format!("http://{m}/"),
        };
        let p = proxied_by(no_proxy, &url);
        if !p.is_empty() {
            let fix = if m.contains(':') {
                format!("add {m},[{m}]")
            } else {
                format!("add {m}")
            };
            warn(
                "metadata",
                format!(
                    "metadata endpoint {m} goes through the proxy for {}; egressd refuses link-local and \
                     metadata addresses, so credential lookups fail",
                    names(&p)
                ),
                fix,
            );
        }
    }
    let p = proxied_by(no_proxy, "http://localhost:8080/");
    if !p.is_empty() {
        warn(
            "localhost",
            format!(
                "localhost goes through the proxy for {} (only Go exempts it on its own)",
                names(&p)
            ),
            "add localhost,127.0.0.1".into(),
        );
    }
    out
}

/// A NO_PROXY value that sends cluster-internal, loopback and metadata traffic direct in Go, curl and Python.
pub fn suggest(
    pod_cidr: Option<IpNet>,
    service_cidr: Option<IpNet>,
    cluster_domain: &str,
) -> String {
    let mut v: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(p) = pod_cidr {
        v.push(p.trunc().to_string());
    }
    if let Some(s) = service_cidr {
        v.push(s.trunc().to_string());
        // urllib has no CIDR support: the API server's IP must be listed as is, and an IPv6 one also in
        // brackets, the way urllib compares it.
        let api = first_host(&s);
        v.push(api.to_string());
        if api.is_ipv6() {
            v.push(format!("[{api}]"));
        }
    }
    let domain = cluster_domain.trim_matches('.');
    for s in ["kubernetes", "kubernetes.default", ".svc"] {
        v.push(s.to_string());
    }
    v.push(format!(".{domain}"));
    for m in METADATA {
        v.push(m.to_string());
        if m.contains(':') {
            v.push(format!("[{m}]"));
        }
    }
    v.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(w: &[Warning]) -> Vec<&'static str> {
        w.iter().map(|w| w.code).collect()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn vendor_guidance_is_linted() {
        // The CAST AI documented value with example CIDRs filled in.
        let w = lint(
            "localhost,10.244.0.0/16,10.96.0.0/12,*.cluster.local,googleapis.com,metadata.google.internal",
            Some(net("10.244.0.0/16")),
            Some(net("10.96.0.0/12")),
        );
        let c = codes(&w);
        for want in [
            "wildcard_prefix",
            "cidr_python",
            "api_server_ip",
            "pod_cidr",
            "cluster_services",
            "metadata",
        ] {
            assert!(c.contains(&want), "{want} missing: {w:#?}");
        }
        let meta = w
            .iter()
            .find(|w| w.code == "metadata" && w.message.contains("169.254.169.254"))
            .unwrap();
        assert_eq!(meta.fix, "add 169.254.169.254");
        // Only Python misses the API server IP once the service CIDR is listed.
        let api = w.iter().find(|w| w.code == "api_server_ip").unwrap();
        assert!(
            api.message.contains("python-urllib") && !api.message.contains("go,"),
            "{api:?}"
        );
        assert!(api.fix.contains("10.96.0.1"), "{api:?}");
    }

    #[test]
    fn each_pitfall() {
        let cases: &[(&str, &str)] = &[
            ("localhost .svc .cluster.local", "space_separator"),
            ("192.168.0.0/16a", "ignored_by_go"),
            ("[::1]", "ignored_by_go"),
            ("*.cluster.local", "wildcard_prefix"),
            ("a.example,*", "star_in_list"),
            ("api.internal:8443", "host_port"),
            ("10.0.0.1:80", "host_port"),
            ("example.com.", "trailing_dot"),
            ("::1", "ipv6_form"),
            ("10.0.0.0/8", "cidr_python"),
            ("localhost", "api_server_ip"),
            ("localhost,.svc", "short_names"),
            ("localhost", "cluster_services"),
            ("localhost", "metadata"),
            (".svc", "localhost"),
        ];
        for (value, code) in cases {
            let w = lint(value, None, None);
            assert!(
                codes(&w).contains(code),
                "{value:?}: {code} missing from {w:#?}"
            );
            assert!(
                w.iter().all(|w| !w.fix.is_empty()),
                "every warning has a fix"
            );
        }
        // The bracketed twin of a bare IPv6 entry is deliberate, not a mistake.
        let w = lint("::1,[::1]", None, None);
        assert!(
            !codes(&w).contains(&"ignored_by_go") && !codes(&w).contains(&"ipv6_form"),
            "{w:#?}"
        );
    }

    #[test]
    fn suggestion_works_for_every_client() {
        let pod = net("10.244.0.0/16");
        let svc = net("10.96.0.0/12");
        let value = suggest(Some(pod), Some(svc), "cluster.local");
        assert_eq!(
            value,
            "localhost,127.0.0.1,::1,[::1],10.244.0.0/16,10.96.0.0/12,10.96.0.1,kubernetes,kubernetes.default,\
             .svc,.cluster.local,169.254.169.254,169.254.170.23,metadata.google.internal,fd00:ec2::254,[fd00:ec2::254]"
        );
        let direct_everywhere = [
            "https://10.96.0.1/",
            "https://kubernetes.default.svc/",
            "https://kubernetes/",
            "https://kubernetes.default/",
            "http://my-svc.my-ns.svc:8080/",
            "http://my-svc.my-ns.svc.cluster.local/",
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.23/",
            "http://metadata.google.internal/",
            "http://[fd00:ec2::254]/",
            "http://localhost:8080/",
            "http://127.0.0.1:9090/",
            "http://[::1]/",
        ];
        for url in direct_everywhere {
            assert_eq!(proxied_by(&value, url), vec![], "{url}");
        }
        // Pod IPs: every client but urllib (no CIDR support).
        assert_eq!(
            proxied_by(&value, "https://10.244.3.7:8443/"),
            vec![Client::Urllib]
        );
        // Vendor endpoints still go through egressd.
        for url in [
            "https://api.cast.ai/",
            "https://storage.googleapis.com/",
            "https://agent.cloudcasa.io/",
        ] {
            assert_eq!(proxied_by(&value, url), Client::ALL.to_vec(), "{url}");
        }
        // It lints clean apart from the unavoidable CIDR note and the short-name reminder.
        let w = lint(&value, Some(pod), Some(svc));
        let pods = w.iter().find(|w| w.code == "pod_cidr").unwrap();
        assert!(
            pods.fix
                .starts_with("nothing to add for Go and curl; python-urllib cannot match"),
            "{pods:?}"
        );
        let c = codes(&w);
        assert!(
            c.iter()
                .all(|c| ["cidr_python", "pod_cidr", "short_names"].contains(c)),
            "{w:#?}"
        );
        // A custom cluster domain.
        assert!(suggest(None, None, "corp.local.").contains(",.corp.local,"));
    }

    #[test]
    fn ipv6_suggestion_sends_the_api_server_direct_in_every_client() {
        let value = suggest(
            Some(net("fd00::/48")),
            Some(net("fd01::/108")),
            "cluster.local",
        );
        assert!(value.contains(",fd01::1,[fd01::1],"), "{value}");
        assert_eq!(proxied_by(&value, "https://[fd01::1]:443/"), vec![]);
        // Pod IPs: neither urllib nor requests matches an IPv6 CIDR.
        assert_eq!(
            proxied_by(&value, "http://[fd00::5]/"),
            vec![Client::Urllib, Client::Requests]
        );
    }
}
