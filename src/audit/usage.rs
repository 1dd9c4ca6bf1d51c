//! `--usage`: how much each rule of a configuration was used in a decision log, and which rules matched
//! nothing (candidates to remove).
//!
//! One aggregate per rule of the configuration, so memory is bounded by the configuration, not the log:
//! distinct client addresses are counted exactly up to [`MAX_CLIENTS`] per rule (then "more than"), client
//! group names up to [`MAX_GROUP_NAMES`], and rule names the configuration does not have (renamed or removed
//! since the log was written) up to [`MAX_UNKNOWN_RULES`].

use super::event::{Decision, Verdict};
use super::summary::{Counts, Tally};
use super::window::Window;
use crate::policy::{Policy, RuleKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use time::OffsetDateTime;

/// Distinct client addresses counted exactly per rule; beyond, the count is shown as "more than".
pub const MAX_CLIENTS: usize = 1000;
/// Distinct client group names kept per rule.
pub const MAX_GROUP_NAMES: usize = 64;
/// Names of rules the configuration does not have, kept for the report.
pub const MAX_UNKNOWN_RULES: usize = 20;

/// A set that keeps at most `cap` values and then only remembers that there were more.
#[derive(Debug, Clone)]
pub struct Distinct<T> {
    seen: HashSet<T>,
    cap: usize,
    more: bool,
}

impl<T: Eq + Hash> Distinct<T> {
    pub fn new(cap: usize) -> Self {
        Distinct {
            seen: HashSet::new(),
            cap,
            more: false,
        }
    }

    pub fn insert(&mut self, v: T) {
        if self.seen.len() < self.cap {
            self.seen.insert(v);
        } else if !self.seen.contains(&v) {
            self.more = true;
        }
    }

    /// Exact when [`Distinct::more`] is false; a lower bound otherwise.
    pub fn count(&self) -> usize {
        self.seen.len()
    }

    /// More distinct values were seen than kept.
    pub fn more(&self) -> bool {
        self.more
    }

    /// `12`, or `>1000` once the cap was passed.
    pub fn show(&self) -> String {
        if self.more {
            format!(">{}", self.seen.len())
        } else {
            self.seen.len().to_string()
        }
    }

    /// The values kept, sorted (for stable output).
    pub fn sorted(&self) -> Vec<&T>
    where
        T: Ord,
    {
        let mut v: Vec<&T> = self.seen.iter().collect();
        v.sort_unstable();
        v
    }
}

/// One rule of the configuration and its use in the window.
#[derive(Debug, Clone)]
pub struct RuleUse {
    pub name: Arc<str>,
    pub kind: RuleKind,
    /// The vendor profile the rule comes from (`<profile>/<entry>`), for profile rules.
    pub profile: Option<Arc<str>>,
    /// Decisions naming the rule, by decision.
    pub allowed: u64,
    pub would_deny: u64,
    pub denied: u64,
    /// Client addresses and client group names of the decisions the rule matched.
    pub clients: Distinct<IpAddr>,
    pub groups: Distinct<Box<str>>,
    pub last_match: Option<OffsetDateTime>,
}

impl RuleUse {
    /// Requests the rule let through: allowed, and would-be denials that proceeded on it.
    pub fn allows(&self) -> u64 {
        self.allowed + self.would_deny
    }

    /// Did this decision match the rule? An allow rule matches what it let through (a refusal naming it
    /// was for another port or path, or failed upstream); a deny rule matches every decision naming it.
    fn matched_by(&self, v: Verdict) -> bool {
        self.kind == RuleKind::Deny || v != Verdict::Deny
    }

    /// Matched nothing in the window.
    pub fn unused(&self) -> bool {
        self.last_match.is_none()
    }
}

pub struct Usage {
    window: Window,
    pub counts: Counts,
    /// Every rule, in the order the policy checks them.
    pub rules: Vec<RuleUse>,
    by_name: HashMap<Arc<str>, usize>,
    /// Decisions naming a rule the configuration does not have, by name (at most [`MAX_UNKNOWN_RULES`]).
    pub not_in_config: BTreeMap<Box<str>, u64>,
    /// Decisions naming further such rules.
    pub not_in_config_more: u64,
    /// Decisions in the window that named no rule (refusals no rule matched, malformed requests).
    pub without_rule: u64,
}

impl Usage {
    pub fn new(window: Window, policy: &Policy) -> Self {
        let profiles = policy.vendors();
        let rules: Vec<RuleUse> = policy
            .rules()
            .map(|(name, kind)| RuleUse {
                name: name.clone(),
                kind,
                profile: name
                    .split_once('/')
                    .and_then(|(p, _)| profiles.iter().find(|v| ***v == *p).cloned()),
                allowed: 0,
                would_deny: 0,
                denied: 0,
                clients: Distinct::new(MAX_CLIENTS),
                groups: Distinct::new(MAX_GROUP_NAMES),
                last_match: None,
            })
            .collect();
        let by_name = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        Usage {
            window,
            counts: Counts::default(),
            rules,
            by_name,
            not_in_config: BTreeMap::new(),
            not_in_config_more: 0,
            without_rule: 0,
        }
    }
}

impl Tally for Usage {
    fn counts(&self) -> &Counts {
        &self.counts
    }

    fn counts_mut(&mut self) -> &mut Counts {
        &mut self.counts
    }

    fn window(&self) -> Window {
        self.window
    }

    fn add_decision(&mut self, d: Decision<'_>) {
        let Some(name) = d.rule.as_deref() else {
            self.without_rule += 1;
            return;
        };
        let Some(&i) = self.by_name.get(name) else {
            let room = self.not_in_config.len() < MAX_UNKNOWN_RULES;
            match self.not_in_config.get_mut(name) {
                Some(n) => *n += 1,
                None if room => {
                    self.not_in_config.insert(name.into(), 1);
                }
                None => self.not_in_config_more += 1,
            }
            return;
        };
        let r = &mut self.rules[i];
        match d.verdict {
            Verdict::Allow => r.allowed += 1,
            Verdict::WouldDeny => r.would_deny += 1,
            Verdict::Deny => r.denied += 1,
        }
        if !r.matched_by(d.verdict) {
            return;
        }
        r.last_match = Some(r.last_match.map_or(d.ts, |l| l.max(d.ts)));
        if let Some(c) = d.client {
            r.clients.insert(c);
        }
        for g in d.groups.iter().flat_map(|g| g.split(',')) {
            r.groups.insert(g.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::classify;
    use super::*;

    fn policy(yaml: &str) -> Arc<Policy> {
        crate::config::from_yaml_str(yaml).unwrap().runtime.policy
    }

    fn line(ts: &str, client: &str, decision: &str, rule: Option<&str>, groups: &[&str]) -> String {
        serde_json::json!({
            "ts": ts, "event": "decision", "client_addr": format!("{client}:4000"), "host": "h.example",
            "port": 443, "decision": decision, "reason": "allowed", "rule": rule, "client": groups,
        })
        .to_string()
    }

    #[test]
    fn each_rule_counts_its_matches_clients_groups_and_last_time() {
        let p = policy(
            "vendors: [castai-us]\nallow:\n  - {name: web, hosts: [web.example]}\n  - {name: idle, hosts: [i.example]}\ndeny:\n  - {name: guard, hosts: [g.example]}\n",
        );
        let mut u = Usage::new(Window::default(), &p);
        #[rustfmt::skip]
        let lines = [
            line("2026-11-29T10:00:00Z", "10.0.0.1", "allow", Some("web"), &["ci"]),
            line("2026-11-29T12:00:00Z", "10.0.0.2", "allow", Some("web"), &["ci", "bots"]),
            line("2026-11-29T11:00:00Z", "10.0.0.1", "would_deny", Some("web"), &[]),
            // A refusal naming an allow rule (another port) is counted, but is not a match.
            line("2026-11-29T13:00:00Z", "10.0.0.9", "deny", Some("idle"), &[]),
            line("2026-11-29T09:00:00Z", "10.0.0.3", "allow", Some("castai-us/api"), &[]),
            line("2026-11-29T09:30:00Z", "10.0.0.3", "deny", Some("guard"), &[]),
            line("2026-11-29T09:30:00Z", "10.0.0.3", "allow", Some("renamed"), &[]),
            line("2026-11-29T09:30:00Z", "10.0.0.3", "deny", None, &[]),
        ];
        for l in &lines {
            u.add(classify(l.as_bytes()));
        }
        let get = |n: &str| u.rules.iter().find(|r| &*r.name == n).unwrap();
        let web = get("web");
        assert_eq!(
            (web.allowed, web.would_deny, web.denied, web.allows()),
            (2, 1, 0, 3)
        );
        assert_eq!(
            (web.clients.show(), web.groups.count()),
            ("2".to_string(), 2)
        );
        assert_eq!(
            super::super::window::rfc3339(web.last_match.unwrap()),
            "2026-11-29T12:00:00Z"
        );
        let idle = get("idle");
        assert_eq!((idle.denied, idle.unused()), (1, true));
        assert!(idle.profile.is_none());
        let api = get("castai-us/api");
        assert_eq!(api.profile.as_deref(), Some("castai-us"));
        assert!(!api.unused());
        assert!(get("castai-us/helm").unused());
        assert!(
            !get("guard").unused(),
            "a deny rule matches what it refused"
        );
        assert_eq!(u.not_in_config.get("renamed"), Some(&1));
        assert_eq!(u.without_rule, 1);
        assert_eq!(u.counts.decisions, 8);
        // Config order: local allow rules, profile rules, deny rules.
        assert_eq!(&*u.rules[0].name, "web");
        assert_eq!(&*u.rules.last().unwrap().name, "guard");
    }

    #[test]
    fn distinct_counts_stop_at_their_cap() {
        let mut d = Distinct::new(3);
        for v in [1, 2, 2, 3, 3] {
            d.insert(v);
        }
        assert_eq!((d.show(), d.more()), ("3".to_string(), false));
        d.insert(1);
        assert!(!d.more(), "a value already kept is not a new one");
        d.insert(4);
        assert_eq!((d.show(), d.count(), d.more()), (">3".to_string(), 3, true));
    }

    #[test]
    fn unknown_rule_names_are_bounded() {
        let p = policy("allow:\n  - {name: a, hosts: [a.example]}\n");
        let mut u = Usage::new(Window::default(), &p);
        for i in 0..MAX_UNKNOWN_RULES + 5 {
            let l = line(
                "2026-11-29T10:00:00Z",
                "10.0.0.1",
                "allow",
                Some(&format!("old-{i}")),
                &[],
            );
            u.add(classify(l.as_bytes()));
        }
        assert_eq!(u.not_in_config.len(), MAX_UNKNOWN_RULES);
        assert_eq!(u.not_in_config_more, 5);
    }
}
