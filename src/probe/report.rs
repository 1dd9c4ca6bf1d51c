//! The report of `egressd probe` (pure): one result per endpoint, the summary, the exit status, and both
//! renderings (one line per endpoint for CI logs, JSON for machines).

use super::classify::{Failure, ProxyAnswer};
use crate::check::CheckResult;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Reached, TLS verified, and the configuration allows it (or would, in report mode).
    Ok,
    /// A step failed.
    Failed,
    /// The network works, but the configuration refuses it.
    Denied,
    /// A range or a pattern: no one host to probe.
    NotProbed,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "FAIL",
            Status::Denied => "DENIED",
            Status::NotProbed => "skip",
        }
    }
}

/// The configuration's verdict on the endpoint (`egressd check`'s, for an unidentified client unless
/// `--client`/`--from` say otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub decision: &'static str,
    pub rule: Option<String>,
    pub reason: &'static str,
    pub detail: Option<String>,
}

impl From<&CheckResult> for PolicyView {
    fn from(r: &CheckResult) -> Self {
        PolicyView {
            decision: r.decision,
            rule: r.rule.clone(),
            reason: r.reason.as_str(),
            detail: r.detail.clone(),
        }
    }
}

/// What the TLS handshake agreed on, and the server certificate's expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFacts {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The application protocol the server chose (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The server certificate's notAfter (RFC 3339, UTC), and the whole days left until then.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
}

/// What probing one endpoint found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Where the connection went, when `--connect-to` sent it elsewhere (`127.0.0.1:8443`).
    pub dialled: Option<String>,
    pub addresses: Vec<IpAddr>,
    /// The address that accepted the connection (the proxy's, with `--via`).
    pub connected: Option<SocketAddr>,
    pub proxy: Option<ProxyAnswer>,
    pub tls: Option<TlsFacts>,
    pub failure: Option<Failure>,
    pub ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointReport {
    pub endpoint: String,
    pub rules: Vec<String>,
    pub status: Status,
    pub policy: Option<PolicyView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dialled: Option<String>,
    pub addresses: Vec<IpAddr>,
    pub connected: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyAnswer>,
    pub tls: Option<TlsFacts>,
    pub failure: Option<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_probed: Option<&'static str>,
    pub ms: Option<f64>,
}

impl EndpointReport {
    /// A probed endpoint: failed if a step failed, else denied if the configuration refuses it, else ok.
    pub fn probed(
        endpoint: String,
        rules: Vec<String>,
        policy: PolicyView,
        seen: Observed,
    ) -> Self {
        let status = if seen.failure.is_some() {
            Status::Failed
        } else if policy.decision == "deny" {
            Status::Denied
        } else {
            Status::Ok
        };
        EndpointReport {
            endpoint,
            rules,
            status,
            policy: Some(policy),
            dialled: seen.dialled,
            addresses: seen.addresses,
            connected: seen.connected,
            proxy: seen.proxy,
            tls: seen.tls,
            failure: seen.failure,
            not_probed: None,
            ms: seen.ms,
        }
    }

    pub fn not_probed(endpoint: String, rules: Vec<String>, why: &'static str) -> Self {
        EndpointReport {
            endpoint,
            rules,
            status: Status::NotProbed,
            policy: None,
            dialled: None,
            addresses: Vec::new(),
            connected: None,
            proxy: None,
            tls: None,
            failure: None,
            not_probed: Some(why),
            ms: None,
        }
    }

    /// What the line says after the policy: where `--connect-to` sent it, then the TLS facts or the failed
    /// step.
    fn outcome(&self) -> String {
        if let Some(why) = self.not_probed {
            return why.to_string();
        }
        let mut s = self
            .dialled
            .as_ref()
            .map_or(String::new(), |d| format!("dialled={d} "));
        match (&self.failure, &self.tls) {
            (Some(f), _) => s.push_str(&format!("{}: {}: {}", f.step.as_str(), f.error, f.detail)),
            (None, Some(t)) => {
                s.push_str(&t.version);
                if let Some(a) = &t.alpn {
                    s.push_str(&format!(" alpn={a}"));
                }
                if let (Some(at), Some(days)) = (&t.not_after, t.days_left) {
                    s.push_str(&format!(" cert_expires={at} ({days} days)"));
                }
            }
            (None, None) => {}
        }
        if self.status == Status::Denied {
            s.push_str(" (the network works, but the configuration refuses it)");
        }
        s
    }

    fn policy_column(&self) -> String {
        match &self.policy {
            None => "policy=-".into(),
            Some(p) if p.decision == "allow" => "policy=allow".into(),
            Some(p) => format!("policy={}({})", p.decision, p.reason),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub endpoints: usize,
    pub ok: usize,
    /// A step failed.
    pub failed: usize,
    /// The configuration refuses them, whether the network works or not.
    pub policy_denied: usize,
    pub not_probed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub vendor: String,
    /// `direct`, or the proxy URL (password hidden).
    pub via: String,
    /// The configuration the policy column comes from (a path, or `embedded default`).
    pub config: String,
    pub endpoints: Vec<EndpointReport>,
    pub summary: Summary,
}

impl Report {
    pub fn new(vendor: &str, via: String, config: String, endpoints: Vec<EndpointReport>) -> Self {
        let mut summary = Summary {
            endpoints: endpoints.len(),
            ..Summary::default()
        };
        for e in &endpoints {
            match e.status {
                Status::Ok => summary.ok += 1,
                Status::Failed => summary.failed += 1,
                Status::Denied => {}
                Status::NotProbed => summary.not_probed += 1,
            }
            if e.policy.as_ref().is_some_and(|p| p.decision == "deny") {
                summary.policy_denied += 1;
            }
        }
        Report {
            vendor: vendor.to_string(),
            via,
            config,
            endpoints,
            summary,
        }
    }

    /// Every endpoint works and is allowed (ranges and patterns, not probed, do not count against it).
    pub fn passed(&self) -> bool {
        self.summary.failed == 0 && self.summary.policy_denied == 0
    }

    /// One line per endpoint, columns aligned, then the summary.
    pub fn render_table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .endpoints
            .iter()
            .map(|e| {
                [
                    e.status.label().to_string(),
                    e.endpoint.clone(),
                    e.rules.join(","),
                    e.policy_column(),
                ]
            })
            .collect();
        let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2), width(3)];
        let mut out = String::new();
        for (row, e) in rows.iter().zip(&self.endpoints) {
            let mut line = String::new();
            for (cell, w) in row.iter().zip(widths) {
                line.push_str(&format!("{cell:<w$}  "));
            }
            line.push_str(&e.outcome());
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{}: {} endpoints, {} ok, {} failed, {} refused by the configuration, {} not probed ({}; policy of {})\n",
            self.vendor, s.endpoints, s.ok, s.failed, s.policy_denied, s.not_probed, self.via, self.config
        ));
        out
    }

    pub fn render_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("the report serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::classify::Step;

    fn policy(decision: &'static str, reason: &'static str) -> PolicyView {
        PolicyView {
            decision,
            rule: None,
            reason,
            detail: None,
        }
    }

    fn tls() -> Option<TlsFacts> {
        Some(TlsFacts {
            version: "TLSv1.3".into(),
            alpn: Some("h2".into()),
            not_after: Some("2030-01-31T12:00:00Z".into()),
            days_left: Some(30),
        })
    }

    fn sample() -> Report {
        let ok = Observed {
            tls: tls(),
            ..Observed::default()
        };
        let failed = Observed {
            failure: Some(Failure::new(Step::Connect, "refused", "connection refused")),
            ..Observed::default()
        };
        Report::new(
            "v",
            "direct".into(),
            "embedded default".into(),
            vec![
                EndpointReport::probed(
                    "a.example:443".into(),
                    vec!["v/a".into()],
                    policy("allow", "allowed"),
                    ok.clone(),
                ),
                EndpointReport::probed(
                    "b.example:443".into(),
                    vec!["v/b".into()],
                    policy("allow", "allowed"),
                    failed,
                ),
                EndpointReport::probed(
                    "c.example:443".into(),
                    vec!["v/c".into()],
                    policy("deny", "denied_no_rule"),
                    ok.clone(),
                ),
                EndpointReport::probed(
                    "d.example:443".into(),
                    vec!["v/d".into()],
                    policy("would_deny", "denied_no_rule"),
                    ok,
                ),
                EndpointReport::not_probed(
                    "10.0.0.0/8:443".into(),
                    vec!["v/e".into()],
                    "range, not probed",
                ),
            ],
        )
    }

    #[test]
    fn status_and_exit_follow_failures_and_the_policy() {
        let r = sample();
        let statuses: Vec<Status> = r.endpoints.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Ok,
                Status::Failed,
                Status::Denied,
                Status::Ok,
                Status::NotProbed
            ]
        );
        assert_eq!(
            r.summary,
            Summary {
                endpoints: 5,
                ok: 2,
                failed: 1,
                policy_denied: 1,
                not_probed: 1
            }
        );
        assert!(!r.passed());
        let only_ok = Report::new(
            "v",
            "direct".into(),
            "-".into(),
            vec![r.endpoints[0].clone(), r.endpoints[4].clone()],
        );
        assert!(only_ok.passed(), "ranges not probed do not fail the run");
        // A refusal counts whether the network works or not.
        let mut both = r.endpoints[1].clone();
        both.policy = Some(policy("deny", "denied_no_rule"));
        let both = Report::new("v", "direct".into(), "-".into(), vec![both]);
        assert_eq!((both.summary.failed, both.summary.policy_denied), (1, 1));
    }

    #[test]
    fn one_aligned_line_per_endpoint_then_the_summary() {
        let text = sample().render_table();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(
            lines[0],
            "ok      a.example:443   v/a  policy=allow                       TLSv1.3 alpn=h2 cert_expires=2030-01-31T12:00:00Z (30 days)"
        );
        assert_eq!(
            lines[1],
            "FAIL    b.example:443   v/b  policy=allow                       connect: refused: connection refused"
        );
        assert!(
            lines[2].starts_with("DENIED  c.example:443   v/c  policy=deny(denied_no_rule)"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("(the network works, but the configuration refuses it)"),
            "{text}"
        );
        assert!(
            lines[3].contains("policy=would_deny(denied_no_rule)"),
            "{text}"
        );
        assert_eq!(
            lines[4],
            "skip    10.0.0.0/8:443  v/e  policy=-                           range, not probed"
        );
        assert_eq!(
            lines[5],
            "v: 5 endpoints, 2 ok, 1 failed, 1 refused by the configuration, 1 not probed (direct; policy of embedded default)"
        );
    }

    #[test]
    fn json_names_every_fact() {
        let v: serde_json::Value = serde_json::from_str(&sample().render_json()).unwrap();
        assert_eq!(v["summary"]["failed"], 1);
        let e = &v["endpoints"][1];
        assert_eq!(e["status"], "failed");
        assert_eq!(e["failure"]["step"], "connect");
        assert_eq!(e["failure"]["error"], "refused");
        assert_eq!(v["endpoints"][0]["tls"]["days_left"], 30);
        assert_eq!(v["endpoints"][2]["policy"]["reason"], "denied_no_rule");
        assert_eq!(v["endpoints"][4]["not_probed"], "range, not probed");
        assert!(v["endpoints"][0].get("proxy").is_none());
    }
}
