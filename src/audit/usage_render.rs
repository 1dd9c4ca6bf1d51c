//! The `--usage` report as a table, JSON or Markdown: every rule with its use, then the candidates to remove
//! and how to remove each (a local rule from its list, a profile entry with `vendors_disable`, a profile whose
//! every entry is unused from `vendors`).

use super::render::{
    clients_cap_note, end, grid, json_text, notes_before, printable, seconds, span, Format,
};
use super::summary::Tally;
use super::usage::{RuleUse, Usage, MAX_CLIENTS};
use crate::policy::RuleKind;
use serde_json::json;
use std::sync::Arc;

const HEADER: [&str; 7] = [
    "rule",
    "kind",
    "allows",
    "refusals",
    "clients",
    "client groups",
    "last match",
];
const NUMERIC: [&str; 4] = ["allows", "refusals", "clients", "client groups"];

fn kind(k: RuleKind) -> &'static str {
    match k {
        RuleKind::Allow => "allow",
        RuleKind::Deny => "deny",
    }
}

/// One candidate to remove: what to remove and how.
struct Removal {
    what: String,
    how: String,
    rules: Vec<Arc<str>>,
}

/// The allow rules that let nothing through, one removal each, except that a profile whose every rule is
/// unused is one removal (take it out of `vendors`).
fn removals(u: &Usage) -> Vec<Removal> {
    let mut out: Vec<Removal> = Vec::new();
    let allow: Vec<&RuleUse> = u
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Allow)
        .collect();
    for r in allow.iter().filter(|r| r.unused()) {
        // Names from the configuration are printed as they are when printable ASCII, else quoted and escaped.
        let name = printable(&r.name);
        match &r.profile {
            Some(p)
                if allow
                    .iter()
                    .filter(|o| o.profile.as_ref() == Some(p))
                    .all(|o| o.unused()) =>
            {
                match out
                    .iter_mut()
                    .find(|x| x.what == format!("{p} (every entry)"))
                {
                    Some(x) => x.rules.push(r.name.clone()),
                    None => out.push(Removal {
                        what: format!("{p} (every entry)"),
                        how: format!("remove {p} from vendors"),
                        rules: vec![r.name.clone()],
                    }),
                }
            }
            Some(_) => out.push(Removal {
                what: name.clone(),
                how: format!("vendors_disable: [{name}]"),
                rules: vec![r.name.clone()],
            }),
            None => out.push(Removal {
                what: name,
                how: "delete it from allow".to_string(),
                rules: vec![r.name.clone()],
            }),
        }
    }
    out
}

fn unused_deny(u: &Usage) -> Vec<&RuleUse> {
    u.rules
        .iter()
        .filter(|r| r.kind == RuleKind::Deny && r.unused())
        .collect()
}

pub fn render(u: &Usage, source: &str, config: &str, format: Format) -> String {
    match format {
        Format::Json => json_report(u, source, config),
        Format::Table => text(u, source, config, false),
        Format::Markdown => text(u, source, config, true),
    }
}

fn row(r: &RuleUse) -> Vec<String> {
    vec![
        printable(&r.name),
        kind(r.kind).to_string(),
        r.allows().to_string(),
        r.denied.to_string(),
        r.clients.show(),
        r.groups.show(),
        r.last_match.map_or("-".to_string(), seconds),
    ]
}

fn text(u: &Usage, source: &str, config: &str, markdown: bool) -> String {
    let sep = if markdown { "\n\n" } else { "\n" };
    let mut out = String::new();
    if markdown {
        out.push_str("## Rule usage\n\n");
    }
    let mut notes = notes_before(source, u.window(), &u.counts);
    let allow = u.rules.iter().filter(|r| r.kind == RuleKind::Allow).count();
    notes.push(format!(
        "{}{} rules in {} ({allow} allow, {} deny)",
        span(&u.counts),
        u.rules.len(),
        printable(config),
        u.rules.len() - allow
    ));
    for n in notes {
        out.push_str(&n);
        out.push_str(sep);
    }
    if !markdown {
        out.push('\n');
    }
    if u.rules.is_empty() {
        out.push_str("the configuration has no rules");
        out.push_str(sep);
    } else {
        out.push_str(&grid(
            &HEADER,
            u.rules.iter().map(row).collect(),
            &NUMERIC,
            markdown,
        ));
        out.push_str("\n\n");
    }
    let removals = removals(u);
    let unused_rules: usize = removals.iter().map(|r| r.rules.len()).sum();
    if markdown {
        out.push_str("### Candidates to remove\n\n");
    }
    if removals.is_empty() {
        out.push_str(
            "candidates to remove: none, every allow rule let something through in the window",
        );
        out.push_str(sep);
    } else {
        out.push_str(&format!(
            "candidates to remove: {unused_rules} allow rule{} let nothing through in the window",
            if unused_rules == 1 { "" } else { "s" }
        ));
        out.push_str("\n\n");
        let rows = removals
            .iter()
            .map(|r| vec![r.what.clone(), r.how.clone()])
            .collect();
        out.push_str(&grid(&["rule", "remove with"], rows, &[], markdown));
        out.push_str("\n\n");
        out.push_str(
            "a rule can be needed less often than the log covers (monthly jobs, failover endpoints, upgrades): \
             check before removing",
        );
        out.push_str(sep);
    }
    let deny = unused_deny(u);
    if !deny.is_empty() {
        let names: Vec<String> = deny.iter().map(|r| printable(&r.name)).collect();
        out.push_str(&format!(
            "deny rules that refused nothing in the window (guards, not candidates): {}",
            names.join(", ")
        ));
        out.push_str(sep);
    }
    if !u.not_in_config.is_empty() {
        let total: u64 = u.not_in_config.values().sum::<u64>() + u.not_in_config_more;
        let mut names: Vec<String> = u
            .not_in_config
            .iter()
            .map(|(n, c)| format!("{} ({c})", printable(n)))
            .collect();
        if u.not_in_config_more > 0 {
            names.push(format!(
                "{} more decisions for further names",
                u.not_in_config_more
            ));
        }
        out.push_str(&format!(
            "{total} decisions name rules that are not in the configuration (renamed or removed since): {}",
            names.join(", ")
        ));
        out.push_str(sep);
    }
    if u.rules.iter().any(|r| r.clients.more()) {
        out.push_str(&clients_cap_note(MAX_CLIENTS, "rule"));
        out.push_str(sep);
    }
    end(out)
}

fn json_report(u: &Usage, source: &str, config: &str) -> String {
    let c = &u.counts;
    let rules: Vec<_> = u
        .rules
        .iter()
        .map(|r| {
            json!({
                "rule": &*r.name,
                "kind": kind(r.kind),
                "profile": r.profile.as_deref(),
                "allows": r.allows(),
                "allowed": r.allowed,
                "would_deny": r.would_deny,
                "denied": r.denied,
                "clients": r.clients.count(),
                "clients_more": r.clients.more(),
                "client_groups": r.groups.count(),
                "client_groups_more": r.groups.more(),
                "client_group_names": r.groups.sorted(),
                "last_match": r.last_match.map(seconds),
            })
        })
        .collect();
    let removals: Vec<_> = removals(u)
        .iter()
        .map(|r| {
            json!({
                "rule": r.what,
                "remove_with": r.how,
                "rules": r.rules.iter().map(|n| &**n).collect::<Vec<_>>(),
            })
        })
        .collect();
    let not_in_config: Vec<_> = u
        .not_in_config
        .iter()
        .map(|(n, c)| json!({"rule": &**n, "decisions": c}))
        .collect();
    let rest = json!({
        "config": config,
        "first_decision": c.first.map(seconds),
        "last_decision": c.last.map(seconds),
        "decisions_without_rule": u.without_rule,
        "max_clients_per_rule": MAX_CLIENTS,
        "rules": rules,
        "candidates_to_remove": removals,
        "unmatched_deny_rules": unused_deny(u).iter().map(|r| &*r.name).collect::<Vec<_>>(),
        "not_in_config": not_in_config,
        "not_in_config_more_decisions": u.not_in_config_more,
    });
    json_text(source, u.window(), c, rest)
}

#[cfg(test)]
mod tests {
    use super::super::event::classify;
    use super::super::summary::Tally;
    use super::super::window::Window;
    use super::*;

    fn usage(yaml: &str, lines: &[(&str, &str, Option<&str>)]) -> Usage {
        let p = crate::config::from_yaml_str(yaml).unwrap().runtime.policy;
        let mut u = Usage::new(Window::default(), &p);
        for (ts, decision, rule) in lines {
            let l = json!({
                "ts": ts, "event": "decision", "client_addr": "10.0.0.1:1", "host": "h", "port": 443,
                "decision": decision, "reason": "allowed", "rule": rule,
            })
            .to_string();
            u.add(classify(l.as_bytes()));
        }
        u
    }

    #[test]
    fn an_unused_profile_is_one_removal_and_a_used_one_gives_vendors_disable() {
        let u = usage(
            "vendors: [castai-us, castai-eu]\nallow:\n  - {name: old, hosts: [o.example]}\n",
            &[("2026-11-29T10:00:00Z", "allow", Some("castai-us/api"))],
        );
        let r = removals(&u);
        let whats: Vec<(&str, &str)> = r.iter().map(|x| (&*x.what, &*x.how)).collect();
        assert!(
            whats.contains(&("old", "delete it from allow")),
            "{whats:?}"
        );
        assert!(
            whats.contains(&("castai-us/grpc", "vendors_disable: [castai-us/grpc]")),
            "{whats:?}"
        );
        assert!(
            whats.contains(&("castai-eu (every entry)", "remove castai-eu from vendors")),
            "{whats:?}"
        );
        assert!(!whats.iter().any(|(w, _)| w.starts_with("castai-eu/")));
        assert!(!whats.iter().any(|(w, _)| *w == "castai-us/api"));
        let eu = r.iter().find(|x| x.what.starts_with("castai-eu")).unwrap();
        assert_eq!(eu.rules.len(), 8, "every castai-eu entry");
    }

    #[test]
    fn the_table_names_every_rule_and_the_candidates() {
        let u = usage(
            "allow:\n  - {name: used, hosts: [u.example]}\n  - {name: stale, hosts: [s.example]}\ndeny:\n  - {name: guard, hosts: [g.example]}\n",
            &[
                ("2026-11-29T10:00:00.7Z", "allow", Some("used")),
                ("2026-11-29T10:00:01Z", "allow", Some("gone")),
            ],
        );
        let out = render(&u, "x.log", "egressd.yaml", Format::Table);
        assert!(
            out.contains("decisions from 2026-11-29T10:00:00Z to 2026-11-29T10:00:01Z; 3 rules in egressd.yaml (2 allow, 1 deny)"),
            "{out}"
        );
        let used = out.lines().find(|l| l.starts_with("used ")).unwrap();
        let cells: Vec<&str> = used.split_whitespace().collect();
        assert_eq!(
            cells,
            ["used", "allow", "1", "0", "1", "0", "2026-11-29T10:00:00Z"],
            "{out}"
        );
        assert!(
            out.contains("candidates to remove: 1 allow rule let nothing through"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("stale") && l.ends_with("delete it from allow")),
            "{out}"
        );
        assert!(out.contains("guards, not candidates): guard"), "{out}");
        assert!(out.contains("1 decisions name rules that are not in the configuration (renamed or removed since): gone (1)"), "{out}");
        let md = render(&u, "x.log", "egressd.yaml", Format::Markdown);
        assert!(md.starts_with("## Rule usage\n\n"), "{md}");
        assert!(md.contains("### Candidates to remove"), "{md}");
        assert!(
            md.lines()
                .any(|l| l.starts_with("| stale") && l.contains("| delete it from allow")),
            "{md}"
        );
    }
}
