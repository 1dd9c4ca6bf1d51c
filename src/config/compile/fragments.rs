//! `include: [DIR]`: team-owned fragments. Every `*.yaml` file of a directory is one team's: allow rules,
//! vendor profiles and client groups of its own, scoped to the team by its file name (the client group of that
//! name in the main file, or else the namespace of that name, through workload identity) and held to the main
//! file's guardrails (`fragments:`). A fragment that breaks them, or does not compile with the main file, is
//! skipped with the reason; the others load.

use super::*;
use crate::config::raw::{RawFragment, RawGuardrails};
use crate::policy::Pattern;
use std::path::{Path, PathBuf};

/// What became of one fragment file (or an include directory that could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentStatus {
    pub file: PathBuf,
    /// Why it was skipped; `None`: loaded.
    pub error: Option<String>,
}

/// Whom a fragment's rules apply to.
enum Scope {
    /// The main file's client group named like the fragment.
    Group(String),
    /// Pods in the namespace named like the fragment (a group of that name is added).
    Namespace(String),
}

/// The main configuration with every valid fragment merged in, what became of each fragment, and the files and
/// directories to watch.
pub(super) fn expand(raw: &RawConfig) -> (RawConfig, Vec<FragmentStatus>, Vec<PathBuf>) {
    let mut merged = raw.clone();
    merged.include.clear();
    let mut statuses = Vec::new();
    let mut watched = Vec::new();
    // A main file that does not compile alone is reported as such; fragments are not judged against it.
    let base_ok = compile(&merged).is_ok();
    for dir in &raw.include {
        watched.push(PathBuf::from(dir));
        let files = match fragment_files(Path::new(dir)) {
            Ok(f) => f,
            Err(e) => {
                statuses.push(FragmentStatus {
                    file: dir.into(),
                    error: Some(format!("cannot read the include directory: {e}")),
                });
                continue;
            }
        };
        for file in files {
            watched.push(file.clone());
            let error = match fragment(&file, &merged, &raw.fragments) {
                Err(e) => Some(e),
                Ok(trial) if !base_ok => {
                    drop(trial);
                    Some("not checked: the main configuration has errors".into())
                }
                Ok(trial) => match compile(&trial) {
                    Ok(_) => {
                        merged = trial;
                        None
                    }
                    Err(e) => Some(describe(&e, &merged)),
                },
            };
            statuses.push(FragmentStatus { file, error });
        }
    }
    (merged, statuses, watched)
}

/// The `*.yaml` files of a directory, sorted (hidden ones, such as a ConfigMap volume's `..data`, left out).
fn fragment_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// `merged` with the fragment in `file` added, or why it cannot be.
fn fragment(file: &Path, merged: &RawConfig, guard: &RawGuardrails) -> Result<RawConfig, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let f: RawFragment = ::config::Config::builder()
        .add_source(::config::File::from_str(&text, ::config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| format!("{e} (a fragment has only allow, vendors and clients)"))?;
    let stem = (file.file_stem().and_then(|s| s.to_str())).unwrap_or_default();
    let scope = if merged.clients.iter().any(|g| g.name == stem) {
        Scope::Group(stem.to_string())
    } else if is_dns_label(stem) {
        Scope::Namespace(stem.to_string())
    } else {
        return Err(format!(
            "the file name {stem:?} names neither a client group of the main file nor a namespace"
        ));
    };
    let mut out = merged.clone();
    let scope_group = match &scope {
        Scope::Group(g) => g.clone(),
        Scope::Namespace(ns) => {
            out.clients.push(RawClientGroup {
                name: ns.clone(),
                namespaces: vec![ns.clone()],
                ..Default::default()
            });
            ns.clone()
        }
    };
    let own: Vec<String> = f.clients.iter().map(|g| g.name.clone()).collect();
    for g in &f.clients {
        let Scope::Namespace(ns) = &scope else {
            return Err(format!(
                "clients.{}: a fragment scoped to a client group cannot define groups (only one scoped to a \
                 namespace can, by pod labels and service accounts in it)",
                g.name
            ));
        };
        if !(g.cidrs.is_empty()
            && g.users.is_empty()
            && g.users_file.is_none()
            && g.certs.is_empty()
            && g.token_sha256.is_empty()
            && g.tokens_file.is_none()
            && g.namespaces.is_empty())
        {
            return Err(format!(
                "clients.{}: a fragment's groups select pods of its namespace by pod_labels and \
                 service_accounts only",
                g.name
            ));
        }
        if let Some(sa) = (g.service_accounts.iter()).find(|sa| !sa.starts_with(&format!("{ns}/")))
        {
            return Err(format!(
                "clients.{}: service account {sa:?} is not in namespace {ns}",
                g.name
            ));
        }
        out.clients.push(RawClientGroup {
            name: format!("{stem}.{}", g.name),
            namespaces: vec![ns.clone()],
            ..g.clone()
        });
    }
    let scoped = |clients: &[String], at: &str| -> Result<Vec<String>, String> {
        if clients.is_empty() {
            return Ok(vec![scope_group.clone()]);
        }
        (clients.iter())
            .map(|c| match own.contains(c) {
                true => Ok(format!("{stem}.{c}")),
                false => Err(format!(
                    "{at}.clients: {c:?} is not one of the fragment's own client groups"
                )),
            })
            .collect()
    };
    let min_labels = guard.min_wildcard_labels.unwrap_or(2);
    let forbidden: Vec<(String, Pattern)> = (guard.forbidden_hosts.iter())
        .filter_map(|h| parse_pattern(h).ok().map(|p| (h.clone(), p)))
        .collect();
    for (i, r) in f.allow.iter().enumerate() {
        let at = format!("allow[{i}] ({})", r.name);
        if r.no_proxy.is_some()
            || r.broad_hosts.is_some()
            || !r.private_cidrs.is_empty()
            || r.via.is_some()
        {
            return Err(format!(
                "{at}: no_proxy, broad_hosts, private_cidrs and via are for the main file"
            ));
        }
        for h in &r.hosts {
            check_host(h, min_labels, &forbidden).map_err(|e| format!("{at}.hosts: {e}"))?;
        }
        let mut rule = r.clone();
        rule.name = format!("{stem}.{}", r.name);
        rule.clients = scoped(&r.clients, &at)?;
        out.allow.push(rule);
    }
    for (i, v) in f.vendors.iter().enumerate() {
        let mut v = match v {
            serde_json::Value::String(name) => serde_json::json!({ "name": name }),
            other => other.clone(),
        };
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if guard.forbidden_profiles.contains(&name) {
            return Err(format!(
                "vendors[{i}]: profile {name:?} is one fragments may not use (fragments.forbidden_profiles)"
            ));
        }
        let asked: Vec<String> = (v["clients"].as_array().into_iter().flatten())
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect();
        v["clients"] = serde_json::json!(scoped(&asked, &format!("vendors[{i}]"))?);
        out.vendors.push(v);
    }
    Ok(out)
}

/// A fragment's host pattern: a name (not an address or range), a wildcard that fixes at least `min_labels`
/// labels, and nothing that opens or overlaps a forbidden pattern.
fn check_host(h: &str, min_labels: usize, forbidden: &[(String, Pattern)]) -> Result<(), String> {
    let p = parse_pattern(h)?;
    let (base, wild) = reach(&p)
        .ok_or_else(|| format!("{h:?}: fragments open host names, not addresses or ranges"))?;
    let labels = base.split('.').filter(|l| !l.is_empty()).count();
    if wild && labels < min_labels {
        return Err(format!(
            "{h:?} is broader than fragments may open: a wildcard must fix at least {min_labels} labels \
             (fragments.min_wildcard_labels)"
        ));
    }
    for (text, f) in forbidden {
        if let Some((fbase, fwild)) = reach(f) {
            let under = |a: &str, b: &str| b == a || b.ends_with(&format!(".{a}"));
            if base == fbase || (fwild && under(&fbase, &base)) || (wild && under(&base, &fbase)) {
                return Err(format!(
                    "{h:?} opens or overlaps {text:?}, which fragments may not open (fragments.forbidden_hosts)"
                ));
            }
        }
    }
    Ok(())
}

/// The name a pattern is anchored at and whether it also reaches names under it (a glob counts as a wildcard
/// over its fixed trailing labels). `None` for addresses and ranges.
fn reach(p: &Pattern) -> Option<(String, bool)> {
    match p {
        Pattern::Exact(n) => Some((n.clone(), false)),
        Pattern::Suffix { name, .. } => Some((name.clone(), true)),
        Pattern::Glob(g) => {
            let fixed: Vec<&str> = (g.rsplit('.'))
                .take_while(|l| !l.contains(['*', '?', '[', ']', '{', '}']))
                .collect();
            Some((fixed.into_iter().rev().collect::<Vec<_>>().join("."), true))
        }
        Pattern::Net(_) => None,
    }
}

/// A fragment's compile errors, the paths of its own items made relative to the fragment.
fn describe(e: &ConfigErrors, before: &RawConfig) -> String {
    let (allow, vendors) = (before.allow.len(), before.vendors.len());
    let shown: Vec<String> = (e.0.iter().take(3))
        .map(|err| {
            let path = shift(&err.path, "allow", allow)
                .or_else(|| shift(&err.path, "vendors", vendors))
                .unwrap_or_else(|| err.path.clone());
            format!("{path}: {}", err.message)
        })
        .collect();
    let more = e.0.len().saturating_sub(3);
    let mut text = shown.join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text
}

/// `allow[12].hosts` with 10 main-file rules → `allow[2].hosts`.
fn shift(path: &str, list: &str, offset: usize) -> Option<String> {
    let rest = path.strip_prefix(list)?.strip_prefix('[')?;
    let (n, tail) = rest.split_once(']')?;
    let n: usize = n.parse().ok()?;
    (n >= offset).then(|| format!("{list}[{}]{tail}", n - offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(list: &[&str]) -> Vec<(String, Pattern)> {
        list.iter()
            .map(|h| (h.to_string(), parse_pattern(h).unwrap()))
            .collect()
    }

    #[test]
    fn guardrails_on_hosts() {
        let f = forbidden(&["*.corp.example", "metadata.google.internal"]);
        assert!(check_host("api.stripe.com", 2, &f).is_ok());
        assert!(check_host("*.stripe.com", 2, &f).is_ok());
        assert!(check_host("*.com", 2, &f).unwrap_err().contains("broader"));
        assert!(check_host("*.stripe.com", 3, &f).is_err());
        assert!(check_host("10.0.0.0/8", 2, &f)
            .unwrap_err()
            .contains("not addresses"));
        // Inside a forbidden wildcard, equal to a forbidden name, or a wildcard over one.
        for h in [
            "db.corp.example",
            "*.corp.example",
            "metadata.google.internal",
            "*.google.internal",
        ] {
            assert!(
                check_host(h, 2, &f).unwrap_err().contains("forbidden"),
                "{h}"
            );
        }
        assert!(check_host("api-*.corp.example", 2, &f).is_err());
        assert!(check_host("corp.example.org", 2, &f).is_ok());
    }

    #[test]
    fn error_paths_are_the_fragments_own() {
        assert_eq!(
            shift("allow[12].hosts[0]", "allow", 10).as_deref(),
            Some("allow[2].hosts[0]")
        );
        assert_eq!(shift("allow[3].hosts", "allow", 10), None);
        assert_eq!(shift("vendors[1]", "allow", 0), None);
    }
}
