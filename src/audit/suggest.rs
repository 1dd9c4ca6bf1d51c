//! `--suggest`: a YAML `allow:` snippet for the destinations that were refused for want of an allow rule, for
//! an operator to review and paste; refused hosts an embedded vendor profile lists are proposed as that profile
//! in a `vendors:` list instead (see [`super::suggest_vendors`]); what each suggestion covers is a [`super::seen::Seen`]. Only denials an allow rule changes are suggested (`denied_no_rule`,
//! `denied_port`); a deny rule, the destination address checks or malformed requests are not overridden by
//! allowing more, and are listed as comments instead. Neither are special-purpose addresses (refused whatever
//! the rules say) nor names that were refused for the addresses they resolve to: allowing them changes nothing
//! but hides the probe.

use super::render::{printable, reason_text, Report};
use super::seen::Seen;
use super::suggest_vendors::{split, Proposal};
use crate::policy::special_ip::special_purpose;
use crate::target::{parse_authority, Host};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;

/// Reasons an added allow rule turns into `allowed`.
pub const FIXABLE: [&str; 2] = ["denied_no_rule", "denied_port"];

/// Names listed in a comment before "and N more".
const LISTED: usize = 5;

/// The snippet for the report's groups (all kept groups, not only the shown ones; those refused for reasons an
/// allow rule does not change become comments). With
/// `group_wildcards`, two or more sibling names (`a.example.com`, `b.example.com`) become one `*.example.com`
/// rule, unless their parent is a public suffix (`*.co.uk`, `*.s3.amazonaws.com` would allow anyone's hosts).
/// Profiles in `in_use` (the configuration's `vendors:`) are not proposed.
pub fn suggest(report: &Report<'_>, group_wildcards: bool, in_use: &[Arc<str>]) -> String {
    let mut by_authority: BTreeMap<(String, u16), Seen> = BTreeMap::new();
    let mut not_fixable: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut invalid = BTreeSet::new();
    let mut special = BTreeSet::new();
    let mut resolves_special = BTreeSet::new();
    // Names refused for their addresses anywhere in the log: an allow rule for another port would be too.
    let private_names: BTreeSet<&str> = report
        .groups
        .iter()
        .filter(|(k, _)| &*k.reason == "denied_private_address")
        .filter_map(|(k, _)| k.host.as_deref())
        .collect();
    for (k, s) in report.groups {
        if !FIXABLE.contains(&&*k.reason) {
            not_fixable
                .entry(k.reason.to_string())
                .or_default()
                .insert(k.destination());
            continue;
        }
        match k
            .port
            .and_then(|_| parse_authority(&k.destination(), None).ok())
        {
            // Only hosts that are already in egressd's normalized form are pasted into a config.
            Some(t) if Some(t.host.to_string().as_str()) == k.host.as_deref() => match &t.host {
                Host::Ip(ip) if special_purpose(*ip).is_some() => {
                    special.insert(k.destination());
                }
                Host::Name(n) if private_names.contains(n.as_str()) => {
                    resolves_special.insert(k.destination());
                }
                _ => by_authority
                    .entry((t.host.to_string(), t.port))
                    .or_default()
                    .add(&t, k, s),
            },
            _ => {
                invalid.insert(k.destination());
            }
        }
    }
    let vendors = split(by_authority, in_use);
    let mut by_host: BTreeMap<String, Seen> = BTreeMap::new();
    for ((host, _), seen) in vendors.rest {
        by_host.entry(host).or_default().merge(seen);
    }
    let rules = if group_wildcards {
        wildcards(by_host)
    } else {
        by_host
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Allow rules suggested by `egressd audit --suggest` from {}.\n\
         # Review each one before adding it to the `allow:` list of the egressd configuration.",
        report.source
    );
    let w = report.window;
    if !w.is_open() {
        let _ = writeln!(out, "# Decisions from {} only.", w.describe());
    }
    if report.counts.untracked > 0 {
        let _ = writeln!(
            out,
            "# Incomplete: {} refused decisions belong to groups beyond --max-groups {} and are not covered; \
             run again with a higher --max-groups.",
            report.counts.untracked, report.max_groups
        );
    }
    if !vendors.proposals.is_empty() {
        out.push_str(
            "# Vendor profiles list some refused hosts: add these items to the `vendors:` list rather than \
             host rules.\nvendors:\n",
        );
        for p in &vendors.proposals {
            write_proposal(&mut out, p);
        }
    }
    if rules.is_empty() && vendors.proposals.is_empty() {
        out.push_str("# No destination was refused for want of an allow rule.\nallow: []\n");
    } else if !rules.is_empty() {
        out.push_str("allow:\n");
    }
    for (pattern, seen) in &rules {
        let _ = writeln!(out, "  # {}", seen.describe());
        for host in &seen.hosts {
            if let Some(profiles) = vendors.also_listed.get(host) {
                let _ = writeln!(
                    out,
                    "  # {host} is listed by profiles {profiles}: if these are that vendor's agents, add its \
                     profile to vendors instead"
                );
            }
        }
        if pattern.starts_with("*.") {
            let _ = writeln!(out, "  # covers {}", list(&seen.hosts));
        }
        let ports: Vec<String> = seen.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            out,
            "  - name: {}",
            quote(&format!("audit-{}", pattern.replace('*', "any")))
        );
        let _ = writeln!(out, "    hosts: [{}]", quote(pattern));
        let _ = writeln!(out, "    ports: [{}]", ports.join(", "));
    }
    if !special.is_empty() {
        let _ = writeln!(
            out,
            "# not suggested, special-purpose address (loopback, private, link-local, cloud metadata, ...; \
             refused as denied_private_address whatever the rules say, unless destinations.allow_cidrs covers \
             it): {}",
            list(&special)
        );
    }
    if !resolves_special.is_empty() {
        let _ = writeln!(
            out,
            "# not suggested, the name was refused for its addresses (denied_private_address in this log), so \
             an allow rule would not let it through: {}",
            list(&resolves_special)
        );
    }
    for (reason, dests) in &not_fixable {
        let _ = writeln!(
            out,
            "# not suggested, {} ({}): {}",
            reason_text(reason),
            why_not(reason),
            list(dests)
        );
    }
    if !invalid.is_empty() {
        let _ = writeln!(
            out,
            "# not suggested, not a valid host:port: {}",
            list(&invalid)
        );
    }
    out
}

/// One `vendors:` item with comments: what it covers, what was seen, and the parameters to fill in.
fn write_proposal(out: &mut String, p: &Proposal) {
    let covers: Vec<&str> = p.covers.iter().map(String::as_str).collect();
    let _ = writeln!(out, "  # {}: {}", p.profile.name, covers.join(", "));
    let _ = writeln!(out, "  # {}", p.seen.describe());
    let placeholders = p.placeholders();
    if !placeholders.is_empty() {
        let _ = writeln!(
            out,
            "  # replace <{}>: `egressd vendors show {}` says what each parameter is",
            placeholders.join(">, <"),
            p.profile.name
        );
    }
    let _ = writeln!(out, "  - {}", p.item());
}

/// Merge sibling names under `*.parent` where at least two share a parent that is not a public suffix.
fn wildcards(by_host: BTreeMap<String, Seen>) -> BTreeMap<String, Seen> {
    let mut parents: BTreeMap<String, usize> = BTreeMap::new();
    for host in by_host.keys() {
        if let Some(p) = groupable_parent(host) {
            *parents.entry(p.to_string()).or_default() += 1;
        }
    }
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    for (host, seen) in by_host {
        let pattern = match groupable_parent(&host) {
            Some(p) if parents.get(p).copied().unwrap_or(0) >= 2 => format!("*.{p}"),
            _ => host,
        };
        match out.get_mut(&pattern) {
            Some(s) => s.merge(seen),
            None => {
                out.insert(pattern, seen);
            }
        }
    }
    out
}

/// The parent of a DNS name when `*.parent` would stay inside one registrable domain.
fn groupable_parent(host: &str) -> Option<&str> {
    if matches!(
        crate::target::normalize_host(host),
        Ok(Host::Ip(_)) | Err(_)
    ) {
        return None;
    }
    let (_, parent) = host.split_once('.')?;
    let suffix = psl::suffix_str(parent)?;
    (suffix != parent && psl::domain_str(parent).is_some()).then_some(parent)
}

fn why_not(reason: &str) -> &'static str {
    match reason {
        "denied_by_rule" => "a deny rule matches; allow rules never override it",
        "denied_private_address" => {
            "special-purpose address; see destinations.allow_cidrs if this is intended"
        }
        "denied_path" => "the host is allowed with `paths`; widen that rule's paths instead",
        r if r.starts_with("denied_sni") || r == "denied_ech" || r == "denied_not_tls" => {
            "a TLS check refused the tunnel, not a missing rule"
        }
        r if crate::reason::Reason::ALL.iter().any(|c| c.as_str() == r) => "not a policy denial",
        _ => "not a reason code egressd writes",
    }
}

fn list(items: &BTreeSet<String>) -> String {
    let mut v: Vec<String> = items.iter().map(|i| printable(i)).collect();
    let more = v.len().saturating_sub(LISTED);
    v.truncate(LISTED);
    let mut s = v.join(", ");
    if more > 0 {
        let _ = write!(s, " and {more} more");
    }
    s
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::audit::summary::{Counts, GroupKey, GroupStats};
    use crate::audit::window::Window;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    fn group(
        host: &str,
        port: u16,
        client: &str,
        denied: u64,
        first: &str,
        last: &str,
    ) -> (GroupKey, GroupStats) {
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        let key = GroupKey {
            identity: "".into(),
            host: Some(host.into()),
            port: Some(port),
            client: Some(client.parse().unwrap()),
            reason: "denied_no_rule".into(),
        };
        let stats = GroupStats {
            denied,
            would_deny: 1,
            first_seen: at(first),
            last_seen: at(last),
        };
        (key, stats)
    }

    #[test]
    fn siblings_merge_counts_ports_clients_and_times() {
        #[rustfmt::skip]
        let groups = [
            group("b.vendor.example.com", 8443, "10.0.0.2", 3, "2026-11-29T08:00:00Z", "2026-11-29T09:00:00Z"),
            group("a.vendor.example.com", 443, "10.0.0.1", 2, "2026-11-29T07:00:00Z", "2026-11-29T08:30:00Z"),
            group("a.vendor.example.com", 443, "10.0.0.2", 1, "2026-11-29T10:00:00Z", "2026-11-29T10:00:00Z"),
            group("solo.other.example.com", 443, "10.0.0.1", 1, "2026-11-29T10:00:00Z", "2026-11-29T10:00:00Z"),
        ];
        let refs: Vec<(&GroupKey, &GroupStats)> = groups.iter().map(|(k, s)| (k, s)).collect();
        let report = Report {
            source: "test.log",
            window: Window::default(),
            counts: Counts::default(),
            max_groups: 10,
            groups: &refs,
            top: 0,
            view: Default::default(),
        };
        let out = suggest(&report, true, &[]);
        let expected =
            "  # 6 denied, 3 would_deny from 2 clients (denied_no_rule), 2026-11-29T07:00:00Z to \
                        2026-11-29T10:00:00Z\n  \
                        # covers a.vendor.example.com, b.vendor.example.com\n  \
                        - name: \"audit-any.vendor.example.com\"\n    \
                        hosts: [\"*.vendor.example.com\"]\n    \
                        ports: [443, 8443]\n";
        assert!(out.contains(expected), "{out}");
        // A name without siblings stays exact.
        assert!(out.contains("hosts: [\"solo.other.example.com\"]"), "{out}");
        let exact = suggest(&report, false, &[]);
        assert!(!exact.contains('*'), "{exact}");
        assert_eq!(exact.matches("- name:").count(), 3, "{exact}");
    }

    #[test]
    fn parents_stop_below_public_suffixes() {
        assert_eq!(groupable_parent("a.example.com"), Some("example.com"));
        assert_eq!(groupable_parent("a.b.example.com"), Some("b.example.com"));
        assert_eq!(groupable_parent("example.com"), None);
        assert_eq!(groupable_parent("a.co.uk"), None);
        assert_eq!(groupable_parent("bucket.s3.amazonaws.com"), None);
        assert_eq!(groupable_parent("10.0.0.1"), None);
        assert_eq!(groupable_parent("localhost"), None);
    }
}
