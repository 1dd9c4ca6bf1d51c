//! The summary as a table for people, JSON for programs, or Markdown for tickets and chat.

use super::summary::{Counts, GroupKey, GroupStats, View};
use super::window::{rfc3339, Window};
use comfy_table::{presets, CellAlignment, Table};
use serde_json::json;

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
        if self.top == 0 || self.top >= self.groups.len() {
            self.groups
        } else {
            &self.groups[..self.top]
        }
    }

    fn not_shown(&self) -> usize {
        self.groups.len() - self.shown().len()
    }
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
    while out.ends_with("\n\n") {
        out.pop();
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

fn notes_after(r: &Report<'_>) -> Vec<String> {
    let mut v = Vec::new();
    let hidden = r.not_shown();
    if hidden > 0 {
        v.push(format!(
            "{hidden} more groups not shown (--top {}; --top 0 shows all)",
            r.top
        ));
    }
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
    let v = json!({
        "source": r.source,
        "since": r.window.since.map(rfc3339),
        "until": r.window.until.map(rfc3339),
        "lines": c.lines,
        "decisions": c.decisions,
        "allowed": c.allowed,
        "denied": c.denied,
        "would_deny": c.would_deny,
        "skipped_lines": c.skipped,
        "not_json_lines": c.not_json,
        "invalid_decisions": c.invalid,
        "outside_window": c.outside_window,
        "groups_total": r.groups.len(),
        "groups_not_shown": r.not_shown(),
        "untracked_decisions": c.untracked,
        "max_groups": r.max_groups,
        "groups": groups,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}
