//! One decision log line, read leniently: anything that is not a well-formed decision event is classified,
//! never an error, so one bad line cannot stop an audit.

use serde::Deserialize;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The longest host kept from a log line; longer values (never written by egressd, whose hosts are at most a
/// DNS name) are cut so that garbage cannot grow the summary.
pub const MAX_HOST_LEN: usize = 255;
/// The longest reason code kept (egressd's own codes are far shorter).
pub const MAX_REASON_LEN: usize = 64;
/// The longest rule name, user name and client-group list kept.
pub const MAX_NAME_LEN: usize = 128;

/// What a decision line said about the request.
pub use crate::policy::verdict::Verdict;

/// What the candidate policy (`shadow:`) said about the request, as far as the line tells.
#[derive(Debug, Clone, PartialEq)]
pub enum Shadow<'a> {
    /// No shadow fields: the candidate agreed, or no candidate was set (the line cannot tell which).
    Absent,
    /// The candidate decided otherwise (boxed: most lines agree, and every line is a [`Line`]).
    Differs(Box<ShadowDecision<'a>>),
    /// Shadow fields egressd does not write: an unknown `shadow_decision`, one without `shadow_reason` or equal
    /// to `decision`, a `shadow_reason` or `shadow_rule` without `shadow_decision`. The live decision stands.
    Unreadable,
}

/// The candidate's decision where it differs: `shadow_decision`, `shadow_reason` and `shadow_rule`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowDecision<'a> {
    pub verdict: Verdict,
    pub reason: Cow<'a, str>,
    /// The candidate's deciding rule (`None` for its default deny).
    pub rule: Option<Cow<'a, str>>,
}

/// A decision event with the fields the audit uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'a> {
    pub ts: OffsetDateTime,
    pub verdict: Verdict,
    pub host: Option<Cow<'a, str>>,
    pub port: Option<u16>,
    /// The client's IP address (the port of `client_addr` is dropped).
    pub client: Option<IpAddr>,
    pub reason: Cow<'a, str>,
    /// The client groups the client was in, comma-separated (`None`: none, or an older log).
    pub groups: Option<String>,
    /// The user of accepted credentials.
    pub user: Option<Cow<'a, str>>,
    /// The rule that decided.
    pub rule: Option<Cow<'a, str>>,
    /// Where the candidate policy decided otherwise.
    pub shadow: Shadow<'a>,
}

/// How a line was classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    Decision(Decision<'a>),
    /// Valid JSON, but another event (close lines, operational logs).
    OtherEvent,
    /// Not a JSON object (garbage, text-format logs, cut lines).
    NotJson,
    /// `"event": "decision"` with missing or unusable fields (no `ts`, unknown `decision`, ...).
    InvalidDecision,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    host: Option<Cow<'a, str>>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(borrow, default)]
    client_addr: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    shadow_decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    shadow_reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    shadow_rule: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EventOnly<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
}

pub fn classify(line: &[u8]) -> Line<'_> {
    let raw: Raw = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) if e.is_data() => {
            // An object, but some field has an unexpected type: tell decision events from the rest.
            return match serde_json::from_slice::<EventOnly>(line) {
                Ok(EventOnly { event: Some(ev) }) if ev == "decision" => Line::InvalidDecision,
                Ok(_) => Line::OtherEvent,
                Err(_) => Line::NotJson,
            };
        }
        Err(_) => return Line::NotJson,
    };
    if raw.event.as_deref() != Some("decision") {
        return Line::OtherEvent;
    }
    let Some(verdict) = raw.decision.as_deref().and_then(Verdict::parse) else {
        return Line::InvalidDecision;
    };
    let Some(ts) = raw
        .ts
        .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
    else {
        return Line::InvalidDecision;
    };
    let Some(reason) = raw.reason else {
        return Line::InvalidDecision;
    };
    Line::Decision(Decision {
        ts,
        verdict,
        host: raw.host.map(|h| cut(h, MAX_HOST_LEN)),
        port: raw.port,
        client: raw.client_addr.as_deref().and_then(client_ip),
        reason: cut(reason, MAX_REASON_LEN),
        groups: raw
            .client
            .filter(|g| !g.is_empty())
            .map(|g| cut(Cow::Owned(g.join(",")), MAX_NAME_LEN).into_owned()),
        user: raw.user.map(|u| cut(u, MAX_NAME_LEN)),
        rule: raw.rule.map(|r| cut(r, MAX_NAME_LEN)),
        shadow: shadow(
            verdict,
            raw.shadow_decision,
            raw.shadow_reason,
            raw.shadow_rule,
        ),
    })
}

/// The three shadow fields, read as egressd writes them: all absent, or a verdict other than the live one with
/// its reason (and rule, when one decided).
fn shadow<'a>(
    live: Verdict,
    decision: Option<Cow<'a, str>>,
    reason: Option<Cow<'a, str>>,
    rule: Option<Cow<'a, str>>,
) -> Shadow<'a> {
    let Some(decision) = decision else {
        return if reason.is_none() && rule.is_none() {
            Shadow::Absent
        } else {
            Shadow::Unreadable
        };
    };
    match (Verdict::parse(&decision), reason) {
        (Some(verdict), Some(reason)) if verdict != live => {
            Shadow::Differs(Box::new(ShadowDecision {
                verdict,
                reason: cut(reason, MAX_REASON_LEN),
                rule: rule.map(|r| cut(r, MAX_NAME_LEN)),
            }))
        }
        _ => Shadow::Unreadable,
    }
}

/// `ip:port` or `[v6]:port` as logged; a bare address is accepted too.
fn client_ip(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| addr.parse::<IpAddr>())
        .ok()
}

fn cut(s: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(s[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &str = r#"{"ts":"2026-11-29T09:00:00.5Z","event":"decision","conn_id":3,"request":1,"client_addr":"10.0.0.7:5555","kind":"connect","method":"CONNECT","host":"evil.example","port":443,"decision":"deny","reason":"denied_no_rule","rule":null,"detail":"no allow rule","resolved_addrs":[],"denied_addr":null,"upstream_addr":null,"dns_ms":null,"connect_ms":null,"sni":null,"alpn":[]}"#;

    #[test]
    fn decision_line_is_read() {
        let Line::Decision(d) = classify(DENY.as_bytes()) else {
            panic!("not a decision");
        };
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.host.as_deref(), Some("evil.example"));
        assert_eq!(d.port, Some(443));
        assert_eq!(d.client, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(d.reason, "denied_no_rule");
        assert_eq!(d.ts.unix_timestamp(), 1_795_942_800);
        assert_eq!((d.groups, d.user, d.rule), (None, None, None));
        assert_eq!(d.shadow, Shadow::Absent);
        let line = DENY
            .replace(
                r#""alpn":[]"#,
                r#""alpn":[],"client":["castai-agents","ci"],"user":"castai""#,
            )
            .replace(r#""rule":null"#, r#""rule":"castai-us/api""#);
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        assert_eq!(d.groups.as_deref(), Some("castai-agents,ci"));
        assert_eq!(d.user.as_deref(), Some("castai"));
        assert_eq!(d.rule.as_deref(), Some("castai-us/api"));
    }

    #[test]
    fn ipv6_clients_lose_their_port() {
        let line = DENY.replace("10.0.0.7:5555", "[fd00::7]:5555");
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        assert_eq!(d.client, Some("fd00::7".parse().unwrap()));
    }

    #[test]
    fn other_lines_are_classified() {
        let close = r#"{"ts":"2026-11-29T09:00:00Z","event":"close","conn_id":3,"host":"a"}"#;
        assert_eq!(classify(close.as_bytes()), Line::OtherEvent);
        let tracing =
            r#"{"timestamp":"2026-11-29T09:00:00Z","level":"INFO","message":"egressd listening"}"#;
        assert_eq!(classify(tracing.as_bytes()), Line::OtherEvent);
        for garbage in [
            "",
            "not json",
            "{\"ts\":",
            "[1,2]",
            "2026-11-29T09:00:00Z decision host=a",
        ] {
            assert_eq!(classify(garbage.as_bytes()), Line::NotJson, "{garbage:?}");
        }
        assert_eq!(classify(b"\xff\xfe{}"), Line::NotJson);
    }

    #[test]
    fn broken_decision_lines_are_invalid() {
        for bad in [
            DENY.replace("\"deny\"", "\"maybe\""),
            DENY.replace("2026-11-29T09:00:00.5Z", "yesterday"),
            DENY.replace("\"port\":443", "\"port\":99999"),
            DENY.replace("\"reason\":\"denied_no_rule\",", ""),
        ] {
            assert_eq!(classify(bad.as_bytes()), Line::InvalidDecision, "{bad}");
        }
    }

    #[test]
    fn oversized_fields_are_cut() {
        let long = "a".repeat(10_000);
        let line = DENY.replace("evil.example", &long);
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        assert_eq!(d.host.unwrap().len(), MAX_HOST_LEN);
        let line = DENY.replace("evil.example", &"é".repeat(200));
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        assert!(d.host.unwrap().len() <= MAX_HOST_LEN);
    }

    #[test]
    fn shadow_fields_are_read() {
        let with = |extra: &str| DENY.replace(r#""alpn":[]"#, &format!(r#""alpn":[],{extra}"#));
        let line =
            with(r#""shadow_decision":"allow","shadow_reason":"allowed","shadow_rule":"new""#);
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        assert_eq!(
            d.shadow,
            Shadow::Differs(Box::new(ShadowDecision {
                verdict: Verdict::Allow,
                reason: "allowed".into(),
                rule: Some("new".into()),
            }))
        );
        let line = with(r#""shadow_decision":"would_deny","shadow_reason":"denied_port""#);
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        assert!(
            matches!(
                &d.shadow,
                Shadow::Differs(s) if s.verdict == Verdict::WouldDeny && s.rule.is_none()
            ),
            "{:?}",
            d.shadow
        );
        let long = "r".repeat(1000);
        let line = with(&format!(
            r#""shadow_decision":"allow","shadow_reason":"{long}","shadow_rule":"{long}""#
        ));
        let Line::Decision(d) = classify(line.as_bytes()) else {
            panic!("not a decision");
        };
        let Shadow::Differs(s) = d.shadow else {
            panic!("{:?}", d.shadow);
        };
        assert_eq!(
            (s.reason.len(), s.rule.map_or(0, |r| r.len())),
            (MAX_REASON_LEN, MAX_NAME_LEN)
        );
    }

    #[test]
    fn unreadable_shadow_fields_leave_the_live_decision() {
        let with = |extra: &str| DENY.replace(r#""alpn":[]"#, &format!(r#""alpn":[],{extra}"#));
        for extra in [
            r#""shadow_decision":"maybe","shadow_reason":"allowed""#,
            r#""shadow_decision":"allow""#,
            r#""shadow_decision":"deny","shadow_reason":"denied_no_rule""#,
            r#""shadow_reason":"allowed""#,
            r#""shadow_rule":"new""#,
        ] {
            let line = with(extra);
            let Line::Decision(d) = classify(line.as_bytes()) else {
                panic!("not a decision: {extra}");
            };
            assert_eq!(
                (d.verdict, d.shadow),
                (Verdict::Deny, Shadow::Unreadable),
                "{extra}"
            );
        }
        // A field of the wrong type makes the line unusable, as for every other field.
        assert_eq!(
            classify(with(r#""shadow_decision":1"#).as_bytes()),
            Line::InvalidDecision
        );
    }
}
