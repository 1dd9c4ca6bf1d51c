//! `egressd audit --usage`: every rule of a configuration (profile rules as `<profile>/<entry>`) with its use in
//! a real proxy log, the rules that matched nothing in the window as candidates to remove, every format, the
//! bounded client counts, and errors with exit code 2.

mod support;

use serde_json::Value;
use std::path::Path;
use support::cli::*;
use support::*;

fn usage_json(config: &Path, log: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "--usage",
        "--format",
        "json",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(log.to_str().unwrap());
    let out = audit(&args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", out.stdout))
}

fn rule<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {report:#}"))
}

fn candidates(report: &Value) -> Vec<String> {
    report["candidates_to_remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rule"].as_str().unwrap().to_string())
        .collect()
}

/// A decision line for a profile rule the loopback proxy cannot reach (port 443 of a vendor), as an older
/// log of the same configuration holds it.
fn old_line(ts: &str, client: &str, rule: &str) -> String {
    serde_json::json!({
        "ts": ts, "event": "decision", "client_addr": format!("{client}:5000"), "kind": "connect",
        "host": "api.cast.ai", "port": 443, "decision": "allow", "reason": "allowed", "rule": rule,
        "client": ["castai"],
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_every_rule_from_a_real_proxy_log() {
    let origin = http_origin().await;
    let port = origin.port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "vendors: [castai-us]\n\
         clients:\n  - {{name: local, cidrs: [\"127.0.0.0/8\"]}}\n\
         destinations:\n  allow_cidrs: [\"127.0.0.1/32\"]\n\
         dns:\n  hosts:\n    web.test: [\"127.0.0.1\"]\n\
         deny:\n  - {{name: guard, hosts: [blocked.test]}}\n  - {{name: quiet-guard, hosts: [never.test]}}\n\
         allow:\n  - {{name: web, hosts: [web.test], ports: [{port}]}}\n  - {{name: stale, hosts: [stale.test]}}\n"
    );
    let cfg = write_file(dir.path(), "egressd.yaml", &yaml);
    let proxy = start_proxy_file(&cfg).await;
    for _ in 0..2 {
        let resp = raw(
            proxy.addr,
            format!("GET http://web.test:{port}/ HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(status(&resp), 200, "{resp}");
    }
    assert_eq!(status(&connect(proxy.addr, "blocked.test:443").await), 403);
    // The stale rule's host on another port: a refusal naming the rule, not a match.
    assert_eq!(status(&connect(proxy.addr, "stale.test:8443").await), 403);
    assert_eq!(status(&connect(proxy.addr, "nowhere.test:443").await), 403);
    let lines = proxy.log.wait_events("decision", 5).await;
    let mut log: String = lines.iter().map(|v| format!("{v}\n")).collect();
    // An older line for a profile rule (two days ago), and one naming a rule since renamed.
    log.push_str(&old_line(
        "2020-01-01T00:00:00Z",
        "10.9.0.1",
        "castai-us/api",
    ));
    log.push('\n');
    log.push_str(&old_line(
        "2020-01-01T00:00:01Z",
        "10.9.0.2",
        "castai-api-old",
    ));
    log.push('\n');
    let log_path = write_file(dir.path(), "egressd.log", &log);

    let report = usage_json(&cfg, &log_path, &[]);
    assert_eq!(report["decisions"], 7);
    // Every rule, in the order the policy checks them: local allow rules, profile rules, deny rules.
    let names: Vec<&str> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    let profile_rules: Vec<String> = egressd::vendors::find("castai-us")
        .unwrap()
        .entries
        .iter()
        .map(|e| format!("castai-us/{}", e.name))
        .collect();
    let mut expected = vec!["web", "stale"];
    expected.extend(profile_rules.iter().map(String::as_str));
    expected.extend(["guard", "quiet-guard"]);
    assert_eq!(names, expected);

    let web = rule(&report, "web");
    assert_eq!(
        (
            &web["kind"],
            &web["allows"],
            &web["denied"],
            &web["clients"]
        ),
        (&"allow".into(), &2.into(), &0.into(), &1.into()),
        "{web}"
    );
    assert_eq!(web["client_group_names"], serde_json::json!(["local"]));
    let web_last = lines
        .iter()
        .filter(|l| l["rule"] == "web")
        .map(|l| l["ts"].as_str().unwrap()[..19].to_string())
        .max()
        .unwrap();
    assert_eq!(web["last_match"].as_str().unwrap()[..19], web_last, "{web}");
    let stale = rule(&report, "stale");
    assert_eq!(
        (&stale["allows"], &stale["denied"], &stale["last_match"]),
        (&0.into(), &1.into(), &Value::Null)
    );
    let api = rule(&report, "castai-us/api");
    assert_eq!(
        (&api["profile"], &api["allows"], &api["clients"]),
        (&"castai-us".into(), &1.into(), &1.into())
    );
    assert_eq!(api["last_match"], "2020-01-01T00:00:00Z");
    let guard = rule(&report, "guard");
    assert_eq!(
        (&guard["kind"], &guard["denied"], &guard["clients"]),
        (&"deny".into(), &1.into(), &1.into())
    );

    let c = candidates(&report);
    assert!(c.contains(&"stale".to_string()), "{c:?}");
    assert!(c.contains(&"castai-us/grpc".to_string()), "{c:?}");
    assert!(!c.contains(&"web".to_string()) && !c.contains(&"castai-us/api".to_string()));
    assert_eq!(c.len(), 1 + profile_rules.len() - 1, "{c:?}");
    assert_eq!(
        report["unmatched_deny_rules"],
        serde_json::json!(["quiet-guard"])
    );
    assert_eq!(
        report["not_in_config"],
        serde_json::json!([{"rule": "castai-api-old", "decisions": 1}])
    );
    assert_eq!(report["decisions_without_rule"], 1);

    // The window: the old profile line falls out, and with it the profile's last use.
    let recent = usage_json(&cfg, &log_path, &["--since", "1h"]);
    assert_eq!(recent["outside_window"], 2);
    assert_eq!(rule(&recent, "castai-us/api")["last_match"], Value::Null);
    let c = candidates(&recent);
    assert!(c.contains(&"castai-us (every entry)".to_string()), "{c:?}");
    let every = recent["candidates_to_remove"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule"] == "castai-us (every entry)")
        .unwrap();
    assert_eq!(every["remove_with"], "remove castai-us from vendors");
    assert_eq!(
        every["rules"].as_array().unwrap().len(),
        profile_rules.len()
    );

    // The table and Markdown show the same rules and candidates.
    let table = audit(&[
        "--usage",
        "--config",
        cfg.to_str().unwrap(),
        log_path.to_str().unwrap(),
    ]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let t = &table.stdout;
    assert!(
        t.contains("RULE  ") && t.contains("ALLOWS") && t.contains("LAST MATCH"),
        "{t}"
    );
    let web_row: Vec<&str> = t
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(&web_row[..6], ["web", "allow", "2", "0", "1", "1"], "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("castai-us/grpc")
                && l.ends_with("vendors_disable: [castai-us/grpc]")),
        "{t}"
    );
    assert!(
        t.contains(
            "deny rules that refused nothing in the window (guards, not candidates): quiet-guard"
        ),
        "{t}"
    );
    let md = audit(&[
        "--usage",
        "--format",
        "markdown",
        "--config",
        cfg.to_str().unwrap(),
        log_path.to_str().unwrap(),
    ]);
    assert_eq!(md.code, Some(0), "{}", md.stderr);
    assert!(md.stdout.starts_with("## Rule usage\n"), "{}", md.stdout);
    assert!(
        md.stdout.contains("### Candidates to remove"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .lines()
            .any(|l| l.starts_with("| stale") && l.contains("delete it from allow")),
        "{}",
        md.stdout
    );
}

#[test]
fn distinct_clients_are_exact_up_to_the_cap_then_a_lower_bound() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "egressd.yaml",
        "allow:\n  - {name: busy, hosts: [busy.test]}\n  - {name: few, hosts: [few.test]}\n",
    );
    let mut log = String::new();
    for i in 0..1100u32 {
        let client = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        log.push_str(&old_line("2026-11-29T10:00:00Z", &client, "busy"));
        log.push('\n');
    }
    for _ in 0..3 {
        log.push_str(&old_line("2026-11-29T10:00:00Z", "10.200.0.1", "few"));
        log.push('\n');
    }
    // Gzip, as rotated logs are.
    let gz_path = write_gzip(dir.path(), "egressd.log.gz", &log);
    let report = usage_json(&cfg, &gz_path, &[]);
    let busy = rule(&report, "busy");
    assert_eq!(
        (&busy["allows"], &busy["clients"], &busy["clients_more"]),
        (&1100.into(), &1000.into(), &true.into())
    );
    let few = rule(&report, "few");
    assert_eq!(
        (&few["clients"], &few["clients_more"]),
        (&1.into(), &false.into())
    );
    let table = audit(&[
        "--usage",
        "--config",
        cfg.to_str().unwrap(),
        gz_path.to_str().unwrap(),
    ]);
    let row: Vec<&str> = table
        .stdout
        .lines()
        .find(|l| l.starts_with("busy "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[4], ">1000", "{}", table.stdout);
    assert!(
        table.stdout.contains("counted exactly up to 1000 per rule"),
        "{}",
        table.stdout
    );
}

#[test]
fn bad_options_configs_and_logs_exit_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "egressd.yaml",
        "allow:\n  - {name: a, hosts: [a.test]}\n",
    );
    let log = write_file(
        dir.path(),
        "egressd.log",
        &format!("{}\n", old_line("2026-11-29T10:00:00Z", "10.0.0.1", "a")),
    );
    let (cfg, log) = (cfg.to_str().unwrap(), log.to_str().unwrap());

    let out = audit(&["--usage", log]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--config"), "{}", out.stderr);
    let out = audit(&["--usage", "--suggest", "--config", cfg, log]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let out = audit(&["--config", cfg, log]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .contains("--config is read by --usage and --suggest only"),
        "{}",
        out.stderr
    );
    let out = audit(&["--usage", "--config", cfg, "--since", "yesterday", log]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("--since \"yesterday\""),
        "{}",
        out.stderr
    );

    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "allow:\n  - {name: a, hosts: [a.test], ports: [99999]}\n",
    );
    let out = audit(&["--usage", "--config", bad.to_str().unwrap(), log]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("configuration error") && out.stderr.contains("allow[0].ports[0]"),
        "{}",
        out.stderr
    );
    let missing = dir.path().join("missing.yaml");
    let out = audit(&["--usage", "--config", missing.to_str().unwrap(), log]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("missing.yaml"), "{}", out.stderr);

    // A corrupt gzip stream, and a log without a single decision line.
    let corrupt = dir.path().join("corrupt.log.gz");
    std::fs::write(&corrupt, b"\x1f\x8b\x08\x00garbage that is not deflate").unwrap();
    let out = audit(&["--usage", "--config", cfg, corrupt.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("corrupt.log.gz"), "{}", out.stderr);
    let text = write_file(dir.path(), "text.log", "level=info msg=started\n");
    let out = audit(&["--usage", "--config", cfg, text.to_str().unwrap()]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("no decision lines"), "{}", out.stderr);
}
