//! `egressd audit --shadow`: the decisions on which the candidate policy disagreed with the live one, split into
//! what it would newly refuse and newly allow, as a table and as JSON, in a time window, bounded by
//! `--max-groups`; a log where the two agree is a report, not an error. Real lines: tests/shadow.rs.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use support::cli::*;

fn shadow_json(log: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--shadow", "--format", "json"];
    args.extend_from_slice(extra);
    args.push(log.to_str().unwrap());
    let out = audit_ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// What one side decided: `(decision, reason, rule)`.
type Side<'a> = (&'a str, &'a str, Option<&'a str>);

/// A decision line as egressd writes it; `shadow` is the candidate's decision where it disagreed.
fn line(
    ts: &str,
    client: &str,
    authority: (&str, u16),
    live: Side,
    shadow: Option<Side>,
) -> String {
    // One client is in the `agents` group.
    let groups: &[&str] = if client == "10.0.0.9" {
        &["agents"]
    } else {
        &[]
    };
    let mut v = json!({
        "ts": ts, "event": "decision", "conn_id": 1, "request": 1,
        "client_addr": format!("{client}:40000"), "kind": "connect", "method": "CONNECT",
        "host": authority.0, "port": authority.1, "decision": live.0, "reason": live.1, "rule": live.2,
        "detail": null, "resolved_addrs": [], "client": groups,
    });
    if let Some((decision, reason, rule)) = shadow {
        v["shadow_decision"] = decision.into();
        v["shadow_reason"] = reason.into();
        if let Some(r) = rule {
            v["shadow_rule"] = r.into();
        }
    }
    format!("{v}\n")
}

const OLD: Side = ("allow", "allowed", Some("old"));
const NO_RULE: Side = ("deny", "denied_no_rule", None);
const NEW: Side = ("allow", "allowed", Some("new"));

/// Two hours of a rollout: `b.example` dropped by the candidate, `c.example` added, `a.example` agreed on.
fn rollout_log() -> String {
    let mut log = String::new();
    for (ts, client) in [
        ("2026-11-29T08:00:00Z", "10.0.0.1"),
        ("2026-11-29T09:00:00Z", "10.0.0.2"),
        ("2026-11-29T09:30:00Z", "10.0.0.9"),
    ] {
        log += &line(ts, client, ("b.example", 443), OLD, Some(NO_RULE));
    }
    log += &line(
        "2026-11-29T08:30:00Z",
        "10.0.0.1",
        ("c.example", 443),
        NO_RULE,
        Some(NEW),
    );
    log += &line(
        "2026-11-29T09:45:00Z",
        "10.0.0.1",
        ("a.example", 443),
        OLD,
        None,
    );
    log += &line(
        "2026-11-29T09:50:00Z",
        "10.0.0.1",
        ("a.example", 443),
        OLD,
        None,
    );
    log += "{\"ts\":\"2026-11-29T09:50:01Z\",\"event\":\"close\",\"conn_id\":1}\nnot json\n";
    log
}

#[test]
fn the_table_and_json_split_disagreements_by_direction() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_file(dir.path(), "egressd.log", &rollout_log());
    let path = log.to_str().unwrap();

    let table = audit_ok(&["--shadow", path]);
    for expected in [
        "read 8 lines from ",
        ": 6 decisions (5 allowed, 1 denied, 0 would_deny)\n",
        "skipped 2 lines that are not decision events (1 not JSON)\n",
        "decisions from 2026-11-29T08:00:00Z to 2026-11-29T09:50:00Z; the candidate disagrees with 4 of 6 decisions\n",
        "would newly refuse: 3 (live allow, candidate deny or would_deny)",
        "would newly allow: 1 (live deny or would_deny, candidate allow)",
    ] {
        assert!(table.contains(expected), "{expected:?} not in\n{table}");
    }
    // Each direction: its line, the header, its rows; cells' padding squeezed to one space.
    let body: Vec<String> = table
        .lines()
        .skip_while(|l| !l.starts_with("would newly refuse"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let header = "DESTINATION LIVE SHADOW DECISIONS CLIENTS CLIENT GROUPS FIRST SEEN LAST SEEN";
    assert_eq!(
        body,
        [
            header,
            "b.example:443 allow, rule old deny, denied_no_rule 3 3 agents 2026-11-29T08:00:00Z 2026-11-29T09:30:00Z",
            "",
            "would newly allow: 1 (live deny or would_deny, candidate allow): the policy opens when the candidate is \
             promoted",
            header,
            "c.example:443 deny, denied_no_rule allow, rule new 1 1 - 2026-11-29T08:30:00Z 2026-11-29T08:30:00Z",
        ],
        "{table}"
    );
    assert!(!table.contains("a.example"), "agreement is no row: {table}");

    let report = shadow_json(&log, &[]);
    assert_eq!(
        (
            &report["decisions"],
            &report["disagreements"],
            &report["would_newly_refuse"],
            &report["would_newly_allow"],
            &report["enforcement_only"],
        ),
        (&json!(6), &json!(4), &json!(3), &json!(1), &json!(0)),
        "{report:#}"
    );
    let g = &report["groups"][0];
    assert_eq!(g["direction"], "would_newly_refuse");
    assert_eq!((&g["host"], &g["port"]), (&json!("b.example"), &json!(443)));
    assert_eq!(
        (&g["live"], &g["live_rule"]),
        (&json!("allow"), &json!("old"))
    );
    assert_eq!(
        (&g["shadow"], &g["shadow_rule"], &g["shadow_reason"]),
        (&json!("deny"), &json!(null), &json!("denied_no_rule"))
    );
    assert_eq!((&g["decisions"], &g["clients"]), (&json!(3), &json!(3)));
    assert_eq!(g["client_groups"], json!(["agents"]));
    assert_eq!(
        (&g["first_seen"], &g["last_seen"]),
        (
            &json!("2026-11-29T08:00:00Z"),
            &json!("2026-11-29T09:30:00Z")
        )
    );
    let g = &report["groups"][1];
    assert_eq!(g["direction"], "would_newly_allow");
    assert_eq!(
        (&g["live_reason"], &g["shadow_rule"]),
        (&json!("denied_no_rule"), &json!("new"))
    );

    // --top limits the rows of each direction, not the counts; --max-groups the groups kept, and says how much
    // is not shown.
    let more = rollout_log()
        + &line(
            "2026-11-29T09:58:00Z",
            "10.0.0.1",
            ("d.example", 443),
            OLD,
            Some(NO_RULE),
        );
    let more = write_file(dir.path(), "more.log", &more);
    let top = shadow_json(&more, &["--top", "1"]);
    let hosts: Vec<&str> = (top["groups"].as_array().unwrap().iter())
        .map(|g| g["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["b.example", "c.example"], "{top:#}");
    assert_eq!(
        (
            &top["would_newly_refuse"],
            &top["groups_total"],
            &top["groups_not_shown"]
        ),
        (&json!(4), &json!(3), &json!(1))
    );
    let table = audit_ok(&["--shadow", "--max-groups", "1", path]);
    assert!(
        table.contains("1 more disagreements belong to groups not shown"),
        "{table}"
    );
    let md = audit_ok(&["--shadow", "--format", "markdown", path]);
    assert!(md.starts_with("## Shadow policy disagreements\n\n"), "{md}");
    assert!(md.contains("| b.example:443 "), "{md}");
}

#[test]
fn since_and_until_select_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_file(dir.path(), "egressd.log", &rollout_log());
    let report = shadow_json(
        &log,
        &[
            "--since",
            "2026-11-29T08:30:00Z",
            "--until",
            "2026-11-29T09:00:00Z",
        ],
    );
    assert_eq!(
        (
            &report["decisions"],
            &report["outside_window"],
            &report["would_newly_refuse"],
            &report["would_newly_allow"]
        ),
        (&json!(2), &json!(4), &json!(1), &json!(1)),
        "{report:#}"
    );
    assert_eq!(report["since"], "2026-11-29T08:30:00Z");
    let b = &report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["host"] == "b.example")
        .unwrap();
    assert_eq!(
        (&b["decisions"], &b["first_seen"]),
        (&json!(1), &json!("2026-11-29T09:00:00Z"))
    );

    // After the last disagreement, the candidate agrees with everything left.
    let table = audit_ok(&[
        "--shadow",
        "--since",
        "2026-11-29T09:40:00Z",
        log.to_str().unwrap(),
    ]);
    assert!(
        table.contains(
            "time window 2026-11-29T09:40:00Z to the end: 4 decisions outside it not counted"
        ),
        "{table}"
    );
    assert!(
        table.contains("the candidate agrees with every decision in the window"),
        "{table}"
    );
}

#[test]
fn a_log_without_disagreement_is_a_report_and_one_without_decisions_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let agreed: String = (0..3)
        .map(|i| {
            line(
                &format!("2026-11-29T10:0{i}:00Z"),
                "10.0.0.1",
                ("a.example", 443),
                OLD,
                None,
            )
        })
        .collect();
    let log = write_file(dir.path(), "agreed.log", &agreed);
    let table = audit_ok(&["--shadow", log.to_str().unwrap()]);
    assert!(
        table.contains(
            "decisions from 2026-11-29T10:00:00Z to 2026-11-29T10:02:00Z; the candidate agrees with every decision in the window\n"
        ),
        "{table}"
    );
    assert!(!table.contains("DESTINATION"), "{table}");
    let report = shadow_json(&log, &[]);
    assert_eq!(
        (
            &report["decisions"],
            &report["disagreements"],
            &report["groups"]
        ),
        (&json!(3), &json!(0), &json!([]))
    );

    let empty = write_file(dir.path(), "text.log", "2026-11-29 egressd started\n");
    let out = audit(&["--shadow", empty.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(
        out.stderr.contains("no decision lines in"),
        "{}",
        out.stderr
    );
}

#[test]
fn other_views_and_their_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_file(dir.path(), "egressd.log", &rollout_log());
    let path = log.to_str().unwrap();
    let config = write_file(dir.path(), "egressd.yaml", "allow: []\n");
    let config = config.to_str().unwrap();
    for args in [
        vec!["--shadow", "--suggest", path],
        vec!["--shadow", "--usage", "--config", config, path],
        vec!["--shadow", "--allowed", path],
        vec!["--shadow", "--by", "group", path],
        vec!["--shadow", "--config", config, path],
        vec!["--shadow", "--max-groups", "0", path],
    ] {
        let out = audit(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            [
                "cannot be used with",
                "--config is read by",
                "--max-groups must be"
            ]
            .iter()
            .any(|why| out.stderr.contains(why)),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn malformed_lines_are_reported_and_stdin_and_gzip_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = rollout_log();
    // A decision without a usable timestamp, and one whose shadow fields egressd would not write.
    log += "{\"ts\":\"yesterday\",\"event\":\"decision\",\"decision\":\"deny\",\"reason\":\"denied_no_rule\"}\n";
    let mut odd: Value = serde_json::from_str(&line(
        "2026-11-29T09:55:00Z",
        "10.0.0.1",
        ("a.example", 443),
        OLD,
        None,
    ))
    .unwrap();
    odd["shadow_decision"] = "maybe".into();
    log += &format!("{odd}\n");

    let out = egressd(&["audit", "--shadow", "-"], Some(log.as_bytes()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let table = out.stdout;
    for expected in [
        "read 10 lines from stdin: 7 decisions (6 allowed, 1 denied, 0 would_deny)\n",
        "skipped 2 lines that are not decision events (1 not JSON)\n",
        "skipped 1 decision events with missing or invalid fields",
        "the candidate disagrees with 4 of 7 decisions\n",
        "skipped the shadow fields of 1 decisions: unreadable (shadow_decision, shadow_reason)\n",
    ] {
        assert!(table.contains(expected), "{expected:?} not in\n{table}");
    }

    let plain = write_file(dir.path(), "egressd.log", &log);
    let gz = write_gzip(dir.path(), "egressd.log.gz", &log);
    let mut from_plain = shadow_json(&plain, &[]);
    let mut from_gzip = shadow_json(&gz, &[]);
    assert_eq!(
        (
            &from_gzip["invalid_decisions"],
            &from_gzip["unreadable_shadow_fields"],
            &from_gzip["disagreements"]
        ),
        (&json!(1), &json!(1), &json!(4)),
        "{from_gzip:#}"
    );
    from_plain["source"] = Value::Null;
    from_gzip["source"] = Value::Null;
    assert_eq!(from_plain, from_gzip);

    let missing = dir.path().join("missing.log");
    let out = audit(&["--shadow", missing.to_str().unwrap()]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains("missing.log"), "{}", out.stderr);
}
