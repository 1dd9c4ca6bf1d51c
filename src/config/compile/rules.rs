//! Allow and deny rules: hosts or NO_PROXY lists, ports, paths, idle timeouts, modes, breadth.

use super::*;

/// A deny rule scoped only to client groups that identify their members by certificate or credentials does
/// not apply to a client that presents neither: it can leave the certificate out (`client_auth: optional`),
/// use the plain listener, or send no Proxy-Authorization, and so escape the rule. Only a group's `cidrs`
/// cannot be opted out of.
pub(super) fn opt_out_deny_warnings(raw: &RawConfig) -> Vec<String> {
    raw.deny
        .iter()
        .filter(|r| !r.clients.is_empty())
        .filter(|r| {
            r.clients.iter().all(|name| {
                raw.clients
                    .iter()
                    .find(|g| &g.name == name)
                    .is_some_and(|g| g.cidrs.is_empty())
            })
        })
        .map(|r| {
            format!(
                "deny rule {}: scoped to client groups [{}] that are identified only by certificate or \
                 credentials; a client that presents neither (no client certificate with client_auth: optional, \
                 the plain listener, no Proxy-Authorization) is in no group and the rule does not apply to it. \
                 Give the groups cidrs, or drop clients: from the rule",
                r.name,
                r.clients.join(", ")
            )
        })
        .collect()
}

/// `idle_timeout`: `"none"` (never cut for idleness) or a positive duration.
pub(super) fn parse_idle(text: &str) -> Result<IdleOverride, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(IdleOverride::Never);
    }
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(IdleOverride::After(d)),
        Ok(_) => Err(format!("{text:?} must be greater than zero (or \"none\")")),
        Err(e) => Err(format!(
            "{text:?} is not a duration such as 15m or 2h, or \"none\" ({e})"
        )),
    }
}

pub(super) fn compile_rule(
    builder: &mut PolicyBuilder,
    errs: &mut Errors,
    seen: &mut HashSet<String>,
    path: &str,
    kind: RuleKind,
    rule: &RawRule,
) {
    if rule.name.trim().is_empty() {
        errs.push(format!("{path}.name"), "a rule needs a non-empty name");
    } else if !seen.insert(rule.name.clone()) {
        errs.push(
            format!("{path}.name"),
            format!("{:?} is used by another rule", rule.name),
        );
    }
    // Allow rules default to 443 (what the agents use); deny rules default to every port so a deny of a
    // host cannot be sidestepped on another port.
    let ports = if rule.ports.is_empty() {
        match kind {
            RuleKind::Allow => PortSet::from_ranges(vec![443..=443]),
            RuleKind::Deny => PortSet::any(),
        }
    } else {
        PortSet::from_ranges(
            rule.ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    parse_port(p)
                        .map_err(|m| errs.push(format!("{path}.ports[{i}]"), m))
                        .ok()
                })
                .collect(),
        )
    };
    let id = builder.rule(&rule.name, kind, ports.clone());
    if rule.broad_hosts.is_some() && kind == RuleKind::Deny {
        errs.push(
            format!("{path}.broad_hosts"),
            "`broad_hosts` applies to allow rules only (a deny rule may be as broad as it likes)",
        );
    }
    if let Some(tls) = rule.tls {
        if kind == RuleKind::Deny {
            errs.push(format!("{path}.tls"), "`tls` applies to allow rules only");
        }
        builder.set_tls(id, tls);
    }
    if !rule.paths.is_empty() {
        if kind == RuleKind::Deny {
            errs.push(
                format!("{path}.paths"),
                "paths apply only to allow rules (a deny rule covers the whole host)",
            );
        }
        for (j, p) in rule.paths.iter().enumerate() {
            if !p.starts_with('/') || p.contains(['?', '#']) {
                errs.push(
                    format!("{path}.paths[{j}]"),
                    format!(
                        "{p:?} must be a path prefix starting with / (no query), e.g. \"/bucket/\""
                    ),
                );
            }
        }
        builder.rule_paths(id, &rule.paths);
    }
    let mut groups = Vec::new();
    for (j, c) in rule.clients.iter().enumerate() {
        match builder.client_group(c) {
            Some(g) => groups.push(g),
            None => errs.push(
                format!("{path}.clients[{j}]"),
                format!("{c:?} is not a client group; define it under the top-level `clients:`"),
            ),
        }
    }
    if !groups.is_empty() {
        builder.rule_clients(id, groups);
    }
    match rule.mode.as_deref() {
        None | Some("enforce") => {}
        Some("report") => builder.rule_report(id),
        Some(other) => errs.push(
            format!("{path}.mode"),
            format!("{other:?} is not one of: enforce, report"),
        ),
    }
    if let Some(text) = &rule.idle_timeout {
        match parse_idle(text) {
            Ok(idle) => builder.rule_idle(id, idle),
            Err(m) => errs.push(format!("{path}.idle_timeout"), m),
        }
    }
    match (&rule.no_proxy, rule.hosts.is_empty()) {
        (Some(_), false) => errs.push(
            path,
            "give either `hosts` or `no_proxy`, not both (split them into two rules)",
        ),
        (None, true) => errs.push(
            format!("{path}.hosts"),
            "a rule needs at least one host pattern",
        ),
        (Some(list), true) => {
            let parsed = noproxy::parse(list);
            for ig in &parsed.ignored {
                errs.push(
                    format!("{path}.no_proxy"),
                    format!("entry {:?} can never match: {}", ig.entry, ig.why),
                );
            }
            for e in &parsed.entries {
                if matches!(e, noproxy::Entry::Any) {
                    errs.push(
                        format!("{path}.no_proxy"),
                        "\"*\" would match every destination; list the hosts instead",
                    );
                }
                let pinned = match e {
                    noproxy::Entry::Ip { port, .. } | noproxy::Entry::Domain { port, .. } => *port,
                    _ => None,
                };
                if let Some(p) = pinned.filter(|p| !ports.contains(*p)) {
                    errs.push(
                        format!("{path}.no_proxy"),
                        format!(
                            "an entry pinned to port {p} can never match: add {p} to the rule's `ports` \
                             (allow rules default to 443)"
                        ),
                    );
                }
                if let noproxy::Entry::Domain {
                    name, include_apex, ..
                } = e
                {
                    let p = crate::policy::Pattern::Suffix {
                        name: name.clone(),
                        include_apex: *include_apex,
                    };
                    if let Some(why) = broad(kind, rule, &p, path) {
                        errs.push(format!("{path}.no_proxy"), why);
                    }
                }
                builder.no_proxy_entry(id, e);
            }
            if parsed.entries.is_empty() && parsed.ignored.is_empty() {
                errs.push(format!("{path}.no_proxy"), "the list is empty");
            }
        }
        (None, false) => {
            for (j, h) in rule.hosts.iter().enumerate() {
                let at = format!("{path}.hosts[{j}]");
                match parse_pattern(h) {
                    Ok(p) => {
                        if let Some(why) = broad(kind, rule, &p, path) {
                            errs.push(at.clone(), why);
                        }
                        if let Err(m) = builder.pattern(id, &p) {
                            errs.push(at, m);
                        }
                    }
                    Err(m) => errs.push(at, m),
                }
            }
        }
    }
}

/// Why an allow rule's pattern is refused for reaching beyond one registrable domain, unless the rule sets
/// `broad_hosts: true`. Deny rules may be as broad as they like.
pub(super) fn broad(
    kind: RuleKind,
    rule: &RawRule,
    p: &crate::policy::Pattern,
    path: &str,
) -> Option<String> {
    if kind == RuleKind::Deny || rule.broad_hosts == Some(true) {
        return None;
    }
    let why = crate::policy::pattern::breadth(p)?;
    Some(if path.starts_with("vendors") {
        format!(
            "{why}; a profile parameter cannot opt in: if this is meant, allow it in a local rule with \
             `broad_hosts: true`"
        )
    } else {
        format!("{why}; if the rule means it, set `broad_hosts: true` on the rule")
    })
}

/// A rule's ports as compile_rule reads them (errors are reported there).
pub(super) fn rule_ports(rule: &RawRule) -> PortSet {
    if rule.ports.is_empty() {
        return PortSet::from_ranges(vec![443..=443]);
    }
    PortSet::from_ranges(
        rule.ports
            .iter()
            .filter_map(|p| parse_port(p).ok())
            .collect(),
    )
}

pub(super) fn parse_port(p: &RawPort) -> Result<std::ops::RangeInclusive<u16>, String> {
    let one = |n: i64| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| format!("{n} is not a port (1-65535)"))
    };
    match p {
        RawPort::Number(n) => one(*n).map(|n| n..=n),
        RawPort::Text(t) => {
            let num = |s: &str| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{t:?} is not a port or a range such as \"8000-8100\""))
                    .and_then(one)
            };
            match t.split_once('-') {
                None => num(t).map(|n| n..=n),
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("{t:?}: the range starts after it ends"));
                    }
                    Ok(a..=b)
                }
            }
        }
    }
}
