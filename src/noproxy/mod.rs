//! NO_PROXY: the parser with Go's semantics ([`go`], the reference, which the policy compiler uses for
//! NO_PROXY-style allow entries), how curl and Python read the proxy variables, and the `egressd noproxy`
//! commands built on that. Everything here is pure (no I/O, no async) and imports nothing from the rest of the
//! crate, so `policy` can sit above it; the binary's `cli/noproxy.rs` only passes arguments and the
//! environment in and prints what comes back.

pub mod clients;
pub mod env;
pub mod go;
pub mod lint;

pub use clients::{route, Client, Route, Url};
pub use go::{parse, Entry, GoMatch, Ignored, NoProxyList};
pub use lint::{lint, suggest, Warning};

use std::collections::BTreeMap;

/// `egressd noproxy explain`: one line per URL and client: `URL  client  direct|proxy  why`.
pub fn explain(no_proxy: &str, clients: &[Client], urls: &[String]) -> Result<String, String> {
    let mut out = String::new();
    for u in urls {
        let url = Url::parse(u)?;
        for c in clients {
            out.push_str(&line(u, *c, &route(*c, Some(no_proxy), &url)));
        }
    }
    Ok(out)
}

fn line(url: &str, c: Client, r: &Route) -> String {
    format!(
        "{url}\t{c}\t{}\t{}\n",
        if r.direct { "direct" } else { "proxy" },
        r.because.as_deref().unwrap_or("no entry matches")
    )
}

/// `egressd noproxy lint`: one warning per paragraph, with its fix.
pub fn render_warnings(warnings: &[Warning]) -> String {
    let mut out = String::new();
    for w in warnings {
        out.push_str(&format!(
            "warning[{}]: {}\n  fix: {}\n",
            w.code, w.message, w.fix
        ));
    }
    out
}

/// `egressd noproxy from-env`: the variables, what each client reads, conflicts, and (with URLs) each client's
/// route using its own variables.
pub fn from_env(vars: &BTreeMap<String, String>, urls: &[String]) -> Result<String, String> {
    let mut out = String::from("variables:\n");
    for v in env::VARIABLES {
        match vars.get(*v) {
            Some(val) => out.push_str(&format!("  {v}={val:?}\n")),
            None => out.push_str(&format!("  {v} unset\n")),
        }
    }
    let show = |o: &Option<(String, String)>| match o {
        Some((k, v)) => format!("{v} (from {k})"),
        None => "none: direct".to_string(),
    };
    let parsed: Vec<Url> = urls
        .iter()
        .map(|u| Url::parse(u))
        .collect::<Result<_, _>>()?;
    for c in Client::ALL {
        let e = env::resolve(c, vars);
        out.push_str(&format!("\n{c}:\n"));
        out.push_str(&format!("  http:// URLs use  {}\n", show(&e.http_proxy)));
        out.push_str(&format!("  https:// URLs use {}\n", show(&e.https_proxy)));
        out.push_str(&format!(
            "  NO_PROXY          {}\n",
            match &e.no_proxy {
                Some((k, v)) => format!("{v:?} (from {k})"),
                None => "unset".into(),
            }
        ));
        for n in &e.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        for (raw, url) in urls.iter().zip(&parsed) {
            let r = route(c, e.no_proxy_value(), url);
            let via = match (r.direct, e.proxy_for(&url.scheme)) {
                (true, _) => format!("direct ({})", r.because.unwrap_or_default()),
                (false, Some((k, v))) => format!("proxy {v} (from {k})"),
                (false, None) => "direct (no proxy variable for this scheme)".into(),
            };
            out.push_str(&format!("  {raw}\t{via}\n"));
        }
    }
    let conflicts = env::case_conflicts(vars);
    if !conflicts.is_empty() {
        out.push('\n');
        for c in conflicts {
            out.push_str(&format!("warning: {c}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_lines() {
        let out = explain(
            "*.cluster.local,10.0.0.0/8",
            &Client::ALL,
            &[
                "http://a.ns.svc.cluster.local/".into(),
                "https://10.1.2.3/".into(),
            ],
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 8);
        assert_eq!(
            lines[0],
            "http://a.ns.svc.cluster.local/\tgo\tdirect\tentry \".cluster.local\""
        );
        assert_eq!(
            lines[1],
            "http://a.ns.svc.cluster.local/\tcurl\tproxy\tno entry matches"
        );
        assert_eq!(
            lines[6],
            "https://10.1.2.3/\tpython-urllib\tproxy\tno entry matches"
        );
        assert!(lines[7].starts_with("https://10.1.2.3/\tpython-requests\tdirect"));
        assert!(explain("", &Client::ALL, &["ftp://x/".into()]).is_err());
    }

    #[test]
    fn from_env_report() {
        let vars: BTreeMap<String, String> = [
            ("HTTPS_PROXY", "http://egressd:3128"),
            ("https_proxy", "http://other:3128"),
            ("NO_PROXY", ".svc"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = from_env(
            &vars,
            &["https://api.cast.ai/".into(), "https://x.ns.svc/".into()],
        )
        .unwrap();
        assert!(out.contains("go:\n  http:// URLs use  none: direct\n  https:// URLs use http://egressd:3128 (from HTTPS_PROXY)"), "{out}");
        assert!(out.contains("curl:\n  http:// URLs use  none: direct\n  https:// URLs use http://other:3128 (from https_proxy)"), "{out}");
        assert!(
            out.contains("  https://x.ns.svc/\tdirect (entry \".svc\")"),
            "{out}"
        );
        assert!(
            out.contains("  https://api.cast.ai/\tproxy http://other:3128 (from https_proxy)"),
            "{out}"
        );
        assert!(out.contains("warning: HTTPS_PROXY="), "{out}");
    }
}
