//! The `--shadow` report as a table, JSON or Markdown: how many decisions the candidate policy disagreed with,
//! then, for each direction, how many and one row per group of disagreements, most first.

use super::event::Verdict;
use super::render::{
    clients_cap_note, end, grid, json_text, not_shown_note, notes_before, printable, reason_text,
    seconds, span, top, Format,
};
use super::shadow::{Basis, Direction, Disagreements, ShadowKey, ShadowStats, MAX_CLIENTS};
use super::summary::Tally;
use serde_json::json;

const HEADER: [&str; 8] = [
    "destination",
    "live",
    "shadow",
    "decisions",
    "clients",
    "client groups",
    "first seen",
    "last seen",
];
const NUMERIC: [&str; 2] = ["decisions", "clients"];
/// Client group names shown in a table cell; JSON has every name kept.
const SHOWN_GROUP_NAMES: usize = 4;

/// Everything a rendering needs.
pub struct ShadowReport<'a> {
    pub source: &'a str,
    pub tally: &'a Disagreements,
    /// Every kept group, by direction, then most disagreements first ([`Disagreements::groups`]).
    pub groups: &'a [(&'a ShadowKey, &'a ShadowStats)],
    /// How many groups of each direction to show; 0 shows all.
    pub top: usize,
}

impl ShadowReport<'_> {
    /// The kept groups of one direction.
    fn of(&self, d: Direction) -> &[(&ShadowKey, &ShadowStats)] {
        let start = (self.groups).partition_point(|(k, _)| k.direction() < d);
        let end = (self.groups).partition_point(|(k, _)| k.direction() <= d);
        &self.groups[start..end]
    }

    fn shown(&self, d: Direction) -> &[(&ShadowKey, &ShadowStats)] {
        top(self.of(d), self.top)
    }

    /// The shown groups of every direction, in order.
    fn all_shown(&self) -> impl Iterator<Item = &(&ShadowKey, &ShadowStats)> {
        (Direction::ALL.iter()).flat_map(|&d| self.shown(d))
    }

    fn not_shown(&self) -> usize {
        self.groups.len() - self.all_shown().count()
    }
}

pub fn render(r: &ShadowReport<'_>, format: Format) -> String {
    match format {
        Format::Json => json_report(r),
        Format::Table => text(r, false),
        Format::Markdown => text(r, true),
    }
}

/// One side's decision: `allow, rule old`, `deny, denied_no_rule`, `deny, denied_port, rule web` (the reason
/// is left out only where it says no more than the verdict: `allowed` by a rule).
fn side(verdict: Verdict, b: &Basis) -> String {
    let mut cell = verdict.as_str().to_string();
    if &*b.reason != "allowed" || b.rule.is_none() {
        cell.push_str(", ");
        cell.push_str(&reason_text(&b.reason));
    }
    if let Some(rule) = &b.rule {
        cell.push_str(", rule ");
        cell.push_str(&printable(rule));
    }
    cell
}

/// Up to [`SHOWN_GROUP_NAMES`] names, then how many more; `-` for none.
fn group_cell(s: &ShadowStats) -> String {
    let names = s.groups.sorted();
    if names.is_empty() {
        return "-".to_string();
    }
    let mut cell = (names.iter().take(SHOWN_GROUP_NAMES))
        .map(|n| printable(n))
        .collect::<Vec<_>>()
        .join(",");
    let rest = names.len().saturating_sub(SHOWN_GROUP_NAMES);
    if s.groups.more() {
        cell.push_str(&format!(" +>{rest} more"));
    } else if rest > 0 {
        cell.push_str(&format!(" +{rest} more"));
    }
    cell
}

fn row(k: &ShadowKey, s: &ShadowStats) -> Vec<String> {
    vec![
        printable(&k.destination()),
        side(k.live, &k.live_by),
        side(k.shadow, &k.shadow_by),
        s.decisions.to_string(),
        s.clients.show(),
        group_cell(s),
        seconds(s.first_seen),
        seconds(s.last_seen),
    ]
}

/// How many decisions disagreed, and what could not be read: the lines before the directions.
fn summary_lines(t: &Disagreements) -> Vec<String> {
    let c = &t.counts;
    let span = span(c);
    let d = t.by_direction;
    let mut v = Vec::new();
    if c.decisions == 0 {
        v.push("no decisions in the window".to_string());
    } else if d.total() == 0 {
        v.push(format!(
            "{span}the candidate agrees with every decision in the window"
        ));
    } else {
        v.push(format!(
            "{span}the candidate disagrees with {} of {} decisions",
            d.total(),
            c.decisions
        ));
    }
    if t.unreadable > 0 {
        v.push(format!(
            "skipped the shadow fields of {} decisions: unreadable (shadow_decision, shadow_reason)",
            t.unreadable
        ));
    }
    v
}

/// The line over a direction's rows.
fn heading(d: Direction, n: u64) -> String {
    match d {
        Direction::NewlyRefused => format!(
            "would newly refuse: {n} (live allow, candidate deny or would_deny): clients that rely on them break \
             when the candidate is promoted"
        ),
        Direction::NewlyAllowed => format!(
            "would newly allow: {n} (live deny or would_deny, candidate allow): the policy opens when the \
             candidate is promoted"
        ),
        Direction::Enforcement => format!(
            "deny against would_deny: {n} (refused either way, enforced on one side only: report mode)"
        ),
    }
}

/// The directions a report has a section for: both ways whenever anything disagreed (a 0 is news too), and
/// `deny` against `would_deny` when it happened.
fn sections(t: &Disagreements) -> impl Iterator<Item = (Direction, u64)> + '_ {
    let d = t.by_direction;
    (Direction::ALL.into_iter())
        .map(move |dir| (dir, d.get(dir)))
        .filter(move |&(dir, n)| d.total() > 0 && (n > 0 || dir != Direction::Enforcement))
}

fn text(r: &ShadowReport<'_>, markdown: bool) -> String {
    let t = r.tally;
    let sep = if markdown { "\n\n" } else { "\n" };
    let mut out = String::new();
    if markdown {
        out.push_str("## Shadow policy disagreements\n\n");
    }
    let mut notes = notes_before(r.source, t.window(), &t.counts);
    notes.extend(summary_lines(t));
    for n in notes {
        out.push_str(&n);
        out.push_str(sep);
    }
    for (d, n) in sections(t) {
        out.push_str(if markdown { "" } else { "\n" });
        out.push_str(&heading(d, n));
        out.push_str(sep);
        let shown = r.shown(d);
        if !shown.is_empty() {
            let rows = shown.iter().map(|(k, s)| row(k, s)).collect();
            out.push_str(&grid(&HEADER, rows, &NUMERIC, markdown));
            out.push_str(sep);
        }
    }
    if !markdown {
        out.push('\n');
    }
    if let Some(note) = not_shown_note(r.not_shown(), r.top) {
        out.push_str(&note);
        out.push_str(sep);
    }
    if t.counts.untracked > 0 {
        out.push_str(&format!(
            "{} more disagreements belong to groups not shown: only the first {} distinct (verdicts, \
             destination, reasons and rules) groups are kept (--max-groups)",
            t.counts.untracked,
            t.max_groups()
        ));
        out.push_str(sep);
    }
    if r.all_shown().any(|(_, s)| s.clients.more()) {
        out.push_str(&clients_cap_note(MAX_CLIENTS, "group"));
        out.push_str(sep);
    }
    end(out)
}

fn json_report(r: &ShadowReport<'_>) -> String {
    let t = r.tally;
    let c = &t.counts;
    let d = t.by_direction;
    let groups: Vec<_> = r
        .all_shown()
        .map(|(k, s)| {
            json!({
                "direction": k.direction().as_str(),
                "live": k.live.as_str(),
                "shadow": k.shadow.as_str(),
                "destination": k.destination(),
                "host": k.host.as_deref(),
                "port": k.port,
                "live_rule": k.live_by.rule.as_deref(),
                "live_reason": &*k.live_by.reason,
                "shadow_rule": k.shadow_by.rule.as_deref(),
                "shadow_reason": &*k.shadow_by.reason,
                "decisions": s.decisions,
                "clients": s.clients.count(),
                "clients_more": s.clients.more(),
                "client_groups": s.groups.sorted(),
                "client_groups_more": s.groups.more(),
                "first_seen": seconds(s.first_seen),
                "last_seen": seconds(s.last_seen),
            })
        })
        .collect();
    let rest = json!({
        "first_decision": c.first.map(seconds),
        "last_decision": c.last.map(seconds),
        "disagreements": d.total(),
        "would_newly_refuse": d.newly_refused,
        "would_newly_allow": d.newly_allowed,
        "enforcement_only": d.enforcement,
        "unreadable_shadow_fields": t.unreadable,
        "groups_total": r.groups.len(),
        "groups_not_shown": r.not_shown(),
        "untracked_disagreements": c.untracked,
        "max_groups": t.max_groups(),
        "max_clients_per_group": MAX_CLIENTS,
        "groups": groups,
    });
    json_text(r.source, t.window(), c, rest)
}

#[cfg(test)]
mod tests {
    use super::super::event::classify;
    use super::super::shadow::test_line as line;
    use super::super::summary::Tally;
    use super::super::window::Window;
    use super::*;

    const OLD: (&str, &str, Option<&str>) = ("allow", "allowed", Some("old"));
    const NO_RULE: (&str, &str, Option<&str>) = ("deny", "denied_no_rule", None);
    const NEW: (&str, &str, Option<&str>) = ("allow", "allowed", Some("new"));

    fn tally(lines: &[String]) -> Disagreements {
        let mut t = Disagreements::new(Window::default(), 100);
        for l in lines {
            t.add(classify(l.as_bytes()));
        }
        t
    }

    fn report(t: &Disagreements, top: usize, format: Format) -> String {
        let groups = t.groups();
        render(
            &ShadowReport {
                source: "x.log",
                tally: t,
                groups: &groups,
                top,
            },
            format,
        )
    }

    /// The table row of `destination`, its cells' padding squeezed to one space.
    fn squeezed_row(out: &str, destination: &str) -> String {
        out.lines()
            .find(|l| l.starts_with(destination))
            .unwrap_or_else(|| panic!("no row for {destination}:\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn sample() -> Disagreements {
        #[rustfmt::skip]
        let lines = [
            line("2026-11-29T10:00:00.7Z", "10.0.0.1", "b.example", OLD, Some(NO_RULE), &["agents"]),
            line("2026-11-29T10:05:00Z", "10.0.0.2", "b.example", OLD, Some(NO_RULE), &["agents", "ci"]),
            line("2026-11-29T10:06:00Z", "10.0.0.2", "c.example", NO_RULE, Some(NEW), &[]),
            line("2026-11-29T10:07:00Z", "10.0.0.2", "a.example", OLD, None, &[]),
            line("2026-11-29T10:08:00Z", "10.0.0.3", "d.example", OLD, Some(("deny", "denied_by_rule", Some("guard"))), &[]),
        ];
        tally(&lines)
    }

    #[test]
    fn the_table_gives_each_direction_with_its_rows() {
        let t = sample();
        let out = report(&t, 50, Format::Table);
        assert!(
            out.contains("decisions from 2026-11-29T10:00:00Z to 2026-11-29T10:08:00Z; the candidate disagrees with 4 of 5 decisions\n"),
            "{out}"
        );
        assert!(!out.contains("deny against would_deny"), "{out}");
        // Each direction: its line, the header, its rows, most disagreements first.
        let body: Vec<String> = out
            .lines()
            .skip_while(|l| !l.starts_with("would newly"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let header = "DESTINATION LIVE SHADOW DECISIONS CLIENTS CLIENT GROUPS FIRST SEEN LAST SEEN";
        assert_eq!(
            body,
            [
                "would newly refuse: 3 (live allow, candidate deny or would_deny): clients that rely on them break \
                 when the candidate is promoted",
                header,
                "b.example:443 allow, rule old deny, denied_no_rule 2 2 agents,ci 2026-11-29T10:00:00Z \
                 2026-11-29T10:05:00Z",
                "d.example:443 allow, rule old deny, denied_by_rule, rule guard 1 1 - 2026-11-29T10:08:00Z \
                 2026-11-29T10:08:00Z",
                "",
                "would newly allow: 1 (live deny or would_deny, candidate allow): the policy opens when the \
                 candidate is promoted",
                header,
                "c.example:443 deny, denied_no_rule allow, rule new 1 1 - 2026-11-29T10:06:00Z 2026-11-29T10:06:00Z",
            ],
            "{out}"
        );

        // --top counts the rows of each direction: the newly allowed row stays.
        let top = report(&t, 1, Format::Table);
        assert!(top.contains("1 more groups not shown (--top 1"), "{top}");
        assert!(!top.contains("d.example"), "{top}");
        assert!(top.contains("\nc.example:443 "), "{top}");
        let md = report(&t, 50, Format::Markdown);
        assert!(md.starts_with("## Shadow policy disagreements\n\n"), "{md}");
        assert!(
            md.contains("\n\nwould newly allow: 1 (live deny or would_deny, candidate allow): the policy opens when the candidate is promoted\n\n| destination "),
            "{md}"
        );
        assert!(
            md.lines()
                .any(|l| l.starts_with("| b.example:443") && l.contains("| allow, rule old")),
            "{md}"
        );
    }

    #[test]
    fn json_has_the_counts_and_every_shown_group() {
        let t = sample();
        let v: serde_json::Value = serde_json::from_str(&report(&t, 50, Format::Json)).unwrap();
        assert_eq!(
            (
                &v["decisions"],
                &v["disagreements"],
                &v["would_newly_refuse"],
                &v["would_newly_allow"],
                &v["enforcement_only"]
            ),
            (&json!(5), &json!(4), &json!(3), &json!(1), &json!(0))
        );
        assert_eq!(
            (&v["first_decision"], &v["last_decision"]),
            (
                &json!("2026-11-29T10:00:00Z"),
                &json!("2026-11-29T10:08:00Z")
            )
        );
        let g = &v["groups"][0];
        assert_eq!(g["direction"], "would_newly_refuse");
        assert_eq!(
            (&g["live"], &g["shadow"]),
            (&json!("allow"), &json!("deny"))
        );
        assert_eq!(
            (&g["live_rule"], &g["live_reason"]),
            (&json!("old"), &json!("allowed"))
        );
        assert_eq!(
            (&g["shadow_rule"], &g["shadow_reason"]),
            (&json!(null), &json!("denied_no_rule"))
        );
        assert_eq!(g["client_groups"], json!(["agents", "ci"]));
        assert_eq!((&g["decisions"], &g["clients"]), (&json!(2), &json!(2)));
        let hosts = |v: &serde_json::Value| {
            (v["groups"].as_array().unwrap().iter())
                .map(|g| format!("{} {}", g["direction"], g["host"]))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hosts(&v),
            [
                r#""would_newly_refuse" "b.example""#,
                r#""would_newly_refuse" "d.example""#,
                r#""would_newly_allow" "c.example""#
            ]
        );
        let top: serde_json::Value = serde_json::from_str(&report(&t, 1, Format::Json)).unwrap();
        assert_eq!(
            hosts(&top),
            [
                r#""would_newly_refuse" "b.example""#,
                r#""would_newly_allow" "c.example""#
            ]
        );
        assert_eq!(
            (&top["groups_total"], &top["groups_not_shown"]),
            (&json!(3), &json!(1))
        );
    }

    #[test]
    fn agreement_is_a_report_not_an_error() {
        let t = tally(&[line(
            "2026-11-29T10:00:00Z",
            "10.0.0.1",
            "a.example",
            OLD,
            None,
            &[],
        )]);
        let out = report(&t, 50, Format::Table);
        assert!(
            out.contains("the candidate agrees with every decision in the window"),
            "{out}"
        );
        assert!(!out.contains("DESTINATION"), "{out}");
        assert!(!out.contains("would newly"), "{out}");
    }

    #[test]
    fn crafted_values_cannot_pose_as_codes_or_break_rows() {
        let t = tally(&[line(
            "2026-11-29T10:00:00Z",
            "10.0.0.1",
            "b.example",
            ("allow", "allowed", Some("old\nrule")),
            Some(("deny", "denied_\u{1b}[31m", None)),
            &["a|b", "c d"],
        )]);
        let out = report(&t, 50, Format::Table);
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(out.contains(r#"rule "old\nrule""#), "{out}");
        assert!(
            out.contains(r#"unknown reason "denied_\u{1b}[31m""#),
            "{out}"
        );
        assert!(out.contains(r#"a|b,"c d""#), "{out}");
        let md = report(&t, 50, Format::Markdown);
        assert!(md.contains(r"a\|b"), "{md}");
    }

    #[test]
    fn refusals_show_their_reason_and_rule_and_the_notes_what_was_set_aside() {
        let mut unreadable: serde_json::Value = serde_json::from_str(&line(
            "2026-11-29T10:03:00Z",
            "10.0.0.1",
            "a.example",
            OLD,
            None,
            &[],
        ))
        .unwrap();
        unreadable["shadow_decision"] = "maybe".into();
        let t = tally(&[
            line(
                "2026-11-29T10:00:00Z",
                "10.0.0.1",
                "b.example",
                OLD,
                Some(("deny", "denied_port", Some("web"))),
                &[],
            ),
            line(
                "2026-11-29T10:01:00Z",
                "10.0.0.1",
                "c.example",
                ("would_deny", "denied_path", Some("docs")),
                Some(("deny", "denied_by_rule", Some("guard"))),
                &[],
            ),
            unreadable.to_string(),
        ]);
        let out = report(&t, 50, Format::Table);
        let row = |host: &str| squeezed_row(&out, host);
        assert!(
            row("b.example:443").contains("allow, rule old deny, denied_port, rule web"),
            "{out}"
        );
        assert!(
            row("c.example:443")
                .contains("would_deny, denied_path, rule docs deny, denied_by_rule, rule guard"),
            "{out}"
        );
        assert!(
            out.contains("the candidate disagrees with 2 of 3 decisions\n"),
            "{out}"
        );
        assert!(out.contains("would newly refuse: 1 (live allow"), "{out}");
        assert!(out.contains("would newly allow: 0 (live deny"), "{out}");
        assert!(
            out.contains("deny against would_deny: 1 (refused either way"),
            "{out}"
        );
        assert!(
            out.contains("skipped the shadow fields of 1 decisions: unreadable"),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(&report(&t, 50, Format::Json)).unwrap();
        assert_eq!(
            (&v["enforcement_only"], &v["unreadable_shadow_fields"]),
            (&json!(1), &json!(1))
        );
        let g = &v["groups"][0];
        assert_eq!(
            (&g["shadow_reason"], &g["shadow_rule"]),
            (&json!("denied_port"), &json!("web"))
        );
        assert_eq!(v["groups"][1]["direction"], "enforcement_only");
    }

    #[test]
    fn groups_past_the_limits_are_noted() {
        let mut t = Disagreements::new(Window::default(), 1);
        let lines: Vec<String> = (0..MAX_CLIENTS + 1)
            .map(|i| {
                line(
                    "2026-11-29T10:00:00Z",
                    &format!("10.0.{}.{}", i / 250, i % 250),
                    "b.example",
                    OLD,
                    Some(NO_RULE),
                    &[],
                )
            })
            .chain([line(
                "2026-11-29T10:00:00Z",
                "10.0.0.1",
                "c.example",
                NO_RULE,
                Some(NEW),
                &[],
            )])
            .collect();
        for l in &lines {
            t.add(classify(l.as_bytes()));
        }
        let out = report(&t, 50, Format::Table);
        assert!(
            squeezed_row(&out, "b.example:443").starts_with(&format!(
                "b.example:443 allow, rule old deny, denied_no_rule {} >{MAX_CLIENTS} -",
                MAX_CLIENTS + 1
            )),
            "{out}"
        );
        assert!(
            out.contains(
                "1 more disagreements belong to groups not shown: only the first 1 distinct"
            ),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "clients: distinct client addresses are counted exactly up to {MAX_CLIENTS} per group"
            )),
            "{out}"
        );
    }

    #[test]
    fn many_group_names_are_shortened_in_the_table() {
        let names: Vec<String> = (0..6).map(|i| format!("g{i}")).collect();
        let refs: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let t = tally(&[line(
            "2026-11-29T10:00:00Z",
            "10.0.0.1",
            "b.example",
            OLD,
            Some(NO_RULE),
            &refs,
        )]);
        let out = report(&t, 50, Format::Table);
        assert!(out.contains("g0,g1,g2,g3 +2 more"), "{out}");
    }
}
