//! `egressd test`: expectations about a policy, written as cases (`{target, expect, reason?, rule?, client? |
//! from?}`), evaluated with the verdict the proxy uses ([`crate::check::check`]: the same normalization and
//! decision, and, only for a case with `resolve: true`, the same DNS and destination checks), and the
//! difference between what was expected and what egressd decides, case by case.

use crate::check::{check, client_for, CheckResult};
use crate::config::Settings;
use crate::proxy::dial::Dialer;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// The configuration the cases are about, relative to the cases file (`--config` overrides it).
    pub config: Option<String>,
    pub cases: Vec<Case>,
}

/// One expectation.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case is about, shown in the report (default: the target).
    pub name: Option<String>,
    /// `host:port`, `[v6]:port` or a URL; `http://` URLs carry their path (plain HTTP, `paths` rules apply).
    pub target: String,
    /// `allow`, `deny` or `would_deny`.
    pub expect: String,
    /// The reason code expected, when it matters.
    pub reason: Option<String>,
    /// The deciding rule expected (`-`: none).
    pub rule: Option<String>,
    /// As a member of this client group.
    pub client: Option<String>,
    /// As a client connecting from this address.
    pub from: Option<IpAddr>,
    /// Also resolve the name and apply the destination address checks (real DNS unless `dns.hosts` has it).
    #[serde(default)]
    pub resolve: bool,
}

/// A case and what egressd decided.
#[derive(Debug)]
pub struct Outcome {
    pub case: Case,
    pub result: Result<CheckResult, String>,
    /// What differs from the expectation; empty when the case passed.
    pub mismatches: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Read a cases file; the configuration it names, resolved against the file's directory.
pub fn read(path: &Path) -> Result<(CasesFile, Option<PathBuf>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: CasesFile = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for (i, c) in file.cases.iter().enumerate() {
        if !["allow", "deny", "would_deny"].contains(&c.expect.as_str()) {
            return Err(format!(
                "{}: cases[{i}].expect: {:?} is not one of: allow, deny, would_deny",
                path.display(),
                c.expect
            ));
        }
        if c.client.is_some() && c.from.is_some() {
            return Err(format!(
                "{}: cases[{i}]: give client or from, not both",
                path.display()
            ));
        }
    }
    let config = file
        .config
        .as_ref()
        .map(|c| path.parent().unwrap_or_else(|| Path::new(".")).join(c));
    Ok((file, config))
}

/// Evaluate every case against `settings`.
pub async fn run(settings: &Settings, cases: &[Case]) -> Vec<Outcome> {
    let mut dialer = None;
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let client = client_for(settings, case.client.as_deref(), case.from);
        let result = match client {
            Err(e) => Err(e),
            Ok(client) => {
                let dialer = case.resolve.then(|| {
                    &*dialer
                        .get_or_insert_with(|| Dialer::new(&settings.listeners, &settings.runtime))
                });
                Ok(check(settings, dialer, &client, &case.target).await)
            }
        };
        let mismatches = match &result {
            Err(e) => vec![e.clone()],
            Ok(r) => compare(case, r),
        };
        out.push(Outcome {
            case: case.clone(),
            result,
            mismatches,
        });
    }
    out
}

/// What of `r` differs from what `case` expects.
fn compare(case: &Case, r: &CheckResult) -> Vec<String> {
    let mut m = Vec::new();
    if r.decision != case.expect {
        m.push(format!(
            "decision: expected {}, got {}",
            case.expect, r.decision
        ));
    }
    if let Some(reason) = &case.reason {
        if r.reason.as_str() != reason {
            m.push(format!("reason: expected {reason}, got {}", r.reason));
        }
    }
    if let Some(rule) = &case.rule {
        let got = r.rule.as_deref().unwrap_or("-");
        if got != rule {
            m.push(format!("rule: expected {rule}, got {got}"));
        }
    }
    m
}

/// The report: one line per case (`ok` or `FAIL`), what differs under each failure, and a summary line.
pub fn report(file: &str, outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for (i, o) in outcomes.iter().enumerate() {
        let name = o.case.name.as_deref().unwrap_or(&o.case.target);
        let got = match &o.result {
            Ok(r) => format!(
                "{} rule={} reason={}",
                r.decision,
                r.rule.as_deref().unwrap_or("-"),
                r.reason
            ),
            Err(_) => "not evaluated".to_string(),
        };
        let status = if o.passed() { "ok  " } else { "FAIL" };
        text.push_str(&format!(
            "{status} {file} case {}: {name} ({}): {got}\n",
            i + 1,
            o.case.target
        ));
        for m in &o.mismatches {
            text.push_str(&format!("       {m}\n"));
        }
        if let (false, Ok(r)) = (o.passed(), &o.result) {
            if let Some(d) = &r.detail {
                text.push_str(&format!("       detail: {d}\n"));
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    text.push_str(&format!(
        "{file}: {} cases, {} passed, {failed} failed\n",
        outcomes.len(),
        outcomes.len() - failed
    ));
    text
}
