//! Which proxy variables each client reads. Pure: the caller passes the environment as a map.

use super::clients::Client;
use std::collections::BTreeMap;

/// What one client takes from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnv {
    pub client: Client,
    /// (variable it came from, value) for http:// URLs.
    pub http_proxy: Option<(String, String)>,
    /// (variable, value) for https:// URLs.
    pub https_proxy: Option<(String, String)>,
    /// (variable, value) of the NO_PROXY list.
    pub no_proxy: Option<(String, String)>,
    /// Things the reader should know (REQUEST_METHOD, ...).
    pub notes: Vec<String>,
}

impl ClientEnv {
    pub fn no_proxy_value(&self) -> Option<&str> {
        self.no_proxy.as_ref().map(|(_, v)| v.as_str())
    }

    pub fn proxy_for(&self, scheme: &str) -> Option<&(String, String)> {
        if scheme == "http" {
            self.http_proxy.as_ref()
        } else {
            self.https_proxy.as_ref()
        }
    }
}

/// The proxy-related variables, in the order they are reported.
pub const VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "REQUEST_METHOD",
];

fn non_empty(env: &BTreeMap<String, String>, name: &str) -> Option<(String, String)> {
    env.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| (name.to_string(), v.clone()))
}

/// The first of `names` that is set and not empty.
fn first(env: &BTreeMap<String, String>, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| non_empty(env, n))
}

/// CPython `getproxies_environment()` for one key: a non-empty lower-case variable wins; a set but empty lower-case
/// variable removes the key; otherwise the upper-case one (dropped for `http` under REQUEST_METHOD).
fn python_var(env: &BTreeMap<String, String>, key: &str) -> Option<(String, String)> {
    let lower = format!("{key}_proxy");
    let upper = lower.to_uppercase();
    match env.get(&lower) {
        Some(v) if !v.is_empty() => Some((lower, v.clone())),
        Some(_) => None,
        None if key == "http" && env.contains_key("REQUEST_METHOD") => None,
        None => non_empty(env, &upper),
    }
}

pub fn resolve(client: Client, env: &BTreeMap<String, String>) -> ClientEnv {
    let mut notes = Vec::new();
    let cgi = env.contains_key("REQUEST_METHOD");
    let (http_proxy, https_proxy, no_proxy) = match client {
        Client::Go => {
            let mut http = first(env, &["HTTP_PROXY", "http_proxy"]);
            if cgi && http.is_some() {
                notes.push(
                    "REQUEST_METHOD is set: Go refuses to use HTTP_PROXY for http:// URLs (CGI protection); \
                     those requests fail"
                        .into(),
                );
                http = None;
            }
            (
                http,
                first(env, &["HTTPS_PROXY", "https_proxy"]),
                first(env, &["NO_PROXY", "no_proxy"]),
            )
        }
        Client::Curl => {
            if non_empty(env, "HTTP_PROXY").is_some() && non_empty(env, "http_proxy").is_none() {
                notes.push(
                    "curl ignores upper-case HTTP_PROXY: set http_proxy for http:// URLs".into(),
                );
            }
            (
                first(env, &["http_proxy", "all_proxy", "ALL_PROXY"]),
                first(
                    env,
                    &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"],
                ),
                first(env, &["no_proxy", "NO_PROXY"]),
            )
        }
        Client::Urllib => (
            python_var(env, "http"),
            python_var(env, "https"),
            python_var(env, "no"),
        ),
        Client::Requests => {
            let all = python_var(env, "all");
            (
                python_var(env, "http").or_else(|| all.clone()),
                python_var(env, "https").or(all),
                first(env, &["no_proxy", "NO_PROXY"]),
            )
        }
    };
    ClientEnv {
        client,
        http_proxy,
        https_proxy,
        no_proxy,
        notes,
    }
}

/// Warnings about the environment as a whole: variables whose upper- and lower-case forms differ.
pub fn case_conflicts(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for base in ["http_proxy", "https_proxy", "no_proxy", "all_proxy"] {
        let upper = base.to_uppercase();
        if let (Some(l), Some(u)) = (env.get(base), env.get(&upper)) {
            if l != u {
                out.push(format!(
                    "{upper}={u:?} and {base}={l:?} differ: Go reads {upper}, curl and Python read {base}; \
                     set both to the same value"
                ));
            }
        }
    }
    if non_empty(env, "HTTP_PROXY").is_some() && env.get("http_proxy").is_none() {
        out.push(
            "HTTP_PROXY is set without http_proxy: curl sends http:// traffic direct; set http_proxy too"
                .into(),
        );
    }
    for v in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        if let Some(val) = env.get(v) {
            if val.starts_with("https://") {
                out.push(format!(
                    "{v}={val:?}: https:// means TLS to the proxy itself: it needs egressd's TLS listener \
                     (listen_tls) at that address and a certificate the client trusts; otherwise use http://"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value(o: &Option<(String, String)>) -> Option<&str> {
        o.as_ref().map(|(k, _)| k.as_str())
    }

    #[test]
    fn which_variable_each_client_reads() {
        let e = env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
            ("https_proxy", "http://lower:2"),
            ("NO_PROXY", "upper.example"),
            ("no_proxy", "lower.example"),
        ]);
        let go = resolve(Client::Go, &e);
        assert_eq!(value(&go.http_proxy), Some("HTTP_PROXY"));
        assert_eq!(value(&go.https_proxy), Some("HTTPS_PROXY"));
        assert_eq!(go.no_proxy_value(), Some("upper.example"));
        for c in [Client::Curl, Client::Urllib, Client::Requests] {
            let r = resolve(c, &e);
            assert_eq!(value(&r.https_proxy), Some("https_proxy"), "{c}");
            assert_eq!(r.no_proxy_value(), Some("lower.example"), "{c}");
        }
        assert_eq!(case_conflicts(&e).len(), 3);
    }

    #[test]
    fn fallbacks_and_pitfalls() {
        // Upper-case only: curl ignores HTTP_PROXY but reads HTTPS_PROXY.
        let e = env(&[("HTTP_PROXY", "http://p:1"), ("HTTPS_PROXY", "http://p:1")]);
        let curl = resolve(Client::Curl, &e);
        assert_eq!(curl.http_proxy, None);
        assert_eq!(value(&curl.https_proxy), Some("HTTPS_PROXY"));
        assert!(!curl.notes.is_empty());
        assert!(case_conflicts(&e)
            .iter()
            .any(|w| w.contains("curl sends http:// traffic direct")));
        // Python takes the upper-case one when there is no lower-case one.
        assert_eq!(
            value(&resolve(Client::Urllib, &e).http_proxy),
            Some("HTTP_PROXY")
        );
        // Empty counts as unset in Go.
        let e = env(&[("NO_PROXY", ""), ("no_proxy", "a.example")]);
        assert_eq!(resolve(Client::Go, &e).no_proxy_value(), Some("a.example"));
        // An empty lower-case variable hides the upper-case one in urllib, not in requests.
        let e = env(&[("no_proxy", ""), ("NO_PROXY", "a.example")]);
        assert_eq!(resolve(Client::Urllib, &e).no_proxy_value(), None);
        assert_eq!(
            resolve(Client::Requests, &e).no_proxy_value(),
            Some("a.example")
        );
        // ALL_PROXY: curl and requests use it, Go and urllib do not.
        let e = env(&[("ALL_PROXY", "http://all:1")]);
        assert!(resolve(Client::Curl, &e).https_proxy.is_some());
        assert!(resolve(Client::Requests, &e).https_proxy.is_some());
        assert!(resolve(Client::Go, &e).https_proxy.is_none());
        assert!(resolve(Client::Urllib, &e).https_proxy.is_none());
        // REQUEST_METHOD disables the upper-case HTTP proxy in Go and Python.
        let e = env(&[("HTTP_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")]);
        assert!(resolve(Client::Go, &e).http_proxy.is_none());
        assert!(resolve(Client::Urllib, &e).http_proxy.is_none());
        // https:// proxy URLs are flagged.
        let e = env(&[
            ("HTTPS_PROXY", "https://p:1"),
            ("https_proxy", "https://p:1"),
        ]);
        assert!(case_conflicts(&e)
            .iter()
            .any(|w| w.contains("TLS to the proxy")));
    }
}
