//! Counting denied and would_deny decisions by (destination, client, reason), in memory bounded by the number
//! of groups: once `max_groups` distinct groups exist, decisions for new groups are only counted, not kept.

use super::event::{Decision, Line, Verdict};
use super::window::Window;
use std::collections::HashMap;
use std::net::IpAddr;
use time::OffsetDateTime;

/// What one group is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub host: Option<Box<str>>,
    pub port: Option<u16>,
    pub client: Option<IpAddr>,
    /// Client groups and user, as [`GroupKey::identity`] shows them (empty: unidentified).
    pub identity: Box<str>,
    /// The reason code; in the allowed view, the rule that allowed.
    pub reason: Box<str>,
}

impl GroupKey {
    /// `host:port` (IPv6 in brackets), `host` without a port, `-` when the request named no host.
    pub fn destination(&self) -> String {
        destination(self.host.as_deref(), self.port)
    }

    pub fn client(&self) -> String {
        self.client
            .map_or_else(|| "-".to_string(), |c| c.to_string())
    }

    /// `castai-agents`, `castai-agents user=castai`, or `-` for a client in no group.
    pub fn identity(&self) -> &str {
        if self.identity.is_empty() {
            "-"
        } else {
            &self.identity
        }
    }
}

/// `host:port` (IPv6 in brackets), `host` without a port, `-` when the request named no host.
pub fn destination(host: Option<&str>, port: Option<u16>) -> String {
    match (host, port) {
        (None, _) => "-".to_string(),
        (Some(h), Some(p)) if h.contains(':') => format!("[{h}]:{p}"),
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
    }
}

/// What the groups are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    /// Group by client group (and user) only, not by client address.
    pub by_group: bool,
    /// Summarize allowed decisions by the rule that allowed them (what each vendor reached), instead of
    /// the refusals.
    pub allowed: bool,
}

fn identity(d: &Decision<'_>) -> Box<str> {
    match (&d.groups, &d.user) {
        (None, None) => "".into(),
        (Some(g), None) => g.as_str().into(),
        (None, Some(u)) => format!("user={u}").into(),
        (Some(g), Some(u)) => format!("{g} user={u}").into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    pub denied: u64,
    pub would_deny: u64,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
}

impl GroupStats {
    pub fn total(&self) -> u64 {
        self.denied + self.would_deny
    }
}

/// Line and decision counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub decisions: u64,
    pub allowed: u64,
    pub denied: u64,
    pub would_deny: u64,
    /// Lines that are not decision events (other events, operational logs, not JSON, too long).
    pub skipped: u64,
    /// Of `skipped`: lines that are not JSON objects (or too long to read).
    pub not_json: u64,
    /// Decision events with missing or unusable fields.
    pub invalid: u64,
    /// Decisions outside `--since` / `--until`.
    pub outside_window: u64,
    /// Decisions whose group could not be kept (`max_groups` reached): denied or would_deny ones in the
    /// summary, disagreements in the shadow report.
    pub untracked: u64,
    /// The first and last decision in the window.
    pub first: Option<OffsetDateTime>,
    pub last: Option<OffsetDateTime>,
}

impl Counts {
    /// Count one line, and give its decision back when it is one that falls inside `window`.
    pub fn tally<'a>(&mut self, line: Line<'a>, window: &Window) -> Option<Decision<'a>> {
        self.lines += 1;
        match line {
            Line::Decision(d) if !window.contains(d.ts) => {
                self.outside_window += 1;
                None
            }
            Line::Decision(d) => {
                self.decisions += 1;
                self.first = Some(self.first.map_or(d.ts, |f| f.min(d.ts)));
                self.last = Some(self.last.map_or(d.ts, |l| l.max(d.ts)));
                match d.verdict {
                    Verdict::Allow => self.allowed += 1,
                    Verdict::Deny => self.denied += 1,
                    Verdict::WouldDeny => self.would_deny += 1,
                }
                Some(d)
            }
            Line::OtherEvent => {
                self.skipped += 1;
                None
            }
            Line::NotJson => {
                self.skipped += 1;
                self.not_json += 1;
                None
            }
            Line::InvalidDecision => {
                self.invalid += 1;
                None
            }
        }
    }

    /// Count one line that was too long to be read at all.
    pub fn overlong(&mut self) {
        self.lines += 1;
        self.skipped += 1;
        self.not_json += 1;
    }
}

/// The entry of `key` in `groups`, made with `new` while fewer than `max` groups are kept; past that a key not
/// kept yet is only counted in `untracked`.
pub fn bounded_entry<'m, K: Eq + std::hash::Hash, V>(
    groups: &'m mut HashMap<K, V>,
    key: K,
    max: usize,
    untracked: &mut u64,
    new: impl FnOnce() -> V,
) -> Option<&'m mut V> {
    if groups.len() >= max && !groups.contains_key(&key) {
        *untracked += 1;
        return None;
    }
    Some(groups.entry(key).or_insert_with(new))
}

/// What a log is read into: every line is counted, decisions in the window are aggregated.
pub trait Tally {
    fn counts(&self) -> &Counts;
    fn counts_mut(&mut self) -> &mut Counts;
    /// The time range decisions must fall in.
    fn window(&self) -> Window;
    /// Aggregate one decision from inside the window.
    fn add_decision(&mut self, d: Decision<'_>);

    fn add(&mut self, line: Line<'_>) {
        let window = self.window();
        if let Some(d) = self.counts_mut().tally(line, &window) {
            self.add_decision(d);
        }
    }

    fn add_overlong(&mut self) {
        self.counts_mut().overlong()
    }
}

pub struct Summary {
    window: Window,
    view: View,
    max_groups: usize,
    groups: HashMap<GroupKey, GroupStats>,
    pub counts: Counts,
}

impl Summary {
    pub fn new(window: Window, max_groups: usize, view: View) -> Self {
        Summary {
            window,
            view,
            max_groups,
            groups: HashMap::new(),
            counts: Counts::default(),
        }
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn max_groups(&self) -> usize {
        self.max_groups
    }

    /// Every kept group, most decisions first (ties in key order, so output is stable).
    pub fn groups(&self) -> Vec<(&GroupKey, &GroupStats)> {
        let mut v: Vec<_> = self.groups.iter().collect();
        v.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(b.0)));
        v
    }
}

impl Tally for Summary {
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
        if (d.verdict == Verdict::Allow) != self.view.allowed {
            return;
        }
        let key = GroupKey {
            identity: identity(&d),
            reason: if self.view.allowed {
                d.rule.as_deref().unwrap_or("-").into()
            } else {
                d.reason.as_ref().into()
            },
            host: d.host.map(|h| h.into()),
            port: d.port,
            client: if self.view.by_group { None } else { d.client },
        };
        let new = || GroupStats {
            denied: 0,
            would_deny: 0,
            first_seen: d.ts,
            last_seen: d.ts,
        };
        let untracked = &mut self.counts.untracked;
        let Some(stats) = bounded_entry(&mut self.groups, key, self.max_groups, untracked, new)
        else {
            return;
        };
        match d.verdict {
            Verdict::WouldDeny => stats.would_deny += 1,
            _ => stats.denied += 1,
        }
        stats.first_seen = stats.first_seen.min(d.ts);
        stats.last_seen = stats.last_seen.max(d.ts);
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::classify;
    use super::*;

    fn line(ts: &str, decision: &str, host: &str, client: &str, reason: &str) -> String {
        format!(
            r#"{{"ts":"{ts}","event":"decision","client_addr":"{client}:4000","host":"{host}","port":443,"decision":"{decision}","reason":"{reason}"}}"#
        )
    }

    fn feed(s: &mut Summary, lines: &[String]) {
        for l in lines {
            s.add(classify(l.as_bytes()));
        }
    }

    #[test]
    fn groups_count_and_track_first_and_last_seen() {
        let mut s = Summary::new(Window::default(), 100, View::default());
        #[rustfmt::skip]
        let decisions = [
            ("2026-11-29T10:00:00Z", "deny", "a.example", "10.0.0.1", "denied_no_rule"),
            ("2026-11-29T09:00:00Z", "deny", "a.example", "10.0.0.1", "denied_no_rule"),
            ("2026-11-29T11:00:00Z", "would_deny", "a.example", "10.0.0.1", "denied_no_rule"),
            ("2026-11-29T11:00:00Z", "deny", "a.example", "10.0.0.2", "denied_no_rule"),
            ("2026-11-29T11:00:00Z", "allow", "b.example", "10.0.0.2", "allowed"),
        ];
        let mut lines: Vec<String> = decisions
            .iter()
            .map(|&(ts, d, host, client, reason)| line(ts, d, host, client, reason))
            .collect();
        lines.extend(
            ["garbage", r#"{"event":"close"}"#, r#"{"event":"decision"}"#].map(String::from),
        );
        feed(&mut s, &lines);
        let c = s.counts;
        assert_eq!(
            (c.lines, c.decisions, c.allowed, c.denied, c.would_deny),
            (8, 5, 1, 3, 1)
        );
        assert_eq!(
            (c.skipped, c.not_json, c.invalid, c.untracked),
            (2, 1, 1, 0)
        );
        let g = s.groups();
        assert_eq!(g.len(), 2);
        let (k, st) = g[0];
        assert_eq!(
            (k.destination(), k.client(), &*k.reason),
            ("a.example:443".into(), "10.0.0.1".into(), "denied_no_rule")
        );
        assert_eq!((st.denied, st.would_deny), (2, 1));
        assert_eq!(
            super::super::window::rfc3339(st.first_seen),
            "2026-11-29T09:00:00Z"
        );
        assert_eq!(
            super::super::window::rfc3339(st.last_seen),
            "2026-11-29T11:00:00Z"
        );
        assert_eq!(g[1].0.client(), "10.0.0.2");
    }

    #[test]
    fn groups_beyond_the_limit_are_counted_not_kept() {
        let mut s = Summary::new(Window::default(), 2, View::default());
        let deny = |host: &str| {
            line(
                "2026-11-29T10:00:00Z",
                "deny",
                host,
                "10.0.0.1",
                "denied_no_rule",
            )
        };
        let mut lines: Vec<String> = (0..5).map(|i| deny(&format!("h{i}.example"))).collect();
        lines.push(deny("h0.example"));
        feed(&mut s, &lines);
        assert_eq!(s.groups().len(), 2);
        assert_eq!(s.counts.untracked, 3);
        // Known groups keep counting after the limit is reached.
        assert_eq!(s.groups()[0].1.denied, 2);
    }

    #[test]
    fn window_filters_decisions() {
        let w = Window {
            since: Some(
                OffsetDateTime::parse(
                    "2026-11-29T10:00:00Z",
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap(),
            ),
            until: None,
        };
        let mut s = Summary::new(w, 10, View::default());
        let early = line(
            "2026-11-29T09:59:59Z",
            "deny",
            "a.example",
            "10.0.0.1",
            "denied_no_rule",
        );
        let on_time = line(
            "2026-11-29T10:00:00Z",
            "deny",
            "a.example",
            "10.0.0.1",
            "denied_no_rule",
        );
        feed(&mut s, &[early, on_time]);
        assert_eq!((s.counts.outside_window, s.counts.denied), (1, 1));
    }

    #[test]
    fn destinations_render_like_authorities() {
        let k = |host: Option<&str>, port| GroupKey {
            identity: "".into(),
            host: host.map(Into::into),
            port,
            client: None,
            reason: "x".into(),
        };
        assert_eq!(
            k(Some("2001:db8::1"), Some(443)).destination(),
            "[2001:db8::1]:443"
        );
        assert_eq!(k(Some("a.example"), None).destination(), "a.example");
        assert_eq!(k(None, Some(443)).destination(), "-");
        assert_eq!(k(None, None).client(), "-");
    }

    #[test]
    fn views_by_group_and_of_allowed_decisions() {
        let with = |l: String, extra: &str| l.replacen('{', &format!("{{{extra},"), 1);
        let lines = vec![
            with(
                line(
                    "2026-11-29T10:00:00Z",
                    "deny",
                    "x.example",
                    "10.0.0.1",
                    "denied_no_rule",
                ),
                r#""client":["castai"]"#,
            ),
            with(
                line(
                    "2026-11-29T10:00:01Z",
                    "deny",
                    "x.example",
                    "10.0.0.2",
                    "denied_no_rule",
                ),
                r#""client":["castai"],"user":"bot""#,
            ),
            with(
                line(
                    "2026-11-29T10:00:02Z",
                    "deny",
                    "x.example",
                    "10.0.0.3",
                    "denied_no_rule",
                ),
                r#""client":["castai"]"#,
            ),
            with(
                line(
                    "2026-11-29T10:00:03Z",
                    "allow",
                    "api.cast.ai",
                    "10.0.0.1",
                    "allowed",
                ),
                r#""client":["castai"],"rule":"castai-us/api""#,
            ),
            with(
                line(
                    "2026-11-29T10:00:04Z",
                    "allow",
                    "api.cast.ai",
                    "10.0.0.2",
                    "allowed",
                ),
                r#""client":["castai"],"rule":"castai-us/api""#,
            ),
        ];
        let mut by_client = Summary::new(Window::default(), 100, View::default());
        feed(&mut by_client, &lines);
        assert_eq!(by_client.groups().len(), 3);
        let mut by_group = Summary::new(
            Window::default(),
            100,
            View {
                by_group: true,
                allowed: false,
            },
        );
        feed(&mut by_group, &lines);
        let g = by_group.groups();
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!((g[0].0.identity(), g[0].1.denied), ("castai", 2));
        assert_eq!((g[1].0.identity(), g[1].1.denied), ("castai user=bot", 1));
        assert!(g.iter().all(|(k, _)| k.client.is_none()));
        let mut allowed = Summary::new(
            Window::default(),
            100,
            View {
                by_group: true,
                allowed: true,
            },
        );
        feed(&mut allowed, &lines);
        let g = allowed.groups();
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!((&*g[0].0.reason, g[0].1.denied), ("castai-us/api", 2));
        assert_eq!(
            allowed.counts.denied, 3,
            "totals still count every decision"
        );
    }
}
