//! What the refusals behind one suggested rule or profile add up to: ports, hosts, clients, reasons, counts and
//! when, for the comment above the suggestion.

use super::render::reason_text;
use super::summary::{GroupKey, GroupStats};
use super::window::rfc3339;
use crate::target::Target;
use std::collections::BTreeSet;
use time::OffsetDateTime;

/// What was seen for one suggested pattern.
#[derive(Debug, Default)]
pub struct Seen {
    pub ports: BTreeSet<u16>,
    /// The distinct host names the pattern covers (one for an exact host).
    pub hosts: BTreeSet<String>,
    clients: BTreeSet<String>,
    reasons: BTreeSet<String>,
    denied: u64,
    would_deny: u64,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
}

impl Seen {
    pub fn add(&mut self, t: &Target, k: &GroupKey, s: &GroupStats) {
        self.ports.insert(t.port);
        self.hosts.insert(t.host.to_string());
        self.clients.insert(k.client());
        self.reasons.insert(reason_text(&k.reason));
        self.denied += s.denied;
        self.would_deny += s.would_deny;
        self.first = Some(self.first.map_or(s.first_seen, |f| f.min(s.first_seen)));
        self.last = Some(self.last.map_or(s.last_seen, |l| l.max(s.last_seen)));
    }

    pub fn merge(&mut self, o: Seen) {
        self.ports.extend(o.ports);
        self.hosts.extend(o.hosts);
        self.clients.extend(o.clients);
        self.reasons.extend(o.reasons);
        self.denied += o.denied;
        self.would_deny += o.would_deny;
        self.first = match (self.first, o.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = self.last.max(o.last);
    }

    /// One line: counts, clients, reasons and when.
    pub fn describe(&self) -> String {
        let when = match (self.first, self.last) {
            (Some(f), Some(l)) if f == l => format!(", at {}", rfc3339(f)),
            (Some(f), Some(l)) => format!(", {} to {}", rfc3339(f), rfc3339(l)),
            _ => String::new(),
        };
        let clients = self.clients.len();
        format!(
            "{} denied, {} would_deny from {clients} client{} ({}){when}",
            self.denied,
            self.would_deny,
            if clients == 1 { "" } else { "s" },
            self.reasons.iter().cloned().collect::<Vec<_>>().join(", "),
        )
    }
}
