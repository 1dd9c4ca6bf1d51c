//! `--shadow`: the decisions on which the candidate policy (`shadow:`) disagreed with the live one, grouped by
//! what would change for which destination, and split by direction: what the candidate would newly refuse
//! (agents that rely on it break when it is promoted) and what it would newly allow (the policy opens).
//!
//! Bounded like the other views: at most `max_groups` groups are kept, disagreements of further groups are only
//! counted; per group, distinct client addresses are counted exactly up to [`MAX_CLIENTS`] and client group
//! names kept up to [`MAX_GROUP_NAMES`].

use super::event::{Decision, Shadow, Verdict};
use super::summary::{bounded_entry, destination, Counts, Tally};
use super::usage::Distinct;
use super::window::Window;
use std::collections::HashMap;
use std::net::IpAddr;
use time::OffsetDateTime;

/// Distinct client addresses counted exactly per group; beyond, the count is shown as "more than".
pub const MAX_CLIENTS: usize = 100;
/// Distinct client group names kept per group.
pub const MAX_GROUP_NAMES: usize = 16;

/// Which way a disagreement goes, from the live verdict to the candidate's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Live `allow`, candidate `deny` or `would_deny`: allowed now, refused (or reported) by the candidate.
    NewlyRefused,
    /// Live `deny` or `would_deny`, candidate `allow`: refused (or reported) now, allowed by the candidate.
    NewlyAllowed,
    /// `deny` one side, `would_deny` the other: both refuse, one of them only reports it (report mode).
    Enforcement,
}

impl Direction {
    /// Every direction, in the order the report gives them.
    pub const ALL: [Direction; 3] = [
        Direction::NewlyRefused,
        Direction::NewlyAllowed,
        Direction::Enforcement,
    ];

    /// The direction from `live` to `shadow`; `None` when they agree.
    pub fn of(live: Verdict, shadow: Verdict) -> Option<Direction> {
        match (live, shadow) {
            _ if live == shadow => None,
            (Verdict::Allow, _) => Some(Direction::NewlyRefused),
            (_, Verdict::Allow) => Some(Direction::NewlyAllowed),
            _ => Some(Direction::Enforcement),
        }
    }

    /// `would_newly_refuse`, `would_newly_allow`, `enforcement_only`: the JSON names.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::NewlyRefused => "would_newly_refuse",
            Direction::NewlyAllowed => "would_newly_allow",
            Direction::Enforcement => "enforcement_only",
        }
    }
}

/// What decided on one side: the reason code, and the rule the decision names, if any. Both are kept: a
/// refusal can name an allow rule that matched the host but not the port or path (`denied_port`,
/// `denied_path`), or a request allowed by a rule can fail upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Basis {
    pub reason: Box<str>,
    pub rule: Option<Box<str>>,
}

impl Basis {
    fn of(reason: &str, rule: Option<&str>) -> Basis {
        Basis {
            reason: reason.into(),
            rule: rule.map(Into::into),
        }
    }
}

/// What one group of disagreements is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShadowKey {
    pub live: Verdict,
    pub shadow: Verdict,
    pub host: Option<Box<str>>,
    pub port: Option<u16>,
    pub live_by: Basis,
    pub shadow_by: Basis,
}

impl ShadowKey {
    pub fn direction(&self) -> Direction {
        // Keys are made of disagreements only: the two verdicts differ.
        Direction::of(self.live, self.shadow).unwrap_or(Direction::Enforcement)
    }

    /// `host:port`, as the other views show destinations.
    pub fn destination(&self) -> String {
        destination(self.host.as_deref(), self.port)
    }
}

/// One group's disagreements.
#[derive(Debug, Clone)]
pub struct ShadowStats {
    pub decisions: u64,
    pub clients: Distinct<IpAddr>,
    pub groups: Distinct<Box<str>>,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
}

/// Disagreements per direction, over every disagreement in the window (kept groups or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByDirection {
    pub newly_refused: u64,
    pub newly_allowed: u64,
    pub enforcement: u64,
}

impl ByDirection {
    pub fn total(&self) -> u64 {
        self.newly_refused + self.newly_allowed + self.enforcement
    }

    pub fn get(&self, d: Direction) -> u64 {
        match d {
            Direction::NewlyRefused => self.newly_refused,
            Direction::NewlyAllowed => self.newly_allowed,
            Direction::Enforcement => self.enforcement,
        }
    }

    fn add(&mut self, d: Direction) {
        match d {
            Direction::NewlyRefused => self.newly_refused += 1,
            Direction::NewlyAllowed => self.newly_allowed += 1,
            Direction::Enforcement => self.enforcement += 1,
        }
    }
}

pub struct Disagreements {
    window: Window,
    max_groups: usize,
    groups: HashMap<ShadowKey, ShadowStats>,
    /// Every line read; `untracked` counts the disagreements whose group could not be kept.
    pub counts: Counts,
    pub by_direction: ByDirection,
    /// Decisions in the window whose shadow fields could not be read.
    pub unreadable: u64,
}

impl Disagreements {
    pub fn new(window: Window, max_groups: usize) -> Self {
        Disagreements {
            window,
            max_groups,
            groups: HashMap::new(),
            counts: Counts::default(),
            by_direction: ByDirection::default(),
            unreadable: 0,
        }
    }

    pub fn max_groups(&self) -> usize {
        self.max_groups
    }

    /// Every kept group, by direction ([`Direction::ALL`]), then most disagreements first (ties in key order,
    /// so output is stable).
    pub fn groups(&self) -> Vec<(&ShadowKey, &ShadowStats)> {
        let mut v: Vec<_> = self.groups.iter().collect();
        v.sort_by(|a, b| {
            (a.0.direction().cmp(&b.0.direction()))
                .then_with(|| b.1.decisions.cmp(&a.1.decisions))
                .then_with(|| a.0.cmp(b.0))
        });
        v
    }
}

impl Tally for Disagreements {
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
        let (verdict, reason, rule) = match &d.shadow {
            Shadow::Absent => return,
            Shadow::Unreadable => {
                self.unreadable += 1;
                return;
            }
            Shadow::Differs(s) => (s.verdict, &s.reason, &s.rule),
        };
        let Some(direction) = Direction::of(d.verdict, verdict) else {
            return;
        };
        self.by_direction.add(direction);
        let key = ShadowKey {
            live: d.verdict,
            shadow: verdict,
            host: d.host.as_deref().map(Into::into),
            port: d.port,
            live_by: Basis::of(&d.reason, d.rule.as_deref()),
            shadow_by: Basis::of(reason, rule.as_deref()),
        };
        let new = || ShadowStats {
            decisions: 0,
            clients: Distinct::new(MAX_CLIENTS),
            groups: Distinct::new(MAX_GROUP_NAMES),
            first_seen: d.ts,
            last_seen: d.ts,
        };
        let untracked = &mut self.counts.untracked;
        let Some(stats) = bounded_entry(&mut self.groups, key, self.max_groups, untracked, new)
        else {
            return;
        };
        stats.decisions += 1;
        stats.first_seen = stats.first_seen.min(d.ts);
        stats.last_seen = stats.last_seen.max(d.ts);
        if let Some(c) = d.client {
            stats.clients.insert(c);
        }
        for g in d.groups.iter().flat_map(|g| g.split(',')) {
            stats.groups.insert(g.into());
        }
    }
}

#[cfg(test)]
/// A decision line; `shadow` is `(decision, reason, rule)` when the candidate disagreed.
pub(super) fn test_line(
    ts: &str,
    client: &str,
    host: &str,
    live: (&str, &str, Option<&str>),
    shadow: Option<(&str, &str, Option<&str>)>,
    groups: &[&str],
) -> String {
    let mut v = serde_json::json!({
        "ts": ts, "event": "decision", "client_addr": format!("{client}:4000"), "host": host,
        "port": 443, "decision": live.0, "reason": live.1, "rule": live.2, "client": groups,
    });
    if let Some((decision, reason, rule)) = shadow {
        v["shadow_decision"] = decision.into();
        v["shadow_reason"] = reason.into();
        if let Some(r) = rule {
            v["shadow_rule"] = r.into();
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::event::classify;
    use super::super::window::rfc3339;
    use super::*;

    use super::test_line as line;

    fn feed(t: &mut Disagreements, lines: &[String]) {
        for l in lines {
            t.add(classify(l.as_bytes()));
        }
    }

    const OLD: (&str, &str, Option<&str>) = ("allow", "allowed", Some("old"));
    const NO_RULE: (&str, &str, Option<&str>) = ("deny", "denied_no_rule", None);

    #[test]
    fn directions_follow_the_two_verdicts() {
        use Verdict::*;
        assert_eq!(Direction::of(Allow, Allow), None);
        assert_eq!(Direction::of(Allow, Deny), Some(Direction::NewlyRefused));
        assert_eq!(
            Direction::of(Allow, WouldDeny),
            Some(Direction::NewlyRefused)
        );
        assert_eq!(Direction::of(Deny, Allow), Some(Direction::NewlyAllowed));
        assert_eq!(
            Direction::of(WouldDeny, Allow),
            Some(Direction::NewlyAllowed)
        );
        assert_eq!(Direction::of(Deny, WouldDeny), Some(Direction::Enforcement));
        assert_eq!(Direction::of(WouldDeny, Deny), Some(Direction::Enforcement));
    }

    #[test]
    fn disagreements_are_grouped_counted_and_split_by_direction() {
        let mut t = Disagreements::new(Window::default(), 100);
        #[rustfmt::skip]
        let lines = [
            // Agreement: counted as a decision, nothing else.
            line("2026-11-29T10:00:00Z", "10.0.0.1", "a.example", OLD, None, &[]),
            line("2026-11-29T10:00:00Z", "10.0.0.1", "b.example", OLD, Some(NO_RULE), &["agents"]),
            line("2026-11-29T12:00:00Z", "10.0.0.2", "b.example", OLD, Some(NO_RULE), &["agents", "ci"]),
            line("2026-11-29T09:00:00Z", "10.0.0.1", "b.example", OLD, Some(NO_RULE), &[]),
            // Same destination, the candidate refuses it by a deny rule: another group.
            line("2026-11-29T10:00:00Z", "10.0.0.3", "b.example", OLD, Some(("deny", "denied_by_rule", Some("guard"))), &[]),
            line("2026-11-29T11:00:00Z", "10.0.0.4", "c.example", NO_RULE, Some(("allow", "allowed", Some("new"))), &[]),
            line("2026-11-29T11:00:00Z", "10.0.0.4", "d.example", ("would_deny", "denied_no_rule", None), Some(NO_RULE), &[]),
        ];
        feed(&mut t, &lines);
        let mut unreadable: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        unreadable["shadow_decision"] = "maybe".into();
        feed(&mut t, &[unreadable.to_string()]);
        assert_eq!(
            (t.counts.decisions, t.unreadable, t.counts.untracked),
            (8, 1, 0)
        );
        assert_eq!(
            t.by_direction,
            ByDirection {
                newly_refused: 4,
                newly_allowed: 1,
                enforcement: 1
            }
        );
        let g = t.groups();
        assert_eq!(g.len(), 4);
        let (k, s) = g[0];
        assert_eq!(
            (k.destination(), &k.live_by, &k.shadow_by),
            (
                "b.example:443".to_string(),
                &Basis::of("allowed", Some("old")),
                &Basis::of("denied_no_rule", None)
            )
        );
        assert_eq!((k.direction(), s.decisions), (Direction::NewlyRefused, 3));
        assert_eq!(
            (s.clients.show(), s.groups.sorted()),
            ("2".into(), vec![&"agents".into(), &"ci".into()])
        );
        assert_eq!(
            (rfc3339(s.first_seen), rfc3339(s.last_seen)),
            ("2026-11-29T09:00:00Z".into(), "2026-11-29T12:00:00Z".into())
        );
        // Ties in key order: live allow before live deny before live would_deny.
        assert_eq!(g[1].0.shadow_by, Basis::of("denied_by_rule", Some("guard")));
        assert_eq!(
            (g[2].0.direction(), &g[2].0.live_by, &g[2].0.shadow_by),
            (
                Direction::NewlyAllowed,
                &Basis::of("denied_no_rule", None),
                &Basis::of("allowed", Some("new"))
            )
        );
        assert_eq!(g[3].0.direction(), Direction::Enforcement);
        assert_eq!(
            (
                rfc3339(t.counts.first.unwrap()),
                rfc3339(t.counts.last.unwrap())
            ),
            ("2026-11-29T09:00:00Z".into(), "2026-11-29T12:00:00Z".into())
        );
    }

    #[test]
    fn refusals_naming_the_same_rule_for_different_reasons_are_apart() {
        // The candidate's `web` rule matched the host but not the port, or not the path: two groups, each with
        // its reason, neither mistaken for a refusal by `web` itself.
        let mut t = Disagreements::new(Window::default(), 10);
        #[rustfmt::skip]
        let lines = [
            line("2026-11-29T10:00:00Z", "10.0.0.1", "b.example", OLD, Some(("deny", "denied_port", Some("web"))), &[]),
            line("2026-11-29T10:01:00Z", "10.0.0.1", "b.example", OLD, Some(("deny", "denied_path", Some("web"))), &[]),
            line("2026-11-29T10:02:00Z", "10.0.0.2", "b.example", OLD, Some(("deny", "denied_port", Some("web"))), &[]),
        ];
        feed(&mut t, &lines);
        let g = t.groups();
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(
            (&g[0].0.shadow_by, g[0].1.decisions),
            (&Basis::of("denied_port", Some("web")), 2)
        );
        assert_eq!(
            (&g[1].0.shadow_by, g[1].1.decisions),
            (&Basis::of("denied_path", Some("web")), 1)
        );
    }

    #[test]
    fn groups_come_by_direction_then_most_first() {
        let mut t = Disagreements::new(Window::default(), 10);
        let new = ("allow", "allowed", Some("new"));
        #[rustfmt::skip]
        let lines = [
            line("2026-11-29T10:00:00Z", "10.0.0.1", "c.example", NO_RULE, Some(new), &[]),
            line("2026-11-29T10:01:00Z", "10.0.0.1", "c.example", NO_RULE, Some(new), &[]),
            line("2026-11-29T10:02:00Z", "10.0.0.1", "d.example", ("deny", "denied_no_rule", None), Some(("would_deny", "denied_no_rule", None)), &[]),
            line("2026-11-29T10:03:00Z", "10.0.0.1", "d.example", ("deny", "denied_no_rule", None), Some(("would_deny", "denied_no_rule", None)), &[]),
            line("2026-11-29T10:04:00Z", "10.0.0.1", "d.example", ("deny", "denied_no_rule", None), Some(("would_deny", "denied_no_rule", None)), &[]),
            line("2026-11-29T10:05:00Z", "10.0.0.1", "b.example", OLD, Some(NO_RULE), &[]),
            line("2026-11-29T10:06:00Z", "10.0.0.1", "e.example", NO_RULE, Some(new), &[]),
        ];
        feed(&mut t, &lines);
        let order: Vec<(Direction, u64)> = (t.groups().iter())
            .map(|(k, s)| (k.direction(), s.decisions))
            .collect();
        assert_eq!(
            order,
            [
                (Direction::NewlyRefused, 1),
                (Direction::NewlyAllowed, 2),
                (Direction::NewlyAllowed, 1),
                (Direction::Enforcement, 3)
            ]
        );
    }

    #[test]
    fn groups_beyond_the_limit_are_counted_not_kept() {
        let mut t = Disagreements::new(Window::default(), 2);
        let refused = |host: &str| {
            line(
                "2026-11-29T10:00:00Z",
                "10.0.0.1",
                host,
                OLD,
                Some(NO_RULE),
                &[],
            )
        };
        let mut lines: Vec<String> = (0..5).map(|i| refused(&format!("h{i}.example"))).collect();
        lines.push(refused("h0.example"));
        feed(&mut t, &lines);
        assert_eq!((t.groups().len(), t.counts.untracked), (2, 3));
        assert_eq!(t.groups()[0].1.decisions, 2, "kept groups keep counting");
        assert_eq!(
            t.by_direction.total(),
            6,
            "every disagreement is in the totals"
        );
    }

    #[test]
    fn clients_and_group_names_are_bounded_per_group() {
        let mut t = Disagreements::new(Window::default(), 10);
        let lines: Vec<String> = (0..MAX_CLIENTS + 5)
            .map(|i| {
                let group = format!("g{i}");
                line(
                    "2026-11-29T10:00:00Z",
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    "b.example",
                    OLD,
                    Some(NO_RULE),
                    &[group.as_str()],
                )
            })
            .collect();
        feed(&mut t, &lines);
        let (_, s) = t.groups()[0];
        assert_eq!(s.clients.show(), format!(">{MAX_CLIENTS}"));
        assert_eq!((s.groups.count(), s.groups.more()), (MAX_GROUP_NAMES, true));
    }

    #[test]
    fn the_window_selects_the_decisions() {
        let since = OffsetDateTime::parse(
            "2026-11-29T10:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let mut t = Disagreements::new(
            Window {
                since: Some(since),
                until: None,
            },
            10,
        );
        feed(
            &mut t,
            &[
                line(
                    "2026-11-29T09:59:59Z",
                    "10.0.0.1",
                    "b.example",
                    OLD,
                    Some(NO_RULE),
                    &[],
                ),
                line(
                    "2026-11-29T10:00:00Z",
                    "10.0.0.1",
                    "a.example",
                    OLD,
                    None,
                    &[],
                ),
            ],
        );
        assert_eq!((t.counts.outside_window, t.counts.decisions), (1, 1));
        assert_eq!((t.by_direction.total(), t.groups().len()), (0, 0));
    }
}
