//! `egressd_rule_last_match_timestamp_seconds{rule}`: when each allow rule of the configuration in force last
//! let a request through, so a dashboard shows stale rules without reading logs.
//!
//! Kept apart from the Prometheus recorder because a reload must drop the series of removed rules, and the
//! recorder cannot remove a series. The rule set is the configuration's (bounded by it); a decision naming any
//! other rule (a connection still served by the previous configuration) is not recorded. A rule that has not
//! matched since the process started, or since a reload added it, is exported as 0.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const RULE_LAST_MATCH: &str = "egressd_rule_last_match_timestamp_seconds";

/// The rules in configuration order with the Unix time (whole seconds) of their last match, 0 for never, and
/// an index by name.
#[derive(Default)]
struct Table {
    order: Vec<(Arc<str>, Arc<AtomicU64>)>,
    by_name: HashMap<Arc<str>, Arc<AtomicU64>>,
}

#[derive(Default)]
pub struct LastMatch {
    table: ArcSwap<Table>,
}

impl LastMatch {
    /// Put a configuration's allow rules in force: rules it keeps keep their time, new ones start at 0,
    /// removed ones are no longer exported.
    pub fn configure<'a>(&self, names: impl IntoIterator<Item = &'a Arc<str>>) {
        let old = self.table.load();
        let mut new = Table::default();
        for name in names {
            if new.by_name.contains_key(name) {
                continue;
            }
            let at = old.by_name.get(name).cloned().unwrap_or_default();
            new.by_name.insert(name.clone(), at.clone());
            new.order.push((name.clone(), at));
        }
        self.table.store(Arc::new(new));
    }

    /// `rule` let a request through at `unix_secs`.
    pub fn matched(&self, rule: &str, unix_secs: u64) {
        if let Some(at) = self.table.load().by_name.get(rule) {
            at.fetch_max(unix_secs, Ordering::Relaxed);
        }
    }

    /// The family in Prometheus text format (nothing when no allow rule is configured).
    pub fn render(&self) -> String {
        let table = self.table.load();
        let mut out = String::new();
        if table.order.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "# HELP {RULE_LAST_MATCH} Unix time an allow rule last let a request through (0: not since start or reload)"
        );
        let _ = writeln!(out, "# TYPE {RULE_LAST_MATCH} gauge");
        for (name, at) in &table.order {
            let _ = writeln!(
                out,
                "{RULE_LAST_MATCH}{{rule=\"{}\"}} {}",
                escape(name),
                at.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn a_reload_keeps_kept_rules_and_drops_removed_ones() {
        let m = LastMatch::default();
        assert_eq!(m.render(), "");
        m.configure(&names(&["a", "b", "a"]));
        m.matched("a", 1_800_000_000);
        m.matched("a", 1_700_000_000); // an older decision written late does not move it back
        m.matched("unknown", 1_800_000_000);
        assert_eq!(
            m.render(),
            "# HELP egressd_rule_last_match_timestamp_seconds Unix time an allow rule last let a request \
             through (0: not since start or reload)\n\
             # TYPE egressd_rule_last_match_timestamp_seconds gauge\n\
             egressd_rule_last_match_timestamp_seconds{rule=\"a\"} 1800000000\n\
             egressd_rule_last_match_timestamp_seconds{rule=\"b\"} 0\n"
        );
        m.configure(&names(&["c", "a"]));
        let text = m.render();
        assert!(text.contains("{rule=\"a\"} 1800000000\n"), "{text}");
        assert!(text.contains("{rule=\"c\"} 0\n"), "{text}");
        assert!(!text.contains("rule=\"b\""), "{text}");
        m.matched("b", 1_900_000_000);
        assert!(!m.render().contains("rule=\"b\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = LastMatch::default();
        m.configure(&names(&["we\"ird\\name\n"]));
        assert!(m.render().contains(r#"{rule="we\"ird\\name\n"} 0"#));
    }
}
