//! `parents:`, `via:` (top level and per allow rule) and `parents_bypass:`: the routes of allowed requests.

use super::*;
use crate::config::raw::{RawParent, RawVia};
use crate::policy::route::{Parent, ParentTls, Routes, Via};
use base64::Engine;

pub(super) fn compile_routes(
    raw: &RawConfig,
    errs: &mut Errors,
    files: &mut Vec<std::path::PathBuf>,
) -> Routes {
    let mut parents: Vec<Arc<Parent>> = Vec::new();
    for (i, p) in raw.parents.iter().enumerate() {
        let path = format!("parents[{i}]");
        if let Some(parent) = compile_parent(&path, p, errs, files) {
            if parents.iter().any(|q| q.name == parent.name) {
                errs.push(
                    format!("{path}.name"),
                    format!("{:?} is used twice", p.name),
                );
                continue;
            }
            parents.push(Arc::new(parent));
        }
    }
    let default = match &raw.via {
        Some(v) => compile_via("via", v, &parents, errs),
        None => {
            if parents.is_empty() {
                Via::Direct
            } else {
                Via::Parents(parents.clone())
            }
        }
    };
    let mut by_rule = HashMap::new();
    for (i, rule) in raw.allow.iter().enumerate() {
        if let Some(v) = &rule.via {
            by_rule.insert(
                rule.name.clone(),
                compile_via(&format!("allow[{i}].via"), v, &parents, errs),
            );
        }
    }
    for (i, rule) in raw.deny.iter().enumerate() {
        if rule.via.is_some() {
            errs.push(
                format!("deny[{i}].via"),
                "only allow rules have a route: what a deny rule matches is refused",
            );
        }
    }
    let mut bypass = crate::noproxy::NoProxyList::default();
    for (i, entry) in raw.parents_bypass.iter().enumerate() {
        let parsed = crate::noproxy::parse(entry);
        if let Some(bad) = parsed.ignored.first() {
            errs.push(
                format!("parents_bypass[{i}]"),
                format!("{:?}: {}", bad.entry, bad.why),
            );
        }
        bypass.entries.extend(parsed.entries);
    }
    Routes {
        parents,
        default,
        by_rule,
        bypass,
    }
}

fn compile_via(path: &str, v: &RawVia, parents: &[Arc<Parent>], errs: &mut Errors) -> Via {
    let names: Vec<&str> = match v {
        RawVia::One(n) => vec![n.as_str()],
        RawVia::List(l) => l.iter().map(String::as_str).collect(),
    };
    if names == ["direct"] {
        return Via::Direct;
    }
    if names.is_empty() {
        errs.push(path, "name a parent, a list of parents, or direct");
        return Via::Direct;
    }
    let mut list = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let at = match v {
            RawVia::One(_) => path.to_string(),
            RawVia::List(_) => format!("{path}[{i}]"),
        };
        if *n == "direct" {
            errs.push(
                at,
                "direct cannot be listed with parents (a route is direct or parents)",
            );
            continue;
        }
        match parents.iter().find(|p| &*p.name == *n) {
            Some(p) if list.iter().any(|q: &Arc<Parent>| q.name == p.name) => {
                errs.push(at, format!("parent {n:?} is listed twice"))
            }
            Some(p) => list.push(p.clone()),
            None => errs.push(
                at,
                format!(
                    "no parent is named {n:?} (parents: [{}])",
                    parents
                        .iter()
                        .map(|p| &*p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    Via::Parents(list)
}

fn compile_parent(
    path: &str,
    p: &RawParent,
    errs: &mut Errors,
    files: &mut Vec<std::path::PathBuf>,
) -> Option<Parent> {
    let before = errs.0.len();
    let name = p.name.trim();
    if name.is_empty() || name == "direct" || name.contains(',') {
        errs.push(
            format!("{path}.name"),
            format!(
                "{:?}: a parent needs a name other than direct, without commas",
                p.name
            ),
        );
    }
    let url = p.url.trim();
    let lower = url.to_ascii_lowercase();
    let (authority, tls) = if lower.starts_with("https://") {
        (Some(url["https://".len()..].trim_end_matches('/')), true)
    } else if lower.starts_with("http://") {
        (Some(url["http://".len()..].trim_end_matches('/')), false)
    } else {
        errs.push(
            format!("{path}.url"),
            format!("{url:?} is not a URL such as http://proxy.corp.example:3128 or https://proxy.corp.example:3129"),
        );
        (None, false)
    };
    let tls = match (tls, &p.ca) {
        (false, Some(_)) => {
            errs.push(
                format!("{path}.ca"),
                "ca verifies a TLS parent: give the parent an https:// url, or drop ca",
            );
            None
        }
        (false, None) => None,
        (true, ca) => {
            if let Some(ca) = ca {
                files.push(ca.into());
            }
            crate::tls_files::parent_client_config(ca.as_deref().map(std::path::Path::new))
                .map_err(|e| errs.push(format!("{path}.ca"), e))
                .ok()
                .map(|config| ParentTls {
                    config,
                    ca: ca.clone(),
                })
        }
    };
    let target = authority.and_then(|a| {
        if a.contains('/') || a.contains('@') {
            errs.push(
                format!("{path}.url"),
                format!("{url:?}: give only the scheme, host and port (credentials go in credentials_file or credentials_env)"),
            );
            return None;
        }
        parse_authority_or(a)
            .map_err(|e| errs.push(format!("{path}.url"), format!("{url:?}: {e}")))
            .ok()
    });
    let credentials = match (&p.credentials_file, &p.credentials_env) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{path}.credentials_file"),
                "give credentials_file or credentials_env, not both",
            );
            None
        }
        (Some(file), None) => {
            files.push(file.into());
            match std::fs::read_to_string(file) {
                Ok(text) => user_password(text.trim_end_matches(['\r', '\n']))
                    .map_err(|m| {
                        errs.push(format!("{path}.credentials_file"), format!("{file}: {m}"))
                    })
                    .ok(),
                Err(e) => {
                    errs.push(
                        format!("{path}.credentials_file"),
                        format!("cannot read {file}: {e}"),
                    );
                    None
                }
            }
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(text) => user_password(&text)
                .map_err(|m| {
                    errs.push(
                        format!("{path}.credentials_env"),
                        format!("environment variable {var}: {m}"),
                    )
                })
                .ok(),
            Err(_) => {
                errs.push(
                    format!("{path}.credentials_env"),
                    format!("environment variable {var} is not set (or not UTF-8)"),
                );
                None
            }
        },
        (None, None) => None,
    };
    let connect_timeout = {
        let text = p.connect_timeout.as_deref().unwrap_or("5s");
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                errs.push(
                    format!("{path}.connect_timeout"),
                    format!("{text:?} is not a positive duration such as 5s"),
                );
                Duration::from_secs(5)
            }
        }
    };
    let resolve_at_parent = match p.resolve.as_deref().unwrap_or("local") {
        "local" => false,
        "parent" => true,
        other => {
            errs.push(
                format!("{path}.resolve"),
                format!("{other:?} is not one of: local, parent"),
            );
            false
        }
    };
    if errs.0.len() != before {
        return None;
    }
    let (host, port) = target?;
    Some(Parent {
        name: name.into(),
        host,
        port,
        authorization: credentials,
        connect_timeout,
        resolve_at_parent,
        tls,
    })
}

fn parse_authority_or(a: &str) -> Result<(String, u16), String> {
    let t = crate::target::parse_authority(a, None).map_err(|e| e.to_string())?;
    Ok((t.host.to_string(), t.port))
}

/// `user:password` → the `Proxy-Authorization` value.
fn user_password(text: &str) -> Result<String, String> {
    match text.split_once(':') {
        Some((user, _)) if !user.is_empty() && !text.contains(['\r', '\n']) => Ok(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )),
        _ => Err("must hold one line user:password".into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::route::Via;

    fn errors(yaml: &str) -> String {
        crate::config::from_yaml_str(yaml).unwrap_err().to_string()
    }

    #[test]
    fn routes_compile_with_defaults_and_rule_overrides() {
        let s = crate::config::from_yaml_str(
            "parents:\n  - {name: a, url: \"http://127.0.0.1:3128\"}\n  - {name: b, url: \"http://127.0.0.1:3129/\", resolve: parent}\nparents_bypass: [.corp.example]\nallow:\n  - {name: x, hosts: [x.example]}\n  - {name: y, hosts: [y.example], via: direct}\n  - {name: z, hosts: [z.example], via: [b, a]}\n",
        )
        .unwrap();
        let r = &s.runtime.routes;
        assert_eq!(r.default.name(), "a,b");
        assert_eq!(r.by_rule["y"], Via::Direct);
        assert_eq!(r.by_rule["z"].name(), "b,a");
        assert!(r.parents[1].resolve_at_parent);
        assert!(r.parents.iter().all(|p| p.tls.is_none()));
        let tls = crate::config::from_yaml_str(
            "parents:\n  - {name: a, url: \"https://proxy.corp.example:3129\"}\n",
        )
        .unwrap();
        let parent = &tls.runtime.routes.parents[0];
        assert!(parent.tls.is_some(), "https:// is a TLS parent");
        assert_eq!(
            (parent.host.as_str(), parent.port),
            ("proxy.corp.example", 3129)
        );
        assert_eq!(r.parents[1].port, 3129);
        let none = crate::config::from_yaml_str("allow: []\n").unwrap();
        assert!(!none.runtime.routes.any());
    }

    #[test]
    fn mistakes_name_their_key() {
        let e =
            errors("parents:\n  - {name: a, url: \"http://p.example:3128\", ca: /etc/ca.pem}\n");
        assert!(
            e.contains("parents[0].ca") && e.contains("https:// url"),
            "{e}"
        );
        let e = errors(
            "parents:\n  - {name: a, url: \"https://p.example:3129\", ca: /nonexistent/ca.pem}\n",
        );
        assert!(
            e.contains("parents[0].ca") && e.contains("cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let e = errors("parents:\n  - {name: a, url: \"p.example:3128\"}\n");
        assert!(e.contains("parents[0].url"), "{e}");
        let e = errors("parents:\n  - {name: a, url: \"http://127.0.0.1:3128\"}\nvia: b\n");
        assert!(e.contains("via: no parent is named \"b\""), "{e}");
        let e = errors("parents:\n  - {name: a, url: \"http://127.0.0.1:3128\"}\nallow:\n  - {name: x, hosts: [x.example], via: [a, c]}\n");
        assert!(
            e.contains("allow[0].via[1]: no parent is named \"c\""),
            "{e}"
        );
        let e = errors("parents:\n  - {name: a, url: \"http://127.0.0.1:3128\", credentials_file: /nonexistent/creds}\n");
        assert!(
            e.contains("parents[0].credentials_file") && e.contains("/nonexistent/creds"),
            "{e}"
        );
        let e = errors("parents:\n  - {name: a, url: \"http://127.0.0.1:3128\", credentials_env: EGRESSD_TEST_NO_SUCH_VARIABLE}\n");
        assert!(
            e.contains("parents[0].credentials_env") && e.contains("EGRESSD_TEST_NO_SUCH_VARIABLE"),
            "{e}"
        );
        let e = errors("allow:\n  - {name: x, hosts: [x.example], via: a}\n");
        assert!(e.contains("allow[0].via"), "{e}");
        let e = errors(
            "parents:\n  - {name: a, url: \"http://127.0.0.1:3128\", connect_timeout: soon}\n",
        );
        assert!(e.contains("parents[0].connect_timeout"), "{e}");
    }

    #[test]
    fn credentials_become_a_basic_header() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds");
        std::fs::write(&file, "bob:s3cret\n").unwrap();
        let s = crate::config::from_yaml_str(&format!(
            "parents:\n  - {{name: a, url: \"http://127.0.0.1:3128\", credentials_file: {}}}\n",
            file.display()
        ))
        .unwrap();
        let p = &s.runtime.routes.parents[0];
        assert_eq!(p.authorization.as_deref(), Some("Basic Ym9iOnMzY3JldA=="));
        assert!(s.runtime.files.contains(&file));
        std::fs::write(&file, "no colon\n").unwrap();
        let e = errors(&format!(
            "parents:\n  - {{name: a, url: \"http://127.0.0.1:3128\", credentials_file: {}}}\n",
            file.display()
        ));
        assert!(e.contains("user:password"), "{e}");
    }
}
