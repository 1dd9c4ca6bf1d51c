//! `egressd audit`: summaries of real proxy logs, every output format, time windows, suggested allow rules that
//! compile and allow what was refused, clear errors, and a large gzip log streamed in bounded memory.

mod support;

use egressd::target::parse_authority;
use flate2::write::GzEncoder;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::process::{Command, Stdio};
use support::cli::*;
use support::*;

/// A decision line shaped like the proxy's own.
fn decision(ts: &str, client: &str, host: &str, port: u16, decision: &str, reason: &str) -> String {
    serde_json::json!({
        "ts": ts, "event": "decision", "conn_id": 1, "request": 1, "client_addr": client,
        "kind": "connect", "method": "CONNECT", "host": host, "port": port, "decision": decision,
        "reason": reason, "rule": null, "detail": null, "resolved_addrs": [], "denied_addr": null,
        "upstream_addr": null, "dns_ms": null, "connect_ms": null, "sni": null, "alpn": [],
    })
    .to_string()
}

fn group<'a>(report: &'a Value, destination: &str, client: &str, reason: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["destination"] == destination && g["client"] == client && g["reason"] == reason)
        .unwrap_or_else(|| panic!("no group {destination} {client} {reason} in {report:#}"))
}

fn allowed(settings: &egressd::Settings, destination: &str) -> bool {
    let target = parse_authority(destination, None).unwrap();
    settings.runtime.policy.decide(&target).allowed
}

/// The suggested rules appended to a config's own `allow:` list, as an operator pastes them.
fn paste(config: &str, snippet: &str) -> String {
    let items: String = snippet
        .lines()
        .skip_while(|l| !l.starts_with("allow:"))
        .skip(1)
        .filter(|l| l.starts_with("  "))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{config}{items}")
}

// --- logs written by the proxy itself ---

// `allow:` last, so that pasted rules extend it.
const ENFORCE: &str = "deny:\n  - name: blocked\n    hosts: [\"blocked.test\"]\nallow:\n  - name: known\n    hosts: [\"known.test\"]\n    ports: [443]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summarizes_a_real_proxy_log_and_suggests_rules_that_allow_it() {
    let proxy = start_proxy(ENFORCE).await;
    for authority in [
        "unknown.test:443",
        "unknown.test:443",
        "api.vendor.test:443",
        "known.test:8443",
        "blocked.test:443",
    ] {
        let resp = connect(proxy.addr, authority).await;
        assert_eq!(status(&resp), 403, "{authority}: {resp}");
    }
    let origin_form = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(&origin_form), 400);
    let lines = proxy.log.wait_events("decision", 6).await;
    let mut log: String = lines.iter().map(|v| format!("{v}\n")).collect();
    log.push_str(
        "{\"ts\":\"2026-11-29T09:00:00Z\",\"event\":\"close\",\"conn_id\":1}\nnot json at all\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "egressd.log", &log);
    let path = file.to_str().unwrap();

    let report = audit_json(&[path]);
    assert_eq!(report["lines"], 8);
    assert_eq!(report["decisions"], 6);
    assert_eq!(report["denied"], 6);
    assert_eq!(report["skipped_lines"], 2);
    assert_eq!(report["not_json_lines"], 1);
    let g = group(&report, "unknown.test:443", "127.0.0.1", "denied_no_rule");
    assert_eq!(g["denied"], 2);
    assert_eq!(g["host"], "unknown.test");
    assert_eq!(g["port"], 443);
    assert!(g["first_seen"].as_str().unwrap() <= g["last_seen"].as_str().unwrap());
    assert_eq!(
        group(&report, "known.test:8443", "127.0.0.1", "denied_port")["denied"],
        1
    );
    assert_eq!(
        group(&report, "blocked.test:443", "127.0.0.1", "denied_by_rule")["denied"],
        1
    );
    assert_eq!(
        group(&report, "-", "127.0.0.1", "not_proxy_request")["denied"],
        1
    );

    let snippet = audit_ok(&["--suggest", path]);
    // On its own, the snippet is a valid config that allows every suggested destination ...
    let alone = egressd::config::from_yaml_str(&snippet)
        .unwrap_or_else(|e| panic!("suggestion does not compile: {e}\n{snippet}"));
    for dest in ["unknown.test:443", "api.vendor.test:443", "known.test:8443"] {
        assert!(allowed(&alone, dest), "{dest} not allowed by\n{snippet}");
    }
    // ... and nothing a deny rule or the request format refused.
    assert!(!snippet.contains("hosts: [\"blocked.test\"]"), "{snippet}");
    assert!(
        snippet.contains("# not suggested, denied_by_rule"),
        "{snippet}"
    );
    assert!(!allowed(&alone, "blocked.test:443"));
    // Pasted into the proxy's own config, it turns the refusals into allows.
    let before = egressd::config::from_yaml_str(ENFORCE).unwrap();
    let after = egressd::config::from_yaml_str(&paste(ENFORCE, &snippet)).unwrap();
    for dest in ["unknown.test:443", "api.vendor.test:443", "known.test:8443"] {
        assert!(!allowed(&before, dest));
        assert!(
            allowed(&after, dest),
            "{dest} still denied after pasting\n{snippet}"
        );
    }
    assert!(!allowed(&after, "blocked.test:443"));
    assert!(!allowed(&after, "other.test:443"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_would_deny_is_counted_apart() {
    let origin = tls_origin(&["x"]).await;
    let port = origin.addr.port();
    let yaml = "mode: report\nallow:\n  - name: other\n    hosts: [\"other.test\"]\ndestinations:\n  allow_cidrs: [\"127.0.0.0/8\"]\ndns:\n  hosts:\n    unlisted.test: [\"127.0.0.1\"]\n";
    let proxy = start_proxy(yaml).await;
    let resp = connect(proxy.addr, &format!("unlisted.test:{port}")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let lines = proxy.log.wait_events("decision", 1).await;
    let log: String = lines.iter().map(|v| format!("{v}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = write_gzip(dir.path(), "report.log.gz", &log);
    let report = audit_json(&[file.to_str().unwrap()]);
    let dest = format!("unlisted.test:{port}");
    let g = group(&report, &dest, "127.0.0.1", "denied_no_rule");
    assert_eq!(
        (g["denied"].as_u64(), g["would_deny"].as_u64()),
        (Some(0), Some(1))
    );
    let snippet = audit_ok(&["--suggest", file.to_str().unwrap()]);
    let s = egressd::config::from_yaml_str(&snippet).unwrap();
    assert!(allowed(&s, &dest), "{snippet}");
}

// --- generated logs ---

fn sample_log() -> String {
    #[rustfmt::skip]
    let decisions = [
        ("2026-11-29T08:00:00Z", "10.0.0.1:4000", "a.vendor.example.com", 443, "deny", "denied_no_rule"),
        ("2026-11-29T09:00:00Z", "10.0.0.1:4001", "a.vendor.example.com", 443, "deny", "denied_no_rule"),
        ("2026-11-29T09:30:00+01:00", "10.0.0.2:4000", "b.vendor.example.com", 8443, "deny", "denied_no_rule"),
        ("2026-11-29T10:00:00Z", "[fd00::2]:4000", "2606:4700::10", 443, "would_deny", "denied_no_rule"),
        ("2026-11-29T10:00:00Z", "10.0.0.3:4000", "104.16.81.56", 443, "deny", "denied_port"),
        ("2026-11-29T11:00:00Z", "10.0.0.3:4000", "x.co.uk", 443, "deny", "denied_no_rule"),
        ("2026-11-29T11:00:00Z", "10.0.0.3:4000", "y.co.uk", 443, "deny", "denied_no_rule"),
        ("2026-11-29T11:00:00Z", "10.0.0.3:4000", "169.254.169.254", 80, "deny", "denied_private_address"),
        ("2026-11-29T11:00:00Z", "10.0.0.3:4000", "ok.example.com", 443, "allow", "allowed"),
    ];
    decisions
        .iter()
        .map(|&(ts, client, host, port, d, reason)| decision(ts, client, host, port, d, reason))
        .chain([
            r#"{"ts":"2026-11-29T11:00:00Z","event":"decision","decision":"deny"}"#.to_string(),
            r#"{"timestamp":"2026-11-29T11:00:00Z","level":"INFO","message":"egressd listening"}"#
                .to_string(),
            "\u{0}\u{1}garbage".to_string(),
        ])
        .collect::<Vec<_>>()
        .join("\n")
}

const SUGGESTED: [&str; 6] = [
    "a.vendor.example.com:443",
    "b.vendor.example.com:8443",
    "[2606:4700::10]:443",
    "104.16.81.56:443",
    "x.co.uk:443",
    "y.co.uk:443",
];

#[test]
fn formats_show_the_same_groups() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "sample.log", &sample_log());
    let path = file.to_str().unwrap();

    let report = audit_json(&[path]);
    assert_eq!(report["lines"], 12);
    assert_eq!(report["decisions"], 9);
    assert_eq!(
        (report["allowed"].as_u64(), report["denied"].as_u64()),
        (Some(1), Some(7))
    );
    assert_eq!(report["would_deny"], 1);
    assert_eq!(report["skipped_lines"], 2);
    assert_eq!(report["invalid_decisions"], 1);
    let a = group(
        &report,
        "a.vendor.example.com:443",
        "10.0.0.1",
        "denied_no_rule",
    );
    assert_eq!(a["denied"], 2);
    assert_eq!(a["first_seen"], "2026-11-29T08:00:00Z");
    assert_eq!(a["last_seen"], "2026-11-29T09:00:00Z");
    // Offsets are converted to UTC.
    let b = group(
        &report,
        "b.vendor.example.com:8443",
        "10.0.0.2",
        "denied_no_rule",
    );
    assert_eq!(b["first_seen"], "2026-11-29T08:30:00Z");
    let v6 = group(&report, "[2606:4700::10]:443", "fd00::2", "denied_no_rule");
    assert_eq!(v6["would_deny"], 1);
    // Most decisions first.
    assert_eq!(
        report["groups"][0]["destination"],
        "a.vendor.example.com:443"
    );

    let table = audit_ok(&[path]);
    assert!(table.contains("read 12 lines from"), "{table}");
    assert!(
        table.contains("skipped 2 lines that are not decision events (1 not JSON)"),
        "{table}"
    );
    assert!(table.contains("DESTINATION"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("a.vendor.example.com:443"))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "a.vendor.example.com:443",
            "10.0.0.1",
            "-",
            "denied_no_rule",
            "2",
            "0",
            "2026-11-29T08:00:00Z",
            "2026-11-29T09:00:00Z"
        ]
    );

    let md = audit_ok(&["--format", "markdown", path]);
    assert!(md.contains("| destination "), "{md}");
    assert!(md.contains("|---"), "{md}");
    assert!(
        md.lines()
            .any(|l| l.starts_with("| [2606:4700::10]:443 ") && l.contains("| fd00::2 ")),
        "{md}"
    );

    // --top limits every format and says how many are hidden.
    let top = audit_json(&["--top", "2", path]);
    assert_eq!(top["groups"].as_array().unwrap().len(), 2);
    assert_eq!(top["groups_not_shown"], 5);
    let table = audit_ok(&["--top", "2", path]);
    assert!(table.contains("5 more groups not shown"), "{table}");
}

#[test]
fn stdin_and_gzip_give_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_file(dir.path(), "sample.log", &sample_log());
    // No .gz in the name: gzip is recognized by its content.
    let gz = write_gzip(dir.path(), "sample.rotated", &sample_log());
    let from_plain = audit_json(&[plain.to_str().unwrap()]);
    let from_gz = audit_json(&[gz.to_str().unwrap()]);
    let out = Command::new(BIN)
        .args(["audit", "--format", "json", "-"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let from_stdin: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(from_plain["groups"], from_gz["groups"]);
    assert_eq!(from_plain["groups"], from_stdin["groups"]);
    assert_eq!(from_stdin["source"], "stdin");
    assert_eq!(from_plain["groups"].as_array().unwrap().len(), 7);
}

#[test]
fn since_and_until_select_a_time_window() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "sample.log", &sample_log());
    let path = file.to_str().unwrap();
    let r = audit_json(&[
        "--since",
        "2026-11-29T09:00:00Z",
        "--until",
        "2026-11-29T10:00:00Z",
        path,
    ]);
    // 09:00 (a), 08:30Z (b) is out, the two at 10:00 are in: both ends are inclusive.
    assert_eq!(r["decisions"], 3);
    assert_eq!(r["outside_window"], 6);
    assert_eq!(
        group(&r, "a.vendor.example.com:443", "10.0.0.1", "denied_no_rule")["denied"],
        1
    );
    assert_eq!(r["since"], "2026-11-29T09:00:00Z");

    // Relative values count back from now.
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let recent = [
        decision(
            &fmt(now - time::Duration::hours(3)),
            "10.0.0.1:1",
            "old.example.com",
            443,
            "deny",
            "denied_no_rule",
        ),
        decision(
            &fmt(now - time::Duration::minutes(10)),
            "10.0.0.1:1",
            "new.example.com",
            443,
            "deny",
            "denied_no_rule",
        ),
    ]
    .join("\n");
    let file = write_file(dir.path(), "recent.log", &recent);
    let r = audit_json(&["--since", "1h", file.to_str().unwrap()]);
    assert_eq!(r["decisions"], 1);
    assert_eq!(r["groups"][0]["destination"], "new.example.com:443");
    let r = audit_json(&["--until", "30m", file.to_str().unwrap()]);
    assert_eq!(r["groups"][0]["destination"], "old.example.com:443");
    assert_eq!(r["decisions"], 1);

    let table = audit_ok(&["--since", "1h", file.to_str().unwrap()]);
    assert!(
        table.contains("1 decisions outside it not counted"),
        "{table}"
    );

    let bad = audit(&["--since", "last tuesday", path]);
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("--since \"last tuesday\""),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}

#[test]
fn suggestions_compile_and_allow_each_destination() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "sample.log", &sample_log());
    let path = file.to_str().unwrap();

    let snippet = audit_ok(&["--suggest", path]);
    let s = egressd::config::from_yaml_str(&snippet)
        .unwrap_or_else(|e| panic!("suggestion does not compile: {e}\n{snippet}"));
    for dest in SUGGESTED {
        assert!(allowed(&s, dest), "{dest} not allowed by\n{snippet}");
    }
    // Exact names only, unless wildcards are asked for; ports as seen.
    assert!(!allowed(&s, "c.vendor.example.com:443"), "{snippet}");
    assert!(!allowed(&s, "a.vendor.example.com:8443"), "{snippet}");
    assert!(!snippet.contains('*'), "{snippet}");
    assert!(!allowed(&s, "169.254.169.254:80"));
    assert!(
        snippet.contains("# not suggested, denied_private_address"),
        "{snippet}"
    );
    assert!(
        !allowed(&s, "ok.example.com:443"),
        "allowed destinations are not suggested"
    );

    let grouped = audit_ok(&["--suggest", "--group-wildcards", path]);
    let g = egressd::config::from_yaml_str(&grouped)
        .unwrap_or_else(|e| panic!("suggestion does not compile: {e}\n{grouped}"));
    for dest in SUGGESTED {
        assert!(allowed(&g, dest), "{dest} not allowed by\n{grouped}");
    }
    assert!(
        grouped.contains("hosts: [\"*.vendor.example.com\"]"),
        "{grouped}"
    );
    assert!(grouped.contains("ports: [443, 8443]"), "{grouped}");
    assert!(allowed(&g, "c.vendor.example.com:443"), "{grouped}");
    // Never a wildcard under a public suffix, never over addresses.
    assert!(!grouped.contains("*.co.uk"), "{grouped}");
    assert!(!allowed(&g, "z.co.uk:443"), "{grouped}");

    // A group limit that was reached is said, since some refused destinations are then missing.
    let capped = audit_ok(&["--suggest", "--max-groups", "2", path]);
    assert!(
        capped.contains("# Incomplete: 5 refused decisions"),
        "{capped}"
    );
    assert_eq!(
        egressd::config::from_yaml_str(&capped)
            .unwrap()
            .runtime
            .policy
            .rule_count(),
        2
    );

    // The window applies to suggestions too.
    let late = audit_ok(&["--suggest", "--since", "2026-11-29T10:30:00Z", path]);
    assert!(
        late.contains("# Decisions from 2026-11-29T10:30:00Z to the end only."),
        "{late}"
    );
    let l = egressd::config::from_yaml_str(&late).unwrap();
    assert!(allowed(&l, "x.co.uk:443"), "{late}");
    assert!(!allowed(&l, "a.vendor.example.com:443"), "{late}");

    // Nothing refused: an empty list that is still a valid config.
    let allowed_only = write_file(
        dir.path(),
        "allowed.log",
        &decision(
            "2026-11-29T11:00:00Z",
            "10.0.0.3:4000",
            "ok.example.com",
            443,
            "allow",
            "allowed",
        ),
    );
    let empty = audit_ok(&["--suggest", allowed_only.to_str().unwrap()]);
    assert!(empty.contains("allow: []"), "{empty}");
    assert_eq!(
        egressd::config::from_yaml_str(&empty)
            .unwrap()
            .runtime
            .policy
            .rule_count(),
        0
    );
}

#[test]
fn hostile_hosts_are_not_pasted_into_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let deny = |host: &str| {
        decision(
            "2026-11-29T11:00:00Z",
            "10.0.0.3:1",
            host,
            443,
            "deny",
            "denied_no_rule",
        )
    };
    let log = [
        deny("a.example\"]\n    ports: [1-65535"),
        deny("UPPER.example"),
        deny("fine.example"),
    ]
    .join("\n");
    let file = write_file(dir.path(), "hostile.log", &log);
    let snippet = audit_ok(&["--suggest", file.to_str().unwrap()]);
    let s = egressd::config::from_yaml_str(&snippet).unwrap_or_else(|e| panic!("{e}\n{snippet}"));
    assert_eq!(s.runtime.policy.rule_count(), 1, "{snippet}");
    assert!(allowed(&s, "fine.example:443"));
    assert!(
        snippet.contains("# not suggested, not a valid host:port"),
        "{snippet}"
    );
}

#[test]
fn unreadable_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.log");
    let out = audit(&[missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("cannot open") && out.stderr.contains("missing.log"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());

    // A gzip file cut short fails after reporting how far it got, instead of printing a partial summary.
    let big: String = (0..20_000)
        .map(|i| {
            decision(
                "2026-11-29T11:00:00Z",
                "10.0.0.3:1",
                &format!("h{i}.example"),
                443,
                "deny",
                "denied_no_rule",
            ) + "\n"
        })
        .collect();
    let gz = write_gzip(dir.path(), "cut.log.gz", &big);
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let out = audit(&[gz.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(out.stderr.contains("cut.log.gz after"), "{}", out.stderr);

    let out = audit(&["--group-wildcards", gz.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "--group-wildcards needs --suggest");
}

/// Which vendor's agents are refused (`--by group`), and what each vendor reached (`--allowed`), with client
/// groups and users beside the address and times to the second.
#[test]
fn views_by_client_group_and_of_what_was_allowed() {
    let line = |ts: &str,
                client: &str,
                groups: &str,
                user: &str,
                host: &str,
                d: &str,
                reason: &str,
                rule: &str| {
        format!(
            r#"{{"ts":"{ts}","event":"decision","client_addr":"{client}:4000","host":"{host}","port":443,"decision":"{d}","reason":"{reason}","rule":{rule},"client":[{groups}],"user":{user}}}"#
        )
    };
    let log = [
        line(
            "2026-11-29T10:00:00.123456Z",
            "10.42.0.7",
            r#""castai-agents""#,
            "null",
            "telemetry.cast.ai",
            "deny",
            "denied_no_rule",
            "null",
        ),
        line(
            "2026-11-29T10:00:05.5Z",
            "10.42.0.8",
            r#""castai-agents""#,
            "null",
            "telemetry.cast.ai",
            "deny",
            "denied_no_rule",
            "null",
        ),
        line(
            "2026-11-29T10:01:00Z",
            "10.43.0.9",
            r#""cloudcasa""#,
            r#""casa""#,
            "evil.example",
            "deny",
            "denied_no_rule",
            "null",
        ),
        line(
            "2026-11-29T10:02:00Z",
            "10.42.0.7",
            r#""castai-agents""#,
            "null",
            "api.cast.ai",
            "allow",
            "allowed",
            r#""castai-us/api""#,
        ),
        line(
            "2026-11-29T10:03:00Z",
            "10.42.0.8",
            r#""castai-agents""#,
            "null",
            "api.cast.ai",
            "allow",
            "allowed",
            r#""castai-us/api""#,
        ),
        line(
            "2026-11-29T10:04:00Z",
            "10.43.0.9",
            r#""cloudcasa""#,
            r#""casa""#,
            "agent.cloudcasa.io",
            "allow",
            "allowed",
            r#""cloudcasa/agent""#,
        ),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "groups.log", &log);
    let path = file.to_str().unwrap();

    let table = audit_ok(&[path]);
    let row = table
        .lines()
        .find(|l| l.contains("10.42.0.7"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("castai-agents"), "{row}");
    assert!(
        row.contains("2026-11-29T10:00:00Z") && !row.contains(".123"),
        "{row}"
    );
    assert!(table.contains("cloudcasa user=casa"), "{table}");

    let by_group = audit_json(&["--by", "group", path]);
    let groups = by_group["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{by_group}");
    assert_eq!(groups[0]["client_group"], "castai-agents");
    assert_eq!(groups[0]["denied"], 2);
    assert!(groups[0]["client"].is_null());
    assert_eq!(groups[0]["last_seen"], "2026-11-29T10:00:05Z");

    let allowed = audit_json(&["--allowed", "--by", "group", path]);
    let groups = allowed["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{allowed}");
    assert_eq!(
        (
            &groups[0]["rule"],
            &groups[0]["allowed"],
            &groups[0]["destination"]
        ),
        (
            &"castai-us/api".into(),
            &2.into(),
            &"api.cast.ai:443".into()
        )
    );
    assert_eq!(groups[1]["client_group"], "cloudcasa user=casa");
    let table = audit_ok(&["--allowed", path]);
    assert!(
        table.contains("RULE") && table.contains("ALLOWED"),
        "{table}"
    );
    assert!(!table.contains("WOULD_DENY"), "{table}");
    assert_eq!(audit(&["--allowed", "--suggest", path]).code, Some(2));
}

// --- logs as pipelines hand them back ---

/// The sample log as each way of collecting pod logs returns it.
fn wrapped_logs() -> Vec<(&'static str, String)> {
    let raw = sample_log();
    let lines: Vec<&str> = raw.lines().collect();
    let each = |f: &dyn Fn(usize, &str) -> String| -> String {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| f(i, l) + "\n")
            .collect()
    };
    let json = |s: &str| serde_json::to_string(s).unwrap();
    vec![
        (
            "kubectl logs --prefix (three replicas)",
            each(&|i, l| format!("[pod/egressd-7d9f-{i}/egressd] {l}")),
        ),
        (
            "kubelet CRI file",
            each(&|_, l| format!("2026-11-29T11:00:00.123456789Z stdout F {l}")),
        ),
        (
            "CRI file with partial lines",
            each(&|_, l| {
                let cut = l
                    .char_indices()
                    .nth(l.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                format!(
                    "2026-11-29T11:00:00.1Z stdout P {}\n2026-11-29T11:00:00.1Z stdout F {}",
                    &l[..cut],
                    &l[cut..]
                )
            }),
        ),
        (
            "Fluent Bit / Docker json-file / CloudWatch",
            each(&|_, l| {
                format!(
                    r#"{{"log":{},"stream":"stdout","time":"2026-11-29T11:00:00Z","kubernetes":{{"pod_name":"egressd-1"}}}}"#,
                    json(&format!("{l}\n"))
                )
            }),
        ),
        (
            "Loki logcli (default output)",
            each(&|_, l| format!(r#"2026-11-29T11:00:00Z {{app="egressd", pod="egressd-1"}} {l}"#)),
        ),
        (
            "Loki logcli --output jsonl",
            each(&|_, l| {
                format!(
                    r#"{{"labels":{{"app":"egressd"}},"line":{},"timestamp":"2026-11-29T11:00:00Z"}}"#,
                    json(l)
                )
            }),
        ),
        (
            "Cloud Logging export",
            each(&|_, l| match serde_json::from_str::<Value>(l) {
                Ok(v) if v.is_object() && v.get("event").is_some() => format!(
                    r#"{{"insertId":"a","jsonPayload":{l},"resource":{{"type":"k8s_container"}},"severity":"INFO"}}"#
                ),
                _ => format!(r#"{{"insertId":"b","textPayload":{}}}"#, json(l)),
            }),
        ),
    ]
}

#[test]
fn every_log_pipeline_gives_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write_file(dir.path(), "plain.log", &sample_log());
    let expected = audit_json(&[plain.to_str().unwrap()]);
    for (name, text) in wrapped_logs() {
        let file = write_file(dir.path(), "wrapped.log", &text);
        let got = audit_json(&[file.to_str().unwrap()]);
        for key in ["decisions", "allowed", "denied", "would_deny"] {
            assert_eq!(got[key], expected[key], "{name}: {key}\n{got}");
        }
        assert_eq!(got["groups"], expected["groups"], "{name}");
    }
}

#[test]
fn a_log_without_decisions_is_an_error_that_shows_a_line() {
    let dir = tempfile::tempdir().unwrap();
    // Text-format lines, and operational JSON lines: nothing the audit can read as a decision.
    let text = write_file(
        dir.path(),
        "text.log",
        "2026-11-29T11:00:00Z INFO decision deny evil.example:443 denied_no_rule\x1b[31m\n\
         {\"timestamp\":\"2026-11-29T11:00:00Z\",\"level\":\"INFO\",\"message\":\"egressd listening\"}\n",
    );
    let out = audit(&[text.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr.contains("no decision lines in")
            && out
                .stderr
                .contains("2 lines read, 1 not JSON, 1 other events")
            && out
                .stderr
                .contains("the first looked like: 2026-11-29T11:00:00Z INFO decision deny"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains('\u{1b}'),
        "escape sequences reach the terminal"
    );
    let empty = write_file(dir.path(), "empty.log", "");
    assert_eq!(audit(&[empty.to_str().unwrap()]).code, Some(2));
}

// --- large logs in bounded memory ---

/// Run the binary and return (exit code, stdout, peak resident memory in KiB) from the kernel's own
/// accounting of the child (wait4 rusage), which sees every page the process ever had.
fn run_measured(args: &[&str]) -> (i32, String, i64) {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out_path.reopen().unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which std has not reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    assert!(
        libc::WIFEXITED(status),
        "audit did not exit normally: {status}"
    );
    let stdout = std::fs::read_to_string(out_path.path()).unwrap();
    (libc::WEXITSTATUS(status), stdout, usage.ru_maxrss)
}

#[test]
fn large_gzip_log_is_streamed_in_bounded_memory() {
    const LINES: usize = 1_000_000;
    const MAX_GROUPS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.log.gz");
    let mut gz = GzEncoder::new(
        std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
        flate2::Compression::fast(),
    );
    let mut raw_bytes = 0usize;
    let mut line = String::with_capacity(512);
    for i in 0..LINES {
        // Every fourth line is a close event; the rest deny a destination never seen before, so the distinct
        // groups (750 000) are far more than --max-groups. Written with write! rather than serde_json to keep
        // the debug-built generator quick.
        line.clear();
        let ts = ((i / 60) % 60, i % 60);
        write!(line, "{{\"ts\":\"2026-11-29T10:{:02}:{:02}Z\",", ts.0, ts.1).unwrap();
        if i % 4 == 3 {
            line.push_str("\"event\":\"close\",\"request\":1,\"kind\":\"connect\",");
            write!(line, "\"conn_id\":{i},\"host\":\"h{i}.bulk.example\",").unwrap();
            line.push_str("\"bytes_up\":517,\"bytes_down\":4096,\"duration_ms\":12.5,");
            line.push_str("\"close_reason\":\"eof\"}\n");
        } else {
            let (a, b, port) = ((i / 256) % 256, i % 256, 1024 + i % 60000);
            line.push_str("\"event\":\"decision\",\"request\":1,\"kind\":\"connect\",");
            write!(
                line,
                "\"conn_id\":{i},\"client_addr\":\"10.1.{a}.{b}:{port}\","
            )
            .unwrap();
            write!(
                line,
                "\"method\":\"CONNECT\",\"host\":\"h{i}.bulk.example\","
            )
            .unwrap();
            line.push_str("\"port\":443,\"decision\":\"deny\",\"reason\":\"denied_no_rule\",");
            line.push_str("\"rule\":null,\"detail\":\"no allow rule matches this host and port\",");
            line.push_str("\"resolved_addrs\":[],\"denied_addr\":null,\"upstream_addr\":null,");
            line.push_str("\"dns_ms\":null,\"connect_ms\":null,\"sni\":null,\"alpn\":[]}\n");
        }
        raw_bytes += line.len();
        gz.write_all(line.as_bytes()).unwrap();
    }
    gz.finish().unwrap().flush().unwrap();
    let decisions = LINES - LINES / 4;
    let max_groups = MAX_GROUPS.to_string();

    let small = write_file(dir.path(), "small.log", &sample_log());
    let (code, _, baseline_kib) =
        run_measured(&["audit", "--format", "json", small.to_str().unwrap()]);
    assert_eq!(code, 0);

    let (code, stdout, peak_kib) = run_measured(&[
        "audit",
        "--format",
        "json",
        "--max-groups",
        &max_groups,
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}");
    let r: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["lines"], LINES);
    assert_eq!(r["decisions"], decisions);
    assert_eq!(r["skipped_lines"], LINES / 4);
    assert_eq!(r["groups_total"], MAX_GROUPS);
    assert_eq!(r["untracked_decisions"], decisions - MAX_GROUPS);

    // The log is hundreds of MB; the process grows by the groups it keeps (a few MB), not by the log.
    let growth_kib = peak_kib - baseline_kib;
    eprintln!(
        "audit of {LINES} lines ({} MB uncompressed): peak RSS {peak_kib} KiB, {baseline_kib} KiB for a \
         12-line log",
        raw_bytes / 1_000_000
    );
    assert!(
        raw_bytes > 300_000_000,
        "the log should dwarf the bound: {raw_bytes} bytes"
    );
    assert!(
        growth_kib < 32 * 1024,
        "peak RSS {peak_kib} KiB vs {baseline_kib} KiB for a tiny log: memory grows with the input"
    );
}

#[test]
fn probes_of_special_addresses_are_never_suggested() {
    let dir = tempfile::tempdir().unwrap();
    let at = "2026-11-29T11:00:00Z";
    let log = [
        // Logged before IP literals got their own reason, or by another tool: still no rule for them.
        decision(
            at,
            "10.0.0.3:1",
            "169.254.169.254",
            80,
            "deny",
            "denied_no_rule",
        ),
        decision(at, "10.0.0.3:1", "10.0.0.1", 22, "deny", "denied_no_rule"),
        decision(
            at,
            "10.0.0.3:1",
            "::ffff:127.0.0.1",
            8080,
            "deny",
            "denied_port",
        ),
        // A name refused for its addresses on one port is no candidate on another.
        decision(
            at,
            "10.0.0.3:1",
            "meta.test",
            443,
            "deny",
            "denied_private_address",
        ),
        decision(at, "10.0.0.3:1", "meta.test", 80, "deny", "denied_no_rule"),
        decision(
            at,
            "10.0.0.3:1",
            "fine.example",
            443,
            "deny",
            "denied_no_rule",
        ),
    ]
    .join("\n");
    let file = write_file(dir.path(), "probes.log", &log);
    let snippet = audit_ok(&["--suggest", file.to_str().unwrap()]);
    let s = egressd::config::from_yaml_str(&snippet).unwrap_or_else(|e| panic!("{e}\n{snippet}"));
    assert_eq!(s.runtime.policy.rule_count(), 1, "{snippet}");
    assert!(allowed(&s, "fine.example:443"), "{snippet}");
    for probe in [
        "169.254.169.254",
        "10.0.0.1",
        "::ffff:127.0.0.1",
        "meta.test",
    ] {
        assert!(
            !snippet.contains(&format!("hosts: [\"{probe}\"]")),
            "{probe} suggested:\n{snippet}"
        );
    }
    let special = snippet
        .lines()
        .find(|l| l.starts_with("# not suggested, special-purpose address"))
        .unwrap_or_else(|| panic!("{snippet}"));
    assert!(
        special.contains("10.0.0.1:22") && special.contains("169.254.169.254:80"),
        "{special}"
    );
    assert!(special.contains("[::ffff:127.0.0.1]:8080"), "{special}");
    let resolved = snippet
        .lines()
        .find(|l| l.starts_with("# not suggested, the name was refused for its addresses"))
        .unwrap_or_else(|| panic!("{snippet}"));
    assert!(resolved.contains("meta.test:80"), "{resolved}");
}

#[test]
fn crafted_reasons_cannot_add_rules_or_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let at = "2026-11-29T11:00:00Z";
    let log = [
        decision(
            at,
            "10.0.0.3:1",
            "x.example",
            443,
            "deny",
            "x\n  - name: evil\n    hosts: [\"*.com\"]\n#",
        ),
        decision(
            at,
            "10.0.0.3:1",
            "y.example",
            443,
            "deny",
            "\u{1b}[2J\u{1b}[31mred",
        ),
        decision(at, "10.0.0.3:1", "z.example", 443, "deny", "denied_by_rule"),
    ]
    .join("\n");
    let file = write_file(dir.path(), "crafted.log", &log);
    let path = file.to_str().unwrap();
    let snippet = audit_ok(&["--suggest", path]);
    let s = egressd::config::from_yaml_str(&snippet).unwrap_or_else(|e| panic!("{e}\n{snippet}"));
    assert_eq!(s.runtime.policy.rule_count(), 0, "{snippet}");
    assert!(!allowed(&s, "evil.com:443"), "{snippet}");
    assert!(
        snippet
            .lines()
            .all(|l| l.is_empty() || l.starts_with('#') || l == "allow: []"),
        "every line is a comment:\n{snippet}"
    );
    assert!(snippet.contains("unknown reason"), "{snippet}");
    assert!(
        snippet.contains("# not suggested, denied_by_rule"),
        "{snippet}"
    );
    for out in [
        snippet,
        audit_ok(&[path]),
        audit_ok(&["--format", "markdown", path]),
    ] {
        assert!(
            !out.contains('\u{1b}'),
            "a terminal escape is printed:\n{out}"
        );
        assert!(!out.contains("\n  - name: evil"), "{out}");
        assert!(out.contains("unknown reason"), "{out}");
    }
}
