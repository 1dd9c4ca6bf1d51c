//! Client groups and their credentials.

use super::*;
use crate::policy::workload::{parse_service_account, WorkloadSelector};

/// The credentials of one client group, from the config and its files (added to `files` for reloads).
pub(super) fn compile_credentials(
    g: &RawClientGroup,
    at: &str,
    errs: &mut Errors,
    files: &mut Vec<std::path::PathBuf>,
) -> GroupCredentials {
    let mut creds = GroupCredentials::default();
    let mut user = |path: String, name: &str, phc: &str| match credentials::check_phc(phc) {
        Ok(()) if !name.is_empty() && !name.contains(':') => creds.users.push(User {
            name: name.to_string(),
            phc: phc.to_string(),
        }),
        Ok(()) => errs.push(
            path,
            format!("{name:?} is not a user name (non-empty, no ':')"),
        ),
        // The hash is not a secret, but it is not repeated either: the error says what is wrong with it.
        Err(m) => errs.push(path, format!("the argon2 hash of user {name:?}: {m}")),
    };
    for (j, u) in g.users.iter().enumerate() {
        user(format!("{at}.users[{j}]"), &u.user, &u.argon2);
    }
    if let Some(path) = &g.users_file {
        files.push(path.into());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (name, phc) = line.split_once(':').unwrap_or((line, ""));
                    user(
                        format!("{at}.users_file ({path} line {})", n + 1),
                        name,
                        phc,
                    );
                }
            }
            Err(e) => errs.push(
                format!("{at}.users_file"),
                format!("cannot read {path}: {e}"),
            ),
        }
    }
    for (j, t) in g.token_sha256.iter().enumerate() {
        match credentials::parse_sha256_hex(t) {
            Some(d) => creds.token_sha256.push(d),
            None => errs.push(
                format!("{at}.token_sha256[{j}]"),
                "not a SHA-256 digest in hex (64 digits, e.g. from `printf %s TOKEN | sha256sum`)",
            ),
        }
    }
    if let Some(path) = &g.tokens_file {
        files.push(path.into());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines().map(str::trim) {
                    if !line.is_empty() && !line.starts_with('#') {
                        creds
                            .token_sha256
                            .push(Sha256::digest(line.as_bytes()).into());
                    }
                }
            }
            Err(e) => errs.push(
                format!("{at}.tokens_file"),
                format!("cannot read {path}: {e}"),
            ),
        }
    }
    creds
}

/// The top-level `clients:` groups: unique names, each with source CIDRs or credentials.
pub(super) fn compile_clients(
    raw: &RawConfig,
    errs: &mut Errors,
    files: &mut Vec<std::path::PathBuf>,
) -> ClientGroups {
    let mut groups = ClientGroups::default();
    for (i, g) in raw.clients.iter().enumerate() {
        let at = format!("clients[{i}]");
        let name = g.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errs.push(
                format!("{at}.name"),
                format!(
                    "{:?} is not a group name (letters, digits, '-', '_', '.')",
                    g.name
                ),
            );
            continue;
        }
        if groups.find(name).is_some() {
            errs.push(format!("{at}.name"), format!("{name:?} is defined twice"));
            continue;
        }
        let creds = compile_credentials(g, &at, errs, files);
        if g.cidrs.is_empty()
            && g.certs.is_empty()
            && g.users.is_empty()
            && g.users_file.is_none()
            && g.token_sha256.is_empty()
            && g.tokens_file.is_none()
            && g.namespaces.is_empty()
            && g.service_accounts.is_empty()
            && g.pod_labels.is_empty()
        {
            errs.push(
                format!("{at}.cidrs"),
                "give the source addresses of the group's clients, e.g. [\"10.42.0.0/16\"], its \
                 credentials (certs, users, users_file, token_sha256, tokens_file) or its workloads \
                 (namespaces, service_accounts, pod_labels)",
            );
        }
        let workloads = compile_workloads(g, &at, errs);
        let cidrs = g
            .cidrs
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        errs.push(
                            format!("{at}.cidrs[{j}]"),
                            format!("{c:?} is not a CIDR or IP address"),
                        )
                    })
                    .ok()
            })
            .collect();
        for (j, c) in g.certs.iter().enumerate() {
            if c.is_empty()
                || c == "*"
                || (c.contains('*') && !c.ends_with('*'))
                || c[..c.len() - 1].contains('*')
            {
                errs.push(
                    format!("{at}.certs[{j}]"),
                    format!("{c:?}: give a URI SAN, dns:NAME or cn:NAME; only a trailing * is a wildcard"),
                );
            }
        }
        if !g.certs.is_empty() && raw.tls.client_ca.is_none() {
            errs.push(
                format!("{at}.certs"),
                "certificate names need tls.client_ca (and listen_tls)",
            );
        }
        let creds = GroupCredentials {
            certs: g.certs.clone(),
            ..creds
        };
        let id = groups.add_with_credentials(name, cidrs, creds);
        groups.set_workloads(id, workloads);
        match g.mode.as_deref() {
            None | Some("enforce") => {}
            Some("report") => groups.set_report(id),
            Some(other) => errs.push(
                format!("{at}.mode"),
                format!("{other:?} is not one of: enforce, report"),
            ),
        }
    }
    if raw.require_identity == Some(true) && groups.is_empty() {
        errs.push(
            "require_identity",
            "every client would be refused: define client groups under `clients:`",
        );
    }
    groups
}

/// A group's workload selector (`namespaces`, `service_accounts`, `pod_labels`).
fn compile_workloads(g: &RawClientGroup, at: &str, errs: &mut Errors) -> WorkloadSelector {
    // Namespace names and label values follow Kubernetes' own syntax, so a typo is caught here rather than
    // silently matching nothing.
    let dns_label = is_dns_label;
    let label_part = |s: &str, empty_ok: bool| {
        (empty_ok && s.is_empty())
            || (!s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
    };
    let mut selector = WorkloadSelector::default();
    for (j, n) in g.namespaces.iter().enumerate() {
        if dns_label(n) {
            selector.namespaces.push(n.clone());
        } else {
            errs.push(
                format!("{at}.namespaces[{j}]"),
                format!("{n:?} is not a namespace name (lowercase letters, digits and '-')"),
            );
        }
    }
    for (j, sa) in g.service_accounts.iter().enumerate() {
        match parse_service_account(sa) {
            Some(pair) => selector.service_accounts.push(pair),
            None => errs.push(
                format!("{at}.service_accounts[{j}]"),
                format!("{sa:?} is not NAMESPACE/NAME (e.g. \"castai-agent/castai-agent\")"),
            ),
        }
    }
    for (k, v) in &g.pod_labels {
        let (prefix, name) = k.rsplit_once('/').unwrap_or(("", k));
        let prefix_ok =
            prefix.is_empty() || (prefix.len() <= 253 && prefix.split('.').all(dns_label));
        if !(prefix_ok && label_part(name, false) && label_part(v, true)) {
            errs.push(
                format!("{at}.pod_labels.{k}"),
                format!("{k:?}: {v:?} is not a Kubernetes label (key [prefix/]name, value up to 63 characters)"),
            );
            continue;
        }
        selector.pod_labels.push((k.clone(), v.clone()));
    }
    selector
}

/// A DNS label as Kubernetes names namespaces: lowercase letters, digits and '-', at most 63, not starting or
/// ending with '-'.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
