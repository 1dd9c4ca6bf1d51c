//! The summary as a table for people, JSON for programs, or Markdown for tickets and chat.

use super::summary::{Counts, GroupKey, GroupStats, View};
use super::window::{rfc3339, Window};
use comfy_table::{presets, CellAlignment, Table};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

/// Everything a rendering needs.
pub struct Report<'a> {
    pub source: &'a str,
    pub window: Window,
    pub counts: Counts,
    pub max_groups: usize,
    /// Every kept group, most decisions first.
    pub groups: &'a [(&'a GroupKey, &'a GroupStats)],
    /// How many groups to show; 0 shows all.
    pub top: usize,
    pub view: View,
}

impl Report<'_> {
    fn shown(&self) -> &[(&GroupKey, &GroupStats)] {
        top(self.groups, self.top)
    }

    fn not_shown(&self) -> usize {
        self.groups.len() - self.shown().len()
    }
}

/// The first `n` of `groups`; all of them for 0.
pub(super) fn top<T>(groups: &[T], n: usize) -> &[T] {
    &groups[..if n == 0 {
        groups.len()
    } else {
        n.min(groups.len())
    }]
}

pub fn render(r: &Report<'_>, format: Format) -> String {
    match format {
        Format::Json => json(r),
        Format::Table => text(r, false),
        Format::Markdown => text(r, true),
    }
}

/// The columns of a view: refusals by client address (the default), by client group, or what was allowed.
fn header(view: View) -> Vec<&'static str> {
    let mut h = vec!["destination"];
    if !view.by_group {
        h.push("client");
    }
    h.push("client group");
    if view.allowed {
        h.extend(["rule", "allowed"]);
    } else {
        h.extend(["reason", "denied", "would_deny"]);
    }
    h.extend(["first seen", "last seen"]);
    h
}

fn row(view: View, k: &GroupKey, s: &GroupStats) -> Vec<String> {
    let mut cells = vec![printable(&k.destination())];
    if !view.by_group {
        cells.push(k.client());
    }
    cells.push(printable(k.identity()));
    if view.allowed {
        cells.extend([printable(&k.reason), s.denied.to_string()]);
    } else {
        cells.extend([
            reason_text(&k.reason),
            s.denied.to_string(),
            s.would_deny.to_string(),
        ]);
    }
    cells.extend([seconds(s.first_seen), seconds(s.last_seen)]);
    cells
}

/// A time to the second, in UTC: what a reader compares by eye.
pub(super) fn seconds(t: time::OffsetDateTime) -> String {
    rfc3339(t.replace_nanosecond(0).unwrap_or(t))
}

fn text(r: &Report<'_>, markdown: bool) -> String {
    let mut out = String::new();
    if markdown {
        out.push_str(if r.view.allowed {
            "## Allowed connections\n\n"
        } else {
            "## Denied connections\n\n"
        });
    }
    // In Markdown each note is its own paragraph.
    let sep = if markdown { "\n\n" } else { "\n" };
    for line in notes_before(r.source, r.window, &r.counts) {
        out.push_str(&line);
        out.push_str(sep);
    }
    if r.groups.is_empty() {
        out.push_str(if r.view.allowed {
            "no allowed decisions"
        } else {
            "no denied or would_deny decisions"
        });
        out.push_str(sep);
    } else {
        if !markdown {
            out.push('\n');
        }
        let rows = r.shown().iter().map(|(k, s)| row(r.view, k, s)).collect();
        out.push_str(&grid(
            &header(r.view),
            rows,
            &["denied", "would_deny", "allowed"],
            markdown,
        ));
        out.push_str("\n\n");
    }
    for line in notes_after(r) {
        out.push_str(&line);
        out.push_str(sep);
    }
    end(out)
}

/// A text report as printed: one newline at the end, whatever the last paragraph left.
pub(super) fn end(mut out: String) -> String {
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// A table of `rows` under `header`: aligned plain text, or a Markdown table (cells escaped). Columns named in
/// `numeric` are right-aligned.
pub(super) fn grid(
    header: &[&str],
    rows: Vec<Vec<String>>,
    numeric: &[&str],
    markdown: bool,
) -> String {
    let mut t = Table::new();
    if markdown {
        t.load_style(presets::ASCII_MARKDOWN);
        t.set_header(header.to_vec());
    } else {
        t.load_style(presets::NOTHING);
        t.set_header(header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>());
    }
    for cells in rows {
        t.add_row(
            cells
                .into_iter()
                .map(|c| if markdown { escape_markdown(&c) } else { c })
                .collect::<Vec<_>>(),
        );
    }
    for (i, col) in t.column_iter_mut().enumerate() {
        if !markdown {
            col.set_padding((0, 2));
        }
        if header.get(i).is_some_and(|h| numeric.contains(h)) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.trim_fmt()
}

/// What was read: lines and decisions, the time window, what was skipped.
pub(super) fn notes_before(source: &str, window: Window, c: &Counts) -> Vec<String> {
    let mut v = vec![format!(
        "read {} lines from {}: {} decisions ({} allowed, {} denied, {} would_deny)",
        c.lines, source, c.decisions, c.allowed, c.denied, c.would_deny
    )];
    if !window.is_open() {
        v.push(format!(
            "time window {}: {} decisions outside it not counted",
            window.describe(),
            c.outside_window
        ));
    }
    if c.skipped > 0 {
        let not_json = if c.not_json > 0 {
            format!(" ({} not JSON)", c.not_json)
        } else {
            String::new()
        };
        v.push(format!(
            "skipped {} lines that are not decision events{not_json}",
            c.skipped
        ));
    }
    if c.invalid > 0 {
        v.push(format!(
            "skipped {} decision events with missing or invalid fields (ts, decision, reason, port)",
            c.invalid
        ));
    }
    v
}

/// `decisions from 2026-11-29T08:00:00Z to 2026-11-29T09:50:00Z; `, or nothing without decisions.
pub(super) fn span(c: &Counts) -> String {
    match (c.first, c.last) {
        (Some(f), Some(l)) => format!("decisions from {} to {}; ", seconds(f), seconds(l)),
        _ => String::new(),
    }
}

/// The note for rows cut by `--top`.
pub(super) fn not_shown_note(hidden: usize, top: usize) -> Option<String> {
    (hidden > 0).then(|| format!("{hidden} more groups not shown (--top {top}; --top 0 shows all)"))
}

/// The note for client counts past their cap (`>100`), per `row` (rule, group).
pub(super) fn clients_cap_note(cap: usize, row: &str) -> String {
    format!(
        "clients: distinct client addresses are counted exactly up to {cap} per {row}; >{cap} means more than \
         that"
    )
}

fn notes_after(r: &Report<'_>) -> Vec<String> {
    let mut v = Vec::new();
    v.extend(not_shown_note(r.not_shown(), r.top));
    if r.counts.untracked > 0 {
        v.push(format!(
            "{} more denied or would_deny decisions belong to groups not shown: only the first {} distinct \
             (destination, client, reason) groups are kept (--max-groups)",
            r.counts.untracked, r.max_groups
        ));
    }
    v
}

/// Pipes would end a Markdown table cell; hosts and reasons never hold one, but a hand-edited log might.
fn escape_markdown(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A log's `reason` for printing: one of egressd's reason codes as is, anything else (a hand-edited or crafted
/// line) marked as unknown and escaped, so it can neither pose as a real code nor carry a line break or a
/// terminal escape into a table, a Markdown cell or a YAML comment.
pub fn reason_text(reason: &str) -> String {
    if crate::reason::Reason::ALL
        .iter()
        .any(|r| r.as_str() == reason)
    {
        reason.to_string()
    } else {
        format!("unknown reason \"{}\"", reason.escape_default())
    }
}

/// `s` as is when it is printable ASCII, else quoted with escapes, so that a value read from a log can never
/// break a table row, a Markdown cell or a YAML comment.
pub fn printable(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_graphic()) {
        s.to_string()
    } else {
        format!("\"{}\"", s.escape_default())
    }
}

fn json(r: &Report<'_>) -> String {
    let c = &r.counts;
    let groups: Vec<_> = r
        .shown()
        .iter()
        .map(|(k, s)| {
            json!({
                "destination": k.destination(),
                "host": k.host.as_deref(),
                "port": k.port,
                "client": k.client.map(|c| c.to_string()),
                "client_group": (!k.identity.is_empty()).then_some(&*k.identity),
                "reason": (!r.view.allowed).then_some(&*k.reason),
                "rule": r.view.allowed.then_some(&*k.reason),
                "denied": (!r.view.allowed).then_some(s.denied),
                "would_deny": (!r.view.allowed).then_some(s.would_deny),
                "allowed": r.view.allowed.then_some(s.denied),
                "first_seen": seconds(s.first_seen),
                "last_seen": seconds(s.last_seen),
            })
        })
        .collect();
    json_text(
        r.source,
        r.window,
        c,
        json!({
            "groups_total": r.groups.len(),
            "groups_not_shown": r.not_shown(),
            "untracked_decisions": c.untracked,
            "max_groups": r.max_groups,
            "groups": groups,
        }),
    )
}

/// A JSON report as printed: what was read (`source`, the window, the line and decision counts), then the
/// fields of `rest`, an object.
pub(super) fn json_text(source: &str, window: Window, c: &Counts, rest: Value) -> String {
    let mut v = json!({
        "source": source,
        "since": window.since.map(rfc3339),
        "until": window.until.map(rfc3339),
        "lines": c.lines,
        "decisions": c.decisions,
        "allowed": c.allowed,
        "denied": c.denied,
        "would_deny": c.would_deny,
        "skipped_lines": c.skipped,
        "not_json_lines": c.not_json,
        "invalid_decisions": c.invalid,
        "outside_window": c.outside_window,
    });
    if let (Some(all), Value::Object(rest)) = (v.as_object_mut(), rest) {
        all.extend(rest);
    }
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}
